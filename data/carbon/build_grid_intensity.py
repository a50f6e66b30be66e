#!/usr/bin/env python3
"""Rebuild data/carbon/grid-intensity.csv from the data files of the CodeCarbon 3.3.2 wheel.

Provenance script, not part of any run: joulebench reads the CSV it writes. Reproduce with

    pip download --no-deps -d /tmp/cc codecarbon==3.3.2
    unzip -q /tmp/cc/codecarbon-3.3.2-py3-none-any.whl -d /tmp/cc/w
    python3 data/carbon/build_grid_intensity.py /tmp/cc/w > data/carbon/grid-intensity.csv

Wheel sha256 05b31dea9dd26ed1e90947973c9ef20c87d127ea71fc32b4cb55a3ec512b8897.
Only the standard library is used. Values are copied, never adjusted, except the one unit
conversion of eGRID's lb/MWh to g/kWh (x 0.45359237, exact by definition of the pound).
"""

import csv
import json
import sys
from pathlib import Path

LB_PER_MWH_TO_G_PER_KWH = 0.45359237

HEADER = """\
# Grid carbon intensity by region: g CO2e per kWh of electricity, with the year and source of every value.
# Built by data/carbon/build_grid_intensity.py from the data files shipped in the CodeCarbon 3.3.2 wheel
# (PyPI codecarbon 3.3.2, MIT licence, wheel sha256 05b31dea9dd26ed1e90947973c9ef20c87d127ea71fc32b4cb55a3ec512b8897).
# Columns: region (code you pass to --region), name, g_co2e_per_kwh, year (of the data), basis, source (an id below).
# basis: lifecycle = emissions over the generators' life cycle (IPCC AR5 factors, as Ember uses);
#        direct = combustion emissions at the plant only (eGRID output emission rate);
#        production-lifecycle = generation-weighted lifecycle factors of one bidding zone's own production.
# Values of different bases are not strictly comparable; the basis is written beside every figure joulebench prints.
# source owid-ember = Our World in Data, "Carbon intensity of electricity generation" (carbon_intensity_elec), data from Ember (Yearly Electricity Data; European Electricity Review) and the Energy Institute Statistical Review of World Energy; CC BY 4.0; as shipped in codecarbon/data/private_infra/global_energy_mix.json (field carbon_intensity, year per row). https://ourworldindata.org/grapher/carbon-intensity-electricity
# source epa-egrid2023 = US EPA, eGRID2023 (released 2025), state and US annual CO2-equivalent total output emission rate (field STC2ERTA / USC2ERTA, lb/MWh, converted here x 0.45359237 to g/kWh); US government work, public domain; as shipped in codecarbon/data/private_infra/2023/usa_emissions.json. https://www.epa.gov/egrid/download-data
# source entsoe-a75-2025 = ENTSO-E Transparency Platform, Actual Generation per Production Type (A75), full year 2025, per bidding zone, weighted by CodeCarbon's per-source lifecycle factors (Khepri v1.3, doi:10.5281/zenodo.22285397); as shipped in codecarbon/data/private_infra/nordic_emissions.json.
# Left out on purpose: Central African Republic (the file gives 0.0 g/kWh, an artefact of a hydro-only mix under a direct-emission method, not a usable factor) and Finland's bidding zone row of nordic_emissions.json (marked "prior value, unchanged", with no source); use --region FIN (owid-ember) for Finland.
# The world-average fallback (475 g/kWh, IEA Global Energy & CO2 Status Report 2019, data year 2018, as CodeCarbon uses it) lives in the code, not in this table, and is always labelled as a fallback.
"""


def main(root: Path) -> None:
    pi = root / "codecarbon" / "data" / "private_infra"
    rows = []
    mix = json.loads((pi / "global_energy_mix.json").read_text())
    for iso, v in sorted(mix.items()):
        ci = v["carbon_intensity"]
        if ci is None or ci <= 0:
            continue
        rows.append((iso, v["country_name"], round(float(ci), 3), v["year"], "lifecycle", "owid-ember"))
    us = json.loads((pi / "2023" / "usa_emissions.json").read_text())
    year = us["_source"]["year"]
    for name, v in sorted(us.items()):
        if name.startswith("_"):
            continue
        code = v["regionCode"]
        g = round(v["emissions"] * LB_PER_MWH_TO_G_PER_KWH, 1)
        if code == "usa":
            rows.append(("US-EGRID", "United States (eGRID national)", g, year, "direct", "epa-egrid2023"))
        else:
            rows.append((f"US-{code}", f"{name.title()} (US state)", g, year, "direct", "epa-egrid2023"))
    nordic = json.loads((pi / "nordic_emissions.json").read_text())
    for zone, v in sorted(nordic["data"].items()):
        if zone == "FI":
            continue
        rows.append((zone, v["description"], v["emission_factor"], v["year"], "production-lifecycle", "entsoe-a75-2025"))
    sys.stdout.write(HEADER)
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(["region", "name", "g_co2e_per_kwh", "year", "basis", "source"])
    w.writerows(rows)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
