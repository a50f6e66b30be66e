//! One training step per reference task and precision variant, on the CPU (batch from the
//! task file; batch gather, forward, backward, optimizer). Speed is measured here, never
//! asserted in tests. Run: `cargo bench --bench train_step`. Rows: `train_step/<variant>/<task>`.
//!
//! The reference (candle-nn's AdamW on the same kernels) is the `train_step_candle_adamw` group,
//! so the fused optimizer's gain is read off the same run.

use candle_core::{Device, Tensor};
use candle_nn::Optimizer;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use joulebench::data;
use joulebench::engine::model;
use joulebench::engine::precision::{Amp, Cast};
use joulebench::spec::{task, variant};

const TASKS: [&str; 6] = [
    "digits-mlp",
    "mnist-mlp",
    "mnist-cnn",
    "text-charlm",
    "shakespeare-gpt-mini",
    "fashion-resnet-mini",
];

/// Precision variants benched. bf16-amp is the training loop's own recipe (`precision::Amp`):
/// forward in bf16 where the backend can (candle 0.11's CPU has no bf16 conv2d, so the CNN's
/// convolutions stay f32, as the run file records), f32 loss, f32 gradients on the masters.
const VARIANTS: &[&str] = &["f32", "bf16-amp"];

struct Setup {
    m: Box<dyn model::RefModel>,
    spec: task::TaskSpec,
    order: Tensor,
    x: joulebench::engine::prepare::Inputs,
    y: Tensor,
    n_batches: usize,
}

fn setup(name: &str, dev: &Device) -> Setup {
    let spec = task::find(&task::default_models_dir(), name).expect("shipped task");
    let bundle = data::load(spec.dataset, None).expect("shipped data");
    let p = joulebench::engine::prepare::prepare(&spec, &bundle, dev).expect("prepare");
    let m = model::build(
        &spec.model,
        p.input,
        p.classes,
        &mut model::SeededRng::new(1, 0),
        dev,
    )
    .expect("model");
    let mut perm: Vec<u32> = (0..p.n_train as u32).collect();
    model::SeededRng::new(1, 1).shuffle(&mut perm);
    let bs = spec.train.batch_size;
    Setup {
        m,
        n_batches: p.n_train / bs,
        order: Tensor::from_slice(&perm, perm.len(), dev).expect("order"),
        x: p.train_x,
        y: p.train_y,
        spec,
    }
}

/// A step as `train::train` runs it: gather the next batch through the epoch's order, forward
/// under `cast`, backward, step.
fn step<O: Optimizer>(s: &Setup, cast: &Cast, opt: &mut O, b: &mut usize) -> f32 {
    let bs = s.spec.train.batch_size;
    let idx = s.order.narrow(0, (*b % s.n_batches) * bs, bs).expect("idx");
    *b += 1;
    let x = s.x.index_select(&idx, 0).expect("x");
    let y = s.y.index_select(&idx, 0).expect("y");
    let (loss, grads) =
        joulebench::engine::step::grads_of(s.m.as_ref(), cast, None, &x, &y).expect("grads");
    opt.step(&grads).expect("step");
    // Forces completion (the CPU backend is synchronous; on CUDA this is the sync point).
    loss.to_scalar::<f32>().expect("scalar")
}

fn bench_tasks(c: &mut Criterion) {
    // The binary's heap policy, so a step here costs what it costs in `joulebench run`.
    joulebench::engine::alloc::configure_from_env();
    let dev = Device::Cpu;
    for v in VARIANTS {
        let precision = variant::parse(v).expect("known variant").precision;
        let cast = Amp::for_precision(precision, &dev)
            .expect("precision runs on the CPU")
            .cast;
        let mut group = c.benchmark_group(format!("train_step/{v}"));
        group.sample_size(20);
        for name in TASKS {
            let s = setup(name, &dev);
            let mut opt =
                joulebench::engine::step::optimizer(&s.spec, s.m.as_ref()).expect("optimizer");
            let mut b = 0;
            group.bench_function(BenchmarkId::from_parameter(name), |bch| {
                bch.iter(|| step(&s, &cast, &mut opt, &mut b))
            });
        }
        group.finish();
    }
    let mut group = c.benchmark_group("train_step_candle_adamw/f32");
    group.sample_size(20);
    for name in ["mnist-mlp", "mnist-cnn"] {
        let s = setup(name, &dev);
        let p = adamw_params(&s.spec);
        let mut opt = candle_nn::AdamW::new(s.m.params().vars(), p).expect("optimizer");
        let mut b = 0;
        group.bench_function(BenchmarkId::from_parameter(name), |bch| {
            bch.iter(|| step(&s, &Cast::f32(), &mut opt, &mut b))
        });
    }
    group.finish();
}

fn adamw_params(spec: &task::TaskSpec) -> candle_nn::ParamsAdamW {
    let task::OptimizerSpec::Adamw {
        lr,
        beta1,
        beta2,
        eps,
        weight_decay,
        ..
    } = spec.optimizer;
    candle_nn::ParamsAdamW {
        lr,
        beta1,
        beta2,
        eps,
        weight_decay,
    }
}

criterion_group!(benches, bench_tasks);
criterion_main!(benches);
