#!/usr/bin/env python3
"""joulebench's task mnist-cnn (models/mnist-cnn.toml) in PyTorch, for `joulebench exec`.

Mirrors src/engine/model/cnn.rs: two blocks of Conv2d(kernel k, stride 1, 'same' padding k // 2, with
bias) -> ReLU -> MaxPool2d(2) (floor on odd sizes), channels `[model] channels` (mnist-cnn:
1 -> 16 -> 32, k = 5, 28 -> 14 -> 7), then flatten (C, H, W order), Linear(32*7*7, hidden = 128)
-> ReLU -> Linear(128, 10). Every weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
fan_in = in_channels * k * k for a convolution, in_features for a Linear. joulebench fuses
ReLU and max-pool into one kernel (max_pool(relu(x))), which equals relu then pool here. Data,
standardisation, AdamW, batch order, warm-up, eval cadence, budget, stop rule, precision and the
MLLOG output are jbtorch.py's (its docstring says what each mirrors in joulebench and how).

Any task with `dataset = "mnist"` and `[model] kind = "cnn"` is accepted (only mnist-cnn ships).

Known differences from joulebench's candle run: the initial weights and the batch order come from
PyTorch's generators, not joulebench's ChaCha8 streams (same distributions, different numbers);
PyTorch's convolutions (oneDNN on the CPU, cuDNN on CUDA) sum in another order than joulebench's
im2col kernels. Under bf16-amp joulebench's CPU build runs the convolutions in f32 (candle has no
bf16 CPU conv2d; its run file says so) while PyTorch's CPU autocast runs them in bf16.

Usage: mnist_cnn.py --seed N [--precision f32|bf16-amp|tf32] [--device cpu|cuda] [--threads N]
       [--task NAME | --task-file PATH] [--data-dir PATH] [--full-budget] [--max-steps N]
Exit status: 0 on completion (target reached or not), 2 on bad input, 143 on SIGTERM (after
printing run_stop with status "aborted" when run_start was printed).
"""

import sys

import jbtorch


def build(spec, info, torch):
    nn = torch.nn
    m = spec["model"]
    try:
        c1, c2 = (int(v) for v in m["channels"])
        k, hidden = int(m["kernel"]), int(m["hidden"])
    except (KeyError, TypeError, ValueError):
        raise jbtorch.BadInput("task file: a cnn needs 'model.channels' = [c1, c2], "
                               "'model.kernel' and 'model.hidden'")
    if min(c1, c2, hidden) < 1 or k < 1 or k % 2 == 0:
        raise jbtorch.BadInput("task file: key 'model.kernel' must be odd and 'model.channels' "
                               "non-zero")
    c, h, w = info["shape"]
    layers = []
    ci = c
    for co in (c1, c2):
        conv = nn.Conv2d(ci, co, k, stride=1, padding=k // 2)
        with torch.no_grad():
            jbtorch.uniform_(conv.weight, ci * k * k)
            jbtorch.uniform_(conv.bias, ci * k * k)
        layers += [conv, nn.ReLU(), nn.MaxPool2d(2)]
        ci, h, w = co, h // 2, w // 2
    layers.append(nn.Flatten())
    for i, (fi, fo) in enumerate([(ci * h * w, hidden), (hidden, jbtorch.NUM_CLASSES)]):
        lin = nn.Linear(fi, fo)
        with torch.no_grad():
            jbtorch.uniform_(lin.weight, fi)
            jbtorch.uniform_(lin.bias, fi)
        layers.append(lin)
        if i == 0:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


if __name__ == "__main__":
    sys.exit(jbtorch.main("mnist-cnn", "cnn", "mnist", build))
