//! The GPU board meter: energy of one or more GPU boards of one vendor, read through
//! `GpuReader` (NVIDIA through NVML in `nvml_gpu`, AMD through the amdgpu driver's files in
//! `amdgpu`, scripted boards in `fake`).
//!
//! Owns: the reader seam and its vocabulary, probing each board's total-energy counter and power
//! readings (and whether the counter is trusted), the counter and power pollers, counting the
//! reads that fail during a window, the pure arithmetic over their samples (counter deltas with
//! resets, trapezoid integration with de-duplication, counter/integral checks) and each GPU's
//! provenance.
//! Must not: call a driver itself, panic where a driver is absent, estimate GPU energy from a
//! TDP, take abs() of a negative counter delta, or synchronise the device (MeasuredWindow does).

use super::poller::{Poller, Timed};
use super::provenance::{GpuEdgeFacts, GpuFacts};
use super::tenancy::{self, Owner, ProcessSm, Tenancy};
use super::{Boundary, ComponentEnergy, ComponentInfo, Meter, MeterError, MeterReport};
use super::{PowerSample, Source};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const COUNTER_INTERVAL: Duration = Duration::from_millis(100);
pub const POWER_INTERVAL: Duration = Duration::from_millis(50);
/// How often a board's compute processes and per-process utilisation are polled.
pub const TENANCY_INTERVAL: Duration = Duration::from_millis(500);
/// The counter is probed twice this far apart; it is usable only if both reads succeed and
/// the second is not smaller (many vGPUs lack it).
pub const COUNTER_PROBE_GAP: Duration = Duration::from_millis(200);
/// An amdgpu energy counter is checked against the board's power over this long (Zeus: 0.5 s).
pub const AMD_COUNTER_CHECK: Duration = Duration::from_millis(500);
/// ... and used only if counter energy / (power x time) lies strictly inside this range
/// (Zeus's loose bound: it rules out a counter in the wrong units, not a 10 % error).
pub const AMD_COUNTER_RATIO: (f64, f64) = (0.1, 10.0);
/// Counter/integral outside this range is flagged `counter_power_mismatch` (a public report
/// shows 1.74 at idle).
pub const RATIO_OK: (f64, f64) = (0.9, 1.1);
/// `nvmlDeviceGetPowerUsage` is a trailing 1 s average on Ampere and newer.
pub const POWER_USAGE_AVERAGE_S: f64 = 1.0;

// ---------------------------------------------------------------------------------------
// What a board reader answers (the seam every vendor's driver is read through).
// ---------------------------------------------------------------------------------------

/// Mapping `cuda:i` to a device, or reading one, failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceError {
    #[error("cuda:{0} is out of range")]
    OutOfRange(usize),
    #[error("cuda:{index} requested but CUDA_VISIBLE_DEVICES={list} lists {count} device(s)")]
    NotVisible {
        index: usize,
        list: String,
        count: usize,
    },
    #[error("cannot map CUDA_VISIBLE_DEVICES entry {0:?} to an NVML device")]
    Unmappable(String),
    /// An NVML call failed (`what` names it; NVML's own message follows).
    #[error("NVML {what}: {message}")]
    Nvml { what: &'static str, message: String },
    /// A file of the amdgpu driver could not be read or made no sense.
    #[error("amdgpu {path}: {message}")]
    Sysfs { path: String, message: String },
    #[error("no power reading available")]
    NoPower,
    #[error("GPU {index} does not exist: NVML sees {count} device(s), 0 to {}", count.saturating_sub(1))]
    NoSuchDevice { index: u32, count: u32 },
    #[error("{0} is not a GPU of this node")]
    UuidNotOnNode(String),
    #[error("NVML sees no GPU on this node")]
    NoDevices,
    #[error("{0}: not supported by this driver")]
    NotSupported(&'static str),
}

/// Whose driver a board is read through. It names the meter (`nvml`, `amdgpu`), its read-error
/// flag and its power sources, and decides how the energy counter is trusted: NVML's counter
/// when it reads twice without going backwards; the amdgpu accumulator only when it agrees with
/// the board's power over `AMD_COUNTER_CHECK` (Zeus's rule: some AMD boards report an energy
/// count in the wrong units, ROCm/amdsmi issue 38).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GpuVendor {
    Nvidia,
    Amd,
}

impl GpuVendor {
    pub fn meter_name(self) -> &'static str {
        match self {
            GpuVendor::Nvidia => "nvml",
            GpuVendor::Amd => "amdgpu",
        }
    }

    /// The flag a window gets when reads of this driver failed during it.
    pub fn read_errors_flag(self) -> &'static str {
        match self {
            GpuVendor::Nvidia => "nvml_read_errors",
            GpuVendor::Amd => "amdgpu_read_errors",
        }
    }

    /// Where a power reading in `mode` comes from, as the run file names it.
    pub fn power_source(self, mode: PowerMode) -> &'static str {
        match (self, mode) {
            (_, PowerMode::None) => "none",
            (GpuVendor::Nvidia, PowerMode::Instant) => "nvml_field_186_power_instant",
            (GpuVendor::Nvidia, PowerMode::Average) => "power_usage_trailing_1s_average",
            (GpuVendor::Amd, PowerMode::Instant) => "amdgpu_hwmon_power1_input",
            (GpuVendor::Amd, PowerMode::Average) => "amdgpu_hwmon_power1_average",
        }
    }
}

/// Which power reading a board gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerMode {
    /// Instantaneous power: NVML field 186 (with NVML's sample timestamp), amdgpu hwmon
    /// `power1_input`.
    Instant,
    /// A trailing average: `nvmlDeviceGetPowerUsage` (1 s on Ampere and newer), amdgpu hwmon
    /// `power1_average`.
    Average,
    None,
}

/// A board's facts that do not change during a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BoardFacts {
    pub name: Option<String>,
    pub memory_total_bytes: Option<u64>,
    /// The raw UUID (amdgpu: its `unique_id`); the meter keeps only its hash.
    pub uuid: Option<String>,
    pub power_limit_w: Option<f64>,
    pub persistence_mode: Option<bool>,
}

/// A power reading as the driver gives it: its own sample timestamp (µs) where it has one
/// (NVML field values do), and watts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawPower {
    pub nvml_timestamp_us: Option<i64>,
    pub power_w: f64,
}

/// Every read the meter makes of one GPU. `nvml_gpu::NvmlGpu` asks NVML, `amdgpu::AmdGpu` the
/// amdgpu driver's files; a fake (`measure::fake::FakeGpu`) answers from a script and fails
/// when told to, which is how the meter's handling of reads failing mid-window is tested
/// without a GPU. Any read may fail at any time; the meter counts the failures of a window and
/// flags it.
pub trait GpuReader: Send + Sync {
    fn vendor(&self) -> GpuVendor;
    /// The total-energy counter, mJ since the driver loaded (never decreasing except at a
    /// driver reset; a reader whose hardware counter is narrower unwraps it).
    fn total_energy_mj(&self) -> Result<u64, DeviceError>;
    /// One power reading in `mode` (`PowerMode::None` is always an error).
    fn power(&self, mode: PowerMode) -> Result<RawPower, DeviceError>;
    /// State at a window edge; a field is `None` where its read failed or the driver has no
    /// such fact.
    fn edge_facts(&self) -> GpuEdgeFacts;
    /// Name, memory, UUID, power limit, persistence; `None` where a read failed.
    fn board_facts(&self) -> BoardFacts;
    /// Where the energy counter comes from, for the probe's note (`energy counter` by default).
    fn counter_source(&self) -> String {
        "energy counter".to_string()
    }
    /// The compute processes on the board now (host PIDs), where the driver can say.
    fn compute_pids(&self) -> Result<Vec<u32>, DeviceError> {
        Err(DeviceError::NotSupported("compute processes"))
    }
    /// The driver's per-process SM-utilisation samples newer than `since_us` (NVML's CPU
    /// timestamps), where it keeps them.
    fn process_sm(&self, _since_us: u64) -> Result<Vec<ProcessSm>, DeviceError> {
        Err(DeviceError::NotSupported("per-process utilisation"))
    }
    /// The board's MIG instances (`NVIDIA H100 80GB HBM3 MIG 3g.40gb`, ...) when MIG is on;
    /// `None` when it is off or the driver cannot say.
    fn mig_instances(&self) -> Option<Vec<String>> {
        None
    }
}

// ---------------------------------------------------------------------------------------
// Pure arithmetic over samples (unit-tested without a GPU).
// ---------------------------------------------------------------------------------------

/// A reading of the total-energy counter, `t_s` after the window opened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterSample {
    pub t_s: f64,
    pub energy_mj: u64,
}

/// A power reading, `t_s` after the window opened. `nvml_timestamp_us` is NVML's own sample
/// time where it gives one (field values do): equal timestamps are the same measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerReading {
    pub t_s: f64,
    pub nvml_timestamp_us: Option<i64>,
    pub power_w: f64,
}

/// Sort by time and drop readings that repeat the previous kept NVML timestamp: polling at
/// 50 ms returns the same sample again when NVML has not refreshed it, and counting it twice
/// would weight that value double.
pub fn dedup_power(readings: &[PowerReading]) -> Vec<PowerReading> {
    let mut sorted: Vec<PowerReading> = readings
        .iter()
        .copied()
        .filter(|r| r.t_s.is_finite() && r.power_w.is_finite())
        .collect();
    sorted.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
    let mut out: Vec<PowerReading> = Vec::with_capacity(sorted.len());
    for r in sorted {
        if let (Some(last), Some(ts)) = (out.last(), r.nvml_timestamp_us) {
            if last.nvml_timestamp_us == Some(ts) {
                continue;
            }
        }
        out.push(r);
    }
    out
}

/// Trapezoid rule over (t_s, watts) points in time order.
pub fn trapezoid_j(points: &[(f64, f64)]) -> f64 {
    points
        .windows(2)
        .map(|w| 0.5 * (w[0].1 + w[1].1) * (w[1].0 - w[0].0))
        .sum()
}

/// Energy of power readings over `[t0_s, t1_s]`, with the fraction of the interval that lies
/// between the first and last reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerIntegral {
    pub energy_j: f64,
    pub coverage: f64,
}

/// De-duplicate, then integrate with the trapezoid rule over `[t0_s, t1_s]`: interpolate at
/// the edges where readings exist on both sides, hold the nearest reading where they do not
/// (that part is outside `coverage`).
pub fn integrate_power(readings: &[PowerReading], t0_s: f64, t1_s: f64) -> PowerIntegral {
    let span_s = t1_s - t0_s;
    let r = dedup_power(readings);
    if r.is_empty() || span_s <= 0.0 {
        return PowerIntegral {
            energy_j: 0.0,
            coverage: 0.0,
        };
    }
    let at = |t: f64| -> f64 {
        // Linear interpolation inside, hold outside.
        let first = r[0];
        let last = r[r.len() - 1];
        if t <= first.t_s {
            return first.power_w;
        }
        if t >= last.t_s {
            return last.power_w;
        }
        let i = r.partition_point(|x| x.t_s <= t);
        let (a, b) = (r[i - 1], r[i]);
        if b.t_s > a.t_s {
            a.power_w + (b.power_w - a.power_w) * (t - a.t_s) / (b.t_s - a.t_s)
        } else {
            a.power_w
        }
    };
    let mut points = vec![(t0_s, at(t0_s))];
    points.extend(
        r.iter()
            .filter(|x| x.t_s > t0_s && x.t_s < t1_s)
            .map(|x| (x.t_s, x.power_w)),
    );
    points.push((t1_s, at(t1_s)));
    let covered_s = (r[r.len() - 1].t_s.min(t1_s) - r[0].t_s.max(t0_s)).max(0.0);
    PowerIntegral {
        energy_j: trapezoid_j(&points),
        coverage: (covered_s / span_s).clamp(0.0, 1.0),
    }
}

/// Counter energy over a window with resets handled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterEnergy {
    pub energy_j: f64,
    /// Intervals where the counter went backwards.
    pub resets: usize,
    /// Energy of those intervals, taken from the power integral.
    pub filled_from_power_j: f64,
}

/// Sum counter deltas between consecutive samples. A counter that goes backwards was reset:
/// that interval is filled from the power integral, never from abs() of the delta.
pub fn counter_energy(counter: &[CounterSample], power: &[PowerReading]) -> CounterEnergy {
    let mut c: Vec<CounterSample> = counter.to_vec();
    c.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
    let mut out = CounterEnergy {
        energy_j: 0.0,
        resets: 0,
        filled_from_power_j: 0.0,
    };
    for w in c.windows(2) {
        if w[1].energy_mj >= w[0].energy_mj {
            out.energy_j += (w[1].energy_mj - w[0].energy_mj) as f64 * 1e-3;
        } else {
            let fill = integrate_power(power, w[0].t_s, w[1].t_s).energy_j;
            out.resets += 1;
            out.filled_from_power_j += fill;
            out.energy_j += fill;
        }
    }
    out
}

/// counter / integral, where the integral is positive.
pub fn counter_integral_ratio(counter_j: f64, integral_j: f64) -> Option<f64> {
    (integral_j > 0.0 && counter_j.is_finite()).then(|| counter_j / integral_j)
}

pub fn is_mismatch(ratio: f64) -> bool {
    !(RATIO_OK.0..=RATIO_OK.1).contains(&ratio)
}

/// One GPU's energy over a window, with its flags.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuEnergy {
    pub source: Source,
    pub energy_j: f64,
    pub integral_j: Option<f64>,
    pub counter_to_integral_ratio: Option<f64>,
    pub coverage: f64,
    pub resets: usize,
    pub flags: Vec<String>,
}

/// Pure core of the NVML meter: counter samples (None when the counter is unusable) and power
/// readings over `[0, t_end_s]` to energy, source, ratio and flags.
pub fn gpu_window_energy(
    counter: Option<&[CounterSample]>,
    power: &[PowerReading],
    t_end_s: f64,
) -> GpuEnergy {
    let integral = (!power.is_empty()).then(|| integrate_power(power, 0.0, t_end_s));
    let mut flags = Vec::new();
    match counter.filter(|c| c.len() >= 2) {
        Some(c) => {
            let ce = counter_energy(c, power);
            if ce.resets > 0 {
                flags.push("counter_reset".to_string());
            }
            let ratio = integral.and_then(|i| counter_integral_ratio(ce.energy_j, i.energy_j));
            if ratio.is_some_and(is_mismatch) {
                flags.push("counter_power_mismatch".to_string());
            }
            GpuEnergy {
                source: Source::MeasuredCounter,
                energy_j: ce.energy_j,
                integral_j: integral.map(|i| i.energy_j),
                counter_to_integral_ratio: ratio,
                coverage: counter_coverage(c, t_end_s),
                resets: ce.resets,
                flags,
            }
        }
        None => match integral {
            Some(i) => GpuEnergy {
                source: Source::MeasuredPowerIntegrated,
                energy_j: i.energy_j,
                integral_j: Some(i.energy_j),
                counter_to_integral_ratio: None,
                coverage: i.coverage,
                resets: 0,
                flags,
            },
            None => GpuEnergy {
                source: Source::Unavailable,
                energy_j: 0.0,
                integral_j: None,
                counter_to_integral_ratio: None,
                coverage: 0.0,
                resets: 0,
                flags: vec!["gpu_no_samples".to_string()],
            },
        },
    }
}

/// A counter whose first and last readings lie this close to the window's edges covers the
/// window (an edge read takes microseconds to a few milliseconds). Farther, an edge read
/// failed: the part before the first or after the last reading is missing from the energy and
/// shows as `coverage` below 1, never filled in.
pub const EDGE_SLACK_S: f64 = 0.01;

/// The share of `[0, t_end_s]` the counter readings span (see `EDGE_SLACK_S`).
pub fn counter_coverage(counter: &[CounterSample], t_end_s: f64) -> f64 {
    let first = counter.iter().map(|c| c.t_s).fold(f64::INFINITY, f64::min);
    let last = counter
        .iter()
        .map(|c| c.t_s)
        .fold(f64::NEG_INFINITY, f64::max);
    if !(first.is_finite() && last.is_finite()) || t_end_s <= 0.0 {
        return 0.0;
    }
    let head_s = if first > EDGE_SLACK_S { first } else { 0.0 };
    let tail_s = if t_end_s - last > EDGE_SLACK_S {
        t_end_s - last
    } else {
        0.0
    };
    (1.0 - (head_s + tail_s) / t_end_s).clamp(0.0, 1.0)
}

/// Bound on the edge error of integrating a trailing 1 s average: each edge can misattribute
/// up to 1 s of the spread between the highest and lowest power seen.
pub fn trailing_average_edge_bound_j(power: &[PowerReading]) -> f64 {
    let (lo, hi) = power
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), r| {
            (l.min(r.power_w), h.max(r.power_w))
        });
    if lo.is_finite() && hi.is_finite() {
        2.0 * POWER_USAGE_AVERAGE_S * (hi - lo)
    } else {
        0.0
    }
}

/// First 16 hex digits of SHA-256 of the UUID: identifies a board across runs without
/// publishing its serial identity.
pub fn hash_uuid(uuid: &str) -> String {
    hex::encode(Sha256::digest(uuid.as_bytes()).get(..8).unwrap_or_default())
}

// ---------------------------------------------------------------------------------------
// The meter over `GpuReader`s (NVML itself is behind that trait, in `nvml_gpu`).
// ---------------------------------------------------------------------------------------

fn unavailable(vendor: GpuVendor, reason: String) -> MeterError {
    MeterError::Unavailable {
        meter: vendor.meter_name(),
        reason,
    }
}

/// A power reading `t_s` after the window opened.
fn read_power(
    reader: &dyn GpuReader,
    mode: PowerMode,
    t_s: f64,
) -> Result<PowerReading, DeviceError> {
    let raw = reader.power(mode)?;
    Ok(PowerReading {
        t_s,
        nvml_timestamp_us: raw.nvml_timestamp_us,
        power_w: raw.power_w,
    })
}

struct Gpu {
    reader: Arc<dyn GpuReader>,
    component: String,
    counter_usable: bool,
    power_mode: PowerMode,
    probe_note: String,
}

/// One poll of a board's tenants: its compute processes and new SM samples, each with its owner.
type TenancyPoll = (Vec<(u32, Owner)>, Vec<(ProcessSm, Owner)>);

/// Poll who uses the board (`since_us`: the newest SM sample already seen).
fn poll_tenancy(reader: &dyn GpuReader, since_us: &mut u64) -> Result<TenancyPoll, DeviceError> {
    let own = std::process::id();
    let proc_root = std::path::Path::new("/proc");
    let procs = reader
        .compute_pids()?
        .into_iter()
        .map(|p| (p, tenancy::owner(proc_root, p, own)))
        .collect();
    let sm = match reader.process_sm(*since_us) {
        Ok(v) => v,
        Err(DeviceError::NotSupported(_)) => Vec::new(),
        Err(e) => return Err(e),
    };
    if let Some(latest) = sm.iter().map(|x| x.timestamp_us).max() {
        *since_us = (*since_us).max(latest);
    }
    let sm = sm
        .into_iter()
        .map(|x| (x, tenancy::owner(proc_root, x.pid, own)))
        .collect();
    Ok((procs, sm))
}

struct GpuSession {
    counter_edges: Vec<CounterSample>,
    power_edges: Vec<PowerReading>,
    counter_poller: Option<Poller<u64>>,
    power_poller: Option<Poller<(Option<i64>, f64)>>,
    /// Who used the board: polled while the window is open, and read at its edges.
    tenancy_poller: Option<Poller<TenancyPoll>>,
    tenancy_edges: Vec<TenancyPoll>,
    tenancy_since_us: u64,
    start_facts: GpuEdgeFacts,
    /// NVML reads of this window that failed (edges, marks and polled samples) and the first
    /// one's message: the energy is computed from the reads that succeeded.
    read_errors: usize,
    first_read_error: Option<String>,
}

impl GpuSession {
    fn failed_read(&mut self, e: impl std::fmt::Display) {
        self.read_errors += 1;
        self.first_read_error.get_or_insert_with(|| e.to_string());
    }

    fn failed_polls<T>(&mut self, log: &super::poller::PollLog<T>) {
        self.read_errors += log.errors;
        if let Some(first) = &log.first_error {
            self.first_read_error.get_or_insert_with(|| first.clone());
        }
    }

    /// Who used the board over the window (the edge polls and the poller's), stopping the
    /// poller; `None` where the driver names no processes.
    fn tenancy(&mut self) -> Option<Tenancy> {
        let reader_polls = self.tenancy_poller.take().map(Poller::stop)?;
        self.failed_polls(&reader_polls);
        let mut t = Tenancy::default();
        for (procs, sm) in self
            .tenancy_edges
            .iter()
            .chain(reader_polls.samples.iter().map(|x| &x.value))
        {
            t.add_processes(procs);
            t.add_sm_samples(sm);
        }
        Some(t)
    }

    /// Read the counter and the power at `t_s` (a window edge or a mark).
    fn read_edge(&mut self, g: &Gpu, t_s: f64) {
        if g.counter_usable {
            match g.reader.total_energy_mj() {
                Ok(mj) => self
                    .counter_edges
                    .push(CounterSample { t_s, energy_mj: mj }),
                Err(e) => self.failed_read(e),
            }
        }
        if g.power_mode != PowerMode::None {
            match read_power(g.reader.as_ref(), g.power_mode, t_s) {
                Ok(p) => self.power_edges.push(p),
                Err(e) => self.failed_read(e),
            }
        }
    }
}

/// Say in the report that driver reads failed during the window: the flag
/// (`nvml_read_errors`, `amdgpu_read_errors`; never a silently short figure) and, in the GPU's
/// provenance, how many and the first.
pub fn note_read_errors(
    vendor: GpuVendor,
    flags: &mut Vec<String>,
    facts: &mut GpuFacts,
    errors: usize,
    first: Option<&str>,
) {
    if errors == 0 {
        return;
    }
    flags.push(vendor.read_errors_flag().to_string());
    facts.read_errors = Some(errors as u64);
    facts.first_read_error = first.map(str::to_string);
}

struct Session {
    origin: Instant,
    gpus: Vec<GpuSession>,
}

/// The driver's versions, read once when the meter is made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverVersions {
    pub nvml_driver: Option<String>,
    pub cuda_driver: Option<String>,
}

/// The board meter for one or more GPUs of one vendor; components `gpu:<index>`.
pub struct GpuMeter {
    vendor: GpuVendor,
    gpus: Vec<Gpu>,
    /// The node's other GPUs (`nvml 2 (NVIDIA H100 ...)`), present but outside this meter.
    not_metered: Vec<String>,
    /// Which devices these are and why (`nvml 0,1: --devices`), for a multi-GPU window.
    selection: Option<String>,
    driver: DriverVersions,
    counter_interval: Duration,
    power_interval: Duration,
    session: Option<Session>,
}

impl std::fmt::Debug for GpuMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gpus: Vec<String> = self
            .gpus
            .iter()
            .map(|g| format!("{}: {}", g.component, g.probe_note))
            .collect();
        f.debug_struct("GpuMeter")
            .field("gpus", &gpus)
            .finish_non_exhaustive()
    }
}

impl GpuMeter {
    /// The meter over GPUs read through `readers` (component name, reader), each probed as
    /// `probe` probes a real one: the counter read twice `COUNTER_PROBE_GAP` apart, then the
    /// power readings tried. A fake reader makes the whole meter testable without a GPU.
    pub fn with_readers(
        readers: Vec<(String, Arc<dyn GpuReader>)>,
        driver: DriverVersions,
    ) -> Result<Self, MeterError> {
        let Some(vendor) = readers.first().map(|(_, r)| r.vendor()) else {
            return Err(MeterError::Protocol(
                "gpu",
                "a GPU meter needs at least one GPU",
            ));
        };
        if readers.iter().any(|(_, r)| r.vendor() != vendor) {
            return Err(MeterError::Protocol(
                "gpu",
                "one GPU meter reads one vendor's boards",
            ));
        }
        let gpus = readers
            .into_iter()
            .map(|(component, reader)| probe_reader(reader, component))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            vendor,
            gpus,
            not_metered: Vec::new(),
            selection: None,
            driver,
            counter_interval: COUNTER_INTERVAL,
            power_interval: POWER_INTERVAL,
            session: None,
        })
    }

    /// Name the node's GPUs this meter leaves out; every window's provenance lists them under
    /// `gpus_not_metered`, so boundary G says which boards of the node it covers.
    pub fn with_not_metered(mut self, others: Vec<String>) -> Self {
        self.not_metered = others;
        self
    }

    /// Say which devices these are and why; every window's provenance keeps it under
    /// `gpu_devices`.
    pub fn with_selection(mut self, selection: String) -> Self {
        self.selection = Some(selection);
        self
    }

    /// One line for `joulebench env`.
    pub fn describe(&self) -> String {
        self.gpus
            .iter()
            .map(|g| format!("{}: {}", g.component, g.probe_note))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The source this meter will use (counter if every GPU has one).
    pub fn primary_source(&self) -> Source {
        if self.gpus.iter().all(|g| g.counter_usable) {
            Source::MeasuredCounter
        } else {
            Source::MeasuredPowerIntegrated
        }
    }

    fn interval_ms(&self, g: &Gpu) -> f64 {
        if g.counter_usable {
            self.counter_interval.as_secs_f64() * 1e3
        } else {
            self.power_interval.as_secs_f64() * 1e3
        }
    }
}

/// The power reading a board gives, tried instant first. An amdgpu board reading 0 W gives no
/// power figure (the second die of an MI250 reads 0: the first die's figure is both dies').
fn probe_power(reader: &dyn GpuReader) -> (PowerMode, Option<f64>, Option<String>) {
    for mode in [PowerMode::Instant, PowerMode::Average] {
        match reader.power(mode) {
            Ok(p) if reader.vendor() == GpuVendor::Amd && p.power_w <= 0.0 => {
                return (
                    PowerMode::None,
                    None,
                    Some(format!(
                        "{} reads 0 W (the driver gives this device no power figure; on an \
                         MI250 the first die reports both dies)",
                        reader.vendor().power_source(mode)
                    )),
                )
            }
            Ok(p) => return (mode, Some(p.power_w), None),
            Err(_) => continue,
        }
    }
    (
        PowerMode::None,
        None,
        Some("no power reading works".to_string()),
    )
}

/// Whether the energy counter can be used, and the probe's note on it. NVML: two reads
/// `COUNTER_PROBE_GAP` apart, the second not smaller. amdgpu: the counter's energy over
/// `AMD_COUNTER_CHECK` within a factor of 10 of the board's power times that time (Zeus's
/// check), and never trusted unchecked where the power reads nothing.
fn probe_counter(reader: &dyn GpuReader, power_w: Option<f64>) -> (bool, String) {
    let source = reader.counter_source();
    let gap = match reader.vendor() {
        GpuVendor::Nvidia => COUNTER_PROBE_GAP,
        GpuVendor::Amd => AMD_COUNTER_CHECK,
    };
    let first = reader.total_energy_mj();
    std::thread::sleep(gap);
    let second = reader.total_energy_mj();
    let (a, b) = match (&first, &second) {
        (Ok(a), Ok(b)) => (*a, *b),
        (Err(e), _) | (_, Err(e)) => return (false, format!("no {source} ({e})")),
    };
    if b < a {
        return (false, format!("{source} went backwards ({a} -> {b} mJ)"));
    }
    if reader.vendor() == GpuVendor::Nvidia {
        return (true, format!("{source} usable"));
    }
    let Some(w) = power_w else {
        return (
            false,
            format!("{source} not used: no power reading to check it against"),
        );
    };
    let measured_j = (b - a) as f64 * 1e-3;
    let expected_j = w * gap.as_secs_f64();
    let ratio = measured_j / expected_j;
    if (AMD_COUNTER_RATIO.0..AMD_COUNTER_RATIO.1).contains(&ratio) {
        (
            true,
            format!(
                "{source} usable (agrees with power over {:.1} s: {measured_j:.2} J vs {expected_j:.2} J)",
                gap.as_secs_f64()
            ),
        )
    } else {
        (
            false,
            format!(
                "{source} not used: {measured_j:.2} J over {:.1} s where power says {expected_j:.2} J (wrong units on some boards, ROCm/amdsmi issue 38)",
                gap.as_secs_f64()
            ),
        )
    }
}

fn probe_reader(reader: Arc<dyn GpuReader>, component: String) -> Result<Gpu, MeterError> {
    let vendor = reader.vendor();
    let (power_mode, power_w, power_note) = probe_power(reader.as_ref());
    let (counter_usable, counter_note) = probe_counter(reader.as_ref(), power_w);
    if !counter_usable && power_mode == PowerMode::None {
        return Err(unavailable(
            vendor,
            format!(
                "{component}: {counter_note} and {}",
                power_note.unwrap_or_else(|| "no power reading works".to_string())
            ),
        ));
    }
    let name = reader
        .board_facts()
        .name
        .unwrap_or_else(|| "unknown GPU".to_string());
    let power = match power_note {
        Some(why) if power_mode == PowerMode::None => format!("no power: {why}"),
        _ => format!("power from {}", vendor.power_source(power_mode)),
    };
    Ok(Gpu {
        reader,
        component,
        counter_usable,
        power_mode,
        probe_note: format!("{name}, {counter_note}, {power}"),
    })
}

impl Meter for GpuMeter {
    fn name(&self) -> &'static str {
        self.vendor.meter_name()
    }

    fn boundary(&self) -> Boundary {
        Boundary::Gpu
    }

    fn components(&self) -> Vec<ComponentInfo> {
        self.gpus
            .iter()
            .map(|g| ComponentInfo {
                component: g.component.clone(),
                boundary: Boundary::Gpu,
                source: if g.counter_usable {
                    Source::MeasuredCounter
                } else {
                    Source::MeasuredPowerIntegrated
                },
                sample_interval_ms: self.interval_ms(g),
                note: Some(g.probe_note.clone()),
            })
            .collect()
    }

    fn start(&mut self) -> Result<(), MeterError> {
        if self.session.is_some() {
            return Err(MeterError::Protocol(
                self.vendor.meter_name(),
                "start while a window is open",
            ));
        }
        let origin = Instant::now();
        let mut gpus = Vec::with_capacity(self.gpus.len());
        for g in &self.gpus {
            let start_facts = g.reader.edge_facts();
            let counter_poller = if g.counter_usable {
                let reader = Arc::clone(&g.reader);
                Some(Poller::spawn(
                    "nvml-counter",
                    self.counter_interval,
                    origin,
                    move || reader.total_energy_mj(),
                )?)
            } else {
                None
            };
            let power_poller = if g.power_mode != PowerMode::None {
                let reader = Arc::clone(&g.reader);
                let mode = g.power_mode;
                Some(Poller::spawn(
                    "nvml-power",
                    self.power_interval,
                    origin,
                    move || {
                        let p = reader.power(mode)?;
                        Ok::<_, DeviceError>((p.nvml_timestamp_us, p.power_w))
                    },
                )?)
            } else {
                None
            };
            // Tenancy is polled only where the driver names the board's processes.
            let mut tenancy_since_us = 0;
            let first_tenancy = poll_tenancy(g.reader.as_ref(), &mut tenancy_since_us);
            let names_processes = !matches!(first_tenancy, Err(DeviceError::NotSupported(_)));
            let tenancy_poller = if names_processes {
                let reader = Arc::clone(&g.reader);
                let mut since_us = tenancy_since_us;
                Some(Poller::spawn(
                    "gpu-tenancy",
                    TENANCY_INTERVAL,
                    origin,
                    move || poll_tenancy(reader.as_ref(), &mut since_us),
                )?)
            } else {
                None
            };
            let mut s = GpuSession {
                counter_edges: Vec::new(),
                power_edges: Vec::new(),
                counter_poller,
                power_poller,
                tenancy_poller,
                tenancy_edges: Vec::new(),
                tenancy_since_us,
                start_facts,
                read_errors: 0,
                first_read_error: None,
            };
            match first_tenancy {
                Ok(p) => s.tenancy_edges.push(p),
                Err(DeviceError::NotSupported(_)) => {}
                Err(e) => s.failed_read(e),
            }
            s.read_edge(g, origin.elapsed().as_secs_f64());
            gpus.push(s);
        }
        self.session = Some(Session { origin, gpus });
        Ok(())
    }

    fn read(&mut self) -> Result<Vec<f64>, MeterError> {
        let session = self.session.as_mut().ok_or(MeterError::Protocol(
            self.vendor.meter_name(),
            "read before start",
        ))?;
        let t_s = session.origin.elapsed().as_secs_f64();
        let mut out = Vec::with_capacity(self.gpus.len());
        for (g, s) in self.gpus.iter().zip(session.gpus.iter_mut()) {
            s.read_edge(g, t_s);
            let (counter, power) = collect(s, false);
            out.push(
                gpu_window_energy(g.counter_usable.then_some(&counter[..]), &power, t_s).energy_j,
            );
        }
        Ok(out)
    }

    fn stop(&mut self) -> Result<MeterReport, MeterError> {
        let mut session = self.session.take().ok_or(MeterError::Protocol(
            self.vendor.meter_name(),
            "stop before start",
        ))?;
        let mut report = MeterReport::default();
        let own_pid = std::process::id();
        for (g, s) in self.gpus.iter().zip(session.gpus.iter_mut()) {
            let t_end_s = session.origin.elapsed().as_secs_f64();
            s.read_edge(g, t_end_s);
            if s.tenancy_poller.is_some() {
                // A last look at the edge (samples seen before are not counted twice).
                let mut since_us = s.tenancy_since_us;
                match poll_tenancy(g.reader.as_ref(), &mut since_us) {
                    Ok(p) => s.tenancy_edges.push(p),
                    Err(e) => s.failed_read(e),
                }
            }
            let (counter, power) = collect(s, true);
            let e = gpu_window_energy(g.counter_usable.then_some(&counter[..]), &power, t_end_s);
            let mut notes = Vec::new();
            if e.resets > 0 {
                notes.push(format!(
                    "{} counter reset(s) filled from the power integral",
                    e.resets
                ));
            }
            if e.source != Source::Unavailable && e.coverage < 1.0 {
                notes.push(format!(
                    "readings cover {:.1} % of the window (reads failed at its edge): the rest is missing, not estimated",
                    e.coverage * 100.0
                ));
            }
            if g.power_mode == PowerMode::Average {
                let what = match self.vendor {
                    GpuVendor::Nvidia => "power_usage(), a trailing 1 s average",
                    GpuVendor::Amd => {
                        "hwmon power1_average, a trailing average over a firmware-set time (taken as 1 s)"
                    }
                };
                notes.push(format!(
                    "power from {what}: edge error up to {:.1} J",
                    trailing_average_edge_bound_j(&power)
                ));
            }
            report.flags.extend(e.flags.iter().cloned());
            report.components.push(ComponentEnergy {
                component: g.component.clone(),
                source: e.source,
                energy_j: e.energy_j,
                sample_interval_ms: self.interval_ms(g),
                coverage: e.coverage,
                counter_to_integral_ratio: e.counter_to_integral_ratio,
                note: (!notes.is_empty()).then(|| notes.join("; ")),
            });
            report
                .timeline
                .extend(timeline(&g.component, &counter, &power, g.counter_usable));
            let end_facts = g.reader.edge_facts();
            let tenancy = s.tenancy();
            if tenancy.as_ref().is_some_and(Tenancy::shared) {
                report.flags.push("gpu_shared".to_string());
            }
            let mig_instances = g.reader.mig_instances();
            if mig_instances.is_some() {
                report.flags.push("gpu_mig".to_string());
            }
            let board = g.reader.board_facts();
            let mut facts = GpuFacts {
                name: board.name,
                memory_total_bytes: board.memory_total_bytes,
                uuid_sha256_16: board.uuid.as_deref().map(hash_uuid),
                power_limit_w: board.power_limit_w,
                persistence_mode: board.persistence_mode,
                counter_usable: g.counter_usable,
                power_source: self.vendor.power_source(g.power_mode).to_string(),
                integral_j: e.integral_j,
                start: s.start_facts.clone(),
                end: end_facts,
                own_pid,
                read_errors: None,
                first_read_error: None,
                // Processes outside the job (this process and its descendants) seen on the
                // board during the window; NVML reports host PIDs, so one that is not visible
                // here (a PID namespace) is listed apart, as unknown.
                other_compute_pids: tenancy
                    .as_ref()
                    .map(|t| t.others.iter().copied().collect())
                    .unwrap_or_default(),
                unknown_compute_pids: tenancy
                    .as_ref()
                    .map(|t| t.unknown.iter().copied().collect())
                    .unwrap_or_default(),
                job_time_share: tenancy.as_ref().and_then(Tenancy::job_time_share),
                job_sm_share: tenancy.as_ref().and_then(Tenancy::job_sm_share),
                mig_instances,
            };
            note_read_errors(
                self.vendor,
                &mut report.flags,
                &mut facts,
                s.read_errors,
                s.first_read_error.as_deref(),
            );
            report.provenance.gpus.insert(g.component.clone(), facts);
        }
        if !self.not_metered.is_empty() {
            report.provenance.host.gpus_not_metered = Some(self.not_metered.clone());
        }
        report.provenance.host.gpu_devices = self.selection.clone();
        report.provenance.host.nvml_driver_version = self.driver.nvml_driver.clone();
        report.provenance.host.cuda_driver_version = self.driver.cuda_driver.clone();
        report.flags.sort();
        report.flags.dedup();
        Ok(report)
    }
}

/// Edge readings plus poller samples, in time order; stops the pollers when `finish`.
fn collect(s: &mut GpuSession, finish: bool) -> (Vec<CounterSample>, Vec<PowerReading>) {
    let counter_log = if finish {
        s.counter_poller.take().map(Poller::stop)
    } else {
        s.counter_poller.as_ref().map(Poller::snapshot)
    };
    let power_log = if finish {
        s.power_poller.take().map(Poller::stop)
    } else {
        s.power_poller.as_ref().map(Poller::snapshot)
    };
    // A stopped poller's failed calls belong to the window (a snapshot's are counted when
    // the poller stops).
    if finish {
        if let Some(log) = &counter_log {
            s.failed_polls(log);
        }
        if let Some(log) = &power_log {
            s.failed_polls(log);
        }
    }
    let mut counter = s.counter_edges.clone();
    if let Some(log) = counter_log {
        counter.extend(
            log.samples
                .into_iter()
                .map(|Timed { t_s, value }| CounterSample {
                    t_s,
                    energy_mj: value,
                }),
        );
    }
    counter.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
    let mut power = s.power_edges.clone();
    if let Some(log) = power_log {
        power.extend(
            log.samples
                .into_iter()
                .map(|Timed { t_s, value }| PowerReading {
                    t_s,
                    nvml_timestamp_us: value.0,
                    power_w: value.1,
                }),
        );
    }
    (counter, dedup_power(&power))
}

/// Power timeline rows, built in one pass. With a counter: one row per counter sample with
/// the cumulative counter energy (resets filled from the integral) and the latest power
/// reading; without: one row per power reading with the running trapezoid integral.
pub fn timeline(
    component: &str,
    counter: &[CounterSample],
    power: &[PowerReading],
    counter_usable: bool,
) -> Vec<PowerSample> {
    let power = dedup_power(power);
    let row = |t_s: f64, energy_j: f64, power_w: Option<f64>| PowerSample {
        t_s,
        component: component.to_string(),
        energy_j,
        power_w,
    };
    let mut rows = Vec::new();
    if counter_usable && !counter.is_empty() {
        let mut c = counter.to_vec();
        c.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
        let latest_power = |t: f64| {
            let i = power.partition_point(|p| p.t_s <= t);
            (i > 0).then(|| power[i - 1].power_w)
        };
        let mut energy_j = 0.0;
        rows.push(row(c[0].t_s, 0.0, latest_power(c[0].t_s)));
        for w in c.windows(2) {
            energy_j += counter_energy(w, &power).energy_j;
            rows.push(row(w[1].t_s, energy_j, latest_power(w[1].t_s)));
        }
    } else {
        let mut energy_j = 0.0;
        let mut prev: Option<PowerReading> = None;
        for p in &power {
            if let Some(q) = prev {
                energy_j += 0.5 * (q.power_w + p.power_w) * (p.t_s - q.t_s);
            } else {
                // Hold the first reading back to the window start, as integrate_power does.
                energy_j += p.power_w * p.t_s.max(0.0);
            }
            rows.push(row(p.t_s, energy_j, Some(p.power_w)));
            prev = Some(*p);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t_s: f64, ts: Option<i64>, power_w: f64) -> PowerReading {
        PowerReading {
            t_s,
            nvml_timestamp_us: ts,
            power_w,
        }
    }

    fn c(t_s: f64, energy_mj: u64) -> CounterSample {
        CounterSample { t_s, energy_mj }
    }

    #[test]
    fn trapezoid_known_trace() {
        // 100 W -> 200 W over 1 s, back to 100 W over 1 s: 150 + 150 J.
        let e = integrate_power(
            &[
                p(0.0, None, 100.0),
                p(1.0, None, 200.0),
                p(2.0, None, 100.0),
            ],
            0.0,
            2.0,
        );
        assert!((e.energy_j - 300.0).abs() < 1e-9);
        assert!((e.coverage - 1.0).abs() < 1e-12);
    }

    #[test]
    fn dedup_on_equal_timestamps() {
        let r = [
            p(0.00, Some(10), 100.0),
            p(0.05, Some(10), 100.0),
            p(0.10, Some(20), 300.0),
            p(0.15, Some(20), 300.0),
            p(0.20, Some(30), 100.0),
        ];
        let d = dedup_power(&r);
        assert_eq!(d.len(), 3);
        assert_eq!(d[1].t_s, 0.10);
        // Without timestamps nothing is dropped.
        let r2: Vec<_> = r.iter().map(|x| p(x.t_s, None, x.power_w)).collect();
        assert_eq!(dedup_power(&r2).len(), 5);
        // A repeated stale reading must not bias the integral: (0,100),(0.1,300),(0.2,100).
        let stale = [
            p(0.00, Some(10), 100.0),
            p(0.05, Some(10), 100.0),
            p(0.09, Some(10), 100.0),
            p(0.10, Some(20), 300.0),
            p(0.20, Some(30), 100.0),
        ];
        let e = integrate_power(&stale, 0.0, 0.2).energy_j;
        assert!((e - 40.0).abs() < 1e-9, "{e}");
    }

    #[test]
    fn edges_are_held_and_coverage_reported() {
        // Samples only in [1, 3] of a [0, 4] window at a constant 50 W.
        let e = integrate_power(&[p(1.0, None, 50.0), p(3.0, None, 50.0)], 0.0, 4.0);
        assert!((e.energy_j - 200.0).abs() < 1e-9);
        assert!((e.coverage - 0.5).abs() < 1e-12);
    }

    #[test]
    fn counter_reset_filled_from_integral_and_flagged() {
        let power: Vec<_> = (0..=40).map(|i| p(i as f64 * 0.1, None, 200.0)).collect();
        // 0-1 s: +200 J; 1-2 s: reset to 0 (would be -200,000 mJ); 2-4 s: +400 J.
        let counter = [
            c(0.0, 1_000_000),
            c(1.0, 1_200_000),
            c(2.0, 5_000),
            c(4.0, 405_000),
        ];
        let e = gpu_window_energy(Some(&counter), &power, 4.0);
        assert_eq!(e.source, Source::MeasuredCounter);
        assert_eq!(e.resets, 1);
        assert!(e.flags.contains(&"counter_reset".to_string()));
        // 200 + 200 (filled) + 400 = 800 J, never abs(): abs would give 200+1195+400.
        assert!((e.energy_j - 800.0).abs() < 1e-6, "{}", e.energy_j);
        let r = e.counter_to_integral_ratio.expect("ratio");
        assert!((r - 1.0).abs() < 1e-9);
        assert!(!e.flags.contains(&"counter_power_mismatch".to_string()));
    }

    /// A window in which NVML reads failed says so: the flag, the count and the first error
    /// in the GPU's provenance; a window without failures adds nothing.
    #[test]
    fn failed_reads_are_flagged_with_their_count() {
        let mut flags = Vec::new();
        let mut facts = GpuFacts::default();
        let quiet = facts.clone();
        note_read_errors(GpuVendor::Nvidia, &mut flags, &mut facts, 0, None);
        assert!(flags.is_empty() && facts == quiet);
        note_read_errors(
            GpuVendor::Nvidia,
            &mut flags,
            &mut facts,
            3,
            Some("total energy: GPU is lost"),
        );
        assert_eq!(flags, ["nvml_read_errors"]);
        assert_eq!(facts.read_errors, Some(3));
        assert_eq!(
            facts.first_read_error.as_deref(),
            Some("total energy: GPU is lost")
        );
        // Missing end readings leave the counter short of the window: the failed reads are
        // what the flag reports, since the arithmetic cannot see readings that never came.
        let c = |t_s: f64, energy_mj: u64| CounterSample { t_s, energy_mj };
        let short = gpu_window_energy(Some(&[c(0.0, 0), c(5.0, 500_000)]), &[], 10.0);
        assert_eq!(short.energy_j, 500.0);
    }

    #[test]
    fn mismatch_flag_outside_band() {
        let power = [p(0.0, None, 100.0), p(10.0, None, 100.0)];
        // Counter says 1740 J, integral 1000 J: ratio 1.74 as in the public idle report.
        let e = gpu_window_energy(Some(&[c(0.0, 0), c(10.0, 1_740_000)]), &power, 10.0);
        assert!((e.counter_to_integral_ratio.expect("ratio") - 1.74).abs() < 1e-9);
        assert!(e.flags.contains(&"counter_power_mismatch".to_string()));
        let ok = gpu_window_energy(Some(&[c(0.0, 0), c(10.0, 1_050_000)]), &power, 10.0);
        assert!(ok.flags.is_empty());
        assert!(!is_mismatch(0.9) && !is_mismatch(1.1) && is_mismatch(0.89));
    }

    #[test]
    fn no_counter_means_power_integrated() {
        let power = [p(0.0, None, 60.0), p(2.0, None, 60.0)];
        let e = gpu_window_energy(None, &power, 2.0);
        assert_eq!(e.source, Source::MeasuredPowerIntegrated);
        assert!((e.energy_j - 120.0).abs() < 1e-9);
        assert_eq!(e.counter_to_integral_ratio, None);
        let none = gpu_window_energy(None, &[], 2.0);
        assert_eq!(none.source, Source::Unavailable);
        assert_eq!(none.energy_j, 0.0);
    }

    #[test]
    fn timeline_is_cumulative_and_matches_totals() {
        let power: Vec<_> = (0..=20).map(|i| p(i as f64 * 0.1, None, 100.0)).collect();
        let counter = [c(0.0, 0), c(1.0, 100_000), c(1.5, 10), c(2.0, 50_010)];
        let rows = timeline("gpu:0", &counter, &power, true);
        assert_eq!(rows.len(), 4);
        let total = gpu_window_energy(Some(&counter), &power, 2.0).energy_j;
        // 100 J + 50 J filled over the reset + 50 J.
        assert!((total - 200.0).abs() < 1e-9);
        assert!((rows[3].energy_j - total).abs() < 1e-9);
        assert!(rows.windows(2).all(|w| w[1].energy_j >= w[0].energy_j));
        let rows = timeline("gpu:0", &[], &power, false);
        assert!((rows[20].energy_j - 200.0).abs() < 1e-9);
    }

    #[test]
    fn uuid_hash_is_16_hex() {
        let h = hash_uuid("GPU-12345678-1234-1234-1234-123456789abc");
        assert_eq!(h.len(), 16);
        assert!(h.chars().all(|ch| ch.is_ascii_hexdigit()));
        assert_ne!(h, hash_uuid("GPU-other"));
    }

    #[test]
    fn trailing_average_bound() {
        let power = [p(0.0, None, 100.0), p(1.0, None, 250.0)];
        assert!((trailing_average_edge_bound_j(&power) - 300.0).abs() < 1e-9);
    }
}
