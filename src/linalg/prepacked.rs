//! A linear layer's weight packed once, in the panel layout gemm's own x86 microkernels read,
//! for products `x · Wᵀ` against it many times (the fused CPU encoder layer).
//!
//! gemm packs the rows of W it multiplies by into panels of `MR` rows (`[depth][MR]`, one
//! block of depth at a time) on every call. For ViT-B/32's image tower at batch 8 that copy was
//! 13% of sieve's CPU time (`perf`; it is the same work whatever the batch, so it weighs most at
//! small batches). [`PackedWeight`] does it once, at load, and then calls the same
//! microkernels (`gemm_f32::microkernel::{avx512f, fma}`) over the same blocks of depth, with
//! the same `alpha`/`beta` gemm would pass: each output is the same sum in the same order, so
//! products are bit-identical to [`super::matmul_wt_on`]'s (tested). Where gemm would take
//! another path (one row of x, products of at most 64×64, AVX-512's horizontal kernel for tiny
//! ones, depth ≤ 2), [`PackedWeight::matmul`] unpacks W and calls gemm, so those stay identical
//! too.
//!
//! The packed copy replaces the f32 weight (`model::layers`), so memory does not grow: the
//! panels hold W's values, padded with zeros to whole panels, and [`PackedWeight::unpack`]
//! gives W back exactly.

use gemm::Parallelism;

use super::{for_each_block, matmul_wt_on, span, split_product, Kernel, SendPtr};

/// One cache line of f32, so that panels start 64-byte aligned, as gemm's own buffers do.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// The shape of a kernel's microkernel table: `N` lanes per register, `MR = MR_DIV_N · N` rows
/// of W per panel, `NR` rows of x per call.
#[derive(Clone, Copy, Debug)]
struct Tile {
    n: usize,
    mr: usize,
    nr: usize,
}

impl Tile {
    fn of(kernel: Kernel) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            use gemm_f32::microkernel::{avx512f::f32 as avx512, fma::f32 as fma};
            match kernel {
                Kernel::Avx512 => Some(Tile { n: 16, mr: avx512::MR_DIV_N * 16, nr: avx512::NR }),
                Kernel::Avx2 => Some(Tile { n: 8, mr: fma::MR_DIV_N * 8, nr: fma::NR }),
                Kernel::Other => None,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = kernel;
            None
        }
    }

    /// The microkernel for an `m × n` tile (`m ≤ mr`, `n ≤ nr`).
    #[cfg(target_arch = "x86_64")]
    fn microkernel(&self, kernel: Kernel, m: usize, n: usize) -> gemm_common::microkernel::MicroKernelFn<f32> {
        use gemm_f32::microkernel::{avx512f::f32 as avx512, fma::f32 as fma};
        let row = m.div_ceil(self.n) - 1;
        match kernel {
            Kernel::Avx512 => avx512::UKR[row][n - 1],
            _ => fma::UKR[row][n - 1],
        }
    }
}

/// W (`n` rows of `k`) in panels of `mr` rows: for each block of depth `[d, d + kc)` in turn,
/// each panel as `[depth][mr]`, rows past `n` zero.
#[derive(Debug, Clone)]
pub(crate) struct PackedWeight {
    kernel: Kernel,
    tile: Tile,
    n: usize,
    k: usize,
    /// gemm's block of depth for this `k` (`gemm_common::cache::kernel_params`).
    kc: usize,
    lines: Vec<Line>,
}

impl PackedWeight {
    /// Packs `w` (`n × k`, row-major) for `kernel`; `None` where the kernel has no packed path
    /// (gemm's generic kernels).
    pub(crate) fn new(kernel: Kernel, w: &[f32], n: usize, k: usize) -> Option<Self> {
        assert_eq!(w.len(), n * k, "weight is not {n}×{k}");
        let tile = Tile::of(kernel)?;
        if n == 0 || k == 0 {
            return None;
        }
        // gemm's block of depth depends only on k, the tile and the caches, not on how many rows
        // of x come (any count past 64 takes this path).
        let kc = gemm_common::cache::kernel_params(n, 128, k, tile.mr, tile.nr, 4).kc;
        let panels = n.div_ceil(tile.mr);
        let len = panels * tile.mr * k;
        let mut lines = vec![Line([0.0; 16]); len.div_ceil(16)];
        let mut packed = Self { kernel, tile, n, k, kc, lines: Vec::new() };
        let data = &mut as_floats_mut(&mut lines)[..len];
        for (from, to, depth) in packed.runs() {
            for (d, &v) in w[from..from + depth].iter().enumerate() {
                data[to + d * tile.mr] = v;
            }
        }
        packed.lines = lines;
        Some(packed)
    }

    /// W's rows cut at the blocks of depth: for each run of `depth` values from `from` in W,
    /// `to` is where the first lands in the packed data and the next follow `mr` apart.
    fn runs(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let (mr, panels) = (self.tile.mr, self.n.div_ceil(self.tile.mr));
        (0..self.k.div_ceil(self.kc)).flat_map(move |c| {
            let (start, depth) = self.block(c);
            (0..self.n).map(move |r| (r * self.k + start, start * panels * mr + (r / mr) * depth * mr + r % mr, depth))
        })
    }

    /// Block of depth `c`: its first depth and its length.
    fn block(&self, c: usize) -> (usize, usize) {
        let start = c * self.kc;
        (start, self.kc.min(self.k - start))
    }

    /// W's rows.
    pub(crate) fn rows(&self) -> usize {
        self.n
    }

    /// W as it was packed (`n × k`, row-major).
    pub(crate) fn unpack(&self) -> Vec<f32> {
        let data = as_floats(&self.lines);
        let mut w = vec![0f32; self.n * self.k];
        for (to, from, depth) in self.runs() {
            for (d, v) in w[to..to + depth].iter_mut().enumerate() {
                *v = data[from + d * self.tile.mr];
            }
        }
        w
    }

    /// Whether gemm takes its general (packed-panel) path for `m` rows of x, which is the one
    /// [`Self::matmul`] reproduces; see gemm_common's `gemm_basic_generic`.
    fn general(&self, m: usize) -> bool {
        let (n, k) = (self.n, self.k);
        let horizontal = self.kernel == Kernel::Avx512 && m * n <= 16 * 16;
        k > 2 && m > 1 && n > 1 && (m > 64 || n > 64) && !horizontal
    }

    /// `dst[m×n] (+)= x[m×k] · Wᵀ`, rows of dst `ldd` apart: bit-identical to
    /// [`super::matmul_wt_on`] on the unpacked W with the same kernel.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn matmul(
        &self,
        dst: &mut [f32],
        ldd: usize,
        x: &[f32],
        m: usize,
        accumulate: bool,
        parallelism: Parallelism,
    ) {
        let (n, k) = (self.n, self.k);
        assert!(ldd >= n && x.len() >= m * k, "gemm operands too small");
        assert!(m == 0 || dst.len() >= (m - 1) * ldd + n, "gemm operands too small");
        if m == 0 {
            return;
        }
        if !self.general(m) {
            let w = self.unpack();
            matmul_wt_on(self.kernel, dst, ldd, x, &w, m, n, k, accumulate, parallelism);
            return;
        }
        let mr = self.tile.mr;
        let panels = n.div_ceil(mr);
        let (col_parts, row_parts) = split_product(m, n, k, parallelism);
        // Blocks of whole panels (at least 128 of W's rows each, see `split_product`).
        let panel_step = (panels / col_parts).max(1);
        let row_step = m / row_parts;
        let dst = SendPtr(dst.as_mut_ptr());
        let dst = &dst;
        for_each_block(col_parts, row_parts, |c, r| {
            let (p0, count) = span(c, col_parts, panel_step, panels);
            let (r0, rows) = span(r, row_parts, row_step, m);
            // SAFETY: the block's rows of x and dst and its panels lie inside the bounds
            // checked above; blocks run at the same time write disjoint parts of dst.
            unsafe { self.block_product(dst.0, ldd, x, r0, rows, p0, p0 + count, accumulate) }
        });
    }

    /// Rows `r0..r0 + rows` of x against panels `p0..p1` of W, on this thread, in gemm's order:
    /// block of depth by block of depth; within one, groups of up to 8 panels (gemm's `mc`),
    /// each against every `NR` rows of x.
    ///
    /// # Safety
    /// `dst` must be valid for rows `r0..r0 + rows` (`ldd` apart) over W's rows in the panels,
    /// `x` must hold those rows, and no one else may write that part of `dst` meanwhile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn block_product(
        &self,
        dst: *mut f32,
        ldd: usize,
        x: &[f32],
        r0: usize,
        rows: usize,
        p0: usize,
        p1: usize,
        accumulate: bool,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            let Tile { mr, nr, .. } = self.tile;
            let panels = self.n.div_ceil(mr);
            let data = as_floats(&self.lines).as_ptr();
            // SAFETY: the caller's contract for dst and x; each panel read lies inside the
            // packed data (block `c` starts at `start · panels · mr` and holds `panels` panels of
            // `depth · mr` values); the microkernels run only on the kernel the weight was
            // packed for, which `Kernel::available` found on this CPU.
            unsafe {
                for c in 0..self.k.div_ceil(self.kc) {
                    let (start, depth) = self.block(c);
                    // gemm's alpha: 0 (overwrite) for the first block unless dst is read, then 1.
                    let (alpha, alpha_status) = if c == 0 && !accumulate { (0.0, 0) } else { (1.0, 1) };
                    let chunk = data.add(start * panels * mr);
                    for g in (p0..p1).step_by(8) {
                        for j in (0..rows).step_by(nr) {
                            let cols = nr.min(rows - j);
                            let row = r0 + j;
                            for p in g..(g + 8).min(p1) {
                                let height = mr.min(self.n - p * mr);
                                let kernel = self.tile.microkernel(self.kernel, height, cols);
                                kernel(
                                    height,
                                    cols,
                                    depth,
                                    dst.add(row * ldd + p * mr),
                                    chunk.add(p * depth * mr),
                                    x.as_ptr().add(row * self.k + start),
                                    ldd as isize,
                                    1,
                                    mr as isize,
                                    1,
                                    self.k as isize,
                                    alpha,
                                    1.0,
                                    alpha_status,
                                    false,
                                    false,
                                    false,
                                    std::ptr::null(),
                                );
                            }
                        }
                    }
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (dst, ldd, x, r0, rows, p0, p1, accumulate);
            unreachable!("PackedWeight is only built on x86-64");
        }
    }
}

fn as_floats(lines: &[Line]) -> &[f32] {
    // SAFETY: `Line` is `repr(C)` over `[f32; 16]` with no padding (64 bytes, align 64).
    unsafe { std::slice::from_raw_parts(lines.as_ptr().cast::<f32>(), lines.len() * 16) }
}

fn as_floats_mut(lines: &mut [Line]) -> &mut [f32] {
    // SAFETY: as in `as_floats`.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<f32>(), lines.len() * 16) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Products against the packed weight are bit-identical to gemm's on the unpacked one, on
    /// every x86 kernel, overwriting and accumulating, into a wider destination, split among
    /// threads or not; on shapes with ragged panels, several blocks of depth, and the small
    /// ones that fall back to gemm; and unpacking gives W back exactly.
    #[test]
    fn packed_products_are_bit_identical_to_gemm() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let shapes = [
            (400, 768, 3072),
            (200, 300, 1000),
            (130, 100, 70),
            (65, 40, 600),
            (1, 512, 512),
            (7, 60, 33),
            (3, 20, 2),
            (90, 1000, 5),
        ];
        let mut packed_any = 0;
        for &(m, n, k) in &shapes {
            let w: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let ldd = n + 3;
            let base: Vec<f32> = (0..m * ldd).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            for kernel in Kernel::available() {
                let Some(packed) = PackedWeight::new(kernel, &w, n, k) else {
                    assert_eq!(kernel, Kernel::Other);
                    continue;
                };
                assert_eq!(packed.unpack(), w, "{kernel:?} {n}×{k}: unpacked W differs");
                packed_any += packed.general(m) as usize;
                for accumulate in [false, true] {
                    for threads in [1, 2, 3] {
                        let par = if threads == 1 { Parallelism::None } else { Parallelism::Rayon(threads) };
                        let mut want = base.clone();
                        matmul_wt_on(kernel, &mut want, ldd, &x, &w, m, n, k, accumulate, par);
                        let mut got = base.clone();
                        packed.matmul(&mut got, ldd, &x, m, accumulate, par);
                        let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "{kernel:?} {m}×{n}×{k} accumulate={accumulate} threads={threads}");
                    }
                }
            }
        }
        if Kernel::available().len() > 1 {
            assert!(packed_any >= 4, "the packed path itself ran on too few shapes: {packed_any}");
        }
    }
}
