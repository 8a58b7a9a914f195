//! CMMD (Jayasumana et al. 2024, "Rethinking FID"): the maximum mean discrepancy between two sets
//! of CLIP embeddings under a Gaussian RBF kernel, as google-research/cmmd's `distance.py`
//! computes it: rows L2-normalised, `k(x, y) = exp(−‖x − y‖² / (2σ²))` with σ = 10, the result
//! scaled by 1000. That code returns the biased (V-statistic) estimate, whose means include each
//! set's diagonal; sieve reports it as `biased` (comparable with published CMMD figures) and
//! reports the unbiased U-statistic (Gretton et al. 2012, Lemma 6: the diagonal terms dropped)
//! as the CMMD value. The unbiased value may be slightly negative when the sets do not differ.
//!
//! Kernel sums are taken over tiles of the Gram matrix (`linalg::matmul_wt`), never the whole
//! matrix at once. The permutation test pools at most [`PERMUTATION_SAMPLE`] items per side,
//! holds that pooled kernel matrix, and recomputes the statistic for each seeded relabelling.

use gemm::Parallelism;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::Serialize;

use crate::index::Matrix;
use crate::linalg::matmul_wt;

/// The kernel bandwidth of the CMMD paper.
pub const SIGMA: f64 = 10.0;
/// The scale of the CMMD paper (its values read as MMD² × 1000).
pub const SCALE: f64 = 1000.0;
/// Default number of permutations for the p-value.
pub const DEFAULT_PERMUTATIONS: usize = 200;
/// Most items per side pooled for the permutation test (a pooled kernel matrix of
/// (2 × 2,000)² f32 values, 64 MB).
pub const PERMUTATION_SAMPLE: usize = 2000;

const ROWS: usize = 256;
const COLS: usize = 2048;

/// The kernel of two unit vectors from their cosine (‖x − y‖² = 2 − 2⟨x, y⟩), less 1. On unit
/// vectors with σ = 10 the kernel lies in [e^−0.02, 1], so sums of `k − 1` keep the digits that
/// sums of `k` would round away (in an f32 kernel matrix especially).
#[inline]
fn kernel_m1(dot: f32) -> f64 {
    let d2 = (2.0 - 2.0 * dot as f64).max(0.0);
    (-d2 / (2.0 * SIGMA * SIGMA)).exp_m1()
}

/// Σ k(xᵢ, yⱼ) over all pairs, by tiles.
pub fn kernel_sum(x: &Matrix, y: &Matrix) -> f64 {
    kernel_m1_sum(x, y) + (x.rows() * y.rows()) as f64
}

/// Σ (k(xᵢ, yⱼ) − 1) over all pairs, by tiles.
fn kernel_m1_sum(x: &Matrix, y: &Matrix) -> f64 {
    let d = x.dim();
    let (nx, ny) = (x.rows(), y.rows());
    let blocks: Vec<usize> = (0..nx).step_by(ROWS).collect();
    blocks
        .par_iter()
        .map_init(
            || vec![0f32; ROWS * COLS],
            |tile, &r0| {
                let r1 = (r0 + ROWS).min(nx);
                let mut sum = 0f64;
                let mut c0 = 0;
                while c0 < ny {
                    let c1 = (c0 + COLS).min(ny);
                    let (m, n) = (r1 - r0, c1 - c0);
                    matmul_wt(tile, x.block(r0, r1), y.block(c0, c1), m, n, d, false, Parallelism::None);
                    sum += tile[..m * n].iter().map(|&s| kernel_m1(s)).sum::<f64>();
                    c0 = c1;
                }
                sum
            },
        )
        .collect::<Vec<f64>>()
        .into_iter()
        .sum()
}

/// The CMMD of two sets (rows L2-normalised), both estimates, × [`SCALE`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Mmd {
    /// The unbiased estimate (diagonal terms dropped).
    pub unbiased: f64,
    /// The biased estimate google-research/cmmd returns.
    pub biased: f64,
}

/// Both estimates from the kernel sums: `sxx` and `syy` over all ordered pairs including the
/// diagonal (whose terms are k(x, x) = 1), `sxy` over all cross pairs.
fn from_sums(sxx: f64, syy: f64, sxy: f64, m: usize, n: usize) -> Mmd {
    let (mf, nf) = (m as f64, n as f64);
    let biased = sxx / (mf * mf) + syy / (nf * nf) - 2.0 * sxy / (mf * nf);
    let unbiased = if m < 2 || n < 2 {
        f64::NAN
    } else {
        (sxx - mf) / (mf * (mf - 1.0)) + (syy - nf) / (nf * (nf - 1.0)) - 2.0 * sxy / (mf * nf)
    };
    Mmd { unbiased: unbiased * SCALE, biased: biased * SCALE }
}

/// The CMMD of `x` and `y` (unit rows of one width).
pub fn cmmd(x: &Matrix, y: &Matrix) -> Mmd {
    from_sums(kernel_sum(x, x), kernel_sum(y, y), kernel_sum(x, y), x.rows(), y.rows())
}

/// A permutation test of "x and y come from one distribution".
#[derive(Debug, Clone, Serialize)]
pub struct PermutationTest {
    /// Items of each side pooled (a seeded sample of each, when larger than the cap).
    pub items_a: usize,
    pub items_b: usize,
    pub permutations: usize,
    /// The unbiased CMMD of the pooled items as labelled.
    pub observed: f64,
    /// (1 + relabellings at or above `observed`) / (1 + permutations).
    pub p_value: f64,
}

/// The permutation test on `x` and `y` (all their rows; sample them first), `permutations`
/// relabellings drawn from `seed`. Deterministic for a seed, whatever the thread count.
pub fn permutation_test(x: &Matrix, y: &Matrix, permutations: usize, seed: u64) -> PermutationTest {
    let (m, n, d) = (x.rows(), y.rows(), x.dim());
    let total = m + n;
    let mut pooled = Vec::with_capacity(total * d);
    pooled.extend_from_slice(x.as_slice());
    pooled.extend_from_slice(y.as_slice());
    // The pooled kernel matrix less 1, one block of rows at a time.
    let mut k = vec![0f32; total * total];
    k.par_chunks_mut(ROWS * total).enumerate().for_each(|(b, out)| {
        let r0 = b * ROWS;
        let r1 = (r0 + ROWS).min(total);
        matmul_wt(out, &pooled[r0 * d..r1 * d], &pooled, r1 - r0, total, d, false, Parallelism::None);
        out.iter_mut().for_each(|v| *v = kernel_m1(*v) as f32);
    });
    let row_sums: Vec<f64> = k.par_chunks(total).map(|r| r.iter().map(|&v| v as f64).sum()).collect();
    let stat = |in_x: &[f32]| -> f64 {
        // Per row, its sum over the x-labelled columns; then the three block sums (of k − 1,
        // plus the pair counts).
        let (mut sxx, mut sxy, mut syy) = (0f64, 0f64, 0f64);
        for (i, row) in k.chunks_exact(total).enumerate() {
            let rx: f64 = row.iter().zip(in_x).map(|(&v, &l)| (v * l) as f64).sum();
            if in_x[i] == 1.0 {
                sxx += rx;
                sxy += row_sums[i] - rx;
            } else {
                syy += row_sums[i] - rx;
            }
        }
        let (mf, nf) = (m as f64, n as f64);
        from_sums(sxx + mf * mf, syy + nf * nf, sxy + mf * nf, m, n).unbiased
    };
    let labels: Vec<f32> = (0..total).map(|i| if i < m { 1.0 } else { 0.0 }).collect();
    let observed = stat(&labels);
    let mut rng = StdRng::seed_from_u64(seed);
    let shuffled: Vec<Vec<f32>> = (0..permutations)
        .map(|_| {
            let mut l = labels.clone();
            l.shuffle(&mut rng);
            l
        })
        .collect();
    let stats: Vec<f64> = shuffled.par_iter().map(|l| stat(l)).collect();
    // A relabelling ties the observed value when it is within float noise of it (the identical
    // relabelling, or a set compared with itself): 1e-8 of a kernel value, × SCALE.
    let tol = 1e-8 * SCALE;
    let at_least = stats.iter().filter(|&&s| s >= observed - tol).count();
    PermutationTest {
        items_a: m,
        items_b: n,
        permutations,
        observed,
        p_value: (1 + at_least) as f64 / (1 + permutations) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[Vec<f32>], y: &[Vec<f32>]) -> (f64, f64) {
        let k = |a: &[f32], b: &[f32]| {
            let d2: f64 = a.iter().zip(b).map(|(p, q)| ((p - q) as f64).powi(2)).sum();
            (-d2 / (2.0 * SIGMA * SIGMA)).exp()
        };
        let s = |a: &[Vec<f32>], b: &[Vec<f32>], skip: bool| {
            let mut t = 0.0;
            for (i, p) in a.iter().enumerate() {
                for (j, q) in b.iter().enumerate() {
                    if !(skip && i == j) {
                        t += k(p, q);
                    }
                }
            }
            t
        };
        let (m, n) = (x.len() as f64, y.len() as f64);
        let u = s(x, x, true) / (m * (m - 1.0)) + s(y, y, true) / (n * (n - 1.0)) - 2.0 * s(x, y, false) / (m * n);
        let b = s(x, x, false) / (m * m) + s(y, y, false) / (n * n) - 2.0 * s(x, y, false) / (m * n);
        (u * SCALE, b * SCALE)
    }

    fn unit_rows(rows: usize, d: usize, seed: u64, shift: f32) -> Vec<Vec<f32>> {
        use rand::Rng;
        let mut rng = StdRng::seed_from_u64(seed);
        (0..rows)
            .map(|_| {
                let mut v: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0..1.0)).collect();
                v[0] += shift;
                let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
                v.iter_mut().for_each(|a| *a /= norm);
                v
            })
            .collect()
    }

    fn matrix(rows: &[Vec<f32>]) -> Matrix {
        Matrix::new(rows[0].len(), rows.concat()).unwrap()
    }

    #[test]
    fn tiled_sums_match_the_naive_double_loop_across_tiles() {
        let (x, y) = (unit_rows(300, 8, 1, 0.0), unit_rows(2100, 8, 2, 0.5));
        let (u, b) = naive(&x, &y);
        let got = cmmd(&matrix(&x), &matrix(&y));
        assert!((got.unbiased - u).abs() < 1e-6 * u.abs().max(1.0), "{got:?} vs {u}");
        assert!((got.biased - b).abs() < 1e-6 * b.abs().max(1.0), "{got:?} vs {b}");
    }

    #[test]
    fn the_permutation_test_tells_a_shift_from_a_resample() {
        let a = matrix(&unit_rows(60, 6, 3, 0.0));
        let same = matrix(&unit_rows(60, 6, 4, 0.0));
        let shifted = matrix(&unit_rows(60, 6, 5, 1.5));
        let t = permutation_test(&a, &shifted, 200, 7);
        assert_eq!(t.p_value, 1.0 / 201.0, "{t:?}");
        let t = permutation_test(&a, &same, 200, 7);
        assert!(t.p_value > 0.05, "{t:?}");
        // The observed statistic is the unbiased CMMD, and reruns agree.
        assert!((t.observed - cmmd(&a, &same).unbiased).abs() < 1e-6);
        assert_eq!(permutation_test(&a, &same, 200, 7).p_value, t.p_value);
        // A set against itself: nothing relabelled is smaller, so p = 1.
        assert_eq!(permutation_test(&a, &a, 50, 7).p_value, 1.0);
    }
}
