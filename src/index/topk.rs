//! k-nearest-neighbour search helpers shared by the indexes: a small per-query top-k list, the
//! tiled exact scan, and merging of partial answers.

use gemm::Parallelism;
use rayon::prelude::*;

use super::Matrix;
use crate::linalg::matmul_wt;
use crate::linalg::panels::Panels;

/// One query's nearest indexed rows, most similar first: `(row, cosine)`.
pub type Neighbours = Vec<(u32, f32)>;

/// The `k` best `(row, sim)` seen so far, most similar first; ties keep the lower row.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    items: Vec<(u32, f32)>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        Self { k, items: Vec::with_capacity(k + 1) }
    }

    /// The similarity a new row must beat to enter (−∞ while not full, +∞ when k is 0).
    #[inline]
    pub fn floor(&self) -> f32 {
        if self.k == 0 {
            f32::INFINITY
        } else if self.items.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.items[self.k - 1].1
        }
    }

    #[inline]
    pub fn push(&mut self, row: u32, sim: f32) {
        if self.k == 0 || sim.is_nan() {
            return;
        }
        if self.items.len() == self.k {
            let (last_row, last_sim) = self.items[self.k - 1];
            if sim < last_sim || (sim == last_sim && row > last_row) {
                return;
            }
        }
        let at = self.items.partition_point(|&(r, s)| s > sim || (s == sim && r < row));
        self.items.insert(at, (row, sim));
        self.items.truncate(self.k);
    }

    pub fn into_vec(self) -> Neighbours {
        self.items
    }
}

/// Merges partial answers for one query (which may repeat rows) into its `k` best.
pub fn merge(parts: impl IntoIterator<Item = (u32, f32)>, k: usize) -> Neighbours {
    let mut all: Vec<(u32, f32)> = parts.into_iter().collect();
    // A repeated row keeps its best similarity (whichever order the parts came in).
    all.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
    all.dedup_by_key(|p| p.0);
    let mut top = TopK::new(k);
    for (r, s) in all {
        top.push(r, s);
    }
    top.into_vec()
}

/// Query rows per CPU tile and indexed rows per tile.
const ROWS: usize = 256;
const COLS: usize = 2048;

/// Exact k-NN of every query against `data` on the CPU (tiled gemm over rayon). `skip[q]` is a
/// row never returned for query `q` (the query itself in a self-search).
pub fn exact_knn_cpu(queries: &Matrix, data: &Matrix, k: usize, skip: Option<&[u32]>) -> Vec<Neighbours> {
    let nq = queries.rows();
    let blocks: Vec<usize> = (0..nq).step_by(ROWS).collect();
    let progress = crate::progress::Progress::new(blocks.len() as u64, "exact k-NN", "blocks");
    let per_block: Vec<Vec<Neighbours>> = blocks
        .par_iter()
        .map_init(
            || vec![0f32; ROWS * COLS],
            |tile, &r0| {
                let r1 = (r0 + ROWS).min(nq);
                let skip = skip.map(|s| &s[r0..r1]);
                let out = knn_block(queries.block(r0, r1), data.as_slice(), data.dim(), k, skip, tile);
                progress.inc(1);
                out
            },
        )
        .collect();
    per_block.into_iter().flatten().collect()
}

/// Buffers [`knn_gathered`] and [`knn_packed`] reuse from call to call: gathered query rows or
/// the packed indexed rows, and a tile of similarities.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    rows: Vec<f32>,
    tile: Vec<f32>,
    /// The indexed rows [`knn_packed`] searches: the caller packs them.
    pub(crate) panels: Panels,
}

/// Exact k-NN of the query rows `qs` of `queries` against the rows packed in `scratch.panels`,
/// on the calling thread, reading each query row in place (where [`Panels::available`]).
pub(crate) fn knn_packed(queries: &Matrix, qs: &[u32], k: usize, scratch: &mut Scratch) -> Vec<Neighbours> {
    /// Query rows per tile: 64 rows by a cluster's few hundred (at most a few thousand)
    /// similarities stay in L2.
    const BLOCK: usize = 64;
    let n = scratch.panels.rows();
    scratch.tile.resize(BLOCK * n, 0.0);
    let mut out = Vec::with_capacity(qs.len());
    let mut rows: Vec<&[f32]> = Vec::with_capacity(BLOCK);
    for block in qs.chunks(BLOCK) {
        rows.clear();
        rows.extend(block.iter().map(|&q| queries.row(q as usize)));
        scratch.panels.product(&rows, &mut scratch.tile, n);
        let mut tops: Vec<TopK> = (0..block.len()).map(|_| TopK::new(k)).collect();
        scan_tile(&scratch.tile[..block.len() * n], n, 0, 0, None, &mut tops);
        out.extend(tops.into_iter().map(TopK::into_vec));
    }
    out
}

/// [`knn_packed`] with the roles swapped, for a cluster probed by fewer queries than it has
/// rows: the query rows `qs` are packed into `scratch.panels` here and the indexed rows `ds` of
/// `data` are read in place, so packing copies the smaller side. Each similarity is the same sum
/// in the same order either way (one FMA per value, in order), so the answers are the same bits.
pub(crate) fn knn_packed_queries(
    queries: &Matrix,
    qs: &[u32],
    data: &Matrix,
    ds: &[u32],
    k: usize,
    scratch: &mut Scratch,
) -> Vec<Neighbours> {
    /// Indexed rows per tile.
    const BLOCK: usize = 128;
    let nq = qs.len();
    scratch.panels.pack(queries.dim(), qs.iter().map(|&q| queries.row(q as usize)));
    scratch.tile.resize(BLOCK * nq, 0.0);
    let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
    let mut rows: Vec<&[f32]> = Vec::with_capacity(BLOCK);
    for (b, block) in ds.chunks(BLOCK).enumerate() {
        rows.clear();
        rows.extend(block.iter().map(|&r| data.row(r as usize)));
        scratch.panels.product(&rows, &mut scratch.tile, nq);
        // The tile is indexed rows × queries: each query's similarities are a column.
        for (j, top) in tops.iter_mut().enumerate() {
            let mut floor = top.floor();
            for i in 0..block.len() {
                let s = scratch.tile[i * nq + j];
                if s >= floor {
                    top.push((b * BLOCK + i) as u32, s);
                    floor = top.floor();
                }
            }
        }
    }
    tops.into_iter().map(TopK::into_vec).collect()
}

/// Exact k-NN of the query rows `qs` of `queries` against `data` (`dim`-wide rows), on the
/// calling thread, in the same tiles [`exact_knn_cpu`] uses on those rows gathered (so the same
/// similarities), with `scratch`'s buffers instead of fresh ones: the clustered search calls
/// this once per cluster, and allocating (and the kernel clearing) megabytes of gathered rows and
/// tiles for each of thousands of clusters cost as much as a third of its time.
pub(crate) fn knn_gathered(
    queries: &Matrix,
    qs: &[u32],
    data: &[f32],
    dim: usize,
    k: usize,
    scratch: &mut Scratch,
) -> Vec<Neighbours> {
    scratch.tile.resize(ROWS * COLS, 0.0);
    let mut out = Vec::with_capacity(qs.len());
    for block in qs.chunks(ROWS) {
        scratch.rows.clear();
        for &q in block {
            scratch.rows.extend_from_slice(queries.row(q as usize));
        }
        out.extend(knn_block(&scratch.rows, data, dim, k, None, &mut scratch.tile));
    }
    out
}

/// The top-k lists of the query rows `q` (`skip[r]` a row never returned for the r-th) against
/// `data`, in tiles of [`COLS`] indexed rows.
fn knn_block(q: &[f32], data: &[f32], d: usize, k: usize, skip: Option<&[u32]>, tile: &mut [f32]) -> Vec<Neighbours> {
    let (m, nd) = (q.len() / d, data.len() / d);
    debug_assert!(m <= ROWS && tile.len() >= ROWS * COLS);
    let mut tops: Vec<TopK> = (0..m).map(|_| TopK::new(k)).collect();
    let mut c0 = 0;
    while c0 < nd {
        let c1 = (c0 + COLS).min(nd);
        let n = c1 - c0;
        matmul_wt(tile, q, &data[c0 * d..c1 * d], m, n, d, false, Parallelism::None);
        scan_tile(&tile[..m * n], n, 0, c0, skip, &mut tops);
        c0 = c1;
    }
    tops.into_iter().map(TopK::into_vec).collect()
}

/// Pushes one tile (`tops.len()` rows × `cols`) of similarities into the per-row top-k lists.
pub fn scan_tile(tile: &[f32], cols: usize, row0: usize, col0: usize, skip: Option<&[u32]>, tops: &mut [TopK]) {
    for (r, top) in tops.iter_mut().enumerate() {
        let line = &tile[r * cols..(r + 1) * cols];
        let skip_col = skip.map(|s| s[row0 + r] as usize);
        let mut floor = top.floor();
        for (c, &s) in line.iter().enumerate() {
            if s >= floor && Some(col0 + c) != skip_col {
                top.push((col0 + c) as u32, s);
                floor = top.floor();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_keeps_the_best_with_ties_to_the_lower_row() {
        let mut t = TopK::new(3);
        for (r, s) in [(5, 0.1), (2, 0.9), (7, 0.5), (1, 0.5), (9, 0.95), (3, 0.5)] {
            t.push(r, s);
        }
        assert_eq!(t.into_vec(), vec![(9, 0.95), (2, 0.9), (1, 0.5)]);
        let none = TopK::new(0);
        assert_eq!(none.floor(), f32::INFINITY);
        let data = crate::index::synthetic::planted(20, 8, 0.0, 1);
        assert!(exact_knn_cpu(&data, &data, 0, None).iter().all(Vec::is_empty), "k = 0: empty lists");
    }

    #[test]
    fn packed_searches_give_the_exact_answers_whichever_side_is_packed() {
        if !Panels::available() {
            eprintln!("skipped: the packed kernel needs AVX-512F (and SIEVE_CPU_KERNEL allowing it)");
            return;
        }
        use crate::index::synthetic::planted;
        let (queries, data) = (planted(300, 48, 0.0, 1), planted(700, 48, 0.0, 2));
        // Some queries and some indexed rows, out of order, as a cluster's are.
        let qs: Vec<u32> = (0..300).rev().step_by(3).collect();
        let ds: Vec<u32> = (0..700).filter(|r| r % 7 != 3).collect();
        let k = 10;
        let mut scratch = Scratch::default();
        scratch.panels.pack(48, ds.iter().map(|&r| data.row(r as usize)));
        let packed = knn_packed(&queries, &qs, k, &mut scratch);
        let swapped = knn_packed_queries(&queries, &qs, &data, &ds, k, &mut scratch);
        assert_eq!(packed, swapped, "the same sums whichever side is packed");
        let mut rows = Vec::new();
        for &r in &ds {
            rows.extend_from_slice(data.row(r as usize));
        }
        let gathered = knn_gathered(&queries, &qs, &rows, 48, k, &mut scratch);
        let (sub_q, sub_d) = (queries.gather_u32(&qs), data.gather_u32(&ds));
        assert_eq!(gathered, exact_knn_cpu(&sub_q, &sub_d, k, None), "the same tiles as the exact scan");
        for (p, g) in packed.iter().zip(&gathered) {
            assert_eq!(p.len(), k);
            assert_eq!(p.iter().map(|x| x.0).collect::<Vec<_>>(), g.iter().map(|x| x.0).collect::<Vec<_>>());
            for (a, b) in p.iter().zip(g) {
                assert!((a.1 - b.1).abs() <= 1e-5, "{a:?} vs {b:?}");
            }
        }
        // A cluster smaller than k, and an empty one.
        scratch.panels.pack(48, ds[..4].iter().map(|&r| data.row(r as usize)));
        assert!(knn_packed(&queries, &qs, k, &mut scratch).iter().all(|l| l.len() == 4));
        assert!(knn_packed_queries(&queries, &qs[..2], &data, &[], k, &mut scratch).iter().all(|l| l.is_empty()));
    }

    #[test]
    fn merge_drops_repeated_rows() {
        let got = merge([(4, 0.7), (2, 0.8), (4, 0.7), (1, 0.2)], 2);
        assert_eq!(got, vec![(2, 0.8), (4, 0.7)]);
    }
}
