//! bf16 linear layers for the CPU encoder (`--quantize bf16`), on CPUs with AVX-512 BF16: every
//! linear layer of every encoder layer (Q/K/V, attention output, MLP) multiplies bf16 weights by
//! bf16 activations and sums the products in f32, as PyTorch's CPU autocast to bf16 does for
//! `nn.Linear`. Layer norm, attention, the activation, the patch embedding and the projections
//! stay f32.
//!
//! Weights are rounded to bf16 once, when the model is converted; each activation row is
//! rounded as it arrives. bf16 keeps f32's exponent and 8 of its 24 significand bits, so unlike
//! int8 it needs no scales: each value keeps its own relative precision (about 0.4%), outliers
//! included.
//!
//! **Kernels.** Weights are packed once into 16-channel blocks of bf16 pairs (`[kp][16]` per
//! block), which is both the layout AVX-512 BF16's `vdpbf16ps` reads and an AMX weight tile's.
//! Where the CPU has AMX (Intel Xeon since Sapphire Rapids) and Linux grants the process its
//! tile state, `tdpbf16ps` computes a 16 × 16 tile of outputs 32 inputs deep per instruction,
//! four accumulator tiles at a time (32 rows × 32 channels); activation rows are converted with
//! AVX-512 BF16. Without AMX, one `vdpbf16ps` multiplies 32 bf16 pairs into 16 f32 sums, twice
//! an f32 FMA's products, but on the Xeon measured it issues on one port where FMAs use two, so
//! it ran at 0.78× f32 (docs/performance.md); it is kept for CPUs where that differs and as the
//! exact reference for the portable kernel. The product of two bf16 values is exact in f32, so
//! `vdpbf16ps`'s two steps per lane (odd element, then even) are two correctly rounded
//! additions; the portable kernel performs the same additions in the same order and rounds f32
//! to bf16 the same way (to nearest even, denormals to zero, NaN kept), so those two give the
//! same bytes (`cargo test --lib model::bf16` checks them). AMX sums each tile step in its own
//! order: the same products within f32 rounding. A CPU without AVX-512 BF16 is refused at load
//! time rather than run on the portable kernel, which is several times slower than f32.

use rayon::prelude::*;

use super::tasks::{par_tiles, OutRows, LANES, MR, NR};

/// An AMX tile: 16 rows of 64 bytes (16 f32, or 16 bf16 pairs).
const TILE: usize = 16;

/// A linear layer's weight `[n, k]` (PyTorch's layout) in bf16.
pub(crate) struct Bf16Linear {
    n: usize,
    k: usize,
    /// `k` in pairs (the last one padded with a zero), rounded up to a multiple of 16 (an AMX
    /// tile's depth); the padding is zeros.
    kp: usize,
    /// `[blocks][kp][16]`, each a pair of bf16: input `2t` in the low half, `2t + 1` in the high
    /// one; `n/16` blocks rounded up to an even count (AMX takes them in pairs).
    packed: Vec<u32>,
}

impl std::fmt::Debug for Bf16Linear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bf16Linear({}×{})", self.n, self.k)
    }
}

impl Bf16Linear {
    /// Rounds `w` (`[n, k]`, row-major) to bf16 and packs it.
    pub(crate) fn new(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight is not n×k");
        let kp = k.div_ceil(2).div_ceil(TILE) * TILE;
        let blocks = n.div_ceil(LANES).div_ceil(2) * 2;
        let mut packed = vec![0u32; blocks * kp * LANES];
        packed.par_chunks_mut(kp * LANES).enumerate().for_each(|(blk, dst)| {
            for c in 0..LANES.min(n.saturating_sub(blk * LANES)) {
                let row = &w[(blk * LANES + c) * k..][..k];
                for (t, pair) in row.chunks(2).enumerate() {
                    dst[t * LANES + c] = pack_pair(pair);
                }
            }
        });
        Self { n, k, kp, packed }
    }
}

/// The linear layers of one encoder layer in bf16: all of them.
#[derive(Debug)]
pub(crate) struct Bf16Layer {
    /// The fused Q/K/V projection.
    pub qkv: Bf16Linear,
    pub out: Bf16Linear,
    pub fc1: Bf16Linear,
    pub fc2: Bf16Linear,
}

/// `x` rounded to bf16 as `vcvtne2ps2bf16` does (Intel's pseudo-code): zero and denormals to a
/// zero of the same sign, infinities kept, NaN kept and made quiet, anything else rounded to
/// nearest, ties to even.
#[inline(always)]
pub(crate) fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    let (exp, man) = (b & 0x7f80_0000, b & 0x007f_ffff);
    if exp == 0 {
        ((b >> 16) & 0x8000) as u16
    } else if exp == 0x7f80_0000 {
        ((b >> 16) | if man != 0 { 0x40 } else { 0 }) as u16
    } else {
        (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
    }
}

/// A bf16 value as f32 (exact).
#[inline(always)]
fn from_bf16(h: u32) -> f32 {
    f32::from_bits(h << 16)
}

/// One or two values as a bf16 pair (the second zero when absent).
#[inline(always)]
fn pack_pair(pair: &[f32]) -> u32 {
    let lo = to_bf16(pair[0]) as u32;
    let hi = pair.get(1).map_or(0, |&v| to_bf16(v) as u32);
    lo | hi << 16
}

/// Each row of `x` (`[m, k]`) as `kp` bf16 pairs, padded with zeros, and then zero rows up to
/// `rows ≥ m`.
fn convert_rows(x: &[f32], m: usize, k: usize, kp: usize, rows: usize, simd: bool) -> Vec<u32> {
    let mut out = vec![0u32; rows * kp];
    out.par_chunks_mut(kp).zip(x[..m * k].par_chunks(k)).for_each(|(dst, row)| {
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: AVX-512F/BF16 were detected (simd is only set where that kernel runs).
            unsafe { avx512::convert_row(row, dst) };
            return;
        }
        let _ = simd;
        for (d, pair) in dst.iter_mut().zip(row.chunks(2)) {
            *d = pack_pair(pair);
        }
    });
    out
}

/// The bf16 kernels; both give the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kern {
    /// Plain Rust, for the tests and as the reference.
    Portable,
    /// AVX-512 BF16 (`vdpbf16ps`).
    Avx512Bf16,
    /// AMX (`tdpbf16ps`, 16×16 outputs of 32-deep products per instruction), activations
    /// converted with AVX-512 BF16.
    Amx,
}

impl Kern {
    /// AVX-512 BF16 where the CPU has it and the process's [`crate::linalg::kernel`] choice
    /// allows AVX-512 (`SIEVE_CPU_KERNEL=avx2` rules it out), else the portable kernel.
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use crate::linalg::{kernel, Kernel};
            if kernel() == Kernel::Avx512 && Kern::Amx.available() {
                return Kern::Amx;
            }
            if kernel() == Kernel::Avx512 && Kern::Avx512Bf16.available() {
                return Kern::Avx512Bf16;
            }
        }
        Kern::Portable
    }

    /// Whether this CPU can run the kernel.
    pub(crate) fn available(self) -> bool {
        match self {
            Kern::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kern::Avx512Bf16 => std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16"),
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            Kern::Amx => Kern::Avx512Bf16.available() && super::amx::available_bf16(),
            #[cfg(not(target_arch = "x86_64"))]
            Kern::Avx512Bf16 => false,
            #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
            Kern::Amx => false,
        }
    }
}

/// The process's bf16 kernel, detected once.
pub(crate) fn kern() -> Kern {
    static KERN: std::sync::OnceLock<Kern> = std::sync::OnceLock::new();
    *KERN.get_or_init(Kern::detect)
}

/// `dst += x · Wᵀ` for `x` `[m, k]` and `dst` `[m, n]`, both row-major, through bf16; `dst`'s
/// rows lie `ldd` apart (`≥ n`), so the product can fill some columns of a wider matrix.
pub(crate) fn matmul_add(dst: &mut [f32], ldd: usize, x: &[f32], w: &Bf16Linear, m: usize) {
    matmul_add_on(kern(), dst, ldd, x, w, m)
}

/// [`matmul_add`] on the kernel named (the tests compare them); one this CPU lacks falls back
/// to the portable kernel.
pub(crate) fn matmul_add_on(kern: Kern, dst: &mut [f32], ldd: usize, x: &[f32], w: &Bf16Linear, m: usize) {
    let (n, k, kp) = (w.n, w.k, w.kp);
    assert!(x.len() >= m * k, "bf16 matmul operands too small");
    let out = OutRows::new(dst, ldd, m, n);
    let kern = if kern.available() { kern } else { Kern::Portable };
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if kern == Kern::Amx {
        return matmul_add_amx(&out, x, w, m);
    }
    let simd = kern == Kern::Avx512Bf16;
    let xb = convert_rows(x, m, k, kp, m, simd);
    par_tiles(m, n.div_ceil(LANES), |i, mr, b0, nb| {
        let panel = &w.packed[b0 * kp * LANES..(b0 + nb) * kp * LANES];
        let mut acc = [[0f32; NR * LANES]; MR];
        tile(simd, &xb[i * kp..(i + mr) * kp], kp, panel, mr, nb, &mut acc);
        let (j0, cols) = (b0 * LANES, (nb * LANES).min(n - b0 * LANES));
        for (r, acc) in acc.iter().enumerate().take(mr) {
            // SAFETY: this tile's rows and blocks are its own (`par_tiles`).
            let dst = unsafe { out.row(i + r, j0, cols) };
            for (d, &a) in dst.iter_mut().zip(acc) {
                *d += a;
            }
        }
    });
}

/// The f32 sums of `mr` rows of `a` (`kp` pairs each) against `nb` packed blocks of `panel`,
/// into `acc[row][block·16 + channel]`.
fn tile(simd: bool, a: &[u32], kp: usize, panel: &[u32], mr: usize, nb: usize, acc: &mut [[f32; NR * LANES]; MR]) {
    assert!(a.len() >= mr * kp && panel.len() >= nb * kp * LANES && mr <= MR && nb <= NR);
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: AVX-512F/BF16 were detected by the caller; the slices cover what the kernel
        // reads (asserted above).
        unsafe { avx512::tile(a.as_ptr(), kp, panel.as_ptr(), mr, nb, acc) };
        return;
    }
    let _ = simd;
    for (r, acc) in acc.iter_mut().enumerate().take(mr) {
        let row = &a[r * kp..(r + 1) * kp];
        for b in 0..nb {
            let block = &panel[b * kp * LANES..(b + 1) * kp * LANES];
            let mut sums = [0f32; LANES];
            for (g, &x) in block.chunks_exact(LANES).zip(row) {
                let (x_even, x_odd) = (from_bf16(x & 0xffff), from_bf16(x >> 16));
                for (s, &w) in sums.iter_mut().zip(g) {
                    // `vdpbf16ps`'s order: the odd element's product, then the even one's;
                    // each product is exact, so each step is one rounding, as in the instruction.
                    *s += x_odd * from_bf16(w >> 16);
                    *s += x_even * from_bf16(w & 0xffff);
                }
            }
            acc[b * LANES..(b + 1) * LANES].copy_from_slice(&sums);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{LANES, MR, NR};
    use std::arch::x86_64::*;

    /// Dispatches to the register tile of `mr × nb`.
    ///
    /// # Safety
    /// AVX-512F/BF16 present; `a` holds `mr` rows of `kp` pairs, `b` `nb` blocks of `kp·16`.
    pub(super) unsafe fn tile(
        a: *const u32,
        kp: usize,
        b: *const u32,
        mr: usize,
        nb: usize,
        acc: &mut [[f32; NR * LANES]; MR],
    ) {
        // SAFETY: as this function's.
        unsafe { crate::linalg::tile_dispatch!(mr, nb, kernel::<M, N>(a, kp, b, acc)) }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn kernel<const M: usize, const N: usize>(
        a: *const u32,
        kp: usize,
        b: *const u32,
        acc: &mut [[f32; NR * LANES]; MR],
    ) {
        let mut c = [[_mm512_setzero_ps(); N]; M];
        for t in 0..kp {
            let mut w = [_mm512_setzero_si512(); N];
            for (j, w) in w.iter_mut().enumerate() {
                // SAFETY: block j's pair t lies inside `b` (the caller's contract).
                *w = unsafe { _mm512_loadu_si512(b.add((j * kp + t) * LANES).cast()) };
            }
            for (i, c) in c.iter_mut().enumerate() {
                // SAFETY: row i's pair t lies inside `a`.
                let x: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi32(a.add(i * kp + t).read() as i32)) };
                for (c, w) in c.iter_mut().zip(&w) {
                    // SAFETY: __m512i and __m512bh are both 512 bits of plain data.
                    *c = _mm512_dpbf16_ps(*c, x, unsafe { std::mem::transmute::<__m512i, __m512bh>(*w) });
                }
            }
        }
        for (row, c) in acc.iter_mut().zip(&c) {
            for (j, c) in c.iter().enumerate() {
                // SAFETY: 16 f32 at j·16 inside a row of NR·16.
                unsafe { _mm512_storeu_ps(row[j * LANES..].as_mut_ptr(), *c) };
            }
        }
    }

    /// One row of activations as bf16 pairs, as `super::pack_pair` computes them, 32 values at
    /// a time (`vcvtne2ps2bf16`, whose rounding `super::to_bf16` follows).
    ///
    /// # Safety
    /// AVX-512F/BF16 present; `dst` holds `row.len().div_ceil(2)` pairs.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn convert_row(row: &[f32], dst: &mut [u32]) {
        assert!(dst.len() >= row.len().div_ceil(2));
        let full = row.len() / 32 * 32;
        for c in (0..full).step_by(32) {
            // SAFETY: c + 32 ≤ row.len(), and dst holds pairs c/2..c/2 + 16.
            unsafe {
                let lo = _mm512_loadu_ps(row.as_ptr().add(c));
                let hi = _mm512_loadu_ps(row.as_ptr().add(c + 16));
                // The second operand fills the low 16 bf16: values c..c + 16, then the rest.
                let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(dst.as_mut_ptr().add(c / 2).cast(), v);
            }
        }
        for (d, pair) in dst[full / 2..].iter_mut().zip(row[full..].chunks(2)) {
            *d = super::pack_pair(pair);
        }
    }
}

/// [`matmul_add_on`] on AMX: 32 rows (zero rows past `m`) by 32 channels at a time, in four
/// accumulator tiles.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn matmul_add_amx(out: &OutRows, x: &[f32], w: &Bf16Linear, m: usize) {
    let (n, k, kp) = (w.n, w.k, w.kp);
    let rows = m.div_ceil(2 * TILE) * 2 * TILE;
    let xb = convert_rows(x, m, k, kp, rows, true);
    let body = |r0: usize, pair: usize| {
        let a = &xb[r0 * kp..(r0 + 2 * TILE) * kp];
        let b = &w.packed[2 * pair * kp * LANES..(2 * pair + 2) * kp * LANES];
        let mut c = [0f32; 4 * TILE * LANES];
        // SAFETY: tiles configured by `par_amx`; `a` holds 32 rows of kp pairs and `b` two
        // blocks of kp × 16 pairs, kp a multiple of 16; `c` is 32 × 32 f32.
        unsafe { super::amx::pair_bf16(a.as_ptr().cast(), kp, b.as_ptr().cast(), c.as_mut_ptr().cast()) };
        let (j0, cols) = (pair * 2 * LANES, (2 * LANES).min(n - pair * 2 * LANES));
        for (r, c) in c.chunks_exact(2 * LANES).enumerate().take(m.saturating_sub(r0)) {
            // SAFETY: this block's rows and channels are its own (`par_amx`).
            let dst = unsafe { out.row(r0 + r, j0, cols) };
            for (d, &v) in dst.iter_mut().zip(c) {
                *d += v;
            }
        }
    };
    // SAFETY: `Kern::Amx` is only chosen where AMX is present and granted.
    unsafe { super::tasks::par_amx(rows, n, body) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: u64, n: usize, scale: f32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
            })
            .collect()
    }

    #[test]
    fn rounding_to_bf16_follows_the_instruction() {
        // Ties go to even, carries propagate into the exponent, and the special values.
        assert_eq!(to_bf16(1.0), 0x3f80);
        assert_eq!(to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80); // tie, even stays
        assert_eq!(to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82); // tie, odd rounds up
        assert_eq!(to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(to_bf16(f32::from_bits(0x3fff_ffff)), 0x4000);
        assert_eq!(to_bf16(f32::MAX), 0x7f80); // rounds to infinity, as the instruction does
        assert_eq!(to_bf16(f32::INFINITY), 0x7f80);
        assert_eq!(to_bf16(f32::NEG_INFINITY), 0xff80);
        assert_eq!(to_bf16(-0.0), 0x8000);
        assert_eq!(to_bf16(f32::from_bits(0x0000_0001)), 0x0000); // denormal to zero
        assert_eq!(to_bf16(f32::from_bits(0x8040_0000)), 0x8000);
        let nan = to_bf16(f32::from_bits(0x7f80_0001));
        assert!(f32::from_bits((nan as u32) << 16).is_nan(), "a signalling NaN stays NaN");
        // The conversion matches `vcvtne2ps2bf16` on every kind of value, where it runs.
        #[cfg(target_arch = "x86_64")]
        if Kern::Avx512Bf16.available() {
            let mut bits: Vec<u32> = (0..100_000u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
            bits.extend([0, 0x8000_0000, 0x7f80_0000, 0xff80_0000, 0x7fc0_0000, 0x7f80_0001, 0x0000_8000, 0x0080_0000]);
            bits.extend((0..1000u32).map(|i| 0x3f80_0000 + (i << 15))); // exact ties
            let row: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
            let mut simd = vec![0u32; row.len().div_ceil(2)];
            // SAFETY: AVX-512F/BF16 detected; dst sized for the row.
            unsafe { avx512::convert_row(&row, &mut simd) };
            let portable: Vec<u32> = row.chunks(2).map(pack_pair).collect();
            assert_eq!(simd, portable);
        } else {
            eprintln!("skipped the AVX-512 BF16 comparison: this CPU lacks AVX-512 BF16");
        }
    }

    /// `Σ x·w` in f64 over the bf16-rounded values, and `Σ |x·w|` (the scale of its error).
    fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
        let r = |v: f32| from_bf16(to_bf16(v) as u32) as f64;
        let mut sum = vec![0f64; m * n];
        let mut abs = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                for t in 0..k {
                    let p = r(x[i * k + t]) * r(w[j * k + t]);
                    sum[i * n + j] += p;
                    abs[i * n + j] += p.abs();
                }
            }
        }
        (sum, abs)
    }

    #[test]
    fn both_kernels_give_the_bf16_product_and_the_same_bytes() {
        // Shapes with partial tiles and blocks, an odd k (a padded pair), and a dst wider than
        // n (a slice of columns of a wider matrix, as the Q/K/V rows are), with a bias in it.
        for &(m, n, k) in &[(1, 16, 2), (7, 50, 33), (53, 70, 64), (100, 200, 97)] {
            let x = lcg(m as u64 * 31 + k as u64, m * k, 3.0);
            let w = lcg(n as u64 * 17 + 5, n * k, 0.5);
            let lin = Bf16Linear::new(&w, n, k);
            let (sum, abs) = reference(&x, &w, m, n, k);
            let ldd = n + 3;
            let run = |kern: Kern| {
                let mut dst = vec![1.0f32; m * ldd];
                matmul_add_on(kern, &mut dst, ldd, &x, &lin, m);
                dst
            };
            // Within f32 rounding of the bf16 product, and nothing written past column n.
            let check = |name: &str, dst: &[f32]| {
                for i in 0..m {
                    for j in 0..n {
                        let (got, want) = (dst[i * ldd + j] as f64 - 1.0, sum[i * n + j]);
                        // f32 sums of k exact products: each addition within half an ulp.
                        let tol = abs[i * n + j] * k as f64 * 6e-8 + 1e-6;
                        assert!((got - want).abs() <= tol, "{name} ({m},{n},{k}) [{i},{j}]: {got} vs {want}");
                    }
                    assert!(
                        dst[i * ldd + n..(i + 1) * ldd].iter().all(|&v| v == 1.0),
                        "{name}: columns past n touched"
                    );
                }
            };
            let portable = run(Kern::Portable);
            check("portable", &portable);
            if Kern::Avx512Bf16.available() {
                let simd = run(Kern::Avx512Bf16);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&simd), bits(&portable), "({m},{n},{k}): the kernels differ");
            } else {
                eprintln!("skipped the AVX-512 BF16 kernel: this CPU lacks AVX-512 BF16");
            }
            // AMX sums each tile's 32 products in its own order: the same product within f32
            // rounding, not the same bits.
            if Kern::Amx.available() {
                check("AMX", &run(Kern::Amx));
            } else {
                eprintln!("skipped the AMX kernel: this CPU (or its OS) offers no AMX");
            }
        }
    }

    #[test]
    fn nan_and_infinity_reach_the_outputs_they_feed() {
        let (m, n, k) = (3, 20, 10);
        let mut x = lcg(9, m * k, 1.0);
        x[k + 4] = f32::NAN; // row 1
        x[2 * k] = f32::INFINITY; // row 2
        let lin = Bf16Linear::new(&lcg(3, n * k, 1.0), n, k);
        for kern in [Kern::Portable, Kern::Avx512Bf16, Kern::Amx] {
            let mut dst = vec![0f32; m * n];
            matmul_add_on(kern, &mut dst, n, &x, &lin, m);
            assert!(dst[..n].iter().all(|v| v.is_finite()), "{kern:?}");
            assert!(dst[n..2 * n].iter().all(|v| v.is_nan()), "{kern:?}");
            assert!(dst[2 * n..].iter().all(|v| !v.is_finite()), "{kern:?}");
        }
    }
}
