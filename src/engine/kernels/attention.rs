//! Causal multi-head self-attention in one op, from the packed q/k/v projection to the heads'
//! concatenated output, with its backward.
//!
//! The composed version is about a dozen candle ops per layer: narrow, squeeze, transpose and
//! copy for each of q, k and v; the scores GEMM; the scale; the broadcast add of a materialised
//! (t, t) mask; softmax (itself five ops: max, sub, exp, sum, div); the weighted-sum GEMM; the
//! transpose and copy back. Each allocates a (batch, heads, t, t) or (batch, t, width) tensor
//! and records a backward node. Here one pass per batch row does, for each head, the scores
//! GEMM (through the `gemm` crate), the causal softmax in place, the optional
//! dropout of the probabilities, and the weighted-sum GEMM written straight into the output's
//! (t, heads * head_dim) layout. The softmax runs in the tensor's dtype with the row maximum
//! subtracted, as candle's does. The backward recomputes the probabilities from q and k
//! (t <= 256: a t x t tile per head stays in cache, and nothing (batch, heads, t, t)-sized is
//! kept between forward and backward) and writes the q, k and v gradients straight into the
//! packed layout of the projection's output.
//!
//! Layout: `qkv` is (batch, t, 3 * heads * head_dim) as the model's linear layer produces it,
//! `[q heads | k heads | v heads]` along the last dimension, head-major inside each third
//! (the composed path's `reshape((b, t, 3, h, hd))`). Masked scores are skipped (their
//! probability is exactly 0, as `exp(-inf)` gives in the composed path).
//!
//! Dropout: the keep mask (0 or 1 per (batch, head, i, j), drawn by the model from its seeded
//! stream in the same order as the composed path draws it) and `1 / keep` are held by the op;
//! the dropped probabilities are `p * (mask * (1 / keep))`, the composed path's arithmetic.

use super::{slice, unsupported, with_cpu, Elem, Mat, SERIAL};
use crate::engine::kernels::act::storage_tensor;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// Inverted dropout of the attention probabilities.
#[derive(Clone)]
pub struct AttentionDropout {
    /// (batch, heads, t, t) keep mask, 0 or 1, row-major.
    pub keep_mask: Arc<Vec<f32>>,
    /// 1 / keep probability, as an f32 (the composed path's multiplier).
    pub inv_keep: f32,
}

/// `softmax(q k^T * scale + causal mask) [dropout] v` per head, from the packed projection
/// `qkv` (batch, t, 3 * heads * head_dim) to (batch, t, heads * head_dim). A CPU f32/f64
/// kernel only (see `kernels::fused`); the model keeps candle's composed ops elsewhere.
pub fn causal_attention(
    qkv: &Tensor,
    heads: usize,
    scale: f64,
    dropout: Option<AttentionDropout>,
) -> Result<Tensor> {
    let (b, t, w3) = qkv.dims3()?;
    if heads == 0 || !w3.is_multiple_of(3 * heads) {
        candle_core::bail!("causal_attention: width {w3} is not 3 x {heads} heads x head_dim");
    }
    if let Some(d) = &dropout {
        if d.keep_mask.len() != b * heads * t * t {
            candle_core::bail!(
                "causal_attention: dropout mask has {} values, expected {}",
                d.keep_mask.len(),
                b * heads * t * t
            );
        }
    }
    qkv.contiguous()?.apply_op1(Attention {
        heads,
        scale,
        dropout,
    })
}

struct Attention {
    heads: usize,
    scale: f64,
    dropout: Option<AttentionDropout>,
}

/// Shapes of one call.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    h: usize,
    hd: usize,
}

impl Dims {
    fn of(l: &Layout, heads: usize) -> Result<Dims> {
        let (b, t, w3) = l.shape().dims3()?;
        Ok(Dims {
            b,
            t,
            h: heads,
            hd: w3 / (3 * heads),
        })
    }
    /// Width of the output (heads * head_dim).
    fn aw(&self) -> usize {
        self.h * self.hd
    }
}

impl Attention {
    /// The causal softmax of one head's scaled scores, in place over the (t, t) tile `s` of
    /// unscaled scores (row i keeps columns 0..=i; the rest are set to 0). In the tensor's
    /// dtype, as the composed path computes it (max subtracted first).
    fn softmax_causal<T: Elem>(&self, s: &mut [T], t: usize) {
        softmax_causal_tile(s, t, T::from_f64(self.scale));
    }

    /// Multiply the probabilities of (batch bi, head hi) by the dropout mask, in place.
    fn drop<T: Elem>(&self, p: &mut [T], bi: usize, hi: usize, d: Dims) {
        if let Some(dr) = &self.dropout {
            let tt = d.t * d.t;
            let m = &dr.keep_mask[(bi * d.h + hi) * tt..][..tt];
            // p * (mask * (1 / keep)): the factor is 0 or 1 / keep, rounded to the dtype.
            let ik = T::from_f64(f64::from(dr.inv_keep));
            for (v, &k) in p.iter_mut().zip(m) {
                *v = if k != 0.0 { *v * ik } else { T::zero() };
            }
        }
    }

    /// q k^T (unscaled) of one head into the (t, t) tile `s`.
    fn scores<T: Elem>(&self, s: &mut [T], qkv_b: &[T], hi: usize, d: Dims) -> Result<()> {
        let (aw, rs) = (d.aw(), 3 * d.aw());
        let q = Mat {
            data: &qkv_b[hi * d.hd..],
            rs,
            cs: 1,
        };
        // k^T: element (e, j) is k[j, e].
        let kt = Mat {
            data: &qkv_b[aw + hi * d.hd..],
            rs: 1,
            cs: rs,
        };
        super::gemm_into(s, d.t, (d.t, d.t, d.hd), q, kt, false, SERIAL)
    }

    fn fwd<T: Elem>(&self, qkv: &[T], d: Dims) -> Result<Vec<T>> {
        let (t, aw) = (d.t, d.aw());
        let mut y = vec![T::zero(); d.b * t * aw];
        y.par_chunks_mut(t * aw)
            .zip(qkv.par_chunks(t * 3 * aw))
            .enumerate()
            .try_for_each(|(bi, (yb, qb))| -> Result<()> {
                let mut p = vec![T::zero(); t * t];
                for hi in 0..d.h {
                    self.scores(&mut p, qb, hi, d)?;
                    self.softmax_causal(&mut p, t);
                    self.drop(&mut p, bi, hi, d);
                    let v = Mat {
                        data: &qb[2 * aw + hi * d.hd..],
                        rs: 3 * aw,
                        cs: 1,
                    };
                    let pm = Mat {
                        data: &p,
                        rs: t,
                        cs: 1,
                    };
                    super::gemm_into(&mut yb[hi * d.hd..], aw, (t, d.hd, t), pm, v, false, SERIAL)?;
                }
                Ok(())
            })?;
        Ok(y)
    }

    /// The gradient of the packed projection from the output's gradient `g` (batch, t, aw).
    fn bwd_packed<T: Elem>(&self, g: &[T], qkv: &[T], d: Dims) -> Result<Vec<T>> {
        let (t, aw, hd) = (d.t, d.aw(), d.hd);
        let rs = 3 * aw;
        let mut dqkv = vec![T::zero(); d.b * t * rs];
        dqkv.par_chunks_mut(t * rs)
            .zip(qkv.par_chunks(t * rs).zip(g.par_chunks(t * aw)))
            .enumerate()
            .try_for_each(|(bi, (db, (qb, gb)))| -> Result<()> {
                let mut p = vec![T::zero(); t * t];
                let mut pd = vec![T::zero(); t * t];
                let mut dp = vec![T::zero(); t * t];
                for hi in 0..d.h {
                    // Recompute the probabilities, and their dropped version for dV.
                    self.scores(&mut p, qb, hi, d)?;
                    self.softmax_causal(&mut p, t);
                    pd.copy_from_slice(&p);
                    self.drop(&mut pd, bi, hi, d);
                    let gy = Mat {
                        data: &gb[hi * hd..],
                        rs: aw,
                        cs: 1,
                    };
                    // dV = P_dropped^T dY.
                    let pdt = Mat {
                        data: &pd,
                        rs: 1,
                        cs: t,
                    };
                    super::gemm_into(
                        &mut db[2 * aw + hi * hd..],
                        rs,
                        (t, hd, t),
                        pdt,
                        gy,
                        false,
                        SERIAL,
                    )?;
                    // dP_dropped = dY V^T, then through the dropout: dP = dP_dropped * mask / keep.
                    let vt = Mat {
                        data: &qb[2 * aw + hi * hd..],
                        rs: 1,
                        cs: rs,
                    };
                    super::gemm_into(&mut dp, t, (t, t, hd), gy, vt, false, SERIAL)?;
                    self.drop(&mut dp, bi, hi, d);
                    // dS = P (dP - rowsum(dP P)) * scale, zero above the diagonal.
                    softmax_causal_bwd_tile(&mut dp, &p, t, T::from_f64(self.scale));
                    let ds = Mat {
                        data: &dp,
                        rs: t,
                        cs: 1,
                    };
                    let dst = Mat {
                        data: &dp,
                        rs: 1,
                        cs: t,
                    };
                    // dQ = dS K; dK = dS^T Q.
                    let k = Mat {
                        data: &qb[aw + hi * hd..],
                        rs,
                        cs: 1,
                    };
                    let q = Mat {
                        data: &qb[hi * hd..],
                        rs,
                        cs: 1,
                    };
                    super::gemm_into(&mut db[hi * hd..], rs, (t, hd, t), ds, k, false, SERIAL)?;
                    super::gemm_into(
                        &mut db[aw + hi * hd..],
                        rs,
                        (t, hd, t),
                        dst,
                        q,
                        false,
                        SERIAL,
                    )?;
                }
                Ok(())
            })?;
        Ok(dqkv)
    }
}

/// Lanes of the tile loops: whole lanes vectorise, so each row is processed up to the next
/// multiple of `LANES` past the diagonal (within the row) instead of leaving a scalar tail.
const LANES: usize = 16;

/// Columns of row `i` (of `t`) that the tile loops process: the live `i + 1`, rounded up to
/// whole lanes, at most `t`.
fn lane_width(i: usize, t: usize) -> usize {
    (i + 1).div_ceil(LANES).saturating_mul(LANES).min(t)
}

/// `f` over the lanes as a tree (halves, then quarters, ...): a few shuffles where a fold
/// would be a chain of `LANES` dependent operations, per row.
#[inline(always)]
fn tree<T: Copy>(mut v: [T; LANES], f: impl Fn(T, T) -> T) -> T {
    let mut half = LANES / 2;
    while half > 0 {
        for j in 0..half {
            v[j] = f(v[j], v[j + half]);
        }
        half /= 2;
    }
    v[0]
}

/// Causal softmax of `s * scale` over the (t, t) tile `s`, in place. Per row: the columns
/// past the diagonal up to whole lanes are set to -inf (their exponential is exactly 0), the
/// maximum and the sum of exponentials are taken in lanes (a maximum is exact in any order;
/// the sum's order moves a probability by an ulp or so), and the rest of the row is zeroed.
/// One compiled loop for the tile (AVX-512, AVX2+FMA and NEON beside the baseline), not a dispatch
/// per row: a row of the text-charlm tile is 1 to 64 values.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn softmax_causal_tile<T: Elem>(s: &mut [T], t: usize, scale: T) {
    let neg_inf = T::from_f64(f64::NEG_INFINITY);
    for (i, row) in s.chunks_exact_mut(t).enumerate() {
        let w = lane_width(i, t);
        let (live, dead) = row.split_at_mut(w);
        live[i + 1..].iter_mut().for_each(|v| *v = neg_inf);
        let mut m = [neg_inf; LANES];
        let mut chunks = live.chunks_exact_mut(LANES);
        for c in chunks.by_ref() {
            for j in 0..LANES {
                c[j] *= scale;
                m[j] = if c[j] > m[j] { c[j] } else { m[j] };
            }
        }
        let pick = |a: T, b: T| if b > a { b } else { a };
        let mut max = tree(m, pick);
        for v in chunks.into_remainder() {
            *v *= scale;
            max = pick(max, *v);
        }
        let mut acc = [T::zero(); LANES];
        let mut chunks = live.chunks_exact_mut(LANES);
        for c in chunks.by_ref() {
            for j in 0..LANES {
                c[j] = (c[j] - max).exp();
                acc[j] += c[j];
            }
        }
        let mut sum = tree(acc, |a, b| a + b);
        for v in chunks.into_remainder() {
            *v = (*v - max).exp();
            sum += *v;
        }
        let inv = T::one() / sum;
        live.iter_mut().for_each(|v| *v *= inv);
        dead.iter_mut().for_each(|v| *v = T::zero());
    }
}

/// The softmax backward over the (t, t) tile, in place: `dS = P (dP - rowsum(dP P)) * scale`
/// with `P` from `softmax_causal_tile` (exactly 0 past the diagonal, so the lanes past it add
/// nothing), zero above the diagonal.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn softmax_causal_bwd_tile<T: Elem>(dp: &mut [T], p: &[T], t: usize, scale: T) {
    for (i, (dr, pr)) in dp.chunks_exact_mut(t).zip(p.chunks_exact(t)).enumerate() {
        let w = lane_width(i, t);
        let (live, dead) = dr.split_at_mut(w);
        let pr = &pr[..w];
        let mut acc = [T::zero(); LANES];
        let (dc, pc) = (live.chunks_exact(LANES), pr.chunks_exact(LANES));
        let tail: T = dc
            .remainder()
            .iter()
            .zip(pc.remainder())
            .fold(T::zero(), |a, (&x, &y)| a + x * y);
        for (x, y) in dc.zip(pc) {
            for j in 0..LANES {
                acc[j] += x[j] * y[j];
            }
        }
        let dot = tree(acc, |a, b| a + b) + tail;
        for (x, &pv) in live.iter_mut().zip(pr) {
            *x = pv * (*x - dot) * scale;
        }
        dead.iter_mut().for_each(|v| *v = T::zero());
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "causal-attention-fused"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(l, self.heads)?;
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(self.fwd(slice(v, l, "attention qkv")?, d)?),
            CpuStorage::F64(v) => CpuStorage::F64(self.fwd(slice(v, l, "attention qkv")?, d)?),
            s => return Err(unsupported("causal_attention", s.dtype())),
        };
        Ok((out, Shape::from((d.b, d.t, d.aw()))))
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let d = Dims::of(qkv.layout(), self.heads)?;
        let grad = grad.contiguous()?;
        let out = with_cpu(&grad, "attention grad", |gs, gl| {
            with_cpu(qkv, "attention qkv", |qs, ql| {
                Ok(match (gs, qs) {
                    (CpuStorage::F32(g), CpuStorage::F32(q)) => CpuStorage::F32(self.bwd_packed(
                        slice(g, gl, "attention grad")?,
                        slice(q, ql, "attention qkv")?,
                        d,
                    )?),
                    (CpuStorage::F64(g), CpuStorage::F64(q)) => CpuStorage::F64(self.bwd_packed(
                        slice(g, gl, "attention grad")?,
                        slice(q, ql, "attention qkv")?,
                        d,
                    )?),
                    (g, _) => return Err(unsupported("causal_attention backward", g.dtype())),
                })
            })
        })?;
        Ok(Some(storage_tensor(out, qkv.shape())?))
    }
}

/// The (t, t) additive causal mask of the composed path: 0 on and below the diagonal, -inf
/// above (f32).
pub fn causal_mask(t: usize, dev: &candle_core::Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t * t)
        .map(|k| {
            if k % t > k / t {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(mask, (t, t), dev)
}

/// The composed reference in f32/f64: candle ops, as the model ran attention before this kernel
/// (the tests' and `benches/ops.rs`'s baseline; the model's own composed path also casts for
/// mixed precision).
pub fn causal_attention_composed(
    qkv: &Tensor,
    heads: usize,
    scale: f64,
    dropout: Option<&AttentionDropout>,
) -> Result<Tensor> {
    let (b, t, w3) = qkv.dims3()?;
    let hd = w3 / (3 * heads);
    let qkv = qkv.reshape((b, t, 3, heads, hd))?;
    let part = |i: usize| -> Result<Tensor> {
        qkv.narrow(2, i, 1)?
            .squeeze(2)?
            .transpose(1, 2)?
            .contiguous()
    };
    let (q, k, v) = (part(0)?, part(1)?, part(2)?);
    let att = (q.matmul(&k.t()?)? * scale)?;
    let mask = causal_mask(t, qkv.device())?.to_dtype(att.dtype())?;
    let mut att = candle_nn::ops::softmax(&att.broadcast_add(&mask)?, candle_core::D::Minus1)?;
    if let Some(dr) = dropout {
        let m = Tensor::from_vec(dr.keep_mask.to_vec(), att.shape(), att.device())?;
        att = att.mul(&(m * f64::from(dr.inv_keep))?.to_dtype(att.dtype())?)?;
    }
    att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, heads * hd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kernels::tests_util::{assert_close, rand};
    use candle_core::{DType, Var};

    fn grads(
        qkv: &Tensor,
        r: &Tensor,
        heads: usize,
        dropout: Option<AttentionDropout>,
        composed: bool,
    ) -> (Tensor, Tensor) {
        let v = Var::from_tensor(qkv).unwrap();
        let (_, _, w3) = qkv.dims3().unwrap();
        let scale = 1.0 / ((w3 / (3 * heads)) as f64).sqrt();
        let y = if composed {
            causal_attention_composed(v.as_tensor(), heads, scale, dropout.as_ref())
        } else {
            causal_attention(v.as_tensor(), heads, scale, dropout)
        }
        .unwrap();
        let g = (y.clone() * r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        (y, g.get(v.as_tensor()).unwrap().clone())
    }

    fn mask(n: usize, seed: u64) -> AttentionDropout {
        let r = rand(&[n], seed)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        AttentionDropout {
            keep_mask: Arc::new(r.iter().map(|v| if *v < 0.6 { 1.0 } else { 0.0 }).collect()),
            inv_keep: (1.0 / 0.8f64) as f32,
        }
    }

    #[test]
    fn fused_matches_composed_at_model_and_odd_shapes() {
        // (batch, t, heads, head_dim): text-charlm, shakespeare-gpt-mini, and odd ones.
        let shapes = [
            (32, 64, 4, 16),
            (12, 64, 4, 32),
            (1, 1, 1, 8),
            (2, 7, 3, 5),
            (3, 65, 1, 13),
        ];
        for (i, &(b, t, h, hd)) in shapes.iter().enumerate() {
            let qkv = (rand(&[b, t, 3 * h * hd], 10 + i as u64) * 2.0).unwrap();
            let r = rand(&[b, t, h * hd], 20 + i as u64);
            for dropout in [None, Some(mask(b * h * t * t, 30 + i as u64))] {
                let (yf, gf) = grads(&qkv, &r, h, dropout.clone(), false);
                let (yc, gc) = grads(&qkv, &r, h, dropout.clone(), true);
                // Sums of up to t terms of GEMMs and softmax in a different order.
                assert_close(&yf, &yc, 8 * t.max(hd), "y");
                assert_close(&gf, &gc, 16 * t.max(hd), "dqkv");
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences_in_f64() {
        let (b, t, h, hd) = (2, 5, 2, 3);
        let qkv = rand(&[b, t, 3 * h * hd], 41).to_dtype(DType::F64).unwrap();
        let r = rand(&[b, t, h * hd], 42).to_dtype(DType::F64).unwrap();
        let scale = 1.0 / (hd as f64).sqrt();
        for dropout in [None, Some(mask(b * h * t * t, 43))] {
            let (_, g) = grads(&qkv, &r, h, dropout.clone(), false);
            let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let base = qkv.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let loss = |v: Vec<f64>| -> f64 {
                let x = Tensor::from_vec(v, qkv.shape(), qkv.device()).unwrap();
                (causal_attention(&x, h, scale, dropout.clone()).unwrap() * &r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let e = 1e-6;
            for i in 0..base.len() {
                let mut p = base.clone();
                p[i] += e;
                let mut m = base.clone();
                m[i] -= e;
                let fd = (loss(p) - loss(m)) / (2.0 * e);
                assert!(
                    (g[i] - fd).abs() < 1e-6,
                    "index {i}: analytic {} vs numeric {fd}",
                    g[i]
                );
            }
        }
    }

    #[test]
    fn no_peeking_at_later_positions() {
        let (b, t, h, hd) = (1, 6, 2, 4);
        let a = rand(&[b, t, 3 * h * hd], 50);
        // Change only the last position: every earlier output stays exactly the same.
        let mut v = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let w3 = 3 * h * hd;
        for x in &mut v[(t - 1) * w3..] {
            *x += 1.0;
        }
        let bt = Tensor::from_vec(v, a.shape(), a.device()).unwrap();
        let ya = causal_attention(&a, h, 0.5, None).unwrap();
        let yb = causal_attention(&bt, h, 0.5, None).unwrap();
        let (ya, yb) = (
            ya.narrow(1, 0, t - 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            yb.narrow(1, 0, t - 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
        );
        assert_eq!(ya, yb);
    }
}
