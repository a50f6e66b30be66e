//! `joulebench exec` against a fake training program (tests/fixtures/exec/fake-trainer.sh):
//! MLLOG and JSON-lines parsing, energy at eval arrival, stop at target, a program killed by a
//! signal, one that never reports, one that exits 3, garbage and over-long lines, a command
//! that does not exist, refusing to replace a finished run.

mod common;

use common::{joulebench, Out};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn fake() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/exec/fake-trainer.sh")
        .display()
        .to_string()
}

/// `exec --task mnist-mlp` (T = 97 %) with the estimate meter and no idle or cooldown.
fn exec(results: &Path, extra: &[&str], child: &[&str]) -> Out {
    let r = results.display().to_string();
    let mut args = vec![
        "exec",
        "--task",
        "mnist-mlp",
        "--meter",
        "estimate",
        "--idle-s",
        "0",
        "--cooldown-s",
        "0",
        "--results",
        &r,
    ];
    args.extend_from_slice(extra);
    args.push("--");
    args.push("bash");
    let f = fake();
    args.push(&f);
    args.extend_from_slice(child);
    joulebench(&args)
}

fn run_files(results: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(results.join("runs"))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|x| x == "json"));
    v.sort();
    v
}

fn only_run(results: &Path) -> Value {
    let files = run_files(results);
    assert_eq!(files.len(), 1, "{files:?}");
    serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap()
}

#[test]
fn a_program_that_reaches_the_target_is_scored_from_run_start() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("r");
    let o = exec(&res, &["--seeds", "2"], &["ok", "--seed", "{seed}"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let files = run_files(&res);
    assert_eq!(files.len(), 2);
    for (i, f) in files.iter().enumerate() {
        let r: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
        let seed = i as u64 + 1;
        assert_eq!(r["status"], "ok");
        assert_eq!(r["seed"], seed);
        assert_eq!(r["task"], "mnist-mlp");
        assert_eq!(r["variant"]["name"], "f32");
        assert_eq!(r["engine"]["kind"], "exec");
        assert_eq!(r["engine"]["label"], "exec: fake 1.0");
        let ex = &r["exec"];
        assert_eq!(
            ex["command"][4],
            seed.to_string(),
            "{{seed}} substituted: {ex}"
        );
        assert_eq!(ex["exit_code"], 0);
        assert_eq!(ex["eval_lines"], 3);
        assert_eq!(ex["malformed_lines"], 0);
        assert_eq!(ex["env"]["JOULEBENCH_SEED"], seed.to_string());
        assert_eq!(ex["env"]["PYTHONUNBUFFERED"], "1");
        assert!(ex["peak_rss_kib"].as_u64().unwrap() > 0);
        // Three evals, 0.3 s apart; energy is read as each line arrives and counted from
        // run_start, so it rises with time and the target is the third eval.
        let curve = r["quality"]["curve"].as_array().unwrap();
        assert_eq!(curve.len(), 3);
        let steps: Vec<u64> = curve.iter().map(|p| p["step"].as_u64().unwrap()).collect();
        assert_eq!(steps, [100, 200, 300]);
        let t: Vec<f64> = curve
            .iter()
            .map(|p| p["time_s"].as_f64().unwrap())
            .collect();
        let e: Vec<f64> = curve
            .iter()
            .map(|p| p["energy_j"].as_f64().unwrap())
            .collect();
        assert!(
            t[0] >= 0.25 && t[1] - t[0] >= 0.25 && t[2] - t[1] >= 0.25,
            "{t:?}"
        );
        assert!(e[0] > 0.0 && e[1] > e[0] && e[2] > e[1], "{e:?}");
        assert_eq!(r["ett_j"].as_f64().unwrap(), e[2]);
        assert_eq!(r["ttt_s"].as_f64().unwrap(), t[2]);
        assert!(r["jpp_label"].as_str().unwrap().contains("J/pp @ 97.00 %"));
        // ETT is inside the window; the setup before run_start is its own phase.
        let total = r["energy"]["total_j"].as_f64().unwrap();
        assert!(e[2] < total);
        let phases: Vec<&str> = r["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(phases, ["setup", "train", "teardown"]);
        let sum: f64 = r["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["energy_j"].as_f64().unwrap())
            .sum();
        assert!(
            (sum - total).abs() < 1e-6 * total.max(1.0),
            "{sum} vs {total}"
        );
        // The program's output, passed through and kept.
        let id = r["run_id"].as_str().unwrap();
        let log = std::fs::read_to_string(res.join("logs").join(format!("{id}.log"))).unwrap();
        assert!(log.contains(&format!("seed={seed}")), "{log}");
        assert!(res.join("events").join(format!("{id}.mllog")).is_file());
        assert!(res.join("power").join(format!("{id}.csv")).is_file());
        assert!(id.contains("exec-bash-fake-trainer"), "{id}");
    }
    assert!(
        o.stdout.contains("fake trainer: mode ok"),
        "passed through: {}",
        o.stdout
    );
    assert!(res.join("system.json").is_file());
    // No temp file is left behind.
    for d in ["runs", "logs", "events", "power"] {
        for e in std::fs::read_dir(res.join(d)).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!n.ends_with(".tmp"), "{d}/{n}");
        }
    }
}

#[test]
fn stop_at_target_terms_then_kills() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("r");
    let t = Instant::now();
    let o = exec(&res, &["--stop-at-target"], &["linger"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(t.elapsed().as_secs_f64() < 15.0, "stopped, not waited for");
    let r = only_run(&res);
    assert_eq!(r["status"], "ok");
    assert_eq!(r["exec"]["stopped_at_target"], true);
    assert_eq!(r["exec"]["signals_sent"], serde_json::json!(["SIGTERM"]));
    assert_eq!(r["exec"]["signal"], "SIGTERM");
    // A program that ignores SIGTERM gets SIGKILL after the grace period.
    let res2 = tmp.path().join("r2");
    let o = exec(
        &res2,
        &["--stop-at-target", "--grace-s", "0.5"],
        &["stubborn"],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let r = only_run(&res2);
    assert_eq!(r["status"], "ok");
    assert_eq!(
        r["exec"]["signals_sent"],
        serde_json::json!(["SIGTERM", "SIGKILL"])
    );
    assert_eq!(r["exec"]["signal"], "SIGKILL");
}

#[test]
fn failures_are_recorded_with_their_reason() {
    let tmp = tempfile::tempdir().unwrap();
    for (mode, status, needle) in [
        ("exit3", "failed", "exited with status 3"),
        ("selfkill", "failed", "killed by SIGKILL"),
        ("silent", "dnf", "never reported `eval_accuracy`"),
        (
            "never",
            "dnf",
            "did not reach T = 0.97 (best 0.6 in 2 evals)",
        ),
    ] {
        let res = tmp.path().join(mode);
        let o = exec(&res, &[], &[mode]);
        assert_eq!(o.code, 1, "{mode}: {}", o.stderr);
        let r = only_run(&res);
        assert_eq!(r["status"], status, "{mode}");
        assert!(
            r["error"].as_str().unwrap_or_default().contains(needle),
            "{mode}: {}",
            r["error"]
        );
        assert!(r["ett_j"].is_null() && r["jpp"].is_null());
        assert!(o.stdout.contains(status), "{mode}: {}", o.stdout);
    }
    // The time limit ends a program that never stops: a DNF, not a hang.
    let res = tmp.path().join("limit");
    let t = Instant::now();
    let o = exec(
        &res,
        &["--max-time-s", "1", "--grace-s", "1"],
        &["sleep", "60"],
    );
    assert_eq!(o.code, 1);
    assert!(t.elapsed().as_secs_f64() < 20.0);
    let r = only_run(&res);
    assert_eq!(r["status"], "dnf");
    assert_eq!(r["exec"]["timed_out"], true);
    assert!(r["error"].as_str().unwrap().contains("time limit"));
}

#[test]
fn garbage_and_over_long_lines_are_counted_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("r");
    let o = exec(&res, &[], &["garbage"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let r = only_run(&res);
    assert_eq!(r["status"], "ok");
    // Not JSON, a non-numeric value, not an object, and an over-long MLLOG line.
    assert_eq!(r["exec"]["malformed_lines"], 4, "{}", r["exec"]);
    assert_eq!(r["exec"]["over_long_lines"], 2);
    assert_eq!(r["exec"]["malformed_examples"].as_array().unwrap().len(), 4);
    assert!(r["energy"]["flags"]
        .as_array()
        .unwrap()
        .contains(&Value::from("malformed_report_lines")));
    assert_eq!(r["quality"]["curve"].as_array().unwrap().len(), 1);
}

#[test]
fn stderr_reports_and_an_events_file() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("r");
    let o = exec(&res, &[], &["stderr"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(only_run(&res)["status"], "ok");
    // JSON lines in a file the program appends to; other metrics and a bad line ignored or
    // counted; the file's earlier content is not read.
    let res = tmp.path().join("j");
    let ev = tmp.path().join("events-{seed}.jsonl");
    std::fs::write(
        tmp.path().join("events-1.jsonl"),
        "{\"step\": 1, \"metric\": \"eval_accuracy\", \"value\": 0.99}\n",
    )
    .unwrap();
    let evs = ev.display().to_string();
    let path1 = tmp.path().join("events-1.jsonl").display().to_string();
    let o = exec(&res, &["--events", &evs], &["jsonl", &path1]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let r = only_run(&res);
    assert_eq!(r["status"], "ok");
    assert_eq!(r["exec"]["source"], "events-file");
    let steps: Vec<u64> = r["quality"]["curve"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [100, 200, 300]);
    assert_eq!(r["exec"]["malformed_lines"], 1);
}

#[test]
fn a_loss_metric_scores_downwards() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("r");
    let r_s = res.display().to_string();
    let f = fake();
    let o = joulebench(&[
        "exec",
        "--target",
        "1.88",
        "--metric",
        "eval_loss",
        "--chance",
        "3.0",
        "--name",
        "toy-lm",
        "--meter",
        "estimate",
        "--idle-s",
        "0",
        "--results",
        &r_s,
        "--",
        "bash",
        &f,
        "loss",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let r = only_run(&res);
    assert_eq!(r["task"], "toy-lm");
    assert_eq!(r["quality"]["direction"], "lower");
    assert_eq!(r["quality"]["best"], 1.85);
    assert!(r["jpp_label"].as_str().unwrap().contains("lower is better"));
    let ett = r["ett_j"].as_f64().unwrap();
    let jpp = r["jpp"].as_f64().unwrap();
    assert!((jpp - ett / (100.0 * (3.0 - 1.88))).abs() < 1e-9);
}

#[test]
fn bad_input_is_one_line_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("never-made");
    let r = res.display().to_string();
    let f = fake();
    for (args, needle) in [
        (
            vec![
                "exec",
                "--task",
                "mnist-mlp",
                "--results",
                &r,
                "--",
                "no-such-program-xyz",
            ],
            "not found on PATH",
        ),
        (
            vec![
                "exec",
                "--task",
                "mnist-mlp",
                "--results",
                &r,
                "--",
                "./no/such/file",
            ],
            "no executable file",
        ),
        (
            vec!["exec", "--task", "nope", "--results", &r, "--", "bash"],
            "nope",
        ),
        (
            vec![
                "exec",
                "--task",
                "mnist-mlp",
                "--variant-label",
                "fp99",
                "--results",
                &r,
                "--",
                "bash",
            ],
            "fp99",
        ),
        (
            vec![
                "exec",
                "--target",
                "0.9",
                "--metric",
                "score",
                "--chance",
                "0.1",
                "--results",
                &r,
                "--",
                "bash",
            ],
            "--direction",
        ),
        (
            vec![
                "exec",
                "--target",
                "0.05",
                "--metric",
                "eval_accuracy",
                "--chance",
                "0.1",
                "--results",
                &r,
                "--",
                "bash",
            ],
            "not beyond --chance",
        ),
        (vec!["exec", "--results", &r, "--", "bash"], "--task NAME"),
        (
            vec![
                "exec",
                "--task",
                "mnist-mlp",
                "--seeds",
                "0",
                "--results",
                &r,
                "--",
                "bash",
            ],
            "--seeds",
        ),
        (
            vec![
                "exec",
                "--task",
                "mnist-mlp",
                "--seeds",
                "10000000000000",
                "--results",
                &r,
                "--",
                "bash",
            ],
            "at most",
        ),
        (
            vec![
                "exec",
                "--task",
                "mnist-mlp",
                "--device",
                "tpu",
                "--results",
                &r,
                "--",
                "bash",
            ],
            "--device",
        ),
        (
            vec![
                "exec",
                "--task",
                "mnist-mlp",
                "--max-time-s",
                "-1",
                "--results",
                &r,
                "--",
                "bash",
            ],
            "--max-time-s",
        ),
        (
            vec![
                "exec",
                "--task",
                "mnist-mlp",
                "--events",
                "/no/such/dir/e.jsonl",
                "--results",
                &r,
                "--",
                "bash",
                &f,
            ],
            "does not exist",
        ),
        (
            vec![
                "exec",
                "--task",
                "mnist-mlp",
                "--engine-label",
                "a b",
                "--results",
                &r,
                "--",
                "bash",
            ],
            "--engine-label",
        ),
    ] {
        let o = joulebench(&args);
        assert_eq!(o.code, 2, "{args:?}: {}", o.stderr);
        let lines: Vec<&str> = o.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {}", o.stderr);
        assert!(o.stderr.contains(needle), "{args:?}: {}", o.stderr);
        assert!(!res.exists(), "{args:?} wrote {}", res.display());
    }
}

#[test]
fn a_finished_run_is_not_replaced_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("r");
    assert_eq!(exec(&res, &[], &["ok"]).code, 0);
    let before = std::fs::read(&run_files(&res)[0]).unwrap();
    let o = exec(&res, &[], &["never"]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("--overwrite"), "{}", o.stderr);
    assert_eq!(std::fs::read(&run_files(&res)[0]).unwrap(), before);
    let o = exec(&res, &["--overwrite"], &["never"]);
    assert_eq!(o.code, 1);
    assert_eq!(only_run(&res)["status"], "dnf");
}

#[test]
fn a_signal_to_joulebench_reaches_the_program_and_what_it_started() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("r");
    let r = res.display().to_string();
    let f = fake();
    // A marker no other process has: the fake's `sleep` runs as `sleep 61.<pid>`.
    let marker = format!("61.{}", std::process::id());
    let mut jb = std::process::Command::new(env!("CARGO_BIN_EXE_joulebench"))
        .args([
            "exec",
            "--task",
            "mnist-mlp",
            "--meter",
            "estimate",
            "--idle-s",
            "0",
            "--results",
            &r,
            "--",
            "bash",
            &f,
            "sleep",
            &marker,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Whether a `sleep <m>` process exists (read from /proc: no pgrep needed).
    let running = |m: &str| {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| {
                std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                    let words: Vec<&[u8]> = c.split(|&b| b == 0).collect();
                    words.first().is_some_and(|w| w.ends_with(b"sleep"))
                        && words.get(1).is_some_and(|w| *w == m.as_bytes())
                })
            })
    };
    let t = Instant::now();
    while !running(&marker) && t.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(running(&marker), "the program started");
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(jb.id() as i32, libc::SIGTERM) };
    let status = jb.wait().unwrap();
    assert!(!status.success());
    let t = Instant::now();
    while running(&marker) && t.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!running(&marker), "the program's sleep outlived joulebench");
    // Killed mid-run: no run file, so a rerun redoes it.
    assert!(run_files(&res).is_empty());
}

#[test]
fn a_precision_variant_records_its_derived_or_declared_precision() {
    let tmp = tempfile::tempdir().unwrap();
    // Derived: from this machine's CPU flags alone.
    let res = tmp.path().join("derived");
    let o = exec(&res, &["--variant-label", "bf16-amp"], &["ok"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let r = only_run(&res);
    let rep = &r["variant"]["precision_report"];
    assert_eq!(rep["basis"], "derived", "{rep}");
    assert_eq!(rep["ops"]["matmul"]["requested"], "bf16", "{rep}");
    let native = r["system"]["capabilities"]["cpu_flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "avx512_bf16" || f == "amx_bf16" || f == "bf16");
    let want = if native { "native" } else { "emulated" };
    assert_eq!(rep["ops"]["matmul"]["support"], want, "{rep}");
    // Declared: the program says its linear layers ran in f32 -- emulated whatever the CPU.
    let res = tmp.path().join("declared");
    let o = exec(
        &res,
        &["--variant-label", "bf16-amp"],
        &["declared", "float32"],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let r = only_run(&res);
    let rep = &r["variant"]["precision_report"];
    assert_eq!(rep["basis"], "declared", "{rep}");
    assert_eq!(rep["ops"]["matmul"]["ran"], "f32", "{rep}");
    assert_eq!(rep["ops"]["matmul"]["support"], "emulated", "{rep}");
    assert_eq!(
        rep["observed"]["lowest_numerical_precision_in_linear"],
        "float32"
    );
    // An f32 run has no record.
    let res = tmp.path().join("f32");
    let o = exec(&res, &[], &["ok"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(only_run(&res)["variant"].get("precision_report").is_none());
}
