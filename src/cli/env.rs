//! `joulebench env`: what this machine is, which meters it has, and which precisions run
//! natively on its devices (and in which op classes candle runs them natively), so a user
//! knows before a sweep whether a precision verdict will be about the technique.
//!
//! Owns: the env command's printing (text and JSON).

use super::{default_device, detect_options, usage, Failure};
use crate::engine::precision::engine_table;
use crate::measure::{self, MeterChoice};
use crate::spec::precision::{hardware, Arith, Capabilities, Hardware, OpClass, Support};
use candle_core::Device;
use serde_json::json;

/// The devices to describe: the CPU, and the default device when it is a GPU; `caps` are the
/// default device's capabilities as `system::collect` read them (the CPU flags are the same
/// for both, so nothing is read twice).
fn devices(
    default: &Device,
    label: &str,
    caps: &Capabilities,
) -> Vec<(Device, String, Capabilities)> {
    let cpu = Capabilities {
        cuda_compute_capability: None,
        ..caps.clone()
    };
    let mut out = vec![(Device::Cpu, "cpu".to_string(), cpu)];
    if default.is_cuda() {
        out.push((default.clone(), label.to_string(), caps.clone()));
    }
    out
}

fn hardware_cell(h: Hardware) -> (&'static str, String) {
    match h {
        Hardware::Native(r) => ("native", r),
        Hardware::Lacks(r) => ("not native", r),
        Hardware::Unknown(r) => ("unknown", r),
    }
}

fn precision_json(default: &Device, label: &str, caps: &Capabilities) -> serde_json::Value {
    let per_device: Vec<serde_json::Value> = devices(default, label, caps)
        .into_iter()
        .map(|(d, name, caps)| {
            let hw: serde_json::Map<String, serde_json::Value> = Arith::ALL
                .iter()
                .map(|a| {
                    let (support, reason) = hardware_cell(hardware(*a, d.is_cuda(), &caps));
                    (
                        a.as_str().to_string(),
                        json!({"support": support, "reason": reason}),
                    )
                })
                .collect();
            let candle: serde_json::Map<String, serde_json::Value> = engine_table(&d, &caps)
                .into_iter()
                .map(|(p, r)| {
                    let v = match r {
                        Ok(r) => json!(r.ops),
                        Err(e) => json!({"refused": e.to_string()}),
                    };
                    (p.as_str().to_string(), v)
                })
                .collect();
            json!({"device": name, "capabilities": caps, "hardware": hw, "candle": candle})
        })
        .collect();
    json!(per_device)
}

fn print_precision(default: &Device, label: &str, caps: &Capabilities) {
    for (d, name, caps) in devices(default, label, caps) {
        let what = match &caps.cuda_compute_capability {
            Some(cc) => format!("compute capability {cc}"),
            None if caps.cpu_flags_consulted.is_empty() => "CPU flags unread".to_string(),
            None if caps.cpu_flags.is_empty() => format!(
                "{}, none of {}",
                caps.arch,
                caps.cpu_flags_consulted.join(" ")
            ),
            None => format!("{}, {}", caps.arch, caps.cpu_flags.join(" ")),
        };
        println!("precision on {name} ({what}):");
        for a in Arith::ALL {
            let (support, reason) = hardware_cell(hardware(a, d.is_cuda(), &caps));
            println!("  {:<5} {support}: {reason}", a.as_str());
        }
        for (p, r) in engine_table(&d, &caps) {
            match r {
                Err(e) => println!("  candle {}: refused ({e})", p.as_str()),
                Ok(r) => {
                    let cells: Vec<String> = OpClass::ALL
                        .iter()
                        .filter_map(|op| {
                            let o = r.ops.get(op)?;
                            (o.support != Support::NotApplicable).then(|| {
                                format!("{} {} in {}", op.as_str(), o.support.as_str(), o.ran)
                            })
                        })
                        .collect();
                    println!("  candle {}: {}", p.as_str(), cells.join(", "));
                    if let Some(why) = r.limiting() {
                        println!("    verdicts engine-limited: {why}");
                    }
                }
            }
        }
    }
}

pub fn command(as_json: bool, cpu_tdp_w: Option<f64>) -> Result<(), Failure> {
    let (candle_device, device) = default_device();
    let gpu = device.strip_prefix("cuda:").and_then(|i| i.parse().ok());
    let probes = measure::probe_all(&detect_options(MeterChoice::Auto, gpu, cpu_tdp_w));
    let sys = crate::measure::system::collect(&device, None);
    if as_json {
        let v = json!({
            "system": sys,
            "default_device": device,
            "cuda_feature": cfg!(feature = "cuda"),
            "meters": probes.iter().map(|p| json!({
                "meter": p.meter, "available": p.available,
                "source": p.source.map(|s| s.as_str()),
                "boundary": p.boundary.map(|b| b.as_str()),
                "detail": p.detail,
            })).collect::<Vec<_>>(),
            "precision": precision_json(&candle_device, &device, &sys.capabilities),
        });
        println!("{}", serde_json::to_string_pretty(&v).map_err(usage)?);
        return Ok(());
    }
    println!(
        "cpu:      {} ({} logical CPUs, {:.1} GiB)",
        sys.cpu_model, sys.logical_cpus, sys.memory_gib
    );
    println!("os:       {} (kernel {})", sys.os, sys.kernel);
    println!(
        "device:   {device} (cuda feature {})",
        if cfg!(feature = "cuda") { "on" } else { "off" }
    );
    println!(
        "build:    joulebench {} {} candle {} {}",
        sys.software.joulebench_version,
        sys.software.git_commit,
        sys.software.candle_version,
        sys.software.build_profile
    );
    println!("meters:");
    for p in &probes {
        let what = match (p.available, p.source) {
            (true, Some(s)) => format!("available: {}", s.as_str()),
            (true, None) => "available".into(),
            (false, _) => "unavailable".into(),
        };
        println!("  {:<9} {what}: {}", p.meter, p.detail);
    }
    print_precision(&candle_device, &device, &sys.capabilities);
    Ok(())
}
