//! `sieve select`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use sieve::analyze::select::balance::{self, BalanceOptions};
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

    /// Keep only the pool's k-means clusters nearest the items of this run (a target set, such
    /// as a benchmark's training images, embedded with the same model), intersected with the top
    /// 30% by CLIP score: DataComp's best baseline. The strategy then picks the budget from
    /// what passes.
    #[arg(long, value_name = "RUN", help_heading = "Reference and balance")]
    pub reference: Option<PathBuf>,

    /// k-means clusters of the pool for --reference [default: √pool, at most 1,000; DataComp used
    /// 100,000 for 12.8M items, at a cost that grows with the clusters].
    #[arg(long, value_name = "N", help_heading = "Reference and balance")]
    pub reference_clusters: Option<usize>,

    /// Keep only the top P% of the pool by CLIP score (each image's cosine to its own caption;
    /// items without a caption do not pass) [default: 30 with --reference, else no filter].
    #[arg(long, value_name = "P", help_heading = "Reference and balance")]
    pub score_percent: Option<f64>,

    /// Split the budget over the concepts of this group of `sieve audit` (RUN/audit.parquet,
    /// image side), as --balance-to says; the strategy picks inside each concept.
    #[arg(long, value_name = "GROUP", help_heading = "Reference and balance")]
    pub balance_by: Option<String>,

    /// Target shares for --balance-by: uniform (even over the group's concepts), or
    /// CONCEPT=WEIGHT,... (normalised; concepts not named get none). Items the audit left as
    /// `none` keep their pool share unless `none` is named.
    #[arg(long, value_name = "SHARES", requires = "balance_by", help_heading = "Reference and balance")]
    pub balance_to: Option<String>,
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
        if a.reference_clusters == Some(0) {
            return Err(invalid("--reference-clusters", "must be at least 1"));
        }
        if a.reference_clusters.is_some() && a.reference.is_none() {
            return Err(invalid("--reference-clusters", "needs --reference"));
        }
        if let Some(p) = a.score_percent {
            if !(p > 0.0 && p <= 100.0) {
                return Err(invalid("--score-percent", format!("{p} is not in (0, 100]")));
            }
        }
        let balance = match &a.balance_by {
            None => None,
            Some(group) => Some(BalanceOptions {
                group: group.clone(),
                target: a.balance_to.as_deref().map(balance::parse_target).transpose()?.flatten(),
            }),
        };
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
            reference: a.reference.clone(),
            reference_clusters: a.reference_clusters,
            score_percent: a.score_percent,
            balance,
        })
    }
}

pub fn execute(args: SelectArgs, g: Global) -> anyhow::Result<()> {
    let opts = SelectOptions::try_from(&args)?;
    let _lock = RunLock::acquire(&opts.run, Mode::Shared, "sieve select")?;
    // The reference is read too: no `sieve embed` or `sieve merge` may rewrite it meanwhile.
    let _reference_lock =
        opts.reference.as_ref().map(|r| RunLock::acquire(r, Mode::Shared, "sieve select --reference")).transpose()?;
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
    if let Some(r) = &s.reference {
        eprintln!(
            "  reference {}: {} items nearest {} of {} clusters ({} pool items); {} pass every filter; \
             mean cosine of a reference item to its nearest selected item {:.3} vs {:.3} for a random subset",
            r.run,
            r.items,
            r.target_clusters,
            r.clusters,
            r.in_target_clusters,
            r.passed,
            r.nearest_selected,
            r.nearest_random
        );
    }
    if let Some(b) = &s.balance {
        let parts: Vec<String> =
            b.selected.iter().map(|(c, n)| format!("{c} {n}/{}", b.available.get(c).unwrap_or(&0))).collect();
        eprintln!("  balanced by {}: {}", b.group, parts.join(", "));
    }
    let (a, b) = (&s.selection_diversity, &s.random_diversity);
    eprintln!(
        "  Vendi {:.2} vs {:.2} for a random subset; coverage {:.2} vs {:.2}",
        a.vendi_q1, b.vendi_q1, a.coverage, b.coverage
    );
    print_json(g, &s)
}
