//! Carbon: the derived figures that turn measured joules into kg CO2e (docs/design/measurement.md section 6).
//!
//! Owns: the grid intensity a figure is computed with (its value, source, year, region, basis
//! and whether it is a fallback), the PUE, the operational formula
//! `kg CO2e = kWh x PUE x g CO2e/kWh / 1000`, the shipped region table
//! (`data/carbon/grid-intensity.csv`, every row with its source and year), embodied
//! (manufacturing) carbon amortised per device-hour (`embodied`), and the emissions of a run
//! for each start hour of an hourly intensity series (`schedule`), and the `footprint` table
//! over result folders (the only part that reads run files).
//! Must not: measure energy, write run files or rank anything. Carbon is derived from the
//! measured joules and is never mixed into the joule ranking.
//!
//! No silent geolocation: the intensity is what the user gave (`--grid-intensity`), a region
//! looked up in the shipped table (`--region`), or, when neither was given, the world average
//! with a visible `fallback` label. A PUE of 1.0 (IT energy only) is the default and is always
//! written beside the figure.

pub mod embodied;
pub mod footprint;
pub mod region;
pub mod render;
pub mod runs;
pub mod schedule;

use serde::{Deserialize, Serialize};

/// Joules in one kilowatt-hour.
pub const J_PER_KWH: f64 = 3.6e6;

/// The world-average fallback: 475 g CO2e/kWh, IEA "Global Energy & CO2 Status Report 2019"
/// (data year 2018), the figure CodeCarbon 3.3 falls back to
/// (codecarbon/data/private_infra/carbon_intensity_per_source.json, `world_average`).
pub const WORLD_AVERAGE_G_PER_KWH: f64 = 475.0;
pub const WORLD_AVERAGE_SOURCE: &str =
    "IEA, Global Energy & CO2 Status Report 2019 (world average, data year 2018), as CodeCarbon 3.3 uses it";
pub const WORLD_AVERAGE_YEAR: u16 = 2018;

/// Above this a value is almost surely in the wrong unit (the dirtiest fuels, lignite and oil
/// shale, emit about 1,100-1,300 g/kWh over their life cycle; IPCC AR5 WG3 Annex III).
pub const MAX_PLAUSIBLE_G_PER_KWH: f64 = 2000.0;

/// Errors of the carbon boundary: every one names the value or the line it is about.
#[derive(Debug, thiserror::Error)]
pub enum CarbonError {
    #[error("--grid-intensity {value}: {reason}")]
    BadIntensity { value: String, reason: String },
    #[error("--grid-intensity and --region both given ({value} g/kWh and {region:?}): give one")]
    Conflict { value: f64, region: String },
    #[error("--region {region:?} is not in the shipped table ({suggest}); run `joulebench footprint --list-regions`, or pass --grid-intensity G in g CO2e/kWh")]
    UnknownRegion { region: String, suggest: String },
    #[error("--pue {value}: {reason}")]
    BadPue { value: String, reason: String },
    #[error("{what} {value}: {reason}")]
    BadEmbodied {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("{path}: line {line}: {reason}")]
    Csv {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error(transparent)]
    RunFile(#[from] crate::record::read::RunFileError),
    #[error(transparent)]
    Results(#[from] crate::record::read::FileError),
}

/// What a grid-intensity figure is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Basis {
    /// Generators' life-cycle emissions (IPCC AR5 factors; Ember, Our World in Data).
    Lifecycle,
    /// Combustion at the plant only (US EPA eGRID output emission rates).
    Direct,
    /// Life-cycle factors weighted by one bidding zone's own generation.
    ProductionLifecycle,
    /// Whatever the user's number is based on: joulebench cannot tell.
    UserGiven,
    /// The world-average fallback.
    WorldAverage,
}

impl Basis {
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Lifecycle => "lifecycle",
            Basis::Direct => "direct",
            Basis::ProductionLifecycle => "production-lifecycle",
            Basis::UserGiven => "user-given",
            Basis::WorldAverage => "world-average",
        }
    }
    pub fn parse(s: &str) -> Option<Basis> {
        Some(match s {
            "lifecycle" => Basis::Lifecycle,
            "direct" => Basis::Direct,
            "production-lifecycle" => Basis::ProductionLifecycle,
            _ => return None,
        })
    }
}

/// The grid intensity a carbon figure was computed with, and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridIntensity {
    pub g_co2e_per_kwh: f64,
    /// Full citation (or "user (--grid-intensity)").
    pub source: String,
    /// Year of the data; `None` for a user-given value.
    pub year: Option<u16>,
    /// Region code as in the shipped table (`FRA`, `US-CA`, `SE3`); `None` when user-given.
    pub region: Option<String>,
    /// Human name of the region (`France`).
    pub region_name: Option<String>,
    pub basis: Basis,
    /// True for the world-average fallback: shown as "FALLBACK" wherever the figure is printed.
    pub fallback: bool,
}

impl GridIntensity {
    /// A value the user typed, in g CO2e/kWh.
    pub fn user(g_co2e_per_kwh: f64) -> Result<Self, CarbonError> {
        check_intensity(g_co2e_per_kwh)?;
        Ok(Self {
            g_co2e_per_kwh,
            source: "user (--grid-intensity)".into(),
            year: None,
            region: None,
            region_name: None,
            basis: Basis::UserGiven,
            fallback: false,
        })
    }

    /// The labelled world-average fallback.
    pub fn world_average() -> Self {
        Self {
            g_co2e_per_kwh: WORLD_AVERAGE_G_PER_KWH,
            source: WORLD_AVERAGE_SOURCE.into(),
            year: Some(WORLD_AVERAGE_YEAR),
            region: Some("WORLD".into()),
            region_name: Some("world average".into()),
            basis: Basis::WorldAverage,
            fallback: true,
        }
    }

    /// One line: "56.0 g CO2e/kWh, France (FRA), 2023, lifecycle, source: ...".
    pub fn label(&self) -> String {
        let mut s = format!("{:.1} g CO2e/kWh", self.g_co2e_per_kwh);
        if self.fallback {
            s.push_str(" (FALLBACK: no --grid-intensity or --region given)");
        }
        match (&self.region_name, &self.region) {
            (Some(n), Some(r)) => s.push_str(&format!(", {n} ({r})")),
            (None, Some(r)) => s.push_str(&format!(", {r}")),
            _ => {}
        }
        if let Some(y) = self.year {
            s.push_str(&format!(", {y}"));
        }
        s.push_str(&format!(
            ", {}, source: {}",
            self.basis.as_str(),
            self.source
        ));
        s
    }
}

fn check_intensity(g: f64) -> Result<(), CarbonError> {
    let bad = |reason: &str| CarbonError::BadIntensity {
        value: format!("{g}"),
        reason: reason.into(),
    };
    if !g.is_finite() {
        return Err(bad("must be a finite number of g CO2e/kWh"));
    }
    if g < 0.0 {
        return Err(bad("must not be negative (g CO2e/kWh)"));
    }
    if g > MAX_PLAUSIBLE_G_PER_KWH {
        return Err(bad(
            "is above 2000 g CO2e/kWh, more than any grid; the unit is g/kWh (0.4 kg/kWh = 400)",
        ));
    }
    Ok(())
}

/// The intensity to compute with: `--grid-intensity` or `--region`, never both; neither gives
/// the labelled world-average fallback.
pub fn resolve(
    grid_intensity: Option<f64>,
    region: Option<&str>,
) -> Result<GridIntensity, CarbonError> {
    match (grid_intensity, region) {
        (Some(g), Some(r)) => Err(CarbonError::Conflict {
            value: g,
            region: r.to_string(),
        }),
        (Some(g), None) => GridIntensity::user(g),
        (None, Some(r)) => region::lookup(r),
        (None, None) => Ok(GridIntensity::world_average()),
    }
}

/// Power usage effectiveness: facility energy / IT energy, >= 1. The default 1.0 counts the IT
/// equipment only (no cooling, no power conversion) and says so.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pue {
    pub value: f64,
    /// True when the user gave it; false for the default 1.0.
    pub explicit: bool,
}

impl Default for Pue {
    fn default() -> Self {
        Self {
            value: 1.0,
            explicit: false,
        }
    }
}

impl Pue {
    pub fn new(value: f64) -> Result<Self, CarbonError> {
        let bad = |reason: &str| CarbonError::BadPue {
            value: format!("{value}"),
            reason: reason.into(),
        };
        if !value.is_finite() {
            return Err(bad("must be a finite number"));
        }
        if value < 1.0 {
            return Err(bad(
                "must be at least 1.0 (facility energy / IT energy; 1.0 counts IT only)",
            ));
        }
        if value > 5.0 {
            return Err(bad("is above 5.0, beyond any reported data centre"));
        }
        Ok(Self {
            value,
            explicit: true,
        })
    }

    /// From an optional flag: the default 1.0 when absent.
    pub fn from_flag(value: Option<f64>) -> Result<Self, CarbonError> {
        value.map_or(Ok(Self::default()), Self::new)
    }

    pub fn label(&self) -> String {
        if self.explicit {
            format!("PUE {}", self.value)
        } else {
            "PUE 1.0 (default: IT energy only, no facility overhead)".into()
        }
    }
}

/// kWh from joules.
pub fn kwh(energy_j: f64) -> f64 {
    energy_j / J_PER_KWH
}

/// kg CO2e of facility energy already multiplied by the PUE: kWh x (g CO2e/kWh) / 1000.
/// The one place a kWh figure becomes carbon (`operational_kg`, `report`'s emissions.csv).
pub fn kg_co2e_of_kwh(kwh_with_pue: f64, intensity: &GridIntensity) -> f64 {
    kwh_with_pue * intensity.g_co2e_per_kwh / 1000.0
}

/// Operational emissions: kg CO2e = kWh x PUE x (g CO2e/kWh) / 1000.
pub fn operational_kg(energy_j: f64, pue: Pue, intensity: &GridIntensity) -> f64 {
    kg_co2e_of_kwh(kwh(energy_j) * pue.value, intensity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operational_formula_on_hand_computed_cases() {
        // 3.6 MJ = 1 kWh; x PUE 1.5 x 400 g/kWh = 600 g = 0.6 kg.
        let g = GridIntensity::user(400.0).unwrap();
        let kg = operational_kg(3.6e6, Pue::new(1.5).unwrap(), &g);
        assert!((kg - 0.6).abs() < 1e-12, "{kg}");
        // 183.4 J (README's mnist-mlp ETT) at the world average, PUE 1:
        // 183.4 / 3.6e6 kWh x 475 g/kWh = 0.024198... g = 2.4198e-5 kg.
        let kg = operational_kg(183.4, Pue::default(), &GridIntensity::world_average());
        assert!((kg - 183.4 / 3.6e6 * 475.0 / 1000.0).abs() < 1e-18);
        assert!((kg - 2.419_861_1e-5).abs() < 1e-12, "{kg}");
        // Zero intensity gives zero, zero energy gives zero.
        let zero = GridIntensity::user(0.0).unwrap();
        assert_eq!(operational_kg(1e9, Pue::default(), &zero), 0.0);
        assert_eq!(operational_kg(0.0, Pue::new(2.0).unwrap(), &g), 0.0);
    }

    #[test]
    fn resolve_rules() {
        assert_eq!(resolve(Some(250.0), None).unwrap().g_co2e_per_kwh, 250.0);
        let fb = resolve(None, None).unwrap();
        assert!(fb.fallback && fb.g_co2e_per_kwh == 475.0);
        assert!(fb.label().contains("FALLBACK"), "{}", fb.label());
        let fr = resolve(None, Some("fra")).unwrap();
        assert_eq!(fr.region.as_deref(), Some("FRA"));
        assert!(!fr.fallback && fr.year.is_some() && !fr.source.is_empty());
        let e = resolve(Some(1.0), Some("FRA")).unwrap_err().to_string();
        assert!(e.contains("give one"), "{e}");
        let e = resolve(None, Some("Atlantis")).unwrap_err().to_string();
        assert!(
            e.contains("\"Atlantis\"") && e.contains("--list-regions"),
            "{e}"
        );
    }

    #[test]
    fn bad_intensities_and_pues_name_the_value() {
        for (g, needle) in [
            (-1.0, "negative"),
            (f64::NAN, "finite"),
            (f64::INFINITY, "finite"),
            (2500.0, "2000"),
        ] {
            let e = GridIntensity::user(g).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("--grid-intensity"), "{e}");
        }
        for p in [0.9, f64::NAN, 7.0] {
            let e = Pue::new(p).unwrap_err().to_string();
            assert!(e.contains("--pue"), "{e}");
        }
        assert_eq!(Pue::from_flag(None).unwrap(), Pue::default());
        assert!(Pue::default().label().contains("default"));
        assert_eq!(Pue::from_flag(Some(1.2)).unwrap().label(), "PUE 1.2");
    }
}
