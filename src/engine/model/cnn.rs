//! LeNet-class convolutional network: two conv(k, 'same' padding) -> ReLU -> maxpool(2)
//! blocks, then a hidden dense layer and the classifier.

use super::{linear_flops, ParamStore, RefModel, SeededRng};
use crate::engine::precision::Cast;
use candle_core::{Device, Result, Tensor};
// CPU kernels with their own backward (direct or im2col conv, fused ReLU + max-pool); on other
// devices and dtypes they run candle's ops. See kernels.
use crate::engine::kernels::{self, Conv2d, Linear};

pub struct Cnn {
    conv: [Conv2d; 2],
    fc: [Linear; 2],
    params: ParamStore,
    flops: u64,
}

impl Cnn {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        (c, h, w): (usize, usize, usize),
        channels: [usize; 2],
        k: usize,
        hidden: usize,
        classes: usize,
        mut params: ParamStore,
        rng: &mut SeededRng,
        dev: &Device,
    ) -> Result<Self> {
        let mut flops = 0u64;
        let (mut ci, mut hh, mut ww) = (c, h, w);
        let mut convs = Vec::new();
        for (i, &co) in channels.iter().enumerate() {
            let fan_in = ci * k * k;
            let wt = params.uniform(
                &format!("conv{i}.weight"),
                &[co, ci, k, k],
                fan_in,
                rng,
                dev,
            )?;
            let b = params.uniform(&format!("conv{i}.bias"), &[co], fan_in, rng, dev)?;
            convs.push(Conv2d::new(wt, b, k / 2, 1));
            flops += (2 * fan_in * co * hh * ww) as u64;
            params.set_uses(&format!("conv{i}.weight"), (hh * ww) as u64);
            (ci, hh, ww) = (co, hh / 2, ww / 2);
        }
        let flat = ci * hh * ww;
        let mut fcs = Vec::new();
        for (i, (fi, fo)) in [(flat, hidden), (hidden, classes)].into_iter().enumerate() {
            let wt = params.uniform(&format!("fc{i}.weight"), &[fo, fi], fi, rng, dev)?;
            let b = params.uniform(&format!("fc{i}.bias"), &[fo], fi, rng, dev)?;
            fcs.push(Linear::new(wt, Some(b)));
            flops += linear_flops(fi, fo);
        }
        let conv: [Conv2d; 2] = convs
            .try_into()
            .map_err(|_| candle_core::Error::Msg("two conv layers".into()))?;
        let fc: [Linear; 2] = fcs
            .try_into()
            .map_err(|_| candle_core::Error::Msg("two fc layers".into()))?;
        Ok(Self {
            conv,
            fc,
            params,
            flops,
        })
    }
}

impl RefModel for Cnn {
    fn forward_cast(&self, x: &Tensor, _train: bool, cast: &Cast) -> Result<Tensor> {
        let mut h = x.clone();
        for c in &self.conv {
            h = cast.activation(kernels::relu_max_pool2d(&cast.conv2d(c, &h)?)?);
        }
        let h = cast.activation(kernels::relu(
            &cast.linear(&self.fc[0], &h.flatten_from(1)?)?,
        )?);
        cast.to_f32(&cast.linear(&self.fc[1], &h)?)
    }
    fn params(&self) -> &ParamStore {
        &self.params
    }
    fn forward_flops_per_sample(&self) -> u64 {
        self.flops
    }
}
