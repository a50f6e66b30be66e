//! The amdgpu meter against fake sysfs trees: a board thread rewrites `gpu_metrics` (table
//! versions 1.0 to 1.5, and one this version does not know) and the hwmon power files every
//! 5 ms as a GPU drawing a set power would, while the meter reads them as it reads a real
//! MI300X's. Covers a 32-bit accumulator wrapping inside the window, missing files, a driver
//! that reports 0 W, a counter in the wrong units, other vendors' cards and connectors beside
//! the AMD ones, and `--meter amdgpu` on the command line with and without AMD devices.

mod common;

use joulebench::measure::amdgpu::{self, ENERGY_UNIT_J};
use joulebench::measure::rapl::FsReader;
use joulebench::measure::{Meter, MeterError, Source};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where table `format.content` keeps its energy accumulator and how wide it is, written out
/// from the kernel's `struct gpu_metrics_v1_x` (drivers/gpu/drm/amd/include/kgd_pp_interface.h).
fn accumulator_at(version: (u8, u8)) -> (usize, usize) {
    match version {
        (1, 0) => (36, 4),
        (1, 1..=4) => (24, 8),
        (1, 5) => (88, 8),
        _ => (24, 8),
    }
}

/// A table of `version` with `steps` in its accumulator and 0xAB everywhere else, so a read at
/// the wrong offset gives nonsense.
fn table(version: (u8, u8), steps: u64) -> Vec<u8> {
    let (at, width) = accumulator_at(version);
    let len = at + width + 40;
    let mut t = vec![0xAB; len];
    t[..2].copy_from_slice(&(len as u16).to_le_bytes());
    t[2] = version.0;
    t[3] = version.1;
    t[at..at + width].copy_from_slice(&steps.to_le_bytes()[..width]);
    t
}

#[derive(Clone)]
struct Spec {
    vendor: &'static str,
    /// None: no gpu_metrics file.
    table: Option<(u8, u8)>,
    /// What the board draws.
    watts: f64,
    /// What the power files say (0 for a driver that reports nothing).
    reported_watts: f64,
    /// The accumulator at board time 0.
    start_steps: u64,
    /// 1 for a right counter; 1000 for one in the wrong units.
    counter_scale: f64,
    instant_file: bool,
    average_file: bool,
}

impl Spec {
    fn mi300x(watts: f64) -> Self {
        Self {
            vendor: "0x1002",
            table: Some((1, 5)),
            watts,
            reported_watts: watts,
            start_steps: 1 << 40,
            counter_scale: 1.0,
            instant_file: true,
            average_file: true,
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("writing");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A fake card under `root`: its files, and a thread keeping them current until dropped.
struct Board {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Board {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn board(root: &Path, card: &str, spec: Spec) -> Board {
    let dev = root.join(card).join("device");
    let hwmon = dev.join("hwmon").join("hwmon7");
    std::fs::create_dir_all(&hwmon).unwrap();
    // Another hwmon folder first, as a board's other sensors would be.
    std::fs::create_dir_all(dev.join("hwmon").join("hwmon2")).unwrap();
    std::fs::write(dev.join("hwmon").join("hwmon2").join("name"), "nvme\n").unwrap();
    std::fs::write(dev.join("vendor"), format!("{}\n", spec.vendor)).unwrap();
    std::fs::write(dev.join("device"), "0x74a1\n").unwrap();
    std::fs::write(dev.join("product_name"), "AMD Instinct MI300X\n").unwrap();
    std::fs::write(dev.join("unique_id"), format!("{card}5f0e3a1b2c\n")).unwrap();
    std::fs::write(dev.join("mem_info_vram_total"), "206141652992\n").unwrap();
    std::fs::write(hwmon.join("name"), "amdgpu\n").unwrap();
    std::fs::write(hwmon.join("power1_cap"), "750000000\n").unwrap();
    std::fs::write(hwmon.join("temp1_input"), "41000\n").unwrap();
    std::fs::write(hwmon.join("freq1_input"), "2100000000\n").unwrap();
    let t0 = Instant::now();
    let update = move |spec: &Spec| {
        let t = t0.elapsed().as_secs_f64();
        if let Some(v) = spec.table {
            let steps =
                spec.start_steps + (spec.watts * t * spec.counter_scale / ENERGY_UNIT_J) as u64;
            let steps = if v == (1, 0) {
                steps & 0xFFFF_FFFF
            } else {
                steps
            };
            write_atomic(&dev.join("gpu_metrics"), &table(v, steps));
        }
        let uw = format!("{}\n", (spec.reported_watts * 1e6) as u64);
        if spec.instant_file {
            write_atomic(&hwmon.join("power1_input"), uw.as_bytes());
        }
        if spec.average_file {
            write_atomic(&hwmon.join("power1_average"), uw.as_bytes());
        }
    };
    update(&spec);
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        let mut last = Instant::now();
        while !stopping.load(Ordering::SeqCst) {
            update(&spec);
            let now = Instant::now();
            MAX_UPDATE_GAP_NS
                .fetch_max(now.duration_since(last).as_nanos() as u64, Ordering::SeqCst);
            last = now;
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    Board {
        stop,
        thread: Some(thread),
    }
}

/// A window of `window` on the AMD devices `indices` (all with None): the report and the
/// seconds between start and stop as seen from here.
fn measure(
    root: &Path,
    indices: Option<&[usize]>,
    window: Duration,
) -> Result<(joulebench::measure::MeterReport, f64), MeterError> {
    let mut m = amdgpu::probe_meter(root, Arc::new(FsReader), indices)?;
    assert_eq!(m.name(), "amdgpu");
    let t0 = Instant::now();
    m.start()?;
    std::thread::sleep(window);
    let r = m.stop()?;
    Ok((r, t0.elapsed().as_secs_f64()))
}

/// The longest time any fake board went without rewriting its files in this test process: a
/// counter read just before an update is that much stale, so the energy between two reads is
/// the board's power times the window, give or take the power times this gap (at each end).
/// On a quiet machine it is about the 5 ms period; on a loaded CI machine the board thread can
/// wait tens of milliseconds for a core (one run: 36 ms, +9 J at 250 W over 0.625 s).
static MAX_UPDATE_GAP_NS: AtomicU64 = AtomicU64::new(0);

/// The energy is `watts x seconds` within 3 % plus what the boards' update gaps allow.
fn assert_close(energy_j: f64, watts: f64, seconds: f64, what: &str) {
    let want = watts * seconds;
    let gap_s = MAX_UPDATE_GAP_NS.load(Ordering::SeqCst) as f64 * 1e-9;
    let tolerance = 0.03 * want + 2.0 * watts * gap_s;
    assert!(
        (energy_j - want).abs() <= tolerance,
        "{what}: {energy_j:.2} J, expected {want:.2} J ({watts} W x {seconds:.3} s) within \
         {tolerance:.2} J (3 % and the boards' longest update gap, {:.1} ms)",
        gap_s * 1e3
    );
}

#[test]
fn every_table_version_with_an_accumulator_gives_the_boards_energy() {
    for version in [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (1, 5)] {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = Spec::mi300x(250.0);
        spec.table = Some(version);
        spec.start_steps = 1 << 20;
        let _b = board(tmp.path(), "card1", spec);
        let (r, secs) = measure(tmp.path(), Some(&[0]), Duration::from_millis(600)).unwrap();
        let c = &r.components[0];
        let what = format!("table {}.{}", version.0, version.1);
        assert_eq!(c.component, "gpu:0", "{what}");
        assert_eq!(c.source, Source::MeasuredCounter, "{what}: {:?}", c.note);
        assert_close(c.energy_j, 250.0, secs, &what);
        let ratio = c.counter_to_integral_ratio.unwrap();
        assert!((ratio - 1.0).abs() < 0.03, "{what}: ratio {ratio}");
        assert!(r.flags.is_empty(), "{what}: {:?}", r.flags);
        let g = &r.provenance.gpus["gpu:0"];
        assert_eq!(g.name.as_deref(), Some("AMD Instinct MI300X"));
        assert_eq!(g.power_source, "amdgpu_hwmon_power1_input");
        assert_eq!(g.power_limit_w, Some(750.0));
        assert_eq!(g.memory_total_bytes, Some(206_141_652_992));
        assert_eq!(g.start.temperature_c, Some(41));
        assert_eq!(g.start.sm_clock_mhz, Some(2100));
        assert!(g.counter_usable);
        // The serial-like id is kept only as a hash.
        assert_eq!(g.uuid_sha256_16.as_deref().map(str::len), Some(16));
    }
}

#[test]
fn a_32_bit_accumulator_that_wraps_inside_the_window_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = Spec::mi300x(300.0);
    spec.table = Some((1, 0));
    // Wraps 0.9 s after the board starts: after the 0.5 s probe, inside the 0.8 s window.
    spec.start_steps = (1u64 << 32) - (300.0 * 0.9 / ENERGY_UNIT_J) as u64;
    let _b = board(tmp.path(), "card0", spec);
    let (r, secs) = measure(tmp.path(), None, Duration::from_millis(800)).unwrap();
    let c = &r.components[0];
    assert_eq!(c.source, Source::MeasuredCounter, "{:?}", c.note);
    assert_close(c.energy_j, 300.0, secs, "across a wrap");
    assert!(
        !r.flags.iter().any(|f| f == "counter_reset"),
        "{:?}",
        r.flags
    );
}

#[test]
fn without_gpu_metrics_the_power_is_integrated_and_labelled() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = Spec::mi300x(200.0);
    spec.table = None;
    spec.instant_file = false;
    let _b = board(tmp.path(), "card0", spec);
    let (r, secs) = measure(tmp.path(), Some(&[0]), Duration::from_millis(600)).unwrap();
    let c = &r.components[0];
    assert_eq!(c.source, Source::MeasuredPowerIntegrated);
    assert_close(c.energy_j, 200.0, secs, "power1_average integrated");
    let g = &r.provenance.gpus["gpu:0"];
    assert_eq!(g.power_source, "amdgpu_hwmon_power1_average");
    assert!(!g.counter_usable);
    assert!(
        c.note.as_deref().unwrap_or("").contains("power1_average"),
        "{:?}",
        c.note
    );
}

#[test]
fn a_board_with_neither_counter_nor_power_is_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = Spec::mi300x(200.0);
    spec.table = None;
    spec.instant_file = false;
    spec.average_file = false;
    let _b = board(tmp.path(), "card0", spec);
    let e = amdgpu::probe_meter(tmp.path(), Arc::new(FsReader), None).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            MeterError::Unavailable {
                meter: "amdgpu",
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("no gpu_metrics") && msg.contains("no power reading"),
        "{msg}"
    );
}

#[test]
fn a_driver_reporting_0_w_is_no_measurement_not_zero_joules() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = Spec::mi300x(200.0);
    spec.reported_watts = 0.0;
    let _b = board(tmp.path(), "card0", spec);
    let e = amdgpu::probe_meter(tmp.path(), Arc::new(FsReader), None).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("reads 0 W"), "{msg}");
    assert!(
        msg.contains("no power reading to check it against"),
        "{msg}"
    );
}

#[test]
fn a_counter_in_the_wrong_units_is_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = Spec::mi300x(200.0);
    spec.counter_scale = 1000.0;
    let _b = board(tmp.path(), "card0", spec);
    let (r, secs) = measure(tmp.path(), Some(&[0]), Duration::from_millis(600)).unwrap();
    let c = &r.components[0];
    assert_eq!(c.source, Source::MeasuredPowerIntegrated);
    assert_close(c.energy_j, 200.0, secs, "power integrated instead");
    let g = &r.provenance.gpus["gpu:0"];
    assert!(!g.counter_usable);
}

#[test]
fn a_table_version_this_version_does_not_know_is_metered_from_power() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = Spec::mi300x(150.0);
    spec.table = Some((1, 6));
    let _b = board(tmp.path(), "card0", spec);
    let m = amdgpu::probe_meter(tmp.path(), Arc::new(FsReader), None).unwrap();
    assert!(m.describe().contains("1.6"), "{}", m.describe());
    let (r, secs) = measure(tmp.path(), None, Duration::from_millis(500)).unwrap();
    assert_eq!(r.components[0].source, Source::MeasuredPowerIntegrated);
    assert_close(r.components[0].energy_j, 150.0, secs, "table 1.6");
}

#[test]
fn other_vendors_and_connectors_are_skipped_and_every_amd_gpu_is_summed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nvidia = Spec::mi300x(999.0);
    nvidia.vendor = "0x10de";
    let _n = board(tmp.path(), "card0", nvidia);
    std::fs::create_dir_all(tmp.path().join("card0-DP-1")).unwrap();
    std::fs::create_dir_all(tmp.path().join("renderD128")).unwrap();
    let _a = board(tmp.path(), "card1", Spec::mi300x(100.0));
    let _b = board(tmp.path(), "card2", Spec::mi300x(300.0));
    let found = amdgpu::discover(tmp.path(), &FsReader);
    let cards: Vec<&str> = found.iter().map(|d| d.card.as_str()).collect();
    assert_eq!(cards, ["card1", "card2"]);

    let e = amdgpu::probe_meter(tmp.path(), Arc::new(FsReader), Some(&[2])).unwrap_err();
    assert!(
        e.to_string()
            .contains("AMD GPU 2 does not exist: 2 found (0 = card1, 1 = card2)"),
        "{e}"
    );

    let (r, secs) = measure(tmp.path(), None, Duration::from_millis(600)).unwrap();
    let names: Vec<&str> = r.components.iter().map(|c| c.component.as_str()).collect();
    assert_eq!(names, ["gpu:0", "gpu:1"]);
    assert_close(r.components[0].energy_j, 100.0, secs, "gpu:0");
    assert_close(r.components[1].energy_j, 300.0, secs, "gpu:1");
    assert_close(r.total_j(), 400.0, secs, "both");
}

fn drm_command(root: &Path, args: &[&str]) -> common::Out {
    common::output(common::command(args).env(amdgpu::DRM_ROOT_ENV, root))
}

fn fake_trainer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/exec/fake-trainer.sh")
}

#[test]
fn meter_amdgpu_without_an_amd_gpu_is_one_line_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("r");
    let trainer = fake_trainer().display().to_string();
    for args in [
        vec![
            "exec",
            "--task",
            "mnist-mlp",
            "--meter",
            "amdgpu",
            "--idle-s",
            "0",
        ],
        vec![
            "run",
            "--task",
            "digits-mlp",
            "--meter",
            "amdgpu",
            "--idle-s",
            "0",
        ],
        vec!["sweep", "--suite", "quick", "--meter", "amdgpu"],
    ] {
        let mut a = args.clone();
        let r = res.display().to_string();
        a.extend(["--results", &r]);
        if a[0] == "exec" {
            a.extend(["--", "bash", &trainer, "ok"]);
        }
        let o = drm_command(&tmp.path().join("no-drm"), &a);
        assert_eq!(o.code, 2, "{a:?}: {}", o.stderr);
        assert_eq!(o.stderr.trim().lines().count(), 1, "{}", o.stderr);
        assert!(o.stderr.contains("no AMD GPU"), "{}", o.stderr);
        assert!(!res.exists(), "nothing written");
    }
}

#[test]
fn exec_on_an_amd_node_records_the_boards_energy() {
    let tmp = tempfile::tempdir().unwrap();
    let drm = tmp.path().join("drm");
    let _b = board(&drm, "card0", Spec::mi300x(400.0));
    let res = tmp.path().join("r");
    let r = res.display().to_string();
    let trainer = fake_trainer().display().to_string();
    let o = drm_command(
        &drm,
        &[
            "exec",
            "--task",
            "mnist-mlp",
            "--device",
            "cuda:0",
            "--meter",
            "amdgpu",
            "--idle-s",
            "0",
            "--cooldown-s",
            "0",
            "--results",
            &r,
            "--",
            "bash",
            &trainer,
            "ok",
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let runs: Vec<PathBuf> = std::fs::read_dir(res.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(runs.len(), 1);
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(&runs[0]).unwrap()).unwrap();
    let e = &run["energy"];
    assert_eq!(e["boundary"], "G", "{e}");
    let comps = e["components"].as_array().unwrap();
    assert_eq!(comps.len(), 1, "{e}");
    assert_eq!(comps[0]["component"], "gpu:0");
    assert_eq!(comps[0]["source"], "measured_counter");
    let j = comps[0]["energy_j"].as_f64().unwrap();
    let secs = e["window_s"].as_f64().unwrap_or(0.0);
    assert!(j > 0.0 && secs > 0.0, "{e}");
    assert_close(j, 400.0, secs, "exec window");
    assert_eq!(e["meter"], "amdgpu", "{e}");
    assert_eq!(
        run["provenance"]["gpu:0"]["name"], "AMD Instinct MI300X",
        "{}",
        run["provenance"]
    );
}
