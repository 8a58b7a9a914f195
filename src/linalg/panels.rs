//! Products against a matrix packed once and used many times, on AVX-512F: the clustered
//! search packs a cluster's rows once and multiplies every query that probes the cluster by
//! them, reading each query in place rather than copying it.
//!
//! Through gemm the same search gathered every query row into a fresh matrix for each cluster it
//! probed, and gemm re-packed the cluster's rows for each block of 256 queries. With this kernel
//! (and the answers gathered in one flat array, `index/clustered.rs`), the 1M rank test
//! (`cargo run --release --example time_analyze -- 1000000 rank`) went from 34.5 s to 22.3 s on
//! the 2-core Xeon of docs/performance.md, the same flags and ranks.
//!
//! **Layout.** [`Panels`] holds `n` rows of `k` values as panels of [`WIDTH`] rows, each
//! `[k][WIDTH]` (value `t` of the panel's rows side by side); the last panel is only as wide as
//! the 16-row blocks it needs. The kernel keeps a tile of up to [`MR`] query rows × 4 blocks of
//! 16 sums in registers: 24 accumulators, 4 panel loads and one broadcast per row for each `t`,
//! as gemm's own AVX-512 kernel does. Each sum runs over `t` in order with one FMA per step, so
//! a product does not depend on which other rows share its tile.

/// Sums per register.
const LANES: usize = 16;
/// Rows of a panel: four registers of sums.
pub(crate) const WIDTH: usize = 4 * LANES;
/// Query rows per register tile.
pub(crate) const MR: usize = 6;

/// `n` rows of `k` values packed for [`Panels::product`]; the buffer is kept between
/// [`Panels::pack`] calls.
#[derive(Debug, Default)]
pub(crate) struct Panels {
    n: usize,
    k: usize,
    data: Vec<f32>,
}

impl Panels {
    /// Whether this CPU (and the process's kernel choice, [`super::kernel`]) runs the packed
    /// kernel; where it does not, callers use gemm.
    pub(crate) fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            super::kernel() == super::Kernel::Avx512
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Packs `rows` (each `k` values), replacing what was packed.
    pub(crate) fn pack<'a>(&mut self, k: usize, rows: impl ExactSizeIterator<Item = &'a [f32]>) {
        let n = rows.len();
        self.n = n;
        self.k = k;
        self.data.clear();
        self.data.resize(n.div_ceil(LANES) * LANES * k, 0.0);
        for (r, row) in rows.enumerate() {
            assert_eq!(row.len(), k, "packed rows differ in length");
            let (p, c) = (r / WIDTH, r % WIDTH);
            let width = self.width(p);
            let panel = &mut self.data[p * WIDTH * k..][..width * k];
            for (t, &v) in row.iter().enumerate() {
                panel[t * width + c] = v;
            }
        }
    }

    /// Rows packed.
    pub(crate) fn rows(&self) -> usize {
        self.n
    }

    /// Panel `p`'s width: [`WIDTH`], or the 16-row blocks the last one needs.
    fn width(&self, p: usize) -> usize {
        (self.n - p * WIDTH).min(WIDTH).div_ceil(LANES) * LANES
    }

    /// `out[i·ldo + j] = a[i] · row j`, for every packed row `j` and every query row `a[i]`
    /// (each `k` values), on the calling thread.
    ///
    /// # Panics
    /// Where [`Panels::available`] is false, a query row's length is not `k`, or `out` is too
    /// small.
    pub(crate) fn product(&self, a: &[&[f32]], out: &mut [f32], ldo: usize) {
        assert!(Self::available(), "the packed kernel needs AVX-512F");
        let (m, n, k) = (a.len(), self.n, self.k);
        assert!(a.iter().all(|r| r.len() == k), "query rows must have k values");
        assert!(ldo >= n && (m == 0 || out.len() >= (m - 1) * ldo + n), "product output too small");
        #[cfg(target_arch = "x86_64")]
        for p in 0..n.div_ceil(WIDTH) {
            let width = self.width(p);
            let panel = &self.data[p * WIDTH * k..][..width * k];
            let cols = (n - p * WIDTH).min(WIDTH);
            for (i, rows) in a.chunks(MR).enumerate() {
                let mut acc = [[0f32; WIDTH]; MR];
                // SAFETY: AVX-512F (asserted above); every row holds k values and the panel
                // width × k.
                unsafe { avx512::tile(rows, k, panel.as_ptr(), width / LANES, &mut acc) };
                for (r, acc) in acc.iter().enumerate().take(rows.len()) {
                    let at = (i * MR + r) * ldo + p * WIDTH;
                    out[at..at + cols].copy_from_slice(&acc[..cols]);
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (m, out);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{LANES, MR, WIDTH};
    use std::arch::x86_64::*;

    /// Dispatches `rows.len() ≤ MR` rows by `nb ≤ 4` blocks.
    ///
    /// # Safety
    /// AVX-512F present; every row holds `k` values; `b` holds `k × nb·16`.
    pub(super) unsafe fn tile(rows: &[&[f32]], k: usize, b: *const f32, nb: usize, acc: &mut [[f32; WIDTH]; MR]) {
        // SAFETY: as this function's.
        unsafe {
            crate::linalg::tile_dispatch!(
                rows.len(),
                nb,
                kernel::<M, N>(std::array::from_fn(|i| rows[i].as_ptr()), k, b, acc)
            )
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn kernel<const M: usize, const N: usize>(
        a: [*const f32; M],
        k: usize,
        b: *const f32,
        acc: &mut [[f32; WIDTH]; MR],
    ) {
        let mut c = [[_mm512_setzero_ps(); N]; M];
        for t in 0..k {
            let mut w = [_mm512_setzero_ps(); N];
            for (j, w) in w.iter_mut().enumerate() {
                // SAFETY: value t of block j lies inside the panel (the caller's contract).
                *w = unsafe { _mm512_loadu_ps(b.add((t * N + j) * LANES)) };
            }
            for (c, a) in c.iter_mut().zip(&a) {
                // SAFETY: t < k, and each row holds k values.
                let x = _mm512_set1_ps(unsafe { a.add(t).read() });
                for (c, w) in c.iter_mut().zip(&w) {
                    *c = _mm512_fmadd_ps(x, *w, *c);
                }
            }
        }
        for (row, c) in acc.iter_mut().zip(&c) {
            for (j, c) in c.iter().enumerate() {
                // SAFETY: 16 f32 at j·16 inside a row of WIDTH.
                unsafe { _mm512_storeu_ps(row[j * LANES..].as_mut_ptr(), *c) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn products_match_f64_for_partial_tiles_and_panels() {
        if !Panels::available() {
            eprintln!("skipped: the packed kernel needs AVX-512F and SIEVE_CPU_KERNEL allowing it");
            return;
        }
        let mut panels = Panels::default();
        // Partial row tiles (m not a multiple of 6), partial blocks and panels (n not a multiple
        // of 16 or 64), and a buffer reused for a smaller matrix after a larger one.
        for &(m, n, k) in &[(13, 150, 37), (1, 1, 1), (6, 64, 512), (20, 41, 512), (7, 17, 3)] {
            let a = lcg(m as u64 * 7 + 1, m * k);
            let b = lcg(n as u64 * 13 + 2, n * k);
            panels.pack(k, b.chunks(k));
            assert_eq!(panels.rows(), n);
            let rows: Vec<&[f32]> = a.chunks(k).collect();
            let ldo = n + 5;
            let mut out = vec![f32::NAN; m * ldo];
            panels.product(&rows, &mut out, ldo);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|t| a[i * k + t] as f64 * b[j * k + t] as f64).sum();
                    let abs: f64 = (0..k).map(|t| (a[i * k + t] as f64 * b[j * k + t] as f64).abs()).sum();
                    let got = out[i * ldo + j] as f64;
                    assert!(
                        (got - want).abs() <= abs * k as f64 * 1.2e-7 + 1e-9,
                        "({m},{n},{k}) [{i},{j}]: {got} vs {want}"
                    );
                }
                assert!(out[i * ldo + n..(i + 1) * ldo].iter().all(|v| v.is_nan()), "columns past n written");
            }
        }
    }

    #[test]
    fn a_product_does_not_depend_on_its_tile_neighbours() {
        if !Panels::available() {
            eprintln!("skipped: the packed kernel needs AVX-512F");
            return;
        }
        let (n, k) = (70, 64);
        let b = lcg(5, n * k);
        let a = lcg(6, 9 * k);
        let mut panels = Panels::default();
        panels.pack(k, b.chunks(k));
        let rows: Vec<&[f32]> = a.chunks(k).collect();
        let mut all = vec![0f32; 9 * n];
        panels.product(&rows, &mut all, n);
        for (i, row) in rows.iter().enumerate() {
            let mut one = vec![0f32; n];
            panels.product(&[row], &mut one, n);
            assert_eq!(one, all[i * n..(i + 1) * n], "row {i}");
        }
        // NaN in a query reaches only its own row.
        let mut bad = a.clone();
        bad[2 * k + 3] = f32::NAN;
        let rows: Vec<&[f32]> = bad.chunks(k).collect();
        panels.product(&rows, &mut all, n);
        for i in 0..9 {
            assert_eq!(all[i * n..(i + 1) * n].iter().all(|v| v.is_nan()), i == 2, "row {i}");
        }
    }
}
