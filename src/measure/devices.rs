//! Which GPUs of a node one measured window meters (`exec --devices`, a suite's `devices`).
//!
//! Owns: the node seam (`GpuNode`: how many GPUs NVML numbers, each one's UUID, a reader per
//! device), the `--devices` syntax (`all`, or NVML indices, `GPU-` and `MIG-` UUIDs; a MIG
//! instance is its parent GPU, named), the default
//! (the devices `CUDA_VISIBLE_DEVICES` names, by index or UUID, else device 0 with a note), and
//! the board meter over a selection, one component `gpu:<NVML index>` per device, plus the
//! node's other GPUs named as present but not metered.
//! Must not: call NVML itself (`nvml_gpu::NvmlNode` implements the seam, `fake::FakeNode` is a
//! node of scripted boards) or decide anything about energy (`gpu` does).

use super::gpu::{DeviceError, DriverVersions, GpuMeter, GpuReader};
use super::MeterError;
use std::sync::Arc;

/// A node's GPUs as NVML numbers them (PCI bus order, the numbering `nvidia-smi` shows).
pub trait GpuNode {
    fn device_count(&self) -> Result<u32, DeviceError>;
    /// `GPU-...`.
    fn uuid(&self, index: u32) -> Result<String, DeviceError>;
    /// The device's name, for notes (`NVIDIA H100 80GB HBM3`).
    fn name(&self, index: u32) -> Result<String, DeviceError>;
    fn reader(&self, index: u32) -> Result<Arc<dyn GpuReader>, DeviceError>;
    fn driver(&self) -> DriverVersions;
    /// The GPU a MIG instance (`MIG-...`) is a slice of, and the instance's name with its
    /// profile (`NVIDIA H100 80GB HBM3 MIG 3g.40gb`).
    fn mig_parent(&self, mig_uuid: &str) -> Result<(u32, String), DeviceError>;
}

/// What `--devices` asked for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeviceSpec {
    /// No `--devices`: what `CUDA_VISIBLE_DEVICES` names, else device 0 (with a note).
    Visible,
    All,
    /// NVML indices, `GPU-` and `MIG-` UUIDs, in the order given.
    List(Vec<String>),
}

/// `all`, or a comma-separated list of NVML indices, `GPU-` and `MIG-` UUIDs without repeats.
pub fn parse_devices(s: &str) -> Result<DeviceSpec, String> {
    let s = s.trim();
    if s == "all" {
        return Ok(DeviceSpec::All);
    }
    let entries: Vec<String> = s.split(',').map(|e| e.trim().to_string()).collect();
    for (i, e) in entries.iter().enumerate() {
        let ok = e.parse::<u32>().is_ok()
            || ((e.starts_with("GPU-") || e.starts_with("MIG-")) && e.len() > 4);
        if !ok {
            return Err(format!(
                "--devices '{s}': '{e}' is not an NVML index or a GPU-/MIG- UUID (expected all, or e.g. 0,1 or GPU-8f3c...)"
            ));
        }
        if entries[..i].contains(e) {
            return Err(format!("--devices '{s}': '{e}' is listed twice"));
        }
    }
    Ok(DeviceSpec::List(entries))
}

/// The devices a window meters, as NVML indices (each board once: two MIG instances of one
/// GPU are that GPU), the names the program is given as `CUDA_VISIBLE_DEVICES` (GPU or MIG
/// UUIDs), the MIG instances among them, and why, when the choice was a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub indices: Vec<u32>,
    pub uuids: Vec<String>,
    /// `MIG-... (NVIDIA H100 80GB HBM3 MIG 3g.40gb) on nvml 0`.
    pub mig: Vec<String>,
    pub note: Option<String>,
}

/// How a multi-GPU window names its device in run files: `cuda (nvml 0,1)`.
const LABEL_PREFIX: &str = "cuda (nvml ";

impl Selection {
    /// `0,1,3`.
    pub fn label(&self) -> String {
        self.indices
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The run file's `device`: `cuda (nvml 0,1,3)`.
    pub fn device_label(&self) -> String {
        format!("{LABEL_PREFIX}{})", self.label())
    }
}

/// The first NVML index of a `Selection::device_label`, or None for any other device label.
pub fn first_index_of_label(device: &str) -> Option<u32> {
    device
        .strip_prefix(LABEL_PREFIX)?
        .split([',', ')'])
        .next()?
        .parse()
        .ok()
}

/// One entry resolved: the board's NVML index, the name the program sees it by, and the MIG
/// instance it is, if it is one.
fn resolve(
    node: &dyn GpuNode,
    entry: &str,
    count: u32,
) -> Result<(u32, String, Option<String>), DeviceError> {
    if let Ok(i) = entry.parse::<u32>() {
        return if i < count {
            Ok((i, node.uuid(i)?, None))
        } else {
            Err(DeviceError::NoSuchDevice { index: i, count })
        };
    }
    if entry.starts_with("MIG-") {
        let (parent, profile) = node.mig_parent(entry)?;
        return Ok((
            parent,
            entry.to_string(),
            Some(format!("{entry} ({profile}) on nvml {parent}")),
        ));
    }
    for i in 0..count {
        if node.uuid(i)? == entry {
            return Ok((i, entry.to_string(), None));
        }
    }
    Err(DeviceError::UuidNotOnNode(entry.to_string()))
}

/// The devices `spec` names on `node`; `cuda_visible` is `CUDA_VISIBLE_DEVICES` as set.
pub fn select(
    node: &dyn GpuNode,
    spec: &DeviceSpec,
    cuda_visible: Option<&str>,
) -> Result<Selection, DeviceError> {
    let count = node.device_count()?;
    if count == 0 {
        return Err(DeviceError::NoDevices);
    }
    let visible = cuda_visible.map(str::trim).filter(|s| !s.is_empty());
    let (entries, note): (Vec<String>, Option<String>) = match (spec, visible) {
        (DeviceSpec::All, _) => ((0..count).map(|i| i.to_string()).collect(), None),
        (DeviceSpec::List(entries), _) => (entries.clone(), None),
        (DeviceSpec::Visible, Some(list)) => (
            list.split(',').map(|e| e.trim().to_string()).collect(),
            Some(format!("the devices CUDA_VISIBLE_DEVICES={list} names")),
        ),
        (DeviceSpec::Visible, None) => (
            vec!["0".to_string()],
            Some(format!(
                "device 0 only: no --devices and no CUDA_VISIBLE_DEVICES ({count} GPU(s) on this node; --devices all meters every one)"
            )),
        ),
    };
    let mut out = Selection {
        indices: Vec::new(),
        uuids: Vec::new(),
        mig: Vec::new(),
        note,
    };
    for e in &entries {
        let (index, name, mig) = resolve(node, e, count)?;
        if !out.indices.contains(&index) {
            out.indices.push(index);
        }
        out.uuids.push(name);
        out.mig.extend(mig);
    }
    Ok(out)
}

/// The board meter over `selection`: component `gpu:<NVML index>` per device; the node's other
/// GPUs are named in the meter's notes as present but not metered, so a node-level reader
/// knows what boundary G left out.
pub fn meter(node: &dyn GpuNode, selection: &Selection) -> Result<GpuMeter, MeterError> {
    let unavailable = |e: DeviceError| MeterError::Unavailable {
        meter: "nvml",
        reason: e.to_string(),
    };
    let readers = selection
        .indices
        .iter()
        .map(|&i| Ok((format!("gpu:{i}"), node.reader(i).map_err(unavailable)?)))
        .collect::<Result<Vec<_>, MeterError>>()?;
    let count = node.device_count().map_err(unavailable)?;
    let others: Vec<String> = (0..count)
        .filter(|i| !selection.indices.contains(i))
        .map(|i| {
            format!(
                "nvml {i} ({})",
                node.name(i).unwrap_or_else(|e| format!("unreadable: {e}"))
            )
        })
        .collect();
    let why = selection.note.as_deref().unwrap_or("as asked (--devices)");
    let mig = if selection.mig.is_empty() {
        String::new()
    } else {
        format!(
            "; MIG instance(s) {}: the energy is the whole GPU's (NVML has no per-instance counter)",
            selection.mig.join(", ")
        )
    };
    Ok(GpuMeter::with_readers(readers, node.driver())?
        .with_not_metered(others)
        .with_selection(format!("nvml {}: {why}{mig}", selection.label())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_label_reads_back() {
        let sel = Selection {
            indices: vec![3, 1],
            uuids: vec![],
            mig: vec![],
            note: None,
        };
        assert_eq!(sel.device_label(), "cuda (nvml 3,1)");
        assert_eq!(first_index_of_label(&sel.device_label()), Some(3));
        assert_eq!(first_index_of_label("cuda:0"), None);
    }

    #[test]
    fn devices_syntax() {
        assert_eq!(parse_devices("all"), Ok(DeviceSpec::All));
        assert_eq!(
            parse_devices("0, 2,GPU-1234"),
            Ok(DeviceSpec::List(vec![
                "0".into(),
                "2".into(),
                "GPU-1234".into()
            ]))
        );
        for bad in ["", "0,,1", "x", "-1", "0,0", "GPU-", "MIG-", "all,0"] {
            assert!(parse_devices(bad).is_err(), "{bad}");
        }
    }
}
