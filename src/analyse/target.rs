//! `joulebench target`: a task's quality target T from its reference curves, the full-budget
//! f32 runs of the task in one or more results folders (docs/design/measurement.md: T is the
//! knee of the mean curve, rounded to the grid, reached by every seed).
//!
//! Owns: which run files are reference curves and the choice of T over them. Must not: print
//! (the CLI says what was skipped and what was chosen).

use crate::record::curve::Status;
use crate::record::read::{read_run, run_files};
use crate::spec::task::Direction;
use crate::stats::knee::{self, AlignedCurves, KneeError, SeedCurve, TargetChoice};
use std::path::{Path, PathBuf};

/// Why no target could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("--grid-pp must be in (0, 10] percentage points, got {0}")]
    Grid(f64),
    #[error("results folder {0}")]
    Folder(#[from] crate::record::read::FileError),
    #[error(
        "no full-budget f32 runs of task '{task}' in {folders}: make them with `joulebench run --task {task} --seeds 10 --full-budget`"
    )]
    NoCurves { task: String, folders: String },
    #[error(transparent)]
    Knee(#[from] KneeError),
}

/// A run file that was not used, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub path: PathBuf,
    pub why: String,
}

/// The target chosen over the reference curves, with the curves aligned by step.
#[derive(Debug, Clone)]
pub struct Target {
    pub choice: TargetChoice,
    pub aligned: AlignedCurves,
    pub direction: Direction,
    pub chance: f64,
    /// Run files of the folders that could not be read or whose run failed or diverged.
    pub skipped: Vec<Skipped>,
}

/// The reference curves of `task` in `dirs`: full-budget runs of the f32 baseline that did
/// not fail or diverge, one per seed, sorted by seed; then T on the `grid_pp` grid.
pub fn choose(dirs: &[impl AsRef<Path>], task: &str, grid_pp: f64) -> Result<Target, TargetError> {
    if !(grid_pp > 0.0 && grid_pp <= 10.0) {
        return Err(TargetError::Grid(grid_pp));
    }
    let baseline: crate::record::RunVariant = crate::spec::variant::baseline().into();
    let mut curves = Vec::new();
    let mut skipped = Vec::new();
    // The metric's direction and chance level, from the runs themselves.
    let mut metric: Option<(Direction, f64)> = None;
    for dir in dirs {
        for path in run_files(dir.as_ref())? {
            let rec = match read_run(&path) {
                Ok(r) => r,
                Err(e) => {
                    skipped.push(Skipped {
                        path,
                        why: e.reason(),
                    });
                    continue;
                }
            };
            // joulebench's own full-budget f32 runs: a program under `exec` trains its own
            // way, so its curve is not this task's reference.
            if rec.task != task
                || rec.variant != baseline
                || rec.config.stop_at_target
                || rec.engine.is_some()
            {
                continue;
            }
            if rec.status == Status::Failed || rec.status == Status::Diverged {
                skipped.push(Skipped {
                    path,
                    why: format!("status {}", rec.status.as_str()),
                });
                continue;
            }
            metric.get_or_insert((rec.quality.direction, rec.quality.chance));
            curves.push(SeedCurve {
                seed: rec.seed,
                points: rec
                    .quality
                    .curve
                    .iter()
                    .map(|p| (p.step, p.epoch, p.value))
                    .collect(),
            });
        }
    }
    curves.sort_by_key(|c| c.seed);
    let Some((direction, chance)) = metric else {
        return Err(TargetError::NoCurves {
            task: task.to_string(),
            folders: dirs
                .iter()
                .map(|d| d.as_ref().display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let aligned = knee::align(&curves)?;
    let choice = knee::choose_target_in(&aligned, grid_pp, direction, chance)?;
    Ok(Target {
        choice,
        aligned,
        direction,
        chance,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_grids_and_folders_without_reference_curves_are_refused() {
        let t = tempfile::tempdir().unwrap();
        for grid in [0.0, -1.0, 10.5, f64::NAN] {
            assert!(matches!(
                choose(&[t.path()], "digits-mlp", grid),
                Err(TargetError::Grid(_))
            ));
        }
        std::fs::create_dir(t.path().join("runs")).unwrap();
        let e = choose(&[t.path()], "digits-mlp", 0.5).unwrap_err();
        assert!(matches!(e, TargetError::NoCurves { .. }), "{e}");
        assert!(e.to_string().contains("--full-budget"), "{e}");
    }

    /// The committed reference curves of digits-mlp give the target its task file holds;
    /// runs of a program under `exec` (PyTorch) are never joulebench's reference curves.
    #[test]
    fn committed_curves_give_the_shipped_target_and_exec_runs_are_not_curves() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
        let t = choose(
            &[root.join("2026-11-23-cpu-curves/digits-mlp")],
            "digits-mlp",
            0.5,
        )
        .unwrap();
        assert_eq!(t.choice.seeds, 10);
        assert!(t.skipped.is_empty(), "{:?}", t.skipped);
        let shipped =
            crate::spec::task::find(&crate::spec::task::default_models_dir(), "digits-mlp")
                .unwrap();
        assert!((t.choice.target - shipped.target.value).abs() < 1e-9);
        // Full-budget f32 runs there are PyTorch's, under exec.
        let e = choose(
            &[root.join("2026-12-04-cpu-xeon-2core-engines")],
            "mnist-mlp",
            0.5,
        )
        .unwrap_err();
        assert!(matches!(e, TargetError::NoCurves { .. }), "{e}");
    }
}
