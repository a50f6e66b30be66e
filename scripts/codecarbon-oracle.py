#!/usr/bin/env python3
"""CodeCarbon 3.3.2 as an oracle for joulebench's labelled CPU/DRAM estimate.

Prints, as JSON on stdout, what CodeCarbon's own code computes for a table of inputs:
  ram         RAM.total_power() (machine mode) for MemTotal sizes in kB, x86 and ARM
  cpu_load    CPU._get_power_from_cpus() in mode cpu_load (machine tracking) for TDPs x loads
  tdp_lookup  TDP._get_cpu_power_from_registry(model) over brand strings: names from the
              table itself and variants of them (case, "(R)", " CPU @ x.yyGHz", extra
              tokens, truncations), so the exact, cleaned and token-set paths are all hit;
              a row whose TDP is not a number ("27.29.5") makes CodeCarbon raise
  tdp_choice  the TDP ResourceTracker.set_CPU_tracking() hands to the CPU (no RAPL) for
              (model, logical threads, sockets), including an unknown and a missing model

Only the machine inputs are replaced (psutil.virtual_memory, platform.machine, the load
meter, detect_cpu_model, count_cpus, the RAPL probe); every number comes from CodeCarbon.
Needs `pip install codecarbon==3.3.2`; no network at run time. tests/codecarbon_oracle.rs
compares its output with src/measure/estimate.rs and with the committed
tests/fixtures/codecarbon-3.3.2.json (regenerate that with this script's output).
"""
import json
import logging
import os
import platform
import sys
from collections import namedtuple
from types import SimpleNamespace
from unittest import mock

os.environ.setdefault("CODECARBON_LOG_LEVEL", "error")
import codecarbon  # noqa: E402
import psutil  # noqa: E402
from codecarbon.core import cpu as cc_cpu  # noqa: E402
from codecarbon.core import hardware_cache  # noqa: E402
from codecarbon.core import resource_tracker as cc_rt  # noqa: E402
from codecarbon.external import ram as cc_ram  # noqa: E402
from codecarbon.external.hardware import CPU, MODE_CPU_LOAD  # noqa: E402
from codecarbon.external.ram import RAM  # noqa: E402
from codecarbon.input import DataSource  # noqa: E402

logging.getLogger("codecarbon").setLevel(logging.CRITICAL)

VERSION = "3.3.2"
KIB_PER_GIB = 1024 * 1024
# GiB sizes (ordinary and boundary probes of the DIMM heuristic), as MemTotal kB, plus two
# real MemTotal readings (this project's 23.5 GiB CI-class machine, a 2 TiB host).
RAM_GIB = [1, 2, 2.01, 3, 4, 4.01, 8, 8.01, 12, 16, 16.01, 17, 24, 32, 32.01, 48, 64, 64.01,
           65, 96, 128, 128.01, 129, 130, 200, 256, 512, 1000, 1024, 1500, 2048, 3000, 4096,
           4100, 8192]
RAM_KB = sorted({int(g * KIB_PER_GIB) for g in RAM_GIB} | {24683784, 24684112, 2113612892})
TDPS = [8, 15, 65, 125, 205, 280, 350]
LOADS = [0, 1, 10, 25, 33.3, 50, 75, 99, 100]

SVmem = namedtuple("svmem", "total available percent used free")


def ram_rows():
    rows = []
    for arm in (False, True):
        machine = "aarch64" if arm else "x86_64"
        with mock.patch.object(platform, "machine", return_value=machine), \
             mock.patch.object(cc_ram, "SLURM_JOB_ID", None):
            r = RAM(tracking_mode="machine")
            assert r.is_arm_cpu == arm
            for kb in RAM_KB:
                total = kb * 1024
                vm = SVmem(total, total, 0.0, 0, total)
                with mock.patch.object(psutil, "virtual_memory", return_value=vm):
                    gib = r.machine_memory_GB
                    watts = r.total_power().W
                rows.append({"mem_total_kb": kb, "arm": arm,
                             "dimms": r._estimate_dimm_count(gib), "watts": watts})
    return rows


class FixedLoad:
    """Stands in for SystemCPULoadMeter: a fixed machine-wide load in %."""

    def __init__(self, pct):
        self.pct = pct

    def reset(self):
        pass

    def percent(self, prime_interval=0.05):
        return self.pct


def cpu_load_rows():
    rows = []
    for tdp in TDPS:
        c = CPU(output_dir=".", mode=MODE_CPU_LOAD, model="m", tdp=tdp, tracking_mode="machine")
        for load in LOADS:
            c._cpu_load_meter = FixedLoad(load)
            rows.append({"tdp_w": tdp, "load_pct": load, "watts": c._get_power_from_cpus().W})
    return rows


def lookup_models():
    names = list(DataSource().get_cpu_power_data()["Name"])
    picked = names[::41] + names[-3:]
    models = [
        "AMD EPYC", "AMD EPYC 7763 64-Core Processor", "Intel(R) Xeon(R) Platinum 8480+",
        "Intel(R) Core(TM) i7-8565U CPU @ 1.80GHz", "AMD Ryzen 9 5950X 16-Core Processor",
        "Intel(R) Xeon(R) CPU @ 2.20GHz", "Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz",
        "Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz", "Intel(R) Xeon(R) Platinum 8380H CPU",
        "AMD EPYC 9654 96-Core Processor", "Apple M2", "Neoverse-N1", "Totally Unknown CPU 9999",
        "", "   ", "Intel", "Intel Celeron 1000A", "Intel Celeron 1.8", "(R)", "x @ 2.10GHz", "Intel Core i7-8565U @ 1.8GHz",
    ]
    for n in picked:
        tokens = n.split()
        models += [n, n.upper(), n + " CPU @ 2.10GHz", n.replace("Intel ", "Intel(R) "),
                   n + " 8-Core Processor", " ".join(tokens[:2]), " ".join(tokens[1:])]
    seen, out = set(), []
    for m in models:
        if m not in seen:
            seen.add(m)
            out.append(m)
    return out


def tdp_lookup_rows():
    """A TDP, None, or the error CodeCarbon raises (a row whose TDP is not a number)."""
    t = cc_cpu.TDP.__new__(cc_cpu.TDP)
    rows = []
    for m in lookup_models():
        try:
            rows.append({"model": m, "tdp_w": t._get_cpu_power_from_registry(m)})
        except ValueError as e:
            rows.append({"model": m, "tdp_w": None, "error": str(e)})
    return rows


def tdp_choice(model, threads, sockets):
    """ResourceTracker.set_CPU_tracking on a machine without RAPL; returns the CPU's TDP."""
    hardware_cache._tdp = None
    tracker = SimpleNamespace(_conf={"cpu_physical_count": sockets}, _force_cpu_power=None,
                              _output_dir=".", _tracking_mode="machine", _hardware=[])
    rt = cc_rt.ResourceTracker(tracker)
    with mock.patch.object(cc_cpu, "detect_cpu_model", return_value=model), \
         mock.patch.object(cc_cpu, "count_cpus", return_value=threads), \
         mock.patch.object(cc_rt.ResourceTracker, "_try_platform_cpu_backend",
                           return_value=False):
        rt.set_CPU_tracking()
    hardware_cache._tdp = None
    (c,) = [h for h in tracker._hardware if isinstance(h, CPU)]
    assert c._mode == MODE_CPU_LOAD
    return {"model": model, "threads": threads, "sockets": sockets, "tdp_w": c._tdp,
            "generic": c._is_generic_tdp}


def tdp_choice_rows():
    cases = [("AMD EPYC 7763 64-Core Processor", 128, 1), ("AMD EPYC 7763 64-Core Processor", 256, 2),
             ("Intel(R) Xeon(R) Platinum 8480+", 224, 2), ("AMD EPYC", 2, 1), ("AMD EPYC", 64, 2),
             ("Totally Unknown CPU 9999", 16, 1), ("Totally Unknown CPU 9999", 64, 4),
             (None, 8, 1), ("", 8, 2)]
    return [tdp_choice(*c) for c in cases]


def main():
    if codecarbon.__version__ != VERSION:
        sys.exit(f"codecarbon {codecarbon.__version__} installed; this oracle is for {VERSION}")
    out = {"codecarbon_version": codecarbon.__version__, "ram": ram_rows(),
           "cpu_load": cpu_load_rows(), "tdp_lookup": tdp_lookup_rows(),
           "tdp_choice": tdp_choice_rows()}
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
