//! Flag groups and values several subcommands share: the model, the neighbour search, and the
//! parsers that turn `--device`, `--batch-size` and `i/n` into the library's types.

use clap::{Args, ValueEnum};
use sieve::analyze::common::SearchOptions;
use sieve::device::{BatchSize, DeviceSpec};
use sieve::error::{Error, Result};
use sieve::index::IndexChoice;
use sieve::ingest::Shard;
use sieve::model::{FastPath, DEFAULT_MODEL};

use super::invalid;

/// The library's reason alone: clap's message already names the flag and the value.
fn reason(e: Error) -> String {
    match e {
        Error::InvalidArg { reason, .. } => reason,
        e => e.to_string(),
    }
}

/// `--device`: auto, cpu, cuda[:N] or metal[:N] (not a [`ValueEnum`]: it takes an ordinal).
pub fn device(s: &str) -> std::result::Result<DeviceSpec, String> {
    s.parse().map_err(reason)
}

/// `--batch-size`: a number, or `auto`.
pub fn batch_size(s: &str) -> std::result::Result<BatchSize, String> {
    s.parse().map_err(reason)
}

/// `--shard` and `--partition`: `i/n`.
pub fn shard(s: &str) -> std::result::Result<Shard, String> {
    s.parse().map_err(reason)
}

/// `--index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IndexArg {
    Auto,
    Exact,
    Hnsw,
    Clusters,
}

impl From<IndexArg> for IndexChoice {
    fn from(i: IndexArg) -> Self {
        match i {
            IndexArg::Auto => IndexChoice::Auto,
            IndexArg::Exact => IndexChoice::Exact,
            IndexArg::Hnsw => IndexChoice::Hnsw,
            IndexArg::Clusters => IndexChoice::Clusters,
        }
    }
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
    #[arg(long, default_value = "auto", value_parser = device)]
    pub device: DeviceSpec,

    /// Turn off sieve's own CUDA kernels (comma-separated: attention, layernorm), to measure
    /// them against candle's ops with the same binary.
    #[arg(long, value_name = "KERNELS", value_delimiter = ',', env = "SIEVE_CUDA_DISABLE")]
    pub cuda_disable: Vec<FastPathArg>,
}

/// `--cuda-disable`: a CUDA fast path of sieve's model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FastPathArg {
    Attention,
    Layernorm,
}

impl From<FastPathArg> for FastPath {
    fn from(p: FastPathArg) -> Self {
        match p {
            FastPathArg::Attention => FastPath::Attention,
            FastPathArg::Layernorm => FastPath::LayerNorm,
        }
    }
}

/// Turns off the CUDA kernels named by `--cuda-disable` (or `SIEVE_CUDA_DISABLE`) for the process.
pub fn disable_fast_paths(paths: &[FastPathArg]) {
    for &p in paths {
        sieve::model::disable_fast_path(p.into());
    }
}

/// Neighbour-search arguments of score.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Neighbour search for the k-NN queries. exact: every pair compared (tiled matrix
    /// products). clusters: seeded k-means, each query searches the members of its --probes
    /// nearest clusters. hnsw: an approximate graph (hnsw_rs). auto: exact up to 20,000 vectors
    /// on a CPU (2,000,000 on a GPU), clusters beyond.
    #[arg(long, default_value = "auto", hide_possible_values = true)]
    pub index: IndexArg,

    /// Number of k-means clusters for clustered search (implies --index clusters)
    /// [default: √(queries × probes), which balances assigning the vectors against searching].
    /// From 256 clusters on they are trained in two levels (√K groups of clusters), and a
    /// vector's nearest clusters are looked for among those of its 6 nearest groups, so many
    /// small clusters stay cheap.
    #[arg(long, value_name = "K")]
    pub clusters: Option<usize>,

    /// With clustered search: clusters each query searches (more: better recall, slower).
    #[arg(long, default_value_t = sieve::index::clustered::DEFAULT_PROBES)]
    pub probes: usize,

    /// Seed for k-means (and any sampling); the same seed gives the same output.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Device for the search: auto (CUDA, then Metal, then CPU), cpu, cuda[:N] or metal[:N].
    #[arg(long, default_value = "auto", value_parser = device)]
    pub device: DeviceSpec,
}

impl TryFrom<&SearchArgs> for SearchOptions {
    type Error = Error;

    fn try_from(a: &SearchArgs) -> Result<Self> {
        search_options(a.index, a.clusters, a.probes, a.seed)
    }
}

/// The checks of `--index`, `--clusters` and `--probes`, shared with `sieve run`.
pub fn search_options(index: IndexArg, clusters: Option<usize>, probes: usize, seed: u64) -> Result<SearchOptions> {
    if clusters == Some(0) {
        return Err(invalid("--clusters", "must be at least 1"));
    }
    if probes == 0 {
        return Err(invalid("--probes", "must be at least 1"));
    }
    Ok(SearchOptions { index: index.into(), clusters, probes, seed, ..Default::default() })
}
