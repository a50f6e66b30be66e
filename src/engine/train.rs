//! The one training loop for every reference model, and the held-out evaluation.
//!
//! Owns: seeded batch order, when each optimizer step runs (`step.rs` computes it; a `StepHook`
//! after every step for pruning masks), evaluation on a fixed
//! step cadence inside the measured window (on the clock and on the meter, as MLPerf requires),
//! the stop decision (target, budget, divergence), named phases of one window, executed and
//! nominal FLOPs, and the event log of what happened when.
//! Must not: write files or choose a meter; it is handed an opened meter and returns data.
//! The data it trains on comes from `prepare.rs`.
//!
//! A run is one `Session`: one `MeasuredWindow` from `run_start` to `run_stop`. A pipeline
//! (dense training, pruning, recovery; generator fit, sampling, training) is several `Stage`s
//! and phases of that one session, so its phases add up to the run's energy.
//!
//! The loss never makes a host round-trip on an ordinary step: it is accumulated on the
//! device and read once per eval (a per-step `to_scalar` stalls a GPU and skews energy;
//! candle's mnist-training example does exactly that). The one exception is f16 with dynamic
//! loss scaling, which must know before each step whether a gradient overflowed (PyTorch's
//! GradScaler reads the same flag on the host).

use crate::engine::model::{InputShape, RefModel, SeededRng};
use crate::engine::precision::{Amp, ScaleDecision};
use crate::engine::prepare::Prepared;
use crate::engine::step::{
    augment, clip_grad_norm, grads_finite, grads_of, optimizer, random_batch,
};
use crate::measure::{MeasuredWindow, Meter, MeterError, WindowReport};
use crate::record::curve::{default_phase, error_text, CurvePoint, EventLog, Status};
use crate::record::run_variant::ScaleSummary;
use crate::record::Phase;
use crate::spec::task::{Direction, Metric, OptimizerSpec, TaskSpec};
use crate::stats::forecast::{self, CurveSoFar, Forecast};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::Optimizer;

use serde_json::json;
use std::collections::BTreeMap;
use std::time::Instant;

/// What the loop observes, for progress bars; every hook has a no-op default.
pub trait Observer {
    fn on_start(&mut self, _steps_per_epoch: usize, _max_epochs: usize) {}
    fn on_step(&mut self, _step: usize, _epoch: usize) {}
    fn on_eval(&mut self, _point: &CurvePoint, _watts: f64) {}
    fn on_finish(&mut self) {}
}

pub struct NoObserver;
impl Observer for NoObserver {}

/// Options of one training run beyond the task spec.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub seed: u64,
    /// Stop at the first eval reaching T (the benchmark); false to trace the whole budget
    /// (reference curves for choosing T).
    pub stop_at_target: bool,
    /// Stop a run whose forecast gives it under 1 % to reach T within its budget
    /// (`stats::forecast`); the run ends `stopped-forecast`. Only where the run stops at T.
    pub forecast_stop: bool,
}

pub struct TrainOutcome {
    pub status: Status,
    pub error: Option<String>,
    pub curve: Vec<CurvePoint>,
    pub steps: usize,
    pub samples: usize,
    pub epochs: f64,
    pub warmup_s: f64,
    pub train_s: f64,
    pub eval_s: f64,
    pub window: Option<WindowReport>,
    pub events: EventLog,
    /// Parameters of the final model (smaller after structured pruning).
    pub param_count: usize,
    /// Measured spans of the window, in order; they add up to the window's energy.
    pub phases: Vec<Phase>,
    /// FLOPs the kernels executed, and the nominal FLOPs counting only unpruned weights.
    pub flops_executed: f64,
    pub flops_nominal: f64,
    /// Dtype per op class as observed (non-f32 precisions).
    pub precision_report: Option<BTreeMap<String, String>>,
    pub loss_scale: Option<ScaleSummary>,
    /// Optimizer steps skipped by the loss scaler (inf/NaN gradients).
    pub skipped_steps: usize,
    /// The forecast that stopped the run (`Status::StoppedForecast`).
    pub forecast: Option<Forecast>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("training setup: {0}")]
    Setup(#[from] candle_core::Error),
    #[error("meter: {0}")]
    Meter(#[from] MeterError),
}

/// Predictions per evaluation chunk of a token model (see `evaluate`).
pub const EVAL_TOKENS: usize = 4096;

/// The task's metric on the eval set, batched, always in f32, model in evaluation mode; one
/// host read per eval. Accuracy: the share of correct top-1 predictions. Held-out loss: the
/// mean cross-entropy in nats over every prediction.
pub fn evaluate(
    model: &dyn RefModel,
    p: &Prepared,
    batch: usize,
    metric: Metric,
) -> candle_core::Result<f64> {
    // Without `no_grad` candle keeps every intermediate of a forward pass alive while its
    // output is (the graph of a model with `Var` parameters): a chunk's memory would be its
    // whole forward. Inside it each intermediate is freed once the next layer has read it.
    candle_core::no_grad(|| evaluate_chunks(model, p, batch, metric))
}

fn evaluate_chunks(
    model: &dyn RefModel,
    p: &Prepared,
    batch: usize,
    metric: Metric,
) -> candle_core::Result<f64> {
    let mut total = Tensor::zeros((), DType::F32, p.eval_x.device())?;
    // Token models are evaluated EVAL_TOKENS predictions at a time, images a training batch at
    // a time (a chunk of 256 made ResNet-20's evals the run's memory peak when the forward's
    // graph was kept: 656 MiB against 493 MiB for its training steps). Every layer computes
    // each sample on its own, so the chunk size does not change a prediction.
    let bs = match p.input {
        InputShape::Tokens { context, .. } => (EVAL_TOKENS / context.max(1)).max(1),
        InputShape::Image { .. } => batch.max(1),
    };
    let mut start = 0;
    while start < p.n_eval {
        let len = bs.min(p.n_eval - start);
        let x = p.eval_x.narrow(0, start, len)?;
        let y = p.eval_y.narrow(0, start, len)?;
        let logits = model.forward_t(&x, false)?;
        let part = match metric {
            Metric::HeldOutLoss => {
                let classes = logits.dim(D::Minus1)?;
                let logits = logits.reshape(((), classes))?;
                let y = y.flatten_all()?;
                let n = y.dim(0)? as f64;
                // Sum of the per-prediction losses: the mean times the count.
                (crate::engine::kernels::cross_entropy(&logits, &y)? * n)?
            }
            _ => logits
                .argmax(D::Minus1)?
                .eq(&y)?
                .to_dtype(DType::F32)?
                .sum_all()?,
        };
        total = (total + part)?;
        start += len;
    }
    let c = total.to_scalar::<f32>()? as f64;
    Ok(c / p.eval_predictions.max(1) as f64)
}

/// The training set a classifier learns from in one run: the real one, a synthetic one made
/// inside the window, a blend, or random tensors.
pub struct TrainSet {
    pub x: crate::engine::prepare::Inputs,
    pub y: Tensor,
    pub n: usize,
}

impl TrainSet {
    pub fn real(p: &Prepared) -> TrainSet {
        TrainSet {
            x: p.train_x.clone(),
            y: p.train_y.clone(),
            n: p.n_train,
        }
    }
}

/// What a stage does to the model after every applied optimizer step (pruning masks).
pub trait StepHook {
    /// `stage_step` counts the stage's optimizer steps from 1.
    fn after_step(&mut self, _stage_step: usize) -> candle_core::Result<()> {
        Ok(())
    }
    /// Forward FLOPs per sample spent on weights that are pruned to zero (the dense kernels
    /// execute them; the nominal count leaves them out).
    fn zeroed_forward_flops(&self) -> u64 {
        0
    }
}

/// A stage with nothing to do between steps.
pub struct NoHook;
impl StepHook for NoHook {}

/// One stretch of training inside the session's window.
pub struct Stage<'h> {
    /// The most optimizer steps this stage may take.
    pub max_steps: usize,
    /// Which eval reaching T ends the stage.
    pub until: Until,
    /// Whether its evals score the variant (see `CurvePoint::scored`).
    pub scored: bool,
    /// Score the eval at the stage's last step even when `scored` is false (gradual pruning
    /// reaches its final sparsity at its last step: that model is the pruned model).
    pub score_last: bool,
    /// False for the throughput track: no evals at all.
    pub evaluate: bool,
    pub hook: &'h mut dyn StepHook,
}

/// Which eval reaching T ends a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Train the stage's whole budget.
    Budget,
    /// The first eval reaching T, scored or not (the dense model of a pruning pipeline).
    AnyEval,
    /// The first scored eval reaching T (the benchmark: ETT).
    ScoredEval,
}

impl Until {
    /// The benchmark's rule for a scored stage: stop at T, or trace the whole budget.
    pub fn target_if(stop_at_target: bool) -> Until {
        if stop_at_target {
            Until::ScoredEval
        } else {
            Until::Budget
        }
    }
}

/// Why a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageEnd {
    Target,
    /// The forecast gave the run under 1 % to reach T within its budget.
    Forecast,
    Steps,
    EnergyBudget,
    TimeBudget,
    Diverged,
}

/// The steps the task's budget allows for a training set of `steps_per_epoch` batches.
pub fn budget_steps(spec: &TaskSpec, steps_per_epoch: usize) -> usize {
    spec.budget.steps(steps_per_epoch)
}

/// The batch size of a task on a training set of `n` samples.
pub fn batch_size(spec: &TaskSpec, n: usize) -> usize {
    spec.train.batch_size.min(n.max(1))
}

/// One run: one measured window, its phases, stages, evals and counters.
pub struct Session<'a> {
    spec: &'a TaskSpec,
    p: &'a Prepared,
    device: &'a Device,
    observer: &'a mut dyn Observer,
    window: MeasuredWindow<'a>,
    amp: Amp,
    clock: Instant,
    order_rng: SeededRng,
    events: EventLog,
    curve: Vec<CurvePoint>,
    phases: Vec<Phase>,
    /// The open phase: name, start time and cumulative energy at its start.
    open_phase: Option<(String, f64, f64)>,
    step: usize,
    samples: usize,
    epochs: f64,
    eval_s: f64,
    warmup_s: f64,
    loss_sum: Tensor,
    loss_steps: usize,
    /// Applied steps between the last two evals.
    last_applied: usize,
    skipped: usize,
    flops_executed: f64,
    flops_nominal: f64,
    status: Status,
    /// Whether the forecast may stop the run, and the forecast that did.
    forecast_stop: bool,
    forecast: Option<Forecast>,
    error: Option<String>,
    param_count: usize,
    /// Per-sample crop and flip draws (stream 7 of the seed).
    augment_rng: SeededRng,
    /// The standardised value of a black pixel: what a crop pads with.
    pad_value: f32,
}

impl<'a> Session<'a> {
    /// Warm up on `model` (forward and backward of random batches, gradients discarded, no
    /// update: kernels and allocator warm, nothing the seed decides is touched and no training
    /// image is read), then open the measured window: `run_start`.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        spec: &'a TaskSpec,
        p: &'a Prepared,
        opts: &TrainOptions,
        amp: Amp,
        model: &dyn RefModel,
        meter: &'a mut dyn Meter,
        device: &'a Device,
        observer: &'a mut dyn Observer,
    ) -> Result<Session<'a>, TrainError> {
        let mut events = EventLog::default();
        events.point("seed", json!(opts.seed), json!({}));
        events.point("global_batch_size", json!(spec.train.batch_size), json!({}));
        let OptimizerSpec::Adamw { lr, .. } = spec.optimizer;
        events.point("opt_name", json!("adamw"), json!({}));
        events.point("opt_base_learning_rate", json!(lr), json!({}));
        let bs = batch_size(spec, p.n_train);
        let warm = Instant::now();
        events.interval("warmup", true, json!({"steps": spec.train.warmup_steps}));
        let mut warm_rng = SeededRng::new(opts.seed, 9);
        let scale = amp.scaler.as_ref().map(|s| s.scale());
        // Warm-up passes run in training mode; batch norm's running statistics are put back
        // after them, so random batches leave no trace in the model.
        let buffers = model.params().buffers()?;
        for _ in 0..spec.train.warmup_steps {
            let (x, y) = random_batch(p.input, p.classes, bs, &mut warm_rng, device)?;
            drop(grads_of(model, &amp.cast, scale, &x, &y)?);
        }
        model.params().restore_buffers(&buffers)?;
        device.synchronize()?;
        events.interval("warmup", false, json!({}));
        let warmup_s = warm.elapsed().as_secs_f64();
        observer.on_start(p.n_train / bs.max(1), spec.budget.max_epochs);
        let window = MeasuredWindow::open(meter, device)?;
        events.interval("run_start", true, json!({}));
        Ok(Session {
            spec,
            p,
            device,
            observer,
            window,
            amp,
            clock: Instant::now(),
            order_rng: SeededRng::new(opts.seed, 1),
            events,
            curve: Vec::new(),
            phases: Vec::new(),
            open_phase: None,
            step: 0,
            samples: 0,
            epochs: 0.0,
            eval_s: 0.0,
            warmup_s,
            loss_sum: Tensor::zeros((), DType::F32, device)?,
            loss_steps: 0,
            last_applied: 0,
            skipped: 0,
            flops_executed: 0.0,
            flops_nominal: 0.0,
            status: Status::Dnf,
            error: None,
            forecast_stop: opts.forecast_stop && opts.stop_at_target,
            forecast: None,
            param_count: model.params().count(),
            augment_rng: SeededRng::new(opts.seed, 7),
            pad_value: match (spec.train.input_mean, spec.train.input_sd) {
                (Some(m), Some(sd)) => (-m / sd) as f32,
                _ => 0.0,
            },
        })
    }

    pub fn device(&self) -> &Device {
        self.device
    }

    pub fn events(&mut self) -> &mut EventLog {
        &mut self.events
    }

    pub fn status(&self) -> Status {
        self.status
    }

    /// Optimizer steps taken so far in this session (all stages).
    pub fn steps(&self) -> usize {
        self.step
    }

    /// Seconds since `run_start`.
    pub fn elapsed_s(&self) -> f64 {
        self.window.elapsed_s()
    }

    /// The throughput track: a run with no target is complete when its steps are done.
    pub fn complete_without_target(&mut self) {
        if self.status == Status::Dnf {
            self.status = Status::Ok;
        }
    }

    /// The model the run ends with (after structured pruning, a smaller one).
    pub fn set_final_model(&mut self, model: &dyn RefModel) {
        self.param_count = model.params().count();
    }

    /// Close the open phase (if any) at a mark and open `name`.
    pub fn begin_phase(&mut self, name: &str) -> Result<(), TrainError> {
        let mark = self.window.mark()?;
        if let Some((prev, start_s, start_j)) = self.open_phase.take() {
            self.events
                .interval(&prev, false, json!({"energy_j": mark.energy_j}));
            self.phases.push(Phase {
                name: prev,
                start_s,
                end_s: mark.t_s,
                energy_j: mark.energy_j - start_j,
            });
        }
        self.events
            .interval(name, true, json!({"energy_j": mark.energy_j}));
        // The first phase starts at `run_start`, so the phases add up to the window.
        let start = if self.phases.is_empty() {
            (0.0, 0.0)
        } else {
            (mark.t_s, mark.energy_j)
        };
        self.open_phase = Some((name.to_string(), start.0, start.1));
        Ok(())
    }

    /// Add work done outside the training loop (fitting a generator, sampling) to the FLOP
    /// counts: executed and nominal alike.
    pub fn add_flops(&mut self, flops: f64) {
        self.flops_executed += flops;
        self.flops_nominal += flops;
    }

    fn phase_name(&self) -> String {
        self.open_phase
            .as_ref()
            .map_or_else(default_phase, |(n, _, _)| n.clone())
    }

    /// One optimizer step on one batch. False when the loss scaler skipped it.
    fn step<O: Optimizer>(
        &mut self,
        model: &dyn RefModel,
        opt: &mut O,
        x: &Tensor,
        y: &Tensor,
    ) -> candle_core::Result<bool> {
        let scale = self.amp.scaler.as_ref().map(|s| s.scale());
        let (loss, grads) = grads_of(model, &self.amp.cast, scale, x, y)?;
        if self.amp.scaler.is_some() {
            let finite = grads_finite(model, &grads)?;
            let step = self.step + 1;
            if let Some(s) = self.amp.scaler.as_mut() {
                if s.update(step, !finite) == ScaleDecision::Skip {
                    self.skipped += 1;
                    self.events.point(
                        "loss_scale_backoff",
                        json!(s.scale()),
                        json!({"step": step}),
                    );
                    return Ok(false);
                }
            }
        }
        let grads = match self.spec.optimizer.clip_grad_norm() {
            Some(max) => clip_grad_norm(model, grads, max)?,
            None => grads,
        };
        opt.step(&grads)?;
        self.loss_sum = (&self.loss_sum + loss.detach())?;
        self.loss_steps += 1;
        Ok(true)
    }

    /// Evaluate now (on the clock and on the meter) and add the point to the curve; its FLOPs
    /// are forward passes over the eval set (`zeroed_fwd`: per-sample FLOPs of masked weights).
    pub fn eval_now(
        &mut self,
        model: &dyn RefModel,
        scored: bool,
        zeroed_fwd: u64,
    ) -> candle_core::Result<f64> {
        let fwd = model.forward_flops_per_sample() as f64;
        let n_eval = self.p.n_eval as f64;
        self.flops_executed += fwd * n_eval;
        self.flops_nominal += (fwd - zeroed_fwd as f64) * n_eval;
        let t_eval = Instant::now();
        let step = self.step;
        self.events.interval(
            "eval",
            true,
            json!({"epoch_num": self.epochs, "step": step}),
        );
        let bs = batch_size(self.spec, self.p.n_train);
        let q = evaluate(model, self.p, bs, self.spec.metric)?;
        // With no step applied since the previous eval (right after a structural prune, or
        // every step skipped by the loss scaler) the previous mean is carried over.
        let mean_loss = if self.loss_steps > 0 {
            self.loss_sum.to_scalar::<f32>()? as f64 / self.loss_steps as f64
        } else {
            self.curve.last().map_or(0.0, |p| p.train_loss)
        };
        self.last_applied = self.loss_steps;
        self.loss_sum = Tensor::zeros((), DType::F32, self.device)?;
        self.loss_steps = 0;
        let mark = self
            .window
            .mark()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        self.eval_s += t_eval.elapsed().as_secs_f64();
        let point = CurvePoint {
            step,
            epoch: self.epochs,
            energy_j: mark.energy_j,
            time_s: self.clock.elapsed().as_secs_f64(),
            value: q,
            train_loss: mean_loss,
            phase: self.phase_name(),
            scored,
        };
        self.events.point(
            self.spec.metric.mllog_key(),
            json!(q),
            json!({"epoch_num": point.epoch, "step": step, "energy_j": mark.energy_j,
                   "phase": point.phase, "scored": scored}),
        );
        self.events.interval("eval", false, json!({"step": step}));
        let watts = if mark.t_s > 0.0 {
            mark.energy_j / mark.t_s
        } else {
            0.0
        };
        self.observer.on_eval(&point, watts);
        if scored
            && self
                .spec
                .metric
                .direction()
                .reached(q, self.spec.target.value)
            && self.status != Status::Ok
        {
            self.status = Status::Ok;
            self.events
                .point("target_reached", json!(q), json!({"step": step}));
        }
        self.curve.push(point);
        Ok(q)
    }

    /// Train `model` on `data` with `opt` for one stage.
    pub fn train_stage<O: Optimizer>(
        &mut self,
        model: &dyn RefModel,
        data: &TrainSet,
        opt: &mut O,
        stage: Stage,
    ) -> candle_core::Result<StageEnd> {
        let bs = batch_size(self.spec, data.n);
        let steps_per_epoch = data.n / bs;
        if steps_per_epoch == 0 {
            candle_core::bail!(
                "training set of {} samples is smaller than one batch",
                data.n
            );
        }
        let fwd = model.forward_flops_per_sample() as f64;
        let frozen_prefix = model.params().frozen_prefix_flops() as f64;
        let target = self.spec.target.value;
        let dir = self.spec.metric.direction();
        let budget = self.spec.budget.clone();
        let schedule_steps = budget_steps(self.spec, steps_per_epoch);
        let scheduled = self.spec.optimizer.scheduled();
        let every = self.spec.train.eval_every_steps;
        let mut perm: Vec<u32> = (0..data.n as u32).collect();
        let mut done = 0usize;
        if stage.max_steps == 0 {
            return Ok(StageEnd::Steps);
        }
        loop {
            self.order_rng.shuffle(&mut perm);
            // The stop names the same epoch (`epochs` after it may be 0.999...).
            let epoch_num = self.epochs.floor() + 1.0;
            self.events
                .interval("epoch", true, json!({"epoch_num": epoch_num}));
            // The epoch's order goes to the device once; each step gathers its batch through a
            // view of it (no per-step index upload).
            let order = Tensor::from_slice(&perm, perm.len(), self.device)?;
            for b in 0..steps_per_epoch {
                let idx = order.narrow(0, b * bs, bs)?;
                let mut x = data.x.index_select(&idx, 0)?;
                let y = data.y.index_select(&idx, 0)?;
                if self.spec.train.augments() {
                    x = augment(&x, &self.spec.train, self.pad_value, &mut self.augment_rng)?;
                }
                if scheduled {
                    opt.set_learning_rate(crate::spec::task::lr_at(
                        &self.spec.optimizer,
                        self.step,
                        schedule_steps,
                    ));
                }
                let applied = self.step(model, opt, &x, &y)?;
                done += 1;
                self.step += 1;
                self.samples += bs;
                self.epochs += 1.0 / steps_per_epoch as f64;
                if applied {
                    stage.hook.after_step(done)?;
                }
                let zeroed = stage.hook.zeroed_forward_flops() as f64;
                self.flops_executed += (3.0 * fwd - 2.0 * frozen_prefix) * bs as f64;
                self.flops_nominal += (3.0 * (fwd - zeroed) - 2.0 * frozen_prefix) * bs as f64;
                self.observer.on_step(self.step, self.epochs as usize);
                let last = done >= stage.max_steps;
                if !stage.evaluate {
                    if last {
                        return Ok(StageEnd::Steps);
                    }
                    continue;
                }
                if !self.step.is_multiple_of(every) && !last {
                    continue;
                }
                // Evaluation: on the clock and on the meter.
                let scored = stage.scored || (last && stage.score_last);
                let q = self.eval_now(model, scored, zeroed as u64)?;
                let point = self.curve.last().cloned();
                if self.last_applied > 0
                    && point.as_ref().is_some_and(|p| !p.train_loss.is_finite())
                {
                    self.status = Status::Diverged;
                    return Ok(StageEnd::Diverged);
                }
                let stop = match stage.until {
                    Until::Budget => false,
                    Until::AnyEval => true,
                    Until::ScoredEval => scored,
                };
                if dir.reached(q, target) && stop {
                    return Ok(StageEnd::Target);
                }
                if scored && stage.until == Until::ScoredEval && !last {
                    // The stage ends at step `self.step + (max_steps - done)` of the run.
                    let end = self.step + (stage.max_steps - done);
                    if let Some(fc) = self.forecast_now(end, every) {
                        self.events.point(
                            "forecast_stop",
                            json!(fc.p_reach),
                            json!({"step": self.step, "predicted_final": fc.predicted_final}),
                        );
                        self.status = Status::StoppedForecast;
                        self.forecast = Some(fc);
                        return Ok(StageEnd::Forecast);
                    }
                }
                let (e, t) = point.map_or((0.0, 0.0), |p| (p.energy_j, self.window.elapsed_s()));
                if budget.max_energy_j.is_some_and(|m| e >= m) {
                    return Ok(StageEnd::EnergyBudget);
                }
                if budget.max_time_s.is_some_and(|m| t >= m) {
                    return Ok(StageEnd::TimeBudget);
                }
                if last {
                    return Ok(StageEnd::Steps);
                }
            }
            self.events
                .interval("epoch", false, json!({"epoch_num": epoch_num}));
        }
    }

    /// The forecast over the scored evals so far, when forecast stops are on and it stops the
    /// run (`stats::forecast`): the stage ends at run step `end_step`, evals every `every`.
    fn forecast_now(&self, end_step: usize, every: usize) -> Option<Forecast> {
        if !self.forecast_stop {
            return None;
        }
        let (steps, values): (Vec<f64>, Vec<f64>) = self
            .curve
            .iter()
            .filter(|p| p.scored)
            .map(|p| (p.step as f64, p.value))
            .unzip();
        let higher = self.spec.metric.direction() == Direction::Higher;
        let t = self.spec.target.value;
        let floor = forecast::eval_noise_floor(higher, t, self.p.n_eval);
        let fc = forecast::forecast(&CurveSoFar {
            steps: &steps,
            values: &values,
            higher_is_better: higher,
            target: t,
            budget_steps: end_step as f64,
            remaining_evals: forecast::remaining_evals(
                end_step as f64,
                self.step as f64,
                every as f64,
            ),
            noise_floor: floor,
        })?;
        fc.stops().then_some(fc)
    }

    /// Record a failure (the run file says `failed` with this text).
    pub fn fail(&mut self, e: impl std::fmt::Display) {
        self.status = Status::Failed;
        self.error = Some(error_text(&e.to_string()));
    }

    /// Close the last phase and the window: `run_stop`.
    pub fn finish(mut self) -> Result<TrainOutcome, TrainError> {
        let train_wall_s = self.clock.elapsed().as_secs_f64();
        let report = self.window.close()?;
        if let Some((name, start_s, start_j)) = self.open_phase.take() {
            self.events.interval(&name, false, json!({}));
            self.phases.push(Phase {
                name,
                start_s,
                end_s: report.duration_s,
                energy_j: report.total_j() - start_j,
            });
        }
        self.observer.on_finish();
        self.events.interval(
            "run_stop",
            false,
            json!({"status": self.status.as_str(), "steps": self.step}),
        );
        let precision_report = (!self.amp.cast.is_f32() || self.amp.cast.ran_low_precision())
            .then(|| self.amp.cast.report());
        Ok(TrainOutcome {
            status: self.status,
            error: self.error,
            curve: self.curve,
            steps: self.step,
            samples: self.samples,
            epochs: self.epochs,
            warmup_s: self.warmup_s,
            train_s: train_wall_s - self.eval_s,
            eval_s: self.eval_s,
            window: Some(report),
            events: self.events,
            param_count: self.param_count,
            phases: self.phases,
            flops_executed: self.flops_executed,
            flops_nominal: self.flops_nominal,
            precision_report,
            loss_scale: self.amp.scaler.as_ref().map(|s| s.summary()),
            skipped_steps: self.skipped,
            forecast: self.forecast,
        })
    }
}

/// Train `model` on the real training set in one stage (the plain f32 run), inside one
/// measured window opened on `meter`.
pub fn train(
    spec: &TaskSpec,
    p: &Prepared,
    model: &dyn RefModel,
    opts: &TrainOptions,
    meter: &mut dyn Meter,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome, TrainError> {
    let mut opt = optimizer(spec, model)?;
    let data = TrainSet::real(p);
    let mut s = Session::open(spec, p, opts, Amp::f32(), model, meter, device, observer)?;
    s.begin_phase("train")?;
    let steps = budget_steps(spec, data.n / batch_size(spec, data.n).max(1));
    let stage = Stage {
        max_steps: steps,
        until: Until::target_if(opts.stop_at_target),
        scored: true,
        score_last: false,
        evaluate: true,
        hook: &mut NoHook,
    };
    if let Err(e) = s.train_stage(model, &data, &mut opt, stage) {
        s.fail(e);
    }
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::precision::Cast;
    use crate::engine::prepare::{majority_rate, unigram_entropy_nats};
    use candle_core::backprop::GradStore;

    /// `candle_core::no_grad` (our candle patch): ops made inside record no graph, so a
    /// backward from them reaches no variable; calls nest; recording comes back after the
    /// outermost call, and after a panic inside it.
    #[test]
    fn no_grad_records_no_graph_and_comes_back() {
        let v = candle_core::Var::new(&[1f32, 2., 3.], &Device::Cpu).unwrap();
        let y = candle_core::no_grad(|| {
            let inner = candle_core::no_grad(|| (v.as_tensor() * 2.0).unwrap());
            assert!(!candle_core::is_grad_enabled());
            (inner + v.as_tensor()).unwrap()
        });
        assert!(candle_core::is_grad_enabled());
        assert!(!y.track_op());
        assert_eq!(y.to_vec1::<f32>().unwrap(), [3., 6., 9.]);
        let g = y.sum_all().unwrap().backward().unwrap();
        assert!(g.get(v.as_tensor()).is_none());
        let z = (v.as_tensor() * 2.0).unwrap();
        assert!(z.track_op());
        let g = z.sum_all().unwrap().backward().unwrap();
        assert_eq!(
            g.get(v.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
            [2., 2., 2.]
        );
        let r = std::panic::catch_unwind(|| candle_core::no_grad(|| panic!("inside")));
        assert!(r.is_err());
        assert!(candle_core::is_grad_enabled());
    }

    /// `evaluate` runs under `no_grad`: bit for bit the metric of the same chunks evaluated
    /// with the graph recorded, for a GPT (held-out loss, two chunks) and a batch-norm ResNet
    /// (accuracy, a ragged last chunk).
    #[test]
    fn evaluation_without_a_graph_equals_the_recorded_one() {
        let dev = Device::Cpu;
        let gpt = crate::spec::task::ModelSpec::Gpt {
            context: 8,
            d_model: 16,
            heads: 2,
            layers: 2,
            ff_mult: 4,
            dropout: 0.0,
            kept_heads: None,
            ff_hidden: None,
        };
        let tokens = InputShape::Tokens {
            context: 8,
            vocab: 11,
        };
        let n_text = EVAL_TOKENS / 8 + 3;
        let ids = |seed: u64| {
            let mut r = SeededRng::new(seed, 0);
            let v: Vec<u32> = (0..n_text * 8).map(|_| r.below(11) as u32).collect();
            Tensor::from_vec(v, (n_text, 8), &dev).unwrap()
        };
        let resnet = crate::spec::task::ModelSpec::Resnet {
            channels: [4, 8, 8],
            blocks: 1,
            inner: None,
        };
        let image = InputShape::Image { c: 1, h: 8, w: 8 };
        let n_img = 21;
        let labels: Vec<u32> = (0..n_img as u32).map(|i| i % 10).collect();
        let cases = [
            (
                gpt,
                tokens,
                11,
                Metric::HeldOutLoss,
                ids(1),
                ids(2),
                n_text,
                n_text * 8,
            ),
            (
                resnet,
                image,
                10,
                Metric::Accuracy,
                Tensor::rand(0f32, 1., (n_img, 1, 8, 8), &dev).unwrap(),
                Tensor::from_vec(labels, n_img, &dev).unwrap(),
                n_img,
                n_img,
            ),
        ];
        for (spec, input, classes, metric, x, y, n, predictions) in cases {
            let m =
                crate::engine::model::build(&spec, input, classes, &mut SeededRng::new(7, 0), &dev)
                    .unwrap();
            let p = Prepared {
                train_x: crate::engine::prepare::Inputs::plain(x.clone()),
                train_y: y.clone(),
                n_train: n,
                eval_x: crate::engine::prepare::Inputs::plain(x),
                eval_y: y,
                n_eval: n,
                eval_predictions: predictions,
                input,
                classes,
                chance: 0.1,
            };
            let free = evaluate(m.as_ref(), &p, 8, metric).unwrap();
            let recorded = evaluate_chunks(m.as_ref(), &p, 8, metric).unwrap();
            assert!(free.is_finite() && free > 0.0, "{spec:?}: {free}");
            assert_eq!(free.to_bits(), recorded.to_bits(), "{spec:?}");
        }
    }

    #[test]
    fn stored_errors_drop_a_backtrace() {
        let e = "cuda error: out of memory\n   0: candle_core::error::Error::bt\n   1: main";
        assert_eq!(error_text(e), "cuda error: out of memory");
        assert_eq!(error_text("one line"), "one line");
    }

    #[test]
    fn a_non_finite_train_loss_round_trips_as_null() {
        let p = CurvePoint {
            step: 95,
            epoch: 1.0,
            energy_j: 1.0,
            time_s: 1.0,
            value: 0.5,
            train_loss: f64::NAN,
            phase: "train".into(),
            scored: true,
        };
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"train_loss\":null"), "{json}");
        let back: CurvePoint = serde_json::from_str(&json).unwrap();
        assert!(back.train_loss.is_nan());
    }

    #[test]
    fn unigram_entropy_is_the_chance_of_a_loss() {
        assert!((unigram_entropy_nats([0u32, 1, 0, 1].into_iter(), 4) - 2f64.ln()).abs() < 1e-12);
        assert_eq!(unigram_entropy_nats([3u32, 3, 3].into_iter(), 4), 0.0);
        assert_eq!(unigram_entropy_nats(std::iter::empty(), 4), 0.0);
    }

    /// Crop offsets within the padding and flips, seeded: every output pixel is an input pixel
    /// at the drawn shift (mirrored when flipped) or the pad value; no flip and no pad is the
    /// identity.
    #[test]
    fn augmentation_crops_and_flips_per_sample() {
        let dev = Device::Cpu;
        let (n, h, w) = (16, 5, 6);
        let vals: Vec<f32> = (0..n * h * w).map(|i| i as f32).collect();
        let x = Tensor::from_vec(vals.clone(), (n, 1, h, w), &dev).unwrap();
        let spec = |pad: Option<usize>, flip: bool| crate::spec::task::TrainSpec {
            batch_size: 1,
            eval_every_steps: 1,
            eval_max_samples: None,
            warmup_steps: 0,
            input_mean: None,
            input_sd: None,
            augment_crop_pad: pad,
            augment_hflip: flip,
        };
        let same = augment(&x, &spec(Some(0), false), -9.0, &mut SeededRng::new(1, 7)).unwrap();
        assert_eq!(same.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vals);
        let s = spec(Some(2), true);
        let a = augment(&x, &s, -9.0, &mut SeededRng::new(1, 7)).unwrap();
        let b = augment(&x, &s, -9.0, &mut SeededRng::new(1, 7)).unwrap();
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let mut flips = 0;
        let mut shifted = 0;
        for k in 0..n {
            let out = &a[k * h * w..(k + 1) * h * w];
            let src = &vals[k * h * w..(k + 1) * h * w];
            // Find the (dy, dx, flip) that explains this sample: exactly one must.
            let mut found = Vec::new();
            for dy in -2i64..=2 {
                for dx in -2i64..=2 {
                    for flip in [false, true] {
                        let ok = (0..h as i64).all(|i| {
                            (0..w as i64).all(|j| {
                                let jj = if flip { w as i64 - 1 - j } else { j };
                                let (r, c) = (i + dy, jj + dx);
                                let want = if r < 0 || c < 0 || r >= h as i64 || c >= w as i64 {
                                    -9.0
                                } else {
                                    src[r as usize * w + c as usize]
                                };
                                out[i as usize * w + j as usize] == want
                            })
                        });
                        if ok {
                            found.push((dy, dx, flip));
                        }
                    }
                }
            }
            assert_eq!(found.len(), 1, "sample {k}: {found:?}");
            flips += usize::from(found[0].2);
            shifted += usize::from(found[0].0 != 0 || found[0].1 != 0);
        }
        assert!(flips > 0 && flips < n, "{flips}");
        assert!(shifted > n / 2, "{shifted}");
    }

    #[test]
    fn gradient_clipping_scales_to_the_max_norm() {
        use crate::engine::model::{self, InputShape};
        let dev = Device::Cpu;
        let spec = crate::spec::task::ModelSpec::Mlp { hidden: vec![4] };
        let m = model::build(
            &spec,
            InputShape::Image { c: 1, h: 2, w: 2 },
            3,
            &mut SeededRng::new(1, 0),
            &dev,
        )
        .unwrap();
        let x = Tensor::new(&[[[[1f32, -2.], [3., 4.]]]], &dev).unwrap();
        let y = Tensor::new(&[2u32], &dev).unwrap();
        let norm = |g: &GradStore| -> f64 {
            m.params()
                .named()
                .iter()
                .map(|(_, v)| {
                    let t = g.get(v.as_tensor()).unwrap();
                    t.sqr()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap() as f64
                })
                .sum::<f64>()
                .sqrt()
        };
        let (_, g) = grads_of(m.as_ref(), &Cast::f32(), None, &x, &y).unwrap();
        let before = norm(&g);
        assert!(before > 0.01);
        let clipped = clip_grad_norm(m.as_ref(), g, before / 4.0).unwrap();
        assert!((norm(&clipped) - before / 4.0).abs() < 1e-4 * before);
        let (_, g) = grads_of(m.as_ref(), &Cast::f32(), None, &x, &y).unwrap();
        let kept = clip_grad_norm(m.as_ref(), g, before * 10.0).unwrap();
        assert!((norm(&kept) - before).abs() < 1e-6 * before);
    }

    #[test]
    fn majority_rate_counts_the_largest_class() {
        assert_eq!(majority_rate([0u32, 1, 1, 2].into_iter(), 3), 0.5);
        assert_eq!(majority_rate(std::iter::empty(), 3), 0.0);
    }
}
