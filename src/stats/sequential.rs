//! Sequential seeds: when to stop adding seed pairs to a variant's comparison with its baseline.
//!
//! Owns: the interval of the ETT change that stays valid when it is looked at after every new
//! seed pair (an alpha-spending rule, below), and the rule that says whether a verdict is
//! settled after a look.
//! Must not: read files or know about run records; it works on (variant ETT, baseline ETT)
//! pairs in seed order, `inf` for a run that did not reach the target.
//!
//! # The interval
//! Looks happen after pair `min_pairs`, `min_pairs + 1`, ..., `max_pairs`: at most
//! `L = max_pairs - min_pairs + 1` looks, all planned before the first seed runs. The error
//! rate `alpha = 1 - CONFIDENCE` is spent equally over them (Bonferroni's inequality; the
//! equal-spending case of Lan and DeMets, "Discrete sequential boundaries for clinical trials",
//! Biometrika 70, 1983): at each look the interval is the Student-t interval of the mean
//! log-ratio `ln(ETT_variant / ETT_baseline)` at level `1 - alpha / L`, mapped to a relative
//! change by `exp(.) - 1`. By the union bound, the probability that any of the `L` intervals
//! misses the true change is at most `alpha`, whatever rule decides when to stop looking, so
//! the interval at the look where a sweep stops is a valid 95 % interval. It is exact when the
//! log-ratios are normal and independent across seeds (the t interval is), and the unit test
//! checks it by simulation under continuous monitoring.
//!
//! Why not an infinite-horizon confidence sequence (Howard et al., "Time-uniform, nonparametric,
//! nonasymptotic confidence sequences", Ann. Statist. 49, 2021; Waudby-Smith and Ramdas,
//! "Estimating means of bounded random variables by betting", JRSS B 86, 2024): the number of
//! looks here is small and known (a protocol's seed count, 10 for published tables), and at 3
//! to 10 observations a finite-horizon union bound is narrower than those sequences, which
//! guard against infinitely many looks; the betting sequences also need bounded observations,
//! and a log-ratio of energies has no natural bound.

use super::{Interval, CONFIDENCE, NOISE_THRESHOLD};

/// Fewest seed pairs before the first look (the protocol's quick-suite minimum).
pub const DEFAULT_MIN_PAIRS: usize = 3;
/// Most seed pairs per variant (the protocol's N for published tables).
pub const DEFAULT_MAX_PAIRS: usize = 10;

/// The looks planned for one comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedPlan {
    pub min_pairs: usize,
    pub max_pairs: usize,
}

impl Default for SeedPlan {
    fn default() -> Self {
        SeedPlan {
            min_pairs: DEFAULT_MIN_PAIRS,
            max_pairs: DEFAULT_MAX_PAIRS,
        }
    }
}

/// A plan that cannot be run: too few pairs for a t interval, or a maximum below the minimum.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SeedPlanError {
    #[error("--min-seeds {0}: at least 2 seed pairs are needed for an interval")]
    TooFew(usize),
    #[error("--max-seeds {max} is below --min-seeds {min}")]
    MaxBelowMin { min: usize, max: usize },
}

impl SeedPlan {
    pub fn new(min_pairs: usize, max_pairs: usize) -> Result<SeedPlan, SeedPlanError> {
        if min_pairs < 2 {
            return Err(SeedPlanError::TooFew(min_pairs));
        }
        if max_pairs < min_pairs {
            return Err(SeedPlanError::MaxBelowMin {
                min: min_pairs,
                max: max_pairs,
            });
        }
        Ok(SeedPlan {
            min_pairs,
            max_pairs,
        })
    }
    /// Number of planned looks.
    pub fn looks(&self) -> usize {
        self.max_pairs - self.min_pairs + 1
    }
    /// The two-sided error rate spent at each look.
    pub fn alpha_per_look(&self) -> f64 {
        (1.0 - CONFIDENCE) / self.looks() as f64
    }
}

/// The interval of the relative change `exp(mean log-ratio) - 1` at one look, at level
/// `1 - alpha / L`. `None` with fewer than 2 log-ratios.
pub fn change_interval(log_ratios: &[f64], plan: &SeedPlan) -> Option<Interval> {
    super::t_change_interval(log_ratios, plan.alpha_per_look())
}

/// Where a comparison stands after a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The whole interval lies below -2 %.
    Saves,
    /// The whole interval lies above +2 %.
    Costs,
    /// The whole interval lies inside [-2 %, +2 %]: equivalent within the noise band.
    Equivalent,
    /// The variant or the baseline missed T in a paired seed: no later seed can change that.
    DidNotReachTarget,
    /// `max_pairs` reached with the interval overlapping the band's edge.
    Unsettled,
}

impl Settled {
    pub fn as_str(self) -> &'static str {
        match self {
            Settled::Saves => "saves energy",
            Settled::Costs => "costs energy",
            Settled::Equivalent => "equivalent within +-2 %",
            Settled::DidNotReachTarget => "did not reach target",
            Settled::Unsettled => "unsettled",
        }
    }
}

/// One look at the pairs so far (seed order): `None` while more pairs are needed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Look {
    pub settled: Option<Settled>,
    /// The interval at this look (absent before `min_pairs` or after a DNF).
    pub interval: Option<Interval>,
}

/// Look at `pairs` (variant ETT, baseline ETT), `inf` = did not reach T.
///
/// A DNF on either side settles the comparison at once: the fixed protocol's verdict is "did
/// not reach target" whenever any paired seed misses T, so more seeds cannot change it.
pub fn look(pairs: &[(f64, f64)], plan: &SeedPlan) -> Look {
    if pairs.iter().any(|(v, b)| !v.is_finite() || !b.is_finite()) {
        return Look {
            settled: Some(Settled::DidNotReachTarget),
            interval: None,
        };
    }
    if pairs.len() < plan.min_pairs {
        return Look {
            settled: None,
            interval: None,
        };
    }
    let logs: Vec<f64> = pairs.iter().map(|(v, b)| (v / b).ln()).collect();
    let interval = change_interval(&logs, plan);
    let band = NOISE_THRESHOLD;
    let settled = match interval {
        Some(ci) if ci.hi < -band => Some(Settled::Saves),
        Some(ci) if ci.lo > band => Some(Settled::Costs),
        Some(ci) if ci.lo >= -band && ci.hi <= band => Some(Settled::Equivalent),
        _ if pairs.len() >= plan.max_pairs => Some(Settled::Unsettled),
        _ => None,
    };
    Look { settled, interval }
}

/// The first look at which `pairs` settle: how many pairs were used and the look there.
/// With fewer pairs than needed the last look is returned unsettled (`settled: None`).
pub fn settle(pairs: &[(f64, f64)], plan: &SeedPlan) -> (usize, Look) {
    let mut last = Look {
        settled: None,
        interval: None,
    };
    for n in 1..=pairs.len().min(plan.max_pairs) {
        last = look(&pairs[..n], plan);
        if last.settled.is_some() {
            return (n, last);
        }
    }
    (pairs.len().min(plan.max_pairs), last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::standard_normal as normal;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const INF: f64 = f64::INFINITY;

    /// Coverage under continuous monitoring: in 10^4 simulated sequences of 10 normal paired
    /// log-ratios with a known mean, the interval holds the true change at every one of the 8
    /// looks (n = 3..10) in at least 95 % of the sequences, so it holds at whatever look a
    /// stopping rule picks. Checked for a saving, no change and a cost, and for two noise levels.
    #[test]
    fn interval_covers_at_every_look_under_continuous_monitoring() {
        let plan = SeedPlan::default();
        let mut rng = ChaCha8Rng::seed_from_u64(34);
        for (mu, sd) in [(-0.3, 0.05), (0.0, 0.02), (0.2, 0.15), (0.01, 0.3)] {
            let truth = f64::exp(mu) - 1.0;
            let trials = 10_000;
            let mut all_looks_cover = 0;
            let mut fixed_n3_cover = 0;
            for _ in 0..trials {
                let logs: Vec<f64> = (0..plan.max_pairs)
                    .map(|_| mu + sd * normal(&mut rng))
                    .collect();
                let ok = (plan.min_pairs..=plan.max_pairs)
                    .all(|n| change_interval(&logs[..n], &plan).unwrap().contains(truth));
                all_looks_cover += ok as usize;
                // The same data with a one-look 95 % interval at n = 3, for contrast.
                let one = SeedPlan::new(3, 3).unwrap();
                fixed_n3_cover +=
                    change_interval(&logs[..3], &one).unwrap().contains(truth) as usize;
            }
            let cov = all_looks_cover as f64 / trials as f64;
            assert!(cov >= CONFIDENCE, "mu {mu} sd {sd}: coverage {cov}");
            // A single planned look is an ordinary 95 % t interval: about 0.95.
            let one = fixed_n3_cover as f64 / trials as f64;
            assert!((one - 0.95).abs() < 0.01, "one-look coverage {one}");
        }
    }

    /// Peeking at an unadjusted 95 % interval after every pair and stopping at the first that
    /// clears the band is what the spending rule prevents: with no true change, the naive rule
    /// calls a difference far more often than 5 %, the spending rule at most 5 %.
    #[test]
    fn spending_keeps_false_verdicts_below_alpha_where_naive_peeking_does_not() {
        let plan = SeedPlan::default();
        let naive = SeedPlan::new(3, 3).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (mut spent_false, mut naive_false) = (0, 0);
        let trials = 10_000;
        for _ in 0..trials {
            // No change; noise so large that the band is negligible.
            let logs: Vec<f64> = (0..plan.max_pairs)
                .map(|_| 0.5 * normal(&mut rng))
                .collect();
            let pairs: Vec<(f64, f64)> = logs.iter().map(|l| (l.exp(), 1.0)).collect();
            let (_, l) = settle(&pairs, &plan);
            spent_false += matches!(l.settled, Some(Settled::Saves | Settled::Costs)) as usize;
            let called = (3..=plan.max_pairs).any(|n| {
                let ci = change_interval(&logs[..n], &naive).unwrap();
                ci.hi < -NOISE_THRESHOLD || ci.lo > NOISE_THRESHOLD
            });
            naive_false += called as usize;
        }
        let (s, n) = (
            spent_false as f64 / trials as f64,
            naive_false as f64 / trials as f64,
        );
        assert!(s <= 1.0 - CONFIDENCE, "spending rule false verdicts {s}");
        assert!(n > 2.0 * (1.0 - CONFIDENCE), "naive peeking {n}");
    }

    #[test]
    fn settles_by_hand() {
        let plan = SeedPlan::default();
        // A clear 2x cost: settled at the first look (3 pairs).
        let pairs = [(2.0, 1.0), (2.1, 1.0), (1.9, 1.0), (2.0, 1.0)];
        let (n, l) = settle(&pairs, &plan);
        assert_eq!((n, l.settled), (3, Some(Settled::Costs)));
        assert!(l.interval.unwrap().lo > 0.02);
        // A DNF settles at once, before the minimum.
        let (n, l) = settle(&[(1.0, 1.0), (INF, 1.0), (1.0, 1.0)], &plan);
        assert_eq!((n, l.settled), (2, Some(Settled::DidNotReachTarget)));
        // Identical energies: equivalent once the interval (zero width) exists.
        let (n, l) = settle(&[(1.0, 1.0); 5], &plan);
        assert_eq!((n, l.settled), (3, Some(Settled::Equivalent)));
        // Noisy with no effect: unsettled at max_pairs.
        let noisy: Vec<(f64, f64)> = (0..12)
            .map(|i| (if i % 2 == 0 { 1.3 } else { 0.77 }, 1.0))
            .collect();
        let (n, l) = settle(&noisy, &plan);
        assert_eq!((n, l.settled), (10, Some(Settled::Unsettled)));
        // Too few pairs so far: open.
        let (n, l) = settle(&[(1.3, 1.0), (0.7, 1.0), (1.1, 1.0)], &plan);
        assert_eq!((n, l.settled), (3, None));
    }

    #[test]
    fn t_interval_by_hand() {
        // Two looks (3..4): alpha 0.025 per look, two-sided, so at n = 3 the 0.9875 quantile
        // of t with 2 df: (2p - 1) / sqrt(2 p (1 - p)) = 6.205.
        let plan = SeedPlan::new(3, 4).unwrap();
        let logs = [0.0, 0.1, 0.2];
        let ci = change_interval(&logs, &plan).unwrap();
        let half = 6.205 * (0.01f64 / 3.0).sqrt();
        assert!((ci.lo - ((0.1 - half).exp() - 1.0)).abs() < 2e-3, "{ci:?}");
        assert!((ci.hi - ((0.1 + half).exp() - 1.0)).abs() < 2e-3, "{ci:?}");
        assert_eq!(SeedPlan::new(1, 5).unwrap_err(), SeedPlanError::TooFew(1));
        assert!(SeedPlan::new(4, 3).is_err());
    }
}
