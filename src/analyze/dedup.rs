//! `sieve dedup`: exact, perceptual and semantic duplicates of a run, in groups with one kept
//! item each, written to `RUN/dedup/`.
//!
//! Kinds:
//! - `exact`: identical file bytes (sha256 recorded at ingest);
//! - `perceptual`: 64-bit pHashes within a Hamming distance;
//! - `image`: image embeddings with cosine ≥ the image threshold;
//! - `caption`: caption embeddings with cosine ≥ the caption threshold;
//! - `joint`: both image and caption near-duplicates.
//!
//! Every kind is grouped and gets its kept items by the same keep order, so no item is both
//! kept over another and removed in its favour; an item is removed when it is a non-kept member
//! of a group of one of the `remove_kinds`. With `against`, the old run's items are always kept
//! and only this run's items are removed.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;
use std::str::FromStr;
use std::time::Instant;

use serde::Serialize;

use super::decision::{
    decide, degree_centrality, diagnostics, removal_groups, report_groups, Bridge, GroupStats, OutGroup, Relation,
};
pub use super::dedup_out::{bridges_schema, captions_schema, groups_schema, pairs_schema};
use super::dedup_out::{write_bridges, write_captions, write_groups, write_pairs};
use super::groups::Grouping;
use super::perceptual;
use super::stream::PairSource;
pub use super::stream::CACHE_PAIRS_PER_ITEM;
use crate::device::{self, DeviceSpec};
use crate::error::{Error, Result};
use crate::index::clustered::cluster_pieces;
use crate::index::clustered::DEFAULT_BORDER;
use crate::index::exact::ExactBlocks;
use crate::index::hnsw::HnswParams;
use crate::index::kmeans::{self, KMeansParams};
use crate::index::merge::{merge_each, Held, ShiftB, SortedBatches};
use crate::index::{
    default_clusters, dot, ClusteredIndex, ExactIndex, HnswIndex, IndexChoice, Matrix, NeighbourIndex, Pair,
};
use crate::media::fingerprint::{Fingerprint, DEFAULT_MIN_CORRELATION};
use crate::model::registry;
use crate::store::{write_atomic, Run};

/// A kind of duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Exact,
    Perceptual,
    Image,
    Caption,
    Joint,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Exact, Kind::Perceptual, Kind::Image, Kind::Caption, Kind::Joint];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Exact => "exact",
            Kind::Perceptual => "perceptual",
            Kind::Image => "image",
            Kind::Caption => "caption",
            Kind::Joint => "joint",
        }
    }

    /// Parses a comma-separated list (`all` for every kind).
    pub fn parse_list(s: &str, what: &'static str) -> Result<Vec<Kind>> {
        if s.trim() == "all" {
            return Ok(Kind::ALL.to_vec());
        }
        let mut kinds =
            s.split(',').map(|k| k.trim().parse::<Kind>()).collect::<Result<Vec<_>>>().map_err(|e| match e {
                Error::InvalidArg { reason, .. } => Error::InvalidArg { what, reason },
                e => e,
            })?;
        kinds.sort_unstable();
        kinds.dedup();
        Ok(kinds)
    }
}

impl FromStr for Kind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| Error::InvalidArg {
            what: "--kinds",
            reason: format!("`{s}`: expected exact, perceptual, image, caption or joint"),
        })
    }
}

/// `--keep`: which item of a group is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepPolicy {
    /// `best-score` when the run has captions, else `largest`.
    Auto,
    /// Highest image–caption cosine (items without a caption last), then largest, then id.
    BestScore,
    /// Most pixels, then lowest id.
    Largest,
    /// Lowest id (input order).
    First,
    /// Most similar to the rest of its group (components), or with the most and closest
    /// duplicates (star), then lowest id.
    Central,
}

impl KeepPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::BestScore => "best-score",
            Self::Largest => "largest",
            Self::First => "first",
            Self::Central => "central",
        }
    }
}

impl FromStr for KeepPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        [Self::Auto, Self::BestScore, Self::Largest, Self::First, Self::Central]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| Error::InvalidArg {
                what: "--keep",
                reason: format!("`{s}`: expected auto, best-score, largest, first or central"),
            })
    }
}

/// `--caption-policy`: which caption a kept item carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptionPolicy {
    /// Its own.
    Kept,
    /// The caption that fits its image best (image–caption cosine) among its own and those of
    /// the items removed in its favour; `dedup/captions.parquet` lists every replacement.
    Best,
}

impl CaptionPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kept => "kept",
            Self::Best => "best",
        }
    }
}

impl FromStr for CaptionPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        [Self::Kept, Self::Best].into_iter().find(|k| k.as_str() == s).ok_or_else(|| Error::InvalidArg {
            what: "--caption-policy",
            reason: format!("`{s}`: expected kept or best"),
        })
    }
}

/// Everything `sieve dedup` needs, validated.
#[derive(Debug, Clone)]
pub struct DedupOptions {
    pub run: PathBuf,
    pub against: Option<PathBuf>,
    pub kinds: Vec<Kind>,
    pub remove_kinds: Vec<Kind>,
    pub image_threshold: Option<f32>,
    pub caption_threshold: Option<f32>,
    pub perceptual_distance: Option<u32>,
    /// Least correlation of the low-frequency DCT coefficients that confirms a perceptual pair.
    pub perceptual_correlation: Option<f32>,
    pub index: IndexChoice,
    pub clusters: Option<usize>,
    pub border: f32,
    pub seed: u64,
    /// k-means training rows (a seeded sample) [default: 256 per cluster].
    pub sample: Option<usize>,
    /// Centroids from `sieve dedup-centroids` to search with, instead of training k-means here.
    pub centroids: Option<PathBuf>,
    /// Take the image and caption pairs from these `sieve dedup-partition` results instead of
    /// searching (`sieve dedup-combine`).
    pub from_partitions: Option<PathBuf>,
    pub grouping: Grouping,
    pub keep: KeepPolicy,
    pub device: DeviceSpec,
    /// Also write every pair found to `dedup/pairs.parquet`.
    pub write_pairs: bool,
    /// Which caption a kept item carries (`dedup/captions.parquet`).
    pub caption_policy: CaptionPolicy,
    /// Graph settings for `--index hnsw`.
    pub hnsw: HnswParams,
    /// Pairs per item a kind's pair stream may keep in memory to replay instead of searching
    /// again (`--cache-pairs-per-item`; 0 searches again on every pass). Outputs do not depend
    /// on it, only time and memory.
    pub cache_pairs_per_item: usize,
}

impl DedupOptions {
    /// Defaults for `run` (as the CLI's defaults).
    pub fn new(run: impl Into<PathBuf>) -> Self {
        Self {
            run: run.into(),
            against: None,
            kinds: Kind::ALL.to_vec(),
            remove_kinds: vec![Kind::Exact, Kind::Perceptual, Kind::Image],
            image_threshold: None,
            caption_threshold: None,
            perceptual_distance: None,
            perceptual_correlation: None,
            index: IndexChoice::Auto,
            clusters: None,
            border: DEFAULT_BORDER,
            seed: 0,
            sample: None,
            centroids: None,
            from_partitions: None,
            grouping: Grouping::Star,
            keep: KeepPolicy::Auto,
            device: DeviceSpec::Auto,
            write_pairs: false,
            caption_policy: CaptionPolicy::Best,
            hnsw: HnswParams::default(),
            cache_pairs_per_item: CACHE_PAIRS_PER_ITEM,
        }
    }
}

/// Thresholds used, as written to the summary.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Thresholds {
    pub image: f32,
    pub caption: f32,
    pub perceptual_distance: u32,
    pub perceptual_correlation: f32,
}

/// Per-kind counts in the summary.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct KindSummary {
    pub groups: usize,
    /// Items in groups, kept ones included.
    pub items_in_groups: usize,
    /// Items of this run that are non-kept members of a group of this kind.
    pub duplicates: usize,
    pub largest_group: usize,
    /// Pairs of this kind between two of its groups (`bridges.parquet`).
    pub bridges: usize,
}

/// `dedup/summary.json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub sieve_version: String,
    pub run: String,
    /// The fingerprint of the run this was computed from ([`crate::store::Run::fingerprint`]);
    /// readers refuse or recompute an output whose fingerprint is not their run's.
    pub run_fingerprint: String,
    pub against: Option<String>,
    pub model: String,
    pub records: u64,
    /// Records considered (embedded); the others were skipped at ingest and are in neither list.
    pub embedded: usize,
    pub against_items: usize,
    pub thresholds: Thresholds,
    pub index: String,
    pub grouping: String,
    pub keep: String,
    pub kinds: BTreeMap<String, KindSummary>,
    pub remove_kinds: Vec<String>,
    pub kept: usize,
    pub removed: usize,
    /// `--caption-policy`.
    pub caption_policy: String,
    /// Kept items that carry a removed copy's better-fitting caption (`captions.parquet`).
    pub captions_replaced: usize,
    /// Captions of removed items that no kept item carries.
    pub captions_dropped: usize,
    /// removed / embedded.
    pub duplicate_rate: f64,
}

/// One item: an embedded row of this run or of the `--against` run.
pub(crate) struct Items {
    /// Items `0..n_new` are this run's, the rest the old run's.
    pub(crate) n_new: usize,
    pub(crate) id: Vec<u64>,
    pub(crate) uri: Vec<String>,
    sha256: Vec<Option<String>>,
    fingerprint: Vec<Option<Fingerprint>>,
    pixels: Vec<u64>,
    pub(crate) has_caption: Vec<bool>,
    pub(crate) image: Matrix,
    /// Caption vectors (zero rows for items without one).
    pub(crate) text: Option<Matrix>,
}

impl Items {
    fn len(&self) -> usize {
        self.id.len()
    }

    pub(crate) fn is_old(&self, i: u32) -> bool {
        i as usize >= self.n_new
    }
}

pub(crate) fn embedded_rows(run: &Run) -> Vec<usize> {
    (0..run.meta.len()).filter(|&r| run.meta.embedded[r]).collect()
}

pub(crate) fn load_items(new: &Run, old: Option<&Run>, need_text: bool) -> Result<Items> {
    let d = new.manifest.embed_dim;
    let mut items = Items {
        n_new: 0,
        id: Vec::new(),
        uri: Vec::new(),
        sha256: Vec::new(),
        fingerprint: Vec::new(),
        pixels: Vec::new(),
        has_caption: Vec::new(),
        image: Matrix::new(d, Vec::new())?,
        text: None,
    };
    let mut img = Vec::new();
    let mut txt = Vec::new();
    for (k, run) in std::iter::once(new).chain(old).enumerate() {
        let rows = embedded_rows(run);
        if k == 0 {
            items.n_new = rows.len();
        }
        let m = &run.meta;
        let all_img = run.embeddings(false)?;
        if img.is_empty() && rows.len() == m.len() {
            img = all_img; // every row embedded: no copy
        } else {
            for &r in &rows {
                img.extend_from_slice(&all_img[r * d..(r + 1) * d]);
            }
        }
        let all_txt = if need_text { Some(run.embeddings(true)?) } else { None };
        for &r in &rows {
            items.id.push(m.id[r]);
            items.uri.push(m.uri[r].clone());
            items.sha256.push(m.sha256[r].clone());
            items.fingerprint.push(m.fingerprint.as_ref().and_then(|f| f[r]));
            items.pixels.push(m.width[r].unwrap_or(0) as u64 * m.height[r].unwrap_or(0) as u64);
            let tv = all_txt.as_ref().map(|t| &t[r * d..(r + 1) * d]);
            let has = m.caption[r].is_some() && tv.is_some_and(|v| v.iter().any(|&x| x != 0.0));
            items.has_caption.push(has);
            if let Some(tv) = tv {
                txt.extend_from_slice(tv);
            }
        }
    }
    items.image = Matrix::new(d, img)?;
    if need_text {
        items.text = Some(Matrix::new(d, txt)?);
    }
    Ok(items)
}

/// Global keep order: old items first (they are already in the corpus), then by policy.
pub(crate) fn keep_rank(items: &Items, policy: KeepPolicy, centrality: Option<&[f32]>) -> Vec<u32> {
    let n = items.len();
    let score: Vec<f32> = (0..n)
        .map(|i| match (&items.text, items.has_caption[i]) {
            (Some(t), true) => dot(items.image.row(i), t.row(i)),
            _ => f32::NEG_INFINITY,
        })
        .collect();
    let mut order: Vec<u32> = (0..n as u32).collect();
    let key_id = |i: usize| (items.is_old(i as u32) as u8 ^ 1, items.id[i]);
    order.sort_by(|&a, &b| {
        let (a, b) = (a as usize, b as usize);
        let old = (!items.is_old(b as u32)).cmp(&!items.is_old(a as u32)).reverse();
        let by_policy = match policy {
            KeepPolicy::First | KeepPolicy::Auto => std::cmp::Ordering::Equal,
            KeepPolicy::Largest => items.pixels[b].cmp(&items.pixels[a]),
            KeepPolicy::BestScore => score[b].total_cmp(&score[a]).then(items.pixels[b].cmp(&items.pixels[a])),
            KeepPolicy::Central => {
                let c = centrality.expect("central needs centrality");
                c[b].total_cmp(&c[a])
            }
        };
        old.then(by_policy).then(key_id(a).cmp(&key_id(b)))
    });
    let mut rank = vec![0u32; n];
    for (r, &i) in order.iter().enumerate() {
        rank[i as usize] = r as u32;
    }
    rank
}

/// A kind's similarity between two items.
type SimFn<'a> = Box<dyn Fn(u32, u32) -> f32 + 'a>;

fn similarity_fn(kind: Kind, items: &Items) -> SimFn<'_> {
    match kind {
        Kind::Exact => Box::new(|_, _| 1.0),
        Kind::Perceptual => {
            let f = &items.fingerprint;
            Box::new(move |a: u32, b: u32| match (&f[a as usize], &f[b as usize]) {
                (Some(x), Some(y)) => 1.0 - crate::media::fingerprint::compare(x, y).0 as f32 / 64.0,
                _ => 0.0,
            })
        }
        Kind::Image => Box::new(move |a: u32, b: u32| dot(items.image.row(a as usize), items.image.row(b as usize))),
        Kind::Caption | Kind::Joint => {
            let t = items.text.as_ref().expect("text loaded for caption kinds");
            let joint = kind == Kind::Joint;
            Box::new(move |a: u32, b: u32| {
                let c = dot(t.row(a as usize), t.row(b as usize));
                if joint {
                    c.min(dot(items.image.row(a as usize), items.image.row(b as usize)))
                } else {
                    c
                }
            })
        }
    }
}

/// The result of one kind.
pub(crate) struct KindResult {
    pub(crate) kind: Kind,
    pub(crate) groups: Vec<OutGroup>,
    /// Each group row's similarity to the item kept in its place.
    pub(crate) sims: Vec<Vec<f32>>,
    pub(crate) stats: Vec<GroupStats>,
    pub(crate) bridges: Vec<Bridge>,
}

/// A vector space searched for near-duplicate pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Space {
    /// The image embeddings of every item.
    Image,
    /// The caption embeddings of the items that have a caption.
    Caption,
}

impl Space {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Space::Image => "image",
            Space::Caption => "caption",
        }
    }
}

/// The items with a caption: row `r` of the caption space is item `caption_items(items)[r]`.
pub(crate) fn caption_items(items: &Items) -> Vec<usize> {
    (0..items.len()).filter(|&i| items.has_caption[i]).collect()
}

/// The vectors of `space` and, for the caption space, the item each row is.
pub(crate) fn space_vectors(items: &Items, space: Space) -> (std::borrow::Cow<'_, Matrix>, Option<Vec<usize>>) {
    match space {
        Space::Image => (std::borrow::Cow::Borrowed(&items.image), None),
        Space::Caption => {
            let t = items.text.as_ref().expect("text loaded for the caption space");
            let with = caption_items(items);
            (std::borrow::Cow::Owned(Matrix::gather(t.as_slice(), t.dim(), &with)), Some(with))
        }
    }
}

/// Pairs of space rows mapped to item indices (`a < b`, sorted, repeats dropped).
pub(crate) fn to_items(pairs: Vec<Pair>, rows: Option<&[usize]>) -> Vec<Pair> {
    let Some(with) = rows else { return pairs };
    let mut p: Vec<Pair> = pairs
        .into_iter()
        .map(|p| {
            let (a, b) = (with[p.a as usize] as u32, with[p.b as usize] as u32);
            Pair { a: a.min(b), b: a.max(b), sim: p.sim }
        })
        .collect();
    crate::index::sort_dedup(&mut p);
    p
}

/// k-means settings for clustering the `rows` vectors of a space into (at most) `k` clusters;
/// `sieve dedup --clusters` and `sieve dedup-centroids` both train with these.
pub(crate) fn kmeans_params(k: usize, rows: usize, opts: &DedupOptions) -> KMeansParams {
    KMeansParams { sample: opts.sample, ..KMeansParams::new(k.min(rows).max(1), opts.seed) }
}

/// The pairs of `space` among the items, in item indices, and the name of the index used:
/// searched here, or read from `sieve dedup-partition` results. Exact and clustered search, also
/// with `--against`, stream (each read searches again once the pairs outgrow the source's
/// budget; the k-means clusters are trained and assigned once); HNSW's pairs and partition files
/// are given all at once, held.
fn space_source<'a>(
    items: &'a Items,
    space: Space,
    threshold: f32,
    opts: &DedupOptions,
    device: &candle_core::Device,
    fixed: Option<&super::partition::Fixed>,
    centroids: Option<&super::partition::Centroids>,
) -> Result<(PairSource<'a>, String)> {
    let per_item = opts.cache_pairs_per_item;
    if let Some(f) = fixed {
        let (pairs, name) = f.pairs(space, items)?;
        return Ok((PairSource::held(pairs), name));
    }
    let (vectors, rows) = space_vectors(items, space);
    if vectors.rows() == 0 {
        return Ok((PairSource::held(Vec::new()), String::from("none")));
    }
    let n_new = match &rows {
        Some(with) => with.iter().filter(|&&i| i < items.n_new).count(),
        None => items.n_new,
    };
    let centroids = centroids.map(|c| c.space(space)).transpose()?;
    let n = items.len();
    let device = device.clone();
    // Rows of the space map to items in ascending order, so each batch stays sorted.
    let to_items = move |batch: Vec<Pair>| -> Vec<Pair> {
        match &rows {
            Some(with) => batch
                .into_iter()
                .map(|p| Pair { a: with[p.a as usize] as u32, b: with[p.b as usize] as u32, sim: p.sim })
                .collect(),
            None => batch,
        }
    };
    if n_new == vectors.rows() {
        // Self-search over this run's items.
        let (search, name) = settle(build_index(&vectors, opts, &device, centroids.as_ref())?, threshold, None)?;
        let search = match search {
            Search::Held(pairs) => return Ok((PairSource::held(to_items(pairs)), name)),
            s => s,
        };
        let produce = move |f: &mut dyn FnMut(Vec<Pair>) -> Result<()>| match &search {
            Search::Exact => {
                ExactIndex::new(&vectors, device.clone()).self_pairs_each(threshold, &mut |b| f(to_items(b)))
            }
            Search::Clusters(members, _) => {
                let pieces = cluster_pieces(&vectors, &vectors, None, members, threshold, &device, &|_| true);
                merge_each(pieces, &mut |b| f(to_items(b)))
            }
            Search::Held(_) => unreachable!("held pairs returned above"),
        };
        return Ok((PairSource::new(n, per_item, Box::new(produce)), name));
    }
    // This run's items among themselves, and against the old run's.
    let d = vectors.dim();
    let new = Matrix::new(d, vectors.block(0, n_new).to_vec())?;
    let old = Matrix::new(d, vectors.as_slice()[n_new * d..].to_vec())?;
    drop(vectors);
    let (within, name) = settle(build_index(&new, opts, &device, None)?, threshold, None)?;
    let across = if old.rows() > 0 && new.rows() > 0 {
        Some(settle(build_index(&old, opts, &device, None)?, threshold, Some(&new))?.0)
    } else {
        None
    };
    let produce = move |f: &mut dyn FnMut(Vec<Pair>) -> Result<()>| {
        let mut pieces: Vec<Box<dyn SortedBatches + '_>> = Vec::new();
        match &within {
            Search::Exact => pieces.push(Box::new(ExactBlocks::new(&new, &new, threshold, true, device.clone()))),
            Search::Clusters(members, _) => {
                pieces.extend(cluster_pieces(&new, &new, None, members, threshold, &device, &|_| true))
            }
            Search::Held(pairs) => pieces.push(Box::new(Held::new(pairs.clone()))),
        }
        // The old run's rows are numbered after this run's.
        let offset = n_new as u32;
        match &across {
            None => {}
            Some(Search::Exact) => {
                pieces.push(shift(Box::new(ExactBlocks::new(&new, &old, threshold, false, device.clone())), offset))
            }
            Some(Search::Clusters(members, q_members)) => pieces.extend(
                cluster_pieces(&new, &old, q_members.as_deref(), members, threshold, &device, &|_| true)
                    .into_iter()
                    .map(|p| shift(p, offset)),
            ),
            Some(Search::Held(pairs)) => pieces.push(shift(Box::new(Held::new(pairs.clone())), offset)),
        }
        merge_each(pieces, &mut |b| f(to_items(b)))
    };
    Ok((PairSource::new(n, per_item, Box::new(produce)), name))
}

/// `inner`'s pairs with `b` moved up by `offset`.
fn shift<'s>(inner: Box<dyn SortedBatches + 's>, offset: u32) -> Box<dyn SortedBatches + 's> {
    Box::new(ShiftB { inner, offset })
}

/// The index [`build_index`] chose for a collection.
enum Built<'a> {
    Exact(ExactIndex<'a>),
    Clusters(ClusteredIndex<'a>),
    Hnsw(HnswIndex<'a>),
}

/// A search settled once, so each read of its pairs only searches.
enum Search {
    /// Exact search, run in full on each read.
    Exact,
    /// The clusters' members (k-means trained and rows assigned once), and for a search of
    /// queries against them, the queries in each cluster; each cluster is searched on each read.
    Clusters(Vec<Vec<u32>>, Option<Vec<Vec<u32>>>),
    /// HNSW's pairs (its search gives them all at once), held.
    Held(Vec<Pair>),
}

/// Settles `built` for the self-search of its collection, or for searching `queries` against it;
/// with the index's name.
fn settle(built: Built<'_>, threshold: f32, queries: Option<&Matrix>) -> Result<(Search, String)> {
    Ok(match built {
        Built::Exact(i) => (Search::Exact, i.name()),
        Built::Clusters(i) => {
            let name = i.name();
            let q_members = queries.map(|q| i.query_members(q)).transpose()?;
            (Search::Clusters(i.into_members(), q_members), name)
        }
        Built::Hnsw(i) => {
            let pairs = match queries {
                Some(q) => i.range_search(q, threshold)?,
                None => i.self_pairs(threshold)?,
            };
            if pairs.len() > CACHE_PAIRS_PER_ITEM.saturating_mul(i.len()) {
                tracing::warn!(
                    "--index hnsw: {} pairs held in memory ({} MB): HNSW gives its pairs all at once; exact and \
                     clustered search (--index exact or clusters) hand them over a block at a time",
                    pairs.len(),
                    pairs.len() * size_of::<Pair>() / 1_000_000
                );
            }
            (Search::Held(pairs), i.name())
        }
    })
}

fn build_index<'a>(
    m: &'a Matrix,
    opts: &DedupOptions,
    device: &candle_core::Device,
    centroids: Option<&Matrix>,
) -> Result<Built<'a>> {
    if let Some(c) = centroids {
        let assigned = kmeans::assign(m, c, device)?;
        return Ok(Built::Clusters(ClusteredIndex::from_assignment(
            m,
            c.clone(),
            &assigned,
            opts.border,
            device.clone(),
        )));
    }
    let clustered = |k: usize| -> Result<Built<'a>> {
        Ok(Built::Clusters(ClusteredIndex::build(m, kmeans_params(k, m.rows(), opts), opts.border, device.clone())?))
    };
    if m.rows() < 2 {
        // Nothing to cluster (e.g. the caption kind of a run without captions).
        return Ok(Built::Exact(ExactIndex::new(m, device.clone())));
    }
    if let Some(k) = opts.clusters {
        return clustered(k);
    }
    Ok(match opts.index.resolve(m.rows(), device) {
        IndexChoice::Hnsw => Built::Hnsw(HnswIndex::build(m, opts.hnsw)),
        IndexChoice::Clusters => return clustered(default_clusters(m.rows())),
        _ => Built::Exact(ExactIndex::new(m, device.clone())),
    })
}

/// The thresholds `opts` asks for, the run's model defaults where it names none, validated.
pub(crate) fn resolve_thresholds(run: &Run, opts: &DedupOptions) -> Result<Thresholds> {
    let defaults = registry::dedup_defaults(&run.manifest.model.id);
    let thresholds = Thresholds {
        image: opts.image_threshold.unwrap_or(defaults.image),
        caption: opts.caption_threshold.unwrap_or(defaults.caption),
        perceptual_distance: opts.perceptual_distance.unwrap_or(defaults.perceptual_distance),
        perceptual_correlation: opts.perceptual_correlation.unwrap_or(DEFAULT_MIN_CORRELATION),
    };
    if !(-1.0..=1.0).contains(&thresholds.perceptual_correlation) {
        return Err(Error::InvalidArg {
            what: "--perceptual-correlation",
            reason: format!("{} is not a correlation in [-1, 1]", thresholds.perceptual_correlation),
        });
    }
    for (what, t) in [("--image-threshold", thresholds.image), ("--caption-threshold", thresholds.caption)] {
        if !(-1.0..=1.0).contains(&t) {
            return Err(Error::InvalidArg { what, reason: format!("{t} is not a cosine similarity in [-1, 1]") });
        }
    }
    if thresholds.perceptual_distance > 32 {
        return Err(Error::InvalidArg {
            what: "--perceptual-distance",
            reason: format!(
                "{}: at most 32 of 64 bits (half the bits differ between unrelated images)",
                thresholds.perceptual_distance
            ),
        });
    }
    Ok(thresholds)
}

/// Each kind of `opts.kinds` as a [`Relation`] among `items` at `thresholds`, and the name of the
/// neighbour index used. Pairs are read once here (to count them); see [`PairSource`].
pub(crate) fn find_relations<'a>(
    items: &'a Items,
    thresholds: &Thresholds,
    opts: &DedupOptions,
    dev: &candle_core::Device,
    fixed: Option<&super::partition::Fixed>,
    centroids: Option<&super::partition::Centroids>,
) -> Result<(Vec<(Kind, Relation<'a>)>, String)> {
    let allowed = move |a: u32, b: u32| !(items.is_old(a) && items.is_old(b));
    let n = items.len();

    let mut index_name = String::from("none");
    let mut image_pairs: Option<Rc<PairSource<'a>>> = None;
    let mut relations: Vec<(Kind, Relation)> = Vec::new();
    for &kind in &opts.kinds {
        let t0 = Instant::now();
        let relation = match kind {
            Kind::Exact => {
                // Items sharing a sha256 (the old run's copies among themselves are not groups).
                let mut by_hash: HashMap<&str, Vec<u32>> = HashMap::new();
                for (i, h) in items.sha256.iter().enumerate() {
                    if let Some(h) = h {
                        by_hash.entry(h.as_str()).or_default().push(i as u32);
                    }
                }
                let mut sets: Vec<Vec<u32>> =
                    by_hash.into_values().filter(|s| s.len() > 1 && s.iter().any(|&i| !items.is_old(i))).collect();
                sets.sort_unstable();
                Relation::Sets(sets)
            }
            Kind::Perceptual => {
                if items.fingerprint.iter().all(Option::is_none) {
                    tracing::warn!(
                        "no perceptual fingerprints in the run (made by an older sieve, or nothing decoded); perceptual \
                         dedup skipped. Re-embed with this version (`sieve embed INPUT --out RUN --overwrite`) to \
                         find re-encoded, resized, framed and mirrored copies"
                    );
                    continue;
                }
                let (distance, correlation) = (thresholds.perceptual_distance, thresholds.perceptual_correlation);
                Relation::Pairs(Rc::new(PairSource::new(
                    n,
                    opts.cache_pairs_per_item,
                    Box::new(move |f| {
                        perceptual::fingerprint_pairs_each(&items.fingerprint, distance, correlation, allowed, f)
                    }),
                )))
            }
            Kind::Image | Kind::Joint => {
                let pairs = match &image_pairs {
                    Some(p) => p.clone(),
                    None => {
                        let (p, name) =
                            space_source(items, Space::Image, thresholds.image, opts, dev, fixed, centroids)?;
                        index_name = name;
                        let p = Rc::new(p);
                        image_pairs = Some(p.clone());
                        p
                    }
                };
                if kind == Kind::Image {
                    Relation::Pairs(pairs)
                } else if !items.has_caption.iter().any(|&c| c) {
                    // No captions, no joint pairs: not worth a search.
                    Relation::Pairs(Rc::new(PairSource::held(Vec::new())))
                } else {
                    let t = items.text.as_ref().expect("text loaded for joint");
                    let threshold = thresholds.caption;
                    let joint = move |f: &mut dyn FnMut(Vec<Pair>) -> Result<()>| {
                        pairs.each(&mut |batch| {
                            f(batch
                                .iter()
                                .filter(|p| items.has_caption[p.a as usize] && items.has_caption[p.b as usize])
                                .filter_map(|p| {
                                    let c = dot(t.row(p.a as usize), t.row(p.b as usize));
                                    (c >= threshold).then_some(Pair { sim: p.sim.min(c), ..*p })
                                })
                                .collect())
                        })
                    };
                    Relation::Pairs(Rc::new(PairSource::new(n, opts.cache_pairs_per_item, Box::new(joint))))
                }
            }
            Kind::Caption => {
                let (p, name) = space_source(items, Space::Caption, thresholds.caption, opts, dev, fixed, centroids)?;
                if index_name == "none" {
                    index_name = name;
                }
                Relation::Pairs(Rc::new(p))
            }
        };
        tracing::info!("{}: {} ({:.2}s)", kind.as_str(), relation.describe()?, t0.elapsed().as_secs_f64());
        relations.push((kind, relation));
    }

    Ok((relations, index_name))
}

/// Runs `sieve dedup`; returns the summary (also written to `RUN/dedup/summary.json`).
pub fn dedup(opts: &DedupOptions) -> Result<Summary> {
    let started = Instant::now();
    let run = Run::open(&opts.run)?;
    let old = match &opts.against {
        Some(p) => {
            let old = Run::open(p)?;
            check_same_model(&run, &old)?;
            Some(old)
        }
        None => None,
    };
    let thresholds = resolve_thresholds(&run, opts)?;
    if (opts.centroids.is_some() || opts.from_partitions.is_some()) && old.is_some() {
        return Err(Error::InvalidArg {
            what: "--against",
            reason: "cannot be combined with --centroids or partitioned dedup; run `sieve dedup --against` in one \
                     process"
                .into(),
        });
    }
    let fixed = match &opts.from_partitions {
        Some(dir) => Some(super::partition::Fixed::read(dir, &run, &thresholds, opts)?),
        None => None,
    };
    let centroids = match &opts.centroids {
        Some(dir) => Some(super::partition::Centroids::load(dir, &run)?),
        None => None,
    };
    let need_text = opts.kinds.iter().any(|k| matches!(k, Kind::Caption | Kind::Joint))
        || matches!(opts.keep, KeepPolicy::Auto | KeepPolicy::BestScore)
        || opts.caption_policy == CaptionPolicy::Best;
    let items = load_items(&run, old.as_ref(), need_text)?;
    let items = &items;
    let n = items.len();
    let policy = match opts.keep {
        KeepPolicy::Auto if items.has_caption.iter().any(|&c| c) => KeepPolicy::BestScore,
        KeepPolicy::Auto => KeepPolicy::Largest,
        p => p,
    };
    let dev = device::open(opts.device)?;
    tracing::info!(
        "dedup: {} items of {}{} on {}",
        items.n_new,
        run.dir.display(),
        old.as_ref().map(|o| format!(" against {} of {}", n - items.n_new, o.dir.display())).unwrap_or_default(),
        device::describe(&dev)
    );
    // 1. Each kind's relation: the sets of identical files, or the pairs within the threshold.
    let (relations, index_name) = find_relations(items, &thresholds, opts, &dev, fixed.as_ref(), centroids.as_ref())?;

    // 2. One removal decision over every removal kind at once, in keep order.
    let removal: Vec<&Relation> =
        relations.iter().filter(|(k, _)| opts.remove_kinds.contains(k)).map(|(_, r)| r).collect();
    let rank = match policy {
        KeepPolicy::Central => keep_rank(items, KeepPolicy::Central, Some(&degree_centrality(n, &removal)?)),
        p => keep_rank(items, p, None),
    };
    let decision = decide(n, &rank, &|i| items.is_old(i), &removal)?;
    let removed = &decision.removed;
    let captions = match opts.caption_policy {
        CaptionPolicy::Best => best_captions(items, &decision.keeper, removed),
        CaptionPolicy::Kept => Vec::new(),
    };
    let rows = embedded_rows(&run);
    let captions_dropped =
        (0..items.n_new).filter(|&i| removed[i] && run.meta.caption[rows[i]].is_some()).count() - captions.len();

    // 3. Each kind's groups, made from that decision.
    let results: Vec<KindResult> = relations
        .iter()
        .map(|(kind, relation)| {
            let kind = *kind;
            let groups = if opts.remove_kinds.contains(&kind) {
                removal_groups(n, relation, &rank, removed, opts.grouping)?
            } else {
                report_groups(n, relation, &rank, removed, opts.grouping)?
            };
            let sim = similarity_fn(kind, items);
            let sims: Vec<Vec<f32>> = groups
                .iter()
                .map(|g| g.rows.iter().map(|&(m, k)| if m == k { 1.0 } else { sim(k, m) }).collect())
                .collect();
            let (stats, bridges) = diagnostics(n, relation, &groups, &sims, &*sim)?;
            Ok(KindResult { kind, groups, sims, stats, bridges })
        })
        .collect::<Result<_>>()?;

    let out_dir = run.dir.join("dedup");
    fs::create_dir_all(&out_dir).map_err(|e| Error::io("creating", &out_dir, e))?;
    write_groups(&out_dir.join("groups.parquet"), items, removed, &results)?;
    write_bridges(&out_dir.join("bridges.parquet"), items, &results)?;
    write_captions(&out_dir.join("captions.parquet"), items, &run, &captions)?;
    let pairs_path = out_dir.join("pairs.parquet");
    if opts.write_pairs {
        write_pairs(&pairs_path, items, &relations)?;
    } else if pairs_path.exists() {
        fs::remove_file(&pairs_path).map_err(|e| Error::io("removing", &pairs_path, e))?;
    }
    let mut keep_lines = String::new();
    let mut remove_lines = String::new();
    for (uri, &gone) in items.uri.iter().zip(removed).take(items.n_new) {
        let line = if gone { &mut remove_lines } else { &mut keep_lines };
        line.push_str(uri);
        line.push('\n');
    }
    write_atomic(&out_dir.join("keep.txt"), |w| w.write_all(keep_lines.as_bytes()))?;
    write_atomic(&out_dir.join("remove.txt"), |w| w.write_all(remove_lines.as_bytes()))?;

    let n_removed = removed[..items.n_new].iter().filter(|&&r| r).count();
    let kinds = results
        .iter()
        .map(|r| {
            let dups =
                r.groups.iter().flat_map(|g| g.rows.iter().filter(|&&(m, k)| m != k && !items.is_old(m))).count();
            (
                r.kind.as_str().to_string(),
                KindSummary {
                    groups: r.groups.len(),
                    items_in_groups: r.groups.iter().map(|g| g.rows.len()).sum(),
                    duplicates: dups,
                    largest_group: r.groups.iter().map(|g| g.rows.len()).max().unwrap_or(0),
                    bridges: r.bridges.len(),
                },
            )
        })
        .collect();
    let summary = Summary {
        sieve_version: env!("CARGO_PKG_VERSION").to_string(),
        run: run.dir.display().to_string(),
        run_fingerprint: run.fingerprint.clone(),
        against: old.as_ref().map(|o| o.dir.display().to_string()),
        model: run.manifest.model.id.clone(),
        records: run.manifest.counts.records,
        embedded: items.n_new,
        against_items: n - items.n_new,
        thresholds,
        index: index_name,
        grouping: opts.grouping.as_str().into(),
        keep: policy.as_str().into(),
        kinds,
        remove_kinds: opts.remove_kinds.iter().map(|k| k.as_str().to_string()).collect(),
        kept: items.n_new - n_removed,
        removed: n_removed,
        caption_policy: opts.caption_policy.as_str().into(),
        captions_replaced: captions.len(),
        captions_dropped,
        duplicate_rate: if items.n_new == 0 { 0.0 } else { n_removed as f64 / items.n_new as f64 },
    };
    let json = serde_json::to_vec_pretty(&summary).expect("summary serialises");
    write_atomic(&out_dir.join("summary.json"), |w| {
        w.write_all(&json)?;
        w.write_all(b"\n")
    })?;
    tracing::info!(
        "dedup: keep {} of {}, remove {} ({:.1}%) in {:.1}s; see {}",
        summary.kept,
        summary.embedded,
        summary.removed,
        100.0 * summary.duplicate_rate,
        started.elapsed().as_secs_f64(),
        out_dir.display()
    );
    Ok(summary)
}

fn check_same_model(new: &Run, old: &Run) -> Result<()> {
    let (a, b) = (&new.manifest.model, &old.manifest.model);
    if a.weights_sha256 != b.weights_sha256 || new.manifest.embed_dim != old.manifest.embed_dim {
        return Err(Error::InvalidArg {
            what: "--against",
            reason: format!(
                "{} was embedded with {} (weights sha256 {}…) but {} with {} (weights sha256 {}…); \
                 embeddings of different models cannot be compared: embed both with the same --model",
                new.dir.display(),
                a.id,
                &a.weights_sha256[..a.weights_sha256.len().min(12)],
                old.dir.display(),
                b.id,
                &b.weights_sha256[..b.weights_sha256.len().min(12)],
            ),
        });
    }
    Ok(())
}

/// A kept item that carries a removed copy's caption: it fits the kept image better than the
/// kept item's own (or the kept item has none).
pub(crate) struct CaptionChoice {
    pub(crate) kept: u32,
    pub(crate) from: u32,
    pub(crate) score: f32,
    pub(crate) own_score: Option<f32>,
}

/// For `--caption-policy best`: each kept item of this run whose image fits one of its removed
/// copies' captions better than its own (image–caption cosine).
fn best_captions(items: &Items, keeper: &[u32], removed: &[bool]) -> Vec<CaptionChoice> {
    let Some(text) = items.text.as_ref() else { return Vec::new() };
    let mut best: BTreeMap<u32, (u32, f32)> = BTreeMap::new();
    for r in (0..items.n_new).filter(|&r| removed[r] && items.has_caption[r]) {
        let k = keeper[r];
        if items.is_old(k) {
            continue; // the old corpus is kept as it is
        }
        let s = dot(items.image.row(k as usize), text.row(r));
        if best.get(&k).is_none_or(|&(_, b)| s > b) {
            best.insert(k, (r as u32, s));
        }
    }
    best.into_iter()
        .filter_map(|(k, (from, score))| {
            let own = items.has_caption[k as usize].then(|| dot(items.image.row(k as usize), text.row(k as usize)));
            (own.is_none_or(|o| score > o)).then_some(CaptionChoice { kept: k, from, score, own_score: own })
        })
        .collect()
}
