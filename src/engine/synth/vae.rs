//! A small class-conditional VAE (Kingma and Welling 2014; Sohn et al. 2015) trained with candle.
//!
//! Encoder q(z | x, y): [x, onehot(y)] -> hidden (ReLU) -> (mu, log var) of a latent z.
//! Decoder p(x | z, y): [z, onehot(y)] -> hidden (ReLU) -> sigmoid mean m(z, y) in (0, 1), and a
//! Gaussian observation model N(m, diag(var)) with one learned variance per pixel,
//! var = `var_floor` + exp(s) (the same floor as the Gaussian and the GMM, so the three
//! generators' likelihoods are comparable densities on the same space). Prior p(z) = N(0, I).
//! Training maximises the ELBO with Adam. Every random number (initial weights, batch order,
//! the reparameterisation noise, sampling noise) comes from the seeded host RNG and is uploaded:
//! candle's CPU RNG cannot be seeded.
//!
//! `log_likelihood` is the importance-weighted bound L_K (Burda et al. 2016) with
//! `iw_samples` samples from q, a lower bound on log p(x | y) that tightens as K grows; its noise
//! comes from a stream of a seed drawn at fit time, so the number is deterministic.
//!
//! Why a loop of its own and not `train::train`: that is the classifier loop (cross-entropy on a
//! `RefModel`'s logits, eval cadence, stop at target); a VAE's loss is a negative ELBO over noise
//! it must be handed, and nothing of the eval machinery applies. This is the generator's `fit`;
//! it uses the project's conventions (host-seeded init through `ParamStore`, host batch order,
//! candle-nn's AdamW, the loss read from the device only every `LOSS_EVERY` steps).

use super::{by_class, check_dim, labels_of, standard_normal, Generator, GeneratorKind};
use super::{SynthError, LN_2PI, NORMAL_DRAW_FLOPS};
use crate::data::ImageSet;
use crate::engine::model::{linear_flops, ParamStore, SeededRng};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{AdamW, Linear, Optimizer, ParamsAdamW};

/// Steps between host reads of the training loss (`loss_trace`).
pub const LOSS_EVERY: usize = 50;

#[derive(Debug, Clone, PartialEq)]
pub struct VaeOptions {
    /// Hidden width; None: 128 for inputs of at most 256 values, else 400.
    pub hidden: Option<usize>,
    /// Latent dimension; None: 8 for inputs of at most 256 values, else 16.
    pub latent: Option<usize>,
    pub batch_size: usize,
    pub lr: f64,
    /// Train for max(min_epochs epochs, min_steps steps): a few epochs of MNIST (3 x 469 steps
    /// at batch 128), and enough steps to converge on tens of digits.
    pub min_epochs: usize,
    pub min_steps: usize,
    pub var_floor: f64,
    /// Importance samples per image in `log_likelihood`.
    pub iw_samples: usize,
}

impl Default for VaeOptions {
    fn default() -> Self {
        Self {
            hidden: None,
            latent: None,
            batch_size: 128,
            lr: 1e-3,
            min_epochs: 3,
            min_steps: 1500,
            var_floor: super::gaussian::DEFAULT_VAR_FLOOR,
            iw_samples: 32,
        }
    }
}

struct Net {
    enc: Linear,
    enc_mu: Linear,
    enc_lv: Linear,
    dec: Linear,
    dec_out: Linear,
    /// Unconstrained per-pixel observation log-variance offset s: var = floor + exp(s).
    obs_s: Tensor,
    params: ParamStore,
}

/// What `fit` leaves behind.
struct Fitted {
    net: Net,
    classes: usize,
    has_class: Vec<bool>,
    shape: [usize; 3],
    eval_seed: u64,
}

pub struct Vae {
    pub opts: VaeOptions,
    fitted: Option<Fitted>,
    fit_flops: f64,
    /// Mean training loss (negative ELBO per image, nats) every `LOSS_EVERY` steps of the last
    /// fit.
    pub loss_trace: Vec<f64>,
    pub steps: usize,
}

impl Vae {
    pub fn new(opts: VaeOptions) -> Self {
        Self {
            opts,
            fitted: None,
            fit_flops: 0.0,
            loss_trace: Vec::new(),
            steps: 0,
        }
    }

    fn sizes(&self, d: usize) -> (usize, usize) {
        let small = d <= 256;
        (
            self.opts.hidden.unwrap_or(if small { 128 } else { 400 }),
            self.opts.latent.unwrap_or(if small { 8 } else { 16 }),
        )
    }

    /// Forward FLOPs of the encoder and of the decoder, per image.
    fn forward_flops(&self, d: usize, classes: usize) -> (f64, f64) {
        let (h, z) = self.sizes(d);
        let enc = linear_flops(d + classes, h) + 2 * linear_flops(h, z);
        let dec = linear_flops(z + classes, h) + linear_flops(h, d);
        (enc as f64, dec as f64)
    }
}

fn normals(rng: &mut SeededRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| standard_normal(rng) as f32).collect()
}

fn one_hot(labels: &[u8], classes: usize, device: &Device) -> candle_core::Result<Tensor> {
    let mut v = vec![0f32; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        v[i * classes + l as usize] = 1.0;
    }
    Tensor::from_vec(v, (labels.len(), classes), device)
}

impl Net {
    fn new(
        d: usize,
        classes: usize,
        hidden: usize,
        latent: usize,
        rng: &mut SeededRng,
        dev: &Device,
    ) -> candle_core::Result<Self> {
        let mut p = ParamStore::default();
        let mut lin = |name: &str, fi: usize, fo: usize| -> candle_core::Result<Linear> {
            let w = p.uniform(&format!("{name}.weight"), &[fo, fi], fi, rng, dev)?;
            let b = p.uniform(&format!("{name}.bias"), &[fo], fi, rng, dev)?;
            Ok(Linear::new(w, Some(b)))
        };
        let enc = lin("enc", d + classes, hidden)?;
        let enc_mu = lin("enc_mu", hidden, latent)?;
        let enc_lv = lin("enc_lv", hidden, latent)?;
        let dec = lin("dec", latent + classes, hidden)?;
        let dec_out = lin("dec_out", hidden, d)?;
        // exp(s) = 0.05 at the start: about the per-pixel variance of the digits.
        let obs_s = p.constant("obs_s", &[d], 0.05f32.ln(), dev)?;
        Ok(Self {
            enc,
            enc_mu,
            enc_lv,
            dec,
            dec_out,
            obs_s,
            params: p,
        })
    }

    fn encode(&self, x: &Tensor, y: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let h = self.enc.forward(&Tensor::cat(&[x, y], 1)?)?.relu()?;
        Ok((self.enc_mu.forward(&h)?, self.enc_lv.forward(&h)?))
    }

    fn decode(&self, z: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.dec.forward(&Tensor::cat(&[z, y], 1)?)?.relu()?;
        candle_nn::ops::sigmoid(&self.dec_out.forward(&h)?)
    }

    fn obs_var(&self, floor: f64) -> candle_core::Result<Tensor> {
        self.obs_s.exp()? + floor
    }

    /// log N(x; m, diag(var)) per row.
    fn log_px(&self, x: &Tensor, m: &Tensor, var: &Tensor) -> candle_core::Result<Tensor> {
        let d = x.dim(1)? as f64;
        let q = (x - m)?.sqr()?.broadcast_div(var)?.sum(1)?;
        let ln_det = var.log()?.sum_all()?;
        (q + d * LN_2PI)?.broadcast_add(&ln_det)? * -0.5
    }

    /// Negative ELBO per row: KL(q || p) - E_q log p(x | z, y), one sample of z.
    fn neg_elbo(
        &self,
        x: &Tensor,
        y: &Tensor,
        eps: &Tensor,
        floor: f64,
    ) -> candle_core::Result<Tensor> {
        let (mu, lv) = self.encode(x, y)?;
        let z = (&mu + (&lv * 0.5)?.exp()?.mul(eps)?)?;
        let m = self.decode(&z, y)?;
        let rec = self.log_px(x, &m, &self.obs_var(floor)?)?;
        let kl = ((mu.sqr()? + lv.exp()? - &lv)? - 1.0)?.sum(1)? * 0.5;
        kl? - rec
    }
}

impl Generator for Vae {
    fn kind(&self) -> GeneratorKind {
        GeneratorKind::Vae
    }

    fn describe(&self) -> String {
        let d = self
            .fitted
            .as_ref()
            .map_or(784, |f| f.shape.iter().product());
        let (h, z) = self.sizes(d);
        format!(
            "class-conditional VAE: hidden {h}, latent {z}, Gaussian decoder with per-pixel \
             variance (floor {}), Adam lr {}, batch {}, max({} epochs, {} steps), log-likelihood \
             = importance-weighted ELBO with {} samples (a lower bound)",
            self.opts.var_floor,
            self.opts.lr,
            self.opts.batch_size,
            self.opts.min_epochs,
            self.opts.min_steps,
            self.opts.iw_samples
        )
    }

    fn fit(
        &mut self,
        train: &ImageSet,
        classes: usize,
        rng: &mut SeededRng,
        device: &Device,
    ) -> Result<(), SynthError> {
        if train.is_empty() {
            return Err(SynthError::NoData);
        }
        let floor_ok = self.opts.var_floor > 0.0 && self.opts.var_floor.is_finite();
        if self.opts.batch_size == 0 || self.opts.iw_samples == 0 || !floor_ok {
            return Err(SynthError::InvalidOption(format!("{:?}", self.opts)));
        }
        let groups = by_class(train, classes)?;
        let d = train.sample_len();
        let n = train.len();
        let (hidden, latent) = self.sizes(d);
        let net = Net::new(d, classes, hidden, latent, rng, device)?;
        let eval_seed = rng.below(1 << 62) as u64;
        let x_all = Tensor::from_slice(&train.images, (n, d), device)?;
        let y_all = one_hot(&train.labels, classes, device)?;
        let mut opt = AdamW::new(
            net.params.vars(),
            ParamsAdamW {
                lr: self.opts.lr,
                weight_decay: 0.0,
                ..ParamsAdamW::default()
            },
        )?;
        let bs = self.opts.batch_size.min(n);
        let per_epoch = n / bs;
        let steps = (self.opts.min_epochs * per_epoch).max(self.opts.min_steps);
        let mut perm: Vec<u32> = (0..n as u32).collect();
        let mut loss_sum = Tensor::zeros((), DType::F32, device)?;
        self.loss_trace.clear();
        for step in 0..steps {
            let b = step % per_epoch;
            if b == 0 {
                rng.shuffle(&mut perm);
            }
            let idx = Tensor::from_slice(&perm[b * bs..(b + 1) * bs], bs, device)?;
            let x = x_all.index_select(&idx, 0)?;
            let y = y_all.index_select(&idx, 0)?;
            let eps = Tensor::from_vec(normals(rng, bs * latent), (bs, latent), device)?;
            let loss = net
                .neg_elbo(&x, &y, &eps, self.opts.var_floor)?
                .mean_all()?;
            opt.backward_step(&loss)?;
            loss_sum = (loss_sum + loss.detach())?;
            if (step + 1) % LOSS_EVERY == 0 {
                self.loss_trace
                    .push(loss_sum.to_scalar::<f32>()? as f64 / LOSS_EVERY as f64);
                loss_sum = Tensor::zeros((), DType::F32, device)?;
            }
        }
        let (enc, dec) = self.forward_flops(d, classes);
        self.fit_flops = steps as f64 * bs as f64 * 3.0 * (enc + dec);
        self.steps = steps;
        self.fitted = Some(Fitted {
            net,
            classes,
            has_class: groups.iter().map(|g| !g.is_empty()).collect(),
            shape: train.shape,
            eval_seed,
        });
        Ok(())
    }

    fn sample(
        &self,
        counts: &[usize],
        rng: &mut SeededRng,
        device: &Device,
    ) -> Result<ImageSet, SynthError> {
        let f = self.fitted.as_ref().ok_or(SynthError::NotFitted)?;
        super::check_counts(counts, f.classes)?;
        if let Some(c) = (0..f.classes).find(|&c| counts[c] > 0 && !f.has_class[c]) {
            return Err(SynthError::EmptyClass { class: c });
        }
        // Sampling and scoring only read the fitted network: no graph is recorded.
        candle_core::no_grad(|| self.sample_fitted(f, counts, rng, device))
    }

    fn log_likelihood(&self, data: &ImageSet, device: &Device) -> Result<f64, SynthError> {
        let f = self.fitted.as_ref().ok_or(SynthError::NotFitted)?;
        candle_core::no_grad(|| self.log_likelihood_fitted(f, data, device))
    }

    fn fit_flops(&self) -> f64 {
        self.fit_flops
    }

    fn sample_flops(&self, n: usize) -> f64 {
        let Some(f) = &self.fitted else {
            return 0.0;
        };
        let d: usize = f.shape.iter().product();
        let (_, z) = self.sizes(d);
        let (_, dec) = self.forward_flops(d, f.classes);
        n as f64 * (dec + z as f64 * NORMAL_DRAW_FLOPS + d as f64 * (NORMAL_DRAW_FLOPS + 4.0))
    }
}

impl Vae {
    fn sample_fitted(
        &self,
        f: &Fitted,
        counts: &[usize],
        rng: &mut SeededRng,
        device: &Device,
    ) -> Result<ImageSet, SynthError> {
        let labels = labels_of(counts);
        let d: usize = f.shape.iter().product();
        let latent = f.net.enc_mu.weight().dim(0)?;
        let sd = f.net.obs_var(self.opts.var_floor)?.sqrt()?;
        let mut images = Vec::with_capacity(labels.len() * d);
        for chunk in labels.chunks(4096) {
            let b = chunk.len();
            let z = Tensor::from_vec(normals(rng, b * latent), (b, latent), device)?;
            let m = f.net.decode(&z, &one_hot(chunk, f.classes, device)?)?;
            let noise = Tensor::from_vec(normals(rng, b * d), (b, d), device)?;
            let x = (m + noise.broadcast_mul(&sd)?)?.clamp(0f32, 1f32)?;
            images.extend(x.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(ImageSet {
            images,
            labels,
            shape: f.shape,
        })
    }

    fn log_likelihood_fitted(
        &self,
        f: &Fitted,
        data: &ImageSet,
        device: &Device,
    ) -> Result<f64, SynthError> {
        let d: usize = f.shape.iter().product();
        check_dim(d, data)?;
        let groups = by_class(data, f.classes)?;
        if let Some(c) = (0..f.classes).find(|&c| !groups[c].is_empty() && !f.has_class[c]) {
            return Err(SynthError::EmptyClass { class: c });
        }
        let k = self.opts.iw_samples;
        let latent = f.net.enc_mu.weight().dim(0)?;
        let mut rng = SeededRng::new(f.eval_seed, 2);
        let var = f.net.obs_var(self.opts.var_floor)?;
        let mut total = 0.0;
        // Images per chunk, so a chunk holds about 8k rows of K copies.
        let per_chunk = (8192 / k).max(1);
        for start in (0..data.len()).step_by(per_chunk) {
            let b = per_chunk.min(data.len() - start);
            let x = Tensor::from_slice(&data.images[start * d..(start + b) * d], (b, d), device)?;
            let y = one_hot(&data.labels[start..start + b], f.classes, device)?;
            let (mu, lv) = f.net.encode(&x, &y)?;
            // Rows ordered image-major: row i*K + j is sample j of image i.
            let rep = |t: &Tensor| -> candle_core::Result<Tensor> {
                let w = t.dim(1)?;
                t.unsqueeze(1)?.repeat((1, k, 1))?.reshape((b * k, w))
            };
            let (mu, lv, xk, yk) = (rep(&mu)?, rep(&lv)?, rep(&x)?, rep(&y)?);
            let eps = Tensor::from_vec(normals(&mut rng, b * k * latent), (b * k, latent), device)?;
            let z = (&mu + (&lv * 0.5)?.exp()?.mul(&eps)?)?;
            let log_px = f.net.log_px(&xk, &f.net.decode(&z, &yk)?, &var)?;
            let zl = latent as f64 * LN_2PI;
            let log_pz = ((z.sqr()?.sum(1)? + zl)? * -0.5)?;
            let log_qz = (((eps.sqr()? + &lv)?.sum(1)? + zl)? * -0.5)?;
            let log_w = ((log_px + log_pz)? - log_qz)?.reshape((b, k))?;
            let m = log_w.max_keepdim(D::Minus1)?;
            let lse = (log_w
                .broadcast_sub(&m)?
                .exp()?
                .sum_keepdim(D::Minus1)?
                .log()?
                + m)?;
            total += (lse - (k as f64).ln())?.sum_all()?.to_scalar::<f32>()? as f64;
        }
        Ok(total / data.len().max(1) as f64)
    }
}
