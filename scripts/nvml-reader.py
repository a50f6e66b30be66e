#!/usr/bin/env python3
"""Independent NVML reader: the cross-check for joulebench's GPU energy.

Runs in its own process beside `joulebench run`/`sweep` and records, every --interval-ms, the
GPU's total-energy counter (mJ) and its power (NVML field 186, instantaneous, with NVML's own
sample timestamp; `nvmlDeviceGetPowerUsage` where the field is missing), stamped with the Unix
time so the trace can be lined up with joulebench's event logs. It computes nothing: the
comparison is `joulebench crosscheck --trace TRACE RESULTS_DIR` (Rust), which integrates this
trace over each run's measured window.

Trace format (version 1), one file:
    # joulebench-nvml-trace v1 {json: device, uuid hash, driver, nvml and pynvml versions, ...}
    t_unix_s,energy_mj,power_w,power_timestamp_us
    1763900000.012345,123456789,312.125,1763900000004321
    ...
    # end {json: samples, read errors, why it stopped}
Empty fields are readings that failed. Rows are flushed as they are written, so a reader that
is killed leaves a usable trace.

Usage: nvml-reader.py --out TRACE.csv [--cuda-index I | --nvml-index N | --uuid GPU-...]
                      [--interval-ms 50] [--stop-file PATH] [--duration-s S]
Stops on SIGTERM/SIGINT, when --stop-file exists, or after --duration-s.
Needs nvidia-ml-py (`import pynvml`). Exit codes: 0 stopped normally, 2 bad arguments or NVML
unavailable (one line on stderr).
"""

import argparse
import hashlib
import json
import os
import signal
import sys
import time

TRACE_VERSION = 1
FIELD_POWER_INSTANT = 186  # NVML_FI_DEV_POWER_INSTANT, mW


def fail(msg):
    print(f"nvml-reader: error: {msg}", file=sys.stderr)
    sys.exit(2)


def resolve_device(nvml, args):
    """Same mapping as joulebench (src/measure/nvml.rs resolve_cuda_index): CUDA renumbers the
    devices in CUDA_VISIBLE_DEVICES from 0, NVML does not."""
    if args.uuid:
        return nvml.nvmlDeviceGetHandleByUUID(args.uuid), f"uuid {args.uuid}"
    if args.nvml_index is not None:
        return nvml.nvmlDeviceGetHandleByIndex(args.nvml_index), f"nvml {args.nvml_index}"
    visible = (os.environ.get("CUDA_VISIBLE_DEVICES") or "").strip()
    if not visible:
        return nvml.nvmlDeviceGetHandleByIndex(args.cuda_index), f"nvml {args.cuda_index}"
    entries = [e.strip() for e in visible.split(",")]
    if args.cuda_index >= len(entries):
        fail(f"cuda:{args.cuda_index} requested but CUDA_VISIBLE_DEVICES={visible} lists "
             f"{len(entries)} device(s)")
    entry = entries[args.cuda_index]
    if entry.isdigit():
        return nvml.nvmlDeviceGetHandleByIndex(int(entry)), f"nvml {entry}"
    if entry.startswith(("GPU-", "MIG-")):
        return nvml.nvmlDeviceGetHandleByUUID(entry), f"uuid {entry}"
    fail(f"cannot map CUDA_VISIBLE_DEVICES entry {entry!r} to an NVML device")


def text(v):
    if v is None:
        return None
    return v.decode() if isinstance(v, bytes) else str(v)


def field_value(nvml, fv):
    types = {
        nvml.NVML_VALUE_TYPE_DOUBLE: "dVal",
        nvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
        nvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
        nvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
        nvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
        nvml.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
    }
    return float(getattr(fv.value, types.get(fv.valueType, "uiVal")))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="trace file to write")
    p.add_argument("--cuda-index", type=int, default=0,
                   help="the CUDA ordinal joulebench trains on (default 0)")
    p.add_argument("--nvml-index", type=int, help="an NVML index, bypassing CUDA_VISIBLE_DEVICES")
    p.add_argument("--uuid", help="an NVML UUID (GPU-...)")
    p.add_argument("--interval-ms", type=float, default=50.0)
    p.add_argument("--stop-file", help="stop when this file exists")
    p.add_argument("--duration-s", type=float, help="stop after this many seconds")
    args = p.parse_args()
    if not args.interval_ms > 0:
        fail(f"--interval-ms must be positive, got {args.interval_ms}")

    try:
        import pynvml as nvml
    except ImportError as e:
        fail(f"nvidia-ml-py is not installed ({e}); pip install nvidia-ml-py")
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as e:
        fail(f"NVML could not be initialised: {e}")
    try:
        handle, which = resolve_device(nvml, args)
    except nvml.NVMLError as e:
        fail(f"NVML cannot open the device: {e}")

    def safe(f, *a):
        try:
            return f(*a)
        except nvml.NVMLError:
            return None

    def read_energy():
        try:
            return int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        except nvml.NVMLError:
            return None

    def read_field_power():
        fv = nvml.nvmlDeviceGetFieldValues(handle, [FIELD_POWER_INSTANT])[0]
        if fv.nvmlReturn != 0:
            raise nvml.NVMLError(fv.nvmlReturn)
        return field_value(nvml, fv) * 1e-3, int(fv.timestamp)

    def read_usage_power():
        return nvml.nvmlDeviceGetPowerUsage(handle) * 1e-3, None

    try:
        read_field_power()
        read_power, power_source = read_field_power, "nvml_field_186_power_instant"
    except nvml.NVMLError:
        read_power, power_source = read_usage_power, "power_usage_trailing_1s_average"

    uuid = safe(nvml.nvmlDeviceGetUUID, handle)
    limit_mw = safe(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
    meta = {
        "tool": "scripts/nvml-reader.py",
        "device": which,
        "name": text(safe(nvml.nvmlDeviceGetName, handle)),
        # Same hash as joulebench's uuid_sha256_16: first 16 hex digits of SHA-256 of the UUID.
        "uuid_sha256_16": hashlib.sha256(text(uuid).encode()).hexdigest()[:16] if uuid else None,
        "driver_version": text(safe(nvml.nvmlSystemGetDriverVersion)),
        "nvml_version": text(safe(nvml.nvmlSystemGetNVMLVersion)),
        "pynvml_version": getattr(nvml, "__version__", None) or package_version(),
        "power_limit_w": limit_mw / 1000.0 if limit_mw is not None else None,
        "counter_usable": read_energy() is not None,
        "power_source": power_source,
        "interval_ms": args.interval_ms,
        "pid": os.getpid(),
        "started_unix_s": time.time(),
        "python": sys.version.split()[0],
    }

    stop = {"why": None}

    def on_signal(signum, _frame):
        stop["why"] = signal.Signals(signum).name

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    samples = 0
    errors = {"energy": 0, "power": 0}
    interval_s = args.interval_ms / 1000.0
    try:
        out = open(args.out, "w", buffering=1)
    except OSError as e:
        fail(f"cannot write {args.out}: {e}")
    print(f"nvml-reader: {meta['name']} ({which}), counter "
          f"{'usable' if meta['counter_usable'] else 'UNAVAILABLE'}, power from {power_source}, "
          f"every {args.interval_ms:g} ms -> {args.out}", file=sys.stderr)
    with out:
        out.write(f"# joulebench-nvml-trace v{TRACE_VERSION} {json.dumps(meta, sort_keys=True)}\n")
        out.write("t_unix_s,energy_mj,power_w,power_timestamp_us\n")
        origin = time.monotonic()
        k = 0
        while stop["why"] is None:
            t0 = time.time()
            energy = read_energy()
            t1 = time.time()
            try:
                power_w, power_ts = read_power()
            except nvml.NVMLError:
                power_w, power_ts = None, None
            errors["energy"] += energy is None
            errors["power"] += power_w is None
            out.write("{:.6f},{},{},{}\n".format(
                0.5 * (t0 + t1),
                "" if energy is None else energy,
                "" if power_w is None else f"{power_w:.3f}",
                "" if power_ts is None else power_ts,
            ))
            samples += 1
            if args.stop_file and os.path.exists(args.stop_file):
                stop["why"] = "stop_file"
            elif args.duration_s is not None and time.monotonic() - origin >= args.duration_s:
                stop["why"] = "duration"
            else:
                # Scheduled from the start so the interval does not drift.
                k += 1
                time.sleep(max(0.0, origin + k * interval_s - time.monotonic()))
        out.write("# end " + json.dumps({"samples": samples, "read_errors": errors,
                                         "stopped_by": stop["why"],
                                         "stopped_unix_s": time.time()}, sort_keys=True) + "\n")
    safe(nvml.nvmlShutdown)
    print(f"nvml-reader: {samples} samples, stopped by {stop['why']}", file=sys.stderr)


def package_version():
    try:
        from importlib.metadata import version
        return version("nvidia-ml-py")
    except Exception:  # noqa: BLE001 - provenance only
        return None


if __name__ == "__main__":
    main()
