//! Terminal progress: an indicatif bar per run showing epoch, loss, accuracy, watts and joules.
//!
//! Owns: presentation only. Hidden when stderr is not a terminal (CI logs, pipes, Slurm), so
//! it never interleaves with machine-readable output.

use crate::engine::train::Observer;
use crate::record::curve::CurvePoint;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

pub struct ProgressObserver {
    bar: ProgressBar,
    steps_per_epoch: usize,
    last: String,
}

impl ProgressObserver {
    /// A bar on stderr, or a hidden one when stderr is not a terminal.
    pub fn new(label: String) -> Self {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self::with_target(label, target)
    }

    /// A bar drawn to `target` (the overhead measurement draws to a sink terminal).
    pub fn with_target(label: String, target: ProgressDrawTarget) -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps {elapsed} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(label);
        Self {
            bar,
            steps_per_epoch: 1,
            last: String::new(),
        }
    }
}

impl Observer for ProgressObserver {
    fn on_start(&mut self, steps_per_epoch: usize, max_epochs: usize) {
        self.steps_per_epoch = steps_per_epoch.max(1);
        self.bar.set_length((steps_per_epoch * max_epochs) as u64);
    }
    fn on_step(&mut self, step: usize, epoch: usize) {
        self.bar.set_position(step as u64);
        if step % self.steps_per_epoch == 1 || self.steps_per_epoch == 1 {
            self.bar
                .set_message(format!("epoch {} {}", epoch + 1, self.last));
        }
    }
    fn on_eval(&mut self, p: &CurvePoint, watts: f64) {
        self.last = format!(
            "loss {:.4} acc {:.2} % {:.1} W {:.0} J",
            p.train_loss,
            100.0 * p.value,
            watts,
            p.energy_j
        );
        self.bar.set_message(format!(
            "epoch {} {}",
            p.epoch.floor() as usize + 1,
            self.last
        ));
    }
    fn on_finish(&mut self) {
        self.bar.finish_and_clear();
    }
}
