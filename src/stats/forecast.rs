//! Forecast stop: the probability that a run still reaches its target within its budget, from
//! the held-out curve so far.
//!
//! Owns: the learning-curve fit, its uncertainty, and the stop rule.
//! Must not: read files or know about run records; it works on (step, value) points.
//!
//! # Model
//! In the metric's good direction (`g = value` for accuracy, `g = -value` for a loss), the
//! curve is the three-parameter power law `g(x) = a - b x^(-c)`, `b >= 0`, of the step as a
//! fraction of the budget `x = step / budget_steps` ("pow3" of Domhan, Springenberg and Hutter,
//! "Speeding up automatic hyperparameter optimization of deep neural networks by extrapolation
//! of learning curves", IJCAI 2015; the saturating power law is the common shape of learning
//! curves in the review of Viering and Loog, IEEE TPAMI 45, 2023). It is fitted by least
//! squares, by variable projection: for each exponent `c` on a fixed grid, `a` and `b` are a
//! linear regression (a curve that is getting worse is fitted flat, `b = 0`), and the `c`
//! with the least squared error is kept.
//!
//! A saturating law fitted to the whole curve can miss a late speed-up (a learning rate that
//! decays to the end of the budget makes the last part of a curve steeper than its start; a
//! warm-up makes its start slower than a power law), so a second, unsaturated model is fitted
//! to the recent half of the evals (at least 3): the straight line `g = a + d x`, `d >= 0`,
//! which keeps improving at the latest rate per step to the end of the budget. Every
//! prediction is the more optimistic of the two: the rule errs on the side of running on, and
//! stops only curves that have flattened well short of T.
//!
//! # Uncertainty
//! A parametric bootstrap: the residual sd `s` is the fit's (with `n - 3` degrees of freedom)
//! but never below the eval's own noise floor (the binomial sd of an accuracy on the held-out
//! set); [`RESAMPLES`] new curves `fit + N(0, s)` are refitted (both models), and each
//! replicate predicts the best value the run can still show: the more optimistic model's
//! value at the end of the budget plus the
//! largest of the remaining evals' noise draws (a run reaches T at its first eval at or past T,
//! so the luckiest remaining eval is what counts). `p_reach` is the share of replicates at or
//! past T. The generator is seeded, so a forecast is reproducible.
//!
//! The run is stopped when `p_reach < STOP_BELOW` (1 %) after at least [`MIN_EVALS`] evals
//! and [`MIN_BUDGET_SHARE`] of the budget: early in training a curve still at chance says
//! nothing of where it goes.

use super::standard_normal as normal;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Stop when the probability of reaching T within the budget falls below this.
pub const STOP_BELOW: f64 = 0.01;
/// Fewest evals before a forecast.
pub const MIN_EVALS: usize = 3;
/// Share of the budget (in steps) spent before a forecast may stop a run.
pub const MIN_BUDGET_SHARE: f64 = 0.1;
/// Bootstrap replicates per forecast.
pub const RESAMPLES: usize = 400;
/// Seed of the bootstrap generator.
const SEED: u64 = 0x666f_7265_6361_7374; // "forecast"
/// Remaining evals counted for the luckiest-eval draw (more add almost nothing).
const MAX_REMAINING: usize = 50;

/// The sd of one eval's value from the held-out set's size alone: binomial at the target for
/// an accuracy over `n` predictions; 0 (unknown) for a loss.
pub fn eval_noise_floor(higher_is_better: bool, target: f64, n: usize) -> f64 {
    if higher_is_better && n > 0 && (0.0..=1.0).contains(&target) {
        (target * (1.0 - target) / n as f64).sqrt()
    } else {
        0.0
    }
}

/// Evals still to come, one every `every` steps, from `step` to the end of the budget.
pub fn remaining_evals(budget_steps: f64, step: f64, every: f64) -> usize {
    if every > 0.0 {
        ((budget_steps - step) / every).floor().max(0.0) as usize
    } else {
        0
    }
}

/// The exponents tried: 0.05 to 4, geometric.
fn exponents() -> impl Iterator<Item = f64> {
    (0..32).map(|i| 0.05 * (80f64).powf(i as f64 / 31.0))
}

/// One fitted power law `g(x) = a - b x^(-c)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerLaw {
    pub a: f64,
    pub b: f64,
    pub c: f64,
    pub sse: f64,
}

impl PowerLaw {
    pub fn at(&self, x: f64) -> f64 {
        self.a - self.b * x.powf(-self.c)
    }
}

/// Least-squares fit of `g = a - b x^(-c)` over points with `x > 0`. `None` for fewer than 2.
pub fn fit(x: &[f64], g: &[f64]) -> Option<PowerLaw> {
    let n = x.len();
    if n < 2 || g.len() != n {
        return None;
    }
    let gm = g.iter().sum::<f64>() / n as f64;
    let flat_sse = g.iter().map(|v| (v - gm).powi(2)).sum::<f64>();
    let mut best = PowerLaw {
        a: gm,
        b: 0.0,
        c: 1.0,
        sse: flat_sse,
    };
    let mut u = vec![0.0; n];
    for c in exponents() {
        for (ui, &xi) in u.iter_mut().zip(x) {
            *ui = xi.powf(-c);
        }
        let um = u.iter().sum::<f64>() / n as f64;
        let (mut suu, mut sug) = (0.0, 0.0);
        for (ui, gi) in u.iter().zip(g) {
            suu += (ui - um) * (ui - um);
            sug += (ui - um) * (gi - gm);
        }
        if suu <= 0.0 {
            continue;
        }
        // g = a + beta u with beta = -b <= 0 (an improving curve).
        let beta = (sug / suu).min(0.0);
        let a = gm - beta * um;
        let sse: f64 = u
            .iter()
            .zip(g)
            .map(|(ui, gi)| (gi - a - beta * ui).powi(2))
            .sum();
        if sse < best.sse {
            best = PowerLaw {
                a,
                b: -beta,
                c,
                sse,
            };
        }
    }
    Some(best)
}

/// The recent trend `g = a + d x`, `d >= 0`, fitted to the last half of the points (at least
/// 3); its value at the end of the budget (`x = 1`).
pub fn trend_at_end(x: &[f64], g: &[f64]) -> Option<f64> {
    let n = x.len();
    if n < 3 || g.len() != n {
        return None;
    }
    let from = n - (n / 2).max(3).min(n);
    let (x, g) = (&x[from..], &g[from..]);
    let m = x.len() as f64;
    let xm = x.iter().sum::<f64>() / m;
    let gm = g.iter().sum::<f64>() / m;
    let (mut sxx, mut sxg) = (0.0, 0.0);
    for (xi, gi) in x.iter().zip(g) {
        sxx += (xi - xm) * (xi - xm);
        sxg += (xi - xm) * (gi - gm);
    }
    let d = if sxx > 0.0 { (sxg / sxx).max(0.0) } else { 0.0 };
    Some(gm + d * (1.0 - xm))
}

/// What a forecast used and said; recorded in a stopped run's file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Evals the fit used.
    pub evals: usize,
    /// The step of the last of them.
    pub at_step: f64,
    pub budget_steps: f64,
    /// The target, in the metric's own units.
    pub target: f64,
    /// The prediction at the end of the budget (the more optimistic of the saturating law and
    /// the recent trend), in the metric's own units.
    pub predicted_final: f64,
    /// The saturating law's value at the end of the budget.
    pub law_final: f64,
    /// The recent straight-line trend's value at the end of the budget.
    pub trend_final: f64,
    /// The fitted curve's limit, in the metric's own units.
    pub asymptote: f64,
    pub exponent: f64,
    /// The residual sd used (fit or noise floor, whichever is larger).
    pub noise_sd: f64,
    /// Share of bootstrap replicates that reach T within the budget.
    pub p_reach: f64,
    pub resamples: usize,
}

impl Forecast {
    /// Whether this forecast stops the run.
    pub fn stops(&self) -> bool {
        self.p_reach < STOP_BELOW
    }
}

/// A curve so far: `steps` and `values` of the scored evals, in order.
#[derive(Debug, Clone, Copy)]
pub struct CurveSoFar<'a> {
    pub steps: &'a [f64],
    pub values: &'a [f64],
    /// True when higher values are better (accuracy), false for a loss.
    pub higher_is_better: bool,
    pub target: f64,
    pub budget_steps: f64,
    /// Evals the run would still make before its budget ends.
    pub remaining_evals: usize,
    /// The sd of one eval's value from the held-out set's size alone (0 when unknown).
    pub noise_floor: f64,
}

/// The forecast for a curve, or `None` while too early to forecast (fewer than
/// [`MIN_EVALS`] evals, less than [`MIN_BUDGET_SHARE`] of the budget, no budget) or when the
/// noise cannot be estimated (no residual degrees of freedom and no noise floor).
pub fn forecast(curve: &CurveSoFar<'_>) -> Option<Forecast> {
    let sign = if curve.higher_is_better { 1.0 } else { -1.0 };
    let b = curve.budget_steps;
    if !(b.is_finite() && b > 0.0) || curve.steps.len() != curve.values.len() {
        return None;
    }
    let (x, g): (Vec<f64>, Vec<f64>) = curve
        .steps
        .iter()
        .zip(curve.values)
        .filter(|(s, v)| **s > 0.0 && v.is_finite())
        .map(|(s, v)| (s / b, sign * v))
        .unzip();
    let n = x.len();
    let last = *x.last()?;
    if n < MIN_EVALS || last < MIN_BUDGET_SHARE {
        return None;
    }
    let law = fit(&x, &g)?;
    let dof = n.saturating_sub(3);
    let fit_sd = if dof > 0 {
        (law.sse / dof as f64).sqrt()
    } else {
        0.0
    };
    let sd = fit_sd.max(curve.noise_floor);
    // No estimate of the noise at all (3 evals of a loss, a perfectly smooth curve): a
    // forecast would be certain of itself, so none is made.
    if sd.is_nan() || sd <= 0.0 {
        return None;
    }
    let target = sign * curve.target;
    let remaining = curve.remaining_evals.clamp(1, MAX_REMAINING);
    let fitted: Vec<f64> = x.iter().map(|&xi| law.at(xi)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut reach = 0usize;
    let mut gb = vec![0.0; n];
    for _ in 0..RESAMPLES {
        for (o, f) in gb.iter_mut().zip(&fitted) {
            *o = f + sd * normal(&mut rng);
        }
        let Some(rep) = fit(&x, &gb) else { continue };
        let best = trend_at_end(&x, &gb).map_or(rep.at(1.0), |t| t.max(rep.at(1.0)));
        let luck = (0..remaining)
            .map(|_| normal(&mut rng))
            .fold(f64::NEG_INFINITY, f64::max);
        if best + sd * luck >= target {
            reach += 1;
        }
    }
    let trend = trend_at_end(&x, &g).unwrap_or(f64::NEG_INFINITY);
    Some(Forecast {
        evals: n,
        at_step: last * b,
        budget_steps: b,
        target: curve.target,
        predicted_final: sign * law.at(1.0).max(trend),
        law_final: sign * law.at(1.0),
        trend_final: sign * trend,
        asymptote: sign * law.a,
        exponent: law.c,
        noise_sd: sd,
        p_reach: reach as f64 / RESAMPLES as f64,
        resamples: RESAMPLES,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(f: impl Fn(f64) -> f64, evals: usize, every: f64) -> (Vec<f64>, Vec<f64>) {
        let steps: Vec<f64> = (1..=evals).map(|i| i as f64 * every).collect();
        let values = steps.iter().map(|&s| f(s)).collect();
        (steps, values)
    }

    fn input<'a>(
        steps: &'a [f64],
        values: &'a [f64],
        higher: bool,
        target: f64,
        budget: f64,
        every: f64,
        floor: f64,
    ) -> CurveSoFar<'a> {
        let done = *steps.last().unwrap();
        CurveSoFar {
            steps,
            values,
            higher_is_better: higher,
            target,
            budget_steps: budget,
            remaining_evals: ((budget - done) / every).round() as usize,
            noise_floor: floor,
        }
    }

    #[test]
    fn fit_recovers_a_power_law() {
        let x: Vec<f64> = (1..=20).map(|i| i as f64 / 20.0).collect();
        let g: Vec<f64> = x.iter().map(|&v| 0.9 - 0.1 * v.powf(-0.5)).collect();
        let law = fit(&x, &g).unwrap();
        assert!((law.at(1.0) - 0.8).abs() < 2e-3, "{law:?}");
        assert!((law.a - 0.9).abs() < 0.02, "{law:?}");
    }

    /// A converging curve that will pass T at the end of its budget is never stopped, at any
    /// point of its curve: the forecast is optimistic where it is unsure.
    #[test]
    fn converging_curve_that_reaches_t_is_not_stopped() {
        // Accuracy 0.995 - 0.024 (s / 10,000)^-0.4 reaches 0.97 only after step 9,500 of
        // 10,000 (0.971 at the end).
        let f = |s: f64| 0.995 - 0.024 * (s / 10_000.0).powf(-0.4);
        let (steps, values) = curve(f, 100, 100.0);
        for k in 3..=values.len() {
            let fc = forecast(&input(
                &steps[..k],
                &values[..k],
                true,
                0.97,
                10_000.0,
                100.0,
                0.001,
            ));
            if let Some(fc) = fc {
                assert!(!fc.stops(), "stopped at eval {k}: {fc:?}");
            }
        }
    }

    /// A plateau well below T is stopped, and the forecast says why: its prediction lies
    /// between the plateau and T (a power law fitted to an exponential approach is optimistic,
    /// which errs on the side of running on).
    #[test]
    fn plateau_below_t_is_stopped() {
        let f = |s: f64| 0.85 - 0.2 * (-s / 300.0).exp();
        let (steps, values) = curve(f, 30, 100.0);
        let fc = forecast(&input(&steps, &values, true, 0.97, 5_000.0, 100.0, 0.0035)).unwrap();
        assert!(fc.stops(), "{fc:?}");
        assert!(
            fc.predicted_final > 0.84 && fc.predicted_final < 0.9,
            "{fc:?}"
        );
        // Too early: under 10 % of the budget or fewer than 3 evals.
        assert!(forecast(&input(
            &steps[..4],
            &values[..4],
            true,
            0.97,
            5_000.0,
            100.0,
            0.0035
        ))
        .is_none());
        assert!(forecast(&input(
            &steps[..2],
            &values[..2],
            true,
            0.97,
            200.0,
            100.0,
            0.0
        ))
        .is_none());
    }

    /// A noisy curve (sd 0.01) whose mean sits 0.01 below T at the end is not stopped: the
    /// luckiest of its remaining evals may still pass T. One 0.1 below T is.
    #[test]
    fn noisy_curves() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let noise: Vec<f64> = (0..40).map(|_| 0.01 * normal(&mut rng)).collect();
        for (gap, stops) in [(0.01, false), (0.1, true)] {
            let f = |s: f64| 0.97 - gap - 0.05 * (s / 4_000.0).powf(-0.3) + 0.05;
            let (steps, mut values) = curve(f, 20, 100.0);
            for (v, e) in values.iter_mut().zip(&noise) {
                *v += e;
            }
            let fc = forecast(&input(&steps, &values, true, 0.97, 4_000.0, 100.0, 0.0)).unwrap();
            assert_eq!(fc.stops(), stops, "gap {gap}: {fc:?}");
        }
    }

    /// A loss (lower is better) is handled in its own direction.
    #[test]
    fn loss_curves_in_their_direction() {
        // Loss 2.5 -> plateau 2.2, target 1.9: hopeless. Loss converging to 1.7: fine.
        for (floor, stops) in [(2.2, true), (1.7, false)] {
            let f = |s: f64| floor + 0.5 * (s / 100.0).powf(-0.7);
            let (steps, values) = curve(f, 30, 100.0);
            let fc = forecast(&input(&steps, &values, false, 1.9, 6_000.0, 100.0, 0.0)).unwrap();
            assert_eq!(fc.stops(), stops, "floor {floor}: {fc:?}");
            assert!(fc.predicted_final > floor - 0.05, "{fc:?}");
        }
    }
}
