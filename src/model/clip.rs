//! CLIP image and text towers (Radford et al. 2021), written against Hugging Face's
//! `modeling_clip.py` weight names so any `CLIPModel` checkpoint loads unchanged.
//!
//! Differences from candle-transformers' stock CLIP, all for speed with identical maths:
//! Q/K/V are one fused matmul (weights concatenated at load); activations stay in the compute
//! dtype; softmax and layer norm use candle's fused single-kernel ops; linear layers run as one
//! 2-D GEMM over `batch * seq` rows; the patch embedding is a reshape + GEMM instead of a
//! convolution; and text pooling positions are computed on the host from the token ids we
//! already hold, so no per-row device sync is needed.

use std::cell::OnceCell;

use candle_core::{DType, Device, IndexOp, Module, Tensor, D};
use candle_nn::VarBuilder;

use super::config::{Activation, ClipConfig, TextConfig, VisionConfig};
use crate::error::Result;

/// `y = x W^T + b`, applied to the last dimension of a tensor of any rank as one 2-D GEMM.
/// (Every linear layer inside CLIP's encoders has a bias; the projections are bare matrices.)
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn load(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self { weight: vb.get((out_dim, in_dim), "weight")?, bias: vb.get(out_dim, "bias")? })
    }

    /// One layer out of several `[out, in]` layers stacked along the output dimension.
    fn fused(parts: &[Linear]) -> Result<Self> {
        let weights: Vec<&Tensor> = parts.iter().map(|l| &l.weight).collect();
        let biases: Vec<&Tensor> = parts.iter().map(|l| &l.bias).collect();
        Ok(Self { weight: Tensor::cat(&weights, 0)?, bias: Tensor::cat(&biases, 0)? })
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let dims = xs.dims().to_vec();
        let (last, lead) = dims.split_last().expect("linear input has at least one dim");
        let rows: usize = lead.iter().product();
        let x2 = xs.reshape((rows, *last))?;
        let mut out_dims = lead.to_vec();
        out_dims.push(self.weight.dim(0)?);
        #[cfg(feature = "cuda")]
        if let Some(y) = super::cuda::linear(&x2, &self.weight, &self.bias).map_err(candle_core::Error::wrap)? {
            return y.reshape(out_dims);
        }
        let y = x2.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?;
        y.reshape(out_dims)
    }
}

#[derive(Debug, Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: vb.get(dim, "weight")?, bias: vb.get(dim, "bias")?, eps: eps as f32 })
    }
}

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        #[cfg(feature = "cuda")]
        if let Some(y) =
            super::cuda::layer_norm(xs, &self.weight, &self.bias, self.eps).map_err(candle_core::Error::wrap)?
        {
            return Ok(y);
        }
        candle_nn::ops::layer_norm(&xs.contiguous()?, &self.weight, &self.bias, self.eps)
    }
}

impl Module for Activation {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702f64)?)?,
            Activation::Gelu => xs.gelu_erf(),
            Activation::GeluTanh => xs.gelu(),
        }
    }
}

/// Shape of one transformer encoder, shared by both towers.
#[derive(Debug, Clone, Copy)]
struct EncoderShape {
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    eps: f64,
    act: Activation,
}

impl EncoderShape {
    fn new(hidden: usize, intermediate: usize, layers: usize, heads: usize, eps: f64, act: &str) -> Result<Self> {
        Ok(Self { hidden, intermediate, layers, heads, eps, act: Activation::parse(act)? })
    }

    fn text(c: &TextConfig) -> Result<Self> {
        Self::new(
            c.hidden_size,
            c.intermediate_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.layer_norm_eps,
            &c.hidden_act,
        )
    }

    fn vision(c: &VisionConfig) -> Result<Self> {
        Self::new(
            c.hidden_size,
            c.intermediate_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.layer_norm_eps,
            &c.hidden_act,
        )
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    qkv: Linear,
    out_proj: Linear,
    ln1: LayerNorm,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
    heads: usize,
    scale: f64,
    /// Constants folded into the weights for the generic (device) path: the attention scale
    /// into Q, and QuickGELU's 1.702 into fc1/fc2 so the activation is one `silu` kernel.
    folded: bool,
}

impl EncoderLayer {
    fn load(vb: VarBuilder, s: &EncoderShape) -> Result<Self> {
        let h = s.hidden;
        let attn = vb.pp("self_attn");
        let qkv = Linear::fused(&[
            Linear::load(attn.pp("q_proj"), h, h)?,
            Linear::load(attn.pp("k_proj"), h, h)?,
            Linear::load(attn.pp("v_proj"), h, h)?,
        ])?;
        Ok(Self {
            qkv,
            out_proj: Linear::load(attn.pp("out_proj"), h, h)?,
            ln1: LayerNorm::load(vb.pp("layer_norm1"), h, s.eps)?,
            ln2: LayerNorm::load(vb.pp("layer_norm2"), h, s.eps)?,
            fc1: Linear::load(vb.pp("mlp").pp("fc1"), h, s.intermediate)?,
            fc2: Linear::load(vb.pp("mlp").pp("fc2"), s.intermediate, h)?,
            act: s.act,
            heads: s.heads,
            scale: ((h / s.heads) as f64).powf(-0.5),
            folded: false,
        })
    }

    /// Folds the attention scale into Q's weights and bias, and for QuickGELU
    /// (`y·σ(1.702y)` = `silu(1.702y) / 1.702`) the 1.702 into fc1 and its inverse into fc2's
    /// weight. Same maths, three fewer kernels per layer on a GPU. (For a head size of 64 the
    /// scale is 1/8, so that part is exact even in f16.)
    fn fold(&mut self) -> Result<()> {
        if self.folded {
            return Ok(());
        }
        let h = self.out_proj.weight.dim(0)?;
        let scale_q = |t: &Tensor| -> Result<Tensor> {
            let dt = t.dtype();
            let q = (t.narrow(0, 0, h)?.to_dtype(DType::F32)? * self.scale)?.to_dtype(dt)?;
            Ok(Tensor::cat(&[&q, &t.narrow(0, h, 2 * h)?], 0)?)
        };
        self.qkv = Linear { weight: scale_q(&self.qkv.weight)?, bias: scale_q(&self.qkv.bias)? };
        if self.act == Activation::QuickGelu {
            let mul =
                |t: &Tensor, k: f64| -> Result<Tensor> { Ok((t.to_dtype(DType::F32)? * k)?.to_dtype(t.dtype())?) };
            self.fc1 = Linear { weight: mul(&self.fc1.weight, 1.702)?, bias: mul(&self.fc1.bias, 1.702)? };
            self.fc2.weight = mul(&self.fc2.weight, 1.0 / 1.702)?;
        }
        self.folded = true;
        Ok(())
    }

    /// `x + mlp(ln2(x))`.
    fn mlp_block(&self, x: &Tensor) -> Result<Tensor> {
        let mid = self.fc1.forward(&self.ln2.forward(x)?)?;
        let mid =
            if self.folded && self.act == Activation::QuickGelu { silu(&mid)? } else { self.act.forward(&mid)? };
        add(&self.fc2.forward(&mid)?, x)
    }

    /// Splits the fused projection `[b, s, 3h]` into Q (scaled by the attention scale), K and V,
    /// each `[b, heads, s, hd]` and contiguous.
    fn split_heads(&self, qkv: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        #[cfg(feature = "cuda")]
        if self.folded {
            if let Some(qkv) = super::cuda::split_qkv(qkv, self.heads)? {
                return Ok(qkv);
            }
        }
        let (b, s, h3) = qkv.dims3()?;
        let hd = h3 / 3 / self.heads;
        let qkv = qkv.reshape((b, s, 3, self.heads, hd))?.permute((2, 0, 3, 1, 4))?;
        let q = if self.folded { qkv.i(0)?.contiguous()? } else { (qkv.i(0)? * self.scale)?.contiguous()? };
        Ok((q, qkv.i(1)?.contiguous()?, qkv.i(2)?.contiguous()?))
    }

    /// Whether [`Self::forward_fused_cpu`] can run this layer on `xs`.
    fn can_fuse(&self, xs: &Tensor) -> bool {
        !self.folded && xs.device().is_cpu() && xs.dtype() == DType::F32 && self.act == Activation::QuickGelu
    }

    /// The same layer through the fused CPU kernels of [`super::cpu`].
    fn forward_fused_cpu(&self, xs: &Tensor, causal: bool, pick: Option<&[usize]>) -> Result<Tensor> {
        use super::cpu::{encoder_layer, F32View, LayerWeights};
        let (b, s, _) = xs.dims3()?;
        let xs = xs.contiguous()?;
        let x = F32View::new(&xs)?;
        let views = [
            F32View::new(&self.ln1.weight)?,
            F32View::new(&self.ln1.bias)?,
            F32View::new(&self.ln2.weight)?,
            F32View::new(&self.ln2.bias)?,
            F32View::new(&self.qkv.weight)?,
            F32View::new(&self.qkv.bias)?,
            F32View::new(&self.out_proj.weight)?,
            F32View::new(&self.out_proj.bias)?,
            F32View::new(&self.fc1.weight)?,
            F32View::new(&self.fc1.bias)?,
            F32View::new(&self.fc2.weight)?,
            F32View::new(&self.fc2.bias)?,
        ];
        let v: Vec<&[f32]> = views.iter().map(F32View::get).collect();
        let w = LayerWeights {
            ln1: (v[0], v[1]),
            ln2: (v[2], v[3]),
            qkv: (v[4], v[5]),
            out: (v[6], v[7]),
            fc1: (v[8], v[9]),
            fc2: (v[10], v[11]),
            eps: self.ln1.eps,
            heads: self.heads,
            scale: self.scale as f32,
        };
        encoder_layer(x.get(), b, s, &w, causal, pick)
    }

    /// Attention from the fused projection `qkv [b, s, 3h]` to `[b, s, h]` in one CUDA kernel
    /// (`model::cuda::attention`, in CUDA builds), where it applies.
    fn fused_attention(&self, qkv: &Tensor, causal: bool) -> Result<Option<Tensor>> {
        #[cfg(feature = "cuda")]
        if self.folded {
            // Q already carries the attention scale.
            return super::cuda::attention(qkv, self.heads, causal, 1.0);
        }
        let _ = (qkv, causal);
        Ok(None)
    }

    /// `xs`: [batch, seq, hidden]; `mask`: the additive causal mask `[seq, seq]`, or none.
    /// `full_mask` caches that mask expanded to the scores' shape `[batch, heads, seq, seq]`
    /// across layers, for the generic path: on CUDA candle's broadcasting add was several times
    /// slower than the attention matmul it follows.
    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>, full_mask: &OnceCell<Tensor>) -> Result<Tensor> {
        let qkv = self.qkv.forward(&self.ln1.forward(xs)?)?;
        let ctx = match self.fused_attention(&qkv, mask.is_some())? {
            Some(ctx) => ctx,
            None => {
                let (q, k, v) = self.split_heads(&qkv)?;
                let mut scores = q.matmul(&k.t()?)?;
                if let Some(m) = mask {
                    if full_mask.get().is_none() {
                        let _ = full_mask.set(m.broadcast_as(scores.shape())?.contiguous()?);
                    }
                    scores = add(&scores, full_mask.get().expect("set above"))?;
                }
                let probs = candle_nn::ops::softmax_last_dim(&scores)?;
                merge_heads(&probs.matmul(&v)?)?
            }
        };
        let x = add(&self.out_proj.forward(&ctx)?, xs)?;
        self.mlp_block(&x)
    }

    /// The last layer, computed only for the row each sequence is pooled at: `pick[i]` is that
    /// row's position in item `i`, `rows[i] = i * seq + pick[i]`. Every row still gives its K
    /// and V, but attention, out_proj and the MLP run on `b` rows instead of `b × s`.
    /// Returns `[b, hidden]`.
    fn forward_pooled(&self, xs: &Tensor, mask: Option<&Tensor>, pick: &Tensor, rows: &Tensor) -> Result<Tensor> {
        let (b, s, h) = xs.dims3()?;
        let hd = h / self.heads;
        let qkv = self.qkv.forward(&self.ln1.forward(xs)?)?;
        let (_, k, v) = self.split_heads(&qkv)?;
        let q = qkv.reshape((b * s, 3 * h))?.index_select(rows, 0)?.narrow(1, 0, h)?;
        let q = if self.folded { q } else { (q * self.scale)? };
        let q = q.reshape((b, self.heads, 1, hd))?.contiguous()?;
        let mut scores = q.matmul(&k.t()?)?; // [b, heads, 1, s]
        if let Some(m) = mask {
            scores = scores.broadcast_add(&m.index_select(pick, 0)?.reshape((b, 1, 1, s))?)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        // [b, heads, 1, hd] is laid out as [b, h]: the heads concatenated.
        let ctx = probs.matmul(&v)?.reshape((b, h))?;
        let x = add(&self.out_proj.forward(&ctx)?, &xs.reshape((b * s, h))?.index_select(rows, 0)?)?;
        self.mlp_block(&x)
    }
}

#[derive(Debug, Clone)]
struct Encoder {
    layers: Vec<EncoderLayer>,
    /// Use the fused CPU kernels where they apply (on by default).
    fused_cpu: bool,
}

impl Encoder {
    fn load(vb: VarBuilder, s: &EncoderShape) -> Result<Self> {
        let vb = vb.pp("layers");
        let layers = (0..s.layers).map(|i| EncoderLayer::load(vb.pp(i), s)).collect::<Result<_>>()?;
        Ok(Self { layers, fused_cpu: true })
    }

    /// Runs the encoder and returns only the row each sequence is pooled at (`pick[i]` for
    /// batch item `i`), `[batch, hidden]`. The fused CPU path skips the other rows' work in
    /// the last layer, where nothing reads them.
    fn forward_pooled(&self, xs: &Tensor, causal: bool, pick: &[usize]) -> Result<Tensor> {
        let (b, s, h) = xs.dims3()?;
        let mut x = xs.clone();
        let mut mask = None;
        let full_mask = OnceCell::new();
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            if self.fused_cpu && layer.can_fuse(&x) {
                if i == last {
                    return Ok(layer.forward_fused_cpu(&x, causal, Some(pick))?.reshape((b, h))?);
                }
                x = layer.forward_fused_cpu(&x, causal, None)?;
            } else {
                if mask.is_none() {
                    mask = causal_mask_if(causal, s, &x)?;
                }
                if i == last {
                    let p: Vec<u32> = pick.iter().map(|&t| t as u32).collect();
                    let p = Tensor::from_vec(p, (b,), x.device())?;
                    return layer.forward_pooled(&x, mask.as_ref(), &p, &pooled_rows(pick, s, x.device())?);
                }
                x = layer.forward(&x, mask.as_ref(), &full_mask)?;
            }
        }
        // No layers: pool the embeddings themselves.
        Ok(x.reshape((b * s, h))?.index_select(&pooled_rows(pick, s, x.device())?, 0)?)
    }

    fn fold(&mut self) -> Result<()> {
        self.layers.iter_mut().try_for_each(EncoderLayer::fold)
    }
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
        let shape = EncoderShape::text(c)?;
        let emb = vb.pp("embeddings");
        Ok(Self {
            token_embedding: emb.pp("token_embedding").get((c.vocab_size, c.hidden_size), "weight")?,
            position_embedding: emb
                .pp("position_embedding")
                .get((c.max_position_embeddings, c.hidden_size), "weight")?,
            encoder: Encoder::load(vb.pp("encoder"), &shape)?,
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

/// `a + b` (same shapes), through sieve's vectorised CUDA kernel where it applies.
fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(t) = super::cuda::add(a, b)? {
        return Ok(t);
    }
    Ok((a + b)?)
}

/// `x · sigmoid(x)`, through sieve's vectorised CUDA kernel where it applies.
fn silu(x: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(t) = super::cuda::silu(x)? {
        return Ok(t);
    }
    Ok(x.silu()?)
}

/// Attention output `[b, heads, s, hd]` as `[b, s, heads·hd]`.
fn merge_heads(ctx: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(t) = super::cuda::merge_heads(ctx)? {
        return Ok(t);
    }
    let (b, heads, s, hd) = ctx.dims4()?;
    Ok(ctx.transpose(1, 2)?.reshape((b, s, heads * hd))?)
}

/// Row `i * seq + pick[i]` of a `[b * seq, _]` matrix for each item `i`, as an index tensor.
fn pooled_rows(pick: &[usize], seq: usize, device: &Device) -> Result<Tensor> {
    let rows: Vec<u32> = pick.iter().enumerate().map(|(i, &t)| (i * seq + t) as u32).collect();
    Ok(Tensor::from_vec(rows, (pick.len(),), device)?)
}

/// Additive causal mask `[seq, seq]` in `like`'s dtype and device, when `causal`.
fn causal_mask_if(causal: bool, seq: usize, like: &Tensor) -> Result<Option<Tensor>> {
    if !causal {
        return Ok(None);
    }
    let mask: Vec<f32> =
        (0..seq).flat_map(|i| (0..seq).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Ok(Some(Tensor::from_vec(mask, (seq, seq), like.device())?.to_dtype(like.dtype())?))
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
        let shape = EncoderShape::vision(c)?;
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
            encoder: Encoder::load(vb.pp("encoder"), &shape)?,
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
    /// produced by [`crate::media::tokenize::ClipTokenizer`].
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

    /// Turns the fused CPU kernels on (the default) or off, falling back to generic candle ops;
    /// tests use it to check one against the other (the `testing` feature).
    #[cfg(feature = "testing")]
    pub fn set_fused_cpu(&mut self, on: bool) {
        self.text.encoder.fused_cpu = on;
        self.vision.encoder.fused_cpu = on;
    }

    /// The text tower's pooling position for one sequence (the `testing` feature).
    #[cfg(feature = "testing")]
    pub fn text_pool_position(&self, ids: &[u32]) -> usize {
        self.text.pool_position(ids)
    }
}

/// Row-wise L2 normalisation; all-zero rows stay zero.
pub fn l2_normalize(xs: &Tensor) -> Result<Tensor> {
    let norm = xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    Ok(xs.broadcast_div(&norm)?)
}
