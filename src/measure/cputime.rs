//! CPU time accounting from /proc: system utilisation (for the estimate) and the harness's
//! share of the machine's CPU time (RAPL is machine-wide, so other processes pollute it).
//!
//! Owns: parsing `/proc/stat` and `/proc/self/stat` and the pure arithmetic over two readings.
//! Must not: sample on its own schedule (meters own their pollers) or decide labels.

use std::path::{Path, PathBuf};

/// Others may use at most this fraction of the machine's CPU time before a RAPL window is
/// flagged `cpu_contended` (docs/design/measurement.md section 2).
pub const CONTENDED_OTHERS_FRACTION: f64 = 0.05;

/// The least machine CPU time (USER_HZ ticks, summed over CPUs) a window needs before a share
/// is stated: every reading is rounded to a tick per CPU, so over fewer ticks the rounding
/// alone can move the others' share past `CONTENDED_OTHERS_FRACTION` (a 4 ms window once read
/// as 0 % harness, 100 % others). At 100 ticks a 2-CPU machine's rounding is at most about 3 %.
pub const MIN_SHARE_TICKS: u64 = 100;

/// Aggregate CPU time of the whole machine, in USER_HZ ticks (first line of /proc/stat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SystemCpuTimes {
    pub busy_ticks: u64,
    pub total_ticks: u64,
}

/// Where to read CPU times from; injectable for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcPaths {
    pub stat: PathBuf,
    pub self_stat: PathBuf,
}

impl Default for ProcPaths {
    fn default() -> Self {
        Self {
            stat: PathBuf::from("/proc/stat"),
            self_stat: PathBuf::from("/proc/self/stat"),
        }
    }
}

/// Parse the aggregate `cpu` line of /proc/stat. Busy and total follow psutil (which
/// CodeCarbon uses): total = all fields except guest and guest_nice (already inside user and
/// nice), busy = total - idle - iowait.
pub fn parse_proc_stat(text: &str) -> Option<SystemCpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse::<u64>())
        .collect::<Result<_, _>>()
        .ok()?;
    if fields.len() < 4 {
        return None;
    }
    let get = |i: usize| fields.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal guest guest_nice
    let total: u64 = (0..8).map(get).sum();
    let idle = get(3) + get(4);
    Some(SystemCpuTimes {
        busy_ticks: total.saturating_sub(idle),
        total_ticks: total,
    })
}

/// utime + stime (fields 14 and 15) of a /proc/<pid>/stat line, plus cutime + cstime (16 and
/// 17: children this process has waited for), in USER_HZ ticks. The children count so that a
/// program run by `joulebench exec`, reaped before the window closes, is the harness's work,
/// not another tenant's; `run` starts no children. The command name may contain spaces and
/// parentheses, so fields are counted after the last ')'.
pub fn parse_self_stat(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the comm, fields start at number 3 (state): utime is 14 ... cstime is 17.
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let (utime, stime) = (field(14)?, field(15)?);
    // Signed in the kernel's format; absent in old fixtures.
    let children = field(16).unwrap_or(0) + field(17).unwrap_or(0);
    Some(utime + stime + children)
}

/// Machine-wide utilisation in [0, 1] between two readings; `None` if no time passed.
pub fn utilisation(a: SystemCpuTimes, b: SystemCpuTimes) -> Option<f64> {
    let total = b.total_ticks.checked_sub(a.total_ticks)?;
    if total == 0 {
        return None;
    }
    let busy = b.busy_ticks.saturating_sub(a.busy_ticks);
    Some((busy as f64 / total as f64).clamp(0.0, 1.0))
}

/// Who used the machine's CPU time over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuShare {
    /// This process's CPU time / all CPU time of the machine (busy and idle).
    pub harness_fraction: f64,
    /// Busy time of everything else / all CPU time of the machine.
    pub others_fraction: f64,
}

impl CpuShare {
    pub fn contended(&self) -> bool {
        self.others_fraction > CONTENDED_OTHERS_FRACTION
    }
}

/// Pure: the harness's and the others' share of the machine over a window; `None` when the
/// window holds under `MIN_SHARE_TICKS` of machine CPU time (the share would be rounding).
pub fn cpu_share(
    self_start_ticks: u64,
    self_end_ticks: u64,
    sys_start: SystemCpuTimes,
    sys_end: SystemCpuTimes,
) -> Option<CpuShare> {
    let total = sys_end.total_ticks.checked_sub(sys_start.total_ticks)?;
    if total < MIN_SHARE_TICKS {
        return None;
    }
    let busy = sys_end.busy_ticks.saturating_sub(sys_start.busy_ticks);
    let mine = self_end_ticks.saturating_sub(self_start_ticks);
    // Tick rounding can make our own time exceed the system's busy time by a tick or two.
    let others = busy.saturating_sub(mine);
    Some(CpuShare {
        harness_fraction: (mine as f64 / total as f64).clamp(0.0, 1.0),
        others_fraction: (others as f64 / total as f64).clamp(0.0, 1.0),
    })
}

/// A CPU-time reading that failed.
#[derive(Debug, thiserror::Error)]
pub enum CpuTimeError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but holds no line of the expected shape (`what`).
    #[error("{}: no parsable {what}", path.display())]
    Unparsable { path: PathBuf, what: &'static str },
    /// The reader has machine-wide times only.
    #[error("{0} has no per-process CPU time")]
    NoPerProcess(&'static str),
}

fn read(path: &Path) -> Result<String, CpuTimeError> {
    std::fs::read_to_string(path).map_err(|source| CpuTimeError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl ProcPaths {
    pub fn read_system(&self) -> Result<SystemCpuTimes, CpuTimeError> {
        parse_proc_stat(&read(&self.stat)?).ok_or_else(|| CpuTimeError::Unparsable {
            path: self.stat.clone(),
            what: "cpu line",
        })
    }

    pub fn read_self_ticks(&self) -> Result<u64, CpuTimeError> {
        parse_self_stat(&read(&self.self_stat)?).ok_or_else(|| CpuTimeError::Unparsable {
            path: self.self_stat.clone(),
            what: "utime/stime",
        })
    }

    /// Both readings at once, for the window edges.
    pub fn read_both(&self) -> Result<(u64, SystemCpuTimes), CpuTimeError> {
        Ok((self.read_self_ticks()?, self.read_system()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 5 50 800 20 3 2 10 7 0\ncpu0 50 2 25 400 10 1 1 5 3 0\n";

    #[test]
    fn parses_proc_stat_like_psutil() {
        let t = parse_proc_stat(STAT).expect("parse");
        // total = 100+5+50+800+20+3+2+10 = 990; idle = 800+20
        assert_eq!(t.total_ticks, 990);
        assert_eq!(t.busy_ticks, 170);
    }

    #[test]
    fn parses_self_stat_with_odd_comm() {
        let line = "1234 (my (weird) prog) R 1 2 3 4 5 6 7 8 9 10 111 222 0 0 20 0";
        assert_eq!(parse_self_stat(line), Some(333));
        // Reaped children's time (cutime 40, cstime 5) is ours too.
        let line = "1234 (jb) S 1 2 3 4 5 6 7 8 9 10 111 222 40 5 20 0";
        assert_eq!(parse_self_stat(line), Some(378));
        assert_eq!(parse_self_stat("garbage"), None);
    }

    #[test]
    fn utilisation_and_share() {
        let a = SystemCpuTimes {
            busy_ticks: 100,
            total_ticks: 1000,
        };
        let b = SystemCpuTimes {
            busy_ticks: 600,
            total_ticks: 2000,
        };
        assert!((utilisation(a, b).expect("u") - 0.5).abs() < 1e-12);
        assert_eq!(utilisation(a, a), None);
        // We used 460 of the 500 busy ticks: others 40 / 1000 = 4 % -> not contended.
        let s = cpu_share(0, 460, a, b).expect("share");
        assert!((s.harness_fraction - 0.46).abs() < 1e-12);
        assert!((s.others_fraction - 0.04).abs() < 1e-12);
        assert!(!s.contended());
        // We used 300: others 200 / 1000 = 20 % -> contended.
        let s = cpu_share(0, 300, a, b).expect("share");
        assert!(s.contended());
        // A 4 ms window on 2 CPUs: 1 tick of machine time, none of it ours by rounding. That
        // is no evidence of a co-tenant, so no share is stated.
        let c = SystemCpuTimes {
            busy_ticks: 601,
            total_ticks: 2001,
        };
        assert_eq!(cpu_share(0, 0, b, c), None);
        let d = SystemCpuTimes {
            busy_ticks: 600 + MIN_SHARE_TICKS,
            total_ticks: 2000 + MIN_SHARE_TICKS,
        };
        assert!(cpu_share(0, MIN_SHARE_TICKS, b, d).is_some());
    }
}
