//! Training variants: precision x pruning x init x data (docs/run-file.md).
//!
//! Owns: the variant vocabulary, the grammar of stable kebab-case names (a catalog of named
//! presets and any composition of their tokens), parsing a name into a `Variant`, and the rules
//! saying which combinations are impossible and on which tasks a technique makes sense.
//! Must not: implement any technique (`precision`, `prune`, `checkpoint`, the runner's
//! pipelines do, per variant field).
//!
//! Grammar (tokens joined by single `-`, in this canonical order; defaults are omitted):
//!
//! ```text
//! [precision] [pruning] [init] [data]
//! precision = f32 | tf32 | bf16-amp | f16-amp            (default f32)
//! pruning   = unstructured-<pct> | structured-<pct>       (pct of weights / units removed)
//! init      = finetune [freeze-<layer> ...]               (default scratch)
//! data      = synthetic-<gen> | mixed-<pct real>-<gen> | random-tensors   (default real)
//! gen       = gaussian | gmm | vae
//! ```
//!
//! The all-default variant is named `f32`. A name never contains `--` (run ids use it as the
//! separator: `<task>--<variant>--seed-N--<system>`), and its characters are `[a-z0-9.-]`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    F32,
    Tf32,
    Bf16Amp,
    F16Amp,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Tf32 => "tf32",
            Precision::Bf16Amp => "bf16-amp",
            Precision::F16Amp => "f16-amp",
        }
    }
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

/// Where the training set of a run comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DataSource {
    Real,
    /// Every training sample drawn from a generator fitted to the real training set.
    Synthetic,
    /// This fraction of the training set real, the rest synthetic.
    Mixed {
        real_fraction: f64,
    },
    /// Random inputs and labels: the hardware throughput track (J/sample and J/step only).
    Random,
}

/// One point of the variant matrix: what a plan holds and a run is asked to do. A run file's
/// `variant` object is this plus what the run did with it (`record::RunVariant`).
///
/// The first six fields are docs/run-file.md's; the rest are optional (absent for the baseline, so
/// older readers and fixtures are unaffected).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    pub name: String,
    pub precision: Precision,
    pub sparsity: f64,
    pub pruning: Pruning,
    pub init: Init,
    /// `real`, `synthetic`, `mixed:<fraction real>` or `random` (throughput track).
    pub data: String,
    /// Generator of synthetic data: `gaussian`, `gmm` or `vae`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<String>,
    /// Layers (parameter-name prefixes) loaded from the checkpoint and not trained.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frozen: Vec<String>,
}

/// A named or composed variant that cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum VariantError {
    #[error("unknown variant '{name}'; valid variants: {valid}")]
    Unknown { name: String, valid: String },
    #[error("variant '{name}': {reason}")]
    Invalid { name: String, reason: String },
    #[error("variant '{name}' does not apply to task '{task}': {reason}")]
    NotApplicable {
        name: String,
        task: String,
        reason: String,
    },
}

/// Synthetic-data generators a data token may name.
pub const GENERATORS: [&str; 4] = ["gaussian", "gmm", "vae", "ngram"];

/// The generators of text (the others model images).
pub const TEXT_GENERATORS: [&str; 1] = ["ngram"];

/// The baseline every variant is compared with: f32, dense, from scratch, real data.
pub fn baseline() -> Variant {
    Variant {
        name: "f32".into(),
        precision: Precision::F32,
        sparsity: 0.0,
        pruning: Pruning::None,
        init: Init::Scratch,
        data: "real".into(),
        generator: None,
        frozen: Vec::new(),
    }
}

impl Variant {
    /// The data source the `data` string names.
    pub fn data_source(&self) -> DataSource {
        match self.data.as_str() {
            "synthetic" => DataSource::Synthetic,
            "random" => DataSource::Random,
            d => match d.strip_prefix("mixed:").and_then(|f| f.parse::<f64>().ok()) {
                Some(real_fraction) => DataSource::Mixed { real_fraction },
                None => DataSource::Real,
            },
        }
    }

    /// f32, dense, scratch, real data: the spec fields only (run-level details ignored).
    pub fn is_baseline(&self) -> bool {
        self.precision == Precision::F32
            && self.pruning == Pruning::None
            && self.sparsity == 0.0
            && self.init == Init::Scratch
            && self.data == "real"
            && self.frozen.is_empty()
    }

    /// The canonical name of this combination (the grammar in the module header).
    pub fn canonical_name(&self) -> String {
        let mut t: Vec<String> = Vec::new();
        if self.precision != Precision::F32 {
            t.push(self.precision.as_str().into());
        }
        let pct = fmt_pct(self.sparsity);
        match self.pruning {
            Pruning::None => {}
            Pruning::Unstructured => t.push(format!("unstructured-{pct}")),
            Pruning::Structured => t.push(format!("structured-{pct}")),
        }
        if self.init == Init::Finetune {
            t.push("finetune".into());
            for f in &self.frozen {
                t.push(format!("freeze-{f}"));
            }
        }
        let gen = self.generator.as_deref().unwrap_or("?");
        match self.data_source() {
            DataSource::Real => {}
            DataSource::Synthetic => t.push(format!("synthetic-{gen}")),
            DataSource::Mixed { real_fraction } => {
                t.push(format!("mixed-{}-{gen}", fmt_pct(real_fraction)))
            }
            DataSource::Random => t.push("random-tensors".into()),
        }
        if t.is_empty() {
            "f32".into()
        } else {
            t.join("-")
        }
    }
}

/// 0.9 -> "90", 0.875 -> "87.5".
fn fmt_pct(f: f64) -> String {
    let p = (f * 1e6).round() / 1e4;
    if p.fract() == 0.0 {
        format!("{}", p as i64)
    } else {
        format!("{p}")
    }
}

/// The named presets, with a one-line description each. Any composition of their tokens is
/// also a variant (see the grammar); `joulebench list` prints both.
pub fn catalog() -> Vec<(Variant, &'static str)> {
    let presets: [(&str, &str); 16] = [
        ("f32", "f32 weights and math, dense, from scratch, real data (the baseline)"),
        ("tf32", "f32 weights, f32 GEMMs on TF32 tensor cores (CUDA only)"),
        ("bf16-amp", "f32 master weights, forward GEMMs/convs in bf16, loss and eval in f32"),
        ("f16-amp", "as bf16-amp in f16, with dynamic loss scaling (skip + halve on inf/NaN)"),
        ("unstructured-50", "dense to T, gradual global magnitude pruning to 50 % (cubic), recover to T"),
        ("unstructured-90", "dense to T, gradual global magnitude pruning to 90 % (cubic), recover to T"),
        ("structured-50", "dense to T, remove 50 % of hidden units/channels by norm, rebuild smaller, recover to T"),
        ("finetune", "start from the source task's checkpoint (task key finetune.source, or --checkpoint)"),
        ("finetune-freeze-fc0", "finetune with layer fc0 loaded and frozen (not trained, no gradient below it)"),
        ("synthetic-gaussian", "train on samples of a per-class diagonal Gaussian fitted to the real train set"),
        ("synthetic-gmm", "train on samples of a per-class Gaussian mixture (EM) fitted to the real train set"),
        ("synthetic-vae", "train on samples of a small class-conditional VAE fitted to the real train set"),
        ("mixed-50-gmm", "half real training samples, half GMM samples"),
        ("synthetic-ngram", "text: train on a sample of a character 5-gram model fitted to the real training text"),
        ("mixed-50-ngram", "text: the first half of the real training text, the rest sampled from the 5-gram model"),
        ("random-tensors", "random inputs and labels: throughput track (J/sample, J/step; never JPP, never ranked)"),
    ];
    presets
        .iter()
        .map(|(n, d)| (parse_name(n).expect("catalog presets parse"), *d))
        .collect()
}

/// The grammar in one line, for `list` and error messages.
pub const GRAMMAR: &str = "[f32|tf32|bf16-amp|f16-amp][-unstructured-<pct>|-structured-<pct>][-finetune[-freeze-<layer>...]][-synthetic-<gen>|-mixed-<pct real>-<gen>|-random-tensors], gen = gaussian|gmm|vae (images) or ngram (text)";

fn valid_list() -> String {
    let names: Vec<String> = catalog().into_iter().map(|(v, _)| v.name).collect();
    format!("{} (or a composition: {GRAMMAR})", names.join(", "))
}

/// Parse a preset or composed name into its canonical `Variant`.
pub fn parse(name: &str) -> Result<Variant, VariantError> {
    parse_name(name)
}

fn parse_name(name: &str) -> Result<Variant, VariantError> {
    let unknown = || VariantError::Unknown {
        name: name.to_string(),
        valid: valid_list(),
    };
    let invalid = |reason: String| VariantError::Invalid {
        name: name.to_string(),
        reason,
    };
    if name.is_empty()
        || name.contains("--")
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        return Err(unknown());
    }
    let pieces: Vec<&str> = name.split('-').collect();
    let mut v = baseline();
    let (mut seen_prec, mut seen_prune, mut seen_init, mut seen_data) =
        (false, false, false, false);
    let mut i = 0;
    let pct = |s: Option<&&str>, what: &str| -> Result<f64, VariantError> {
        let s = s.ok_or_else(|| invalid(format!("'{what}' needs a percentage, e.g. {what}-50")))?;
        let p: f64 = s
            .parse()
            .map_err(|_| invalid(format!("'{what}-{s}': '{s}' is not a percentage")))?;
        if !(p.is_finite() && (0.0..=100.0).contains(&p)) {
            return Err(invalid(format!(
                "'{what}-{s}': the percentage must be in [0, 100]"
            )));
        }
        Ok(p / 100.0)
    };
    let once = |flag: &mut bool, what: &str| -> Result<(), VariantError> {
        if std::mem::replace(flag, true) {
            Err(invalid(format!("two {what} tokens")))
        } else {
            Ok(())
        }
    };
    while i < pieces.len() {
        match pieces[i] {
            "f32" | "tf32" => {
                once(&mut seen_prec, "precision")?;
                v.precision = if pieces[i] == "f32" {
                    Precision::F32
                } else {
                    Precision::Tf32
                };
                i += 1;
            }
            p @ ("bf16" | "f16") => {
                once(&mut seen_prec, "precision")?;
                if pieces.get(i + 1) != Some(&"amp") {
                    return Err(invalid(format!(
                        "'{p}' is written '{p}-amp' (f32 master weights, {p} forward)"
                    )));
                }
                v.precision = if p == "bf16" {
                    Precision::Bf16Amp
                } else {
                    Precision::F16Amp
                };
                i += 2;
            }
            p @ ("unstructured" | "structured") => {
                once(&mut seen_prune, "pruning")?;
                let s = pct(pieces.get(i + 1), p)?;
                if s <= 0.0 {
                    return Err(invalid(format!(
                        "{p} pruning to sparsity 0 prunes nothing; drop the token"
                    )));
                }
                if s >= 1.0 {
                    return Err(invalid(format!(
                        "{p} pruning to sparsity 1.0 removes every {}: impossible; use a percentage below 100",
                        if p == "structured" { "unit" } else { "weight" }
                    )));
                }
                v.pruning = if p == "structured" {
                    Pruning::Structured
                } else {
                    Pruning::Unstructured
                };
                v.sparsity = s;
                i += 2;
            }
            "finetune" => {
                once(&mut seen_init, "init")?;
                v.init = Init::Finetune;
                i += 1;
            }
            "freeze" => {
                let layer = pieces
                    .get(i + 1)
                    .filter(|l| !l.is_empty())
                    .ok_or_else(|| invalid("'freeze' needs a layer, e.g. freeze-fc0".into()))?;
                if v.frozen.iter().any(|f| f == layer) {
                    return Err(invalid(format!("layer '{layer}' frozen twice")));
                }
                v.frozen.push(layer.to_string());
                i += 2;
            }
            "synthetic" => {
                once(&mut seen_data, "data")?;
                v.generator = Some(generator(pieces.get(i + 1), &invalid)?);
                v.data = "synthetic".into();
                i += 2;
            }
            "mixed" => {
                once(&mut seen_data, "data")?;
                let f = pct(pieces.get(i + 1), "mixed")?;
                if f <= 0.0 || f >= 1.0 {
                    return Err(invalid(format!(
                        "mixed-<pct real> needs 0 < pct < 100 (0 is synthetic-<gen>, 100 is real data), got {}",
                        fmt_pct(f)
                    )));
                }
                v.generator = Some(generator(pieces.get(i + 2), &invalid)?);
                v.data = format!("mixed:{}", fmt_fraction(f));
                i += 3;
            }
            "random" => {
                once(&mut seen_data, "data")?;
                if pieces.get(i + 1) != Some(&"tensors") {
                    return Err(invalid("the throughput track is 'random-tensors'".into()));
                }
                v.data = "random".into();
                i += 2;
            }
            _ => return Err(unknown()),
        }
    }
    if !v.frozen.is_empty() && v.init != Init::Finetune {
        return Err(invalid(
            "freeze-<layer> needs 'finetune' (a frozen layer keeps weights loaded from a checkpoint)"
                .into(),
        ));
    }
    if !v.frozen.is_empty() && v.pruning != Pruning::None {
        return Err(invalid(
            "pruning with frozen layers is not supported (frozen weights are constants, never re-masked)"
                .into(),
        ));
    }
    if v.data == "random" && (v.pruning != Pruning::None || v.init != Init::Scratch) {
        return Err(invalid(
            "random-tensors is a throughput track with no target: it cannot be combined with pruning or fine-tuning (both are defined by reaching T)"
                .into(),
        ));
    }
    v.name = v.canonical_name();
    Ok(v)
}

fn fmt_fraction(f: f64) -> String {
    let r = (f * 1e6).round() / 1e6;
    format!("{r}")
}

fn generator(
    s: Option<&&str>,
    invalid: &dyn Fn(String) -> VariantError,
) -> Result<String, VariantError> {
    match s {
        Some(g) if GENERATORS.contains(g) => Ok(g.to_string()),
        Some(g) => Err(invalid(format!(
            "unknown generator '{g}'; valid: {}",
            GENERATORS.join(", ")
        ))),
        None => Err(invalid(format!(
            "a data token needs a generator: {}",
            GENERATORS.join(", ")
        ))),
    }
}

/// What a task offers that the applicability rules need to know (kept free of `task` types so
/// this module stays the vocabulary only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFamily {
    Mlp,
    Cnn,
    CharTransformer,
    Gpt,
    Resnet,
}

impl ModelFamily {
    /// The token models (text tasks).
    pub fn is_text(self) -> bool {
        matches!(self, ModelFamily::CharTransformer | ModelFamily::Gpt)
    }
}

/// Whether `v` makes sense on a task with this model family; the reason when it does not.
pub fn check_applicable(
    v: &Variant,
    task: &str,
    family: ModelFamily,
    has_finetune_source: bool,
    explicit_checkpoint: bool,
) -> Result<(), VariantError> {
    let na = |reason: &str| VariantError::NotApplicable {
        name: v.name.clone(),
        task: task.to_string(),
        reason: reason.to_string(),
    };
    if v.pruning == Pruning::Structured && family == ModelFamily::CharTransformer {
        return Err(na(
            "structured pruning removes whole hidden units or channels and rebuilds a smaller dense model; \
             the char transformer's widths are tied (d_model through every residual, ff_mult and heads are \
             uniform per layer), so there is no unit it could drop without a non-uniform architecture; \
             use unstructured-<pct>",
        ));
    }
    if matches!(
        v.data_source(),
        DataSource::Synthetic | DataSource::Mixed { .. }
    ) {
        let text_gen = v
            .generator
            .as_deref()
            .is_some_and(|g| TEXT_GENERATORS.contains(&g));
        if family.is_text() && !text_gen {
            return Err(na(
                "the generators gaussian, gmm and vae are class-conditional image models; a text task \
                 takes the character n-gram generator: synthetic-ngram or mixed-<pct>-ngram",
            ));
        }
        if !family.is_text() && text_gen {
            return Err(na(
                "ngram is a character n-gram model of text; an image task takes gaussian, gmm or vae",
            ));
        }
    }
    if v.init == Init::Finetune && !has_finetune_source && !explicit_checkpoint {
        return Err(na(
            "a fine-tune needs a checkpoint: this task has no [finetune] source; pass --checkpoint PATH \
             or pick a fine-tune task (see `joulebench list`)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_round_trips_and_unknown_lists_valid() {
        assert_eq!(parse("f32").unwrap(), baseline());
        let e = parse("fp8").unwrap_err().to_string();
        assert!(
            e.contains("unknown variant 'fp8'") && e.contains("f32"),
            "{e}"
        );
        let json = serde_json::to_value(baseline()).unwrap();
        assert_eq!(json["precision"], "f32");
        assert_eq!(json["pruning"], "none");
        assert_eq!(json["init"], "scratch");
        // The baseline serializes exactly docs/run-file.md's six fields.
        assert_eq!(json.as_object().unwrap().len(), 6, "{json}");
    }

    #[test]
    fn presets_parse_to_themselves_and_names_are_safe() {
        for (v, _) in catalog() {
            assert_eq!(parse(&v.name).unwrap(), v, "{}", v.name);
            assert!(!v.name.contains("--"), "{}", v.name);
            assert_eq!(v.canonical_name(), v.name);
        }
    }

    #[test]
    fn compositions_parse_and_canonicalise() {
        let v = parse("bf16-amp-unstructured-87.5-finetune-mixed-25-vae").unwrap();
        assert_eq!(v.precision, Precision::Bf16Amp);
        assert_eq!(v.pruning, Pruning::Unstructured);
        assert!((v.sparsity - 0.875).abs() < 1e-12);
        assert_eq!(v.init, Init::Finetune);
        assert_eq!(v.name, "bf16-amp-unstructured-87.5-finetune-mixed-25-vae");
        let f = parse("f16-amp-finetune-freeze-conv0-freeze-conv1").unwrap();
        assert_eq!(f.frozen, ["conv0", "conv1"]);
        assert_eq!(v.data, "mixed:0.25");
        assert_eq!(v.generator.as_deref(), Some("vae"));
        assert_eq!(
            v.data_source(),
            DataSource::Mixed {
                real_fraction: 0.25
            }
        );
        // Any token order is accepted; the name is canonical.
        let w = parse("finetune-f16-amp").unwrap();
        assert_eq!(w.name, "f16-amp-finetune");
        assert_eq!(parse("f32-structured-50").unwrap().name, "structured-50");
    }

    #[test]
    fn impossible_combinations_say_why() {
        for (name, needle) in [
            ("structured-100", "sparsity 1.0"),
            ("unstructured-100", "sparsity 1.0"),
            ("unstructured-0", "prunes nothing"),
            ("structured-abc", "not a percentage"),
            ("bf16", "bf16-amp"),
            ("freeze-fc0", "needs 'finetune'"),
            ("synthetic-diffusion", "unknown generator 'diffusion'"),
            ("mixed-100-gmm", "0 < pct < 100"),
            ("f32-bf16-amp", "two precision"),
            ("random-tensors-structured-50", "throughput track"),
            ("unstructured-50-finetune-freeze-fc0", "frozen layers"),
        ] {
            let e = parse(name).unwrap_err().to_string();
            assert!(e.contains(needle), "{name}: {e}");
            assert!(!e.contains('\n'));
        }
        assert!(matches!(
            parse("f32--x").unwrap_err(),
            VariantError::Unknown { .. }
        ));
    }

    #[test]
    fn applicability_per_model_family() {
        let s = parse("structured-50").unwrap();
        assert!(check_applicable(&s, "t", ModelFamily::Mlp, false, false).is_ok());
        assert!(check_applicable(&s, "t", ModelFamily::Cnn, false, false).is_ok());
        let e = check_applicable(&s, "t", ModelFamily::CharTransformer, false, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unstructured"), "{e}");
        let g = parse("synthetic-gmm").unwrap();
        assert!(check_applicable(&g, "t", ModelFamily::CharTransformer, false, false).is_err());
        let f = parse("finetune").unwrap();
        let e = check_applicable(&f, "mnist-mlp", ModelFamily::Mlp, false, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--checkpoint"), "{e}");
        assert!(check_applicable(&f, "t", ModelFamily::Mlp, true, false).is_ok());
        assert!(check_applicable(&f, "t", ModelFamily::Mlp, false, true).is_ok());
    }
}
