//! Energy meters from the consumer's side: a fake powercap tree for RAPL, the estimate with a
//! scripted CPU-time reader, the measured window's call order, composites, the idle baseline
//! and meter detection. Nothing here needs a GPU; the one test that does is ignored.

use joulebench::measure::composite::CompositeMeter;
use joulebench::measure::cputime::ProcPaths;
use joulebench::measure::cputime::{CpuTimeError, SystemCpuTimes};
use joulebench::measure::detect::{probe_all, DetectOptions, UnavailableMeter};
use joulebench::measure::estimate::{CpuTimesReader, EstimateMeter, Tdp};
use joulebench::measure::fake::{
    new_call_log, FakeComponent, FakeMeter, ManualClock, RecordingMeter, RecordingSync, ReplayMeter,
};
use joulebench::measure::idle::measure_idle_sliced;
use joulebench::measure::rapl::{self, RaplMeter, SysfsReader};
use joulebench::measure::{
    detect_meter, Boundary, MeasuredWindow, Meter, MeterChoice, MeterError, Source,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOL_J: f64 = 1e-9;

// ----------------------------------------------------------------------------------------
// Fake powercap tree
// ----------------------------------------------------------------------------------------

fn zone(root: &Path, rel: &str, name: &str, energy_uj: u64, max_uj: u64) -> PathBuf {
    let dir = root.join(rel);
    std::fs::create_dir_all(&dir).expect("mkdir zone");
    std::fs::write(dir.join("name"), format!("{name}\n")).expect("name");
    std::fs::write(dir.join("energy_uj"), format!("{energy_uj}\n")).expect("energy");
    std::fs::write(dir.join("max_energy_range_uj"), format!("{max_uj}\n")).expect("max");
    dir
}

fn set(dir: &Path, energy_uj: u64) {
    std::fs::write(dir.join("energy_uj"), format!("{energy_uj}\n")).expect("energy");
}

const MAX_UJ: u64 = 10_000_000;

/// A RAPL meter over a one-package tree whose background poller effectively never fires
/// (1 h), so tests step it with `poll_once`.
fn one_package(start_uj: u64) -> (tempfile::TempDir, PathBuf, RaplMeter) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pkg = zone(tmp.path(), "intel-rapl:0", "package-0", start_uj, MAX_UJ);
    let m = rapl::probe(tmp.path())
        .expect("probe")
        .with_poll_interval(Duration::from_secs(3600))
        .with_proc_paths(None);
    (tmp, pkg, m)
}

fn energy_of(report: &joulebench::measure::MeterReport, component: &str) -> f64 {
    report
        .components
        .iter()
        .find(|c| c.component == component)
        .unwrap_or_else(|| panic!("no component {component}"))
        .energy_j
}

#[test]
fn rapl_no_wrap() {
    let (_tmp, pkg, mut m) = one_package(1_000_000);
    m.start().expect("start");
    set(&pkg, 3_500_000);
    assert!((m.read().expect("read")[0] - 2.5).abs() < TOL_J);
    set(&pkg, 4_000_000);
    let r = m.stop().expect("stop");
    assert!((energy_of(&r, "cpu:package-0") - 3.0).abs() < TOL_J);
    assert_eq!(r.components[0].source, Source::MeasuredCounter);
    assert_eq!(m.boundary(), Boundary::Host);
    assert_eq!(r.provenance.host.rapl_wraps, Some(0));
}

#[test]
fn rapl_one_wrap() {
    let (_tmp, pkg, mut m) = one_package(9_000_000);
    m.start().expect("start");
    set(&pkg, 500_000);
    let r = m.stop().expect("stop");
    // 9.0 J -> 10.0 J (max) -> 0 -> 0.5 J: 1.5 J.
    assert!((energy_of(&r, "cpu:package-0") - 1.5).abs() < TOL_J);
    assert_eq!(r.provenance.host.rapl_wraps, Some(1));
    assert!(r.components[0]
        .note
        .as_deref()
        .is_some_and(|n| n.contains("1 counter wrap")));
}

#[test]
fn rapl_several_wraps_stepped() {
    let (_tmp, pkg, mut m) = one_package(9_000_000);
    m.start().expect("start");
    // 9 -> 2 (wrap, 3 J) -> 8 (6 J) -> 1 (wrap, 3 J) -> 4 (3 J) = 15 J. Reading only the
    // edges would see 9 -> 4 and report 5 J.
    for uj in [2_000_000, 8_000_000, 1_000_000] {
        set(&pkg, uj);
        m.poll_once().expect("poll");
    }
    set(&pkg, 4_000_000);
    let r = m.stop().expect("stop");
    assert!((energy_of(&r, "cpu:package-0") - 15.0).abs() < TOL_J);
    assert_eq!(r.provenance.host.rapl_wraps, Some(2));
}

#[test]
fn rapl_background_poller_catches_every_wrap() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pkg = zone(tmp.path(), "intel-rapl:0", "package-0", 9_000_000, MAX_UJ);
    let mut m = rapl::probe(tmp.path())
        .expect("probe")
        .with_poll_interval(Duration::from_millis(5))
        .with_proc_paths(None);
    m.start().expect("start");
    for uj in [2_000_000, 8_000_000, 1_000_000, 7_000_000, 3_000_000] {
        set(&pkg, uj);
        // Wait until the poller has sampled at least twice after the write, so one of its
        // samples certainly saw this value (test-side sync, no timing assumption).
        let seen = m.poller_ticks();
        let deadline = Instant::now() + Duration::from_secs(10);
        while m.poller_ticks() < seen + 2 {
            assert!(Instant::now() < deadline, "poller stalled");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let r = m.stop().expect("stop");
    // 9->2: 3, 2->8: 6, 8->1: 3, 1->7: 6, 7->3: 6 = 24 J, 3 wraps.
    assert!(
        (energy_of(&r, "cpu:package-0") - 24.0).abs() < TOL_J,
        "{:?}",
        r.components
    );
    assert_eq!(r.provenance.host.rapl_wraps, Some(3));
    // The timeline is cumulative and never decreases.
    let t: Vec<f64> = r.timeline.iter().map(|s| s.energy_j).collect();
    assert!(t.windows(2).all(|w| w[1] >= w[0]));
}

#[test]
fn rapl_counts_packages_and_dram_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let p0 = zone(root, "intel-rapl:0", "package-0", 0, MAX_UJ);
    let core = zone(root, "intel-rapl:0/intel-rapl:0:0", "core", 0, MAX_UJ);
    let dram0 = zone(root, "intel-rapl:0/intel-rapl:0:1", "dram", 0, MAX_UJ);
    let p1 = zone(root, "intel-rapl:1", "package-1", 0, MAX_UJ);
    let dram1 = zone(root, "intel-rapl:1/intel-rapl:1:0", "dram", 0, MAX_UJ);
    let uncore = zone(root, "intel-rapl:1/intel-rapl:1:1", "uncore", 0, MAX_UJ);
    let psys = zone(root, "intel-rapl:2", "psys", 0, MAX_UJ);
    let mmio = zone(root, "intel-rapl-mmio:0", "package-0", 0, MAX_UJ);
    let dup = zone(root, "intel-rapl:3", "package-0", 0, MAX_UJ);
    // The control-type directory has no name file and must be skipped quietly.
    std::fs::create_dir_all(root.join("intel-rapl")).expect("mkdir");

    let mut m = rapl::probe(root)
        .expect("probe")
        .with_poll_interval(Duration::from_secs(3600))
        .with_proc_paths(None);
    let names: Vec<String> = m.components().into_iter().map(|c| c.component).collect();
    assert_eq!(
        names,
        ["cpu:package-0", "cpu:package-1", "dram:0", "dram:1"]
    );
    let ignored = m.discovery().ignored.join("\n");
    for needle in [
        "psys",
        "core",
        "uncore",
        "intel-rapl-mmio:0",
        "intel-rapl:3",
    ] {
        assert!(ignored.contains(needle), "{needle} not listed in {ignored}");
    }

    m.start().expect("start");
    set(&p0, 10_000);
    set(&p1, 20_000);
    set(&dram0, 1_000);
    set(&dram1, 2_000);
    for z in [&core, &uncore, &psys, &mmio, &dup] {
        set(z, 5_000_000);
    }
    let r = m.stop().expect("stop");
    assert!((energy_of(&r, "cpu:package-0") - 0.010).abs() < TOL_J);
    assert!((energy_of(&r, "cpu:package-1") - 0.020).abs() < TOL_J);
    assert!((energy_of(&r, "dram:0") - 0.001).abs() < TOL_J);
    assert!((energy_of(&r, "dram:1") - 0.002).abs() < TOL_J);
    // psys, core, uncore and the mirrors (5 J each) are not in the total.
    assert!((r.total_j() - 0.033).abs() < TOL_J);
}

#[test]
fn rapl_probe_says_why_unavailable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("no-such-powercap");
    let e = rapl::probe(&missing).expect_err("missing root");
    assert!(matches!(e, MeterError::Unavailable { meter: "rapl", .. }));
    assert!(e.to_string().contains("no powercap directory"), "{e}");

    zone(tmp.path(), "intel-rapl:0", "psys", 0, MAX_UJ);
    let e = rapl::probe(tmp.path()).expect_err("no packages");
    assert!(e.to_string().contains("no intel-rapl package zones"), "{e}");
    assert!(e.to_string().contains("psys"), "{e}");
}

/// Tests run as root, where chmod 000 does not stop a read: inject EACCES instead.
struct DenyEnergy;

impl SysfsReader for DenyEnergy {
    fn read_to_string(&self, path: &Path) -> std::io::Result<String> {
        if path.ends_with("energy_uj") {
            return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        }
        std::fs::read_to_string(path)
    }
}

#[test]
fn rapl_permission_denied_gives_the_fix() {
    let tmp = tempfile::tempdir().expect("tempdir");
    zone(tmp.path(), "intel-rapl:0", "package-0", 0, MAX_UJ);
    let e = RaplMeter::probe_with(tmp.path(), Arc::new(DenyEnergy)).expect_err("denied");
    match &e {
        MeterError::PermissionDenied { path, fix } => {
            assert!(path.ends_with("intel-rapl:0/energy_uj"), "{path}");
            assert!(fix.contains("sudo chmod -R a+r /sys/class/powercap/intel-rapl:*/energy_uj"));
            assert!(fix.contains("run as root"));
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
}

#[test]
fn rapl_flags_cpu_contention() {
    let tmp = tempfile::tempdir().expect("tempdir");
    zone(tmp.path(), "intel-rapl:0", "package-0", 0, MAX_UJ);
    let stat = tmp.path().join("stat");
    let self_stat = tmp.path().join("self_stat");
    let write = |busy: u64, idle: u64, mine: u64| {
        std::fs::write(&stat, format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\n")).expect("stat");
        std::fs::write(
            &self_stat,
            format!("42 (joulebench) R 1 1 1 0 -1 0 0 0 0 0 {mine} 0 0 0 20 0 1 0\n"),
        )
        .expect("self stat");
    };
    let paths = ProcPaths {
        stat: stat.clone(),
        self_stat: self_stat.clone(),
    };
    let run = |busy: u64, mine: u64| {
        write(1000, 1000, 100);
        let mut m = rapl::probe(tmp.path())
            .expect("probe")
            .with_poll_interval(Duration::from_secs(3600))
            .with_proc_paths(Some(paths.clone()));
        m.start().expect("start");
        // Over the window: 1000 ticks elapsed in all, `busy` of them busy, `mine` ours.
        write(1000 + busy, 1000 + 1000 - busy, 100 + mine);
        m.stop().expect("stop")
    };
    // Others used 400 - 300 = 100 of 1000 ticks: 10 % > 5 %.
    let r = run(400, 300);
    assert!(
        r.flags.contains(&"cpu_contended".to_string()),
        "{:?}",
        r.flags
    );
    let others = r.provenance.host.cpu_others_fraction.expect("others");
    let mine = r.provenance.host.cpu_harness_fraction.expect("mine");
    assert!((others - 0.1).abs() < 1e-12 && (mine - 0.3).abs() < 1e-12);
    // Others used 20 of 1000 ticks: 2 %, fine.
    let r = run(320, 300);
    assert!(
        !r.flags.contains(&"cpu_contended".to_string()),
        "{:?}",
        r.flags
    );
}

// ----------------------------------------------------------------------------------------
// Estimate
// ----------------------------------------------------------------------------------------

/// Every read advances the machine by 100 ticks, `busy` of them busy; when `own` is set, this
/// process used `own` of every 100 ticks.
struct ScriptedCpu {
    busy: u64,
    reads: AtomicU64,
    own: Option<u64>,
}

impl CpuTimesReader for ScriptedCpu {
    fn read(&self) -> Result<SystemCpuTimes, CpuTimeError> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(SystemCpuTimes {
            busy_ticks: n * self.busy,
            total_ticks: n * 100,
        })
    }
    fn read_self_ticks(&self) -> Result<u64, CpuTimeError> {
        let own = self
            .own
            .ok_or(CpuTimeError::NoPerProcess("this scripted reader"))?;
        Ok(self.reads.load(Ordering::SeqCst) * own)
    }
}

#[test]
fn estimate_meter_flags_other_processes_load() {
    // Machine 50 % busy; the harness uses 10 % (others 40 %: contended) or all 50 % (not).
    for (own, contended) in [(10, true), (50, false)] {
        let mut m = EstimateMeter::with_parts(
            Tdp {
                watts: 100.0,
                note: "TDP 100 W from --cpu-tdp-w (user)".into(),
            },
            15.0,
            "15 W constant".into(),
            Arc::new(ScriptedCpu {
                busy: 50,
                reads: AtomicU64::new(0),
                own: Some(own),
            }),
            Duration::from_millis(20),
        );
        m.start().expect("start");
        std::thread::sleep(Duration::from_millis(100));
        let r = m.stop().expect("stop");
        assert_eq!(
            r.flags.contains(&"cpu_contended".to_string()),
            contended,
            "{:?}",
            r.flags
        );
        let others = r.provenance.host.cpu_others_fraction.unwrap();
        assert!(
            (others - (50 - own) as f64 / 100.0).abs() < 1e-9,
            "{others}"
        );
    }
}

#[test]
fn estimate_meter_integrates_the_formula() {
    let mut m = EstimateMeter::with_parts(
        Tdp {
            watts: 100.0,
            note: "TDP 100 W from --cpu-tdp-w (user)".into(),
        },
        15.0,
        "15 W constant".into(),
        Arc::new(ScriptedCpu {
            busy: 50,
            reads: AtomicU64::new(0),
            own: None,
        }),
        Duration::from_millis(20),
    );
    assert_eq!(m.boundary(), Boundary::Host);
    m.start().expect("start");
    std::thread::sleep(Duration::from_millis(150));
    let r = m.stop().expect("stop");
    let t_end = r.timeline.last().expect("timeline").t_s;
    assert!(t_end >= 0.15);
    let cpu = &r.components[0];
    assert_eq!(cpu.component, "cpu");
    assert_eq!(cpu.source, Source::EstimatedTdpLoad);
    assert!(cpu
        .note
        .as_deref()
        .is_some_and(|n| n.contains("--cpu-tdp-w")));
    // u = 0.5 on every interval: 21.25 W (CodeCarbon 3.3) times the window.
    assert!(
        (cpu.energy_j - 21.25 * t_end).abs() < 1e-9,
        "{}",
        cpu.energy_j
    );
    let dram = &r.components[1];
    assert_eq!(dram.source, Source::EstimatedConstant);
    assert!((dram.energy_j - 15.0 * t_end).abs() < 1e-9);
    assert!(r.flags.is_empty(), "{:?}", r.flags);
}

// ----------------------------------------------------------------------------------------
// Measured window, composite, idle
// ----------------------------------------------------------------------------------------

#[test]
fn measured_window_synchronises_before_every_edge() {
    let log = new_call_log();
    let mut meter = RecordingMeter::new(FakeMeter::constant(100.0), log.clone());
    let sync = RecordingSync::new(log.clone());
    let mut w = MeasuredWindow::open(&mut meter, &sync).expect("open");
    let mark = w.mark().expect("mark");
    assert!(mark.energy_j >= 0.0);
    let report = w.close().expect("close");
    let calls = log.lock().expect("log").clone();
    assert_eq!(
        calls,
        [
            "synchronize",
            "start",
            "synchronize",
            "read",
            "synchronize",
            "stop"
        ]
    );
    assert!(report.duration_s < 5.0);
    assert_eq!(
        report
            .report
            .flags
            .iter()
            .filter(|f| *f == "short_window")
            .count(),
        1
    );
}

#[test]
fn short_window_flag_is_not_duplicated() {
    let mut meter = FakeMeter::constant(10.0).with_flags(&["short_window"]);
    let sync = joulebench::measure::fake::NoSync;
    let w = MeasuredWindow::open(&mut meter, &sync).expect("open");
    let r = w.close().expect("close");
    assert_eq!(r.report.flags, ["short_window"]);
}

#[test]
fn boxed_meter_through_the_window() {
    let log = new_call_log();
    let boxed: Box<dyn Meter> = Box::new(FakeMeter::constant(1.0));
    let mut meter = RecordingMeter::new(boxed, log.clone());
    let sync = RecordingSync::new(log.clone());
    let w = MeasuredWindow::open(&mut meter, &sync).expect("open");
    w.close().expect("close");
    assert_eq!(log.lock().expect("log").len(), 4);
}

#[test]
fn composite_merges_and_unions_boundaries() {
    let clock = ManualClock::new();
    let gpu = FakeMeter::new(vec![FakeComponent::new(
        "gpu:0",
        Boundary::Gpu,
        Source::MeasuredCounter,
        200.0,
    )])
    .with_clock(Arc::new(clock.clone()))
    .with_flags(&["contaminated", "short_window"]);
    let host = FakeMeter::new(vec![
        FakeComponent::new(
            "cpu:package-0",
            Boundary::Host,
            Source::MeasuredCounter,
            50.0,
        ),
        FakeComponent::new("dram:0", Boundary::Host, Source::MeasuredCounter, 5.0),
    ])
    .with_clock(Arc::new(clock.clone()))
    .with_flags(&["short_window", "cpu_contended"]);
    let mut m = CompositeMeter::new(vec![Box::new(gpu), Box::new(host)]).expect("composite");
    assert_eq!(m.boundary(), Boundary::GpuHost);
    let names: Vec<String> = m.components().into_iter().map(|c| c.component).collect();
    assert_eq!(names, ["gpu:0", "cpu:package-0", "dram:0"]);
    m.start().expect("start");
    clock.advance(2.0);
    assert_eq!(m.read().expect("read"), vec![400.0, 100.0, 10.0]);
    let r = m.stop().expect("stop");
    assert!((r.total_j() - 510.0).abs() < TOL_J);
    assert_eq!(r.flags, ["contaminated", "short_window", "cpu_contended"]);
    assert!(r.timeline.windows(2).all(|w| w[1].t_s >= w[0].t_s));

    // A GPU placeholder does not widen the boundary: the host is all that was measured.
    let placeholder = UnavailableMeter::new("gpu:0", Boundary::Gpu, "NVML missing".into());
    let host = FakeMeter::new(vec![FakeComponent::new(
        "cpu",
        Boundary::Host,
        Source::EstimatedTdpLoad,
        10.0,
    )]);
    let m = CompositeMeter::new(vec![Box::new(placeholder), Box::new(host)]).expect("composite");
    assert_eq!(m.boundary(), Boundary::Host);
    assert!(CompositeMeter::new(Vec::new()).is_err());
}

#[test]
fn idle_baseline_of_a_constant_meter() {
    let mut m = FakeMeter::new(vec![
        FakeComponent::new("gpu:0", Boundary::Gpu, Source::MeasuredCounter, 40.0),
        FakeComponent::new("cpu", Boundary::Host, Source::MeasuredCounter, 2.0),
    ]);
    let b = measure_idle_sliced(
        &mut m,
        Duration::from_millis(600),
        Duration::from_millis(100),
    )
    .expect("idle");
    // Energy and time come from two clocks read microseconds apart: 2 % is generous.
    assert!((b.mean_w - 42.0).abs() < 0.02 * 42.0, "{b:?}");
    assert_eq!(b.per_component_w.len(), 2);
    assert_eq!(b.per_component_w[0].0, "gpu:0");
    assert!((b.per_component_w[0].1 - 40.0).abs() < 0.02 * 40.0);
    assert_eq!(b.slices, 6);
    assert!(b.sd_w < 0.1 * 42.0, "{b:?}");
    assert!((b.duration_s - 0.6).abs() < 0.1);
    assert!((b.net_j(100.0, 1.0) - (100.0 - b.mean_w)).abs() < TOL_J);
}

#[test]
fn idle_baseline_spread_of_a_varying_trace() {
    // Square wave: 10 W for 0.1 s, 30 W for 0.1 s, ... (steps as near-vertical edges).
    let mut trace = Vec::new();
    for i in 0..10 {
        let t0 = i as f64 * 0.1;
        let w = if i % 2 == 0 { 10.0 } else { 30.0 };
        trace.push((t0 + 1e-6, w));
        trace.push((t0 + 0.1 - 1e-6, w));
    }
    let mut m = ReplayMeter::new("gpu:0", Boundary::Gpu, Source::MeasuredCounter, trace);
    let b = measure_idle_sliced(
        &mut m,
        Duration::from_millis(800),
        Duration::from_millis(100),
    )
    .expect("idle");
    assert!((b.mean_w - 20.0).abs() < 2.0, "{b:?}");
    assert!(b.sd_w > 3.0, "{b:?}");
}

// ----------------------------------------------------------------------------------------
// Detection
// ----------------------------------------------------------------------------------------

fn nvml_present() -> bool {
    joulebench::measure::nvml_gpu::init().is_ok()
}

fn no_rapl_opts(
    choice: MeterChoice,
    gpu_index: Option<usize>,
) -> (tempfile::TempDir, DetectOptions) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let opts = DetectOptions {
        choice,
        gpu_index,
        gpu_devices: None,
        cpu_tdp_w: None,
        powercap_root: tmp.path().join("powercap-missing"),
        drm_root: tmp.path().join("drm-missing"),
    };
    (tmp, opts)
}

#[test]
fn detect_without_rapl_or_nvml_uses_the_labelled_estimate() {
    let (_tmp, opts) = no_rapl_opts(MeterChoice::Auto, None);
    let (meter, probes) = detect_meter(&opts).expect("detect");
    assert_eq!(meter.name(), "estimate");
    assert_eq!(meter.boundary(), Boundary::Host);
    let comps = meter.components();
    assert_eq!(comps[0].source, Source::EstimatedTdpLoad);
    assert_eq!(comps[1].source, Source::EstimatedConstant);
    let names: Vec<&str> = probes.iter().map(|p| p.meter).collect();
    assert_eq!(names, ["nvml", "amdgpu", "rapl", "estimate"]);
    let amd = &probes[1];
    assert!(!amd.available);
    assert!(amd.detail.contains("no AMD GPU"), "{}", amd.detail);
    let rapl = &probes[2];
    assert!(!rapl.available);
    assert!(
        rapl.detail.contains("no powercap directory"),
        "{}",
        rapl.detail
    );
    assert!(probes[3].available);
    assert!(probes[3].detail.contains("TDP"), "{}", probes[3].detail);
    if !nvml_present() {
        assert!(!probes[0].available);
        assert!(probes[0].detail.contains("NVML"), "{}", probes[0].detail);
    }
    // probe_all explains the same four meters.
    assert_eq!(probe_all(&opts).len(), 4);
}

#[test]
fn detect_on_this_machine_defaults() {
    // With the default powercap root: whichever meter is chosen must be labelled honestly.
    let opts = DetectOptions::default();
    let (meter, probes) = detect_meter(&opts).expect("detect");
    let rapl_ok = probes.iter().any(|p| p.meter == "rapl" && p.available);
    if rapl_ok {
        assert_eq!(meter.name(), "rapl");
    } else {
        assert_eq!(meter.name(), "estimate");
        assert_eq!(meter.components()[0].source, Source::EstimatedTdpLoad);
    }
}

#[test]
fn cuda_run_without_nvml_reports_gpu_unavailable() {
    if nvml_present() {
        eprintln!("skip: NVML present on this machine");
        return;
    }
    let (_tmp, opts) = no_rapl_opts(MeterChoice::Auto, Some(0));
    let (mut meter, probes) = detect_meter(&opts).expect("detect");
    assert!(!probes[0].available);
    assert_eq!(meter.boundary(), Boundary::Host);
    let comps = meter.components();
    assert_eq!(comps[0].component, "gpu:0");
    assert_eq!(comps[0].source, Source::Unavailable);
    meter.start().expect("start");
    let r = meter.stop().expect("stop");
    let gpu = &r.components[0];
    // Never a TDP guess for the GPU.
    assert_eq!(gpu.energy_j, 0.0);
    assert!(gpu
        .note
        .as_deref()
        .is_some_and(|n| n.contains("not measured")));
    assert!(
        r.flags.contains(&"gpu0_unavailable".to_string()),
        "{:?}",
        r.flags
    );
}

#[test]
fn explicit_meters_that_are_unavailable_are_errors() {
    let (_tmp, opts) = no_rapl_opts(MeterChoice::Rapl, None);
    let e = detect_meter(&opts).err().expect("rapl must fail");
    assert!(
        matches!(e, MeterError::Unavailable { meter: "rapl", .. }),
        "{e}"
    );
    assert!(e.to_string().contains("no powercap directory"));

    let (_tmp, opts) = no_rapl_opts(MeterChoice::Nvml, None);
    let e = detect_meter(&opts)
        .err()
        .expect("nvml without a cuda device must fail");
    assert!(
        matches!(e, MeterError::Unavailable { meter: "nvml", .. }),
        "{e}"
    );

    if !nvml_present() {
        let (_tmp, opts) = no_rapl_opts(MeterChoice::Nvml, Some(0));
        assert!(detect_meter(&opts).is_err());
    }

    let (_tmp, opts) = no_rapl_opts(MeterChoice::Estimate, Some(0));
    let (meter, _) = detect_meter(&opts).expect("estimate always works");
    assert_eq!(meter.name(), "estimate");
}

#[test]
fn meter_choice_serialises_kebab_case() {
    assert_eq!(
        serde_json::to_string(&MeterChoice::Estimate).expect("json"),
        "\"estimate\""
    );
    let c: MeterChoice = serde_json::from_str("\"rapl\"").expect("json");
    assert_eq!(c, MeterChoice::Rapl);
}

#[test]
#[ignore = "needs an NVIDIA GPU with libnvidia-ml (run with --ignored on a GPU machine)"]
fn nvml_measures_a_real_gpu() {
    if !nvml_present() {
        eprintln!("skip: NVML not loadable");
        return;
    }
    let mut m = joulebench::measure::nvml_gpu::probe_meter(0).expect("probe gpu 0");
    m.start().expect("start");
    std::thread::sleep(Duration::from_secs(2));
    let mid = m.read().expect("read");
    let r = m.stop().expect("stop");
    assert!(mid[0] > 0.0);
    assert!(r.components[0].energy_j >= mid[0]);
    assert!(r.components[0].source.is_measured());
    assert!(r.provenance.gpus.contains_key("gpu:0"));
}
