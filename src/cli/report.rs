//! `joulebench report`: its arguments, exit codes and messages. The leaderboard, the
//! exporters and loading the folders are `analyse::report`'s.
//!
//! Exit codes: 0 when something was reported (files that could not be read are each one
//! warning line on stderr naming the file); 2 on a usage error (a folder that does not exist,
//! a bad flag value), when a collapse file cannot be read, or when no run file and no collapse
//! file at all could be read; 1 when writing an output failed.

use super::Failure;
use crate::analyse::report::load::{self, LoadIssue};
use crate::analyse::report::{CarbonSettings, Format, Report};
use std::path::{Path, PathBuf};

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
