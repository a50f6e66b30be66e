//! `leaderboard.tex`: a standalone LaTeX document that compiles with pdflatex, with one
//! `threeparttable` per table (booktabs rules, siunitx `S` columns aligned on the decimal
//! marker, the CIs beside them, DNF footnotes), the task's target, chance and boundary in
//! every caption. Tables can be copied into a paper as they are.
//!
//! Packages: booktabs (texlive-latex-recommended), siunitx (texlive-science), threeparttable
//! (texlive-latex-extra), geometry (texlive-latex-base). Everything from the run files is
//! escaped ([`escape`]); non-ASCII characters without a safe text-mode command become `?`.
//! Must not: compute statistics.

use super::format::{self as f, ESTIMATED_WARNING};
use super::model::{Ci, EnergyClass, GroupStats, RankTable, TaskBoard};
use super::{ExportError, Exporter, Report};

pub struct LatexExporter;

/// Escape text for LaTeX text mode (OT1 encoding, so `<`, `>` and `|` need commands too).
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    let mut prev = ' ';
    for c in s.chars() {
        // "--" would typeset as an en dash (a command-line flag must stay two hyphens).
        if c == '-' && prev == '-' {
            o.push_str("{}");
        }
        prev = c;
        match c {
            '\\' => o.push_str("\\textbackslash{}"),
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                o.push('\\');
                o.push(c);
            }
            '~' => o.push_str("\\textasciitilde{}"),
            '^' => o.push_str("\\textasciicircum{}"),
            '<' => o.push_str("\\textless{}"),
            '>' => o.push_str("\\textgreater{}"),
            '|' => o.push_str("\\textbar{}"),
            '"' => o.push_str("''"),
            '\u{ae}' => o.push_str("\\textregistered{}"),
            '\u{2122}' => o.push_str("\\texttrademark{}"),
            '\u{b0}' => o.push_str("\\textdegree{}"),
            '\u{b5}' => o.push_str("\\textmu{}"),
            '\u{2013}' => o.push_str("--"),
            '\u{2014}' => o.push_str("---"),
            c if c.is_ascii() && !c.is_ascii_control() => o.push(c),
            c if c.is_whitespace() => o.push(' '),
            _ => o.push('?'),
        }
    }
    o
}

/// Let long paths break after each `/` (escaped text in, LaTeX out).
fn breakable(tex: &str) -> String {
    tex.replace('/', "/\\allowbreak{}")
}

/// A numeric cell for an `S` column: the digits, or a braced text cell.
fn s_cell(x: Option<String>, missing: &str) -> String {
    x.unwrap_or_else(|| format!("{{{missing}}}"))
}

/// The narrowest `table-format` holding every numeric cell of a column ("+2.1", "4.3").
fn table_format(cells: &[String]) -> String {
    let (mut int, mut dec, mut sign) = (1usize, 0usize, false);
    for c in cells.iter().filter(|c| !c.starts_with('{')) {
        let body = c.trim_start_matches(['+', '-']);
        sign |= body.len() != c.len();
        let (i, d) = body.split_once('.').unwrap_or((body, ""));
        int = int.max(i.len());
        dec = dec.max(d.len());
    }
    format!("{}{int}.{dec}", if sign { "+" } else { "" })
}

fn energy(x: Option<f64>) -> Option<String> {
    x.map(f::num4)
}

fn ci_text(ci: Option<Ci>, fmt: impl Fn(f64) -> String) -> String {
    match ci {
        None => "--".into(),
        Some(c) => format!(
            "[{}, {}]",
            c.lo.map_or("DNF".into(), |v| format!("\\num{{{}}}", fmt(v))),
            c.hi.map_or("DNF".into(), |v| format!("\\num{{{}}}", fmt(v)))
        ),
    }
}

struct Notes {
    items: Vec<(String, String)>,
}

impl Notes {
    fn mark(&mut self, text: String) -> String {
        let label = note_label(self.items.len());
        self.items.push((label.clone(), text));
        format!("\\tnote{{{label}}}")
    }
}

/// The table note of an engine-limited verdict: `engine-limited` and its reason.
fn limited_mark(notes: &mut Notes, c: &super::model::Comparison) -> String {
    match &c.engine_limited {
        Some(why) => format!(
            " ({}){}",
            super::markup::ENGINE_LIMITED,
            notes.mark(format!("{}: {why}", super::markup::ENGINE_LIMITED))
        ),
        None => String::new(),
    }
}

fn note_label(i: usize) -> String {
    let letters = b"abcdefghijklmnopqrstuvwxyz";
    let mut s = String::new();
    let mut n = i;
    loop {
        s.insert(0, letters[n % 26] as char);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    s
}

fn caption(task: &TaskBoard, table: &RankTable, what: &str, resamples: usize) -> String {
    let class = match table.energy {
        EnergyClass::Measured => "measured energy".to_string(),
        EnergyClass::Estimated => format!(
            "\\textbf{{ESTIMATED energy}} ({})",
            escape(ESTIMATED_WARNING)
        ),
        EnergyClass::Shared => format!(
            "\\textbf{{SHARED-GPU energy}} ({})",
            escape(f::SHARED_WARNING)
        ),
    };
    let (t, c, per) = if task.is_accuracy() {
        (
            format!("{}\\,\\%", f::pct_trim(task.target)),
            format!("{}\\,\\%", f::pct_trim(task.chance)),
            "J per accuracy point".to_string(),
        )
    } else {
        (
            format!("{:.4}", task.target),
            format!("{:.4}", task.chance),
            format!("J per 0.01{}", escape(&task.unit_suffix())),
        )
    };
    format!(
        "\\textbf{{{}}}: {what}; {class}, boundary {} ({}). Target $T = {t}$, chance $c = {c}$ ({}, {}); JPP = ETT / (100 |T - c|) in {per} at this $T$, $c$ and boundary. Sources: {}. Medians with 95\\,\\% percentile-bootstrap CIs ({resamples} resamples).",
        escape(&task.task),
        escape(&table.boundary),
        escape(f::boundary_name(&table.boundary)),
        escape(&task.metric),
        escape(task.direction.better()),
        escape(&table.sources.join(", ")),
    )
}

fn stats_cells(s: &GroupStats) -> [String; 5] {
    [
        s_cell(energy(s.median_ett_j), "DNF"),
        ci_text(s.median_ett_ci_j, f::num4),
        s_cell(energy(s.olympic_mean_ett_j), "--"),
        s_cell(s.cv_ett.map(|v| format!("{:.1}", 100.0 * v)), "--"),
        s_cell(energy(s.median_jpp_j_per_pp), "DNF"),
    ]
}

/// A tabular: column specs (with `S` formats filled from the cells) and rows.
fn tabular(out: &mut String, specs: &[&str], header: &[&str], rows: &[Vec<String>]) {
    let cols: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if *s == "S" {
                let cells: Vec<String> = rows.iter().map(|r| r[i].clone()).collect();
                format!("S[table-format={}]", table_format(&cells))
            } else {
                s.to_string()
            }
        })
        .collect();
    out.push_str(&format!(
        "\\begin{{tabular}}{{{}}}\n\\toprule\n",
        cols.join("")
    ));
    let head: Vec<String> = specs
        .iter()
        .zip(header)
        .map(|(s, h)| {
            if *s == "S" {
                format!("{{{h}}}")
            } else {
                h.to_string()
            }
        })
        .collect();
    out.push_str(&format!("{} \\\\\n\\midrule\n", head.join(" & ")));
    for r in rows {
        out.push_str(&format!("{} \\\\\n", r.join(" & ")));
    }
    out.push_str("\\bottomrule\n\\end{tabular}\n");
}

fn end_table(out: &mut String, notes: &Notes, extra: &[String]) {
    if !notes.items.is_empty() || !extra.is_empty() {
        out.push_str("\\begin{tablenotes}\\footnotesize\n");
        for (label, text) in &notes.items {
            out.push_str(&format!("\\item[{label}] {text}\n"));
        }
        for e in extra {
            out.push_str(&format!("\\item {e}\n"));
        }
        out.push_str("\\end{tablenotes}\n");
    }
    out.push_str("\\end{threeparttable}\n\\end{table}\n\n");
}

fn dnf_note(stats: &GroupStats, who: &str) -> Option<String> {
    (!stats.notes.is_empty()).then(|| {
        format!(
            "{who}: {} of {} runs did not reach $T$: {}.",
            stats.runs - stats.converged,
            stats.runs,
            escape(&stats.notes.join("; "))
        )
    })
}

fn systems(out: &mut String, task: &TaskBoard, table: &RankTable, resamples: usize) {
    let mut notes = Notes { items: Vec::new() };
    let rows: Vec<Vec<String>> = table
        .systems
        .iter()
        .map(|s| {
            let mark = dnf_note(&s.stats, &escape(&s.system.label))
                .map(|n| notes.mark(n))
                .unwrap_or_default();
            let [med, ci, oly, cv, jpp] = stats_cells(&s.stats);
            vec![
                s.rank.map_or("--".into(), |r| r.to_string()),
                format!("{}{mark}", escape(&s.system.label)),
                format!("\\texttt{{{}}}", escape(&s.system.id)),
                format!("{}/{}", s.stats.converged, s.stats.runs),
                med,
                ci,
                oly,
                cv,
                jpp,
                s_cell(s.stats.median_ttt_s.map(f::num4), "DNF"),
            ]
        })
        .collect();
    out.push_str("\\begin{table}[!htbp]\n\\centering\\footnotesize\n\\begin{threeparttable}\n");
    out.push_str(&format!(
        "\\caption{{{}}}\n",
        caption(
            task,
            table,
            "energy to target per system (f32 baseline), ranked by median ETT",
            resamples
        )
    ));
    tabular(
        out,
        &["r", "l", "l", "r", "S", "l", "S", "S", "S", "S"],
        &[
            "Rank",
            "System",
            "Id",
            "$k/N$",
            "ETT (\\si{\\joule})",
            "95\\,\\% CI (\\si{\\joule})",
            "Olympic mean (\\si{\\joule})",
            "CV (\\si{\\percent})",
            "JPP (\\si{\\joule}/pp)",
            "TTT (\\si{\\second})",
        ],
        &rows,
    );
    end_table(out, &notes, &[]);
}

fn variants(out: &mut String, task: &TaskBoard, table: &RankTable, resamples: usize) {
    let mut notes = Notes { items: Vec::new() };
    let rows: Vec<Vec<String>> = table
        .variants
        .iter()
        .map(|v| {
            let who = format!(
                "{} on \\texttt{{{}}}",
                escape(&v.variant.name),
                escape(&v.system.id)
            );
            let mark = dnf_note(&v.stats, &who)
                .map(|n| notes.mark(n))
                .unwrap_or_default();
            let [med, ci, oly, cv, jpp] = stats_cells(&v.stats);
            let (chg, chg_ci, pb, pb_ci, verdict) = match &v.comparison {
                Some(c) => (
                    s_cell(c.change.map(|x| format!("{:+.1}", 100.0 * x)), "--"),
                    ci_text(c.change_ci, |x| format!("{:+.1}", 100.0 * x)),
                    s_cell(c.p_better.map(|x| format!("{x:.2}")), "--"),
                    ci_text(c.p_better_ci, |x| format!("{x:.2}")),
                    format!(
                        "{}{}",
                        escape(c.verdict.as_str()),
                        limited_mark(&mut notes, c)
                    ),
                ),
                None => (
                    "{--}".into(),
                    "--".into(),
                    "{--}".into(),
                    "--".into(),
                    if v.baseline {
                        "baseline".into()
                    } else {
                        "no baseline".into()
                    },
                ),
            };
            vec![
                format!("\\texttt{{{}}}", escape(&v.system.id)),
                format!("{}{mark}", escape(&f::variant_label(&v.variant))),
                format!("{}/{}", v.stats.converged, v.stats.runs),
                med,
                ci,
                oly,
                cv,
                jpp,
                chg,
                chg_ci,
                pb,
                pb_ci,
                verdict,
            ]
        })
        .collect();
    let mut ids: Vec<String> = table
        .variants
        .iter()
        .map(|v| {
            format!(
                "\\texttt{{{}}} = {}",
                escape(&v.system.id),
                escape(&v.system.label)
            )
        })
        .collect();
    ids.dedup();
    out.push_str("\\begin{table}[!htbp]\n\\centering\\footnotesize\n\\begin{threeparttable}\n");
    out.push_str(&format!(
        "\\caption{{{}}}\n",
        caption(
            task,
            table,
            "variants against the f32 baseline on the same system, paired by seed (change in ETT: geometric mean of paired ratios minus 1; verdicts need every pair to reach $T$ and the CI to clear the 2\\,\\% noise threshold)",
            resamples
        )
    ));
    tabular(
        out,
        &[
            "l", "l", "r", "S", "l", "S", "S", "S", "S", "l", "S", "l", "l",
        ],
        &[
            "System",
            "Variant",
            "$k/N$",
            "ETT (\\si{\\joule})",
            "95\\,\\% CI (\\si{\\joule})",
            "Olympic mean (\\si{\\joule})",
            "CV (\\si{\\percent})",
            "JPP (\\si{\\joule}/pp)",
            "$\\Delta$ETT (\\si{\\percent})",
            "95\\,\\% CI (\\si{\\percent})",
            "P(better)",
            "95\\,\\% CI",
            "Verdict",
        ],
        &rows,
    );
    end_table(out, &notes, &[format!("Systems: {}.", ids.join("; "))]);
}

fn phases(out: &mut String, task: &TaskBoard, table: &RankTable, resamples: usize) {
    let rows: Vec<Vec<String>> = table
        .phases
        .iter()
        .map(|p| {
            vec![
                format!("\\texttt{{{}}}", escape(&p.system_id)),
                escape(&p.variant),
                escape(&p.phase),
                p.runs.to_string(),
                f::num4(p.median_energy_j),
                format!("{:.1}", 100.0 * p.median_share),
                f::num4(p.median_duration_s),
            ]
        })
        .collect();
    out.push_str("\\begin{table}[!htbp]\n\\centering\\footnotesize\n\\begin{threeparttable}\n");
    out.push_str(&format!(
        "\\caption{{{}}}\n",
        caption(
            task,
            table,
            "measured spans (phases) of pipeline runs, medians over runs",
            resamples
        )
    ));
    tabular(
        out,
        &["l", "l", "l", "r", "S", "S", "S"],
        &[
            "System",
            "Variant",
            "Phase",
            "Runs",
            "Energy (\\si{\\joule})",
            "Share (\\si{\\percent})",
            "Duration (\\si{\\second})",
        ],
        &rows,
    );
    end_table(out, &Notes { items: Vec::new() }, &[]);
}

/// The engine comparison: the same variant and system trained by two engines.
fn engines(out: &mut String, task: &TaskBoard, table: &RankTable, resamples: usize) {
    let mut notes = Notes { items: Vec::new() };
    let rows: Vec<Vec<String>> = table
        .engines
        .iter()
        .map(|e| {
            let c = &e.comparison;
            vec![
                format!("\\texttt{{{}}}", escape(&e.system.id)),
                escape(&e.variant),
                escape(&e.system.engine),
                escape(&e.reference_engine),
                format!("{}/{}", e.stats.converged, e.stats.runs),
                s_cell(energy(e.stats.median_ett_j), "DNF"),
                s_cell(energy(e.reference.median_ett_j), "DNF"),
                escape(&format!(
                    "{} {}",
                    f::change(c.change),
                    f::ci_change(c.change_ci)
                )),
                format!(
                    "{}{}",
                    escape(&super::document::verdict_cell(c.verdict, &c.reason)),
                    limited_mark(&mut notes, c)
                ),
            ]
        })
        .collect();
    out.push_str("\\begin{table}[!htbp]\n\\centering\\footnotesize\n\\begin{threeparttable}\n");
    out.push_str(&format!(
        "\\caption{{{}}}\n",
        caption(
            task,
            table,
            "engines on the same system and variant, ETT paired by seed against the reference engine",
            resamples
        )
    ));
    tabular(
        out,
        &["l", "l", "l", "l", "r", "S", "S", "l", "l"],
        &[
            "System",
            "Variant",
            "Engine",
            "Reference",
            "$k/N$",
            "ETT (\\si{\\joule})",
            "Ref.\\ ETT (\\si{\\joule})",
            "Change [95\\,\\% CI]",
            "Verdict",
        ],
        &rows,
    );
    end_table(out, &notes, &[escape(super::document::ENGINES_NOTE)]);
}

impl Exporter for LatexExporter {
    fn export(&self, report: &Report) -> Result<Vec<u8>, ExportError> {
        let lb = &report.leaderboard;
        let resamples = lb.statistics.bootstrap_resamples;
        let mut out = format!("% generated by {}\n", lb.generated_by.replace('\n', " "));
        out.push_str(
            "\\documentclass[a4paper,10pt]{article}\n\
             \\usepackage[landscape,margin=1.5cm]{geometry}\n\
             \\usepackage{booktabs}\n\
             \\usepackage{siunitx}\n\
             \\usepackage{threeparttable}\n\
             \\sisetup{group-minimum-digits=5, retain-explicit-plus}\n\
             \\setlength{\\tabcolsep}{3pt}\n\
             \\begin{document}\n\
             \\section*{joulebench leaderboard}\n",
        );
        out.push_str(&format!(
            "Generated by {}. Results folders: {}.\n\n",
            breakable(&escape(&lb.generated_by)),
            breakable(&escape(
                &lb.folders
                    .iter()
                    .map(|x| format!("{} ({} runs)", x.path, x.runs))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        ));
        for task in &lb.tasks {
            out.push_str(&format!(
                "\\subsection*{{{}}}\n",
                escape(&f::task_title(task))
            ));
            for table in &task.tables {
                if !table.systems.is_empty() {
                    systems(&mut out, task, table, resamples);
                }
                variants(&mut out, task, table, resamples);
                if !table.phases.is_empty() {
                    phases(&mut out, task, table, resamples);
                }
                if !table.engines.is_empty() {
                    engines(&mut out, task, table, resamples);
                }
            }
            out.push_str("\\clearpage\n");
        }
        if !lb.skipped.is_empty() {
            out.push_str("\\subsection*{Skipped}\n\\begin{itemize}\n");
            for s in &lb.skipped {
                out.push_str(&format!("\\item {}\n", escape(s)));
            }
            out.push_str("\\end{itemize}\n");
        }
        out.push_str("\\end{document}\n");
        Ok(out.into_bytes())
    }
    fn file_name(&self) -> &'static str {
        "leaderboard.tex"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_special_character() {
        assert_eq!(
            escape("a_b & 5% $x$ #1 {y}"),
            "a\\_b \\& 5\\% \\$x\\$ \\#1 \\{y\\}"
        );
        assert_eq!(
            escape("~^\\"),
            "\\textasciitilde{}\\textasciicircum{}\\textbackslash{}"
        );
        assert_eq!(
            escape("Intel\u{ae} <x>"),
            "Intel\\textregistered{} \\textless{}x\\textgreater{}"
        );
        assert_eq!(escape("\u{4e2d}"), "?");
        assert_eq!(escape("--out"), "-{}-out");
    }

    #[test]
    fn table_formats() {
        let c = |v: &[&str]| table_format(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(c(&["183.4", "9653", "{DNF}"]), "4.1");
        assert_eq!(c(&["+5.0", "-20.3"]), "+2.1");
        assert_eq!(c(&["{--}"]), "1.0");
        assert_eq!(note_label(0), "a");
        assert_eq!(note_label(26), "aa");
    }
}
