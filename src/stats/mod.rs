//! Statistics over a series of runs (docs/design/measurement.md section 3).
//!
//! Owns: the olympic mean, the median and its 95 % percentile-bootstrap CI, sd, CV, k/N
//! converged, Tukey-fence outlier flags, and the seed-paired comparison of a variant with its
//! baseline (relative change in ETT with a Student-t CI, P(variant better) with a CI, the 2 %
//! noise threshold and the verdict).
//! Must not: read files, know about run records or format numbers; it works on plain `f64`s.
//!
//! Convention: an ETT of a run that did not reach the target (DNF, diverged, failed) is
//! `f64::INFINITY`. Order statistics (median, percentiles) treat it as larger than any energy,
//! so a median is finite while fewer than half of the runs are DNFs; moments (sd, CV) use the
//! converged runs only.
//!
//! Every bootstrap here draws [`BOOTSTRAP_RESAMPLES`] resamples from a ChaCha8 generator seeded
//! with [`BOOTSTRAP_SEED`], so the same runs always give the same intervals.

pub mod forecast;
pub mod knee;
pub mod sequential;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Number of bootstrap resamples for every interval (criterion uses 100,000 for timings; 10,000
/// puts the Monte-Carlo error of a 2.5 % percentile at about 0.16 percentage points of coverage).
pub const BOOTSTRAP_RESAMPLES: usize = 10_000;
/// Fixed seed of the bootstrap generator: reports are reproducible byte for byte.
pub const BOOTSTRAP_SEED: u64 = 0x6a6f_756c_6562_656e; // "joulebeN"
/// Two-sided confidence level of every interval.
pub const CONFIDENCE: f64 = 0.95;
/// Relative changes smaller than this are run-to-run noise, never a saving (docs/design/measurement.md 3).
pub const NOISE_THRESHOLD: f64 = 0.02;
/// Fewest seed pairs (both reaching the target) for which a change can be called significant.
pub const MIN_PAIRS: usize = 3;
/// The standard normal quantile for [`CONFIDENCE`] (Wilson interval).
const Z_95: f64 = 1.959_963_984_540_054;

/// A standard normal draw (Box-Muller) from the seeded generator the bootstraps use.
pub fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A closed interval; `hi` (or both ends) may be `+inf` when DNFs reach into it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }
}

/// Why an olympic mean could not be computed, or its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OlympicMean {
    Value(f64),
    /// Dropping the minimum and the maximum needs at least 3 runs.
    TooFewRuns(usize),
    /// Two or more runs did not reach the target: the trimmed mean would contain a DNF.
    TooManyDnf(usize),
}

impl OlympicMean {
    pub fn value(self) -> Option<f64> {
        match self {
            OlympicMean::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// Mean after dropping the minimum and the maximum. One DNF (`inf`) is the maximum and is
/// dropped; two or more invalidate the mean (MLPerf Training's scoring rule).
pub fn olympic_mean(values: &[f64]) -> OlympicMean {
    let dnf = values.iter().filter(|v| !v.is_finite()).count();
    if values.len() < 3 {
        return OlympicMean::TooFewRuns(values.len());
    }
    if dnf >= 2 {
        return OlympicMean::TooManyDnf(dnf);
    }
    let mut v = sorted(values);
    v.pop();
    v.remove(0);
    OlympicMean::Value(v.iter().sum::<f64>() / v.len() as f64)
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// Median (mean of the two middle values for an even count); `None` for no values.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    Some(median_of_sorted(&sorted(values)))
}

fn median_of_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        midpoint(v[n / 2 - 1], v[n / 2])
    }
}

/// Midpoint that keeps `inf` as `inf` (`inf + inf` is fine, `inf - inf` is not).
fn midpoint(a: f64, b: f64) -> f64 {
    if a == b {
        a
    } else {
        a + (b - a) / 2.0
    }
}

/// Quantile `p` in [0, 1] of sorted data by linear interpolation between order statistics
/// (Hyndman and Fan type 7, R's and NumPy's default).
pub fn quantile_sorted(v: &[f64], p: f64) -> f64 {
    debug_assert!(!v.is_empty());
    let h = (v.len() - 1) as f64 * p.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    let (a, b) = (v[lo], v[hi]);
    if a == b || lo == hi {
        a
    } else {
        a + (h - lo as f64) * (b - a)
    }
}

/// Sample standard deviation (n - 1) of the finite values; `None` with fewer than two.
pub fn sd(values: &[f64]) -> Option<f64> {
    let f: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if f.len() < 2 {
        return None;
    }
    let m = f.iter().sum::<f64>() / f.len() as f64;
    let var = f.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (f.len() - 1) as f64;
    Some(var.sqrt())
}

/// Mean of the finite values.
pub fn mean_finite(values: &[f64]) -> Option<f64> {
    let f: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    (!f.is_empty()).then(|| f.iter().sum::<f64>() / f.len() as f64)
}

/// Coefficient of variation sd / mean of the finite values.
pub fn cv(values: &[f64]) -> Option<f64> {
    let m = mean_finite(values)?;
    (m != 0.0).then_some(())?;
    sd(values).map(|s| s / m)
}

/// k of N: runs that reached the target (finite values).
pub fn converged(values: &[f64]) -> (usize, usize) {
    (
        values.iter().filter(|v| v.is_finite()).count(),
        values.len(),
    )
}

/// Percentile bootstrap of a statistic of one sample: resample with replacement, recompute,
/// take the (1 - CONFIDENCE)/2 and (1 + CONFIDENCE)/2 quantiles. `None` for no values.
pub fn bootstrap_ci(values: &[f64], statistic: impl Fn(&[f64]) -> f64) -> Option<Interval> {
    if values.is_empty() {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(BOOTSTRAP_SEED);
    let n = values.len();
    let mut buf = vec![0.0; n];
    let mut stats = Vec::with_capacity(BOOTSTRAP_RESAMPLES);
    for _ in 0..BOOTSTRAP_RESAMPLES {
        for slot in buf.iter_mut() {
            *slot = values[rng.random_range(0..n)];
        }
        stats.push(statistic(&buf));
    }
    stats.sort_by(f64::total_cmp);
    let alpha = (1.0 - CONFIDENCE) / 2.0;
    Some(Interval {
        lo: quantile_sorted(&stats, alpha),
        hi: quantile_sorted(&stats, 1.0 - alpha),
    })
}

/// The interval, at level `1 - alpha`, of the relative change `exp(mean log-ratio) - 1`: the
/// Student-t interval of the mean of `log_ratios`, mapped back. Exact when the log-ratios are
/// normal, at any number of pairs; `None` with fewer than 2. (The percentile bootstrap of the
/// same mean covers far less than its level at few pairs: the test
/// `paired_change_ci_covers_at_its_level_where_the_percentile_bootstrap_does_not` measures both.)
pub fn t_change_interval(log_ratios: &[f64], alpha: f64) -> Option<Interval> {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    let n = log_ratios.len();
    if n < 2 || !(alpha > 0.0 && alpha < 1.0) {
        return None;
    }
    let mean = log_ratios.iter().sum::<f64>() / n as f64;
    let var = log_ratios.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
        .ok()?
        .inverse_cdf(1.0 - alpha / 2.0);
    let half = t * (var / n as f64).sqrt();
    Some(Interval {
        lo: (mean - half).exp() - 1.0,
        hi: (mean + half).exp() - 1.0,
    })
}

/// The median and its 95 % percentile-bootstrap CI.
pub fn median_ci(values: &[f64]) -> Option<(f64, Interval)> {
    let m = median(values)?;
    let ci = bootstrap_ci(values, |s| median_of_sorted(&sorted(s)))?;
    Some((m, ci))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutlierSide {
    Low,
    High,
}

/// Tukey's fences over the finite values: below Q1 - 1.5 IQR or above Q3 + 1.5 IQR. Returns
/// one flag per input (DNFs are never flagged: they are counted in k/N instead). Needs at
/// least 4 finite values; with fewer nothing is flagged. Flags only: nothing is dropped.
pub fn tukey_outliers(values: &[f64]) -> Vec<Option<OutlierSide>> {
    let f = sorted(
        &values
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect::<Vec<_>>(),
    );
    if f.len() < 4 {
        return vec![None; values.len()];
    }
    let q1 = quantile_sorted(&f, 0.25);
    let q3 = quantile_sorted(&f, 0.75);
    let iqr = q3 - q1;
    let (lo, hi) = (q1 - 1.5 * iqr, q3 + 1.5 * iqr);
    values
        .iter()
        .map(|&v| {
            if !v.is_finite() {
                None
            } else if v < lo {
                Some(OutlierSide::Low)
            } else if v > hi {
                Some(OutlierSide::High)
            } else {
                None
            }
        })
        .collect()
}

/// Wilson score interval for a proportion `successes / n` (successes may be fractional: ties
/// count one half). Unlike a percentile bootstrap it does not collapse to a point at 0 or n.
pub fn wilson(successes: f64, n: usize) -> Interval {
    if n == 0 {
        return Interval { lo: 0.0, hi: 1.0 };
    }
    let n = n as f64;
    let p = successes / n;
    let z2 = Z_95 * Z_95;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = Z_95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    // At 0 or n successes the bound is exactly 0 or 1; say so rather than 1 - 1e-16.
    Interval {
        lo: if p <= 0.0 {
            0.0
        } else {
            (centre - half).max(0.0)
        },
        hi: if p >= 1.0 {
            1.0
        } else {
            (centre + half).min(1.0)
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Both reach T in every paired seed, and the whole CI of the change lies below -2 %.
    SavesEnergy,
    /// Both reach T in every paired seed, and the whole CI of the change lies above +2 %.
    CostsEnergy,
    /// The CI touches [-2 %, +2 %], or there are too few pairs to tell.
    NoSignificantDifference,
    /// The variant or its baseline missed T in at least one paired seed.
    DidNotReachTarget,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::SavesEnergy => "saves energy",
            Verdict::CostsEnergy => "costs energy",
            Verdict::NoSignificantDifference => "no significant difference",
            Verdict::DidNotReachTarget => "did not reach target",
        }
    }
}

/// A variant against its baseline, paired by seed.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedComparison {
    /// Seeds present on both sides.
    pub pairs: usize,
    /// Pairs in which both the variant and the baseline reached T.
    pub both_reached: usize,
    pub variant_reached: usize,
    pub baseline_reached: usize,
    /// Relative change in ETT, variant vs baseline: the geometric mean of the per-seed ratios
    /// minus one, over pairs where both reached T (-0.25 = the variant needs 25 % less energy).
    pub change: Option<f64>,
    /// 95 % CI of `change`: the Student-t interval of the mean per-seed log-ratio, mapped
    /// back (`t_change_interval`); needs [`MIN_PAIRS`]. Not a percentile bootstrap: over 3
    /// seed pairs that covers about 76 % of the time, over 10 about 88 %, not 95 %.
    pub change_ci: Option<Interval>,
    /// Fraction of paired seeds in which the variant needed less energy to reach T than the
    /// baseline (a DNF needs infinite energy; two DNFs tie and count one half).
    pub p_better: Option<f64>,
    /// Wilson 95 % interval of `p_better`.
    pub p_better_ci: Option<Interval>,
    pub verdict: Verdict,
    /// Why the verdict is what it is, in a few words.
    pub reason: String,
}

/// Compare ETTs paired by seed: `pairs` holds (variant_ett_j, baseline_ett_j), `inf` = DNF.
pub fn compare_paired(pairs: &[(f64, f64)]) -> PairedComparison {
    let n = pairs.len();
    let variant_reached = pairs.iter().filter(|p| p.0.is_finite()).count();
    let baseline_reached = pairs.iter().filter(|p| p.1.is_finite()).count();
    let log_ratios: Vec<f64> = pairs
        .iter()
        .filter(|(v, b)| v.is_finite() && b.is_finite() && *v > 0.0 && *b > 0.0)
        .map(|(v, b)| (v / b).ln())
        .collect();
    let both = log_ratios.len();
    let geo = |s: &[f64]| (s.iter().sum::<f64>() / s.len() as f64).exp() - 1.0;
    let change = (both > 0).then(|| geo(&log_ratios));
    let change_ci = if both >= MIN_PAIRS {
        t_change_interval(&log_ratios, 1.0 - CONFIDENCE)
    } else {
        None
    };
    let (p_better, p_better_ci) = if n > 0 {
        let wins: f64 = pairs
            .iter()
            .map(|&(v, b)| {
                if v < b {
                    1.0
                } else if v == b {
                    0.5
                } else {
                    0.0
                }
            })
            .sum();
        (Some(wins / n as f64), Some(wilson(wins, n)))
    } else {
        (None, None)
    };
    let (verdict, reason) = if n == 0 {
        (
            Verdict::NoSignificantDifference,
            "no seed in common with the baseline".to_string(),
        )
    } else if variant_reached < n || baseline_reached < n {
        let who = match (variant_reached < n, baseline_reached < n) {
            (true, true) => {
                format!("variant {variant_reached}/{n}, baseline {baseline_reached}/{n} reached T")
            }
            (true, false) => format!("variant reached T in {variant_reached}/{n} paired seeds"),
            _ => format!("baseline reached T in {baseline_reached}/{n} paired seeds"),
        };
        (Verdict::DidNotReachTarget, who)
    } else {
        match change_ci {
            None => (
                Verdict::NoSignificantDifference,
                format!("{both} seed pair(s); at least {MIN_PAIRS} needed for a CI"),
            ),
            Some(ci) if ci.hi < -NOISE_THRESHOLD => (
                Verdict::SavesEnergy,
                format!("CI below -{:.0} %", 100.0 * NOISE_THRESHOLD),
            ),
            Some(ci) if ci.lo > NOISE_THRESHOLD => (
                Verdict::CostsEnergy,
                format!("CI above +{:.0} %", 100.0 * NOISE_THRESHOLD),
            ),
            Some(_) => (
                Verdict::NoSignificantDifference,
                format!(
                    "CI overlaps the +-{:.0} % noise band",
                    100.0 * NOISE_THRESHOLD
                ),
            ),
        }
    };
    PairedComparison {
        pairs: n,
        both_reached: both,
        variant_reached,
        baseline_reached,
        change,
        change_ci,
        p_better,
        p_better_ci,
        verdict,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const INF: f64 = f64::INFINITY;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn olympic_mean_by_hand() {
        // Drop 1 and 100: (2 + 3 + 4) / 3 = 3.
        assert_eq!(
            olympic_mean(&[100.0, 2.0, 1.0, 3.0, 4.0]),
            OlympicMean::Value(3.0)
        );
        // One DNF is the maximum and is dropped: drop 1 and inf, (5 + 9) / 2 = 7.
        assert_eq!(olympic_mean(&[5.0, INF, 1.0, 9.0]), OlympicMean::Value(7.0));
        assert_eq!(
            olympic_mean(&[5.0, INF, 1.0, INF, 2.0]),
            OlympicMean::TooManyDnf(2)
        );
        assert_eq!(olympic_mean(&[1.0, 2.0]), OlympicMean::TooFewRuns(2));
        // Exactly three: the middle one.
        assert_eq!(olympic_mean(&[3.0, 1.0, 2.0]), OlympicMean::Value(2.0));
    }

    #[test]
    fn median_quantile_sd_cv_by_hand() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[1.0, INF, INF]), Some(INF));
        assert_eq!(median(&[1.0, 2.0, INF]), Some(2.0));
        assert_eq!(median(&[1.0, INF]), Some(INF));
        assert_eq!(median(&[]), None);
        // Type 7: (n-1)p = 0.75 between 1 and 2 -> 1.75.
        assert_eq!(quantile_sorted(&[1.0, 2.0, 3.0, 4.0], 0.25), 1.75);
        assert_eq!(quantile_sorted(&[1.0, 2.0, 3.0, 4.0], 1.0), 4.0);
        // sd of 2,4,4,4,5,5,7,9 with n-1: sqrt(32/7).
        let x = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert!(close(sd(&x).unwrap(), (32.0f64 / 7.0).sqrt(), 1e-12));
        assert!(close(cv(&x).unwrap(), (32.0f64 / 7.0).sqrt() / 5.0, 1e-12));
        // DNFs are left out of moments.
        assert_eq!(sd(&[1.0, 3.0, INF]), Some(2.0f64.sqrt()));
        assert_eq!(sd(&[1.0, INF]), None);
        assert_eq!(converged(&[1.0, INF, 2.0]), (2, 3));
    }

    #[test]
    fn tukey_flags_by_hand() {
        // 1..=8 and 30: Q1 = 3, Q3 = 7, IQR 4, fences -3 and 13: only 30 is high.
        let mut v: Vec<f64> = (1..=8).map(f64::from).collect();
        v.push(30.0);
        let f = tukey_outliers(&v);
        assert_eq!(f.iter().filter(|x| x.is_some()).count(), 1);
        assert_eq!(f[8], Some(OutlierSide::High));
        let mut low = vec![-40.0];
        low.extend((1..=8).map(f64::from));
        assert_eq!(tukey_outliers(&low)[0], Some(OutlierSide::Low));
        // DNFs are not flagged, and too few values flag nothing.
        assert_eq!(tukey_outliers(&[1.0, 2.0, 100.0]), vec![None; 3]);
        let with_dnf = tukey_outliers(&[1.0, 2.0, 3.0, 4.0, INF]);
        assert!(with_dnf.iter().all(Option::is_none));
    }

    #[test]
    fn wilson_known_values() {
        // 5/10: z^2 = 3.8415, centre 0.5, half-width 1.96 * sqrt(0.025 + 0.0096) / 1.38415 = 0.2634.
        let w = wilson(5.0, 10);
        assert!(
            close(w.lo, 0.2366, 1e-4) && close(w.hi, 0.7634, 1e-4),
            "{w:?}"
        );
        // 10/10: [0.7225, 1].
        let w = wilson(10.0, 10);
        assert!(close(w.lo, 0.7225, 1e-4) && w.hi == 1.0, "{w:?}");
        assert_eq!(wilson(0.0, 0), Interval { lo: 0.0, hi: 1.0 });
    }

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_median() {
        let x = [10.0, 12.0, 11.0, 13.0, 9.0, 30.0, 11.5];
        let (m, ci) = median_ci(&x).unwrap();
        assert_eq!(m, 11.5);
        assert!(ci.contains(m), "{ci:?}");
        assert_eq!(median_ci(&x), Some((m, ci)), "same input, same interval");
        // The CI of a median lies within the data's range.
        assert!(ci.lo >= 9.0 && ci.hi <= 30.0);
        // A constant sample has a point interval.
        let (_, c) = median_ci(&[5.0; 6]).unwrap();
        assert_eq!(c, Interval { lo: 5.0, hi: 5.0 });
        // With DNFs the upper end may be infinite, never NaN.
        let (_, d) = median_ci(&[1.0, 2.0, 3.0, INF, INF]).unwrap();
        assert!(d.lo.is_finite() && d.hi == INF, "{d:?}");
    }

    /// The comparison's 95 % interval covers the true change at least 94 % of the time at
    /// 3, 5 and 10 seed pairs (10^4 simulated comparisons each, normal log-ratios); the
    /// percentile bootstrap of the same mean, which it replaced, covers about 76 % at 3 pairs.
    #[test]
    fn paired_change_ci_covers_at_its_level_where_the_percentile_bootstrap_does_not() {
        let mut rng = ChaCha8Rng::seed_from_u64(34);
        let (mu, sd) = (0.1_f64, 0.05_f64);
        let truth = mu.exp() - 1.0;
        let draw = |rng: &mut ChaCha8Rng, n: usize| -> Vec<(f64, f64)> {
            (0..n)
                .map(|_| {
                    let base = 1000.0 * (1.0 + rng.random::<f64>());
                    (base * (mu + sd * standard_normal(rng)).exp(), base)
                })
                .collect()
        };
        for n in [3, 5, 10] {
            let sims = 10_000;
            let hits = (0..sims)
                .filter(|_| {
                    let c = compare_paired(&draw(&mut rng, n));
                    c.change_ci.unwrap().contains(truth)
                })
                .count();
            let coverage = hits as f64 / sims as f64;
            assert!(coverage >= 0.94, "n {n}: t interval covers {coverage}");
        }
        let geo = |s: &[f64]| (s.iter().sum::<f64>() / s.len() as f64).exp() - 1.0;
        let sims = 1_000;
        let hits = (0..sims)
            .filter(|_| {
                let logs: Vec<f64> = draw(&mut rng, 3)
                    .iter()
                    .map(|(v, b)| (v / b).ln())
                    .collect();
                bootstrap_ci(&logs, geo).unwrap().contains(truth)
            })
            .count();
        let coverage = hits as f64 / sims as f64;
        assert!(
            coverage < 0.85,
            "percentile bootstrap at 3 pairs covers {coverage}"
        );
    }

    #[test]
    fn bootstrap_ci_contains_median_on_many_samples() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for n in 1..20 {
            let x: Vec<f64> = (0..n)
                .map(|_| 100.0 + 20.0 * rng.random::<f64>().powi(3))
                .collect();
            let (m, ci) = median_ci(&x).unwrap();
            assert!(ci.contains(m), "n {n}: {m} not in {ci:?}");
            assert!(ci.lo <= ci.hi);
        }
    }

    #[test]
    fn paired_identical_data_is_no_difference() {
        let b = [100.0, 110.0, 95.0, 105.0, 102.0];
        let pairs: Vec<(f64, f64)> = b.iter().map(|&x| (x, x)).collect();
        let c = compare_paired(&pairs);
        assert_eq!(c.change, Some(0.0));
        assert_eq!(c.change_ci, Some(Interval { lo: 0.0, hi: 0.0 }));
        assert_eq!(c.p_better, Some(0.5), "all ties count one half");
        assert_eq!(c.verdict, Verdict::NoSignificantDifference);
    }

    #[test]
    fn paired_saving_cost_and_noise() {
        let b = [100.0, 110.0, 95.0, 105.0, 102.0];
        // Every seed 20 % cheaper (give or take 1 %): saves energy, P(better) = 1.
        let jitter = [0.80, 0.81, 0.79, 0.80, 0.80];
        let pairs: Vec<(f64, f64)> = b.iter().zip(jitter).map(|(&x, j)| (x * j, x)).collect();
        let c = compare_paired(&pairs);
        assert!(close(c.change.unwrap(), -0.2, 0.01), "{c:?}");
        let ci = c.change_ci.unwrap();
        assert!(ci.hi < -NOISE_THRESHOLD && ci.contains(c.change.unwrap()));
        assert_eq!(c.p_better, Some(1.0));
        assert_eq!(c.verdict, Verdict::SavesEnergy);
        // 30 % dearer: costs energy.
        let pairs: Vec<(f64, f64)> = b.iter().map(|&x| (x * 1.3, x)).collect();
        assert_eq!(compare_paired(&pairs).verdict, Verdict::CostsEnergy);
        // 1 % cheaper everywhere: the CI excludes zero but not the threshold.
        let pairs: Vec<(f64, f64)> = b.iter().map(|&x| (x * 0.99, x)).collect();
        let c = compare_paired(&pairs);
        assert!(c.change_ci.unwrap().hi < 0.0);
        assert_eq!(c.verdict, Verdict::NoSignificantDifference);
        // Mixed signs: the CI straddles zero.
        let pairs = [(90.0, 100.0), (120.0, 100.0), (95.0, 100.0), (110.0, 100.0)];
        assert_eq!(
            compare_paired(&pairs).verdict,
            Verdict::NoSignificantDifference
        );
    }

    #[test]
    fn paired_geometric_mean_by_hand() {
        // Ratios 0.5 and 2 cancel: change 0; ratios 0.5, 0.5: change -0.5.
        let c = compare_paired(&[(50.0, 100.0), (200.0, 100.0)]);
        assert!(close(c.change.unwrap(), 0.0, 1e-12));
        assert_eq!(c.change_ci, None, "two pairs are too few for a CI");
        assert_eq!(c.verdict, Verdict::NoSignificantDifference);
        assert!(c.reason.contains("at least 3"), "{}", c.reason);
        let c = compare_paired(&[(50.0, 100.0), (60.0, 120.0)]);
        assert!(close(c.change.unwrap(), -0.5, 1e-12));
    }

    #[test]
    fn paired_dnf_is_did_not_reach_target() {
        let pairs = [(80.0, 100.0), (INF, 100.0), (82.0, 100.0), (79.0, 101.0)];
        let c = compare_paired(&pairs);
        assert_eq!(c.verdict, Verdict::DidNotReachTarget);
        assert_eq!((c.variant_reached, c.baseline_reached), (3, 4));
        assert_eq!(c.both_reached, 3);
        // The DNF seed is a loss for the variant: 3 wins of 4.
        assert_eq!(c.p_better, Some(0.75));
        assert!(
            c.reason.contains("variant reached T in 3/4"),
            "{}",
            c.reason
        );
        // A baseline DNF blocks a claim too.
        let c = compare_paired(&[(80.0, INF), (80.0, 100.0), (80.0, 100.0)]);
        assert_eq!(c.verdict, Verdict::DidNotReachTarget);
        assert!(c.reason.contains("baseline"), "{}", c.reason);
        // Both DNF in a seed: a tie.
        let c = compare_paired(&[(INF, INF), (80.0, 100.0)]);
        assert_eq!(c.p_better, Some(0.75));
        assert_eq!(compare_paired(&[]).p_better, None);
    }
}
