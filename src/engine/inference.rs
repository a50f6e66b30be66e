//! Inference energy of a trained model, and the training-vs-serving break-even.
//!
//! Owns: measuring joules per 1,000 predictions on the held-out set at batch 1 and at a large
//! batch, each in its own `MeasuredWindow` on the run's meter, after training and outside its
//! window (so it never counts in ETT); the `inference` key of the run file; and the break-even
//! N* = (ETT_variant - ETT_baseline) / (e_baseline - e_variant) with every case named.
//! Must not: train, choose a meter or write files.
//!
//! A window shorter than 5 s is unreliable (docs/design/measurement.md section 2), so each batch size loops
//! over the held-out set (wrapping round) until its window has lasted `min_window_s` and covered
//! the whole set at least once, or until `max_window_s` (then flagged `partial_pass`); a window
//! that still ends short keeps the `short_window` flag. The device is synchronised at every edge by the window, and every 32 batches (through a
//! window mark) so the clock never runs ahead of queued GPU work. Predictions are the model's
//! argmax per sample (text: per token, `predictions_per_sample` = context).

use crate::engine::model::RefModel;
use crate::engine::prepare::Prepared;
use crate::measure::{Boundary, ComponentEnergy, MeasuredWindow, Meter, MeterError};
use crate::record::inference::{InferenceMeasurement, InferenceReport};
use candle_core::{Device, D};

/// Batch sizes and window bounds of an inference measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct InferenceOptions {
    /// Default `[1, 1024]` (clamped to the held-out set's size).
    pub batches: Vec<usize>,
    /// Keep predicting until the window is at least this long (above the 5 s short-window limit)
    /// and at least one full pass over the held-out set is done.
    pub min_window_s: f64,
    /// Stop here even before a full pass over the held-out set (slow models at batch 1; the
    /// measurement is then flagged `partial_pass`).
    pub max_window_s: f64,
    /// Unmeasured forward passes per batch size before its window opens.
    pub warmup_batches: usize,
}

impl Default for InferenceOptions {
    fn default() -> Self {
        Self {
            batches: vec![1, 1024],
            min_window_s: 6.0,
            max_window_s: 20.0,
            warmup_batches: 3,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("inference: {0}")]
    Model(#[from] candle_core::Error),
    #[error("inference meter: {0}")]
    Meter(#[from] MeterError),
    #[error("inference: {0}")]
    Options(String),
}

/// The boundary covered by a window's components (the meter's own when it names none).
pub fn window_boundary(components: &[ComponentEnergy], meter: &dyn Meter) -> Boundary {
    let infos = meter.components();
    components
        .iter()
        .filter_map(|c| infos.iter().find(|i| i.component == c.component))
        .map(|i| i.boundary)
        .reduce(|a, b| a.union(b))
        .unwrap_or(meter.boundary())
}

/// Measure inference energy of `model` on `p`'s held-out set at each batch size of `opts`.
/// The forward passes run under `candle_core::no_grad`, as a deployed model's would (PyTorch's
/// `torch.no_grad()`): no graph is recorded and each intermediate is freed once read.
pub fn measure(
    model: &dyn RefModel,
    p: &Prepared,
    meter: &mut dyn Meter,
    device: &Device,
    idle_w: Option<f64>,
    opts: &InferenceOptions,
) -> Result<InferenceReport, InferenceError> {
    candle_core::no_grad(|| measure_batches(model, p, meter, device, idle_w, opts))
}

fn measure_batches(
    model: &dyn RefModel,
    p: &Prepared,
    meter: &mut dyn Meter,
    device: &Device,
    idle_w: Option<f64>,
    opts: &InferenceOptions,
) -> Result<InferenceReport, InferenceError> {
    if p.n_eval == 0 {
        return Err(InferenceError::Options("empty held-out set".into()));
    }
    if opts.batches.is_empty() || opts.batches.contains(&0) {
        return Err(InferenceError::Options(format!(
            "batch sizes must be at least 1, got {:?}",
            opts.batches
        )));
    }
    if !(opts.min_window_s >= 0.0 && opts.max_window_s >= opts.min_window_s) {
        return Err(InferenceError::Options(format!(
            "window bounds {}..{} s",
            opts.min_window_s, opts.max_window_s
        )));
    }
    let per_sample = (p.eval_predictions / p.n_eval).max(1);
    let mut batches: Vec<usize> = opts.batches.iter().map(|&b| b.min(p.n_eval)).collect();
    batches.dedup();
    let mut out = Vec::new();
    for batch in batches {
        // Warm-up (allocations, kernel selection): not measured.
        for k in 0..opts.warmup_batches {
            let start = (k * batch) % p.n_eval;
            let len = batch.min(p.n_eval - start);
            let x = p.eval_x.narrow(0, start, len)?;
            drop(model.forward_t(&x, false)?.argmax(D::Minus1)?);
        }
        let mut window = MeasuredWindow::open(meter, device)?;
        let mut samples = 0usize;
        let mut start = 0usize;
        let mut k = 0usize;
        let run = (|| -> Result<(), InferenceError> {
            loop {
                let len = batch.min(p.n_eval - start);
                let x = p.eval_x.narrow(0, start, len)?;
                // The predicted class per sample stays on the device: no host copy per batch.
                let pred = model.forward_t(&x, false)?.argmax(D::Minus1)?;
                drop(pred);
                samples += len;
                start = (start + len) % p.n_eval;
                k += 1;
                let full_pass = samples >= p.n_eval;
                if k.is_multiple_of(32) || (full_pass && window.elapsed_s() >= opts.min_window_s) {
                    // Synchronise (through a mark) so the clock counts finished work only.
                    window.mark()?;
                    let t = window.elapsed_s();
                    if (t >= opts.min_window_s && full_pass) || t >= opts.max_window_s {
                        return Ok(());
                    }
                }
            }
        })();
        let report = window.close()?;
        run?;
        let energy_j = report.total_j();
        let time_s = report.duration_s;
        let predictions = samples * per_sample;
        let comps = report.report.components.clone();
        let mut flags = report.report.flags.clone();
        if samples < p.n_eval {
            flags.push("partial_pass".into());
        }
        let per_1000 = |j: f64| 1000.0 * j / predictions.max(1) as f64;
        out.push(InferenceMeasurement {
            batch,
            samples,
            predictions,
            passes: samples as f64 / p.n_eval as f64,
            energy_j,
            time_s,
            j_per_1000: per_1000(energy_j),
            net_j_per_1000: idle_w.map(|w| per_1000(energy_j - w * time_s)),
            average_power_w: if time_s > 0.0 { energy_j / time_s } else { 0.0 },
            boundary: window_boundary(&comps, meter),
            all_measured: !comps.is_empty() && comps.iter().all(|c| c.source.is_measured()),
            components: comps,
            flags,
        });
    }
    Ok(InferenceReport {
        eval_samples: p.n_eval,
        predictions_per_sample: per_sample,
        measurements: out,
        error: None,
        method: format!(
            "trained model, eval mode, argmax per sample; own measured window per batch size after training (not in ETT); loops over the held-out set until the window lasts {} s and covers the set once (cap {} s); {} unmeasured warm-up batches",
            opts.min_window_s, opts.max_window_s, opts.warmup_batches
        ),
    })
}

/// `measure`, with a failure recorded in the report instead of returned, so an inference
/// problem never loses the training run it follows.
pub fn measure_or_note(
    model: &dyn RefModel,
    p: &Prepared,
    meter: &mut dyn Meter,
    device: &Device,
    idle_w: Option<f64>,
    opts: &InferenceOptions,
) -> InferenceReport {
    measure(model, p, meter, device, idle_w, opts).unwrap_or_else(|e| InferenceReport {
        eval_samples: p.n_eval,
        predictions_per_sample: (p.eval_predictions / p.n_eval.max(1)).max(1),
        measurements: Vec::new(),
        method: String::new(),
        error: Some(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::inference::{break_even, BreakEven};

    #[test]
    fn break_even_cases_hand_computed() {
        // Variant costs 1,000 J more to train, saves 0.5 mJ per prediction: 2,000,000 predictions.
        assert_eq!(
            break_even(3000.0, 2000.0, 0.0015, 0.0020),
            BreakEven::PaysBackAfter { predictions: 2.0e6 }
        );
        // Cheaper to train and to serve.
        assert_eq!(
            break_even(1000.0, 2000.0, 0.001, 0.002),
            BreakEven::CheaperOnBoth
        );
        // Same training, cheaper serving: better from the start.
        assert_eq!(
            break_even(2000.0, 2000.0, 0.001, 0.002),
            BreakEven::CheaperOnBoth
        );
        // Cheaper to serve, same training... and cheaper training, same serving.
        assert_eq!(
            break_even(1000.0, 2000.0, 0.002, 0.002),
            BreakEven::CheaperOnBoth
        );
        // Dearer to train, dearer or equal to serve: never.
        assert_eq!(
            break_even(3000.0, 2000.0, 0.003, 0.002),
            BreakEven::NeverPaysBack
        );
        assert_eq!(
            break_even(3000.0, 2000.0, 0.002, 0.002),
            BreakEven::NeverPaysBack
        );
        assert_eq!(
            break_even(2000.0, 2000.0, 0.003, 0.002),
            BreakEven::NeverPaysBack
        );
        // Cheaper to train by 500 J, dearer to serve by 1 mJ: ahead for 500,000 predictions.
        assert_eq!(
            break_even(1500.0, 2000.0, 0.003, 0.002),
            BreakEven::AdvantageLostAfter {
                predictions: 500_000.0
            }
        );
        assert_eq!(
            break_even(2000.0, 2000.0, 0.002, 0.002),
            BreakEven::Identical
        );
        // NaN input (a missing figure) never claims a payback.
        assert_eq!(
            break_even(f64::NAN, 2000.0, 0.001, 0.002),
            BreakEven::NeverPaysBack
        );
        assert!(BreakEven::PaysBackAfter { predictions: 2.0e6 }
            .describe()
            .contains("2,000,000"));
        assert!(BreakEven::PaysBackAfter {
            predictions: 1234.2
        }
        .describe()
        .contains("1,235"));
        assert!(BreakEven::PaysBackAfter { predictions: 999.0 }
            .describe()
            .contains("999 "));
        assert!(BreakEven::PaysBackAfter {
            predictions: 2.5e12
        }
        .describe()
        .contains("2.500e12"));
    }

    #[test]
    fn options_are_checked() {
        let o = InferenceOptions::default();
        assert_eq!(o.batches, vec![1, 1024]);
        assert!(o.min_window_s > crate::measure::window::SHORT_WINDOW_S);
    }
}
