//! `joulebench footprint`: carbon, embodied share, inference energy and break-even per run,
//! derived from run files. A separate table from the joule ranking, never mixed into it.
//!
//! Owns: turning run records (and their power timelines) into footprint rows (`compute`) and
//! pairing variants with their baseline for the break-even. `render.rs` writes the rows as
//! Markdown, CSV or JSON; `runs.rs` finds and reads the result folders the command names.
//! Must not: rank runs, read files or change any run file. `report` calls `compute` and
//! `render::render` to add the same table to a leaderboard.

use super::embodied::{self, Amortisation};
use super::schedule::{self, EnergyProfile, HourlySeries, Schedule};
use super::{kwh, operational_kg, GridIntensity, Pue};
use crate::measure::PowerSample;
use crate::record::inference::{break_even, BreakEven, InferenceMeasurement};
use crate::record::RunRecord;
use serde::Serialize;
use std::collections::BTreeMap;

/// Output format of `footprint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Md,
    Csv,
    Json,
}

/// How embodied carbon is charged.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbodiedChoice {
    /// One figure for every run (`--embodied-kg` or `--device-name`, with `--lifetime-years`).
    Given(Amortisation),
    /// Matched per run on its accelerator in the shipped table; amortised only when a lifetime
    /// is given, otherwise the row says what is missing.
    Detect {
        lifetime_years: Option<f64>,
        utilisation: f64,
    },
}

impl Default for EmbodiedChoice {
    fn default() -> Self {
        EmbodiedChoice::Detect {
            lifetime_years: None,
            utilisation: 1.0,
        }
    }
}

impl EmbodiedChoice {
    pub fn describe(&self) -> String {
        match self {
            EmbodiedChoice::Given(a) => format!(
                "{}; charged for each run's measured window; utilisation = busy share of lifetime hours (100 % = every hour of its life in use, the smallest share per run)",
                a.label()
            ),
            EmbodiedChoice::Detect {
                lifetime_years,
                utilisation,
            } => format!(
                "per run from its accelerator in {} (published figures only; unknown devices are left unknown){}, at {:.0} % utilisation of lifetime hours",
                embodied::TABLE_PATH,
                lifetime_years.map_or(" (no --lifetime-years: not amortised)".to_string(), |y| format!(" over {y} years")),
                100.0 * utilisation
            ),
        }
    }
}

/// Everything a footprint is computed with.
#[derive(Debug, Clone)]
pub struct FootprintOptions {
    pub intensity: GridIntensity,
    pub pue: Pue,
    pub embodied: EmbodiedChoice,
    /// `--intensity-csv`: when to train.
    pub series: Option<HourlySeries>,
    /// `--baseline`: a run id, `task` or `task/variant`; default: the f32 run of the same task,
    /// seed and system.
    pub baseline: Option<String>,
}

/// One run's inputs: its record and, where read, its power timeline.
pub struct RunInput<'a> {
    pub record: &'a RunRecord,
    pub timeline: Option<&'a [PowerSample]>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbodiedCell {
    pub kg_co2e: Option<f64>,
    pub kg_per_device_hour: Option<f64>,
    pub device: Option<String>,
    /// Source of the figure, or why there is none.
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InferenceCell {
    pub batch: usize,
    pub j_per_1000: f64,
    pub net_j_per_1000: Option<f64>,
    pub boundary: String,
    pub estimated: bool,
    pub flags: Vec<String>,
}

impl InferenceCell {
    fn from(m: &InferenceMeasurement) -> Self {
        Self {
            batch: m.batch,
            j_per_1000: m.j_per_1000,
            net_j_per_1000: m.net_j_per_1000,
            boundary: m.boundary.as_str().into(),
            estimated: !m.all_measured,
            flags: m.flags.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakEvenCell {
    pub baseline_run_id: String,
    pub batch: usize,
    /// The result, when both runs have what it needs.
    pub result: Option<BreakEven>,
    /// Words: the result described, or why there is none.
    pub text: String,
    /// True when any of the four energies is estimated.
    pub estimated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleSummary {
    pub best_start_utc: String,
    pub best_kg_co2e: f64,
    pub worst_start_utc: String,
    pub worst_kg_co2e: f64,
    pub mean_kg_co2e: f64,
    pub saving_vs_worst: f64,
    pub profile: String,
    pub starts: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FootprintRow {
    pub run_id: String,
    pub task: String,
    pub variant: String,
    pub seed: u64,
    pub status: String,
    pub device: String,
    pub energy_j: f64,
    pub ett_j: Option<f64>,
    pub boundary: String,
    pub sources: Vec<String>,
    pub estimated: bool,
    pub window_s: f64,
    pub kwh: f64,
    pub kwh_with_pue: f64,
    pub intensity_g_co2e_per_kwh: f64,
    pub intensity_source: String,
    pub intensity_year: Option<u16>,
    pub intensity_fallback: bool,
    pub pue: f64,
    pub operational_kg_co2e: f64,
    pub embodied: EmbodiedCell,
    /// embodied / (operational + embodied).
    pub embodied_share: Option<f64>,
    pub inference: Vec<InferenceCell>,
    pub inference_error: Option<String>,
    pub break_even: Vec<BreakEvenCell>,
    pub schedule: Option<ScheduleSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Footprint {
    /// The command that made it ("joulebench footprint"; `report` puts its own).
    pub generated_by: String,
    pub intensity: GridIntensity,
    pub intensity_label: String,
    pub pue: Pue,
    pub pue_label: String,
    pub embodied_assumption: String,
    pub series: Option<String>,
    pub rows: Vec<FootprintRow>,
    /// Every start hour of every run, for the JSON output.
    pub schedules: BTreeMap<String, Schedule>,
    pub notes: Vec<String>,
}

fn embodied_cell(r: &RunRecord, choice: &EmbodiedChoice) -> EmbodiedCell {
    let charge = |a: &Amortisation| EmbodiedCell {
        kg_co2e: Some(a.kg_for_s(r.energy.window_s)),
        kg_per_device_hour: Some(a.kg_per_hour()),
        device: Some(a.footprint.device.clone()),
        note: a.footprint.source.clone(),
    };
    match choice {
        EmbodiedChoice::Given(a) => charge(a),
        EmbodiedChoice::Detect {
            lifetime_years,
            utilisation,
        } => {
            let t = embodied::table();
            let name = if r.device.starts_with("cuda") {
                r.system.accelerator.clone()
            } else {
                Some(r.system.cpu_model.clone())
            };
            let row = name.as_deref().and_then(|n| t.detect(n));
            match (row, lifetime_years) {
                (Some(row), Some(y)) => match Amortisation::new(t.footprint(row), *y, *utilisation) {
                    Ok(a) => charge(&a),
                    Err(e) => EmbodiedCell {
                        kg_co2e: None,
                        kg_per_device_hour: None,
                        device: Some(row.device.clone()),
                        note: e.to_string(),
                    },
                },
                (Some(row), None) => EmbodiedCell {
                    kg_co2e: None,
                    kg_per_device_hour: None,
                    device: Some(row.device.clone()),
                    note: format!(
                        "{} kg CO2e known for {}; pass --lifetime-years Y to amortise",
                        row.embodied_kg_co2e, row.device
                    ),
                },
                (None, _) => EmbodiedCell {
                    kg_co2e: None,
                    kg_per_device_hour: None,
                    device: None,
                    note: format!(
                        "unknown device ({}): no published figure in {}; pass --embodied-kg K --lifetime-years Y",
                        name.as_deref().unwrap_or("no accelerator recorded"),
                        embodied::TABLE_PATH
                    ),
                },
            }
        }
    }
}

/// Cumulative total energy over time from a long-format timeline.
pub fn profile_of(r: &RunRecord, timeline: Option<&[PowerSample]>) -> EnergyProfile {
    let total = r.energy.total_j;
    let dur = r.energy.window_s;
    let Some(tl) = timeline.filter(|t| !t.is_empty()) else {
        return EnergyProfile::average(dur, total);
    };
    let mut by: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for s in tl {
        by.entry(s.component.as_str())
            .or_default()
            .push((s.t_s, s.energy_j));
    }
    for v in by.values_mut() {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let mut times: Vec<f64> = tl.iter().map(|s| s.t_s).collect();
    times.sort_by(f64::total_cmp);
    times.dedup();
    let interp = |v: &[(f64, f64)], t: f64| -> f64 {
        let i = v.partition_point(|p| p.0 <= t);
        if i == 0 {
            let (t1, e1) = v[0];
            return if t1 > 0.0 { e1 * t / t1 } else { e1 };
        }
        if i == v.len() {
            return v[i - 1].1;
        }
        let (t0, e0) = v[i - 1];
        let (t1, e1) = v[i];
        e0 + (e1 - e0) * (t - t0) / (t1 - t0).max(1e-12)
    };
    let points: Vec<(f64, f64)> = times
        .iter()
        .map(|&t| (t, by.values().map(|v| interp(v, t)).sum()))
        .collect();
    EnergyProfile::from_cumulative(&points, dur, total)
}

/// Two runs whose break-even would compare different work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("different data sets ({variant} vs {baseline})")]
struct DifferentData {
    variant: String,
    baseline: String,
}

fn same_job(a: &RunRecord, b: &RunRecord) -> Result<(), DifferentData> {
    let ds = |r: &RunRecord| r.dataset.name.clone();
    if ds(a) != ds(b) {
        return Err(DifferentData {
            variant: ds(a).unwrap_or_default(),
            baseline: ds(b).unwrap_or_default(),
        });
    }
    Ok(())
}

fn break_even_cells(r: &RunRecord, base: &RunRecord) -> Vec<BreakEvenCell> {
    let cell = |batch: usize, text: String| BreakEvenCell {
        baseline_run_id: base.run_id.clone(),
        batch,
        result: None,
        text,
        estimated: false,
    };
    let (Some(ri), Some(bi)) = (&r.inference, &base.inference) else {
        return vec![cell(
            0,
            "no inference measured on both runs (run --inference)".into(),
        )];
    };
    if let Err(why) = same_job(r, base) {
        return vec![cell(0, format!("not comparable: {why}"))];
    }
    let (Some(ev), Some(eb)) = (r.ett_j, base.ett_j) else {
        return vec![cell(
            0,
            "no ETT on both runs (one did not reach its target)".into(),
        )];
    };
    let mut out = Vec::new();
    for m in &ri.measurements {
        let Some(b) = bi.at_batch(m.batch) else {
            continue;
        };
        if m.boundary != b.boundary || r.energy.boundary != base.energy.boundary {
            out.push(cell(m.batch, "not comparable: different boundaries".into()));
            continue;
        }
        let be = break_even(ev, eb, m.j_per_1000 / 1000.0, b.j_per_1000 / 1000.0);
        let estimated = !m.all_measured
            || !b.all_measured
            || !r.energy.all_measured
            || !base.energy.all_measured;
        out.push(BreakEvenCell {
            baseline_run_id: base.run_id.clone(),
            batch: m.batch,
            result: Some(be),
            text: be.describe(),
            estimated,
        });
    }
    if out.is_empty() {
        out.push(cell(0, "no common inference batch size".into()));
    }
    out
}

/// The baseline of `r`: `--baseline` if given, else the f32 run of the same task, seed and system.
fn baseline_for<'a>(
    r: &RunRecord,
    all: &'a [RunInput<'a>],
    sel: Option<&str>,
) -> Option<&'a RunRecord> {
    let mut recs = all.iter().map(|i| i.record);
    match sel {
        Some(s) => {
            let matches = |b: &RunRecord| {
                b.run_id == s || b.task == s || format!("{}/{}", b.task, b.variant.name) == s
            };
            let cands: Vec<&RunRecord> = recs.filter(|b| matches(b)).collect();
            cands
                .iter()
                .find(|b| b.seed == r.seed)
                .or(cands.first())
                .copied()
                .filter(|b| b.run_id != r.run_id)
        }
        None => recs.find(|b| {
            b.run_id != r.run_id
                && b.task == r.task
                && b.seed == r.seed
                && b.system.system_id == r.system.system_id
                && b.variant.name == crate::spec::variant::baseline().name
        }),
    }
}

/// Footprint rows for `runs`, in their order.
pub fn compute(runs: &[RunInput], opts: &FootprintOptions) -> Footprint {
    let mut rows = Vec::new();
    let mut schedules = BTreeMap::new();
    let mut notes = Vec::new();
    for input in runs {
        let r = input.record;
        let e = r.energy.total_j;
        let op = operational_kg(e, opts.pue, &opts.intensity);
        let emb = embodied_cell(r, &opts.embodied);
        let share = emb
            .kg_co2e
            .map(|k| if k + op > 0.0 { k / (k + op) } else { 0.0 });
        let sched = opts.series.as_ref().map(|s| {
            let p = profile_of(r, input.timeline);
            schedule::schedule(&p, s, opts.pue)
        });
        let schedule = match sched {
            Some(Ok(s)) => {
                let sum = ScheduleSummary {
                    best_start_utc: s.best().start_utc.clone(),
                    best_kg_co2e: s.best().kg_co2e,
                    worst_start_utc: s.worst().start_utc.clone(),
                    worst_kg_co2e: s.worst().kg_co2e,
                    mean_kg_co2e: s.mean_kg(),
                    saving_vs_worst: s.saving_vs_worst(),
                    profile: s.profile.as_str().into(),
                    starts: s.options.len(),
                };
                schedules.insert(r.run_id.clone(), s);
                Some(sum)
            }
            Some(Err(e)) => {
                notes.push(format!("{}: when-to-train skipped: {e}", r.run_id));
                None
            }
            None => None,
        };
        let break_even = baseline_for(r, runs, opts.baseline.as_deref())
            .map(|b| break_even_cells(r, b))
            .unwrap_or_default();
        let mut sources: Vec<String> = r
            .energy
            .components
            .iter()
            .map(|c| c.source.as_str().to_string())
            .collect();
        sources.dedup();
        rows.push(FootprintRow {
            run_id: r.run_id.clone(),
            task: r.task.clone(),
            variant: r.variant.name.clone(),
            seed: r.seed,
            status: r.status.as_str().into(),
            device: r.device.clone(),
            energy_j: e,
            ett_j: r.ett_j,
            boundary: r.energy.boundary.as_str().into(),
            sources,
            estimated: !r.energy.all_measured,
            window_s: r.energy.window_s,
            kwh: kwh(e),
            kwh_with_pue: kwh(e) * opts.pue.value,
            intensity_g_co2e_per_kwh: opts.intensity.g_co2e_per_kwh,
            intensity_source: opts.intensity.source.clone(),
            intensity_year: opts.intensity.year,
            intensity_fallback: opts.intensity.fallback,
            pue: opts.pue.value,
            operational_kg_co2e: op,
            embodied: emb,
            embodied_share: share,
            inference: r
                .inference
                .iter()
                .flat_map(|i| i.measurements.iter().map(InferenceCell::from))
                .collect(),
            inference_error: r.inference.as_ref().and_then(|i| i.error.clone()),
            break_even,
            schedule,
        });
    }
    if let Some(b) = &opts.baseline {
        if !runs.iter().any(|i| {
            i.record.run_id == *b
                || i.record.task == *b
                || format!("{}/{}", i.record.task, i.record.variant.name) == *b
        }) {
            notes.push(format!(
                "--baseline {b:?} matches no run: no break-even computed"
            ));
        }
    }
    if rows.iter().any(|r| r.estimated) {
        notes.push("rows marked ESTIMATED come from estimated energy (no readable counter): their carbon is an estimate too".into());
    }
    Footprint {
        generated_by: format!("joulebench footprint {}", env!("CARGO_PKG_VERSION")),
        intensity_label: opts.intensity.label(),
        intensity: opts.intensity.clone(),
        pue_label: opts.pue.label(),
        pue: opts.pue,
        embodied_assumption: opts.embodied.describe(),
        series: opts.series.as_ref().map(|s| s.path.clone()),
        rows,
        schedules,
        notes,
    }
}
