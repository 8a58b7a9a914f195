//! A fused f32 encoder layer for the CPU. candle's generic ops run each step as its own pass
//! over memory (bias add, three passes for QuickGELU, Q/K/V permute copies, mask add, softmax,
//! transpose copy, residual add) and most of them on one core. Here the GEMMs (the `gemm` crate
//! that candle itself uses) write into buffers a forward pass reuses ([`Scratch`]), pre-filled with
//! the residual and bias where there is a residual; the Q/K/V bias is added by each attention task
//! to its own block and fc1's by the activation's pass. The attention runs per (batch, head) on the
//! rayon pool reading Q/K/V in place from the fused projection, and layer norm and the activation
//! are single parallel passes whose loops are compiled for the chosen kernel's instruction set
//! (`on_kernel!`), with a polynomial `exp` ([`exp_poly`]) so that they vectorise. The maths is the
//! same up to rounding; `tests/families.rs` and the reference fixtures check it against candle's
//! generic path and the reference libraries.

use candle_core::{CpuStorage, Device, Storage, StorageRef, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use gemm::Parallelism;

use crate::linalg::{kernel, matmul_wt, matmul_wt_on, threads, PackedWeight, SendPtr};
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

/// Buffers one forward pass reuses from layer to layer. A fresh `vec![0; n]` per layer costs a
/// zeroing pass (and, where the allocator maps new pages, a fault per 4 KiB) on top of the write
/// that fills it: the bias fills and layer norms took ~9% of the image tower's time on 2 cores.
#[derive(Default)]
pub(crate) struct Scratch {
    xn: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    x2: Vec<f32>,
    mid: Vec<f32>,
}

/// The first `n` elements of `buf`, grown (once) where it is shorter. Callers overwrite them.
fn sized(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
}

/// `fn name(args) body`, with `body` compiled for the chosen CPU kernel's instruction set
/// ([`crate::linalg::kernel`]) so that its plain loops ([`exp_poly`]'s, the bias adds) use 16 or
/// 8 lanes. The arithmetic is the same on every path (Rust forms no fused multiply-adds), and so
/// are the bits.
macro_rules! on_kernel {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                match crate::linalg::kernel() {
                    // SAFETY: a kernel is only chosen where its instructions were detected.
                    crate::linalg::Kernel::Avx512 => return unsafe { avx512($($arg),*) },
                    crate::linalg::Kernel::Avx2 => return unsafe { avx2($($arg),*) },
                    crate::linalg::Kernel::Other => {}
                }
            }
            body($($arg),*)
        }
    };
}

/// `Σ f(v)` over `v` in 16 interleaved partial sums (then those folded by halves), so the loop
/// vectorises; a plain sequential sum is one dependent add per value.
#[inline(always)]
fn lane_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = v.chunks_exact(16);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x);
        }
    }
    for (a, &x) in acc.iter_mut().zip(chunks.remainder()) {
        *a += f(x);
    }
    fold_lanes(acc, |a, b| a + b)
}

/// `acc` folded by halves (lane `i` with lane `i + 8`, then `i + 4`, …): 4 dependent steps of
/// 8, 4, 2 and 1 lanes rather than 15 in a row.
#[inline(always)]
fn fold_lanes(mut acc: [f32; 16], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut half = 8;
    while half > 0 {
        for i in 0..half {
            acc[i] = f(acc[i], acc[i + half]);
        }
        half /= 2;
    }
    acc[0]
}

/// The largest value of `v` (NaN where one is NaN, −∞ where empty), in 16 lanes as
/// [`lane_sum`].
#[inline(always)]
fn lane_max(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let mut chunks = v.chunks_exact(16);
    let max = |a: f32, x: f32| if a >= x || a.is_nan() { a } else { x };
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = max(*a, x);
        }
    }
    for (a, &x) in acc.iter_mut().zip(chunks.remainder()) {
        *a = max(*a, x);
    }
    fold_lanes(acc, max)
}

on_kernel! {
    /// One row of [`layer_norm`].
    fn layer_norm_row(r: &[f32], w: &[f32], b: &[f32], eps: f32, o: &mut [f32]) {
        let h = w.len();
        let mean = lane_sum(r, |v| v) / h as f32;
        let var = lane_sum(r, |v| (v - mean) * (v - mean)) / h as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (((o, r), w), b) in o.iter_mut().zip(r).zip(w).zip(b) {
            *o = (r - mean) * inv * w + b;
        }
    }
}

fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let h = w.len();
    out.par_chunks_mut(h).zip(x.par_chunks(h)).for_each(|(o, r)| layer_norm_row(r, w, b, eps, o));
}

/// Exact GELU in place, in parallel: candle's own formula (`gelu_erf` through its `erf_f32`),
/// so the two paths agree.
fn gelu_erf_inplace(x: &mut [f32]) {
    x.par_chunks_mut(4096).for_each(|c| {
        c.iter_mut()
            .for_each(|v| *v = (candle_core::cpu::erf::erf_f32(*v * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * *v)
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
    // Adding 1.5·2^23 rounds x·log2(e) to an integer (|x·log2 e| < 128), which t's low mantissa
    // bits then hold exactly: 2^n is built from them with integer lanes (`n as i32`, a
    // saturating cast, would leave the loops scalar).
    const ROUND: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (x - n * 0.693_359_4) - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 0.5; // Cephes' 5.0000001e-1, which is 0.5 in f32
    let two_n = f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23);
    (p * r * r + r + 1.0) * two_n
}

/// `x = act(x + bias)` in place, row by row (rows `bias.len()` wide; no add without a bias), in
/// parallel. QuickGELU and tanh-GELU run [`exp_poly`] so that the loops vectorise (libm's `expf`
/// is a scalar call: the activation took 6% of the image tower's time); exact GELU keeps
/// candle's scalar `erf_f32` ([`gelu_erf_inplace`]). tanh-GELU's `0.5·x·(1 + tanh(u))` is
/// written as `x / (1 + exp(-2u))`: the same function with one `exp`.
fn bias_activation(x: &mut [f32], bias: Option<&[f32]>, act: Activation) {
    if act == Activation::Gelu {
        if let Some(bias) = bias {
            x.par_chunks_mut(bias.len()).for_each(|r| r.iter_mut().zip(bias).for_each(|(v, b)| *v += b));
        }
        return gelu_erf_inplace(x);
    }
    let width = bias.map_or(4096, <[f32]>::len);
    x.par_chunks_mut(width).for_each(|c| bias_activation_rows(c, bias, act));
}

#[inline(always)]
fn quick_gelu(v: f32) -> f32 {
    v / (1.0 + exp_poly(-1.702 * v))
}

#[inline(always)]
fn gelu_tanh(v: f32) -> f32 {
    const TWO_SQRT_TWO_OVER_PI: f32 = 2.0 * 0.797_884_6;
    v / (1.0 + exp_poly(-TWO_SQRT_TWO_OVER_PI * v * (1.0 + 0.044715 * v * v)))
}

on_kernel! {
    /// [`bias_activation`] on one chunk (a row where there is a bias).
    fn bias_activation_rows(c: &mut [f32], bias: Option<&[f32]>, act: Activation) {
        match (act, bias) {
            (Activation::QuickGelu, None) => c.iter_mut().for_each(|v| *v = quick_gelu(*v)),
            (Activation::QuickGelu, Some(bias)) => c.iter_mut().zip(bias).for_each(|(v, b)| *v = quick_gelu(*v + b)),
            (_, None) => c.iter_mut().for_each(|v| *v = gelu_tanh(*v)),
            (_, Some(bias)) => c.iter_mut().zip(bias).for_each(|(v, b)| *v = gelu_tanh(*v + b)),
        }
    }
}

on_kernel! {
    /// `x += bias`.
    fn add_into(x: &mut [f32], bias: &[f32]) {
        x.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
    }
}

on_kernel! {
    /// Softmax of `r` in place, [`exp_poly`] vectorised (libm's scalar `expf` was most of the
    /// attention's own time).
    fn softmax(r: &mut [f32]) {
        let max = lane_max(r);
        r.iter_mut().for_each(|x| *x = exp_poly(*x - max));
        let inv = 1.0 / lane_sum(r, |x| x);
        r.iter_mut().for_each(|x| *x *= inv);
    }
}

/// The shape of one attention call: `b` sequences of `s` rows, `heads` heads, scores scaled by
/// `scale`, causal or not.
#[derive(Clone, Copy)]
struct Attention {
    b: usize,
    s: usize,
    heads: usize,
    scale: f32,
    causal: bool,
}

impl Attention {
    /// The hidden width and the head width of `qkv` (`[b·s, 3h]`), checking `bias` (`[3h]`).
    fn widths(&self, qkv: &[f32], bias: Option<&[f32]>) -> (usize, usize) {
        let h = qkv.len() / (self.b * self.s) / 3;
        assert!(bias.is_none_or(|bias| bias.len() == 3 * h), "attention bias");
        (h, h / self.heads)
    }
}

/// Multi-head attention reading Q, K, V in place from `qkv` (`[b·s, 3h]`, Q|K|V), writing the
/// context `[b·s, h]` into `ctx` with heads side by side, as PyTorch's `transpose(1, 2).reshape`
/// lays it. With `bias` (`[3h]`), `qkv` holds the projection without it, and each task adds it
/// to its own (batch, head) block first, while that block is in cache: one pass over the
/// `[b·s, 3h]` buffer fewer than filling it with the bias before the product.
fn attention(qkv: &mut [f32], bias: Option<&[f32]>, a: Attention, ctx: &mut [f32]) {
    let Attention { b, s, heads, scale, causal } = a;
    let (h, hd) = a.widths(qkv, bias);
    assert_eq!(ctx.len(), b * s * h, "attention context buffer");
    let out = SendPtr(ctx.as_mut_ptr());
    let out = &out;
    let qkv = SendPtr(qkv.as_mut_ptr());
    let qkv = &qkv;
    (0..b * heads).into_par_iter().for_each_init(
        || vec![0f32; s * s],
        |scores, idx| {
            let (bi, hi) = (idx / heads, idx % heads);
            let base = bi * s * 3 * h + hi * hd;
            if let Some(bias) = bias {
                for j in 0..s {
                    for part in 0..3 {
                        let at = part * h + hi * hd;
                        // SAFETY: row j's Q, K or V of this (batch, head), `hd` values inside
                        // `qkv` (b·s rows of 3h); no other task reads or writes them.
                        let x = unsafe { std::slice::from_raw_parts_mut(qkv.0.add(base + j * 3 * h + part * h), hd) };
                        add_into(x, &bias[at..at + hd]);
                    }
                }
            }
            // SAFETY: as above, this task's blocks only.
            let (q, k, v) = unsafe {
                (qkv.0.add(base).cast_const(), qkv.0.add(base + h).cast_const(), qkv.0.add(base + 2 * h).cast_const())
            };
            let row = (3 * h) as isize;
            // SAFETY: Q/K/V rows of this (batch, head) lie inside `qkv`; `scores` is s×s; the
            // context block written is disjoint from every other task's.
            unsafe {
                crate::linalg::gemm_on(
                    kernel(),
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
                softmax(&mut r[..live]);
                r[live..].fill(0.0);
            }
            unsafe {
                crate::linalg::gemm_on(
                    kernel(),
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
}

/// Attention for one query row per batch item (`rows[bi]`, its position in the sequence),
/// writing the context `[b, h]` into `ctx`. Used by the last layer, whose other rows nobody reads.
/// `bias` as in [`attention`], added as the rows are read.
fn attention_rows(qkv: &[f32], bias: Option<&[f32]>, a: Attention, rows: &[usize], ctx: &mut [f32]) {
    let Attention { b, s, heads, scale, causal } = a;
    let (h, hd) = a.widths(qkv, bias);
    assert_eq!(ctx.len(), b * h, "attention context buffer");
    let zeros = vec![0f32; 3 * h];
    let bias = bias.unwrap_or(&zeros);
    ctx.par_chunks_mut(hd).enumerate().for_each_init(
        || vec![0f32; s],
        |p, (idx, out)| {
            let (bi, hi) = (idx / heads, idx % heads);
            let t = rows[bi];
            let live = if causal { t + 1 } else { s };
            // Row j's Q, K or V of this head, and the bias to add to it.
            let tok = |j: usize, part: usize| {
                let at = (bi * s + j) * 3 * h + part * h + hi * hd;
                (&qkv[at..at + hd], &bias[part * h + hi * hd..][..hd])
            };
            let (q, bq) = tok(t, 0);
            let q: Vec<f32> = q.iter().zip(bq).map(|(q, b)| q + b).collect();
            for (j, pj) in p.iter_mut().enumerate().take(live) {
                let (k, bk) = tok(j, 1);
                *pj = scale * q.iter().zip(k.iter().zip(bk)).map(|(a, (k, b))| a * (k + b)).sum::<f32>();
            }
            softmax(&mut p[..live]);
            out.fill(0.0);
            for (j, &w) in p.iter().enumerate().take(live) {
                let (v, bv) = tok(j, 2);
                for (o, (v, b)) in out.iter_mut().zip(v.iter().zip(bv)) {
                    *o += w * (v + b);
                }
            }
        },
    );
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
    /// The f32 linear layers' weights packed for the CPU kernel, used instead of the slices
    /// above (which are then empty).
    pub packed: Option<&'a PackedLayer>,
}

/// A layer's four f32 linear weights packed once for the CPU kernel (`linalg::PackedWeight`).
#[derive(Debug, Clone)]
pub(crate) struct PackedLayer {
    pub qkv: PackedWeight,
    pub out: PackedWeight,
    pub fc1: PackedWeight,
    pub fc2: PackedWeight,
}

/// A linear layer's weight in the precision it computes in.
#[derive(Clone, Copy)]
enum Weight<'a> {
    F32(&'a [f32]),
    Packed(&'a PackedWeight),
    Int8(&'a Int8Linear),
    Bf16(&'a Bf16Linear),
}

impl<'a> Weight<'a> {
    /// The layer's weight: `f32` (packed where `w` is), or its int8 or bf16 form where `w`
    /// has one.
    fn pick(
        f32_weight: &'a [f32],
        w: &LayerWeights<'a>,
        packed: impl Fn(&'a PackedLayer) -> &'a PackedWeight,
        int8: impl Fn(&'a Int8Layer) -> &'a Int8Linear,
        bf16: impl Fn(&'a Bf16Layer) -> &'a Bf16Linear,
    ) -> Self {
        match (w.int8, w.bf16, w.packed) {
            (Some(q), _, _) => Weight::Int8(int8(q)),
            (None, Some(b), _) => Weight::Bf16(bf16(b)),
            (None, None, Some(p)) => Weight::Packed(packed(p)),
            (None, None, None) => Weight::F32(f32_weight),
        }
    }
}

/// `dst += x · Wᵀ` for one of the layer's linear layers: `rows` rows, through int8 or bf16
/// where the layer was converted.
fn linear_add(dst: &mut [f32], x: &[f32], weight: Weight, rows: usize, n: usize, k: usize) {
    match weight {
        Weight::Int8(q) => int8::matmul_add(dst, n, x, q, rows),
        Weight::Bf16(b) => bf16::matmul_add(dst, n, x, b, rows),
        Weight::F32(w) => matmul_wt(dst, x, w, rows, n, k, true, threads()),
        Weight::Packed(p) => p.matmul(dst, n, x, rows, true, threads()),
    }
}

/// One pre-norm encoder layer (CLIP's, DINOv2's once its layer scale is folded) on `x`
/// (`[b, s, h]`). With `pick` (one
/// position per batch item) only those rows are computed past attention — what the last layer
/// needs, since CLIP pools one token — and the result is `[b, 1, h]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encoder_layer(
    x: &[f32],
    b: usize,
    s: usize,
    w: &LayerWeights,
    causal: bool,
    pick: Option<&[usize]>,
    scratch: &mut Scratch,
) -> Result<Tensor> {
    let h = w.ln1.0.len();
    let inter = w.fc1.1.len();
    let Scratch { xn, qkv, ctx, x2, mid } = scratch;
    let xn = sized(xn, b * s * h);
    layer_norm(x, w.ln1.0, w.ln1.1, w.eps, xn);
    let qkv = sized(qkv, b * s * 3 * h);
    // The bias the attention still has to add: f32's product overwrites `qkv` (no fill pass).
    let qkv_bias = match (w.int8, w.bf16) {
        // Q and K in f32 (see `Int8Layer`), V in int8, into the same `[b·s, 3h]` rows.
        (Some(q), _) => {
            fill_rows(qkv, None, w.qkv.1);
            matmul_wt_on(kernel(), qkv, 3 * h, xn, &w.qkv.0[..2 * h * h], b * s, 2 * h, h, true, threads());
            int8::matmul_add(&mut qkv[2 * h..], 3 * h, xn, &q.v, b * s);
            None
        }
        (None, Some(bf)) => {
            fill_rows(qkv, None, w.qkv.1);
            bf16::matmul_add(qkv, 3 * h, xn, &bf.qkv, b * s);
            None
        }
        (None, None) => {
            match w.packed {
                Some(p) => p.qkv.matmul(qkv, 3 * h, xn, b * s, false, threads()),
                None => matmul_wt(qkv, xn, w.qkv.0, b * s, 3 * h, h, false, threads()),
            }
            Some(w.qkv.1)
        }
    };
    let shape = Attention { b, s, heads: w.heads, scale: w.scale, causal };
    let picked: Vec<f32>;
    let (ctx, residual, rows, seq) = match pick {
        None => {
            let ctx = sized(ctx, b * s * h);
            attention(qkv, qkv_bias, shape, ctx);
            (ctx, x, b * s, s)
        }
        Some(pick) => {
            picked = pick
                .iter()
                .enumerate()
                .flat_map(|(bi, &t)| &x[(bi * s + t) * h..(bi * s + t + 1) * h])
                .copied()
                .collect();
            let ctx = sized(ctx, b * h);
            attention_rows(qkv, qkv_bias, shape, pick, ctx);
            (ctx, &picked[..], b, 1)
        }
    };
    let x2 = sized(x2, rows * h);
    fill_rows(x2, Some(residual), w.out.1);
    linear_add(x2, ctx, Weight::pick(w.out.0, w, |p| &p.out, |q| &q.out, |b| &b.out), rows, h, h);
    let xn2 = &mut xn[..rows * h];
    layer_norm(x2, w.ln2.0, w.ln2.1, w.eps, xn2);
    let mid = sized(mid, rows * inter);
    match Weight::pick(w.fc1.0, w, |p| &p.fc1, |q| &q.fc1, |b| &b.fc1) {
        // f32: the product overwrites, and the bias is added in the activation's pass.
        Weight::F32(fc1) => {
            matmul_wt(mid, xn2, fc1, rows, inter, h, false, threads());
            bias_activation(mid, Some(w.fc1.1), w.act);
        }
        Weight::Packed(fc1) => {
            fc1.matmul(mid, inter, xn2, rows, false, threads());
            bias_activation(mid, Some(w.fc1.1), w.act);
        }
        fc1 => {
            fill_rows(mid, None, w.fc1.1);
            linear_add(mid, xn2, fc1, rows, inter, h);
            bias_activation(mid, None, w.act);
        }
    }
    let mut out = vec![0f32; rows * h];
    fill_rows(&mut out, Some(x2), w.fc2.1);
    linear_add(&mut out, mid, Weight::pick(w.fc2.0, w, |p| &p.fc2, |q| &q.fc2, |b| &b.fc2), rows, h, inter);
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
            bias_activation(&mut v, None, act);
            assert_eq!(v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), scalar, "{act:?}");
        }
        assert_eq!(exp_poly(f32::NEG_INFINITY), exp_poly(-87.336_54));
        assert!(exp_poly(1000.0).is_finite());
        assert!(exp_poly(f32::NAN).is_nan());
        let mut v = vec![f32::NAN; 3];
        bias_activation(&mut v, None, Activation::QuickGelu);
        assert!(v.iter().all(|x| x.is_nan()));
    }

    fn lcg(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 40) as f32 / (1u64 << 24) as f32 * 8.0 - 4.0
            })
            .collect()
    }

    #[test]
    fn vectorised_rows_match_scalar_and_f64_formulas() {
        // The bias is added in the activation's pass: the same bits as adding it first.
        let (rows, width) = (5, 37);
        let bias = lcg(1, width);
        let x = lcg(2, rows * width);
        for act in [Activation::QuickGelu, Activation::GeluTanh, Activation::Gelu] {
            let mut fused = x.clone();
            bias_activation(&mut fused, Some(&bias), act);
            let mut added: Vec<f32> = x.iter().enumerate().map(|(i, v)| v + bias[i % width]).collect();
            bias_activation(&mut added, None, act);
            assert_eq!(fused, added, "{act:?}");
        }
        // Softmax and layer norm against f64, over lengths that leave partial lanes (and none).
        for n in [1, 15, 16, 50, 77, 768] {
            let v = lcg(n as u64, n);
            let mut p = v.clone();
            softmax(&mut p);
            let max = v.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
            let sum: f64 = v.iter().map(|&x| (x as f64 - max).exp()).sum();
            for (got, x) in p.iter().zip(&v) {
                let want = (*x as f64 - max).exp() / sum;
                assert!((*got as f64 - want).abs() < 2e-6 * want.max(1e-3), "softmax({n}): {got} vs {want}");
            }
            let (w, b) = (lcg(n as u64 + 7, n), lcg(n as u64 + 9, n));
            let mut o = vec![0f32; n];
            layer_norm_row(&v, &w, &b, 1e-5, &mut o);
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
            let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            for i in 0..n {
                let want = (v[i] as f64 - mean) / (var + 1e-5).sqrt() * w[i] as f64 + b[i] as f64;
                assert!((o[i] as f64 - want).abs() < 1e-4, "layer norm({n})[{i}]: {} vs {want}", o[i]);
            }
        }
        // A NaN score makes its row NaN (as libm's path did), never a silent number.
        let mut p = vec![0.5, f32::NAN, 1.0];
        softmax(&mut p);
        assert!(p.iter().all(|x| x.is_nan()));
        assert_eq!(lane_max(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn attention_adds_the_qkv_bias_as_a_fill_would() {
        for causal in [false, true] {
            let (b, s, heads, hd) = (3, 7, 2, 16);
            let h = heads * hd;
            let bias = lcg(3, 3 * h);
            let raw = lcg(4, b * s * 3 * h);
            let filled: Vec<f32> = raw.iter().enumerate().map(|(i, v)| v + bias[i % (3 * h)]).collect();
            let (mut late, mut early) = (vec![f32::NAN; b * s * h], vec![f32::NAN; b * s * h]);
            let shape = Attention { b, s, heads, scale: 0.25, causal };
            attention(&mut raw.clone(), Some(&bias), shape, &mut late);
            attention(&mut filled.clone(), None, shape, &mut early);
            assert_eq!(late, early, "causal {causal}");
            // The last layer's one-row attention agrees with the full one at the picked rows.
            let pick = [s - 1, 0, 3];
            let mut rows = vec![f32::NAN; b * h];
            attention_rows(&raw, Some(&bias), shape, &pick, &mut rows);
            for (bi, &t) in pick.iter().enumerate() {
                let full = &early[(bi * s + t) * h..][..h];
                for (got, want) in rows[bi * h..][..h].iter().zip(full) {
                    assert!((got - want).abs() < 1e-5, "causal {causal}, item {bi}: {got} vs {want}");
                }
            }
        }
    }
}
