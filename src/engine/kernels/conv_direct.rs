//! Direct convolution in f32 on x86-64 with AVX2 + FMA: no im2col buffer, no GEMM packing.
//!
//! For stride 1, each input channel is copied once into a zero-padded plane `(h + 2 ph) x w2`
//! (`w2 = w + 2 pw`), and outputs are computed at the flattened positions `t = oy w2 + ox` for
//! every `ox < w2`: the input an output needs for kernel offset `(ki, kj)` is then the padded
//! plane read at `t + ki w2 + kj`, the same shift for every `t`. So the forward pass is a GEMM
//! `Y[o, t] = sum_kk W[o, kk] P[offs[kk] + t]` (kk = (c, ki, kj), `offs[kk] = c ps + ki w2 +
//! kj`) whose right-hand side is never materialised: the micro-kernel loads 16 consecutive
//! positions of the plane at each offset and broadcasts 6 weights into 12 accumulators. The
//! `w2 - ow` positions at the end of each output row are computed and dropped (they wrap into
//! the next row); the plan is used only where they are a small share of the work
//! ([`Plan::new`]).
//!
//! At stride `s > 1` the padded plane is split into `s^2` phase planes (every `s`-th row and
//! column from each start), and the input an output needs for `(ki, kj)` is phase
//! `(ki % s, kj % s)` shifted by `(ki / s, kj / s)`: the same micro-kernel, other offsets.
//!
//! Backward: the input gradient of a stride-1 convolution is the stride-1 convolution of the
//! output gradient, padded by `kh - 1 - ph` and `kw - 1 - pw`, with the kernel flipped in both
//! spatial axes and its channel axes swapped: the same micro-kernel. At stride `s > 1` each
//! phase plane's gradient is such a stride-1 convolution through that phase's kernel entries
//! ([`PhaseGrad`]). The kernel gradient
//! `dW[o, kk] = sum_t G[o, t] P[offs[kk] + t]` (G the output gradient laid out at the same
//! flattened positions, zero where outputs were dropped) is a second micro-kernel that keeps
//! 2 x 6 vector accumulators over `t` and adds their horizontal sums.
//!
//! The arithmetic is the same function as `conv`'s im2col + GEMM path, summed in another
//! order (fused multiply-adds over kk, lanes of 8 positions for dW); `conv`'s tests compare
//! both against candle's own convolution and against each other.

use super::{row_sum, samples_per_split};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Output positions one micro-kernel tile computes: 2 AVX vectors of 8 f32.
const TILE_T: usize = 16;
/// Output channels one forward tile computes: 6 x 2 = 12 accumulators, plus 2 input vectors
/// and a broadcast weight, fit the 16 AVX registers without a spill (4 x 3 needs all 16 and
/// LLVM spills an accumulator to the stack on every step).
const TILE_O: usize = 6;
/// The narrower forward tile for what is left of the output channels.
const TILE_O_REST: usize = 4;
/// The weight gradient's tile: 2 output channels x 6 kernel entries (12 accumulators,
/// 2 gradient vectors, 1 input vector).
const GRAD_O: usize = 2;
const GRAD_K: usize = 6;
/// Largest share of dropped positions (`w2 - ow` per row, and the round-up to a whole tile)
/// the direct path accepts; above it the im2col path does less work. 28 x 28, 14 x 14 and
/// 7 x 7 planes with a 3 x 3 kernel ('same') drop 7.5 %, 12.5 % and 23 % (at 7 x 7 the two
/// paths are even in `cargo bench --bench ops -- conv/`); a 5 x 5 kernel on 7 x 7 would drop
/// 39 % and stays im2col.
pub(super) const MAX_DROPPED_SHARE: f64 = 0.25;

/// The geometry of one direct convolution: `c` input channels of `h x w`, `o` outputs,
/// a `kh x kw` kernel at stride `s` with padding `ph`, `pw`.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    c: usize,
    o: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    ph: usize,
    pw: usize,
    s: usize,
    oh: usize,
    ow: usize,
    /// Rows of one phase plane: the padded height over the stride, rounded up.
    hq: usize,
    /// Row width of a phase plane and of the flattened outputs: the padded width over the
    /// stride, rounded up.
    rw: usize,
    /// One phase plane, hq rw.
    phase_len: usize,
    /// One input channel's planes: s^2 phases.
    ps: usize,
    /// Positions computed per output plane: oh rw rounded up to a whole tile.
    lp: usize,
    /// Padded-input buffer length: every read of a tile stays inside it.
    p_len: usize,
    /// Per kernel entry kk = (ci, ki, kj): where its reads start in the padded input.
    offs: Vec<usize>,
    /// The share of dropped positions this plan was allowed (its input gradient's plan gets
    /// the same).
    max_dropped: f64,
}

impl Plan {
    /// The plan for a convolution at stride `s`, or `None` where the direct path does not
    /// apply (not x86-64 with AVX2 and FMA, padding as wide as the kernel, or a larger share
    /// of dropped positions than `max_dropped`: see `MAX_DROPPED_SHARE`).
    ///
    /// At stride `s > 1` the padded input is split into `s^2` phase planes, phase `(a, b)`
    /// holding the padded pixels `(s y + a, s x + b)` at `(y, x)`: the input that output
    /// `(oy, ox)` needs for kernel offset `(ki, kj)` is phase `(ki % s, kj % s)` at
    /// `(oy + ki / s, ox + kj / s)`, again one constant shift per kernel entry from the
    /// flattened position `oy rw + ox`. At `s = 1` there is one phase, the padded plane.
    pub(super) fn new(
        c: usize,
        o: usize,
        (h, w): (usize, usize),
        (kh, kw): (usize, usize),
        (ph, pw): (usize, usize),
        s: usize,
        max_dropped: f64,
    ) -> Option<Self> {
        if !available() || c == 0 || o == 0 || kh == 0 || kw == 0 || s == 0 {
            return None;
        }
        if ph >= kh || pw >= kw {
            return None;
        }
        let (h2, w2) = (h + 2 * ph, w + 2 * pw);
        if h2 < kh || w2 < kw {
            return None;
        }
        let (oh, ow) = ((h2 - kh) / s + 1, (w2 - kw) / s + 1);
        let (hq, rw) = (h2.div_ceil(s), w2.div_ceil(s));
        let lp = (oh * rw).div_ceil(TILE_T) * TILE_T;
        if 1.0 - (oh * ow) as f64 / lp as f64 > max_dropped {
            return None;
        }
        let phase_len = hq * rw;
        let ps = s * s * phase_len;
        let mut offs = Vec::with_capacity(c * kh * kw);
        for ci in 0..c {
            for ki in 0..kh {
                for kj in 0..kw {
                    let phase = (ki % s) * s + kj % s;
                    offs.push(ci * ps + phase * phase_len + (ki / s) * rw + kj / s);
                }
            }
        }
        let p_len = offs.iter().max().copied().unwrap_or(0) + lp;
        Some(Self {
            c,
            o,
            h,
            w,
            kh,
            kw,
            ph,
            pw,
            s,
            oh,
            ow,
            hq,
            rw,
            phase_len,
            ps,
            lp,
            p_len,
            offs,
            max_dropped,
        })
    }

    /// Whether the backward pass takes the direct kernel for the input gradient too (else
    /// [`backward`] returns `None` when asked for it).
    pub(super) fn input_grad_applies(&self) -> bool {
        if self.s == 1 {
            self.transposed(self.max_dropped).is_some()
        } else {
            PhaseGrad::applies(self)
        }
    }

    /// Whether phase `(a, b)` is read by some kernel entry.
    fn phase_used(&self, a: usize, b: usize) -> bool {
        a < self.kh && b < self.kw
    }

    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// The plan of the input gradient at stride 1: a convolution of the output gradient (`o`
    /// channels of `oh x ow`) back to `c` channels of `h x w`. (At stride > 1 the input
    /// gradient is computed phase by phase: [`PhaseGrad`].)
    fn transposed(&self, max_dropped: f64) -> Option<Self> {
        if self.s != 1 {
            return None;
        }
        let t = Self::new(
            self.o,
            self.c,
            (self.oh, self.ow),
            (self.kh, self.kw),
            (self.kh - 1 - self.ph, self.kw - 1 - self.pw),
            1,
            max_dropped,
        )?;
        (t.oh == self.h && t.ow == self.w).then_some(t)
    }

    /// Copy one sample `(c, h, w)` into the phase planes of `p` (whose padding is zero and
    /// stays zero: only the interior is written; phases no kernel entry reads are skipped).
    fn pad_into(&self, x: &[f32], p: &mut [f32]) {
        let s = self.s;
        for ci in 0..self.c {
            for iy in 0..self.h {
                let src = &x[(ci * self.h + iy) * self.w..][..self.w];
                let py = iy + self.ph;
                let (a, y) = (py % s, py / s);
                for b in 0..s {
                    if !self.phase_used(a, b) {
                        continue;
                    }
                    let at = ci * self.ps + (a * s + b) * self.phase_len + y * self.rw;
                    if s == 1 {
                        p[at + self.pw..][..self.w].copy_from_slice(src);
                        continue;
                    }
                    // The inputs ix with (ix + pw) % s == b, at (ix + pw) / s.
                    let ix0 = (b + s - self.pw % s) % s;
                    for ix in (ix0..self.w).step_by(s) {
                        p[at + (ix + self.pw) / s] = src[ix];
                    }
                }
            }
        }
    }

    /// `y[oi, oy, ox] = yp[oi, oy rw + ox] + bias[oi]` for the kept positions: every element
    /// of `y` (o oh ow of them) is written, so `y` may start uninitialised.
    fn unpad(&self, yp: &[f32], bias: Option<&[f32]>, y: &mut [MaybeUninit<f32>]) {
        for oi in 0..self.o {
            let b = bias.map_or(0.0, |b| b[oi]);
            for oy in 0..self.oh {
                let src = &yp[oi * self.lp + oy * self.rw..][..self.ow];
                let dst = &mut y[(oi * self.oh + oy) * self.ow..][..self.ow];
                for (d, &s) in dst.iter_mut().zip(src) {
                    d.write(s + b);
                }
            }
        }
    }

    /// `db[oi] += sum of dy[oi, :, :]` for one sample (`conv::row_sum`'s order).
    fn add_bias_grad(&self, dy: &[f32], db: &mut [f32]) {
        for (d, row) in db.iter_mut().zip(dy.chunks_exact(self.oh * self.ow)) {
            *d += row_sum(row);
        }
    }

    /// The output gradient `(o, oh, ow)` at the flattened positions (`g` holds zeros at the
    /// dropped ones, which are never written).
    fn spread(&self, dy: &[f32], g: &mut [f32]) {
        for oi in 0..self.o {
            for oy in 0..self.oh {
                let src = &dy[(oi * self.oh + oy) * self.ow..][..self.ow];
                g[oi * self.lp + oy * self.rw..][..self.ow].copy_from_slice(src);
            }
        }
    }
}

/// Whether this CPU runs the direct path (and `sgemm`): AVX2 and FMA (checked once).
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Weights `(o, kk)` as the micro-kernel reads them: `[kk][o]`.
fn pack_kk_major(w: &[f32], o: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0.0; o * k];
    for oi in 0..o {
        for kk in 0..k {
            out[kk * o + oi] = w[oi * k + kk];
        }
    }
    out
}

/// The input gradient's weights, `[kk'][c]` with kk' = (oi, ki', kj'):
/// `W[oi, ci, kh - 1 - ki', kw - 1 - kj']`.
fn pack_flipped(w: &[f32], p: &Plan) -> Vec<f32> {
    let (kh, kw, c) = (p.kh, p.kw, p.c);
    let mut out = vec![0.0; p.o * c * kh * kw];
    for oi in 0..p.o {
        for ci in 0..c {
            for ki in 0..kh {
                for kj in 0..kw {
                    let kk2 = (oi * kh + (kh - 1 - ki)) * kw + (kw - 1 - kj);
                    out[kk2 * c + ci] = w[((oi * c + ci) * kh + ki) * kw + kj];
                }
            }
        }
    }
    out
}

/// The input gradient of a convolution at stride `s > 1`, phase by phase. The gradient of
/// phase plane `(a, b)` ([`Plan::new`]) is
/// `dQ_ab[c, y, x] = sum_{o, m, n} W[o, c, a + s m, b + s n] G[o, y - m, x - n]`, with G the
/// output gradient (zero outside `oh x ow`): a stride-1 convolution of G zero-padded by `pt`
/// rows above and `pl` columns to the left, through that phase's kernel entries. So the
/// forward micro-kernel runs once per phase over one padded copy of G, with its own offsets
/// and weights, and each input pixel then reads its gradient from its phase.
struct PhaseGrad {
    pt: usize,
    pl: usize,
    /// Row width of the padded output gradient and of the phase outputs.
    wg: usize,
    /// One padded output-gradient plane: (hq + pt) wg.
    gs: usize,
    /// Positions computed per phase plane: hq wg rounded up to a whole tile.
    lq: usize,
    /// Padded output-gradient buffer length: every read of a tile stays inside it.
    g_len: usize,
    phases: Vec<Phase>,
    /// Per phase `a s + b`: its index in `phases`, or `None` where no kernel entry falls in
    /// it (the stride skips those pixels: their gradient is zero).
    slot: Vec<Option<usize>>,
}

/// One phase's reads of the padded output gradient and its weights, `[kk'][c]` with
/// kk' = (oi, m, n): `W[oi, ci, a + s m, b + s n]`.
struct Phase {
    offs: Vec<usize>,
    w: Vec<f32>,
}

impl PhaseGrad {
    /// The phases of `plan` (stride > 1) with kernel `w`, or `None` where they would compute
    /// a larger share of dropped positions than the plan allows.
    fn new(plan: &Plan, w: &[f32]) -> Option<Self> {
        if !Self::applies(plan) {
            return None;
        }
        let (s, c, kh, kw) = (plan.s, plan.c, plan.kh, plan.kw);
        let (pt, pl, wg, lq) = Self::geometry(plan);
        let gs = (plan.hq + pt) * wg;
        let mut phases = Vec::new();
        let mut slot = vec![None; s * s];
        for a in 0..s.min(kh) {
            for b in 0..s.min(kw) {
                let (ma, mb) = ((kh - a).div_ceil(s), (kw - b).div_ceil(s));
                let mut offs = Vec::with_capacity(plan.o * ma * mb);
                let mut wp = Vec::with_capacity(plan.o * ma * mb * c);
                for oi in 0..plan.o {
                    for m in 0..ma {
                        for n in 0..mb {
                            offs.push(oi * gs + (pt - m) * wg + pl - n);
                            let (ki, kj) = (a + s * m, b + s * n);
                            wp.extend((0..c).map(|ci| w[((oi * c + ci) * kh + ki) * kw + kj]));
                        }
                    }
                }
                slot[a * s + b] = Some(phases.len());
                phases.push(Phase { offs, w: wp });
            }
        }
        let g_len = (plan.o - 1) * gs + pt * wg + pl + lq;
        Some(Self {
            pt,
            pl,
            wg,
            gs,
            lq,
            g_len,
            phases,
            slot,
        })
    }

    /// `(pt, pl, wg, lq)`: the output gradient's padding above and to the left, its padded
    /// row width, the positions computed per phase plane.
    fn geometry(plan: &Plan) -> (usize, usize, usize, usize) {
        let (pt, pl) = (plan.kh.div_ceil(plan.s) - 1, plan.kw.div_ceil(plan.s) - 1);
        let wg = plan.rw + pl;
        (pt, pl, wg, (plan.hq * wg).div_ceil(TILE_T) * TILE_T)
    }

    /// Whether the phases drop no larger share of their computed positions than `plan`
    /// allows (the pixels of phases with kernel entries are the kept positions).
    fn applies(plan: &Plan) -> bool {
        let (s, lq) = (plan.s, Self::geometry(plan).3);
        let phases = plan.kh.min(s) * plan.kw.min(s);
        let rows = (0..plan.h)
            .filter(|iy| (iy + plan.ph) % s < plan.kh)
            .count();
        let cols = (0..plan.w)
            .filter(|ix| (ix + plan.pw) % s < plan.kw)
            .count();
        1.0 - (rows * cols) as f64 / (phases * lq) as f64 <= plan.max_dropped
    }

    /// Buffer lengths one split needs: the padded output gradient and the phase outputs.
    fn buffers(&self, plan: &Plan) -> (usize, usize) {
        (self.g_len, self.phases.len() * plan.c * self.lq)
    }

    /// One sample's input gradient `dx (c, h, w)` from its output gradient `dy (o, oh, ow)`;
    /// `q` is the padded output gradient (padding zero, only the interior is written) and
    /// `dq` the phase outputs, both of `buffers`' lengths. Every element of `dx` is written.
    fn sample(
        &self,
        plan: &Plan,
        dy: &[f32],
        q: &mut [f32],
        dq: &mut [f32],
        dx: &mut [MaybeUninit<f32>],
    ) {
        for oi in 0..plan.o {
            for oy in 0..plan.oh {
                let src = &dy[(oi * plan.oh + oy) * plan.ow..][..plan.ow];
                q[oi * self.gs + (oy + self.pt) * self.wg + self.pl..][..plan.ow]
                    .copy_from_slice(src);
            }
        }
        let (c, lq) = (plan.c, self.lq);
        assert!(q.len() >= self.g_len && dq.len() >= self.phases.len() * c * lq);
        for (k, phase) in self.phases.iter().enumerate() {
            assert!(phase.w.len() >= phase.offs.len() * c);
            // SAFETY: `available()` (checked by `Plan::new`) says the CPU has AVX2 and FMA;
            // every offset is at most (o - 1) gs + pt wg + pl, so offset + lq <= g_len; the
            // phase writes c lq outputs inside `dq` (asserted above).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                x86::forward(q, &phase.offs, &phase.w, c, lq, &mut dq[k * c * lq..])
            };
        }
        let s = plan.s;
        for ci in 0..c {
            for iy in 0..plan.h {
                let py = iy + plan.ph;
                let (a, y) = (py % s, py / s);
                let row = &mut dx[(ci * plan.h + iy) * plan.w..][..plan.w];
                for (ix, d) in row.iter_mut().enumerate() {
                    let px = ix + plan.pw;
                    d.write(match self.slot[a * s + px % s] {
                        Some(k) => dq[(k * c + ci) * lq + y * self.wg + px / s],
                        None => 0.0,
                    });
                }
            }
        }
    }
}

/// How the backward pass computes the input gradient.
enum InputGrad {
    /// Stride 1: the flipped kernel over the padded output gradient, through its own plan.
    Flipped(Plan, Vec<f32>),
    /// Stride > 1: phase by phase.
    Phased(PhaseGrad),
}

/// One sample's forward through the plan: `p` holds the padded input, `yp` receives the
/// flattened outputs.
fn sample_forward(plan: &Plan, wp: &[f32], p: &[f32], yp: &mut [f32]) {
    assert!(p.len() >= plan.p_len && yp.len() >= plan.o * plan.lp);
    assert!(wp.len() >= plan.offs.len() * plan.o);
    // SAFETY: `available()` (checked by `Plan::new`) says the CPU has AVX2 and FMA; the
    // asserts above bound every read (max offset + lp <= p_len) and write (o lp).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        x86::forward(p, &plan.offs, wp, plan.o, plan.lp, yp)
    }
}

/// `conv2d(x, w) + b` for x (n, c, h, w) at stride 1 through `plan`.
pub(super) fn forward(x: &[f32], w: &[f32], b: &[f32], plan: &Plan, n: usize) -> Vec<f32> {
    let (chw, op) = (plan.c * plan.h * plan.w, plan.o * plan.oh * plan.ow);
    let wp = pack_kk_major(w, plan.o, plan.k());
    // Written in parallel by `unpad`, every element once: no zero fill first.
    let mut y: Vec<f32> = Vec::with_capacity(n * op);
    y.spare_capacity_mut()[..n * op]
        .par_chunks_mut(op)
        .zip(x.par_chunks(chw))
        .with_min_len(samples_per_split(n))
        .for_each_init(
            || (vec![0.0f32; plan.p_len], vec![0.0f32; plan.o * plan.lp]),
            |(p, yp), (yn, xn)| {
                plan.pad_into(xn, p);
                sample_forward(plan, &wp, p, yp);
                plan.unpad(yp, Some(b), yn);
            },
        );
    // SAFETY: the n chunks of `op` elements were each written in full by `unpad`.
    unsafe { y.set_len(n * op) };
    y
}

/// Per-split state of the backward pass.
struct Acc {
    dw: Vec<f32>,
    db: Vec<f32>,
    /// Padded input (for dW).
    p: Vec<f32>,
    /// Output gradient at the flattened positions (for dW).
    g: Vec<f32>,
    /// Padded output gradient and the flattened input gradient (for dX).
    q: Vec<f32>,
    xp: Vec<f32>,
}

/// The input gradient (when asked), the kernel gradient and the bias gradient of a stride-1
/// convolution through `plan`; `None` when the input gradient's own plan does not apply (the
/// caller then takes the im2col path for the whole backward).
pub(super) fn backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    plan: &Plan,
    n: usize,
    need_dx: bool,
) -> Option<Grads> {
    let dxg = match (need_dx, plan.s) {
        (false, _) => None,
        (true, 1) => Some(InputGrad::Flipped(
            plan.transposed(plan.max_dropped)?,
            pack_flipped(w, plan),
        )),
        (true, _) => Some(InputGrad::Phased(PhaseGrad::new(plan, w)?)),
    };
    let (k, o) = (plan.k(), plan.o);
    let (chw, op) = (plan.c * plan.h * plan.w, o * plan.oh * plan.ow);
    let (q_len, xp_len) = match &dxg {
        None => (0, 0),
        Some(InputGrad::Flipped(t, _)) => (t.p_len, t.o * t.lp),
        Some(InputGrad::Phased(pg)) => pg.buffers(plan),
    };
    let init = || Acc {
        dw: vec![0.0; o * k],
        db: vec![0.0; o],
        p: vec![0.0; plan.p_len],
        g: vec![0.0; o * plan.lp],
        q: vec![0.0; q_len],
        xp: vec![0.0; xp_len],
    };
    let sample = |mut acc: Acc, xn: &[f32], gn: &[f32], dxn: Option<&mut [MaybeUninit<f32>]>| {
        plan.pad_into(xn, &mut acc.p);
        plan.spread(gn, &mut acc.g);
        plan.add_bias_grad(gn, &mut acc.db);
        assert!(acc.p.len() >= plan.p_len && acc.g.len() >= o * plan.lp);
        // SAFETY: as in `sample_forward`; the kernel gradient reads g at o lp positions.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            x86::weight_grad(&acc.p, &plan.offs, &acc.g, o, plan.lp, &mut acc.dw)
        };
        match (dxn, dxg.as_ref()) {
            (Some(dxn), Some(InputGrad::Flipped(t, wf))) => {
                t.pad_into(gn, &mut acc.q);
                sample_forward(t, wf, &acc.q, &mut acc.xp);
                t.unpad(&acc.xp, None, dxn);
            }
            (Some(dxn), Some(InputGrad::Phased(pg))) => {
                pg.sample(plan, gn, &mut acc.q, &mut acc.xp, dxn)
            }
            _ => {}
        }
        acc
    };
    let merge = |mut a: Acc, b: Acc| {
        for (x, y) in a.dw.iter_mut().zip(&b.dw) {
            *x += *y;
        }
        for (x, y) in a.db.iter_mut().zip(&b.db) {
            *x += *y;
        }
        a
    };
    // Written in parallel by `unpad`, every element once: no zero fill first.
    let mut dx: Vec<f32> = Vec::with_capacity(if need_dx { n * chw } else { 0 });
    let acc = if need_dx {
        dx.spare_capacity_mut()[..n * chw]
            .par_chunks_mut(chw)
            .zip(x.par_chunks(chw).zip(dy.par_chunks(op)))
            .with_min_len(samples_per_split(n))
            .fold(init, |acc, (dxn, (xn, gn))| sample(acc, xn, gn, Some(dxn)))
            .reduce(init, merge)
    } else {
        x.par_chunks(chw)
            .zip(dy.par_chunks(op))
            .with_min_len(samples_per_split(n))
            .fold(init, |acc, (xn, gn)| sample(acc, xn, gn, None))
            .reduce(init, merge)
    };
    let dx = need_dx.then(|| {
        // SAFETY: the n chunks of chw elements were each written in full, by `unpad` (the
        // transposed plan's output is c x h x w: `Plan::transposed` checks it) or by
        // `PhaseGrad::sample`.
        unsafe { dx.set_len(n * chw) };
        dx
    });
    Some((dx, acc.dw, acc.db))
}

/// Input gradient (when asked), kernel gradient, bias gradient.
pub(super) type Grads = (Option<Vec<f32>>, Vec<f32>, Vec<f32>);

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{GRAD_K, GRAD_O, TILE_O, TILE_O_REST, TILE_T};
    use std::arch::x86_64::*;

    /// `y[oi lp + t] = sum_kk wp[kk o + oi] p[offs[kk] + t]` for oi < o, t < lp.
    ///
    /// # Safety
    /// AVX2 and FMA present; `lp` a multiple of `TILE_T`; `offs[kk] + lp <= p.len()`,
    /// `wp.len() >= offs.len() o`, `y.len() >= o lp`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn forward(
        p: &[f32],
        offs: &[usize],
        wp: &[f32],
        o: usize,
        lp: usize,
        y: &mut [f32],
    ) {
        let mut t0 = 0;
        while t0 < lp {
            let mut o0 = 0;
            while o0 < o {
                // Whole 6-wide tiles while what remains splits into them and 4-wide ones
                // (16 = 6 + 6 + 4, 32 = 6 x 4 + 4 x 2), then 4, then single channels.
                let rest = o - o0;
                o0 += if rest.is_multiple_of(TILE_O) || rest >= TILE_O + TILE_O_REST {
                    forward_tile::<TILE_O>(p, offs, wp, o, o0, t0, lp, y);
                    TILE_O
                } else if rest >= TILE_O_REST {
                    forward_tile::<TILE_O_REST>(p, offs, wp, o, o0, t0, lp, y);
                    TILE_O_REST
                } else {
                    forward_tile::<1>(p, offs, wp, o, o0, t0, lp, y);
                    1
                };
            }
            t0 += TILE_T;
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn forward_tile<const OT: usize>(
        p: &[f32],
        offs: &[usize],
        wp: &[f32],
        o: usize,
        o0: usize,
        t0: usize,
        lp: usize,
        y: &mut [f32],
    ) {
        let pp = p.as_ptr().add(t0);
        let mut wq = wp.as_ptr().add(o0);
        let mut acc = [[_mm256_setzero_ps(); 2]; OT];
        for &off in offs {
            let s = pp.add(off);
            let x0 = _mm256_loadu_ps(s);
            let x1 = _mm256_loadu_ps(s.add(8));
            for (i, a) in acc.iter_mut().enumerate() {
                let wb = _mm256_broadcast_ss(&*wq.add(i));
                a[0] = _mm256_fmadd_ps(wb, x0, a[0]);
                a[1] = _mm256_fmadd_ps(wb, x1, a[1]);
            }
            wq = wq.add(o);
        }
        for (i, a) in acc.iter().enumerate() {
            let d = y.as_mut_ptr().add((o0 + i) * lp + t0);
            _mm256_storeu_ps(d, a[0]);
            _mm256_storeu_ps(d.add(8), a[1]);
        }
    }

    /// `dw[oi k + kk] += sum_{t < lp} g[oi lp + t] p[offs[kk] + t]` (k = offs.len()).
    ///
    /// # Safety
    /// AVX2 and FMA present; `lp` a multiple of 8; `offs[kk] + lp <= p.len()`,
    /// `g.len() >= o lp`, `dw.len() >= o k`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weight_grad(
        p: &[f32],
        offs: &[usize],
        g: &[f32],
        o: usize,
        lp: usize,
        dw: &mut [f32],
    ) {
        let k = offs.len();
        let mut o0 = 0;
        while o0 < o {
            let full_o = o0 + GRAD_O <= o;
            let mut k0 = 0;
            while k0 < k {
                let full_k = k0 + GRAD_K <= k;
                match (full_o, full_k) {
                    (true, true) => grad_tile::<GRAD_O, GRAD_K>(p, offs, g, o0, k0, lp, dw),
                    (true, false) => grad_tile::<GRAD_O, 1>(p, offs, g, o0, k0, lp, dw),
                    (false, true) => grad_tile::<1, GRAD_K>(p, offs, g, o0, k0, lp, dw),
                    (false, false) => grad_tile::<1, 1>(p, offs, g, o0, k0, lp, dw),
                }
                k0 += if full_k { GRAD_K } else { 1 };
            }
            o0 += if full_o { GRAD_O } else { 1 };
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn grad_tile<const OT: usize, const KT: usize>(
        p: &[f32],
        offs: &[usize],
        g: &[f32],
        o0: usize,
        k0: usize,
        lp: usize,
        dw: &mut [f32],
    ) {
        let k = offs.len();
        let pb: [*const f32; KT] = std::array::from_fn(|j| p.as_ptr().add(offs[k0 + j]));
        let gb: [*const f32; OT] = std::array::from_fn(|i| g.as_ptr().add((o0 + i) * lp));
        let mut acc = [[_mm256_setzero_ps(); KT]; OT];
        let mut t = 0;
        while t < lp {
            let gv: [__m256; OT] = std::array::from_fn(|i| _mm256_loadu_ps(gb[i].add(t)));
            for j in 0..KT {
                let pv = _mm256_loadu_ps(pb[j].add(t));
                for i in 0..OT {
                    acc[i][j] = _mm256_fmadd_ps(gv[i], pv, acc[i][j]);
                }
            }
            t += 8;
        }
        for (i, row) in acc.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                *dw.get_unchecked_mut((o0 + i) * k + k0 + j) += hsum(v);
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}
