#!/usr/bin/env python3
"""PyTorch's dense-layer GEMM rate at shakespeare-gpt-mini's shapes, the anchor for
`cargo bench --bench ops -- gemm` (joulebench's `kernels::Linear`, the `gemm` crate).

Each row: F.linear(x, W) without a bias, x (768, in), W (out, in), forward only, float32;
median of 7 timings of 200 calls after 20 warm-up calls; GFLOP/s = 2 * 768 * in * out / time.

Usage: .venv-torch/bin/python scripts/gemm-rate-torch.py [--threads N]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

SHAPES = [("gpt-mini-qkv", 768, 128, 384), ("gpt-mini-proj", 768, 128, 128),
          ("gpt-mini-ff-in", 768, 128, 512), ("gpt-mini-ff-out", 768, 512, 128)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    for label, rows, inp, out in SHAPES:
        x, w = torch.randn(rows, inp), torch.randn(out, inp)
        with torch.no_grad():
            for _ in range(20):
                F.linear(x, w)
            times = []
            for _ in range(7):
                t = time.perf_counter()
                for _ in range(200):
                    F.linear(x, w)
                times.append((time.perf_counter() - t) / 200)
        t = statistics.median(times)
        print(f"{label:16} {t * 1e6:8.1f} us  {2 * rows * inp * out / t / 1e9:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
