//! He et al.'s CIFAR ResNet (2016, section 4.2), the residual CNN of the CIFAR-10 speed runs:
//! a 3x3 stem convolution, three stages of `blocks` basic blocks (3x3 conv, batch norm, ReLU,
//! 3x3 conv, batch norm, plus the shortcut, ReLU) at `channels[s]`, the first block of stages
//! 2 and 3 with stride 2 and a 1x1 projection shortcut with its own batch norm, then global
//! average pooling and a linear classifier. `channels = [16, 32, 64]`, `blocks = 3` is
//! ResNet-20. Convolutions have no bias (the batch norm after each has one).
//!
//! Batch norm: batch statistics (biased variance) in training, with the running mean and the
//! running unbiased variance updated by momentum 0.1 (PyTorch's defaults, eps 1e-5); running
//! statistics in evaluation. The running statistics are buffers of the `ParamStore`: saved in
//! checkpoints and loaded from them, never optimised or counted as parameters.
//!
//! Structured pruning narrows a block's inner width (`inner[s]`): the first convolution's
//! output channels, its batch norm and the second convolution's input channels go together,
//! so the residual stream keeps its width and no shortcut changes.

use super::{linear_flops, read_buffer, write_buffer, Buffer, ParamStore, RefModel, SeededRng};
use crate::engine::kernels::{self, BnStats, Conv2d, Linear};
use crate::engine::precision::Cast;
use candle_core::{DType, Device, Result, Tensor};

/// PyTorch's batch-norm defaults.
const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Buffer,
    running_var: Buffer,
}

impl BatchNorm {
    fn new(ps: &mut ParamStore, name: &str, c: usize, dev: &Device) -> Result<Self> {
        Ok(BatchNorm {
            weight: ps.constant(&format!("{name}.weight"), &[c], 1.0, dev)?,
            bias: ps.constant(&format!("{name}.bias"), &[c], 0.0, dev)?,
            running_mean: ps.buffer(&format!("{name}.running_mean"), &[c], 0.0, dev)?,
            running_var: ps.buffer(&format!("{name}.running_var"), &[c], 1.0, dev)?,
        })
    }

    /// Normalise (n, c, h, w) per channel, then ReLU when `relu`: batch statistics and a
    /// running-statistics update in training, the running statistics in evaluation
    /// (`kernels::batch_norm`). f32 in, f32 out.
    pub fn forward(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let (n, _, h, w) = x.dims4()?;
        if !train {
            let (rm, rv) = (
                read_buffer(&self.running_mean)?,
                read_buffer(&self.running_var)?,
            );
            let stats = BnStats::Given {
                mean: &rm,
                var: &rv,
            };
            return Ok(kernels::batch_norm(x, &self.weight, &self.bias, stats, BN_EPS, relu)?.y);
        }
        let out = kernels::batch_norm(x, &self.weight, &self.bias, BnStats::Batch, BN_EPS, relu)?;
        let Some((mean, var)) = out.batch else {
            candle_core::bail!("batch_norm: training returned no batch statistics");
        };
        let count = (n * h * w) as f64;
        let unbiased = count / (count - 1.0).max(1.0);
        let rm = read_buffer(&self.running_mean)?;
        let rv = read_buffer(&self.running_var)?;
        let new_m = ((rm * (1.0 - BN_MOMENTUM))? + (mean * BN_MOMENTUM)?)?;
        let new_v = ((rv * (1.0 - BN_MOMENTUM))? + (var * (BN_MOMENTUM * unbiased))?)?;
        write_buffer(&self.running_mean, new_m)?;
        write_buffer(&self.running_var, new_v)?;
        Ok(out.y)
    }
}

/// A convolution without bias followed by its batch norm.
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBn {
    /// conv, batch norm, and ReLU when `relu` (fused into the batch norm).
    fn forward(&self, x: &Tensor, train: bool, relu: bool, cast: &Cast) -> Result<Tensor> {
        let y = cast.conv2d(&self.conv, x)?;
        cast.f32_op("batch_norm", &y, |y| self.bn.forward(y, train, relu))
    }
}

struct Block {
    a: ConvBn,
    b: ConvBn,
    shortcut: Option<ConvBn>,
}

pub struct Resnet {
    stem: ConvBn,
    blocks: Vec<Block>,
    fc: Linear,
    params: ParamStore,
    flops: u64,
}

/// The ResNet's shape: stage widths, blocks per stage, and the blocks' inner widths.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub channels: [usize; 3],
    pub blocks: usize,
    pub inner: [usize; 3],
}

struct Builder<'a> {
    ps: &'a mut ParamStore,
    rng: &'a mut SeededRng,
    dev: &'a Device,
    flops: u64,
}

impl Builder<'_> {
    /// A k x k convolution (no bias) + batch norm on an `h x w` input; returns the layer and
    /// the output size.
    #[allow(clippy::too_many_arguments)]
    fn conv_bn(
        &mut self,
        name: &str,
        ci: usize,
        co: usize,
        k: usize,
        stride: usize,
        (h, w): (usize, usize),
    ) -> Result<(ConvBn, (usize, usize))> {
        let pad = k / 2;
        let fan_in = ci * k * k;
        let weight = self.ps.uniform(
            &format!("{name}.conv.weight"),
            &[co, ci, k, k],
            fan_in,
            self.rng,
            self.dev,
        )?;
        let (oh, ow) = (
            (h + 2 * pad - k) / stride + 1,
            (w + 2 * pad - k) / stride + 1,
        );
        self.ps
            .set_uses(&format!("{name}.conv.weight"), (oh * ow) as u64);
        self.flops += 2 * (fan_in * co * oh * ow) as u64;
        let zero_bias = Tensor::zeros(co, DType::F32, self.dev)?;
        let bn = BatchNorm::new(self.ps, &format!("{name}.bn"), co, self.dev)?;
        Ok((
            ConvBn {
                conv: Conv2d::new(weight, zero_bias, pad, stride),
                bn,
            },
            (oh, ow),
        ))
    }
}

impl Resnet {
    pub fn new(
        (c, h, w): (usize, usize, usize),
        cfg: Config,
        classes: usize,
        mut params: ParamStore,
        rng: &mut SeededRng,
        dev: &Device,
    ) -> Result<Self> {
        let mut b = Builder {
            ps: &mut params,
            rng,
            dev,
            flops: 0,
        };
        let (stem, mut hw) = b.conv_bn("stem", c, cfg.channels[0], 3, 1, (h, w))?;
        let mut ci = cfg.channels[0];
        let mut blocks = Vec::new();
        for (s, (&co, &inner)) in cfg.channels.iter().zip(&cfg.inner).enumerate() {
            for j in 0..cfg.blocks {
                let stride = if s > 0 && j == 0 { 2 } else { 1 };
                let p = format!("s{s}.b{j}");
                let (a, out) = b.conv_bn(&format!("{p}.a"), ci, inner, 3, stride, hw)?;
                let (bb, _) = b.conv_bn(&format!("{p}.b"), inner, co, 3, 1, out)?;
                let shortcut = if stride != 1 || ci != co {
                    Some(b.conv_bn(&format!("{p}.short"), ci, co, 1, stride, hw)?.0)
                } else {
                    None
                };
                blocks.push(Block { a, b: bb, shortcut });
                (ci, hw) = (co, out);
            }
        }
        let wt = b.ps.uniform("fc.weight", &[classes, ci], ci, b.rng, dev)?;
        let bias = b.ps.uniform("fc.bias", &[classes], ci, b.rng, dev)?;
        let flops = b.flops + linear_flops(ci, classes);
        Ok(Resnet {
            stem,
            blocks,
            fc: Linear::new(wt, Some(bias)),
            params,
            flops,
        })
    }
}

impl RefModel for Resnet {
    fn forward_cast(&self, x: &Tensor, train: bool, cast: &Cast) -> Result<Tensor> {
        let mut h = cast.activation(self.stem.forward(x, train, true, cast)?);
        for blk in &self.blocks {
            let a = cast.activation(blk.a.forward(&h, train, true, cast)?);
            let main = blk.b.forward(&a, train, false, cast)?;
            let short = match &blk.shortcut {
                Some(s) => s.forward(&h, train, false, cast)?,
                None => h.clone(),
            };
            h = cast.activation(kernels::add_relu(&main, &short)?);
        }
        let pooled = h.mean((2, 3))?;
        cast.to_f32(&cast.linear(&self.fc, &pooled)?)
    }
    fn params(&self) -> &ParamStore {
        &self.params
    }
    fn forward_flops_per_sample(&self) -> u64 {
        self.flops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn tiny(params: ParamStore) -> Resnet {
        let cfg = Config {
            channels: [4, 8, 8],
            blocks: 1,
            inner: [4, 8, 8],
        };
        Resnet::new(
            (1, 8, 8),
            cfg,
            10,
            params,
            &mut SeededRng::new(5, 0),
            &Device::Cpu,
        )
        .unwrap()
    }

    fn batch(seed: u64) -> Tensor {
        let mut rng = SeededRng::new(seed, 3);
        let v: Vec<f32> = (0..6 * 64).map(|_| rng.normal() * 2.0 + 1.0).collect();
        Tensor::from_vec(v, (6, 1, 8, 8), &Device::Cpu).unwrap()
    }

    fn buffer(m: &Resnet, name: &str) -> Vec<f32> {
        let b = m.params().buffers().unwrap();
        b.into_iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .to_vec1::<f32>()
            .unwrap()
    }

    /// Training normalises with the batch's statistics (per channel mean 0, variance 1 before
    /// the affine), updates the running statistics by momentum 0.1 with the unbiased variance;
    /// evaluation uses the running statistics and changes nothing.
    #[test]
    fn batch_norm_train_and_eval() {
        let dev = Device::Cpu;
        let mut ps = ParamStore::default();
        let bn = BatchNorm::new(&mut ps, "bn", 2, &dev).unwrap();
        let x = (batch(1).reshape((3, 2, 8, 8)).unwrap() * 3.0).unwrap();
        let y = bn.forward(&x, true, false).unwrap();
        let mean = y.mean_keepdim((0, 2, 3)).unwrap().flatten_all().unwrap();
        let var = y
            .sqr()
            .unwrap()
            .mean_keepdim((0, 2, 3))
            .unwrap()
            .flatten_all()
            .unwrap();
        for (m, v) in mean
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .zip(var.to_vec1::<f32>().unwrap())
        {
            assert!(m.abs() < 1e-5, "{m}");
            assert!((v - 1.0).abs() < 1e-3, "{v}");
        }
        // Running statistics: 0.9 * init + 0.1 * batch (unbiased variance, n = 192).
        let xm = x.mean_keepdim((0, 2, 3)).unwrap();
        let xv = x
            .broadcast_sub(&xm)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_keepdim((0, 2, 3))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let xm = xm.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let rm = read_buffer(&bn.running_mean)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let rv = read_buffer(&bn.running_var)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for k in 0..2 {
            assert!((rm[k] - 0.1 * xm[k]).abs() < 1e-5);
            let want = 0.9 + 0.1 * xv[k] * 192.0 / 191.0;
            assert!((rv[k] - want).abs() < 1e-4, "{} vs {want}", rv[k]);
        }
        // Eval: (x - running_mean) / sqrt(running_var + eps), and no update.
        let e = bn.forward(&x, false, false).unwrap();
        let first = e.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
        let x0 = x.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
        assert!((first - (x0 - rm[0]) / (rv[0] + 1e-5).sqrt()).abs() < 1e-4);
        assert_eq!(
            read_buffer(&bn.running_mean)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            rm
        );
    }

    /// The running statistics are saved with the weights and loaded back: the reloaded model's
    /// eval logits equal the trained model's.
    #[test]
    fn running_statistics_round_trip_through_a_checkpoint() {
        let m = tiny(ParamStore::default());
        for s in 0..3 {
            m.forward_t(&batch(s), true).unwrap();
        }
        assert_ne!(buffer(&m, "stem.bn.running_var"), vec![1.0; 4]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        m.params().save_safetensors(&path).unwrap();
        let given: HashMap<String, Tensor> =
            candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        assert!(given.contains_key("s1.b0.short.bn.running_mean"));
        let back = tiny(ParamStore::from_tensors(given, vec![]));
        assert!(back.params().unused_given().is_empty());
        let x = batch(9);
        let a = m.forward_t(&x, false).unwrap();
        let b = back.forward_t(&x, false).unwrap();
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
        // Running statistics are state, not parameters.
        let n_buffers: usize = m
            .params()
            .buffers()
            .unwrap()
            .iter()
            .map(|(_, t)| t.elem_count())
            .sum();
        assert!(n_buffers > 0);
        let n_params: usize = m.params().all().iter().map(|(_, t)| t.elem_count()).sum();
        assert_eq!(m.params().count(), n_params);
    }

    /// The whole model's gradients, every parameter, with the fused batch-norm kernel and with
    /// candle's composed ops (`kernels::with_composed`): at this size (384 values per
    /// channel) both are accurate and agree to 1e-5 of each tensor's largest gradient.
    #[test]
    fn fused_and_composed_batch_norm_give_the_same_gradients() {
        let grads = || {
            let m = tiny(ParamStore::default());
            let logits = m.forward_t(&batch(4), true).unwrap();
            let r = crate::engine::kernels::tests_util::rand(logits.dims(), 5);
            let g = (logits * r).unwrap().sum_all().unwrap().backward().unwrap();
            m.params()
                .all()
                .into_iter()
                .map(|(name, t)| (name, g.get(&t).unwrap().flatten_all().unwrap()))
                .collect::<Vec<_>>()
        };
        let fused = grads();
        let composed = kernels::with_composed(grads);
        assert_eq!(fused.len(), composed.len());
        let max_abs = |t: &Tensor| {
            let m = t.abs().unwrap().max_all().unwrap();
            m.to_scalar::<f32>().unwrap()
        };
        for ((name, f), (_, c)) in fused.iter().zip(&composed) {
            let scale = max_abs(c);
            let worst = max_abs(&(f - c).unwrap());
            assert!(
                worst <= 1e-5 * scale,
                "{name}: {worst:e} vs scale {scale:e}"
            );
        }
    }

    #[test]
    fn shapes_and_flops_of_resnet20_on_28x28() {
        let cfg = Config {
            channels: [16, 32, 64],
            blocks: 3,
            inner: [16, 32, 64],
        };
        let m = Resnet::new(
            (1, 28, 28),
            cfg,
            10,
            ParamStore::default(),
            &mut SeededRng::new(1, 0),
            &Device::Cpu,
        )
        .unwrap();
        let x = Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(m.forward_t(&x, false).unwrap().dims(), &[2, 10]);
        // ResNet-20's 0.27 M parameters (He et al. report 0.27 M on CIFAR; one input channel
        // here instead of three).
        let n = m.params().count();
        assert!((265_000..275_000).contains(&n), "{n}");
        // 2 x 31 M multiply-adds per 28x28 image (41 M on CIFAR's 32x32, times (28/32)^2).
        let f = m.forward_flops_per_sample();
        assert!((60_000_000..64_000_000).contains(&f), "{f}");
    }
}
