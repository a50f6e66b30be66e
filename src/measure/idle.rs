//! The idle baseline: mean and spread of power with nothing running, per device, before a
//! series (docs/design/measurement.md section 3), so `net = gross - P_idle * t` can be reported.
//!
//! Owns: timing the idle window and the statistics over its slices. Must not: run while
//! training runs, or subtract anything from gross energy itself (ranking uses gross).

use super::{Meter, MeterError};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Idle power of a meter's components.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleBaseline {
    /// Mean power per component over the whole window.
    pub per_component_w: Vec<(String, f64)>,
    /// Mean total power over the whole window.
    pub mean_w: f64,
    /// Sample standard deviation of the total power of the slices.
    pub sd_w: f64,
    pub duration_s: f64,
    /// Length and number of the slices `sd_w` is computed from.
    pub slice_s: f64,
    pub slices: usize,
    /// Flags the meter raised over the idle window (e.g. `contaminated`, `cpu_contended`).
    pub flags: Vec<String>,
}

impl IdleBaseline {
    /// `gross - P_idle * t`, the net energy of a window of `duration_s`.
    pub fn net_j(&self, gross_j: f64, duration_s: f64) -> f64 {
        gross_j - self.mean_w * duration_s
    }
}

/// Measure idle power over `duration` with 1 s slices (shorter windows use tenths).
pub fn measure_idle(meter: &mut dyn Meter, duration: Duration) -> Result<IdleBaseline, MeterError> {
    let slice = Duration::from_secs(1).min(duration / 10);
    measure_idle_sliced(meter, duration, slice)
}

/// Measure idle power, reading the cumulative energy at every `slice` boundary (scheduled
/// from the start so slices do not drift). The spread comes from the slice powers.
pub fn measure_idle_sliced(
    meter: &mut dyn Meter,
    duration: Duration,
    slice: Duration,
) -> Result<IdleBaseline, MeterError> {
    if duration.is_zero() || slice.is_zero() {
        return Err(MeterError::Protocol(
            "idle",
            "idle duration and slice must be positive",
        ));
    }
    let names: Vec<String> = meter
        .components()
        .into_iter()
        .map(|c| c.component)
        .collect();
    meter.start()?;
    let origin = Instant::now();
    let mut slice_w = Vec::new();
    let mut prev_t_s = 0.0;
    let mut prev_j = 0.0;
    let mut last = vec![0.0; names.len()];
    let mut k: u32 = 1;
    loop {
        let target = (slice * k).min(duration);
        std::thread::sleep(target.saturating_sub(origin.elapsed()));
        let now = match meter.read() {
            Ok(v) => v,
            Err(e) => {
                let _ = meter.stop();
                return Err(e);
            }
        };
        let t_s = origin.elapsed().as_secs_f64();
        let total_j: f64 = now.iter().sum();
        if t_s > prev_t_s {
            slice_w.push((total_j - prev_j) / (t_s - prev_t_s));
        }
        prev_t_s = t_s;
        prev_j = total_j;
        last = now;
        if target >= duration {
            break;
        }
        k += 1;
    }
    let report = meter.stop()?;
    let duration_s = prev_t_s;
    let n = slice_w.len();
    let mean_w = if duration_s > 0.0 {
        prev_j / duration_s
    } else {
        0.0
    };
    let slice_mean = slice_w.iter().sum::<f64>() / n.max(1) as f64;
    let sd_w = if n > 1 {
        (slice_w
            .iter()
            .map(|w| (w - slice_mean).powi(2))
            .sum::<f64>()
            / (n - 1) as f64)
            .sqrt()
    } else {
        0.0
    };
    Ok(IdleBaseline {
        per_component_w: names
            .into_iter()
            .zip(last)
            .map(|(c, j)| {
                (
                    c,
                    if duration_s > 0.0 {
                        j / duration_s
                    } else {
                        0.0
                    },
                )
            })
            .collect(),
        mean_w,
        sd_w,
        duration_s,
        slice_s: slice.as_secs_f64(),
        slices: n,
        flags: report.flags,
    })
}
