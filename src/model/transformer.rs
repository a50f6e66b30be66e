//! A small decoder-only character transformer: token + learned position embeddings, pre-norm
//! blocks of causal multi-head attention and a GELU MLP, a final norm and a vocabulary head.
//!
//! Only differentiable ops here: candle-nn 0.11's fused `ops::softmax_last_dim` and
//! `ops::layer_norm` (which `LayerNorm::forward` calls on contiguous input) are recorded with
//! `apply_op*_no_bwd`, so no gradient passes through them. Used in training they silently
//! freeze everything below them: the model then learns only its head on random features and
//! stalls at the unigram loss. `model::tests::every_parameter_gets_a_gradient` guards this.

use super::{linear_flops, ParamStore, RefModel, SeededRng};
use crate::kernels::Linear;
use crate::precision::Cast;
use candle_core::{Device, Module, Result, Tensor, D};
use candle_nn::Embedding;

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub vocab: usize,
    pub context: usize,
    pub d_model: usize,
    pub heads: usize,
    pub layers: usize,
    pub ff_mult: usize,
}

struct Block {
    ln1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    ln2: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
}

pub struct CharTransformer {
    cfg: Config,
    tok: Embedding,
    pos: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    head: Linear,
    /// (context, context) additive mask: 0 on and below the diagonal, -inf above.
    mask: Tensor,
    params: ParamStore,
}

fn linear(
    ps: &mut ParamStore,
    name: &str,
    fi: usize,
    fo: usize,
    rng: &mut SeededRng,
    dev: &Device,
) -> Result<Linear> {
    let w = ps.uniform(&format!("{name}.weight"), &[fo, fi], fi, rng, dev)?;
    let b = ps.uniform(&format!("{name}.bias"), &[fo], fi, rng, dev)?;
    Ok(Linear::new(w, Some(b)))
}

/// Layer norm built from differentiable tensor ops (see the module note).
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, 1e-5)
    }
}

fn layer_norm(ps: &mut ParamStore, name: &str, d: usize, dev: &Device) -> Result<LayerNorm> {
    let weight = ps.constant(&format!("{name}.weight"), &[d], 1.0, dev)?;
    let bias = ps.constant(&format!("{name}.bias"), &[d], 0.0, dev)?;
    Ok(LayerNorm { weight, bias })
}

impl CharTransformer {
    pub fn new(cfg: Config, mut ps: ParamStore, rng: &mut SeededRng, dev: &Device) -> Result<Self> {
        let d = cfg.d_model;
        // Embeddings: U(-1/sqrt(d), 1/sqrt(d)) keeps the residual stream at unit scale.
        let tok = Embedding::new(ps.uniform("tok.weight", &[cfg.vocab, d], d, rng, dev)?, d);
        let pos = ps.uniform("pos.weight", &[cfg.context, d], d, rng, dev)?;
        let mut blocks = Vec::new();
        for i in 0..cfg.layers {
            let p = format!("block{i}");
            blocks.push(Block {
                ln1: layer_norm(&mut ps, &format!("{p}.ln1"), d, dev)?,
                qkv: linear(&mut ps, &format!("{p}.qkv"), d, 3 * d, rng, dev)?,
                proj: linear(&mut ps, &format!("{p}.proj"), d, d, rng, dev)?,
                ln2: layer_norm(&mut ps, &format!("{p}.ln2"), d, dev)?,
                ff_in: linear(&mut ps, &format!("{p}.ff_in"), d, cfg.ff_mult * d, rng, dev)?,
                ff_out: linear(
                    &mut ps,
                    &format!("{p}.ff_out"),
                    cfg.ff_mult * d,
                    d,
                    rng,
                    dev,
                )?,
            });
        }
        let ln_f = layer_norm(&mut ps, "ln_f", d, dev)?;
        let head = linear(&mut ps, "head", d, cfg.vocab, rng, dev)?;
        // FLOP bookkeeping: every linear weight works once per token of the window; the
        // embedding tables are lookups.
        for w in ps.weights() {
            let uses = if w.name.starts_with("tok.") || w.name.starts_with("pos.") {
                0
            } else {
                cfg.context as u64
            };
            ps.set_uses(&w.name, uses);
        }
        let t = cfg.context;
        let mask: Vec<f32> = (0..t * t)
            .map(|k| {
                if k % t > k / t {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), dev)?;
        Ok(Self {
            cfg,
            tok,
            pos,
            blocks,
            ln_f,
            head,
            mask,
            params: ps,
        })
    }

    fn attention(&self, b: &Block, x: &Tensor, cast: &Cast) -> Result<Tensor> {
        let (bsz, t, d) = x.dims3()?;
        let h = self.cfg.heads;
        let hd = d / h;
        let qkv = cast.linear(&b.qkv, x)?.reshape((bsz, t, 3, h, hd))?;
        let part = |i: usize| -> Result<Tensor> {
            qkv.narrow(2, i, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let scale = 1.0 / (hd as f64).sqrt();
        let att = (cast.matmul(&q, &k.t()?)? * scale)?;
        let mask = self.mask.narrow(0, 0, t)?.narrow(1, 0, t)?;
        // Masking and softmax in f32 (autocast's rule: exp overflows in half precision).
        let att = cast.f32_op("softmax", &att, |a| {
            candle_nn::ops::softmax(&a.broadcast_add(&mask)?, D::Minus1)
        })?;
        let y = cast
            .matmul(&att, &v)?
            .transpose(1, 2)?
            .reshape((bsz, t, d))?;
        cast.to_f32(&cast.linear(&b.proj, &y)?)
    }
}

impl RefModel for CharTransformer {
    fn forward_cast(&self, x: &Tensor, _train: bool, cast: &Cast) -> Result<Tensor> {
        let (_, t) = x.dims2()?;
        let pos = self.pos.narrow(0, 0, t)?;
        let mut h = self.tok.forward(x)?.broadcast_add(&pos)?;
        for b in &self.blocks {
            let a = cast.f32_op("layer_norm", &h, |h| b.ln1.forward(h))?;
            h = (&h + self.attention(b, &a, cast)?)?;
            let n = cast.f32_op("layer_norm", &h, |h| b.ln2.forward(h))?;
            let ff = cast.activation(cast.linear(&b.ff_in, &n)?.gelu_erf()?);
            h = (h + cast.to_f32(&cast.linear(&b.ff_out, &ff)?)?)?;
        }
        let n = cast.f32_op("layer_norm", &h, |h| self.ln_f.forward(h))?;
        cast.to_f32(&cast.linear(&self.head, &n)?)
    }
    fn params(&self) -> &ParamStore {
        &self.params
    }
    fn forward_flops_per_sample(&self) -> u64 {
        let c = self.cfg;
        let (d, t) = (c.d_model, c.context);
        let per_token = linear_flops(d, 3 * d)
            + linear_flops(d, d)
            + linear_flops(d, c.ff_mult * d)
            + linear_flops(c.ff_mult * d, d);
        // Attention scores and weighted sum: 2 * t * d each per token (full t, masked half
        // still computed by the dense kernels).
        let attn = 4 * (t * d) as u64;
        (c.layers as u64) * (t as u64) * (per_token + attn) + (t as u64) * linear_flops(d, c.vocab)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_no_peeking() {
        let dev = Device::Cpu;
        let cfg = Config {
            vocab: 11,
            context: 8,
            d_model: 16,
            heads: 4,
            layers: 2,
            ff_mult: 2,
        };
        let m = CharTransformer::new(cfg, ParamStore::default(), &mut SeededRng::new(3, 0), &dev)
            .unwrap();
        let a = Tensor::new(&[[1u32, 2, 3, 4, 5, 6, 7, 8]], &dev).unwrap();
        let b = Tensor::new(&[[1u32, 2, 3, 4, 9, 9, 9, 9]], &dev).unwrap();
        let la = m.forward_t(&a, false).unwrap();
        let lb = m.forward_t(&b, false).unwrap();
        assert_eq!(la.dims(), &[1, 8, 11]);
        // Positions 0..4 see the same prefix: identical logits; position 4 differs.
        let diff = (la - lb)
            .unwrap()
            .abs()
            .unwrap()
            .sum(2)
            .unwrap()
            .squeeze(0)
            .unwrap();
        let diff = diff.to_vec1::<f32>().unwrap();
        assert!(diff[..4].iter().all(|d| *d < 1e-5), "{diff:?}");
        assert!(diff[4] > 1e-4, "{diff:?}");
    }
}
