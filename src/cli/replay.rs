//! `joulebench replay`: the sequential-seed and forecast-stop rules applied to finished results
//! folders. The replay itself is `analyse::replay`'s.
//!
//! Exit codes: 0 with the table printed; 2 on bad input (a path that is not a results folder,
//! a run file that cannot be read, a folder without eval curves, bad seed counts).

use super::{usage, Failure};
use crate::analyse::replay::{self, ReplaySettings};
use crate::stats::sequential::{SeedPlan, DEFAULT_MIN_PAIRS};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// Results folders (a folder of such folders works too).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Seed pairs before the first look of the sequential rule.
    #[arg(long, default_value_t = DEFAULT_MIN_PAIRS)]
    pub min_seeds: usize,
    /// Most seed pairs per comparison (default: the seeds each comparison has in the folder,
    /// i.e. the fixed protocol the folder was run with).
    #[arg(long)]
    pub max_seeds: Option<usize>,
    /// Print the replay as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn command(a: &ReplayArgs) -> Result<i32, Failure> {
    SeedPlan::new(a.min_seeds, a.max_seeds.unwrap_or(a.min_seeds.max(2))).map_err(usage)?;
    let settings = ReplaySettings {
        min_seeds: a.min_seeds,
        max_seeds: a.max_seeds,
    };
    let r = replay::replay(&a.dirs, &settings).map_err(usage)?;
    if a.json {
        let text = serde_json::to_string_pretty(&r).map_err(|e| usage(anyhow::anyhow!(e)))?;
        println!("{text}");
    } else {
        print!("{}", replay::markdown(&r));
    }
    Ok(0)
}
