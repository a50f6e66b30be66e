//! The GPT-class and ResNet-class workloads end to end through the `joulebench` binary, on tiny
//! configurations of the shipped families (seconds each, the real shipped data): every variant
//! that applies, loss-target scoring in the run file (metric, direction, unit, T, c), the
//! n-gram synthetic text charged inside the window, the fine-tune pair Austen -> Shakespeare,
//! and the bad inputs that must be one line and exit 2.

use serde_json::Value;
use std::path::{Path, PathBuf};
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

/// A tiny member of the shakespeare-gpt family: the shipped task's keys, smaller numbers.
fn gpt_task(name: &str, dataset: &str, extra: &str, target: f64) -> String {
    format!(
        r#"name = "{name}"
description = "tiny gpt"
dataset = "{dataset}"
metric = "held-out-loss"
[model]
kind = "gpt"
context = 16
d_model = 32
heads = 4
layers = 2
ff_mult = 2
dropout = 0.1
[optimizer]
kind = "adamw"
lr = 0.01
beta1 = 0.9
beta2 = 0.99
eps = 1e-8
weight_decay = 0.1
decay = "matrices"
schedule = "cosine"
lr_warmup_steps = 10
min_lr = 0.001
clip_grad_norm = 1.0
[train]
batch_size = 16
eval_every_steps = 20
eval_max_samples = 64
warmup_steps = 1
[target]
value = {target}
chance = 3.3
how_chosen = "test"
[budget]
max_epochs = 1
max_steps = 300
{extra}"#
    )
}

fn resnet_task() -> String {
    r#"name = "tiny-resnet"
description = "tiny resnet"
dataset = "fashion-mnist"
metric = "accuracy"
[model]
kind = "resnet"
channels = [4, 8, 8]
blocks = 1
[optimizer]
kind = "adamw"
lr = 0.01
beta1 = 0.9
beta2 = 0.999
eps = 1e-8
weight_decay = 0.0005
decay = "matrices"
schedule = "cosine"
lr_warmup_steps = 5
min_lr = 0.0003
[train]
batch_size = 32
eval_every_steps = 20
eval_max_samples = 500
warmup_steps = 1
input_mean = 0.2860
input_sd = 0.3530
augment_crop_pad = 2
augment_hflip = true
[target]
value = 0.45
chance = 0.1
how_chosen = "test"
[budget]
max_epochs = 1
max_steps = 200
"#
    .into()
}

struct Tasks {
    _dir: tempfile::TempDir,
    models: PathBuf,
    res: PathBuf,
}

fn tasks() -> Tasks {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let write = |n: &str, t: String| std::fs::write(models.join(format!("{n}.toml")), t).unwrap();
    write(
        "tiny-gpt",
        gpt_task(
            "tiny-gpt",
            "shakespeare",
            "[finetune]\nsource = \"tiny-gpt-austen\"\n",
            3.25,
        ),
    );
    write(
        "tiny-gpt-austen",
        gpt_task(
            "tiny-gpt-austen",
            "text",
            "[data]\ntext_encoding = \"bytes\"\n",
            3.25,
        ),
    );
    write("tiny-resnet", resnet_task());
    let res = dir.path().join("res");
    Tasks {
        _dir: dir,
        models,
        res,
    }
}

fn run(t: &Tasks, task: &str, variant: &str) -> (Output, Option<Value>) {
    let o = jb(&[
        "run",
        "--task",
        task,
        "--variant",
        variant,
        "--seed",
        "1",
        "--models-dir",
        t.models.to_str().unwrap(),
        "--results",
        t.res.to_str().unwrap(),
        "--idle-s",
        "0",
        "--cooldown-s",
        "0",
        "--meter",
        "estimate",
        "--device",
        "cpu",
    ]);
    let id = format!("{task}--{variant}--seed-1--");
    let rec = std::fs::read_dir(t.res.join("runs")).ok().and_then(|d| {
        d.filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p: &PathBuf| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&id) && n.ends_with(".json"))
            })
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
    });
    (o, rec)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The run finished (reached T or not) and its record is a loss-scored one.
fn ran(t: &Tasks, task: &str, variant: &str) -> Value {
    let (o, rec) = run(t, task, variant);
    assert!(
        matches!(o.status.code(), Some(0) | Some(1)),
        "{task} {variant}: {}",
        stderr(&o)
    );
    let r = rec.unwrap_or_else(|| panic!("{task} {variant}: no run file: {}", stderr(&o)));
    assert!(
        r["status"] == "ok" || r["status"] == "dnf",
        "{task} {variant}: {} {}",
        r["status"],
        r["error"]
    );
    r
}

/// Loss scoring: ETT is the energy at the first scored eval at or below T; the run file says
/// metric, direction, unit (through the metric), T and c; JPP is per 0.01 nat below c.
#[test]
fn gpt_variants_score_a_loss_target() {
    let t = tasks();
    let r = ran(&t, "tiny-gpt", "f32");
    let q = &r["quality"];
    assert_eq!(q["metric"], "held-out-loss");
    assert_eq!(q["direction"], "lower");
    assert_eq!(q["unit"], "nats/char");
    let (target, chance) = (f(&q["target"]), f(&q["chance"]));
    // c is the unigram entropy of the held-out targets, in nats: about 3.3 for Shakespeare.
    assert!((3.0..3.6).contains(&chance), "{chance}");
    assert_eq!(target, 3.25);
    assert_eq!(r["status"], "ok", "{}", r["error"]);
    let curve = q["curve"].as_array().unwrap();
    let first = curve
        .iter()
        .find(|p| f(&p["value"]) <= target)
        .expect("an eval at or below T");
    assert_eq!(f(&r["ett_j"]), f(&first["energy_j"]));
    assert!(curve
        .iter()
        .take_while(|p| p != &first)
        .all(|p| f(&p["value"]) > target));
    let jpp = f(&r["jpp"]);
    assert!((jpp - f(&r["ett_j"]) / (100.0 * (chance - target))).abs() < 1e-9 * jpp);
    let label = r["jpp_label"].as_str().unwrap();
    assert!(
        label.contains("lower is better") && label.contains("J per 0.01"),
        "{label}"
    );
    assert!(q["final_binomial_sd"].is_null());
    // The eval is a loss in nats: it started near ln 256 and fell.
    assert!(f(&q["best"]) <= target);
    assert_eq!(r["model"]["kind"], "gpt");

    for v in ["bf16-amp", "f16-amp", "unstructured-50"] {
        let r = ran(&t, "tiny-gpt", v);
        assert_eq!(r["quality"]["direction"], "lower", "{v}");
    }
    let s = ran(&t, "tiny-gpt", "structured-50");
    let spec = &s["variant"]["pruning_schedule"]["spec_after"];
    assert_eq!(spec["kept_heads"], 2, "{spec}");
    assert_eq!(spec["ff_hidden"], 32, "{spec}");
    let layers = s["variant"]["pruning_schedule"]["layers"]
        .as_array()
        .unwrap();
    assert!(layers.iter().any(|l| l["unit"] == "head"));
    assert!(layers.iter().any(|l| l["unit"] == "hidden unit"));

    // Synthetic text: the 5-gram model is fitted and sampled inside the window.
    let syn = ran(&t, "tiny-gpt", "synthetic-ngram");
    let names: Vec<&str> = syn["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names[..2], ["generator-fit", "sample"], "{names:?}");
    let sy = &syn["variant"]["synthetic"];
    assert_eq!(sy["generator"], "ngram");
    assert!(f(&sy["fit_flops"]) > 0.0 && f(&sy["sample_flops"]) > 0.0);
    assert!(f(&sy["synthetic_characters"]) > 4.0e6);
    let mixed = ran(&t, "tiny-gpt", "mixed-50-ngram");
    let m = &mixed["variant"]["synthetic"];
    assert!((f(&m["real_characters"]) - f(&m["synthetic_characters"])).abs() <= 1.0);

    // Fine-tune: Austen (bytes) -> Shakespeare; the source is pretrained by the run.
    let ft = ran(&t, "tiny-gpt", "finetune");
    let ck = &ft["variant"]["checkpoint"];
    assert!(ck.is_object(), "{}", ft["variant"]);
    assert!(f(&ck["cumulative_energy_j"]) > f(&ck["incremental_energy_j"]));

    // The report says which way is better everywhere, with nothing special-cased.
    let out = t.res.join("report");
    let o = jb(&[
        "report",
        t.res.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let md = std::fs::read_to_string(out.join("leaderboard.md")).unwrap();
    assert!(
        md.contains("## tiny-gpt: held-out-loss (lower is better) target T = 3.2500, chance c = "),
        "{md}"
    );
    assert!(md.contains("J per 0.01 nats/char @ 3.2500"), "{md}");
    let csv = std::fs::read_to_string(out.join("leaderboard.csv")).unwrap();
    assert!(
        csv.contains("tiny-gpt,held-out-loss,lower,nats/char,3.25,"),
        "{csv}"
    );
    let tex = std::fs::read_to_string(out.join("leaderboard.tex")).unwrap();
    assert!(tex.contains("held-out-loss, lower is better"), "{tex}");
    assert!(tex.contains("J per 0.01 nats/char"), "{tex}");
}

#[test]
fn resnet_variants_run_with_batch_norm_and_augmentation() {
    let t = tasks();
    let r = ran(&t, "tiny-resnet", "f32");
    assert_eq!(r["quality"]["metric"], "accuracy");
    assert!(r["quality"].get("direction").is_none_or(|d| d == "higher"));
    assert_eq!(r["status"], "ok", "{}", r["error"]);
    assert_eq!(r["model"]["kind"], "resnet");
    for v in ["bf16-amp", "unstructured-50", "synthetic-gaussian"] {
        ran(&t, "tiny-resnet", v);
    }
    let s = ran(&t, "tiny-resnet", "structured-50");
    assert_eq!(
        s["variant"]["pruning_schedule"]["spec_after"]["inner"],
        serde_json::json!([2, 4, 4])
    );
    assert!(
        f(&s["flops"]["forward_per_sample"]) < f(&r["flops"]["forward_per_sample"]),
        "a structurally pruned ResNet is smaller"
    );
}

fn assert_usage_error(o: &Output, needles: &[&str]) {
    assert_eq!(o.status.code(), Some(2), "{}", stderr(o));
    let e = stderr(o);
    let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {e}");
    for n in needles {
        assert!(e.contains(n), "missing {n:?} in: {e}");
    }
}

/// Variants that make no sense and bad task files: one line, exit 2, nothing written.
#[test]
fn bad_workload_inputs_are_usage_errors() {
    let t = tasks();
    let (o, _) = run(&t, "tiny-gpt", "synthetic-gmm");
    assert_usage_error(&o, &["ngram"]);
    let (o, _) = run(&t, "tiny-resnet", "synthetic-ngram");
    assert_usage_error(&o, &["text"]);
    let (o, _) = run(&t, "tiny-resnet", "finetune");
    assert_usage_error(&o, &["checkpoint"]);
    // A loss target above chance, an unknown metric.
    let bad = |name: &str, text: String| -> PathBuf {
        let p = t.models.join(format!("{name}.toml"));
        std::fs::write(&p, text).unwrap();
        p
    };
    let above = bad("above", gpt_task("above", "shakespeare", "", 3.5));
    let o = jb(&[
        "run",
        "--task",
        above.to_str().unwrap(),
        "--results",
        t.res.to_str().unwrap(),
    ]);
    assert_usage_error(&o, &["target.value", "chance"]);
    let unknown = bad(
        "unknown",
        gpt_task("unknown", "shakespeare", "", 3.25).replace("held-out-loss", "bleu"),
    );
    let o = jb(&[
        "run",
        "--task",
        unknown.to_str().unwrap(),
        "--results",
        t.res.to_str().unwrap(),
    ]);
    assert_usage_error(&o, &["bleu"]);
    assert!(
        !t.res.join("runs").exists() || std::fs::read_dir(t.res.join("runs")).unwrap().count() == 0
    );
}

/// A corpus that is not the shipped one (its checksum is listed and differs) is refused.
#[test]
fn a_corrupt_corpus_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shakespeare");
    std::fs::create_dir(&data).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare/shakespeare.txt.gz");
    let mut bytes = std::fs::read(&shipped).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(data.join("shakespeare.txt.gz"), &bytes).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/SHA256SUMS"),
        dir.path().join("SHA256SUMS"),
    )
    .unwrap();
    let o = jb(&[
        "run",
        "--task",
        "shakespeare-gpt-mini",
        "--data-dir",
        data.to_str().unwrap(),
        "--results",
        dir.path().join("res").to_str().unwrap(),
        "--idle-s",
        "0",
    ]);
    assert_usage_error(&o, &["shakespeare.txt.gz"]);
}

/// Every shipped task declares the chance level its shipped data gives (the majority-class
/// rate, or for a loss the unigram entropy of the held-out targets), as a run computes it.
#[test]
fn shipped_chance_levels_match_the_data() {
    let dir = joulebench::spec::task::default_models_dir();
    for spec in joulebench::spec::task::load_all(&dir).unwrap() {
        let data = joulebench::data::load(spec.dataset, None).unwrap();
        let c = joulebench::engine::prepare::eval_chance(&spec, &data).unwrap();
        assert!(
            (c - spec.target.chance).abs() < 1e-4,
            "{}: declared chance {} but the shipped data gives {c}",
            spec.name,
            spec.target.chance
        );
    }
}
