//! The harness's own costs: meter reads (fake, estimate, RAPL on a fake powercap tree), the
//! background poller's cost to a training-like workload, and the exporters (run-file writer,
//! MLLOG and power CSV). Run: `cargo bench --bench harness`.
//!
//! A `report` exporter is being built on another branch; add its bench here (group
//! `exporters`) when it lands.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use joulebench::measure::estimate::EstimateMeter;
use joulebench::measure::fake::FakeMeter;
use joulebench::measure::poller::Poller;
use joulebench::measure::{rapl, Meter, PowerSample};
use joulebench::record::curve::Event;
use joulebench::record::{self, ResultsDir, RunRecord};
use std::path::Path;
use std::time::{Duration, Instant};

fn zone(root: &Path, rel: &str, name: &str, energy_uj: u64) {
    let dir = root.join(rel);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("name"), format!("{name}\n")).expect("name");
    std::fs::write(dir.join("energy_uj"), format!("{energy_uj}\n")).expect("energy");
    std::fs::write(dir.join("max_energy_range_uj"), "262143328850\n").expect("max");
}

fn bench_meters(c: &mut Criterion) {
    let mut g = c.benchmark_group("meter_read");
    let mut fake = FakeMeter::constant(100.0);
    fake.start().expect("start");
    g.bench_function("fake", |b| b.iter(|| fake.read().expect("read")));
    let mut est = EstimateMeter::new(Some(100.0)).expect("estimate");
    est.start().expect("start");
    g.bench_function("estimate", |b| b.iter(|| est.read().expect("read")));
    // Two packages and a DRAM zone, as on a dual-socket server.
    let tmp = tempfile::tempdir().expect("tmp");
    zone(tmp.path(), "intel-rapl:0", "package-0", 1_000_000);
    zone(tmp.path(), "intel-rapl:0/intel-rapl:0:0", "dram", 10_000);
    zone(tmp.path(), "intel-rapl:1", "package-1", 2_000_000);
    let mut r = rapl::probe(tmp.path()).expect("fake powercap tree");
    r.start().expect("start");
    g.bench_function("rapl_fake_powercap", |b| b.iter(|| r.read().expect("read")));
    g.finish();
    let _ = est.stop();
    let _ = r.stop();
}

/// A training-like workload (a 128x784 by 784x256 matmul) alone, and with a poller sampling
/// the estimate meter's /proc source at the production interval (1 s) and at 10 ms (100x).
fn bench_poller(c: &mut Criterion) {
    let dev = Device::Cpu;
    let x = Tensor::rand(0f32, 1., (128, 784), &dev).expect("x");
    let w = Tensor::rand(0f32, 1., (784, 256), &dev).expect("w");
    let work = || x.matmul(&w).expect("mm").sum_all().expect("sum");
    let mut g = c.benchmark_group("poller_overhead");
    g.bench_function("workload_alone", |b| b.iter(work));
    for ms in [1000u64, 10] {
        let p = Poller::spawn("bench", Duration::from_millis(ms), Instant::now(), || {
            std::fs::read_to_string("/proc/stat")
                .map(|s| s.len())
                .map_err(|e| e.to_string())
        })
        .expect("poller");
        g.bench_function(BenchmarkId::new("workload_with_poller_ms", ms), |b| {
            b.iter(work)
        });
        let log = p.stop();
        assert_eq!(log.errors, 0);
    }
    g.bench_function("spawn_and_stop", |b| {
        b.iter(|| {
            Poller::spawn("bench", Duration::from_secs(1), Instant::now(), || {
                Ok::<_, String>(())
            })
            .expect("poller")
            .stop()
        })
    });
    g.finish();
}

/// A real run record and its events: the committed reference run of `mnist-mlp`
/// (`results/2026-11-22-cpu-xeon-2core`), and a power timeline of one hour at 1 s for 3
/// components (10,800 rows).
fn real_record() -> (RunRecord, Vec<Event>, Vec<PowerSample>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/2026-11-22-cpu-xeon-2core");
    let id = "mnist-mlp--f32--seed-1--fa11d6a3";
    let rec: RunRecord = serde_json::from_str(
        &std::fs::read_to_string(dir.join("runs").join(format!("{id}.json"))).expect("run file"),
    )
    .expect("run record");
    let text =
        std::fs::read_to_string(dir.join("events").join(format!("{id}.mllog"))).expect("mllog");
    let events: Vec<Event> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l.trim_start_matches(":::MLLOG ")).expect("json");
            Event {
                time_ms: v["time_ms"].as_u64().unwrap_or(0) as u128,
                event_type: match v["event_type"].as_str() {
                    Some("INTERVAL_START") => "INTERVAL_START",
                    Some("INTERVAL_END") => "INTERVAL_END",
                    _ => "POINT_IN_TIME",
                },
                key: v["key"].as_str().unwrap_or("").to_string(),
                value: v["value"].clone(),
                metadata: v["metadata"].clone(),
            }
        })
        .collect();
    let timeline = (0..3600)
        .flat_map(|t| {
            ["cpu:package-0", "dram", "gpu:0"].map(|c| PowerSample {
                t_s: t as f64,
                component: c.to_string(),
                energy_j: 100.0 * t as f64,
                power_w: Some(100.0),
            })
        })
        .collect();
    (rec, events, timeline)
}

fn bench_exporters(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tmp");
    let (rec, events, timeline) = real_record();
    let out = ResultsDir::open(&tmp.path().join("out")).expect("out");
    let mut g = c.benchmark_group("exporters");
    g.sample_size(30);
    g.bench_function("write_run", |b| {
        b.iter(|| out.write_run(&rec, &events, &timeline).expect("write"))
    });
    g.bench_function("mllog", |b| b.iter(|| record::mllog(&events)));
    g.bench_function("power_csv_10800_rows", |b| {
        b.iter(|| record::power_csv(&timeline))
    });
    g.finish();
}

criterion_group!(benches, bench_meters, bench_poller, bench_exporters);
criterion_main!(benches);
