//! Scoring a run from its learning curve (docs/design/measurement.md section 1).
//!
//! Owns: energy and time to target (ETT, TTT), joules per accuracy point (JPP) and its label,
//! the ETT ladder at 25/50/75/100 % of the way from chance to target, and quality within an
//! energy budget (Q@E); and [`score`], the one scoring step `run` and `exec` both take from a
//! finished run's curve to the run record's scores. Pure functions of the curve: nothing here
//! measures or reads files.

use crate::measure::{Boundary, ComponentEnergy};
use crate::record::curve::{CurvePoint, Status};
use serde::{Deserialize, Serialize};

use crate::spec::task::Direction;

/// The first eval reaching `target`: (energy_j, time_s), or None (DNF).
pub fn first_reaching(curve: &[CurvePoint], target: f64) -> Option<&CurvePoint> {
    first_reaching_in(curve, target, Direction::Higher)
}

/// The first eval at or beyond `target` in the metric's direction.
pub fn first_reaching_in(curve: &[CurvePoint], target: f64, dir: Direction) -> Option<&CurvePoint> {
    curve.iter().find(|p| dir.reached(p.value, target))
}

/// JPP = ETT / (100 * (T - c)), in joules per percentage point.
pub fn jpp(ett_j: f64, target: f64, chance: f64) -> Option<f64> {
    jpp_in(ett_j, target, chance, Direction::Higher)
}

/// JPP for either direction: ETT per 0.01 of the metric's improvement from c to T, that is
/// ETT / (100 |T - c|) with T beyond c in the metric's direction. For an accuracy in [0, 1]
/// 0.01 is one percentage point; for a loss in nats it is 0.01 nat.
pub fn jpp_in(ett_j: f64, target: f64, chance: f64, dir: Direction) -> Option<f64> {
    let span = 100.0 * (target - chance) * dir.sign();
    (span > 0.0 && ett_j.is_finite()).then(|| ett_j / span)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LadderRung {
    /// Fraction of the way from chance to target: 0.25, 0.5, 0.75, 1.0.
    pub fraction: f64,
    /// The quality level c + fraction * (T - c).
    pub level: f64,
    pub energy_j: Option<f64>,
    pub time_s: Option<f64>,
}

pub fn ladder(curve: &[CurvePoint], target: f64, chance: f64) -> Vec<LadderRung> {
    ladder_in(curve, target, chance, Direction::Higher)
}

/// The ladder for either direction (the levels run from c towards T).
pub fn ladder_in(
    curve: &[CurvePoint],
    target: f64,
    chance: f64,
    dir: Direction,
) -> Vec<LadderRung> {
    [0.25, 0.5, 0.75, 1.0]
        .into_iter()
        .map(|fraction| {
            // Rounded so that 1.0 gives exactly T, not T minus a rounding error.
            let level = if fraction == 1.0 {
                target
            } else {
                chance + fraction * (target - chance)
            };
            let hit = first_reaching_in(curve, level, dir);
            LadderRung {
                fraction,
                level,
                energy_j: hit.map(|p| p.energy_j),
                time_s: hit.map(|p| p.time_s),
            }
        })
        .collect()
}

/// The best value of a curve in the metric's direction.
pub fn best_in(curve: &[CurvePoint], dir: Direction) -> Option<f64> {
    let vals = curve.iter().map(|c| c.value);
    match dir {
        Direction::Higher => vals.reduce(f64::max),
        Direction::Lower => vals.reduce(f64::min),
    }
}

/// Best quality reached by any eval whose cumulative energy is within `budget_j` (Q@E).
pub fn quality_at_energy(curve: &[CurvePoint], budget_j: f64) -> Option<f64> {
    quality_at_energy_in(curve, budget_j, Direction::Higher)
}

/// Q@E for either direction: the best value in the metric's direction within the budget.
pub fn quality_at_energy_in(curve: &[CurvePoint], budget_j: f64, dir: Direction) -> Option<f64> {
    let vals = curve
        .iter()
        .filter(|p| p.energy_j <= budget_j)
        .map(|p| p.value);
    match dir {
        Direction::Higher => vals.reduce(f64::max),
        Direction::Lower => vals.reduce(f64::min),
    }
}

/// What scoring a run needs: its scored evals (the variant's own), how it ended, the task's
/// target and chance, and what its energy is made of (for the JPP's label).
#[derive(Debug, Clone, Copy)]
pub struct ScoreInputs<'a> {
    /// The evals that score the variant, in order (energy and time since `run_start`).
    pub scored: &'a [CurvePoint],
    pub status: Status,
    pub target: f64,
    pub chance: f64,
    pub direction: Direction,
    pub boundary: Boundary,
    /// The energy's sources (`measured_counter`, `estimated_tdp_load`, ...).
    pub sources: &'a [String],
    /// The task's energy budget, for Q@E.
    pub energy_budget_j: Option<f64>,
}

/// The scores a run record carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// ETT and TTT: the first eval at or beyond T, only for a run that ended `ok`.
    pub ett_j: Option<f64>,
    pub ttt_s: Option<f64>,
    pub jpp: Option<f64>,
    pub jpp_label: Option<String>,
    pub final_value: Option<f64>,
    pub best: Option<f64>,
    pub ladder: Vec<LadderRung>,
    pub quality_at_energy_budget: Option<f64>,
}

/// The one scoring step of `run` and `exec`: pure, from the scored curve to the record's scores.
pub fn score(i: &ScoreInputs<'_>) -> Scores {
    let hit = first_reaching_in(i.scored, i.target, i.direction);
    let (ett_j, ttt_s) = match (hit, i.status) {
        (Some(h), Status::Ok) => (Some(h.energy_j), Some(h.time_s)),
        _ => (None, None),
    };
    let jpp = ett_j.and_then(|e| jpp_in(e, i.target, i.chance, i.direction));
    Scores {
        ett_j,
        ttt_s,
        jpp,
        jpp_label: jpp
            .map(|j| jpp_label(j, i.target, i.chance, i.direction, i.boundary, i.sources)),
        final_value: i.scored.last().map(|c| c.value),
        best: best_in(i.scored, i.direction),
        ladder: ladder_in(i.scored, i.target, i.chance, i.direction),
        quality_at_energy_budget: i
            .energy_budget_j
            .and_then(|b| quality_at_energy_in(i.scored, b, i.direction)),
    }
}

/// The sources of a run's energy components, in order, repeats merged.
pub fn sources_of(components: &[ComponentEnergy]) -> Vec<String> {
    let mut s: Vec<String> = components
        .iter()
        .map(|c| c.source.as_str().to_string())
        .collect();
    s.dedup();
    s
}

/// "412.000 J/pp @ 97.00 % (c = 11.35 %, H, measured_counter)": a JPP is never printed without
/// T, c and the boundary. A lower-is-better metric is per 0.01 of the metric, with its direction.
pub fn jpp_label(
    jpp: f64,
    target: f64,
    chance: f64,
    dir: Direction,
    boundary: Boundary,
    sources: &[String],
) -> String {
    match dir {
        Direction::Higher => format!(
            "{jpp:.3} J/pp @ {:.2} % (c = {:.2} %, {}, {})",
            100.0 * target,
            100.0 * chance,
            boundary.as_str(),
            sources.join("+")
        ),
        Direction::Lower => format!(
            "{jpp:.3} J per 0.01 @ {target:.4} (c = {chance:.4}, lower is better, {}, {})",
            boundary.as_str(),
            sources.join("+")
        ),
    }
}

/// The binomial noise floor of an accuracy measured on n predictions: sqrt(q(1-q)/n).
pub fn binomial_sd(q: f64, n: usize) -> f64 {
    if n == 0 {
        return f64::NAN;
    }
    (q * (1.0 - q) / n as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(step: usize, energy_j: f64, value: f64) -> CurvePoint {
        CurvePoint {
            step,
            epoch: step as f64 / 10.0,
            energy_j,
            time_s: energy_j / 10.0,
            value,
            train_loss: 0.0,
            phase: "train".into(),
            scored: true,
        }
    }

    #[test]
    fn ett_is_the_first_eval_at_or_above_target() {
        let c = [pt(10, 100.0, 0.5), pt(20, 200.0, 0.97), pt(30, 300.0, 0.99)];
        let hit = first_reaching(&c, 0.97).unwrap();
        assert_eq!((hit.energy_j, hit.step), (200.0, 20));
        assert!(first_reaching(&c, 0.995).is_none());
    }

    #[test]
    fn one_scoring_step_for_every_run() {
        let c = [pt(10, 100.0, 0.5), pt(20, 200.0, 0.97), pt(30, 300.0, 0.96)];
        let sources = ["measured_counter".to_string()];
        let inputs = ScoreInputs {
            scored: &c,
            status: Status::Ok,
            target: 0.97,
            chance: 0.1,
            direction: Direction::Higher,
            boundary: Boundary::Gpu,
            sources: &sources,
            energy_budget_j: Some(150.0),
        };
        let s = score(&inputs);
        assert_eq!((s.ett_j, s.ttt_s), (Some(200.0), Some(20.0)));
        assert!((s.jpp.unwrap() - 200.0 / 87.0).abs() < 1e-12);
        assert_eq!(
            s.jpp_label.as_deref(),
            Some("2.299 J/pp @ 97.00 % (c = 10.00 %, G, measured_counter)")
        );
        assert_eq!((s.final_value, s.best), (Some(0.96), Some(0.97)));
        assert_eq!(s.ladder.len(), 4);
        assert_eq!(s.quality_at_energy_budget, Some(0.5));
        // A run that did not end `ok` has no ETT even when an eval touched T.
        let dnf = score(&ScoreInputs {
            status: Status::Dnf,
            ..inputs
        });
        assert_eq!((dnf.ett_j, dnf.jpp, dnf.jpp_label), (None, None, None));
        assert_eq!(dnf.best, Some(0.97));
        // Lower is better: the label says so, per 0.01 of the metric.
        let loss = [pt(1, 10.0, 2.5), pt(2, 20.0, 1.5)];
        let l = score(&ScoreInputs {
            scored: &loss,
            target: 1.6,
            chance: 3.0,
            direction: Direction::Lower,
            energy_budget_j: None,
            ..inputs
        });
        assert_eq!(l.ett_j, Some(20.0));
        assert!(l.jpp_label.unwrap().contains("lower is better"));
        assert_eq!(l.quality_at_energy_budget, None);
    }

    #[test]
    fn jpp_by_hand() {
        // 412 J to go from 11.35 % chance to 97 %: 412 / 85.65 = 4.8103 J/pp.
        let j = jpp(412.0, 0.97, 0.1135).unwrap();
        assert!((j - 412.0 / 85.65).abs() < 1e-9);
        assert!(jpp(1.0, 0.5, 0.5).is_none());
        assert!(jpp(f64::INFINITY, 0.9, 0.1).is_none());
    }

    #[test]
    fn ladder_levels_and_hits() {
        let c = [pt(1, 10.0, 0.31), pt(2, 20.0, 0.6), pt(3, 30.0, 0.95)];
        let l = ladder(&c, 0.9, 0.1);
        let levels: Vec<f64> = l.iter().map(|r| r.level).collect();
        assert!((levels[0] - 0.3).abs() < 1e-12 && levels[3] == 0.9);
        assert_eq!(l[0].energy_j, Some(10.0));
        assert_eq!(l[1].energy_j, Some(20.0)); // 0.5 reached at 0.6
        assert_eq!(l[2].energy_j, Some(30.0)); // 0.7 reached at 0.95
        assert_eq!(l[3].energy_j, Some(30.0));
    }

    #[test]
    fn q_at_e_takes_best_within_budget() {
        let c = [pt(1, 10.0, 0.3), pt(2, 20.0, 0.6), pt(3, 30.0, 0.5)];
        assert_eq!(quality_at_energy(&c, 25.0), Some(0.6));
        assert_eq!(quality_at_energy(&c, 5.0), None);
    }

    #[test]
    fn loss_targets_score_in_their_direction() {
        let c = [pt(1, 10.0, 2.5), pt(2, 20.0, 1.9), pt(3, 30.0, 1.7)];
        let hit = first_reaching_in(&c, 1.88, Direction::Lower).unwrap();
        assert_eq!(hit.step, 3);
        assert_eq!(
            first_reaching_in(&c, 1.9, Direction::Lower).unwrap().step,
            2
        );
        // 30 J from a chance loss of 3.0 nats to 1.88: 30 / (100 x 1.12) J per 0.01 nat.
        let j = jpp_in(30.0, 1.88, 3.0, Direction::Lower).unwrap();
        assert!((j - 30.0 / 112.0).abs() < 1e-12);
        assert!(jpp_in(30.0, 3.5, 3.0, Direction::Lower).is_none());
        let l = ladder_in(&c, 1.7, 2.9, Direction::Lower);
        assert_eq!(l[0].energy_j, Some(10.0)); // level 2.6 reached at 2.5
        assert_eq!(l[3].energy_j, Some(30.0));
        // Higher keeps the accuracy functions exactly.
        assert_eq!(
            jpp(412.0, 0.97, 0.1135),
            jpp_in(412.0, 0.97, 0.1135, Direction::Higher)
        );
    }

    #[test]
    fn binomial_floor() {
        assert!((binomial_sd(0.97, 10_000) - 0.0017059).abs() < 1e-6);
    }
}
