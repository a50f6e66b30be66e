//! Reading a results folder back: the one place that lists and parses `runs/*.json`, and reads
//! `power/<run-id>.csv` and `events/<run-id>.mllog` (the writer is `ResultsDir`, beside it).
//!
//! Owns: what counts as a run file (a `.json` file in `runs/` whose name does not start with
//! `.`, the temp file of an atomic write in progress), how strictly one is read (JSON, an
//! object with a `schema_version` this build reads, the schema, scores that can be ranked),
//! and the typed errors that name the file. The one policy for every command: a bad file is an
//! error naming it; the command decides whether it skips that file with a warning (`report`,
//! `merge`, `target`, a sweep's rerun of a corrupt entry) or stops (`footprint`, `crosscheck`,
//! `export`).
//! Must not: decide what a command does with a bad file, or compute anything from the runs.

use crate::measure::PowerSample;
use crate::record::curve::{Event, Status};
use crate::record::{parse_mllog, RunRecord, SCHEMA_VERSION};
use std::path::{Path, PathBuf};

/// Why a file is not a run file this build can use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunFileError {
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
}

impl RunFileError {
    /// The file it is about.
    pub fn path(&self) -> &str {
        match self {
            RunFileError::Unreadable { path, .. }
            | RunFileError::Malformed { path, .. }
            | RunFileError::Foreign { path, .. }
            | RunFileError::NewerSchema { path, .. }
            | RunFileError::Invalid { path, .. } => path,
        }
    }

    /// What is wrong, without the path (for a list that names the file itself).
    pub fn reason(&self) -> String {
        let text = self.to_string();
        let prefix = format!("{}: ", self.path());
        text.strip_prefix(&prefix).unwrap_or(&text).to_string()
    }
}

/// A `runs/` folder that cannot be listed, or a power timeline or event log that cannot be
/// read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FileError {
    #[error("{path}: not a results folder (no runs/ folder)")]
    NoRuns { path: String },
    #[error("{path}: cannot list: {reason}")]
    Unlistable { path: String, reason: String },
    #[error("{path}: {reason}")]
    Unreadable { path: String, reason: String },
}

impl FileError {
    /// What is wrong, without the path.
    pub fn reason(&self) -> String {
        match self {
            FileError::NoRuns { .. } => "not a results folder (no runs/ folder)".into(),
            FileError::Unlistable { reason, .. } | FileError::Unreadable { reason, .. } => {
                reason.clone()
            }
        }
    }
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

/// The `runs/` folder of the results folder `dir`.
pub fn runs_dir(dir: &Path) -> PathBuf {
    dir.join("runs")
}

/// Whether `dir` has a `runs/` folder.
pub fn has_runs(dir: &Path) -> bool {
    runs_dir(dir).is_dir()
}

/// The run files of the results folder `dir`, sorted by name.
pub fn run_files(dir: &Path) -> Result<Vec<PathBuf>, FileError> {
    let runs = runs_dir(dir);
    if !runs.is_dir() {
        return Err(FileError::NoRuns { path: show(dir) });
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&runs)
        .map_err(|e| FileError::Unlistable {
            path: show(&runs),
            reason: e.to_string(),
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && name.ends_with(".json") && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Read and parse one run file.
pub fn read_run(path: &Path) -> Result<RunRecord, RunFileError> {
    let bytes = std::fs::read(path).map_err(|e| RunFileError::Unreadable {
        path: show(path),
        reason: e.to_string(),
    })?;
    parse_run(path, &bytes)
}

/// Parse one run file, or say why it is not one.
pub fn parse_run(path: &Path, bytes: &[u8]) -> Result<RunRecord, RunFileError> {
    let p = show(path);
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| RunFileError::Malformed {
            path: p.clone(),
            reason: e.to_string(),
        })?;
    let Some(obj) = value.as_object() else {
        return Err(RunFileError::Foreign {
            path: p,
            reason: "top level is not an object".into(),
        });
    };
    let Some(version) = obj.get("schema_version") else {
        return Err(RunFileError::Foreign {
            path: p,
            reason: "no schema_version".into(),
        });
    };
    let Some(found) = version.as_u64() else {
        return Err(RunFileError::Foreign {
            path: p,
            reason: format!("schema_version {version} is not a whole number"),
        });
    };
    if found > u64::from(SCHEMA_VERSION) {
        return Err(RunFileError::NewerSchema {
            path: p,
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let rec: RunRecord = serde_json::from_value(value).map_err(|e| RunFileError::Invalid {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    check_scores(&rec).map_err(|e| RunFileError::Invalid {
        path: p,
        reason: e.to_string(),
    })?;
    Ok(rec)
}

/// Figures of a run file that cannot be ranked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScoreError {
    /// `key` (`energy.total_j`, `ett_j`, `ttt_s`, `jpp`) is negative, NaN or infinite.
    #[error("{key} {value} is not a non-negative number")]
    NotNonNegative { key: &'static str, value: f64 },
    #[error("status ok (reached the target) but no ett_j")]
    OkWithoutEtt,
}

/// A run file whose figures cannot be ranked is refused, not ranked: a negative or non-finite
/// energy would sort first, and an `ok` run (one that reached T) must say with what energy.
pub fn check_scores(rec: &RunRecord) -> Result<(), ScoreError> {
    let bad = |x: f64| !(x.is_finite() && x >= 0.0);
    for (key, v) in [
        ("energy.total_j", Some(rec.energy.total_j)),
        ("ett_j", rec.ett_j),
        ("ttt_s", rec.ttt_s),
        ("jpp", rec.jpp),
    ] {
        if let Some(value) = v.filter(|x| bad(*x)) {
            return Err(ScoreError::NotNonNegative { key, value });
        }
    }
    let throughput = rec.variant.data_source() == crate::spec::variant::DataSource::Random;
    if rec.status == Status::Ok && rec.ett_j.is_none() && !throughput {
        return Err(ScoreError::OkWithoutEtt);
    }
    Ok(())
}

/// `power/<run-id>.csv` of the results folder `folder`.
pub fn timeline_path(folder: &Path, run_id: &str) -> PathBuf {
    folder.join("power").join(format!("{run_id}.csv"))
}

/// A run's power timeline (`t_s,component,energy_j,power_w`); `Ok(None)` when the file does
/// not exist.
pub fn read_timeline(folder: &Path, run_id: &str) -> Result<Option<Vec<PowerSample>>, FileError> {
    let path = timeline_path(folder, run_id);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(FileError::Unreadable {
                path: show(&path),
                reason: e.to_string(),
            })
        }
    };
    parse_timeline(&text)
        .map(Some)
        .map_err(|e| FileError::Unreadable {
            path: show(&path),
            reason: e.to_string(),
        })
}

/// Why a power timeline cannot be read: the header, or the first bad row by its line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimelineError {
    #[error("unreadable header ({0})")]
    Header(String),
    #[error("unexpected header {0}")]
    UnexpectedHeader(String),
    #[error("line {line}: {reason}")]
    Row { line: u64, reason: String },
    #[error("line {line}: {excerpt}")]
    NotANumber { line: u64, excerpt: String },
}

/// Parse the long-format power timeline written by `record::power_csv`.
pub fn parse_timeline(text: &str) -> Result<Vec<PowerSample>, TimelineError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let header = reader
        .headers()
        .map_err(|e| TimelineError::Header(e.to_string()))?
        .clone();
    if header.iter().collect::<Vec<_>>() != ["t_s", "component", "energy_j", "power_w"] {
        let first = text.lines().next().unwrap_or("");
        return Err(TimelineError::UnexpectedHeader(
            crate::base::csvline::excerpt(first),
        ));
    }
    let mut out = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            TimelineError::Row {
                line,
                reason: e.to_string(),
            }
        })?;
        let line = row.position().map_or(0, |p| p.line());
        let bad = || TimelineError::NotANumber {
            line,
            excerpt: crate::base::csvline::excerpt(&row.iter().collect::<Vec<_>>().join(",")),
        };
        let num = |s: &str| s.trim().parse::<f64>().map_err(|_| bad());
        out.push(PowerSample {
            t_s: num(&row[0])?,
            component: row[1].to_string(),
            energy_j: num(&row[2])?,
            power_w: if row[3].trim().is_empty() {
                None
            } else {
                Some(num(&row[3])?)
            },
        });
    }
    Ok(out)
}

/// `events/<run-id>.mllog` of the results folder `folder`.
pub fn events_path(folder: &Path, run_id: &str) -> PathBuf {
    folder.join("events").join(format!("{run_id}.mllog"))
}

/// A run's event log, read back into events.
pub fn read_events(folder: &Path, run_id: &str) -> Result<Vec<Event>, FileError> {
    let path = events_path(folder, run_id);
    let err = |reason: String| FileError::Unreadable {
        path: show(&path),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
    parse_mllog(&text).map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_bad_files() {
        let p = Path::new("r/runs/x.json");
        let e = parse_run(p, b"{not json").unwrap_err();
        assert!(matches!(e, RunFileError::Malformed { .. }), "{e}");
        assert!(e.to_string().starts_with("r/runs/x.json: malformed JSON"));
        let e = parse_run(p, b"[1]").unwrap_err();
        assert!(matches!(e, RunFileError::Foreign { .. }), "{e}");
        let e = parse_run(p, br#"{"a": 1}"#).unwrap_err();
        assert!(e.to_string().contains("no schema_version"), "{e}");
        let e = parse_run(p, br#"{"schema_version": 99}"#).unwrap_err();
        assert!(
            matches!(e, RunFileError::NewerSchema { found: 99, .. }),
            "{e}"
        );
        let e = parse_run(p, br#"{"schema_version": 1}"#).unwrap_err();
        assert!(matches!(e, RunFileError::Invalid { .. }), "{e}");
        assert_eq!(e.path(), "r/runs/x.json");
        assert!(
            e.reason().starts_with("invalid run file ("),
            "{}",
            e.reason()
        );
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
    fn timelines_parse_with_and_without_power() {
        let t =
            parse_timeline("t_s,component,energy_j,power_w\n1.000,cpu,8.0,8.000\n1.0,gpu:0,3,\n")
                .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].power_w, None);
        assert_eq!(t[1].component, "gpu:0");
        assert!(parse_timeline("a,b\n").is_err());
        let e = parse_timeline("t_s,component,energy_j,power_w\n1,cpu,x,2\n").unwrap_err();
        assert!(
            matches!(e, TimelineError::NotANumber { line: 2, .. }),
            "{e}"
        );
        assert!(parse_timeline("t_s,component,energy_j,power_w\n1,cpu,2\n").is_err());
    }

    #[test]
    fn lists_run_files_only() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            run_files(tmp.path()).unwrap_err(),
            FileError::NoRuns { .. }
        ));
        let runs = tmp.path().join("runs");
        std::fs::create_dir(&runs).unwrap();
        for name in ["b.json", "a.json", ".a.json.tmp", ".c.json", "notes.txt"] {
            std::fs::write(runs.join(name), "{}").unwrap();
        }
        std::fs::create_dir(runs.join("d.json")).unwrap();
        let names: Vec<String> = run_files(tmp.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.json", "b.json"]);
    }
}
