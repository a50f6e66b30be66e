//! Reading results back: leaderboards in every format, carbon and footprint, the NVML
//! cross-check, a task's target from its reference curves.
//!
//! Owns: derived figures and their rendering.
//! Must not: train or measure, or import `orchestrate` (the two share only `record`) or `cli`.

pub mod carbon;
pub mod crosscheck;
pub mod mlperf_export;
pub mod replay;
pub mod report;
pub mod target;
