//! Infrastructure every layer may use: no knowledge of tasks, runs or meters.
//!
//! Owns: CSV line helpers (splitting, quoting, the short excerpt an error message quotes) and
//! the atomic file writer.
//! Must not: import any other joulebench module.

pub mod atomic;
pub mod csvline;
