#!/usr/bin/env python3
"""joulebench's task mnist-mlp (models/mnist-mlp.toml) in PyTorch, for `joulebench exec`.

Mirrors src/engine/model/mlp.rs: the image flattened (784 inputs), one Linear per layer of
`[model] hidden` (mnist-mlp: 784-256-10), ReLU between layers and none after the last, every
weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Data, standardisation, AdamW, batch order,
warm-up, eval cadence, budget, stop rule, precision and the MLLOG output are jbtorch.py's (its
docstring says what each mirrors in joulebench and how).

Also runs mnist-rot90-mlp (the same model on MNIST rotated 90 degrees, a `[data] rotate_deg`
view): `mnist_mlp.py --task-file models/mnist-rot90-mlp.toml --seed 1`. Any task with
`dataset = "mnist"` and `[model] kind = "mlp"` is accepted; the digits tasks (another dataset,
the UCI 8x8 CSV) are not mirrored and exit 2.

Known differences from joulebench's candle run: the initial weights and the batch order come from
PyTorch's generators, not joulebench's ChaCha8 streams (same distributions, different numbers),
so curves agree in distribution, not bit for bit; PyTorch's kernels sum in another order than
joulebench's fused CPU kernels (last-bit differences per step).

Usage: mnist_mlp.py --seed N [--precision f32|bf16-amp|tf32] [--device cpu|cuda] [--threads N]
       [--task NAME | --task-file PATH] [--data-dir PATH] [--full-budget] [--max-steps N]
Exit status: 0 on completion (target reached or not), 2 on bad input, 143 on SIGTERM (after
printing run_stop with status "aborted" when run_start was printed).
"""

import sys

import jbtorch


def build(spec, info, torch):
    nn = torch.nn
    c, h, w = info["shape"]
    widths = [c * h * w] + [int(v) for v in spec["model"]["hidden"]] + [jbtorch.NUM_CLASSES]
    if any(v < 1 for v in widths):
        raise jbtorch.BadInput("task file: key 'model.hidden' has a zero-width layer")
    layers = [nn.Flatten()]
    for i, (fi, fo) in enumerate(zip(widths, widths[1:])):
        lin = nn.Linear(fi, fo)
        with torch.no_grad():
            jbtorch.uniform_(lin.weight, fi)  # fc{i}.weight, then fc{i}.bias, as joulebench
            jbtorch.uniform_(lin.bias, fi)
        layers.append(lin)
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


if __name__ == "__main__":
    sys.exit(jbtorch.main("mnist-mlp", "mlp", "mnist", build))
