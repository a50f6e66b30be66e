//! How fast the harness trains, and what its own machinery costs (`joulebench speed`).
//!
//! Owns: timing training steps of a task outside any measured window (median over steps after
//! warm-up, with a forward / backward / optimizer split), and the harness-overhead experiment:
//! whole `train::train` runs with the meter's poller and the progress bar on against off,
//! interleaved, with resident memory sampled at every epoch.
//! Must not: write run files or report energy; these are speed numbers, printed (docs/results.md
//! "Speed" and results/speed/README.md say how they were taken).

use crate::data;
use crate::engine::model::{self, SeededRng};
use crate::engine::optim::FusedAdamW;
use crate::engine::train::{self, NoObserver, Observer, TrainOptions};
use crate::measure::estimate::EstimateMeter;
use crate::measure::fake::FakeMeter;
use crate::measure::Meter;
use crate::orchestrate::progress::ProgressObserver;
use crate::record::curve::CurvePoint;
use crate::spec::task::{OptimizerSpec, TaskSpec};
use candle_core::{Device, Tensor};
use candle_nn::{Optimizer, ParamsAdamW};
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptChoice {
    Fused,
    Candle,
}

/// Step times of one task, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct StepTiming {
    pub task: String,
    /// The variant timed (its precision recipe; see `SpeedCommand::Steps`).
    pub variant: String,
    pub device: String,
    pub batch: usize,
    pub optimizer: OptChoice,
    pub steps: usize,
    pub warmup: usize,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub gather_ms: f64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optimizer_ms: f64,
    /// CPU time of the whole process (all threads) over the timed steps divided by their
    /// number: a mean, not a median. With one thread it is the step's work, little affected by
    /// other processes' load (which inflates wall time); NaN where /proc is unreadable.
    /// Resolution: scheduler ticks (see `threads_cpu_ns`), so only meaningful when the timed
    /// steps add up to tens of milliseconds or more.
    pub cpu_ms_per_step: f64,
    pub rayon_threads: usize,
    pub candle_num_threads: Option<String>,
}

fn median(v: &mut [f64]) -> f64 {
    quantile(v, 0.5)
}

/// `stats::quantile_sorted` (type 7) of the values, sorted in place; NaN for none.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    crate::stats::quantile_sorted(v, q)
}

fn adamw_params(spec: &TaskSpec) -> ParamsAdamW {
    let OptimizerSpec::Adamw {
        lr,
        beta1,
        beta2,
        eps,
        weight_decay,
        ..
    } = spec.optimizer;
    ParamsAdamW {
        lr,
        beta1,
        beta2,
        eps,
        weight_decay,
    }
}

/// Time `steps` training steps of `spec` after `warmup` untimed ones, batches drawn in a
/// seeded random order as `train` draws them.
pub fn time_steps(
    spec: &TaskSpec,
    variant: &crate::spec::variant::Variant,
    device: &Device,
    device_label: &str,
    steps: usize,
    warmup: usize,
    choice: OptChoice,
) -> anyhow::Result<StepTiming> {
    let cast = crate::engine::precision::Amp::for_precision(variant.precision, device)?.cast;

    let bundle = data::load(spec.dataset, None)?;
    let p = crate::engine::prepare::prepare(spec, &bundle, device)?;
    let m = model::build(
        &spec.model,
        p.input,
        p.classes,
        &mut SeededRng::new(1, 0),
        device,
    )?;
    let vars = m.params().vars();
    match choice {
        OptChoice::Fused => {
            let opt = FusedAdamW::new(vars, adamw_params(spec))?;
            time_with(
                spec,
                &p,
                m.as_ref(),
                opt,
                Timed {
                    variant: &variant.name,
                    cast: &cast,
                    device,
                    device_label,
                    steps,
                    warmup,
                    choice,
                },
            )
        }
        OptChoice::Candle => {
            let opt = candle_nn::AdamW::new(vars, adamw_params(spec))?;
            time_with(
                spec,
                &p,
                m.as_ref(),
                opt,
                Timed {
                    variant: &variant.name,
                    cast: &cast,
                    device,
                    device_label,
                    steps,
                    warmup,
                    choice,
                },
            )
        }
    }
}

/// What one timing measures and how.
struct Timed<'a> {
    variant: &'a str,
    cast: &'a crate::engine::precision::Cast,
    device: &'a Device,
    device_label: &'a str,
    steps: usize,
    warmup: usize,
    choice: OptChoice,
}

fn time_with<O: Optimizer>(
    spec: &TaskSpec,
    p: &crate::engine::prepare::Prepared,
    m: &dyn model::RefModel,
    mut opt: O,
    t: Timed<'_>,
) -> anyhow::Result<StepTiming> {
    let Timed {
        variant,
        cast,
        device,
        device_label,
        steps,
        warmup,
        choice,
    } = t;
    let bs = spec.train.batch_size.min(p.n_train);
    let mut perm: Vec<u32> = (0..p.n_train as u32).collect();
    SeededRng::new(1, 1).shuffle(&mut perm);
    let order = Tensor::from_slice(&perm, perm.len(), device)?;
    let per_epoch = (p.n_train / bs).max(1);
    let (mut total, mut gather, mut fwd, mut bwd, mut upd) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let mut cpu0 = None;
    for i in 0..warmup + steps {
        if i == warmup {
            cpu0 = threads_cpu_ns();
        }
        let b = i % per_epoch;
        device.synchronize()?;
        let t0 = Instant::now();
        let idx = order.narrow(0, b * bs, bs)?;
        let x = p.train_x.index_select(&idx, 0)?;
        let y = p.train_y.index_select(&idx, 0)?;
        device.synchronize()?;
        let t1 = Instant::now();
        let loss = crate::engine::step::loss_of(m, cast, &x, &y)?;
        device.synchronize()?;
        let t2 = Instant::now();
        let grads = loss.backward()?;
        device.synchronize()?;
        let t3 = Instant::now();
        opt.step(&grads)?;
        device.synchronize()?;
        if i >= warmup {
            total.push(ms(t0));
            gather.push((t1 - t0).as_secs_f64() * 1e3);
            fwd.push((t2 - t1).as_secs_f64() * 1e3);
            bwd.push((t3 - t2).as_secs_f64() * 1e3);
            upd.push(ms(t3));
        }
    }
    let cpu_ms_per_step = match (cpu0, threads_cpu_ns()) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e6 / steps as f64,
        _ => f64::NAN,
    };
    Ok(StepTiming {
        task: spec.name.clone(),
        variant: variant.to_string(),
        device: device_label.to_string(),
        batch: bs,
        optimizer: choice,
        steps,
        warmup,
        median_ms: median(&mut total),
        p10_ms: quantile(&mut total, 0.1),
        p90_ms: quantile(&mut total, 0.9),
        gather_ms: median(&mut gather),
        forward_ms: median(&mut fwd),
        backward_ms: median(&mut bwd),
        optimizer_ms: median(&mut upd),
        cpu_ms_per_step,
        rayon_threads: rayon::current_num_threads(),
        candle_num_threads: std::env::var("CANDLE_NUM_THREADS").ok(),
    })
}

/// Resident memory of this process from /proc/self/status, in KiB: (VmRSS, VmHWM).
pub fn rss_kib() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time of this process's live threads in nanoseconds: the sum of the first field of
/// /proc/self/task/*/schedstat (nanosecond resolution; threads that have exited are not
/// counted, so use it across code whose threads persist, such as the rayon pool). The kernel
/// updates a running thread's figure at scheduler ticks (1-4 ms), so it is meaningful over
/// tens of milliseconds or more: average over many steps, never read one short step.
pub fn threads_cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for e in std::fs::read_dir("/proc/self/task").ok()? {
        let s = std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok()?;
        total += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// CPU time (user + system, all threads) this process has used, in seconds, from
/// /proc/self/stat (`utime` + `stime`, in USER_HZ = 100 ticks per second on Linux: 10 ms
/// resolution). Under contention wall time mostly measures the neighbours; CPU time is what
/// the harness itself costs.
pub fn process_cpu_s() -> Option<f64> {
    parse_cpu_s(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

fn parse_cpu_s(stat: &str) -> Option<f64> {
    // The command name (field 2) is parenthesised and may hold spaces: split after its `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After `)`: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// A terminal that formats everything a bar draws and throws it away.
#[derive(Debug)]
struct SinkTerm;

impl indicatif::TermLike for SinkTerm {
    fn width(&self) -> u16 {
        120
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        std::hint::black_box(s);
        Ok(())
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        std::hint::black_box(s);
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The progress bar plus a sampler of resident memory at each epoch start.
struct OnObserver {
    bar: ProgressObserver,
    epoch: Option<usize>,
    rss: Vec<(u64, u64)>,
}

impl Observer for OnObserver {
    fn on_start(&mut self, spe: usize, max_epochs: usize) {
        self.bar.on_start(spe, max_epochs)
    }
    fn on_step(&mut self, step: usize, epoch: usize) {
        if self.epoch != Some(epoch) {
            self.epoch = Some(epoch);
            if let Some(r) = rss_kib() {
                self.rss.push(r);
            }
        }
        self.bar.on_step(step, epoch)
    }
    fn on_eval(&mut self, p: &CurvePoint, w: f64) {
        self.bar.on_eval(p, w)
    }
    fn on_finish(&mut self) {
        if let Some(r) = rss_kib() {
            self.rss.push(r);
        }
        self.bar.on_finish()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct OverheadReport {
    pub task: String,
    pub epochs: usize,
    pub steps: usize,
    pub reps: usize,
    /// Wall seconds of `train::train` per run, in run order.
    pub on_s: Vec<f64>,
    pub off_s: Vec<f64>,
    pub on_median_s: f64,
    pub off_median_s: f64,
    /// CPU seconds (all threads) of this process during each run, in run order.
    pub on_cpu_s: Vec<f64>,
    pub off_cpu_s: Vec<f64>,
    /// on / off - 1 of the median CPU seconds: the harness's own cost, little affected by
    /// other processes' load.
    pub cpu_overhead: f64,
    /// on / off - 1, from the medians.
    pub overhead: f64,
    /// Median of the per-pair ratios on/off - 1 (pairs run back to back).
    pub paired_overhead: f64,
    /// (VmRSS, VmHWM) in KiB at each epoch start and at the end, of the last "on" run.
    pub rss_per_epoch_kib: Vec<(u64, u64)>,
    /// VmRSS at the last sample minus at the second epoch's start (the first includes
    /// allocator warm-up), KiB.
    pub rss_growth_kib: i64,
    pub meter_on: String,
    pub meter_off: String,
}

/// Interleaved on/off runs of the whole training loop (full budget, no stop at target).
pub fn overhead(spec: &TaskSpec, reps: usize, device: &Device) -> anyhow::Result<OverheadReport> {
    let bundle = data::load(spec.dataset, None)?;
    let p = crate::engine::prepare::prepare(spec, &bundle, device)?;
    let opts = TrainOptions {
        seed: 1,
        stop_at_target: false,
        forecast_stop: false,
    };
    let (mut on_s, mut off_s, mut rss, mut steps) = (Vec::new(), Vec::new(), Vec::new(), 0);
    let (mut on_cpu, mut off_cpu) = (Vec::new(), Vec::new());
    let cpu = || process_cpu_s().unwrap_or(f64::NAN);
    let mut meter_on = String::new();
    for i in 0..reps {
        let order = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for on in order {
            let m = model::build(
                &spec.model,
                p.input,
                p.classes,
                &mut SeededRng::new(1, 0),
                device,
            )?;
            let t;
            let out;
            if on {
                let mut meter = EstimateMeter::new(None)?;
                meter_on = format!("{} (background poller)", meter.name());
                let mut obs = OnObserver {
                    bar: ProgressObserver::with_target(
                        "overhead".into(),
                        // 20 Hz, as `ProgressDrawTarget::stderr()` draws the real bar; an
                        // unthrottled sink would redraw on every step, which no user's bar does.
                        indicatif::ProgressDrawTarget::term_like_with_hz(Box::new(SinkTerm), 20),
                    ),
                    epoch: None,
                    rss: Vec::new(),
                };
                let c = cpu();
                t = Instant::now();
                out = train::train(spec, &p, m.as_ref(), &opts, &mut meter, device, &mut obs)?;
                on_s.push(t.elapsed().as_secs_f64());
                on_cpu.push(cpu() - c);
                rss = obs.rss;
            } else {
                let mut meter = FakeMeter::constant(0.0);
                let c = cpu();
                t = Instant::now();
                out = train::train(
                    spec,
                    &p,
                    m.as_ref(),
                    &opts,
                    &mut meter,
                    device,
                    &mut NoObserver,
                )?;
                off_s.push(t.elapsed().as_secs_f64());
                off_cpu.push(cpu() - c);
            }
            steps = out.steps;
        }
    }
    let mut paired: Vec<f64> = on_s.iter().zip(&off_s).map(|(a, b)| a / b - 1.0).collect();
    let (mut a, mut b) = (on_s.clone(), off_s.clone());
    let (on_m, off_m) = (median(&mut a), median(&mut b));
    let (mut a, mut b) = (on_cpu.clone(), off_cpu.clone());
    let (on_cpu_m, off_cpu_m) = (median(&mut a), median(&mut b));
    let growth = match (rss.get(1), rss.last()) {
        (Some(s), Some(e)) => e.0 as i64 - s.0 as i64,
        _ => 0,
    };
    Ok(OverheadReport {
        task: spec.name.clone(),
        epochs: spec.budget.max_epochs,
        steps,
        reps,
        on_s,
        off_s,
        on_median_s: on_m,
        off_median_s: off_m,
        on_cpu_s: on_cpu,
        off_cpu_s: off_cpu,
        cpu_overhead: on_cpu_m / off_cpu_m - 1.0,
        overhead: on_m / off_m - 1.0,
        paired_overhead: median(&mut paired),
        rss_per_epoch_kib: rss,
        rss_growth_kib: growth,
        meter_on,
        meter_off: "fake (constant, no thread)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::task;

    #[test]
    fn quantiles_interpolate() {
        let mut v = vec![3.0, 1.0, 2.0, 4.0];
        assert_eq!(median(&mut v), 2.5);
        assert_eq!(quantile(&mut v, 0.0), 1.0);
        assert_eq!(quantile(&mut v, 1.0), 4.0);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn cpu_time_parses_stat_with_spaces_in_the_name() {
        let stat = "42 (a b) R 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3";
        assert_eq!(parse_cpu_s(stat), Some(3.0));
        assert_eq!(parse_cpu_s("42 (x) R 1"), None);
        assert!(process_cpu_s().expect("/proc/self/stat") >= 0.0);
        // schedstat advances at scheduler ticks: spin until it does (bounded), it must.
        let a = threads_cpu_ns().expect("/proc/self/task");
        let t = Instant::now();
        let mut x = 0u64;
        while threads_cpu_ns().expect("/proc/self/task") == a && t.elapsed().as_secs() < 5 {
            x = (0..100_000u64).fold(x, |x, i| x.wrapping_mul(31).wrapping_add(i));
        }
        std::hint::black_box(x);
        assert!(threads_cpu_ns().expect("/proc/self/task") > a);
    }

    #[test]
    fn rss_is_readable_on_linux() {
        let (rss, hwm) = rss_kib().expect("/proc/self/status");
        assert!(rss > 0 && hwm >= rss);
    }

    #[test]
    fn steps_of_the_smallest_task_time_every_part() {
        let spec = task::find(&task::default_models_dir(), "digits-mlp").unwrap();
        let f32 = crate::spec::variant::baseline();
        let t = time_steps(&spec, &f32, &Device::Cpu, "cpu", 3, 1, OptChoice::Fused).unwrap();
        assert_eq!((t.steps, t.variant.as_str()), (3, "f32"));
        assert!(t.median_ms > 0.0 && t.forward_ms > 0.0 && t.optimizer_ms > 0.0);
        assert!(t.p10_ms <= t.median_ms && t.median_ms <= t.p90_ms);
        assert!(t.cpu_ms_per_step >= 0.0, "readable, not NaN");
        // A precision variant steps through the training loop's own cast.
        let bf16 = crate::spec::variant::parse("bf16-amp").unwrap();
        let t = time_steps(&spec, &bf16, &Device::Cpu, "cpu", 2, 1, OptChoice::Fused).unwrap();
        assert_eq!(t.variant, "bf16-amp");
        assert!(t.median_ms > 0.0);
    }
}
