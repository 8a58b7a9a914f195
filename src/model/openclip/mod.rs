//! The OpenCLIP family: checkpoints in open_clip's own Hub layout (`open_clip_config.json`,
//! `open_clip_model.safetensors` or `open_clip_pytorch_model.bin`, no `config.json`). An
//! open_clip ViT is the CLIP architecture, so it is built as the CLIP family's model
//! ([`ClipModel`]): `config.rs` translates the config, and [`OpenClipNames`] serves open_clip's
//! tensors under transformers' names (the fused `attn.in_proj_*` split into Q, K and V; the
//! projections, which open_clip applies as `x @ proj`, transposed). Text is pooled at the
//! highest token id (open_clip's `argmax`, the end-of-text token) under the causal mask; captions
//! are cleaned as open_clip's tokenizer cleans them ([`crate::media::textclean`]).

pub mod config;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

pub use config::OpenClipConfig;

use super::clip::{Clip, ClipModel};
use super::files::{weights_builder, ModelFiles};
use super::{Encoder, Family, ModelInfo, ModelSpec};
use crate::error::{Error, Result};
use crate::media::preprocess::Preprocessor;
use crate::media::tokenize::TextTokenizer;

/// An OpenCLIP checkpoint: the CLIP family's model under open_clip's config and tensor names.
#[derive(Debug, Clone)]
pub struct OpenClip {
    pub clip: Clip,
    logit_scale: f32,
}

impl OpenClip {
    pub fn from_files(spec: &ModelSpec, files: &ModelFiles, device: &Device, dtype: DType) -> Result<Self> {
        let config = OpenClipConfig::from_file(&files.config)?;
        let tokenizer_file = files.tokenizer.as_ref().ok_or_else(|| Error::ModelUnavailable {
            model: spec.name.clone(),
            reason: "the folder has no tokenizer.json: open_clip's checkpoints use the CLIP BPE, which sieve reads \
                     from a tokenizer.json (copy the one of openai/clip-vit-base-patch32, the same vocabulary)"
                .into(),
        })?;
        let tokenizer = TextTokenizer::from_file(tokenizer_file, config.clip.text_config.max_position_embeddings)?
            .with_open_clip_clean();
        let inner = weights_builder(&files.weights, dtype, device)?;
        let bad = |e: candle_core::Error| Error::ModelFile {
            path: files.weights.clone(),
            reason: format!("weights do not fit open_clip_config.json: {e}"),
        };
        let logit_scale = inner
            .get_unchecked_dtype("logit_scale", DType::F32)
            .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
            .map_err(bad)?;
        let logit_scale = match logit_scale.as_slice() {
            [s] if s.is_finite() => s.exp(),
            other => {
                return Err(bad(candle_core::Error::Msg(format!("logit_scale is {other:?}, not one finite number"))))
            }
        };
        let model = model_over(inner, &config).map_err(|e| Error::ModelFile {
            path: files.weights.clone(),
            reason: format!("weights do not fit open_clip_config.json: {e}"),
        })?;
        let info = ModelInfo::of(spec, files, config.clip.projection_dim, Family::OpenClip)?;
        let clip = Clip { model, tokenizer, preprocessor: Preprocessor::new(config.preprocess), info };
        Ok(Self { clip, logit_scale })
    }

    /// The model's learned temperature, `exp(logit_scale)`: open_clip's logits are this times
    /// the cosine.
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
    }
}

impl Encoder for OpenClip {
    fn family(&self) -> Family {
        Family::OpenClip
    }

    fn info(&self) -> &ModelInfo {
        &self.clip.info
    }

    fn device(&self) -> &Device {
        self.clip.device()
    }

    fn embed_dim(&self) -> usize {
        self.clip.embed_dim()
    }

    fn preprocessor(&self) -> &Preprocessor {
        &self.clip.preprocessor
    }

    fn tokenizer(&self) -> Option<&TextTokenizer> {
        Some(&self.clip.tokenizer)
    }

    fn embed_images(&self, pixels: &Tensor) -> Result<Tensor> {
        self.clip.embed_images(pixels)
    }

    fn embed_texts(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        self.clip.embed_texts(ids)
    }

    fn bytes_per_item(&self) -> u64 {
        self.clip.bytes_per_item()
    }

    fn warm_up(&self) -> Result<()> {
        self.clip.warm_up()
    }

    fn quantize(&mut self, quantize: crate::model::Quantize) -> Result<()> {
        self.clip.quantize(quantize)
    }
}

/// The CLIP model of `config` over `weights`, a builder of tensors under open_clip's names
/// (as in `open_clip_model.safetensors`); computes in the builder's dtype on its device.
pub fn model_over(weights: VarBuilder<'static>, config: &OpenClipConfig) -> Result<ClipModel> {
    let (dtype, device) = (weights.dtype(), weights.device().clone());
    let text = if config.custom_text { "text." } else { "" };
    let vb = VarBuilder::from_backend(Box::new(OpenClipNames { inner: weights, text }), dtype, device);
    ClipModel::new(vb, &config.clip)
}

/// How a transformers tensor is made from open_clip's.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Take {
    Whole,
    /// Part `i` of three stacked along dim 0 (`in_proj_*` → Q, K, V).
    Third(usize),
    /// The transpose of a `[in, out]` matrix applied as `x @ proj`.
    Transposed,
}

/// Serves open_clip's tensors under the names [`ClipModel`] asks for.
struct OpenClipNames {
    inner: VarBuilder<'static>,
    /// `""`, or `"text."` for `CustomTextCLIP` checkpoints.
    text: &'static str,
}

impl OpenClipNames {
    /// The open_clip tensor behind a transformers name, and how to take it.
    fn source(&self, name: &str) -> Option<(String, Take)> {
        let t = self.text;
        let fixed = match name {
            "text_model.embeddings.token_embedding.weight" => Some((format!("{t}token_embedding.weight"), Take::Whole)),
            "text_model.embeddings.position_embedding.weight" => {
                Some((format!("{t}positional_embedding"), Take::Whole))
            }
            "text_projection.weight" => Some((format!("{t}text_projection"), Take::Transposed)),
            "visual_projection.weight" => Some(("visual.proj".into(), Take::Transposed)),
            "vision_model.embeddings.class_embedding" => Some(("visual.class_embedding".into(), Take::Whole)),
            "vision_model.embeddings.patch_embedding.weight" => Some(("visual.conv1.weight".into(), Take::Whole)),
            "vision_model.embeddings.position_embedding.weight" => {
                Some(("visual.positional_embedding".into(), Take::Whole))
            }
            _ => None,
        };
        if fixed.is_some() {
            return fixed;
        }
        let (tower, rest) = if let Some(r) = name.strip_prefix("text_model.") {
            (t.to_string(), r)
        } else {
            ("visual.".to_string(), name.strip_prefix("vision_model.")?)
        };
        let (leaf, param) = rest.rsplit_once('.')?;
        let norm = |n: &str| Some((format!("{tower}{n}.{param}"), Take::Whole));
        match leaf {
            "final_layer_norm" => return norm("ln_final"),
            "pre_layrnorm" => return norm("ln_pre"),
            "post_layernorm" => return norm("ln_post"),
            _ => {}
        }
        let layer = leaf.strip_prefix("encoder.layers.")?;
        let (i, part) = layer.split_once('.')?;
        let block = format!("{tower}transformer.resblocks.{i}");
        let (src, take) = match part {
            "self_attn.q_proj" => (format!("attn.in_proj_{param}"), Take::Third(0)),
            "self_attn.k_proj" => (format!("attn.in_proj_{param}"), Take::Third(1)),
            "self_attn.v_proj" => (format!("attn.in_proj_{param}"), Take::Third(2)),
            "self_attn.out_proj" => (format!("attn.out_proj.{param}"), Take::Whole),
            "layer_norm1" => (format!("ln_1.{param}"), Take::Whole),
            "layer_norm2" => (format!("ln_2.{param}"), Take::Whole),
            "mlp.fc1" => (format!("mlp.c_fc.{param}"), Take::Whole),
            "mlp.fc2" => (format!("mlp.c_proj.{param}"), Take::Whole),
            _ => return None,
        };
        Some((format!("{block}.{src}"), take))
    }

    fn fetch(&self, name: &str, dtype: DType) -> candle_core::Result<Tensor> {
        let (src, take) = self
            .source(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("no open_clip tensor stands for {name}")))?;
        if !self.inner.contains_tensor(&src) {
            return Err(candle_core::Error::Msg(format!("the checkpoint has no tensor {src}")));
        }
        let t = self.inner.get_unchecked_dtype(&src, dtype)?;
        match take {
            Take::Whole => Ok(t),
            Take::Transposed => {
                if t.rank() != 2 {
                    return Err(candle_core::Error::Msg(format!("{src} has shape {:?}, not a matrix", t.dims())));
                }
                t.t()?.contiguous()
            }
            Take::Third(i) => {
                let n = t.dim(0)?;
                if n % 3 != 0 {
                    return Err(candle_core::Error::Msg(format!("{src} has {n} rows, not Q, K and V stacked")));
                }
                t.narrow(0, i * n / 3, n / 3)?.contiguous()
            }
        }
    }
}

impl SimpleBackend for OpenClipNames {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.fetch(name, dtype)?;
        if t.shape() != &s {
            let src = self.source(name).map(|(s, _)| s).unwrap_or_default();
            return Err(candle_core::Error::Msg(format!(
                "{src} gives {name} the shape {:?}; open_clip_config.json implies {:?}",
                t.dims(),
                s.dims()
            )));
        }
        t.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.fetch(name, dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.source(name).is_some_and(|(src, _)| self.inner.contains_tensor(&src))
    }
}
