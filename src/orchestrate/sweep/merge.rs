//! `joulebench merge`: gather shard outputs into one results folder (docs/design/scale-out.md step 5).
//!
//! Owns: copying run files (with their event logs and power timelines) into the target folder,
//! de-duplicated by run id (byte-identical copies are one run; two sources with different files
//! for one run id, or for one plan entry, are a conflict and nothing is written; a source's file
//! replaces the target's older copy, so rerun shards merge again), and, given the plan, the
//! list of missing and failed entries and the `--array=` list to resubmit.
//! Must not: train, or change a run file's content (it copies bytes).

use super::plan::{array_list, PlanFile};
use crate::record::curve::Status;
use crate::record::{read, write_atomic, ResultsDir, RunRecord};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{path}: not a results folder (no runs/ inside)")]
    NotResults { path: String },
    #[error(
        "conflict: {a} and {b} are two different runs of {what}; nothing merged (remove the wrong one)"
    )]
    Conflict { a: String, b: String, what: String },
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("{path}: run of plan {found}, not of the plan given ({expected})")]
    OtherPlan {
        path: String,
        found: String,
        expected: String,
    },
}

/// What a merge found and did.
#[derive(Debug, Default)]
pub struct MergeOutcome {
    /// Run ids newly copied into the target.
    pub copied: Vec<String>,
    /// Run ids already present (identical bytes) or seen twice among the sources.
    pub duplicates: usize,
    /// Run ids whose copy in the target was replaced by a source's (a rerun shard).
    pub replaced: Vec<String>,
    /// Files that are not run files (corrupt JSON): (path, why). Not copied.
    pub unreadable: Vec<(String, String)>,
    /// With a plan: entries with no run, and entries whose run failed or diverged.
    pub missing: Vec<usize>,
    pub failed: Vec<usize>,
    /// With a plan that runs seeds until settled: entries with no run because the verdict
    /// they would feed was settled (not missing).
    pub settled: Vec<usize>,
    /// Runs in the target folder after the merge.
    pub total: usize,
}

struct Found {
    path: PathBuf,
    bytes: Vec<u8>,
    rec: RunRecord,
}

fn io(path: &Path, e: impl std::fmt::Display) -> MergeError {
    MergeError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn run_files(dir: &Path) -> Result<Vec<PathBuf>, MergeError> {
    read::run_files(dir).map_err(|e| match e {
        read::FileError::NoRuns { .. } => MergeError::NotResults {
            path: dir.display().to_string(),
        },
        other => io(dir, other),
    })
}

/// Merge `sources` into `into`. Everything is checked before anything is written.
pub fn merge(
    sources: &[PathBuf],
    into: &Path,
    plan: Option<&PlanFile>,
) -> Result<MergeOutcome, MergeError> {
    let mut out = MergeOutcome::default();
    // The target's own runs take part in the conflict check.
    let mut by_id: BTreeMap<String, Found> = BTreeMap::new();
    let mut by_entry: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut new_ids = Vec::new();
    let mut from_target: Vec<String> = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    if read::has_runs(into) {
        dirs.push(into.to_path_buf());
    }
    dirs.extend(sources.iter().cloned());
    for (k, dir) in dirs.iter().enumerate() {
        let is_target = k == 0 && read::has_runs(into);
        for path in run_files(dir)? {
            let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
            let rec: RunRecord = match read::parse_run(&path, &bytes) {
                Ok(r) => r,
                Err(e) => {
                    out.unreadable
                        .push((path.display().to_string(), e.reason()));
                    continue;
                }
            };
            if let (Some(p), Some(plan)) = (&rec.plan, plan) {
                if p.hash != plan.hash && !is_target {
                    return Err(MergeError::OtherPlan {
                        path: path.display().to_string(),
                        found: p.hash.clone(),
                        expected: plan.hash.clone(),
                    });
                }
            }
            if let Some(p) = &rec.plan {
                let key = (p.hash.clone(), p.entry_id.clone());
                if let Some(other) = by_entry.get(&key) {
                    if other != &rec.run_id {
                        return Err(MergeError::Conflict {
                            a: by_id[other].path.display().to_string(),
                            b: path.display().to_string(),
                            what: format!("plan entry {} (index {})", p.entry_id, p.index),
                        });
                    }
                }
                by_entry.insert(key, rec.run_id.clone());
            }
            match by_id.get(&rec.run_id) {
                Some(f) if f.bytes == bytes => out.duplicates += 1,
                // A source's run replaces the target's older copy (a shard rerun after its
                // result was deleted); only sources disagreeing with each other conflict.
                Some(_) if from_target.contains(&rec.run_id) && !is_target => {
                    from_target.retain(|id| id != &rec.run_id);
                    out.replaced.push(rec.run_id.clone());
                    new_ids.push(rec.run_id.clone());
                    by_id.insert(rec.run_id.clone(), Found { path, bytes, rec });
                }
                Some(f) => {
                    return Err(MergeError::Conflict {
                        a: f.path.display().to_string(),
                        b: path.display().to_string(),
                        what: format!("run id {}", rec.run_id),
                    })
                }
                None => {
                    if is_target {
                        from_target.push(rec.run_id.clone());
                    } else {
                        new_ids.push(rec.run_id.clone());
                    }
                    by_id.insert(rec.run_id.clone(), Found { path, bytes, rec });
                }
            }
        }
    }
    let target = ResultsDir::open(into).map_err(|e| io(into, e))?;
    for id in &new_ids {
        let f = &by_id[id];
        let src_root = f
            .path
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| io(&f.path, "no results folder"))?;
        let src = ResultsDir::existing(src_root);
        // A program's log (`exec` runs), then events and timeline, the run file last (as
        // `write_run` does).
        let log = Path::new("logs").join(format!("{id}.log"));
        if src_root.join(&log).is_file() {
            let b = std::fs::read(src_root.join(&log)).map_err(|e| io(&src_root.join(&log), e))?;
            let to = into.join(&log);
            std::fs::create_dir_all(into.join("logs")).map_err(|e| io(&to, e))?;
            write_atomic(&to, &b).map_err(|e| io(&to, e))?;
        }
        for (from, to) in src.run_files(id).iter().zip(target.run_files(id).iter()) {
            if from == &f.path {
                write_atomic(to, &f.bytes).map_err(|e| io(to, e))?;
            } else if from.is_file() {
                let b = std::fs::read(from).map_err(|e| io(from, e))?;
                write_atomic(to, &b).map_err(|e| io(to, e))?;
            }
        }
        out.copied.push(id.clone());
    }
    // system.json: the first source's, if the target has none (one per machine class; every
    // run file names its system id).
    let sys = into.join("system.json");
    if !sys.exists() {
        if let Some(s) = sources
            .iter()
            .map(|d| d.join("system.json"))
            .find(|p| p.is_file())
        {
            let b = std::fs::read(&s).map_err(|e| io(&s, e))?;
            write_atomic(&sys, &b).map_err(|e| io(&sys, e))?;
        }
    }
    if let Some(plan) = plan {
        let p = into.join("plan.json");
        if !p.exists() {
            let text = plan.to_json().map_err(|e| io(&p, e))?;
            write_atomic(&p, text.as_bytes()).map_err(|e| io(&p, e))?;
        }
        let mut status: BTreeMap<&str, Status> = BTreeMap::new();
        for f in by_id.values() {
            if let Some(r) = f.rec.plan.as_ref().filter(|r| r.hash == plan.hash) {
                status.insert(&r.entry_id, f.rec.status);
            }
        }
        let settled = super::settle::not_needed(plan, into);
        for e in &plan.entries {
            match status.get(e.id.as_str()) {
                None if settled.contains(&e.index) => out.settled.push(e.index),
                None => out.missing.push(e.index),
                Some(Status::Failed | Status::Diverged) => out.failed.push(e.index),
                Some(_) => {}
            }
        }
    }
    out.total = by_id.len();
    Ok(out)
}

/// The `--array=` list to resubmit the shards holding missing or failed entries.
pub fn resubmit_list(out: &MergeOutcome, shard_count: u64) -> String {
    let mut ix = out.missing.clone();
    ix.extend(&out.failed);
    array_list(&ix, shard_count)
}
