#!/usr/bin/env python3
"""joulebench's task fashion-resnet (models/fashion-resnet.toml) in PyTorch, for `joulebench exec`.

Mirrors joulebench's `[model] kind = "resnet"`, He et al. 2016's CIFAR ResNet on 1x28x28 inputs:
  stem: conv3x3(1 -> c0, stride 1, pad 1, no bias) -> BatchNorm2d -> ReLU
  stages s = 0, 1, 2 of `blocks` basic blocks with channels[s] each; the first block of stages
  1 and 2 has stride 2 (28 -> 14 -> 7, padding 1 so 7 = ceil(14 / 2))
    basic block: conv3x3(cin -> c, stride, pad 1, no bias) -> BN -> ReLU
                 -> conv3x3(c -> c, pad 1, no bias) -> BN;
                 shortcut identity if stride 1 and cin == c, else conv1x1(cin -> c, stride,
                 no bias) -> BN; out = ReLU(main + shortcut)
  global average pooling -> Linear(c2, 10, with bias)
Every convolution and the Linear (weight and bias) U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
fan_in = cin * k * k (jbtorch.uniform_); BatchNorm2d PyTorch's defaults (weight 1, bias 0,
running mean 0 and variance 1, momentum 0.1, eps 1e-5, batch statistics with the biased variance
in the forward and the unbiased one in the running variance). The model is in train mode (batch
statistics) for the steps and in eval mode (running statistics) for the evals. fashion-resnet:
channels [16, 32, 64], 3 blocks per stage (ResNet-20, 272,186 parameters);
fashion-resnet-mini (`--task fashion-resnet-mini` or `--task-file
models/fashion-resnet-mini.toml`): [8, 16, 32], 1 block (ResNet-8, 19,810 parameters).

Data (jbtorch.py): data/fashion-mnist/'s four IDX files, SHA-256-checked, loaded as MNIST's,
(x / 255 - input_mean) / input_sd in f32. Training batches only (never the evals or the warm-up)
are augmented per sample (`[train] augment_crop_pad = 2`, `augment_hflip = true`): a random crop
of the image padded by 2 pixels with the standardised black value (0 - input_mean) / input_sd,
offsets uniform in 0..=4, then a horizontal flip with probability 1/2, from the augmentation
stream (derive_seed(seed, 7)), done as one gather on the device. The metric is top-1 accuracy
over the 10,000 test images (MLLOG `eval_accuracy`). AdamW with weight decay on the matrices
only (`decay = "matrices"`: the conv and Linear weights; BN weights and biases and the Linear
bias get 0), the cosine schedule with linear warm-up (100 steps, to min_lr at the task's budget
steps, `decay_steps` absent), no clipping. Batch order, warm-up (standard normal images; the BN
running statistics are restored after it), eval cadence, budget, stop rule, precision and the
MLLOG output are jbtorch.py's (its docstring says what each mirrors in joulebench and how).

Known differences from joulebench's candle run: the initial weights, the batch order and the
augmentation draws come from PyTorch's generators, not joulebench's ChaCha8 streams (same
distributions, different numbers); PyTorch's convolutions and batch norm (oneDNN on the CPU,
cuDNN on CUDA) sum in another order than joulebench's kernels. Under bf16-amp PyTorch's autocast
runs the convolutions and the Linear in bf16 and batch norm in f32 (its op lists), which need not
be joulebench's per-op-class policy (src/engine/precision.rs); joulebench's CPU build has no bf16 conv2d.

Usage: fashion_resnet.py --seed N [--precision f32|bf16-amp|tf32] [--device cpu|cuda]
       [--threads N] [--task NAME | --task-file PATH] [--data-dir PATH] [--full-budget]
       [--max-steps N]
Exit status: 0 on completion (target reached or not), 2 on bad input, 143 on SIGTERM (after
printing run_stop with status "aborted" when run_start was printed).
"""

import sys

import jbtorch


def build(spec, info, torch):
    nn = torch.nn
    F = torch.nn.functional
    m = spec["model"]
    if "inner" in m:
        raise jbtorch.BadInput("task file: key 'model.inner' (a structurally pruned ResNet) is "
                               "not mirrored here")
    ch, blocks = m.get("channels"), m.get("blocks")
    if (not isinstance(ch, list) or len(ch) != 3
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in ch)
            or isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1):
        raise jbtorch.BadInput("task file: a resnet needs 'model.channels' = [c0, c1, c2] "
                               "(positive integers) and 'model.blocks' (at least 1)")
    cin0 = info["shape"][0]

    def conv(ci, co, k, stride):
        cv = nn.Conv2d(ci, co, k, stride=stride, padding=k // 2, bias=False)
        with torch.no_grad():
            jbtorch.uniform_(cv.weight, ci * k * k)
        return cv

    class BasicBlock(nn.Module):
        def __init__(self, ci, co, stride):
            super().__init__()
            self.conv1 = conv(ci, co, 3, stride)
            self.bn1 = nn.BatchNorm2d(co)
            self.conv2 = conv(co, co, 3, 1)
            self.bn2 = nn.BatchNorm2d(co)
            self.shortcut = None
            if stride != 1 or ci != co:
                self.shortcut = nn.Sequential(conv(ci, co, 1, stride), nn.BatchNorm2d(co))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            # Draw order: stem, then each block's conv1, conv2, shortcut conv; then fc.
            self.stem = nn.Sequential(conv(cin0, ch[0], 3, 1), nn.BatchNorm2d(ch[0]),
                                      nn.ReLU())
            layers, ci = [], ch[0]
            for s, co in enumerate(ch):
                for i in range(blocks):
                    layers.append(BasicBlock(ci, co, 2 if (s > 0 and i == 0) else 1))
                    ci = co
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(ci, jbtorch.NUM_CLASSES)
            with torch.no_grad():
                jbtorch.uniform_(self.fc.weight, ci)
                jbtorch.uniform_(self.fc.bias, ci)

        def forward(self, x):
            x = self.layers(self.stem(x))
            return self.fc(x.mean(dim=(2, 3)))  # global average pooling

    return ResNet()


if __name__ == "__main__":
    sys.exit(jbtorch.main("fashion-resnet", "resnet", "fashion-mnist", build))
