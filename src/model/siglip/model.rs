//! SigLIP image and text towers (Zhai et al. 2023), written against transformers'
//! `modeling_siglip.py` weight names so `SiglipModel` checkpoints load unchanged. The encoder
//! layers are the shared ones of [`crate::model::layers`] (the same tensor names as CLIP's).
//! SigLIP-specific here: the patch embedding has a bias and there is no class token and no
//! pre-norm; the image embedding is the multihead attention-pooling head (`head`: a learned
//! probe attends over the post-normed patch tokens, then layer norm and MLP with a residual);
//! the text tower attends over all 64 positions (no causal mask, and no attention mask: the
//! model card's usage pads to `max_length` and passes none), is pooled at the last position and
//! projected by `text_model.head`.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::VarBuilder;

use super::config::{SiglipConfig, TextConfig, VisionConfig};
use crate::error::{Error, Result};
use crate::model::layers::{Activation, Encoder, EncoderShape, LayerNorm, Linear, HF_CLIP_LAYER};

fn shape(hidden: usize, inter: usize, layers: usize, heads: usize, eps: f64, act: &str) -> Result<EncoderShape> {
    EncoderShape::new(hidden, inter, layers, heads, eps, act)
}

/// `SiglipMLP`: fc1, activation, fc2.
#[derive(Debug, Clone)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl Mlp {
    fn load(vb: VarBuilder, hidden: usize, inter: usize, act: &str) -> Result<Self> {
        Ok(Self {
            fc1: Linear::load(vb.pp("fc1"), hidden, inter)?,
            fc2: Linear::load(vb.pp("fc2"), inter, hidden)?,
            act: Activation::parse(act)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.fc2.forward(&self.act.forward(&self.fc1.forward(x)?)?)?)
    }
}

/// `SiglipMultiheadAttentionPoolingHead`: one learned query (`probe`) attends over the tokens
/// through PyTorch's `nn.MultiheadAttention` (`in_proj_weight` holding Q, K and V), then
/// `x + mlp(layernorm(x))`.
#[derive(Debug, Clone)]
struct PoolingHead {
    /// The probe's query, projected and scaled once at load: `[heads, 1, head_dim]`.
    query: Tensor,
    kv: Linear,
    out_proj: Linear,
    layernorm: LayerNorm,
    mlp: Mlp,
    heads: usize,
}

impl PoolingHead {
    fn load(vb: VarBuilder, c: &VisionConfig) -> Result<Self> {
        let h = c.hidden_size;
        let heads = c.num_attention_heads;
        let att = vb.pp("attention");
        let w = att.get((3 * h, h), "in_proj_weight")?;
        let b = att.get(3 * h, "in_proj_bias")?;
        let probe = vb.get((1, 1, h), "probe")?.reshape((1, h))?;
        let scale = ((h / heads) as f64).powf(-0.5);
        // The probe is a constant, so its query is too.
        let q = Linear::new(w.narrow(0, 0, h)?, b.narrow(0, 0, h)?).forward(&probe)?;
        let query = (q.to_dtype(DType::F32)? * scale)?.to_dtype(q.dtype())?.reshape((heads, 1, h / heads))?;
        Ok(Self {
            query,
            kv: Linear::new(w.narrow(0, h, 2 * h)?, b.narrow(0, h, 2 * h)?),
            out_proj: Linear::load(att.pp("out_proj"), h, h)?,
            layernorm: LayerNorm::load(vb.pp("layernorm"), h, c.layer_norm_eps)?,
            mlp: Mlp::load(vb.pp("mlp"), h, c.intermediate_size, &c.hidden_act)?,
            heads,
        })
    }

    /// `[b, s, h]` tokens to `[b, h]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, s, h) = x.dims3()?;
        let hd = h / self.heads;
        let kv = self.kv.forward(x)?.reshape((b, s, 2, self.heads, hd))?.permute((2, 0, 3, 1, 4))?;
        let (k, v) = (kv.get(0)?.contiguous()?, kv.get(1)?.contiguous()?);
        let q = self.query.unsqueeze(0)?.broadcast_as((b, self.heads, 1, hd))?.contiguous()?;
        let scores = q.matmul(&k.t()?)?; // [b, heads, 1, s]
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs.matmul(&v)?.reshape((b, h))?;
        let y = self.out_proj.forward(&ctx)?;
        Ok((&y + self.mlp.forward(&self.layernorm.forward(&y)?)?)?)
    }
}

/// The vision tower: patch + position embeddings, encoder, post-norm, pooling head.
#[derive(Debug, Clone)]
pub struct VisionTransformer {
    patch_weight: Tensor,
    patch_bias: Tensor,
    position_embedding: Tensor,
    encoder: Encoder,
    post_layernorm: LayerNorm,
    head: PoolingHead,
    patch: usize,
    image_size: usize,
    channels: usize,
}

impl VisionTransformer {
    fn load(vb: VarBuilder, c: &VisionConfig) -> Result<Self> {
        let s = shape(
            c.hidden_size,
            c.intermediate_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.layer_norm_eps,
            &c.hidden_act,
        )?;
        let emb = vb.pp("embeddings");
        let (h, p, ch) = (c.hidden_size, c.patch_size, c.num_channels);
        let patches = (c.image_size / p).pow(2);
        let conv = emb.pp("patch_embedding");
        Ok(Self {
            patch_weight: conv.get((h, ch, p, p), "weight")?.reshape((h, ch * p * p))?,
            patch_bias: conv.get(h, "bias")?,
            position_embedding: emb.pp("position_embedding").get((patches, h), "weight")?,
            encoder: Encoder::load(vb.pp("encoder").pp("layers"), &s, &HF_CLIP_LAYER)?,
            post_layernorm: LayerNorm::load(vb.pp("post_layernorm"), h, c.layer_norm_eps)?,
            head: PoolingHead::load(vb.pp("head"), c)?,
            patch: p,
            image_size: c.image_size,
            channels: ch,
        })
    }

    /// Pooled features `[batch, hidden]` for pixels `[batch, channels, size, size]`.
    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, c, hh, ww) = pixels.dims4()?;
        if c != self.channels || hh != self.image_size || ww != self.image_size {
            return Err(Error::Model {
                reason: format!(
                    "a pixel tensor of shape {:?}, the model wants [_, {}, {}, {}]",
                    pixels.dims(),
                    self.channels,
                    self.image_size,
                    self.image_size
                ),
            });
        }
        let p = self.patch;
        let g = hh / p;
        let h = self.patch_weight.dim(0)?;
        // A stride-p, p×p convolution is a GEMM over flattened patches.
        let patches = pixels
            .reshape((b, c, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * g * g, c * p * p))?;
        let x = patches.matmul(&self.patch_weight.t()?)?.broadcast_add(&self.patch_bias)?.reshape((b, g * g, h))?;
        let x = x.broadcast_add(&self.position_embedding)?;
        let x = self.encoder.forward(&x, false)?;
        let x = self.post_layernorm.forward(&x)?;
        self.head.forward(&x)
    }
}

/// The text tower: token + position embeddings, encoder (no mask), final layer norm of the last
/// position, head.
#[derive(Debug, Clone)]
pub struct TextTransformer {
    token_embedding: Tensor,
    position_embedding: Tensor,
    encoder: Encoder,
    final_layer_norm: LayerNorm,
    head: Linear,
    pad: u32,
    vocab: usize,
    max_len: usize,
}

impl TextTransformer {
    fn load(vb: VarBuilder, c: &TextConfig) -> Result<Self> {
        let s = shape(
            c.hidden_size,
            c.intermediate_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.layer_norm_eps,
            &c.hidden_act,
        )?;
        let emb = vb.pp("embeddings");
        let h = c.hidden_size;
        Ok(Self {
            token_embedding: emb.pp("token_embedding").get((c.vocab_size, h), "weight")?,
            position_embedding: emb.pp("position_embedding").get((c.max_position_embeddings, h), "weight")?,
            encoder: Encoder::load(vb.pp("encoder").pp("layers"), &s, &HF_CLIP_LAYER)?,
            final_layer_norm: LayerNorm::load(vb.pp("final_layer_norm"), h, c.layer_norm_eps)?,
            head: Linear::load(vb.pp("head"), h, c.projection_size())?,
            pad: c.pad_token_id,
            vocab: c.vocab_size,
            max_len: c.max_position_embeddings,
        })
    }

    /// Projected features `[batch, projection]` for id sequences, each padded to the model's
    /// `max_position_embeddings` with the pad id (SigLIP pools the last position, so the padding
    /// is part of the input, as in training).
    fn forward(&self, batch: &[Vec<u32>], device: &Device) -> Result<Tensor> {
        let (b, seq) = (batch.len(), self.max_len);
        let mut flat = Vec::with_capacity(b * seq);
        for ids in batch {
            if ids.len() > seq {
                return Err(Error::Model {
                    reason: format!("a token sequence of {} tokens, more than the model's {seq} positions", ids.len()),
                });
            }
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.vocab) {
                return Err(Error::Model {
                    reason: format!("token id {bad} is outside the vocabulary of {}", self.vocab),
                });
            }
            flat.extend_from_slice(ids);
            flat.extend(std::iter::repeat_n(self.pad.min(self.vocab as u32 - 1), seq - ids.len()));
        }
        let ids = Tensor::from_vec(flat, (b * seq,), device)?;
        let h = self.token_embedding.dim(1)?;
        let x = self.token_embedding.index_select(&ids, 0)?.reshape((b, seq, h))?;
        let x = x.broadcast_add(&self.position_embedding)?;
        let x = self.encoder.forward_pooled(&x, false, &vec![seq - 1; b])?;
        Ok(self.head.forward(&self.final_layer_norm.forward(&x)?)?)
    }
}

/// A SigLIP model: both towers, and the scale and bias of its pair logit.
#[derive(Debug, Clone)]
pub struct SiglipModel {
    text: TextTransformer,
    vision: VisionTransformer,
    /// `logit_scale` (its log) and `logit_bias`, as stored.
    logit: (f32, f32),
    config: SiglipConfig,
    device: Device,
    dtype: DType,
}

impl SiglipModel {
    /// Builds the model from a `VarBuilder` over transformers' `SiglipModel` weights.
    pub fn new(vb: VarBuilder, config: &SiglipConfig) -> Result<Self> {
        let scalar = |name: &str| -> Result<f32> {
            Ok(vb.get(1, name)?.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.to_vec1::<f32>()?[0])
        };
        let mut model = Self {
            text: TextTransformer::load(vb.pp("text_model"), &config.text_config)?,
            vision: VisionTransformer::load(vb.pp("vision_model"), &config.vision_config)?,
            logit: (scalar("logit_scale")?, scalar("logit_bias")?),
            config: config.clone(),
            device: vb.device().clone(),
            dtype: vb.dtype(),
        };
        if !model.device.is_cpu() {
            model.fold_constants()?;
        }
        Ok(model)
    }

    /// Folds the attention scale into the weights (see `EncoderLayer::fold`), turning the fused
    /// CPU kernels off; done at load on GPUs.
    pub fn fold_constants(&mut self) -> Result<()> {
        self.text.encoder.fold()?;
        self.vision.encoder.fold()
    }

    pub fn config(&self) -> &SiglipConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn embed_dim(&self) -> usize {
        self.config.embed_dim()
    }

    /// `(logit_scale, logit_bias)` as stored: a pair's probability is
    /// `sigmoid(exp(logit_scale) · cosine + logit_bias)`.
    pub fn pair_logit(&self) -> (f32, f32) {
        self.logit
    }

    /// Image features `[batch, embed_dim]` in f32, not normalised.
    pub fn embed_images(&self, pixels: &Tensor) -> Result<Tensor> {
        let x = pixels.to_device(&self.device)?.to_dtype(self.dtype)?;
        Ok(self.vision.forward(&x)?.to_dtype(DType::F32)?)
    }

    /// Text features `[batch, embed_dim]` in f32, not normalised.
    pub fn embed_texts(&self, batch: &[Vec<u32>]) -> Result<Tensor> {
        if batch.is_empty() {
            return Ok(Tensor::zeros((0, self.embed_dim()), DType::F32, &self.device)?);
        }
        Ok(self.text.forward(batch, &self.device)?.to_dtype(DType::F32)?)
    }

    /// Runs both towers once on a dummy input (a GPU's one-off costs at load time).
    pub fn warm_up(&self) -> Result<()> {
        let v = &self.config.vision_config;
        let pixels = Tensor::zeros((1, v.num_channels, v.image_size, v.image_size), DType::F32, &Device::Cpu)?;
        self.embed_images(&pixels)?.to_vec2::<f32>()?;
        self.embed_texts(&[vec![]])?.sum(D::Minus1)?.to_vec1::<f32>()?;
        Ok(())
    }

    /// Converts both towers' encoder layers' linear layers to int8 or bf16 (`--quantize`); CPU
    /// and f32 only.
    pub fn quantize(&mut self, quantize: crate::model::Quantize) -> Result<()> {
        self.text.encoder.quantize(quantize)?;
        self.vision.encoder.quantize(quantize)
    }

    /// Turns the fused CPU kernels on (the default) or off (the `testing` feature).
    #[cfg(feature = "testing")]
    pub fn set_fused_cpu(&mut self, on: bool) {
        self.text.encoder.set_fused_cpu(on).expect("the f32 weights are restored from their packed copy");
        self.vision.encoder.set_fused_cpu(on).expect("the f32 weights are restored from their packed copy");
    }
}
