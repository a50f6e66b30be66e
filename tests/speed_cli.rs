//! `joulebench speed`: bad input is one line on stderr and exit code 2; a short step timing of
//! the smallest task prints a JSON object with every part timed. No speed is asserted here
//! (numbers come from benches and `results/speed/`).

use std::process::{Command, Output};

fn speed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_joulebench"))
        .arg("speed")
        .args(args)
        .env_remove("JOULEBENCH_DATA")
        .env_remove("JOULEBENCH_MODELS")
        .output()
        .expect("spawn joulebench")
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["steps", "--task", "digits-mlp", "--steps", "0"],
            "--steps",
        ),
        (&["steps", "--task", "nope"], "nope"),
        (&["steps", "--task", "digits-mlp", "--device", "tpu"], "tpu"),
        (
            &["steps", "--task", "digits-mlp", "--variant", "fp8"],
            "fp8",
        ),
        (
            &["steps", "--task", "digits-mlp", "--variant", "tf32"],
            "tf32",
        ),
        (&["overhead", "--reps", "0"], "--reps"),
        (&["overhead", "--max-epochs", "0"], "--max-epochs"),
        (&["overhead", "--task", "nope"], "valid tasks"),
    ];
    for (args, needle) in cases {
        let o = speed(args);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {e}");
        assert!(e.contains(needle), "{args:?}: missing {needle:?} in {e}");
        assert!(o.stdout.is_empty(), "{args:?}: printed a result");
    }
}

#[test]
fn steps_json_has_every_part() {
    let o = speed(&[
        "steps",
        "--task",
        "digits-mlp",
        "--steps",
        "5",
        "--warmup",
        "1",
        "--json",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["task"], "digits-mlp");
    assert_eq!(v["variant"], "f32");
    assert_eq!(v["optimizer"], "fused");
    assert_eq!(v["steps"], 5);
    for k in [
        "median_ms",
        "forward_ms",
        "backward_ms",
        "optimizer_ms",
        "gather_ms",
    ] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {v}");
    }
    assert!(
        v["cpu_ms_per_step"].as_f64().is_some_and(|x| x >= 0.0),
        "{v}"
    );
}
