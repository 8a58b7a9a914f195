//! int8 linear layers for the CPU encoder (`--quantize int8`): dynamic quantisation as ONNX
//! Runtime and PyTorch's `quantize_dynamic` do it, for each layer's V projection, attention
//! output projection and MLP (five sixths of its linear FLOPs). Each weight row (one output
//! channel) is stored as int8 with its own scale, once, when the model is quantised; each
//! activation row is quantised to bytes with its own scale as it arrives, and the products are
//! summed in int32. The Q and K projections (see [`Int8Layer`]), layer norm, attention, the
//! activation, the patch embedding and the projections stay f32.
//!
//! Weights are symmetric (`w ≈ s_w·q`, `q ∈ [-127, 127]`); activations are asymmetric, as ONNX
//! Runtime's are (`x ≈ s_x·u + min x`, `u ∈ [0, 255]`), which matters after GELU, whose outputs
//! barely go below zero: symmetric bytes would leave half their levels unused there. A row then
//! gives `Σ x·w ≈ s_w·(s_x·Σ u·q + min x·Σ q)`, with `Σ q` per channel kept from loading.
//!
//! **Kernel.** On a CPU with AVX-512 VNNI one `vpdpbusd` multiplies 64 unsigned-by-signed byte
//! pairs and adds them in groups of four to 16 int32 sums: four times the products of an f32 FMA
//! of the same width. Weights are packed once into 16-channel blocks of 4-byte groups, the layout
//! `vpdpbusd` reads, which is also an AMX weight tile's: where the CPU has AMX (Xeon since
//! Sapphire Rapids) and Linux grants it, `tdpbusd` computes 16 × 16 sums 64 bytes deep per
//! instruction ([`super::amx`]). Without VNNI (or with `SIEVE_CPU_KERNEL=avx2`) an AVX2 kernel
//! widens the bytes to int16 and multiplies them in pairs (`vpmaddwd`, twice an f32 FMA's
//! products), and any other CPU gets a portable kernel. All four compute the same int32 sums
//! and share the float epilogue, so they give the same bytes, on any CPU.

use rayon::prelude::*;

use super::tasks::{par_tiles, OutRows, LANES, MR, NR};

/// Bytes of one packed group: 16 channels × 4 consecutive inputs.
const GROUP: usize = LANES * 4;

/// A linear layer's weight `[n, k]` (PyTorch's layout), quantised per output channel.
pub(crate) struct Int8Linear {
    n: usize,
    k: usize,
    /// `k` in groups of four (the last one padded with zeros), rounded up to a multiple of 16
    /// (an AMX tile's depth) with zero groups.
    kq: usize,
    /// `[blocks][kq][16][4]` int8; `n/16` blocks rounded up to an even count (AMX takes them in
    /// pairs).
    packed: Vec<i8>,
    /// Per output channel: `max|w|/127` and `Σ q`.
    scale: Vec<f32>,
    qsum: Vec<i32>,
}

impl std::fmt::Debug for Int8Linear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Int8Linear({}×{})", self.n, self.k)
    }
}

impl Int8Linear {
    /// Quantises `w` (`[n, k]`, row-major): each row to `round(w/s)` with `s = max|w|/127`.
    pub(crate) fn new(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight is not n×k");
        let kq = k.div_ceil(4).div_ceil(16) * 16;
        let blocks = n.div_ceil(LANES).div_ceil(2) * 2;
        let mut packed = vec![0i8; blocks * kq * GROUP];
        let mut scale = vec![0f32; blocks * LANES];
        let mut qsum = vec![0i32; blocks * LANES];
        packed
            .par_chunks_mut(kq * GROUP)
            .zip(scale.par_chunks_mut(LANES).zip(qsum.par_chunks_mut(LANES)))
            .enumerate()
            .for_each(|(blk, (dst, (scale, qsum)))| {
                for c in 0..LANES.min(n.saturating_sub(blk * LANES)) {
                    let row = &w[(blk * LANES + c) * k..][..k];
                    let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let inv = if amax > 0.0 && amax.is_finite() { 127.0 / amax } else { 0.0 };
                    scale[c] = amax / 127.0;
                    let mut sum = 0i32;
                    for (i, &v) in row.iter().enumerate() {
                        let q = (v * inv).round().clamp(-127.0, 127.0) as i8;
                        sum += q as i32;
                        dst[(i / 4) * GROUP + c * 4 + i % 4] = q;
                    }
                    qsum[c] = sum;
                }
            });
        Self { n, k, kq, packed, scale, qsum }
    }
}

/// The linear layers of one encoder layer that run in int8: all but the Q and K projections.
/// The attention logits amplify their error: with Q/K/V all quantised, the lowest cosine to f32
/// on the fixtures fell from 0.9996 to 0.987 (tiny SigLIP's text tower), and weight rounding
/// alone (activations left f32) already gave 0.993.
#[derive(Debug)]
pub(crate) struct Int8Layer {
    /// The V rows of the fused Q/K/V projection.
    pub v: Int8Linear,
    pub out: Int8Linear,
    pub fc1: Int8Linear,
    pub fc2: Int8Linear,
}

/// One activation row's quantisation: `x ≈ scale·u + zero`.
#[derive(Debug, Clone, Copy, Default)]
struct RowScale {
    scale: f32,
    zero: f32,
}

/// Each row of `x` (`[m, k]`) as bytes `u = round((x - min)/s)` with `s = (max - min)/255`,
/// padded to `4·kq` with zeros (the padded weights are zero); returns the bytes and the rows'
/// scales.
fn quantize_rows(x: &[f32], m: usize, k: usize, kq: usize, simd: bool) -> (Vec<u8>, Vec<RowScale>) {
    let width = 4 * kq;
    let mut q = vec![0u8; m * width];
    let mut scales = vec![RowScale::default(); m];
    q.par_chunks_mut(width).zip(scales.par_iter_mut()).zip(x.par_chunks(k)).for_each(|((q, s), row)| {
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: AVX-512F/BW were detected (simd is only set where VNNI runs).
            *s = unsafe { vnni::quantize_row(row, &mut q[..k]) };
            return;
        }
        let _ = simd;
        let (lo, hi) = row.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let inv = inverse_step(lo, hi);
        for (q, &v) in q.iter_mut().zip(row) {
            *q = to_byte(v, lo, inv);
        }
        *s = row_scale(lo, hi, row.iter().any(|v| v.is_nan()));
    });
    (q, scales)
}

/// A row's scale and zero from its least and greatest values (NaN ignored). A row holding a NaN
/// gets a NaN scale, so that the outputs it feeds are NaN as in f32 (and the record ends as
/// `non-finite-embedding`), not finite and wrong; an infinity gives an infinite scale, likewise.
#[inline(always)]
fn row_scale(lo: f32, hi: f32, has_nan: bool) -> RowScale {
    if has_nan || lo > hi {
        RowScale { scale: f32::NAN, zero: f32::NAN }
    } else {
        RowScale { scale: (hi - lo) / 255.0, zero: lo }
    }
}

/// `255 / (hi - lo)`, or 0 for a constant row (or one with an infinity).
#[inline(always)]
fn inverse_step(lo: f32, hi: f32) -> f32 {
    let range = hi - lo;
    if range > 0.0 && range.is_finite() {
        255.0 / range
    } else {
        0.0
    }
}

/// `v ∈ [lo, hi]` as `round((v - lo)·inv)`: `+ 0.5` then truncation rounds half up into
/// [0, 255] with no call to libm's `round`; NaN becomes 0. The AVX-512 path computes exactly
/// this (the same subtraction, multiply, add, clamp and truncation), so both give the same bytes.
#[inline(always)]
#[allow(clippy::manual_clamp)] // the AVX-512 path's max/min, in the same order
fn to_byte(v: f32, lo: f32, inv: f32) -> u8 {
    ((v - lo) * inv + 0.5).max(0.0).min(255.0) as u8
}

/// The int8 kernels. All four compute the same int32 sums, so they give the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kern {
    /// Plain Rust, for any CPU.
    Portable,
    /// AVX2: bytes widened to int16 and multiplied in pairs (`vpmaddwd`), exactly.
    Avx2,
    /// AVX-512 VNNI (`vpdpbusd`).
    Vnni,
    /// AMX (`tdpbusd`, 16 × 16 sums 64 bytes deep per instruction), activations quantised with
    /// AVX-512; integer sums, so the same as the others.
    Amx,
}

impl Kern {
    /// The fastest this CPU has, within the process's [`crate::linalg::kernel`] choice
    /// (`SIEVE_CPU_KERNEL=avx2` rules out VNNI).
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use crate::linalg::{kernel, Kernel};
            let chosen = kernel();
            if chosen == Kernel::Avx512 && Kern::Amx.available() {
                return Kern::Amx;
            }
            if chosen == Kernel::Avx512 && Kern::Vnni.available() {
                return Kern::Vnni;
            }
            if chosen != Kernel::Other && Kern::Avx2.available() {
                return Kern::Avx2;
            }
        }
        Kern::Portable
    }

    /// Whether this CPU can run the kernel.
    pub(crate) fn available(self) -> bool {
        match self {
            Kern::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kern::Avx2 => std::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Kern::Vnni => std::is_x86_feature_detected!("avx512vnni") && std::is_x86_feature_detected!("avx512bw"),
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            Kern::Amx => Kern::Vnni.available() && super::amx::available_int8(),
            #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
            Kern::Amx => false,
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// The process's int8 kernel, detected once.
pub(crate) fn kern() -> Kern {
    static KERN: std::sync::OnceLock<Kern> = std::sync::OnceLock::new();
    *KERN.get_or_init(Kern::detect)
}

/// `dst += x · Wᵀ` for `x` `[m, k]` and `dst` `[m, n]`, both row-major, through int8; `dst`'s
/// rows lie `ldd` apart (`≥ n`), so the product can fill some columns of a wider matrix.
pub(crate) fn matmul_add(dst: &mut [f32], ldd: usize, x: &[f32], w: &Int8Linear, m: usize) {
    matmul_add_on(kern(), dst, ldd, x, w, m)
}

/// [`matmul_add`] on the kernel named (the tests compare them); one this CPU lacks falls back
/// to the portable kernel.
pub(crate) fn matmul_add_on(kern: Kern, dst: &mut [f32], ldd: usize, x: &[f32], w: &Int8Linear, m: usize) {
    let (n, k, kq) = (w.n, w.k, w.kq);
    assert!(x.len() >= m * k, "int8 matmul operands too small");
    let out = OutRows::new(dst, ldd, m, n);
    let kern = if kern.available() { kern } else { Kern::Portable };
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if kern == Kern::Amx {
        return matmul_add_amx(&out, x, w, m);
    }
    let use_vnni = kern == Kern::Vnni;
    let (xq, xs) = quantize_rows(x, m, k, kq, use_vnni);
    let width = 4 * kq;
    // The AVX2 kernel reads each row's bytes widened to int16 (its multiply takes int16 pairs).
    let xw: Vec<i16> = if kern == Kern::Avx2 { xq.iter().map(|&b| b as i16).collect() } else { Vec::new() };
    par_tiles(m, n.div_ceil(LANES), |i, mr, b0, nb| {
        let panel = &w.packed[b0 * kq * GROUP..(b0 + nb) * kq * GROUP];
        let mut acc = [[0i32; NR * LANES]; MR];
        if kern == Kern::Avx2 {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 was detected (`available`); rows i..i + mr of `xw` and the panel's
            // nb blocks of kq groups are in bounds.
            unsafe {
                avx2::tile(xw[i * width..(i + mr) * width].as_ptr(), width, panel.as_ptr(), kq, mr, nb, &mut acc)
            };
        } else {
            tile(use_vnni, &xq[i * width..(i + mr) * width], width, panel, kq, mr, nb, &mut acc);
        }
        let (j0, cols) = (b0 * LANES, (nb * LANES).min(n - b0 * LANES));
        let (scale, qsum) = (&w.scale[j0..j0 + cols], &w.qsum[j0..j0 + cols]);
        for (r, acc) in acc.iter().enumerate().take(mr) {
            let RowScale { scale: sx, zero } = xs[i + r];
            // SAFETY: this tile's rows and blocks are its own (`par_tiles`).
            let dst = unsafe { out.row(i + r, j0, cols) };
            #[cfg(target_arch = "x86_64")]
            if use_vnni {
                // SAFETY: AVX-512F was detected with VNNI.
                unsafe { vnni::dequantize_add(dst, &acc[..cols], scale, qsum, sx, zero) };
                continue;
            }
            dequantize_add(dst, &acc[..cols], scale, qsum, sx, zero);
        }
    });
}

/// [`matmul_add_on`] on AMX: 32 rows (zero rows past `m`) by 32 channels of int32 sums at a
/// time, in four accumulator tiles, then the VNNI kernel's epilogue.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn matmul_add_amx(out: &OutRows, x: &[f32], w: &Int8Linear, m: usize) {
    let (n, k, kq) = (w.n, w.k, w.kq);
    let width = 4 * kq;
    let rows = m.div_ceil(32) * 32;
    let (mut xq, xs) = quantize_rows(x, m, k, kq, true);
    xq.resize(rows * width, 0);
    let body = |r0: usize, pair: usize| {
        let a = &xq[r0 * width..(r0 + 32) * width];
        let b = &w.packed[2 * pair * kq * GROUP..(2 * pair + 2) * kq * GROUP];
        let mut c = [0i32; 32 * 32];
        // SAFETY: tiles configured by `par_amx`; `a` holds 32 rows of kq groups and `b` two
        // blocks of kq × 64 bytes, kq a multiple of 16; `c` is 32 × 32 int32.
        unsafe { super::amx::pair_int8(a.as_ptr(), kq, b.as_ptr().cast(), c.as_mut_ptr().cast()) };
        let (j0, cols) = (pair * 2 * LANES, (2 * LANES).min(n - pair * 2 * LANES));
        let (scale, qsum) = (&w.scale[j0..j0 + cols], &w.qsum[j0..j0 + cols]);
        for (r, acc) in c.chunks_exact(2 * LANES).enumerate().take(m.saturating_sub(r0)) {
            let RowScale { scale: sx, zero } = xs[r0 + r];
            // SAFETY: this block's rows and channels are its own (`par_amx`).
            let dst = unsafe { out.row(r0 + r, j0, cols) };
            // SAFETY: AVX-512F is present with AMX (`Kern::available` checks VNNI).
            unsafe { vnni::dequantize_add(dst, &acc[..cols], scale, qsum, sx, zero) };
        }
    };
    // SAFETY: `Kern::Amx` is only chosen where AMX is present and granted.
    unsafe { super::tasks::par_amx(rows, n, body) };
}

/// `dst += s_w·(s_x·acc + zero·Σq)` per channel: the one float epilogue both kernels share.
#[inline(always)]
fn dequantize_add(dst: &mut [f32], acc: &[i32], scale: &[f32], qsum: &[i32], sx: f32, zero: f32) {
    for (((d, &v), &s), &q) in dst.iter_mut().zip(acc).zip(scale).zip(qsum) {
        *d += s * (sx * v as f32 + zero * q as f32);
    }
}

/// The int32 sums of `mr` rows of `a` (each `lda` bytes) against `nb` packed blocks of `panel`,
/// into `acc[row][block·16 + channel]`.
#[allow(clippy::too_many_arguments)]
fn tile(
    use_vnni: bool,
    a: &[u8],
    lda: usize,
    panel: &[i8],
    kq: usize,
    mr: usize,
    nb: usize,
    acc: &mut [[i32; NR * LANES]; MR],
) {
    debug_assert!(a.len() >= mr * lda && lda >= 4 * kq && panel.len() >= nb * kq * GROUP);
    #[cfg(target_arch = "x86_64")]
    if use_vnni {
        // SAFETY: VNNI and AVX-512BW were detected by the caller; the slices cover what the
        // kernel reads (asserted above).
        unsafe { vnni::tile(a.as_ptr(), lda, panel.as_ptr(), kq, mr, nb, acc) };
        return;
    }
    for (r, acc) in acc.iter_mut().enumerate().take(mr) {
        let row = &a[r * lda..r * lda + 4 * kq];
        for b in 0..nb {
            let block = &panel[b * kq * GROUP..(b + 1) * kq * GROUP];
            let mut sums = [0i32; LANES];
            for (g, quad) in block.chunks_exact(GROUP).zip(row.chunks_exact(4)) {
                for (c, s) in sums.iter_mut().enumerate() {
                    let wq = &g[c * 4..c * 4 + 4];
                    *s += (0..4).map(|q| quad[q] as i32 * wq[q] as i32).sum::<i32>();
                }
            }
            acc[b * LANES..(b + 1) * LANES].copy_from_slice(&sums);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{GROUP, LANES, MR, NR};
    use std::arch::x86_64::*;

    /// The int32 sums of `mr` rows of `a` (int16, `lda` apart) against `nb` packed blocks of `b`,
    /// into `acc[row][block·16 + channel]`: each block as two halves of eight channels.
    ///
    /// # Safety
    /// AVX2 present; `a` holds `mr` rows of `lda ≥ 4·kq` values, `b` `nb` blocks of `kq·64`
    /// bytes.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile(
        a: *const i16,
        lda: usize,
        b: *const i8,
        kq: usize,
        mr: usize,
        nb: usize,
        acc: &mut [[i32; NR * LANES]; MR],
    ) {
        for blk in 0..nb {
            for half in 0..2 {
                // SAFETY: as this function's; the half's bytes start 32 into each group.
                let b = unsafe { b.add(blk * kq * GROUP + half * 32) };
                let col = blk * LANES + half * 8;
                // SAFETY: as this function's.
                unsafe {
                    match mr {
                        1 => kernel::<1>(a, lda, b, kq, acc, col),
                        2 => kernel::<2>(a, lda, b, kq, acc, col),
                        3 => kernel::<3>(a, lda, b, kq, acc, col),
                        4 => kernel::<4>(a, lda, b, kq, acc, col),
                        5 => kernel::<5>(a, lda, b, kq, acc, col),
                        _ => kernel::<6>(a, lda, b, kq, acc, col),
                    }
                }
            }
        }
    }

    /// `M` rows × eight channels. Per group of four inputs, each channel's four weights are
    /// widened to int16 and `vpmaddwd` multiplies them by the row's four values in two pairs,
    /// leaving two int32 partial sums per channel (12 accumulators, 2 weight registers and a
    /// broadcast: 15 of AVX2's 16). No product or pair sum can overflow (255·127·2 < 2³¹), so
    /// the sums equal the other kernels' exactly.
    #[target_feature(enable = "avx2")]
    unsafe fn kernel<const M: usize>(
        a: *const i16,
        lda: usize,
        b: *const i8,
        kq: usize,
        acc: &mut [[i32; NR * LANES]; MR],
        col: usize,
    ) {
        let mut c = [[_mm256_setzero_si256(); 2]; M];
        for t in 0..kq {
            // SAFETY: group t's 32 bytes of this half lie inside `b`.
            let (w0, w1) = unsafe {
                let g = b.add(t * GROUP);
                (
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(g.cast())),
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(g.add(16).cast())),
                )
            };
            for (i, c) in c.iter_mut().enumerate() {
                // SAFETY: row i's values 4t..4t+4 lie inside `a`.
                let x = _mm256_set1_epi64x(unsafe { a.add(i * lda + 4 * t).cast::<i64>().read_unaligned() });
                c[0] = _mm256_add_epi32(c[0], _mm256_madd_epi16(x, w0));
                c[1] = _mm256_add_epi32(c[1], _mm256_madd_epi16(x, w1));
            }
        }
        for (row, c) in acc.iter_mut().zip(&c) {
            // hadd gives channels 0 1 4 5 | 2 3 6 7; the permute puts them in order.
            let sums = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(c[0], c[1]));
            // SAFETY: 8 int32 at col ≤ NR·16 - 8 inside a row of NR·16.
            unsafe { _mm256_storeu_si256(row[col..col + 8].as_mut_ptr().cast(), sums) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{GROUP, LANES, MR, NR};
    use std::arch::x86_64::*;

    /// Dispatches to the register tile of `mr × nb`.
    ///
    /// # Safety
    /// AVX-512F/BW/VNNI present; `a` holds `mr` rows of `lda ≥ 4·kq` bytes, `b` `nb` blocks of
    /// `kq·64` bytes.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile(
        a: *const u8,
        lda: usize,
        b: *const i8,
        kq: usize,
        mr: usize,
        nb: usize,
        acc: &mut [[i32; NR * LANES]; MR],
    ) {
        // SAFETY: as this function's.
        unsafe { crate::linalg::tile_dispatch!(mr, nb, kernel::<M, N>(a, lda, b, kq, acc)) }
    }

    /// `super::dequantize_add` compiled for AVX-512 (the same operations per element, so the
    /// same bits, 16 lanes at a time).
    ///
    /// # Safety
    /// AVX-512F present.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dequantize_add(dst: &mut [f32], acc: &[i32], scale: &[f32], qsum: &[i32], sx: f32, zero: f32) {
        super::dequantize_add(dst, acc, scale, qsum, sx, zero)
    }

    /// One row of activations as bytes (see `to_byte`), returning its scale: the portable
    /// loop's arithmetic, 16 lanes at a time.
    ///
    /// # Safety
    /// AVX-512F/BW present; `q` as long as `row`.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_row(row: &[f32], q: &mut [u8]) -> super::RowScale {
        assert_eq!(row.len(), q.len());
        let full = row.len() / 16 * 16;
        let (mut lo, mut hi) = (_mm512_set1_ps(f32::INFINITY), _mm512_set1_ps(f32::NEG_INFINITY));
        let mut nan: __mmask16 = 0;
        for c in (0..full).step_by(16) {
            // SAFETY: c + 16 ≤ row.len().
            let v = unsafe { _mm512_loadu_ps(row.as_ptr().add(c)) };
            // min/max(v, acc) keep acc where v is NaN, as f32::min/max do.
            lo = _mm512_min_ps(v, lo);
            hi = _mm512_max_ps(v, hi);
            nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        }
        let (lo, hi) = row[full..]
            .iter()
            .fold((_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi)), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let inv = super::inverse_step(lo, hi);
        let (vlo, vinv, half, zero, top) =
            (_mm512_set1_ps(lo), _mm512_set1_ps(inv), _mm512_set1_ps(0.5), _mm512_setzero_ps(), _mm512_set1_ps(255.0));
        for c in (0..full).step_by(16) {
            // SAFETY: c + 16 ≤ row.len() = q.len().
            unsafe {
                let v = _mm512_loadu_ps(row.as_ptr().add(c));
                let t = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v, vlo), vinv), half);
                // max(t, 0) gives 0 for NaN, as f32::max does.
                let t = _mm512_min_ps(_mm512_max_ps(t, zero), top);
                let b = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(t));
                _mm_storeu_si128(q.as_mut_ptr().add(c).cast(), b);
            }
        }
        for (q, &v) in q[full..].iter_mut().zip(&row[full..]) {
            *q = super::to_byte(v, lo, inv);
        }
        super::row_scale(lo, hi, nan != 0 || row[full..].iter().any(|v| v.is_nan()))
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn kernel<const M: usize, const N: usize>(
        a: *const u8,
        lda: usize,
        b: *const i8,
        kq: usize,
        acc: &mut [[i32; NR * LANES]; MR],
    ) {
        let mut c = [[_mm512_setzero_si512(); N]; M];
        for t in 0..kq {
            let mut w = [_mm512_setzero_si512(); N];
            for (j, w) in w.iter_mut().enumerate() {
                // SAFETY: block j's group t lies inside `b` (the caller's contract).
                *w = unsafe { _mm512_loadu_si512(b.add((j * kq + t) * GROUP).cast()) };
            }
            for (i, c) in c.iter_mut().enumerate() {
                // SAFETY: row i's bytes 4t..4t+4 lie inside `a`.
                let x = _mm512_set1_epi32(unsafe { a.add(i * lda + 4 * t).cast::<i32>().read_unaligned() });
                for (c, w) in c.iter_mut().zip(&w) {
                    *c = _mm512_dpbusd_epi32(*c, x, *w);
                }
            }
        }
        for (row, c) in acc.iter_mut().zip(&c) {
            for (j, c) in c.iter().enumerate() {
                // SAFETY: 16 int32 at j·16 inside a row of NR·16.
                unsafe { _mm512_storeu_si512(row[j * LANES..].as_mut_ptr().cast(), *c) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: u64, n: usize, scale: f32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            })
            .collect()
    }

    /// The dequantised product computed in f64 from the same bytes: what both kernels must give
    /// (to f32 rounding), and close to the f32 product.
    fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
        let q = Int8Linear::new(w, n, k);
        let (xq, xs) = quantize_rows(x, m, k, q.kq, false);
        let mut deq = vec![0f64; m * n];
        let mut exact = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let (blk, c) = (j / LANES, j % LANES);
                let mut s = 0i64;
                for t in 0..k {
                    let wq = q.packed[(blk * q.kq + t / 4) * GROUP + c * 4 + t % 4] as i64;
                    s += xq[i * 4 * q.kq + t] as i64 * wq;
                }
                let qsum: i64 = (0..k).map(|t| q.packed[(blk * q.kq + t / 4) * GROUP + c * 4 + t % 4] as i64).sum();
                let RowScale { scale, zero } = xs[i];
                deq[i * n + j] = q.scale[j] as f64 * (scale as f64 * s as f64 + zero as f64 * qsum as f64);
                exact[i * n + j] = (0..k).map(|t| x[i * k + t] as f64 * w[j * k + t] as f64).sum();
            }
        }
        (deq, exact)
    }

    #[test]
    fn both_kernels_give_the_dequantised_product_and_the_same_bytes() {
        // Odd sizes: partial row tiles, partial blocks, a partial panel and k not a multiple of 4.
        for &(m, n, k) in &[(1, 1, 1), (7, 17, 5), (53, 70, 131), (100, 64, 768)] {
            let x = lcg(1 + m as u64, m * k, 2.0);
            let w = lcg(99 + n as u64, n * k, 0.1);
            let q = Int8Linear::new(&w, n, k);
            let base = lcg(7, m * n, 1.0);
            let mut portable = base.clone();
            matmul_add_on(Kern::Portable, &mut portable, n, &x, &q, m);
            for kern in [Kern::Avx2, Kern::Vnni, Kern::Amx] {
                let mut fast = base.clone();
                matmul_add_on(kern, &mut fast, n, &x, &q, m);
                assert_eq!(portable, fast, "{m}×{n}×{k}: {kern:?} and the portable kernel disagree");
            }
            let (deq, exact) = reference(&x, &w, m, n, k);
            let scale = exact.iter().fold(0f64, |a, v| a.max(v.abs())).max(1e-6);
            for i in 0..m * n {
                let got = (portable[i] - base[i]) as f64;
                assert!((got - deq[i]).abs() <= 1e-5 * scale.max(1.0), "{m}×{n}×{k} [{i}]: {got} vs {}", deq[i]);
                // int8 of both sides: about 1% of the largest output at these sizes.
                assert!((got - exact[i]).abs() <= 0.02 * scale, "{m}×{n}×{k} [{i}]: {got} vs f64 {}", exact[i]);
            }
        }
    }

    #[test]
    fn both_activation_quantisers_give_the_same_bytes() {
        // Lengths around the 16-lane width, and the values that differ most easily: NaN,
        // infinities, signed zeros, ties at .5 steps, and a row of zeros.
        let mut x = lcg(3, 3 * 37, 6.0);
        x[1] = f32::NAN;
        x[5] = -0.0;
        x[37] = f32::INFINITY;
        x[40] = -f32::INFINITY;
        x[74..74 + 37].fill(0.0);
        x[2] = 127.0 * 0.5 / 3.0; // a value whose step lands near a tie
        for k in [1, 15, 16, 17, 37] {
            let m = x.len() / k;
            let a = quantize_rows(&x[..m * k], m, k, k.div_ceil(4), false);
            let b = quantize_rows(&x[..m * k], m, k, k.div_ceil(4), Kern::Vnni.available());
            assert_eq!(a.0, b.0, "k = {k}: bytes differ");
            let bits = |r: &[RowScale]| r.iter().map(|v| (v.scale.to_bits(), v.zero.to_bits())).collect::<Vec<_>>();
            assert_eq!(bits(&a.1), bits(&b.1), "k = {k}: scales differ");
        }
        // The rows holding the NaN and the infinities: their outputs are not finite, as in f32.
        let w = Int8Linear::new(&lcg(4, 2 * 37, 1.0), 2, 37);
        for kern in [Kern::Portable, Kern::Avx2, Kern::Vnni, Kern::Amx] {
            let mut dst = vec![0f32; 3 * 2];
            matmul_add_on(kern, &mut dst, 2, &x, &w, 3);
            assert!(dst[..4].iter().all(|v| !v.is_finite()), "{dst:?}");
            assert!(dst[4..].iter().all(|v| *v == 0.0), "the zero row: {dst:?}");
        }
    }

    #[test]
    fn zero_rows_and_zero_channels_add_nothing() {
        let (m, n, k) = (3, 20, 9);
        let mut w = lcg(5, n * k, 1.0);
        w[..k].fill(0.0); // channel 0 all zero
        let mut x = lcg(6, m * k, 1.0);
        x[k..2 * k].fill(0.0); // row 1 all zero
        let q = Int8Linear::new(&w, n, k);
        for kern in [Kern::Portable, Kern::Avx2, Kern::Vnni, Kern::Amx] {
            let mut dst = vec![1f32; m * n];
            matmul_add_on(kern, &mut dst, n, &x, &q, m);
            assert!((0..m).all(|i| dst[i * n] == 1.0), "channel 0 changed the output");
            assert!(dst[n..2 * n].iter().all(|&v| v == 1.0), "row 1 changed the output");
            assert!(dst[2 * n + 1..].iter().any(|&v| v != 1.0), "the product added nothing");
        }
    }
}
