//! Dense layer `y = x W^T + b` as one custom op.
//!
//! candle's `Linear` is a matmul and a broadcast add: the forward writes the output twice, and
//! the matmul's backward always computes the input gradient `dY W`, even for the network's
//! input, which needs none (on the 784-256-10 MLP that is a third of the backward FLOPs).
//! Here the bias is the GEMM's initial value, and `bwd` computes `dX` only when `x` is tracked
//! (`Tensor::track_op`), `dW = dY^T X` straight into `W`'s layout, and `db` as a column sum.
//! A layer without a bias is the same GEMMs over every row of a (batch, t, in) input at once,
//! where candle's `Linear` runs one GEMM per sequence and sums a per-sequence weight gradient.

use super::act::storage_tensor;
use super::{
    cpu_kernel_dtype, gemm_into, gemm_new, gemm_threads, slice, unsupported, with_cpu, Elem, Mat,
};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Module, Result, Shape, Tensor};
use rayon::prelude::*;

/// Drop-in for `candle_nn::Linear` (same constructor and `Module`), faster on the CPU.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    plain: candle_nn::Linear,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        let plain = candle_nn::Linear::new(weight.clone(), bias.clone());
        Self {
            weight,
            bias,
            plain,
        }
    }
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.bias {
            Some(b)
                if cpu_kernel_dtype(x)
                    && x.dtype() == self.weight.dtype()
                    && b.dtype() == x.dtype() =>
            {
                x.contiguous()?.apply_op3_arc(
                    &self.weight,
                    b,
                    std::sync::Arc::new(Box::new(LinearOp)),
                )
            }
            None if cpu_kernel_dtype(x) && x.dtype() == self.weight.dtype() => x
                .contiguous()?
                .apply_op2_arc(&self.weight, std::sync::Arc::new(Box::new(LinearNoBiasOp))),
            // Other devices, mixed dtypes: candle's ops (they report dtype errors).
            _ => self.plain.forward(x),
        }
    }
}

struct LinearOp;

/// The layer without a bias (nanoGPT's `bias = False`). candle's `Linear` runs such a layer on a
/// (batch, t, in) input as a batched matmul against the weight broadcast over the batch: one
/// small GEMM per sequence, and a backward that writes a (batch, out, in) weight gradient and
/// then sums it. Here it is one GEMM over all rows, both ways.
struct LinearNoBiasOp;

fn dims(xl: &Layout, wl: &Layout) -> Result<(usize, usize, usize)> {
    let (out, inp) = wl.shape().dims2()?;
    let xd = xl.dims();
    if xd.last() != Some(&inp) {
        candle_core::bail!("linear: input {xd:?} does not end in {inp} features");
    }
    Ok((xl.shape().elem_count() / inp.max(1), inp, out))
}

fn forward<T: Elem>(
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    (rows, inp, out): (usize, usize, usize),
) -> Result<Vec<T>> {
    let lhs = Mat {
        data: x,
        rs: inp,
        cs: 1,
    };
    // W^T: element (k, n) is W[n, k].
    let rhs = Mat {
        data: w,
        rs: 1,
        cs: inp,
    };
    let Some(b) = b else {
        return gemm_new((rows, out, inp), lhs, rhs, gemm_threads());
    };
    let mut y = Vec::with_capacity(rows * out);
    for _ in 0..rows {
        y.extend_from_slice(&b[..out]);
    }
    gemm_into(
        &mut y,
        out,
        (rows, out, inp),
        lhs,
        rhs,
        true,
        gemm_threads(),
    )?;
    Ok(y)
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu_forward((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = grads(x, w, grad, true)?;
        Ok((dx, Some(dw), db))
    }
}

impl CustomOp2 for LinearNoBiasOp {
    fn name(&self) -> &'static str {
        "linear-no-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu_forward((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = grads(x, w, grad, false)?;
        Ok((dx, Some(dw)))
    }
}

type Operand<'a> = (&'a CpuStorage, &'a Layout);

/// The forward of either op: `x W^T`, plus the bias when there is one.
fn cpu_forward(
    (xs, xl): Operand<'_>,
    (ws, wl): Operand<'_>,
    bias: Option<Operand<'_>>,
) -> Result<(CpuStorage, Shape)> {
    fn go<T: Elem>(
        (xs, xl): Operand<'_>,
        (ws, wl): Operand<'_>,
        bias: Option<Operand<'_>>,
        d: (usize, usize, usize),
    ) -> Result<Vec<T>> {
        let b = match bias {
            Some((bs, bl)) => Some(slice(T::cpu_storage_as_slice(bs)?, bl, "linear b")?),
            None => None,
        };
        forward(
            slice(T::cpu_storage_as_slice(xs)?, xl, "linear x")?,
            slice(T::cpu_storage_as_slice(ws)?, wl, "linear w")?,
            b,
            d,
        )
    }
    let d = dims(xl, wl)?;
    let mut shape = xl.dims().to_vec();
    *shape.last_mut().unwrap_or(&mut 0) = d.2;
    let y = match xs.dtype() {
        candle_core::DType::F32 => CpuStorage::F32(go::<f32>((xs, xl), (ws, wl), bias, d)?),
        candle_core::DType::F64 => CpuStorage::F64(go::<f64>((xs, xl), (ws, wl), bias, d)?),
        dt => return Err(unsupported("linear", dt)),
    };
    Ok((y, Shape::from(shape)))
}

/// The gradients of `y = x W^T (+ b)`: `dX` only when `x` is tracked, `dW`, and `db` when
/// the layer has a bias.
fn grads(
    x: &Tensor,
    w: &Tensor,
    grad: &Tensor,
    with_bias: bool,
) -> Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
    let grad = grad.contiguous()?;
    let d = dims(x.layout(), w.layout())?;
    let need_dx = x.track_op();
    type Out = (Option<CpuStorage>, CpuStorage, Option<CpuStorage>);
    fn go<T: Elem>(
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        d: (usize, usize, usize),
        need_dx: bool,
        with_bias: bool,
    ) -> Result<Out> {
        with_cpu(dy, "linear grad", |gs, gl| {
            with_cpu(x, "linear x", |xs, xl| {
                with_cpu(w, "linear w", |ws, wl| {
                    let g = slice(T::cpu_storage_as_slice(gs)?, gl, "linear grad")?;
                    let xv = slice(T::cpu_storage_as_slice(xs)?, xl, "linear x")?;
                    let wv = slice(T::cpu_storage_as_slice(ws)?, wl, "linear w")?;
                    let (dx, dw, db) = backward::<T>(g, xv, wv, d, need_dx, with_bias)?;
                    Ok((
                        dx.map(T::to_cpu_storage_owned),
                        T::to_cpu_storage_owned(dw),
                        db.map(T::to_cpu_storage_owned),
                    ))
                })
            })
        })
    }
    let (dx, dw, db) = match x.dtype() {
        candle_core::DType::F32 => go::<f32>(x, w, &grad, d, need_dx, with_bias)?,
        candle_core::DType::F64 => go::<f64>(x, w, &grad, d, need_dx, with_bias)?,
        dt => return Err(unsupported("linear backward", dt)),
    };
    let dx = dx.map(|s| storage_tensor(s, x.shape())).transpose()?;
    let db = db
        .map(|s| storage_tensor(s, &Shape::from(d.2)))
        .transpose()?;
    Ok((dx, storage_tensor(dw, w.shape())?, db))
}

type Grads<T> = (Option<Vec<T>>, Vec<T>, Option<Vec<T>>);

/// Rows of the batch per partial weight gradient (at most `MAX_DW_PARTS` parts).
const DW_ROWS_PER_PART: usize = 256;
const MAX_DW_PARTS: usize = 8;

/// `dW (out x inp) = dY^T (out x rows) * X (rows x inp)`. The GEMM's parallelism splits the
/// output, and a transformer's weight gradient is a few output blocks over a long sum (text-
/// charlm: 64 x 192 over 2,048 rows), so a second core mostly waited. The sum is split instead
/// into parts of `DW_ROWS_PER_PART` rows (at most `MAX_DW_PARTS`), computed in parallel and
/// added in part order: the parts depend on the shape only, so the result is the same whatever
/// the thread count.
fn weight_grad<T: Elem>(
    g: &[T],
    x: &[T],
    (rows, inp, out): (usize, usize, usize),
) -> Result<Vec<T>> {
    let parts = (rows / DW_ROWS_PER_PART).clamp(1, MAX_DW_PARTS);
    let part_rows = rows.div_ceil(parts);
    let partial = |r0: usize, par: gemm::Parallelism| -> Result<Vec<T>> {
        let n = part_rows.min(rows - r0);
        gemm_new(
            (out, inp, n),
            Mat {
                data: &g[r0 * out..],
                rs: 1,
                cs: out,
            },
            Mat {
                data: &x[r0 * inp..],
                rs: inp,
                cs: 1,
            },
            par,
        )
    };
    if parts == 1 {
        return partial(0, gemm_threads());
    }
    let sums: Vec<Vec<T>> = (0..parts)
        .into_par_iter()
        .map(|p| partial(p * part_rows, super::SERIAL))
        .collect::<Result<_>>()?;
    let mut it = sums.into_iter();
    let mut dw = it.next().unwrap_or_else(|| vec![T::zero(); out * inp]);
    for part in it {
        for (d, v) in dw.iter_mut().zip(part) {
            *d += v;
        }
    }
    Ok(dw)
}

fn backward<T: Elem>(
    g: &[T],
    x: &[T],
    w: &[T],
    (rows, inp, out): (usize, usize, usize),
    need_dx: bool,
    with_bias: bool,
) -> Result<Grads<T>> {
    let dw = weight_grad(g, x, (rows, inp, out))?;
    let db = with_bias.then(|| {
        let mut db = vec![T::zero(); out];
        for r in g.chunks_exact(out) {
            for (d, v) in db.iter_mut().zip(r) {
                *d += *v;
            }
        }
        db
    });
    let dx = if need_dx {
        // dX (rows x inp) = dY (rows x out) * W (out x inp).
        Some(gemm_new(
            (rows, inp, out),
            Mat {
                data: g,
                rs: out,
                cs: 1,
            },
            Mat {
                data: w,
                rs: inp,
                cs: 1,
            },
            gemm_threads(),
        )?)
    } else {
        None
    };
    Ok((dx, dw, db))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kernels::tests_util::{assert_close, rand};
    use candle_core::{DType, Var};

    /// Values and gradients equal candle's Linear (matmul + broadcast add, candle's autograd)
    /// within the f32 GEMM reassociation bound: sums of k products of O(1) terms differ by at
    /// most about k * 2^-24 relative; tolerance 1e-5 * sqrt(k)-scaled absolute, see assert_close.
    /// The weight gradient split into parts is the same bits on 1 thread and on 3.
    #[test]
    fn weight_grad_is_the_same_whatever_the_thread_count() {
        let (rows, inp, out) = (2048, 64, 192);
        let g = rand(&[rows, out], 5)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let x = rand(&[rows, inp], 6)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let on = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| weight_grad(&g, &x, (rows, inp, out)).unwrap())
        };
        assert_eq!(on(1), on(3));
    }

    #[test]
    fn matches_candle_linear_values_and_grads() {
        for &(lead, inp, out, track_x) in &[
            (&[7usize][..], 13usize, 5usize, false),
            (&[128][..], 784, 256, false),
            (&[3, 9][..], 16, 48, true),
            (&[1][..], 1, 1, true),
            // The GPT's shapes: (batch, t, d) inputs.
            (&[12, 64][..], 128, 384, true),
            (&[2, 7][..], 13, 6, true),
            // A weight gradient summed in 3 parts of 334, 334 and 332 rows.
            (&[1000][..], 9, 5, true),
        ] {
            let mut xs = lead.to_vec();
            xs.push(inp);
            let x0 = rand(&xs, 1);
            let w = Var::from_tensor(&rand(&[out, inp], 2)).unwrap();
            let b = Var::from_tensor(&rand(&[out], 3)).unwrap();
            let x = if track_x {
                Var::from_tensor(&x0).unwrap().as_tensor().clone()
            } else {
                x0.clone()
            };
            for with_bias in [true, false] {
                let bias = with_bias.then(|| b.as_tensor().clone());
                let ours = Linear::new(w.as_tensor().clone(), bias.clone());
                let theirs = candle_nn::Linear::new(w.as_tensor().clone(), bias);
                let ya = ours.forward(&x).unwrap();
                let yb = theirs.forward(&x).unwrap();
                assert_close(&ya, &yb, inp, "linear forward");
                // A loss with a non-uniform gradient.
                let c = rand(ya.dims(), 4);
                let ga = (&ya * &c).unwrap().sum_all().unwrap().backward().unwrap();
                let gb = (&yb * &c).unwrap().sum_all().unwrap().backward().unwrap();
                let n = lead.iter().product::<usize>();
                assert_close(
                    ga.get(w.as_tensor()).unwrap(),
                    gb.get(w.as_tensor()).unwrap(),
                    n,
                    "dW",
                );
                match with_bias {
                    true => assert_close(
                        ga.get(b.as_tensor()).unwrap(),
                        gb.get(b.as_tensor()).unwrap(),
                        n,
                        "db",
                    ),
                    false => assert!(ga.get(b.as_tensor()).is_none(), "db without a bias"),
                }
                if track_x {
                    assert_close(ga.get(&x).unwrap(), gb.get(&x).unwrap(), out, "dX");
                } else {
                    assert!(ga.get(&x).is_none(), "dX of an untracked input");
                }
            }
        }
    }

    #[test]
    fn f64_runs_and_bf16_is_an_error_on_the_kernel() {
        let w = rand(&[3, 4], 1).to_dtype(DType::F64).unwrap();
        let b = rand(&[3], 2).to_dtype(DType::F64).unwrap();
        let x = rand(&[2, 4], 3).to_dtype(DType::F64).unwrap();
        let y = Linear::new(w.clone(), Some(b.clone())).forward(&x).unwrap();
        let z = candle_nn::Linear::new(w, Some(b)).forward(&x).unwrap();
        assert_close(&y, &z, 4, "f64");
        // bf16 is routed to candle's ops by `forward` (which refuse it on the CPU); the kernel
        // itself names the dtype.
        let err = unsupported("linear", DType::BF16).to_string();
        assert!(err.contains("BF16") && err.contains("linear"), "{err}");
    }
}
