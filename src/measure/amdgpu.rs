//! AMD GPUs (Instinct, Radeon) through the amdgpu driver's own files: no ROCm library needed.
//!
//! Owns: finding the amdgpu devices under the DRM class folder, the binary `gpu_metrics` table
//! (which table versions hold an energy accumulator, where, and how wide; a 32-bit one is
//! unwrapped), the hwmon power, temperature and clock files, `AmdGpu` (one board's reads for the
//! board meter in `gpu`) and the board meter for `--meter amdgpu`.
//! Must not: integrate, flag or decide whether the counter is trusted (`gpu` checks it against
//! the board's power at probe, as Zeus does), guess a table layout it does not know (that board
//! is metered from its power), or panic on a short or garbled table.
//!
//! Files read, under `<drm root>/cardN/device/`: `vendor` (0x1002), `gpu_metrics`,
//! `product_name`, `unique_id`, `mem_info_vram_total`, and `hwmon/hwmonM/` (`name` amdgpu,
//! `power1_input` or `power1_average` in µW, `power1_cap` µW, `temp1_input` m°C,
//! `freq1_input`/`freq2_input` Hz).

use super::gpu::{
    BoardFacts, DeviceError, DriverVersions, GpuMeter, GpuReader, GpuVendor, PowerMode, RawPower,
};
use super::provenance::GpuEdgeFacts;
use super::rapl::SysfsReader;
use super::MeterError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

pub const DEFAULT_DRM_ROOT: &str = "/sys/class/drm";
/// Overrides `DEFAULT_DRM_ROOT` (containers that mount sysfs elsewhere; tests' fake trees).
pub const DRM_ROOT_ENV: &str = "JOULEBENCH_DRM_ROOT";
/// PCI vendor id of AMD/ATI.
pub const AMD_PCI_VENDOR: &str = "0x1002";
/// One step of the energy accumulator: 2^-16 J = 15.259 µJ (the kernel's kgd_pp_interface.h
/// states it for table 1.4 and 1.5; ROCm SMI and AMD SMI apply the same resolution to every
/// table version, and the probe's check against power catches a board where it is wrong).
pub const ENERGY_UNIT_J: f64 = 1.0 / 65536.0;

const METER: &str = "amdgpu";

/// The DRM root in effect: `$JOULEBENCH_DRM_ROOT` or `/sys/class/drm`.
pub fn drm_root() -> PathBuf {
    std::env::var_os(DRM_ROOT_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_DRM_ROOT), PathBuf::from)
}

// ---------------------------------------------------------------------------------------
// The gpu_metrics table.
// ---------------------------------------------------------------------------------------

/// Where a table version keeps its energy accumulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnergyField {
    /// Byte offset from the table's start (header included).
    pub offset: usize,
    /// 32 (table 1.0) or 64 bits.
    pub bits: u32,
}

/// The header every table starts with: its size and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsHeader {
    pub structure_size: u16,
    pub format_revision: u8,
    pub content_revision: u8,
}

impl MetricsHeader {
    pub fn version(&self) -> String {
        format!("{}.{}", self.format_revision, self.content_revision)
    }
}

pub fn parse_header(table: &[u8]) -> Option<MetricsHeader> {
    let b = table.get(..4)?;
    Some(MetricsHeader {
        structure_size: u16::from_le_bytes([b[0], b[1]]),
        format_revision: b[2],
        content_revision: b[3],
    })
}

/// The energy accumulator of table `format.content`, laid out as the kernel's C structs are
/// (natural alignment): 1.0 has a 32-bit one after the 8-byte clock counter; 1.1-1.3 a 64-bit
/// one after 10 16-bit fields; 1.4 after 3 temperatures, the socket power and 6 activities;
/// 1.5 as 1.4 plus 32 JPEG activities. Format 2 and 3 (APUs) have none; a later 1.x is not
/// guessed.
pub fn energy_field(format_revision: u8, content_revision: u8) -> Option<EnergyField> {
    let (offset, bits) = match (format_revision, content_revision) {
        (1, 0) => (36, 32),
        (1, 1..=4) => (24, 64),
        (1, 5) => (88, 64),
        _ => return None,
    };
    Some(EnergyField { offset, bits })
}

/// The raw accumulator value of a table, or why there is none.
pub fn read_accumulator(table: &[u8]) -> Result<(u64, EnergyField), String> {
    let h = parse_header(table).ok_or("gpu_metrics shorter than its 4-byte header")?;
    let f = energy_field(h.format_revision, h.content_revision).ok_or_else(|| {
        format!(
            "gpu_metrics table {} has no energy accumulator this version knows",
            h.version()
        )
    })?;
    let width = (f.bits / 8) as usize;
    let end = f.offset + width;
    if usize::from(h.structure_size) < end || table.len() < end {
        return Err(format!(
            "gpu_metrics table {} is {} bytes (header says {}), too short for its accumulator at byte {}",
            h.version(),
            table.len(),
            h.structure_size,
            f.offset
        ));
    }
    let b = &table[f.offset..end];
    let raw = if f.bits == 32 {
        u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    } else {
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    };
    Ok((raw, f))
}

/// Extends a narrow accumulator past its wraps: a 32-bit one wraps after 65,536 J (under four
/// minutes at 300 W), far longer than the 100 ms between polls. A 64-bit one never wraps; its
/// going backwards is a driver reset, passed on for the meter to flag.
#[derive(Debug, Default)]
pub struct Unwrap {
    last_raw: Option<u64>,
    wraps: u64,
}

impl Unwrap {
    pub fn update(&mut self, raw: u64, bits: u32) -> u64 {
        if bits < 64 {
            if self.last_raw.is_some_and(|last| raw < last) {
                self.wraps += 1;
            }
            self.last_raw = Some(raw);
            return raw + (self.wraps << bits);
        }
        self.last_raw = Some(raw);
        raw
    }
}

// ---------------------------------------------------------------------------------------
// Devices.
// ---------------------------------------------------------------------------------------

/// One amdgpu device found under the DRM root.
#[derive(Debug, Clone, PartialEq)]
pub struct AmdDevice {
    /// 0, 1, ... in card order among AMD devices.
    pub index: usize,
    /// `card0`, ...
    pub card: String,
    /// `<root>/cardN/device`.
    pub device_dir: PathBuf,
    /// Its hwmon folder whose `name` is amdgpu, if any.
    pub hwmon_dir: Option<PathBuf>,
    /// The table's version and accumulator, or why the table gives no energy.
    pub metrics: Result<(MetricsHeader, EnergyField), String>,
}

fn card_number(name: &str) -> Option<u32> {
    name.strip_prefix("card")?.parse().ok()
}

fn read_trim(reader: &dyn SysfsReader, path: &Path) -> Option<String> {
    reader
        .read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn find_hwmon(reader: &dyn SysfsReader, device_dir: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(device_dir.join("hwmon"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    dirs.sort();
    dirs.into_iter()
        .find(|d| read_trim(reader, &d.join("name")).as_deref() == Some("amdgpu"))
}

fn metrics_of(
    reader: &dyn SysfsReader,
    device_dir: &Path,
) -> Result<(MetricsHeader, EnergyField), String> {
    let path = device_dir.join("gpu_metrics");
    let table = reader
        .read_bytes(&path)
        .map_err(|e| format!("no gpu_metrics ({e})"))?;
    let (_, field) = read_accumulator(&table)?;
    let header = parse_header(&table).ok_or("gpu_metrics has no header")?;
    Ok((header, field))
}

/// Every amdgpu device under `root` (`cardN` folders whose PCI vendor is AMD), in card order.
/// A missing root is no devices, not an error.
pub fn discover(root: &Path, reader: &dyn SysfsReader) -> Vec<AmdDevice> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut cards: Vec<(u32, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            card_number(&name).map(|n| (n, name))
        })
        .collect();
    cards.sort();
    let mut out = Vec::new();
    for (_, card) in cards {
        let device_dir = root.join(&card).join("device");
        if read_trim(reader, &device_dir.join("vendor")).as_deref() != Some(AMD_PCI_VENDOR) {
            continue;
        }
        out.push(AmdDevice {
            index: out.len(),
            hwmon_dir: find_hwmon(reader, &device_dir),
            metrics: metrics_of(reader, &device_dir),
            card,
            device_dir,
        });
    }
    out
}

/// One line per device for `joulebench env`.
pub fn describe(d: &AmdDevice, reader: &dyn SysfsReader) -> String {
    let name = board_name(reader, &d.device_dir);
    let counter = match &d.metrics {
        Ok((h, _)) => format!("gpu_metrics {} energy accumulator", h.version()),
        Err(e) => e.clone(),
    };
    let power = match &d.hwmon_dir {
        Some(h) if h.join("power1_input").exists() => "hwmon power1_input",
        Some(h) if h.join("power1_average").exists() => "hwmon power1_average",
        _ => "no hwmon power file",
    };
    format!(
        "amdgpu {} ({}): {name}; {counter}; {power}",
        d.index, d.card
    )
}

fn board_name(reader: &dyn SysfsReader, device_dir: &Path) -> String {
    read_trim(reader, &device_dir.join("product_name")).unwrap_or_else(|| {
        format!(
            "AMD GPU {}",
            read_trim(reader, &device_dir.join("device")).unwrap_or_else(|| "?".into())
        )
    })
}

/// One AMD board's reads for the board meter.
pub struct AmdGpu {
    device: AmdDevice,
    reader: Arc<dyn SysfsReader>,
    unwrap: Mutex<Unwrap>,
}

impl AmdGpu {
    pub fn new(device: AmdDevice, reader: Arc<dyn SysfsReader>) -> Self {
        Self {
            device,
            reader,
            unwrap: Mutex::new(Unwrap::default()),
        }
    }

    fn sysfs_err(path: &Path, message: impl std::fmt::Display) -> DeviceError {
        DeviceError::Sysfs {
            path: path.display().to_string(),
            message: message.to_string(),
        }
    }

    fn read_number(&self, path: &Path) -> Result<f64, DeviceError> {
        let text = self
            .reader
            .read_to_string(path)
            .map_err(|e| Self::sysfs_err(path, e))?;
        text.trim()
            .parse::<f64>()
            .map_err(|_| Self::sysfs_err(path, format!("not a number: {:?}", text.trim())))
    }

    fn hwmon_number(&self, file: &str) -> Option<f64> {
        let dir = self.device.hwmon_dir.as_ref()?;
        self.read_number(&dir.join(file)).ok()
    }
}

impl GpuReader for AmdGpu {
    fn vendor(&self) -> GpuVendor {
        GpuVendor::Amd
    }

    fn total_energy_mj(&self) -> Result<u64, DeviceError> {
        let path = self.device.device_dir.join("gpu_metrics");
        if let Err(why) = &self.device.metrics {
            return Err(Self::sysfs_err(&path, why));
        }
        let table = self
            .reader
            .read_bytes(&path)
            .map_err(|e| Self::sysfs_err(&path, e))?;
        let (raw, field) = read_accumulator(&table).map_err(|e| Self::sysfs_err(&path, e))?;
        let steps = self
            .unwrap
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .update(raw, field.bits);
        Ok((steps as f64 * ENERGY_UNIT_J * 1e3) as u64)
    }

    fn power(&self, mode: PowerMode) -> Result<RawPower, DeviceError> {
        let file = match mode {
            PowerMode::Instant => "power1_input",
            PowerMode::Average => "power1_average",
            PowerMode::None => return Err(DeviceError::NoPower),
        };
        let dir = self.device.hwmon_dir.as_ref().ok_or(DeviceError::NoPower)?;
        let microwatts = self.read_number(&dir.join(file))?;
        Ok(RawPower {
            nvml_timestamp_us: None,
            power_w: microwatts * 1e-6,
        })
    }

    fn edge_facts(&self) -> GpuEdgeFacts {
        let mhz = |f: &str| self.hwmon_number(f).map(|hz| (hz / 1e6).round() as u32);
        GpuEdgeFacts {
            temperature_c: self
                .hwmon_number("temp1_input")
                .map(|m| (m / 1e3).round() as u32),
            sm_clock_mhz: mhz("freq1_input"),
            memory_clock_mhz: mhz("freq2_input"),
            // The amdgpu files name no processes per device.
            compute_pids: None,
        }
    }

    fn board_facts(&self) -> BoardFacts {
        let dir = &self.device.device_dir;
        BoardFacts {
            name: Some(board_name(self.reader.as_ref(), dir)),
            memory_total_bytes: read_trim(self.reader.as_ref(), &dir.join("mem_info_vram_total"))
                .and_then(|s| s.parse().ok()),
            uuid: read_trim(self.reader.as_ref(), &dir.join("unique_id")),
            power_limit_w: self.hwmon_number("power1_cap").map(|uw| uw * 1e-6),
            persistence_mode: None,
        }
    }

    fn counter_source(&self) -> String {
        match &self.device.metrics {
            Ok((h, _)) => format!("gpu_metrics {} energy accumulator", h.version()),
            Err(_) => "energy accumulator".to_string(),
        }
    }
}

/// The board meter over the AMD devices `indices` (all of them when `None`) under `root`.
/// No AMD device, or an index that is not there, is `Unavailable` with the reason.
pub fn probe_meter(
    root: &Path,
    reader: Arc<dyn SysfsReader>,
    indices: Option<&[usize]>,
) -> Result<GpuMeter, MeterError> {
    let devices = discover(root, reader.as_ref());
    if devices.is_empty() {
        return Err(MeterError::Unavailable {
            meter: METER,
            reason: no_device(root),
        });
    }
    meter_for(devices, reader, indices)
}

/// Why there is no amdgpu meter on a node without AMD GPUs.
pub fn no_device(root: &Path) -> String {
    format!(
        "no AMD GPU (PCI vendor {AMD_PCI_VENDOR}) under {}",
        root.display()
    )
}

/// The board meter over `indices` (all when `None`) of `devices`, as `discover` found them.
pub fn meter_for(
    devices: Vec<AmdDevice>,
    reader: Arc<dyn SysfsReader>,
    indices: Option<&[usize]>,
) -> Result<GpuMeter, MeterError> {
    let chosen: Vec<AmdDevice> = match indices {
        None => devices,
        Some(want) => want
            .iter()
            .map(|&i| {
                devices
                    .get(i)
                    .cloned()
                    .ok_or_else(|| MeterError::Unavailable {
                        meter: METER,
                        reason: format!(
                            "AMD GPU {i} does not exist: {} found ({})",
                            devices.len(),
                            devices
                                .iter()
                                .map(|d| format!("{} = {}", d.index, d.card))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    let readers: Vec<(String, Arc<dyn GpuReader>)> = chosen
        .into_iter()
        .map(|d| {
            let component = format!("gpu:{}", d.index);
            let gpu: Arc<dyn GpuReader> = Arc::new(AmdGpu::new(d, Arc::clone(&reader)));
            (component, gpu)
        })
        .collect();
    GpuMeter::with_readers(readers, DriverVersions::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_follow_the_kernel_structs() {
        assert_eq!(
            energy_field(1, 0),
            Some(EnergyField {
                offset: 36,
                bits: 32
            })
        );
        for c in 1..=4 {
            assert_eq!(energy_field(1, c).map(|f| f.offset), Some(24));
        }
        assert_eq!(
            energy_field(1, 5),
            Some(EnergyField {
                offset: 88,
                bits: 64
            })
        );
        assert_eq!(energy_field(1, 6), None);
        assert_eq!(energy_field(2, 1), None);
    }

    #[test]
    fn short_or_unknown_tables_are_reasons_not_panics() {
        assert!(read_accumulator(&[]).is_err());
        assert!(read_accumulator(&[120, 0, 1, 3])
            .unwrap_err()
            .contains("too short"));
        assert!(read_accumulator(&[120, 0, 2, 1])
            .unwrap_err()
            .contains("2.1"));
        let mut t = vec![0u8; 40];
        t[..4].copy_from_slice(&[40, 0, 1, 0]);
        t[36..40].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(read_accumulator(&t).map(|(raw, _)| raw), Ok(7));
    }

    #[test]
    fn a_32_bit_accumulator_is_unwrapped_and_a_64_bit_one_is_not() {
        let mut u = Unwrap::default();
        assert_eq!(u.update(u32::MAX as u64 - 5, 32), u32::MAX as u64 - 5);
        assert_eq!(u.update(10, 32), (1u64 << 32) + 10);
        assert_eq!(u.update(20, 32), (1u64 << 32) + 20);
        let mut w = Unwrap::default();
        assert_eq!(w.update(100, 64), 100);
        assert_eq!(w.update(50, 64), 50);
    }
}
