//! Neighbour search over L2-normalised embeddings, behind one small trait: exact search
//! (blocked matrix products, never an N × N matrix in memory), HNSW (hnsw_rs), and the
//! SemDeDup-style clustered search that runs exact search inside k-means clusters.

pub mod clustered;
pub mod exact;
pub mod hnsw;
pub mod kmeans;
pub mod synthetic;

use std::str::FromStr;

use crate::error::{Error, Result};

pub use clustered::ClusteredIndex;
pub use exact::ExactIndex;
pub use hnsw::HnswIndex;

/// Row-major f32 vectors of one width.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    dim: usize,
    data: Vec<f32>,
}

impl Matrix {
    pub fn new(dim: usize, data: Vec<f32>) -> Result<Self> {
        if dim == 0 || data.len() % dim != 0 {
            return Err(Error::DimMismatch { expected: dim, found: data.len() % dim.max(1) });
        }
        Ok(Self { dim, data })
    }

    /// The given rows of `src` (row-major, `dim` wide), in that order.
    pub fn gather(src: &[f32], dim: usize, rows: &[usize]) -> Self {
        let mut data = Vec::with_capacity(rows.len() * dim);
        for &r in rows {
            data.extend_from_slice(&src[r * dim..(r + 1) * dim]);
        }
        Self { dim, data }
    }

    pub fn rows(&self) -> usize {
        self.data.len() / self.dim
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// Rows `start..end` as a slice.
    pub fn block(&self, start: usize, end: usize) -> &[f32] {
        &self.data[start * self.dim..end * self.dim]
    }
}

/// Dot product, written so the compiler vectorises it.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Two items whose cosine similarity reached the threshold. In self-search `a < b`; in range
/// search `a` is the query row and `b` the indexed row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    pub a: u32,
    pub b: u32,
    pub sim: f32,
}

/// Sorts pairs by `(a, b)` and drops repeats (keeping the lowest similarity, so the result does
/// not depend on which search found a pair first).
pub fn sort_dedup(pairs: &mut Vec<Pair>) {
    pairs.sort_unstable_by(|x, y| (x.a, x.b).cmp(&(y.a, y.b)).then(x.sim.total_cmp(&y.sim)));
    pairs.dedup_by_key(|p| (p.a, p.b));
}

/// What every neighbour index answers.
pub trait NeighbourIndex: Send + Sync {
    /// Short name for logs and summaries, e.g. `exact(cpu)`.
    fn name(&self) -> String;

    /// Number of indexed vectors.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every pair `a < b` of indexed vectors with cosine ≥ `threshold`, sorted by `(a, b)`.
    fn self_pairs(&self, threshold: f32) -> Result<Vec<Pair>>;

    /// Every (query row, indexed row) with cosine ≥ `threshold`, sorted by `(a, b)`.
    fn range_search(&self, queries: &Matrix, threshold: f32) -> Result<Vec<Pair>>;
}

/// `--index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexChoice {
    Auto,
    Exact,
    Hnsw,
}

impl FromStr for IndexChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "exact" => Ok(Self::Exact),
            "hnsw" => Ok(Self::Hnsw),
            _ => Err(Error::InvalidArg { what: "--index", reason: format!("`{s}`: expected auto, exact or hnsw") }),
        }
    }
}

/// Largest collection `auto` searches exactly on the CPU. Measured with `benches/search.rs` on a
/// 2-core AVX2 machine: exact self-search costs ~N² and HNSW (build + query) ~N log N, and HNSW
/// becomes the faster one around this size.
pub const AUTO_EXACT_MAX_CPU: usize = 60_000;
/// On a GPU exact search is a handful of large matrix products; it stays faster (and exact) far
/// longer, bounded by memory rather than time.
pub const AUTO_EXACT_MAX_GPU: usize = 4_000_000;

impl IndexChoice {
    /// The concrete kind for `n` vectors on `device`.
    pub fn resolve(self, n: usize, device: &candle_core::Device) -> IndexChoice {
        match self {
            Self::Auto => {
                let max = if device.is_cpu() { AUTO_EXACT_MAX_CPU } else { AUTO_EXACT_MAX_GPU };
                if n <= max {
                    Self::Exact
                } else {
                    Self::Hnsw
                }
            }
            other => other,
        }
    }
}
