//! CLIP image and text towers (Radford et al. 2021), written against Hugging Face's
//! `modeling_clip.py` weight names so any `CLIPModel` checkpoint loads unchanged. The blocks are
//! the shared ones of [`crate::model::layers`]; CLIP-specific here: the patch embedding as a
//! reshape + GEMM instead of a convolution, class-token pooling, and text pooling at the
//! end-of-text token, computed on the host from the token ids we already hold, so no per-row
//! device sync is needed.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::config::{ClipConfig, TextConfig, VisionConfig};
use crate::error::Result;
use crate::model::layers::{Encoder, EncoderShape, LayerNorm, HF_CLIP_LAYER};

/// The encoder shape of a CLIP text tower.
fn text_shape(c: &TextConfig) -> Result<EncoderShape> {
    EncoderShape::new(
        c.hidden_size,
        c.intermediate_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.layer_norm_eps,
        &c.hidden_act,
    )
}

/// The encoder shape of a CLIP vision tower.
fn vision_shape(c: &VisionConfig) -> Result<EncoderShape> {
    EncoderShape::new(
        c.hidden_size,
        c.intermediate_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.layer_norm_eps,
        &c.hidden_act,
    )
}

/// The text tower: token + position embeddings, causal encoder, final layer norm, pooled at the
/// end-of-text token exactly as transformers' `CLIPTextTransformer` does.
#[derive(Debug, Clone)]
pub struct TextTransformer {
    token_embedding: Tensor,
    position_embedding: Tensor,
    encoder: Encoder,
    final_layer_norm: LayerNorm,
    eos_token_id: u32,
    max_len: usize,
}

impl TextTransformer {
    fn load(vb: VarBuilder, c: &TextConfig) -> Result<Self> {
        let shape = text_shape(c)?;
        let emb = vb.pp("embeddings");
        Ok(Self {
            token_embedding: emb.pp("token_embedding").get((c.vocab_size, c.hidden_size), "weight")?,
            position_embedding: emb
                .pp("position_embedding")
                .get((c.max_position_embeddings, c.hidden_size), "weight")?,
            encoder: Encoder::load(vb.pp("encoder").pp("layers"), &shape, &HF_CLIP_LAYER)?,
            final_layer_norm: LayerNorm::load(vb.pp("final_layer_norm"), c.hidden_size, c.layer_norm_eps)?,
            eos_token_id: c.eos_token_id,
            max_len: c.max_position_embeddings,
        })
    }

    /// Where transformers pools: old configs (eos_token_id == 2) take the highest id, which is
    /// `<|endoftext|>` in CLIP's vocabulary; newer ones take the first `eos_token_id`, or 0.
    pub fn pool_position(&self, ids: &[u32]) -> usize {
        if self.eos_token_id == 2 {
            let mut best = 0;
            for (i, &id) in ids.iter().enumerate() {
                if id > ids[best] {
                    best = i;
                }
            }
            best
        } else {
            ids.iter().position(|&id| id == self.eos_token_id).unwrap_or(0)
        }
    }

    /// Pooled (pre-projection) features for a batch of token-id sequences. Sequences are padded
    /// to the longest; the causal mask keeps padding from reaching the pooled position.
    fn forward(&self, batch: &[Vec<u32>], device: &Device) -> Result<Tensor> {
        let seq = batch.iter().map(Vec::len).max().unwrap_or(0).max(1);
        if seq > self.max_len {
            return Err(crate::Error::Model {
                reason: format!("a token sequence of {seq} tokens, more than the model's {} positions", self.max_len),
            });
        }
        let b = batch.len();
        let pad = self.eos_token_id.min(self.token_embedding.dim(0)? as u32 - 1);
        let mut flat = Vec::with_capacity(b * seq);
        let mut pool = Vec::with_capacity(b);
        for ids in batch {
            flat.extend_from_slice(ids);
            flat.extend(std::iter::repeat_n(pad, seq - ids.len()));
            pool.push(self.pool_position(ids));
        }
        let ids = Tensor::from_vec(flat, (b * seq,), device)?;
        let h = self.token_embedding.dim(1)?;
        let x = self.token_embedding.index_select(&ids, 0)?.reshape((b, seq, h))?;
        let x = x.broadcast_add(&self.position_embedding.narrow(0, 0, seq)?)?;
        let x = self.encoder.forward_pooled(&x, true, &pool)?;
        Ok(self.final_layer_norm.forward(&x)?)
    }
}

/// The vision tower: patch + class + position embeddings, pre-norm, encoder, post-norm of the
/// class token.
#[derive(Debug, Clone)]
pub struct VisionTransformer {
    class_embedding: Tensor,
    patch_weight: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    encoder: Encoder,
    post_layernorm: LayerNorm,
    patch: usize,
    image_size: usize,
    channels: usize,
}

impl VisionTransformer {
    fn load(vb: VarBuilder, c: &VisionConfig) -> Result<Self> {
        let shape = vision_shape(c)?;
        let emb = vb.pp("embeddings");
        let h = c.hidden_size;
        let patches = (c.image_size / c.patch_size).pow(2);
        let patch_weight = emb
            .pp("patch_embedding")
            .get((h, c.num_channels, c.patch_size, c.patch_size), "weight")?
            .reshape((h, c.num_channels * c.patch_size * c.patch_size))?;
        Ok(Self {
            class_embedding: emb.get(h, "class_embedding")?,
            patch_weight,
            position_embedding: emb.pp("position_embedding").get((patches + 1, h), "weight")?,
            pre_layrnorm: LayerNorm::load(vb.pp("pre_layrnorm"), h, c.layer_norm_eps)?,
            encoder: Encoder::load(vb.pp("encoder").pp("layers"), &shape, &HF_CLIP_LAYER)?,
            post_layernorm: LayerNorm::load(vb.pp("post_layernorm"), h, c.layer_norm_eps)?,
            patch: c.patch_size,
            image_size: c.image_size,
            channels: c.num_channels,
        })
    }

    /// Pooled (pre-projection) features for pixels `[batch, channels, size, size]`.
    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, c, hh, ww) = pixels.dims4()?;
        if c != self.channels || hh != self.image_size || ww != self.image_size {
            return Err(crate::Error::Model {
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
        // A stride-p, p×p convolution without bias is a GEMM over flattened patches.
        let patches = pixels
            .reshape((b, c, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * g * g, c * p * p))?;
        let x = patches.matmul(&self.patch_weight.t()?)?.reshape((b, g * g, h))?;
        let cls = self.class_embedding.reshape((1, 1, h))?.broadcast_as((b, 1, h))?;
        let x = Tensor::cat(&[&cls, &x], 1)?.broadcast_add(&self.position_embedding)?;
        let x = self.pre_layrnorm.forward(&x)?;
        let x = self.encoder.forward_pooled(&x, false, &vec![0; b])?;
        Ok(self.post_layernorm.forward(&x)?)
    }
}

/// A CLIP model: both towers and their projections into the shared embedding space.
#[derive(Debug, Clone)]
pub struct ClipModel {
    text: TextTransformer,
    vision: VisionTransformer,
    text_projection: Tensor,
    visual_projection: Tensor,
    config: ClipConfig,
    device: Device,
    dtype: DType,
}

impl ClipModel {
    /// Builds the model from a `VarBuilder` over Hugging Face `CLIPModel` weights; the weights
    /// are cast to the builder's dtype.
    pub fn new(vb: VarBuilder, config: &ClipConfig) -> Result<Self> {
        let t = &config.text_config;
        let v = &config.vision_config;
        let mut model = Self {
            text: TextTransformer::load(vb.pp("text_model"), t)?,
            vision: VisionTransformer::load(vb.pp("vision_model"), v)?,
            text_projection: vb.pp("text_projection").get((config.projection_dim, t.hidden_size), "weight")?,
            visual_projection: vb.pp("visual_projection").get((config.projection_dim, v.hidden_size), "weight")?,
            config: config.clone(),
            device: vb.device().clone(),
            dtype: vb.dtype(),
        };
        if !model.device.is_cpu() {
            model.fold_constants()?;
        }
        Ok(model)
    }

    /// Folds the attention scale and QuickGELU's constant into the weights (see
    /// `EncoderLayer::fold`) and so turns the fused CPU kernels off. Done at load on GPUs;
    /// tests call it on the CPU to check the folded maths against the reference.
    pub fn fold_constants(&mut self) -> Result<()> {
        self.text.encoder.fold()?;
        self.vision.encoder.fold()
    }

    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Dimension of the shared embedding space.
    pub fn embed_dim(&self) -> usize {
        self.config.projection_dim
    }

    /// Projected image features, `[batch, embed_dim]` in f32, not normalised. `pixels` is a
    /// preprocessed `[batch, 3, size, size]` f32 tensor on any device.
    pub fn embed_images(&self, pixels: &Tensor) -> Result<Tensor> {
        let x = pixels.to_device(&self.device)?.to_dtype(self.dtype)?;
        let pooled = self.vision.forward(&x)?;
        Ok(pooled.matmul(&self.visual_projection.t()?)?.to_dtype(DType::F32)?)
    }

    /// Projected text features, `[batch, embed_dim]` in f32, not normalised, for token ids as
    /// produced by [`crate::media::tokenize::TextTokenizer`].
    pub fn embed_texts(&self, batch: &[Vec<u32>]) -> Result<Tensor> {
        if batch.is_empty() {
            return Ok(Tensor::zeros((0, self.embed_dim()), DType::F32, &self.device)?);
        }
        let pooled = self.text.forward(batch, &self.device)?;
        Ok(pooled.matmul(&self.text_projection.t()?)?.to_dtype(DType::F32)?)
    }

    /// Runs both towers once on one dummy input, so that a GPU's one-off costs (compiling
    /// sieve's kernels with NVRTC, loading candle's kernel modules, creating library handles)
    /// are paid at load time rather than while the first batches wait.
    pub fn warm_up(&self) -> Result<()> {
        let s = self.config.vision_config.image_size;
        let pixels = Tensor::zeros((1, self.config.vision_config.num_channels, s, s), DType::F32, &Device::Cpu)?;
        self.embed_images(&pixels)?.to_vec2::<f32>()?;
        let t = &self.config.text_config;
        let eos = if t.eos_token_id == 2 { t.vocab_size as u32 - 1 } else { t.eos_token_id };
        self.embed_texts(&[vec![eos.min(t.vocab_size as u32 - 1)]])?.to_vec2::<f32>()?;
        Ok(())
    }

    /// Converts both towers' encoder layers' linear layers to int8 or bf16 (`--quantize`); CPU
    /// and f32 only.
    pub fn quantize(&mut self, quantize: crate::model::Quantize) -> Result<()> {
        self.text.encoder.quantize(quantize)?;
        self.vision.encoder.quantize(quantize)
    }

    /// Turns the fused CPU kernels on (the default) or off, falling back to generic candle ops;
    /// tests use it to check one against the other (the `testing` feature).
    #[cfg(feature = "testing")]
    pub fn set_fused_cpu(&mut self, on: bool) {
        self.text.encoder.set_fused_cpu(on).expect("the f32 weights are restored from their packed copy");
        self.vision.encoder.set_fused_cpu(on).expect("the f32 weights are restored from their packed copy");
    }

    /// The text tower's pooling position for one sequence (the `testing` feature).
    #[cfg(feature = "testing")]
    pub fn text_pool_position(&self, ids: &[u32]) -> usize {
        self.text.pool_position(ids)
    }
}
