//! Build-time provenance for run files: git commit, rustc, profile, Cargo.lock hash, candle
//! version. Nothing here can fail the build: unknown values are recorded as "unknown".
//! With the `cuda` feature it also gives the binary a run path, so a GPU machine finds the CUDA
//! libraries without `LD_LIBRARY_PATH` (see scripts/build-cuda.sh and README "GPU").

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
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        cuda_rpath();
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
}

/// Run path of the CUDA binary (binaries only; a CPU build is untouched): next to the binary
/// and its `lib/` (the pack from scripts/build-cuda.sh), then the standard toolkit folders.
/// `LD_LIBRARY_PATH` still wins (new dtags write RUNPATH, which it overrides, not RPATH), so
/// scripts/gpu-run.sh can point at PyTorch's CUDA 13 libraries where /usr/local/cuda lacks one.
fn cuda_rpath() {
    let dirs = [
        "$ORIGIN",
        "$ORIGIN/lib",
        "/usr/local/cuda/lib64",
        "/usr/local/cuda/targets/x86_64-linux/lib",
    ];
    println!("cargo:rustc-link-arg-bins=-Wl,--enable-new-dtags");
    println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{}", dirs.join(":"));
}
