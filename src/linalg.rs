//! The CPU matrix products every room shares: the model's linear layers (`model/cpu.rs`), the
//! exact neighbour search, k-means and the diversity Gram matrices all go through these two
//! wrappers over the `gemm` crate (the one candle itself uses), so there is one place that
//! speaks to it and one place to tune.

use gemm::Parallelism;

/// gemm's parallelism for the rayon pool sieve runs on.
pub(crate) fn threads() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
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
    assert!(dst.len() >= m * n && x.len() >= m * k && w.len() >= n * k, "gemm operands too small");
    // SAFETY: bounds checked above; strides describe row-major dst/x and Wᵀ read from W.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

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
        gemm::gemm(
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
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}
