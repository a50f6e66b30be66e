//! The NVML meter when NVML calls fail mid-window, without a GPU: the meter runs over
//! `measure::fake::FakeGpu` (a scripted board of constant power whose every read fails while a
//! switch is on), first in a bare measured window, then end to end in a training run whose run
//! file is read back. The rule under test: the energy stays exact, or the run is flagged and
//! says how much of the window its readings cover; never a silently short figure.

use joulebench::engine::train::Observer;
use joulebench::measure::fake::{FakeGpu, NoSync};
use joulebench::measure::gpu::{DriverVersions, GpuMeter, GpuReader};
use joulebench::measure::{MeasuredWindow, Meter, MeterReport, Source};
use joulebench::orchestrate::runner::{self, Plan, TaskRun};
use joulebench::record::curve::Status;
use joulebench::record::ResultsDir;
use joulebench::spec::{task, variant};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WATTS: f64 = 200.0;

fn meter_over(gpu: &Arc<FakeGpu>) -> GpuMeter {
    let reader: Arc<dyn GpuReader> = gpu.clone();
    GpuMeter::with_readers(
        vec![("gpu:0".to_string(), reader)],
        DriverVersions::default(),
    )
    .expect("a fake GPU probes")
}

fn gpu_energy(r: &MeterReport) -> (f64, f64, Source, Option<String>) {
    let c = r
        .components
        .iter()
        .find(|c| c.component == "gpu:0")
        .expect("gpu:0 in the report");
    (c.energy_j, c.coverage, c.source, c.note.clone())
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Turn the failure switch on for `ms`, then off.
fn fail_for(switch: &AtomicBool, ms: u64) {
    switch.store(true, Ordering::SeqCst);
    sleep_ms(ms);
    switch.store(false, Ordering::SeqCst);
}

#[test]
fn reads_failing_mid_window_lose_no_counter_energy_and_flag_the_run() {
    let gpu = Arc::new(FakeGpu::new(WATTS));
    let switch = gpu.failure_switch();
    let mut meter = meter_over(&gpu);
    assert_eq!(meter.primary_source(), Source::MeasuredCounter);
    let mut w = MeasuredWindow::open(&mut meter, &NoSync).expect("open");
    sleep_ms(150);
    switch.store(true, Ordering::SeqCst);
    sleep_ms(200);
    // A mark while NVML fails: the window goes on.
    let mark = w
        .mark()
        .expect("a failed read at a mark does not end the window");
    sleep_ms(200);
    switch.store(false, Ordering::SeqCst);
    sleep_ms(150);
    let r = w.close().expect("close");
    let (energy_j, coverage, source, _) = gpu_energy(&r.report);
    // The counter is cumulative: readings missing in the middle lose nothing.
    let truth_j = WATTS * r.duration_s;
    assert_eq!(source, Source::MeasuredCounter);
    assert!(
        (energy_j - truth_j).abs() <= 0.005 * truth_j,
        "{energy_j} J vs {truth_j} J"
    );
    assert_eq!(coverage, 1.0);
    // The mark during the failure reports what the readings before it gave, never more.
    assert!(mark.energy_j <= WATTS * mark.t_s + 1e-3, "{mark:?}");
    // ... and the failures are said: the flag, the count and the first message.
    assert!(r.report.flags.contains(&"nvml_read_errors".to_string()));
    let facts = &r.report.provenance.gpus["gpu:0"];
    let failed = gpu.failed_reads();
    assert!(failed >= 4, "{failed} reads failed");
    assert_eq!(facts.read_errors, Some(failed));
    assert!(facts
        .first_read_error
        .as_deref()
        .is_some_and(|e| e.contains("fake NVML failure")));
    assert_eq!(facts.name.as_deref(), Some("Fake GPU"));
}

#[test]
fn a_failed_read_at_the_windows_end_shows_as_missing_coverage() {
    let gpu = Arc::new(FakeGpu::new(WATTS));
    let switch = gpu.failure_switch();
    let mut meter = meter_over(&gpu);
    let w = MeasuredWindow::open(&mut meter, &NoSync).expect("open");
    sleep_ms(300);
    switch.store(true, Ordering::SeqCst);
    sleep_ms(300);
    let r = w.close().expect("close");
    switch.store(false, Ordering::SeqCst);
    let (energy_j, coverage, source, note) = gpu_energy(&r.report);
    let truth_j = WATTS * r.duration_s;
    assert_eq!(source, Source::MeasuredCounter);
    // The last 300 ms were not read: the figure is short by them, and says so.
    assert!(energy_j < 0.8 * truth_j, "{energy_j} J vs {truth_j} J");
    assert!(
        (energy_j - WATTS * coverage * r.duration_s).abs() <= 0.01 * truth_j,
        "energy {energy_j} J, coverage {coverage}, window {} s",
        r.duration_s
    );
    assert!(coverage < 0.75 && coverage > 0.3, "{coverage}");
    assert!(note.is_some_and(|n| n.contains("missing, not estimated")));
    assert!(r.report.flags.contains(&"nvml_read_errors".to_string()));
    // The end edge's facts could not be read either: absent, not invented.
    let facts = &r.report.provenance.gpus["gpu:0"];
    assert_eq!(facts.end.temperature_c, None);
    assert_eq!(facts.start.temperature_c, Some(40));
}

#[test]
fn without_a_counter_a_power_gap_is_bridged_and_flagged() {
    let gpu = Arc::new(FakeGpu::new(WATTS).without_counter());
    let switch = gpu.failure_switch();
    let mut meter = meter_over(&gpu);
    assert_eq!(meter.primary_source(), Source::MeasuredPowerIntegrated);
    let w = MeasuredWindow::open(&mut meter, &NoSync).expect("open");
    sleep_ms(150);
    fail_for(&switch, 300);
    sleep_ms(150);
    let r = w.close().expect("close");
    let (energy_j, coverage, source, _) = gpu_energy(&r.report);
    let truth_j = WATTS * r.duration_s;
    assert_eq!(source, Source::MeasuredPowerIntegrated);
    // Constant power: the trapezoid across the gap is exact here; on a real board it is an
    // interpolation, which is why the run is flagged.
    assert!(
        (energy_j - truth_j).abs() <= 0.005 * truth_j,
        "{energy_j} J vs {truth_j} J"
    );
    assert!(coverage > 0.99, "{coverage}");
    assert!(r.report.flags.contains(&"nvml_read_errors".to_string()));
}

#[test]
fn nvml_failing_for_the_whole_window_gives_no_figure() {
    let gpu = Arc::new(FakeGpu::new(WATTS));
    let switch = gpu.failure_switch();
    let mut meter = meter_over(&gpu);
    switch.store(true, Ordering::SeqCst);
    let w = MeasuredWindow::open(&mut meter, &NoSync).expect("open");
    sleep_ms(300);
    let r = w.close().expect("close");
    let (energy_j, _, source, _) = gpu_energy(&r.report);
    assert_eq!(source, Source::Unavailable);
    assert_eq!(energy_j, 0.0);
    assert!(r.report.flags.contains(&"gpu_no_samples".to_string()));
    assert!(r.report.flags.contains(&"nvml_read_errors".to_string()));
}

/// Switches NVML off for a stretch of training steps (it sleeps there, so the pollers meet
/// the failure too).
struct FailDuringSteps {
    switch: Arc<AtomicBool>,
}

impl Observer for FailDuringSteps {
    fn on_step(&mut self, step: usize, _epoch: usize) {
        if step == 3 {
            fail_for(&self.switch, 400);
        }
    }
}

#[test]
fn a_training_run_with_nvml_failing_mid_window_keeps_exact_energy_and_its_flag() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let models = task::default_models_dir();
    let spec = task::find(&models, "digits-mlp").expect("digits-mlp");
    let data = joulebench::data::load(spec.dataset, None).expect("digits data");
    let results = ResultsDir::open(tmp.path()).expect("results dir");
    let plan = Plan {
        jobs: runner::order(0, &[variant::baseline()], &[1]),
        tasks: vec![TaskRun {
            spec,
            data,
            finetune_source: None,
        }],
        device: candle_core::Device::Cpu,
        device_label: "cpu".to_string(),
        results,
        idle_s: 0.0,
        cooldown_s: 0.0,
        stop_at_target: true,
        forecast_stop: false,
        checkpoint: None,
        inference: None,
    };
    let gpu = Arc::new(FakeGpu::new(WATTS));
    let switch = gpu.failure_switch();
    let mut meter = meter_over(&gpu);
    let series = runner::run_series(
        &plan,
        &mut meter as &mut dyn Meter,
        &[],
        |_| {
            Box::new(FailDuringSteps {
                switch: Arc::clone(&switch),
            })
        },
        |_| {},
    )
    .expect("the series runs");
    let rec = &series.records[0];
    assert_eq!(rec.status, Status::Ok, "{:?}", rec.error);
    // What follows is read back from the run file on disk.
    let path = plan.results.run_path(&rec.run_id);
    let read = joulebench::record::read::read_run(&path).expect("the run file parses");
    assert_eq!(read.run_id, rec.run_id);
    assert_eq!(read.energy.flags, rec.energy.flags);
    let e = &read.energy;
    assert!(
        e.flags.contains(&"nvml_read_errors".to_string()),
        "{:?}",
        e.flags
    );
    let gpu_c = e
        .components
        .iter()
        .find(|c| c.component == "gpu:0")
        .expect("gpu:0");
    assert_eq!(gpu_c.source, Source::MeasuredCounter);
    assert_eq!(gpu_c.coverage, 1.0);
    let truth_j = WATTS * e.window_s;
    assert!(
        (gpu_c.energy_j - truth_j).abs() <= 0.005 * truth_j,
        "{} J vs {truth_j} J over {} s",
        gpu_c.energy_j,
        e.window_s
    );
    let facts = &read.provenance.gpus["gpu:0"];
    assert_eq!(facts.read_errors, Some(gpu.failed_reads()));
    assert!(gpu.failed_reads() >= 4, "{}", gpu.failed_reads());
}
