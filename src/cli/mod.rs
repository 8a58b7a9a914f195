//! The `sieve` command line: one module per subcommand, each holding its arguments, their
//! validation into the library's typed options (`TryFrom`) and its summary printer. It lives in
//! the binary so clap and the flag names stay out of the library's API.

use std::io::Write;
use std::path::Path;

use clap::{Parser, Subcommand};
use sieve::error::{Error, Result};

mod audit;
mod bench;
mod classify;
mod common;
mod compare;
mod dedup;
mod diversity;
mod embed;
mod export;
mod merge;
mod partition;
mod quality;
mod report;
mod run;
mod score;
mod search;
mod select;
mod verify;

/// sieve: curate image–text training data with CLIP embeddings.
///
/// Embeds images and their captions into one space (CUDA, Metal or CPU), writing a run directory
/// that later stages (dedup, scoring, diversity, selection) read.
#[derive(Debug, Parser)]
#[command(
    name = "sieve",
    version = version(),
    about,
    long_about = None,
    propagate_version = true,
    after_help = "Exit codes: 0 the run finished (also when some files were skipped; they are listed \
                  with a reason), 1 the run could not be done, 2 invalid arguments.\n\
                  Logs: RUST_LOG=info (or debug) for more detail on stderr."
)]
pub struct Cli {
    /// Hide progress bars (they are also hidden when stderr is not a terminal) and warnings;
    /// errors and each command's summary still print.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// Colour in log lines on stderr: `auto` colours only when stderr is a terminal and
    /// NO_COLOR is unset.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = Color::Auto, global = true)]
    pub color: Color,

    /// Print the command's summary as one JSON object on stdout (the human summary on stderr
    /// stays).
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// When log lines on stderr carry colour codes (`--color`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

impl Color {
    /// Whether to colour: `auto` asks whether stderr is a terminal and NO_COLOR is unset or empty
    /// (no-color.org).
    pub fn enabled(self) -> bool {
        use std::io::IsTerminal;
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The main job in one command: embed INPUT into --out, then dedup, score, quality,
    /// diversity, the concept audit (with --concepts) and the report (RUN/report.html) over it.
    ///
    /// Takes `sieve embed`'s arguments and the main ones of each later stage (see each stage's
    /// --help for details; the rest keep their defaults, run the stage's own command for them).
    /// Resumable: rerunning the same command resumes an interrupted embedding and skips every
    /// stage already finished with the same options (recorded in RUN/stages.json); a stage
    /// whose options changed runs again, with every stage after it.
    Run(Box<run::RunArgs>),
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
    Embed(embed::EmbedArgs),
    /// Combine runs made with `sieve embed --shard i/n` into one run.
    ///
    /// Rows are written in id order (the order of the unsharded input) and re-cut into parts of
    /// --part-size; embeddings are copied exactly. Runs made with a different model, weights or
    /// preprocessing are refused, as are runs that overlap (the same records twice).
    Merge(merge::MergeArgs),
    /// Measure model-only throughput (images/s, captions/s) with random weights.
    ///
    /// Uses the shape in a CLIP config.json (e.g. models/clip-vit-base-patch32/config.json);
    /// no weights are needed. scripts/bench_vs_torch.py runs this next to PyTorch.
    Bench(bench::BenchArgs),
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
    Dedup(dedup::DedupArgs),
    /// Partitioned dedup, step 1: k-means centroids of a run's embeddings, for dedup-partition.
    ///
    /// Trains seeded k-means on a sample of the image embeddings (and of the caption embeddings,
    /// when the run has captions) exactly as `sieve dedup --clusters K` does with the same
    /// --clusters, --sample and --seed, and writes OUT/image.npy, OUT/caption.npy (float32
    /// [K, d]) and OUT/centroids.json (the run's fingerprint, settings, checksums). Steps 2 and 3
    /// (dedup-partition, dedup-combine) then split the clustered search over processes or
    /// machines (Ray, Slurm, Spark: see scripts/ray and scripts/slurm) and give the same
    /// dedup/ outputs as `sieve dedup RUN --clusters K` in one process.
    DedupCentroids(partition::DedupCentroidsArgs),
    /// Partitioned dedup, step 2: search one partition of the clusters, write its pairs.
    ///
    /// Assigns every vector to its nearest centroids (from `sieve dedup-centroids`; an item near
    /// a border also to its second) and searches the clusters c with c mod n = i exactly, as
    /// `sieve dedup --clusters` does for all of them. Writes OUT/part-IIIII-of-NNNNN.parquet (kind,
    /// a_id, b_id, similarity) and, last, its .json (run fingerprint, centroids, settings, pair
    /// counts); a rerun rewrites the same bytes, so a failed task can simply be retried. Needs
    /// --centroids DIR; takes `sieve dedup`'s flags (pass the same --kinds and thresholds to
    /// dedup-combine; --against is refused).
    DedupPartition(partition::DedupPartitionArgs),
    /// Partitioned dedup, step 3: combine every partition into RUN/dedup/, as `sieve dedup` writes it.
    ///
    /// Reads all n partitions from dedup-partition (refusing a missing one, one from another run
    /// or other centroids, or one made with other --kinds or thresholds), uses the union of their
    /// pairs in place of the search, and finds exact and perceptual duplicates, groups and kept
    /// items with the one-process code: groups.parquet, keep.txt, remove.txt and summary.json
    /// are byte-identical to `sieve dedup RUN --clusters K` with the same centroids. Takes
    /// `sieve dedup`'s flags (--grouping, --keep, --remove-kinds, --pairs…).
    DedupCombine(partition::DedupCombineArgs),
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
    Score(score::ScoreArgs),
    /// Measure how diverse a run's images, captions and pairs are, overall and per group.
    ///
    /// Writes RUN/diversity.json with, for the image, caption and joint ([image, caption]/√2)
    /// embeddings of the whole run and of each group of --by: the Vendi score (cosine kernel,
    /// exact through the d×d dual; orders 1, 2 and ∞: an effective number of distinct items),
    /// the effective rank, the entropy of seeded k-means cluster sizes, coverage (share of the
    /// clusters holding at least --min-share of an even share) and nearest-neighbour similarity
    /// (mean and percentiles; all items up to --nn-queries, a seeded sample beyond).
    Diversity(diversity::DiversityArgs),
    /// Flag low-quality images and captions from the signals `sieve embed` recorded.
    ///
    /// Writes RUN/quality.parquet (one row per record: the signals, one boolean flag_NAME column
    /// per flag, and `flags`, the raised ones comma-separated) and RUN/quality_summary.json
    /// (thresholds, counts per flag, percentiles of every signal, captions per script).
    ///
    /// Image flags: blur (sharpness < 0.3: detail on the thumbnail over detail at half its
    /// size), dark (highlights < 80: 95th percentile of the brightest channel, of the picture
    /// or its content), bright (lightness > 192: over-exposed or washed out), low_contrast (luma
    /// std < 16), low_information (histogram entropy < 1 bit), tiny (shorter side < 64 px),
    /// odd_aspect (> 3:1), grayscale (largest channel spread < 5, or a file that stores grey),
    /// animated (more than 1 frame). Caption flags: no_caption, empty_caption, short_caption
    /// (< 5 tokens with start/end), truncated, boilerplate, non_utf8. docs/guide.md ("Quality
    /// signals") and docs/quality.md say where the defaults come from.
    Quality(quality::QualityArgs),
    /// Select a diverse subset of a run under a budget.
    ///
    /// Drops the duplicates in RUN/dedup/remove.txt first (run `sieve dedup` before), optionally
    /// the pairs `sieve score` flagged and the items `sieve quality` flagged (--drop-flags), then picks --budget items that spread over the embedding
    /// space. Writes RUN/selection/keep.txt (one uri per line, run order) and
    /// RUN/selection/summary.json, which compares the selection's Vendi score and coverage with a
    /// seeded random subset of the same size.
    Select(select::SelectArgs),
    /// Write RUN/report.html: one page showing what the other stages found, for people.
    ///
    /// Sections: a summary (records in, embedded, skipped by reason, duplicates by kind, flagged
    /// pairs, diversity, the model and thresholds used); the largest duplicate groups and those
    /// nearest the threshold, as thumbnail strips with similarities and the kept item marked;
    /// the lowest-scoring and outranked pairs with their captions, scores and the suggested
    /// better caption; histograms of the CLIP score (the low_score threshold drawn) and of each
    /// image's nearest-neighbour similarity (the dedup threshold drawn); diversity per group of
    /// `sieve diversity --by`; quality flags; concept coverage with examples (when `sieve audit`
    /// ran); the skipped files with their reasons. A stage not
    /// yet run is shown as "not run".
    ///
    /// The page is one self-contained file: thumbnails are embedded, plots are inline SVG, and it
    /// makes no network request, so it can be mailed or opened offline in any browser. It shows
    /// samples and aggregates only, so it stays small (thumbnails capped by --max-thumbnails)
    /// and opens fast for runs of any size.
    Report(report::ReportArgs),
    /// Check a run directory: every part file against its SHA-256 in run.json, the row counts
    /// and ids, and every stored embedding (every value finite, every embedded row of unit
    /// norm). Exits 1 naming the first damaged file and row.
    Verify(verify::VerifyArgs),

    /// Write a run's embedded records in a layout other tools read: `clip-retrieval` (its
    /// inference output, for clip_index, clip_back and clip_filter, with sieve's id in the
    /// metadata so results join back to dedup, score and quality outputs), `parquet` (one table
    /// with the embeddings as fixed-size lists, for datasets, DuckDB, LanceDB, polars) or
    /// `webdataset` (the chosen records' original pictures, captions and fields as new tar
    /// shards a trainer reads).
    Export(export::ExportArgs),

    /// List the items of a run nearest a text, a picture or one of its records, by the run's own
    /// model: text→image, image→image, or against the captions with --space caption. Exact
    /// search; prints rank, cosine similarity, id, uri and caption (--json: one object).
    Search(search::SearchArgs),

    /// Zero-shot concept coverage: which concepts of each group (lighting: daylight | night |
    /// studio) a run's images and captions show, by the run's own model.
    ///
    /// Each concept is embedded from a prompt ensemble ("a photo of a {}." …); each embedded
    /// item gets, per group, its best concept and the margin over the second best, or `none`
    /// under --margin, from its image and from its caption. Writes RUN/audit.parquet (one row per
    /// item and group) and RUN/audit_summary.json (counts and shares per concept, overall and per
    /// --by value, under-represented concepts, image–caption agreement, examples).
    Audit(audit::AuditArgs),

    /// Compare run B with run A: per modality (image embeddings, and caption embeddings when both
    /// runs have them) the CMMD with a permutation p-value, the coverage of B by A and of A by B,
    /// the novel and vanished regions (k-means clusters one run holds and the other does not)
    /// with example items, concept shares when both runs were audited, and a one-line verdict.
    /// Both runs must come from the same model weights. Every figure is taken on seeded samples
    /// (--sample), so runs of any size compare in about the same time. --out DIR also writes
    /// compare.json and compare.html.
    Compare(compare::CompareArgs),

    /// Score a run's stored embeddings with a small head you bring (a linear layer or an MLP in
    /// safetensors, such as the LAION aesthetic predictor or a CLIP-based NSFW detector): no
    /// picture is decoded. Writes RUN/classify/NAME.parquet (id, uri, score, percentile) and
    /// RUN/classify/NAME.json (the head's digest and shapes, counts, score quantiles).
    Classify(classify::ClassifyArgs),

    /// Print a shell completion script on stdout, e.g. `sieve completions bash >
    /// ~/.local/share/bash-completion/completions/sieve` (zsh: a file `_sieve` in a folder of
    /// $fpath; fish: ~/.config/fish/completions/sieve.fish).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Print sieve's man page (roff) on stdout, e.g. `sieve man > /usr/local/share/man/man1/sieve.1`,
    /// or write it and one page per subcommand (`sieve-dedup.1`, …) into a folder with --dir.
    Man {
        /// Write sieve.1 and a page per subcommand into this folder (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

/// The global flags every subcommand sees.
#[derive(Debug, Clone, Copy)]
pub struct Global {
    pub quiet: bool,
    pub json: bool,
}

/// Runs the parsed command; a usage error names the flag, not the library's option.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    dispatch(cli).map_err(with_flag_names)
}

/// The library's errors name options and files (`select option strategy`); the command line
/// names the flag that sets each one. Options whose library error already names a flag (in
/// files still being restructured: dedup, partition, index) pass through unchanged.
const FLAGS: &[(&str, &str)] = &[
    ("dedup calibration", "--calibrate"),
    ("dedup option grouping", "--grouping"),
    ("diversity option by", "--by"),
    ("metadata column", "--by"),
    ("select option strategy", "--strategy"),
    ("select option embedding", "--embedding"),
    ("select option drop_flags", "--drop-flags"),
    ("input option image_col", "--image-col"),
    ("input option caption_col", "--caption-col"),
    ("input option keep_cols", "--keep-cols"),
    ("input option format", "--input-format"),
    ("input option shard", "--shard"),
    ("embed option part_size", "--part-size"),
    ("report option out", "--out"),
    ("export option out", "--out"),
];

/// `err`, its [`Error::InvalidArg`] (if any) naming the flag instead of the library's option.
fn with_flag_names(mut err: anyhow::Error) -> anyhow::Error {
    if let Some(Error::InvalidArg { what, .. }) = err.downcast_mut::<Error>() {
        if let Some(&(_, flag)) = FLAGS.iter().find(|(option, _)| option == what) {
            *what = flag;
        }
    }
    err
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    sieve::progress::set_quiet(cli.quiet);
    // A bad SIEVE_CPU_KERNEL is a usage error before any work starts.
    sieve::linalg::init_kernel()?;
    let g = Global { quiet: cli.quiet, json: cli.json };
    match cli.command {
        Command::Run(args) => run::execute(*args, g),
        Command::Embed(args) => embed::execute(args, g),
        Command::Merge(args) => merge::execute(args, g),
        Command::Bench(args) => bench::execute(args, g),
        Command::Dedup(args) => dedup::execute(args, g),
        Command::DedupCentroids(args) => partition::execute_centroids(args, g),
        Command::DedupPartition(args) => partition::execute_partition(args, g),
        Command::DedupCombine(args) => partition::execute_combine(args, g),
        Command::Score(args) => score::execute(args, g),
        Command::Diversity(args) => diversity::execute(args, g),
        Command::Quality(args) => quality::execute(args, g),
        Command::Select(args) => select::execute(args, g),
        Command::Report(args) => report::execute(args, g),
        Command::Verify(args) => verify::execute(args, g),
        Command::Export(args) => export::execute(args, g),
        Command::Search(args) => search::execute(args, g),
        Command::Audit(args) => audit::execute(args, g),
        Command::Compare(args) => compare::execute(args, g),
        Command::Classify(args) => classify::execute(args, g),
        Command::Completions { shell } => {
            // Into a buffer first: clap_complete panics on a write error (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "sieve", &mut script);
            std::io::stdout().write_all(&script)?;
            Ok(())
        }
        Command::Man { dir: None } => {
            let mut page = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut page)?;
            std::io::stdout().write_all(&page)?;
            Ok(())
        }
        Command::Man { dir: Some(dir) } => {
            use anyhow::Context;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            eprintln!("sieve man: pages written into {}", dir.display());
            Ok(())
        }
    }
}

/// `--version`: the version, the features this binary was built with and the CPU features
/// found at run time, so a slow build (no SIMD JPEG decoder, no AVX2) is visible at a glance.
fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        let built: Vec<&str> = [
            ("jpeg-simd", cfg!(feature = "jpeg-simd")),
            ("cuda", cfg!(feature = "cuda")),
            ("metal", cfg!(feature = "metal")),
            ("mkl", cfg!(feature = "mkl")),
            ("accelerate", cfg!(feature = "accelerate")),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        let built = if built.is_empty() { "none".to_string() } else { built.join(", ") };
        let cpu = cpu_features();
        let cpu = if cpu.is_empty() { "baseline".to_string() } else { cpu.join(" ") };
        let gemm = sieve::linalg::Kernel::available()[0].name();
        format!(
            "{} (features: {built}; cpu: {cpu}; gemm kernel: {gemm}, SIEVE_CPU_KERNEL overrides)",
            env!("CARGO_PKG_VERSION")
        )
    })
}

/// The SIMD extensions of this CPU that candle's and gemm's kernels use.
fn cpu_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! detect {
            ($($f:tt),*) => {$(if std::is_x86_feature_detected!($f) { found.push($f); })*};
        }
        detect!("avx", "avx2", "fma", "f16c", "avx512f");
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            found.push("neon");
        }
        if std::arch::is_aarch64_feature_detected!("fp16") {
            found.push("fp16");
        }
    }
    found
}

thread_local! {
    /// Where `--json` summaries go instead of stdout while [`run_capturing_json`] runs.
    static JSON_SINK: std::cell::RefCell<Option<Vec<String>>> = const { std::cell::RefCell::new(None) };
}

/// Runs the parsed command as [`run`] does, returning the `--json` summaries it would have
/// printed (one string per line) instead of printing them. The Python package (python/, which
/// compiles this module into its extension) runs commands in process this way; the binary
/// does not use it.
#[allow(dead_code)]
pub fn run_capturing_json(cli: Cli) -> (anyhow::Result<()>, Vec<String>) {
    JSON_SINK.with(|s| *s.borrow_mut() = Some(Vec::new()));
    let result = run(cli);
    (result, JSON_SINK.with(|s| s.borrow_mut().take()).unwrap_or_default())
}

/// With `--json`, prints `value` as one line of JSON on stdout.
fn print_json(g: Global, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if g.json {
        let line = serde_json::to_string(value)?;
        let line = JSON_SINK.with(|s| match s.borrow_mut().as_mut() {
            Some(sink) => {
                sink.push(line);
                None
            }
            None => Some(line),
        });
        if let Some(line) = line {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

/// A usage error naming the flag (exit 2).
fn invalid(what: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidArg { what, reason: reason.into() }
}

/// `v`, refused when 0.
fn at_least_1(what: &'static str, v: usize) -> Result<usize> {
    if v == 0 {
        Err(invalid(what, "must be at least 1"))
    } else {
        Ok(v)
    }
}

/// A cosine threshold given on the command line: in [-1, 1] (NaN is refused, not ignored).
fn cosine_arg(what: &'static str, v: Option<f32>) -> Result<Option<f32>> {
    match v {
        Some(c) if !(-1.0..=1.0).contains(&c) => Err(invalid(what, format!("{c} is not a cosine in [-1, 1]"))),
        _ => Ok(v),
    }
}

/// `--out` must be a folder (or not exist yet).
fn check_out_dir(out: &Path) -> Result<()> {
    match std::fs::metadata(out) {
        Ok(m) if !m.is_dir() => Err(invalid(
            "--out",
            format!("{} exists and is not a folder; name a new or existing run folder", out.display()),
        )),
        _ => Ok(()),
    }
}

/// Allocations from this size on get their own mapping, returned to the system when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 1 << 20;

/// Before dedup's passes: glibc raises its mmap threshold to the size of each large block freed
/// (up to 32 MiB) and keeps later blocks under it in the heap, where freed memory mostly stays;
/// with dedup's blocks of pairs (a few MB each, made and freed on every pass) 20,001
/// near-identical items peaked at 510 MB instead of 438 MB. A fixed threshold hands such blocks
/// back when freed. Only for the dedup commands and `sieve run`'s dedup stage: every allocation
/// over the threshold then costs fresh pages, which embedding (many large short-lived tensors)
/// paid for with about 5% more CPU time in system calls.
pub(crate) fn hand_back_large_frees() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator setting; sieve calls it between stages, when no
    // other thread is allocating.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
