//! Branch-free f32 `exp` and `erf` for the kernels' element loops.
//!
//! libm's `expf` and `erff` are calls the compiler cannot vectorise: in the GPT step the GELU
//! backward (an `exp` per activation) and the attention softmax spent most of their time in
//! them. These are straight-line polynomials, so a loop over a slice compiles to SIMD.
//! Accuracy is stated and tested against f64 below: a few units in the last place, the same
//! order as libm's f32 functions.

/// `exp(x)` for f32, within 2 ulp of the correctly rounded result for `x` in
/// [-87.3, 88] (tested below); 0 below -87.3 (where exp is subnormal or underflows), and
/// `exp(88)` above 88 (the kernels only take exp of values <= 0).
///
/// Cephes' `expf`: `x = n ln 2 + r` with `n` the nearest integer to `x / ln 2` and `|r| <=
/// ln 2 / 2` (ln 2 in two parts so `r` is exact), `exp(r)` by its degree-7 minimax polynomial,
/// and `2^n` built in the exponent bits.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LO: f32 = -87.336_54; // ln(2^-126): below it the result is not a normal f32.
    const HI: f32 = 88.0;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // 0.693359375, 9 significant bits: n * LN2_HI is exact.
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(LO, HI);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let ni = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4 * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001201e-1, which is 0.5 in f32
    let er = p * (r * r) + r + 1.0;
    let scale = f32::from_bits(((ni + 127) << 23) as u32);
    if x < LO {
        0.0
    } else {
        er * scale
    }
}

/// erf for f32 as a rational function of x on [-4, 4] (the coefficients of Eigen's
/// `generic_fast_erf_float`, which TensorFlow's CPU GELU uses), clamped beyond, where erf is
/// +-1 to f32 precision. Within 5e-7 of libm's `erff` over the whole line (tested below).
#[inline(always)]
pub(crate) fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329_2e-3;
    q = x2 * q + -1.426_474e-2;
    p / q
}

/// `dst = exp(src - shift) * factor`: a softmax row from its logits, compiled for AVX-512,
/// AVX-512, AVX2+FMA and NEON beside the baseline.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
pub(crate) fn exp_shifted_scaled<T: super::Elem>(dst: &mut [T], src: &[T], shift: T, factor: T) {
    let src = &src[..dst.len()];
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = (x - shift).exp() * factor;
    }
}

/// `sum f(a[i], b[i])` in f64 over eight independent lanes (then the lanes and the tail), so
/// the loop vectorises; in f64 the order changes the result by far less than f32's rounding.
#[inline(always)]
pub(crate) fn lane_sum<T: super::Elem>(a: &[T], b: &[T], f: impl Fn(f64, f64) -> f64) -> f64 {
    const L: usize = 8;
    let b = &b[..a.len()];
    let mut acc = [0f64; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..L {
            acc[j] += f(x[j].to_f64(), y[j].to_f64());
        }
    }
    let tail: f64 = ra
        .iter()
        .zip(rb)
        .map(|(x, y)| f(x.to_f64(), y.to_f64()))
        .sum();
    acc.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Units in the last place between `a` and the f64 value `exact`, at `exact`'s f32 scale.
    fn ulps(a: f32, exact: f64) -> f64 {
        let e = exact as f32;
        let ulp = (f32::from_bits(e.to_bits() + 1) - e) as f64;
        (a as f64 - exact).abs() / ulp
    }

    #[test]
    fn exp_is_within_2_ulp_of_f64_over_its_range() {
        let mut worst = (0f64, 0f32);
        let n = 2_000_000;
        for i in 0..=n {
            let x = -87.3 + (88.0 + 87.3) * i as f32 / n as f32;
            let u = ulps(exp_f32(x), (x as f64).exp());
            if u > worst.0 {
                worst = (u, x);
            }
        }
        assert!(worst.0 <= 2.0, "{} ulp at x = {}", worst.0, worst.1);
        // Near 0, where the softmax and GELU arguments mostly are: every 97th f32 with
        // magnitude in [4.7e-10, 1], both signs.
        for bits in (0x3000_0000u32..=0x3f80_0000).step_by(97) {
            for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                let u = ulps(exp_f32(x), (x as f64).exp());
                assert!(u <= 2.0, "{u} ulp at x = {x}");
            }
        }
    }

    #[test]
    fn exp_edges() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(-87.4), 0.0);
        assert!(exp_f32(-87.3) > 0.0 && exp_f32(-87.3).is_normal());
        assert!((exp_f32(1.0) - std::f32::consts::E).abs() <= f32::EPSILON * 3.0);
        assert_eq!(exp_f32(200.0), exp_f32(88.0));
        assert!(exp_f32(88.0).is_finite());
    }

    #[test]
    fn erf_is_within_f32_rounding_of_libm() {
        let mut worst = 0f32;
        for i in -100_000..=100_000 {
            let x = i as f32 * 1e-4; // [-10, 10]
            worst = worst.max((erf_f32(x) - libm::erff(x)).abs());
        }
        assert!(worst <= 5e-7, "max |fast_erf - erff| = {worst:e}");
        assert_eq!(erf_f32(0.0), 0.0);
        // Beyond the clamp at 4 it stays within 5e-7 of +-1 (erf(4) = 1 - 1.5e-8).
        assert!((erf_f32(f32::INFINITY) - 1.0).abs() <= 5e-7);
        assert!((erf_f32(-f32::INFINITY) + 1.0).abs() <= 5e-7);
        assert_eq!(erf_f32(-1.5), -erf_f32(1.5));
    }
}
