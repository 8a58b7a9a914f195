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
use crate::model::bf16::{self, Bf16Layer, Bf16Linear};
use crate::model::int8::{self, Int8Layer, Int8Linear};
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

/// `e^x` in plain f32 arithmetic (Cephes' `expf`: `2^n·p(r)` with `r = x - n·ln 2`, a degree-6
/// polynomial; within 2 ulp of libm over the range used), so that, unlike libm's scalar call,
/// the loops around it vectorise. Clamped to `[-87.3, 88]`; NaN stays NaN (so a NaN input to
/// the activation ends as NaN, as with libm). No fused multiply-adds are formed (Rust never
/// contracts), so every instruction set gives the same bits.
#[inline(always)]
fn exp_poly(x: f32) -> f32 {
    let x = x.clamp(-87.336_54, 88.0);
    // Adding 1.5·2^23 rounds x·log2(e) to an integer (|x·log2 e| < 128).
    const ROUND: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (x - n * 0.693_359_4) - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 0.5; // Cephes' 5.0000001e-1, which is 0.5 in f32
    (p * r * r + r + 1.0) * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// The activation in place with [`exp_poly`] (the int8 and bf16 paths, whose outputs are not f32's
/// anyway): QuickGELU and tanh-GELU vectorised; exact GELU as in [`activation_inplace`].
fn activation_inplace_poly(x: &mut [f32], act: Activation) {
    #[inline(always)]
    fn run(c: &mut [f32], act: Activation) {
        match act {
            Activation::QuickGelu => c.iter_mut().for_each(|v| *v /= 1.0 + exp_poly(-1.702 * *v)),
            Activation::GeluTanh => c.iter_mut().for_each(|v| {
                const TWO_SQRT_TWO_OVER_PI: f32 = 2.0 * 0.797_884_6;
                *v /= 1.0 + exp_poly(-TWO_SQRT_TWO_OVER_PI * *v * (1.0 + 0.044715 * *v * *v))
            }),
            Activation::Gelu => unreachable!("handled by activation_inplace"),
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run_avx512(c: &mut [f32], act: Activation) {
        run(c, act)
    }
    if act == Activation::Gelu {
        return activation_inplace(x, act);
    }
    #[cfg(target_arch = "x86_64")]
    let wide = std::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let wide = false;
    x.par_chunks_mut(4096).for_each(|c| {
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: AVX-512F was detected.
            return unsafe { run_avx512(c, act) };
        }
        let _ = wide;
        run(c, act)
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
    /// The output projection and the MLP in int8 (`--quantize int8`), used instead of f32.
    pub int8: Option<&'a Int8Layer>,
    /// Every linear layer in bf16 (`--quantize bf16`), used instead of f32.
    pub bf16: Option<&'a Bf16Layer>,
}

/// A linear layer's weight in the precision it computes in.
#[derive(Clone, Copy)]
enum Weight<'a> {
    F32(&'a [f32]),
    Int8(&'a Int8Linear),
    Bf16(&'a Bf16Linear),
}

impl<'a> Weight<'a> {
    /// The layer's weight: `f32`, or its int8 or bf16 form where `w` has one.
    fn pick(
        f32_weight: &'a [f32],
        w: &LayerWeights<'a>,
        int8: impl Fn(&'a Int8Layer) -> &'a Int8Linear,
        bf16: impl Fn(&'a Bf16Layer) -> &'a Bf16Linear,
    ) -> Self {
        match (w.int8, w.bf16) {
            (Some(q), _) => Weight::Int8(int8(q)),
            (None, Some(b)) => Weight::Bf16(bf16(b)),
            (None, None) => Weight::F32(f32_weight),
        }
    }
}

/// `dst += x · Wᵀ` in f32 into the first `n` columns of rows `ldd` apart.
fn matmul_wt_into(dst: &mut [f32], ldd: usize, x: &[f32], w: &[f32], m: usize, n: usize, k: usize) {
    assert!(ldd >= n && x.len() >= m * k && w.len() >= n * k, "gemm operands too small");
    assert!(m == 0 || dst.len() >= (m - 1) * ldd + n, "gemm operands too small");
    // SAFETY: bounds checked above; row-major dst (stride ldd) and x, Wᵀ read from W.
    unsafe {
        crate::linalg::gemm_f32(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            ldd as isize,
            true,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            threads(),
        )
    }
}

/// `dst += x · Wᵀ` for one of the layer's linear layers: `rows` rows, through int8 or bf16
/// where the layer was converted.
fn linear_add(dst: &mut [f32], x: &[f32], weight: Weight, rows: usize, n: usize, k: usize) {
    match weight {
        Weight::Int8(q) => int8::matmul_add(dst, n, x, q, rows),
        Weight::Bf16(b) => bf16::matmul_add(dst, n, x, b, rows),
        Weight::F32(w) => matmul_wt(dst, x, w, rows, n, k, true, threads()),
    }
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
    match (w.int8, w.bf16) {
        // Q and K in f32 (see `Int8Layer`), V in int8, into the same `[b·s, 3h]` rows.
        (Some(q), _) => {
            matmul_wt_into(&mut qkv, 3 * h, &xn, &w.qkv.0[..2 * h * h], b * s, 2 * h, h);
            int8::matmul_add(&mut qkv[2 * h..], 3 * h, &xn, &q.v, b * s);
        }
        (None, Some(bf)) => bf16::matmul_add(&mut qkv, 3 * h, &xn, &bf.qkv, b * s),
        (None, None) => matmul_wt(&mut qkv, &xn, w.qkv.0, b * s, 3 * h, h, true, threads()),
    }
    let picked: Vec<f32>;
    let (ctx, residual, rows, seq) = match pick {
        None => (attention(&qkv, b, s, w.heads, w.scale, causal), x, b * s, s),
        Some(pick) => {
            picked = pick
                .iter()
                .enumerate()
                .flat_map(|(bi, &t)| &x[(bi * s + t) * h..(bi * s + t + 1) * h])
                .copied()
                .collect();
            (attention_rows(&qkv, b, s, w.heads, w.scale, causal, pick), &picked[..], b, 1)
        }
    };
    drop(qkv);
    let mut x2 = vec![0f32; rows * h];
    fill_rows(&mut x2, Some(residual), w.out.1);
    linear_add(&mut x2, &ctx, Weight::pick(w.out.0, w, |q| &q.out, |b| &b.out), rows, h, h);
    let xn2 = layer_norm(&x2, w.ln2.0, w.ln2.1, w.eps);
    let mut mid = vec![0f32; rows * inter];
    fill_rows(&mut mid, None, w.fc1.1);
    linear_add(&mut mid, &xn2, Weight::pick(w.fc1.0, w, |q| &q.fc1, |b| &b.fc1), rows, inter, h);
    if w.int8.is_some() || w.bf16.is_some() {
        activation_inplace_poly(&mut mid, w.act);
    } else {
        activation_inplace(&mut mid, w.act);
    }
    let mut out = vec![0f32; rows * h];
    fill_rows(&mut out, Some(&x2), w.fc2.1);
    linear_add(&mut out, &mid, Weight::pick(w.fc2.0, w, |q| &q.fc2, |b| &b.fc2), rows, h, inter);
    Ok(Tensor::from_vec(out, (b, seq, h), &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_poly_is_within_two_ulp_of_libm_and_the_same_on_every_path() {
        let xs: Vec<f32> = (0..200_001).map(|i| -87.0 + 175.0 * i as f32 / 200_000.0).collect();
        for &x in &xs {
            let (a, b) = (exp_poly(x), x.exp());
            let ulp = (a.to_bits() as i64 - b.to_bits() as i64).abs();
            assert!(ulp <= 2, "exp({x}): {a} vs libm {b}, {ulp} ulp");
        }
        // The vectorised activation equals the scalar formula bit for bit.
        for act in [Activation::QuickGelu, Activation::GeluTanh] {
            let mut v: Vec<f32> = xs.iter().map(|x| x / 8.0).collect();
            let scalar: Vec<u32> = v
                .iter()
                .map(|&x| match act {
                    Activation::QuickGelu => x / (1.0 + exp_poly(-1.702 * x)),
                    _ => x / (1.0 + exp_poly(-2.0 * 0.797_884_6 * x * (1.0 + 0.044715 * x * x))),
                })
                .map(f32::to_bits)
                .collect();
            activation_inplace_poly(&mut v, act);
            assert_eq!(v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), scalar, "{act:?}");
        }
        assert_eq!(exp_poly(f32::NEG_INFINITY), exp_poly(-87.336_54));
        assert!(exp_poly(1000.0).is_finite());
        assert!(exp_poly(f32::NAN).is_nan());
        let mut v = vec![f32::NAN; 3];
        activation_inplace_poly(&mut v, Activation::QuickGelu);
        assert!(v.iter().all(|x| x.is_nan()));
    }
}
