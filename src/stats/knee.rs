//! Choosing a task's target T from reference learning curves (docs/design/measurement.md section 1: "pick
//! T per task by the knee of the reference learning curve, from at least 10 reference seeds
//! that all reach it; publish the curve and the choice").
//!
//! Owns: aligning full-budget curves of several seeds, the knee of their mean (Kneedle), the
//! target rounded down to a grid every seed reaches, and the curves as CSV for publication.
//! Must not: train or read files (the CLI collects the run records and writes the CSV).
//!
//! Method, stated once so the README and the task files can point here:
//! 1. Curves of N seeds trained for the whole budget (`run --full-budget`) share the eval
//!    cadence, so they align on the step; they are cut to the shortest.
//! 2. The mean curve is made monotone by its running maximum (the best quality reached so
//!    far, which is what a stop-at-target run sees) so eval noise cannot create a knee.
//! 3. Kneedle (Satopää et al., ICDCS workshops 2011): normalise steps and quality to [0, 1];
//!    the knee is the eval maximising `quality_n - step_n`: where the curve's slope falls to
//!    its average slope over the whole budget, after which each further step buys less
//!    quality than the average step did. The knee depends on the budget (a longer budget
//!    moves it earlier), so the budget is part of the task and stated with T.
//! 4. T is the mean quality at the knee rounded DOWN to the grid (0.5 pp), lowered one grid
//!    step at a time until every seed's curve reaches it.

use crate::spec::task::Direction;
use serde::Serialize;

/// One seed's curve: (step, epoch, quality) per eval, in step order.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedCurve {
    pub seed: u64,
    pub points: Vec<(usize, f64, f64)>,
}

/// Seeds aligned on a common step grid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlignedCurves {
    pub steps: Vec<usize>,
    pub epochs: Vec<f64>,
    pub seeds: Vec<u64>,
    /// `values[s][i]`: quality of seed `seeds[s]` at `steps[i]`.
    pub values: Vec<Vec<f64>>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KneeError {
    #[error("no reference curves: {0}")]
    Empty(String),
    #[error("seed {seed}: its evals are at steps {theirs:?}..., seed {first}'s at {ours:?}...: the runs used different eval cadences or budgets")]
    Misaligned {
        seed: u64,
        first: u64,
        theirs: Vec<usize>,
        ours: Vec<usize>,
    },
    #[error("curves have {0} common evals; the knee needs at least 3")]
    TooShort(usize),
    #[error(
        "no target on the {grid_pp} pp grid is reached by every seed (lowest tried {lowest:.4})"
    )]
    Unreachable { grid_pp: f64, lowest: f64 },
}

/// Align curves on their common step prefix. Every seed must have evaluated at the same steps.
pub fn align(curves: &[SeedCurve]) -> Result<AlignedCurves, KneeError> {
    let first = curves
        .first()
        .ok_or_else(|| KneeError::Empty("no runs".into()))?;
    let n = curves.iter().map(|c| c.points.len()).min().unwrap_or(0);
    if n < 3 {
        return Err(KneeError::TooShort(n));
    }
    let steps: Vec<usize> = first.points[..n].iter().map(|p| p.0).collect();
    for c in curves {
        let theirs: Vec<usize> = c.points[..n].iter().map(|p| p.0).collect();
        if theirs != steps {
            let k = theirs
                .iter()
                .zip(&steps)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Err(KneeError::Misaligned {
                seed: c.seed,
                first: first.seed,
                theirs: theirs[k..(k + 3).min(n)].to_vec(),
                ours: steps[k..(k + 3).min(n)].to_vec(),
            });
        }
    }
    Ok(AlignedCurves {
        epochs: first.points[..n].iter().map(|p| p.1).collect(),
        steps,
        seeds: curves.iter().map(|c| c.seed).collect(),
        values: curves
            .iter()
            .map(|c| c.points[..n].iter().map(|p| p.2).collect())
            .collect(),
    })
}

impl AlignedCurves {
    pub fn mean(&self) -> Vec<f64> {
        let k = self.values.len() as f64;
        (0..self.steps.len())
            .map(|i| self.values.iter().map(|v| v[i]).sum::<f64>() / k)
            .collect()
    }

    /// Sample standard deviation across seeds at each eval (0 for a single seed).
    pub fn sd(&self) -> Vec<f64> {
        let m = self.mean();
        let k = self.values.len();
        (0..self.steps.len())
            .map(|i| {
                if k < 2 {
                    return 0.0;
                }
                let ss: f64 = self.values.iter().map(|v| (v[i] - m[i]).powi(2)).sum();
                (ss / (k - 1) as f64).sqrt()
            })
            .collect()
    }

    /// `step,epoch,seed_<s>...,mean,sd`: the published reference curves.
    pub fn to_csv(&self) -> String {
        let mut s = String::from("step,epoch");
        for seed in &self.seeds {
            s.push_str(&format!(",seed_{seed}"));
        }
        s.push_str(",mean,sd\n");
        let (m, sd) = (self.mean(), self.sd());
        for i in 0..self.steps.len() {
            s.push_str(&format!("{},{:.4}", self.steps[i], self.epochs[i]));
            for v in &self.values {
                s.push_str(&format!(",{:.5}", v[i]));
            }
            s.push_str(&format!(",{:.5},{:.5}\n", m[i], sd[i]));
        }
        s
    }
}

/// Kneedle on an increasing, concave-ish curve: the index maximising normalised y minus
/// normalised x. None when the curve is flat or has fewer than 3 points.
pub fn kneedle(x: &[f64], y: &[f64]) -> Option<usize> {
    if x.len() < 3 || x.len() != y.len() {
        return None;
    }
    let (x0, x1) = (x[0], x[x.len() - 1]);
    let y0 = y.iter().copied().fold(f64::INFINITY, f64::min);
    let y1 = y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !(x1 > x0 && y1 > y0) {
        return None;
    }
    (0..x.len())
        .map(|i| (i, (y[i] - y0) / (y1 - y0) - (x[i] - x0) / (x1 - x0)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// Running maximum: the best quality reached up to each eval.
pub fn running_max(y: &[f64]) -> Vec<f64> {
    let mut best = f64::NEG_INFINITY;
    y.iter()
        .map(|&v| {
            best = best.max(v);
            best
        })
        .collect()
}

/// The chosen target and the evidence for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetChoice {
    pub seeds: usize,
    pub knee_step: usize,
    pub knee_epoch: f64,
    /// Running-max mean quality at the knee.
    pub knee_quality: f64,
    pub grid_pp: f64,
    pub target: f64,
    /// Per seed, the first eval step reaching the target.
    pub steps_to_target: Vec<(u64, usize)>,
    /// Best quality of the mean curve over the whole budget.
    pub plateau_quality: f64,
}

pub fn choose_target(c: &AlignedCurves, grid_pp: f64) -> Result<TargetChoice, KneeError> {
    choose_target_in(c, grid_pp, Direction::Higher, 0.0)
}

/// The target for either direction. A lower-is-better metric (a loss in nats) is chosen on the
/// negated curves: the running minimum, its knee, the knee value rounded UP to the grid (0.01
/// x `grid_pp` of the metric's unit), raised until every seed reaches it, never at or beyond
/// `chance`. The choice reports the metric's own values.
pub fn choose_target_in(
    c: &AlignedCurves,
    grid_pp: f64,
    dir: Direction,
    chance: f64,
) -> Result<TargetChoice, KneeError> {
    if dir == Direction::Higher {
        return choose_higher(c, grid_pp, 0.0);
    }
    let negated = AlignedCurves {
        values: c
            .values
            .iter()
            .map(|v| v.iter().map(|q| -q).collect())
            .collect(),
        ..c.clone()
    };
    let mut t = choose_higher(&negated, grid_pp, -chance).map_err(|e| match e {
        KneeError::Unreachable { grid_pp, lowest } => KneeError::Unreachable {
            grid_pp,
            lowest: -lowest,
        },
        e => e,
    })?;
    t.knee_quality = -t.knee_quality;
    t.plateau_quality = -t.plateau_quality;
    t.target = -t.target;
    Ok(t)
}

/// `choose_target` on higher-is-better values, never at or below `floor`.
fn choose_higher(c: &AlignedCurves, grid_pp: f64, floor: f64) -> Result<TargetChoice, KneeError> {
    let mean = running_max(&c.mean());
    let x: Vec<f64> = c.steps.iter().map(|&s| s as f64).collect();
    let k = kneedle(&x, &mean).ok_or_else(|| KneeError::Empty("the mean curve is flat".into()))?;
    let grid = grid_pp / 100.0;
    // Round down on the grid; the small epsilon keeps 0.97 from becoming 0.965 in binary.
    let mut target = ((mean[k] + 1e-9) / grid).floor() * grid;
    let reach = |t: f64| -> Option<Vec<(u64, usize)>> {
        c.seeds
            .iter()
            .zip(&c.values)
            .map(|(&seed, v)| {
                v.iter()
                    .position(|&q| q >= t - 1e-12)
                    .map(|i| (seed, c.steps[i]))
            })
            .collect()
    };
    loop {
        if target <= floor {
            return Err(KneeError::Unreachable {
                grid_pp,
                lowest: target + grid,
            });
        }
        if let Some(steps_to_target) = reach(target) {
            return Ok(TargetChoice {
                seeds: c.seeds.len(),
                knee_step: c.steps[k],
                knee_epoch: c.epochs[k],
                knee_quality: mean[k],
                grid_pp,
                target: (target * 1e6).round() / 1e6,
                steps_to_target,
                plateau_quality: mean.last().copied().unwrap_or(f64::NAN),
            });
        }
        target -= grid;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(seed: u64, f: impl Fn(f64) -> f64, n: usize) -> SeedCurve {
        SeedCurve {
            seed,
            points: (1..=n)
                .map(|i| (i * 10, i as f64 / 10.0, f(i as f64 * 10.0)))
                .collect(),
        }
    }

    #[test]
    fn kneedle_matches_the_closed_form_on_a_saturating_exponential() {
        // y = 1 - exp(-x / tau) on [0, X]: d/dx of (y_n - x_n) = 0 at
        // x* = tau * ln(X / (tau * (1 - exp(-X / tau)))).
        let (tau, big_x) = (50.0f64, 1000.0f64);
        let x: Vec<f64> = (0..=1000).map(|i| i as f64).collect();
        let y: Vec<f64> = x.iter().map(|&v| 1.0 - (-v / tau).exp()).collect();
        let want = tau * (big_x / (tau * (1.0 - (-big_x / tau).exp()))).ln();
        let got = x[kneedle(&x, &y).unwrap()];
        assert!((got - want).abs() <= 1.0, "knee {got}, closed form {want}");
        assert_eq!(kneedle(&x, &vec![0.5; x.len()]), None);
        assert_eq!(kneedle(&x[..2], &y[..2]), None);
    }

    #[test]
    fn a_loss_target_is_rounded_up_and_reached_by_every_seed() {
        // Losses falling from 3 towards 1.50, 1.52, 1.54: the mirror of the accuracy case.
        let seeds: Vec<SeedCurve> = [1.50, 1.52, 1.54]
            .iter()
            .enumerate()
            .map(|(i, &low)| curve(i as u64 + 1, move |x| low + 1.5 * (-x / 80.0).exp(), 60))
            .collect();
        let a = align(&seeds).unwrap();
        let t = choose_target_in(&a, 0.5, Direction::Lower, 3.3).unwrap();
        assert!(t.target > t.plateau_quality && t.target < 3.3, "{t:?}");
        // On the 0.005 grid and at or above the knee's loss.
        assert!(((t.target / 0.005).round() * 0.005 - t.target).abs() < 1e-9);
        assert!(t.target >= t.knee_quality - 1e-12);
        for (seed, step) in &t.steps_to_target {
            let v = &a.values[(*seed - 1) as usize];
            let i = a.steps.iter().position(|s| s == step).unwrap();
            assert!(v[i] <= t.target + 1e-12);
            assert!(i == 0 || v[..i].iter().all(|&q| q > t.target));
        }
        // A chance level below every curve: no target exists.
        assert!(matches!(
            choose_target_in(&a, 0.5, Direction::Lower, 1.4),
            Err(KneeError::Unreachable { .. })
        ));
    }

    #[test]
    fn target_is_rounded_down_and_reached_by_every_seed() {
        // Three seeds saturating at 0.90, 0.92, 0.94 with the same rate.
        let seeds: Vec<SeedCurve> = [0.90, 0.92, 0.94]
            .iter()
            .enumerate()
            .map(|(i, &top)| curve(i as u64 + 1, move |x| top * (1.0 - (-x / 80.0).exp()), 60))
            .collect();
        let a = align(&seeds).unwrap();
        let t = choose_target(&a, 0.5).unwrap();
        // On the 0.5 pp grid, at or below the knee quality, and reached by all three.
        assert!(((t.target * 200.0).round() - t.target * 200.0).abs() < 1e-9);
        assert!(t.target <= t.knee_quality + 1e-12);
        assert_eq!(t.steps_to_target.len(), 3);
        for ((seed, step), v) in t.steps_to_target.iter().zip(&a.values) {
            let i = a.steps.iter().position(|s| s == step).unwrap();
            assert!(v[i] >= t.target, "seed {seed}");
            assert!(
                i == 0 || v[i - 1] < t.target,
                "seed {seed}: not the first eval"
            );
        }
    }

    #[test]
    fn a_seed_that_never_gets_there_lowers_the_target() {
        let good = curve(1, |x| 0.95 * (1.0 - (-x / 30.0).exp()), 50);
        let weak = curve(2, |x| 0.80 * (1.0 - (-x / 30.0).exp()), 50);
        let a = align(&[good, weak]).unwrap();
        let t = choose_target(&a, 0.5).unwrap();
        assert!(t.target <= 0.80, "{}", t.target);
    }

    #[test]
    fn misaligned_or_short_curves_are_errors() {
        let a = curve(1, |x| x / 1000.0, 10);
        let mut b = curve(2, |x| x / 1000.0, 10);
        b.points[4].0 += 1;
        assert!(matches!(
            align(&[a.clone(), b]),
            Err(KneeError::Misaligned { .. })
        ));
        assert_eq!(align(&[curve(1, |x| x, 2)]), Err(KneeError::TooShort(2)));
        assert!(matches!(align(&[]), Err(KneeError::Empty(_))));
        let csv = align(&[a]).unwrap().to_csv();
        assert!(
            csv.starts_with("step,epoch,seed_1,mean,sd\n10,0.1000,"),
            "{csv}"
        );
    }
}
