//! A small decoder-only character transformer: token + learned position embeddings, pre-norm
//! blocks of causal multi-head attention and a GELU MLP, a final norm and a vocabulary head.
//! Two styles share the code: `Classic` (text-charlm: biases everywhere, an untied head,
//! PyTorch's default uniform init) and `Gpt` (nanoGPT's model.py with `bias = False`: no
//! biases, norms without bias, the head tied to the token embedding, N(0, 0.02) weights with
//! the residual projections at 0.02 / sqrt(2 layers), dropout after the embeddings, on the
//! attention weights and on both residual branches). Structured pruning keeps `kept_heads` of
//! the heads and `ff_hidden` MLP units per layer, so the attention's inner width can be below
//! `d_model`.
//!
//! Dropout masks come from the run's seeded host RNG on the CPU (candle's CPU RNG cannot be
//! seeded) and from the device RNG seeded with the same seed on CUDA (host masks of a GPU-sized
//! model would cost more than the step).
//!
//! On the CPU in f32/f64, layer norm, the whole causal attention (from the packed q/k/v
//! projection to the heads' output) and GELU are joulebench's fused kernels with their own
//! backward (`engine::kernels::{layer_norm, causal_attention, gelu}`); elsewhere, in mixed precision, or with
//! `JOULEBENCH_COMPOSED_OPS=1`, the same functions are composed from differentiable candle ops.
//! Never candle-nn 0.11's fused `ops::softmax_last_dim` or `ops::layer_norm` (which
//! `candle_nn::LayerNorm::forward` calls on contiguous input): they are recorded with
//! `apply_op*_no_bwd`, so no gradient passes through them. Used in training they silently
//! freeze everything below them: the model then learns only its head on random features and
//! stalls at the unigram loss. `model::tests::every_parameter_gets_a_gradient` guards this.

use super::{linear_flops, ParamStore, RefModel, SeededRng};
use crate::engine::kernels::{self, Linear};
use crate::engine::precision::Cast;
use candle_core::{Device, Module, Result, Tensor, D};
use candle_nn::Embedding;
use std::cell::RefCell;

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub vocab: usize,
    pub context: usize,
    pub d_model: usize,
    /// Heads of the unpruned model (the head width is d_model / heads).
    pub heads: usize,
    pub layers: usize,
    pub style: Style,
    /// Dropout probability in training (Gpt style only; 0 for Classic).
    pub dropout: f64,
    /// Heads each layer computes (heads unless structurally pruned).
    pub kept_heads: usize,
    /// MLP hidden units per layer (ff_mult * d_model unless structurally pruned).
    pub ff_hidden: usize,
}

impl Config {
    /// The unpruned classic model (text-charlm).
    pub fn classic(
        vocab: usize,
        context: usize,
        d_model: usize,
        heads: usize,
        layers: usize,
        ff_mult: usize,
    ) -> Config {
        Config {
            vocab,
            context,
            d_model,
            heads,
            layers,
            style: Style::Classic,
            dropout: 0.0,
            kept_heads: heads,
            ff_hidden: ff_mult * d_model,
        }
    }

    fn head_dim(&self) -> usize {
        self.d_model / self.heads.max(1)
    }

    /// Width of the attention's q, k, v and of the projection's input.
    fn attn_width(&self) -> usize {
        self.kept_heads * self.head_dim()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Classic,
    Gpt,
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
    /// Seeded host stream of the dropout masks (CPU); unused without dropout.
    dropout_rng: RefCell<SeededRng>,
}

/// The GPT style's init: N(0, 0.02), residual projections N(0, 0.02 / sqrt(2 layers)).
const GPT_STD: f32 = 0.02;

/// A dense layer of the model's style: Classic has a bias and PyTorch's uniform init; Gpt has
/// no bias and N(0, std).
#[allow(clippy::too_many_arguments)]
fn linear(
    ps: &mut ParamStore,
    cfg: &Config,
    name: &str,
    fi: usize,
    fo: usize,
    gpt_std: f32,
    rng: &mut SeededRng,
    dev: &Device,
) -> Result<Linear> {
    match cfg.style {
        Style::Classic => {
            let w = ps.uniform(&format!("{name}.weight"), &[fo, fi], fi, rng, dev)?;
            let b = ps.uniform(&format!("{name}.bias"), &[fo], fi, rng, dev)?;
            Ok(Linear::new(w, Some(b)))
        }
        Style::Gpt => {
            let w = ps.normal(&format!("{name}.weight"), &[fo, fi], gpt_std, rng, dev)?;
            Ok(Linear::new(w, None))
        }
    }
}

/// Layer norm with a backward: the fused CPU kernel, or differentiable candle ops elsewhere
/// (see the module note); the Gpt style has no bias (a zero constant, not a parameter).
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::engine::kernels::layer_norm(x, &self.weight, &self.bias, 1e-5)
    }
}

fn layer_norm(
    ps: &mut ParamStore,
    cfg: &Config,
    name: &str,
    d: usize,
    dev: &Device,
) -> Result<LayerNorm> {
    let weight = ps.constant(&format!("{name}.weight"), &[d], 1.0, dev)?;
    let bias = match cfg.style {
        Style::Classic => ps.constant(&format!("{name}.bias"), &[d], 0.0, dev)?,
        Style::Gpt => Tensor::zeros(d, candle_core::DType::F32, dev)?,
    };
    Ok(LayerNorm { weight, bias })
}

impl CharTransformer {
    pub fn new(cfg: Config, mut ps: ParamStore, rng: &mut SeededRng, dev: &Device) -> Result<Self> {
        let d = cfg.d_model;
        let (aw, fh) = (cfg.attn_width(), cfg.ff_hidden);
        let resid_std = GPT_STD / (2.0 * cfg.layers.max(1) as f32).sqrt();
        let tied = cfg.style == Style::Gpt;
        let (tok_w, pos) = match cfg.style {
            // Embeddings: U(-1/sqrt(d), 1/sqrt(d)) keeps the residual stream at unit scale.
            Style::Classic => (
                ps.uniform("tok.weight", &[cfg.vocab, d], d, rng, dev)?,
                ps.uniform("pos.weight", &[cfg.context, d], d, rng, dev)?,
            ),
            Style::Gpt => (
                ps.normal("tok.weight", &[cfg.vocab, d], GPT_STD, rng, dev)?,
                ps.normal("pos.weight", &[cfg.context, d], GPT_STD, rng, dev)?,
            ),
        };
        let tok = Embedding::new(tok_w.clone(), d);
        let mut blocks = Vec::new();
        for i in 0..cfg.layers {
            let p = format!("block{i}");
            let mut lin = |ps: &mut ParamStore, n: &str, fi, fo, std| {
                linear(ps, &cfg, &format!("{p}.{n}"), fi, fo, std, rng, dev)
            };
            let ln1 = layer_norm(&mut ps, &cfg, &format!("{p}.ln1"), d, dev)?;
            let qkv = lin(&mut ps, "qkv", d, 3 * aw, GPT_STD)?;
            let proj = lin(&mut ps, "proj", aw, d, resid_std)?;
            let ln2 = layer_norm(&mut ps, &cfg, &format!("{p}.ln2"), d, dev)?;
            let ff_in = lin(&mut ps, "ff_in", d, fh, GPT_STD)?;
            let ff_out = lin(&mut ps, "ff_out", fh, d, resid_std)?;
            blocks.push(Block {
                ln1,
                qkv,
                proj,
                ln2,
                ff_in,
                ff_out,
            });
        }
        let ln_f = layer_norm(&mut ps, &cfg, "ln_f", d, dev)?;
        let head = if tied {
            Linear::new(tok_w, None)
        } else {
            linear(&mut ps, &cfg, "head", d, cfg.vocab, GPT_STD, rng, dev)?
        };
        // FLOP bookkeeping: every linear weight works once per token of the window; the
        // embedding tables are lookups (a tied token table also works as the head).
        for w in ps.weights() {
            let uses = if w.name.starts_with("pos.") || (w.name.starts_with("tok.") && !tied) {
                0
            } else {
                cfg.context as u64
            };
            ps.set_uses(&w.name, uses);
        }
        // Drawn after every parameter, so the dropout stream leaves the init unchanged; not drawn
        // at all without dropout, so a model without it consumes exactly its parameters' draws.
        let dropout_seed = if cfg.dropout > 0.0 {
            rng.below(usize::MAX) as u64
        } else {
            0
        };
        if cfg.dropout > 0.0 && !dev.is_cpu() {
            dev.set_seed(dropout_seed)?;
        }
        let mask = kernels::causal_mask(cfg.context, dev)?;
        Ok(Self {
            cfg,
            tok,
            pos,
            blocks,
            ln_f,
            head,
            mask,
            params: ps,
            dropout_rng: RefCell::new(SeededRng::new(dropout_seed, 0)),
        })
    }

    /// Inverted dropout in training (`x * mask / (1 - p)`); the identity in evaluation.
    fn dropout(&self, x: Tensor, train: bool) -> Result<Tensor> {
        let p = self.cfg.dropout;
        if !train || p <= 0.0 {
            return Ok(x);
        }
        let keep = 1.0 - p;
        let mask = if x.device().is_cpu() {
            Tensor::from_vec(self.host_keep_mask(x.elem_count()), x.shape(), x.device())?
        } else {
            Tensor::rand(0f32, 1f32, x.shape(), x.device())?
                .lt(keep)?
                .to_dtype(candle_core::DType::F32)?
        };
        x.mul(&(mask.to_dtype(x.dtype())? * (1.0 / keep))?)
    }

    /// `n` keep flags (1 or 0) from the seeded host stream, in tensor order.
    fn host_keep_mask(&self, n: usize) -> Vec<f32> {
        let keep = (1.0 - self.cfg.dropout) as f32;
        let mut rng = self.dropout_rng.borrow_mut();
        (0..n)
            .map(|_| {
                if rng.uniform(0.0, 1.0) < keep {
                    1.0
                } else {
                    0.0
                }
            })
            .collect()
    }

    fn attention(&self, b: &Block, x: &Tensor, cast: &Cast, train: bool) -> Result<Tensor> {
        let (bsz, t, _) = x.dims3()?;
        let h = self.cfg.kept_heads;
        let hd = self.cfg.head_dim();
        let scale = 1.0 / (hd as f64).sqrt();
        let qkv = cast.linear(&b.qkv, x)?;
        if cast.is_f32() && kernels::fused(&qkv) {
            // One op from the packed projection to the heads' output; the dropout mask is drawn
            // from the same stream in the same order as the composed path draws it.
            let dropout = (train && self.cfg.dropout > 0.0).then(|| kernels::AttentionDropout {
                keep_mask: std::sync::Arc::new(self.host_keep_mask(bsz * h * t * t)),
                inv_keep: (1.0 / (1.0 - self.cfg.dropout)) as f32,
            });
            let y = kernels::causal_attention(&qkv, h, scale, dropout)?;
            return self.dropout(cast.to_f32(&cast.linear(&b.proj, &y)?)?, train);
        }
        let qkv = qkv.reshape((bsz, t, 3, h, hd))?;
        let part = |i: usize| -> Result<Tensor> {
            qkv.narrow(2, i, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let att = (cast.matmul(&q, &k.t()?)? * scale)?;
        let mask = self.mask.narrow(0, 0, t)?.narrow(1, 0, t)?;
        // Masking and softmax in f32 (autocast's rule: exp overflows in half precision).
        let att = cast.f32_op("softmax", &att, |a| {
            candle_nn::ops::softmax(&a.broadcast_add(&mask)?, D::Minus1)
        })?;
        let att = self.dropout(att, train)?;
        let y = cast
            .matmul(&att, &v)?
            .transpose(1, 2)?
            .reshape((bsz, t, h * hd))?;
        self.dropout(cast.to_f32(&cast.linear(&b.proj, &y)?)?, train)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
}

impl RefModel for CharTransformer {
    fn forward_cast(&self, x: &Tensor, train: bool, cast: &Cast) -> Result<Tensor> {
        let (_, t) = x.dims2()?;
        let pos = self.pos.narrow(0, 0, t)?;
        let mut h = self.dropout(self.tok.forward(x)?.broadcast_add(&pos)?, train)?;
        for b in &self.blocks {
            let a = cast.f32_op("layer_norm", &h, |h| b.ln1.forward(h))?;
            h = (&h + self.attention(b, &a, cast, train)?)?;
            let n = cast.f32_op("layer_norm", &h, |h| b.ln2.forward(h))?;
            let ff = cast.activation(kernels::gelu(&cast.linear(&b.ff_in, &n)?)?);
            h = (h + self.dropout(cast.to_f32(&cast.linear(&b.ff_out, &ff)?)?, train)?)?;
        }
        let n = cast.f32_op("layer_norm", &h, |h| self.ln_f.forward(h))?;
        cast.to_f32(&cast.linear(&self.head, &n)?)
    }
    fn params(&self) -> &ParamStore {
        &self.params
    }
    fn forward_flops_per_sample(&self) -> u64 {
        let c = self.cfg;
        let (d, t, aw, fh) = (c.d_model, c.context, c.attn_width(), c.ff_hidden);
        // A layer without a bias does no bias adds.
        let lf = |fi: usize, fo: usize| match c.style {
            Style::Classic => linear_flops(fi, fo),
            Style::Gpt => 2 * (fi * fo) as u64,
        };
        let per_token = lf(d, 3 * aw) + lf(aw, d) + lf(d, fh) + lf(fh, d);
        // Attention scores and weighted sum: 2 * t * width each per token (full t, masked half
        // still computed by the dense kernels).
        let attn = 4 * (t * aw) as u64;
        (c.layers as u64) * (t as u64) * (per_token + attn) + (t as u64) * lf(d, c.vocab)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_no_peeking() {
        let dev = Device::Cpu;
        let cfg = Config::classic(11, 8, 16, 4, 2, 2);
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
