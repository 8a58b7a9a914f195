//! `sieve select`: a curated subset under a budget. Duplicates go first (the `sieve dedup`
//! output, when there is one), then optionally the pairs `sieve score` flagged, then N items
//! are picked to cover the embedding space:
//!
//! - `cluster-balanced`: seeded k-means over the pool; the budget is spread as evenly as the
//!   cluster sizes allow (small clusters give all they have, the rest is shared by the others),
//!   and inside a cluster items are picked farthest-first, starting from the one nearest the
//!   centroid. Time grows about linearly with the pool.
//! - `k-center`: greedy farthest-point selection over the whole pool (Gonzalez's 2-approximation
//!   of the k-center objective); time grows as budget × pool.
//!
//! Two optional steps come before the picking: `--reference RUN` ([`mod@reference`]) narrows the pool
//! to the clusters nearest a target run, intersected with the top of the pool by CLIP score
//! (DataComp's best baseline), and `--balance-by GROUP` ([`balance`]) splits the budget over
//! `sieve audit`'s concepts by a target share, the strategy picking inside each concept.
//!
//! The summary compares the selection with a seeded random subset of the same size from the
//! same pool: Vendi score, effective rank and coverage of the pool's k-means clusters.

pub mod balance;
pub mod pick;
pub mod reference;

pub use pick::{balanced_quota, cluster_balanced, k_center};

use std::collections::HashSet;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use arrow_array::Array;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use super::common::Embedded;
use super::diversity::{self, Clustered, MeasureParams};
use crate::device::{self, DeviceSpec};
use crate::error::{Error, Result};
use crate::index::Matrix;
use crate::store::layout::{self, Layout};
use crate::store::{write_atomic, Run};

/// `--strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    ClusterBalanced,
    KCenter,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterBalanced => "cluster-balanced",
            Self::KCenter => "k-center",
        }
    }
}

impl FromStr for Strategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        [Self::ClusterBalanced, Self::KCenter].into_iter().find(|k| k.as_str() == s).ok_or_else(|| Error::InvalidArg {
            what: "select option strategy",
            reason: format!("`{s}`: expected cluster-balanced or k-center"),
        })
    }
}

/// `--embedding`: which vectors the selection spreads over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedding {
    Image,
    Text,
    Joint,
}

impl Embedding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Text => "text",
            Self::Joint => "joint",
        }
    }
}

impl FromStr for Embedding {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        [Self::Image, Self::Text, Self::Joint].into_iter().find(|k| k.as_str() == s).ok_or_else(|| Error::InvalidArg {
            what: "select option embedding",
            reason: format!("`{s}`: expected image, text or joint"),
        })
    }
}

/// Everything `sieve select` needs, validated.
#[derive(Debug, Clone)]
pub struct SelectOptions {
    pub run: PathBuf,
    pub budget: usize,
    pub strategy: Strategy,
    pub embedding: Embedding,
    /// Drop the non-kept duplicates listed in `RUN/dedup/remove.txt` (when it exists).
    pub use_dedup: bool,
    /// Drop the pairs flagged in `RUN/pairs.parquet` (it must exist).
    pub drop_flagged: bool,
    /// Drop the items with any of these `sieve quality` flags (`RUN/quality.parquet` must exist).
    pub drop_flags: Option<Vec<String>>,
    /// k-means clusters for cluster-balanced selection [default: √pool, at most 1,000].
    pub clusters: Option<usize>,
    pub seed: u64,
    pub device: DeviceSpec,
    /// `--reference`: keep the pool's clusters nearest this run's items ([`mod@reference`]).
    pub reference: Option<PathBuf>,
    /// k-means clusters of the pool for `--reference` [default: √pool, at most 1,000].
    pub reference_clusters: Option<usize>,
    /// Keep only the top percent of the pool by CLIP score [default: 30 with `--reference`].
    pub score_percent: Option<f64>,
    /// `--balance-by`: split the budget over an audit group's concepts ([`balance`]).
    pub balance: Option<balance::BalanceOptions>,
}

impl SelectOptions {
    pub fn new(run: impl Into<PathBuf>, budget: usize) -> Self {
        Self {
            run: run.into(),
            budget,
            strategy: Strategy::ClusterBalanced,
            embedding: Embedding::Image,
            use_dedup: true,
            drop_flagged: false,
            drop_flags: None,
            clusters: None,
            seed: 0,
            device: DeviceSpec::Auto,
            reference: None,
            reference_clusters: None,
            score_percent: None,
            balance: None,
        }
    }
}

/// Diversity of a subset, as compared in the summary.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct SubsetDiversity {
    pub items: usize,
    pub vendi_q1: f64,
    pub vendi_inf: f64,
    pub effective_rank: f64,
    /// Share of the pool's k-means clusters the subset covers (see `sieve diversity`).
    pub coverage: f64,
    pub cluster_entropy_normalised: f64,
}

/// `selection/summary.json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub sieve_version: String,
    pub run: String,
    /// The fingerprint of the run this was computed from ([`crate::store::Run::fingerprint`]);
    /// readers refuse or recompute an output whose fingerprint is not their run's.
    pub run_fingerprint: String,
    pub strategy: String,
    pub embedding: String,
    pub budget: usize,
    pub embedded: usize,
    /// Whether `dedup/remove.txt` was applied.
    pub dedup_applied: bool,
    pub dropped_duplicates: usize,
    pub dropped_flagged: usize,
    /// Items dropped for the `--drop-flags` quality flags.
    pub dropped_quality: usize,
    /// The quality flags dropped (`--drop-flags`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drop_flags: Vec<String>,
    /// Embedded items without a caption, left out because the embedding needs one.
    pub dropped_no_caption: usize,
    pub pool: usize,
    pub selected: usize,
    /// Clusters used by cluster-balanced selection.
    pub selection_clusters: Option<usize>,
    /// Clusters of the pool used to measure coverage.
    pub coverage_clusters: usize,
    pub seed: u64,
    pub pool_diversity: SubsetDiversity,
    pub selection_diversity: SubsetDiversity,
    pub random_diversity: SubsetDiversity,
    /// The CLIP-score filter without a reference (`--score-percent` alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<reference::ScoreFilter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<reference::ReferenceSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<balance::BalanceSummary>,
}

/// Default clusters for `n` rows: √n, at least 1 and at most 1,000.
fn default_clusters(n: usize) -> usize {
    ((n as f64).sqrt().round() as usize).clamp(1, 1000)
}

/// The rows `rows` of `items` in the space of `embedding`, unit-normalised (joint: the image
/// and caption vectors, each normalised, side by side).
pub fn vectors(items: &Embedded, rows: &[usize], embedding: Embedding) -> Result<Matrix> {
    let d = items.image.dim();
    let mut vectors = match embedding {
        Embedding::Image => Matrix::gather(items.image.as_slice(), d, rows),
        Embedding::Text => Matrix::gather(items.text.as_slice(), d, rows),
        Embedding::Joint => {
            let mut img = Matrix::gather(items.image.as_slice(), d, rows);
            let mut txt = Matrix::gather(items.text.as_slice(), d, rows);
            diversity::normalise_rows(&mut img);
            diversity::normalise_rows(&mut txt);
            let mut joint = Vec::with_capacity(rows.len() * 2 * d);
            for j in 0..rows.len() {
                joint.extend_from_slice(img.row(j));
                joint.extend_from_slice(txt.row(j));
            }
            Matrix::new(2 * d, joint)?
        }
    };
    diversity::normalise_rows(&mut vectors);
    Ok(vectors)
}

fn subset_diversity(c: &Clustered, rows: &[usize], p: &MeasureParams) -> SubsetDiversity {
    let g = diversity::gram_sum(&c.vectors, Some(rows));
    let eig = diversity::spectrum(&g, c.vectors.dim(), rows.len());
    let cs = diversity::cluster_stats(rows.iter().map(|&r| c.assigned[r].best), c.k(), p.min_share);
    SubsetDiversity {
        items: rows.len(),
        vendi_q1: diversity::vendi(&eig, 1.0),
        vendi_inf: diversity::vendi(&eig, f64::INFINITY),
        effective_rank: diversity::effective_rank(&eig),
        coverage: cs.coverage,
        cluster_entropy_normalised: cs.entropy_normalised,
    }
}

/// `RUN/dedup/remove.txt` as a set of uris, if it exists.
fn removed_uris(run: &Run) -> Result<Option<HashSet<String>>> {
    let path = Layout::new(&run.dir).dedup_remove();
    if !path.is_file() {
        return Ok(None);
    }
    run.check_provenance(layout::DEDUP_SUMMARY, "dedup")?;
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
    let removed: HashSet<String> = text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
    // Every uri dedup lists is one of this run's; any other means dedup/ was computed from
    // another run, and dropping by it would drop the wrong items (or none).
    let ours: HashSet<&str> = run.meta.uri.iter().map(String::as_str).collect();
    if let Some(foreign) = removed.iter().find(|u| !ours.contains(u.as_str())) {
        return Err(Error::RunDir {
            path: path.clone(),
            reason: format!(
                "lists {foreign}, which this run does not hold: dedup/ was computed from another run. \
                 Run `sieve dedup {}` again (or pass --keep-duplicates)",
                run.dir.display()
            ),
        });
    }
    Ok(Some(removed))
}

/// Ids of the pairs flagged in `RUN/pairs.parquet`.
fn flagged_ids(run: &Run) -> Result<HashSet<u64>> {
    let path = Layout::new(&run.dir).pairs();
    if !path.is_file() {
        return Err(Error::RunDir {
            path: run.dir.clone(),
            reason: "--drop-flagged needs pairs.parquet; make it with `sieve score RUN` first".into(),
        });
    }
    run.check_provenance(layout::PAIRS_SUMMARY, "score")?;
    let mut out = HashSet::new();
    crate::store::for_each_batch(&path, |batch| {
        let bad = || Error::RunDir { path: path.clone(), reason: "expected `id` (uint64) and `flag` columns".into() };
        let ids = batch.column_by_name("id").and_then(|c| c.as_primitive_opt::<UInt64Type>()).ok_or_else(bad)?;
        let flags = batch.column_by_name("flag").ok_or_else(bad)?;
        for i in 0..batch.num_rows() {
            if flags.is_valid(i) {
                out.insert(ids.value(i));
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// Runs `sieve select`; returns the summary (also written to `RUN/selection/summary.json`, with
/// the selected uris in `RUN/selection/keep.txt`).
pub fn select(opts: &SelectOptions) -> Result<Summary> {
    let started = Instant::now();
    let run = Run::open(&opts.run)?;
    let items = Embedded::load(&run)?;
    let dev = device::open(opts.device)?;
    let meta = &run.meta;
    let n = items.len();

    let removed = if opts.use_dedup { removed_uris(&run)? } else { None };
    if opts.use_dedup && removed.is_none() {
        tracing::warn!(
            "{} has no dedup/remove.txt: duplicates are not dropped first (run `sieve dedup RUN`)",
            run.dir.display()
        );
    }
    let flagged = if opts.drop_flagged { Some(flagged_ids(&run)?) } else { None };
    let low_quality = opts
        .drop_flags
        .as_ref()
        .map(|f| {
            if Layout::new(&run.dir).quality().is_file() {
                run.check_provenance(layout::QUALITY_SUMMARY, "quality")?;
            }
            super::quality::flagged_ids(&run.dir, f)
        })
        .transpose()?;
    let needs_caption = opts.embedding != Embedding::Image;
    let (mut dropped_dup, mut dropped_flag, mut dropped_cap, mut dropped_quality) = (0, 0, 0, 0);
    let mut pool = Vec::with_capacity(n);
    for i in 0..n {
        let r = items.rows[i];
        if removed.as_ref().is_some_and(|s| s.contains(&meta.uri[r])) {
            dropped_dup += 1;
        } else if flagged.as_ref().is_some_and(|s| s.contains(&meta.id[r])) {
            dropped_flag += 1;
        } else if low_quality.as_ref().is_some_and(|s| s.contains(&meta.id[r])) {
            dropped_quality += 1;
        } else if needs_caption && !items.has_caption[i] {
            dropped_cap += 1;
        } else {
            pool.push(i);
        }
    }
    if pool.is_empty() {
        return Err(Error::RunDir {
            path: run.dir.clone(),
            reason: format!(
                "nothing to select from: {n} embedded, {dropped_dup} duplicates, {dropped_flag} flagged, \
                 {dropped_quality} of low quality and {dropped_cap} without a caption dropped"
            ),
        });
    }
    if opts.budget >= pool.len() {
        tracing::warn!(
            "budget {} is at least the pool of {} items: everything in the pool is selected",
            opts.budget,
            pool.len()
        );
    }

    let vectors = vectors(&items, &pool, opts.embedding)?;

    // The filters: which pool positions the strategy may pick from.
    let mut candidates: Vec<usize> = (0..pool.len()).collect();
    let score_percent = opts.score_percent.or(opts.reference.is_some().then_some(reference::DEFAULT_SCORE_PERCENT));
    let mut score = None;
    if let Some(percent) = score_percent {
        if !(percent > 0.0 && percent <= 100.0) {
            return Err(Error::InvalidArg { what: "--score-percent", reason: format!("{percent} is not in (0, 100]") });
        }
        if percent < 100.0 {
            let (pass, filter) = reference::top_percent(&reference::clip_scores(&items, &pool), percent);
            candidates.retain(|&j| pass[j]);
            score = Some(filter);
        }
    }
    let mut reference_summary = None;
    let mut reference_vectors = None;
    if let Some(path) = &opts.reference {
        let refs = reference::reference_vectors(&run, path, opts.embedding)?;
        let k = opts.reference_clusters.unwrap_or_else(|| default_clusters(pool.len()));
        let t = reference::target_clusters(&vectors, &refs, k, opts.seed, &dev)?;
        let in_target = t.pass.iter().filter(|&&p| p).count();
        candidates.retain(|&j| t.pass[j]);
        reference_summary = Some(reference::ReferenceSummary {
            run: path.display().to_string(),
            items: refs.rows(),
            clusters: t.clusters,
            target_clusters: t.target_clusters,
            in_target_clusters: in_target,
            score: score.take(),
            passed: candidates.len(),
            nearest_selected: 0.0,
            nearest_random: 0.0,
        });
        reference_vectors = Some(refs);
    }
    if candidates.is_empty() {
        return Err(Error::RunDir {
            path: run.dir.clone(),
            reason: format!(
                "nothing passes the filters: of a pool of {}, {} pass the CLIP-score filter{}",
                pool.len(),
                score
                    .as_ref()
                    .or(reference_summary.as_ref().and_then(|r| r.score.as_ref()))
                    .map_or(pool.len(), |s| s.passed),
                reference_summary
                    .as_ref()
                    .map(|r| format!(" and {} are in the clusters nearest the reference", r.in_target_clusters))
                    .unwrap_or_default()
            ),
        });
    }
    if candidates.len() < pool.len() && opts.budget > candidates.len() {
        tracing::warn!(
            "the filters leave {} items, fewer than the budget of {}: all of them are selected",
            candidates.len(),
            opts.budget
        );
    }

    // The buckets the budget is split over: one, or an audit group's concepts.
    let (buckets, quotas, bucket_names, mut balance_summary) = match &opts.balance {
        None => (vec![candidates.clone()], vec![opts.budget], Vec::new(), None),
        Some(b) => {
            let (concepts, by_id) = balance::read_audit(&run, &b.group)?;
            let bucket_of =
                balance::buckets_of(&concepts, &by_id, candidates.iter().map(|&j| meta.id[items.rows[pool[j]]]));
            let (buckets, quota, summary) = balance::plan(&concepts, &bucket_of, b, opts.budget)?;
            let buckets = buckets.into_iter().map(|b| b.into_iter().map(|i| candidates[i]).collect()).collect();
            let names = concepts.into_iter().chain([crate::audit::concepts::NONE.to_string()]).collect();
            (buckets, quota, names, Some(summary))
        }
    };
    let mut selection_clusters = 0;
    let mut chosen: Vec<usize> = Vec::with_capacity(opts.budget.min(candidates.len()));
    let mut picked_per_bucket = Vec::with_capacity(buckets.len());
    for (rows, &quota) in buckets.iter().zip(&quotas) {
        if quota == 0 || rows.is_empty() {
            picked_per_bucket.push(0);
            continue;
        }
        let k = opts.clusters.unwrap_or_else(|| default_clusters(rows.len()));
        selection_clusters = selection_clusters.max(k.min(rows.len()));
        let picked = pick::pick(&vectors, rows, quota, opts.strategy, k, opts.seed, &dev)?;
        picked_per_bucket.push(picked.len());
        chosen.extend(picked);
    }
    chosen.sort_unstable();
    if opts.balance.is_some() && chosen.len() < opts.budget.min(candidates.len()) {
        tracing::warn!(
            "the concepts --balance-to weighs hold too few items: {} selected, short of the budget of {}",
            chosen.len(),
            opts.budget
        );
    }
    if let Some(b) = &mut balance_summary {
        b.selected = bucket_names.iter().cloned().zip(picked_per_bucket).collect();
    }
    let random: Vec<usize> = {
        let mut r =
            rand::seq::index::sample(&mut StdRng::seed_from_u64(opts.seed), pool.len(), chosen.len()).into_vec();
        r.sort_unstable();
        r
    };

    let p = MeasureParams {
        min_share: diversity::DEFAULT_MIN_SHARE,
        nn_queries: diversity::DEFAULT_NN_QUERIES,
        probes: crate::index::clustered::DEFAULT_PROBES,
        seed: opts.seed,
    };
    if let (Some(r), Some(refs)) = (&mut reference_summary, &reference_vectors) {
        r.nearest_selected = reference::mean_nearest(refs, &vectors, &chosen, opts.seed);
        r.nearest_random = reference::mean_nearest(refs, &vectors, &random, opts.seed);
    }
    let measured = Clustered::new(vectors, diversity::DEFAULT_CLUSTERS, opts.seed.wrapping_add(1), &dev)?;
    let all: Vec<usize> = (0..pool.len()).collect();

    let files = Layout::new(&opts.run);
    let out_dir = files.selection_dir();
    std::fs::create_dir_all(&out_dir).map_err(|e| Error::io("creating", &out_dir, e))?;
    let mut lines = String::new();
    for &j in &chosen {
        lines.push_str(&meta.uri[items.rows[pool[j]]]);
        lines.push('\n');
    }
    write_atomic(&files.selection_keep(), |w| std::io::Write::write_all(w, lines.as_bytes()))?;
    let summary = Summary {
        sieve_version: env!("CARGO_PKG_VERSION").to_string(),
        run: opts.run.display().to_string(),
        run_fingerprint: run.fingerprint.clone(),
        strategy: opts.strategy.as_str().into(),
        embedding: opts.embedding.as_str().into(),
        budget: opts.budget,
        embedded: n,
        dedup_applied: removed.is_some(),
        dropped_duplicates: dropped_dup,
        dropped_flagged: dropped_flag,
        dropped_quality,
        drop_flags: opts.drop_flags.clone().unwrap_or_default(),
        dropped_no_caption: dropped_cap,
        pool: pool.len(),
        selected: chosen.len(),
        selection_clusters: (opts.strategy == Strategy::ClusterBalanced).then_some(selection_clusters.min(pool.len())),
        coverage_clusters: measured.k(),
        seed: opts.seed,
        pool_diversity: subset_diversity(&measured, &all, &p),
        selection_diversity: subset_diversity(&measured, &chosen, &p),
        random_diversity: subset_diversity(&measured, &random, &p),
        score,
        reference: reference_summary,
        balance: balance_summary,
    };
    let json = serde_json::to_vec_pretty(&summary).expect("summary serialises");
    write_atomic(&files.selection_summary(), |w| std::io::Write::write_all(w, &json))?;
    tracing::info!("select: {} of {} in {:.1?}", summary.selected, summary.pool, started.elapsed());
    Ok(summary)
}
