//! `joulebench report`: the leaderboard from any number of results folders (one per machine).
//!
//! Owns: the `report` command's arguments and exit codes, the [`Report`] (the leaderboard
//! computed once, plus the raw run records and power timelines the charts need, and the
//! collapse experiments' files, shown after the ranking tables and never in them), and the
//! [`Exporter`]s that turn it into bytes: Markdown, CSV, JSON, LaTeX, HTML, the terminal table
//! and CodeCarbon's `emissions.csv`.
//! Must not: change a run file or compute a number that is not a statistic of the run files
//! (`report` only reads; see style.md).
//!
//! Exit codes: 0 when something was reported (files that could not be read are each one
//! warning line on stderr naming the file); 2 on a usage error (a folder that does not exist,
//! a bad flag value), when a collapse file cannot be read, or when no run file and no collapse
//! file at all could be read; 1 when writing an output failed.

pub mod charts;
pub mod collapse;
pub mod csv;
pub mod emissions;
pub mod format;
pub mod html;
pub mod latex;
pub mod load;
pub mod markup;
pub mod model;

use crate::cli::Failure;
use crate::measure::PowerSample;
use load::{LoadIssue, LoadedRun};
use model::Leaderboard;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    /// Results folders, one per machine (a folder of such folders works too). Default: results
    pub dirs: Vec<PathBuf>,
    /// Write only this format (to --out FILE, or stdout). Default: every file, into the first
    /// DIR given (or the --out folder), and the table on the terminal.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Output file with --format, else output folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Grid carbon intensity in gCO2e/kWh for emissions.csv and footprint.* (without it or
    /// --region, emissions.csv says "intensity not given" and footprint.* use the world
    /// average labelled FALLBACK).
    #[arg(long, allow_negative_numbers = true)]
    pub grid_intensity: Option<f64>,
    /// A region of the shipped intensity table, as in `joulebench footprint --region`.
    #[arg(long)]
    pub region: Option<String>,
    /// Power usage effectiveness of the facility for emissions.csv and footprint.* (>= 1;
    /// default 1.0, written on every row).
    #[arg(long, allow_negative_numbers = true)]
    pub pue: Option<f64>,
    /// Only runs whose engine contains this text (`candle`, `torch`, `exec`); repeatable, any
    /// may match. Default: every engine, each ranked apart and compared in "Engines".
    #[arg(long = "engine")]
    pub engines: Vec<String>,
}

/// Carbon accounting inputs (measurement.md section 6), resolved by `crate::analyse::carbon`, which
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
    pub collapse: Vec<collapse::CollapseFile>,
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
        markup::render(&report.leaderboard, &report.collapse, &mut m, None);
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
        markup::render(&report.leaderboard, &report.collapse, &mut m, None);
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
    markup::render(&report.leaderboard, &report.collapse, &mut m, None);
    Ok((m.out, issues))
}

/// "joulebench 0.1.0 (git abc1234): joulebench report results/a results/b".
pub fn generated_by(args: &ReportArgs) -> String {
    let sw = crate::measure::system::software();
    let mut cmd = vec!["joulebench".to_string(), "report".to_string()];
    cmd.extend(args.dirs.iter().map(|d| d.display().to_string()));
    if let Some(f) = args.format {
        cmd.push(format!("--format {}", format_name(f)));
    }
    if let Some(o) = &args.out {
        cmd.push(format!("--out {}", o.display()));
    }
    if let Some(g) = args.grid_intensity {
        cmd.push(format!("--grid-intensity {g}"));
    }
    if let Some(r) = &args.region {
        cmd.push(format!("--region {r}"));
    }
    if let Some(p) = args.pue {
        cmd.push(format!("--pue {p}"));
    }
    for e in &args.engines {
        cmd.push(format!("--engine {e}"));
    }
    format!(
        "joulebench {} (git {}): {}",
        sw.joulebench_version,
        sw.git_commit,
        cmd.join(" ")
    )
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Md => "md",
        Format::Csv => "csv",
        Format::Json => "json",
        Format::Latex => "latex",
        Format::Html => "html",
        Format::Emissions => "emissions",
        Format::Footprint => "footprint",
        Format::FootprintCsv => "footprint-csv",
        Format::Text => "text",
    }
}

fn usage(msg: String) -> Failure {
    Failure::Usage(anyhow::anyhow!(msg))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    crate::record::write_atomic(path, bytes).map_err(|e| Failure::Runtime(e.into()))
}

/// The `report` command.
pub fn command(args: ReportArgs) -> Result<i32, Failure> {
    let carbon = CarbonSettings::from_flags(args.grid_intensity, args.region.as_deref(), args.pue)
        .map_err(|e| Failure::Usage(e.into()))?;
    let dirs = if args.dirs.is_empty() {
        vec![PathBuf::from("results")]
    } else {
        args.dirs.clone()
    };
    let folders = load::resolve_folders(&dirs).map_err(|e| Failure::Usage(e.into()))?;
    if args.format.is_none() {
        if let Some(o) = &args.out {
            if o.exists() && !o.is_dir() {
                return Err(usage(format!(
                    "--out {}: without --format, --out is a folder for every file, and this is a file",
                    o.display()
                )));
            }
        }
    }
    let mut loaded = load::load(&folders);
    if !args.engines.is_empty() {
        let before = loaded.runs.len();
        loaded.runs.retain(|r| {
            let e = r.record.engine_label();
            args.engines.iter().any(|want| e.contains(want.as_str()))
        });
        if loaded.runs.is_empty() && before > 0 {
            return Err(usage(format!(
                "--engine {}: none of the {before} runs was trained by a matching engine",
                args.engines.join(", ")
            )));
        }
    }
    if let Some(e) = loaded.collapse_errors.first() {
        return Err(Failure::Usage(e.clone().into()));
    }
    for issue in &loaded.issues {
        eprintln!("joulebench: warning: skipping {issue}");
    }
    if loaded.runs.is_empty() && loaded.collapse.is_empty() {
        let names: Vec<String> = folders.iter().map(|f| f.display().to_string()).collect();
        return Err(usage(format!(
            "no readable run file in {} (expected <folder>/runs/*.json or <folder>/collapse-*.json)",
            names.join(", ")
        )));
    }
    let mut issues = Vec::new();
    let report = Report::build(loaded, &generated_by(&args), carbon, &mut issues);
    for issue in issues
        .iter()
        .filter(|i| matches!(i, LoadIssue::Timeline { .. }))
    {
        eprintln!("joulebench: warning: {issue}");
    }
    let export = |f: Format| -> Result<(Vec<u8>, &'static str), Failure> {
        let e = f.exporter();
        let bytes = e.export(&report).map_err(|e| Failure::Runtime(e.into()))?;
        Ok((bytes, e.file_name()))
    };
    if let Some(f) = args.format {
        let (bytes, _) = export(f)?;
        match &args.out {
            Some(path) => write_file(path, &bytes)?,
            None => {
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                stdout
                    .write_all(&bytes)
                    .and_then(|_| stdout.flush())
                    .map_err(|e| Failure::Runtime(e.into()))?;
            }
        }
        return Ok(0);
    }
    // The first folder the user named (for `results/`, the folder of machines itself).
    let dir = args.out.clone().unwrap_or_else(|| dirs[0].clone());
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("creating {}: {e}", dir.display())))?;
    let mut written = Vec::new();
    for f in Format::FILES {
        let (bytes, name) = export(f)?;
        let path = dir.join(name);
        write_file(&path, &bytes)?;
        written.push(path.display().to_string());
    }
    let (text, _) = export(Format::Text)?;
    print!("{}", String::from_utf8_lossy(&text));
    eprintln!("joulebench: wrote {}", written.join(", "));
    if report.carbon.intensity.fallback {
        eprintln!(
            "joulebench: note: no --grid-intensity or --region: emissions.csv has no emissions figures, footprint.* use the world average {} g CO2e/kWh labelled FALLBACK",
            crate::analyse::carbon::WORLD_AVERAGE_G_PER_KWH
        );
    }
    Ok(0)
}
