//! The transformer blocks the encoder families share, written against Hugging Face's weight
//! names (`self_attn.{q,k,v,out}_proj`, `layer_norm1/2`, `mlp.fc1/fc2`, as CLIP and SigLIP
//! checkpoints name them): linear and layer-norm layers, the pre-norm encoder layer with fused
//! Q/K/V, and the encoder that pools one row per sequence.
//!
//! Differences from candle-transformers' stock layers, all for speed with identical maths:
//! Q/K/V are one fused matmul (weights concatenated at load); activations stay in the compute
//! dtype; softmax and layer norm use candle's fused single-kernel ops; linear layers run as one
//! 2-D GEMM over `batch * seq` rows; on the CPU in f32 a layer runs through the fused kernels of
//! [`super::cpu`], on CUDA through sieve's kernels in `super::cuda`.

use std::cell::OnceCell;
use std::sync::Arc;

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::linalg::PackedWeight;
use crate::model::bf16::{Bf16Layer, Bf16Linear};
use crate::model::cpu::PackedLayer;
use crate::model::int8::{Int8Layer, Int8Linear};

/// The activation functions the encoder families use (`hidden_act` in their configs).
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

/// `y = x W^T + b`, applied to the last dimension of a tensor of any rank as one 2-D GEMM.
/// (Every linear layer inside CLIP's encoders has a bias; the projections are bare matrices.)
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    /// A layer from its weight `[out, in]` and bias `[out]`.
    pub(crate) fn new(weight: Tensor, bias: Tensor) -> Self {
        Self { weight, bias }
    }

    pub(crate) fn load(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self { weight: vb.get((out_dim, in_dim), "weight")?, bias: vb.get(out_dim, "bias")? })
    }

    /// One layer out of several `[out, in]` layers stacked along the output dimension.
    pub(crate) fn fused(parts: &[Linear]) -> Result<Self> {
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
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    pub(crate) fn load(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
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
pub(crate) struct EncoderShape {
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    eps: f64,
    act: Activation,
}

impl EncoderShape {
    pub(crate) fn new(
        hidden: usize,
        intermediate: usize,
        layers: usize,
        heads: usize,
        eps: f64,
        act: &str,
    ) -> Result<Self> {
        Ok(Self { hidden, intermediate, layers, heads, eps, act: Activation::parse(act)? })
    }
}

/// Where a family's checkpoints keep one encoder layer's tensors, relative to the layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerNames {
    pub q: &'static str,
    pub k: &'static str,
    pub v: &'static str,
    pub out: &'static str,
    pub ln1: &'static str,
    pub ln2: &'static str,
    pub fc1: &'static str,
    pub fc2: &'static str,
}

/// transformers' CLIP (and SigLIP) names: `self_attn.{q,k,v,out}_proj`, `layer_norm1/2`,
/// `mlp.fc1/fc2`.
pub(crate) const HF_CLIP_LAYER: LayerNames = LayerNames {
    q: "self_attn.q_proj",
    k: "self_attn.k_proj",
    v: "self_attn.v_proj",
    out: "self_attn.out_proj",
    ln1: "layer_norm1",
    ln2: "layer_norm2",
    fc1: "mlp.fc1",
    fc2: "mlp.fc2",
};

#[derive(Debug, Clone)]
pub(crate) struct EncoderLayer {
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
    /// The linear layers in int8 for the fused CPU path (`--quantize int8`), once quantised.
    int8: Option<Arc<Int8Layer>>,
    /// The linear layers in bf16 for the fused CPU path (`--quantize bf16`), once converted.
    bf16: Option<Arc<Bf16Layer>>,
    /// The f32 linear layers' weights packed for the CPU kernel (`Self::pack`); while they are,
    /// the `Linear`s hold empty weights, so the model is not held twice.
    packed: Option<Arc<PackedLayer>>,
}

impl EncoderLayer {
    pub(crate) fn load(vb: VarBuilder, s: &EncoderShape, names: &LayerNames) -> Result<Self> {
        let h = s.hidden;
        let qkv = Linear::fused(&[
            Linear::load(vb.pp(names.q), h, h)?,
            Linear::load(vb.pp(names.k), h, h)?,
            Linear::load(vb.pp(names.v), h, h)?,
        ])?;
        Ok(Self {
            qkv,
            out_proj: Linear::load(vb.pp(names.out), h, h)?,
            ln1: LayerNorm::load(vb.pp(names.ln1), h, s.eps)?,
            ln2: LayerNorm::load(vb.pp(names.ln2), h, s.eps)?,
            fc1: Linear::load(vb.pp(names.fc1), h, s.intermediate)?,
            fc2: Linear::load(vb.pp(names.fc2), s.intermediate, h)?,
            act: s.act,
            heads: s.heads,
            scale: ((h / s.heads) as f64).powf(-0.5),
            folded: false,
            int8: None,
            bf16: None,
            packed: None,
        })
    }

    /// Packs the four linear layers' f32 weights for the CPU kernel ([`PackedWeight`]) and
    /// drops the unpacked ones, where the fused CPU path will multiply by them: CPU f32
    /// weights, not folded, quantised or packed already, and an x86 kernel (AVX-512 or AVX2).
    fn pack(&mut self) -> Result<()> {
        let kernel = crate::linalg::kernel();
        let eligible = |l: &Linear| l.weight.device().is_cpu() && l.weight.dtype() == DType::F32;
        if self.packed.is_some()
            || self.folded
            || self.int8.is_some()
            || self.bf16.is_some()
            || ![&self.qkv, &self.out_proj, &self.fc1, &self.fc2].into_iter().all(eligible)
        {
            return Ok(());
        }
        let pack = |l: &Linear| -> Result<Option<PackedWeight>> {
            let (n, k) = l.weight.dims2()?;
            Ok(PackedWeight::new(kernel, super::cpu::F32View::new(&l.weight)?.get(), n, k))
        };
        let (Some(qkv), Some(out), Some(fc1), Some(fc2)) =
            (pack(&self.qkv)?, pack(&self.out_proj)?, pack(&self.fc1)?, pack(&self.fc2)?)
        else {
            return Ok(());
        };
        for l in [&mut self.qkv, &mut self.out_proj, &mut self.fc1, &mut self.fc2] {
            let k = l.weight.dim(1)?;
            l.weight = Tensor::zeros((0, k), DType::F32, &Device::Cpu)?;
        }
        self.packed = Some(Arc::new(PackedLayer { qkv, out, fc1, fc2 }));
        Ok(())
    }

    /// Gives the linear layers their f32 weights back from the packed copy (exactly), for
    /// anything but the fused CPU path's products: the generic path, folding, quantising.
    fn unpack(&mut self) -> Result<()> {
        let Some(packed) = self.packed.take() else {
            return Ok(());
        };
        let pairs = [
            (&mut self.qkv, &packed.qkv),
            (&mut self.out_proj, &packed.out),
            (&mut self.fc1, &packed.fc1),
            (&mut self.fc2, &packed.fc2),
        ];
        for (l, p) in pairs {
            let k = l.weight.dim(1)?;
            l.weight = Tensor::from_vec(p.unpack(), (p.rows(), k), &Device::Cpu)?;
        }
        Ok(())
    }

    /// Multiplies the attention block's output by `attn` and the MLP's by `mlp` (per channel,
    /// `[hidden]`), folded into `out_proj` and `fc2`: DINOv2's layer scale, `x + γ ⊙ f(x)`, is
    /// then the plain pre-norm layer. Computed in f32 and cast back to the weights' dtype.
    pub(crate) fn scale_outputs(&mut self, attn: &Tensor, mlp: &Tensor) -> Result<()> {
        self.unpack()?;
        let scale = |l: &Linear, g: &Tensor| -> Result<Linear> {
            let dt = l.weight.dtype();
            let g = g.to_dtype(DType::F32)?;
            let weight = l.weight.to_dtype(DType::F32)?.broadcast_mul(&g.unsqueeze(1)?)?.to_dtype(dt)?;
            let bias = (l.bias.to_dtype(DType::F32)? * &g)?.to_dtype(dt)?;
            Ok(Linear { weight, bias })
        };
        self.out_proj = scale(&self.out_proj, attn)?;
        self.fc2 = scale(&self.fc2, mlp)?;
        Ok(())
    }

    /// Folds the attention scale into Q's weights and bias, and for QuickGELU
    /// (`y·σ(1.702y)` = `silu(1.702y) / 1.702`) the 1.702 into fc1 and its inverse into fc2's
    /// weight. Same maths, three fewer kernels per layer on a GPU. (For a head size of 64 the
    /// scale is 1/8, so that part is exact even in f16.)
    fn fold(&mut self) -> Result<()> {
        if self.folded {
            return Ok(());
        }
        self.unpack()?;
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
        !self.folded && xs.device().is_cpu() && xs.dtype() == DType::F32
    }

    /// The same layer through the fused CPU kernels of [`super::cpu`].
    fn forward_fused_cpu(
        &self,
        xs: &Tensor,
        causal: bool,
        pick: Option<&[usize]>,
        scratch: &mut super::cpu::Scratch,
    ) -> Result<Tensor> {
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
            act: self.act,
            int8: self.int8.as_deref(),
            bf16: self.bf16.as_deref(),
            packed: self.packed.as_deref(),
        };
        encoder_layer(x.get(), b, s, &w, causal, pick, scratch)
    }

    /// Quantises the linear layers [`Int8Layer`] names to int8, or converts all of them to
    /// bf16, for the fused CPU path; their weights must be f32 on the CPU. `None` packs the f32
    /// weights for the CPU kernel where that applies ([`Self::pack`]).
    fn quantize(&mut self, quantize: crate::model::Quantize) -> Result<()> {
        use crate::model::Quantize;
        self.unpack()?;
        match quantize {
            Quantize::None => self.pack()?,
            Quantize::Int8 => {
                let q = |l: &Linear| -> Result<Int8Linear> {
                    let (n, k) = l.weight.dims2()?;
                    Ok(Int8Linear::new(super::cpu::F32View::new(&l.weight)?.get(), n, k))
                };
                let (h3, h) = self.qkv.weight.dims2()?;
                let v =
                    Int8Linear::new(&super::cpu::F32View::new(&self.qkv.weight)?.get()[2 * h3 / 3 * h..], h3 / 3, h);
                let layer = Int8Layer { v, out: q(&self.out_proj)?, fc1: q(&self.fc1)?, fc2: q(&self.fc2)? };
                self.int8 = Some(Arc::new(layer));
            }
            Quantize::Bf16 => {
                let c = |l: &Linear| -> Result<Bf16Linear> {
                    let (n, k) = l.weight.dims2()?;
                    Ok(Bf16Linear::new(super::cpu::F32View::new(&l.weight)?.get(), n, k))
                };
                let layer =
                    Bf16Layer { qkv: c(&self.qkv)?, out: c(&self.out_proj)?, fc1: c(&self.fc1)?, fc2: c(&self.fc2)? };
                self.bf16 = Some(Arc::new(layer));
            }
        }
        Ok(())
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
pub(crate) struct Encoder {
    layers: Vec<EncoderLayer>,
    /// Use the fused CPU kernels where they apply (on by default).
    pub(crate) fused_cpu: bool,
}

impl Encoder {
    /// The encoder whose layer `i` is under `vb`'s `i` with the tensor names `names`.
    pub(crate) fn load(vb: VarBuilder, s: &EncoderShape, names: &LayerNames) -> Result<Self> {
        let layers = (0..s.layers).map(|i| EncoderLayer::load(vb.pp(i), s, names)).collect::<Result<_>>()?;
        Ok(Self { layers, fused_cpu: true })
    }

    /// The layers, for a family that adjusts their weights after loading.
    pub(crate) fn layers_mut(&mut self) -> &mut [EncoderLayer] {
        &mut self.layers
    }

    /// Runs the encoder and returns every row, `[batch, seq, hidden]`, for a family that pools
    /// after it (SigLIP's attention-pooling head).
    pub(crate) fn forward(&self, xs: &Tensor, causal: bool) -> Result<Tensor> {
        let s = xs.dim(1)?;
        let mut x = xs.clone();
        let mut mask = None;
        let full_mask = OnceCell::new();
        let mut scratch = super::cpu::Scratch::default();
        for layer in &self.layers {
            if self.fused_cpu && layer.can_fuse(&x) {
                x = layer.forward_fused_cpu(&x, causal, None, &mut scratch)?;
            } else {
                if mask.is_none() {
                    mask = causal_mask_if(causal, s, &x)?;
                }
                x = layer.forward(&x, mask.as_ref(), &full_mask)?;
            }
        }
        Ok(x)
    }

    /// Runs the encoder and returns only the row each sequence is pooled at (`pick[i]` for
    /// batch item `i`), `[batch, hidden]`. The fused CPU path skips the other rows' work in
    /// the last layer, where nothing reads them.
    pub(crate) fn forward_pooled(&self, xs: &Tensor, causal: bool, pick: &[usize]) -> Result<Tensor> {
        let (b, s, h) = xs.dims3()?;
        let mut x = xs.clone();
        let mut mask = None;
        let full_mask = OnceCell::new();
        let mut scratch = super::cpu::Scratch::default();
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            if self.fused_cpu && layer.can_fuse(&x) {
                if i == last {
                    return Ok(layer.forward_fused_cpu(&x, causal, Some(pick), &mut scratch)?.reshape((b, h))?);
                }
                x = layer.forward_fused_cpu(&x, causal, None, &mut scratch)?;
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

    pub(crate) fn fold(&mut self) -> Result<()> {
        self.layers.iter_mut().try_for_each(EncoderLayer::fold)
    }

    /// Converts every layer's linear layers to int8 or bf16 (`--quantize`). Only the fused CPU
    /// path computes in them, so the weights must be f32 on the CPU; anything else is refused.
    /// `None` packs f32 CPU weights for the fused path's kernel, and leaves others as they are.
    pub(crate) fn quantize(&mut self, quantize: crate::model::Quantize) -> Result<()> {
        if !self.fused_cpu {
            if quantize == crate::model::Quantize::None {
                return Ok(());
            }
            return Err(Error::Pipeline("--quantize needs the fused CPU path, which is turned off".into()));
        }
        // One layer per thread: packing and quantising copy every weight once.
        use rayon::prelude::*;
        self.layers.par_iter_mut().try_for_each(|l| l.quantize(quantize))
    }

    /// Turns the fused CPU kernels on or off; off, the layers get their unpacked f32 weights
    /// back for the generic path (tests compare the two).
    #[cfg(feature = "testing")]
    pub(crate) fn set_fused_cpu(&mut self, on: bool) -> Result<()> {
        if !on {
            self.layers.iter_mut().try_for_each(EncoderLayer::unpack)?;
        }
        self.fused_cpu = on;
        Ok(())
    }
}

/// `a + b` (same shapes), through sieve's vectorised CUDA kernel where it applies.
pub(crate) fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(t) = super::cuda::add(a, b)? {
        return Ok(t);
    }
    Ok((a + b)?)
}

/// `x · sigmoid(x)`, through sieve's vectorised CUDA kernel where it applies.
pub(crate) fn silu(x: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(t) = super::cuda::silu(x)? {
        return Ok(t);
    }
    Ok(x.silu()?)
}

/// Attention output `[b, heads, s, hd]` as `[b, s, heads·hd]`.
pub(crate) fn merge_heads(ctx: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(t) = super::cuda::merge_heads(ctx)? {
        return Ok(t);
    }
    let (b, heads, s, hd) = ctx.dims4()?;
    Ok(ctx.transpose(1, 2)?.reshape((b, s, heads * hd))?)
}

/// Row `i * seq + pick[i]` of a `[b * seq, _]` matrix for each item `i`, as an index tensor.
pub(crate) fn pooled_rows(pick: &[usize], seq: usize, device: &Device) -> Result<Tensor> {
    let rows: Vec<u32> = pick.iter().enumerate().map(|(i, &t)| (i * seq + t) as u32).collect();
    Ok(Tensor::from_vec(rows, (pick.len(),), device)?)
}

/// Additive causal mask `[seq, seq]` in `like`'s dtype and device, when `causal`.
pub(crate) fn causal_mask_if(causal: bool, seq: usize, like: &Tensor) -> Result<Option<Tensor>> {
    if !causal {
        return Ok(None);
    }
    let mask: Vec<f32> =
        (0..seq).flat_map(|i| (0..seq).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Ok(Some(Tensor::from_vec(mask, (seq, seq), like.device())?.to_dtype(like.dtype())?))
}

/// Device memory one item needs in one transformer tower's forward pass, in bytes of `e` each:
/// the widest activations alive at once (input, MLP hidden and its activation, residual,
/// Q/K/V and context) over `seq` positions, plus the attention scores and probabilities
/// (`--batch-size auto`, every family).
pub(crate) fn tower_bytes(e: u64, seq: u64, hidden: u64, inter: u64, heads: u64) -> u64 {
    e * (seq * (6 * hidden + 2 * inter) + 3 * heads * seq * seq)
}

/// The bytes of one `channels × size × size` picture held in f32 and again in the compute
/// dtype (`e` bytes a value).
pub(crate) fn pixel_bytes(e: u64, channels: usize, size: usize) -> u64 {
    (4 + e) * (channels * size * size) as u64
}
