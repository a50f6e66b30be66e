//! End-to-end tests of the variants through the `joulebench` binary on the shipped digits data
//! (seconds each): mixed precision, unstructured and structured pruning, fine-tuning from a
//! pretrained (or external) checkpoint, synthetic and mixed data, each charged for its whole pipeline in one window, and
//! the bad inputs of issue 3 giving one line on stderr and exit code 2.

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

const QUICK: &[&str] = &["--idle-s", "0", "--cooldown-s", "0", "--meter", "estimate"];

/// Run `task` under `variant` (seed 1) into `res`; the run file of that variant.
fn run_variant(res: &Path, task: &str, variant: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "run",
        "--task",
        task,
        "--variant",
        variant,
        "--seed",
        "1",
        "--results",
        res.to_str().unwrap(),
    ];
    args.extend_from_slice(QUICK);
    args.extend_from_slice(extra);
    let o = jb(&args);
    assert!(
        matches!(o.status.code(), Some(0) | Some(1)),
        "stderr: {}",
        stderr(&o)
    );
    read_run(res, task, variant).unwrap_or_else(|| panic!("no run file: {}", stderr(&o)))
}

/// The run file of `task` under `variant`, seed 1, in `res`.
fn read_run(res: &Path, task: &str, variant: &str) -> Option<Value> {
    let id = format!("{task}--{variant}--seed-1--");
    let path = std::fs::read_dir(res.join("runs"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&id) && n.ends_with(".json"))
        })?;
    Some(serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap())
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The phases of a run add up to its energy, and are named as given.
fn assert_phases(r: &Value, names: &[&str]) {
    let phases = r["phases"].as_array().unwrap();
    let got: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(got, names, "{}", r["phases"]);
    let sum: f64 = phases.iter().map(|p| f(&p["energy_j"])).sum();
    let total = f(&r["energy"]["total_j"]);
    assert!(
        (sum - total).abs() <= 1e-6 * total.max(1.0),
        "{sum} vs {total}"
    );
}

#[test]
fn bf16_amp_runs_in_bf16_and_evaluates_in_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run_variant(tmp.path(), "digits-mlp", "bf16-amp", &[]);
    assert_eq!(r["status"], "ok", "{}", r["error"]);
    let rep = &r["variant"]["precision_report"];
    // The storage dtypes the engine observed, as before.
    assert_eq!(rep["observed"]["matmul"], "bf16", "{rep}");
    assert_eq!(rep["observed"]["eval"], "f32");
    assert_eq!(rep["observed"]["master_weights"], "f32");
    // The arithmetic: candle's CPU backend widens bf16 GEMMs to f32 on every CPU.
    assert_eq!(rep["basis"], "engine");
    let m = &rep["ops"]["matmul"];
    assert_eq!(m["requested"], "bf16", "{rep}");
    assert_eq!(m["ran"], "f32", "{rep}");
    assert_eq!(m["support"], "emulated", "{rep}");
    assert_eq!(rep["ops"]["conv"]["support"], "not-applicable", "{rep}");
    assert_eq!(rep["ops"]["optimizer"]["support"], "native", "{rep}");
    assert_eq!(r["variant"]["precision"], "bf16-amp");
    assert!(r["ett_j"].as_f64().is_some());
}

#[test]
fn f16_amp_records_its_loss_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run_variant(tmp.path(), "digits-mlp", "f16-amp", &[]);
    assert!(
        r["status"] == "ok" || r["status"] == "dnf",
        "{}",
        r["error"]
    );
    assert_eq!(
        r["variant"]["precision_report"]["observed"]["matmul"],
        "f16"
    );
    assert_eq!(
        r["variant"]["precision_report"]["ops"]["matmul"]["requested"],
        "f16"
    );
    let ls = &r["variant"]["loss_scale"];
    assert_eq!(f(&ls["initial"]), 65536.0, "{ls}");
    assert!(ls["skipped_steps"].as_u64().is_some(), "{ls}");
}

#[test]
fn unstructured_pruning_charges_the_whole_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run_variant(tmp.path(), "digits-mlp", "unstructured-90", &[]);
    assert_eq!(r["status"], "ok", "{}", r["error"]);
    let names: Vec<&str> = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names == ["dense-train", "prune", "recover"] || names == ["dense-train", "prune"]);
    assert_phases(&r, &names);
    let sch = &r["variant"]["pruning_schedule"];
    assert!((f(&sch["achieved_sparsity"]) - 0.9).abs() < 1e-3, "{sch}");
    let pr = f(&sch["prune_and_recover_j"]);
    assert!(pr > 0.0 && pr < f(&r["energy"]["total_j"]));
    // Masks on dense kernels: the kernels executed more FLOPs than the unpruned weights need.
    assert!(f(&r["flops"]["executed"]) > f(&r["flops"]["nominal"]));
    // Only the pruned model's evals score: the dense model's are not the variant's.
    let curve = r["quality"]["curve"].as_array().unwrap();
    let hit = curve
        .iter()
        .find(|p| p["scored"] == true && f(&p["value"]) >= f(&r["quality"]["target"]))
        .unwrap();
    assert_eq!(f(&r["ett_j"]), f(&hit["energy_j"]));
    assert!(curve
        .iter()
        .any(|p| p["phase"] == "dense-train" && p["scored"] == false));
}

#[test]
fn structured_pruning_runs_a_smaller_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dense = run_variant(tmp.path(), "digits-mlp", "f32", &[]);
    let r = run_variant(tmp.path(), "digits-mlp", "structured-50", &[]);
    assert_eq!(r["status"], "ok", "{}", r["error"]);
    let sch = &r["variant"]["pruning_schedule"];
    assert!(sch["parameters_after"].as_u64().unwrap() < sch["parameters_before"].as_u64().unwrap());
    assert_eq!(r["model"]["parameters"], sch["parameters_after"]);
    assert!(
        r["flops"]["forward_per_sample"].as_u64().unwrap()
            < dense["flops"]["forward_per_sample"].as_u64().unwrap()
    );
    // A smaller dense model: executed equals nominal.
    assert_eq!(f(&r["flops"]["executed"]), f(&r["flops"]["nominal"]));
    assert_eq!(r["phases"][0]["name"], "dense-train");
    assert_eq!(r["phases"][1]["name"], "prune");
}

#[test]
fn finetune_pretrains_the_source_and_reports_cumulative_energy() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run_variant(tmp.path(), "digits-hi-mlp", "finetune", &[]);
    assert_eq!(r["status"], "ok", "{}", r["error"]);
    let c = &r["variant"]["checkpoint"];
    assert_eq!(c["origin"], "harness", "{c}");
    assert_eq!(c["source_task"], "digits-lo-mlp");
    let pre_j = f(&c["energy"]["energy_j"]);
    let inc = f(&c["incremental_energy_j"]);
    assert_eq!(inc, f(&r["energy"]["total_j"]));
    assert!((f(&c["cumulative_energy_j"]) - (inc + pre_j)).abs() < 1e-9);
    // The pretraining is a run of its own, with the same energy as the sidecar keeps.
    let src = read_run(tmp.path(), "digits-lo-mlp", "f32").expect("the pretraining's run file");
    assert_eq!(src["status"], "ok");
    assert_eq!(f(&src["energy"]["total_j"]), pre_j);
    assert_phases(&r, &["finetune"]);

    // The same weights with no sidecar are external: no cumulative energy.
    let ckpt = tmp
        .path()
        .join("checkpoints")
        .join(format!("{}.safetensors", src["run_id"].as_str().unwrap()));
    let ext_dir = tempfile::tempdir().unwrap();
    let ext = ext_dir.path().join("weights.safetensors");
    std::fs::copy(&ckpt, &ext).unwrap();
    let res2 = tmp.path().join("ext");
    let r = run_variant(
        &res2,
        "digits-hi-mlp",
        "finetune-freeze-fc0",
        &["--checkpoint", ext.to_str().unwrap()],
    );
    assert_eq!(r["variant"]["checkpoint"]["origin"], "external");
    assert!(r["variant"]["checkpoint"]["cumulative_energy_j"].is_null());
    assert_eq!(r["variant"]["frozen"][0], "fc0");
}

#[test]
fn synthetic_data_is_made_and_charged_inside_the_window() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run_variant(
        tmp.path(),
        "digits-mlp",
        "synthetic-gaussian",
        &["--max-epochs", "3"],
    );
    assert!(
        r["status"] == "ok" || r["status"] == "dnf",
        "{}",
        r["error"]
    );
    assert_phases(&r, &["generator-fit", "sample", "train"]);
    let syn = &r["variant"]["synthetic"];
    assert_eq!(syn["real_samples"], 0, "{syn}");
    assert_eq!(syn["synthetic_samples"], r["dataset"]["train_samples"]);
    assert!(f(&syn["fit_flops"]) > 0.0 && f(&syn["sample_flops"]) > 0.0);
    // The generator's FLOPs are part of the run's.
    assert!(f(&r["flops"]["executed"]) > f(&syn["fit_flops"]) + f(&syn["sample_flops"]));
    // Evaluated on the real held-out set, above chance: the generator learned the classes.
    assert!(f(&r["quality"]["best"]) > 0.5, "{}", r["quality"]["best"]);

    let m = run_variant(
        tmp.path(),
        "digits-mlp",
        "mixed-50-gaussian",
        &["--max-epochs", "2"],
    );
    let syn = &m["variant"]["synthetic"];
    let n = m["dataset"]["train_samples"].as_u64().unwrap();
    let real = syn["real_samples"].as_u64().unwrap();
    assert_eq!(real + syn["synthetic_samples"].as_u64().unwrap(), n);
    assert!((real as f64 - n as f64 / 2.0).abs() <= 10.0, "{syn}");
    assert_eq!(m["variant"]["data"], "mixed:0.5");
}

#[test]
fn random_tensors_is_a_throughput_track_with_no_target() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run_variant(tmp.path(), "digits-mlp", "random-tensors", &[]);
    assert_eq!(r["status"], "ok", "{}", r["error"]);
    assert!(r["ett_j"].is_null() && r["jpp"].is_null());
    assert!(r["quality"]["curve"].as_array().unwrap().is_empty());
    let t = &r["variant"]["synthetic"];
    assert_eq!(t["steps"], r["steps"]);
    assert!(f(&t["j_per_step"]) > 0.0 && f(&t["j_per_sample"]) > 0.0);
    assert_phases(&r, &["generate", "train"]);
}

fn assert_usage_error(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {e}");
    let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {e}");
    for n in needles {
        assert!(e.contains(n), "missing {n:?} in: {e}");
    }
}

#[test]
fn impossible_variants_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("res");
    let base = |v: &str| -> Vec<String> {
        let mut a: Vec<String> = ["run", "--task", "digits-mlp", "--variant", v, "--results"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.push(res.to_str().unwrap().into());
        a.extend(QUICK.iter().map(|s| s.to_string()));
        a
    };
    let go = |a: Vec<String>| jb(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_usage_error(&go(base("structured-100")), &["sparsity 1.0"]);
    assert_usage_error(&go(base("finetune")), &["--checkpoint"]);
    assert_usage_error(&go(base("tf32")), &["CUDA"]);
    assert_usage_error(&go(base("synthetic-diffusion")), &["unknown generator"]);
    // A checkpoint whose shapes do not match the model.
    let bad = tmp.path().join("bad.safetensors");
    let t = candle_core::Tensor::zeros((3, 3), candle_core::DType::F32, &candle_core::Device::Cpu)
        .unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("fc0.weight".to_string(), t)]),
        &bad,
    )
    .unwrap();
    let mut a = base("finetune");
    a.extend(["--checkpoint".into(), bad.to_str().unwrap().into()]);
    assert_usage_error(&go(a), &["does not fit task 'digits-mlp'"]);
    let mut a = base("finetune");
    a.extend(["--checkpoint".into(), "/nonexistent.safetensors".into()]);
    assert_usage_error(&go(a), &["not found"]);
    assert!(
        !res.join("runs").exists() || std::fs::read_dir(res.join("runs")).unwrap().count() == 0
    );
}

#[test]
fn list_shows_every_preset_and_the_grammar() {
    let o = jb(&["list"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for name in [
        "bf16-amp",
        "f16-amp",
        "unstructured-90",
        "structured-50",
        "finetune-freeze-fc0",
        "synthetic-vae",
        "mixed-50-gmm",
        "any composition",
        "digits-hi-mlp",
    ] {
        assert!(out.contains(name), "{name} missing from: {out}");
    }
    let o = jb(&["list", "--json"]);
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = j["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"structured-50") && names.contains(&"synthetic-gmm"));
}
