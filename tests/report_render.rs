//! The report's LaTeX compiled by pdflatex, and its HTML page loaded in headless Chromium.
//!
//! Both need programs that a dev machine may lack: each test looks for its program and, when
//! absent, prints why it skips, except under CI (or `JOULEBENCH_REQUIRE_RENDER=1`), where a
//! missing program fails the test. `.ci/run` installs Debian's texlive packages and chromium
//! before the first `cargo test`, so there they run for real.

mod common;

use joulebench::analyse::report::{load, CarbonSettings, Format, Report};
use std::path::{Path, PathBuf};
use std::process::Command;

const MACHINES: &str = "tests/fixtures/report/machines";
const REAL: &str = "tests/fixtures/report/real-cpu-estimated";
const COLLAPSE: &str = "results/collapse";

/// Skip (with the reason printed) when `program` is missing, unless CI is set or CI said it
/// must be there (`JOULEBENCH_REQUIRE_RENDER=1`, set by `.ci/run` after installing it): then
/// fail (`common::requires`).
fn have(program: &str, test: &str, install: &str) -> bool {
    common::requires_program(test, program, install, Some("JOULEBENCH_REQUIRE_RENDER"))
}

fn report_of(folders: &[PathBuf]) -> Report {
    let folders = load::resolve_folders(folders).expect("folders");
    let loaded = load::load(&folders);
    let mut issues = Vec::new();
    Report::build(
        loaded,
        "joulebench (render test)",
        CarbonSettings::default(),
        &mut issues,
    )
}

fn export(r: &Report, f: Format) -> Vec<u8> {
    f.exporter().export(r).expect("export")
}

/// A folder with one run whose names hold every LaTeX and HTML special character.
fn hostile_folder(dir: &Path) -> PathBuf {
    let src = Path::new(MACHINES).join("epyc-rapl");
    let dst = dir.join("hostile");
    std::fs::create_dir_all(dst.join("runs")).unwrap();
    let mut count = 0;
    for e in std::fs::read_dir(src.join("runs")).unwrap() {
        let path = e.unwrap().path();
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        v["task"] = "digits_mlp & <b>co</b> 100% #1 $x$ ~^\\{}".into();
        v["system"]["cpu_model"] =
            "Intel\u{ae} Xeon\u{2122} \"quoted\" <script>alert(1)</script> \u{4e2d}".into();
        v["variant"]["name"] = "f32_{weird}&%".into();
        v["run_id"] = format!("hostile-{count}").into();
        count += 1;
        std::fs::write(
            dst.join("runs").join(format!("hostile-{count}.json")),
            serde_json::to_vec(&v).unwrap(),
        )
        .unwrap();
    }
    dst
}

fn pdflatex(dir: &Path, tex: &[u8]) -> (bool, String) {
    std::fs::write(dir.join("leaderboard.tex"), tex).unwrap();
    let out = Command::new("pdflatex")
        .args([
            "-interaction=nonstopmode",
            "-halt-on-error",
            "-no-shell-escape",
            "leaderboard.tex",
        ])
        .current_dir(dir)
        .output()
        .expect("run pdflatex");
    let log = std::fs::read_to_string(dir.join("leaderboard.log")).unwrap_or_default();
    (
        out.status.success() && dir.join("leaderboard.pdf").is_file(),
        log,
    )
}

#[test]
fn latex_compiles_with_pdflatex() {
    if !have(
        "pdflatex",
        "latex_compiles_with_pdflatex",
        "CI installs texlive-latex-base, -recommended, -extra and texlive-science",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let hostile = hostile_folder(tmp.path());
    for (name, folders) in [
        ("fixtures", vec![PathBuf::from(MACHINES)]),
        ("real", vec![PathBuf::from(REAL)]),
        ("hostile", vec![hostile]),
    ] {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let (ok, log) = pdflatex(&dir, &export(&report_of(&folders), Format::Latex));
        let errors: Vec<&str> = log.lines().filter(|l| l.starts_with('!')).collect();
        assert!(ok, "{name}: pdflatex failed: {errors:?}");
        assert!(
            !log.contains("Missing character"),
            "{name}: a character was dropped"
        );
    }
}

/// Headless Chromium with the flags these machines need (no network, no sandbox as root).
fn chromium(profile: &Path) -> Command {
    let mut c = Command::new("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

#[test]
fn html_loads_in_chromium_without_console_errors_and_charts_render() {
    if !have(
        "chromium",
        "html_loads_in_chromium_without_console_errors_and_charts_render",
        "CI installs Debian's chromium",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let hostile = hostile_folder(tmp.path());
    // With the shipped collapse files (digits and Gaussian), so the collapse charts are
    // checked too.
    let report = report_of(&[PathBuf::from(MACHINES), hostile, PathBuf::from(COLLAPSE)]);
    let html = String::from_utf8(export(&report, Format::Html)).unwrap();
    let collapse = &html[html
        .find("<h2>Model collapse</h2>")
        .expect("collapse section")..];
    assert_eq!(
        collapse.matches("<svg").count(),
        7,
        "4 digits + 3 Gaussian charts"
    );
    let page = tmp.path().join("leaderboard.html");
    std::fs::write(&page, &html).unwrap();
    let url = format!("file://{}", page.display());
    // Self-contained: no reference to anything outside the page (the SVG namespace is a name,
    // not a fetch).
    let without_ns = html.replace("http://www.w3.org/2000/svg", "");
    assert!(!without_ns.contains("http://") && !without_ns.contains("https://"));
    assert!(
        !html.contains("<script"),
        "the hostile name is escaped, and the page has no script"
    );
    let charts_in_file = html.matches("<svg").count();
    assert!(charts_in_file >= 10, "{charts_in_file}");

    // 1. Load and screenshot, with the console on stderr: no console message at all (a CSP
    //    violation, a parse error or a script error would each be one).
    let shot = tmp.path().join("shot.png");
    let out = chromium(&tmp.path().join("profile1"))
        .args([
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1400,3000",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .expect("run chromium");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert!(shot.is_file(), "no screenshot: {stderr}");

    // 2. The screenshot is not blank, and chart series were painted: pixels of plotters'
    //    first palette colour (230, 25, 75), which nothing but a chart uses.
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let background = pixels
        .iter()
        .filter(|p| p[0] >= 245 && p[1] >= 245 && p[2] >= 245)
        .count();
    let non_blank = 1.0 - background as f64 / pixels.len() as f64;
    assert!(non_blank > 0.02, "screenshot nearly blank: {non_blank}");
    let series = pixels
        .iter()
        .filter(|p| {
            (p[0] as i32 - 230).abs() < 20
                && (p[1] as i32 - 25).abs() < 30
                && (p[2] as i32 - 75).abs() < 30
        })
        .count();
    assert!(series > 200, "no chart series painted ({series} pixels)");

    // 3. The browser's DOM holds the SVG charts with their axes' text.
    let dom = chromium(&tmp.path().join("profile2"))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("run chromium --dump-dom");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(
        dom.matches("<svg").count(),
        charts_in_file,
        "every chart is an element"
    );
    assert!(dom.matches("<text").count() > 10 * charts_in_file / 2);
    assert!(dom.matches("<polyline").count() + dom.matches("<path").count() > charts_in_file);
}
