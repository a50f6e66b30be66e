//! `joulebench footprint`: its arguments, their validation into `FootprintOptions`, and what
//! it prints. Reading run files and the arithmetic are `analyse::carbon::footprint`'s.

use crate::analyse::carbon::embodied::{self, Amortisation};
use crate::analyse::carbon::footprint::{self, EmbodiedChoice, FootprintOptions, Format};
use crate::analyse::carbon::{self, schedule, CarbonError, Pue};
use std::path::PathBuf;

/// `joulebench footprint`.
#[derive(clap::Args, Debug, Clone)]
pub struct FootprintArgs {
    /// Results folders (a folder with runs/, or a folder of such folders). Default: results.
    #[arg(default_value = "results")]
    pub dirs: Vec<PathBuf>,
    /// Grid carbon intensity in g CO2e/kWh (what your supplier or grid operator publishes).
    #[arg(long, conflicts_with = "region", allow_negative_numbers = true)]
    pub grid_intensity: Option<f64>,
    /// A region of the shipped table (FRA, DEU, USA, US-CA, SE3, ...; --list-regions).
    #[arg(long)]
    pub region: Option<String>,
    /// Power usage effectiveness of the facility (default 1.0: IT energy only).
    #[arg(long, allow_negative_numbers = true)]
    pub pue: Option<f64>,
    /// Manufacturing footprint of the device in kg CO2e (e.g. from the vendor's product carbon
    /// footprint), amortised over --lifetime-years.
    #[arg(
        long,
        conflicts_with = "device_name",
        requires = "lifetime_years",
        allow_negative_numbers = true
    )]
    pub embodied_kg: Option<f64>,
    /// A device of the shipped embodied table (data/carbon/embodied.csv).
    #[arg(long, requires = "lifetime_years")]
    pub device_name: Option<String>,
    /// Service life the manufacturing footprint is spread over, in years.
    #[arg(long, allow_negative_numbers = true)]
    pub lifetime_years: Option<f64>,
    /// Busy share of the device's lifetime hours, in (0, 1]; 1.0 = every hour of its life in use.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub utilisation: f64,
    /// Hourly grid intensity CSV (timestamp,g_co2e_per_kwh): emissions of each run for every
    /// start hour, and the best window.
    #[arg(long)]
    pub intensity_csv: Option<PathBuf>,
    /// Baseline for the break-even: a run id, a task, or task/variant (default: the f32 run of
    /// the same task, seed and machine).
    #[arg(long)]
    pub baseline: Option<String>,
    #[arg(long, value_enum, default_value = "md")]
    pub format: Format,
    /// Write here (atomically) instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the shipped region table (code, name, g CO2e/kWh, year, basis) and exit.
    #[arg(long)]
    pub list_regions: bool,
}

/// Validate the arguments into options (nothing is read from the folders yet).
pub fn options(a: &FootprintArgs) -> Result<FootprintOptions, CarbonError> {
    let intensity = carbon::resolve(a.grid_intensity, a.region.as_deref())?;
    let pue = Pue::from_flag(a.pue)?;
    let embodied = match (a.embodied_kg, &a.device_name, a.lifetime_years) {
        (Some(kg), _, Some(y)) => EmbodiedChoice::Given(Amortisation::new(
            embodied::EmbodiedFootprint::user(kg)?,
            y,
            a.utilisation,
        )?),
        (None, Some(n), Some(y)) => EmbodiedChoice::Given(Amortisation::new(
            embodied::EmbodiedFootprint::named(n)?,
            y,
            a.utilisation,
        )?),
        (_, _, y) => {
            // Check the numbers now even though no device is known yet.
            Amortisation::new(
                embodied::EmbodiedFootprint::user(0.0)?,
                y.unwrap_or(1.0),
                a.utilisation,
            )?;
            EmbodiedChoice::Detect {
                lifetime_years: y,
                utilisation: a.utilisation,
            }
        }
    };
    let series = a
        .intensity_csv
        .as_deref()
        .map(schedule::load_hourly)
        .transpose()?;
    Ok(FootprintOptions {
        intensity,
        pue,
        embodied,
        series,
        baseline: a.baseline.clone(),
    })
}

/// The whole command: validate, read, compute, render, write.
pub fn command(a: &FootprintArgs) -> Result<(), CarbonError> {
    if a.list_regions {
        print!("{}", crate::analyse::carbon::region::list_regions());
        return Ok(());
    }
    let opts = options(a)?;
    let loaded = crate::analyse::carbon::runs::load(&a.dirs)?;
    let f = footprint::compute(&loaded.inputs(), &opts);
    let text = crate::analyse::carbon::render::render(&f, a.format);
    match &a.out {
        Some(p) => {
            crate::record::write_atomic(p, text.as_bytes()).map_err(|e| CarbonError::File {
                path: p.display().to_string(),
                reason: e.to_string(),
            })?
        }
        None => print!("{text}"),
    }
    if opts.intensity.fallback {
        eprintln!(
            "joulebench: note: no --grid-intensity or --region: the world average {} g CO2e/kWh \
             is used and labelled FALLBACK",
            carbon::WORLD_AVERAGE_G_PER_KWH
        );
    }
    Ok(())
}
