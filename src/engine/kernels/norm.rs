//! Layer norm over the last dimension, with weight and bias: one pass forward, one backward.
//!
//! candle-nn 0.11's fused `ops::layer_norm` records no backward (gradients stop there), so the
//! models used `layer_norm_slow`: about ten tensor ops forward (mean, sub, sqr, mean, add,
//! sqrt, div, mul, add, broadcasts), each allocating a full-size tensor and each with its own
//! backward node. Here the forward reads the input once and writes the output once; the
//! backward recomputes each row's mean and 1/std (two short passes over a row in cache) and
//! writes the input gradient once, with the weight and bias gradients summed per block of
//! rows and then over blocks in a fixed order (deterministic whatever the thread count).
//!
//! Statistics and sums are accumulated in f64 (in eight lanes, so the row loops vectorise; they
//! are compiled for AVX-512, AVX2+FMA and NEON beside the baseline): the result is at least as accurate
//! as the composed ops (which accumulate in the tensor's dtype).

use super::math::lane_sum;
use super::{slice, unsupported, with_cpu, Elem};
use crate::engine::kernels::act::storage_tensor;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use multiversion::multiversion;
use rayon::prelude::*;

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last dimension of `x` (biased
/// variance, as PyTorch's `LayerNorm`).
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if super::fused(x) {
        x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            LayerNorm {
                eps,
                rows: Default::default(),
            },
        )
    } else {
        candle_nn::ops::layer_norm_slow(x, weight, bias, eps as f32)
    }
}

/// The op; it keeps each row's (mean, 1/std) from the forward for the backward (16 bytes a
/// row), which then reads each row three times instead of five.
struct LayerNorm {
    eps: f64,
    rows: super::Kept<(f64, f64)>,
}

/// Rows per rayon split: a GPT-mini step has 768 rows of 128, a text-charlm step 2,048 of 64.
const ROWS_PER_BLOCK: usize = 64;

/// Mean and 1/sqrt(var + eps) of one row.
#[inline(always)]
fn stats<T: Elem>(row: &[T], eps: f64) -> (f64, f64) {
    let d = row.len() as f64;
    let mean = lane_sum(row, row, |v, _| v) / d;
    let var = lane_sum(row, row, |v, _| (v - mean) * (v - mean)) / d;
    (mean, 1.0 / (var + eps).sqrt())
}

/// One row forward; compiled for AVX-512, AVX2+FMA and NEON beside the baseline.
#[multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn fwd_row<T: Elem>(yr: &mut [T], xr: &[T], w: &[T], b: &[T], eps: f64) -> (f64, f64) {
    let (mean, rstd) = stats(xr, eps);
    let (xr, w, b) = (&xr[..yr.len()], &w[..yr.len()], &b[..yr.len()]);
    for (((o, &v), &wi), &bi) in yr.iter_mut().zip(xr).zip(w).zip(b) {
        *o = T::from_f64((v.to_f64() - mean) * rstd * wi.to_f64() + bi.to_f64());
    }
    (mean, rstd)
}

/// One row backward: writes the row's `dx`, adds its terms to `dw` and `db` (as `fwd_row`).
#[multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn bwd_row<T: Elem>(
    dxr: &mut [T],
    (xr, gr, w): (&[T], &[T], &[T]),
    (dw, db, xhat): (&mut [f64], &mut [f64], &mut [f64]),
    (eps, kept): (f64, Option<(f64, f64)>),
) {
    let d = dxr.len();
    let (xr, gr, w) = (&xr[..d], &gr[..d], &w[..d]);
    let (dw, db, xhat) = (&mut dw[..d], &mut db[..d], &mut xhat[..d]);
    let (mean, rstd) = kept.unwrap_or_else(|| stats(xr, eps));
    // dxhat = g * w; dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)).
    for i in 0..d {
        xhat[i] = (xr[i].to_f64() - mean) * rstd;
        let gi = gr[i].to_f64();
        dw[i] += gi * xhat[i];
        db[i] += gi;
    }
    let s1 = lane_sum(gr, w, |g, w| g * w) / d as f64;
    let mut acc = [0f64; 8];
    let (cg, cw, cx) = (gr.chunks_exact(8), w.chunks_exact(8), xhat.chunks_exact(8));
    let tail: f64 = (cg
        .remainder()
        .iter()
        .zip(cw.remainder())
        .zip(cx.remainder()))
    .map(|((g, w), x)| g.to_f64() * w.to_f64() * x)
    .sum();
    for ((g, w), x) in cg.zip(cw).zip(cx) {
        for j in 0..8 {
            acc[j] += g[j].to_f64() * w[j].to_f64() * x[j];
        }
    }
    let s2 = (acc.iter().sum::<f64>() + tail) / d as f64;
    for i in 0..d {
        let dxh = gr[i].to_f64() * w[i].to_f64();
        dxr[i] = T::from_f64(rstd * (dxh - s1 - xhat[i] * s2));
    }
}

fn check(d: usize, x_len: usize, w_len: usize, b_len: usize) -> Result<()> {
    if d == 0 || w_len != d || b_len != d || !x_len.is_multiple_of(d) {
        candle_core::bail!(
            "layer_norm: weight ({w_len}) and bias ({b_len}) must match the last dimension ({d})"
        );
    }
    Ok(())
}

/// The output and each row's (mean, 1/std).
fn fwd<T: Elem>(x: &[T], w: &[T], b: &[T], eps: f64) -> (Vec<T>, Vec<(f64, f64)>) {
    let d = w.len();
    let mut y = vec![T::zero(); x.len()];
    let blocks: Vec<Vec<(f64, f64)>> = y
        .par_chunks_mut(d * ROWS_PER_BLOCK)
        .zip(x.par_chunks(d * ROWS_PER_BLOCK))
        .map(|(yb, xb)| {
            yb.chunks_exact_mut(d)
                .zip(xb.chunks_exact(d))
                .map(|(yr, xr)| fwd_row(yr, xr, w, b, eps))
                .collect()
        })
        .collect();
    (y, blocks.concat())
}

/// (dx, dweight, dbias).
fn bwd<T: Elem>(
    g: &[T],
    x: &[T],
    w: &[T],
    eps: f64,
    kept: Option<&[(f64, f64)]>,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let d = w.len();
    let kept = kept.filter(|k| k.len() * d == x.len());
    let mut dx = vec![T::zero(); x.len()];
    let partials: Vec<(Vec<f64>, Vec<f64>)> = dx
        .par_chunks_mut(d * ROWS_PER_BLOCK)
        .zip(x.par_chunks(d * ROWS_PER_BLOCK))
        .zip(g.par_chunks(d * ROWS_PER_BLOCK))
        .enumerate()
        .map(|(bi, ((dxb, xb), gb))| {
            let mut dw = vec![0f64; d];
            let mut db = vec![0f64; d];
            let mut xhat = vec![0f64; d];
            for (ri, ((dxr, xr), gr)) in dxb
                .chunks_exact_mut(d)
                .zip(xb.chunks_exact(d))
                .zip(gb.chunks_exact(d))
                .enumerate()
            {
                let st = kept.map(|k| k[bi * ROWS_PER_BLOCK + ri]);
                bwd_row(dxr, (xr, gr, w), (&mut dw, &mut db, &mut xhat), (eps, st));
            }
            (dw, db)
        })
        .collect();
    let (mut dw, mut db) = (vec![0f64; d], vec![0f64; d]);
    for (pw, pb) in &partials {
        for i in 0..d {
            dw[i] += pw[i];
            db[i] += pb[i];
        }
    }
    let to_t = |v: Vec<f64>| v.into_iter().map(T::from_f64).collect::<Vec<T>>();
    (dx, to_t(dw), to_t(db))
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm-fused"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = xl.dims().last().copied().unwrap_or(0);
        let out = match (xs, ws, bs) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => {
                let (x, w, b) = (
                    slice(x, xl, "ln x")?,
                    slice(w, wl, "ln w")?,
                    slice(b, bl, "ln b")?,
                );
                check(d, x.len(), w.len(), b.len())?;
                let (y, rows) = fwd(x, w, b, self.eps);
                self.rows.put(rows);
                CpuStorage::F32(y)
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => {
                let (x, w, b) = (
                    slice(x, xl, "ln x")?,
                    slice(w, wl, "ln w")?,
                    slice(b, bl, "ln b")?,
                );
                check(d, x.len(), w.len(), b.len())?;
                let (y, rows) = fwd(x, w, b, self.eps);
                self.rows.put(rows);
                CpuStorage::F64(y)
            }
            (x, _, _) => return Err(unsupported("layer_norm", x.dtype())),
        };
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let kept = self.rows.get();
        let kept = kept.as_deref();
        let (dx, dw, db) = with_cpu(&grad, "ln grad", |gs, gl| {
            with_cpu(x, "ln x", |xs, xl| {
                with_cpu(w, "ln w", |ws, wl| {
                    /// The three gradients as storages of the input's dtype.
                    fn go<T: Elem>(
                        (gs, gl): (&CpuStorage, &Layout),
                        (xs, xl): (&CpuStorage, &Layout),
                        (ws, wl): (&CpuStorage, &Layout),
                        (eps, kept): (f64, Option<&[(f64, f64)]>),
                    ) -> Result<(CpuStorage, CpuStorage, CpuStorage)> {
                        let (dx, dw, db) = bwd(
                            slice(T::cpu_storage_as_slice(gs)?, gl, "ln grad")?,
                            slice(T::cpu_storage_as_slice(xs)?, xl, "ln x")?,
                            slice(T::cpu_storage_as_slice(ws)?, wl, "ln w")?,
                            eps,
                            kept,
                        );
                        Ok((
                            T::to_cpu_storage_owned(dx),
                            T::to_cpu_storage_owned(dw),
                            T::to_cpu_storage_owned(db),
                        ))
                    }
                    let args = ((gs, gl), (xs, xl), (ws, wl));
                    match xs {
                        CpuStorage::F32(_) => go::<f32>(args.0, args.1, args.2, (self.eps, kept)),
                        CpuStorage::F64(_) => go::<f64>(args.0, args.1, args.2, (self.eps, kept)),
                        s => Err(unsupported("layer_norm backward", s.dtype())),
                    }
                })
            })
        })?;
        Ok((
            Some(storage_tensor(dx, x.shape())?),
            Some(storage_tensor(dw, w.shape())?),
            Some(storage_tensor(db, b.shape())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kernels::tests_util::{assert_close, rand};
    use crate::engine::kernels::with_composed;
    use candle_core::{DType, Var};

    /// Loss `sum(layer_norm(x) * r)` and the gradients of x, w, b, fused or composed.
    fn run(
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        r: &Tensor,
        composed: bool,
    ) -> (Tensor, Tensor, Tensor, Tensor) {
        let (xv, wv, bv) = (
            Var::from_tensor(x).unwrap(),
            Var::from_tensor(w).unwrap(),
            Var::from_tensor(b).unwrap(),
        );
        let f = || layer_norm(xv.as_tensor(), wv.as_tensor(), bv.as_tensor(), 1e-5);
        let y = if composed { with_composed(f) } else { f() }.unwrap();
        let loss = (y.clone() * r).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        (
            y,
            g.get(xv.as_tensor()).unwrap().clone(),
            g.get(wv.as_tensor()).unwrap().clone(),
            g.get(bv.as_tensor()).unwrap().clone(),
        )
    }

    /// The backward from the forward's kept row statistics and from recomputed ones is the
    /// same, bit for bit (100 rows: a block boundary inside).
    #[test]
    fn kept_rows_give_the_recomputed_gradient() {
        let d = 13;
        let v = |seed| {
            rand(&[100, d], seed)
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let (x, g) = (v(40), v(41));
        let (w, b) = (v(42)[..d].to_vec(), v(43)[..d].to_vec());
        let (_, rows) = fwd(&x, &w, &b, 1e-5);
        assert_eq!(
            bwd(&g, &x, &w, 1e-5, Some(&rows)),
            bwd(&g, &x, &w, 1e-5, None)
        );
    }

    #[test]
    fn fused_matches_composed_at_odd_shapes() {
        // Rows not a multiple of the block, d not a multiple of 8, one row, the models' shapes.
        for (i, shape) in [
            vec![1, 1, 7],
            vec![3, 65, 13],
            vec![2, 7, 128],
            vec![32, 64, 64],
            vec![12, 64, 128],
        ]
        .iter()
        .enumerate()
        {
            let d = *shape.last().unwrap();
            let x = (rand(shape, 1 + i as u64) * 3.0).unwrap();
            let w = (rand(&[d], 7).affine(0.5, 1.0)).unwrap();
            let b = rand(&[d], 8);
            let r = rand(shape, 9);
            let fused = run(&x, &w, &b, &r, false);
            let composed = run(&x, &w, &b, &r, true);
            let rows: usize = shape[..shape.len() - 1].iter().product();
            assert_close(&fused.0, &composed.0, 4 * d, "y");
            assert_close(&fused.1, &composed.1, 8 * d, "dx");
            assert_close(&fused.2, &composed.2, 2 * rows, "dw");
            assert_close(&fused.3, &composed.3, 2 * rows, "db");
        }
    }

    #[test]
    fn gradients_match_finite_differences_in_f64() {
        let shape = [2, 3, 5];
        let x = rand(&shape, 3).to_dtype(DType::F64).unwrap();
        let w = rand(&[5], 4)
            .affine(0.5, 1.0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let b = rand(&[5], 5).to_dtype(DType::F64).unwrap();
        let r = rand(&shape, 6).to_dtype(DType::F64).unwrap();
        let loss = |x: &Tensor, w: &Tensor, b: &Tensor| -> f64 {
            (layer_norm(x, w, b, 1e-5).unwrap() * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let (_, dx, dw, db) = run(&x, &w, &b, &r, false);
        let h = 1e-6;
        let fd = |t: &Tensor, which: usize| -> Vec<f64> {
            let v = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            (0..v.len())
                .map(|i| {
                    let bump = |s: f64| {
                        let mut u = v.clone();
                        u[i] += s;
                        Tensor::from_vec(u, t.shape(), t.device()).unwrap()
                    };
                    let (p, m) = (bump(h), bump(-h));
                    let (lp, lm) = match which {
                        0 => (loss(&p, &w, &b), loss(&m, &w, &b)),
                        1 => (loss(&x, &p, &b), loss(&x, &m, &b)),
                        _ => (loss(&x, &w, &p), loss(&x, &w, &m)),
                    };
                    (lp - lm) / (2.0 * h)
                })
                .collect()
        };
        for (which, (got, t)) in [(&dx, &x), (&dw, &w), (&db, &b)].into_iter().enumerate() {
            let want = fd(t, which);
            let got = got.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for (g, f) in got.iter().zip(&want) {
                assert!(
                    (g - f).abs() < 1e-6,
                    "arg {which}: analytic {g} vs numeric {f}"
                );
            }
        }
    }
}
