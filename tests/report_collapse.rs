//! `joulebench report` over folders holding `collapse-*.json` (the files `joulebench collapse
//! --out DIR` writes): the "Model collapse" section of leaderboard.html (charts and table) and
//! leaderboard.md (table), collapse energy kept out of the ranking tables, a folder with only
//! collapse files, and a corrupt collapse file as a one-line usage error.
//!
//! Inputs: the shipped results/collapse/*.json, and tests/fixtures/report/real-cpu-estimated
//! (real digits-mlp and mnist-mlp runs measured with `--meter estimate`) as the run folder.

mod common;

use common::{copy_dir, report};
use std::path::{Path, PathBuf};

const REAL: &str = "tests/fixtures/report/real-cpu-estimated";
const POLICIES: [&str; 6] = [
    "replace",
    "accumulate",
    "accumulate-subsample",
    "mix-fresh:0.2",
    "mix-fixed:0.2",
    "real-only",
];

/// A results folder: the real runs, plus the shipped collapse files named.
fn folder_with(dir: &Path, collapse: &[&str]) -> PathBuf {
    let m = dir.join("machine");
    copy_dir(Path::new(REAL), &m);
    for name in collapse {
        std::fs::copy(
            Path::new("results/collapse").join(name),
            m.join(Path::new(name).file_name().unwrap()),
        )
        .unwrap();
    }
    m
}

/// The HTML from the collapse section's heading to the next h2 (or the end of the page).
fn collapse_section(html: &str) -> &str {
    let start = html
        .find("<h2>Model collapse</h2>")
        .expect("a Model collapse section");
    let rest = &html[start + 1..];
    let end = rest.find("<h2>").map_or(html.len(), |i| start + 1 + i);
    &html[start..end]
}

fn svgs(html: &str) -> Vec<&str> {
    html.split("<svg")
        .skip(1)
        .map(|s| s.split("</svg>").next().unwrap())
        .collect()
}

/// Polylines of an SVG with exactly `n` points: the lines of a series with n values (axes,
/// grid, legend samples and dashes have two).
fn polylines_with_points(svg: &str, n: usize) -> usize {
    svg.split("<polyline")
        .skip(1)
        .filter(|p| {
            p.split("points=\"")
                .nth(1)
                .and_then(|q| q.split('"').next())
                .map(|q| q.split_whitespace().count())
                == Some(n)
        })
        .count()
}

#[test]
fn html_and_markdown_get_the_collapse_section_and_rankings_stay_runs_only() {
    let tmp = tempfile::tempdir().unwrap();
    let m = folder_with(tmp.path(), &["collapse-digits.json"]);
    let out = tmp.path().join("out");
    let o = report(&[m.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!o.stderr.contains("warning"), "{}", o.stderr);

    let html = std::fs::read_to_string(out.join("leaderboard.html")).unwrap();
    let section = collapse_section(&html);
    // The runs' own charts come first, outside the section.
    let before = &html[..html.find("<h2>Model collapse</h2>").unwrap()];
    assert!(before.contains("digits-mlp") && !svgs(before).is_empty());
    let charts = svgs(section);
    assert_eq!(
        charts.len(),
        4,
        "accuracy and log-likelihood x generation and energy"
    );
    for svg in &charts {
        // One line of 21 generations per policy.
        assert_eq!(polylines_with_points(svg, 21), POLICIES.len(), "{svg}");
        for p in POLICIES {
            let label = if p == "real-only" {
                format!("\n{p} (reference)\n</text>")
            } else {
                format!("\n{p}\n</text>")
            };
            assert!(svg.contains(&label), "{p} in the legend");
        }
    }
    let texts = charts.join("\n");
    assert!(texts.contains("against generation") && texts.contains("against energy"));
    assert!(texts.contains("cumulative energy per chain (J, estimated, boundary H), log scale"));
    assert!(texts.contains("chance c = 14.5 %"));
    assert!(texts.contains("accuracy on the real test set (%, mean of 3 seeds)"));
    assert!(texts.contains("log-likelihood of real test set (nats/image"));
    // The summary table, as an HTML table, with the experiment's own numbers.
    assert!(section.contains("<th>collapse tax J</th>"), "{section}");
    assert!(section.contains(
        "<td>accumulate</td><td class=\"r\">6</td><td>recall</td><td class=\"r\">0.916</td><td class=\"r\">1214.0</td><td class=\"r\">183.8</td>"
    ));
    assert!(section.contains("class=\"warn\">Estimated energy"));

    let md = std::fs::read_to_string(out.join("leaderboard.md")).unwrap();
    let md_section = &md[md.find("## Model collapse").expect("md section")..];
    assert!(!md.contains("<svg"));
    assert!(md_section.contains("are in leaderboard.html"));
    assert!(md_section.contains("| accumulate | 6 | recall | 0.916 | 1214.0 | 183.8 |"));
    assert!(md.contains("(10 runs, 1 collapse file)"), "{md}");
    // Collapse energy is never ranked: the JSON leaderboard and the CSV know only the runs.
    for name in ["leaderboard.json", "leaderboard.csv"] {
        let text = std::fs::read_to_string(out.join(name)).unwrap();
        assert!(
            !text.contains("1214.0") && !text.contains("mix-fresh") && !text.contains("collapse"),
            "{name}"
        );
    }
    // The terminal shows the summary too.
    assert!(o.stdout.contains("Model collapse") && o.stdout.contains("mix-fixed:0.2"));
}

#[test]
fn a_folder_of_only_collapse_files_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let page = tmp.path().join("lb.html");
    let o = report(&[
        "results/collapse",
        "results/collapse/gmm4",
        "--format",
        "html",
        "--out",
        page.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.is_empty(),
        "no 'no run files' warning: {}",
        o.stderr
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("No training runs to rank; the model-collapse experiments follow."));
    let section = collapse_section(&html);
    // Digits (Gaussian generator): 4, Gaussian: 3, digits (GMM generator): 4.
    assert_eq!(svgs(section).len(), 11);
    assert!(
        section.contains("Digits, generator gmm:4 (results/collapse/gmm4/collapse-digits.json)")
    );
    let gaussian = svgs(section)[4..7].join("\n");
    assert!(gaussian.contains("replace: closed-form E[log v]"));
    assert!(gaussian.contains("mix-fresh:0.25: closed-form fixed point E[v]"));
    assert!(!html.contains("NaN"));
    // A folder of machines picks up a subfolder with collapse files as well.
    let o = report(&["results", "--format", "md"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout
            .contains("results/collapse (0 runs, 2 collapse files)"),
        "{}",
        o.stdout
    );
}

#[test]
fn a_corrupt_collapse_file_is_one_line_naming_it_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let m = folder_with(tmp.path(), &[]);
    let good = std::fs::read("results/collapse/collapse-digits.json").unwrap();
    let file = m.join("collapse-digits.json");
    let out = tmp.path().join("out");
    // Cut in half; then valid JSON of the wrong shape.
    let mut wrong: serde_json::Value = serde_json::from_slice(&good).unwrap();
    wrong["runs"][0]["generations"] = "twenty".into();
    for (bytes, says) in [
        (good[..good.len() / 2].to_vec(), "malformed collapse JSON"),
        (
            serde_json::to_vec(&wrong).unwrap(),
            "not a joulebench collapse file",
        ),
    ] {
        std::fs::write(&file, bytes).unwrap();
        let o = report(&[m.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert_eq!(o.code, 2, "{}", o.stderr);
        assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
        assert!(
            o.stderr.starts_with("joulebench: error: ")
                && o.stderr.contains(file.to_str().unwrap())
                && o.stderr.contains(says),
            "{}",
            o.stderr
        );
        assert!(!out.join("leaderboard.html").exists(), "nothing written");
    }
}
