//! The precision record of a run: for each op class, the dtype requested, the dtype the
//! arithmetic ran in, and whether that was native to the hardware and the engine.
//!
//! Owns: the op classes, the record's schema (and the reading of the older flat record,
//! `op -> dtype`), the hardware rule (which arithmetic a CPU's flags or a CUDA compute
//! capability run natively) and the code paths of candle 0.11 that decide where its arithmetic
//! really runs (its CPU backend has no bf16 GEMM; the `gemm` crate widens f16 on x86).
//! Must not: read /proc or a GPU (the `measure` layer fills [`Capabilities`]) or train.
//!
//! A precision verdict is about the technique only when the heavy arithmetic (GEMMs and
//! convolutions) ran in the requested precision on hardware that has it; [`PrecisionReport::
//! limiting`] says when it did not, and the report marks such a verdict `engine-limited`.

use crate::spec::variant::Precision;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The CPU flags consulted (x86 `/proc/cpuinfo` flags and aarch64 features).
pub const CPU_FLAGS_CONSULTED: [&str; 8] = [
    "avx512_bf16",
    "amx_bf16",
    "avx512_fp16",
    "amx_fp16",
    "f16c",
    "bf16",
    "fphp",
    "asimdhp",
];

/// What the device can do, as read when the run started (in `system.json` and the run file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    /// `x86_64`, `aarch64`, ...
    pub arch: String,
    /// The flags looked for ([`CPU_FLAGS_CONSULTED`]); empty when the CPU's flags could not
    /// be read.
    pub cpu_flags_consulted: Vec<String>,
    /// Those of them the CPU has.
    pub cpu_flags: Vec<String>,
    /// `8.0` for an A100, `9.0` for an H100; absent on a CPU run or when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_compute_capability: Option<String>,
}

impl Capabilities {
    fn has(&self, flag: &str) -> bool {
        self.cpu_flags.iter().any(|f| f == flag)
    }

    fn cc(&self) -> Option<(u32, u32)> {
        let s = self.cuda_compute_capability.as_deref()?;
        let (a, b) = s.split_once('.')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    }
}

/// The arithmetic a precision asks of the hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arith {
    F32,
    Tf32,
    Bf16,
    F16,
    Fp8,
}

impl Arith {
    pub const ALL: [Arith; 5] = [Arith::F32, Arith::Tf32, Arith::Bf16, Arith::F16, Arith::Fp8];

    pub fn as_str(self) -> &'static str {
        match self {
            Arith::F32 => "f32",
            Arith::Tf32 => "tf32",
            Arith::Bf16 => "bf16",
            Arith::F16 => "f16",
            Arith::Fp8 => "fp8",
        }
    }

    /// The arithmetic of a precision variant's GEMMs and convolutions.
    pub fn of(p: Precision) -> Arith {
        match p {
            Precision::F32 => Arith::F32,
            Precision::Tf32 => Arith::Tf32,
            Precision::Bf16Amp => Arith::Bf16,
            Precision::F16Amp => Arith::F16,
        }
    }
}

/// Whether the hardware runs an arithmetic natively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hardware {
    Native(String),
    /// It lacks the instructions: the reason.
    Lacks(String),
    /// Nothing known to decide (flags unread, compute capability unknown).
    Unknown(String),
}

/// The hardware rule: x86 bf16 needs AVX512-BF16 or AMX-BF16, f16 AVX512-FP16 or AMX-FP16
/// (F16C only converts); aarch64 bf16 needs `bf16`, f16 `fphp`/`asimdhp`; CPUs have no TF32 or
/// FP8. On CUDA, f16 tensor cores from compute capability 7.0, bf16 and TF32 from 8.0, FP8 from
/// 8.9.
pub fn hardware(arith: Arith, on_cuda: bool, caps: &Capabilities) -> Hardware {
    if arith == Arith::F32 {
        return Hardware::Native("f32 FMA".into());
    }
    if on_cuda {
        let Some((major, minor)) = caps.cc() else {
            return Hardware::Unknown("the GPU's compute capability is unknown".into());
        };
        let need = match arith {
            Arith::F16 => (7, 0),
            Arith::Bf16 | Arith::Tf32 => (8, 0),
            Arith::Fp8 => (8, 9),
            Arith::F32 => (0, 0),
        };
        let sm = format!("sm_{major}{minor}");
        return if (major, minor) >= need {
            Hardware::Native(format!("{} tensor cores ({sm})", arith.as_str()))
        } else {
            Hardware::Lacks(format!(
                "{sm} has no {} tensor cores (from compute capability {}.{})",
                arith.as_str(),
                need.0,
                need.1
            ))
        };
    }
    if matches!(arith, Arith::Tf32 | Arith::Fp8) {
        return Hardware::Lacks(format!("CPUs have no {} arithmetic", arith.as_str()));
    }
    if caps.cpu_flags_consulted.is_empty() {
        return Hardware::Unknown("the CPU's flags were not read".into());
    }
    let arm = caps.arch == "aarch64";
    let wanted: &[&str] = match (arith, arm) {
        (Arith::Bf16, false) => &["avx512_bf16", "amx_bf16"],
        (Arith::Bf16, true) => &["bf16"],
        (_, false) => &["avx512_fp16", "amx_fp16"],
        (_, true) => &["fphp", "asimdhp"],
    };
    match wanted.iter().find(|f| caps.has(f)) {
        Some(f) => Hardware::Native(format!("the CPU has {f}")),
        None => {
            let conv = if arith == Arith::F16 && caps.has("f16c") {
                " (f16c only converts)"
            } else {
                ""
            };
            Hardware::Lacks(format!(
                "the CPU has no {}{conv}: {} arithmetic is done in f32",
                wanted.join(" or "),
                arith.as_str()
            ))
        }
    }
}

/// The op classes of the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpClass {
    /// Linear layers (and the LM head).
    Matmul,
    /// Convolutions.
    Conv,
    /// The attention products (Q K^T and the weighted values).
    Attention,
    /// Layer and batch norm, softmax.
    Norm,
    /// Activations and other element-wise ops.
    Elementwise,
    Loss,
    Optimizer,
}

impl OpClass {
    pub const ALL: [OpClass; 7] = [
        OpClass::Matmul,
        OpClass::Conv,
        OpClass::Attention,
        OpClass::Norm,
        OpClass::Elementwise,
        OpClass::Loss,
        OpClass::Optimizer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OpClass::Matmul => "matmul",
            OpClass::Conv => "conv",
            OpClass::Attention => "attention",
            OpClass::Norm => "norm",
            OpClass::Elementwise => "elementwise",
            OpClass::Loss => "loss",
            OpClass::Optimizer => "optimizer",
        }
    }

    /// The heavy arithmetic a precision verdict is about.
    pub fn is_heavy(self) -> bool {
        matches!(self, OpClass::Matmul | OpClass::Conv)
    }

    /// The op class of a name the engine records (`conv2d`, `layer_norm`, `activation`, ...).
    pub fn of_observed(op: &str) -> Option<OpClass> {
        Some(match op {
            "matmul" => OpClass::Matmul,
            "conv2d" | "conv" => OpClass::Conv,
            "attention" => OpClass::Attention,
            "layer_norm" | "batch_norm" | "softmax" | "norm" => OpClass::Norm,
            "activation" | "elementwise" => OpClass::Elementwise,
            "loss" => OpClass::Loss,
            "optimizer" | "master_weights" => OpClass::Optimizer,
            _ => return None,
        })
    }
}

/// How an op class ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Support {
    /// In the requested precision, on hardware that has it.
    Native,
    /// Converted to a wider type by the engine, or the hardware lacks the instructions.
    Emulated,
    /// The model has no such ops.
    NotApplicable,
    /// Not recorded (a run file written before the record, or nothing to decide from).
    Unknown,
}

impl Support {
    pub fn as_str(self) -> &'static str {
        match self {
            Support::Native => "native",
            Support::Emulated => "emulated",
            Support::NotApplicable => "not-applicable",
            Support::Unknown => "unknown",
        }
    }
}

/// One op class of the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpPrecision {
    /// The dtype the variant asks for (`bf16`, `tf32`, `f32`); `-` when not applicable.
    pub requested: String,
    /// The dtype the arithmetic ran in (`f32` when the engine widened bf16 operands).
    pub ran: String,
    pub support: Support,
    pub reason: String,
}

impl OpPrecision {
    fn not_applicable(op: OpClass) -> OpPrecision {
        OpPrecision {
            requested: "-".into(),
            ran: "-".into(),
            support: Support::NotApplicable,
            reason: format!("the model has no {} ops", op.as_str()),
        }
    }
}

/// Who decided the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Basis {
    /// joulebench's own engine, from the code path it took and the device's capabilities.
    Engine,
    /// A foreign program (`exec`): from the device's capabilities alone.
    Derived,
    /// A foreign program's own MLLOG `lowest_numerical_precision_*` lines.
    Declared,
    /// A run file written before the record: the older `op -> dtype` map only.
    Unknown,
}

impl Basis {
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Engine => "engine",
            Basis::Derived => "derived",
            Basis::Declared => "declared",
            Basis::Unknown => "unknown",
        }
    }
}

/// `variant.precision_report` of a run file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "ReportRepr", into = "ReportRepr")]
pub struct PrecisionReport {
    pub basis: Basis,
    /// Every op class, in [`OpClass::ALL`] order.
    pub ops: BTreeMap<OpClass, OpPrecision>,
    /// The dtype each op the engine recorded ran in, as run files before the per-class record
    /// wrote it (`matmul: "bf16"`, `conv2d: "f32 (bf16 unsupported on cpu: ...)"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub observed: BTreeMap<String, String>,
}

/// The new record, or the flat map older run files hold (written back as it was read, so a
/// re-written older run file keeps its bytes).
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ReportRepr {
    Record {
        basis: Basis,
        #[serde(default)]
        ops: BTreeMap<OpClass, OpPrecision>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        observed: BTreeMap<String, String>,
    },
    Flat(BTreeMap<String, String>),
}

impl From<PrecisionReport> for ReportRepr {
    fn from(r: PrecisionReport) -> Self {
        if r.basis == Basis::Unknown && r.ops.is_empty() {
            ReportRepr::Flat(r.observed)
        } else {
            ReportRepr::Record {
                basis: r.basis,
                ops: r.ops,
                observed: r.observed,
            }
        }
    }
}

impl From<ReportRepr> for PrecisionReport {
    fn from(r: ReportRepr) -> Self {
        match r {
            ReportRepr::Record {
                basis,
                ops,
                observed,
            } => PrecisionReport {
                basis,
                ops,
                observed,
            },
            ReportRepr::Flat(observed) => PrecisionReport {
                basis: Basis::Unknown,
                ops: BTreeMap::new(),
                observed,
            },
        }
    }
}

impl PrecisionReport {
    /// The heavy op classes (matmul, conv) that did not run natively, as one line:
    /// `matmul: bf16 requested, ran in f32 (candle ... no bf16 GEMM)`; None when every heavy
    /// op class that ran was native (or the record has nothing to say).
    pub fn limiting(&self) -> Option<String> {
        let parts: Vec<String> = self
            .ops
            .iter()
            .filter(|(op, o)| op.is_heavy() && o.support == Support::Emulated)
            .map(|(op, o)| {
                format!(
                    "{}: {} requested, ran in {} ({})",
                    op.as_str(),
                    o.requested,
                    o.ran,
                    o.reason
                )
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// The support of one op class (`unknown` when not recorded).
    pub fn support(&self, op: OpClass) -> Support {
        self.ops.get(&op).map_or(Support::Unknown, |o| o.support)
    }
}

/// The dtype name of a precision's low-precision arithmetic (`bf16`, `f16`, `tf32`).
fn requested_heavy(p: Precision) -> &'static str {
    Arith::of(p).as_str()
}

fn from_hardware(requested: &str, hw: Hardware, how: &str) -> OpPrecision {
    let (ran, support, reason) = match hw {
        Hardware::Native(r) => (
            requested.to_string(),
            Support::Native,
            format!("{how}; {r}"),
        ),
        Hardware::Lacks(r) => ("f32".to_string(), Support::Emulated, format!("{how}; {r}")),
        Hardware::Unknown(r) => (
            requested.to_string(),
            Support::Unknown,
            format!("{how}; {r}"),
        ),
    };
    OpPrecision {
        requested: requested.into(),
        ran,
        support,
        reason,
    }
}

fn f32_kept(why: &str) -> OpPrecision {
    OpPrecision {
        requested: "f32".into(),
        ran: "f32".into(),
        support: Support::Native,
        reason: why.into(),
    }
}

/// The record of a run trained by candle 0.11 (joulebench's engine): `observed` is the storage
/// dtype each op ran in (as the engine's cast policy recorded it, `conv2d: "f32 (...)"` for a
/// fallback), and the code paths of candle decide the arithmetic:
/// - CPU bf16 GEMM: candle has no bf16 kernel; it widens both operands to f32 and rounds the
///   product back (emulated whatever the CPU has);
/// - CPU f16 GEMM: the `gemm` crate's f16 kernel converts to f32 on x86 (native f16 FMA only on
///   aarch64 with `fphp`);
/// - CPU element-wise ops on bf16/f16: each value converted to f32 and back;
/// - CUDA: cuBLAS GEMMs (convolutions through im2col + GEMM) in the requested precision where
///   the compute capability has the tensor cores.
pub fn candle_report(
    precision: Precision,
    on_cuda: bool,
    caps: &Capabilities,
    observed: &BTreeMap<String, String>,
) -> PrecisionReport {
    let low = requested_heavy(precision);
    let hw = hardware(Arith::of(precision), on_cuda, caps);
    // The storage dtype observed for an op class, and the engine's note (after the dtype).
    let seen = |class: OpClass| -> Option<(String, String)> {
        observed
            .iter()
            .filter(|(k, _)| OpClass::of_observed(k) == Some(class))
            .map(|(_, v)| {
                let (dt, note) = v.split_once(' ').unwrap_or((v.as_str(), ""));
                let note = note.trim().trim_start_matches('(').trim_end_matches(')');
                (dt.to_string(), note.to_string())
            })
            .next()
    };
    let mut ops = BTreeMap::new();
    for class in OpClass::ALL {
        let rec = match class {
            OpClass::Loss => f32_kept("kept in f32 by the autocast policy (logits cast up)"),
            OpClass::Optimizer => f32_kept("f32 master weights and AdamW state"),
            OpClass::Norm => match seen(class) {
                None => OpPrecision::not_applicable(class),
                Some(_) => f32_kept("kept in f32 by the autocast policy (softmax, normalisation)"),
            },
            OpClass::Matmul | OpClass::Conv | OpClass::Attention | OpClass::Elementwise => {
                match seen(class) {
                    None => OpPrecision::not_applicable(class),
                    Some((dt, note)) => {
                        candle_heavy(precision, class, low, &dt, &note, on_cuda, &caps.arch, &hw)
                    }
                }
            }
        };
        ops.insert(class, rec);
    }
    PrecisionReport {
        basis: Basis::Engine,
        ops,
        observed: observed.clone(),
    }
}

#[allow(clippy::too_many_arguments)]
fn candle_heavy(
    precision: Precision,
    class: OpClass,
    low: &str,
    storage: &str,
    note: &str,
    on_cuda: bool,
    arch: &str,
    hw: &Hardware,
) -> OpPrecision {
    let elementwise = class == OpClass::Elementwise;
    // TF32 is a GEMM mode: element-wise ops stay f32.
    if precision == Precision::Tf32 && elementwise {
        return f32_kept("TF32 applies to GEMMs only");
    }
    let requested = if precision == Precision::Tf32 {
        "tf32"
    } else {
        low
    };
    // The engine fell back to f32 storage (no low-precision kernel for this op).
    if precision != Precision::Tf32 && storage == "f32" {
        let why = if note.is_empty() {
            "the engine ran it in f32".to_string()
        } else {
            format!("the engine fell back to f32: {note}")
        };
        return OpPrecision {
            requested: requested.into(),
            ran: "f32".into(),
            support: Support::Emulated,
            reason: why,
        };
    }
    if on_cuda {
        let how = match (class, elementwise) {
            (_, true) => "candle's CUDA element-wise kernels",
            (OpClass::Conv, _) => "candle's CUDA conv2d: im2col + cuBLAS GEMM",
            _ => "cuBLAS GEMM",
        };
        return from_hardware(requested, hw.clone(), how);
    }
    // CPU.
    if precision == Precision::Tf32 {
        return OpPrecision {
            requested: "tf32".into(),
            ran: "f32".into(),
            support: Support::Emulated,
            reason: "CPUs have no TF32 arithmetic".into(),
        };
    }
    let widened = |why: &str| OpPrecision {
        requested: requested.into(),
        ran: "f32".into(),
        support: Support::Emulated,
        reason: why.into(),
    };
    if elementwise {
        return widened(
            "candle's CPU element-wise ops convert each value to f32 and round the result back",
        );
    }
    match precision {
        Precision::Bf16Amp => widened(
            "candle 0.11's CPU backend has no bf16 GEMM: operands widened to f32, product rounded to bf16",
        ),
        Precision::F16Amp if arch.starts_with("x86") => widened(
            "the gemm crate's f16 kernel on x86 converts to f32 (native f16 FMA only on aarch64 with fp16)",
        ),
        Precision::F16Amp if arch == "aarch64" => {
            from_hardware(requested, hw.clone(), "the gemm crate's f16 kernel")
        }
        _ => OpPrecision {
            requested: requested.into(),
            ran: "-".into(),
            support: Support::Unknown,
            reason: format!("the CPU architecture ({arch:?}) was not recorded"),
        },
    }
}

/// The record of a foreign program (`exec`): the heavy ops in the variant's precision where
/// the hardware has it (`derived`), or as the program declared with MLPerf's
/// `lowest_numerical_precision_in_linear` / `..._in_attn` (`declared`). The program's other op
/// classes are not known to joulebench.
pub fn foreign_report(
    precision: Precision,
    on_cuda: bool,
    caps: &Capabilities,
    declared: &BTreeMap<String, String>,
) -> PrecisionReport {
    let requested = requested_heavy(precision);
    let hw = hardware(Arith::of(precision), on_cuda, caps);
    let mut ops = BTreeMap::new();
    let declared_for = |class: OpClass| -> Option<&String> {
        let key = match class {
            OpClass::Matmul | OpClass::Conv => "lowest_numerical_precision_in_linear",
            OpClass::Attention => "lowest_numerical_precision_in_attn",
            _ => return None,
        };
        declared.get(key)
    };
    for class in OpClass::ALL {
        let rec = if let Some(d) = declared_for(class) {
            let ran = normalise_dtype(d);
            let support = if ran == requested {
                match &hw {
                    Hardware::Native(_) => Support::Native,
                    Hardware::Lacks(_) => Support::Emulated,
                    Hardware::Unknown(_) => Support::Unknown,
                }
            } else {
                Support::Emulated
            };
            let why = match &hw {
                Hardware::Native(r) | Hardware::Lacks(r) | Hardware::Unknown(r) => r.clone(),
            };
            OpPrecision {
                requested: requested.into(),
                ran,
                support,
                reason: format!("declared by the program ({d}); {why}"),
            }
        } else if class.is_heavy() || class == OpClass::Attention {
            from_hardware(
                requested,
                hw.clone(),
                "derived from the device's capabilities",
            )
        } else {
            OpPrecision {
                requested: "-".into(),
                ran: "-".into(),
                support: Support::Unknown,
                reason: "not known for a foreign program".into(),
            }
        };
        ops.insert(class, rec);
    }
    let basis = if declared.is_empty() {
        Basis::Derived
    } else {
        Basis::Declared
    };
    PrecisionReport {
        basis,
        ops,
        observed: declared.clone(),
    }
}

/// `bfloat16`, `BF16`, `torch.bfloat16` -> `bf16`; `float16`/`fp16` -> `f16`; `fp32` -> `f32`.
pub fn normalise_dtype(s: &str) -> String {
    let l = s.trim().to_ascii_lowercase();
    let l = l.rsplit('.').next().unwrap_or(&l).to_string();
    match l.as_str() {
        "bfloat16" | "bf16" => "bf16".into(),
        "float16" | "fp16" | "f16" | "half" => "f16".into(),
        "float32" | "fp32" | "f32" | "float" => "f32".into(),
        "tf32" | "tensorfloat32" => "tf32".into(),
        "fp8" | "float8" | "e4m3" | "e5m2" => "fp8".into(),
        _ => l,
    }
}

/// The record of a run file written before the per-class record: candle's CPU code paths are
/// known whatever the CPU had (its bf16 GEMM widened to f32 in every version so far), so a
/// candle CPU run's heavy classes are decided; anything else is `unknown`.
pub fn upgrade_legacy(
    report: Option<&PrecisionReport>,
    precision: Precision,
    candle_cpu: bool,
    arch: &str,
) -> Option<PrecisionReport> {
    if precision == Precision::F32 {
        return report.cloned();
    }
    let observed = report.map(|r| r.observed.clone()).unwrap_or_default();
    if candle_cpu {
        // Every joulebench model has linear layers: a record without the flat map (hand-made
        // run files) still had its GEMMs in the variant's storage dtype.
        let mut observed = observed;
        observed
            .entry("matmul".into())
            .or_insert_with(|| requested_heavy(precision).to_string());
        // The CPU's flags were not recorded; candle's own paths do not depend on them for bf16
        // (and on x86 for f16).
        let mut r = candle_report(
            precision,
            false,
            &Capabilities {
                arch: arch.into(),
                ..Capabilities::default()
            },
            &observed,
        );
        r.basis = Basis::Unknown;
        for o in r.ops.values_mut() {
            if o.support == Support::Native && o.requested != "f32" {
                o.support = Support::Unknown;
            }
        }
        return Some(r);
    }
    let mut ops = BTreeMap::new();
    for class in OpClass::ALL {
        ops.insert(
            class,
            OpPrecision {
                requested: "-".into(),
                ran: "-".into(),
                support: Support::Unknown,
                reason: "the run file predates the precision record".into(),
            },
        );
    }
    Some(PrecisionReport {
        basis: Basis::Unknown,
        ops,
        observed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(flags: &[&str]) -> Capabilities {
        Capabilities {
            arch: "x86_64".into(),
            cpu_flags_consulted: CPU_FLAGS_CONSULTED.iter().map(|s| s.to_string()).collect(),
            cpu_flags: flags.iter().map(|s| s.to_string()).collect(),
            cuda_compute_capability: None,
        }
    }

    fn gpu(cc: &str) -> Capabilities {
        Capabilities {
            cuda_compute_capability: Some(cc.into()),
            ..cpu(&[])
        }
    }

    fn native(h: &Hardware) -> bool {
        matches!(h, Hardware::Native(_))
    }

    #[test]
    fn cpu_flags_decide_bf16_and_f16() {
        // (flags, bf16 native, f16 native)
        let cases: [(&[&str], bool, bool); 5] = [
            (&[], false, false),
            (&["f16c"], false, false),
            (&["avx512_bf16"], true, false),
            (&["amx_bf16", "amx_fp16"], true, true),
            (&["avx512_fp16", "f16c"], false, true),
        ];
        for (flags, bf16, f16) in cases {
            let c = cpu(flags);
            assert_eq!(native(&hardware(Arith::Bf16, false, &c)), bf16, "{flags:?}");
            assert_eq!(native(&hardware(Arith::F16, false, &c)), f16, "{flags:?}");
            assert!(native(&hardware(Arith::F32, false, &c)));
            assert!(!native(&hardware(Arith::Tf32, false, &c)));
            assert!(!native(&hardware(Arith::Fp8, false, &c)));
        }
        let Hardware::Lacks(why) = hardware(Arith::F16, false, &cpu(&["f16c"])) else {
            panic!()
        };
        assert!(why.contains("f16c only converts"), "{why}");
        let unread = Capabilities::default();
        assert!(matches!(
            hardware(Arith::Bf16, false, &unread),
            Hardware::Unknown(_)
        ));
    }

    #[test]
    fn compute_capability_decides_tensor_cores() {
        // (cc, f16, bf16, tf32, fp8)
        let cases = [
            ("7.5", true, false, false, false),
            ("8.0", true, true, true, false),
            ("8.9", true, true, true, true),
            ("9.0", true, true, true, true),
            ("6.1", false, false, false, false),
        ];
        for (cc, f16, bf16, tf32, fp8) in cases {
            let g = gpu(cc);
            assert_eq!(native(&hardware(Arith::F16, true, &g)), f16, "{cc}");
            assert_eq!(native(&hardware(Arith::Bf16, true, &g)), bf16, "{cc}");
            assert_eq!(native(&hardware(Arith::Tf32, true, &g)), tf32, "{cc}");
            assert_eq!(native(&hardware(Arith::Fp8, true, &g)), fp8, "{cc}");
        }
        let Hardware::Lacks(why) = hardware(Arith::Bf16, true, &gpu("7.5")) else {
            panic!()
        };
        assert!(why.contains("sm_75"), "{why}");
        let unknown = Capabilities::default();
        assert!(matches!(
            hardware(Arith::Bf16, true, &unknown),
            Hardware::Unknown(_)
        ));
    }

    fn observed(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn candle_cpu_bf16_gemm_is_emulated_even_with_avx512_bf16() {
        let obs = observed(&[("matmul", "bf16"), ("activation", "bf16")]);
        for flags in [&[][..], &["avx512_bf16", "amx_bf16"][..]] {
            let r = candle_report(Precision::Bf16Amp, false, &cpu(flags), &obs);
            assert_eq!(r.basis, Basis::Engine);
            let m = &r.ops[&OpClass::Matmul];
            assert_eq!((m.requested.as_str(), m.ran.as_str()), ("bf16", "f32"));
            assert_eq!(m.support, Support::Emulated);
            assert!(m.reason.contains("no bf16 GEMM"), "{}", m.reason);
            assert_eq!(r.support(OpClass::Conv), Support::NotApplicable);
            assert_eq!(r.support(OpClass::Elementwise), Support::Emulated);
            assert_eq!(r.support(OpClass::Loss), Support::Native);
            assert_eq!(r.support(OpClass::Optimizer), Support::Native);
            assert!(r
                .limiting()
                .unwrap()
                .starts_with("matmul: bf16 requested, ran in f32"));
        }
    }

    #[test]
    fn candle_conv_fallback_is_emulated_with_the_backend_reason() {
        let obs = observed(&[
            ("matmul", "bf16"),
            (
                "conv2d",
                "f32 (bf16 unsupported on cpu: no conv2d for bf16)",
            ),
        ]);
        let r = candle_report(Precision::Bf16Amp, false, &cpu(&["avx512_bf16"]), &obs);
        let c = &r.ops[&OpClass::Conv];
        assert_eq!(c.support, Support::Emulated);
        assert!(c.reason.contains("no conv2d for bf16"), "{}", c.reason);
        assert!(r.limiting().unwrap().contains("conv: bf16 requested"));
    }

    #[test]
    fn candle_cuda_follows_the_compute_capability() {
        let obs = observed(&[
            ("matmul", "bf16"),
            ("conv2d", "bf16"),
            ("attention", "bf16"),
        ]);
        let r = candle_report(Precision::Bf16Amp, true, &gpu("9.0"), &obs);
        for c in [OpClass::Matmul, OpClass::Conv, OpClass::Attention] {
            assert_eq!(r.support(c), Support::Native, "{c:?}");
        }
        assert_eq!(r.limiting(), None);
        let old = candle_report(Precision::Bf16Amp, true, &gpu("7.5"), &obs);
        assert_eq!(old.support(OpClass::Matmul), Support::Emulated);
        assert!(old.limiting().unwrap().contains("sm_75"));
        let tf32 = candle_report(
            Precision::Tf32,
            true,
            &gpu("8.0"),
            &observed(&[("matmul", "f32"), ("activation", "f32")]),
        );
        assert_eq!(tf32.ops[&OpClass::Matmul].ran, "tf32");
        assert_eq!(tf32.support(OpClass::Matmul), Support::Native);
        assert_eq!(tf32.ops[&OpClass::Elementwise].requested, "f32");
    }

    #[test]
    fn foreign_programs_are_derived_or_declared() {
        let none = BTreeMap::new();
        let r = foreign_report(Precision::Bf16Amp, false, &cpu(&[]), &none);
        assert_eq!(r.basis, Basis::Derived);
        assert_eq!(r.support(OpClass::Matmul), Support::Emulated);
        assert_eq!(r.support(OpClass::Norm), Support::Unknown);
        let amx = foreign_report(Precision::Bf16Amp, false, &cpu(&["amx_bf16"]), &none);
        assert_eq!(amx.limiting(), None);
        // A program that says its linear layers ran in f32 is emulated whatever the CPU has.
        let d = observed(&[("lowest_numerical_precision_in_linear", "float32")]);
        let r = foreign_report(Precision::Bf16Amp, false, &cpu(&["amx_bf16"]), &d);
        assert_eq!(r.basis, Basis::Declared);
        assert_eq!(r.ops[&OpClass::Matmul].ran, "f32");
        assert_eq!(r.support(OpClass::Matmul), Support::Emulated);
        let d = observed(&[("lowest_numerical_precision_in_linear", "torch.bfloat16")]);
        let r = foreign_report(Precision::Bf16Amp, false, &cpu(&["amx_bf16"]), &d);
        assert_eq!(r.support(OpClass::Matmul), Support::Native);
    }

    #[test]
    fn older_flat_records_are_read_and_upgraded() {
        let old: PrecisionReport =
            serde_json::from_str(r#"{"matmul":"bf16","activation":"bf16","loss":"f32"}"#).unwrap();
        assert_eq!(old.basis, Basis::Unknown);
        assert_eq!(old.observed["matmul"], "bf16");
        // Written back as it was read.
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"activation":"bf16","loss":"f32","matmul":"bf16"}"#
        );
        let up = upgrade_legacy(Some(&old), Precision::Bf16Amp, true, "").unwrap();
        assert_eq!(up.support(OpClass::Matmul), Support::Emulated);
        assert!(up.limiting().is_some());
        let bare = upgrade_legacy(None, Precision::Bf16Amp, true, "x86_64").unwrap();
        assert_eq!(bare.support(OpClass::Matmul), Support::Emulated);
        let foreign = upgrade_legacy(None, Precision::Bf16Amp, false, "").unwrap();
        assert_eq!(foreign.support(OpClass::Matmul), Support::Unknown);
        assert_eq!(foreign.limiting(), None);
        // The new record round-trips.
        let new = candle_report(
            Precision::Bf16Amp,
            false,
            &cpu(&[]),
            &observed(&[("matmul", "bf16")]),
        );
        let back: PrecisionReport =
            serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back, new);
    }
}
