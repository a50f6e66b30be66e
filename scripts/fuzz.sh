#!/usr/bin/env bash
# Every parser of user or file input against N seeded mutations of valid inputs (default
# 10^6 per parser; `cargo test` runs 10^4): tests/parsers_mutated.rs, in the release profile,
# printing the count of accepted and refused inputs per parser. Exit non-zero on the first
# panic or multi-line error (the failing case is reproducible: the seeds are fixed).
# Usage: bash scripts/fuzz.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000000}"
case "$n" in ''|*[!0-9]*) echo "fuzz.sh: N must be a whole number, got '$n'" >&2; exit 2 ;; esac
JOULEBENCH_MUTATIONS="$n" cargo test --release --locked --test parsers_mutated -- --nocapture --test-threads 2 2>&1 \
  | grep -E 'mutated inputs|test result|panicked|FAILED'
