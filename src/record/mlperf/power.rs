//! A run's MLPerf Power node log (`power_measurement_start`, `power_reading`,
//! `power_measurement_stop`), made from its power timeline (`power/<run>.csv`).
//!
//! Owns: the span of the window that MLPerf scores (from `run_start` to `run_stop`), the node's
//! cumulative energy at any time of the window (every metered component summed, linearly
//! interpolated between samples), and the readings: one at each timeline sample inside the
//! span and one at its end, each the average power of the interval it closes
//! (`ΔE / Δt`). MLPerf's `result_summarizer` integrates a node log as
//! `Σ value × (t_i − t_{i−1}) × TTT / (stop − start)`; with the log's start and stop at the
//! result file's `run_start` and `run_stop` the last factor is 1 and the sum is the energy of
//! the span, to rounding.
//! Must not: invent readings. No `conversion_eff` is logged: a software meter reads component
//! (DC-side) power, and the power supply's efficiency is not known here; the start line says
//! so, and which meter and sources the readings come from (MLPerf's power rules call software
//! meter readings informative).

use crate::measure::PowerSample;
use crate::record::curve::Event;
use crate::record::{EnergySummary, RunRecord};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// MLPerf Power's minimum number of readings in a node log.
pub const MIN_READINGS: usize = 60;

/// Least time between two readings: a timeline sampled faster (marks at each eval) is thinned
/// so that rounding the readings' times to milliseconds moves no reading's power by more
/// than about 1 %. MLPerf asks for 1 Hz or faster.
pub const MIN_READING_GAP_MS: u128 = 100;

/// The part of the measured window that MLPerf scores, in window seconds and in the result
/// file's milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    pub start_s: f64,
    pub stop_s: f64,
    pub start_ms: u128,
    pub stop_ms: u128,
}

/// Window seconds of `run_start` and `run_stop`: the end of `exec`'s `setup` phase (else the
/// window's start) and the start of its `teardown` phase (else the window's end).
pub fn scored_seconds(record: &RunRecord) -> (f64, f64) {
    let phase = |name: &str| record.phases.iter().find(|p| p.name == name);
    let start = phase("setup").map_or(0.0, |p| p.end_s);
    let stop = phase("teardown").map_or(record.energy.window_s, |p| p.start_s);
    (start, stop)
}

/// The times of `run_start` and `run_stop` in a (compliant) event log.
pub fn run_start_stop_ms(events: &[Event]) -> Option<(u128, u128)> {
    let at = |key: &str| events.iter().find(|e| e.key == key).map(|e| e.time_ms);
    Some((at("run_start")?, at("run_stop")?))
}

/// A node log and what it adds up to.
#[derive(Debug, Clone)]
pub struct NodeLog {
    pub events: Vec<Event>,
    pub readings: usize,
    /// Energy of the span, joules: what the readings integrate to.
    pub energy_j: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NodeLogError {
    #[error("the power timeline is empty")]
    NoTimeline,
    #[error("the scored span {start_s:.3}-{stop_s:.3} s is empty")]
    EmptySpan { start_s: f64, stop_s: f64 },
    #[error("run_start and run_stop are less than a millisecond apart")]
    SubMillisecond,
}

/// Cumulative energy of each component, by time.
struct Cumulative(BTreeMap<String, Vec<(f64, f64)>>);

impl Cumulative {
    fn of(timeline: &[PowerSample]) -> Self {
        let mut by: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in timeline {
            by.entry(s.component.clone())
                .or_default()
                .push((s.t_s, s.energy_j));
        }
        for v in by.values_mut() {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        Cumulative(by)
    }

    /// Every component's energy since the window opened, at `t` (linear between samples and
    /// from zero at the window's start to the first sample; the last sample's value after it).
    fn at(&self, t: f64) -> f64 {
        self.0.values().map(|v| interpolate(v, t)).sum()
    }

    /// Every component's energy at its last sample: the window's close.
    fn at_close(&self) -> f64 {
        self.0.values().filter_map(|v| v.last()).map(|p| p.1).sum()
    }
}

fn interpolate(v: &[(f64, f64)], t: f64) -> f64 {
    let i = v.partition_point(|p| p.0 < t);
    if i == 0 {
        // Before the first sample: from nothing at the window's start (t = 0).
        return match v.first() {
            None => 0.0,
            Some(&(t0, e0)) if t0 > 0.0 && t < t0 => e0 * t.max(0.0) / t0,
            Some(_) if t <= 0.0 => 0.0,
            Some(&(_, e0)) => e0,
        };
    }
    if i == v.len() {
        return v[i - 1].1;
    }
    let (t0, e0) = v[i - 1];
    let (t1, e1) = v[i];
    if t1 <= t0 {
        return e1;
    }
    e0 + (e1 - e0) * (t - t0) / (t1 - t0)
}

/// The node log over `span` of run `run_id` with `energy_summary`, from its timeline, as host
/// `node_0`.
pub fn node_log(
    run_id: &str,
    energy_summary: &EnergySummary,
    timeline: &[PowerSample],
    span: Span,
) -> Result<NodeLog, NodeLogError> {
    if timeline.is_empty() {
        return Err(NodeLogError::NoTimeline);
    }
    if span.stop_s <= span.start_s || !span.start_s.is_finite() || !span.stop_s.is_finite() {
        return Err(NodeLogError::EmptySpan {
            start_s: span.start_s,
            stop_s: span.stop_s,
        });
    }
    if span.stop_ms <= span.start_ms {
        return Err(NodeLogError::SubMillisecond);
    }
    let energy = Cumulative::of(timeline);
    let width_s = span.stop_s - span.start_s;
    let width_ms = (span.stop_ms - span.start_ms) as f64;
    let ms_of = |t: f64| span.start_ms + ((t - span.start_s) / width_s * width_ms).round() as u128;
    // Reading times: the samples inside the span, at least MIN_READING_GAP_MS apart, then
    // the span's end.
    let mut times: Vec<(f64, u128)> = Vec::new();
    let mut last_ms = span.start_ms;
    let mut samples: Vec<f64> = timeline.iter().map(|s| s.t_s).collect();
    samples.sort_by(f64::total_cmp);
    for t in samples {
        if t <= span.start_s || t >= span.stop_s {
            continue;
        }
        let ms = ms_of(t);
        if ms >= last_ms + MIN_READING_GAP_MS && ms + MIN_READING_GAP_MS <= span.stop_ms {
            times.push((t, ms));
            last_ms = ms;
        }
    }
    times.push((span.stop_s, span.stop_ms));

    let host = json!({"host": "node_0"});
    let sources: Vec<Value> = energy_summary
        .components
        .iter()
        .map(|c| json!({"component": c.component, "source": c.source}))
        .collect();
    let event = |t: u128, kind: &'static str, key: &str, value: Value, md: Value| Event {
        time_ms: t,
        event_type: kind,
        key: key.to_string(),
        value,
        metadata: md,
    };
    let mut events = vec![event(
        span.start_ms,
        "INTERVAL_START",
        "power_measurement_start",
        Value::Null,
        json!({
            "host": "node_0",
            "joulebench_run_id": run_id,
            "meter": energy_summary.meter,
            "components": sources,
            "all_measured": energy_summary.all_measured,
            "measurement": "software meter readings (informative under MLPerf's power rules); each reading is the node's average power since the previous one, from joulebench's power timeline",
            "conversion_eff": "not logged: the readings are component (DC-side) power and the power supply's efficiency is not known",
        }),
    )];
    let mut prev_ms = span.start_ms;
    let mut prev_e = energy.at(span.start_s);
    let first_e = prev_e;
    // A span to the window's close ends at the timeline's last samples (whose times are
    // rounded to the millisecond, which matters for a window of a few milliseconds).
    let to_close = span.stop_s >= energy_summary.window_s;
    for &(t, ms) in &times {
        let e = if to_close && t == span.stop_s {
            energy.at_close()
        } else {
            energy.at(t)
        };
        let watts = (e - prev_e) * 1000.0 / (ms - prev_ms) as f64;
        events.push(event(
            ms,
            "POINT_IN_TIME",
            "power_reading",
            json!(watts),
            host.clone(),
        ));
        (prev_ms, prev_e) = (ms, e);
    }
    let readings = times.len();
    let energy_j = prev_e - first_e;
    let mut stop_md = json!({"host": "node_0", "energy_j": energy_j, "readings": readings});
    if readings < MIN_READINGS {
        stop_md["note"] = json!(format!(
            "{readings} readings, fewer than MLPerf Power's {MIN_READINGS}: the scored span is {width_s:.1} s"
        ));
    }
    events.push(event(
        span.stop_ms,
        "INTERVAL_END",
        "power_measurement_stop",
        Value::Null,
        stop_md,
    ));
    Ok(NodeLog {
        events,
        readings,
        energy_j,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn energy(window_s: f64) -> EnergySummary {
        serde_json::from_value(json!({
            "total_j": 1.0, "net_j": null, "boundary": "H", "idle_w": null, "idle_sd_w": null,
            "flags": [], "meter": "estimate", "all_measured": false, "average_power_w": 1.0,
            "window_s": window_s,
            "components": [{"component": "cpu", "source": "estimated_tdp_load", "energy_j": 1.0,
                            "sample_interval_ms": 1000.0, "coverage": 1.0,
                            "counter_to_integral_ratio": null, "note": null}]
        }))
        .unwrap()
    }

    fn sample(t_s: f64, component: &str, energy_j: f64) -> PowerSample {
        PowerSample {
            t_s,
            component: component.into(),
            energy_j,
            power_w: None,
        }
    }

    #[test]
    fn interpolates_between_samples_and_holds_outside() {
        let v = [(0.0, 0.0), (1.0, 10.0), (3.0, 30.0)];
        assert_eq!(interpolate(&v, -1.0), 0.0);
        // A first sample at the window's start (energy of its first, rounded, millisecond)
        // counts from zero; one after it is reached linearly from zero.
        assert_eq!(interpolate(&[(0.0, 0.5), (1.0, 10.0)], 0.0), 0.0);
        assert_eq!(interpolate(&[(2.0, 4.0)], 1.0), 2.0);
        assert_eq!(interpolate(&v, 0.5), 5.0);
        assert_eq!(interpolate(&v, 2.0), 20.0);
        assert_eq!(interpolate(&v, 9.0), 30.0);
    }

    /// MLPerf's `_compute_power_node`, transcribed: Σ value × Δt_ms × TTT / (stop − start) / 1000.
    fn summarizer_energy(events: &[Event], ttt_ms: f64) -> f64 {
        let (mut start, mut stop, mut prev, mut agg) = (0.0, 0.0, 0.0, 0.0);
        for e in events {
            let t = e.time_ms as f64;
            match e.key.as_str() {
                "power_measurement_start" => (start, prev) = (t, t),
                "power_reading" => {
                    agg += e.value.as_f64().unwrap() * (t - prev);
                    prev = t;
                }
                "power_measurement_stop" => stop = t,
                _ => {}
            }
        }
        agg * ttt_ms / (stop - start) / 1000.0
    }

    #[test]
    fn readings_integrate_to_the_energy_of_the_span() {
        let record = energy(71.0);
        // Two components sampled at 1 Hz, one of them on a different grid.
        let mut timeline = Vec::new();
        for i in 0..=70 {
            let t = i as f64 * 1.003;
            timeline.push(sample(t, "cpu", 7.0 * t + (t * 0.7).sin()));
            timeline.push(sample(t + 0.4, "dram", 15.0 * (t + 0.4)));
        }
        let span = Span {
            start_s: 2.25,
            stop_s: 68.5,
            start_ms: 1_700_000_000_000,
            stop_ms: 1_700_000_066_251,
        };
        let log = node_log("r", &record, &timeline, span).unwrap();
        let c = Cumulative::of(&timeline);
        let want = c.at(68.5) - c.at(2.25);
        assert!((log.energy_j - want).abs() < 1e-9);
        let got = summarizer_energy(&log.events, (span.stop_ms - span.start_ms) as f64);
        assert!((got - want).abs() / want < 1e-9, "{got} vs {want}");
        assert!(log.readings >= MIN_READINGS, "{}", log.readings);
        // Strictly increasing reading times, each 1 s or less apart.
        let times: Vec<u128> = log.events.iter().map(|e| e.time_ms).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        let readings: Vec<u128> = log
            .events
            .iter()
            .filter(|e| e.key == "power_reading")
            .map(|e| e.time_ms)
            .collect();
        assert!(readings
            .windows(2)
            .all(|w| w[1] > w[0] && w[1] - w[0] <= 1000));
        assert_eq!(log.events.first().unwrap().key, "power_measurement_start");
        assert_eq!(log.events.last().unwrap().key, "power_measurement_stop");
        assert!(log.events.last().unwrap().metadata.get("note").is_none());
    }

    #[test]
    fn a_short_span_is_one_reading_with_a_note_and_bad_spans_are_errors() {
        let record = energy(1.0);
        let timeline = [sample(0.0, "cpu", 0.0), sample(1.0, "cpu", 8.0)];
        let span = |a: f64, b: f64, ms: u128| Span {
            start_s: a,
            stop_s: b,
            start_ms: 1000,
            stop_ms: 1000 + ms,
        };
        let log = node_log("r", &record, &timeline, span(0.1, 0.6, 500)).unwrap();
        assert_eq!(log.readings, 1);
        assert!((log.energy_j - 4.0).abs() < 1e-12);
        let stop = log.events.last().unwrap();
        assert!(stop.metadata["note"]
            .as_str()
            .unwrap()
            .contains("fewer than"));
        // To the window's close: the last samples, whatever their rounded time.
        let rounded = [sample(0.0, "cpu", 0.0), sample(0.003, "cpu", 6.0)];
        let log = node_log("r", &energy(0.0024), &rounded, span(0.0, 0.0024, 2)).unwrap();
        assert_eq!(log.energy_j, 6.0);
        assert_eq!(
            node_log("r", &record, &timeline, span(0.6, 0.6, 5)).unwrap_err(),
            NodeLogError::EmptySpan {
                start_s: 0.6,
                stop_s: 0.6
            }
        );
        assert_eq!(
            node_log("r", &record, &timeline, span(0.1, 0.6, 0)).unwrap_err(),
            NodeLogError::SubMillisecond
        );
        assert_eq!(
            node_log("r", &record, &[], span(0.1, 0.6, 5)).unwrap_err(),
            NodeLogError::NoTimeline
        );
    }
}
