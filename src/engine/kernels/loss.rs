//! Mean softmax cross-entropy of logits against class indices, one pass forward and one pass
//! backward.
//!
//! candle-nn 0.11's `loss::cross_entropy` is `log_softmax` (max, subtract, exp, sum, log,
//! subtract, each with broadcasts) then `gather`, `sum` and a division, and its backward walks
//! the same nodes back, including a scatter-add for the gather; for a character model that is
//! a dozen passes over the (batch x t, vocabulary) logits. Here the forward computes each row's
//! log-sum-exp once (max subtracted, exponentials in the dtype, f64 sums), and the backward writes the gradient
//! `(softmax - one_hot) * g / n` in one pass, recomputing the row's softmax from the logits
//! (no (n, vocabulary) tensor kept between them).

use super::{slice, unsupported, with_cpu, Elem};
use crate::engine::kernels::act::storage_tensor;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// The mean over rows of `-log softmax(logits)[row, target[row]]`; logits (n, classes),
/// targets (n) of u32 or i64 class indices.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let indices = matches!(targets.dtype(), DType::U32 | DType::I64);
    if super::fused(logits) && indices && targets.device().is_cpu() {
        logits
            .contiguous()?
            .apply_op2(&targets.contiguous()?, CrossEntropy::default())
    } else {
        candle_nn::loss::cross_entropy(logits, targets)
    }
}

/// The op; it keeps the forward's per-row log-sum-exp for the backward (16 bytes a row),
/// so the backward reads each logit once.
#[derive(Default)]
struct CrossEntropy {
    rows: super::Kept<RowLse>,
}

/// Rows per rayon split.
const ROWS_PER_BLOCK: usize = 64;

/// The class indices as usize, each checked against the class count.
fn targets(s: &CpuStorage, l: &Layout, classes: usize) -> Result<Vec<usize>> {
    let v: Vec<usize> = match s {
        CpuStorage::U32(v) => slice(v, l, "cross_entropy targets")?
            .iter()
            .map(|&t| t as usize)
            .collect(),
        CpuStorage::I64(v) => slice(v, l, "cross_entropy targets")?
            .iter()
            .map(|&t| usize::try_from(t).unwrap_or(usize::MAX))
            .collect(),
        s => candle_core::bail!(
            "cross_entropy: targets must be u32 or i64, got {:?}",
            s.dtype()
        ),
    };
    if let Some(bad) = v.iter().find(|&&t| t >= classes) {
        candle_core::bail!("cross_entropy: target {bad} is not a class index (< {classes})");
    }
    Ok(v)
}

/// Row maximum and log of the sum of exp(x - max): the exponentials in the dtype (as candle's
/// log-softmax computes them), summed in `LANES` dtype lanes whose totals are added in f64
/// (each lane holds a sixteenth of the row, at most a few hundred values in (0, 1]: its f32
/// rounding is under 1e-6 relative). Both loops run over independent lanes, then the tail, so
/// they vectorise; compiled for AVX-512, AVX2+FMA and NEON beside the baseline. (A maximum is exact
/// in any order.) A closure over f64 values here once made the loop scalar: 80 % of the fused
/// loss's time.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn log_sum_exp<T: Elem>(row: &[T]) -> RowLse {
    const LANES: usize = 16;
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    let mut m = [row[0]; LANES];
    for c in chunks.clone() {
        for j in 0..LANES {
            m[j] = if c[j] > m[j] { c[j] } else { m[j] };
        }
    }
    let pick = |a: T, &b: &T| if b > a { b } else { a };
    let max = tail.iter().fold(m.iter().fold(row[0], pick), pick);
    let mut acc = [T::zero(); LANES];
    for c in chunks {
        for j in 0..LANES {
            acc[j] += (c[j] - max).exp();
        }
    }
    let sum = acc.iter().map(|v| v.to_f64()).sum::<f64>()
        + tail.iter().map(|&v| (v - max).exp().to_f64()).sum::<f64>();
    RowLse {
        max: max.to_f64(),
        lse: sum.ln(),
    }
}

/// One row's maximum (a value of the dtype, held as f64) and log of its shifted
/// exponentials' sum: what the forward computes and the backward reuses.
#[derive(Clone, Copy)]
struct RowLse {
    max: f64,
    lse: f64,
}

/// The mean loss and every row's `RowLse`.
fn fwd<T: Elem>(x: &[T], t: &[usize], classes: usize) -> (T, Vec<RowLse>) {
    let rows: Vec<RowLse> = x
        .par_chunks(classes * ROWS_PER_BLOCK)
        .flat_map_iter(|xb| xb.chunks_exact(classes).map(log_sum_exp))
        .collect();
    let total: f64 = rows
        .iter()
        .zip(x.chunks_exact(classes).zip(t))
        .map(|(r, (row, &ti))| r.max + r.lse - row[ti].to_f64())
        .sum();
    (T::from_f64(total / t.len().max(1) as f64), rows)
}

/// `(softmax - one_hot) * g / n`, from the forward's rows when it kept them (else each row's
/// log-sum-exp is recomputed: the same numbers).
fn bwd<T: Elem>(x: &[T], t: &[usize], classes: usize, g: f64, kept: Option<&[RowLse]>) -> Vec<T> {
    let mut dx = vec![T::zero(); x.len()];
    let scale = g / t.len().max(1) as f64;
    let kept = kept.filter(|k| k.len() == t.len());
    dx.par_chunks_mut(classes * ROWS_PER_BLOCK)
        .zip(
            x.par_chunks(classes * ROWS_PER_BLOCK)
                .zip(t.par_chunks(ROWS_PER_BLOCK)),
        )
        .enumerate()
        .for_each(|(bi, (db, (xb, tb)))| {
            for (ri, ((dr, row), &ti)) in db
                .chunks_exact_mut(classes)
                .zip(xb.chunks_exact(classes))
                .zip(tb)
                .enumerate()
            {
                let r = kept.map_or_else(|| log_sum_exp(row), |k| k[bi * ROWS_PER_BLOCK + ri]);
                // softmax = exp(x - max) / exp(lse), times g / n, in the dtype.
                let f = T::from_f64((-r.lse).exp() * scale);
                super::math::exp_shifted_scaled(dr, row, T::from_f64(r.max), f);
                dr[ti] = T::from_f64(dr[ti].to_f64() - scale);
            }
        });
    dx
}

fn dims(l: &Layout, tl: &Layout) -> Result<(usize, usize)> {
    let (n, classes) = l.shape().dims2()?;
    if tl.shape().elem_count() != n || classes == 0 {
        candle_core::bail!(
            "cross_entropy: {n} rows of {classes} logits against {} targets",
            tl.shape().elem_count()
        );
    }
    Ok((n, classes))
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy-fused"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, classes) = dims(xl, tl)?;
        let t = targets(ts, tl, classes)?;
        let out = match xs {
            CpuStorage::F32(v) => {
                let (loss, rows) = fwd(slice(v, xl, "logits")?, &t, classes);
                self.rows.put(rows);
                CpuStorage::F32(vec![loss])
            }
            CpuStorage::F64(v) => {
                let (loss, rows) = fwd(slice(v, xl, "logits")?, &t, classes);
                self.rows.put(rows);
                CpuStorage::F64(vec![loss])
            }
            s => return Err(unsupported("cross_entropy", s.dtype())),
        };
        Ok((out, Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        tgt: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let (_, classes) = dims(logits.layout(), tgt.layout())?;
        let kept = self.rows.get();
        let kept = kept.as_deref();
        let out = with_cpu(tgt, "cross_entropy targets", |ts, tl| {
            let t = targets(ts, tl, classes)?;
            with_cpu(logits, "logits", |xs, xl| {
                Ok(match xs {
                    CpuStorage::F32(v) => {
                        CpuStorage::F32(bwd(slice(v, xl, "logits")?, &t, classes, g, kept))
                    }
                    CpuStorage::F64(v) => {
                        CpuStorage::F64(bwd(slice(v, xl, "logits")?, &t, classes, g, kept))
                    }
                    s => return Err(unsupported("cross_entropy backward", s.dtype())),
                })
            })
        })?;
        Ok((Some(storage_tensor(out, logits.shape())?), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kernels::tests_util::{assert_close, rand};
    use crate::engine::kernels::with_composed;
    use candle_core::{Device, Var};

    fn run(x: &Tensor, t: &Tensor, composed: bool) -> (Tensor, Tensor) {
        let v = Var::from_tensor(x).unwrap();
        let f = || cross_entropy(v.as_tensor(), t);
        let loss = if composed { with_composed(f) } else { f() }.unwrap();
        let g = (&loss * 3.0).unwrap().backward().unwrap();
        (loss, g.get(v.as_tensor()).unwrap().clone())
    }

    fn labels(n: usize, classes: usize, seed: u64) -> Tensor {
        let r = rand(&[n], seed).to_vec1::<f32>().unwrap();
        let t: Vec<u32> = r
            .iter()
            .map(|v| (((v + 1.0) / 2.0 * classes as f32) as u32).min(classes as u32 - 1))
            .collect();
        Tensor::from_vec(t, n, &Device::Cpu).unwrap()
    }

    #[test]
    fn fused_matches_candle_at_task_shapes() {
        // (rows, classes): MNIST batch, text-charlm's and the GPT mini's token rows, odd ones.
        for (i, &(n, c)) in [(128, 10), (2048, 65), (768, 256), (1, 1), (7, 3), (65, 13)]
            .iter()
            .enumerate()
        {
            let x = (rand(&[n, c], 90 + i as u64) * 5.0).unwrap();
            let t = labels(n, c, 100 + i as u64);
            let (lf, gf) = run(&x, &t, false);
            let (lc, gc) = run(&x, &t, true);
            assert_close(&lf, &lc, 4 * c, "loss");
            assert_close(&gf, &gc, 4 * c, "dlogits");
            // i64 targets give the same.
            let (l64, _) = run(&x, &t.to_dtype(DType::I64).unwrap(), false);
            assert_close(&l64, &lf, 1, "i64 targets");
        }
    }

    /// The backward from the forward's kept rows and from recomputed rows is the same, bit
    /// for bit (a rayon block boundary falls inside the 100 rows).
    #[test]
    fn kept_rows_give_the_recomputed_gradient() {
        let (n, c) = (100, 65);
        let x = (rand(&[n, c], 130) * 5.0).unwrap();
        let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let t: Vec<usize> = (0..n).map(|i| i * 7 % c).collect();
        let (_, rows) = fwd(&v, &t, c);
        assert_eq!(bwd(&v, &t, c, 3.0, Some(&rows)), bwd(&v, &t, c, 3.0, None));
    }

    #[test]
    fn gradient_matches_finite_differences_in_f64() {
        let (n, c) = (4, 5);
        let x = rand(&[n, c], 110).to_dtype(DType::F64).unwrap();
        let t = labels(n, c, 111);
        let (_, g) = run(&x, &t, false);
        let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let base = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let loss = |v: Vec<f64>| {
            let x = Tensor::from_vec(v, (n, c), &Device::Cpu).unwrap();
            3.0 * cross_entropy(&x, &t).unwrap().to_scalar::<f64>().unwrap()
        };
        let h = 1e-6;
        for i in 0..base.len() {
            let (mut p, mut m) = (base.clone(), base.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (loss(p) - loss(m)) / (2.0 * h);
            assert!(
                (g[i] - fd).abs() < 1e-7,
                "{i}: analytic {} vs numeric {fd}",
                g[i]
            );
        }
    }

    #[test]
    fn a_target_out_of_range_is_an_error() {
        let x = rand(&[2, 3], 120);
        let t = Tensor::new(&[0u32, 3], &Device::Cpu).unwrap();
        let e = cross_entropy(&x, &t).unwrap_err().to_string();
        assert!(e.contains("target 3 is not a class index"), "{e}");
    }
}
