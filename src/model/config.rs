//! CLIP configuration read from a Hugging Face `config.json` and `preprocessor_config.json`.
//! Missing keys take transformers' own defaults (`CLIPTextConfig`, `CLIPVisionConfig`,
//! `CLIPImageProcessor`), so any CLIP size (ViT-B/32, B/16, L/14, L/14-336) loads from its files.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `text_config` of a CLIP `config.json`.
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
    pub eos_token_id: u32,
    pub bos_token_id: u32,
    pub pad_token_id: u32,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            eos_token_id: 49407,
            bos_token_id: 49406,
            pad_token_id: 1,
        }
    }
}

/// `vision_config` of a CLIP `config.json`.
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
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

/// A whole CLIP `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ClipConfig {
    pub text_config: TextConfig,
    pub vision_config: VisionConfig,
    pub projection_dim: usize,
    pub logit_scale_init_value: f64,
}

impl Default for ClipConfig {
    fn default() -> Self {
        Self {
            text_config: TextConfig::default(),
            vision_config: VisionConfig::default(),
            projection_dim: 512,
            logit_scale_init_value: 2.6592,
        }
    }
}

/// The activation functions CLIP checkpoints use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, OpenAI's CLIP.
    QuickGelu,
    /// Exact (erf) GELU, used by some re-trained CLIPs.
    Gelu,
    /// tanh-approximated GELU.
    GeluTanh,
}

impl Activation {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            other => {
                Err(Error::Model { reason: format!("unsupported activation `{other}` (hidden_act in config.json)") })
            }
        }
    }
}

impl ClipConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
        let cfg: ClipConfig =
            serde_json::from_str(&text).map_err(|source| Error::Json { path: path.into(), source })?;
        cfg.validate().map_err(|reason| Error::ModelFile { path: path.into(), reason })?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let t = &self.text_config;
        let v = &self.vision_config;
        if t.num_attention_heads == 0 || t.hidden_size % t.num_attention_heads != 0 {
            return Err(format!(
                "text hidden_size {} is not divisible by num_attention_heads {}",
                t.hidden_size, t.num_attention_heads
            ));
        }
        if v.num_attention_heads == 0 || v.hidden_size % v.num_attention_heads != 0 {
            return Err(format!(
                "vision hidden_size {} is not divisible by num_attention_heads {}",
                v.hidden_size, v.num_attention_heads
            ));
        }
        if v.patch_size == 0 || v.image_size % v.patch_size != 0 {
            return Err(format!("vision image_size {} is not a multiple of patch_size {}", v.image_size, v.patch_size));
        }
        Activation::parse(&t.hidden_act).map_err(|e| e.to_string())?;
        Activation::parse(&v.hidden_act).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// A size given as `{"shortest_edge": n}` or `{"height": h, "width": w}` (or, in old files, a bare number).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum SizeSpec {
    ShortestEdge { shortest_edge: u32 },
    HeightWidth { height: u32, width: u32 },
    Square(u32),
}

/// `preprocessor_config.json` of a CLIP model (`CLIPImageProcessor`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PreprocessorConfig {
    pub do_resize: bool,
    pub size: SizeSpec,
    /// PIL resampling filter id; CLIP uses 3 (bicubic).
    pub resample: u32,
    pub do_center_crop: bool,
    pub crop_size: SizeSpec,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    pub do_convert_rgb: bool,
}

impl Default for PreprocessorConfig {
    fn default() -> Self {
        Self {
            do_resize: true,
            size: SizeSpec::ShortestEdge { shortest_edge: 224 },
            resample: 3,
            do_center_crop: true,
            crop_size: SizeSpec::HeightWidth { height: 224, width: 224 },
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            #[allow(clippy::excessive_precision)] // CLIP's published constants, digit for digit
            image_std: [0.268_629_54, 0.261_302_58, 0.275_777_1],
            do_convert_rgb: true,
        }
    }
}

impl PreprocessorConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
        let config: Self = serde_json::from_str(&text).map_err(|source| Error::Json { path: path.into(), source })?;
        // A zero or non-finite std (or a non-finite mean) makes every pixel NaN or infinite.
        let bad = |v: &[f32; 3], zero_ok: bool| v.iter().any(|x| !x.is_finite() || (!zero_ok && *x == 0.0));
        if bad(&config.image_std, false) || bad(&config.image_mean, true) {
            return Err(Error::ModelFile {
                path: path.into(),
                reason: format!(
                    "image_mean {:?} / image_std {:?}: need finite values and a non-zero std",
                    config.image_mean, config.image_std
                ),
            });
        }
        Ok(config)
    }

    /// Output (height, width) of the centre crop, or of the resize when no crop is configured.
    pub fn output_size(&self) -> (u32, u32) {
        let spec = if self.do_center_crop { self.crop_size } else { self.size };
        match spec {
            SizeSpec::ShortestEdge { shortest_edge } => (shortest_edge, shortest_edge),
            SizeSpec::HeightWidth { height, width } => (height, width),
            SizeSpec::Square(n) => (n, n),
        }
    }
}
