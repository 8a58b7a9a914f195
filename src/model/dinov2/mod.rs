//! The DINOv2 family (Oquab et al. 2023): Hugging Face `Dinov2Model` folders (`config.json` with
//! `model_type` "dinov2", a `BitImageProcessor` `preprocessor_config.json`, weights). An
//! image-only, self-supervised encoder: its embedding is transformers' `pooler_output`, the
//! final layer norm of the class token, L2-normalised. It has no text tower and no tokenizer.
//!
//! The layers are the shared pre-norm layers of [`crate::model::layers`]: DINOv2's layer scale
//! (`x + γ ⊙ f(x)`) is folded into each block's last linear layer at load. The position
//! embeddings, trained for `image_size` (518 px for the published checkpoints), are resampled
//! once at load to the preprocessor's crop (224 px) with PyTorch's bicubic interpolation, as
//! transformers' `interpolate_pos_encoding` does on every forward pass.

pub mod config;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

pub use config::Dinov2Config;

use super::files::{weights_builder, ModelFiles};
use super::layers::{Encoder as Layers, EncoderShape, LayerNames, LayerNorm};
use super::{l2_normalize, Encoder, Family, ModelInfo, ModelSpec};
use crate::error::{Error, Result};
use crate::media::preprocess::{Preprocessor, PreprocessorConfig};
use crate::media::tokenize::TextTokenizer;

/// The names the Hub's checkpoints use (transformers 4: `attention.attention.query`, …).
const HUB_LAYER: LayerNames = LayerNames {
    q: "attention.attention.query",
    k: "attention.attention.key",
    v: "attention.attention.value",
    out: "attention.output.dense",
    ln1: "norm1",
    ln2: "norm2",
    fc1: "mlp.fc1",
    fc2: "mlp.fc2",
};

/// The names transformers 5 saves under (`attention.q_proj`, …).
const V5_LAYER: LayerNames = LayerNames {
    q: "attention.q_proj",
    k: "attention.k_proj",
    v: "attention.v_proj",
    out: "attention.o_proj",
    ln1: "norm1",
    ln2: "norm2",
    fc1: "mlp.fc1",
    fc2: "mlp.fc2",
};

/// The DINOv2 vision transformer, pooled at the class token.
#[derive(Debug, Clone)]
pub struct Dinov2Model {
    cls_token: Tensor,
    patch_weight: Tensor,
    patch_bias: Tensor,
    /// Position embeddings `[1 + grid², hidden]` for the input size the model was loaded for.
    position_embedding: Tensor,
    encoder: Layers,
    layernorm: LayerNorm,
    patch: usize,
    input_size: usize,
    channels: usize,
    hidden: usize,
    heads: usize,
    device: Device,
    dtype: DType,
}

impl Dinov2Model {
    /// Builds the model from a `VarBuilder` over `Dinov2Model` weights, for square inputs of
    /// `input_size` pixels.
    pub fn new(vb: VarBuilder, config: &Dinov2Config, input_size: usize) -> Result<Self> {
        // Checkpoints of the task models (`Dinov2ForImageClassification`) keep the backbone
        // under `dinov2.`.
        let vb = if vb.contains_tensor("dinov2.embeddings.cls_token") { vb.pp("dinov2") } else { vb };
        let h = config.hidden_size;
        let (p, c) = (config.patch_size, config.num_channels);
        let emb = vb.pp("embeddings");
        let trained = (config.image_size / p).pow(2);
        let pos = emb.get((1, trained + 1, h), "position_embeddings")?;
        let grid = input_size / p;
        let position_embedding = interpolate_positions(&pos.squeeze(0)?, config.image_size / p, grid)?;
        let names = if vb.contains_tensor("encoder.layer.0.attention.q_proj.weight") { &V5_LAYER } else { &HUB_LAYER };
        let shape = EncoderShape::new(
            h,
            config.intermediate_size(),
            config.num_hidden_layers,
            config.num_attention_heads,
            config.layer_norm_eps,
            &config.hidden_act,
        )?;
        let layers_vb = vb.pp("encoder").pp("layer");
        let mut encoder = Layers::load(layers_vb.clone(), &shape, names)?;
        for (i, layer) in encoder.layers_mut().iter_mut().enumerate() {
            let l = layers_vb.pp(i);
            let g1 = l.pp("layer_scale1").get(h, "lambda1")?;
            let g2 = l.pp("layer_scale2").get(h, "lambda1")?;
            layer.scale_outputs(&g1, &g2)?;
        }
        let patch = emb.pp("patch_embeddings").pp("projection");
        Ok(Self {
            cls_token: emb.get((1, 1, h), "cls_token")?.reshape(h)?,
            patch_weight: patch.get((h, c, p, p), "weight")?.reshape((h, c * p * p))?,
            patch_bias: patch.get(h, "bias")?,
            position_embedding: position_embedding.to_dtype(vb.dtype())?,
            encoder,
            layernorm: LayerNorm::load(vb.pp("layernorm"), h, config.layer_norm_eps)?,
            patch: p,
            input_size,
            channels: c,
            hidden: h,
            heads: config.num_attention_heads,
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Converts the encoder layers' linear layers to int8 or bf16 (`--quantize`); CPU and f32
    /// only.
    pub fn quantize(&mut self, quantize: crate::model::Quantize) -> Result<()> {
        self.encoder.quantize(quantize)
    }

    /// Turns the fused CPU kernels on (the default) or off, falling back to generic candle ops;
    /// tests check one against the other (the `testing` feature).
    #[cfg(feature = "testing")]
    pub fn set_fused_cpu(&mut self, on: bool) {
        self.encoder.set_fused_cpu(on).expect("the f32 weights are restored from their packed copy");
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// `pooler_output`: the final layer norm of the class token, `[batch, hidden]` in f32, not
    /// normalised, for pixels `[batch, channels, size, size]` on any device.
    pub fn embed_images(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, c, hh, ww) = pixels.dims4()?;
        if c != self.channels || hh != self.input_size || ww != self.input_size {
            return Err(Error::Model {
                reason: format!(
                    "a pixel tensor of shape {:?}, the model was loaded for [_, {}, {}, {}]",
                    pixels.dims(),
                    self.channels,
                    self.input_size,
                    self.input_size
                ),
            });
        }
        let x = pixels.to_device(&self.device)?.to_dtype(self.dtype)?;
        let p = self.patch;
        let g = hh / p;
        let h = self.hidden;
        // A stride-p, p×p convolution is a GEMM over flattened patches.
        let patches = x
            .reshape((b, c, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * g * g, c * p * p))?;
        let x = patches.matmul(&self.patch_weight.t()?)?.broadcast_add(&self.patch_bias)?.reshape((b, g * g, h))?;
        let cls = self.cls_token.reshape((1, 1, h))?.broadcast_as((b, 1, h))?;
        let x = Tensor::cat(&[&cls, &x], 1)?.broadcast_add(&self.position_embedding)?;
        let x = self.encoder.forward_pooled(&x, false, &vec![0; b])?;
        Ok(candle_core::Module::forward(&self.layernorm, &x)?.to_dtype(DType::F32)?)
    }
}

/// Position embeddings `[1 + from², h]` (class token first) resampled to a `to × to` grid with
/// PyTorch's bicubic interpolation (`align_corners=False`, A = −0.75, borders clamped), in f32,
/// as transformers' `Dinov2Embeddings.interpolate_pos_encoding` does. Unchanged when the grids
/// match (transformers then uses them as they are).
pub(crate) fn interpolate_positions(pos: &Tensor, from: usize, to: usize) -> Result<Tensor> {
    if from == to {
        return Ok(pos.clone());
    }
    let (n, h) = pos.dims2()?;
    if n != from * from + 1 {
        return Err(Error::Model { reason: format!("{n} position embeddings, not 1 + {from}²") });
    }
    let src: Vec<Vec<f32>> = pos.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.to_vec2()?;
    let taps = bicubic_taps(from, to);
    let mut out = Vec::with_capacity((to * to + 1) * h);
    out.extend_from_slice(&src[0]);
    for (ys, yw) in &taps {
        for (xs, xw) in &taps {
            // `ch` indexes sixteen different source rows, which no single iterator walks.
            #[allow(clippy::needless_range_loop)]
            for ch in 0..h {
                let at = |y: usize, x: usize| src[1 + y * from + x][ch];
                let row = |y: usize| {
                    at(y, xs[0]) * xw[0] + at(y, xs[1]) * xw[1] + at(y, xs[2]) * xw[2] + at(y, xs[3]) * xw[3]
                };
                out.push(row(ys[0]) * yw[0] + row(ys[1]) * yw[1] + row(ys[2]) * yw[2] + row(ys[3]) * yw[3]);
            }
        }
    }
    Ok(Tensor::from_vec(out, (to * to + 1, h), &Device::Cpu)?.to_device(pos.device())?)
}

/// For each output index, the four clamped input indices and their cubic weights, as
/// PyTorch's `upsample_bicubic2d` computes them for `align_corners=False`.
fn bicubic_taps(input: usize, output: usize) -> Vec<([usize; 4], [f32; 4])> {
    const A: f32 = -0.75;
    let cubic1 = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let cubic2 = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            let real = scale * (o as f32 + 0.5) - 0.5;
            let i = real.floor();
            let t = real - i;
            let clamp = |k: f32| (k.max(0.0) as usize).min(input - 1);
            let idx = [clamp(i - 1.0), clamp(i), clamp(i + 1.0), clamp(i + 2.0)];
            (idx, [cubic2(t + 1.0), cubic1(t), cubic1(1.0 - t), cubic2(2.0 - t)])
        })
        .collect()
}

/// A DINOv2 model with its preprocessor.
#[derive(Debug, Clone)]
pub struct Dinov2 {
    pub model: Dinov2Model,
    pub preprocessor: Preprocessor,
    pub info: ModelInfo,
}

impl Dinov2 {
    pub fn from_files(spec: &ModelSpec, files: &ModelFiles, device: &Device, dtype: DType) -> Result<Self> {
        let config = Dinov2Config::from_file(&files.config)?;
        let pre = PreprocessorConfig::from_file(&files.preprocessor)?;
        let (h, w) = pre.output_size();
        if h != w || !(h as usize).is_multiple_of(config.patch_size) || h == 0 {
            return Err(Error::ModelFile {
                path: files.preprocessor.clone(),
                reason: format!(
                    "crops to {h}×{w}; DINOv2 needs a square crop that is a multiple of the {} px patch",
                    config.patch_size
                ),
            });
        }
        let vb = weights_builder(&files.weights, dtype, device)?;
        let model = Dinov2Model::new(vb, &config, h as usize).map_err(|e| Error::ModelFile {
            path: files.weights.clone(),
            reason: format!("weights do not fit config.json: {e}"),
        })?;
        let info = ModelInfo::of(spec, files, config.hidden_size, Family::Dinov2)?;
        Ok(Self { model, preprocessor: Preprocessor::new(pre), info })
    }
}

impl Encoder for Dinov2 {
    fn family(&self) -> Family {
        Family::Dinov2
    }

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn device(&self) -> &Device {
        self.model.device()
    }

    fn embed_dim(&self) -> usize {
        self.model.hidden_size()
    }

    fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    fn tokenizer(&self) -> Option<&TextTokenizer> {
        None
    }

    fn embed_images(&self, pixels: &Tensor) -> Result<Tensor> {
        l2_normalize(&self.model.embed_images(pixels)?)
    }

    fn embed_texts(&self, _ids: &[Vec<u32>]) -> Result<Tensor> {
        Err(Error::Model { reason: format!("{} is an image-only model (DINOv2): it embeds no text", self.info.id) })
    }

    fn bytes_per_item(&self) -> u64 {
        let e = self.model.dtype.size_in_bytes() as u64;
        let m = &self.model;
        let seq = ((m.input_size / m.patch).pow(2) + 1) as u64;
        let hidden = m.hidden as u64;
        let heads = m.heads as u64;
        super::layers::tower_bytes(e, seq, hidden, 4 * hidden, heads)
            + super::layers::pixel_bytes(e, m.channels, m.input_size)
    }

    fn warm_up(&self) -> Result<()> {
        let s = self.model.input_size;
        let pixels = Tensor::zeros((1, self.model.channels, s, s), DType::F32, &Device::Cpu)?;
        self.model.embed_images(&pixels)?.to_vec2::<f32>()?;
        Ok(())
    }

    fn quantize(&mut self, quantize: crate::model::Quantize) -> Result<()> {
        self.model.quantize(quantize)
    }
}
