//! Series of runs: the runner (idle baseline, cooldowns, one measured window per run), sweeps
//! and their plans, shards and Slurm/Kubernetes/GNU parallel text, `exec` of foreign training
//! programs, the collapse experiment and the speed probes.
//!
//! Owns: what runs when, and where its records go.
//! Must not: import `analyse` (the two share only `record`) or `cli`.

pub mod collapse;
pub mod exec;
pub mod host;
pub mod progress;
pub mod runner;
pub mod speed;
pub mod sweep;
