//! `sieve select --reference RUN`: DataComp's image-based filter, intersected with the CLIP-score
//! filter, its best published baseline (Gadre et al. 2023, "CLIP score ∩ image-based"):
//!
//! 1. the pool is clustered with seeded k-means (DataComp used 100,000 clusters for its 12.8M
//!    pool; sieve's default is √pool, at most 1,000, which `--reference-clusters` raises at a
//!    cost that grows with the clusters);
//! 2. each item of the reference run (the target: a benchmark's training set, say) takes its
//!    nearest centroid; the pool items of those clusters pass;
//! 3. with `--score-percent P` (30 by default with a reference, as DataComp's best baseline), only
//!    the top P% of the pool by CLIP score (the cosine of each image to its own caption) pass too;
//!    items without a caption have no score and do not pass.
//!
//! What passes both is the pool the strategy then picks the budget from; with a budget at least
//! that large the selection is the filter's whole output, DataComp's set.

use std::path::Path;

use candle_core::Device;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use super::Embedding;
use crate::analyze::common::Embedded;
use crate::error::{Error, Result};
use crate::index::kmeans::{self, KMeansParams};
use crate::index::{dot, Matrix};
use crate::store::Run;

/// DataComp's best baseline keeps the top 30% by CLIP score.
pub const DEFAULT_SCORE_PERCENT: f64 = 30.0;
/// Reference items sampled to measure how near the selection comes to the reference.
pub const NEAREST_QUERIES: usize = 1000;

/// The `reference` object of `selection/summary.json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReferenceSummary {
    pub run: String,
    /// Reference items used (those with the vectors `--embedding` needs).
    pub items: usize,
    /// k-means clusters of the pool.
    pub clusters: usize,
    /// Clusters that are the nearest of at least one reference item.
    pub target_clusters: usize,
    /// Pool items in the target clusters.
    pub in_target_clusters: usize,
    /// The CLIP-score filter, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<ScoreFilter>,
    /// Pool items that pass every filter: what the strategy picks from.
    pub passed: usize,
    /// Mean, over up to [`NEAREST_QUERIES`] sampled reference items, of the cosine to the nearest
    /// selected item, and to the nearest item of the random subset of the same size.
    pub nearest_selected: f64,
    pub nearest_random: f64,
}

/// `--score-percent`: the top share of the pool by CLIP score.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScoreFilter {
    pub percent: f64,
    /// Pool items with a caption (a score).
    pub scored: usize,
    /// Of them, those in the top percent.
    pub passed: usize,
    /// The lowest score that passed.
    pub threshold: Option<f32>,
}

/// Each pool item's CLIP score (cosine of image and caption), `None` without a caption.
pub fn clip_scores(items: &Embedded, pool: &[usize]) -> Vec<Option<f32>> {
    pool.iter()
        .map(|&i| {
            if !items.has_caption.get(i).copied().unwrap_or(false) {
                return None;
            }
            let (a, b) = (items.image.row(i), items.text.row(i));
            let norm = (dot(a, a) * dot(b, b)).sqrt();
            (norm > 0.0).then(|| dot(a, b) / norm)
        })
        .collect()
}

/// Which pool positions are in the top `percent` of the scored ones: the first
/// ⌈percent·scored/100⌉ by score (ties: the earlier position).
pub fn top_percent(scores: &[Option<f32>], percent: f64) -> (Vec<bool>, ScoreFilter) {
    let mut scored: Vec<(usize, f32)> = scores.iter().enumerate().filter_map(|(i, s)| Some((i, (*s)?))).collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let keep = ((percent / 100.0 * scored.len() as f64).ceil() as usize).min(scored.len());
    let mut pass = vec![false; scores.len()];
    for &(i, _) in &scored[..keep] {
        pass[i] = true;
    }
    let filter = ScoreFilter {
        percent,
        scored: scored.len(),
        passed: keep,
        threshold: keep.checked_sub(1).map(|k| scored[k].1),
    };
    (pass, filter)
}

/// The reference run's vectors in the space of `embedding` (normalised), after checking it
/// shares the pool's encoder.
pub fn reference_vectors(run: &Run, reference: &Path, embedding: Embedding) -> Result<Matrix> {
    let other = Run::open(reference)?;
    crate::compare::check_same_space(run, &other)?;
    let items = Embedded::load_with(&other, embedding != Embedding::Image)?;
    let rows: Vec<usize> =
        (0..items.len()).filter(|&i| embedding == Embedding::Image || items.has_caption[i]).collect();
    if rows.is_empty() {
        return Err(Error::RunDir {
            path: reference.to_path_buf(),
            reason: format!(
                "holds no item with {} vectors: nothing to take as the reference",
                if embedding == Embedding::Image { "image" } else { "caption" }
            ),
        });
    }
    super::vectors(&items, &rows, embedding)
}

/// The pool positions in the clusters nearest the reference items, and the counts.
pub struct Targeted {
    pub pass: Vec<bool>,
    pub clusters: usize,
    pub target_clusters: usize,
}

/// Clusters `pool` (normalised rows) into `k` seeded k-means clusters and marks the rows of the
/// clusters some `reference` row is nearest to.
pub fn target_clusters(pool: &Matrix, reference: &Matrix, k: usize, seed: u64, device: &Device) -> Result<Targeted> {
    let k = k.clamp(1, pool.rows().max(1));
    let centroids = kmeans::train(pool, KMeansParams::new(k, seed), device)?;
    let mut target = vec![false; centroids.rows()];
    for t in kmeans::assign(reference, &centroids, device)? {
        target[t.best as usize] = true;
    }
    let pass = kmeans::assign(pool, &centroids, device)?.iter().map(|t| target[t.best as usize]).collect();
    Ok(Targeted { pass, clusters: centroids.rows(), target_clusters: target.iter().filter(|&&t| t).count() })
}

/// Mean over up to [`NEAREST_QUERIES`] seeded reference rows of the cosine to the nearest of
/// `rows` of `pool` (0 when either is empty).
pub fn mean_nearest(reference: &Matrix, pool: &Matrix, rows: &[usize], seed: u64) -> f64 {
    if reference.rows() == 0 || rows.is_empty() {
        return 0.0;
    }
    let n = reference.rows().min(NEAREST_QUERIES);
    let mut sample = rand::seq::index::sample(&mut StdRng::seed_from_u64(seed), reference.rows(), n).into_vec();
    sample.sort_unstable();
    let queries = Matrix::gather(reference.as_slice(), reference.dim(), &sample);
    let data = Matrix::gather(pool.as_slice(), pool.dim(), rows);
    let near = crate::compare::coverage::nearest(&queries, &data);
    near.iter().map(|&s| s as f64).sum::<f64>() / n as f64
}
