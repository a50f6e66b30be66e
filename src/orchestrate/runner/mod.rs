//! The runner: from a validated plan to written run files.
//!
//! Owns: the order of a measured series (idle baseline, interleaved variants and seeds,
//! cooldown, random start delay; docs/design/measurement.md section 3). Its parts, each one
//! job: `session.rs` paces a series and pretrains fine-tune sources; `one_run.rs` makes one
//! run (train, score, typed record, write the moment the run ends so a crash loses nothing
//! finished); `preflight.rs` checks that a task's data can make a run at all, before anything
//! is written or measured. Must not: parse argv or print (cli), or touch a meter outside the
//! idle baseline and training.

mod one_run;
mod preflight;
mod session;

pub use one_run::RunExtras;
pub use preflight::{preflight_data, prepared_sizes};
pub use session::Session;

use crate::data::DatasetBundle;
use crate::engine::model::SeededRng;
use crate::engine::train::Observer;
use crate::measure::system::{self, SystemInfo};
use crate::measure::{self, IdleBaseline, Meter, MeterProbe};
use crate::record::{ResultsDir, RunRecord};
use crate::spec::task::TaskSpec;
use crate::spec::variant::Variant;
use candle_core::Device;
use std::time::Duration;

/// One task of a series: its spec and its loaded (checksum-verified) data.
pub struct TaskRun {
    pub spec: TaskSpec,
    pub data: DatasetBundle,
    /// The task a `finetune` variant starts from (its `[finetune] source`), when one runs.
    pub finetune_source: Option<Box<TaskRun>>,
}

/// One run to do: a task (index into `Plan::tasks`), a variant and a seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub task: usize,
    pub variant: Variant,
    pub seed: u64,
}

/// Everything a series needs, validated before anything trains. `jobs` are run in the order
/// given (`order` interleaves variants across seeds; a sweep may randomise).
pub struct Plan {
    pub tasks: Vec<TaskRun>,
    pub jobs: Vec<Job>,
    pub device: Device,
    pub device_label: String,
    pub results: ResultsDir,
    pub idle_s: f64,
    pub cooldown_s: f64,
    pub stop_at_target: bool,
    /// `--forecast-stop` (or a suite's `forecast_stop`): see `engine::train::TrainOptions`.
    pub forecast_stop: bool,
    /// `--checkpoint`: the weights every `finetune` job starts from (else the source task's
    /// harness checkpoint, pretrained in this series when missing).
    pub checkpoint: Option<std::path::PathBuf>,
    /// Measure inference energy of each trained model (`run --inference`).
    pub inference: Option<crate::engine::inference::InferenceOptions>,
}

/// The longest idle baseline or cooldown accepted, in seconds (one day): a typo such as
/// `1e300` is refused instead of overflowing the timer (a panic).
pub const MAX_PAUSE_S: f64 = 86_400.0;

/// An idle baseline or cooldown out of range; `name` is the flag or key that gave it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{name} must be a non-negative number of seconds (at most {MAX_PAUSE_S}), got {value:?}")]
pub struct PauseError {
    pub name: String,
    pub value: f64,
}

/// An idle baseline or cooldown (`--idle-s`, a suite's or plan's `idle_s`): a number of
/// seconds in 0..=MAX_PAUSE_S.
pub fn check_pause_s(name: &str, v: f64) -> Result<(), PauseError> {
    if (0.0..=MAX_PAUSE_S).contains(&v) {
        Ok(())
    } else {
        Err(PauseError {
            name: name.to_string(),
            value: v,
        })
    }
}

/// The system a series on `device` records: its accelerator is what a usable NVML probe
/// found. Every command that needs run ids before running reads it the same way.
pub fn system_of(device: &str, probes: &[MeterProbe]) -> SystemInfo {
    let accelerator = probes
        .iter()
        .find(|p| (p.meter == "nvml" || p.meter == "amdgpu") && p.available)
        .map(|p| p.detail.clone());
    system::collect(device, accelerator)
}

/// The idle baseline of a series (docs/design/measurement.md section 3), or none when `idle_s` is 0.
pub fn idle_baseline(meter: &mut dyn Meter, idle_s: f64) -> anyhow::Result<Option<IdleBaseline>> {
    if idle_s <= 0.0 {
        return Ok(None);
    }
    Ok(Some(measure::idle::measure_idle(
        meter,
        Duration::from_secs_f64(idle_s),
    )?))
}

/// The generator of the random 0-100 ms start delays, seeded from the clock (the delays
/// decorrelate runs from periodic background activity; they need not repeat).
pub fn start_delay_rng() -> SeededRng {
    SeededRng::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        7,
    )
}

/// The records of a finished series, in the order written, and its idle baseline.
pub struct Series {
    pub records: Vec<RunRecord>,
    pub idle: Option<IdleBaseline>,
}

/// The jobs of one task: variants interleaved across seeds, rotating the start so no variant
/// always follows the same one (docs/design/measurement.md section 3).
pub fn order(task: usize, variants: &[Variant], seeds: &[u64]) -> Vec<Job> {
    let mut out = Vec::new();
    for (i, &seed) in seeds.iter().enumerate() {
        for k in 0..variants.len() {
            out.push(Job {
                task,
                variant: variants[(i + k) % variants.len()].clone(),
                seed,
            });
        }
    }
    out
}

/// Run every job of `plan` in order, handing each record (a fine-tune source's pretraining
/// first) to `on_record` as soon as its file is written.
pub fn run_series(
    plan: &Plan,
    meter: &mut dyn Meter,
    probes: &[MeterProbe],
    mut observer_for: impl FnMut(&str) -> Box<dyn Observer>,
    mut on_record: impl FnMut(&RunRecord),
) -> anyhow::Result<Series> {
    let mut session = Session::new(plan, meter, probes)?;
    session.measure_idle()?;
    let mut records = Vec::new();
    for job in &plan.jobs {
        let task = session.task(job)?;
        let label = format!("{} {} seed {}", task.spec.name, job.variant.name, job.seed);
        let mut obs = observer_for(&label);
        let rec = session.run_job(job, &RunExtras::default(), obs.as_mut())?;
        // A fine-tune's source, pretrained in this series: its own run, written before.
        for pre in session.take_pretraining() {
            on_record(&pre);
            records.push(pre);
        }
        on_record(&rec);
        records.push(rec);
    }
    Ok(Series {
        records,
        idle: session.into_idle(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::variant::baseline;

    #[test]
    fn order_interleaves_and_rotates() {
        let mut b = baseline();
        b.name = "b".into();
        let a = baseline();
        let o = order(0, &[a.clone(), b.clone()], &[1, 2]);
        let names: Vec<_> = o
            .iter()
            .map(|j| format!("{}{}", j.variant.name, j.seed))
            .collect();
        assert_eq!(names, ["f321", "b1", "b2", "f322"]);
    }
}
