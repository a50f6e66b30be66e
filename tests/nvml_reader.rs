//! The independent NVML reader (scripts/nvml-reader.py) against the Rust side that reads its
//! trace (`joulebench crosscheck`), end to end, without a GPU: the reader runs on a fake
//! `pynvml` (tests/fixtures/fake-pynvml) drawing a constant 300 W. Without python3 it skips
//! with the reason, or fails under CI (`common::requires`). The real reader on a real GPU is run by scripts/gpu-run.sh.

mod common;

use joulebench::analyse::crosscheck::{Trace, Verdict};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// python3, or None after `common::requires` said why not (a failure under CI).
fn python(test: &str) -> Option<&'static str> {
    let ok = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let missing = (!ok).then(|| "python3 not found (CI installs python3)".to_string());
    common::requires(test, missing, None).then_some("python3")
}

fn reader(py: &str, out: &Path) -> Command {
    let mut c = Command::new(py);
    c.arg(root().join("scripts/nvml-reader.py"))
        .arg("--out")
        .arg(out)
        .arg("--interval-ms")
        .arg("20")
        .env("PYTHONPATH", root().join("tests/fixtures/fake-pynvml"))
        .env_remove("CUDA_VISIBLE_DEVICES")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn wait_for(path: &Path, min_rows: usize) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if std::fs::read_to_string(path).is_ok_and(|t| t.lines().count() >= min_rows + 2) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "the reader wrote fewer than {min_rows} rows to {} in 20 s",
        path.display()
    );
}

#[test]
fn trace_from_the_reader_parses_and_cross_checks_a_run() {
    let Some(py) = python("trace_from_the_reader_parses_and_cross_checks_a_run") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let trace_path = tmp.path().join("trace.csv");
    let stop = tmp.path().join("stop");
    let child = reader(py, &trace_path)
        .arg("--stop-file")
        .arg(&stop)
        .spawn()
        .unwrap();
    wait_for(&trace_path, 5);
    // A "run" whose measured window opens now and lasts 0.5 s, as joulebench would log it.
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    std::thread::sleep(Duration::from_millis(700));
    std::fs::write(&stop, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let trace = Trace::read(&trace_path).unwrap();
    assert_eq!(trace.meta["name"], "Fake H100");
    assert_eq!(trace.meta["power_source"], "nvml_field_186_power_instant");
    assert_eq!(trace.end.as_ref().unwrap()["stopped_by"], "stop_file");
    assert!(trace.samples.len() >= 20, "{} samples", trace.samples.len());
    assert!(trace
        .samples
        .windows(2)
        .all(|w| w[1].energy_mj >= w[0].energy_mj && w[1].t_unix_s > w[0].t_unix_s));

    let res = tmp.path().join("results");
    std::fs::create_dir_all(res.join("runs")).unwrap();
    std::fs::create_dir_all(res.join("events")).unwrap();
    let id = "mnist-mlp--f32--seed-1--fake";
    // joulebench's side: 300 W x 0.5 s = 150 J (what a perfect meter would have read).
    // A whole run file (crosscheck reads it strictly): a real one with this GPU energy.
    let mut run: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            "tests/fixtures/report/machines/xeon-rapl/runs/digits-mlp--f32--seed-1--a1b2c3d4.json",
        )
        .unwrap(),
    )
    .unwrap();
    run["run_id"] = json!(id);
    run["device"] = json!("cuda:0");
    run["energy"]["window_s"] = json!(0.5);
    run["energy"]["components"] = json!([
        {"component": "gpu:0", "source": "measured_counter", "energy_j": 150.0,
         "sample_interval_ms": 50.0, "coverage": 1.0, "counter_to_integral_ratio": 1.0,
         "note": null}]);
    run["provenance"] = json!({"gpu:0": {"uuid_sha256_16": trace.meta["uuid_sha256_16"]}});
    std::fs::write(
        res.join(format!("runs/{id}.json")),
        serde_json::to_vec(&run).unwrap(),
    )
    .unwrap();
    let ev = json!({"time_ms": start_ms, "event_type": "INTERVAL_START", "key": "run_start", "value": null, "metadata": {}});
    std::fs::write(
        res.join(format!("events/{id}.mllog")),
        format!(":::MLLOG {ev}\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_joulebench"))
        .arg("crosscheck")
        .arg("--trace")
        .arg(&trace_path)
        .arg(&res)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(res.join("crosscheck.json")).unwrap()).unwrap();
    let r = &report["runs"][0];
    assert_eq!(r["verdict"], json!(Verdict::Agree));
    // The fake's counter is exact to the millisecond (0.3 J at 300 W); the window is aligned
    // from the millisecond MLLOG stamp: 0.3 J more, 0.4 % of 150 J at worst.
    let ratio = r["ratio"].as_f64().unwrap();
    assert!((ratio - 1.0).abs() < 0.01, "ratio {ratio}: {stdout}");
}

#[test]
fn a_killed_reader_leaves_a_usable_trace_and_bad_setups_exit_2() {
    let Some(py) = python("a_killed_reader_leaves_a_usable_trace_and_bad_setups_exit_2") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let trace_path = tmp.path().join("trace.csv");
    let mut child = reader(py, &trace_path).spawn().unwrap();
    wait_for(&trace_path, 5);
    child.kill().unwrap();
    let _ = child.wait();
    let trace = Trace::read(&trace_path).unwrap();
    assert!(trace.samples.len() >= 5);
    assert_eq!(trace.end, None);

    // NVML missing: one line, exit 2.
    let out = reader(py, &tmp.path().join("t2.csv"))
        .env("FAKE_NVML_FAIL", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("NVML could not be initialised"), "{err}");
    // A CUDA ordinal CUDA_VISIBLE_DEVICES does not list.
    let out = reader(py, &tmp.path().join("t3.csv"))
        .env("CUDA_VISIBLE_DEVICES", "0")
        .arg("--cuda-index")
        .arg("1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CUDA_VISIBLE_DEVICES=0 lists 1"));
}
