//! The files `joulebench collapse` writes (`collapse-gaussian.json`, `collapse-digits.json`)
//! and `joulebench report` reads back: the data policies between generations and every
//! per-generation and per-policy figure. `orchestrate::collapse` runs the experiments.

use crate::spec::generator::GeneratorKind;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum CollapseError {
    #[error("{0}")]
    Invalid(String),
}

/// How generation t+1's training set is built from generation t's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// Only the samples of the last generation (collapses).
    Replace,
    /// Real data plus every synthetic sample so far (bounded; grows every generation).
    Accumulate,
    /// A fixed-size uniform subsample of everything accumulated so far (Kazdan et al. 2024).
    AccumulateSubsample,
    /// A fraction alpha of *fresh* real samples each generation, the rest synthetic.
    MixFresh(f64),
    /// A fraction alpha taken from the same fixed real slice each generation.
    MixFixed(f64),
    /// Real data every generation (the reference: what training once on real data costs).
    RealOnly,
}

pub const POLICY_NAMES: &str =
    "replace, accumulate, accumulate-subsample, mix-fresh:<alpha>, mix-fixed:<alpha>, real-only";

impl Policy {
    pub fn parse(s: &str) -> Result<Self, CollapseError> {
        let alpha = |v: &str| -> Result<f64, CollapseError> {
            match v.parse::<f64>() {
                Ok(a) if a > 0.0 && a <= 1.0 => Ok(a),
                _ => Err(CollapseError::Invalid(format!(
                    "--policy '{s}': alpha must be a number in (0, 1], got '{v}'"
                ))),
            }
        };
        match s {
            "replace" => Ok(Policy::Replace),
            "accumulate" => Ok(Policy::Accumulate),
            "accumulate-subsample" => Ok(Policy::AccumulateSubsample),
            "real-only" => Ok(Policy::RealOnly),
            _ => {
                if let Some(v) = s.strip_prefix("mix-fresh:") {
                    Ok(Policy::MixFresh(alpha(v)?))
                } else if let Some(v) = s.strip_prefix("mix-fixed:") {
                    Ok(Policy::MixFixed(alpha(v)?))
                } else {
                    Err(CollapseError::Invalid(format!(
                        "unknown --policy '{s}'; valid: {POLICY_NAMES}"
                    )))
                }
            }
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Replace => f.write_str("replace"),
            Policy::Accumulate => f.write_str("accumulate"),
            Policy::AccumulateSubsample => f.write_str("accumulate-subsample"),
            Policy::MixFresh(a) => write!(f, "mix-fresh:{a}"),
            Policy::MixFixed(a) => write!(f, "mix-fixed:{a}"),
            Policy::RealOnly => f.write_str("real-only"),
        }
    }
}

impl Serialize for Policy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Read back from the name `Display` writes (the files `joulebench report` reads).
impl<'de> Deserialize<'de> for Policy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Policy::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `collapse-gaussian.json`: the report of every policy run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GaussianFile {
    /// Always "gaussian" (`collapse-digits.json` has no such field).
    pub experiment: String,
    pub runs: Vec<GaussianReport>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Estimator {
    Mle,
    Unbiased,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GaussianConfig {
    pub samples_per_generation: usize,
    pub chains: usize,
    pub generations: usize,
    pub policy: Policy,
    pub estimator: Estimator,
    pub seed: u64,
}

/// Statistics across chains of one generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GaussianGeneration {
    pub generation: usize,
    /// Samples the fit of this generation saw, per chain.
    pub train_size: usize,
    /// log v is -inf for a chain whose variance reached 0: written as null, read back as NaN.
    #[serde(deserialize_with = "crate::record::curve::nan_if_null")]
    pub mean_log_var: f64,
    #[serde(deserialize_with = "crate::record::curve::nan_if_null")]
    pub sd_log_var: f64,
    #[serde(deserialize_with = "crate::record::curve::nan_if_null")]
    pub median_log_var: f64,
    pub median_var: f64,
    pub mean_var: f64,
    /// Standard error of `mean_var` across chains.
    pub se_mean_var: f64,
    pub mean_w2: f64,
    pub median_w2: f64,
    /// Closed-form E[log v] (replace only).
    pub predicted_mean_log_var: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GaussianReport {
    pub config: GaussianConfig,
    pub generations: Vec<GaussianGeneration>,
    /// Closed-form drift of log v per generation under replace.
    pub replace_drift_per_generation: f64,
    pub replace_increment_var: f64,
    /// Closed-form fixed point of E[v] under mix-fresh.
    pub mix_fresh_fixed_point_var: Option<f64>,
}

/// The classifier task.
pub const CLASSIFIER_TASK: &str = "digits-mlp";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Detector {
    /// Fires when the seed-mean held-out log-likelihood falls this many nats/image below gen 0.
    pub ll_drop: f64,
    pub recall_drop: f64,
    pub acc_drop_pp: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DigitsConfig {
    pub policies: Vec<Policy>,
    pub generations: usize,
    pub seeds: Vec<u64>,
    pub generator: GeneratorKind,
    pub real_per_class: usize,
    pub classifier_epochs: usize,
    pub detector: Detector,
}

/// Per-chain energy of one generation's phases, in joules.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseEnergy {
    pub generator_fit_j: f64,
    pub sampling_j: f64,
    pub classifier_j: f64,
    pub evaluation_j: f64,
}

impl PhaseEnergy {
    pub fn total_j(&self) -> f64 {
        self.generator_fit_j + self.sampling_j + self.classifier_j + self.evaluation_j
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DigitsGeneration {
    pub generation: usize,
    /// Images G_t was fitted to, per chain.
    pub generator_train_size: usize,
    /// Images the classifier trained on (D_{t+1}; real-only: the real set), per chain.
    pub classifier_train_size: usize,
    pub accuracy_mean: f64,
    pub accuracy_sd: f64,
    #[serde(deserialize_with = "crate::record::curve::nan_if_null")]
    pub log_likelihood_mean: f64,
    #[serde(deserialize_with = "crate::record::curve::nan_if_null")]
    pub log_likelihood_sd: f64,
    pub variance_ratio_mean: f64,
    pub recall_mean: f64,
    /// Analytic FLOPs per chain: generator fit + sampling, and classifier.
    pub generator_flops: f64,
    pub classifier_flops: f64,
    pub energy: PhaseEnergy,
    pub energy_j: f64,
    pub cumulative_energy_j: f64,
    pub wall_s: f64,
    /// Cumulative energy / (100 (accuracy - chance)): J per accuracy point above chance.
    pub jpp_j: Option<f64>,
    /// Energy since generation 0 / accuracy points lost since generation 0.
    pub j_per_point_lost: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicySummary {
    pub policy: Policy,
    /// First generation >= 1 where the detector fires, and what fired.
    pub detected_at: Option<usize>,
    pub detected_by: Vec<String>,
    /// Energy of the discarded generations 1..=detected_at plus one retrain from real data.
    pub collapse_tax_j: Option<f64>,
    /// (energy through detection + retrain) / retrain.
    pub amplification_at_detection: Option<f64>,
    /// Cumulative energy of all generations / one real-data training.
    pub amplification_total: Option<f64>,
    pub final_accuracy: f64,
    pub final_cumulative_j: f64,
    /// Energy of the last generation / energy of generation 0 (accumulate: grows linearly,
    /// so the cumulative cost grows quadratically).
    pub last_to_first_energy: f64,
    /// Accuracy and likelihood of the last generation whose cumulative energy fits the
    /// smallest final cumulative energy of all policies (quality at equal energy).
    pub equal_energy_budget_j: f64,
    pub accuracy_at_equal_energy: Option<f64>,
    pub log_likelihood_at_equal_energy: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyRun {
    pub policy: Policy,
    pub generations: Vec<DigitsGeneration>,
    pub summary: PolicySummary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DigitsReport {
    pub config: DigitsConfig,
    pub generator: String,
    pub meter: String,
    pub boundary: String,
    /// Every component measured (false: the energy is an estimate, labelled, never ranked).
    pub measured: bool,
    pub sources: Vec<String>,
    /// Windows shorter than 5 s (flagged `short_window` by the window).
    pub short_windows: usize,
    pub windows: usize,
    pub chance: f64,
    /// Energy of one real-only generation (per chain), when real-only ran.
    pub real_retrain_j: Option<f64>,
    pub runs: Vec<PolicyRun>,
    pub wall_s: f64,
}

pub fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.prec$}"))
}

/// The columns of the per-policy summary (here and in `joulebench report`'s collapse section).
pub const SUMMARY_HEADER: [&str; 11] = [
    "policy",
    "detector fires at",
    "by",
    "final acc",
    "final cum. J",
    "collapse tax J",
    "amplification at detection",
    "amplification total",
    "last/first gen energy",
    "equal-energy budget J",
    "acc at equal energy",
];

/// Which columns of [`SUMMARY_HEADER`] are numbers (right-aligned).
pub const SUMMARY_NUMERIC: [bool; 11] = [
    false, true, false, true, true, true, true, true, true, true, true,
];

/// One policy's summary row, formatted (the same cells in every output).
pub fn summary_cells(r: &PolicyRun) -> Vec<String> {
    let m = &r.summary;
    vec![
        r.policy.to_string(),
        m.detected_at.map_or("-".into(), |d| d.to_string()),
        m.detected_by.join("+"),
        format!("{:.3}", m.final_accuracy),
        format!("{:.1}", m.final_cumulative_j),
        opt(m.collapse_tax_j, 1),
        opt(m.amplification_at_detection, 2),
        opt(m.amplification_total, 2),
        format!("{:.2}", m.last_to_first_energy),
        format!("{:.1}", m.equal_energy_budget_j),
        opt(m.accuracy_at_equal_energy, 3),
    ]
}
