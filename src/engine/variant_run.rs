//! Running one variant end to end: the pipeline its fields ask for, inside one measured window
//! (`train::Session`), charged for its whole cost (docs/design/measurement.md section 4).
//!
//! Owns: the checks a variant must pass before anything trains (`preflight`: applicability,
//! backend support for the precision), and the pipelines: precision (the forward-pass policy,
//! the f16 loss scaler and the TF32 switch for the whole window); unstructured pruning (dense
//! training to T, gradual global magnitude pruning with masks re-applied after every step,
//! recovery to T); structured pruning (dense training to T, removing units by norm, rebuilding a
//! smaller dense model, recovery to T); fine-tuning (the model built from a checkpoint, optional
//! frozen layers); synthetic and mixed data (a generator of `synth` fitted to the real training
//! images and sampled, both inside the window as phases `generator-fit` and `sample`, the
//! classifier then trained on the synthetic (or blended) set and always evaluated on the real
//! held-out set). Each pipeline is phases of one session, so its phases add up to the run's
//! energy and the run's energy is the whole pipeline's.
//! Must not: write run files or checkpoints (the runner does), parse variant names (`variant`),
//! or implement a technique (`precision`, `prune`, `checkpoint`).
//!
//! The random-tensors throughput track (data `random`) trains one pass of the training set's
//! size on random inputs and labels made inside the window, with no evals: J/sample and J/step.

use crate::data::{ImageSet, Loaded, TextSet};
use crate::engine::checkpoint::{Checkpoint, CheckpointError};
use crate::engine::model::{self, InputShape, ParamStore, RefModel, SeededRng};
use crate::engine::precision::{Amp, PrecisionError, Tf32Guard};
use crate::engine::prepare::{Inputs, Prepared};
use crate::engine::prune::{self, Masks, Schedule};
use crate::engine::synth::{self, SynthError};
use crate::engine::train::{
    self, NoHook, Observer, Session, Stage, StageEnd, TrainError, TrainOptions, TrainOutcome,
    TrainSet, Until,
};
use crate::measure::Meter;
use crate::record::curve::Status;
use crate::record::run_variant::{
    DataReport, GeneratedAmount, GeneratedData, PruningMethod, PruningReport, ThroughputTrack,
};
use crate::spec::generator::GeneratorKind;
use crate::spec::task::{ModelSpec, TaskSpec};
use crate::spec::variant::{self, DataSource, Init, ModelFamily, Precision, Pruning, Variant};
use candle_core::Device;

#[derive(Debug, thiserror::Error)]
pub enum VariantRunError {
    #[error(transparent)]
    Variant(#[from] variant::VariantError),
    #[error(transparent)]
    Precision(#[from] PrecisionError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Synth(#[from] SynthError),
    #[error("variant '{name}' is not implemented yet: {reason}")]
    NotImplemented { name: String, reason: String },
}

/// The model family of a task's model (what `variant::check_applicable` needs).
pub fn family(spec: &ModelSpec) -> ModelFamily {
    match spec {
        ModelSpec::Mlp { .. } => ModelFamily::Mlp,
        ModelSpec::Cnn { .. } => ModelFamily::Cnn,
        ModelSpec::CharTransformer { .. } => ModelFamily::CharTransformer,
        ModelSpec::Gpt { .. } => ModelFamily::Gpt,
        ModelSpec::Resnet { .. } => ModelFamily::Resnet,
    }
}

/// Everything that can be known to fail before training: the variant applies to the task, the
/// device runs its precision, its data source is implemented. A usage error (exit 2).
pub fn preflight(
    spec: &TaskSpec,
    v: &Variant,
    device: &Device,
    explicit_checkpoint: bool,
) -> Result<(), VariantRunError> {
    variant::check_applicable(
        v,
        &spec.name,
        family(&spec.model),
        spec.finetune.is_some(),
        explicit_checkpoint,
    )?;
    Amp::for_precision(v.precision, device)?;
    Ok(())
}

/// For a series with `finetune` variants: the source task to pretrain (`[finetune] source`,
/// found in `models_dir`), or none when `checkpoint` is given, which is then read and built
/// into the task's model once here, so a missing, unreadable or mis-shaped checkpoint is a
/// usage error before anything trains. The source must have the task's model and dataset.
pub fn finetune_source(
    spec: &TaskSpec,
    variants: &[Variant],
    checkpoint: Option<&std::path::Path>,
    models_dir: &std::path::Path,
    data: &crate::data::DatasetBundle,
    device: &Device,
) -> Result<Option<TaskSpec>, VariantRunError> {
    let Some(v) = variants.iter().find(|v| v.init == Init::Finetune) else {
        return Ok(None);
    };
    let bad = |reason: String| {
        VariantRunError::Variant(variant::VariantError::NotApplicable {
            name: v.name.clone(),
            task: spec.name.clone(),
            reason,
        })
    };
    if let Some(path) = checkpoint {
        let c = crate::engine::checkpoint::load(path, device)?;
        let viewed =
            crate::engine::prepare::task_data(spec, data).map_err(|e| bad(e.to_string()))?;
        let (input, classes) =
            crate::engine::prepare::input_of(spec, &viewed).map_err(|e| bad(e.to_string()))?;
        let start = Start::Checkpoint(c);
        for v in variants.iter().filter(|v| v.init == Init::Finetune) {
            start_model(spec, input, classes, v, 0, &start, device)?;
        }
        return Ok(None);
    }
    let Some(ft) = &spec.finetune else {
        return Err(bad(
            "a fine-tune needs a checkpoint: this task has no [finetune] source; pass --checkpoint PATH".into(),
        ));
    };
    let source = crate::spec::task::find(models_dir, &ft.source).map_err(|e| {
        bad(format!(
            "its [finetune] source: {}",
            e.to_string().lines().next().unwrap_or("")
        ))
    })?;
    if source.model != spec.model || input_space(&source) != input_space(spec) {
        return Err(bad(format!(
            "its [finetune] source '{}' has model {:?} on {} but the task has model {:?} on {}: the checkpoint's shapes would not match",
            source.name,
            source.model,
            input_space(&source),
            spec.model,
            input_space(spec),
        )));
    }
    Ok(Some(source))
}

/// What a task's model reads: its dataset, except that every byte-level text (the Shakespeare
/// corpus, or a corpus viewed with `text_encoding = "bytes"`) shares one 256-symbol input, so
/// a checkpoint moves between them (Austen -> Shakespeare).
fn input_space(spec: &TaskSpec) -> String {
    let bytes = spec.dataset == crate::data::DatasetKind::Shakespeare
        || spec.data.text_encoding == Some(crate::data::view::TextEncoding::Bytes);
    if bytes {
        "byte-level text".into()
    } else {
        spec.dataset.as_str().into()
    }
}

/// Where a run's model comes from.
pub enum Start {
    /// Seeded random initial weights (`init` stream 0 of the seed).
    Scratch,
    /// The weights of a checkpoint; the variant's `frozen` layers are constants.
    Checkpoint(Checkpoint),
}

/// A finished variant run: the session's outcome and what the run file's `variant` object and
/// `flops` need beyond it.
pub struct VariantOutcome {
    pub out: TrainOutcome,
    /// The model the run ends with (smaller after structured pruning).
    pub model: Box<dyn RefModel>,
    pub checkpoint: Option<crate::record::run_variant::WeightsSource>,
    pub pruning_schedule: Option<PruningReport>,
    pub synthetic: Option<DataReport>,
}

/// Build the run's starting model: seeded, or from a checkpoint (shapes must match exactly;
/// every frozen layer must exist).
pub fn start_model(
    spec: &TaskSpec,
    input: InputShape,
    classes: usize,
    v: &Variant,
    seed: u64,
    start: &Start,
    device: &Device,
) -> Result<Box<dyn RefModel>, VariantRunError> {
    let mut rng = SeededRng::new(seed, 0);
    match start {
        Start::Scratch => Ok(model::build(&spec.model, input, classes, &mut rng, device)
            .map_err(TrainError::from)?),
        Start::Checkpoint(c) => {
            let shape_err = |reason: String| CheckpointError::Shape {
                path: c.path.display().to_string(),
                task: spec.name.clone(),
                reason,
            };
            let params = ParamStore::from_tensors(c.tensors.clone(), v.frozen.clone());
            let m = model::build_with(&spec.model, input, classes, params, &mut rng, device)
                .map_err(|e| shape_err(e.to_string().lines().next().unwrap_or("").into()))?;
            for layer in &v.frozen {
                let found = m
                    .params()
                    .frozen()
                    .iter()
                    .any(|(n, _)| model::in_layer(n, layer));
                if !found {
                    let names: Vec<String> = m.params().all().into_iter().map(|(n, _)| n).collect();
                    return Err(shape_err(format!(
                        "freeze-{layer}: the model has no layer '{layer}'; its parameters: {}",
                        names.join(", ")
                    ))
                    .into());
                }
            }
            Ok(m)
        }
    }
}

/// Run `v` on the task in one measured window opened on `meter`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    spec: &TaskSpec,
    p: &Prepared,
    v: &Variant,
    opts: &TrainOptions,
    start: Start,
    real_train: Option<&Loaded>,
    meter: &mut dyn Meter,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<VariantOutcome, VariantRunError> {
    let model = start_model(spec, p.input, p.classes, v, opts.seed, &start, device)?;
    let checkpoint = match &start {
        Start::Scratch => None,
        Start::Checkpoint(c) => Some(c.describe()),
    };
    let amp = Amp::for_precision(v.precision, device)?;
    // TF32 is a global cuBLAS switch: on for exactly this window, off after.
    let _tf32 = Tf32Guard::new(v.precision == Precision::Tf32);
    let mut opt = crate::engine::step::optimizer(spec, model.as_ref()).map_err(TrainError::from)?;
    let budget = train::budget_steps(spec, p.n_train / train::batch_size(spec, p.n_train).max(1));
    let mut s = Session::open(spec, p, opts, amp, model.as_ref(), meter, device, observer)?;
    // The training set: the real one, or one made inside the window (fit, then sample).
    let mut synthetic = None;
    let data = match v.data_source() {
        DataSource::Synthetic | DataSource::Mixed { .. } => {
            let made = match real_train {
                Some(Loaded::Images { train, .. }) => {
                    synthetic_set(&mut s, spec, p, v, opts.seed, train, device)
                }
                Some(Loaded::Text(text)) => {
                    synthetic_text_set(&mut s, spec, v, opts.seed, text, device)
                }
                None => Err(SynthError::from(candle_core::Error::Msg(
                    "synthetic data needs the real training set".into(),
                ))),
            };
            match made {
                Ok((set, report)) => {
                    synthetic = Some(report);
                    set
                }
                Err(e) => {
                    s.fail(e);
                    let out = s.finish()?;
                    return Ok(VariantOutcome {
                        out,
                        model,
                        checkpoint,
                        pruning_schedule: None,
                        synthetic,
                    });
                }
            }
        }
        DataSource::Random => {
            // The throughput track: random inputs and labels of the task's shapes, made
            // inside the window, one pass of the real training set's size, no evals.
            s.begin_phase("generate")?;
            let n = p.n_train;
            let (x, y) = crate::engine::step::random_batch(
                p.input,
                p.classes,
                n,
                &mut SeededRng::new(opts.seed, 14),
                device,
            )
            .map_err(TrainError::from)?;
            TrainSet {
                x: Inputs::plain(x),
                y,
                n,
            }
        }
        DataSource::Real => TrainSet::real(p),
    };
    let random = v.data_source() == DataSource::Random;
    let (mut out, model, pruning_schedule) = match v.pruning {
        Pruning::None => {
            s.begin_phase(if v.init == Init::Finetune {
                "finetune"
            } else {
                "train"
            })?;
            let stage = Stage {
                max_steps: if random {
                    data.n / train::batch_size(spec, data.n).max(1)
                } else {
                    budget
                },
                until: Until::target_if(opts.stop_at_target),
                scored: !random,
                score_last: false,
                evaluate: !random,
                hook: &mut NoHook,
            };
            match s.train_stage(model.as_ref(), &data, &mut opt, stage) {
                Ok(_) if random => s.complete_without_target(),
                Ok(_) => {}
                Err(e) => s.fail(e),
            }
            (s.finish()?, model, None)
        }
        Pruning::Unstructured => {
            let (s, schedule) = unstructured(s, spec, v, opts, model.as_ref(), &data, budget)?;
            (s.finish()?, model, Some(schedule))
        }
        Pruning::Structured => {
            let (s, small, schedule) =
                structured(s, spec, p, v, opts, model, opt, &data, budget, device)?;
            (s.finish()?, small, Some(schedule))
        }
    };
    // Never a run labelled bf16/f16 whose GEMMs all ran in f32.
    if matches!(v.precision, Precision::Bf16Amp | Precision::F16Amp) && out.status != Status::Failed
    {
        let low = out
            .precision_report
            .as_ref()
            .and_then(|r| r.get("matmul"))
            .is_some_and(|m| m.contains("16"));
        if !low {
            out.status = Status::Failed;
            out.error = Some(format!(
                "precision {}: no GEMM ran in the low precision (report: {:?})",
                v.precision.as_str(),
                out.precision_report
            ));
        }
    }
    if random {
        let total_j = out.window.as_ref().map_or(0.0, |w| w.total_j());
        synthetic = Some(DataReport::Throughput(ThroughputTrack {
            track: "throughput (random-tensors)".into(),
            samples: out.samples,
            steps: out.steps,
            j_per_sample: total_j / out.samples.max(1) as f64,
            j_per_step: total_j / out.steps.max(1) as f64,
            note: "random inputs and labels, one pass of the training set's size, no evals: J/sample and J/step only, never ETT or JPP, never ranked".into(),
        }));
    }
    let phase_j = |name: &str| -> f64 {
        out.phases
            .iter()
            .filter(|ph| ph.name == name)
            .map(|ph| ph.energy_j)
            .sum()
    };
    let pruning_schedule = pruning_schedule.map(|method| PruningReport {
        method,
        dense_train_j: phase_j("dense-train"),
        prune_and_recover_j: phase_j("prune") + phase_j("recover"),
        energy_note: "the run's energy is the whole pipeline (dense-train + prune + recover); \
             prune_and_recover_j is the pruning part alone, same boundary and sources"
            .into(),
    });
    Ok(VariantOutcome {
        out,
        model,
        checkpoint,
        pruning_schedule,
        synthetic,
    })
}

/// Which real samples a run keeps and how many synthetic ones of each class it draws: per
/// class, `round(real_fraction x n_c)` real samples (a seeded choice) and the rest synthetic,
/// so the blend keeps the real training set's size and class balance.
pub fn blend_plan(
    real: &ImageSet,
    classes: usize,
    real_fraction: f64,
    rng: &mut SeededRng,
) -> (Vec<usize>, Vec<usize>) {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in real.labels.iter().enumerate() {
        if let Some(c) = by_class.get_mut(l as usize) {
            c.push(i);
        }
    }
    let mut keep = Vec::new();
    let mut counts = vec![0usize; classes];
    for (c, idx) in by_class.iter_mut().enumerate() {
        let k = ((real_fraction * idx.len() as f64).round() as usize).min(idx.len());
        rng.shuffle(idx);
        keep.extend_from_slice(&idx[..k]);
        counts[c] = idx.len() - k;
    }
    keep.sort_unstable();
    (keep, counts)
}

/// Fit the variant's generator to the real training images (phase `generator-fit`), sample the
/// synthetic part (phase `sample`) and build the training tensors; FLOPs of both are counted.
fn synthetic_set(
    s: &mut Session<'_>,
    spec: &TaskSpec,
    p: &Prepared,
    v: &Variant,
    seed: u64,
    real: &ImageSet,
    device: &Device,
) -> Result<(TrainSet, DataReport), SynthError> {
    let kind = GeneratorKind::parse(v.generator.as_deref().unwrap_or(""))?;
    let real_fraction = match v.data_source() {
        DataSource::Mixed { real_fraction } => real_fraction,
        _ => 0.0,
    };
    let phase = |s: &mut Session<'_>, name: &str| {
        s.begin_phase(name)
            .map_err(|e| SynthError::Candle(candle_core::Error::Msg(e.to_string())))
    };
    phase(s, "generator-fit")?;
    let mut gen = synth::build(kind);
    gen.fit(real, p.classes, &mut SeededRng::new(seed, 11), device)?;
    let fit_flops = gen.fit_flops();
    s.add_flops(fit_flops);
    phase(s, "sample")?;
    let (keep, counts) = blend_plan(
        real,
        p.classes,
        real_fraction,
        &mut SeededRng::new(seed, 12),
    );
    let n_synth: usize = counts.iter().sum();
    let mut set = gen.sample(&counts, &mut SeededRng::new(seed, 13), device)?;
    let sample_flops = gen.sample_flops(n_synth);
    s.add_flops(sample_flops);
    let len = real.sample_len();
    for &i in &keep {
        set.images
            .extend_from_slice(&real.images[i * len..(i + 1) * len]);
        set.labels.push(real.labels[i]);
    }
    let n = set.len();
    let (x, y) = crate::engine::prepare::images_to_tensors(spec, &set, n, device)?;
    let report = DataReport::Generated(GeneratedData {
        generator: kind.label().to_string(),
        generator_detail: gen.describe(),
        real_fraction,
        amount: GeneratedAmount::Images {
            real_samples: keep.len(),
            synthetic_samples: n_synth,
        },
        fit_flops,
        sample_flops,
        note: "the generator is fitted to the real training images and sampled inside the measured window (phases generator-fit and sample); the classifier trains on this set and is evaluated on the real held-out set".into(),
    });
    Ok((
        TrainSet {
            x: Inputs::plain(x),
            y,
            n,
        },
        report,
    ))
}

/// Text: fit a character n-gram model to the real training text (phase `generator-fit`),
/// sample a text of the same length (phase `sample`; a blend keeps the first `real_fraction`
/// of the real text and samples the rest) and cut it into training windows as `prepare` cuts
/// the real text; FLOPs of both are counted.
fn synthetic_text_set(
    s: &mut Session<'_>,
    spec: &TaskSpec,
    v: &Variant,
    seed: u64,
    real: &TextSet,
    device: &Device,
) -> Result<(TrainSet, DataReport), SynthError> {
    let real_fraction = match v.data_source() {
        DataSource::Mixed { real_fraction } => real_fraction,
        _ => 0.0,
    };
    let phase = |s: &mut Session<'_>, name: &str| {
        s.begin_phase(name)
            .map_err(|e| SynthError::Candle(candle_core::Error::Msg(e.to_string())))
    };
    let context = spec
        .model
        .context()
        .ok_or_else(|| SynthError::InvalidOption("a text generator needs a token model".into()))?;
    phase(s, "generator-fit")?;
    let opts = synth::ngram::NgramOptions::default();
    let mut gen = synth::ngram::CharNgram::new(opts)?;
    gen.fit(&real.train, real.vocab.len())?;
    let fit_flops = gen.fit_flops();
    s.add_flops(fit_flops);
    phase(s, "sample")?;
    let n_real = (real.train.len() as f64 * real_fraction).floor() as usize;
    let n_synth = real.train.len() - n_real;
    let mut ids = real.train[..n_real].to_vec();
    ids.extend(gen.sample(n_synth, &mut SeededRng::new(seed, 13))?);
    let sample_flops = gen.sample_flops(n_synth);
    s.add_flops(sample_flops);
    let (x, y, n) = crate::engine::prepare::text_windows(&ids, context, usize::MAX, device)?;
    let report = DataReport::Generated(GeneratedData {
        generator: "ngram".into(),
        generator_detail: gen.describe(),
        real_fraction,
        amount: GeneratedAmount::Text {
            real_characters: n_real,
            synthetic_characters: n_synth,
        },
        fit_flops,
        sample_flops,
        note: "a character n-gram model (interpolated absolute discounting) is fitted to the real training text and sampled to the same length inside the measured window (phases generator-fit and sample); the model trains on this text and is evaluated on the real held-out text".into(),
    });
    Ok((
        TrainSet {
            x: Inputs::plain(x),
            y,
            n,
        },
        report,
    ))
}

/// The dense model's stage: train to T (any eval), never scored.
fn dense_stage(
    s: &mut Session<'_>,
    model: &dyn RefModel,
    data: &TrainSet,
    opt: &mut crate::engine::optim::FusedAdamW,
    budget: usize,
) -> Result<Option<StageEnd>, TrainError> {
    s.begin_phase("dense-train")?;
    let stage = Stage {
        max_steps: budget,
        until: Until::AnyEval,
        scored: false,
        score_last: false,
        evaluate: true,
        hook: &mut NoHook,
    };
    match s.train_stage(model, data, opt, stage) {
        Ok(end) => Ok(Some(end)),
        Err(e) => {
            s.fail(e);
            Ok(None)
        }
    }
}

/// Dense to T, gradual global magnitude pruning (cubic schedule), recovery to T with masks.
fn unstructured<'a>(
    mut s: Session<'a>,
    spec: &TaskSpec,
    v: &Variant,
    opts: &TrainOptions,
    model: &dyn RefModel,
    data: &TrainSet,
    budget: usize,
) -> Result<(Session<'a>, PruningMethod), VariantRunError> {
    let mut opt = crate::engine::step::optimizer(spec, model).map_err(TrainError::from)?;
    let dense = dense_stage(&mut s, model, data, &mut opt, budget)?;
    if dense != Some(StageEnd::Target) {
        return Ok((
            s,
            PruningMethod::Skipped {
                kind: "unstructured".into(),
                skipped: format!("the dense model did not reach T ({dense:?}): nothing pruned"),
            },
        ));
    }
    let schedule = Schedule::for_eval_cadence(spec.train.eval_every_steps);
    let mut masks = Masks::new(model, v.sparsity, schedule).map_err(TrainError::from)?;
    let start_step = s.steps();
    s.begin_phase("prune")?;
    let stage = Stage {
        max_steps: schedule.steps(),
        until: Until::target_if(opts.stop_at_target),
        scored: false,
        score_last: true,
        evaluate: true,
        hook: &mut masks,
    };
    let end = match s.train_stage(model, data, &mut opt, stage) {
        Ok(e) => e,
        Err(e) => {
            s.fail(e);
            return Ok((s, PruningMethod::Gradual(masks.report(start_step))));
        }
    };
    if end != StageEnd::Target && s.status() != Status::Ok {
        s.begin_phase("recover")?;
        let mut hook = prune::Frozen(&masks);
        let stage = Stage {
            max_steps: budget.saturating_sub(s.steps()),
            until: Until::target_if(opts.stop_at_target),
            scored: true,
            score_last: false,
            evaluate: true,
            hook: &mut hook,
        };
        if let Err(e) = s.train_stage(model, data, &mut opt, stage) {
            s.fail(e);
        }
    }
    Ok((s, PruningMethod::Gradual(masks.report(start_step))))
}

/// Dense to T, remove units by norm, rebuild a smaller dense model, recovery to T.
#[allow(clippy::too_many_arguments)]
fn structured<'a>(
    mut s: Session<'a>,
    spec: &TaskSpec,
    p: &Prepared,
    v: &Variant,
    opts: &TrainOptions,
    model: Box<dyn RefModel>,
    mut opt: crate::engine::optim::FusedAdamW,
    data: &TrainSet,
    budget: usize,
    device: &Device,
) -> Result<(Session<'a>, Box<dyn RefModel>, PruningMethod), VariantRunError> {
    let dense = dense_stage(&mut s, model.as_ref(), data, &mut opt, budget)?;
    if dense != Some(StageEnd::Target) {
        return Ok((
            s,
            model,
            PruningMethod::Skipped {
                kind: "structured".into(),
                skipped: format!("the dense model did not reach T ({dense:?}): nothing pruned"),
            },
        ));
    }
    s.begin_phase("prune")?;
    let pruned = prune::structured(&spec.model, model.as_ref(), v.sparsity, s.steps())
        .map_err(TrainError::from)?;
    let small = model::build_with(
        &pruned.spec,
        p.input,
        p.classes,
        ParamStore::from_tensors(pruned.weights, vec![]),
        &mut SeededRng::new(opts.seed, 0),
        device,
    )
    .map_err(TrainError::from)?;
    s.set_final_model(small.as_ref());
    let report = PruningMethod::Structured(pruned.report);
    // The pruned model before any recovery is the variant's model: scored.
    let q = s
        .eval_now(small.as_ref(), true, 0)
        .map_err(TrainError::from)?;
    if q < spec.target.value || !opts.stop_at_target {
        s.begin_phase("recover")?;
        let mut opt =
            crate::engine::step::optimizer(spec, small.as_ref()).map_err(TrainError::from)?;
        let stage = Stage {
            max_steps: budget.saturating_sub(s.steps()),
            until: Until::target_if(opts.stop_at_target),
            scored: true,
            score_last: false,
            evaluate: true,
            hook: &mut NoHook,
        };
        if let Err(e) = s.train_stage(small.as_ref(), data, &mut opt, stage) {
            s.fail(e);
        }
    }
    Ok((s, small, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::precision::Cast;
    use crate::engine::train::StepHook;
    use candle_core::{DType, Tensor};

    fn tiny() -> (Box<dyn RefModel>, Tensor, Tensor) {
        let dev = Device::Cpu;
        let m = model::build(
            &ModelSpec::Mlp { hidden: vec![16] },
            InputShape::Image { c: 1, h: 4, w: 4 },
            3,
            &mut SeededRng::new(5, 0),
            &dev,
        )
        .unwrap();
        let x = Tensor::rand(0f32, 1., (8, 1, 4, 4), &dev).unwrap();
        let y = Tensor::new(&[0u32, 1, 2, 0, 1, 2, 0, 1], &dev).unwrap();
        (m, x, y)
    }

    /// AMP: the forward runs in bf16, the gradients arrive on the f32 masters as f32.
    /// A synthetic run's classifier never reads a real training image: with real fraction 0
    /// the plan keeps none and draws every class's count from the generator; a blend keeps
    /// the class balance.
    #[test]
    fn blend_plans_keep_class_counts_and_no_real_image_when_synthetic() {
        let real = ImageSet {
            images: (0..10 * 4).map(|i| i as f32 / 40.0).collect(),
            labels: vec![0, 1, 1, 2, 2, 2, 0, 1, 2, 2],
            shape: [1, 2, 2],
        };
        let (keep, counts) = blend_plan(&real, 3, 0.0, &mut SeededRng::new(1, 0));
        assert!(keep.is_empty());
        assert_eq!(counts, [2, 3, 5]);
        let (keep, counts) = blend_plan(&real, 3, 0.5, &mut SeededRng::new(1, 0));
        assert_eq!(counts, [1, 1, 2]); // round(0.5 x [2, 3, 5]) = [1, 2, 3] kept (half up)
        assert_eq!(keep.len(), 6);
        let mut kept_per_class = [0usize; 3];
        for &i in &keep {
            kept_per_class[real.labels[i] as usize] += 1;
        }
        assert_eq!(kept_per_class, [1, 2, 3]);
    }

    #[test]
    fn amp_gradients_reach_the_f32_masters_as_f32() {
        let (m, x, y) = tiny();
        let cast = Cast::for_precision(Precision::Bf16Amp, &Device::Cpu).unwrap();
        let (loss, grads) = crate::engine::step::grads_of(m.as_ref(), &cast, None, &x, &y).unwrap();
        assert_eq!(loss.dtype(), DType::F32);
        assert!(cast.ran_low_precision());
        for (name, var) in m.params().named() {
            assert_eq!(var.dtype(), DType::F32, "{name}");
            let g = grads.get(var.as_tensor()).expect("a gradient");
            assert_eq!(g.dtype(), DType::F32, "{name}");
            let n = g
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(n > 0.0 && n.is_finite(), "{name}: {n}");
        }
    }

    /// Masked weights are exactly zero after pruning and stay zero through optimizer steps
    /// (AdamW's weight decay and momentum would move them; the hook re-applies the masks).
    #[test]
    fn masked_weights_stay_exactly_zero_through_training() {
        let (m, x, y) = tiny();
        let spec_opt = candle_nn::ParamsAdamW {
            lr: 0.01,
            ..Default::default()
        };
        let mut opt = <crate::engine::optim::FusedAdamW as candle_nn::Optimizer>::new(
            m.params().vars(),
            spec_opt,
        )
        .unwrap();
        let mut masks = Masks::new(m.as_ref(), 0.7, Schedule::for_eval_cadence(5)).unwrap();
        masks.prune_to(0.7).unwrap();
        let zeros = |m: &dyn RefModel| -> Vec<Vec<bool>> {
            m.params()
                .weights()
                .iter()
                .filter(|w| w.uses_per_sample > 0)
                .map(|w| {
                    let (_, v) = m
                        .params()
                        .named()
                        .iter()
                        .find(|(n, _)| *n == w.name)
                        .unwrap();
                    v.flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .map(|x| *x == 0.0)
                        .collect()
                })
                .collect()
        };
        let before = zeros(m.as_ref());
        let n0: usize = before.iter().flatten().filter(|z| **z).count();
        assert!(n0 as f64 >= 0.69 * masks.prunable_elems() as f64);
        let mut hook = prune::Frozen(&masks);
        for k in 1..=5 {
            let _ = crate::engine::step::train_step(m.as_ref(), &mut opt, &x, &y).unwrap();
            hook.after_step(k).unwrap();
        }
        let after = zeros(m.as_ref());
        for (b, a) in before.iter().zip(&after) {
            for (zb, za) in b.iter().zip(a) {
                assert!(!zb || *za, "a pruned weight moved");
            }
        }
    }
}
