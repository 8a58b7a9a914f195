//! `sieve dedup`'s options: the kinds of duplicate, the keep and caption policies, the
//! validated options and the thresholds they resolve to.

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::analyze::common::lenient;
use crate::analyze::groups::Grouping;
use crate::analyze::stream::CACHE_PAIRS_PER_ITEM;
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::index::clustered::DEFAULT_BORDER;
use crate::index::hnsw::HnswParams;
use crate::index::IndexChoice;
use crate::media::fingerprint::DEFAULT_MIN_CORRELATION;
use crate::model::registry;
use crate::store::Run;

/// A kind of duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
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
    /// Not in the stage fingerprint: it changes memory and time, never the output.
    #[serde(skip)]
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
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Thresholds {
    #[serde(deserialize_with = "lenient::f32")]
    pub image: f32,
    #[serde(deserialize_with = "lenient::f32")]
    pub caption: f32,
    pub perceptual_distance: u32,
    #[serde(deserialize_with = "lenient::f32")]
    pub perceptual_correlation: f32,
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
