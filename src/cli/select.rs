//! `sieve select`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use sieve::analyze::select::{Embedding, SelectOptions, Strategy};
use sieve::device::DeviceSpec;
use sieve::error::{Error, Result};
use sieve::store::lock::{Mode, RunLock};
use sieve::store::Layout;

use super::common::device;
use super::{invalid, print_json, Global};

#[derive(Debug, Args)]
pub struct SelectArgs {
    /// Run directory (made by `sieve embed`).
    pub run: PathBuf,

    /// Number of items to select.
    #[arg(long)]
    pub budget: usize,

    /// cluster-balanced: seeded k-means, the budget spread evenly over the clusters, farthest-first
    /// inside each (time about linear in the pool). k-center: greedy farthest-point over the whole
    /// pool (time grows as budget × pool; for small pools or budgets).
    #[arg(long, default_value = "cluster-balanced", hide_possible_values = true)]
    pub strategy: StrategyArg,

    /// Embedding to spread over: image, text or joint (text and joint leave out items without a
    /// caption).
    #[arg(long, default_value = "image", hide_possible_values = true)]
    pub embedding: EmbeddingArg,

    /// Also drop the pairs flagged by `sieve score` (RUN/pairs.parquet).
    #[arg(long)]
    pub drop_flagged: bool,

    /// Also drop the items `sieve quality` flagged with any of these flags (comma-separated,
    /// e.g. blur,dark,boilerplate; RUN/quality.parquet must exist).
    #[arg(long, value_name = "FLAGS")]
    pub drop_flags: Option<String>,

    /// Keep the duplicates in RUN/dedup/remove.txt in the pool.
    #[arg(long)]
    pub keep_duplicates: bool,

    /// k-means clusters for cluster-balanced [default: √pool, at most 1,000].
    #[arg(long)]
    pub clusters: Option<usize>,

    /// Seed for k-means and the random baseline.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Device for k-means: auto, cpu, cuda[:N] or metal[:N].
    #[arg(long, default_value = "auto", value_parser = device)]
    pub device: DeviceSpec,
}

/// `--strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    ClusterBalanced,
    #[value(name = "k-center")]
    KCenter,
}

/// `--embedding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmbeddingArg {
    Image,
    Text,
    Joint,
}

impl TryFrom<&SelectArgs> for SelectOptions {
    type Error = Error;

    fn try_from(a: &SelectArgs) -> Result<Self> {
        if a.budget == 0 {
            return Err(invalid("--budget", "must be at least 1"));
        }
        if a.clusters == Some(0) {
            return Err(invalid("--clusters", "must be at least 1"));
        }
        Ok(SelectOptions {
            run: a.run.clone(),
            budget: a.budget,
            strategy: match a.strategy {
                StrategyArg::ClusterBalanced => Strategy::ClusterBalanced,
                StrategyArg::KCenter => Strategy::KCenter,
            },
            embedding: match a.embedding {
                EmbeddingArg::Image => Embedding::Image,
                EmbeddingArg::Text => Embedding::Text,
                EmbeddingArg::Joint => Embedding::Joint,
            },
            use_dedup: !a.keep_duplicates,
            drop_flagged: a.drop_flagged,
            drop_flags: a.drop_flags.as_deref().map(sieve::analyze::quality::parse_flag_list).transpose()?,
            clusters: a.clusters,
            seed: a.seed,
            device: a.device,
        })
    }
}

pub fn execute(args: SelectArgs, g: Global) -> anyhow::Result<()> {
    let opts = SelectOptions::try_from(&args)?;
    let _lock = RunLock::acquire(&opts.run, Mode::Shared, "sieve select")?;
    let s = sieve::analyze::select::select(&opts)?;
    eprintln!(
        "sieve select: {} of a pool of {} ({} embedded, {} duplicates, {} flagged pairs and {} of low \
         quality dropped) -> {}",
        s.selected,
        s.pool,
        s.embedded,
        s.dropped_duplicates,
        s.dropped_flagged,
        s.dropped_quality,
        Layout::new(&opts.run).selection_keep().display()
    );
    let (a, b) = (&s.selection_diversity, &s.random_diversity);
    eprintln!(
        "  Vendi {:.2} vs {:.2} for a random subset; coverage {:.2} vs {:.2}",
        a.vendi_q1, b.vendi_q1, a.coverage, b.coverage
    );
    print_json(g, &s)
}
