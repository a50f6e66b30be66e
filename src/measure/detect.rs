//! Choosing the meter for a run and explaining every meter's state (`joulebench env`).
//!
//! Owns: the auto policy of docs/design/measurement.md section 2 (NVML for the training GPU, RAPL for the
//! host when readable, the labelled estimate otherwise, a GPU `unavailable` placeholder rather
//! than a TDP guess) and the error when a meter the user named is unusable.
//! Must not: measure anything itself or print (the CLI shows the probes).

use super::amdgpu;
use super::composite::CompositeMeter;
use super::devices::{self, Selection};
use super::estimate::EstimateMeter;
use super::gpu::GpuMeter;
use super::nvml_gpu;
use super::rapl::{self, FsReader, RaplMeter, DEFAULT_POWERCAP_ROOT};
use super::{Boundary, ComponentEnergy, ComponentInfo, Meter, MeterError, MeterReport, Source};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MeterChoice {
    #[default]
    Auto,
    Nvml,
    Amdgpu,
    Rapl,
    Estimate,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DetectOptions {
    pub choice: MeterChoice,
    /// `Some(i)` when training on `cuda:i`.
    pub gpu_index: Option<usize>,
    /// The NVML devices of a multi-GPU window (`exec --devices`); wins over `gpu_index` for NVML.
    pub gpu_devices: Option<Selection>,
    /// `--cpu-tdp-w`, used only by the estimate.
    pub cpu_tdp_w: Option<f64>,
    pub powercap_root: PathBuf,
    /// Where amdgpu devices are listed (`/sys/class/drm`, or `$JOULEBENCH_DRM_ROOT`).
    pub drm_root: PathBuf,
}

impl Default for DetectOptions {
    fn default() -> Self {
        Self {
            choice: MeterChoice::Auto,
            gpu_index: None,
            gpu_devices: None,
            cpu_tdp_w: None,
            powercap_root: PathBuf::from(DEFAULT_POWERCAP_ROOT),
            drm_root: amdgpu::drm_root(),
        }
    }
}

/// One meter's state on this machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterProbe {
    pub meter: &'static str,
    pub available: bool,
    pub source: Option<Source>,
    pub boundary: Option<Boundary>,
    /// What was found, or why it is unavailable.
    pub detail: String,
}

/// A component that could not be metered: 0 J, source `unavailable`, and the reason. Used for
/// the GPU of a CUDA run when NVML is unusable, instead of a TDP guess (a 250 W-limited GPU
/// drew 123 W in a public trace).
pub struct UnavailableMeter {
    component: String,
    boundary: Boundary,
    reason: String,
}

impl UnavailableMeter {
    pub fn new(component: &str, boundary: Boundary, reason: String) -> Self {
        Self {
            component: component.to_string(),
            boundary,
            reason,
        }
    }
}

impl Meter for UnavailableMeter {
    fn name(&self) -> &'static str {
        "unavailable"
    }
    fn boundary(&self) -> Boundary {
        self.boundary
    }
    fn components(&self) -> Vec<ComponentInfo> {
        vec![ComponentInfo {
            component: self.component.clone(),
            boundary: self.boundary,
            source: Source::Unavailable,
            sample_interval_ms: 0.0,
            note: Some(self.reason.clone()),
        }]
    }
    fn start(&mut self) -> Result<(), MeterError> {
        Ok(())
    }
    fn read(&mut self) -> Result<Vec<f64>, MeterError> {
        Ok(vec![0.0])
    }
    fn stop(&mut self) -> Result<MeterReport, MeterError> {
        Ok(MeterReport {
            components: vec![ComponentEnergy {
                component: self.component.clone(),
                source: Source::Unavailable,
                energy_j: 0.0,
                sample_interval_ms: 0.0,
                coverage: 0.0,
                counter_to_integral_ratio: None,
                note: Some(self.reason.clone()),
            }],
            flags: vec![format!("{}_unavailable", self.component.replace(':', ""))],
            timeline: Vec::new(),
            provenance: Default::default(),
        })
    }
}

/// A GPU meter's probe line: the meter and its description, or why there is none.
fn gpu_probe(
    name: &'static str,
    meter: Result<GpuMeter, MeterError>,
) -> (Option<GpuMeter>, MeterProbe) {
    match meter {
        Ok(m) => {
            let probe = MeterProbe {
                meter: name,
                available: true,
                source: Some(m.primary_source()),
                boundary: Some(Boundary::Gpu),
                detail: m.describe(),
            };
            (Some(m), probe)
        }
        Err(e) => (
            None,
            MeterProbe {
                meter: name,
                available: false,
                source: None,
                boundary: None,
                detail: e.to_string(),
            },
        ),
    }
}

fn probe_nvml(opts: &DetectOptions) -> (Option<GpuMeter>, MeterProbe) {
    if let Some(sel) = &opts.gpu_devices {
        let meter = nvml_gpu::NvmlNode::init().and_then(|node| devices::meter(&node, sel));
        return gpu_probe("nvml", meter);
    }
    let Some(i) = opts.gpu_index else {
        let (available, detail) = match nvml_gpu::list_devices() {
            Ok(d) if d.is_empty() => (false, "NVML loaded but sees no device".to_string()),
            Ok(d) => (true, format!("{}; not used: training on CPU", d.join(", "))),
            Err(e) => (false, e.to_string()),
        };
        return (
            None,
            MeterProbe {
                meter: "nvml",
                available,
                source: None,
                boundary: None,
                detail,
            },
        );
    };
    gpu_probe("nvml", nvml_gpu::probe_meter(i))
}

/// The amdgpu meter for the training GPU (`cuda:i` is AMD device i), or, with `--meter amdgpu`
/// and no GPU device, every AMD GPU of the node. Without AMD devices it says so.
fn probe_amdgpu(opts: &DetectOptions) -> (Option<GpuMeter>, MeterProbe) {
    let reader: Arc<dyn rapl::SysfsReader> = Arc::new(FsReader);
    let devices = amdgpu::discover(&opts.drm_root, reader.as_ref());
    let unavailable = |detail: String| MeterProbe {
        meter: "amdgpu",
        available: false,
        source: None,
        boundary: None,
        detail,
    };
    if devices.is_empty() {
        return (None, unavailable(amdgpu::no_device(&opts.drm_root)));
    }
    let listing = devices
        .iter()
        .map(|d| amdgpu::describe(d, reader.as_ref()))
        .collect::<Vec<_>>()
        .join("; ");
    let indices = match (opts.gpu_index, opts.choice) {
        (Some(i), _) => vec![i],
        (None, MeterChoice::Amdgpu) => devices.iter().map(|d| d.index).collect(),
        (None, _) => {
            return (
                None,
                MeterProbe {
                    meter: "amdgpu",
                    available: true,
                    source: None,
                    boundary: None,
                    detail: format!("{listing}; not used: training on CPU"),
                },
            )
        }
    };
    gpu_probe("amdgpu", amdgpu::meter_for(devices, reader, Some(&indices)))
}

fn probe_rapl(opts: &DetectOptions) -> (Result<RaplMeter, MeterError>, MeterProbe) {
    let r = rapl::probe(&opts.powercap_root);
    let probe = match &r {
        Ok(m) => MeterProbe {
            meter: "rapl",
            available: true,
            source: Some(Source::MeasuredCounter),
            boundary: Some(Boundary::Host),
            detail: m.describe(),
        },
        Err(e) => MeterProbe {
            meter: "rapl",
            available: false,
            source: None,
            boundary: None,
            detail: e.to_string(),
        },
    };
    (r, probe)
}

fn probe_estimate(opts: &DetectOptions) -> (Result<EstimateMeter, MeterError>, MeterProbe) {
    let r = EstimateMeter::new(opts.cpu_tdp_w);
    let probe = match &r {
        Ok(m) => MeterProbe {
            meter: "estimate",
            available: true,
            source: Some(Source::EstimatedTdpLoad),
            boundary: Some(Boundary::Host),
            detail: format!(
                "labelled estimate, never ranked with measurements: {}; DRAM {} W constant",
                m.tdp().note,
                m.dram_w()
            ),
        },
        Err(e) => MeterProbe {
            meter: "estimate",
            available: false,
            source: None,
            boundary: None,
            detail: e.to_string(),
        },
    };
    (r, probe)
}

/// Every meter's state, for `joulebench env`.
pub fn probe_all(opts: &DetectOptions) -> Vec<MeterProbe> {
    vec![
        probe_nvml(opts).1,
        probe_amdgpu(opts).1,
        probe_rapl(opts).1,
        probe_estimate(opts).1,
    ]
}

/// The meter for this run and the probes that explain the choice. An explicitly named meter
/// that is unusable is an error carrying the reason; in auto mode missing hardware falls back
/// to a labelled alternative.
pub fn detect_meter(opts: &DetectOptions) -> Result<(Box<dyn Meter>, Vec<MeterProbe>), MeterError> {
    let (nvml_meter, nvml_probe) = probe_nvml(opts);
    let (amd_meter, amd_probe) = probe_amdgpu(opts);
    let (rapl_meter, rapl_probe) = probe_rapl(opts);
    let (estimate_meter, estimate_probe) = probe_estimate(opts);
    let nvml_reason = nvml_probe.detail.clone();
    let amd_reason = amd_probe.detail.clone();
    let probes = vec![nvml_probe, amd_probe, rapl_probe, estimate_probe];
    let meter: Box<dyn Meter> = match opts.choice {
        MeterChoice::Estimate => Box::new(estimate_meter?),
        MeterChoice::Rapl => Box::new(rapl_meter?),
        MeterChoice::Nvml => match nvml_meter {
            Some(m) => Box::new(m),
            None => {
                return Err(MeterError::Unavailable {
                    meter: "nvml",
                    reason: if opts.gpu_index.is_none() {
                        "the nvml meter needs a CUDA device (train on cuda:i)".to_string()
                    } else {
                        nvml_reason
                    },
                })
            }
        },
        MeterChoice::Amdgpu => match amd_meter {
            Some(m) => Box::new(m),
            None => {
                return Err(MeterError::Unavailable {
                    meter: "amdgpu",
                    reason: amd_reason,
                })
            }
        },
        MeterChoice::Auto => {
            let host: Box<dyn Meter> = match rapl_meter {
                Ok(r) => Box::new(r),
                Err(_) => Box::new(estimate_meter?),
            };
            // NVML's board where it has one, else the amdgpu driver's.
            let gpu_meter = nvml_meter.or(amd_meter);
            match (opts.gpu_index, gpu_meter) {
                (None, _) => host,
                (Some(_), Some(gpu)) if host.name() == "rapl" => {
                    Box::new(CompositeMeter::new(vec![Box::new(gpu), host])?)
                }
                // RAPL unreadable on a GPU run: the GPU board alone (G), not G + an estimate.
                (Some(_), Some(gpu)) => Box::new(gpu),
                (Some(i), None) => Box::new(CompositeMeter::new(vec![
                    Box::new(UnavailableMeter::new(
                        &format!("gpu:{i}"),
                        Boundary::Gpu,
                        format!("GPU energy not measured: {nvml_reason}; {amd_reason}"),
                    )),
                    host,
                ])?),
            }
        }
    };
    Ok((meter, probes))
}
