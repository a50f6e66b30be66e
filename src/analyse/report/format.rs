//! Number and label formatting shared by every export (one place, so the Markdown, terminal,
//! HTML and LaTeX tables print the same digits).
//!
//! Owns: how an energy, a percentage, a change, an interval and a JPP label are written.
//! Must not: compute statistics.

use super::model::{Ci, EnergyClass, RankTable, TaskBoard};

/// An energy in joules with about four significant figures; `None` is "DNF".
pub fn joules(x: Option<f64>) -> String {
    match x {
        Some(v) => num4(v),
        None => "DNF".into(),
    }
}

/// About four significant figures, fixed-point (no exponent), deterministic.
pub fn num4(v: f64) -> String {
    let a = v.abs();
    let decimals = if a >= 1000.0 {
        0
    } else if a >= 100.0 {
        1
    } else if a >= 10.0 {
        2
    } else if a >= 1.0 {
        3
    } else if a >= 0.01 {
        4
    } else {
        6
    };
    format!("{v:.decimals$}")
}

/// A fraction as a percentage with up to two decimals, trailing zeros dropped: 0.97 -> "97".
pub fn pct_trim(x: f64) -> String {
    let s = format!("{:.2}", 100.0 * x);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// A fraction as "97.04 %".
pub fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.2} %", 100.0 * v))
}

/// A relative change as "-20.3 %" (always signed).
pub fn change(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:+.1} %", 100.0 * v))
}

/// "[a, b]" of an energy interval ("DNF" for an unreached end).
pub fn ci_joules(ci: Option<Ci>) -> String {
    ci.map_or("-".into(), |c| {
        format!("[{}, {}]", joules(c.lo), joules(c.hi))
    })
}

/// "[a %, b %]" of a change interval.
pub fn ci_change(ci: Option<Ci>) -> String {
    ci.map_or("-".into(), |c| {
        format!(
            "[{}, {}]",
            change(c.lo),
            c.hi.map_or("DNF".into(), |v| format!("{:+.1} %", 100.0 * v))
        )
    })
}

/// "[0.72, 1.00]" of a probability interval.
pub fn ci_prob(ci: Option<Ci>) -> String {
    ci.map_or("-".into(), |c| {
        format!(
            "[{:.2}, {:.2}]",
            c.lo.unwrap_or(f64::NAN),
            c.hi.unwrap_or(f64::NAN)
        )
    })
}

pub fn prob(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.2}"))
}

pub fn seconds(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{} s", num4(v)))
}

pub fn cv(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.1} %", 100.0 * v))
}

/// "412.0 J/pp @ 97 % (c = 11.35 %, G)": a JPP is never printed without T, c and boundary;
/// estimated rows also say so.
pub fn jpp_label(jpp: Option<f64>, task: &TaskBoard, table: &RankTable) -> String {
    let est = if table.energy == EnergyClass::Estimated {
        ", estimated"
    } else {
        ""
    };
    match (jpp, task.is_accuracy()) {
        (None, _) => "DNF".into(),
        (Some(v), true) => format!(
            "{} J/pp @ {} % (c = {} %, {}{est})",
            num4(v),
            pct_trim(task.target),
            pct_trim(task.chance),
            table.boundary,
        ),
        (Some(v), false) => format!(
            "{} J per 0.01{} @ {} (c = {}, {}, {}{est})",
            num4(v),
            task.unit_suffix(),
            level(task, task.target),
            level(task, task.chance),
            task.direction.better(),
            table.boundary,
        ),
    }
}

/// A quality level of the task's metric: "97 %" for an accuracy, "1.4700" for a loss.
pub fn level(task: &TaskBoard, v: f64) -> String {
    if task.is_accuracy() {
        format!("{} %", pct_trim(v))
    } else {
        format!("{v:.4}")
    }
}

/// A quality value with its spread: "97.04 +- 0.12 %" or "1.4712 +- 0.0031 nats/char".
pub fn quality(task: &TaskBoard, mean: Option<f64>, sd: Option<f64>) -> String {
    let unit = task.unit_suffix();
    match (mean, sd, task.is_accuracy()) {
        (Some(m), Some(sd), true) => format!("{:.2} +- {:.2} %", 100.0 * m, 100.0 * sd),
        (Some(m), None, true) => format!("{:.2} %", 100.0 * m),
        (Some(m), Some(sd), false) => format!("{m:.4} +- {sd:.4}{unit}"),
        (Some(m), None, false) => format!("{m:.4}{unit}"),
        _ => "-".into(),
    }
}

/// What a boundary letter covers.
pub fn boundary_name(b: &str) -> &'static str {
    match b {
        "G" => "GPU board",
        "H" => "host CPU packages and DRAM",
        "G+H" => "GPU boards and host",
        "N" => "whole node, external meter",
        _ => "unknown boundary",
    }
}

/// "Measured energy, boundary H (host CPU packages and DRAM)" or its ESTIMATED twin.
pub fn table_title(table: &RankTable) -> String {
    let what = match table.energy {
        EnergyClass::Measured => "Measured energy",
        EnergyClass::Estimated => "ESTIMATED energy",
        EnergyClass::Shared => "SHARED-GPU energy (whole device)",
    };
    format!(
        "{what}, boundary {} ({})",
        table.boundary,
        boundary_name(&table.boundary)
    )
}

/// The warning above every table of runs on a shared or MIG GPU.
pub const SHARED_WARNING: &str = "Shared GPU: processes outside the job also used the board, or it is a MIG-partitioned GPU; the energy is the whole device's (NVML has no per-process or per-instance counter), with the job's share by Kepler's rule beside it in the run files (energy.attributed). These rows are never ranked with runs that had the GPU to themselves.";

/// The one-sentence warning above every estimated table.
pub const ESTIMATED_WARNING: &str = "Estimated energy: at least one component is estimated or unavailable, not measured. These rows are never ranked with measured rows.";

/// "mnist-mlp: accuracy, target T = 97 %, chance c = 11.35 %".
pub fn task_title(task: &TaskBoard) -> String {
    format!(
        "{}: {} ({}) target T = {}, chance c = {}",
        task.task,
        task.metric,
        task.direction.better(),
        level(task, task.target),
        level(task, task.chance)
    )
}

/// "f32" or "bf16-amp (unstructured 50 %, finetune, synthetic)": the name plus every field
/// that differs from the baseline.
pub fn variant_label(v: &crate::spec::variant::Variant) -> String {
    use crate::spec::variant::{Init, Pruning};
    let mut extra = Vec::new();
    if v.pruning != Pruning::None || v.sparsity != 0.0 {
        let kind = match v.pruning {
            Pruning::None => "dense",
            Pruning::Unstructured => "unstructured",
            Pruning::Structured => "structured",
        };
        extra.push(format!("{kind} {} %", pct_trim(v.sparsity)));
    }
    if v.init == Init::Finetune {
        extra.push("finetune".into());
    }
    if v.data != "real" {
        extra.push(format!("data {}", v.data));
    }
    let precision = enum_name(&v.precision);
    if precision != v.name && !v.name.contains(&precision) {
        extra.insert(0, precision);
    }
    if extra.is_empty() {
        v.name.clone()
    } else {
        format!("{} ({})", v.name, extra.join(", "))
    }
}

/// The name a unit enum has in the run file (`bf16-amp`, `unstructured`, ...).
pub fn enum_name<T: serde::Serialize>(x: &T) -> String {
    serde_json::to_value(x)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_by_hand() {
        assert_eq!(num4(183.4477), "183.4");
        assert_eq!(num4(9652.8), "9653");
        assert_eq!(num4(3.51234), "3.512");
        assert_eq!(num4(0.0432), "0.0432");
        assert_eq!(pct_trim(0.97), "97");
        assert_eq!(pct_trim(0.985), "98.5");
        assert_eq!(pct_trim(0.1135), "11.35");
        assert_eq!(change(Some(-0.2034)), "-20.3 %");
        assert_eq!(change(Some(0.05)), "+5.0 %");
        assert_eq!(joules(None), "DNF");
        assert_eq!(
            ci_joules(Some(Ci {
                lo: Some(1.0),
                hi: None
            })),
            "[1.000, DNF]"
        );
    }

    #[test]
    fn variant_labels_name_what_differs() {
        let mut v = crate::spec::variant::baseline();
        assert_eq!(variant_label(&v), "f32");
        v.name = "f32-unstructured-50".into();
        v.pruning = crate::spec::variant::Pruning::Unstructured;
        v.sparsity = 0.5;
        assert_eq!(variant_label(&v), "f32-unstructured-50 (unstructured 50 %)");
        let mut s = crate::spec::variant::baseline();
        s.name = "synthetic".into();
        s.data = "synthetic".into();
        assert_eq!(variant_label(&s), "synthetic (f32, data synthetic)");
    }
}
