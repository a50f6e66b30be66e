//! One document template, three markups: Markdown, the terminal table and HTML write the same
//! headings, tables and notes through [`Markup`], so they can never disagree.
//!
//! Owns: the order and content of the leaderboard's sections and table columns.
//! Must not: compute statistics, read files or escape text for a medium (`markup.rs`,
//! `html.rs`).

use super::collapse::ChartFn as CollapseChartFn;
use super::collapse_file::CollapseFile;
use super::format::{self as f, ESTIMATED_WARNING};
use super::markup::{Align, Markup, Table};
use super::model::{Leaderboard, RankTable, TaskBoard};
use crate::stats::Verdict;

/// Charts for one table: (caption, svg) pairs. HTML passes a real one; others pass none.
pub type ChartFn<'a> = dyn Fn(&TaskBoard, &RankTable) -> Vec<(String, String)> + 'a;

/// The charts of a page that has them (HTML): of the ranking tables, and of the collapse files.
pub struct Charts<'a> {
    pub tables: &'a ChartFn<'a>,
    pub collapse: &'a CollapseChartFn<'a>,
}

/// Write the whole leaderboard through `m`: the ranking tables of the runs, then the collapse
/// experiments (`collapse.rs`), which are never ranked with them.
pub fn render<M: Markup>(
    lb: &Leaderboard,
    collapse: &[CollapseFile],
    m: &mut M,
    charts: Option<&Charts>,
) {
    m.generated(&lb.generated_by);
    m.heading(1, "joulebench leaderboard");
    let folders: Vec<String> = lb
        .folders
        .iter()
        .map(|x| match x.collapse_files {
            0 => format!("{} ({} runs)", x.path, x.runs),
            1 => format!("{} ({} runs, 1 collapse file)", x.path, x.runs),
            k => format!("{} ({} runs, {k} collapse files)", x.path, x.runs),
        })
        .collect();
    m.paragraph(&format!("Results folders: {}.", folders.join(", ")));
    m.paragraph(&format!(
        "ETT = energy from run start to the end of the first evaluation reaching the target T (at or beyond T in the metric's direction; evaluation on the meter); JPP = ETT / (100 |T - c|): joules per accuracy point, or per 0.01 nat of a loss. \
         Medians with {:.0} % percentile-bootstrap CIs ({} resamples, fixed seed); olympic mean drops the minimum and the maximum (one DNF counts as the maximum, two invalidate it); \
         CV over runs that reached T; outliers by Tukey fences, flagged and never dropped. \
         Change in ETT vs the f32 baseline on the same system, paired by seed: {}. P(better): {}. \
         Verdicts need every paired seed to reach T and the CI to clear the +-{:.0} % noise threshold.",
        100.0 * lb.statistics.confidence,
        lb.statistics.bootstrap_resamples,
        lb.statistics.change,
        lb.statistics.p_better,
        100.0 * lb.statistics.noise_threshold,
    ));
    if lb.tasks.is_empty() {
        m.paragraph(if collapse.is_empty() {
            "No runs to report."
        } else {
            "No training runs to rank; the model-collapse experiments follow."
        });
    }
    for task in &lb.tasks {
        m.heading(2, &f::task_title(task));
        for table in &task.tables {
            m.heading(3, &format!("{}: {}", task.task, f::table_title(table)));
            match table.energy {
                super::model::EnergyClass::Estimated => m.warning(ESTIMATED_WARNING),
                super::model::EnergyClass::Shared => m.warning(f::SHARED_WARNING),
                super::model::EnergyClass::Measured => {}
            }
            m.paragraph(&format!(
                "Boundary {} ({}). Sources: {}.",
                table.boundary,
                f::boundary_name(&table.boundary),
                table.sources.join(", ")
            ));
            m.heading(4, "Systems (f32 baseline), ranked by median ETT");
            if table.systems.is_empty() {
                m.paragraph("No system has baseline runs in this table.");
            } else {
                m.table(&systems_table(task, table));
            }
            m.heading(4, "Variants, compared with the baseline on the same system");
            m.table(&variants_table(task, table));
            let notes = notes(table);
            if !notes.is_empty() {
                m.paragraph("Runs that did not reach the target:");
                m.bullets(&notes);
            }
            let stops = stopping_notes(table);
            if !stops.is_empty() {
                m.paragraph(
                    "Stopping rules (docs/guide.md \"Stopping rules\"): what each verdict took, and what the rules saved (estimates):",
                );
                m.bullets(&stops);
            }
            if !table.phases.is_empty() {
                m.heading(4, "Phases (measured spans of the window)");
                m.table(&phases_table(table));
            }
            if !table.engines.is_empty() {
                m.heading(
                    4,
                    "Engines on the same system (energy to target, paired by seed)",
                );
                m.paragraph(ENGINES_NOTE);
                m.table(&engines_table(task, table));
            }
            if let Some(charts) = charts {
                for (caption, svg) in (charts.tables)(task, table) {
                    m.figure(&caption, &svg);
                }
            }
        }
    }
    super::collapse::render(collapse, m, charts.map(|c| c.collapse));
    if !lb.skipped.is_empty() {
        m.heading(2, "Skipped");
        m.bullets(&lb.skipped);
    }
}

fn median_with_ci(s: &super::model::GroupStats) -> String {
    format!(
        "{} {}",
        f::joules(s.median_ett_j),
        f::ci_joules(s.median_ett_ci_j)
    )
}

fn olympic(s: &super::model::GroupStats) -> String {
    match (s.olympic_mean_ett_j, &s.olympic_mean_note) {
        (Some(v), _) => f::num4(v),
        (None, Some(n)) => format!("- ({n})"),
        (None, None) => "-".into(),
    }
}

fn final_quality(task: &TaskBoard, s: &super::model::GroupStats) -> String {
    f::quality(task, s.mean_final_quality, s.sd_final_quality)
}

pub fn systems_table(task: &TaskBoard, table: &RankTable) -> Table {
    use Align::*;
    Table {
        header: vec![
            "rank",
            "system",
            "system id",
            "device",
            "N",
            "k/N",
            "median ETT J [95 % CI]",
            "olympic mean J",
            "CV",
            "JPP",
            "TTT",
            "final quality",
        ],
        align: vec![
            Right, Left, Left, Left, Right, Right, Right, Right, Right, Right, Right, Right,
        ],
        rows: table
            .systems
            .iter()
            .map(|s| {
                vec![
                    s.rank.map_or("-".into(), |r| r.to_string()),
                    s.system.label.clone(),
                    s.system.id.clone(),
                    s.system.device.clone(),
                    s.stats.runs.to_string(),
                    format!("{}/{}", s.stats.converged, s.stats.runs),
                    median_with_ci(&s.stats),
                    olympic(&s.stats),
                    f::cv(s.stats.cv_ett),
                    f::jpp_label(s.stats.median_jpp_j_per_pp, task, table),
                    f::seconds(s.stats.median_ttt_s),
                    final_quality(task, &s.stats),
                ]
            })
            .collect(),
        marks: Vec::new(),
    }
}

pub fn verdict_cell(v: Verdict, reason: &str) -> String {
    format!("{} ({reason})", v.as_str())
}

pub fn variants_table(task: &TaskBoard, table: &RankTable) -> Table {
    use Align::*;
    Table {
        header: vec![
            "system",
            "variant",
            "N",
            "k/N",
            "median ETT J [95 % CI]",
            "olympic mean J",
            "CV",
            "outliers",
            "JPP",
            "change in ETT [95 % CI]",
            "P(better) [95 % CI]",
            "verdict",
        ],
        align: vec![
            Left, Left, Right, Right, Right, Right, Right, Left, Right, Right, Right, Left,
        ],
        rows: table
            .variants
            .iter()
            .map(|v| {
                let outliers: Vec<String> = v
                    .stats
                    .run_list
                    .iter()
                    .filter_map(|r| {
                        r.outlier.map(|side| {
                            format!(
                                "seed {} {}",
                                r.seed,
                                match side {
                                    crate::stats::OutlierSide::Low => "low",
                                    crate::stats::OutlierSide::High => "high",
                                }
                            )
                        })
                    })
                    .collect();
                let (chg, pb, verdict) = match &v.comparison {
                    Some(c) => (
                        format!("{} {}", f::change(c.change), f::ci_change(c.change_ci)),
                        format!("{} {}", f::prob(c.p_better), f::ci_prob(c.p_better_ci)),
                        verdict_cell(c.verdict, &c.reason),
                    ),
                    None if v.baseline => ("baseline".into(), "-".into(), "-".into()),
                    None => ("no baseline".into(), "-".into(), "-".into()),
                };
                vec![
                    format!("{} [{}]", v.system.label, v.system.id),
                    f::variant_label(&v.variant),
                    v.stats.runs.to_string(),
                    format!("{}/{}", v.stats.converged, v.stats.runs),
                    median_with_ci(&v.stats),
                    olympic(&v.stats),
                    f::cv(v.stats.cv_ett),
                    if outliers.is_empty() {
                        "-".into()
                    } else {
                        outliers.join(", ")
                    },
                    f::jpp_label(v.stats.median_jpp_j_per_pp, task, table),
                    chg,
                    pb,
                    verdict,
                ]
            })
            .collect(),
        marks: table
            .variants
            .iter()
            .map(|v| v.comparison.as_ref().and_then(|c| c.engine_limited.clone()))
            .collect(),
    }
}

/// What the engine comparison means, under its heading.
pub const ENGINES_NOTE: &str = "The same task, variant and device trained by different engines (joulebench's candle loop, or a program run by `joulebench exec` such as the PyTorch references in scripts/torch/): change in ETT of the engine against the reference engine, with the same statistics and verdict rule as a variant against its baseline. A difference here belongs to the engine, not to the hardware or the technique.";

pub fn engines_table(task: &TaskBoard, table: &RankTable) -> Table {
    use Align::*;
    Table {
        header: vec![
            "system id",
            "variant",
            "engine",
            "reference engine",
            "k/N",
            "median ETT J [95 % CI]",
            "reference median ETT J",
            "JPP",
            "change in ETT [95 % CI]",
            "P(better) [95 % CI]",
            "verdict",
        ],
        align: vec![
            Left, Left, Left, Left, Right, Right, Right, Right, Right, Right, Left,
        ],
        rows: table
            .engines
            .iter()
            .map(|e| {
                let c = &e.comparison;
                vec![
                    e.system.id.clone(),
                    e.variant.clone(),
                    e.system.engine.clone(),
                    e.reference_engine.clone(),
                    format!("{}/{}", e.stats.converged, e.stats.runs),
                    median_with_ci(&e.stats),
                    median_with_ci(&e.reference),
                    f::jpp_label(e.stats.median_jpp_j_per_pp, task, table),
                    format!("{} {}", f::change(c.change), f::ci_change(c.change_ci)),
                    format!("{} {}", f::prob(c.p_better), f::ci_prob(c.p_better_ci)),
                    verdict_cell(c.verdict, &c.reason),
                ]
            })
            .collect(),
        marks: table
            .engines
            .iter()
            .map(|e| e.comparison.engine_limited.clone())
            .collect(),
    }
}

/// One line per comparison made under a stopping rule: the energy of its runs, the forecast's
/// stops and the seeds not run, with the energy each saved (estimated).
pub fn stopping_notes(table: &RankTable) -> Vec<String> {
    table
        .variants
        .iter()
        .filter_map(|v| {
            let c = v.comparison.as_ref()?;
            let s = c.stopping.as_ref()?;
            let mut line = format!(
                "{} [{}] vs {}: \"{}\" from {} runs, {:.1} J",
                v.variant.name,
                v.system.id,
                c.baseline,
                c.verdict.as_str(),
                s.runs,
                s.energy_spent_j
            );
            if s.stopped_by_forecast > 0 {
                line += &format!(
                    "; {} run(s) stopped by the forecast, about {:.1} J saved (the rest of each budget at the run's own J per training step)",
                    s.stopped_by_forecast, s.forecast_saved_j_estimated
                );
            }
            if let (Some(k @ 1..), Some(m), Some(j)) =
                (s.seeds_not_run, s.max_seeds, s.sequential_saved_j_estimated)
            {
                line += &format!(
                    "; {k} of {m} seeds not run as the verdict was settled, about {j:.1} J saved (at the variant's mean per run)"
                );
            }
            Some(line)
        })
        .collect()
}

pub fn notes(table: &RankTable) -> Vec<String> {
    table
        .variants
        .iter()
        .flat_map(|v| {
            v.stats.notes.iter().map(move |n| {
                format!(
                    "{} [{}], {}: {n}",
                    v.variant.name, v.system.id, v.system.label
                )
            })
        })
        .collect()
}

pub fn phases_table(table: &RankTable) -> Table {
    use Align::*;
    Table {
        header: vec![
            "system id",
            "variant",
            "phase",
            "runs",
            "median energy J",
            "share of run",
            "median duration",
        ],
        align: vec![Left, Left, Left, Right, Right, Right, Right],
        rows: table
            .phases
            .iter()
            .map(|p| {
                vec![
                    p.system_id.clone(),
                    p.variant.clone(),
                    p.phase.clone(),
                    p.runs.to_string(),
                    f::num4(p.median_energy_j),
                    format!("{:.1} %", 100.0 * p.median_share),
                    f::seconds(Some(p.median_duration_s)),
                ]
            })
            .collect(),
        marks: Vec::new(),
    }
}
