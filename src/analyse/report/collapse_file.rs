//! The collapse experiment's files in a results folder: the files `joulebench collapse --out
//! DIR` writes (`collapse-digits.json`, `collapse-gaussian.json`), found at the top level of a
//! results folder.
//!
//! Owns: finding and reading those files into the collapse module's own serde types (a file
//! that cannot be read is a [`CollapseFileError`] naming it: `report` stops with exit 2).
//! Must not: render them (`collapse.rs`).

use crate::record::collapse::{DigitsReport, GaussianFile};
use std::path::{Path, PathBuf};

/// A collapse file that cannot be reported: a usage error (exit 2), one line naming it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CollapseFileError {
    #[error("{path}: cannot read collapse file: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{path}: malformed collapse JSON ({reason})")]
    Malformed { path: String, reason: String },
    #[error("{path}: not a joulebench collapse file ({reason})")]
    Invalid { path: String, reason: String },
}

/// What one file holds.
#[derive(Debug, Clone)]
pub enum Experiment {
    Digits(Box<DigitsReport>),
    Gaussian(GaussianFile),
}

/// One collapse file that was read.
#[derive(Debug, Clone)]
pub struct CollapseFile {
    /// As the user named it (folder joined with the file name).
    pub path: String,
    pub experiment: Experiment,
}

/// `collapse-*.json`, not a hidden temp file of an atomic write.
pub fn is_collapse_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.starts_with("collapse-") && name.ends_with(".json") && path.is_file()
}

/// The collapse files at the top level of `folder`, by name.
pub fn find(folder: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(folder) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| is_collapse_file(p))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// Parse one collapse file: `"experiment": "gaussian"` is the Gaussian part, a file without
/// `experiment` the digits part (`collapse-digits.json` has none).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<CollapseFile, CollapseFileError> {
    let p = path.display().to_string();
    let invalid = |reason: String| CollapseFileError::Invalid {
        path: p.clone(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| CollapseFileError::Malformed {
            path: p.clone(),
            reason: e.to_string(),
        })?;
    let Some(obj) = value.as_object() else {
        return Err(invalid("top level is not an object".into()));
    };
    let experiment = match obj.get("experiment").map(|e| e.as_str()) {
        Some(Some("gaussian")) => {
            let g: GaussianFile =
                serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
            if g.runs.is_empty() {
                return Err(invalid("no runs".into()));
            }
            if let Some(r) = g.runs.iter().find(|r| r.generations.is_empty()) {
                return Err(invalid(format!(
                    "policy {} has no generations",
                    r.config.policy
                )));
            }
            Experiment::Gaussian(g)
        }
        Some(other) => {
            return Err(invalid(format!(
                "experiment {} is not one this joulebench reports (gaussian, or none for digits)",
                other.map_or_else(|| obj["experiment"].to_string(), |s| format!("'{s}'"))
            )))
        }
        None => {
            let d: DigitsReport =
                serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
            if d.runs.is_empty() {
                return Err(invalid("no runs".into()));
            }
            if let Some(r) = d.runs.iter().find(|r| r.generations.is_empty()) {
                return Err(invalid(format!("policy {} has no generations", r.policy)));
            }
            Experiment::Digits(Box::new(d))
        }
    };
    Ok(CollapseFile {
        path: p,
        experiment,
    })
}

/// Read and parse one file.
pub fn read(path: &Path) -> Result<CollapseFile, CollapseFileError> {
    let bytes = std::fs::read(path).map_err(|e| CollapseFileError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    parse(path, &bytes)
}
