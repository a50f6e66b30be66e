//! Class-conditional generators of labelled images: p(x | y) fitted to real data, then sampled.
//!
//! Owns: the `Generator` trait and its three implementations (a per-class diagonal Gaussian, a
//! per-class diagonal-covariance GMM fitted by EM, and a small class-conditional VAE trained with
//! candle), their analytic FLOP counts, and `build`. Used by the synthetic-data training variant
//! (issue 3, item 4) and by the model-collapse experiment (`collapse`, issue 7).
//! Must not: measure energy, choose a meter, write files, or train a classifier (the caller wraps
//! `fit` and `sample` in measured spans; `train` trains classifiers).
//!
//! # API (stable: the variants work codes against it)
//! ```text
//! GeneratorKind::{Gaussian, Gmm { components }, Vae}   names: gaussian, gmm (or gmm:<K>), vae
//! trait Generator {
//!     kind() -> GeneratorKind
//!     fit(&mut self, train: &ImageSet, classes, rng: &mut SeededRng, device) -> Result<(), SynthError>
//!     sample(&self, counts: &[usize], rng: &mut SeededRng, device) -> Result<ImageSet, SynthError>
//!     log_likelihood(&self, data: &ImageSet, device) -> Result<f64, SynthError>   // nats / image
//!     fit_flops() -> f64            // of the last fit
//!     sample_flops(n) -> f64        // of sampling n images
//!     describe() -> String          // hyperparameters, one line (has a default)
//! }
//! build(kind) -> Box<dyn Generator>          // default hyperparameters, see each type
//! GeneratorKind::parse("gmm:4")              // the CLI spelling, errors list the valid names
//! ```
//! Contract shared by every generator:
//! - `fit` models p(x | y) for every class 0..classes that has at least one image; a class with
//!   no image is left unfitted, and asking `sample` for it (or `log_likelihood` of an image of it)
//!   is `SynthError::EmptyClass`. Fitting is deterministic given the rng: every random number
//!   (initialisation, batch order, VAE noise) is drawn from the seeded host RNG and uploaded,
//!   because candle's CPU RNG cannot be seeded.
//! - `sample` returns `counts[c]` images of class c, classes in order (shuffle before training
//!   on them if order matters), clipped to [0, 1], shaped like the training images.
//! - `log_likelihood` is the mean over images of log p(x | y) in nats under the model's
//!   continuous density (clipping to [0, 1] in `sample` is not part of the density). For the VAE
//!   it is a stated lower bound: the importance-weighted ELBO with `VaeOptions::iw_samples`
//!   samples (Burda et al. 2016), drawn from a fixed stream of the fit's seed.
//! - FLOPs count multiply, add, compare and each transcendental (exp, log, sqrt, cos) as one
//!   operation; integer RNG work is not counted. Dense layers count 2 x fan_in x fan_out per row
//!   forward and 3x that for forward plus backward.
//!
//! The Gaussian and the GMM compute on the host in f64 whatever `device` says (at these sizes a
//! host loop beats kernel launches); the VAE runs on `device` in f32.
//!
//! Text has its own generator, `ngram::CharNgram` (a character n-gram model with interpolated
//! absolute discounting, fitted to the training text and sampled to its length): the text
//! analogue of the Gaussian and the GMM. It is not a `Generator` (no classes, no images).

pub mod gaussian;
pub mod gmm;
pub mod ngram;
pub mod vae;

pub use gaussian::DiagGaussian;
pub use gmm::{Gmm, GmmOptions};
pub use vae::{Vae, VaeOptions};

use crate::data::ImageSet;
use crate::engine::model::SeededRng;
use crate::spec::generator::{GeneratorKind, DEFAULT_GMM_COMPONENTS};
use candle_core::Device;

/// ln(2 pi).
pub const LN_2PI: f64 = 1.837_877_066_409_345_5;

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error(transparent)]
    UnknownGenerator(#[from] crate::spec::generator::UnknownGenerator),
    #[error("cannot fit a generator to an empty training set")]
    NoData,
    #[error("training data is inconsistent: {0}")]
    Malformed(String),
    #[error("label {label} is out of range for {classes} classes")]
    LabelOutOfRange { label: u8, classes: usize },
    #[error("class {class} had no training images, so the generator cannot model it")]
    EmptyClass { class: usize },
    #[error("the generator was not fitted")]
    NotFitted,
    #[error("images have {got} values each, the generator was fitted to {expected}")]
    ShapeMismatch { expected: usize, got: usize },
    #[error("sample counts name {got} classes, the generator was fitted with {classes}")]
    CountsMismatch { got: usize, classes: usize },
    #[error("invalid generator option: {0}")]
    InvalidOption(String),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// A class-conditional generator of images (see the module header for the contract).
pub trait Generator {
    fn kind(&self) -> GeneratorKind;
    /// Fit p(x | y) to labelled images (values in [0,1]), deterministically given the rng.
    fn fit(
        &mut self,
        train: &ImageSet,
        classes: usize,
        rng: &mut SeededRng,
        device: &Device,
    ) -> Result<(), SynthError>;
    /// `counts[c]` samples of class c, clipped to [0,1], shaped like the training images.
    fn sample(
        &self,
        counts: &[usize],
        rng: &mut SeededRng,
        device: &Device,
    ) -> Result<ImageSet, SynthError>;
    /// Mean log-likelihood per image, in nats, of labelled images under p(x | y) (the VAE: an
    /// importance-weighted ELBO, a lower bound).
    fn log_likelihood(&self, data: &ImageSet, device: &Device) -> Result<f64, SynthError>;
    /// Analytic FLOPs of the last `fit` (0 before any).
    fn fit_flops(&self) -> f64;
    /// Analytic FLOPs of sampling `n` images.
    fn sample_flops(&self, n: usize) -> f64;
    /// Hyperparameters, one line, for run records.
    fn describe(&self) -> String {
        self.kind().label()
    }
}

/// A generator of `kind` with its default hyperparameters.
pub fn build(kind: GeneratorKind) -> Box<dyn Generator> {
    match kind {
        GeneratorKind::Gaussian => Box::new(DiagGaussian::default()),
        GeneratorKind::Gmm { components } => Box::new(Gmm::new(GmmOptions {
            components,
            ..GmmOptions::default()
        })),
        GeneratorKind::Vae => Box::new(Vae::new(VaeOptions::default())),
    }
}

/// A draw from N(0, 1): Box-Muller on two 53-bit uniforms from the seeded host RNG.
pub fn standard_normal(rng: &mut SeededRng) -> f64 {
    const TWO_53: usize = 1 << 53;
    // (k + 0.5) / 2^53 lies strictly inside (0, 1), so ln never sees 0.
    let u1 = (rng.below(TWO_53) as f64 + 0.5) / TWO_53 as f64;
    let u2 = (rng.below(TWO_53) as f64 + 0.5) / TWO_53 as f64;
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// FLOPs charged per standard normal draw (ln, sqrt, cos, 2 mul, 2 int-to-float scalings).
pub const NORMAL_DRAW_FLOPS: f64 = 8.0;

/// Checks an image set and groups its image indices by class.
pub(crate) fn by_class(set: &ImageSet, classes: usize) -> Result<Vec<Vec<usize>>, SynthError> {
    if set.images.len() != set.len() * set.sample_len() {
        return Err(SynthError::Malformed(format!(
            "{} values for {} images of {} values",
            set.images.len(),
            set.len(),
            set.sample_len()
        )));
    }
    let mut out = vec![Vec::new(); classes];
    for (i, &l) in set.labels.iter().enumerate() {
        out.get_mut(l as usize)
            .ok_or(SynthError::LabelOutOfRange { label: l, classes })?
            .push(i);
    }
    Ok(out)
}

/// Sample counts must name every class the generator was fitted to, no more, no fewer.
pub(crate) fn check_counts(counts: &[usize], fitted_classes: usize) -> Result<(), SynthError> {
    if counts.len() != fitted_classes {
        return Err(SynthError::CountsMismatch {
            got: counts.len(),
            classes: fitted_classes,
        });
    }
    Ok(())
}

/// The dimension of a fitted model against a set to score or a request to sample.
pub(crate) fn check_dim(expected: usize, set: &ImageSet) -> Result<(), SynthError> {
    if set.sample_len() != expected {
        return Err(SynthError::ShapeMismatch {
            expected,
            got: set.sample_len(),
        });
    }
    Ok(())
}

/// Per-class seeds drawn from the caller's rng, so per-class work is deterministic whatever
/// order (or thread) it runs in.
pub(crate) fn class_seeds(rng: &mut SeededRng, classes: usize) -> Vec<u64> {
    (0..classes)
        .map(|_| rng.below(1 << 62) as u64)
        .collect::<Vec<_>>()
}

/// The labels of `counts`: class c repeated `counts[c]` times.
pub(crate) fn labels_of(counts: &[usize]) -> Vec<u8> {
    counts
        .iter()
        .enumerate()
        .flat_map(|(c, &n)| std::iter::repeat_n(c as u8, n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for k in [
            GeneratorKind::Gaussian,
            GeneratorKind::Gmm { components: 3 },
            GeneratorKind::Vae,
        ] {
            assert_eq!(GeneratorKind::parse(&k.label()).unwrap(), k);
        }
        assert_eq!(
            GeneratorKind::parse("gmm").unwrap(),
            GeneratorKind::Gmm {
                components: DEFAULT_GMM_COMPONENTS
            }
        );
        for bad in ["gmm:0", "gmm:x", "gan", ""] {
            let e = GeneratorKind::parse(bad).unwrap_err().to_string();
            assert!(e.contains("valid: gaussian, gmm"), "{e}");
        }
    }

    #[test]
    fn standard_normal_moments() {
        // n = 200k draws: the sample mean has sd 1/sqrt(n) = 0.0022, the sample variance sd
        // sqrt(2/n) = 0.0032; 5 sd margins.
        let mut rng = SeededRng::new(3, 0);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| standard_normal(&mut rng)).collect();
        let m = xs.iter().sum::<f64>() / n as f64;
        let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
        assert!(m.abs() < 5.0 * 0.0023, "mean {m}");
        assert!((v - 1.0).abs() < 5.0 * 0.0032, "var {v}");
        // P(|Z| > 2) = 0.0455, binomial sd sqrt(p(1-p)/n) = 0.00047.
        let tail = xs.iter().filter(|x| x.abs() > 2.0).count() as f64 / n as f64;
        assert!((tail - 0.0455).abs() < 5.0 * 0.00047, "tail {tail}");
    }
}
