//! A DINOv2 `config.json` (transformers' `Dinov2Config`). Missing keys take transformers'
//! defaults, as the Hub's configs rely on.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::layers::Activation;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Dinov2Config {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub mlp_ratio: f64,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    /// The input size the position embeddings were trained for.
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub qkv_bias: bool,
    pub use_swiglu_ffn: bool,
}

impl Default for Dinov2Config {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            mlp_ratio: 4.0,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-6,
            image_size: 224,
            patch_size: 14,
            num_channels: 3,
            qkv_bias: true,
            use_swiglu_ffn: false,
        }
    }
}

impl Dinov2Config {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
        let cfg: Self = serde_json::from_str(&text).map_err(|source| Error::Json { path: path.into(), source })?;
        cfg.validate().map_err(|reason| Error::ModelFile { path: path.into(), reason })?;
        Ok(cfg)
    }

    /// The MLP's hidden width, `hidden_size × mlp_ratio` as transformers computes it.
    pub fn intermediate_size(&self) -> usize {
        (self.hidden_size as f64 * self.mlp_ratio) as usize
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err(format!("image_size {} is not a multiple of patch_size {}", self.image_size, self.patch_size));
        }
        if self.use_swiglu_ffn {
            return Err("use_swiglu_ffn (DINOv2 giant's SwiGLU MLP) is not supported".into());
        }
        if !self.qkv_bias {
            return Err("qkv_bias false is not supported".into());
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0 && self.mlp_ratio <= 64.0) {
            return Err(format!("mlp_ratio {} is not a usable ratio", self.mlp_ratio));
        }
        Activation::parse(&self.hidden_act).map_err(|e| e.to_string())?;
        Ok(())
    }
}
