#!/usr/bin/env python3
"""Run MLCommons' MLPerf Training compliance checker on joulebench event logs.

For each LOG (an `events/<run>.mllog` of a results folder, or a folder, meaning its
`events/*.mllog`): `python -m mlperf_logging.compliance_checker --usage training --ruleset
6.1.0 --config <joulebench config> LOG`, and a verdict line. Exit 0 when every log passes with
zero errors, 1 when any fails, 2 on bad input.

Why a config of our own: the checker's `common.yaml` (every rule below applies unchanged)
ends by loading `training_6.1.0/<division>_common.yaml`, whose only rule is that
`submission_benchmark` is one of MLPerf's seven benchmarks, and then that benchmark's own
rules (its target, hyperparameters, dataset sizes). joulebench's tasks are not those
benchmarks, so the config written here is the package's `common.yaml` with that one step
replaced: `submission_benchmark` must name a joulebench task (a `models/*.toml`), and nothing
benchmark-specific is checked. The config is rebuilt from the installed package each time,
so the common rules are always the pinned package's own.

With --submission DIR (a tree `joulebench export mlperf` wrote): the same checker on every
`results/<system>/<benchmark>/result_N.txt`, the package's system description checker on every
`systems/<system>.json`, and the package's own power integration (`result_summarizer`'s
`_compute_total_power`, the function its summary calls for a benchmark with a `power/` folder)
on every result: one JSON line per result with its time to train and energy, as MLPerf would
score them. The summarizer as a whole is not run: it checks each result against the
rules of its benchmark, and stops at a benchmark that is not MLPerf's.

Usage: python scripts/mlperf-check.py LOG_OR_FOLDER... (with mlperf-logging installed: .ci/run
pins it; `pip install mlperf-logging==4.1.68`)
       python scripts/mlperf-check.py --submission DIR
"""
import json
import glob
import os
import subprocess
import sys
import tempfile

RULESET = "6.1.0"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_dir():
    try:
        import mlperf_logging.compliance_checker as cc
    except ImportError:
        sys.exit("mlperf-check: the mlperf-logging package is not installed "
                 "(pip install mlperf-logging==4.1.68)")
    return os.path.join(os.path.dirname(cc.__file__), f"training_{RULESET}")


def write_config(tmp):
    common = open(os.path.join(config_dir(), "common.yaml")).read()
    step = "enqueue_config('training_%s/{}_common.yaml'.format(v['value']));" % RULESET
    if step not in common:
        sys.exit(f"mlperf-check: the package's common.yaml no longer has the step this script "
                 f"replaces ({step}); check the pinned mlperf-logging version")
    tasks = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(ROOT, "models", "*.toml")))
    bench = os.path.join(tmp, "joulebench_benchmark.yaml")
    with open(bench, "w") as f:
        f.write("- KEY:\n    NAME:  submission_benchmark\n    REQ:   EXACTLY_ONE\n"
                f"    CHECK: \" v['value'] in {tasks!r} \"\n")
    path = os.path.join(tmp, "joulebench_common.yaml")
    with open(path, "w") as f:
        f.write(common.replace(step, f"enqueue_config({bench!r});"))
    return path


def logs_of(args):
    out = []
    for a in args:
        if os.path.isdir(a):
            found = sorted(glob.glob(os.path.join(a, "events", "*.mllog")))
            if not found:
                sys.exit(f"mlperf-check: {a}: no events/*.mllog (not a results folder?)")
            out += found
        elif os.path.isfile(a):
            out.append(a)
        else:
            sys.exit(f"mlperf-check: {a}: no such file or folder")
    return out


def check_logs(logs, tmp):
    """The compliance checker on each log; the number that fail."""
    cfg = write_config(tmp)
    failed = 0
    for log in logs:
        p = subprocess.run(
            [sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training",
             "--ruleset", RULESET, "--config", cfg, "--log_output", os.path.join(tmp, "out.log"), log],
            capture_output=True, text=True)
        text = p.stdout + p.stderr
        ok = p.returncode == 0 and "SUCCESS" in text and "FAILED" not in text
        print(f"{'PASS' if ok else 'FAIL'} {log}")
        if not ok:
            failed += 1
            print("\n".join("    " + line for line in text.strip().splitlines()[-40:]))
    print(f"mlperf-check: {len(logs) - failed} of {len(logs)} logs pass MLPerf Training {RULESET}'s compliance checker")
    return failed


def check_submission(root, tmp):
    """Results, system descriptions and power of an exported tree; the number of failures."""
    from mlperf_logging.compliance_checker.mlp_parser import parse_file
    from mlperf_logging.result_summarizer import result_summarizer as rs
    from mlperf_logging.system_desc_checker import system_desc_checker as sdc
    results = sorted(glob.glob(os.path.join(root, "results", "*", "*", "result_*.txt")))
    systems = sorted(glob.glob(os.path.join(root, "systems", "*.json")))
    if not results or not systems:
        sys.exit(f"mlperf-check: {root}: no results/*/*/result_*.txt or systems/*.json "
                 "(not a tree from joulebench export mlperf?)")
    failed = check_logs(results, tmp)
    for desc in systems:
        valid, _, _, _ = sdc.check_system_desc(desc, "training", RULESET)
        print(f"{'PASS' if valid else 'FAIL'} {desc} (system description checker)")
        failed += 0 if valid else 1
    for result in results:
        bench = os.path.dirname(result)
        loglines, errors = parse_file(result, ruleset=RULESET)
        start, stop = rs._query_run_start_stop(loglines)
        energy_j = rs._compute_total_power(bench, result, stop - start, RULESET)
        name = os.path.basename(result)[:-4]
        node = os.path.join(bench, "power", name, "node_0.txt")
        run_id = None
        for line in parse_file(node, ruleset=RULESET)[0]:
            if line.key == "power_measurement_start":
                run_id = line.value["metadata"].get("joulebench_run_id")
        print(json.dumps({"result": os.path.relpath(result, root), "run_id": run_id,
                          "time_to_train_ms": stop - start, "energy_j": energy_j}))
    return failed


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) > 1 else 2)
    config_dir()
    with tempfile.TemporaryDirectory() as tmp:
        if sys.argv[1] == "--submission":
            if len(sys.argv) != 3 or not os.path.isdir(sys.argv[2]):
                sys.exit("mlperf-check: --submission takes one folder (joulebench export mlperf --out)")
            failed = check_submission(sys.argv[2], tmp)
        else:
            failed = check_logs(logs_of(sys.argv[1:]), tmp)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
