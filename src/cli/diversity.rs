//! `sieve diversity`.

use std::path::{Path, PathBuf};

use clap::Args;
use sieve::analyze::diversity::{DiversityOptions, Report};
use sieve::device::DeviceSpec;
use sieve::error::{Error, Result};
use sieve::store::lock::{Mode, RunLock};
use sieve::store::Layout;

use super::common::device;
use super::{at_least_1, invalid, print_json, Global};

#[derive(Debug, Args)]
pub struct DiversityArgs {
    /// Run directory (made by `sieve embed`).
    pub run: PathBuf,

    /// Also measure each group of this metadata column: `folder` (the folder part of the uri)
    /// or any text, integer or boolean column of RUN/metadata (at most 1,000 groups).
    #[arg(long, value_name = "COLUMN")]
    pub by: Option<String>,

    /// Number of seeded k-means clusters for cluster entropy and coverage.
    #[arg(long, default_value_t = sieve::analyze::diversity::DEFAULT_CLUSTERS)]
    pub clusters: usize,

    /// A cluster counts as covered when it holds at least this fraction of an even share of the
    /// items (0.1: a tenth of n/clusters).
    #[arg(long, default_value_t = sieve::analyze::diversity::DEFAULT_MIN_SHARE)]
    pub min_share: f64,

    /// Nearest-neighbour similarity: every item when there are at most this many, else a seeded
    /// sample of this many searched in their --probes nearest clusters.
    #[arg(long, default_value_t = sieve::analyze::diversity::DEFAULT_NN_QUERIES)]
    pub nn_queries: usize,

    /// Clusters each sampled nearest-neighbour query searches.
    #[arg(long, default_value_t = sieve::index::clustered::DEFAULT_PROBES)]
    pub probes: usize,

    /// Seed for k-means and sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Device for k-means and search: auto, cpu, cuda[:N] or metal[:N].
    #[arg(long, default_value = "auto", value_parser = device)]
    pub device: DeviceSpec,
}

impl DiversityArgs {
    /// `sieve run`'s diversity stage: these defaults, with the run's column, seed and device.
    pub fn for_run(run: PathBuf, by: Option<String>, seed: u64, device: DeviceSpec) -> Self {
        Self {
            run,
            by,
            clusters: sieve::analyze::diversity::DEFAULT_CLUSTERS,
            min_share: sieve::analyze::diversity::DEFAULT_MIN_SHARE,
            nn_queries: sieve::analyze::diversity::DEFAULT_NN_QUERIES,
            probes: sieve::index::clustered::DEFAULT_PROBES,
            seed,
            device,
        }
    }
}

impl TryFrom<&DiversityArgs> for DiversityOptions {
    type Error = Error;

    fn try_from(a: &DiversityArgs) -> Result<Self> {
        if !(0.0..=1.0).contains(&a.min_share) {
            return Err(invalid("--min-share", format!("{}: expected 0 to 1", a.min_share)));
        }
        Ok(DiversityOptions {
            run: a.run.clone(),
            by: a.by.clone(),
            clusters: at_least_1("--clusters", a.clusters)?,
            min_share: a.min_share,
            nn_queries: at_least_1("--nn-queries", a.nn_queries)?,
            probes: at_least_1("--probes", a.probes)?,
            seed: a.seed,
            device: a.device,
        })
    }
}

pub fn execute(args: DiversityArgs, g: Global) -> anyhow::Result<()> {
    let opts = DiversityOptions::try_from(&args)?;
    let _lock = RunLock::acquire(&opts.run, Mode::Shared, "sieve diversity")?;
    let r = sieve::analyze::diversity::diversity(&opts)?;
    print_summary(&r, &opts.run);
    print_json(g, &r)
}

/// Vendi score, effective rank, coverage and NN similarity per modality (diversity and run).
pub fn print_summary(r: &Report, run: &Path) {
    eprintln!(
        "sieve diversity: {} embedded ({} with captions) -> {}",
        r.embedded,
        r.with_caption,
        Layout::new(run).diversity().display()
    );
    for (name, m) in [("image", &r.overall.image), ("caption", &r.overall.text), ("joint", &r.overall.joint)] {
        if let Some(m) = m {
            eprintln!(
                "  {name:<8} Vendi {:>9.2}  effective rank {:>7.2}  coverage {:.2}  NN similarity mean {}",
                m.vendi.q1,
                m.effective_rank,
                m.clusters.coverage,
                m.nn_similarity.as_ref().map(|s| format!("{:.4}", s.mean)).unwrap_or_else(|| "-".into())
            );
        }
    }
    if let Some(by) = &r.by {
        eprintln!("  {} groups by {by}", r.groups.len());
    }
}
