//! Neighbour search over L2-normalised embeddings, behind one small trait: exact search
//! (blocked matrix products, never an N × N matrix in memory), HNSW (hnsw_rs), and the
//! SemDeDup-style clustered search that runs exact search inside k-means clusters.

pub mod clustered;
pub mod exact;
pub mod hnsw;
pub mod kmeans;
pub mod merge;
pub mod spill;
pub mod synthetic;
pub mod topk;

use std::str::FromStr;

use crate::error::{Error, Result};

pub use clustered::ClusteredIndex;
pub use exact::ExactIndex;
pub use hnsw::HnswIndex;
pub use topk::Neighbours;

/// Buffers from this size on are backed by transparent huge pages where Linux allows it
/// ([`huge_vec`]).
const HUGE_MIN_BYTES: usize = 64 << 20;

/// An empty `Vec<f32>` with room for `cap` values. A large one asks Linux for transparent huge
/// pages (`madvise(MADV_HUGEPAGE)`; the default `madvise` THP mode honours it), so filling it
/// takes one page fault per 2 MiB instead of per 4 KiB: writing a million 1024-d rows took 5.6 s
/// of mostly page faults on 2 cores without it.
pub fn huge_vec(cap: usize) -> Vec<f32> {
    let v = Vec::with_capacity(cap);
    #[cfg(target_os = "linux")]
    if cap * 4 >= HUGE_MIN_BYTES {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr() as usize;
        let (from, to) = (start.next_multiple_of(HUGE), (start + cap * 4) & !(HUGE - 1));
        if to > from {
            // SAFETY: the range lies inside the allocation `v` owns; the advice changes how the
            // kernel backs the pages, never their contents.
            unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
        }
    }
    v
}

/// Row-major f32 vectors of one width.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    dim: usize,
    data: Vec<f32>,
}

impl Matrix {
    pub fn new(dim: usize, data: Vec<f32>) -> Result<Self> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(Error::DimMismatch { expected: dim, found: data.len() % dim.max(1) });
        }
        Ok(Self { dim, data })
    }

    /// The given rows of `src` (row-major, `dim` wide), in that order.
    pub fn gather(src: &[f32], dim: usize, rows: &[usize]) -> Self {
        let mut data = huge_vec(rows.len() * dim);
        for &r in rows {
            data.extend_from_slice(&src[r * dim..(r + 1) * dim]);
        }
        Self { dim, data }
    }

    /// The given rows (`u32` indexes, as cluster member lists hold them), in that order.
    pub fn gather_u32(&self, rows: &[u32]) -> Self {
        let mut data = huge_vec(rows.len() * self.dim);
        for &r in rows {
            data.extend_from_slice(self.row(r as usize));
        }
        Self { dim: self.dim, data }
    }

    /// Rows `rows` (ascending) of this matrix: itself, borrowed, when that is all of them;
    /// otherwise a copy.
    pub fn select(&self, rows: &[usize]) -> std::borrow::Cow<'_, Self> {
        if rows.len() == self.rows() {
            std::borrow::Cow::Borrowed(self)
        } else {
            std::borrow::Cow::Owned(Self::gather(&self.data, self.dim, rows))
        }
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

    /// The rows, row-major, as one vector.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Rows `start..end` as a slice.
    pub fn block(&self, start: usize, end: usize) -> &[f32] {
        &self.data[start * self.dim..end * self.dim]
    }
}

/// Dot product. On x86-64 with AVX2 and FMA (checked once at run time) it uses a version
/// compiled for them; the portable build only has SSE2.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS_AVX2_FMA: OnceLock<bool> = OnceLock::new();
        if *HAS_AVX2_FMA.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_portable(a, b)
}

/// Written with independent accumulators so the compiler vectorises it.
#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..16 {
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

    /// [`Self::self_pairs`] handed to `f` in batches, in the same order; an index that can
    /// search piece by piece (exact search) holds only a batch at a time.
    fn self_pairs_each(&self, threshold: f32, f: &mut dyn FnMut(Vec<Pair>) -> Result<()>) -> Result<()> {
        f(self.self_pairs(threshold)?)
    }

    /// Every (query row, indexed row) with cosine ≥ `threshold`, sorted by `(a, b)`.
    fn range_search(&self, queries: &Matrix, threshold: f32) -> Result<Vec<Pair>>;

    /// The `k` indexed rows most similar to each query, most similar first (ties: lower row
    /// first). `skip[q]`, when given, is an indexed row never returned for query `q` (the query
    /// itself when searching a collection against itself). Approximate indexes may miss some.
    fn knn(&self, queries: &Matrix, k: usize, skip: Option<&[u32]>) -> Result<Vec<Neighbours>>;
}

/// `--index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum IndexChoice {
    Auto,
    Exact,
    Hnsw,
    /// SemDeDup-style: exact search inside k-means clusters.
    Clusters,
}

impl FromStr for IndexChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "exact" => Ok(Self::Exact),
            "hnsw" => Ok(Self::Hnsw),
            "clusters" => Ok(Self::Clusters),
            _ => Err(Error::InvalidArg {
                what: "--index",
                reason: format!("`{s}`: expected auto, exact, hnsw or clusters"),
            }),
        }
    }
}

/// Largest collection `auto` searches exactly on the CPU (about 2 s on 2 cores at 512-d).
/// Beyond it `auto` uses clustered search: on 100k planted 512-d vectors
/// (`scripts/bench_vs_faiss.py`, 2-core AVX2) exact took 39 s, clustered 2.5 s with the same
/// pairs, and HNSW (hnsw_rs) 163 s for recall 0.996.
pub const AUTO_EXACT_MAX_CPU: usize = 20_000;
/// On a GPU exact search is a handful of large matrix products; it should stay the faster one
/// far longer (an estimate from the GPU's matmul rate, not yet measured on a device).
pub const AUTO_EXACT_MAX_GPU: usize = 2_000_000;

/// Clusters used when none are given: about 1,000 vectors per cluster.
pub fn default_clusters(n: usize) -> usize {
    (n / 1000).max(1)
}

impl IndexChoice {
    /// The concrete kind for `n` vectors on `device`.
    pub fn resolve(self, n: usize, device: &candle_core::Device) -> IndexChoice {
        match self {
            Self::Auto => {
                let max = if device.is_cpu() { AUTO_EXACT_MAX_CPU } else { AUTO_EXACT_MAX_GPU };
                if n <= max {
                    Self::Exact
                } else {
                    Self::Clusters
                }
            }
            other => other,
        }
    }
}

/// The search a command runs over a collection: the one choice that dedup (range search) and
/// score, diversity and select (k-NN) share. Each builds its own flavour of the index chosen:
/// dedup's clusters carry border copies and default to [`default_clusters`]; k-NN's probe
/// several clusters and default to a count balanced against the queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Exact,
    Hnsw,
    /// Clustered search with this many clusters, or the caller's default (`None`).
    Clusters(Option<usize>),
}

impl Plan {
    /// The search for `rows` vectors on `device`, given `--index` and `--clusters`: exact below
    /// two vectors (nothing to cluster), clustered whenever a cluster count is given, else what
    /// `index` resolves to.
    pub fn choose(index: IndexChoice, clusters: Option<usize>, rows: usize, device: &candle_core::Device) -> Self {
        if rows < 2 {
            return Plan::Exact;
        }
        if let Some(k) = clusters {
            return Plan::Clusters(Some(k));
        }
        match index.resolve(rows, device) {
            IndexChoice::Hnsw => Plan::Hnsw,
            IndexChoice::Clusters => Plan::Clusters(None),
            _ => Plan::Exact,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_never_picks_hnsw() {
        // HNSW hands all its pairs at once (dedup holds them); exact and clustered search stream.
        for n in [0, 2, AUTO_EXACT_MAX_CPU, AUTO_EXACT_MAX_CPU + 1, 10_000_000] {
            let got = IndexChoice::Auto.resolve(n, &candle_core::Device::Cpu);
            let want = if n <= AUTO_EXACT_MAX_CPU { IndexChoice::Exact } else { IndexChoice::Clusters };
            assert_eq!(got, want, "{n} vectors");
        }
    }
}
