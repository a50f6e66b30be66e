//! One training step per reference task (f32, batch from the task file), on the CPU.
//! Speed is measured here, never asserted in tests. Run: `cargo bench --bench train_step`.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use joulebench::{data, model, task, train};

fn bench_tasks(c: &mut Criterion) {
    let dev = Device::Cpu;
    let dir = task::default_models_dir();
    let mut group = c.benchmark_group("train_step_f32");
    group.sample_size(20);
    for name in ["digits-mlp", "mnist-mlp", "mnist-cnn", "text-charlm"] {
        let spec = task::find(&dir, name).expect("shipped task");
        let bundle = data::load(spec.dataset, None).expect("shipped data");
        let p = train::prepare(&spec, &bundle, &dev).expect("prepare");
        let mut rng = model::SeededRng::new(1, 0);
        let m = model::build(&spec.model, p.input, p.classes, &mut rng, &dev).expect("model");
        let mut opt = train::optimizer(&spec, m.as_ref()).expect("optimizer");
        let bs = spec.train.batch_size;
        let x = p.train_x.narrow(0, 0, bs).expect("batch");
        let y = p.train_y.narrow(0, 0, bs).expect("batch");
        group.bench_function(name, |b| {
            b.iter(|| {
                let loss: Tensor = train::train_step(m.as_ref(), &mut opt, &x, &y).expect("step");
                // Force completion of the step (the CPU backend is synchronous; on CUDA this
                // would be the synchronisation point).
                loss.to_scalar::<f32>().expect("scalar")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_tasks);
criterion_main!(benches);
