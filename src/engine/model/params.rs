//! Parameters and their seeded initialisation.
//!
//! candle's CPU RNG cannot be seeded, so every initial weight is drawn here on the host from a
//! ChaCha RNG and uploaded: the same seed gives the same model on every device.

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::Path;

/// The one host RNG of a run: initialisation and batch order both draw from streams of it.
pub struct SeededRng(ChaCha8Rng);

impl SeededRng {
    /// `stream` separates independent uses of one seed (0: init, 1: batch order, ...).
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        r.set_stream(stream);
        SeededRng(r)
    }
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        self.0.random_range(lo..hi)
    }
    pub fn below(&mut self, n: usize) -> usize {
        self.0.random_range(0..n)
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1: f64 = self.0.random_range(f64::EPSILON..1.0);
        let u2: f64 = self.0.random_range(0.0..1.0);
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Named parameters, in creation order: trainable ones as `Var`s, frozen ones as constants.
///
/// A store either draws every parameter from the seeded RNG (`default()`), or takes it from
/// `given` tensors (a checkpoint, or a structurally pruned model's kept rows): then every
/// parameter must be given with exactly the shape the model asks for, and those named in
/// `frozen` (by layer prefix) become constants, not `Var`s, so candle neither tracks nor
/// differentiates them (no backward below the lowest trainable layer).
#[derive(Default)]
pub struct ParamStore {
    vars: Vec<(String, Var)>,
    frozen_params: Vec<(String, Tensor)>,
    /// Creation order of every parameter (trainable and frozen).
    order: Vec<String>,
    /// Multiply-adds one weight element does per sample (1 for a dense layer on one row; the
    /// output positions for a convolution; the context length for a per-token layer; 0 for a
    /// lookup table). Absent means 1.
    uses: HashMap<String, u64>,
    given: Option<HashMap<String, Tensor>>,
    freeze: Vec<String>,
    /// State that is not trained but is part of the model (batch norm's running statistics):
    /// saved and loaded with the parameters, never counted or optimised.
    buffers: Vec<(String, Buffer)>,
}

/// A model's non-trainable state tensor, replaced in place by its layer (running statistics).
pub type Buffer = std::sync::Arc<std::sync::Mutex<Tensor>>;

/// The tensor a buffer holds now.
pub fn read_buffer(b: &Buffer) -> Result<Tensor> {
    b.lock()
        .map(|t| t.clone())
        .map_err(|_| candle_core::Error::Msg("a model buffer's lock was poisoned".into()))
}

/// Replace the tensor a buffer holds.
pub fn write_buffer(b: &Buffer, t: Tensor) -> Result<()> {
    let mut g = b
        .lock()
        .map_err(|_| candle_core::Error::Msg("a model buffer's lock was poisoned".into()))?;
    *g = t;
    Ok(())
}

/// What the FLOP counts and pruning need to know about one weight matrix or kernel.
#[derive(Debug, Clone)]
pub struct WeightInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub elems: usize,
    pub uses_per_sample: u64,
    pub trainable: bool,
}

/// Whether `name` belongs to layer `prefix` (`fc0` matches `fc0.weight`, `block0` matches
/// `block0.qkv.weight`).
pub fn in_layer(name: &str, prefix: &str) -> bool {
    name == prefix
        || name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
}

impl ParamStore {
    /// A store whose parameters come from `given` (each must be present with the right shape);
    /// parameters in a layer of `freeze` are constants.
    pub fn from_tensors(given: HashMap<String, Tensor>, freeze: Vec<String>) -> Self {
        ParamStore {
            given: Some(given),
            freeze,
            ..Default::default()
        }
    }

    /// U(-bound, bound) with bound = 1/sqrt(fan_in): PyTorch's default for Linear and Conv
    /// (kaiming_uniform with a = sqrt(5)), so the PyTorch comparison starts alike.
    pub fn uniform(
        &mut self,
        name: &str,
        shape: &[usize],
        fan_in: usize,
        rng: &mut SeededRng,
        device: &Device,
    ) -> Result<Tensor> {
        if let Some(t) = self.take_given(name, shape, device)? {
            return self.push(name, t);
        }
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| rng.uniform(-bound, bound)).collect();
        self.push(name, Tensor::from_vec(data, shape, device)?)
    }

    /// N(0, std^2), drawn from the seeded RNG (GPT-style init).
    pub fn normal(
        &mut self,
        name: &str,
        shape: &[usize],
        std: f32,
        rng: &mut SeededRng,
        device: &Device,
    ) -> Result<Tensor> {
        if let Some(t) = self.take_given(name, shape, device)? {
            return self.push(name, t);
        }
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| rng.normal() * std).collect();
        self.push(name, Tensor::from_vec(data, shape, device)?)
    }

    pub fn constant(
        &mut self,
        name: &str,
        shape: &[usize],
        value: f32,
        device: &Device,
    ) -> Result<Tensor> {
        if let Some(t) = self.take_given(name, shape, device)? {
            return self.push(name, t);
        }
        let t = (Tensor::ones(shape, DType::F32, device)? * value as f64)?;
        self.push(name, t)
    }

    /// A buffer filled with `value` (or given, like a parameter).
    pub fn buffer(
        &mut self,
        name: &str,
        shape: &[usize],
        value: f32,
        device: &Device,
    ) -> Result<Buffer> {
        let t = match self.take_given(name, shape, device)? {
            Some(t) => t,
            None => (Tensor::ones(shape, DType::F32, device)? * value as f64)?,
        };
        let b: Buffer = std::sync::Arc::new(std::sync::Mutex::new(t));
        self.buffers.push((name.to_string(), b.clone()));
        Ok(b)
    }

    /// The buffers with their current values, in creation order.
    pub fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        self.buffers
            .iter()
            .map(|(n, b)| Ok((n.clone(), read_buffer(b)?)))
            .collect()
    }

    /// Put back values read with `buffers` (warm-up passes must leave no trace in the model).
    pub fn restore_buffers(&self, saved: &[(String, Tensor)]) -> Result<()> {
        for ((_, b), (_, t)) in self.buffers.iter().zip(saved) {
            write_buffer(b, t.clone())?;
        }
        Ok(())
    }

    /// Record how many multiply-adds one element of weight `name` does per sample.
    pub fn set_uses(&mut self, name: &str, uses_per_sample: u64) {
        self.uses.insert(name.to_string(), uses_per_sample);
    }

    fn take_given(
        &mut self,
        name: &str,
        shape: &[usize],
        device: &Device,
    ) -> Result<Option<Tensor>> {
        let Some(given) = self.given.as_mut() else {
            return Ok(None);
        };
        let t = given.remove(name).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "the given weights lack parameter '{name}' (shape {shape:?})"
            ))
        })?;
        if t.dims() != shape {
            candle_core::bail!(
                "parameter '{name}' has shape {:?}, the model needs {shape:?}",
                t.dims()
            );
        }
        Ok(Some(t.to_dtype(DType::F32)?.to_device(device)?))
    }

    fn push(&mut self, name: &str, t: Tensor) -> Result<Tensor> {
        self.order.push(name.to_string());
        if self.freeze.iter().any(|f| in_layer(name, f)) {
            let t = t.detach();
            self.frozen_params.push((name.to_string(), t.clone()));
            return Ok(t);
        }
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        self.vars.push((name.to_string(), var));
        Ok(out)
    }

    /// Given tensors the model did not ask for (a checkpoint of another architecture).
    pub fn unused_given(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .given
            .as_ref()
            .map(|g| g.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The trainable parameters.
    pub fn vars(&self) -> Vec<Var> {
        self.vars.iter().map(|(_, v)| v.clone()).collect()
    }

    /// The trainable parameters with their names.
    pub fn named(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Frozen parameters (constants loaded from a checkpoint).
    pub fn frozen(&self) -> &[(String, Tensor)] {
        &self.frozen_params
    }

    /// Every parameter (trainable and frozen), in creation order.
    pub fn all(&self) -> Vec<(String, Tensor)> {
        self.order
            .iter()
            .filter_map(|n| {
                self.vars
                    .iter()
                    .find(|(m, _)| m == n)
                    .map(|(_, v)| v.as_tensor().clone())
                    .or_else(|| {
                        self.frozen_params
                            .iter()
                            .find(|(m, _)| m == n)
                            .map(|(_, t)| t.clone())
                    })
                    .map(|t| (n.clone(), t))
            })
            .collect()
    }

    /// Weight matrices and kernels (rank >= 2), in creation order, with their use counts.
    pub fn weights(&self) -> Vec<WeightInfo> {
        self.all()
            .into_iter()
            .filter(|(_, t)| t.rank() >= 2)
            .map(|(name, t)| WeightInfo {
                uses_per_sample: self.uses.get(&name).copied().unwrap_or(1),
                trainable: self.vars.iter().any(|(n, _)| *n == name),
                shape: t.dims().to_vec(),
                elems: t.elem_count(),
                name,
            })
            .collect()
    }

    /// FLOPs of one forward pass over one sample spent in weights that lie below the lowest
    /// trainable weight (creation order is forward order in every reference model). Candle
    /// builds no backward graph there: a training step costs 3 x forward minus twice this.
    pub fn frozen_prefix_flops(&self) -> u64 {
        self.weights()
            .iter()
            .take_while(|w| !w.trainable)
            .map(|w| 2 * w.elems as u64 * w.uses_per_sample)
            .sum()
    }

    /// Every parameter's element count (trainable and frozen).
    pub fn count(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum::<usize>()
            + self
                .frozen_params
                .iter()
                .map(|(_, t)| t.elem_count())
                .sum::<usize>()
    }

    pub fn trainable_count(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Every parameter, trainable and frozen, and every buffer, as one safetensors file.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let mut map: HashMap<String, Tensor> = self.all().into_iter().collect();
        map.extend(self.buffers()?);
        candle_core::safetensors::save(&map, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_weights_other_seed_differs() {
        let dev = Device::Cpu;
        let draw = |seed| {
            let mut ps = ParamStore::default();
            let mut rng = SeededRng::new(seed, 0);
            ps.uniform("w", &[4, 5], 5, &mut rng, &dev)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let bound = 1.0 / 5f32.sqrt();
        assert!(draw(7).iter().all(|x| x.abs() <= bound));
    }

    #[test]
    fn streams_are_independent() {
        let mut a = SeededRng::new(1, 0);
        let mut b = SeededRng::new(1, 1);
        let xa: Vec<usize> = (0..8).map(|_| a.below(1000)).collect();
        let xb: Vec<usize> = (0..8).map(|_| b.below(1000)).collect();
        assert_ne!(xa, xb);
    }
}
