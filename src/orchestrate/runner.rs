//! The runner: from a validated plan to written run files.
//!
//! Owns: the order of a measured series (idle baseline, interleaved variants and seeds,
//! cooldown, random start delay; docs/design/measurement.md section 3), turning a training outcome into a
//! run record, and writing it the moment the run ends so a crash loses nothing finished; and
//! `preflight_data`, the check that a task's data can make a run at all (one training batch,
//! one held-out sample), done by `run` and `sweep` before anything is written or measured.
//! Must not: parse argv (cli) or touch a meter outside the idle baseline and `train`.

use crate::data::{DataError, DatasetBundle, Loaded};
use crate::engine::checkpoint;
use crate::engine::model::SeededRng;
use crate::engine::prepare::Prepared;
use crate::engine::train::{Observer, TrainOptions};
use crate::engine::variant_run::{self, Start};
use crate::measure::system::{self, SystemInfo};
use crate::measure::{self, Meter, MeterProbe, Source};
use crate::record::curve::{CurvePoint, Status};
use crate::record::metrics;
use crate::record::setup::{DatasetInfo, EngineConfig, ModelInfo, RunConfig, TaskConfig};
use crate::record::{
    self, EnergySummary, Flops, Phase, QualitySummary, ResultsDir, RunRecord, TimeSummary,
};
use crate::spec::task::TaskSpec;
use crate::spec::variant::{Init, Variant};
use candle_core::Device;
use serde_json::json;
use std::time::Duration;

/// One task of a series: its spec and its loaded (checksum-verified) data.
pub struct TaskRun {
    pub spec: TaskSpec,
    pub data: DatasetBundle,
    /// The task a `finetune` variant starts from (its `[finetune] source`), when one runs.
    pub finetune_source: Option<Box<TaskRun>>,
}

/// One run to do: a task (index into `Plan::tasks`), a variant and a seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub task: usize,
    pub variant: Variant,
    pub seed: u64,
}

/// Everything a series needs, validated before anything trains. `jobs` are run in the order
/// given (`order` interleaves variants across seeds; a sweep may randomise).
pub struct Plan {
    pub tasks: Vec<TaskRun>,
    pub jobs: Vec<Job>,
    pub device: Device,
    pub device_label: String,
    pub results: ResultsDir,
    pub idle_s: f64,
    pub cooldown_s: f64,
    pub stop_at_target: bool,
    /// `--checkpoint`: the weights every `finetune` job starts from (else the source task's
    /// harness checkpoint, pretrained in this series when missing).
    pub checkpoint: Option<std::path::PathBuf>,
    /// Measure inference energy of each trained model (`run --inference`).
    pub inference: Option<crate::engine::inference::InferenceOptions>,
}

/// Idle power of the meter's components, measured before the series.
#[derive(Debug, Clone)]
pub struct Idle {
    pub mean_w: f64,
    pub sd_w: f64,
}

/// The system a series on `device` records: its accelerator is what a usable NVML probe
/// found. Every command that needs run ids before running reads it the same way.
/// The longest idle baseline or cooldown accepted, in seconds (one day): a typo such as
/// `1e300` is refused instead of overflowing the timer (a panic).
pub const MAX_PAUSE_S: f64 = 86_400.0;

/// An idle baseline or cooldown out of range; `name` is the flag or key that gave it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{name} must be a non-negative number of seconds (at most {MAX_PAUSE_S}), got {value:?}")]
pub struct PauseError {
    pub name: String,
    pub value: f64,
}

/// An idle baseline or cooldown (`--idle-s`, a suite's or plan's `idle_s`): a number of
/// seconds in 0..=MAX_PAUSE_S.
pub fn check_pause_s(name: &str, v: f64) -> Result<(), PauseError> {
    if (0.0..=MAX_PAUSE_S).contains(&v) {
        Ok(())
    } else {
        Err(PauseError {
            name: name.to_string(),
            value: v,
        })
    }
}

pub fn system_of(device: &str, probes: &[MeterProbe]) -> SystemInfo {
    let accelerator = probes
        .iter()
        .find(|p| p.meter == "nvml" && p.available)
        .map(|p| p.detail.clone());
    system::collect(device, accelerator)
}

/// The idle baseline of a series (docs/design/measurement.md section 3), or none when `idle_s` is 0.
pub fn idle_baseline(meter: &mut dyn Meter, idle_s: f64) -> anyhow::Result<Option<Idle>> {
    if idle_s <= 0.0 {
        return Ok(None);
    }
    let b = measure::idle::measure_idle(meter, Duration::from_secs_f64(idle_s))?;
    Ok(Some(Idle {
        mean_w: b.mean_w,
        sd_w: b.sd_w,
    }))
}

/// The generator of the random 0-100 ms start delays, seeded from the clock (the delays
/// decorrelate runs from periodic background activity; they need not repeat).
pub fn start_delay_rng() -> SeededRng {
    SeededRng::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        7,
    )
}

pub struct Series {
    pub records: Vec<RunRecord>,
    pub idle: Option<Idle>,
}

/// The jobs of one task: variants interleaved across seeds, rotating the start so no variant
/// always follows the same one (docs/design/measurement.md section 3).
pub fn order(task: usize, variants: &[Variant], seeds: &[u64]) -> Vec<Job> {
    let mut out = Vec::new();
    for (i, &seed) in seeds.iter().enumerate() {
        for k in 0..variants.len() {
            out.push(Job {
                task,
                variant: variants[(i + k) % variants.len()].clone(),
                seed,
            });
        }
    }
    out
}

/// The task's view of `bundle` (`crate::engine::prepare::task_data`), borrowed when the task has no `[data]`
/// view.
fn viewed<'a>(
    spec: &TaskSpec,
    bundle: &'a DatasetBundle,
) -> anyhow::Result<std::borrow::Cow<'a, Loaded>> {
    Ok(crate::engine::prepare::task_view(spec, bundle)?)
}

/// The training and held-out sizes a run of `spec` on `bundle` gets, as `crate::engine::prepare::prepare` makes
/// them (samples; text: windows of the model's context), counted without building tensors.
pub fn prepared_sizes(spec: &TaskSpec, bundle: &DatasetBundle) -> anyhow::Result<(usize, usize)> {
    sizes_of(spec, viewed(spec, bundle)?.as_ref())
}

fn sizes_of(spec: &TaskSpec, data: &Loaded) -> anyhow::Result<(usize, usize)> {
    let cap = |n: usize| crate::engine::prepare::eval_cap(spec, n);
    Ok(match data {
        Loaded::Images { train, test, .. } => (train.len(), cap(test.len())),
        Loaded::Text(text) => {
            let context = spec.model.context().ok_or_else(|| {
                anyhow::anyhow!("task {}: text data needs a token model", spec.name)
            })?;
            let windows = |ids: &[u32]| crate::engine::prepare::window_count(ids.len(), context);
            (windows(&text.train), cap(windows(&text.test)))
        }
    })
}

/// A task's data can make a run: at least one batch of training samples (the task's
/// `batch_size`; a smaller set would train on a shrunken batch or not at all) and at least one
/// held-out sample to score. A usage error naming the data file (or folder) and what is
/// missing; called before anything is written or measured.
pub fn preflight_data(spec: &TaskSpec, bundle: &DatasetBundle) -> anyhow::Result<()> {
    let data = viewed(spec, bundle)?;
    let (n_train, n_eval) = sizes_of(spec, &data)?;
    let batch = spec.train.batch_size;
    let (what, path) = match bundle.files.as_slice() {
        [one] => ("file", std::path::PathBuf::from(&one.path)),
        _ => ("directory", bundle.dir.clone()),
    };
    let view_note = if spec.data.is_identity() {
        ""
    } else {
        " (after the task's [data] view)"
    };
    let plural = |n: usize, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    // What each split is made of, in the words of its kind of data.
    let (train_is, test_is) = match (data.as_ref(), spec.model.context()) {
        (Loaded::Text(t), Some(c)) => {
            let symbol = if t.is_byte_level() {
                "byte"
            } else {
                "character"
            };
            let split = |name: &str, len: usize, n: usize| {
                format!(
                    "the {name} text{view_note} ({}) makes {} of {} {symbol}s",
                    plural(len, symbol),
                    plural(n, "window"),
                    c + 1
                )
            };
            (
                split("training", t.train.len(), n_train),
                split("test", t.test.len(), n_eval),
            )
        }
        _ => (
            format!(
                "the training split{view_note} has {}",
                plural(n_train, "sample")
            ),
            format!("the test split{view_note} has {}", plural(n_eval, "sample")),
        ),
    };
    let too_small = |detail: String| DataError::TooSmall {
        what,
        path: path.clone(),
        task: spec.name.clone(),
        detail,
    };
    if n_train < batch {
        return Err(too_small(format!(
            "{train_is}; the task needs at least one batch of {batch} (its [train] batch_size)"
        ))
        .into());
    }
    if n_eval == 0 {
        return Err(too_small(format!("{test_is}; at least one is needed to score a run")).into());
    }
    Ok(())
}

/// What a run file records beyond the run itself: its place in a sweep plan and the engine
/// that started the process (`host`). Default: no plan, scheduler read from the
/// environment by the session.
#[derive(Debug, Clone, Default)]
pub struct RunExtras {
    pub plan: Option<record::PlanRef>,
    pub scheduler: Option<record::SchedulerInfo>,
}

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
    idle: Option<Idle>,
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

    fn task(&self, job: &Job) -> anyhow::Result<&'a TaskRun> {
        let plan: &'a Plan = self.plan;
        plan.tasks
            .get(job.task)
            .ok_or_else(|| anyhow::anyhow!("job names task {} of {}", job.task, plan.tasks.len()))
    }

    /// The idle baseline of the series (once; skipped when `idle_s` is 0).
    pub fn measure_idle(&mut self) -> anyhow::Result<Option<Idle>> {
        if self.idle.is_none() && self.plan.idle_s > 0.0 {
            self.idle = idle_baseline(self.meter, self.plan.idle_s)?;
        }
        Ok(self.idle.clone())
    }

    pub fn idle(&self) -> Option<&Idle> {
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
        f: impl FnOnce(&mut dyn Meter, Option<&Idle>, &SystemInfo) -> anyhow::Result<RunRecord>,
    ) -> anyhow::Result<RunRecord> {
        self.pace();
        f(self.meter, self.idle.as_ref(), &self.sys)
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
        let start = if job.variant.init == Init::Finetune {
            let (start, pre) = finetune_start(
                plan,
                task,
                job.seed,
                self.meter,
                &self.sys,
                self.idle.as_ref(),
                observer,
                &extras,
            )?;
            self.pretraining.extend(pre);
            start
        } else {
            Start::Scratch
        };
        let p = self.prepared[job.task]
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("task {} not prepared", job.task))?;
        run_one(
            plan,
            task,
            p,
            &job.variant,
            job.seed,
            start,
            None,
            self.meter,
            &self.sys,
            self.idle.as_ref(),
            observer,
            &extras,
        )
    }
}

pub fn run_series(
    plan: &Plan,
    meter: &mut dyn Meter,
    probes: &[MeterProbe],
    mut observer_for: impl FnMut(&str) -> Box<dyn Observer>,
    mut on_record: impl FnMut(&RunRecord),
) -> anyhow::Result<Series> {
    let mut session = Session::new(plan, meter, probes)?;
    session.measure_idle()?;
    let mut records = Vec::new();
    for job in &plan.jobs {
        let task = session.task(job)?;
        let label = format!("{} {} seed {}", task.spec.name, job.variant.name, job.seed);
        let mut obs = observer_for(&label);
        let rec = session.run_job(job, &RunExtras::default(), obs.as_mut())?;
        // A fine-tune's source, pretrained in this series: its own run, written before.
        for pre in session.take_pretraining() {
            on_record(&pre);
            records.push(pre);
        }
        on_record(&rec);
        records.push(rec);
    }
    Ok(Series {
        records,
        idle: session.idle,
    })
}

/// The checkpoint a fine-tune job starts from: `--checkpoint`, or the source task's harness
/// checkpoint for this seed, pretrained now (its own run, run file and measured window; the
/// checkpoint's sidecar keeps that energy) when it does not exist yet.
#[allow(clippy::too_many_arguments)]
fn finetune_start(
    plan: &Plan,
    task: &TaskRun,
    seed: u64,
    meter: &mut dyn Meter,
    sys: &SystemInfo,
    idle: Option<&Idle>,
    observer: &mut dyn Observer,
    extras: &RunExtras,
) -> anyhow::Result<(Start, Option<RunRecord>)> {
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
    let path =
        checkpoint::pretrained_path(plan.results.root(), &source.spec.name, seed, &sys.system_id);
    let mut pre = None;
    if !path.is_file() {
        let sp = crate::engine::prepare::prepare(&source.spec, &source.data, &plan.device)?;
        // The source's own run: no sweep plan entry (the plan names the fine-tune).
        let extras = RunExtras {
            plan: None,
            scheduler: extras.scheduler.clone(),
        };
        pre = Some(run_one(
            plan,
            source,
            &sp,
            &crate::spec::variant::baseline(),
            seed,
            Start::Scratch,
            Some(&path),
            meter,
            sys,
            idle,
            observer,
            &extras,
        )?);
    }
    Ok((
        Start::Checkpoint(checkpoint::load(&path, &plan.device)?),
        pre,
    ))
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    plan: &Plan,
    task: &TaskRun,
    p: &Prepared,
    variant: &Variant,
    seed: u64,
    start: Start,
    save_checkpoint: Option<&std::path::Path>,
    meter: &mut dyn Meter,
    sys: &SystemInfo,
    idle: Option<&Idle>,
    observer: &mut dyn Observer,
    extras: &RunExtras,
) -> anyhow::Result<RunRecord> {
    let spec = &task.spec;
    let started_at = system::utc_now();
    let co_tenancy_start = crate::orchestrate::host::co_tenancy_now();
    let run_id = record::run_id(&spec.name, &variant.name, seed, &sys.system_id);
    let opts = TrainOptions {
        seed,
        stop_at_target: plan.stop_at_target,
    };
    // The real training data a generator is fitted to (synthetic and mixed data only).
    let real_train = match variant.data_source() {
        crate::spec::variant::DataSource::Synthetic
        | crate::spec::variant::DataSource::Mixed { .. } => {
            Some(crate::engine::prepare::task_data(spec, &task.data)?)
        }
        _ => None,
    };
    let vo = variant_run::run(
        spec,
        p,
        variant,
        &opts,
        start,
        real_train.as_ref(),
        meter,
        &plan.device,
        observer,
    )?;
    let out = vo.out;
    let model = vo.model;
    let inference = plan
        .inference
        .as_ref()
        .filter(|_| matches!(out.status, Status::Ok | Status::Dnf))
        .map(|o| {
            crate::engine::inference::measure_or_note(
                model.as_ref(),
                p,
                meter,
                &plan.device,
                idle.map(|i| i.mean_w),
                o,
            )
        });
    let window = out.window.clone().unwrap_or_else(|| measure::WindowReport {
        duration_s: 0.0,
        report: Default::default(),
    });
    let energy = energy_summary(&window, meter, idle);
    let total_j = energy.total_j;
    let boundary = energy.boundary;
    let all_measured = energy.all_measured;
    let target = spec.target.value;
    let dir = spec.metric.direction();
    // ETT, JPP, the ladder, final and best quality: the variant's own (scored) evals only.
    let scored: Vec<CurvePoint> = out.curve.iter().filter(|c| c.scored).cloned().collect();
    let sources = metrics::sources_of(&window.report.components);
    let scores = metrics::score(&metrics::ScoreInputs {
        scored: &scored,
        status: out.status,
        target,
        chance: p.chance,
        direction: dir,
        boundary,
        sources: &sources,
        energy_budget_j: spec.budget.max_energy_j,
    });
    let fwd = model.forward_flops_per_sample();
    let mut variant = crate::record::RunVariant::from(variant.clone());
    // What the engine observed, classified by candle's code paths and this device's
    // capabilities: the record a precision verdict is judged by.
    variant.precision_report = out.precision_report.as_ref().map(|observed| {
        crate::spec::precision::candle_report(
            variant.precision,
            plan.device.is_cuda(),
            &sys.capabilities,
            observed,
        )
    });
    variant.loss_scale = out
        .loss_scale
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok());
    variant.pruning_schedule = vo.pruning_schedule.clone();
    variant.synthetic = vo.synthetic.clone();
    variant.checkpoint = vo.checkpoint.clone().map(|mut c| {
        // Incremental: this run's window. Cumulative: plus the energy that produced the
        // checkpoint, known only for a harness checkpoint.
        let upstream = c["energy"]["cumulative_energy_j"]
            .as_f64()
            .or_else(|| c["energy"]["energy_j"].as_f64());
        c["incremental_energy_j"] = json!(total_j);
        c["cumulative_energy_j"] = json!(upstream.map(|u| u + total_j));
        c
    });
    let variant = &variant;
    let config = RunConfig {
        task: TaskConfig::Spec(Box::new(spec.clone())),
        variant: variant.clone(),
        seed,
        device: plan.device_label.clone(),
        stop_at_target: plan.stop_at_target,
        idle_s: plan.idle_s,
        cooldown_s: plan.cooldown_s,
        meter: meter.name().to_string(),
        engine: EngineConfig::Joulebench {
            init_seed_stream: 0,
            batch_order_seed_stream: 1,
        },
    };
    let rec = RunRecord {
        schema_version: record::SCHEMA_VERSION,
        run_id: run_id.clone(),
        task: spec.name.clone(),
        seed,
        variant: variant.clone(),
        status: out.status,
        error: out.error.clone(),
        device: plan.device_label.clone(),
        energy,
        phases: if out.phases.is_empty() {
            vec![Phase {
                name: "train".into(),
                start_s: 0.0,
                end_s: window.duration_s,
                energy_j: total_j,
            }]
        } else {
            out.phases.clone()
        },
        time: TimeSummary {
            warmup_s: out.warmup_s,
            train_s: out.train_s,
            eval_s: out.eval_s,
            total_s: window.duration_s,
        },
        quality: QualitySummary {
            metric: spec.metric.as_str().into(),
            direction: dir,
            unit: spec.metric.unit().into(),
            target,
            chance: p.chance,
            chance_declared: spec.target.chance,
            final_value: scores.final_value,
            best: scores.best,
            // A binomial noise floor is a property of an accuracy, not of a mean loss.
            final_binomial_sd: scores
                .final_value
                .filter(|_| dir == crate::spec::task::Direction::Higher)
                .map(|q| metrics::binomial_sd(q, p.eval_predictions)),
            eval_predictions: p.eval_predictions,
            ladder: scores.ladder,
            curve: out.curve.clone(),
        },
        ett_j: scores.ett_j,
        ttt_s: scores.ttt_s,
        jpp: scores.jpp,
        jpp_label: scores.jpp_label,
        quality_at_energy_budget: scores.quality_at_energy_budget,
        samples: out.samples,
        steps: out.steps,
        epochs: out.epochs,
        j_per_sample: (out.samples > 0).then(|| total_j / out.samples as f64),
        flops: Flops {
            nominal: out.flops_nominal,
            executed: out.flops_executed,
            forward_per_sample: fwd,
        },
        model: ModelInfo {
            kind: spec.model.kind().to_string(),
            parameters: Some(out.param_count),
            note: None,
        },
        dataset: DatasetInfo {
            name: Some(task.data.kind.as_str().to_string()),
            dir: Some(task.data.dir.display().to_string()),
            files: Some(task.data.files.clone()),
            train_samples: Some(p.n_train),
            eval_samples: Some(p.n_eval),
            classes: Some(p.classes),
            note: None,
        },
        config,
        system: sys.clone(),
        provenance: window.report.provenance.clone(),
        started_at,
        finished_at: system::utc_now(),
        inference,
        plan: extras.plan.clone(),
        scheduler: extras.scheduler.clone(),
        isolation: Some(crate::orchestrate::host::assess(
            &window.report,
            Some(co_tenancy_start),
            Some(crate::orchestrate::host::co_tenancy_now()),
        )),
        engine: None,
        exec: None,
    };
    plan.results
        .write_run(&rec, &out.events.0, &window.report.timeline)?;
    if let Some(path) = save_checkpoint {
        let sidecar = checkpoint::Sidecar {
            format: checkpoint::SIDECAR_FORMAT.into(),
            format_version: checkpoint::SIDECAR_VERSION,
            run_id: rec.run_id.clone(),
            task: rec.task.clone(),
            variant: rec.variant.name.clone(),
            seed,
            status: rec.status.as_str().into(),
            final_quality: rec.quality.final_value,
            task_spec: serde_json::to_value(spec)?,
            dataset: rec.dataset.clone(),
            code: sys.software.clone(),
            system_id: sys.system_id.clone(),
            device: rec.device.clone(),
            energy: checkpoint::CheckpointEnergy {
                energy_j: total_j,
                cumulative_energy_j: rec
                    .variant
                    .checkpoint
                    .as_ref()
                    .map_or(Some(total_j), |c| c["cumulative_energy_j"].as_f64()),
                boundary: boundary.as_str().into(),
                sources: sources.clone(),
                all_measured,
                meter: meter.name().to_string(),
                flags: rec.energy.flags.clone(),
            },
            weights_sha256: String::new(),
            parameters: model.params().count(),
            created_at: system::utc_now(),
        };
        checkpoint::save(path, model.params(), sidecar)?;
    }
    Ok(rec)
}

/// The energy part of a run file from a closed window: the boundary of the components that
/// reported, whether every one was measured, the flags (the meter's, `no_idle_baseline`,
/// `estimated`) and net energy against the idle baseline.
pub fn energy_summary(
    window: &measure::WindowReport,
    meter: &dyn Meter,
    idle: Option<&Idle>,
) -> EnergySummary {
    let total_j = window.total_j();
    let infos = meter.components();
    let boundary = window
        .report
        .components
        .iter()
        .filter_map(|c| infos.iter().find(|i| i.component == c.component))
        .map(|i| i.boundary)
        .reduce(|a, b| a.union(b))
        .unwrap_or(meter.boundary());
    let all_measured = !window.report.components.is_empty()
        && window
            .report
            .components
            .iter()
            .all(|c| c.source.is_measured());
    let mut flags = window.report.flags.clone();
    if idle.is_none() {
        flags.push("no_idle_baseline".into());
    }
    if !all_measured {
        flags.push("estimated".into());
    }
    flags.dedup();
    EnergySummary {
        total_j,
        net_j: idle.map(|i| total_j - i.mean_w * window.duration_s),
        boundary,
        components: window.report.components.clone(),
        idle_w: idle.map(|i| i.mean_w),
        idle_sd_w: idle.map(|i| i.sd_w),
        flags,
        meter: meter.name().to_string(),
        all_measured,
        average_power_w: if window.duration_s > 0.0 {
            total_j / window.duration_s
        } else {
            0.0
        },
        window_s: window.duration_s,
    }
}

/// True when an energy figure contains any estimated component.
pub fn is_estimated(rec: &RunRecord) -> bool {
    rec.energy
        .components
        .iter()
        .any(|c| !c.source.is_measured() && c.source != Source::Unavailable)
}

/// One human line per finished run.
pub fn summary_line(r: &RunRecord) -> String {
    let src: Vec<&str> = r
        .energy
        .components
        .iter()
        .map(|c| c.source.as_str())
        .collect();
    let energy = format!(
        "{:.1} J ({}, {})",
        r.energy.total_j,
        r.energy.boundary.as_str(),
        src.join("+")
    );
    // An accuracy in percent, a loss in its unit (nats per character).
    let level = |v: f64| match r.quality.direction {
        crate::spec::task::Direction::Higher => format!("{:.2} %", 100.0 * v),
        crate::spec::task::Direction::Lower => format!("{v:.4} (lower is better)"),
    };
    let q = r.quality.final_value.map_or("-".into(), level);
    let tail = match (r.ett_j, r.ttt_s, &r.jpp_label) {
        (Some(e), Some(t), Some(l)) => format!("ETT {e:.1} J, TTT {t:.1} s, JPP {l}"),
        _ if r.variant.data == "random" => format!(
            "throughput track: {:.4} J/sample, {:.3} J/step (no target, never ranked)",
            r.energy.total_j / r.samples.max(1) as f64,
            r.energy.total_j / r.steps.max(1) as f64
        ),
        _ => format!(
            "did not reach {} (best {})",
            level(r.quality.target),
            r.quality.best.map_or("-".into(), level)
        ),
    };
    format!(
        "{} {} seed {}: {} | final {q} | energy {energy} in {:.1} s | {tail}",
        r.task,
        r.variant.name,
        r.seed,
        r.status.as_str(),
        r.time.total_s
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::variant::baseline;

    fn shipped(name: &str) -> TaskSpec {
        crate::spec::task::find(&crate::spec::task::default_models_dir(), name).unwrap()
    }

    fn images(n_train: usize, n_test: usize) -> DatasetBundle {
        let set = |n: usize| crate::data::ImageSet {
            images: vec![0.5; n * 64],
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
            shape: [1, 8, 8],
        };
        DatasetBundle {
            kind: crate::data::DatasetKind::Digits,
            dir: "d".into(),
            data: Loaded::Images {
                train: set(n_train),
                test: set(n_test),
                classes: 10,
            },
            files: vec![crate::data::FileRecord {
                path: "d/digits.csv".into(),
                sha256: String::new(),
                bytes: 0,
                verified: false,
            }],
        }
    }

    fn text(chars: usize) -> DatasetBundle {
        let body: String = (0..chars)
            .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
            .collect();
        let mut b = images(0, 0);
        b.kind = crate::data::DatasetKind::Text;
        b.files[0].path = "t/austen.txt".into();
        b.data = Loaded::Text(crate::data::TextSet::from_text(&body));
        b
    }

    #[test]
    fn prepared_sizes_are_what_prepare_makes() {
        for (task, bundle) in [
            ("digits-mlp", images(100, 7)),
            ("digits-lo-mlp", images(100, 7)),
            ("text-charlm", text(20_000)),
            ("text-charlm-p1", text(20_000)),
            ("text-charlm", text(700)),
        ] {
            let spec = shipped(task);
            let p = crate::engine::prepare::prepare(&spec, &bundle, &Device::Cpu).unwrap();
            assert_eq!(
                prepared_sizes(&spec, &bundle).unwrap(),
                (p.n_train, p.n_eval),
                "{task}"
            );
        }
    }

    #[test]
    fn data_too_small_for_a_run_is_refused_naming_the_file() {
        let digits = shipped("digits-mlp");
        preflight_data(&digits, &images(32, 1)).unwrap();
        for (bundle, needles) in [
            (images(0, 5), &["has 0 samples", "one batch of 32"][..]),
            (images(1, 5), &["has 1 sample;", "one batch of 32"]),
            (images(31, 5), &["has 31 samples"]),
            (images(40, 0), &["test split has 0 samples"]),
        ] {
            let e = preflight_data(&digits, &bundle).unwrap_err();
            let msg = e.to_string();
            assert!(e.downcast_ref::<DataError>().is_some(), "{msg}");
            assert!(
                msg.starts_with("data file d/digits.csv: too small for task digits-mlp: "),
                "{msg}"
            );
            for n in needles {
                assert!(msg.contains(n), "{n} not in {msg}");
            }
        }
        // A class view counts what the task keeps: digits 0-4 of 60 samples are 30.
        let e = preflight_data(&shipped("digits-lo-mlp"), &images(60, 10)).unwrap_err();
        assert!(
            e.to_string()
                .contains("training split (after the task's [data] view) has 30 samples"),
            "{e}"
        );
        let charlm = shipped("text-charlm");
        let e = preflight_data(&charlm, &text(3)).unwrap_err().to_string();
        assert!(
            e.contains("t/austen.txt")
                && e.contains("the training text (2 characters) makes 0 windows of 65 characters"),
            "{e}"
        );
        // With a smaller batch the training text suffices, but its 10 % test text (60
        // characters) is shorter than one window.
        let mut small_batch = charlm.clone();
        small_batch.train.batch_size = 4;
        preflight_data(&small_batch, &text(700)).unwrap();
        let e = preflight_data(&small_batch, &text(600))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "the test text (60 characters) makes 0 windows of 65 characters; at least one"
            ),
            "{e}"
        );
    }

    #[test]
    fn order_interleaves_and_rotates() {
        let mut b = baseline();
        b.name = "b".into();
        let a = baseline();
        let o = order(0, &[a.clone(), b.clone()], &[1, 2]);
        let names: Vec<_> = o
            .iter()
            .map(|j| format!("{}{}", j.variant.name, j.seed))
            .collect();
        assert_eq!(names, ["f321", "b1", "b2", "f322"]);
    }
}
