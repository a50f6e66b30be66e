//! From what a program did to its scored run record: the program's outcome (exit, signals,
//! evals, reports), its status, the phases of its window (setup, scored span, teardown),
//! ETT/TTT/JPP through `record::metrics::score`, and the run record itself.
//!
//! Owns: the status rules of a foreign run and the run record `exec` writes.
//! Must not: start, watch or signal the program (`mod.rs` and `child.rs` do), or write files.

use super::child;
use super::{engine_label, ExecPlan, Observed};
use crate::measure::system;
use crate::measure::IdleBaseline;
use crate::measure::{self, Meter};
use crate::orchestrate::runner::RunExtras;
use crate::record::curve::Status;
use crate::record::metrics;
use crate::record::setup::{DatasetInfo, EngineConfig, ModelInfo, RunConfig, TaskConfig};
use crate::record::{self, ExecInfo, Flops, Phase, QualitySummary, RunRecord, TimeSummary};
use std::path::PathBuf;

pub(super) struct RecordInputs<'m> {
    pub(super) seed: u64,
    pub(super) run_id: String,
    pub(super) argv: Vec<String>,
    pub(super) events_file: Option<PathBuf>,
    pub(super) env: std::collections::BTreeMap<String, String>,
    pub(super) exit: Option<child::Exit>,
    pub(super) spawn_error: Option<String>,
    pub(super) report: measure::WindowReport,
    pub(super) meter: &'m dyn Meter,
    pub(super) idle: Option<&'m IdleBaseline>,
    pub(super) started_at: String,
    pub(super) co_start: record::CoTenancy,
    pub(super) co_end: record::CoTenancy,
    pub(super) extras: &'m RunExtras,
}

/// What a program did, as far as its status goes.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// An eval at or beyond T arrived.
    pub reached: bool,
    /// joulebench signalled it because it reached T (`--stop-at-target`).
    pub stopped_by_us: bool,
    pub timed_out: bool,
    pub exit: Option<child::Exit>,
    pub spawn_error: Option<String>,
    pub evals: usize,
    pub malformed: usize,
}

/// The run's status and the reason when it is not ok, from what the program did (pure).
pub fn status_of(o: &Outcome, key: &str) -> (Status, Option<String>) {
    let (reached, stopped_by_us, timed_out, exit) =
        (o.reached, o.stopped_by_us, o.timed_out, o.exit);
    let (evals, malformed) = (o.evals, o.malformed);
    if let Some(e) = &o.spawn_error {
        return (Status::Failed, Some(e.to_string()));
    }
    let Some(exit) = exit else {
        return (
            Status::Failed,
            Some("the program did not exit (its exit status is unknown)".into()),
        );
    };
    if reached && (stopped_by_us || exit.success()) {
        return (Status::Ok, None);
    }
    if timed_out {
        return (
            Status::Dnf,
            Some("stopped at the time limit (--max-time-s)".into()),
        );
    }
    if let Some(sig) = exit.signal {
        return (
            Status::Failed,
            Some(format!(
                "the program was killed by {}",
                child::signal_name(sig)
            )),
        );
    }
    if !exit.success() {
        let code = exit.code.map_or("unknown".into(), |c| c.to_string());
        return (
            Status::Failed,
            Some(format!("the program exited with status {code}")),
        );
    }
    if evals == 0 {
        let bad = if malformed > 0 {
            format!(" ({malformed} malformed report lines)")
        } else {
            String::new()
        };
        return (
            Status::Dnf,
            Some(format!("the program never reported `{key}`{bad}")),
        );
    }
    (Status::Dnf, None)
}

pub(super) fn run_record(
    plan: &ExecPlan,
    r: RecordInputs<'_>,
    obs: Observed,
) -> (
    RunRecord,
    Vec<crate::record::curve::Event>,
    Vec<measure::PowerSample>,
) {
    let task = &plan.task;
    let dir = task.tracked.direction;
    let window = r.report;
    let mut energy = crate::record::energy::energy_summary(&window, r.meter, r.idle);
    if obs.run_start.is_none() {
        energy.flags.push("no_run_start".into());
    }
    if obs.malformed > 0 {
        energy.flags.push("malformed_report_lines".into());
    }
    let stopped_by_us = obs.stopped_for_target;
    let hit = metrics::first_reaching_in(&obs.curve, task.target, dir).cloned();
    let outcome = Outcome {
        reached: hit.is_some(),
        stopped_by_us,
        timed_out: obs.timed_out,
        exit: r.exit,
        spawn_error: r.spawn_error.clone(),
        evals: obs.curve.len(),
        malformed: obs.malformed,
    };
    let (status, mut error) = status_of(&outcome, &task.tracked.key);
    if status == Status::Dnf && error.is_none() {
        let best = metrics::best_in(&obs.curve, dir);
        error = best.map(|b| {
            format!(
                "did not reach T = {} (best {b} in {} evals)",
                task.target,
                obs.curve.len()
            )
        });
    }
    let sources = metrics::sources_of(&window.report.components);
    let scores = metrics::score(&metrics::ScoreInputs {
        scored: &obs.curve,
        status,
        target: task.target,
        chance: task.chance,
        direction: dir,
        boundary: energy.boundary,
        sources: &sources,
        energy_budget_j: None,
    });
    let end_s = window.duration_s;
    let total_j = energy.total_j;
    let phases = phases(obs.run_start, obs.run_stop, end_s, total_j);
    let last = obs.curve.last();
    let mut engine = plan.engine.clone();
    if let Some(f) = &obs.framework {
        engine.framework = Some(f.clone());
        engine.label = engine_label(Some(f), &engine.program, plan.engine_user_label.as_deref());
    }
    let exec = ExecInfo {
        command: r.argv.clone(),
        cwd: std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default(),
        env: r.env,
        source: if plan.events.is_some() {
            "events-file"
        } else {
            "mllog"
        }
        .into(),
        events_path: r.events_file.map(|p| p.display().to_string()),
        metric_key: task.tracked.key.clone(),
        exit_code: r.exit.and_then(|e| e.code),
        signal: r.exit.and_then(|e| e.signal).map(child::signal_name),
        peak_rss_kib: r.exit.and_then(|e| e.peak_rss_kib),
        stop_at_target: plan.stop_at_target,
        stopped_at_target: stopped_by_us,
        signals_sent: obs.signals_sent.clone(),
        time_limit_s: plan.time_limit_s,
        timed_out: obs.timed_out,
        run_start_s: obs.run_start.map(|s| s.0),
        run_stop_s: obs.run_stop.map(|s| s.0),
        run_stop_status: obs.run_stop_status.clone(),
        output_lines: obs.output_lines,
        eval_lines: obs.curve.len(),
        malformed_lines: obs.malformed,
        malformed_examples: obs.malformed_examples.clone(),
        over_long_lines: obs.over_long,
        log: format!("logs/{}.log", r.run_id),
    };
    if obs.evals_before_run_start > 0 {
        energy.flags.push("evals_before_run_start".into());
    }
    let setup_s = obs.run_start.map_or(0.0, |s| s.0);
    let train_end_s = obs.run_stop.map_or(end_s, |s| s.0);
    let config = RunConfig {
        task: match &task.spec {
            Some(s) => TaskConfig::Spec(Box::new(s.clone())),
            None => TaskConfig::Declared {
                name: task.name.clone(),
                metric: task.metric.clone(),
                target: task.target,
                chance: task.chance,
            },
        },
        variant: plan.variant.clone().into(),
        seed: r.seed,
        device: plan.device_label.clone(),
        stop_at_target: plan.stop_at_target,
        forecast_stop: false,
        idle_s: plan.idle_s,
        cooldown_s: plan.cooldown_s,
        meter: r.meter.name().to_string(),
        engine: EngineConfig::Exec {
            grace_s: plan.grace_s,
            time_limit_s: plan.time_limit_s,
            command: r.argv.clone(),
        },
    };
    // A precision variant's record: derived from the device's capabilities, or as the
    // program declared it.
    let mut variant = record::RunVariant::from(plan.variant.clone());
    if variant.precision != crate::spec::variant::Precision::F32 {
        variant.precision_report = Some(crate::spec::precision::foreign_report(
            variant.precision,
            plan.device_label.starts_with("cuda"),
            &plan.system.capabilities,
            &obs.declared_precision,
        ));
    }
    let rec = RunRecord {
        schema_version: record::SCHEMA_VERSION,
        run_id: r.run_id,
        task: task.name.clone(),
        seed: r.seed,
        variant,
        status,
        error,
        device: plan.device_label.clone(),
        energy,
        phases,
        time: TimeSummary {
            warmup_s: setup_s,
            train_s: (train_end_s - setup_s).max(0.0),
            // Not separable: the program's evaluations are inside its own loop.
            eval_s: 0.0,
            total_s: end_s,
        },
        quality: QualitySummary {
            metric: task.metric.clone(),
            direction: dir,
            unit: task
                .spec
                .as_ref()
                .map_or_else(String::new, |s| s.metric.unit().to_string()),
            target: task.target,
            chance: task.chance,
            chance_declared: task.spec.as_ref().map_or(task.chance, |s| s.target.chance),
            final_value: scores.final_value,
            best: scores.best,
            final_binomial_sd: None,
            eval_predictions: 0,
            ladder: scores.ladder,
            curve: obs.curve.clone(),
        },
        ett_j: scores.ett_j,
        ttt_s: scores.ttt_s,
        jpp: scores.jpp,
        jpp_label: scores.jpp_label,
        quality_at_energy_budget: scores.quality_at_energy_budget,
        samples: 0,
        steps: last.map_or(0, |p| p.step),
        epochs: last.map_or(0.0, |p| p.epoch),
        j_per_sample: None,
        flops: Flops {
            nominal: 0.0,
            executed: 0.0,
            forward_per_sample: 0,
        },
        model: ModelInfo {
            kind: task
                .spec
                .as_ref()
                .map_or("external", |s| s.model.kind())
                .to_string(),
            parameters: None,
            note: Some("built and trained by the program, not by joulebench".into()),
        },
        dataset: DatasetInfo {
            name: task.spec.as_ref().map(|s| s.dataset.as_str().to_string()),
            note: Some("read by the program".into()),
            ..Default::default()
        },
        config,
        system: plan.system.clone(),
        provenance: window.report.provenance.clone(),
        started_at: r.started_at,
        finished_at: system::utc_now(),
        inference: None,
        plan: r.extras.plan.clone(),
        scheduler: Some(r.extras.scheduler.clone().unwrap_or_else(|| {
            crate::orchestrate::host::scheduler_info(&crate::orchestrate::host::ProcessEnv, None)
        })),
        isolation: Some(crate::orchestrate::host::assess(
            &window.report,
            Some(r.co_start),
            Some(r.co_end),
        )),
        engine: Some(engine),
        exec: Some(exec),
        forecast: None,
    };
    let timeline = window.report.timeline.clone();
    (rec, obs.events.0, timeline)
}

/// `setup` (before `run_start`), `train`, `teardown` (after `run_stop`): spans of one window
/// that add up to its energy. Without the MLLOG markers the whole window is `train`.
fn phases(
    run_start: Option<(f64, f64)>,
    run_stop: Option<(f64, f64)>,
    end_s: f64,
    total_j: f64,
) -> Vec<Phase> {
    let (s_t, s_e) = run_start.unwrap_or((0.0, 0.0));
    let (e_t, e_e) = run_stop.unwrap_or((end_s, total_j));
    let mut out = Vec::new();
    if run_start.is_some() {
        out.push(Phase {
            name: "setup".into(),
            start_s: 0.0,
            end_s: s_t,
            energy_j: s_e,
        });
    }
    out.push(Phase {
        name: "train".into(),
        start_s: s_t,
        end_s: e_t,
        energy_j: e_e - s_e,
    });
    if run_stop.is_some() {
        out.push(Phase {
            name: "teardown".into(),
            start_s: e_t,
            end_s,
            energy_j: total_j - e_e,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrate::exec::child::Exit;

    #[test]
    fn status_follows_what_the_program_did() {
        let ok = Some(Exit {
            code: Some(0),
            signal: None,
            peak_rss_kib: None,
        });
        let three = Some(Exit {
            code: Some(3),
            signal: None,
            peak_rss_kib: None,
        });
        let killed = Some(Exit {
            code: None,
            signal: Some(libc::SIGKILL),
            peak_rss_kib: None,
        });
        let termed = Some(Exit {
            code: None,
            signal: Some(libc::SIGTERM),
            peak_rss_kib: None,
        });
        let k = "eval_accuracy";
        let o = |reached, stopped_by_us, timed_out, exit, evals, malformed| Outcome {
            reached,
            stopped_by_us,
            timed_out,
            exit,
            spawn_error: None,
            evals,
            malformed,
        };
        assert_eq!(status_of(&o(true, false, false, ok, 3, 0), k).0, Status::Ok);
        // Stopped by us at the target: ok whatever its exit.
        assert_eq!(
            status_of(&o(true, true, false, termed, 3, 0), k).0,
            Status::Ok
        );
        let (s, e) = status_of(&o(true, false, false, three, 3, 0), k);
        assert_eq!(
            (s, e.as_deref()),
            (Status::Failed, Some("the program exited with status 3"))
        );
        let (s, e) = status_of(&o(false, false, false, killed, 1, 0), k);
        assert_eq!(
            (s, e.as_deref()),
            (Status::Failed, Some("the program was killed by SIGKILL"))
        );
        let (s, e) = status_of(&o(false, false, false, ok, 0, 2), k);
        assert_eq!(s, Status::Dnf);
        assert!(e
            .unwrap()
            .contains("never reported `eval_accuracy` (2 malformed"));
        assert_eq!(
            status_of(&o(false, false, true, termed, 1, 0), k).0,
            Status::Dnf
        );
        assert_eq!(
            status_of(&o(false, false, false, ok, 4, 0), k),
            (Status::Dnf, None)
        );
        let mut spawn = o(false, false, false, None, 0, 0);
        spawn.spawn_error = Some("x".into());
        assert_eq!(status_of(&spawn, k).0, Status::Failed);
    }

    #[test]
    fn phases_add_up_to_the_window() {
        let p = phases(Some((2.0, 20.0)), Some((9.0, 100.0)), 10.0, 110.0);
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["setup", "train", "teardown"]);
        assert_eq!(p.iter().map(|p| p.energy_j).sum::<f64>(), 110.0);
        assert_eq!(p[1].energy_j, 80.0);
        let p = phases(None, None, 10.0, 110.0);
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].start_s, p[0].end_s, p[0].energy_j),
            (0.0, 10.0, 110.0)
        );
    }
}
