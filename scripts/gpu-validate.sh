#!/usr/bin/env bash
# gpu-validate.sh: the first GPU evidence in ONE device call of at most 10 minutes (issue 19).
# The CUDA build runs, its energy agrees with an independent reader, candle stands beside PyTorch.
#
# Usage, on the GPU machine (a checkout with .cuda-pack/ from scripts/build-cuda.sh):
#   bash scripts/gpu-validate.sh [--out-tar DIR] [--results DIR] [--pack FILE] [--joulebench PATH]
#                                [--cuda-index I] [--tasks "T1 T2 ..."] [--python PY]
#   device tool: run(command="bash scripts/gpu-validate.sh --out-tar $OUT", carry=[".cuda-pack"],
#                    timeout_s=600): everything comes back as ONE tarball plus summary.txt.
# Usage, the dry run on a CPU machine (CI; no GPU, no NVML, no torch needed):
#   bash scripts/gpu-validate.sh --dry-run [--joulebench PATH] [--results DIR] [--out-tar DIR]
#                                [--no-fake-nvml] [--python PY]
#
# Stages: each runs in its own process (this script, `--stage X`) under `timeout`, so a hang in
# one still leaves the others' files. The limits add up to 560 s, under the call's 600 s:
#   a check       45 s  gpu-run.sh --check (unpack, SHA256SUMS, libraries, env/, joulebench env),
#                       then joulebench --version / env --json / list --json, python versions,
#                       py_compile of every Python helper used below
#   b probe       30 s  scripts/nvml-probe.py: energy counter present? its resolution (smallest
#                       nonzero step), the power-sample interval, idle power over 20 s (JSON)
#   c runs       255 s  scripts/nvml-reader.py running for the whole stage; one calibration epoch
#                       per task (validate/calibration/, neither ranked nor cross-checked), then
#                       each task x {f32, tf32, bf16-amp} x 2 seeds, --full-budget --max-epochs E
#   d crosscheck  20 s  joulebench crosscheck --trace nvml-trace.csv (the 2 % band, in Rust)
#   e pytorch    185 s  compare-pytorch.py --device cuda per task it mirrors (MNIST MLP/CNN); then
#                       scripts/torch/<task>.py under `joulebench exec` (where the binary has it),
#                       f32 for every task, then bf16-amp, 2 seeds, stage c's budget (E epochs)
#   f report      25 s  joulebench report (leaderboard.md/csv/json/tex/html, emissions, footprint)
#   then summary.txt (printed), and with --out-tar DIR one tarball of the results folder.
# Every command inside a stage gets the time the stage has left, so a stage ends by itself.
# Tasks: mnist-cnn, text-charlm, shakespeare-gpt, fashion-resnet, those `joulebench list` shows
# (a missing one is logged and skipped); --tasks overrides. The dry run trains the CPU members of
# the two GPU families instead (shakespeare-gpt-mini, fashion-resnet-mini: a shakespeare-gpt step
# is about 1.2 TFLOP, 40 s on a 2-core CPU) through the same code: the same torch programs (a
# `-mini` task runs its family's program with --task-file), the same data handling.
#
# Budget sizing for stage c (no window under the 5 s floor; the stage about 4 to 4.5 minutes).
# From FLOPs (forward FLOPs per sample as the model counts them, run files' flops.forward_per_sample;
# x3 for training; x samples per epoch; over an H100's sustained rate):
#   mnist-cnn   conv1 28*28*16*25*2 = 0.63 M + conv2 14*14*32*16*25*2 = 5.02 M + fc 1568*128*2
#               = 0.40 M + fc 128*10*2 = 6.05 MFLOP/sample; x3 x 60,000 = 1.09 TFLOP/epoch
#   text-charlm 15.3 MFLOP/sample (64 tokens; 2 layers of d 64, ff 256; attention over 64);
#               x3 x 56,600 windows = 2.6 TFLOP/epoch
#   At even 5 % of an H100's ~990 TFLOP/s dense bf16 (~50 TFLOP/s) that is 0.02-0.05 s per epoch:
#   these models are far too small to be FLOP-bound. What bounds them is a per-step floor (some
#   hundreds of kernel launches at ~5-10 us, the optimizer, a sync per eval): assumed 3 ms per
#   step, mnist-cnn 469 steps/epoch = 1.4 s/epoch, text-charlm 1,768 steps/epoch = 5.4 s/epoch
#   (PRIOR_EPOCH_S below, used only when a calibration fails). That floor is a guess within a
#   factor of several, so stage c measures it: one f32 calibration epoch per task (which also
#   JIT-compiles the PTX kernels and warms cuBLAS, so the measured runs do not pay for that), then
#     window = (plan left - per-task overhead) / runs, clamped to [W_MIN, W_MAX] = [8, 30] s
#     E      = max(E_min, ceil(W_MIN / epoch_s), round(window / epoch_s))
#   with E_min = ceil(1.5 x the epoch where the calibration reached T), or 2 if it did not.
#   With the plan 215 s (~20 s of it calibration), 2 tasks x 3 variants x 2 seeds = 12 runs and
#   ~15 s overhead per task (startup, 5 s idle baseline, 2 s cooldowns): ~13.5 s windows
#   (mnist-cnn ~10 epochs, text-charlm ~3 at the prior's speeds); with 4 tasks, 24 runs at
#   about W_MIN. Stage e's torch runs get the same budget: ~8 runs of 5-15 s plus torch's start.
#   A task whose single epoch exceeds the calibration cap (40 s) runs to its target instead
#   (1 epoch, no --full-budget), logged. Tasks run cheapest first.
#
# The dry run (--dry-run) is the SAME code path, stage for stage: only the sizes (tiny copies of
# the datasets via scripts/tiny-data.py, a short plan, 1 s idle), the device (cpu), the meter
# (estimate), the binary (target/release/joulebench, else target/debug/joulebench, or
# --joulebench), exec's seeds (1: torch starts slowly on 2 cores) and the legitimate skips
# differ. Skips are logged with their reason: gpu-run.sh --check (no pack, no driver), tf32
# (CUDA only), the cross-check when no run has GPU energy, PyTorch when torch is missing, exec
# when the binary lacks it; runs that miss the target on tiny data (dnf) are expected there
# and count as failures on the GPU. NVML: the dry run uses the fake pynvml in
# tests/fixtures/fake-pynvml (its device is "Fake H100", its version "fake", in every file it
# touches), so the probe and the reader really run; --no-fake-nvml skips both instead (the probe
# is still compiled), as on a machine without NVML.
# It writes into a new temporary folder (never into the committed results/) and takes well
# under 3 minutes on 2 cores.
#
# Output: results/<date>-<gpu-name-slug>/ (dry run: $TMPDIR/gpu-validate-dry.*/<date>-dry-run-cpu/)
#   env/ (gpu-run.sh's evidence; joulebench env/list), nvml-probe.json, nvml-trace.csv,
#   runs/ events/ power/ system.json (joulebench's), crosscheck.json|md, compare-pytorch-*.json|log,
#   leaderboard.*, validate.log (each stage's start, end, exit code, timed out or not, and every
#   skip with its reason), summary.txt, validate/ (each stage's log, the plan, calibration runs).
# Exit codes: 0 every stage passed (or was legitimately skipped); 1 some stage failed or timed
# out; 2 setup error (bad arguments, no binary or pack, no GPU name, results folder unusable).
# shellcheck disable=SC2317,SC2012,SC1091 # stage_X is called as "stage_$GV_STAGE"; ls on our own names
set -uo pipefail

CALLER_PWD="$PWD"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$ROOT/scripts/$(basename "${BASH_SOURCE[0]}")"
cd "$ROOT" || exit 2

STAGES=(a b c d e f)
declare -A STAGE_NAME=([a]=check [b]=probe [c]=runs [d]=crosscheck [e]=pytorch [f]=report)
declare -A STAGE_CAP=([a]=45 [b]=30 [c]=255 [d]=20 [e]=185 [f]=25)
WANTED_TASKS="mnist-cnn text-charlm shakespeare-gpt fashion-resnet"
WANTED_VARIANTS="f32 tf32 bf16-amp"
EXEC_VARIANTS="f32 bf16-amp"
# Fallback epoch times (s) on an H100 when a calibration run fails (see the sizing note above).
# shakespeare-gpt: 278 steps x 1.17 TFLOP at an assumed 25 TFLOP/s; fashion-resnet: 468 steps x
# 23.8 GFLOP at an assumed 5 TFLOP/s (small convolutions): FLOP-based guesses, not measurements.
declare -A PRIOR_EPOCH_S=([mnist-cnn]=1.4 [mnist-mlp]=1.4 [text-charlm]=5.4 [shakespeare-gpt]=13 [fashion-resnet]=3)

now() { date +%s; }
stamp() { date -u +%FT%TZ; }
die() { echo "gpu-validate.sh: error: $*" >&2; exit 2; }
# One line in validate.log (and on stderr), from the driver or a stage.
log() { printf '%s %s\n' "$(stamp)" "$*" | tee -a "$GV_RESULTS/validate.log" >&2; }

# =============================================================================================
# Stage helpers: a stage ends with ok / skipped / failed; notes (sub-skips) go to validate.log.
# =============================================================================================
note() { log "  [$GV_STAGE] $*"; }
finish() { # finish ok|skipped|failed [reason]
  local s="$1"; shift
  echo "$s${1:+: $*}" > "$GV_STATE/$GV_STAGE.status"
  [ "$s" = failed ] && return 1 || return 0
}
# A thing this machine legitimately lacks in the dry run, but the GPU machine must have.
dry_skip_or_fail() { # dry_skip_or_fail REASON: returns 0 (skip) in the dry run, 1 (fail) on the GPU
  if [ "$GV_MODE" = dry ]; then note "skipped: $*"; return 0; fi
  note "FAILED: $*"; return 1
}
remaining() { echo $(( GV_STAGE_DEADLINE - $(now) )); }
load_env() { [ -f "$GV_STATE/env.sh" ] && . "$GV_STATE/env.sh"; true; }
jq_py() { # jq_py FILE EXPR: print a Python expression over the JSON in FILE (bound to d)
  "$GV_PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}
# Statuses of the run records a `run --json` / `exec --json` printed: "n ok dnf bad details".
assess() { # assess JSONL
  "$GV_PY" - "$1" <<'EOF'
import json, sys
recs = []
for line in open(sys.argv[1], errors="replace"):
    if line.startswith("{"):
        try:
            recs.append(json.loads(line))
        except ValueError:
            pass
st = [r.get("status") for r in recs]
bad = [f"{r.get('run_id')}: {r.get('status')} {str(r.get('error') or '')[:160]}"
       for r in recs if r.get("status") not in ("ok", "dnf")]
print(len(recs), st.count("ok"), st.count("dnf"), len(bad), "; ".join(bad) or "-")
EOF
}
# Judge one joulebench command from its exit code and its records; returns 1 on a failure.
judge() { # judge WHAT RC JSONL EXPECTED LOG
  local what="$1" rc="$2" n ok dnf bad detail
  read -r n ok dnf bad detail <<< "$(assess "$3")"
  n=${n:-0} ok=${ok:-0} dnf=${dnf:-0} bad=${bad:-0} # no records read: n = 0 fails below
  if [ "$rc" -ge 124 ]; then note "FAILED: $what: timed out (exit $rc) after $n of $4 runs"; return 1; fi
  if [ "$bad" -gt 0 ] || [ "$n" -lt "$4" ] || { [ "$rc" != 0 ] && [ "$dnf" = 0 ]; } || [ "$rc" -gt 1 ]; then
    note "FAILED: $what: exit $rc, $n of $4 runs ($ok ok, $dnf dnf, $bad other: $detail): $(tail -n1 "$5")"; return 1
  fi
  if [ "$dnf" -gt 0 ]; then
    if [ "$GV_MODE" = dry ]; then note "$what: $ok ok, $dnf dnf (tiny data: the target is out of reach in the dry run)"
    else note "FAILED: $what: $dnf of $n runs did not reach the target within the budget (dnf)"; return 1; fi
  else note "$what: $n runs ok"; fi
  return 0
}
# The dataset folder a task reads: the tiny copy in the dry run, else nothing (the shipped data).
data_dir_for() { # data_dir_for TASK -> prints a path or nothing
  [ "$GV_TINY" = 1 ] || return 0
  local ds src dst
  ds=$(jq_py "$GV_STATE/list.json" "next(t['dataset'] for t in d['tasks'] if t['name'] == '$1')") || return 1
  src="${JOULEBENCH_DATA:-$ROOT/data}/$ds"
  dst="$GV_STATE/tiny-data/$ds"
  if [ ! -d "$dst" ]; then
    "$GV_PY" "$ROOT/scripts/tiny-data.py" "$src" "$dst" --train 256 --test 256 --text-chars 4000 >&2 || return 1
  fi
  echo "$dst"
}

# ---- a: the environment ---------------------------------------------------------------------
stage_a() {
  local llp="" rc f
  mkdir -p "$GV_RESULTS/env"
  if [ "$GV_MODE" = gpu ]; then
    local args=(--check --results "$GV_RESULTS" --cuda-index "$GV_CUDA_INDEX")
    [ -n "$GV_PACK" ] && args+=(--pack "$GV_PACK")
    bash "$ROOT/scripts/gpu-run.sh" "${args[@]}" > "$GV_STATE/gpu-run-check.log" 2>&1
    rc=$?
    if [ "$rc" -ne 0 ]; then
      finish failed "gpu-run.sh --check exit $rc: $(tail -n1 "$GV_STATE/gpu-run-check.log")"; return
    fi
    # The library path gpu-run.sh found (it records it beside ldd's output).
    f=$(ls -t "$GV_RESULTS"/env/ldd-*.txt 2>/dev/null | head -n1)
    [ -n "$f" ] && llp=$(sed -n 's/^LD_LIBRARY_PATH=//p' "$f" | head -n1)
    [ -n "$llp" ] || { finish failed "gpu-run.sh --check wrote no LD_LIBRARY_PATH line in env/ldd-*.txt"; return; }
  else
    note "skipped: gpu-run.sh --check (dry run: no CUDA pack, no NVIDIA driver); checked with bash -n"
    bash -n "$ROOT/scripts/gpu-run.sh" || { finish failed "bash -n scripts/gpu-run.sh"; return; }
    llp="${LD_LIBRARY_PATH:-}"
  fi
  printf 'export LD_LIBRARY_PATH=%q\n' "$llp" > "$GV_STATE/env.sh"
  load_env
  [ -x "$GV_JB" ] || { finish failed "no joulebench binary at $GV_JB"; return; }
  "$GV_JB" --version > "$GV_RESULTS/env/joulebench-version.txt" 2>&1 ||
    { finish failed "$GV_JB --version: $(tail -n1 "$GV_RESULTS/env/joulebench-version.txt")"; return; }
  "$GV_JB" env --json > "$GV_RESULTS/env/joulebench-env.json" 2> "$GV_STATE/joulebench-env.err" ||
    { finish failed "joulebench env --json: $(tail -n1 "$GV_STATE/joulebench-env.err")"; return; }
  "$GV_JB" env > "$GV_RESULTS/env/joulebench-env.txt" 2>&1
  "$GV_JB" list --json > "$GV_STATE/list.json" 2> "$GV_STATE/list.err" ||
    { finish failed "joulebench list --json: $(tail -n1 "$GV_STATE/list.err")"; return; }
  cp "$GV_STATE/list.json" "$GV_RESULTS/env/joulebench-list.json"
  if "$GV_JB" exec --help > /dev/null 2>&1; then echo yes > "$GV_STATE/has-exec"; fi
  "$GV_PY" - > "$GV_RESULTS/env/python.txt" 2>&1 <<'EOF'
import sys, platform
print("python", sys.version.split()[0], sys.executable, platform.platform())
for m in ("torch", "numpy", "pynvml"):
    try:
        mod = __import__(m)
        extra = ""
        if m == "torch":
            extra = f" cuda {mod.version.cuda} available {mod.cuda.is_available()}"
        print(m, getattr(mod, "__version__", "?"), getattr(mod, "__file__", ""), extra)
    except Exception as e:  # noqa: BLE001 - recorded, not fatal
        print(m, "unavailable:", e)
EOF
  { uname -a; nproc; echo "LD_LIBRARY_PATH=$llp"; echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-}"; } \
    > "$GV_RESULTS/env/machine.txt" 2>&1
  # Every Python helper the later stages run must at least compile here.
  for f in scripts/nvml-probe.py scripts/nvml-reader.py scripts/compare-pytorch.py scripts/tiny-data.py \
           scripts/torch/*.py; do
    [ -f "$f" ] || continue
    "$GV_PY" -m py_compile "$f" 2>> "$GV_STATE/py_compile.err" || { finish failed "python cannot compile $f: $(tail -n1 "$GV_STATE/py_compile.err")"; return; }
  done
  note "joulebench: $(head -n1 "$GV_RESULTS/env/joulebench-version.txt"); exec subcommand: $([ -f "$GV_STATE/has-exec" ] && echo yes || echo no)"
  finish ok
}

# ---- b: what NVML can resolve ---------------------------------------------------------------
stage_b() {
  local rc
  "$GV_PY" -m py_compile "$ROOT/scripts/nvml-probe.py" || { finish failed "scripts/nvml-probe.py does not compile"; return; }
  "$GV_PY" "$ROOT/scripts/nvml-probe.py" --out "$GV_RESULTS/nvml-probe.json" --cuda-index "$GV_CUDA_INDEX" \
    --idle-s "$GV_PROBE_S" 2> "$GV_STATE/nvml-probe.log"
  rc=$?
  cat "$GV_STATE/nvml-probe.log" >&2
  case "$rc" in
    0) note "$(tail -n1 "$GV_STATE/nvml-probe.log")"; finish ok ;;
    3) if dry_skip_or_fail "NVML probe: $(tail -n1 "$GV_STATE/nvml-probe.log")"; then
         finish skipped "no NVML here (the probe compiled)"
       else finish failed "NVML unavailable: $(tail -n1 "$GV_STATE/nvml-probe.log")"; fi ;;
    *) finish failed "nvml-probe.py exit $rc: $(tail -n1 "$GV_STATE/nvml-probe.log")" ;;
  esac
}

# ---- c: the reduced-budget set under the independent reader -----------------------------------
READER_PID=""
stop_reader() {
  [ -n "$READER_PID" ] || return 0
  touch "$GV_STATE/nvml-reader.stop"
  for _ in $(seq 50); do kill -0 "$READER_PID" 2>/dev/null || break; sleep 0.1; done
  kill "$READER_PID" 2>/dev/null
  wait "$READER_PID" 2>/dev/null
  rm -f "$GV_STATE/nvml-reader.stop"
  READER_PID=""
}
start_reader() { # returns 0 running, 3 NVML unavailable, 1 failed
  local trace="$GV_RESULTS/nvml-trace.csv" rows
  "$GV_PY" "$ROOT/scripts/nvml-reader.py" --out "$trace" --cuda-index "$GV_CUDA_INDEX" \
    --interval-ms 50 --stop-file "$GV_STATE/nvml-reader.stop" 2> "$GV_RESULTS/nvml-reader.log" &
  READER_PID=$!
  for _ in $(seq 100); do
    rows=$(grep -vc '^#' "$trace" 2>/dev/null); rows=${rows:-0}
    [ "$rows" -ge 6 ] && return 0 # the header line and five samples
    if ! kill -0 "$READER_PID" 2>/dev/null; then
      wait "$READER_PID"; local rc=$?; READER_PID=""
      [ "$rc" = 2 ] && grep -q 'nvidia-ml-py is not installed\|NVML could not be initialised' \
        "$GV_RESULTS/nvml-reader.log" && return 3
      return 1
    fi
    sleep 0.1
  done
  return 1
}

stage_c() {
  local failed="" t v rc left dd
  load_env
  trap stop_reader EXIT
  # Tasks: the wanted ones this binary lists (or --tasks).
  local have tasks=() variants=()
  have=$(jq_py "$GV_STATE/list.json" "' '.join(t['name'] for t in d['tasks'])") ||
    { finish failed "cannot read joulebench list --json (stage a)"; return; }
  for t in ${GV_TASKS:-$WANTED_TASKS}; do
    if [[ " $have " == *" $t "* ]]; then tasks+=("$t")
    else note "task $t: not in this binary's list (the largest existing tasks stand in)"; fi
  done
  [ ${#tasks[@]} -gt 0 ] || { finish failed "none of the tasks ${GV_TASKS:-$WANTED_TASKS} exist (list: $have)"; return; }
  have=$(jq_py "$GV_STATE/list.json" "' '.join(v['name'] for v in d['variants'])")
  for v in $WANTED_VARIANTS; do
    if [[ " $have " != *" $v "* ]]; then note "variant $v: not in this binary's list"; failed=1
    elif [ "$v" = tf32 ] && [ "$GV_DEVICE" = cpu ]; then note "skipped: variant tf32 on cpu (CUDA only: joulebench exits 2)"
    else variants+=("$v"); fi
  done
  note "tasks: ${tasks[*]}; variants: ${variants[*]}; seeds: $GV_SEEDS; device $GV_DEVICE, meter $GV_METER"
  printf '%s\n' "${tasks[@]}" > "$GV_STATE/tasks.txt"

  # The independent reader, for the whole stage.
  start_reader; rc=$?
  case "$rc" in
    0) note "independent NVML reader running (pid $READER_PID) -> nvml-trace.csv" ;;
    3) dry_skip_or_fail "independent NVML reader: $(tail -n1 "$GV_RESULTS/nvml-reader.log")" || failed=1 ;;
    *) note "FAILED: the independent NVML reader did not start: $(tail -n1 "$GV_RESULTS/nvml-reader.log")"; failed=1 ;;
  esac

  # Calibration: one f32 epoch per task, timed (its own folder: neither ranked nor cross-checked).
  local cal="$GV_STATE/calibration" t0 t1
  mkdir -p "$cal"
  : > "$GV_STATE/calibration.tsv"
  for t in "${tasks[@]}"; do
    dd=$(data_dir_for "$t") || { note "FAILED: no tiny data for $t"; failed=1; continue; }
    left=$(( $(remaining) - 30 )); [ "$left" -gt "$GV_CAL_CAP_S" ] && left=$GV_CAL_CAP_S
    if [ "$left" -lt 5 ]; then
      note "calibration of $t skipped: ${left} s left: its plan uses the prior"
      printf '%s\tskipped\t0\t-\n' "$t" >> "$GV_STATE/calibration.tsv"; continue
    fi
    t0=$(date +%s%N)
    timeout -k 5 "$left" "$GV_JB" run --task "$t" --variant f32 --seeds 1 --device "$GV_DEVICE" \
      --meter "$GV_METER" --idle-s 0 --cooldown-s 0 --full-budget --max-epochs 1 --json \
      ${dd:+--data-dir "$dd"} --results "$cal/$t" < /dev/null > "$GV_STATE/calibration-$t.jsonl" \
      2> "$GV_STATE/calibration-$t.log"
    rc=$?
    t1=$(date +%s%N)
    printf '%s\t%s\t%s\t%s\n' "$t" "$rc" "$(( (t1 - t0) / 1000000 ))" "$cal/$t" >> "$GV_STATE/calibration.tsv"
    if [ "$rc" -ge 124 ]; then note "calibration of $t: over ${left} s (one epoch): its runs go to the target instead"
    elif ! judge "calibration of $t" "$rc" "$GV_STATE/calibration-$t.jsonl" 1 "$GV_STATE/calibration-$t.log"; then
      note "calibration of $t failed: its plan falls back to the prior"; fi
  done

  # The plan: epochs per task from the calibration (or the prior), cheapest task first.
  local prior=""
  for t in "${!PRIOR_EPOCH_S[@]}"; do prior+="$t=${PRIOR_EPOCH_S[$t]} "; done
  left=$(( GV_C_PLAN_S - ($(now) - GV_STAGE_START) ))
  [ "$left" -gt $(( $(remaining) - 15 )) ] && left=$(( $(remaining) - 15 ))
  GV_PLAN_LEFT=$left GV_N_VARIANTS=${#variants[@]} GV_PRIOR="$prior" \
    "$GV_PY" - "$GV_STATE/calibration.tsv" "$GV_STATE/plan.json" > "$GV_STATE/plan.txt" 2> "$GV_STATE/plan.err" <<'EOF'
import glob, json, math, os, sys
e = os.environ
seeds, nv = int(e["GV_SEEDS"]), int(e["GV_N_VARIANTS"])
w_min, w_max = float(e["GV_W_MIN"]), float(e["GV_W_MAX"])
idle, cool, plan_left = float(e["GV_IDLE_S"]), float(e["GV_COOLDOWN_S"]), float(e["GV_PLAN_LEFT"])
cap = float(e["GV_CAL_CAP_S"])
prior = dict(kv.split("=") for kv in e["GV_PRIOR"].split())
runs = seeds * nv
tasks = []
for line in open(sys.argv[1]):
    name, rc, wall_ms, folder = line.rstrip("\n").split("\t")
    t = {"task": name, "calibration_exit": rc, "calibration_wall_s": int(wall_ms) / 1000}
    files = glob.glob(os.path.join(folder, "runs", "*.json"))
    rec = json.load(open(files[0])) if files and rc in ("0", "1") else None
    if rec and rec.get("status") in ("ok", "dnf") and rec["energy"]["window_s"] > 0:
        t["epoch_s"] = rec["energy"]["window_s"]
        t["steps_per_epoch"] = rec.get("steps")
        t["startup_s"] = max(0.0, t["calibration_wall_s"] - t["epoch_s"])
        t["basis"] = "calibration"
        # Enough epochs to reach T with a margin: 1.5 x the epoch where the calibration reached
        # it, or 2 when one epoch did not.
        ttt = rec.get("ttt_s")
        t["epochs_min"] = max(1, math.ceil(1.5 * ttt / t["epoch_s"])) if ttt else 2
    elif rc in ("124", "137"):
        t.update(epoch_s=cap, startup_s=5.0, basis=f"calibration exceeded {cap:g} s")
    else:
        t.update(epoch_s=float(prior.get(name, 10.0)), startup_s=5.0,
                 basis="prior (calibration %s)" % ("skipped" if rc == "skipped" else "failed"))
    t["overhead_s"] = t["startup_s"] + idle + runs * (cool + 0.5)
    tasks.append(t)
if not tasks:
    sys.exit("no task could be planned")
window = (plan_left - sum(t["overhead_s"] for t in tasks)) / (runs * len(tasks))
window = min(max(window, w_min), w_max)
for t in tasks:
    ep = t["epoch_s"]
    if t["basis"].startswith("calibration exceeded"):
        t.update(mode="target", epochs=1)
    else:
        t.update(mode="full-budget", epochs=max(t.get("epochs_min", 1), math.ceil(w_min / ep),
                                                round(window / ep), 1))
    t["predicted_window_s"] = round(t["epochs"] * ep, 2)
    t["predicted_s"] = round(t["overhead_s"] + runs * t["epochs"] * ep, 1)
tasks.sort(key=lambda t: t["predicted_s"])
json.dump({"plan_left_s": plan_left, "window_s": window, "runs_per_task": runs, "tasks": tasks},
          open(sys.argv[2], "w"), indent=2)
for t in tasks:
    print(t["task"], t["epochs"], t["mode"], t["predicted_window_s"], t["predicted_s"], t["basis"].replace(" ", "_"))
EOF
  rc=$?
  [ "$rc" = 0 ] || { finish failed "sizing: $(tail -n1 "$GV_STATE/plan.err")"; return; }
  local vflags=() e mode pw ps basis budget line plan=()
  for v in "${variants[@]}"; do vflags+=(--variant "$v"); done
  mapfile -t plan < "$GV_STATE/plan.txt"
  for line in "${plan[@]}"; do
    read -r t e mode pw ps basis <<< "$line"
    note "plan: $t: --max-epochs $e ($mode, basis ${basis//_/ }): window ~${pw} s, task ~${ps} s"
  done

  # The runs, each task under the time the stage has left.
  for line in "${plan[@]}"; do
    read -r t e mode pw ps basis <<< "$line"
    left=$(( $(remaining) - 10 ))
    if [ "$left" -lt 10 ]; then note "FAILED: task $t not run: only ${left} s left in the stage"; failed=1; continue; fi
    dd=$(data_dir_for "$t") || { failed=1; continue; }
    budget=(--max-epochs "$e"); [ "$mode" = full-budget ] && budget+=(--full-budget)
    local cmd=("$GV_JB" run --task "$t" "${vflags[@]}" --seeds "$GV_SEEDS" --device "$GV_DEVICE"
               --meter "$GV_METER" --idle-s "$GV_IDLE_S" --cooldown-s "$GV_COOLDOWN_S" "${budget[@]}"
               ${dd:+--data-dir "$dd"} --results "$GV_RESULTS" --json)
    echo "${cmd[*]}" >> "$GV_STATE/commands.txt"
    note "joulebench run --task $t (${#variants[@]} variants x $GV_SEEDS seeds, ${budget[*]}), limit ${left} s"
    timeout -k 5 "$left" "${cmd[@]}" < /dev/null > "$GV_STATE/runs-$t.jsonl" 2> "$GV_STATE/runs-$t.log"
    rc=$?
    judge "joulebench run --task $t" "$rc" "$GV_STATE/runs-$t.jsonl" $(( ${#variants[@]} * GV_SEEDS )) \
      "$GV_STATE/runs-$t.log" || failed=1
  done
  stop_reader
  local n; n=$(ls "$GV_RESULTS"/runs/*.json 2>/dev/null | wc -l)
  note "run files: $n"
  if [ -n "$failed" ]; then finish failed "see the notes above"; else finish ok; fi
}

# ---- d: joulebench vs the independent reader -------------------------------------------------
stage_d() {
  local trace="$GV_RESULTS/nvml-trace.csv" rc compared
  load_env
  if [ ! -s "$trace" ]; then
    if dry_skip_or_fail "crosscheck: no reader trace (stage c's reader did not run)"; then
      finish skipped "no trace"; else finish failed "no reader trace"; fi
    return
  fi
  "$GV_JB" crosscheck --trace "$trace" --out "$GV_RESULTS/crosscheck.json" "$GV_RESULTS" \
    > "$GV_STATE/crosscheck.log" 2>&1
  rc=$?
  cat "$GV_STATE/crosscheck.log" >&2
  grep 'compared run(s) within' "$GV_STATE/crosscheck.log" | tail -n1 > "$GV_STATE/crosscheck-verdict.txt"
  compared=$(jq_py "$GV_RESULTS/crosscheck.json" "d['compared']" 2>/dev/null || echo "?")
  note "crosscheck: exit $rc, $(cat "$GV_STATE/crosscheck-verdict.txt")"
  if [ "$rc" = 0 ]; then finish ok
  elif [ "$rc" = 1 ] && [ "$compared" = 0 ]; then
    if dry_skip_or_fail "crosscheck: no run has GPU energy to compare (the trace was read, every run listed)"; then
      finish skipped "nothing to compare on $GV_DEVICE"; else finish failed "no run could be compared"; fi
  elif [ "$rc" = 1 ]; then finish failed "a compared run disagrees beyond the tolerance"
  else finish failed "joulebench crosscheck exit $rc: $(tail -n1 "$GV_STATE/crosscheck.log")"; fi
}

# ---- e: PyTorch beside candle ------------------------------------------------------------------
# Stage c's budget for a task, for its torch program: prints "EPOCHS STEPS" (the plan's epochs,
# the steps its f32 seed-1 run took), or nothing when stage c has no such run.
budget_of() {
  local f e
  f=$(ls "$GV_RESULTS"/runs/"$1"--f32--seed-1--*.json 2>/dev/null | head -n1)
  e=$(awk -v t="$1" '$1 == t && $3 == "full-budget" {print $2}' "$GV_STATE/plan.txt" 2>/dev/null)
  [ -n "$f" ] && [ -n "$e" ] && echo "$e $(jq_py "$f" "d['steps']")"
}
# A copy of the task file with [budget] max_epochs = E (the torch programs cap, never extend, by steps).
task_file_with_epochs() { # task_file_with_epochs TASK EPOCHS -> prints the path
  local out="$GV_STATE/torch-task-$1.toml"
  "$GV_PY" - "${JOULEBENCH_MODELS:-$ROOT/models}/$1.toml" "$2" "$out" <<'EOF' || return 1
import re, sys
src, epochs, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
text = open(src).read()
head, sep, tail = text.partition("[budget]")
if not sep:
    sys.exit(f"{src}: no [budget] table")
tail, n = re.subn(r"(?m)^max_epochs\s*=\s*\d+", f"max_epochs = {epochs}", tail, count=1)
if n != 1:
    sys.exit(f"{src}: no budget.max_epochs")
open(out, "w").write(head + sep + tail)
EOF
  echo "$out"
}
stage_e() {
  local failed="" t v rc left tdev kind ds prog steps="" dd
  load_env
  if ! "$GV_PY" -c 'import torch' 2> "$GV_STATE/torch-import.err"; then
    if dry_skip_or_fail "PyTorch: $GV_PY cannot import torch ($(tail -n1 "$GV_STATE/torch-import.err"))"; then
      finish skipped "no torch"; else finish failed "no torch"; fi
    return
  fi
  tdev=cuda; [ "$GV_DEVICE" = cpu ] && tdev=cpu
  local tasks; tasks=$(cat "$GV_STATE/tasks.txt" 2>/dev/null)
  [ -n "$tasks" ] || { finish failed "no tasks from stage c"; return; }
  # 1. compare-pytorch.py: step time, candle against PyTorch, for the tasks it mirrors.
  for t in $tasks; do
    ds=$(jq_py "$GV_STATE/list.json" "next(x['dataset'] for x in d['tasks'] if x['name'] == '$t')")
    kind=$(jq_py "$GV_STATE/list.json" "next(x['model'] for x in d['tasks'] if x['name'] == '$t')")
    if [ "$ds" != mnist ] || { [ "$kind" != mlp ] && [ "$kind" != cnn ]; }; then
      note "compare-pytorch: $t skipped (it mirrors MNIST MLP/CNN tasks only; $t is $ds/$kind)"; continue
    fi
    left=$(( $(remaining) - 10 ))
    [ "$left" -ge 10 ] || { note "FAILED: compare-pytorch $t not run: ${left} s left"; failed=1; continue; }
    timeout -k 5 "$left" "$GV_PY" "$ROOT/scripts/compare-pytorch.py" --device "$tdev" --tasks "$t" \
      --steps "$GV_CMP_STEPS" --warmup "$GV_CMP_WARMUP" --rounds "$GV_CMP_ROUNDS" --joulebench "$GV_JB" \
      --out "$GV_RESULTS/compare-pytorch-$t.json" < /dev/null > "$GV_RESULTS/compare-pytorch-$t.log" 2>&1
    rc=$?
    if [ "$rc" = 0 ]; then note "compare-pytorch $t: $(tail -n1 "$GV_RESULTS/compare-pytorch-$t.log")"
    else note "FAILED: compare-pytorch $t: exit $rc: $(tail -n1 "$GV_RESULTS/compare-pytorch-$t.log")"; failed=1; fi
  done
  # 2. scripts/torch/<task>.py under joulebench exec: energy to target, same budget as stage c.
  if [ ! -f "$GV_STATE/has-exec" ]; then
    note "skipped: joulebench exec (this binary has no exec subcommand)"
  else
    for v in $EXEC_VARIANTS; do
      for t in $tasks; do
        # A family's CPU member (`-mini`) runs the family's program on its own task file.
        local fam="${t%-mini}"
        prog="$ROOT/scripts/torch/${fam//-/_}.py"
        [ -f "$prog" ] || { [ "$v" = f32 ] && note "exec: $t skipped (no scripts/torch/${fam//-/_}.py)"; continue; }
        left=$(( $(remaining) - 10 ))
        [ "$left" -ge 15 ] || { note "FAILED: exec $t $v not run: ${left} s left"; failed=1; continue; }
        dd=$(data_dir_for "$t") || { failed=1; continue; }
        local budget=() tf eps
        read -r eps steps <<< "$(budget_of "$t")"
        if [ -n "${steps:-}" ] && tf=$(task_file_with_epochs "$t" "$eps"); then
          budget=(--task-file "$tf" --full-budget --max-steps "$steps")
        else
          budget=(--task-file "${JOULEBENCH_MODELS:-$ROOT/models}/$t.toml")
          note "exec $t $v: no stage c budget to mirror: the program's own (to the target)"
        fi
        local cmd=("$GV_JB" exec --task "$t" --seeds "$GV_EXEC_SEEDS" --variant-label "$v" --device "$GV_DEVICE"
                   --meter "$GV_METER" --results "$GV_RESULTS" --idle-s "$GV_EXEC_IDLE_S" --cooldown-s "$GV_COOLDOWN_S"
                   --max-time-s "$GV_EXEC_MAX_S" --json --
                   "$GV_PY" "$prog" --seed '{seed}' --precision "$v" --device "$tdev" "${budget[@]}"
                   ${dd:+--data-dir "$dd"})
        echo "${cmd[*]}" >> "$GV_STATE/commands.txt"
        note "exec $t $v ($GV_EXEC_SEEDS seeds, ${budget[*]:-the task budget}), limit ${left} s"
        timeout -k 5 "$left" "${cmd[@]}" < /dev/null > "$GV_STATE/exec-$t-$v.jsonl" 2> "$GV_STATE/exec-$t-$v.log"
        rc=$?
        judge "exec $t $v" "$rc" "$GV_STATE/exec-$t-$v.jsonl" "$GV_EXEC_SEEDS" "$GV_STATE/exec-$t-$v.log" || failed=1
      done
    done
  fi
  if [ -n "$failed" ]; then finish failed "see the notes above"; else finish ok; fi
}

# ---- f: the leaderboard -------------------------------------------------------------------------
stage_f() {
  local rc
  load_env
  "$GV_JB" report "$GV_RESULTS" > "$GV_STATE/report.log" 2>&1
  rc=$?
  [ "$rc" = 0 ] || { finish failed "joulebench report exit $rc: $(tail -n1 "$GV_STATE/report.log")"; return; }
  ls "$GV_RESULTS"/leaderboard.* > /dev/null 2>&1 || { finish failed "joulebench report wrote no leaderboard file"; return; }
  note "leaderboard: $(cd "$GV_RESULTS" && ls leaderboard.* | tr '\n' ' ')"
  finish ok
}

# =============================================================================================
# A stage process: `gpu-validate.sh --stage X`, started by the driver below with GV_* set.
# =============================================================================================
if [ "${1:-}" = --stage ]; then
  GV_STAGE="${2:?--stage needs a letter}"
  [ -n "${GV_RESULTS:-}" ] || die "--stage is internal: run the script without it"
  "stage_$GV_STAGE"
  exit $?
fi

# =============================================================================================
# The driver.
# =============================================================================================
MODE=gpu
JB=""
RESULTS=""
OUT_TAR=""
PACK=""
CUDA_INDEX=0
TASKS=""
FAKE_NVML=1
PY="${PYTHON:-python3}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) MODE=dry; shift ;;
    --joulebench) JB="${2:?--joulebench needs a path}"; shift 2 ;;
    --results) RESULTS="${2:?--results needs a folder}"; shift 2 ;;
    --out-tar) OUT_TAR="${2:?--out-tar needs a folder}"; shift 2 ;;
    --pack) PACK="${2:?--pack needs a file}"; shift 2 ;;
    --cuda-index) CUDA_INDEX="${2:?--cuda-index needs a number}"; shift 2 ;;
    --tasks) TASKS="${2:?--tasks needs names}"; shift 2 ;;
    --python) PY="${2:?--python needs an interpreter}"; shift 2 ;;
    --no-fake-nvml) FAKE_NVML=0; shift ;;
    -h|--help) sed -n '2,/^# shellcheck disable/p' "$0" | sed '$d'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case "$CUDA_INDEX" in ''|*[!0-9]*) die "--cuda-index '$CUDA_INDEX': expected a number" ;; esac
abs() { case "$1" in ''|/*) echo "$1" ;; *) echo "$CALLER_PWD/$1" ;; esac; } # paths as the caller meant them
JB=$(abs "$JB"); RESULTS=$(abs "$RESULTS"); OUT_TAR=$(abs "$OUT_TAR"); PACK=$(abs "$PACK")
command -v timeout > /dev/null || die "timeout (coreutils) not found"
command -v "$PY" > /dev/null || die "python '$PY' not found"
PY=$(abs "$(command -v "$PY")") # absolute, symlinks kept (a venv's python is one)
T_START=$(now)

if [ "$MODE" = gpu ]; then
  command -v nvidia-smi > /dev/null || die "nvidia-smi not found: no NVIDIA driver on this machine (--dry-run runs without one)"
  GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader -i "$CUDA_INDEX" 2>/dev/null | head -n1)
  [ -n "$GPU_NAME" ] || die "nvidia-smi cannot read GPU $CUDA_INDEX"
  SLUG=$(echo "$GPU_NAME" | tr '[:upper:]' '[:lower:]' | sed -e 's/^nvidia //' -e 's/[^a-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')
  if [ -z "$JB" ]; then # where gpu-run.sh --check (stage a) unpacks the binary
    if [ -x "$ROOT/joulebench" ] && [ -f "$ROOT/BUILD-INFO.txt" ]; then
      JB="$ROOT/joulebench"; PACK_DIR="$ROOT"
    else
      [ -n "$PACK" ] || PACK=$(ls -t "$ROOT"/.cuda-pack/joulebench-cuda-sm*.tar.gz 2>/dev/null | head -n1)
      { [ -n "$PACK" ] && [ -f "$PACK" ]; } || die "no CUDA pack (build one with scripts/build-cuda.sh into .cuda-pack/ and carry it, or pass --pack FILE)"
      PACK_DIR="$(cd "$(dirname "$PACK")" && pwd)/$(basename "$PACK" .tar.gz)"
      JB="$PACK_DIR/joulebench"
    fi
    [ -d "$PACK_DIR/models" ] && export JOULEBENCH_MODELS="${JOULEBENCH_MODELS:-$PACK_DIR/models}"
  fi
  DEFAULT_RESULTS="$ROOT/results/$(date -u +%F)-$SLUG"
  DEVICE="cuda:$CUDA_INDEX"; METER=auto
  GV_TINY=0 GV_SEEDS=2 GV_PROBE_S=20 GV_IDLE_S=5 GV_COOLDOWN_S=2 GV_C_PLAN_S=215 GV_CAL_CAP_S=40
  GV_W_MIN=8 GV_W_MAX=30 GV_CMP_STEPS=50 GV_CMP_WARMUP=10 GV_CMP_ROUNDS=3
  GV_EXEC_SEEDS=2 GV_EXEC_IDLE_S=3 GV_EXEC_MAX_S=90
else
  if [ -z "$JB" ]; then
    for c in "$ROOT/target/release/joulebench" "$ROOT/target/debug/joulebench"; do
      [ -x "$c" ] && { JB="$c"; break; }
    done
    [ -n "$JB" ] || die "no joulebench binary (target/release or target/debug): build one, or pass --joulebench PATH"
  fi
  GPU_NAME="none (dry run: cpu)"
  if [ -z "$RESULTS" ]; then
    TMP_ROOT=$(mktemp -d "${TMPDIR:-/tmp}/gpu-validate-dry.XXXXXX") || die "mktemp failed"
    RESULTS="$TMP_ROOT/$(date -u +%F)-dry-run-cpu"
  fi
  DEVICE=cpu; METER=estimate
  export JOULEBENCH_MODELS="${JOULEBENCH_MODELS:-$ROOT/models}"
  # The fake pynvml (tests/fixtures): the probe and the reader run end to end, labelled "fake".
  if [ "$FAKE_NVML" = 1 ] && ! "$PY" -c 'import pynvml' 2>/dev/null && [ -f "$ROOT/tests/fixtures/fake-pynvml/pynvml.py" ]; then
    export PYTHONPATH="$ROOT/tests/fixtures/fake-pynvml${PYTHONPATH:+:$PYTHONPATH}"
    export FAKE_NVML_SQUARE="${FAKE_NVML_SQUARE:-60,300,0.5}"
    GPU_NAME="none (dry run: cpu; NVML is tests/fixtures/fake-pynvml)"
  fi
  GV_TINY=1 GV_SEEDS=2 GV_PROBE_S=2 GV_IDLE_S=1 GV_COOLDOWN_S=0 GV_C_PLAN_S=45 GV_CAL_CAP_S=40
  GV_W_MIN=0.3 GV_W_MAX=2 GV_CMP_STEPS=3 GV_CMP_WARMUP=1 GV_CMP_ROUNDS=1
  GV_EXEC_SEEDS=1 GV_EXEC_IDLE_S=1 GV_EXEC_MAX_S=60 # torch starts slowly on 2 cores: 1 seed
fi
[ -x "$JB" ] || [ "$MODE" = gpu ] || die "joulebench binary $JB is not executable"
if [ -z "$RESULTS" ]; then # never mix two calls in one folder
  RESULTS="$DEFAULT_RESULTS"; k=2
  while [ -e "$RESULTS" ]; do RESULTS="$DEFAULT_RESULTS-$k"; k=$((k + 1)); done
fi
if [ "$MODE" = dry ]; then
  p=$(realpath -m "$RESULTS")
  case "$p/" in "$(realpath -m "$ROOT/results")/"*) die "the dry run never writes into the committed results/ ($p)" ;; esac
fi
mkdir -p "$RESULTS/validate" || die "cannot create $RESULTS"
RESULTS="$(cd "$RESULTS" && pwd)"
if [ -n "$OUT_TAR" ]; then mkdir -p "$OUT_TAR" || die "cannot create $OUT_TAR"; OUT_TAR="$(cd "$OUT_TAR" && pwd)"; fi
export PYTHONPYCACHEPREFIX="$RESULTS/validate/pycache" # py_compile leaves nothing in scripts/
export PYTHONUNBUFFERED=1
export JOULEBENCH_DATA="${JOULEBENCH_DATA:-$ROOT/data}"
export GV_MODE="$MODE" GV_RESULTS="$RESULTS" GV_STATE="$RESULTS/validate" GV_JB="$JB" GV_PY="$PY"
if [ "$MODE" = dry ] && [ -z "$TASKS" ]; then
  TASKS="mnist-cnn text-charlm shakespeare-gpt-mini fashion-resnet-mini"
fi
export GV_DEVICE="$DEVICE" GV_METER="$METER" GV_CUDA_INDEX="$CUDA_INDEX" GV_PACK="$PACK" GV_TASKS="$TASKS"
export GV_TINY GV_SEEDS GV_PROBE_S GV_IDLE_S GV_COOLDOWN_S GV_C_PLAN_S GV_CAL_CAP_S GV_W_MIN GV_W_MAX
export GV_CMP_STEPS GV_CMP_WARMUP GV_CMP_ROUNDS GV_EXEC_SEEDS GV_EXEC_IDLE_S GV_EXEC_MAX_S

log "gpu-validate.sh ($MODE) start: GPU $GPU_NAME; binary $JB; device $DEVICE, meter $METER; results $RESULTS"
declare -A RESULT
worst=0
for s in "${STAGES[@]}"; do
  limit=${STAGE_CAP[$s]}
  t0=$(now)
  log "stage $s ${STAGE_NAME[$s]}: start (limit ${limit} s)"
  rm -f "$GV_STATE/$s.status"
  GV_STAGE_START=$t0 GV_STAGE_DEADLINE=$((t0 + limit)) \
    timeout -k 5 "$limit" bash "$SELF" --stage "$s" < /dev/null > "$GV_STATE/stage-$s.log" 2>&1
  rc=$?
  t1=$(now)
  timed_out=no; [ "$rc" = 124 ] || [ "$rc" = 137 ] && timed_out=yes
  st=$(cat "$GV_STATE/$s.status" 2>/dev/null)
  if [ "$timed_out" = yes ]; then st="failed: timed out after ${limit} s"
  elif [ -z "$st" ]; then st="failed: exit $rc without a status (see validate/stage-$s.log)"
  elif [ "$rc" != 0 ] && [ "${st%%:*}" != failed ]; then st="failed: exit $rc ($st)"; fi
  RESULT[$s]="$st"
  [ "${st%%:*}" = failed ] && worst=1
  log "stage $s ${STAGE_NAME[$s]}: end, $((t1 - t0)) s, exit $rc, timed out: $timed_out, $st"
done

# ---- summary (and the tarball) --------------------------------------------------------------------
n_runs=$(ls "$RESULTS"/runs/*.json 2>/dev/null | wc -l)
verdict=$(cat "$GV_STATE/crosscheck-verdict.txt" 2>/dev/null); verdict=${verdict:-none (see stage d)}
probe="none"
[ -f "$RESULTS/nvml-probe.json" ] && probe=$(jq_py "$RESULTS/nvml-probe.json" \
  "'counter %s, resolution %s mJ, power changes every %s ms, idle %s W, pynvml %s' % ('present' if d['energy_counter']['present'] else 'ABSENT', d['energy_counter']['resolution_mj'], ((d['power']['field_186_instant']['value_change_interval_ms'] or d['power']['power_usage']['value_change_interval_ms'] or {}).get('median')), ((d['power']['field_186_instant']['idle_w'] or d['power']['power_usage']['idle_w'] or {}).get('mean')), d['pynvml_version'])" 2>/dev/null)
{
  echo "gpu-validate.sh ($MODE), $(stamp), $(( $(now) - T_START )) s: exit $worst"
  echo "GPU: $GPU_NAME; binary: $JB ($(head -n1 "$RESULTS/env/joulebench-version.txt" 2>/dev/null))"
  for s in "${STAGES[@]}"; do printf '  %s %-11s %s\n' "$s" "${STAGE_NAME[$s]}" "${RESULT[$s]}"; done
  grep -h '\] skipped: \|\] FAILED: ' "$RESULTS/validate.log" | sed 's/^[^ ]* */    /'
  echo "run files: $n_runs in $RESULTS/runs"
  echo "NVML probe: ${probe:-unreadable}"
  echo "crosscheck: $verdict"
  echo "results: $RESULTS (validate.log, validate/stage-*.log)"
} > "$RESULTS/summary.txt"
if [ -n "$OUT_TAR" ]; then
  tarball="$OUT_TAR/$(basename "$RESULTS").tar.gz"
  if tar -C "$(dirname "$RESULTS")" --exclude="$(basename "$RESULTS")/validate/pycache" \
       --exclude="$(basename "$RESULTS")/validate/tiny-data" -czf "$tarball" "$(basename "$RESULTS")"; then
    size=$(stat -c %s "$tarball")
    over=""
    if [ "$size" -gt 16777216 ]; then over=", OVER the 16 MiB one file may bring back"; worst=1; fi
    echo "tarball: $tarball ($size bytes$over)" >> "$RESULTS/summary.txt"
  else
    echo "tarball: FAILED to write $tarball" >> "$RESULTS/summary.txt"; worst=1
  fi
  cp "$RESULTS/summary.txt" "$OUT_TAR/summary.txt"
fi
cat "$RESULTS/summary.txt"
exit "$worst"
