//! `joulebench report`: the leaderboard from any number of results folders (one per machine).
//!
//! Owns: the [`Report`] (the leaderboard
//! computed once, plus the raw run records and power timelines the charts need, and the
//! collapse experiments' files, shown after the ranking tables and never in them), and the
//! [`Exporter`]s that turn it into bytes: Markdown, CSV, JSON, LaTeX, HTML, the terminal table
//! and CodeCarbon's `emissions.csv`.
//! Must not: change a run file or compute a number that is not a statistic of the run files
//! (`report` only reads; see style.md). The command's arguments, exit codes and messages are
//! `cli::report`'s.

pub mod charts;
pub mod collapse;
pub mod collapse_file;
pub mod csv;
pub mod document;
pub mod emissions;
pub mod format;
pub mod html;
pub mod latex;
pub mod load;
pub mod markup;
pub mod model;

use crate::measure::PowerSample;
use load::{LoadIssue, LoadedRun};
use model::Leaderboard;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// leaderboard.md (GitHub Markdown)
    Md,
    /// leaderboard.csv (one row per system x variant)
    Csv,
    /// leaderboard.json (the whole leaderboard)
    Json,
    /// leaderboard.tex (booktabs + siunitx + threeparttable; compiles with pdflatex)
    Latex,
    /// leaderboard.html (one self-contained page with SVG charts)
    Html,
    /// emissions.csv (CodeCarbon's 38 columns)
    Emissions,
    /// footprint.md: carbon, inference energy and break-even per run (a separate table)
    Footprint,
    /// footprint.csv: the same, one row per run
    FootprintCsv,
    /// the terminal table
    Text,
}

impl Format {
    /// Every file `report` writes when no `--format` is given.
    pub const FILES: [Format; 8] = [
        Format::Md,
        Format::Csv,
        Format::Json,
        Format::Latex,
        Format::Html,
        Format::Emissions,
        Format::Footprint,
        Format::FootprintCsv,
    ];

    pub fn exporter(self) -> Box<dyn Exporter> {
        match self {
            Format::Md => Box::new(MarkdownExporter),
            Format::Csv => Box::new(csv::CsvExporter),
            Format::Json => Box::new(JsonExporter),
            Format::Latex => Box::new(latex::LatexExporter),
            Format::Html => Box::new(html::HtmlExporter),
            Format::Emissions => Box::new(emissions::EmissionsExporter),
            Format::Footprint => Box::new(emissions::FootprintExporter::Md),
            Format::FootprintCsv => Box::new(emissions::FootprintExporter::Csv),
            Format::Text => Box::new(TextExporter),
        }
    }
}

/// Carbon accounting inputs (docs/design/measurement.md section 6), resolved by `crate::analyse::carbon`, which
/// alone turns kWh into kg CO2e.
#[derive(Debug, Clone, PartialEq)]
pub struct CarbonSettings {
    /// From `--grid-intensity` or `--region`; neither gives the world average with
    /// `fallback` set (emissions.csv then writes "intensity not given").
    pub intensity: crate::analyse::carbon::GridIntensity,
    pub pue: crate::analyse::carbon::Pue,
}

impl Default for CarbonSettings {
    fn default() -> Self {
        CarbonSettings {
            intensity: crate::analyse::carbon::GridIntensity::world_average(),
            pue: crate::analyse::carbon::Pue::default(),
        }
    }
}

impl CarbonSettings {
    /// From the flags, checked exactly as `joulebench footprint` checks them.
    pub fn from_flags(
        grid_intensity: Option<f64>,
        region: Option<&str>,
        pue: Option<f64>,
    ) -> Result<Self, crate::analyse::carbon::CarbonError> {
        Ok(CarbonSettings {
            intensity: crate::analyse::carbon::resolve(grid_intensity, region)?,
            pue: crate::analyse::carbon::Pue::from_flag(pue)?,
        })
    }
}

/// What every exporter reads: the leaderboard (derived) and the raw inputs it came from.
pub struct Report {
    pub leaderboard: Leaderboard,
    /// Every run read, by run id.
    pub runs: BTreeMap<String, LoadedRun>,
    /// Power timelines of the runs the charts show, by run id.
    pub timelines: BTreeMap<String, Vec<PowerSample>>,
    pub carbon: CarbonSettings,
    /// The model-collapse experiments' files (`collapse-*.json`), in folder order.
    pub collapse: Vec<collapse_file::CollapseFile>,
}

impl Report {
    /// Build from what was loaded; reads the power timelines the charts need and adds any
    /// problem with them to `issues`.
    pub fn build(
        loaded: load::Loaded,
        generated_by: &str,
        carbon: CarbonSettings,
        issues: &mut Vec<LoadIssue>,
    ) -> Report {
        issues.extend(loaded.issues.iter().cloned());
        let skipped = loaded.issues.iter().map(|i| i.to_string()).collect();
        let mut leaderboard =
            model::build(&loaded.runs, generated_by, loaded.folders.clone(), skipped);
        let runs: BTreeMap<String, LoadedRun> = loaded
            .runs
            .into_iter()
            .map(|r| (r.record.run_id.clone(), r))
            .collect();
        let mut timelines = BTreeMap::new();
        let wanted: Vec<String> = leaderboard
            .tasks
            .iter()
            .flat_map(|t| &t.tables)
            .filter_map(|t| t.timeline_run.clone())
            .collect();
        for id in wanted {
            let Some(run) = runs.get(&id) else { continue };
            match load::read_timeline(run) {
                Ok(Some(t)) => {
                    timelines.insert(id, t);
                }
                Ok(None) => {}
                Err(e) => {
                    leaderboard.skipped.push(e.to_string());
                    issues.push(e);
                }
            }
        }
        Report {
            leaderboard,
            runs,
            timelines,
            carbon,
            collapse: loaded.collapse,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("encoding {what}: {reason}")]
    Encode { what: &'static str, reason: String },
}

/// Turns a report into the bytes of one file; never writes anything itself.
pub trait Exporter {
    fn export(&self, report: &Report) -> Result<Vec<u8>, ExportError>;
    /// The file name `report` writes it to.
    fn file_name(&self) -> &'static str;
}

pub struct MarkdownExporter;

impl Exporter for MarkdownExporter {
    fn export(&self, report: &Report) -> Result<Vec<u8>, ExportError> {
        let mut m = markup::Markdown::default();
        document::render(&report.leaderboard, &report.collapse, &mut m, None);
        Ok(m.out.into_bytes())
    }
    fn file_name(&self) -> &'static str {
        "leaderboard.md"
    }
}

pub struct TextExporter;

impl Exporter for TextExporter {
    fn export(&self, report: &Report) -> Result<Vec<u8>, ExportError> {
        let mut m = markup::Text::default();
        document::render(&report.leaderboard, &report.collapse, &mut m, None);
        Ok(m.out.into_bytes())
    }
    fn file_name(&self) -> &'static str {
        "leaderboard.txt"
    }
}

pub struct JsonExporter;

impl Exporter for JsonExporter {
    fn export(&self, report: &Report) -> Result<Vec<u8>, ExportError> {
        let s =
            serde_json::to_string_pretty(&report.leaderboard).map_err(|e| ExportError::Encode {
                what: "leaderboard.json",
                reason: e.to_string(),
            })?;
        // `generated_by` is the first field: pull it onto the first line, so the file's first
        // line says it was generated (still valid JSON).
        let s = s.replacen("{\n  \"generated_by\"", "{ \"generated_by\"", 1);
        Ok(format!("{s}\n").into_bytes())
    }
    fn file_name(&self) -> &'static str {
        "leaderboard.json"
    }
}

/// The terminal table of the results folders `dirs` (for `sweep` to print when it ends), and
/// the files it skipped.
pub fn leaderboard_text(
    dirs: &[PathBuf],
    generated_by: &str,
) -> Result<(String, Vec<LoadIssue>), load::FolderError> {
    let folders = load::resolve_folders(dirs)?;
    let mut issues = Vec::new();
    let report = Report::build(
        load::load(&folders),
        generated_by,
        CarbonSettings::default(),
        &mut issues,
    );
    let mut m = markup::Text::default();
    document::render(&report.leaderboard, &report.collapse, &mut m, None);
    Ok((m.out, issues))
}
