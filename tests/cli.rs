//! End-to-end tests of the `joulebench` binary: a real (seconds-long) training run on the
//! shipped digits data, the run file read back from the consumer's side, and every bad input
//! of issue 2 giving one line on stderr, exit code 2 and nothing half-written.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn jb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_joulebench"))
        .args(args)
        .env_remove("JOULEBENCH_DATA")
        .env_remove("JOULEBENCH_MODELS")
        .output()
        .expect("spawn joulebench")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 2, exactly one non-empty stderr line containing every `needle`.
fn assert_usage_error(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {e}");
    let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {e}");
    for n in needles {
        assert!(e.contains(n), "missing {n:?} in: {e}");
    }
    assert!(!e.contains("panicked"), "{e}");
}

fn run_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir.join("runs"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default()
}

const QUICK: &[&str] = &["--idle-s", "0", "--cooldown-s", "0", "--meter", "estimate"];

#[test]
fn digits_run_writes_a_complete_consistent_run_file() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("res");
    let mut args = vec!["run", "--task", "digits-mlp", "--seed", "3", "--results"];
    args.push(res.to_str().unwrap());
    args.extend_from_slice(QUICK);
    let o = jb(&args);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("digits-mlp f32 seed 3: ok"), "{out}");
    assert!(out.contains("ESTIMATED"), "{out}");

    let files = run_files(&res);
    assert_eq!(files.len(), 1);
    let r: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    // Every required key of docs/run-file.md.
    for k in [
        "schema_version",
        "run_id",
        "task",
        "seed",
        "variant",
        "status",
        "device",
        "energy",
        "time",
        "quality",
        "ett_j",
        "ttt_s",
        "jpp",
        "samples",
        "steps",
        "flops",
        "config",
    ] {
        assert!(r.get(k).is_some(), "missing key {k}");
    }
    for k in ["precision", "sparsity", "pruning", "init", "data"] {
        assert!(r["variant"].get(k).is_some(), "variant.{k}");
    }
    for k in [
        "total_j",
        "net_j",
        "boundary",
        "components",
        "idle_w",
        "flags",
    ] {
        assert!(r["energy"].get(k).is_some(), "energy.{k}");
    }
    for k in ["train_s", "eval_s", "total_s"] {
        assert!(r["time"][k].as_f64().is_some(), "time.{k}");
    }
    for k in ["metric", "target", "chance", "final", "best", "curve"] {
        assert!(r["quality"].get(k).is_some(), "quality.{k}");
    }
    assert_eq!(r["status"], "ok");
    assert_eq!(r["device"], "cpu");
    assert_eq!(r["energy"]["boundary"], "H");
    let comps = r["energy"]["components"].as_array().unwrap();
    assert!(
        comps.iter().any(|c| c["source"] == "estimated_tdp_load"),
        "{comps:?}"
    );
    for c in comps {
        for k in ["component", "source", "energy_j", "sample_interval_ms"] {
            assert!(c.get(k).is_some(), "component key {k}");
        }
    }
    let flags: Vec<&str> = r["energy"]["flags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    assert!(
        flags.contains(&"estimated") && flags.contains(&"no_idle_baseline"),
        "{flags:?}"
    );

    // ETT and JPP are consistent with the curve: ETT is the energy at the first eval >= T.
    let t = r["quality"]["target"].as_f64().unwrap();
    let c = r["quality"]["chance"].as_f64().unwrap();
    let curve = r["quality"]["curve"].as_array().unwrap();
    let first = curve
        .iter()
        .find(|p| p["value"].as_f64().unwrap() >= t)
        .unwrap();
    let ett = r["ett_j"].as_f64().unwrap();
    assert_eq!(ett, first["energy_j"].as_f64().unwrap());
    assert_eq!(
        r["ttt_s"].as_f64().unwrap(),
        first["time_s"].as_f64().unwrap()
    );
    let jpp = r["jpp"].as_f64().unwrap();
    assert!((jpp - ett / (100.0 * (t - c))).abs() < 1e-9 * jpp.max(1.0));
    // Stopped at the first eval reaching T: it is the last point.
    assert_eq!(curve.last().unwrap(), first);
    assert!(ett > 0.0 && r["energy"]["total_j"].as_f64().unwrap() >= ett);
    // Energy along the curve never decreases.
    let e: Vec<f64> = curve
        .iter()
        .map(|p| p["energy_j"].as_f64().unwrap())
        .collect();
    assert!(e.windows(2).all(|w| w[1] >= w[0]), "{e:?}");
    // Chance is the majority-class rate of the eval set, as declared for the shipped data.
    assert!((c - r["quality"]["chance_declared"].as_f64().unwrap()).abs() < 1e-4);

    // The event log and power timeline exist and parse.
    let id = r["run_id"].as_str().unwrap();
    let log = std::fs::read_to_string(res.join("events").join(format!("{id}.mllog"))).unwrap();
    let keys: Vec<String> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l.strip_prefix(":::MLLOG ").unwrap()).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for k in ["seed", "run_start", "eval_accuracy", "run_stop"] {
        assert!(keys.iter().any(|x| x == k), "mllog lacks {k}");
    }
    let power = std::fs::read_to_string(res.join("power").join(format!("{id}.csv"))).unwrap();
    assert!(power.starts_with("t_s,component,energy_j,power_w\n"));
    assert!(res.join("system.json").is_file());
}

#[test]
fn same_seed_same_curve() {
    // Every random number comes from the seeded host RNG: two runs of one seed agree exactly
    // on quality (energy and time differ, they are measurements).
    let tmp = tempfile::tempdir().unwrap();
    let mut curves = Vec::new();
    for i in 0..2 {
        let res = tmp.path().join(format!("r{i}"));
        let mut args = vec!["run", "--task", "digits-mlp", "--seed", "5", "--results"];
        args.push(res.to_str().unwrap());
        args.extend_from_slice(QUICK);
        let o = jb(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let r: Value =
            serde_json::from_slice(&std::fs::read(&run_files(&res)[0]).unwrap()).unwrap();
        let v: Vec<(u64, f64)> = r["quality"]["curve"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["step"].as_u64().unwrap(), p["value"].as_f64().unwrap()))
            .collect();
        curves.push(v);
    }
    assert_eq!(curves[0], curves[1]);
}

fn bad(args: &[&str], needles: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("res");
    let mut a: Vec<&str> = args.to_vec();
    if !a.contains(&"--results") {
        a.push("--results");
        a.push(res.to_str().unwrap());
    }
    let o = jb(&a);
    assert_usage_error(&o, needles);
    assert!(run_files(&res).is_empty(), "a run file was written");
}

#[test]
fn unknown_task_variant_meter() {
    bad(
        &["run", "--task", "nope"],
        &["unknown task 'nope'", "mnist-mlp"],
    );
    bad(
        &["run", "--task", "digits-mlp", "--variant", "fp8"],
        &["unknown variant 'fp8'", "f32"],
    );
    bad(
        &["run", "--task", "digits-mlp", "--meter", "joulemeter"],
        &["joulemeter", "rapl"],
    );
    bad(
        &["run", "--task", "digits-mlp", "--device", "tpu"],
        &["--device", "tpu"],
    );
    bad(
        &["run", "--task", "digits-mlp", "--seeds", "0"],
        &["--seeds"],
    );
}

#[test]
fn unavailable_meters_say_why() {
    // These machines (and CI) have neither readable RAPL nor NVML; where they do, the meter
    // works and there is no refusal to check. A counter file that exists but cannot be read
    // (root-only since 2020) is no RAPL: the refusal is checked there too.
    if std::fs::read_to_string("/sys/class/powercap/intel-rapl:0/energy_uj").is_ok() {
        eprintln!("skip: this machine has readable RAPL");
    } else {
        bad(
            &[
                "run",
                "--task",
                "digits-mlp",
                "--meter",
                "rapl",
                "--idle-s",
                "0",
            ],
            &["rapl"],
        );
    }
    let o = jb(&["env", "--json"]);
    let env: Value = serde_json::from_slice(&o.stdout).unwrap();
    let nvml = env["meters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["meter"] == "nvml")
        .cloned();
    if nvml.is_some_and(|m| m["available"] == false) {
        bad(
            &[
                "run",
                "--task",
                "digits-mlp",
                "--meter",
                "nvml",
                "--idle-s",
                "0",
            ],
            &["nvml"],
        );
    } else {
        eprintln!("skip: this machine has NVML");
    }
}

#[test]
fn bad_data_files() {
    let tmp = tempfile::tempdir().unwrap();
    // Missing: an empty --data-dir.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    bad(
        &[
            "run",
            "--task",
            "digits-mlp",
            "--data-dir",
            empty.to_str().unwrap(),
        ],
        &["digits"],
    );
    // Corrupt: a gzip file full of garbage.
    let corrupt = tmp.path().join("corrupt");
    std::fs::create_dir(&corrupt).unwrap();
    let mut bytes = vec![0x1f, 0x8b, 8, 0];
    bytes.extend(std::iter::repeat_n(0xAB, 500));
    std::fs::write(corrupt.join("digits.csv.gz"), bytes).unwrap();
    bad(
        &[
            "run",
            "--task",
            "digits-mlp",
            "--data-dir",
            corrupt.to_str().unwrap(),
        ],
        &["digits.csv.gz"],
    );
}

#[test]
fn bad_results_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plainfile");
    std::fs::write(&file, b"x").unwrap();
    let o = jb(&[
        "run",
        "--task",
        "digits-mlp",
        "--results",
        file.to_str().unwrap(),
    ]);
    assert_usage_error(&o, &["plainfile", "not a directory"]);
    // /proc refuses new folders even to root.
    let o = jb(&[
        "run",
        "--task",
        "digits-mlp",
        "--results",
        "/proc/joulebench-results",
    ]);
    assert_usage_error(&o, &["/proc/joulebench-results"]);
}

#[test]
fn malformed_task_toml_names_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/digits-mlp.toml"),
    )
    .unwrap();
    let models_arg = models.to_str().unwrap();
    let args = ["run", "--task", "digits-mlp", "--models-dir", models_arg];
    let cases = [
        ("batch_size = 32", "batch_size = \"many\"", "line"),
        ("[budget]", "[budget]\nmax_epoch = 3", "max_epoch"),
    ];
    for (from, to, needle) in cases {
        std::fs::write(models.join("digits-mlp.toml"), shipped.replace(from, to)).unwrap();
        bad(&args, &["digits-mlp.toml", needle]);
    }
}

#[test]
fn list_and_env_work_on_a_fresh_clone() {
    let o = jb(&["list", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let tasks: Vec<&str> = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        tasks,
        [
            "austen-gpt-mini",
            "digits-hi-mlp",
            "digits-lo-mlp",
            "digits-mlp",
            "fashion-resnet-mini",
            "fashion-resnet",
            "mnist-cnn",
            "mnist-mlp",
            "mnist-rot90-mlp",
            "shakespeare-gpt-mini",
            "shakespeare-gpt",
            "text-charlm-p1",
            "text-charlm-p2",
            "text-charlm"
        ]
    );
    assert!(v["meters"].as_array().unwrap().len() >= 4);
    let o = jb(&["env"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("estimate") && text.contains("rapl") && text.contains("nvml"),
        "{text}"
    );
}

/// Issue 20: a run never replaces a finished run file unless asked, and the refusal comes
/// before anything runs; `--seeds` has an upper bound instead of a failed allocation.
#[test]
fn a_finished_run_file_is_not_replaced_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("r");
    let r = res.to_str().unwrap();
    let mut args = vec!["run", "--task", "digits-mlp", "--seed", "2", "--results", r];
    args.extend_from_slice(QUICK);
    assert_eq!(jb(&args).status.code(), Some(0));
    let file = run_files(&res)[0].clone();
    let before = std::fs::read(&file).unwrap();
    let mut twice = args.clone();
    twice.extend_from_slice(&["--max-epochs", "1"]);
    let o = jb(&twice);
    assert_usage_error(&o, &["exists", "--overwrite", file.to_str().unwrap()]);
    assert_eq!(std::fs::read(&file).unwrap(), before, "untouched");
    twice.push("--overwrite");
    let o = jb(&twice);
    assert!(
        o.status.code() == Some(0) || o.status.code() == Some(1),
        "{}",
        stderr(&o)
    );
    assert_ne!(std::fs::read(&file).unwrap(), before, "replaced when asked");
    let o = jb(&[
        "run",
        "--task",
        "digits-mlp",
        "--seeds",
        "10000000000000",
        "--results",
        r,
    ]);
    assert_usage_error(&o, &["--seeds", "at most 10000"]);
}

/// Issue 20: a write that fails for lack of space (here a file-size limit, EFBIG, which a full
/// disk's ENOSPC takes the same path as) stops the command with one line naming the file and
/// the OS error, and leaves no temp file behind.
#[test]
fn a_failed_write_names_the_file_and_leaves_no_temp_file() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("r");
    let mut c = Command::new(env!("CARGO_BIN_EXE_joulebench"));
    c.args(["run", "--task", "digits-mlp", "--seed", "1", "--results"])
        .arg(&res)
        .args(QUICK);
    // SAFETY: setrlimit and signal are async-signal-safe; nothing else runs in the child.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                // A digits run writes system.json (~0.5 KB), then its event log (~9 KB: the
                // MLPerf header and the evals), a power timeline (~0.5 KB) and its run file
                // (~9 KB): the event log, the first of the run's files, cannot be written.
                rlim_cur: 5 * 1024,
                rlim_max: 5 * 1024,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let o = c.output().unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    let lines: Vec<&str> = e.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(lines.len(), 1, "{e}");
    assert!(
        lines[0].contains("events/") && lines[0].contains("File too large"),
        "{e}"
    );
    for d in ["runs", "events", "power"] {
        for f in std::fs::read_dir(res.join(d)).unwrap() {
            let n = f.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!n.ends_with(".tmp"), "{d}/{n} left behind");
        }
    }
    assert!(run_files(&res).is_empty(), "no partial run file");
}

/// The backticked names of a markdown table cell, `{...}` and `(...)` parts left out (those
/// describe list items and allowed values, not keys of the object).
fn backticked_keys(cell: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut depth = 0usize;
    for ch in cell.chars() {
        match ch {
            '(' | '{' => depth += 1,
            ')' | '}' => depth = depth.saturating_sub(1),
            _ if depth == 0 => plain.push(ch),
            _ => {}
        }
    }
    plain
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// docs/run-file.md is the run file's contract: every key its "required keys" table names,
/// and every key an `object:` row lists, is in a real run file written by `run`.
#[test]
fn a_run_file_has_every_key_docs_run_file_md_requires() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/run-file.md"))
            .expect("docs/run-file.md");
    let start = doc
        .find("## Run file")
        .expect("a 'Run file' section in docs/run-file.md");
    let section = &doc[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("res");
    let mut args = vec!["run", "--task", "digits-mlp", "--seed", "2", "--results"];
    args.push(res.to_str().unwrap());
    args.extend_from_slice(QUICK);
    let o = jb(&args);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let files = run_files(&res);
    let run: Value = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    let mut checked = 0;
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        for key in backticked_keys(cells[0]) {
            let v = run
                .get(&key)
                .unwrap_or_else(|| panic!("run file lacks `{key}` (docs/run-file.md: {line})"));
            checked += 1;
            if cells.get(1).is_some_and(|m| m.starts_with("object:")) {
                for sub in backticked_keys(cells[1]) {
                    assert!(
                        v.get(&sub).is_some(),
                        "run file's `{key}` lacks `{sub}` (docs/run-file.md: {line})"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(
        checked >= 30,
        "only {checked} keys found in docs/run-file.md's table"
    );
}

/// `target` over the committed digits-mlp reference curves prints the target the task file
/// holds; a bad grid and a folder without reference curves are one line and exit 2.
#[test]
fn target_reads_the_committed_reference_curves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    let curves = root.join("2026-11-23-cpu-curves/digits-mlp");
    let o = jb(&["target", "--task", "digits-mlp", curves.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("digits-mlp: 10 seeds"), "{out}");
    assert!(out.contains("target T = 95.50 %"), "{out}");
    assert_usage_error(
        &jb(&[
            "target",
            "--task",
            "digits-mlp",
            "--grid-pp",
            "0",
            curves.to_str().unwrap(),
        ]),
        &["--grid-pp"],
    );
    let engines = root.join("2026-12-04-cpu-xeon-2core-engines");
    assert_usage_error(
        &jb(&["target", "--task", "mnist-mlp", engines.to_str().unwrap()]),
        &["no full-budget f32 runs", "--full-budget"],
    );
}
