//! What a run was set up with, as its run file records it: the model (`model`), the data it
//! trained and was scored on (`dataset`) and the settings of the series (`config`). joulebench's
//! own runs and programs run by `exec` fill them differently (a program builds its own model
//! and reads its own data), and the types say which part belongs to which.

use serde::{Deserialize, Serialize};

use crate::data::FileRecord;
use crate::record::RunVariant;
use crate::spec::task::TaskSpec;

/// `model`: the kind of model and its parameter count (unknown for a program run by `exec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// `mlp`, `cnn`, `gpt`, ... (the task's model kind), or `external` for a program with no
    /// shipped task.
    pub kind: String,
    pub parameters: Option<usize>,
    /// Why a field is unknown (`built and trained by the program, not by joulebench`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `dataset`: the data set by name and, for joulebench's own runs, the files read (with their
/// SHA-256) and the sizes of the training and held-out sets as prepared.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// The data set (`mnist`, `shakespeare`, ...); null for a program with no shipped task.
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileRecord>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_samples: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_samples: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<usize>,
    /// Why the sizes are absent (`read by the program`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `config`: the settings the run was made under, enough to make it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub task: TaskConfig,
    pub variant: RunVariant,
    pub seed: u64,
    /// `cpu`, `cuda:0`, ...
    pub device: String,
    /// False for a full-budget run (the reference curves), true when the run stopped at T.
    pub stop_at_target: bool,
    /// True when the forecast could stop the run (`run --forecast-stop`); absent when off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forecast_stop: bool,
    pub idle_s: f64,
    pub cooldown_s: f64,
    /// The meter's name (`rapl`, `nvml`, `estimate`, ...).
    pub meter: String,
    /// What only joulebench's own training or only `exec` has.
    #[serde(flatten)]
    pub engine: EngineConfig,
}

/// The task as the run saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TaskConfig {
    /// A shipped (or `--task-file`) task, in full.
    Spec(Box<TaskSpec>),
    /// An `exec` run with no shipped task: what its command line declared.
    Declared {
        name: String,
        metric: String,
        target: f64,
        chance: f64,
    },
    /// A task written by another version of joulebench whose fields this one does not know:
    /// kept as written.
    Recorded(serde_json::Value),
}

/// The part of `config` that depends on what trained the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EngineConfig {
    /// joulebench's own training: the seed streams of initialisation and batch order.
    Joulebench {
        init_seed_stream: u64,
        batch_order_seed_stream: u64,
    },
    /// A program run by `exec`: its command line (after `{seed}`) and time limits.
    Exec {
        grace_s: f64,
        time_limit_s: Option<f64>,
        command: Vec<String>,
    },
}

impl RunConfig {
    /// The training batch size, when the task is a full spec.
    pub fn batch_size(&self) -> Option<usize> {
        match &self.task {
            TaskConfig::Spec(s) => Some(s.train.batch_size),
            TaskConfig::Recorded(v) => v
                .pointer("/train/batch_size")
                .and_then(serde_json::Value::as_u64)
                .map(|n| n as usize),
            TaskConfig::Declared { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> TaskSpec {
        crate::spec::task::find(&crate::spec::task::default_models_dir(), "mnist-mlp").unwrap()
    }

    #[test]
    fn own_and_exec_configs_round_trip_as_their_kind() {
        let own = RunConfig {
            task: TaskConfig::Spec(Box::new(shipped())),
            variant: crate::spec::variant::baseline().into(),
            seed: 3,
            device: "cpu".into(),
            stop_at_target: false,
            forecast_stop: false,
            idle_s: 10.0,
            cooldown_s: 5.0,
            meter: "estimate".into(),
            engine: EngineConfig::Joulebench {
                init_seed_stream: 0,
                batch_order_seed_stream: 1,
            },
        };
        let text = serde_json::to_string(&own).unwrap();
        assert!(text.ends_with("\"init_seed_stream\":0,\"batch_order_seed_stream\":1}"));
        assert_eq!(serde_json::from_str::<RunConfig>(&text).unwrap(), own);
        assert_eq!(own.batch_size(), Some(shipped().train.batch_size));

        let exec = RunConfig {
            task: TaskConfig::Declared {
                name: "mine".into(),
                metric: "accuracy".into(),
                target: 0.9,
                chance: 0.1,
            },
            engine: EngineConfig::Exec {
                grace_s: 10.0,
                time_limit_s: None,
                command: vec!["python3".into(), "train.py".into()],
            },
            ..own
        };
        let text = serde_json::to_string(&exec).unwrap();
        assert!(text.contains("\"time_limit_s\":null"), "{text}");
        assert_eq!(serde_json::from_str::<RunConfig>(&text).unwrap(), exec);
        assert_eq!(exec.batch_size(), None);
    }

    #[test]
    fn a_task_this_version_does_not_know_is_kept_as_written() {
        let mut v = serde_json::to_value(shipped()).unwrap();
        v["retired_field"] = serde_json::json!(1);
        let t: TaskConfig = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(t, TaskConfig::Recorded(v.clone()));
        assert_eq!(serde_json::to_value(&t).unwrap(), v);
    }

    #[test]
    fn an_exec_dataset_writes_only_what_it_knows() {
        let d = DatasetInfo {
            name: None,
            note: Some("read by the program".into()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"name":null,"note":"read by the program"}"#
        );
    }

    /// Every run file committed under `results/` reads with its types: the task in full (or
    /// as an `exec` command line declared it), never the fallback for an unknown version, and
    /// the meters' provenance with no key left untyped.
    #[test]
    fn every_committed_run_file_reads_with_its_types() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    if crate::record::read::has_runs(&p) {
                        out.extend(crate::record::read::run_files(&p).unwrap());
                    }
                    walk(&p, out);
                }
            }
        }
        let mut files = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results"),
            &mut files,
        );
        assert!(files.len() > 100, "{} run files", files.len());
        for f in &files {
            let r = crate::record::read::read_run(f).unwrap();
            assert!(
                !matches!(r.config.task, TaskConfig::Recorded(_)),
                "{}",
                f.display()
            );
            let own = matches!(r.config.engine, EngineConfig::Joulebench { .. });
            assert_eq!(own, r.exec.is_none(), "{}", f.display());
            assert_eq!(own, r.dataset.train_samples.is_some(), "{}", f.display());
            // Provenance reads typed in full and writes back as the file holds it.
            assert!(r.provenance.other.is_empty(), "{}", f.display());
            let text: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
            assert_eq!(
                serde_json::to_value(&r.provenance).unwrap(),
                text["provenance"],
                "{}",
                f.display()
            );
        }
    }
}
