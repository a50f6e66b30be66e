//! The shipped region table, `data/carbon/grid-intensity.csv` (embedded at build time, so a
//! binary answers `--region` from anywhere): one row per region with its g CO2e/kWh, the year of
//! the data, its basis and a source id; each source id is cited in full in the file's header
//! (`# source <id> = <citation>`). See data/carbon/README.md for provenance and licences.

use super::{Basis, CarbonError, GridIntensity, MAX_PLAUSIBLE_G_PER_KWH};
use crate::base::csvline;
use std::collections::BTreeMap;
use std::sync::OnceLock;

pub const TABLE_PATH: &str = "data/carbon/grid-intensity.csv";
const TABLE: &str = include_str!("../../../data/carbon/grid-intensity.csv");

/// One row of the region table.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionRow {
    pub region: String,
    pub name: String,
    pub g_co2e_per_kwh: f64,
    pub year: u16,
    pub basis: Basis,
    pub source_id: String,
}

/// The parsed table: rows and the full citation of every source id.
#[derive(Debug, Clone)]
pub struct RegionTable {
    pub rows: Vec<RegionRow>,
    pub sources: BTreeMap<String, String>,
}

impl RegionTable {
    pub fn citation(&self, source_id: &str) -> Option<&str> {
        self.sources.get(source_id).map(String::as_str)
    }

    /// Case-insensitive match on the region code, then on the name.
    pub fn find(&self, query: &str) -> Option<&RegionRow> {
        let q = query.trim();
        self.rows
            .iter()
            .find(|r| r.region.eq_ignore_ascii_case(q))
            .or_else(|| self.rows.iter().find(|r| r.name.eq_ignore_ascii_case(q)))
    }
}

/// Parse a table in the shipped format; `path` names it in errors.
pub fn parse_table(text: &str, path: &str) -> Result<RegionTable, CarbonError> {
    let err = |line: usize, reason: String| CarbonError::Csv {
        path: path.to_string(),
        line,
        reason,
    };
    let (sources, table) = csvline::sourced_rows(
        text,
        &[
            "region",
            "name",
            "g_co2e_per_kwh",
            "year",
            "basis",
            "source",
        ],
        err,
    )?;
    let mut rows = Vec::new();
    for (n, f) in table {
        let g: f64 = f[2].parse().map_err(|_| {
            err(
                n,
                format!("g_co2e_per_kwh {} is not a number", csvline::excerpt(&f[2])),
            )
        })?;
        if !(g.is_finite() && g > 0.0 && g <= MAX_PLAUSIBLE_G_PER_KWH) {
            return Err(err(n, format!("g_co2e_per_kwh {g} out of (0, 2000]")));
        }
        let year: u16 = f[3]
            .parse()
            .ok()
            .filter(|y| (1990..=2100).contains(y))
            .ok_or_else(|| err(n, format!("year {} is not a year", csvline::excerpt(&f[3]))))?;
        let basis = Basis::parse(&f[4])
            .ok_or_else(|| err(n, format!("unknown basis {}", csvline::excerpt(&f[4]))))?;
        if f[0].is_empty() || f[5].is_empty() {
            return Err(err(n, "empty region or source".into()));
        }
        rows.push(RegionRow {
            region: f[0].clone(),
            name: f[1].clone(),
            g_co2e_per_kwh: g,
            year,
            basis,
            source_id: f[5].clone(),
        });
    }
    for (i, r) in rows.iter().enumerate() {
        if !sources.contains_key(&r.source_id) {
            return Err(err(
                0,
                format!(
                    "row {} ({}) cites undefined source {}",
                    i + 1,
                    csvline::clip(&r.region),
                    csvline::excerpt(&r.source_id)
                ),
            ));
        }
    }
    Ok(RegionTable { rows, sources })
}

/// The shipped table, parsed once.
pub fn table() -> &'static RegionTable {
    static T: OnceLock<RegionTable> = OnceLock::new();
    // The shipped table is checked by a unit test; a broken edit fails CI, not a user's run.
    T.get_or_init(|| {
        parse_table(TABLE, TABLE_PATH).unwrap_or_else(|e| panic!("shipped region table: {e}"))
    })
}

/// The intensity of a region from the shipped table.
pub fn lookup(region: &str) -> Result<GridIntensity, CarbonError> {
    let t = table();
    let row = t.find(region).ok_or_else(|| CarbonError::UnknownRegion {
        region: region.to_string(),
        suggest: suggestions(t, region),
    })?;
    Ok(GridIntensity {
        g_co2e_per_kwh: row.g_co2e_per_kwh,
        source: t.citation(&row.source_id).unwrap_or_default().to_string(),
        year: Some(row.year),
        region: Some(row.region.clone()),
        region_name: Some(row.name.clone()),
        basis: row.basis,
        fallback: false,
    })
}

/// A few codes close to what the user typed, to say what the table does hold.
fn suggestions(t: &RegionTable, query: &str) -> String {
    let q = query.trim().to_ascii_lowercase();
    let close: Vec<String> = t
        .rows
        .iter()
        .filter(|r| {
            !q.is_empty()
                && (r.name.to_ascii_lowercase().contains(&q)
                    || r.region
                        .to_ascii_lowercase()
                        .starts_with(&q[..q.len().min(2)]))
        })
        .take(6)
        .map(|r| format!("{} {}", r.region, r.name))
        .collect();
    if close.is_empty() {
        format!(
            "{} regions: ISO 3166 alpha-3 countries such as FRA, DEU, USA; US states US-CA; Nordic zones SE3, NO4",
            t.rows.len()
        )
    } else {
        format!("close: {}", close.join(", "))
    }
}

/// The region table as text.
pub fn list_regions() -> String {
    let t = table();
    let mut s = String::from("region     g CO2e/kWh  year  basis                 name\n");
    for r in &t.rows {
        s.push_str(&format!(
            "{:<10} {:>10.1}  {}  {:<21} {}\n",
            r.region,
            r.g_co2e_per_kwh,
            r.year,
            r.basis.as_str(),
            r.name
        ));
    }
    s.push_str("sources:\n");
    for (id, cite) in &t.sources {
        s.push_str(&format!("  {id}: {cite}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_row_has_a_cited_source_and_a_year() {
        let t = table();
        assert!(t.rows.len() > 250, "{}", t.rows.len());
        for r in &t.rows {
            let cite = t.citation(&r.source_id).unwrap_or("");
            assert!(
                cite.len() > 40 && (cite.contains("http") || cite.contains("doi")),
                "{}: source {:?} -> {cite:?}",
                r.region,
                r.source_id
            );
            assert!((2009..=2026).contains(&r.year), "{} {}", r.region, r.year);
            assert!(r.g_co2e_per_kwh > 0.0);
        }
        let mut codes: Vec<&str> = t.rows.iter().map(|r| r.region.as_str()).collect();
        codes.sort();
        let n = codes.len();
        codes.dedup();
        assert_eq!(n, codes.len(), "duplicate region codes");
    }

    #[test]
    fn known_rows_match_their_sources() {
        // Values copied from the CodeCarbon 3.3.2 wheel's data files (see the table header).
        let fr = lookup("FRA").unwrap();
        assert_eq!((fr.g_co2e_per_kwh, fr.year), (56.039, Some(2023)));
        assert_eq!(fr.basis, Basis::Lifecycle);
        // eGRID2023 California, 394.769 lb/MWh x 0.45359237 = 179.06 g/kWh.
        let ca = lookup("us-ca").unwrap();
        assert_eq!(ca.g_co2e_per_kwh, 179.1);
        assert_eq!(ca.basis, Basis::Direct);
        assert_eq!(lookup("france").unwrap().region.as_deref(), Some("FRA"));
        assert_eq!(lookup("SE3").unwrap().g_co2e_per_kwh, 27.0);
    }

    #[test]
    fn malformed_tables_name_the_line() {
        let head = "# source s = A source with a long enough citation, https://example.org\nregion,name,g_co2e_per_kwh,year,basis,source\n";
        for (body, needle) in [
            ("X,x,abc,2020,lifecycle,s\n", "line 3"),
            ("X,x,-3,2020,lifecycle,s\n", "out of"),
            ("X,x,3,20,lifecycle,s\n", "not a year"),
            ("X,x,3,2020,magic,s\n", "unknown basis"),
            ("X,x,3,2020,lifecycle,nope\n", "undefined source"),
            ("X,x,3\n", "expected 6 fields"),
        ] {
            let e = parse_table(&format!("{head}{body}"), "t.csv")
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle) && e.starts_with("t.csv"), "{e}");
        }
        let e = parse_table("a,b\n", "t.csv").unwrap_err().to_string();
        assert!(e.contains("header"), "{e}");
    }
}
