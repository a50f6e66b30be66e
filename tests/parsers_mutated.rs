//! Issue 20: every parser of user or file input fed seeded mutations of valid inputs (bit
//! flips, truncation, splicing two valid inputs, huge numbers, NaN and infinity, deep nesting,
//! unicode, over-long lines, byte insertion and deletion): no panic, no hang, and an error is
//! one line (naming the file, for the parsers that are given one). `JOULEBENCH_MUTATIONS=N`
//! sets the cases per parser (default 10,000; `scripts/fuzz.sh` runs 10^6).

use joulebench::orchestrate::exec::events::{self, LineSplitter, Tracked};
use joulebench::spec::task::Direction;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

fn cases() -> usize {
    std::env::var("JOULEBENCH_MUTATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

const TOKENS: &[&str] = &[
    "NaN",
    "Infinity",
    "-1e999",
    "1e308",
    "18446744073709551616",
    "-0",
    "null",
    "\"\u{feff}\u{202e}é漢\"",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    "{\"a\":",
    ",",
    "\n",
    "\r\n",
    "\0",
    "true",
    "\"\\ud800\"",
];

/// One mutation of `seed_input`, sometimes spliced with `other`.
fn mutate(rng: &mut ChaCha8Rng, seed_input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = seed_input.to_vec();
    for _ in 0..rng.random_range(1..4) {
        let len = b.len().max(1);
        match rng.random_range(0..9) {
            0 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
            1 => b.truncate(rng.random_range(0..len)),
            2 if !other.is_empty() => {
                let cut = rng.random_range(0..len).min(b.len());
                let from = rng.random_range(0..other.len());
                b.truncate(cut);
                b.extend_from_slice(&other[from..]);
            }
            3 => {
                let i = rng.random_range(0..=b.len());
                let t = TOKENS[rng.random_range(0..TOKENS.len())].as_bytes();
                b.splice(i..i, t.iter().copied());
            }
            4 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                let n = rng.random_range(1..16).min(b.len() - i);
                b.drain(i..i + n);
            }
            5 => {
                let i = rng.random_range(0..=b.len());
                b.insert(i, rng.random());
            }
            6 => {
                // An over-long run of one byte.
                let i = rng.random_range(0..=b.len());
                let n = rng.random_range(1000..80_000);
                b.splice(i..i, std::iter::repeat_n(b'9', n));
            }
            7 => {
                // A number replaced by a huge or non-finite one.
                if let Some(i) = b.iter().position(|c| c.is_ascii_digit()) {
                    let t =
                        ["1e999", "NaN", "-inf", "99999999999999999999999"][rng.random_range(0..4)];
                    b.splice(i..i + 1, t.bytes());
                }
            }
            _ => {
                let i = rng.random_range(0..=b.len());
                b.splice(i..i, "ü\u{10ffff}".bytes());
            }
        }
    }
    b
}

/// Run `parse` on `n` mutations of the valid `inputs`; every error is checked by `check`.
fn fuzz<E: std::fmt::Display>(
    name: &str,
    inputs: &[Vec<u8>],
    seed: u64,
    mut parse: impl FnMut(&[u8]) -> Result<(), E>,
    check: impl Fn(&str),
) -> (usize, usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut ok, mut err) = (0, 0);
    let n = cases();
    for k in 0..n {
        let a = &inputs[k % inputs.len()];
        let b = &inputs[(k / inputs.len()) % inputs.len()];
        let m = mutate(&mut rng, a, b);
        match parse(&m) {
            Ok(()) => ok += 1,
            Err(e) => {
                err += 1;
                let s = e.to_string();
                assert!(
                    !s.contains('\n'),
                    "{name}: a multi-line error for case {k}: {s}"
                );
                check(&s);
            }
        }
    }
    eprintln!("{name}: {n} mutated inputs, {ok} accepted, {err} refused with one line");
    (ok, err)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn mllog_and_jsonl_event_lines() {
    let t = Tracked {
        key: "eval_accuracy".into(),
        direction: Direction::Higher,
    };
    let mllog: Vec<Vec<u8>> = [
        r#":::MLLOG {"namespace": "", "time_ms": 1, "event_type": "POINT_IN_TIME", "key": "eval_accuracy", "value": 0.91, "metadata": {"epoch_num": 1.5, "step": 700}}"#,
        r#":::MLLOG {"key": "run_start", "event_type": "INTERVAL_START", "value": null, "metadata": {}}"#,
        r#":::MLLOG {"key": "run_stop", "metadata": {"status": "success"}}"#,
        r#":::MLLOG {"key": "framework", "value": "torch 2.9.1"}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    // The event parsers return what a line means; "refused" is a Malformed report.
    fuzz(
        "mllog line",
        &mllog,
        1,
        |b| match events::parse_mllog_line(&text(b), &t) {
            events::LineEvent::Malformed(r) => Err(r),
            events::LineEvent::Eval(e) if !e.value.is_finite() => Err("non-finite accepted".into()),
            _ => Ok(()),
        },
        |s| assert!(!s.contains("non-finite accepted"), "{s}"),
    );
    let jsonl: Vec<Vec<u8>> = [
        r#"{"step": 100, "metric": "eval_accuracy", "value": 0.93}"#,
        r#"{"step": 200, "metric": "eval_accuracy", "value": 0.95, "epoch": 0.4}"#,
        r#"{"step": 200, "metric": "lr", "value": 0.001}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz(
        "events-file line",
        &jsonl,
        2,
        |b| match events::parse_jsonl_line(&text(b), &t) {
            events::LineEvent::Malformed(r) => Err(r),
            events::LineEvent::Eval(e) if !e.value.is_finite() => Err("non-finite accepted".into()),
            _ => Ok(()),
        },
        |s| assert!(!s.contains("non-finite accepted"), "{s}"),
    );
    // The line splitter never holds more than its bound, whatever the stream.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut s = LineSplitter::default();
    for _ in 0..cases() / 10 {
        let m = mutate(&mut rng, &mllog[0], &jsonl[0]);
        for l in s.push(&m) {
            assert!(
                l.text.len() <= 3 * events::MAX_LINE_BYTES,
                "{}",
                l.text.len()
            );
        }
    }
}

#[test]
fn run_files_as_report_reads_them() {
    let dir = Path::new("tests/fixtures/report/machines/xeon-rapl/runs");
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .take(4)
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    inputs.sort();
    let p = Path::new("r/runs/x.json");
    fuzz(
        "run file",
        &inputs,
        4,
        |b| joulebench::record::read::parse_run(p, b).map(|_| ()),
        |s| {
            assert!(
                s.starts_with("r/runs/x.json"),
                "error does not name the file: {s}"
            )
        },
    );
}

#[test]
fn task_toml() {
    // A task's `name` must match its file name: every input is renamed to the file's.
    let inputs: Vec<Vec<u8>> = ["mnist-mlp", "mnist-cnn", "text-charlm", "digits-hi-mlp"]
        .iter()
        .map(|t| {
            std::fs::read_to_string(format!("models/{t}.toml"))
                .unwrap()
                .replace(&format!("name = \"{t}\""), "name = \"x\"")
                .into_bytes()
        })
        .collect();
    let p = Path::new("models/x.toml");
    let (ok, _) = fuzz(
        "task TOML",
        &inputs,
        5,
        |b| joulebench::spec::task::parse_task(p, &text(b)).map(|_| ()),
        |s| {
            assert!(
                s.contains("models/x.toml"),
                "error does not name the file: {s}"
            )
        },
    );
    assert!(
        ok > 0,
        "the unmutated shape parses: the fuzzing reaches past the first check"
    );
}

#[test]
fn power_timeline_and_nvml_trace_csv() {
    let timeline = std::fs::read_dir("tests/fixtures/report/machines/xeon-rapl/power")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .take(3)
        .map(|p| std::fs::read(p).unwrap())
        .collect::<Vec<_>>();
    fuzz(
        "power timeline CSV",
        &timeline,
        6,
        |b| joulebench::record::read::parse_timeline(&text(b)).map(|_| ()),
        |_| {},
    );
    let trace = vec![std::fs::read("tests/fixtures/crosscheck/nvml-trace.csv").unwrap()];
    fuzz(
        "NVML trace CSV",
        &trace,
        7,
        |b| joulebench::analyse::crosscheck::Trace::parse("t.csv", &text(b)).map(|_| ()),
        |s| assert!(s.contains("t.csv"), "error does not name the file: {s}"),
    );
}

#[test]
fn carbon_tables() {
    let grid = vec![std::fs::read("data/carbon/grid-intensity.csv").unwrap()];
    fuzz(
        "grid-intensity table",
        &grid,
        8,
        |b| joulebench::analyse::carbon::region::parse_table(&text(b), "g.csv").map(|_| ()),
        |s| assert!(s.contains("g.csv"), "error does not name the file: {s}"),
    );
    let emb = vec![std::fs::read("data/carbon/embodied.csv").unwrap()];
    fuzz(
        "embodied table",
        &emb,
        9,
        |b| joulebench::analyse::carbon::embodied::parse_table(&text(b), "e.csv").map(|_| ()),
        |s| assert!(s.contains("e.csv"), "error does not name the file: {s}"),
    );
    let hourly = vec![std::fs::read("data/carbon/de-2020-03-02-week-hourly.csv").unwrap()];
    fuzz(
        "hourly intensity series",
        &hourly,
        10,
        |b| joulebench::analyse::carbon::schedule::parse_hourly(&text(b), "h.csv").map(|_| ()),
        |s| assert!(s.contains("h.csv"), "error does not name the file: {s}"),
    );
}

#[test]
fn plan_files() {
    // Plan files and suites are read from paths, named in their errors.
    let tmp = tempfile::tempdir().unwrap();
    let plan = std::process::Command::new(env!("CARGO_BIN_EXE_joulebench"))
        .args(["sweep", "plan", "--suite", "quick"])
        .output()
        .unwrap();
    assert!(plan.status.success());
    let path = tmp.path().join("plan.json");
    let shown = path.display().to_string();
    // Found by scripts/fuzz.sh (case 298992 of 10^6): serde quoted a value holding a line
    // break into the error, which became two lines.
    let bad = String::from_utf8_lossy(&plan.stdout).replacen("\"none\"", "\"no\\ne\"", 1);
    std::fs::write(&path, bad).unwrap();
    let e = joulebench::orchestrate::sweep::plan::PlanFile::read(&path)
        .unwrap_err()
        .to_string();
    assert!(!e.contains('\n') && e.contains("no\\ne"), "{e}");
    fuzz(
        "sweep plan",
        &[plan.stdout],
        11,
        // From memory (`read` is a file read, then `parse`): 10^6 file writes took minutes.
        |b| joulebench::orchestrate::sweep::plan::PlanFile::parse(b, &path).map(|_| ()),
        |s| assert!(s.contains(&shown), "error does not name the file: {s}"),
    );
}

#[test]
fn suites() {
    let tmp = tempfile::tempdir().unwrap();
    let suites: Vec<Vec<u8>> = ["quick", "standard", "mnist-mlp"]
        .iter()
        .map(|s| std::fs::read(format!("models/suite-{s}.toml")).unwrap())
        .collect();
    let spath = tmp.path().join("suite.toml");
    let sshown = spath.display().to_string();
    fuzz(
        "suite TOML",
        &suites,
        12,
        // From memory where the bytes are UTF-8 (`load_suite` reads the file, then
        // `parse_suite`), through the file where they are not.
        |b| match std::str::from_utf8(b) {
            Ok(t) => joulebench::orchestrate::sweep::plan::parse_suite(t, &spath).map(|_| ()),
            Err(_) => {
                std::fs::write(&spath, b).unwrap();
                joulebench::orchestrate::sweep::plan::load_suite(&spath).map(|_| ())
            }
        },
        |s| assert!(s.contains(&sshown), "error does not name the file: {s}"),
    );
}

#[test]
fn checkpoints_and_their_sidecars() {
    use joulebench::engine::checkpoint;
    let tmp = tempfile::tempdir().unwrap();
    let dev = candle_core::Device::Cpu;
    // Small weights (the shipped checkpoints are 0.8 MB; what is parsed is the header).
    let tensors: std::collections::HashMap<String, candle_core::Tensor> =
        [("layer0.weight", vec![4usize, 3]), ("layer0.bias", vec![3])]
            .into_iter()
            .map(|(n, shape)| {
                let len: usize = shape.iter().product();
                let v: Vec<f32> = (0..len).map(|i| i as f32 * 0.25 - 1.0).collect();
                (
                    n.to_string(),
                    candle_core::Tensor::from_vec(v, shape, &dev).unwrap(),
                )
            })
            .collect();
    let wpath = tmp.path().join("w.safetensors");
    candle_core::safetensors::save(&tensors, &wpath).unwrap();
    let weights = std::fs::read(&wpath).unwrap();
    let shown = wpath.display().to_string();
    fuzz(
        "checkpoint weights (safetensors)",
        std::slice::from_ref(&weights),
        13,
        |b| checkpoint::parse(&wpath, b, None, &dev).map(|_| ()),
        |s| assert!(s.contains(&shown), "error does not name the file: {s}"),
    );
    // A sidecar from a committed fine-tune source, pointed at these weights.
    let committed = "results/2026-11-23-cpu-amd-epyc-mnist-mlp-variants/checkpoints/mnist-rot90-mlp--f32--seed-1--317b010e.json";
    let mut sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(committed).unwrap()).unwrap();
    let sha = checkpoint::parse(&wpath, &weights, None, &dev)
        .unwrap()
        .sha256;
    sidecar["weights_sha256"] = serde_json::Value::String(sha);
    let sidecar = serde_json::to_vec_pretty(&sidecar).unwrap();
    assert!(checkpoint::parse(&wpath, &weights, Some(&sidecar), &dev).is_ok());
    let sc_shown = checkpoint::sidecar_path(&wpath).display().to_string();
    fuzz(
        "checkpoint sidecar",
        &[sidecar],
        14,
        |b| checkpoint::parse(&wpath, &weights, Some(b), &dev).map(|_| ()),
        |s| assert!(s.contains(&sc_shown), "error does not name the file: {s}"),
    );
}

#[test]
fn command_lines() {
    use clap::Parser;
    // Valid command lines, one per command family; mutations act on the joined text, split
    // again on spaces (so tokens are dropped, merged, split and mangled).
    let lines = [
        "joulebench run --task digits-mlp --seeds 3 --variant bf16-amp --meter estimate --device cpu --idle-s 0 --results r",
        "joulebench sweep --suite quick --results r --shard-count 4 --shard-index 1 --until-settled",
        "joulebench report r --format md --grid-intensity 300 --out o",
        "joulebench exec --task digits-mlp --results r --events e.jsonl -- python train.py --lr 0.1",
        "joulebench merge a b --into c",
        "joulebench replay r --min-seeds 3 --max-seeds 10 --json",
        "joulebench target --task digits-mlp results/x",
        "joulebench footprint --task digits-mlp --hours 2.5 --grid-intensity 400",
    ];
    let inputs: Vec<Vec<u8>> = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
    fuzz(
        "command line (clap)",
        &inputs,
        15,
        |b| {
            let text = String::from_utf8_lossy(b);
            let argv: Vec<&str> = text.split(' ').collect();
            match joulebench::cli::Cli::try_parse_from(argv) {
                Ok(_) => Ok(()),
                Err(e) => {
                    use clap::error::ErrorKind;
                    match e.kind() {
                        ErrorKind::DisplayHelp
                        | ErrorKind::DisplayVersion
                        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => Ok(()),
                        _ => Err(joulebench::cli::clap_error_line(&e)),
                    }
                }
            }
        },
        |s| assert!(!s.is_empty(), "an empty error"),
    );
}
