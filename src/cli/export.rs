//! `sieve export`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use sieve::export::{ExportOptions, Exported, Format, Subset, DEFAULT_SHARD_SIZE};
use sieve::store::lock::{Mode, RunLock};
use sieve::store::Run;
use sieve::Error;

use super::{print_json, Global};

/// The layouts `sieve export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// clip-retrieval's inference output: img_emb/, text_emb/, metadata/ (image_path, caption,
    /// url, id), for clip_index, clip_back and clip_filter.
    ClipRetrieval,
    /// One Parquet table per part: id, uri, caption and the embeddings as fixed-size lists.
    Parquet,
    /// New WebDataset tar shards (00000.tar…): each record's original image bytes, KEY.txt
    /// (caption) and KEY.json (the source's .json fields plus a `sieve` object with its id, uri,
    /// sha256, size and the later stages' scores and flags), for training. Needs --subset.
    Webdataset,
}

/// Which records `sieve export` writes (embedded ones only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SubsetArg {
    /// Every embedded record.
    All,
    /// What `sieve dedup` keeps (RUN/dedup/keep.txt).
    Keep,
    /// What `sieve select` chose (RUN/selection/keep.txt).
    Selection,
}

#[derive(Debug, Args)]
#[command(after_help = "`--format webdataset --subset keep|selection|all` writes the chosen records themselves \
    as WebDataset tar shards for training (original image bytes, caption, JSON with sieve's scores \
    and flags); rerunning the same command after a kill resumes it. Details: docs/guide.md, \
    \"Other tools: sieve export\".")]
pub struct ExportArgs {
    /// Run directory to export.
    pub run: PathBuf,

    /// Folder to write into (created; must be empty unless --overwrite, or hold an interrupted
    /// webdataset export of the same parameters, which is resumed).
    #[arg(long, short)]
    pub out: PathBuf,

    /// The layout to write.
    #[arg(long, value_enum)]
    pub format: FormatArg,

    /// Which records to write. Required with --format webdataset (a trainer's data should be
    /// chosen, not defaulted); the other formats default to all.
    #[arg(long, value_enum)]
    pub subset: Option<SubsetArg>,

    /// Samples per tar shard, --format webdataset only [default: 10000, as img2dataset].
    #[arg(long)]
    pub shard_size: Option<usize>,

    /// Replace an earlier export in --out (only files an export writes are removed).
    #[arg(long)]
    pub overwrite: bool,
}

pub fn execute(args: ExportArgs, g: Global) -> anyhow::Result<()> {
    let format = match args.format {
        FormatArg::ClipRetrieval => Format::ClipRetrieval,
        FormatArg::Parquet => Format::Parquet,
        FormatArg::Webdataset => Format::Webdataset,
    };
    let usage = |what, reason: &str| Error::InvalidArg { what, reason: reason.into() };
    let subset = match (args.subset, format) {
        (Some(SubsetArg::All), _) | (None, Format::ClipRetrieval | Format::Parquet) => Subset::All,
        (Some(SubsetArg::Keep), _) => Subset::Keep,
        (Some(SubsetArg::Selection), _) => Subset::Selection,
        (None, Format::Webdataset) => {
            return Err(usage(
                "--subset",
                "--format webdataset needs --subset: keep (what `sieve dedup` keeps), selection (what `sieve select` chose) or all",
            )
            .into())
        }
    };
    if args.shard_size.is_some() && format != Format::Webdataset {
        return Err(usage("--shard-size", "applies to --format webdataset only").into());
    }
    let opts = ExportOptions {
        format,
        subset,
        shard_size: args.shard_size.unwrap_or(DEFAULT_SHARD_SIZE),
        overwrite: args.overwrite,
    };
    let _lock = RunLock::acquire(&args.run, Mode::Shared, "sieve export")?;
    let run = Run::open(&args.run)?;
    match sieve::export::export(&run, &args.out, &opts)? {
        Exported::Embeddings(s) => {
            eprintln!(
                "sieve export: {} embedded records in {} part(s){} -> {} ({} records left out: skipped, or not in --subset)",
                s.rows,
                s.parts,
                if s.text { ", with caption embeddings" } else { "" },
                args.out.display(),
                s.left_out
            );
            print_json(g, &s)
        }
        Exported::Webdataset(o) => {
            let s = &o.summary;
            eprintln!(
                "sieve export: {} samples in {} shard(s) -> {}{} ({} skipped: unreadable or changed since embedding; {} records not in --subset or not embedded)",
                s.written,
                s.shards.len(),
                args.out.display(),
                if o.resumed_shards > 0 { format!(", {} shard(s) kept from an earlier run", o.resumed_shards) } else { String::new() },
                s.skipped,
                s.left_out
            );
            print_json(g, &o)
        }
    }
}
