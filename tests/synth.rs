//! The class-conditional generators (src/synth) on the shipped digits and MNIST data and on
//! toy data whose moments are known: moments recovered by sampling within derived tolerances,
//! EM monotone, the VAE learning, determinism, and likelihood of data above that of noise.

use candle_core::Device;
use joulebench::data::{self, DatasetKind, ImageSet, Loaded};
use joulebench::engine::model::SeededRng;
use joulebench::engine::synth::{
    self, standard_normal, DiagGaussian, Generator, Gmm, GmmOptions, Vae, VaeOptions,
};
use joulebench::spec::generator::GeneratorKind;

const DEV: Device = Device::Cpu;

fn images(kind: DatasetKind) -> (ImageSet, ImageSet) {
    match data::load(kind, None).expect("shipped data").data {
        Loaded::Images { train, test, .. } => (train, test),
        Loaded::Text(_) => unreachable!("image dataset"),
    }
}

/// The first `n` images of a set.
fn head(s: &ImageSet, n: usize) -> ImageSet {
    let d = s.sample_len();
    ImageSet {
        images: s.images[..n * d].to_vec(),
        labels: s.labels[..n].to_vec(),
        shape: s.shape,
    }
}

/// Uniform noise images with the labels of `s`.
fn noise_like(s: &ImageSet, seed: u64) -> ImageSet {
    let mut rng = SeededRng::new(seed, 9);
    ImageSet {
        images: (0..s.images.len()).map(|_| rng.uniform(0.0, 1.0)).collect(),
        labels: s.labels.clone(),
        shape: s.shape,
    }
}

/// Per-class, per-dimension mean and (MLE) variance of a set.
fn class_moments(s: &ImageSet, classes: usize) -> Vec<(Vec<f64>, Vec<f64>, usize)> {
    let d = s.sample_len();
    (0..classes)
        .map(|c| {
            let rows: Vec<&[f32]> = s
                .labels
                .iter()
                .enumerate()
                .filter(|(_, &l)| l as usize == c)
                .map(|(i, _)| &s.images[i * d..(i + 1) * d])
                .collect();
            let n = rows.len() as f64;
            let mut m = vec![0.0; d];
            for r in &rows {
                for (a, &v) in m.iter_mut().zip(*r) {
                    *a += v as f64 / n;
                }
            }
            let mut v = vec![0.0; d];
            for r in &rows {
                for ((a, &x), mu) in v.iter_mut().zip(*r).zip(&m) {
                    *a += (x as f64 - mu).powi(2) / n;
                }
            }
            (m, v, rows.len())
        })
        .collect()
}

/// Toy data far from the [0, 1] clip: class c has pixel means 0.3 + 0.04 c (+ 0.01 per pixel
/// index mod 5) and standard deviations 0.02 + 0.005 (i mod 4): at least 7 sd from either
/// bound, so clipping moves a moment by less than 1e-11.
fn interior_toy(n_per_class: usize, classes: usize, d: usize, seed: u64) -> ImageSet {
    let mut rng = SeededRng::new(seed, 3);
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for c in 0..classes {
        for _ in 0..n_per_class {
            for i in 0..d {
                let mu = 0.3 + 0.04 * c as f64 + 0.01 * (i % 5) as f64;
                let sd = 0.02 + 0.005 * (i % 4) as f64;
                images.push((mu + sd * standard_normal(&mut rng)) as f32);
            }
            labels.push(c as u8);
        }
    }
    ImageSet {
        images,
        labels,
        shape: [1, 1, d],
    }
}

#[test]
fn gaussian_sampling_recovers_the_fitted_moments() {
    let classes = 3;
    let d = 16;
    let train = interior_toy(50, classes, d, 1);
    let mut g = DiagGaussian::default();
    g.fit(&train, classes, &mut SeededRng::new(1, 0), &DEV)
        .unwrap();
    let n = 4000;
    let s = g.sample(&[n; 3], &mut SeededRng::new(1, 1), &DEV).unwrap();
    assert_eq!(s.len(), 3 * n);
    assert_eq!(s.shape, train.shape);
    assert!(s.images.iter().all(|v| (0.0..=1.0).contains(v)));
    // Sample mean of n draws: sd sigma/sqrt(n); sample variance: sd sigma^2 sqrt(2/n). With
    // 3 x 16 = 48 checks of each, 5 sd keeps the family-wise false alarm rate below 3e-5.
    for (c, (m, v, _)) in class_moments(&s, classes).iter().enumerate() {
        let fit = g.class(c).unwrap();
        for i in 0..d {
            let sd = fit.var[i].sqrt();
            assert!(
                (m[i] - fit.mean[i]).abs() < 5.0 * sd / (n as f64).sqrt(),
                "class {c} pixel {i}: mean {} vs {}",
                m[i],
                fit.mean[i]
            );
            assert!(
                (v[i] - fit.var[i]).abs() < 5.0 * fit.var[i] * (2.0 / n as f64).sqrt(),
                "class {c} pixel {i}: var {} vs {}",
                v[i],
                fit.var[i]
            );
        }
    }
}

/// Mean of clip(X, 0, 1) for X ~ N(mu, sd^2).
fn clipped_normal_mean(mu: f64, sd: f64) -> f64 {
    let cdf = |z: f64| 0.5 * libm::erfc(-z / std::f64::consts::SQRT_2);
    let pdf = |z: f64| (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let (a, b) = ((0.0 - mu) / sd, (1.0 - mu) / sd);
    mu * (cdf(b) - cdf(a)) + sd * (pdf(a) - pdf(b)) + (1.0 - cdf(b))
}

#[test]
fn gaussian_on_digits_samples_the_clipped_model() {
    let (train, _) = images(DatasetKind::Digits);
    let mut g = DiagGaussian::default();
    g.fit(&train, 10, &mut SeededRng::new(2, 0), &DEV).unwrap();
    let n = 3000;
    let s = g.sample(&[n; 10], &mut SeededRng::new(2, 1), &DEV).unwrap();
    assert_eq!(s.shape, [1, 8, 8]);
    // Samples are clipped to [0, 1], so their mean is the clipped normal's (derived above);
    // its sd is at most the unclipped sd / sqrt(n). 5 sd over 640 checks.
    for (c, (m, _, _)) in class_moments(&s, 10).iter().enumerate() {
        let fit = g.class(c).unwrap();
        assert_eq!(m.len(), 64);
        for (i, ((got, mu), var)) in m.iter().zip(&fit.mean).zip(&fit.var).enumerate() {
            let sd = var.sqrt();
            let want = clipped_normal_mean(*mu, sd);
            assert!(
                (got - want).abs() < 5.0 * sd / (n as f64).sqrt() + 1e-9,
                "class {c} pixel {i}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn gmm_sampling_recovers_the_mixture_moments() {
    let classes = 2;
    let d = 8;
    // Two sub-populations per class so the mixture has something to find.
    let a = interior_toy(60, classes, d, 4);
    let mut b = interior_toy(60, classes, d, 5);
    b.images.iter_mut().for_each(|v| *v += 0.2);
    let train = ImageSet {
        images: [a.images, b.images].concat(),
        labels: [a.labels, b.labels].concat(),
        shape: a.shape,
    };
    let mut g = Gmm::new(GmmOptions {
        components: 3,
        ..GmmOptions::default()
    });
    g.fit(&train, classes, &mut SeededRng::new(3, 0), &DEV)
        .unwrap();
    let n = 6000;
    let s = g.sample(&[n; 2], &mut SeededRng::new(3, 1), &DEV).unwrap();
    // Mixture moments: mean = sum w mu_k, var = sum w (var_k + mu_k^2) - mean^2. The sample
    // mean has sd sqrt(var / n); the sample variance's sd is below sqrt(mu4 / n) with
    // mu4 <= 3 max_k (var_k + (mu_k - mean)^2)^2 (each component's fourth central moment is
    // 3 var^2, shifted by its offset); 5 sd over 32 checks.
    for (c, (m, v, _)) in class_moments(&s, classes).iter().enumerate() {
        let mix = g.class(c).unwrap();
        for i in 0..d {
            let mean: f64 = mix
                .weights
                .iter()
                .zip(&mix.means)
                .map(|(w, mu)| w * mu[i])
                .sum();
            let var: f64 = mix
                .weights
                .iter()
                .zip(&mix.means)
                .zip(&mix.vars)
                .map(|((w, mu), s2)| w * (s2[i] + mu[i] * mu[i]))
                .sum::<f64>()
                - mean * mean;
            let spread = mix
                .means
                .iter()
                .zip(&mix.vars)
                .map(|(mu, s2)| s2[i] + (mu[i] - mean).powi(2))
                .fold(0.0, f64::max);
            assert!(
                (m[i] - mean).abs() < 5.0 * (var / n as f64).sqrt(),
                "mean {c} {i}"
            );
            assert!(
                (v[i] - var).abs() < 5.0 * (3.0 * spread * spread / n as f64).sqrt(),
                "var {c} {i}: {} vs {var}",
                v[i]
            );
        }
    }
}

#[test]
fn em_log_likelihood_never_decreases_on_digits() {
    let (train, _) = images(DatasetKind::Digits);
    let mut g = Gmm::new(GmmOptions {
        components: 5,
        ..GmmOptions::default()
    });
    g.fit(&train, 10, &mut SeededRng::new(4, 0), &DEV).unwrap();
    for c in 0..10 {
        let m = g.class(c).unwrap();
        assert!(m.ll_trace.len() >= 2, "class {c}: {:?}", m.ll_trace);
        for w in m.ll_trace.windows(2) {
            // Generalised EM is monotone; allow float rounding of a sum over ~140 images.
            assert!(
                w[1] >= w[0] - 1e-9 * w[0].abs().max(1.0),
                "class {c}: {:?}",
                m.ll_trace
            );
        }
        assert!(m.ll_trace.last().unwrap() > &m.ll_trace[0], "class {c}");
    }
    // More components fit the training data at least as well as one Gaussian per class.
    let mut one = DiagGaussian::default();
    one.fit(&train, 10, &mut SeededRng::new(4, 0), &DEV)
        .unwrap();
    assert!(g.log_likelihood(&train, &DEV).unwrap() > one.log_likelihood(&train, &DEV).unwrap());
}

fn small_vae() -> Vae {
    Vae::new(VaeOptions {
        min_steps: 600,
        batch_size: 64,
        iw_samples: 16,
        ..VaeOptions::default()
    })
}

#[test]
fn vae_learns_class_conditional_digits() {
    let (train, _) = images(DatasetKind::Digits);
    let mut vae = small_vae();
    vae.fit(&train, 10, &mut SeededRng::new(5, 0), &DEV)
        .unwrap();
    let trace = &vae.loss_trace;
    assert_eq!(trace.len(), 600 / synth::vae::LOSS_EVERY);
    // Loss decreases: the last 50-step mean is well below the first (mean negative ELBO
    // starts near 64 dims x 0.5 x (ln 2 pi + ln 0.05 + 1) ~ -10 nats, ends far lower).
    assert!(
        trace.last().unwrap() < &(trace[0] - 20.0),
        "loss trace {trace:?}"
    );
    let n = 500;
    let s = vae
        .sample(&[n; 10], &mut SeededRng::new(5, 1), &DEV)
        .unwrap();
    let data = class_moments(&train, 10);
    let got = class_moments(&s, 10);
    let dist = |a: &[f64], b: &[f64]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    // An untrained VAE (0 steps) is the baseline the trained one must improve on.
    let mut raw = Vae::new(VaeOptions {
        min_steps: 0,
        min_epochs: 0,
        ..VaeOptions::default()
    });
    raw.fit(&train, 10, &mut SeededRng::new(5, 0), &DEV)
        .unwrap();
    let before = class_moments(
        &raw.sample(&[n; 10], &mut SeededRng::new(5, 1), &DEV)
            .unwrap(),
        10,
    );
    for c in 0..10 {
        let own = dist(&got[c].0, &data[c].0);
        assert!(
            own < 0.5 * dist(&before[c].0, &data[c].0),
            "class {c}: trained {own}, untrained {}",
            dist(&before[c].0, &data[c].0)
        );
        // Class conditioning: class c's samples sit closer to class c's data mean than to any
        // other class's.
        for o in (0..10).filter(|&o| o != c) {
            assert!(
                own < dist(&got[c].0, &data[o].0),
                "class {c} samples are nearer class {o}"
            );
        }
    }
}

#[test]
fn same_seed_same_samples_for_every_generator() {
    let (train, _) = images(DatasetKind::Digits);
    let train = head(&train, 400);
    let kinds = [
        GeneratorKind::Gaussian,
        GeneratorKind::Gmm { components: 3 },
        GeneratorKind::Vae,
    ];
    for kind in kinds {
        let draw = |seed: u64| {
            let mut g: Box<dyn Generator> = match kind {
                GeneratorKind::Vae => Box::new(Vae::new(VaeOptions {
                    min_steps: 50,
                    ..VaeOptions::default()
                })),
                k => synth::build(k),
            };
            g.fit(&train, 10, &mut SeededRng::new(seed, 0), &DEV)
                .unwrap();
            g.sample(&[7; 10], &mut SeededRng::new(seed, 1), &DEV)
                .unwrap()
        };
        let a = draw(11);
        assert_eq!(a, draw(11), "{kind}: same seed, different samples");
        assert_ne!(a, draw(12), "{kind}: other seed, same samples");
        assert_eq!(a.len(), 70);
        assert_eq!(a.labels[0..7], [0; 7]);
    }
}

#[test]
fn likelihood_of_data_beats_noise_on_digits_and_mnist() {
    let (digits, digits_test) = images(DatasetKind::Digits);
    let (mnist, _) = images(DatasetKind::Mnist);
    // A 3000-image MNIST slice keeps the test short; fitting all 60k is timed in the README.
    let mnist = head(&mnist, 3000);
    for (name, train, test) in [
        ("digits", digits.clone(), Some(digits_test)),
        ("mnist", mnist, None),
    ] {
        let gens: Vec<Box<dyn Generator>> = vec![
            synth::build(GeneratorKind::Gaussian),
            synth::build(GeneratorKind::Gmm { components: 3 }),
            Box::new(Vae::new(VaeOptions {
                min_steps: 200,
                min_epochs: 1,
                iw_samples: 8,
                ..VaeOptions::default()
            })),
        ];
        for mut g in gens {
            g.fit(&train, 10, &mut SeededRng::new(6, 0), &DEV).unwrap();
            let on_data = g.log_likelihood(&train, &DEV).unwrap();
            let on_noise = g.log_likelihood(&noise_like(&train, 6), &DEV).unwrap();
            assert!(
                on_data.is_finite() && on_data > on_noise,
                "{name} {}: data {on_data}, noise {on_noise}",
                g.kind()
            );
            if let Some(t) = &test {
                let held_out = g.log_likelihood(t, &DEV).unwrap();
                assert!(held_out > on_noise, "{name} {}: held-out", g.kind());
            }
            assert!(g.fit_flops() > 0.0 && g.sample_flops(10) > 0.0);
            let s = g.sample(&[2; 10], &mut SeededRng::new(6, 1), &DEV).unwrap();
            assert_eq!(s.shape, train.shape);
            assert_eq!(s.images.len(), 20 * train.sample_len());
        }
    }
}

#[test]
fn bad_requests_are_typed_errors() {
    let (train, _) = images(DatasetKind::Digits);
    let only_01 = {
        let d = train.sample_len();
        let idx: Vec<usize> = (0..train.len()).filter(|&i| train.labels[i] < 2).collect();
        ImageSet {
            images: idx
                .iter()
                .flat_map(|&i| train.images[i * d..(i + 1) * d].to_vec())
                .collect(),
            labels: idx.iter().map(|&i| train.labels[i]).collect(),
            shape: train.shape,
        }
    };
    for kind in [
        GeneratorKind::Gaussian,
        GeneratorKind::Gmm { components: 2 },
    ] {
        let mut g = synth::build(kind);
        let e = g
            .sample(&[1; 10], &mut SeededRng::new(1, 0), &DEV)
            .unwrap_err();
        assert!(matches!(e, synth::SynthError::NotFitted), "{e}");
        g.fit(&only_01, 10, &mut SeededRng::new(1, 0), &DEV)
            .unwrap();
        // Classes without images can be asked for zero samples, not more.
        assert_eq!(
            g.sample(
                &[3, 3, 0, 0, 0, 0, 0, 0, 0, 0],
                &mut SeededRng::new(1, 1),
                &DEV
            )
            .unwrap()
            .len(),
            6
        );
        let e = g
            .sample(&[1; 10], &mut SeededRng::new(1, 1), &DEV)
            .unwrap_err();
        assert!(
            e.to_string().contains("class 2 had no training images"),
            "{e}"
        );
        let e = g
            .sample(&[1; 3], &mut SeededRng::new(1, 1), &DEV)
            .unwrap_err();
        assert!(matches!(
            e,
            synth::SynthError::CountsMismatch {
                got: 3,
                classes: 10
            }
        ));
        let e = g
            .log_likelihood(&interior_toy(2, 1, 5, 1), &DEV)
            .unwrap_err();
        assert!(matches!(
            e,
            synth::SynthError::ShapeMismatch {
                expected: 64,
                got: 5
            }
        ));
        let e = g
            .fit(&train, 5, &mut SeededRng::new(1, 0), &DEV)
            .unwrap_err();
        assert!(
            matches!(e, synth::SynthError::LabelOutOfRange { .. }),
            "{e}"
        );
    }
}
