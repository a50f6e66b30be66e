//! joulebench

pub mod energy;
