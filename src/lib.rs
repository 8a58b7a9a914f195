//! sieve: curate image–text training data.
//!
//! A CLIP-style encoder (candle; CUDA, Metal or CPU) embeds images and captions into one space;
//! later stages find duplicates, score caption fit, measure diversity and select a subset. This
//! crate is the library behind the `sieve` binary; docs/architecture.md describes the rooms and the
//! data flow, docs/run-directory.md the run directory format.

pub mod analyze;
pub mod api;
pub mod audit;
pub mod bench;
pub mod classify;
pub mod compare;
pub mod device;
pub mod digest;
pub mod error;
pub mod export;
pub mod index;
pub mod ingest;
pub mod linalg;
pub mod media;
pub mod model;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod run;
pub mod search;
pub mod store;

pub use error::{Error, Result};

/// Hooks for sieve's own tests and benches, behind the `testing` feature (enabled for them by
/// the self dev-dependency in Cargo.toml): random models and inputs. Not a stable API.
#[cfg(feature = "testing")]
pub mod testing {
    use candle_core::{DType, Device, Tensor};

    use crate::model::clip::{ClipConfig, ClipModel};
    use crate::Result;

    /// A model of the shape in `config` with seeded random weights.
    pub fn random_model(config: &ClipConfig, device: &Device, dtype: DType, seed: u64) -> Result<ClipModel> {
        crate::model::clip::random_model(config, device, dtype, seed)
    }

    /// A DINOv2 model of the shape in `config` with seeded random weights, for square inputs
    /// of `input_size` pixels.
    pub fn random_dinov2(
        config: &crate::model::dinov2::Dinov2Config,
        input_size: usize,
        seed: u64,
    ) -> Result<crate::model::dinov2::Dinov2Model> {
        let vb = crate::model::random::RandomWeights::new(seed).var_builder(DType::F32, &Device::Cpu);
        crate::model::dinov2::Dinov2Model::new(vb, config, input_size)
    }

    /// A SigLIP model of the shape in `config` with seeded random weights, on the CPU in f32.
    pub fn random_siglip(
        config: &crate::model::siglip::SiglipConfig,
        seed: u64,
    ) -> Result<crate::model::siglip::SiglipModel> {
        let vb = crate::model::random::RandomWeights::new(seed).var_builder(DType::F32, &Device::Cpu);
        crate::model::siglip::SiglipModel::new(vb, config)
    }

    /// Random but valid inputs for a model of `config`: pixels and token sequences.
    pub fn random_inputs(config: &ClipConfig, batch: usize, seed: u64) -> Result<(Tensor, Vec<Vec<u32>>)> {
        crate::model::clip::bench::random_inputs(config, batch, seed)
    }
}
