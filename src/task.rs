//! Reference tasks: the declarative specs in `models/*.toml` and their validation.
//!
//! Owns: parsing and validating a task file into a `TaskSpec` (model, dataset, batch size,
//! optimizer with every hyperparameter, eval cadence, target T, chance c, budget).
//! Must not: load data or build tensors (`prepare` and `model` do that).

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// Top-1 accuracy of the class prediction on the held-out set.
    Accuracy,
    /// Top-1 accuracy of the next character, averaged over every position of held-out text.
    NextCharAccuracy,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::NextCharAccuracy => "next-char-accuracy",
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
}

impl ModelSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            ModelSpec::Mlp { .. } => "mlp",
            ModelSpec::Cnn { .. } => "cnn",
            ModelSpec::CharTransformer { .. } => "char-transformer",
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
    },
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
    spec.validate().map_err(malformed)?;
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
    pub fn validate(&self) -> Result<(), String> {
        let t = &self.target;
        if !(t.value > 0.0 && t.value <= 1.0) {
            return Err(format!(
                "key 'target.value' must be in (0, 1], got {}",
                t.value
            ));
        }
        if !(0.0..1.0).contains(&t.chance) || t.chance >= t.value {
            return Err(format!(
                "key 'target.chance' must be in [0, target.value), got {}",
                t.chance
            ));
        }
        if self.train.batch_size == 0 {
            return Err("key 'train.batch_size' must be at least 1".into());
        }
        if self.train.eval_every_steps == 0 {
            return Err("key 'train.eval_every_steps' must be at least 1".into());
        }
        match (self.train.input_mean, self.train.input_sd) {
            (None, None) => {}
            (Some(m), Some(sd)) if m.is_finite() && sd.is_finite() && sd > 0.0 => {}
            _ => {
                return Err(
                    "keys 'train.input_mean' and 'train.input_sd' go together, with input_sd > 0"
                        .into(),
                )
            }
        }
        if self.budget.max_epochs == 0 {
            return Err("key 'budget.max_epochs' must be at least 1".into());
        }
        let OptimizerSpec::Adamw {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.optimizer;
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(format!("key 'optimizer.lr' must be positive, got {lr}"));
        }
        if !((0.0..1.0).contains(&beta1) && (0.0..1.0).contains(&beta2)) {
            return Err("keys 'optimizer.beta1' and 'optimizer.beta2' must be in [0, 1)".into());
        }
        if eps.is_nan() || eps <= 0.0 || weight_decay < 0.0 {
            return Err("key 'optimizer.eps' must be > 0 and 'weight_decay' >= 0".into());
        }
        let text = matches!(self.model, ModelSpec::CharTransformer { .. });
        if text != (self.dataset == DatasetKind::Text) {
            return Err(format!(
                "key 'model.kind' = '{}' does not fit key 'dataset' = '{}'",
                self.model.kind(),
                self.dataset.as_str()
            ));
        }
        match &self.model {
            ModelSpec::Mlp { hidden } if hidden.contains(&0) => {
                Err("key 'model.hidden' has a zero-width layer".into())
            }
            ModelSpec::Cnn {
                channels, kernel, ..
            } if channels.contains(&0) || *kernel == 0 || *kernel % 2 == 0 => {
                Err("key 'model.kernel' must be odd and 'model.channels' non-zero".into())
            }
            ModelSpec::CharTransformer { d_model, heads, .. }
                if *heads == 0 || d_model % heads != 0 =>
            {
                Err(format!(
                    "key 'model.heads' ({heads}) must divide 'model.d_model' ({d_model})"
                ))
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
    fn shipped_tasks_all_parse() {
        let tasks = load_all(&default_models_dir()).unwrap();
        let names: Vec<_> = tasks.iter().map(|t| t.name.as_str()).collect();
        for want in ["digits-mlp", "mnist-cnn", "mnist-mlp", "text-charlm"] {
            assert!(names.contains(&want), "{names:?}");
        }
    }
}
