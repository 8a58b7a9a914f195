//! Each vector space's near-duplicate pairs as a re-readable stream: the index chosen and
//! settled once, searched again on each read over the budget.

use super::*;
use crate::analyze::stream::PairSource;
use crate::error::Result;
use crate::index::clustered::cluster_pieces;
use crate::index::exact::ExactBlocks;
use crate::index::kmeans::{self, KMeansParams};
use crate::index::merge::{merge_each, ShiftB, SortedBatches};
use crate::index::spill::{PairSorter, SortedPairs};
use crate::index::{default_clusters, ClusteredIndex, ExactIndex, HnswIndex, Matrix, NeighbourIndex, Pair, Plan};

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
/// budget; the k-means clusters are trained and assigned once). HNSW's pairs and partition
/// files' come in no order: they are sorted once, on disk in the run folder beyond the same
/// budget (`index::spill`), and each read merges the sorted runs.
pub(crate) fn space_source<'a>(
    items: &'a Items,
    space: Space,
    threshold: f32,
    opts: &DedupOptions,
    device: &candle_core::Device,
    fixed: Option<&partition::Fixed>,
    centroids: Option<&partition::Centroids>,
) -> Result<(PairSource<'a>, String)> {
    let per_item = opts.cache_pairs_per_item;
    let n = items.len();
    let sorter = || PairSorter::new(&opts.run, per_item.saturating_mul(n));
    if let Some(f) = fixed {
        let (sorted, name) = f.pairs(space, items, sorter())?;
        return Ok((sorted_source(n, per_item, sorted, |b| b), name));
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
        let (search, name) =
            settle(build_index(&vectors, opts, &device, centroids.as_ref())?, threshold, None, sorter)?;
        let search = match search {
            Search::Sorted(sorted) => return Ok((sorted_source(n, per_item, sorted, to_items), name)),
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
            Search::Sorted(_) => unreachable!("sorted pairs returned above"),
        };
        return Ok((PairSource::new(n, per_item, Box::new(produce)), name));
    }
    // This run's items among themselves, and against the old run's.
    let d = vectors.dim();
    let new = Matrix::new(d, vectors.block(0, n_new).to_vec())?;
    let old = Matrix::new(d, vectors.as_slice()[n_new * d..].to_vec())?;
    drop(vectors);
    let (within, name) = settle(build_index(&new, opts, &device, None)?, threshold, None, sorter)?;
    let across = if old.rows() > 0 && new.rows() > 0 {
        Some(settle(build_index(&old, opts, &device, None)?, threshold, Some(&new), sorter)?.0)
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
            Search::Sorted(sorted) => pieces.extend(sorted.pieces()?),
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
            Some(Search::Sorted(sorted)) => pieces.extend(sorted.pieces()?.into_iter().map(|p| shift(p, offset))),
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
    /// HNSW's pairs (found from either end, in no order), sorted once: in memory, or in run
    /// files merged on each read.
    Sorted(SortedPairs),
}

/// A source reading `sorted` (mapped by `map`, which keeps the order): held as it is when it
/// fit in memory, else merged from its run files on each read.
fn sorted_source<'a>(
    n: usize,
    per_item: usize,
    sorted: SortedPairs,
    map: impl Fn(Vec<Pair>) -> Vec<Pair> + 'a,
) -> PairSource<'a> {
    match sorted {
        SortedPairs::Memory(pairs) => PairSource::held(map(pairs)),
        disk => PairSource::new(n, per_item, Box::new(move |f| disk.each(&mut |b| f(map(b))))),
    }
}

/// Settles `built` for the self-search of its collection, or for searching `queries` against it;
/// with the index's name. HNSW's pairs go through a sorter from `sorter`.
fn settle(
    built: Built<'_>,
    threshold: f32,
    queries: Option<&Matrix>,
    sorter: impl Fn() -> PairSorter,
) -> Result<(Search, String)> {
    Ok(match built {
        Built::Exact(i) => (Search::Exact, i.name()),
        Built::Clusters(i) => {
            let name = i.name();
            let q_members = queries.map(|q| i.query_members(q)).transpose()?;
            (Search::Clusters(i.into_members(), q_members), name)
        }
        Built::Hnsw(i) => {
            let mut sorter = sorter();
            let mut push = |b: Vec<Pair>| sorter.push(&b);
            match queries {
                Some(q) => i.range_search_unsorted(q, threshold, &mut push)?,
                None => i.self_pairs_unsorted(threshold, &mut push)?,
            }
            let sorted = sorter.finish()?;
            if sorted.spilled() {
                tracing::info!("--index hnsw: more pairs than --cache-pairs-per-item allows; sorted on disk");
            }
            (Search::Sorted(sorted), i.name())
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
    Ok(match Plan::choose(opts.index, opts.clusters, m.rows(), device) {
        Plan::Hnsw => Built::Hnsw(HnswIndex::build(m, opts.hnsw)),
        Plan::Clusters(k) => return clustered(k.unwrap_or_else(|| default_clusters(m.rows()))),
        Plan::Exact => Built::Exact(ExactIndex::new(m, device.clone())),
    })
}
