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
    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Named trainable parameters, in creation order.
#[derive(Default)]
pub struct ParamStore {
    vars: Vec<(String, Var)>,
}

impl ParamStore {
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
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| rng.uniform(-bound, bound)).collect();
        self.push(name, Tensor::from_vec(data, shape, device)?)
    }

    pub fn constant(
        &mut self,
        name: &str,
        shape: &[usize],
        value: f32,
        device: &Device,
    ) -> Result<Tensor> {
        let t = (Tensor::ones(shape, DType::F32, device)? * value as f64)?;
        self.push(name, t)
    }

    fn push(&mut self, name: &str, t: Tensor) -> Result<Tensor> {
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        self.vars.push((name.to_string(), var));
        Ok(out)
    }

    pub fn vars(&self) -> Vec<Var> {
        self.vars.iter().map(|(_, v)| v.clone()).collect()
    }

    pub fn named(&self) -> &[(String, Var)] {
        &self.vars
    }

    pub fn count(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }

    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let map: HashMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
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
