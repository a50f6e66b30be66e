//! The layer rule of `src/lib.rs`: each folder of `src/` is a layer and imports only the layers
//! below it; `orchestrate` and `analyse` sit side by side and share only `record`; nothing
//! imports `cli`; only `cli` uses clap, prints to stdout or exits; only `record` opens a
//! results folder's `runs/` or parses a run file (`record::read` is the one reader).
//!
//! Read from the source text (every `crate::<layer>` path outside comments), no dependency.

use std::path::{Path, PathBuf};

/// (layer, rank): a layer may import the layers of lower rank. Equal ranks are siblings that
/// must not import each other.
const LAYERS: &[(&str, u32)] = &[
    ("base", 0),
    ("data", 1),
    ("spec", 2),
    ("stats", 3),
    ("measure", 4),
    ("record", 5),
    ("engine", 6),
    ("orchestrate", 7),
    ("analyse", 7),
    ("cli", 8),
];

fn rank(layer: &str) -> Option<u32> {
    LAYERS.iter().find(|(l, _)| *l == layer).map(|(_, r)| *r)
}

/// The layers `layer` may import, as `src/lib.rs`'s table states them (its "may import"
/// column: names, "everything below", or "nothing").
fn allowed(layer: &str) -> Vec<String> {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let row = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//! |"))
        .find(|l| l.trim_start().starts_with(&format!("`{layer}`")))
        .unwrap_or_else(|| panic!("src/lib.rs's layer table has no row for `{layer}`"));
    let may = row
        .trim_end()
        .trim_end_matches('|')
        .rsplit('|')
        .next()
        .unwrap()
        .trim();
    match may {
        "nothing" => Vec::new(),
        "everything below" => {
            let own = rank(layer).unwrap();
            LAYERS
                .iter()
                .filter(|(_, r)| *r < own)
                .map(|(l, _)| l.to_string())
                .collect()
        }
        list => list.split(',').map(|s| s.trim().to_string()).collect(),
    }
}

/// The code of a line: without a `//` comment (doc comments included). A `//` inside a string
/// literal (a URL) cuts the line short, which can only hide a path, never invent one.
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// Every rule broken by one file, as `path:line: message`. `rel` is the path under `src/`.
fn violations(rel: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let layer = rel.split('/').next().unwrap_or(rel).trim_end_matches(".rs");
    if layer == "lib" || layer == "main" {
        return out;
    }
    let Some(own) = rank(layer) else {
        out.push(format!(
            "{rel}: top-level module '{layer}' is in no layer (add it to lib.rs and tests/layers.rs)"
        ));
        return out;
    };
    let may = allowed(layer);
    let mut in_test_module = false;
    for (i, line) in text.lines().enumerate() {
        let c = code(line);
        if line.trim_start().starts_with("#[cfg(test)]") {
            in_test_module = true;
        }
        let mut rest = c;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().last();
            rest = &rest[at + "crate::".len()..];
            if before.is_some_and(|b| b.is_alphanumeric() || b == '_' || b == '$') {
                continue;
            }
            let target: String = rest
                .chars()
                .take_while(|ch| ch.is_alphanumeric() || *ch == '_')
                .collect();
            if target.is_empty() || target == layer {
                continue;
            }
            match rank(&target) {
                Some(r) if r < own && may.contains(&target) => {}
                Some(r) if r < own => out.push(format!(
                    "{rel}:{}: layer '{layer}' imports '{target}', which src/lib.rs does not list for it",
                    i + 1
                )),
                Some(_) => out.push(format!(
                    "{rel}:{}: layer '{layer}' imports '{target}', which is not below it",
                    i + 1
                )),
                None => out.push(format!("{rel}:{}: 'crate::{target}' is no layer", i + 1)),
            }
        }
        if layer != "record" && !in_test_module {
            for pat in [
                "join(\"runs\")",
                "RunRecord = serde_json::",
                "from_slice::<RunRecord>",
                "from_str::<RunRecord>",
                "from_value::<RunRecord>",
            ] {
                if c.contains(pat) {
                    out.push(format!(
                        "{rel}:{}: only record reads run files (record::read), found `{pat}`",
                        i + 1
                    ));
                }
            }
        }
        if layer != "cli" {
            let has = |pat: &str| {
                c.match_indices(pat).any(|(at, _)| {
                    !c[..at]
                        .chars()
                        .last()
                        .is_some_and(|b| b.is_alphanumeric() || b == '_' || b == ':')
                })
            };
            if has("clap::") || has("use clap") {
                out.push(format!("{rel}:{}: only cli uses clap", i + 1));
            }
            if !in_test_module {
                for pat in ["println!", "print!", "process::exit"] {
                    if has(pat) || (pat == "process::exit" && c.contains(pat)) {
                        out.push(format!(
                            "{rel}:{}: only cli prints to stdout or exits ({pat})",
                            i + 1
                        ));
                    }
                }
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_layer_imports_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(
        files.len() > 50,
        "read {} files under {}",
        files.len(),
        src.display()
    );
    let mut all = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        all.extend(violations(&rel, &std::fs::read_to_string(f).unwrap()));
    }
    assert!(
        all.is_empty(),
        "{} layer violations:\n{}",
        all.len(),
        all.join("\n")
    );
}

#[test]
fn every_top_level_module_is_a_layer() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let mods: Vec<&str> = lib
        .lines()
        .filter_map(|l| {
            l.strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))
        })
        .map(|l| l.trim_end_matches(';'))
        .collect();
    assert_eq!(mods.len(), LAYERS.len(), "{mods:?}");
    for m in mods {
        assert!(
            rank(m).is_some(),
            "lib.rs declares '{m}', which tests/layers.rs does not rank"
        );
    }
}

/// A test of the test: each kind of forbidden line is caught, and allowed ones are not.
#[test]
fn the_checker_catches_each_forbidden_use() {
    let bad = [
        (
            "engine/train.rs",
            "use crate::orchestrate::runner::Plan;",
            "not below it",
        ),
        (
            "record/mod.rs",
            "let x = crate::engine::train::Status::Ok;",
            "not below it",
        ),
        (
            "orchestrate/sweep/mod.rs",
            "use crate::analyse::report;",
            "not below it",
        ),
        (
            "analyse/report/mod.rs",
            "use crate::orchestrate::collapse::Policy;",
            "not below it",
        ),
        (
            "orchestrate/speed.rs",
            "use crate::cli::Failure;",
            "not below it",
        ),
        (
            "measure/detect.rs",
            "#[derive(clap::ValueEnum)]",
            "only cli uses clap",
        ),
        (
            "orchestrate/sweep/mod.rs",
            "    println!(\"{x}\");",
            "only cli prints",
        ),
        ("spec/task.rs", "std::process::exit(2);", "only cli prints"),
        (
            "data/mod.rs",
            "use crate::results::RunRecord;",
            "is no layer",
        ),
        ("newlayer/mod.rs", "", "is in no layer"),
        (
            "analyse/carbon/footprint.rs",
            "use crate::engine::inference::break_even;",
            "does not list for it",
        ),
        (
            "analyse/carbon/footprint.rs",
            "let files = std::fs::read_dir(dir.join(\"runs\"));",
            "only record reads run files",
        ),
        (
            "cli/mod.rs",
            "let rec: RunRecord = serde_json::from_slice(&b)?;",
            "only record reads run files",
        ),
    ];
    for (rel, line, why) in bad {
        let v = violations(rel, line);
        assert!(
            v.len() == 1 && v[0].contains(why),
            "{rel}: `{line}` gave {v:?}, expected one '{why}'"
        );
    }
    let good = [
        (
            "engine/train.rs",
            "use crate::record::Phase; use crate::measure::Meter;",
        ),
        (
            "cli/run.rs",
            "use crate::orchestrate::runner; use clap::Args; println!(\"x\");",
        ),
        (
            "analyse/report/mod.rs",
            "use crate::analyse::carbon; // crate::cli::Failure",
        ),
        ("record/mod.rs", "/// [`crate::engine::train`] writes these"),
        (
            "base/csvline.rs",
            "let s = \"eprintln!\"; eprintln!(\"to stderr\");",
        ),
        (
            "orchestrate/runner.rs",
            "#[cfg(test)]\nmod tests {\n    fn f() { println!(\"debug\"); }\n}",
        ),
        (
            "record/read.rs",
            "let runs = dir.join(\"runs\"); let rec: RunRecord = serde_json::from_value(v)?;",
        ),
        (
            "analyse/crosscheck.rs",
            "#[cfg(test)]\nmod tests {\n    fn f() { std::fs::create_dir(d.join(\"runs\")); }\n}",
        ),
    ];
    for (rel, text) in good {
        let v = violations(rel, text);
        assert!(v.is_empty(), "{rel}: `{text}` gave {v:?}");
    }
}
