//! `replay`: the stopping rules of `stats::sequential` and `stats::forecast` applied offline to
//! finished results folders, to show what they would have saved and what they would have got
//! wrong.
//!
//! Owns: grouping a folder's runs into comparisons (as the leaderboard does: task and target,
//! energy class and boundary, system and engine, variant against the baseline, seeds paired),
//! replaying the forecast eval by eval on each run's recorded curve (each eval carries the
//! energy spent up to it, so a stop at any eval is replayed exactly), replaying the sequential
//! seed rule on each comparison, and the energy and verdict counts that result.
//! Must not: write anything, or render beyond its own table.
//!
//! Energy of a run under a rule: its whole window (`energy.total_j`) when it runs to the end;
//! when the forecast stops it after eval `k`, the window minus what the run spent after that
//! eval (`curve[last].energy_j - curve[k].energy_j`); nothing for a seed the sequential rule
//! never starts. Runs outside every comparison (a task with only its baseline, the throughput
//! track, pretraining sources) count in full under every rule, except that the forecast may
//! stop them too.

use super::report::load::{self, LoadIssue};
use super::report::model::{is_baseline, EnergyClass};
use crate::record::curve::Status;
use crate::record::RunRecord;
use crate::spec::task::Direction;
use crate::stats::forecast::{self, CurveSoFar, Forecast};
use crate::stats::sequential::{self, SeedPlan, Settled};
use crate::stats::{self, Verdict};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A folder that cannot be replayed: one line, exit 2.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Folder(#[from] load::FolderError),
    #[error("{0}")]
    Load(LoadIssue),
    #[error("{path}: no run has an eval curve, so no stop can be replayed")]
    NoCurves { path: String },
}

/// Which rules a replay applies; `None` max = the seeds each comparison has in the folder.
#[derive(Debug, Clone, Copy)]
pub struct ReplaySettings {
    pub min_seeds: usize,
    pub max_seeds: Option<usize>,
}

impl Default for ReplaySettings {
    fn default() -> Self {
        ReplaySettings {
            min_seeds: sequential::DEFAULT_MIN_PAIRS,
            max_seeds: None,
        }
    }
}

/// Energy under each combination of rules, in joules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RuleEnergy {
    pub fixed_j: f64,
    pub sequential_j: f64,
    pub forecast_j: f64,
    pub both_j: f64,
}

impl RuleEnergy {
    fn add(&mut self, o: &RuleEnergy) {
        self.fixed_j += o.fixed_j;
        self.sequential_j += o.sequential_j;
        self.forecast_j += o.forecast_j;
        self.both_j += o.both_j;
    }
    /// Share of the fixed protocol's energy a rule saves.
    pub fn saved(&self, rule_j: f64) -> f64 {
        if self.fixed_j > 0.0 {
            1.0 - rule_j / self.fixed_j
        } else {
            0.0
        }
    }
}

/// One comparison whose replayed verdict is not the fixed protocol's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerdictChange {
    pub task: String,
    pub system: String,
    pub variant: String,
    /// The fixed protocol's verdict over every seed in the folder.
    pub fixed: String,
    /// The rule's: `saves energy`, `equivalent within +-2 %`, `unsettled`, ...
    pub replayed: String,
    /// Which rules: `sequential` or `both`.
    pub rules: String,
    /// `cautious` (the fixed protocol claims a difference, the rule does not) or
    /// `contradicts`.
    pub kind: String,
    pub seeds_used: usize,
}

/// Counts of the forecast's decisions over the runs it could judge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ForecastCounts {
    /// Runs with a curve and a budget in steps.
    pub judged: usize,
    /// Judged runs that reached T.
    pub reached: usize,
    /// Runs the forecast stopped that would have reached T.
    pub false_stops: usize,
    /// Runs the forecast stopped that did not reach T.
    pub true_stops: usize,
    /// Runs without a curve or a budget in steps (counted in full).
    pub not_judged: usize,
}

impl ForecastCounts {
    fn add(&mut self, o: &ForecastCounts) {
        self.judged += o.judged;
        self.reached += o.reached;
        self.false_stops += o.false_stops;
        self.true_stops += o.true_stops;
        self.not_judged += o.not_judged;
    }
}

/// A run the forecast stopped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastStop {
    pub run_id: String,
    /// Whether the run, left alone, reached T (a false stop).
    pub reached: bool,
    /// Energy the stop saved, in joules.
    pub saved_j: f64,
    pub forecast: Forecast,
}

/// Counts of the sequential rule's outcomes over the comparisons.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SequentialCounts {
    pub comparisons: usize,
    /// Settled before the folder's last seed.
    pub settled_early: usize,
    /// Settled at the folder's last seed, or unsettled there.
    pub used_every_seed: usize,
    /// Comparisons whose verdict (sequential rule alone) differs from the fixed protocol's.
    pub differ: usize,
    /// The same with the forecast too.
    pub differ_both: usize,
    /// Of `differ`: the rule claims what the fixed protocol does not (a saving or a cost it
    /// did not find, the opposite direction, a different DNF verdict). The rest are more
    /// cautious: the fixed protocol claims a difference the rule's wider interval does not.
    pub contradict: usize,
    pub contradict_both: usize,
}

impl SequentialCounts {
    fn add(&mut self, o: &SequentialCounts) {
        self.comparisons += o.comparisons;
        self.settled_early += o.settled_early;
        self.used_every_seed += o.used_every_seed;
        self.differ += o.differ;
        self.differ_both += o.differ_both;
        self.contradict += o.contradict;
        self.contradict_both += o.contradict_both;
    }
}

/// The replay of one results folder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FolderReplay {
    pub folder: String,
    pub runs: usize,
    pub energy: RuleEnergy,
    pub sequential: SequentialCounts,
    pub forecast: ForecastCounts,
    pub changes: Vec<VerdictChange>,
    pub stops: Vec<ForecastStop>,
}

/// Every folder's replay and their sum.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replay {
    pub folders: Vec<FolderReplay>,
    pub total: FolderReplay,
}

/// What the forecast does to one run.
#[derive(Debug, Clone)]
struct RunReplay {
    /// Energy of the whole run, and with the forecast applied.
    full_j: f64,
    forecast_j: f64,
    /// ETT as recorded, and with the forecast applied (`inf` when stopped).
    ett: f64,
    ett_forecast: f64,
    /// The stopping forecast, if any.
    stop: Option<Forecast>,
    judged: bool,
}

/// The run's budget in steps: `max_steps`, or `max_epochs` at the curve's steps per epoch,
/// whichever is smaller. `None` for a run with no task spec (an `exec` run's declared task) or
/// no curve to read steps per epoch from.
fn budget_steps(r: &RunRecord) -> Option<f64> {
    let crate::record::setup::TaskConfig::Spec(spec) = &r.config.task else {
        return None;
    };
    let last = r.quality.curve.iter().rev().find(|p| p.epoch > 0.0)?;
    let per_epoch = (last.step as f64 / last.epoch).round();
    let steps = spec.budget.steps(per_epoch as usize) as f64;
    (per_epoch.is_finite() && steps > 0.0).then_some(steps)
}

fn replay_run(r: &RunRecord) -> RunReplay {
    let full_j = r.energy.total_j;
    let ett = r.ett_or_inf();
    let mut out = RunReplay {
        full_j,
        forecast_j: full_j,
        ett,
        ett_forecast: ett,
        stop: None,
        judged: false,
    };
    let curve: Vec<_> = r.quality.curve.iter().filter(|p| p.scored).collect();
    let (Some(budget), Some(last)) = (budget_steps(r), r.quality.curve.last()) else {
        return out;
    };
    if curve.is_empty() {
        return out;
    }
    out.judged = true;
    let higher = r.quality.direction == Direction::Higher;
    let reached = |v: f64| {
        if higher {
            v >= r.quality.target
        } else {
            v <= r.quality.target
        }
    };
    let steps: Vec<f64> = curve.iter().map(|p| p.step as f64).collect();
    let values: Vec<f64> = curve.iter().map(|p| p.value).collect();
    let floor = forecast::eval_noise_floor(higher, r.quality.target, r.quality.eval_predictions);
    for k in forecast::MIN_EVALS..=curve.len() {
        // A stop is decided after eval k; the run reached T at or before it: nothing to stop.
        if reached(values[k - 1]) {
            break;
        }
        let every = if k >= 2 {
            steps[k - 1] - steps[k - 2]
        } else {
            steps[0]
        };
        let remaining = forecast::remaining_evals(budget, steps[k - 1], every);
        if remaining == 0 {
            break;
        }
        let input = CurveSoFar {
            steps: &steps[..k],
            values: &values[..k],
            higher_is_better: higher,
            target: r.quality.target,
            budget_steps: budget,
            remaining_evals: remaining,
            noise_floor: floor,
        };
        if let Some(fc) = forecast::forecast(&input) {
            if fc.stops() {
                let after = last.energy_j - curve[k - 1].energy_j;
                out.forecast_j = (full_j - after.max(0.0)).max(0.0);
                out.ett_forecast = f64::INFINITY;
                out.stop = Some(fc);
                break;
            }
        }
    }
    out
}

fn verdict_of(s: Option<Settled>) -> Verdict {
    match s {
        Some(Settled::Saves) => Verdict::SavesEnergy,
        Some(Settled::Costs) => Verdict::CostsEnergy,
        Some(Settled::DidNotReachTarget) => Verdict::DidNotReachTarget,
        Some(Settled::Equivalent | Settled::Unsettled) | None => Verdict::NoSignificantDifference,
    }
}

fn settled_label(s: Option<Settled>, used: usize, plan: &SeedPlan) -> String {
    match s {
        Some(s) => s.as_str().to_string(),
        None => format!("open after {used} of {} seeds", plan.max_pairs),
    }
}

/// Replay one folder's runs (already read).
fn replay_runs(folder: &str, runs: &[RunRecord], settings: &ReplaySettings) -> FolderReplay {
    let replays: Vec<RunReplay> = runs.iter().map(replay_run).collect();
    // Per run: is it started under the sequential rule? Every run is, unless a comparison
    // says its seed is never needed.
    let mut needed = vec![true; runs.len()];
    let mut needed_both = vec![true; runs.len()];
    let mut seq = SequentialCounts::default();
    let mut changes = Vec::new();
    // (task, metric, target, chance, class, boundary, system, engine) -> variant -> run indices.
    type Key = (
        String,
        String,
        u64,
        u64,
        EnergyClass,
        String,
        String,
        String,
    );
    let mut groups: BTreeMap<Key, BTreeMap<String, Vec<usize>>> = BTreeMap::new();
    for (i, r) in runs.iter().enumerate() {
        if r.variant.data_source() == crate::spec::variant::DataSource::Random {
            continue;
        }
        let q = &r.quality;
        groups
            .entry((
                r.task.clone(),
                q.metric.clone(),
                q.target.to_bits(),
                q.chance.to_bits(),
                EnergyClass::of(r),
                r.energy.boundary.as_str().to_string(),
                r.system.system_id.clone(),
                r.engine_label(),
            ))
            .or_default()
            .entry(r.variant.name.clone())
            .or_default()
            .push(i);
    }
    for (key, variants) in &groups {
        let Some((_, base_idx)) = variants
            .iter()
            .find(|(_, ix)| is_baseline(&runs[ix[0]].variant))
        else {
            continue;
        };
        let base_by_seed: BTreeMap<u64, usize> =
            base_idx.iter().map(|&i| (runs[i].seed, i)).collect();
        // The baseline runs a seed only if some variant's comparison needs it.
        let mut base_seeds_needed = 0usize;
        let mut base_seeds_needed_both = 0usize;
        let mut compared = false;
        for (name, idx) in variants {
            if is_baseline(&runs[idx[0]].variant) {
                continue;
            }
            compared = true;
            // Seed pairs in seed order.
            let mut paired: Vec<(usize, usize)> = idx
                .iter()
                .filter_map(|&i| base_by_seed.get(&runs[i].seed).map(|&b| (i, b)))
                .collect();
            paired.sort_by_key(|&(i, _)| runs[i].seed);
            if paired.is_empty() {
                continue;
            }
            seq.comparisons += 1;
            let plan = SeedPlan {
                min_pairs: settings.min_seeds,
                max_pairs: settings
                    .max_seeds
                    .unwrap_or(paired.len())
                    .max(settings.min_seeds),
            };
            let fixed_pairs: Vec<(f64, f64)> = paired
                .iter()
                .map(|&(v, b)| (replays[v].ett, replays[b].ett))
                .collect();
            let fixed = stats::compare_paired(&fixed_pairs).verdict;
            let forecast_pairs: Vec<(f64, f64)> = paired
                .iter()
                .map(|&(v, b)| (replays[v].ett_forecast, replays[b].ett_forecast))
                .collect();
            let (used, l) = sequential::settle(&fixed_pairs, &plan);
            let (used_b, lb) = sequential::settle(&forecast_pairs, &plan);
            if used < paired.len() {
                seq.settled_early += 1;
            } else {
                seq.used_every_seed += 1;
            }
            for (rule, s, n) in [
                ("sequential", l.settled, used),
                ("both", lb.settled, used_b),
            ] {
                let replayed = verdict_of(s);
                if replayed != fixed {
                    let cautious = matches!(fixed, Verdict::SavesEnergy | Verdict::CostsEnergy)
                        && replayed == Verdict::NoSignificantDifference;
                    let (d, c) = if rule == "sequential" {
                        (&mut seq.differ, &mut seq.contradict)
                    } else {
                        (&mut seq.differ_both, &mut seq.contradict_both)
                    };
                    *d += 1;
                    *c += usize::from(!cautious);
                    changes.push(VerdictChange {
                        task: key.0.clone(),
                        system: key.6.clone(),
                        variant: name.clone(),
                        fixed: fixed.as_str().to_string(),
                        replayed: settled_label(s, n, &plan),
                        rules: rule.to_string(),
                        kind: if cautious { "cautious" } else { "contradicts" }.to_string(),
                        seeds_used: n,
                    });
                }
            }
            for (j, &(v, _)) in paired.iter().enumerate() {
                needed[v] = j < used;
                needed_both[v] = j < used_b;
            }
            base_seeds_needed = base_seeds_needed.max(used);
            base_seeds_needed_both = base_seeds_needed_both.max(used_b);
        }
        if compared {
            let mut seeds: Vec<u64> = base_by_seed.keys().copied().collect();
            seeds.sort();
            for (j, s) in seeds.iter().enumerate() {
                let b = base_by_seed[s];
                needed[b] = j < base_seeds_needed;
                needed_both[b] = j < base_seeds_needed_both;
            }
        }
    }
    let mut energy = RuleEnergy::default();
    let mut fc = ForecastCounts::default();
    let mut stops = Vec::new();
    for (i, rp) in replays.iter().enumerate() {
        energy.fixed_j += rp.full_j;
        energy.forecast_j += rp.forecast_j;
        if needed[i] {
            energy.sequential_j += rp.full_j;
        }
        if needed_both[i] {
            energy.both_j += rp.forecast_j;
        }
        if !rp.judged {
            fc.not_judged += 1;
            continue;
        }
        fc.judged += 1;
        let reached = rp.ett.is_finite() && runs[i].status == Status::Ok;
        fc.reached += reached as usize;
        if let Some(f) = &rp.stop {
            stops.push(ForecastStop {
                run_id: runs[i].run_id.clone(),
                reached,
                saved_j: rp.full_j - rp.forecast_j,
                forecast: f.clone(),
            });
            if reached {
                fc.false_stops += 1;
            } else {
                fc.true_stops += 1;
            }
        }
    }
    FolderReplay {
        folder: folder.to_string(),
        runs: runs.len(),
        energy,
        sequential: seq,
        forecast: fc,
        changes,
        stops,
    }
}

/// Find the results folders under `paths`, read them strictly (any file that cannot be read is
/// an error) and replay each.
pub fn replay(paths: &[PathBuf], settings: &ReplaySettings) -> Result<Replay, ReplayError> {
    let folders = load::resolve_folders(paths)?;
    let mut out = Vec::new();
    for folder in &folders {
        let loaded = load::load(std::slice::from_ref(folder));
        if let Some(issue) = loaded.issues.into_iter().next() {
            return Err(ReplayError::Load(issue));
        }
        let runs: Vec<RunRecord> = loaded.runs.into_iter().map(|r| r.record).collect();
        if runs.is_empty() {
            // A folder of collapse files only: nothing to replay.
            continue;
        }
        if runs.iter().all(|r| r.quality.curve.is_empty()) {
            return Err(ReplayError::NoCurves { path: show(folder) });
        }
        out.push(replay_runs(&show(folder), &runs, settings));
    }
    let mut total = FolderReplay {
        folder: "total".into(),
        runs: 0,
        energy: RuleEnergy::default(),
        sequential: SequentialCounts::default(),
        forecast: ForecastCounts::default(),
        changes: Vec::new(),
        stops: Vec::new(),
    };
    for f in &out {
        total.runs += f.runs;
        total.energy.add(&f.energy);
        total.sequential.add(&f.sequential);
        total.forecast.add(&f.forecast);
    }
    Ok(Replay {
        folders: out,
        total,
    })
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

/// The replay as a Markdown table, then each changed verdict.
pub fn markdown(r: &Replay) -> String {
    let kj = |j: f64| {
        if j < 10_000.0 {
            format!("{:.2}", j / 1000.0)
        } else {
            format!("{:.1}", j / 1000.0)
        }
    };
    let pct = |e: &RuleEnergy, j: f64| format!("{:.0} %", 100.0 * e.saved(j));
    let mut s = String::from(
        "| folder | runs | fixed kJ | sequential kJ (saved) | forecast kJ (saved) | both kJ (saved) | comparisons: settled early / every seed | verdicts differing: sequential / both (contradicting) | forecast stops: right / wrong (of runs reaching T) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for f in r.folders.iter().chain(std::iter::once(&r.total)) {
        let e = &f.energy;
        let name = if f.folder == "total" {
            "**total**".to_string()
        } else {
            format!("`{}`", f.folder)
        };
        s.push_str(&format!(
            "| {name} | {} | {} | {} ({}) | {} ({}) | {} ({}) | {} / {} | {} / {} ({} / {}) | {} / {} (of {}) |\n",
            f.runs,
            kj(e.fixed_j),
            kj(e.sequential_j),
            pct(e, e.sequential_j),
            kj(e.forecast_j),
            pct(e, e.forecast_j),
            kj(e.both_j),
            pct(e, e.both_j),
            f.sequential.settled_early,
            f.sequential.used_every_seed,
            f.sequential.differ,
            f.sequential.differ_both,
            f.sequential.contradict,
            f.sequential.contradict_both,
            f.forecast.true_stops,
            f.forecast.false_stops,
            f.forecast.reached,
        ));
    }
    let changes: Vec<(&str, &VerdictChange)> = r
        .folders
        .iter()
        .flat_map(|f| f.changes.iter().map(move |c| (f.folder.as_str(), c)))
        .collect();
    if !changes.is_empty() {
        s.push_str("\nVerdicts that differ from the fixed protocol's:\n\n");
        for (folder, c) in changes {
            s.push_str(&format!(
                "- `{folder}` {} {} ({}): fixed \"{}\", {} rule \"{}\" after {} seed(s): {}\n",
                c.task, c.variant, c.system, c.fixed, c.rules, c.replayed, c.seeds_used, c.kind
            ));
        }
    }
    s
}
