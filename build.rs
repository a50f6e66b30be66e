//! Build-time provenance for run files: git commit, rustc, profile, Cargo.lock hash, candle
//! version. Nothing here can fail the build: unknown values are recorded as "unknown".

use std::process::Command;

fn cmd(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_v = cmd(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    let commit =
        cmd("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = cmd("git", &["status", "--porcelain", "--untracked-files=no"])
        .map(|s| if s.is_empty() { "" } else { "-dirty" })
        .unwrap_or("");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let candle = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"candle-core\""))
        .and_then(|p| p.lines().find(|l| l.starts_with("version")))
        .and_then(|l| l.split('"').nth(1))
        .unwrap_or("unknown")
        .to_string();
    // FNV-1a: a dependency-free fingerprint of Cargo.lock (which versions were built).
    let mut h: u64 = 0xcbf29ce484222325;
    for b in lock.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    println!("cargo:rustc-env=JB_RUSTC_VERSION={rustc_v}");
    println!("cargo:rustc-env=JB_GIT_COMMIT={commit}{dirty}");
    println!("cargo:rustc-env=JB_CANDLE_VERSION={candle}");
    println!("cargo:rustc-env=JB_CARGO_LOCK_FNV={h:016x}");
    println!(
        "cargo:rustc-env=JB_PROFILE={}",
        std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into())
    );
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
}
