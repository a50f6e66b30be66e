//! Deterministic meters for tests and dry runs: constant watts, replay of a recorded power
//! trace, and a recorder that logs the call order together with device synchronisation.
//!
//! Owns: fakes of the `Meter`, `DeviceSync`, `gpu::GpuReader` and `devices::GpuNode` seams. Must not: be chosen by `detect_meter`
//! or appear in a ranked result (their source says what they pretend to be, the meter name
//! says `fake`/`replay`).

use super::devices::GpuNode;
use super::gpu::{
    BoardFacts, DeviceError, DriverVersions, GpuReader, GpuVendor, PowerMode, RawPower,
};
use super::provenance::GpuEdgeFacts;
use super::tenancy::ProcessSm;
use super::window::DeviceSync;
use super::{Boundary, ComponentEnergy, ComponentInfo, Meter, MeterError, MeterReport};
use super::{PowerSample, Source};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// A time source in seconds; `WallClock` or a `ManualClock` a test advances.
pub trait Clock: Send + Sync {
    fn now_s(&self) -> f64;
}

/// Seconds since this clock was made.
#[derive(Debug, Clone, Copy)]
pub struct WallClock(Instant);

impl Default for WallClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for WallClock {
    fn now_s(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<Mutex<f64>>);

impl ManualClock {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn advance(&self, dt_s: f64) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) += dt_s;
    }
    pub fn set(&self, t_s: f64) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = t_s;
    }
}

impl Clock for ManualClock {
    fn now_s(&self) -> f64 {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One fake component drawing constant power.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeComponent {
    pub component: String,
    pub boundary: Boundary,
    pub source: Source,
    pub watts: f64,
}

impl FakeComponent {
    pub fn new(component: &str, boundary: Boundary, source: Source, watts: f64) -> Self {
        Self {
            component: component.to_string(),
            boundary,
            source,
            watts,
        }
    }
}

/// Constant power per component: energy = watts x elapsed time of its clock.
pub struct FakeMeter {
    components: Vec<FakeComponent>,
    clock: Arc<dyn Clock>,
    started_s: Option<f64>,
    marks: Vec<f64>,
    flags: Vec<String>,
}

impl FakeMeter {
    pub fn new(components: Vec<FakeComponent>) -> Self {
        Self {
            components,
            clock: Arc::new(WallClock::default()),
            started_s: None,
            marks: Vec::new(),
            flags: Vec::new(),
        }
    }

    /// One GPU component `gpu:0`, boundary G, source `measured_counter`, `watts` constant.
    pub fn constant(watts: f64) -> Self {
        Self::new(vec![FakeComponent::new(
            "gpu:0",
            Boundary::Gpu,
            Source::MeasuredCounter,
            watts,
        )])
    }

    /// Drive time from `clock` instead of the wall clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Flags every report will carry (to test flag merging).
    pub fn with_flags(mut self, flags: &[&str]) -> Self {
        self.flags = flags.iter().map(|f| f.to_string()).collect();
        self
    }

    fn elapsed_s(&self) -> Result<f64, MeterError> {
        let t0 = self
            .started_s
            .ok_or(MeterError::Protocol("fake", "used before start"))?;
        Ok((self.clock.now_s() - t0).max(0.0))
    }
}

impl Meter for FakeMeter {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn boundary(&self) -> Boundary {
        self.components
            .iter()
            .map(|c| c.boundary)
            .reduce(Boundary::union)
            .unwrap_or(Boundary::Gpu)
    }
    fn components(&self) -> Vec<ComponentInfo> {
        self.components
            .iter()
            .map(|c| ComponentInfo {
                component: c.component.clone(),
                boundary: c.boundary,
                source: c.source,
                sample_interval_ms: 0.0,
                note: Some(format!("fake: constant {} W", c.watts)),
            })
            .collect()
    }
    fn start(&mut self) -> Result<(), MeterError> {
        if self.started_s.is_some() {
            return Err(MeterError::Protocol("fake", "start while a window is open"));
        }
        self.started_s = Some(self.clock.now_s());
        self.marks = vec![0.0];
        Ok(())
    }
    fn read(&mut self) -> Result<Vec<f64>, MeterError> {
        let t = self.elapsed_s()?;
        self.marks.push(t);
        Ok(self.components.iter().map(|c| c.watts * t).collect())
    }
    fn stop(&mut self) -> Result<MeterReport, MeterError> {
        let t = self.elapsed_s()?;
        self.started_s = None;
        self.marks.push(t);
        let timeline = self
            .marks
            .iter()
            .flat_map(|&m| {
                self.components.iter().map(move |c| PowerSample {
                    t_s: m,
                    component: c.component.clone(),
                    energy_j: c.watts * m,
                    power_w: Some(c.watts),
                })
            })
            .collect();
        Ok(MeterReport {
            components: self
                .components
                .iter()
                .map(|c| ComponentEnergy {
                    component: c.component.clone(),
                    source: c.source,
                    energy_j: c.watts * t,
                    sample_interval_ms: 0.0,
                    coverage: 1.0,
                    counter_to_integral_ratio: None,
                    note: Some("fake meter".into()),
                })
                .collect(),
            flags: self.flags.clone(),
            timeline,
            provenance: Default::default(),
        })
    }
}

/// Energy of a piecewise-linear power trace from 0 to `t_s`: trapezoids between points, the
/// first value held before the trace and the last value held after it.
pub fn trace_energy_j(trace: &[(f64, f64)], t_s: f64) -> f64 {
    if trace.is_empty() || t_s <= 0.0 {
        return 0.0;
    }
    let mut e = 0.0;
    let (first_t, first_w) = trace[0];
    e += first_w * first_t.clamp(0.0, t_s);
    for w in trace.windows(2) {
        let (t0, p0) = w[0];
        let (t1, p1) = w[1];
        if t_s <= t0 || t1 <= t0 {
            continue;
        }
        let end = t1.min(t_s);
        let p_end = p0 + (p1 - p0) * (end - t0) / (t1 - t0);
        e += 0.5 * (p0 + p_end) * (end - t0);
    }
    let (last_t, last_w) = trace[trace.len() - 1];
    if t_s > last_t {
        e += last_w * (t_s - last_t.max(0.0));
    }
    e
}

/// Replays a recorded power trace `(t_s, watts)` of one component as energy.
pub struct ReplayMeter {
    component: FakeComponent,
    trace: Vec<(f64, f64)>,
    clock: Arc<dyn Clock>,
    started_s: Option<f64>,
}

impl ReplayMeter {
    /// `trace` is sorted by time; `component.watts` is ignored.
    pub fn new(
        component: &str,
        boundary: Boundary,
        source: Source,
        trace: Vec<(f64, f64)>,
    ) -> Self {
        let mut trace = trace;
        trace.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self {
            component: FakeComponent::new(component, boundary, source, 0.0),
            trace,
            clock: Arc::new(WallClock::default()),
            started_s: None,
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn elapsed_s(&self) -> Result<f64, MeterError> {
        let t0 = self
            .started_s
            .ok_or(MeterError::Protocol("replay", "used before start"))?;
        Ok((self.clock.now_s() - t0).max(0.0))
    }
}

impl Meter for ReplayMeter {
    fn name(&self) -> &'static str {
        "replay"
    }
    fn boundary(&self) -> Boundary {
        self.component.boundary
    }
    fn components(&self) -> Vec<ComponentInfo> {
        vec![ComponentInfo {
            component: self.component.component.clone(),
            boundary: self.component.boundary,
            source: self.component.source,
            sample_interval_ms: 0.0,
            note: Some(format!(
                "replay of a {}-point power trace",
                self.trace.len()
            )),
        }]
    }
    fn start(&mut self) -> Result<(), MeterError> {
        if self.started_s.is_some() {
            return Err(MeterError::Protocol(
                "replay",
                "start while a window is open",
            ));
        }
        self.started_s = Some(self.clock.now_s());
        Ok(())
    }
    fn read(&mut self) -> Result<Vec<f64>, MeterError> {
        Ok(vec![trace_energy_j(&self.trace, self.elapsed_s()?)])
    }
    fn stop(&mut self) -> Result<MeterReport, MeterError> {
        let t = self.elapsed_s()?;
        self.started_s = None;
        let timeline = self
            .trace
            .iter()
            .filter(|(ts, _)| *ts <= t)
            .map(|&(ts, w)| PowerSample {
                t_s: ts,
                component: self.component.component.clone(),
                energy_j: trace_energy_j(&self.trace, ts),
                power_w: Some(w),
            })
            .collect();
        Ok(MeterReport {
            components: vec![ComponentEnergy {
                component: self.component.component.clone(),
                source: self.component.source,
                energy_j: trace_energy_j(&self.trace, t),
                sample_interval_ms: 0.0,
                coverage: 1.0,
                counter_to_integral_ratio: None,
                note: Some("replayed trace".into()),
            }],
            flags: Vec::new(),
            timeline,
            provenance: Default::default(),
        })
    }
}

/// Shared call log of `RecordingMeter` and `RecordingSync`.
pub type CallLog = Arc<Mutex<Vec<String>>>;

pub fn new_call_log() -> CallLog {
    Arc::new(Mutex::new(Vec::new()))
}

fn log(call_log: &CallLog, entry: &str) {
    call_log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(entry.to_string());
}

/// Wraps a meter and logs `start`, `read`, `stop` (and `stop` errors pass through).
pub struct RecordingMeter<M: Meter> {
    inner: M,
    log: CallLog,
}

impl<M: Meter> RecordingMeter<M> {
    pub fn new(inner: M, log: CallLog) -> Self {
        Self { inner, log }
    }
    pub fn into_inner(self) -> M {
        self.inner
    }
}

impl<M: Meter> Meter for RecordingMeter<M> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn boundary(&self) -> Boundary {
        self.inner.boundary()
    }
    fn components(&self) -> Vec<ComponentInfo> {
        self.inner.components()
    }
    fn start(&mut self) -> Result<(), MeterError> {
        log(&self.log, "start");
        self.inner.start()
    }
    fn read(&mut self) -> Result<Vec<f64>, MeterError> {
        log(&self.log, "read");
        self.inner.read()
    }
    fn stop(&mut self) -> Result<MeterReport, MeterError> {
        log(&self.log, "stop");
        self.inner.stop()
    }
}

/// A `DeviceSync` that logs `synchronize` into the same log as a `RecordingMeter`.
#[derive(Clone)]
pub struct RecordingSync {
    log: CallLog,
}

impl RecordingSync {
    pub fn new(log: CallLog) -> Self {
        Self { log }
    }
}

impl DeviceSync for RecordingSync {
    fn synchronize(&self) -> Result<(), MeterError> {
        log(&self.log, "synchronize");
        Ok(())
    }
}

/// A `DeviceSync` for CPU-only code paths and tests: nothing to wait for.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSync;

impl DeviceSync for NoSync {
    fn synchronize(&self) -> Result<(), MeterError> {
        Ok(())
    }
}

/// A GPU that answers the board meter's reads (`gpu::GpuReader`) from a script: constant
/// board power `watts`, a total-energy counter accumulating it on `clock` (from
/// `counter_start_mj`, optionally without a counter at all), NVML-style power samples with a
/// fresh timestamp per read, no other compute process, and every read failing while its
/// failure switch is on (the message says "fake NVML failure"). Its name is "Fake GPU".
pub struct FakeGpu {
    clock: Arc<dyn Clock>,
    watts: f64,
    uuid: String,
    /// Other processes on the board besides this one: (pid, SM utilisation %).
    foreign: Vec<(u32, u32)>,
    /// This process's SM utilisation % in the per-process samples.
    own_sm_util: u32,
    mig: Option<Vec<String>>,
    counter_start_mj: u64,
    has_counter: bool,
    failing: Arc<AtomicBool>,
    failed_reads: AtomicU64,
}

impl FakeGpu {
    pub fn new(watts: f64) -> Self {
        Self {
            clock: Arc::new(WallClock::default()),
            watts,
            uuid: "GPU-00000000-fake".to_string(),
            foreign: Vec::new(),
            own_sm_util: 90,
            mig: None,
            counter_start_mj: 1_000_000,
            has_counter: true,
            failing: Arc::new(AtomicBool::new(false)),
            failed_reads: AtomicU64::new(0),
        }
    }

    /// A board with this UUID (default `GPU-00000000-fake`).
    pub fn with_uuid(mut self, uuid: &str) -> Self {
        self.uuid = uuid.to_string();
        self
    }

    /// Process `pid` also runs on the board at `sm_util` % (this process's samples say
    /// `own_sm_util` %). Whether it is the job's is for the meter to find out.
    pub fn with_process(mut self, pid: u32, sm_util: u32, own_sm_util: u32) -> Self {
        self.foreign.push((pid, sm_util));
        self.own_sm_util = own_sm_util;
        self
    }

    /// The board is in MIG mode with these instances.
    pub fn with_mig(mut self, instances: &[&str]) -> Self {
        self.mig = Some(instances.iter().map(|s| s.to_string()).collect());
        self
    }

    /// The power it draws, in watts.
    pub fn watts(&self) -> f64 {
        self.watts
    }

    /// A board without a total-energy counter (the meter integrates its power).
    pub fn without_counter(mut self) -> Self {
        self.has_counter = false;
        self
    }

    /// Drive time from `clock` instead of the wall clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// While `true`, every read fails (set it from another thread mid-window).
    pub fn failure_switch(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.failing)
    }

    /// Reads refused so far.
    pub fn failed_reads(&self) -> u64 {
        self.failed_reads.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<(), DeviceError> {
        if self.failing.load(Ordering::SeqCst) {
            self.failed_reads.fetch_add(1, Ordering::SeqCst);
            return Err(DeviceError::Nvml {
                what: "fake",
                message: "fake NVML failure (switched on by the test)".to_string(),
            });
        }
        Ok(())
    }
}

impl GpuReader for FakeGpu {
    fn vendor(&self) -> GpuVendor {
        GpuVendor::Nvidia
    }

    fn total_energy_mj(&self) -> Result<u64, DeviceError> {
        self.check()?;
        if !self.has_counter {
            return Err(DeviceError::Nvml {
                what: "total energy",
                message: "Not Supported".to_string(),
            });
        }
        Ok(self.counter_start_mj + (self.watts * self.clock.now_s() * 1e3) as u64)
    }

    fn power(&self, mode: PowerMode) -> Result<RawPower, DeviceError> {
        self.check()?;
        match mode {
            PowerMode::None => Err(DeviceError::NoPower),
            _ => Ok(RawPower {
                nvml_timestamp_us: Some((self.clock.now_s() * 1e6) as i64),
                power_w: self.watts,
            }),
        }
    }

    fn edge_facts(&self) -> GpuEdgeFacts {
        let ok = self.check().is_ok();
        GpuEdgeFacts {
            temperature_c: ok.then_some(40),
            sm_clock_mhz: ok.then_some(1980),
            memory_clock_mhz: ok.then_some(2619),
            compute_pids: ok.then(|| vec![std::process::id()]),
        }
    }

    fn compute_pids(&self) -> Result<Vec<u32>, DeviceError> {
        self.check()?;
        let mut pids = vec![std::process::id()];
        pids.extend(self.foreign.iter().map(|(p, _)| *p));
        Ok(pids)
    }

    fn process_sm(&self, since_us: u64) -> Result<Vec<ProcessSm>, DeviceError> {
        self.check()?;
        // One sample per process every 100 ms of the clock, as NVML keeps them.
        let now_us = (self.clock.now_s() * 1e6) as u64;
        let mut out = Vec::new();
        let mut t = (since_us / 100_000 + 1) * 100_000;
        while t <= now_us {
            out.push(ProcessSm {
                pid: std::process::id(),
                timestamp_us: t,
                sm_util: self.own_sm_util,
            });
            out.extend(self.foreign.iter().map(|&(pid, sm_util)| ProcessSm {
                pid,
                timestamp_us: t,
                sm_util,
            }));
            t += 100_000;
        }
        Ok(out)
    }

    fn mig_instances(&self) -> Option<Vec<String>> {
        self.mig.clone()
    }

    fn board_facts(&self) -> BoardFacts {
        BoardFacts {
            name: Some("Fake GPU".to_string()),
            memory_total_bytes: Some(80 << 30),
            uuid: Some(self.uuid.clone()),
            power_limit_w: Some(700.0),
            persistence_mode: Some(true),
        }
    }
}

/// A node of scripted boards numbered as NVML numbers GPUs: board i is a `FakeGpu` with UUID
/// `GPU-0000000i-fake` and the watts given for it.
pub struct FakeNode {
    gpus: Vec<Arc<FakeGpu>>,
}

impl FakeNode {
    pub fn new(watts: &[f64]) -> Self {
        Self {
            gpus: watts
                .iter()
                .enumerate()
                .map(|(i, &w)| Arc::new(FakeGpu::new(w).with_uuid(&format!("GPU-{i:08}-fake"))))
                .collect(),
        }
    }

    /// A node of these boards, numbered in order.
    pub fn of(gpus: Vec<FakeGpu>) -> Self {
        Self {
            gpus: gpus.into_iter().map(Arc::new).collect(),
        }
    }

    pub fn gpu(&self, index: u32) -> &Arc<FakeGpu> {
        &self.gpus[index as usize]
    }

    fn get(&self, index: u32) -> Result<&Arc<FakeGpu>, DeviceError> {
        self.gpus
            .get(index as usize)
            .ok_or(DeviceError::NoSuchDevice {
                index,
                count: self.gpus.len() as u32,
            })
    }
}

impl GpuNode for FakeNode {
    fn device_count(&self) -> Result<u32, DeviceError> {
        Ok(self.gpus.len() as u32)
    }

    fn uuid(&self, index: u32) -> Result<String, DeviceError> {
        Ok(self.get(index)?.uuid.clone())
    }

    fn name(&self, index: u32) -> Result<String, DeviceError> {
        self.get(index).map(|_| "Fake GPU".to_string())
    }

    fn reader(&self, index: u32) -> Result<Arc<dyn GpuReader>, DeviceError> {
        let gpu: Arc<dyn GpuReader> = self.get(index)?.clone();
        Ok(gpu)
    }

    fn driver(&self) -> DriverVersions {
        DriverVersions::default()
    }

    /// Board i's MIG instance k is `MIG-0000000i-fake-k`.
    fn mig_parent(&self, mig_uuid: &str) -> Result<(u32, String), DeviceError> {
        let not_here = || DeviceError::UuidNotOnNode(mig_uuid.to_string());
        let rest = mig_uuid.strip_prefix("MIG-").ok_or_else(not_here)?;
        let (board, k) = rest.split_once("-fake-").ok_or_else(not_here)?;
        let (board, k): (u32, usize) = (
            board.parse().map_err(|_| not_here())?,
            k.parse().map_err(|_| not_here())?,
        );
        let name = self
            .get(board)?
            .mig
            .as_ref()
            .and_then(|m| m.get(k))
            .cloned()
            .ok_or_else(not_here)?;
        Ok((board, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_is_watts_times_time() {
        let clock = ManualClock::new();
        let mut m = FakeMeter::new(vec![
            FakeComponent::new("gpu:0", Boundary::Gpu, Source::MeasuredCounter, 250.0),
            FakeComponent::new("cpu", Boundary::Host, Source::EstimatedTdpLoad, 40.0),
        ])
        .with_clock(Arc::new(clock.clone()));
        assert_eq!(m.boundary(), Boundary::GpuHost);
        m.start().expect("start");
        clock.advance(2.0);
        assert_eq!(m.read().expect("read"), vec![500.0, 80.0]);
        clock.advance(1.0);
        let r = m.stop().expect("stop");
        assert_eq!(r.total_j(), 3.0 * 290.0);
        assert!(m.read().is_err());
    }

    #[test]
    fn replay_integrates_the_trace() {
        let clock = ManualClock::new();
        let mut m = ReplayMeter::new(
            "gpu:0",
            Boundary::Gpu,
            Source::MeasuredPowerIntegrated,
            vec![(0.0, 100.0), (1.0, 200.0), (2.0, 100.0)],
        )
        .with_clock(Arc::new(clock.clone()));
        m.start().expect("start");
        clock.advance(1.0);
        assert!((m.read().expect("read")[0] - 150.0).abs() < 1e-9);
        clock.advance(2.0);
        // 300 J over the trace, then 100 W held for 1 s.
        let r = m.stop().expect("stop");
        assert!((r.total_j() - 400.0).abs() < 1e-9);
        assert_eq!(r.timeline.len(), 3);
        // 100 W -> 150 W over the first 0.5 s: mean 125 W x 0.5 s.
        assert!((trace_energy_j(&[(0.0, 100.0), (1.0, 200.0)], 0.5) - 62.5).abs() < 1e-9);
    }
}
