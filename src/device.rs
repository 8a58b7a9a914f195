//! The only place a compute [`Device`] and [`DType`] are chosen. `auto` prefers CUDA, then Metal,
//! then the CPU; embeddings are computed in f32 on the CPU and in f16 on a GPU.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::media::preprocess::PixelsMut;

/// A parsed `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum DeviceSpec {
    Auto,
    Cpu,
    Cuda(usize),
    Metal(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidArg { what: "device", reason: format!("`{s}`: {reason}") };
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
            Device::new_cuda(n).map(single_stream).map_err(unavailable)
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
                    Ok(d) => return Ok(single_stream(d)),
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

/// sieve issues all device work on the one stream candle gives a device, so cudarc's per-tensor
/// event tracking (an event record and wait around every kernel, for multi-stream safety) is
/// pure overhead; it is turned off before any tensor exists.
fn single_stream(device: Device) -> Device {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = &device {
        // SAFETY: every tensor of this device is created and used on its single stream, and
        // frees are stream-ordered, so no cross-stream synchronisation is needed.
        unsafe { d.disable_event_tracking() };
    }
    device
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

/// Free and total memory of a GPU in bytes, where the backend can say (CUDA).
pub fn memory_info(device: &Device) -> Option<(u64, u64)> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => d.cuda_stream().context().mem_get_info().ok().map(|(f, t)| (f as u64, t as u64)),
        _ => None,
    }
}

/// A parsed `--batch-size`: a number, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    Auto,
    Fixed(usize),
}

impl std::str::FromStr for BatchSize {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s == "auto" {
            return Ok(BatchSize::Auto);
        }
        match s.parse::<usize>() {
            Ok(n) if n > MAX_BATCH => Err(Error::InvalidArg {
                what: "batch size",
                reason: format!(
                    "{n} is over the bound of {MAX_BATCH} (pixel buffers of that many images are held at once)"
                ),
            }),
            Ok(n) if n > 0 => Ok(BatchSize::Fixed(n)),
            _ => Err(Error::InvalidArg {
                what: "batch size",
                reason: format!("`{s}`: expected `auto` or a number from 1 to {MAX_BATCH}"),
            }),
        }
    }
}

/// The largest `--batch-size`: three pixel buffers of a batch are in flight, and at 224 px in
/// f32 2048 images are 1.2 GB each.
pub const MAX_BATCH: usize = 2048;

/// Batch size `auto` on the CPU: big enough to keep the GEMMs efficient, small enough that the
/// first rows appear quickly.
pub const AUTO_BATCH_CPU: usize = 64;
/// The largest batch `auto` picks on a GPU; beyond it throughput no longer grows (the card is
/// saturated at 256 for ViT-B/32) while latency and host memory do.
pub const AUTO_BATCH_GPU_MAX: usize = 512;

/// Resolves `--batch-size auto`: on a GPU the largest multiple of 32 (up to
/// [`AUTO_BATCH_GPU_MAX`]) whose activations fit in half the free memory (the rest is left for
/// the allocator's caching and other processes), on the CPU [`AUTO_BATCH_CPU`].
/// `per_item` is the model's [`crate::model::Encoder::bytes_per_item`].
pub fn resolve_batch_size(spec: BatchSize, device: &Device, per_item: u64) -> usize {
    match spec {
        BatchSize::Fixed(n) => n,
        BatchSize::Auto => match memory_info(device) {
            Some((free, _)) => auto_gpu_batch(free, per_item),
            None if device.is_cpu() => AUTO_BATCH_CPU,
            None => 256, // a GPU that does not report its memory (Metal)
        },
    }
}

/// The batch `auto` picks for `free` bytes of device memory.
pub fn auto_gpu_batch(free: u64, per_item: u64) -> usize {
    let fit = (free / 2 / per_item.max(1)) as usize;
    if fit >= 32 {
        (fit / 32 * 32).min(AUTO_BATCH_GPU_MAX)
    } else {
        fit.max(1)
    }
}

/// Host memory one batch of preprocessed pixels is written into by the decoding threads and
/// copied to the device from: f32 for the CPU, the model's f16 for GPUs, in page-locked
/// (pinned) memory on CUDA so the copy is a fast DMA. The pipeline recycles a few of these, so
/// nothing is allocated per batch.
pub enum HostPixels {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
    #[cfg(feature = "cuda")]
    Pinned(candle_core::cuda_backend::cudarc::driver::PinnedHostSlice<half::f16>),
}

impl HostPixels {
    /// A buffer of `len` values for `device`, whose model computes in `dtype`.
    pub fn new(device: &Device, dtype: DType, len: usize) -> Self {
        if device.is_cpu() || dtype != DType::F16 {
            return HostPixels::F32(vec![0.0; len]);
        }
        #[cfg(feature = "cuda")]
        if let Device::Cuda(d) = device {
            // Plain page-locked memory (not write-combined: the pipeline also reads it back
            // when it packs the batch).
            // SAFETY: f16 has no invalid bit patterns; the contents are written before use.
            match unsafe { d.cuda_stream().context().alloc_pinned_with_flags::<half::f16>(len, 0) } {
                Ok(p) => return HostPixels::Pinned(p),
                Err(e) => tracing::warn!("no pinned host memory ({e}); copying from pageable memory"),
            }
        }
        HostPixels::F16(vec![half::f16::ZERO; len])
    }

    pub fn len(&self) -> usize {
        match self {
            HostPixels::F32(v) => v.len(),
            HostPixels::F16(v) => v.len(),
            #[cfg(feature = "cuda")]
            HostPixels::Pinned(p) => p.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `f(i, pixels_of_item_i)` for items `0..items` in parallel on the rayon pool, each
    /// writing `item_len` values of the buffer's type (f16 written directly, not converted
    /// from an f32 copy: see [`PixelsMut`]).
    pub fn fill<R: Send>(
        &mut self,
        items: usize,
        item_len: usize,
        f: impl Fn(usize, PixelsMut<'_>) -> R + Sync + Send,
    ) -> Result<Vec<R>> {
        use rayon::prelude::*;
        let n = items * item_len;
        assert!(n <= self.len(), "batch of {items} does not fit the pixel buffer");
        let half = |buf: &mut [half::f16]| -> Vec<R> {
            buf[..n].par_chunks_mut(item_len).enumerate().map(|(i, out)| f(i, PixelsMut::F16(out))).collect()
        };
        Ok(match self {
            HostPixels::F32(v) => {
                v[..n].par_chunks_mut(item_len).enumerate().map(|(i, out)| f(i, PixelsMut::F32(out))).collect()
            }
            HostPixels::F16(v) => half(v),
            #[cfg(feature = "cuda")]
            HostPixels::Pinned(p) => half(p.as_mut_slice().map_err(candle_core::Error::wrap)?),
        })
    }

    /// Packs the items whose `keep` is true to the front, in order; returns how many.
    pub fn compact(&mut self, keep: &[bool], item_len: usize) -> Result<usize> {
        fn pack<T: Copy>(v: &mut [T], keep: &[bool], len: usize) -> usize {
            let mut ok = 0;
            for (i, _) in keep.iter().enumerate().filter(|(_, k)| **k) {
                if ok != i {
                    v.copy_within(i * len..(i + 1) * len, ok * len);
                }
                ok += 1;
            }
            ok
        }
        Ok(match self {
            HostPixels::F32(v) => pack(v, keep, item_len),
            HostPixels::F16(v) => pack(v, keep, item_len),
            #[cfg(feature = "cuda")]
            HostPixels::Pinned(p) => pack(p.as_mut_slice().map_err(candle_core::Error::wrap)?, keep, item_len),
        })
    }

    /// The first `items` items as a `[items, c, h, w]` tensor on `device` (for the CPU, a copy
    /// in host memory). From pinned memory the copy is queued on the device's stream and the
    /// buffer may be refilled as soon as the copy is done (the next `fill` waits for it).
    pub fn to_tensor(&self, items: usize, (c, h, w): (usize, usize, usize), device: &Device) -> Result<Tensor> {
        let n = items * c * h * w;
        let shape = (items, c, h, w);
        Ok(match self {
            HostPixels::F32(v) => Tensor::from_slice(&v[..n], shape, device)?,
            HostPixels::F16(v) => Tensor::from_slice(&v[..n], shape, device)?,
            #[cfg(feature = "cuda")]
            HostPixels::Pinned(p) => {
                let Device::Cuda(d) = device else {
                    return Err(Error::InvalidArg {
                        what: "device",
                        reason: "pinned pixels belong to a CUDA device".into(),
                    });
                };
                let stream = d.cuda_stream();
                let w_err = candle_core::Error::wrap;
                // SAFETY: the whole allocation is overwritten by the copy below.
                let mut dst = unsafe { stream.alloc::<half::f16>(p.len()) }.map_err(w_err)?;
                stream.memcpy_htod(p, &mut dst).map_err(w_err)?;
                let storage = candle_core::cuda_backend::CudaStorage::wrap_cuda_slice(dst, d.clone());
                let all = p.len() / (c * h * w);
                Tensor::from_storage(
                    candle_core::Storage::Cuda(storage),
                    (all, c, h, w),
                    candle_core::op::BackpropOp::none(),
                    false,
                )
                .narrow(0, 0, items)?
            }
        })
    }
}
