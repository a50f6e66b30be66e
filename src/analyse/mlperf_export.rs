//! `export mlperf`: a results folder laid out as an MLPerf Training submission tree, so
//! MLCommons' `mlperf-logging` tools (compliance checker, system description checker, the
//! `result_summarizer`'s power integration) read it.
//!
//! Owns: the tree's layout and names, and its `systems/<system>.json`:
//!
//! ```text
//! OUT/systems/<system>.json
//! OUT/results/<system>/<benchmark>/result_<i>.txt            the run's event log
//! OUT/results/<system>/<benchmark>/power/result_<i>/node_0.txt  its node power log
//! ```
//!
//! `<system>` is the machine's system id and the engine that trained (`fa11d6a3-joulebench-candle-0-11-1`:
//! MLPerf's system is hardware and software together), `<benchmark>` is `<task>--<variant>`,
//! `i` counts the runs of one benchmark in seed order from 0. A result file is the run's
//! `events/<run>.mllog` as written; a log written before joulebench wrote MLPerf's keys is
//! translated by the same code that writes them now (`record::mlperf`, default submission
//! values) and counted in the summary. The node log is `record::mlperf::power`'s, over the
//! result file's `run_start`..`run_stop`.
//! Must not: write anything before every run has been read and turned into files (a bad
//! event log or timeline is an error naming the file, and the tree is not started), or write
//! into a folder that holds anything.

use crate::analyse::report::load::{self, LoadIssue, LoadedRun};
use crate::measure::system::SystemInfo;
use crate::record::curve::Event;
use crate::record::mlperf::power::{self, NodeLogError, Span};
use crate::record::mlperf::{self as mlperf, SubmissionArgs};
use crate::record::{mllog, read, write_atomic, ResultsError};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What can stop an export: every one of these is the user's to fix (exit 2), except `Write`.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Folder(#[from] load::FolderError),
    #[error("{path}: not a results folder (no runs/*.json)")]
    NoRuns { path: String },
    #[error("{path}: all {count} runs have estimated energy, and --measured-only was given")]
    AllEstimated { path: String, count: usize },
    #[error("--out {path}: exists and is not an empty folder; give a new or empty folder")]
    OutNotEmpty { path: String },
    #[error("event log {0}")]
    EventLog(read::FileError),
    #[error("{path}: no run_start and run_stop in the event log")]
    NoRunSpan { path: String },
    #[error("{path}: no power timeline")]
    NoTimeline { path: String },
    #[error("power timeline {0}")]
    Timeline(read::FileError),
    #[error("run {run}: node power log: {source}")]
    NodeLog {
        run: String,
        #[source]
        source: NodeLogError,
    },
    #[error(transparent)]
    Write(#[from] ResultsError),
}

impl ExportError {
    /// Whether the user can fix it by what they give (exit 2) rather than a failed write.
    pub fn is_usage(&self) -> bool {
        !matches!(self, ExportError::Write(_))
    }
}

/// What an export wrote and what it left out.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct Exported {
    pub results: usize,
    pub systems: Vec<String>,
    pub benchmarks: usize,
    /// Node logs with fewer readings than MLPerf Power's minimum (60).
    pub short_node_logs: usize,
    /// Event logs written before joulebench wrote MLPerf's keys, translated.
    pub translated_logs: usize,
    /// Runs left out by `--measured-only`.
    pub estimated_skipped: usize,
    /// Files of the folder that could not be read (each a warning).
    #[serde(skip)]
    pub issues: Vec<LoadIssue>,
}

/// One result of the tree, ready to write.
struct Planned {
    system: String,
    benchmark: String,
    seed: u64,
    run_id: String,
    result: String,
    node: String,
    short: bool,
    /// `submission_org` and `submission_division` as the result states them.
    submission: (String, String),
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// MLPerf's system name of a run: the machine and the engine that trained on it.
pub fn system_name(run: &LoadedRun) -> String {
    format!(
        "{}-{}",
        run.record.system.system_id,
        slug(&run.record.engine_label())
    )
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

/// The run's event log in MLPerf's keys, and whether it had to be translated.
fn result_events(run: &LoadedRun) -> Result<(Vec<Event>, bool), ExportError> {
    let events =
        read::read_events(&run.folder, &run.record.run_id).map_err(ExportError::EventLog)?;
    if events.iter().any(|e| e.key == "init_start") {
        return Ok((events, false));
    }
    let sub = SubmissionArgs::default().resolve(&run.record.system);
    Ok((mlperf::compliant_events(&run.record, &events, &sub), true))
}

fn plan_run(run: &LoadedRun) -> Result<(Planned, bool), ExportError> {
    let id = &run.record.run_id;
    let (events, translated) = result_events(run)?;
    let (start_ms, stop_ms) =
        power::run_start_stop_ms(&events).ok_or_else(|| ExportError::NoRunSpan {
            path: show(&read::events_path(&run.folder, id)),
        })?;
    let timeline = read::read_timeline(&run.folder, id)
        .map_err(ExportError::Timeline)?
        .ok_or_else(|| ExportError::NoTimeline {
            path: show(&read::timeline_path(&run.folder, id)),
        })?;
    let (start_s, stop_s) = power::scored_seconds(&run.record);
    let span = Span {
        start_s,
        stop_s,
        start_ms,
        stop_ms,
    };
    let node = power::node_log(id, &run.record.energy, &timeline, span).map_err(|source| {
        ExportError::NodeLog {
            run: id.clone(),
            source,
        }
    })?;
    Ok((
        Planned {
            system: system_name(run),
            benchmark: format!("{}--{}", run.record.task, run.record.variant.name),
            seed: run.record.seed,
            run_id: id.clone(),
            submission: submission_of(&events),
            result: mllog(&events),
            node: mllog(&node.events),
            short: node.readings < power::MIN_READINGS,
        },
        translated,
    ))
}

/// The submission's `submission_org` and `submission_division` as the first result states them.
fn submission_of(events: &[Event]) -> (String, String) {
    let get = |key: &str, default: &str| {
        events
            .iter()
            .find(|e| e.key == key)
            .and_then(|e| e.value.as_str())
            .unwrap_or(default)
            .to_string()
    };
    (
        get("submission_org", mlperf::DEFAULT_ORG),
        get("submission_division", "open"),
    )
}

/// `systems/<system>.json` with every field MLPerf's system description checker requires:
/// what `system.json` records, and `unknown` (with a note) for what joulebench does not.
pub fn system_description(
    name: &str,
    system: &SystemInfo,
    engines: &[String],
    submitter: &str,
    division: &str,
) -> Value {
    let unknown = "unknown";
    let accelerator = system.accelerator.clone();
    json!({
        "submitter": submitter,
        "division": division,
        "status": "Research, Development, or Internal (RDI)",
        "system_name": format!("{name}: {}", mlperf::platform_of(system)),
        "number_of_nodes": "1",
        "host_processors_per_node": unknown,
        "host_processor_model_name": system.cpu_model,
        "host_processor_core_count": unknown,
        "host_processor_vcpu_count": system.logical_cpus.to_string(),
        "host_processor_frequency": unknown,
        "host_processor_caches": unknown,
        "host_processor_interconnect": unknown,
        "host_memory_capacity": format!("{:.1} GiB", system.memory_gib),
        "host_storage_type": unknown,
        "host_storage_capacity": unknown,
        "host_networking": unknown,
        "host_networking_topology": unknown,
        "host_memory_configuration": unknown,
        "accelerators_per_node": if accelerator.is_some() { "1" } else { "0" },
        "accelerator_model_name": accelerator.unwrap_or_else(|| "none (CPU)".into()),
        "accelerator_host_interconnect": unknown,
        "accelerator_frequency": unknown,
        "accelerator_on-chip_memories": unknown,
        "accelerator_memory_configuration": unknown,
        "accelerator_memory_capacity": unknown,
        "accelerator_interconnect": unknown,
        "accelerator_interconnect_topology": unknown,
        "cooling": unknown,
        "hw_notes": "written by joulebench export mlperf from system.json; `unknown` fields are not recorded by joulebench",
        "framework": engines.join("; "),
        "other_software_stack": format!(
            "joulebench {} (git {}), {}",
            system.software.joulebench_version, system.software.git_commit, system.software.rustc
        ),
        "operating_system": format!("{} (kernel {})", system.os, system.kernel),
        "sw_notes": "energy from joulebench's meters (NVML, RAPL or a labelled estimate); see each node log's power_measurement_start",
    })
}

fn out_is_empty(out: &Path) -> bool {
    match std::fs::read_dir(out) {
        Ok(mut rd) => rd.next().is_none(),
        Err(_) => !out.exists(),
    }
}

/// Lay `folder` (a results folder, or a folder of them) out under `out`.
pub fn export(folder: &Path, out: &Path, measured_only: bool) -> Result<Exported, ExportError> {
    let folders = load::resolve_folders(&[folder.to_path_buf()])?;
    let loaded = load::load(&folders);
    if loaded.runs.is_empty() {
        return Err(ExportError::NoRuns { path: show(folder) });
    }
    if out.exists() && (!out.is_dir() || !out_is_empty(out)) {
        return Err(ExportError::OutNotEmpty { path: show(out) });
    }
    let mut summary = Exported {
        issues: loaded.issues.clone(),
        ..Default::default()
    };
    let runs: Vec<&LoadedRun> = loaded
        .runs
        .iter()
        .filter(|r| !measured_only || r.record.energy.all_measured)
        .collect();
    summary.estimated_skipped = loaded.runs.len() - runs.len();
    if runs.is_empty() {
        return Err(ExportError::AllEstimated {
            path: show(folder),
            count: loaded.runs.len(),
        });
    }
    // Everything is read and made before the first file is written.
    let mut planned = Vec::with_capacity(runs.len());
    let mut systems: BTreeMap<String, (SystemInfo, Vec<String>)> = BTreeMap::new();
    for run in &runs {
        let (p, translated) = plan_run(run)?;
        summary.translated_logs += usize::from(translated);
        let entry = systems
            .entry(p.system.clone())
            .or_insert_with(|| (run.record.system.clone(), Vec::new()));
        let engine = run.record.engine_label();
        if !entry.1.contains(&engine) {
            entry.1.push(engine);
        }
        planned.push(p);
    }
    planned.sort_by(|a, b| {
        (&a.system, &a.benchmark, a.seed, &a.run_id).cmp(&(
            &b.system,
            &b.benchmark,
            b.seed,
            &b.run_id,
        ))
    });
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    let mut index: BTreeMap<(String, String), usize> = BTreeMap::new();
    for p in &planned {
        let i = index
            .entry((p.system.clone(), p.benchmark.clone()))
            .or_insert(0);
        let bench = out.join("results").join(&p.system).join(&p.benchmark);
        files.push((bench.join(format!("result_{i}.txt")), p.result.clone()));
        files.push((
            bench
                .join("power")
                .join(format!("result_{i}"))
                .join("node_0.txt"),
            p.node.clone(),
        ));
        *i += 1;
        summary.short_node_logs += usize::from(p.short);
    }
    for (name, (system, engines)) in &systems {
        let first = planned.iter().find(|p| &p.system == name).expect("planned");
        let (org, division) = &first.submission;
        let desc = system_description(name, system, engines, org, division);
        let text = serde_json::to_string_pretty(&desc).expect("a JSON value encodes");
        files.push((out.join("systems").join(format!("{name}.json")), text));
    }
    for (path, text) in &files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ResultsError::Write {
                path: show(parent),
                source,
            })?;
        }
        write_atomic(path, text.as_bytes())?;
    }
    summary.results = planned.len();
    summary.benchmarks = index.len();
    summary.systems = systems.into_keys().collect();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_folder_names() {
        assert_eq!(slug("joulebench/candle 0.11.1"), "joulebench-candle-0-11-1");
        assert_eq!(slug("torch 2.15 (exec)"), "torch-2-15-exec");
    }
}
