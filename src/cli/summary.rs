//! The one human line `run`, `sweep` and `exec` print per finished run.

use crate::record::RunRecord;

/// One human line per finished run.
pub fn summary_line(r: &RunRecord) -> String {
    let src: Vec<&str> = r
        .energy
        .components
        .iter()
        .map(|c| c.source.as_str())
        .collect();
    let energy = format!(
        "{:.1} J ({}, {})",
        r.energy.total_j,
        r.energy.boundary.as_str(),
        src.join("+")
    );
    // An accuracy in percent, a loss in its unit (nats per character).
    let level = |v: f64| match r.quality.direction {
        crate::spec::task::Direction::Higher => format!("{:.2} %", 100.0 * v),
        crate::spec::task::Direction::Lower => format!("{v:.4} (lower is better)"),
    };
    let q = r.quality.final_value.map_or("-".into(), level);
    let tail = match (r.ett_j, r.ttt_s, &r.jpp_label) {
        (Some(e), Some(t), Some(l)) => format!("ETT {e:.1} J, TTT {t:.1} s, JPP {l}"),
        _ if r.variant.data == "random" => format!(
            "throughput track: {:.4} J/sample, {:.3} J/step (no target, never ranked)",
            r.energy.total_j / r.samples.max(1) as f64,
            r.energy.total_j / r.steps.max(1) as f64
        ),
        _ => format!(
            "did not reach {} (best {})",
            level(r.quality.target),
            r.quality.best.map_or("-".into(), level)
        ),
    };
    format!(
        "{} {} seed {}: {} | final {q} | energy {energy} in {:.1} s | {tail}",
        r.task,
        r.variant.name,
        r.seed,
        r.status.as_str(),
        r.time.total_s
    )
}
