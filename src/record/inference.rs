//! The run file's `inference` key (joules per 1,000 predictions per batch size) and the
//! training-vs-serving break-even computed from it; `engine::inference` measures it.

use crate::measure::{Boundary, ComponentEnergy};
use serde::{Deserialize, Serialize};

/// One batch size's measurement (the run file's `inference.measurements[i]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceMeasurement {
    pub batch: usize,
    /// Samples pushed through the model (may wrap round the held-out set several times).
    pub samples: usize,
    /// Scored predictions: samples x predictions_per_sample.
    pub predictions: usize,
    /// Passes over the held-out set (fractional).
    pub passes: f64,
    pub energy_j: f64,
    pub time_s: f64,
    pub j_per_1000: f64,
    /// energy_j - idle_w x time_s, per 1,000 predictions; null without an idle baseline.
    pub net_j_per_1000: Option<f64>,
    pub average_power_w: f64,
    pub boundary: Boundary,
    pub components: Vec<ComponentEnergy>,
    /// True when every component is measured (else the figure is an estimate, labelled so).
    pub all_measured: bool,
    pub flags: Vec<String>,
}

/// The run file's `inference` key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceReport {
    /// Size of the held-out set the predictions are drawn from.
    pub eval_samples: usize,
    pub predictions_per_sample: usize,
    pub measurements: Vec<InferenceMeasurement>,
    /// How it was measured, in words.
    pub method: String,
    /// Why the measurement failed (the training result is kept regardless).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl InferenceReport {
    pub fn at_batch(&self, batch: usize) -> Option<&InferenceMeasurement> {
        self.measurements.iter().find(|m| m.batch == batch)
    }
    /// The measurement at batch 1 and the one at the largest batch.
    pub fn small_and_large(
        &self,
    ) -> (Option<&InferenceMeasurement>, Option<&InferenceMeasurement>) {
        let small = self.measurements.iter().min_by_key(|m| m.batch);
        let large = self
            .measurements
            .iter()
            .max_by_key(|m| m.batch)
            .filter(|m| Some(m.batch) != small.map(|s| s.batch));
        (small, large)
    }
}

impl InferenceReport {
    /// One human line: "inference: batch 1 12.3 J/1000 predictions (H, estimated) | batch 1024 ...".
    pub fn summary(&self) -> String {
        if let Some(e) = &self.error {
            return format!("inference: not measured: {e}");
        }
        let parts: Vec<String> = self
            .measurements
            .iter()
            .map(|m| {
                format!(
                    "batch {} {:.4} J/1000 predictions ({}, {}; {} predictions in {:.1} s{})",
                    m.batch,
                    m.j_per_1000,
                    m.boundary.as_str(),
                    if m.all_measured {
                        "measured"
                    } else {
                        "ESTIMATED"
                    },
                    m.predictions,
                    m.time_s,
                    if m.flags.is_empty() {
                        String::new()
                    } else {
                        format!(", flags {}", m.flags.join(" "))
                    }
                )
            })
            .collect();
        format!("inference: {}", parts.join(" | "))
    }
}

/// After how many predictions a variant's extra training energy is paid back by cheaper serving.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "case", rename_all = "kebab-case")]
pub enum BreakEven {
    /// Costs more to train and less to serve: even after `predictions`.
    PaysBackAfter { predictions: f64 },
    /// Costs no more to train and no more to serve (and less on one): better from the start.
    CheaperOnBoth,
    /// Costs less to train but more to serve: its training saving is used up after
    /// `predictions`; beyond that the baseline is cheaper in total.
    AdvantageLostAfter { predictions: f64 },
    /// Costs no less to train and no less to serve (and more on one): never pays back.
    NeverPaysBack,
    /// Same training energy and same serving energy.
    Identical,
}

impl BreakEven {
    pub fn describe(&self) -> String {
        match self {
            BreakEven::PaysBackAfter { predictions } => {
                format!("pays back after {} predictions", human_count(*predictions))
            }
            BreakEven::CheaperOnBoth => {
                "cheaper to train and to serve: no break-even needed".into()
            }
            BreakEven::AdvantageLostAfter { predictions } => format!(
                "cheaper to train, dearer to serve: ahead until {} predictions, behind after",
                human_count(*predictions)
            ),
            BreakEven::NeverPaysBack => "never pays back (no cheaper to serve)".into(),
            BreakEven::Identical => "identical training and serving energy".into(),
        }
    }
}

/// A prediction count: whole numbers with thousands separators, scientific from 1e12.
fn human_count(n: f64) -> String {
    if n >= 1e12 {
        return format!("{n:.3e}");
    }
    let digits = format!("{:.0}", n.ceil());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// N* = (ETT_variant - ETT_baseline) / (e_baseline - e_variant), energies per prediction in J.
pub fn break_even(
    ett_variant_j: f64,
    ett_baseline_j: f64,
    e_variant_j_per_prediction: f64,
    e_baseline_j_per_prediction: f64,
) -> BreakEven {
    let extra_train = ett_variant_j - ett_baseline_j;
    let saving_per_prediction = e_baseline_j_per_prediction - e_variant_j_per_prediction;
    match (
        extra_train.partial_cmp(&0.0),
        saving_per_prediction.partial_cmp(&0.0),
    ) {
        (Some(std::cmp::Ordering::Equal), Some(std::cmp::Ordering::Equal)) => BreakEven::Identical,
        (Some(std::cmp::Ordering::Greater), Some(std::cmp::Ordering::Greater)) => {
            BreakEven::PaysBackAfter {
                predictions: extra_train / saving_per_prediction,
            }
        }
        (Some(std::cmp::Ordering::Less), Some(std::cmp::Ordering::Less)) => {
            BreakEven::AdvantageLostAfter {
                predictions: extra_train / saving_per_prediction,
            }
        }
        (Some(t), Some(s)) if t != std::cmp::Ordering::Greater && s != std::cmp::Ordering::Less => {
            BreakEven::CheaperOnBoth
        }
        _ => BreakEven::NeverPaysBack,
    }
}
