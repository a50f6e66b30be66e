//! A task's data as the training loop takes it: the loaded dataset through the task's data
//! view, as device tensors (`prepare`), text cut into context windows, and the figures of the
//! data a task's chance level is judged by (majority class, unigram entropy).
//!
//! Owns: host data to device tensors, before any window opens.
//! Must not: train, evaluate or measure (`train.rs`).

use crate::data::{unit_pixel, DatasetBundle, ImageSet, Loaded};
use crate::engine::model::InputShape;
use crate::spec::task::{Metric, TaskSpec};
use candle_core::{Device, Tensor};

/// Device-resident train and eval tensors of one task.
pub struct Prepared {
    pub train_x: Inputs,
    pub train_y: Tensor,
    pub n_train: usize,
    pub eval_x: Inputs,
    pub eval_y: Tensor,
    pub n_eval: usize,
    /// Individual predictions scored per eval (text: windows x context).
    pub eval_predictions: usize,
    pub input: InputShape,
    pub classes: usize,
    /// Majority-class rate of the eval targets actually used.
    pub chance: f64,
}

/// Model inputs as the device holds them. Images whose pixels are all `b / 255` for a byte `b`
/// (every shipped image dataset, as its loader scales it) are held as those bytes, a quarter
/// of f32's memory, beside the table of the 256 standardised values: a batch is looked up in
/// the table as it is taken, giving exactly the f32 values that standardising every image on
/// the host gave (the table is computed by the same expression). Other inputs (tokens,
/// synthetic and random images) are held as the model eats them.
#[derive(Clone, Debug)]
pub struct Inputs {
    held: Tensor,
    /// Byte-held images: the standardised value of each byte, f32 (256).
    table: Option<Tensor>,
}

impl Inputs {
    /// Inputs held as the model eats them.
    pub fn plain(x: Tensor) -> Self {
        Self {
            held: x,
            table: None,
        }
    }

    /// The rows `idx` (along `dim`), as the model eats them.
    pub fn index_select(&self, idx: &Tensor, dim: usize) -> candle_core::Result<Tensor> {
        self.lookup(self.held.index_select(idx, dim)?)
    }

    /// `len` entries from `start` along `dim`, as the model eats them.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> candle_core::Result<Tensor> {
        self.lookup(self.held.narrow(dim, start, len)?)
    }

    pub fn device(&self) -> &Device {
        self.held.device()
    }

    /// Bytes the device holds for these inputs (the table included).
    pub fn held_bytes(&self) -> usize {
        let size = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        size(&self.held) + self.table.as_ref().map_or(0, size)
    }

    fn lookup(&self, x: Tensor) -> candle_core::Result<Tensor> {
        match &self.table {
            None => Ok(x),
            Some(table) => {
                let shape = x.shape().clone();
                // As u32: candle's index_select reads an index equal to its type's maximum
                // (u8 255, a white pixel) as "no row" and writes 0.
                let codes = x.flatten_all()?.to_dtype(candle_core::DType::U32)?;
                table.index_select(&codes, 0)?.reshape(shape)
            }
        }
    }
}

/// Each pixel's byte `b` where every pixel is exactly `unit_pixel(b)`, as the loaders
/// compute it.
fn pixel_bytes(px: &[f32]) -> Option<Vec<u8>> {
    px.iter()
        .map(|&p| {
            let b = (p * 255.0).round();
            let byte = b as u8;
            ((0.0..=255.0).contains(&b) && unit_pixel(byte) == p).then_some(byte)
        })
        .collect()
}

/// A pixel as the model eats it: `(p - mean) / sd`. The one expression both ways of holding
/// images use, so byte-held images reach the model with the same bits.
fn standardise(p: f32, (mean, sd): (f32, f32)) -> f32 {
    (p - mean) / sd
}

/// The first `n` labels as a `u32` tensor.
fn labels_tensor(set: &ImageSet, n: usize, device: &Device) -> candle_core::Result<Tensor> {
    let y: Vec<u32> = set.labels[..n].iter().map(|&l| l as u32).collect();
    Tensor::from_vec(y, n, device)
}

/// The task's declared input mean and sd (0 and 1 when it declares none).
fn input_standardisation(spec: &TaskSpec) -> (f32, f32) {
    match (spec.train.input_mean, spec.train.input_sd) {
        (Some(m), Some(s)) => (m as f32, s as f32),
        _ => (0.0, 1.0),
    }
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
    let ms = input_standardisation(spec);
    let x: Vec<f32> = set.images[..n * c * h * w]
        .iter()
        .map(|&p| standardise(p, ms))
        .collect();
    Ok((
        Tensor::from_vec(x, (n, c, h, w), device)?,
        labels_tensor(set, n, device)?,
    ))
}

/// [`images_to_tensors`] held as bytes where the pixels allow it ([`Inputs`]): the same
/// values reach the model, in a quarter of the device memory.
pub fn images_to_inputs(
    spec: &TaskSpec,
    set: &ImageSet,
    n: usize,
    device: &Device,
) -> candle_core::Result<(Inputs, Tensor)> {
    let [c, h, w] = set.shape;
    let Some(bytes) = pixel_bytes(&set.images[..n * c * h * w]) else {
        let (x, y) = images_to_tensors(spec, set, n, device)?;
        return Ok((Inputs::plain(x), y));
    };
    let ms = input_standardisation(spec);
    let table: Vec<f32> = (0..=255u8)
        .map(|b| standardise(unit_pixel(b), ms))
        .collect();
    Ok((
        Inputs {
            held: Tensor::from_vec(bytes, (n, c, h, w), device)?,
            table: Some(Tensor::from_vec(table, 256, device)?),
        },
        labels_tensor(set, n, device)?,
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
            let (train_x, train_y) = images_to_inputs(spec, train, train.len(), device)?;
            let (eval_x, eval_y) = images_to_inputs(spec, test, n_eval, device)?;
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
                train_x: Inputs::plain(train_x),
                train_y,
                n_train,
                eval_x: Inputs::plain(eval_x),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::task::{default_models_dir, find};

    fn set(images: Vec<f32>, n: usize) -> ImageSet {
        ImageSet {
            images,
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
            shape: [1, 4, 5],
        }
    }

    /// Byte-held images give the model exactly (bit for bit) the values of standardising
    /// every image on the host, through both ways of taking rows; images that are not all
    /// `b / 255` are held as f32.
    #[test]
    fn byte_held_images_reach_the_model_bit_for_bit() {
        let spec = find(&default_models_dir(), "fashion-resnet").unwrap();
        assert!(spec.train.input_mean.is_some(), "a task that standardises");
        let n = 7;
        let bytes: Vec<f32> = (0..n * 20)
            .map(|i| f32::from((i * 37 % 256) as u8) / 255.0)
            .collect();
        let s = set(bytes, n);
        let dev = Device::Cpu;
        let (plain, py) = images_to_tensors(&spec, &s, n, &dev).unwrap();
        let (held, hy) = images_to_inputs(&spec, &s, n, &dev).unwrap();
        assert!(
            held.table.is_some(),
            "every pixel is b / 255: held as bytes"
        );
        assert_eq!(held.held_bytes(), n * 20 + 256 * 4);
        let bits = |t: &Tensor| -> Vec<u32> {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        let idx = Tensor::new(&[3u32, 0, 6, 3], &dev).unwrap();
        let want = plain.index_select(&idx, 0).unwrap();
        let got = held.index_select(&idx, 0).unwrap();
        assert_eq!(got.dims(), want.dims());
        assert_eq!(bits(&got), bits(&want));
        assert_eq!(
            bits(&held.narrow(0, 2, 4).unwrap()),
            bits(&plain.narrow(0, 2, 4).unwrap())
        );
        assert_eq!(py.to_vec1::<u32>().unwrap(), hy.to_vec1::<u32>().unwrap());

        // One pixel off the byte grid (a synthetic image): held as the f32 values themselves.
        let mut odd = s.images.clone();
        odd[5] += 1e-3;
        let (held, _) = images_to_inputs(&spec, &set(odd.clone(), n), n, &dev).unwrap();
        assert!(held.table.is_none());
        let (plain, _) = images_to_tensors(&spec, &set(odd, n), n, &dev).unwrap();
        assert_eq!(bits(&held.narrow(0, 0, n).unwrap()), bits(&plain));
    }
}
