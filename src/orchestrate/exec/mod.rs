//! `joulebench exec`: measure a foreign training program (PyTorch, JAX, a user's own script) to
//! its target under the same protocol as `run`.
//!
//! Owns: the series of a program's runs (system read once, idle baseline once, then per seed a
//! cooldown, a random start delay and one measured window around the whole child process), the
//! energy at each eval the program reports (the meter read the moment its line arrives), the
//! stop at target (SIGTERM, then SIGKILL after a grace period), the run's status from what the
//! program did, and its run record. Must not: parse argv (cli) or read a report line itself
//! (`events`) or manage the process (`child`).
//!
//! The window opens before the program starts and closes after it is reaped, so everything it
//! does is on the meter. ETT is counted from the program's MLLOG `run_start` (its setup, before
//! that line, is a separate `setup` phase), or from the program's start when it prints none
//! (flagged `no_run_start`).

pub mod child;
pub mod events;
pub mod outcome;

use crate::measure::devices::GpuNode;
use crate::measure::system::{self, SystemInfo};
use crate::measure::IdleBaseline;
use crate::measure::{DeviceSync, MeasuredWindow, Meter, MeterError, MeterProbe};
use crate::orchestrate::runner::RunExtras;
use crate::record::curve::{CurvePoint, EventLog};
use crate::record::{self, EngineInfo, ResultsDir, RunRecord};
use crate::spec::task::Direction;
use crate::spec::task::TaskSpec;
use crate::spec::variant::Variant;
use child::{Running, Stream};
use events::{LineEvent, Tracked};
use outcome::{run_record, RecordInputs};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often the events file is read, and how long the main loop waits for a line.
const POLL: Duration = Duration::from_millis(50);
/// How long the readers may stay open after the program exited (a grandchild holding its
/// stdout open must not hang the series).
const LINGER: Duration = Duration::from_secs(2);
/// Malformed lines quoted in the run file (all are counted).
const MALFORMED_EXAMPLES: usize = 5;

/// Environment variables recorded because they change what a program computes or on what.
pub const COMPUTE_ENV: &[&str] = &[
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "CUBLAS_WORKSPACE_CONFIG",
    "NVIDIA_TF32_OVERRIDE",
    "PYTORCH_CUDA_ALLOC_CONF",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "TORCH_NUM_THREADS",
    "RAYON_NUM_THREADS",
    "CANDLE_NUM_THREADS",
    "XLA_FLAGS",
    "JAX_PLATFORMS",
    "TF_CPP_MIN_LOG_LEVEL",
    "PYTHONHASHSEED",
    "PYTHONUNBUFFERED",
    "JOULEBENCH_SEED",
];

/// What the program is measured against.
#[derive(Debug, Clone)]
pub struct ExecTask {
    /// The task name in run ids and the leaderboard.
    pub name: String,
    /// The quality metric's name as the leaderboard shows it (`accuracy`, `eval_loss`, ...).
    pub metric: String,
    pub tracked: Tracked,
    pub target: f64,
    pub chance: f64,
    /// The shipped task, when `--task` named one.
    pub spec: Option<TaskSpec>,
}

/// A validated `exec` series: everything checked before anything is written.
pub struct ExecPlan {
    pub task: ExecTask,
    pub variant: Variant,
    pub seeds: Vec<u64>,
    /// The command with `{seed}` still in it.
    pub argv: Vec<String>,
    /// `--events PATH` (may hold `{seed}`).
    pub events: Option<String>,
    pub engine: EngineInfo,
    /// `--engine-label`: the user's words shown beside the engine.
    pub engine_user_label: Option<String>,
    /// The part of run ids that names the engine (`exec-python3-mnist_mlp`).
    pub engine_slug: String,
    pub device_label: String,
    pub results: ResultsDir,
    pub system: SystemInfo,
    pub idle_s: f64,
    pub cooldown_s: f64,
    pub stop_at_target: bool,
    pub grace_s: f64,
    pub time_limit_s: Option<f64>,
    /// Set for the child beyond our own environment (`JOULEBENCH_SEED` is added per run).
    pub env: Vec<(String, String)>,
    pub stdout_to_stderr: bool,
}

/// `{seed}` replaced in a command word or path.
pub fn substitute(word: &str, seed: u64) -> String {
    word.replace("{seed}", &seed.to_string())
}

/// A foreign program in a suite (`[[exec]]` in `models/suite-*.toml`), frozen into the plan:
/// it runs each of its tasks x variants x the suite's seeds like a native entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    /// Shown beside the engine (`exec: torch 2.9 [NAME]`) and part of the run ids.
    pub name: String,
    /// The command; `{seed}`, `{variant}`, `{task}` and `{task_snake}` (the task name with
    /// `_` for `-`) are replaced per run. Relative paths are from the sweep's working folder.
    pub command: Vec<String>,
    pub tasks: Vec<String>,
    pub variants: Vec<String>,
    #[serde(default)]
    pub stop_at_target: bool,
    #[serde(default)]
    pub max_time_s: Option<f64>,
    /// The GPUs its runs are metered on, as `exec --devices` takes them (`all`, `0,1`,
    /// UUIDs): every listed board in one window, on a meter of their own. Absent: the sweep's
    /// meter and device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<String>,
}

/// A suite's `[[exec]]` entry that cannot be planned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExecSpecError {
    #[error("exec name '{0}': 1-40 characters of letters, digits, '-', '.', '_'")]
    BadName(String),
    #[error("exec '{0}': command is empty")]
    EmptyCommand(String),
    #[error("exec '{0}': needs tasks and variants")]
    NothingToRun(String),
    #[error("exec '{0}': max_time_s must be positive")]
    BadTimeLimit(String),
    #[error("exec '{name}': {why}")]
    BadDevices { name: String, why: String },
}

/// A program that cannot be run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProgramError {
    #[error("the command is empty")]
    Empty,
    #[error("command '{0}': no executable file there")]
    NotExecutable(String),
    #[error("command '{0}': not found on PATH")]
    NotOnPath(String),
}

impl ExecSpec {
    /// Why the spec cannot be planned, if it cannot.
    pub fn check(&self) -> Result<(), ExecSpecError> {
        let label_ok = !self.name.is_empty()
            && self.name.len() <= 40
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
        if !label_ok {
            return Err(ExecSpecError::BadName(self.name.clone()));
        }
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(ExecSpecError::EmptyCommand(self.name.clone()));
        }
        if self.tasks.is_empty() || self.variants.is_empty() {
            return Err(ExecSpecError::NothingToRun(self.name.clone()));
        }
        if let Some(t) = self.max_time_s {
            if !(t > 0.0 && t.is_finite()) {
                return Err(ExecSpecError::BadTimeLimit(self.name.clone()));
            }
        }
        if let Some(d) = &self.devices {
            crate::measure::devices::parse_devices(d).map_err(|why| ExecSpecError::BadDevices {
                name: self.name.clone(),
                why: why.replacen("--devices", "devices", 1),
            })?;
        }
        Ok(())
    }

    /// Its `devices` resolved on `node` (None when it names none).
    pub fn selection(
        &self,
        node: Option<&dyn GpuNode>,
    ) -> anyhow::Result<Option<crate::measure::devices::Selection>> {
        let Some(d) = &self.devices else {
            return Ok(None);
        };
        let spec = crate::measure::devices::parse_devices(d).map_err(anyhow::Error::msg)?;
        let node = node.ok_or_else(|| {
            anyhow::anyhow!(
                "[[exec]] '{}' devices = \"{d}\": no NVML on this machine to meter them",
                self.name
            )
        })?;
        let mut sel = crate::measure::devices::select(node, &spec, None)
            .map_err(|e| anyhow::anyhow!("[[exec]] '{}' devices = \"{d}\": {e}", self.name))?;
        sel.note = Some(format!("[[exec]] '{}' devices = \"{d}\"", self.name));
        Ok(Some(sel))
    }

    /// The command of one task and variant (`{seed}` is left for the run).
    pub fn command_for(&self, task: &str, variant: &str) -> Vec<String> {
        self.command
            .iter()
            .map(|w| {
                w.replace("{variant}", variant)
                    .replace("{task_snake}", &task.replace('-', "_"))
                    .replace("{task}", task)
            })
            .collect()
    }
}

/// The environment a program gets beyond ours: unbuffered Python output (otherwise an eval
/// line arrives late, with the energy of whatever ran after it) and the GPUs it is metered on
/// as `CUDA_VISIBLE_DEVICES` (`i` on `cuda:i`, the UUIDs under `--devices`) unless it is set.
pub fn child_env(visible_devices: Option<String>) -> Vec<(String, String)> {
    let mut env = vec![];
    if std::env::var_os("PYTHONUNBUFFERED").is_none() {
        env.push(("PYTHONUNBUFFERED".to_string(), "1".to_string()));
    }
    if let Some(v) = visible_devices {
        if std::env::var_os("CUDA_VISIBLE_DEVICES").is_none() {
            env.push(("CUDA_VISIBLE_DEVICES".to_string(), v));
        }
    }
    env
}

/// The program's path when it can be run: a word with a `/` must be an executable file, a
/// bare word must be found as one on PATH.
pub fn resolve_program(word: &str) -> Result<PathBuf, ProgramError> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if word.is_empty() {
        return Err(ProgramError::Empty);
    }
    if word.contains('/') {
        let p = PathBuf::from(word);
        return if runnable(&p) {
            Ok(p)
        } else {
            Err(ProgramError::NotExecutable(word.to_string()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(word))
        .find(|p| runnable(p))
        .ok_or_else(|| ProgramError::NotOnPath(word.to_string()))
}

/// The program's name as the engine shows it (its file name).
pub fn program_name(program: &std::path::Path) -> String {
    program
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("program")
        .to_string()
}

impl ExecPlan {
    /// The plan of one sweep entry: the suite's program for one shipped task and variant,
    /// measured on the sweep's device into its results folder.
    #[allow(clippy::too_many_arguments)]
    pub fn for_entry(
        spec: &ExecSpec,
        task: &TaskSpec,
        chance: f64,
        variant: &Variant,
        device_label: &str,
        results: ResultsDir,
        system: SystemInfo,
        idle_s: f64,
        cooldown_s: f64,
    ) -> Result<ExecPlan, ProgramError> {
        let mut argv = spec.command_for(&task.name, &variant.name);
        let program = resolve_program(&argv[0])?;
        argv[0] = program.display().to_string();
        let name = program_name(&program);
        let gpu = device_label
            .strip_prefix("cuda:")
            .and_then(|i| i.parse().ok());
        Ok(ExecPlan {
            task: ExecTask {
                name: task.name.clone(),
                metric: task.metric.as_str().into(),
                // The task's own metric: `eval_accuracy`, or `eval_loss` for a loss task.
                tracked: Tracked {
                    key: task.metric.mllog_key().into(),
                    direction: task.metric.direction(),
                },
                target: task.target.value,
                chance,
                spec: Some(task.clone()),
            },
            variant: variant.clone(),
            seeds: Vec::new(),
            engine: EngineInfo {
                kind: "exec".into(),
                label: engine_label(None, &name, Some(&spec.name)),
                framework: None,
                program: name,
            },
            engine_user_label: Some(spec.name.clone()),
            engine_slug: engine_slug(
                &spec.command_for(&task.name, &variant.name),
                Some(&spec.name),
            ),
            argv,
            events: None,
            device_label: device_label.to_string(),
            results,
            system,
            idle_s,
            cooldown_s,
            stop_at_target: spec.stop_at_target,
            grace_s: 10.0,
            time_limit_s: spec.max_time_s,
            env: child_env(gpu.map(|i: usize| i.to_string())),
            stdout_to_stderr: false,
        })
    }
}

/// The run id of one seed: the variant part names the engine too, so a program's runs never
/// share an id with joulebench's own runs of the same task, variant and seed.
pub fn run_id(plan_task: &str, variant: &str, engine_slug: &str, seed: u64, sys: &str) -> String {
    record::run_id(plan_task, &format!("{variant}-{engine_slug}"), seed, sys)
}

impl ExecPlan {
    pub fn run_id(&self, seed: u64) -> String {
        run_id(
            &self.task.name,
            &self.variant.name,
            &self.engine_slug,
            seed,
            &self.system.system_id,
        )
    }
}

/// A window edge that synchronises nothing: the program's device work is its own, and its
/// process has ended by the time the window closes.
struct NoSync;
impl DeviceSync for NoSync {
    fn synchronize(&self) -> Result<(), MeterError> {
        Ok(())
    }
}

/// Run every seed of the plan; each record is written the moment its run ends.
pub fn run_series(
    plan: &ExecPlan,
    meter: &mut dyn Meter,
    _probes: &[MeterProbe],
    mut on_record: impl FnMut(&RunRecord),
) -> anyhow::Result<Vec<RunRecord>> {
    plan.results.write_system(&plan.system)?;
    let idle = crate::orchestrate::runner::idle_baseline(meter, plan.idle_s)?;
    let mut delay = crate::orchestrate::runner::start_delay_rng();
    let mut out = Vec::new();
    for (i, &seed) in plan.seeds.iter().enumerate() {
        if i > 0 && plan.cooldown_s > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(plan.cooldown_s));
        }
        std::thread::sleep(Duration::from_millis(delay.below(101) as u64));
        let rec = run_one(plan, seed, meter, idle.as_ref(), &RunExtras::default())?;
        on_record(&rec);
        out.push(rec);
    }
    Ok(out)
}

/// What one run of the program produced, before it is scored.
#[derive(Default)]
struct Observed {
    curve: Vec<CurvePoint>,
    events: EventLog,
    framework: Option<String>,
    /// MLPerf `lowest_numerical_precision_*` lines: key -> dtype as the program wrote it.
    declared_precision: BTreeMap<String, String>,
    /// (seconds since the window opened, energy since it opened) at `run_start`.
    run_start: Option<(f64, f64)>,
    run_stop: Option<(f64, f64)>,
    run_stop_status: Option<String>,
    evals_before_run_start: usize,
    output_lines: usize,
    malformed: usize,
    malformed_examples: Vec<String>,
    over_long: usize,
    reached_at: Option<Instant>,
    /// joulebench sent SIGTERM because the program reached T.
    stopped_for_target: bool,
    signals_sent: Vec<String>,
    timed_out: bool,
}

impl Observed {
    fn malformed(&mut self, stream: Stream, line_no: usize, why: &str) {
        self.malformed += 1;
        if self.malformed_examples.len() < MALFORMED_EXAMPLES {
            self.malformed_examples
                .push(format!("{} line {line_no}: {why}", stream.as_str()));
        }
    }
}

fn log_temp(
    results: &ResultsDir,
    run_id: &str,
) -> anyhow::Result<(PathBuf, crate::base::atomic::NamedTempFile, std::fs::File)> {
    let dir = results.root().join("logs");
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    let path = dir.join(format!("{run_id}.log"));
    let tmp = crate::base::atomic::temp_beside(&path)
        .map_err(|e| anyhow::anyhow!("creating a temp file for {}: {e}", path.display()))?;
    let f = tmp.as_file().try_clone()?;
    Ok((path, tmp, f))
}

/// One measured run of the program for `seed`, its run file written when it ends.
pub fn run_one(
    plan: &ExecPlan,
    seed: u64,
    meter: &mut dyn Meter,
    idle: Option<&IdleBaseline>,
    extras: &RunExtras,
) -> anyhow::Result<RunRecord> {
    let task = &plan.task;
    let run_id = plan.run_id(seed);
    let argv: Vec<String> = plan.argv.iter().map(|w| substitute(w, seed)).collect();
    let events_file = plan
        .events
        .as_deref()
        .map(|p| PathBuf::from(substitute(p, seed)));
    let mut env = plan.env.clone();
    env.push(("JOULEBENCH_SEED".into(), seed.to_string()));
    // What the program sees of the variables that matter, ours overridden by what we set.
    let mut seen_env: std::collections::BTreeMap<String, String> = COMPUTE_ENV
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    for (k, v) in &env {
        if COMPUTE_ENV.contains(&k.as_str()) {
            seen_env.insert(k.clone(), v.clone());
        }
    }
    // The program's log is written to a temp file and persisted when the run ends; removed if
    // the run errors out before that.
    let (log_path, log_tmp, log_file) = log_temp(&plan.results, &run_id)?;
    let started_at = system::utc_now();
    let co_start = crate::orchestrate::host::co_tenancy_now();
    let mut obs = Observed::default();
    obs.events.point("seed", json!(seed), json!({}));
    obs.events
        .point("submission_platform", json!(plan.engine.label), json!({}));
    let sync = NoSync;
    let mut window = MeasuredWindow::open(meter, &sync)?;
    let spawned = Running::spawn(child::Spec {
        argv: &argv,
        env: &env,
        stdout_to_stderr: plan.stdout_to_stderr,
        log: log_file,
        events_file: events_file.clone(),
        poll: POLL,
    });
    let label = format!("{} {} seed {seed}", task.name, plan.variant.name);
    let (exit, spawn_error) = match spawned {
        Err(e) => (None, Some(format!("could not start {}: {e}", argv[0]))),
        Ok(mut running) => match watch(plan, &label, &mut running, &mut window, &mut obs) {
            Ok(exit) => {
                running.finish();
                (exit, None)
            }
            Err(e) => {
                // The meter failed mid-run: end the program rather than leave it running.
                running.signal(libc::SIGKILL);
                let deadline = Instant::now() + LINGER;
                while running.poll_exit().is_none() && Instant::now() < deadline {
                    std::thread::sleep(POLL);
                }
                running.finish();
                return Err(e);
            }
        },
    };
    let report = window.close()?;
    let co_end = crate::orchestrate::host::co_tenancy_now();
    crate::base::atomic::persist(log_tmp, &log_path)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", log_path.display()))?;
    let rec = run_record(
        plan,
        RecordInputs {
            seed,
            run_id,
            argv,
            events_file,
            env: seen_env,
            exit,
            spawn_error,
            report,
            meter,
            idle,
            started_at,
            co_start,
            co_end,
            extras,
        },
        obs,
    );
    let (rec, events, timeline) = rec;
    plan.results.write_run(&rec, &events, &timeline)?;
    Ok(rec)
}

/// Read the program's lines until it has exited and its streams are closed: each eval is
/// stamped with the meter's reading as its line arrives; the program is stopped at the target
/// (when asked) and at the time limit.
fn watch(
    plan: &ExecPlan,
    label: &str,
    running: &mut Running,
    window: &mut MeasuredWindow<'_>,
    obs: &mut Observed,
) -> anyhow::Result<Option<child::Exit>> {
    let task = &plan.task;
    let from_file = plan.events.is_some();
    let t0 = Instant::now();
    let grace = Duration::from_secs_f64(plan.grace_s);
    let mut term_at: Option<Instant> = None;
    let mut exited_at: Option<Instant> = None;
    let mut lines = [0usize; 3];
    let mut tail_stopped = false;
    loop {
        if let Some((stream, line, _at)) = running.next(POLL) {
            let n = &mut lines[stream as usize];
            *n += 1;
            let line_no = *n;
            obs.output_lines += 1;
            let event = match stream {
                Stream::EventsFile => events::parse_jsonl_line(&line.text, &task.tracked),
                _ => events::parse_mllog_line(&line.text, &task.tracked),
            };
            if line.truncated {
                obs.over_long += 1;
                if !matches!(event, LineEvent::Other) || line.text.contains(events::MLLOG_MARK) {
                    obs.malformed(stream, line_no, "line longer than 64 KiB");
                    continue;
                }
            }
            match event {
                LineEvent::Other => {}
                LineEvent::Malformed(why) => obs.malformed(stream, line_no, &why),
                LineEvent::Framework(f) => obs.framework = Some(f),
                LineEvent::Precision { key, dtype } => {
                    obs.declared_precision.insert(key, dtype);
                }
                LineEvent::RunStart => {
                    if obs.run_start.is_none() {
                        let m = window.mark()?;
                        obs.run_start = Some((m.t_s, m.energy_j));
                        obs.evals_before_run_start = obs.curve.len();
                        obs.events.interval("run_start", true, json!({}));
                    }
                }
                LineEvent::RunStop { status } => {
                    if obs.run_stop.is_none() {
                        let m = window.mark()?;
                        obs.run_stop = Some((m.t_s, m.energy_j));
                        obs.events.interval(
                            "run_stop",
                            false,
                            json!({"status": status, "energy_j": m.energy_j}),
                        );
                        obs.run_stop_status = status;
                    }
                }
                LineEvent::Eval(e) => {
                    // With an events file, quality comes from it alone (no double count).
                    if from_file != (stream == Stream::EventsFile) {
                        continue;
                    }
                    let m = window.mark()?;
                    let (t0_s, e0_j) = obs.run_start.unwrap_or((0.0, 0.0));
                    let point = CurvePoint {
                        step: e.step.map_or(obs.curve.len() + 1, |s| s as usize),
                        epoch: e.epoch.unwrap_or(0.0),
                        energy_j: m.energy_j - e0_j,
                        time_s: m.t_s - t0_s,
                        value: e.value,
                        train_loss: e.train_loss.unwrap_or(f64::NAN),
                        phase: "train".into(),
                        scored: true,
                    };
                    obs.events.point(
                        &task.tracked.key,
                        json!(e.value),
                        json!({"epoch_num": point.epoch, "step": point.step, "energy_j": point.energy_j}),
                    );
                    let reached = task.tracked.direction.reached(e.value, task.target);
                    eprintln!(
                        "joulebench: {label}: eval {} {} = {} (T {}{}) at {:.1} J, {:.1} s",
                        point.step,
                        task.tracked.key,
                        e.value,
                        if task.tracked.direction == Direction::Higher {
                            ">= "
                        } else {
                            "<= "
                        },
                        task.target,
                        point.energy_j,
                        point.time_s
                    );
                    obs.curve.push(point);
                    if reached && obs.reached_at.is_none() {
                        obs.reached_at = Some(Instant::now());
                        if plan.stop_at_target && running.signal(libc::SIGTERM) {
                            obs.signals_sent.push("SIGTERM".into());
                            obs.stopped_for_target = true;
                            term_at = Some(Instant::now());
                        }
                    }
                }
            }
            continue;
        }
        // No line for a poll interval: look at the process and the clocks.
        if let Some(limit) = plan.time_limit_s {
            if term_at.is_none() && t0.elapsed().as_secs_f64() > limit && exited_at.is_none() {
                obs.timed_out = true;
                if running.signal(libc::SIGTERM) {
                    obs.signals_sent.push("SIGTERM".into());
                    term_at = Some(Instant::now());
                }
            }
        }
        if let Some(t) = term_at {
            if t.elapsed() > grace
                && exited_at.is_none()
                && !obs.signals_sent.iter().any(|s| s == "SIGKILL")
                && running.signal(libc::SIGKILL)
            {
                obs.signals_sent.push("SIGKILL".into());
            }
        }
        if running.poll_exit().is_some() && exited_at.is_none() {
            exited_at = Some(Instant::now());
        }
        if let Some(t) = exited_at {
            if !tail_stopped {
                running.stop_tail();
                tail_stopped = true;
            }
            if running.streams_open() == 0 {
                break;
            }
            if t.elapsed() > LINGER {
                // Something it started still holds its output open: end it, so it does not
                // run on into the next window.
                if running.kill_leftovers() {
                    obs.signals_sent.push("SIGKILL (leftover processes)".into());
                }
                break;
            }
        }
    }
    Ok(running.poll_exit())
}

/// `exec: torch 2.9.1`, or `exec: python3` when the program named no framework, with the
/// user's `--engine-label` in brackets.
pub fn engine_label(framework: Option<&str>, program: &str, user: Option<&str>) -> String {
    let base = match framework {
        Some(f) => format!("exec: {f}"),
        None => format!("exec: {program}"),
    };
    match user {
        Some(l) => format!("{base} [{l}]"),
        None => base,
    }
}

/// The run-id part naming a command: its first word's file stem, and for an interpreter also
/// the script's (`python3-mnist_mlp`).
pub fn engine_slug(argv: &[String], user: Option<&str>) -> String {
    let stem = |w: &str| {
        std::path::Path::new(w)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(w)
            .to_string()
    };
    let first = argv.first().map(|w| stem(w)).unwrap_or_default();
    let interpreter = [
        "python", "bash", "sh", "node", "ruby", "perl", "julia", "Rscript", "uv",
    ]
    .iter()
    .any(|p| first.starts_with(p));
    let mut slug = format!("exec-{first}");
    if interpreter {
        if let Some(script) = argv[1..].iter().find(|a| !a.starts_with('-')) {
            slug.push('-');
            slug.push_str(&stem(script));
        }
    }
    if let Some(l) = user {
        slug.push('-');
        slug.push_str(l);
    }
    slug
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_names() {
        let argv: Vec<String> = ["python3", "-u", "scripts/torch/mnist_mlp.py", "--seed", "1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(engine_slug(&argv, None), "exec-python3-mnist_mlp");
        assert_eq!(
            engine_slug(&["/opt/bin/train".into()], Some("v2")),
            "exec-train-v2"
        );
        assert_eq!(
            engine_label(Some("torch 2.9.1"), "python3", None),
            "exec: torch 2.9.1"
        );
        assert_eq!(engine_label(None, "train", Some("v2")), "exec: train [v2]");
        assert_eq!(substitute("--seed={seed}", 4), "--seed=4");
        let id = run_id("mnist-mlp", "f32", "exec-python3-mnist_mlp", 2, "ab12");
        assert_eq!(id, "mnist-mlp--f32-exec-python3-mnist-mlp--seed-2--ab12");
    }
}
