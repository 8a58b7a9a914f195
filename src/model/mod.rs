//! CLIP models: configuration, the towers, and where their files come from — a local folder or
//! the Hugging Face Hub (hf-hub's cache, `--revision`, `HF_HUB_OFFLINE`).

pub mod clip;
pub mod config;
pub(crate) mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
pub mod registry;
pub mod stock;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use serde::Serialize;

pub use clip::{l2_normalize, ClipModel};
pub use config::{ClipConfig, PreprocessorConfig};

use crate::error::{Error, Result};
use crate::media::preprocess::Preprocessor;
use crate::media::tokenize::ClipTokenizer;

/// A CUDA fast path of sieve's own (`cuda.rs`) that can be turned off, to measure it against
/// candle's ops with the same binary (`sieve bench --cuda-disable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastPath {
    Attention,
    LayerNorm,
}

impl FastPath {
    fn bit(self) -> u8 {
        match self {
            FastPath::Attention => 1,
            FastPath::LayerNorm => 2,
        }
    }
}

/// The fast paths turned off, one bit each; read on every kernel launch, so an atomic.
static DISABLED_FAST_PATHS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Turns `path` off for the rest of the process (no effect in a build without CUDA).
pub fn disable_fast_path(path: FastPath) {
    DISABLED_FAST_PATHS.fetch_or(path.bit(), std::sync::atomic::Ordering::Relaxed);
}

/// Whether `path` was turned off.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn fast_path_disabled(path: FastPath) -> bool {
    DISABLED_FAST_PATHS.load(std::sync::atomic::Ordering::Relaxed) & path.bit() != 0
}

/// The model sieve uses when `--model` is not given.
pub const DEFAULT_MODEL: &str = "openai/clip-vit-base-patch32";

/// Which model to load: a folder, or a Hub repo id at a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: String,
    pub revision: Option<String>,
}

impl ModelSpec {
    pub fn new(name: impl Into<String>, revision: Option<String>) -> Self {
        Self { name: name.into(), revision }
    }
}

/// The files of a CLIP model, resolved to local paths.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub config: PathBuf,
    pub preprocessor: PathBuf,
    pub tokenizer: PathBuf,
    pub weights: PathBuf,
}

/// Where a loaded model came from, recorded in `run.json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ModelInfo {
    /// The `--model` value: a Hub repo id or a folder.
    pub id: String,
    /// The revision asked for (`None` for a local folder).
    pub revision: Option<String>,
    /// The folder the files were read from.
    pub source: String,
    /// SHA-256 of the weights file, so runs made with different weights can be told apart.
    pub weights_sha256: String,
    pub embed_dim: usize,
}

const WEIGHT_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes" | "ON" | "on"))
        .unwrap_or(false)
}

impl ModelFiles {
    /// Finds the model's files: in `spec.name` when it is a folder, else in the Hub cache, else
    /// (unless `HF_HUB_OFFLINE` is set) by downloading from the Hub.
    pub fn resolve(spec: &ModelSpec) -> Result<Self> {
        let path = Path::new(&spec.name);
        if path.is_dir() {
            return Self::from_dir(path);
        }
        if path.exists() {
            return Err(Error::ModelUnavailable {
                model: spec.name.clone(),
                reason: "it is a file, not a model folder".into(),
            });
        }
        if spec.name.starts_with('.') || spec.name.starts_with('/') || spec.name.matches('/').count() > 1 {
            return Err(Error::ModelUnavailable {
                model: spec.name.clone(),
                reason: "no such folder (and it does not look like a Hub repo id such as openai/clip-vit-base-patch32)"
                    .into(),
            });
        }
        Self::from_hub(spec)
    }

    /// The files of a model folder.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let need = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(Error::ModelUnavailable {
                    model: dir.display().to_string(),
                    reason: format!("the folder has no {name}"),
                })
            }
        };
        let weights =
            WEIGHT_FILES.iter().map(|f| dir.join(f)).find(|p| p.is_file()).ok_or_else(|| Error::ModelUnavailable {
                model: dir.display().to_string(),
                reason: "the folder has neither model.safetensors nor pytorch_model.bin".into(),
            })?;
        Ok(Self {
            config: need("config.json")?,
            preprocessor: need("preprocessor_config.json")?,
            tokenizer: need("tokenizer.json")?,
            weights,
        })
    }

    fn from_hub(spec: &ModelSpec) -> Result<Self> {
        use hf_hub::{Repo, RepoType};
        let revision = spec.revision.clone().unwrap_or_else(|| registry::default_revision(&spec.name));
        let repo = Repo::with_revision(spec.name.clone(), RepoType::Model, revision.clone());
        let unavailable =
            |reason: String| Error::ModelUnavailable { model: format!("{}@{revision}", spec.name), reason };
        let cache = hf_hub::Cache::from_env().repo(repo.clone());
        let offline = hub_offline();
        let api = if offline {
            None
        } else {
            Some(
                hf_hub::api::sync::ApiBuilder::from_env()
                    .with_progress(false)
                    .build()
                    .map_err(|e| unavailable(format!("cannot set up the Hub client: {e}")))?,
            )
        };
        let fetch = |name: &str| -> Result<PathBuf> {
            if let Some(p) = cache.get(name) {
                return Ok(p);
            }
            match &api {
                None => Err(unavailable(format!("{name} is not in the Hub cache and HF_HUB_OFFLINE is set"))),
                Some(api) => {
                    tracing::info!("downloading {name} from {}@{revision}", spec.name);
                    api.repo(repo.clone()).get(name).map_err(|e| unavailable(format!("downloading {name}: {e}")))
                }
            }
        };
        let config = fetch("config.json")?;
        let preprocessor = fetch("preprocessor_config.json")?;
        let tokenizer = fetch("tokenizer.json")?;
        let weights = match fetch(WEIGHT_FILES[0]) {
            Ok(p) => p,
            Err(first) => fetch(WEIGHT_FILES[1]).map_err(|_| first)?,
        };
        Ok(Self { config, preprocessor, tokenizer, weights })
    }
}

/// Everything needed to embed: the model, its tokenizer and its preprocessor.
#[derive(Debug, Clone)]
pub struct Clip {
    pub model: ClipModel,
    pub tokenizer: ClipTokenizer,
    pub preprocessor: Preprocessor,
    pub info: ModelInfo,
}

impl Clip {
    /// Loads a model onto `device`, computing in `dtype`.
    pub fn load(spec: &ModelSpec, device: &Device, dtype: DType) -> Result<Self> {
        let files = ModelFiles::resolve(spec)?;
        Self::from_files(spec, &files, device, dtype)
    }

    pub fn from_files(spec: &ModelSpec, files: &ModelFiles, device: &Device, dtype: DType) -> Result<Self> {
        let config = ClipConfig::from_file(&files.config)?;
        let pre = PreprocessorConfig::from_file(&files.preprocessor)?;
        let (h, w) = pre.output_size();
        let size = config.vision_config.image_size as u32;
        if (h, w) != (size, size) {
            return Err(Error::ModelFile {
                path: files.preprocessor.clone(),
                reason: format!("crops to {h}×{w} but the model's image_size is {size}"),
            });
        }
        let tokenizer = ClipTokenizer::from_file(&files.tokenizer, config.text_config.max_position_embeddings)?;
        let vb = weights_builder(&files.weights, dtype, device)?;
        let model = ClipModel::new(vb, &config).map_err(|e| Error::ModelFile {
            path: files.weights.clone(),
            reason: format!("weights do not fit config.json: {e}"),
        })?;
        let info = ModelInfo {
            id: spec.name.clone(),
            revision: if Path::new(&spec.name).is_dir() { None } else { spec.revision.clone() },
            source: files.config.parent().map(|p| p.display().to_string()).unwrap_or_default(),
            weights_sha256: crate::store::sha256_file(&files.weights)?,
            embed_dim: config.projection_dim,
        };
        Ok(Self { model, tokenizer, preprocessor: Preprocessor::new(pre), info })
    }
}

fn weights_builder(path: &Path, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
    let bad = |e: candle_core::Error| Error::ModelFile { path: path.into(), reason: e.to_string() };
    if path.extension().is_some_and(|e| e == "safetensors") {
        // SAFETY: the file is memory-mapped read-only; sieve never writes model files.
        unsafe { VarBuilder::from_mmaped_safetensors(&[path], dtype, device).map_err(bad) }
    } else {
        VarBuilder::from_pth(path, dtype, device).map_err(bad)
    }
}

/// A weight source that makes up seeded random tensors of whatever shape is asked for, for
/// benchmarks that need a model of a real size but not its weights. Layer-norm scales are ones.
pub(crate) struct RandomWeights {
    seed: u64,
}

impl RandomWeights {
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// A `VarBuilder` over random weights.
    pub fn var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }
}

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        use rand::{Rng, SeedableRng};
        let is_norm = name.contains("norm") || name.contains("layrnorm");
        let n = s.elem_count();
        let data: Vec<f32> = if is_norm && name.ends_with("weight") {
            vec![1.0; n]
        } else if is_norm {
            vec![0.0; n]
        } else {
            let h = name
                .bytes()
                .fold(self.seed ^ 0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
            let mut rng = rand::rngs::StdRng::seed_from_u64(h);
            (0..n).map(|_| rng.random_range(-0.04f32..0.04)).collect()
        };
        Tensor::from_vec(data, s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape for {name}")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// A model of the shape in `config` with random weights (`sieve bench`; benches reach it
/// through `sieve::testing`).
pub(crate) fn random_model(config: &ClipConfig, device: &Device, dtype: DType, seed: u64) -> Result<ClipModel> {
    ClipModel::new(RandomWeights::new(seed).var_builder(dtype, device), config)
}
