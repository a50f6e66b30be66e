//! One optimizer step's arithmetic: the AdamW of a task, the loss, gradients (mixed precision
//! and loss scaling through `precision`), gradient clipping, augmentation of a batch, and
//! random batches for the throughput track.
//!
//! Owns: what one step computes.
//! Must not: decide when to step, evaluate or stop (`train.rs`'s session does).

use crate::engine::model::{InputShape, RefModel, SeededRng};
use crate::engine::optim::FusedAdamW;
use crate::engine::precision::Cast;
use crate::spec::task::{OptimizerSpec, TaskSpec};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Optimizer, ParamsAdamW};

/// AdamW over every trainable parameter of `model`, with the task's hyperparameters (frozen
/// parameters are constants, not `Var`s, so they are not in it). Fused and in place (`optim`;
/// the same update as candle-nn's `AdamW`).
pub fn optimizer(spec: &TaskSpec, model: &dyn RefModel) -> candle_core::Result<FusedAdamW> {
    let OptimizerSpec::Adamw {
        lr,
        beta1,
        beta2,
        eps,
        weight_decay,
        decay,
        ..
    } = spec.optimizer;
    let opt = FusedAdamW::new(
        model.params().vars(),
        ParamsAdamW {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        },
    )?;
    Ok(match decay {
        crate::spec::task::Decay::All => opt,
        crate::spec::task::Decay::Matrices => {
            let vectors: Vec<candle_core::Var> = model
                .params()
                .vars()
                .into_iter()
                .filter(|v| v.rank() < 2)
                .collect();
            opt.without_decay_on(&vectors)
        }
    })
}

/// One f32 optimizer step on one batch; returns the (device-resident) loss.
pub fn train_step(
    model: &dyn RefModel,
    opt: &mut impl Optimizer,
    x: &Tensor,
    y: &Tensor,
) -> candle_core::Result<Tensor> {
    let (loss, grads) = grads_of(model, &Cast::f32(), None, x, y)?;
    opt.step(&grads)?;
    Ok(loss)
}

/// Cross-entropy of the model's f32 logits; the forward pass follows `cast`.
pub fn loss_of(
    model: &dyn RefModel,
    cast: &Cast,
    x: &Tensor,
    y: &Tensor,
) -> candle_core::Result<Tensor> {
    let logits = model.forward_cast(x, true, cast)?.to_dtype(DType::F32)?;
    let classes = logits.dim(D::Minus1)?;
    let logits = logits.reshape(((), classes))?;
    crate::engine::kernels::cross_entropy(&logits, &y.flatten_all()?)
}

/// Forward (under `cast`), f32 loss, backward of the loss times `scale` (dynamic loss
/// scaling), and the gradients divided by `scale` again: what the optimizer steps with. The
/// gradients of the f32 master `Var`s are f32 whatever the forward dtype (`to_dtype` is an
/// autograd op). Returns the unscaled loss.
pub fn grads_of(
    model: &dyn RefModel,
    cast: &Cast,
    scale: Option<f64>,
    x: &Tensor,
    y: &Tensor,
) -> candle_core::Result<(Tensor, GradStore)> {
    let loss = loss_of(model, cast, x, y)?;
    let Some(scale) = scale else {
        let grads = loss.backward()?;
        return Ok((loss, grads));
    };
    let mut grads = (&loss * scale)?.backward()?;
    for (_, var) in model.params().named() {
        if let Some(g) = grads.remove(var.as_tensor()) {
            grads.insert(var.as_tensor(), (g * (1.0 / scale))?);
        }
    }
    Ok((loss, grads))
}

/// Scale every gradient by min(1, max_norm / (||g|| + 1e-6)), ||g|| the global L2 norm over
/// all of `model`'s gradients (PyTorch's `clip_grad_norm_`). The norm and the factor stay on
/// the device: no host read per step.
pub fn clip_grad_norm(
    model: &dyn RefModel,
    mut grads: GradStore,
    max_norm: f64,
) -> candle_core::Result<GradStore> {
    let mut total: Option<Tensor> = None;
    for (_, var) in model.params().named() {
        if let Some(g) = grads.get(var.as_tensor()) {
            let s = g.to_dtype(DType::F32)?.sqr()?.sum_all()?;
            total = Some(match total {
                Some(t) => (t + s)?,
                None => s,
            });
        }
    }
    let Some(total) = total else {
        return Ok(grads);
    };
    let factor = (total.sqrt()? + 1e-6)?
        .recip()?
        .affine(max_norm, 0.0)?
        .clamp(0f32, 1f32)?;
    for (_, var) in model.params().named() {
        if let Some(g) = grads.remove(var.as_tensor()) {
            let scaled = g.broadcast_mul(&factor.to_dtype(g.dtype())?)?;
            grads.insert(var.as_tensor(), scaled);
        }
    }
    Ok(grads)
}

/// A training batch (n, c, h, w), already standardised, with the task's augmentation: per
/// sample a crop of the image padded by `augment_crop_pad` pixels of `pad_value` (offsets
/// uniform in 0..=2 pad) and a horizontal flip with probability 1/2, drawn from `rng`. Built
/// as one gather with host-drawn indices, so it runs on any device with one upload.
pub fn augment(
    x: &Tensor,
    spec: &crate::spec::task::TrainSpec,
    pad_value: f32,
    rng: &mut SeededRng,
) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let pad = spec.augment_crop_pad.unwrap_or(0) as isize;
    let plane = c * h * w;
    let outside = plane as u32;
    let mut idx = Vec::with_capacity(n * plane);
    for _ in 0..n {
        let (dy, dx) = if pad > 0 {
            (
                rng.below(2 * pad as usize + 1) as isize - pad,
                rng.below(2 * pad as usize + 1) as isize - pad,
            )
        } else {
            (0, 0)
        };
        let flip = spec.augment_hflip && rng.below(2) == 1;
        for ch in 0..c {
            for i in 0..h as isize {
                for j in 0..w as isize {
                    let jj = if flip { w as isize - 1 - j } else { j };
                    let (r, col) = (i + dy, jj + dx);
                    idx.push(
                        if r < 0 || col < 0 || r >= h as isize || col >= w as isize {
                            outside
                        } else {
                            (ch * h * w) as u32 + (r as usize * w) as u32 + col as u32
                        },
                    );
                }
            }
        }
    }
    let flat = x.reshape((n, plane))?;
    let padded = Tensor::cat(
        &[
            &flat,
            &Tensor::full(pad_value, (n, 1), x.device())?.to_dtype(x.dtype())?,
        ],
        1,
    )?;
    let idx = Tensor::from_vec(idx, (n, plane), x.device())?;
    padded.gather(&idx, 1)?.reshape((n, c, h, w))
}

/// True when every gradient of `model` is finite (one host read).
pub fn grads_finite(model: &dyn RefModel, grads: &GradStore) -> candle_core::Result<bool> {
    let mut total: Option<Tensor> = None;
    for (_, var) in model.params().named() {
        if let Some(g) = grads.get(var.as_tensor()) {
            let s = g.to_dtype(DType::F32)?.abs()?.sum_all()?;
            total = Some(match total {
                Some(t) => (t + s)?,
                None => s,
            });
        }
    }
    Ok(match total {
        Some(t) => t.to_scalar::<f32>()?.is_finite(),
        None => true,
    })
}

/// `n` random inputs of the model's input shape (standard normal pixels, uniform tokens) and
/// uniform random labels, drawn from the seeded host RNG: warm-up batches and the throughput
/// track.
pub fn random_batch(
    input: InputShape,
    classes: usize,
    n: usize,
    rng: &mut SeededRng,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    match input {
        InputShape::Image { c, h, w } => {
            let x: Vec<f32> = (0..n * c * h * w).map(|_| rng.normal()).collect();
            let y: Vec<u32> = (0..n).map(|_| rng.below(classes) as u32).collect();
            Ok((
                Tensor::from_vec(x, (n, c, h, w), device)?,
                Tensor::from_vec(y, n, device)?,
            ))
        }
        InputShape::Tokens { context, vocab } => {
            let x: Vec<u32> = (0..n * context).map(|_| rng.below(vocab) as u32).collect();
            let y: Vec<u32> = (0..n * context).map(|_| rng.below(vocab) as u32).collect();
            Ok((
                Tensor::from_vec(x, (n, context), device)?,
                Tensor::from_vec(y, (n, context), device)?,
            ))
        }
    }
}
