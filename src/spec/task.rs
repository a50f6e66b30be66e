//! Reference tasks: the declarative specs in `models/*.toml` and their validation.
//!
//! Owns: parsing and validating a task file into a `TaskSpec` (model, dataset and its derived
//! view, batch size, optimizer with every hyperparameter, eval cadence, target T, chance c,
//! budget, and the source task a fine-tune starts from).
//! Must not: load data or build tensors (`prepare` and `model` do that).

use crate::data::view::DataView;
use crate::data::DatasetKind;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("unknown task '{name}'; valid tasks: {valid}")]
    Unknown { name: String, valid: String },
    #[error("task file {path}: {message}")]
    Malformed { path: String, message: String },
    #[error("task folder {path}: {message}")]
    Folder { path: String, message: String },
}

/// A task file that parses but breaks a rule serde cannot express: the key (`target.value`;
/// the first of several when a rule ties them) and what is wrong, a message that names it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidKey {
    pub key: String,
    pub message: String,
}

impl InvalidKey {
    fn new(key: &str, message: impl Into<String>) -> Self {
        InvalidKey {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub name: String,
    pub description: String,
    pub dataset: DatasetKind,
    /// Always next-item classification accuracy in [0, 1] for the shipped tasks.
    pub metric: Metric,
    pub model: ModelSpec,
    pub optimizer: OptimizerSpec,
    pub train: TrainSpec,
    pub target: TargetSpec,
    pub budget: BudgetSpec,
    /// A derived view of the dataset (class filter, rotation, corpus part); absent: as loaded.
    #[serde(default, skip_serializing_if = "DataView::is_identity")]
    pub data: DataView,
    /// The task whose checkpoint a `finetune` variant of this task starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<FinetuneSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneSpec {
    /// Name of the source task (pretrained with `joulebench pretrain --task <source>`).
    pub source: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// Top-1 accuracy of the class prediction on the held-out set, in [0, 1], higher is better.
    Accuracy,
    /// Top-1 accuracy of the next character, averaged over every position of held-out text.
    NextCharAccuracy,
    /// Mean cross-entropy of the next character over every position of held-out text, in nats
    /// per character, lower is better; chance is the unigram entropy of the held-out targets.
    HeldOutLoss,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::NextCharAccuracy => "next-char-accuracy",
            Metric::HeldOutLoss => "held-out-loss",
        }
    }

    /// Which way the metric improves.
    pub fn direction(self) -> Direction {
        match self {
            Metric::Accuracy | Metric::NextCharAccuracy => Direction::Higher,
            Metric::HeldOutLoss => Direction::Lower,
        }
    }

    /// The metric's unit, as tables print it.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::Accuracy | Metric::NextCharAccuracy => "fraction",
            Metric::HeldOutLoss => "nats/char",
        }
    }

    /// The MLPerf key of an eval of this metric (`eval_accuracy`, `eval_loss`).
    pub fn mllog_key(self) -> &'static str {
        match self {
            Metric::Accuracy | Metric::NextCharAccuracy => "eval_accuracy",
            Metric::HeldOutLoss => "eval_loss",
        }
    }

    /// The text metrics score every position of held-out text.
    pub fn is_text(self) -> bool {
        !matches!(self, Metric::Accuracy)
    }
}

/// Which way a metric improves: accuracy is higher-is-better, a held-out loss lower-is-better.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Higher,
    Lower,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Higher => "higher",
            Direction::Lower => "lower",
        }
    }

    /// `higher is better` / `lower is better`, for table headers and captions.
    pub fn better(self) -> &'static str {
        match self {
            Direction::Higher => "higher is better",
            Direction::Lower => "lower is better",
        }
    }

    /// Whether `value` is at or beyond `target` in this direction.
    pub fn reached(self, value: f64, target: f64) -> bool {
        match self {
            Direction::Higher => value >= target,
            Direction::Lower => value <= target,
        }
    }

    /// +1 or -1: the sign that turns "beyond" into "greater".
    pub fn sign(self) -> f64 {
        match self {
            Direction::Higher => 1.0,
            Direction::Lower => -1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ModelSpec {
    /// Fully connected network on flattened inputs, ReLU between layers.
    Mlp { hidden: Vec<usize> },
    /// LeNet-class CNN: conv(k) -> ReLU -> maxpool(2), twice, then an MLP head.
    Cnn {
        channels: [usize; 2],
        kernel: usize,
        hidden: usize,
    },
    /// Decoder-only character transformer (pre-norm, causal, learned positions).
    CharTransformer {
        context: usize,
        d_model: usize,
        heads: usize,
        layers: usize,
        ff_mult: usize,
    },
    /// nanoGPT's GPT: the same decoder with no biases, the token embedding tied to the head,
    /// N(0, 0.02) weights (residual projections 0.02 / sqrt(2 layers)) and dropout.
    Gpt {
        context: usize,
        d_model: usize,
        heads: usize,
        layers: usize,
        ff_mult: usize,
        /// Dropout probability after the embeddings, on the attention weights and on each
        /// residual branch, in training only.
        #[serde(default)]
        dropout: f64,
        /// Attention heads kept per layer after structured pruning (absent: `heads`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kept_heads: Option<usize>,
        /// MLP hidden units per layer after structured pruning (absent: `ff_mult * d_model`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ff_hidden: Option<usize>,
    },
    /// He et al.'s CIFAR ResNet: a 3x3 stem, three stages of `blocks` basic residual blocks
    /// (batch norm, stride 2 and a 1x1 projection at the start of stages 2 and 3), global
    /// average pooling, a linear classifier.
    Resnet {
        channels: [usize; 3],
        blocks: usize,
        /// Inner width of each stage's blocks after structured pruning (absent: `channels`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        inner: Option<[usize; 3]>,
    },
}

impl ModelSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            ModelSpec::Mlp { .. } => "mlp",
            ModelSpec::Cnn { .. } => "cnn",
            ModelSpec::CharTransformer { .. } => "char-transformer",
            ModelSpec::Gpt { .. } => "gpt",
            ModelSpec::Resnet { .. } => "resnet",
        }
    }

    /// The context length of a token model; None for the image models.
    pub fn context(&self) -> Option<usize> {
        match self {
            ModelSpec::CharTransformer { context, .. } | ModelSpec::Gpt { context, .. } => {
                Some(*context)
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum OptimizerSpec {
    Adamw {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
        /// Which parameters decay: all (default) or matrices only (nanoGPT's rule: parameters
        /// of two or more dimensions; biases and norm weights get none).
        #[serde(default, skip_serializing_if = "Decay::is_all")]
        decay: Decay,
        /// The learning-rate schedule (default constant).
        #[serde(default, skip_serializing_if = "Schedule::is_constant")]
        schedule: Schedule,
        /// Linear learning-rate warm-up steps of the cosine schedule (optimizer steps, measured;
        /// not `train.warmup_steps`, the unmeasured kernel warm-up).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lr_warmup_steps: Option<usize>,
        /// The cosine schedule's final learning rate.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_lr: Option<f64>,
        /// The step at which the cosine reaches `min_lr` (default: the budget's steps).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decay_steps: Option<usize>,
        /// Clip the global L2 norm of the gradients to this before each step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clip_grad_norm: Option<f64>,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decay {
    #[default]
    All,
    Matrices,
}

impl Decay {
    fn is_all(&self) -> bool {
        *self == Decay::All
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    #[default]
    Constant,
    /// nanoGPT's: linear warm-up, then half a cosine from `lr` to `min_lr`, then `min_lr`.
    Cosine,
}

impl Schedule {
    fn is_constant(&self) -> bool {
        *self == Schedule::Constant
    }
}

impl OptimizerSpec {
    /// Whether the learning rate changes during a run.
    pub fn scheduled(&self) -> bool {
        let OptimizerSpec::Adamw { schedule, .. } = self;
        *schedule != Schedule::Constant
    }

    pub fn clip_grad_norm(&self) -> Option<f64> {
        let OptimizerSpec::Adamw { clip_grad_norm, .. } = self;
        *clip_grad_norm
    }
}

/// The learning rate of the optimizer step with 0-based index `it` (nanoGPT's `get_lr`):
/// `lr (it + 1) / (warmup + 1)` during warm-up, then a half cosine from `lr` down to `min_lr` at
/// `decay_steps`, then `min_lr`. Constant schedule: `lr`.
pub fn lr_at(spec: &OptimizerSpec, it: usize, budget_steps: usize) -> f64 {
    let OptimizerSpec::Adamw {
        lr,
        schedule,
        lr_warmup_steps,
        min_lr,
        decay_steps,
        ..
    } = *spec;
    if schedule == Schedule::Constant {
        return lr;
    }
    let warmup = lr_warmup_steps.unwrap_or(0);
    let min_lr = min_lr.unwrap_or(lr);
    let decay = decay_steps.unwrap_or(budget_steps).max(warmup);
    if it < warmup {
        return lr * (it + 1) as f64 / (warmup + 1) as f64;
    }
    if it > decay {
        return min_lr;
    }
    let ratio = if decay > warmup {
        (it - warmup) as f64 / (decay - warmup) as f64
    } else {
        1.0
    };
    let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
    min_lr + coeff * (lr - min_lr)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    pub batch_size: usize,
    /// Evaluate the held-out set every this many optimizer steps (and at the end).
    pub eval_every_steps: usize,
    /// Evaluate on at most this many held-out samples (text: windows); all when absent.
    #[serde(default)]
    pub eval_max_samples: Option<usize>,
    /// Warm-up steps (forward + backward, no update) before `run_start`, not measured.
    #[serde(default = "default_warmup")]
    pub warmup_steps: usize,
    /// Image inputs are fed as (x - input_mean) / input_sd, x in [0, 1]. Declared constants
    /// (with their origin in the task file), never computed from the data at run time, so a
    /// run on synthetic data never reads the real training set to normalise.
    #[serde(default)]
    pub input_mean: Option<f64>,
    #[serde(default)]
    pub input_sd: Option<f64>,
    /// Training images only: a random crop of the image zero-padded (black) by this many
    /// pixels, per sample from the run's seeded augmentation stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment_crop_pad: Option<usize>,
    /// Training images only: a horizontal flip with probability 1/2 per sample.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub augment_hflip: bool,
}

impl TrainSpec {
    /// Whether training batches are augmented.
    pub fn augments(&self) -> bool {
        self.augment_crop_pad.is_some_and(|p| p > 0) || self.augment_hflip
    }
}

fn default_warmup() -> usize {
    3
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// Target quality T in [0, 1].
    pub value: f64,
    /// Chance level c of the shipped eval set (majority-class rate); recomputed from the data
    /// actually loaded, this is what the shipped data gives and is checked by a test.
    pub chance: f64,
    /// How T was chosen (points at the committed curves).
    pub how_chosen: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    pub max_epochs: usize,
    #[serde(default)]
    pub max_steps: Option<usize>,
    #[serde(default)]
    pub max_energy_j: Option<f64>,
    #[serde(default)]
    pub max_time_s: Option<f64>,
    /// Energy at which quality within a budget (Q@E) is read off every run's curve, for
    /// variants that never reach T; defaults to `max_energy_j`. Does not stop a run.
    #[serde(default)]
    pub q_at_energy_j: Option<f64>,
}

impl BudgetSpec {
    /// The optimizer steps the budget allows with `steps_per_epoch` batches an epoch:
    /// `max_epochs` epochs, or `max_steps` when fewer.
    pub fn steps(&self, steps_per_epoch: usize) -> usize {
        self.max_steps
            .unwrap_or(usize::MAX)
            .min(self.max_epochs.saturating_mul(steps_per_epoch))
    }
}

/// The shipped task folder: `$JOULEBENCH_MODELS`, else `<crate>/models`, else `./models`.
pub fn default_models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("JOULEBENCH_MODELS") {
        return PathBuf::from(d);
    }
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    if shipped.is_dir() {
        shipped
    } else {
        PathBuf::from("models")
    }
}

/// Byte offset to "line L, column C" for error messages.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let upto = &text[..offset.min(text.len())];
    let line = upto.matches('\n').count() + 1;
    let col = upto.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Parse one task file. Errors name the file, the line and the key.
pub fn parse_task(path: &Path, text: &str) -> Result<TaskSpec, TaskError> {
    let malformed = |message: String| TaskError::Malformed {
        path: path.display().to_string(),
        message,
    };
    let spec: TaskSpec = toml::from_str(text).map_err(|e| {
        let msg = e.message().replace('\n', " ");
        match e.span() {
            Some(span) => {
                let (l, c) = line_col(text, span.start);
                malformed(format!("line {l}, column {c}: {msg}"))
            }
            None => malformed(msg),
        }
    })?;
    spec.validate().map_err(|e| malformed(e.to_string()))?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if stem != spec.name {
        return Err(malformed(format!(
            "key 'name' is '{}' but the file is named '{stem}.toml'",
            spec.name
        )));
    }
    Ok(spec)
}

impl TaskSpec {
    /// Semantic checks serde cannot express; the message names the key.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        let t = &self.target;
        match self.metric.direction() {
            Direction::Higher => {
                if !(t.value > 0.0 && t.value <= 1.0) {
                    return Err(InvalidKey::new(
                        "target.value",
                        format!("key 'target.value' must be in (0, 1], got {}", t.value),
                    ));
                }
                if !(0.0..1.0).contains(&t.chance) || t.chance >= t.value {
                    return Err(InvalidKey::new(
                        "target.chance",
                        format!(
                            "key 'target.chance' must be in [0, target.value), got {}",
                            t.chance
                        ),
                    ));
                }
            }
            Direction::Lower => {
                if !(t.value > 0.0 && t.value.is_finite()) {
                    return Err(InvalidKey::new(
                        "target.value",
                        format!(
                            "key 'target.value' must be a positive loss in {}, got {}",
                            self.metric.unit(),
                            t.value
                        ),
                    ));
                }
                if !(t.chance.is_finite() && t.chance > t.value) {
                    return Err(InvalidKey::new("target.value", format!(
                        "key 'target.value' ({}) must be below 'target.chance' ({}): {} is lower-is-better and the target must improve on chance",
                        t.value,
                        t.chance,
                        self.metric.as_str()
                    )));
                }
            }
        }
        if self.metric.is_text() != self.dataset.is_text() {
            return Err(InvalidKey::new(
                "metric",
                format!(
                    "key 'metric' = '{}' does not fit key 'dataset' = '{}'",
                    self.metric.as_str(),
                    self.dataset.as_str()
                ),
            ));
        }
        if let Some(p) = self.train.augment_crop_pad {
            if self.dataset.is_text() || p > 16 {
                return Err(InvalidKey::new("train.augment_crop_pad", format!(
                    "key 'train.augment_crop_pad' applies to image datasets, at most 16 pixels, got {p}"
                )));
            }
        }
        if self.train.augment_hflip && self.dataset.is_text() {
            return Err(InvalidKey::new(
                "train.augment_hflip",
                "key 'train.augment_hflip' applies to image datasets only",
            ));
        }
        if self.train.batch_size == 0 {
            return Err(InvalidKey::new(
                "train.batch_size",
                "key 'train.batch_size' must be at least 1",
            ));
        }
        if self.train.eval_every_steps == 0 {
            return Err(InvalidKey::new(
                "train.eval_every_steps",
                "key 'train.eval_every_steps' must be at least 1",
            ));
        }
        match (self.train.input_mean, self.train.input_sd) {
            (None, None) => {}
            (Some(m), Some(sd)) if m.is_finite() && sd.is_finite() && sd > 0.0 => {}
            _ => {
                return Err(InvalidKey::new(
                    "train.input_mean",
                    "keys 'train.input_mean' and 'train.input_sd' go together, with input_sd > 0",
                ))
            }
        }
        if self.budget.max_epochs == 0 {
            return Err(InvalidKey::new(
                "budget.max_epochs",
                "key 'budget.max_epochs' must be at least 1",
            ));
        }
        if let Some(e) = self.budget.q_at_energy_j {
            if !(e > 0.0 && e.is_finite()) {
                return Err(InvalidKey::new(
                    "budget.q_at_energy_j",
                    format!(
                        "key 'budget.q_at_energy_j' must be a positive number of joules, got {e}"
                    ),
                ));
            }
        }
        self.data
            .validate(self.dataset.is_text(), crate::data::NUM_CLASSES)
            .map_err(|e| InvalidKey::new(&format!("data.{}", e.key()), e.to_string()))?;
        if let Some(f) = &self.finetune {
            if f.source == self.name {
                return Err(InvalidKey::new(
                    "finetune.source",
                    "key 'finetune.source' names the task itself",
                ));
            }
        }
        let OptimizerSpec::Adamw {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            schedule,
            lr_warmup_steps,
            min_lr,
            decay_steps,
            clip_grad_norm,
            ..
        } = self.optimizer;
        if schedule == Schedule::Constant
            && (lr_warmup_steps.is_some() || min_lr.is_some() || decay_steps.is_some())
        {
            return Err(InvalidKey::new("optimizer.lr_warmup_steps", "keys 'optimizer.lr_warmup_steps', 'min_lr' and 'decay_steps' need 'optimizer.schedule' = \"cosine\""));
        }
        if let Some(m) = min_lr {
            if !(m >= 0.0 && m <= lr) {
                return Err(InvalidKey::new(
                    "optimizer.min_lr",
                    format!("key 'optimizer.min_lr' must be in [0, lr], got {m}"),
                ));
            }
        }
        if let Some(c) = clip_grad_norm {
            if !(c > 0.0 && c.is_finite()) {
                return Err(InvalidKey::new(
                    "optimizer.clip_grad_norm",
                    format!("key 'optimizer.clip_grad_norm' must be positive, got {c}"),
                ));
            }
        }
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(InvalidKey::new(
                "optimizer.lr",
                format!("key 'optimizer.lr' must be positive, got {lr}"),
            ));
        }
        if !((0.0..1.0).contains(&beta1) && (0.0..1.0).contains(&beta2)) {
            return Err(InvalidKey::new(
                "optimizer.beta1",
                "keys 'optimizer.beta1' and 'optimizer.beta2' must be in [0, 1)",
            ));
        }
        if eps.is_nan() || eps <= 0.0 || weight_decay < 0.0 {
            return Err(InvalidKey::new(
                "optimizer.eps",
                "key 'optimizer.eps' must be > 0 and 'weight_decay' >= 0",
            ));
        }
        let text = self.model.context().is_some();
        if text != self.dataset.is_text() {
            return Err(InvalidKey::new(
                "model.kind",
                format!(
                    "key 'model.kind' = '{}' does not fit key 'dataset' = '{}'",
                    self.model.kind(),
                    self.dataset.as_str()
                ),
            ));
        }
        match &self.model {
            ModelSpec::Mlp { hidden } if hidden.contains(&0) => {
                Err(InvalidKey::new("model.hidden", "key 'model.hidden' has a zero-width layer"))
            }
            ModelSpec::Cnn {
                channels, kernel, ..
            } if channels.contains(&0) || *kernel == 0 || *kernel % 2 == 0 => {
                Err(InvalidKey::new("model.kernel", "key 'model.kernel' must be odd and 'model.channels' non-zero"))
            }
            ModelSpec::CharTransformer { d_model, heads, .. }
            | ModelSpec::Gpt { d_model, heads, .. }
                if *heads == 0 || d_model % heads != 0 =>
            {
                Err(InvalidKey::new("model.heads", format!(
                    "key 'model.heads' ({heads}) must divide 'model.d_model' ({d_model})"
                )))
            }
            ModelSpec::CharTransformer { context: 0, .. } | ModelSpec::Gpt { context: 0, .. } => {
                Err(InvalidKey::new("model.context", "key 'model.context' must be at least 1"))
            }
            ModelSpec::Gpt { dropout, .. } if !(0.0..1.0).contains(dropout) => Err(InvalidKey::new("model.dropout", format!(
                "key 'model.dropout' must be in [0, 1), got {dropout}"
            ))),
            ModelSpec::Gpt {
                heads,
                kept_heads: Some(k),
                ..
            } if *k == 0 || k > heads => Err(InvalidKey::new("model.kept_heads", format!(
                "key 'model.kept_heads' must be in 1..={heads}, got {k}"
            ))),
            ModelSpec::Gpt {
                ff_hidden: Some(0), ..
            } => Err(InvalidKey::new("model.ff_hidden", "key 'model.ff_hidden' must be at least 1")),
            ModelSpec::Resnet {
                channels,
                blocks,
                inner,
            } if channels.contains(&0)
                || *blocks == 0
                || *blocks > 64
                || inner.is_some_and(|i| i.contains(&0) || i.iter().zip(channels).any(|(a, b)| a > b)) =>
            {
                Err(InvalidKey::new("model.channels", "keys 'model.channels' (non-zero), 'model.blocks' (1..=64) and 'model.inner' (1..=channels) are out of range"))
            }
            _ => Ok(()),
        }
    }
}

/// All tasks of a folder, sorted by name.
pub fn load_all(dir: &Path) -> Result<Vec<TaskSpec>, TaskError> {
    let folder = |message: String| TaskError::Folder {
        path: dir.display().to_string(),
        message,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| folder(e.to_string()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && !is_suite_file(p))
        .collect();
    paths.sort();
    paths.iter().map(|p| load_file(p)).collect()
}

/// Suite files (`suite-*.toml`) live beside the tasks but are not tasks.
fn is_suite_file(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("suite-"))
}

pub fn load_file(path: &Path) -> Result<TaskSpec, TaskError> {
    let text = std::fs::read_to_string(path).map_err(|e| TaskError::Malformed {
        path: path.display().to_string(),
        message: format!("cannot read: {e}"),
    })?;
    parse_task(path, &text)
}

/// Find a task by name (or a path to a `.toml` file).
pub fn find(dir: &Path, name: &str) -> Result<TaskSpec, TaskError> {
    if name.ends_with(".toml") {
        return load_file(Path::new(name));
    }
    let path = dir.join(format!("{name}.toml"));
    if path.is_file() && !is_suite_file(&path) {
        return load_file(&path);
    }
    let valid = load_all(dir)
        .map(|ts| {
            ts.iter()
                .map(|t| t.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|e| format!("(none: {e})"));
    Err(TaskError::Unknown {
        name: name.to_string(),
        valid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
description = "d"
dataset = "digits"
metric = "accuracy"
[model]
kind = "mlp"
hidden = [32]
[optimizer]
kind = "adamw"
lr = 0.001
beta1 = 0.9
beta2 = 0.999
eps = 1e-8
weight_decay = 0.01
[train]
batch_size = 32
eval_every_steps = 10
[target]
value = 0.9
chance = 0.1
how_chosen = "x"
[budget]
max_epochs = 3
"#;

    #[test]
    fn parses_good_file() {
        let t = parse_task(Path::new("models/t.toml"), GOOD).unwrap();
        assert_eq!(t.train.warmup_steps, 3);
        assert_eq!(t.model, ModelSpec::Mlp { hidden: vec![32] });
    }

    #[test]
    fn unknown_key_names_file_key_and_line() {
        let bad = GOOD.replace("batch_size = 32", "batch_size = 32\nbatchsize = 3");
        let e = parse_task(Path::new("models/t.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("models/t.toml"), "{e}");
        assert!(e.contains("batchsize"), "{e}");
        assert!(e.contains("line 18"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn wrong_type_and_semantic_errors_name_the_key() {
        let bad = GOOD.replace("value = 0.9", "value = \"high\"");
        let e = parse_task(Path::new("t.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml") && e.contains("line"), "{e}");
        let bad = GOOD.replace("chance = 0.1", "chance = 0.95");
        let e = parse_task(Path::new("t.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("target.chance"), "{e}");
        let bad = GOOD.replace("name = \"t\"", "name = \"u\"");
        let e = parse_task(Path::new("t.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("'name'"), "{e}");
    }

    #[test]
    fn input_standardisation_keys_go_together() {
        let with = |extra: &str| {
            GOOD.replace(
                "eval_every_steps = 10",
                &format!("eval_every_steps = 10\n{extra}"),
            )
        };
        let t = parse_task(
            Path::new("t.toml"),
            &with("input_mean = 0.1\ninput_sd = 0.3"),
        )
        .unwrap();
        assert_eq!(
            (t.train.input_mean, t.train.input_sd),
            (Some(0.1), Some(0.3))
        );
        for bad in [
            "input_mean = 0.1",
            "input_sd = 0.3",
            "input_mean = 0.1\ninput_sd = 0.0",
        ] {
            let e = parse_task(Path::new("t.toml"), &with(bad))
                .unwrap_err()
                .to_string();
            assert!(e.contains("train.input_sd") && e.contains("t.toml"), "{e}");
        }
    }

    #[test]
    fn cosine_schedule_is_nanogpts() {
        let t = parse_task(
            Path::new("t.toml"),
            &GOOD.replace(
                "weight_decay = 0.01",
                "weight_decay = 0.01\nschedule = \"cosine\"\nlr_warmup_steps = 10\nmin_lr = 0.0001\ndecay_steps = 110",
            ),
        )
        .unwrap();
        let o = &t.optimizer;
        assert!(o.scheduled());
        // Warm-up: lr (it + 1) / (warmup + 1).
        assert!((lr_at(o, 0, 999) - 0.001 / 11.0).abs() < 1e-15);
        assert!((lr_at(o, 9, 999) - 0.001 * 10.0 / 11.0).abs() < 1e-15);
        // The cosine starts at lr, is halfway at the midpoint, ends at min_lr and stays there.
        assert!((lr_at(o, 10, 999) - 0.001).abs() < 1e-15);
        assert!((lr_at(o, 60, 999) - (0.0001 + 0.5 * 0.0009)).abs() < 1e-12);
        assert!((lr_at(o, 110, 999) - 0.0001).abs() < 1e-15);
        assert_eq!(lr_at(o, 5000, 999), 0.0001);
        // Constant: lr whatever the step.
        let c = parse_task(Path::new("t.toml"), GOOD).unwrap();
        assert!(!c.optimizer.scheduled());
        assert_eq!(lr_at(&c.optimizer, 77, 100), 0.001);
        // Schedule keys without the schedule are an error naming the key.
        let e = parse_task(
            Path::new("t.toml"),
            &GOOD.replace(
                "weight_decay = 0.01",
                "weight_decay = 0.01\nmin_lr = 0.0001",
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("optimizer.schedule"), "{e}");
    }

    /// A loss metric is lower-is-better: its target must lie below chance, and the metric
    /// must fit the dataset.
    #[test]
    fn loss_targets_lie_below_chance() {
        let text = |value: &str, chance: &str| {
            GOOD.replace("dataset = \"digits\"", "dataset = \"shakespeare\"")
                .replace("metric = \"accuracy\"", "metric = \"held-out-loss\"")
                .replace(
                    "kind = \"mlp\"\nhidden = [32]",
                    "kind = \"gpt\"\ncontext = 8\nd_model = 8\nheads = 2\nlayers = 1\nff_mult = 2",
                )
                .replace("value = 0.9", &format!("value = {value}"))
                .replace("chance = 0.1", &format!("chance = {chance}"))
        };
        let t = parse_task(Path::new("t.toml"), &text("1.5", "3.3")).unwrap();
        assert_eq!(t.metric.direction(), Direction::Lower);
        assert_eq!(t.metric.unit(), "nats/char");
        for (v, c) in [("3.5", "3.3"), ("3.3", "3.3"), ("-1", "3.3")] {
            let e = parse_task(Path::new("t.toml"), &text(v, c))
                .unwrap_err()
                .to_string();
            assert!(e.contains("target.value"), "{e}");
            assert!(!e.contains('\n'));
        }
        let e = parse_task(
            Path::new("t.toml"),
            &text("1.5", "3.3").replace("held-out-loss", "held-out-perplexity"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("held-out-perplexity") && e.contains("line"),
            "{e}"
        );
        let e = parse_task(
            Path::new("t.toml"),
            &text("1.5", "3.3").replace("dataset = \"shakespeare\"", "dataset = \"digits\""),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("does not fit"), "{e}");
    }

    #[test]
    fn shipped_tasks_all_parse() {
        let tasks = load_all(&default_models_dir()).unwrap();
        let names: Vec<_> = tasks.iter().map(|t| t.name.as_str()).collect();
        for want in [
            "digits-mlp",
            "mnist-cnn",
            "mnist-mlp",
            "text-charlm",
            "shakespeare-gpt",
            "shakespeare-gpt-mini",
            "fashion-resnet",
            "fashion-resnet-mini",
        ] {
            assert!(names.contains(&want), "{names:?}");
        }
    }
}
