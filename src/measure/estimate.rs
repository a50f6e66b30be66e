//! The labelled estimate used when no CPU/DRAM counter is readable: CodeCarbon 3.3's CPU
//! formula over measured utilisation, and a constant DRAM power.
//!
//! Owns: the TDP choice and its stated origin, utilisation sampling from /proc/stat, the
//! integration of the formula. Must not: call itself a measurement (sources are
//! `estimated_tdp_load` and `estimated_constant`), or estimate a GPU.

use super::cputime::{cpu_share, utilisation, ProcPaths, SystemCpuTimes};
use super::poller::Poller;
use super::{Boundary, ComponentEnergy, ComponentInfo, Meter, MeterError, MeterReport};
use super::{PowerSample, Source};
use serde_json::json;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

const METER: &str = "estimate";
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Fallback when the CPU model is unknown (measurement.md section 2).
pub const WATTS_PER_THREAD: f64 = 4.0;
/// DRAM: 5 W per 8 GB DIMM-equivalent, at least 10 W (measurement.md section 2).
pub const DRAM_W_PER_DIMM: f64 = 5.0;
pub const DRAM_GIB_PER_DIMM: f64 = 8.0;
pub const DRAM_MIN_W: f64 = 10.0;

/// CodeCarbon 3.3: `P = TDP * (0.1 + 0.9 * u^3)`, u in [0, 1].
pub fn codecarbon_cpu_power_w(tdp_w: f64, utilisation: f64) -> f64 {
    let u = utilisation.clamp(0.0, 1.0);
    tdp_w * (0.1 + 0.9 * u * u * u)
}

/// Integrate the formula over a utilisation trace. Each entry `(t_s, u)` is the utilisation
/// measured over the interval that ends at `t_s`; the trace starts at t = 0.
pub fn integrate_cpu_estimate_j(tdp_w: f64, trace: &[(f64, f64)]) -> f64 {
    let mut prev_t_s = 0.0;
    let mut energy_j = 0.0;
    for &(t_s, u) in trace {
        energy_j += codecarbon_cpu_power_w(tdp_w, u) * (t_s - prev_t_s).max(0.0);
        prev_t_s = t_s.max(prev_t_s);
    }
    energy_j
}

/// Spec TDPs (watts per socket) of a few common parts, matched in the `/proc/cpuinfo` model
/// name. Each figure is the vendor's published TDP / base power.
const KNOWN_TDP_W: &[(&str, f64)] = &[
    // Intel ARK, Xeon Platinum 8480+ (Sapphire Rapids): TDP 350 W.
    ("Xeon(R) Platinum 8480+", 350.0),
    // Intel ARK, Xeon Platinum 8380 (Ice Lake-SP): TDP 270 W.
    ("Xeon(R) Platinum 8380", 270.0),
    // Intel ARK, Xeon Gold 6248R (Cascade Lake): TDP 205 W.
    ("Xeon(R) Gold 6248R", 205.0),
    // Intel ARK, Xeon Gold 6130 (Skylake-SP): TDP 125 W.
    ("Xeon(R) Gold 6130", 125.0),
    // AMD product page, EPYC 7763: default TDP 280 W.
    ("EPYC 7763", 280.0),
    // AMD product page, EPYC 7742: default TDP 225 W.
    ("EPYC 7742", 225.0),
    // AMD product page, EPYC 9654: default TDP 360 W.
    ("EPYC 9654", 360.0),
    // Intel ARK, Core i9-13900K: processor base power 125 W.
    ("Core(TM) i9-13900K", 125.0),
    // AMD product page, Ryzen 9 7950X: default TDP 170 W.
    ("Ryzen 9 7950X", 170.0),
];

/// The known part whose name appears in `model` (followed by a non-alphanumeric character,
/// so `8380` does not match `8380H`).
pub fn known_tdp_w(model: &str) -> Option<(&'static str, f64)> {
    let lower = model.to_ascii_lowercase();
    KNOWN_TDP_W.iter().copied().find(|(key, _)| {
        let key = key.to_ascii_lowercase();
        lower.match_indices(&key).any(|(i, _)| {
            lower[i + key.len()..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '+')
        })
    })
}

/// A TDP and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Tdp {
    pub watts: f64,
    pub note: String,
}

/// What /proc/cpuinfo says about the CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuInfo {
    pub model: Option<String>,
    pub logical_threads: usize,
    pub sockets: usize,
}

pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let value = |l: &str| l.split_once(':').map(|(_, v)| v.trim().to_string());
    let model = text
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(value);
    let logical_threads = text
        .lines()
        .filter(|l| l.split(':').next().map(str::trim) == Some("processor"))
        .count();
    let mut sockets: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("physical id"))
        .filter_map(value)
        .collect();
    sockets.sort();
    sockets.dedup();
    CpuInfo {
        model,
        logical_threads,
        sockets: sockets.len().max(1),
    }
}

/// TDP from the user, else the table (times sockets), else 4 W per logical thread.
pub fn resolve_tdp(user_w: Option<f64>, cpu: &CpuInfo) -> Result<Tdp, MeterError> {
    if let Some(w) = user_w {
        if !(w.is_finite() && w > 0.0) {
            return Err(MeterError::Device {
                meter: METER,
                message: format!("--cpu-tdp-w must be a positive number of watts, got {w}"),
            });
        }
        return Ok(Tdp {
            watts: w,
            note: format!("TDP {w} W from --cpu-tdp-w (user)"),
        });
    }
    if let Some((part, w)) = cpu.model.as_deref().and_then(known_tdp_w) {
        return Ok(Tdp {
            watts: w * cpu.sockets as f64,
            note: format!(
                "TDP {} W from the known-model table ({part}: {w} W spec TDP x {} socket(s))",
                w * cpu.sockets as f64,
                cpu.sockets
            ),
        });
    }
    let threads = if cpu.logical_threads > 0 {
        cpu.logical_threads
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    let w = WATTS_PER_THREAD * threads as f64;
    Ok(Tdp {
        watts: w,
        note: format!(
            "TDP {w} W from the fallback 4 W per logical thread ({threads} threads; model {:?} \
             not in the table)",
            cpu.model.as_deref().unwrap_or("unknown")
        ),
    })
}

pub fn parse_mem_total_kb(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// 5 W per 8 GiB DIMM-equivalent (rounded up: MemTotal is a little below installed memory),
/// at least 10 W.
pub fn dram_power_w(mem_total_kb: u64) -> f64 {
    let gib = mem_total_kb as f64 / (1024.0 * 1024.0);
    (DRAM_W_PER_DIMM * (gib / DRAM_GIB_PER_DIMM).ceil()).max(DRAM_MIN_W)
}

/// Source of machine-wide CPU times; injectable for tests.
pub trait CpuTimesReader: Send + Sync {
    fn read(&self) -> Result<SystemCpuTimes, String>;
    /// This process's CPU ticks, for the harness's share of the machine (measurement.md
    /// section 2: the utilisation is machine-wide, so other processes raise the estimate).
    fn read_self_ticks(&self) -> Result<u64, String> {
        Err("this reader has no per-process CPU time".into())
    }
}

impl CpuTimesReader for ProcPaths {
    fn read(&self) -> Result<SystemCpuTimes, String> {
        self.read_system()
    }
    fn read_self_ticks(&self) -> Result<u64, String> {
        ProcPaths::read_self_ticks(self)
    }
}

struct Trace {
    /// (own ticks, machine times) when the window opened.
    start: Option<(u64, SystemCpuTimes)>,
    last: Option<SystemCpuTimes>,
    last_t_s: f64,
    /// (t_s, utilisation over the interval ending there)
    points: Vec<(f64, f64)>,
    read_errors: usize,
}

struct Shared {
    reader: Arc<dyn CpuTimesReader>,
    origin: Instant,
    tdp_w: f64,
    trace: Mutex<Trace>,
}

impl Shared {
    fn sample(&self) -> f64 {
        let mut tr = self.trace.lock().unwrap_or_else(PoisonError::into_inner);
        let t_s = self.origin.elapsed().as_secs_f64();
        let now = self.reader.read();
        let u = match (&tr.last, &now) {
            (Some(a), Ok(b)) => utilisation(*a, *b),
            _ => None,
        };
        let u = match (u, &now) {
            (Some(u), _) => u,
            // No tick elapsed between reads: carry the previous utilisation.
            (None, Ok(_)) if tr.last.is_some() => tr.points.last().map_or(0.0, |p| p.1),
            _ => {
                // Unreadable: charge full load, an upper bound, and say so in the flags.
                tr.read_errors += 1;
                1.0
            }
        };
        if let Ok(b) = now {
            tr.last = Some(b);
        }
        if t_s > tr.last_t_s {
            tr.points.push((t_s, u));
            tr.last_t_s = t_s;
        }
        integrate_cpu_estimate_j(self.tdp_w, &tr.points)
    }
}

fn read_share_point(r: &dyn CpuTimesReader) -> Option<(u64, SystemCpuTimes)> {
    Some((r.read_self_ticks().ok()?, r.read().ok()?))
}

/// Components `cpu` (`estimated_tdp_load`) and `dram` (`estimated_constant`), boundary H.
pub struct EstimateMeter {
    tdp: Tdp,
    dram_w: f64,
    dram_note: String,
    reader: Arc<dyn CpuTimesReader>,
    interval: Duration,
    session: Option<(Arc<Shared>, Option<Poller<()>>)>,
}

impl EstimateMeter {
    /// From this machine's /proc/cpuinfo and /proc/meminfo; unreadable files fall back to the
    /// per-thread TDP and the 10 W DRAM floor (stated in the notes).
    pub fn new(user_tdp_w: Option<f64>) -> Result<Self, MeterError> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let tdp = resolve_tdp(user_tdp_w, &parse_cpuinfo(&cpuinfo))?;
        let mem_kb = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| parse_mem_total_kb(&m));
        let (dram_w, dram_note) = match mem_kb {
            Some(kb) => (
                dram_power_w(kb),
                format!(
                    "{} W constant: 5 W per 8 GiB DIMM-equivalent of MemTotal {:.1} GiB, at \
                     least 10 W",
                    dram_power_w(kb),
                    kb as f64 / 1048576.0
                ),
            ),
            None => (
                DRAM_MIN_W,
                "10 W constant: MemTotal unreadable, the 10 W floor".to_string(),
            ),
        };
        Ok(Self::with_parts(
            tdp,
            dram_w,
            dram_note,
            Arc::new(ProcPaths::default()),
            DEFAULT_INTERVAL,
        ))
    }

    pub fn with_parts(
        tdp: Tdp,
        dram_w: f64,
        dram_note: String,
        reader: Arc<dyn CpuTimesReader>,
        interval: Duration,
    ) -> Self {
        Self {
            tdp,
            dram_w,
            dram_note,
            reader,
            interval,
            session: None,
        }
    }

    pub fn tdp(&self) -> &Tdp {
        &self.tdp
    }

    pub fn dram_w(&self) -> f64 {
        self.dram_w
    }

    fn elapsed_s(&self) -> Result<f64, MeterError> {
        self.session
            .as_ref()
            .map(|(s, _)| s.origin.elapsed().as_secs_f64())
            .ok_or(MeterError::Protocol(METER, "used before start"))
    }
}

impl Meter for EstimateMeter {
    fn name(&self) -> &'static str {
        METER
    }

    fn boundary(&self) -> Boundary {
        Boundary::Host
    }

    fn components(&self) -> Vec<ComponentInfo> {
        vec![
            ComponentInfo {
                component: "cpu".into(),
                boundary: Boundary::Host,
                source: Source::EstimatedTdpLoad,
                sample_interval_ms: self.interval.as_secs_f64() * 1e3,
                note: Some(self.tdp.note.clone()),
            },
            ComponentInfo {
                component: "dram".into(),
                boundary: Boundary::Host,
                source: Source::EstimatedConstant,
                sample_interval_ms: 0.0,
                note: Some(self.dram_note.clone()),
            },
        ]
    }

    fn start(&mut self) -> Result<(), MeterError> {
        if self.session.is_some() {
            return Err(MeterError::Protocol(METER, "start while a window is open"));
        }
        let origin = Instant::now();
        let shared = Arc::new(Shared {
            reader: Arc::clone(&self.reader),
            origin,
            tdp_w: self.tdp.watts,
            trace: Mutex::new(Trace {
                start: read_share_point(self.reader.as_ref()),
                last: self.reader.read().ok(),
                last_t_s: 0.0,
                points: Vec::new(),
                read_errors: 0,
            }),
        });
        let poll = Arc::clone(&shared);
        let poller = Poller::spawn("estimate", self.interval, origin, move || {
            poll.sample();
            Ok(())
        })?;
        self.session = Some((shared, Some(poller)));
        Ok(())
    }

    fn read(&mut self) -> Result<Vec<f64>, MeterError> {
        let t_s = self.elapsed_s()?;
        let (shared, _) = self
            .session
            .as_ref()
            .ok_or(MeterError::Protocol(METER, "read before start"))?;
        Ok(vec![shared.sample(), self.dram_w * t_s])
    }

    fn stop(&mut self) -> Result<MeterReport, MeterError> {
        let (shared, poller) = self
            .session
            .take()
            .ok_or(MeterError::Protocol(METER, "stop before start"))?;
        drop(poller.map(Poller::stop));
        let cpu_j = shared.sample();
        let tr = shared.trace.lock().unwrap_or_else(PoisonError::into_inner);
        let t_end_s = tr.last_t_s;
        let dram_j = self.dram_w * t_end_s;
        let mut timeline = Vec::with_capacity(tr.points.len() * 2);
        for (i, &(t_s, u)) in tr.points.iter().enumerate() {
            timeline.push(PowerSample {
                t_s,
                component: "cpu".into(),
                energy_j: integrate_cpu_estimate_j(self.tdp.watts, &tr.points[..=i]),
                power_w: Some(codecarbon_cpu_power_w(self.tdp.watts, u)),
            });
            timeline.push(PowerSample {
                t_s,
                component: "dram".into(),
                energy_j: self.dram_w * t_s,
                power_w: Some(self.dram_w),
            });
        }
        let mean_u = if t_end_s > 0.0 {
            let mut prev = 0.0;
            tr.points
                .iter()
                .map(|&(t, u)| {
                    let d = (t - prev) * u;
                    prev = t;
                    d
                })
                .sum::<f64>()
                / t_end_s
        } else {
            0.0
        };
        let mut flags = Vec::new();
        let mut provenance = serde_json::Map::new();
        provenance.insert("cpu_tdp_w".into(), json!(self.tdp.watts));
        provenance.insert("cpu_tdp_origin".into(), json!(self.tdp.note));
        provenance.insert("cpu_mean_utilisation".into(), json!(mean_u));
        provenance.insert("dram_estimate_w".into(), json!(self.dram_w));
        provenance.insert(
            "estimate_formula".into(),
            json!("CodeCarbon 3.3: P = TDP * (0.1 + 0.9 * u^3)"),
        );
        // Machine-wide utilisation charges other processes' load to this run: say how much.
        match (tr.start, read_share_point(self.reader.as_ref())) {
            (Some((s0, y0)), Some((s1, y1))) => {
                if let Some(share) = cpu_share(s0, s1, y0, y1) {
                    provenance.insert("cpu_harness_fraction".into(), json!(share.harness_fraction));
                    provenance.insert("cpu_others_fraction".into(), json!(share.others_fraction));
                    if share.contended() {
                        flags.push("cpu_contended".to_string());
                    }
                }
            }
            _ => {
                provenance.insert(
                    "cpu_share".into(),
                    json!("unknown: per-process CPU time unreadable"),
                );
            }
        }
        if tr.read_errors > 0 {
            flags.push("cpu_utilisation_unavailable".to_string());
            provenance.insert("cpu_utilisation_read_errors".into(), json!(tr.read_errors));
        }
        Ok(MeterReport {
            components: vec![
                ComponentEnergy {
                    component: "cpu".into(),
                    source: Source::EstimatedTdpLoad,
                    energy_j: cpu_j,
                    sample_interval_ms: self.interval.as_secs_f64() * 1e3,
                    coverage: 1.0,
                    counter_to_integral_ratio: None,
                    note: Some(self.tdp.note.clone()),
                },
                ComponentEnergy {
                    component: "dram".into(),
                    source: Source::EstimatedConstant,
                    energy_j: dram_j,
                    sample_interval_ms: 0.0,
                    coverage: 1.0,
                    counter_to_integral_ratio: None,
                    note: Some(self.dram_note.clone()),
                },
            ],
            flags,
            timeline,
            provenance,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecarbon_formula_points() {
        // measurement.md section 2: TDP 100 W gives 10 W, 21.25 W, 100 W.
        assert!((codecarbon_cpu_power_w(100.0, 0.0) - 10.0).abs() < 1e-12);
        assert!((codecarbon_cpu_power_w(100.0, 0.5) - 21.25).abs() < 1e-12);
        assert!((codecarbon_cpu_power_w(100.0, 1.0) - 100.0).abs() < 1e-12);
        assert!((codecarbon_cpu_power_w(100.0, 1.5) - 100.0).abs() < 1e-12);
    }

    #[test]
    fn integration_over_a_scripted_trace() {
        // 1 s at u=0 (10 W), 2 s at u=0.5 (21.25 W), 0.5 s at u=1 (100 W):
        // 10 + 42.5 + 50 = 102.5 J.
        let trace = [(1.0, 0.0), (3.0, 0.5), (3.5, 1.0)];
        assert!((integrate_cpu_estimate_j(100.0, &trace) - 102.5).abs() < 1e-9);
    }

    #[test]
    fn tdp_origins() {
        let cpu = parse_cpuinfo(
            "processor\t: 0\nmodel name\t: AMD EPYC 7763 64-Core Processor\nphysical id\t: 0\n\
             processor\t: 1\nmodel name\t: AMD EPYC 7763 64-Core Processor\nphysical id\t: 1\n",
        );
        assert_eq!(cpu.logical_threads, 2);
        assert_eq!(cpu.sockets, 2);
        let t = resolve_tdp(None, &cpu).expect("tdp");
        assert_eq!(t.watts, 560.0);
        assert!(t.note.contains("known-model table"), "{}", t.note);
        let user = resolve_tdp(Some(95.0), &cpu).expect("tdp");
        assert_eq!(user.watts, 95.0);
        assert!(user.note.contains("--cpu-tdp-w"));
        assert!(resolve_tdp(Some(-1.0), &cpu).is_err());
        let generic = parse_cpuinfo(
            "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n\
             processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\n",
        );
        let f = resolve_tdp(None, &generic).expect("tdp");
        assert_eq!(f.watts, 8.0);
        assert!(
            f.note.contains("4 W per logical thread (2 threads"),
            "{}",
            f.note
        );
    }

    #[test]
    fn model_match_needs_a_boundary() {
        assert_eq!(
            known_tdp_w("Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz").map(|k| k.1),
            Some(270.0)
        );
        assert_eq!(known_tdp_w("Intel(R) Xeon(R) Platinum 8380H CPU"), None);
        assert_eq!(
            known_tdp_w("Intel(R) Xeon(R) Platinum 8480+").map(|k| k.1),
            Some(350.0)
        );
    }

    #[test]
    fn dram_rule() {
        // 24,684,112 kB = 23.5 GiB -> 3 DIMM-equivalents -> 15 W.
        assert_eq!(dram_power_w(24_684_112), 15.0);
        // 4 GiB -> 1 DIMM -> 5 W -> floor 10 W.
        assert_eq!(dram_power_w(4 * 1024 * 1024), 10.0);
        assert_eq!(
            parse_mem_total_kb("MemTotal:       24684112 kB\n"),
            Some(24_684_112)
        );
    }
}
