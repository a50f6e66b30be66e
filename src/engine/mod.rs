//! Training on candle: models, kernels, optimizer, precision policy, pruning, the one training
//! loop, inference, checkpoints, synthetic-data generators and the variant's set-up of a run.
//!
//! Owns: everything that touches tensors.
//! Must not: write results folders other than checkpoints, print, or orchestrate series of
//! runs (layers below: `record`, `measure`, `stats`, `spec`, `data`, `base`).

pub mod alloc;
pub mod checkpoint;
pub mod inference;
pub mod kernels;
pub mod model;
pub mod optim;
pub mod precision;
pub mod prepare;
pub mod prune;
pub mod step;
pub mod synth;
pub mod train;
pub mod variant_run;
