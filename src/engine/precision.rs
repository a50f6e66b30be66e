//! Mixed precision: which dtype each op class runs in, what actually ran, dynamic loss scaling
//! and TF32.
//!
//! Owns: `Cast`, the compute-dtype policy a model's forward pass follows (PyTorch autocast's
//! split: GEMMs and convolutions in the low precision, softmax, normalisation and the loss in
//! f32) and the record of the dtypes the ops actually ran in; the capability probe that decides
//! a fallback (candle's CPU backend has no bf16 conv2d); `LossScaler` (dynamic loss scaling for
//! f16); the TF32 switch for f32 GEMMs on CUDA.
//! Must not: hold weights or step an optimizer. Master weights stay f32 `Var`s in the model;
//! the casts here are `to_dtype` autograd ops, so gradients arrive on the masters as f32.
//!
//! Policy where the backend cannot run an op in the low precision: the op runs in f32 and the
//! run file's `variant.precision_report` says so with the backend's own error (for example
//! `conv2d: "f32 (bf16 unsupported on cpu: ...)"`). A run is never labelled bf16 while all its
//! work ran in f32: if no matmul could run in the low precision the run fails with that reason.

use crate::spec::variant::Precision;
use candle_core::{DType, Device, Module, Result, Tensor};
// The layers are the CPU-kernel ones (see kernels); on other dtypes and devices they run
// candle's ops, so casting their weights gives the low-precision GEMM or convolution.
use crate::engine::kernels::{Conv2d, Linear};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, thiserror::Error)]
pub enum PrecisionError {
    #[error("precision '{precision}' needs a CUDA device (TF32 is an NVIDIA tensor-core mode for f32 GEMMs); this run is on {device}: use --device cuda, or f32")]
    Tf32NeedsCuda { precision: String, device: String },
    #[error("precision '{precision}' cannot run on {device}: {dtype} matmul is unsupported there ({reason})")]
    Unsupported {
        precision: String,
        device: String,
        dtype: String,
        reason: String,
    },
}

/// The backend refused an op in a dtype; shown as the first line of candle's error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{first_line}")]
pub struct BackendRefusal {
    /// `matmul` or `conv2d`.
    pub op: &'static str,
    pub dtype: &'static str,
    pub first_line: String,
}

pub fn dtype_name(dt: DType) -> &'static str {
    match dt {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        DType::F64 => "f64",
        DType::U8 => "u8",
        DType::U32 => "u32",
        DType::I64 => "i64",
        _ => "other",
    }
}

fn device_name(d: &Device) -> &'static str {
    match d {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "metal",
    }
}

/// The compute-dtype policy of one forward pass, and the record of what ran.
pub struct Cast {
    /// GEMMs (linear layers, attention products).
    matmul: DType,
    /// Convolutions (may differ from `matmul` when the backend lacks the low-precision kernel).
    conv: DType,
    conv_note: Option<String>,
    /// Whether f32 GEMMs run on TF32 tensor cores (set globally; recorded here).
    tf32: bool,
    seen: RefCell<BTreeMap<&'static str, BTreeSet<&'static str>>>,
}

impl Cast {
    /// Everything in f32, nothing recorded: evaluation and the f32 baseline.
    pub fn f32() -> Cast {
        Cast {
            matmul: DType::F32,
            conv: DType::F32,
            conv_note: None,
            tf32: false,
            seen: RefCell::new(BTreeMap::new()),
        }
    }

    /// The policy of `precision` on `device`, after probing what the backend can run.
    pub fn for_precision(
        precision: Precision,
        device: &Device,
    ) -> std::result::Result<Cast, PrecisionError> {
        let low = match precision {
            Precision::F32 => return Ok(Cast::f32()),
            Precision::Tf32 => {
                if !device.is_cuda() {
                    return Err(PrecisionError::Tf32NeedsCuda {
                        precision: precision.as_str().into(),
                        device: device_name(device).into(),
                    });
                }
                return Ok(Cast {
                    tf32: true,
                    ..Cast::f32()
                });
            }
            Precision::Bf16Amp => DType::BF16,
            Precision::F16Amp => DType::F16,
        };
        if let Err(e) = probe_matmul(device, low) {
            return Err(PrecisionError::Unsupported {
                precision: precision.as_str().into(),
                device: device_name(device).into(),
                dtype: dtype_name(low).into(),
                reason: e.to_string(),
            });
        }
        let (conv, conv_note) = match probe_conv2d(device, low) {
            Ok(()) => (low, None),
            Err(e) => (
                DType::F32,
                Some(format!(
                    "{} unsupported on {}: {e}",
                    dtype_name(low),
                    device_name(device)
                )),
            ),
        };
        Ok(Cast {
            matmul: low,
            conv,
            conv_note,
            tf32: false,
            seen: RefCell::new(BTreeMap::new()),
        })
    }

    pub fn is_f32(&self) -> bool {
        self.matmul == DType::F32 && self.conv == DType::F32
    }

    pub fn matmul_dtype(&self) -> DType {
        self.matmul
    }

    fn note(&self, op: &'static str, dt: DType) {
        if let Ok(mut s) = self.seen.try_borrow_mut() {
            s.entry(op).or_default().insert(dtype_name(dt));
        }
    }

    /// A linear layer with weight and bias cast to the GEMM dtype; output in that dtype.
    pub fn linear(&self, l: &Linear, x: &Tensor) -> Result<Tensor> {
        let dt = self.matmul;
        let y = if dt == DType::F32 && x.dtype() == DType::F32 {
            l.forward(x)?
        } else {
            let w = l.weight().to_dtype(dt)?;
            let b = l.bias().map(|b| b.to_dtype(dt)).transpose()?;
            Linear::new(w, b).forward(&x.to_dtype(dt)?)?
        };
        self.note("matmul", y.dtype());
        Ok(y)
    }

    /// A product of two activations (attention scores, weighted values) in the GEMM dtype,
    /// recorded as the `attention` op class.
    pub fn matmul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let dt = self.matmul;
        let y = a.to_dtype(dt)?.matmul(&b.to_dtype(dt)?)?;
        self.note("attention", y.dtype());
        Ok(y)
    }

    /// A convolution in the conv dtype (f32 where the backend lacks the low-precision kernel).
    pub fn conv2d(&self, c: &Conv2d, x: &Tensor) -> Result<Tensor> {
        let dt = self.conv;
        let y = if dt == DType::F32 && x.dtype() == DType::F32 {
            c.forward(x)?
        } else {
            let w = c.weight().to_dtype(dt)?;
            let b = c.bias().to_dtype(dt)?;
            Conv2d::new(w, b, c.padding(), c.stride()).forward(&x.to_dtype(dt)?)?
        };
        self.note("conv2d", y.dtype());
        Ok(y)
    }

    /// Ops autocast keeps in f32 (softmax, layer norm): input cast up, result f32.
    pub fn f32_op(
        &self,
        op: &'static str,
        x: &Tensor,
        f: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let y = f(&x.to_dtype(DType::F32)?)?;
        self.note(op, y.dtype());
        Ok(y)
    }

    /// Element-wise activations run in the dtype they are given; recorded.
    pub fn activation(&self, y: Tensor) -> Tensor {
        self.note("activation", y.dtype());
        y
    }

    /// Back to f32 (residual stream, logits for the loss).
    pub fn to_f32(&self, x: &Tensor) -> Result<Tensor> {
        x.to_dtype(DType::F32)
    }

    /// Which dtype each op class ran in, as observed, plus the fixed parts of the recipe.
    pub fn report(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let seen = self.seen.borrow();
        for (op, dts) in seen.iter() {
            let mut s = dts.iter().copied().collect::<Vec<_>>().join("+");
            if *op == "matmul" && self.tf32 && s == "f32" {
                s = "tf32 (f32 storage, TF32 tensor-core GEMM)".into();
            }
            if *op == "conv2d" {
                if let Some(n) = &self.conv_note {
                    s = format!("{s} ({n})");
                }
            }
            out.insert(op.to_string(), s);
        }
        out.insert("master_weights".into(), "f32".into());
        out.insert("optimizer".into(), "f32".into());
        out.insert("loss".into(), "f32".into());
        out.insert("eval".into(), "f32".into());
        out
    }

    /// True when at least one GEMM or convolution actually ran in a low precision (or TF32).
    pub fn ran_low_precision(&self) -> bool {
        self.tf32
            || self
                .seen
                .borrow()
                .iter()
                .filter(|(op, _)| matches!(**op, "matmul" | "conv2d" | "attention"))
                .any(|(_, d)| d.iter().any(|x| *x != "f32"))
    }
}

/// What candle would run each precision variant in on `device`, for a model with every op
/// class (`joulebench env`): the storage dtypes its cast policy would take (a convolution in
/// f32 where the backend has no low-precision kernel, as probed), classified by candle's code
/// paths and `caps`. An `Err` is why the precision cannot run there at all.
pub fn engine_table(
    device: &Device,
    caps: &crate::spec::precision::Capabilities,
) -> Vec<(
    Precision,
    std::result::Result<crate::spec::precision::PrecisionReport, PrecisionError>,
)> {
    [Precision::Tf32, Precision::Bf16Amp, Precision::F16Amp]
        .into_iter()
        .map(|p| {
            let cast = match Cast::for_precision(p, device) {
                Ok(c) => c,
                Err(e) => return (p, Err(e)),
            };
            let low = dtype_name(cast.matmul);
            let heavy = if cast.tf32 {
                "tf32".to_string()
            } else {
                low.to_string()
            };
            let conv = match &cast.conv_note {
                Some(n) => format!("f32 ({n})"),
                None => heavy.clone(),
            };
            let observed: BTreeMap<String, String> = [
                ("matmul", heavy.clone()),
                ("conv2d", conv),
                ("attention", low.to_string()),
                ("layer_norm", "f32".to_string()),
                ("activation", low.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            let r = crate::spec::precision::candle_report(p, device.is_cuda(), caps, &observed);
            (p, Ok(r))
        })
        .collect()
}

fn probe_matmul(device: &Device, dt: DType) -> std::result::Result<(), BackendRefusal> {
    let run = || -> Result<()> {
        let a = Tensor::ones((4, 4), DType::F32, device)?.to_dtype(dt)?;
        a.matmul(&a)?
            .to_dtype(DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()?;
        Ok(())
    };
    run().map_err(|e| refusal("matmul", dt, e))
}

/// Whether the backend runs a conv2d (forward and backward) in `dt`.
pub fn probe_conv2d(device: &Device, dt: DType) -> std::result::Result<(), BackendRefusal> {
    let run = || -> Result<()> {
        let w = candle_core::Var::from_tensor(&Tensor::ones((2, 1, 3, 3), DType::F32, device)?)?;
        let x = Tensor::ones((1, 1, 5, 5), DType::F32, device)?.to_dtype(dt)?;
        let y = x.conv2d(&w.as_tensor().to_dtype(dt)?, 1, 1, 1, 1)?;
        let g = y.to_dtype(DType::F32)?.sum_all()?.backward()?;
        g.get(w.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg("no gradient".into()))?
            .sum_all()?
            .to_scalar::<f32>()?;
        Ok(())
    };
    run().map_err(|e| refusal("conv2d", dt, e))
}

fn refusal(op: &'static str, dt: DType, e: candle_core::Error) -> BackendRefusal {
    BackendRefusal {
        op,
        dtype: dtype_name(dt),
        first_line: first_line(e),
    }
}

fn first_line(e: candle_core::Error) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

/// The precision recipe of one run: the forward-pass policy and, for f16, the loss scaler.
pub struct Amp {
    pub cast: Cast,
    pub scaler: Option<LossScaler>,
}

impl Amp {
    pub fn f32() -> Amp {
        Amp {
            cast: Cast::f32(),
            scaler: None,
        }
    }

    pub fn for_precision(
        precision: Precision,
        device: &Device,
    ) -> std::result::Result<Amp, PrecisionError> {
        Ok(Amp {
            cast: Cast::for_precision(precision, device)?,
            scaler: (precision == Precision::F16Amp)
                .then(|| LossScaler::new(INITIAL_SCALE, GROWTH_INTERVAL)),
        })
    }
}

/// Switches f32 GEMMs to TF32 on CUDA for as long as it lives (a global cuBLAS setting in
/// candle), and back to full f32 when dropped, so an f32 run after a tf32 run is f32.
pub struct Tf32Guard {
    on: bool,
}

impl Tf32Guard {
    pub fn new(on: bool) -> Tf32Guard {
        if on {
            candle_core::cuda::set_gemm_reduced_precision_f32(true);
        }
        Tf32Guard { on }
    }
}

impl Drop for Tf32Guard {
    fn drop(&mut self) {
        if self.on {
            candle_core::cuda::set_gemm_reduced_precision_f32(false);
        }
    }
}

/// Dynamic loss scaling (Micikevicius et al. 2018; PyTorch's GradScaler): multiply the loss by
/// `scale` before backward so small f16 gradients do not flush to zero; divide the gradients by
/// it before the step. On an inf/NaN gradient the step is skipped and the scale halved; after
/// `growth_interval` clean steps in a row it doubles.
#[derive(Debug, Clone)]
pub struct LossScaler {
    scale: f64,
    initial: f64,
    growth_interval: usize,
    clean_run: usize,
    min_seen: f64,
    max_seen: f64,
    skipped: usize,
    backoffs: usize,
    growths: usize,
    /// (step, new scale) at every change, capped in length (the summary keeps counts).
    trace: Vec<(usize, f64)>,
}

/// PyTorch GradScaler's defaults: 2^16, x2 after 2000 clean steps, x0.5 on overflow.
pub const INITIAL_SCALE: f64 = 65536.0;
pub const GROWTH_INTERVAL: usize = 2000;
const TRACE_CAP: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleDecision {
    Step,
    Skip,
}

impl LossScaler {
    pub fn new(initial: f64, growth_interval: usize) -> LossScaler {
        LossScaler {
            scale: initial,
            initial,
            growth_interval: growth_interval.max(1),
            clean_run: 0,
            min_seen: initial,
            max_seen: initial,
            skipped: 0,
            backoffs: 0,
            growths: 0,
            trace: Vec::new(),
        }
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// After the backward of step `step`: `found_inf` says a gradient was inf or NaN.
    pub fn update(&mut self, step: usize, found_inf: bool) -> ScaleDecision {
        if found_inf {
            self.scale *= 0.5;
            self.clean_run = 0;
            self.skipped += 1;
            self.backoffs += 1;
            self.record(step);
            return ScaleDecision::Skip;
        }
        self.clean_run += 1;
        if self.clean_run >= self.growth_interval {
            self.scale *= 2.0;
            self.clean_run = 0;
            self.growths += 1;
            self.record(step);
        }
        ScaleDecision::Step
    }

    fn record(&mut self, step: usize) {
        self.min_seen = self.min_seen.min(self.scale);
        self.max_seen = self.max_seen.max(self.scale);
        if self.trace.len() < TRACE_CAP {
            self.trace.push((step, self.scale));
        }
    }

    pub fn summary(&self) -> crate::record::run_variant::ScaleSummary {
        crate::record::run_variant::ScaleSummary {
            initial: self.initial,
            final_scale: self.scale,
            min: self.min_seen,
            max: self.max_seen,
            growth_interval: self.growth_interval,
            backoff_factor: 0.5,
            growth_factor: 2.0,
            skipped_steps: self.skipped,
            backoffs: self.backoffs,
            growths: self.growths,
            trace: self.trace.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaler_backs_off_on_inf_and_grows_after_clean_run() {
        let mut s = LossScaler::new(1024.0, 3);
        assert_eq!(s.update(1, false), ScaleDecision::Step);
        assert_eq!(s.update(2, true), ScaleDecision::Skip);
        assert_eq!(s.scale(), 512.0);
        for k in 3..=5 {
            assert_eq!(s.update(k, false), ScaleDecision::Step);
        }
        assert_eq!(s.scale(), 1024.0);
        let sum = s.summary();
        assert_eq!((sum.skipped_steps, sum.backoffs, sum.growths), (1, 1, 1));
        assert_eq!(sum.trace, vec![(2, 512.0), (5, 1024.0)]);
        assert_eq!((sum.min, sum.max), (512.0, 1024.0));
    }

    #[test]
    fn tf32_on_cpu_is_refused() {
        let e = Cast::for_precision(Precision::Tf32, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("CUDA") && e.contains("cpu"), "{e}");
    }

    /// candle 0.11's CPU backend runs f16 convolutions but not bf16 ones. If this starts
    /// failing, candle gained (or lost) a kernel: the fallback and its README line need updating.
    #[test]
    fn cpu_conv2d_capabilities_as_documented() {
        assert!(probe_conv2d(&Device::Cpu, DType::BF16).is_err());
        assert!(probe_conv2d(&Device::Cpu, DType::F16).is_ok());
        let c = Cast::for_precision(Precision::Bf16Amp, &Device::Cpu).unwrap();
        assert_eq!(c.conv, DType::F32);
        assert!(c
            .conv_note
            .as_deref()
            .unwrap()
            .contains("bf16 unsupported on cpu"));
    }
}
