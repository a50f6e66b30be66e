//! The NVML reads the GPU meter makes of one board, behind a trait.
//!
//! Owns: `GpuReader` (the seam), `NvmlGpu` (the driver through nvml-wrapper, a device handle
//! opened per read so a reader can live in a poller thread), the facts read once per window,
//! and the vocabulary both sides share (`DeviceError`, `NvmlDeviceRef`, `PowerMode`).
//! Must not: integrate, flag or decide anything (`nvml` does that with what these return),
//! and must not panic where NVML is absent or a read fails.

use super::provenance::GpuEdgeFacts;
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

/// Mapping `cuda:i` to an NVML device, or reading one, failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceError {
    #[error("cuda:{0} is out of range")]
    OutOfRange(usize),
    #[error("cuda:{index} requested but CUDA_VISIBLE_DEVICES={list} lists {count} device(s)")]
    NotVisible {
        index: usize,
        list: String,
        count: usize,
    },
    #[error("cannot map CUDA_VISIBLE_DEVICES entry {0:?} to an NVML device")]
    Unmappable(String),
    /// An NVML call failed (`what` names it; NVML's own message follows).
    #[error("NVML {what}: {message}")]
    Nvml { what: &'static str, message: String },
    #[error("no power reading available")]
    NoPower,
}

pub(super) fn nvml_err(
    what: &'static str,
) -> impl Fn(nvml_wrapper::error::NvmlError) -> DeviceError {
    move |e| DeviceError::Nvml {
        what,
        message: e.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerMode {
    /// Field 186, instantaneous power with NVML's sample timestamp.
    FieldInstant,
    /// `nvmlDeviceGetPowerUsage`: a trailing 1 s average on Ampere and newer.
    PowerUsageAverage,
    None,
}

impl PowerMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerMode::FieldInstant => "nvml_field_186_power_instant",
            PowerMode::PowerUsageAverage => "power_usage_trailing_1s_average",
            PowerMode::None => "none",
        }
    }
}

/// A board's facts that do not change during a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BoardFacts {
    pub name: Option<String>,
    pub memory_total_bytes: Option<u64>,
    /// The raw UUID; the meter keeps only its hash.
    pub uuid: Option<String>,
    pub power_limit_w: Option<f64>,
    pub persistence_mode: Option<bool>,
}

/// A power reading as NVML gives it: its own sample timestamp (µs) where it has one, and watts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawPower {
    pub nvml_timestamp_us: Option<i64>,
    pub power_w: f64,
}

/// Every NVML read the meter makes of one GPU. `NvmlGpu` asks the driver; a fake
/// (`measure::fake::FakeGpu`) answers from a script and fails when told to, which is how the
/// meter's handling of reads failing mid-window is tested without a GPU. Any read may fail at
/// any time; the meter counts the failures of a window and flags it.
pub trait GpuReader: Send + Sync {
    /// The total-energy counter, mJ since the driver loaded.
    fn total_energy_mj(&self) -> Result<u64, DeviceError>;
    /// One power reading in `mode` (`PowerMode::None` is always an error).
    fn power(&self, mode: PowerMode) -> Result<RawPower, DeviceError>;
    /// State at a window edge; a field is `None` where its read failed.
    fn edge_facts(&self) -> GpuEdgeFacts;
    /// Name, memory, UUID, power limit, persistence; `None` where a read failed.
    fn board_facts(&self) -> BoardFacts;
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
    fn total_energy_mj(&self) -> Result<u64, DeviceError> {
        self.handle()?
            .total_energy_consumption()
            .map_err(nvml_err("total energy"))
    }

    fn power(&self, mode: PowerMode) -> Result<RawPower, DeviceError> {
        let device = self.handle()?;
        match mode {
            PowerMode::FieldInstant => {
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
            PowerMode::PowerUsageAverage => Ok(RawPower {
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
