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

Usage: python scripts/mlperf-check.py LOG_OR_FOLDER... (with mlperf-logging installed: .ci/run
pins it; `pip install mlperf-logging==4.1.68`)
"""
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


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) > 1 else 2)
    logs = logs_of(sys.argv[1:])
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        cfg = write_config(tmp)
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
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
