//! `joulebench footprint` and `run --inference` through the binary.
//!
//! Inputs: `tests/fixtures/carbon/real-digits-mlp-inference-run.json`, a real run file written by
//! `joulebench run --task digits-mlp --seed 1 --inference --meter estimate --idle-s 0` on the
//! 2-core development VM (estimated energy), and CRAFTED copies of it (variant names, ETTs and
//! inference energies changed in the test, said so below) that exercise every break-even case
//! with hand-computed answers. The hourly series is the shipped real DE example and, for bad
//! input, synthetic files written by the tests.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/carbon/real-digits-mlp-inference-run.json"
);
const POWER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/carbon/real-digits-mlp-inference-power.csv"
);
const DE_WEEK: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/carbon/de-2020-03-02-week-hourly.csv"
);

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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Exit 2, exactly one non-empty stderr line containing every `needle`, nothing on stdout.
fn assert_usage_error(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {e}");
    let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {e}");
    for n in needles {
        assert!(e.contains(n), "missing {n:?} in: {e}");
    }
    assert!(!e.contains("panicked"), "{e}");
    assert!(stdout(o).is_empty(), "stdout: {}", stdout(o));
}

fn real_run() -> Value {
    serde_json::from_slice(&std::fs::read(FIXTURE).unwrap()).unwrap()
}

/// A crafted copy of the real run: another variant name and run id, the given ETT (and total)
/// and the given inference J/1000 at batch 1 and at the large batch.
fn crafted(variant: &str, ett_j: Option<f64>, j1: f64, j_large: f64) -> Value {
    let mut r = real_run();
    let id = format!("digits-mlp--{variant}--seed-1--317b010e");
    r["run_id"] = Value::from(id);
    r["variant"]["name"] = Value::from(variant);
    r["ett_j"] = ett_j.map_or(Value::Null, Value::from);
    if let Some(e) = ett_j {
        r["energy"]["total_j"] = Value::from(e);
    } else {
        r["status"] = Value::from("dnf");
    }
    let m = r["inference"]["measurements"].as_array_mut().unwrap();
    m[0]["j_per_1000"] = Value::from(j1);
    m[1]["j_per_1000"] = Value::from(j_large);
    r
}

fn write_folder(dir: &Path, runs: &[Value]) {
    std::fs::create_dir_all(dir.join("runs")).unwrap();
    std::fs::create_dir_all(dir.join("power")).unwrap();
    for r in runs {
        let id = r["run_id"].as_str().unwrap();
        std::fs::write(
            dir.join("runs").join(format!("{id}.json")),
            serde_json::to_vec_pretty(r).unwrap(),
        )
        .unwrap();
        std::fs::copy(POWER, dir.join("power").join(format!("{id}.csv"))).unwrap();
    }
}

fn footprint_json(args: &[&str]) -> Value {
    let o = jb(args);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)))
}

fn row<'a>(f: &'a Value, variant: &str) -> &'a Value {
    f["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["variant"] == variant)
        .unwrap_or_else(|| panic!("no row {variant}"))
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-300)
}

#[test]
fn break_even_on_crafted_runs_every_case() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("res");
    // CRAFTED: baseline f32 ETT 1000 J, 2.0 / 0.20 J per 1000 predictions (batch 1 / large).
    let runs = [
        crafted("f32", Some(1000.0), 2.0, 0.20),
        // +500 J to train, -0.5 mJ per prediction at batch 1: N* = 500 / 0.0005 = 1,000,000.
        // Large batch: 0.15 J/1000 -> saving 0.05 mJ: N* = 500 / 0.00005 = 10,000,000.
        crafted("pruned-crafted", Some(1500.0), 1.5, 0.15),
        // Cheaper to train and to serve.
        crafted("small-crafted", Some(800.0), 1.0, 0.10),
        // Dearer to train and to serve: never.
        crafted("big-crafted", Some(2000.0), 3.0, 0.30),
        // Cheaper to train by 200 J, dearer to serve by 1 mJ at batch 1: ahead for 200,000.
        crafted("lowp-crafted", Some(800.0), 3.0, 0.25),
        // Did not reach the target: no ETT, no break-even.
        crafted("dnf-crafted", None, 1.0, 0.10),
    ];
    write_folder(&dir, &runs);
    let d = dir.to_str().unwrap();
    let f = footprint_json(&[
        "footprint",
        d,
        "--format",
        "json",
        "--grid-intensity",
        "400",
    ]);
    let be = |v: &str, batch: u64| -> Value {
        row(&f, v)["break_even"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["batch"] == batch)
            .cloned()
            .unwrap_or_else(|| panic!("{v} batch {batch}: {}", row(&f, v)["break_even"]))
    };
    let large = runs[0]["inference"]["measurements"][1]["batch"]
        .as_u64()
        .unwrap();
    let p = be("pruned-crafted", 1);
    assert_eq!(p["result"]["case"], "pays-back-after");
    assert!(
        close(p["result"]["predictions"].as_f64().unwrap(), 1.0e6, 1e-9),
        "{p}"
    );
    assert_eq!(p["estimated"], true, "the fixture's energy is estimated");
    let p = be("pruned-crafted", large);
    assert!(
        close(p["result"]["predictions"].as_f64().unwrap(), 1.0e7, 1e-9),
        "{p}"
    );
    assert_eq!(be("small-crafted", 1)["result"]["case"], "cheaper-on-both");
    assert_eq!(be("big-crafted", 1)["result"]["case"], "never-pays-back");
    let l = be("lowp-crafted", 1);
    assert_eq!(l["result"]["case"], "advantage-lost-after");
    assert!(
        close(l["result"]["predictions"].as_f64().unwrap(), 2.0e5, 1e-9),
        "{l}"
    );
    let dnf = &row(&f, "dnf-crafted")["break_even"][0];
    assert!(dnf["result"].is_null());
    assert!(dnf["text"].as_str().unwrap().contains("no ETT"), "{dnf}");
    // The baseline itself has no break-even row.
    assert!(row(&f, "f32")["break_even"].as_array().unwrap().is_empty());

    // The same in Markdown: a separate table, estimated energy labelled.
    let o = jb(&["footprint", d, "--grid-intensity", "400"]);
    let md = stdout(&o);
    assert!(md.contains("## Inference energy and break-even"), "{md}");
    assert!(
        md.contains("pays back after 1,000,000 predictions (ESTIMATED)"),
        "{md}"
    );
    assert!(md.contains("never pays back"), "{md}");
    // CSV: one header and one line per run.
    let o = jb(&["footprint", d, "--format", "csv", "--grid-intensity", "400"]);
    let csv = stdout(&o);
    assert_eq!(csv.lines().count(), 1 + runs.len(), "{csv}");
    assert!(csv.starts_with("run_id,task,variant,seed,"), "{csv}");
}

#[test]
fn explicit_baseline_compares_another_model_of_the_same_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("res");
    let mut other = crafted("f32", Some(400.0), 1.0, 0.1);
    other["task"] = Value::from("digits-other-crafted");
    other["run_id"] = Value::from("digits-other-crafted--f32--seed-1--317b010e");
    write_folder(&dir, &[crafted("f32", Some(1000.0), 2.0, 0.2), other]);
    let f = footprint_json(&[
        "footprint",
        dir.to_str().unwrap(),
        "--format",
        "json",
        "--grid-intensity",
        "100",
        "--baseline",
        "digits-other-crafted",
    ]);
    // digits-mlp (ETT 1000, 2.0 J/1000) against the crafted model (ETT 400, 1.0 J/1000):
    // dearer on both: never pays back.
    let r = f["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["task"] == "digits-mlp")
        .unwrap();
    assert_eq!(
        r["break_even"][0]["result"]["case"], "never-pays-back",
        "{r}"
    );
    assert_eq!(
        r["break_even"][0]["baseline_run_id"],
        "digits-other-crafted--f32--seed-1--317b010e"
    );
}

#[test]
fn carbon_embodied_and_schedule_hand_computed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("res");
    let real = real_run();
    write_folder(&dir, std::slice::from_ref(&real));
    let d = dir.to_str().unwrap();
    let f = footprint_json(&[
        "footprint",
        d,
        "--format",
        "json",
        "--grid-intensity",
        "400",
        "--pue",
        "1.5",
        "--embodied-kg",
        "150",
        "--lifetime-years",
        "5",
        "--intensity-csv",
        DE_WEEK,
    ]);
    let r = &f["rows"][0];
    let e = real["energy"]["total_j"].as_f64().unwrap();
    let w = real["energy"]["window_s"].as_f64().unwrap();
    // kg = J / 3.6e6 x 1.5 x 400 / 1000.
    let op = e / 3.6e6 * 1.5 * 400.0 / 1000.0;
    assert!(
        close(r["operational_kg_co2e"].as_f64().unwrap(), op, 1e-12),
        "{r}"
    );
    assert_eq!(r["pue"], 1.5);
    assert_eq!(r["intensity_g_co2e_per_kwh"], 400.0);
    assert_eq!(r["intensity_fallback"], false);
    // Embodied: 150 kg / (5 x 8766 h) x window hours, at 100 % utilisation.
    let emb = 150.0 / (5.0 * 8766.0) * w / 3600.0;
    assert!(
        close(r["embodied"]["kg_co2e"].as_f64().unwrap(), emb, 1e-12),
        "{r}"
    );
    let share = emb / (emb + op);
    assert!(close(r["embodied_share"].as_f64().unwrap(), share, 1e-12));
    assert!(f["embodied_assumption"]
        .as_str()
        .unwrap()
        .contains("100 % utilisation"));
    // When to train: a sub-hour run is cheapest in the cleanest hour of the real DE week,
    // 2020-03-08T11:00Z (141.1 g/kWh), dearest at 2020-03-04T17:00Z (665.8 g/kWh).
    let s = &r["schedule"];
    assert_eq!(s["best_start_utc"], "2020-03-08T11:00:00Z", "{s}");
    assert_eq!(s["worst_start_utc"], "2020-03-04T17:00:00Z");
    assert_eq!(s["profile"], "measured power timeline");
    assert_eq!(s["starts"], 168);
    let best = e / 3.6e6 * 1.5 * 141.1 / 1000.0;
    assert!(
        close(s["best_kg_co2e"].as_f64().unwrap(), best, 1e-9),
        "{s}"
    );
    assert!(close(
        s["saving_vs_worst"].as_f64().unwrap(),
        1.0 - 141.1 / 665.8,
        1e-9
    ));
    // Every start hour is in the JSON.
    let id = real["run_id"].as_str().unwrap();
    assert_eq!(f["schedules"][id]["options"].as_array().unwrap().len(), 168);

    // Region lookup and the labelled fallback.
    let f = footprint_json(&["footprint", d, "--format", "json", "--region", "FRA"]);
    assert_eq!(f["intensity"]["g_co2e_per_kwh"], 56.039);
    assert_eq!(f["intensity"]["year"], 2023);
    let o = jb(&["footprint", d]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains("475.0 g CO2e/kWh (FALLBACK"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("PUE 1.0 (default"), "{}", stdout(&o));
    assert!(stderr(&o).contains("FALLBACK"));
    // Unknown device: said, not guessed.
    assert!(stdout(&o).contains("unknown device"), "{}", stdout(&o));
}

#[test]
fn list_regions_prints_the_table_with_sources() {
    let o = jb(&["footprint", "--list-regions"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(
        s.contains("FRA") && s.contains("US-CA") && s.contains("SE3"),
        "{s}"
    );
    assert!(s.contains("owid-ember: Our World in Data"), "{s}");
}

fn csv_file(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn bad_input_is_one_line_exit_2_naming_the_line_or_value() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("res");
    write_folder(&dir, &[real_run()]);
    let d = dir.to_str().unwrap();
    // Synthetic bad series (never presented as data).
    let h = "timestamp,g_co2e_per_kwh\n";
    let cases: Vec<(PathBuf, Vec<&str>)> = vec![
        (
            csv_file(tmp.path(), "empty.csv", ""),
            vec!["empty.csv", "no data rows"],
        ),
        (
            csv_file(tmp.path(), "header-only.csv", h),
            vec!["no data rows"],
        ),
        (
            csv_file(
                tmp.path(),
                "neg.csv",
                &format!("{h}2024-01-01T00:00Z,100\n2024-01-01T01:00Z,-3\n"),
            ),
            vec!["neg.csv: line 3", "-3 is negative"],
        ),
        (
            csv_file(
                tmp.path(),
                "nan.csv",
                &format!("{h}2024-01-01T00:00Z,abc\n"),
            ),
            vec!["line 2", "\"abc\" is not a number"],
        ),
        (
            csv_file(
                tmp.path(),
                "dup.csv",
                &format!("{h}2024-01-01T00:00Z,1\n2024-01-01T00:00Z,2\n"),
            ),
            vec!["line 3", "duplicate hour", "line 2"],
        ),
        (
            csv_file(
                tmp.path(),
                "overlap.csv",
                &format!("{h}2024-01-01T00:00Z,1\n2024-01-01T00:30Z,2\n"),
            ),
            vec!["line 3", "overlaps"],
        ),
        (
            csv_file(
                tmp.path(),
                "gap.csv",
                &format!("{h}2024-01-01T00:00Z,1\n2024-01-01T05:00Z,2\n"),
            ),
            vec!["line 3", "gap: 4 h missing"],
        ),
        (
            csv_file(tmp.path(), "ts.csv", &format!("{h}next tuesday,1\n")),
            vec!["line 2", "timestamp \"next tuesday\""],
        ),
        (
            csv_file(
                tmp.path(),
                "cols.csv",
                &format!("{h}2024-01-01T00:00Z,1,2\n"),
            ),
            vec!["line 2", "expected 2 fields"],
        ),
        (
            csv_file(tmp.path(), "noheader.csv", "2024-01-01T00:00Z,1\n"),
            vec!["line 1", "no header"],
        ),
        (
            tmp.path().join("missing.csv"),
            vec!["missing.csv", "cannot read"],
        ),
    ];
    for (path, needles) in cases {
        let o = jb(&["footprint", d, "--intensity-csv", path.to_str().unwrap()]);
        assert_usage_error(&o, &needles);
    }
    // A series shorter than the run is refused per run, as a note, not a failure: here the run
    // is 0.3 s, so a one-hour series fits. Other bad values:
    for (args, needles) in [
        (
            vec!["--region", "Atlantis"],
            vec!["\"Atlantis\"", "--list-regions"],
        ),
        (
            vec!["--grid-intensity", "-5"],
            vec!["--grid-intensity -5", "negative"],
        ),
        (vec!["--grid-intensity", "5000"], vec!["2000"]),
        (vec!["--pue", "0.8"], vec!["--pue 0.8"]),
        (
            vec!["--embodied-kg", "-1", "--lifetime-years", "4"],
            vec!["--embodied-kg -1"],
        ),
        (
            vec!["--embodied-kg", "100", "--lifetime-years", "0"],
            vec!["--lifetime-years 0"],
        ),
        (
            vec![
                "--embodied-kg",
                "100",
                "--lifetime-years",
                "4",
                "--utilisation",
                "2",
            ],
            vec!["--utilisation 2"],
        ),
        (
            vec!["--device-name", "tpu-v9", "--lifetime-years", "4"],
            vec!["\"tpu-v9\"", "nvidia-a100"],
        ),
        (vec!["--embodied-kg", "100"], vec!["--lifetime-years"]),
        (
            vec!["--grid-intensity", "300", "--region", "FRA"],
            vec!["--region"],
        ),
        (vec!["--format", "xml"], vec!["xml"]),
    ] {
        let mut a = vec!["footprint", d];
        a.extend(args);
        assert_usage_error(&jb(&a), &needles);
    }
    // Folders: missing, empty, and a run file that is not one.
    let missing = tmp.path().join("nope");
    assert_usage_error(
        &jb(&["footprint", missing.to_str().unwrap()]),
        &["nope", "not a results folder"],
    );
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert_usage_error(
        &jb(&["footprint", empty.to_str().unwrap()]),
        &["no runs/ folder"],
    );
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(bad.join("runs")).unwrap();
    std::fs::write(bad.join("runs").join("x.json"), b"{\"not\": 1}").unwrap();
    assert_usage_error(
        &jb(&["footprint", bad.to_str().unwrap()]),
        &["x.json", "not a joulebench run file (no schema_version)"],
    );
}

#[test]
fn run_with_inference_records_it_outside_the_training_window() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("res");
    let o = jb(&[
        "run",
        "--task",
        "digits-mlp",
        "--seed",
        "2",
        "--inference",
        "--results",
        res.to_str().unwrap(),
        "--idle-s",
        "0",
        "--cooldown-s",
        "0",
        "--meter",
        "estimate",
    ]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert!(stdout(&o).contains("inference: batch 1 "), "{}", stdout(&o));
    let files: Vec<PathBuf> = std::fs::read_dir(res.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(files.len(), 1);
    let r: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    let inf = &r["inference"];
    assert_eq!(inf["eval_samples"], 359);
    let m = inf["measurements"].as_array().unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[0]["batch"], 1);
    assert_eq!(
        m[1]["batch"], 359,
        "the large batch is clamped to the held-out set"
    );
    for x in m {
        // Long enough to be trusted, a full pass at least, and labelled estimated.
        assert!(x["time_s"].as_f64().unwrap() >= 5.0, "{x}");
        assert!(x["samples"].as_u64().unwrap() >= 359, "{x}");
        assert!(
            !x["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "short_window"),
            "{x}"
        );
        assert_eq!(x["all_measured"], false);
        assert_eq!(x["boundary"], "H");
        let j = x["energy_j"].as_f64().unwrap();
        let n = x["predictions"].as_f64().unwrap();
        assert!(close(
            x["j_per_1000"].as_f64().unwrap(),
            1000.0 * j / n,
            1e-12
        ));
    }
    // Not in ETT: the training window and its phases are unchanged by the inference windows.
    let total = r["energy"]["total_j"].as_f64().unwrap();
    let phases: f64 = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["energy_j"].as_f64().unwrap())
        .sum();
    assert!(close(phases, total, 1e-9));
    assert!(r["ett_j"].as_f64().unwrap() <= total);
    // And without --inference the key is absent.
    let res2 = tmp.path().join("res2");
    let o = jb(&[
        "run",
        "--task",
        "digits-mlp",
        "--seed",
        "2",
        "--results",
        res2.to_str().unwrap(),
        "--idle-s",
        "0",
        "--cooldown-s",
        "0",
        "--meter",
        "estimate",
    ]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let f = std::fs::read_dir(res2.join("runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let r: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
    assert!(r.get("inference").is_none());
}

/// Fields of one CSV line (RFC 4180 quoting).
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                out.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(String::new()),
            _ => out.last_mut().unwrap().push(c),
        }
    }
    out
}

/// `name -> value` for the only data row of a one-run CSV file.
fn one_row(path: &Path) -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    csv_fields(lines[0])
        .into_iter()
        .zip(csv_fields(lines[1]))
        .collect()
}

#[test]
fn report_takes_its_carbon_from_the_carbon_module() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("res");
    let real = real_run();
    write_folder(&dir, std::slice::from_ref(&real));
    let d = dir.to_str().unwrap();
    let e = real["energy"]["total_j"].as_f64().unwrap();

    // --region as in `footprint`: emissions.csv and footprint.csv agree with the formula.
    let out = tmp.path().join("fra");
    let o = jb(&[
        "report",
        d,
        "--region",
        "fra",
        "--pue",
        "1.2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let em = one_row(&out.join("emissions.csv"));
    let fp = one_row(&out.join("footprint.csv"));
    let kg = e / 3.6e6 * 1.2 * 56.039 / 1000.0;
    let num = |m: &std::collections::BTreeMap<String, String>, k: &str| -> f64 {
        m[k].parse().unwrap_or_else(|_| panic!("{k} = {:?}", m[k]))
    };
    assert!(close(num(&em, "emissions"), kg, 1e-12), "{em:?}");
    assert!(close(num(&fp, "operational_kg_co2e"), kg, 1e-12), "{fp:?}");
    assert_eq!(em["country_name"], "France");
    assert_eq!(em["country_iso_code"], "FRA");
    assert_eq!(em["pue"], "1.2");
    assert_eq!(fp["intensity_fallback"], "false");
    assert_eq!(fp["intensity_year"], "2023");
    // The real run's inference figures are carried into the report's footprint table.
    assert_eq!(fp["inference_batch_small"], "1");
    let j1 = real["inference"]["measurements"][0]["j_per_1000"]
        .as_f64()
        .unwrap();
    assert!(close(num(&fp, "inference_j_per_1000_small"), j1, 1e-12));
    let md = std::fs::read_to_string(out.join("footprint.md")).unwrap();
    assert!(md.contains("France (FRA)"), "{md}");
    assert!(md.contains("Generated by `joulebench"), "{md}");
    assert!(
        md.contains("joulebench report"),
        "the report's command: {md}"
    );

    // Neither flag: emissions.csv says so (no column for a label), footprint.* label the
    // world average.
    let out = tmp.path().join("none");
    let o = jb(&["report", d, "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let em = one_row(&out.join("emissions.csv"));
    assert_eq!(em["emissions"], "intensity not given");
    let fp = one_row(&out.join("footprint.csv"));
    assert_eq!(fp["intensity_fallback"], "true");
    assert!(close(
        num(&fp, "operational_kg_co2e"),
        e / 3.6e6 * 475.0 / 1000.0,
        1e-12
    ));
    let md = std::fs::read_to_string(out.join("footprint.md")).unwrap();
    assert!(
        md.contains("FALLBACK") && md.contains("PUE 1.0 (default"),
        "{md}"
    );
    assert!(stderr(&o).contains("FALLBACK"), "{}", stderr(&o));

    // Bad carbon flags are refused as `footprint` refuses them.
    assert_usage_error(
        &jb(&["report", d, "--region", "Atlantis"]),
        &["Atlantis", "--list-regions"],
    );
    assert_usage_error(&jb(&["report", d, "--grid-intensity", "-3"]), &["negative"]);
    assert_usage_error(
        &jb(&["report", d, "--grid-intensity", "300", "--region", "FRA"]),
        &["give one"],
    );
}
