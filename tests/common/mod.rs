//! Helpers shared by the integration tests that drive the `joulebench` binary over copied
//! result folders (`mod common;` in each test file that uses them).

#![allow(dead_code)] // each test crate uses its own subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// Exit code and both streams of one `joulebench` invocation.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run the built binary with `args` and collect what it printed.
pub fn joulebench(args: &[&str]) -> Out {
    output(Command::new(env!("CARGO_BIN_EXE_joulebench")).args(args))
}

/// Run `cmd` and collect its exit code and what it printed.
pub fn output(cmd: &mut Command) -> Out {
    let o = cmd.output().expect("run joulebench");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A `joulebench` command with `args`, free of what a developer's shell or a cluster job may
/// set (data and models folders, Slurm and Kubernetes shard variables, backtraces).
pub fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_joulebench"));
    c.args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("JOULEBENCH_DATA")
        .env_remove("JOULEBENCH_MODELS")
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("SLURM_JOB_ID")
        .env_remove("JOB_COMPLETION_INDEX");
    c
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

/// A virtual environment under the target directory (`name`), made once: `python3 -m venv`, then
/// `pip install PIP_ARGS`; reused while `check` (a Python snippet) runs cleanly in it. The
/// interpreter's path, or why there is none (no python3 or venv, no package registry).
pub fn venv_python(name: &str, pip_args: &[&str], check: &str) -> Result<PathBuf, String> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let python = venv.join("bin").join("python");
    let has_it = |p: &Path| {
        Command::new(p)
            .args(["-c", check])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if has_it(&python) {
        return Ok(python);
    }
    let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
        let o = cmd.output().map_err(|e| format!("{what}: {e}"))?;
        if o.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Err(format!("{what} failed ({}): {last}", o.status))
        }
    };
    run(
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
        "python3 -m venv",
    )?;
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ])
    .args(pip_args);
    run(&mut pip, &format!("pip install {}", pip_args.join(" ")))?;
    if has_it(&python) {
        Ok(python)
    } else {
        Err(format!(
            "installed {} but `{check}` fails",
            pip_args.join(" ")
        ))
    }
}

/// Whether `program` is on the PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Whether this is CI: `CI` set to anything but empty, `0` or `false` (every CI service sets
/// it, and `.ci/run`'s callers do).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The one policy for a test that needs something this machine may lack. `missing` is why it
/// cannot run (None: it can). Then, under CI or with `require_var` set to `1` (what `.ci/run`
/// sets where it installs the tool), the test fails with that reason; elsewhere it prints
/// `SKIPPED <test>: <why>` and the caller returns. Never a silent pass.
pub fn requires(test: &str, missing: Option<String>, require_var: Option<&str>) -> bool {
    let Some(why) = missing else {
        return true;
    };
    let required = require_var.is_some_and(|v| std::env::var(v).as_deref() == Ok("1"));
    assert!(
        !(in_ci() || required),
        "{test}: {why} (required here: {})",
        if required {
            require_var.unwrap_or_default()
        } else {
            "CI is set"
        }
    );
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// [`requires`] for a program on the PATH; `install` says where it comes from.
pub fn requires_program(
    test: &str,
    program: &str,
    install: &str,
    require_var: Option<&str>,
) -> bool {
    let missing = which(program)
        .is_none()
        .then(|| format!("{program} not found ({install})"));
    requires(test, missing, require_var)
}
