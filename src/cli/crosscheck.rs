//! `joulebench crosscheck`: its arguments and what it prints. The comparison, the report and
//! its files are `analyse::crosscheck`'s.

use super::{usage, Failure};
use crate::analyse::crosscheck::{self, DEFAULT_TOLERANCE};
use std::path::PathBuf;

/// `joulebench crosscheck`: compare, print, and write `crosscheck.json` (and `.md`).
#[derive(clap::Args, Debug, Clone)]
pub struct CrosscheckArgs {
    /// The independent reader's trace (scripts/nvml-reader.py --out).
    #[arg(long)]
    pub trace: PathBuf,
    /// Largest accepted |joulebench / reader - 1|.
    #[arg(long, default_value_t = DEFAULT_TOLERANCE)]
    pub tolerance: f64,
    /// Where to write the JSON report (default RESULTS/crosscheck.json, with crosscheck.md beside it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the JSON report instead of the table.
    #[arg(long)]
    pub json: bool,
    /// The results folder the runs were written to.
    pub results: PathBuf,
}

/// Exit code 0 when every compared run agrees, 1 when one does not or none could be compared;
/// bad input is a usage failure (exit 2).
pub fn command(a: &CrosscheckArgs) -> Result<i32, Failure> {
    let report = crosscheck::crosscheck(&a.trace, &a.results, a.tolerance).map_err(usage)?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| a.results.join("crosscheck.json"));
    let (json, table) = crosscheck::save(&report, &out).map_err(usage)?;
    if a.json {
        println!("{json}");
    } else {
        print!("{table}");
        println!("report: {}", out.display());
    }
    Ok(if report.all_agree() { 0 } else { 1 })
}
