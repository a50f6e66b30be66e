//! The run files a footprint is computed from: every results folder at or below the folders
//! the command names, read through `record::read` strictly (a bad run file or timeline stops
//! the command: the hourly profile would otherwise fall back silently to a flat one).
//!
//! Owns: finding the folders and gathering their records and timelines.
//! Must not: compute or render anything.

use super::footprint::RunInput;
use super::CarbonError;
use crate::measure::PowerSample;
use crate::record::{read, RunRecord};
use std::path::{Path, PathBuf};

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
