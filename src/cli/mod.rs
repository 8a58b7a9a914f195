//! Command-line arguments (clap derive) and their conversion into validated stage options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::media::decode::Limits;
use crate::model::{ModelSpec, DEFAULT_MODEL};
use crate::pipeline::EmbedOptions;

/// sieve: curate image–text training data with CLIP embeddings.
///
/// Embeds images and their captions into one space (CUDA, Metal or CPU), writing a run directory
/// that later stages (dedup, scoring, diversity, selection) read.
#[derive(Debug, Parser)]
#[command(
    name = "sieve",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = "Exit codes: 0 the run finished (also when some files were skipped; they are listed \
                  with a reason), 1 the run could not be done, 2 invalid arguments.\n\
                  Logs: RUST_LOG=info (or debug) for more detail on stderr."
)]
pub struct Cli {
    /// Hide progress bars (they are also hidden when stderr is not a terminal).
    #[arg(long, short, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Embed a folder of images (and sidecar .txt captions) into a run directory.
    ///
    /// Every image ends either embedded or listed in metadata with a reason (unreadable,
    /// not-an-image, decode-error, too-large, too-many-pixels, empty-file); bad files never stop
    /// the run. Output: RUN/metadata/part-*.parquet, RUN/img_emb/part-*.npy and
    /// RUN/text_emb/part-*.npy (float16, L2-normalised, row i = metadata row i, zeros where
    /// nothing was embedded) and RUN/run.json.
    Embed(EmbedArgs),
    /// Measure model-only throughput (images/s, captions/s) with random weights.
    ///
    /// Uses the shape in a CLIP config.json (e.g. models/clip-vit-base-patch32/config.json);
    /// no weights are needed. scripts/bench_vs_torch.py runs this next to PyTorch.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model: a Hugging Face repo id (downloaded once into the hf-hub cache; HF_HOME and
    /// HF_HUB_OFFLINE are honoured) or a local folder with config.json,
    /// preprocessor_config.json, tokenizer.json and model.safetensors (or pytorch_model.bin).
    #[arg(long, default_value = DEFAULT_MODEL, env = "SIEVE_MODEL")]
    pub model: String,

    /// Hub revision (branch, tag or commit) of --model; ignored for a local folder.
    #[arg(long)]
    pub revision: Option<String>,

    /// Compute device: auto (CUDA, then Metal, then CPU), cpu, cuda[:N] or metal[:N].
    #[arg(long, default_value = "auto")]
    pub device: String,
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Folder of images, walked recursively; `name.txt` next to `name.jpg` is its caption.
    pub input: PathBuf,

    /// Run directory to write.
    #[arg(long, short)]
    pub out: PathBuf,

    #[command(flatten)]
    pub model: ModelArgs,

    /// Images per model batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,

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

    /// Replace a run already in --out.
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// CLIP config.json giving the model's shape.
    #[arg(long, default_value = "models/clip-vit-base-patch32/config.json")]
    pub config: PathBuf,

    /// Batch size.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,

    /// Timed iterations per tower (after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,

    /// Compute device: auto, cpu, cuda[:N] or metal[:N].
    #[arg(long, default_value = "auto")]
    pub device: String,

    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,

    /// Measure candle-transformers' stock CLIP instead of sieve's model (the baseline).
    #[arg(long)]
    pub stock: bool,
}

impl EmbedArgs {
    /// Validates the arguments into the pipeline's options.
    pub fn to_options(&self, quiet: bool) -> Result<EmbedOptions> {
        if self.batch_size == 0 {
            return Err(Error::InvalidArg { what: "--batch-size", reason: "must be at least 1".into() });
        }
        if self.part_size == 0 {
            return Err(Error::InvalidArg { what: "--part-size", reason: "must be at least 1".into() });
        }
        Ok(EmbedOptions {
            input: self.input.clone(),
            out: self.out.clone(),
            model: ModelSpec::new(self.model.model.clone(), self.model.revision.clone()),
            device: self.model.device.parse::<DeviceSpec>()?,
            batch_size: self.batch_size,
            part_size: self.part_size,
            limits: Limits { max_bytes: self.max_bytes, max_pixels: self.max_pixels },
            overwrite: self.overwrite,
            progress: !quiet,
        })
    }
}
