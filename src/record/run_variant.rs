//! A run file's `variant` object: the variant asked for and what the run did with it (the
//! starting weights of a fine-tune and their energy, the precision record, the loss scale,
//! the pruning schedule and the synthetic data as made).

use crate::measure::system::Software;
use crate::record::setup::DatasetInfo;
use crate::spec::precision::PrecisionReport;
use crate::spec::task::ModelSpec;
use crate::spec::variant::Variant;
use serde::{Deserialize, Serialize};

/// A run file's `variant` object: the variant the run was asked for (`spec::variant::Variant`,
/// whose fields come first, flattened) and what the run did with it. The run-level fields are
/// absent for a run that has none, so a baseline's object is the spec's alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunVariant {
    #[serde(flatten)]
    pub spec: Variant,
    /// Where the fine-tune's starting weights came from, with the energy that made them.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::record::sorted_keys"
    )]
    pub checkpoint: Option<StartingWeights>,
    /// The pruning as executed (steps, sparsities, kept units) and the energy of its parts.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::record::sorted_keys"
    )]
    pub pruning_schedule: Option<PruningReport>,
    /// Per op class, the dtype requested, the dtype the arithmetic ran in and whether that was
    /// native (non-f32 precisions); older run files hold a flat `op -> dtype` map, read as
    /// `basis: unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision_report: Option<PrecisionReport>,
    /// The dynamic loss scale of an f16 run (trace summary, skipped steps).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::record::sorted_keys"
    )]
    pub loss_scale: Option<ScaleSummary>,
    /// How the synthetic (or blended) training set was made (generator, counts, fit and
    /// sample FLOPs), or the throughput track's figures for random data.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::record::sorted_keys"
    )]
    pub synthetic: Option<DataReport>,
}

impl From<Variant> for RunVariant {
    fn from(spec: Variant) -> Self {
        RunVariant {
            spec,
            checkpoint: None,
            pruning_schedule: None,
            precision_report: None,
            loss_scale: None,
            synthetic: None,
        }
    }
}

impl std::ops::Deref for RunVariant {
    type Target = Variant;
    fn deref(&self) -> &Variant {
        &self.spec
    }
}

/// `variant.checkpoint`: the weights a fine-tune started from and the energy accounting
/// that follows from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartingWeights {
    #[serde(flatten)]
    pub source: WeightsSource,
    /// This run's measured window.
    pub incremental_energy_j: f64,
    /// This run plus the energy that produced the weights (itself cumulative for a fine-tune
    /// of a fine-tune); null when that energy is unknown (external weights).
    pub cumulative_energy_j: Option<f64>,
}

impl StartingWeights {
    /// The account of a run of `run_j` joules that started from `source`.
    pub fn after(source: WeightsSource, run_j: f64) -> StartingWeights {
        let upstream = match &source.origin {
            WeightsOrigin::Harness(h) => {
                Some(h.energy.cumulative_energy_j.unwrap_or(h.energy.energy_j))
            }
            WeightsOrigin::External { .. } => None,
        };
        StartingWeights {
            source,
            incremental_energy_j: run_j,
            cumulative_energy_j: upstream.map(|u| u + run_j),
        }
    }
}

/// Which file the weights were read from and who made them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsSource {
    pub path: String,
    /// Lowercase hex SHA-256 of the weights file.
    pub sha256: String,
    #[serde(flatten)]
    pub origin: WeightsOrigin,
}

/// `origin`: `harness` (a joulebench run made the weights; its sidecar says which and at
/// what energy) or `external` (no sidecar: the energy that made them is unknown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "origin", rename_all = "lowercase")]
pub enum WeightsOrigin {
    Harness(Box<HarnessWeights>),
    External { note: String },
}

/// What a joulebench checkpoint's sidecar says about the run that made the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HarnessWeights {
    pub source_run_id: String,
    pub source_task: String,
    pub source_variant: String,
    pub source_seed: u64,
    pub source_status: String,
    pub source_final_quality: Option<f64>,
    pub source_code: Software,
    pub source_dataset: DatasetInfo,
    pub energy: CheckpointEnergy,
}

/// The energy that produced a checkpoint, with its boundary and sources (never mixed with
/// another boundary without saying so).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointEnergy {
    /// The measured window of the run that wrote the checkpoint.
    pub energy_j: f64,
    /// `energy_j` plus the energy of the checkpoint that run itself started from, when known
    /// (a fine-tune of a fine-tune); null when an upstream checkpoint was external.
    pub cumulative_energy_j: Option<f64>,
    pub boundary: String,
    pub sources: Vec<String>,
    pub all_measured: bool,
    pub meter: String,
    pub flags: Vec<String>,
}

/// The dynamic loss scale of an f16 run: its settings, range, what it did and its trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleSummary {
    pub initial: f64,
    #[serde(rename = "final")]
    pub final_scale: f64,
    pub min: f64,
    pub max: f64,
    pub growth_interval: usize,
    pub backoff_factor: f64,
    pub growth_factor: f64,
    pub skipped_steps: usize,
    pub backoffs: usize,
    pub growths: usize,
    /// Every change as [step, new scale] (first 256).
    pub trace: Vec<(usize, f64)>,
}

/// `variant.pruning_schedule`: the pruning as executed and the energy of its parts (the
/// run's energy is the whole pipeline: dense training, pruning, recovery).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruningReport {
    #[serde(flatten)]
    pub method: PruningMethod,
    /// Energy of the dense training before pruning (phase `dense-train`).
    pub dense_train_j: f64,
    /// Energy of pruning and recovery alone (phases `prune` and `recover`), same boundary
    /// and sources as the run's.
    pub prune_and_recover_j: f64,
    pub energy_note: String,
}

/// What the pruning did, by method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PruningMethod {
    Gradual(GradualPruning),
    Structured(StructuredPruning),
    /// The dense model never reached T, so nothing was pruned: `kind` and why.
    Skipped {
        kind: String,
        skipped: String,
    },
}

/// Unstructured global magnitude pruning on a cubic schedule, masks kept after every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradualPruning {
    pub kind: String,
    /// The schedule's formula, in words.
    pub schedule: String,
    pub final_sparsity: f64,
    pub achieved_sparsity: f64,
    pub updates: usize,
    pub every_steps: usize,
    pub start_step: usize,
    pub end_step: usize,
    pub masks_reapplied: String,
    pub prunable_weights: Vec<PrunableWeight>,
    pub history: Vec<PruneUpdate>,
}

/// One prunable weight and how many of its elements are zero at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrunableWeight {
    pub name: String,
    pub elems: usize,
    pub zeros: usize,
}

/// One update of the schedule: the stage's step, the sparsity aimed at and reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneUpdate {
    pub stage_step: usize,
    pub target: f64,
    pub achieved: f64,
}

/// Whole units removed in one shot, then a smaller dense model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StructuredPruning {
    pub kind: String,
    pub fraction_removed_per_layer: f64,
    pub layers: Vec<RemovedUnits>,
    pub parameters_before: usize,
    pub parameters_after: usize,
    pub parameter_sparsity: f64,
    /// The smaller model the run continued with.
    pub spec_after: ModelSpec,
    /// The optimizer step at which the units were removed.
    pub prune_step: usize,
}

/// The units of one layer before and after structured pruning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemovedUnits {
    pub layer: String,
    /// `head`, `hidden unit`, `channel`; absent for an MLP's or CNN's plain layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    pub units_before: usize,
    pub units_after: usize,
}

/// `variant.synthetic`: how a synthetic or blended training set was made, or, for random
/// data, the throughput track's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DataReport {
    Generated(GeneratedData),
    Throughput(ThroughputTrack),
}

/// A generator fitted to the real training set and sampled inside the measured window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratedData {
    pub generator: String,
    /// The generator's hyperparameters, one line.
    pub generator_detail: String,
    pub real_fraction: f64,
    #[serde(flatten)]
    pub amount: GeneratedAmount,
    pub fit_flops: f64,
    pub sample_flops: f64,
    pub note: String,
}

/// How much of the training set is real and how much generated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GeneratedAmount {
    Images {
        real_samples: usize,
        synthetic_samples: usize,
    },
    Text {
        real_characters: usize,
        synthetic_characters: usize,
    },
}

/// Random inputs and labels, one pass of the training set's size, no evals: J/sample and
/// J/step only, never ETT or JPP, never ranked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThroughputTrack {
    pub track: String,
    pub samples: usize,
    pub steps: usize,
    pub j_per_sample: f64,
    pub j_per_step: f64,
    pub note: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn external(path: &str) -> WeightsSource {
        WeightsSource {
            path: path.into(),
            sha256: "ab".into(),
            origin: WeightsOrigin::External {
                note: "unknown".into(),
            },
        }
    }

    fn harness(energy_j: f64, cumulative_energy_j: Option<f64>) -> WeightsSource {
        WeightsSource {
            path: "c.safetensors".into(),
            sha256: "cd".into(),
            origin: WeightsOrigin::Harness(Box::new(HarnessWeights {
                source_run_id: "r".into(),
                source_task: "text-charlm".into(),
                source_variant: "f32".into(),
                source_seed: 1,
                source_status: "ok".into(),
                source_final_quality: Some(1.9),
                source_code: crate::measure::system::software(),
                source_dataset: DatasetInfo::default(),
                energy: CheckpointEnergy {
                    energy_j,
                    cumulative_energy_j,
                    boundary: "H".into(),
                    sources: vec!["estimated_tdp_load".into()],
                    all_measured: false,
                    meter: "estimate".into(),
                    flags: vec![],
                },
            })),
        }
    }

    /// A run file's `variant` object is the spec's fields, in their order, then the run-level
    /// ones; a baseline has only the spec's; both read back to what was written.
    #[test]
    fn a_run_variant_is_the_spec_then_what_the_run_did() {
        let spec = crate::spec::variant::baseline();
        let plain = RunVariant::from(spec.clone());
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            serde_json::to_string(&spec).unwrap()
        );
        let mut ran = RunVariant::from(spec);
        ran.synthetic = Some(DataReport::Throughput(ThroughputTrack {
            track: "throughput".into(),
            samples: 2,
            steps: 1,
            j_per_sample: 0.5,
            j_per_step: 1.0,
            note: String::new(),
        }));
        ran.checkpoint = Some(StartingWeights::after(external("a.safetensors"), 5.0));
        let text = serde_json::to_string(&ran).unwrap();
        let keys: Vec<&str> = text
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|k| ["name", "data", "checkpoint", "synthetic"].contains(k))
            .collect();
        assert_eq!(keys, ["name", "data", "checkpoint", "synthetic"], "{text}");
        // The run-level parts keep the alphabetical key order run files have always had.
        let at = |k: &str| text.find(k).unwrap();
        assert!(
            at("cumulative_energy_j") < at("incremental_energy_j"),
            "{text}"
        );
        assert!(at("incremental_energy_j") < at("\"path\""), "{text}");
        let back: RunVariant = serde_json::from_str(&text).unwrap();
        assert_eq!(back, ran);
        assert_eq!(back.name, "f32", "reads through to the spec");
    }

    /// Cumulative energy: the run's window plus what made its weights (their own cumulative
    /// figure for a fine-tune of a fine-tune); unknown for external weights.
    #[test]
    fn starting_weights_account_for_the_energy_that_made_them() {
        let w = StartingWeights::after(harness(100.0, None), 20.0);
        assert_eq!(
            (w.incremental_energy_j, w.cumulative_energy_j),
            (20.0, Some(120.0))
        );
        let w = StartingWeights::after(harness(100.0, Some(300.0)), 20.0);
        assert_eq!(w.cumulative_energy_j, Some(320.0));
        let w = StartingWeights::after(external("x"), 20.0);
        assert_eq!(w.cumulative_energy_j, None);
        let text = serde_json::to_string(&StartingWeights::after(harness(1.0, None), 2.0)).unwrap();
        assert!(
            text.starts_with(
                r#"{"path":"c.safetensors","sha256":"cd","origin":"harness","source_run_id":"r""#
            ),
            "{text}"
        );
        let back: StartingWeights = serde_json::from_str(&text).unwrap();
        assert_eq!(back, StartingWeights::after(harness(1.0, None), 2.0));
    }
}
