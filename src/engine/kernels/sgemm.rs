//! f32 GEMM on x86-64 with AVX2 + FMA: every f32 product of the kernels (dense layers,
//! attention, im2col convolutions) on CPUs that have both; the `gemm` crate keeps f64, other
//! CPUs, and `JOULEBENCH_GEMM=crate` (or `kernels::with_gemm_crate`) for A/B measurements.
//!
//! In isolation it runs the dense layers' thin shapes (768-2,048 rows, 64-512 columns and inner
//! dimension) at about the crate's rate (`cargo bench --bench ops -- gemm/`); in whole training
//! steps it was faster on the CNNs and at 2 threads (docs/results.md, "One pool, one GEMM").
//! The textbook blocked GEMM, cut down:
//!
//! - the right-hand side is packed, `KC` inner indices by at most `NC` columns at a time, into
//!   panels of `NR = 16` columns (two AVX vectors), zero-padded to whole panels; the buffer is
//!   kept per thread between calls;
//! - the left-hand side is not packed: the micro-kernel broadcasts its 6 rows straight from
//!   memory at any strides (row-major `x`, or the column-major `dy^T` of a weight gradient,
//!   whose 6 values at one inner index are adjacent);
//! - the micro-kernel keeps a 6 x 16 tile of the output in 12 vector registers (the layout
//!   `conv_direct` uses) over the whole `KC` block, then writes or adds it;
//! - the parallel split is by blocks of whole rows, or of whole columns when the output is
//!   wider than tall (an im2col product), so every output element is summed in the same order
//!   whatever the thread count (a test checks bit for bit).
//!
//! Every output element is `sum_p a[i, p] b[p, j]` in increasing `p`, one fused multiply-add
//! per term, `KC` terms at a time added to what the earlier blocks left: the same function as
//! the `gemm` crate's, summed in another order (its test compares with an f64 product).

use rayon::prelude::*;

/// Output rows of one micro-kernel tile (broadcast operands).
const MR: usize = 6;
/// Output columns of one tile: two AVX vectors of 8 f32.
const NR: usize = 16;
/// Inner-dimension block: a packed 256 x 16 panel is 16 KiB, half an L1 data cache.
const KC: usize = 256;
/// Most output rows in one parallel block (a multiple of `MR`): its 48 x 256 left-hand rows
/// (48 KiB) stay in L2 while every panel passes over them.
const MC: usize = 48;
/// Most columns in one packed block: 256 x 256 f32 is 256 KiB, half of a Zen 3 L2, and a
/// convolution's im2col product (columns = every output position) packs no more than that.
const NC: usize = 256;

/// Whether this CPU runs this GEMM: AVX2 and FMA, as for the direct convolution.
pub(super) fn available() -> bool {
    super::conv_direct::available()
}

/// A strided f32 operand: element `(r, c)` is at `ptr + r rs + c cs`.
#[derive(Clone, Copy)]
pub(super) struct Operand {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
}

// SAFETY: an `Operand` is only read through, and `sgemm`'s contract keeps its span readable and
// unwritten for the whole call, during which the rayon tasks that share it run.
unsafe impl Send for Operand {}
unsafe impl Sync for Operand {}

thread_local! {
    /// The packed right-hand side, reused between calls on this thread.
    static PACKED: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `dst (m x n, row stride ldc, unit column stride) (+)= a (m x k) b (k x n)`, adding to `dst`
/// when `accumulate`, writing every element once otherwise. Split over the rayon pool when
/// `parallel`: by blocks of rows when `m >= n` (each block of `b` packed once, shared), by
/// blocks of columns otherwise (each packed by the task that uses it), so no block is packed
/// twice.
///
/// # Safety
/// `available()`; `m, n, k >= 1`; `a` and `b` readable over their `m x k` and `k x n` spans;
/// `dst` writable (and readable when `accumulate`) over its `m x n` span at stride `ldc`, not
/// overlapping `a` or `b`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn sgemm(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    ldc: usize,
    accumulate: bool,
    a: Operand,
    b: Operand,
    parallel: bool,
) {
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let out = Out {
        addr: dst as usize,
        ldc,
        accumulate,
    };
    if threads == 1 || m >= n {
        // Several row blocks per thread, so a straggler is absorbed; whole tiles per block.
        let mc = if threads > 1 {
            m.div_ceil(4 * threads).next_multiple_of(MR).min(MC)
        } else {
            MC
        };
        let blocks = m.div_ceil(mc);
        with_buffer(|buf| {
            for j0 in (0..n).step_by(NC) {
                let nc = NC.min(n - j0);
                for pc in (0..k).step_by(KC) {
                    let kc = KC.min(k - pc);
                    let block = pack(b, (pc, kc), (j0, nc), buf) as usize;
                    let rows = |ib: usize| {
                        let i0 = ib * mc;
                        let i1 = (i0 + mc).min(m);
                        times_block(a, (i0, i1), (pc, kc), (j0, nc), block, out);
                    };
                    if threads > 1 && blocks > 1 {
                        (0..blocks).into_par_iter().for_each(rows);
                    } else {
                        (0..blocks).for_each(rows);
                    }
                }
            }
        });
    } else {
        let ncp = n.div_ceil(4 * threads).next_multiple_of(NR).min(NC);
        (0..n.div_ceil(ncp)).into_par_iter().for_each(|jb| {
            let j0 = jb * ncp;
            let nc = ncp.min(n - j0);
            with_buffer(|buf| {
                for pc in (0..k).step_by(KC) {
                    let kc = KC.min(k - pc);
                    let block = pack(b, (pc, kc), (j0, nc), buf) as usize;
                    times_block(a, (0, m), (pc, kc), (j0, nc), block, out);
                }
            })
        });
    }
}

/// Where the output goes (an address: raw pointers are not `Send`).
#[derive(Clone, Copy)]
struct Out {
    addr: usize,
    ldc: usize,
    accumulate: bool,
}

/// `f` with this thread's packing buffer. Taken out of the thread's slot, not borrowed: a
/// rayon worker that runs another GEMM while it waits finds the slot empty and allocates.
fn with_buffer<R>(f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
    let mut buf = PACKED.with(|p| p.take());
    let r = f(&mut buf);
    PACKED.with(|p| p.set(buf));
    r
}

/// Output rows `i0..i1`, columns `j0..j0 + nc`, plus `a[i0..i1, pc..pc + kc]` times the packed
/// block at address `block` (inner indices `pc..pc + kc`): added to the output when
/// `out.accumulate` or `pc > 0`, written otherwise.
///
/// # Safety
/// As `sgemm`'s; `block` is `pack`'s output for these indices.
unsafe fn times_block(
    a: Operand,
    (i0, i1): (usize, usize),
    (pc, kc): (usize, usize),
    (j0, nc): (usize, usize),
    block: usize,
    out: Out,
) {
    let add = out.accumulate || pc > 0;
    for jp in 0..nc.div_ceil(NR) {
        let cols = NR.min(nc - jp * NR);
        let panel = (block as *const f32).add(jp * kc * NR);
        let mut i = i0;
        while i < i1 {
            let h = MR.min(i1 - i);
            x86::tile(
                kc,
                a.ptr.add(i * a.rs + pc * a.cs),
                (a.rs, a.cs),
                h,
                panel,
                (out.addr as *mut f32).add(i * out.ldc + j0 + jp * NR),
                out.ldc,
                cols,
                add,
            );
            i += MR;
        }
    }
}

/// Rows `pc..pc + kc`, columns `j0..j0 + nc` of `b` into `buf` as panels of `NR` columns:
/// panel `jp`, element `(p, jj)` at `jp kc NR + p NR + jj`; columns past `nc` are zero.
/// Returns the block's start.
///
/// # Safety
/// `b` readable over those rows and columns.
unsafe fn pack(
    b: Operand,
    (pc, kc): (usize, usize),
    (j0, nc): (usize, usize),
    buf: &mut Vec<f32>,
) -> *const f32 {
    let len = kc * nc.div_ceil(NR) * NR;
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    for (jp, panel) in buf[..len].chunks_exact_mut(kc * NR).enumerate() {
        let cols = NR.min(nc - jp * NR);
        let origin = b.ptr.add(pc * b.rs + (j0 + jp * NR) * b.cs);
        if b.cs == 1 {
            // A whole panel row is a fixed-size copy (two vector moves, inlined): a
            // `copy_from_slice` of a run-time length is a `memmove` call per 64 bytes.
            for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
                let src = origin.add(p * b.rs);
                if cols == NR {
                    std::ptr::copy_nonoverlapping(src, row.as_mut_ptr(), NR);
                } else {
                    row[..cols].copy_from_slice(std::slice::from_raw_parts(src, cols));
                    row[cols..].fill(0.0);
                }
            }
        } else {
            if cols < NR {
                panel.fill(0.0);
            }
            for jj in 0..cols {
                let col = origin.add(jj * b.cs);
                for p in 0..kc {
                    *panel.get_unchecked_mut(p * NR + jj) = *col.add(p * b.rs);
                }
            }
        }
    }
    buf.as_ptr()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// One `h x cols` output tile (`h <= MR`, `cols <= NR`): `c[i, j] (+)= sum_{p < kc}
    /// a[i, p] panel[p NR + j]`. Rows past `h` repeat row `h - 1` and are not stored.
    ///
    /// # Safety
    /// AVX2 and FMA present; `a` readable at `i rs + p cs` for `i < h`, `p < kc`; `panel`
    /// readable over `kc NR`; `c` writable (readable when `add`) at `i ldc + j`, `i < h`,
    /// `j < cols`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile(
        kc: usize,
        a: *const f32,
        (rs, cs): (usize, usize),
        h: usize,
        panel: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        add: bool,
    ) {
        let mut rows = [a; MR];
        for (i, r) in rows.iter_mut().enumerate() {
            *r = a.add(i.min(h - 1) * rs);
        }
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        let mut bq = panel;
        for p in 0..kc {
            let b0 = _mm256_loadu_ps(bq);
            let b1 = _mm256_loadu_ps(bq.add(8));
            let off = p * cs;
            for (r, v) in rows.iter().zip(acc.iter_mut()) {
                let ab = _mm256_broadcast_ss(&*r.add(off));
                v[0] = _mm256_fmadd_ps(ab, b0, v[0]);
                v[1] = _mm256_fmadd_ps(ab, b1, v[1]);
            }
            bq = bq.add(NR);
        }
        if cols == NR {
            for (i, v) in acc.iter().take(h).enumerate() {
                let d = c.add(i * ldc);
                let (mut v0, mut v1) = (v[0], v[1]);
                if add {
                    v0 = _mm256_add_ps(_mm256_loadu_ps(d), v0);
                    v1 = _mm256_add_ps(_mm256_loadu_ps(d.add(8)), v1);
                }
                _mm256_storeu_ps(d, v0);
                _mm256_storeu_ps(d.add(8), v1);
            }
        } else {
            let mut t = [0f32; NR];
            for (i, v) in acc.iter().take(h).enumerate() {
                _mm256_storeu_ps(t.as_mut_ptr(), v[0]);
                _mm256_storeu_ps(t.as_mut_ptr().add(8), v[1]);
                let d = c.add(i * ldc);
                for (j, &x) in t.iter().take(cols).enumerate() {
                    *d.add(j) = if add { *d.add(j) + x } else { x };
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    /// Never called: `available()` is false off x86-64.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile(
        _: usize,
        _: *const f32,
        _: (usize, usize),
        _: usize,
        _: *const f32,
        _: *mut f32,
        _: usize,
        _: usize,
        _: bool,
    ) {
        unreachable!("sgemm without AVX2 + FMA")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// The product in f64, the reference both orders are within rounding of.
    fn reference(
        (m, n, k): (usize, usize, usize),
        a: &[f32],
        (ars, acs): (usize, usize),
        b: &[f32],
        (brs, bcs): (usize, usize),
    ) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| a[i * ars + p * acs] as f64 * b[p * brs + j * bcs] as f64)
                    .sum();
            }
        }
        c
    }

    #[test]
    fn matches_the_product_at_every_layout_and_edge() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX2 + FMA (sgemm is not used here)");
            return;
        }
        // (m, n, k): tiles and blocks whole and ragged, k across several KC blocks, the
        // dense layers' and attention's shapes, single rows and columns.
        let shapes = [
            (1, 1, 1),
            (5, 7, 3),
            (6, 16, 8),
            (7, 17, 9),
            (13, 33, 300),
            (64, 64, 32),
            (65, 65, 65),
            (96, 128, 128),
            (50, 48, 513),
            (128, 130, 770),
            // Wider than one packed block (NC), split by columns when parallel.
            (16, 600, 40),
            (300, 270, 20),
        ];
        // A 3-thread pool: both parallel splits (rows when m >= n, columns otherwise) run
        // whatever this machine's core count.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("pool");
        for (idx, &(m, n, k)) in shapes.iter().enumerate() {
            let a = values(m * k, idx as u64 + 1);
            let b = values(k * n, idx as u64 + 100);
            let init = values(m * n, idx as u64 + 200);
            // Left: row-major and column-major; right: row-major and column-major.
            for (al, bl) in [
                ((k, 1), (n, 1)),
                ((1, m), (n, 1)),
                ((k, 1), (1, k)),
                ((1, m), (1, k)),
            ] {
                let want = reference((m, n, k), &a, al, &b, bl);
                let mut serial: Vec<f32> = Vec::new();
                for (accumulate, parallel) in [(false, false), (true, false), (false, true)] {
                    // A destination with a wider row stride than n: the gaps stay untouched.
                    let ldc = n + 3;
                    let mut c = vec![f32::NAN; m * ldc];
                    for i in 0..m {
                        c[i * ldc..i * ldc + n].copy_from_slice(&init[i * n..(i + 1) * n]);
                    }
                    let (ap, bp) = (a.as_ptr() as usize, b.as_ptr() as usize);
                    let cp = c.as_mut_ptr() as usize;
                    pool.install(|| unsafe {
                        sgemm(
                            (m, n, k),
                            cp as *mut f32,
                            ldc,
                            accumulate,
                            Operand {
                                ptr: ap as *const f32,
                                rs: al.0,
                                cs: al.1,
                            },
                            Operand {
                                ptr: bp as *const f32,
                                rs: bl.0,
                                cs: bl.1,
                            },
                            parallel,
                        );
                    });
                    for i in 0..m {
                        for j in 0..n {
                            let w = want[i * n + j]
                                + if accumulate {
                                    init[i * n + j] as f64
                                } else {
                                    0.0
                                };
                            let got = c[i * ldc + j] as f64;
                            // |error| of an f32 dot product of k terms in [-1, 1).
                            let tol = 1e-6 * (k as f64 + 1.0) + 1e-6;
                            assert!(
                                (got - w).abs() <= tol,
                                "{m}x{n}x{k} a{al:?} b{bl:?} acc {accumulate} par {parallel} \
                                 at ({i}, {j}): {got} vs {w}"
                            );
                        }
                        for j in n..ldc {
                            assert!(c[i * ldc + j].is_nan(), "row gap written at ({i}, {j})");
                        }
                    }
                    // The same sums in the same order whatever the split: bit for bit.
                    let bits: Vec<u32> = c.iter().map(|v| v.to_bits()).collect();
                    if !accumulate && !parallel {
                        serial = c.clone();
                    } else if parallel {
                        let want: Vec<u32> = serial.iter().map(|v| v.to_bits()).collect();
                        assert_eq!(bits, want, "{m}x{n}x{k}: parallel differs from serial");
                    }
                }
            }
        }
    }
}
