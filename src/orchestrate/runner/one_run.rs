//! One run, start to file: train the variant in its measured window (`train`), score it and
//! build the typed run record (`to_record`, which reads no clock and no meter), then write
//! the run file the moment the run ends, and the checkpoint when the run pretrains a
//! fine-tune's source (`persist`).

use super::{Plan, TaskRun};
use crate::engine::checkpoint;
use crate::engine::prepare::Prepared;
use crate::engine::train::{Observer, TrainOptions};
use crate::engine::variant_run::{self, Start, VariantOutcome};
use crate::measure::system::{self, SystemInfo};
use crate::measure::{IdleBaseline, Meter, WindowReport};
use crate::orchestrate::host;
use crate::record::curve::{CurvePoint, Status};
use crate::record::inference::InferenceReport;
use crate::record::run_variant::{CheckpointEnergy, StartingWeights};
use crate::record::setup::{DatasetInfo, EngineConfig, ModelInfo, RunConfig, TaskConfig};
use crate::record::{
    self, metrics, Flops, Phase, QualitySummary, RunRecord, RunVariant, TimeSummary,
};
use crate::spec::variant::{DataSource, Variant};
use std::path::Path;

/// What a run file records beyond the run itself: its place in a sweep plan and the engine
/// that started the process (`host`). Default: no plan, scheduler read from the
/// environment by the session.
#[derive(Debug, Clone, Default)]
pub struct RunExtras {
    pub plan: Option<record::PlanRef>,
    pub scheduler: Option<record::SchedulerInfo>,
}

/// What every run of a series shares: the plan, the series' meter, the system it runs on,
/// its idle baseline, who watches the training, and the extras for the run file.
pub(super) struct RunContext<'s> {
    pub plan: &'s Plan,
    pub meter: &'s mut dyn Meter,
    pub sys: &'s SystemInfo,
    pub idle: Option<&'s IdleBaseline>,
    pub observer: &'s mut dyn Observer,
    pub extras: &'s RunExtras,
}

/// One run to make: which task (with its device tensors), variant and seed, and where to
/// keep the trained weights when the run pretrains a fine-tune's source.
pub(super) struct OneRun<'j> {
    pub task: &'j TaskRun,
    pub prepared: &'j Prepared,
    pub variant: &'j Variant,
    pub seed: u64,
    pub save_checkpoint: Option<&'j Path>,
}

/// The clock and co-tenancy readings around a run, taken by `run_one` so `to_record` reads
/// neither.
struct Moments {
    started_at: String,
    finished_at: String,
    co_tenancy_start: record::CoTenancy,
    co_tenancy_end: record::CoTenancy,
}

/// What training left: the engine's outcome, the inference report (when asked for) and the
/// closed window (an empty one when training failed before it opened).
struct Trained {
    vo: VariantOutcome,
    inference: Option<InferenceReport>,
    window: WindowReport,
}

/// Train, score, record, write: the run file is on disk when this returns.
pub(super) fn run_one(
    ctx: &mut RunContext<'_>,
    run: &OneRun<'_>,
    start: Start,
) -> anyhow::Result<RunRecord> {
    let started_at = system::utc_now();
    let co_tenancy_start = host::co_tenancy_now();
    let trained = train(ctx, run, start)?;
    let moments = Moments {
        started_at,
        finished_at: system::utc_now(),
        co_tenancy_start,
        co_tenancy_end: host::co_tenancy_now(),
    };
    let rec = to_record(ctx, run, &trained, moments);
    persist(ctx, run, &rec, &trained)?;
    Ok(rec)
}

/// The variant's training in its measured window, then inference when asked for.
fn train(ctx: &mut RunContext<'_>, run: &OneRun<'_>, start: Start) -> anyhow::Result<Trained> {
    let spec = &run.task.spec;
    let opts = TrainOptions {
        seed: run.seed,
        stop_at_target: ctx.plan.stop_at_target,
        forecast_stop: ctx.plan.forecast_stop,
    };
    // The real training data a generator is fitted to (synthetic and mixed data only).
    let real_train = match run.variant.data_source() {
        DataSource::Synthetic | DataSource::Mixed { .. } => {
            Some(crate::engine::prepare::task_data(spec, &run.task.data)?)
        }
        _ => None,
    };
    let vo = variant_run::run(
        spec,
        run.prepared,
        run.variant,
        &opts,
        start,
        real_train.as_ref(),
        ctx.meter,
        &ctx.plan.device,
        ctx.observer,
    )?;
    let inference = ctx
        .plan
        .inference
        .as_ref()
        .filter(|_| vo.out.status == Status::Ok || vo.out.status.is_dnf())
        .map(|o| {
            crate::engine::inference::measure_or_note(
                vo.model.as_ref(),
                run.prepared,
                ctx.meter,
                &ctx.plan.device,
                ctx.idle.map(|i| i.mean_w),
                o,
            )
        });
    let window = vo.out.window.clone().unwrap_or_else(|| WindowReport {
        duration_s: 0.0,
        report: Default::default(),
    });
    Ok(Trained {
        vo,
        inference,
        window,
    })
}

/// The run record: energy from the window, ETT/TTT/JPP from the variant's scored evals
/// (`record::metrics::score`, the step `exec` uses too), and the typed setup.
fn to_record(
    ctx: &RunContext<'_>,
    run: &OneRun<'_>,
    trained: &Trained,
    moments: Moments,
) -> RunRecord {
    let (spec, p, plan, sys) = (&run.task.spec, run.prepared, ctx.plan, ctx.sys);
    let (out, window) = (&trained.vo.out, &trained.window);
    let energy = record::energy::energy_summary(window, &*ctx.meter, ctx.idle);
    let total_j = energy.total_j;
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
        boundary: energy.boundary,
        sources: &sources,
        energy_budget_j: spec.budget.max_energy_j,
    });
    let variant = run_variant(ctx, run, trained, total_j);
    let config = RunConfig {
        task: TaskConfig::Spec(Box::new(spec.clone())),
        variant: variant.clone(),
        seed: run.seed,
        device: plan.device_label.clone(),
        stop_at_target: plan.stop_at_target,
        forecast_stop: plan.forecast_stop && plan.stop_at_target,
        idle_s: plan.idle_s,
        cooldown_s: plan.cooldown_s,
        meter: ctx.meter.name().to_string(),
        engine: EngineConfig::Joulebench {
            init_seed_stream: 0,
            batch_order_seed_stream: 1,
        },
    };
    RunRecord {
        schema_version: record::SCHEMA_VERSION,
        run_id: record::run_id(&spec.name, &run.variant.name, run.seed, &sys.system_id),
        task: spec.name.clone(),
        seed: run.seed,
        variant,
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
            forward_per_sample: trained.vo.model.forward_flops_per_sample(),
        },
        model: ModelInfo {
            kind: spec.model.kind().to_string(),
            parameters: Some(out.param_count),
            note: None,
        },
        dataset: DatasetInfo {
            name: Some(run.task.data.kind.as_str().to_string()),
            dir: Some(run.task.data.dir.display().to_string()),
            files: Some(run.task.data.files.clone()),
            train_samples: Some(p.n_train),
            eval_samples: Some(p.n_eval),
            classes: Some(p.classes),
            note: None,
        },
        config,
        system: sys.clone(),
        provenance: window.report.provenance.clone(),
        started_at: moments.started_at,
        finished_at: moments.finished_at,
        inference: trained.inference.clone(),
        plan: ctx.extras.plan.clone(),
        scheduler: ctx.extras.scheduler.clone(),
        isolation: Some(host::assess(
            &window.report,
            Some(moments.co_tenancy_start),
            Some(moments.co_tenancy_end),
        )),
        engine: None,
        exec: None,
        forecast: out.forecast.clone(),
    }
}

/// The run file's `variant`: the spec's variant and what the run did with it.
fn run_variant(
    ctx: &RunContext<'_>,
    run: &OneRun<'_>,
    trained: &Trained,
    total_j: f64,
) -> RunVariant {
    let (out, vo) = (&trained.vo.out, &trained.vo);
    let mut variant = RunVariant::from(run.variant.clone());
    // What the engine observed, classified by candle's code paths and this device's
    // capabilities: the record a precision verdict is judged by.
    variant.precision_report = out.precision_report.as_ref().map(|observed| {
        crate::spec::precision::candle_report(
            variant.precision,
            ctx.plan.device.is_cuda(),
            &ctx.sys.capabilities,
            observed,
        )
    });
    variant.loss_scale = out.loss_scale.clone();
    variant.pruning_schedule = vo.pruning_schedule.clone();
    variant.synthetic = vo.synthetic.clone();
    // Incremental: this run's window. Cumulative: plus the energy that produced the
    // checkpoint, known only for a harness checkpoint.
    variant.checkpoint = vo
        .checkpoint
        .clone()
        .map(|source| StartingWeights::after(source, total_j));
    variant
}

/// Write the run file (with its event log and power timeline), then the checkpoint and its
/// sidecar when the run pretrains a fine-tune's source.
fn persist(
    ctx: &RunContext<'_>,
    run: &OneRun<'_>,
    rec: &RunRecord,
    trained: &Trained,
) -> anyhow::Result<()> {
    let out = &trained.vo.out;
    ctx.plan
        .results
        .write_run(rec, &out.events.0, &trained.window.report.timeline)?;
    let Some(path) = run.save_checkpoint else {
        return Ok(());
    };
    let sys = ctx.sys;
    let total_j = rec.energy.total_j;
    let sidecar = checkpoint::Sidecar {
        format: checkpoint::SIDECAR_FORMAT.into(),
        format_version: checkpoint::SIDECAR_VERSION,
        run_id: rec.run_id.clone(),
        task: rec.task.clone(),
        variant: rec.variant.name.clone(),
        seed: run.seed,
        status: rec.status.as_str().into(),
        final_quality: rec.quality.final_value,
        task_spec: serde_json::to_value(&run.task.spec)?,
        dataset: rec.dataset.clone(),
        code: sys.software.clone(),
        system_id: sys.system_id.clone(),
        device: rec.device.clone(),
        energy: CheckpointEnergy {
            energy_j: total_j,
            cumulative_energy_j: rec
                .variant
                .checkpoint
                .as_ref()
                .map_or(Some(total_j), |c| c.cumulative_energy_j),
            boundary: rec.energy.boundary.as_str().into(),
            sources: metrics::sources_of(&trained.window.report.components),
            all_measured: rec.energy.all_measured,
            meter: ctx.meter.name().to_string(),
            flags: rec.energy.flags.clone(),
        },
        weights_sha256: String::new(),
        parameters: trained.vo.model.params().count(),
        created_at: system::utc_now(),
    };
    checkpoint::save(path, trained.vo.model.params(), sidecar)?;
    Ok(())
}
