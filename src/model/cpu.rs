//! A fused f32 encoder layer for the CPU. candle's generic ops run each step as its own pass
//! over memory (bias add, three passes for QuickGELU, Q/K/V permute copies, mask add, softmax,
//! transpose copy, residual add) and most of them on one core. Here the GEMMs (the `gemm` crate
//! that candle itself uses) write straight into buffers pre-filled with bias and residual, the
//! attention runs per (batch, head) on the rayon pool reading Q/K/V in place from the fused
//! projection, and layer norm and the activation are single parallel passes. The maths is the same;
//! `tests/model.rs` checks it against the generic path.

use candle_core::{CpuStorage, Device, Storage, StorageRef, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use gemm::Parallelism;

use crate::linalg::{matmul_wt, threads};
use crate::model::layers::Activation;

/// A borrowed, contiguous f32 CPU tensor.
pub(crate) struct F32View<'a> {
    guard: StorageRef<'a>,
    start: usize,
    len: usize,
}

impl<'a> F32View<'a> {
    pub(crate) fn new(t: &'a Tensor) -> Result<Self> {
        let (guard, layout) = t.storage_and_layout();
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| Error::Pipeline("fused CPU path needs contiguous tensors".into()))?;
        if !matches!(&*guard, Storage::Cpu(CpuStorage::F32(_))) {
            return Err(Error::Pipeline("fused CPU path needs f32 CPU tensors".into()));
        }
        Ok(Self { guard, start, len: end - start })
    }

    pub(crate) fn get(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.start + self.len],
            _ => unreachable!("checked in new"),
        }
    }
}

/// Each row of `out` (width `bias.len()`) set to `base_row + bias` (or `bias` alone).
fn fill_rows(out: &mut [f32], base: Option<&[f32]>, bias: &[f32]) {
    let n = bias.len();
    match base {
        Some(base) => out.par_chunks_mut(n).zip(base.par_chunks(n)).for_each(|(o, b)| {
            for ((o, b), c) in o.iter_mut().zip(b).zip(bias) {
                *o = b + c;
            }
        }),
        None => out.par_chunks_mut(n).for_each(|o| o.copy_from_slice(bias)),
    }
}

fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    let h = w.len();
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(h).zip(x.par_chunks(h)).for_each(|(o, r)| {
        let mean = r.iter().sum::<f32>() / h as f32;
        let var = r.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for i in 0..h {
            o[i] = (r[i] - mean) * inv * w[i] + b[i];
        }
    });
    out
}

/// The MLP's activation in place, in parallel: the same per-element f32 formulas as candle's
/// ops (`gelu_erf` through candle's own `erf_f32`, so the two paths agree).
fn activation_inplace(x: &mut [f32], act: Activation) {
    x.par_chunks_mut(4096).for_each(|c| match act {
        Activation::QuickGelu => c.iter_mut().for_each(|v| *v /= 1.0 + (-1.702 * *v).exp()),
        Activation::Gelu => c
            .iter_mut()
            .for_each(|v| *v = (candle_core::cpu::erf::erf_f32(*v * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * *v),
        // `0.5·x·(1 + tanh(u))` written as `x / (1 + exp(-2u))`: the same function, one `exp`
        // instead of libm's much slower `tanh` (SigLIP's MLPs run it on every token).
        Activation::GeluTanh => c.iter_mut().for_each(|v| {
            const TWO_SQRT_TWO_OVER_PI: f32 = 2.0 * 0.797_884_6;
            *v /= 1.0 + (-TWO_SQRT_TWO_OVER_PI * *v * (1.0 + 0.044715 * *v * *v)).exp()
        }),
    });
}

struct SendPtr(*mut f32);
// SAFETY: each attention task writes a disjoint (batch, head) block of the context buffer.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Multi-head attention reading Q, K, V in place from `qkv` (`[b·s, 3h]`, Q|K|V), writing the
/// context `[b·s, h]` with heads side by side, as PyTorch's `transpose(1, 2).reshape` lays it.
fn attention(qkv: &[f32], b: usize, s: usize, heads: usize, scale: f32, causal: bool) -> Vec<f32> {
    let h = qkv.len() / (b * s) / 3;
    let hd = h / heads;
    let mut ctx = vec![0f32; b * s * h];
    let out = SendPtr(ctx.as_mut_ptr());
    let out = &out;
    (0..b * heads).into_par_iter().for_each_init(
        || vec![0f32; s * s],
        |scores, idx| {
            let (bi, hi) = (idx / heads, idx % heads);
            let base = bi * s * 3 * h + hi * hd;
            let (q, k, v) = (qkv[base..].as_ptr(), qkv[base + h..].as_ptr(), qkv[base + 2 * h..].as_ptr());
            let row = (3 * h) as isize;
            // SAFETY: Q/K/V rows of this (batch, head) lie inside `qkv`; `scores` is s×s; the
            // context block written is disjoint from every other task's.
            unsafe {
                crate::linalg::gemm_f32(
                    s,
                    s,
                    hd,
                    scores.as_mut_ptr(),
                    1,
                    s as isize,
                    false,
                    q,
                    1,
                    row,
                    k,
                    row,
                    1,
                    0.0,
                    scale,
                    Parallelism::None,
                );
            }
            for i in 0..s {
                let r = &mut scores[i * s..(i + 1) * s];
                let live = if causal { i + 1 } else { s };
                let max = r[..live].iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for x in &mut r[..live] {
                    *x = (*x - max).exp();
                    sum += *x;
                }
                let inv = 1.0 / sum;
                for x in &mut r[..live] {
                    *x *= inv;
                }
                r[live..].fill(0.0);
            }
            unsafe {
                crate::linalg::gemm_f32(
                    s,
                    hd,
                    s,
                    out.0.add(bi * s * h + hi * hd),
                    1,
                    h as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    s as isize,
                    v,
                    1,
                    row,
                    0.0,
                    1.0,
                    Parallelism::None,
                );
            }
        },
    );
    ctx
}

/// Attention for one query row per batch item (`rows[bi]`, its position in the sequence),
/// returning the context `[b, h]`. Used by the last layer, whose other rows nobody reads.
fn attention_rows(qkv: &[f32], b: usize, s: usize, heads: usize, scale: f32, causal: bool, rows: &[usize]) -> Vec<f32> {
    let h = qkv.len() / (b * s) / 3;
    let hd = h / heads;
    let mut ctx = vec![0f32; b * h];
    ctx.par_chunks_mut(hd).enumerate().for_each_init(
        || vec![0f32; s],
        |p, (idx, out)| {
            let (bi, hi) = (idx / heads, idx % heads);
            let t = rows[bi];
            let live = if causal { t + 1 } else { s };
            let tok = |j: usize, part: usize| {
                let at = (bi * s + j) * 3 * h + part * h + hi * hd;
                &qkv[at..at + hd]
            };
            let q = tok(t, 0);
            for (j, pj) in p.iter_mut().enumerate().take(live) {
                *pj = scale * q.iter().zip(tok(j, 1)).map(|(a, b)| a * b).sum::<f32>();
            }
            let max = p[..live].iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for pj in &mut p[..live] {
                *pj = (*pj - max).exp();
                sum += *pj;
            }
            out.fill(0.0);
            for (j, pj) in p.iter().enumerate().take(live) {
                let w = pj / sum;
                for (o, v) in out.iter_mut().zip(tok(j, 2)) {
                    *o += w * v;
                }
            }
        },
    );
    ctx
}

/// Weights of one encoder layer as borrowed slices.
pub(crate) struct LayerWeights<'a> {
    pub ln1: (&'a [f32], &'a [f32]),
    pub ln2: (&'a [f32], &'a [f32]),
    pub qkv: (&'a [f32], &'a [f32]),
    pub out: (&'a [f32], &'a [f32]),
    pub fc1: (&'a [f32], &'a [f32]),
    pub fc2: (&'a [f32], &'a [f32]),
    pub eps: f32,
    pub heads: usize,
    pub scale: f32,
    pub act: Activation,
}

/// One pre-norm encoder layer (CLIP's, DINOv2's once its layer scale is folded) on `x`
/// (`[b, s, h]`). With `pick` (one
/// position per batch item) only those rows are computed past attention — what the last layer
/// needs, since CLIP pools one token — and the result is `[b, 1, h]`.
pub(crate) fn encoder_layer(
    x: &[f32],
    b: usize,
    s: usize,
    w: &LayerWeights,
    causal: bool,
    pick: Option<&[usize]>,
) -> Result<Tensor> {
    let h = w.ln1.0.len();
    let inter = w.fc1.1.len();
    let xn = layer_norm(x, w.ln1.0, w.ln1.1, w.eps);
    let mut qkv = vec![0f32; b * s * 3 * h];
    fill_rows(&mut qkv, None, w.qkv.1);
    matmul_wt(&mut qkv, &xn, w.qkv.0, b * s, 3 * h, h, true, threads());
    let (ctx, residual, rows, seq) = match pick {
        None => (attention(&qkv, b, s, w.heads, w.scale, causal), x.to_vec(), b * s, s),
        Some(pick) => {
            let picked: Vec<f32> = pick
                .iter()
                .enumerate()
                .flat_map(|(bi, &t)| &x[(bi * s + t) * h..(bi * s + t + 1) * h])
                .copied()
                .collect();
            (attention_rows(&qkv, b, s, w.heads, w.scale, causal, pick), picked, b, 1)
        }
    };
    drop(qkv);
    let mut x2 = vec![0f32; rows * h];
    fill_rows(&mut x2, Some(&residual), w.out.1);
    matmul_wt(&mut x2, &ctx, w.out.0, rows, h, h, true, threads());
    let xn2 = layer_norm(&x2, w.ln2.0, w.ln2.1, w.eps);
    let mut mid = vec![0f32; rows * inter];
    fill_rows(&mut mid, None, w.fc1.1);
    matmul_wt(&mut mid, &xn2, w.fc1.0, rows, inter, h, true, threads());
    activation_inplace(&mut mid, w.act);
    let mut out = vec![0f32; rows * h];
    fill_rows(&mut out, Some(&x2), w.fc2.1);
    matmul_wt(&mut out, &mid, w.fc2.0, rows, h, inter, true, threads());
    Ok(Tensor::from_vec(out, (b, seq, h), &Device::Cpu)?)
}
