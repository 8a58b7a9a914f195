//! `sieve verify`.

use std::path::PathBuf;

use clap::Args;
use sieve::store::lock::{Mode, RunLock};

use super::{print_json, Global};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Run directory to check.
    pub run: PathBuf,
}

pub fn execute(args: VerifyArgs, g: Global) -> anyhow::Result<()> {
    let _lock = RunLock::acquire(&args.run, Mode::Shared, "sieve verify")?;
    let s = sieve::store::read::verify(&args.run)?;
    eprintln!(
        "sieve verify: {} ok: {} parts, {} rows, {} files matched their checksums",
        args.run.display(),
        s.parts,
        s.rows,
        s.checksums
    );
    print_json(g, &s)
}
