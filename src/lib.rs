//! joulebench: a training-efficiency benchmark harness.
//!
//! It trains reference models with candle under variants, measures the energy each run takes
//! (NVML, RAPL, or a clearly labelled estimate) and scores runs by the energy to reach a fixed
//! target accuracy (ETT) and joules per accuracy point (JPP). Data flows one way:
//! `cli` (argv -> validated plan) -> `energy::detect` -> `runner` -> `train` -> `results`.

pub mod carbon;
pub mod checkpoint;
pub mod cli;
pub mod collapse;
pub mod crosscheck;
pub mod data;
pub mod energy;
pub mod exec;
pub mod inference;
pub mod kernels;
pub mod knee;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod precision;
pub mod progress;
pub mod prune;
pub mod report;
pub mod results;
pub mod runner;
pub mod speed;
pub mod stats;
pub mod sweep;
pub mod synth;
pub mod system;
pub mod task;
pub mod train;
pub mod variant;
pub mod variant_run;
