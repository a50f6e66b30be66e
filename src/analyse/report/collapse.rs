//! The "Model collapse" section of the leaderboard, from the collapse experiment's files
//! (`collapse_file.rs` finds and reads them).
//!
//! Owns: their section: per file the summary table (the same cells as the experiment's Markdown,
//! `collapse::digits::summary_cells`) and the charts, described as [`LineChart`]s that
//! `charts.rs` draws: for digits accuracy and log-likelihood of the real test set against
//! generation and against cumulative energy; for the Gaussian median log-variance, W2 and mean
//! variance against generation, with the closed forms.
//! Must not: compute a number the files do not hold (it picks and rescales them: accuracy to
//! %), or put collapse energy in a ranking table (it is a separate experiment with its own
//! meter, never ranked with training runs).

use super::charts::{self, Legend, Level, Line, LineChart, Stroke};
use super::collapse_file::{CollapseFile, Experiment};
use super::markup::{Align, Markup, Table};
use crate::record::collapse::GaussianGeneration;
use crate::record::collapse::{self as digits, DigitsReport};
use crate::record::collapse::{GaussianFile, Policy};

/// Collapse charts of one file: (caption, svg). HTML passes a real one; others pass none.
pub type ChartFn<'a> = dyn Fn(&CollapseFile) -> Vec<(String, String)> + 'a;

/// The section, after the ranking tables.
pub fn render<M: Markup>(files: &[CollapseFile], m: &mut M, charts: Option<&ChartFn>) {
    if files.is_empty() {
        return;
    }
    m.heading(2, "Model collapse");
    m.paragraph(
        "Recursive training on synthetic data (joulebench collapse; docs/guide.md, \"Model collapse\"). \
         A separate experiment with its own energy accounting: none of its joules are in the \
         ranking tables above.",
    );
    if charts.is_none() {
        m.paragraph(
            "Charts (accuracy and log-likelihood against generation and against cumulative \
             energy; log-variance, W2 and variance against generation) are in leaderboard.html.",
        );
    }
    for file in files {
        match &file.experiment {
            Experiment::Digits(d) => digits_section(file, d, m),
            Experiment::Gaussian(g) => gaussian_section(file, g, m),
        }
        if let Some(charts) = charts {
            for (caption, svg) in charts(file) {
                m.figure(&caption, &svg);
            }
        }
    }
}

fn seeds_list(d: &DigitsReport) -> String {
    let s: Vec<String> = d.config.seeds.iter().map(u64::to_string).collect();
    s.join(", ")
}

fn digits_section<M: Markup>(file: &CollapseFile, d: &DigitsReport, m: &mut M) {
    m.heading(
        3,
        &format!(
            "Digits, generator {} ({})",
            d.config.generator.label(),
            file.path
        ),
    );
    m.paragraph(&format!(
        "Generator: {}. {} real images per class, {} generations, seeds {}, classifier {} for {} \
         epochs per generation, scored on the real test set; chance c = {:.1} %. The detector \
         fires at the first generation whose held-out log-likelihood falls more than {} \
         nats/image, k-NN recall more than {}, or accuracy more than {} points below \
         generation 0. Collapse tax = energy of the generations thrown away through detection \
         plus one retrain on real data{}. Energy per chain: meter {} [{}], boundary {} ({}), \
         {} of {} energy windows shorter than 5 s.",
        d.generator,
        d.config.real_per_class,
        d.config.generations,
        seeds_list(d),
        digits::CLASSIFIER_TASK,
        d.config.classifier_epochs,
        100.0 * d.chance,
        d.config.detector.ll_drop,
        d.config.detector.recall_drop,
        d.config.detector.acc_drop_pp,
        d.real_retrain_j
            .map_or(" (not run: no real-only policy)".into(), |j| format!(
                " ({j:.2} J, the mean real-only generation)"
            )),
        d.meter,
        d.sources.join(", "),
        d.boundary,
        super::format::boundary_name(&d.boundary),
        d.short_windows,
        d.windows,
    ));
    if !d.measured {
        m.warning(&format!(
            "Estimated energy: meter '{}' did not measure every component. These joules are \
             estimates, not measurements.",
            d.meter
        ));
    }
    m.table(&digits_table(d));
}

/// The per-policy summary, cell for cell what `collapse-digits.md` shows.
pub fn digits_table(d: &DigitsReport) -> Table {
    Table {
        header: digits::SUMMARY_HEADER.to_vec(),
        align: digits::SUMMARY_NUMERIC
            .iter()
            .map(|&n| if n { Align::Right } else { Align::Left })
            .collect(),
        rows: d.runs.iter().map(digits::summary_cells).collect(),
        marks: Vec::new(),
    }
}

fn estimator_name(e: crate::record::collapse::Estimator) -> &'static str {
    match e {
        crate::record::collapse::Estimator::Mle => "mle",
        crate::record::collapse::Estimator::Unbiased => "unbiased",
    }
}

fn gaussian_section<M: Markup>(file: &CollapseFile, g: &GaussianFile, m: &mut M) {
    m.heading(3, &format!("Gaussian fit-and-resample ({})", file.path));
    m.paragraph(
        "N(0, 1) fitted and resampled for T generations in many independent chains; statistics \
         across chains. Closed forms: E[log v] under replace, the fixed point of E[v] under \
         mix-fresh. No energy is measured in this part.",
    );
    m.table(&gaussian_table(g));
}

fn num(v: f64, prec: usize) -> String {
    format!("{v:.prec$}")
}

/// One row per policy: the first and last generation, next to the closed forms.
pub fn gaussian_table(g: &GaussianFile) -> Table {
    use Align::*;
    Table {
        header: vec![
            "policy",
            "estimator",
            "M",
            "chains",
            "generations",
            "median log v, gen 0",
            "median log v, last",
            "mean log v, last",
            "closed-form E[log v], last",
            "mean v, last (se)",
            "closed-form fixed point E[v]",
            "median W2, last",
        ],
        align: vec![
            Left, Left, Right, Right, Right, Right, Right, Right, Right, Right, Right, Right,
        ],
        rows: g
            .runs
            .iter()
            .map(|r| {
                let c = &r.config;
                let first = &r.generations[0];
                let last = &r.generations[r.generations.len() - 1];
                vec![
                    c.policy.to_string(),
                    estimator_name(c.estimator).into(),
                    c.samples_per_generation.to_string(),
                    c.chains.to_string(),
                    c.generations.to_string(),
                    num(first.median_log_var, 3),
                    num(last.median_log_var, 3),
                    num(last.mean_log_var, 3),
                    last.predicted_mean_log_var
                        .map_or("-".into(), |p| num(p, 3)),
                    format!("{} ({})", num(last.mean_var, 4), num(last.se_mean_var, 4)),
                    r.mix_fresh_fixed_point_var
                        .map_or("-".into(), |v| num(v, 4)),
                    num(last.median_w2, 3),
                ]
            })
            .collect(),
        marks: Vec::new(),
    }
}

/// Colours: real-only is the black reference; the others take palette colours in file order.
fn strokes(policies: &[Policy]) -> Vec<Stroke> {
    let mut k = 0;
    policies
        .iter()
        .map(|p| {
            if *p == Policy::RealOnly {
                Stroke::Black
            } else {
                k += 1;
                Stroke::Palette(k - 1)
            }
        })
        .collect()
}

fn policy_label(p: Policy) -> String {
    if p == Policy::RealOnly {
        "real-only (reference)".into()
    } else {
        p.to_string()
    }
}

/// The four digits charts: accuracy and log-likelihood, against generation and against
/// cumulative energy.
pub fn digits_charts(d: &DigitsReport) -> Vec<(String, LineChart)> {
    let policies: Vec<Policy> = d.runs.iter().map(|r| r.policy).collect();
    let strokes = strokes(&policies);
    let seeds = d.config.seeds.len();
    let energy_x = format!(
        "cumulative energy per chain (J, {}, boundary {})",
        if d.measured { "measured" } else { "estimated" },
        d.boundary
    );
    let acc_y = format!("accuracy on the real test set (%, mean of {seeds} seeds)");
    let ll_y = format!("log-likelihood of real test set (nats/image, mean of {seeds} seeds)");
    let chance = Level {
        label: format!("chance c = {:.1} %", 100.0 * d.chance),
        y: 100.0 * d.chance,
        stroke: Stroke::Grey,
    };
    let lines = |x: &dyn Fn(&digits::DigitsGeneration) -> f64,
                 y: &dyn Fn(&digits::DigitsGeneration) -> f64| {
        d.runs
            .iter()
            .zip(&strokes)
            .map(|(r, &stroke)| Line {
                label: policy_label(r.policy),
                points: r.generations.iter().map(|g| (x(g), y(g))).collect(),
                stroke,
                dashed: false,
                markers: r
                    .summary
                    .detected_at
                    .and_then(|t| r.generations.iter().find(|g| g.generation == t))
                    .map(|g| vec![(x(g), y(g))])
                    .unwrap_or_default(),
            })
            .collect::<Vec<_>>()
    };
    let gen = |g: &digits::DigitsGeneration| g.generation as f64;
    let energy = |g: &digits::DigitsGeneration| g.cumulative_energy_j;
    let acc = |g: &digits::DigitsGeneration| 100.0 * g.accuracy_mean;
    let ll = |g: &digits::DigitsGeneration| g.log_likelihood_mean;
    let name = d.config.generator.label();
    let chart = |what: &str,
                 against: &str,
                 x_desc: &str,
                 y_desc: &str,
                 log_x: bool,
                 lines: Vec<Line>,
                 levels: Vec<Level>,
                 legend: Legend| LineChart {
        title: format!("collapse, generator {name}: {what} against {against}"),
        x_desc: x_desc.into(),
        y_desc: y_desc.into(),
        log_x,
        lines,
        levels,
        legend,
    };
    let circles = "circles: the generation where the detector fires";
    let est = if d.measured { "" } else { " (estimated)" };
    vec![
        (
            format!("Classifier accuracy on the real test set against generation, one line per policy; {circles}."),
            chart(
                "accuracy",
                "generation",
                "generation",
                &acc_y,
                false,
                lines(&gen, &acc),
                vec![chance.clone()],
                Legend::MiddleRight,
            ),
        ),
        (
            format!("Generator log-likelihood of the real test images against generation; {circles}."),
            chart(
                "log-likelihood",
                "generation",
                "generation",
                &ll_y,
                false,
                lines(&gen, &ll),
                vec![],
                Legend::LowerLeft,
            ),
        ),
        (
            format!("Classifier accuracy against cumulative energy{est}: quality at equal energy across policies; {circles}."),
            chart(
                "accuracy",
                "energy",
                &energy_x,
                &acc_y,
                true,
                lines(&energy, &acc),
                vec![chance],
                Legend::MiddleRight,
            ),
        ),
        (
            format!("Generator log-likelihood against cumulative energy{est}; {circles}."),
            chart(
                "log-likelihood",
                "energy",
                &energy_x,
                &ll_y,
                true,
                lines(&energy, &ll),
                vec![],
                Legend::LowerLeft,
            ),
        ),
    ]
}

/// The three Gaussian charts against generation: median log-variance (with the closed-form
/// E[log v]), median W2, and mean variance (with the closed-form fixed point of E[v]).
pub fn gaussian_charts(g: &GaussianFile) -> Vec<(String, LineChart)> {
    let policies: Vec<Policy> = g.runs.iter().map(|r| r.config.policy).collect();
    let strokes = strokes(&policies);
    let same = |f: &dyn Fn(&crate::record::collapse::GaussianConfig) -> String| {
        let first = f(&g.runs[0].config);
        g.runs
            .iter()
            .all(|r| f(&r.config) == first)
            .then_some(first)
    };
    let setting = same(&|c| {
        format!(
            "M = {}, {}",
            c.samples_per_generation,
            estimator_name(c.estimator)
        )
    });
    let chains = same(&|c| c.chains.to_string());
    let label = |r: &crate::record::collapse::GaussianReport| match &setting {
        Some(_) => r.config.policy.to_string(),
        None => format!(
            "{} (M = {}, {})",
            r.config.policy,
            r.config.samples_per_generation,
            estimator_name(r.config.estimator)
        ),
    };
    let over = chains.map_or("chains".into(), |c| format!("{c} chains"));
    let title_setting = setting
        .as_ref()
        .map_or(String::new(), |s| format!(" ({s})"));
    let mut var_lines = Vec::new();
    let var_levels = vec![Level {
        label: "N(0, 1): log v = 0".into(),
        y: 0.0,
        stroke: Stroke::Grey,
    }];
    let mut w2_lines = Vec::new();
    let mut mean_var_lines = Vec::new();
    let mut mean_var_levels = vec![Level {
        label: "N(0, 1): v = 1".into(),
        y: 1.0,
        stroke: Stroke::Grey,
    }];
    for (r, &stroke) in g.runs.iter().zip(&strokes) {
        let gen = |t: usize| t as f64;
        // One policy's solid line of a per-generation statistic.
        let solid = |y: fn(&GaussianGeneration) -> f64| Line {
            label: label(r),
            points: r
                .generations
                .iter()
                .map(|x| (gen(x.generation), y(x)))
                .collect(),
            stroke,
            dashed: false,
            markers: vec![],
        };
        var_lines.push(solid(|x| x.median_log_var));
        let predicted: Vec<(f64, f64)> = r
            .generations
            .iter()
            .filter_map(|x| x.predicted_mean_log_var.map(|p| (gen(x.generation), p)))
            .collect();
        if !predicted.is_empty() {
            var_lines.push(Line {
                label: format!("{}: closed-form E[log v]", r.config.policy),
                points: predicted,
                stroke,
                dashed: true,
                markers: vec![],
            });
        }
        mean_var_lines.push(solid(|x| x.mean_var));
        if let Some(v) = r.mix_fresh_fixed_point_var {
            mean_var_levels.push(Level {
                label: format!("{}: closed-form fixed point E[v]", r.config.policy),
                y: v,
                stroke,
            });
        }
        w2_lines.push(solid(|x| x.median_w2));
    }
    vec![
        (
            "Median over chains of log(variance) of the fitted Gaussian against generation, one solid line per policy; dashed: the closed-form E[log v] under replace (a mean: at small M the median of log v lies slightly above it).".into(),
            LineChart {
                title: format!("Gaussian fit-and-resample{title_setting}: log-variance"),
                x_desc: "generation".into(),
                y_desc: format!("log variance of the fit (median over {over})"),
                log_x: false,
                lines: var_lines,
                levels: var_levels,
                legend: Legend::LowerLeft,
            },
        ),
        (
            "Median over chains of the Wasserstein-2 distance of the fit to N(0, 1) against generation.".into(),
            LineChart {
                title: format!("Gaussian fit-and-resample{title_setting}: W2 to N(0, 1)"),
                x_desc: "generation".into(),
                y_desc: format!("W2 distance to N(0, 1) (median over {over})"),
                log_x: false,
                lines: w2_lines,
                levels: vec![],
                legend: Legend::UpperLeft,
            },
        ),
        (
            "Mean over chains of the variance of the fit against generation; dashed: the closed-form fixed point of E[v] under mix-fresh.".into(),
            LineChart {
                title: format!("Gaussian fit-and-resample{title_setting}: variance"),
                x_desc: "generation".into(),
                y_desc: format!("variance of the fit (mean over {over})"),
                log_x: false,
                lines: mean_var_lines,
                levels: mean_var_levels,
                legend: Legend::MiddleRight,
            },
        ),
    ]
}

/// Every chart of one file, drawn: (caption, svg), or (why it was not drawn, no svg).
pub fn charts(file: &CollapseFile) -> Vec<(String, Result<String, charts::ChartError>)> {
    let specs = match &file.experiment {
        Experiment::Digits(d) => digits_charts(d),
        Experiment::Gaussian(g) => gaussian_charts(g),
    };
    specs
        .into_iter()
        .map(|(caption, spec)| (caption, charts::line_chart(&spec)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyse::report::collapse_file::{parse, read, CollapseFileError};
    use std::path::Path;

    fn shipped(name: &str) -> CollapseFile {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("results/collapse")
            .join(name);
        read(&p).unwrap_or_else(|e| panic!("{e}"))
    }

    fn digits_of(f: &CollapseFile) -> &DigitsReport {
        match &f.experiment {
            Experiment::Digits(d) => d,
            Experiment::Gaussian(_) => panic!("{} is not digits", f.path),
        }
    }

    #[test]
    fn bad_files_are_classified_and_named() {
        let p = Path::new("r/collapse-digits.json");
        let e = parse(p, b"{\"runs\": [").unwrap_err();
        assert!(matches!(e, CollapseFileError::Malformed { .. }), "{e}");
        assert!(e
            .to_string()
            .starts_with("r/collapse-digits.json: malformed collapse JSON"));
        let e = parse(p, b"[1]").unwrap_err();
        assert!(e.to_string().contains("top level is not an object"), "{e}");
        let e = parse(p, br#"{"experiment": "zipf", "runs": []}"#).unwrap_err();
        assert!(e.to_string().contains("experiment 'zipf'"), "{e}");
        let e = parse(p, br#"{"runs": []}"#).unwrap_err();
        assert!(e.to_string().contains("missing field"), "{e}");
        let e = parse(p, br#"{"experiment": "gaussian", "runs": []}"#).unwrap_err();
        assert!(e.to_string().contains("no runs"), "{e}");
        // A policy name the collapse command would not accept.
        let mut v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("results/collapse/collapse-digits.json"),
            )
            .unwrap(),
        )
        .unwrap();
        v["runs"][1]["policy"] = "keep-everything".into();
        let e = parse(p, &serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(matches!(e, CollapseFileError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("keep-everything"), "{e}");
        assert_eq!(e.to_string().lines().count(), 1);
    }

    /// The report's summary table is the shipped collapse-digits.md's, cell for cell.
    #[test]
    fn digits_table_is_the_experiments_own_summary() {
        for name in ["collapse-digits.json", "gmm4/collapse-digits.json"] {
            let f = shipped(name);
            let t = digits_table(digits_of(&f));
            let md_path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("results/collapse")
                .join(name.replace(".json", ".md"));
            let md = std::fs::read_to_string(md_path).unwrap();
            let rows: Vec<Vec<String>> = md
                .split("### Summary")
                .nth(1)
                .unwrap()
                .lines()
                .filter(|l| l.starts_with("| ") && !l.starts_with("| policy"))
                .take_while(|l| !l.starts_with("| gen"))
                .map(|l| {
                    l.trim_matches('|')
                        .split(" | ")
                        .map(|c| c.trim().to_string())
                        .collect()
                })
                .collect();
            let ours: Vec<Vec<String>> = t
                .rows
                .iter()
                .map(|r| r.iter().map(|c| c.trim().to_string()).collect())
                .collect();
            assert_eq!(ours, rows, "{name}");
            assert_eq!(t.header.len(), 11);
        }
    }

    #[test]
    fn digits_charts_have_one_line_per_policy_and_honest_axes() {
        let f = shipped("collapse-digits.json");
        let d = digits_of(&f);
        let charts = digits_charts(d);
        assert_eq!(charts.len(), 4);
        for (_, c) in &charts {
            assert_eq!(c.lines.len(), 6, "{}", c.title);
            assert!(c.lines.iter().all(|l| l.points.len() == 21 && !l.dashed));
            let real = c
                .lines
                .iter()
                .find(|l| l.label.starts_with("real-only"))
                .unwrap();
            assert_eq!(real.stroke, Stroke::Black);
            assert!(real.markers.is_empty(), "real-only never collapses here");
            // replace: the detector fires at generation 1.
            let replace = c.lines.iter().find(|l| l.label == "replace").unwrap();
            assert_eq!(replace.markers, vec![replace.points[1]]);
        }
        let (acc_gen, ll_gen, acc_j, ll_j) =
            (&charts[0].1, &charts[1].1, &charts[2].1, &charts[3].1);
        assert!(!acc_gen.log_x && acc_j.log_x && ll_j.log_x);
        assert_eq!(acc_gen.levels.len(), 1);
        assert!((acc_gen.levels[0].y - 100.0 * d.chance).abs() < 1e-12);
        assert!(ll_gen.levels.is_empty());
        assert!(
            acc_j.x_desc.contains("(J, estimated, boundary H)"),
            "{}",
            acc_j.x_desc
        );
        assert!(ll_gen.y_desc.contains("nats/image"));
        // Accuracy in %, energy straight from the file.
        let run = &d.runs[1];
        let last = run.generations.last().unwrap();
        let line = &acc_j.lines[1].points;
        assert_eq!(
            line.last().copied(),
            Some((last.cumulative_energy_j, 100.0 * last.accuracy_mean))
        );
        // Measured energy says so.
        let mut measured = d.clone();
        measured.measured = true;
        assert!(digits_charts(&measured)[3]
            .1
            .x_desc
            .contains("(J, measured,"));
        for (_, c) in &charts {
            let svg = charts::line_chart(c).unwrap();
            assert!(!svg.contains("NaN"), "{}", c.title);
        }
    }

    #[test]
    fn gaussian_charts_carry_the_closed_forms() {
        let f = shipped("collapse-gaussian.json");
        let Experiment::Gaussian(g) = &f.experiment else {
            panic!("not gaussian")
        };
        let charts = gaussian_charts(g);
        assert_eq!(charts.len(), 3);
        let (logv, w2, var) = (&charts[0].1, &charts[1].1, &charts[2].1);
        // Four policies; replace also has its closed-form E[log v], dashed in its colour.
        assert_eq!(logv.lines.iter().filter(|l| !l.dashed).count(), 4);
        let closed: Vec<&Line> = logv.lines.iter().filter(|l| l.dashed).collect();
        assert_eq!(closed.len(), 1);
        assert!(closed[0].label.starts_with("replace: closed-form E[log v]"));
        let replace = logv.lines.iter().find(|l| l.label == "replace").unwrap();
        assert_eq!(closed[0].stroke, replace.stroke);
        assert_eq!(closed[0].points.len(), 21);
        assert_eq!(w2.lines.len(), 4);
        let fixed: Vec<&Level> = var
            .levels
            .iter()
            .filter(|l| l.label.contains("fixed point"))
            .collect();
        assert_eq!(fixed.len(), 1);
        assert!(fixed[0].label.starts_with("mix-fresh:0.25"));
        assert!((fixed[0].y - g.runs[3].mix_fresh_fixed_point_var.unwrap()).abs() < 1e-15);
        assert!(logv.title.contains("M = 10, mle") && logv.y_desc.contains("2000 chains"));
        let t = gaussian_table(g);
        assert_eq!(t.rows.len(), 4);
        assert_eq!(t.rows[0][0], "replace");
        assert_eq!(t.rows[3][10], "0.8276");
    }

    #[test]
    fn a_log_variance_of_minus_infinity_reads_back_and_is_not_drawn() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("results/collapse/collapse-gaussian.json");
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        // What serde_json writes for a chain whose variance reached 0.
        v["runs"][0]["generations"][20]["median_log_var"] = serde_json::Value::Null;
        let f = parse(&path, &serde_json::to_vec(&v).unwrap()).unwrap();
        let Experiment::Gaussian(g) = &f.experiment else {
            panic!("not gaussian")
        };
        assert!(g.runs[0].generations[20].median_log_var.is_nan());
        let svg = charts::line_chart(&gaussian_charts(g)[0].1).unwrap();
        assert!(!svg.contains("NaN"));
    }
}
