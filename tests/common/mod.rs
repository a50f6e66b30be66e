//! Helpers shared by the integration tests that drive the `joulebench` binary over copied
//! result folders (`mod common;` in each test file that uses them).

#![allow(dead_code)] // each test crate uses its own subset

use std::path::Path;
use std::process::Command;

/// Exit code and both streams of one `joulebench` invocation.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run the built binary with `args` and collect what it printed.
pub fn joulebench(args: &[&str]) -> Out {
    let o = Command::new(env!("CARGO_BIN_EXE_joulebench"))
        .args(args)
        .output()
        .expect("run joulebench");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `joulebench report ARGS...`.
pub fn report(args: &[&str]) -> Out {
    joulebench(&[&["report"], args].concat())
}

/// Recursive copy of a fixture folder, so a test can add or break files without touching it.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
