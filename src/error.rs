//! The library's one error type. Each variant carries what a user needs to act on it: the file,
//! the line, the setting that was wrong, and the underlying cause as `source`.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model could be found neither in a local folder nor on the Hugging Face Hub.
    #[error(
        "cannot load model `{model}`: {reason}\n  \
         hint: pass a local folder holding config.json, preprocessor_config.json, tokenizer.json \
         and model.safetensors with `--model /path/to/folder`, or allow Hub downloads \
         (HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE not true) on a machine with network access"
    )]
    ModelUnavailable { model: String, reason: String },

    /// A model file exists but its contents are not what we expect (a config value, the
    /// weights' shapes). Not a usage error: no option fixes it, so it exits 1, not 2.
    #[error("invalid model file {path}: {reason}")]
    ModelFile { path: PathBuf, reason: String },

    /// The model as a whole does not fit what was asked of it (its configuration against the
    /// stock CLIP, inputs against its shape), with no single file to blame. Exits 1.
    #[error("model: {reason}")]
    Model { reason: String },

    /// A JSON file (config, run.json) could not be parsed.
    #[error("cannot parse {path}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// An I/O error on a named file.
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The tokenizer could not be loaded or failed on a caption.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A device was asked for that this build or machine does not have.
    #[error("device `{spec}` is not available: {reason}")]
    Device { spec: String, reason: String },

    /// A user-supplied setting is invalid (exit 2: fix the command and rerun). `what` names the
    /// option or setting.
    #[error("invalid {what}: {reason}")]
    InvalidArg { what: &'static str, reason: String },

    /// Embedding dimensions disagree (e.g. a model whose projection does not match its config).
    #[error("dimension mismatch: expected {expected}, found {found}")]
    DimMismatch { expected: usize, found: usize },

    /// The output run directory cannot be used.
    #[error("run directory {path}: {reason}")]
    RunDir { path: PathBuf, reason: String },

    /// Reading or writing a Parquet file failed.
    #[error("parquet file {path}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// An error inside candle (tensor shapes, device kernels).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// The embedding thread or the decode pool stopped unexpectedly.
    #[error("pipeline: {0}")]
    Pipeline(String),
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { action, path: path.into(), source }
    }
}

/// Runs `read`, a read of the Parquet file `path`, turning a panic inside the parquet crate into
/// an error naming the file. It panics on some damaged files (a division by zero in its plain
/// byte-array decoder, found by `tests/robust.rs`'s reader proptest; the file is
/// `tests/fixtures/hostile/parquet-divide-by-zero.parquet`), and no input may crash sieve.
pub fn guard_parquet<T>(path: &std::path::Path, read: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|_| {
        Err(Error::Parquet {
            path: path.into(),
            source: parquet::errors::ParquetError::General(
                "the parquet decoder failed on it: the file is damaged".into(),
            ),
        })
    })
}
