//! `joulebench report`: the leaderboard from any number of results folders (one per machine).
//!
//! Owns: the `report` command's arguments and exit codes, the [`Report`] (the leaderboard
//! computed once, plus the raw run records and power timelines the charts need), and the
//! [`Exporter`]s that turn it into bytes: Markdown, CSV, JSON, LaTeX, HTML, the terminal table
//! and CodeCarbon's `emissions.csv`.
//! Must not: change a run file or compute a number that is not a statistic of the run files
//! (`report` only reads; see style.md).
//!
//! Exit codes: 0 when something was reported (files that could not be read are each one
//! warning line on stderr naming the file); 2 on a usage error (a folder that does not exist,
//! a bad flag value) or when no run file at all could be read; 1 when writing an output failed.

pub mod charts;
pub mod csv;
pub mod emissions;
pub mod format;
pub mod html;
pub mod latex;
pub mod load;
pub mod markup;
pub mod model;

use crate::cli::Failure;
use crate::energy::PowerSample;
use load::{LoadIssue, LoadedRun};
use model::Leaderboard;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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
    /// the terminal table
    Text,
}

impl Format {
    /// Every file `report` writes when no `--format` is given.
    pub const FILES: [Format; 6] = [
        Format::Md,
        Format::Csv,
        Format::Json,
        Format::Latex,
        Format::Html,
        Format::Emissions,
    ];

    pub fn exporter(self) -> Box<dyn Exporter> {
        match self {
            Format::Md => Box::new(MarkdownExporter),
            Format::Csv => Box::new(csv::CsvExporter),
            Format::Json => Box::new(JsonExporter),
            Format::Latex => Box::new(latex::LatexExporter),
            Format::Html => Box::new(html::HtmlExporter),
            Format::Emissions => Box::new(emissions::EmissionsExporter),
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
    /// Grid carbon intensity in gCO2e/kWh for emissions.csv (no default: without it the
    /// emissions columns are left empty and say so).
    #[arg(long)]
    pub grid_intensity: Option<f64>,
    /// Power usage effectiveness of the facility for emissions.csv (>= 1; default 1.0, written
    /// on every row).
    #[arg(long)]
    pub pue: Option<f64>,
}

/// Carbon accounting inputs for `emissions.csv` (measurement.md section 6).
#[derive(Debug, Clone, PartialEq)]
pub struct CarbonSettings {
    /// gCO2e per kWh; `None` = not given (no silent default).
    pub grid_intensity_g_per_kwh: Option<f64>,
    pub pue: f64,
}

impl Default for CarbonSettings {
    fn default() -> Self {
        CarbonSettings {
            grid_intensity_g_per_kwh: None,
            pue: 1.0,
        }
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
        markup::render(&report.leaderboard, &mut m, None);
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
        markup::render(&report.leaderboard, &mut m, None);
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
    markup::render(&report.leaderboard, &mut m, None);
    Ok((m.out, issues))
}

/// "joulebench 0.1.0 (git abc1234): joulebench report results/a results/b".
pub fn generated_by(args: &ReportArgs) -> String {
    let sw = crate::system::software();
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
    if let Some(p) = args.pue {
        cmd.push(format!("--pue {p}"));
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
        Format::Text => "text",
    }
}

fn usage(msg: String) -> Failure {
    Failure::Usage(anyhow::anyhow!(msg))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    crate::results::write_atomic(path, bytes).map_err(|e| Failure::Runtime(e.into()))
}

/// The `report` command.
pub fn command(args: ReportArgs) -> Result<i32, Failure> {
    if let Some(g) = args.grid_intensity {
        if !(g.is_finite() && g >= 0.0) {
            return Err(usage(format!(
                "--grid-intensity must be a non-negative number of gCO2e/kWh, got {g}"
            )));
        }
    }
    if let Some(p) = args.pue {
        if !(p.is_finite() && p >= 1.0) {
            return Err(usage(format!("--pue must be at least 1.0, got {p}")));
        }
    }
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
    let loaded = load::load(&folders);
    for issue in &loaded.issues {
        eprintln!("joulebench: warning: skipping {issue}");
    }
    if loaded.runs.is_empty() {
        let names: Vec<String> = folders.iter().map(|f| f.display().to_string()).collect();
        return Err(usage(format!(
            "no readable run file in {} (expected <folder>/runs/*.json)",
            names.join(", ")
        )));
    }
    let carbon = CarbonSettings {
        grid_intensity_g_per_kwh: args.grid_intensity,
        pue: args.pue.unwrap_or(1.0),
    };
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
    if report.carbon.grid_intensity_g_per_kwh.is_none() {
        eprintln!(
            "joulebench: note: emissions.csv has no emissions figures: no --grid-intensity given (gCO2e/kWh)"
        );
    }
    Ok(0)
}
