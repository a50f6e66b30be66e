//! Who else used a metered GPU during a window, and the job's share of the board's energy.
//!
//! Owns: telling the job's processes (this process and its descendants: `run` itself, the
//! program `exec` started and everything that program started) from others by the parent
//! chain in `/proc`, the tally of the compute processes polled on a board (the job's time
//! share), the tally of NVML's per-process SM-utilisation samples (the job's SM share), and
//! Kepler's attribution rule.
//! Must not: read a GPU (the board meter polls and hands the readings here) or replace the
//! whole-device energy: the attributed share is reported beside it, labelled.
//!
//! Kepler (sustainable-computing-io/kepler) attributes a GPU's active power to processes by
//! their share of SM utilisation and its idle power by their share of time; the job's figure
//! here is `(E - P_idle t) x sm_share + P_idle t x time_share`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Whether a process belongs to the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Job,
    Other,
    /// Not visible in this `/proc` (NVML reports host PIDs; inside a PID namespace they are
    /// not ours to read), so it cannot be told.
    Unknown,
}

/// The parent of `pid` from `<proc_root>/<pid>/stat` (the field after the parenthesised name,
/// which may itself hold spaces and parentheses).
fn parent_of(proc_root: &Path, pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` is `job_root` or one of its descendants.
pub fn owner(proc_root: &Path, pid: u32, job_root: u32) -> Owner {
    let mut p = pid;
    for _ in 0..4096 {
        if p == job_root {
            return Owner::Job;
        }
        match parent_of(proc_root, p) {
            Some(0) | Some(1) => return Owner::Other,
            Some(parent) => p = parent,
            None if p == pid => return Owner::Unknown,
            // An ancestor vanished between reads: the chain no longer leads to the job.
            None => return Owner::Other,
        }
    }
    Owner::Other
}

/// One of NVML's per-process utilisation samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessSm {
    pub pid: u32,
    /// NVML's CPU timestamp of the sample, µs.
    pub timestamp_us: u64,
    /// SM utilisation, percent.
    pub sm_util: u32,
}

/// What the polls of one board saw over a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tenancy {
    polls: u64,
    /// Sum over polls of the job's share of the tenants present (1/n when the job and n-1
    /// others are there, 0 when the job is not).
    job_share_sum: f64,
    pub others: BTreeSet<u32>,
    pub unknown: BTreeSet<u32>,
    /// SM-utilisation percent summed over samples, the job's and everyone's.
    job_sm: f64,
    all_sm: f64,
    /// Samples already counted (NVML returns each again until the next timestamp passes).
    seen: BTreeMap<(u32, u64), ()>,
}

impl Tenancy {
    /// One poll of the board's compute processes, each with its owner.
    pub fn add_processes(&mut self, procs: &[(u32, Owner)]) {
        self.polls += 1;
        let job_here = procs.iter().any(|(_, o)| *o == Owner::Job);
        let mut tenants = usize::from(job_here);
        for (pid, o) in procs {
            match o {
                Owner::Job => {}
                Owner::Other => {
                    self.others.insert(*pid);
                    tenants += 1;
                }
                Owner::Unknown => {
                    self.unknown.insert(*pid);
                }
            }
        }
        if job_here {
            self.job_share_sum += 1.0 / tenants as f64;
        }
    }

    /// Per-process SM samples, each with its owner; a sample seen before is not counted again.
    pub fn add_sm_samples(&mut self, samples: &[(ProcessSm, Owner)]) {
        for (s, o) in samples {
            if self.seen.insert((s.pid, s.timestamp_us), ()).is_some() {
                continue;
            }
            let u = f64::from(s.sm_util);
            self.all_sm += u;
            if *o == Owner::Job {
                self.job_sm += u;
            }
        }
    }

    /// A process outside the job used the board.
    pub fn shared(&self) -> bool {
        !self.others.is_empty()
    }

    /// The job's share of the board's time, from the polls; None without a poll.
    pub fn job_time_share(&self) -> Option<f64> {
        (self.polls > 0).then(|| self.job_share_sum / self.polls as f64)
    }

    /// The job's share of the SM utilisation NVML sampled; None without samples.
    pub fn job_sm_share(&self) -> Option<f64> {
        (self.all_sm > 0.0).then(|| self.job_sm / self.all_sm)
    }
}

/// Kepler's rule: the job's part of a board's `total_j` over `window_s`, given the board's idle
/// power: active energy by SM share, idle energy by time share. Active energy below zero (a
/// board drawing less than its idle baseline) counts as zero.
pub fn attributed_j(
    total_j: f64,
    idle_w: f64,
    window_s: f64,
    sm_share: f64,
    time_share: f64,
) -> f64 {
    let idle_j = (idle_w * window_s).min(total_j).max(0.0);
    (total_j - idle_j) * sm_share + idle_j * time_share
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_tree(dir: &Path, entries: &[(u32, &str, u32)]) {
        for (pid, name, ppid) in entries {
            let d = dir.join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("stat"),
                format!("{pid} ({name}) S {ppid} {pid} {pid} 0 -1 4194560"),
            )
            .unwrap();
        }
    }

    #[test]
    fn the_job_is_this_process_and_its_descendants() {
        let tmp = tempfile::tempdir().unwrap();
        // 100 is joulebench, 200 the program it started (a name with spaces and a ')'),
        // 300 a worker of that program, 400 someone else's job.
        proc_tree(
            tmp.path(),
            &[
                (100, "joulebench", 50),
                (50, "bash", 1),
                (200, "python (x) y", 100),
                (300, "pt_main_thread", 200),
                (400, "python", 60),
                (60, "sshd", 1),
            ],
        );
        assert_eq!(owner(tmp.path(), 100, 100), Owner::Job);
        assert_eq!(owner(tmp.path(), 300, 100), Owner::Job);
        assert_eq!(owner(tmp.path(), 400, 100), Owner::Other);
        assert_eq!(owner(tmp.path(), 999, 100), Owner::Unknown);
    }

    #[test]
    fn time_and_sm_shares() {
        let mut t = Tenancy::default();
        assert_eq!(t.job_time_share(), None);
        t.add_processes(&[(200, Owner::Job)]);
        t.add_processes(&[(200, Owner::Job), (400, Owner::Other)]);
        t.add_processes(&[(400, Owner::Other)]);
        t.add_processes(&[(200, Owner::Job), (999, Owner::Unknown)]);
        assert!(t.shared());
        assert_eq!(t.others.iter().copied().collect::<Vec<_>>(), [400]);
        assert_eq!(t.unknown.iter().copied().collect::<Vec<_>>(), [999]);
        // (1 + 1/2 + 0 + 1) / 4
        assert!((t.job_time_share().unwrap() - 0.625).abs() < 1e-12);
        let s = |pid, ts, sm| ProcessSm {
            pid,
            timestamp_us: ts,
            sm_util: sm,
        };
        t.add_sm_samples(&[(s(200, 1, 60), Owner::Job), (s(400, 1, 20), Owner::Other)]);
        // The same samples again are not counted twice.
        t.add_sm_samples(&[(s(200, 1, 60), Owner::Job), (s(400, 2, 20), Owner::Other)]);
        assert!((t.job_sm_share().unwrap() - 0.6).abs() < 1e-12);
    }

    #[test]
    fn keplers_rule() {
        // 1000 J over 10 s, idle 40 W: 400 J idle, 600 J active.
        assert!((attributed_j(1000.0, 40.0, 10.0, 0.75, 0.5) - (450.0 + 200.0)).abs() < 1e-9);
        // A board under its idle baseline: all of it idle.
        assert!((attributed_j(300.0, 40.0, 10.0, 0.75, 0.5) - 150.0).abs() < 1e-9);
    }
}
