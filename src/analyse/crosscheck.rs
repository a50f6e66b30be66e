//! The independent cross-check of joulebench's GPU energy (issue 6, docs/design/measurement.md section 2):
//! a trace written by a separate process (`scripts/nvml-reader.py`, nvidia-ml-py) is
//! integrated over each run's measured window and compared with the run file's GPU energy.
//!
//! Owns: the trace format (v1: `# joulebench-nvml-trace v1 {meta}`, then
//! `t_unix_s,energy_mj,power_w,power_timestamp_us` rows), locating a run's window in Unix time
//! (its MLLOG `run_start` event and `energy.window_s`), the ratios, the verdict and the
//! `crosscheck` subcommand. The arithmetic over samples is `energy::nvml`'s, the same code the
//! meter uses, so the two sides differ only in who read NVML and when.
//! Must not: measure anything, or change run files (its report is a file of its own).

use crate::base::csvline::excerpt;
use crate::measure::gpu::{self, CounterSample, PowerReading};
use crate::record::{read, write_atomic};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

pub const TRACE_MAGIC: &str = "# joulebench-nvml-trace v1";
pub const TRACE_HEADER: &str = "t_unix_s,energy_mj,power_w,power_timestamp_us";
/// The issue's agreement band: |joulebench / reader - 1| <= 2 %.
pub const DEFAULT_TOLERANCE: f64 = 0.02;

#[derive(Debug, thiserror::Error)]
pub enum CrosscheckError {
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("trace {path}, line {line}: {message}")]
    Trace {
        path: String,
        line: usize,
        message: String,
    },
    #[error("results folder {path}: {reason}")]
    Results { path: String, reason: String },
    #[error("--tolerance must be a fraction in (0, 1), got {0}")]
    Tolerance(f64),
    #[error("writing the cross-check report")]
    Write(#[from] crate::record::ResultsError),
}

/// One row of the independent trace. Empty fields (failed reads) are `None`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceSample {
    pub t_unix_s: f64,
    pub energy_mj: Option<u64>,
    pub power_w: Option<f64>,
    pub power_timestamp_us: Option<i64>,
}

/// A parsed trace: the reader's metadata, its rows in time order, and its end line if it
/// stopped cleanly.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub meta: Value,
    pub samples: Vec<TraceSample>,
    pub end: Option<Value>,
}

impl Trace {
    pub fn read(path: &Path) -> Result<Self, CrosscheckError> {
        let text = std::fs::read_to_string(path).map_err(|source| CrosscheckError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parse trace text; `path` only names the file in errors. A truncated last row (the
    /// reader killed mid-write) is dropped; any other malformed row is an error.
    pub fn parse(path: &str, text: &str) -> Result<Self, CrosscheckError> {
        let err = |line: usize, message: String| CrosscheckError::Trace {
            path: path.to_string(),
            line,
            message,
        };
        let mut lines = text.lines().enumerate().peekable();
        let first = lines.next().map(|(_, l)| l).unwrap_or("");
        let meta_text = first.strip_prefix(TRACE_MAGIC).ok_or_else(|| {
            err(
                1,
                format!("not a joulebench NVML trace (expected it to start with {TRACE_MAGIC:?})"),
            )
        })?;
        let meta: Value = serde_json::from_str(meta_text.trim())
            .map_err(|e| err(1, format!("metadata is not JSON: {e}")))?;
        match lines.next() {
            Some((_, h)) if h.trim() == TRACE_HEADER => {}
            Some((i, h)) => {
                return Err(err(
                    i + 1,
                    format!("expected the header {TRACE_HEADER:?}, found {}", excerpt(h)),
                ))
            }
            None => return Err(err(2, format!("missing the header {TRACE_HEADER:?}"))),
        }
        let mut samples = Vec::new();
        let mut end = None;
        while let Some((i, line)) = lines.next() {
            let is_last = lines.peek().is_none();
            if let Some(rest) = line.strip_prefix("# end ") {
                end = serde_json::from_str(rest).ok();
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            match parse_row(line) {
                Ok(s) => samples.push(s),
                // A reader killed mid-line leaves a partial last row: not an error.
                Err(_) if is_last && !text.ends_with('\n') => {}
                Err(m) => return Err(err(i + 1, m.to_string())),
            }
        }
        samples.sort_by(|a, b| a.t_unix_s.total_cmp(&b.t_unix_s));
        Ok(Self { meta, samples, end })
    }

    pub fn span(&self) -> Option<(f64, f64)> {
        Some((
            self.samples.first()?.t_unix_s,
            self.samples.last()?.t_unix_s,
        ))
    }
}

/// A trace row that cannot be read (texts are excerpts of the input).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum RowError {
    #[error("{0}")]
    Csv(#[from] crate::base::csvline::CsvLineError),
    #[error("expected 4 fields, found {found}: {line}")]
    Fields { found: usize, line: String },
    #[error("{column} {text} is not a number")]
    NotNumber { column: &'static str, text: String },
    #[error("non-finite value in {0}")]
    NonFinite(String),
}

fn parse_row(line: &str) -> Result<TraceSample, RowError> {
    let fields = crate::base::csvline::split(line)?;
    let f: Vec<&str> = fields.iter().map(|s| s.trim()).collect();
    if f.len() != 4 {
        return Err(RowError::Fields {
            found: f.len(),
            line: excerpt(line),
        });
    }
    fn opt<T: std::str::FromStr>(s: &str, column: &'static str) -> Result<Option<T>, RowError> {
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse().map(Some).map_err(|_| RowError::NotNumber {
                column,
                text: excerpt(s),
            })
        }
    }
    let t_unix_s: f64 = f[0].parse().map_err(|_| RowError::NotNumber {
        column: "t_unix_s",
        text: excerpt(f[0]),
    })?;
    let power_w: Option<f64> = opt(f[2], "power_w")?;
    if !t_unix_s.is_finite() || power_w.is_some_and(|p| !p.is_finite()) {
        return Err(RowError::NonFinite(excerpt(line)));
    }
    Ok(TraceSample {
        t_unix_s,
        energy_mj: opt(f[1], "energy_mj")?,
        power_w,
        power_timestamp_us: opt(f[3], "power_timestamp_us")?,
    })
}

/// What the independent reader measured over one window `[t0, t1]` (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReaderEnergy {
    /// Counter energy, edges interpolated between the bracketing samples; None when the trace
    /// has no counter readings on both sides of the window.
    pub counter_j: Option<f64>,
    /// Trapezoid integral of the power samples (de-duplicated on NVML's timestamp).
    pub integral_j: Option<f64>,
    /// Fraction of the window between the first and last power sample.
    pub power_coverage: f64,
    pub counter_resets: usize,
    /// Samples inside the window.
    pub samples: usize,
}

/// Counter value at `t`, linearly interpolated between the samples either side; None unless
/// samples exist on both sides (never extrapolated) or the counter went backwards between them.
fn counter_at(c: &[(f64, u64)], t: f64) -> Option<f64> {
    let i = c.partition_point(|s| s.0 <= t);
    if i == 0 {
        return None;
    }
    let a = c[i - 1];
    if a.0 == t {
        return Some(a.1 as f64);
    }
    let b = *c.get(i)?;
    if b.1 < a.1 || b.0 <= a.0 {
        return None;
    }
    Some(a.1 as f64 + (b.1 - a.1) as f64 * (t - a.0) / (b.0 - a.0))
}

/// Integrate the trace over `[t0_unix_s, t1_unix_s]` with `energy::nvml`'s arithmetic.
pub fn reader_energy(trace: &Trace, t0_unix_s: f64, t1_unix_s: f64) -> ReaderEnergy {
    let span = t1_unix_s - t0_unix_s;
    let power: Vec<PowerReading> = trace
        .samples
        .iter()
        .filter_map(|s| {
            s.power_w.map(|w| PowerReading {
                t_s: s.t_unix_s - t0_unix_s,
                nvml_timestamp_us: s.power_timestamp_us,
                power_w: w,
            })
        })
        .collect();
    let integral =
        (!power.is_empty() && span > 0.0).then(|| gpu::integrate_power(&power, 0.0, span));
    let counter: Vec<(f64, u64)> = trace
        .samples
        .iter()
        .filter_map(|s| s.energy_mj.map(|e| (s.t_unix_s, e)))
        .collect();
    let inside: Vec<CounterSample> = counter
        .iter()
        .filter(|(t, _)| *t > t0_unix_s && *t < t1_unix_s)
        .map(|&(t, e)| CounterSample {
            t_s: t - t0_unix_s,
            energy_mj: e,
        })
        .collect();
    let counter_j = match (
        counter_at(&counter, t0_unix_s),
        counter_at(&counter, t1_unix_s),
    ) {
        (Some(e0), Some(e1)) if span > 0.0 => {
            // Whole-mJ samples at the edges: the inner deltas stay exact, the interpolated
            // edges carry their fractions separately.
            let mut c = Vec::with_capacity(inside.len() + 2);
            c.push(CounterSample {
                t_s: 0.0,
                energy_mj: e0.floor() as u64,
            });
            c.extend(inside.iter().copied());
            c.push(CounterSample {
                t_s: span,
                energy_mj: e1.floor() as u64,
            });
            let ce = gpu::counter_energy(&c, &power);
            let frac_j = ((e1 - e1.floor()) - (e0 - e0.floor())) * 1e-3;
            Some((ce.energy_j + frac_j, ce.resets))
        }
        _ => None,
    };
    ReaderEnergy {
        counter_j: counter_j.map(|c| c.0),
        integral_j: integral.map(|i| i.energy_j),
        power_coverage: integral.map_or(0.0, |i| i.coverage),
        counter_resets: counter_j.map_or(0, |c| c.1),
        samples: trace
            .samples
            .iter()
            .filter(|s| s.t_unix_s >= t0_unix_s && s.t_unix_s <= t1_unix_s)
            .count(),
    }
}

/// The verdict for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// |ratio - 1| within the tolerance.
    Agree,
    /// Compared, and outside the tolerance.
    Disagree,
    /// The trace does not cover the run's window (the reader started late or stopped early).
    NotCovered,
    /// The trace was taken on another GPU (UUID hashes differ).
    OtherGpu,
    /// The run has no GPU energy (CPU run, or NVML unavailable), or no window to compare.
    NoGpuEnergy,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Agree => "agree",
            Verdict::Disagree => "DISAGREE",
            Verdict::NotCovered => "not_covered",
            Verdict::OtherGpu => "other_gpu",
            Verdict::NoGpuEnergy => "no_gpu_energy",
        }
    }
}

/// One run compared with the independent trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunCheck {
    pub run_id: String,
    pub status: String,
    pub component: Option<String>,
    pub window_start_unix_s: Option<f64>,
    pub window_s: Option<f64>,
    /// joulebench's energy for the GPU component, and its source.
    pub joulebench_j: Option<f64>,
    pub joulebench_source: Option<String>,
    /// joulebench's own counter / power-integral ratio (the meter's internal check).
    pub joulebench_counter_to_integral: Option<f64>,
    pub reader: Option<ReaderEnergy>,
    /// joulebench_j / the reader's counter energy (the figure the 2 % band applies to), or /
    /// its power integral where the reader has no counter.
    pub ratio: Option<f64>,
    /// What `ratio` divides by: `reader_counter` or `reader_power_integral`.
    pub ratio_basis: Option<String>,
    /// joulebench_j / the reader's power integral, always shown beside it.
    pub ratio_to_reader_integral: Option<f64>,
    pub verdict: Verdict,
    pub note: Option<String>,
}

/// The whole report: what was compared, how, and the verdicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrosscheckReport {
    pub trace: String,
    pub trace_meta: Value,
    pub trace_samples: usize,
    pub results: String,
    pub tolerance: f64,
    pub runs: Vec<RunCheck>,
    pub compared: usize,
    pub agree: usize,
    /// Largest |ratio - 1| over compared runs.
    pub max_abs_deviation: Option<f64>,
}

impl CrosscheckReport {
    /// True when at least one run was compared and every compared run agrees.
    pub fn all_agree(&self) -> bool {
        self.compared > 0 && self.agree == self.compared
    }
}

/// The Unix time of a run's `run_start` event (the window opens just before it is logged).
fn run_start_unix_s(mllog: &str) -> Option<f64> {
    mllog
        .lines()
        .find_map(|l| {
            let v: Value = serde_json::from_str(l.strip_prefix(":::MLLOG ")?).ok()?;
            (v["key"] == "run_start").then(|| v["time_ms"].as_f64())?
        })
        .map(|ms| ms / 1e3)
}

/// Compare one run (its run-file JSON and its MLLOG text) with the trace.
pub fn check_run(run: &Value, mllog: Option<&str>, trace: &Trace, tolerance: f64) -> RunCheck {
    let mut out = RunCheck {
        run_id: run["run_id"].as_str().unwrap_or("?").to_string(),
        status: run["status"].as_str().unwrap_or("?").to_string(),
        component: None,
        window_start_unix_s: None,
        window_s: run["energy"]["window_s"].as_f64(),
        joulebench_j: None,
        joulebench_source: None,
        joulebench_counter_to_integral: None,
        reader: None,
        ratio: None,
        ratio_basis: None,
        ratio_to_reader_integral: None,
        verdict: Verdict::NoGpuEnergy,
        note: None,
    };
    let gpu = run["energy"]["components"].as_array().and_then(|cs| {
        cs.iter().find(|c| {
            c["component"]
                .as_str()
                .is_some_and(|n| n.starts_with("gpu:"))
        })
    });
    let Some(gpu) = gpu else {
        out.note = Some(format!(
            "no GPU component in the run's energy (device {})",
            run["device"].as_str().unwrap_or("?")
        ));
        return out;
    };
    let component = gpu["component"].as_str().unwrap_or("gpu").to_string();
    out.joulebench_j = gpu["energy_j"].as_f64();
    out.joulebench_source = gpu["source"].as_str().map(str::to_string);
    out.joulebench_counter_to_integral = gpu["counter_to_integral_ratio"].as_f64();
    let run_uuid = run["provenance"][&component]["uuid_sha256_16"].as_str();
    out.component = Some(component);
    if out.joulebench_source.as_deref() == Some("unavailable") {
        out.note = Some("joulebench's GPU energy is unavailable for this run".into());
        return out;
    }
    if let (Some(a), Some(b)) = (run_uuid, trace.meta["uuid_sha256_16"].as_str()) {
        if a != b {
            out.verdict = Verdict::OtherGpu;
            out.note = Some(format!("run GPU {a}, trace GPU {b}"));
            return out;
        }
    }
    let (Some(start), Some(window_s), Some(jb)) = (
        mllog.and_then(run_start_unix_s),
        out.window_s.filter(|w| *w > 0.0),
        out.joulebench_j,
    ) else {
        out.note = Some("no run_start event or no measured window".into());
        return out;
    };
    out.window_start_unix_s = Some(start);
    let end = start + window_s;
    let r = reader_energy(trace, start, end);
    out.reader = Some(r);
    let covered = trace.span().is_some_and(|(a, b)| a <= start && b >= end);
    let basis = match (r.counter_j, r.integral_j) {
        (Some(c), _) if covered && c > 0.0 => Some((c, "reader_counter")),
        (None, Some(i)) if covered && i > 0.0 && r.power_coverage > 0.99 => {
            Some((i, "reader_power_integral"))
        }
        _ => None,
    };
    // Only over a covered window: a partial integral would read as a large disagreement.
    out.ratio_to_reader_integral = r
        .integral_j
        .filter(|i| covered && *i > 0.0 && r.power_coverage > 0.99)
        .map(|i| jb / i);
    match basis {
        Some((reader_j, name)) => {
            let ratio = jb / reader_j;
            out.ratio = Some(ratio);
            out.ratio_basis = Some(name.to_string());
            out.verdict = if (ratio - 1.0).abs() <= tolerance {
                Verdict::Agree
            } else {
                Verdict::Disagree
            };
            if window_s < crate::measure::window::SHORT_WINDOW_S {
                out.note = Some(format!(
                    "window {window_s:.2} s is under {} s: edge timing dominates",
                    crate::measure::window::SHORT_WINDOW_S
                ));
            }
        }
        None => {
            out.verdict = Verdict::NotCovered;
            out.note = Some(match trace.span() {
                Some((a, b)) => {
                    format!("trace spans {a:.3}..{b:.3}, window {start:.3}..{end:.3} (Unix s)")
                }
                None => "the trace has no samples".into(),
            });
        }
    }
    out
}

/// Compare every run file in `results` with the trace.
pub fn crosscheck(
    trace_path: &Path,
    results: &Path,
    tolerance: f64,
) -> Result<CrosscheckReport, CrosscheckError> {
    if !(tolerance > 0.0 && tolerance < 1.0) {
        return Err(CrosscheckError::Tolerance(tolerance));
    }
    let trace = Trace::read(trace_path)?;
    let rerr = |reason: String| CrosscheckError::Results {
        path: results.display().to_string(),
        reason,
    };
    let files =
        read::run_files(results).map_err(|e| rerr(format!("{e}: is this a results folder?")))?;
    if files.is_empty() {
        return Err(rerr("no run files in runs/".into()));
    }
    let mut runs = Vec::with_capacity(files.len());
    for f in &files {
        let record = read::read_run(f).map_err(|e| rerr(e.to_string()))?;
        // The comparison reads the run as JSON (what a run file says, field by field).
        let run = serde_json::to_value(&record).map_err(|e| rerr(e.to_string()))?;
        let mllog = std::fs::read_to_string(read::events_path(results, &record.run_id)).ok();
        runs.push(check_run(&run, mllog.as_deref(), &trace, tolerance));
    }
    let compared: Vec<&RunCheck> = runs.iter().filter(|r| r.ratio.is_some()).collect();
    Ok(CrosscheckReport {
        trace: trace_path.display().to_string(),
        trace_meta: trace.meta.clone(),
        trace_samples: trace.samples.len(),
        results: results.display().to_string(),
        tolerance,
        compared: compared.len(),
        agree: runs.iter().filter(|r| r.verdict == Verdict::Agree).count(),
        max_abs_deviation: compared
            .iter()
            .filter_map(|r| r.ratio)
            .map(|r| (r - 1.0).abs())
            .reduce(f64::max),
        runs,
    })
}

/// The human table: one line per run.
pub fn render(report: &CrosscheckReport) -> String {
    let f = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |x| format!("{x:.d$}"));
    let mut s = format!(
        "cross-check of joulebench's GPU energy against {} ({} samples, {}), tolerance {:.1} %\n",
        report.trace,
        report.trace_samples,
        report.trace_meta["name"].as_str().unwrap_or("unknown GPU"),
        100.0 * report.tolerance
    );
    s.push_str(&format!(
        "{:<56} {:>9} {:>12} {:>12} {:>12} {:>8} {:>8} {:>8}  verdict\n",
        "run",
        "window_s",
        "joulebench_j",
        "reader_ctr_j",
        "reader_int_j",
        "ratio",
        "r_int",
        "jb_c/i"
    ));
    for r in &report.runs {
        s.push_str(&format!(
            "{:<56} {:>9} {:>12} {:>12} {:>12} {:>8} {:>8} {:>8}  {}{}\n",
            r.run_id,
            f(r.window_s, 2),
            f(r.joulebench_j, 1),
            f(r.reader.and_then(|x| x.counter_j), 1),
            f(r.reader.and_then(|x| x.integral_j), 1),
            f(r.ratio, 4),
            f(r.ratio_to_reader_integral, 4),
            f(r.joulebench_counter_to_integral, 4),
            r.verdict.as_str(),
            r.note.as_ref().map_or(String::new(), |n| format!(" ({n})"))
        ));
    }
    s.push_str(&format!(
        "{} of {} compared run(s) within {:.1} %; largest deviation {}\n",
        report.agree,
        report.compared,
        100.0 * report.tolerance,
        report
            .max_abs_deviation
            .map_or("-".into(), |d| format!("{:.2} %", 100.0 * d))
    ));
    s
}

/// Write the report to `out` (JSON) and beside it `out` with extension `md` (the table), each
/// atomically; returns the JSON text and the table for the caller to show.
pub fn save(report: &CrosscheckReport, out: &Path) -> Result<(String, String), CrosscheckError> {
    let json = serde_json::to_string_pretty(report).map_err(|source| {
        crate::record::ResultsError::Encode {
            what: "crosscheck report".into(),
            source,
        }
    })?;
    write_atomic(out, json.as_bytes())?;
    let table = render(report);
    write_atomic(
        &out.with_extension("md"),
        format!("```\n{table}```\n").as_bytes(),
    )?;
    Ok((json, table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A synthetic reader trace: constant `w` watts from `t0` for `n` samples `dt` apart, the
    /// counter exact, the power field refreshed every sample.
    fn trace_text(t0: f64, dt: f64, n: usize, w: f64, base_mj: u64) -> String {
        let mut s = format!(
            "{TRACE_MAGIC} {}\n{TRACE_HEADER}\n",
            json!({"name": "Fake H100", "uuid_sha256_16": "abcd"})
        );
        for i in 0..n {
            let t = t0 + i as f64 * dt;
            let e = base_mj + (w * (t - t0) * 1e3).round() as u64;
            s.push_str(&format!("{t:.6},{e},{w:.3},{}\n", (t * 1e6) as i64));
        }
        s.push_str("# end {\"samples\": 1}\n");
        s
    }

    fn run_json(jb_j: f64, window_s: f64) -> Value {
        json!({
            "run_id": "mnist-mlp--f32--seed-1--x",
            "status": "ok",
            "device": "cuda:0",
            "energy": {"window_s": window_s, "components": [
                {"component": "gpu:0", "source": "measured_counter", "energy_j": jb_j,
                 "counter_to_integral_ratio": 1.001}
            ]},
            "provenance": {"gpu:0": {"uuid_sha256_16": "abcd"}}
        })
    }

    fn mllog_at(t_unix_s: f64) -> String {
        format!(
            ":::MLLOG {}\n",
            json!({"time_ms": (t_unix_s * 1e3) as u64, "event_type": "INTERVAL_START", "key": "run_start", "value": null, "metadata": {}})
        )
    }

    #[test]
    fn parses_and_integrates_a_constant_trace() {
        // 300 W for 20 s sampled every 50 ms; the window 1000.0125 .. 1010.0125 s lies between
        // samples at both edges, so both are interpolated: 10 s x 300 W = 3000 J.
        let t = Trace::parse("t", &trace_text(1000.0, 0.05, 401, 300.0, 5_000_000)).unwrap();
        assert_eq!(t.samples.len(), 401);
        assert_eq!(t.end, Some(json!({"samples": 1})));
        let r = reader_energy(&t, 1000.0125, 1010.0125);
        assert!((r.counter_j.unwrap() - 3000.0).abs() < 0.01, "{r:?}");
        assert!((r.integral_j.unwrap() - 3000.0).abs() < 1e-6, "{r:?}");
        assert!((r.power_coverage - 1.0).abs() < 1e-12);
        assert_eq!(r.counter_resets, 0);
    }

    #[test]
    fn agreement_inside_and_outside_the_band() {
        let t = Trace::parse("t", &trace_text(1000.0, 0.05, 401, 300.0, 0)).unwrap();
        let log = mllog_at(1002.0);
        // joulebench says 1.5 % more than the reader's 3000 J: agree at 2 %.
        let ok = check_run(&run_json(3045.0, 10.0), Some(&log), &t, 0.02);
        assert_eq!(ok.verdict, Verdict::Agree);
        assert!((ok.ratio.unwrap() - 1.015).abs() < 1e-6, "{ok:?}");
        assert_eq!(ok.ratio_basis.as_deref(), Some("reader_counter"));
        assert!((ok.ratio_to_reader_integral.unwrap() - 1.015).abs() < 1e-6);
        // 2.5 % more: disagree, and the report says so.
        let bad = check_run(&run_json(3075.0, 10.0), Some(&log), &t, 0.02);
        assert_eq!(bad.verdict, Verdict::Disagree);
    }

    #[test]
    fn uncovered_other_gpu_and_cpu_runs_are_not_compared() {
        let t = Trace::parse("t", &trace_text(1000.0, 0.05, 101, 300.0, 0)).unwrap();
        // The window runs past the trace's end (1005 s).
        let late = check_run(&run_json(3000.0, 10.0), Some(&mllog_at(1001.0)), &t, 0.02);
        assert_eq!(late.verdict, Verdict::NotCovered);
        assert_eq!(late.ratio, None);
        assert_eq!(late.ratio_to_reader_integral, None);
        let mut other = run_json(1200.0, 4.0);
        other["provenance"]["gpu:0"]["uuid_sha256_16"] = json!("ffff");
        let o = check_run(&other, Some(&mllog_at(1000.5)), &t, 0.02);
        assert_eq!(o.verdict, Verdict::OtherGpu);
        let cpu = json!({"run_id": "c", "status": "ok", "device": "cpu",
            "energy": {"window_s": 3.0, "components": [{"component": "cpu:package-0", "source": "estimated_tdp_load", "energy_j": 9.0}]}});
        assert_eq!(
            check_run(&cpu, None, &t, 0.02).verdict,
            Verdict::NoGpuEnergy
        );
        // No event log: nothing to align the window with.
        assert_eq!(
            check_run(&run_json(1.0, 1.0), None, &t, 0.02).verdict,
            Verdict::NoGpuEnergy
        );
    }

    #[test]
    fn counter_reset_inside_the_window_is_filled_from_power() {
        // 100 W; the counter drops to 0 at 1002.0 s and counts on from there.
        let mut s = format!("{TRACE_MAGIC} {{}}\n{TRACE_HEADER}\n");
        for i in 0..=80 {
            let t = 1000.0 + i as f64 * 0.05;
            let e = if t < 1002.0 - 1e-9 {
                9_000_000 + ((t - 1000.0) * 100.0 * 1e3).round() as u64
            } else {
                ((t - 1002.0) * 100.0 * 1e3).round() as u64
            };
            s.push_str(&format!("{t:.6},{e},100.000,\n"));
        }
        let t = Trace::parse("t", &s).unwrap();
        let r = reader_energy(&t, 1000.5, 1003.5);
        assert_eq!(r.counter_resets, 1);
        assert!((r.counter_j.unwrap() - 300.0).abs() < 0.01, "{r:?}");
    }

    #[test]
    fn malformed_traces_name_the_line() {
        let e = Trace::parse("x.csv", "hello\n").unwrap_err().to_string();
        assert!(e.contains("x.csv") && e.contains("line 1"), "{e}");
        let e = Trace::parse("x.csv", &format!("{TRACE_MAGIC} {{}}\nt,e\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("header"), "{e}");
        let bad = format!("{TRACE_MAGIC} {{}}\n{TRACE_HEADER}\n1.0,abc,1.0,\n2.0,5,1.0,\n");
        let e = Trace::parse("x.csv", &bad).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("energy_mj"), "{e}");
        // A truncated last row (killed mid-write) is dropped, not an error.
        let cut = format!("{TRACE_MAGIC} {{}}\n{TRACE_HEADER}\n1.0,5,1.0,\n2.0,6");
        assert_eq!(Trace::parse("x.csv", &cut).unwrap().samples.len(), 1);
        // Empty fields are failed reads.
        let gaps = format!("{TRACE_MAGIC} {{}}\n{TRACE_HEADER}\n1.0,,,\n");
        let t = Trace::parse("x.csv", &gaps).unwrap();
        assert_eq!(t.samples[0].energy_mj, None);
        assert_eq!(t.samples[0].power_w, None);
    }

    #[test]
    fn whole_folder_report_and_exit_code() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("res");
        std::fs::create_dir_all(dir.join("runs")).unwrap();
        std::fs::create_dir_all(dir.join("events")).unwrap();
        // A whole run file (the folder is read strictly), with run_json's GPU energy.
        let mut run: Value = serde_json::from_slice(
            &std::fs::read(
                "tests/fixtures/report/machines/xeon-rapl/runs/digits-mlp--f32--seed-1--a1b2c3d4.json",
            )
            .unwrap(),
        )
        .unwrap();
        let gpu = run_json(2010.0, 10.0);
        run["run_id"] = gpu["run_id"].clone();
        run["device"] = gpu["device"].clone();
        run["energy"]["window_s"] = gpu["energy"]["window_s"].clone();
        run["energy"]["components"] = json!([{"component": "gpu:0", "source": "measured_counter",
            "energy_j": 2010.0, "sample_interval_ms": 100.0, "coverage": 1.0,
            "counter_to_integral_ratio": 1.001, "note": null}]);
        run["provenance"] = gpu["provenance"].clone();
        std::fs::write(
            dir.join("runs/mnist-mlp--f32--seed-1--x.json"),
            serde_json::to_vec(&run).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.join("events/mnist-mlp--f32--seed-1--x.mllog"),
            mllog_at(1001.0),
        )
        .unwrap();
        let trace = tmp.path().join("trace.csv");
        std::fs::write(&trace, trace_text(1000.0, 0.05, 401, 200.0, 0)).unwrap();
        let rep = crosscheck(&trace, &dir, 0.02).unwrap();
        assert!(rep.all_agree());
        save(&rep, &dir.join("crosscheck.json")).unwrap();
        let rep: CrosscheckReport =
            serde_json::from_slice(&std::fs::read(dir.join("crosscheck.json")).unwrap()).unwrap();
        assert_eq!((rep.compared, rep.agree), (1, 1));
        assert!((rep.runs[0].ratio.unwrap() - 1.005).abs() < 1e-6);
        assert!(std::fs::read_to_string(dir.join("crosscheck.md"))
            .unwrap()
            .contains("agree"));
        // At 0.1 % the same run disagrees (exit 1 in the CLI).
        assert!(!crosscheck(&trace, &dir, 0.001).unwrap().all_agree());
        // Bad input is an error (exit 2 in the CLI), naming what is wrong.
        let e = crosscheck(&trace, tmp.path(), 0.02)
            .unwrap_err()
            .to_string();
        assert!(e.contains("runs/"), "{e}");
        assert!(matches!(
            crosscheck(&trace, &dir, 1.5),
            Err(CrosscheckError::Tolerance(_))
        ));
        let e = crosscheck(&tmp.path().join("missing.csv"), &dir, 0.02)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.csv"), "{e}");
    }
}
