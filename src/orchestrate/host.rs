//! Where a run runs: the scheduler that started the process and who else is on the machine.
//!
//! Owns: reading the scheduler's identity from the environment (Slurm array jobs, Kubernetes
//! Indexed Jobs, GNU parallel; docs/design/scale-out.md), the default shard index those engines give, and
//! the co-tenancy facts every run file records (other runnable processes at the start and end
//! of a run, plus the meter's own CPU-share and GPU-process figures; docs/design/measurement.md section 2).
//! Must not: talk to an engine's API or schedule anything (joulebench is never a scheduler),
//! or judge energy figures (the meters flag `cpu_contended` and `contaminated`; this only
//! gathers them into one `isolation` object).

use crate::measure::MeterReport;
use crate::record::{CoTenancy, Isolation, SchedulerInfo};
use std::collections::BTreeMap;
use std::path::Path;

/// Environment lookups, injectable for tests.
pub trait Env {
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned().filter(|v| !v.is_empty())
    }
}

/// Allocation variables kept in the run file, per engine.
const SLURM_ALLOCATION: &[&str] = &[
    "SLURM_JOB_PARTITION",
    "SLURM_JOB_NODELIST",
    "SLURM_CPUS_ON_NODE",
    "SLURM_CPUS_PER_TASK",
    "SLURM_JOB_GPUS",
    "SLURM_STEP_GPUS",
    "SLURM_GPUS_ON_NODE",
    "CUDA_VISIBLE_DEVICES",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_RESTART_COUNT",
];
const OTHER_ALLOCATION: &[&str] = &["CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"];

/// Where the shard index came from when `--shard-index` was not given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvIndex {
    pub var: &'static str,
    pub raw: String,
}

/// `SLURM_ARRAY_TASK_ID`, else `JOB_COMPLETION_INDEX` (docs/design/scale-out.md: the shard count is never
/// taken from the environment: `SLURM_ARRAY_TASK_COUNT` changes when a subset is resubmitted).
pub fn shard_index_from_env(env: &dyn Env) -> Option<EnvIndex> {
    ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"]
        .into_iter()
        .find_map(|var| env.var(var).map(|raw| EnvIndex { var, raw }))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Identify the engine from its variables; `shard` is the (index, count) this process runs.
pub fn scheduler_info(env: &dyn Env, shard: Option<(u64, u64)>) -> SchedulerInfo {
    let mut allocation = BTreeMap::new();
    let keep = |keys: &[&str], allocation: &mut BTreeMap<String, String>| {
        for k in keys {
            if let Some(v) = env.var(k) {
                allocation.insert((*k).to_string(), v);
            }
        }
    };
    let (engine, job_id, array_job_id, task_id) = if env.var("SLURM_JOB_ID").is_some() {
        keep(SLURM_ALLOCATION, &mut allocation);
        (
            "slurm",
            env.var("SLURM_JOB_ID"),
            env.var("SLURM_ARRAY_JOB_ID"),
            env.var("SLURM_ARRAY_TASK_ID"),
        )
    } else if env.var("JOB_COMPLETION_INDEX").is_some()
        || env.var("KUBERNETES_SERVICE_HOST").is_some()
    {
        keep(OTHER_ALLOCATION, &mut allocation);
        (
            "kubernetes",
            env.var("HOSTNAME"),
            env.var("JOB_NAME"),
            env.var("JOB_COMPLETION_INDEX"),
        )
    } else if env.var("PARALLEL_SEQ").is_some() {
        keep(OTHER_ALLOCATION, &mut allocation);
        ("gnu-parallel", None, None, env.var("PARALLEL_SEQ"))
    } else {
        keep(OTHER_ALLOCATION, &mut allocation);
        ("none", None, None, None)
    };
    SchedulerInfo {
        engine: engine.to_string(),
        job_id,
        array_job_id,
        task_id,
        host: env
            .var("SLURMD_NODENAME")
            .unwrap_or_else(hostname)
            .to_string(),
        shard_index: shard.map(|s| s.0),
        shard_count: shard.map(|s| s.1),
        allocation,
    }
}

/// Other runnable processes and the load average, read from a /proc tree.
pub fn co_tenancy_at(proc_root: &Path, own_pid: u32) -> CoTenancy {
    let load_1m = std::fs::read_to_string(proc_root.join("loadavg"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|f| f.parse().ok()));
    let mut names = Vec::new();
    let mut readable = false;
    if let Ok(rd) = std::fs::read_dir(proc_root) {
        for e in rd.filter_map(Result::ok) {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            readable = true;
            if pid == own_pid {
                continue;
            }
            // "pid (comm) state ...": comm may hold spaces and parentheses.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let state = stat[close + 1..].split_whitespace().next();
            if state == Some("R") {
                names.push(stat[open + 1..close].to_string());
            }
        }
    }
    names.sort();
    let runnable_others = readable.then_some(names.len());
    names.dedup();
    names.truncate(8);
    CoTenancy {
        load_1m,
        runnable_others,
        examples: names,
    }
}

/// This machine now.
pub fn co_tenancy_now() -> CoTenancy {
    co_tenancy_at(Path::new("/proc"), std::process::id())
}

/// Gather what the meter saw over the window and the snapshots at its edges.
pub fn assess(report: &MeterReport, start: Option<CoTenancy>, end: Option<CoTenancy>) -> Isolation {
    let cpu_harness_fraction = report.provenance.host.cpu_harness_fraction;
    let cpu_others_fraction = report.provenance.host.cpu_others_fraction;
    let cpu_contended = report.flags.iter().any(|f| f == "cpu_contended");
    // `gpu_shared` (older files: `contaminated`): a process outside the job used the GPU.
    let gpu_contaminated = report
        .flags
        .iter()
        .any(|f| f == "gpu_shared" || f == "contaminated");
    // NVML keeps, per GPU component, the foreign compute PIDs seen at either edge.
    let gpu_other_compute_pids = report.provenance.gpu_other_compute_pids();
    // A process caught runnable at one edge may be a passing `ps`; one runnable at every edge
    // read is a co-tenant.
    let others_at_edges = [&start, &end]
        .iter()
        .filter_map(|c| c.as_ref().and_then(|c| c.runnable_others))
        .min();
    let known = cpu_others_fraction.is_some() || others_at_edges.is_some();
    let shared = cpu_contended
        || gpu_contaminated
        || !gpu_other_compute_pids.is_empty()
        || others_at_edges.is_some_and(|n| n > 0);
    let verdict = if shared {
        "shared"
    } else if known {
        "isolated"
    } else {
        "unknown"
    };
    Isolation {
        verdict: verdict.into(),
        cpu_harness_fraction,
        cpu_others_fraction,
        cpu_contended,
        gpu_other_compute_pids,
        gpu_contaminated,
        start,
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::provenance::GpuFacts;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn slurm_array_task_is_recognised() {
        let e = env(&[
            ("SLURM_JOB_ID", "1042"),
            ("SLURM_ARRAY_JOB_ID", "1040"),
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURMD_NODENAME", "gpu07"),
            ("SLURM_JOB_GPUS", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ]);
        let s = scheduler_info(&e, Some((2, 4)));
        assert_eq!(s.engine, "slurm");
        assert_eq!(s.job_id.as_deref(), Some("1042"));
        assert_eq!(s.array_job_id.as_deref(), Some("1040"));
        assert_eq!(s.task_id.as_deref(), Some("2"));
        assert_eq!(s.host, "gpu07");
        assert_eq!((s.shard_index, s.shard_count), (Some(2), Some(4)));
        assert_eq!(s.allocation["SLURM_JOB_GPUS"], "3");
        let idx = shard_index_from_env(&e).unwrap();
        assert_eq!((idx.var, idx.raw.as_str()), ("SLURM_ARRAY_TASK_ID", "2"));
    }

    #[test]
    fn kubernetes_parallel_and_none() {
        let k = env(&[("JOB_COMPLETION_INDEX", "5"), ("HOSTNAME", "jb-5-abcde")]);
        let s = scheduler_info(&k, None);
        assert_eq!(s.engine, "kubernetes");
        assert_eq!(s.task_id.as_deref(), Some("5"));
        assert_eq!(s.job_id.as_deref(), Some("jb-5-abcde"));
        assert_eq!(
            shard_index_from_env(&k).unwrap().var,
            "JOB_COMPLETION_INDEX"
        );
        let p = env(&[("PARALLEL_SEQ", "3")]);
        assert_eq!(scheduler_info(&p, None).engine, "gnu-parallel");
        let none = env(&[]);
        let s = scheduler_info(&none, None);
        assert_eq!(s.engine, "none");
        assert!(s.job_id.is_none() && s.shard_index.is_none());
        assert!(shard_index_from_env(&none).is_none());
        // Empty values count as unset.
        assert!(shard_index_from_env(&env(&[("SLURM_ARRAY_TASK_ID", "")])).is_none());
    }

    fn fake_proc(entries: &[(u32, &str, &str)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("loadavg"), "3.50 2.00 1.00 4/300 999\n").unwrap();
        for (pid, comm, state) in entries {
            let d = t.path().join(pid.to_string());
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("stat"), format!("{pid} ({comm}) {state} 1 2 3\n")).unwrap();
        }
        std::fs::create_dir(t.path().join("self")).unwrap();
        t
    }

    #[test]
    fn co_tenancy_counts_other_runnable_processes() {
        let t = fake_proc(&[
            (10, "joulebench", "R"),
            (11, "cc1 (plus)", "R"),
            (12, "sleep", "S"),
            (13, "cargo", "R"),
        ]);
        let c = co_tenancy_at(t.path(), 10);
        assert_eq!(c.load_1m, Some(3.5));
        assert_eq!(c.runnable_others, Some(2));
        assert_eq!(c.examples, ["cargo", "cc1 (plus)"]);
        let empty = tempfile::tempdir().unwrap();
        let c = co_tenancy_at(empty.path(), 1);
        assert_eq!((c.load_1m, c.runnable_others), (None, None));
    }

    #[test]
    fn assess_gathers_meter_figures_and_edges() {
        let mut r = MeterReport::default();
        let quiet = CoTenancy {
            load_1m: Some(1.0),
            runnable_others: Some(0),
            examples: vec![],
        };
        r.provenance.host.cpu_others_fraction = Some(0.01);
        r.provenance.host.cpu_harness_fraction = Some(0.9);
        let i = assess(&r, Some(quiet.clone()), Some(quiet.clone()));
        assert_eq!(i.verdict, "isolated");
        assert_eq!(i.cpu_others_fraction, Some(0.01));
        r.flags.push("contaminated".into());
        r.provenance.gpus.insert(
            "gpu:0".into(),
            GpuFacts {
                other_compute_pids: vec![4242, 17, 4242],
                ..GpuFacts::default()
            },
        );
        let i = assess(&r, Some(quiet.clone()), None);
        assert_eq!(i.verdict, "shared");
        assert!(i.gpu_contaminated);
        assert_eq!(i.gpu_other_compute_pids, [17, 4242]);
        let busy = CoTenancy {
            runnable_others: Some(3),
            ..quiet.clone()
        };
        let i = assess(&MeterReport::default(), None, Some(busy.clone()));
        assert_eq!(i.verdict, "shared");
        let i = assess(&MeterReport::default(), Some(quiet), Some(busy));
        assert_eq!(i.verdict, "isolated", "one edge only: a passing process");
        let i = assess(&MeterReport::default(), None, None);
        assert_eq!(i.verdict, "unknown");
    }
}
