#!/usr/bin/env python3
"""PyTorch's dense-layer GEMM rate at the transformer tasks' shapes, the anchor for
`cargo bench --bench ops -- gemm/` (joulebench's `kernels::Linear`, the `gemm` crate).

Each row: F.linear(x, W) without a bias, x (rows, in), W (out, in), float32. "forward" is the
call alone (no autograd); "step" is forward + backward of sum(F.linear(x, W) * g) with x and W
requiring gradients (input gradient and weight gradient: 3 GEMMs, counted as 3x the forward's
FLOPs, as the criterion bench counts them). Median of 7 timings of N calls after warm-up;
GFLOP/s = 2 * rows * in * out / time (x3 for the step). The square-768 row is the reference the
criterion bench divides by, so the two tables' ratio columns compare directly.

Usage: .venv-torch/bin/python scripts/gemm-rate-torch.py [--threads N]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

SHAPES = [("square-768", 768, 768, 768),
          ("gpt-mini-qkv", 768, 128, 384), ("gpt-mini-proj", 768, 128, 128),
          ("gpt-mini-ff-in", 768, 128, 512), ("gpt-mini-ff-out", 768, 512, 128),
          ("charlm-qkv", 2048, 64, 192), ("charlm-proj", 2048, 64, 64),
          ("charlm-ff-in", 2048, 64, 256), ("charlm-ff-out", 2048, 256, 64)]


def timed(fn, calls):
    for _ in range(max(3, calls // 10)):
        fn()
    times = []
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t) / calls)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    ref_f = ref_s = None
    print(f"{'shape':34}{'forward GFLOP/s':>16}{'/ square':>10}{'step GFLOP/s':>14}{'/ square':>10}")
    for label, rows, inp, out in SHAPES:
        flop = 2 * rows * inp * out
        calls = max(10, int(2e9 / flop))
        x, w = torch.randn(rows, inp), torch.randn(out, inp)
        g = torch.randn(rows, out)
        with torch.no_grad():
            tf = timed(lambda: F.linear(x, w), calls)
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()

        def step():
            xg.grad = None
            wg.grad = None
            F.linear(xg, wg).backward(g)

        ts = timed(step, max(5, calls // 3))
        rf, rs = flop / tf / 1e9, 3 * flop / ts / 1e9
        ref_f, ref_s = ref_f or rf, ref_s or rs
        name = f"{label} ({rows} x {inp} -> {out})"
        print(f"{name:34}{rf:16.1f}{rf / ref_f:10.2f}{rs:14.1f}{rs / ref_s:10.2f}")


if __name__ == "__main__":
    main()
