//! 2-D convolution (groups 1, dilation 1, any padding and stride) by im2col + GEMM, forward
//! and backward, with the bias fused.
//!
//! candle 0.11's CPU backward computes the input gradient with its direct `conv_transpose2d`
//! (scalar loops) and the kernel gradient with a second convolution over transposed tensors;
//! on the LeNet-class CNN that was most of a 300 ms step. Here, per sample:
//! forward `Y = W [o x k] * cols(X) [k x p]` (k = c kh kw, p = oh ow), the bias being the
//! GEMM's initial value; backward `dW += dY [o x p] * cols(X)^T`, `dcols = W^T * dY` then
//! col2im (scatter-add) into `dX`, only when `X` is tracked (the first layer's input is data),
//! and `db` = sums of `dY`. Samples are split over the rayon pool; each split owns its
//! im2col buffers and a partial `dW`, summed at the end.
//!
//! 'Same' stride-1 convolutions (output size = input size, every conv of `mnist-cnn`) take a
//! faster im2col/col2im: each kernel offset's row of `cols` is the input plane shifted by a
//! constant, so it is one block copy (or one shifted add) plus zeroed edge columns, instead of
//! one short copy per output row.
//!
//! Supported on the CPU: f32 and f64. Any other dtype on the CPU is an error naming it (candle
//! 0.11 has no bf16 CPU GEMM); other devices use candle's `conv2d` (im2col + cuBLAS on CUDA).

use super::act::storage_tensor;
use super::conv_direct::{self, Plan};
use super::{cpu_kernel_dtype, slice, unsupported, with_cpu, Elem, Mat, SERIAL};
use super::{row_sum, samples_per_split};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Module, Result, Shape, Tensor};
use rayon::prelude::*;
use std::ops::Range;

/// A conv layer with bias: candle-nn's `Conv2d` shape of API, this module's kernel on the CPU.
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
    stride: usize,
}

impl Conv2d {
    pub fn new(weight: Tensor, bias: Tensor, padding: usize, stride: usize) -> Self {
        Self {
            weight,
            bias,
            padding,
            stride,
        }
    }
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }
    pub fn padding(&self) -> usize {
        self.padding
    }
    pub fn stride(&self) -> usize {
        self.stride
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(x, &self.weight, &self.bias, self.padding, self.stride)
    }
}

/// Which CPU algorithm an f32 convolution takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvAlgo {
    /// The direct kernel (`conv_direct`) where it applies and drops few positions, except
    /// for 1x1 kernels (one GEMM), else im2col + GEMM. `JOULEBENCH_CONV_IM2COL=1` turns it into `Im2col` for a process.
    Auto,
    /// The direct kernel wherever it can run at all (AVX2 + FMA), however many positions it
    /// drops: for tests of the kernel on odd shapes.
    Direct,
    /// im2col + GEMM always (the before/after anchor for tests and benches).
    Im2col,
}

/// Set to a non-empty value other than `0`: every `Auto` convolution takes im2col + GEMM,
/// the before/after switch for whole training steps.
pub const CONV_IM2COL_ENV: &str = "JOULEBENCH_CONV_IM2COL";

fn im2col_by_env() -> bool {
    static ENV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENV.get_or_init(|| std::env::var(CONV_IM2COL_ENV).is_ok_and(|v| !v.is_empty() && v != "0"))
}

thread_local! {
    /// A test's or bench's override of `CONV_IM2COL_ENV` on this thread (`with_conv_im2col`).
    static FORCE_IM2COL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` with every `Auto` convolution it creates on this thread taking im2col + GEMM (what
/// `JOULEBENCH_CONV_IM2COL=1` does for a process); the previous setting is restored after.
pub fn with_conv_im2col<R>(f: impl FnOnce() -> R) -> R {
    super::with_flag(&FORCE_IM2COL, f)
}

/// Whether this CPU runs the direct convolution kernel (x86-64 with AVX2 and FMA).
pub fn conv_direct_available() -> bool {
    conv_direct::available()
}

/// `conv2d(x, w) + b` for x (n, c, h, w), w (o, c, kh, kw), b (o).
pub fn conv2d(x: &Tensor, w: &Tensor, b: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    conv2d_with(x, w, b, padding, stride, ConvAlgo::Auto)
}

/// [`conv2d`] with the CPU algorithm chosen by the caller.
pub fn conv2d_with(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    padding: usize,
    stride: usize,
    algo: ConvAlgo,
) -> Result<Tensor> {
    if stride == 0 {
        candle_core::bail!("conv2d: stride must be at least 1");
    }
    if cpu_kernel_dtype(x) {
        if x.dtype() != w.dtype() || x.dtype() != b.dtype() {
            candle_core::bail!(
                "conv2d: input {:?}, kernel {:?} and bias {:?} must share a dtype",
                x.dtype(),
                w.dtype(),
                b.dtype()
            );
        }
        // The choice is made here, on the caller's thread, and kept by the op for its backward.
        let algo = match algo {
            ConvAlgo::Auto if im2col_by_env() || FORCE_IM2COL.with(|c| c.get()) => ConvAlgo::Im2col,
            a => a,
        };
        x.contiguous()?.apply_op3_arc(
            &w.contiguous()?,
            &b.contiguous()?,
            std::sync::Arc::new(Box::new(ConvOp {
                padding,
                stride,
                algo,
            })),
        )
    } else {
        let o = b.dim(0)?;
        x.conv2d(w, padding, stride, 1, 1)?
            .broadcast_add(&b.reshape((1, o, 1, 1))?)
    }
}

struct ConvOp {
    padding: usize,
    stride: usize,
    algo: ConvAlgo,
}

impl ConvOp {
    /// The direct kernel's plan for this geometry, where it applies.
    fn direct_plan(&self, g: &Geom) -> Option<Plan> {
        let max_dropped = match self.algo {
            // A 1x1 kernel is one GEMM over the (subsampled) input: the im2col path is a copy
            // and the `gemm` crate, faster than the direct kernel at the ResNets' 1x1
            // projections (`cargo bench --bench ops -- conv/.*proj`).
            ConvAlgo::Auto if g.kh * g.kw == 1 => return None,
            ConvAlgo::Auto => conv_direct::MAX_DROPPED_SHARE,
            ConvAlgo::Direct => 1.0,
            _ => return None,
        };
        let plan = Plan::new(
            g.c,
            g.o,
            (g.h, g.w),
            (g.kh, g.kw),
            (g.pad, g.pad),
            g.stride,
            max_dropped,
        )?;
        // Auto takes the direct kernel only where the backward's input gradient takes it too
        // (at stride 2 on a 14 x 14 plane the phases would drop 39 %, and the direct forward
        // alone is no faster than im2col there).
        (self.algo != ConvAlgo::Auto || plan.input_grad_applies()).then_some(plan)
    }
}

/// Geometry of one convolution.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    pad: usize,
    stride: usize,
}

impl Geom {
    fn new(xl: &Layout, wl: &Layout, bl: &Layout, pad: usize, stride: usize) -> Result<Self> {
        let (n, c, h, w) = xl.shape().dims4()?;
        let (o, c2, kh, kw) = wl.shape().dims4()?;
        if c != c2 {
            candle_core::bail!("conv2d: input has {c} channels, kernel expects {c2}");
        }
        if bl.shape().dims1()? != o {
            candle_core::bail!(
                "conv2d: bias {:?} does not match {o} output channels",
                bl.dims()
            );
        }
        if h + 2 * pad < kh || w + 2 * pad < kw {
            candle_core::bail!(
                "conv2d: kernel {kh}x{kw} larger than padded input {}x{}",
                h + 2 * pad,
                w + 2 * pad
            );
        }
        Ok(Self {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            oh: (h + 2 * pad - kh) / stride + 1,
            ow: (w + 2 * pad - kw) / stride + 1,
            pad,
            stride,
        })
    }
    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }
    fn p(&self) -> usize {
        self.oh * self.ow
    }
    fn chw(&self) -> usize {
        self.c * self.h * self.w
    }
    fn min_len(&self) -> usize {
        samples_per_split(self.n)
    }
    /// Stride 1 with 'same' output size: each im2col row is the input plane shifted by a
    /// constant, so it moves as one block (see `im2col`).
    fn same_stride1(&self) -> bool {
        self.stride == 1 && self.oh == self.h && self.ow == self.w
    }
    /// For `same_stride1`: the shift `(ki - pad) w + (kj - pad)` from a cols row to the input
    /// plane, the range of output positions `t` whose `t + shift` lies in the plane, and the
    /// valid columns `[lo, hi)` of every output row (outside them the shifted read wraps into
    /// the neighbouring input row, so those values must be zero).
    fn plane_shift(&self, ki: usize, kj: usize) -> (isize, Range<usize>, Range<usize>) {
        let (p, w) = (self.p() as isize, self.w as isize);
        let dy = ki as isize - self.pad as isize;
        let dx = kj as isize - self.pad as isize;
        let shift = dy * w + dx;
        let lo = (-shift).clamp(0, p) as usize;
        let hi = (p - shift).clamp(0, p) as usize;
        (shift, lo..hi.max(lo), self.ox_range(kj))
    }
    /// The valid output columns `ox` for kernel column `kj` (input column in range).
    fn ox_range(&self, kj: usize) -> Range<usize> {
        let lo = if self.pad > kj {
            (self.pad - kj).div_ceil(self.stride)
        } else {
            0
        };
        // ix = ox * s + kj - pad < w  <=>  ox * s < w + pad - kj.
        let hi = (self.w + self.pad)
            .saturating_sub(kj)
            .div_ceil(self.stride)
            .min(self.ow);
        lo.min(hi)..hi
    }
}

/// Zero the columns of every `w`-wide row of `row` outside `valid` (`Geom::ox_range`).
fn zero_wrapped_columns<T: Elem>(row: &mut [T], w: usize, valid: Range<usize>) {
    if valid.start == 0 && valid.end == w {
        return;
    }
    // Column by column down the rows (at most `pad` columns): a strided loop, where row by
    // row would be a memset call per one or two values.
    for c in (0..valid.start).chain(valid.end..w) {
        for v in row[c..].iter_mut().step_by(w) {
            *v = T::zero();
        }
    }
}

/// cols[(ci, ki, kj), (oy, ox)] = x[ci, oy s + ki - pad, ox s + kj - pad] (0 outside).
fn im2col<T: Elem>(x: &[T], g: &Geom, cols: &mut [T]) {
    let (p, z) = (g.p(), T::zero());
    if g.same_stride1() {
        // Each row is the plane shifted by (ki - pad) rows and (kj - pad) columns: one block
        // copy, zeros where the shift leaves the plane, then the columns that wrapped into the
        // neighbouring input row are zeroed.
        for ci in 0..g.c {
            let plane = &x[ci * p..][..p];
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    let row = &mut cols[((ci * g.kh + ki) * g.kw + kj) * p..][..p];
                    let (shift, t, cols_ok) = g.plane_shift(ki, kj);
                    row[..t.start].fill(z);
                    row[t.end..].fill(z);
                    if !t.is_empty() {
                        // (An empty range may start left of the plane: no offset to take.)
                        let s0 = (t.start as isize + shift) as usize;
                        row[t.clone()].copy_from_slice(&plane[s0..s0 + t.len()]);
                    }
                    zero_wrapped_columns(row, g.w, cols_ok);
                }
            }
        }
        return;
    }
    for ci in 0..g.c {
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = &mut cols[((ci * g.kh + ki) * g.kw + kj) * p..][..p];
                let r = g.ox_range(kj);
                for oy in 0..g.oh {
                    let dst = &mut row[oy * g.ow..(oy + 1) * g.ow];
                    let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize || r.is_empty() {
                        dst.fill(z);
                        continue;
                    }
                    let src = &x[(ci * g.h + iy as usize) * g.w..][..g.w];
                    dst[..r.start].fill(z);
                    dst[r.end..].fill(z);
                    let ix0 = r.start * g.stride + kj - g.pad;
                    if g.stride == 1 {
                        // An inline loop: rows are 10-30 values, too short for a memcpy call.
                        for (d, &v) in dst[r.clone()].iter_mut().zip(&src[ix0..ix0 + r.len()]) {
                            *d = v;
                        }
                    } else {
                        let row = src[ix0..].iter().step_by(g.stride);
                        for (d, &v) in dst[r.clone()].iter_mut().zip(row) {
                            *d = v;
                        }
                    }
                }
            }
        }
    }
}

/// dx[ci, iy, ix] += dcols[(ci, ki, kj), (oy, ox)]: the adjoint of `im2col`, into a `dx`
/// that holds zeros (a fresh `vec!` of zeros: no second fill). `dcols` is scratch: the 'same'
/// stride-1 path zeroes its wrapped columns in place.
fn col2im<T: Elem>(dcols: &mut [T], g: &Geom, dx: &mut [T]) {
    let p = g.p();
    if g.same_stride1() {
        // The adjoint of the block copy: drop the wrapped columns, then one shifted add.
        for ci in 0..g.c {
            let plane = &mut dx[ci * p..][..p];
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    let row = &mut dcols[((ci * g.kh + ki) * g.kw + kj) * p..][..p];
                    let (shift, t, cols_ok) = g.plane_shift(ki, kj);
                    if t.is_empty() {
                        continue;
                    }
                    zero_wrapped_columns(row, g.w, cols_ok);
                    let s0 = (t.start as isize + shift) as usize;
                    for (d, &v) in plane[s0..s0 + t.len()].iter_mut().zip(&row[t]) {
                        *d += v;
                    }
                }
            }
        }
        return;
    }
    for ci in 0..g.c {
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = &dcols[((ci * g.kh + ki) * g.kw + kj) * p..][..p];
                let r = g.ox_range(kj);
                if r.is_empty() {
                    continue;
                }
                for oy in 0..g.oh {
                    let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let dst = &mut dx[(ci * g.h + iy as usize) * g.w..][..g.w];
                    let src = &row[oy * g.ow..(oy + 1) * g.ow];
                    let ix0 = r.start * g.stride + kj - g.pad;
                    if g.stride == 1 {
                        // Contiguous on both sides: no index arithmetic, vectorised adds.
                        for (d, &v) in dst[ix0..ix0 + r.len()].iter_mut().zip(&src[r.clone()]) {
                            *d += v;
                        }
                    } else {
                        let row = dst[ix0..].iter_mut().step_by(g.stride);
                        for (d, &v) in row.zip(&src[r.clone()]) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }
}

fn forward<T: Elem>(x: &[T], w: &[T], b: &[T], g: &Geom) -> Result<Vec<T>> {
    let (k, p, o) = (g.k(), g.p(), g.o);
    // Each output plane starts as its bias (the GEMM's initial value), written once.
    let mut y: Vec<T> = Vec::with_capacity(g.n * o * p);
    for _ in 0..g.n {
        for &bias in b {
            y.extend(std::iter::repeat_n(bias, p));
        }
    }
    y.par_chunks_mut(o * p)
        .zip(x.par_chunks(g.chw()))
        .with_min_len(g.min_len())
        .try_for_each_init(
            || vec![T::zero(); k * p],
            |cols, (yn, xn)| {
                im2col(xn, g, cols);
                super::gemm_into(
                    yn,
                    p,
                    (o, p, k),
                    Mat {
                        data: w,
                        rs: k,
                        cs: 1,
                    },
                    Mat {
                        data: cols,
                        rs: p,
                        cs: 1,
                    },
                    true,
                    SERIAL,
                )
            },
        )?;
    Ok(y)
}

/// Per-split state of the backward pass.
struct Acc<T> {
    dw: Vec<T>,
    cols: Vec<T>,
    dcols: Vec<T>,
    err: Option<candle_core::Error>,
}

type ConvGrads<T> = (Option<Vec<T>>, Vec<T>, Vec<T>);

fn backward<T: Elem>(x: &[T], w: &[T], dy: &[T], g: &Geom, need_dx: bool) -> Result<ConvGrads<T>> {
    let (k, p, o, chw) = (g.k(), g.p(), g.o, g.chw());
    let z = T::zero();
    let init = || Acc {
        dw: vec![z; o * k],
        cols: vec![z; k * p],
        dcols: if need_dx { vec![z; k * p] } else { Vec::new() },
        err: None,
    };
    let sample = |mut acc: Acc<T>, xn: &[T], gn: &[T], dxn: Option<&mut [T]>| -> Acc<T> {
        if acc.err.is_some() {
            return acc;
        }
        im2col(xn, g, &mut acc.cols);
        // dW (o x k) += dY (o x p) * cols^T (p x k).
        let r = super::gemm_into(
            &mut acc.dw,
            k,
            (o, k, p),
            Mat {
                data: gn,
                rs: p,
                cs: 1,
            },
            Mat {
                data: &acc.cols,
                rs: 1,
                cs: p,
            },
            true,
            SERIAL,
        );
        if let Err(e) = r {
            acc.err = Some(e);
            return acc;
        }
        if let Some(dxn) = dxn {
            // dcols (k x p) = W^T (k x o) * dY (o x p).
            let r = super::gemm_into(
                &mut acc.dcols,
                p,
                (k, p, o),
                Mat {
                    data: w,
                    rs: 1,
                    cs: k,
                },
                Mat {
                    data: gn,
                    rs: p,
                    cs: 1,
                },
                false,
                SERIAL,
            );
            match r {
                Ok(()) => col2im(&mut acc.dcols, g, dxn),
                Err(e) => acc.err = Some(e),
            }
        }
        acc
    };
    let merge = |mut a: Acc<T>, b: Acc<T>| {
        for (x, y) in a.dw.iter_mut().zip(&b.dw) {
            *x += *y;
        }
        a.err = a.err.or(b.err);
        a
    };
    let mut dx = if need_dx {
        vec![z; g.n * chw]
    } else {
        Vec::new()
    };
    let acc = if need_dx {
        dx.par_chunks_mut(chw)
            .zip(x.par_chunks(chw).zip(dy.par_chunks(o * p)))
            .with_min_len(g.min_len())
            .fold(init, |acc, (dxn, (xn, gn))| sample(acc, xn, gn, Some(dxn)))
            .reduce(init, merge)
    } else {
        x.par_chunks(chw)
            .zip(dy.par_chunks(o * p))
            .with_min_len(g.min_len())
            .fold(init, |acc, (xn, gn)| sample(acc, xn, gn, None))
            .reduce(init, merge)
    };
    if let Some(e) = acc.err {
        return Err(e);
    }
    Ok((need_dx.then_some(dx), acc.dw, bias_grad(dy, g)))
}

/// `db[oi] = sum over samples and positions of dY[n, oi, :]`.
fn bias_grad<T: Elem>(dy: &[T], g: &Geom) -> Vec<T> {
    let (o, p) = (g.o, g.p());
    let mut db = vec![T::zero(); o];
    for gn in dy.chunks_exact(o * p) {
        for (d, row) in db.iter_mut().zip(gn.chunks_exact(p)) {
            *d += row_sum(row);
        }
    }
    db
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "conv2d-im2col"
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
        let g = Geom::new(l1, l2, l3, self.padding, self.stride)?;
        let y = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => {
                let x = slice(x, l1, "conv2d x")?;
                let w = slice(w, l2, "conv2d w")?;
                let b = slice(b, l3, "conv2d b")?;
                CpuStorage::F32(match self.direct_plan(&g) {
                    Some(plan) => conv_direct::forward(x, w, b, &plan, g.n),
                    None => forward(x, w, b, &g)?,
                })
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => {
                CpuStorage::F64(forward(
                    slice(x, l1, "conv2d x")?,
                    slice(w, l2, "conv2d w")?,
                    slice(b, l3, "conv2d b")?,
                    &g,
                )?)
            }
            (x, _, _) => return Err(unsupported("conv2d", x.dtype())),
        };
        Ok((y, Shape::from((g.n, g.o, g.oh, g.ow))))
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
        let g = Geom::new(
            x.layout(),
            w.layout(),
            b.layout(),
            self.padding,
            self.stride,
        )?;
        let need_dx = x.track_op();
        /// The gradients that `grads` computes from the three tensors' data, as storages.
        fn go<T: Elem>(
            x: &Tensor,
            w: &Tensor,
            dy: &Tensor,
            grads: impl FnOnce(&[T], &[T], &[T]) -> Result<ConvGrads<T>>,
        ) -> Result<(Option<CpuStorage>, CpuStorage, CpuStorage)> {
            with_cpu(x, "conv2d x", |xs, xl| {
                with_cpu(w, "conv2d w", |ws, wl| {
                    with_cpu(dy, "conv2d grad", |gs, gl| {
                        let xv = slice(T::cpu_storage_as_slice(xs)?, xl, "conv2d x")?;
                        let wv = slice(T::cpu_storage_as_slice(ws)?, wl, "conv2d w")?;
                        let gv = slice(T::cpu_storage_as_slice(gs)?, gl, "conv2d grad")?;
                        let (dx, dw, db) = grads(xv, wv, gv)?;
                        Ok((
                            dx.map(T::to_cpu_storage_owned),
                            T::to_cpu_storage_owned(dw),
                            T::to_cpu_storage_owned(db),
                        ))
                    })
                })
            })
        }
        let (dx, dw, db) = match x.dtype() {
            candle_core::DType::F32 => go::<f32>(x, w, &grad, |xv, wv, gv| {
                let direct = self
                    .direct_plan(&g)
                    .and_then(|p| conv_direct::backward(xv, wv, gv, &p, g.n, need_dx));
                match direct {
                    Some(grads) => Ok(grads),
                    None => backward(xv, wv, gv, &g, need_dx),
                }
            })?,
            candle_core::DType::F64 => {
                go::<f64>(x, w, &grad, |xv, wv, gv| backward(xv, wv, gv, &g, need_dx))?
            }
            d => return Err(unsupported("conv2d backward", d)),
        };
        let dx = match dx {
            Some(s) => Some(storage_tensor(s, x.shape())?),
            None => None,
        };
        Ok((
            dx,
            Some(storage_tensor(dw, w.shape())?),
            Some(storage_tensor(db, b.shape())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kernels::tests_util::{assert_close, rand};
    use candle_core::{DType, Device, Var};

    /// Values and all three gradients against candle's conv2d + broadcast bias add and its
    /// autograd (direct conv_transpose2d for dX, conv over transposed tensors for dW), for the
    /// reference CNN's layers (5x5, 'same' padding 2, stride 1) and odd shapes, padding 0/1/3
    /// and stride 2 and 3. Tolerance: k-term sums (assert_close), k = the largest reduction
    /// of each quantity.
    #[test]
    fn matches_candle_conv2d_values_and_grads() {
        let cases: &[([usize; 4], [usize; 4], usize, usize)] = &[
            ([4, 1, 28, 28], [16, 1, 5, 5], 2, 1),
            ([3, 16, 14, 14], [32, 16, 5, 5], 2, 1),
            ([2, 3, 9, 7], [5, 3, 3, 3], 1, 1),
            ([2, 2, 8, 8], [4, 2, 3, 3], 0, 2),
            // Square only here: candle's own backward derives the output padding from the height
            // alone and fails on this geometry with a non-square input.
            ([1, 3, 11, 11], [2, 3, 4, 4], 3, 3),
            ([2, 3, 9, 7], [4, 3, 3, 3], 0, 1),
            ([2, 2, 5, 5], [3, 2, 1, 1], 0, 1),
            // 'Same' geometries take the block-shift path; here the kernel is wider than the
            // plane, so some shifts leave it entirely.
            ([1, 2, 4, 5], [2, 2, 7, 7], 3, 1),
            ([2, 2, 6, 9], [3, 2, 5, 5], 2, 1),
        ];
        for &(xs, ws, pad, stride) in cases {
            let x = Var::from_tensor(&rand(&xs, 1)).unwrap();
            let w = Var::from_tensor(&rand(&ws, 2)).unwrap();
            let b = Var::from_tensor(&rand(&ws[..1], 3)).unwrap();
            let ya = conv2d(x.as_tensor(), w.as_tensor(), b.as_tensor(), pad, stride).unwrap();
            let yb = x
                .as_tensor()
                .conv2d(w.as_tensor(), pad, stride, 1, 1)
                .unwrap()
                .broadcast_add(&b.as_tensor().reshape((1, ws[0], 1, 1)).unwrap())
                .unwrap();
            let what = format!("{xs:?} * {ws:?} pad {pad} stride {stride}");
            let k = ws[1] * ws[2] * ws[3];
            assert_close(&ya, &yb, k, &format!("{what}: forward"));
            let c = rand(ya.dims(), 4);
            let ga = (&ya * &c).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (&yb * &c).unwrap().sum_all().unwrap().backward().unwrap();
            let np = xs[0] * ya.dim(2).unwrap() * ya.dim(3).unwrap();
            for (t, k, q) in [
                (x.as_tensor(), ws[0] * ws[2] * ws[3], "dX"),
                (w.as_tensor(), np, "dW"),
                (b.as_tensor(), np, "db"),
            ] {
                assert_close(
                    ga.get(t).unwrap(),
                    gb.get(t).unwrap(),
                    k,
                    &format!("{what}: {q}"),
                );
            }
        }
    }

    /// The direct kernel against im2col + GEMM (itself checked against candle above):
    /// values and the three gradients, at the ResNets' shapes (3x3 'same' on 28x28 and 14x14,
    /// the widths of both tasks, the 1-channel stem) and odd ones: batch 1, 1 channel, odd and
    /// non-square planes, output channels that fill no whole tile (1, 5, 7, 13), 1x1, 5x5
    /// 'same', 'valid' 3x3, a 3x5 kernel (different paddings per axis in the input gradient),
    /// and planes where most positions are dropped (forced with `ConvAlgo::Direct`).
    #[test]
    fn direct_kernel_matches_im2col_values_and_grads() {
        if !conv_direct_available() {
            let why = "the direct conv kernel needs x86-64 with AVX2 and FMA";
            assert!(
                std::env::var("CI").is_err(),
                "{why}: this CI machine has neither"
            );
            eprintln!("SKIPPED direct_kernel_matches_im2col_values_and_grads: {why}");
            return;
        }
        let cases: &[([usize; 4], [usize; 4], usize, usize)] = &[
            ([2, 16, 28, 28], [16, 16, 3, 3], 1, 1),
            ([2, 8, 28, 28], [8, 8, 3, 3], 1, 1),
            ([2, 32, 14, 14], [32, 32, 3, 3], 1, 1),
            ([3, 1, 28, 28], [16, 1, 3, 3], 1, 1),
            ([2, 64, 7, 7], [64, 64, 3, 3], 1, 1),
            ([1, 1, 5, 7], [1, 1, 3, 3], 1, 1),
            ([1, 3, 9, 11], [5, 3, 3, 3], 1, 1),
            ([2, 2, 6, 9], [7, 2, 5, 5], 2, 1),
            ([2, 4, 10, 10], [13, 4, 3, 3], 0, 1),
            ([1, 6, 8, 5], [3, 6, 1, 1], 0, 1),
            ([2, 3, 7, 12], [4, 3, 3, 5], 1, 1),
            ([1, 2, 1, 1], [2, 2, 3, 3], 1, 1),
            // Stride 2: the ResNets' downsampling 3x3 convs and 1x1 projections (28 -> 14,
            // 14 -> 7), odd planes (odd padded sizes leave phases of unequal size), 1x1s
            // (they read one phase: the other pixels get zero gradient), 'valid', 5x5 and
            // 2x2 kernels, stride 3, batch 1, 1 channel, a 1x1 plane.
            ([2, 16, 28, 28], [32, 16, 3, 3], 1, 2),
            ([2, 32, 14, 14], [64, 32, 3, 3], 1, 2),
            ([2, 16, 28, 28], [32, 16, 1, 1], 0, 2),
            ([2, 32, 14, 14], [64, 32, 1, 1], 0, 2),
            ([1, 3, 9, 11], [5, 3, 3, 3], 1, 2),
            ([2, 2, 7, 7], [3, 2, 1, 1], 0, 2),
            ([1, 1, 6, 8], [2, 1, 1, 1], 0, 2),
            ([2, 4, 10, 9], [7, 4, 3, 3], 0, 2),
            ([1, 2, 11, 13], [3, 2, 5, 5], 2, 2),
            ([2, 3, 8, 8], [4, 3, 2, 2], 0, 2),
            ([1, 3, 11, 10], [2, 3, 3, 3], 1, 3),
            ([1, 1, 1, 1], [2, 1, 3, 3], 1, 2),
        ];
        for &(xs, ws, pad, stride) in cases {
            let plan = Plan::new(
                xs[1],
                ws[0],
                (xs[2], xs[3]),
                (ws[2], ws[3]),
                (pad, pad),
                stride,
                1.0,
            );
            assert!(
                plan.is_some_and(|p| p.input_grad_applies()),
                "{xs:?} * {ws:?} pad {pad} stride {stride}: the direct kernel must run here, \
                 forward and back"
            );
            let x = Var::from_tensor(&rand(&xs, 11)).unwrap();
            let w = Var::from_tensor(&rand(&ws, 12)).unwrap();
            let b = Var::from_tensor(&rand(&ws[..1], 13)).unwrap();
            let run = |algo| {
                let y = conv2d_with(
                    x.as_tensor(),
                    w.as_tensor(),
                    b.as_tensor(),
                    pad,
                    stride,
                    algo,
                )
                .unwrap();
                let c = rand(y.dims(), 14);
                let g = (&y * &c).unwrap().sum_all().unwrap().backward().unwrap();
                let grads: Vec<Tensor> = [x.as_tensor(), w.as_tensor(), b.as_tensor()]
                    .iter()
                    .map(|t| g.get(t).unwrap().clone())
                    .collect();
                (y, grads)
            };
            let (yd, gd) = run(ConvAlgo::Direct);
            let (yi, gi) = run(ConvAlgo::Im2col);
            let what = format!("{xs:?} * {ws:?} pad {pad} stride {stride}");
            let np = xs[0] * yi.dim(2).unwrap() * yi.dim(3).unwrap();
            assert_close(&yd, &yi, ws[1] * ws[2] * ws[3], &format!("{what}: forward"));
            for ((a, b), (k, q)) in
                gd.iter()
                    .zip(&gi)
                    .zip([(ws[0] * ws[2] * ws[3], "dX"), (np, "dW"), (np, "db")])
            {
                assert_close(a, b, k, &format!("{what}: {q}"));
            }
        }
    }

    /// Which geometries `Auto` sends to the direct kernel: kernels larger than 1x1, at any
    /// stride, with few dropped positions.
    #[test]
    fn auto_takes_the_direct_kernel_where_it_drops_little() {
        let plan = |c, o, hw: usize, k: usize, pad, stride| {
            let g = Geom {
                n: 1,
                c,
                h: hw,
                w: hw,
                o,
                kh: k,
                kw: k,
                oh: (hw + 2 * pad - k) / stride + 1,
                ow: (hw + 2 * pad - k) / stride + 1,
                pad,
                stride,
            };
            ConvOp {
                padding: pad,
                stride,
                algo: ConvAlgo::Auto,
            }
            .direct_plan(&g)
            .is_some()
        };
        let direct = conv_direct_available();
        assert_eq!(plan(16, 16, 28, 3, 1, 1), direct, "ResNet stage 1");
        assert_eq!(plan(32, 32, 14, 3, 1, 1), direct, "ResNet stage 2");
        assert_eq!(plan(16, 32, 28, 3, 1, 2), direct, "stride 2, 28 -> 14");
        assert!(
            !plan(32, 64, 14, 3, 1, 2),
            "stride 2, 14 -> 7: its input gradient, im2col"
        );
        assert!(!plan(16, 32, 28, 1, 0, 2), "1x1 projection: a GEMM, im2col");
        assert!(
            !plan(16, 16, 28, 1, 0, 1),
            "1x1 at stride 1: a GEMM, im2col"
        );
        assert!(
            !plan(64, 64, 5, 5, 2, 1),
            "5x5 on 5x5: most positions dropped, im2col"
        );
    }

    #[test]
    fn untracked_input_gets_no_gradient_and_f64_works() {
        let x = rand(&[2, 2, 6, 6], 1).to_dtype(DType::F64).unwrap();
        let w = Var::from_tensor(&rand(&[3, 2, 3, 3], 2).to_dtype(DType::F64).unwrap()).unwrap();
        let b = Var::from_tensor(&rand(&[3], 3).to_dtype(DType::F64).unwrap()).unwrap();
        let y = conv2d(&x, w.as_tensor(), b.as_tensor(), 1, 1).unwrap();
        let z = x
            .conv2d(w.as_tensor(), 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&b.as_tensor().reshape((1, 3, 1, 1)).unwrap())
            .unwrap();
        assert_close(&y, &z, 18, "f64 forward");
        let g = y.sum_all().unwrap().backward().unwrap();
        assert!(g.get(&x).is_none());
        assert!(g.get(w.as_tensor()).is_some());
    }

    #[test]
    fn unsupported_dtypes_and_shapes_are_errors() {
        let x = rand(&[1, 1, 4, 4], 1).to_dtype(DType::BF16).unwrap();
        let w = rand(&[1, 1, 3, 3], 2).to_dtype(DType::BF16).unwrap();
        let b = rand(&[1], 3).to_dtype(DType::BF16).unwrap();
        let e = conv2d(&x, &w, &b, 1, 1).unwrap_err().to_string();
        assert!(e.contains("BF16") && e.contains("conv2d"), "{e}");
        let w2 = rand(&[1, 2, 3, 3], 2);
        let e = conv2d(&rand(&[1, 1, 4, 4], 1), &w2, &rand(&[1], 3), 1, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("channels"), "{e}");
        let e = conv2d(
            &rand(&[1, 1, 4, 4], 1),
            &rand(&[1, 1, 3, 3], 1),
            &rand(&[1], 3),
            0,
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("stride"), "{e}");
        let _ = Device::Cpu;
    }
}
