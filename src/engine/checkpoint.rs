//! Checkpoints for fine-tuning: the weights a pretraining run ends with, and a JSON sidecar
//! saying what produced them and at what measured energy.
//!
//! Owns: where the harness keeps checkpoints (`<results>/checkpoints/<run-id>.safetensors`, the
//! run id of the run that produced it, with `<run-id>.json` beside it), writing both
//! atomically, reading them back (the sidecar's SHA-256 of the weights must match the file),
//! and the origin a fine-tune records: `harness` (a sidecar with the energy that produced the
//! weights) or `external` (no sidecar: weights from elsewhere, energy unknown).
//! Must not: build models or train (the runner does); its errors carry the path.

use crate::measure::system::Software;
use crate::record;
use crate::record::run_variant::CheckpointEnergy;
use crate::record::run_variant::{HarnessWeights, WeightsOrigin, WeightsSource};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const SIDECAR_FORMAT: &str = "joulebench-checkpoint";
pub const SIDECAR_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path} not found: {hint}")]
    Missing { path: String, hint: String },
    #[error("checkpoint {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("checkpoint sidecar {path}: {reason}")]
    Sidecar { path: String, reason: String },
    #[error("checkpoint {path} does not fit task '{task}': {reason}")]
    Shape {
        path: String,
        task: String,
        reason: String,
    },
    #[error("writing checkpoint {path}: {reason}")]
    Write { path: String, reason: String },
}

/// `<run-id>.json` beside the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    pub format: String,
    pub format_version: u32,
    pub run_id: String,
    pub task: String,
    pub variant: String,
    pub seed: u64,
    pub status: String,
    pub final_quality: Option<f64>,
    /// The task's model, data view and every hyperparameter.
    pub task_spec: serde_json::Value,
    /// Dataset name and the SHA-256 of every file read.
    pub dataset: crate::record::setup::DatasetInfo,
    pub code: Software,
    pub system_id: String,
    pub device: String,
    pub energy: CheckpointEnergy,
    pub weights_sha256: String,
    pub parameters: usize,
    pub created_at: String,
}

/// `<results>/checkpoints/<run-id>.safetensors`.
pub fn path_for(results_root: &Path, run_id: &str) -> PathBuf {
    results_root
        .join("checkpoints")
        .join(format!("{run_id}.safetensors"))
}

/// Where the harness puts the f32 pretraining checkpoint of `task` for `seed` on a system:
/// what a fine-tune of a task whose `finetune.source` is `task` looks for.
pub fn pretrained_path(results_root: &Path, task: &str, seed: u64, system_id: &str) -> PathBuf {
    path_for(results_root, &record::run_id(task, "f32", seed, system_id))
}

pub fn sidecar_path(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

/// Write the weights, then the sidecar (each atomically; the sidecar last, so a sidecar
/// exists only beside complete weights).
pub fn save(
    path: &Path,
    params: &crate::engine::model::ParamStore,
    mut sidecar: Sidecar,
) -> Result<Sidecar, CheckpointError> {
    let werr = |reason: String| CheckpointError::Write {
        path: path.display().to_string(),
        reason,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| werr(e.to_string()))?;
    }
    crate::base::atomic::write_via(path, |tmp| {
        params
            .save_safetensors(tmp)
            .map_err(|e| std::io::Error::other(e.to_string()))
    })
    .map_err(|e| werr(e.to_string()))?;
    sidecar.weights_sha256 = crate::data::sha256_file(path).map_err(|e| werr(e.to_string()))?;
    let json = serde_json::to_vec_pretty(&sidecar).map_err(|e| werr(e.to_string()))?;
    record::write_atomic(&sidecar_path(path), &json).map_err(|e| werr(e.to_string()))?;
    Ok(sidecar)
}

/// Where a fine-tune's weights came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// Written by joulebench, with the energy that produced it.
    Harness(Box<Sidecar>),
    /// No sidecar: weights from elsewhere; the energy that produced them is unknown.
    External,
}

/// A checkpoint read from disk.
#[derive(Clone)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub tensors: HashMap<String, Tensor>,
    pub origin: Origin,
    pub sha256: String,
}

impl Checkpoint {
    /// The run file's `variant.checkpoint` object.
    pub fn describe(&self) -> WeightsSource {
        WeightsSource {
            path: self.path.display().to_string(),
            sha256: self.sha256.clone(),
            origin: match &self.origin {
                Origin::Harness(s) => WeightsOrigin::Harness(Box::new(HarnessWeights {
                    source_run_id: s.run_id.clone(),
                    source_task: s.task.clone(),
                    source_variant: s.variant.clone(),
                    source_seed: s.seed,
                    source_status: s.status.clone(),
                    source_final_quality: s.final_quality,
                    source_code: s.code.clone(),
                    source_dataset: s.dataset.clone(),
                    energy: s.energy.clone(),
                })),
                Origin::External => WeightsOrigin::External {
                    note: "no joulebench sidecar beside the weights: the energy that produced them is unknown, so there is no cumulative energy".into(),
                },
            },
        }
    }
}

/// Read weights (onto `device`) and their sidecar if there is one.
pub fn load(path: &Path, device: &Device) -> Result<Checkpoint, CheckpointError> {
    let p = path.display().to_string();
    if !path.is_file() {
        return Err(CheckpointError::Missing {
            path: p,
            hint: "no such file".into(),
        });
    }
    let weights = std::fs::read(path).map_err(|e| CheckpointError::Unreadable {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    let sc = sidecar_path(path);
    let sidecar = if sc.is_file() {
        Some(std::fs::read(&sc).map_err(|e| CheckpointError::Sidecar {
            path: sc.display().to_string(),
            reason: e.to_string(),
        })?)
    } else {
        None
    };
    parse(path, &weights, sidecar.as_deref(), device)
}

/// A checkpoint from the bytes of its weights file at `path` and of its sidecar (`None`: an
/// external checkpoint), as `load` reads them; `path` and the sidecar's path name the files
/// in errors.
pub fn parse(
    path: &Path,
    weights: &[u8],
    sidecar: Option<&[u8]>,
    device: &Device,
) -> Result<Checkpoint, CheckpointError> {
    let p = path.display().to_string();
    let tensors = candle_core::safetensors::load_buffer(weights, device).map_err(|e| {
        CheckpointError::Unreadable {
            path: p.clone(),
            reason: format!(
                "not a safetensors file ({})",
                e.to_string().lines().next().unwrap_or("")
            ),
        }
    })?;
    let sha256 = hex::encode(sha2::Sha256::digest(weights));
    let origin = match sidecar {
        Some(bytes) => {
            let sc = sidecar_path(path);
            let serr = |reason: String| CheckpointError::Sidecar {
                path: sc.display().to_string(),
                reason,
            };
            let s: Sidecar = serde_json::from_slice(bytes)
                .map_err(|e| serr(crate::base::csvline::clip(&e.to_string())))?;
            if s.format != SIDECAR_FORMAT {
                return Err(serr(format!(
                    "format '{}', expected '{SIDECAR_FORMAT}'",
                    crate::base::csvline::clip(&s.format)
                )));
            }
            if s.weights_sha256 != sha256 {
                return Err(serr(format!(
                    "records weights with SHA-256 {} but {} has {sha256}: the weights changed after the sidecar was written",
                    crate::base::csvline::clip(&s.weights_sha256),
                    p
                )));
            }
            Origin::Harness(Box::new(s))
        }
        None => Origin::External,
    };
    Ok(Checkpoint {
        path: path.to_path_buf(),
        tensors,
        origin,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::model::{self, InputShape, SeededRng};
    use crate::spec::task::ModelSpec;

    fn sidecar() -> Sidecar {
        Sidecar {
            format: SIDECAR_FORMAT.into(),
            format_version: SIDECAR_VERSION,
            run_id: "src--f32--seed-1--x".into(),
            task: "src".into(),
            variant: "f32".into(),
            seed: 1,
            status: "ok".into(),
            final_quality: Some(0.9),
            task_spec: serde_json::json!({}),
            dataset: Default::default(),
            code: crate::measure::system::software(),
            system_id: "x".into(),
            device: "cpu".into(),
            energy: CheckpointEnergy {
                energy_j: 12.5,
                cumulative_energy_j: Some(12.5),
                boundary: "H".into(),
                sources: vec!["estimated_tdp_load".into()],
                all_measured: false,
                meter: "estimate".into(),
                flags: vec![],
            },
            weights_sha256: String::new(),
            parameters: 0,
            created_at: crate::measure::system::utc_now(),
        }
    }

    #[test]
    fn save_load_round_trip_and_origins() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let m = model::build(
            &ModelSpec::Mlp { hidden: vec![4] },
            InputShape::Image { c: 1, h: 2, w: 2 },
            3,
            &mut SeededRng::new(1, 0),
            &dev,
        )
        .unwrap();
        let path = pretrained_path(dir.path(), "src", 1, "x");
        assert!(path.ends_with("checkpoints/src--f32--seed-1--x.safetensors"));
        save(&path, m.params(), sidecar()).unwrap();
        let c = load(&path, &dev).unwrap();
        assert_eq!(c.tensors.len(), 4);
        match &c.origin {
            Origin::Harness(s) => assert_eq!(s.energy.energy_j, 12.5),
            Origin::External => panic!("expected harness"),
        }
        assert!(matches!(c.describe().origin, WeightsOrigin::Harness(_)));
        // Without the sidecar the same weights are external.
        std::fs::remove_file(sidecar_path(&path)).unwrap();
        let c = load(&path, &dev).unwrap();
        assert_eq!(c.origin, Origin::External);
        assert!(matches!(
            c.describe().origin,
            WeightsOrigin::External { .. }
        ));
    }

    #[test]
    fn tampered_weights_and_garbage_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let m = model::build(
            &ModelSpec::Mlp { hidden: vec![4] },
            InputShape::Image { c: 1, h: 2, w: 2 },
            3,
            &mut SeededRng::new(1, 0),
            &dev,
        )
        .unwrap();
        let path = path_for(dir.path(), "r");
        save(&path, m.params(), sidecar()).unwrap();
        let other = model::build(
            &ModelSpec::Mlp { hidden: vec![4] },
            InputShape::Image { c: 1, h: 2, w: 2 },
            3,
            &mut SeededRng::new(2, 0),
            &dev,
        )
        .unwrap();
        other.params().save_safetensors(&path).unwrap();
        let e = load(&path, &dev).err().unwrap().to_string();
        assert!(e.contains("weights changed"), "{e}");
        std::fs::write(&path, b"not safetensors").unwrap();
        let e = load(&path, &dev).err().unwrap().to_string();
        assert!(e.contains("not a safetensors file"), "{e}");
        let e = load(&dir.path().join("nope.safetensors"), &dev)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not found"), "{e}");
    }
}
