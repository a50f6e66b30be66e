//! The labelled estimate used when no CPU/DRAM counter is readable: CodeCarbon 3.3.2's CPU
//! estimate (its TDP table and fallbacks, its load curve over measured utilisation) and its
//! constant RAM power (its DIMM-count heuristic), computed exactly as CodeCarbon does so that
//! the two tools give the same number on the same machine.
//!
//! Owns: the TDP choice and its stated origin, the DIMM heuristic, utilisation sampling from
//! /proc/stat, the integration of the formula. Must not: call itself a measurement (sources
//! are `estimated_tdp_load` and `estimated_constant`), or estimate a GPU.
//!
//! The oracle: `scripts/codecarbon-oracle.py` runs CodeCarbon's own code over a table of
//! inputs; `tests/codecarbon_oracle.rs` compares this module with its committed output and,
//! when a Python registry is reachable, with a freshly installed `codecarbon==3.3.2`.

use super::cputime::{cpu_share, utilisation, CpuTimeError, ProcPaths, SystemCpuTimes};
use super::poller::Poller;
use super::provenance::{HostFacts, Provenance};
use super::{Boundary, ComponentEnergy, ComponentInfo, Meter, MeterError, MeterReport};
use super::{PowerSample, Source};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

const METER: &str = "estimate";
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// The CodeCarbon release whose estimate this module reproduces.
pub const CODECARBON_VERSION: &str = "3.3.2";
/// CodeCarbon's `DEFAULT_POWER_PER_CORE`: watts per logical thread for a CPU model that is
/// not in its table.
pub const WATTS_PER_THREAD: f64 = 4.0;
/// CodeCarbon's `POWER_CONSTANT`: the TDP used when no CPU model string is known at all.
pub const GENERIC_TDP_W: f64 = 85.0;
/// CodeCarbon's `RAM_SLOT_POWER_X86`, and its ARM figure: watts per estimated DIMM.
pub const RAM_W_PER_DIMM_X86: f64 = 5.0;
pub const RAM_W_PER_DIMM_ARM: f64 = 1.5;
/// The RAM power floor: two x86 DIMMs (10 W), or 3 W on ARM.
pub const RAM_MIN_W_X86: f64 = 2.0 * RAM_W_PER_DIMM_X86;
pub const RAM_MIN_W_ARM: f64 = 3.0;
const KIB_PER_GIB: f64 = 1024.0 * 1024.0;

/// CodeCarbon 3.3.2 (`CPU._get_power_from_cpu_load`, machine tracking):
/// `P = TDP * (0.1 + 0.9 * u^3)`, u in [0, 1].
pub fn codecarbon_cpu_power_w(tdp_w: f64, utilisation: f64) -> f64 {
    let u = utilisation.clamp(0.0, 1.0);
    tdp_w * (0.1 + 0.9 * u * u * u)
}

/// Integrate the formula over a utilisation trace. Each entry `(t_s, u)` is the utilisation
/// measured over the interval that ends at `t_s`; the trace starts at t = 0. (CodeCarbon's
/// duration-weighted mean power times the duration is the same sum.)
pub fn integrate_cpu_estimate_j(tdp_w: f64, trace: &[(f64, f64)]) -> f64 {
    let mut prev_t_s = 0.0;
    let mut energy_j = 0.0;
    for &(t_s, u) in trace {
        energy_j += codecarbon_cpu_power_w(tdp_w, u) * (t_s - prev_t_s).max(0.0);
        prev_t_s = t_s.max(prev_t_s);
    }
    energy_j
}

/// CodeCarbon 3.3.2's `codecarbon/data/hardware/cpu_power.csv` (MIT licence; see
/// data/carbon/README.md), compiled in.
const CODECARBON_CPU_POWER_CSV: &str = include_str!("../../data/carbon/codecarbon-cpu_power.csv");

/// One row of a CPU power table: a model name and its TDP as written (CodeCarbon's pandas
/// reads the column as text because one row says `27.29.5`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct CpuPowerRow {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "TDP")]
    pub tdp: String,
}

impl CpuPowerRow {
    /// The TDP as Python's `float()` reads it; `None` where that raises.
    pub fn tdp_w(&self) -> Option<f64> {
        self.tdp.trim().parse().ok()
    }
}

/// What the table says about a CPU model.
#[derive(Debug, Clone, PartialEq)]
pub enum TableTdp<'a> {
    Found {
        name: &'a str,
        tdp_w: f64,
    },
    /// No row, or a row with TDP 0 (CodeCarbon's `if power:`).
    NotFound,
    /// The matched row's TDP is not a number: CodeCarbon 3.3.2 raises ValueError here.
    Malformed {
        name: &'a str,
        tdp: &'a str,
    },
}

/// A CPU power table and CodeCarbon's way of finding a model in it
/// (`TDP._get_matching_cpu`, non-greedy).
#[derive(Debug, Clone)]
pub struct CpuPowerTable {
    rows: Vec<CpuPowerRow>,
    /// Each row's name in lower case, for the exact matches.
    lower: Vec<String>,
    /// Each row's name as rapidfuzz's `default_process` token set.
    tokens: Vec<BTreeSet<String>>,
}

impl CpuPowerTable {
    /// Parse a `Name,TDP` table.
    pub fn from_csv(text: &str) -> Result<Self, csv::Error> {
        let rows: Vec<CpuPowerRow> = csv::Reader::from_reader(text.as_bytes())
            .deserialize()
            .collect::<Result<_, _>>()?;
        let lower = rows.iter().map(|r| r.name.to_lowercase()).collect();
        let tokens = rows.iter().map(|r| token_set(&r.name)).collect();
        Ok(Self {
            rows,
            lower,
            tokens,
        })
    }

    /// The table CodeCarbon 3.3.2 ships (4,918 rows).
    pub fn codecarbon() -> &'static Self {
        static TABLE: OnceLock<CpuPowerTable> = OnceLock::new();
        TABLE.get_or_init(|| {
            Self::from_csv(CODECARBON_CPU_POWER_CSV)
                .expect("the compiled-in CodeCarbon table parses (a unit test reads it)")
        })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row CodeCarbon would use for this CPU brand string, if any:
    /// 1. the name equal to `model` ignoring case;
    /// 2. the same after cleaning: "(R)" removed, cut at " CPU @ ", " CPU" removed,
    ///    " @ <d.d>GHz" removed;
    /// 3. the one row whose token set (lower case, non-alphanumerics as spaces) contains, or
    ///    is contained in, the cleaned model's; two or more such rows match nothing.
    ///
    /// The row is the first with its name, the one whose TDP CodeCarbon reads (a second row
    /// of the same name would make a token match ambiguous).
    pub fn lookup(&self, model: &str) -> Option<&CpuPowerRow> {
        self.equal_ignoring_case(model).or_else(|| {
            let cleaned = clean_model(model);
            self.equal_ignoring_case(&cleaned)
                .or_else(|| self.unique_token_subset(&cleaned))
        })
    }

    /// The TDP CodeCarbon's `_get_cpu_power_from_registry` returns for `model`.
    pub fn tdp(&self, model: &str) -> TableTdp<'_> {
        match self.lookup(model) {
            None => TableTdp::NotFound,
            Some(row) => match row.tdp_w() {
                Some(0.0) => TableTdp::NotFound,
                Some(w) => TableTdp::Found {
                    name: &row.name,
                    tdp_w: w,
                },
                None => TableTdp::Malformed {
                    name: &row.name,
                    tdp: &row.tdp,
                },
            },
        }
    }

    fn equal_ignoring_case(&self, model: &str) -> Option<&CpuPowerRow> {
        let wanted = model.to_lowercase();
        let i = self.lower.iter().position(|l| *l == wanted)?;
        Some(&self.rows[i])
    }

    /// rapidfuzz `token_set_ratio == 100`: both token sets non-empty and one a subset of
    /// the other. CodeCarbon accepts a match only when it is the only one.
    fn unique_token_subset(&self, model: &str) -> Option<&CpuPowerRow> {
        let wanted = token_set(model);
        if wanted.is_empty() {
            return None;
        }
        let mut hits = self
            .rows
            .iter()
            .zip(&self.tokens)
            .filter(|(_, t)| !t.is_empty() && (t.is_subset(&wanted) || wanted.is_subset(t)));
        let (first, _) = hits.next()?;
        hits.next().is_none().then_some(first)
    }
}

/// rapidfuzz's `default_process` (every non-alphanumeric character becomes a space, lower
/// case, trimmed), split into a set of tokens.
fn token_set(s: &str) -> BTreeSet<String> {
    let processed: String = s
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect::<String>()
        .to_lowercase();
    processed.split_whitespace().map(str::to_string).collect()
}

/// CodeCarbon's cleaning of a brand string before its second exact match.
fn clean_model(model: &str) -> String {
    let mut s = model.replace("(R)", "");
    if let Some(i) = s.find(" CPU @ ") {
        if i > 0 {
            s.truncate(i);
        }
    }
    remove_at_ghz(&s.replace(" CPU", ""))
}

/// `re.sub(r" @\s*\d+\.\d+GHz", "", s)`.
fn remove_at_ghz(s: &str) -> String {
    fn match_len(rest: &str) -> Option<usize> {
        let after_ws = rest.trim_start();
        let mut n = rest.len() - after_ws.len();
        let digits = |t: &str| t.bytes().take_while(u8::is_ascii_digit).count();
        let whole = digits(&rest[n..]);
        if whole == 0 || !rest[n + whole..].starts_with('.') {
            return None;
        }
        n += whole + 1;
        let frac = digits(&rest[n..]);
        if frac == 0 || !rest[n + frac..].starts_with("GHz") {
            return None;
        }
        Some(n + frac + 3)
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(" @") {
        match match_len(&rest[i + 2..]) {
            Some(len) => {
                out.push_str(&rest[..i]);
                rest = &rest[i + 2 + len..];
            }
            None => {
                out.push_str(&rest[..=i]);
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
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

/// The TDP CodeCarbon 3.3.2 gives its CPU on a machine without RAPL
/// (`ResourceTracker.set_CPU_tracking`): the user's figure (`force_cpu_power`) as is; else
/// the table's TDP times the sockets; else, for a model not in the table, 4 W per logical
/// thread times the sockets (CodeCarbon multiplies the machine-wide thread count by the
/// socket count again); else, with no model string at all, the generic 85 W.
pub fn resolve_tdp(user_w: Option<f64>, cpu: &CpuInfo) -> Result<Tdp, MeterError> {
    resolve_tdp_with(user_w, cpu, CpuPowerTable::codecarbon())
}

pub fn resolve_tdp_with(
    user_w: Option<f64>,
    cpu: &CpuInfo,
    table: &CpuPowerTable,
) -> Result<Tdp, MeterError> {
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
    let sockets = cpu.sockets.max(1);
    let Some(model) = cpu.model.as_deref().filter(|m| !m.is_empty()) else {
        return Ok(Tdp {
            watts: GENERIC_TDP_W,
            note: format!(
                "TDP {GENERIC_TDP_W} W: no CPU model name, CodeCarbon {CODECARBON_VERSION}'s \
                 generic figure"
            ),
        });
    };
    let unmatched = match table.tdp(model) {
        TableTdp::Found { name, tdp_w } => {
            let w = tdp_w * sockets as f64;
            return Ok(Tdp {
                watts: w,
                note: format!(
                    "TDP {w} W from CodeCarbon {CODECARBON_VERSION}'s CPU table ({name:?}: \
                     {tdp_w} W x {sockets} socket(s))"
                ),
            });
        }
        TableTdp::NotFound => {
            format!("model {model:?} not (uniquely) in CodeCarbon {CODECARBON_VERSION}'s CPU table")
        }
        TableTdp::Malformed { name, tdp } => format!(
            "model {model:?} matches the CodeCarbon {CODECARBON_VERSION} CPU table row {name:?}, \
             whose TDP {tdp:?} is not a number (CodeCarbon itself stops with an error here)"
        ),
    };
    let threads = if cpu.logical_threads > 0 {
        cpu.logical_threads
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    let w = WATTS_PER_THREAD * threads as f64 * sockets as f64;
    Ok(Tdp {
        watts: w,
        note: format!(
            "TDP {w} W: {unmatched}, so its fallback 4 W per logical thread x {threads} \
             threads x {sockets} socket(s)"
        ),
    })
}

pub fn parse_mem_total_kb(meminfo: &str) -> Option<u64> {
    super::system::meminfo_field_kib(meminfo, "MemTotal")
}

/// Whether CodeCarbon would take this build's machine for ARM (`platform.machine()`
/// containing "arm" or "aarch").
pub fn is_arm() -> bool {
    let arch = std::env::consts::ARCH;
    arch.contains("arm") || arch.contains("aarch")
}

/// CodeCarbon 3.3.2's `RAM._estimate_dimm_count` for a memory size in GiB.
pub fn codecarbon_dimm_count(total_gib: f64) -> u32 {
    match total_gib {
        g if g <= 2.0 => 1,
        g if g <= 16.0 => 2,
        g if g <= 64.0 => 4,
        g if g <= 128.0 => 8,
        g => [128.0, 64.0, 32.0, 16.0, 8.0, 4.0]
            .into_iter()
            .find(|&size| size <= g / 8.0)
            .map_or(8, |size: f64| ((g / size).ceil() as u32).min(32)),
    }
}

/// Watts per DIMM and the floor, x86 or ARM.
fn ram_rule(arm: bool) -> (f64, f64) {
    if arm {
        (RAM_W_PER_DIMM_ARM, RAM_MIN_W_ARM)
    } else {
        (RAM_W_PER_DIMM_X86, RAM_MIN_W_X86)
    }
}

/// CodeCarbon 3.3.2's `RAM._calculate_ram_power`: per-DIMM power with a decreasing marginal
/// figure above 4, 8 and 16 DIMMs, and a floor. Same operation order as its Python.
pub fn codecarbon_ram_power_w(total_gib: f64, arm: bool) -> f64 {
    let n = f64::from(codecarbon_dimm_count(total_gib));
    let (b, min_w) = ram_rule(arm);
    let p = if n <= 4.0 {
        b * n
    } else if n <= 8.0 {
        b * 4.0 + b * 0.9 * (n - 4.0)
    } else if n <= 16.0 {
        b * 4.0 + b * 0.9 * 4.0 + b * 0.8 * (n - 8.0)
    } else {
        b * 4.0 + b * 0.9 * 4.0 + b * 0.8 * 8.0 + b * 0.7 * (n - 16.0)
    };
    min_w.max(p)
}

/// MemTotal (kB) in GiB as psutil and CodeCarbon see it (bytes / 2^30).
pub fn mem_total_gib(mem_total_kb: u64) -> f64 {
    mem_total_kb as f64 / KIB_PER_GIB
}

/// The constant DRAM power CodeCarbon 3.3.2 gives a machine with this MemTotal.
pub fn dram_power_w(mem_total_kb: u64, arm: bool) -> f64 {
    codecarbon_ram_power_w(mem_total_gib(mem_total_kb), arm)
}

/// The DRAM power and its stated origin.
fn dram_estimate(mem_total_kb: Option<u64>, arm: bool) -> (f64, String) {
    let (per_dimm, floor_w) = ram_rule(arm);
    let kind = if arm { "ARM" } else { "x86" };
    match mem_total_kb {
        Some(kb) => {
            let gib = mem_total_gib(kb);
            let w = codecarbon_ram_power_w(gib, arm);
            let note = format!(
                "{w} W constant: CodeCarbon {CODECARBON_VERSION}'s RAM rule, MemTotal {gib:.2} \
                 GiB taken as {} DIMMs at {per_dimm} W ({kind}, less per DIMM above 4), at \
                 least {floor_w} W",
                codecarbon_dimm_count(gib)
            );
            (w, note)
        }
        None => (
            floor_w,
            format!(
                "{floor_w} W constant: MemTotal unreadable, the {kind} floor (CodeCarbon \
                 would count 0 W)"
            ),
        ),
    }
}

/// Source of machine-wide CPU times; injectable for tests.
pub trait CpuTimesReader: Send + Sync {
    fn read(&self) -> Result<SystemCpuTimes, CpuTimeError>;
    /// This process's CPU ticks, for the harness's share of the machine (docs/design/measurement.md
    /// section 2: the utilisation is machine-wide, so other processes raise the estimate).
    fn read_self_ticks(&self) -> Result<u64, CpuTimeError> {
        Err(CpuTimeError::NoPerProcess("this reader"))
    }
}

impl CpuTimesReader for ProcPaths {
    fn read(&self) -> Result<SystemCpuTimes, CpuTimeError> {
        self.read_system()
    }
    fn read_self_ticks(&self) -> Result<u64, CpuTimeError> {
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
    /// From this machine's /proc/cpuinfo and /proc/meminfo; an unreadable cpuinfo gives the
    /// generic TDP and an unreadable meminfo the DRAM floor (stated in the notes).
    pub fn new(user_tdp_w: Option<f64>) -> Result<Self, MeterError> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let tdp = resolve_tdp(user_tdp_w, &parse_cpuinfo(&cpuinfo))?;
        let mem_kb = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| parse_mem_total_kb(&m));
        let (dram_w, dram_note) = dram_estimate(mem_kb, is_arm());
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
            Ok::<(), std::convert::Infallible>(())
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
        let mut host = HostFacts {
            cpu_tdp_w: Some(self.tdp.watts),
            cpu_tdp_origin: Some(self.tdp.note.clone()),
            cpu_mean_utilisation: Some(mean_u),
            dram_estimate_w: Some(self.dram_w),
            estimate_formula: Some(format!(
                "CodeCarbon {CODECARBON_VERSION}: P = TDP * (0.1 + 0.9 * u^3); RAM from its \
                 DIMM heuristic"
            )),
            ..HostFacts::default()
        };
        // Machine-wide utilisation charges other processes' load to this run: say how much.
        match (tr.start, read_share_point(self.reader.as_ref())) {
            (Some((s0, y0)), Some((s1, y1))) => {
                host.set_cpu_share(cpu_share(s0, s1, y0, y1), &mut flags);
            }
            _ => host.cpu_share = Some("unknown: per-process CPU time unreadable".into()),
        }
        if tr.read_errors > 0 {
            flags.push("cpu_utilisation_unavailable".to_string());
            host.cpu_utilisation_read_errors = Some(tr.read_errors as u64);
        }
        let provenance = Provenance::host(host);
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
        // docs/design/measurement.md section 2: TDP 100 W gives 10 W, 21.25 W, 100 W.
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
        // CodeCarbon's table: AMD EPYC 7763, 280 W, times two sockets.
        let t = resolve_tdp(None, &cpu).expect("tdp");
        assert_eq!(t.watts, 560.0);
        assert!(
            t.note.contains("CPU table (\"AMD EPYC 7763\""),
            "{}",
            t.note
        );
        let user = resolve_tdp(Some(95.0), &cpu).expect("tdp");
        assert_eq!(user.watts, 95.0);
        assert!(user.note.contains("--cpu-tdp-w"));
        assert!(resolve_tdp(Some(-1.0), &cpu).is_err());
        // "AMD EPYC" is a token subset of many rows: no match, 4 W x 2 threads x 1 socket.
        let generic = parse_cpuinfo(
            "processor\t: 0\nmodel name\t: AMD EPYC\nprocessor\t: 1\nmodel name\t: AMD EPYC\n",
        );
        let f = resolve_tdp(None, &generic).expect("tdp");
        assert_eq!(f.watts, 8.0);
        assert!(
            f.note.contains("4 W per logical thread x 2 threads"),
            "{}",
            f.note
        );
        // No model name at all: CodeCarbon's generic 85 W, sockets not applied.
        let none =
            parse_cpuinfo("processor\t: 0\nphysical id\t: 0\nprocessor\t: 1\nphysical id\t: 1\n");
        assert_eq!(resolve_tdp(None, &none).expect("tdp").watts, 85.0);
    }

    #[test]
    fn the_codecarbon_table_parses_and_matches_like_codecarbon() {
        let t = CpuPowerTable::codecarbon();
        assert_eq!(t.len(), 4918);
        let tdp = |m: &str| match t.tdp(m) {
            TableTdp::Found { tdp_w, .. } => Some(tdp_w),
            _ => None,
        };
        // Exact ignoring case; after cleaning; by a unique token subset; ambiguous.
        assert_eq!(tdp("amd epyc 7763"), Some(280.0));
        assert_eq!(tdp("Intel(R) Core(TM) i7-8565U CPU @ 1.80GHz"), Some(15.0));
        assert_eq!(tdp("AMD EPYC 7763 64-Core Processor"), Some(280.0));
        assert_eq!(tdp("AMD EPYC"), None);
        assert_eq!(tdp("Intel(R) Xeon(R) CPU @ 2.20GHz"), None);
        assert_eq!(tdp(""), None);
        assert_eq!(
            t.tdp("Intel Celeron 1000A"),
            TableTdp::Malformed {
                name: "Intel Celeron 1000A",
                tdp: "27.29.5"
            }
        );
    }

    #[test]
    fn brand_string_cleaning() {
        assert_eq!(
            clean_model("Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz"),
            "Intel Xeon Gold 6130"
        );
        assert_eq!(remove_at_ghz("a @ 1.8GHz b @  2.10GHz"), "a b");
        assert_eq!(remove_at_ghz("a @ 2GHz @x"), "a @ 2GHz @x");
        assert_eq!(clean_model(" CPU @ 2GHz"), " @ 2GHz");
        assert_eq!(
            token_set("Core(TM)_i7-8565U"),
            token_set("core tm i7 8565u")
        );
    }

    #[test]
    fn dram_rule() {
        // This machine: MemTotal 24,683,784 kB = 23.54 GiB -> 4 DIMMs -> 20 W (CodeCarbon
        // 3.3.2 printed 20.0 W here).
        assert_eq!(dram_power_w(24_683_784, false), 20.0);
        assert_eq!(dram_power_w(24_683_784, true), 6.0);
        // 4 GiB -> 2 DIMMs -> 10 W; 96 GiB -> 8 -> 38 W; 200 GiB -> 13 -> 58 W; 4 TiB+ -> 32.
        assert_eq!(dram_power_w(4 * 1024 * 1024, false), 10.0);
        assert_eq!(codecarbon_ram_power_w(96.0, false), 38.0);
        assert_eq!(codecarbon_dimm_count(200.0), 13);
        assert_eq!(codecarbon_ram_power_w(200.0, false), 58.0);
        assert_eq!(codecarbon_dimm_count(5000.0), 32);
        assert_eq!(
            parse_mem_total_kb("MemTotal:       24684112 kB\n"),
            Some(24_684_112)
        );
        let (w, note) = dram_estimate(Some(24_683_784), false);
        assert_eq!(w, 20.0);
        assert!(note.contains("23.54 GiB taken as 4 DIMMs"), "{note}");
    }
}
