//! Background sampling thread shared by the RAPL, NVML and estimate meters.
//!
//! Owns: one `std::thread` that calls a closure on a fixed schedule and keeps the timestamped
//! results, and its prompt shutdown. Must not: know what it samples, touch a device itself, or
//! use an async runtime.

use super::MeterError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One value taken by the poller, `t_s` seconds after the poller's origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Timed<T> {
    pub t_s: f64,
    pub value: T,
}

/// What the poller collected: samples in time order and the failed calls.
#[derive(Debug, Clone, Default)]
pub struct PollLog<T> {
    pub samples: Vec<Timed<T>>,
    pub errors: usize,
    pub first_error: Option<String>,
}

impl<T> PollLog<T> {
    fn new() -> Self {
        Self {
            samples: Vec::new(),
            errors: 0,
            first_error: None,
        }
    }
}

/// Calls a closure every `interval` on its own thread until stopped.
pub struct Poller<T> {
    stop_tx: Option<Sender<()>>,
    handle: Option<JoinHandle<()>>,
    log: Arc<Mutex<PollLog<T>>>,
    ticks: Arc<AtomicU64>,
    interval: Duration,
}

impl<T: Clone + Send + 'static> Poller<T> {
    /// Start sampling. The first call happens one `interval` after `origin` (the caller reads
    /// the window edge itself). Ticks are scheduled at `origin + k * interval`, so the period
    /// does not drift by the time each call takes; a tick missed because a call overran is
    /// skipped, not made up in a burst.
    pub fn spawn<F, E>(
        name: &str,
        interval: Duration,
        origin: Instant,
        mut sample: F,
    ) -> Result<Self, MeterError>
    where
        F: FnMut() -> Result<T, E> + Send + 'static,
        E: std::fmt::Display,
    {
        if interval.is_zero() {
            return Err(MeterError::Device {
                meter: "poller",
                message: format!("{name}: sample interval must be positive"),
            });
        }
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let log = Arc::new(Mutex::new(PollLog::new()));
        let ticks = Arc::new(AtomicU64::new(0));
        let thread_log = Arc::clone(&log);
        let thread_ticks = Arc::clone(&ticks);
        let handle = std::thread::Builder::new()
            .name(format!("joulebench-{name}"))
            .spawn(move || {
                let mut k: u32 = 1;
                loop {
                    let next = origin + interval * k;
                    let wait = next.saturating_duration_since(Instant::now());
                    // recv_timeout, not sleep: a stop request ends the wait at once.
                    match stop_rx.recv_timeout(wait) {
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                        Err(RecvTimeoutError::Timeout) => {}
                    }
                    let t_s = origin.elapsed().as_secs_f64();
                    let result = sample();
                    {
                        let mut log = thread_log.lock().unwrap_or_else(PoisonError::into_inner);
                        match result {
                            Ok(value) => log.samples.push(Timed { t_s, value }),
                            Err(e) => {
                                log.errors += 1;
                                if log.first_error.is_none() {
                                    log.first_error = Some(e.to_string());
                                }
                            }
                        }
                    }
                    thread_ticks.fetch_add(1, Ordering::SeqCst);
                    let elapsed = origin.elapsed();
                    let behind = (elapsed.as_nanos() / interval.as_nanos().max(1)) as u32;
                    k = (k + 1).max(behind + 1);
                }
            })
            .map_err(|e| MeterError::Io {
                meter: "poller",
                what: format!("spawning the {name} sampling thread"),
                source: e,
            })?;
        Ok(Self {
            stop_tx: Some(stop_tx),
            handle: Some(handle),
            log,
            ticks,
            interval,
        })
    }

    /// Number of completed calls (successful or not) so far.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::SeqCst)
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A copy of what has been collected so far; the poller keeps running.
    pub fn snapshot(&self) -> PollLog<T> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Ask the thread to stop, join it and return everything it collected.
    pub fn stop(mut self) -> PollLog<T> {
        self.shutdown();
        std::mem::replace(
            &mut *self.log.lock().unwrap_or_else(PoisonError::into_inner),
            PollLog::new(),
        )
    }
}

impl<T> Poller<T> {
    fn shutdown(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            // The receiver may already be gone if the thread panicked; joining reports that.
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl<T> Drop for Poller<T> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_on_schedule_and_stops_promptly() {
        let origin = Instant::now();
        let mut n = 0u32;
        let poller = Poller::spawn("test", Duration::from_millis(20), origin, move || {
            n += 1;
            Ok::<_, String>(n)
        })
        .expect("spawn");
        std::thread::sleep(Duration::from_millis(210));
        let asked = Instant::now();
        let log = poller.stop();
        // Stop must not wait out a whole interval, let alone a second.
        assert!(asked.elapsed() < Duration::from_millis(100));
        // ~10 ticks expected; allow a loaded 2-core machine to skip a few.
        assert!(
            log.samples.len() >= 5 && log.samples.len() <= 11,
            "{}",
            log.samples.len()
        );
        for w in log.samples.windows(2) {
            assert!(w[1].t_s > w[0].t_s);
        }
        // Schedule is anchored at the origin: tick k lands at or after k * 20 ms.
        assert!(log.samples[0].t_s >= 0.019);
    }

    #[test]
    fn long_interval_stop_is_prompt() {
        let poller: Poller<()> =
            Poller::spawn("slow", Duration::from_secs(5), Instant::now(), || {
                Ok::<_, String>(())
            })
            .expect("spawn");
        let asked = Instant::now();
        let log = poller.stop();
        assert!(asked.elapsed() < Duration::from_millis(200));
        assert!(log.samples.is_empty());
    }

    #[test]
    fn errors_are_counted_not_fatal() {
        let mut n = 0u32;
        let poller = Poller::spawn("err", Duration::from_millis(5), Instant::now(), move || {
            n += 1;
            if n.is_multiple_of(2) {
                Err(format!("fail {n}"))
            } else {
                Ok(n)
            }
        })
        .expect("spawn");
        while poller.ticks() < 4 {
            std::thread::sleep(Duration::from_millis(2));
        }
        let log = poller.stop();
        assert!(log.errors >= 2);
        assert_eq!(log.first_error.as_deref(), Some("fail 2"));
    }

    #[test]
    fn zero_interval_is_an_error() {
        assert!(
            Poller::<()>::spawn("z", Duration::ZERO, Instant::now(), || Ok::<_, String>(()))
                .is_err()
        );
    }
}
