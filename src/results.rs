//! The results folder: run files, MLLOG event logs, power timelines and `system.json`.
//!
//! Owns: the run-file schema (interface.md), run ids, checking a results folder before any
//! training, and atomic writes (temp file + rename, run file last, so a run file exists only
//! when everything it points to does).
//! Must not: measure or compute scores; it stores what it is given.

use crate::energy::{Boundary, ComponentEnergy, PowerSample};
use crate::metrics::LadderRung;
use crate::system::SystemInfo;
use crate::train::{CurvePoint, Event, Status};
use crate::variant::Variant;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bumped on any breaking change of the run file (CHANGELOG.md says what changed).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("results folder {path}: {reason}")]
    Folder { path: String, reason: String },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding {what}: {source}")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergySummary {
    /// Gross energy of the measured window (MLPerf semantics): what is ranked.
    pub total_j: f64,
    /// total_j - idle_w * window duration; null without an idle baseline.
    pub net_j: Option<f64>,
    pub boundary: Boundary,
    pub components: Vec<ComponentEnergy>,
    pub idle_w: Option<f64>,
    pub idle_sd_w: Option<f64>,
    pub flags: Vec<String>,
    /// The meter that produced it (`rapl`, `nvml`, `estimate`, `composite`, ...).
    pub meter: String,
    /// True when every component is measured: only such rows are ranked with measurements.
    pub all_measured: bool,
    pub average_power_w: f64,
    pub window_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeSummary {
    pub warmup_s: f64,
    pub train_s: f64,
    pub eval_s: f64,
    /// The measured window: train + eval + the loop's own bookkeeping.
    pub total_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualitySummary {
    pub metric: String,
    pub target: f64,
    /// Majority-class rate of the eval set actually used.
    pub chance: f64,
    /// What the task file declares for the shipped data.
    pub chance_declared: f64,
    #[serde(rename = "final")]
    pub final_value: Option<f64>,
    pub best: Option<f64>,
    /// Binomial noise floor sqrt(q(1-q)/n) of the final value.
    pub final_binomial_sd: Option<f64>,
    pub eval_predictions: usize,
    pub curve: Vec<CurvePoint>,
    pub ladder: Vec<LadderRung>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flops {
    /// FLOPs of the work counting only unpruned weights (3 x forward per trained sample, less
    /// the frozen layers' backward, + eval forwards; measurement.md section 4).
    pub nominal: f64,
    /// FLOPs the kernels actually executed (equal to nominal for dense models; more under
    /// unstructured masks on dense kernels).
    pub executed: f64,
    pub forward_per_sample: u64,
}

/// One measured span inside a run's window (interface.md extra key `phases`): a pipeline such
/// as dense training -> pruning -> recovery, or generator fit -> sampling -> training, is one
/// window with marks between its phases, so the phases add up to the run's total.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// `train`, `prune`, `recover`, `generator-fit`, `sample`, ...
    pub name: String,
    /// Seconds since the window opened, at the phase's start and end.
    pub start_s: f64,
    pub end_s: f64,
    /// Energy of the phase alone (same boundary and sources as the run's energy).
    pub energy_j: f64,
}

/// `runs/<run-id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub schema_version: u32,
    pub run_id: String,
    pub task: String,
    pub seed: u64,
    pub variant: Variant,
    pub status: Status,
    pub error: Option<String>,
    pub device: String,
    pub energy: EnergySummary,
    /// Measured spans of the window, in order; they sum to `energy.total_j`.
    #[serde(default)]
    pub phases: Vec<Phase>,
    pub time: TimeSummary,
    pub quality: QualitySummary,
    pub ett_j: Option<f64>,
    pub ttt_s: Option<f64>,
    pub jpp: Option<f64>,
    /// "412.0 J/pp @ 97 % (H, estimated_tdp_load)": a JPP is never printed without T and the boundary.
    pub jpp_label: Option<String>,
    /// Best quality reached within the task's energy budget, for runs that never reach T.
    pub quality_at_energy_budget: Option<f64>,
    pub samples: usize,
    pub steps: usize,
    pub epochs: f64,
    pub j_per_sample: Option<f64>,
    pub flops: Flops,
    pub model: serde_json::Value,
    pub dataset: serde_json::Value,
    pub config: serde_json::Value,
    pub system: SystemInfo,
    pub provenance: serde_json::Map<String, serde_json::Value>,
    pub started_at: String,
    pub finished_at: String,
    /// Inference energy of the trained model (`run --inference`), measured after training in
    /// its own windows, never part of ETT; absent when not asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference: Option<crate::inference::InferenceReport>,
}

/// `<task>--<variant>--seed-<seed>--<system-id>`: filesystem-safe, stable across reruns on
/// the same hardware class, so a rerun can tell a finished run from a missing one.
pub fn run_id(task: &str, variant: &str, seed: u64, system_id: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect()
    };
    format!(
        "{}--{}--seed-{seed}--{}",
        clean(task),
        clean(variant),
        clean(system_id)
    )
}

/// A results folder checked to be a writable directory, with its subfolders made.
#[derive(Debug, Clone)]
pub struct ResultsDir {
    root: PathBuf,
}

impl ResultsDir {
    /// Create (if needed) and check the folder before anything is trained.
    pub fn open(root: &Path) -> Result<Self, ResultsError> {
        let err = |reason: String| ResultsError::Folder {
            path: root.display().to_string(),
            reason,
        };
        if root.exists() && !root.is_dir() {
            return Err(err("exists and is not a directory".into()));
        }
        for sub in ["", "runs", "events", "power"] {
            std::fs::create_dir_all(root.join(sub))
                .map_err(|e| err(format!("cannot create {sub:?}: {e}")))?;
        }
        let probe = root
            .join("runs")
            .join(format!(".write-probe-{}", std::process::id()));
        std::fs::write(&probe, b"probe").map_err(|e| err(format!("not writable: {e}")))?;
        let _ = std::fs::remove_file(&probe);
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn run_path(&self, run_id: &str) -> PathBuf {
        self.root.join("runs").join(format!("{run_id}.json"))
    }

    /// Write the timeline and event log, then the run file: each atomically.
    pub fn write_run(
        &self,
        record: &RunRecord,
        events: &[Event],
        timeline: &[PowerSample],
    ) -> Result<PathBuf, ResultsError> {
        let id = &record.run_id;
        write_atomic(
            &self.root.join("events").join(format!("{id}.mllog")),
            mllog(events).as_bytes(),
        )?;
        write_atomic(
            &self.root.join("power").join(format!("{id}.csv")),
            power_csv(timeline).as_bytes(),
        )?;
        let path = self.run_path(id);
        let json = serde_json::to_vec_pretty(record).map_err(|source| ResultsError::Encode {
            what: format!("run {id}"),
            source,
        })?;
        write_atomic(&path, &json)?;
        Ok(path)
    }

    /// `system.json`: the machine of the folder's first run; kept if already there.
    pub fn write_system(&self, system: &SystemInfo) -> Result<(), ResultsError> {
        let path = self.root.join("system.json");
        if path.exists() {
            return Ok(());
        }
        let json = serde_json::to_vec_pretty(system).map_err(|source| ResultsError::Encode {
            what: "system.json".into(),
            source,
        })?;
        write_atomic(&path, &json)
    }
}

/// Temp file in the same folder, fsync, rename: readers see the old file or the whole new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ResultsError> {
    let werr = |source| ResultsError::Write {
        path: path.display().to_string(),
        source,
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(werr)?;
    f.write_all(bytes).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        werr(e)
    })
}

/// `:::MLLOG {json}` lines, as MLPerf's mllog package writes them.
pub fn mllog(events: &[Event]) -> String {
    let mut s = String::new();
    for e in events {
        let line = serde_json::json!({
            "namespace": "",
            "time_ms": e.time_ms as u64,
            "event_type": e.event_type,
            "key": e.key,
            "value": e.value,
            "metadata": e.metadata,
        });
        s.push_str(":::MLLOG ");
        s.push_str(&line.to_string());
        s.push('\n');
    }
    s
}

/// Long-format power timeline: `t_s,component,energy_j,power_w`.
pub fn power_csv(samples: &[PowerSample]) -> String {
    let mut s = String::from("t_s,component,energy_j,power_w\n");
    for p in samples {
        let w = p.power_w.map_or(String::new(), |w| format!("{w:.3}"));
        s.push_str(&format!(
            "{:.3},{},{:.4},{w}\n",
            p.t_s, p.component, p.energy_j
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_filesystem_safe_and_stable() {
        let id = run_id("mnist-mlp", "bf16-amp", 3, "ab12cd34");
        assert_eq!(id, "mnist-mlp--bf16-amp--seed-3--ab12cd34");
        let odd = run_id("my task/x", "mixed:0.5", 1, "Z");
        assert!(
            !odd.contains('/') && !odd.contains(':') && !odd.contains(' '),
            "{odd}"
        );
    }

    #[test]
    fn results_dir_rejects_files_and_unwritable() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let e = ResultsDir::open(&file).unwrap_err().to_string();
        assert!(e.contains("not a directory") && e.contains("/f"), "{e}");
        let ok = ResultsDir::open(&tmp.path().join("r")).unwrap();
        assert!(ok.root().join("runs").is_dir());
    }

    #[test]
    fn atomic_write_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("a.json");
        write_atomic(&p, b"{}").unwrap();
        write_atomic(&p, b"{\"x\":1}").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"x\":1}");
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn mllog_lines_parse_back() {
        let mut log = crate::train::EventLog::default();
        log.point("seed", serde_json::json!(7), serde_json::json!({}));
        let text = mllog(&log.0);
        let line = text.lines().next().unwrap();
        let v: serde_json::Value =
            serde_json::from_str(line.strip_prefix(":::MLLOG ").unwrap()).unwrap();
        assert_eq!(v["key"], "seed");
        assert_eq!(v["value"], 7);
        assert_eq!(v["event_type"], "POINT_IN_TIME");
    }
}
