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

mod items;
mod options;
mod output;
pub mod partition;
mod search;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::rc::Rc;
use std::time::Instant;

use serde::Serialize;

pub(crate) use crate::analyze::common::embedded_rows;
use crate::analyze::decision::{
    decide, degree_centrality, diagnostics, removal_groups, report_groups, Bridge, GroupStats, OutGroup, Relation,
};
use crate::analyze::perceptual;
use crate::analyze::stream::PairSource;
pub use crate::analyze::stream::CACHE_PAIRS_PER_ITEM;
use crate::device::{self};
use crate::error::{Error, Result};
use crate::index::{dot, Pair};
use crate::store::{write_atomic, Layout, Run};
pub(crate) use items::{keep_rank, load_items, Items};
pub(crate) use options::resolve_thresholds;
pub use options::{CaptionPolicy, DedupOptions, KeepPolicy, Kind, Thresholds};
pub use output::{bridges_schema, captions_schema, groups_schema, pairs_schema};
use output::{write_bridges, write_captions, write_groups, write_pairs};
pub(crate) use search::{kmeans_params, space_source, space_vectors, to_items, Space};

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

/// Each kind of `opts.kinds` as a [`Relation`] among `items` at `thresholds`, and the name of the
/// neighbour index used. Pairs are read once here (to count them); see [`PairSource`].
pub(crate) fn find_relations<'a>(
    items: &'a Items,
    thresholds: &Thresholds,
    opts: &DedupOptions,
    dev: &candle_core::Device,
    fixed: Option<&partition::Fixed>,
    centroids: Option<&partition::Centroids>,
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

/// What dedup finds among a set of items, before anything is written: each kind's relation
/// (its pairs readable again, for `--pairs`), the removal decision, each kind's groups and the
/// captions that move to kept items.
pub(crate) struct Duplicates<'a> {
    pub(crate) relations: Vec<(Kind, Relation<'a>)>,
    /// The neighbour index used, as the summary names it.
    pub(crate) index: String,
    /// The keep policy applied (`auto` resolved).
    pub(crate) policy: KeepPolicy,
    /// Per item: removed.
    pub(crate) removed: Vec<bool>,
    pub(crate) results: Vec<KindResult>,
    pub(crate) captions: Vec<CaptionChoice>,
}

/// Finds the duplicates among `items` at `thresholds`: no files read or written (the search
/// may sort pairs in a temporary folder, `index::spill`). `fixed` stands in for the search with
/// `dedup-partition` results; `centroids` fixes the clusters.
pub(crate) fn find<'a>(
    items: &'a Items,
    thresholds: &Thresholds,
    opts: &DedupOptions,
    dev: &candle_core::Device,
    fixed: Option<&partition::Fixed>,
    centroids: Option<&partition::Centroids>,
) -> Result<Duplicates<'a>> {
    let n = items.len();
    let policy = match opts.keep {
        KeepPolicy::Auto if items.has_caption.iter().any(|&c| c) => KeepPolicy::BestScore,
        KeepPolicy::Auto => KeepPolicy::Largest,
        p => p,
    };
    // 1. Each kind's relation: the sets of identical files, or the pairs within the threshold.
    let (relations, index) = find_relations(items, thresholds, opts, dev, fixed, centroids)?;

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
    let removed = decision.removed;
    Ok(Duplicates { relations, index, policy, removed, results, captions })
}

/// Runs `sieve dedup`; returns the summary (also written to `RUN/dedup/summary.json`).
pub fn dedup(opts: &DedupOptions) -> Result<Summary> {
    let started = Instant::now();
    let run = Run::open(&opts.run)?;
    // Sorting folders of a dedup that was killed (`index::spill`).
    crate::index::spill::remove_stale(&opts.run);
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
        Some(dir) => Some(partition::Fixed::read(dir, &run, &thresholds, opts)?),
        None => None,
    };
    let centroids = match &opts.centroids {
        Some(dir) => Some(partition::Centroids::load(dir, &run)?),
        None => None,
    };
    let need_text = opts.kinds.iter().any(|k| matches!(k, Kind::Caption | Kind::Joint))
        || matches!(opts.keep, KeepPolicy::Auto | KeepPolicy::BestScore)
        || opts.caption_policy == CaptionPolicy::Best;
    let items = load_items(&run, old.as_ref(), need_text)?;
    let items = &items;
    let n = items.len();
    let dev = device::open(opts.device)?;
    tracing::info!(
        "dedup: {} items of {}{} on {}",
        items.n_new,
        run.dir.display(),
        old.as_ref().map(|o| format!(" against {} of {}", n - items.n_new, o.dir.display())).unwrap_or_default(),
        device::describe(&dev)
    );
    let found = find(items, &thresholds, opts, &dev, fixed.as_ref(), centroids.as_ref())?;
    let Duplicates { relations, index: index_name, policy, removed, results, captions } = &found;
    let removed = removed.as_slice();
    let rows = embedded_rows(&run);
    let captions_dropped =
        (0..items.n_new).filter(|&i| removed[i] && run.meta.caption[rows[i]].is_some()).count() - captions.len();

    let layout = Layout::new(&run.dir);
    let out_dir = layout.dedup_dir();
    fs::create_dir_all(&out_dir).map_err(|e| Error::io("creating", &out_dir, e))?;
    write_groups(&layout.dedup_groups(), items, removed, results)?;
    write_bridges(&layout.dedup_bridges(), items, results)?;
    write_captions(&layout.dedup_captions(), items, &run, captions)?;
    let pairs_path = layout.dedup_pairs();
    if opts.write_pairs {
        write_pairs(&pairs_path, items, relations)?;
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
    write_atomic(&layout.dedup_keep(), |w| w.write_all(keep_lines.as_bytes()))?;
    write_atomic(&layout.dedup_remove(), |w| w.write_all(remove_lines.as_bytes()))?;

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
        index: index_name.clone(),
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
    write_atomic(&layout.dedup_summary(), |w| {
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
