//! Kill at random (issue 20): `sweep`, `run`, `merge` and `report` on a real small task
//! (`digits-mlp`), each killed with SIGKILL at a seeded random moment of its uninterrupted
//! duration, then checked:
//! - every run file present is complete and parses;
//! - the temp files a killed writer leaves are never read as data: the folder's report equals
//!   the report of a clean copy holding only its finished files;
//! - a resumed `sweep` redoes exactly the missing entries and leaves the finished ones
//!   byte-identical; a rerun `merge` ends with exactly the runs of an uninterrupted merge;
//! - a killed `report` leaves each leaderboard file either absent or complete, and the rerun
//!   equals the uninterrupted report;
//! - the next command on the folder (the resumed sweep, `run --overwrite`, the rerun merge or
//!   report) removes every temp file the killed one left: none is left after it.
//!
//! `JOULEBENCH_KILL_TRIALS` trials (default 10, what `cargo test` and `.ci/run` run;
//! `scripts/kill-test.sh` runs 100), commands in turn, kill moments from a fixed seed
//! (`JOULEBENCH_KILL_SEED`), so a failure repeats. The figures are printed as one summary line.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

const COMMON: [&str; 4] = ["--meter", "estimate", "--device", "cpu"];

mod common;

use common::command as jb_cmd;

fn jb(args: &[&str]) -> Output {
    jb_cmd(args).output().expect("run joulebench")
}

fn ok(args: &[&str]) -> Output {
    let o = jb(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "joulebench {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// SplitMix64: the kill moments, repeatable from the seed.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn is_temp(name: &str) -> bool {
    name.starts_with('.') || name.ends_with(".tmp")
}

/// Run file name -> bytes, for the names a reader takes as run files.
fn runs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir.join("runs")) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_temp(&name) && name.ends_with(".json") {
            out.insert(name, std::fs::read(e.path()).unwrap());
        }
    }
    out
}

/// Every run file present is a complete record: it parses, and its run id is its name.
fn assert_complete(dir: &Path, what: &str) {
    for (name, bytes) in runs(dir) {
        let v: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{what}: run file {name} does not parse: {e}"));
        for key in ["schema_version", "energy", "quality", "status", "config"] {
            assert!(v.get(key).is_some(), "{what}: run file {name} lacks {key}");
        }
        assert_eq!(
            format!("{}.json", v["run_id"].as_str().unwrap_or("")),
            name,
            "{what}"
        );
    }
}

/// Temp files anywhere under `dir` (what a killed writer leaves).
fn temp_files(dir: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                n += temp_files(&p);
            } else if is_temp(&e.file_name().to_string_lossy()) {
                n += 1;
            }
        }
    }
    n
}

/// The finished files of a results folder, without temp files and without reports.
fn clean_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    // A command killed before it made the folder leaves nothing to copy.
    let Ok(rd) = std::fs::read_dir(from) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let target = to.join(&name);
        if is_temp(&name) || name.starts_with("leaderboard.") || name == "locks" {
            continue;
        }
        if e.path().is_dir() {
            clean_copy(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

const REPORTS: [&str; 3] = ["leaderboard.md", "leaderboard.csv", "leaderboard.json"];

/// A report's files without the lines that name the binary or the folders.
fn report_files(out: &Path, folders: &[&Path]) -> BTreeMap<String, Option<String>> {
    REPORTS
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(out.join(name)).ok().map(|t| {
                t.lines()
                    .filter(|l| !l.to_ascii_lowercase().contains("generated"))
                    .map(|l| {
                        folders
                            .iter()
                            .fold(l.to_string(), |l, f| l.replace(s(f), "DIR"))
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            (name.to_string(), text)
        })
        .collect()
}

/// `report DIR --out OUT`: exit code and the files.
fn report_of(dir: &Path, out: &Path) -> (Option<i32>, BTreeMap<String, Option<String>>) {
    let o = jb(&["report", s(dir), "--out", s(out)]);
    (o.status.code(), report_files(out, &[dir, out]))
}

/// The report of `dir` equals the report of a clean copy of its finished files.
fn assert_no_temp_read_as_data(dir: &Path, scratch: &Path, what: &str) {
    let clean = scratch.join("clean");
    clean_copy(dir, &clean);
    let got = report_of(dir, &scratch.join("out-dirty"));
    let want = report_of(&clean, &scratch.join("out-clean"));
    assert_eq!(got, want, "{what}");
}

/// Start `args`, SIGKILL it after `delay` unless it ended first; true when it was killed.
fn kill_after(args: &[&str], delay: Duration) -> bool {
    let mut child = jb_cmd(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < delay {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let killed = child.try_wait().unwrap().is_none();
    child.kill().ok();
    child.wait().unwrap();
    killed
}

fn as_str(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn timed(args: &[&str]) -> Duration {
    let t0 = Instant::now();
    ok(args);
    t0.elapsed()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a whole number, got {v:?}"))
        })
        .unwrap_or(default)
}

#[derive(Default)]
struct Tally {
    trials: usize,
    killed: usize,
    temp_left: usize,
    temp_after_rerun: usize,
}

#[test]
fn killed_at_random_nothing_finished_is_lost_or_misread() {
    let trials = env_number("JOULEBENCH_KILL_TRIALS", 10) as usize;
    let mut rng = Rng(env_number("JOULEBENCH_KILL_SEED", 20_261_207));
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let suite = t.join("suite.toml");
    std::fs::write(
        &suite,
        "name = \"kill\"\ndescription = \"kill at random\"\ntasks = [\"digits-mlp\"]\nvariants = [\"f32\", \"unstructured-50\"]\nseeds = 2\norder = \"randomised\"\nidle_s = 0.0\ncooldown_s = 0.0\n",
    )
    .unwrap();
    let plan = t.join("plan.json");
    ok(&["sweep", "plan", "--config", s(&suite), "--out", s(&plan)]);

    // The uninterrupted references and their durations.
    let sweep_args = |dir: &Path| -> Vec<String> {
        ["sweep", "--plan", s(&plan), "--results", s(dir)]
            .iter()
            .chain(COMMON.iter())
            .map(|a| a.to_string())
            .collect()
    };
    let run_args = |dir: &Path| -> Vec<String> {
        [
            "run",
            "--task",
            "digits-mlp",
            "--seeds",
            "3",
            "--idle-s",
            "0",
            "--cooldown-s",
            "0",
            "--results",
            s(dir),
        ]
        .iter()
        .chain(COMMON.iter())
        .map(|a| a.to_string())
        .collect()
    };
    let refs = t.join("ref");
    let sweep_t = timed(&as_str(&sweep_args(&refs.join("sweep"))));
    let run_t = timed(&as_str(&run_args(&refs.join("run"))));
    let (s0, s1) = (refs.join("s0"), refs.join("s1"));
    for (i, dir) in [&s0, &s1].iter().enumerate() {
        let mut a = sweep_args(dir);
        a.extend(["--shard-count", "2", "--shard-index"].map(String::from));
        a.push(i.to_string());
        ok(&as_str(&a));
    }
    let merge_args = |into: &Path| -> Vec<String> {
        ["merge", s(&s0), s(&s1), "--into", s(into)]
            .iter()
            .map(|a| a.to_string())
            .collect()
    };
    let merged = refs.join("merged");
    let merge_t = timed(&as_str(&merge_args(&merged)));
    let finished = refs.join("finished");
    clean_copy(&refs.join("sweep"), &finished);
    let report_t = timed(&["report", s(&finished), "--out", s(&refs.join("report-t"))]);
    let want_report = report_of(&finished, &refs.join("report-ref"));
    assert_eq!(want_report.0, Some(0));
    let planned = runs(&refs.join("sweep")).len();
    assert_eq!(planned, 4);

    let mut tally: BTreeMap<&str, Tally> = BTreeMap::new();
    for trial in 0..trials {
        let dir = t.join(format!("trial-{trial}"));
        let scratch = t.join(format!("scratch-{trial}"));
        let kind = ["sweep", "run", "merge", "report"][trial % 4];
        let moment = |d: Duration, rng: &mut Rng| d.mul_f64(1.1 * rng.unit());
        let what = format!("trial {trial} ({kind})");
        let killed = match kind {
            "sweep" => {
                let args = sweep_args(&dir);
                let killed = kill_after(&as_str(&args), moment(sweep_t, &mut rng));
                assert_complete(&dir, &what);
                let before = runs(&dir);
                let left = temp_files(&dir);
                assert_no_temp_read_as_data(&dir, &scratch, &what);
                let o = ok(&as_str(&args));
                let err = String::from_utf8_lossy(&o.stderr);
                if dir.join("plan.json").is_file() && !before.is_empty() {
                    assert!(
                        err.contains(&format!(
                            "{} of {planned} runs were already done",
                            before.len()
                        )),
                        "{what}: {err}"
                    );
                }
                tally.entry(kind).or_default().temp_after_rerun += temp_files(&dir);
                let after = runs(&dir);
                assert_eq!(after.len(), planned, "{what}: every planned run once");
                for (name, bytes) in &before {
                    assert_eq!(&after[name], bytes, "{what}: {name} was re-run");
                }
                tally.entry(kind).or_default().temp_left += left;
                killed
            }
            "run" => {
                let killed = kill_after(&as_str(&run_args(&dir)), moment(run_t, &mut rng));
                assert_complete(&dir, &what);
                tally.entry(kind).or_default().temp_left += temp_files(&dir);
                assert_no_temp_read_as_data(&dir, &scratch, &what);
                let mut again = run_args(&dir);
                again.push("--overwrite".into());
                ok(&as_str(&again));
                tally.entry(kind).or_default().temp_after_rerun += temp_files(&dir);
                assert_eq!(runs(&dir).len(), 3, "{what}: the rerun's runs");
                killed
            }
            "merge" => {
                let args = merge_args(&dir);
                let killed = kill_after(&as_str(&args), moment(merge_t, &mut rng));
                assert_complete(&dir, &what);
                tally.entry(kind).or_default().temp_left += temp_files(&dir);
                ok(&as_str(&args));
                tally.entry(kind).or_default().temp_after_rerun += temp_files(&dir);
                assert_eq!(runs(&dir), runs(&merged), "{what}: the merge's runs");
                assert_no_temp_read_as_data(&dir, &scratch, &what);
                killed
            }
            _ => {
                clean_copy(&finished, &dir);
                let args = ["report", s(&dir)];
                let killed = kill_after(&args, moment(report_t, &mut rng));
                tally.entry(kind).or_default().temp_left += temp_files(&dir);
                // Each leaderboard file is absent or complete.
                for (name, text) in report_files(&dir, &[&dir]) {
                    if let Some(text) = text {
                        assert_eq!(
                            Some(&text),
                            want_report.1[&name].as_ref(),
                            "{what}: {name} is incomplete"
                        );
                    }
                }
                let again = report_of(&dir, &scratch.join("again"));
                assert_eq!(again, want_report, "{what}: the rerun report");
                // The rerun into the folder itself writes the files the killed one was writing.
                ok(&args);
                tally.entry(kind).or_default().temp_after_rerun += temp_files(&dir);
                killed
            }
        };
        let e = tally.entry(kind).or_default();
        e.trials += 1;
        e.killed += usize::from(killed);
    }
    let parts: Vec<String> = tally
        .iter()
        .map(|(k, v)| {
            format!(
                "{k} {} ({} killed while running, {} temp files left, {} after the next command)",
                v.trials, v.killed, v.temp_left, v.temp_after_rerun
            )
        })
        .collect();
    let left: usize = tally.values().map(|v| v.temp_after_rerun).sum();
    eprintln!(
        "kill-at-random: {trials} trials: {}; no run file lost or incomplete, no temp file read as data, every resume exact",
        parts.join(", ")
    );
    assert_eq!(
        left,
        0,
        "temp files outlived the next command: {}",
        parts.join(", ")
    );
}
