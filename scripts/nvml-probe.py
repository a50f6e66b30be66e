#!/usr/bin/env python3
"""NVML probe for scripts/gpu-validate.sh (stage b): what the GPU's meters can resolve.

One loop of --idle-s seconds (default 20) on an idle GPU, reading as fast as NVML answers
(about every --poll-ms, default 2 ms): the total-energy counter
(nvmlDeviceGetTotalEnergyConsumption, mJ), NVML field 186 (instantaneous power, with NVML's own
sample timestamp) and nvmlDeviceGetPowerUsage. From those samples, written to --out as JSON:

* energy counter: present or not; its resolution (the smallest nonzero step seen, mJ) and how
  often it changes (median time between changes);
* power: how often each reading changes (median time between changes of the value, and of
  field 186's own timestamp): the power-sample interval;
* idle power over the loop: mean, sd, min, max of each power reading, and the counter's
  average (energy delta / time delta), with the GPU's name, driver, power limit, temperature,
  clocks and performance state before and after.

It measures and reports; the benchmark's figures come from joulebench. The device is chosen as
scripts/nvml-reader.py chooses it (CUDA_VISIBLE_DEVICES honoured), by importing its resolver.

Usage: nvml-probe.py --out PROBE.json [--cuda-index I] [--idle-s 20] [--poll-ms 2]
Exit codes: 0 probe written; 2 bad arguments; 3 NVML unavailable (nvidia-ml-py not installed,
or NVML cannot be initialised or cannot open the device): one line on stderr, so that a caller
can tell "no NVML on this machine" from a failure.
"""

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

FIELD_POWER_INSTANT = 186  # NVML_FI_DEV_POWER_INSTANT, mW
HERE = os.path.dirname(os.path.abspath(__file__))


def unavailable(msg):
    print(f"nvml-probe: NVML unavailable: {msg}", file=sys.stderr)
    sys.exit(3)


def load_reader():
    """scripts/nvml-reader.py as a module (its name has a hyphen), for resolve_device/field_value."""
    spec = importlib.util.spec_from_file_location("nvml_reader", os.path.join(HERE, "nvml-reader.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def text(v):
    if v is None:
        return None
    return v.decode() if isinstance(v, bytes) else str(v)


def change_intervals(times, values):
    """Seconds between consecutive changes of `values` (None entries skipped)."""
    last_v, last_change_t, out = None, None, []
    for t, v in zip(times, values):
        if v is None:
            continue
        if last_v is not None and v != last_v:
            if last_change_t is not None:
                out.append(t - last_change_t)
            last_change_t = t
        last_v = v
    return out


def describe(xs, scale=1.0, digits=6):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    r = lambda v: round(v * scale, digits)  # noqa: E731
    return {
        "n": len(xs),
        "mean": r(statistics.fmean(xs)),
        "sd": r(statistics.pstdev(xs)) if len(xs) > 1 else 0.0,
        "min": r(min(xs)),
        "median": r(statistics.median(xs)),
        "max": r(max(xs)),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--cuda-index", type=int, default=0)
    p.add_argument("--nvml-index", type=int, help="an NVML index, bypassing CUDA_VISIBLE_DEVICES")
    p.add_argument("--uuid", help="an NVML UUID (GPU-...)")
    p.add_argument("--idle-s", type=float, default=20.0, help="length of the sampling loop")
    p.add_argument("--poll-ms", type=float, default=2.0, help="pause between reads")
    args = p.parse_args()
    if not (args.idle_s > 0 and args.poll_ms >= 0):
        print("nvml-probe: error: --idle-s must be positive and --poll-ms not negative",
              file=sys.stderr)
        return 2

    try:
        import pynvml as nvml
    except ImportError as e:
        unavailable(f"nvidia-ml-py is not installed ({e})")
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as e:
        unavailable(f"NVML could not be initialised: {e}")
    reader = load_reader()
    try:
        handle, which = reader.resolve_device(nvml, args)
    except nvml.NVMLError as e:
        unavailable(f"NVML cannot open the device: {e}")

    def safe(name, *a):
        f = getattr(nvml, name, None)
        if f is None:
            return None
        try:
            return f(*a)
        except Exception:  # noqa: BLE001 - NVMLError or an unsupported query: recorded as null
            return None

    def state():
        clocks = {}
        for label, const in (("sm_mhz", "NVML_CLOCK_SM"), ("mem_mhz", "NVML_CLOCK_MEM")):
            if hasattr(nvml, const):
                clocks[label] = safe("nvmlDeviceGetClockInfo", handle, getattr(nvml, const))
        temp_c = None
        if hasattr(nvml, "NVML_TEMPERATURE_GPU"):
            temp_c = safe("nvmlDeviceGetTemperature", handle, nvml.NVML_TEMPERATURE_GPU)
        util = safe("nvmlDeviceGetUtilizationRates", handle)
        return {
            "unix_s": time.time(),
            "temperature_c": temp_c,
            "clocks": clocks,
            "pstate": safe("nvmlDeviceGetPerformanceState", handle),
            "utilization_gpu_pct": getattr(util, "gpu", None),
            "power_usage_w": (lambda mw: mw / 1000.0 if mw is not None else None)(
                safe("nvmlDeviceGetPowerUsage", handle)),
        }

    def read_energy():
        try:
            return int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        except nvml.NVMLError:
            return None

    def read_field():
        try:
            fv = nvml.nvmlDeviceGetFieldValues(handle, [FIELD_POWER_INSTANT])[0]
        except nvml.NVMLError:
            return None, None
        if fv.nvmlReturn != 0:
            return None, None
        return reader.field_value(nvml, fv) * 1e-3, int(fv.timestamp)

    def read_usage():
        try:
            return nvml.nvmlDeviceGetPowerUsage(handle) * 1e-3
        except nvml.NVMLError:
            return None

    limit_mw = safe("nvmlDeviceGetEnforcedPowerLimit", handle)
    before = state()
    print(f"nvml-probe: {text(safe('nvmlDeviceGetName', handle))} ({which}): sampling "
          f"{args.idle_s:g} s every ~{args.poll_ms:g} ms", file=sys.stderr)

    ts, energy, field_w, field_ts, usage_w, read_s = [], [], [], [], [], []
    t_end = time.monotonic() + args.idle_s
    pause = args.poll_ms / 1000.0
    while time.monotonic() < t_end:
        t0 = time.time()
        e = read_energy()
        fw, fts = read_field()
        u = read_usage()
        t1 = time.time()
        ts.append(0.5 * (t0 + t1))
        read_s.append(t1 - t0)
        energy.append(e)
        field_w.append(fw)
        field_ts.append(fts)
        usage_w.append(u)
        if pause:
            time.sleep(pause)
    after = state()

    e_valid = [(t, e) for t, e in zip(ts, energy) if e is not None]
    deltas = [b - a for (_, a), (_, b) in zip(e_valid, e_valid[1:])]
    nonzero = [d for d in deltas if d > 0]
    counter = {
        "present": bool(e_valid),
        "reads": len(e_valid),
        "read_errors": len(energy) - len(e_valid),
        "changes": len(nonzero),
        "resolution_mj": min(nonzero) if nonzero else None,
        "step_mj": describe(nonzero, digits=3),
        "negative_steps": sum(1 for d in deltas if d < 0),
        "update_interval_ms": describe(change_intervals(ts, energy), 1e3, 3),
        "average_power_w": None,
    }
    if len(e_valid) >= 2 and e_valid[-1][0] > e_valid[0][0]:
        counter["average_power_w"] = round(
            (e_valid[-1][1] - e_valid[0][1]) * 1e-3 / (e_valid[-1][0] - e_valid[0][0]), 3)
    ts_changes = [(b - a) * 1e-3 for a, b in zip(field_ts, field_ts[1:])
                  if a is not None and b is not None and b != a]
    power = {
        "field_186_instant": {
            "present": any(v is not None for v in field_w),
            "value_change_interval_ms": describe(change_intervals(ts, field_w), 1e3, 3),
            "timestamp_change_interval_ms": describe(ts_changes, 1.0, 3),
            "idle_w": describe(field_w, digits=3),
        },
        "power_usage": {
            "present": any(v is not None for v in usage_w),
            "value_change_interval_ms": describe(change_intervals(ts, usage_w), 1e3, 3),
            "idle_w": describe(usage_w, digits=3),
        },
    }
    out = {
        "tool": "scripts/nvml-probe.py",
        "device": which,
        "name": text(safe("nvmlDeviceGetName", handle)),
        "driver_version": text(safe("nvmlSystemGetDriverVersion")),
        "nvml_version": text(safe("nvmlSystemGetNVMLVersion")),
        "pynvml_version": getattr(nvml, "__version__", None) or reader.package_version(),
        "power_limit_w": limit_mw / 1000.0 if limit_mw is not None else None,
        "duration_s": round(ts[-1] - ts[0], 3) if ts else 0.0,
        "samples": len(ts),
        "read_ms": describe(read_s, 1e3, 4),
        "energy_counter": counter,
        "power": power,
        "state_before": before,
        "state_after": after,
        "python": sys.version.split()[0],
    }
    safe("nvmlShutdown")
    try:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2, sort_keys=True)
            f.write("\n")
    except OSError as e:
        print(f"nvml-probe: error: cannot write {args.out}: {e}", file=sys.stderr)
        return 2
    iw = power["field_186_instant"]["idle_w"] or power["power_usage"]["idle_w"] or {}
    pi = (power["field_186_instant"]["value_change_interval_ms"]
          or power["power_usage"]["value_change_interval_ms"] or {})
    print(f"nvml-probe: counter {'present' if counter['present'] else 'ABSENT'}"
          f" (resolution {counter['resolution_mj']} mJ, changes every "
          f"{(counter['update_interval_ms'] or {}).get('median')} ms),"
          f" power changes every {pi.get('median')} ms, idle {iw.get('mean')} W"
          f" (counter average {counter['average_power_w']} W) -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
