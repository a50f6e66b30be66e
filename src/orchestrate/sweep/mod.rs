//! `joulebench sweep` and `joulebench merge`: the full matrix of tasks x variants x seeds,
//! frozen into a plan, run whole or in shards (one per Slurm array task, Kubernetes index or
//! GNU parallel job), resumed by running the same command again, merged (docs/run-file.md;
//! docs/design/scale-out.md).
//!
//! Owns: shard membership from flags and the engine's environment (`resolve_shard`, reading it
//! through `orchestrate::host`); `plan` (suites, plan files, shard membership), `run`
//! (resumable execution of a shard), `merge` and `emit` (sbatch, Kubernetes Indexed Job and GNU
//! parallel text).
//! Must not: schedule anything or talk to an engine's API (joulebench is never a scheduler),
//! or measure outside `runner`.
//!
//! `cli::sweep` holds the commands' arguments and messages. Exit codes: 0 every run of the plan (or shard) present and ok; 1 some run failed, diverged,
//! did not finish, is missing or is being run by another process; 2 usage or configuration
//! error (nothing trained).

pub mod emit;
pub mod merge;
pub mod plan;
pub mod run;
pub mod settle;

/// (index, count) of this process, validated; `None` when the whole plan is run.
pub fn resolve_shard(
    index: Option<u64>,
    count: Option<u64>,
    env: &dyn crate::orchestrate::host::Env,
) -> Result<Option<(u64, u64)>, anyhow::Error> {
    let Some(count) = count else {
        if index.is_some() {
            anyhow::bail!("--shard-index needs --shard-count N (the count is always explicit)");
        }
        return Ok(None);
    };
    if count == 0 {
        anyhow::bail!("--shard-count must be at least 1");
    }
    let index = match index {
        Some(i) => i,
        None => {
            let e = crate::orchestrate::host::shard_index_from_env(env).ok_or_else(|| {
                anyhow::anyhow!(
                    "--shard-count {count} without --shard-index, and neither SLURM_ARRAY_TASK_ID nor JOB_COMPLETION_INDEX is set"
                )
            })?;
            e.raw.trim().parse::<u64>().map_err(|_| {
                anyhow::anyhow!(
                    "{}='{}' is not a shard index (a whole number)",
                    e.var,
                    e.raw
                )
            })?
        }
    };
    if index >= count {
        anyhow::bail!(
            "shard index {index} out of range: with --shard-count {count} valid indexes are 0-{}",
            count - 1
        );
    }
    Ok(Some((index, count)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn shard_index_from_flags_and_env() {
        let none: BTreeMap<String, String> = BTreeMap::new();
        assert_eq!(resolve_shard(None, None, &none).unwrap(), None);
        assert_eq!(
            resolve_shard(Some(2), Some(4), &none).unwrap(),
            Some((2, 4))
        );
        let e = resolve_shard(Some(4), Some(4), &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of range") && e.contains("0-3"), "{e}");
        assert!(resolve_shard(Some(1), None, &none).is_err());
        assert!(resolve_shard(None, Some(0), &none).is_err());
        assert!(resolve_shard(None, Some(4), &none).is_err());
        let mut slurm = BTreeMap::new();
        slurm.insert("SLURM_ARRAY_TASK_ID".to_string(), "3".to_string());
        assert_eq!(resolve_shard(None, Some(4), &slurm).unwrap(), Some((3, 4)));
        let mut k8s = BTreeMap::new();
        k8s.insert("JOB_COMPLETION_INDEX".to_string(), "x1".to_string());
        let e = resolve_shard(None, Some(4), &k8s).unwrap_err().to_string();
        assert!(e.contains("JOB_COMPLETION_INDEX='x1'"), "{e}");
    }
}
