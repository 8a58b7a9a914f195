//! `sieve merge`.

use std::path::PathBuf;

use clap::Args;
use sieve::error::{Error, Result};
use sieve::store::lock::{Mode, RunLock};
use sieve::store::merge::MergeOptions;

use super::{check_out_dir, invalid, print_json, Global};

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Run directories to combine (e.g. the outputs of `sieve embed --shard 0/4` … `3/4`).
    #[arg(required = true, num_args = 1.., value_name = "RUN")]
    pub runs: Vec<PathBuf>,

    /// Run directory to write.
    #[arg(long, short)]
    pub out: PathBuf,

    /// Rows per output part file [default: the first run's].
    #[arg(long)]
    pub part_size: Option<usize>,

    /// Replace a run already in --out.
    #[arg(long)]
    pub overwrite: bool,
}

impl TryFrom<&MergeArgs> for MergeOptions {
    type Error = Error;

    fn try_from(a: &MergeArgs) -> Result<Self> {
        if a.part_size == Some(0) {
            return Err(invalid("--part-size", "must be at least 1"));
        }
        check_out_dir(&a.out)?;
        if a.runs.iter().any(|r| r == &a.out) {
            return Err(invalid("--out", "must not be one of the runs being merged"));
        }
        Ok(MergeOptions { runs: a.runs.clone(), out: a.out.clone(), part_size: a.part_size, overwrite: a.overwrite })
    }
}

pub fn execute(args: MergeArgs, g: Global) -> anyhow::Result<()> {
    let opts = MergeOptions::try_from(&args)?;
    let _lock = RunLock::acquire(&opts.out, Mode::Exclusive, "sieve merge")?;
    let outcome = sieve::store::merge::merge_run(&opts)?;
    if outcome.already_complete {
        eprintln!("sieve merge: {} already holds this merge, finished; nothing to do", opts.out.display());
    } else if outcome.resumed_rows > 0 {
        eprintln!("sieve merge: resumed after {} records already written", outcome.resumed_rows);
    }
    let m = outcome.manifest;
    super::embed::print_summary(&format!("sieve merge: {} runs,", opts.runs.len()), &m, &opts.out);
    print_json(g, &m)
}
