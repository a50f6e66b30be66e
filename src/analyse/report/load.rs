//! Reading results folders for a report, tolerantly.
//!
//! Owns: finding the results folders among the paths the user gave (a folder with `runs/`, or
//! a folder of such folders, one per machine), reading every `runs/*.json` into a
//! [`RunRecord`], and turning each unusable file into one [`LoadIssue`] that names it (foreign
//! JSON, malformed JSON, a newer `schema_version`, an invalid run file, an empty folder, a
//! duplicate run id) so the good runs are still reported. Also reads `power/<run-id>.csv`,
//! and the `collapse-*.json` files at a folder's top level (through `collapse.rs`; a folder
//! with only those is a results folder too).
//! Must not: compute statistics, or write anything.

use super::collapse_file::{self as collapse, CollapseFile, CollapseFileError};
use crate::measure::PowerSample;
use crate::record::read::{self, RunFileError};
use crate::record::RunRecord;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A path the user gave that cannot be a results folder: a usage error (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("results folder {path}: does not exist")]
    Missing { path: String },
    #[error("results folder {path}: is not a directory")]
    NotADirectory { path: String },
    #[error("results folder {path}: cannot list: {source}")]
    Unlistable {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A file or folder skipped while reading; the report goes on without it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadIssue {
    /// A run file `record::read` refused (its message names the file).
    #[error(transparent)]
    Run(#[from] RunFileError),
    #[error("{path}: no run files (expected runs/*.json)")]
    Empty { path: String },
    #[error("{path}: run id {run_id} already read from {first}; kept the first")]
    Duplicate {
        path: String,
        run_id: String,
        first: String,
    },
    #[error("{path}: power timeline skipped ({reason})")]
    Timeline { path: String, reason: String },
}

/// One run file that was read, and where from.
#[derive(Debug, Clone)]
pub struct LoadedRun {
    pub record: RunRecord,
    /// The results folder (the parent of `runs/`).
    pub folder: PathBuf,
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FolderSummary {
    pub path: String,
    pub runs: usize,
    /// `collapse-*.json` files read (not in leaderboard.json: its tables are the runs').
    #[serde(skip)]
    pub collapse_files: usize,
}

/// Everything read from the folders, in a stable order (folder order, then run id).
#[derive(Debug, Default)]
pub struct Loaded {
    pub runs: Vec<LoadedRun>,
    pub folders: Vec<FolderSummary>,
    pub issues: Vec<LoadIssue>,
    /// Collapse files read, in folder order, then by name.
    pub collapse: Vec<CollapseFile>,
    /// Collapse files that could not be read: unlike a bad run file, `report` stops (exit 2).
    pub collapse_errors: Vec<CollapseFileError>,
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

/// Whether `dir` holds results: a `runs/` folder or `collapse-*.json` files.
fn is_results_folder(dir: &Path) -> bool {
    read::has_runs(dir) || !collapse::find(dir).is_empty()
}

/// The results folders named by `paths`: each path is a results folder itself when it has a
/// `runs/` folder or collapse files, else each of its subfolders that has either (a folder of
/// machines, such as the repository's `results/`), else itself (reported as empty).
pub fn resolve_folders(paths: &[PathBuf]) -> Result<Vec<PathBuf>, FolderError> {
    let mut out = Vec::new();
    for p in paths {
        if !p.exists() {
            return Err(FolderError::Missing { path: show(p) });
        }
        if !p.is_dir() {
            return Err(FolderError::NotADirectory { path: show(p) });
        }
        if is_results_folder(p) {
            out.push(p.clone());
            continue;
        }
        let mut children: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|source| FolderError::Unlistable {
                path: show(p),
                source,
            })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|c| is_results_folder(c))
            .collect();
        children.sort();
        if children.is_empty() {
            out.push(p.clone());
        } else {
            out.extend(children);
        }
    }
    // A folder named twice (or inside a folder of machines also named) is read once.
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|f| seen.insert(f.canonicalize().unwrap_or_else(|_| f.clone())));
    Ok(out)
}

/// Read every run file of every folder (`record::read` lists and parses them); each file
/// that cannot be used becomes one issue, and the rest are reported.
pub fn load(folders: &[PathBuf]) -> Loaded {
    let mut loaded = Loaded::default();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for folder in folders {
        let runs_dir = read::runs_dir(folder);
        // A folder without runs/ (collapse files only) or one that cannot be listed has no
        // run files; an unlistable one is reported as empty.
        let files = read::run_files(folder).unwrap_or_default();
        let mut count = 0;
        for path in files {
            let parsed = read::read_run(&path).map_err(LoadIssue::from);
            match parsed {
                Ok(record) => {
                    if let Some(first) = seen.get(&record.run_id) {
                        loaded.issues.push(LoadIssue::Duplicate {
                            path: show(&path),
                            run_id: record.run_id.clone(),
                            first: first.clone(),
                        });
                        continue;
                    }
                    seen.insert(record.run_id.clone(), show(&path));
                    count += 1;
                    loaded.runs.push(LoadedRun {
                        record,
                        folder: folder.clone(),
                        path,
                    });
                }
                Err(issue) => loaded.issues.push(issue),
            }
        }
        let mut collapse_files = 0;
        for path in collapse::find(folder) {
            match collapse::read(&path) {
                Ok(f) => {
                    collapse_files += 1;
                    loaded.collapse.push(f);
                }
                Err(e) => loaded.collapse_errors.push(e),
            }
        }
        if count == 0
            && collapse_files == 0
            && !loaded.issues.iter().any(|i| issue_in(i, &runs_dir))
        {
            loaded.issues.push(LoadIssue::Empty { path: show(folder) });
        }
        loaded.folders.push(FolderSummary {
            path: show(folder),
            runs: count,
            collapse_files,
        });
    }
    loaded
}

fn issue_in(issue: &LoadIssue, dir: &Path) -> bool {
    let prefix = show(dir);
    match issue {
        LoadIssue::Run(e) => e.path().starts_with(&prefix),
        LoadIssue::Duplicate { path, .. } => path.starts_with(&prefix),
        LoadIssue::Empty { .. } | LoadIssue::Timeline { .. } => false,
    }
}

/// `power/<run-id>.csv` of a run (`record::read`'s reader); `Ok(None)` when the file does not
/// exist, a [`LoadIssue::Timeline`] when it cannot be read.
pub fn read_timeline(run: &LoadedRun) -> Result<Option<Vec<PowerSample>>, LoadIssue> {
    read::read_timeline(&run.folder, &run.record.run_id).map_err(|e| LoadIssue::Timeline {
        path: read::timeline_path(&run.folder, &run.record.run_id)
            .display()
            .to_string(),
        reason: e.reason(),
    })
}
