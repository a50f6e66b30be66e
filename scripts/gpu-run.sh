#!/usr/bin/env bash
# Run joulebench's CUDA build on a GPU machine (no Rust, no network needed) with the evidence a
# reviewer asks for, into results/<date>-<gpu>/:
#   env/         nvidia-smi -q, python/torch/nvidia-ml-py versions, ldd, BUILD-INFO, joulebench env
#   runs/ events/ power/ system.json   joulebench's own run files
#   nvml-trace-<stamp>.csv   an INDEPENDENT NVML reader (scripts/nvml-reader.py, nvidia-ml-py) that
#                            runs in its own process for the whole joulebench command
#   crosscheck-<stamp>.json|md   `joulebench crosscheck`: joulebench's GPU energy / the reader's,
#                            per run, agreement within 2 % (computed in Rust, not here)
#   compare-pytorch.log      scripts/compare-pytorch.py --device cuda (the PyTorch side by side),
#                            where that script exists
#   leaderboard.*            `joulebench report`, where this binary has it
# Nothing is computed here: every figure comes from joulebench.
#
# Usage (from a checkout of the repository, with the pack from scripts/build-cuda.sh):
#   bash scripts/gpu-run.sh [--pack FILE] [--results DIR] [--cuda-index I] [--seeds N]
#                           [--no-reader] [--no-pytorch] [--check] [-- JOULEBENCH_ARGS...]
#   JOULEBENCH_ARGS default: sweep --suite standard. A binary without `sweep` runs instead, for
#   every task and variant `joulebench list` shows: run --task T --variant V --device cuda:I
#   --seeds N (N default 10). `--results DIR` is appended unless given.
#   --check  unpack, find the libraries, record the environment, `joulebench env`; run nothing.
# Exit codes: 0 all ok; 1 some run failed or a cross-check disagreed; 2 setup error (no pack, no
# driver, a missing library), with one line saying what and where it looked.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { echo "gpu-run.sh: $*" >&2; }
die() { echo "gpu-run.sh: error: $*" >&2; exit 2; }

PACK=""
RESULTS=""
CUDA_INDEX=0
SEEDS=10
READER=1
PYTORCH=1
CHECK=0
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --pack) PACK="${2:?--pack needs a file}"; shift 2 ;;
    --results) RESULTS="${2:?--results needs a folder}"; shift 2 ;;
    --cuda-index) CUDA_INDEX="${2:?--cuda-index needs a number}"; shift 2 ;;
    --seeds) SEEDS="${2:?--seeds needs a number}"; shift 2 ;;
    --no-reader) READER=0; shift ;;
    --no-pytorch) PYTORCH=0; shift ;;
    --check) CHECK=1; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    --) shift; ARGS=("$@"); break ;;
    *) die "unknown argument '$1' (valid: --pack FILE, --results DIR, --cuda-index I, --seeds N, --no-reader, --no-pytorch, --check, -- JOULEBENCH_ARGS)" ;;
  esac
done
case "$CUDA_INDEX" in ''|*[!0-9]*) die "--cuda-index '$CUDA_INDEX': expected a number" ;; esac
case "$SEEDS" in ''|*[!0-9]*|0) die "--seeds '$SEEDS': expected a positive number" ;; esac
[ ${#ARGS[@]} -gt 0 ] || ARGS=(sweep --suite standard)
PY="${PYTHON:-python3}"

# ---- 1. the pack ------------------------------------------------------------------------------
if [ -x "$ROOT/joulebench" ] && [ -f "$ROOT/BUILD-INFO.txt" ]; then
  STAGE="$ROOT" # this script runs from inside an unpacked pack
else
  if [ -z "$PACK" ]; then
    PACK=$(ls -t "$ROOT"/.cuda-pack/joulebench-cuda-sm*.tar.gz 2>/dev/null | head -n1)
    [ -n "$PACK" ] || die "no pack in $ROOT/.cuda-pack/ (build one with scripts/build-cuda.sh, or pass --pack FILE)"
  fi
  [ -f "$PACK" ] || die "pack $PACK not found"
  NAME=$(basename "$PACK" .tar.gz)
  DEST="$(cd "$(dirname "$PACK")" && pwd)"
  STAGE="$DEST/$NAME"
  if [ ! -x "$STAGE/joulebench" ] || [ "$PACK" -nt "$STAGE/joulebench" ]; then
    rm -rf "$STAGE"
    tar -C "$DEST" -xzf "$PACK" 2>/dev/null ||
      "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$PACK" "$DEST" ||
      die "cannot unpack $PACK"
    touch "$STAGE/joulebench"
  fi
fi
BIN="$STAGE/joulebench"
(cd "$STAGE" && sha256sum --quiet -c SHA256SUMS) || die "the pack in $STAGE does not match its SHA256SUMS"
say "binary: $BIN ($(grep -E '^git_commit' "$STAGE/BUILD-INFO.txt" | cut -d' ' -f2))"

# ---- 2. the libraries --------------------------------------------------------------------------
# The binary needs libcuda.so.1 (the driver) and the CUDA 13 libraries (cuBLAS, cuBLASLt, cuRAND,
# NVRTC, runtime). Its RUNPATH covers the pack's lib/ and /usr/local/cuda; PyTorch's cu13 wheels
# and the driver's mount are searched for whatever is still missing.
PY_CU13=$("$PY" -c 'import nvidia, os; print("\n".join(os.path.join(p, "cu13", "lib") for p in nvidia.__path__))' 2>/dev/null || true)
CANDIDATES=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib $PY_CU13
            /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64)
export LD_LIBRARY_PATH="$STAGE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
missing() { ldd "$BIN" 2>/dev/null | awk '/=> not found/ {print $1}'; }
for lib in $(missing); do
  for d in "${CANDIDATES[@]}"; do
    if [ -e "$d/$lib" ]; then
      export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
      say "found $lib in $d"
      break
    fi
  done
done
STILL=$(missing | tr '\n' ' ')
if [ -n "$STILL" ]; then
  case "$STILL" in
    *libcuda.so.1*) die "libcuda.so.1 not found: this machine has no NVIDIA driver (or it is not on the library path; searched ${CANDIDATES[*]}). joulebench's CUDA build needs the driver to start; on a machine without one it starts only with the link stub on LD_LIBRARY_PATH (see docs/gpu.md)" ;;
    *) die "missing CUDA 13 libraries: $STILL(searched $STAGE/lib ${CANDIDATES[*]}); install the CUDA 13 runtime or PyTorch's cu130 wheels, or add their folder to LD_LIBRARY_PATH" ;;
  esac
fi
LIBCUDA=$(ldd "$BIN" | awk '$1 == "libcuda.so.1" {print $3}')
case "$LIBCUDA" in
  *stub*|*cuda-build*) die "libcuda.so.1 resolves to the link stub ($LIBCUDA), not the driver: remove the stub folder from LD_LIBRARY_PATH" ;;
esac
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: no NVIDIA driver on this machine"

# ---- 3. the results folder and the environment ------------------------------------------------
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader -i "$CUDA_INDEX" 2>/dev/null | head -n1)
[ -n "$GPU_NAME" ] || die "nvidia-smi cannot read GPU $CUDA_INDEX"
SLUG=$(echo "$GPU_NAME" | tr 'A-Z' 'a-z' | sed -e 's/^nvidia //' -e 's/[^a-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')
for a in "${ARGS[@]}"; do [ "$a" = "--results" ] && RESULTS_IN_ARGS=1; done
if [ -z "$RESULTS" ]; then
  RESULTS="$ROOT/results/$(date -u +%F)-$SLUG"
fi
mkdir -p "$RESULTS/env" || die "cannot create $RESULTS"
RESULTS="$(cd "$RESULTS" && pwd)"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
ENV_DIR="$RESULTS/env"
say "GPU $CUDA_INDEX: $GPU_NAME; results in $RESULTS"
nvidia-smi -q > "$ENV_DIR/nvidia-smi-q-$STAMP.txt" 2>&1
nvidia-smi -q -i "$CUDA_INDEX" -d POWER,CLOCK,TEMPERATURE,PERFORMANCE > "$ENV_DIR/nvidia-smi-power-clocks-$STAMP.txt" 2>&1
"$PY" - > "$ENV_DIR/python-$STAMP.txt" 2>&1 <<'EOF'
import sys, platform
print("python", sys.version.replace("\n", " "), "at", sys.executable)
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
    if torch.cuda.is_available():
        print("torch device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
except Exception as e:
    print("torch unavailable:", e)
try:
    from importlib.metadata import version
    print("nvidia-ml-py", version("nvidia-ml-py"))
except Exception as e:
    print("nvidia-ml-py unavailable:", e)
print("platform", platform.platform())
EOF
{ uname -a; echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-}"; ldd "$BIN"; } > "$ENV_DIR/ldd-$STAMP.txt" 2>&1
cp "$STAGE/BUILD-INFO.txt" "$ENV_DIR/BUILD-INFO.txt"
export JOULEBENCH_MODELS="${JOULEBENCH_MODELS:-$STAGE/models}"
[ -d "$ROOT/data" ] && export JOULEBENCH_DATA="${JOULEBENCH_DATA:-$ROOT/data}"
"$BIN" env --json > "$ENV_DIR/joulebench-env-$STAMP.json" 2> "$ENV_DIR/joulebench-env-$STAMP.err" ||
  die "joulebench env failed: $(head -n1 "$ENV_DIR/joulebench-env-$STAMP.err")"
"$BIN" env >&2
if [ "$CHECK" = 1 ]; then
  say "check done: the binary starts and sees the machine (env/ written); nothing was run"
  exit 0
fi

# ---- 4. the independent reader, then joulebench -----------------------------------------------
TRACE="$RESULTS/nvml-trace-$STAMP.csv"
READER_PID=""
stop_reader() {
  [ -n "$READER_PID" ] || return 0
  touch "$RESULTS/.nvml-reader-$STAMP.stop"
  for _ in $(seq 50); do kill -0 "$READER_PID" 2>/dev/null || break; sleep 0.1; done
  kill "$READER_PID" 2>/dev/null
  wait "$READER_PID" 2>/dev/null
  rm -f "$RESULTS/.nvml-reader-$STAMP.stop"
  READER_PID=""
}
trap stop_reader EXIT
if [ "$READER" = 1 ]; then
  "$PY" "$ROOT/scripts/nvml-reader.py" --out "$TRACE" --cuda-index "$CUDA_INDEX" \
    --interval-ms 50 --stop-file "$RESULTS/.nvml-reader-$STAMP.stop" 2> "$RESULTS/nvml-reader-$STAMP.log" &
  READER_PID=$!
  for _ in $(seq 100); do
    [ "$(grep -vc '^#' "$TRACE" 2>/dev/null || echo 0)" -ge 5 ] && break
    kill -0 "$READER_PID" 2>/dev/null || die "the NVML reader stopped: $(tail -n1 "$RESULTS/nvml-reader-$STAMP.log")"
    sleep 0.1
  done
  say "independent NVML reader running (pid $READER_PID) -> $TRACE"
fi

COMMANDS=()
with_results() { # append --results unless the user gave it
  if [ -n "${RESULTS_IN_ARGS:-}" ]; then echo "$@"; else echo "$@ --results $RESULTS"; fi
}
if "$BIN" help "${ARGS[0]}" >/dev/null 2>&1; then
  COMMANDS+=("$(with_results "${ARGS[@]}")")
elif [ "${ARGS[0]}" = sweep ]; then
  say "this binary has no 'sweep' subcommand yet: running every task x variant with 'run' (--seeds $SEEDS)"
  TASKS=$("$BIN" list --json | "$PY" -c 'import json,sys; print(" ".join(t["name"] for t in json.load(sys.stdin)["tasks"]))')
  VARIANTS=$("$BIN" list --json | "$PY" -c 'import json,sys; print(" ".join("--variant " + v["name"] for v in json.load(sys.stdin)["variants"]))')
  for t in $TASKS; do
    COMMANDS+=("$(with_results run --task "$t" $VARIANTS --device "cuda:$CUDA_INDEX" --seeds "$SEEDS")")
  done
else
  die "this binary has no '${ARGS[0]}' subcommand (see: $BIN --help)"
fi
RC=0
for c in "${COMMANDS[@]}"; do
  echo "joulebench $c" >> "$ENV_DIR/commands-$STAMP.txt"
  say "joulebench $c"
  # shellcheck disable=SC2086 # the command line is split on purpose
  "$BIN" $c 2>&1 | tee -a "$RESULTS/joulebench-$STAMP.log"
  rc=${PIPESTATUS[0]}
  [ "$rc" -gt "$RC" ] && RC=$rc
done
stop_reader

# ---- 5. the cross-check (Rust), the report, the PyTorch side by side ---------------------------
if [ "$READER" = 1 ]; then
  "$BIN" crosscheck --trace "$TRACE" --out "$RESULTS/crosscheck-$STAMP.json" "$RESULTS" |
    tee "$RESULTS/crosscheck-$STAMP.log"
  rc=${PIPESTATUS[0]}
  [ "$rc" -gt "$RC" ] && RC=$rc
fi
if "$BIN" help report >/dev/null 2>&1; then
  for f in md csv json html; do
    "$BIN" report "$RESULTS" --format "$f" --out "$RESULTS/leaderboard.$f" ||
      say "joulebench report --format $f failed"
  done
else
  say "this binary has no 'report' subcommand yet: leaderboard files not written"
fi
if [ "$PYTORCH" = 1 ]; then
  if [ -f "$ROOT/scripts/compare-pytorch.py" ]; then
    say "PyTorch side by side: scripts/compare-pytorch.py --device cuda"
    (cd "$ROOT" && JOULEBENCH="$BIN" JOULEBENCH_RESULTS="$RESULTS" PATH="$STAGE:$PATH" \
      "$PY" scripts/compare-pytorch.py --device cuda) 2>&1 | tee "$RESULTS/compare-pytorch-$STAMP.log"
    rc=${PIPESTATUS[0]}
    [ "$rc" -gt "$RC" ] && RC=$rc
  else
    say "scripts/compare-pytorch.py not found (the speed branch is not merged yet): PyTorch comparison skipped"
  fi
fi
say "done (exit $RC): $RESULTS"
exit "$RC"
