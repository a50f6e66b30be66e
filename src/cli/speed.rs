//! `joulebench speed steps|overhead`: arguments, checks and the printed figures; the timing is
//! `orchestrate::speed`.

use super::Failure;
use crate::orchestrate::speed::{overhead, time_steps, OptChoice};
use crate::spec::task;
use candle_core::Device;

#[derive(clap::Args, Debug, Clone)]
pub struct SpeedArgs {
    #[command(subcommand)]
    pub what: SpeedCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum SpeedCommand {
    /// Median time of one training step (batch gather, forward, backward, optimizer).
    Steps {
        /// Task name or TOML path.
        #[arg(long)]
        task: String,
        /// cpu, cuda or cuda:i.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Timed steps.
        #[arg(long, default_value_t = 50)]
        steps: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 10)]
        warmup: usize,
        /// `fused` (joulebench's) or `candle` (candle-nn's AdamW, the reference).
        #[arg(long, value_enum, default_value = "fused")]
        optimizer: OptChoice,
        /// The variant whose step is timed: its precision, through the training loop's own
        /// recipe (`precision::Amp`: low-precision weights and inputs, f32 loss and master
        /// weights). Pruning, fine-tuning and data variants step like their precision.
        #[arg(long, default_value = "f32")]
        variant: String,
        #[arg(long)]
        json: bool,
    },
    /// Wall time of whole runs with the meter poller and progress bar on against off.
    Overhead {
        #[arg(long, default_value = "digits-mlp")]
        task: String,
        /// Pairs of runs (on/off, alternating which goes first).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Override the task's epoch budget (runs train the whole budget).
        #[arg(long)]
        max_epochs: Option<usize>,
        #[arg(long)]
        json: bool,
    },
}

/// `joulebench speed ...`; errors in the user's input are `Usage`.
pub fn run(a: SpeedArgs) -> Result<i32, Failure> {
    let usage = |e: anyhow::Error| Failure::Usage(e);
    match a.what {
        SpeedCommand::Steps {
            task,
            device,
            steps,
            warmup,
            optimizer,
            variant,
            json,
        } => {
            if steps == 0 {
                return Err(usage(anyhow::anyhow!("--steps must be at least 1")));
            }
            let spec =
                task::find(&task::default_models_dir(), &task).map_err(|e| usage(e.into()))?;
            let v = crate::spec::variant::parse(&variant).map_err(|e| usage(e.into()))?;
            let (dev, label) = super::parse_device(&device).map_err(usage)?;
            // A precision the device cannot run (tf32 on the CPU) is a usage error, as in `run`.
            crate::engine::precision::Amp::for_precision(v.precision, &dev)
                .map_err(|e| usage(anyhow::anyhow!("--variant {variant}: {e}")))?;
            let t = time_steps(&spec, &v, &dev, &label, steps, warmup, optimizer)
                .map_err(Failure::Runtime)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&t).map_err(|e| Failure::Runtime(e.into()))?
                );
            } else {
                println!(
                    "{} {} on {} (batch {}, {:?} AdamW, {} threads): median {:.3} ms/step \
                     [p10 {:.3}, p90 {:.3}] = gather {:.3} + forward {:.3} + backward {:.3} + \
                     optimizer {:.3} ms; CPU {:.3} ms/step (mean, all threads)",
                    t.task,
                    t.variant,
                    t.device,
                    t.batch,
                    t.optimizer,
                    t.rayon_threads,
                    t.median_ms,
                    t.p10_ms,
                    t.p90_ms,
                    t.gather_ms,
                    t.forward_ms,
                    t.backward_ms,
                    t.optimizer_ms,
                    t.cpu_ms_per_step
                );
            }
            Ok(0)
        }
        SpeedCommand::Overhead {
            task,
            reps,
            max_epochs,
            json,
        } => {
            if reps == 0 {
                return Err(usage(anyhow::anyhow!("--reps must be at least 1")));
            }
            let mut spec =
                task::find(&task::default_models_dir(), &task).map_err(|e| usage(e.into()))?;
            if let Some(e) = max_epochs {
                if e == 0 {
                    return Err(usage(anyhow::anyhow!("--max-epochs must be at least 1")));
                }
                spec.budget.max_epochs = e;
            }
            let r = overhead(&spec, reps, &Device::Cpu).map_err(Failure::Runtime)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&r).map_err(|e| Failure::Runtime(e.into()))?
                );
            } else {
                println!(
                    "{}: {} epochs, {} steps, {} pairs: on {:.3} s, off {:.3} s (medians): \
                     overhead {:+.2} % (paired {:+.2} %); CPU time overhead {:+.2} %; meter on: \
                     {}; RSS {} -> {} KiB over epochs (growth {} KiB), peak {} KiB",
                    r.task,
                    r.epochs,
                    r.steps,
                    r.reps,
                    r.on_median_s,
                    r.off_median_s,
                    100.0 * r.overhead,
                    100.0 * r.paired_overhead,
                    100.0 * r.cpu_overhead,
                    r.meter_on,
                    r.rss_per_epoch_kib.first().map_or(0, |x| x.0),
                    r.rss_per_epoch_kib.last().map_or(0, |x| x.0),
                    r.rss_growth_kib,
                    r.rss_per_epoch_kib.last().map_or(0, |x| x.1),
                );
            }
            Ok(0)
        }
    }
}
