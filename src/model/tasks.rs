//! The parallel task structure the int8 and bf16 linear layers share: the output rows a task
//! writes ([`OutRows`]), register tiles of up to [`MR`] rows × [`NR`] 16-channel blocks for the
//! AVX-512/AVX2/portable kernels ([`par_tiles`]), and 32 × 32 AMX tile blocks ([`par_amx`]).

use rayon::prelude::*;

/// Output channels per packed block (one 512-bit register of 4-byte sums).
pub(crate) const LANES: usize = 16;
/// Rows and blocks of one register tile: 6 × 4 accumulators, 4 weight registers and one
/// broadcast fit AVX-512's 32 registers.
pub(crate) const MR: usize = 6;
pub(crate) const NR: usize = 4;
/// Rows one parallel task covers (a multiple of [`MR`]); its weight panel stays in L2.
const ROWS_PER_TASK: usize = 8 * MR;

/// `dst` (`[m, n]` in rows `ldd` apart), written by parallel tasks that each own a disjoint
/// block of rows × channels.
pub(crate) struct OutRows {
    ptr: *mut f32,
    ldd: usize,
    m: usize,
    n: usize,
}

// SAFETY: tasks write disjoint blocks through [`OutRows::row`], whose contract says so.
unsafe impl Send for OutRows {}
unsafe impl Sync for OutRows {}

impl OutRows {
    /// Checks that `dst` holds `m` rows of `n` values, `ldd ≥ n` apart.
    pub(crate) fn new(dst: &mut [f32], ldd: usize, m: usize, n: usize) -> Self {
        assert!(ldd >= n, "matmul output rows overlap");
        assert!(m == 0 || dst.len() >= (m - 1) * ldd + n, "matmul output too small");
        Self { ptr: dst.as_mut_ptr(), ldd, m, n }
    }

    /// Columns `j0..j0 + cols` of row `row`.
    ///
    /// # Safety
    /// No other task reads or writes them while the slice lives.
    #[allow(clippy::mut_from_ref)] // disjoint blocks, as the contract says
    pub(crate) unsafe fn row(&self, row: usize, j0: usize, cols: usize) -> &mut [f32] {
        assert!(row < self.m && j0 + cols <= self.n, "matmul output index out of range");
        // SAFETY: inside `dst` (checked here and in `new`); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(row * self.ldd + j0), cols) }
    }
}

/// Calls `f(i, mr, b0, nb)` for every register tile of rows `i..i + mr` (`mr ≤ MR`) by blocks
/// `b0..b0 + nb` (`nb ≤ NR`) of `m` rows and `blocks` blocks, in parallel tasks of
/// [`ROWS_PER_TASK`] rows by one panel of [`NR`] blocks. Consecutive tasks share a weight panel,
/// so it is read from L2 by the tasks that follow.
pub(crate) fn par_tiles(m: usize, blocks: usize, f: impl Fn(usize, usize, usize, usize) + Sync) {
    let panels = blocks.div_ceil(NR);
    let row_tasks = m.div_ceil(ROWS_PER_TASK);
    (0..panels * row_tasks).into_par_iter().for_each(|t| {
        let (p, rt) = (t / row_tasks, t % row_tasks);
        let b0 = p * NR;
        let nb = NR.min(blocks - b0);
        let end = m.min((rt + 1) * ROWS_PER_TASK);
        let mut i = rt * ROWS_PER_TASK;
        while i < end {
            let mr = MR.min(end - i);
            f(i, mr, b0, nb);
            i += mr;
        }
    });
}

/// Calls `f(r0, pair)` for every AMX block of 32 rows from `r0` (of `rows`, a multiple of 32)
/// by block pair `pair` (32 channels of `n`), in parallel tasks of 32 rows by four pairs, with
/// the tiles configured on each task's thread and released after.
///
/// # Safety
/// AMX is present and granted ([`super::amx::available_bf16`] or `available_int8`).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(crate) unsafe fn par_amx(rows: usize, n: usize, f: impl Fn(usize, usize) + Sync) {
    const PAIRS_PER_TASK: usize = 4;
    debug_assert_eq!(rows % 32, 0);
    let pairs = n.div_ceil(2 * LANES);
    let panels = pairs.div_ceil(PAIRS_PER_TASK);
    let row_tasks = rows / 32;
    (0..panels * row_tasks).into_par_iter().for_each(|t| {
        let (p, rt) = (t / row_tasks, t % row_tasks);
        // SAFETY: AMX is present and granted (this function's contract).
        unsafe { super::amx::configure() };
        for pair in p * PAIRS_PER_TASK..pairs.min((p + 1) * PAIRS_PER_TASK) {
            f(rt * 32, pair);
        }
        // SAFETY: as configure's.
        unsafe { super::amx::release() };
    });
}
