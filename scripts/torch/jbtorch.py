"""Shared helpers of the reference PyTorch training programs in scripts/torch/.

The programs (`mnist_mlp.py`, `mnist_cnn.py`, `text_charlm.py`) are what `joulebench exec` runs
as a child process: each trains one shipped task the way joulebench's own candle loop does
(src/train.rs) and reports its quality as MLPerf `:::MLLOG {json}` lines on stdout, one JSON
object per line, flushed after each line. joulebench measures the energy from outside; nothing
here measures energy, and no canonical number is computed here.

What this module mirrors of joulebench (read from the source, not from its output):

* Task file: `models/<task>.toml` (tomllib), the keys joulebench's `src/task.rs` reads; the
  checks the programs need are repeated (a bad file is one line on stderr and exit 2).
* Data: the shipped folder `data/<dataset>/` (or `--data-dir D`, holding the files directly, as
  joulebench's `--data-dir`). Every file read is hashed (SHA-256) and checked against the
  `SHA256SUMS` in D or its parent (src/data/checksum.rs): a listed file that differs is one line
  on stderr and exit 2; a file the list does not name is read and reported unverified on stderr,
  as joulebench records it unverified. gzip is detected by its magic bytes, as src/data/source.rs
  does. MNIST: the four IDX files (`.gz` preferred, raw accepted), pixels / 255 in f32, labels
  below 10, header sizes checked against the body (src/data/idx.rs). Text: `austen.txt`, else
  the only `*.txt`; vocabulary the sorted distinct characters of the whole file, the first
  floor(0.9 n) characters train, the rest held out (src/data/text.rs).
* Data view (`[data]`, src/data/view.rs): `classes` (keep those labels, in order), `rotate_deg`
  (an exact counter-clockwise pixel rotation, numpy/torch `rot90` convention, checked against
  the view's unit test), `text_part = [k, n]` (characters len*(k-1)/n .. len*k/n of the training
  text). So `mnist-rot90-mlp` runs with `mnist_mlp.py --task-file models/mnist-rot90-mlp.toml`
  and `text-charlm-p1`/`-p2` with `text_charlm.py --task-file models/text-charlm-p1.toml`.
* Inputs (src/train.rs `prepare`): images as (x - input_mean) / input_sd in f32 (the task's
  declared constants, computed with f32 operands as joulebench does); text as non-overlapping
  windows of context + 1 characters (inputs the first `context`, targets shifted by one),
  (len - 1) // context windows; the held-out set capped at `eval_max_samples` (the first ones).
* Loop (src/train.rs `Session::train_stage`): batch = min(batch_size, n_train); steps per epoch
  n_train // batch (the remainder is dropped); every epoch a fresh random permutation (joulebench
  Fisher-Yates-shuffles the previous one with its order stream, which is a uniformly random
  permutation too); budget = max_epochs x steps per epoch, capped by `[budget] max_steps`
  (`budget_steps`); an eval every `eval_every_steps` optimizer steps and at the last step; stop
  at the first eval with accuracy >= `[target] value` unless `--full-budget`; a non-finite mean
  train loss at an eval stops the run (joulebench's "diverged"); `[budget] max_time_s` is checked
  at evals, from `run_start`. `epoch_num` is the sum of 1 / steps-per-epoch over the steps taken,
  accumulated in f64 as joulebench does. `train_loss` is the mean of the per-step losses since the
  previous eval, summed on the device in f32 and read once per eval, as joulebench does.
* Eval (src/train.rs `evaluate`): the held-out set in batches of max(batch, 256), forward in f32
  (never under autocast), top-1 accuracy over every prediction (text: every position of every
  window); inside the timed part, like joulebench.
* Optimizer (src/optim.rs, src/train.rs `optimizer`): torch.optim.AdamW over every parameter
  (biases, layer norms and embeddings decay too, as in joulebench) with the task's lr, betas, eps
  and weight decay; no schedule; no gradient clipping. The update rule is the same as
  joulebench's by reading both (decoupled decay w*(1 - lr*wd), bias-corrected moments, eps added
  to sqrt(v_hat)); not compared step by step.
* Warm-up (src/train.rs `Session::open`): `warmup_steps` forward + backward passes on the real
  model with random batches (standard normal pixels or uniform tokens, uniform labels) under the
  run's precision, gradients discarded, no optimizer step, so nothing training depends on is
  touched; printed as an `INTERVAL_START`/`INTERVAL_END` pair with key `warmup` before
  `run_start`. The random batches come from their own generator, not the init or order stream.
* Init: every weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (src/model/params.rs
  `uniform`, which is also PyTorch's default distribution), drawn on the CPU after
  `torch.manual_seed(seed)` and then moved to the device, so a seed gives the same initial model
  on the CPU and on CUDA. Known difference: joulebench draws from ChaCha8, PyTorch from its own
  generator: same distribution, different numbers, so no run here is bit-identical to a
  joulebench run of the same seed. The same holds for the batch order.

Seeding: `torch.manual_seed(seed)` (the init stream); the batch-order permutation comes from a
`torch.Generator` seeded with `derive_seed(seed, 1)` and the warm-up batches from one seeded with
`derive_seed(seed, 9)` (the stream numbers joulebench uses), so the init, order and warm-up
streams are independent.

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
reference curves (results/curves/). Not run: anything on CUDA (no GPU was at hand), so the
`--device cuda` paths and `--precision tf32` are written from PyTorch's documented API only.
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
    p.add_argument("--task-file", type=Path, default=ROOT / "models" / f"{task}.toml",
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
    if a.precision == "tf32" and a.device != "cuda":
        p.error("--precision tf32 needs --device cuda (TF32 is a CUDA tensor-core mode)")
    return a


def derive_seed(seed: int, stream: int) -> int:
    """An independent 64-bit seed for stream `stream` of `seed` (SHA-256 based)."""
    h = hashlib.sha256(f"joulebench-torch/{seed}/{stream}".encode()).digest()
    return int.from_bytes(h[:8], "little")


# --------------------------------------------------------------------------------------------
# Task file


def load_task(path: Path, kind: str, dataset: str) -> dict:
    """Parse and check the task TOML; `kind`/`dataset` are what the calling program trains."""
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

    for k in ("name", "dataset"):
        need(None, k, str, k)
    if spec["dataset"] != dataset:
        raise bad(f"key 'dataset' is '{spec['dataset']}'; this program trains '{dataset}' tasks")
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
    tv = float(need("target", "value", (int, float), "target.value"))
    if not 0 < tv <= 1:
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
    unknown = set(view) - {"classes", "rotate_deg", "text_part"}
    if unknown:
        raise bad(f"unknown key 'data.{sorted(unknown)[0]}'")
    is_text = dataset == "text"
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
            raise bad("key 'data.text_part' applies to the text dataset only")
        if (not isinstance(tp, list) or len(tp) != 2 or not all(isinstance(v, int) for v in tp)
                or not 1 <= tp[0] <= tp[1]):
            raise bad(f"key 'data.text_part' is [k, n] with 1 <= k <= n, got {tp}")
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


def load_mnist(a: argparse.Namespace, torch) -> tuple[Images, Images, list[Path]]:
    d = dataset_dir(a, "mnist")
    sums = Sums.find(d)
    paths = []
    for name in MNIST_FILES:
        gz, plain = d / f"{name}.gz", d / name
        if gz.is_file():
            paths.append(gz)
        elif plain.is_file():
            paths.append(plain)
        else:
            raise BadInput(f"{gz}: missing; the mnist layout expects {', '.join(MNIST_FILES)} "
                           f"(each optionally .gz) in {d}")
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
    """joulebench's init (src/model/params.rs `uniform`): U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
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
    if dataset == "mnist":
        train, test, files = load_mnist(a, torch)
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
    text, path = load_text(a)
    vocab = sorted(set(text))
    index = {ch: i for i, ch in enumerate(vocab)}
    ids = torch.tensor([index[ch] for ch in text], dtype=torch.long)
    n = ids.shape[0]
    n_tr = n // 10 * 9 + (n % 10) * 9 // 10
    train_ids, test_ids = ids[:n_tr], ids[n_tr:]
    if test_ids.shape[0] == 0:
        raise BadInput(f"{path}: text has {n} characters, expected at least 10 so the 10 % "
                       "test split is not empty")
    if "text_part" in spec["data"]:
        k, parts = spec["data"]["text_part"]
        L = train_ids.shape[0]
        train_ids = train_ids[L * (k - 1) // parts: L * k // parts]
    ctx = int(spec["model"]["context"])

    def windows(t, mx):
        nw = max(t.shape[0] - 1, 0) // ctx
        nw = nw if mx is None else min(nw, mx)
        x = t[: nw * ctx].reshape(nw, ctx)
        y = t[1: nw * ctx + 1].reshape(nw, ctx)
        return x, y, nw

    tx, ty, n_train = windows(train_ids, None)
    ex, ey, n_eval = windows(test_ids, cap)
    V = len(vocab)

    def rb(nb, g):
        return (torch.randint(0, V, (nb, ctx), generator=g),
                torch.randint(0, V, (nb, ctx), generator=g))

    return Prepared(tx, ty, n_train, ex, ey, n_eval, n_eval * ctx, V,
                    {"context": ctx, "vocab": V}, [path], rb)


_state = {"started": False}


def _on_sigterm(signum, frame):
    raise Terminated()


def main(task: str, kind: str, dataset: str, build_model: Callable, argv=None) -> int:
    """Run one program: `build_model(spec, info, torch)` returns the nn.Module, initialised
    from torch's global generator (seeded before the call). Returns the exit status."""
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


def _run(a, kind: str, dataset: str, build_model: Callable) -> int:
    spec = load_task(a.task_file, kind, dataset)
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
    if a.max_steps is not None:
        budget = min(budget, a.max_steps)
    if bud.get("max_energy_j") is not None:
        log("note: [budget] max_energy_j is not enforced here (the energy is measured outside)")
    max_time_s = bud.get("max_time_s")
    target = float(spec["target"]["value"])
    every = int(tr["eval_every_steps"])

    torch.manual_seed(a.seed)
    model = build_model(spec, p.info, torch)  # init on the CPU from the seeded global stream
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=float(o["lr"]),
                            betas=(float(o["beta1"]), float(o["beta2"])), eps=float(o["eps"]),
                            weight_decay=float(o["weight_decay"]))
    order_gen = torch.Generator().manual_seed(derive_seed(a.seed, 1))
    warm_gen = torch.Generator().manual_seed(derive_seed(a.seed, 9))
    train_x, train_y = p.train_x.to(device), p.train_y.to(device)
    eval_x, eval_y = p.eval_x.to(device), p.eval_y.to(device)
    classes = p.classes
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def loss_of(x, y):
        with amp():
            logits = model(x)
            return F.cross_entropy(logits.float().reshape(-1, classes), y.reshape(-1))

    def evaluate() -> float:
        model.eval()
        correct = torch.zeros((), dtype=torch.float32, device=device)
        ebs = max(bs, 256)
        with torch.no_grad():
            for s in range(0, p.n_eval, ebs):
                pred = model(eval_x[s:s + ebs]).argmax(-1)
                correct += (pred == eval_y[s:s + ebs]).sum().float()
        model.train()
        return float(correct.item()) / max(p.eval_predictions, 1)

    nparams = sum(t.numel() for t in model.parameters())
    log(f"{spec['name']}: torch {torch.__version__}, {a.device}, {a.precision}, seed {a.seed}, "
        f"{nparams} parameters, {p.n_train} train samples, {p.n_eval} eval samples "
        f"({p.eval_predictions} predictions), batch {bs}, {steps_per_epoch} steps/epoch, "
        f"budget {budget} steps, target {target}, threads {torch.get_num_threads()}")

    point("framework", f"torch {torch.__version__}")
    point("seed", a.seed)
    point("global_batch_size", int(tr["batch_size"]))
    point("opt_name", "adamw")
    point("opt_base_learning_rate", float(o["lr"]))
    point("precision", a.precision)
    point("device", a.device)

    # Warm-up: forward + backward of random batches on the real model, no update.
    mllog("INTERVAL_START", "warmup", None, {"steps": int(tr["warmup_steps"])})
    model.train()
    for _ in range(int(tr["warmup_steps"])):
        x, y = p.random_batch(bs, warm_gen)
        loss_of(x.to(device), y.to(device)).backward()
        model.zero_grad(set_to_none=True)
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
            opt.zero_grad(set_to_none=True)
            loss = loss_of(x, y)
            loss.backward()
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
            point("eval_accuracy", q, {"epoch_num": epochs, "step": step, "train_loss": mean_loss})
            elapsed = time.monotonic() - t0
            log(f"step {step} epoch {epochs:.4f} accuracy {q:.5f} train_loss {mean_loss:.5f} "
                f"t {elapsed:.1f} s")
            if q >= target:
                reached = True
            if not math.isfinite(mean_loss):
                log(f"diverged: mean train loss {mean_loss} at step {step}")
                diverged = done = True  # joulebench's status "diverged", over "ok"
            elif q >= target and not a.full_budget:
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
