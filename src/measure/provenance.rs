//! Where a window's figures came from: the typed `provenance` part of a meter report and of
//! the run file.
//!
//! Owns: the facts each meter states about its own figures (the estimate's TDP and formula,
//! RAPL's zones and wraps, the CPU share of this process, each GPU's identity, state at the
//! window's edges and read failures), how two meters' facts merge, and the lenient reading of
//! older run files (a key this version does not know is kept as written, never dropped).
//! Must not: compute energy; the meters fill these in when a window closes.
//!
//! In the file, every fact is a top-level key of `provenance` (the CPU and RAPL facts by
//! their own names, each GPU under its component name `gpu:<index>`), so run files written
//! before this type existed read unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cputime::{CpuShare, MIN_SHARE_TICKS};
use super::Flag;

/// All provenance of one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawProvenance", into = "RawProvenance")]
pub struct Provenance {
    /// Facts of the CPU-side meter (estimate or RAPL) and the NVML library.
    pub host: HostFacts,
    /// Per GPU component (`gpu:0`, ...): what NVML said about the device.
    pub gpus: BTreeMap<String, GpuFacts>,
    /// Keys this version does not know (an older or newer joulebench wrote them), kept as
    /// written; also where a fact lands when two meters of a composite both state it.
    pub other: BTreeMap<String, Value>,
}

/// The CPU-side and NVML-library facts, each a top-level key of `provenance`; a key is written
/// only when the meter that owns it ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    // The labelled estimate (CodeCarbon's TDP model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_tdp_w: Option<f64>,
    /// Where the TDP figure came from (table row, fallback, override).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_tdp_origin: Option<String>,
    /// Mean machine-wide CPU utilisation over the window, 0..1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_mean_utilisation: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dram_estimate_w: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate_formula: Option<String>,
    /// Utilisation samples that could not be read (flag `cpu_utilisation_unavailable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_utilisation_read_errors: Option<u64>,

    // This process's share of the machine's CPU time over the window (estimate and RAPL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_harness_fraction: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_others_fraction: Option<f64>,
    /// Why the share is unknown, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_share: Option<String>,

    // RAPL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rapl_root: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rapl_zones: Option<Vec<RaplZoneFacts>>,
    /// Zones left out, each with its reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rapl_ignored_zones: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rapl_wraps: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rapl_samples: Option<u64>,
    /// Counter polls that failed (flag `rapl_poll_errors`: a failed poll can hide a wrap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rapl_poll_errors: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rapl_first_poll_error: Option<String>,

    // The NVML library (written by the NVML meter; absent when unreadable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvml_driver_version: Option<String>,
    /// CUDA driver version as `major.minor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuda_driver_version: Option<String>,
    /// The node's GPUs the GPU meter left out (`nvml 2 (NVIDIA H100 80GB HBM3)`): present, not
    /// metered, so outside boundary G.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus_not_metered: Option<Vec<String>>,
    /// The GPUs a multi-GPU window metered and why (`nvml 0,1: --devices 0,1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_devices: Option<String>,
}

impl HostFacts {
    /// Record this process's CPU share over the window (flagging `cpu_contended` when others
    /// used too much of it), or that the window was too short for one.
    pub fn set_cpu_share(&mut self, share: Option<CpuShare>, flags: &mut Vec<Flag>) {
        match share {
            Some(s) => {
                self.cpu_harness_fraction = Some(s.harness_fraction);
                self.cpu_others_fraction = Some(s.others_fraction);
                if s.contended() {
                    flags.push("cpu_contended".to_string());
                }
            }
            None => {
                self.cpu_share = Some(format!(
                    "unknown: the window holds under {MIN_SHARE_TICKS} CPU-time ticks, too few \
                     to tell this process's share from tick rounding"
                ))
            }
        }
    }
}

/// One counted RAPL zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaplZoneFacts {
    /// Directory name, e.g. `intel-rapl:0:1`.
    pub id: String,
    /// Its `name` file, e.g. `package-0`.
    pub name: String,
    /// `cpu:package-0`, `dram:0`.
    pub component: String,
    pub max_energy_range_uj: u64,
}

/// What NVML said about one metered GPU. A fact NVML could not read is `null`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuFacts {
    pub name: Option<String>,
    pub memory_total_bytes: Option<u64>,
    /// The first 16 hex digits of SHA-256 of the device UUID (the UUID itself is not kept).
    pub uuid_sha256_16: Option<String>,
    pub power_limit_w: Option<f64>,
    pub persistence_mode: Option<bool>,
    /// Whether the total-energy counter was usable (else energy is integrated from power).
    pub counter_usable: bool,
    /// Which power reading was integrated (`power_usage`, `power_usage_instant`, ...).
    pub power_source: String,
    /// The power integral over the window, beside the counter's figure.
    pub integral_j: Option<f64>,
    pub start: GpuEdgeFacts,
    pub end: GpuEdgeFacts,
    pub own_pid: u32,
    /// NVML reads of the window that failed (flag `nvml_read_errors`), and the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_errors: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_read_error: Option<String>,
    /// Compute processes outside the job (this process and its descendants) seen on the
    /// device during the window (flag `gpu_shared`).
    pub other_compute_pids: Vec<u32>,
    /// Compute processes whose owner could not be told (not visible in this `/proc`: NVML
    /// reports host PIDs, a container has its own PID namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_compute_pids: Vec<u32>,
    /// The job's share of the device's time over the window: per poll 1/n of the n tenants
    /// present when the job is one of them, averaged (Kepler's idle-power share).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_time_share: Option<f64>,
    /// The job's share of the SM utilisation NVML sampled per process (Kepler's active-power
    /// share).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_sm_share: Option<f64>,
    /// The device's MIG instances when MIG is on (flag `gpu_mig`): its energy is the whole
    /// GPU's, NVML having no per-instance counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig_instances: Option<Vec<String>>,
}

/// A GPU's state read at one edge of the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuEdgeFacts {
    pub temperature_c: Option<u32>,
    pub sm_clock_mhz: Option<u32>,
    pub memory_clock_mhz: Option<u32>,
    pub compute_pids: Option<Vec<u32>>,
}

impl Provenance {
    /// Facts of a meter that states only host facts.
    pub fn host(host: HostFacts) -> Self {
        Self {
            host,
            ..Self::default()
        }
    }

    /// Foreign compute PIDs seen on any metered GPU, sorted, each once.
    pub fn gpu_other_compute_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .gpus
            .values()
            .flat_map(|g| g.other_compute_pids.iter().copied())
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Add a later meter's facts: a fact only it states is taken as is; one both state with
    /// different values keeps the earlier value and stores the later under `<meter>.<key>`,
    /// so nothing is overwritten.
    pub fn merge(&mut self, meter: &str, later: Provenance) {
        let mut mine = to_map(std::mem::take(self));
        for (k, v) in to_map(later) {
            match mine.get(&k) {
                Some(existing) if *existing != v => {
                    mine.insert(format!("{meter}.{k}"), v);
                }
                _ => {
                    mine.insert(k, v);
                }
            }
        }
        // Every value came from a Provenance, so it reads back; a failure would be a bug here.
        *self = serde_json::from_value(Value::Object(mine.into_iter().collect()))
            .expect("merged provenance reads back");
    }
}

/// The facts as the file's keys.
fn to_map(p: Provenance) -> BTreeMap<String, Value> {
    match serde_json::to_value(RawProvenance::from(p)) {
        Ok(Value::Object(m)) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

/// The file's shape: host facts by name, everything else (GPUs included) as raw keys.
#[derive(Serialize, Deserialize)]
struct RawProvenance {
    #[serde(flatten)]
    host: HostFacts,
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

impl From<RawProvenance> for Provenance {
    fn from(raw: RawProvenance) -> Self {
        let mut out = Provenance::host(raw.host);
        for (k, v) in raw.rest {
            let gpu = k
                .starts_with("gpu:")
                .then(|| GpuFacts::deserialize(&v).ok())
                .flatten();
            match gpu {
                Some(g) => {
                    out.gpus.insert(k, g);
                }
                None => {
                    out.other.insert(k, v);
                }
            }
        }
        out
    }
}

impl From<Provenance> for RawProvenance {
    fn from(p: Provenance) -> Self {
        let mut rest = p.other;
        for (k, g) in p.gpus {
            // A GpuFacts always serialises (plain fields only).
            if let Ok(v) = serde_json::to_value(g) {
                rest.insert(k, v);
            }
        }
        RawProvenance { host: p.host, rest }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gpu(pids: &[u32]) -> GpuFacts {
        GpuFacts {
            name: Some("NVIDIA H100".into()),
            memory_total_bytes: None,
            uuid_sha256_16: Some("abcd".into()),
            power_limit_w: Some(700.0),
            persistence_mode: None,
            counter_usable: true,
            power_source: "power_usage".into(),
            integral_j: Some(10.0),
            start: GpuEdgeFacts::default(),
            end: GpuEdgeFacts::default(),
            own_pid: 1,
            read_errors: None,
            first_read_error: None,
            other_compute_pids: pids.to_vec(),
            ..GpuFacts::default()
        }
    }

    #[test]
    fn reads_an_estimate_run_files_provenance_and_writes_it_back_byte_for_byte() {
        let text = r#"{"cpu_harness_fraction":0.9,"cpu_mean_utilisation":0.5,"cpu_others_fraction":0.01,"cpu_tdp_origin":"table","cpu_tdp_w":65.0,"dram_estimate_w":3.0,"estimate_formula":"CodeCarbon"}"#;
        let p: Provenance = serde_json::from_str(text).unwrap();
        assert_eq!(p.host.cpu_tdp_w, Some(65.0));
        assert_eq!(p.host.cpu_others_fraction, Some(0.01));
        assert!(p.gpus.is_empty() && p.other.is_empty());
        let back = serde_json::to_value(&p).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(text).unwrap());
    }

    #[test]
    fn gpus_are_typed_unknown_keys_are_kept_and_nulls_stay_null() {
        let mut v = serde_json::to_value(gpu(&[7])).unwrap();
        v["start"]["temperature_c"] = Value::Null;
        let text = json!({"gpu:0": v, "from_the_future": {"x": 1}, "cpu_tdp_w": 1.0});
        let p: Provenance = serde_json::from_value(text.clone()).unwrap();
        assert_eq!(p.gpus["gpu:0"].uuid_sha256_16.as_deref(), Some("abcd"));
        assert_eq!(p.other["from_the_future"], json!({"x": 1}));
        let back = serde_json::to_value(&p).unwrap();
        assert_eq!(back, text);
        assert!(back["gpu:0"]["start"]["temperature_c"].is_null());
    }

    #[test]
    fn a_gpu_key_this_version_cannot_read_is_kept_as_written() {
        let text = json!({"gpu:1": {"old_field": true}});
        let p: Provenance = serde_json::from_value(text.clone()).unwrap();
        assert!(p.gpus.is_empty());
        assert_eq!(serde_json::to_value(&p).unwrap(), text);
    }

    #[test]
    fn merge_keeps_both_meters_facts_and_overwrites_nothing() {
        let mut a = Provenance::host(HostFacts {
            cpu_tdp_w: Some(65.0),
            ..HostFacts::default()
        });
        let mut b = Provenance::default();
        b.gpus.insert("gpu:0".into(), gpu(&[9, 3]));
        b.host.cpu_tdp_w = Some(80.0);
        b.host.nvml_driver_version = Some("550.54".into());
        a.merge("nvml", b);
        assert_eq!(a.host.cpu_tdp_w, Some(65.0));
        assert_eq!(a.other["nvml.cpu_tdp_w"], json!(80.0));
        assert_eq!(a.host.nvml_driver_version.as_deref(), Some("550.54"));
        assert_eq!(a.gpu_other_compute_pids(), [3, 9]);
    }
}
