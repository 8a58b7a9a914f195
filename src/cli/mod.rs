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

    /// Print the command's summary as one JSON object on stdout (the human summary on stderr
    /// stays).
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The main job in one command: embed INPUT into --out, then dedup, score, quality,
    /// diversity and the report (RUN/report.html) over it.
    ///
    /// Takes `sieve embed`'s arguments and the main ones of each later stage (see each stage's
    /// --help for details; the rest keep their defaults, run the stage's own command for them).
    /// Resumable: rerunning the same command resumes an interrupted embedding and skips every
    /// stage already finished with the same options (recorded in RUN/stages.json); a stage
    /// whose options changed runs again, with every stage after it.
    Run(Box<RunArgs>),
    /// Embed images and captions (a folder, a manifest or WebDataset tars) into a run directory.
    ///
    /// Every record ends either embedded or listed in metadata with a reason (unreadable,
    /// missing, not-an-image, decode-error, too-large, too-many-pixels, empty-file, remote-uri,
    /// bad-manifest-line, corrupt-archive, not-a-file, link-outside-input,
    /// non-finite-embedding); bad files never stop the run, and a summary of the
    /// skipped counts by reason is printed at the end. Output: RUN/metadata/part-*.parquet,
    /// RUN/img_emb/part-*.npy and RUN/text_emb/part-*.npy (float16, L2-normalised, row i =
    /// metadata row i, zeros where nothing was embedded) and RUN/run.json.
    ///
    /// Resumable: parts are written atomically, so if the run is killed, rerunning the same
    /// command keeps the parts already written and goes on from there (a finished run is left
    /// as it is). --shard i/n embeds a deterministic slice; `sieve merge` combines the slices.
    Embed(EmbedArgs),
    /// Combine runs made with `sieve embed --shard i/n` into one run.
    ///
    /// Rows are written in id order (the order of the unsharded input) and re-cut into parts of
    /// --part-size; embeddings are copied exactly. Runs made with a different model, weights or
    /// preprocessing are refused, as are runs that overlap (the same records twice).
    Merge(MergeArgs),
    /// Measure model-only throughput (images/s, captions/s) with random weights.
    ///
    /// Uses the shape in a CLIP config.json (e.g. models/clip-vit-base-patch32/config.json);
    /// no weights are needed. scripts/bench_vs_torch.py runs this next to PyTorch.
    Bench(BenchArgs),
    /// Find exact, perceptual and semantic duplicates in a run and choose one item to keep.
    ///
    /// Reads RUN (made by `sieve embed`) and writes RUN/dedup/: groups.parquet (one row per item
    /// in a duplicate group: id, uri, kind, group_id, kept, kept_id, similarity to the kept item),
    /// keep.txt and remove.txt (one uri per line; every embedded record is in exactly one) and
    /// summary.json (counts per kind, duplicate rate, thresholds and index used). Reruns write
    /// byte-identical files (with --index hnsw the graph build is parallel and pairs at the recall
    /// margin may differ).
    ///
    /// Kinds: exact (identical bytes), perceptual (pHash Hamming distance), image (image-embedding
    /// cosine), caption (caption-embedding cosine), joint (image and caption both near-duplicate).
    /// Default thresholds are per model, from models/registry.json.
    Dedup(DedupArgs),
    /// Partitioned dedup, step 1: k-means centroids of a run's embeddings, for dedup-partition.
    ///
    /// Trains seeded k-means on a sample of the image embeddings (and of the caption embeddings,
    /// when the run has captions) exactly as `sieve dedup --clusters K` does with the same
    /// --clusters, --sample and --seed, and writes OUT/image.npy, OUT/caption.npy (float32
    /// [K, d]) and OUT/centroids.json (the run's fingerprint, settings, checksums). Steps 2 and 3
    /// (dedup-partition, dedup-combine) then split the clustered search over processes or
    /// machines (Ray, Slurm, Spark: see scripts/ray and scripts/slurm) and give the same
    /// dedup/ outputs as `sieve dedup RUN --clusters K` in one process.
    DedupCentroids(DedupCentroidsArgs),
    /// Partitioned dedup, step 2: search one partition of the clusters, write its pairs.
    ///
    /// Assigns every vector to its nearest centroids (from `sieve dedup-centroids`; an item near
    /// a border also to its second) and searches the clusters c with c mod n = i exactly, as
    /// `sieve dedup --clusters` does for all of them. Writes OUT/part-IIIII-of-NNNNN.parquet (kind,
    /// a_id, b_id, similarity) and, last, its .json (run fingerprint, centroids, settings, pair
    /// counts); a rerun rewrites the same bytes, so a failed task can simply be retried. Needs
    /// --centroids DIR; takes `sieve dedup`'s flags (pass the same --kinds and thresholds to
    /// dedup-combine; --against is refused).
    DedupPartition(DedupPartitionArgs),
    /// Partitioned dedup, step 3: combine every partition into RUN/dedup/, as `sieve dedup` writes it.
    ///
    /// Reads all n partitions from dedup-partition (refusing a missing one, one from another run
    /// or other centroids, or one made with other --kinds or thresholds), uses the union of their
    /// pairs in place of the search, and finds exact and perceptual duplicates, groups and kept
    /// items with the one-process code: groups.parquet, keep.txt, remove.txt and summary.json
    /// are byte-identical to `sieve dedup RUN --clusters K` with the same centroids. Takes
    /// `sieve dedup`'s flags (--grouping, --keep, --remove-kinds, --pairs…).
    DedupCombine(DedupCombineArgs),
    /// Score how well each caption fits its image, and flag pairs that do not fit.
    ///
    /// Reads RUN and writes RUN/pairs.parquet (one row per embedded item with a caption: id, uri,
    /// cosine, clip_score = max(100·cosine, 0) as torchmetrics' CLIPScore, caption_rank: the rank
    /// of its own caption among all captions for its image (null beyond --top-k), image_rank: the
    /// rank of its image among all images for its caption (searched only when caption_rank is
    /// null), the flags, and for a flagged pair the caption in the dataset that fits its image
    /// best) and RUN/pairs_summary.json (percentiles, histogram, counts per flag).
    ///
    /// Flags: low_score (cosine under --min-score, or the model's default from
    /// models/registry.json, or in the --bottom-percent), outranked (at least --top-k other
    /// captions fit the image better than its own and at least --top-k other images fit the
    /// caption better than its own image).
    Score(ScoreArgs),
    /// Measure how diverse a run's images, captions and pairs are, overall and per group.
    ///
    /// Writes RUN/diversity.json with, for the image, caption and joint ([image, caption]/√2)
    /// embeddings of the whole run and of each group of --by: the Vendi score (cosine kernel,
    /// exact through the d×d dual; orders 1, 2 and ∞: an effective number of distinct items),
    /// the effective rank, the entropy of seeded k-means cluster sizes, coverage (share of the
    /// clusters holding at least --min-share of an even share) and nearest-neighbour similarity
    /// (mean and percentiles; all items up to --nn-queries, a seeded sample beyond).
    Diversity(DiversityArgs),
    /// Flag low-quality images and captions from the signals `sieve embed` recorded.
    ///
    /// Writes RUN/quality.parquet (one row per record: the signals, one boolean flag_NAME column
    /// per flag, and `flags`, the raised ones comma-separated) and RUN/quality_summary.json
    /// (thresholds, counts per flag, percentiles of every signal, captions per script).
    ///
    /// Image flags: blur (Laplacian variance < 50), dark (mean luma < 40), bright (> 230),
    /// low_contrast (luma std < 16), low_information (histogram entropy < 1 bit), tiny
    /// (shorter side < 64 px), odd_aspect (> 3:1), grayscale (no pixel with a channel spread of
    /// 5 or more, in a colour file), animated (more than 1 frame). Caption flags: no_caption,
    /// empty_caption, short_caption (< 5 tokens with start/end), truncated, boilerplate,
    /// non_utf8. See the README's table for where the defaults come from.
    Quality(QualityArgs),
    /// Select a diverse subset of a run under a budget.
    ///
    /// Drops the duplicates in RUN/dedup/remove.txt first (run `sieve dedup` before), optionally
    /// the pairs `sieve score` flagged and the items `sieve quality` flagged (--drop-flags), then picks --budget items that spread over the embedding
    /// space. Writes RUN/selection/keep.txt (one uri per line, run order) and
    /// RUN/selection/summary.json, which compares the selection's Vendi score and coverage with a
    /// seeded random subset of the same size.
    Select(SelectArgs),
    /// Write RUN/report.html: one page showing what the other stages found, for people.
    ///
    /// Sections: a summary (records in, embedded, skipped by reason, duplicates by kind, flagged
    /// pairs, diversity, the model and thresholds used); the largest duplicate groups and those
    /// nearest the threshold, as thumbnail strips with similarities and the kept item marked;
    /// the lowest-scoring and outranked pairs with their captions, scores and the suggested
    /// better caption; histograms of the CLIP score (the low_score threshold drawn) and of each
    /// image's nearest-neighbour similarity (the dedup threshold drawn); diversity per group of
    /// `sieve diversity --by`; quality flags; the skipped files with their reasons. A stage not
    /// yet run is shown as "not run".
    ///
    /// The page is one self-contained file: thumbnails are embedded, plots are inline SVG, and it
    /// makes no network request, so it can be mailed or opened offline in any browser. It shows
    /// samples and aggregates only, so it stays small (thumbnails capped by --max-thumbnails)
    /// and opens fast for runs of any size.
    Report(ReportArgs),
    /// Check a run directory: every part file against its SHA-256 in run.json, the row counts
    /// and ids, and every stored embedding (every value finite, every embedded row of unit
    /// norm). Exits 1 naming the first damaged file and row.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Run directory to check.
    pub run: PathBuf,
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
    #[arg(long, value_name = "FORMAT")]
    pub input_format: Option<String>,

    /// Manifest column naming the image [default: the first of image, path, image_path,
    /// filepath, file_path, file, filename, file_name, url, image_url, uri].
    #[arg(long, value_name = "COLUMN")]
    pub image_col: Option<String>,

    /// Manifest column holding the caption [default: the first of caption, text, txt, title,
    /// alt, alt_text, description, prompt; none: images only].
    #[arg(long, value_name = "COLUMN")]
    pub caption_col: Option<String>,

    /// Embed only slice i of n (numbered from 0) so n processes or machines can split one input:
    /// contiguous slices of the listed records, or of the tar files for WebDataset input.
    /// Combine the runs with `sieve merge`.
    #[arg(long, value_name = "i/n")]
    pub shard: Option<String>,

    /// Run directory to write.
    #[arg(long, short)]
    pub out: PathBuf,

    #[command(flatten)]
    pub model: ModelArgs,

    /// Images per model batch, or `auto`: on a GPU the largest multiple of 32 (at most 512)
    /// whose activations fit in half the free device memory, on the CPU 64.
    #[arg(long, default_value = "auto")]
    pub batch_size: String,

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
    #[arg(long, default_value_t = crate::ingest::DEFAULT_MAX_CAPTION_BYTES)]
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

impl MergeArgs {
    pub fn to_options(&self) -> Result<crate::store::merge::MergeOptions> {
        if self.part_size == Some(0) {
            return Err(Error::InvalidArg { what: "--part-size", reason: "must be at least 1".into() });
        }
        check_out_dir(&self.out)?;
        if self.runs.iter().any(|r| r == &self.out) {
            return Err(Error::InvalidArg { what: "--out", reason: "must not be one of the runs being merged".into() });
        }
        Ok(crate::store::merge::MergeOptions {
            runs: self.runs.clone(),
            out: self.out.clone(),
            part_size: self.part_size,
            overwrite: self.overwrite,
        })
    }
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

    /// Measure candle-transformers' stock CLIP instead of sieve's model (the baseline).
    #[arg(long)]
    pub stock: bool,

    /// Also embed a few random inputs on the CPU in f32 and report the lowest cosine between
    /// those and the device's embeddings (a GPU's f16 against the reference precision).
    #[arg(long)]
    pub parity: bool,

    /// Instead of the model, measure the CPU stage of `sieve embed` over the images in DIR
    /// (read, decode, resize, normalise, hash, tokenise captions; all cores): the rate the
    /// device can be fed at. Preprocessing follows --model's preprocessor_config.json. Every
    /// batch runs with and without the quality signals (alternating), and both rates and their
    /// ratio are printed.
    #[arg(long, value_name = "DIR")]
    pub decode: Option<PathBuf>,

    /// Model whose preprocessing --decode uses (a folder or Hub id).
    #[arg(long, default_value = "models/tiny-clip")]
    pub model: String,

    /// Write --count synthetic photo-like 500×375 JPEGs (quality 90) into DIR and exit; input
    /// for --decode and end-to-end timing on machines without a dataset.
    #[arg(long, value_name = "DIR", hide = true)]
    pub write_jpegs: Option<PathBuf>,

    /// Number of images for --write-jpegs.
    #[arg(long, default_value_t = 2000, hide = true)]
    pub count: usize,
}

/// Neighbour-search arguments shared by score, diversity and select.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Neighbour search for the k-NN queries. exact: every pair compared (tiled matrix
    /// products). clusters: seeded k-means, each query searches the members of its --probes
    /// nearest clusters. hnsw: an approximate graph (hnsw_rs). auto: exact up to 20,000 vectors
    /// on a CPU (2,000,000 on a GPU), clusters beyond.
    #[arg(long, default_value = "auto")]
    pub index: String,

    /// Number of k-means clusters for clustered search (implies --index clusters)
    /// [default: √(queries × probes), which balances assigning the vectors against searching].
    /// From 256 clusters on they are trained in two levels (√K groups of clusters), and a
    /// vector's nearest clusters are looked for among those of its 6 nearest groups, so many
    /// small clusters stay cheap.
    #[arg(long, value_name = "K")]
    pub clusters: Option<usize>,

    /// With clustered search: clusters each query searches (more: better recall, slower).
    #[arg(long, default_value_t = crate::index::clustered::DEFAULT_PROBES)]
    pub probes: usize,

    /// Seed for k-means (and any sampling); the same seed gives the same output.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Device for the search: auto (CUDA, then Metal, then CPU), cpu, cuda[:N] or metal[:N].
    #[arg(long, default_value = "auto")]
    pub device: String,
}

impl SearchArgs {
    pub fn to_options(&self) -> Result<crate::analyze::common::SearchOptions> {
        if self.clusters == Some(0) {
            return Err(Error::InvalidArg { what: "--clusters", reason: "must be at least 1".into() });
        }
        if self.probes == 0 {
            return Err(Error::InvalidArg { what: "--probes", reason: "must be at least 1".into() });
        }
        Ok(crate::analyze::common::SearchOptions {
            index: self.index.parse()?,
            clusters: self.clusters,
            probes: self.probes,
            seed: self.seed,
            ..Default::default()
        })
    }
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Run directory to score (made by `sieve embed`).
    pub run: PathBuf,

    /// Flag pairs whose image-caption cosine is under this (e.g. 0.28 = CLIPScore 28)
    /// [default: the model's, from models/registry.json: 0.28 for CLIP ViT-B, 0.24 for ViT-L].
    #[arg(long, conflicts_with = "bottom_percent")]
    pub min_score: Option<f32>,

    /// Instead of a threshold, flag this percentage (0-100) of the pairs with the lowest scores.
    #[arg(long, value_name = "PERCENT")]
    pub bottom_percent: Option<f64>,

    /// k of the rank test: a pair is outranked when its caption is not among the k captions that
    /// fit its image best and its image not among the k images that fit its caption best.
    /// 0 turns the rank test off; at most 10000.
    #[arg(long, default_value_t = crate::analyze::pairs::DEFAULT_TOP_K)]
    pub top_k: usize,

    #[command(flatten)]
    pub search: SearchArgs,
}

impl ScoreArgs {
    /// Validates the arguments.
    pub fn to_options(&self) -> Result<crate::analyze::pairs::ScoreOptions> {
        use crate::analyze::pairs::{ScoreOptions, Threshold};
        let threshold = match (self.min_score, self.bottom_percent) {
            (Some(c), _) if !(-1.0..=1.0).contains(&c) => {
                return Err(Error::InvalidArg {
                    what: "--min-score",
                    reason: format!("{c} is not a cosine in [-1, 1] (for a CLIPScore of {c}, pass {})", c / 100.0),
                })
            }
            (Some(c), _) => Threshold::MinCosine(c),
            (None, Some(p)) if !(0.0..=100.0).contains(&p) => {
                return Err(Error::InvalidArg { what: "--bottom-percent", reason: format!("{p}: expected 0 to 100") })
            }
            (None, Some(p)) => Threshold::BottomPercent(p),
            (None, None) => Threshold::Model,
        };
        if self.top_k > MAX_TOP_K {
            return Err(Error::InvalidArg {
                what: "--top-k",
                reason: format!(
                    "{} is over the bound of {MAX_TOP_K} (the rank test keeps k neighbours per item)",
                    self.top_k
                ),
            });
        }
        Ok(ScoreOptions {
            run: self.run.clone(),
            threshold,
            top_k: self.top_k,
            search: self.search.to_options()?,
            device: self.search.device.parse()?,
        })
    }
}

#[derive(Debug, Args)]
pub struct DiversityArgs {
    /// Run directory (made by `sieve embed`).
    pub run: PathBuf,

    /// Also measure each group of this metadata column: `folder` (the folder part of the uri)
    /// or any text, integer or boolean column of RUN/metadata (at most 1,000 groups).
    #[arg(long, value_name = "COLUMN")]
    pub by: Option<String>,

    /// Number of seeded k-means clusters for cluster entropy and coverage.
    #[arg(long, default_value_t = crate::analyze::diversity::DEFAULT_CLUSTERS)]
    pub clusters: usize,

    /// A cluster counts as covered when it holds at least this fraction of an even share of the
    /// items (0.1: a tenth of n/clusters).
    #[arg(long, default_value_t = crate::analyze::diversity::DEFAULT_MIN_SHARE)]
    pub min_share: f64,

    /// Nearest-neighbour similarity: every item when there are at most this many, else a seeded
    /// sample of this many searched in their --probes nearest clusters.
    #[arg(long, default_value_t = crate::analyze::diversity::DEFAULT_NN_QUERIES)]
    pub nn_queries: usize,

    /// Clusters each sampled nearest-neighbour query searches.
    #[arg(long, default_value_t = crate::index::clustered::DEFAULT_PROBES)]
    pub probes: usize,

    /// Seed for k-means and sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Device for k-means and search: auto, cpu, cuda[:N] or metal[:N].
    #[arg(long, default_value = "auto")]
    pub device: String,
}

impl DiversityArgs {
    pub fn to_options(&self) -> Result<crate::analyze::diversity::DiversityOptions> {
        let at_least_1 = |what, v: usize| {
            if v == 0 {
                Err(Error::InvalidArg { what, reason: "must be at least 1".into() })
            } else {
                Ok(v)
            }
        };
        if !(0.0..=1.0).contains(&self.min_share) {
            return Err(Error::InvalidArg {
                what: "--min-share",
                reason: format!("{}: expected 0 to 1", self.min_share),
            });
        }
        Ok(crate::analyze::diversity::DiversityOptions {
            run: self.run.clone(),
            by: self.by.clone(),
            clusters: at_least_1("--clusters", self.clusters)?,
            min_share: self.min_share,
            nn_queries: at_least_1("--nn-queries", self.nn_queries)?,
            probes: at_least_1("--probes", self.probes)?,
            seed: self.seed,
            device: self.device.parse()?,
        })
    }
}

#[derive(Debug, Args)]
pub struct QualityArgs {
    /// Run directory (made by `sieve embed`).
    pub run: PathBuf,

    /// Override a flag's threshold: NAME=VALUE, e.g. blur=50 or tiny=200 (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub threshold: Vec<String>,

    /// Relative threshold: NAME=P flags the P% (0-100) of items furthest on the flag's side,
    /// e.g. blur=5 for the 5% blurriest (repeatable; at most P% when values tie).
    #[arg(long, value_name = "NAME=P")]
    pub percentile: Vec<String>,
}

impl QualityArgs {
    pub fn to_options(&self) -> Result<crate::analyze::quality::QualityOptions> {
        use crate::analyze::quality::{flag, flag_names, Cut, QualityOptions};
        let mut opts = QualityOptions::new(self.run.clone());
        let pairs = self
            .threshold
            .iter()
            .map(|t| ("--threshold", t))
            .chain(self.percentile.iter().map(|p| ("--percentile", p)));
        for (what, arg) in pairs {
            let invalid = |reason: String| Error::InvalidArg { what, reason };
            let (name, value) = arg.split_once('=').ok_or_else(|| invalid(format!("`{arg}`: expected NAME=VALUE")))?;
            let def = flag(name).ok_or_else(|| invalid(format!("unknown flag `{name}`; flags: {}", flag_names())))?;
            if def.signal.is_none() {
                return Err(invalid(format!("`{name}` is a yes/no flag with no threshold")));
            }
            let v: f64 = value.parse().map_err(|_| invalid(format!("`{value}` is not a number")))?;
            if !v.is_finite() {
                return Err(invalid(format!("`{arg}`: the threshold must be a finite number")));
            }
            let cut = if what == "--percentile" {
                if !(0.0..=100.0).contains(&v) {
                    return Err(invalid(format!("{v}: expected 0 to 100")));
                }
                Cut::Percentile(v)
            } else {
                Cut::Value(v)
            };
            if opts.cuts.insert(name.to_string(), cut).is_some() {
                return Err(invalid(format!("`{name}` is given more than once")));
            }
        }
        Ok(opts)
    }
}

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
    #[arg(long, default_value = "cluster-balanced")]
    pub strategy: String,

    /// Embedding to spread over: image, text or joint (text and joint leave out items without a
    /// caption).
    #[arg(long, default_value = "image")]
    pub embedding: String,

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
    #[arg(long, default_value = "auto")]
    pub device: String,
}

impl SelectArgs {
    pub fn to_options(&self) -> Result<crate::analyze::select::SelectOptions> {
        if self.budget == 0 {
            return Err(Error::InvalidArg { what: "--budget", reason: "must be at least 1".into() });
        }
        if self.clusters == Some(0) {
            return Err(Error::InvalidArg { what: "--clusters", reason: "must be at least 1".into() });
        }
        Ok(crate::analyze::select::SelectOptions {
            run: self.run.clone(),
            budget: self.budget,
            strategy: self.strategy.parse()?,
            embedding: self.embedding.parse()?,
            use_dedup: !self.keep_duplicates,
            drop_flagged: self.drop_flagged,
            drop_flags: self.drop_flags.as_deref().map(crate::analyze::quality::parse_flag_list).transpose()?,
            clusters: self.clusters,
            seed: self.seed,
            device: self.device.parse()?,
        })
    }
}

#[derive(Debug, Args)]
pub struct DedupArgs {
    /// Run directory to deduplicate (made by `sieve embed`).
    pub run: PathBuf,

    /// An existing corpus (another run directory, same model): find what in RUN duplicates it
    /// (or RUN itself) without re-embedding it. Its items are always kept; only RUN's items are
    /// listed in keep.txt/remove.txt.
    #[arg(long, value_name = "OLD_RUN")]
    pub against: Option<PathBuf>,

    /// Kinds of duplicate to look for, comma-separated, or `all`.
    #[arg(long, default_value = "all")]
    pub kinds: String,

    /// Kinds whose non-kept members go to remove.txt. Caption-only duplicates (the same caption
    /// on different images) are reported but not removed by default.
    #[arg(long, default_value = "exact,perceptual,image")]
    pub remove_kinds: String,

    /// Image-embedding cosine at or above which two images are near-duplicates [default: the
    /// model's, from the registry; 0.95 for CLIP ViT-B].
    #[arg(long)]
    pub image_threshold: Option<f32>,

    /// Caption-embedding cosine at or above which two captions are near-duplicates [default: the
    /// model's, 0.97 for CLIP].
    #[arg(long)]
    pub caption_threshold: Option<f32>,

    /// Perceptual candidates: largest Hamming distance between two pictures' 64-bit DCT pHashes
    /// (borders trimmed; a mirrored copy is compared through its mirror hash) [default: the
    /// model's, 10].
    #[arg(long)]
    pub perceptual_distance: Option<u32>,

    /// Perceptual confirmation: a candidate counts only when the correlation of the two
    /// pictures' low-frequency DCT coefficients (their 32 x 32 grey copies, low-passed) is at
    /// least this; it keeps flat and centred pictures from colliding [default: 0.8].
    #[arg(long, value_name = "R")]
    pub perceptual_correlation: Option<f32>,

    /// Neighbour search. exact: tiled matrix products, memory stays bounded. clusters:
    /// SemDeDup-style, seeded k-means then exact search inside each cluster (items near a border
    /// also in their second cluster), so time and memory grow about linearly with N. hnsw: an
    /// approximate graph (hnsw_rs; see --hnsw-*). auto: exact up to 20,000 vectors on a CPU
    /// (2,000,000 on a GPU), clusters beyond; on 100k 512-d vectors on 2 cores clusters found
    /// the same pairs as exact 15x faster and HNSW was slower than both.
    #[arg(long, default_value = "auto")]
    pub index: String,

    /// Number of k-means clusters for clustered search (implies --index clusters)
    /// [default: one per 1,000 vectors].
    #[arg(long, value_name = "K")]
    pub clusters: Option<usize>,

    /// With --clusters: an item also joins its second-nearest cluster when its similarity to
    /// that centroid is within this much of its nearest.
    #[arg(long, default_value_t = crate::index::clustered::DEFAULT_BORDER)]
    pub border: f32,

    /// Seed for k-means.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// With clustered search: k-means trains on a seeded sample of this many vectors
    /// [default: 256 per cluster, at most all].
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,

    /// Clustered search with these centroids (a folder from `sieve dedup-centroids` on this run)
    /// instead of training k-means here (implies --index clusters).
    #[arg(long, value_name = "DIR")]
    pub centroids: Option<PathBuf>,

    /// How groups are shown in groups.parquet and the report; removal does not depend on it.
    /// Items are decided once, in keep order, over every removal kind: an item is removed when
    /// an item already kept is its direct duplicate, so every removed item is within the
    /// threshold of the item kept in its place and nothing chains. star: each kept item with
    /// its removed copies (every pair in a group is a kept item and its copy, or two copies of
    /// it). components: stars joined when any of their members are duplicates, for reviewing
    /// clusters; a group can then hold several kept items. star is the default because it
    /// reports the decision itself: on the real-picture benchmark (docs/dedup.md) components
    /// put unrelated pictures in one group.
    #[arg(long, default_value = "star")]
    pub grouping: String,

    /// Which item of a group is kept. best-score: highest image-caption cosine; largest: most
    /// pixels; first: first in input order; central: most similar to the rest of its group;
    /// auto: best-score when the run has captions, else largest. Ties go to the lowest id.
    #[arg(long, default_value = "auto")]
    pub keep: String,

    /// Which caption a kept item carries. best: the caption among its own and those of the
    /// copies removed in its favour that fits its image best (image-caption cosine); every
    /// replacement is listed in RUN/dedup/captions.parquet (id, uri, caption, caption_from_id,
    /// score, own_caption, own_score) and the report. kept: its own.
    #[arg(long, default_value = "best", value_name = "POLICY")]
    pub caption_policy: String,

    /// Device for the search: auto (CUDA, then Metal, then CPU), cpu, cuda[:N] or metal[:N].
    #[arg(long, default_value = "auto")]
    pub device: String,

    /// Also write every duplicate pair found to RUN/dedup/pairs.parquet (kind, a_id, b_id,
    /// similarity; exact duplicates are groups of one hash and have no pairs).
    #[arg(long)]
    pub pairs: bool,

    /// Choose thresholds by looking: search every kind at a looser threshold (cosine 0.10 lower,
    /// perceptual distance 6 bits higher) and write RUN/dedup/calibrate.json (the similarity
    /// histogram per kind, 0.01 bands or one per bit, and the removal rate a threshold at each
    /// band would give, the other kinds at their defaults) and RUN/dedup/calibrate.html (sample
    /// pairs of each band as thumbnails). keep.txt and remove.txt are left as they are.
    #[arg(long)]
    pub calibrate: bool,

    /// With --index hnsw: links per node (more: better recall, slower build, more memory).
    #[arg(long, default_value_t = crate::index::hnsw::HnswParams::default().m)]
    pub hnsw_m: usize,

    /// With --index hnsw: candidate list size while building.
    #[arg(long, default_value_t = crate::index::hnsw::HnswParams::default().ef_construction)]
    pub hnsw_ef_construction: usize,

    /// With --index hnsw: candidate list size while searching (more: better recall, slower).
    #[arg(long, default_value_t = crate::index::hnsw::HnswParams::default().ef_search)]
    pub hnsw_ef: usize,
}

impl DedupArgs {
    /// Validates the arguments.
    pub fn to_options(&self) -> Result<crate::analyze::dedup::DedupOptions> {
        use crate::analyze::dedup::{DedupOptions, Kind};
        if self.clusters == Some(0) {
            return Err(Error::InvalidArg { what: "--clusters", reason: "must be at least 1".into() });
        }
        if !(0.0..=2.0).contains(&self.border) {
            return Err(Error::InvalidArg { what: "--border", reason: format!("{}: expected 0 to 2", self.border) });
        }
        Ok(DedupOptions {
            run: self.run.clone(),
            against: self.against.clone(),
            kinds: Kind::parse_list(&self.kinds, "--kinds")?,
            remove_kinds: Kind::parse_list(&self.remove_kinds, "--remove-kinds")?,
            image_threshold: cosine_arg("--image-threshold", self.image_threshold)?,
            caption_threshold: cosine_arg("--caption-threshold", self.caption_threshold)?,
            perceptual_distance: self.perceptual_distance,
            perceptual_correlation: self.perceptual_correlation,
            index: self.index.parse()?,
            clusters: self.clusters,
            border: self.border,
            seed: self.seed,
            sample: self.sample,
            centroids: self.centroids.clone(),
            from_partitions: None,
            grouping: self.grouping.parse()?,
            keep: self.keep.parse()?,
            caption_policy: self.caption_policy.parse()?,
            device: self.device.parse()?,
            write_pairs: self.pairs,
            hnsw: crate::index::hnsw::HnswParams {
                m: self.hnsw_m.clamp(2, 255),
                ef_construction: self.hnsw_ef_construction.max(1),
                ef_search: self.hnsw_ef.max(1),
                ..Default::default()
            },
        })
    }
}

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
    #[arg(long, default_value = "auto")]
    pub device: String,

    /// Folder to write the centroids to [default: RUN/dedup/centroids].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

impl DedupCentroidsArgs {
    /// Validates the arguments: the dedup options the centroids use, and the output folder.
    pub fn to_options(&self) -> Result<(crate::analyze::dedup::DedupOptions, PathBuf)> {
        if self.clusters == 0 {
            return Err(Error::InvalidArg { what: "--clusters", reason: "must be at least 1".into() });
        }
        if self.sample == Some(0) {
            return Err(Error::InvalidArg { what: "--sample", reason: "must be at least 1".into() });
        }
        let opts = crate::analyze::dedup::DedupOptions {
            clusters: Some(self.clusters),
            sample: self.sample,
            seed: self.seed,
            device: self.device.parse()?,
            ..crate::analyze::dedup::DedupOptions::new(self.run.clone())
        };
        let out = self.out.clone().unwrap_or_else(|| crate::analyze::partition::default_centroids_dir(&self.run));
        Ok((opts, out))
    }
}

#[derive(Debug, Args)]
pub struct DedupPartitionArgs {
    /// This task's partition: the clusters c with c mod n = i (0 ≤ i < n).
    #[arg(long, value_name = "i/n")]
    pub partition: String,

    /// Folder to write the partition's pairs to [default: RUN/dedup/partitions].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    #[command(flatten)]
    pub dedup: DedupArgs,
}

impl DedupPartitionArgs {
    /// Validates the arguments: dedup options, the centroids folder, the partition, the output.
    pub fn to_options(&self) -> Result<(crate::analyze::dedup::DedupOptions, PathBuf, crate::ingest::Shard, PathBuf)> {
        let opts = self.dedup.to_options()?;
        let centroids = opts.centroids.clone().ok_or_else(|| Error::InvalidArg {
            what: "--centroids",
            reason: "is required: the folder `sieve dedup-centroids` wrote".into(),
        })?;
        let part = self.partition.parse::<crate::ingest::Shard>().map_err(|e| match e {
            Error::InvalidArg { reason, .. } => Error::InvalidArg { what: "--partition", reason },
            e => e,
        })?;
        let out =
            self.out.clone().unwrap_or_else(|| crate::analyze::partition::default_partitions_dir(&self.dedup.run));
        Ok((opts, centroids, part, out))
    }
}

#[derive(Debug, Args)]
pub struct DedupCombineArgs {
    /// Folder holding every partition's results [default: RUN/dedup/partitions].
    #[arg(long, value_name = "DIR")]
    pub partitions: Option<PathBuf>,

    #[command(flatten)]
    pub dedup: DedupArgs,
}

impl DedupCombineArgs {
    /// Validates the arguments.
    pub fn to_options(&self) -> Result<crate::analyze::dedup::DedupOptions> {
        let mut opts = self.dedup.to_options()?;
        opts.from_partitions = Some(
            self.partitions.clone().unwrap_or_else(|| crate::analyze::partition::default_partitions_dir(&opts.run)),
        );
        Ok(opts)
    }
}

/// A cosine threshold given on the command line: in [-1, 1] (NaN is refused, not ignored).
fn cosine_arg(what: &'static str, v: Option<f32>) -> Result<Option<f32>> {
    match v {
        Some(c) if !(-1.0..=1.0).contains(&c) => {
            Err(Error::InvalidArg { what, reason: format!("{c} is not a cosine in [-1, 1]") })
        }
        _ => Ok(v),
    }
}

/// Upper bound of `--top-k`: the rank test holds k neighbours per item in memory.
pub const MAX_TOP_K: usize = 10_000;

/// `--out` must be a folder (or not exist yet).
pub fn check_out_dir(out: &std::path::Path) -> Result<()> {
    match std::fs::metadata(out) {
        Ok(m) if !m.is_dir() => Err(Error::InvalidArg {
            what: "--out",
            reason: format!("{} exists and is not a folder; name a new or existing run folder", out.display()),
        }),
        _ => Ok(()),
    }
}

impl EmbedArgs {
    /// Validates the arguments into the pipeline's options.
    pub fn to_options(&self, quiet: bool) -> Result<EmbedOptions> {
        if self.part_size == 0 {
            return Err(Error::InvalidArg { what: "--part-size", reason: "must be at least 1".into() });
        }
        if self.max_caption_bytes == 0 {
            return Err(Error::InvalidArg { what: "--max-caption-bytes", reason: "must be at least 1".into() });
        }
        check_out_dir(&self.out)?;
        Ok(EmbedOptions {
            input: crate::ingest::InputSpec {
                paths: self.inputs.clone(),
                format: self.input_format.as_deref().map(str::parse).transpose()?,
                image_col: self.image_col.clone(),
                caption_col: self.caption_col.clone(),
                shard: self.shard.as_deref().map(str::parse).transpose()?,
                follow_links: self.follow_links,
                max_caption_bytes: self.max_caption_bytes,
            },
            out: self.out.clone(),
            model: ModelSpec::new(self.model.model.clone(), self.model.revision.clone()),
            device: self.model.device.parse::<DeviceSpec>()?,
            batch_size: self.batch_size.parse()?,
            part_size: self.part_size,
            limits: Limits {
                max_bytes: self.max_bytes,
                max_pixels: self.max_pixels,
                max_caption_bytes: self.max_caption_bytes,
            },
            overwrite: self.overwrite,
            progress: !quiet,
        })
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub embed: EmbedArgs,

    /// Stages to leave out, comma-separated: dedup, score, quality, diversity, report.
    #[arg(long, value_name = "STAGES", value_delimiter = ',')]
    pub skip: Vec<String>,

    /// Dedup: kinds of duplicate to look for, comma-separated, or `all`.
    #[arg(long, default_value = "all", help_heading = "Dedup")]
    pub kinds: String,

    /// Dedup: kinds whose non-kept members go to remove.txt.
    #[arg(long, default_value = "exact,perceptual,image", help_heading = "Dedup")]
    pub remove_kinds: String,

    /// Dedup: image-embedding cosine of near-duplicates [default: the model's].
    #[arg(long, help_heading = "Dedup")]
    pub image_threshold: Option<f32>,

    /// Dedup: caption-embedding cosine of near-duplicates [default: the model's].
    #[arg(long, help_heading = "Dedup")]
    pub caption_threshold: Option<f32>,

    /// Dedup: largest Hamming distance between perceptual hashes [default: the model's].
    #[arg(long, help_heading = "Dedup")]
    pub perceptual_distance: Option<u32>,

    /// Dedup: least correlation that confirms a perceptual pair [default: 0.8].
    #[arg(long, value_name = "R", help_heading = "Dedup")]
    pub perceptual_correlation: Option<f32>,

    /// Dedup: star or components (see `sieve dedup --help`).
    #[arg(long, default_value = "star", help_heading = "Dedup")]
    pub grouping: String,

    /// Dedup: which item of a group is kept: auto, best-score, largest, first or central.
    #[arg(long, default_value = "auto", help_heading = "Dedup")]
    pub keep: String,

    /// Dedup: which caption a kept item carries: best or kept (see `sieve dedup --help`).
    #[arg(long, default_value = "best", value_name = "POLICY", help_heading = "Dedup")]
    pub caption_policy: String,

    /// Score: flag pairs whose image-caption cosine is under this [default: the model's].
    #[arg(long, conflicts_with = "bottom_percent", help_heading = "Score")]
    pub min_score: Option<f32>,

    /// Score: instead of a threshold, flag this percentage of the lowest-scoring pairs.
    #[arg(long, value_name = "PERCENT", help_heading = "Score")]
    pub bottom_percent: Option<f64>,

    /// Score: k of the rank test (0 turns the `outranked` flag off).
    #[arg(long, default_value_t = crate::analyze::pairs::DEFAULT_TOP_K, help_heading = "Score")]
    pub top_k: usize,

    /// Diversity: also measure each group of this metadata column (e.g. `folder`).
    #[arg(long, value_name = "COLUMN", help_heading = "Diversity")]
    pub by: Option<String>,

    /// Dedup and score: neighbour search, auto, exact, clusters or hnsw.
    #[arg(long, default_value = "auto", help_heading = "Search")]
    pub index: String,

    /// Dedup and score: k-means clusters for clustered search (implies --index clusters).
    #[arg(long, value_name = "K", help_heading = "Search")]
    pub clusters: Option<usize>,

    /// Seed for every k-means and sample (the same seed gives the same outputs).
    #[arg(long, default_value_t = 0, help_heading = "Search")]
    pub seed: u64,
}

impl RunArgs {
    /// Validates the arguments through each stage's own command-line checks.
    pub fn to_options(&self, quiet: bool) -> Result<crate::run::RunOptions> {
        for s in &self.skip {
            if !crate::run::STAGES.contains(&s.as_str()) {
                return Err(Error::InvalidArg {
                    what: "--skip",
                    reason: format!("unknown stage {s:?}: expected one of {}", crate::run::STAGES.join(", ")),
                });
            }
        }
        let wanted = |stage: &str| !self.skip.iter().any(|s| s == stage);
        let run = self.embed.out.clone();
        let device = self.embed.model.device.clone();
        let search = SearchArgs {
            index: self.index.clone(),
            clusters: self.clusters,
            probes: crate::index::clustered::DEFAULT_PROBES,
            seed: self.seed,
            device: device.clone(),
        };
        let dedup = DedupArgs {
            run: run.clone(),
            against: None,
            kinds: self.kinds.clone(),
            remove_kinds: self.remove_kinds.clone(),
            image_threshold: self.image_threshold,
            caption_threshold: self.caption_threshold,
            perceptual_distance: self.perceptual_distance,
            perceptual_correlation: self.perceptual_correlation,
            index: self.index.clone(),
            clusters: self.clusters,
            border: crate::index::clustered::DEFAULT_BORDER,
            seed: self.seed,
            sample: None,
            centroids: None,
            grouping: self.grouping.clone(),
            keep: self.keep.clone(),
            caption_policy: self.caption_policy.clone(),
            device: device.clone(),
            pairs: false,
            calibrate: false,
            hnsw_m: crate::index::hnsw::HnswParams::default().m,
            hnsw_ef_construction: crate::index::hnsw::HnswParams::default().ef_construction,
            hnsw_ef: crate::index::hnsw::HnswParams::default().ef_search,
        };
        let score = ScoreArgs {
            run: run.clone(),
            min_score: self.min_score,
            bottom_percent: self.bottom_percent,
            top_k: self.top_k,
            search,
        };
        let diversity = DiversityArgs {
            run: run.clone(),
            by: self.by.clone(),
            clusters: crate::analyze::diversity::DEFAULT_CLUSTERS,
            min_share: crate::analyze::diversity::DEFAULT_MIN_SHARE,
            nn_queries: crate::analyze::diversity::DEFAULT_NN_QUERIES,
            probes: crate::index::clustered::DEFAULT_PROBES,
            seed: self.seed,
            device,
        };
        // Every stage's arguments are checked, also those of skipped stages: a typo fails now,
        // not after an hour of embedding.
        let (dedup, score, diversity) = (dedup.to_options()?, score.to_options()?, diversity.to_options()?);
        Ok(crate::run::RunOptions {
            embed: self.embed.to_options(quiet)?,
            dedup: wanted("dedup").then_some(dedup),
            score: wanted("score").then_some(score),
            quality: wanted("quality").then(|| crate::analyze::quality::QualityOptions::new(run.clone())),
            diversity: wanted("diversity").then_some(diversity),
            report: wanted("report").then(|| crate::report::ReportOptions::new(run.clone())),
        })
    }
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run directory (made by `sieve embed`; dedup, score, diversity and quality add sections).
    pub run: PathBuf,

    /// Where to write the page [default: RUN/report.html].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Duplicate groups shown in each list (the largest; those nearest the threshold).
    #[arg(long, default_value_t = crate::report::DEFAULT_GROUPS)]
    pub groups: usize,

    /// Pairs shown in each list (the lowest-scoring; the outranked).
    #[arg(long, default_value_t = crate::report::DEFAULT_PAIRS)]
    pub pairs: usize,

    /// Skipped files listed by name (the counts by reason are always complete).
    #[arg(long, default_value_t = crate::report::DEFAULT_SKIPPED)]
    pub skipped: usize,

    /// Most thumbnails embedded in the page (about 5 KB each); further items get a placeholder.
    #[arg(long, default_value_t = crate::report::DEFAULT_MAX_THUMBNAILS)]
    pub max_thumbnails: usize,

    /// Images whose nearest neighbour is searched for the similarity histogram: all of them up
    /// to this many, a seeded sample beyond (0: no histogram).
    #[arg(long, default_value_t = crate::report::DEFAULT_NN_SAMPLE)]
    pub nn_sample: usize,
}

impl ReportArgs {
    pub fn to_options(&self) -> Result<crate::report::ReportOptions> {
        Ok(crate::report::ReportOptions {
            out: self.out.clone(),
            groups: self.groups,
            pairs: self.pairs,
            skipped: self.skipped,
            max_thumbnails: self.max_thumbnails,
            nn_sample: self.nn_sample,
            ..crate::report::ReportOptions::new(&self.run)
        })
    }
}
