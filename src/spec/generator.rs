//! The synthetic-data generators a variant or the collapse experiment names, and their
//! spelling (`gaussian`, `gmm`, `gmm:<K>`, `vae`); `engine::synth` implements them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A generator name that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("generator '{value}': {why}; valid: gaussian, gmm, gmm:<components>, vae")]
pub struct UnknownGenerator {
    pub value: String,
    pub why: String,
}

/// Components of `gmm` when the name gives none.
pub const DEFAULT_GMM_COMPONENTS: usize = 4;

/// Which generator, with its one structural choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum GeneratorKind {
    Gaussian,
    Gmm { components: usize },
    Vae,
}

impl GeneratorKind {
    /// The family name: `gaussian`, `gmm`, `vae`.
    pub fn name(&self) -> &'static str {
        match self {
            GeneratorKind::Gaussian => "gaussian",
            GeneratorKind::Gmm { .. } => "gmm",
            GeneratorKind::Vae => "vae",
        }
    }

    /// The spelling `parse` reads back: `gaussian`, `gmm:<K>`, `vae`.
    pub fn label(&self) -> String {
        match self {
            GeneratorKind::Gmm { components } => format!("gmm:{components}"),
            k => k.name().to_string(),
        }
    }

    /// `gaussian`, `gmm` (4 components), `gmm:<K>` (K >= 1), `vae`.
    pub fn parse(s: &str) -> Result<Self, UnknownGenerator> {
        let bad = |why: &str| UnknownGenerator {
            value: s.to_string(),
            why: why.to_string(),
        };
        match s {
            "gaussian" => Ok(GeneratorKind::Gaussian),
            "vae" => Ok(GeneratorKind::Vae),
            "gmm" => Ok(GeneratorKind::Gmm {
                components: DEFAULT_GMM_COMPONENTS,
            }),
            _ => match s.strip_prefix("gmm:") {
                Some(k) => match k.parse::<usize>() {
                    Ok(k) if k >= 1 => Ok(GeneratorKind::Gmm { components: k }),
                    _ => Err(bad("the number of GMM components must be an integer >= 1")),
                },
                None => Err(bad("unknown generator")),
            },
        }
    }
}

impl fmt::Display for GeneratorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}
