//! Reference models behind one trait, so there is one training loop for all of them.
//!
//! Owns: building a model from a `ModelSpec`, seeded parameter initialisation on the host,
//! analytic FLOP counts, and saving/loading parameters as safetensors.
//! Must not: train, measure or evaluate (that is `train`).

mod cnn;
mod mlp;
mod params;
mod transformer;

pub use params::{ParamStore, SeededRng};

use crate::task::ModelSpec;
use candle_core::{Device, Result, Tensor};

/// A reference model: logits from inputs.
pub trait RefModel {
    /// Forward pass. `train` toggles training-only behaviour (none of the shipped models has
    /// dropout or batch norm, so both give the same logits today).
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor>;
    /// Every trainable parameter.
    fn params(&self) -> &ParamStore;
    /// Multiply-adds x 2 of one forward pass over one sample (text: one window).
    fn forward_flops_per_sample(&self) -> u64;
}

/// What the model is fed: flattened images, image tensors, or token windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputShape {
    Image { c: usize, h: usize, w: usize },
    Tokens { context: usize, vocab: usize },
}

pub fn build(
    spec: &ModelSpec,
    input: InputShape,
    classes: usize,
    rng: &mut SeededRng,
    device: &Device,
) -> Result<Box<dyn RefModel>> {
    match (spec, input) {
        (ModelSpec::Mlp { hidden }, InputShape::Image { c, h, w }) => Ok(Box::new(mlp::Mlp::new(
            c * h * w,
            hidden,
            classes,
            rng,
            device,
        )?)),
        (
            ModelSpec::Cnn {
                channels,
                kernel,
                hidden,
            },
            InputShape::Image { c, h, w },
        ) => Ok(Box::new(cnn::Cnn::new(
            (c, h, w),
            *channels,
            *kernel,
            *hidden,
            classes,
            rng,
            device,
        )?)),
        (
            ModelSpec::CharTransformer {
                context,
                d_model,
                heads,
                layers,
                ff_mult,
            },
            InputShape::Tokens { vocab, .. },
        ) => Ok(Box::new(transformer::CharTransformer::new(
            transformer::Config {
                vocab,
                context: *context,
                d_model: *d_model,
                heads: *heads,
                layers: *layers,
                ff_mult: *ff_mult,
            },
            rng,
            device,
        )?)),
        (spec, input) => {
            candle_core::bail!("model kind '{}' cannot take input {input:?}", spec.kind())
        }
    }
}

/// Flops of a dense layer's forward pass on one row.
pub(crate) fn linear_flops(fan_in: usize, fan_out: usize) -> u64 {
    2 * (fan_in * fan_out) as u64 + fan_out as u64
}
