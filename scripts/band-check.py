#!/usr/bin/env python3
"""Do new runs of a task learn as the committed reference curves did?

For every run file of TASK under DIR, compares its held-out curve (run file
`quality.curve`, scored evals) with `results/curves/TASK.csv` (the 10-seed reference: one
column per seed): at every eval step, is the value inside the reference band [min, max] over
the seeds, and how far is it from the same seed's reference value? Prints one line per run and
a verdict; exits 1 when any eval of any run is outside the band.

Usage: python3 scripts/band-check.py TASK DIR [--curves results/curves/TASK.csv]
"""
import argparse
import csv
import glob
import json
import os
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("task")
    ap.add_argument("dir")
    ap.add_argument("--curves")
    a = ap.parse_args()
    path = a.curves or os.path.join("results", "curves", f"{a.task}.csv")
    try:
        rows = list(csv.DictReader(open(path)))
    except OSError as e:
        sys.exit(f"band-check: {path}: {e}")
    seeds = [c for c in rows[0] if c.startswith("seed_")]
    ref = {int(r["step"]): {s: float(r[s]) for s in seeds if r[s] not in ("", None)} for r in rows}
    files = sorted(glob.glob(os.path.join(a.dir, "**", "runs", f"{a.task}--*.json"), recursive=True))
    files += sorted(glob.glob(os.path.join(a.dir, "runs", f"{a.task}--*.json")))
    files = sorted(set(files))
    if not files:
        sys.exit(f"band-check: no run files of {a.task} under {a.dir}")
    print(f"reference: {path} ({len(seeds)} seeds, {len(ref)} eval steps)")
    outside_total = 0
    for f in files:
        r = json.load(open(f))
        curve = [p for p in r["quality"]["curve"] if p.get("scored", True)]
        seed = f"seed_{r['seed']}"
        inside, outside, worst_same = 0, [], 0.0
        for p in curve:
            band = ref.get(int(p["step"]))
            if not band:
                continue
            # The CSV holds 5 decimals: widen the band by half its last digit.
            lo, hi = min(band.values()) - 5e-6, max(band.values()) + 5e-6
            v = p["value"]
            if lo <= v <= hi:
                inside += 1
            else:
                outside.append(f"step {p['step']}: {v:.5f} not in [{lo:.5f}, {hi:.5f}]")
            if seed in band:
                worst_same = max(worst_same, abs(v - band[seed]))
        outside_total += len(outside)
        n = r["quality"].get("eval_predictions")
        preds = (f" ({worst_same * n:.1f} of {n} eval predictions)"
                 if n and r["quality"].get("unit", "fraction") == "fraction" else "")
        print(f"{os.path.basename(f)}: {inside}/{inside + len(outside)} evals inside the band; "
              f"largest |difference| from the reference {seed}: {worst_same:.5f}{preds}")
        for o in outside:
            print(f"  outside: {o}")
    print("verdict: " + ("every eval inside the reference band" if outside_total == 0
                         else f"{outside_total} eval(s) outside the reference band"))
    sys.exit(1 if outside_total else 0)


if __name__ == "__main__":
    main()
