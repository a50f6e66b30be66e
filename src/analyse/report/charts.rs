//! SVG charts for the HTML page, drawn with plotters' SVG backend (text is SVG `<text>`, so no
//! font library is needed at build time and the browser renders it).
//!
//! Owns: energy against quality with the Pareto front, learning curves on an energy axis, and
//! a run's power timeline; and the Pareto front itself. Also a general line chart
//! ([`line_chart`]) that the collapse section (`collapse.rs`) describes and this draws.
//! Must not: read files or compute statistics (it draws what the model and run files hold).

use super::model::{RankTable, TaskBoard};
use super::Report;
use crate::measure::PowerSample;
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

/// Accuracies are drawn in percent, losses as they are.
fn quality_scale(task: &TaskBoard) -> f64 {
    if task.is_accuracy() {
        100.0
    } else {
        1.0
    }
}

/// "%, higher is better" or "nats/char, lower is better": every quality axis says which way
/// is better.
fn axis_unit(task: &TaskBoard) -> String {
    let unit = if task.is_accuracy() {
        "%".to_string()
    } else if task.unit.is_empty() {
        task.metric.clone()
    } else {
        task.unit.clone()
    };
    format!("{unit}, {}", task.direction.better())
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

/// Why a chart was not drawn (the page says so in its place).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChartError {
    /// plotters' SVG backend failed; its message.
    #[error("{0}")]
    Draw(String),
    #[error("the timeline has no power samples")]
    NoPowerSamples,
    #[error("no finite point to draw")]
    NoFinitePoint,
    /// The run id whose `power/<run-id>.csv` is missing.
    #[error("no power timeline for {0}")]
    NoTimeline(String),
}

type DrawResult = Result<(), ChartError>;
type CurveLine = (usize, String, Vec<(f64, f64)>);

/// Draw on a fresh white SVG canvas and return the SVG text.
fn render_svg(
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> DrawResult,
) -> Result<String, ChartError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(&root)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn err<E: std::fmt::Display>(e: E) -> ChartError {
    ChartError::Draw(e.to_string())
}

/// The series legend every chart here draws: 12 px labels on a white, black-bordered box.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> DrawResult {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// A chart series: `variant [system id]`, and the engine when it is not joulebench's own.
fn series_label(v: &super::model::VariantRow) -> String {
    if v.system.engine.starts_with("joulebench/") {
        format!("{} [{}]", v.variant.name, v.system.id)
    } else {
        format!("{} [{}] {}", v.variant.name, v.system.id, v.system.engine)
    }
}

/// Energy (gross window energy) against final quality: every run as a small dot, every
/// system x variant as its median, and the Pareto front through the medians.
pub fn energy_vs_quality(task: &TaskBoard, table: &RankTable) -> Result<String, ChartError> {
    let k = quality_scale(task);
    let mut groups: Vec<(String, f64, f64)> = Vec::new();
    let mut dots: Vec<(usize, f64, f64)> = Vec::new();
    for (gi, v) in table.variants.iter().enumerate() {
        let label = series_label(v);
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
            .build_cartesian_2d(x0..x1, (k * y0)..(k * y1))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("energy of the run (J)")
            .y_desc(format!("final {} ({})", task.metric, axis_unit(task)))
            .label_style((FONT, 12))
            .bold_line_style(RGBColor(215, 215, 215))
            .light_line_style(RGBColor(242, 242, 242))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                [(x0, k * task.target), (x1, k * task.target)],
                RGBColor(150, 150, 150).stroke_width(1),
            ))
            .map_err(err)?
            .label(format!(
                "target T = {}",
                super::format::level(task, task.target)
            ))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RGBColor(150, 150, 150)));
        for (gi, (label, e, q)) in groups.iter().enumerate() {
            let color = Palette99::pick(gi).to_rgba();
            chart
                .draw_series(
                    dots.iter()
                        .filter(|d| d.0 == gi)
                        .map(|d| Circle::new((d.1, k * d.2), 3, color.mix(0.35).filled())),
                )
                .map_err(err)?;
            chart
                .draw_series([Circle::new((*e, k * q), 6, color.filled())])
                .map_err(err)?
                .label(label.clone())
                .legend(move |(x, y)| Circle::new((x + 9, y), 5, color.filled()));
        }
        // The front is taken on quality in the better-is-greater sense (a loss negated).
        let sign = task.direction.sign();
        let pts: Vec<(f64, f64)> = groups.iter().map(|g| (g.1, sign * g.2)).collect();
        let front: Vec<(f64, f64)> = pareto_front(&pts)
            .into_iter()
            .map(|i| (pts[i].0, k * sign * pts[i].1))
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
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        Ok(())
    })
}

/// Quality against cumulative energy for every run (one colour per system x variant), with T
/// and c as horizontal lines.
pub fn learning_curves(
    task: &TaskBoard,
    table: &RankTable,
    report: &Report,
) -> Result<String, ChartError> {
    // (colour index, legend label or empty, points)
    let ks = quality_scale(task);
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
                .map(|p| (p.energy_j, ks * p.value))
                .collect();
            let label = if k == 0 {
                series_label(v)
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
            .chain([ks * task.target, ks * task.chance]),
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
            .y_desc(format!("{} ({})", task.metric, axis_unit(task)))
            .label_style((FONT, 12))
            .bold_line_style(RGBColor(215, 215, 215))
            .light_line_style(RGBColor(242, 242, 242))
            .draw()
            .map_err(err)?;
        for (level, name) in [(task.target, "T"), (task.chance, "c")] {
            let grey = RGBColor(150, 150, 150);
            chart
                .draw_series(DashedLineSeries::new(
                    [(x0, ks * level), (x1, ks * level)],
                    6,
                    4,
                    grey.stroke_width(1),
                ))
                .map_err(err)?
                .label(format!("{name} = {}", super::format::level(task, level)))
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
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        Ok(())
    })
}

/// Power of each component over the run's window, from `power/<run-id>.csv`.
pub fn power_timeline(
    run_id: &str,
    samples: &[PowerSample],
    boundary: &str,
) -> Result<String, ChartError> {
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
        return Err(ChartError::NoPowerSamples);
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
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        Ok(())
    })
}

/// The colour of a line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stroke {
    /// Colour `i` of plotters' 99-colour palette (the same one the run charts use).
    Palette(usize),
    /// A reference (black).
    Black,
    /// A guide (grey).
    Grey,
}

impl Stroke {
    fn color(self) -> RGBAColor {
        match self {
            Stroke::Palette(i) => Palette99::pick(i).to_rgba(),
            Stroke::Black => BLACK.to_rgba(),
            Stroke::Grey => RGBColor(150, 150, 150).to_rgba(),
        }
    }
}

/// One line of a [`LineChart`]: solid lines are 2 px, dashed ones 1 px. Points that are not
/// finite (or not positive on a log axis) are left out and break the line there.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Legend entry; empty: none.
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub stroke: Stroke,
    pub dashed: bool,
    /// Hollow circles on the line (where something happened, e.g. a detector fired).
    pub markers: Vec<(f64, f64)>,
}

/// A horizontal line across the whole chart (a chance level, a closed-form value).
#[derive(Debug, Clone, PartialEq)]
pub struct Level {
    pub label: String,
    pub y: f64,
    pub stroke: Stroke,
}

/// Where the legend goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Legend {
    UpperLeft,
    UpperRight,
    MiddleRight,
    LowerLeft,
    LowerRight,
}

/// A chart of lines, described as data so its content can be tested without drawing it.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    /// A logarithmic x axis, when every x is positive (the axis title then says "log scale").
    pub log_x: bool,
    pub lines: Vec<Line>,
    pub levels: Vec<Level>,
    pub legend: Legend,
}

fn finite_point(p: &(f64, f64), log_x: bool) -> bool {
    p.0.is_finite() && p.1.is_finite() && (!log_x || p.0 > 0.0)
}

/// The runs of consecutive drawable points of a line.
pub fn segments(points: &[(f64, f64)], log_x: bool) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut cur = Vec::new();
    for p in points {
        if finite_point(p, log_x) {
            cur.push(*p);
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// An axis label: whole numbers without a decimal point ("20", not "20.0"), others rounded
/// to 6 significant digits.
pub fn tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v == v.round() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let digits = (5 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
        let s = format!("{v:.digits$}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Draw a [`LineChart`].
pub fn line_chart(c: &LineChart) -> Result<String, ChartError> {
    let xs = || c.lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let log_x = c.log_x && xs().all(|x| x.is_finite() && x > 0.0);
    let drawable = |p: &&(f64, f64)| finite_point(p, log_x);
    if !c
        .lines
        .iter()
        .any(|l| l.points.iter().filter(drawable).count() > 0)
    {
        return Err(ChartError::NoFinitePoint);
    }
    let pts = || {
        c.lines
            .iter()
            .flat_map(|l| l.points.iter().filter(drawable))
    };
    let (y0, y1) = span(
        pts().map(|p| p.1).chain(c.levels.iter().map(|l| l.y)),
        0.06,
        false,
    );
    let x_desc = if log_x {
        format!("{}, log scale", c.x_desc)
    } else {
        c.x_desc.clone()
    };
    if log_x {
        let (lo, hi) = pts().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
        // A tenth of a decade of room on each side.
        let (x0, x1) = (lo / 1.26, hi * 1.26);
        render_svg(|root| {
            draw_lines(
                root,
                c,
                (&x_desc, true),
                (x0..x1).log_scale(),
                (x0, x1),
                y0..y1,
            )
        })
    } else {
        let (x0, x1) = span(pts().map(|p| p.0), 0.03, false);
        render_svg(|root| draw_lines(root, c, (&x_desc, false), x0..x1, (x0, x1), y0..y1))
    }
}

fn draw_lines<X>(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    c: &LineChart,
    (x_desc, log_x): (&str, bool),
    x_range: X,
    (x0, x1): (f64, f64),
    y_range: std::ops::Range<f64>,
) -> DrawResult
where
    X: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    X::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(root)
        .caption(&c.title, (FONT, 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range, y_range)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(&c.y_desc)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .label_style((FONT, 12))
        .bold_line_style(RGBColor(215, 215, 215))
        .light_line_style(RGBColor(242, 242, 242))
        .draw()
        .map_err(err)?;
    for level in &c.levels {
        let color = level.stroke.color();
        let s = chart
            .draw_series(DashedLineSeries::new(
                [(x0, level.y), (x1, level.y)],
                6,
                4,
                color.stroke_width(1),
            ))
            .map_err(err)?;
        if !level.label.is_empty() {
            s.label(level.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
    }
    for line in &c.lines {
        let color = line.stroke.color();
        let width = if line.dashed { 1 } else { 2 };
        let mut labelled = false;
        for seg in segments(&line.points, log_x) {
            let s = if line.dashed {
                chart
                    .draw_series(DashedLineSeries::new(seg, 6, 4, color.stroke_width(width)))
                    .map_err(err)?
            } else {
                chart
                    .draw_series(LineSeries::new(seg, color.stroke_width(width)))
                    .map_err(err)?
            };
            if !labelled && !line.label.is_empty() {
                labelled = true;
                s.label(line.label.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(width))
                });
            }
        }
        chart
            .draw_series(
                line.markers
                    .iter()
                    .filter(|p| finite_point(p, log_x))
                    .map(|&p| Circle::new(p, 5, color.stroke_width(2))),
            )
            .map_err(err)?;
    }
    let position = match c.legend {
        Legend::UpperLeft => SeriesLabelPosition::UpperLeft,
        Legend::UpperRight => SeriesLabelPosition::UpperRight,
        Legend::MiddleRight => SeriesLabelPosition::MiddleRight,
        Legend::LowerLeft => SeriesLabelPosition::LowerLeft,
        Legend::LowerRight => SeriesLabelPosition::LowerRight,
    };
    draw_legend(&mut chart, position)?;
    Ok(())
}

/// Every chart of one table, as (caption, svg); a chart that cannot be drawn becomes a caption
/// saying why, with no svg.
pub fn for_table(
    task: &TaskBoard,
    table: &RankTable,
    report: &Report,
) -> Vec<(String, Result<String, ChartError>)> {
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
            None => Err(ChartError::NoTimeline(id.to_string())),
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

    #[test]
    fn ticks_drop_a_useless_decimal_point() {
        assert_eq!(tick(20.0), "20");
        assert_eq!(tick(-600.0), "-600");
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(-0.0), "0");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(-1.5), "-1.5");
        assert_eq!(tick(0.1 + 0.2), "0.3");
        assert_eq!(tick(1234.5), "1234.5");
    }

    #[test]
    fn lines_break_at_points_that_cannot_be_drawn() {
        let nan = f64::NAN;
        let p = [(1.0, 1.0), (2.0, nan), (3.0, 3.0), (4.0, 4.0), (0.0, 5.0)];
        assert_eq!(
            segments(&p, false),
            vec![vec![(1.0, 1.0)], vec![(3.0, 3.0), (4.0, 4.0), (0.0, 5.0)]]
        );
        // On a log axis x = 0 cannot be drawn either.
        assert_eq!(
            segments(&p, true),
            vec![vec![(1.0, 1.0)], vec![(3.0, 3.0), (4.0, 4.0)]]
        );
        assert!(segments(&[(nan, 1.0)], false).is_empty());
    }

    fn chart(log_x: bool, points: Vec<(f64, f64)>) -> LineChart {
        LineChart {
            title: "t".into(),
            x_desc: "energy (J)".into(),
            y_desc: "y".into(),
            log_x,
            lines: vec![Line {
                label: "a".into(),
                points,
                stroke: Stroke::Palette(0),
                dashed: false,
                markers: vec![(10.0, 2.0)],
            }],
            levels: vec![Level {
                label: "c".into(),
                y: 0.5,
                stroke: Stroke::Grey,
            }],
            legend: Legend::LowerRight,
        }
    }

    #[test]
    fn line_chart_draws_one_polyline_per_line_and_says_log_scale() {
        let pts = vec![(1.0, 1.0), (10.0, 2.0), (100.0, 3.0)];
        let svg = line_chart(&chart(true, pts.clone())).unwrap();
        assert!(svg.contains("energy (J), log scale"), "{svg}");
        assert!(!svg.contains("NaN"));
        assert_eq!(svg.matches("<circle").count(), 1);
        // The line (3 points) and its legend sample (2 points).
        let polylines: Vec<&str> = svg.split("<polyline").skip(1).collect();
        let three = polylines
            .iter()
            .filter(|p| {
                p.split("points=\"")
                    .nth(1)
                    .map(|q| q.split('"').next().unwrap_or("").split_whitespace().count())
                    == Some(3)
            })
            .count();
        assert_eq!(three, 1, "{svg}");
        // A zero x cannot be on a log axis: the chart falls back to a linear one.
        let svg = line_chart(&chart(true, vec![(0.0, 1.0), (10.0, 2.0)])).unwrap();
        assert!(!svg.contains("log scale"));
        assert!(line_chart(&chart(false, vec![(f64::NAN, 1.0)])).is_err());
    }
}
