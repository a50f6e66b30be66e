//! Issue 20's input-validation findings, each kept as a regression test through the binary:
//! a dataset too small for its task (0 or 1 training sample, no test sample, a text shorter than
//! a window), train and test images of different shapes, `--checkpoint` with no fine-tune, one
//! 20 MB garbage line in a CSV input, a re-hashed plan with bad settings, and a suite that
//! selects nothing. Each must be one short line on stderr and exit 2, with nothing written.
//! Datasets are built here, tiny, in the formats `src/data/` reads.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn jb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_joulebench"))
        .args(args)
        .env_remove("JOULEBENCH_DATA")
        .env_remove("JOULEBENCH_MODELS")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("spawn joulebench")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 2, exactly one short non-empty stderr line containing every `needle`.
fn assert_usage_error(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert!(e.len() < 1_000, "a {}-byte error: {}", e.len(), &e[..300]);
    assert_eq!(o.status.code(), Some(2), "stderr: {e}");
    let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {e}");
    for n in needles {
        assert!(e.contains(n), "missing {n:?} in: {e}");
    }
    assert!(!e.contains("panicked"), "{e}");
}

/// Nothing at all was made at `res` (the results folder of the refused command).
fn assert_nothing_written(res: &Path) {
    assert!(
        !res.exists(),
        "{} was made by a refused command",
        res.display()
    );
}

const QUICK: &[&str] = &[
    "--idle-s",
    "0",
    "--cooldown-s",
    "0",
    "--meter",
    "estimate",
    "--device",
    "cpu",
];

/// `joulebench run --task TASK --data-dir DATA --results RES` plus `extra` and `QUICK`.
fn run(task: &str, data: &Path, res: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        "--task",
        task,
        "--data-dir",
        data.to_str().unwrap(),
        "--results",
        res.to_str().unwrap(),
        "--max-epochs",
        "1",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(QUICK);
    jb(&args)
}

/// One digits CSV line: 64 pixels 0..=16, then the label.
fn digits_row(i: usize) -> String {
    let mut f: Vec<String> = (0..64).map(|p| ((p * 3 + i) % 17).to_string()).collect();
    f.push((i % 10).to_string());
    f.join(",")
}

/// A folder holding `digits.csv` with `rows` samples (every fifth is a test sample).
fn digits_dir(root: &Path, name: &str, rows: usize) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let body: String = (0..rows).map(|i| digits_row(i) + "\n").collect();
    std::fs::write(d.join("digits.csv"), body).unwrap();
    d
}

/// IDX images (magic 0x803) and labels (0x801) of the MNIST layout: `kind` train or t10k.
fn write_idx(dir: &Path, kind: &str, n: u32, rows: u32, cols: u32) {
    let mut img = Vec::new();
    for v in [0x803, n, rows, cols] {
        img.extend_from_slice(&v.to_be_bytes());
    }
    img.extend((0..n * rows * cols).map(|i| (i * 31 % 256) as u8));
    std::fs::write(dir.join(format!("{kind}-images-idx3-ubyte")), img).unwrap();
    let mut lab = Vec::new();
    for v in [0x801, n] {
        lab.extend_from_slice(&v.to_be_bytes());
    }
    lab.extend((0..n).map(|i| (i % 10) as u8));
    std::fs::write(dir.join(format!("{kind}-labels-idx1-ubyte")), lab).unwrap();
}

fn mnist_dir(root: &Path, name: &str, train: (u32, u32), test: (u32, u32)) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    write_idx(&d, "train", train.0, train.1, train.1);
    write_idx(&d, "t10k", test.0, test.1, test.1);
    d
}

fn text_dir(root: &Path, name: &str, chars: usize) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let body: String = (0..chars)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    std::fs::write(d.join("austen.txt"), body).unwrap();
    d
}

#[test]
fn datasets_too_small_for_the_task_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cases: Vec<(&str, PathBuf, Vec<&str>)> = vec![
        // An empty digits file: 0 rows.
        (
            "digits-mlp",
            digits_dir(t, "d0", 0),
            vec![
                "d0/digits.csv",
                "too small for task digits-mlp",
                "has 0 samples",
            ],
        ),
        // One row: one training sample, no test sample.
        (
            "digits-mlp",
            digits_dir(t, "d1", 1),
            vec![
                "d1/digits.csv",
                "training split has 1 sample;",
                "at least one batch of 32",
            ],
        ),
        // 20 rows: 16 training samples, half a batch.
        (
            "digits-mlp",
            digits_dir(t, "d20", 20),
            vec!["has 16 samples", "batch of 32"],
        ),
        // The class view of digits-lo-mlp (0-4) keeps half of 50 training samples.
        (
            "digits-lo-mlp",
            digits_dir(t, "d63", 63),
            vec!["(after the task's [data] view) has 27 samples"],
        ),
        // IDX: a full training set, an empty test split.
        (
            "mnist-mlp",
            mnist_dir(t, "m-notest", (200, 28), (0, 28)),
            vec!["m-notest", "test split has 0 samples", "to score a run"],
        ),
        // IDX: a training set of one sample.
        (
            "mnist-mlp",
            mnist_dir(t, "m-one", (1, 28), (50, 28)),
            vec!["training split has 1 sample;", "batch of 128"],
        ),
        // A 3-character text: no training window of the model's context.
        (
            "text-charlm",
            text_dir(t, "t3", 3),
            vec![
                "t3/austen.txt",
                "training text (2 characters) makes 0 windows of 65 characters",
            ],
        ),
    ];
    for (task, data, needles) in &cases {
        let res = t.join(format!(
            "res-{}",
            data.file_name().unwrap().to_str().unwrap()
        ));
        let o = run(task, data, &res, &[]);
        assert_usage_error(&o, needles);
        assert_nothing_written(&res);
    }
    // Enough for one batch and one test sample: it trains (the check is not over-strict).
    let data = digits_dir(t, "d45", 45);
    let res = t.join("res-d45");
    let o = run("digits-mlp", &data, &res, &["--full-budget"]);
    assert!(
        o.status.code() == Some(0) || o.status.code() == Some(1),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_dir(res.join("runs")).unwrap().count(), 1);
}

#[test]
fn a_text_with_no_test_window_is_refused() {
    // text-charlm with a batch of 4 windows: 600 characters give 8 training windows, but the
    // 60-character test text is shorter than one window of 65.
    let tmp = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/text-charlm.toml");
    let toml = std::fs::read_to_string(shipped).unwrap();
    assert!(toml.contains("batch_size = 32"));
    std::fs::create_dir(tmp.path().join("models")).unwrap();
    let task = tmp.path().join("models/text-charlm.toml");
    std::fs::write(&task, toml.replace("batch_size = 32", "batch_size = 4")).unwrap();
    let data = text_dir(tmp.path(), "t600", 600);
    let res = tmp.path().join("res");
    let o = run(task.to_str().unwrap(), &data, &res, &[]);
    assert_usage_error(
        &o,
        &[
            "t600/austen.txt",
            "the test text (60 characters) makes 0 windows of 65 characters",
        ],
    );
    assert_nothing_written(&res);
}

#[test]
fn a_sweep_on_a_dataset_too_small_is_refused_before_the_folder_is_claimed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = digits_dir(tmp.path(), "d1", 1);
    let suite = tmp.path().join("suite.toml");
    std::fs::write(
        &suite,
        "name = \"tiny\"\ndescription = \"d\"\ntasks = [\"digits-mlp\"]\nvariants = [\"f32\"]\nseeds = 1\nidle_s = 0.0\ncooldown_s = 0.0\n",
    )
    .unwrap();
    let res = tmp.path().join("res");
    let o = jb(&[
        "sweep",
        "--config",
        suite.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--results",
        res.to_str().unwrap(),
        "--meter",
        "estimate",
        "--device",
        "cpu",
    ]);
    assert_usage_error(&o, &["d1/digits.csv", "training split has 1 sample"]);
    assert_nothing_written(&res);
}

#[test]
fn train_and_test_images_of_different_shapes_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = mnist_dir(tmp.path(), "m", (200, 28), (50, 20));
    let res = tmp.path().join("res");
    let o = run("mnist-mlp", &data, &res, &[]);
    assert_usage_error(
        &o,
        &[
            "train-images-idx3-ubyte",
            "t10k-images-idx3-ubyte",
            "28x28",
            "20x20",
            "shape mismatch",
        ],
    );
    assert_nothing_written(&res);
}

#[test]
fn checkpoint_without_a_finetune_variant_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("w.safetensors");
    std::fs::write(&ckpt, b"not read").unwrap();
    let res = tmp.path().join("res");
    let r = res.to_str().unwrap();
    let c = ckpt.to_str().unwrap();
    for variants in [&[][..], &["--variant", "f32", "--variant", "bf16-amp"]] {
        let mut args = vec![
            "run",
            "--task",
            "digits-mlp",
            "--checkpoint",
            c,
            "--results",
            r,
        ];
        args.extend_from_slice(variants);
        args.extend_from_slice(QUICK);
        let o = jb(&args);
        assert_usage_error(
            &o,
            &["--checkpoint is only used by finetune variants; none of the given variants is one"],
        );
        assert_nothing_written(&res);
    }
    // With a fine-tune the checkpoint is read (and this one is refused for what it is).
    let mut args = vec![
        "run",
        "--task",
        "digits-hi-mlp",
        "--variant",
        "finetune",
        "--checkpoint",
        c,
        "--results",
        r,
    ];
    args.extend_from_slice(QUICK);
    let o = jb(&args);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(!e.contains("only used by finetune"), "{e}");
    assert!(e.contains("w.safetensors"), "{e}");
    assert_nothing_written(&res);
}

/// 20 MB on one line.
const HUGE: usize = 20_000_000;

#[test]
fn one_huge_csv_line_gives_a_short_error() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let runs =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/report/real-cpu-estimated");
    let h = "timestamp,g_co2e_per_kwh\n";
    let huge = |c: &str| c.repeat(HUGE);
    // The hourly intensity series of `footprint --intensity-csv`: each field and flavour.
    let series: [(String, &[&str]); 6] = [
        (format!("{h}{}\n", huge("x")), &["line 2", "found 1"]),
        (
            format!("{h}2024-01-01T00:00Z,{}\n", huge("9")),
            &["line 2: intensity \"999", "... (20000000 bytes)"],
        ),
        (
            format!("{h}2024-01-01T00:00Z,-0.{}\n", huge("1")),
            &[
                "line 2: intensity -0.111",
                "... (20000003 bytes) is negative",
            ],
        ),
        (
            format!("{h}{},1\n", huge("y")),
            &["line 2: timestamp \"yyy", "... (20000000 bytes)"],
        ),
        (
            format!("{h}2024-01-01T00:00Z{},1\n", huge("+")),
            &[
                "line 2: timestamp",
                "after the time",
                "... (20000001 bytes)",
            ],
        ),
        (
            format!(
                "{h}2024-01-01T00:00Z,1\n2024-01-01T00:00:00.{}Z,2\n",
                huge("0")
            ),
            &[
                "line 3: duplicate hour 2024-01-01T00:00:00.000",
                "(already on line 2)",
            ],
        ),
    ];
    for (i, (body, needles)) in series.iter().enumerate() {
        let f = t.join(format!("series-{i}.csv"));
        std::fs::write(&f, body).unwrap();
        let o = jb(&[
            "footprint",
            runs.to_str().unwrap(),
            "--intensity-csv",
            f.to_str().unwrap(),
        ]);
        assert_usage_error(&o, &[f.to_str().unwrap()]);
        assert_usage_error(&o, needles);
    }
    // The digits CSV of a --data-dir: one 20 MB field, and a line of 10 million fields.
    for (i, line) in [huge("7"), huge("1,")].iter().enumerate() {
        let d = t.join(format!("digits-{i}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("digits.csv"), format!("{}\n{line}\n", digits_row(0))).unwrap();
        let res = t.join(format!("res-{i}"));
        let o = run("digits-mlp", &d, &res, &[]);
        assert_usage_error(&o, &["digits.csv", "line 2"]);
        assert_nothing_written(&res);
    }
    // A SHA256SUMS beside the data with one garbage line.
    let d = digits_dir(t, "summed", 50);
    std::fs::write(d.join("SHA256SUMS"), huge("z") + "\n").unwrap();
    let res = t.join("res-sums");
    let o = run("digits-mlp", &d, &res, &[]);
    assert_usage_error(&o, &["SHA256SUMS", "line 1", "... (2000"]);
    assert_nothing_written(&res);
    // The independent NVML trace of `crosscheck`.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crosscheck");
    let good = std::fs::read_to_string(fixture.join("nvml-trace.csv")).unwrap();
    let mut lines: Vec<&str> = good.lines().collect();
    let garbage = huge("x");
    lines.insert(3, &garbage);
    let bad_trace = t.join("trace.csv");
    std::fs::write(&bad_trace, lines.join("\n") + "\n").unwrap();
    let out = t.join("crosscheck.json");
    let o = jb(&[
        "crosscheck",
        "--trace",
        bad_trace.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        fixture.join("results").to_str().unwrap(),
    ]);
    assert_usage_error(&o, &["trace.csv", "line 4", "... (2000"]);
    assert!(!out.exists());
}

/// A plan file as JSON, edited by `edit`, its hash recomputed as joulebench does (sha256 of the
/// canonical JSON, keys sorted, with `hash` empty), so the hash check passes.
fn rehashed(plan: &Value, edit: impl Fn(&mut Value)) -> String {
    let mut v = plan.clone();
    edit(&mut v);
    v["hash"] = Value::String(String::new());
    let hex: String = Sha256::digest(serde_json::to_vec(&v).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    v["hash"] = Value::String(hex);
    serde_json::to_string_pretty(&v).unwrap()
}

#[test]
fn a_rehashed_plan_with_bad_settings_is_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = tmp.path().join("suite.toml");
    std::fs::write(
        &suite,
        "name = \"one\"\ndescription = \"d\"\ntasks = [\"digits-mlp\"]\nvariants = [\"f32\"]\nseeds = 1\nidle_s = 0.0\ncooldown_s = 0.0\n",
    )
    .unwrap();
    let o = jb(&["sweep", "plan", "--config", suite.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
    // The recipe is joulebench's: the untouched plan re-hashes to its own hash.
    let same: Value = serde_json::from_str(&rehashed(&plan, |_| {})).unwrap();
    assert_eq!(same["hash"], plan["hash"]);
    let path = tmp.path().join("plan.json");
    let res = tmp.path().join("res");
    // (settings key, value written there, what the error must say)
    let cases: [(&str, Value, &[&str]); 5] = [
        ("idle_s", (-5.0).into(), &["settings.idle_s", "-5"]),
        (
            "cooldown_s",
            (-0.25).into(),
            &["settings.cooldown_s", "-0.25"],
        ),
        (
            "cooldown_s",
            1e300.into(),
            &["settings.cooldown_s", "at most"],
        ),
        // JSON has no NaN or infinity: serde_json writes them as null.
        ("idle_s", Value::Null, &["settings.idle_s", "null"]),
        (
            "order",
            "sideways".into(),
            &["settings.order", "sideways", "interleaved"],
        ),
    ];
    for (key, value, needles) in &cases {
        let edit = |v: &mut Value| v["settings"][*key] = value.clone();
        std::fs::write(&path, rehashed(&plan, edit)).unwrap();
        let o = jb(&[
            "sweep",
            "--plan",
            path.to_str().unwrap(),
            "--results",
            res.to_str().unwrap(),
            "--meter",
            "estimate",
            "--device",
            "cpu",
        ]);
        assert_usage_error(&o, needles);
        assert!(stderr(&o).contains("plan.json"), "{}", stderr(&o));
        assert!(!stderr(&o).contains("hash mismatch"), "{}", stderr(&o));
        assert_nothing_written(&res);
    }
}

#[test]
fn a_suite_that_selects_nothing_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("res");
    for (name, lists) in [
        ("no-tasks", "tasks = []\nvariants = \"all\"\n"),
        ("no-variants", "tasks = [\"digits-mlp\"]\nvariants = []\n"),
        ("neither", "tasks = []\nvariants = []\n"),
    ] {
        let suite = tmp.path().join(format!("{name}.toml"));
        std::fs::write(
            &suite,
            format!("name = \"{name}\"\ndescription = \"d\"\n{lists}seeds = 1\nidle_s = 0.0\ncooldown_s = 0.0\n"),
        )
        .unwrap();
        let s = suite.to_str().unwrap();
        let o = jb(&["sweep", "plan", "--config", s]);
        assert_usage_error(&o, &[name, "the suite has no runs"]);
        assert!(o.stdout.is_empty());
        let o = jb(&[
            "sweep",
            "--config",
            s,
            "--results",
            res.to_str().unwrap(),
            "--meter",
            "estimate",
            "--device",
            "cpu",
        ]);
        assert_usage_error(&o, &[name, "the suite has no runs"]);
        assert_nothing_written(&res);
    }
}

#[test]
fn idle_and_cooldown_beyond_a_day_are_refused() {
    // 1e300 s overflowed the timer: a panic (exit 101) after the results folder was made.
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("res");
    for flag in ["--idle-s", "--cooldown-s"] {
        let o = jb(&[
            "run",
            "--task",
            "digits-mlp",
            "--results",
            res.to_str().unwrap(),
            "--meter",
            "estimate",
            flag,
            "1e300",
        ]);
        assert_usage_error(&o, &[flag, "at most 86400", "1e300"]);
        assert_nothing_written(&res);
    }
    let suite = tmp.path().join("suite.toml");
    std::fs::write(
        &suite,
        "name = \"long\"\ndescription = \"d\"\ntasks = [\"digits-mlp\"]\nvariants = [\"f32\"]\nseeds = 1\nidle_s = 0.0\ncooldown_s = 1e300\n",
    )
    .unwrap();
    let o = jb(&[
        "sweep",
        "--config",
        suite.to_str().unwrap(),
        "--results",
        res.to_str().unwrap(),
        "--meter",
        "estimate",
    ]);
    assert_usage_error(&o, &["suite.toml", "cooldown_s", "at most 86400"]);
    assert_nothing_written(&res);
}

/// A task whose model cannot be trained in this machine's memory (`hidden = [100000000]` on
/// the 8x8 digits: 25.6 GB of first-layer weights) aborted with a failed allocation, exit 134,
/// after the results folder was made. Now: one line, exit 2, nothing written, for `run` and
/// `sweep`.
#[test]
fn a_model_too_big_for_memory_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let shipped = std::fs::read_to_string("models/digits-mlp.toml").unwrap();
    assert!(shipped.contains("hidden = [64]"));
    // Far beyond any machine's memory (10^12 units: 16 TB of weights alone with AdamW).
    std::fs::write(
        models.join("digits-mlp.toml"),
        shipped.replace("hidden = [64]", "hidden = [1000000000000]"),
    )
    .unwrap();
    let res = tmp.path().join("res");
    let m = models.to_str().unwrap();
    let r = res.to_str().unwrap();
    let o = jb(&[
        &[
            "run",
            "--task",
            "digits-mlp",
            "--models-dir",
            m,
            "--results",
            r,
        ],
        QUICK,
    ]
    .concat());
    assert_usage_error(
        &o,
        &[
            "task digits-mlp",
            "trainable parameters",
            "GiB",
            "available",
        ],
    );
    assert_nothing_written(&res);
    let suite = tmp.path().join("suite.toml");
    std::fs::write(
        &suite,
        "name = \"big\"\ndescription = \"t\"\ntasks = [\"digits-mlp\"]\nvariants = [\"f32\"]\nseeds = 1\nidle_s = 0.0\ncooldown_s = 0.0\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_joulebench"))
        .args(["sweep", "--config", suite.to_str().unwrap(), "--results", r])
        .args(["--models-dir", m, "--meter", "estimate", "--device", "cpu"])
        .env_remove("JOULEBENCH_MODELS")
        .env_remove("JOULEBENCH_DATA")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert_usage_error(&o, &["task digits-mlp", "trainable parameters"]);
    assert!(
        !res.join("plan.json").exists(),
        "the plan claimed the folder"
    );
}
