//! How big a model will be, from its spec alone (nothing is allocated): the check that refuses
//! a task whose model cannot fit in memory before anything is written, instead of an aborted
//! allocation mid-run.
//!
//! Owns: a lower bound on a model's trainable parameters (its weight matrices, convolution
//! kernels and embedding tables; biases and norms left out) and the training memory that
//! bound implies. Must not: build a model or read data.

use super::InputShape;
use crate::spec::task::ModelSpec;

/// Bytes per trainable parameter in training with AdamW in f32: the weight, its gradient and
/// the optimiser's two moments.
pub const TRAIN_BYTES_PER_PARAMETER: u128 = 16;

/// At least this many trainable parameters (the weights of every matrix, kernel and
/// embedding; biases and norms are left out, so it is a lower bound). Saturates instead of
/// overflowing, so an absurd spec gives a huge number, never a panic.
pub fn parameters_at_least(spec: &ModelSpec, input: InputShape, classes: usize) -> u128 {
    let m = |a: usize, b: usize| (a as u128).saturating_mul(b as u128);
    let sum = |terms: &[u128]| terms.iter().fold(0u128, |s, t| s.saturating_add(*t));
    match (spec, input) {
        (ModelSpec::Mlp { hidden }, InputShape::Image { c, h, w }) => {
            let inputs = c.saturating_mul(h).saturating_mul(w);
            let dims: Vec<usize> = std::iter::once(inputs)
                .chain(hidden.iter().copied())
                .chain(std::iter::once(classes))
                .collect();
            sum(&dims.windows(2).map(|p| m(p[0], p[1])).collect::<Vec<_>>())
        }
        (
            ModelSpec::Cnn {
                channels: [c0, c1],
                kernel,
                hidden,
            },
            InputShape::Image { c, h, w },
        ) => {
            let k2 = kernel.saturating_mul(*kernel);
            // 'same' convolutions, each followed by a 2x2 max-pool.
            let flat = c1.saturating_mul(h / 4).saturating_mul(w / 4);
            sum(&[
                m(c, *c0).saturating_mul(k2 as u128),
                m(*c0, *c1).saturating_mul(k2 as u128),
                m(flat, *hidden),
                m(*hidden, classes),
            ])
        }
        (
            ModelSpec::Resnet {
                channels,
                blocks,
                inner,
            },
            InputShape::Image { c, .. },
        ) => {
            let inner = inner.unwrap_or(*channels);
            let mut terms = vec![m(c, channels[0]).saturating_mul(9)];
            let mut prev = channels[0];
            for (stage, (&width, &mid)) in channels.iter().zip(inner.iter()).enumerate() {
                for b in 0..*blocks {
                    let from = if b == 0 { prev } else { width };
                    terms.push(m(from, mid).saturating_mul(9));
                    terms.push(m(mid, width).saturating_mul(9));
                    if b == 0 && (stage > 0 || from != width) {
                        terms.push(m(from, width));
                    }
                }
                prev = width;
            }
            terms.push(m(channels[2], classes));
            sum(&terms)
        }
        (
            ModelSpec::CharTransformer {
                context,
                d_model,
                layers,
                ff_mult,
                ..
            },
            InputShape::Tokens { vocab, .. },
        ) => {
            let d = *d_model;
            let per_layer = sum(&[
                m(d, d).saturating_mul(4),
                m(d, d.saturating_mul(*ff_mult)).saturating_mul(2),
            ]);
            sum(&[
                m(vocab, d),
                m(*context, d),
                per_layer.saturating_mul(*layers as u128),
                m(d, vocab),
            ])
        }
        (
            ModelSpec::Gpt {
                context,
                d_model,
                heads,
                layers,
                ff_mult,
                kept_heads,
                ff_hidden,
                ..
            },
            InputShape::Tokens { vocab, .. },
        ) => {
            let d = *d_model;
            let kept = kept_heads.unwrap_or(*heads).min(*heads).max(1);
            let attn_width = d / (*heads).max(1) * kept;
            let ff = ff_hidden.unwrap_or(d.saturating_mul(*ff_mult));
            let per_layer = sum(&[
                m(d, attn_width).saturating_mul(4),
                m(d, ff).saturating_mul(2),
            ]);
            // The token table is also the head (tied).
            sum(&[
                m(vocab, d),
                m(*context, d),
                per_layer.saturating_mul(*layers as u128),
            ])
        }
        // A model that does not eat this input is refused elsewhere, with its own message.
        _ => 0,
    }
}

/// At least this many bytes to train the model (`TRAIN_BYTES_PER_PARAMETER` per parameter of
/// `parameters_at_least`; activations come on top).
pub fn training_bytes_at_least(spec: &ModelSpec, input: InputShape, classes: usize) -> u128 {
    parameters_at_least(spec, input, classes).saturating_mul(TRAIN_BYTES_PER_PARAMETER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::model::{build, SeededRng};
    use candle_core::Device;

    /// For every shipped task, the bound is at most the built model's trainable parameters
    /// and within 10 % of them (biases and norms are a small share).
    #[test]
    fn the_bound_is_a_close_lower_bound_for_every_shipped_task() {
        let tasks = crate::spec::task::load_all(&crate::spec::task::default_models_dir()).unwrap();
        let mut checked = 0;
        for t in tasks {
            let input = match t.model.context() {
                Some(context) => InputShape::Tokens {
                    context,
                    vocab: 256,
                },
                None => match t.dataset {
                    crate::data::DatasetKind::Cifar10 => InputShape::Image { c: 3, h: 32, w: 32 },
                    crate::data::DatasetKind::Digits => InputShape::Image { c: 1, h: 8, w: 8 },
                    _ => InputShape::Image { c: 1, h: 28, w: 28 },
                },
            };
            let classes = match input {
                InputShape::Tokens { vocab, .. } => vocab,
                InputShape::Image { .. } => 10,
            };
            let model = build(
                &t.model,
                input,
                classes,
                &mut SeededRng::new(1, 0),
                &Device::Cpu,
            )
            .unwrap();
            let actual = model
                .params()
                .vars()
                .iter()
                .map(|v| v.as_tensor().elem_count())
                .sum::<usize>() as u128;
            let bound = parameters_at_least(&t.model, input, classes);
            assert!(
                bound <= actual,
                "{}: bound {bound} > actual {actual}",
                t.name
            );
            assert!(
                bound as f64 >= 0.9 * actual as f64,
                "{}: bound {bound} far under actual {actual}",
                t.name
            );
            checked += 1;
        }
        assert!(checked >= 8, "{checked} tasks");
    }

    #[test]
    fn an_absurd_model_saturates_instead_of_overflowing() {
        let spec = ModelSpec::Mlp {
            hidden: vec![usize::MAX, usize::MAX],
        };
        let b = training_bytes_at_least(&spec, InputShape::Image { c: 1, h: 8, w: 8 }, 10);
        assert_eq!(b, u128::MAX);
        let spec = ModelSpec::Mlp {
            hidden: vec![100_000_000],
        };
        // The finding of issue 20: 64 inputs x 10^8 units is 25.6 GB of weights alone.
        let p = parameters_at_least(&spec, InputShape::Image { c: 1, h: 8, w: 8 }, 10);
        assert_eq!(p, 64 * 100_000_000 + 100_000_000 * 10);
    }
}
