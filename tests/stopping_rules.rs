//! The stopping rules: `joulebench replay` on small folders built here, with answers worked
//! out by hand, and its refusals of bad input (one line, exit 2); `run --forecast-stop` live.

mod common;

use serde_json::{json, Value};
use std::path::Path;

const TEMPLATE: &str =
    "tests/fixtures/report/machines/epyc-rapl/runs/digits-mlp--f32--seed-1--e5f6a7b8.json";

/// A digits-mlp run file: evals every 30 steps, 10 steps per epoch (budget 60 epochs = 600
/// steps), `energy_j = j_per_step * step`; `values` are the evals' accuracies (T = 0.95). The
/// run ends at its last eval: at T when it reaches it, else at the end of the budget.
fn run_file(dir: &Path, variant: &str, seed: u64, j_per_step: f64, values: &[f64]) {
    let mut r: Value = serde_json::from_slice(&std::fs::read(TEMPLATE).unwrap()).unwrap();
    let curve: Vec<Value> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let step = 30 * (i + 1);
            json!({"step": step, "epoch": step as f64 / 10.0, "energy_j": j_per_step * step as f64,
                   "time_s": step as f64 / 1000.0, "value": v, "train_loss": 1.0})
        })
        .collect();
    let total = j_per_step * 30.0 * values.len() as f64;
    let reached = values.last().is_some_and(|v| *v >= 0.95);
    let id = format!("digits-mlp--{variant}--seed-{seed}--feedface");
    r["run_id"] = id.clone().into();
    r["seed"] = seed.into();
    r["variant"]["name"] = variant.into();
    r["variant"]["precision"] = variant.into();
    r["config"]["seed"] = seed.into();
    r["quality"]["curve"] = curve.into();
    r["energy"]["total_j"] = total.into();
    r["status"] = if reached { "ok" } else { "dnf" }.into();
    r["ett_j"] = if reached { total.into() } else { Value::Null };
    r["jpp"] = if reached {
        r["jpp"].clone()
    } else {
        Value::Null
    };
    let runs = dir.join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    std::fs::write(
        runs.join(format!("{id}.json")),
        serde_json::to_vec(&r).unwrap(),
    )
    .unwrap();
}

/// Baseline f32 and bf16-amp (exactly twice its energy) reach T at step 300; f16-amp stays at
/// 0.5 for the whole budget (20 evals). Five seeds each.
fn folder(dir: &Path) {
    let rising: Vec<f64> = (0..10).map(|i| 0.5 + 0.05 * i as f64).collect();
    assert!((rising[9] - 0.95).abs() < 1e-12);
    let rising: Vec<f64> = rising.iter().map(|v| v + 1e-9).collect();
    for seed in 1..=5 {
        run_file(dir, "f32", seed, 0.1, &rising);
        run_file(dir, "bf16-amp", seed, 0.2, &rising);
        run_file(dir, "f16-amp", seed, 0.1, &[0.5; 20]);
    }
}

#[test]
fn replay_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hand");
    folder(&dir);
    let o = common::joulebench(&["replay", "--json", dir.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let r: Value = serde_json::from_str(&o.stdout).unwrap();
    let f = &r["folders"][0];
    let e = &f["energy"];
    let close = |v: &Value, x: f64| (v.as_f64().unwrap() - x).abs() < 1e-6;
    // Fixed: 5 x 30 J (f32) + 5 x 60 J (bf16-amp) + 5 x 60 J (f16-amp, whole budget).
    assert!(close(&e["fixed_j"], 750.0), "{e}");
    // Sequential: bf16-amp's ratio is exactly 2 in every seed, a zero-width interval above
    // +2 % at the first look (3 pairs); f16-amp's first seed is a DNF, which settles it. The
    // baseline runs the 3 seeds bf16-amp needs: 3 x 30 + 3 x 60 + 1 x 60.
    assert!(close(&e["sequential_j"], 330.0), "{e}");
    // Forecast: each f16-amp run is flat at 0.5 far below T; the first forecast is at eval 3
    // (step 90, 15 % of the 600-step budget) and stops it: 9 J instead of 60 J.
    assert!(close(&e["forecast_j"], 150.0 + 300.0 + 45.0), "{e}");
    // Both: 3 x 30 + 3 x 60 + one f16-amp seed stopped at 9 J.
    assert!(close(&e["both_j"], 90.0 + 180.0 + 9.0), "{e}");
    let fc = &f["forecast"];
    assert_eq!(fc["judged"], 15);
    assert_eq!(fc["reached"], 10);
    assert_eq!(fc["true_stops"], 5);
    assert_eq!(fc["false_stops"], 0);
    for s in f["stops"].as_array().unwrap() {
        assert_eq!(s["forecast"]["at_step"], 90.0);
        assert!(close(&s["saved_j"], 51.0), "{s}");
    }
    let sq = &f["sequential"];
    assert_eq!(sq["comparisons"], 2);
    assert_eq!(sq["settled_early"], 2);
    assert_eq!(sq["differ"], 0);
    assert_eq!(sq["differ_both"], 0);

    // The table: one row per folder and the total, with the shares saved.
    let o = common::joulebench(&["replay", dir.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for share in ["(56 %)", "(34 %)", "(63 %)"] {
        assert!(o.stdout.contains(share), "{share}: {}", o.stdout);
    }
    assert!(o.stdout.contains("**total**"), "{}", o.stdout);
}

#[test]
fn a_verdict_that_needs_more_seeds_than_the_folder_has_is_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("noisy");
    let rising: Vec<f64> = (0..10).map(|i| 0.5 + 0.05 * i as f64 + 1e-9).collect();
    // Variant energy per step alternates 0.09 / 0.12 against the baseline's 0.1: no verdict.
    for seed in 1..=3 {
        run_file(&dir, "f32", seed, 0.1, &rising);
        let j = if seed % 2 == 0 { 0.09 } else { 0.12 };
        run_file(&dir, "bf16-amp", seed, j, &rising);
    }
    let o = common::joulebench(&[
        "replay",
        "--json",
        "--max-seeds",
        "10",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let r: Value = serde_json::from_str(&o.stdout).unwrap();
    let f = &r["folders"][0];
    // Nothing saved: all three seeds are needed and more would be.
    assert_eq!(f["energy"]["sequential_j"], f["energy"]["fixed_j"]);
    assert_eq!(f["sequential"]["used_every_seed"], 1);
    // The fixed protocol says "no significant difference"; the rule is still open: the same.
    assert_eq!(f["sequential"]["differ"], 0);
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    // A folder whose runs have no eval curve.
    let flat = tmp.path().join("no-curves");
    run_file(&flat, "f32", 1, 0.1, &[]);
    // A run file from an older schema: no `quality` object.
    let old = tmp.path().join("old");
    folder(&old);
    let victim = old.join("runs/digits-mlp--f32--seed-2--feedface.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&victim).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("quality");
    std::fs::write(&victim, serde_json::to_vec(&v).unwrap()).unwrap();
    let missing = tmp.path().join("nope");
    let good = tmp.path().join("good");
    folder(&good);
    for (args, needle) in [
        (
            vec!["replay", flat.to_str().unwrap()],
            "no run has an eval curve",
        ),
        (
            vec!["replay", old.to_str().unwrap()],
            "seed-2--feedface.json",
        ),
        (vec!["replay", missing.to_str().unwrap()], "does not exist"),
        (
            vec!["replay", "--min-seeds", "1", good.to_str().unwrap()],
            "at least 2 seed pairs",
        ),
        (
            vec!["replay", "--max-seeds", "2", good.to_str().unwrap()],
            "below --min-seeds 3",
        ),
        (vec!["replay"], "required"),
    ] {
        let o = common::joulebench(&args);
        assert_eq!(o.code, 2, "{args:?}: {}", o.stderr);
        assert!(o.stderr.contains(needle), "{args:?}: {}", o.stderr);
        if needle != "required" {
            assert_eq!(o.stderr.lines().count(), 1, "{args:?}: {}", o.stderr);
        }
        assert!(o.stdout.is_empty(), "{args:?}: {}", o.stdout);
    }
}

/// `run --forecast-stop` on a variant that cannot reach T (digits-mlp trained on Gaussian
/// synthetic data plateaus near 92 % against T = 95.5 %): the run ends `stopped-forecast`
/// before its budget, its file carries the forecast, and the report counts it as a DNF.
#[test]
fn run_with_forecast_stop_ends_a_hopeless_run_early() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fs");
    let o = common::joulebench(&[
        "run",
        "--task",
        "digits-mlp",
        "--variant",
        "f32",
        "--variant",
        "synthetic-gaussian",
        "--seed",
        "1",
        "--forecast-stop",
        "--idle-s",
        "0",
        "--cooldown-s",
        "0",
        "--results",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 1, "a DNF exits 1: {}{}", o.stdout, o.stderr);
    let file = std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("synthetic-gaussian"))
        .unwrap();
    let r: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    assert_eq!(r["status"], "stopped-forecast");
    assert_eq!(r["config"]["forecast_stop"], true);
    assert!(r["ett_j"].is_null());
    let fc = &r["forecast"];
    assert!(fc["p_reach"].as_f64().unwrap() < 0.01, "{fc}");
    assert!(fc["predicted_final"].as_f64().unwrap() < 0.955, "{fc}");
    let steps = r["steps"].as_u64().unwrap() as f64;
    assert!(
        steps < fc["budget_steps"].as_f64().unwrap(),
        "stopped before the budget: {r}"
    );
    assert_eq!(steps, fc["at_step"].as_f64().unwrap());
    let o = common::joulebench(&["report", "--format", "md", dir.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("0/1") && o.stdout.contains("stopped-forecast"),
        "{}",
        o.stdout
    );
    // The verdict's cost under the rule, and the forecast's saving at the run's own rate:
    // (budget - stop step) x (energy per step between the first eval and the stop).
    let curve = r["quality"]["curve"].as_array().unwrap();
    let (a, b) = (&curve[0], curve.last().unwrap());
    let per_step = (b["energy_j"].as_f64().unwrap() - a["energy_j"].as_f64().unwrap())
        / (b["step"].as_f64().unwrap() - a["step"].as_f64().unwrap());
    let saved = (fc["budget_steps"].as_f64().unwrap() - fc["at_step"].as_f64().unwrap()) * per_step;
    let line = o
        .stdout
        .lines()
        .find(|l| l.contains("stopped by the forecast"))
        .unwrap_or_else(|| panic!("no stopping line: {}", o.stdout));
    assert!(
        line.contains("\"did not reach target\" from 2 runs"),
        "{line}"
    );
    assert!(
        line.contains(&format!("about {saved:.1} J saved")),
        "{saved:.1}: {line}"
    );
    // Refused with --full-budget (reference curves are never stopped).
    let o = common::joulebench(&[
        "run",
        "--task",
        "digits-mlp",
        "--forecast-stop",
        "--full-budget",
        "--results",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(!tmp.path().join("x").exists());
}
