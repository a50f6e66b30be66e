//! Per-class diagonal Gaussian: x | y = c ~ N(mu_c, diag(sigma2_c)), maximum-likelihood fit.
//!
//! The variance floor: a pixel that never varies in class c (the blank border of every digit)
//! has MLE variance 0 and an infinite density. Each variance is raised to `var_floor` (default
//! 1e-3, a standard deviation of 0.032, half of one of the 8x8 digits' 17 grey levels), which
//! keeps log-likelihoods finite and lets a collapsed generator be scored.

use super::{by_class, check_dim, labels_of, standard_normal, Generator, GeneratorKind};
use super::{SynthError, LN_2PI, NORMAL_DRAW_FLOPS};
use crate::data::ImageSet;
use crate::engine::model::SeededRng;
use candle_core::Device;

/// Default variance floor (see the module header).
pub const DEFAULT_VAR_FLOOR: f64 = 1e-3;

/// One class's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassGaussian {
    pub mean: Vec<f64>,
    /// Per-dimension variance, floored.
    pub var: Vec<f64>,
    /// Images it was fitted to.
    pub n: usize,
}

#[derive(Debug, Clone)]
pub struct DiagGaussian {
    pub var_floor: f64,
    classes: Vec<Option<ClassGaussian>>,
    shape: [usize; 3],
    fit_flops: f64,
}

impl Default for DiagGaussian {
    fn default() -> Self {
        Self::new(DEFAULT_VAR_FLOOR)
    }
}

impl DiagGaussian {
    pub fn new(var_floor: f64) -> Self {
        Self {
            var_floor,
            classes: Vec::new(),
            shape: [0; 3],
            fit_flops: 0.0,
        }
    }

    /// The fitted parameters of class `c` (None before fitting or for an empty class).
    pub fn class(&self, c: usize) -> Option<&ClassGaussian> {
        self.classes.get(c).and_then(Option::as_ref)
    }

    fn dim(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Per-dimension MLE mean and variance of the rows `idx` of a row-major `d`-column matrix
/// (two passes: the textbook one-pass formula loses precision when the mean is large).
pub(crate) fn mean_var(x: &[f32], d: usize, idx: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let n = idx.len().max(1) as f64;
    let mut mean = vec![0.0; d];
    for &i in idx {
        for (m, &v) in mean.iter_mut().zip(&x[i * d..(i + 1) * d]) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0.0; d];
    for &i in idx {
        for ((s, &v), m) in var.iter_mut().zip(&x[i * d..(i + 1) * d]).zip(&mean) {
            let e = v as f64 - m;
            *s += e * e;
        }
    }
    var.iter_mut().for_each(|s| *s /= n);
    (mean, var)
}

/// log N(x; mean, diag(var)), given ln det = sum ln var.
pub(crate) fn diag_log_density(x: &[f32], mean: &[f64], inv_var: &[f64], ln_det: f64) -> f64 {
    let mut q = 0.0;
    for ((&v, m), iv) in x.iter().zip(mean).zip(inv_var) {
        let e = v as f64 - m;
        q += e * e * iv;
    }
    -0.5 * (mean.len() as f64 * LN_2PI + ln_det + q)
}

impl Generator for DiagGaussian {
    fn kind(&self) -> GeneratorKind {
        GeneratorKind::Gaussian
    }

    fn describe(&self) -> String {
        format!(
            "per-class diagonal Gaussian (MLE), variance floor {}",
            self.var_floor
        )
    }

    fn fit(
        &mut self,
        train: &ImageSet,
        classes: usize,
        _rng: &mut SeededRng,
        _device: &Device,
    ) -> Result<(), SynthError> {
        if train.is_empty() {
            return Err(SynthError::NoData);
        }
        if !(self.var_floor > 0.0 && self.var_floor.is_finite()) {
            return Err(SynthError::InvalidOption(format!(
                "variance floor must be positive, got {}",
                self.var_floor
            )));
        }
        let groups = by_class(train, classes)?;
        let d = train.sample_len();
        self.shape = train.shape;
        self.classes = groups
            .iter()
            .map(|idx| {
                (!idx.is_empty()).then(|| {
                    let (mean, var) = mean_var(&train.images, d, idx);
                    let var = var.into_iter().map(|v| v.max(self.var_floor)).collect();
                    ClassGaussian {
                        mean,
                        var,
                        n: idx.len(),
                    }
                })
            })
            .collect();
        // Mean: 1 add per value, 1 divide per dim; variance: sub, mul, add per value, 1 divide
        // and 1 max per dim.
        self.fit_flops = (4 * train.len() * d + 3 * classes * d) as f64;
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
            let g = self.class(c).ok_or(SynthError::EmptyClass { class: c })?;
            let sd: Vec<f64> = g.var.iter().map(|v| v.sqrt()).collect();
            for _ in 0..n {
                for (m, s) in g.mean.iter().zip(&sd) {
                    images.push((m + s * standard_normal(rng)).clamp(0.0, 1.0) as f32);
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
            let g = self.class(c).ok_or(SynthError::EmptyClass { class: c })?;
            let inv: Vec<f64> = g.var.iter().map(|v| 1.0 / v).collect();
            let ln_det: f64 = g.var.iter().map(|v| v.ln()).sum();
            for &i in idx {
                total += diag_log_density(&data.images[i * d..(i + 1) * d], &g.mean, &inv, ln_det);
            }
        }
        Ok(total / data.len().max(1) as f64)
    }

    fn fit_flops(&self) -> f64 {
        self.fit_flops
    }

    fn sample_flops(&self, n: usize) -> f64 {
        // Per value: one normal draw, a multiply-add and a clamp (2 compares).
        n as f64 * self.dim() as f64 * (NORMAL_DRAW_FLOPS + 4.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> ImageSet {
        // Class 0: pixel 0 in {0.2, 0.4}, pixel 1 constant 0.5; class 1: one image.
        ImageSet {
            images: vec![0.2, 0.5, 0.4, 0.5, 0.9, 0.1],
            labels: vec![0, 0, 1],
            shape: [1, 1, 2],
        }
    }

    #[test]
    fn fit_is_the_mle_with_the_floor() {
        let mut g = DiagGaussian::new(1e-3);
        g.fit(&toy(), 3, &mut SeededRng::new(1, 0), &Device::Cpu)
            .unwrap();
        let c0 = g.class(0).unwrap();
        assert!((c0.mean[0] - 0.3).abs() < 1e-7 && (c0.mean[1] - 0.5).abs() < 1e-7);
        assert!((c0.var[0] - 0.01).abs() < 1e-7, "{:?}", c0.var);
        assert_eq!(c0.var[1], 1e-3);
        assert_eq!(g.class(1).unwrap().var, vec![1e-3, 1e-3]);
        assert!(g.class(2).is_none());
        let e = g
            .sample(&[0, 0, 1], &mut SeededRng::new(1, 1), &Device::Cpu)
            .unwrap_err();
        assert!(matches!(e, SynthError::EmptyClass { class: 2 }));
        // log N(0.2; 0.3, 0.01) + log N(0.5; 0.5, 1e-3), by hand.
        let ll = g
            .log_likelihood(
                &ImageSet {
                    images: vec![0.2, 0.5],
                    labels: vec![0],
                    shape: [1, 1, 2],
                },
                &Device::Cpu,
            )
            .unwrap();
        let want = -0.5 * (LN_2PI + 0.01f64.ln() + 1.0) - 0.5 * (LN_2PI + 1e-3f64.ln());
        assert!((ll - want).abs() < 1e-5, "{ll} vs {want}");
    }
}
