//! Per-class Gaussian mixture with diagonal covariances, fitted by EM.
//!
//! For each class: K components (fewer when the class has fewer than K images), seeded by
//! k-means++ (Arthur and Vassilvitskii 2007: first centre uniform, each next one drawn with
//! probability proportional to the squared distance to the nearest chosen centre), every
//! component starting with the class's per-dimension variance and weight 1/K. EM in log space
//! (responsibilities through log-sum-exp, so 784-d densities never underflow). Variances are
//! floored at `var_floor` in the M-step; since the expected complete-data log-likelihood is
//! unimodal in each variance, the floored update is the constrained maximiser and EM stays
//! monotone (a generalised EM step). A component whose total responsibility falls below 1e-8
//! images is dropped (its weight was already ~0, so the likelihood does not move).
//! Convergence: stop when one iteration raises the mean log-likelihood per image by less than
//! `tol` x max(1, |log-likelihood|), or after `max_iter` iterations (recorded per class).
//! Classes are fitted in parallel on scoped threads; each draws from its own seed taken from the
//! caller's rng up front, so the result does not depend on the thread count.

use super::gaussian::{diag_log_density, mean_var, DEFAULT_VAR_FLOOR};
use super::{by_class, check_dim, class_seeds, labels_of, standard_normal};
use super::{Generator, GeneratorKind, SynthError, NORMAL_DRAW_FLOPS};
use crate::data::ImageSet;
use crate::engine::model::SeededRng;
use candle_core::Device;

#[derive(Debug, Clone, PartialEq)]
pub struct GmmOptions {
    pub components: usize,
    pub var_floor: f64,
    pub max_iter: usize,
    /// Relative improvement of the mean log-likelihood below which EM stops.
    pub tol: f64,
}

impl Default for GmmOptions {
    fn default() -> Self {
        Self {
            components: super::DEFAULT_GMM_COMPONENTS,
            var_floor: DEFAULT_VAR_FLOOR,
            max_iter: 100,
            tol: 1e-6,
        }
    }
}

/// One class's mixture and how its fit went.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassMixture {
    pub weights: Vec<f64>,
    /// K rows of d means.
    pub means: Vec<Vec<f64>>,
    pub vars: Vec<Vec<f64>>,
    /// Mean log-likelihood per image of the class's training images before each M-step
    /// (entry 0: the initialisation), then after the last one.
    pub ll_trace: Vec<f64>,
    pub iterations: usize,
    pub converged: bool,
    pub n: usize,
}

impl ClassMixture {
    fn log_density(&self, x: &[f32], cache: &[(f64, Vec<f64>)]) -> f64 {
        let logs: Vec<f64> = self
            .means
            .iter()
            .zip(cache)
            .zip(&self.weights)
            .map(|((m, (ln_det, inv)), w)| w.ln() + diag_log_density(x, m, inv, *ln_det))
            .collect();
        log_sum_exp(&logs)
    }

    /// (ln det, 1/var) per component.
    fn cache(&self) -> Vec<(f64, Vec<f64>)> {
        self.vars
            .iter()
            .map(|v| {
                (
                    v.iter().map(|s| s.ln()).sum(),
                    v.iter().map(|s| 1.0 / s).collect(),
                )
            })
            .collect()
    }
}

pub fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

#[derive(Debug, Clone)]
pub struct Gmm {
    pub opts: GmmOptions,
    classes: Vec<Option<ClassMixture>>,
    shape: [usize; 3],
    fit_flops: f64,
}

impl Gmm {
    pub fn new(opts: GmmOptions) -> Self {
        Self {
            opts,
            classes: Vec::new(),
            shape: [0; 3],
            fit_flops: 0.0,
        }
    }

    pub fn class(&self, c: usize) -> Option<&ClassMixture> {
        self.classes.get(c).and_then(Option::as_ref)
    }

    fn dim(&self) -> usize {
        self.shape.iter().product()
    }
}

/// k-means++ seeding: indices (into `idx`) of `k` distinct-as-possible centres.
fn kmeanspp(x: &[f32], d: usize, idx: &[usize], k: usize, rng: &mut SeededRng) -> Vec<usize> {
    let sq = |a: usize, b: usize| -> f64 {
        x[a * d..(a + 1) * d]
            .iter()
            .zip(&x[b * d..(b + 1) * d])
            .map(|(p, q)| ((p - q) as f64).powi(2))
            .sum()
    };
    let mut centres = vec![rng.below(idx.len())];
    let mut dist: Vec<f64> = idx.iter().map(|&i| sq(i, idx[centres[0]])).collect();
    while centres.len() < k {
        let total: f64 = dist.iter().sum();
        let pick = if total > 0.0 {
            let u = (rng.below(1 << 53) as f64 + 0.5) / (1u64 << 53) as f64 * total;
            let mut acc = 0.0;
            let mut chosen = dist.len() - 1;
            for (j, w) in dist.iter().enumerate() {
                acc += w;
                if acc >= u {
                    chosen = j;
                    break;
                }
            }
            chosen
        } else {
            // Every point coincides with a centre: any index will do.
            rng.below(idx.len())
        };
        centres.push(pick);
        for (j, &i) in idx.iter().enumerate() {
            dist[j] = dist[j].min(sq(i, idx[pick]));
        }
    }
    centres
}

/// EM for one class; returns the mixture and its FLOPs.
fn fit_class(
    x: &[f32],
    d: usize,
    idx: &[usize],
    opts: &GmmOptions,
    seed: u64,
) -> (ClassMixture, f64) {
    let mut rng = SeededRng::new(seed, 0);
    let n = idx.len();
    let k = opts.components.min(n).max(1);
    let (_, class_var) = mean_var(x, d, idx);
    let init_var: Vec<f64> = class_var.iter().map(|v| v.max(opts.var_floor)).collect();
    let centres = kmeanspp(x, d, idx, k, &mut rng);
    let mut flops = (k * n * 3 * d) as f64;
    let mut mix = ClassMixture {
        weights: vec![1.0 / k as f64; k],
        means: centres
            .iter()
            .map(|&c| {
                x[idx[c] * d..(idx[c] + 1) * d]
                    .iter()
                    .map(|&v| v as f64)
                    .collect()
            })
            .collect(),
        vars: vec![init_var; k],
        ll_trace: Vec::new(),
        iterations: 0,
        converged: false,
        n,
    };
    let mut resp = vec![0.0f64; n * k];
    for iter in 0..=opts.max_iter {
        // E-step: responsibilities and the log-likelihood of the current parameters.
        let kk = mix.means.len();
        let cache = mix.cache();
        let mut ll = 0.0;
        let mut logs = vec![0.0; kk];
        for (j, &i) in idx.iter().enumerate() {
            let row = &x[i * d..(i + 1) * d];
            for (c, l) in logs.iter_mut().enumerate() {
                *l = mix.weights[c].ln()
                    + diag_log_density(row, &mix.means[c], &cache[c].1, cache[c].0);
            }
            let lse = log_sum_exp(&logs);
            ll += lse;
            for (c, l) in logs.iter().enumerate() {
                resp[j * k + c] = (l - lse).exp();
            }
        }
        flops += (n * kk * (3 * d + 6)) as f64;
        let ll = ll / n as f64;
        let prev = mix.ll_trace.last().copied();
        mix.ll_trace.push(ll);
        if let Some(p) = prev {
            if ll - p < opts.tol * ll.abs().max(1.0) {
                mix.converged = true;
                break;
            }
        }
        if iter == opts.max_iter {
            break;
        }
        // M-step.
        let mut keep = Vec::with_capacity(kk);
        for c in 0..kk {
            let nk: f64 = (0..n).map(|j| resp[j * k + c]).sum();
            if nk < 1e-8 {
                continue;
            }
            let mut mean = vec![0.0; d];
            for (j, &i) in idx.iter().enumerate() {
                let r = resp[j * k + c];
                for (m, &v) in mean.iter_mut().zip(&x[i * d..(i + 1) * d]) {
                    *m += r * v as f64;
                }
            }
            mean.iter_mut().for_each(|m| *m /= nk);
            let mut var = vec![0.0; d];
            for (j, &i) in idx.iter().enumerate() {
                let r = resp[j * k + c];
                for ((s, &v), m) in var.iter_mut().zip(&x[i * d..(i + 1) * d]).zip(&mean) {
                    let e = v as f64 - m;
                    *s += r * e * e;
                }
            }
            var.iter_mut()
                .for_each(|s| *s = (*s / nk).max(opts.var_floor));
            keep.push((nk / n as f64, mean, var));
        }
        flops += (n * kk * (5 * d + 1)) as f64;
        // Responsibilities are indexed by the old component order: rebuild the vectors and
        // compact `resp` is unnecessary because the next E-step overwrites it.
        mix.weights = keep.iter().map(|t| t.0).collect();
        mix.means = keep.iter().map(|t| t.1.clone()).collect();
        mix.vars = keep.into_iter().map(|t| t.2).collect();
        mix.iterations = iter + 1;
    }
    (mix, flops)
}

impl Generator for Gmm {
    fn kind(&self) -> GeneratorKind {
        GeneratorKind::Gmm {
            components: self.opts.components,
        }
    }

    fn describe(&self) -> String {
        format!(
            "per-class diagonal GMM by EM: {} components, k-means++ init, variance floor {}, \
             tol {} (relative), at most {} iterations",
            self.opts.components, self.opts.var_floor, self.opts.tol, self.opts.max_iter
        )
    }

    fn fit(
        &mut self,
        train: &ImageSet,
        classes: usize,
        rng: &mut SeededRng,
        _device: &Device,
    ) -> Result<(), SynthError> {
        if train.is_empty() {
            return Err(SynthError::NoData);
        }
        let floor_ok = self.opts.var_floor > 0.0 && self.opts.var_floor.is_finite();
        let tol_ok = self.opts.tol >= 0.0 && self.opts.tol.is_finite();
        if self.opts.components == 0 || !floor_ok || !tol_ok {
            return Err(SynthError::InvalidOption(format!("{:?}", self.opts)));
        }
        let groups = by_class(train, classes)?;
        let seeds = class_seeds(rng, classes);
        let d = train.sample_len();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let opts = &self.opts;
        let x = &train.images;
        let mut results: Vec<Option<(ClassMixture, f64)>> = vec![None; classes];
        std::thread::scope(|s| {
            let work: Vec<usize> = (0..classes).filter(|&c| !groups[c].is_empty()).collect();
            let chunks: Vec<Vec<usize>> = (0..threads.min(work.len()).max(1))
                .map(|t| work.iter().copied().skip(t).step_by(threads).collect())
                .collect();
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    let groups = &groups;
                    let seeds = &seeds;
                    s.spawn(move || {
                        chunk
                            .into_iter()
                            .map(|c| (c, fit_class(x, d, &groups[c], opts, seeds[c])))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                // A panic in a worker is a bug; re-raise it on this thread.
                for (c, r) in h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)) {
                    results[c] = Some(r);
                }
            }
        });
        self.fit_flops = results.iter().flatten().map(|r| r.1).sum();
        self.classes = results.into_iter().map(|r| r.map(|r| r.0)).collect();
        self.shape = train.shape;
        Ok(())
    }

    fn sample(
        &self,
        counts: &[usize],
        rng: &mut SeededRng,
        _device: &Device,
    ) -> Result<ImageSet, SynthError> {
        if self.classes.is_empty() {
            return Err(SynthError::NotFitted);
        }
        super::check_counts(counts, self.classes.len())?;
        let d = self.dim();
        let mut images = Vec::with_capacity(counts.iter().sum::<usize>() * d);
        for (c, &n) in counts.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let m = self.class(c).ok_or(SynthError::EmptyClass { class: c })?;
            let sds: Vec<Vec<f64>> = m
                .vars
                .iter()
                .map(|v| v.iter().map(|s| s.sqrt()).collect())
                .collect();
            for _ in 0..n {
                let u = (rng.below(1 << 53) as f64 + 0.5) / (1u64 << 53) as f64;
                let mut acc = 0.0;
                let mut comp = m.weights.len() - 1;
                for (j, w) in m.weights.iter().enumerate() {
                    acc += w;
                    if u <= acc {
                        comp = j;
                        break;
                    }
                }
                for (mu, s) in m.means[comp].iter().zip(&sds[comp]) {
                    images.push((mu + s * standard_normal(rng)).clamp(0.0, 1.0) as f32);
                }
            }
        }
        Ok(ImageSet {
            images,
            labels: labels_of(counts),
            shape: self.shape,
        })
    }

    fn log_likelihood(&self, data: &ImageSet, _device: &Device) -> Result<f64, SynthError> {
        if self.classes.is_empty() {
            return Err(SynthError::NotFitted);
        }
        check_dim(self.dim(), data)?;
        let groups = by_class(data, self.classes.len())?;
        let d = self.dim();
        let mut total = 0.0;
        for (c, idx) in groups.iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            let m = self.class(c).ok_or(SynthError::EmptyClass { class: c })?;
            let cache = m.cache();
            for &i in idx {
                total += m.log_density(&data.images[i * d..(i + 1) * d], &cache);
            }
        }
        Ok(total / data.len().max(1) as f64)
    }

    fn fit_flops(&self) -> f64 {
        self.fit_flops
    }

    fn sample_flops(&self, n: usize) -> f64 {
        // Component choice (~K compares, ignored next to d) plus, per value, a normal draw, a
        // multiply-add and a clamp.
        n as f64 * self.dim() as f64 * (NORMAL_DRAW_FLOPS + 4.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sum_exp_is_stable() {
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-9);
        assert_eq!(log_sum_exp(&[f64::NEG_INFINITY]), f64::NEG_INFINITY);
    }

    #[test]
    fn two_separated_clusters_are_found() {
        // 1-d, class 0: half the points near 0.1, half near 0.9.
        let mut rng = SeededRng::new(5, 0);
        let mut images = Vec::new();
        for i in 0..400 {
            let centre = if i % 2 == 0 { 0.1 } else { 0.9 };
            images.push((centre + 0.02 * standard_normal(&mut rng)) as f32);
        }
        let set = ImageSet {
            labels: vec![0; 400],
            images,
            shape: [1, 1, 1],
        };
        let mut g = Gmm::new(GmmOptions {
            components: 2,
            ..GmmOptions::default()
        });
        g.fit(&set, 1, &mut SeededRng::new(1, 0), &Device::Cpu)
            .unwrap();
        let m = g.class(0).unwrap();
        let mut means: Vec<f64> = m.means.iter().map(|v| v[0]).collect();
        means.sort_by(f64::total_cmp);
        // Each cluster mean has sd 0.02/sqrt(200) = 0.0014: 0.01 is 7 sd.
        assert!(
            (means[0] - 0.1).abs() < 0.01 && (means[1] - 0.9).abs() < 0.01,
            "{means:?}"
        );
        for w in &m.weights {
            // Binomial(400, 1/2) share does not apply (alternating labels): exactly 1/2.
            assert!((w - 0.5).abs() < 0.01, "{:?}", m.weights);
        }
        assert!(m.converged);
    }
}
