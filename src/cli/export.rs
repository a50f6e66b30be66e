//! `joulebench export`: its arguments and what it prints. The layouts are `analyse`'s
//! (`analyse::mlperf_export` for `export mlperf`).

use super::Failure;
use crate::analyse::mlperf_export;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub what: ExportWhat,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum ExportWhat {
    /// An MLPerf Training submission tree (results/<system>/<benchmark>/result_N.txt, their
    /// MLPerf Power node logs under power/, systems/<system>.json) for MLCommons'
    /// mlperf-logging tools. See docs/run-file.md "MLPerf submission tree".
    Mlperf(MlperfArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct MlperfArgs {
    /// A results folder (or a folder of them, one per machine).
    pub folder: PathBuf,
    /// The tree's root (MLPerf's submitter folder): a new or empty folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Leave out runs whose energy is estimated; a folder with only such runs is an error.
    #[arg(long)]
    pub measured_only: bool,
}

/// Exit 0 when the tree is written, 2 on bad input (nothing written), 1 when a write failed.
pub fn command(a: &ExportArgs) -> Result<i32, Failure> {
    let ExportWhat::Mlperf(m) = &a.what;
    let done = mlperf_export::export(&m.folder, &m.out, m.measured_only).map_err(|e| {
        if e.is_usage() {
            Failure::Usage(e.into())
        } else {
            Failure::Runtime(e.into())
        }
    })?;
    for issue in &done.issues {
        eprintln!("warning: {issue}");
    }
    println!(
        "wrote {} result(s) of {} benchmark(s) on {} system(s) to {}",
        done.results,
        done.benchmarks,
        done.systems.len(),
        m.out.display()
    );
    if done.estimated_skipped > 0 {
        println!(
            "left out {} run(s) with estimated energy (--measured-only)",
            done.estimated_skipped
        );
    }
    if done.translated_logs > 0 {
        println!(
            "{} event log(s) were written before joulebench wrote MLPerf's keys: translated, with the default submission values",
            done.translated_logs
        );
    }
    if done.short_node_logs > 0 {
        println!(
            "{} node power log(s) have fewer than MLPerf Power's 60 readings (runs shorter than a minute at 1 Hz); each says so in its power_measurement_stop",
            done.short_node_logs
        );
    }
    Ok(0)
}
