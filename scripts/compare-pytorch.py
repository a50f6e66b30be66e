#!/usr/bin/env python3
"""Step time of joulebench (candle) against PyTorch on the same machine, in the same invocation.

Trains the same model (the task TOML's MLP or CNN), on the same data (the shipped MNIST IDX
files in data/mnist, read directly, pixels / 255); for the text transformers (`text-charlm`,
`shakespeare-gpt-mini`, `shakespeare-gpt`) and the ResNets (`fashion-resnet-mini`,
`fashion-resnet`) the model, data and step of their PyTorch programs in scripts/torch/
(jbtorch.py), with the same batch, optimizer (AdamW with
the task's lr, betas, eps and weight decay) and initial distribution (U(-1/sqrt(fan_in),
1/sqrt(fan_in)) for weights and biases, PyTorch's default and joulebench's), in PyTorch; and runs
`joulebench speed steps --json` for the candle side. Rounds alternate candle and PyTorch so
that both see the same background load; each round reports the median step time over its
timed steps (after warm-up), and the ratio is taken per round and summarised by its median.

Both sides also report CPU time per step (process-wide, all threads, mean over the timed steps:
joulebench from /proc/self/task/*/schedstat, PyTorch from time.process_time()). On a loaded
machine wall time mostly measures the neighbours; with --threads 1 the CPU-time ratio is the
work ratio, the closest a shared machine gets to a quiet one.

A step is: gather a batch from a seeded random permutation, forward, cross-entropy, backward,
AdamW step (PyTorch: zero_grad(set_to_none=True) first).

Usage:
  python scripts/compare-pytorch.py [--device cpu|cuda] [--variant f32|bf16-amp] [--tasks mnist-mlp mnist-cnn text-charlm]
         [--steps 50] [--warmup 10] [--rounds 3] [--threads N]
         [--joulebench target/release/joulebench]
         [--out results/.../compare-pytorch.json]

No canonical number is computed here: this prints speed ratios, it is not a benchmark result
of the energy protocol.
"""

import argparse
import gzip
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def read_idx(path: Path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return data[4 + 4 * ndim :], dims


def load_mnist(torch, device):
    imgs, dims = read_idx(ROOT / "data/mnist/train-images-idx3-ubyte.gz")
    labels, _ = read_idx(ROOT / "data/mnist/train-labels-idx1-ubyte.gz")
    n, h, w = dims
    x = torch.frombuffer(bytearray(imgs), dtype=torch.uint8).reshape(n, 1, h, w).float() / 255.0
    y = torch.frombuffer(bytearray(labels), dtype=torch.uint8).long()
    return x.to(device), y.to(device)


def build(torch, spec, device):
    nn = torch.nn
    m = spec["model"]
    if m["kind"] == "mlp":
        widths = [784] + list(m["hidden"]) + [10]
        layers = [nn.Flatten()]
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        model = nn.Sequential(*layers)
    elif m["kind"] == "cnn":
        c1, c2 = m["channels"]
        k = m["kernel"]
        flat = c2 * 7 * 7
        model = nn.Sequential(
            nn.Conv2d(1, c1, k, padding=k // 2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, k, padding=k // 2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(flat, m["hidden"]), nn.ReLU(), nn.Linear(m["hidden"], 10),
        )
    else:
        raise SystemExit(f"compare-pytorch: model kind {m['kind']!r} is not mirrored here")
    # joulebench's init: U(-b, b), b = 1/sqrt(fan_in), for weights and biases alike.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                fan_in = mod.weight[0].numel()
                b = 1.0 / fan_in ** 0.5
                mod.weight.uniform_(-b, b, generator=gen)
                mod.bias.uniform_(-b, b, generator=gen)
    return model.to(device)


def autocast(torch, device, variant):
    """The forward's precision context: none for f32, bf16 autocast for bf16-amp (PyTorch's
    mixed precision; on a CPU without AVX512-BF16/AMX its bf16 GEMMs are emulated)."""
    import contextlib

    if variant == "bf16-amp":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def torch_steps(torch, spec, device, steps, warmup, data, variant="f32"):
    x_all, y_all = data
    model = build(torch, spec, device)
    o = spec["optimizer"]
    opt = torch.optim.AdamW(model.parameters(), lr=o["lr"], betas=(o["beta1"], o["beta2"]),
                            eps=o["eps"], weight_decay=o["weight_decay"])
    bs = spec["train"]["batch_size"]
    perm = torch.randperm(x_all.shape[0], generator=torch.Generator().manual_seed(1)).to(device)
    per_epoch = x_all.shape[0] // bs

    def step(i):
        b = i % per_epoch
        idx = perm[b * bs : (b + 1) * bs]
        x, y = x_all[idx], y_all[idx]
        with autocast(torch, device, variant):
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed(torch, device, steps, warmup, step)


def timed(torch, device, steps, warmup, step):
    """Median wall ms of `step(i)` over `steps` after `warmup`, and CPU ms per step (all
    threads), synchronising the device around each step."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times, cpu0 = [], None
    for i in range(warmup + steps):
        if i == warmup:
            cpu0 = time.process_time()
        sync()
        t0 = time.perf_counter()
        step(i)
        sync()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), (time.process_time() - cpu0) * 1e3 / steps


# The PyTorch programs of scripts/torch/ that mirror joulebench's text transformers and
# ResNets, by model kind: their model builders and jbtorch's data preparation are reused, so
# the model, data, batch, optimizer (AdamW with decay groups) and clipping are the programs'
# own. As in `joulebench speed steps`, no augmentation is timed on either side.
PROGRAMS = {
    "char-transformer": ("text_charlm", "text"),
    "gpt": ("shakespeare_gpt", ("shakespeare", "text")),
    "resnet": ("fashion_resnet", "fashion-mnist"),
}


def torch_program_steps(torch, task, kind, device, steps, warmup, variant="f32"):
    """Step time of a task's PyTorch program: the step of scripts/torch/jbtorch.py
    (zero_grad, forward, f32 cross-entropy over every position, backward, clipping, AdamW)."""
    import importlib

    sys.path.insert(0, str(ROOT / "scripts" / "torch"))
    import jbtorch

    program, dataset = PROGRAMS[kind]
    build_model = importlib.import_module(program).build
    a = jbtorch.parse_args("compare-pytorch", task, ["--seed", "1", "--task", task])
    spec = jbtorch.load_task(a.task_file, kind, dataset)
    p = jbtorch.prepare(a, spec, spec["dataset"], torch)
    torch.manual_seed(1)
    model = build_model(spec, p.info, torch).to(device)
    model.train()
    o = spec["optimizer"]
    opt = torch.optim.AdamW(jbtorch.param_groups(model, o), lr=float(o["lr"]),
                            betas=(float(o["beta1"]), float(o["beta2"])), eps=float(o["eps"]),
                            weight_decay=float(o["weight_decay"]))
    params = list(model.parameters())
    clip = o["clip_grad_norm"]
    bs = int(spec["train"]["batch_size"])
    x_all, y_all = p.train_x.to(device), p.train_y.to(device)
    perm = torch.randperm(p.n_train, generator=torch.Generator().manual_seed(1)).to(device)
    per_epoch = p.n_train // bs

    def step(i):
        b = i % per_epoch
        idx = perm[b * bs: (b + 1) * bs]
        x, y = x_all[idx], y_all[idx]
        opt.zero_grad(set_to_none=True)
        with autocast(torch, device, variant):
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, p.classes),
                                                 y.reshape(-1))
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, float(clip))
        opt.step()

    return timed(torch, device, steps, warmup, step)


def candle_steps(exe, task, device, steps, warmup, variant="f32"):
    out = subprocess.run(
        [exe, "speed", "steps", "--task", task, "--device", device, "--steps", str(steps),
         "--warmup", str(warmup), "--variant", variant, "--json"],
        check=True, capture_output=True, text=True, cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine():
    model = platform.processor() or "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "logical_cpus": os.cpu_count(), "platform": platform.platform()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--tasks", nargs="+", default=["mnist-mlp", "mnist-cnn"])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--joulebench", default=str(ROOT / "target/release/joulebench"))
    ap.add_argument("--threads", type=int,
                    help="threads for both sides (torch.set_num_threads; RAYON_NUM_THREADS and "
                         "CANDLE_NUM_THREADS for joulebench); default: each library's own")
    ap.add_argument("--variant", choices=["f32", "bf16-amp"], default="f32",
                    help="precision on both sides: f32, or bf16 mixed precision (joulebench's "
                         "bf16-amp variant; PyTorch's bf16 autocast around the forward)")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
        os.environ["RAYON_NUM_THREADS"] = str(a.threads)
        os.environ["CANDLE_NUM_THREADS"] = str(a.threads)

    if a.device == "cuda" and not torch.cuda.is_available():
        print("compare-pytorch: --device cuda but torch sees no GPU", file=sys.stderr)
        return 2
    device = a.device
    data = load_mnist(torch, device)
    info = machine()
    info.update({
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "joulebench_env": {k: os.environ.get(k) for k in ("RAYON_NUM_THREADS", "CANDLE_NUM_THREADS")},
        "load_before": os.getloadavg(), "device": device, "variant": a.variant,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
    })
    rows = []
    for task in a.tasks:
        spec = tomllib.loads((ROOT / "models" / f"{task}.toml").read_text())
        kind = spec["model"].get("kind")
        if spec["dataset"] != "mnist" and kind not in PROGRAMS:
            print(f"compare-pytorch: {task}: only the MNIST MLP/CNN tasks and the model "
                  f"kinds {', '.join(PROGRAMS)} are mirrored", file=sys.stderr)
            return 2
        rounds = []
        for r in range(a.rounds):
            c = candle_steps(a.joulebench, task, device, a.steps, a.warmup, a.variant)
            if spec["dataset"] == "mnist" and kind not in PROGRAMS:
                t, t_cpu = torch_steps(torch, spec, device, a.steps, a.warmup, data, a.variant)
            else:
                t, t_cpu = torch_program_steps(torch, task, kind, device, a.steps, a.warmup,
                                               a.variant)
            c_cpu = c.get("cpu_ms_per_step") or float("nan")
            rounds.append({"candle_ms": c["median_ms"], "torch_ms": t,
                           "ratio": c["median_ms"] / t, "candle_cpu_ms": c_cpu,
                           "torch_cpu_ms": t_cpu, "cpu_ratio": c_cpu / t_cpu,
                           "load": os.getloadavg()[0], "candle_split": c})
            print(f"  {task} round {r + 1}: joulebench {c['median_ms']:.2f} ms "
                  f"(CPU {c_cpu:.2f}), PyTorch {t:.2f} ms (CPU {t_cpu:.2f}), ratio "
                  f"{c['median_ms'] / t:.2f} (CPU {c_cpu / t_cpu:.2f})", file=sys.stderr)
        row = {
            "task": task,
            "batch": spec["train"]["batch_size"],
            "candle_ms": statistics.median(x["candle_ms"] for x in rounds),
            "torch_ms": statistics.median(x["torch_ms"] for x in rounds),
            "ratio": statistics.median(x["ratio"] for x in rounds),
            "candle_cpu_ms": statistics.median(x["candle_cpu_ms"] for x in rounds),
            "torch_cpu_ms": statistics.median(x["torch_cpu_ms"] for x in rounds),
            "cpu_ratio": statistics.median(x["cpu_ratio"] for x in rounds),
            "rounds": rounds,
        }
        rows.append(row)
    info["load_after"] = os.getloadavg()
    print(f"machine: {info['cpu']} ({info['logical_cpus']} logical CPUs), {device}, "
          f"{a.variant}, torch {info['torch']} ({info['torch_threads']} threads), load "
          f"{info['load_before'][0]:.2f} -> {info['load_after'][0]:.2f}")
    print("wall: medians of per-round medians; CPU: medians of per-round means (all threads); "
          "ratios: medians of per-round ratios")
    print(f"{'task':<22} {'batch':>5} {'joulebench ms':>14} {'PyTorch ms':>11} {'ratio':>6} "
          f"{'jb CPU ms':>10} {'pt CPU ms':>10} {'CPU ratio':>9}")
    for r in rows:
        print(f"{r['task']:<22} {r['batch']:>5} {r['candle_ms']:>14.2f} {r['torch_ms']:>11.2f} "
              f"{r['ratio']:>6.2f} {r['candle_cpu_ms']:>10.2f} {r['torch_cpu_ms']:>10.2f} "
              f"{r['cpu_ratio']:>9.2f}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"machine": info, "steps": a.steps, "warmup": a.warmup,
                                     "rounds": a.rounds, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
