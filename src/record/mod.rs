//! The results folder: run files, MLLOG event logs, power timelines and `system.json`.
//!
//! Owns: the run-file schema (docs/run-file.md), run ids, checking a results folder before any
//! training, reading it back (`read`: the one reader of run files, timelines and event logs),
//! and atomic writes (temp file + rename, run file last, so a run file exists only
//! when everything it points to does).
//! Must not: measure or compute scores; it stores what it is given.

pub mod collapse;
pub mod curve;
pub mod energy;
pub mod inference;
pub mod lock;
pub mod metrics;
pub mod mlperf;
pub mod read;
pub mod run_variant;
pub mod setup;

use crate::measure::system::SystemInfo;
use crate::measure::{Boundary, ComponentEnergy, PowerSample};
use crate::record::curve::{CurvePoint, Event, Status};
use crate::record::metrics::LadderRung;
use crate::spec::precision::{self, Basis, PrecisionReport};
use crate::spec::task::Direction;
pub use run_variant::RunVariant;
use serde::{Deserialize, Serialize};
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
    /// Idle power of each component (`gpu:0`, `gpu:1`, `cpu:package-0`, ...) over the
    /// baseline; absent without one (and in files written before it was recorded).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub idle_component_w: std::collections::BTreeMap<String, f64>,
    /// On a GPU that processes outside the job also used (flag `gpu_shared`): the job's share
    /// of each such board's energy by Kepler's rule, beside the whole-device figure (which is
    /// what `total_j` keeps). Absent where it could not be computed (no idle baseline, no
    /// per-process samples).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributed: std::collections::BTreeMap<String, AttributedEnergy>,
    pub flags: Vec<String>,
    /// The meter that produced it (`rapl`, `nvml`, `estimate`, `composite`, ...).
    pub meter: String,
    /// True when every component is measured: only such rows are ranked with measurements.
    pub all_measured: bool,
    pub average_power_w: f64,
    pub window_s: f64,
}

/// The job's share of one shared board's energy (`energy.attributed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributedEnergy {
    /// `(E - P_idle t) x sm_share + P_idle t x time_share`.
    pub energy_j: f64,
    pub sm_share: f64,
    pub time_share: f64,
    /// The board's idle power the split used.
    pub idle_w: f64,
    /// `kepler: active energy by SM-utilisation share, idle energy by time share`.
    pub rule: String,
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
    /// Which way the metric improves; absent (higher) for accuracy.
    #[serde(default, skip_serializing_if = "is_higher")]
    pub direction: Direction,
    /// The metric's unit (`fraction`, `nats/char`); absent in older files and for a foreign
    /// program's own key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
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
    /// the frozen layers' backward, + eval forwards; docs/design/measurement.md section 4).
    pub nominal: f64,
    /// FLOPs the kernels actually executed (equal to nominal for dense models; more under
    /// unstructured masks on dense kernels).
    pub executed: f64,
    pub forward_per_sample: u64,
}

/// One measured span inside a run's window (docs/run-file.md extra key `phases`): a pipeline such
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

/// Serialize `v` with its object keys in alphabetical order at every depth (through
/// `serde_json::Value`, whose maps are sorted): the order run files have always had for the
/// objects a run builds (`model`, `dataset`, `config` and the run-level parts of `variant`),
/// so a typed field does not change the bytes of a file or report made from it.
pub fn sorted_keys<T: Serialize, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    serde_json::to_value(v)
        .map_err(serde::ser::Error::custom)?
        .serialize(s)
}

/// `runs/<run-id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub schema_version: u32,
    pub run_id: String,
    pub task: String,
    pub seed: u64,
    pub variant: RunVariant,
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
    #[serde(serialize_with = "sorted_keys")]
    pub model: setup::ModelInfo,
    #[serde(serialize_with = "sorted_keys")]
    pub dataset: setup::DatasetInfo,
    #[serde(serialize_with = "sorted_keys")]
    pub config: setup::RunConfig,
    pub system: SystemInfo,
    /// What each meter says about where its figures came from (TDP origin, estimate formula,
    /// a GPU's hashed UUID, ...); keys this version does not know are kept as written.
    #[serde(serialize_with = "sorted_keys")]
    pub provenance: crate::measure::Provenance,
    pub started_at: String,
    pub finished_at: String,
    /// Inference energy of the trained model (`run --inference`), measured after training in
    /// its own windows, never part of ETT; absent when not asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference: Option<crate::record::inference::InferenceReport>,
    /// The sweep plan this run belongs to; null for a plain `joulebench run`. A rerun of the
    /// same plan skips a run whose file carries the same plan hash and entry id.
    #[serde(default)]
    pub plan: Option<PlanRef>,
    /// The engine that started the process (Slurm, Kubernetes, GNU parallel, none) and the host.
    #[serde(default)]
    pub scheduler: Option<SchedulerInfo>,
    /// Who else used the machine during the run: energy is only attributable with isolation.
    #[serde(default)]
    pub isolation: Option<Isolation>,
    /// What trained the run; absent for joulebench's own training (see `engine_label`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineInfo>,
    /// How a foreign program was run (`joulebench exec`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecInfo>,
    /// The forecast that stopped the run (`status` `stopped-forecast`): its inputs, fit and
    /// probability of reaching T; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<crate::stats::forecast::Forecast>,
}

impl RunRecord {
    /// Energy to target, `inf` when the run did not reach T (DNF, stopped by the forecast,
    /// diverged, failed): the one ETT every comparison and stopping rule uses.
    pub fn ett_or_inf(&self) -> f64 {
        match (self.status, self.ett_j) {
            (Status::Failed, _) => f64::INFINITY,
            (_, Some(e)) if e.is_finite() => e,
            _ => f64::INFINITY,
        }
    }

    /// What trained the run, as every leaderboard row shows it.
    pub fn engine_label(&self) -> String {
        match &self.engine {
            Some(e) => e.label.clone(),
            None => format!("joulebench/candle {}", self.system.software.candle_version),
        }
    }

    /// The precision record a verdict is judged by (None for f32). A run file written before
    /// the per-class record is read by what is known without it: joulebench's own CPU runs by
    /// candle's code paths (its bf16 GEMM widens to f32 on every CPU), anything else as
    /// `unknown`.
    pub fn precision_record(&self) -> Option<PrecisionReport> {
        let v = &self.variant;
        if v.precision == crate::spec::variant::Precision::F32 {
            return None;
        }
        match &v.precision_report {
            Some(r) if r.basis != Basis::Unknown => Some(r.clone()),
            old => {
                let candle_cpu = self.engine.is_none() && self.device == "cpu";
                let arch = match self.system.capabilities.arch.as_str() {
                    "" => guess_arch(&self.system.cpu_model),
                    a => a,
                };
                precision::upgrade_legacy(old.as_ref(), v.precision, candle_cpu, arch)
            }
        }
    }
}

/// `x86_64` for an Intel or AMD x86 model name; empty when the name does not say.
fn guess_arch(cpu_model: &str) -> &'static str {
    let m = cpu_model.to_ascii_lowercase();
    if ["intel", "amd ", "xeon", "epyc", "ryzen", "core(tm)"]
        .iter()
        .any(|k| m.contains(k))
    {
        "x86_64"
    } else {
        ""
    }
}

fn is_higher(d: &Direction) -> bool {
    *d == Direction::Higher
}

/// What trained a run. Absent from a run file that joulebench trained itself (the engine is
/// then `joulebench/candle` at the candle version in `system.software`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineInfo {
    /// `exec` for a foreign program (`joulebench exec`).
    pub kind: String,
    /// What the leaderboard shows: `exec: torch 2.9.1`, `exec: python3 [my-label]`.
    pub label: String,
    /// The framework the program named in its reports (MLLOG key `framework`).
    pub framework: Option<String>,
    /// The command's first word, without its folder.
    pub program: String,
}

/// How a foreign program was run and what it reported (`joulebench exec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecInfo {
    /// The command line as run (after `{seed}` substitution).
    pub command: Vec<String>,
    pub cwd: String,
    /// The variables that affect compute, as the program saw them (set ones only).
    pub env: std::collections::BTreeMap<String, String>,
    /// `mllog` (stdout and stderr) or `events-file` (`--events`).
    pub source: String,
    pub events_path: Option<String>,
    /// The key of the tracked metric in the program's reports.
    pub metric_key: String,
    pub exit_code: Option<i32>,
    /// The signal that ended the program, if one did (`SIGTERM` from `--stop-at-target`, ...).
    pub signal: Option<String>,
    /// Peak resident memory of the program (its own, from wait4), KiB.
    pub peak_rss_kib: Option<u64>,
    pub stop_at_target: bool,
    /// True when joulebench ended the program because it reached T.
    pub stopped_at_target: bool,
    /// The signals joulebench sent, in order (`SIGTERM`, then `SIGKILL` after the grace period).
    pub signals_sent: Vec<String>,
    pub time_limit_s: Option<f64>,
    pub timed_out: bool,
    /// Seconds since the window opened at the program's `run_start` and `run_stop`.
    pub run_start_s: Option<f64>,
    pub run_stop_s: Option<f64>,
    pub run_stop_status: Option<String>,
    /// Lines of output (stdout and stderr) and of the events file.
    pub output_lines: usize,
    /// Reports of the tracked metric accepted as evals.
    pub eval_lines: usize,
    /// Lines that claimed to be reports and could not be read, with the first few reasons.
    pub malformed_lines: usize,
    pub malformed_examples: Vec<String>,
    /// Lines longer than the 64 KiB read limit (cut; counted as malformed when a report).
    pub over_long_lines: usize,
    /// The program's output, relative to the results folder (`logs/<run-id>.log`).
    pub log: String,
}

/// A run's place in a sweep plan (`joulebench sweep plan`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRef {
    /// Content hash of the whole plan.
    pub hash: String,
    /// Content hash of the run's canonical spec (task spec, variant, seed, needs).
    pub entry_id: String,
    /// Position of the entry in the plan's sorted list (shard = index mod shard count).
    pub index: usize,
    /// The suite or config the plan came from.
    pub name: String,
    /// `randomised` or `interleaved`, the seed of the order, and this run's place in it.
    pub order: String,
    pub order_seed: u64,
    pub position: usize,
    /// With sequential seeds (`sweep --until-settled`): the most seeds per variant; absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_settled_max_seeds: Option<u64>,
}

/// The engine a run's process was started by, read from its environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerInfo {
    /// `slurm`, `kubernetes`, `gnu-parallel` or `none`.
    pub engine: String,
    /// Slurm `SLURM_JOB_ID`; Kubernetes: the pod name.
    pub job_id: Option<String>,
    /// Slurm `SLURM_ARRAY_JOB_ID`; Kubernetes: the Job name where known.
    pub array_job_id: Option<String>,
    /// Slurm `SLURM_ARRAY_TASK_ID`, Kubernetes `JOB_COMPLETION_INDEX`, parallel `PARALLEL_SEQ`.
    pub task_id: Option<String>,
    pub host: String,
    pub shard_index: Option<u64>,
    pub shard_count: Option<u64>,
    /// The engine's allocation as it describes it (CPUs, GPUs, partition, node list).
    #[serde(default)]
    pub allocation: std::collections::BTreeMap<String, String>,
}

/// Co-tenancy of a run (docs/design/measurement.md section 2: RAPL is machine-wide, GPU counters are
/// per board): other processes at the start and end, and the meter's own window figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Isolation {
    /// `isolated` (nothing else seen), `shared` (others seen: the energy includes their load
    /// on machine-wide meters) or `unknown` (nothing could be read).
    pub verdict: String,
    /// This process's and everything else's share of the machine's CPU time over the window.
    pub cpu_harness_fraction: Option<f64>,
    pub cpu_others_fraction: Option<f64>,
    pub cpu_contended: bool,
    /// Other compute processes NVML saw on the run's GPU at the window's start or end.
    pub gpu_other_compute_pids: Vec<u32>,
    pub gpu_contaminated: bool,
    pub start: Option<CoTenancy>,
    pub end: Option<CoTenancy>,
}

/// Other processes on the machine at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoTenancy {
    /// 1-minute load average.
    pub load_1m: Option<f64>,
    /// Runnable (state R) processes other than this one.
    pub runnable_others: Option<usize>,
    /// Names of up to 8 of them.
    pub examples: Vec<String>,
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
    /// What the event logs say about the submission (`run`/`exec` options).
    submission: mlperf::SubmissionArgs,
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
        // What writers of this machine killed mid-write left here (temp files, plan claims,
        // write probes); a live writer's files and other machines' are kept.
        for sub in ["", "runs", "events", "power", "logs"] {
            crate::base::atomic::remove_dead_writers_files(&root.join(sub), |_| true);
        }
        let probe = root.join("runs").join(format!(
            ".write-probe-{}",
            crate::base::atomic::writer_tag()
        ));
        std::fs::write(&probe, b"probe").map_err(|e| err(format!("not writable: {e}")))?;
        let _ = std::fs::remove_file(&probe);
        Ok(Self {
            root: root.to_path_buf(),
            submission: mlperf::SubmissionArgs::default(),
        })
    }

    /// The event logs' `submission_*` values (the defaults fill what is not given).
    pub fn with_submission(mut self, submission: mlperf::SubmissionArgs) -> Self {
        self.submission = submission;
        self
    }

    /// Another folder's files, for reading (`merge`): nothing is created or checked.
    pub fn existing(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            submission: mlperf::SubmissionArgs::default(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn run_path(&self, run_id: &str) -> PathBuf {
        self.root.join("runs").join(format!("{run_id}.json"))
    }

    /// A run's files in the order they are written: event log, power timeline, run file
    /// (the run file last, so it exists only when the others do).
    pub fn run_files(&self, run_id: &str) -> [PathBuf; 3] {
        [
            self.root.join("events").join(format!("{run_id}.mllog")),
            self.root.join("power").join(format!("{run_id}.csv")),
            self.run_path(run_id),
        ]
    }

    /// Write the timeline and event log, then the run file: each atomically.
    pub fn write_run(
        &self,
        record: &RunRecord,
        events: &[Event],
        timeline: &[PowerSample],
    ) -> Result<PathBuf, ResultsError> {
        let id = &record.run_id;
        let [events_path, power_path, path] = self.run_files(id);
        let sub = self.submission.resolve(&record.system);
        let log = mllog(&mlperf::compliant_events(record, events, &sub));
        write_atomic(&events_path, log.as_bytes())?;
        write_atomic(&power_path, power_csv(timeline).as_bytes())?;
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

/// [`crate::base::atomic::write`] with the error a results folder reports: readers see the
/// old file or the whole new one, and a failed write leaves no temp file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ResultsError> {
    crate::base::atomic::write(path, bytes).map_err(|source| ResultsError::Write {
        path: path.display().to_string(),
        source,
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

/// An `:::MLLOG` line that cannot be read back: its number (from 1), what is wrong and the
/// line's start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {fault}: {excerpt}")]
pub struct MllogLineError {
    pub line: usize,
    pub fault: MllogFault,
    pub excerpt: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MllogFault {
    #[error("not JSON ({0})")]
    NotJson(String),
    #[error("no event_type")]
    NoEventType,
    #[error("no time_ms")]
    NoTimeMs,
    #[error("no key")]
    NoKey,
}

/// Read back an event log `mllog` wrote (or any `:::MLLOG` lines: text before the mark and
/// lines without it are skipped). An error names the line.
pub fn parse_mllog(text: &str) -> Result<Vec<Event>, MllogLineError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some(at) = line.find(":::MLLOG ") else {
            continue;
        };
        let bad = |fault: MllogFault| MllogLineError {
            line: i + 1,
            fault,
            excerpt: crate::base::csvline::excerpt(line),
        };
        let v: serde_json::Value = serde_json::from_str(&line[at + 9..])
            .map_err(|e| bad(MllogFault::NotJson(e.to_string())))?;
        let event_type = match v["event_type"].as_str() {
            Some("POINT_IN_TIME") => "POINT_IN_TIME",
            Some("INTERVAL_START") => "INTERVAL_START",
            Some("INTERVAL_END") => "INTERVAL_END",
            _ => return Err(bad(MllogFault::NoEventType)),
        };
        let time_ms = v["time_ms"]
            .as_u64()
            .or_else(|| v["time_ms"].as_f64().map(|t| t as u64))
            .ok_or_else(|| bad(MllogFault::NoTimeMs))?;
        let key = v["key"].as_str().ok_or_else(|| bad(MllogFault::NoKey))?;
        out.push(Event {
            time_ms: time_ms as u128,
            event_type,
            key: key.to_string(),
            value: v["value"].clone(),
            metadata: v["metadata"].clone(),
        });
    }
    Ok(out)
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
    fn mllog_lines_parse_back() {
        let mut log = crate::record::curve::EventLog::default();
        log.point("seed", serde_json::json!(7), serde_json::json!({}));
        let text = mllog(&log.0);
        let line = text.lines().next().unwrap();
        let v: serde_json::Value =
            serde_json::from_str(line.strip_prefix(":::MLLOG ").unwrap()).unwrap();
        assert_eq!(v["key"], "seed");
        assert_eq!(v["value"], 7);
        assert_eq!(v["event_type"], "POINT_IN_TIME");
        log.interval("run_start", true, serde_json::json!({"a": 1}));
        assert_eq!(parse_mllog(&mllog(&log.0)).unwrap(), log.0);
        let e = parse_mllog("x\n:::MLLOG {\"key\": \"k\"}\n").unwrap_err();
        assert_eq!((e.line, e.fault.clone()), (2, MllogFault::NoEventType));
        assert!(e.to_string().starts_with("line 2: no event_type"), "{e}");
    }

    #[test]
    fn every_preset_variant_makes_a_plain_run_id() {
        for (v, _) in crate::spec::variant::catalog() {
            assert_eq!(
                run_id("t", &v.name, 1, "s"),
                format!("t--{}--seed-1--s", v.name)
            );
        }
    }
}
