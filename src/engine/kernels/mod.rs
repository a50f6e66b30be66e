//! CPU training kernels with their own backward passes, as candle custom ops.
//!
//! Owns: the layers whose candle 0.11 CPU implementation dominated a training step (profiled
//! in docs/results.md "Speed"): a dense layer that fuses its bias and skips the input gradient
//! nobody asked for (`linear`), an im2col + GEMM convolution whose input and kernel gradients
//! are GEMMs too (`conv`), which hands f32 convolutions above 1x1 on AVX2 + FMA machines to a
//! direct kernel without im2col (`conv_direct`), single-pass ReLU and ReLU + 2x2 max-pool
//! (`act`), layer norm with its backward (`norm`), which candle-nn's fused op lacks, causal self-attention from
//! the packed q/k/v projection in one op (`attention`), exact GELU (`gelu`), and softmax
//! cross-entropy against class indices (`loss`), and batch norm with ReLU fused
//! (`batch_norm`); `math` holds the branch-free f32 `exp` and `erf` their element loops use
//! (libm's are calls that block vectorisation). `fused` is the one place the
//! transformer and batch-norm ops choose between a kernel and candle's composed ops. Each public
//! function takes and returns ordinary `Tensor`s and records a candle backward op (`bwd`), so
//! autograd, `GradStore` and the optimizers work unchanged.
//! Must not: change what a model computes. On other devices every function falls back to the
//! candle ops it replaces; on the CPU a dtype a kernel cannot run is an error naming the dtype
//! and the kernel, never a silent conversion. Unit tests beside each kernel compare values and
//! gradients with candle's own ops (and so with candle's autograd) within stated tolerances.
//!
//! Supported on the CPU: f32 and f64. GEMM: f32 on `sgemm` where the CPU has AVX2 + FMA,
//! otherwise (and f64, and with `JOULEBENCH_GEMM=crate`) the `gemm` crate, the one candle uses.
//! Threads: the kernels split the batch over the rayon pool (its size is `RAYON_NUM_THREADS`,
//! default one per core) and run each GEMM single-threaded inside a split; the binary runs its
//! command on a worker of that pool, so a split is a push onto the worker's own queue.
//! SIMD: every element loop is compiled with `multiversion` for AVX-512 (F, VL, DQ, BW), AVX2 +
//! FMA and NEON beside the baseline and picks the best the CPU has at run time. The versions
//! do the same arithmetic in the same order: no loop relies on fused multiply-add contraction (Rust does not
//! contract), and reductions run over explicit lanes, so the vector width does not change
//! their order. The exception is `conv_direct`: explicit AVX2 + FMA intrinsics (fused
//! multiply-adds), run only where the CPU has both; elsewhere the convolution takes im2col +
//! GEMM, the same function summed in another order.

mod act;
mod attention;
mod batch_norm;
mod conv;
mod conv_direct;
mod gelu;
mod linear;
mod loss;
mod math;
mod norm;
mod sgemm;

pub use act::{add_relu, relu, relu_max_pool2d};
pub use attention::{causal_attention, causal_attention_composed, causal_mask, AttentionDropout};
pub use batch_norm::{batch_norm, batch_norm_composed, BnOutput, BnStats};
pub use conv::{
    conv2d, conv2d_with, conv_direct_available, with_conv_im2col, Conv2d, ConvAlgo, CONV_IM2COL_ENV,
};
pub use gelu::gelu;
pub use linear::Linear;
pub use loss::cross_entropy;
pub use norm::layer_norm;

use candle_core::{CpuStorage, DType, Layout, Result, Storage, Tensor};

/// The element types the CPU kernels run (gemm has kernels for both).
pub(crate) trait Elem: candle_core::WithDType {
    /// Whether `Self` is `f32` (the element type `sgemm` runs).
    const IS_F32: bool = false;
    fn exp(self) -> Self;
}
impl Elem for f32 {
    const IS_F32: bool = true;
    /// The kernels' branch-free exp (within 2 ulp; vectorises, unlike libm's `expf`).
    #[inline(always)]
    fn exp(self) -> Self {
        math::exp_f32(self)
    }
}
impl Elem for f64 {
    #[inline(always)]
    fn exp(self) -> Self {
        f64::exp(self)
    }
}

/// Why a kernel refuses a dtype.
pub(crate) fn unsupported(kernel: &str, dtype: DType) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "{kernel}: dtype {dtype:?} is not supported by the CPU kernel (f32 and f64 only; \
         candle 0.11 has no bf16 CPU GEMM either): cast to f32 first"
    ))
}

/// The contiguous slice a layout covers.
pub(crate) fn slice<'a, T>(s: &'a [T], l: &Layout, what: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("{what}: expected a contiguous tensor"),
    }
}

/// Run `f` on a CPU tensor's contiguous data (the tensor is made contiguous first).
pub(crate) fn with_cpu<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&CpuStorage, &Layout) -> Result<R>,
) -> Result<R> {
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(c) => f(c, l),
        _ => candle_core::bail!("{what}: expected a CPU tensor"),
    }
}

/// Whether the CPU kernels handle `t` (CPU device, f32 or f64).
pub fn cpu_kernel_dtype(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// The environment variable that forces the transformer ops (layer norm, attention, GELU,
/// cross-entropy) onto
/// candle's composed ops on the CPU too: `JOULEBENCH_COMPOSED_OPS=1`. The fused and the
/// composed path compute the same function; tests and benches compare them with it.
pub const COMPOSED_OPS_ENV: &str = "JOULEBENCH_COMPOSED_OPS";

thread_local! {
    /// A test's or bench's override of `COMPOSED_OPS_ENV` on this thread (see `with_composed`).
    static FORCE_COMPOSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn composed_by_env() -> bool {
    static ENV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENV.get_or_init(|| std::env::var(COMPOSED_OPS_ENV).is_ok_and(|v| !v.is_empty() && v != "0"))
}

/// The one place the implementation of a transformer op is chosen: the fused CPU kernel for a
/// CPU f32/f64 tensor, candle's composed ops on any other device or dtype, or when forced.
pub fn fused(t: &Tensor) -> bool {
    cpu_kernel_dtype(t) && !composed_by_env() && !FORCE_COMPOSED.with(|f| f.get())
}

/// Run `f` with the composed ops forced on this thread (what `JOULEBENCH_COMPOSED_OPS=1` does
/// for a whole process); the previous setting is restored after.
pub fn with_composed<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&FORCE_COMPOSED, f)
}

/// Run `f` with a thread's override flag set, restoring its previous value after (the one
/// mechanism behind `with_composed`, `with_gemm_crate` and `with_conv_im2col`).
pub(crate) fn with_flag<R>(
    flag: &'static std::thread::LocalKey<std::cell::Cell<bool>>,
    f: impl FnOnce() -> R,
) -> R {
    let before = flag.with(|c| c.replace(true));
    let r = f();
    flag.with(|c| c.set(before));
    r
}

/// Per-row values an op's forward keeps for its own backward (the cross-entropy's log-sum-exp,
/// layer norm's statistics), so the backward need not recompute them.
pub(crate) struct Kept<T>(std::sync::Mutex<Option<Vec<T>>>);

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Self(std::sync::Mutex::new(None))
    }
}

impl<T> Kept<T> {
    pub(crate) fn put(&self, rows: Vec<T>) {
        *self.get() = Some(rows);
    }

    /// The kept rows (`None` before a forward), locked while the guard lives.
    pub(crate) fn get(&self) -> std::sync::MutexGuard<'_, Option<Vec<T>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// gemm parallelism inside a kernel split: none (the split itself is the parallelism).
pub(crate) const SERIAL: gemm::Parallelism = gemm::Parallelism::None;

/// Parallelism for one large GEMM issued outside any split.
pub(crate) fn gemm_threads() -> gemm::Parallelism {
    let n = rayon::current_num_threads();
    if n > 1 {
        gemm::Parallelism::Rayon(n)
    } else {
        gemm::Parallelism::None
    }
}

/// A strided matrix operand: data, row stride, column stride.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

/// Samples per rayon split of a batch of `n`: a few splits per thread, so a straggling core
/// is absorbed (both convolution paths, `conv` and `conv_direct`, split the batch this way).
pub(crate) fn samples_per_split(n: usize) -> usize {
    (n / (4 * rayon::current_num_threads().max(1))).max(1)
}

/// The sum of `row` in eight lanes (vectorised), then the remainder and the lanes in order: a
/// fixed order for any CPU.
pub(crate) fn row_sum<T: Elem>(row: &[T]) -> T {
    let mut lanes = [T::zero(); 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    let mut s = chunks.remainder().iter().fold(T::zero(), |a, &v| a + v);
    for l in lanes {
        s += l;
    }
    s
}

/// How many elements a `rows x cols` strided matrix spans from its first element.
fn span(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// `dst (m x n, row-major, row stride dst_rs) (+)= lhs (m x k) * rhs (k x n)`.
///
/// Bounds are checked here once so the unsafe GEMM call cannot read or write out of range.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into<T: Elem>(
    dst: &mut [T],
    dst_rs: usize,
    (m, n, k): (usize, usize, usize),
    lhs: Mat<'_, T>,
    rhs: Mat<'_, T>,
    accumulate: bool,
    par: gemm::Parallelism,
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    if span(m, n, dst_rs, 1) > dst.len() {
        candle_core::bail!("gemm: destination out of bounds ({m}x{n}x{k})");
    }
    check_operands((m, n, k), &lhs, &rhs)?;
    if k == 0 {
        if !accumulate {
            dst.iter_mut().for_each(|d| *d = T::zero());
        }
        return Ok(());
    }
    // SAFETY: every index the GEMM touches is within the slices (checked above), and dst does
    // not alias lhs or rhs (it is a distinct &mut).
    unsafe {
        raw_gemm(
            (m, n, k),
            dst.as_mut_ptr(),
            dst_rs,
            accumulate,
            &lhs,
            &rhs,
            par,
        )
    }
    Ok(())
}

/// A new `m x n` row-major matrix `lhs (m x k) * rhs (k x n)`, written once by the GEMM: no zero
/// fill first (with `read_dst` false the `gemm` crate writes every element of `dst` and reads
/// none; a fresh zeroed output was a memset of every dense layer's output and gradient, 4 % of
/// a transformer step).
pub(crate) fn gemm_new<T: Elem>(
    (m, n, k): (usize, usize, usize),
    lhs: Mat<'_, T>,
    rhs: Mat<'_, T>,
    par: gemm::Parallelism,
) -> Result<Vec<T>> {
    if m == 0 || n == 0 || k == 0 {
        return Ok(vec![T::zero(); m * n]);
    }
    check_operands((m, n, k), &lhs, &rhs)?;
    let mut dst: Vec<T> = Vec::with_capacity(m * n);
    // SAFETY: the operands' reads are within their slices (checked above); dst has capacity
    // for m n elements at row stride n and is written, never read, by the GEMM (`read_dst`
    // false), through a raw pointer (no reference to the uninitialised memory is made); after
    // the call every element is initialised, so the length can be set.
    unsafe {
        raw_gemm((m, n, k), dst.as_mut_ptr(), n, false, &lhs, &rhs, par);
        dst.set_len(m * n);
    }
    Ok(dst)
}

fn check_operands<T>(
    (m, n, k): (usize, usize, usize),
    lhs: &Mat<'_, T>,
    rhs: &Mat<'_, T>,
) -> Result<()> {
    if span(m, k, lhs.rs, lhs.cs) > lhs.data.len() || span(k, n, rhs.rs, rhs.cs) > rhs.data.len() {
        candle_core::bail!("gemm: operand out of bounds ({m}x{n}x{k})");
    }
    Ok(())
}

/// The environment variable that sends every f32 GEMM to the `gemm` crate instead of
/// `sgemm` (on CPUs with AVX2 + FMA): `JOULEBENCH_GEMM=crate`, for A/B measurements.
pub const GEMM_ENV: &str = "JOULEBENCH_GEMM";

thread_local! {
    /// A test's or bench's override of `GEMM_ENV` on this thread (see `with_gemm_crate`).
    static FORCE_GEMM_CRATE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether f32 GEMMs run on `sgemm`: the CPU has AVX2 + FMA, `GEMM_ENV` does not say `crate`
/// (read once) and no `with_gemm_crate` is in force on this thread.
fn sgemm_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let on = *ON.get_or_init(|| {
        sgemm::available() && std::env::var(GEMM_ENV).map_or(true, |v| v != "crate")
    });
    on && !FORCE_GEMM_CRATE.with(|f| f.get())
}

/// Run `f` with this thread's f32 GEMMs on the `gemm` crate (what `JOULEBENCH_GEMM=crate` does
/// for a whole process; GEMMs a rayon worker runs for `f` follow the process setting). The
/// previous setting is restored after.
pub fn with_gemm_crate<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&FORCE_GEMM_CRATE, f)
}

/// The GEMM with this module's conventions: f32 on `sgemm` where it runs, otherwise the
/// `gemm` crate's call (alpha = beta = 1, no conjugation).
///
/// # Safety
/// `dst` is valid for writes (and for reads when `read_dst`) of an `m x n` matrix at row stride
/// `dst_rs`, not aliasing the operands, whose spans `check_operands` accepted.
unsafe fn raw_gemm<T: Elem>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    dst_rs: usize,
    read_dst: bool,
    lhs: &Mat<'_, T>,
    rhs: &Mat<'_, T>,
    par: gemm::Parallelism,
) {
    if T::IS_F32 && sgemm_enabled() {
        let op = |m: &Mat<'_, T>| sgemm::Operand {
            ptr: m.data.as_ptr() as *const f32,
            rs: m.rs,
            cs: m.cs,
        };
        let parallel = !matches!(par, gemm::Parallelism::None);
        sgemm::sgemm(
            (m, n, k),
            dst as *mut f32,
            dst_rs,
            read_dst,
            op(lhs),
            op(rhs),
            parallel,
        );
        return;
    }
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        read_dst,
        lhs.data.as_ptr(),
        lhs.cs as isize,
        lhs.rs as isize,
        rhs.data.as_ptr(),
        rhs.cs as isize,
        rhs.rs as isize,
        T::one(),
        T::one(),
        false,
        false,
        false,
        par,
    )
}

#[cfg(test)]
pub(crate) mod tests_util {
    use candle_core::{DType, Device, Tensor};

    /// Deterministic values in [-1, 1) of the given shape (f32, CPU).
    pub fn rand(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// `a` equals `b` up to reassociation of `k`-term sums: |a - b| <= 2 k u max|b|, with u the
    /// unit roundoff of the dtype (Higham's gamma_k bound for a k-term dot product, the terms
    /// bounded by the output's scale). Different summation orders (GEMM blocking, im2col
    /// versus direct convolution) are the only expected difference.
    pub fn assert_close(a: &Tensor, b: &Tensor, k: usize, what: &str) {
        assert_eq!(a.dims(), b.dims(), "{what}: shapes");
        let u = match b.dtype() {
            DType::F64 => f64::EPSILON / 2.0,
            _ => f32::EPSILON as f64 / 2.0,
        };
        let a = a
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let b = b
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let scale = b.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-30);
        let tol = 2.0 * k.max(1) as f64 * u * scale;
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f64, f64::max);
        assert!(
            worst <= tol,
            "{what}: max |diff| {worst:e} > tolerance {tol:e} (k = {k}, scale {scale:e})"
        );
    }
}
