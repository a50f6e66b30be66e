//! Embodied (manufacturing) carbon, amortised per device-hour.
//!
//! `kg CO2e per hour = embodied kg / (lifetime years x 8,766 h x utilisation)`, and a run is
//! charged that rate for the hours of its measured window. The utilisation is the share of the
//! device's lifetime hours it is busy: the default 1.0 (every hour of its life in use) gives the
//! smallest share a run can be charged; a duty cycle of 0.5 doubles it. It is always printed.
//!
//! The footprint comes from the user (`--embodied-kg`) or from the shipped table
//! `data/carbon/embodied.csv` (published figures only, each with its source and year), by name
//! (`--device-name`) or matched on the run's accelerator name. A device not in the table is
//! reported as unknown, never guessed. No lifetime is assumed: `--lifetime-years` is required.

use super::CarbonError;
use crate::base::csvline;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

pub const TABLE_PATH: &str = "data/carbon/embodied.csv";
const TABLE: &str = include_str!("../../../data/carbon/embodied.csv");

/// Hours in an average year (365.25 days).
pub const HOURS_PER_YEAR: f64 = 8766.0;

/// One row of the embodied table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbodiedRow {
    pub device: String,
    /// Lower-case substring of an accelerator name that selects this row; empty = by name only.
    pub match_: String,
    pub unit: String,
    pub embodied_kg_co2e: f64,
    pub year: u16,
    pub scope: String,
    pub source_id: String,
}

#[derive(Debug, Clone)]
pub struct EmbodiedTable {
    pub rows: Vec<EmbodiedRow>,
    pub sources: BTreeMap<String, String>,
}

impl EmbodiedTable {
    pub fn by_name(&self, name: &str) -> Option<&EmbodiedRow> {
        self.rows
            .iter()
            .find(|r| r.device.eq_ignore_ascii_case(name.trim()))
    }
    /// The row whose `match` occurs in `accelerator` (case-insensitive).
    pub fn detect(&self, accelerator: &str) -> Option<&EmbodiedRow> {
        let a = accelerator.to_ascii_lowercase();
        self.rows
            .iter()
            .find(|r| !r.match_.is_empty() && a.contains(&r.match_))
    }
    pub fn names(&self) -> Vec<&str> {
        self.rows.iter().map(|r| r.device.as_str()).collect()
    }
    pub fn footprint(&self, row: &EmbodiedRow) -> EmbodiedFootprint {
        EmbodiedFootprint {
            device: row.device.clone(),
            kg_co2e: row.embodied_kg_co2e,
            source: self
                .sources
                .get(&row.source_id)
                .cloned()
                .unwrap_or_default(),
            year: Some(row.year),
            scope: row.scope.clone(),
        }
    }
}

/// Parse a table in the shipped format.
pub fn parse_table(text: &str, path: &str) -> Result<EmbodiedTable, CarbonError> {
    let err = |line: usize, reason: String| CarbonError::Csv {
        path: path.to_string(),
        line,
        reason,
    };
    let (sources, table) = csvline::sourced_rows(
        text,
        &[
            "device",
            "match",
            "unit",
            "embodied_kg_co2e",
            "year",
            "scope",
            "source",
        ],
        err,
    )?;
    let mut rows = Vec::new();
    for (n, f) in table {
        let kg: f64 = f[3]
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v > 0.0)
            .ok_or_else(|| {
                err(
                    n,
                    format!(
                        "embodied_kg_co2e {} is not a positive number",
                        csvline::excerpt(&f[3])
                    ),
                )
            })?;
        let year: u16 = f[4]
            .parse()
            .ok()
            .filter(|y| (1990..=2100).contains(y))
            .ok_or_else(|| err(n, format!("year {} is not a year", csvline::excerpt(&f[4]))))?;
        if !sources.contains_key(&f[6]) {
            return Err(err(
                n,
                format!("cites undefined source {}", csvline::excerpt(&f[6])),
            ));
        }
        rows.push(EmbodiedRow {
            device: f[0].clone(),
            match_: f[1].to_ascii_lowercase(),
            unit: f[2].clone(),
            embodied_kg_co2e: kg,
            year,
            scope: f[5].clone(),
            source_id: f[6].clone(),
        });
    }
    Ok(EmbodiedTable { rows, sources })
}

/// The shipped table, parsed once (checked by a unit test).
pub fn table() -> &'static EmbodiedTable {
    static T: OnceLock<EmbodiedTable> = OnceLock::new();
    T.get_or_init(|| {
        parse_table(TABLE, TABLE_PATH).unwrap_or_else(|e| panic!("shipped embodied table: {e}"))
    })
}

/// A manufacturing footprint and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbodiedFootprint {
    pub device: String,
    pub kg_co2e: f64,
    pub source: String,
    pub year: Option<u16>,
    pub scope: String,
}

impl EmbodiedFootprint {
    /// A figure the user typed (`--embodied-kg`).
    pub fn user(kg_co2e: f64) -> Result<Self, CarbonError> {
        if !(kg_co2e.is_finite() && kg_co2e >= 0.0) {
            return Err(CarbonError::BadEmbodied {
                what: "--embodied-kg",
                value: format!("{kg_co2e}"),
                reason: "must be a non-negative number of kg CO2e".into(),
            });
        }
        Ok(Self {
            device: "user-given device".into(),
            kg_co2e,
            source: "user (--embodied-kg)".into(),
            year: None,
            scope: "as given by the user".into(),
        })
    }

    /// A device from the shipped table by name.
    pub fn named(name: &str) -> Result<Self, CarbonError> {
        let t = table();
        let row = t.by_name(name).ok_or_else(|| CarbonError::BadEmbodied {
            what: "--device-name",
            value: format!("{name:?}"),
            reason: format!(
                "not in {TABLE_PATH}; known: {}; or pass --embodied-kg K from the vendor's product carbon footprint",
                t.names().join(", ")
            ),
        })?;
        Ok(t.footprint(row))
    }
}

/// A footprint spread over a lifetime at a utilisation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Amortisation {
    pub footprint: EmbodiedFootprint,
    pub lifetime_years: f64,
    /// Share of lifetime hours the device is busy, in (0, 1].
    pub utilisation: f64,
}

impl Amortisation {
    pub fn new(
        footprint: EmbodiedFootprint,
        lifetime_years: f64,
        utilisation: f64,
    ) -> Result<Self, CarbonError> {
        if !(lifetime_years.is_finite() && lifetime_years > 0.0 && lifetime_years <= 30.0) {
            return Err(CarbonError::BadEmbodied {
                what: "--lifetime-years",
                value: format!("{lifetime_years}"),
                reason: "must be a number of years in (0, 30]".into(),
            });
        }
        if !(utilisation.is_finite() && utilisation > 0.0 && utilisation <= 1.0) {
            return Err(CarbonError::BadEmbodied {
                what: "--utilisation",
                value: format!("{utilisation}"),
                reason: "must be the busy share of lifetime hours, in (0, 1]".into(),
            });
        }
        Ok(Self {
            footprint,
            lifetime_years,
            utilisation,
        })
    }

    /// kg CO2e charged per hour of use.
    pub fn kg_per_hour(&self) -> f64 {
        self.footprint.kg_co2e / (self.lifetime_years * HOURS_PER_YEAR * self.utilisation)
    }

    /// kg CO2e for `seconds` of use.
    pub fn kg_for_s(&self, seconds: f64) -> f64 {
        self.kg_per_hour() * seconds.max(0.0) / 3600.0
    }

    pub fn label(&self) -> String {
        format!(
            "{} kg CO2e ({}; {}) over {} years at {:.0} % utilisation = {:.3e} kg CO2e per device-hour",
            self.footprint.kg_co2e,
            self.footprint.device,
            self.footprint.source,
            self.lifetime_years,
            100.0 * self.utilisation,
            self.kg_per_hour()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amortisation_hand_computed() {
        // 150 kg over 5 years at 100 %: 150 / (5 x 8766) = 3.4223135e-3 kg/h.
        let a = Amortisation::new(EmbodiedFootprint::user(150.0).unwrap(), 5.0, 1.0).unwrap();
        assert!((a.kg_per_hour() - 150.0 / 43_830.0).abs() < 1e-15);
        assert!((a.kg_per_hour() - 3.422_313_5e-3).abs() < 1e-9);
        // A 30-minute run: half of that.
        assert!((a.kg_for_s(1800.0) - 150.0 / 43_830.0 / 2.0).abs() < 1e-15);
        // 50 % duty cycle doubles the per-hour share.
        let b = Amortisation::new(EmbodiedFootprint::user(150.0).unwrap(), 5.0, 0.5).unwrap();
        assert!((b.kg_per_hour() - 2.0 * a.kg_per_hour()).abs() < 1e-15);
        assert!(a.label().contains("100 % utilisation"), "{}", a.label());
    }

    #[test]
    fn bad_inputs_name_the_flag_and_value() {
        for (r, needle) in [
            (
                EmbodiedFootprint::user(-1.0).map(|_| ()),
                "--embodied-kg -1",
            ),
            (
                Amortisation::new(EmbodiedFootprint::user(1.0).unwrap(), 0.0, 1.0).map(|_| ()),
                "--lifetime-years 0",
            ),
            (
                Amortisation::new(EmbodiedFootprint::user(1.0).unwrap(), 4.0, 1.5).map(|_| ()),
                "--utilisation 1.5",
            ),
            (
                EmbodiedFootprint::named("tpu-v9").map(|_| ()),
                "nvidia-a100",
            ),
        ] {
            let e = r.unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn every_shipped_row_cites_a_source_and_year() {
        let t = table();
        assert!(!t.rows.is_empty());
        for r in &t.rows {
            let cite = t.sources.get(&r.source_id).map_or("", String::as_str);
            assert!(
                cite.len() > 40 && (cite.contains("http") || cite.contains("doi")),
                "{}: {cite:?}",
                r.device
            );
            assert!((2015..=2026).contains(&r.year) && !r.scope.is_empty());
        }
        assert_eq!(
            t.detect("NVIDIA A100-SXM4-80GB").unwrap().device,
            "nvidia-a100"
        );
        assert!(t.detect("Intel Xeon Processor (Cascadelake)").is_none());
        assert_eq!(
            EmbodiedFootprint::named("NVIDIA-A100").unwrap().kg_co2e,
            150.0
        );
    }
}
