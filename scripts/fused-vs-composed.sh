#!/usr/bin/env bash
# The transformer tasks' training step with joulebench's fused CPU ops against candle's composed
# ops (JOULEBENCH_COMPOSED_OPS=1): the same binary, the same model, data and seed, interleaved
# round by round, on 1 thread and on every core. Prints one line per measurement, then the
# median of the per-round ratios fused / composed.
# Usage: bash scripts/fused-vs-composed.sh [BINARY] [ROUNDS] [STEPS]
set -euo pipefail
bin="${1:-target/release/joulebench}"
rounds="${2:-3}"
steps="${3:-30}"
tasks=(text-charlm shakespeare-gpt-mini)
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores; flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512_bf16|amx_bf16)$' | tr '\n' ' ')"
echo "# $("$bin" --version 2>/dev/null || echo joulebench), $(date -u +%Y-%m-%dT%H:%MZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A ratios
for threads in 1 "$(nproc)"; do
  for r in $(seq 1 "$rounds"); do
    for task in "${tasks[@]}"; do
      declare -A ms
      for mode in fused composed; do
        if [ "$mode" = composed ]; then env_mode=1; else env_mode=0; fi
        line=$(RAYON_NUM_THREADS=$threads JOULEBENCH_COMPOSED_OPS=$env_mode \
          "$bin" speed steps --task "$task" --steps "$steps" --warmup 5 2>&1 | tail -1)
        ms[$mode]=$(sed 's/.*median \([0-9.]*\) ms.*/\1/' <<<"$line")
        echo "threads $threads round $r $task $mode: $line"
      done
      ratio=$(python3 -c "print(f'{${ms[fused]} / ${ms[composed]}:.3f}')")
      ratios["$task/$threads"]+="$ratio "
      echo "threads $threads round $r $task ratio fused/composed: $ratio"
    done
  done
done
echo "# median ratio fused/composed (rounds):"
for k in "${!ratios[@]}"; do
  python3 -c "import statistics,sys; v=[float(x) for x in '${ratios[$k]}'.split()]; print(f'{\"$k\":<28} {statistics.median(v):.3f}  ({\" \".join(f\"{x:.3f}\" for x in v)})')"
done | sort
