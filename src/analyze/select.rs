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
//! The summary compares the selection with a seeded random subset of the same size from the
//! same pool: Vendi score, effective rank and coverage of the pool's k-means clusters.

use std::collections::HashSet;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use arrow_array::Array;
use candle_core::Device;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::Serialize;

use super::common::Embedded;
use super::diversity::{self, Clustered, MeasureParams};
use crate::device::{self, DeviceSpec};
use crate::error::{Error, Result};
use crate::index::{dot, Matrix};
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
}

/// Greedy farthest-point selection of `budget` rows of `m` (all of them when fewer), starting
/// from `start`: each step takes the row least similar to everything taken so far (ties: the
/// lowest row). Returned in the order picked.
pub fn k_center(m: &Matrix, budget: usize, start: usize) -> Vec<usize> {
    let n = m.rows();
    let budget = budget.min(n);
    if budget == 0 {
        return Vec::new();
    }
    let mut picked = Vec::with_capacity(budget);
    let mut taken = vec![false; n];
    let mut nearest = vec![f32::NEG_INFINITY; n];
    let mut next = start;
    while picked.len() < budget {
        picked.push(next);
        taken[next] = true;
        let c = m.row(next);
        nearest.par_iter_mut().enumerate().for_each(|(i, s)| {
            *s = s.max(dot(c, m.row(i)));
        });
        // The untaken row with the lowest similarity to its nearest picked row.
        let best = nearest
            .par_iter()
            .enumerate()
            .filter(|&(i, _)| !taken[i])
            .min_by(|a, b| a.1.total_cmp(b.1).then(a.0.cmp(&b.0)));
        match best {
            Some((i, _)) => next = i,
            None => break,
        }
    }
    picked
}

/// How many of each cluster's items to take so the total is `budget` and the counts are as even
/// as the sizes allow (water-filling; leftovers go to the lowest cluster ids with room).
pub fn balanced_quota(sizes: &[usize], budget: usize) -> Vec<usize> {
    let total: usize = sizes.iter().sum();
    let budget = budget.min(total);
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&c| (sizes[c], c));
    let mut quota = vec![0usize; sizes.len()];
    let mut remaining = budget;
    for (done, &c) in order.iter().enumerate() {
        let left = sizes.len() - done;
        let share = remaining / left;
        quota[c] = sizes[c].min(share);
        remaining -= quota[c];
    }
    for c in 0..sizes.len() {
        if remaining == 0 {
            break;
        }
        if quota[c] < sizes[c] {
            quota[c] += 1;
            remaining -= 1;
        }
    }
    quota
}

/// Cluster-balanced selection of `budget` rows of `m` over `k` seeded k-means clusters.
pub fn cluster_balanced(m: &Matrix, budget: usize, k: usize, seed: u64, device: &Device) -> Result<Vec<usize>> {
    let n = m.rows();
    if budget >= n {
        return Ok((0..n).collect());
    }
    let c = Clustered::new(m.clone(), k, seed, device)?;
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); c.k()];
    for (i, t) in c.assigned.iter().enumerate() {
        members[t.best as usize].push(i);
    }
    let quota = balanced_quota(&members.iter().map(Vec::len).collect::<Vec<_>>(), budget);
    let d = m.dim();
    let picked: Vec<Vec<usize>> = members
        .par_iter()
        .enumerate()
        .map(|(ci, rows)| {
            if quota[ci] == 0 {
                return Vec::new();
            }
            let sub = Matrix::gather(c.vectors.as_slice(), d, rows);
            let centroid = c.centroids.row(ci);
            let start = (0..rows.len())
                .max_by(|&a, &b| dot(centroid, sub.row(a)).total_cmp(&dot(centroid, sub.row(b))).then(b.cmp(&a)))
                .unwrap_or(0);
            k_center(&sub, quota[ci], start).into_iter().map(|j| rows[j]).collect()
        })
        .collect();
    let mut out: Vec<usize> = picked.into_iter().flatten().collect();
    out.sort_unstable();
    Ok(out)
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
    let file = std::fs::File::open(&path).map_err(|e| Error::io("reading", &path, e))?;
    let parquet_err = |source| Error::Parquet { path: path.clone(), source };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?.build().map_err(parquet_err)?;
    let mut out = HashSet::new();
    for batch in reader {
        let batch = batch.map_err(|e| parquet_err(e.into()))?;
        let bad = || Error::RunDir { path: path.clone(), reason: "expected `id` (uint64) and `flag` columns".into() };
        let ids = batch.column_by_name("id").and_then(|c| c.as_primitive_opt::<UInt64Type>()).ok_or_else(bad)?;
        let flags = batch.column_by_name("flag").ok_or_else(bad)?;
        for i in 0..batch.num_rows() {
            if flags.is_valid(i) {
                out.insert(ids.value(i));
            }
        }
    }
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

    let d = items.image.dim();
    let mut vectors = match opts.embedding {
        Embedding::Image => Matrix::gather(items.image.as_slice(), d, &pool),
        Embedding::Text => Matrix::gather(items.text.as_slice(), d, &pool),
        Embedding::Joint => {
            let mut img = Matrix::gather(items.image.as_slice(), d, &pool);
            let mut txt = Matrix::gather(items.text.as_slice(), d, &pool);
            diversity::normalise_rows(&mut img);
            diversity::normalise_rows(&mut txt);
            let mut joint = Vec::with_capacity(pool.len() * 2 * d);
            for j in 0..pool.len() {
                joint.extend_from_slice(img.row(j));
                joint.extend_from_slice(txt.row(j));
            }
            Matrix::new(2 * d, joint)?
        }
    };
    diversity::normalise_rows(&mut vectors);

    let selection_clusters =
        opts.clusters.unwrap_or_else(|| ((pool.len() as f64).sqrt().round() as usize).clamp(1, 1000));
    let chosen: Vec<usize> = match opts.strategy {
        Strategy::ClusterBalanced => cluster_balanced(&vectors, opts.budget, selection_clusters, opts.seed, &dev)?,
        Strategy::KCenter => {
            // Start from the item nearest the pool's mean direction.
            let mut mean = vec![0f32; vectors.dim()];
            for r in 0..vectors.rows() {
                for (m, x) in mean.iter_mut().zip(vectors.row(r)) {
                    *m += x;
                }
            }
            let start = (0..vectors.rows())
                .max_by(|&a, &b| dot(&mean, vectors.row(a)).total_cmp(&dot(&mean, vectors.row(b))).then(b.cmp(&a)))
                .unwrap_or(0);
            let mut c = k_center(&vectors, opts.budget, start);
            c.sort_unstable();
            c
        }
    };
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
    };
    let json = serde_json::to_vec_pretty(&summary).expect("summary serialises");
    write_atomic(&files.selection_summary(), |w| std::io::Write::write_all(w, &json))?;
    tracing::info!("select: {} of {} in {:.1?}", summary.selected, summary.pool, started.elapsed());
    Ok(summary)
}
