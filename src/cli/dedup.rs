//! `sieve dedup`, and the dedup flags `sieve run` and the partitioned steps share.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use sieve::analyze::dedup::{CaptionPolicy, DedupOptions, KeepPolicy, Kind, Summary};
use sieve::analyze::groups::Grouping;
use sieve::device::DeviceSpec;
use sieve::error::{Error, Result};
use sieve::index::hnsw::HnswParams;
use sieve::store::lock::{Mode, RunLock};
use sieve::store::Layout;

use super::common::{device, IndexArg};
use super::{cosine_arg, invalid, print_json, Global};

/// What counts as a duplicate: the kinds and their thresholds (`sieve dedup` and `sieve run`).
#[derive(Debug, Args)]
pub struct MatchArgs {
    /// Kinds of duplicate to look for, comma-separated, or `all`.
    #[arg(long, default_value = "all", value_delimiter = ',', value_parser = kind_arg)]
    pub kinds: Vec<KindArg>,

    /// Kinds whose non-kept members go to remove.txt. Caption-only duplicates (the same caption
    /// on different images) are reported but not removed by default.
    #[arg(long, default_value = "exact,perceptual,image", value_delimiter = ',', value_parser = kind_arg)]
    pub remove_kinds: Vec<KindArg>,

    /// Image-embedding cosine at or above which two images are near-duplicates [default: the
    /// model's, from the registry; 0.95 for CLIP ViT-B].
    #[arg(long)]
    pub image_threshold: Option<f32>,

    /// Caption-embedding cosine at or above which two captions are near-duplicates [default: the
    /// model's, 0.97 for CLIP].
    #[arg(long)]
    pub caption_threshold: Option<f32>,

    /// Perceptual candidates: largest Hamming distance between two pictures' 64-bit DCT pHashes
    /// (borders trimmed; a mirrored copy is compared through its mirror hash) [default: the
    /// model's, 10].
    #[arg(long)]
    pub perceptual_distance: Option<u32>,

    /// Perceptual confirmation: a candidate counts only when the correlation of the two
    /// pictures' low-frequency DCT coefficients (their 32 x 32 grey copies, low-passed) is at
    /// least this; it keeps flat and centred pictures from colliding [default: 0.8].
    #[arg(long, value_name = "R")]
    pub perceptual_correlation: Option<f32>,
}

/// How duplicates are grouped and which one stays (`sieve dedup` and `sieve run`).
#[derive(Debug, Args)]
pub struct KeepArgs {
    /// How groups are shown in groups.parquet and the report; removal does not depend on it.
    /// Items are decided once, in keep order, over every removal kind: an item is removed when
    /// an item already kept is its direct duplicate, so every removed item is within the
    /// threshold of the item kept in its place and nothing chains. star: each kept item with
    /// its removed copies (every pair in a group is a kept item and its copy, or two copies of
    /// it). components: stars joined when any of their members are duplicates, for reviewing
    /// clusters; a group can then hold several kept items. star is the default because it
    /// reports the decision itself: on the real-picture benchmark (docs/dedup.md) components
    /// put unrelated pictures in one group.
    #[arg(long, default_value = "star", hide_possible_values = true)]
    pub grouping: GroupingArg,

    /// Which item of a group is kept. best-score: highest image-caption cosine; largest: most
    /// pixels; first: first in input order; central: most similar to the rest of its group;
    /// auto: best-score when the run has captions, else largest. Ties go to the lowest id.
    #[arg(long, default_value = "auto", hide_possible_values = true)]
    pub keep: KeepArg,

    /// Which caption a kept item carries. best: the caption among its own and those of the
    /// copies removed in its favour that fits its image best (image-caption cosine); every
    /// replacement is listed in RUN/dedup/captions.parquet (id, uri, caption, caption_from_id,
    /// score, own_caption, own_score) and the report. kept: its own.
    #[arg(long, default_value = "best", value_name = "POLICY", hide_possible_values = true)]
    pub caption_policy: CaptionPolicyArg,
}

/// How much of its pairs the dedup stage keeps in memory (`sieve dedup` and `sieve run`).
#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// Pairs per item each kind may keep in memory to read again without searching again
    /// (12 bytes each); a kind with more is searched again on each pass. 0 searches again on
    /// every pass. Outputs do not depend on it, only time and memory.
    #[arg(long, hide = true, value_name = "N", default_value_t = sieve::analyze::dedup::CACHE_PAIRS_PER_ITEM)]
    pub cache_pairs_per_item: usize,
}

impl MemoryArgs {
    /// Sets the memory settings of `o`.
    pub fn apply(&self, o: &mut DedupOptions) {
        o.cache_pairs_per_item = self.cache_pairs_per_item;
    }
}

#[derive(Debug, Args)]
pub struct DedupArgs {
    /// Run directory to deduplicate (made by `sieve embed`).
    pub run: PathBuf,

    /// An existing corpus (another run directory, same model): find what in RUN duplicates it
    /// (or RUN itself) without re-embedding it. Its items are always kept; only RUN's items are
    /// listed in keep.txt/remove.txt.
    #[arg(long, value_name = "OLD_RUN")]
    pub against: Option<PathBuf>,

    #[command(flatten)]
    pub matching: MatchArgs,

    /// Neighbour search. exact: tiled matrix products, memory stays bounded. clusters:
    /// SemDeDup-style, seeded k-means then exact search inside each cluster (items near a border
    /// also in their second cluster), so time and memory grow about linearly with N. hnsw: an
    /// approximate graph (hnsw_rs; see --hnsw-*). auto: exact up to 20,000 vectors on a CPU
    /// (2,000,000 on a GPU), clusters beyond; on 100k 512-d vectors on 2 cores clusters found
    /// the same pairs as exact 15x faster and HNSW was slower than both.
    #[arg(long, default_value = "auto", hide_possible_values = true)]
    pub index: IndexArg,

    /// Number of k-means clusters for clustered search (implies --index clusters)
    /// [default: one per 1,000 vectors].
    #[arg(long, value_name = "K")]
    pub clusters: Option<usize>,

    /// With --clusters: an item also joins its second-nearest cluster when its similarity to
    /// that centroid is within this much of its nearest.
    #[arg(long, default_value_t = sieve::index::clustered::DEFAULT_BORDER)]
    pub border: f32,

    /// Seed for k-means.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// With clustered search: k-means trains on a seeded sample of this many vectors
    /// [default: 256 per cluster, at most all].
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,

    /// Clustered search with these centroids (a folder from `sieve dedup-centroids` on this run)
    /// instead of training k-means here (implies --index clusters).
    #[arg(long, value_name = "DIR")]
    pub centroids: Option<PathBuf>,

    #[command(flatten)]
    pub keeping: KeepArgs,

    #[command(flatten)]
    pub memory: MemoryArgs,

    /// Device for the search: auto (CUDA, then Metal, then CPU), cpu, cuda[:N] or metal[:N].
    #[arg(long, default_value = "auto", value_parser = device)]
    pub device: DeviceSpec,

    /// Also write every duplicate pair found to RUN/dedup/pairs.parquet (kind, a_id, b_id,
    /// similarity; exact duplicates are groups of one hash and have no pairs).
    #[arg(long)]
    pub pairs: bool,

    /// Choose thresholds by looking: search every kind at a looser threshold (cosine 0.10 lower,
    /// perceptual distance 6 bits higher) and write RUN/dedup/calibrate.json (the similarity
    /// histogram per kind, 0.01 bands or one per bit, and the removal rate a threshold at each
    /// band would give, the other kinds at their defaults) and RUN/dedup/calibrate.html (sample
    /// pairs of each band as thumbnails). keep.txt and remove.txt are left as they are.
    #[arg(long)]
    pub calibrate: bool,

    /// With --index hnsw: links per node (more: better recall, slower build, more memory).
    #[arg(long, default_value_t = HnswParams::default().m)]
    pub hnsw_m: usize,

    /// With --index hnsw: candidate list size while building.
    #[arg(long, default_value_t = HnswParams::default().ef_construction)]
    pub hnsw_ef_construction: usize,

    /// With --index hnsw: candidate list size while searching (more: better recall, slower).
    #[arg(long, default_value_t = HnswParams::default().ef_search)]
    pub hnsw_ef: usize,
}

/// A kind of duplicate in `--kinds` and `--remove-kinds`; `all` stands alone for every kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    All,
    Exact,
    Perceptual,
    Image,
    Caption,
    Joint,
}

/// A [`KindArg`]; spaces around it are allowed, as in `--kinds "exact, image"`.
fn kind_arg(s: &str) -> std::result::Result<KindArg, String> {
    KindArg::from_str(s.trim(), false)
        .map_err(|_| format!("`{s}`: expected all, exact, perceptual, image, caption or joint"))
}

/// `--grouping`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GroupingArg {
    Star,
    Components,
}

/// `--keep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeepArg {
    Auto,
    BestScore,
    Largest,
    First,
    Central,
}

/// `--caption-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CaptionPolicyArg {
    Best,
    Kept,
}

/// The kinds of a list, sorted and without repeats; `all` only on its own.
fn kinds(list: &[KindArg], what: &'static str) -> Result<Vec<Kind>> {
    if list.contains(&KindArg::All) {
        return if list.len() == 1 {
            Ok(Kind::ALL.to_vec())
        } else {
            Err(invalid(what, "`all` cannot be combined with other kinds"))
        };
    }
    let mut out: Vec<Kind> = list
        .iter()
        .map(|k| match k {
            KindArg::Exact => Kind::Exact,
            KindArg::Perceptual => Kind::Perceptual,
            KindArg::Image => Kind::Image,
            KindArg::Caption => Kind::Caption,
            KindArg::Joint | KindArg::All => Kind::Joint,
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

impl MatchArgs {
    /// Sets the kinds and thresholds of `o`.
    pub fn apply(&self, o: &mut DedupOptions) -> Result<()> {
        o.kinds = kinds(&self.kinds, "--kinds")?;
        o.remove_kinds = kinds(&self.remove_kinds, "--remove-kinds")?;
        o.image_threshold = cosine_arg("--image-threshold", self.image_threshold)?;
        o.caption_threshold = cosine_arg("--caption-threshold", self.caption_threshold)?;
        o.perceptual_distance = self.perceptual_distance;
        o.perceptual_correlation = self.perceptual_correlation;
        Ok(())
    }
}

impl KeepArgs {
    /// Sets the grouping, keep and caption policies of `o`.
    pub fn apply(&self, o: &mut DedupOptions) {
        o.grouping = match self.grouping {
            GroupingArg::Star => Grouping::Star,
            GroupingArg::Components => Grouping::Components,
        };
        o.keep = match self.keep {
            KeepArg::Auto => KeepPolicy::Auto,
            KeepArg::BestScore => KeepPolicy::BestScore,
            KeepArg::Largest => KeepPolicy::Largest,
            KeepArg::First => KeepPolicy::First,
            KeepArg::Central => KeepPolicy::Central,
        };
        o.caption_policy = match self.caption_policy {
            CaptionPolicyArg::Best => CaptionPolicy::Best,
            CaptionPolicyArg::Kept => CaptionPolicy::Kept,
        };
    }
}

impl TryFrom<&DedupArgs> for DedupOptions {
    type Error = Error;

    fn try_from(a: &DedupArgs) -> Result<Self> {
        if a.clusters == Some(0) {
            return Err(invalid("--clusters", "must be at least 1"));
        }
        if !(0.0..=2.0).contains(&a.border) {
            return Err(invalid("--border", format!("{}: expected 0 to 2", a.border)));
        }
        let mut o = DedupOptions {
            against: a.against.clone(),
            index: a.index.into(),
            clusters: a.clusters,
            border: a.border,
            seed: a.seed,
            sample: a.sample,
            centroids: a.centroids.clone(),
            device: a.device,
            write_pairs: a.pairs,
            hnsw: HnswParams {
                m: a.hnsw_m.clamp(2, 255),
                ef_construction: a.hnsw_ef_construction.max(1),
                ef_search: a.hnsw_ef.max(1),
                ..Default::default()
            },
            ..DedupOptions::new(a.run.clone())
        };
        a.matching.apply(&mut o)?;
        a.keeping.apply(&mut o);
        a.memory.apply(&mut o);
        Ok(o)
    }
}

pub fn execute(args: DedupArgs, g: Global) -> anyhow::Result<()> {
    super::hand_back_large_frees();
    let opts = DedupOptions::try_from(&args)?;
    if args.calibrate {
        let c = sieve::analyze::calibrate::calibrate(&opts)?;
        eprintln!(
            "sieve dedup --calibrate: {} embedded, {} removed at the default thresholds; removal rate by threshold \
             (* default):",
            c.embedded, c.removed_at_defaults
        );
        for line in sieve::analyze::calibrate::sweep_lines(&c) {
            eprintln!("{line}");
        }
        eprintln!("  see {}", Layout::new(&opts.run).calibrate_html().display());
        return print_json(g, &c);
    }
    let _lock = RunLock::acquire(&opts.run, Mode::Shared, "sieve dedup")?;
    let s = sieve::analyze::dedup::dedup(&opts)?;
    print_summary("sieve dedup", &s, &opts.run);
    print_json(g, &s)
}

/// Counts kept and removed, and groups per kind (dedup, dedup-combine and run print it).
pub fn print_summary(what: &str, s: &Summary, run: &Path) {
    eprintln!(
        "{what}: {} embedded, keep {}, remove {} ({:.2}%) -> {}",
        s.embedded,
        s.kept,
        s.removed,
        100.0 * s.duplicate_rate,
        Layout::new(run).dedup_dir().display()
    );
    for (kind, k) in &s.kinds {
        eprintln!("  {kind:<10} {:>8} groups {:>8} duplicates", k.groups, k.duplicates);
    }
}
