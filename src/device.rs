//! The only place a compute [`Device`] and [`DType`] are chosen. `auto` prefers CUDA, then Metal,
//! then the CPU; embeddings are computed in f32 on the CPU and in f16 on a GPU.

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// A parsed `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Auto,
    Cpu,
    Cuda(usize),
    Metal(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidArg { what: "--device", reason: format!("`{s}`: {reason}") };
        let (kind, ordinal) = match s.split_once(':') {
            Some((k, n)) => (k, Some(n.parse::<usize>().map_err(|_| bad("the ordinal after `:` must be a number"))?)),
            None => (s, None),
        };
        match (kind, ordinal) {
            ("auto", None) => Ok(DeviceSpec::Auto),
            ("cpu", None) => Ok(DeviceSpec::Cpu),
            ("cuda", n) => Ok(DeviceSpec::Cuda(n.unwrap_or(0))),
            ("metal", n) => Ok(DeviceSpec::Metal(n.unwrap_or(0))),
            _ => Err(bad("expected auto, cpu, cuda[:N] or metal[:N]")),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

/// Opens the device named by `spec`. `auto` falls back to the CPU when this build has no GPU
/// support or no GPU is present; an explicit `cuda`/`metal` that cannot be opened is an error.
pub fn open(spec: DeviceSpec) -> Result<Device> {
    let unavailable = |e: candle_core::Error| Error::Device { spec: spec.to_string(), reason: e.to_string() };
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(n) => {
            if !candle_core::utils::cuda_is_available() {
                return Err(Error::Device {
                    spec: spec.to_string(),
                    reason: "this sieve was built without CUDA support (build with `--features cuda`, see scripts/build-cuda.sh)".into(),
                });
            }
            Device::new_cuda(n).map_err(unavailable)
        }
        DeviceSpec::Metal(n) => {
            if !candle_core::utils::metal_is_available() {
                return Err(Error::Device {
                    spec: spec.to_string(),
                    reason: "this sieve was built without Metal support (build with `--features metal`)".into(),
                });
            }
            Device::new_metal(n).map_err(unavailable)
        }
        DeviceSpec::Auto => {
            if candle_core::utils::cuda_is_available() {
                match Device::new_cuda(0) {
                    Ok(d) => return Ok(d),
                    Err(e) => tracing::warn!("CUDA build but no usable GPU ({e}); using the CPU"),
                }
            }
            if candle_core::utils::metal_is_available() {
                match Device::new_metal(0) {
                    Ok(d) => return Ok(d),
                    Err(e) => tracing::warn!("Metal build but no usable GPU ({e}); using the CPU"),
                }
            }
            Ok(Device::Cpu)
        }
    }
}

/// The compute dtype for a device: f32 on the CPU (fast and exact there), f16 on GPUs.
pub fn compute_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::F16
    }
}

/// A short human name for logs and run.json.
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(_) => "cuda".to_string(),
        Device::Metal(_) => "metal".to_string(),
    }
}
