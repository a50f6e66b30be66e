//! A task's data as the training loop takes it: the loaded dataset through the task's data
//! view, as device tensors (`prepare`), text cut into context windows, and the figures of the
//! data a task's chance level is judged by (majority class, unigram entropy).
//!
//! Owns: host data to device tensors, before any window opens.
//! Must not: train, evaluate or measure (`train.rs`).

use crate::data::{DatasetBundle, ImageSet, Loaded};
use crate::engine::model::InputShape;
use crate::spec::task::{Metric, TaskSpec};
use candle_core::{Device, Tensor};

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

/// The task's view of a loaded dataset (class filter, rotation, corpus part; see
/// `data::view`): what every model of the task trains and evaluates on.
pub fn task_data(spec: &TaskSpec, bundle: &DatasetBundle) -> candle_core::Result<Loaded> {
    spec.data
        .apply(&bundle.data)
        .map_err(|e| candle_core::Error::Msg(format!("task {}: {e}", spec.name)))
}

/// What the task's model eats and how many classes it predicts, from the (viewed) data.
pub fn input_of(spec: &TaskSpec, data: &Loaded) -> candle_core::Result<(InputShape, usize)> {
    match data {
        Loaded::Images { train, classes, .. } => {
            let [c, h, w] = train.shape;
            Ok((InputShape::Image { c, h, w }, *classes))
        }
        Loaded::Text(text) => match spec.model.context() {
            Some(context) => Ok((
                InputShape::Tokens {
                    context,
                    vocab: text.vocab.len(),
                },
                text.vocab.len(),
            )),
            None => candle_core::bail!("text data needs a token model"),
        },
    }
}

/// The first `n` images of `set` as a standardised `(n, c, h, w)` tensor (the task's declared
/// input mean and sd) and their labels as `u32`: the one place pixels become model inputs.
pub fn images_to_tensors(
    spec: &TaskSpec,
    set: &ImageSet,
    n: usize,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let [c, h, w] = set.shape;
    let (mean, sd) = match (spec.train.input_mean, spec.train.input_sd) {
        (Some(m), Some(s)) => (m as f32, s as f32),
        _ => (0.0, 1.0),
    };
    let x: Vec<f32> = set.images[..n * c * h * w]
        .iter()
        .map(|&p| (p - mean) / sd)
        .collect();
    let y: Vec<u32> = set.labels[..n].iter().map(|&l| l as u32).collect();
    Ok((
        Tensor::from_vec(x, (n, c, h, w), device)?,
        Tensor::from_vec(y, n, device)?,
    ))
}

/// The chance level c of a task's eval set as a run of it scores (the majority-class rate of
/// the eval targets actually used), for a program `exec` measures against the task: the same
/// c as joulebench's own runs, so both land on one leaderboard.
pub fn eval_chance(spec: &TaskSpec, bundle: &DatasetBundle) -> candle_core::Result<f64> {
    Ok(prepare(spec, bundle, &Device::Cpu)?.chance)
}

/// The task's view of `bundle` (`task_data`), borrowed when the task has no `[data]` view: no
/// copy of the dataset (70,000 f32 images are 220 MB).
pub fn task_view<'a>(
    spec: &TaskSpec,
    bundle: &'a DatasetBundle,
) -> candle_core::Result<std::borrow::Cow<'a, Loaded>> {
    Ok(if spec.data.is_identity() {
        std::borrow::Cow::Borrowed(&bundle.data)
    } else {
        std::borrow::Cow::Owned(task_data(spec, bundle)?)
    })
}

/// Move a loaded dataset to the device in the shape the task's model eats.
pub fn prepare(
    spec: &TaskSpec,
    bundle: &DatasetBundle,
    device: &Device,
) -> candle_core::Result<Prepared> {
    let cap = |n: usize| eval_cap(spec, n);
    match task_view(spec, bundle)?.as_ref() {
        Loaded::Images {
            train,
            test,
            classes,
        } => {
            let [c, h, w] = train.shape;
            let n_eval = cap(test.len());
            let (train_x, train_y) = images_to_tensors(spec, train, train.len(), device)?;
            let (eval_x, eval_y) = images_to_tensors(spec, test, n_eval, device)?;
            Ok(Prepared {
                train_x,
                train_y,
                n_train: train.len(),
                eval_x,
                eval_y,
                n_eval,
                eval_predictions: n_eval,
                input: InputShape::Image { c, h, w },
                classes: *classes,
                chance: majority_rate(test.labels[..n_eval].iter().map(|&l| l as u32), *classes),
            })
        }
        Loaded::Text(text) => {
            let Some(context) = spec.model.context() else {
                candle_core::bail!("text data needs a token model");
            };
            let vocab = text.vocab.len();
            let (train_x, train_y, n_train) =
                text_windows(&text.train, context, usize::MAX, device)?;
            let (eval_x, eval_y, n_eval) =
                text_windows(&text.test, context, cap(usize::MAX), device)?;
            let targets = text.test[1..=n_eval * context].iter().copied();
            let chance = match spec.metric {
                Metric::HeldOutLoss => unigram_entropy_nats(targets, vocab),
                _ => majority_rate(targets, vocab),
            };
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

/// Non-overlapping windows of `context + 1` ids, at most `max` of them: inputs are the first
/// `context` ids of each, targets the same window shifted by one. Returns (x, y, windows).
/// How many of `n` held-out samples (text: windows) a task evaluates on.
pub fn eval_cap(spec: &TaskSpec, n: usize) -> usize {
    spec.train.eval_max_samples.map_or(n, |m| m.min(n))
}

/// The number of non-overlapping windows of `context + 1` ids in `len` ids.
pub fn window_count(len: usize, context: usize) -> usize {
    len.saturating_sub(1) / context.max(1)
}

pub fn text_windows(
    ids: &[u32],
    context: usize,
    max: usize,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor, usize)> {
    let n = window_count(ids.len(), context).min(max);
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
}

/// Entropy in nats of the empirical distribution of `ids`: the held-out loss of the best model
/// that ignores context (the chance level of a loss metric).
pub fn unigram_entropy_nats(ids: impl Iterator<Item = u32>, vocab: usize) -> f64 {
    let (counts, n) = histogram(ids, vocab);
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n.max(1) as f64;
            -p * p.ln()
        })
        .sum()
}

/// Counts per id below `k` (ids at or above `k` are counted in the total only) and the total.
fn histogram(ids: impl Iterator<Item = u32>, k: usize) -> (Vec<usize>, usize) {
    let mut counts = vec![0usize; k.max(1)];
    let mut n = 0usize;
    for i in ids {
        if let Some(c) = counts.get_mut(i as usize) {
            *c += 1;
        }
        n += 1;
    }
    (counts, n)
}

/// Share of the most frequent class: the chance level c of docs/design/measurement.md section 1.
pub fn majority_rate(labels: impl Iterator<Item = u32>, classes: usize) -> f64 {
    let (counts, n) = histogram(labels, classes);
    if n == 0 {
        return 0.0;
    }
    *counts.iter().max().unwrap_or(&0) as f64 / n as f64
}
