//! When to train: the emissions of a measured run for every start hour of an hourly grid
//! intensity series, and the best window.
//!
//! The series is a CSV `timestamp,g_co2e_per_kwh` (a header line first; `#` lines are comments),
//! one row per hour, strictly consecutive: a duplicate, an overlapping or out-of-order hour, a
//! gap, a non-numeric, negative or implausible intensity is an error naming the line.
//! Timestamps are ISO 8601 (`2020-03-02T00:00:00Z`, `2020-03-02 01:00+01:00`); without an offset
//! they are read as UTC.
//!
//! The run's energy is spread over its duration by its measured power timeline (cumulative energy
//! against time, interpolated linearly between samples) or, when no timeline is available, at its
//! average power; the profile says which.

use super::{CarbonError, Pue, J_PER_KWH, MAX_PLAUSIBLE_G_PER_KWH};
use crate::base::csvline;
use serde::Serialize;
use std::path::Path;

/// Seconds in the step every series must have.
pub const STEP_S: i64 = 3600;

/// An hourly grid-intensity series.
#[derive(Debug, Clone, PartialEq)]
pub struct HourlySeries {
    pub path: String,
    /// Start of each hour, Unix seconds (UTC), consecutive by `STEP_S`.
    pub start_unix_s: Vec<i64>,
    pub g_co2e_per_kwh: Vec<f64>,
}

impl HourlySeries {
    pub fn len(&self) -> usize {
        self.start_unix_s.len()
    }
    pub fn is_empty(&self) -> bool {
        self.start_unix_s.is_empty()
    }
    /// Seconds covered, from the first hour's start to the last hour's end.
    pub fn span_s(&self) -> i64 {
        self.len() as i64 * STEP_S
    }
}

/// Read and check an hourly series from a file.
pub fn load_hourly(path: &Path) -> Result<HourlySeries, CarbonError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| CarbonError::File {
        path: p.clone(),
        reason: format!("cannot read: {e}"),
    })?;
    parse_hourly(&text, &p)
}

/// Parse and check an hourly series; `path` names it in errors.
pub fn parse_hourly(text: &str, path: &str) -> Result<HourlySeries, CarbonError> {
    let err = |line: usize, reason: String| CarbonError::Csv {
        path: path.to_string(),
        line,
        reason,
    };
    let mut header = false;
    let mut starts: Vec<i64> = Vec::new();
    let mut lines_of: Vec<usize> = Vec::new();
    let mut values = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end_matches('\r').trim_start_matches('\u{feff}');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let f = csvline::split(line).map_err(|e| err(n, e.to_string()))?;
        if !header {
            if parse_timestamp(f[0].trim()).is_ok() {
                return Err(err(
                    n,
                    "no header line: the first line must name the two columns, e.g. timestamp,g_co2e_per_kwh".into(),
                ));
            }
            if f.len() != 2 {
                return Err(err(
                    n,
                    format!(
                        "header has {} columns; expected 2 (timestamp,g_co2e_per_kwh)",
                        f.len()
                    ),
                ));
            }
            header = true;
            continue;
        }
        if f.len() != 2 {
            return Err(err(
                n,
                format!(
                    "expected 2 fields (timestamp,g_co2e_per_kwh), found {}",
                    f.len()
                ),
            ));
        }
        // Fields are quoted in errors as excerpts: a garbage line of any length is one short line.
        let ts_text = f[0].trim();
        let ts = csvline::clip(ts_text);
        let t = parse_timestamp(ts_text)
            .map_err(|why| err(n, format!("timestamp {}: {why}", csvline::excerpt(ts_text))))?;
        let v_text = f[1].trim();
        let v_shown = csvline::excerpt(v_text);
        let v: f64 = v_text
            .parse()
            .map_err(|_| err(n, format!("intensity {v_shown} is not a number")))?;
        if !v.is_finite() {
            return Err(err(
                n,
                format!("intensity {v_shown} is not a finite number"),
            ));
        }
        if v < 0.0 {
            return Err(err(
                n,
                format!("intensity {} is negative", csvline::clip(v_text)),
            ));
        }
        if v > MAX_PLAUSIBLE_G_PER_KWH {
            return Err(err(
                n,
                format!(
                    "intensity {} is above 2000 g CO2e/kWh; the unit is g/kWh",
                    csvline::clip(v_text)
                ),
            ));
        }
        if let (Some(&prev), Some(&prev_line)) = (starts.last(), lines_of.last()) {
            if t == prev {
                return Err(err(
                    n,
                    format!("duplicate hour {ts} (already on line {prev_line})"),
                ));
            }
            if t < prev {
                return Err(err(
                    n,
                    format!("hour {ts} is before the row on line {prev_line}: rows must be in time order"),
                ));
            }
            if t < prev + STEP_S {
                return Err(err(
                    n,
                    format!(
                        "hour {ts} overlaps the hour starting on line {prev_line} ({} min apart; rows must be 60 min apart)",
                        (t - prev) / 60
                    ),
                ));
            }
            if t > prev + STEP_S {
                return Err(err(
                    n,
                    format!(
                        "gap: {} h missing between line {prev_line} and {ts}; rows must be consecutive hours",
                        (t - prev) / STEP_S - 1
                    ),
                ));
            }
        }
        starts.push(t);
        lines_of.push(n);
        values.push(v);
    }
    if !header || starts.is_empty() {
        return Err(CarbonError::File {
            path: path.to_string(),
            reason: "no data rows (expected a header line, then one timestamp,g_co2e_per_kwh row per hour)".into(),
        });
    }
    Ok(HourlySeries {
        path: path.to_string(),
        start_unix_s: starts,
        g_co2e_per_kwh: values,
    })
}

/// A timestamp that is not `YYYY-MM-DD[T ]HH:MM[:SS[.fff]][Z|±HH:MM|±HHMM]`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimestampError {
    #[error("expected YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM]")]
    Shape,
    /// The offset as written (an excerpt).
    #[error("bad UTC offset {0}")]
    BadOffset(String),
    #[error("unexpected {0} after the time")]
    Trailing(String),
    /// jiff's reason (a 30 February, an hour 25, ...).
    #[error("not a valid date and time: {0}")]
    Invalid(String),
}

/// Unix seconds from ISO 8601 `YYYY-MM-DD[T ]HH:MM[:SS[.fff]][Z|±HH:MM|±HHMM]` (jiff's
/// RFC 3339 / ISO 8601 parser); no offset = UTC; a fraction of a second is dropped.
pub fn parse_timestamp(s: &str) -> Result<i64, TimestampError> {
    let b = s.as_bytes();
    // The shape first: jiff also reads forms this file format does not promise (a date alone,
    // an hour without minutes, a bracketed time zone).
    if b.len() < 16
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b' ')
        || b[13] != b':'
        || s.contains('[')
    {
        return Err(TimestampError::Shape);
    }
    let Some(rest) = s.get(16..) else {
        return Err(TimestampError::Shape);
    };
    let time_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '.'))
        .unwrap_or(rest.len());
    let offset = &rest[time_end..];
    // The fraction of a second is dropped before jiff reads it (jiff takes at most 9 digits;
    // an export may write more).
    let cut = rest[..time_end].find('.').unwrap_or(time_end);
    let s = format!("{}{offset}", &s[..16 + cut]);
    // jiff's message quotes the input: cut like every quoted input.
    let invalid = |e: jiff::Error| TimestampError::Invalid(csvline::clip(&e.to_string()));
    let at = if offset.is_empty() {
        let civil: jiff::civil::DateTime = s.parse().map_err(invalid)?;
        civil
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map_err(invalid)?
            .timestamp()
    } else {
        if !matches!(offset, "Z" | "z") {
            if !offset.starts_with(['+', '-']) {
                return Err(TimestampError::Trailing(csvline::excerpt(offset)));
            }
            let digits: String = offset[1..].chars().filter(|c| *c != ':').collect();
            if digits.len() != 4 || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return Err(TimestampError::BadOffset(csvline::excerpt(offset)));
            }
        }
        s.parse::<jiff::Timestamp>().map_err(invalid)?
    };
    Ok(at.as_second())
}

/// `YYYY-MM-DDTHH:MM:SSZ` from Unix seconds.
pub fn format_utc(unix_s: i64) -> String {
    let full = crate::measure::system::utc_from_unix_ms(unix_s * 1000);
    format!("{}Z", &full[..19])
}

/// How a run's energy is spread over its duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileSource {
    /// The run's measured power timeline (`power/<run-id>.csv`).
    MeasuredTimeline,
    /// No timeline: constant average power over the window (stated as such).
    AveragePower,
}

impl ProfileSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileSource::MeasuredTimeline => "measured power timeline",
            ProfileSource::AveragePower => "average power (no timeline)",
        }
    }
}

/// Cumulative energy against time since the run started: non-decreasing, from (0, 0) to
/// (duration_s, total_j).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnergyProfile {
    pub points: Vec<(f64, f64)>,
    pub source: ProfileSource,
}

impl EnergyProfile {
    pub fn average(duration_s: f64, total_j: f64) -> Self {
        Self {
            points: vec![(0.0, 0.0), (duration_s.max(0.0), total_j.max(0.0))],
            source: ProfileSource::AveragePower,
        }
    }

    /// From cumulative samples `(t_s, energy_j)` (any order); the end point is pinned to
    /// `(duration_s, total_j)` so the profile adds up to the run's measured energy. Falls back to
    /// average power when fewer than two usable samples exist.
    pub fn from_cumulative(samples: &[(f64, f64)], duration_s: f64, total_j: f64) -> Self {
        let mut pts: Vec<(f64, f64)> = samples
            .iter()
            .copied()
            .filter(|(t, e)| t.is_finite() && e.is_finite() && *t > 0.0 && *t < duration_s)
            .collect();
        if pts.len() < 2 || duration_s <= 0.0 {
            return Self::average(duration_s, total_j);
        }
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut out = vec![(0.0, 0.0)];
        let mut hi = 0.0f64;
        for (t, e) in pts {
            hi = hi.max(e.min(total_j));
            out.push((t, hi));
        }
        out.push((duration_s, total_j.max(hi)));
        Self {
            points: out,
            source: ProfileSource::MeasuredTimeline,
        }
    }

    pub fn duration_s(&self) -> f64 {
        self.points.last().map_or(0.0, |p| p.0)
    }
    pub fn total_j(&self) -> f64 {
        self.points.last().map_or(0.0, |p| p.1)
    }

    /// Cumulative energy at `t` (clamped to the run), linear between points.
    pub fn at(&self, t: f64) -> f64 {
        let p = &self.points;
        if t <= 0.0 || p.len() < 2 {
            return 0.0;
        }
        if t >= self.duration_s() {
            return self.total_j();
        }
        let i = p.partition_point(|q| q.0 <= t);
        let (t0, e0) = p[i - 1];
        let (t1, e1) = p[i];
        if t1 <= t0 {
            e1
        } else {
            e0 + (e1 - e0) * (t - t0) / (t1 - t0)
        }
    }

    /// Energy between `a` and `b` seconds after the start.
    pub fn between(&self, a: f64, b: f64) -> f64 {
        (self.at(b) - self.at(a)).max(0.0)
    }
}

/// The emissions of the run if started at one hour.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StartOption {
    pub start_utc: String,
    pub kg_co2e: f64,
    /// Energy-weighted mean intensity over the run, g CO2e/kWh.
    pub mean_g_co2e_per_kwh: f64,
}

/// Every start hour that fits the run inside the series, and the best and worst.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    pub series: String,
    pub profile: ProfileSource,
    pub duration_s: f64,
    pub energy_j: f64,
    pub pue: f64,
    pub options: Vec<StartOption>,
    pub best: usize,
    pub worst: usize,
}

impl Schedule {
    pub fn best(&self) -> &StartOption {
        &self.options[self.best]
    }
    pub fn worst(&self) -> &StartOption {
        &self.options[self.worst]
    }
    /// The saving of the best start against the worst, as a fraction of the worst.
    pub fn saving_vs_worst(&self) -> f64 {
        let w = self.worst().kg_co2e;
        if w > 0.0 {
            1.0 - self.best().kg_co2e / w
        } else {
            0.0
        }
    }
    /// The mean over every start, kg CO2e (what a start at a random hour would emit on average).
    pub fn mean_kg(&self) -> f64 {
        self.options.iter().map(|o| o.kg_co2e).sum::<f64>() / self.options.len().max(1) as f64
    }
}

/// kg CO2e of `profile` started at the beginning of hour `first` of `series`.
fn emissions_from(
    profile: &EnergyProfile,
    series: &HourlySeries,
    first: usize,
    pue: Pue,
) -> (f64, f64) {
    let d = profile.duration_s();
    let mut g_j = 0.0; // sum of energy x intensity
    let mut k = first;
    while k < series.len() {
        let a = ((k - first) as i64 * STEP_S) as f64;
        if a >= d {
            break;
        }
        let e = profile.between(a, a + STEP_S as f64);
        g_j += e * series.g_co2e_per_kwh[k];
        k += 1;
    }
    let total = profile.total_j();
    let mean = if total > 0.0 { g_j / total } else { 0.0 };
    (g_j / J_PER_KWH * pue.value / 1000.0, mean)
}

/// Emissions for every start hour at which the whole run fits inside the series.
pub fn schedule(
    profile: &EnergyProfile,
    series: &HourlySeries,
    pue: Pue,
) -> Result<Schedule, CarbonError> {
    let d = profile.duration_s();
    let hours_needed = ((d / STEP_S as f64).ceil() as usize).max(1);
    if hours_needed > series.len() {
        return Err(CarbonError::File {
            path: series.path.clone(),
            reason: format!(
                "covers {} h but the run lasts {:.2} h: give a longer series",
                series.len(),
                d / 3600.0
            ),
        });
    }
    let mut options = Vec::new();
    for first in 0..=series.len() - hours_needed {
        let (kg, mean) = emissions_from(profile, series, first, pue);
        options.push(StartOption {
            start_utc: format_utc(series.start_unix_s[first]),
            kg_co2e: kg,
            mean_g_co2e_per_kwh: mean,
        });
    }
    let by = |cmp: fn(f64, f64) -> bool| {
        let mut k = 0;
        for (i, o) in options.iter().enumerate() {
            if cmp(o.kg_co2e, options[k].kg_co2e) {
                k = i;
            }
        }
        k
    };
    let best = by(|a, b| a < b);
    let worst = by(|a, b| a > b);
    Ok(Schedule {
        series: series.path.clone(),
        profile: profile.source,
        duration_s: d,
        energy_j: profile.total_j(),
        pue: pue.value,
        options,
        best,
        worst,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(vals: &[f64]) -> HourlySeries {
        let mut s = String::from("timestamp,g\n");
        for (i, v) in vals.iter().enumerate() {
            s.push_str(&format!("2024-01-01T{i:02}:00:00Z,{v}\n"));
        }
        parse_hourly(&s, "t.csv").unwrap()
    }

    #[test]
    fn timestamps_parse_to_unix_seconds() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Ok(0));
        // 2020-03-02T00:00:00Z = 18323 days x 86400.
        assert_eq!(parse_timestamp("2020-03-02T00:00:00Z"), Ok(1_583_107_200));
        assert_eq!(parse_timestamp("2020-03-02 01:00+01:00"), Ok(1_583_107_200));
        assert_eq!(
            parse_timestamp("2020-03-01T19:00:00-0500"),
            Ok(1_583_107_200)
        );
        assert_eq!(
            parse_timestamp("2024-02-29T12:00:00.500Z"),
            Ok(1_709_208_000)
        );
        for bad in [
            "2023-02-29T00:00Z",
            "2024-13-01T00:00Z",
            "yesterday",
            "2024-01-01T25:00Z",
            "2024-01-01T00:00Q",
            "2024-01-01T00:0é",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
        assert_eq!(format_utc(1_583_107_200), "2020-03-02T00:00:00Z");
        // Any number of fraction digits (jiff itself reads at most 9): dropped.
        assert_eq!(
            parse_timestamp(&format!("2024-02-29T12:00:00.{}+00:00", "9".repeat(40))),
            Ok(1_709_208_000)
        );
    }

    #[test]
    fn average_power_hand_computed() {
        // 7,200 J over 2 h at constant power: 3,600 J in each hour. Intensities 100, 300, 200.
        // Start 00:00: (3600 x 100 + 3600 x 300) J.g/kWh / 3.6e6 / 1000 = 4e-4 kg.
        // Start 01:00: (3600 x 300 + 3600 x 200) / 3.6e9 = 5e-4 kg.
        let s = series(&[100.0, 300.0, 200.0]);
        let p = EnergyProfile::average(7200.0, 7200.0);
        let sch = schedule(&p, &s, Pue::default()).unwrap();
        assert_eq!(sch.options.len(), 2);
        assert!((sch.options[0].kg_co2e - 4e-4).abs() < 1e-15);
        assert!((sch.options[1].kg_co2e - 5e-4).abs() < 1e-15);
        assert_eq!(sch.best().start_utc, "2024-01-01T00:00:00Z");
        assert_eq!(sch.worst().start_utc, "2024-01-01T01:00:00Z");
        assert!((sch.saving_vs_worst() - 0.2).abs() < 1e-12);
        assert!((sch.options[0].mean_g_co2e_per_kwh - 200.0).abs() < 1e-9);
        // PUE multiplies.
        let sch = schedule(&p, &s, Pue::new(1.5).unwrap()).unwrap();
        assert!((sch.options[0].kg_co2e - 6e-4).abs() < 1e-15);
    }

    #[test]
    fn measured_timeline_moves_energy_between_hours() {
        // 1.5 h run: 900 J in the first hour, 2,700 J in the last half hour (front-loaded idle,
        // then work). Intensities 100 then 500: 900 x 100 + 2700 x 500 = 1.44e6 -> 4e-4 kg.
        let s = series(&[100.0, 500.0]);
        let p = EnergyProfile::from_cumulative(&[(1800.0, 450.0), (3600.0, 900.0)], 5400.0, 3600.0);
        assert_eq!(p.source, ProfileSource::MeasuredTimeline);
        assert_eq!(p.between(0.0, 3600.0), 900.0);
        let sch = schedule(&p, &s, Pue::default()).unwrap();
        assert_eq!(sch.options.len(), 1);
        assert!(
            (sch.options[0].kg_co2e - 4e-4).abs() < 1e-15,
            "{}",
            sch.options[0].kg_co2e
        );
        // The same energy at average power: 2400 J per hour-equivalent -> (2400 x 100 + 1200 x 500)
        // = 8.4e5 -> 2.333e-4 kg: the timeline matters.
        let a = schedule(&EnergyProfile::average(5400.0, 3600.0), &s, Pue::default()).unwrap();
        assert!((a.options[0].kg_co2e - 8.4e5 / 3.6e9).abs() < 1e-15);
        // Too few samples: average power, said so.
        let q = EnergyProfile::from_cumulative(&[(1.0, 1.0)], 10.0, 5.0);
        assert_eq!(q.source, ProfileSource::AveragePower);
    }

    #[test]
    fn a_run_longer_than_the_series_is_refused() {
        let s = series(&[100.0]);
        let e = schedule(&EnergyProfile::average(3601.0, 1.0), &s, Pue::default()).unwrap_err();
        assert!(e.to_string().contains("covers 1 h"), "{e}");
        // Exactly one hour fits.
        assert_eq!(
            schedule(&EnergyProfile::average(3600.0, 1.0), &s, Pue::default())
                .unwrap()
                .options
                .len(),
            1
        );
    }

    #[test]
    fn malformed_series_name_the_line() {
        let h = "# comment\ntimestamp,g\n";
        for (body, needle) in [
            (
                "2024-01-01T00:00Z,abc\n",
                "line 3: intensity \"abc\" is not a number",
            ),
            ("2024-01-01T00:00Z,-5\n", "line 3: intensity -5 is negative"),
            ("2024-01-01T00:00Z,NaN\n", "not a finite number"),
            ("2024-01-01T00:00Z,1e9\n", "above 2000"),
            (
                "2024-01-01T00:00Z,1\n2024-01-01T00:00Z,2\n",
                "line 4: duplicate hour",
            ),
            (
                "2024-01-01T00:00Z,1\n2024-01-01T00:30Z,2\n",
                "line 4: hour 2024-01-01T00:30Z overlaps",
            ),
            (
                "2024-01-01T01:00Z,1\n2024-01-01T00:00Z,2\n",
                "before the row on line 3",
            ),
            (
                "2024-01-01T00:00Z,1\n2024-01-01T03:00Z,2\n",
                "gap: 2 h missing",
            ),
            ("2024-01-01T00:00Z,1,7\n", "expected 2 fields"),
            ("01/01/2024 00:00,1\n", "timestamp \"01/01/2024 00:00\""),
            ("\"2024-01-01T00:00Z,1\n", "unterminated quote"),
        ] {
            let e = parse_hourly(&format!("{h}{body}"), "x.csv")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(needle) && e.starts_with("x.csv"),
                "{needle}: {e}"
            );
        }
        let e = parse_hourly("", "x.csv").unwrap_err().to_string();
        assert!(e.contains("no data rows"), "{e}");
        let e = parse_hourly("timestamp,g\n", "x.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no data rows"), "{e}");
        let e = parse_hourly("2024-01-01T00:00Z,1\n", "x.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1: no header"), "{e}");
    }

    #[test]
    fn the_shipped_example_parses() {
        let s = load_hourly(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/data/carbon/de-2020-03-02-week-hourly.csv"
        )))
        .unwrap();
        assert_eq!(s.len(), 168);
        assert_eq!(format_utc(s.start_unix_s[0]), "2020-03-02T00:00:00Z");
    }
}
