//! Pieces the analyses share: the embedded pairs of a run, building the neighbour index a
//! command asked for, and summarising a distribution (percentiles and a histogram).

use std::collections::BTreeMap;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::index::hnsw::HnswParams;
use crate::index::kmeans::KMeansParams;
use crate::index::{ClusteredIndex, ExactIndex, HnswIndex, IndexChoice, Matrix, NeighbourIndex, Plan};
use crate::store::Run;

/// How a command searches for neighbours (`--index`, `--clusters`, `--probes`, `--seed`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SearchOptions {
    pub index: IndexChoice,
    /// k-means clusters for clustered search [default: [`knn_clusters`]].
    pub clusters: Option<usize>,
    /// Clusters each k-NN query searches.
    pub probes: usize,
    pub seed: u64,
    pub hnsw: HnswParams,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self {
            index: IndexChoice::Auto,
            clusters: None,
            probes: crate::index::clustered::DEFAULT_PROBES,
            seed: 0,
            hnsw: HnswParams::default(),
        }
    }
}

/// k-means training for a k-NN index: 40 sampled points per centroid (faiss warns under 39)
/// and 10 iterations. Training is about a quarter of the rank test's time at a million rows on
/// 2 cores; probing several clusters per query makes up for the coarser centroids.
const KNN_POINTS_PER_CENTROID: usize = 40;
const KNN_KMEANS_ITERS: usize = 10;

/// From this many clusters on, a k-NN index finds nearest clusters through a two-level k-means
/// ([`crate::index::clustered::TwoLevel`]) instead of comparing with every centroid.
pub const TWO_LEVEL_MIN_CLUSTERS: usize = 256;

/// Clusters for a clustered k-NN index over `n` vectors that `queries` queries will search:
/// assigning the vectors costs about n·K dot products and the search queries·probes·n/K, so
/// K = √(queries·probes) balances them (at least 1, at most n/16).
pub fn knn_clusters(n: usize, queries: usize, probes: usize) -> usize {
    (((queries.max(1) * probes.max(1)) as f64).sqrt().round() as usize).clamp(1, (n / 16).max(1))
}

/// Builds the index `opts` asks for over `m`, for about `queries` k-NN queries.
pub fn build_index<'a>(
    m: &'a Matrix,
    opts: &SearchOptions,
    device: &Device,
    queries: usize,
) -> Result<Box<dyn NeighbourIndex + 'a>> {
    let clustered = |k: usize| -> Result<Box<dyn NeighbourIndex + 'a>> {
        let mut params = KMeansParams::new(k.min(m.rows()).max(1), opts.seed);
        params.max_points_per_centroid = KNN_POINTS_PER_CENTROID;
        params.iters = KNN_KMEANS_ITERS;
        // No border copies: a query searching its `probes` nearest clusters already reaches
        // across borders.
        let index = if params.k >= TWO_LEVEL_MIN_CLUSTERS {
            ClusteredIndex::build_two_level(m, params, device.clone())?
        } else {
            ClusteredIndex::build(m, params, 0.0, device.clone())?
        };
        Ok(Box::new(index.with_probes(opts.probes)))
    };
    Ok(match Plan::choose(opts.index, opts.clusters, m.rows(), device) {
        Plan::Hnsw => Box::new(HnswIndex::build(m, opts.hnsw)),
        Plan::Clusters(k) => return clustered(k.unwrap_or_else(|| knn_clusters(m.rows(), queries, opts.probes))),
        Plan::Exact => Box::new(ExactIndex::new(m, device.clone())),
    })
}

/// The metadata rows of `run` that were embedded, in order.
pub fn embedded_rows(run: &Run) -> Vec<usize> {
    (0..run.meta.len()).filter(|&r| run.meta.embedded[r]).collect()
}

/// The embedded rows of a run: image vectors, and caption vectors where there is a caption.
/// The one loader of embeddings that dedup, score, diversity and select share.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// Metadata row of each item.
    pub rows: Vec<usize>,
    pub image: Matrix,
    /// Caption vectors (a zero row where the item has no caption); no rows when loaded without
    /// text.
    pub text: Matrix,
    /// Whether the item has a caption and its vector (false for all when loaded without text).
    pub has_caption: Vec<bool>,
}

impl Embedded {
    /// Reads every embedded row of `run`, image and caption vectors.
    pub fn load(run: &Run) -> Result<Self> {
        Self::load_with(run, true)
    }

    /// Reads every embedded row of `run`; the caption vectors only if `with_text` (dedup reads
    /// none when no kind or policy needs captions).
    pub fn load_with(run: &Run, with_text: bool) -> Result<Self> {
        let d = run.manifest.embed_dim;
        let rows = embedded_rows(run);
        let every = rows.len() == run.meta.len();
        // Every row embedded: the vectors as read, no copy.
        let keep = |all: Vec<f32>| if every { Matrix::new(d, all) } else { Ok(Matrix::gather(&all, d, &rows)) };
        let image = keep(run.embeddings(false)?)?;
        let text = if with_text { keep(run.embeddings(true)?)? } else { Matrix::new(d, Vec::new())? };
        let has_caption = rows
            .iter()
            .enumerate()
            .map(|(i, &r)| with_text && run.meta.caption[r].is_some() && text.row(i).iter().any(|&x| x != 0.0))
            .collect();
        Ok(Self { rows, image, text, has_caption })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// A histogram over equal-width bins: `edges` has one more entry than `counts`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Histogram {
    #[serde(deserialize_with = "lenient::f32s")]
    pub edges: Vec<f32>,
    pub counts: Vec<u64>,
}

/// Summary of a set of values.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Distribution {
    pub count: usize,
    #[serde(deserialize_with = "lenient::f64")]
    pub mean: f64,
    #[serde(deserialize_with = "lenient::f32")]
    pub min: f32,
    #[serde(deserialize_with = "lenient::f32")]
    pub max: f32,
    /// "p1", "p5", … "p99" → value (nearest-rank on the sorted values).
    #[serde(deserialize_with = "lenient::f32_map")]
    pub percentiles: BTreeMap<String, f32>,
    pub histogram: Histogram,
}

/// Percentiles reported in summaries.
pub const PERCENTILES: [u32; 9] = [1, 5, 10, 25, 50, 75, 90, 95, 99];

/// The value at percentile `p` (0–100) of sorted `v`, by linear interpolation between closest
/// ranks (NumPy's default).
pub fn percentile(sorted: &[f32], p: f64) -> f32 {
    if sorted.is_empty() {
        return f32::NAN;
    }
    let pos = p.clamp(0.0, 100.0) / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let t = pos - lo as f64;
    (sorted[lo] as f64 * (1.0 - t) + sorted[hi] as f64 * t) as f32
}

impl Distribution {
    /// Summarises `values` (NaNs are ignored) with a `bins`-bin histogram over `[min, max]`.
    pub fn of(values: &[f32], bins: usize) -> Self {
        let mut v: Vec<f32> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        v.sort_unstable_by(f32::total_cmp);
        let count = v.len();
        let (min, max) = (v.first().copied().unwrap_or(f32::NAN), v.last().copied().unwrap_or(f32::NAN));
        let mean = if count == 0 { f64::NAN } else { v.iter().map(|&x| x as f64).sum::<f64>() / count as f64 };
        let percentiles = PERCENTILES.iter().map(|&p| (format!("p{p}"), percentile(&v, p as f64))).collect();
        let bins = bins.max(1);
        let (lo, hi) = if count == 0 { (0.0, 0.0) } else { (min, if max > min { max } else { min + 1e-6 }) };
        let width = (hi - lo) / bins as f32;
        let edges = (0..=bins).map(|i| if i == bins { hi } else { lo + width * i as f32 }).collect();
        let mut counts = vec![0u64; bins];
        for &x in &v {
            let b = (((x - lo) / width) as usize).min(bins - 1);
            counts[b] += 1;
        }
        Self { count, mean, min, max, percentiles, histogram: Histogram { edges, counts } }
    }
}

/// Deserializers for summaries read back (by `sieve report`): serde_json writes a non-finite
/// float as `null`, so a float field reads `null` back as NaN, which the report shows as "–".
pub mod lenient {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer};

    /// An `f32` that may be `null` (NaN).
    pub fn f32<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
        Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN))
    }

    /// An `f64` that may be `null` (NaN).
    pub fn f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }

    /// `f32`s any of which may be `null` (NaN).
    pub fn f32s<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        Ok(Vec::<Option<f32>>::deserialize(d)?.into_iter().map(|x| x.unwrap_or(f32::NAN)).collect())
    }

    /// Named `f32`s any of which may be `null` (NaN).
    pub fn f32_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f32>, D::Error> {
        Ok(BTreeMap::<String, Option<f32>>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or(f32::NAN)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde_json writes NaN as `null`; a summary read back takes it as NaN, and a field an older
    /// sieve did not write takes its default, instead of failing the whole read.
    #[test]
    fn summaries_read_back_nulls_as_nan_and_missing_fields_as_defaults() {
        let d = Distribution {
            count: 2,
            mean: f64::NAN,
            min: 0.5,
            max: f32::NAN,
            percentiles: [("p50".to_string(), f32::NAN), ("p90".to_string(), 0.75)].into(),
            histogram: Histogram { edges: vec![0.0, f32::NAN, 1.0], counts: vec![1, 1] },
        };
        let text = serde_json::to_string(&d).unwrap();
        assert!(text.contains("\"mean\":null") && text.contains("\"p50\":null"), "{text}");
        let back: Distribution = serde_json::from_str(&text).unwrap();
        assert!(back.mean.is_nan() && back.max.is_nan() && back.percentiles["p50"].is_nan());
        assert_eq!((back.count, back.min, back.percentiles["p90"]), (2, 0.5, 0.75));
        assert!(back.histogram.edges[1].is_nan() && back.histogram.edges[2] == 1.0);
        let older: Distribution = serde_json::from_str(r#"{"count": 3}"#).unwrap();
        assert_eq!((older.count, older.histogram.counts.len()), (3, 0));
    }
}
