//! The fused transformer ops (layer norm, GELU, cross-entropy, causal attention) and the
//! ResNet's batch norm (training statistics, ReLU fused) against candle's composed ops,
//! forward + backward, at the shapes of the shipped tasks (one step's worth of one layer). Run:
//! `cargo bench --bench ops`; rows `ops/<op>/<fused|composed>/<task>`. The composed path is the
//! same function forced with `kernels::with_composed` (what `JOULEBENCH_COMPOSED_OPS=1` does).
//! `gemm/linear_no_bias[_step][_crate]/<layer>`: the transformer tasks' dense layers, forward (and
//! forward + backward), in FLOP/s, on `sgemm` and (`_crate`) on the `gemm` crate.

use candle_core::Module;
use candle_core::{Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use joulebench::engine::kernels::{
    batch_norm, causal_attention, causal_attention_composed, conv2d_with, cross_entropy, gelu,
    layer_norm, with_composed, with_gemm_crate, BnStats, ConvAlgo, Linear,
};

/// (task, batch, context, d_model, heads).
const SHAPES: [(&str, usize, usize, usize, usize); 3] = [
    ("text-charlm", 32, 64, 64, 4),
    ("shakespeare-gpt-mini", 12, 64, 128, 4),
    ("shakespeare-gpt", 64, 256, 384, 6),
];

fn rand(shape: &[usize]) -> Tensor {
    Tensor::rand(-1f32, 1f32, shape, &Device::Cpu).expect("rand")
}

/// Forward, a scalar loss, backward: what one training step asks of the op.
fn fwd_bwd(f: &dyn Fn() -> Tensor) -> f32 {
    let y = f();
    let g = y.sum_all().expect("sum").backward().expect("backward");
    drop(g);
    0.0
}

fn bench_ops(c: &mut Criterion) {
    let mut g = c.benchmark_group("ops");
    g.sample_size(10);
    for (task, b, t, d, h) in SHAPES {
        let x = Var::from_tensor(&rand(&[b, t, d])).expect("var");
        let w = Var::from_tensor(&rand(&[d])).expect("var");
        let bias = Var::from_tensor(&rand(&[d])).expect("var");
        let ln = || layer_norm(x.as_tensor(), w.as_tensor(), bias.as_tensor(), 1e-5).expect("ln");
        g.bench_function(BenchmarkId::new("layer_norm/fused", task), |bch| {
            bch.iter(|| fwd_bwd(&ln))
        });
        g.bench_function(BenchmarkId::new("layer_norm/composed", task), |bch| {
            bch.iter(|| with_composed(|| fwd_bwd(&ln)))
        });
        let ff = Var::from_tensor(&rand(&[b, t, 4 * d])).expect("var");
        let act = || gelu(ff.as_tensor()).expect("gelu");
        g.bench_function(BenchmarkId::new("gelu/fused", task), |bch| {
            bch.iter(|| fwd_bwd(&act))
        });
        g.bench_function(BenchmarkId::new("gelu/composed", task), |bch| {
            bch.iter(|| with_composed(|| fwd_bwd(&act)))
        });
        // Byte-level vocabulary (256) over every position of the batch.
        let logits = Var::from_tensor(&rand(&[b * t, 256])).expect("var");
        let targets: Vec<u32> = (0..b * t).map(|i| (i * 37 % 256) as u32).collect();
        let targets = Tensor::from_vec(targets, b * t, &Device::Cpu).expect("targets");
        let ce = || cross_entropy(logits.as_tensor(), &targets).expect("loss");
        g.bench_function(BenchmarkId::new("cross_entropy/fused", task), |bch| {
            bch.iter(|| fwd_bwd(&ce))
        });
        g.bench_function(BenchmarkId::new("cross_entropy/composed", task), |bch| {
            bch.iter(|| with_composed(|| fwd_bwd(&ce)))
        });
        let qkv = Var::from_tensor(&rand(&[b, t, 3 * d])).expect("var");
        let scale = 1.0 / ((d / h) as f64).sqrt();
        let att = || causal_attention(qkv.as_tensor(), h, scale, None).expect("attention");
        g.bench_function(BenchmarkId::new("attention/fused", task), |bch| {
            bch.iter(|| fwd_bwd(&att))
        });
        let composed =
            || causal_attention_composed(qkv.as_tensor(), h, scale, None).expect("attention");
        g.bench_function(BenchmarkId::new("attention/composed", task), |bch| {
            bch.iter(|| fwd_bwd(&composed))
        });
    }
    // fashion-resnet-mini's batch norms at batch 128: the stem's (8 x 28 x 28), stage 2's
    // (16 x 14 x 14) and stage 3's (32 x 7 x 7).
    for (label, shape) in [
        ("fashion-resnet-mini-stem", [128, 8, 28, 28]),
        ("fashion-resnet-mini-stage2", [128, 16, 14, 14]),
        ("fashion-resnet-mini-stage3", [128, 32, 7, 7]),
    ] {
        let c = shape[1];
        let x = Var::from_tensor(&rand(&shape)).expect("var");
        let w = Var::from_tensor(&rand(&[c])).expect("var");
        let bias = Var::from_tensor(&rand(&[c])).expect("var");
        let bn = || {
            let (x, w, b) = (x.as_tensor(), w.as_tensor(), bias.as_tensor());
            batch_norm(x, w, b, BnStats::Batch, 1e-5, true)
                .expect("bn")
                .y
        };
        g.bench_function(BenchmarkId::new("batch_norm_relu/fused", label), |bch| {
            bch.iter(|| fwd_bwd(&bn))
        });
        g.bench_function(BenchmarkId::new("batch_norm_relu/composed", label), |bch| {
            bch.iter(|| with_composed(|| fwd_bwd(&bn)))
        });
    }
    g.finish();
}

/// The dense layers of `shakespeare-gpt-mini` (768 rows: batch 12 x context 64), forward only,
/// without a bias, through `kernels::Linear` (the `gemm` crate): throughput in elements/s is
/// FLOP/s (2 m n k a call). `scripts/gemm-rate-torch.py` measures PyTorch's `F.linear` at the
/// same shapes, for the GEMM share of the gap to PyTorch.
fn bench_gemm(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm");
    g.sample_size(20);
    // (label, rows = batch x context, in features, out features). `square-768` is the `gemm`
    // crate's rate on a shape it handles at its best: the other rows read against it in the
    // same run, which holds on a shared machine where absolute rates move.
    for (label, rows, inp, out) in [
        ("square-768", 768, 768, 768),
        ("gpt-mini-qkv", 768, 128, 384),
        ("gpt-mini-proj", 768, 128, 128),
        ("gpt-mini-ff-in", 768, 128, 512),
        ("gpt-mini-ff-out", 768, 512, 128),
        ("charlm-qkv", 2048, 64, 192),
        ("charlm-proj", 2048, 64, 64),
        ("charlm-ff-in", 2048, 64, 256),
        ("charlm-ff-out", 2048, 256, 64),
    ] {
        let x = rand(&[rows, inp]);
        let layer = Linear::new(rand(&[out, inp]), None);
        g.throughput(Throughput::Elements((2 * rows * inp * out) as u64));
        g.bench_function(BenchmarkId::new("linear_no_bias", label), |bch| {
            bch.iter(|| layer.forward(&x).expect("linear"))
        });
        g.bench_function(BenchmarkId::new("linear_no_bias_crate", label), |bch| {
            bch.iter(|| with_gemm_crate(|| layer.forward(&x).expect("linear")))
        });
        // Forward and backward (input and weight gradients): three GEMMs of the forward's
        // FLOPs, so the throughput is 3x the forward's.
        let xv = Var::from_tensor(&x).expect("var");
        let wv = Var::from_tensor(&rand(&[out, inp])).expect("var");
        let tracked = Linear::new(wv.as_tensor().clone(), None);
        g.throughput(Throughput::Elements((6 * rows * inp * out) as u64));
        g.bench_function(BenchmarkId::new("linear_no_bias_step", label), |bch| {
            bch.iter(|| fwd_bwd(&|| tracked.forward(xv.as_tensor()).expect("linear")))
        });
        g.bench_function(
            BenchmarkId::new("linear_no_bias_step_crate", label),
            |bch| {
                bch.iter(|| {
                    with_gemm_crate(|| {
                        fwd_bwd(&|| tracked.forward(xv.as_tensor()).expect("linear"))
                    })
                })
            },
        );
    }
    g.finish();
}

/// The ResNets' stride-1 3x3 convolutions at batch 128 (ResNet-20's widths; ResNet-8's are
/// half), forward alone and forward + backward (input, kernel and bias gradients), through
/// the algorithm `Auto` picks, the direct kernel forced, and im2col + GEMM.
/// Throughput: FLOP/s of the forward (2 n o c kh kw oh ow), so the two rows of a shape compare
/// directly. `conv/<auto|direct|im2col>/<forward|step>/<shape>`.
fn bench_conv(c: &mut Criterion) {
    joulebench::engine::alloc::configure_from_env();
    let mut g = c.benchmark_group("conv");
    g.sample_size(10);
    // (label, batch, in channels, out channels, plane, kernel, padding, stride)
    for (label, n, c, o, hw, k, pad, stride) in [
        ("resnet20-stage1-16x28x28", 128, 16, 16, 28, 3, 1, 1),
        ("resnet20-stage2-32x14x14", 128, 32, 32, 14, 3, 1, 1),
        ("resnet20-stage3-64x7x7", 128, 64, 64, 7, 3, 1, 1),
        ("resnet20-down2-16x28x28-s2", 128, 16, 32, 28, 3, 1, 2),
        ("resnet20-down3-32x14x14-s2", 128, 32, 64, 14, 3, 1, 2),
        ("resnet20-proj2-1x1-16x28x28-s2", 128, 16, 32, 28, 1, 0, 2),
        ("resnet20-proj3-1x1-32x14x14-s2", 128, 32, 64, 14, 1, 0, 2),
        ("resnet8-down2-8x28x28-s2", 128, 8, 16, 28, 3, 1, 2),
        ("resnet8-down3-16x14x14-s2", 128, 16, 32, 14, 3, 1, 2),
    ] {
        let x = Var::from_tensor(&rand(&[n, c, hw, hw])).expect("var");
        let w = Var::from_tensor(&rand(&[o, c, k, k])).expect("var");
        let b = Var::from_tensor(&rand(&[o])).expect("var");
        let ohw = (hw + 2 * pad - k) / stride + 1;
        g.throughput(Throughput::Elements(
            (2 * n * o * c * k * k * ohw * ohw) as u64,
        ));
        for (name, algo) in [
            ("auto", ConvAlgo::Auto),
            ("direct", ConvAlgo::Direct),
            ("im2col", ConvAlgo::Im2col),
        ] {
            let conv = || {
                conv2d_with(
                    x.as_tensor(),
                    w.as_tensor(),
                    b.as_tensor(),
                    pad,
                    stride,
                    algo,
                )
                .expect("conv")
            };
            g.bench_function(BenchmarkId::new(format!("{name}/forward"), label), |bch| {
                bch.iter(conv)
            });
            g.bench_function(BenchmarkId::new(format!("{name}/step"), label), |bch| {
                bch.iter(|| fwd_bwd(&conv))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_ops, bench_gemm, bench_conv);
criterion_main!(benches);
