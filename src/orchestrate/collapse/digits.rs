//! Part 2 of the collapse experiment: class-conditional generators recursively fitted to 8x8
//! digits, a candle classifier per generation scored on the real test set, and the energy of
//! every phase.
//!
//! One chain per (policy, seed). Generation t: fit the generator G_t to the training set D_t
//! (D_0: `real_per_class` real images per class), draw S_t (`real_per_class` per class), build
//! D_{t+1} by the policy, train the classifier (the task `digits-mlp`, fixed epochs over
//! D_{t+1}, through `train::train`) and score it on the real test set, then evaluate G_t:
//! log-likelihood of the real test images (nats/image), and on `EVAL_PER_CLASS` fresh samples of
//! G_t per class their variance relative to the real test set and the k-NN recall of the real
//! test images (Kynkaanniemi et al. 2019, k = 3, per class). Under `real-only` the classifier trains on the real set itself: that is
//! the "train once on real data" reference the energy is compared with.
//!
//! Energy: the seeds of one policy run in lockstep, so each phase of a generation is one
//! measured window over all seeds (CPU phases last milliseconds; see docs/design/collapse.md), except the
//! classifier, whose fit and accuracy eval are `train::train`'s own window per seed, summed.
//! Phases: `generator_fit`, `sampling` (drawing S_t and building D_{t+1}), `classifier`
//! (fit plus its test-set accuracy eval), `evaluation` (likelihood, variance, recall).
//! Energies are reported per chain (window / seeds).

use super::{CollapseError, Policy};
use crate::data::ImageSet;
use crate::engine::model::{self, InputShape, SeededRng};
use crate::engine::prepare::{Inputs, Prepared};
use crate::engine::synth::{self, Generator};
use crate::engine::train::{self, NoObserver, TrainOptions};
use crate::measure::{MeasuredWindow, Meter, WindowReport};
use crate::record::collapse::{
    opt, summary_cells, Detector, DigitsConfig, DigitsGeneration, DigitsReport, PhaseEnergy,
    PolicyRun, PolicySummary, CLASSIFIER_TASK, SUMMARY_HEADER, SUMMARY_NUMERIC,
};
use crate::spec::task::TaskSpec;
use candle_core::{Device, Tensor};

pub const CLASSES: usize = 10;
/// Neighbours defining each synthetic sample's radius in the k-NN recall.
pub const RECALL_K: usize = 3;
/// Images per class drawn from G_t for the variance ratio and the recall (a fixed number, so
/// the k-NN radii are comparable across generations and policies).
pub const EVAL_PER_CLASS: usize = 100;

impl DigitsConfig {
    /// Checks against the loaded training set (class sizes bound the fresh real data).
    pub fn validate(&self, train: &ImageSet) -> Result<(), CollapseError> {
        let bad = |m: String| Err(CollapseError::Invalid(m));
        if self.generations == 0 {
            return bad("--generations must be at least 1".into());
        }
        if self.seeds.is_empty() {
            return bad("--seeds must be at least 1".into());
        }
        if self.real_per_class < 2 {
            return bad(format!(
                "--real-per-class must be at least 2, got {}",
                self.real_per_class
            ));
        }
        if self.classifier_epochs == 0 {
            return bad("--classifier-epochs must be at least 1".into());
        }
        let d = &self.detector;
        for (flag, v) in [
            ("--detect-ll-drop", d.ll_drop),
            ("--detect-recall-drop", d.recall_drop),
            ("--detect-acc-drop-pp", d.acc_drop_pp),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return bad(format!("{flag} must be a positive number, got {v}"));
            }
        }
        let smallest = class_indices(train).iter().map(Vec::len).min().unwrap_or(0);
        if self.real_per_class > smallest {
            return bad(format!(
                "--real-per-class {} exceeds the smallest class of the digits training set ({smallest})",
                self.real_per_class
            ));
        }
        for p in &self.policies {
            if let Policy::MixFresh(a) = p {
                let need =
                    self.real_per_class + self.generations * mix_count(*a, self.real_per_class);
                if need > smallest {
                    return bad(format!(
                        "--policy {p} needs {need} distinct real images per class over {} \
                         generations, the smallest class has {smallest}: lower alpha, \
                         --generations or --real-per-class",
                        self.generations
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Real images per class under mix-*:alpha: round(alpha n), between 1 and n.
pub fn mix_count(alpha: f64, n: usize) -> usize {
    ((alpha * n as f64).round() as usize).clamp(1, n)
}

/// Image indices per class.
pub fn class_indices(s: &ImageSet) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); CLASSES];
    for (i, &l) in s.labels.iter().enumerate() {
        if let Some(v) = out.get_mut(l as usize) {
            v.push(i);
        }
    }
    out
}

/// The images `idx` of `s`.
pub fn take(s: &ImageSet, idx: &[usize]) -> ImageSet {
    let d = s.sample_len();
    let mut images = Vec::with_capacity(idx.len() * d);
    for &i in idx {
        images.extend_from_slice(&s.images[i * d..(i + 1) * d]);
    }
    ImageSet {
        images,
        labels: idx.iter().map(|&i| s.labels[i]).collect(),
        shape: s.shape,
    }
}

pub fn concat(a: &ImageSet, b: &ImageSet) -> ImageSet {
    let mut out = a.clone();
    out.images.extend_from_slice(&b.images);
    out.labels.extend_from_slice(&b.labels);
    out
}

/// `k` images of each class, uniformly without replacement.
fn subsample_per_class(s: &ImageSet, k: usize, rng: &mut SeededRng) -> ImageSet {
    let mut idx = Vec::new();
    for mut c in class_indices(s) {
        rng.shuffle(&mut c);
        idx.extend_from_slice(&c[..k.min(c.len())]);
    }
    take(s, &idx)
}

fn row(s: &ImageSet, i: usize) -> &[f32] {
    let d = s.sample_len();
    &s.images[i * d..(i + 1) * d]
}

fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// k-NN recall (Kynkaanniemi et al. 2019), per class: the share of real images within the
/// k-th-neighbour radius of at least one synthetic image of their class.
pub fn knn_recall(real: &ImageSet, synth: &ImageSet, k: usize) -> f64 {
    let (ri, si) = (class_indices(real), class_indices(synth));
    let mut covered = 0usize;
    for (rc, sc) in ri.iter().zip(&si) {
        if sc.len() <= k {
            continue;
        }
        let radii: Vec<f32> = sc
            .iter()
            .map(|&a| {
                let mut ds: Vec<f32> = sc
                    .iter()
                    .filter(|&&b| b != a)
                    .map(|&b| sq_dist(row(synth, a), row(synth, b)))
                    .collect();
                ds.sort_by(f32::total_cmp);
                ds[k - 1]
            })
            .collect();
        covered += rc
            .iter()
            .filter(|&&r| {
                sc.iter()
                    .zip(&radii)
                    .any(|(&s, &rad)| sq_dist(row(real, r), row(synth, s)) <= rad)
            })
            .count();
    }
    covered as f64 / real.len().max(1) as f64
}

/// Mean over classes of (total per-pixel variance of `synth`) / (that of `real`).
pub fn variance_ratio(real: &ImageSet, synth: &ImageSet) -> f64 {
    let d = real.sample_len();
    let total_var = |s: &ImageSet, idx: &[usize]| -> f64 {
        let n = idx.len().max(1) as f64;
        (0..d)
            .map(|j| {
                let m: f64 = idx.iter().map(|&i| s.images[i * d + j] as f64).sum::<f64>() / n;
                idx.iter()
                    .map(|&i| (s.images[i * d + j] as f64 - m).powi(2))
                    .sum::<f64>()
                    / n
            })
            .sum()
    };
    let (ri, si) = (class_indices(real), class_indices(synth));
    let ratios: Vec<f64> = ri
        .iter()
        .zip(&si)
        .filter(|(r, s)| !r.is_empty() && !s.is_empty())
        .map(|(r, s)| total_var(synth, s) / total_var(real, r).max(1e-12))
        .collect();
    ratios.iter().sum::<f64>() / ratios.len().max(1) as f64
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
    (m, sd)
}

/// One chain's state.
struct Chain {
    seed: u64,
    real: ImageSet,
    /// Unused real images per class, in a seeded order (mix-fresh draws from the front).
    fresh: Vec<Vec<usize>>,
    data: ImageSet,
    pool: ImageSet,
}

/// Everything measured phases need.
pub struct Env<'a> {
    pub meter: &'a mut dyn Meter,
    pub device: &'a Device,
    pub spec: &'a TaskSpec,
}

struct Windows {
    count: usize,
    short: usize,
}

impl Windows {
    fn note(&mut self, w: &WindowReport) -> f64 {
        self.count += 1;
        if w.report.flags.iter().any(|f| f == "short_window") {
            self.short += 1;
        }
        w.total_j()
    }
}

/// A classifier spec for a fixed number of epochs, evaluated once at the end.
pub fn classifier_spec(base: &TaskSpec, epochs: usize) -> TaskSpec {
    let mut s = base.clone();
    s.budget.max_epochs = epochs;
    s.budget.max_steps = None;
    s.budget.max_energy_j = None;
    s.budget.max_time_s = None;
    s.train.eval_every_steps = usize::MAX;
    s.train.eval_max_samples = None;
    // Warm-up is outside the window; the experiment charges all the work it does.
    s.train.warmup_steps = 0;
    s
}

fn to_tensors(s: &ImageSet, dev: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let [c, h, w] = s.shape;
    Ok((
        Tensor::from_slice(&s.images, (s.len(), c, h, w), dev)?,
        Tensor::from_vec(
            s.labels.iter().map(|&l| l as u32).collect::<Vec<_>>(),
            s.len(),
            dev,
        )?,
    ))
}

/// Trains the classifier on `train` in `train::train`'s window: (accuracy, joules, FLOPs).
fn classify(
    env: &mut Env,
    train_set: &ImageSet,
    test: &(Tensor, Tensor, usize, f64),
    seed: u64,
    w: &mut Windows,
) -> anyhow::Result<(f64, f64, f64)> {
    let [c, h, wd] = train_set.shape;
    let (train_x, train_y) = to_tensors(train_set, env.device)?;
    let p = Prepared {
        train_x: Inputs::plain(train_x),
        train_y,
        n_train: train_set.len(),
        eval_x: Inputs::plain(test.0.clone()),
        eval_y: test.1.clone(),
        n_eval: test.2,
        eval_predictions: test.2,
        input: InputShape::Image { c, h, w: wd },
        classes: CLASSES,
        chance: test.3,
    };
    let mut rng = SeededRng::new(seed, 0);
    let m = model::build(&env.spec.model, p.input, CLASSES, &mut rng, env.device)?;
    let out = train::train(
        env.spec,
        &p,
        m.as_ref(),
        &TrainOptions {
            seed,
            stop_at_target: false,
            forecast_stop: false,
        },
        env.meter,
        env.device,
        &mut NoObserver,
    )?;
    if let Some(e) = out.error {
        anyhow::bail!("classifier training failed: {e}");
    }
    let acc = out.curve.last().map_or(0.0, |c| c.value);
    let joules = out.window.as_ref().map_or(0.0, |r| w.note(r));
    let flops = m.forward_flops_per_sample() as f64 * (3 * out.samples + test.2) as f64;
    Ok((acc, joules, flops))
}

fn window<T>(
    env: &mut Env,
    w: &mut Windows,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, f64)> {
    let win = MeasuredWindow::open(&mut *env.meter, env.device)?;
    let out = f();
    let rep = win.close()?;
    Ok((out?, w.note(&rep)))
}

/// Runs every policy; `real`: the digits training set, `test`: the real test set.
pub fn run(
    cfg: &DigitsConfig,
    train_all: &ImageSet,
    test_set: &ImageSet,
    env: &mut Env,
) -> anyhow::Result<DigitsReport> {
    cfg.validate(train_all)?;
    let started = std::time::Instant::now();
    let n = cfg.real_per_class;
    let seeds = cfg.seeds.len() as f64;
    let chance =
        crate::engine::prepare::majority_rate(test_set.labels.iter().map(|&l| l as u32), CLASSES);
    let (tx, ty) = to_tensors(test_set, env.device)?;
    let test = (tx, ty, test_set.len(), chance);
    let mut w = Windows { count: 0, short: 0 };
    let mut runs = Vec::new();
    // Real-only first, so its energy (the retrain) is known to the others' summaries.
    let mut order = cfg.policies.clone();
    order.sort_by_key(|p| *p != Policy::RealOnly);
    let mut real_retrain_j = None;
    for &policy in &order {
        let mut chains: Vec<Chain> = cfg
            .seeds
            .iter()
            .map(|&seed| {
                let mut rng = SeededRng::new(seed, 1000);
                let mut real_idx = Vec::new();
                let fresh = class_indices(train_all)
                    .into_iter()
                    .map(|mut c| {
                        rng.shuffle(&mut c);
                        real_idx.extend_from_slice(&c[..n]);
                        c[n..].to_vec()
                    })
                    .collect();
                let real = take(train_all, &real_idx);
                Chain {
                    seed,
                    fresh,
                    data: real.clone(),
                    pool: real.clone(),
                    real,
                }
            })
            .collect();
        let mut gens: Vec<DigitsGeneration> = Vec::new();
        let mut cumulative = 0.0;
        for t in 0..=cfg.generations {
            let t0 = std::time::Instant::now();
            let stream = |c: &Chain, phase: u64| SeededRng::new(c.seed, 10 + 4 * t as u64 + phase);
            let gen_train = chains[0].data.len();
            // Phase 1: generator fit, one window over all seeds.
            let dev = env.device;
            let (fitted, fit_j) = window(env, &mut w, || {
                let mut out: Vec<Box<dyn Generator>> = Vec::new();
                for c in &chains {
                    let mut g = synth::build(cfg.generator);
                    g.fit(&c.data, CLASSES, &mut stream(c, 0), dev)?;
                    out.push(g);
                }
                Ok(out)
            })?;
            // Phase 2: sampling and the next generation's data.
            let (_samples, sample_j) = window(env, &mut w, || {
                let mut out = Vec::new();
                for (c, g) in chains.iter_mut().zip(&fitted) {
                    let mut rng = stream(c, 1);
                    let s = g.sample(&[n; CLASSES], &mut rng, dev)?;
                    let next = match policy {
                        Policy::Replace => s.clone(),
                        Policy::Accumulate => concat(&c.data, &s),
                        Policy::AccumulateSubsample => {
                            c.pool = concat(&c.pool, &s);
                            subsample_per_class(&c.pool, n, &mut rng)
                        }
                        Policy::MixFresh(a) | Policy::MixFixed(a) => {
                            let k = mix_count(a, n);
                            let mut idx = Vec::new();
                            for f in c.fresh.iter_mut() {
                                if matches!(policy, Policy::MixFresh(_)) {
                                    idx.extend(f.drain(..k));
                                }
                            }
                            let real_part = if idx.is_empty() {
                                // mix-fixed: the first k of each class of the real set.
                                let ri: Vec<usize> = class_indices(&c.real)
                                    .iter()
                                    .flat_map(|v| v[..k].to_vec())
                                    .collect();
                                take(&c.real, &ri)
                            } else {
                                take(train_all, &idx)
                            };
                            concat(&real_part, &subsample_per_class(&s, n - k, &mut rng))
                        }
                        Policy::RealOnly => c.real.clone(),
                    };
                    c.data = next;
                    out.push(s);
                }
                Ok(out)
            })?;
            // Phase 3: the classifier on D_{t+1}, scored on the real test set.
            let mut accs = Vec::new();
            let mut clf_j = 0.0;
            let mut clf_flops = 0.0;
            let clf_train = chains[0].data.len();
            for c in &chains {
                let (acc, j, fl) =
                    classify(env, &c.data, &test, c.seed * 1_000 + t as u64, &mut w)?;
                accs.push(acc);
                clf_j += j;
                clf_flops += fl;
            }
            // Phase 4: evaluation of the generator and its samples.
            let (evals, eval_j) = window(env, &mut w, || {
                let mut out = Vec::new();
                for (c, g) in chains.iter().zip(&fitted) {
                    let s = g.sample(&[EVAL_PER_CLASS; CLASSES], &mut stream(c, 3), dev)?;
                    out.push((
                        g.log_likelihood(test_set, dev)?,
                        variance_ratio(test_set, &s),
                        knn_recall(test_set, &s, RECALL_K),
                    ));
                }
                Ok(out)
            })?;
            let energy = PhaseEnergy {
                generator_fit_j: fit_j / seeds,
                sampling_j: sample_j / seeds,
                classifier_j: clf_j / seeds,
                evaluation_j: eval_j / seeds,
            };
            let energy_j = energy.total_j();
            cumulative += energy_j;
            let (acc, acc_sd) = mean_sd(&accs);
            let lls: Vec<f64> = evals.iter().map(|e| e.0).collect();
            let (ll, ll_sd) = mean_sd(&lls);
            let gen_flops = fitted
                .iter()
                .map(|g| g.fit_flops() + g.sample_flops(n * CLASSES))
                .sum::<f64>()
                / seeds;
            let first = gens
                .first()
                .map(|g: &DigitsGeneration| (g.accuracy_mean, g.energy_j));
            gens.push(DigitsGeneration {
                generation: t,
                generator_train_size: gen_train,
                classifier_train_size: clf_train,
                accuracy_mean: acc,
                accuracy_sd: acc_sd,
                log_likelihood_mean: ll,
                log_likelihood_sd: ll_sd,
                variance_ratio_mean: mean_sd(&evals.iter().map(|e| e.1).collect::<Vec<_>>()).0,
                recall_mean: mean_sd(&evals.iter().map(|e| e.2).collect::<Vec<_>>()).0,
                generator_flops: gen_flops,
                classifier_flops: clf_flops / seeds,
                energy,
                energy_j,
                cumulative_energy_j: cumulative,
                wall_s: t0.elapsed().as_secs_f64(),
                jpp_j: (acc > chance).then(|| cumulative / (100.0 * (acc - chance))),
                j_per_point_lost: first.and_then(|(a0, e0)| {
                    (a0 > acc).then(|| (cumulative - e0) / (100.0 * (a0 - acc)))
                }),
            });
        }
        if policy == Policy::RealOnly {
            real_retrain_j = Some(gens.iter().map(|g| g.energy_j).sum::<f64>() / gens.len() as f64);
        }
        let summary = summarise(policy, &gens, &cfg.detector, real_retrain_j);
        runs.push(PolicyRun {
            policy,
            generations: gens,
            summary,
        });
    }
    // Quality at equal energy: the smallest final cumulative energy of all policies.
    let budget = runs
        .iter()
        .map(|r| r.summary.final_cumulative_j)
        .fold(f64::INFINITY, f64::min);
    for r in &mut runs {
        let last = r
            .generations
            .iter()
            .rfind(|g| g.cumulative_energy_j <= budget * (1.0 + 1e-9));
        r.summary.equal_energy_budget_j = budget;
        r.summary.accuracy_at_equal_energy = last.map(|g| g.accuracy_mean);
        r.summary.log_likelihood_at_equal_energy = last.map(|g| g.log_likelihood_mean);
    }
    let comps = env.meter.components();
    Ok(DigitsReport {
        config: cfg.clone(),
        generator: synth::build(cfg.generator).describe(),
        meter: env.meter.name().to_string(),
        boundary: env.meter.boundary().as_str().to_string(),
        measured: comps.iter().all(|c| c.source.is_measured()),
        sources: comps
            .iter()
            .map(|c| format!("{} {}", c.component, c.source.as_str()))
            .collect(),
        short_windows: w.short,
        windows: w.count,
        chance,
        real_retrain_j,
        runs,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// The detector, the collapse tax and the amplification factors of one policy.
pub fn summarise(
    policy: Policy,
    gens: &[DigitsGeneration],
    det: &Detector,
    retrain_j: Option<f64>,
) -> PolicySummary {
    let g0 = &gens[0];
    let mut detected_at = None;
    let mut detected_by = Vec::new();
    for g in &gens[1..] {
        if g0.log_likelihood_mean - g.log_likelihood_mean > det.ll_drop {
            detected_by.push("log_likelihood".to_string());
        }
        if g0.recall_mean - g.recall_mean > det.recall_drop {
            detected_by.push("recall".to_string());
        }
        if 100.0 * (g0.accuracy_mean - g.accuracy_mean) > det.acc_drop_pp {
            detected_by.push("accuracy".to_string());
        }
        if !detected_by.is_empty() {
            detected_at = Some(g.generation);
            break;
        }
    }
    let last = gens.last().unwrap_or(g0);
    let wasted = detected_at.map(|d| gens[1..=d].iter().map(|g| g.energy_j).sum::<f64>());
    PolicySummary {
        policy,
        detected_at,
        detected_by,
        collapse_tax_j: wasted.zip(retrain_j).map(|(w, r)| w + r),
        amplification_at_detection: detected_at
            .zip(retrain_j)
            .map(|(d, r)| (gens[d].cumulative_energy_j + r) / r),
        amplification_total: retrain_j.map(|r| last.cumulative_energy_j / r),
        final_accuracy: last.accuracy_mean,
        final_cumulative_j: last.cumulative_energy_j,
        last_to_first_energy: last.energy_j / g0.energy_j.max(1e-300),
        equal_energy_budget_j: 0.0,
        accuracy_at_equal_energy: None,
        log_likelihood_at_equal_energy: None,
    }
}

pub fn markdown(rep: &DigitsReport) -> String {
    let label = if rep.measured {
        "measured"
    } else {
        "ESTIMATED (no readable counter; never ranked with measurements)"
    };
    let mut s = format!(
        "## Model collapse on 8x8 digits: generator {}\n\n\
         {} real images per class, {} generations, seeds {:?}, classifier {} for {} epochs per \
         generation, chance {:.3}. Energy: meter {} [{}], boundary {}, {label}; per chain \
         (phase windows over all seeds / seeds); {} of {} windows shorter than 5 s. Wall time \
         {:.0} s.\n\n",
        rep.generator,
        rep.config.real_per_class,
        rep.config.generations,
        rep.config.seeds,
        CLASSIFIER_TASK,
        rep.config.classifier_epochs,
        rep.chance,
        rep.meter,
        rep.sources.join(", "),
        rep.boundary,
        rep.short_windows,
        rep.windows,
        rep.wall_s
    );
    let seps: Vec<&str> = SUMMARY_NUMERIC
        .iter()
        .map(|&n| if n { "---:" } else { "---" })
        .collect();
    s += &format!(
        "### Summary\n\n| {} |\n|{}|\n",
        SUMMARY_HEADER.join(" | "),
        seps.join("|")
    );
    for r in &rep.runs {
        s += &format!("| {} |\n", summary_cells(r).join(" | "));
    }
    for r in &rep.runs {
        s += &format!(
            "\n### {}\n\n| gen | gen. data | clf. data | acc (sd) | test log-lik (sd) | var ratio | recall | fit J | sample J | classifier J | eval J | gen J | cum. J | J/pp | J/pp lost |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            r.policy
        );
        for g in &r.generations {
            let e = &g.energy;
            s += &format!(
                "| {} | {} | {} | {:.3} ({:.3}) | {:.1} ({:.1}) | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {:.3} | {:.2} | {:.1} | {} | {} |\n",
                g.generation,
                g.generator_train_size,
                g.classifier_train_size,
                g.accuracy_mean,
                g.accuracy_sd,
                g.log_likelihood_mean,
                g.log_likelihood_sd,
                g.variance_ratio_mean,
                g.recall_mean,
                e.generator_fit_j,
                e.sampling_j,
                e.classifier_j,
                e.evaluation_j,
                g.energy_j,
                g.cumulative_energy_j,
                opt(g.jpp_j, 2),
                opt(g.j_per_point_lost, 2)
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(vals: &[(f32, u8)]) -> ImageSet {
        ImageSet {
            images: vals.iter().map(|v| v.0).collect(),
            labels: vals.iter().map(|v| v.1).collect(),
            shape: [1, 1, 1],
        }
    }

    #[test]
    fn recall_counts_real_points_inside_synthetic_radii() {
        // Synthetic class 0 at 0.0, 0.1, 0.2, 0.3: the 3rd-neighbour radius of 0.0 is 0.3.
        let s = set(&[(0.0, 0), (0.1, 0), (0.2, 0), (0.3, 0)]);
        let r = set(&[(0.05, 0), (0.55, 0), (0.9, 0), (0.5, 1)]);
        // 0.05 is covered; 0.55 is within 0.3 of 0.3 (radius of 0.3 is 0.3): covered; 0.9 is
        // not; class 1 has no synthetic images: not covered.
        assert!((knn_recall(&r, &s, 3) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn variance_ratio_of_a_halved_spread_is_a_quarter() {
        let real = set(&[(0.0, 0), (1.0, 0)]);
        let synth = set(&[(0.25, 0), (0.75, 0)]);
        assert!((variance_ratio(&real, &synth) - 0.25).abs() < 1e-9);
    }
}
