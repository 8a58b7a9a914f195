//! `sieve embed`.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use sieve::device::BatchSize;
use sieve::error::{Error, Result};
use sieve::ingest::{InputFormat, InputSpec, Shard};
use sieve::media::decode::Limits;
use sieve::model::{ModelSpec, Quantize};
use sieve::pipeline::EmbedOptions;
use sieve::store::lock::{Mode, RunLock};
use sieve::store::RunManifest;

use super::common::{batch_size, shard, ModelArgs};
use super::{check_out_dir, invalid, print_json, Global};

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// What to embed, detected from the name (or set with --input-format):
    /// a folder, walked recursively, where `cat.txt` (or the `caption` field of `cat.json`) next
    /// to `cat.jpg` is its caption; a manifest (.csv, .tsv, .jsonl, .parquet) with an image column
    /// (a path, relative to the manifest's folder; remote URLs are listed as remote-uri) and a
    /// caption column; or WebDataset .tar shards (KEY.jpg + KEY.txt or KEY.json, as img2dataset
    /// writes them), read in place. Several manifests or tars may be given, and brace patterns
    /// such as 'shards/{00000..00099}.tar' are expanded.
    #[arg(required = true, num_args = 1.., value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,

    /// Force the input format: dir, csv, tsv, jsonl, parquet or wds.
    #[arg(long, value_name = "FORMAT", ignore_case = true, hide_possible_values = true)]
    pub input_format: Option<FormatArg>,

    /// Manifest column naming the image [default: the first of image, path, image_path,
    /// filepath, file_path, file, filename, file_name, url, image_url, uri].
    #[arg(long, value_name = "COLUMN")]
    pub image_col: Option<String>,

    /// Manifest column holding the caption [default: the first of caption, text, txt, title,
    /// alt, alt_text, description, prompt; none: images only].
    #[arg(long, value_name = "COLUMN")]
    pub caption_col: Option<String>,

    /// Manifest columns to carry into the metadata, as one JSON object per record in its
    /// `extra` column (comma-separated or repeated). img2dataset's `key`, `url`,
    /// `original_width` and `original_height` columns are carried as columns of their own
    /// without it, and every field of a sample's `.json` (WebDataset tars, img2dataset's
    /// `files` output) is kept.
    #[arg(long, value_name = "COLUMNS", value_delimiter = ',')]
    pub keep_cols: Vec<String>,

    /// Embed only slice i of n (numbered from 0) so n processes or machines can split one input:
    /// contiguous slices of the listed records, or of the tar files for WebDataset input.
    /// Combine the runs with `sieve merge`.
    #[arg(long, value_name = "i/n", value_parser = shard)]
    pub shard: Option<Shard>,

    /// Run directory to write.
    #[arg(long, short)]
    pub out: PathBuf,

    #[command(flatten)]
    pub model: ModelArgs,

    /// Images per model batch, or `auto`: on a GPU the largest multiple of 32 (at most 512)
    /// whose activations fit in half the free device memory, on the CPU 64.
    #[arg(long, default_value = "auto", value_parser = batch_size)]
    pub batch_size: BatchSize,

    /// Lower precision for the encoder layers' linear layers on the CPU (the rest stays f32).
    /// `int8`: the V, attention output and MLP projections in int8 (weights per output channel,
    /// activations per row as they arrive), as ONNX Runtime's dynamic quantisation does: about
    /// 2× as fast as f32 on AMX, 1.7–1.9× with AVX-512 VNNI, 1.1× with AVX2 only; every CPU
    /// gives the same bytes. `bf16`: every linear layer in bf16 with f32 sums, as PyTorch's CPU
    /// autocast does: about 2× f32 on AMX, slower than f32 with AVX-512 BF16 alone; refused
    /// without AVX-512 BF16. Both keep a cosine of ≥ 0.999 to f32 on sieve's
    /// fixtures (docs/performance.md). Recorded in run.json, so a run is never resumed or
    /// merged with another setting. CPU only.
    #[arg(long, value_name = "PRECISION", default_value = "none")]
    pub quantize: QuantizeArg,

    /// Rows per output part file.
    #[arg(long, default_value_t = 100_000)]
    pub part_size: usize,

    /// Largest image file accepted, in bytes; larger files are listed as too-large.
    #[arg(long, default_value_t = Limits::default().max_bytes)]
    pub max_bytes: u64,

    /// Largest width × height accepted, checked from the header before decoding; larger images
    /// (e.g. decompression bombs) are listed as too-many-pixels.
    #[arg(long, default_value_t = Limits::default().max_pixels)]
    pub max_pixels: u64,

    /// Longest caption kept, in bytes: a longer caption file (or manifest field) is read only
    /// this far, cut at a character boundary and flagged caption_truncated.
    #[arg(long, default_value_t = sieve::ingest::DEFAULT_MAX_CAPTION_BYTES)]
    pub max_caption_bytes: u64,

    /// Follow symlinks in an input folder that lead outside it (as ripgrep's --follow). By
    /// default an image linked from outside is listed as link-outside-input and a caption
    /// linked from outside is not read, so a link such as `a.txt -> /etc/passwd` cannot leak a
    /// host file into the run. Links that stay inside the folder are always followed.
    #[arg(long, short = 'L')]
    pub follow_links: bool,

    /// Replace a run already in --out (by default an interrupted run of the same command is
    /// resumed, and a run of a different command refused). The outputs of later stages
    /// (dedup/, pairs, quality, diversity, selection/, report.html) are removed with it.
    #[arg(long)]
    pub overwrite: bool,
}

/// `--quantize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QuantizeArg {
    /// f32 throughout.
    None,
    /// int8 linear layers (AMX, AVX-512 VNNI or AVX2 kernels where present).
    Int8,
    /// bf16 linear layers with f32 sums (AMX, else AVX-512 BF16; refused without).
    Bf16,
}

impl From<QuantizeArg> for Quantize {
    fn from(q: QuantizeArg) -> Self {
        match q {
            QuantizeArg::None => Quantize::None,
            QuantizeArg::Int8 => Quantize::Int8,
            QuantizeArg::Bf16 => Quantize::Bf16,
        }
    }
}

/// `--input-format`, with the spellings the library's parser has always accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    #[value(alias = "folder")]
    Dir,
    Csv,
    Tsv,
    #[value(alias = "ndjson")]
    Jsonl,
    Parquet,
    #[value(aliases = ["webdataset", "tar"])]
    Wds,
}

impl From<FormatArg> for InputFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Dir => InputFormat::Dir,
            FormatArg::Csv => InputFormat::Csv,
            FormatArg::Tsv => InputFormat::Tsv,
            FormatArg::Jsonl => InputFormat::Jsonl,
            FormatArg::Parquet => InputFormat::Parquet,
            FormatArg::Wds => InputFormat::Wds,
        }
    }
}

/// Validated options with a progress bar; `--quiet` (a global flag) turns it off afterwards.
impl TryFrom<&EmbedArgs> for EmbedOptions {
    type Error = Error;

    fn try_from(a: &EmbedArgs) -> Result<Self> {
        if a.part_size == 0 {
            return Err(invalid("--part-size", "must be at least 1"));
        }
        if a.max_caption_bytes == 0 {
            return Err(invalid("--max-caption-bytes", "must be at least 1"));
        }
        check_out_dir(&a.out)?;
        Ok(EmbedOptions {
            input: InputSpec {
                paths: a.inputs.clone(),
                format: a.input_format.map(Into::into),
                image_col: a.image_col.clone(),
                caption_col: a.caption_col.clone(),
                keep_cols: a.keep_cols.clone(),
                shard: a.shard,
                follow_links: a.follow_links,
                max_caption_bytes: a.max_caption_bytes,
            },
            out: a.out.clone(),
            model: ModelSpec::new(a.model.model.clone(), a.model.revision.clone()),
            device: a.model.device,
            batch_size: a.batch_size,
            quantize: a.quantize.into(),
            part_size: a.part_size,
            limits: Limits { max_bytes: a.max_bytes, max_pixels: a.max_pixels, max_caption_bytes: a.max_caption_bytes },
            overwrite: a.overwrite,
            progress: true,
        })
    }
}

pub fn execute(args: EmbedArgs, g: Global) -> anyhow::Result<()> {
    let opts = EmbedOptions { progress: !g.quiet, ..EmbedOptions::try_from(&args)? };
    super::common::disable_fast_paths(&args.model.cuda_disable);
    let _lock = RunLock::acquire(&opts.out, Mode::Exclusive, "sieve embed")?;
    let outcome = sieve::pipeline::embed(&opts)?;
    if outcome.already_complete {
        eprintln!("sieve embed: {} already holds this run, finished; nothing to do", opts.out.display());
    } else if outcome.resumed_rows > 0 {
        eprintln!("sieve embed: resumed after {} records already written", outcome.resumed_rows);
    }
    print_summary("sieve embed", &outcome.manifest, &opts.out);
    print_json(g, &outcome.manifest)
}

/// The counts of a run directory (embed, merge and run print it).
pub fn print_summary(what: &str, m: &RunManifest, out: &Path) {
    let c = &m.counts;
    eprintln!(
        "{what} {} records, {} embedded ({} with captions), {} skipped -> {}",
        c.records,
        c.embedded,
        c.with_caption,
        c.skipped,
        out.display()
    );
    for (reason, n) in &c.skipped_by_reason {
        eprintln!("  skipped {n:>8}  {reason}");
    }
    if c.captions_truncated > 0 || c.captions_lossy > 0 {
        eprintln!(
            "  captions truncated to {} tokens: {}, not UTF-8 (decoded lossily): {}",
            m.text_max_tokens, c.captions_truncated, c.captions_lossy
        );
    }
}
