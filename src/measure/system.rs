//! What machine and software produced a run (docs/design/measurement.md section 5).
//!
//! Owns: reading CPU model, cores, memory, OS and kernel from /proc and /etc, the device's
//! arithmetic capabilities (the CPU flags that decide native bf16/f16, a GPU's compute
//! capability), the build-time software provenance, and the system id that run ids are
//! derived from.
//! Must not: probe meters (that is `energy::detect`).

use crate::spec::precision::{Capabilities, CPU_FLAGS_CONSULTED};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemInfo {
    /// Stable short hash of the hardware class (CPU model, threads, memory, accelerator).
    pub system_id: String,
    pub hostname: String,
    pub cpu_model: String,
    pub logical_cpus: usize,
    pub memory_gib: f64,
    pub os: String,
    pub kernel: String,
    /// `cpu` or `cuda:i`, and its name where known.
    pub device: String,
    pub accelerator: Option<String>,
    pub software: Software,
    /// What the device runs natively: the CPU flags consulted and present, the GPU's compute
    /// capability. Empty in folders written before it was recorded.
    #[serde(default)]
    pub capabilities: Capabilities,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Software {
    pub joulebench_version: String,
    pub git_commit: String,
    pub candle_version: String,
    pub candle_features: Vec<String>,
    pub rustc: String,
    pub build_profile: String,
    pub cargo_lock_fnv: String,
}

pub fn software() -> Software {
    let mut features = Vec::new();
    if cfg!(feature = "cuda") {
        features.push("cuda".to_string());
    }
    Software {
        joulebench_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: env!("JB_GIT_COMMIT").to_string(),
        candle_version: env!("JB_CANDLE_VERSION").to_string(),
        candle_features: features,
        rustc: env!("JB_RUSTC_VERSION").to_string(),
        build_profile: env!("JB_PROFILE").to_string(),
        cargo_lock_fnv: env!("JB_CARGO_LOCK_FNV").to_string(),
    }
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// A `/proc/meminfo` field (`MemTotal`, `MemAvailable`, ...) in KiB, from the file's text.
pub fn meminfo_field_kib(meminfo: &str, field: &str) -> Option<u64> {
    meminfo
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// This machine's `/proc/meminfo` field in KiB; `None` where it cannot be read.
pub fn meminfo_kib(field: &str) -> Option<u64> {
    meminfo_field_kib(&std::fs::read_to_string("/proc/meminfo").ok()?, field)
}

pub fn memory_kib() -> Option<u64> {
    meminfo_kib("MemTotal")
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("PRETTY_NAME="))
                .map(|l| l["PRETTY_NAME=".len()..].trim_matches('"').to_string())
        })
        .unwrap_or_else(|| std::env::consts::OS.to_string())
}

pub fn collect(device: &str, accelerator: Option<String>) -> SystemInfo {
    let cpu_model = cpu_model();
    let logical_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory_gib = memory_kib().map_or(0.0, |k| k as f64 / (1024.0 * 1024.0));
    let mut h = Sha256::new();
    // Memory rounded to whole GiB so a few MiB reserved by the kernel do not change the id.
    let ident = format!(
        "{cpu_model}|{logical_cpus}|{:.0}|{device}|{}",
        memory_gib,
        accelerator.as_deref().unwrap_or("")
    );
    h.update(ident.as_bytes());
    let system_id = hex::encode(h.finalize().get(..4).unwrap_or_default());
    SystemInfo {
        system_id,
        hostname: read_trim("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown".into()),
        cpu_model,
        logical_cpus,
        memory_gib,
        os: os_name(),
        kernel: read_trim("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into()),
        device: device.to_string(),
        accelerator,
        software: software(),
        capabilities: capabilities(device),
    }
}

/// The consulted flags a `/proc/cpuinfo` text lists (x86 `flags`, aarch64 `Features`); None
/// when it has neither line.
pub fn cpu_flags_in(cpuinfo: &str) -> Option<Vec<String>> {
    let line = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags") || l.starts_with("Features"))?;
    let all: Vec<&str> = line.split(':').nth(1)?.split_whitespace().collect();
    Some(
        CPU_FLAGS_CONSULTED
            .iter()
            .filter(|f| all.contains(f))
            .map(|f| f.to_string())
            .collect(),
    )
}

/// This machine's capabilities for `device` (`cpu`, `cuda:i` or `cuda (nvml i,j)`).
pub fn capabilities(device: &str) -> Capabilities {
    let flags = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| cpu_flags_in(&s));
    // `cuda:i`, or `cuda (nvml 0,1)` for a multi-GPU window (the first device's).
    let cuda_compute_capability = match super::devices::first_index_of_label(device) {
        Some(i) => super::nvml_gpu::compute_capability_nvml(i).ok(),
        None => device
            .strip_prefix("cuda:")
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| super::nvml_gpu::compute_capability(i).ok()),
    };
    Capabilities {
        arch: std::env::consts::ARCH.to_string(),
        cpu_flags_consulted: if flags.is_some() {
            CPU_FLAGS_CONSULTED.iter().map(|f| f.to_string()).collect()
        } else {
            Vec::new()
        },
        cpu_flags: flags.unwrap_or_default(),
        cuda_compute_capability,
    }
}

/// UTC timestamp `YYYY-MM-DDTHH:MM:SS.mmmZ` from the system clock.
pub fn utc_now() -> String {
    utc_from_unix_ms(jiff::Timestamp::now().as_millisecond())
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of milliseconds since 1970-01-01T00:00:00Z (jiff's calendar;
/// an instant outside years -9999..=9999 is written as the nearest one inside).
pub fn utc_from_unix_ms(ms: i64) -> String {
    let ms = ms.clamp(
        jiff::Timestamp::MIN.as_millisecond(),
        jiff::Timestamp::MAX.as_millisecond(),
    );
    let t = jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    format!(
        "{}.{:03}Z",
        t.strftime("%Y-%m-%dT%H:%M:%S"),
        ms.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting_known_instants() {
        assert_eq!(utc_from_unix_ms(0), "1970-01-01T00:00:00.000Z");
        // 2024-02-29T12:34:56.789Z (leap day) = 1709210096789 ms.
        assert_eq!(
            utc_from_unix_ms(1_709_210_096_789),
            "2024-02-29T12:34:56.789Z"
        );
    }

    #[test]
    fn cpu_flags_are_read_from_cpuinfo() {
        let x86 =
            "processor\t: 0\nflags\t\t: fpu sse2 avx2 f16c avx512f avx512_bf16 amx_tile amx_bf16\n";
        assert_eq!(
            cpu_flags_in(x86).unwrap(),
            ["avx512_bf16", "amx_bf16", "f16c"]
        );
        let arm = "processor\t: 0\nFeatures\t: fp asimd fphp asimdhp bf16 i8mm\n";
        assert_eq!(cpu_flags_in(arm).unwrap(), ["bf16", "fphp", "asimdhp"]);
        assert_eq!(cpu_flags_in("processor : 0\n"), None);
        let caps = capabilities("cpu");
        assert_eq!(caps.arch, std::env::consts::ARCH);
        assert_eq!(caps.cuda_compute_capability, None);
    }

    #[test]
    fn system_id_is_stable() {
        assert_eq!(
            collect("cpu", None).system_id,
            collect("cpu", None).system_id
        );
        assert_ne!(
            collect("cpu", None).system_id,
            collect("cuda:0", None).system_id
        );
    }
}
