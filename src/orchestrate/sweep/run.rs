//! Running (a shard of) a plan into a results folder, resumably.
//!
//! Owns: deciding which runs of a shard are still to do (a run file of the same plan hash and
//! entry id is finished; a corrupt one is reported and rerun; one of another plan is refused),
//! the per-run lock that keeps two processes sharing a folder from running the same entry,
//! and handing the rest to `runner::Session` in the plan's execution order.
//! Must not: measure or train itself (`runner` does), or decide shard membership (`plan`).

use super::plan::{Entry, PlanFile};
use crate::engine::train::Observer;
use crate::measure::IdleBaseline;
use crate::orchestrate::runner::{Job, Plan, RunExtras, Session, TaskRun};
use crate::record::curve::Status;
use crate::record::{PlanRef, ResultsDir, RunRecord, SchedulerInfo};
use std::collections::btree_map::Entry as MapEntry;
use std::collections::BTreeMap;
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
    #[error(transparent)]
    Lock(#[from] crate::record::lock::LockError),
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
    let rec: RunRecord = match crate::record::read::parse_run(path, &bytes) {
        Ok(r) => r,
        Err(e) => return Ok(State::Corrupt(e.reason())),
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

/// Write `DIR/plan.json`, or check the one there is this plan. The claim is atomic: the plan
/// is written to a temp file and hard-linked to `plan.json`, which fails if another process got
/// there first (two sweeps started at once on one folder: exactly one claims it, the other
/// reads its plan and is refused if it differs). A `plan.json` that cannot be read is an
/// error, never replaced: the folder holds that plan's runs.
pub fn claim_folder(results: &ResultsDir, plan: &PlanFile) -> anyhow::Result<()> {
    let path = results.root().join("plan.json");
    loop {
        if path.exists() {
            let existing = PlanFile::read(&path).map_err(|e| {
                anyhow::anyhow!(
                    "{e}; this folder's plan.json cannot be read, so its runs cannot be told apart: move it away only if the folder holds no runs of it, or choose another --results folder"
                )
            })?;
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
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let claim = results.root().join(format!(
            ".plan.json.claim-{}-{nanos:x}",
            crate::base::atomic::writer_tag()
        ));
        crate::record::write_atomic(&claim, plan.to_json()?.as_bytes())?;
        let linked = std::fs::hard_link(&claim, &path);
        let _ = std::fs::remove_file(&claim);
        match linked {
            Ok(()) => return Ok(()),
            // Another process claimed the folder between the check and the link: read its plan.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(anyhow::anyhow!("claiming {}: {e}", path.display()));
            }
        }
    }
}

/// What one entry runs: joulebench's own training, or a foreign program.
enum Work {
    Native(Box<Job>),
    /// With the GPUs its `[[exec]]` names (`devices`), metered on a meter of their own.
    Exec(
        Box<crate::orchestrate::exec::ExecPlan>,
        Option<crate::measure::devices::Selection>,
    ),
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
    /// Not run: the verdict they would feed was settled (`until_settled`, `settle.rs`).
    pub settled: Vec<String>,
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
    node: Option<&dyn crate::measure::devices::GpuNode>,
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
    // An entry a foreign program trains: its plan, checked (the program found) up front.
    // The task's chance level, computed once per task (it prepares the whole eval set).
    let chances = std::cell::RefCell::new(std::collections::BTreeMap::<String, f64>::new());
    // Each `[[exec]]`'s own GPUs, resolved once.
    let selections = file
        .exec
        .iter()
        .map(|x| Ok((x.name.clone(), x.selection(node)?)))
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    type ExecWork = (
        Box<crate::orchestrate::exec::ExecPlan>,
        Option<crate::measure::devices::Selection>,
    );
    let exec_of =
        |e: &Entry, sys: &crate::measure::system::SystemInfo| -> anyhow::Result<ExecWork> {
            let name = e.exec.as_deref().unwrap_or_default();
            let spec = file
                .exec_spec(name)
                .ok_or_else(|| anyhow::anyhow!("entry {} names unknown exec '{name}'", e.index))?;
            let task = file.task(&e.task).ok_or_else(|| {
                anyhow::anyhow!("entry {} names unknown task {}", e.index, e.task)
            })?;
            let variant = file
                .variant(&e.variant)
                .ok_or_else(|| anyhow::anyhow!("entry {} names unknown variant", e.index))?;
            let known = chances.borrow().get(&task.name).copied();
            let chance = match known {
                Some(c) => c,
                None => {
                    let loaded = runner_plan
                        .tasks
                        .iter()
                        .find(|t| t.spec.name == task.name)
                        .ok_or_else(|| anyhow::anyhow!("task {} has no loaded data", task.name))?;
                    let c = crate::engine::prepare::eval_chance(&loaded.spec, &loaded.data)?;
                    chances.borrow_mut().insert(task.name.clone(), c);
                    c
                }
            };
            let p = crate::orchestrate::exec::ExecPlan::for_entry(
                spec,
                task,
                chance,
                variant,
                &runner_plan.device_label,
                runner_plan.results.clone(),
                sys.clone(),
                file.settings.idle_s,
                file.settings.cooldown_s,
            )
            .map_err(|m| anyhow::anyhow!("plan entry {} (exec '{name}'): {m}", e.index))?;
            let mut p = Box::new(p);
            let selection = selections.get(name).cloned().flatten();
            if let Some(sel) = &selection {
                // Its own GPUs: named by their NVML indices, given to the program by UUID.
                p.device_label = sel.device_label();
                p.env = crate::orchestrate::exec::child_env(Some(sel.uuids.join(",")));
            }
            Ok((p, selection))
        };
    // Pre-scan: refuse a foreign folder before anything is measured.
    let root = runner_plan.results.root().to_path_buf();
    let settled_now = super::settle::not_needed(file, &root);
    let mut todo = Vec::new();
    for e in entries {
        let (job, run_id) = if e.exec.is_some() {
            let (p, selection) = exec_of(e, session.system())?;
            let id = p.run_id(e.seed);
            (Work::Exec(p, selection), id)
        } else {
            let job = job_of(e)?;
            let id = session.run_id(&job)?;
            (Work::Native(Box::new(job)), id)
        };
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
            _ if settled_now.contains(&e.index) => out.settled.push(run_id),
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
    // The meters of `[[exec]]` entries with their own GPUs, each with its idle baseline, made
    // when the first such entry runs.
    let mut own_gpus: BTreeMap<String, (crate::measure::gpu::GpuMeter, Option<IdleBaseline>)> =
        BTreeMap::new();
    for (e, job, run_id, path) in todo {
        let Some(_lock) = crate::record::lock::try_lock(&runner_plan.results, &run_id)? else {
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
        // The runs finished since (this round's and other shards') may have settled it.
        if super::settle::not_needed(file, &root).contains(&e.index) {
            out.settled.push(run_id);
            continue;
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
                until_settled_max_seeds: file.settings.until_settled.map(|u| u.max_seeds),
            }),
            scheduler: Some(scheduler.clone()),
        };
        let rec = match &job {
            Work::Native(job) => {
                let label = format!("{} {} seed {}", e.task, e.variant, e.seed);
                let mut obs = observer_for(&label);
                session.run_job(job, &extras, obs.as_mut())?
            }
            Work::Exec(p, None) => session.run_other(|meter, idle, _| {
                crate::orchestrate::exec::run_one(p, e.seed, meter, idle, &extras)
            })?,
            Work::Exec(p, Some(sel)) => {
                let (meter, idle) = match own_gpus.entry(sel.label()) {
                    MapEntry::Occupied(o) => o.into_mut(),
                    MapEntry::Vacant(v) => {
                        let node =
                            node.ok_or_else(|| anyhow::anyhow!("no NVML to meter {}", v.key()))?;
                        let mut meter = crate::measure::devices::meter(node, sel)?;
                        let idle = crate::orchestrate::runner::idle_baseline(
                            &mut meter,
                            file.settings.idle_s,
                        )?;
                        v.insert((meter, idle))
                    }
                };
                session.run_on(|| {
                    crate::orchestrate::exec::run_one(p, e.seed, meter, idle.as_ref(), &extras)
                })?
            }
        };
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
            // A task joulebench trains must have data enough for a run (a task only an
            // `[[exec]]` program trains is read for its chance level).
            if file
                .entries
                .iter()
                .any(|e| e.exec.is_none() && e.task == spec.name)
            {
                crate::orchestrate::runner::preflight_data(spec, &data, device)?;
            }
            let variants: Vec<crate::spec::variant::Variant> = file
                .variants
                .iter()
                .filter(|v| {
                    file.entries
                        .iter()
                        .any(|e| e.exec.is_none() && e.task == spec.name && e.variant == v.name)
                })
                .cloned()
                .collect();
            let finetune_source = match crate::engine::variant_run::finetune_source(
                spec,
                &variants,
                None,
                &crate::spec::task::default_models_dir(),
                &data,
                device,
            )? {
                Some(s) => {
                    let data = crate::data::load(s.dataset, data_dir)?;
                    crate::orchestrate::runner::preflight_data(&s, &data, device)?;
                    Some(Box::new(TaskRun {
                        data,
                        spec: s,
                        finetune_source: None,
                    }))
                }
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

    fn plan_of(name: &str) -> PlanFile {
        let suite = super::super::plan::Suite {
            name: name.into(),
            description: "test".into(),
            tasks: super::super::plan::NameList::Names(vec!["digits-mlp".into()]),
            variants: super::super::plan::NameList::Names(vec!["f32".into()]),
            seeds: 1,
            order: Default::default(),
            order_seed: 1,
            idle_s: 0.0,
            cooldown_s: 0.0,
            max_epochs: None,
            exec: vec![],
            forecast_stop: false,
            until_settled: false,
        };
        super::super::plan::expand(&suite, &crate::spec::task::default_models_dir()).unwrap()
    }

    #[test]
    fn two_plans_claiming_one_folder_at_once_give_one_owner() {
        for _ in 0..20 {
            let t = tempfile::tempdir().unwrap();
            let r = ResultsDir::open(t.path()).unwrap();
            let plans: Vec<PlanFile> = (0..4).map(|i| plan_of(&format!("p{i}"))).collect();
            let ok: Vec<bool> = std::thread::scope(|s| {
                let hs: Vec<_> = plans
                    .iter()
                    .map(|p| s.spawn(|| claim_folder(&r, p).is_ok()))
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(ok.iter().filter(|&&o| o).count(), 1, "{ok:?}");
            let owner = PlanFile::read(&t.path().join("plan.json")).unwrap();
            assert!(plans.iter().any(|p| p.hash == owner.hash));
            // The owner's plan claims again; no claim temp file is left.
            assert!(claim_folder(&r, &owner).is_ok());
            let left: Vec<String> = std::fs::read_dir(t.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect();
            assert!(left.is_empty(), "{left:?}");
        }
    }

    #[test]
    fn a_corrupt_plan_file_is_refused_not_replaced() {
        let t = tempfile::tempdir().unwrap();
        let r = ResultsDir::open(t.path()).unwrap();
        let path = t.path().join("plan.json");
        std::fs::write(&path, b"{\"format\": \"joulebench-plan\", trunc").unwrap();
        let e = claim_folder(&r, &plan_of("p")).unwrap_err().to_string();
        assert!(
            e.contains("plan.json") && e.contains("cannot be read"),
            "{e}"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"{\"format\": \"joulebench-plan\", trunc"
        );
    }
}
