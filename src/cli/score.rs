//! `sieve score`, and the scoring flags `sieve run` shares.

use std::path::{Path, PathBuf};

use clap::Args;
use sieve::analyze::common::SearchOptions;
use sieve::analyze::pairs::{ScoreOptions, Summary, Threshold};
use sieve::device::DeviceSpec;
use sieve::error::{Error, Result};
use sieve::store::lock::{Mode, RunLock};
use sieve::store::Layout;

use super::common::SearchArgs;
use super::{invalid, print_json, Global};

/// Upper bound of `--top-k`: the rank test holds k neighbours per item in memory.
pub const MAX_TOP_K: usize = 10_000;

/// When a pair is flagged (`sieve score` and `sieve run`).
#[derive(Debug, Args)]
pub struct FlagArgs {
    /// Flag pairs whose image-caption cosine is under this (e.g. 0.28 = CLIPScore 28)
    /// [default: the model's, from models/registry.json: 0.28 for CLIP ViT-B, 0.24 for ViT-L].
    #[arg(long, conflicts_with = "bottom_percent")]
    pub min_score: Option<f32>,

    /// Instead of a threshold, flag this percentage (0-100) of the pairs with the lowest scores.
    #[arg(long, value_name = "PERCENT")]
    pub bottom_percent: Option<f64>,

    /// k of the rank test: a pair is outranked when its caption is not among the k captions that
    /// fit its image best and its image not among the k images that fit its caption best.
    /// 0 turns the rank test off; at most 10000.
    #[arg(long, default_value_t = sieve::analyze::pairs::DEFAULT_TOP_K)]
    pub top_k: usize,
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Run directory to score (made by `sieve embed`).
    pub run: PathBuf,

    #[command(flatten)]
    pub flags: FlagArgs,

    #[command(flatten)]
    pub search: SearchArgs,
}

impl FlagArgs {
    /// The score options for `run` searched with `search` on `device`.
    pub fn options(&self, run: PathBuf, search: SearchOptions, device: DeviceSpec) -> Result<ScoreOptions> {
        let threshold = match (self.min_score, self.bottom_percent) {
            (Some(c), _) if !(-1.0..=1.0).contains(&c) => {
                return Err(invalid(
                    "--min-score",
                    format!("{c} is not a cosine in [-1, 1] (for a CLIPScore of {c}, pass {})", c / 100.0),
                ))
            }
            (Some(c), _) => Threshold::MinCosine(c),
            (None, Some(p)) if !(0.0..=100.0).contains(&p) => {
                return Err(invalid("--bottom-percent", format!("{p}: expected 0 to 100")))
            }
            (None, Some(p)) => Threshold::BottomPercent(p),
            (None, None) => Threshold::Model,
        };
        if self.top_k > MAX_TOP_K {
            return Err(invalid(
                "--top-k",
                format!("{} is over the bound of {MAX_TOP_K} (the rank test keeps k neighbours per item)", self.top_k),
            ));
        }
        Ok(ScoreOptions { run, threshold, top_k: self.top_k, search, device })
    }
}

impl TryFrom<&ScoreArgs> for ScoreOptions {
    type Error = Error;

    fn try_from(a: &ScoreArgs) -> Result<Self> {
        let search = SearchOptions::try_from(&a.search)?;
        a.flags.options(a.run.clone(), search, a.search.device)
    }
}

pub fn execute(args: ScoreArgs, g: Global) -> anyhow::Result<()> {
    let opts = ScoreOptions::try_from(&args)?;
    let _lock = RunLock::acquire(&opts.run, Mode::Shared, "sieve score")?;
    let s = sieve::analyze::pairs::score(&opts)?;
    print_summary(&s, &opts.run);
    print_json(g, &s)
}

/// Pairs, median cosine and flags (score and run print it).
pub fn print_summary(s: &Summary, run: &Path) {
    if s.pairs == 0 {
        eprintln!(
            "sieve score: no image-caption pairs (no embedded item has a caption) -> {}",
            Layout::new(run).pairs().display()
        );
        return;
    }
    eprintln!(
        "sieve score: {} pairs, median cosine {:.4}; flagged {} (low_score {} under {:.4}, outranked {}) -> {}",
        s.pairs,
        s.cosine.percentiles.get("p50").copied().unwrap_or(f32::NAN),
        s.flagged,
        s.low_score,
        s.min_cosine,
        s.outranked,
        Layout::new(run).pairs().display()
    );
    if let Some(p) = &s.pair_probability {
        eprintln!(
            "sieve score: the model's own pair probability: median {:.4}",
            p.percentiles.get("p50").copied().unwrap_or(f32::NAN)
        );
    }
}
