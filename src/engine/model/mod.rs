//! Reference models behind one trait, so there is one training loop for all of them.
//!
//! Owns: building a model from a `ModelSpec` (seeded parameter initialisation on the host, or
//! given tensors with optional frozen layers), the forward pass under a `precision::Cast`
//! policy, analytic FLOP counts, and saving parameters as safetensors.
//! Must not: train, measure or evaluate (that is `train`).

mod cnn;
mod mlp;
mod params;
pub mod resnet;
pub mod size;
pub mod transformer;

pub use params::{in_layer, read_buffer, write_buffer, Buffer, ParamStore, SeededRng, WeightInfo};

use crate::engine::precision::Cast;
use crate::spec::task::ModelSpec;
use candle_core::{Device, Result, Tensor};

/// A reference model: logits from inputs.
pub trait RefModel {
    /// Forward pass in f32. `train` toggles training-only behaviour: dropout (the GPT) and batch
    /// statistics with a running-statistics update (the ResNet's batch norm).
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_cast(x, train, &Cast::f32())
    }
    /// Forward pass with GEMMs, convolutions and f32-only ops dispatched through `cast`
    /// (mixed precision); the logits come back in f32.
    fn forward_cast(&self, x: &Tensor, train: bool, cast: &Cast) -> Result<Tensor>;
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

/// A model with seeded random initial weights.
pub fn build(
    spec: &ModelSpec,
    input: InputShape,
    classes: usize,
    rng: &mut SeededRng,
    device: &Device,
) -> Result<Box<dyn RefModel>> {
    build_with(spec, input, classes, ParamStore::default(), rng, device)
}

/// A model whose parameters come from `params` (see `ParamStore::from_tensors`); given tensors
/// the model does not use are an error, so a checkpoint of another architecture never loads.
pub fn build_with(
    spec: &ModelSpec,
    input: InputShape,
    classes: usize,
    params: ParamStore,
    rng: &mut SeededRng,
    device: &Device,
) -> Result<Box<dyn RefModel>> {
    let m = build_inner(spec, input, classes, params, rng, device)?;
    let unused = m.params().unused_given();
    if !unused.is_empty() {
        candle_core::bail!(
            "the given weights have parameters the model lacks: {}",
            unused.join(", ")
        );
    }
    Ok(m)
}

fn build_inner(
    spec: &ModelSpec,
    input: InputShape,
    classes: usize,
    params: ParamStore,
    rng: &mut SeededRng,
    device: &Device,
) -> Result<Box<dyn RefModel>> {
    match (spec, input) {
        (ModelSpec::Mlp { hidden }, InputShape::Image { c, h, w }) => Ok(Box::new(mlp::Mlp::new(
            c * h * w,
            hidden,
            classes,
            params,
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
            params,
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
            transformer::Config::classic(vocab, *context, *d_model, *heads, *layers, *ff_mult),
            params,
            rng,
            device,
        )?)),
        (
            ModelSpec::Gpt {
                context,
                d_model,
                heads,
                layers,
                ff_mult,
                dropout,
                kept_heads,
                ff_hidden,
            },
            InputShape::Tokens { vocab, .. },
        ) => Ok(Box::new(transformer::CharTransformer::new(
            transformer::Config {
                vocab,
                context: *context,
                d_model: *d_model,
                heads: *heads,
                layers: *layers,
                style: transformer::Style::Gpt,
                dropout: *dropout,
                kept_heads: kept_heads.unwrap_or(*heads),
                ff_hidden: ff_hidden.unwrap_or(ff_mult * d_model),
            },
            params,
            rng,
            device,
        )?)),
        (
            ModelSpec::Resnet {
                channels,
                blocks,
                inner,
            },
            InputShape::Image { c, h, w },
        ) => Ok(Box::new(resnet::Resnet::new(
            (c, h, w),
            resnet::Config {
                channels: *channels,
                blocks: *blocks,
                inner: inner.unwrap_or(*channels),
            },
            classes,
            params,
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    /// Every parameter of every reference model receives a non-zero gradient from the loss.
    /// Catches ops that silently drop gradients (candle-nn's fused softmax and layer norm).
    #[test]
    fn every_parameter_gets_a_gradient() {
        let dev = Device::Cpu;
        let cases: Vec<(ModelSpec, InputShape, Tensor)> = vec![
            (
                ModelSpec::Mlp { hidden: vec![16] },
                InputShape::Image { c: 1, h: 8, w: 8 },
                Tensor::rand(0f32, 1., (4, 1, 8, 8), &dev).unwrap(),
            ),
            (
                ModelSpec::Cnn {
                    channels: [4, 8],
                    kernel: 3,
                    hidden: 16,
                },
                InputShape::Image { c: 1, h: 8, w: 8 },
                Tensor::rand(0f32, 1., (4, 1, 8, 8), &dev).unwrap(),
            ),
            (
                ModelSpec::CharTransformer {
                    context: 8,
                    d_model: 16,
                    heads: 2,
                    layers: 2,
                    ff_mult: 2,
                },
                InputShape::Tokens {
                    context: 8,
                    vocab: 10,
                },
                Tensor::from_vec((0..32u32).map(|i| (i * 7) % 10).collect(), (4, 8), &dev).unwrap(),
            ),
            (
                ModelSpec::Gpt {
                    context: 8,
                    d_model: 16,
                    heads: 2,
                    layers: 2,
                    ff_mult: 2,
                    dropout: 0.1,
                    kept_heads: None,
                    ff_hidden: None,
                },
                InputShape::Tokens {
                    context: 8,
                    vocab: 10,
                },
                Tensor::from_vec((0..32u32).map(|i| (i * 7) % 10).collect(), (4, 8), &dev).unwrap(),
            ),
            (
                ModelSpec::Resnet {
                    channels: [4, 8, 8],
                    blocks: 1,
                    inner: None,
                },
                InputShape::Image { c: 1, h: 8, w: 8 },
                Tensor::rand(0f32, 1., (4, 1, 8, 8), &dev).unwrap(),
            ),
        ];
        for (spec, input, x) in cases {
            let m = build(&spec, input, 10, &mut SeededRng::new(1, 0), &dev).unwrap();
            let logits = m.forward_t(&x, true).unwrap();
            let n = logits.elem_count() / 10;
            let y = Tensor::from_vec((0..n as u32).map(|i| i % 10).collect(), n, &dev).unwrap();
            let loss =
                candle_nn::loss::cross_entropy(&logits.reshape((n, 10)).unwrap(), &y).unwrap();
            let grads = loss.backward().unwrap();
            for (name, var) in m.params().named() {
                let g = grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("{}: no gradient for {name}", spec.kind()));
                assert_eq!(g.dtype(), DType::F32);
                let norm = g
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(norm > 0.0, "{}: zero gradient for {name}", spec.kind());
            }
        }
    }
}
