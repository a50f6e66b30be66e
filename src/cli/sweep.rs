//! `joulebench sweep` (run, `plan`, `emit`) and `joulebench merge`: arguments, validation
//! before anything trains, messages and exit codes (0 every run present and ok; 1 some run
//! failed, diverged, did not finish, is missing or busy; 2 usage). The work is
//! `orchestrate::sweep`.

use super::{usage, Failure};
use crate::measure::{self, MeterChoice};
use crate::orchestrate::host;
use crate::orchestrate::runner::{self, Plan};
use crate::orchestrate::sweep::{merge, plan, resolve_shard, run};
use crate::record::curve::Status;
use crate::record::ResultsDir;
use plan::PlanFile;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub command: Option<SweepCommand>,
    #[command(flatten)]
    pub run: SweepRunArgs,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum SweepCommand {
    /// Freeze a sweep into a plan file (sorted runs, stable ids, plan hash) and print it.
    Plan(PlanArgs),
    /// Print a ready sbatch script, Kubernetes Indexed Job or GNU parallel line for a plan.
    Emit(super::emit::EmitArgs),
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct SuiteChoice {
    /// A shipped suite: quick, standard, full, gpu or mnist-mlp (models/suite-<name>.toml). Default: quick.
    #[arg(long, conflicts_with = "config")]
    pub suite: Option<String>,
    /// A suite TOML file of your own (same keys as models/suite-quick.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Folder of task TOMLs (default: the shipped models/).
    #[arg(long)]
    pub models_dir: Option<PathBuf>,
    /// Sequential seeds: the suite's seeds become the most per variant; seeds run in rounds
    /// and a variant takes no more once its verdict against the baseline is settled (the
    /// suite key `until_settled = true` does the same).
    #[arg(long)]
    pub until_settled: bool,
    /// Stop runs whose forecast gives them under 1 % to reach T (suite key `forecast_stop`).
    #[arg(long)]
    pub forecast_stop: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct PlanArgs {
    #[command(flatten)]
    pub suite: SuiteChoice,
    /// Write the plan here (atomically) instead of printing it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SweepRunArgs {
    #[command(flatten)]
    pub suite: SuiteChoice,
    /// A frozen plan from `joulebench sweep plan` (instead of --suite/--config).
    #[arg(long, conflicts_with_all = ["suite", "config", "until_settled", "forecast_stop"])]
    pub plan: Option<PathBuf>,
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// This process runs plan entries k with k mod N == I. Default: $SLURM_ARRAY_TASK_ID,
    /// else $JOB_COMPLETION_INDEX (only with --shard-count).
    #[arg(long)]
    pub shard_index: Option<u64>,
    /// N, always explicit (an engine's task count changes when a subset is resubmitted).
    #[arg(long)]
    pub shard_count: Option<u64>,
    /// Run again the entries whose run file says failed.
    #[arg(long)]
    pub retry_failed: bool,
    /// cpu, cuda or cuda:i. Default: cuda:0 when a GPU is usable, else cpu.
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long, value_enum, default_value = "auto")]
    pub meter: MeterChoice,
    #[arg(long)]
    pub cpu_tdp_w: Option<f64>,
    /// Another copy of the tasks' datasets.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print the run records as JSON lines instead of the human summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct MergeArgs {
    /// Shard results folders to gather (missing ones are reported, not fatal).
    pub dirs: Vec<PathBuf>,
    /// The results folder to gather into (created if needed; its own runs are kept).
    #[arg(long)]
    pub into: PathBuf,
    /// The plan the shards ran: report missing and failed entries (default: plan.json of
    /// --into or of the first shard folder that has one).
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// The array's shard count, to print the `--array=` list to resubmit.
    #[arg(long)]
    pub shard_count: Option<u64>,
}

/// The suite the user chose, expanded.
pub fn plan_from(choice: &SuiteChoice) -> Result<PlanFile, Failure> {
    let models = choice
        .models_dir
        .clone()
        .unwrap_or_else(crate::spec::task::default_models_dir);
    let suite = match &choice.config {
        Some(path) => plan::load_suite(path),
        None => plan::find_suite(&models, choice.suite.as_deref().unwrap_or("quick")),
    }
    .map_err(usage)?;
    let mut suite = suite;
    suite.until_settled |= choice.until_settled;
    suite.forecast_stop |= choice.forecast_stop;
    plan::expand(&suite, &models).map_err(usage)
}

pub fn command(a: SweepArgs) -> Result<i32, Failure> {
    match a.command {
        Some(SweepCommand::Plan(p)) => {
            let plan = plan_from(&p.suite)?;
            let text = plan
                .to_json()
                .map_err(|e| Failure::Runtime(anyhow::anyhow!("encoding the plan: {e}")))?;
            match &p.out {
                Some(out) => {
                    crate::record::write_atomic(out, text.as_bytes()).map_err(usage)?;
                    eprintln!(
                        "joulebench: plan '{}' ({}): {} runs, written to {}",
                        plan.name,
                        run::short(&plan.hash),
                        plan.entries.len(),
                        out.display()
                    );
                }
                None => print!("{text}"),
            }
            Ok(0)
        }
        Some(SweepCommand::Emit(e)) => super::emit::command(e),
        None => sweep_cmd(a.run),
    }
}

fn sweep_cmd(a: SweepRunArgs) -> Result<i32, Failure> {
    // Everything is validated before anything trains.
    let file = match &a.plan {
        Some(p) => PlanFile::read(p).map_err(usage)?,
        None => plan_from(&a.suite)?,
    };
    let shard = resolve_shard(a.shard_index, a.shard_count, &host::ProcessEnv).map_err(usage)?;
    super::check_cpu_tdp_w(a.cpu_tdp_w).map_err(usage)?;
    let (device, device_label) = match &a.device {
        Some(d) => super::parse_device(d).map_err(usage)?,
        None => super::default_device(),
    };
    for x in &file.exec {
        let first = x.command_for(&x.tasks[0], &x.variants[0]);
        crate::orchestrate::exec::resolve_program(&first[0])
            .map_err(|m| usage(anyhow::anyhow!("[[exec]] '{}': {m}", x.name)))?;
    }
    // `[[exec]]` entries that name their GPUs: NVML must see them here (where the sweep runs).
    let node = if file.exec.iter().any(|x| x.devices.is_some()) {
        Some(
            crate::measure::nvml_gpu::NvmlNode::init()
                .map_err(|e| usage(anyhow::anyhow!("[[exec]] devices: {e}")))?,
        )
    } else {
        None
    };
    let node_ref = node
        .as_ref()
        .map(|n| n as &dyn crate::measure::devices::GpuNode);
    for x in &file.exec {
        x.selection(node_ref).map_err(usage)?;
    }
    // Every native entry must be runnable here (tf32 is CUDA-only, a fine-tune needs its
    // source) before the plan claims the folder: a problem found later would wedge it.
    for e in file.entries.iter().filter(|e| e.exec.is_none()) {
        if let (Some(t), Some(v)) = (file.task(&e.task), file.variant(&e.variant)) {
            crate::engine::variant_run::preflight(t, v, &device, false).map_err(usage)?;
        }
    }
    let tasks = run::load_tasks(&file, a.data_dir.as_deref(), &device).map_err(usage)?;
    // The meter before the folder is opened or claimed: an unusable named meter writes nothing.
    let gpu = device_label
        .strip_prefix("cuda:")
        .and_then(|i| i.parse().ok());
    let (mut meter, probes) =
        measure::detect_meter(&super::detect_options(a.meter, gpu, a.cpu_tdp_w)).map_err(usage)?;
    let results = ResultsDir::open(&a.results).map_err(usage)?;
    run::claim_folder(&results, &file).map_err(usage)?;
    let (meter_name, boundary) = (meter.name().to_string(), meter.boundary().as_str());
    let runner_plan = Plan {
        tasks,
        jobs: Vec::new(),
        device,
        device_label,
        results: results.clone(),
        idle_s: file.settings.idle_s,
        cooldown_s: file.settings.cooldown_s,
        stop_at_target: file.settings.stop_at_target,
        forecast_stop: file.settings.forecast_stop,
        checkpoint: None,
        inference: None,
    };
    let scheduler = host::scheduler_info(&host::ProcessEnv, shard);
    let mut session =
        runner::Session::new(&runner_plan, meter.as_mut(), &probes).map_err(Failure::Runtime)?;
    let (si, sc) = shard.unwrap_or((0, 1));
    let results_root = results.root().display().to_string();
    let device_shown = runner_plan.device_label.clone();
    let announce = || {
        let in_shard = file.shard(si, sc).len();
        let seeds = file.entries.iter().map(|e| e.seed).max().unwrap_or(0);
        eprintln!(
        "joulebench: sweep '{}' (plan {}), {} runs{}, {} order, on {device_shown}, meter {}, boundary {}, results in {}",
        file.name,
        run::short(&file.hash),
        file.entries.len(),
        match shard {
            Some((i, n)) => format!(", shard {i} of {n}: {in_shard} runs"),
            None => String::new(),
        },
        file.settings.order.as_str(),
        meter_name,
        boundary,
        results_root
    );
        if seeds < 10 {
            eprintln!(
            "joulebench: N = {seeds} seeds per variant: too few for a confidence interval worth citing (the standard suite runs 10)"
        );
        }
    };
    let as_json = a.json;
    let out = run::run_shard(
        &file,
        (si, sc),
        &runner_plan,
        &mut session,
        &scheduler,
        node_ref,
        a.retry_failed,
        announce,
        |label| {
            Box::new(crate::orchestrate::progress::ProgressObserver::new(
                label.to_string(),
            ))
        },
        |rec| {
            if as_json {
                println!("{}", super::record_json(rec));
            } else {
                println!("{}", crate::cli::summary::summary_line(rec));
            }
        },
    )
    .map_err(|e| {
        if e.downcast_ref::<run::SweepError>().is_some() {
            Failure::Usage(e)
        } else {
            Failure::Runtime(e)
        }
    })?;
    let idle = session.idle().cloned();
    drop(session);
    let ok = out
        .records
        .iter()
        .filter(|r| r.status == Status::Ok)
        .count();
    eprintln!(
        "joulebench: {} of {} runs were already done (skipped), {} run now ({} ok){}{}{}",
        out.already_done,
        out.planned,
        out.records.len(),
        ok,
        if out.busy.is_empty() {
            String::new()
        } else {
            format!(", {} being run by another process", out.busy.len())
        },
        if out.corrupt.is_empty() {
            String::new()
        } else {
            format!(", {} corrupt run files rerun", out.corrupt.len())
        },
        if out.settled.is_empty() {
            String::new()
        } else {
            format!(
                ", {} not needed (their verdicts were settled)",
                out.settled.len()
            )
        }
    );
    if !as_json {
        if let Some(i) = idle {
            println!("idle power: {:.2} W (sd {:.2} W)", i.mean_w, i.sd_w);
        }
        if shard.is_none_or(|(_, n)| n == 1) {
            print_leaderboard(results.root());
        } else {
            eprintln!(
                "joulebench: shard done; gather the shards with `joulebench merge <shard folders> --into <folder> --plan {}`",
                a.plan
                    .as_ref()
                    .map_or("<plan file>".into(), |p| p.display().to_string())
            );
        }
    }
    let complete = out.busy.is_empty() && out.failed_or_dnf == 0;
    Ok(if complete { 0 } else { 1 })
}

fn print_leaderboard(dir: &Path) {
    let sw = crate::measure::system::software();
    let by = format!(
        "joulebench {} (git {}): joulebench sweep --results {}",
        sw.joulebench_version,
        sw.git_commit,
        dir.display()
    );
    match crate::analyse::report::leaderboard_text(&[dir.to_path_buf()], &by) {
        Ok((text, issues)) => {
            for i in issues {
                eprintln!("joulebench: {i}");
            }
            println!("{text}");
        }
        Err(e) => eprintln!("joulebench: no leaderboard: {e}"),
    }
}

/// `joulebench merge DIR ... --into DIR [--plan FILE] [--shard-count N]`.
pub fn merge_cmd(a: MergeArgs) -> Result<i32, Failure> {
    if a.shard_count == Some(0) {
        return Err(usage(anyhow::anyhow!("--shard-count must be at least 1")));
    }
    let mut sources = Vec::new();
    for d in &a.dirs {
        if crate::record::read::has_runs(d) {
            sources.push(d.clone());
        } else {
            eprintln!(
                "joulebench: {}: no runs/ folder (a shard that never started?): skipped",
                d.display()
            );
        }
    }
    let plan_path = a.plan.clone().or_else(|| {
        std::iter::once(&a.into)
            .chain(sources.iter())
            .map(|d| run::plan_path(d))
            .find(|p| p.is_file())
    });
    let plan = match &plan_path {
        Some(p) => Some(PlanFile::read(p).map_err(usage)?),
        None => None,
    };
    let out = merge::merge(&sources, &a.into, plan.as_ref()).map_err(usage)?;
    for (path, why) in &out.unreadable {
        eprintln!("joulebench: {path}: not a run file ({why}): not merged");
    }
    println!(
        "merged {} folders into {}: {} runs copied ({} replacing an older copy), {} duplicates skipped, {} runs in all",
        sources.len(),
        a.into.display(),
        out.copied.len(),
        out.replaced.len(),
        out.duplicates,
        out.total
    );
    let Some(plan) = plan else {
        return Ok(0);
    };
    let describe = |ix: &[usize]| -> String {
        ix.iter()
            .take(10)
            .filter_map(|&i| plan.entries.get(i))
            .map(|e| format!("{} {} seed {} (#{})", e.task, e.variant, e.seed, e.index))
            .collect::<Vec<_>>()
            .join(", ")
            + if ix.len() > 10 { ", ..." } else { "" }
    };
    println!(
        "plan '{}' ({}): {} of {} entries present, {} missing, {} failed{}",
        plan.name,
        run::short(&plan.hash),
        plan.entries.len() - out.missing.len() - out.settled.len(),
        plan.entries.len(),
        out.missing.len(),
        out.failed.len(),
        if out.settled.is_empty() {
            String::new()
        } else {
            format!(", {} not needed (verdicts settled)", out.settled.len())
        }
    );
    if !out.missing.is_empty() {
        println!("missing: {}", describe(&out.missing));
    }
    if !out.failed.is_empty() {
        println!("failed: {}", describe(&out.failed));
    }
    if out.missing.is_empty() && out.failed.is_empty() {
        return Ok(0);
    }
    match a.shard_count {
        Some(n) => println!(
            "resubmit: --array={}{}",
            merge::resubmit_list(&out, n),
            if out.failed.is_empty() {
                ""
            } else {
                " (add --retry-failed to the sweep command to rerun failed runs)"
            }
        ),
        None => println!("resubmit: give --shard-count N to get the --array= list"),
    }
    Ok(1)
}
