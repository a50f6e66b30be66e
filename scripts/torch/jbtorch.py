"""Shared helpers of the reference PyTorch training programs in scripts/torch/.

The programs (`mnist_mlp.py`, `mnist_cnn.py`, `text_charlm.py`, `shakespeare_gpt.py`,
`fashion_resnet.py`) are what `joulebench exec` runs as a child process: each trains one shipped
task the way joulebench's own candle loop does (src/engine/train.rs) and reports its quality as MLPerf
`:::MLLOG {json}` lines on stdout, one JSON object per line, flushed after each line. joulebench
measures the energy from outside; nothing here measures energy, and no canonical number is
computed here.

What this module mirrors of joulebench (read from the source, not from its output):

* Task file: `models/<task>.toml` (tomllib; `--task NAME` for models/NAME.toml, `--task-file
  PATH` for any file), the keys joulebench's `src/spec/task.rs` reads; the checks the programs need
  are repeated (a bad file is one line on stderr and exit 2). Optional keys and their defaults:
  `[optimizer] decay` ("all"), `schedule` ("constant"), `lr_warmup_steps` (0), `min_lr` (lr),
  `decay_steps` (the task's budget steps), `clip_grad_norm` (none); `[train] augment_crop_pad`
  (0), `augment_hflip` (false); `metric` ("accuracy"; "held-out-loss" makes the eval a loss).
* Data: the shipped folder `data/<dataset>/` (or `--data-dir D`, holding the files directly, as
  joulebench's `--data-dir`). Every file read is hashed (SHA-256) and checked against the
  `SHA256SUMS` in D or its parent (src/data/checksum.rs): a listed file that differs is one line
  on stderr and exit 2; a file the list does not name is read and reported unverified on stderr,
  as joulebench records it unverified. gzip is detected by its magic bytes, as src/data/source.rs
  does. MNIST: the four IDX files (`.gz` preferred, raw accepted), pixels / 255 in f32, labels
  below 10, header sizes checked against the body (src/data/idx.rs); Fashion-MNIST
  (`data/fashion-mnist/`) the same four names, layout and loader. Text: `austen.txt`, else
  the only `*.txt`; vocabulary the sorted distinct characters of the whole file, the first
  floor(0.9 n) characters train, the rest held out (src/data/text.rs). Shakespeare
  (`data/shakespeare/shakespeare.txt.gz`, else `shakespeare.txt`): byte-level, the ids are the
  raw bytes and the vocabulary all 256 of them (whichever occur), split as the text.
* Data view (`[data]`, src/data/view.rs): `classes` (keep those labels, in order), `rotate_deg`
  (an exact counter-clockwise pixel rotation, numpy/torch `rot90` convention, checked against
  the view's unit test), `text_part = [k, n]` (characters len*(k-1)/n .. len*k/n of the training
  text, or bytes of shakespeare's), `text_encoding = "bytes"` (a character corpus re-encoded as
  the UTF-8 bytes of the whole text, vocabulary 256, the 90/10 split recomputed on the bytes:
  austen-gpt-mini). So `mnist-rot90-mlp` runs with `mnist_mlp.py --task-file
  models/mnist-rot90-mlp.toml` and `text-charlm-p1`/`-p2` with `text_charlm.py --task-file
  models/text-charlm-p1.toml`. `[finetune]` is ignored: it belongs to joulebench's finetune
  variant (a checkpoint of another task), which is not mirrored; the programs train from scratch.
* Inputs (src/engine/train.rs `prepare`): images as (x - input_mean) / input_sd in f32 (the task's
  declared constants, computed with f32 operands as joulebench does); text as non-overlapping
  windows of context + 1 characters (inputs the first `context`, targets shifted by one),
  (len - 1) // context windows; the held-out set capped at `eval_max_samples` (the first ones).
  Augmentation (`augment_crop_pad` p, `augment_hflip`; training batches only, never the evals or
  the warm-up; `make_augment`): per sample, on the standardised image, a random crop of the
  image padded by p pixels with the standardised black value (0 - input_mean) / input_sd,
  offsets dx, dy uniform in 0..=2p, then a horizontal flip with probability 1/2; the draws from
  their own stream (derive_seed(seed, 7)) on the CPU, the crop and flip one gather on the device.
* Loop (src/engine/train.rs `Session::train_stage`): batch = min(batch_size, n_train); steps per epoch
  n_train // batch (the remainder is dropped); every epoch a fresh random permutation (joulebench
  Fisher-Yates-shuffles the previous one with its order stream, which is a uniformly random
  permutation too); budget = max_epochs x steps per epoch, capped by `[budget] max_steps`
  (`budget_steps`); an eval every `eval_every_steps` optimizer steps and at the last step; stop
  at the first eval with accuracy >= `[target] value` (held-out-loss: eval_loss <= value) unless
  `--full-budget`; a non-finite mean train loss at an eval stops the run (joulebench's
  "diverged"); `[budget] max_time_s` is checked at evals, from `run_start`. `epoch_num` is the
  sum of 1 / steps-per-epoch over the steps taken, accumulated in f64 as joulebench does.
  `train_loss` is the mean of the per-step losses since the previous eval, summed on the device
  in f32 and read once per eval, as joulebench does.
* Eval (src/engine/train.rs `evaluate`): the held-out set in batches of max(batch, 256), forward in f32
  (never under autocast), model in eval mode (no dropout, batch norm on running statistics),
  top-1 accuracy over every prediction (text: every position of every window), MLLOG
  `eval_accuracy`; for `metric = "held-out-loss"` the mean cross-entropy in nats over every
  prediction instead (summed in f32), MLLOG `eval_loss` (the key `joulebench exec` reads as
  lower-is-better; the chance level, the unigram entropy of the eval targets, is joulebench's to
  compute and not needed here); inside the timed part, like joulebench.
* Optimizer (src/engine/optim.rs, src/engine/train.rs `optimizer`): torch.optim.AdamW with the task's lr,
  betas, eps and weight decay, over every parameter with `decay = "all"` (biases, layer norms
  and embeddings decay too, as in joulebench), or with `decay = "matrices"` in two groups,
  nanoGPT's rule: parameters with dim >= 2 decay, the rest (biases, layer/batch-norm weights)
  get weight decay 0 (`param_groups`). `schedule = "cosine"` sets the learning rate before each
  step to nanoGPT's get_lr of the 0-based step index it (`lr_at`): lr (it+1) / (warmup+1) while
  it < lr_warmup_steps, min_lr once it > decay_steps, else min_lr + 0.5 (1 + cos(pi (it -
  warmup) / (decay_steps - warmup))) (lr - min_lr); decay_steps defaults to the task's budget
  steps (before the --max-steps cap, so a capped run is the start of the same schedule).
  `clip_grad_norm` c: torch.nn.utils.clip_grad_norm_(every parameter, c) between backward and
  step (PyTorch's: the total 2-norm, grads scaled by c / (norm + 1e-6) when that is below 1).
  The update rule is the same as joulebench's by reading both (decoupled decay w*(1 - lr*wd),
  with the scheduled lr, bias-corrected moments, eps added to sqrt(v_hat)); not compared step
  by step.
* Warm-up (src/engine/train.rs `Session::open`): `warmup_steps` forward + backward passes on the real
  model with random batches (standard normal pixels or uniform tokens, uniform labels) under the
  run's precision, gradients discarded, no optimizer step, the model's buffers (batch-norm
  running statistics) restored afterwards, so nothing training depends on is touched; printed
  as an `INTERVAL_START`/`INTERVAL_END` pair with key `warmup` before `run_start`. The random
  batches come from their own generator, not the init or order stream.
* Init: every weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (src/engine/model/params.rs
  `uniform`, which is also PyTorch's default distribution; the GPT's are nanoGPT's normals,
  see shakespeare_gpt.py), drawn on the CPU after
  `torch.manual_seed(seed)` and then moved to the device, so a seed gives the same initial model
  on the CPU and on CUDA. Known difference: joulebench draws from ChaCha8, PyTorch from its own
  generator: same distribution, different numbers, so no run here is bit-identical to a
  joulebench run of the same seed. The same holds for the batch order.

Seeding: `torch.manual_seed(seed)` (the init stream); the batch-order permutation comes from a
`torch.Generator` seeded with `derive_seed(seed, 1)`, the augmentation draws from one seeded with
`derive_seed(seed, 7)` and the warm-up batches from one seeded with `derive_seed(seed, 9)` (the
stream numbers joulebench uses), so the init, order, augmentation and warm-up streams are
independent. Dropout masks come from torch's global generator (seeded by manual_seed, after the
init draws; on CUDA the CUDA generator it also seeds).

Precision: `f32` (strict: TF32 off for cuBLAS and cuDNN, since PyTorch's default leaves cuDNN's
on); `bf16-amp` (torch.autocast(device_type, dtype=bfloat16) around forward and loss, f32 master
weights, the loss on f32 logits, no loss scaling (joulebench scales f16 only), eval in f32);
`tf32` (`torch.backends.cuda.matmul.allow_tf32 = True` and `torch.backends.cudnn.allow_tf32 =
True`, CUDA only; evals run with TF32 on, as joulebench's TF32 switch covers the whole window).

SIGTERM: the handler raises inside the main thread (Python runs it between bytecodes, so at most
the torch op in flight completes); the run stops where it is (no eval, no step is finished),
prints `run_stop` with status "aborted" when `run_start` was printed, and exits 143 at once
(`os._exit`, skipping the interpreter's teardown). A SIGTERM before `run_start` exits 143 with
one line on stderr and no MLLOG `run_stop`. Measured on the CPU: `run_stop` within 15 ms of the
signal, the process gone about 0.05 s after it.

Exit status: 0 on normal completion, target reached or not (`run_stop` status "success" iff some
eval reached the target and the run did not diverge, as joulebench's status "ok"); 2 on bad
input (one line on stderr, before any MLLOG line); 143 on SIGTERM.

What was checked, on a 2-core CPU with torch 2.15 and `--threads 1` (see scripts/README.md): the
three programs in f32 and bf16-amp, mnist-rot90-mlp and text-charlm-p2 through `--task-file`,
SIGTERM before and after `run_start`, the bad-input exits. Steps to target agree with joulebench's
reference curves (results/curves/). After the schedule, decay-group, clipping, augmentation and
held-out-loss additions: the three programs print the same MLLOG lines as before them (20 steps,
seed 1, time_ms aside); shakespeare_gpt.py and fashion_resnet.py (both tasks each) in f32 and
bf16-amp for 30 steps (the full shakespeare-gpt for 3: about 15 s a step on one CPU thread, a
GPU workload), austen-gpt-mini in f32 for 30, SIGTERM before and after `run_start`, bad task files, a checksum mismatch; the
crop-and-flip gather equals a per-sample reference crop and flip exactly. Not run: anything on
CUDA (no GPU was at hand), so the `--device cuda` paths and `--precision tf32` are written from
PyTorch's documented API only.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import math
import os
import signal
import struct
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent.parent
NUM_CLASSES = 10
MNIST_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]
PRECISIONS = ["f32", "bf16-amp", "tf32"]
IMAGE_DATASETS = ("mnist", "fashion-mnist")  # the IDX layout, 10 classes
TEXT_DATASETS = ("text", "shakespeare")  # characters of austen.txt; bytes of shakespeare.txt
BYTE_VOCAB = 256  # shakespeare: token ids are the raw bytes, whichever occur
METRICS = ("accuracy", "next-char-accuracy", "held-out-loss")
DECAYS = ("all", "matrices")
SCHEDULES = ("constant", "cosine")
AUGMENT_STREAM = 7  # derive_seed streams: 1 batch order, 7 augmentation, 9 warm-up batches


class BadInput(Exception):
    """Bad input: one line on stderr, exit 2, before training."""


class Terminated(BaseException):
    """SIGTERM arrived (a BaseException, so no `except Exception` on the way swallows it)."""


def one_line(msg: str) -> str:
    return " ".join(str(msg).split())


# --------------------------------------------------------------------------------------------
# Command line


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints the usage too)
        print(f"{self.prog}: error: {one_line(message)}", file=sys.stderr)
        sys.exit(2)


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _seed(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer 0..2^64-1, got {s!r}")
    if not 0 <= v < 2**64:
        raise argparse.ArgumentTypeError(f"expected an integer 0..2^64-1, got {s!r}")
    return v


def parse_args(prog: str, task: str, argv=None) -> argparse.Namespace:
    p = _Parser(
        prog=prog,
        description=f"Train joulebench's task {task} in PyTorch, printing MLPerf :::MLLOG lines "
        "on stdout (see scripts/torch/jbtorch.py).",
    )
    p.add_argument("--seed", type=_seed, help="the run's seed (default: $JOULEBENCH_SEED)")
    p.add_argument("--precision", choices=PRECISIONS, default="f32")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=_positive_int, help="torch.set_num_threads (default: torch's)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--task", metavar="NAME",
                       help=f"the task models/NAME.toml of the repository (default: {task}); a "
                       "NAME ending in .toml is a path, as joulebench's --task")
    which.add_argument("--task-file", type=Path,
                       help=f"task TOML (default: models/{task}.toml of the repository)")
    p.add_argument("--data-dir", type=Path,
                   help="folder holding the dataset's files directly (default: the shipped "
                   "data/<dataset>/ of the repository)")
    p.add_argument("--full-budget", action="store_true",
                   help="train the whole budget instead of stopping at the target")
    p.add_argument("--max-steps", type=_positive_int,
                   help="cap on optimizer steps (smoke tests)")
    a = p.parse_args(argv)
    if a.seed is None:
        env = os.environ.get("JOULEBENCH_SEED")
        if env is None or env.strip() == "":
            p.error("--seed is required (or set JOULEBENCH_SEED)")
        try:
            a.seed = _seed(env.strip())
        except argparse.ArgumentTypeError as e:
            p.error(f"JOULEBENCH_SEED: {e}")
    if a.task_file is None:
        name = a.task if a.task is not None else task
        if name.endswith(".toml"):
            a.task_file = Path(name)
        elif not name or "/" in name or "\\" in name or name in (".", ".."):
            p.error(f"--task {name!r}: expected a task name (models/NAME.toml) or a .toml path")
        else:
            a.task_file = ROOT / "models" / f"{name}.toml"
    if a.precision == "tf32" and a.device != "cuda":
        p.error("--precision tf32 needs --device cuda (TF32 is a CUDA tensor-core mode)")
    return a


def derive_seed(seed: int, stream: int) -> int:
    """An independent 64-bit seed for stream `stream` of `seed` (SHA-256 based)."""
    h = hashlib.sha256(f"joulebench-torch/{seed}/{stream}".encode()).digest()
    return int.from_bytes(h[:8], "little")


# --------------------------------------------------------------------------------------------
# Task file


def load_task(path: Path, kind: str, dataset) -> dict:
    """Parse and check the task TOML; `kind`/`dataset` are what the calling program trains
    (`dataset` one name or a tuple of the names it accepts).

    Optional keys get their defaults written into the returned spec (`optimizer.decay`,
    `schedule`, `lr_warmup_steps`, `min_lr`, `clip_grad_norm`, `train.augment_crop_pad`,
    `augment_hflip`, `metric`); `optimizer.decay_steps` stays None when absent (the run's budget
    steps, known once the data is loaded)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise BadInput(f"task file {path}: cannot read: {e.strerror or e}")
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"task file {path}: {e}")

    def bad(msg):
        return BadInput(f"task file {path}: {msg}")

    def need(table, key, types, where):
        t = spec.get(table) if table else spec
        if not isinstance(t, dict) or key not in t:
            raise bad(f"missing key '{where}'")
        v = t[key]
        if isinstance(v, bool) or not isinstance(v, types):
            raise bad(f"key '{where}' has the wrong type ({type(v).__name__})")
        return v

    def optional(table, key, types, where, default):
        t = spec[table]
        if key not in t:
            t[key] = default
            return default
        v = t[key]
        if (bool in types) != isinstance(v, bool) or not isinstance(v, types):
            raise bad(f"key '{where}' has the wrong type ({type(v).__name__})")
        return v

    for k in ("name", "dataset"):
        need(None, k, str, k)
    accepted = (dataset,) if isinstance(dataset, str) else tuple(dataset)
    if spec["dataset"] not in accepted:
        raise bad(f"key 'dataset' is '{spec['dataset']}'; this program trains "
                  f"{' or '.join(repr(d) for d in accepted)} tasks")
    dataset = spec["dataset"]
    is_text = dataset in TEXT_DATASETS
    metric = spec.setdefault("metric", "next-char-accuracy" if is_text else "accuracy")
    if metric not in METRICS:
        raise bad(f"key 'metric' is {metric!r}; expected one of {', '.join(METRICS)}")
    if (metric != "accuracy") != is_text:  # as src/spec/task.rs: the text metrics on text only
        raise bad(f"key 'metric' = '{metric}' does not fit key 'dataset' = '{dataset}'")
    m = spec.get("model")
    if not isinstance(m, dict) or m.get("kind") != kind:
        got = m.get("kind") if isinstance(m, dict) else None
        raise bad(f"key 'model.kind' is {got!r}; this program trains '{kind}' models")
    o = spec.get("optimizer")
    if not isinstance(o, dict) or o.get("kind") != "adamw":
        raise bad("key 'optimizer.kind' must be 'adamw'")
    lr = float(need("optimizer", "lr", (int, float), "optimizer.lr"))
    b1 = float(need("optimizer", "beta1", (int, float), "optimizer.beta1"))
    b2 = float(need("optimizer", "beta2", (int, float), "optimizer.beta2"))
    eps = float(need("optimizer", "eps", (int, float), "optimizer.eps"))
    wd = float(need("optimizer", "weight_decay", (int, float), "optimizer.weight_decay"))
    if not (lr > 0 and math.isfinite(lr)):
        raise bad(f"key 'optimizer.lr' must be positive, got {lr}")
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise bad("keys 'optimizer.beta1' and 'optimizer.beta2' must be in [0, 1)")
    if not eps > 0 or wd < 0:
        raise bad("key 'optimizer.eps' must be > 0 and 'weight_decay' >= 0")
    if optional("optimizer", "decay", (str,), "optimizer.decay", "all") not in DECAYS:
        raise bad(f"key 'optimizer.decay' is {o['decay']!r}; expected one of {', '.join(DECAYS)}")
    if optional("optimizer", "schedule", (str,), "optimizer.schedule",
                "constant") not in SCHEDULES:
        raise bad(f"key 'optimizer.schedule' is {o['schedule']!r}; expected one of "
                  f"{', '.join(SCHEDULES)}")
    given = {k for k in ("lr_warmup_steps", "min_lr", "decay_steps") if k in o}
    if o["schedule"] == "constant" and given:
        raise bad("keys 'optimizer.lr_warmup_steps', 'min_lr' and 'decay_steps' need "
                  "'optimizer.schedule' = \"cosine\"")
    if optional("optimizer", "lr_warmup_steps", (int,), "optimizer.lr_warmup_steps", 0) < 0:
        raise bad("key 'optimizer.lr_warmup_steps' must be a non-negative integer")
    min_lr = float(optional("optimizer", "min_lr", (int, float), "optimizer.min_lr", lr))
    if not 0 <= min_lr <= lr:
        raise bad(f"key 'optimizer.min_lr' must be in [0, lr], got {min_lr}")
    ds = optional("optimizer", "decay_steps", (int,), "optimizer.decay_steps", None)
    if ds is not None and ds < 0:
        raise bad("key 'optimizer.decay_steps' must be a non-negative integer")
    clip = optional("optimizer", "clip_grad_norm", (int, float), "optimizer.clip_grad_norm",
                    None)
    if clip is not None and not (clip > 0 and math.isfinite(clip)):
        raise bad(f"key 'optimizer.clip_grad_norm' must be a positive number, got {clip}")
    if need("train", "batch_size", int, "train.batch_size") < 1:
        raise bad("key 'train.batch_size' must be at least 1")
    if need("train", "eval_every_steps", int, "train.eval_every_steps") < 1:
        raise bad("key 'train.eval_every_steps' must be at least 1")
    tr = spec["train"]
    tr.setdefault("warmup_steps", 3)
    if not isinstance(tr["warmup_steps"], int) or tr["warmup_steps"] < 0:
        raise bad("key 'train.warmup_steps' must be a non-negative integer")
    ems = tr.get("eval_max_samples")
    if ems is not None and (not isinstance(ems, int) or ems < 0):
        raise bad("key 'train.eval_max_samples' must be a non-negative integer")
    has_m, has_s = "input_mean" in tr, "input_sd" in tr
    if has_m != has_s or (has_s and not (isinstance(tr["input_sd"], (int, float))
                                         and tr["input_sd"] > 0)):
        raise bad("keys 'train.input_mean' and 'train.input_sd' go together, with input_sd > 0")
    if is_text and ("augment_crop_pad" in tr or "augment_hflip" in tr):
        raise bad("keys 'train.augment_crop_pad' and 'train.augment_hflip' apply to image "
                  "datasets only")
    if not 0 <= optional("train", "augment_crop_pad", (int,), "train.augment_crop_pad", 0) <= 16:
        raise bad("key 'train.augment_crop_pad' must be an integer 0..=16")
    optional("train", "augment_hflip", (bool,), "train.augment_hflip", False)
    tv = float(need("target", "value", (int, float), "target.value"))
    if metric == "held-out-loss":
        if not (tv > 0 and math.isfinite(tv)):
            raise bad(f"key 'target.value' (a held-out loss in nats) must be positive, got {tv}")
    elif not 0 < tv <= 1:
        raise bad(f"key 'target.value' must be in (0, 1], got {tv}")
    if need("budget", "max_epochs", int, "budget.max_epochs") < 1:
        raise bad("key 'budget.max_epochs' must be at least 1")
    bud = spec["budget"]
    ms = bud.get("max_steps")
    if ms is not None and (not isinstance(ms, int) or ms < 0):
        raise bad("key 'budget.max_steps' must be a non-negative integer")
    for k in ("max_time_s", "max_energy_j"):
        v = bud.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
            raise bad(f"key 'budget.{k}' must be a positive number")
    view = spec.get("data", {})
    if not isinstance(view, dict):
        raise bad("key 'data' must be a table")
    unknown = set(view) - {"classes", "rotate_deg", "text_part", "text_encoding"}
    if unknown:
        raise bad(f"unknown key 'data.{sorted(unknown)[0]}'")
    if "classes" in view:
        cs = view["classes"]
        if is_text:
            raise bad("key 'data.classes' applies to image datasets only")
        if (not isinstance(cs, list) or not cs
                or not all(isinstance(c, int) and 0 <= c < NUM_CLASSES for c in cs)
                or len(set(cs)) != len(cs)):
            raise bad("key 'data.classes' must list distinct classes 0..9")
    if "rotate_deg" in view:
        if is_text:
            raise bad("key 'data.rotate_deg' applies to image datasets only")
        if view["rotate_deg"] not in (90, 180, 270):
            raise bad(f"key 'data.rotate_deg' must be 90, 180 or 270, got {view['rotate_deg']}")
    if "text_part" in view:
        tp = view["text_part"]
        if not is_text:
            raise bad("key 'data.text_part' applies to text datasets only")
        if (not isinstance(tp, list) or len(tp) != 2 or not all(isinstance(v, int) for v in tp)
                or not 1 <= tp[0] <= tp[1]):
            raise bad(f"key 'data.text_part' is [k, n] with 1 <= k <= n, got {tp}")
    if "text_encoding" in view:
        if not is_text:
            raise bad("key 'data.text_encoding' applies to text datasets only")
        if view["text_encoding"] != "bytes":
            raise bad(f"key 'data.text_encoding' is {view['text_encoding']!r}; expected 'bytes'")
    spec["data"] = view
    return spec


# --------------------------------------------------------------------------------------------
# Data files and checksums


class Sums:
    """The SHA256SUMS covering a dataset folder: in it, else in its parent."""

    def __init__(self, file: Path | None, entries: dict[str, str], prefix: str):
        self.file, self.entries, self.prefix = file, entries, prefix

    @staticmethod
    def find(d: Path) -> "Sums":
        own = d / "SHA256SUMS"
        if own.is_file():
            return Sums(own, Sums._read(own), "")
        if d.name not in ("", ".", ".."):
            up = d.parent / "SHA256SUMS"
            if up.is_file():
                return Sums(up, Sums._read(up), d.name + "/")
        return Sums(None, {}, "")

    @staticmethod
    def _read(f: Path) -> dict[str, str]:
        entries = {}
        try:
            text = f.read_bytes().decode("utf-8", errors="replace")
        except OSError as e:
            raise BadInput(f"{f}: cannot read: {e.strerror or e}")
        for i, raw in enumerate(text.splitlines(), 1):
            line = raw.rstrip("\r")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            hexd, _, rest = line.partition(" ")
            name = rest[1:] if rest.startswith((" ", "*")) else rest
            name = name.lstrip("*")
            if (len(hexd) != 64 or not all(c in "0123456789abcdefABCDEF" for c in hexd)
                    or not name):
                raise BadInput(f"{f}: line {i} is not '<sha256>  <path>': {line[:200]!r}")
            parts = [p for p in name.split("/") if p not in ("", ".")]
            entries["/".join(parts)] = hexd.lower()
        return entries

    def check(self, path: Path, data: bytes) -> None:
        actual = hashlib.sha256(data).hexdigest()
        expected = self.entries.get(self.prefix + path.name)
        if expected is None:
            where = f"{self.file} does not list it" if self.file else "no SHA256SUMS covers it"
            log(f"note: {path} is unverified ({where}); sha256 {actual}")
        elif expected != actual:
            raise BadInput(f"{path}: sha256 {actual} differs from {expected} listed in {self.file}")


def read_file(path: Path, sums: Sums) -> bytes:
    """The file's bytes (gunzipped when it starts with the gzip magic), checksum verified."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise BadInput(f"{path}: cannot read: {e.strerror or e}")
    sums.check(path, raw)
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise BadInput(f"{path}: bad gzip data: {e}")
    return raw


def dataset_dir(a: argparse.Namespace, dataset: str) -> Path:
    return a.data_dir if a.data_dir is not None else ROOT / "data" / dataset


@dataclass
class Images:
    x: "object"  # uint8 tensor (n, 1, h, w)
    y: "object"  # int64 tensor (n,)


def _idx(path: Path, body: bytes, magic: int, ndims: int, what: str) -> tuple[list[int], bytes]:
    hl = 4 * (ndims + 1)
    if len(body) >= 4:
        (m,) = struct.unpack(">I", body[:4])
        if m != magic:
            raise BadInput(f"{path}: magic 0x{m:08x}, expected 0x{magic:08x} (IDX {what})")
    if len(body) < hl:
        raise BadInput(f"{path}: an IDX {what} header is {hl} bytes, the data has {len(body)}")
    dims = list(struct.unpack(">" + "I" * ndims, body[4:hl]))
    n = 1
    for d in dims:
        n *= d
    if len(body) - hl != n:
        raise BadInput(f"{path}: header says {dims} ({hl + n} bytes), the data has {len(body)}")
    return dims, body[hl:]


def load_mnist(a: argparse.Namespace, torch, dataset: str = "mnist"
               ) -> tuple[Images, Images, list[Path]]:
    """MNIST's four IDX files; also Fashion-MNIST (`dataset = "fashion-mnist"`, the same
    names and layout in data/fashion-mnist/)."""
    d = dataset_dir(a, dataset)
    sums = Sums.find(d)
    paths = []
    for name in MNIST_FILES:
        gz, plain = d / f"{name}.gz", d / name
        if gz.is_file():
            paths.append(gz)
        elif plain.is_file():
            paths.append(plain)
        else:
            raise BadInput(f"{gz}: missing; the {dataset} layout expects "
                           f"{', '.join(MNIST_FILES)} (each optionally .gz) in {d}")
    sets = []
    for ip, lp in ((paths[0], paths[1]), (paths[2], paths[3])):
        (n, h, w), px = _idx(ip, read_file(ip, sums), 0x803, 3, "images")
        if h == 0 or w == 0:
            raise BadInput(f"{ip}: header says images of {h}x{w}")
        (nl,), lb = _idx(lp, read_file(lp, sums), 0x801, 1, "labels")
        if nl != n:
            raise BadInput(f"{ip} has {n} images but {lp} has {nl} labels")
        y = torch.frombuffer(bytearray(lb), dtype=torch.uint8)
        if n and int(y.max()) >= NUM_CLASSES:
            i = int((y >= NUM_CLASSES).nonzero()[0])
            raise BadInput(f"{lp}: label {i} is {int(y[i])}, expected below {NUM_CLASSES}")
        x = torch.frombuffer(bytearray(px), dtype=torch.uint8).reshape(n, 1, h, w)
        sets.append(Images(x, y.long()))
    return sets[0], sets[1], paths


def view_images(s: Images, view: dict, torch) -> Images:
    x, y = s.x, s.y
    if "classes" in view:
        keep = torch.isin(y, torch.tensor(view["classes"], dtype=torch.long))
        x, y = x[keep], y[keep]
    if "rotate_deg" in view:
        if view["rotate_deg"] != 180 and x.shape[-1] != x.shape[-2]:
            raise BadInput(f"rotating {x.shape[-2]}x{x.shape[-1]} images by 90 or 270 degrees "
                           "needs square images")
        # Counter-clockwise, as src/data/view.rs `rotate` (np.rot90's direction).
        x = torch.rot90(x, view["rotate_deg"] // 90, dims=(-2, -1)).contiguous()
    return Images(x, y)


def standardise(x_u8, spec: dict, torch):
    """(x/255 - mean) / sd in f32 with f32 operands, as src/data/idx.rs and train.rs do."""
    x = x_u8.float() / torch.tensor(255.0, dtype=torch.float32)
    tr = spec["train"]
    if "input_mean" in tr:
        m = torch.tensor(float(tr["input_mean"]), dtype=torch.float32)
        s = torch.tensor(float(tr["input_sd"]), dtype=torch.float32)
        x = (x - m) / s
    return x


def load_text(a: argparse.Namespace) -> tuple[str, Path]:
    d = dataset_dir(a, "text")
    path = d / "austen.txt"
    if not path.is_file():
        if not d.is_dir():
            raise BadInput(f"{d}: missing; the text layout expects a directory holding "
                           "austen.txt or exactly one *.txt file")
        found = sorted(p for p in d.iterdir() if p.suffix.lower() == ".txt" and p.is_file())
        if not found:
            raise BadInput(f"{d}: no *.txt file")
        if len(found) > 1:
            raise BadInput(f"{d}: {len(found)} *.txt files and no austen.txt: "
                           + ", ".join(p.name for p in found))
        path = found[0]
    data = read_file(path, Sums.find(d))
    try:
        return data.decode("utf-8"), path
    except UnicodeDecodeError as e:
        raise BadInput(f"{path}: not UTF-8 at byte {e.start}")


def load_shakespeare(a: argparse.Namespace) -> tuple[bytes, Path]:
    """The raw bytes of shakespeare.txt.gz (gzip by its magic), else of shakespeare.txt."""
    d = dataset_dir(a, "shakespeare")
    for name in ("shakespeare.txt.gz", "shakespeare.txt"):
        path = d / name
        if path.is_file():
            return read_file(path, Sums.find(d)), path
    raise BadInput(f"{d / 'shakespeare.txt.gz'}: missing; the shakespeare layout expects "
                   f"shakespeare.txt.gz (or shakespeare.txt) in {d}")


# --------------------------------------------------------------------------------------------
# MLLOG


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None  # serde_json writes non-finite floats as null; NaN is not JSON
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    return v


def mllog(event_type: str, key: str, value=None, metadata: dict | None = None) -> None:
    obj = {
        "namespace": "",
        "time_ms": time.time_ns() // 1_000_000,
        "event_type": event_type,
        "key": key,
        "value": _clean(value),
        "metadata": _clean(metadata or {}),
    }
    sys.stdout.write(":::MLLOG " + json.dumps(obj, allow_nan=False) + "\n")
    sys.stdout.flush()


def point(key, value, metadata=None):
    mllog("POINT_IN_TIME", key, value, metadata)


# --------------------------------------------------------------------------------------------
# Model helpers


def uniform_(t, fan_in: int) -> None:
    """joulebench's init (src/engine/model/params.rs `uniform`): U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    b = 1.0 / math.sqrt(max(fan_in, 1))
    t.uniform_(-b, b)


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class Prepared:
    train_x: "object"
    train_y: "object"
    n_train: int
    eval_x: "object"
    eval_y: "object"
    n_eval: int
    eval_predictions: int
    classes: int
    info: dict  # what the model builder needs: image shape, or context and vocab
    files: list
    random_batch: Callable  # (n, generator) -> (x, y) on the CPU, the warm-up batches


def prepare(a, spec: dict, dataset: str, torch) -> Prepared:
    cap = spec["train"].get("eval_max_samples")
    capped = (lambda n: n) if cap is None else (lambda n: min(n, cap))
    if dataset in IMAGE_DATASETS:
        train, test, files = load_mnist(a, torch, dataset)
        train = view_images(train, spec["data"], torch)
        test = view_images(test, spec["data"], torch)
        n_eval = capped(test.y.shape[0])
        c, h, w = train.x.shape[1:]

        def rb(n, g):
            x = torch.randn((n, c, h, w), generator=g)
            return x, torch.randint(0, NUM_CLASSES, (n,), generator=g)

        return Prepared(standardise(train.x, spec, torch), train.y, train.y.shape[0],
                        standardise(test.x[:n_eval], spec, torch), test.y[:n_eval], n_eval,
                        n_eval, NUM_CLASSES, {"shape": (c, h, w)}, files, rb)
    if dataset == "shakespeare":
        # Byte-level: the ids are the raw bytes and the vocabulary is all 256 of them.
        data, path = load_shakespeare(a)
        ids = torch.frombuffer(bytearray(data), dtype=torch.uint8).long() if data else \
            torch.zeros(0, dtype=torch.long)
        V = BYTE_VOCAB
    elif spec["data"].get("text_encoding") == "bytes":
        # A character corpus re-encoded at the byte level (src/data/view.rs `text_encoding`):
        # the UTF-8 bytes of the whole text, vocabulary 256, the split recomputed on the bytes.
        text, path = load_text(a)
        data = text.encode("utf-8")
        ids = torch.frombuffer(bytearray(data), dtype=torch.uint8).long() if data else \
            torch.zeros(0, dtype=torch.long)
        V = BYTE_VOCAB
    else:
        text, path = load_text(a)
        vocab = sorted(set(text))
        index = {ch: i for i, ch in enumerate(vocab)}
        ids = torch.tensor([index[ch] for ch in text], dtype=torch.long)
        V = len(vocab)
    what = "bytes" if dataset == "shakespeare" or "text_encoding" in spec["data"] else "characters"
    n = ids.shape[0]
    n_tr = n // 10 * 9 + (n % 10) * 9 // 10  # floor(0.9 n) in integers
    train_ids, test_ids = ids[:n_tr], ids[n_tr:]
    if test_ids.shape[0] == 0:
        raise BadInput(f"{path}: text has {n} {what}, expected at least 10 so the 10 % "
                       "test split is not empty")
    if "text_part" in spec["data"]:
        k, parts = spec["data"]["text_part"]
        L = train_ids.shape[0]
        train_ids = train_ids[L * (k - 1) // parts: L * k // parts]
    ctx = spec["model"].get("context")
    if isinstance(ctx, bool) or not isinstance(ctx, int) or ctx < 1:
        raise BadInput("task file: key 'model.context' must be a positive integer")

    def windows(t, mx):
        nw = max(t.shape[0] - 1, 0) // ctx
        nw = nw if mx is None else min(nw, mx)
        x = t[: nw * ctx].reshape(nw, ctx)
        y = t[1: nw * ctx + 1].reshape(nw, ctx)
        return x, y, nw

    tx, ty, n_train = windows(train_ids, None)
    ex, ey, n_eval = windows(test_ids, cap)

    def rb(nb, g):
        return (torch.randint(0, V, (nb, ctx), generator=g),
                torch.randint(0, V, (nb, ctx), generator=g))

    return Prepared(tx, ty, n_train, ex, ey, n_eval, n_eval * ctx, V,
                    {"context": ctx, "vocab": V}, [path], rb)


def lr_at(it: int, o: dict, decay_steps: int) -> float:
    """The learning rate of optimizer step `it` (0-based): nanoGPT's train.py `get_lr` for
    schedule "cosine" (linear warm-up over `lr_warmup_steps`, cosine from lr to min_lr at
    `decay_steps`, min_lr after), lr for "constant"."""
    lr = float(o["lr"])
    if o["schedule"] == "constant":
        return lr
    warm, min_lr = int(o["lr_warmup_steps"]), float(o["min_lr"])
    if it < warm:
        return lr * (it + 1) / (warm + 1)
    if it > decay_steps or decay_steps <= warm:  # the second: no decay phase at all (guessed)
        return min_lr
    ratio = (it - warm) / (decay_steps - warm)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return min_lr + coeff * (lr - min_lr)


def param_groups(model, o: dict) -> list[dict]:
    """AdamW's groups: decay "all" (every parameter decays, joulebench's default) or "matrices"
    (nanoGPT's configure_optimizers rule: parameters with dim >= 2 decay; biases and norm
    weights get weight decay 0)."""
    wd = float(o["weight_decay"])
    params = list(model.parameters())  # deduplicated: a tied weight appears once
    if o["decay"] == "all":
        return [{"params": params, "weight_decay": wd}]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": wd},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_augment(spec: dict, shape, device, torch):
    """The training-batch augmentation of `[train] augment_crop_pad` / `augment_hflip`, or None.

    Per sample, on the standardised image: a random crop of the image padded by `pad` pixels
    with the standardised value of a black pixel ((0 - input_mean) / input_sd), offsets dx, dy
    uniform in 0..=2 pad, then a horizontal flip with probability 1/2. The draws come from the
    generator passed in (the augmentation stream) on the CPU, a few bytes per sample; the crop
    and flip are one gather on the device (no per-sample loop)."""
    pad, flip = int(spec["train"]["augment_crop_pad"]), bool(spec["train"]["augment_hflip"])
    if pad == 0 and not flip:
        return None
    F = torch.nn.functional
    c, h, w = shape
    tr = spec["train"]
    # As src/engine/train.rs: -input_mean / input_sd in f64, rounded to f32 (by F.pad on an f32 batch).
    fill = -float(tr["input_mean"]) / float(tr["input_sd"]) if "input_mean" in tr else 0.0
    hp, wp = h + 2 * pad, w + 2 * pad
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)

    def augment(x, g):
        b = x.shape[0]
        off = torch.randint(0, 2 * pad + 1, (b, 2), generator=g).to(device)  # dy, dx
        r = off[:, :1] + rows  # (b, h): rows dy .. dy + h - 1 of the padded image
        cc = cols.expand(b, w)
        if flip:
            fl = torch.randint(0, 2, (b, 1), generator=g).to(device).bool()
            cc = torch.where(fl, (w - 1) - cc, cc)  # flipped crop: column w-1-j of the crop
        cc = off[:, 1:] + cc
        xp = F.pad(x, (pad, pad, pad, pad), value=fill) if pad else x
        lin = (r[:, :, None] * wp + cc[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
        return xp.reshape(b, c, hp * wp).gather(2, lin).reshape(b, c, h, w)

    return augment


_state = {"started": False}


def _on_sigterm(signum, frame):
    raise Terminated()


def main(task: str, kind: str, dataset, build_model: Callable, argv=None) -> int:
    """Run one program: `build_model(spec, info, torch)` returns the nn.Module, initialised
    from torch's global generator (seeded before the call); `dataset` is the dataset name the
    program trains, or a tuple of them. Returns the exit status."""
    prog = Path(sys.argv[0]).name
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        a = parse_args(prog, task, argv)
        try:
            return _run(a, kind, dataset, build_model)
        except BadInput as e:
            print(f"{prog}: {one_line(e)}", file=sys.stderr)
            return 2
    except Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if _state["started"]:
            mllog("INTERVAL_END", "run_stop", None, {"status": "aborted"})
            log(f"{prog}: SIGTERM: stopped, run_stop aborted")
        else:
            log(f"{prog}: SIGTERM before run_start: stopped")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(143)  # at once: the interpreter's and torch's teardown takes about a second


def _run(a, kind: str, dataset, build_model: Callable) -> int:
    spec = load_task(a.task_file, kind, dataset)
    dataset = spec["dataset"]
    import torch
    import torch.nn.functional as F

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: torch sees no CUDA device "
                       f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    device = torch.device(a.device)
    tf32 = a.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if a.precision == "bf16-amp":
        amp = lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)  # noqa: E731
    else:
        amp = contextlib.nullcontext

    p = prepare(a, spec, dataset, torch)
    tr, bud, o = spec["train"], spec["budget"], spec["optimizer"]
    bs = min(int(tr["batch_size"]), max(p.n_train, 1))
    steps_per_epoch = p.n_train // bs
    if steps_per_epoch == 0:
        raise BadInput(f"training set of {p.n_train} samples is smaller than one batch")
    budget = int(bud["max_epochs"]) * steps_per_epoch
    if bud.get("max_steps") is not None:
        budget = min(budget, int(bud["max_steps"]))
    # The cosine's end defaults to the task's budget (joulebench's budget_steps), not to the
    # --max-steps cap: a capped smoke run is the first steps of the same schedule.
    decay_steps = o["decay_steps"] if o["decay_steps"] is not None else budget
    if a.max_steps is not None:
        budget = min(budget, a.max_steps)
    if bud.get("max_energy_j") is not None:
        log("note: [budget] max_energy_j is not enforced here (the energy is measured outside)")
    max_time_s = bud.get("max_time_s")
    target = float(spec["target"]["value"])
    lower = spec["metric"] == "held-out-loss"  # eval_loss, lower is better; else eval_accuracy
    reached_at = (lambda q: q <= target) if lower else (lambda q: q >= target)
    every = int(tr["eval_every_steps"])
    clip = o["clip_grad_norm"]
    scheduled = o["schedule"] != "constant"

    torch.manual_seed(a.seed)
    model = build_model(spec, p.info, torch)  # init on the CPU from the seeded global stream
    model = model.to(device)
    params = list(model.parameters())
    opt = torch.optim.AdamW(param_groups(model, o), lr=float(o["lr"]),
                            betas=(float(o["beta1"]), float(o["beta2"])), eps=float(o["eps"]),
                            weight_decay=float(o["weight_decay"]))
    order_gen = torch.Generator().manual_seed(derive_seed(a.seed, 1))
    warm_gen = torch.Generator().manual_seed(derive_seed(a.seed, 9))
    aug_gen = torch.Generator().manual_seed(derive_seed(a.seed, AUGMENT_STREAM))
    augment = (make_augment(spec, p.info["shape"], device, torch)
               if dataset in IMAGE_DATASETS else None)
    train_x, train_y = p.train_x.to(device), p.train_y.to(device)
    eval_x, eval_y = p.eval_x.to(device), p.eval_y.to(device)
    classes = p.classes
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def loss_of(x, y):
        with amp():
            logits = model(x)
            return F.cross_entropy(logits.float().reshape(-1, classes), y.reshape(-1))

    def evaluate() -> float:
        """Top-1 accuracy, or for held-out-loss the mean cross-entropy in nats over every
        prediction (summed in f32 on the device, read once)."""
        model.eval()
        total = torch.zeros((), dtype=torch.float32, device=device)
        ebs = max(bs, 256)
        with torch.no_grad():
            for s in range(0, p.n_eval, ebs):
                out = model(eval_x[s:s + ebs])
                if lower:
                    total += F.cross_entropy(out.float().reshape(-1, classes),
                                             eval_y[s:s + ebs].reshape(-1), reduction="sum")
                else:
                    total += (out.argmax(-1) == eval_y[s:s + ebs]).sum().float()
        model.train()
        if lower and p.eval_predictions == 0:
            return math.nan
        return float(total.item()) / max(p.eval_predictions, 1)

    nparams = sum(t.numel() for t in model.parameters())
    log(f"{spec['name']}: torch {torch.__version__}, {a.device}, {a.precision}, seed {a.seed}, "
        f"{nparams} parameters, {p.n_train} train samples, {p.n_eval} eval samples "
        f"({p.eval_predictions} predictions), batch {bs}, {steps_per_epoch} steps/epoch, "
        f"budget {budget} steps, target {'eval_loss <=' if lower else 'accuracy >='} {target}, "
        f"threads {torch.get_num_threads()}")
    log(f"optimizer: adamw lr {o['lr']} betas ({o['beta1']}, {o['beta2']}) eps {o['eps']} "
        f"weight decay {o['weight_decay']} on {o['decay']}, schedule {o['schedule']}"
        + (f" (warm-up {o['lr_warmup_steps']}, min_lr {o['min_lr']}, decay_steps {decay_steps})"
           if scheduled else "")
        + (f", clip_grad_norm {clip}" if clip is not None else "")
        + (f"; augment crop pad {tr['augment_crop_pad']}, hflip {tr['augment_hflip']}"
           if augment is not None else ""))

    point("framework", f"torch {torch.__version__}")
    point("seed", a.seed)
    point("global_batch_size", int(tr["batch_size"]))
    point("opt_name", "adamw")
    point("opt_base_learning_rate", float(o["lr"]))
    point("precision", a.precision)
    point("device", a.device)

    # Warm-up: forward + backward of random batches on the real model, no update.
    # Buffers (batch-norm running statistics) are restored afterwards, so the warm-up leaves
    # nothing the run reads.
    mllog("INTERVAL_START", "warmup", None, {"steps": int(tr["warmup_steps"])})
    model.train()
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    for _ in range(int(tr["warmup_steps"])):
        x, y = p.random_batch(bs, warm_gen)
        loss_of(x.to(device), y.to(device)).backward()
        model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for b, v in saved:
            b.copy_(v)
    del saved
    sync()
    mllog("INTERVAL_END", "warmup", None, {})

    # SIGTERM held back while run_start is printed and recorded: one run_stop iff one run_start.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        mllog("INTERVAL_START", "run_start", None, {})
        _state["started"] = True
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    t0 = time.monotonic()
    step, epochs = 0, 0.0
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)
    loss_steps = 0
    last_loss = 0.0
    reached = diverged = False
    done = budget == 0  # joulebench's stage takes no step and no eval then
    while not done:
        order = torch.randperm(p.n_train, generator=order_gen).to(device)
        for b in range(steps_per_epoch):
            idx = order[b * bs:(b + 1) * bs]
            x, y = train_x[idx], train_y[idx]
            if augment is not None:
                x = augment(x, aug_gen)
            if scheduled:
                lr_t = lr_at(step, o, decay_steps)
                for g in opt.param_groups:
                    g["lr"] = lr_t
            opt.zero_grad(set_to_none=True)
            loss = loss_of(x, y)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, float(clip))
            opt.step()
            loss_sum += loss.detach()
            loss_steps += 1
            step += 1
            epochs += 1.0 / steps_per_epoch
            last = step >= budget
            if step % every != 0 and not last:
                continue
            q = evaluate()
            mean_loss = float(loss_sum.item()) / loss_steps if loss_steps else last_loss
            last_loss = mean_loss
            loss_sum = torch.zeros((), dtype=torch.float32, device=device)
            loss_steps = 0
            point("eval_loss" if lower else "eval_accuracy", q,
                  {"epoch_num": epochs, "step": step, "train_loss": mean_loss})
            elapsed = time.monotonic() - t0
            log(f"step {step} epoch {epochs:.4f} {'eval_loss' if lower else 'accuracy'} {q:.5f} "
                f"train_loss {mean_loss:.5f} t {elapsed:.1f} s")
            hit = reached_at(q)
            if hit:
                reached = True
            if not math.isfinite(mean_loss):
                log(f"diverged: mean train loss {mean_loss} at step {step}")
                diverged = done = True  # joulebench's status "diverged", over "ok"
            elif hit and not a.full_budget:
                done = True
            elif max_time_s is not None and elapsed >= float(max_time_s):
                log(f"time budget: {elapsed:.1f} s >= {max_time_s} s")
                done = True
            elif last:
                done = True
            if done:
                break
    sync()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # run_stop is printed exactly once
    ok = reached and not diverged
    mllog("INTERVAL_END", "run_stop", None, {"status": "success" if ok else "aborted"})
    log(f"run_stop: {'target reached' if ok else 'target not reached'} after {step} steps "
        f"({epochs:.4f} epochs), {time.monotonic() - t0:.1f} s")
    return 0
