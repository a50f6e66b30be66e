//! The energy part of a run file (`energy`), made from a closed measured window: boundary,
//! sources, flags and net energy against the idle baseline. One function for joulebench's own
//! runs and for programs run by `exec`.

use crate::measure::{self, tenancy, IdleBaseline, Meter, Source};
use crate::record::{AttributedEnergy, EnergySummary, RunRecord};
use std::collections::BTreeMap;

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
        idle_component_w: idle
            .map(|i| i.per_component_w.iter().cloned().collect())
            .unwrap_or_default(),
        attributed: attributed(window, idle),
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

/// The job's share of each GPU that others also used (Kepler's rule), where the window has the
/// board's idle power and the job's SM and time shares.
fn attributed(
    window: &measure::WindowReport,
    idle: Option<&IdleBaseline>,
) -> BTreeMap<String, AttributedEnergy> {
    let mut out = BTreeMap::new();
    let Some(idle) = idle else {
        return out;
    };
    for (component, facts) in &window.report.provenance.gpus {
        if facts.other_compute_pids.is_empty() {
            continue;
        }
        let (Some(sm_share), Some(time_share)) = (facts.job_sm_share, facts.job_time_share) else {
            continue;
        };
        let Some(idle_w) = idle
            .per_component_w
            .iter()
            .find(|(c, _)| c == component)
            .map(|(_, w)| *w)
        else {
            continue;
        };
        let Some(total_j) = window
            .report
            .components
            .iter()
            .find(|c| &c.component == component)
            .map(|c| c.energy_j)
        else {
            continue;
        };
        out.insert(
            component.clone(),
            AttributedEnergy {
                energy_j: tenancy::attributed_j(
                    total_j,
                    idle_w,
                    window.duration_s,
                    sm_share,
                    time_share,
                ),
                sm_share,
                time_share,
                idle_w,
                rule: "kepler: active energy by SM-utilisation share, idle energy by time share"
                    .to_string(),
            },
        );
    }
    out
}

/// True when an energy figure contains any estimated component.
pub fn is_estimated(rec: &RunRecord) -> bool {
    rec.energy
        .components
        .iter()
        .any(|c| !c.source.is_measured() && c.source != Source::Unavailable)
}
