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

// ---- No import circle inside a folder -----------------------------------------------------
//
// Inside each folder of `src/`, the files and sub-folders (its child modules) import one another
// in one direction only: a circle (a -> b -> a, or longer) means two files share one job and
// neither can be read first. Read from the source text like the layer rule: every `crate::`,
// `super::` and `self::` path outside comments and test modules.
//
// A folder's own `mod.rs` is not a node: it declares the children (so it "imports" every one of
// them) and is the folder's front, holding the types its children share and re-exporting what
// the folder offers. A child naming `super::Thing` depends on that front, not on a sibling; the
// circles that cost a reader are between siblings, and those are what this test refuses.

use std::collections::{BTreeMap, BTreeSet};

type Module = Vec<String>;

/// `analyse/report/collapse.rs` -> [analyse, report, collapse]; `mod.rs` names its folder.
fn module_of(rel: &str) -> Module {
    let mut parts: Module = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_string)
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts
}

fn ident_at(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The module paths one file's code names, each cut to the longest prefix that is a module.
fn references(
    own: &Module,
    is_folder: bool,
    text: &str,
    modules: &BTreeSet<Module>,
) -> BTreeSet<Module> {
    let body = text.split("#[cfg(test)]").next().unwrap_or("");
    let code: String = body.lines().map(|l| format!("{}\n", code(l))).collect();
    let resolve = |base: &Module, segs: &[String]| -> Option<Module> {
        let mut full = base.clone();
        full.extend(segs.iter().cloned());
        (0..=full.len())
            .rev()
            .map(|k| full[..k].to_vec())
            .find(|p| modules.contains(p))
    };
    let mut out = BTreeSet::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let boundary = i == 0 || {
            let b = bytes[i - 1] as char;
            !(b.is_alphanumeric() || b == '_' || b == ':')
        };
        let word = ident_at(&code[i..]);
        if word.is_empty() {
            i += code[i..].chars().next().map_or(1, char::len_utf8);
            continue;
        }
        let after = &code[i + word.len()..];
        if !boundary || !after.starts_with("::") {
            i += word.len();
            continue;
        }
        let mut base: Module = match word.as_str() {
            "crate" => Vec::new(),
            "super" => own[..own.len().saturating_sub(1)].to_vec(),
            "self" => own.clone(),
            child
                if is_folder
                    && modules.contains(&[own.clone(), vec![child.to_string()]].concat()) =>
            {
                [own.clone(), vec![child.to_string()]].concat()
            }
            _ => {
                i += word.len();
                continue;
            }
        };
        // The rest of the path: identifiers joined by `::`, then maybe a `{...}` group.
        let mut rest = &after[2..];
        let mut segs: Vec<String> = Vec::new();
        loop {
            let seg = ident_at(rest);
            if seg == "super" {
                base.pop();
            } else if !seg.is_empty() {
                segs.push(seg.clone());
            }
            if seg.is_empty() {
                break;
            }
            rest = &rest[seg.len()..];
            match rest.strip_prefix("::") {
                Some(r) => rest = r,
                None => break,
            }
        }
        let mut targets = Vec::new();
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let first = ident_at(item.trim());
                let mut s = segs.clone();
                if !first.is_empty() && first != "self" {
                    s.push(first);
                }
                targets.push(s);
            }
        } else {
            targets.push(segs);
        }
        for t in targets {
            if let Some(m) = resolve(&base, &t) {
                if &m != own {
                    out.insert(m);
                }
            }
        }
        i += word.len();
    }
    out
}

/// Each circle among the children of each folder, as `folder: a -> b -> ... (circle)`.
fn circles(files: &[(String, String)]) -> Vec<String> {
    let modules: BTreeSet<Module> = files.iter().map(|(rel, _)| module_of(rel)).collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (rel, text) in files {
        let own = module_of(rel);
        let is_folder = rel.ends_with("mod.rs") || !rel.contains('/');
        edges
            .entry(own.clone())
            .or_default()
            .extend(references(&own, is_folder, text, &modules));
    }
    let folders: BTreeSet<Module> = modules
        .iter()
        .filter(|m| !m.is_empty())
        .map(|m| m[..m.len() - 1].to_vec())
        .collect();
    let mut found = Vec::new();
    for folder in folders {
        // The node of a module inside `folder`: the folder itself or the child holding it.
        let node = |m: &Module| -> Option<Module> {
            if m.len() < folder.len() || m[..folder.len()] != folder[..] {
                return None;
            }
            (m.len() > folder.len()).then(|| m[..folder.len() + 1].to_vec())
        };
        let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
        for (from, tos) in &edges {
            let Some(a) = node(from) else { continue };
            for to in tos {
                if let Some(b) = node(to) {
                    if a != b {
                        graph.entry(a.clone()).or_default().insert(b);
                    }
                }
            }
        }
        // A circle exists where some node reaches itself: depth-first from each node.
        let mut reported: BTreeSet<BTreeSet<Module>> = BTreeSet::new();
        for start in graph.keys() {
            let mut stack = vec![(start.clone(), vec![start.clone()])];
            let mut seen = BTreeSet::new();
            while let Some((at, path)) = stack.pop() {
                for next in graph.get(&at).into_iter().flatten() {
                    if next == start {
                        let members: BTreeSet<Module> = path.iter().cloned().collect();
                        if reported.insert(members) {
                            let names: Vec<String> = path
                                .iter()
                                .chain([start])
                                .map(|m| m.last().unwrap().clone())
                                .collect();
                            found.push(format!("src/{}: {}", folder.join("/"), names.join(" -> ")));
                        }
                    } else if seen.insert(next.clone()) {
                        let mut p = path.clone();
                        p.push(next.clone());
                        stack.push((next.clone(), p));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn no_import_circle_inside_a_folder() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    paths.sort();
    let files: Vec<(String, String)> = paths
        .iter()
        .map(|f| {
            let rel = f
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (rel, std::fs::read_to_string(f).unwrap())
        })
        .collect();
    let found = circles(&files);
    assert!(
        found.is_empty(),
        "{} import circles:\n{}",
        found.len(),
        found.join("\n")
    );
}

/// A test of the test: circles through `super::`, `crate::` and a `{...}` group are found, in a
/// folder and in a sub-folder; a one-way chain, a test module's imports and the folder's front
/// are not.
#[test]
fn the_circle_checker_finds_circles() {
    let f = |rel: &str, text: &str| (rel.to_string(), text.to_string());
    let circle = [
        f("a/mod.rs", "mod x; mod y; mod z;"),
        f("a/x.rs", "use super::y::Thing;"),
        f("a/y.rs", "use crate::a::{z::Other, w};"),
        f("a/z.rs", "fn g() { super::x::run() }"),
    ];
    let found = circles(&circle);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("src/a: "), "{found:?}");
    for m in ["x", "y", "z"] {
        assert!(found[0].contains(m), "{found:?}");
    }
    let chain = [
        f(
            "a/mod.rs",
            "pub mod x; pub mod y; pub use x::Thing; pub use self::y::Other;",
        ),
        f("a/x.rs", "use super::y::Other; // super::mod_back"),
        f(
            "a/y.rs",
            "#[cfg(test)]\nmod tests { use super::super::x::Thing; }",
        ),
    ];
    assert!(circles(&chain).is_empty(), "{:?}", circles(&chain));
    // The folder's front may both use and be used by its children.
    let via_front = [
        f("a/mod.rs", "pub mod x; pub fn helper() { x::go() }"),
        f("a/x.rs", "pub fn go() { super::helper() }"),
    ];
    assert!(circles(&via_front).is_empty(), "{:?}", circles(&via_front));
    // Sub-folders are nodes of their parent folder, and have their own circles.
    let nested = [
        f("a/mod.rs", "mod b; mod c;"),
        f("a/b/mod.rs", "mod p; mod q;"),
        f("a/b/p.rs", "use super::q::Q; use crate::a::c::C;"),
        f("a/b/q.rs", "use super::p::P;"),
        f("a/c.rs", "use super::b::p::P;"),
    ];
    let found = circles(&nested);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|c| c.starts_with("src/a: ")), "{found:?}");
    assert!(
        found.iter().any(|c| c.starts_with("src/a/b: ")),
        "{found:?}"
    );
}
