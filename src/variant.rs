//! Training variants: precision x pruning x init x data (interface.md).
//!
//! Owns: the variant vocabulary, stable kebab-case names, and parsing a name into a `Variant`.
//! Must not: implement any technique (the training code does, per variant field).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    F32,
    Tf32,
    Bf16Amp,
    F16Amp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pruning {
    None,
    Unstructured,
    Structured,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    Scratch,
    Finetune,
}

/// One point of the variant matrix, as recorded in the run file's `variant` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    pub name: String,
    pub precision: Precision,
    pub sparsity: f64,
    pub pruning: Pruning,
    pub init: Init,
    /// `real`, `synthetic`, or `mixed:<fraction real>`.
    pub data: String,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown variant '{name}'; valid variants: {valid}")]
pub struct VariantError {
    pub name: String,
    pub valid: String,
}

/// The baseline every variant is compared with: f32, dense, from scratch, real data.
pub fn baseline() -> Variant {
    Variant {
        name: "f32".into(),
        precision: Precision::F32,
        sparsity: 0.0,
        pruning: Pruning::None,
        init: Init::Scratch,
        data: "real".into(),
    }
}

/// Every variant this build implements, with a one-line description.
pub fn catalog() -> Vec<(Variant, &'static str)> {
    vec![(
        baseline(),
        "f32 weights and math, dense, from scratch, real data (the baseline)",
    )]
}

pub fn parse(name: &str) -> Result<Variant, VariantError> {
    let all = catalog();
    all.iter()
        .find(|(v, _)| v.name == name)
        .map(|(v, _)| v.clone())
        .ok_or_else(|| VariantError {
            name: name.to_string(),
            valid: all
                .iter()
                .map(|(v, _)| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_round_trips_and_unknown_lists_valid() {
        assert_eq!(parse("f32").unwrap(), baseline());
        let e = parse("fp8").unwrap_err().to_string();
        assert!(e.contains("fp8") && e.contains("f32"), "{e}");
        let json = serde_json::to_value(baseline()).unwrap();
        assert_eq!(json["precision"], "f32");
        assert_eq!(json["pruning"], "none");
        assert_eq!(json["init"], "scratch");
    }
}
