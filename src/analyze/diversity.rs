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
use serde::Serialize;

use super::common::{percentile, Embedded, PERCENTILES};
use crate::device::{self, DeviceSpec};
use crate::error::{Error, Result};
use crate::index::kmeans::{self, KMeansParams, Top2};
use crate::index::{ClusteredIndex, ExactIndex, Matrix, NeighbourIndex, AUTO_EXACT_MAX_CPU, AUTO_EXACT_MAX_GPU};
use crate::model::cpu::matmul_tn;
use crate::store::{write_atomic, Run};

/// Default number of k-means clusters for entropy and coverage.
pub const DEFAULT_CLUSTERS: usize = 100;
/// Default `min_share`: a cluster counts as covered when it holds a tenth of an even share.
pub const DEFAULT_MIN_SHARE: f64 = 0.1;
/// Default number of nearest-neighbour queries (all items up to this many).
pub const DEFAULT_NN_QUERIES: usize = 10_000;
/// Most groups `--by` accepts.
pub const MAX_GROUPS: usize = 1000;

/// Everything `sieve diversity` needs, validated.
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Vendi {
    pub q1: f64,
    pub q2: f64,
    pub inf: f64,
}

/// Nearest-neighbour similarity statistics.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NnSimilarity {
    pub mean: f64,
    pub percentiles: BTreeMap<String, f32>,
    /// Items whose nearest neighbour was searched.
    pub queries: usize,
    /// Whether every item was a query and the search exact.
    pub exact: bool,
}

/// Cluster-size statistics of a set of items over `k` clusters.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct ClusterStats {
    /// Entropy of the cluster sizes, in nats.
    pub entropy: f64,
    /// `entropy / ln k` (1: perfectly even).
    pub entropy_normalised: f64,
    /// `exp(entropy)`: an effective number of clusters.
    pub effective_clusters: f64,
    /// Share of the k clusters holding at least `min_share` of an even share of the items.
    pub coverage: f64,
    pub clusters_covered: usize,
}

/// The diversity of one set of vectors.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Metrics {
    pub items: usize,
    pub vendi: Vendi,
    pub effective_rank: f64,
    pub clusters: ClusterStats,
    /// `None` for fewer than two items.
    pub nn_similarity: Option<NnSimilarity>,
}

/// Metrics per embedding; `None` where the run has no captions.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Modalities {
    pub items: usize,
    pub image: Option<Metrics>,
    pub text: Option<Metrics>,
    pub joint: Option<Metrics>,
}

/// One group of `--by`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Group {
    /// The column's value (`null` for rows without one).
    pub value: Option<String>,
    #[serde(flatten)]
    pub metrics: Modalities,
}

/// `diversity.json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub sieve_version: String,
    pub run: String,
    pub model: String,
    pub embedded: usize,
    pub with_caption: usize,
    pub clusters: usize,
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
    let d = x.dim();
    let n = rows.map_or(x.rows(), <[usize]>::len);
    let starts: Vec<usize> = (0..n).step_by(GRAM_BLOCK).collect();
    let chunks: Vec<(usize, usize)> = (0..d).step_by(GRAM_COLS).map(|c| (c, (c + GRAM_COLS).min(d))).collect();
    let progress = crate::progress::Progress::new(starts.len() as u64, "Gram matrix", "blocks");
    let mut acc = starts
        .par_iter()
        .fold(
            || (vec![0f64; d * d], vec![0f32; d * d], Vec::<f32>::new()),
            |(mut acc, mut tile, mut buf), &b0| {
                let b1 = (b0 + GRAM_BLOCK).min(n);
                let block: &[f32] = match rows {
                    None => x.block(b0, b1),
                    Some(r) => {
                        buf.clear();
                        for &i in &r[b0..b1] {
                            buf.extend_from_slice(x.row(i));
                        }
                        &buf
                    }
                };
                for (ci, &(i0, i1)) in chunks.iter().enumerate() {
                    for &(j0, j1) in &chunks[ci..] {
                        let dst = &mut tile[i0 * d + j0..];
                        matmul_tn(dst, d, &block[i0..], d, &block[j0..], d, b1 - b0, i1 - i0, j1 - j0);
                        for i in i0..i1 {
                            for j in j0..j1 {
                                acc[i * d + j] += tile[i * d + j] as f64;
                            }
                        }
                    }
                }
                progress.inc(1);
                (acc, tile, buf)
            },
        )
        .map(|(acc, _, _)| acc)
        .reduce(
            || vec![0f64; d * d],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    *x += y;
                }
                a
            },
        );
    for i in 0..d {
        for j in 0..i {
            if i / GRAM_COLS > j / GRAM_COLS {
                acc[i * d + j] = acc[j * d + i];
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
        let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            r.iter_mut().for_each(|x| *x /= norm);
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
        let centroids = kmeans::train(&vectors, KMeansParams::new(k, seed), device)?;
        let assigned = kmeans::assign(&vectors, &centroids, device)?;
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
    let sub = Matrix::gather(c.vectors.as_slice(), d, rows);
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
    let eig = spectrum(gram, d, rows.len());
    Ok(Metrics {
        items: rows.len(),
        vendi: Vendi { q1: vendi(&eig, 1.0), q2: vendi(&eig, 2.0), inf: vendi(&eig, f64::INFINITY) },
        effective_rank: effective_rank(&eig),
        clusters: cluster_stats(rows.iter().map(|&r| c.assigned[r].best), c.k(), p.min_share),
        nn_similarity: nn_similarity(c, rows, p, device)?,
    })
}

/// Measures one embedding for the whole run and for each group (`groups[g]` = its rows).
fn measure_all(
    c: &Clustered,
    groups: &[Vec<usize>],
    p: &MeasureParams,
    device: &Device,
) -> Result<(Metrics, Vec<Metrics>)> {
    let d = c.vectors.dim();
    let mut per_group = Vec::with_capacity(groups.len());
    let mut total = vec![0f64; d * d];
    let mut grams = Vec::with_capacity(groups.len());
    for rows in groups {
        let g = gram_sum(&c.vectors, Some(rows));
        for (t, x) in total.iter_mut().zip(&g) {
            *t += x;
        }
        grams.push(g);
    }
    // The groups partition the rows, so their sums add up to the whole run's.
    let whole = (!groups.is_empty() && groups.iter().map(Vec::len).sum::<usize>() == c.vectors.rows()).then_some(total);
    let overall = measure(c, None, whole.as_deref(), p, device)?;
    for (rows, g) in groups.iter().zip(&grams) {
        per_group.push(measure(c, Some(rows), Some(g), p, device)?);
    }
    Ok((overall, per_group))
}

/// Runs `sieve diversity`; returns the report (also written to `RUN/diversity.json`).
pub fn diversity(opts: &DiversityOptions) -> Result<Report> {
    let started = Instant::now();
    let run = Run::open(&opts.run)?;
    let items = Embedded::load(&run)?;
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
                    what: "--by",
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

    let empty = |count: usize| Modalities { items: count, image: None, text: None, joint: None };
    let mut overall = empty(n);
    let mut groups: Vec<Group> =
        group_values.iter().map(|(v, r)| Group { value: v.clone(), metrics: empty(r.len()) }).collect();

    if n > 0 {
        let t0 = Instant::now();
        let c = Clustered::new(items.image.clone(), opts.clusters, opts.seed, &dev)?;
        let (o, per) = measure_all(&c, &image_groups, &p, &dev)?;
        overall.image = Some(o);
        for (g, m) in groups.iter_mut().zip(per) {
            g.metrics.image = Some(m);
        }
        tracing::info!("diversity: image embeddings of {n} items in {:.1?}", t0.elapsed());
    }
    if !captioned.is_empty() {
        let t0 = Instant::now();
        let mut text = Matrix::gather(items.text.as_slice(), d, &captioned);
        normalise_rows(&mut text);
        let c = Clustered::new(text.clone(), opts.clusters, opts.seed, &dev)?;
        let (o, per) = measure_all(&c, &text_groups, &p, &dev)?;
        overall.text = Some(o);
        for (g, m) in groups.iter_mut().zip(per) {
            g.metrics.text = (m.items > 0).then_some(m);
        }
        drop(c);
        // Joint: [image, caption] / √2, so the kernel is the mean of the two cosines.
        let mut image = Matrix::gather(items.image.as_slice(), d, &captioned);
        normalise_rows(&mut image);
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let mut joint = Vec::with_capacity(captioned.len() * 2 * d);
        for j in 0..captioned.len() {
            joint.extend(image.row(j).iter().map(|x| x * s));
            joint.extend(text.row(j).iter().map(|x| x * s));
        }
        drop((image, text));
        let c = Clustered::new(Matrix::new(2 * d, joint)?, opts.clusters, opts.seed, &dev)?;
        let (o, per) = measure_all(&c, &text_groups, &p, &dev)?;
        overall.joint = Some(o);
        for (g, m) in groups.iter_mut().zip(per) {
            g.metrics.joint = (m.items > 0).then_some(m);
        }
        tracing::info!("diversity: caption and joint embeddings of {} items in {:.1?}", captioned.len(), t0.elapsed());
    }

    let report = Report {
        sieve_version: env!("CARGO_PKG_VERSION").to_string(),
        run: opts.run.display().to_string(),
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
    write_atomic(&opts.run.join("diversity.json"), |w| std::io::Write::write_all(w, &json))?;
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
}
