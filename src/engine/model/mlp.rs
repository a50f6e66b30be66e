//! Multi-layer perceptron on flattened inputs.

use super::{linear_flops, ParamStore, RefModel, SeededRng};
use crate::engine::precision::Cast;
use candle_core::{Device, Result, Tensor};
// The CPU-fused dense layer (same API as candle_nn::Linear; see kernels).
use crate::engine::kernels::{self, Linear};

pub struct Mlp {
    layers: Vec<Linear>,
    params: ParamStore,
    flops: u64,
}

impl Mlp {
    pub fn new(
        inputs: usize,
        hidden: &[usize],
        classes: usize,
        mut params: ParamStore,
        rng: &mut SeededRng,
        dev: &Device,
    ) -> Result<Self> {
        let mut layers = Vec::new();
        let mut flops = 0;
        let widths: Vec<usize> = std::iter::once(inputs)
            .chain(hidden.iter().copied())
            .chain(std::iter::once(classes))
            .collect();
        for (i, w) in widths.windows(2).enumerate() {
            let (fi, fo) = (w[0], w[1]);
            let weight = params.uniform(&format!("fc{i}.weight"), &[fo, fi], fi, rng, dev)?;
            let bias = params.uniform(&format!("fc{i}.bias"), &[fo], fi, rng, dev)?;
            layers.push(Linear::new(weight, Some(bias)));
            flops += linear_flops(fi, fo);
        }
        Ok(Self {
            layers,
            params,
            flops,
        })
    }
}

impl RefModel for Mlp {
    fn forward_cast(&self, x: &Tensor, _train: bool, cast: &Cast) -> Result<Tensor> {
        let mut h = x.flatten_from(1)?;
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            h = cast.linear(l, &h)?;
            if i < last {
                h = cast.activation(kernels::relu(&h)?);
            }
        }
        cast.to_f32(&h)
    }
    fn params(&self) -> &ParamStore {
        &self.params
    }
    fn forward_flops_per_sample(&self) -> u64 {
        self.flops
    }
}
