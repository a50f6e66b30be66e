//! Quality reports from a foreign training program: MLPerf `:::MLLOG {json}` lines and the
//! JSON-lines events file (`--events PATH`).
//!
//! Owns: turning one line of the child's output into what it means for the run (an eval of the
//! tracked metric, `run_start`, `run_stop`, the framework it names, nothing, or a malformed
//! report with the reason). Pure: nothing here reads a clock, a meter or a file.

use crate::spec::task::Direction;

/// Longest line read whole; the rest of a longer line is skipped (and the line counted as
/// malformed when it was a report) so one runaway line cannot exhaust memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The MLLOG marker. MLPerf loggers may prefix it (`0: :::MLLOG ...`, a logging format's
/// header), so it is searched anywhere in the line.
pub const MLLOG_MARK: &str = ":::MLLOG";

/// MLPerf's keys for the lowest precision a program's linear layers and attention ran in.
pub const PRECISION_IN_LINEAR: &str = "lowest_numerical_precision_in_linear";
pub const PRECISION_IN_ATTN: &str = "lowest_numerical_precision_in_attn";

/// What the run tracks: the metric's key in the child's reports and its direction.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracked {
    /// MLLOG key (`eval_accuracy`, `eval_loss`, a named key) or the JSON-lines `metric`.
    pub key: String,
    pub direction: Direction,
}

/// One evaluation the child reported.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    pub value: f64,
    /// Optimizer steps so far (`metadata.step`, or the JSON-lines `step`), when given.
    pub step: Option<u64>,
    /// `metadata.epoch_num` (or the JSON-lines `epoch`), when given.
    pub epoch: Option<f64>,
    /// `metadata.train_loss`, when given.
    pub train_loss: Option<f64>,
}

/// What one line means for the run.
#[derive(Debug, Clone, PartialEq)]
pub enum LineEvent {
    /// Not a report (ordinary output), or a report of another key.
    Other,
    Eval(EvalReport),
    /// MLPerf `run_start`: the measured part begins (setup before it is logged apart).
    RunStart,
    /// MLPerf `run_stop`, with `metadata.status` (`success`, `aborted`) when given.
    RunStop {
        status: Option<String>,
    },
    /// The framework the child says it runs on (`framework` key, e.g. `torch 2.9.1`).
    Framework(String),
    /// The precision the child says an op class ran in: MLPerf's
    /// `lowest_numerical_precision_in_linear` / `lowest_numerical_precision_in_attn` keys.
    Precision {
        key: String,
        dtype: String,
    },
    /// A line that claims to be a report but cannot be read: the reason.
    Malformed(String),
}

fn finite_number(v: &serde_json::Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite())
}

/// A report's `step` or `epoch` that is present but not a count: the field, its value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} {value} is not a non-negative {want}")]
struct BadCount {
    field: &'static str,
    value: String,
    want: &'static str,
}

fn step_of(v: Option<&serde_json::Value>) -> Result<Option<u64>, BadCount> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(s) => s
            .as_u64()
            .or_else(|| {
                s.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f < 9.0e15)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| BadCount {
                field: "step",
                value: s.to_string(),
                want: "integer",
            }),
    }
}

fn epoch_of(v: Option<&serde_json::Value>) -> Result<Option<f64>, BadCount> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(e) => finite_number(e)
            .filter(|e| *e >= 0.0)
            .map(Some)
            .ok_or_else(|| BadCount {
                field: "epoch",
                value: e.to_string(),
                want: "number",
            }),
    }
}

fn eval_of(
    value: Option<&serde_json::Value>,
    step: Option<&serde_json::Value>,
    epoch: Option<&serde_json::Value>,
    train_loss: Option<&serde_json::Value>,
    key: &str,
) -> LineEvent {
    let Some(value) = value.and_then(finite_number) else {
        return LineEvent::Malformed(format!("{key}: value is not a finite number"));
    };
    let step = match step_of(step) {
        Ok(s) => s,
        Err(e) => return LineEvent::Malformed(format!("{key}: {e}")),
    };
    let epoch = match epoch_of(epoch) {
        Ok(e) => e,
        Err(e) => return LineEvent::Malformed(format!("{key}: {e}")),
    };
    LineEvent::Eval(EvalReport {
        value,
        step,
        epoch,
        train_loss: train_loss.and_then(finite_number),
    })
}

/// One line of the child's stdout or stderr (without its newline).
pub fn parse_mllog_line(line: &str, tracked: &Tracked) -> LineEvent {
    let Some(at) = line.find(MLLOG_MARK) else {
        return LineEvent::Other;
    };
    let body = line[at + MLLOG_MARK.len()..].trim();
    let v: serde_json::Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => return LineEvent::Malformed(format!("MLLOG line is not JSON: {e}")),
    };
    let Some(obj) = v.as_object() else {
        return LineEvent::Malformed("MLLOG line is not a JSON object".into());
    };
    let Some(key) = obj.get("key").and_then(|k| k.as_str()) else {
        return LineEvent::Malformed("MLLOG line has no string \"key\"".into());
    };
    let md = obj.get("metadata").and_then(|m| m.as_object());
    let md_get = |k: &str| md.and_then(|m| m.get(k));
    if key == tracked.key {
        return eval_of(
            obj.get("value"),
            md_get("step").or_else(|| md_get("step_num")),
            md_get("epoch_num"),
            md_get("train_loss"),
            key,
        );
    }
    match key {
        "run_start" => LineEvent::RunStart,
        "run_stop" => LineEvent::RunStop {
            status: md_get("status")
                .and_then(|s| s.as_str())
                .map(str::to_string),
        },
        PRECISION_IN_LINEAR | PRECISION_IN_ATTN => {
            match obj.get("value").and_then(|v| v.as_str()) {
                Some(d) => LineEvent::Precision {
                    key: key.to_string(),
                    dtype: d.chars().take(40).collect(),
                },
                None => LineEvent::Malformed(format!("{key}: value is not a string")),
            }
        }
        "framework" => match obj.get("value").and_then(|v| v.as_str()) {
            Some(f) => LineEvent::Framework(f.chars().take(200).collect()),
            None => LineEvent::Malformed("framework: value is not a string".into()),
        },
        _ => LineEvent::Other,
    }
}

/// One line of a JSON-lines events file: `{"step": 100, "metric": "eval_accuracy",
/// "value": 0.93}` (`epoch` optional). Blank lines are nothing; another metric is `Other`.
pub fn parse_jsonl_line(line: &str, tracked: &Tracked) -> LineEvent {
    let line = line.trim();
    if line.is_empty() {
        return LineEvent::Other;
    }
    let v: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return LineEvent::Malformed(format!("events line is not JSON: {e}")),
    };
    let Some(obj) = v.as_object() else {
        return LineEvent::Malformed("events line is not a JSON object".into());
    };
    let Some(metric) = obj.get("metric").and_then(|m| m.as_str()) else {
        return LineEvent::Malformed("events line has no string \"metric\"".into());
    };
    if metric != tracked.key {
        return LineEvent::Other;
    }
    if obj.get("step").is_none() {
        return LineEvent::Malformed(format!("{metric}: events line has no \"step\""));
    }
    eval_of(
        obj.get("value"),
        obj.get("step"),
        obj.get("epoch"),
        obj.get("train_loss"),
        metric,
    )
}

/// Splits a byte stream into lines of at most `MAX_LINE_BYTES`, remembering which were cut.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    overflow: bool,
}

/// A complete line: its text (lossy UTF-8, at most `MAX_LINE_BYTES`) and whether it was cut.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub text: String,
    pub truncated: bool,
}

impl LineSplitter {
    /// Feed bytes; returns the lines they complete.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<Line> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.take(&bytes[..i]);
                    out.push(self.finish());
                    bytes = &bytes[i + 1..];
                }
                None => {
                    self.take(bytes);
                    bytes = &[];
                }
            }
        }
        out
    }

    /// The last, unterminated line at end of stream, if any.
    pub fn flush(&mut self) -> Option<Line> {
        (!self.buf.is_empty() || self.overflow).then(|| self.finish())
    }

    fn take(&mut self, part: &[u8]) {
        let room = MAX_LINE_BYTES.saturating_sub(self.buf.len());
        if part.len() > room {
            self.overflow = true;
        }
        self.buf.extend_from_slice(&part[..part.len().min(room)]);
    }

    fn finish(&mut self) -> Line {
        let mut text = String::from_utf8_lossy(&self.buf).into_owned();
        if text.ends_with('\r') {
            text.pop();
        }
        self.buf.clear();
        let truncated = std::mem::take(&mut self.overflow);
        Line { text, truncated }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc() -> Tracked {
        Tracked {
            key: "eval_accuracy".into(),
            direction: Direction::Higher,
        }
    }

    #[test]
    fn mllog_eval_lines_with_metadata() {
        let t = acc();
        let p = r#":::MLLOG {"namespace": "", "time_ms": 1, "event_type": "POINT_IN_TIME", "key": "lowest_numerical_precision_in_linear", "value": "bfloat16", "metadata": {}}"#;
        assert_eq!(
            parse_mllog_line(p, &t),
            LineEvent::Precision {
                key: PRECISION_IN_LINEAR.into(),
                dtype: "bfloat16".into()
            }
        );
        let bad = r#":::MLLOG {"key": "lowest_numerical_precision_in_attn", "value": 16}"#;
        assert!(matches!(parse_mllog_line(bad, &t), LineEvent::Malformed(_)));
        let l = r#":::MLLOG {"namespace": "", "time_ms": 1, "event_type": "POINT_IN_TIME", "key": "eval_accuracy", "value": 0.913, "metadata": {"epoch_num": 1.5, "step": 700, "train_loss": 0.25}}"#;
        assert_eq!(
            parse_mllog_line(l, &acc()),
            LineEvent::Eval(EvalReport {
                value: 0.913,
                step: Some(700),
                epoch: Some(1.5),
                train_loss: Some(0.25)
            })
        );
        // A logger's prefix before the marker, and no metadata.
        let l = r#"0: INFO :::MLLOG {"key": "eval_accuracy", "value": 0.5}"#;
        assert!(matches!(parse_mllog_line(l, &acc()), LineEvent::Eval(e) if e.step.is_none()));
    }

    #[test]
    fn mllog_markers_and_other_keys() {
        let t = acc();
        assert_eq!(
            parse_mllog_line(
                r#":::MLLOG {"key": "run_start", "event_type": "INTERVAL_START"}"#,
                &t
            ),
            LineEvent::RunStart
        );
        assert_eq!(
            parse_mllog_line(
                r#":::MLLOG {"key": "run_stop", "metadata": {"status": "aborted"}}"#,
                &t
            ),
            LineEvent::RunStop {
                status: Some("aborted".into())
            }
        );
        assert_eq!(
            parse_mllog_line(
                r#":::MLLOG {"key": "framework", "value": "torch 2.9.1"}"#,
                &t
            ),
            LineEvent::Framework("torch 2.9.1".into())
        );
        assert_eq!(
            parse_mllog_line(r#":::MLLOG {"key": "seed", "value": 3}"#, &t),
            LineEvent::Other
        );
        assert_eq!(parse_mllog_line("epoch 3 loss 0.2", &t), LineEvent::Other);
        // A loss metric tracked by name.
        let loss = Tracked {
            key: "eval_loss".into(),
            direction: Direction::Lower,
        };
        assert!(matches!(
            parse_mllog_line(r#":::MLLOG {"key": "eval_loss", "value": 1.88}"#, &loss),
            LineEvent::Eval(e) if e.value == 1.88
        ));
    }

    #[test]
    fn malformed_reports_say_why() {
        let t = acc();
        for (line, why) in [
            (":::MLLOG {not json", "not JSON"),
            (":::MLLOG [1, 2]", "not a JSON object"),
            (r#":::MLLOG {"value": 1}"#, "no string \"key\""),
            (
                r#":::MLLOG {"key": "eval_accuracy", "value": "high"}"#,
                "not a finite number",
            ),
            (
                r#":::MLLOG {"key": "eval_accuracy", "value": null}"#,
                "not a finite number",
            ),
            (
                r#":::MLLOG {"key": "eval_accuracy", "value": 0.5, "metadata": {"step": -3}}"#,
                "non-negative integer",
            ),
            (
                r#":::MLLOG {"key": "eval_accuracy", "value": 0.5, "metadata": {"step": 1.5}}"#,
                "non-negative integer",
            ),
            (
                r#":::MLLOG {"key": "eval_accuracy", "value": 0.5, "metadata": {"epoch_num": "x"}}"#,
                "epoch",
            ),
            (
                r#":::MLLOG {"key": "framework", "value": 3}"#,
                "not a string",
            ),
        ] {
            match parse_mllog_line(line, &t) {
                LineEvent::Malformed(r) => assert!(r.contains(why), "{line}: {r}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        // Numbers too large for f64 are rejected by the JSON parser, not turned into infinity.
        assert!(matches!(
            parse_mllog_line(r#":::MLLOG {"key": "eval_accuracy", "value": 1e999}"#, &t),
            LineEvent::Malformed(_)
        ));
    }

    #[test]
    fn jsonl_lines() {
        let t = acc();
        assert_eq!(
            parse_jsonl_line(
                r#"{"step": 100, "metric": "eval_accuracy", "value": 0.93}"#,
                &t
            ),
            LineEvent::Eval(EvalReport {
                value: 0.93,
                step: Some(100),
                epoch: None,
                train_loss: None
            })
        );
        assert_eq!(
            parse_jsonl_line(r#"{"step": 1, "metric": "lr", "value": 0.1}"#, &t),
            LineEvent::Other
        );
        assert_eq!(parse_jsonl_line("   ", &t), LineEvent::Other);
        assert!(
            matches!(parse_jsonl_line(r#"{"metric": "eval_accuracy", "value": 0.9}"#, &t), LineEvent::Malformed(r) if r.contains("step"))
        );
        assert!(matches!(
            parse_jsonl_line("garbage", &t),
            LineEvent::Malformed(_)
        ));
        assert!(
            matches!(parse_jsonl_line(r#"{"step": 1, "value": 0.9}"#, &t), LineEvent::Malformed(r) if r.contains("metric"))
        );
    }

    #[test]
    fn splitter_bounds_lines_and_keeps_partial_input() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"abc").is_empty());
        let lines = s.push(b"def\r\nxy\n");
        assert_eq!(
            lines,
            vec![
                Line {
                    text: "abcdef".into(),
                    truncated: false
                },
                Line {
                    text: "xy".into(),
                    truncated: false
                }
            ]
        );
        let big = vec![b'a'; MAX_LINE_BYTES + 10];
        assert!(s.push(&big).is_empty());
        let lines = s.push(b"tail\nnext");
        assert_eq!(lines.len(), 1);
        assert!(lines[0].truncated && lines[0].text.len() == MAX_LINE_BYTES);
        assert_eq!(
            s.flush(),
            Some(Line {
                text: "next".into(),
                truncated: false
            })
        );
        assert_eq!(s.flush(), None);
        // Invalid UTF-8 is replaced, never a panic.
        let l = s.push(b"\xff\xfe ok\n");
        assert!(l[0].text.ends_with(" ok"));
    }
}
