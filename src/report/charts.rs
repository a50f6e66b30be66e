//! SVG charts for the HTML page, drawn with plotters' SVG backend (text is SVG `<text>`, so no
//! font library is needed at build time and the browser renders it).
//!
//! Owns: energy against quality with the Pareto front, learning curves on an energy axis, and
//! a run's power timeline; and the Pareto front itself.
//! Must not: read files or compute statistics (it draws what the model and run files hold).

use super::model::{RankTable, TaskBoard};
use super::Report;
use crate::energy::PowerSample;
use plotters::prelude::*;
use std::collections::BTreeMap;

const SIZE: (u32, u32) = (640, 400);
const FONT: &str = "sans-serif";

/// Indices of the points on the Pareto front (less energy, more quality), by rising energy: a
/// point is on it when no other point has less or equal energy and higher or equal quality
/// (with one strict).
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..points.len())
        .filter(|&i| points[i].0.is_finite() && points[i].1.is_finite())
        .collect();
    idx.sort_by(|&a, &b| {
        points[a]
            .0
            .total_cmp(&points[b].0)
            .then(points[b].1.total_cmp(&points[a].1))
    });
    let mut front = Vec::new();
    let mut best = f64::NEG_INFINITY;
    for i in idx {
        if points[i].1 > best {
            front.push(i);
            best = points[i].1;
        }
    }
    front
}

fn span(values: impl Iterator<Item = f64>, pad_frac: f64, floor_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        (hi - lo) * pad_frac
    } else {
        hi.abs().max(1.0) * 0.1
    };
    let lo = if floor_zero {
        (lo - pad).max(0.0)
    } else {
        lo - pad
    };
    (lo, hi + pad)
}

type DrawResult = Result<(), String>;
type CurveLine = (usize, String, Vec<(f64, f64)>);

/// Draw on a fresh white SVG canvas and return the SVG text.
fn render_svg(
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> DrawResult,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(&root)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Energy (gross window energy) against final quality: every run as a small dot, every
/// system x variant as its median, and the Pareto front through the medians.
pub fn energy_vs_quality(task: &TaskBoard, table: &RankTable) -> Result<String, String> {
    let mut groups: Vec<(String, f64, f64)> = Vec::new();
    let mut dots: Vec<(usize, f64, f64)> = Vec::new();
    for (gi, v) in table.variants.iter().enumerate() {
        let label = format!("{} [{}]", v.variant.name, v.system.id);
        for r in &v.stats.run_list {
            if let Some(q) = r.final_quality {
                dots.push((gi, r.energy_j, q));
            }
        }
        if let (Some(e), Some(q)) = (v.stats.median_energy_j, v.stats.mean_final_quality) {
            groups.push((label, e, q));
        }
    }
    let (x0, x1) = span(
        dots.iter().map(|d| d.1).chain(groups.iter().map(|g| g.1)),
        0.08,
        true,
    );
    let (y0, y1) = span(
        dots.iter()
            .map(|d| d.2)
            .chain(groups.iter().map(|g| g.2))
            .chain([task.target]),
        0.15,
        false,
    );
    render_svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "{}: energy against {} (boundary {})",
                    task.task, task.metric, table.boundary
                ),
                (FONT, 18),
            )
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, (100.0 * y0)..(100.0 * y1))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("energy of the run (J)")
            .y_desc(format!("final {} (%)", task.metric))
            .label_style((FONT, 12))
            .bold_line_style(RGBColor(215, 215, 215))
            .light_line_style(RGBColor(242, 242, 242))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                [(x0, 100.0 * task.target), (x1, 100.0 * task.target)],
                RGBColor(150, 150, 150).stroke_width(1),
            ))
            .map_err(err)?
            .label(format!(
                "target T = {} %",
                super::format::pct_trim(task.target)
            ))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RGBColor(150, 150, 150)));
        for (gi, (label, e, q)) in groups.iter().enumerate() {
            let color = Palette99::pick(gi).to_rgba();
            chart
                .draw_series(
                    dots.iter()
                        .filter(|d| d.0 == gi)
                        .map(|d| Circle::new((d.1, 100.0 * d.2), 3, color.mix(0.35).filled())),
                )
                .map_err(err)?;
            chart
                .draw_series([Circle::new((*e, 100.0 * q), 6, color.filled())])
                .map_err(err)?
                .label(label.clone())
                .legend(move |(x, y)| Circle::new((x + 9, y), 5, color.filled()));
        }
        let pts: Vec<(f64, f64)> = groups.iter().map(|g| (g.1, g.2)).collect();
        let front: Vec<(f64, f64)> = pareto_front(&pts)
            .into_iter()
            .map(|i| (pts[i].0, 100.0 * pts[i].1))
            .collect();
        if front.len() >= 2 {
            chart
                .draw_series(LineSeries::new(front, BLACK.stroke_width(2)))
                .map_err(err)?
                .label("Pareto front (medians)")
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], BLACK.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        Ok(())
    })
}

/// Quality against cumulative energy for every run (one colour per system x variant), with T
/// and c as horizontal lines.
pub fn learning_curves(
    task: &TaskBoard,
    table: &RankTable,
    report: &Report,
) -> Result<String, String> {
    // (colour index, legend label or empty, points)
    let mut lines: Vec<CurveLine> = Vec::new();
    for (gi, v) in table.variants.iter().enumerate() {
        for (k, r) in v.stats.run_list.iter().enumerate() {
            let Some(run) = report.runs.get(&r.run_id) else {
                continue;
            };
            let pts: Vec<(f64, f64)> = run
                .record
                .quality
                .curve
                .iter()
                .map(|p| (p.energy_j, 100.0 * p.value))
                .collect();
            let label = if k == 0 {
                format!("{} [{}]", v.variant.name, v.system.id)
            } else {
                String::new()
            };
            lines.push((gi, label, pts));
        }
    }
    let (x0, x1) = span(
        lines
            .iter()
            .flat_map(|l| l.2.iter().map(|p| p.0))
            .chain([0.0]),
        0.03,
        true,
    );
    let (y0, y1) = span(
        lines
            .iter()
            .flat_map(|l| l.2.iter().map(|p| p.1))
            .chain([100.0 * task.target, 100.0 * task.chance]),
        0.05,
        false,
    );
    render_svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("{}: learning curves on an energy axis", task.task),
                (FONT, 18),
            )
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(format!(
                "energy since run start (J, boundary {})",
                table.boundary
            ))
            .y_desc(format!("{} (%)", task.metric))
            .label_style((FONT, 12))
            .bold_line_style(RGBColor(215, 215, 215))
            .light_line_style(RGBColor(242, 242, 242))
            .draw()
            .map_err(err)?;
        for (level, name) in [(task.target, "T"), (task.chance, "c")] {
            let grey = RGBColor(150, 150, 150);
            chart
                .draw_series(DashedLineSeries::new(
                    [(x0, 100.0 * level), (x1, 100.0 * level)],
                    6,
                    4,
                    grey.stroke_width(1),
                ))
                .map_err(err)?
                .label(format!("{name} = {} %", super::format::pct_trim(level)))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], grey));
        }
        for (gi, label, pts) in &lines {
            let color = Palette99::pick(*gi).to_rgba();
            let s = chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(err)?;
            if !label.is_empty() {
                s.label(label.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        Ok(())
    })
}

/// Power of each component over the run's window, from `power/<run-id>.csv`.
pub fn power_timeline(
    run_id: &str,
    samples: &[PowerSample],
    boundary: &str,
) -> Result<String, String> {
    let mut by_component: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for s in samples {
        if let Some(w) = s.power_w {
            by_component
                .entry(&s.component)
                .or_default()
                .push((s.t_s, w));
        }
    }
    if by_component.is_empty() {
        return Err("the timeline has no power samples".into());
    }
    let (x0, x1) = span(samples.iter().map(|s| s.t_s).chain([0.0]), 0.02, true);
    let (_, y1) = span(
        by_component.values().flatten().map(|p| p.1).chain([0.0]),
        0.1,
        true,
    );
    render_svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(format!("power timeline of {run_id}"), (FONT, 16))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, 0.0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("time since window start (s)")
            .y_desc(format!("power (W, boundary {boundary})"))
            .label_style((FONT, 12))
            .bold_line_style(RGBColor(215, 215, 215))
            .light_line_style(RGBColor(242, 242, 242))
            .draw()
            .map_err(err)?;
        for (i, (component, pts)) in by_component.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(err)?
                .label(component.to_string())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        Ok(())
    })
}

/// Every chart of one table, as (caption, svg); a chart that cannot be drawn becomes a caption
/// saying why, with no svg.
pub fn for_table(
    task: &TaskBoard,
    table: &RankTable,
    report: &Report,
) -> Vec<(String, Result<String, String>)> {
    let mut out = vec![
        (
            format!(
                "{}: energy of each run against its final {}; large dots are medians per system and variant, the black line their Pareto front.",
                task.task, task.metric
            ),
            energy_vs_quality(task, table),
        ),
        (
            format!("{}: {} against energy since run start, one line per run.", task.task, task.metric),
            learning_curves(task, table, report),
        ),
    ];
    if let Some(id) = &table.timeline_run {
        let chart = match report.timelines.get(id) {
            Some(samples) => power_timeline(id, samples, &table.boundary),
            None => Err(format!("no power timeline for {id}")),
        };
        out.push((
            format!("Power timeline of {id} (the median-ETT run of the first system's baseline)."),
            chart,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pareto_front_by_hand() {
        // (energy, quality): 0 and 2 are on the front; 1 is beaten by 0 (less energy, better);
        // 3 costs more than 2 for less quality; 4 is the most accurate.
        let p = [
            (10.0, 0.90),
            (12.0, 0.85),
            (15.0, 0.95),
            (20.0, 0.94),
            (30.0, 0.97),
        ];
        assert_eq!(pareto_front(&p), vec![0, 2, 4]);
        assert_eq!(pareto_front(&[]), Vec::<usize>::new());
        // Equal energy: only the better one.
        assert_eq!(pareto_front(&[(5.0, 0.5), (5.0, 0.7)]), vec![1]);
    }
}
