//! Energy measurement: meters, the idle baseline and the one measured window.
//!
//! Owns: the `Meter` trait and its implementations (NVML, RAPL, the labelled estimate, a
//! composite, fakes for tests), background pollers, and `MeasuredWindow`, the only code that
//! touches a meter while training runs. Follows docs/design/measurement.md section 2.
//! Must not: know about files, run files or tasks (`results` writes what this module returns).

pub mod amdgpu;
pub mod composite;
pub mod cputime;
pub mod detect;
pub mod devices;
pub mod estimate;
pub mod fake;
pub mod gpu;
pub mod idle;
pub mod nvml_gpu;
pub mod poller;
pub mod provenance;
pub mod rapl;
pub mod system;
pub mod tenancy;
pub mod window;

pub use detect::{detect_meter, probe_all, DetectOptions, MeterChoice, MeterProbe};
pub use idle::{measure_idle, IdleBaseline};
pub use provenance::Provenance;
pub use window::{DeviceSync, MeasuredWindow, WindowReport};

use serde::{Deserialize, Serialize};

/// What an energy figure covers (docs/design/measurement.md section 2). Rows of different boundaries are
/// never ranked together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Boundary {
    /// GPU board.
    #[serde(rename = "G")]
    Gpu,
    /// Host CPU package(s) + DRAM.
    #[serde(rename = "H")]
    Host,
    /// GPU board(s) plus host.
    #[serde(rename = "G+H")]
    GpuHost,
    /// Whole node, external meter.
    #[serde(rename = "N")]
    Node,
}

impl Boundary {
    pub fn as_str(self) -> &'static str {
        match self {
            Boundary::Gpu => "G",
            Boundary::Host => "H",
            Boundary::GpuHost => "G+H",
            Boundary::Node => "N",
        }
    }
    /// The boundary covered by the union of two boundaries.
    pub fn union(self, other: Boundary) -> Boundary {
        use Boundary::*;
        match (self, other) {
            (a, b) if a == b => a,
            (Node, _) | (_, Node) => Node,
            _ => GpuHost,
        }
    }
}

/// Where an energy figure came from (docs/design/measurement.md section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    MeasuredCounter,
    MeasuredPowerIntegrated,
    EstimatedTdpLoad,
    EstimatedConstant,
    Unavailable,
}

impl Source {
    pub fn is_measured(self) -> bool {
        matches!(
            self,
            Source::MeasuredCounter | Source::MeasuredPowerIntegrated
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Source::MeasuredCounter => "measured_counter",
            Source::MeasuredPowerIntegrated => "measured_power_integrated",
            Source::EstimatedTdpLoad => "estimated_tdp_load",
            Source::EstimatedConstant => "estimated_constant",
            Source::Unavailable => "unavailable",
        }
    }
}

/// One metered component, e.g. `gpu:0`, `cpu:package-0`, `dram`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentInfo {
    /// Stable name, used as a column in the power timeline.
    pub component: String,
    /// G for GPU components, H for CPU/DRAM, N for node meters.
    pub boundary: Boundary,
    pub source: Source,
    /// How often the background poller samples it.
    pub sample_interval_ms: f64,
    /// Free text: where a TDP came from, why a counter is not used, ...
    pub note: Option<String>,
}

/// Energy of one component over a finished window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentEnergy {
    pub component: String,
    pub source: Source,
    pub energy_j: f64,
    pub sample_interval_ms: f64,
    /// Fraction of the window covered by samples, in [0, 1].
    pub coverage: f64,
    /// Counter energy / integrated power energy, where both exist (NVML).
    pub counter_to_integral_ratio: Option<f64>,
    pub note: Option<String>,
}

/// One row of the power timeline: time since the window opened, and per component the
/// cumulative energy and the instantaneous (or interval-average) power.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerSample {
    pub t_s: f64,
    pub component: String,
    pub energy_j: f64,
    pub power_w: Option<f64>,
}

/// A quality flag on a measurement, e.g. `short_window`, `counter_power_mismatch`,
/// `counter_reset`, `cpu_contended`, `contaminated`. Stored as kebab/snake strings.
pub type Flag = String;

/// Everything a meter reports when a window closes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MeterReport {
    pub components: Vec<ComponentEnergy>,
    pub flags: Vec<Flag>,
    pub timeline: Vec<PowerSample>,
    /// Where the figures came from (TDP origin, RAPL zones, each GPU's identity and state...).
    pub provenance: Provenance,
}

impl MeterReport {
    pub fn total_j(&self) -> f64 {
        self.components.iter().map(|c| c.energy_j).sum()
    }
}

/// Errors raised by meters. Missing hardware is only an error when the user asked for that
/// meter by name; `detect_meter` turns it into a labelled fallback otherwise.
#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    #[error("meter {meter} unavailable: {reason}")]
    Unavailable { meter: &'static str, reason: String },
    #[error("permission denied reading {path}: {fix}")]
    PermissionDenied { path: String, fix: String },
    #[error("{meter}: {what}: {source}")]
    Io {
        meter: &'static str,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{meter}: {message}")]
    Device {
        meter: &'static str,
        message: String,
    },
    #[error("meter {0} used out of order: {1}")]
    Protocol(&'static str, &'static str),
}

/// An energy meter. Protocol (criterion's `Measurement` shape): `start` opens a window and
/// starts any background poller; `read` returns cumulative energy per component since
/// `start` without stopping; `stop` closes the window and returns the report. The device is
/// synchronised by `MeasuredWindow` before each of these calls, never by the meter.
pub trait Meter: Send {
    /// `nvml`, `rapl`, `estimate`, `composite`, `fake`, ...
    fn name(&self) -> &'static str;
    /// The boundary covered by all components together.
    fn boundary(&self) -> Boundary;
    fn components(&self) -> Vec<ComponentInfo>;
    fn start(&mut self) -> Result<(), MeterError>;
    /// Cumulative joules per component (same order as `components()`) since `start`.
    fn read(&mut self) -> Result<Vec<f64>, MeterError>;
    fn stop(&mut self) -> Result<MeterReport, MeterError>;
}

/// A boxed meter is a meter (so wrappers like `RecordingMeter` take `Box<dyn Meter>`).
impl<M: Meter + ?Sized> Meter for Box<M> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn boundary(&self) -> Boundary {
        (**self).boundary()
    }
    fn components(&self) -> Vec<ComponentInfo> {
        (**self).components()
    }
    fn start(&mut self) -> Result<(), MeterError> {
        (**self).start()
    }
    fn read(&mut self) -> Result<Vec<f64>, MeterError> {
        (**self).read()
    }
    fn stop(&mut self) -> Result<MeterReport, MeterError> {
        (**self).stop()
    }
}
