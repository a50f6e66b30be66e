//! Exact (erf) GELU, one pass forward and one pass backward.
//!
//! candle 0.11 records `gelu_erf` as a unary op whose backward is composed: square, negate,
//! divide, exp, multiply, divide, erf, multiply, two adds, the product with the gradient and
//! the accumulation, each a full pass that allocates (about twelve over the GPT MLP's
//! (batch, t, 4 d) activations). Here the backward reads the input and the gradient once and
//! writes the input's gradient once: `g (Phi(x) + x phi(x))`, with `Phi(x) = (1 + erf(x /
//! sqrt 2)) / 2` and `phi` the standard normal density. The forward is candle's formula; in f32
//! erf and exp are the branch-free approximations of `math` (erf within 5e-7 of libm's `erff`,
//! which candle calls and which cost more than the rest of the op; exp within 2 ulp), so both
//! loops vectorise; in f64 they are libm's.

use super::math::{erf_f32, exp_f32};
use super::{slice, unsupported, with_cpu, Elem};
use crate::engine::kernels::act::storage_tensor;
use candle_core::backend::BackendStorage;
use candle_core::cpu::erf::erf_f64;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use multiversion::multiversion;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `x Phi(x)` (GELU with the exact normal CDF, PyTorch's default `approximate = "none"`).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if super::fused(x) {
        x.contiguous()?.apply_op1(Gelu)
    } else {
        x.gelu_erf()
    }
}

struct Gelu;

/// Values per rayon split (one split per few pages of activations).
const MIN_SPLIT: usize = 16 * 1024;

/// The two element types' formulas: candle's forward, and the derivative.
trait GeluElem: Elem {
    fn gelu(self) -> Self;
    fn gelu_grad(self) -> Self;
}

impl GeluElem for f32 {
    #[inline(always)]
    fn gelu(self) -> f32 {
        (erf_f32(self * std::f32::consts::FRAC_1_SQRT_2) + 1.) * 0.5 * self
    }
    #[inline(always)]
    fn gelu_grad(self) -> f32 {
        // 1 / sqrt(2 pi)
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        let cdf = (erf_f32(self * std::f32::consts::FRAC_1_SQRT_2) + 1.) * 0.5;
        cdf + self * INV_SQRT_2PI * exp_f32(-0.5 * self * self)
    }
}

impl GeluElem for f64 {
    fn gelu(self) -> f64 {
        (erf_f64(self * std::f64::consts::FRAC_1_SQRT_2) + 1.) * 0.5 * self
    }
    fn gelu_grad(self) -> f64 {
        let inv_sqrt_2pi = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
        let cdf = (erf_f64(self * std::f64::consts::FRAC_1_SQRT_2) + 1.) * 0.5;
        cdf + self * inv_sqrt_2pi * (-0.5 * self * self).exp()
    }
}

/// A vector of `n` values, each written once by `fill` over disjoint chunks of `MIN_SPLIT`
/// in parallel: no zero fill first (that memset was about 1.5 % of a text-charlm step).
fn filled<T: Send>(n: usize, fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(MIN_SPLIT)
        .enumerate()
        .for_each(|(k, c)| fill(k * MIN_SPLIT, c));
    // SAFETY: the chunks cover `[0, n)` and each chunk function writes every element of its
    // chunk (`gelu_chunk` and `gelu_grad_chunk` write `y[i]` for every `i < y.len()`).
    unsafe { v.set_len(n) };
    v
}

fn fwd<T: GeluElem>(x: &[T]) -> Vec<T> {
    filled(x.len(), |at, y| gelu_chunk(y, &x[at..]))
}

fn bwd<T: GeluElem>(g: &[T], x: &[T]) -> Vec<T> {
    filled(x.len(), |at, d| gelu_grad_chunk(d, &x[at..], &g[at..]))
}

/// `y = gelu(x)` over a chunk; compiled for AVX-512, AVX2+FMA and NEON beside the baseline (the
/// polynomials vectorise; the widest lanes the CPU has are picked at run time).
#[multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn gelu_chunk<T: GeluElem>(y: &mut [MaybeUninit<T>], x: &[T]) {
    let x = &x[..y.len()];
    for (o, &v) in y.iter_mut().zip(x) {
        o.write(v.gelu());
    }
}

/// `d = g gelu'(x)` over a chunk (as `gelu_chunk`).
#[multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn gelu_grad_chunk<T: GeluElem>(d: &mut [MaybeUninit<T>], x: &[T], g: &[T]) {
    let (x, g) = (&x[..d.len()], &g[..d.len()]);
    for ((o, &v), &gv) in d.iter_mut().zip(x).zip(g) {
        o.write(gv * v.gelu_grad());
    }
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu-erf-fused"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(fwd(slice(v, l, "gelu")?)),
            CpuStorage::F64(v) => CpuStorage::F64(fwd(slice(v, l, "gelu")?)),
            s => return Err(unsupported("gelu", s.dtype())),
        };
        Ok((out, l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let out = with_cpu(&grad, "gelu grad", |gs, gl| {
            with_cpu(arg, "gelu x", |xs, xl| {
                Ok(match (gs, xs) {
                    (CpuStorage::F32(g), CpuStorage::F32(x)) => {
                        CpuStorage::F32(bwd(slice(g, gl, "gelu grad")?, slice(x, xl, "gelu x")?))
                    }
                    (CpuStorage::F64(g), CpuStorage::F64(x)) => {
                        CpuStorage::F64(bwd(slice(g, gl, "gelu grad")?, slice(x, xl, "gelu x")?))
                    }
                    (g, _) => return Err(unsupported("gelu backward", g.dtype())),
                })
            })
        })?;
        Ok(Some(storage_tensor(out, arg.shape())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kernels::tests_util::{assert_close, rand};
    use crate::engine::kernels::with_composed;
    use candle_core::{DType, Var};

    fn run(x: &Tensor, r: &Tensor, composed: bool) -> (Tensor, Tensor) {
        let v = Var::from_tensor(x).unwrap();
        let f = || gelu(v.as_tensor());
        let y = if composed { with_composed(f) } else { f() }.unwrap();
        let g = (y.clone() * r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        (y, g.get(v.as_tensor()).unwrap().clone())
    }

    #[test]
    fn fused_matches_candle_values_and_gradients() {
        for (i, shape) in [vec![1usize], vec![7, 13], vec![12, 64, 512], vec![3, 65, 9]]
            .iter()
            .enumerate()
        {
            let x = (rand(shape, 60 + i as u64) * 4.0).unwrap();
            let r = rand(shape, 70 + i as u64);
            let (yf, gf) = run(&x, &r, false);
            let (yc, gc) = run(&x, &r, true);
            // The forward is candle's formula with erf within 5e-7: a few f32 roundings.
            assert_close(&yf, &yc, 4, "y");
            // candle's backward uses 0.398942 for 1/sqrt(2 pi) (relative error 1e-6).
            assert_close(&gf, &gc, 8, "dx");
        }
    }

    #[test]
    fn gradient_matches_finite_differences_in_f64() {
        let x = (rand(&[40], 80) * 4.0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let r = rand(&[40], 81).to_dtype(DType::F64).unwrap();
        let (_, g) = run(&x, &r, false);
        let g = g.to_vec1::<f64>().unwrap();
        let (xs, rs) = (x.to_vec1::<f64>().unwrap(), r.to_vec1::<f64>().unwrap());
        let h = 1e-6;
        for i in 0..xs.len() {
            let fd = (f64::gelu(xs[i] + h) - f64::gelu(xs[i] - h)) / (2.0 * h) * rs[i];
            assert!(
                (g[i] - fd).abs() < 1e-7,
                "{i}: analytic {} vs numeric {fd}",
                g[i]
            );
        }
    }
}
