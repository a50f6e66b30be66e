//! A run's event log as MLPerf Training's logging rules want it (`events/<run>.mllog`).
//!
//! Owns: the translation of the events a run collects (`curve::Event`, joulebench's own
//! vocabulary: `eval`, `epoch`, phases with their energy) into the keys and event types of the
//! `mlperf-logging` package's constants, and the header those rules require (`cache_clear`,
//! `init_start`/`init_stop`, `submission_*`, `train_samples`, `eval_samples`, the precision and
//! parallelism disclosures, `micro_batch_size`, `config_filename`). The run file stays the
//! source of truth; this is a view of it that MLCommons' compliance checker accepts
//! (`scripts/mlperf-check.py`, run by `.ci/run`).
//! Must not: invent numbers. Every value comes from the run record or its events; what a
//! single-process run does not have (communication, parallelism) is stated as such in the
//! line's metadata.
//!
//! Mapping: `eval` intervals become `eval_start`/`eval_stop`, `epoch` intervals
//! `epoch_start`/`epoch_stop` (the stop carries its start's `epoch_num`; an epoch the run
//! stopped in is closed at `run_stop`, as MLPerf wants at least one stop), `run_start` and
//! `run_stop` keep their keys with MLPerf's `status` (`success` when the run reached its target,
//! else `aborted`; joulebench's own status in `joulebench_status`). A held-out-loss task logs
//! its `eval_loss` and, as MLPerf's own loss-target benchmark (llama2_70b_lora) does, the same
//! value under `eval_accuracy` with `"lower_is_better": true`. joulebench's extra events
//! (`warmup`, phases with energy, `target_reached`, `loss_scale_backoff`) keep their keys,
//! which the checker does not rule on.

pub mod power;

use crate::measure::system::SystemInfo;
use crate::record::curve::Event;
use crate::record::RunRecord;
use serde_json::{json, Map, Value};

/// Who submits and on what: MLPerf's `submission_*` keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub org: String,
    /// `open` or `closed`.
    pub division: String,
    pub platform: String,
}

/// The `run`/`exec` options behind [`Submission`]: what is not given takes its default.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmissionArgs {
    pub org: Option<String>,
    pub division: String,
    pub platform: Option<String>,
}

impl Default for SubmissionArgs {
    fn default() -> Self {
        SubmissionArgs {
            org: None,
            division: "open".to_string(),
            platform: None,
        }
    }
}

impl SubmissionArgs {
    /// The values for a run on `system`: submitter `unspecified` and the platform from the
    /// machine (`system.json`) when not given; the division as given (default `open`:
    /// joulebench's tasks are not MLPerf's closed benchmarks).
    pub fn resolve(&self, system: &SystemInfo) -> Submission {
        Submission {
            org: self.org.clone().unwrap_or_else(|| DEFAULT_ORG.to_string()),
            division: self.division.clone(),
            platform: self.platform.clone().unwrap_or_else(|| platform_of(system)),
        }
    }
}

/// The submitter when none is given.
pub const DEFAULT_ORG: &str = "unspecified";

/// `"<accelerator> (<cpu model>, N logical CPUs)"`, or the CPU alone.
pub fn platform_of(system: &SystemInfo) -> String {
    let cpu = format!("{}, {} logical CPUs", system.cpu_model, system.logical_cpus);
    match &system.accelerator {
        Some(a) => format!("{a} ({cpu})"),
        None => cpu,
    }
}

/// MLPerf's name of a precision string of the run record (`f32`, `bf16`, ...).
fn mlperf_precision(ran: &str) -> Option<&'static str> {
    let head = ran.split([' ', '(']).next().unwrap_or("");
    Some(match head {
        "f64" => "fp64",
        "f32" => "fp32",
        "tf32" => "tf32",
        "bf16" => "bfloat16",
        "f16" => "fp16",
        "fp8" => "fp8",
        _ => return None,
    })
}

/// Order of precision, lowest first, for "the lowest precision in" a group of op classes.
fn rank(p: &str) -> usize {
    ["fp8", "fp16", "bfloat16", "tf32", "fp32", "fp64"]
        .iter()
        .position(|x| *x == p)
        .unwrap_or(4)
}

/// `(linear, attn)`: the lowest precision the run's GEMMs and convolutions, and its attention
/// products, ran in, with the metadata saying where it came from.
fn precisions(record: &RunRecord) -> [(&'static str, Value); 2] {
    use crate::spec::precision::OpClass;
    let Some(report) = record.precision_record() else {
        let md = json!({"source": "variant f32: every op ran in f32"});
        return [("fp32", md.clone()), ("fp32", md)];
    };
    let lowest = |classes: &[OpClass]| -> Option<&'static str> {
        classes
            .iter()
            .filter_map(|c| report.ops.get(c))
            .filter_map(|op| mlperf_precision(&op.ran))
            .min_by_key(|p| rank(p))
    };
    let basis = report.basis.as_str();
    let linear = lowest(&[OpClass::Matmul, OpClass::Conv]);
    let attn = lowest(&[OpClass::Attention]);
    let fallback = linear.unwrap_or("fp32");
    [
        (
            fallback,
            match linear {
                Some(_) => {
                    json!({"source": format!("precision record ({basis}): matmul and conv, as ran")})
                }
                None => json!({"source": "no precision recorded for matmul or conv: fp32 stated"}),
            },
        ),
        match attn {
            Some(p) => (
                p,
                json!({"source": format!("precision record ({basis}): attention, as ran")}),
            ),
            None => (
                fallback,
                json!({"not_applicable": true,
                       "source": "the model has no attention ops: the linear layers' precision stated"}),
            ),
        },
    ]
}

/// The config file a run's task came from, as the task table names it.
fn config_filename(record: &RunRecord) -> String {
    format!("models/{}.toml", record.task)
}

/// An event's metadata as a map to add keys to (empty when it is not an object).
fn object(v: &Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    }
}

/// MLPerf's `run_stop` status: `success` when the run reached its target, else `aborted`.
fn mlperf_status(record: &RunRecord) -> &'static str {
    if record.ett_j.is_some() {
        "success"
    } else {
        "aborted"
    }
}

/// The run's events as MLPerf Training logging rules want them (see the module note).
pub fn compliant_events(record: &RunRecord, events: &[Event], sub: &Submission) -> Vec<Event> {
    let t0 = events.first().map_or(0, |e| e.time_ms);
    let mut out: Vec<Event> = Vec::with_capacity(events.len() + 24);
    let point = |t: u128, key: &str, value: Value, md: Value| Event {
        time_ms: t,
        event_type: "POINT_IN_TIME",
        key: key.to_string(),
        value,
        metadata: md,
    };
    let interval = |t: u128, start: bool, key: &str, md: Value| Event {
        time_ms: t,
        event_type: if start {
            "INTERVAL_START"
        } else {
            "INTERVAL_END"
        },
        key: key.to_string(),
        value: Value::Null,
        metadata: md,
    };
    let none = || json!({});
    out.push(point(
        t0,
        "cache_clear",
        json!(true),
        json!({"note": "the dataset is read from files once per run; no cache to clear"}),
    ));
    out.push(interval(t0, true, "init_start", none()));
    out.push(point(t0, "submission_org", json!(sub.org), none()));
    out.push(point(
        t0,
        "submission_division",
        json!(sub.division),
        none(),
    ));
    out.push(point(
        t0,
        "submission_platform",
        json!(sub.platform),
        none(),
    ));
    out.push(point(
        t0,
        "submission_benchmark",
        json!(record.task),
        none(),
    ));
    out.push(point(
        t0,
        "submission_status",
        json!("research"),
        json!({"note": "a joulebench task, not an MLPerf benchmark"}),
    ));
    let batch = record.config.batch_size();
    for (key, n) in [
        ("train_samples", record.dataset.train_samples),
        ("eval_samples", record.dataset.eval_samples),
    ] {
        out.push(match n {
            Some(n) => point(t0, key, json!(n), none()),
            None => point(
                t0,
                key,
                json!("unknown"),
                json!({"source": "the run record does not say (a program run by exec)"}),
            ),
        });
    }
    let [(linear, lmd), (attn, amd)] = precisions(record);
    out.push(point(
        t0,
        "lowest_numerical_precision_in_linear",
        json!(linear),
        lmd,
    ));
    out.push(point(
        t0,
        "lowest_numerical_precision_in_attn",
        json!(attn),
        amd,
    ));
    out.push(point(
        t0,
        "lowest_numerical_precision_in_comm",
        json!(linear),
        json!({"not_applicable": true, "source": "one process on one device: no communication; the linear layers' precision stated"}),
    ));
    for key in [
        "tensor_parallelism",
        "pipeline_parallelism",
        "context_parallelism",
        "expert_parallelism",
    ] {
        out.push(point(
            t0,
            key,
            json!(1),
            json!({"source": "one process on one device"}),
        ));
    }
    if let Some(b) = batch {
        out.push(point(
            t0,
            "micro_batch_size",
            json!(b),
            json!({"source": "no gradient accumulation: the global batch"}),
        ));
    }
    out.push(point(
        t0,
        "config_filename",
        json!(config_filename(record)),
        none(),
    ));

    let has = |key: &str| events.iter().any(|e| e.key == key);
    let (has_run_start, has_epochs, has_eval_intervals) =
        (has("run_start"), has("epoch"), has("eval"));
    let header: Vec<String> = out.iter().map(|e| e.key.clone()).collect();
    let epoch_count = record.epochs.ceil().max(1.0) as u64;
    let block = |t: u128, start: bool| {
        interval(
            t,
            start,
            if start { "block_start" } else { "block_stop" },
            json!({"first_epoch_num": 0, "epoch_count": epoch_count,
                   "source": "the program logged no epochs: one block over the whole run"}),
        )
    };
    let open_run = |out: &mut Vec<Event>, t: u128, md: Value| {
        out.push(interval(t, false, "init_stop", none()));
        out.push(interval(t, true, "run_start", md));
        if !has_epochs {
            out.push(block(t, true));
        }
    };
    if !has_run_start {
        open_run(
            &mut out,
            t0,
            json!({"source": "the program logged no run_start: the measured window's start"}),
        );
    }
    // Closes what the run left open (the block, or the epoch it stopped in), then `run_stop`.
    let close_run = |out: &mut Vec<Event>, t: u128, epoch_open: Option<Value>, md: Value| {
        if !has_epochs {
            out.push(block(t, false));
        }
        if let Some(n) = epoch_open {
            out.push(interval(
                t,
                false,
                "epoch_stop",
                json!({"epoch_num": n, "source": "the run stopped in this epoch: closed at run_stop"}),
            ));
        }
        out.push(interval(t, false, "run_stop", md));
    };
    let mut epoch_open: Option<Value> = None;
    let mut eval_epoch: Option<Value> = None;
    let mut in_eval = false;
    let mut stopped = false;
    for e in events {
        let start = e.event_type == "INTERVAL_START";
        if header.contains(&e.key) {
            // The header states these once (MLPerf allows exactly one); the run's own line,
            // if any (exec's engine label as `submission_platform`), is in the run file.
            continue;
        }
        match (e.key.as_str(), e.event_type) {
            ("run_start", _) => open_run(&mut out, e.time_ms, e.metadata.clone()),
            ("run_stop", _) => {
                let mut md = object(&e.metadata);
                let own = md
                    .get("status")
                    .cloned()
                    .unwrap_or(json!(record.status.as_str()));
                md.insert("joulebench_status".into(), own);
                md.insert("status".into(), json!(mlperf_status(record)));
                close_run(&mut out, e.time_ms, epoch_open.take(), Value::Object(md));
                stopped = true;
            }
            ("epoch", "INTERVAL_START" | "INTERVAL_END") => {
                let md = if start {
                    epoch_open = e.metadata.get("epoch_num").cloned();
                    e.metadata.clone()
                } else {
                    // The stop names the epoch its start opened.
                    let n = epoch_open
                        .take()
                        .or_else(|| e.metadata.get("epoch_num").cloned());
                    json!({"epoch_num": n})
                };
                let key = if start { "epoch_start" } else { "epoch_stop" };
                out.push(interval(e.time_ms, start, key, md));
            }
            ("eval", "INTERVAL_START" | "INTERVAL_END") => {
                let mut md = object(&e.metadata);
                if start {
                    eval_epoch = md.get("epoch_num").cloned();
                } else if let Some(n) = eval_epoch.take() {
                    md.insert("epoch_num".into(), n);
                }
                in_eval = start;
                let key = if start { "eval_start" } else { "eval_stop" };
                out.push(interval(e.time_ms, start, key, Value::Object(md)));
            }
            ("eval_accuracy" | "eval_loss", "POINT_IN_TIME") => {
                let epoch = e.metadata.get("epoch_num").cloned().unwrap_or(json!(0.0));
                let bracket = !has_eval_intervals && !in_eval;
                let reported = json!({"epoch_num": epoch,
                    "source": "the program reported this eval at this time; its start is not known"});
                if bracket {
                    out.push(interval(e.time_ms, true, "eval_start", reported.clone()));
                }
                out.push(e.clone());
                if e.key == "eval_loss" {
                    let mut md = object(&e.metadata);
                    md.insert("lower_is_better".into(), json!(true));
                    md.insert("metric".into(), json!("held-out loss, nats per character"));
                    out.push(point(
                        e.time_ms,
                        "eval_accuracy",
                        e.value.clone(),
                        Value::Object(md),
                    ));
                }
                if bracket {
                    out.push(interval(e.time_ms, false, "eval_stop", reported));
                }
            }
            _ => out.push(e.clone()),
        }
    }
    if !stopped {
        let t = events.last().map_or(t0, |e| e.time_ms);
        let md = json!({"status": mlperf_status(record),
                        "joulebench_status": record.status.as_str(),
                        "source": "the program logged no run_stop: the last event's time"});
        close_run(&mut out, t, epoch_open.take(), md);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_names_are_mlperfs() {
        assert_eq!(mlperf_precision("f32"), Some("fp32"));
        assert_eq!(mlperf_precision("bf16"), Some("bfloat16"));
        assert_eq!(
            mlperf_precision("f32 (bf16 unsupported on cpu: ...)"),
            Some("fp32")
        );
        assert_eq!(mlperf_precision("-"), None);
        assert!(rank("bfloat16") < rank("fp32"));
        assert!(rank("fp8") < rank("fp16"));
    }
}
