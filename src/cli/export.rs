//! `sieve export`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use sieve::export::Format;
use sieve::store::lock::{Mode, RunLock};
use sieve::store::Run;

use super::{print_json, Global};

/// The layouts `sieve export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// clip-retrieval's inference output: img_emb/, text_emb/, metadata/ (image_path, caption,
    /// url, id), for clip_index, clip_back and clip_filter.
    ClipRetrieval,
    /// One Parquet table per part: id, uri, caption and the embeddings as fixed-size lists.
    Parquet,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Run directory to export.
    pub run: PathBuf,

    /// Folder to write into (created; must be empty unless --overwrite).
    #[arg(long, short)]
    pub out: PathBuf,

    /// The layout to write.
    #[arg(long, value_enum)]
    pub format: FormatArg,

    /// Replace an earlier export in --out (only files an export writes are removed).
    #[arg(long)]
    pub overwrite: bool,
}

pub fn execute(args: ExportArgs, g: Global) -> anyhow::Result<()> {
    let _lock = RunLock::acquire(&args.run, Mode::Shared, "sieve export")?;
    let run = Run::open(&args.run)?;
    let format = match args.format {
        FormatArg::ClipRetrieval => Format::ClipRetrieval,
        FormatArg::Parquet => Format::Parquet,
    };
    let s = sieve::export::export(&run, &args.out, format, args.overwrite)?;
    eprintln!(
        "sieve export: {} embedded records in {} part(s){} -> {} ({} skipped records left out)",
        s.rows,
        s.parts,
        if s.text { ", with caption embeddings" } else { "" },
        args.out.display(),
        s.left_out
    );
    print_json(g, &s)
}
