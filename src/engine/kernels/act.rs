//! ReLU and ReLU followed by a 2x2 max-pool, each one pass forward and one pass backward.
//!
//! candle's ReLU backward is five full-size passes (`zeros_like`, `ge`, `to_dtype`, `mul`, and
//! the gradient add), and its max-pool backward about eight (`upsample`, `eq`, `to_dtype`,
//! `avg_pool`, `mul`, `upsample`, `mul`, add); on the CNN's 128 x 16 x 28 x 28 activations each
//! pass is 6.4 MB. Here the backward reads the forward's input once and writes the gradient
//! once.
//!
//! Gradient convention (PyTorch's): ReLU passes the gradient where its input is > 0 (candle
//! uses >= 0; they differ only at exactly 0), and max-pool routes a window's gradient to its
//! first maximal element (candle splits it among ties). For inputs without ties or exact zeros,
//! which is every real activation, the gradients are identical; the tests check it.

use super::{cpu_kernel_dtype, slice, unsupported, with_cpu, Elem};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `max(x, 0)`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if cpu_kernel_dtype(x) {
        x.contiguous()?.apply_op1(Relu)
    } else {
        x.relu()
    }
}

/// `max(a + b, 0)` for two tensors of one shape (a residual block's end): one pass forward,
/// and backward the one masked gradient is both inputs' gradient. The same values as
/// `relu(&(a + b))`, bit for bit.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if cpu_kernel_dtype(a) && a.dtype() == b.dtype() && a.shape() == b.shape() {
        a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
    } else {
        (a + b)?.relu()
    }
}

struct AddRelu;

fn add_relu_fwd<T: Elem>(a: &[T], b: &[T]) -> Vec<T> {
    let z = T::zero();
    a.iter()
        .zip(b)
        .map(|(&a, &b)| {
            let s = a + b;
            if s > z {
                s
            } else {
                z
            }
        })
        .collect()
}

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "add-relu-fused"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => CpuStorage::F32(add_relu_fwd(
                slice(a, l1, "add_relu a")?,
                slice(b, l2, "add_relu b")?,
            )),
            (CpuStorage::F64(a), CpuStorage::F64(b)) => CpuStorage::F64(add_relu_fwd(
                slice(a, l1, "add_relu a")?,
                slice(b, l2, "add_relu b")?,
            )),
            (s, _) => return Err(unsupported("add_relu", s.dtype())),
        };
        Ok((out, l1.shape().clone()))
    }
    fn bwd(
        &self,
        a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // The output is > 0 exactly where the sum is: the ReLU backward on the output.
        let grad = grad.contiguous()?;
        let out = with_cpu(&grad, "add_relu grad", |gs, gl| {
            with_cpu(res, "add_relu y", |ys, yl| {
                Ok(match (gs, ys) {
                    (CpuStorage::F32(g), CpuStorage::F32(y)) => CpuStorage::F32(relu_bwd(
                        slice(g, gl, "add_relu grad")?,
                        slice(y, yl, "add_relu y")?,
                    )),
                    (CpuStorage::F64(g), CpuStorage::F64(y)) => CpuStorage::F64(relu_bwd(
                        slice(g, gl, "add_relu grad")?,
                        slice(y, yl, "add_relu y")?,
                    )),
                    (g, _) => return Err(unsupported("add_relu backward", g.dtype())),
                })
            })
        })?;
        let g = storage_tensor(out, a.shape())?;
        Ok((Some(g.clone()), Some(g)))
    }
}

/// `max_pool2d(relu(x), 2)` on an (n, c, h, w) tensor (odd sizes floor, as candle's does).
pub fn relu_max_pool2d(x: &Tensor) -> Result<Tensor> {
    if cpu_kernel_dtype(x) {
        x.contiguous()?.apply_op1(ReluPool)
    } else {
        x.relu()?.max_pool2d(2)
    }
}

struct Relu;

fn relu_fwd<T: Elem>(x: &[T]) -> Vec<T> {
    let z = T::zero();
    x.iter().map(|&v| if v > z { v } else { z }).collect()
}

fn relu_bwd<T: Elem>(g: &[T], x: &[T]) -> Vec<T> {
    let z = T::zero();
    g.iter()
        .zip(x)
        .map(|(&g, &x)| if x > z { g } else { z })
        .collect()
}

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "relu-fused"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(relu_fwd(slice(v, l, "relu")?)),
            CpuStorage::F64(v) => CpuStorage::F64(relu_fwd(slice(v, l, "relu")?)),
            s => return Err(unsupported("relu", s.dtype())),
        };
        Ok((out, l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let out = with_cpu(&grad, "relu grad", |gs, gl| {
            with_cpu(arg, "relu x", |xs, xl| {
                Ok(match (gs, xs) {
                    (CpuStorage::F32(g), CpuStorage::F32(x)) => CpuStorage::F32(relu_bwd(
                        slice(g, gl, "relu grad")?,
                        slice(x, xl, "relu x")?,
                    )),
                    (CpuStorage::F64(g), CpuStorage::F64(x)) => CpuStorage::F64(relu_bwd(
                        slice(g, gl, "relu grad")?,
                        slice(x, xl, "relu x")?,
                    )),
                    (g, _) => return Err(unsupported("relu backward", g.dtype())),
                })
            })
        })?;
        Ok(Some(storage_tensor(out, arg.shape())?))
    }
}

/// A CPU tensor from an owned storage.
pub(crate) fn storage_tensor(s: CpuStorage, shape: &Shape) -> Result<Tensor> {
    let dev = Device::Cpu;
    match s {
        CpuStorage::F32(v) => Tensor::from_vec(v, shape, &dev),
        CpuStorage::F64(v) => Tensor::from_vec(v, shape, &dev),
        s => Err(unsupported("kernel output", s.dtype())),
    }
}

struct ReluPool;

fn pool_dims(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    let (n, c, h, w) = l.shape().dims4()?;
    if h < 2 || w < 2 {
        candle_core::bail!(
            "relu_max_pool2d: input {:?} is smaller than the 2x2 window",
            l.dims()
        );
    }
    Ok((n * c, h, w, 0))
}

/// Planes per rayon split of the pooling loops: a plane of the CNN's first layer is 784 values,
/// so a split does a few thousand windows at least.
const POOL_MIN_PLANES: usize = 16;

fn pool_fwd<T: Elem>(x: &[T], (planes, h, w, _): (usize, usize, usize, usize)) -> Vec<T> {
    let (oh, ow) = (h / 2, w / 2);
    let z = T::zero();
    let mut out = vec![z; planes * oh * ow];
    out.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .with_min_len(POOL_MIN_PLANES)
        .for_each(|(o, p)| {
            for (i, orow) in o.chunks_exact_mut(ow).enumerate() {
                let r0 = &p[2 * i * w..][..2 * ow];
                let r1 = &p[(2 * i + 1) * w..][..2 * ow];
                for ((m, a), b) in orow
                    .iter_mut()
                    .zip(r0.chunks_exact(2))
                    .zip(r1.chunks_exact(2))
                {
                    let mut v = z;
                    for c in [a[0], a[1], b[0], b[1]] {
                        if c > v {
                            v = c;
                        }
                    }
                    *m = v;
                }
            }
        });
    out
}

fn pool_bwd<T: Elem>(g: &[T], x: &[T], (planes, h, w, _): (usize, usize, usize, usize)) -> Vec<T> {
    let (oh, ow) = (h / 2, w / 2);
    let z = T::zero();
    let mut dx = vec![z; planes * h * w];
    dx.par_chunks_mut(h * w)
        .zip(x.par_chunks(h * w).zip(g.par_chunks(oh * ow)))
        .with_min_len(POOL_MIN_PLANES)
        .for_each(|(d, (p, gp))| {
            for (i, grow) in gp.chunks_exact(ow).enumerate() {
                let (d0, d1) = d[2 * i * w..(2 * i + 2) * w].split_at_mut(w);
                let (x0, x1) = (&p[2 * i * w..][..w], &p[(2 * i + 1) * w..][..w]);
                let windows = d0
                    .chunks_exact_mut(2)
                    .zip(d1.chunks_exact_mut(2))
                    .zip(x0.chunks_exact(2).zip(x1.chunks_exact(2)));
                for (((d0, d1), (a, b)), &gv) in windows.zip(grow) {
                    // First maximal element of the window, in row-major order (PyTorch's
                    // choice): a[0], a[1], b[0], b[1].
                    let vals = [a[0], a[1], b[0], b[1]];
                    let mut best = 0;
                    for k in 1..4 {
                        if vals[k] > vals[best] {
                            best = k;
                        }
                    }
                    if vals[best] > z {
                        match best {
                            0 => d0[0] = gv,
                            1 => d0[1] = gv,
                            2 => d1[0] = gv,
                            _ => d1[1] = gv,
                        }
                    }
                }
            }
        });
    dx
}

impl CustomOp1 for ReluPool {
    fn name(&self) -> &'static str {
        "relu-max-pool2d"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = pool_dims(l)?;
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(pool_fwd(slice(v, l, "relu_max_pool2d")?, d)),
            CpuStorage::F64(v) => CpuStorage::F64(pool_fwd(slice(v, l, "relu_max_pool2d")?, d)),
            s => return Err(unsupported("relu_max_pool2d", s.dtype())),
        };
        let (n, c, h, w) = l.shape().dims4()?;
        Ok((out, Shape::from((n, c, h / 2, w / 2))))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let d = pool_dims(arg.layout())?;
        let out = with_cpu(&grad, "pool grad", |gs, gl| {
            with_cpu(arg, "pool x", |xs, xl| {
                fn go<T: Elem>(
                    gs: &CpuStorage,
                    gl: &Layout,
                    xs: &CpuStorage,
                    xl: &Layout,
                    d: (usize, usize, usize, usize),
                ) -> Result<Vec<T>> {
                    let g = slice(T::cpu_storage_as_slice(gs)?, gl, "pool grad")?;
                    let x = slice(T::cpu_storage_as_slice(xs)?, xl, "pool x")?;
                    Ok(pool_bwd(g, x, d))
                }
                Ok(match xs {
                    CpuStorage::F32(_) => CpuStorage::F32(go::<f32>(gs, gl, xs, xl, d)?),
                    CpuStorage::F64(_) => CpuStorage::F64(go::<f64>(gs, gl, xs, xl, d)?),
                    s => return Err(unsupported("relu_max_pool2d backward", s.dtype())),
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
    use candle_core::Var;

    #[test]
    fn relu_matches_candle() {
        let x = Var::from_tensor(&rand(&[4, 37], 1)).unwrap();
        let c = rand(&[4, 37], 2);
        let ya = relu(x.as_tensor()).unwrap();
        let yb = x.as_tensor().relu().unwrap();
        assert_close(&ya, &yb, 1, "relu");
        let ga = (&ya * &c).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (&yb * &c).unwrap().sum_all().unwrap().backward().unwrap();
        assert_close(
            ga.get(x.as_tensor()).unwrap(),
            gb.get(x.as_tensor()).unwrap(),
            1,
            "relu grad",
        );
    }

    /// `add_relu(a, b)` is `relu(a + b)` bit for bit, and both gradients are the ReLU's
    /// gradient of the sum, including when `a` and `b` are the same tensor (the gradient
    /// doubles) and in f64.
    #[test]
    fn add_relu_is_relu_of_the_sum() {
        for dtype in [candle_core::DType::F32, candle_core::DType::F64] {
            let a = Var::from_tensor(&rand(&[3, 4, 5, 7], 1).to_dtype(dtype).unwrap()).unwrap();
            let b = Var::from_tensor(&rand(&[3, 4, 5, 7], 2).to_dtype(dtype).unwrap()).unwrap();
            let c = rand(&[3, 4, 5, 7], 3).to_dtype(dtype).unwrap();
            let (at, bt) = (a.as_tensor(), b.as_tensor());
            let ya = add_relu(at, bt).unwrap();
            let yb = relu(&(at + bt).unwrap()).unwrap();
            let diff = (&ya - &yb).unwrap().abs().unwrap().sum_all().unwrap();
            assert_eq!(
                diff.to_dtype(candle_core::DType::F64)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap(),
                0.0
            );
            let ga = (&ya * &c).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (&yb * &c).unwrap().sum_all().unwrap().backward().unwrap();
            for t in [at, bt] {
                assert_close(ga.get(t).unwrap(), gb.get(t).unwrap(), 1, "add_relu grad");
            }
            let twice = add_relu(at, at).unwrap();
            let g = (&twice * &c)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let want = (relu(&(at * 2.0).unwrap())
                .unwrap()
                .gt(0.0)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
                * (&c * 2.0).unwrap())
            .unwrap();
            assert_close(g.get(at).unwrap(), &want, 1, "add_relu(a, a) grad");
        }
    }

    /// Exact match with candle's relu -> max_pool2d(2) and its autograd (no ties in random
    /// data, so the gradient conventions agree; module note). Even sizes only: for odd sizes
    /// candle's backward upsamples by a non-integer factor and misroutes gradients (see
    /// `odd_sizes_floor_and_drop_the_remainder`).
    #[test]
    fn relu_pool_matches_candle() {
        for shape in [
            [2usize, 3, 8, 8],
            [1, 2, 6, 4],
            [3, 1, 28, 28],
            [2, 16, 14, 14],
        ] {
            let x = Var::from_tensor(&rand(&shape, 3)).unwrap();
            let ya = relu_max_pool2d(x.as_tensor()).unwrap();
            let yb = x.as_tensor().relu().unwrap().max_pool2d(2).unwrap();
            assert_close(&ya, &yb, 1, "pool");
            let c = rand(ya.dims(), 4);
            let ga = (&ya * &c).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (&yb * &c).unwrap().sum_all().unwrap().backward().unwrap();
            // candle 0.11.1 scales a unique maximum's gradient by 1/4 (see
            // `candle_max_pool_backward_is_scaled_by_a_quarter`); the true gradient is 4x it.
            let gb4 = (gb.get(x.as_tensor()).unwrap() * 4.0).unwrap();
            assert_close(ga.get(x.as_tensor()).unwrap(), &gb4, 1, "pool grad");
        }
    }

    /// Documents a candle 0.11.1 bug this kernel fixes: `max_pool2d`'s backward multiplies
    /// the gradient by (ties / window) instead of dividing by ties, so a unique maximum of a
    /// 2x2 window gets 1/4 of its gradient (PyTorch: 1). If this starts failing, candle fixed
    /// it: drop the factor 4 in `relu_pool_matches_candle`.
    #[test]
    fn candle_max_pool_backward_is_scaled_by_a_quarter() {
        let x = Var::from_tensor(
            &Tensor::from_vec(vec![1f32, 2., 3., 4.], (1, 1, 2, 2), &Device::Cpu).unwrap(),
        )
        .unwrap();
        let g = x
            .as_tensor()
            .max_pool2d(2)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let d = g.get(x.as_tensor()).unwrap().flatten_all().unwrap();
        assert_eq!(d.to_vec1::<f32>().unwrap(), [0., 0., 0., 0.25]);
        let ours = relu_max_pool2d(x.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let d = ours.get(x.as_tensor()).unwrap().flatten_all().unwrap();
        assert_eq!(d.to_vec1::<f32>().unwrap(), [0., 0., 0., 1.]);
    }

    /// Odd sizes: values equal candle's forward; the gradient of each window goes to its
    /// maximum only when positive, and the last row/column (in no window) gets none.
    #[test]
    fn odd_sizes_floor_and_drop_the_remainder() {
        let x = Var::from_tensor(&rand(&[1, 2, 7, 5], 5)).unwrap();
        let y = relu_max_pool2d(x.as_tensor()).unwrap();
        let yb = x.as_tensor().relu().unwrap().max_pool2d(2).unwrap();
        assert_close(&y, &yb, 1, "odd forward");
        let g = y.sum_all().unwrap().backward().unwrap();
        let d = g
            .get(x.as_tensor())
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec3::<f32>()
            .unwrap();
        let d = d.into_iter().flatten().collect::<Vec<_>>(); // (c*h) rows of w
        let ys = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let positive = ys.iter().filter(|v| **v > 0.0).count();
        let ones: usize = d
            .iter()
            .map(|r| r.iter().filter(|v| **v == 1.0).count())
            .sum();
        assert_eq!(ones, positive);
        for (i, r) in d.iter().enumerate() {
            assert_eq!(r[4], 0.0);
            if i % 7 == 6 {
                assert!(r.iter().all(|v| *v == 0.0));
            }
        }
    }

    #[test]
    fn ties_go_to_the_first_maximum() {
        let x = Var::from_tensor(
            &Tensor::from_vec(vec![1f32, 1., 0., -1.], (1, 1, 2, 2), &Device::Cpu).unwrap(),
        )
        .unwrap();
        let y = relu_max_pool2d(x.as_tensor()).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let d = g.get(x.as_tensor()).unwrap().flatten_all().unwrap();
        assert_eq!(d.to_vec1::<f32>().unwrap(), [1., 0., 0., 0.]);
    }
}
