//! Pruning: gradual global magnitude pruning with masks, and structured pruning that rebuilds a
//! smaller dense model.
//!
//! Owns: `Masks` (unstructured: one 0/1 mask per weight matrix or kernel, chosen by global
//! magnitude across every prunable weight, raised along the cubic schedule of Zhu & Gupta 2017
//! and re-applied after every optimizer step, so a pruned weight is exactly zero from its
//! pruning on), and `structured` (remove whole hidden units or conv channels by the L2 norm of
//! their incoming weights and bias, and return the smaller model's spec and weights).
//! Must not: train or measure (the runner's pipeline calls these between stages).
//!
//! Prunable weights: every weight matrix or kernel that does multiply-adds (rank >= 2, uses per
//! sample > 0): all linear and conv layers including the classifier; not biases, norms or the
//! transformer's embedding tables.
//!
//! FLOPs: masks on dense kernels save nothing that runs (executed = dense); the nominal count
//! leaves out the multiply-adds of zeroed weights (`zeroed_forward_flops`). A structurally
//! pruned model is dense and smaller, so both counts fall.

use crate::engine::model::{RefModel, WeightInfo};
use crate::engine::train::StepHook;
use crate::record::run_variant::{
    GradualPruning, PrunableWeight, PruneUpdate, RemovedUnits, StructuredPruning,
};
use crate::spec::task::ModelSpec;
use candle_core::{DType, Device, Result, Tensor, Var};
use std::collections::HashMap;

/// s_k = s_f (1 - (1 - k/n)^3) for k = 0..=n (Zhu & Gupta 2017, "To prune, or not to prune",
/// eq. 1 with initial sparsity 0): fast pruning early, when redundant weights abound, slower
/// towards the target.
pub fn cubic_sparsity(final_sparsity: f64, k: usize, n: usize) -> f64 {
    if n == 0 || k >= n {
        return final_sparsity;
    }
    final_sparsity * (1.0 - (1.0 - k as f64 / n as f64).powi(3))
}

/// When the masks are raised: `updates` times, every `every_steps` optimizer steps of the
/// pruning stage, the last at the stage's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub updates: usize,
    pub every_steps: usize,
}

impl Schedule {
    /// The schedule joulebench uses: 10 updates, every eval_every_steps / 5 steps (mnist-mlp:
    /// every 20 steps, a 200-step pruning stage, 0.43 epochs).
    pub fn for_eval_cadence(eval_every_steps: usize) -> Schedule {
        Schedule {
            updates: 10,
            every_steps: (eval_every_steps / 5).max(1),
        }
    }
    pub fn steps(&self) -> usize {
        self.updates * self.every_steps
    }
}

struct Masked {
    info: WeightInfo,
    var: Var,
    /// 1.0 kept, 0.0 pruned; on the device.
    mask: Tensor,
    zeros: usize,
}

/// Unstructured masks over every prunable weight of one model.
pub struct Masks {
    weights: Vec<Masked>,
    final_sparsity: f64,
    schedule: Schedule,
    /// (stage step, target sparsity, achieved sparsity) at every update.
    history: Vec<(usize, f64, f64)>,
}

impl Masks {
    /// All-ones masks over `model`'s prunable trainable weights.
    pub fn new(model: &dyn RefModel, final_sparsity: f64, schedule: Schedule) -> Result<Masks> {
        let named = model.params().named();
        let mut weights = Vec::new();
        for info in model.params().weights() {
            if !info.trainable || info.uses_per_sample == 0 {
                continue;
            }
            let Some((_, var)) = named.iter().find(|(n, _)| *n == info.name) else {
                continue;
            };
            let mask = Tensor::ones(info.shape.as_slice(), DType::F32, var.device())?;
            weights.push(Masked {
                info,
                var: var.clone(),
                mask,
                zeros: 0,
            });
        }
        if weights.is_empty() {
            candle_core::bail!("the model has no prunable weights");
        }
        Ok(Masks {
            weights,
            final_sparsity,
            schedule,
            history: Vec::new(),
        })
    }

    pub fn prunable_elems(&self) -> usize {
        self.weights.iter().map(|w| w.info.elems).sum()
    }

    /// Fraction of prunable weights currently masked.
    pub fn sparsity(&self) -> f64 {
        let zeros: usize = self.weights.iter().map(|w| w.zeros).sum();
        zeros as f64 / self.prunable_elems().max(1) as f64
    }

    /// Raise the masks to `sparsity` by global magnitude: the smallest |w| over every prunable
    /// weight go, and a weight once pruned stays pruned. Then zero the weights.
    pub fn prune_to(&mut self, sparsity: f64) -> Result<()> {
        let host: Vec<Vec<f32>> = self
            .weights
            .iter()
            .map(|w| w.var.as_tensor().flatten_all()?.to_vec1::<f32>())
            .collect::<Result<_>>()?;
        let masks: Vec<Vec<f32>> = self
            .weights
            .iter()
            .map(|w| w.mask.flatten_all()?.to_vec1::<f32>())
            .collect::<Result<_>>()?;
        let total = self.prunable_elems();
        let k = ((sparsity * total as f64).round() as usize).min(total);
        // (magnitude, weight index, element index); already-masked weights rank lowest.
        let mut all: Vec<(f32, u32, u32)> = Vec::with_capacity(total);
        for (wi, (vals, m)) in host.iter().zip(&masks).enumerate() {
            for (ei, (v, keep)) in vals.iter().zip(m).enumerate() {
                let mag = if *keep == 0.0 { -1.0 } else { v.abs() };
                all.push((mag, wi as u32, ei as u32));
            }
        }
        if k > 0 {
            all.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
        }
        let mut new_masks: Vec<Vec<f32>> = self
            .weights
            .iter()
            .map(|w| vec![1.0; w.info.elems])
            .collect();
        for &(_, wi, ei) in &all[..k] {
            new_masks[wi as usize][ei as usize] = 0.0;
        }
        for (w, m) in self.weights.iter_mut().zip(new_masks) {
            w.zeros = m.iter().filter(|x| **x == 0.0).count();
            w.mask = Tensor::from_vec(m, w.info.shape.as_slice(), w.var.device())?;
        }
        self.apply()
    }

    /// Zero every masked weight (after each optimizer step: AdamW moves pruned weights).
    pub fn apply(&self) -> Result<()> {
        for w in &self.weights {
            w.var.set(&(w.var.as_tensor() * &w.mask)?)?;
        }
        Ok(())
    }

    /// The run file's account of the schedule as executed.
    pub fn report(&self, start_step: usize) -> GradualPruning {
        GradualPruning {
            kind: "unstructured global magnitude, gradual".into(),
            schedule: "cubic (Zhu & Gupta 2017): s_k = s_f (1 - (1 - k/n)^3), k = 1..n".into(),
            final_sparsity: self.final_sparsity,
            achieved_sparsity: self.sparsity(),
            updates: self.schedule.updates,
            every_steps: self.schedule.every_steps,
            start_step,
            end_step: start_step + self.schedule.steps(),
            masks_reapplied: "after every optimizer step".into(),
            prunable_weights: self
                .weights
                .iter()
                .map(|w| PrunableWeight {
                    name: w.info.name.clone(),
                    elems: w.info.elems,
                    zeros: w.zeros,
                })
                .collect(),
            history: self
                .history
                .iter()
                .map(|&(stage_step, target, achieved)| PruneUpdate {
                    stage_step,
                    target,
                    achieved,
                })
                .collect(),
        }
    }
}

impl StepHook for Masks {
    fn after_step(&mut self, stage_step: usize) -> Result<()> {
        let every = self.schedule.every_steps;
        let k = stage_step / every;
        if stage_step.is_multiple_of(every) && k >= 1 && k <= self.schedule.updates {
            let target = cubic_sparsity(self.final_sparsity, k, self.schedule.updates);
            self.prune_to(target)?;
            self.history.push((stage_step, target, self.sparsity()));
            return Ok(());
        }
        self.apply()
    }

    fn zeroed_forward_flops(&self) -> u64 {
        self.weights
            .iter()
            .map(|w| 2 * w.zeros as u64 * w.info.uses_per_sample)
            .sum()
    }
}

/// Masks re-applied after every step with no further pruning: the recovery stage.
pub struct Frozen<'m>(pub &'m Masks);

impl StepHook for Frozen<'_> {
    fn after_step(&mut self, _stage_step: usize) -> Result<()> {
        self.0.apply()
    }
    fn zeroed_forward_flops(&self) -> u64 {
        self.0.zeroed_forward_flops()
    }
}

/// A structurally pruned model: its spec, its weights, and what was removed.
pub struct Structured {
    pub spec: ModelSpec,
    pub weights: HashMap<String, Tensor>,
    pub report: StructuredPruning,
}

fn get(map: &HashMap<String, Tensor>, name: &str) -> Result<Tensor> {
    map.get(name).cloned().ok_or_else(|| {
        candle_core::Error::Msg(format!("structured pruning: no parameter '{name}'"))
    })
}

/// The `keep` units of a layer with the largest L2 norm of incoming weights and bias (rows of
/// `w` flattened past dim 0), in their original order.
fn keep_by_norm(w: &Tensor, b: &Tensor, keep: usize) -> Result<Vec<u32>> {
    let rows = w.dim(0)?;
    let sq = w
        .flatten_from(1)?
        .sqr()?
        .sum(1)?
        .add(&b.sqr()?)?
        .to_vec1::<f32>()?;
    let mut idx: Vec<u32> = (0..rows as u32).collect();
    idx.sort_by(|a, b| sq[*b as usize].total_cmp(&sq[*a as usize]).then(a.cmp(b)));
    let mut kept: Vec<u32> = idx[..keep.clamp(1, rows)].to_vec();
    kept.sort_unstable();
    Ok(kept)
}

fn kept_count(width: usize, fraction_removed: f64) -> usize {
    (((1.0 - fraction_removed) * width as f64).round() as usize).clamp(1, width)
}

fn select(t: &Tensor, dim: usize, idx: &[u32], dev: &Device) -> Result<Tensor> {
    let i = Tensor::from_slice(idx, idx.len(), dev)?;
    t.index_select(&i, dim)?.contiguous()
}

/// The `keep` largest of `scores`, as indices in their original order (ties: lower index).
fn top_k(scores: &[f32], keep: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..scores.len() as u32).collect();
    idx.sort_by(|a, b| {
        scores[*b as usize]
            .total_cmp(&scores[*a as usize])
            .then(a.cmp(b))
    });
    let mut kept: Vec<u32> = idx[..keep.clamp(1, scores.len().max(1))].to_vec();
    kept.sort_unstable();
    kept
}

/// Squared L2 norm of each row of `w` (flattened past dim 0).
fn row_norms(w: &Tensor) -> Result<Vec<f32>> {
    w.flatten_from(1)?.sqr()?.sum(1)?.to_vec1::<f32>()
}

/// The GPT: per layer keep the same number of attention heads (by the L2 norm of the head's
/// q, k and v rows) and of MLP hidden units (by the norm of their incoming weights); the
/// residual width, the embeddings and the head stay.
fn prune_gpt(
    w: &mut HashMap<String, Tensor>,
    spec: &ModelSpec,
    fraction: f64,
    dev: &Device,
    removed: &mut Vec<RemovedUnits>,
) -> Result<ModelSpec> {
    let ModelSpec::Gpt {
        context,
        d_model,
        heads,
        layers,
        ff_mult,
        dropout,
        kept_heads,
        ff_hidden,
    } = spec.clone()
    else {
        candle_core::bail!("prune_gpt: not a gpt");
    };
    let hd = d_model / heads.max(1);
    let h_now = kept_heads.unwrap_or(heads);
    let f_now = ff_hidden.unwrap_or(ff_mult * d_model);
    let h_keep = kept_count(h_now, fraction);
    let f_keep = kept_count(f_now, fraction);
    let aw = h_now * hd;
    for l in 0..layers {
        let p = format!("block{l}");
        let qkv = get(w, &format!("{p}.qkv.weight"))?;
        let rows = row_norms(&qkv)?;
        let scores: Vec<f32> = (0..h_now)
            .map(|h| {
                (0..3)
                    .flat_map(|part| {
                        let s = part * aw + h * hd;
                        rows[s..s + hd].iter().copied()
                    })
                    .sum()
            })
            .collect();
        let kept = top_k(&scores, h_keep);
        let cols: Vec<u32> = kept
            .iter()
            .flat_map(|&h| (h * hd as u32)..(h + 1) * hd as u32)
            .collect();
        let qkv_rows: Vec<u32> = (0..3u32)
            .flat_map(|part| cols.iter().map(move |&c| part * aw as u32 + c))
            .collect();
        w.insert(format!("{p}.qkv.weight"), select(&qkv, 0, &qkv_rows, dev)?);
        let proj = get(w, &format!("{p}.proj.weight"))?;
        w.insert(format!("{p}.proj.weight"), select(&proj, 1, &cols, dev)?);
        removed.push(RemovedUnits {
            layer: format!("{p}.attention"),
            unit: Some("head".into()),
            units_before: h_now,
            units_after: kept.len(),
        });
        let ff_in = get(w, &format!("{p}.ff_in.weight"))?;
        let kept = top_k(&row_norms(&ff_in)?, f_keep);
        w.insert(format!("{p}.ff_in.weight"), select(&ff_in, 0, &kept, dev)?);
        let ff_out = get(w, &format!("{p}.ff_out.weight"))?;
        w.insert(
            format!("{p}.ff_out.weight"),
            select(&ff_out, 1, &kept, dev)?,
        );
        removed.push(RemovedUnits {
            layer: format!("{p}.mlp"),
            unit: Some("hidden unit".into()),
            units_before: f_now,
            units_after: kept.len(),
        });
    }
    Ok(ModelSpec::Gpt {
        context,
        d_model,
        heads,
        layers,
        ff_mult,
        dropout,
        kept_heads: Some(h_keep),
        ff_hidden: Some(f_keep),
    })
}

/// The ResNet: in every block, keep the same number of inner channels per stage (by the L2
/// norm of the first convolution's filters), removing each dropped channel from that
/// convolution, its batch norm (weight, bias, running statistics) and the second
/// convolution's inputs together; the residual stream and the shortcuts stay.
fn prune_resnet(
    w: &mut HashMap<String, Tensor>,
    spec: &ModelSpec,
    fraction: f64,
    dev: &Device,
    removed: &mut Vec<RemovedUnits>,
) -> Result<ModelSpec> {
    let ModelSpec::Resnet {
        channels,
        blocks,
        inner,
    } = spec.clone()
    else {
        candle_core::bail!("prune_resnet: not a resnet");
    };
    let now = inner.unwrap_or(channels);
    let mut after = now;
    for s in 0..3 {
        let keep = kept_count(now[s], fraction);
        after[s] = keep;
        for j in 0..blocks {
            let p = format!("s{s}.b{j}");
            let a = get(w, &format!("{p}.a.conv.weight"))?;
            let kept = top_k(&row_norms(&a)?, keep);
            w.insert(format!("{p}.a.conv.weight"), select(&a, 0, &kept, dev)?);
            for t in ["weight", "bias", "running_mean", "running_var"] {
                let n = format!("{p}.a.bn.{t}");
                let v = get(w, &n)?;
                w.insert(n, select(&v, 0, &kept, dev)?);
            }
            let b = get(w, &format!("{p}.b.conv.weight"))?;
            w.insert(format!("{p}.b.conv.weight"), select(&b, 1, &kept, dev)?);
            removed.push(RemovedUnits {
                layer: format!("{p}.a"),
                unit: Some("channel".into()),
                units_before: now[s],
                units_after: kept.len(),
            });
        }
    }
    Ok(ModelSpec::Resnet {
        channels,
        blocks,
        inner: Some(after),
    })
}

/// Remove `fraction` of the units of every hidden layer (MLP hidden neurons; CNN conv channels
/// and dense hidden units; GPT heads and MLP units; ResNet inner channels) by norm; the input
/// and the classifier's outputs stay.
/// `prune_step` is the optimizer step the units are removed at (the report says it).
pub fn structured(
    spec: &ModelSpec,
    model: &dyn RefModel,
    fraction: f64,
    prune_step: usize,
) -> Result<Structured> {
    let mut w: HashMap<String, Tensor> = model.params().all().into_iter().collect();
    let buffers = model.params().buffers()?;
    let buffer_names: Vec<String> = buffers.iter().map(|(n, _)| n.clone()).collect();
    w.extend(buffers);
    let dev = w
        .values()
        .next()
        .map(|t| t.device().clone())
        .unwrap_or(Device::Cpu);
    let before = model.params().count();
    let mut removed = Vec::new();
    // Prune the outputs of (out_w, out_b) and the matching inputs of `next_w` (columns grouped
    // by `group`: a conv channel feeds `group` consecutive inputs of the flattened dense layer).
    let mut prune_layer = |w: &mut HashMap<String, Tensor>,
                           layer: &str,
                           next: &str,
                           group: Option<usize>|
     -> Result<usize> {
        let ow = get(w, &format!("{layer}.weight"))?;
        let ob = get(w, &format!("{layer}.bias"))?;
        let nw = get(w, &format!("{next}.weight"))?;
        let width = ow.dim(0)?;
        let keep = keep_by_norm(&ow, &ob, kept_count(width, fraction))?;
        let cols: Vec<u32> = match group {
            None => keep.clone(),
            Some(g) => keep
                .iter()
                .flat_map(|&c| (c * g as u32)..(c + 1) * g as u32)
                .collect(),
        };
        w.insert(format!("{layer}.weight"), select(&ow, 0, &keep, &dev)?);
        w.insert(format!("{layer}.bias"), select(&ob, 0, &keep, &dev)?);
        w.insert(format!("{next}.weight"), select(&nw, 1, &cols, &dev)?);
        removed.push(RemovedUnits {
            layer: layer.to_string(),
            unit: None,
            units_before: width,
            units_after: keep.len(),
        });
        Ok(keep.len())
    };
    let new_spec = match spec {
        ModelSpec::Mlp { hidden } => {
            let mut widths = Vec::new();
            for i in 0..hidden.len() {
                widths.push(prune_layer(&mut w, &format!("fc{i}"), &format!("fc{}", i + 1), None)?);
            }
            ModelSpec::Mlp { hidden: widths }
        }
        ModelSpec::Cnn {
            channels,
            kernel,
            hidden,
        } => {
            let c0 = prune_layer(&mut w, "conv0", "conv1", None)?;
            let c1_before = channels[1];
            let spatial = get(&w, "fc0.weight")?.dim(1)? / c1_before;
            let c1 = prune_layer(&mut w, "conv1", "fc0", Some(spatial))?;
            let h = prune_layer(&mut w, "fc0", "fc1", None)?;
            let _ = hidden;
            ModelSpec::Cnn {
                channels: [c0, c1],
                kernel: *kernel,
                hidden: h,
            }
        }
        ModelSpec::Gpt { .. } => prune_gpt(&mut w, spec, fraction, &dev, &mut removed)?,
        ModelSpec::Resnet { .. } => prune_resnet(&mut w, spec, fraction, &dev, &mut removed)?,
        ModelSpec::CharTransformer { .. } => candle_core::bail!(
            "structured pruning is not defined for the char transformer (see `variant::check_applicable`)"
        ),
    };
    let after: usize = w
        .iter()
        .filter(|(n, _)| !buffer_names.contains(n))
        .map(|(_, t)| t.elem_count())
        .sum();
    Ok(Structured {
        report: StructuredPruning {
            kind: "structured: whole hidden units, conv channels (with their batch norm) and attention heads by the L2 norm of incoming weights, one shot, then a smaller dense model".into(),
            fraction_removed_per_layer: fraction,
            layers: removed,
            parameters_before: before,
            parameters_after: after,
            parameter_sparsity: 1.0 - after as f64 / before.max(1) as f64,
            spec_after: new_spec.clone(),
            prune_step,
        },
        spec: new_spec,
        weights: w,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::model::{self, InputShape, SeededRng};

    #[test]
    fn cubic_schedule_by_hand() {
        assert_eq!(cubic_sparsity(0.9, 0, 10), 0.0);
        // k = 5 of 10: 0.9 (1 - 0.5^3) = 0.7875.
        assert!((cubic_sparsity(0.9, 5, 10) - 0.7875).abs() < 1e-12);
        assert_eq!(cubic_sparsity(0.9, 10, 10), 0.9);
        let s: Vec<f64> = (0..=10).map(|k| cubic_sparsity(0.5, k, 10)).collect();
        assert!(s.windows(2).all(|w| w[1] >= w[0]));
    }

    #[test]
    fn global_magnitude_prunes_the_smallest_and_keeps_them_pruned() {
        let dev = Device::Cpu;
        let spec = ModelSpec::Mlp { hidden: vec![8] };
        let m = model::build(
            &spec,
            InputShape::Image { c: 1, h: 2, w: 2 },
            3,
            &mut SeededRng::new(1, 0),
            &dev,
        )
        .unwrap();
        let mut masks = Masks::new(m.as_ref(), 0.5, Schedule::for_eval_cadence(10)).unwrap();
        assert_eq!(masks.prunable_elems(), 4 * 8 + 8 * 3);
        let before: Vec<f32> = m.params().named()[0]
            .1
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        masks.prune_to(0.25).unwrap();
        assert_eq!(masks.sparsity(), 14.0 / 56.0);
        masks.prune_to(0.5).unwrap();
        assert_eq!(masks.sparsity(), 0.5);
        // Every surviving weight is at least as large as every pruned one (globally).
        let mut kept = Vec::new();
        let mut pruned_orig = Vec::new();
        let after: Vec<f32> = m.params().named()[0]
            .1
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (a, b) in before.iter().zip(&after) {
            if *b == 0.0 {
                pruned_orig.push(a.abs());
            } else {
                kept.push(a.abs());
            }
        }
        assert!(!pruned_orig.is_empty());
        // Within fc0 the magnitudes split cleanly (the global threshold applies to it too).
        let max_pruned = pruned_orig.iter().cloned().fold(0.0, f32::max);
        let min_kept = kept.iter().cloned().fold(f32::INFINITY, f32::min);
        assert!(max_pruned <= min_kept, "{max_pruned} > {min_kept}");
        assert!(masks.zeroed_forward_flops() == 2 * 28);
    }

    #[test]
    fn structured_mlp_and_cnn_shrink_and_still_run() {
        let dev = Device::Cpu;
        for spec in [
            ModelSpec::Mlp {
                hidden: vec![16, 8],
            },
            ModelSpec::Cnn {
                channels: [4, 8],
                kernel: 3,
                hidden: 16,
            },
        ] {
            let input = InputShape::Image { c: 1, h: 8, w: 8 };
            let m = model::build(&spec, input, 10, &mut SeededRng::new(2, 0), &dev).unwrap();
            let s = structured(&spec, m.as_ref(), 0.5, 0).unwrap();
            let small = model::build_with(
                &s.spec,
                input,
                10,
                model::ParamStore::from_tensors(s.weights, vec![]),
                &mut SeededRng::new(0, 0),
                &dev,
            )
            .unwrap();
            assert!(small.params().count() < m.params().count());
            assert!(small.forward_flops_per_sample() < m.forward_flops_per_sample());
            let x = Tensor::rand(0f32, 1., (3, 1, 8, 8), &dev).unwrap();
            assert_eq!(small.forward_t(&x, false).unwrap().dims(), &[3, 10]);
        }
    }

    /// Removing units whose outgoing weights are zero changes nothing: the pruned model computes
    /// exactly the dense model's function when the removed units were dead.
    #[test]
    fn structured_gpt_and_resnet_drop_dead_heads_units_and_channels_exactly() {
        let dev = Device::Cpu;
        let var = |m: &dyn RefModel, name: &str| {
            m.params()
                .named()
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{name}"))
        };
        // Scale rows (dim 0) or columns (dim 1) of a parameter by a 0/1-ish pattern.
        let scale = |v: &candle_core::Var, dim: usize, pat: &[f32]| {
            let p = Tensor::from_slice(pat, pat.len(), &dev).unwrap();
            let p = if dim == 0 {
                let mut shape = vec![pat.len()];
                shape.extend(std::iter::repeat_n(1, v.rank() - 1));
                p.reshape(shape).unwrap()
            } else {
                p.reshape((1, pat.len())).unwrap()
            };
            v.set(&v.broadcast_mul(&p).unwrap()).unwrap();
        };
        // GPT: 4 heads of width 4 and 16 MLP units; heads 1 and 3 and every odd unit are dead
        // (tiny incoming weights, zero outgoing ones).
        let gpt = ModelSpec::Gpt {
            context: 6,
            d_model: 16,
            heads: 4,
            layers: 2,
            ff_mult: 1,
            dropout: 0.0,
            kept_heads: None,
            ff_hidden: None,
        };
        let input = InputShape::Tokens {
            context: 6,
            vocab: 7,
        };
        let m = model::build(&gpt, input, 7, &mut SeededRng::new(4, 0), &dev).unwrap();
        let head_cols: Vec<f32> = (0..16)
            .map(|c| if (c / 4) % 2 == 1 { 0.0 } else { 1.0 })
            .collect();
        let qkv_rows: Vec<f32> = (0..48)
            .map(|r| if ((r % 16) / 4) % 2 == 1 { 1e-3 } else { 1.0 })
            .collect();
        let unit_in: Vec<f32> = (0..16)
            .map(|u| if u % 2 == 1 { 1e-3 } else { 1.0 })
            .collect();
        let unit_out: Vec<f32> = (0..16)
            .map(|u| if u % 2 == 1 { 0.0 } else { 1.0 })
            .collect();
        for l in 0..2 {
            scale(
                &var(m.as_ref(), &format!("block{l}.qkv.weight")),
                0,
                &qkv_rows,
            );
            scale(
                &var(m.as_ref(), &format!("block{l}.proj.weight")),
                1,
                &head_cols,
            );
            scale(
                &var(m.as_ref(), &format!("block{l}.ff_in.weight")),
                0,
                &unit_in,
            );
            scale(
                &var(m.as_ref(), &format!("block{l}.ff_out.weight")),
                1,
                &unit_out,
            );
        }
        let x = Tensor::from_vec((0..12u32).map(|i| i % 7).collect(), (2, 6), &dev).unwrap();
        // ResNet: half the inner channels of every block dead (tiny filters, zero batch-norm
        // weight and bias, so their ReLU output is exactly 0).
        let resnet = ModelSpec::Resnet {
            channels: [4, 8, 8],
            blocks: 2,
            inner: None,
        };
        let rin = InputShape::Image { c: 1, h: 8, w: 8 };
        let r = model::build(&resnet, rin, 10, &mut SeededRng::new(4, 0), &dev).unwrap();
        for (s, c) in [(0, 4usize), (1, 8), (2, 8)] {
            let pat: Vec<f32> = (0..c)
                .map(|k| if k % 2 == 1 { 1e-3 } else { 1.0 })
                .collect();
            let zero: Vec<f32> = (0..c).map(|k| if k % 2 == 1 { 0.0 } else { 1.0 }).collect();
            for j in 0..2 {
                scale(
                    &var(r.as_ref(), &format!("s{s}.b{j}.a.conv.weight")),
                    0,
                    &pat,
                );
                scale(
                    &var(r.as_ref(), &format!("s{s}.b{j}.a.bn.weight")),
                    0,
                    &zero,
                );
                scale(&var(r.as_ref(), &format!("s{s}.b{j}.a.bn.bias")), 0, &zero);
            }
        }
        let rx = Tensor::rand(0f32, 1., (3, 1, 8, 8), &dev).unwrap();
        for (spec, m, input, x, classes, want) in [
            (
                &gpt,
                m.as_ref(),
                input,
                &x,
                7,
                ModelSpec::Gpt {
                    context: 6,
                    d_model: 16,
                    heads: 4,
                    layers: 2,
                    ff_mult: 1,
                    dropout: 0.0,
                    kept_heads: Some(2),
                    ff_hidden: Some(8),
                },
            ),
            (
                &resnet,
                r.as_ref(),
                rin,
                &rx,
                10,
                ModelSpec::Resnet {
                    channels: [4, 8, 8],
                    blocks: 2,
                    inner: Some([2, 4, 4]),
                },
            ),
        ] {
            let s = structured(spec, m, 0.5, 0).unwrap();
            assert_eq!(s.spec, want);
            let small = model::build_with(
                &s.spec,
                input,
                classes,
                model::ParamStore::from_tensors(s.weights, vec![]),
                &mut SeededRng::new(0, 0),
                &dev,
            )
            .unwrap();
            assert!(small.params().count() < m.params().count());
            assert!(small.forward_flops_per_sample() < m.forward_flops_per_sample());
            let d = (m.forward_t(x, false).unwrap() - small.forward_t(x, false).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 1e-5, "{}: {d}", spec.kind());
        }
    }

    #[test]
    fn structured_mlp_keeps_the_function_of_the_kept_units() {
        let dev = Device::Cpu;
        let spec = ModelSpec::Mlp { hidden: vec![6] };
        let input = InputShape::Image { c: 1, h: 2, w: 2 };
        let m = model::build(&spec, input, 3, &mut SeededRng::new(4, 0), &dev).unwrap();
        // Make units 0, 2, 4 tiny (smallest norm) and silence their outgoing weights.
        let named = m.params().named();
        let w0 = &named[0].1;
        let b0 = &named[1].1;
        let w1 = &named[2].1;
        let unit_scale = Tensor::new(&[1e-3f32, 1.0, 1e-3, 1.0, 1e-3, 1.0], &dev).unwrap();
        w0.set(&w0.broadcast_mul(&unit_scale.unsqueeze(1).unwrap()).unwrap())
            .unwrap();
        b0.set(&b0.mul(&unit_scale).unwrap()).unwrap();
        let dead = Tensor::new(&[0f32, 1., 0., 1., 0., 1.], &dev).unwrap();
        w1.set(&w1.broadcast_mul(&dead.unsqueeze(0).unwrap()).unwrap())
            .unwrap();
        let s = structured(&spec, m.as_ref(), 0.5, 0).unwrap();
        assert_eq!(s.spec, ModelSpec::Mlp { hidden: vec![3] });
        let small = model::build_with(
            &s.spec,
            input,
            3,
            model::ParamStore::from_tensors(s.weights, vec![]),
            &mut SeededRng::new(0, 0),
            &dev,
        )
        .unwrap();
        let x = Tensor::rand(0f32, 1., (5, 1, 2, 2), &dev).unwrap();
        let d = (m.forward_t(&x, false).unwrap() - small.forward_t(&x, false).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-5, "{d}");
    }
}
