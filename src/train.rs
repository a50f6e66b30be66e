//! The one training loop for every reference model, and the held-out evaluation.
//!
//! Owns: turning a loaded dataset into device tensors (`prepare`), seeded batch order, AdamW
//! steps, evaluation on a fixed step cadence inside the measured window (on the clock and on
//! the meter, as MLPerf requires), the stop decision (target, budget, divergence) and the event
//! log of what happened when.
//! Must not: write files or choose a meter; it is handed an opened meter and returns data.
//!
//! The loss never makes a host round-trip on an ordinary step: it is accumulated on the
//! device and read once per eval (a per-step `to_scalar` stalls a GPU and skews energy;
//! candle's mnist-training example does exactly that).

use crate::data::{DatasetBundle, Loaded};
use crate::energy::{MeasuredWindow, Meter, MeterError, WindowReport};
use crate::model::{InputShape, RefModel, SeededRng};
use crate::optim::FusedAdamW;
use crate::task::{OptimizerSpec, TaskSpec};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Instant;

/// Device-resident train and eval tensors of one task.
pub struct Prepared {
    pub train_x: Tensor,
    pub train_y: Tensor,
    pub n_train: usize,
    pub eval_x: Tensor,
    pub eval_y: Tensor,
    pub n_eval: usize,
    /// Individual predictions scored per eval (text: windows x context).
    pub eval_predictions: usize,
    pub input: InputShape,
    pub classes: usize,
    /// Majority-class rate of the eval targets actually used.
    pub chance: f64,
}

/// Move a loaded dataset to the device in the shape the task's model eats.
pub fn prepare(
    spec: &TaskSpec,
    bundle: &DatasetBundle,
    device: &Device,
) -> candle_core::Result<Prepared> {
    let cap = |n: usize| spec.train.eval_max_samples.map_or(n, |m| m.min(n));
    match &bundle.data {
        Loaded::Images {
            train,
            test,
            classes,
        } => {
            let [c, h, w] = train.shape;
            let n_eval = cap(test.len());
            let to_x = |v: &[f32], n: usize| Tensor::from_slice(v, (n, c, h, w), device);
            let to_y = |v: &[u8], n: usize| {
                Tensor::from_vec(
                    v[..n].iter().map(|&l| l as u32).collect::<Vec<_>>(),
                    n,
                    device,
                )
            };
            Ok(Prepared {
                train_x: to_x(&train.images, train.len())?,
                train_y: to_y(&train.labels, train.len())?,
                n_train: train.len(),
                eval_x: to_x(&test.images[..n_eval * c * h * w], n_eval)?,
                eval_y: to_y(&test.labels, n_eval)?,
                n_eval,
                eval_predictions: n_eval,
                input: InputShape::Image { c, h, w },
                classes: *classes,
                chance: majority_rate(test.labels[..n_eval].iter().map(|&l| l as u32), *classes),
            })
        }
        Loaded::Text(text) => {
            let context = match spec.model {
                crate::task::ModelSpec::CharTransformer { context, .. } => context,
                _ => candle_core::bail!("text data needs a token model"),
            };
            let vocab = text.vocab.len();
            let windows =
                |ids: &[u32], max: usize| -> candle_core::Result<(Tensor, Tensor, usize)> {
                    // Non-overlapping windows of context + 1: inputs are the first `context`
                    // characters, targets the same window shifted by one.
                    let n = (ids.len().saturating_sub(1) / context).min(max);
                    let mut x = Vec::with_capacity(n * context);
                    let mut y = Vec::with_capacity(n * context);
                    for i in 0..n {
                        let s = i * context;
                        x.extend_from_slice(&ids[s..s + context]);
                        y.extend_from_slice(&ids[s + 1..s + context + 1]);
                    }
                    Ok((
                        Tensor::from_vec(x, (n, context), device)?,
                        Tensor::from_vec(y, (n, context), device)?,
                        n,
                    ))
                };
            let (train_x, train_y, n_train) = windows(&text.train, usize::MAX)?;
            let (eval_x, eval_y, n_eval) = windows(&text.test, cap(usize::MAX))?;
            let chance = majority_rate(text.test[1..=n_eval * context].iter().copied(), vocab);
            Ok(Prepared {
                train_x,
                train_y,
                n_train,
                eval_x,
                eval_y,
                n_eval,
                eval_predictions: n_eval * context,
                input: InputShape::Tokens { context, vocab },
                classes: vocab,
                chance,
            })
        }
    }
}

/// Share of the most frequent class: the chance level c of measurement.md section 1.
pub fn majority_rate(labels: impl Iterator<Item = u32>, classes: usize) -> f64 {
    let mut counts = vec![0usize; classes.max(1)];
    let mut n = 0usize;
    for l in labels {
        if let Some(c) = counts.get_mut(l as usize) {
            *c += 1;
        }
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    *counts.iter().max().unwrap_or(&0) as f64 / n as f64
}

/// One evaluation of the held-out set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub step: usize,
    pub epoch: f64,
    /// Energy since `run_start`, evaluation included.
    pub energy_j: f64,
    pub time_s: f64,
    pub value: f64,
    /// Mean training loss over the steps since the previous eval.
    pub train_loss: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Dnf,
    Diverged,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Dnf => "dnf",
            Status::Diverged => "diverged",
            Status::Failed => "failed",
        }
    }
}

/// An MLPerf-style event (`:::MLLOG` line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub time_ms: u128,
    pub event_type: &'static str,
    pub key: String,
    pub value: serde_json::Value,
    pub metadata: serde_json::Value,
}

#[derive(Debug, Default)]
pub struct EventLog(pub Vec<Event>);

impl EventLog {
    pub fn point(&mut self, key: &str, value: serde_json::Value, metadata: serde_json::Value) {
        self.push("POINT_IN_TIME", key, value, metadata)
    }
    pub fn interval(&mut self, key: &str, start: bool, metadata: serde_json::Value) {
        let t = if start {
            "INTERVAL_START"
        } else {
            "INTERVAL_END"
        };
        self.push(t, key, serde_json::Value::Null, metadata)
    }
    fn push(
        &mut self,
        et: &'static str,
        key: &str,
        value: serde_json::Value,
        md: serde_json::Value,
    ) {
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        self.0.push(Event {
            time_ms,
            event_type: et,
            key: key.to_string(),
            value,
            metadata: md,
        });
    }
}

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
    pub param_count: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("training setup: {0}")]
    Setup(#[from] candle_core::Error),
    #[error("meter: {0}")]
    Meter(#[from] MeterError),
}

struct EvalResult {
    value: f64,
}

/// Accuracy on the eval set, batched; one host read per eval.
fn evaluate(model: &dyn RefModel, p: &Prepared, batch: usize) -> candle_core::Result<EvalResult> {
    let mut correct = Tensor::zeros((), DType::F32, p.eval_x.device())?;
    let bs = batch.max(256);
    let mut start = 0;
    while start < p.n_eval {
        let len = bs.min(p.n_eval - start);
        let x = p.eval_x.narrow(0, start, len)?;
        let y = p.eval_y.narrow(0, start, len)?;
        let pred = model.forward_t(&x, false)?.argmax(D::Minus1)?;
        let hits = pred.eq(&y)?.to_dtype(DType::F32)?.sum_all()?;
        correct = (correct + hits)?;
        start += len;
    }
    let c = correct.to_scalar::<f32>()? as f64;
    Ok(EvalResult {
        value: c / p.eval_predictions.max(1) as f64,
    })
}

/// AdamW over every parameter of `model`, with the task's hyperparameters (fused, in place:
/// `optim`; same update as candle-nn's `AdamW`).
pub fn optimizer(spec: &TaskSpec, model: &dyn RefModel) -> candle_core::Result<FusedAdamW> {
    let OptimizerSpec::Adamw {
        lr,
        beta1,
        beta2,
        eps,
        weight_decay,
    } = spec.optimizer;
    FusedAdamW::new(
        model.params().vars(),
        ParamsAdamW {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        },
    )
}

/// One optimizer step on one batch; returns the (device-resident) loss.
pub fn train_step<O: Optimizer>(
    model: &dyn RefModel,
    opt: &mut O,
    x: &Tensor,
    y: &Tensor,
) -> candle_core::Result<Tensor> {
    let loss = loss_of(model, x, y)?;
    opt.backward_step(&loss)?;
    Ok(loss)
}

/// Forward pass and mean cross-entropy of one batch.
pub fn loss_of(model: &dyn RefModel, x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    let logits = model.forward_t(x, true)?;
    let classes = logits.dim(D::Minus1)?;
    let logits = logits.reshape(((), classes))?;
    candle_nn::loss::cross_entropy(&logits, &y.flatten_all()?)
}

/// Mean of scalar device losses: one stack, one sum, one host read.
fn mean_of(losses: &[Tensor]) -> candle_core::Result<f64> {
    if losses.is_empty() {
        return Ok(0.0);
    }
    let sum = Tensor::stack(losses, 0)?.to_dtype(DType::F32)?.sum_all()?;
    Ok(sum.to_scalar::<f32>()? as f64 / losses.len() as f64)
}

/// Train `model` on `p` inside one measured window opened on `meter`.
pub fn train(
    spec: &TaskSpec,
    p: &Prepared,
    model: &dyn RefModel,
    opts: &TrainOptions,
    meter: &mut dyn Meter,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome, TrainError> {
    let mut events = EventLog::default();
    events.point("seed", json!(opts.seed), json!({}));
    events.point("global_batch_size", json!(spec.train.batch_size), json!({}));
    let lr = match spec.optimizer {
        OptimizerSpec::Adamw { lr, .. } => lr,
    };
    events.point("opt_name", json!("adamw"), json!({}));
    events.point("opt_base_learning_rate", json!(lr), json!({}));
    let mut opt = optimizer(spec, model)?;
    let bs = spec.train.batch_size.min(p.n_train.max(1));
    let steps_per_epoch = p.n_train / bs;
    if steps_per_epoch == 0 {
        return Err(TrainError::Setup(candle_core::Error::Msg(format!(
            "training set of {} samples is smaller than one batch",
            p.n_train
        ))));
    }

    // Warm-up: forward and backward on the first batch, gradients discarded, no update, so it
    // changes nothing the seed decides. Timed and logged, not measured.
    let warm = Instant::now();
    events.interval("warmup", true, json!({"steps": spec.train.warmup_steps}));
    for _ in 0..spec.train.warmup_steps {
        let loss = loss_of(
            model,
            &p.train_x.narrow(0, 0, bs)?,
            &p.train_y.narrow(0, 0, bs)?,
        )?;
        drop(loss.backward()?);
    }
    device.synchronize()?;
    events.interval("warmup", false, json!({}));
    let warmup_s = warm.elapsed().as_secs_f64();

    let mut order_rng = SeededRng::new(opts.seed, 1);
    let target = spec.target.value;
    let budget = &spec.budget;
    let max_steps = budget
        .max_steps
        .unwrap_or(usize::MAX)
        .min(budget.max_epochs.saturating_mul(steps_per_epoch));
    let mut curve: Vec<CurvePoint> = Vec::new();
    let mut status = Status::Dnf;
    let mut error = None;
    let mut eval_s = 0.0;
    let mut step = 0usize;
    // Detached per-step losses since the last eval: summed on the device once per eval, so an
    // ordinary step adds no device op and no host read.
    let mut losses: Vec<Tensor> = Vec::with_capacity(spec.train.eval_every_steps);
    observer.on_start(steps_per_epoch, budget.max_epochs);

    let mut window = MeasuredWindow::open(meter, device)?;
    events.interval("run_start", true, json!({}));
    let run_clock = Instant::now();

    // The step loop; `Ok(true)` means a stop condition fired.
    let mut body = |window: &mut MeasuredWindow,
                    events: &mut EventLog,
                    curve: &mut Vec<CurvePoint>,
                    status: &mut Status,
                    eval_s: &mut f64|
     -> candle_core::Result<()> {
        let mut epoch = 0usize;
        let mut perm: Vec<u32> = (0..p.n_train as u32).collect();
        loop {
            order_rng.shuffle(&mut perm);
            // The epoch's order goes to the device once; each step gathers its batch through a
            // view of it (no per-step index upload).
            let order = Tensor::from_slice(&perm, perm.len(), device)?;
            events.interval("epoch", true, json!({"epoch_num": epoch + 1}));
            for b in 0..steps_per_epoch {
                let idx = order.narrow(0, b * bs, bs)?;
                let x = p.train_x.index_select(&idx, 0)?;
                let y = p.train_y.index_select(&idx, 0)?;
                let loss = train_step(model, &mut opt, &x, &y)?;
                losses.push(loss.detach());
                step += 1;
                observer.on_step(step, epoch);
                let last = step >= max_steps;
                if step % spec.train.eval_every_steps != 0 && !last {
                    continue;
                }
                // Evaluation: on the clock and on the meter.
                let t_eval = Instant::now();
                events.interval("eval", true, json!({"epoch_num": epoch + 1, "step": step}));
                let q = evaluate(model, p, bs)?.value;
                let mean_loss = mean_of(&losses)?;
                losses.clear();
                let mark = window
                    .mark()
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                *eval_s += t_eval.elapsed().as_secs_f64();
                let point = CurvePoint {
                    step,
                    epoch: step as f64 / steps_per_epoch as f64,
                    energy_j: mark.energy_j,
                    time_s: run_clock.elapsed().as_secs_f64(),
                    value: q,
                    train_loss: mean_loss,
                };
                events.point(
                    "eval_accuracy",
                    json!(q),
                    json!({"epoch_num": point.epoch, "step": step, "energy_j": mark.energy_j}),
                );
                events.interval("eval", false, json!({"step": step}));
                let watts = if mark.t_s > 0.0 {
                    mark.energy_j / mark.t_s
                } else {
                    0.0
                };
                observer.on_eval(&point, watts);
                curve.push(point);
                if !mean_loss.is_finite() {
                    *status = Status::Diverged;
                    return Ok(());
                }
                if q >= target && *status != Status::Ok {
                    *status = Status::Ok;
                    events.point("target_reached", json!(q), json!({"step": step}));
                    if opts.stop_at_target {
                        return Ok(());
                    }
                }
                let over_energy = budget.max_energy_j.is_some_and(|e| mark.energy_j >= e);
                let over_time = budget.max_time_s.is_some_and(|t| mark.t_s >= t);
                if last || over_energy || over_time {
                    return Ok(());
                }
            }
            events.interval("epoch", false, json!({"epoch_num": epoch + 1}));
            epoch += 1;
        }
    };
    if let Err(e) = body(
        &mut window,
        &mut events,
        &mut curve,
        &mut status,
        &mut eval_s,
    ) {
        status = Status::Failed;
        error = Some(e.to_string());
    }
    let train_wall_s = run_clock.elapsed().as_secs_f64();
    let report = window.close()?;
    observer.on_finish();
    events.interval(
        "run_stop",
        false,
        json!({"status": status.as_str(), "steps": step}),
    );
    Ok(TrainOutcome {
        status,
        error,
        curve,
        steps: step,
        samples: step * bs,
        epochs: step as f64 / steps_per_epoch as f64,
        warmup_s,
        train_s: train_wall_s - eval_s,
        eval_s,
        window: Some(report),
        events,
        param_count: model.params().count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_rate_counts_the_largest_class() {
        assert_eq!(majority_rate([0u32, 1, 1, 2].into_iter(), 3), 0.5);
        assert_eq!(majority_rate(std::iter::empty(), 3), 0.0);
    }
}
