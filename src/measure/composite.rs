//! Several meters read as one (e.g. NVML for the GPU board plus RAPL for the host: G+H).
//!
//! Owns: fan-out of start/read/stop in a fixed order, and merging the reports (components
//! concatenated, flags de-duplicated, timelines merged, provenance merged without losing a
//! key). Must not: add energies of overlapping boundaries or relabel a source.

use super::{Boundary, ComponentInfo, Meter, MeterError, MeterReport, Source};

pub struct CompositeMeter {
    meters: Vec<Box<dyn Meter>>,
}

impl CompositeMeter {
    /// Meters are started, read and stopped in this order.
    pub fn new(meters: Vec<Box<dyn Meter>>) -> Result<Self, MeterError> {
        if meters.is_empty() {
            return Err(MeterError::Unavailable {
                meter: "composite",
                reason: "no meters to combine".into(),
            });
        }
        Ok(Self { meters })
    }

    pub fn meters(&self) -> &[Box<dyn Meter>] {
        &self.meters
    }
}

/// Merge reports in order: components and timelines concatenated (timeline sorted by time),
/// flags de-duplicated, provenance keys kept; a key two meters both set is stored as
/// `<meter>.<key>` for the later one so nothing is overwritten.
pub fn merge_reports(reports: Vec<(&'static str, MeterReport)>) -> MeterReport {
    let mut out = MeterReport::default();
    for (name, r) in reports {
        out.components.extend(r.components);
        for f in r.flags {
            if !out.flags.contains(&f) {
                out.flags.push(f);
            }
        }
        out.timeline.extend(r.timeline);
        out.provenance.merge(name, r.provenance);
    }
    out.timeline.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
    out
}

impl Meter for CompositeMeter {
    fn name(&self) -> &'static str {
        "composite"
    }

    /// Union of the boundaries of components that are actually metered: a GPU placeholder with
    /// source `unavailable` does not widen H to G+H.
    fn boundary(&self) -> Boundary {
        let comps = self.components();
        let metered: Vec<Boundary> = comps
            .iter()
            .filter(|c| c.source != Source::Unavailable)
            .map(|c| c.boundary)
            .collect();
        let pool = if metered.is_empty() {
            self.meters.iter().map(|m| m.boundary()).collect()
        } else {
            metered
        };
        pool.into_iter()
            .reduce(Boundary::union)
            .unwrap_or(Boundary::Host)
    }

    fn components(&self) -> Vec<ComponentInfo> {
        self.meters.iter().flat_map(|m| m.components()).collect()
    }

    fn start(&mut self) -> Result<(), MeterError> {
        for i in 0..self.meters.len() {
            if let Err(e) = self.meters[i].start() {
                // Close what already started so no poller thread outlives the failure.
                for m in &mut self.meters[..i] {
                    let _ = m.stop();
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn read(&mut self) -> Result<Vec<f64>, MeterError> {
        let mut out = Vec::new();
        for m in &mut self.meters {
            out.extend(m.read()?);
        }
        Ok(out)
    }

    fn stop(&mut self) -> Result<MeterReport, MeterError> {
        let mut reports = Vec::with_capacity(self.meters.len());
        let mut first_err = None;
        // Stop every meter even if one fails, then report the first failure.
        for m in &mut self.meters {
            match m.stop() {
                Ok(r) => reports.push((m.name(), r)),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(merge_reports(reports)),
        }
    }
}
