#!/usr/bin/env bash
# candle (joulebench run) against PyTorch (joulebench exec over scripts/torch/) on this machine:
# every task with a PyTorch reference program, in f32 and bf16-amp, N seeds, interleaved seed by
# seed so both engines see the same background load, into ONE results folder; then the report,
# whose "Engines on the same system" table is the paired comparison. Nothing is computed here.
#
# Usage: bash scripts/engines-cpu.sh RESULTS_DIR [--seeds N] [--tasks "mnist-mlp mnist-cnn"]
#          [--variants "f32 bf16-amp"] [--idle-s S] [--joulebench PATH] [--python PATH]
# Needs the PyTorch environment of docs/results.md "Speed":
#   python3 -m venv .venv-torch && .venv-torch/bin/pip install torch numpy
# Exit: 0 done (some runs may be DNF: see the report), 2 bad arguments or missing tools.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "engines-cpu.sh: error: $*" >&2; exit 2; }
OUT="${1:-}"; [ -n "$OUT" ] && [ "${OUT#-}" = "$OUT" ] || die "give the results folder first"
shift
SEEDS=3; TASKS="mnist-mlp mnist-cnn text-charlm"; VARIANTS="f32 bf16-amp"; IDLE=5
JB="$ROOT/target/release/joulebench"; PY="$ROOT/.venv-torch/bin/python"
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) SEEDS="${2:?}"; shift 2 ;;
    --tasks) TASKS="${2:?}"; shift 2 ;;
    --variants) VARIANTS="${2:?}"; shift 2 ;;
    --idle-s) IDLE="${2:?}"; shift 2 ;;
    --joulebench) JB="${2:?}"; shift 2 ;;
    --python) PY="${2:?}"; shift 2 ;;
    *) die "unknown argument '$1'" ;;
  esac
done
[ -x "$JB" ] || die "no joulebench binary at $JB (cargo build --release)"
"$PY" -c 'import torch' 2>/dev/null || die "no torch in $PY (see the header)"
THREADS="$(nproc)"
common=(--idle-s "$IDLE" --cooldown-s 2 --meter auto --results "$OUT")
for seed in $(seq 1 "$SEEDS"); do
  for task in $TASKS; do
    script="$ROOT/scripts/torch/${task//-/_}.py"
    [ -f "$script" ] || die "no PyTorch program $script for task $task"
    for v in $VARIANTS; do
      # candle first on odd seeds, PyTorch first on even ones.
      cmds=(candle torch); [ $((seed % 2)) -eq 0 ] && cmds=(torch candle)
      for e in "${cmds[@]}"; do
        if [ "$e" = candle ]; then
          "$JB" run --task "$task" --variant "$v" --seed "$seed" "${common[@]}" || true
        else
          "$JB" exec --task "$task" --variant-label "$v" --seed "$seed" "${common[@]}" \
            -- "$PY" "$script" --seed '{seed}' --precision "$v" --threads "$THREADS" || true
        fi
      done
    done
  done
done
"$JB" report "$OUT"
