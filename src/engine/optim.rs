//! The optimizer of every training run: AdamW fused into one in-place pass per parameter.
//!
//! Owns: `FusedAdamW`, a drop-in for `candle_nn::AdamW` (same `ParamsAdamW`, same update,
//! same `candle_nn::Optimizer` trait: `new`, `step(&GradStore)`, `learning_rate`,
//! `set_learning_rate`). Must not: compute gradients, scale or unscale them, or assume one
//! `backward` per `step` (mixed precision may unscale a `GradStore` or skip a step; pruning
//! re-applies masks after it): `step` only reads the gradients it is given.
//!
//! Why: candle-nn's AdamW runs about ten tensor ops per parameter per step (`m * b1`,
//! `g * (1 - b1)`, add, `g.sqr()`, ..., three `Var::set`), each allocating and writing a whole
//! parameter-sized buffer; on the 784-256-10 MLP that was 6.6 ms of an 11 ms step. Here, on
//! the CPU, the weight is updated in place (`Tensor::inplace_op2`, the weight's own storage)
//! and the moments live in host vectors beside it: one read of w, g, m, v and one write of w,
//! m, v per element, nothing allocated.
//!
//! Master weights stay in their own dtype: f32 (and f64) `Var`s take the fused path with
//! moments of the same dtype. On CUDA, and for f16/bf16 `Var`s, the update falls back to the
//! tensor-op formulation of candle-nn (moments as `Var`s of the weight's dtype): the CUDA build
//! has no fused kernel yet (see docs/results.md, "Speed").
//!
//! Numerics: the fused loop performs the same IEEE operations in the same order as candle-nn
//! (`m*b1 + g*(1-b1)`, `v*b2 + (g*g)*(1-b2)`, `(m*s_m) / (sqrt(v*s_v) + eps)`, `w*(1-lr*wd) -
//! adj*lr`, constants rounded to the weight dtype first), with no fused multiply-add, so the
//! results are bit-identical; `tests::matches_candle_nn_adamw` checks it over many steps.

use candle_core::backend::BackendStorage;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Layout, Result, Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW};
use std::cell::RefCell;

/// Moments of one parameter.
enum Moments {
    /// Fused CPU path: first and second moments in host memory, f32 weights.
    HostF32 { m: Vec<f32>, v: Vec<f32> },
    /// Fused CPU path for f64 weights.
    HostF64 { m: Vec<f64>, v: Vec<f64> },
    /// Tensor-op fallback (CUDA, f16/bf16 weights): candle-nn's formulation.
    Tensors { m: Var, v: Var },
}

struct Slot {
    var: Var,
    moments: Moments,
    /// False for a parameter excluded from weight decay (`FusedAdamW::without_decay_on`).
    decays: bool,
}

/// AdamW (Loshchilov & Hutter), decoupled weight decay, bias-corrected moments: exactly
/// candle-nn's `AdamW`, fused.
pub struct FusedAdamW {
    slots: Vec<Slot>,
    step_t: usize,
    params: ParamsAdamW,
}

impl FusedAdamW {
    pub fn params(&self) -> &ParamsAdamW {
        &self.params
    }

    /// Steps taken so far (the `t` of the bias correction).
    pub fn steps(&self) -> usize {
        self.step_t
    }

    /// Exclude the given parameters from weight decay (nanoGPT's rule excludes biases and norm
    /// weights); the rest of the update is unchanged.
    pub fn without_decay_on(mut self, no_decay: &[Var]) -> Self {
        for slot in self.slots.iter_mut() {
            if no_decay
                .iter()
                .any(|v| v.as_tensor().id() == slot.var.as_tensor().id())
            {
                slot.decays = false;
            }
        }
        self
    }

    /// How many parameters take the fused in-place path (the rest use tensor ops).
    pub fn fused_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| !matches!(s.moments, Moments::Tensors { .. }))
            .count()
    }
}

/// Per-step constants, already rounded to the weight dtype as candle's `affine` does.
#[derive(Clone, Copy)]
struct Coeffs<T> {
    b1: T,
    one_minus_b1: T,
    b2: T,
    one_minus_b2: T,
    scale_m: T,
    scale_v: T,
    eps: T,
    decay: T,
    lr: T,
}

trait AdamFloat: Copy + Send + Sync + 'static {
    fn from_f64(x: f64) -> Self;
    fn upd(w: &mut [Self], g: &[Self], m: &mut [Self], v: &mut [Self], c: &Coeffs<Self>);
}

macro_rules! adam_float {
    ($t:ty) => {
        impl AdamFloat for $t {
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            fn upd(w: &mut [$t], g: &[$t], m: &mut [$t], v: &mut [$t], c: &Coeffs<$t>) {
                #[cfg(target_arch = "x86_64")]
                {
                    if std::arch::is_x86_feature_detected!("avx") {
                        // SAFETY: the CPU has AVX (checked just above).
                        unsafe { upd_avx(w, g, m, v, c) };
                        return;
                    }
                }
                upd_generic(w, g, m, v, c)
            }
        }
    };
}
adam_float!(f32);
adam_float!(f64);

/// The update of `w`, `m`, `v` in one pass; mirrors candle-nn's op order (see module note).
#[inline(always)]
fn upd_generic<T>(w: &mut [T], g: &[T], m: &mut [T], v: &mut [T], c: &Coeffs<T>)
where
    T: Copy
        + std::ops::Mul<Output = T>
        + std::ops::Add<Output = T>
        + std::ops::Sub<Output = T>
        + std::ops::Div<Output = T>
        + Sqrt,
{
    let n = w.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let gi = g[i];
        let mi = m[i] * c.b1 + gi * c.one_minus_b1;
        let vi = v[i] * c.b2 + (gi * gi) * c.one_minus_b2;
        m[i] = mi;
        v[i] = vi;
        let adj = (mi * c.scale_m) / ((vi * c.scale_v).sqrt_() + c.eps);
        w[i] = w[i] * c.decay - adj * c.lr;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn upd_avx<T>(w: &mut [T], g: &[T], m: &mut [T], v: &mut [T], c: &Coeffs<T>)
where
    T: Copy
        + std::ops::Mul<Output = T>
        + std::ops::Add<Output = T>
        + std::ops::Sub<Output = T>
        + std::ops::Div<Output = T>
        + Sqrt,
{
    // Same code, compiled with 256-bit vectors (no FMA: contraction would change rounding).
    upd_generic(w, g, m, v, c)
}

trait Sqrt {
    fn sqrt_(self) -> Self;
}
impl Sqrt for f32 {
    #[inline(always)]
    fn sqrt_(self) -> f32 {
        self.sqrt()
    }
}
impl Sqrt for f64 {
    #[inline(always)]
    fn sqrt_(self) -> f64 {
        self.sqrt()
    }
}

/// Parameters at least this large are split across the rayon pool (measured on 2 cores: below
/// it the fork/join costs more than the memory-bound loop saves).
const PAR_MIN_ELEMS: usize = 1 << 18;
const PAR_CHUNK: usize = 1 << 16;

/// The in-place update applied to a weight's own storage; the moments ride along.
struct AdamWInPlace<'a, T> {
    moments: RefCell<(&'a mut [T], &'a mut [T])>,
    c: Coeffs<T>,
}

impl<T: AdamFloat> AdamWInPlace<'_, T> {
    fn run(&self, w: &mut [T], g: &[T]) -> Result<()> {
        let mut mv = self.moments.borrow_mut();
        let (m, v) = &mut *mv;
        if w.len() != g.len() || m.len() != w.len() || v.len() != w.len() {
            candle_core::bail!(
                "fused-adamw: weight has {} elements, gradient {}, moments {}",
                w.len(),
                g.len(),
                m.len()
            );
        }
        let c = self.c;
        if w.len() >= PAR_MIN_ELEMS && rayon::current_num_threads() > 1 {
            use rayon::prelude::*;
            w.par_chunks_mut(PAR_CHUNK)
                .zip(g.par_chunks(PAR_CHUNK))
                .zip(m.par_chunks_mut(PAR_CHUNK))
                .zip(v.par_chunks_mut(PAR_CHUNK))
                .for_each(|(((w, g), m), v)| T::upd(w, g, m, v, &c));
        } else {
            T::upd(w, g, m, v, &c);
        }
        Ok(())
    }
}

fn contiguous_slice<'s, T>(s: &'s [T], l: &Layout, what: &str) -> Result<&'s [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("fused-adamw: {what} is not contiguous"),
    }
}

macro_rules! inplace_impl {
    ($t:ty, $variant:ident) => {
        impl candle_core::InplaceOp2 for AdamWInPlace<'_, $t> {
            fn name(&self) -> &'static str {
                "fused-adamw"
            }
            fn cpu_fwd(
                &self,
                s1: &mut CpuStorage,
                l1: &Layout,
                s2: &CpuStorage,
                l2: &Layout,
            ) -> Result<()> {
                let (w, g) = match (s1, s2) {
                    (CpuStorage::$variant(w), CpuStorage::$variant(g)) => (w, g),
                    (w, g) => candle_core::bail!(
                        "fused-adamw: weight {:?} and gradient {:?} must both be {}",
                        w.dtype(),
                        g.dtype(),
                        stringify!($t)
                    ),
                };
                let (a, b) = l1.contiguous_offsets().ok_or_else(|| {
                    candle_core::Error::Msg("fused-adamw: weight is not contiguous".into())
                })?;
                let g = contiguous_slice(g, l2, "gradient")?;
                self.run(&mut w[a..b], g)
            }
        }
    };
}
inplace_impl!(f32, F32);
inplace_impl!(f64, F64);

fn coeffs<T: AdamFloat>(p: &ParamsAdamW, t: usize) -> Coeffs<T> {
    let lr_lambda = p.lr * p.weight_decay;
    Coeffs {
        b1: T::from_f64(p.beta1),
        one_minus_b1: T::from_f64(1.0 - p.beta1),
        b2: T::from_f64(p.beta2),
        one_minus_b2: T::from_f64(1.0 - p.beta2),
        scale_m: T::from_f64(1.0 / (1.0 - p.beta1.powi(t as i32))),
        scale_v: T::from_f64(1.0 / (1.0 - p.beta2.powi(t as i32))),
        eps: T::from_f64(p.eps),
        decay: T::from_f64(1.0 - lr_lambda),
        lr: T::from_f64(p.lr),
    }
}

impl Optimizer for FusedAdamW {
    type Config = ParamsAdamW;

    fn new(vars: Vec<Var>, params: ParamsAdamW) -> Result<Self> {
        let slots = vars
            .into_iter()
            .filter(|v| v.dtype().is_float())
            .map(|var| {
                let n = var.elem_count();
                let moments = match (var.device().is_cpu(), var.dtype()) {
                    (true, DType::F32) => Moments::HostF32 {
                        m: vec![0.0; n],
                        v: vec![0.0; n],
                    },
                    (true, DType::F64) => Moments::HostF64 {
                        m: vec![0.0; n],
                        v: vec![0.0; n],
                    },
                    _ => Moments::Tensors {
                        m: Var::zeros(var.shape(), var.dtype(), var.device())?,
                        v: Var::zeros(var.shape(), var.dtype(), var.device())?,
                    },
                };
                Ok(Slot {
                    var,
                    moments,
                    decays: true,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            slots,
            step_t: 0,
            params,
        })
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_t += 1;
        let t = self.step_t;
        let no_decay = ParamsAdamW {
            weight_decay: 0.0,
            ..self.params.clone()
        };
        for slot in self.slots.iter_mut() {
            let p = if slot.decays { &self.params } else { &no_decay };
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            let w = slot.var.as_tensor();
            if g.dims() != w.dims() {
                candle_core::bail!(
                    "fused-adamw: gradient shape {:?} differs from weight shape {:?}",
                    g.dims(),
                    w.dims()
                );
            }
            let g = g.contiguous()?;
            match &mut slot.moments {
                Moments::HostF32 { m, v } => w.inplace_op2(
                    &g,
                    &AdamWInPlace {
                        moments: RefCell::new((m.as_mut_slice(), v.as_mut_slice())),
                        c: coeffs::<f32>(p, t),
                    },
                )?,
                Moments::HostF64 { m, v } => w.inplace_op2(
                    &g,
                    &AdamWInPlace {
                        moments: RefCell::new((m.as_mut_slice(), v.as_mut_slice())),
                        c: coeffs::<f64>(p, t),
                    },
                )?,
                Moments::Tensors { m, v } => tensor_step(p, t, &slot.var, m, v, &g)?,
            }
        }
        Ok(())
    }
}

/// candle-nn's AdamW update for one parameter, in tensor ops (any device and dtype).
fn tensor_step(p: &ParamsAdamW, t: usize, theta: &Var, m: &Var, v: &Var, g: &Tensor) -> Result<()> {
    let scale_m = 1f64 / (1f64 - p.beta1.powi(t as i32));
    let scale_v = 1f64 / (1f64 - p.beta2.powi(t as i32));
    let next_m = ((m.as_tensor() * p.beta1)? + (g * (1.0 - p.beta1))?)?;
    let next_v = ((v.as_tensor() * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
    let m_hat = (&next_m * scale_m)?;
    let v_hat = (&next_v * scale_v)?;
    let next_theta = (theta.as_tensor() * (1f64 - p.lr * p.weight_decay))?;
    let adjusted = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
    let next_theta = (next_theta - (adjusted * p.lr)?)?;
    m.set(&next_m)?;
    v.set(&next_v)?;
    theta.set(&next_theta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Deterministic pseudo-random values in [-1, 1) (no RNG dependency in the check).
    fn wave(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = (i as u32)
                    .wrapping_mul(2654435761)
                    .wrapping_add(seed * 40503);
                (x % 20000) as f32 / 10000.0 - 1.0
            })
            .collect()
    }

    fn grads_for(vars: &[Var], step: u32, scale: f32) -> GradStore {
        // A loss whose gradient w.r.t. each var is a fixed pseudo-random tensor plus the
        // weight itself, so the trajectory depends on the weights as real training does.
        let mut loss: Option<Tensor> = None;
        for (i, v) in vars.iter().enumerate() {
            let n = v.elem_count();
            let c = Tensor::from_vec(wave(n, step * 7 + i as u32), v.shape(), &Device::Cpu)
                .unwrap()
                .affine(scale as f64, 0.0)
                .unwrap();
            let term = ((v.as_tensor() * &c).unwrap().sum_all().unwrap()
                + (v.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap())
            .unwrap();
            loss = Some(match loss {
                None => term,
                Some(l) => (l + term).unwrap(),
            });
        }
        loss.unwrap().backward().unwrap()
    }

    fn make_vars(shapes: &[&[usize]], seed: u32) -> Vec<Var> {
        shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let n: usize = s.iter().product();
                Var::from_tensor(
                    &Tensor::from_vec(wave(n, seed + i as u32), *s, &Device::Cpu).unwrap(),
                )
                .unwrap()
            })
            .collect()
    }

    /// Same trajectory as candle-nn's AdamW: bit-identical, because the fused loop performs
    /// the same f32 operations in the same order (module note). Shapes cover a matrix, a
    /// bias, a conv kernel and one above `PAR_MIN_ELEMS` (the chunked parallel path);
    /// gradients span 4 orders of magnitude so eps and the bias correction both matter.
    #[test]
    fn matches_candle_nn_adamw() {
        let shapes: [&[usize]; 4] = [&[33, 17], &[17], &[4, 3, 5, 5], &[1 << 18 | 5]];
        let params = ParamsAdamW {
            lr: 3e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let ours = make_vars(&shapes, 1);
        let theirs = make_vars(&shapes, 1);
        let mut a = FusedAdamW::new(ours.clone(), params.clone()).unwrap();
        let mut b = candle_nn::AdamW::new(theirs.clone(), params).unwrap();
        assert_eq!(a.fused_count(), 4);
        for step in 0..25u32 {
            let scale = [1.0, 1e-2, 1e-4, 10.0][step as usize % 4];
            a.step(&grads_for(&ours, step, scale)).unwrap();
            b.step(&grads_for(&theirs, step, scale)).unwrap();
        }
        for (x, y) in ours.iter().zip(&theirs) {
            let x = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let max_diff = x
                .iter()
                .zip(&y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert_eq!(max_diff, 0.0, "fused AdamW diverged from candle-nn");
        }
    }

    #[test]
    fn f64_and_tensor_fallback_match_too() {
        let params = ParamsAdamW::default();
        let w64 = Var::from_tensor(
            &Tensor::from_vec(wave(50, 3), 50, &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap(),
        )
        .unwrap();
        let w64b = Var::from_tensor(w64.as_tensor()).unwrap();
        let mut a = FusedAdamW::new(vec![w64.clone()], params.clone()).unwrap();
        let mut b = candle_nn::AdamW::new(vec![w64b.clone()], params.clone()).unwrap();
        for _ in 0..5 {
            let ga = w64
                .as_tensor()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let gb = w64b
                .as_tensor()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            a.step(&ga).unwrap();
            b.step(&gb).unwrap();
        }
        assert_eq!(
            w64.to_vec1::<f64>().unwrap(),
            w64b.to_vec1::<f64>().unwrap()
        );
        // bf16 weights take the tensor-op path: same result as candle-nn by construction.
        let wb = Var::from_tensor(
            &Tensor::from_vec(wave(8, 5), 8, &Device::Cpu)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap(),
        )
        .unwrap();
        let opt = FusedAdamW::new(vec![wb], params).unwrap();
        assert_eq!(opt.fused_count(), 0);
    }

    #[test]
    fn missing_gradients_are_skipped_and_lr_is_settable() {
        let vars = make_vars(&[&[4], &[3]], 9);
        let before = vars[1].to_vec1::<f32>().unwrap();
        let mut opt = FusedAdamW::new(vars.clone(), ParamsAdamW::default()).unwrap();
        opt.set_learning_rate(0.5);
        assert_eq!(opt.learning_rate(), 0.5);
        let grads = vars[0].as_tensor().sum_all().unwrap().backward().unwrap();
        opt.step(&grads).unwrap();
        assert_eq!(opt.steps(), 1);
        assert_eq!(vars[1].to_vec1::<f32>().unwrap(), before);
        // First step with lr 0.5: |update| = lr * m_hat / (sqrt(v_hat) + eps) ~ 0.5.
        let after = vars[0].to_vec1::<f32>().unwrap();
        let moved = make_vars(&[&[4]], 9)[0].to_vec1::<f32>().unwrap();
        for (a, b) in after.iter().zip(&moved) {
            let decay = b * (1.0 - 0.5 * 0.01);
            assert!((decay - a - 0.5).abs() < 1e-5, "{a} {b}");
        }
    }
}
