//! The quality curve and the event log of a run, as the run file stores them: written by the
//! training loop (`engine::train`) and by `exec` from a foreign program's MLLOG lines.
//!
//! Owns: `CurvePoint`, `Status`, `Event`/`EventLog` and the error text a run file keeps.

use serde::{Deserialize, Serialize};

/// One evaluation of the held-out set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub step: usize,
    pub epoch: f64,
    /// Energy since `run_start`, evaluation included.
    pub energy_j: f64,
    pub time_s: f64,
    pub value: f64,
    /// Mean training loss over the steps since the previous eval (NaN, written as null, when
    /// the loss diverged or a foreign program did not report it).
    #[serde(deserialize_with = "nan_if_null")]
    pub train_loss: f64,
    /// The phase of the run this eval belongs to (`train`, `dense-train`, `recover`, ...).
    #[serde(default = "default_phase")]
    pub phase: String,
    /// Whether this eval scores the variant: false for the dense model of a pruning pipeline
    /// and during gradual pruning, whose quality is not the pruned model's. ETT, JPP, the
    /// ladder, final and best quality are computed from scored evals only.
    #[serde(default = "default_true")]
    pub scored: bool,
}

/// The error text a run file keeps: its first line. candle appends a backtrace to its errors'
/// text when RUST_BACKTRACE is set, which belongs on a terminal, not in a result.
pub fn error_text(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim_end().to_string()
}

/// serde_json writes a non-finite f64 as `null`; this reads it back as NaN, so every file
/// joulebench wrote reads back.
pub fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

pub fn default_phase() -> String {
    "train".into()
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Dnf,
    /// Stopped by the forecast (`run --forecast-stop`): the probability of reaching T within
    /// the budget fell below 1 %. A DNF everywhere: never ranked as reaching T.
    #[serde(rename = "stopped-forecast")]
    StoppedForecast,
    Diverged,
    Failed,
}

impl Status {
    /// A run that did not reach T without failing: out of budget, or stopped by the forecast.
    pub fn is_dnf(self) -> bool {
        matches!(self, Status::Dnf | Status::StoppedForecast)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Dnf => "dnf",
            Status::StoppedForecast => "stopped-forecast",
            Status::Diverged => "diverged",
            Status::Failed => "failed",
        }
    }
}

/// An MLPerf-style event (`:::MLLOG` line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub time_ms: u128,
    pub event_type: &'static str,
    pub key: String,
    pub value: serde_json::Value,
    pub metadata: serde_json::Value,
}

#[derive(Debug, Default)]
pub struct EventLog(pub Vec<Event>);

impl EventLog {
    pub fn point(&mut self, key: &str, value: serde_json::Value, metadata: serde_json::Value) {
        self.push("POINT_IN_TIME", key, value, metadata)
    }
    pub fn interval(&mut self, key: &str, start: bool, metadata: serde_json::Value) {
        let t = if start {
            "INTERVAL_START"
        } else {
            "INTERVAL_END"
        };
        self.push(t, key, serde_json::Value::Null, metadata)
    }
    fn push(
        &mut self,
        et: &'static str,
        key: &str,
        value: serde_json::Value,
        md: serde_json::Value,
    ) {
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        self.0.push(Event {
            time_ms,
            event_type: et,
            key: key.to_string(),
            value,
            metadata: md,
        });
    }
}
