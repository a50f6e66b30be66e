//! `joulebench sweep emit slurm|k8s|parallel`: the arguments and their checks; the text is
//! `orchestrate::sweep::emit`.

use super::Failure;
use crate::orchestrate::sweep::emit::{self, EmitOptions, Engine, Isolation};
use crate::orchestrate::sweep::plan::PlanFile;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct EmitArgs {
    #[arg(value_enum)]
    pub engine: Engine,
    /// The plan file (from `joulebench sweep plan --out`); use a path every node can read.
    #[arg(long)]
    pub plan: PathBuf,
    /// Number of shards (array tasks, Kubernetes completions, parallel jobs).
    #[arg(long)]
    pub shard_count: u64,
    /// Results root on shared storage: shards write RESULTS/shards/<i>, the merge RESULTS.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    #[arg(long, value_enum, default_value = "gpu")]
    pub isolation: Isolation,
    /// CPUs per task.
    #[arg(long, default_value_t = 4)]
    pub cpus_per_task: u32,
    /// Slurm --time per task (HH:MM:SS).
    #[arg(long, default_value = "04:00:00")]
    pub time: String,
    /// Slurm partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// Extra arguments for every `joulebench sweep` (e.g. "--meter nvml --device cuda:0").
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub sweep_args: String,
    /// The joulebench binary the tasks run (default: this one).
    #[arg(long)]
    pub joulebench: Option<PathBuf>,
    /// Kubernetes container image.
    #[arg(long, default_value = "joulebench:latest")]
    pub image: String,
}

impl From<EmitArgs> for EmitOptions {
    fn from(a: EmitArgs) -> Self {
        EmitOptions {
            engine: a.engine,
            plan: a.plan,
            shard_count: a.shard_count,
            results: a.results,
            isolation: a.isolation,
            cpus_per_task: a.cpus_per_task,
            time: a.time,
            partition: a.partition,
            sweep_args: a.sweep_args,
            joulebench: a.joulebench,
            image: a.image,
        }
    }
}

pub fn command(a: EmitArgs) -> Result<i32, Failure> {
    let usage = |m: String| Failure::Usage(anyhow::anyhow!(m));
    if a.shard_count == 0 {
        return Err(usage("--shard-count must be at least 1".into()));
    }
    let plan = PlanFile::read(&a.plan).map_err(|e| Failure::Usage(e.into()))?;
    if a.shard_count > plan.entries.len() as u64 {
        return Err(usage(format!(
            "--shard-count {} is more than the plan's {} runs: some shards would be empty",
            a.shard_count,
            plan.entries.len()
        )));
    }
    if a.time.contains(char::is_whitespace) || a.image.contains(char::is_whitespace) {
        return Err(usage("--time and --image take one word".into()));
    }
    let a = EmitOptions::from(a);
    let text = match a.engine {
        Engine::Slurm => emit::slurm(&a, &plan),
        Engine::K8s => emit::k8s(&a, &plan),
        Engine::Parallel => emit::parallel(&a, &plan),
    };
    print!("{text}");
    Ok(0)
}
