//! joulebench
pub mod data;
