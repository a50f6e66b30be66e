//! The energy part of a run file (`energy`), made from a closed measured window: boundary,
//! sources, flags and net energy against the idle baseline. One function for joulebench's own
//! runs and for programs run by `exec`.

use crate::measure::{self, IdleBaseline, Meter, Source};
use crate::record::{EnergySummary, RunRecord};

/// The energy part of a run file from a closed window: the boundary of the components that
/// reported, whether every one was measured, the flags (the meter's, `no_idle_baseline`,
/// `estimated`) and net energy against the idle baseline.
pub fn energy_summary(
    window: &measure::WindowReport,
    meter: &dyn Meter,
    idle: Option<&IdleBaseline>,
) -> EnergySummary {
    let total_j = window.total_j();
    let infos = meter.components();
    let boundary = window
        .report
        .components
        .iter()
        .filter_map(|c| infos.iter().find(|i| i.component == c.component))
        .map(|i| i.boundary)
        .reduce(|a, b| a.union(b))
        .unwrap_or(meter.boundary());
    let all_measured = !window.report.components.is_empty()
        && window
            .report
            .components
            .iter()
            .all(|c| c.source.is_measured());
    let mut flags = window.report.flags.clone();
    if idle.is_none() {
        flags.push("no_idle_baseline".into());
    }
    if !all_measured {
        flags.push("estimated".into());
    }
    flags.dedup();
    EnergySummary {
        total_j,
        net_j: idle.map(|i| total_j - i.mean_w * window.duration_s),
        boundary,
        components: window.report.components.clone(),
        idle_w: idle.map(|i| i.mean_w),
        idle_sd_w: idle.map(|i| i.sd_w),
        flags,
        meter: meter.name().to_string(),
        all_measured,
        average_power_w: if window.duration_s > 0.0 {
            total_j / window.duration_s
        } else {
            0.0
        },
        window_s: window.duration_s,
    }
}

/// True when an energy figure contains any estimated component.
pub fn is_estimated(rec: &RunRecord) -> bool {
    rec.energy
        .components
        .iter()
        .any(|c| !c.source.is_measured() && c.source != Source::Unavailable)
}
