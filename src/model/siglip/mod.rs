//! The SigLIP family (Zhai et al. 2023): Hugging Face `SiglipModel` folders (`config.json` with
//! `model_type` "siglip", a `SiglipImageProcessor` `preprocessor_config.json`, `spiece.model`
//! and `tokenizer_config.json`, weights). Its configuration with transformers' defaults
//! (`config.rs`) and the towers (`model.rs`). The tokenizer is
//! [`crate::media::siglip_text`]; the preprocessing is the shared one with SigLIP's defaults
//! (a plain resize to the model's size, no crop, mean and std 0.5).
//!
//! Beside its embeddings, a SigLIP model scores a pair itself: `sigmoid(exp(logit_scale) ·
//! cosine + logit_bias)`, the probability it was trained to give a matching pair. Its scale
//! and bias are recorded in the run's [`ModelInfo`] (`pair_logit`), so `sieve score` can
//! report it.

pub mod config;
pub mod model;

use std::path::Path;

use candle_core::{DType, Device, Tensor};

pub use config::SiglipConfig;
pub use model::SiglipModel;

use super::files::{weights_builder, ModelFiles};
use super::{l2_normalize, Encoder, Family, ModelInfo, ModelSpec, PairLogit};
use crate::error::{Error, Result};
use crate::media::preprocess::{Preprocessor, PreprocessorConfig, SizeSpec};
use crate::media::tokenize::TextTokenizer;

/// `SiglipImageProcessor`'s defaults, for keys a `preprocessor_config.json` leaves out.
fn processor_defaults() -> serde_json::Map<String, serde_json::Value> {
    let v = serde_json::json!({
        "do_resize": true,
        "size": {"height": 224, "width": 224},
        "resample": 3,
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": true,
    });
    match v {
        serde_json::Value::Object(m) => m,
        _ => unreachable!("a JSON object literal"),
    }
}

/// Reads a SigLIP `preprocessor_config.json`: `SiglipImageProcessor` resizes to `size`
/// (height and width) and never crops, whatever the file says about cropping.
pub fn preprocessor_config(path: &Path) -> Result<PreprocessorConfig> {
    let mut pre = PreprocessorConfig::from_file_over(path, &processor_defaults())?;
    pre.do_center_crop = false;
    if !matches!(pre.size, SizeSpec::HeightWidth { .. }) {
        return Err(Error::ModelFile {
            path: path.into(),
            reason: format!("size {:?}: SigLIP's processor resizes to a height and width", pre.size),
        });
    }
    Ok(pre)
}

/// Everything needed to embed with a SigLIP model.
#[derive(Debug, Clone)]
pub struct Siglip {
    pub model: SiglipModel,
    pub tokenizer: TextTokenizer,
    pub preprocessor: Preprocessor,
    pub info: ModelInfo,
}

impl Siglip {
    pub fn from_files(spec: &ModelSpec, files: &ModelFiles, device: &Device, dtype: DType) -> Result<Self> {
        let config = SiglipConfig::from_file(&files.config)?;
        let pre = preprocessor_config(&files.preprocessor)?;
        let (h, w) = pre.output_size();
        let size = config.vision_config.image_size as u32;
        if (h, w) != (size, size) {
            return Err(Error::ModelFile {
                path: files.preprocessor.clone(),
                reason: format!("resizes to {h}×{w} but the model's image_size is {size}"),
            });
        }
        let spiece = files.tokenizer.as_ref().ok_or_else(|| Error::ModelUnavailable {
            model: spec.name.clone(),
            reason: "a SigLIP model needs its spiece.model".into(),
        })?;
        let tok_config = spiece.parent().map(|d| d.join("tokenizer_config.json")).filter(|p| p.is_file());
        let tokenizer =
            TextTokenizer::siglip(spiece, tok_config.as_deref(), config.text_config.max_position_embeddings)?;
        let vb = weights_builder(&files.weights, dtype, device)?;
        let model = SiglipModel::new(vb, &config).map_err(|e| Error::ModelFile {
            path: files.weights.clone(),
            reason: format!("weights do not fit config.json: {e}"),
        })?;
        let (scale, bias) = model.pair_logit();
        let info = ModelInfo {
            pair_logit: Some(PairLogit { scale, bias }),
            ..ModelInfo::of(spec, files, config.embed_dim(), Family::Siglip)?
        };
        Ok(Self { model, tokenizer, preprocessor: Preprocessor::new(pre), info })
    }
}

impl Encoder for Siglip {
    fn family(&self) -> Family {
        Family::Siglip
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

/// Device memory one item needs in the forward pass of the larger tower (the same count as
/// CLIP's: widest activations, attention scores and probabilities, pixels in f32 and the
/// compute dtype).
pub fn bytes_per_item(config: &SiglipConfig, dtype: DType) -> u64 {
    let e = dtype.size_in_bytes() as u64;
    let per =
        |seq: u64, hidden: u64, inter: u64, heads: u64| crate::model::layers::tower_bytes(e, seq, hidden, inter, heads);
    let v = &config.vision_config;
    let seq_v = (v.image_size / v.patch_size).pow(2) as u64;
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
