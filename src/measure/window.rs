//! The measured window: the only code that touches a meter while training runs.
//!
//! Every edge (open, mark, close) first synchronises the device, because GPU work is
//! asynchronous: reading a counter before queued kernels finish charges their energy to the
//! wrong side of the boundary (Zeus does the same in `begin_window`/`end_window`).

use super::{Meter, MeterError, MeterReport};
use std::time::Instant;

/// Waits until all queued work on a device has finished.
pub trait DeviceSync {
    fn synchronize(&self) -> Result<(), MeterError>;
}

impl DeviceSync for candle_core::Device {
    fn synchronize(&self) -> Result<(), MeterError> {
        candle_core::Device::synchronize(self).map_err(|e| MeterError::Device {
            meter: "window",
            message: format!("device synchronize failed: {e}"),
        })
    }
}

/// Windows shorter than this are flagged `short_window` (NVML's counter and the 1 s power
/// average make sub-5 s windows unreliable; Yang et al., SC24).
pub const SHORT_WINDOW_S: f64 = 5.0;

/// A cumulative reading inside an open window.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub t_s: f64,
    pub energy_j: f64,
    pub per_component_j: Vec<f64>,
}

/// What a closed window measured.
#[derive(Debug, Clone)]
pub struct WindowReport {
    pub duration_s: f64,
    pub report: MeterReport,
}

impl WindowReport {
    pub fn total_j(&self) -> f64 {
        self.report.total_j()
    }
}

pub struct MeasuredWindow<'a> {
    meter: &'a mut dyn Meter,
    sync: &'a dyn DeviceSync,
    opened: Instant,
}

impl<'a> MeasuredWindow<'a> {
    /// Synchronise, then start the meter.
    pub fn open(meter: &'a mut dyn Meter, sync: &'a dyn DeviceSync) -> Result<Self, MeterError> {
        sync.synchronize()?;
        meter.start()?;
        Ok(Self {
            meter,
            sync,
            opened: Instant::now(),
        })
    }

    /// Synchronise, then read cumulative energy since `open` (the window stays open).
    pub fn mark(&mut self) -> Result<Mark, MeterError> {
        self.sync.synchronize()?;
        let per_component_j = self.meter.read()?;
        Ok(Mark {
            t_s: self.opened.elapsed().as_secs_f64(),
            energy_j: per_component_j.iter().sum(),
            per_component_j,
        })
    }

    /// Seconds since the window opened (no synchronisation, no meter access).
    pub fn elapsed_s(&self) -> f64 {
        self.opened.elapsed().as_secs_f64()
    }

    /// Synchronise, then stop the meter and return what it measured.
    pub fn close(self) -> Result<WindowReport, MeterError> {
        self.sync.synchronize()?;
        let mut report = self.meter.stop()?;
        let duration_s = self.opened.elapsed().as_secs_f64();
        if duration_s < SHORT_WINDOW_S && !report.flags.iter().any(|f| f == "short_window") {
            report.flags.push("short_window".to_string());
        }
        Ok(WindowReport { duration_s, report })
    }
}
