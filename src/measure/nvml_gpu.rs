//! NVIDIA GPUs through NVML (nvml-wrapper loads libnvidia-ml at run time).
//!
//! Owns: `NvmlGpu` (one board's reads for the board meter, a device handle opened per read so a
//! reader can live in a poller thread), loading NVML, mapping `cuda:i` to an NVML device
//! through `CUDA_VISIBLE_DEVICES`, the board meter for a CUDA device, and the device listing
//! and compute capability `env` and the run's setup ask for.
//! Must not: integrate, flag or decide anything (`gpu` does that with what these return),
//! and must not panic or fail the build where NVML is absent or a read fails.

use super::devices::GpuNode;
use super::gpu::{
    BoardFacts, DeviceError, DriverVersions, GpuMeter, GpuReader, GpuVendor, PowerMode, RawPower,
};
use super::provenance::GpuEdgeFacts;
use super::tenancy::ProcessSm;
use super::MeterError;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::struct_wrappers::device::FieldValueSample;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::{Device, Nvml};
use std::sync::Arc;

/// `NVML_FI_DEV_POWER_INSTANT`: instantaneous board power in mW.
pub const FIELD_POWER_INSTANT: u32 = 186;

/// How a CUDA ordinal names an NVML device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NvmlDeviceRef {
    Index(u32),
    Uuid(String),
}

pub(super) fn nvml_err(
    what: &'static str,
) -> impl Fn(nvml_wrapper::error::NvmlError) -> DeviceError {
    move |e| DeviceError::Nvml {
        what,
        message: e.to_string(),
    }
}

/// One NVIDIA GPU through NVML.
pub struct NvmlGpu {
    nvml: Arc<Nvml>,
    device: NvmlDeviceRef,
}

impl NvmlGpu {
    /// The device `r` names, if NVML can open it now.
    pub fn open(nvml: Arc<Nvml>, device: NvmlDeviceRef) -> Result<Self, DeviceError> {
        handle(&nvml, &device)?;
        Ok(Self { nvml, device })
    }

    fn handle(&self) -> Result<Device<'_>, DeviceError> {
        handle(&self.nvml, &self.device)
    }
}

/// A device handle for `r` (opened per use: a `Device` borrows its `Nvml`).
pub(super) fn handle<'n>(nvml: &'n Nvml, r: &NvmlDeviceRef) -> Result<Device<'n>, DeviceError> {
    match r {
        NvmlDeviceRef::Index(i) => nvml.device_by_index(*i),
        NvmlDeviceRef::Uuid(u) => nvml.device_by_uuid(u.as_str()),
    }
    .map_err(nvml_err("device handle"))
}

fn sample_value_f64(v: &SampleValue) -> f64 {
    match *v {
        SampleValue::F64(x) => x,
        SampleValue::U32(x) => f64::from(x),
        SampleValue::U64(x) => x as f64,
        SampleValue::I64(x) => x as f64,
    }
}

impl GpuReader for NvmlGpu {
    fn vendor(&self) -> GpuVendor {
        GpuVendor::Nvidia
    }

    fn total_energy_mj(&self) -> Result<u64, DeviceError> {
        self.handle()?
            .total_energy_consumption()
            .map_err(nvml_err("total energy"))
    }

    fn power(&self, mode: PowerMode) -> Result<RawPower, DeviceError> {
        let device = self.handle()?;
        match mode {
            PowerMode::Instant => {
                let values = device
                    .field_values_for(&[FieldId(FIELD_POWER_INSTANT)])
                    .map_err(nvml_err("field values"))?;
                let sample: FieldValueSample = values
                    .into_iter()
                    .next()
                    .ok_or(DeviceError::NoPower)?
                    .map_err(nvml_err("instant power field"))?;
                let value = sample.value.map_err(nvml_err("instant power value"))?;
                Ok(RawPower {
                    nvml_timestamp_us: Some(sample.timestamp),
                    power_w: sample_value_f64(&value) * 1e-3,
                })
            }
            PowerMode::Average => Ok(RawPower {
                nvml_timestamp_us: None,
                power_w: f64::from(device.power_usage().map_err(nvml_err("power usage"))?) * 1e-3,
            }),
            PowerMode::None => Err(DeviceError::NoPower),
        }
    }

    fn edge_facts(&self) -> GpuEdgeFacts {
        let Ok(device) = self.handle() else {
            return GpuEdgeFacts::default();
        };
        GpuEdgeFacts {
            temperature_c: device.temperature(TemperatureSensor::Gpu).ok(),
            sm_clock_mhz: device.clock_info(Clock::SM).ok(),
            memory_clock_mhz: device.clock_info(Clock::Memory).ok(),
            compute_pids: device
                .running_compute_processes()
                .map(|ps| ps.iter().map(|p| p.pid).collect())
                .ok(),
        }
    }

    fn compute_pids(&self) -> Result<Vec<u32>, DeviceError> {
        match self.handle()?.running_compute_processes() {
            Ok(ps) => Ok(ps.iter().map(|p| p.pid).collect()),
            // Some boards (vGPUs, MIG parents on some drivers) name no processes: tenancy is
            // then unknown, not a failed read on every poll.
            Err(nvml_wrapper::error::NvmlError::NotSupported) => {
                Err(DeviceError::NotSupported("compute processes"))
            }
            Err(e) => Err(nvml_err("running compute processes")(e)),
        }
    }

    fn process_sm(&self, since_us: u64) -> Result<Vec<ProcessSm>, DeviceError> {
        match self.handle()?.process_utilization_stats(since_us) {
            Ok(samples) => Ok(samples
                .into_iter()
                .map(|x| ProcessSm {
                    pid: x.pid,
                    timestamp_us: x.timestamp,
                    sm_util: x.sm_util,
                })
                .collect()),
            // No sample newer than `since_us`.
            Err(nvml_wrapper::error::NvmlError::NotFound) => Ok(Vec::new()),
            Err(nvml_wrapper::error::NvmlError::NotSupported) => {
                Err(DeviceError::NotSupported("per-process utilisation"))
            }
            Err(e) => Err(nvml_err("process utilization")(e)),
        }
    }

    fn mig_instances(&self) -> Option<Vec<String>> {
        let device = self.handle().ok()?;
        if device.mig_mode().ok()?.current != 1 {
            return None;
        }
        let n = device.mig_device_count().unwrap_or(0);
        Some(
            (0..n)
                .map(|k| match device.mig_device_by_index(k) {
                    Ok(m) => m
                        .name()
                        .unwrap_or_else(|e| format!("MIG {k}: name unreadable ({e})")),
                    Err(e) => format!("MIG {k}: unreadable ({e})"),
                })
                .collect(),
        )
    }

    fn board_facts(&self) -> BoardFacts {
        let Ok(device) = self.handle() else {
            return BoardFacts::default();
        };
        BoardFacts {
            name: device.name().ok(),
            memory_total_bytes: device.memory_info().map(|m| m.total).ok(),
            uuid: device.uuid().ok(),
            power_limit_w: device
                .enforced_power_limit()
                .map(|mw| f64::from(mw) * 1e-3)
                .ok(),
            persistence_mode: device.is_in_persistent_mode().ok(),
        }
    }
}

const METER: &str = "nvml";

fn unavailable(reason: String) -> MeterError {
    MeterError::Unavailable {
        meter: METER,
        reason,
    }
}

/// Load NVML; a machine without libnvidia-ml gets `Unavailable`, never a panic.
pub fn init() -> Result<Nvml, MeterError> {
    Nvml::init().map_err(|e| unavailable(format!("NVML could not be initialised: {e}")))
}

/// Map `cuda:i` to an NVML device through `CUDA_VISIBLE_DEVICES`: CUDA renumbers the visible
/// devices from 0, NVML does not, so `cuda:0` with `CUDA_VISIBLE_DEVICES=2` is NVML device 2.
pub fn resolve_cuda_index(
    cuda_visible_devices: Option<&str>,
    cuda_index: usize,
) -> Result<NvmlDeviceRef, DeviceError> {
    let Some(list) = cuda_visible_devices
        .map(str::trim)
        .filter(|s| !s.is_empty())
    else {
        return u32::try_from(cuda_index)
            .map(NvmlDeviceRef::Index)
            .map_err(|_| DeviceError::OutOfRange(cuda_index));
    };
    let entries: Vec<&str> = list.split(',').map(str::trim).collect();
    let entry = entries
        .get(cuda_index)
        .ok_or_else(|| DeviceError::NotVisible {
            index: cuda_index,
            list: list.to_string(),
            count: entries.len(),
        })?;
    if let Ok(i) = entry.parse::<u32>() {
        Ok(NvmlDeviceRef::Index(i))
    } else if entry.starts_with("GPU-") || entry.starts_with("MIG-") {
        Ok(NvmlDeviceRef::Uuid((*entry).to_string()))
    } else {
        Err(DeviceError::Unmappable((*entry).to_string()))
    }
}

fn driver_versions(nvml: &Nvml) -> DriverVersions {
    DriverVersions {
        nvml_driver: nvml.sys_driver_version().ok(),
        cuda_driver: nvml
            .sys_cuda_driver_version()
            .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10))
            .ok(),
    }
}

/// The board meter for the GPU that `cuda:<cuda_index>` trains on; the node's other GPUs are
/// named in its windows' provenance as present but not metered.
pub fn probe_meter(cuda_index: usize) -> Result<GpuMeter, MeterError> {
    let node = NvmlNode::init()?;
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let device = resolve_cuda_index(visible.as_deref(), cuda_index)
        .map_err(|e| unavailable(e.to_string()))?;
    let component = format!("gpu:{cuda_index}");
    let reader = NvmlGpu::open(Arc::clone(&node.nvml), device.clone())
        .map_err(|e| unavailable(format!("{component}: NVML cannot open {device:?}: {e}")))?;
    let metered_uuid = reader.board_facts().uuid;
    let others: Vec<String> = (0..node.device_count().unwrap_or(0))
        .filter(|&i| node.uuid(i).ok() != metered_uuid)
        .map(|i| {
            format!(
                "nvml {i} ({})",
                node.name(i).unwrap_or_else(|e| format!("unreadable: {e}"))
            )
        })
        .collect();
    Ok(
        GpuMeter::with_readers(vec![(component, Arc::new(reader))], node.driver())?
            .with_not_metered(others),
    )
}

/// The node's NVIDIA GPUs through NVML (the seam `devices` selects from).
pub struct NvmlNode {
    nvml: Arc<Nvml>,
}

impl NvmlNode {
    pub fn init() -> Result<Self, MeterError> {
        Ok(Self {
            nvml: Arc::new(init()?),
        })
    }

    fn device(&self, index: u32) -> Result<Device<'_>, DeviceError> {
        handle(&self.nvml, &NvmlDeviceRef::Index(index))
    }
}

impl GpuNode for NvmlNode {
    fn device_count(&self) -> Result<u32, DeviceError> {
        self.nvml.device_count().map_err(nvml_err("device count"))
    }

    fn uuid(&self, index: u32) -> Result<String, DeviceError> {
        self.device(index)?.uuid().map_err(nvml_err("uuid"))
    }

    fn name(&self, index: u32) -> Result<String, DeviceError> {
        self.device(index)?.name().map_err(nvml_err("name"))
    }

    fn reader(&self, index: u32) -> Result<Arc<dyn GpuReader>, DeviceError> {
        Ok(Arc::new(NvmlGpu::open(
            Arc::clone(&self.nvml),
            NvmlDeviceRef::Index(index),
        )?))
    }

    fn driver(&self) -> DriverVersions {
        driver_versions(&self.nvml)
    }

    fn mig_parent(&self, mig_uuid: &str) -> Result<(u32, String), DeviceError> {
        let mig = self
            .nvml
            .device_by_uuid(mig_uuid)
            .map_err(|_| DeviceError::UuidNotOnNode(mig_uuid.to_string()))?;
        let name = mig.name().map_err(nvml_err("MIG instance name"))?;
        let parent = mig
            .mig_parent_device()
            .map_err(nvml_err("MIG parent device"))?
            .index()
            .map_err(nvml_err("MIG parent index"))?;
        Ok((parent, name))
    }
}

/// The compute capability (`9.0`) of the GPU `cuda:<cuda_index>` trains on.
pub fn compute_capability(cuda_index: usize) -> Result<String, MeterError> {
    let nvml = init()?;
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let device_err = |e: DeviceError| MeterError::Device {
        meter: METER,
        message: e.to_string(),
    };
    let r = resolve_cuda_index(visible.as_deref(), cuda_index).map_err(device_err)?;
    compute_capability_of(&nvml, &r)
}

/// The compute capability (`9.0`) of NVML device `nvml_index`.
pub fn compute_capability_nvml(nvml_index: u32) -> Result<String, MeterError> {
    compute_capability_of(&init()?, &NvmlDeviceRef::Index(nvml_index))
}

fn compute_capability_of(nvml: &Nvml, r: &NvmlDeviceRef) -> Result<String, MeterError> {
    let device_err = |e: DeviceError| MeterError::Device {
        meter: METER,
        message: e.to_string(),
    };
    let device = handle(nvml, r).map_err(device_err)?;
    let cc = device
        .cuda_compute_capability()
        .map_err(nvml_err("compute capability"))
        .map_err(device_err)?;
    Ok(format!("{}.{}", cc.major, cc.minor))
}

/// Describe every device NVML sees, for `joulebench env` (no counter probe delay): name, MIG,
/// the energy source it would give, and who else uses it.
pub fn list_devices() -> Result<Vec<String>, MeterError> {
    let nvml = init()?;
    let n = nvml
        .device_count()
        .map_err(|e| unavailable(format!("NVML device count failed: {e}")))?;
    Ok((0..n)
        .map(|i| match nvml.device_by_index(i) {
            Ok(d) => describe_device(i, &d),
            Err(e) => format!("nvml {i}: unreadable ({e})"),
        })
        .collect())
}

/// `nvml 0: NVIDIA H100 80GB HBM3; energy counter; no other compute process` and, where they
/// apply, that MIG is on (whole-GPU energy only) and who else runs on it.
fn describe_device(i: u32, d: &Device<'_>) -> String {
    let name = d.name().unwrap_or_else(|e| format!("? ({e})"));
    let mig = match d.mig_mode() {
        Ok(m) if m.current == 1 => {
            "; MIG enabled (energy is the whole GPU's: NVML has no per-instance counter)"
        }
        _ => "",
    };
    let source = if d.total_energy_consumption().is_ok() {
        "energy counter"
    } else {
        "power integrated (no energy counter)"
    };
    let own = std::process::id();
    let users = match d.running_compute_processes() {
        Ok(ps) => {
            let others: Vec<String> = ps
                .iter()
                .filter(|p| p.pid != own)
                .map(|p| p.pid.to_string())
                .collect();
            if others.is_empty() {
                "no other compute process".to_string()
            } else {
                format!("also used by pid {}", others.join(", "))
            }
        }
        Err(e) => format!("compute processes unreadable ({e})"),
    };
    format!("nvml {i}: {name}{mig}; {source}; {users}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_visible_devices_mapping() {
        assert_eq!(resolve_cuda_index(None, 1), Ok(NvmlDeviceRef::Index(1)));
        assert_eq!(
            resolve_cuda_index(Some("2,3"), 0),
            Ok(NvmlDeviceRef::Index(2))
        );
        assert_eq!(
            resolve_cuda_index(Some("GPU-abc"), 0),
            Ok(NvmlDeviceRef::Uuid("GPU-abc".into()))
        );
        assert!(resolve_cuda_index(Some("0"), 1).is_err());
    }

    #[test]
    fn init_without_driver_is_clean() {
        // On machines without libnvidia-ml this must be Unavailable, not a panic.
        match init() {
            Ok(_) => eprintln!("NVML present: skipping the no-driver assertion"),
            Err(e) => assert!(matches!(e, MeterError::Unavailable { meter: "nvml", .. })),
        }
    }
}
