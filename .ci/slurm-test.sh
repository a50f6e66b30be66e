#!/usr/bin/env bash
# A real Slurm on this machine (issue 5; docs/design/scale-out.md): install Debian's
# slurm-wlm, start munged, slurmctld and slurmd on localhost, then
#   1. run a 4-run digits-mlp sweep as a four-task array with the script `sweep emit slurm`
#      prints (the merge job chained with afterany), and compare the merged folder with the
#      same plan run in one process: the same run ids and statuses;
#   2. delete two results and resubmit the --array= list merge prints: exactly those two are
#      recomputed, the other two are untouched;
#   3. scancel a task mid-run: no partial run file, and merge reports the run missing;
#   4. a suite whose [[exec]] program (tests/fixtures/exec/fake-trainer.sh) trains beside
#      joulebench's own runs, as a two-task array: every entry present after the merge, the
#      program's runs recorded as exec runs under Slurm, with their logs.
# The daemons are stopped by the PIDs in their pid files, never by name.
# Skips (exit 0, one line saying why) when not root or when apt cannot install slurm-wlm;
# JOULEBENCH_REQUIRE_SLURM=1 turns a skip into a failure. Bounded: every wait has a deadline.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

skip() {
  if [ "${JOULEBENCH_REQUIRE_SLURM:-0}" = 1 ]; then echo "slurm-test: FAILED: $*" >&2; exit 1; fi
  echo "slurm-test: SKIPPED: $*"
  exit 0
}
fail() { echo "slurm-test: FAILED: $*" >&2; exit 1; }
say() { echo "slurm-test: $*"; }

[ "$(id -u)" = 0 ] || skip "needs root (installs slurm-wlm, starts munged, slurmctld and slurmd)"
if ! command -v sbatch >/dev/null || ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null || skip "no apt-get to install slurm-wlm"
  say "installing slurm-wlm from apt"
  env DEBIAN_FRONTEND=noninteractive timeout 900 apt-get -o DPkg::Lock::Timeout=600 update -qq \
    || skip "apt-get update failed"
  env DEBIAN_FRONTEND=noninteractive timeout 900 apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends slurm-wlm >/dev/null || skip "apt-get install slurm-wlm failed"
fi

cargo build --locked -q
# The binary cargo just built, wherever CARGO_TARGET_DIR puts it.
target_dir=$(cargo metadata --format-version 1 --no-deps --locked | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
jb="${target_dir:-$repo/target}/debug/joulebench"
[ -x "$jb" ] || fail "no $jb"

w=$(mktemp -d /tmp/jb-slurm.XXXXXX)
chmod 755 "$w"
pids=()
cleanup() {
  for f in "$w"/run/slurmd.pid "$w"/run/slurmctld.pid /run/munge/munged.pid; do
    if [ -s "$f" ] && [[ " ${pids[*]} " == *" $f "* ]]; then
      pid=$(cat "$f")
      kill "$pid" 2>/dev/null || true
      # slurmctld saves its state on SIGTERM: wait (at most 15 s) before removing the folder.
      for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  done
  # Never let cleanup turn a passed test into a failure.
  if [ "${JOULEBENCH_KEEP_SLURM_DIR:-0}" != 1 ]; then rm -rf "$w" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# --- start Slurm --------------------------------------------------------------------------
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)
mkdir -p "$w/run" "$w/state" "$w/spool" "$w/log"
chown -R slurm:slurm "$w/run" "$w/state" "$w/log" 2>/dev/null || true
export SLURM_CONF="$w/slurm.conf"
cat >"$SLURM_CONF" <<EOF
ClusterName=jbtest
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=$w/state
SlurmdSpoolDir=$w/spool
SlurmctldPidFile=$w/run/slurmctld.pid
SlurmdPidFile=$w/run/slurmd.pid
SlurmctldLogFile=$w/log/slurmctld.log
SlurmdLogFile=$w/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
if ! [ -s /run/munge/munged.pid ] || ! kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null; then
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
  runuser -u munge -- /usr/sbin/munged || fail "munged did not start"
  pids+=("/run/munge/munged.pid")
fi
/usr/sbin/slurmctld -f "$SLURM_CONF" || fail "slurmctld did not start (see $w/log)"
pids+=("$w/run/slurmctld.pid")
/usr/sbin/slurmd -f "$SLURM_CONF" -N localhost || fail "slurmd did not start (see $w/log)"
pids+=("$w/run/slurmd.pid")
deadline=$((SECONDS + 60))
until [ "$(sinfo -h -N -o %T 2>/dev/null | head -1)" = idle ]; do
  [ $SECONDS -lt $deadline ] || { tail -5 "$w"/log/*.log >&2; fail "node not idle within 60 s"; }
  sleep 0.5
done
say "slurm up: $(sinfo -h -N -o '%N %T %c CPUs')"

# Wait until none of the given jobs is in the queue (sbatch --wait polls slowly).
wait_jobs() {
  local deadline=$((SECONDS + $1)); shift
  while [ -n "$(squeue -h -j "$1" -o %i 2>/dev/null)" ]; do
    [ $SECONDS -lt $deadline ] || { squeue >&2; fail "jobs $1 still queued after the deadline"; }
    sleep 0.5
  done
}

# run file -> "entry_id status", sorted.
ids_and_status() {
  for f in "$1"/runs/*.json; do
    e=$(grep -o '"entry_id": "[^"]*"' "$f" | cut -d'"' -f4)
    s=$(grep -o '"status": "[^"]*"' "$f" | head -1 | cut -d'"' -f4)
    echo "$(basename "$f") $e $s"
  done | sort
}

# --- 1. the sweep as a four-task array ------------------------------------------------------
cat >"$w/suite.toml" <<'EOF'
name = "slurm-ci"
description = "digits-mlp, 4 seeds, for the Slurm CI test"
tasks = ["digits-mlp"]
variants = ["f32"]
seeds = 4
order = "interleaved"
idle_s = 0.0
cooldown_s = 0.0
EOF
"$jb" sweep plan --config "$w/suite.toml" --out "$w/plan.json"
"$jb" sweep emit slurm --plan "$w/plan.json" --shard-count 4 --results "$w/res" \
  --isolation none --cpus-per-task 1 --time 00:20:00 --joulebench "$jb" \
  --sweep-args "--meter estimate --device cpu" >"$w/sweep.sbatch"
submitted=$(bash "$w/sweep.sbatch")
say "$submitted"
array_id=$(echo "$submitted" | sed -n 's/^array job \([0-9]*\), merge job \([0-9]*\).*/\1/p')
merge_id=$(echo "$submitted" | sed -n 's/^array job \([0-9]*\), merge job \([0-9]*\).*/\2/p')
[ -n "$array_id" ] && [ -n "$merge_id" ] || fail "could not read job ids from: $submitted"
t0=$SECONDS
wait_jobs 900 "$array_id,$merge_id"
say "array and merge done in $((SECONDS - t0)) s"
merge_log="$w/res/logs/merge-$merge_id.out"
cat "$merge_log"
grep -q "4 of 4 entries present" "$merge_log" || fail "merge did not find the 4 runs"
for i in 0 1 2 3; do
  [ "$(ls "$w/res/shards/$i/runs/" | grep -c '\.json$')" = 1 ] || fail "shard $i has not exactly one run"
  grep -q '"engine": "slurm"' "$w"/res/shards/$i/runs/*.json || fail "shard $i run does not record slurm"
done
"$jb" sweep --plan "$w/plan.json" --results "$w/one" --meter estimate --device cpu >/dev/null 2>&1 \
  || fail "the one-process sweep failed"
diff <(ids_and_status "$w/res" | cut -d' ' -f2-) <(ids_and_status "$w/one" | cut -d' ' -f2-) \
  || fail "array+merge and one process differ in run ids or statuses"
diff <(ls "$w/res/runs") <(ls "$w/one/runs") || fail "run file names differ"
say "array + merge == one process: $(ids_and_status "$w/res" | awk '{print $3}' | sort | uniq -c | xargs)"

# --- 2. delete two results, resubmit what merge names ----------------------------------------
sums_before=$(cd "$w/res/shards" && sha256sum */runs/*.json)
rm "$w"/res/shards/1/runs/*.json "$w"/res/shards/3/runs/*.json
set +e
check=$("$jb" merge "$w"/res/shards/{0,1,2,3} --into "$w/check" --plan "$w/plan.json" --shard-count 4)
rc=$?
set -e
echo "$check"
[ $rc = 1 ] || fail "merge of an incomplete sweep exited $rc, not 1"
array=$(echo "$check" | sed -n 's/^resubmit: --array=\([0-9,-]*\).*/\1/p')
[ "$array" = "1,3" ] || fail "resubmit list '$array', expected 1,3"
submitted=$(bash "$w/sweep.sbatch" --array="$array")
say "resubmitted: $submitted"
array_id=$(echo "$submitted" | sed -n 's/^array job \([0-9]*\), merge job \([0-9]*\).*/\1/p')
merge_id=$(echo "$submitted" | sed -n 's/^array job \([0-9]*\), merge job \([0-9]*\).*/\2/p')
wait_jobs 600 "$array_id,$merge_id"
grep -q "4 of 4 entries present" "$w/res/logs/merge-$merge_id.out" || fail "merge after resubmit incomplete"
sums_after=$(cd "$w/res/shards" && sha256sum */runs/*.json)
changed=$( (diff <(echo "$sums_before") <(echo "$sums_after") || true) | grep '^>' | awk '{print $3}' | cut -d/ -f1 | sort | xargs)
[ "$changed" = "1 3" ] || fail "recomputed shards '$changed', expected exactly '1 3'"
say "resubmit recomputed exactly shards $changed; the others untouched"

# --- 3. scancel mid-run: no partial run file ----------------------------------------------
rm "$w"/res/shards/2/runs/*.json
job=$(sbatch --parsable --array=2 "$w/sweep.sbatch")
job=${job%%;*}
deadline=$((SECONDS + 300))
# Wait until the task runs, or has already left the queue (digits-mlp can finish between two
# polls on an idle machine; the merge below then checks that its run file is complete).
until state=$(squeue -h -j "$job" -o %T 2>/dev/null | head -1)
  [ "$state" = RUNNING ] || [ -z "$state" ]; do
  [ $SECONDS -lt $deadline ] || fail "task never ran (state '$state' after 300 s)"
  sleep 0.2
done
scancel "$job"
wait_jobs 120 "$job"
# digits-mlp trains in about a second, so the task may have finished before the cancel
# reached it: either way there must be no partial run file (only complete, readable ones).
set +e
out=$("$jb" merge "$w"/res/shards/{0,1,2,3} --into "$w/check2" --plan "$w/plan.json" --shard-count 4 2>&1)
set -e
echo "$out"
if echo "$out" | grep -q "not a run file"; then fail "a partial run file after scancel"; fi
if echo "$out" | grep -q "resubmit: --array=2"; then
  say "scancel mid-run left no run file; merge names --array=2"
elif echo "$out" | grep -q "4 of 4 entries present"; then
  say "the task finished before scancel reached it; its run file is complete"
else
  fail "unexpected merge result after scancel"
fi

# --- 4. an [[exec]] entry under Slurm ----------------------------------------------------------
cat >"$w/suite-exec.toml" <<EOF
name = "slurm-ci-exec"
description = "digits-mlp by joulebench and by a foreign program, for the Slurm CI test"
tasks = ["digits-mlp"]
variants = ["f32"]
seeds = 1
order = "interleaved"
idle_s = 0.0
cooldown_s = 0.0

[[exec]]
name = "fake"
command = ["bash", "$repo/tests/fixtures/exec/fake-trainer.sh", "ok", "--seed", "{seed}"]
tasks = ["digits-mlp"]
variants = ["f32"]
EOF
"$jb" sweep plan --config "$w/suite-exec.toml" --out "$w/plan-exec.json"
"$jb" sweep emit slurm --plan "$w/plan-exec.json" --shard-count 2 --results "$w/res-exec" \
  --isolation none --cpus-per-task 1 --time 00:20:00 --joulebench "$jb" \
  --sweep-args "--meter estimate --device cpu" >"$w/sweep-exec.sbatch"
submitted=$(bash "$w/sweep-exec.sbatch")
say "$submitted"
array_id=$(echo "$submitted" | sed -n 's/^array job \([0-9]*\), merge job \([0-9]*\).*/\1/p')
merge_id=$(echo "$submitted" | sed -n 's/^array job \([0-9]*\), merge job \([0-9]*\).*/\2/p')
[ -n "$array_id" ] && [ -n "$merge_id" ] || fail "could not read job ids from: $submitted"
wait_jobs 600 "$array_id,$merge_id"
cat "$w/res-exec/logs/merge-$merge_id.out"
grep -q "2 of 2 entries present" "$w/res-exec/logs/merge-$merge_id.out" || fail "merge did not find the 2 exec-suite runs"
exec_run=$(grep -l '"kind": "exec"' "$w"/res-exec/runs/*.json | head -1)
[ -n "$exec_run" ] || fail "no exec run in the merged folder"
grep -q '"engine": "slurm"' "$exec_run" || fail "the exec run does not record slurm"
grep -q '"status": "ok"' "$exec_run" || fail "the exec run is not ok"
id=$(basename "$exec_run" .json)
[ -s "$w/res-exec/logs/$id.log" ] || fail "the exec run's log was not merged"
say "an [[exec]] entry ran as a Slurm array task and merged with its log"
say "PASSED"
