//! Part 1 of the collapse experiment: fit-and-resample of a one-dimensional Gaussian
//! (Shumailov et al. 2024, section 3), with the closed forms the simulation is tested against.
//!
//! Generation 0 fits N(mu, v) to M draws of N(0, 1); generation t fits the training set its
//! policy builds from the samples of generation t-1's fit. Many independent chains; per
//! generation the distribution of log(v) across chains, the median v and the Wasserstein-2
//! distance of the fit to N(0, 1), W2 = sqrt(mu^2 + (sqrt v - 1)^2).
//!
//! Closed forms (derived in docs/guide.md, section "Model collapse"):
//! - replace: M v_t / v_{t-1} (MLE) is chi-square with M-1 degrees of freedom, independent across
//!   generations, so E[log v_t] = (t+1) (psi((M-1)/2) + ln 2 - ln M) (ln(M-1) for the unbiased
//!   estimator) and Var[log v_t] = (t+1) psi'((M-1)/2): a negative drift, log v -> -inf.
//! - mix-fresh (k = round(alpha M) fresh real draws, a = k/M, b = 1-a): with V = E[v] and
//!   U = E[mu^2], V' = e1 (a + b V) + e2 a b U and U' = (a + b V)/M + b^2 U, where e1 = (M-1)/M,
//!   e2 = 1 (MLE) or e1 = 1, e2 = M/(M-1) (unbiased). The fixed point is V* = a h / (1 - b h),
//!   h = e1 + e2 b / (M (1 + b)).

use super::{CollapseError, Policy};
use crate::engine::model::SeededRng;
use crate::engine::synth::standard_normal;
use crate::record::collapse::{Estimator, GaussianConfig, GaussianGeneration, GaussianReport};

impl Estimator {
    pub fn parse(s: &str) -> Result<Self, CollapseError> {
        match s {
            "mle" => Ok(Estimator::Mle),
            "unbiased" => Ok(Estimator::Unbiased),
            _ => Err(CollapseError::Invalid(format!(
                "--estimator '{s}': valid: mle, unbiased"
            ))),
        }
    }
}

impl GaussianConfig {
    pub fn validate(&self) -> Result<(), CollapseError> {
        if self.samples_per_generation < 2 {
            return Err(CollapseError::Invalid(format!(
                "--samples-per-generation must be at least 2 (a variance needs two samples), got {}",
                self.samples_per_generation
            )));
        }
        if self.chains == 0 {
            return Err(CollapseError::Invalid("--chains must be at least 1".into()));
        }
        if self.generations == 0 {
            return Err(CollapseError::Invalid(
                "--generations must be at least 1".into(),
            ));
        }
        match self.policy {
            Policy::MixFixed(_) | Policy::RealOnly => Err(CollapseError::Invalid(format!(
                "--policy {} is for the digits experiment; the gaussian one takes replace, \
                 accumulate, accumulate-subsample, mix-fresh:<alpha>",
                self.policy
            ))),
            _ => Ok(()),
        }
    }

    /// Fresh real draws per generation under mix-fresh: round(alpha M), at least 1.
    pub fn fresh_per_generation(&self) -> usize {
        match self.policy {
            Policy::MixFresh(a) => ((a * self.samples_per_generation as f64).round() as usize)
                .clamp(1, self.samples_per_generation),
            _ => 0,
        }
    }
}

/// psi(x), x > 0: recurrence to x >= 10, then the asymptotic series (error below 1e-12).
pub fn digamma(mut x: f64) -> f64 {
    let mut r = 0.0;
    while x < 10.0 {
        r -= 1.0 / x;
        x += 1.0;
    }
    let x2 = 1.0 / (x * x);
    r + x.ln() - 0.5 / x - x2 * (1.0 / 12.0 - x2 * (1.0 / 120.0 - x2 / 252.0))
}

/// psi'(x), x > 0: recurrence to x >= 10, then the asymptotic series (error below 1e-12).
pub fn trigamma(mut x: f64) -> f64 {
    let mut r = 0.0;
    while x < 10.0 {
        r += 1.0 / (x * x);
        x += 1.0;
    }
    let x2 = 1.0 / (x * x);
    r + 1.0 / x
        + x2 / 2.0
        + x2 / x * (1.0 / 6.0 - x2 * (1.0 / 30.0 - x2 * (1.0 / 42.0 - x2 / 30.0)))
}

/// E[log v_t - log v_{t-1}] under replace, and its variance.
pub fn replace_drift(m: usize, est: Estimator) -> (f64, f64) {
    let m = m as f64;
    let denom = match est {
        Estimator::Mle => m,
        Estimator::Unbiased => m - 1.0,
    };
    let k = (m - 1.0) / 2.0;
    (digamma(k) + 2f64.ln() - denom.ln(), trigamma(k))
}

/// Fixed point of E[v] under mix-fresh with `fresh` of `m` draws real (module header).
pub fn mix_fresh_fixed_point(m: usize, fresh: usize, est: Estimator) -> f64 {
    let mf = m as f64;
    let a = fresh as f64 / mf;
    let b = 1.0 - a;
    let (e1, e2) = match est {
        Estimator::Mle => ((mf - 1.0) / mf, 1.0),
        Estimator::Unbiased => (1.0, mf / (mf - 1.0)),
    };
    let h = e1 + e2 * b / (mf * (1.0 + b));
    a * h / (1.0 - b * h)
}

fn fit(xs: &[f64], est: Estimator) -> (f64, f64) {
    let n = xs.len() as f64;
    let mu = xs.iter().sum::<f64>() / n;
    let ss: f64 = xs.iter().map(|x| (x - mu) * (x - mu)).sum();
    let v = match est {
        Estimator::Mle => ss / n,
        Estimator::Unbiased => ss / (n - 1.0),
    };
    (mu, v)
}

/// The median of the chains' values (`stats::median`, the project's one median); every
/// generation has at least one chain (`validate`).
fn median(v: &[f64]) -> f64 {
    crate::stats::median(v).unwrap_or(f64::NAN)
}

/// Runs every chain; chain r draws from its own stream, so results do not depend on order.
pub fn run(cfg: &GaussianConfig) -> Result<GaussianReport, CollapseError> {
    cfg.validate()?;
    let m = cfg.samples_per_generation;
    let t_max = cfg.generations;
    let fresh = cfg.fresh_per_generation();
    // fits[t][r] = (mu, v, train size).
    let mut fits = vec![Vec::with_capacity(cfg.chains); t_max + 1];
    for r in 0..cfg.chains {
        let mut rng = SeededRng::new(cfg.seed, r as u64);
        let mut pool: Vec<f64> = (0..m).map(|_| standard_normal(&mut rng)).collect();
        let (mut mu, mut v) = fit(&pool, cfg.estimator);
        fits[0].push((mu, v, m));
        for fits_t in fits.iter_mut().skip(1) {
            let sd = v.max(0.0).sqrt();
            let draw = |rng: &mut SeededRng, n: usize| -> Vec<f64> {
                (0..n).map(|_| mu + sd * standard_normal(rng)).collect()
            };
            let train: Vec<f64> = match cfg.policy {
                Policy::Replace => draw(&mut rng, m),
                Policy::Accumulate => {
                    pool.extend(draw(&mut rng, m));
                    pool.clone()
                }
                Policy::AccumulateSubsample => {
                    pool.extend(draw(&mut rng, m));
                    let mut idx: Vec<usize> = (0..pool.len()).collect();
                    rng.shuffle(&mut idx);
                    idx[..m].iter().map(|&i| pool[i]).collect()
                }
                Policy::MixFresh(_) => {
                    let mut t: Vec<f64> = (0..fresh).map(|_| standard_normal(&mut rng)).collect();
                    t.extend(draw(&mut rng, m - fresh));
                    t
                }
                Policy::MixFixed(_) | Policy::RealOnly => unreachable!("rejected by validate"),
            };
            (mu, v) = fit(&train, cfg.estimator);
            fits_t.push((mu, v, train.len()));
        }
    }
    let (drift, inc_var) = replace_drift(m, cfg.estimator);
    let generations = fits
        .iter()
        .enumerate()
        .map(|(t, f)| {
            let r = f.len() as f64;
            let logs: Vec<f64> = f.iter().map(|x| x.1.ln()).collect();
            let mean_log = logs.iter().sum::<f64>() / r;
            let sd_log = (logs.iter().map(|l| (l - mean_log).powi(2)).sum::<f64>()
                / (r - 1.0).max(1.0))
            .sqrt();
            let vars: Vec<f64> = f.iter().map(|x| x.1).collect();
            let mean_var = vars.iter().sum::<f64>() / r;
            let sd_var = (vars.iter().map(|v| (v - mean_var).powi(2)).sum::<f64>()
                / (r - 1.0).max(1.0))
            .sqrt();
            let w2: Vec<f64> = f
                .iter()
                .map(|&(mu, v, _)| (mu * mu + (v.sqrt() - 1.0).powi(2)).sqrt())
                .collect();
            GaussianGeneration {
                generation: t,
                train_size: f[0].2,
                mean_log_var: mean_log,
                sd_log_var: sd_log,
                median_log_var: median(&logs),
                median_var: median(&vars),
                mean_var,
                se_mean_var: sd_var / r.sqrt(),
                mean_w2: w2.iter().sum::<f64>() / r,
                median_w2: median(&w2),
                predicted_mean_log_var: (cfg.policy == Policy::Replace)
                    .then(|| (t + 1) as f64 * drift),
            }
        })
        .collect();
    Ok(GaussianReport {
        config: cfg.clone(),
        generations,
        replace_drift_per_generation: drift,
        replace_increment_var: inc_var,
        mix_fresh_fixed_point_var: matches!(cfg.policy, Policy::MixFresh(_))
            .then(|| mix_fresh_fixed_point(m, fresh, cfg.estimator)),
    })
}

/// The Markdown table of a report.
pub fn markdown(rep: &GaussianReport) -> String {
    let c = &rep.config;
    let mut s = format!(
        "## Gaussian fit-and-resample: policy {}, estimator {}, M = {}, {} chains, seed {}\n\n\
         Closed-form replace drift of log v: {:.5} per generation (increment variance {:.5})",
        c.policy,
        match c.estimator {
            Estimator::Mle => "mle",
            Estimator::Unbiased => "unbiased",
        },
        c.samples_per_generation,
        c.chains,
        c.seed,
        rep.replace_drift_per_generation,
        rep.replace_increment_var
    );
    if let Some(v) = rep.mix_fresh_fixed_point_var {
        s += &format!("; closed-form mix-fresh fixed point E[v] = {v:.5}");
    }
    s += "\n\n| gen | n | mean log v | sd log v | median log v | predicted mean log v | median v | mean v (se) | median W2 |\n\
          |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for g in &rep.generations {
        s += &format!(
            "| {} | {} | {:.4} | {:.4} | {:.4} | {} | {:.4} | {:.4} ({:.4}) | {:.4} |\n",
            g.generation,
            g.train_size,
            g.mean_log_var,
            g.sd_log_var,
            g.median_log_var,
            g.predicted_mean_log_var
                .map_or("-".into(), |p| format!("{p:.4}")),
            g.median_var,
            g.mean_var,
            g.se_mean_var,
            g.median_w2
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_functions_match_known_values() {
        // psi(1) = -gamma, psi(1/2) = -gamma - 2 ln 2, psi'(1) = pi^2/6, psi'(1/2) = pi^2/2.
        let g = 0.577_215_664_901_532_9;
        assert!((digamma(1.0) + g).abs() < 1e-10);
        assert!((digamma(0.5) + g + 2.0 * 2f64.ln()).abs() < 1e-10);
        let pi2 = std::f64::consts::PI.powi(2);
        assert!((trigamma(1.0) - pi2 / 6.0).abs() < 1e-10);
        assert!((trigamma(0.5) - pi2 / 2.0).abs() < 1e-10);
    }

    #[test]
    fn fixed_point_of_all_fresh_is_the_estimator_bias() {
        assert!((mix_fresh_fixed_point(10, 10, Estimator::Mle) - 0.9).abs() < 1e-12);
        assert!((mix_fresh_fixed_point(10, 10, Estimator::Unbiased) - 1.0).abs() < 1e-12);
    }
}
