//! The CPU matrix products every room shares: the model's linear layers and attention
//! (`model/cpu.rs`), the exact neighbour search, k-means and the diversity Gram matrices all go
//! through [`gemm_on`] over the `gemm` crate (the one candle itself uses), so there is one place
//! that speaks to it and one place to tune.
//!
//! **Kernels.** gemm is built with its `x86-v4` feature, so on a CPU with AVX-512F its 16-lane
//! kernels run; elsewhere its AVX2+FMA kernels (what every build used before). The choice is made
//! once per process ([`kernel`]): detected, or forced with `SIEVE_CPU_KERNEL=avx2|avx512|auto`,
//! so one AVX-512 machine can run the tests on both paths (CI does). A forced `avx512` on a CPU
//! without it is refused by name instead of dying on an illegal instruction. candle's own
//! matmuls (the patch embedding and the projections, a few percent of a tower's FLOPs) follow
//! gemm's detection, not the switch.

use std::sync::OnceLock;

pub(crate) mod panels;

use gemm::Parallelism;

mod prepacked;
pub(crate) use prepacked::PackedWeight;

use crate::error::{Error, Result};

/// Runs `$call` with `const M` (the register tile's rows: `$mr` in 1..=6, more taken as 6) and
/// `const N` (its 16-lane blocks: `$nb` in 1..=4, more taken as 4) in scope, so a tile kernel
/// generic over both can be picked from run-time sizes: `tile_dispatch!(mr, nb,
/// kernel::<M, N>(a, b, acc))`. The AVX-512 kernels of `linalg::panels`, `model::int8` and
/// `model::bf16` share it.
macro_rules! tile_dispatch {
    ($mr:expr, $nb:expr, $call:expr) => {
        match $mr {
            1 => $crate::linalg::tile_dispatch!(@nb 1, $nb, $call),
            2 => $crate::linalg::tile_dispatch!(@nb 2, $nb, $call),
            3 => $crate::linalg::tile_dispatch!(@nb 3, $nb, $call),
            4 => $crate::linalg::tile_dispatch!(@nb 4, $nb, $call),
            5 => $crate::linalg::tile_dispatch!(@nb 5, $nb, $call),
            _ => $crate::linalg::tile_dispatch!(@nb 6, $nb, $call),
        }
    };
    (@nb $m:literal, $nb:expr, $call:expr) => {
        match $nb {
            1 => $crate::linalg::tile_dispatch!(@one $m, 1, $call),
            2 => $crate::linalg::tile_dispatch!(@one $m, 2, $call),
            3 => $crate::linalg::tile_dispatch!(@one $m, 3, $call),
            _ => $crate::linalg::tile_dispatch!(@one $m, 4, $call),
        }
    };
    (@one $m:literal, $n:literal, $call:expr) => {{
        const M: usize = $m;
        const N: usize = $n;
        $call
    }};
}
pub(crate) use tile_dispatch;

/// gemm's parallelism for the rayon pool sieve runs on.
pub(crate) fn threads() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// The f32 GEMM kernels sieve can run on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512F, 16 lanes (gemm's `avx512f` kernels).
    Avx512,
    /// AVX2 + FMA, 8 lanes (gemm's `fma` kernels).
    Avx2,
    /// Whatever gemm picks: the scalar or NEON kernels on CPUs with neither of the above.
    Other,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512 => "avx512",
            Kernel::Avx2 => "avx2",
            Kernel::Other => "generic",
        }
    }

    /// The kernels this CPU can run, best first.
    pub fn available() -> Vec<Kernel> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
                out.push(Kernel::Avx512);
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                out.push(Kernel::Avx2);
            }
        }
        out.push(Kernel::Other);
        out
    }

    /// `SIEVE_CPU_KERNEL`'s value (`auto`, `avx512`, `avx2`; empty is `auto`) on this CPU.
    pub fn choose(request: &str) -> Result<Kernel> {
        let available = Self::available();
        let want = match request.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => return Ok(available[0]),
            "avx512" | "avx-512" => Kernel::Avx512,
            "avx2" => Kernel::Avx2,
            other => {
                return Err(Error::InvalidArg {
                    what: "SIEVE_CPU_KERNEL",
                    reason: format!("{other:?}: expected auto, avx512 or avx2"),
                })
            }
        };
        if available.contains(&want) {
            Ok(want)
        } else {
            let names: Vec<_> = available.iter().map(|k| k.name()).collect();
            Err(Error::InvalidArg {
                what: "SIEVE_CPU_KERNEL",
                reason: format!("this CPU cannot run {} (it can run: {})", want.name(), names.join(", ")),
            })
        }
    }
}

static KERNEL: OnceLock<Kernel> = OnceLock::new();

/// The process's GEMM kernel: `SIEVE_CPU_KERNEL`, else the best this CPU runs. Call
/// [`init_kernel`] first to turn a bad value into an error; here a bad value falls back to the
/// detected kernel with a warning.
pub fn kernel() -> Kernel {
    *KERNEL.get_or_init(|| {
        let request = std::env::var("SIEVE_CPU_KERNEL").unwrap_or_default();
        Kernel::choose(&request).unwrap_or_else(|e| {
            tracing::warn!("{e}; using the detected kernel");
            Kernel::available()[0]
        })
    })
}

/// Checks `SIEVE_CPU_KERNEL` and fixes the process's kernel; an unknown or unsupported value is
/// a usage error (the CLI calls this at start-up).
pub fn init_kernel() -> Result<Kernel> {
    let request = std::env::var("SIEVE_CPU_KERNEL").unwrap_or_default();
    let chosen = Kernel::choose(&request)?;
    Ok(*KERNEL.get_or_init(|| chosen))
}

/// `dst := alpha·dst + beta·lhs·rhs` (alpha only read when `read_dst`), strided as gemm takes
/// them (`*_cs` column stride, `*_rs` row stride, all ≥ 0), on `kernel`: the process's
/// [`kernel()`], or a named one (the tests compare the two x86 paths).
///
/// # Safety
/// The pointers and strides must describe valid `m×n`, `m×k` and `k×n` matrices, `dst` must
/// not alias the operands, and `kernel` must be one of [`Kernel::available`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_on(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_cs: isize,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const f32,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const f32,
    rhs_cs: isize,
    rhs_rs: isize,
    alpha: f32,
    beta: f32,
    parallelism: Parallelism,
) {
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx2 {
        // What gemm::gemm does before its dispatch: its kernels want a column-oriented dst, so a
        // row-major product is computed as its transpose (strides here are all ≥ 0).
        let (m, n, dst_cs, dst_rs, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs) = if dst_cs.abs() < dst_rs.abs() {
            (n, m, dst_rs, dst_cs, rhs, rhs_rs, rhs_cs, lhs, lhs_rs, lhs_cs)
        } else {
            (m, n, dst_cs, dst_rs, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs)
        };
        use gemm_common::simd::MixedSimd;
        use gemm_f32::microkernel::fma::f32 as fma;
        const N: usize = 8;
        let simd = <gemm_common::simd::V3 as MixedSimd<f32, f32, f32, f32>>::try_new()
            .expect("Kernel::Avx2 is only chosen where AVX2 and FMA were detected");
        // SAFETY: the caller's matrices (transposed as gemm::gemm transposes them); the fma
        // kernels run only where AVX2 and FMA were detected (V3::try_new above).
        unsafe {
            gemm_common::gemm::gemm_basic_generic::<
                _,
                f32,
                N,
                { fma::MR_DIV_N * N },
                { fma::NR },
                { fma::MR_DIV_N },
                { fma::H_M },
                { fma::H_N },
            >(
                simd,
                m,
                n,
                k,
                dst,
                dst_cs,
                dst_rs,
                read_dst,
                lhs,
                lhs_cs,
                lhs_rs,
                rhs,
                rhs_cs,
                rhs_rs,
                alpha,
                beta,
                false,
                false,
                false,
                |a, b, c| a * b + c,
                &fma::UKR,
                &fma::H_UKR,
                false,
                parallelism,
            );
        }
        return;
    }
    // Avx512 and Other: gemm's own dispatch, which picks AVX-512 wherever it was detected.
    let _ = kernel;
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            read_dst,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            alpha,
            beta,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// `dst[m×n] (+)= x[m×k] · Wᵀ` with `W` row-major `[n×k]` (a PyTorch linear weight, or a
/// block of vectors to compare `x` against). The one wrapper over `gemm` for both the model and
/// the neighbour search.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_wt(
    dst: &mut [f32],
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
    parallelism: Parallelism,
) {
    matmul_wt_on(kernel(), dst, n, x, w, m, n, k, accumulate, parallelism)
}

/// [`matmul_wt`] into the first `n` columns of rows `ldd` apart (`ldd ≥ n`), on `kernel` (one
/// of [`Kernel::available`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_wt_on(
    kernel: Kernel,
    dst: &mut [f32],
    ldd: usize,
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
    parallelism: Parallelism,
) {
    assert!(ldd >= n && x.len() >= m * k && w.len() >= n * k, "gemm operands too small");
    assert!(m == 0 || dst.len() >= (m - 1) * ldd + n, "gemm operands too small");
    // One block of the product: rows `r0..r0 + rows` of x and dst, columns (rows of W)
    // `c0..c0 + cols`.
    // SAFETY (of each call): the block lies inside the bounds checked above; strides describe
    // row-major dst (rows ldd apart) and x, and Wᵀ read from W; the caller names an available
    // kernel; blocks run at the same time write disjoint parts of dst.
    let block = |dst: *mut f32, r0: usize, rows: usize, c0: usize, cols: usize, parallelism: Parallelism| unsafe {
        gemm_on(
            kernel,
            rows,
            cols,
            k,
            dst.add(r0 * ldd + c0),
            1,
            ldd as isize,
            accumulate,
            x.as_ptr().add(r0 * k),
            1,
            k as isize,
            w.as_ptr().add(c0 * k),
            k as isize,
            1,
            1.0,
            1.0,
            parallelism,
        )
    };
    let (col_parts, row_parts) = split_product(m, n, k, parallelism);
    if col_parts * row_parts <= 1 {
        block(dst.as_mut_ptr(), 0, m, 0, n, parallelism);
        return;
    }
    // A block per thread, each one single-threaded gemm call: each thread packs only the
    // rows of W it multiplies by, where gemm's own threading had one thread pack all of a
    // narrow W while the others waited (see `split_product`).
    // Equal blocks (W's a multiple of 16 rows), the last one taking what is left over.
    let (col_step, row_step) = (n / col_parts / 16 * 16, m / row_parts);
    let dst = SendPtr(dst.as_mut_ptr());
    let dst = &dst;
    for_each_block(col_parts, row_parts, |c, r| {
        let (c0, cols) = span(c, col_parts, col_step, n);
        let (r0, rows) = span(r, row_parts, row_step, m);
        block(dst.0, r0, rows, c0, cols, Parallelism::None)
    });
}

/// Runs `block(c, r)` for each of `col_parts × row_parts` blocks of a product: on this thread
/// for one block, else as one rayon task each.
fn for_each_block(col_parts: usize, row_parts: usize, block: impl Fn(usize, usize) + Sync) {
    if col_parts * row_parts == 1 {
        return block(0, 0);
    }
    let block = &block;
    rayon::scope(|s| {
        for c in 0..col_parts {
            for r in 0..row_parts {
                s.spawn(move |_| block(c, r));
            }
        }
    });
}

/// Part `part` of `parts` over `len` items, each `step` long but the last, which takes what is
/// left: `(first item, items)`.
fn span(part: usize, parts: usize, step: usize, len: usize) -> (usize, usize) {
    (part * step, if part + 1 == parts { len - part * step } else { step })
}

/// `*mut f32` shared by parallel tasks that each write a disjoint part of the buffer behind it
/// (the blocks of one product here, the attention tasks of `model::cpu`).
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: users only write disjoint regions through it, from tasks that end before the buffer
// is used again.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// How [`matmul_wt_on`] splits `x[m×k] · Wᵀ[k×n]` among `parallelism`'s threads: into
/// (column parts, row parts), each block one single-threaded gemm call; (1, 1) leaves the
/// product to gemm's own threading.
///
/// gemm packs the rows of W it multiplies by into panels on every call. Where W has at most
/// 1024 rows (ViT-B's `[768, 3072]` fc2, `[768, 768]` attention output), gemm packs all of W
/// on the calling thread before the others start, so on 2 cores the other core waited for a
/// copy of up to 9 MB per call: splitting W's rows between threads made fc2 at 400 rows
/// (batch 8 of ViT-B/32) 28% faster and the whole tower ~8% (docs/performance.md).
///
/// Every block keeps at least 128 of W's rows (or all of them) and of x's rows (or all of
/// them, at least 2), so each call takes gemm's general path, not its small-matrix or matrix-vector
/// ones, with the same k-blocking as one call over the whole product (which depends only on
/// `k`): each output is the same sum in the same order, and the result is bit-identical to
/// the unsplit call (tested).
fn split_product(m: usize, n: usize, k: usize, parallelism: Parallelism) -> (usize, usize) {
    let threads = match parallelism {
        Parallelism::None => 1,
        Parallelism::Rayon(0) => rayon::current_num_threads(),
        Parallelism::Rayon(t) => t,
    };
    // Below gemm's own threading threshold, or for one row of x (gemm's matrix-vector path), one
    // call.
    if threads <= 1 || m < 2 || m.saturating_mul(n).saturating_mul(k) < gemm_common::gemm::DEFAULT_THREADING_THRESHOLD {
        return (1, 1);
    }
    let col_parts = (n / MIN_BLOCK).clamp(1, threads);
    let row_parts = (threads / col_parts).clamp(1, (m / MIN_BLOCK).max(1));
    (col_parts, row_parts)
}

/// The fewest rows of W, and of x, that [`split_product`] gives a block.
const MIN_BLOCK: usize = 128;

/// `dst[da×db] = Aᵀ · B` for `a[rows×da]` and `b[rows×db]`, each row-major with its own row
/// stride (`ld*`, ≥ the width), so blocks of columns of wider matrices are read in place: the
/// Gram (or cross) matrix of two blocks of vectors through gemm's strides.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_tn(
    dst: &mut [f32],
    ldd: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    rows: usize,
    da: usize,
    db: usize,
) {
    let fits = |len: usize, ld: usize, r: usize, w: usize| r == 0 || w == 0 || (ld >= w && len >= (r - 1) * ld + w);
    assert!(
        fits(dst.len(), ldd, da, db) && fits(a.len(), lda, rows, da) && fits(b.len(), ldb, rows, db),
        "gemm operands too small"
    );
    // SAFETY: bounds checked above; lhs(i, r) = a[r·lda + i], rhs(r, j) = b[r·ldb + j],
    // dst(i, j) = dst[i·ldd + j].
    unsafe {
        gemm_on(
            kernel(),
            da,
            db,
            rows,
            dst.as_mut_ptr(),
            1,
            ldd as isize,
            false,
            a.as_ptr(),
            lda as isize,
            1,
            b.as_ptr(),
            1,
            ldb as isize,
            1.0,
            1.0,
            Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, rng: &mut rand::rngs::StdRng) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// `dst = base + x·Wᵀ` in f64, the reference for both kernels.
    fn naive(base: &[f32], x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        (0..m * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                base[ij] as f64 + (0..k).map(|r| x[i * k + r] as f64 * w[j * k + r] as f64).sum::<f64>()
            })
            .collect()
    }

    /// Every kernel this CPU runs gives the product within f32 rounding, on shapes that hit
    /// the full microkernels, their edges and gemm's small-size paths, with and without
    /// accumulation; and the x86 kernels agree with each other.
    #[test]
    fn every_kernel_matches_the_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let kernels = Kernel::available();
        for &(m, n, k) in &[(1, 1, 1), (1, 512, 768), (7, 5, 3), (50, 2304, 768), (97, 33, 65), (256, 256, 64)] {
            let (x, w, base) = (random(m * k, &mut rng), random(n * k, &mut rng), random(m * n, &mut rng));
            let want = naive(&base, &x, &w, m, n, k);
            let mut results = Vec::new();
            for &kernel in &kernels {
                let mut dst = base.clone();
                matmul_wt_on(kernel, &mut dst, n, &x, &w, m, n, k, true, Parallelism::Rayon(2));
                let worst = dst.iter().zip(&want).map(|(&a, &b)| (a as f64 - b).abs()).fold(0.0, f64::max);
                assert!(worst < 1e-4 * (k as f64).sqrt(), "{kernel:?} {m}×{n}×{k}: off by {worst}");
                results.push(dst);
            }
            for (r, kernel) in results.iter().zip(&kernels).skip(1) {
                let apart = r.iter().zip(&results[0]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(apart < 1e-4 * (k as f32).sqrt(), "{kernel:?} vs {:?}: {apart}", kernels[0]);
            }
        }
    }

    /// Split among threads (`split_product`), a product is bit-identical to one
    /// single-threaded gemm call, on every kernel, accumulating or not: blocks of W's rows, of
    /// x's rows, both, and ragged last blocks.
    #[test]
    fn splitting_among_threads_is_bit_identical() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let shapes = [(130, 300, 70), (3, 1000, 256), (257, 129, 33), (400, 768, 96), (300, 257, 40), (200, 2047, 30)];
        for &(m, n, k) in &shapes {
            assert_ne!(split_product(m, n, k, Parallelism::Rayon(4)), (1, 1), "{m}×{n}×{k} is not split");
            let (x, w, base) = (random(m * k, &mut rng), random(n * k, &mut rng), random(m * n, &mut rng));
            for kernel in Kernel::available() {
                for accumulate in [false, true] {
                    let mut one = base.clone();
                    matmul_wt_on(kernel, &mut one, n, &x, &w, m, n, k, accumulate, Parallelism::None);
                    for threads in [2, 3, 4, 8] {
                        let mut split = base.clone();
                        matmul_wt_on(kernel, &mut split, n, &x, &w, m, n, k, accumulate, Parallelism::Rayon(threads));
                        let same = split.iter().zip(&one).all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "{kernel:?} {m}×{n}×{k} accumulate={accumulate} on {threads} threads");
                    }
                }
            }
        }
        // What is not split: one thread, one row of x, and work below gemm's threading threshold.
        assert_eq!(split_product(400, 768, 768, Parallelism::None), (1, 1));
        assert_eq!(split_product(1, 4096, 4096, Parallelism::Rayon(4)), (1, 1));
        assert_eq!(split_product(8, 64, 64, Parallelism::Rayon(4)), (1, 1));
        // Blocks keep at least 128 of W's rows and of x's (or all of them).
        assert_eq!(split_product(400, 768, 3072, Parallelism::Rayon(2)), (2, 1));
        assert_eq!(split_product(1600, 768, 768, Parallelism::Rayon(16)), (6, 2));
        assert_eq!(split_product(1600, 200, 768, Parallelism::Rayon(4)), (1, 4));
    }

    #[test]
    fn kernel_requests_are_checked() {
        assert_eq!(Kernel::choose("").unwrap(), Kernel::available()[0]);
        assert_eq!(Kernel::choose("AUTO").unwrap(), Kernel::available()[0]);
        assert!(matches!(Kernel::choose("sse9"), Err(Error::InvalidArg { what: "SIEVE_CPU_KERNEL", .. })));
        for kernel in [Kernel::Avx512, Kernel::Avx2] {
            let got = Kernel::choose(kernel.name());
            assert_eq!(got.is_ok(), Kernel::available().contains(&kernel), "{kernel:?}: {got:?}");
        }
    }
}
