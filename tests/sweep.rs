//! End-to-end tests of `joulebench sweep` and `joulebench merge` (issues 4 and 5): a sweep
//! killed with SIGKILL and started again ends with every planned run present exactly once and
//! no finished run re-run; shards merged equal the same plan run in one process; merge refuses
//! conflicts and names what to resubmit; three shards merged in any order (or one at a time,
//! or twice) give the same folder byte for byte; bad input is one line on stderr and exit
//! code 2.
//! Real (seconds-long) digits-mlp trainings with the labelled estimate meter.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::command as jb_cmd;

fn jb(args: &[&str]) -> Output {
    jb_cmd(args).output().expect("spawn joulebench")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_usage_error(o: &Output, needles: &[&str]) {
    let e = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr: {e}");
    let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {e}");
    for n in needles {
        assert!(e.contains(n), "missing {n:?} in: {e}");
    }
}

/// A suite file: digits-mlp, two variants that reach T (so a finished sweep exits 0; "all" would
/// bring generators that do not), `seeds` seeds, no idle baseline or cooldown.
fn suite(dir: &Path, seeds: u64) -> PathBuf {
    let p = dir.join(format!("suite-{seeds}.toml"));
    std::fs::write(
        &p,
        format!(
            "name = \"test-{seeds}\"\ndescription = \"test\"\ntasks = [\"digits-mlp\"]\nvariants = [\"f32\", \"unstructured-50\"]\nseeds = {seeds}\norder = \"randomised\"\nidle_s = 0.0\ncooldown_s = 0.0\n"
        ),
    )
    .unwrap();
    p
}

/// run file name -> (plan entry id, status, bytes).
fn runs(dir: &Path) -> BTreeMap<String, (String, String, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir.join("runs")) else {
        return out;
    };
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let bytes = std::fs::read(e.path()).unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        out.insert(
            name,
            (
                v["plan"]["entry_id"].as_str().unwrap_or("").to_string(),
                v["status"].as_str().unwrap_or("").to_string(),
                bytes,
            ),
        );
    }
    out
}

fn plan_entries(path: &Path) -> Vec<String> {
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

fn sorted_ids(r: &BTreeMap<String, (String, String, Vec<u8>)>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = r.values().map(|(i, s, _)| (i.clone(), s.clone())).collect();
    v.sort();
    v
}

/// `sweep --config CFG --results RES` with the labelled estimate on the CPU.
fn sweep_args<'a>(cfg: &'a str, res: &'a str) -> [&'a str; 9] {
    [
        "sweep",
        "--config",
        cfg,
        "--results",
        res,
        "--meter",
        "estimate",
        "--device",
        "cpu",
    ]
}

#[test]
fn a_killed_sweep_resumes_with_every_run_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = suite(tmp.path(), 4);
    let res = tmp.path().join("res");
    let (cfg_s, res_s) = (cfg.to_str().unwrap(), res.to_str().unwrap());
    let args = sweep_args(cfg_s, res_s);
    let mut child = jb_cmd(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it (SIGKILL) as soon as the first run is published, mid-way through the next.
    let t0 = Instant::now();
    while runs(&res).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "no run within 10 min"
        );
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // A digits-mlp run takes tens of milliseconds on a quiet machine: kill at once, so the
    // sweep (8 runs) is still going.
    child.kill().ok();
    child.wait().unwrap();
    let before = runs(&res);
    assert!(!before.is_empty() && before.len() < 8, "{}", before.len());

    let o = jb(&args);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "stderr: {err}");
    let after = runs(&res);
    let planned = plan_entries(&res.join("plan.json"));
    assert_eq!(after.len(), planned.len());
    let mut ids: Vec<&String> = after.values().map(|(i, _, _)| i).collect();
    ids.sort();
    let mut want: Vec<&String> = planned.iter().collect();
    want.sort();
    assert_eq!(ids, want, "every planned run exactly once");
    for (name, (_, _, bytes)) in &before {
        assert_eq!(&after[name].2, bytes, "{name} was re-run");
    }
    assert!(
        err.contains(&format!("{} of 8 runs were already done", before.len())),
        "{err}"
    );
    assert!(err.contains("N = 4 seeds"), "small N is said: {err}");
    assert!(
        out.contains("digits-mlp"),
        "the leaderboard is printed: {out}"
    );

    // A third time: nothing to do.
    let o = jb(&args);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("8 of 8 runs were already done"));
    assert_eq!(runs(&res).len(), 8);
}

#[test]
fn shards_merge_into_the_one_process_result_and_conflicts_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cfg = suite(t, 1);
    let plan = t.join("plan.json");
    let (plan_s, cfg_s) = (plan.to_str().unwrap(), cfg.to_str().unwrap());
    let o = jb(&["sweep", "plan", "--config", cfg_s, "--out", plan_s]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let common = ["--meter", "estimate", "--device", "cpu"];

    // Bad input first (nothing trains).
    let o = jb(&[
        "sweep",
        "--plan",
        plan_s,
        "--shard-index",
        "2",
        "--shard-count",
        "2",
    ]);
    assert_usage_error(&o, &["out of range", "0-1"]);
    let o = jb(&["sweep", "--plan", plan_s, "--shard-index", "0"]);
    assert_usage_error(&o, &["--shard-count"]);
    let edited = t.join("edited.json");
    let body = std::fs::read_to_string(&plan).unwrap();
    let edited_body = body.replacen("\"seed\": 1", "\"seed\": 7", 1);
    assert_ne!(edited_body, body, "the hand edit must change the plan");
    std::fs::write(&edited, edited_body).unwrap();
    let o = jb(&["sweep", "--plan", edited.to_str().unwrap()]);
    assert_usage_error(&o, &["hash mismatch", "edited.json"]);

    // Shard 0 via the Kubernetes variable, shard 1 via the flag.
    let (s0, s1, one) = (t.join("s0"), t.join("s1"), t.join("one"));
    let mut c = jb_cmd(&["sweep", "--plan", plan_s, "--shard-count", "2", "--results"]);
    c.arg(&s0).args(common).env("JOB_COMPLETION_INDEX", "0");
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let mut args = vec![
        "sweep",
        "--plan",
        plan_s,
        "--shard-count",
        "2",
        "--shard-index",
        "1",
    ];
    args.extend(["--results", s1.to_str().unwrap()]);
    args.extend(common);
    let o = jb(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let (r0, r1) = (runs(&s0), runs(&s1));
    assert_eq!((r0.len(), r1.len()), (1, 1));
    let rec: Value = serde_json::from_slice(&r0.values().next().unwrap().2).unwrap();
    assert_eq!(rec["scheduler"]["engine"], "kubernetes");
    assert_eq!(rec["scheduler"]["shard_index"], 0);
    assert_eq!(rec["plan"]["index"].as_u64().unwrap() % 2, 0);
    assert!(rec["isolation"]["verdict"].is_string());

    // The same plan in one process.
    let mut args = vec![
        "sweep",
        "--plan",
        plan_s,
        "--results",
        one.to_str().unwrap(),
    ];
    args.extend(common);
    let o = jb(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));

    let m = t.join("merged");
    let merge = |into: &Path, extra: &[&str]| {
        let mut a = vec![
            "merge",
            s0.to_str().unwrap(),
            s1.to_str().unwrap(),
            "--into",
        ];
        a.push(into.to_str().unwrap());
        a.extend_from_slice(extra);
        jb(&a)
    };
    let o = merge(&m, &["--plan", plan_s, "--shard-count", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("2 of 2 entries present"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(sorted_ids(&runs(&m)), sorted_ids(&runs(&one)));
    assert!(m.join("events").read_dir().unwrap().count() == 2);
    // Repeatable: nothing new, nothing duplicated.
    let o = merge(&m, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("0 runs copied (0 replacing an older copy), 2 duplicates skipped")
    );
    assert_eq!(runs(&m).len(), 2);

    // A missing run: exit 1 and the --array= list to resubmit.
    let gone = r1.keys().next().unwrap();
    let saved = std::fs::read(s1.join("runs").join(gone)).unwrap();
    std::fs::remove_file(s1.join("runs").join(gone)).unwrap();
    let o = merge(&t.join("m2"), &["--shard-count", "2"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("resubmit: --array=1"),
        "{}",
        text(&o.stdout)
    );

    // A rerun shard's file replaces the target's older copy.
    let mut v: Value = serde_json::from_slice(&saved).unwrap();
    v["ett_j"] = Value::from(1.0);
    let rerun = serde_json::to_vec(&v).unwrap();
    std::fs::write(s1.join("runs").join(gone), &rerun).unwrap();
    let o = merge(&m, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("1 runs copied (1 replacing"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(runs(&m)[gone].2, rerun);
    // Two sources with different runs under one id: refused, nothing written.
    std::fs::write(s0.join("runs").join(gone), &saved).unwrap();
    let o = merge(&m, &[]);
    assert_usage_error(&o, &["conflict", gone.as_str()]);
    assert_eq!(runs(&m)[gone].2, rerun, "merge wrote nothing");
    std::fs::remove_file(s0.join("runs").join(gone)).unwrap();

    // A folder of another plan or of plain runs is refused before anything trains.
    let other = suite(t, 3);
    let mut args = vec!["sweep", "--config", other.to_str().unwrap(), "--results"];
    args.push(s0.to_str().unwrap());
    args.extend(common);
    assert_usage_error(&jb(&args), &["holds plan", "choose another --results"]);
    let name = r0.keys().next().unwrap();
    let mut v: Value = serde_json::from_slice(&r0[name].2).unwrap();
    v["plan"] = Value::Null;
    std::fs::write(s0.join("runs").join(name), serde_json::to_vec(&v).unwrap()).unwrap();
    let mut args = vec![
        "sweep",
        "--plan",
        plan_s,
        "--shard-count",
        "2",
        "--shard-index",
        "0",
    ];
    args.extend(["--results", s0.to_str().unwrap()]);
    args.extend(common);
    assert_usage_error(&jb(&args), &["no plan", "choose another --results"]);
}

/// Every file under `dir` (relative path -> bytes), locks left out.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap().filter_map(Result::ok) {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel.starts_with("locks") {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Issue 20, item 4: three shards merged in each of the 6 orders give the same folder, byte for
/// byte; merging again changes nothing; merging one shard at a time gives the same folder too.
#[test]
fn merging_three_shards_is_order_independent_and_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cfg = suite(t, 3);
    let plan = t.join("plan.json");
    let (plan_s, cfg_s) = (plan.to_str().unwrap(), cfg.to_str().unwrap());
    let o = jb(&["sweep", "plan", "--config", cfg_s, "--out", plan_s]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let shards: Vec<PathBuf> = (0..3).map(|i| t.join(format!("s{i}"))).collect();
    for (i, s) in shards.iter().enumerate() {
        let i = i.to_string();
        let o = jb(&[
            "sweep",
            "--plan",
            plan_s,
            "--shard-count",
            "3",
            "--shard-index",
            &i,
            "--results",
            s.to_str().unwrap(),
            "--meter",
            "estimate",
            "--device",
            "cpu",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        assert_eq!(runs(s).len(), 2, "shard {i}");
    }
    let merge = |order: &[usize], into: &Path| {
        let mut a: Vec<String> = vec!["merge".into()];
        a.extend(order.iter().map(|&k| shards[k].display().to_string()));
        a.extend(["--into".into(), into.display().to_string()]);
        a.extend([
            "--plan".into(),
            plan_s.into(),
            "--shard-count".into(),
            "3".into(),
        ]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        jb(&a)
    };
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let mut first: Option<BTreeMap<String, Vec<u8>>> = None;
    for (k, order) in orders.iter().enumerate() {
        let into = t.join(format!("m{k}"));
        let o = merge(order, &into);
        assert_eq!(o.status.code(), Some(0), "{order:?}: {}", text(&o.stderr));
        assert!(
            text(&o.stdout).contains("6 of 6 entries present"),
            "{order:?}: {}",
            text(&o.stdout)
        );
        let got = tree(&into);
        assert_eq!(runs(&into).len(), 6, "{order:?}");
        match &first {
            None => first = Some(got),
            Some(f) => {
                let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
                assert_eq!(names(f), names(&got), "{order:?}: the same files");
                assert!(f == &got, "{order:?}: the same bytes");
            }
        }
        // Idempotent: the same merge again copies nothing and changes nothing.
        let o = merge(order, &into);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        assert!(
            text(&o.stdout).contains("0 runs copied"),
            "{}",
            text(&o.stdout)
        );
        assert!(
            first.as_ref() == Some(&tree(&into)),
            "{order:?} merged twice"
        );
    }
    // One shard at a time, in another order, ends in the same folder.
    let step = t.join("step");
    for (n, k) in [2, 0, 1].into_iter().enumerate() {
        let mut a = vec!["merge".to_string(), shards[k].display().to_string()];
        a.extend(["--into".into(), step.display().to_string()]);
        a.extend([
            "--plan".into(),
            plan_s.into(),
            "--shard-count".into(),
            "3".into(),
        ]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let o = jb(&a);
        // Exit 1 while plan entries are still missing, 0 once all six are in.
        let (want, present) = if n < 2 { (1, 2 * (n + 1)) } else { (0, 6) };
        assert_eq!(o.status.code(), Some(want), "{}", text(&o.stderr));
        let out = text(&o.stdout);
        assert!(
            out.contains(&format!("{present} of 6 entries present")),
            "{out}"
        );
    }
    assert!(
        first.as_ref() == Some(&tree(&step)),
        "merged one shard at a time"
    );
}

#[test]
fn emit_prints_engine_glue() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cfg = suite(t, 4);
    let plan = t.join("plan.json");
    let plan_s = plan.to_str().unwrap();
    let o = jb(&[
        "sweep",
        "plan",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        plan_s,
    ]);
    assert_eq!(o.status.code(), Some(0));
    let emit = |engine: &str, extra: &[&str]| {
        let mut a = vec![
            "sweep",
            "emit",
            engine,
            "--plan",
            plan_s,
            "--shard-count",
            "4",
        ];
        a.extend_from_slice(extra);
        jb(&a)
    };
    let o = emit(
        "slurm",
        &["--results", "/shared/r", "--isolation", "exclusive"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let s = text(&o.stdout);
    for needle in [
        "#SBATCH --array=0-3",
        "#SBATCH --exclusive",
        "#SBATCH --output=/shared/r/logs/%A_%a.out",
        "--dependency=afterany:",
        "--shard-count \"$SHARDS\"",
        "RESULTS='/shared/r'",
        "$RESULTS/shards/$SLURM_ARRAY_TASK_ID",
    ] {
        assert!(s.contains(needle), "missing {needle} in:\n{s}");
    }
    let s = text(&emit("slurm", &[]).stdout);
    assert!(s.contains("#SBATCH --gres=gpu:1"), "{s}");
    let s = text(&emit("k8s", &[]).stdout);
    assert!(s.contains("completionMode: Indexed") && s.contains("$(JOB_COMPLETION_INDEX)"));
    let s = text(&emit("parallel", &[]).stdout);
    assert!(
        s.contains("parallel ") && s.contains("::: $(seq 0 3)"),
        "{s}"
    );
    assert_usage_error(
        &jb(&[
            "sweep",
            "emit",
            "slurm",
            "--plan",
            plan_s,
            "--shard-count",
            "9",
        ]),
        &["more than the plan's 8 runs"],
    );
}

/// A suite whose `[[exec]]` program (the fake trainer of tests/exec.rs) trains digits-mlp
/// beside joulebench's own runs: killed during the program's run and started again, every
/// planned run is there exactly once, the finished ones untouched; merge copies the logs.
#[test]
fn a_suite_with_an_exec_entry_resumes_after_a_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/exec/fake-trainer.sh");
    let cfg = tmp.path().join("suite-exec.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"exec-test\"\ndescription = \"test\"\ntasks = [\"digits-mlp\"]\nvariants = [\"f32\"]\nseeds = 2\norder = \"interleaved\"\nidle_s = 0.0\ncooldown_s = 0.0\n\n[[exec]]\nname = \"fake\"\ncommand = [\"bash\", \"{}\", \"linger\", \"--variant\", \"{{variant}}\", \"--seed\", \"{{seed}}\"]\ntasks = [\"digits-mlp\"]\nvariants = [\"f32\"]\nstop_at_target = true\n",
            fake.display()
        ),
    )
    .unwrap();
    let res = tmp.path().join("res");
    let (cfg_s, res_s) = (cfg.to_str().unwrap(), res.to_str().unwrap());
    let args = sweep_args(cfg_s, res_s);
    let plan = jb(&["sweep", "plan", "--config", cfg_s]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stderr));
    let p: Value = serde_json::from_slice(&plan.stdout).unwrap();
    let order: Vec<String> = p["execution"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let e = &p["entries"][i.as_u64().unwrap() as usize];
            format!("{}{}", e["exec"].as_str().unwrap_or("native"), e["seed"])
        })
        .collect();
    assert_eq!(order, ["native1", "fake1", "native2", "fake2"]);
    // Kill it while the program of seed 1 runs (it lingers after its evals until stopped).
    let mut child = jb_cmd(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let log_of_exec = || {
        std::fs::read_dir(res.join("logs"))
            .map(|rd| rd.filter_map(Result::ok).count())
            .unwrap_or(0)
    };
    while log_of_exec() == 0 && t0.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().ok();
    child.wait().unwrap();
    let before = runs(&res);
    assert_eq!(before.len(), 1, "only the native seed-1 run finished");
    let o = jb(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let after = runs(&res);
    assert_eq!(after.len(), 4);
    let mut ids: Vec<String> = after.values().map(|(i, _, _)| i.clone()).collect();
    ids.sort();
    let mut want = plan_entries(&res.join("plan.json"));
    want.sort();
    assert_eq!(ids, want, "every planned run exactly once");
    for (name, (_, _, bytes)) in &before {
        assert_eq!(&after[name].2, bytes, "{name} was re-run");
    }
    let exec_runs: Vec<Value> = after
        .values()
        .map(|(_, _, b)| serde_json::from_slice::<Value>(b).unwrap())
        .filter(|v| v["exec"].is_object())
        .collect();
    assert_eq!(exec_runs.len(), 2);
    for v in &exec_runs {
        assert_eq!(v["status"], "ok");
        assert_eq!(v["exec"]["stopped_at_target"], true);
        assert_eq!(v["engine"]["label"], "exec: fake 1.0 [fake]");
        assert!(v["plan"]["entry_id"].is_string());
        assert!(
            v["exec"]["command"][4] == "f32",
            "{{variant}}: {}",
            v["exec"]["command"]
        );
    }
    // The killed run's temp log is not data: the leaderboard reads the four runs.
    let merged = tmp.path().join("merged");
    let o = jb(&["merge", res_s, "--into", merged.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    for v in &exec_runs {
        let id = v["run_id"].as_str().unwrap();
        assert!(merged.join("logs").join(format!("{id}.log")).is_file());
    }
}

/// Two `run`s of the same runs into one folder at once (issue 20: two such `run`s measured 40
/// runs and kept 20): the second is refused with one line before it measures anything, even
/// with `--overwrite`, and the first writes every run.
#[test]
fn a_second_run_of_the_same_runs_into_one_folder_at_once_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("res");
    let args = [
        "run",
        "--task",
        "digits-mlp",
        "--seeds",
        "3",
        "--idle-s",
        "0",
        // Cooldowns keep the first series (and its locks) alive for seconds.
        "--cooldown-s",
        "2",
        "--results",
        res.to_str().unwrap(),
        "--meter",
        "estimate",
        "--device",
        "cpu",
    ];
    let mut first = jb_cmd(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Its three locks are taken before its first run starts.
    let t0 = Instant::now();
    let locks = || {
        std::fs::read_dir(res.join("locks"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    while locks() < 3 {
        assert!(t0.elapsed() < Duration::from_secs(120), "no locks");
        assert!(first.try_wait().unwrap().is_none(), "the first run ended");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let second = jb(&[&args[..], &["--overwrite"]].concat());
    assert_usage_error(
        &second,
        &["digits-mlp--f32--seed-", "another joulebench process"],
    );
    assert!(first.wait().unwrap().success());
    let done = runs(&res);
    assert_eq!(done.len(), 3, "every run of the first is kept");
    // Once the first is done, a plain second `run` is refused by the finished files.
    assert_usage_error(&jb(&args), &["exists", "--overwrite replaces it"]);
    assert_eq!(runs(&res), done);
}

/// Two processes that fine-tune from the same missing source at once (issue 20: the source was
/// pretrained twice and one record lost, so a fine-tune's cumulative energy matched no
/// surviving file): the source is pretrained once, and both fine-tunes name that run and its
/// energy.
/// mnist-mlp (source mnist-rot90-mlp) pretrains for seconds, long enough for the two to
/// overlap: without the source's lock this test fails (the surviving source file is the
/// second pretraining, whose energy one fine-tune does not carry).
#[test]
fn two_fine_tunes_of_one_missing_source_at_once_pretrain_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let res = tmp.path().join("res");
    let args = |variant: &'static str| -> Vec<String> {
        [
            "run",
            "--task",
            "mnist-mlp",
            "--variant",
            variant,
            "--seeds",
            "1",
            "--idle-s",
            "0",
            "--cooldown-s",
            "0",
            "--results",
            res.to_str().unwrap(),
            "--meter",
            "estimate",
            "--device",
            "cpu",
        ]
        .map(String::from)
        .to_vec()
    };
    let children: Vec<_> = ["finetune", "finetune-freeze-fc0"]
        .into_iter()
        .map(|v| {
            let a = args(v);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            jb_cmd(&a)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        // Exit 1 is a run that did not reach T (the frozen fine-tune may not); never 2 or a
        // signal.
        let o = c.wait_with_output().unwrap();
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "{:?}: {}",
            o.status,
            text(&o.stderr)
        );
    }
    let files = runs(&res);
    let read = |name: &str| -> Value { serde_json::from_slice(&files[name].2).unwrap() };
    let sources: Vec<&String> = files
        .keys()
        .filter(|n| n.starts_with("mnist-rot90-mlp--f32--seed-1--"))
        .collect();
    assert_eq!(sources.len(), 1, "{:?}", files.keys().collect::<Vec<_>>());
    let source = read(sources[0]);
    let tunes: Vec<&String> = files
        .keys()
        .filter(|n| n.starts_with("mnist-mlp--finetune"))
        .collect();
    assert_eq!(tunes.len(), 2, "{:?}", files.keys().collect::<Vec<_>>());
    for t in tunes {
        let c = &read(t)["variant"]["checkpoint"];
        assert_eq!(c["source_run_id"], source["run_id"], "{t}");
        assert_eq!(
            c["energy"]["energy_j"], source["energy"]["total_j"],
            "{t}: its source's energy is the surviving file's"
        );
    }
}

/// `sweep --until-settled` (issue 34): seeds run in rounds and a comparison takes no more
/// once its verdict is settled. digits-mlp on Gaussian synthetic data never reaches T, so its
/// first seed settles "did not reach target": seeds 2-4 are not run; the baseline runs its
/// own 3 seeds and not the 4th, which no variant needs; the throughput track runs all 4. A
/// second sweep runs nothing, merge counts the 4 settled entries apart from missing ones, and
/// the report says which seeds were not run.
#[test]
fn until_settled_runs_seeds_only_while_a_verdict_is_open() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cfg = t.join("suite-settle.toml");
    std::fs::write(
        &cfg,
        "name = \"settle\"\ndescription = \"test\"\ntasks = [\"digits-mlp\"]\nvariants = [\"f32\", \"synthetic-gaussian\", \"random-tensors\"]\nseeds = 4\nidle_s = 0.0\ncooldown_s = 0.0\n",
    )
    .unwrap();
    let res = t.join("res");
    let (c, r) = (cfg.to_str().unwrap(), res.to_str().unwrap());
    let sweep = || {
        jb(&[
            "sweep",
            "--config",
            c,
            "--until-settled",
            "--results",
            r,
            "--meter",
            "estimate",
        ])
    };
    let o = sweep();
    let err = text(&o.stderr);
    assert!(
        err.contains("4 not needed (their verdicts were settled)"),
        "{err}"
    );
    let done = runs(&res);
    let mut seen: Vec<(String, u64)> = done
        .values()
        .map(|(_, _, b)| {
            let v: Value = serde_json::from_slice(b).unwrap();
            (
                v["variant"]["name"].as_str().unwrap().to_string(),
                v["seed"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    // The throughput track (random tensors) has no verdict: all 4 seeds.
    let want: Vec<(String, u64)> = [
        ("f32", 1),
        ("f32", 2),
        ("f32", 3),
        ("random-tensors", 1),
        ("random-tensors", 2),
        ("random-tensors", 3),
        ("random-tensors", 4),
        ("synthetic-gaussian", 1),
    ]
    .iter()
    .map(|(v, s)| (v.to_string(), *s))
    .collect();
    assert_eq!(seen, want, "{err}");
    let plan: Value =
        serde_json::from_slice(&std::fs::read(res.join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan["settings"]["until_settled"]["max_seeds"], 4);
    // Resumed: nothing to run.
    let o = sweep();
    let err = text(&o.stderr);
    assert!(
        err.contains("8 of 12 runs were already done") && err.contains("0 run now"),
        "{err}"
    );
    assert_eq!(runs(&res).len(), 8);
    // Merged into another folder with the plan: settled, not missing.
    let into = t.join("merged");
    let o = jb(&[
        "merge",
        r,
        "--into",
        into.to_str().unwrap(),
        "--plan",
        res.join("plan.json").to_str().unwrap(),
    ]);
    let out = text(&o.stdout);
    assert!(
        out.contains("0 missing") && out.contains("4 not needed (verdicts settled)"),
        "{out}{}",
        text(&o.stderr)
    );
    assert!(!out.contains("missing:"), "{out}");
    // The report says what the verdict took and which seeds were not run.
    let o = jb(&["report", "--format", "md", r]);
    let md = text(&o.stdout);
    assert!(
        md.contains("synthetic-gaussian")
            && md.contains("3 of 4 seeds not run as the verdict was settled")
            && md.contains("a paired seed missed T: settled after 1 of at most 4 seed pairs"),
        "{md}"
    );
    // --until-settled with a frozen plan is refused (the plan says how it runs).
    let o = jb(&[
        "sweep",
        "--plan",
        res.join("plan.json").to_str().unwrap(),
        "--until-settled",
        "--results",
        r,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}

/// Every folder under `dir` (and `dir` itself) with `mode`.
fn chmod_dirs(dir: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
    for e in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        if e.file_type().unwrap().is_dir() {
            chmod_dirs(&e.path(), mode);
        }
    }
}

/// Issue 20: a results folder made read-only in the middle of a sweep stops it with one line
/// naming the path and the OS error (exit 1); nothing already written changes, no temp file is
/// left, and once the folder is writable again the same command resumes and runs exactly the
/// missing entries. Permissions mean nothing to root, so where the test runs as root the
/// sweeps run as user `nobody` (65534) in a folder it owns.
#[test]
fn a_results_folder_made_read_only_mid_sweep_stops_cleanly_and_resumes() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    chmod_dirs(tmp.path(), 0o755);
    let cfg = suite(tmp.path(), 20);
    let res = tmp.path().join("res");
    std::fs::create_dir(&res).unwrap();
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    const NOBODY: u32 = 65534;
    if as_root {
        std::os::unix::fs::chown(&res, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let (cfg_s, res_s) = (cfg.to_str().unwrap(), res.to_str().unwrap());
    let args = sweep_args(cfg_s, res_s);
    let sweep = || {
        let mut c = jb_cmd(&args);
        if as_root {
            c.uid(NOBODY).gid(NOBODY);
        }
        c
    };
    let child = sweep()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while runs(&res).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "no run within 10 min"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    chmod_dirs(&res, 0o555);
    let o = child.wait_with_output().unwrap();
    let err = text(&o.stderr);
    let before = runs(&res);
    assert!(
        before.len() < 40,
        "the sweep ended before the folder became read-only"
    );
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one line: {err}");
    assert!(
        errors[0].contains(res_s) && errors[0].contains("Permission denied (os error 13)"),
        "names the path and the errno: {err}"
    );
    let leftovers: Vec<String> = tree(&res)
        .into_keys()
        .filter(|p| p.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    chmod_dirs(&res, 0o755);
    let o = sweep().output().unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "stderr: {err}");
    assert!(
        err.contains(&format!("{} of 40 runs were already done", before.len())),
        "{err}"
    );
    let after = runs(&res);
    assert_eq!(
        sorted_ids(&after)
            .into_iter()
            .map(|(i, _)| i)
            .collect::<Vec<_>>(),
        {
            let mut p = plan_entries(&res.join("plan.json"));
            p.sort();
            p
        },
        "every planned run exactly once"
    );
    for (name, (_, _, bytes)) in &before {
        assert_eq!(&after[name].2, bytes, "{name} changed");
    }
}
