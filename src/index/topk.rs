//! k-nearest-neighbour search helpers shared by the indexes: a small per-query top-k list, the
//! tiled exact scan, and merging of partial answers.

use gemm::Parallelism;
use rayon::prelude::*;

use super::Matrix;
use crate::linalg::matmul_wt;

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

    /// The similarity a new row must beat to enter (−∞ while not full).
    #[inline]
    pub fn floor(&self) -> f32 {
        if self.items.len() < self.k {
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
    all.sort_unstable_by_key(|p| p.0);
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
    let d = data.dim();
    let (nq, nd) = (queries.rows(), data.rows());
    let blocks: Vec<usize> = (0..nq).step_by(ROWS).collect();
    let progress = crate::progress::Progress::new(blocks.len() as u64, "exact k-NN", "blocks");
    let per_block: Vec<Vec<Neighbours>> = blocks
        .par_iter()
        .map_init(
            || vec![0f32; ROWS * COLS],
            |tile, &r0| {
                let r1 = (r0 + ROWS).min(nq);
                let mut tops: Vec<TopK> = (r0..r1).map(|_| TopK::new(k)).collect();
                let mut c0 = 0;
                while c0 < nd {
                    let c1 = (c0 + COLS).min(nd);
                    let (m, n) = (r1 - r0, c1 - c0);
                    matmul_wt(tile, queries.block(r0, r1), data.block(c0, c1), m, n, d, false, Parallelism::None);
                    scan_tile(&tile[..m * n], n, r0, c0, skip, &mut tops);
                    c0 = c1;
                }
                progress.inc(1);
                tops.into_iter().map(TopK::into_vec).collect()
            },
        )
        .collect();
    per_block.into_iter().flatten().collect()
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
    }

    #[test]
    fn merge_drops_repeated_rows() {
        let got = merge([(4, 0.7), (2, 0.8), (4, 0.7), (1, 0.2)], 2);
        assert_eq!(got, vec![(2, 0.8), (4, 0.7)]);
    }
}
