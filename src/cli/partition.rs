//! Partitioned dedup: `sieve dedup-centroids`, `dedup-partition` and `dedup-combine`.

use std::path::PathBuf;

use clap::Args;
use sieve::analyze::dedup::DedupOptions;
use sieve::analyze::partition::{default_centroids_dir, default_partitions_dir};
use sieve::device::DeviceSpec;
use sieve::error::{Error, Result};
use sieve::ingest::Shard;
use sieve::store::lock::{Mode, RunLock};

use super::common::{device, shard};
use super::dedup::DedupArgs;
use super::{invalid, print_json, Global};

#[derive(Debug, Args)]
pub struct DedupCentroidsArgs {
    /// Run directory (made by `sieve embed` or `sieve merge`).
    pub run: PathBuf,

    /// Number of k-means clusters (the search is split along them).
    #[arg(long, value_name = "K")]
    pub clusters: usize,

    /// Train on a seeded sample of this many vectors [default: 256 per cluster, at most all].
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,

    /// Seed for the sample and k-means.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Device for k-means: auto, cpu, cuda[:N] or metal[:N].
    #[arg(long, default_value = "auto", value_parser = device)]
    pub device: DeviceSpec,

    /// Folder to write the centroids to [default: RUN/dedup/centroids].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Step 1's options: those of the dedup the centroids serve, and the output folder.
pub struct CentroidsOptions {
    pub dedup: DedupOptions,
    pub out: PathBuf,
}

impl TryFrom<&DedupCentroidsArgs> for CentroidsOptions {
    type Error = Error;

    fn try_from(a: &DedupCentroidsArgs) -> Result<Self> {
        if a.clusters == 0 {
            return Err(invalid("--clusters", "must be at least 1"));
        }
        if a.sample == Some(0) {
            return Err(invalid("--sample", "must be at least 1"));
        }
        let dedup = DedupOptions {
            clusters: Some(a.clusters),
            sample: a.sample,
            seed: a.seed,
            device: a.device,
            ..DedupOptions::new(a.run.clone())
        };
        Ok(Self { dedup, out: a.out.clone().unwrap_or_else(|| default_centroids_dir(&a.run)) })
    }
}

pub fn execute_centroids(args: DedupCentroidsArgs, g: Global) -> anyhow::Result<()> {
    let CentroidsOptions { dedup, out } = CentroidsOptions::try_from(&args)?;
    let m = sieve::analyze::partition::compute_centroids(&dedup, &out)?;
    for (space, c) in &m.spaces {
        eprintln!("sieve dedup-centroids: {space}: {} clusters of {} vectors", c.clusters, c.vectors);
    }
    eprintln!("  -> {}", out.display());
    print_json(g, &m)
}

#[derive(Debug, Args)]
pub struct DedupPartitionArgs {
    /// This task's partition: the clusters c with c mod n = i (0 ≤ i < n).
    #[arg(long, value_name = "i/n", value_parser = shard)]
    pub partition: Shard,

    /// Folder to write the partition's pairs to [default: RUN/dedup/partitions].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    #[command(flatten)]
    pub dedup: DedupArgs,
}

/// Step 2's options: dedup options, the centroids folder, the partition and the output folder.
pub struct PartitionOptions {
    pub dedup: DedupOptions,
    pub centroids: PathBuf,
    pub part: Shard,
    pub out: PathBuf,
}

impl TryFrom<&DedupPartitionArgs> for PartitionOptions {
    type Error = Error;

    fn try_from(a: &DedupPartitionArgs) -> Result<Self> {
        let dedup = DedupOptions::try_from(&a.dedup)?;
        let centroids = dedup
            .centroids
            .clone()
            .ok_or_else(|| invalid("--centroids", "is required: the folder `sieve dedup-centroids` wrote"))?;
        let out = a.out.clone().unwrap_or_else(|| default_partitions_dir(&a.dedup.run));
        Ok(Self { dedup, centroids, part: a.partition, out })
    }
}

pub fn execute_partition(args: DedupPartitionArgs, g: Global) -> anyhow::Result<()> {
    super::hand_back_large_frees();
    let PartitionOptions { dedup, centroids, part, out } = PartitionOptions::try_from(&args)?;
    let info = sieve::analyze::partition::partition(&dedup, &centroids, part, &out)?;
    let counts: Vec<String> = info.pairs.iter().map(|(k, n)| format!("{n} {k}")).collect();
    eprintln!(
        "sieve dedup-partition {part}: {} pairs -> {}",
        if counts.is_empty() { "no".into() } else { counts.join(", ") },
        out.join(&info.file).display()
    );
    print_json(g, &info)
}

#[derive(Debug, Args)]
pub struct DedupCombineArgs {
    /// Folder holding every partition's results [default: RUN/dedup/partitions].
    #[arg(long, value_name = "DIR")]
    pub partitions: Option<PathBuf>,

    #[command(flatten)]
    pub dedup: DedupArgs,
}

impl TryFrom<&DedupCombineArgs> for DedupOptions {
    type Error = Error;

    fn try_from(a: &DedupCombineArgs) -> Result<Self> {
        let mut opts = DedupOptions::try_from(&a.dedup)?;
        opts.from_partitions = Some(a.partitions.clone().unwrap_or_else(|| default_partitions_dir(&opts.run)));
        Ok(opts)
    }
}

pub fn execute_combine(args: DedupCombineArgs, g: Global) -> anyhow::Result<()> {
    super::hand_back_large_frees();
    let opts = DedupOptions::try_from(&args)?;
    let _lock = RunLock::acquire(&opts.run, Mode::Shared, "sieve dedup-combine")?;
    let s = sieve::analyze::dedup::dedup(&opts)?;
    super::dedup::print_summary("sieve dedup-combine", &s, &opts.run);
    print_json(g, &s)
}
