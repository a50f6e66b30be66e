//! Sequential seeds in a sweep: which entries of a plan need not run because the verdict they
//! would feed is already settled.
//!
//! Owns: reading the finished runs of a plan from a results folder and applying
//! `stats::sequential` to each variant's comparison with its baseline, seed round by seed
//! round. The answer depends only on the run files, so `sweep` (before each entry, and on
//! every resume) and `merge` (to tell a settled entry from a missing one) agree.
//! Must not: run anything, or decide the execution order (`plan`).
//!
//! The rule, for a plan with `until_settled` (its seeds 1..=`max_seeds` run in rounds):
//! - a variant's entry for seed `s` is not needed when its comparison with the baseline over
//!   the seeds before `s` is settled (`stats::sequential::settle`: the interval clears or sits
//!   inside the noise band, or a paired seed missed T);
//! - the baseline's entry for seed `s` runs for its first `min_seeds` seeds (its own median and
//!   interval need them), and after that while any variant of its task still needs seed `s`;
//! - the comparison is judged on the finished pairs before `s` up to the first gap; while
//!   that prefix is not settled (a seed before `s` still running in another shard, say), the
//!   entry is needed: the rule never skips on a guess.
//!
//! Entries of other programs (`[[exec]]`) are compared with their own baseline in the same way.
//! The throughput track (random tensors: no target, no verdict) runs every seed.

use super::plan::PlanFile;
use crate::record::read;
use crate::stats::sequential;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Entry indexes of `plan` that need not run, given the plan's runs finished in `folder`.
/// Empty for a plan without `until_settled`. Unreadable run files are left to the caller (a
/// sweep reruns them, a merge reports them): here they count as not finished.
pub fn not_needed(plan: &PlanFile, folder: &Path) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    let Some(rule) = plan.settings.until_settled else {
        return out;
    };
    let seed_plan = rule.seed_plan();
    // entry id -> ETT of its finished run.
    let mut done: BTreeMap<String, f64> = BTreeMap::new();
    for path in read::run_files(folder).unwrap_or_default() {
        let Ok(rec) = read::read_run(&path) else {
            continue;
        };
        if let Some(p) = rec.plan.as_ref().filter(|p| p.hash == plan.hash) {
            done.insert(p.entry_id.clone(), rec.ett_or_inf());
        }
    }
    // (task, program) -> variant -> seed -> entry.
    type Group<'a> = BTreeMap<&'a str, BTreeMap<u64, &'a super::plan::Entry>>;
    let mut groups: BTreeMap<(&str, Option<&str>), Group> = BTreeMap::new();
    for e in &plan.entries {
        groups
            .entry((e.task.as_str(), e.exec.as_deref()))
            .or_default()
            .entry(e.variant.as_str())
            .or_default()
            .insert(e.seed, e);
    }
    for variants in groups.values() {
        let Some((base_name, base)) = variants
            .iter()
            .find(|(name, _)| plan.variant(name).is_some_and(|v| v.is_baseline()))
        else {
            continue;
        };
        let seeds: Vec<u64> = base.keys().copied().collect();
        // Seeds (in order) at which each variant's entry is still needed.
        let mut needed_at: BTreeMap<u64, bool> = seeds.iter().map(|&s| (s, false)).collect();
        for (name, entries) in variants {
            // The throughput track (random tensors) has no target and no verdict: every seed.
            let throughput = plan
                .variant(name)
                .is_some_and(|v| v.data_source() == crate::spec::variant::DataSource::Random);
            if name == base_name || throughput {
                continue;
            }
            for (&s, e) in entries {
                // The finished pairs before seed `s`, in seed order, up to the first gap (a
                // seed not run because the comparison settled, or still running elsewhere):
                // a settled prefix is settled whatever follows it.
                let mut pairs = Vec::new();
                for (&t, ve) in entries.range(..s) {
                    let b = base.get(&t).and_then(|be| done.get(&be.id));
                    match (done.get(&ve.id), b) {
                        (Some(&v), Some(&b)) => pairs.push((v, b)),
                        _ => break,
                    }
                }
                let settled = sequential::settle(&pairs, &seed_plan).1.settled.is_some();
                if settled {
                    out.insert(e.index);
                } else if let Some(n) = needed_at.get_mut(&s) {
                    *n = true;
                }
            }
        }
        for (k, (&s, e)) in base.iter().enumerate() {
            let own = (k as u64) < rule.min_seeds;
            if !own && !needed_at.get(&s).copied().unwrap_or(true) {
                out.insert(e.index);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrate::sweep::plan::{expand, NameList, Order};
    use serde_json::Value;

    /// A plan of digits-mlp f32 and bf16-amp, 5 seeds, until settled (looks after 3, 4, 5).
    fn plan() -> PlanFile {
        let mut suite = crate::orchestrate::sweep::plan::tests::suite(Order::Interleaved);
        suite.variants = NameList::Names(vec!["f32".into(), "bf16-amp".into()]);
        suite.max_epochs = None;
        suite.until_settled = true;
        expand(&suite, &crate::spec::task::default_models_dir()).unwrap()
    }

    /// A finished run of `variant`/`seed` of the plan with energy to target `ett` (a committed
    /// test run file with its plan reference and scores replaced).
    fn write_run(dir: &Path, plan: &PlanFile, variant: &str, seed: u64, ett: f64) {
        let template = Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "tests/fixtures/report/machines/epyc-rapl/runs/digits-mlp--f32--seed-1--e5f6a7b8.json",
        );
        let mut r: Value = serde_json::from_slice(&std::fs::read(template).unwrap()).unwrap();
        let e = plan
            .entries
            .iter()
            .find(|e| e.variant == variant && e.seed == seed)
            .unwrap();
        let id = format!("digits-mlp--{variant}--seed-{seed}--unit");
        r["run_id"] = id.clone().into();
        r["seed"] = seed.into();
        r["ett_j"] = ett.into();
        r["energy"]["total_j"] = ett.into();
        r["plan"] = serde_json::json!({"hash": plan.hash, "entry_id": e.id, "index": e.index,
            "name": plan.name, "order": "interleaved", "order_seed": 1, "position": 0});
        std::fs::create_dir_all(dir.join("runs")).unwrap();
        std::fs::write(
            dir.join("runs").join(format!("{id}.json")),
            serde_json::to_vec(&r).unwrap(),
        )
        .unwrap();
    }

    fn names(plan: &PlanFile, ix: &BTreeSet<usize>) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = ix
            .iter()
            .map(|&i| (plan.entries[i].variant.clone(), plan.entries[i].seed))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_clear_cost_settles_at_the_first_look_and_a_gap_keeps_entries_needed() {
        let p = plan();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        // Nothing finished: everything is needed.
        assert!(not_needed(&p, dir).is_empty());
        // bf16-amp needs exactly twice the baseline's energy in seeds 1-3: settled "costs" at
        // the first look, so its seeds 4 and 5 are not needed, nor the baseline's (it has its 3).
        for seed in 1..=3 {
            write_run(dir, &p, "f32", seed, 10.0 + seed as f64);
            write_run(dir, &p, "bf16-amp", seed, 2.0 * (10.0 + seed as f64));
        }
        let want: Vec<(String, u64)> = [("bf16-amp", 4), ("bf16-amp", 5), ("f32", 4), ("f32", 5)]
            .iter()
            .map(|(v, s)| (v.to_string(), *s))
            .collect();
        assert_eq!(names(&p, &not_needed(&p, dir)), want);
        // With the baseline's seed 2 not finished (running in another shard), nothing after it
        // can be judged: every entry is needed.
        std::fs::remove_file(dir.join("runs/digits-mlp--f32--seed-2--unit.json")).unwrap();
        assert!(not_needed(&p, dir).is_empty());
        // A plan without until_settled never skips.
        let mut off = p.clone();
        off.settings.until_settled = None;
        assert!(not_needed(&off, dir).is_empty());
    }

    #[test]
    fn noisy_pairs_keep_taking_seeds() {
        let p = plan();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        // Ratios 1.3, 0.8, 1.1: no verdict at the first look; seed 4 of both is needed.
        for (seed, r) in [(1, 1.3), (2, 0.8), (3, 1.1)] {
            write_run(dir, &p, "f32", seed, 10.0);
            write_run(dir, &p, "bf16-amp", seed, 10.0 * r);
        }
        assert!(not_needed(&p, dir).is_empty());
    }
}
