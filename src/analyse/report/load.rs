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

use super::collapse::{self, CollapseFile, CollapseFileError};
use crate::measure::PowerSample;
use crate::record::{RunRecord, SCHEMA_VERSION};
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
    #[error("{path}: cannot read: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{path}: malformed JSON ({reason})")]
    Malformed { path: String, reason: String },
    #[error("{path}: not a joulebench run file ({reason})")]
    Foreign { path: String, reason: String },
    #[error(
        "{path}: schema_version {found} is newer than this joulebench reads ({supported}); report it with a newer joulebench"
    )]
    NewerSchema {
        path: String,
        found: u64,
        supported: u32,
    },
    #[error("{path}: invalid run file ({reason})")]
    Invalid { path: String, reason: String },
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
    dir.join("runs").is_dir() || !collapse::find(dir).is_empty()
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

/// Parse one run file, or say why it is not one.
pub fn parse_run(path: &Path, bytes: &[u8]) -> Result<RunRecord, LoadIssue> {
    let p = show(path);
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| LoadIssue::Malformed {
            path: p.clone(),
            reason: e.to_string(),
        })?;
    let Some(obj) = value.as_object() else {
        return Err(LoadIssue::Foreign {
            path: p,
            reason: "top level is not an object".into(),
        });
    };
    let Some(version) = obj.get("schema_version") else {
        return Err(LoadIssue::Foreign {
            path: p,
            reason: "no schema_version".into(),
        });
    };
    let Some(found) = version.as_u64() else {
        return Err(LoadIssue::Foreign {
            path: p,
            reason: format!("schema_version {version} is not a whole number"),
        });
    };
    if found > u64::from(SCHEMA_VERSION) {
        return Err(LoadIssue::NewerSchema {
            path: p,
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let rec: RunRecord = serde_json::from_value(value).map_err(|e| LoadIssue::Invalid {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    check_scores(&rec).map_err(|reason| LoadIssue::Invalid { path: p, reason })?;
    Ok(rec)
}

/// A run file whose figures cannot be ranked is refused, not ranked: a negative or non-finite
/// energy would sort first, and an `ok` run (one that reached T) must say with what energy.
pub fn check_scores(rec: &RunRecord) -> Result<(), String> {
    let bad = |x: f64| !(x.is_finite() && x >= 0.0);
    if bad(rec.energy.total_j) {
        return Err(format!(
            "energy.total_j {} is not a non-negative number",
            rec.energy.total_j
        ));
    }
    for (key, v) in [("ett_j", rec.ett_j), ("ttt_s", rec.ttt_s), ("jpp", rec.jpp)] {
        if let Some(x) = v.filter(|x| bad(*x)) {
            return Err(format!("{key} {x} is not a non-negative number"));
        }
    }
    let throughput = rec.variant.data_source() == crate::spec::variant::DataSource::Random;
    if rec.status == crate::engine::train::Status::Ok && rec.ett_j.is_none() && !throughput {
        return Err("status ok (reached the target) but no ett_j".into());
    }
    Ok(())
}

/// Read every run file of every folder. Files whose name starts with `.` (temp files of an
/// atomic write in progress) and files not ending in `.json` are not run files.
pub fn load(folders: &[PathBuf]) -> Loaded {
    let mut loaded = Loaded::default();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for folder in folders {
        let runs_dir = folder.join("runs");
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&runs_dir) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    !name.starts_with('.') && name.ends_with(".json") && p.is_file()
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        let mut count = 0;
        for path in files {
            let parsed = std::fs::read(&path)
                .map_err(|e| LoadIssue::Unreadable {
                    path: show(&path),
                    reason: e.to_string(),
                })
                .and_then(|bytes| parse_run(&path, &bytes));
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
        LoadIssue::Unreadable { path, .. }
        | LoadIssue::Malformed { path, .. }
        | LoadIssue::Foreign { path, .. }
        | LoadIssue::NewerSchema { path, .. }
        | LoadIssue::Invalid { path, .. }
        | LoadIssue::Duplicate { path, .. } => path.starts_with(&prefix),
        LoadIssue::Empty { .. } | LoadIssue::Timeline { .. } => false,
    }
}

/// `power/<run-id>.csv` of a run (`t_s,component,energy_j,power_w`); `Ok(None)` when the file
/// does not exist.
pub fn read_timeline(run: &LoadedRun) -> Result<Option<Vec<PowerSample>>, LoadIssue> {
    let path = run
        .folder
        .join("power")
        .join(format!("{}.csv", run.record.run_id));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(LoadIssue::Timeline {
                path: show(&path),
                reason: e.to_string(),
            })
        }
    };
    parse_timeline(&text)
        .map(Some)
        .map_err(|reason| LoadIssue::Timeline {
            path: show(&path),
            reason,
        })
}

/// Parse the long-format power timeline written by `results::power_csv`.
pub fn parse_timeline(text: &str) -> Result<Vec<PowerSample>, String> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    if header.trim() != "t_s,component,energy_j,power_w" {
        return Err(format!(
            "unexpected header {}",
            crate::base::csvline::excerpt(header)
        ));
    }
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let bad = || format!("line {}: {}", i + 2, crate::base::csvline::excerpt(line));
        if f.len() != 4 {
            return Err(bad());
        }
        let num = |s: &str| s.trim().parse::<f64>().map_err(|_| bad());
        out.push(PowerSample {
            t_s: num(f[0])?,
            component: f[1].to_string(),
            energy_j: num(f[2])?,
            power_w: if f[3].trim().is_empty() {
                None
            } else {
                Some(num(f[3])?)
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_bad_files() {
        let p = Path::new("r/runs/x.json");
        let e = parse_run(p, b"{not json").unwrap_err();
        assert!(matches!(e, LoadIssue::Malformed { .. }), "{e}");
        assert!(
            e.to_string().starts_with("r/runs/x.json: malformed JSON"),
            "{e}"
        );
        let e = parse_run(p, b"[1, 2]").unwrap_err();
        assert!(matches!(e, LoadIssue::Foreign { .. }), "{e}");
        let e = parse_run(p, br#"{"name": "other tool"}"#).unwrap_err();
        assert!(e.to_string().contains("no schema_version"), "{e}");
        let e = parse_run(p, br#"{"schema_version": 99, "run_id": "a"}"#).unwrap_err();
        assert!(matches!(e, LoadIssue::NewerSchema { found: 99, .. }), "{e}");
        let e = parse_run(p, br#"{"schema_version": 1, "run_id": "a"}"#).unwrap_err();
        assert!(e.to_string().contains("missing field"), "{e}");
    }

    #[test]
    fn unrankable_figures_are_refused() {
        let good = std::fs::read(
            "tests/fixtures/report/machines/xeon-rapl/runs/digits-mlp--f32--seed-1--a1b2c3d4.json",
        )
        .unwrap();
        let p = Path::new("r/runs/x.json");
        let rec = parse_run(p, &good).unwrap();
        assert!(rec.ett_j.is_some());
        let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
        v["ett_j"] = serde_json::json!(-5.0);
        let e = parse_run(p, &serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            e.to_string().contains("ett_j -5 is not a non-negative"),
            "{e}"
        );
        v["ett_j"] = serde_json::Value::Null;
        let e = parse_run(p, &serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("status ok"), "{e}");
        v["status"] = serde_json::json!("dnf");
        assert!(parse_run(p, &serde_json::to_vec(&v).unwrap()).is_ok());
    }

    #[test]
    fn timeline_parses_and_rejects() {
        let t =
            parse_timeline("t_s,component,energy_j,power_w\n1.000,cpu,8.0,8.000\n1.0,gpu:0,3,\n")
                .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].power_w, None);
        assert!(parse_timeline("a,b\n").is_err());
        assert!(
            parse_timeline("t_s,component,energy_j,power_w\n1,cpu,x,2\n")
                .unwrap_err()
                .contains("line 2")
        );
    }
}
