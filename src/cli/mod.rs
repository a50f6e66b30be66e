//! The command line (docs/run-file.md): argv -> validated plan -> meter -> runner -> summary.
//!
//! Owns: clap definitions, validation of every user input before anything trains, exit codes
//! (0 all ok, 1 some run failed/dnf/diverged, 2 usage or configuration error) and the one-line
//! error messages.

mod collapse;
mod crosscheck;
mod emit;
mod env;
mod exec;
mod export;
mod footprint;
mod replay;
mod report;
mod speed;
mod summary;
mod sweep;
mod values;

pub use exec::ExecArgs;

use crate::data::{self, DatasetKind};
use crate::engine::variant_run;
use crate::measure::{self, DetectOptions, MeterChoice};
use crate::orchestrate::runner::{self, Plan, TaskRun};
use crate::record::curve::Status;
use crate::record::ResultsDir;
use crate::spec::task;
use crate::spec::variant;
use candle_core::Device;
use clap::{Parser, Subcommand};
use serde_json::json;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "joulebench",
    version,
    about = "Energy to reach a target accuracy: joules per accuracy point"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Tasks, variants and meters, one line each.
    List {
        #[arg(long)]
        json: bool,
    },
    /// What this machine has: devices, meters and the source each would give.
    Env {
        #[arg(long)]
        json: bool,
        /// CPU TDP in watts for the estimate (otherwise CodeCarbon 3.3.2's CPU table, else 4 W per
        /// thread).
        #[arg(long)]
        cpu_tdp_w: Option<f64>,
    },
    /// Train a task under each variant and seed, measure, write run files, print a summary.
    Run(Box<RunArgs>),
    /// Carbon (operational and embodied), inference energy and break-even per run, from result
    /// folders: derived figures, a separate table from the joule ranking.
    Footprint(Box<footprint::FootprintArgs>),
    /// Leaderboard (md, csv, json, LaTeX, HTML, emissions.csv) from results folders.
    Report(report::ReportArgs),
    /// Choose a task's target T by the knee of full-budget reference curves (`run --full-budget`).
    Target(TargetArgs),
    /// Training speed and the harness's own overhead (no run files; see docs/results.md "Speed").
    Speed(speed::SpeedArgs),
    /// Model collapse: recursive synthetic-data generations and the energy they waste.
    Collapse(Box<collapse::CollapseArgs>),
    /// Compare the GPU energy of a results folder's runs with an independent NVML trace
    /// (scripts/nvml-reader.py): ratio per run, agreement within --tolerance (2 %).
    Crosscheck(crosscheck::CrosscheckArgs),
    /// Tasks x variants x seeds of a suite or plan, resumable and shardable (`sweep plan`, `sweep emit`).
    Sweep(Box<sweep::SweepArgs>),
    /// Gather shard results folders into one, de-duplicated by run id; report missing runs.
    Merge(sweep::MergeArgs),
    /// Measure any training program (PyTorch, JAX, your own) to its target: the same
    /// windows, meters, idle protocol and run files as `run`, quality from its MLLOG lines.
    Exec(Box<ExecArgs>),
    /// What the stopping rules (sequential seeds, forecast stop) would have saved and changed on
    /// finished results folders: energy per rule, verdicts that differ, false stops.
    Replay(replay::ReplayArgs),
    /// Lay a results folder out for other tools: `export mlperf FOLDER --out DIR` writes an
    /// MLPerf Training submission tree with MLPerf Power node logs.
    Export(export::ExportArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct TargetArgs {
    /// The task whose reference runs to read.
    #[arg(long)]
    pub task: String,
    /// Results folders holding `run --full-budget` runs of the task (f32 baseline).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Grid the target is rounded down to, in percentage points.
    #[arg(long, default_value_t = 0.5)]
    pub grid_pp: f64,
    /// Write the aligned curves (`step,epoch,seed_*,mean,sd`) to this CSV file.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Task name (see `joulebench list`) or a path to a task TOML.
    #[arg(long)]
    pub task: String,
    /// Variant(s); repeatable. Default: the f32 baseline.
    #[arg(long = "variant")]
    pub variants: Vec<String>,
    /// Number of seeds (1..=N).
    #[arg(long, conflicts_with = "seed")]
    pub seeds: Option<u64>,
    /// One explicit seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Another copy of the task's dataset in the same format (a full CIFAR-10, another IDX set).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Train the whole budget instead of stopping at the target (reference learning curves).
    #[arg(long)]
    pub full_budget: bool,
    /// Stop a run once its held-out curve gives it under 1 % to reach T within the budget
    /// (forecast after 3 evals and 10 % of the budget); the run file says `stopped-forecast`,
    /// a DNF, with the forecast. Not with --full-budget.
    #[arg(long, conflicts_with = "full_budget")]
    pub forecast_stop: bool,
    /// Override the task's epoch budget.
    #[arg(long)]
    pub max_epochs: Option<usize>,
    /// Weights (safetensors) every `finetune` variant starts from; without a joulebench
    /// sidecar beside them they are recorded as `external`.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Also measure inference energy of each trained model (J per 1,000 predictions at batch 1
    /// and 1024, own measured windows after training, not in ETT): about 15-45 s more per run.
    #[arg(long)]
    pub inference: bool,
    #[command(flatten)]
    pub measure: MeasureArgs,
}

/// The measurement options `run` and `exec` share (docs/design/measurement.md section 3).
#[derive(clap::Args, Debug, Clone)]
pub struct MeasureArgs {
    /// cpu, cuda or cuda:i: the device trained on and metered (NVML for cuda:i). Default:
    /// cuda:0 when a GPU is usable, else cpu.
    #[arg(long)]
    pub device: Option<String>,
    /// auto: the GPU's board (NVML, else the amdgpu driver) plus RAPL where readable, else the
    /// labelled estimate. amdgpu: AMD GPU energy from the driver's files (device i for cuda:i,
    /// every AMD GPU of the node without --device; $JOULEBENCH_DRM_ROOT moves /sys/class/drm).
    #[arg(long, value_enum, default_value = "auto")]
    pub meter: MeterChoice,
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Idle baseline before the series, in seconds (0 skips it; net energy is then absent).
    #[arg(long, default_value_t = 30.0, allow_negative_numbers = true)]
    pub idle_s: f64,
    /// Pause between runs, in seconds.
    #[arg(long, default_value_t = 5.0, allow_negative_numbers = true)]
    pub cooldown_s: f64,
    /// CPU TDP in watts for the estimate (otherwise CodeCarbon 3.3.2's CPU table, else 4 W per
    /// thread).
    #[arg(long, allow_negative_numbers = true)]
    pub cpu_tdp_w: Option<f64>,
    /// Folder of task TOMLs (default: the shipped models/).
    #[arg(long)]
    pub models_dir: Option<PathBuf>,
    /// Replace run files of the same runs (task, variant, seed, system) that already exist;
    /// without it a run that would replace one is refused (exit 2) before anything runs.
    #[arg(long)]
    pub overwrite: bool,
    /// Print the run records as JSON lines instead of the human summary.
    #[arg(long)]
    pub json: bool,
    /// MLPerf `submission_org` in the event logs (default: unspecified).
    #[arg(long)]
    pub submitter: Option<String>,
    /// MLPerf `submission_division` in the event logs.
    #[arg(long, value_parser = ["open", "closed"], default_value = "open")]
    pub division: String,
    /// MLPerf `submission_platform` in the event logs (default: the CPU, or the accelerator and
    /// the CPU, from system.json).
    #[arg(long)]
    pub platform: Option<String>,
}

impl MeasureArgs {
    /// What the event logs say about the submission (`--submitter`, `--division`, `--platform`).
    pub fn submission(&self) -> crate::record::mlperf::SubmissionArgs {
        crate::record::mlperf::SubmissionArgs {
            org: self.submitter.clone(),
            division: self.division.clone(),
            platform: self.platform.clone(),
        }
    }

    /// The seconds are in 0..=MAX_PAUSE_S and the TDP, when given, is positive and finite.
    pub fn check(&self) -> Result<(), anyhow::Error> {
        for (flag, v) in [("--idle-s", self.idle_s), ("--cooldown-s", self.cooldown_s)] {
            check_pause_s(flag, v).map_err(anyhow::Error::msg)?;
        }
        for (flag, v) in [
            ("--submitter", &self.submitter),
            ("--platform", &self.platform),
        ] {
            if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
                anyhow::bail!("{flag} must not be empty (MLPerf's checker refuses an empty value)");
            }
        }
        check_cpu_tdp_w(self.cpu_tdp_w)
    }
}

use crate::orchestrate::runner::check_pause_s;

/// Largest number of seeds one command takes (a typo of `--seeds 10000000000000` must not
/// allocate the plan).
pub const MAX_SEEDS: u64 = 10_000;

/// A run record as one JSON line (`--json`). One that cannot be encoded prints a JSON object
/// saying so, with its run id, never an empty line.
pub(crate) fn record_json(rec: &crate::record::RunRecord) -> String {
    serde_json::to_string(rec).unwrap_or_else(|e| {
        serde_json::json!({"run_id": rec.run_id, "error": format!("cannot encode the run record: {e}")})
            .to_string()
    })
}

/// A failure and its exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad input or configuration: exit 2, nothing trained.
    Usage(anyhow::Error),
    /// Something broke while running: exit 1.
    Runtime(anyhow::Error),
}

pub(crate) fn usage<E: Into<anyhow::Error>>(e: E) -> Failure {
    Failure::Usage(e.into())
}

/// `--cpu-tdp-w`, when given, is a positive finite wattage (run, sweep and collapse share it).
pub fn check_cpu_tdp_w(cpu_tdp_w: Option<f64>) -> Result<(), anyhow::Error> {
    match cpu_tdp_w {
        Some(t) if !(t > 0.0 && t.is_finite()) => {
            anyhow::bail!("--cpu-tdp-w must be positive, got {t}")
        }
        _ => Ok(()),
    }
}

/// One line per cause, no backtrace.
/// The error and its causes on one line, `a: b: c`. A cause whose text the line already holds
/// (an error whose message embeds its `#[source]`, such as `writing PATH: <io error>`) is not
/// repeated.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if out.contains(&c) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&c);
    }
    out.replace('\n', " ")
}

pub fn parse_device(s: &str) -> Result<(Device, String), anyhow::Error> {
    match s {
        "cpu" => Ok((Device::Cpu, "cpu".into())),
        _ => {
            let idx = match s.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| {
                        anyhow::anyhow!("--device '{s}': expected cpu, cuda or cuda:<index>")
                    })?,
                None => anyhow::bail!("--device '{s}': expected cpu, cuda or cuda:<index>"),
            };
            let dev = Device::new_cuda(idx).map_err(|e| {
                let why = if cfg!(feature = "cuda") {
                    // candle appends a backtrace when RUST_BACKTRACE is set: keep the cause.
                    let cause = e.to_string().lines().next().unwrap_or_default().to_string();
                    if cause.contains("CUDA_ERROR_STUB_LIBRARY") {
                        format!("{cause}: libcuda.so.1 is the link stub, not the NVIDIA driver")
                    } else {
                        cause
                    }
                } else {
                    "this binary was built without the `cuda` feature (see scripts/build-cuda.sh)"
                        .into()
                };
                anyhow::anyhow!(
                    "--device {s}: CUDA device {idx} unavailable: {}",
                    why.replace('\n', " ")
                )
            })?;
            Ok((dev, format!("cuda:{idx}")))
        }
    }
}

/// cuda:0 when a GPU is usable, else the CPU.
pub fn default_device() -> (Device, String) {
    if cfg!(feature = "cuda") {
        if let Ok(d) = Device::new_cuda(0) {
            return (d, "cuda:0".into());
        }
    }
    (Device::Cpu, "cpu".into())
}

/// A command-line parse error in one line: clap's message spans several lines (usage, hint),
/// and users script against one line per cause.
pub fn clap_error_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("For more information") && !l.starts_with("Usage:")
        })
        .collect();
    lines.join(" ")
}

pub fn run(cli: Cli) -> Result<i32, Failure> {
    match cli.command {
        Command::List { json } => list(json).map(|_| 0),
        Command::Env { json, cpu_tdp_w } => env::command(json, cpu_tdp_w).map(|_| 0),
        Command::Run(args) => run_cmd(*args),
        Command::Footprint(args) => footprint::command(&args).map(|_| 0).map_err(usage),
        Command::Report(args) => report::command(args),
        Command::Target(args) => target_cmd(args).map(|_| 0),
        Command::Speed(args) => speed::run(args),
        Command::Collapse(args) => collapse::run_cmd(*args),
        Command::Crosscheck(a) => crosscheck::command(&a),
        Command::Sweep(args) => sweep::command(*args),
        Command::Merge(args) => sweep::merge_cmd(args),
        Command::Exec(args) => exec::exec_cmd(*args),
        Command::Export(args) => export::command(&args),
        Command::Replay(args) => replay::command(&args),
    }
}

fn list(as_json: bool) -> Result<(), Failure> {
    let tasks = task::load_all(&task::default_models_dir()).map_err(usage)?;
    let variants = variant::catalog();
    let meters = [
        (
            "auto",
            "NVML for the training GPU (+RAPL if readable), else RAPL, else the labelled estimate",
        ),
        (
            "nvml",
            "NVIDIA GPU energy counter plus integrated instant power (boundary G)",
        ),
        (
            "rapl",
            "CPU package and DRAM counters from /sys/class/powercap (boundary H)",
        ),
        (
            "estimate",
            "CodeCarbon's TDP x load formula: estimated_tdp_load, never ranked with measurements",
        ),
    ];
    if as_json {
        let v = json!({
            "tasks": tasks.iter().map(|t| json!({
                "name": t.name, "description": t.description, "dataset": t.dataset.as_str(),
                "model": t.model.kind(), "target": t.target.value, "chance": t.target.chance,
            })).collect::<Vec<_>>(),
            "variants": variants.iter().map(|(v, d)| json!({"name": v.name, "description": d, "variant": v})).collect::<Vec<_>>(),
            "meters": meters.iter().map(|(n, d)| json!({"name": n, "description": d})).collect::<Vec<_>>(),
            "datasets": DatasetKind::ALL.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).map_err(usage)?);
        return Ok(());
    }
    println!("tasks:");
    let w = tasks.iter().map(|t| t.name.len()).max().unwrap_or(0);
    for t in &tasks {
        match t.metric.direction() {
            crate::spec::task::Direction::Higher => println!(
                "  {:<w$} {} (T = {:.1} %, c = {:.1} %)",
                t.name,
                t.description,
                100.0 * t.target.value,
                100.0 * t.target.chance
            ),
            crate::spec::task::Direction::Lower => println!(
                "  {:<w$} {} (T = {} {u}, c = {} {u}, lower is better)",
                t.name,
                t.description,
                t.target.value,
                t.target.chance,
                u = t.metric.unit()
            ),
        }
    }
    println!("variants:");
    for (v, d) in &variants {
        println!("  {:<19} {d}", v.name);
    }
    println!("  (or any composition: {})", variant::GRAMMAR);
    println!("meters:");
    for (n, d) in meters {
        println!("  {n:<14} {d}");
    }
    Ok(())
}

pub fn detect_options(
    choice: MeterChoice,
    gpu_index: Option<usize>,
    cpu_tdp_w: Option<f64>,
) -> DetectOptions {
    DetectOptions {
        choice,
        gpu_index,
        gpu_devices: None,
        cpu_tdp_w,
        powercap_root: PathBuf::from("/sys/class/powercap"),
        drm_root: crate::measure::amdgpu::drm_root(),
    }
}

fn run_cmd(a: RunArgs) -> Result<i32, Failure> {
    // Everything the user typed is validated here, before any training or meter start.
    let models_dir = a
        .measure
        .models_dir
        .clone()
        .unwrap_or_else(task::default_models_dir);
    let mut spec = task::find(&models_dir, &a.task).map_err(usage)?;
    if let Some(e) = a.max_epochs {
        if e == 0 {
            return Err(usage(anyhow::anyhow!("--max-epochs must be at least 1")));
        }
        spec.budget.max_epochs = e;
    }
    let variants = if a.variants.is_empty() {
        vec![variant::baseline()]
    } else {
        a.variants
            .iter()
            .map(|v| variant::parse(v))
            .collect::<Result<Vec<_>, _>>()
            .map_err(usage)?
    };
    if a.checkpoint.is_some() && !variants.iter().any(|v| v.init == variant::Init::Finetune) {
        return Err(usage(anyhow::anyhow!(
            "--checkpoint is only used by finetune variants; none of the given variants is one"
        )));
    }
    let seeds: Vec<u64> = match (a.seeds, a.seed) {
        (Some(0), _) => return Err(usage(anyhow::anyhow!("--seeds must be at least 1"))),
        (Some(n), _) if n > MAX_SEEDS => {
            return Err(usage(anyhow::anyhow!("--seeds {n}: at most {MAX_SEEDS}")))
        }
        (Some(n), _) => (1..=n).collect(),
        (None, Some(s)) => vec![s],
        (None, None) => vec![1],
    };
    a.measure.check().map_err(usage)?;
    let (device, device_label) = match &a.measure.device {
        Some(d) => parse_device(d).map_err(usage)?,
        None => default_device(),
    };
    // The data first: a dataset too small for the task is refused before the results folder
    // is made.
    let data = data::load(spec.dataset, a.data_dir.as_deref()).map_err(usage)?;
    runner::preflight_data(&spec, &data, &device).map_err(usage)?;
    for v in &variants {
        variant_run::preflight(&spec, v, &device, a.checkpoint.is_some()).map_err(usage)?;
    }
    let finetune_source = match variant_run::finetune_source(
        &spec,
        &variants,
        a.checkpoint.as_deref(),
        &models_dir,
        &data,
        &device,
    )
    .map_err(usage)?
    {
        Some(s) => {
            let d = data::load(s.dataset, a.data_dir.as_deref()).map_err(usage)?;
            runner::preflight_data(&s, &d, &device).map_err(usage)?;
            Some(Box::new(TaskRun {
                spec: s,
                data: d,
                finetune_source: None,
            }))
        }
        None => None,
    };
    // The meter before the results folder: a meter the user named that is unusable is refused
    // with nothing written.
    let gpu = device_label
        .strip_prefix("cuda:")
        .and_then(|i| i.parse().ok());
    let (mut meter, probes) =
        measure::detect_meter(&detect_options(a.measure.meter, gpu, a.measure.cpu_tdp_w))
            .map_err(usage)?;
    let results = ResultsDir::open(&a.measure.results)
        .map_err(usage)?
        .with_submission(a.measure.submission());
    // The run files this series writes (the system as `runner::Session` reads it).
    let sys = crate::orchestrate::runner::system_of(&device_label, &probes);
    let run_ids: Vec<String> = variants
        .iter()
        .flat_map(|v| seeds.iter().map(move |&s| (v, s)))
        .map(|(v, s)| crate::record::run_id(&spec.name, &v.name, s, &sys.system_id))
        .collect();
    if !a.measure.overwrite {
        if let Some(path) = run_ids
            .iter()
            .map(|id| results.run_path(id))
            .find(|p| p.exists())
        {
            return Err(usage(anyhow::anyhow!(
                "run file {} exists (a finished run of the same task, variant, seed and system); --overwrite replaces it, or use another --results",
                path.display()
            )));
        }
    }
    // Held until the series ends: another process making one of these runs in this folder
    // (a second `run`, a sweep) is refused here, before anything is measured.
    let _locks = lock_runs(&results, &run_ids)?;
    let components: Vec<String> = meter
        .components()
        .iter()
        .map(|c| format!("{} {}", c.component, c.source.as_str()))
        .collect();
    eprintln!(
        "joulebench: {} on {device_label}, meter {} [{}], boundary {}, results in {}",
        spec.name,
        meter.name(),
        components.join(", "),
        meter.boundary().as_str(),
        results.root().display()
    );
    if a.measure.idle_s > 0.0 {
        eprintln!(
            "joulebench: measuring idle power for {:.0} s (--idle-s 0 skips)",
            a.measure.idle_s
        );
    }
    let plan = Plan {
        jobs: runner::order(0, &variants, &seeds),
        tasks: vec![TaskRun {
            spec,
            data,
            finetune_source,
        }],
        device,
        device_label,
        results,
        idle_s: a.measure.idle_s,
        cooldown_s: a.measure.cooldown_s,
        stop_at_target: !a.full_budget,
        forecast_stop: a.forecast_stop,
        checkpoint: a.checkpoint.clone(),
        inference: a
            .inference
            .then(crate::engine::inference::InferenceOptions::default),
    };
    let as_json = a.measure.json;
    let series = runner::run_series(
        &plan,
        meter.as_mut(),
        &probes,
        |label| {
            Box::new(crate::orchestrate::progress::ProgressObserver::new(
                label.to_string(),
            ))
        },
        |rec| {
            if as_json {
                println!("{}", record_json(rec));
            } else {
                println!("{}", crate::cli::summary::summary_line(rec));
                if let Some(inf) = &rec.inference {
                    println!("  {}", inf.summary());
                }
            }
        },
    )
    .map_err(Failure::Runtime)?;
    if !as_json {
        if let Some(i) = &series.idle {
            println!("idle power: {:.2} W (sd {:.2} W)", i.mean_w, i.sd_w);
        }
        if series
            .records
            .iter()
            .any(crate::record::energy::is_estimated)
        {
            println!("note: energy is ESTIMATED (no readable counter): labelled estimated_tdp_load, never ranked with measurements");
        }
    }
    let all_ok = series.records.iter().all(|r| r.status == Status::Ok);
    Ok(if all_ok { 0 } else { 1 })
}

/// Read the task's full-budget f32 runs, choose T by the knee, print (and write) the evidence.
fn target_cmd(a: TargetArgs) -> Result<(), Failure> {
    let t = crate::analyse::target::choose(&a.dirs, &a.task, a.grid_pp).map_err(usage)?;
    for sk in &t.skipped {
        eprintln!("joulebench: skipping {} ({})", sk.path.display(), sk.why);
    }
    let (choice, aligned, direction, chance) = (t.choice, t.aligned, t.direction, t.chance);
    if let Some(path) = &a.csv {
        crate::record::write_atomic(path, aligned.to_csv().as_bytes()).map_err(usage)?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&choice).map_err(usage)?);
        return Ok(());
    }
    let mut steps: Vec<usize> = choice.steps_to_target.iter().map(|s| s.1).collect();
    steps.sort_unstable();
    if direction == crate::spec::task::Direction::Lower {
        println!(
            "{}: {} seeds; knee of the mean curve at step {} (epoch {:.2}), loss {:.4}; plateau {:.4} (lower is better)",
            a.task,
            choice.seeds,
            choice.knee_step,
            choice.knee_epoch,
            choice.knee_quality,
            choice.plateau_quality
        );
        println!(
            "target T = {:.4} (knee loss rounded up to {}, reached by every seed; c = {chance:.4}): steps to T median {}, min {}, max {}",
            choice.target,
            a.grid_pp / 100.0,
            steps[steps.len() / 2],
            steps[0],
            steps[steps.len() - 1]
        );
        return Ok(());
    }
    println!(
        "{}: {} seeds; knee of the mean curve at step {} (epoch {:.2}), quality {:.2} %; plateau {:.2} %",
        a.task,
        choice.seeds,
        choice.knee_step,
        choice.knee_epoch,
        100.0 * choice.knee_quality,
        100.0 * choice.plateau_quality
    );
    println!(
        "target T = {:.2} % (knee quality rounded down to {} pp, reached by every seed): steps to T median {}, min {}, max {}",
        100.0 * choice.target,
        a.grid_pp,
        steps[steps.len() / 2],
        steps[0],
        steps[steps.len() - 1]
    );
    Ok(())
}

/// The locks of `run_ids` in `results`, or a usage error naming the run another process is
/// making there.
fn lock_runs(
    results: &crate::record::ResultsDir,
    run_ids: &[String],
) -> Result<Vec<crate::record::lock::RunLock>, Failure> {
    let mut locks = Vec::new();
    for id in run_ids {
        match crate::record::lock::try_lock(results, id).map_err(|e| Failure::Runtime(e.into()))? {
            Some(l) => locks.push(l),
            None => {
                return Err(usage(anyhow::anyhow!(
                    "run {id} is being made by another joulebench process in {} (its lock is held); wait for it or use another --results",
                    results.root().display()
                )))
            }
        }
    }
    Ok(locks)
}

#[cfg(test)]
mod clap_tests {
    /// clap's own consistency checks (a flag without `#[arg(long)]` becomes a positional, and
    /// clap panics on every command line in a debug build): catch it here, not in a user's shell.
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn pauses_are_bounded_seconds() {
        use super::check_pause_s;
        for ok in [0.0, 30.0, crate::orchestrate::runner::MAX_PAUSE_S] {
            assert_eq!(check_pause_s("--idle-s", ok), Ok(()));
        }
        // 1e300 s overflowed the timer (a panic, exit 101) before the bound.
        for bad in [
            -1.0,
            f64::NAN,
            f64::INFINITY,
            1e300,
            crate::orchestrate::runner::MAX_PAUSE_S + 1.0,
        ] {
            let e = check_pause_s("--cooldown-s", bad).unwrap_err().to_string();
            assert!(
                e.starts_with("--cooldown-s must be") && e.len() < 120,
                "{e}"
            );
        }
    }

    #[test]
    fn one_line_does_not_repeat_a_cause_the_message_already_holds() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied");
        let e = anyhow::Error::new(crate::record::ResultsError::Write {
            path: "/r/runs/x.json".into(),
            source: io,
        })
        .context("saving run x");
        assert_eq!(
            super::one_line(&e),
            "saving run x: writing /r/runs/x.json: permission denied"
        );
        // A plain chain keeps every cause, on one line.
        let e = anyhow::anyhow!("line 1\nline 2").context("reading task");
        assert_eq!(super::one_line(&e), "reading task: line 1 line 2");
    }
}
