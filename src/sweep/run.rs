//! Running (a shard of) a plan into a results folder, resumably.
//!
//! Owns: deciding which runs of a shard are still to do (a run file of the same plan hash and
//! entry id is finished; a corrupt one is reported and rerun; one of another plan is refused),
//! the per-run lock that keeps two processes sharing a folder from running the same entry,
//! and handing the rest to `runner::Session` in the plan's execution order.
//! Must not: measure or train itself (`runner` does), or decide shard membership (`plan`).

use super::plan::{Entry, PlanFile};
use crate::results::{PlanRef, ResultsDir, RunRecord, SchedulerInfo};
use crate::runner::{Job, Plan, RunExtras, Session, TaskRun};
use crate::train::{Observer, Status};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(
        "{path} is a run of {what}, not of plan '{plan}' ({hash}): a results folder holds one sweep plan; choose another --results folder"
    )]
    ForeignRun {
        path: String,
        what: String,
        plan: String,
        hash: String,
    },
    #[error(
        "{path} holds plan '{other}' ({other_hash}), not '{plan}' ({hash}): a results folder holds one sweep plan; choose another --results folder"
    )]
    OtherPlan {
        path: String,
        other: String,
        other_hash: String,
        plan: String,
        hash: String,
    },
    #[error("lock {path}: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
}

/// What the pre-scan found for one entry.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// A run file of this plan and entry (its status).
    Done(Status),
    /// No run file.
    Missing,
    /// A run file that cannot be read as a run: reported, then rerun.
    Corrupt(String),
}

/// The state of an entry's run file at `path`, or an error when it belongs to another plan.
pub fn state_of(path: &Path, plan: &PlanFile, entry: &Entry) -> Result<State, SweepError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::Missing),
        Err(e) => return Ok(State::Corrupt(e.to_string())),
    };
    let rec: RunRecord = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => return Ok(State::Corrupt(e.to_string())),
    };
    match &rec.plan {
        Some(p) if p.hash == plan.hash && p.entry_id == entry.id => Ok(State::Done(rec.status)),
        other => Err(SweepError::ForeignRun {
            path: path.display().to_string(),
            what: match other {
                Some(p) => format!("plan '{}' ({})", p.name, short(&p.hash)),
                None => "no plan (a `joulebench run`)".into(),
            },
            plan: plan.name.clone(),
            hash: short(&plan.hash).into(),
        }),
    }
}

pub fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// Write `DIR/plan.json`, or check the one there is this plan.
pub fn claim_folder(results: &ResultsDir, plan: &PlanFile) -> anyhow::Result<()> {
    let path = results.root().join("plan.json");
    if let Ok(existing) = PlanFile::read(&path) {
        if existing.hash != plan.hash {
            return Err(SweepError::OtherPlan {
                path: path.display().to_string(),
                other: existing.name,
                other_hash: short(&existing.hash).into(),
                plan: plan.name.clone(),
                hash: short(&plan.hash).into(),
            }
            .into());
        }
        return Ok(());
    }
    crate::results::write_atomic(&path, plan.to_json().as_bytes())?;
    Ok(())
}

/// An exclusive lock on one run id, held while the run trains (released when dropped or when
/// the process dies). `None` when another process holds it.
pub struct RunLock(#[allow(dead_code)] std::fs::File);

pub fn try_lock(results: &ResultsDir, run_id: &str) -> Result<Option<RunLock>, SweepError> {
    let dir = results.root().join("locks");
    let path = dir.join(format!("{run_id}.lock"));
    let err = |source| SweepError::Lock {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(err)?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(err)?;
    use std::os::fd::AsRawFd;
    // flock(2): held by the open file, released when it is closed or the process dies (a
    // killed task leaves no stale lock). SAFETY: a valid fd owned by `f` for the call.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Some(RunLock(f)));
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        Ok(None)
    } else {
        Err(err(e))
    }
}

/// How a shard went.
#[derive(Debug, Default)]
pub struct ShardOutcome {
    /// Entries of the shard.
    pub planned: usize,
    /// Finished before this process started (skipped).
    pub already_done: usize,
    /// Run now.
    pub records: Vec<RunRecord>,
    /// Skipped because another process held their lock.
    pub busy: Vec<String>,
    /// Corrupt run files found and rerun: (path, why).
    pub corrupt: Vec<(String, String)>,
    /// Statuses of every entry of the shard known at the end.
    pub failed_or_dnf: usize,
}

#[allow(clippy::too_many_arguments)]
/// Run the entries of shard `index` of `count` that are not finished. `plan.tasks` must be
/// loaded for every task of the plan (same order as `file.tasks`).
pub fn run_shard(
    file: &PlanFile,
    shard: (u64, u64),
    runner_plan: &Plan,
    session: &mut Session,
    scheduler: &SchedulerInfo,
    retry_failed: bool,
    announce: impl FnOnce(),
    mut observer_for: impl FnMut(&str) -> Box<dyn Observer>,
    mut on_record: impl FnMut(&RunRecord),
) -> anyhow::Result<ShardOutcome> {
    let entries = file.shard(shard.0, shard.1);
    let mut out = ShardOutcome {
        planned: entries.len(),
        ..Default::default()
    };
    let job_of = |e: &Entry| -> anyhow::Result<Job> {
        let task = file
            .tasks
            .iter()
            .position(|t| t.name == e.task)
            .ok_or_else(|| anyhow::anyhow!("entry {} names unknown task {}", e.index, e.task))?;
        let variant = file
            .variant(&e.variant)
            .ok_or_else(|| anyhow::anyhow!("entry {} names unknown variant", e.index))?
            .clone();
        Ok(Job {
            task,
            variant,
            seed: e.seed,
        })
    };
    // Pre-scan: refuse a foreign folder before anything is measured.
    let mut todo = Vec::new();
    for e in entries {
        let job = job_of(e)?;
        let run_id = session.run_id(&job)?;
        let path = runner_plan.results.run_path(&run_id);
        match state_of(&path, file, e)? {
            State::Done(s) if !(retry_failed && s == Status::Failed) => {
                out.already_done += 1;
                if s != Status::Ok {
                    out.failed_or_dnf += 1;
                }
            }
            State::Corrupt(why) => {
                eprintln!(
                    "joulebench: {} is corrupt ({why}): running it again",
                    path.display()
                );
                out.corrupt.push((path.display().to_string(), why));
                todo.push((e, job, run_id, path));
            }
            _ => todo.push((e, job, run_id, path)),
        }
    }
    // The folder is this plan's: say what runs now (before this, a foreign folder is refused
    // with one line).
    announce();
    if todo.is_empty() {
        return Ok(out);
    }
    session.measure_idle()?;
    for (e, job, run_id, path) in todo {
        let Some(_lock) = try_lock(&runner_plan.results, &run_id)? else {
            eprintln!("joulebench: {run_id} is being run by another process: skipped");
            out.busy.push(run_id);
            continue;
        };
        // Another process may have finished it between the scan and the lock.
        if let State::Done(s) = state_of(&path, file, e)? {
            if !(retry_failed && s == Status::Failed) {
                out.already_done += 1;
                continue;
            }
        }
        let extras = RunExtras {
            plan: Some(PlanRef {
                hash: file.hash.clone(),
                entry_id: e.id.clone(),
                index: e.index,
                name: file.name.clone(),
                order: file.settings.order.as_str().into(),
                order_seed: file.settings.order_seed,
                position: file.position(e),
            }),
            scheduler: Some(scheduler.clone()),
        };
        let label = format!("{} {} seed {}", e.task, e.variant, e.seed);
        let mut obs = observer_for(&label);
        let rec = session.run_job(&job, &extras, obs.as_mut())?;
        if rec.status != Status::Ok {
            out.failed_or_dnf += 1;
        }
        on_record(&rec);
        out.records.push(rec);
    }
    Ok(out)
}

/// The tasks of a plan with their data loaded (checksums verified), in the plan's order. A task
/// with a `finetune` entry gets its `[finetune] source` task (from the models folder: the plan
/// freezes the fine-tuned task, the source's spec is read where it runs), so the source is
/// pretrained in the series when its checkpoint is missing.
pub fn load_tasks(
    file: &PlanFile,
    data_dir: Option<&Path>,
    device: &candle_core::Device,
) -> anyhow::Result<Vec<TaskRun>> {
    file.tasks
        .iter()
        .map(|spec| {
            let data = crate::data::load(spec.dataset, data_dir)?;
            let variants: Vec<crate::variant::Variant> = file
                .variants
                .iter()
                .filter(|v| {
                    file.entries
                        .iter()
                        .any(|e| e.task == spec.name && e.variant == v.name)
                })
                .cloned()
                .collect();
            let finetune_source = match crate::variant_run::finetune_source(
                spec,
                &variants,
                None,
                &crate::task::default_models_dir(),
                &data,
                device,
            )? {
                Some(s) => Some(Box::new(TaskRun {
                    data: crate::data::load(s.dataset, data_dir)?,
                    spec: s,
                    finetune_source: None,
                })),
                None => None,
            };
            Ok(TaskRun {
                spec: spec.clone(),
                data,
                finetune_source,
            })
        })
        .collect()
}

/// `DIR/plan.json` of a results folder.
pub fn plan_path(results: &Path) -> PathBuf {
    results.join("plan.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_lock_excludes_a_second_holder_until_dropped() {
        let t = tempfile::tempdir().unwrap();
        let r = ResultsDir::open(t.path()).unwrap();
        let first = try_lock(&r, "a--f32--seed-1--x").unwrap();
        assert!(first.is_some());
        assert!(try_lock(&r, "a--f32--seed-1--x").unwrap().is_none());
        assert!(try_lock(&r, "a--f32--seed-2--x").unwrap().is_some());
        drop(first);
        assert!(try_lock(&r, "a--f32--seed-1--x").unwrap().is_some());
    }
}
