#!/usr/bin/env bash
# Kill at random: `sweep`, `run`, `merge` and `report` on digits-mlp, each SIGKILLed at a seeded
# random moment, then checked (tests/kill_random.rs says what). `cargo test` runs 10 trials;
# this runs N (default 100) and prints the summary line with the figures.
# Usage: bash scripts/kill-test.sh [N] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100}"
seed="${2:-20261207}"
for v in "$n" "$seed"; do
  case "$v" in ''|*[!0-9]*) echo "kill-test.sh: N and SEED must be whole numbers, got '$v'" >&2; exit 2 ;; esac
done
JOULEBENCH_KILL_TRIALS="$n" JOULEBENCH_KILL_SEED="$seed" \
  cargo test --release --locked --test kill_random -- --nocapture 2>&1 \
  | grep -E 'kill-at-random|test result|panicked|FAILED'
