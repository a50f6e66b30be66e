//! joulebench
