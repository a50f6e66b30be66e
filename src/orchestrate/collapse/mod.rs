//! Model collapse (issue 7, docs/design/collapse.md): recursive synthetic-data generations
//! and the energy they waste.
//!
//! Owns: the data policies between generations (`Policy`), the closed-form Gaussian experiment
//! (`gaussian`), the digits generator-plus-classifier experiment with per-phase energy
//! (`digits`), their Markdown/JSON output (the serde types `joulebench report` reads back) (the
//! `joulebench collapse` command is `cli::collapse`).
//! Must not: implement generators (`synth`), a classifier training loop (`train::train` is the
//! one loop) or a meter (`energy`); every joule comes from a `MeasuredWindow`.

pub mod digits;
pub mod gaussian;

use crate::record::collapse::{CollapseError, Policy};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::curve::nan_if_null;
    use serde::Deserialize;

    #[test]
    fn policies_parse_and_print_back() {
        for s in [
            "replace",
            "accumulate",
            "accumulate-subsample",
            "mix-fresh:0.25",
            "mix-fixed:1",
            "real-only",
        ] {
            assert_eq!(Policy::parse(s).unwrap().to_string(), s);
        }
        for bad in [
            "mix-fresh:0",
            "mix-fresh:1.5",
            "mix-fixed:x",
            "mix-fresh:nan",
        ] {
            assert!(Policy::parse(bad)
                .unwrap_err()
                .to_string()
                .contains("(0, 1]"));
        }
        assert!(Policy::parse("keep")
            .unwrap_err()
            .to_string()
            .contains("valid: replace"));
    }

    #[test]
    fn policies_and_non_finite_numbers_read_back_from_json() {
        let p: Vec<Policy> = serde_json::from_str(r#"["replace", "mix-fresh:0.2"]"#).unwrap();
        assert_eq!(p, [Policy::Replace, Policy::MixFresh(0.2)]);
        let e = serde_json::from_str::<Policy>(r#""keep""#).unwrap_err();
        assert!(e.to_string().contains("valid: replace"), "{e}");
        #[derive(Deserialize)]
        struct X {
            #[serde(deserialize_with = "nan_if_null")]
            v: f64,
        }
        // What serde_json writes for -inf.
        let null = serde_json::to_string(&serde_json::json!({ "v": f64::NEG_INFINITY })).unwrap();
        assert!(serde_json::from_str::<X>(&null).unwrap().v.is_nan());
        assert_eq!(serde_json::from_str::<X>(r#"{"v": -1.5}"#).unwrap().v, -1.5);
    }
}
