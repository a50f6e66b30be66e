//! A measured series in progress: the system read once, the idle baseline once, then runs
//! one at a time with a cooldown and a random start delay between them; a fine-tune's
//! source is pretrained (its own run) the first time a fine-tune needs it.

use super::one_run::{run_one, OneRun, RunContext, RunExtras};
use super::{idle_baseline, start_delay_rng, system_of, Job, Plan, TaskRun};
use crate::engine::checkpoint;
use crate::engine::model::SeededRng;
use crate::engine::prepare::Prepared;
use crate::engine::train::Observer;
use crate::engine::variant_run::Start;
use crate::measure::system::SystemInfo;
use crate::measure::{IdleBaseline, Meter, MeterProbe};
use crate::record::{self, RunRecord};
use crate::spec::variant::Init;
use std::time::Duration;

/// A measured series in progress (docs/design/measurement.md section 3): the system read once, the idle
/// baseline once, then runs one at a time with a cooldown between them and a random start
/// delay. `run_series` drives it over a plan's jobs; `sweep` drives it over the runs of a
/// shard that are not finished yet.
pub struct Session<'a> {
    plan: &'a Plan,
    meter: &'a mut dyn Meter,
    sys: SystemInfo,
    // Device tensors of each task, made when its first job comes (a sweep mixes tasks).
    prepared: Vec<Option<Prepared>>,
    idle: Option<IdleBaseline>,
    delay_rng: SeededRng,
    runs: usize,
    // Runs made to pretrain a fine-tune's source, not yet handed to the caller.
    pretraining: Vec<RunRecord>,
}

impl<'a> Session<'a> {
    /// Read the system and write `system.json`; nothing is measured yet.
    pub fn new(
        plan: &'a Plan,
        meter: &'a mut dyn Meter,
        probes: &[MeterProbe],
    ) -> anyhow::Result<Self> {
        let sys = system_of(&plan.device_label, probes);
        plan.results.write_system(&sys)?;
        Ok(Self {
            prepared: plan.tasks.iter().map(|_| None).collect(),
            plan,
            meter,
            sys,
            idle: None,
            delay_rng: start_delay_rng(),
            runs: 0,
            pretraining: Vec::new(),
        })
    }

    pub fn system(&self) -> &SystemInfo {
        &self.sys
    }

    /// The run id a job gets on this system.
    pub fn run_id(&self, job: &Job) -> anyhow::Result<String> {
        let task = self.task(job)?;
        Ok(record::run_id(
            &task.spec.name,
            &job.variant.name,
            job.seed,
            &self.sys.system_id,
        ))
    }

    /// The task a job names.
    pub(super) fn task(&self, job: &Job) -> anyhow::Result<&'a TaskRun> {
        let plan: &'a Plan = self.plan;
        plan.tasks
            .get(job.task)
            .ok_or_else(|| anyhow::anyhow!("job names task {} of {}", job.task, plan.tasks.len()))
    }

    /// The idle baseline of the series (once; skipped when `idle_s` is 0).
    pub fn measure_idle(&mut self) -> anyhow::Result<Option<IdleBaseline>> {
        if self.idle.is_none() && self.plan.idle_s > 0.0 {
            self.idle = idle_baseline(self.meter, self.plan.idle_s)?;
        }
        Ok(self.idle.clone())
    }

    pub fn idle(&self) -> Option<&IdleBaseline> {
        self.idle.as_ref()
    }

    /// The runs that pretrained a fine-tune's source since the last call (their run files are
    /// already written), in the order they ran.
    pub fn take_pretraining(&mut self) -> Vec<RunRecord> {
        std::mem::take(&mut self.pretraining)
    }

    /// Cooldown after the previous run, then a random 0-100 ms start delay (decorrelates runs
    /// from periodic background activity).
    fn pace(&mut self) {
        if self.runs > 0 && self.plan.cooldown_s > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(self.plan.cooldown_s));
        }
        std::thread::sleep(Duration::from_millis(self.delay_rng.below(101) as u64));
        self.runs += 1;
    }

    /// A run that is not one of joulebench's own jobs (a program run by `exec`), paced like
    /// one: `f` gets the series' meter, idle baseline and system.
    pub fn run_other(
        &mut self,
        f: impl FnOnce(&mut dyn Meter, Option<&IdleBaseline>, &SystemInfo) -> anyhow::Result<RunRecord>,
    ) -> anyhow::Result<RunRecord> {
        self.pace();
        f(self.meter, self.idle.as_ref(), &self.sys)
    }

    /// Pace like any run (cooldown, start delay), then `f`, which measures on a meter of its
    /// own (an `[[exec]]` entry's GPUs).
    pub fn run_on(
        &mut self,
        f: impl FnOnce() -> anyhow::Result<RunRecord>,
    ) -> anyhow::Result<RunRecord> {
        self.pace();
        f()
    }

    /// Cooldown after the previous run, random start delay, train, write the run file.
    pub fn run_job(
        &mut self,
        job: &Job,
        extras: &RunExtras,
        observer: &mut dyn Observer,
    ) -> anyhow::Result<RunRecord> {
        let plan: &'a Plan = self.plan;
        let task = self.task(job)?;
        if self.prepared[job.task].is_none() {
            self.prepared[job.task] = Some(crate::engine::prepare::prepare(
                &task.spec,
                &task.data,
                &plan.device,
            )?);
        }
        self.pace();
        let mut extras = extras.clone();
        if extras.scheduler.is_none() {
            extras.scheduler = Some(crate::orchestrate::host::scheduler_info(
                &crate::orchestrate::host::ProcessEnv,
                None,
            ));
        }
        let mut ctx = RunContext {
            plan,
            meter: &mut *self.meter,
            sys: &self.sys,
            idle: self.idle.as_ref(),
            observer,
            extras: &extras,
        };
        let start = if job.variant.init == Init::Finetune {
            let (start, pre) = finetune_start(&mut ctx, task, job.seed)?;
            self.pretraining.extend(pre);
            start
        } else {
            Start::Scratch
        };
        let prepared = self.prepared[job.task]
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("task {} not prepared", job.task))?;
        let run = OneRun {
            task,
            prepared,
            variant: &job.variant,
            seed: job.seed,
            save_checkpoint: None,
        };
        run_one(&mut ctx, &run, start)
    }

    /// The series' idle baseline, handed over when the series ends.
    pub(super) fn into_idle(self) -> Option<IdleBaseline> {
        self.idle
    }
}

/// The checkpoint a fine-tune job starts from: `--checkpoint`, or the source task's harness
/// checkpoint for this seed, pretrained now (its own run, run file and measured window; the
/// checkpoint's sidecar keeps that energy) when it does not exist yet.
fn finetune_start(
    ctx: &mut RunContext<'_>,
    task: &TaskRun,
    seed: u64,
) -> anyhow::Result<(Start, Option<RunRecord>)> {
    let plan = ctx.plan;
    if let Some(path) = &plan.checkpoint {
        return Ok((
            Start::Checkpoint(checkpoint::load(path, &plan.device)?),
            None,
        ));
    }
    let source = task.finetune_source.as_deref().ok_or_else(|| {
        anyhow::anyhow!(
            "task {} has no [finetune] source and no --checkpoint was given",
            task.spec.name
        )
    })?;
    let path = checkpoint::pretrained_path(
        plan.results.root(),
        &source.spec.name,
        seed,
        &ctx.sys.system_id,
    );
    // Another process (a shard, a second sweep) may be pretraining the same source now: wait
    // for it and use its checkpoint, rather than pretrain it twice and keep one record.
    let _pretraining = crate::record::lock::lock_waiting(
        &plan.results,
        &record::run_id(&source.spec.name, "f32", seed, &ctx.sys.system_id),
    )?;
    let mut pre = None;
    if !path.is_file() {
        let prepared = crate::engine::prepare::prepare(&source.spec, &source.data, &plan.device)?;
        // The source's own run: no sweep plan entry (the plan names the fine-tune).
        let extras = RunExtras {
            plan: None,
            scheduler: ctx.extras.scheduler.clone(),
        };
        let mut source_ctx = RunContext {
            plan,
            meter: &mut *ctx.meter,
            sys: ctx.sys,
            idle: ctx.idle,
            observer: &mut *ctx.observer,
            extras: &extras,
        };
        let baseline = crate::spec::variant::baseline();
        let run = OneRun {
            task: source,
            prepared: &prepared,
            variant: &baseline,
            seed,
            save_checkpoint: Some(&path),
        };
        pre = Some(run_one(&mut source_ctx, &run, Start::Scratch)?);
    }
    Ok((
        Start::Checkpoint(checkpoint::load(&path, &plan.device)?),
        pre,
    ))
}
