//! The labelled CPU/DRAM estimate against CodeCarbon 3.3.2 as an oracle.
//!
//! `tests/fixtures/codecarbon-3.3.2.json` is what `scripts/codecarbon-oracle.py` printed when
//! run with the real `codecarbon==3.3.2` package: RAM power over MemTotal sizes (x86 and
//! ARM), the CPU load curve over TDPs and loads, TDP lookups of 715 brand strings in its CPU
//! table, and the TDP its resource tracker picks for (model, threads, sockets).
//! `matches_the_recorded_oracle` compares `joulebench::measure::estimate` with that file on
//! every `cargo test`. `matches_a_fresh_codecarbon` (ignored by default: it needs python3
//! with venv and the Python package registry; `.ci/run` runs it) installs the package into a
//! virtual environment, runs the script, and checks both that the fixture is what CodeCarbon
//! prints today and that joulebench agrees with it. Without python3 or the registry it
//! prints why and skips, unless `JOULEBENCH_REQUIRE_ORACLE=1` (set by `.ci/run`), where that
//! is a failure.

use joulebench::measure::estimate::{
    codecarbon_cpu_power_w, codecarbon_dimm_count, dram_power_w, resolve_tdp, CpuInfo,
    CpuPowerTable, TableTdp,
};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

mod common;

const FIXTURE: &str = "tests/fixtures/codecarbon-3.3.2.json";

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

/// Every disagreement between joulebench and an oracle output, one line each.
fn disagreements(oracle: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    let rows = |k: &str| {
        oracle[k]
            .as_array()
            .unwrap_or_else(|| panic!("oracle output has no {k} table"))
            .clone()
    };
    let ram = rows("ram");
    assert!(ram.len() >= 70, "only {} RAM rows", ram.len());
    for r in &ram {
        let kb = r["mem_total_kb"].as_u64().expect("mem_total_kb");
        let arm = r["arm"].as_bool().expect("arm");
        let gib = kb as f64 / (1024.0 * 1024.0);
        let ours = dram_power_w(kb, arm);
        if !close(ours, f(r, "watts")) || u64::from(codecarbon_dimm_count(gib)) != r["dimms"] {
            bad.push(format!(
                "RAM {kb} kB arm={arm}: joulebench {ours} W / {} DIMMs, CodeCarbon {} W / {} DIMMs",
                codecarbon_dimm_count(gib),
                r["watts"],
                r["dimms"]
            ));
        }
    }
    let cpu = rows("cpu_load");
    assert!(cpu.len() >= 50, "only {} CPU load rows", cpu.len());
    for r in &cpu {
        let (tdp, load) = (f(r, "tdp_w"), f(r, "load_pct"));
        let ours = codecarbon_cpu_power_w(tdp, load / 100.0);
        if !close(ours, f(r, "watts")) {
            bad.push(format!(
                "CPU TDP {tdp} W at {load} %: joulebench {ours} W, CodeCarbon {}",
                r["watts"]
            ));
        }
    }
    let lookups = rows("tdp_lookup");
    assert!(lookups.len() >= 700, "only {} lookups", lookups.len());
    let table = CpuPowerTable::codecarbon();
    for r in &lookups {
        let model = r["model"].as_str().expect("model");
        // CodeCarbon's answer: a TDP, none, or an error (a malformed row).
        let theirs = match (r["tdp_w"].as_f64(), r.get("error")) {
            (Some(w), _) => format!("{w} W"),
            (None, Some(_)) => "error".to_string(),
            (None, None) => "none".to_string(),
        };
        let ours = match table.tdp(model) {
            TableTdp::Found { tdp_w, .. } => format!("{tdp_w} W"),
            TableTdp::Malformed { .. } => "error".to_string(),
            TableTdp::NotFound => "none".to_string(),
        };
        if ours != theirs {
            bad.push(format!(
                "table lookup {model:?}: joulebench {ours}, CodeCarbon {theirs}"
            ));
        }
    }
    let choices = rows("tdp_choice");
    assert!(choices.len() >= 9, "only {} TDP choices", choices.len());
    for r in &choices {
        let cpu = CpuInfo {
            model: r["model"].as_str().map(str::to_string),
            logical_threads: r["threads"].as_u64().expect("threads") as usize,
            sockets: r["sockets"].as_u64().expect("sockets") as usize,
        };
        let ours = resolve_tdp(None, &cpu).expect("resolve").watts;
        if !close(ours, f(r, "tdp_w")) {
            bad.push(format!(
                "TDP for {cpu:?}: joulebench {ours} W, CodeCarbon {}",
                r["tdp_w"]
            ));
        }
    }
    bad
}

fn assert_agrees(oracle: &Value) {
    let bad = disagreements(oracle);
    assert!(
        bad.is_empty(),
        "{} disagreements:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

fn fixture() -> Value {
    let text = std::fs::read_to_string(FIXTURE).expect("read the oracle fixture");
    serde_json::from_str(&text).expect("the oracle fixture is JSON")
}

#[test]
fn matches_the_recorded_oracle() {
    let oracle = fixture();
    assert_eq!(oracle["codecarbon_version"], "3.3.2");
    assert_agrees(&oracle);
}

/// A virtual environment with codecarbon 3.3.2 (and the versions of its dependencies in
/// scripts/codecarbon-oracle.constraints.txt), made once per target directory.
fn codecarbon_python() -> Result<PathBuf, String> {
    common::venv_python(
        "codecarbon-3.3.2-venv",
        &[
            "-c",
            "scripts/codecarbon-oracle.constraints.txt",
            "codecarbon==3.3.2",
        ],
        "import codecarbon; assert codecarbon.__version__ == '3.3.2'",
    )
}

#[test]
#[ignore = "installs codecarbon 3.3.2 from the Python package registry into a venv; .ci/run runs it with --ignored"]
fn matches_a_fresh_codecarbon() {
    let python = match codecarbon_python() {
        Ok(p) => p,
        Err(why) => {
            let test = "matches_a_fresh_codecarbon";
            common::requires(test, Some(why), Some("JOULEBENCH_REQUIRE_ORACLE"));
            return;
        }
    };
    let out = Command::new(&python)
        .arg("scripts/codecarbon-oracle.py")
        .output()
        .expect("run the oracle script");
    assert!(
        out.status.success(),
        "oracle script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live: Value = serde_json::from_slice(&out.stdout).expect("oracle output is JSON");
    assert_eq!(
        live,
        fixture(),
        "CodeCarbon's output differs from {FIXTURE}: regenerate it with scripts/codecarbon-oracle.py"
    );
    assert_agrees(&live);
}
