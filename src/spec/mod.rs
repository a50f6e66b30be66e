//! What to run, as the user declares it: task TOMLs (model, data, optimizer, metric, target)
//! and the variant grammar (precision, pruning, init, data source), and the precision record
//! (what each op class of a precision variant really ran in).
//!
//! Owns: parsing and validating task and variant specifications and run ids.
//! Must not: train, measure or read run files (layers below: `data`, `base`).

pub mod generator;
pub mod precision;
pub mod task;
pub mod variant;
