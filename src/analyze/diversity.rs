//! `sieve diversity`: how diverse a run's images, captions and image-caption pairs are, for the
//! whole run and per group of a metadata column.
//!
//! - **Vendi score** (Friedman & Dieng 2022) with the cosine kernel `K = X Xᵀ` over L2-normalised
//!   rows: the exponential of the entropy of the eigenvalues of `K / n`. Those are the nonzero
//!   eigenvalues of the d×d matrix `Xᵀ X / n`, so it is exact at any n for the cost of one pass
//!   of `d × d` products over the rows and one `d × d` eigendecomposition. Orders q = 1
//!   (Shannon), 2 and ∞ (`1 / λ_max`). It reads as an effective number of distinct items: k
//!   orthogonal directions, each repeated any number of times, score exactly k.
//! - **Effective rank** (Roy & Vetterli 2007): the exponential of the entropy of the normalised
//!   singular values of `X`.
//! - **Cluster entropy and coverage** over seeded spherical k-means clusters of the whole run:
//!   the entropy of the cluster sizes (and `exp` of it, an effective number of clusters), and the
//!   share of clusters that hold at least `min_share` of an even share of the items. Groups are
//!   measured against the whole run's clusters, so their figures compare.
//! - **Nearest-neighbour similarity**: each item's cosine to its most similar other item, mean and
//!   percentiles (exact up to `nn_queries` items; beyond, a seeded sample of that many queries
//!   searched in their nearest clusters).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::common::{lenient, percentile, Embedded, PERCENTILES};
use crate::device::{self, DeviceSpec};
use crate::error::{Error, Result};
use crate::index::kmeans::{self, KMeansParams, Top2};
use crate::index::{ClusteredIndex, ExactIndex, Matrix, NeighbourIndex, AUTO_EXACT_MAX_CPU, AUTO_EXACT_MAX_GPU};
use crate::linalg::matmul_tn;
use crate::store::{write_atomic, Layout, Run};

/// Default number of k-means clusters for entropy and coverage.
pub const DEFAULT_CLUSTERS: usize = 100;
/// Default `min_share`: a cluster counts as covered when it holds a tenth of an even share.
pub const DEFAULT_MIN_SHARE: f64 = 0.1;
/// Default number of nearest-neighbour queries (all items up to this many).
pub const DEFAULT_NN_QUERIES: usize = 10_000;
/// Most groups `--by` accepts.
pub const MAX_GROUPS: usize = 1000;

/// Everything `sieve diversity` needs, validated.
#[derive(Debug, Clone, Serialize)]
pub struct DiversityOptions {
    pub run: PathBuf,
    /// Metadata column to group by (`folder`: the folder part of the uri).
    pub by: Option<String>,
    pub clusters: usize,
    pub min_share: f64,
    pub nn_queries: usize,
    /// Clusters each sampled nearest-neighbour query searches.
    pub probes: usize,
    pub seed: u64,
    pub device: DeviceSpec,
}

impl DiversityOptions {
    pub fn new(run: impl Into<PathBuf>) -> Self {
        Self {
            run: run.into(),
            by: None,
            clusters: DEFAULT_CLUSTERS,
            min_share: DEFAULT_MIN_SHARE,
            nn_queries: DEFAULT_NN_QUERIES,
            probes: crate::index::clustered::DEFAULT_PROBES,
            seed: 0,
            device: DeviceSpec::Auto,
        }
    }
}

/// Vendi scores of orders 1, 2 and ∞.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Vendi {
    #[serde(deserialize_with = "lenient::f64")]
    pub q1: f64,
    #[serde(deserialize_with = "lenient::f64")]
    pub q2: f64,
    #[serde(deserialize_with = "lenient::f64")]
    pub inf: f64,
}

/// Nearest-neighbour similarity statistics.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct NnSimilarity {
    #[serde(deserialize_with = "lenient::f64")]
    pub mean: f64,
    #[serde(deserialize_with = "lenient::f32_map")]
    pub percentiles: BTreeMap<String, f32>,
    /// Items whose nearest neighbour was searched.
    pub queries: usize,
    /// Whether every item was a query and the search exact.
    pub exact: bool,
}

/// Cluster-size statistics of a set of items over `k` clusters.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ClusterStats {
    /// Entropy of the cluster sizes, in nats.
    #[serde(deserialize_with = "lenient::f64")]
    pub entropy: f64,
    /// `entropy / ln k` (1: perfectly even).
    #[serde(deserialize_with = "lenient::f64")]
    pub entropy_normalised: f64,
    /// `exp(entropy)`: an effective number of clusters.
    #[serde(deserialize_with = "lenient::f64")]
    pub effective_clusters: f64,
    /// Share of the k clusters holding at least `min_share` of an even share of the items.
    #[serde(deserialize_with = "lenient::f64")]
    pub coverage: f64,
    pub clusters_covered: usize,
}

/// The diversity of one set of vectors.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Metrics {
    pub items: usize,
    pub vendi: Vendi,
    #[serde(deserialize_with = "lenient::f64")]
    pub effective_rank: f64,
    pub clusters: ClusterStats,
    /// `None` for fewer than two items.
    pub nn_similarity: Option<NnSimilarity>,
}

/// Metrics per embedding; `None` where the run has no captions.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Modalities {
    pub items: usize,
    pub image: Option<Metrics>,
    pub text: Option<Metrics>,
    pub joint: Option<Metrics>,
}

/// One group of `--by`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Group {
    /// The column's value (`null` for rows without one).
    pub value: Option<String>,
    #[serde(flatten)]
    pub metrics: Modalities,
}

/// `diversity.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Report {
    pub sieve_version: String,
    pub run: String,
    /// The fingerprint of the run this was computed from ([`crate::store::Run::fingerprint`]);
    /// readers refuse or recompute an output whose fingerprint is not their run's.
    pub run_fingerprint: String,
    pub model: String,
    pub embedded: usize,
    pub with_caption: usize,
    pub clusters: usize,
    #[serde(deserialize_with = "lenient::f64")]
    pub coverage_min_share: f64,
    pub nn_queries: usize,
    pub seed: u64,
    pub overall: Modalities,
    pub by: Option<String>,
    pub groups: Vec<Group>,
}

/// Rows per Gram block.
const GRAM_BLOCK: usize = 2048;
/// Columns per Gram tile: only tiles on or above the diagonal are computed (62.5% of the
/// products at d = 512), the rest mirrored.
const GRAM_COLS: usize = 128;

/// `Σ xᵢ xᵢᵀ` over the given rows (all when `None`), d×d row-major, accumulated in f64.
pub fn gram_sum(x: &Matrix, rows: Option<&[usize]>) -> Vec<f64> {
    outer_sum(x, None, rows)
}

/// `Σ aᵢ bᵢᵀ` over the given rows (all when `None`) of two matrices of one shape: d×d row-major,
/// accumulated in f64. The joint embedding's Gram matrix is made of these blocks (see
/// [`joint_gram`]).
pub fn cross_gram_sum(a: &Matrix, b: &Matrix, rows: Option<&[usize]>) -> Vec<f64> {
    assert_eq!((a.rows(), a.dim()), (b.rows(), b.dim()), "cross Gram of matrices of one shape");
    outer_sum(a, Some(b), rows)
}

/// The Gram matrix of the joint rows `[aᵢ, bᵢ] / √2` from `Σ aaᵀ`, `Σ bbᵀ` and `Σ abᵀ` (each d×d):
/// `½ [[Σ aaᵀ, Σ abᵀ], [Σ baᵀ, Σ bbᵀ]]`, 2d×2d. Cheaper than summing over 2d-wide rows: the
/// two diagonal blocks are the image and caption Gram matrices already computed, and the cross
/// block costs a quarter of the joint matrix's products.
pub fn joint_gram(aa: &[f64], bb: &[f64], ab: &[f64], d: usize) -> Vec<f64> {
    let w = 2 * d;
    let mut g = vec![0f64; w * w];
    for i in 0..d {
        for j in 0..d {
            g[i * w + j] = 0.5 * aa[i * d + j];
            g[(d + i) * w + d + j] = 0.5 * bb[i * d + j];
            g[i * w + d + j] = 0.5 * ab[i * d + j];
            g[(d + j) * w + i] = 0.5 * ab[i * d + j];
        }
    }
    g
}

/// Rows `b0..b1` of `x` (of the picked `rows` when given), as one slice.
fn rows_block<'x>(x: &'x Matrix, rows: Option<&[usize]>, b0: usize, b1: usize, buf: &'x mut Vec<f32>) -> &'x [f32] {
    match rows {
        None => x.block(b0, b1),
        Some(r) => {
            buf.clear();
            for &i in &r[b0..b1] {
                buf.extend_from_slice(x.row(i));
            }
            buf
        }
    }
}

/// `Σ aᵢ bᵢᵀ` (`b = a` when `None`, computing only the tiles on or above the diagonal and
/// mirroring the rest).
fn outer_sum(a: &Matrix, b: Option<&Matrix>, rows: Option<&[usize]>) -> Vec<f64> {
    let d = a.dim();
    let n = rows.map_or(a.rows(), <[usize]>::len);
    let starts: Vec<usize> = (0..n).step_by(GRAM_BLOCK).collect();
    let chunks: Vec<(usize, usize)> = (0..d).step_by(GRAM_COLS).map(|c| (c, (c + GRAM_COLS).min(d))).collect();
    let progress = crate::progress::Progress::new(starts.len() as u64, "Gram matrix", "blocks");
    let mut acc = starts
        .par_iter()
        .fold(
            || (vec![0f64; d * d], vec![0f32; d * d], Vec::<f32>::new(), Vec::<f32>::new()),
            |(mut acc, mut tile, mut lbuf, mut rbuf), &b0| {
                let b1 = (b0 + GRAM_BLOCK).min(n);
                let left = rows_block(a, rows, b0, b1, &mut lbuf);
                let right = match b {
                    None => left,
                    Some(b) => rows_block(b, rows, b0, b1, &mut rbuf),
                };
                for (ci, &(i0, i1)) in chunks.iter().enumerate() {
                    let from = if b.is_none() { ci } else { 0 };
                    for &(j0, j1) in &chunks[from..] {
                        let dst = &mut tile[i0 * d + j0..];
                        matmul_tn(dst, d, &left[i0..], d, &right[j0..], d, b1 - b0, i1 - i0, j1 - j0);
                        for i in i0..i1 {
                            for j in j0..j1 {
                                acc[i * d + j] += tile[i * d + j] as f64;
                            }
                        }
                    }
                }
                progress.inc(1);
                (acc, tile, lbuf, rbuf)
            },
        )
        .map(|(acc, ..)| acc)
        .reduce(
            || vec![0f64; d * d],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    *x += y;
                }
                a
            },
        );
    if b.is_none() {
        for i in 0..d {
            for j in 0..i {
                if i / GRAM_COLS > j / GRAM_COLS {
                    acc[i * d + j] = acc[j * d + i];
                }
            }
        }
    }
    acc
}

/// Eigenvalues of the symmetric d×d `gram / n`, descending, negatives (rounding) set to 0.
pub fn spectrum(gram: &[f64], d: usize, n: usize) -> Vec<f64> {
    if n == 0 {
        return Vec::new();
    }
    let m = nalgebra::DMatrix::from_fn(d, d, |i, j| 0.5 * (gram[i * d + j] + gram[j * d + i]) / n as f64);
    let mut eig: Vec<f64> = nalgebra::SymmetricEigen::new(m).eigenvalues.iter().map(|&l| l.max(0.0)).collect();
    eig.sort_unstable_by(|a, b| b.total_cmp(a));
    eig
}

/// Vendi score of order `q` (1, ∞, or any other positive order) from the eigenvalues of `K / n`
/// (rescaled to sum to 1, which they do for unit rows).
pub fn vendi(eigenvalues: &[f64], q: f64) -> f64 {
    let total: f64 = eigenvalues.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    let p = eigenvalues.iter().map(|&l| l / total).filter(|&l| l > 0.0);
    if q == 1.0 {
        (-p.map(|l| l * l.ln()).sum::<f64>()).exp()
    } else if q.is_infinite() {
        1.0 / p.fold(0.0, f64::max)
    } else {
        p.map(|l| l.powf(q)).sum::<f64>().powf(1.0 / (1.0 - q))
    }
}

/// Eigenvalues under this fraction of the largest count as zero in the effective rank: the
/// Gram matrix is summed from f32 products, whose rounding leaves eigenvalues of about 1e-8 where
/// the true ones are zero, and their square roots would add up to a visible rank.
const RANK_CUTOFF: f64 = 1e-6;

/// Effective rank (Roy & Vetterli): `exp` of the entropy of the normalised singular values,
/// which are the square roots of the eigenvalues of `Xᵀ X`.
pub fn effective_rank(eigenvalues: &[f64]) -> f64 {
    let max = eigenvalues.iter().copied().fold(0.0, f64::max);
    let s: Vec<f64> = eigenvalues.iter().map(|&l| if l > RANK_CUTOFF * max { l.sqrt() } else { 0.0 }).collect();
    let total: f64 = s.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    (-s.iter().map(|&x| x / total).filter(|&p| p > 0.0).map(|p| p * p.ln()).sum::<f64>()).exp()
}

/// Cluster-size statistics of items assigned to clusters `0..k`.
pub fn cluster_stats(assignment: impl IntoIterator<Item = u32>, k: usize, min_share: f64) -> ClusterStats {
    let mut counts = vec![0usize; k];
    for c in assignment {
        counts[c as usize] += 1;
    }
    let n: usize = counts.iter().sum();
    let entropy = if n == 0 {
        0.0
    } else {
        -counts.iter().filter(|&&c| c > 0).map(|&c| c as f64 / n as f64).map(|p| p * p.ln()).sum::<f64>()
    };
    let need = (min_share * n as f64 / k as f64).max(1.0);
    let covered = counts.iter().filter(|&&c| c as f64 >= need).count();
    ClusterStats {
        entropy,
        entropy_normalised: if k > 1 { entropy / (k as f64).ln() } else { 1.0 },
        effective_clusters: entropy.exp(),
        coverage: covered as f64 / k as f64,
        clusters_covered: covered,
    }
}

/// Scales every nonzero row to unit length.
pub fn normalise_rows(m: &mut Matrix) {
    let d = m.dim();
    let data = m.as_mut_slice();
    data.par_chunks_mut(d).for_each(|r| {
        let norm = crate::index::dot(r, r).sqrt();
        if norm > 0.0 && norm != 1.0 {
            let inv = 1.0 / norm;
            r.iter_mut().for_each(|x| *x *= inv);
        }
    });
}

/// One embedding's vectors, clustered once for the whole run.
pub struct Clustered {
    pub vectors: Matrix,
    pub centroids: Matrix,
    pub assigned: Vec<Top2>,
}

impl Clustered {
    /// Normalises `vectors` and clusters them into `k` (at most n) seeded k-means clusters.
    pub fn new(mut vectors: Matrix, k: usize, seed: u64, device: &Device) -> Result<Self> {
        normalise_rows(&mut vectors);
        let k = k.clamp(1, vectors.rows().max(1));
        if vectors.rows() == 0 {
            return Ok(Self { centroids: Matrix::new(vectors.dim(), Vec::new())?, vectors, assigned: Vec::new() });
        }
        let t0 = Instant::now();
        let centroids = kmeans::train(&vectors, KMeansParams::new(k, seed), device)?;
        let assigned = kmeans::assign(&vectors, &centroids, device)?;
        tracing::debug!(
            "diversity: {k} clusters of {} {}-d rows in {:.1?}",
            vectors.rows(),
            vectors.dim(),
            t0.elapsed()
        );
        Ok(Self { vectors, centroids, assigned })
    }

    pub fn k(&self) -> usize {
        self.centroids.rows()
    }
}

/// Settings of [`measure`].
#[derive(Debug, Clone, Copy)]
pub struct MeasureParams {
    pub min_share: f64,
    pub nn_queries: usize,
    pub probes: usize,
    pub seed: u64,
}

/// Nearest-neighbour similarity of the rows `rows` of `c` among themselves.
fn nn_similarity(c: &Clustered, rows: &[usize], p: &MeasureParams, device: &Device) -> Result<Option<NnSimilarity>> {
    let n = rows.len();
    if n < 2 {
        return Ok(None);
    }
    let d = c.vectors.dim();
    // A copy only for a group (the whole run's rows are the vectors themselves).
    let sub = c.vectors.select(rows);
    let queries: Vec<usize> = if n <= p.nn_queries {
        (0..n).collect()
    } else {
        let mut q = rand::seq::index::sample(&mut StdRng::seed_from_u64(p.seed), n, p.nn_queries).into_vec();
        q.sort_unstable();
        q
    };
    let exact_max = if device.is_cpu() { AUTO_EXACT_MAX_CPU } else { AUTO_EXACT_MAX_GPU };
    let q = Matrix::gather(sub.as_slice(), d, &queries);
    let skip: Vec<u32> = queries.iter().map(|&i| i as u32).collect();
    let (lists, exact) = if n <= exact_max {
        (ExactIndex::new(&sub, device.clone()).knn(&q, 1, Some(&skip))?, true)
    } else {
        let assigned: Vec<Top2> = rows.iter().map(|&r| c.assigned[r]).collect();
        let index = ClusteredIndex::from_assignment(&sub, c.centroids.clone(), &assigned, 0.0, device.clone())
            .with_probes(p.probes);
        (index.knn(&q, 1, Some(&skip))?, false)
    };
    let mut sims: Vec<f32> = lists.iter().filter_map(|l| l.first().map(|&(_, s)| s)).collect();
    sims.sort_unstable_by(f32::total_cmp);
    let mean = sims.iter().map(|&s| s as f64).sum::<f64>() / sims.len().max(1) as f64;
    Ok(Some(NnSimilarity {
        mean,
        percentiles: PERCENTILES.iter().map(|&q| (format!("p{q}"), percentile(&sims, q as f64))).collect(),
        queries: queries.len(),
        exact: exact && queries.len() == n,
    }))
}

/// All metrics of rows `rows` of `c` (all rows when `None`); `gram` is their `Σ xᵢ xᵢᵀ` when
/// already computed.
pub fn measure(
    c: &Clustered,
    rows: Option<&[usize]>,
    gram: Option<&[f64]>,
    p: &MeasureParams,
    device: &Device,
) -> Result<Metrics> {
    let all: Vec<usize>;
    let rows = match rows {
        Some(r) => r,
        None => {
            all = (0..c.vectors.rows()).collect();
            &all
        }
    };
    let d = c.vectors.dim();
    let owned;
    let gram = match gram {
        Some(g) => g,
        None => {
            owned = gram_sum(&c.vectors, (rows.len() != c.vectors.rows()).then_some(rows));
            &owned
        }
    };
    let t0 = Instant::now();
    let eig = spectrum(gram, d, rows.len());
    let t1 = Instant::now();
    let nn_similarity = nn_similarity(c, rows, p, device)?;
    tracing::debug!(
        "diversity of {} {d}-d rows: eigenvalues {:.1?}, nearest neighbours {:.1?}",
        rows.len(),
        t1 - t0,
        t1.elapsed()
    );
    Ok(Metrics {
        items: rows.len(),
        vendi: Vendi { q1: vendi(&eig, 1.0), q2: vendi(&eig, 2.0), inf: vendi(&eig, f64::INFINITY) },
        effective_rank: effective_rank(&eig),
        clusters: cluster_stats(rows.iter().map(|&r| c.assigned[r].best), c.k(), p.min_share),
        nn_similarity,
    })
}

/// `Σ xxᵀ` (or a cross `Σ abᵀ`) of the whole run and of each group.
pub struct Grams {
    pub whole: Vec<f64>,
    pub groups: Vec<Vec<f64>>,
}

impl Grams {
    /// Sums over `n` rows by `sum(rows)`, for each group of `groups` and for all rows (added up
    /// from the groups when they partition the rows).
    fn build(groups: &[Vec<usize>], n: usize, sum: impl Fn(Option<&[usize]>) -> Vec<f64>) -> Self {
        let per: Vec<Vec<f64>> = groups.iter().map(|rows| sum(Some(rows))).collect();
        let whole = if !groups.is_empty() && groups.iter().map(Vec::len).sum::<usize>() == n {
            let mut total = vec![0f64; per[0].len()];
            for g in &per {
                total.iter_mut().zip(g).for_each(|(t, x)| *t += x);
            }
            total
        } else {
            sum(None)
        };
        Self { whole, groups: per }
    }

    /// `Σ xxᵀ` of the rows of `x`.
    pub fn of(x: &Matrix, groups: &[Vec<usize>]) -> Self {
        let t0 = Instant::now();
        let g = Self::build(groups, x.rows(), |rows| gram_sum(x, rows));
        tracing::debug!("diversity: Gram matrix of {} {}-d rows in {:.1?}", x.rows(), x.dim(), t0.elapsed());
        g
    }

    /// `Σ abᵀ` of the rows of `a` and `b`.
    pub fn cross(a: &Matrix, b: &Matrix, groups: &[Vec<usize>]) -> Self {
        let t0 = Instant::now();
        let g = Self::build(groups, a.rows(), |rows| cross_gram_sum(a, b, rows));
        tracing::debug!("diversity: cross Gram matrix of {} {}-d rows in {:.1?}", a.rows(), a.dim(), t0.elapsed());
        g
    }

    /// The Gram matrices of the joint rows `[aᵢ, bᵢ] / √2` ([`joint_gram`]).
    pub fn joint(aa: &Grams, bb: &Grams, ab: &Grams, d: usize) -> Self {
        let j = |a: &[f64], b: &[f64], x: &[f64]| joint_gram(a, b, x, d);
        Self {
            whole: j(&aa.whole, &bb.whole, &ab.whole),
            groups: (0..aa.groups.len()).map(|g| j(&aa.groups[g], &bb.groups[g], &ab.groups[g])).collect(),
        }
    }
}

/// Measures one embedding for the whole run and for each group (`groups[g]` = its rows), with
/// their Gram matrices.
fn measure_all(
    c: &Clustered,
    groups: &[Vec<usize>],
    grams: &Grams,
    p: &MeasureParams,
    device: &Device,
) -> Result<(Metrics, Vec<Metrics>)> {
    let overall = measure(c, None, Some(&grams.whole), p, device)?;
    let per_group = groups
        .iter()
        .zip(&grams.groups)
        .map(|(rows, g)| measure(c, Some(rows), Some(g), p, device))
        .collect::<Result<_>>()?;
    Ok((overall, per_group))
}

/// The joint rows `[aᵢ, bᵢ] / √2` (unit when `a` and `b` rows are).
pub fn joint_rows(a: &Matrix, b: &Matrix) -> Matrix {
    let d = a.dim();
    let s = std::f32::consts::FRAC_1_SQRT_2;
    let len = a.rows() * 2 * d;
    let mut joint = crate::index::huge_vec(len);
    joint.spare_capacity_mut()[..len].par_chunks_mut(2 * d).enumerate().for_each(|(i, row)| {
        let (l, r) = row.split_at_mut(d);
        l.iter_mut().zip(a.row(i)).for_each(|(o, x)| {
            o.write(x * s);
        });
        r.iter_mut().zip(b.row(i)).for_each(|(o, x)| {
            o.write(x * s);
        });
    });
    // SAFETY: the loop above wrote all `len` values.
    unsafe { joint.set_len(len) };
    Matrix::new(2 * d, joint).expect("2d-wide rows")
}

/// Measures a run's images (`image`, every item), captions (`text`: the items `captioned`, in
/// that order) and joint embeddings, for the whole run and for each group (`image_groups[g]`:
/// item rows; `text_groups[g]`: the same items' rows in `text`). The matrices move in: a million
/// rows are 2 GB per embedding.
#[allow(clippy::too_many_arguments)]
pub fn measure_embeddings(
    image: Matrix,
    text: Matrix,
    captioned: &[usize],
    image_groups: &[Vec<usize>],
    text_groups: &[Vec<usize>],
    clusters: usize,
    seed: u64,
    p: &MeasureParams,
    dev: &Device,
) -> Result<(Modalities, Vec<Modalities>)> {
    let (n, d) = (image.rows(), image.dim());
    let empty = |count: usize| Modalities { items: count, image: None, text: None, joint: None };
    let mut overall = empty(n);
    let mut groups: Vec<Modalities> = image_groups.iter().map(|r| empty(r.len())).collect();
    if n == 0 {
        return Ok((overall, groups));
    }
    let t0 = Instant::now();
    let image = Clustered::new(image, clusters, seed, dev)?;
    let image_grams = Grams::of(&image.vectors, image_groups);
    let (o, per) = measure_all(&image, image_groups, &image_grams, p, dev)?;
    overall.image = Some(o);
    for (g, m) in groups.iter_mut().zip(per) {
        g.image = Some(m);
    }
    tracing::info!("diversity: image embeddings of {n} items in {:.1?}", t0.elapsed());
    if captioned.is_empty() {
        return Ok((overall, groups));
    }
    let t0 = Instant::now();
    let text = Clustered::new(text, clusters, seed, dev)?;
    let text_grams = Grams::of(&text.vectors, text_groups);
    let (o, per) = measure_all(&text, text_groups, &text_grams, p, dev)?;
    overall.text = Some(o);
    for (g, m) in groups.iter_mut().zip(per) {
        g.text = (m.items > 0).then_some(m);
    }
    // Joint: [image, caption] / √2, so the kernel is the mean of the two cosines. Its Gram
    // matrix comes from the image and caption ones and their cross sums.
    let all_captioned = captioned.len() == n;
    let image_c = image.vectors.select(captioned);
    let image_c_grams = if all_captioned { None } else { Some(Grams::of(&image_c, text_groups)) };
    let cross = Grams::cross(&image_c, &text.vectors, text_groups);
    let joint_grams = Grams::joint(image_c_grams.as_ref().unwrap_or(&image_grams), &text_grams, &cross, d);
    drop((image_grams, text_grams, cross, image_c_grams));
    let joint = joint_rows(&image_c, &text.vectors);
    drop(image_c);
    drop((image, text));
    let c = Clustered::new(joint, clusters, seed, dev)?;
    let (o, per) = measure_all(&c, text_groups, &joint_grams, p, dev)?;
    overall.joint = Some(o);
    for (g, m) in groups.iter_mut().zip(per) {
        g.joint = (m.items > 0).then_some(m);
    }
    tracing::info!("diversity: caption and joint embeddings of {} items in {:.1?}", captioned.len(), t0.elapsed());
    Ok((overall, groups))
}

/// Runs `sieve diversity`; returns the report (also written to `RUN/diversity.json`).
pub fn diversity(opts: &DiversityOptions) -> Result<Report> {
    let started = Instant::now();
    let run = Run::open(&opts.run)?;
    let mut items = Embedded::load(&run)?;
    let dev = device::open(opts.device)?;
    let n = items.len();
    let d = items.image.dim();
    let p =
        MeasureParams { min_share: opts.min_share, nn_queries: opts.nn_queries, probes: opts.probes, seed: opts.seed };

    // Group values per item, in sorted order.
    let group_values: Vec<(Option<String>, Vec<usize>)> = match &opts.by {
        None => Vec::new(),
        Some(col) => {
            let values = run.column_strings(col)?;
            let mut map: BTreeMap<Option<String>, Vec<usize>> = BTreeMap::new();
            for (i, &r) in items.rows.iter().enumerate() {
                map.entry(values[r].clone()).or_default().push(i);
            }
            if map.len() > MAX_GROUPS {
                return Err(Error::InvalidArg {
                    what: "diversity option by",
                    reason: format!(
                        "column `{col}` has {} distinct values among the embedded rows; at most {MAX_GROUPS} groups \
                         (group by something coarser, such as the source folder)",
                        map.len()
                    ),
                });
            }
            map.into_iter().collect()
        }
    };

    let captioned: Vec<usize> = (0..n).filter(|&i| items.has_caption[i]).collect();
    // Position of each item among the captioned ones.
    let mut cap_pos = vec![usize::MAX; n];
    for (j, &i) in captioned.iter().enumerate() {
        cap_pos[i] = j;
    }
    let image_groups: Vec<Vec<usize>> = group_values.iter().map(|(_, r)| r.clone()).collect();
    let text_groups: Vec<Vec<usize>> = group_values
        .iter()
        .map(|(_, r)| r.iter().filter(|&&i| cap_pos[i] != usize::MAX).map(|&i| cap_pos[i]).collect())
        .collect();

    let texts = if captioned.len() == n {
        std::mem::replace(&mut items.text, Matrix::new(d, Vec::new())?)
    } else {
        Matrix::gather(items.text.as_slice(), d, &captioned)
    };
    let image = std::mem::replace(&mut items.image, Matrix::new(d, Vec::new())?);
    let (overall, per_group) =
        measure_embeddings(image, texts, &captioned, &image_groups, &text_groups, opts.clusters, opts.seed, &p, &dev)?;
    let groups: Vec<Group> =
        group_values.iter().zip(per_group).map(|((v, _), metrics)| Group { value: v.clone(), metrics }).collect();

    let report = Report {
        sieve_version: env!("CARGO_PKG_VERSION").to_string(),
        run: opts.run.display().to_string(),
        run_fingerprint: run.fingerprint.clone(),
        model: run.manifest.model.id.clone(),
        embedded: n,
        with_caption: captioned.len(),
        clusters: opts.clusters.min(n.max(1)),
        coverage_min_share: opts.min_share,
        nn_queries: opts.nn_queries,
        seed: opts.seed,
        overall,
        by: opts.by.clone(),
        groups,
    };
    let json = serde_json::to_vec_pretty(&report).expect("report serialises");
    write_atomic(&Layout::new(&opts.run).diversity(), |w| std::io::Write::write_all(w, &json))?;
    tracing::info!("diversity: done in {:.1?}", started.elapsed());
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gram_sum_matches_a_naive_sum_across_tiles_and_row_subsets() {
        // 300 columns: two full 128-wide tiles and a partial one, so mirrored tiles are checked.
        let (n, d) = (70, 300);
        let data: Vec<f32> = (0..n * d).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
        let x = Matrix::new(d, data).unwrap();
        let rows: Vec<usize> = (0..n).filter(|r| r % 3 != 1).collect();
        for subset in [None, Some(rows.as_slice())] {
            let got = gram_sum(&x, subset);
            let picked: Vec<usize> = subset.map_or_else(|| (0..n).collect(), <[usize]>::to_vec);
            for i in 0..d {
                for j in 0..d {
                    let want: f64 = picked.iter().map(|&r| x.row(r)[i] as f64 * x.row(r)[j] as f64).sum();
                    let g = got[i * d + j];
                    assert!((g - want).abs() < 1e-4 * want.abs().max(1.0), "({i}, {j}): {g} vs {want}");
                }
            }
        }
    }

    #[test]
    fn joint_gram_from_blocks_equals_the_gram_of_the_joint_rows() {
        // 2100 rows: two row blocks; 300 columns: partial column tiles.
        let (n, d) = (2100, 300);
        let val = |i: usize, m: usize| (((i * m) % 1009) as f32 / 504.5) - 1.0;
        let a = Matrix::new(d, (0..n * d).map(|i| val(i, 7919)).collect()).unwrap();
        let b = Matrix::new(d, (0..n * d).map(|i| val(i, 6007)).collect()).unwrap();
        let groups = vec![(0..n).filter(|r| r % 3 == 0).collect::<Vec<_>>(), (0..n).filter(|r| r % 3 != 0).collect()];
        let joint = joint_rows(&a, &b);
        let got = Grams::joint(&Grams::of(&a, &groups), &Grams::of(&b, &groups), &Grams::cross(&a, &b, &groups), d);
        let close = |x: &[f64], y: &[f64]| x.iter().zip(y).all(|(p, q)| (p - q).abs() <= 1e-3 * q.abs().max(1.0));
        assert!(close(&got.whole, &gram_sum(&joint, None)));
        for (g, rows) in got.groups.iter().zip(&groups) {
            assert!(close(g, &gram_sum(&joint, Some(rows))));
        }
        // And the cross block against a naive sum.
        let x = cross_gram_sum(&a, &b, Some(&groups[1]));
        for (i, j) in [(0, 0), (5, 299), (299, 5), (128, 131), (200, 17)] {
            let want: f64 = groups[1].iter().map(|&r| a.row(r)[i] as f64 * b.row(r)[j] as f64).sum();
            assert!((x[i * d + j] - want).abs() < 1e-3 * want.abs().max(1.0), "({i}, {j}): {} vs {want}", x[i * d + j]);
        }
    }
}
