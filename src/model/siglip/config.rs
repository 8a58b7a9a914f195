//! SigLIP configuration read from a Hugging Face `config.json`. Every missing key takes
//! transformers' own default (`SiglipTextConfig`, `SiglipVisionConfig`), as the Hub's files omit
//! them: google/siglip-base-patch16-224's `text_config` and `vision_config` hold only a few keys.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::layers::Activation;

/// `text_config` of a SigLIP `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub pad_token_id: u32,
    pub eos_token_id: u32,
    /// Width of the text head's output; `None` means `hidden_size`.
    pub projection_size: Option<usize>,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 32000,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 64,
            hidden_act: "gelu_pytorch_tanh".into(),
            layer_norm_eps: 1e-6,
            pad_token_id: 1,
            eos_token_id: 49407,
            projection_size: None,
        }
    }
}

impl TextConfig {
    /// Width of the text embedding (the head's output).
    pub fn projection_size(&self) -> usize {
        self.projection_size.unwrap_or(self.hidden_size)
    }
}

/// `vision_config` of a SigLIP `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    /// The attention-pooling head (`SiglipMultiheadAttentionPoolingHead`); SigLIP's image
    /// embedding is its output.
    pub vision_use_head: bool,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 16,
            hidden_act: "gelu_pytorch_tanh".into(),
            layer_norm_eps: 1e-6,
            vision_use_head: true,
        }
    }
}

/// A whole SigLIP `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct SiglipConfig {
    pub text_config: TextConfig,
    pub vision_config: VisionConfig,
}

impl SiglipConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
        let cfg: SiglipConfig =
            serde_json::from_str(&text).map_err(|source| Error::Json { path: path.into(), source })?;
        cfg.validate().map_err(|reason| Error::ModelFile { path: path.into(), reason })?;
        Ok(cfg)
    }

    /// Width of the shared embedding space (the vision tower's width, which the text head
    /// projects to).
    pub fn embed_dim(&self) -> usize {
        self.vision_config.hidden_size
    }

    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        let t = &self.text_config;
        let v = &self.vision_config;
        for (what, hidden, heads) in
            [("text", t.hidden_size, t.num_attention_heads), ("vision", v.hidden_size, v.num_attention_heads)]
        {
            if heads == 0 || hidden % heads != 0 {
                return Err(format!("{what} hidden_size {hidden} is not divisible by num_attention_heads {heads}"));
            }
        }
        if v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            return Err(format!("vision image_size {} is not a multiple of patch_size {}", v.image_size, v.patch_size));
        }
        if t.max_position_embeddings == 0 || t.vocab_size == 0 {
            return Err("text max_position_embeddings and vocab_size must be positive".into());
        }
        if t.projection_size() != v.hidden_size {
            return Err(format!(
                "the text head projects to {} but the vision tower is {} wide: the two do not share a space",
                t.projection_size(),
                v.hidden_size
            ));
        }
        if !v.vision_use_head {
            return Err("vision_use_head is false: without its pooling head the vision tower has no embedding".into());
        }
        Activation::parse(&t.hidden_act).map_err(|e| e.to_string())?;
        Activation::parse(&v.hidden_act).map_err(|e| e.to_string())?;
        Ok(())
    }
}
