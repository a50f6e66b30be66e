#!/usr/bin/env python3
"""The "every variant on a task" table of docs/results.md, from a results folder `joulebench report` has
written (leaderboard.json) and its run files (steps, and the harness's CPU share per seed).

Usage: python3 scripts/variants-table.py RESULTS_DIR TASK

Columns: variant, k/N (runs that reached T), median ETT with its 95 % bootstrap CI, median JPP,
mean and sd of the final accuracy, the paired change in ETT against the f32 baseline with its CI
and the verdict (all as `report` computed them), then per seed the steps trained and
`isolation.cpu_harness_fraction`, so a reader can tell work from contention. Energy labels are
the report's: this prints numbers, it does not compute any.
"""

import glob
import json
import os
import sys


def fail(msg):
    """Bad input: one line on stderr, exit 2 (the project's convention)."""
    print(msg, file=sys.stderr)
    sys.exit(2)


def pct(x, digits=1):
    return f"{100 * x:+.{digits}f} %"


def num(x):
    return f"{x:.3g}"


def main():
    if len(sys.argv) != 3:
        fail("usage: variants-table.py RESULTS_DIR TASK")
    root, task = sys.argv[1], sys.argv[2]
    try:
        board = json.load(open(os.path.join(root, "leaderboard.json")))
    except (OSError, ValueError) as e:
        fail(f"variants-table: {root}/leaderboard.json: {e} (run joulebench report first)")
    runs = {}
    for f in glob.glob(os.path.join(root, "runs", "*.json")):
        r = json.load(open(f))
        runs[r["run_id"]] = r
    boards = [t for t in board["tasks"] if t["task"] == task]
    if not boards:
        fail(f"variants-table: no task {task!r} in {root}/leaderboard.json")
    for table in boards[0]["tables"]:
        print(f"Energy: {table['energy']}, boundary {table['boundary']} ({', '.join(table['sources'])})\n")
        print("| variant | k/N | median ETT, J [95 % CI] | median JPP, J/pp | final acc. (mean, sd) "
              "| change in ETT vs f32 [95 % CI] | verdict | steps, seeds 1/2/3 "
              "| harness CPU share, seeds 1/2/3 |")
        print("|---|---|---|---|---|---|---|---|---|")
        for v in table["variants"]:
            s, c = v["stats"], v.get("comparison")
            name = v["variant"]["name"]
            if s["median_ett_j"] is None:
                ett, jpp = "DNF", "DNF"
            else:
                ci = s["median_ett_ci_j"] or {}
                lo = num(ci["lo"]) if ci.get("lo") is not None else "DNF"
                hi = num(ci["hi"]) if ci.get("hi") is not None else "DNF"
                ett = f"{num(s['median_ett_j'])} [{lo}, {hi}]"
                jpp = num(s["median_jpp_j_per_pp"])
            acc = f"{100 * s['mean_final_quality']:.2f} % ({100 * (s['sd_final_quality'] or 0):.2f})"
            if v.get("baseline"):
                change, verdict = "baseline", ""
            elif c and c.get("change") is not None and c.get("change_ci"):
                change = f"{pct(c['change'])} [{pct(c['change_ci']['lo'])}, {pct(c['change_ci']['hi'])}]"
                verdict = c["verdict"].replace("-", " ")
            else:
                change, verdict = "-", (c or {}).get("verdict", "").replace("-", " ")
            if c and c.get("engine_limited"):
                # The precision verdict describes the engine or hardware (leaderboard.json says why).
                verdict += " (engine-limited)"
            steps, share = [], []
            for rl in sorted(v["stats"]["run_list"], key=lambda r: r["seed"]):
                r = runs.get(rl["run_id"], {})
                steps.append(str(r.get("steps", "?")))
                f = (r.get("isolation") or {}).get("cpu_harness_fraction")
                share.append(f"{100 * f:.0f} %" if f is not None else "?")
            print(f"| `{name}` | {s['converged']}/{s['runs']} | {ett} | {jpp} | {acc} | {change} "
                  f"| {verdict} | {'/'.join(steps)} | {'/'.join(share)} |")
        print()


if __name__ == "__main__":
    main()
