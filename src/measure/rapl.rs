//! RAPL energy counters for CPU packages and DRAM through the Linux powercap tree.
//!
//! Owns: zone discovery by `name`, wrap-safe accumulation of `energy_uj`, a 1 s background
//! poller so no wrap is missed, and the harness's share of CPU time (RAPL is machine-wide).
//! Must not: add psys, core or uncore on top of packages, count a mirrored zone twice, guess a
//! value it could not read, or decide a fallback (detect.rs does).

use super::cputime::{cpu_share, ProcPaths, SystemCpuTimes};
use super::poller::Poller;
use super::provenance::{HostFacts, Provenance, RaplZoneFacts};
use super::{Boundary, ComponentEnergy, ComponentInfo, Meter, MeterError, MeterReport};
use super::{PowerSample, Source};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub const DEFAULT_POWERCAP_ROOT: &str = "/sys/class/powercap";
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// energy_uj is root-only since Linux 5.10 (CVE-2020-8694, the PLATYPUS side channel).
pub const PERMISSION_FIX: &str =
    "run `sudo chmod -R a+r /sys/class/powercap/intel-rapl:*/energy_uj` or run as root";

const METER: &str = "rapl";

/// Reads sysfs files; the seam through which tests inject errors (tests run as root, so a
/// chmod 000 file would still be readable there).
pub trait SysfsReader: Send + Sync {
    fn read_to_string(&self, path: &Path) -> io::Result<String>;
    /// A binary file (amdgpu's `gpu_metrics`); the file system by default.
    fn read_bytes(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsReader;

impl SysfsReader for FsReader {
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneKind {
    Package,
    Dram,
}

/// A zone that is counted.
#[derive(Debug, Clone, PartialEq)]
pub struct RaplZone {
    /// Directory name, e.g. `intel-rapl:0:1`.
    pub id: String,
    /// Content of its `name` file, e.g. `package-0`, `dram`.
    pub name: String,
    pub kind: ZoneKind,
    /// `cpu:package-0`, `dram:0`.
    pub component: String,
    pub path: PathBuf,
    pub max_energy_range_uj: u64,
}

/// What discovery found: the counted zones, and every zone left out with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    pub zones: Vec<RaplZone>,
    pub ignored: Vec<String>,
}

/// The one-line explanation of a permission failure on `path`.
pub fn permission_error(path: &Path) -> MeterError {
    MeterError::PermissionDenied {
        path: path.display().to_string(),
        fix: format!("RAPL energy_uj is readable by root only since Linux 5.10; {PERMISSION_FIX}"),
    }
}

fn io_error(path: &Path, e: io::Error) -> MeterError {
    if e.kind() == io::ErrorKind::PermissionDenied {
        return permission_error(path);
    }
    MeterError::Io {
        meter: METER,
        what: format!("reading {}", path.display()),
        source: e,
    }
}

fn read_u64(reader: &dyn SysfsReader, path: &Path) -> Result<u64, MeterError> {
    let text = reader.read_to_string(path).map_err(|e| io_error(path, e))?;
    text.trim().parse::<u64>().map_err(|e| MeterError::Device {
        meter: METER,
        message: format!(
            "{}: not an integer ({e}): {:?}",
            path.display(),
            text.trim()
        ),
    })
}

/// Numeric sort key of `intel-rapl:1:0` -> [1, 0].
fn id_key(id: &str) -> Vec<u64> {
    id.split(':')
        .skip(1)
        .map(|p| p.parse().unwrap_or(u64::MAX))
        .collect()
}

fn candidate_dirs(root: &Path) -> Result<Vec<(String, PathBuf)>, MeterError> {
    let list = |dir: &Path| -> Result<Vec<(String, PathBuf)>, MeterError> {
        let entries = std::fs::read_dir(dir).map_err(|e| io_error(dir, e))?;
        Ok(entries
            .filter_map(Result::ok)
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .filter(|(n, p)| n.starts_with("intel-rapl") && p.is_dir())
            .collect())
    };
    let mut out = Vec::new();
    for (name, path) in list(root)? {
        // Subzones appear nested (intel-rapl:0/intel-rapl:0:0) and, on real sysfs, also as
        // top-level links; collect both and deduplicate by directory name below.
        if name.starts_with("intel-rapl:") {
            out.extend(list(&path)?.into_iter().filter(|(n, _)| n.contains(':')));
        }
        out.push((name, path));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.dedup_by(|a, b| a.0 == b.0);
    Ok(out)
}

/// Find the counted zones under `root`. Errors say precisely why RAPL is unusable.
pub fn discover(root: &Path, reader: &dyn SysfsReader) -> Result<Discovery, MeterError> {
    if !root.is_dir() {
        return Err(MeterError::Unavailable {
            meter: METER,
            reason: format!(
                "no powercap directory at {} (no intel_rapl driver, or a VM/container that \
                 does not expose it)",
                root.display()
            ),
        });
    }
    let mut dirs = candidate_dirs(root)?;
    dirs.sort_by(|a, b| {
        let mmio = |s: &str| s.starts_with("intel-rapl-mmio");
        (mmio(&a.0), id_key(&a.0)).cmp(&(mmio(&b.0), id_key(&b.0)))
    });
    let mut zones: Vec<RaplZone> = Vec::new();
    let mut ignored = Vec::new();
    for (id, path) in dirs {
        let name_path = path.join("name");
        let Ok(name) = reader.read_to_string(&name_path) else {
            // `intel-rapl` itself is the control-type directory and has no name file.
            continue;
        };
        let name = name.trim().to_string();
        if id.starts_with("intel-rapl-mmio") {
            // The MMIO interface mirrors the MSR package counter (same energy, twice).
            ignored.push(format!("{id} ({name}): MMIO mirror of an MSR zone"));
            continue;
        }
        let kind = if name.starts_with("package-") {
            ZoneKind::Package
        } else if name == "dram" {
            ZoneKind::Dram
        } else {
            // psys covers the packages; core and uncore are inside them (double counting).
            ignored.push(format!("{id} ({name}): not added on top of the packages"));
            continue;
        };
        let component = match kind {
            ZoneKind::Package => format!("cpu:{name}"),
            ZoneKind::Dram => {
                let package = id_key(&id).first().copied().unwrap_or(0);
                format!("dram:{package}")
            }
        };
        if let Some(first) = zones.iter().find(|z| z.component == component) {
            ignored.push(format!("{id} ({name}): duplicate of {}", first.id));
            continue;
        }
        let max_energy_range_uj = read_u64(reader, &path.join("max_energy_range_uj"))?;
        zones.push(RaplZone {
            id,
            name,
            kind,
            component,
            path,
            max_energy_range_uj,
        });
    }
    if !zones.iter().any(|z| z.kind == ZoneKind::Package) {
        return Err(MeterError::Unavailable {
            meter: METER,
            reason: format!(
                "no intel-rapl package zones under {}{}",
                root.display(),
                if ignored.is_empty() {
                    String::new()
                } else {
                    format!(" (ignored: {})", ignored.join("; "))
                }
            ),
        });
    }
    // Packages first, then DRAM, each in zone order.
    zones.sort_by_key(|z| (z.kind == ZoneKind::Dram, id_key(&z.id)));
    Ok(Discovery { zones, ignored })
}

/// delta of a counter that wraps at `max_energy_range_uj`: if current < previous, the counter
/// passed its maximum once (docs/design/measurement.md section 2).
pub fn wrap_delta_uj(previous_uj: u64, current_uj: u64, max_energy_range_uj: u64) -> u64 {
    if current_uj >= previous_uj {
        current_uj - previous_uj
    } else {
        (current_uj + max_energy_range_uj).saturating_sub(previous_uj)
    }
}

/// Wrap-safe accumulator for one zone.
#[derive(Debug, Clone, PartialEq)]
pub struct WrapCounter {
    pub previous_uj: u64,
    pub max_energy_range_uj: u64,
    pub total_uj: u128,
    pub wraps: u32,
}

impl WrapCounter {
    pub fn new(initial_uj: u64, max_energy_range_uj: u64) -> Self {
        Self {
            previous_uj: initial_uj,
            max_energy_range_uj,
            total_uj: 0,
            wraps: 0,
        }
    }

    /// Take a new reading; returns the energy since the previous one.
    pub fn update(&mut self, current_uj: u64) -> u64 {
        if current_uj < self.previous_uj {
            self.wraps += 1;
        }
        let d = wrap_delta_uj(self.previous_uj, current_uj, self.max_energy_range_uj);
        self.previous_uj = current_uj;
        self.total_uj += u128::from(d);
        d
    }

    pub fn energy_j(&self) -> f64 {
        self.total_uj as f64 * 1e-6
    }
}

#[derive(Debug)]
struct Accum {
    counters: Vec<WrapCounter>,
    last_t_s: f64,
    timeline: Vec<PowerSample>,
    samples: u64,
}

struct Shared {
    zones: Vec<RaplZone>,
    reader: Arc<dyn SysfsReader>,
    origin: Instant,
    accum: Mutex<Accum>,
}

impl Shared {
    /// Read every zone now and fold it into the accumulators. Serialised by the mutex, so the
    /// poller and the edge reads never interleave half-updates.
    fn sample(&self) -> Result<Vec<f64>, MeterError> {
        let mut accum = self.accum.lock().unwrap_or_else(PoisonError::into_inner);
        let mut now_uj = Vec::with_capacity(self.zones.len());
        for z in &self.zones {
            now_uj.push(read_u64(self.reader.as_ref(), &z.path.join("energy_uj"))?);
        }
        let t_s = self.origin.elapsed().as_secs_f64();
        let dt_s = t_s - accum.last_t_s;
        let mut cumulative_j = Vec::with_capacity(self.zones.len());
        for (i, uj) in now_uj.into_iter().enumerate() {
            let d_uj = accum.counters[i].update(uj);
            let energy_j = accum.counters[i].energy_j();
            cumulative_j.push(energy_j);
            let power_w = (dt_s > 0.0).then(|| d_uj as f64 * 1e-6 / dt_s);
            accum.timeline.push(PowerSample {
                t_s,
                component: self.zones[i].component.clone(),
                energy_j,
                power_w,
            });
        }
        accum.last_t_s = t_s;
        accum.samples += 1;
        Ok(cumulative_j)
    }
}

struct Session {
    shared: Arc<Shared>,
    poller: Option<Poller<()>>,
    cpu_start: Option<(u64, SystemCpuTimes)>,
}

/// RAPL meter: one `cpu:package-N` component per package, one `dram:N` per DRAM zone.
pub struct RaplMeter {
    root: PathBuf,
    reader: Arc<dyn SysfsReader>,
    discovery: Discovery,
    poll_interval: Duration,
    proc_paths: Option<ProcPaths>,
    session: Option<Session>,
}

impl std::fmt::Debug for RaplMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaplMeter")
            .field("root", &self.root)
            .field("discovery", &self.discovery)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

/// Probe RAPL under `root` with the real file system.
pub fn probe(root: &Path) -> Result<RaplMeter, MeterError> {
    RaplMeter::probe_with(root, Arc::new(FsReader))
}

impl RaplMeter {
    /// Discover zones and check every counted `energy_uj` is readable now, so a permission
    /// problem is reported at detection and not in the middle of a run.
    pub fn probe_with(root: &Path, reader: Arc<dyn SysfsReader>) -> Result<Self, MeterError> {
        let discovery = discover(root, reader.as_ref())?;
        for z in &discovery.zones {
            read_u64(reader.as_ref(), &z.path.join("energy_uj"))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            reader,
            discovery,
            poll_interval: DEFAULT_POLL_INTERVAL,
            proc_paths: Some(ProcPaths::default()),
            session: None,
        })
    }

    /// Background poll interval (default 1 s). It must stay well below the wrap period of
    /// the busiest zone (about 4 minutes for a busy AMD package).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Where CPU time is read for the contention check; `None` disables it.
    pub fn with_proc_paths(mut self, paths: Option<ProcPaths>) -> Self {
        self.proc_paths = paths;
        self
    }

    pub fn zones(&self) -> &[RaplZone] {
        &self.discovery.zones
    }

    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// One line for `joulebench env`.
    pub fn describe(&self) -> String {
        let zones: Vec<String> = self
            .discovery
            .zones
            .iter()
            .map(|z| format!("{} ({})", z.component, z.id))
            .collect();
        format!("{} under {}", zones.join(", "), self.root.display())
    }

    /// Take one sample now, as the background poller does (lets tests step the counter).
    pub fn poll_once(&mut self) -> Result<(), MeterError> {
        let session = self
            .session
            .as_ref()
            .ok_or(MeterError::Protocol(METER, "poll_once before start"))?;
        session.shared.sample().map(|_| ())
    }

    /// Samples taken by the background poller so far (0 before start).
    pub fn poller_ticks(&self) -> u64 {
        self.session
            .as_ref()
            .and_then(|s| s.poller.as_ref())
            .map_or(0, |p| p.ticks())
    }
}

impl Meter for RaplMeter {
    fn name(&self) -> &'static str {
        METER
    }

    fn boundary(&self) -> Boundary {
        Boundary::Host
    }

    fn components(&self) -> Vec<ComponentInfo> {
        self.discovery
            .zones
            .iter()
            .map(|z| ComponentInfo {
                component: z.component.clone(),
                boundary: Boundary::Host,
                source: Source::MeasuredCounter,
                sample_interval_ms: self.poll_interval.as_secs_f64() * 1e3,
                note: Some(format!("RAPL zone {} ({})", z.id, z.name)),
            })
            .collect()
    }

    fn start(&mut self) -> Result<(), MeterError> {
        if self.session.is_some() {
            return Err(MeterError::Protocol(METER, "start while a window is open"));
        }
        let cpu_start = self.proc_paths.as_ref().and_then(|p| p.read_both().ok());
        let mut counters = Vec::with_capacity(self.discovery.zones.len());
        for z in &self.discovery.zones {
            let uj = read_u64(self.reader.as_ref(), &z.path.join("energy_uj"))?;
            counters.push(WrapCounter::new(uj, z.max_energy_range_uj));
        }
        let origin = Instant::now();
        let timeline = self
            .discovery
            .zones
            .iter()
            .map(|z| PowerSample {
                t_s: 0.0,
                component: z.component.clone(),
                energy_j: 0.0,
                power_w: None,
            })
            .collect();
        let shared = Arc::new(Shared {
            zones: self.discovery.zones.clone(),
            reader: Arc::clone(&self.reader),
            origin,
            accum: Mutex::new(Accum {
                counters,
                last_t_s: 0.0,
                timeline,
                samples: 1,
            }),
        });
        let poll_shared = Arc::clone(&shared);
        let poller = Poller::spawn("rapl", self.poll_interval, origin, move || {
            poll_shared.sample().map(|_| ())
        })?;
        self.session = Some(Session {
            shared,
            poller: Some(poller),
            cpu_start,
        });
        Ok(())
    }

    fn read(&mut self) -> Result<Vec<f64>, MeterError> {
        let session = self
            .session
            .as_ref()
            .ok_or(MeterError::Protocol(METER, "read before start"))?;
        session.shared.sample()
    }

    fn stop(&mut self) -> Result<MeterReport, MeterError> {
        let mut session = self
            .session
            .take()
            .ok_or(MeterError::Protocol(METER, "stop before start"))?;
        let poll_log = session.poller.take().map(Poller::stop);
        let final_j = session.shared.sample()?;
        let accum = session
            .shared
            .accum
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let interval_ms = self.poll_interval.as_secs_f64() * 1e3;
        let components = self
            .discovery
            .zones
            .iter()
            .zip(&final_j)
            .zip(&accum.counters)
            .map(|((z, &energy_j), c)| ComponentEnergy {
                component: z.component.clone(),
                source: Source::MeasuredCounter,
                energy_j,
                sample_interval_ms: interval_ms,
                // The counter is read exactly at both edges: nothing in between is missed.
                coverage: 1.0,
                counter_to_integral_ratio: None,
                note: (c.wraps > 0).then(|| format!("{} counter wrap(s) unfolded", c.wraps)),
            })
            .collect();
        let mut flags = Vec::new();
        let mut host = HostFacts {
            rapl_root: Some(self.root.display().to_string()),
            rapl_zones: Some(
                self.discovery
                    .zones
                    .iter()
                    .map(|z| RaplZoneFacts {
                        id: z.id.clone(),
                        name: z.name.clone(),
                        component: z.component.clone(),
                        max_energy_range_uj: z.max_energy_range_uj,
                    })
                    .collect(),
            ),
            rapl_ignored_zones: Some(self.discovery.ignored.clone()),
            rapl_wraps: Some(accum.counters.iter().map(|c| c.wraps).sum::<u32>()),
            rapl_samples: Some(accum.samples),
            ..HostFacts::default()
        };
        if let Some(log) = poll_log.filter(|l| l.errors > 0) {
            // A failed poll can hide a wrap; say so rather than trust the number silently.
            flags.push("rapl_poll_errors".to_string());
            host.rapl_poll_errors = Some(log.errors as u64);
            host.rapl_first_poll_error = log.first_error;
        }
        let cpu_end = self.proc_paths.as_ref().and_then(|p| p.read_both().ok());
        match (session.cpu_start, cpu_end) {
            (Some((s0, y0)), Some((s1, y1))) => {
                host.set_cpu_share(cpu_share(s0, s1, y0, y1), &mut flags);
            }
            _ => host.cpu_share = Some("unknown: /proc CPU times unreadable".into()),
        }
        let provenance = Provenance::host(host);
        let timeline = accum.timeline.clone();
        Ok(MeterReport {
            components,
            flags,
            timeline,
            provenance,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_rule() {
        assert_eq!(wrap_delta_uj(100, 250, 1000), 150);
        // 900 -> 1000 (max) -> 0 -> 50: 150 uJ.
        assert_eq!(wrap_delta_uj(900, 50, 1000), 150);
        let mut c = WrapCounter::new(900, 1000);
        c.update(50);
        c.update(990);
        c.update(10);
        assert_eq!(c.wraps, 2);
        assert_eq!(c.total_uj, 150 + 940 + 20);
    }

    #[test]
    fn permission_message_has_the_fix() {
        let e = permission_error(Path::new("/sys/class/powercap/intel-rapl:0/energy_uj"));
        let msg = e.to_string();
        assert!(msg.contains("permission denied"), "{msg}");
        assert!(
            msg.contains("sudo chmod -R a+r /sys/class/powercap/intel-rapl:*/energy_uj"),
            "{msg}"
        );
        assert!(msg.contains("run as root"), "{msg}");
    }

    #[test]
    fn id_sorting_is_numeric() {
        assert!(id_key("intel-rapl:2") < id_key("intel-rapl:10"));
        assert!(id_key("intel-rapl:0") < id_key("intel-rapl:0:0"));
    }
}
