//! joulebench: a training-efficiency benchmark harness.
//!
//! It trains reference models with candle under variants, measures the energy each run takes
//! (NVML, RAPL, or a clearly labelled estimate) and scores runs by the energy to reach a fixed
//! target (ETT) and joules per accuracy point (JPP).
//!
//! # Layers
//!
//! Each folder is a layer; a layer imports only the layers listed below it (checked by
//! `tests/layers.rs`, which reads every `crate::` path in `src/`):
//!
//! | layer         | owns                                                           | may import |
//! |---------------|----------------------------------------------------------------|------------|
//! | `cli`         | argv, clap, setup of device and meter, stdout, exit codes       | everything below |
//! | `orchestrate` | runner, sweep, Slurm/K8s text, exec, collapse, speed            | engine, record, measure, stats, spec, data, base |
//! | `analyse`     | report, carbon, crosscheck                                      | record, measure, stats, spec, data, base |
//! | `engine`      | models, kernels, optimizer, precision, pruning, training loop   | record, measure, stats, spec, data, base |
//! | `record`      | the run-record schema, its reader and writer, scoring           | measure, stats, spec, data, base |
//! | `measure`     | meters, the measured window, idle baseline, system description  | stats, spec, data, base |
//! | `stats`       | statistics over runs, the knee of curves                        | spec, data, base |
//! | `spec`        | task and variant specifications                                 | data, base |
//! | `data`        | datasets, checksums, views                                      | base |
//! | `base`        | CSV helpers and other infrastructure                            | nothing |
//!
//! `orchestrate` and `analyse` sit side by side and share only `record`. Nothing imports
//! `cli`; only `cli` uses clap.

pub mod analyse;
pub mod base;
pub mod cli;
pub mod data;
pub mod engine;
pub mod measure;
pub mod orchestrate;
pub mod record;
pub mod spec;
pub mod stats;
