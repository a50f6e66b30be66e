//! `joulebench footprint`: carbon, embodied share, inference energy and break-even per run,
//! derived from run files. A separate table from the joule ranking, never mixed into it.
//!
//! Owns: turning run records (and their power timelines) into footprint rows (`compute`), the
//! Markdown/CSV/JSON renderings (`render`), pairing variants with their baseline for the
//! break-even, and finding the result folders the command names (`record::read` reads them,
//! strictly: a bad run file or timeline stops the command).
//! Must not: rank runs, or change any run file. `report` calls `compute` + `render` to add the
//! same table to a leaderboard.

use super::embodied::{self, Amortisation};
use super::schedule::{self, EnergyProfile, HourlySeries, Schedule};
use super::{kwh, operational_kg, CarbonError, GridIntensity, Pue};
use crate::measure::PowerSample;
use crate::record::inference::{break_even, BreakEven, InferenceMeasurement};
use crate::record::{read, RunRecord};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

fn same_job(a: &RunRecord, b: &RunRecord) -> Result<(), String> {
    let ds = |r: &RunRecord| {
        r.dataset
            .get("name")
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    if ds(a) != ds(b) {
        return Err(format!(
            "different data sets ({} vs {})",
            ds(a).unwrap_or_default(),
            ds(b).unwrap_or_default()
        ));
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

/// A number with 4 significant digits; scientific below 0.01.
pub fn sig(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x.abs() < 0.01 || x.abs() >= 1e7 {
        format!("{x:.3e}")
    } else {
        let d = (3 - x.abs().log10().floor() as i32).max(0) as usize;
        format!("{x:.d$}")
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or("-".into(), sig)
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

fn est(b: bool) -> &'static str {
    if b {
        " (ESTIMATED)"
    } else {
        ""
    }
}

fn render_md(f: &Footprint) -> String {
    let mut s = String::new();
    s.push_str(
        "# Footprint: carbon, manufacturing and inference, derived from measured energy\n\n",
    );
    s.push_str(&format!(
        "Generated by `{}`. These figures are derived and are never part of the joule ranking.\n\n",
        md_escape(&f.generated_by)
    ));
    s.push_str(&format!(
        "- grid intensity: {}\n",
        md_escape(&f.intensity_label)
    ));
    s.push_str(&format!("- {}\n", f.pue_label));
    s.push_str(&format!(
        "- embodied: {}\n",
        md_escape(&f.embodied_assumption)
    ));
    s.push_str("- operational kg CO2e = kWh x PUE x g CO2e/kWh / 1000, on each run's gross measured window (training; inference windows are separate)\n");
    for n in &f.notes {
        s.push_str(&format!("- note: {}\n", md_escape(n)));
    }
    s.push_str("\n## Carbon per run\n\n");
    s.push_str("| run | status | energy (J) | boundary, source | kWh x PUE | kg CO2e operational | kg CO2e embodied | embodied share |\n|---|---|---:|---|---:|---:|---:|---:|\n");
    for r in &f.rows {
        s.push_str(&format!(
            "| {} {} seed {} | {} | {} | {}, {}{} | {} | {} | {} | {} |\n",
            r.task,
            r.variant,
            r.seed,
            r.status,
            sig(r.energy_j),
            r.boundary,
            r.sources.join("+"),
            est(r.estimated),
            sig(r.kwh_with_pue),
            sig(r.operational_kg_co2e),
            r.embodied
                .kg_co2e
                .map_or_else(|| md_escape(&r.embodied.note), sig),
            r.embodied_share
                .map_or("-".into(), |x| format!("{:.1} %", 100.0 * x)),
        ));
    }
    if f.rows
        .iter()
        .any(|r| !r.inference.is_empty() || r.inference_error.is_some())
    {
        s.push_str("\n## Inference energy and break-even\n\n");
        s.push_str("J per 1,000 predictions on the held-out set, own measured windows after training (not in ETT). Break-even N* = (ETT_variant - ETT_baseline) / (e_baseline - e_variant).\n\n");
        s.push_str(
            "| run | ETT (J) | inference | baseline | break-even |\n|---|---:|---|---|---|\n",
        );
        for r in &f.rows {
            let inf = if let Some(e) = &r.inference_error {
                format!("not measured: {}", md_escape(e))
            } else if r.inference.is_empty() {
                "-".into()
            } else {
                r.inference
                    .iter()
                    .map(|c| {
                        format!(
                            "batch {}: {} J/1000 ({}{}{})",
                            c.batch,
                            sig(c.j_per_1000),
                            c.boundary,
                            est(c.estimated),
                            if c.flags.is_empty() {
                                String::new()
                            } else {
                                format!(", {}", c.flags.join(" "))
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let base = r
                .break_even
                .first()
                .map_or("-".into(), |b| b.baseline_run_id.clone());
            let be = if r.break_even.is_empty() {
                "-".into()
            } else {
                r.break_even
                    .iter()
                    .map(|b| {
                        if b.batch > 0 {
                            format!("batch {}: {}{}", b.batch, b.text, est(b.estimated))
                        } else {
                            b.text.clone()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            s.push_str(&format!(
                "| {} {} seed {} | {} | {} | {} | {} |\n",
                r.task,
                r.variant,
                r.seed,
                opt(r.ett_j),
                inf,
                md_escape(&base),
                md_escape(&be)
            ));
        }
    }
    if let Some(series) = &f.series {
        s.push_str(&format!(
            "\n## When to train ({})\n\nEach run re-timed at every start hour of the series (its energy spread by its power timeline, or at average power where it has none), x PUE.\n\n",
            md_escape(series)
        ));
        s.push_str("| run | profile | starts | best start (UTC) | kg CO2e | worst start (UTC) | kg CO2e | mean of starts | best vs worst |\n|---|---|---:|---|---:|---|---:|---:|---:|\n");
        for r in &f.rows {
            if let Some(sc) = &r.schedule {
                s.push_str(&format!(
                    "| {} {} seed {} | {} | {} | {} | {} | {} | {} | {} | -{:.1} % |\n",
                    r.task,
                    r.variant,
                    r.seed,
                    sc.profile,
                    sc.starts,
                    sc.best_start_utc,
                    sig(sc.best_kg_co2e),
                    sc.worst_start_utc,
                    sig(sc.worst_kg_co2e),
                    sig(sc.mean_kg_co2e),
                    100.0 * sc.saving_vs_worst
                ));
            }
        }
    }
    s
}

/// CSV columns, one row per run (units in the names).
pub const CSV_COLUMNS: &[&str] = &[
    "run_id",
    "task",
    "variant",
    "seed",
    "status",
    "device",
    "boundary",
    "energy_source",
    "estimated",
    "energy_j",
    "ett_j",
    "window_s",
    "kwh",
    "pue",
    "kwh_with_pue",
    "intensity_g_co2e_per_kwh",
    "intensity_year",
    "intensity_fallback",
    "intensity_source",
    "operational_kg_co2e",
    "embodied_kg_co2e",
    "embodied_kg_per_device_hour",
    "embodied_share",
    "embodied_note",
    "inference_batch_small",
    "inference_j_per_1000_small",
    "inference_batch_large",
    "inference_j_per_1000_large",
    "inference_estimated",
    "break_even_baseline",
    "break_even_small",
    "break_even_large",
    "best_start_utc",
    "best_start_kg_co2e",
    "worst_start_utc",
    "worst_start_kg_co2e",
];

fn render_csv(f: &Footprint) -> String {
    let mut s = crate::base::csvline::write_rows([CSV_COLUMNS]);
    let num = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v}"));
    for r in &f.rows {
        let small = r.inference.iter().min_by_key(|c| c.batch);
        let large = r
            .inference
            .iter()
            .max_by_key(|c| c.batch)
            .filter(|c| Some(c.batch) != small.map(|s| s.batch));
        let be_at = |c: Option<&InferenceCell>| {
            c.and_then(|c| r.break_even.iter().find(|b| b.batch == c.batch))
                .or_else(|| r.break_even.iter().find(|b| b.batch == 0))
                .map_or(String::new(), |b| b.text.clone())
        };
        let fields = [
            r.run_id.clone(),
            r.task.clone(),
            r.variant.clone(),
            r.seed.to_string(),
            r.status.clone(),
            r.device.clone(),
            r.boundary.clone(),
            r.sources.join("+"),
            r.estimated.to_string(),
            format!("{}", r.energy_j),
            num(r.ett_j),
            format!("{}", r.window_s),
            format!("{}", r.kwh),
            format!("{}", r.pue),
            format!("{}", r.kwh_with_pue),
            format!("{}", r.intensity_g_co2e_per_kwh),
            r.intensity_year.map_or(String::new(), |y| y.to_string()),
            r.intensity_fallback.to_string(),
            r.intensity_source.clone(),
            format!("{}", r.operational_kg_co2e),
            num(r.embodied.kg_co2e),
            num(r.embodied.kg_per_device_hour),
            num(r.embodied_share),
            r.embodied.note.clone(),
            small.map_or(String::new(), |c| c.batch.to_string()),
            num(small.map(|c| c.j_per_1000)),
            large.map_or(String::new(), |c| c.batch.to_string()),
            num(large.map(|c| c.j_per_1000)),
            r.inference.iter().any(|c| c.estimated).to_string(),
            r.break_even
                .first()
                .map_or(String::new(), |b| b.baseline_run_id.clone()),
            be_at(small),
            be_at(large),
            r.schedule
                .as_ref()
                .map_or(String::new(), |x| x.best_start_utc.clone()),
            num(r.schedule.as_ref().map(|x| x.best_kg_co2e)),
            r.schedule
                .as_ref()
                .map_or(String::new(), |x| x.worst_start_utc.clone()),
            num(r.schedule.as_ref().map(|x| x.worst_kg_co2e)),
        ];
        s.push_str(&crate::base::csvline::write_rows([&fields]));
    }
    s
}

/// The footprint in one format.
pub fn render(f: &Footprint, format: Format) -> String {
    match format {
        Format::Md => render_md(f),
        Format::Csv => render_csv(f),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(f)
                .expect("a footprint encodes: plain data with string keys");
            s.push('\n');
            s
        }
    }
}

/// Run files and timelines read from result folders.
#[derive(Debug, Default)]
pub struct LoadedRuns {
    pub records: Vec<RunRecord>,
    pub timelines: Vec<Option<Vec<PowerSample>>>,
    pub folders: Vec<PathBuf>,
}

impl LoadedRuns {
    pub fn inputs(&self) -> Vec<RunInput<'_>> {
        self.records
            .iter()
            .zip(&self.timelines)
            .map(|(record, t)| RunInput {
                record,
                timeline: t.as_deref(),
            })
            .collect()
    }
}

/// Folders holding `runs/` at `dir` or below it (a folder of machine folders).
fn results_folders(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if read::has_runs(dir) {
        out.push(dir.to_path_buf());
        return;
    }
    if depth == 0 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut subs: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    subs.sort();
    for s in subs {
        results_folders(&s, out, depth - 1);
    }
}

/// Read every `runs/*.json` under the given folders (each a results folder or a folder of
/// them). A missing folder, no run file at all, or a run file that does not parse is an error
/// naming the path.
pub fn load(dirs: &[PathBuf]) -> Result<LoadedRuns, CarbonError> {
    let mut out = LoadedRuns::default();
    for d in dirs {
        if !d.is_dir() {
            return Err(CarbonError::File {
                path: d.display().to_string(),
                reason: "not a results folder (does not exist or is not a directory)".into(),
            });
        }
        let mut folders = Vec::new();
        results_folders(d, &mut folders, 3);
        if folders.is_empty() {
            return Err(CarbonError::File {
                path: d.display().to_string(),
                reason: "no runs/ folder here or below (expected <folder>/runs/*.json)".into(),
            });
        }
        for f in folders {
            for p in read::run_files(&f)? {
                let rec = read::read_run(&p)?;
                // A timeline that exists but cannot be read stops the command, as a bad run
                // file does: the hourly profile would silently fall back to a flat one.
                let tl = read::read_timeline(&f, &rec.run_id)?;
                out.records.push(rec);
                out.timelines.push(tl);
            }
            out.folders.push(f);
        }
    }
    if out.records.is_empty() {
        return Err(CarbonError::File {
            path: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            reason: "no run files (expected <folder>/runs/*.json)".into(),
        });
    }
    Ok(out)
}

/// The region table as text.
pub fn list_regions() -> String {
    let t = super::region::table();
    let mut s = String::from("region     g CO2e/kWh  year  basis                 name\n");
    for r in &t.rows {
        s.push_str(&format!(
            "{:<10} {:>10.1}  {}  {:<21} {}\n",
            r.region,
            r.g_co2e_per_kwh,
            r.year,
            r.basis.as_str(),
            r.name
        ));
    }
    s.push_str("sources:\n");
    for (id, cite) in &t.sources {
        s.push_str(&format!("  {id}: {cite}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sig_formats() {
        assert_eq!(sig(183.4477), "183.4");
        assert_eq!(sig(9652.8), "9653");
        assert_eq!(sig(2.4198e-5), "2.420e-5");
        assert_eq!(sig(0.0), "0");
        assert_eq!(sig(1.5), "1.500");
    }
}
