//! `joulebench exec`: its flags and the checks made before anything is written.

use super::{detect_options, usage, Failure, MAX_SEEDS};
use crate::measure::devices::{self, DeviceSpec, Selection};
use crate::measure::nvml_gpu::NvmlNode;
use crate::measure::{self, MeterChoice};
use crate::orchestrate::exec::{self, events::Tracked, ExecPlan, ExecTask};
use crate::record::curve::Status;
use crate::record::{EngineInfo, ResultsDir};
use crate::spec::task;
use crate::spec::task::Direction;
use crate::spec::variant;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Clone)]
pub struct ExecArgs {
    /// A shipped task (or a task TOML) whose target T, chance c and metric the program is
    /// measured against; the program must train that task's workload.
    #[arg(long, conflicts_with_all = ["target", "name"])]
    pub task: Option<String>,
    /// Target of the tracked metric, without --task (needs --metric and --chance).
    #[arg(long, requires_all = ["metric", "chance"], allow_negative_numbers = true)]
    pub target: Option<f64>,
    /// Chance level of the metric (majority-class rate; for a loss, e.g. the unigram entropy),
    /// without --task: JPP counts energy per 0.01 of improvement from c to T.
    #[arg(long, allow_negative_numbers = true)]
    pub chance: Option<f64>,
    /// The key of the metric in the program's reports (MLLOG `key`, or the events file's
    /// `metric`). Default with --task: eval_accuracy.
    #[arg(long)]
    pub metric: Option<String>,
    /// higher or lower is better. Default: higher for eval_accuracy and with --task, lower
    /// for eval_loss; required for any other key.
    #[arg(long, value_parser = ["higher", "lower"])]
    pub direction: Option<String>,
    /// Task name in run ids and the leaderboard, without --task (default exec-<program>).
    #[arg(long)]
    pub name: Option<String>,
    /// Number of seeds (1..=N); each run gets JOULEBENCH_SEED and `{seed}` in the command.
    #[arg(long, conflicts_with = "seed")]
    pub seeds: Option<u64>,
    /// One explicit seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// The joulebench variant the program runs (f32, bf16-amp, tf32, ...), as it declares:
    /// joulebench cannot see inside it. Runs are compared with joulebench's of the same variant.
    /// A precision variant's record (native or emulated GEMMs) is derived from the device's
    /// capabilities, or taken from the program's MLLOG `lowest_numerical_precision_in_linear`
    /// and `..._in_attn` lines when it prints them.
    #[arg(long, default_value = "f32")]
    pub variant_label: String,
    /// Words shown beside the engine in the leaderboard (`exec: torch 2.9 [LABEL]`).
    #[arg(long)]
    pub engine_label: Option<String>,
    /// Read evals from this JSON-lines file (`{"step": .., "metric": .., "value": ..}`,
    /// `{seed}` allowed) instead of MLLOG lines on stdout and stderr.
    #[arg(long)]
    pub events: Option<String>,
    /// SIGTERM the program once it reports T (SIGKILL after --grace-s).
    #[arg(long)]
    pub stop_at_target: bool,
    /// Seconds between SIGTERM and SIGKILL.
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
    pub grace_s: f64,
    /// Wall-clock limit per run in seconds: then SIGTERM (SIGKILL after --grace-s), a DNF.
    #[arg(long, allow_negative_numbers = true)]
    pub max_time_s: Option<f64>,
    /// The GPUs metered in the one window, for a multi-GPU program (torchrun, DDP): `all`, or
    /// NVML indices and GPU- UUIDs (`0,1`, `GPU-8f3c...`). Default: the devices
    /// CUDA_VISIBLE_DEVICES names when it is set, else device 0 (the run file says which and
    /// why). Each device's energy is listed and boundary G is their sum; the program gets
    /// CUDA_VISIBLE_DEVICES = their UUIDs unless it is set.
    #[arg(long, conflicts_with = "device")]
    pub devices: Option<String>,
    /// Measurement options as for `run` (with --device cuda:i the program gets
    /// CUDA_VISIBLE_DEVICES=i unless it is set, and with --json its stdout goes to stderr).
    #[command(flatten)]
    pub measure: super::MeasureArgs,
    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

fn task_of(a: &ExecArgs, models_dir: &Path) -> Result<ExecTask, anyhow::Error> {
    let direction = |key: &str| -> Result<Direction, anyhow::Error> {
        match (a.direction.as_deref(), key) {
            (Some("higher"), _) => Ok(Direction::Higher),
            (Some(_), _) => Ok(Direction::Lower),
            (None, "eval_accuracy") => Ok(Direction::Higher),
            (None, "eval_loss") => Ok(Direction::Lower),
            (None, k) => anyhow::bail!(
                "--metric {k}: say whether higher or lower is better with --direction"
            ),
        }
    };
    if let Some(name) = &a.task {
        let spec = task::find(models_dir, name)?;
        let want = spec.metric.direction();
        let key = a
            .metric
            .clone()
            .unwrap_or_else(|| spec.metric.mllog_key().into());
        let dir = match a.direction {
            Some(_) => direction(&key)?,
            None => want,
        };
        if dir != want {
            anyhow::bail!(
                "task {} scores {} ({}); --metric {key} with --direction {} does not measure it",
                spec.name,
                spec.metric.as_str(),
                want.better(),
                dir.as_str()
            );
        }
        // c as joulebench's own runs of the task score it (from the shipped data, checked
        // against its checksums), so the program's runs rank beside them.
        let data = crate::data::load(spec.dataset, None)?;
        let chance = crate::engine::prepare::eval_chance(&spec, &data)?;
        return Ok(ExecTask {
            name: spec.name.clone(),
            metric: spec.metric.as_str().into(),
            tracked: Tracked {
                key,
                direction: dir,
            },
            target: spec.target.value,
            chance,
            spec: Some(spec),
        });
    }
    let (Some(target), Some(key), Some(chance)) = (a.target, a.metric.clone(), a.chance) else {
        anyhow::bail!("give --task NAME, or --target T --metric KEY --chance C");
    };
    if key.is_empty() || key.len() > 200 {
        anyhow::bail!("--metric must be 1-200 characters");
    }
    let dir = direction(&key)?;
    if !target.is_finite() || !chance.is_finite() {
        anyhow::bail!("--target and --chance must be finite numbers");
    }
    if !dir.reached(target, chance) || target == chance {
        anyhow::bail!(
            "--target {target} is not beyond --chance {chance} in the metric's direction ({})",
            dir.better()
        );
    }
    let program = a.command.first().map(String::as_str).unwrap_or("program");
    let name = a.name.clone().unwrap_or_else(|| {
        let stem = Path::new(program)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("program");
        format!("exec-{stem}")
    });
    if name.is_empty() || name.len() > 100 || name.contains("--") {
        anyhow::bail!("--name '{name}': 1-100 characters, no '--'");
    }
    Ok(ExecTask {
        name,
        metric: key.clone(),
        tracked: Tracked {
            key,
            direction: dir,
        },
        target,
        chance,
        spec: None,
    })
}

/// The GPU index of `cpu | cuda | cuda:i` (None for the CPU), without touching CUDA.
fn device_index(s: &str) -> Result<Option<usize>, anyhow::Error> {
    match s {
        "cpu" => Ok(None),
        "cuda" => Ok(Some(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .map(Some)
            .ok_or_else(|| anyhow::anyhow!("--device '{s}': expected cpu, cuda or cuda:<index>")),
    }
}

/// The GPU a program runs on (`cuda:i`) or the NVML devices of a multi-GPU window: `--device`
/// as given; `--devices` resolved on this node's NVML (an index or UUID that is not there, or
/// no NVML, is a usage error); neither: the NVML devices CUDA_VISIBLE_DEVICES names (else
/// device 0) where NVML works, else `cuda:0` where another meter sees a GPU (amdgpu), else
/// the CPU.
fn gpus_of(
    a: &ExecArgs,
    spec: Option<DeviceSpec>,
    metered_gpu: impl Fn(usize) -> bool,
) -> Result<(Option<usize>, Option<Selection>), Failure> {
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let on_nvml = |spec: &DeviceSpec| -> Result<Selection, anyhow::Error> {
        let node = NvmlNode::init()?;
        Ok(devices::select(&node, spec, visible.as_deref())?)
    };
    if let Some(d) = &a.measure.device {
        return Ok((device_index(d).map_err(usage)?, None));
    }
    if let Some(spec) = spec {
        let sel = on_nvml(&spec).map_err(|e| {
            usage(anyhow::anyhow!(
                "--devices {}: {e}",
                a.devices.as_deref().unwrap_or("")
            ))
        })?;
        return Ok((Some(sel.indices[0] as usize), Some(sel)));
    }
    if let Ok(sel) = on_nvml(&DeviceSpec::Visible) {
        return Ok((Some(sel.indices[0] as usize), Some(sel)));
    }
    Ok((metered_gpu(0).then_some(0), None))
}

pub fn exec_cmd(a: ExecArgs) -> Result<i32, Failure> {
    // Everything is checked here, before the idle baseline or any file.
    let models_dir = a
        .measure
        .models_dir
        .clone()
        .unwrap_or_else(task::default_models_dir);
    let task = task_of(&a, &models_dir).map_err(usage)?;
    let variant = variant::parse(&a.variant_label).map_err(usage)?;
    if let Some(l) = &a.engine_label {
        let ok = !l.is_empty()
            && l.len() <= 40
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
        if !ok {
            return Err(usage(anyhow::anyhow!(
                "--engine-label '{l}': 1-40 characters of letters, digits, '-', '.', '_'"
            )));
        }
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
    if !(a.grace_s >= 0.0 && a.grace_s.is_finite()) {
        return Err(usage(anyhow::anyhow!(
            "--grace-s must be a non-negative number of seconds, got {}",
            a.grace_s
        )));
    }
    if let Some(t) = a.max_time_s {
        if !(t > 0.0 && t.is_finite()) {
            return Err(usage(anyhow::anyhow!(
                "--max-time-s must be a positive number of seconds, got {t}"
            )));
        }
    }
    let program = exec::resolve_program(&a.command[0]).map_err(|e| usage(anyhow::anyhow!(e)))?;
    if let Some(ev) = &a.events {
        let p = PathBuf::from(exec::substitute(ev, seeds[0]));
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
        if parent.is_some_and(|d| !d.is_dir()) {
            return Err(usage(anyhow::anyhow!(
                "--events {ev}: folder {} does not exist",
                parent.map(|d| d.display().to_string()).unwrap_or_default()
            )));
        }
    }
    // A GPU whose board can be metered (NVML, or the amdgpu driver on an AMD node).
    let metered_gpu = |i: usize| {
        measure::probe_all(&detect_options(
            MeterChoice::Auto,
            Some(i),
            a.measure.cpu_tdp_w,
        ))
        .iter()
        .any(|p| (p.meter == "nvml" || p.meter == "amdgpu") && p.source.is_some())
    };
    let devices_spec = a
        .devices
        .as_deref()
        .map(devices::parse_devices)
        .transpose()
        .map_err(|m| usage(anyhow::anyhow!(m)))?;
    let (gpu, selection) = gpus_of(&a, devices_spec, metered_gpu)?;
    // One device chosen by default is the program's cuda:0, as before `--devices` existed;
    // several, or any asked for by `--devices`, are named by their NVML indices.
    let device_label = match (&selection, gpu) {
        (Some(sel), _) if a.devices.is_none() && sel.indices.len() == 1 => "cuda:0".to_string(),
        (Some(sel), _) => sel.device_label(),
        (None, Some(i)) => format!("cuda:{i}"),
        (None, None) => "cpu".to_string(),
    };
    if a.measure.results.exists() && !a.measure.results.is_dir() {
        return Err(usage(anyhow::anyhow!(
            "results folder {}: exists and is not a directory",
            a.measure.results.display()
        )));
    }
    let mut opts = detect_options(a.measure.meter, gpu, a.measure.cpu_tdp_w);
    opts.gpu_devices = selection.clone();
    let (mut meter, probes) = measure::detect_meter(&opts).map_err(usage)?;
    let system = crate::orchestrate::runner::system_of(&device_label, &probes);
    let program_name = exec::program_name(&program);
    let engine = EngineInfo {
        kind: "exec".into(),
        label: exec::engine_label(None, &program_name, a.engine_label.as_deref()),
        framework: None,
        program: program_name,
    };
    let engine_slug = exec::engine_slug(&a.command, a.engine_label.as_deref());
    let env = exec::child_env(match &selection {
        Some(sel) => Some(sel.uuids.join(",")),
        None => gpu.map(|i| i.to_string()),
    });
    let results_existing = ResultsDir::existing(&a.measure.results);
    let plan_probe = |seed: u64| {
        exec::run_id(
            &task.name,
            &variant.name,
            &engine_slug,
            seed,
            &system.system_id,
        )
    };
    if !a.measure.overwrite {
        if let Some(id) = seeds
            .iter()
            .map(|&s| plan_probe(s))
            .find(|id| results_existing.run_path(id).exists())
        {
            return Err(usage(anyhow::anyhow!(
                "run file {} exists (a finished run of the same task, variant, engine, seed and system); --overwrite replaces it, or use another --results",
                results_existing.run_path(&id).display()
            )));
        }
    }
    let results = ResultsDir::open(&a.measure.results)
        .map_err(usage)?
        .with_submission(a.measure.submission());
    let run_ids: Vec<String> = seeds.iter().map(|&s| plan_probe(s)).collect();
    let _locks = super::lock_runs(&results, &run_ids)?;
    let mut argv = a.command.clone();
    argv[0] = program.display().to_string();
    let plan = ExecPlan {
        task,
        variant,
        seeds,
        argv,
        events: a.events.clone(),
        engine,
        engine_user_label: a.engine_label.clone(),
        engine_slug,
        device_label: device_label.clone(),
        results,
        system,
        idle_s: a.measure.idle_s,
        cooldown_s: a.measure.cooldown_s,
        stop_at_target: a.stop_at_target,
        grace_s: a.grace_s,
        time_limit_s: a.max_time_s,
        env,
        stdout_to_stderr: a.measure.json,
    };
    eprintln!(
        "joulebench: exec {} as {} on {device_label}, T = {} ({}), meter {}, boundary {}, results in {}",
        plan.task.name,
        plan.variant.name,
        plan.task.target,
        plan.task.tracked.direction.better(),
        meter.name(),
        meter.boundary().as_str(),
        plan.results.root().display()
    );
    if a.measure.idle_s > 0.0 {
        eprintln!(
            "joulebench: measuring idle power for {:.0} s (--idle-s 0 skips)",
            a.measure.idle_s
        );
    }
    let as_json = a.measure.json;
    let records = exec::run_series(&plan, meter.as_mut(), &probes, |rec| {
        if as_json {
            match serde_json::to_string(rec) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("joulebench: encoding run {}: {e}", rec.run_id),
            }
        } else {
            println!("{}", crate::cli::summary::summary_line(rec));
        }
    })
    .map_err(Failure::Runtime)?;
    if !as_json && records.iter().any(crate::record::energy::is_estimated) {
        println!("note: energy is ESTIMATED (no readable counter): labelled estimated_tdp_load, never ranked with measurements");
    }
    Ok(if records.iter().all(|r| r.status == Status::Ok) {
        0
    } else {
        1
    })
}
