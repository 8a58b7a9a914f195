//! The CLIP family: Hugging Face `CLIPModel` folders (`config.json` with `model_type` "clip",
//! `preprocessor_config.json`, `tokenizer.json`, weights). Its configuration (`config.rs`), the
//! towers (`model.rs`), candle-transformers' stock CLIP as a baseline (`stock.rs`) and model-only
//! throughput with random weights (`bench.rs`).

pub mod bench;
pub mod config;
pub mod model;
pub mod stock;

use candle_core::{DType, Device, Tensor};

pub use config::{ClipConfig, TextConfig, VisionConfig};
pub use model::ClipModel;

use super::files::{weights_builder, ModelFiles};
use super::random::RandomWeights;
use super::{l2_normalize, Encoder, Family, ModelInfo, ModelSpec};
use crate::error::{Error, Result};
use crate::media::preprocess::{Preprocessor, PreprocessorConfig};
use crate::media::tokenize::TextTokenizer;

/// Everything needed to embed with a CLIP model: the model, its tokenizer and its preprocessor.
#[derive(Debug, Clone)]
pub struct Clip {
    pub model: ClipModel,
    pub tokenizer: TextTokenizer,
    pub preprocessor: Preprocessor,
    pub info: ModelInfo,
}

impl Clip {
    /// Loads a model onto `device`, computing in `dtype`.
    pub fn load(spec: &ModelSpec, device: &Device, dtype: DType) -> Result<Self> {
        let files = ModelFiles::resolve(spec)?;
        Self::from_files(spec, &files, device, dtype)
    }

    pub fn from_files(spec: &ModelSpec, files: &ModelFiles, device: &Device, dtype: DType) -> Result<Self> {
        let config = ClipConfig::from_file(&files.config)?;
        let pre = PreprocessorConfig::from_file(&files.preprocessor)?;
        let (h, w) = pre.output_size();
        let size = config.vision_config.image_size as u32;
        if (h, w) != (size, size) {
            return Err(Error::ModelFile {
                path: files.preprocessor.clone(),
                reason: format!("crops to {h}×{w} but the model's image_size is {size}"),
            });
        }
        let tokenizer_file = files.tokenizer.as_ref().ok_or_else(|| Error::ModelUnavailable {
            model: spec.name.clone(),
            reason: "a CLIP model needs its tokenizer.json".into(),
        })?;
        let tokenizer = TextTokenizer::from_file(tokenizer_file, config.text_config.max_position_embeddings)?;
        let vb = weights_builder(&files.weights, dtype, device)?;
        let model = ClipModel::new(vb, &config).map_err(|e| Error::ModelFile {
            path: files.weights.clone(),
            reason: format!("weights do not fit config.json: {e}"),
        })?;
        let info = ModelInfo::of(spec, files, config.projection_dim, Family::Clip)?;
        Ok(Self { model, tokenizer, preprocessor: Preprocessor::new(pre), info })
    }
}

impl Encoder for Clip {
    fn family(&self) -> Family {
        Family::Clip
    }

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn device(&self) -> &Device {
        self.model.device()
    }

    fn embed_dim(&self) -> usize {
        self.model.embed_dim()
    }

    fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    fn tokenizer(&self) -> Option<&TextTokenizer> {
        Some(&self.tokenizer)
    }

    fn embed_images(&self, pixels: &Tensor) -> Result<Tensor> {
        l2_normalize(&self.model.embed_images(pixels)?)
    }

    fn embed_texts(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        l2_normalize(&self.model.embed_texts(ids)?)
    }

    fn bytes_per_item(&self) -> u64 {
        bytes_per_item(self.model.config(), self.model.dtype())
    }

    fn warm_up(&self) -> Result<()> {
        self.model.warm_up()
    }

    fn quantize(&mut self, quantize: crate::model::Quantize) -> Result<()> {
        self.model.quantize(quantize)
    }
}

/// Device memory one item needs in the forward pass of the larger tower, in bytes: the widest
/// activations alive at once (input, MLP hidden and its activation, residual, Q/K/V and
/// context) plus the attention scores and probabilities, and the pixels in f32 and the
/// compute dtype.
pub fn bytes_per_item(config: &ClipConfig, dtype: DType) -> u64 {
    let e = dtype.size_in_bytes() as u64;
    let per =
        |seq: u64, hidden: u64, inter: u64, heads: u64| crate::model::layers::tower_bytes(e, seq, hidden, inter, heads);
    let v = &config.vision_config;
    let seq_v = ((v.image_size / v.patch_size).pow(2) + 1) as u64;
    let vision = per(seq_v, v.hidden_size as u64, v.intermediate_size as u64, v.num_attention_heads as u64)
        + crate::model::layers::pixel_bytes(e, v.num_channels, v.image_size);
    let t = &config.text_config;
    let text = per(
        t.max_position_embeddings as u64,
        t.hidden_size as u64,
        t.intermediate_size as u64,
        t.num_attention_heads as u64,
    );
    vision.max(text)
}

/// A model of the shape in `config` with random weights (`sieve bench`; benches reach it
/// through `sieve::testing`).
pub(crate) fn random_model(config: &ClipConfig, device: &Device, dtype: DType, seed: u64) -> Result<ClipModel> {
    ClipModel::new(RandomWeights::new(seed).var_builder(dtype, device), config)
}
