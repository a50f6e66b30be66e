//! The leaderboard: what every export shows, computed once from the run records.
//!
//! Owns: grouping runs into tables (one section per task and target; inside it one table per
//! boundary and energy class, so measured and estimated rows, or rows of different boundaries,
//! are never ranked together), the per-system table of the baseline (hardware evaluators), the
//! per-variant table with its statistics and the seed-paired comparison with the baseline on
//! the same system, and the phase breakdown of pipelines.
//! Must not: format numbers for a medium (the exporters do), read files, or change a number
//! it was given: every figure here is a statistic (see `crate::stats`) of the run files.

use super::load::LoadedRun;
use crate::record::curve::Status;
use crate::record::{RunRecord, RunVariant};
use crate::spec::variant::Variant;
use crate::stats::{self, OlympicMean, OutlierSide, Verdict};
use serde::Serialize;
use std::collections::BTreeMap;

/// Bumped when the shape of `leaderboard.json` changes incompatibly.
pub const LEADERBOARD_FORMAT_VERSION: u32 = 1;

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// A confidence interval; `null` ends are "not reached" (a DNF inside the interval).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ci {
    pub lo: Option<f64>,
    pub hi: Option<f64>,
}

impl From<stats::Interval> for Ci {
    fn from(i: stats::Interval) -> Self {
        Ci {
            lo: finite(i.lo),
            hi: finite(i.hi),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EnergyClass {
    /// Every component of every run measured (counter or integrated power).
    Measured,
    /// At least one component estimated or unavailable: never ranked with measurements.
    Estimated,
    /// Measured, but on a GPU that processes outside the job also used (`gpu_shared`) or a MIG
    /// slice (`gpu_mig`): whole-device energy, never ranked with exclusive runs.
    Shared,
}

impl EnergyClass {
    pub fn of(r: &RunRecord) -> EnergyClass {
        let all =
            r.energy.all_measured && r.energy.components.iter().all(|c| c.source.is_measured());
        let shared = r
            .energy
            .flags
            .iter()
            .any(|f| f == "gpu_shared" || f == "gpu_mig");
        match (all, shared) {
            (false, _) => EnergyClass::Estimated,
            (true, true) => EnergyClass::Shared,
            (true, false) => EnergyClass::Measured,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            EnergyClass::Measured => "measured",
            EnergyClass::Estimated => "estimated",
            EnergyClass::Shared => "shared",
        }
    }
}

/// The baseline a variant is compared with: f32, dense, from scratch, real data.
pub fn is_baseline(v: &Variant) -> bool {
    v.is_baseline()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemRef {
    pub id: String,
    /// Accelerator if any, else the CPU model, with the thread count, and the engine that
    /// trained the runs: every row says what trained it.
    pub label: String,
    /// What trained the runs: `joulebench/candle 0.11.1`, `exec: torch 2.9.1`, ...
    pub engine: String,
    pub cpu_model: String,
    pub logical_cpus: usize,
    pub accelerator: Option<String>,
    pub device: String,
}

impl SystemRef {
    fn of(r: &RunRecord) -> SystemRef {
        let s = &r.system;
        let hardware = match &s.accelerator {
            Some(a) => format!("{a} ({}, {} threads)", s.cpu_model, s.logical_cpus),
            None => format!("{} ({} threads)", s.cpu_model, s.logical_cpus),
        };
        let engine = r.engine_label();
        SystemRef {
            id: s.system_id.clone(),
            label: format!("{hardware}; {engine}"),
            engine,
            cpu_model: s.cpu_model.clone(),
            logical_cpus: s.logical_cpus,
            accelerator: s.accelerator.clone(),
            device: r.device.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatusCounts {
    pub ok: usize,
    pub dnf: usize,
    pub diverged: usize,
    pub failed: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRef {
    pub run_id: String,
    pub seed: u64,
    pub status: Status,
    /// null when the run did not reach the target.
    pub ett_j: Option<f64>,
    /// Gross energy of the whole measured window.
    pub energy_j: f64,
    pub final_quality: Option<f64>,
    pub outlier: Option<OutlierSide>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupStats {
    /// N: runs in the group.
    pub runs: usize,
    /// k: runs that reached the target.
    pub converged: usize,
    pub status: StatusCounts,
    pub seeds: Vec<u64>,
    /// Median ETT; null when half or more of the runs did not reach the target.
    pub median_ett_j: Option<f64>,
    pub median_ett_ci_j: Option<Ci>,
    pub olympic_mean_ett_j: Option<f64>,
    /// Why there is no olympic mean (too few runs, two or more DNFs).
    pub olympic_mean_note: Option<String>,
    /// Over the runs that reached the target.
    pub sd_ett_j: Option<f64>,
    pub cv_ett: Option<f64>,
    /// JPP of the median ETT: median_ett_j / (100 (T - c)).
    pub median_jpp_j_per_pp: Option<f64>,
    pub median_ttt_s: Option<f64>,
    /// Gross energy of the whole window (to the target, or the whole budget for DNFs).
    pub median_energy_j: Option<f64>,
    pub median_net_energy_j: Option<f64>,
    pub median_power_w: Option<f64>,
    pub mean_final_quality: Option<f64>,
    pub sd_final_quality: Option<f64>,
    /// One line per run that did not finish ok (the DNF footnotes).
    pub notes: Vec<String>,
    pub run_list: Vec<RunRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The baseline variant's name.
    pub baseline: String,
    pub pairs: usize,
    pub both_reached: usize,
    /// Relative change in ETT (geometric mean of paired ratios - 1); -0.2 = 20 % less energy.
    pub change: Option<f64>,
    pub change_ci: Option<Ci>,
    pub p_better: Option<f64>,
    pub p_better_ci: Option<Ci>,
    pub verdict: Verdict,
    pub reason: String,
    /// Set when a precision variant's GEMMs or convolutions did not run natively (the engine
    /// widened them, or the hardware lacks the instructions): the verdict describes the engine
    /// and the hardware, not the technique. The reason, one line.
    pub engine_limited: Option<String>,
    /// What the verdict cost and what the stopping rules saved; absent when neither rule was on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopping: Option<Stopping>,
}

/// The energy a verdict took under the stopping rules (`run --forecast-stop`,
/// `sweep --until-settled`), and estimates of what the rules saved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stopping {
    /// Runs of the variant and its paired baseline seeds, and their energy (whole windows).
    pub runs: usize,
    pub energy_spent_j: f64,
    /// Runs the forecast stopped, and the energy their remaining budget would have taken at
    /// each run's own energy per step so far (an estimate).
    pub stopped_by_forecast: usize,
    pub forecast_saved_j_estimated: f64,
    /// With sequential seeds: the variant's seeds not run because the verdict was settled, of
    /// the plan's most, and their energy at the mean of the variant's runs (an estimate).
    pub seeds_not_run: Option<u64>,
    pub max_seeds: Option<u64>,
    pub sequential_saved_j_estimated: Option<f64>,
}

/// What the budget left after a forecast stop would have cost at the run's own training rate:
/// energy per step between its first eval and the stop (what came before the first eval, such
/// as fitting a data generator, is not repeated).
fn forecast_saving_j(r: &RunRecord) -> f64 {
    let Some(f) = &r.forecast else {
        return 0.0;
    };
    let curve = &r.quality.curve;
    let at = curve.iter().rev().find(|p| p.step as f64 <= f.at_step);
    match (curve.first(), at) {
        (Some(a), Some(b)) if b.step > a.step => {
            let per_step = (b.energy_j - a.energy_j) / (b.step - a.step) as f64;
            (f.budget_steps - f.at_step).max(0.0) * per_step.max(0.0)
        }
        _ => 0.0,
    }
}

fn stopping(variant: &[&RunRecord], paired_base: &[&RunRecord]) -> Option<Stopping> {
    let all: Vec<&RunRecord> = variant.iter().chain(paired_base).copied().collect();
    let max_seeds = all
        .iter()
        .find_map(|r| r.plan.as_ref().and_then(|p| p.until_settled_max_seeds));
    let forecast_on = all.iter().any(|r| r.config.forecast_stop);
    if !forecast_on && max_seeds.is_none() {
        return None;
    }
    let stopped: Vec<&&RunRecord> = all.iter().filter(|r| r.forecast.is_some()).collect();
    let n = variant.len() as u64;
    let mean_j = variant.iter().map(|r| r.energy.total_j).sum::<f64>() / n.max(1) as f64;
    let not_run = max_seeds.map(|m| m.saturating_sub(n));
    Some(Stopping {
        runs: all.len(),
        energy_spent_j: all.iter().map(|r| r.energy.total_j).sum(),
        stopped_by_forecast: stopped.len(),
        forecast_saved_j_estimated: stopped.iter().map(|r| forecast_saving_j(r)).sum(),
        seeds_not_run: not_run,
        max_seeds,
        sequential_saved_j_estimated: not_run.map(|k| k as f64 * mean_j),
    })
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemRow {
    /// 1 = least energy to target; null when the median is a DNF.
    pub rank: Option<usize>,
    pub system: SystemRef,
    pub variant: String,
    pub stats: GroupStats,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantRow {
    pub system: SystemRef,
    /// The first run's `variant` object, as its run file holds it.
    pub variant: RunVariant,
    pub baseline: bool,
    /// Rank among the variants of the same system (null when the median is a DNF).
    pub rank_in_system: Option<usize>,
    pub stats: GroupStats,
    /// Against the baseline on the same system, paired by seed; null for the baseline.
    pub comparison: Option<Comparison>,
}

/// Medians over the runs of one group of a measured span (e.g. `prune` or `recover`), or of a
/// sum of spans (`prune + recover`: the part after dense training), or the whole pipeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseRow {
    pub system_id: String,
    pub variant: String,
    pub phase: String,
    pub runs: usize,
    pub median_energy_j: f64,
    /// Median of the span's share of the run's energy.
    pub median_share: f64,
    pub median_duration_s: f64,
}

/// One engine against the reference engine on the same system and variant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineRow {
    pub system: SystemRef,
    pub variant: String,
    /// `joulebench/candle ...` when it is one of the two, else the first by name.
    pub reference_engine: String,
    pub reference: GroupStats,
    pub stats: GroupStats,
    /// This engine's ETT against the reference's, paired by seed.
    pub comparison: Comparison,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankTable {
    /// G, H, G+H or N.
    pub boundary: String,
    pub energy: EnergyClass,
    /// Every `component: source` seen in the table's runs.
    pub sources: Vec<String>,
    /// The baseline, one row per system, ranked by median ETT.
    pub systems: Vec<SystemRow>,
    /// Every variant on every system, grouped by system.
    pub variants: Vec<VariantRow>,
    pub phases: Vec<PhaseRow>,
    /// The same variant on the same system trained by two engines (candle and a program run
    /// by `exec`), paired by seed: "candle vs PyTorch energy to target".
    pub engines: Vec<EngineRow>,
    /// A representative run for the power timeline (median ETT of the best system's baseline).
    pub timeline_run: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskBoard {
    pub task: String,
    pub metric: String,
    /// Which way the metric improves (`higher` for accuracy, `lower` for a loss).
    pub direction: crate::spec::task::Direction,
    /// The metric's unit: `fraction` (an accuracy) or `nats/char` (a loss); empty when a
    /// foreign program's metric has no known unit.
    pub unit: String,
    pub target: f64,
    pub chance: f64,
    pub tables: Vec<RankTable>,
}

impl TaskBoard {
    /// An accuracy in [0, 1], printed in percent; anything else is printed as is.
    pub fn is_accuracy(&self) -> bool {
        self.direction == crate::spec::task::Direction::Higher && self.unit == "fraction"
    }

    /// " nats/char", or nothing for a fraction or an unknown unit.
    pub fn unit_suffix(&self) -> String {
        if self.unit.is_empty() || self.unit == "fraction" {
            String::new()
        } else {
            format!(" {}", self.unit)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsInfo {
    pub confidence: f64,
    pub bootstrap_resamples: usize,
    pub bootstrap_seed: u64,
    pub noise_threshold: f64,
    pub min_pairs: usize,
    pub median_ci: String,
    pub olympic_mean: String,
    pub change: String,
    pub p_better: String,
    pub outliers: String,
}

impl Default for StatsInfo {
    fn default() -> Self {
        StatsInfo {
            confidence: stats::CONFIDENCE,
            bootstrap_resamples: stats::BOOTSTRAP_RESAMPLES,
            bootstrap_seed: stats::BOOTSTRAP_SEED,
            noise_threshold: stats::NOISE_THRESHOLD,
            min_pairs: stats::MIN_PAIRS,
            median_ci: "95 % percentile bootstrap of the median ETT (a DNF counts as infinite energy)".into(),
            olympic_mean: "mean ETT without the minimum and the maximum; one DNF is the maximum, two or more invalidate it".into(),
            change: "geometric mean over seeds of ETT(variant) / ETT(baseline), minus 1, with the 95 % Student-t CI of the mean log-ratio over seed pairs where both reached T".into(),
            p_better: "share of paired seeds where the variant reached T with less energy (DNF = infinite, ties = 1/2), Wilson 95 % interval".into(),
            outliers: "Tukey fences (1.5 IQR) over runs that reached T; flagged, never dropped".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leaderboard {
    /// "joulebench 0.1.0 (abc1234): joulebench report DIR": the first line of every file.
    pub generated_by: String,
    pub format_version: u32,
    pub folders: Vec<super::load::FolderSummary>,
    pub statistics: StatsInfo,
    pub tasks: Vec<TaskBoard>,
    /// One line per file or folder that was skipped.
    pub skipped: Vec<String>,
}

fn group_stats(runs: &[&RunRecord], target: f64, chance: f64) -> GroupStats {
    // One board holds one metric, so its runs share the direction.
    let dir = runs
        .first()
        .map(|r| r.quality.direction)
        .unwrap_or_default();
    let etts: Vec<f64> = runs.iter().map(|r| r.ett_or_inf()).collect();
    let flags = stats::tukey_outliers(&etts);
    let (converged, n) = stats::converged(&etts);
    let mut status = StatusCounts::default();
    let mut notes = Vec::new();
    for r in runs {
        match r.status {
            Status::Ok => status.ok += 1,
            Status::Dnf | Status::StoppedForecast => status.dnf += 1,
            Status::Diverged => status.diverged += 1,
            Status::Failed => status.failed += 1,
        }
        if r.status != Status::Ok || r.ett_or_inf().is_infinite() {
            let q = r
                .quality
                .best
                .map(|b| format!(", best {:.2} %", 100.0 * b))
                .unwrap_or_default();
            let err = r
                .error
                .as_deref()
                .map(|e| format!(": {}", e.lines().next().unwrap_or("")))
                .unwrap_or_default();
            notes.push(format!(
                "seed {}: {}{q} after {} steps{err}",
                r.seed,
                r.status.as_str(),
                r.steps
            ));
        }
    }
    let (median, ci) = match stats::median_ci(&etts) {
        Some((m, ci)) => (finite(m), Some(Ci::from(ci))),
        None => (None, None),
    };
    let (olympic, olympic_note) = match stats::olympic_mean(&etts) {
        OlympicMean::Value(v) => (Some(v), None),
        OlympicMean::TooFewRuns(k) => (None, Some(format!("needs at least 3 runs, has {k}"))),
        OlympicMean::TooManyDnf(k) => (None, Some(format!("{k} runs did not reach T"))),
    };
    let ttt: Vec<f64> = runs
        .iter()
        .map(|r| match r.ttt_s {
            Some(t) if r.ett_or_inf().is_finite() => t,
            _ => f64::INFINITY,
        })
        .collect();
    let energy: Vec<f64> = runs.iter().map(|r| r.energy.total_j).collect();
    let net: Vec<f64> = runs.iter().filter_map(|r| r.energy.net_j).collect();
    let power: Vec<f64> = runs.iter().map(|r| r.energy.average_power_w).collect();
    let finals: Vec<f64> = runs.iter().filter_map(|r| r.quality.final_value).collect();
    let run_list = runs
        .iter()
        .zip(&flags)
        .map(|(r, f)| RunRef {
            run_id: r.run_id.clone(),
            seed: r.seed,
            status: r.status,
            ett_j: finite(r.ett_or_inf()),
            energy_j: r.energy.total_j,
            final_quality: r.quality.final_value,
            outlier: *f,
        })
        .collect();
    GroupStats {
        runs: n,
        converged,
        status,
        seeds: runs.iter().map(|r| r.seed).collect(),
        median_ett_j: median,
        median_ett_ci_j: ci,
        olympic_mean_ett_j: olympic,
        olympic_mean_note: olympic_note,
        sd_ett_j: stats::sd(&etts),
        cv_ett: stats::cv(&etts),
        median_jpp_j_per_pp: median
            .and_then(|m| crate::record::metrics::jpp_in(m, target, chance, dir)),
        median_ttt_s: stats::median(&ttt).and_then(finite),
        median_energy_j: stats::median(&energy),
        median_net_energy_j: stats::median(&net),
        median_power_w: stats::median(&power),
        mean_final_quality: stats::mean_finite(&finals),
        sd_final_quality: stats::sd(&finals),
        notes,
        run_list,
    }
}

/// The first of `runs` whose precision record says its heavy arithmetic was not native.
fn engine_limit(runs: &[&RunRecord]) -> Option<String> {
    runs.iter()
        .find_map(|r| r.precision_record().and_then(|p| p.limiting()))
}

fn compare(
    variant: &[&RunRecord],
    baseline: &[&RunRecord],
    baseline_name: &str,
    engine_limited: Option<String>,
) -> Comparison {
    let base: BTreeMap<u64, f64> = baseline.iter().map(|r| (r.seed, r.ett_or_inf())).collect();
    let pairs: Vec<(f64, f64)> = variant
        .iter()
        .filter_map(|r| base.get(&r.seed).map(|b| (r.ett_or_inf(), *b)))
        .collect();
    let mut c = stats::compare_paired(&pairs);
    // Runs of a sequential sweep were stopped by looking at this comparison after every seed:
    // only the interval that stays valid under those looks may state the verdict.
    let max_seeds = variant
        .iter()
        .chain(baseline)
        .find_map(|r| r.plan.as_ref().and_then(|p| p.until_settled_max_seeds));
    if let Some(max) = max_seeds {
        sequential_verdict(&mut c, &pairs, max);
    }
    let seeds: Vec<u64> = variant.iter().map(|r| r.seed).collect();
    let paired_base: Vec<&RunRecord> = baseline
        .iter()
        .copied()
        .filter(|r| seeds.contains(&r.seed))
        .collect();
    Comparison {
        baseline: baseline_name.to_string(),
        pairs: c.pairs,
        both_reached: c.both_reached,
        change: c.change,
        change_ci: c.change_ci.map(Ci::from),
        p_better: c.p_better,
        p_better_ci: c.p_better_ci.map(Ci::from),
        verdict: c.verdict,
        reason: c.reason,
        engine_limited,
        stopping: stopping(variant, &paired_base),
    }
}

/// Replace a comparison's fixed-protocol interval and verdict by the sequential rule's
/// (`stats::sequential`), over the pairs in seed order, for runs made by `sweep --until-settled`.
fn sequential_verdict(c: &mut stats::PairedComparison, pairs: &[(f64, f64)], max_seeds: u64) {
    use stats::sequential::{settle, SeedPlan, Settled, DEFAULT_MIN_PAIRS};
    let plan = SeedPlan {
        min_pairs: DEFAULT_MIN_PAIRS,
        max_pairs: (max_seeds as usize).max(DEFAULT_MIN_PAIRS),
    };
    let (used, look) = settle(pairs, &plan);
    let (verdict, state) = match look.settled {
        Some(Settled::Saves) => (Verdict::SavesEnergy, "settled"),
        Some(Settled::Costs) => (Verdict::CostsEnergy, "settled"),
        Some(Settled::Equivalent) => (
            Verdict::NoSignificantDifference,
            "settled as equivalent within +-2 %",
        ),
        Some(Settled::DidNotReachTarget) => (
            Verdict::DidNotReachTarget,
            "a paired seed missed T: settled",
        ),
        Some(Settled::Unsettled) => (Verdict::NoSignificantDifference, "unsettled"),
        None => (Verdict::NoSignificantDifference, "still open"),
    };
    c.change_ci = look.interval;
    c.verdict = verdict;
    c.reason = format!(
        "{state} after {used} of at most {} seed pairs (sequential t interval, 5 % spent over {} looks)",
        plan.max_pairs,
        plan.looks()
    );
}

fn phase_rows(system_id: &str, variant: &str, runs: &[&RunRecord]) -> Vec<PhaseRow> {
    let with: Vec<&RunRecord> = runs
        .iter()
        .copied()
        .filter(|r| r.phases.len() >= 2)
        .collect();
    let Some(first) = with.first() else {
        return Vec::new();
    };
    let names: Vec<String> = first.phases.iter().map(|p| p.name.clone()).collect();
    // Only runs with the same phase sequence are summarised together.
    let same: Vec<&RunRecord> = with
        .iter()
        .copied()
        .filter(|r| r.phases.iter().map(|p| &p.name).eq(names.iter()))
        .collect();
    let mut spans: Vec<(String, std::ops::Range<usize>)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i..i + 1))
        .collect();
    if names.len() >= 3 {
        spans.push((names[1..].join(" + "), 1..names.len()));
    }
    spans.push(("whole pipeline".into(), 0..names.len()));
    spans
        .into_iter()
        .filter_map(|(phase, range)| {
            let energy: Vec<f64> = same
                .iter()
                .map(|r| r.phases[range.clone()].iter().map(|p| p.energy_j).sum())
                .collect();
            let share: Vec<f64> = same
                .iter()
                .zip(&energy)
                .map(|(r, e)| {
                    let total: f64 = r.phases.iter().map(|p| p.energy_j).sum();
                    if total > 0.0 {
                        e / total
                    } else {
                        0.0
                    }
                })
                .collect();
            let duration: Vec<f64> = same
                .iter()
                .map(|r| {
                    r.phases[range.clone()]
                        .iter()
                        .map(|p| p.end_s - p.start_s)
                        .sum()
                })
                .collect();
            Some(PhaseRow {
                system_id: system_id.to_string(),
                variant: variant.to_string(),
                phase,
                runs: same.len(),
                median_energy_j: stats::median(&energy)?,
                median_share: stats::median(&share)?,
                median_duration_s: stats::median(&duration)?,
            })
        })
        .collect()
}

fn sort_key(m: Option<f64>) -> f64 {
    m.unwrap_or(f64::INFINITY)
}

fn build_table(
    boundary: &str,
    energy: EnergyClass,
    runs: &[&RunRecord],
    target: f64,
    chance: f64,
) -> RankTable {
    let mut sources: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            r.energy
                .components
                .iter()
                .map(|c| format!("{}: {}", c.component, c.source.as_str()))
        })
        .collect();
    sources.sort();
    sources.dedup();
    // (system id, engine) -> variant name -> runs (seed order): each engine on a system is
    // ranked and compared with its own baseline.
    type SystemKey = (String, String);
    let mut by_system: BTreeMap<SystemKey, BTreeMap<String, Vec<&RunRecord>>> = BTreeMap::new();
    for r in runs {
        by_system
            .entry((r.system.system_id.clone(), r.engine_label()))
            .or_default()
            .entry(r.variant.name.clone())
            .or_default()
            .push(r);
    }
    for variants in by_system.values_mut() {
        for rs in variants.values_mut() {
            rs.sort_by(|a, b| a.seed.cmp(&b.seed).then(a.run_id.cmp(&b.run_id)));
        }
    }
    let mut systems = Vec::new();
    let mut variant_rows: Vec<VariantRow> = Vec::new();
    let mut phases = Vec::new();
    for variants in by_system.values() {
        let baseline = variants
            .iter()
            .find(|(_, rs)| is_baseline(&rs[0].variant))
            .map(|(name, rs)| (name.clone(), rs.clone()));
        let mut rows: Vec<VariantRow> = variants
            .iter()
            .map(|(name, rs)| {
                let base = is_baseline(&rs[0].variant);
                let comparison = match (&baseline, base) {
                    (Some((bname, brs)), false) => Some(compare(rs, brs, bname, engine_limit(rs))),
                    _ => None,
                };
                phases.extend(phase_rows(&rs[0].system.system_id, name, rs));
                VariantRow {
                    system: SystemRef::of(rs[0]),
                    variant: rs[0].variant.clone(),
                    baseline: base,
                    rank_in_system: None,
                    stats: group_stats(rs, target, chance),
                    comparison,
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            sort_key(a.stats.median_ett_j)
                .total_cmp(&sort_key(b.stats.median_ett_j))
                .then(a.variant.name.cmp(&b.variant.name))
        });
        let mut rank = 0;
        for row in rows.iter_mut() {
            if row.stats.median_ett_j.is_some() {
                rank += 1;
                row.rank_in_system = Some(rank);
            }
        }
        if let Some((name, rs)) = &baseline {
            systems.push(SystemRow {
                rank: None,
                system: SystemRef::of(rs[0]),
                variant: name.clone(),
                stats: group_stats(rs, target, chance),
            });
        }
        variant_rows.extend(rows);
    }
    systems.sort_by(|a, b| {
        sort_key(a.stats.median_ett_j)
            .total_cmp(&sort_key(b.stats.median_ett_j))
            .then(a.system.id.cmp(&b.system.id))
            .then(a.system.engine.cmp(&b.system.engine))
    });
    let mut rank = 0;
    for s in systems.iter_mut() {
        if s.stats.median_ett_j.is_some() {
            rank += 1;
            s.rank = Some(rank);
        }
    }
    // Variant rows follow the systems' ranking; systems without a baseline come last.
    let order: Vec<(String, String)> = systems
        .iter()
        .map(|s| (s.system.id.clone(), s.system.engine.clone()))
        .collect();
    variant_rows.sort_by_key(|r| {
        order
            .iter()
            .position(|(id, engine)| *id == r.system.id && *engine == r.system.engine)
            .unwrap_or(usize::MAX)
    });
    let engines = engine_rows(&by_system, target, chance);
    let timeline_run = systems
        .first()
        .map(|s| &s.stats.run_list)
        .or_else(|| variant_rows.first().map(|v| &v.stats.run_list))
        .and_then(|list| median_run(list));
    RankTable {
        boundary: boundary.to_string(),
        energy,
        sources,
        systems,
        variants: variant_rows,
        phases,
        engines,
        timeline_run,
    }
}

/// The reference engine among those that trained one variant on one system: joulebench's own
/// when present, else the first by name.
fn reference_engine(engines: &[&String]) -> usize {
    engines
        .iter()
        .position(|e| e.starts_with("joulebench/"))
        .unwrap_or(0)
}

/// Every (system, variant) trained by two or more engines: each other engine paired by seed
/// with the reference engine.
fn engine_rows(
    by_system: &BTreeMap<(String, String), BTreeMap<String, Vec<&RunRecord>>>,
    target: f64,
    chance: f64,
) -> Vec<EngineRow> {
    // system id -> variant -> engine -> runs
    type ByEngine<'r, 'a> = BTreeMap<&'r String, &'r Vec<&'a RunRecord>>;
    let mut grouped: BTreeMap<&String, BTreeMap<&String, ByEngine>> = BTreeMap::new();
    for ((system, engine), variants) in by_system {
        for (variant, rs) in variants {
            grouped
                .entry(system)
                .or_default()
                .entry(variant)
                .or_default()
                .insert(engine, rs);
        }
    }
    let mut out = Vec::new();
    for variants in grouped.values() {
        for (variant, engines) in variants {
            if engines.len() < 2 {
                continue;
            }
            let names: Vec<&String> = engines.keys().copied().collect();
            let reference = names[reference_engine(&names)];
            let ref_runs = engines[reference];
            for (engine, rs) in engines {
                if *engine == reference {
                    continue;
                }
                out.push(EngineRow {
                    system: SystemRef::of(rs[0]),
                    variant: (*variant).clone(),
                    reference_engine: reference.clone(),
                    reference: group_stats(ref_runs, target, chance),
                    stats: group_stats(rs, target, chance),
                    comparison: compare(rs, ref_runs, reference, {
                        let sides = [(*engine, rs.as_slice()), (reference, ref_runs.as_slice())];
                        let why: Vec<String> = sides
                            .iter()
                            .filter_map(|(e, r)| engine_limit(r).map(|l| format!("{e}: {l}")))
                            .collect();
                        (!why.is_empty()).then(|| why.join(" | "))
                    }),
                });
            }
        }
    }
    out
}

/// The run whose ETT is the (lower) median of the list, or the first run when none reached T.
fn median_run(list: &[RunRef]) -> Option<String> {
    let mut reached: Vec<&RunRef> = list.iter().filter(|r| r.ett_j.is_some()).collect();
    reached.sort_by(|a, b| sort_key(a.ett_j).total_cmp(&sort_key(b.ett_j)));
    let pick = if reached.is_empty() {
        list.first()
    } else {
        Some(reached[(reached.len() - 1) / 2])
    };
    pick.map(|r| r.run_id.clone())
}

/// Build the leaderboard. `runs` may come from several folders (machines) in any order.
/// The unit of a metric by its name: a shipped task's metric, MLPerf's `eval_accuracy`, or
/// nothing known (a foreign program's own key).
pub fn metric_unit(metric: &str, dir: crate::spec::task::Direction) -> String {
    let known = serde_json::from_value::<crate::spec::task::Metric>(serde_json::json!(metric)).ok();
    match (known, metric, dir) {
        (Some(m), _, _) => m.unit().into(),
        (None, "eval_accuracy", crate::spec::task::Direction::Higher) => "fraction".into(),
        _ => String::new(),
    }
}

pub fn build(
    runs: &[LoadedRun],
    generated_by: &str,
    folders: Vec<super::load::FolderSummary>,
    skipped: Vec<String>,
) -> Leaderboard {
    // (task, metric, target bits, chance bits): ETTs to different targets are not comparable.
    type TaskKey = (String, String, u64, u64);
    let mut by_task: BTreeMap<TaskKey, Vec<&RunRecord>> = BTreeMap::new();
    let mut skipped = skipped;
    let mut throughput = 0usize;
    for r in runs {
        // The throughput track has no target: J/sample in its run file, never ranked.
        if r.record.variant.data_source() == crate::spec::variant::DataSource::Random {
            throughput += 1;
            continue;
        }
        let q = &r.record.quality;
        by_task
            .entry((
                r.record.task.clone(),
                q.metric.clone(),
                q.target.to_bits(),
                q.chance.to_bits(),
            ))
            .or_default()
            .push(&r.record);
    }
    let tasks = by_task
        .into_iter()
        .map(|((task, metric, t, c), rs)| {
            let (target, chance) = (f64::from_bits(t), f64::from_bits(c));
            let direction = rs.first().map(|r| r.quality.direction).unwrap_or_default();
            let unit = rs
                .iter()
                .map(|r| r.quality.unit.clone())
                .find(|u| !u.is_empty())
                .unwrap_or_else(|| metric_unit(&metric, direction));
            let mut by_table: BTreeMap<(EnergyClass, String), Vec<&RunRecord>> = BTreeMap::new();
            for r in rs {
                by_table
                    .entry((EnergyClass::of(r), r.energy.boundary.as_str().to_string()))
                    .or_default()
                    .push(r);
            }
            TaskBoard {
                task,
                metric,
                direction,
                unit,
                target,
                chance,
                tables: by_table
                    .into_iter()
                    .map(|((class, boundary), rs)| {
                        build_table(&boundary, class, &rs, target, chance)
                    })
                    .collect(),
            }
        })
        .collect();
    if throughput > 0 {
        skipped.push(format!(
            "{throughput} random-tensors run(s): the throughput track (J/sample, J/step in their run files), never ranked"
        ));
    }
    Leaderboard {
        generated_by: generated_by.to_string(),
        format_version: LEADERBOARD_FORMAT_VERSION,
        folders,
        statistics: StatsInfo::default(),
        tasks,
        skipped,
    }
}
