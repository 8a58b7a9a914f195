//! The encoders: one [`Encoder`] trait that the pipeline and every later stage see, and one
//! folder per model family behind it (`clip/`, `dinov2/`, `openclip/`, `siglip/`). [`load`] reads a model's files (a local folder
//! or the Hugging Face Hub, `files.rs`), tells the family from them, and builds it. Beside the
//! families: the transformer blocks they share (`layers.rs`), the fused CPU layer (`cpu.rs`),
//! the CUDA kernels (`cuda.rs`), seeded random weights (`random.rs`) and the compiled-in
//! registry of known models (`registry.rs`).

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(crate) mod amx;
pub(crate) mod bf16;
pub mod clip;
pub(crate) mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
pub mod dinov2;
pub mod files;
pub mod hub;
pub(crate) mod int8;
pub(crate) mod layers;
pub mod openclip;
pub(crate) mod random;
pub mod registry;
pub mod siglip;
pub(crate) mod tasks;

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use serde::Serialize;

pub use clip::Clip;
pub use files::ModelFiles;
pub use layers::Activation;

use crate::error::{Error, Result};
use crate::media::preprocess::Preprocessor;
use crate::media::tokenize::TextTokenizer;

/// What the pipeline and the later stages know of a model: how to prepare its inputs and how to
/// turn them into L2-normalised rows of one embedding space. `Send + Sync`: the producer thread
/// preprocesses and tokenises with it while the calling thread embeds.
pub trait Encoder: Send + Sync + std::fmt::Debug {
    /// Which family this model is.
    fn family(&self) -> Family;

    /// Where the model came from, recorded in `run.json`.
    fn info(&self) -> &ModelInfo;

    /// The device the model computes on.
    fn device(&self) -> &Device;

    /// Width of the embedding rows.
    fn embed_dim(&self) -> usize;

    /// The image preprocessing the model was trained with.
    fn preprocessor(&self) -> &Preprocessor;

    /// The caption tokenizer; `None` for an image-only model.
    fn tokenizer(&self) -> Option<&TextTokenizer>;

    /// Image embeddings `[batch, embed_dim]` in f32, each row L2-normalised, for preprocessed
    /// pixels `[batch, 3, h, w]` (f32 or f16) on any device.
    fn embed_images(&self, pixels: &Tensor) -> Result<Tensor>;

    /// Caption embeddings `[batch, embed_dim]` in f32, each row L2-normalised, for token ids
    /// from [`Encoder::tokenizer`].
    fn embed_texts(&self, ids: &[Vec<u32>]) -> Result<Tensor>;

    /// Device memory one item needs in the forward pass, for `--batch-size auto`.
    fn bytes_per_item(&self) -> u64;

    /// Runs the model once on a dummy input, so a GPU's one-off costs (kernel compilation,
    /// library handles) are paid at load time rather than while the first batches wait.
    fn warm_up(&self) -> Result<()>;

    /// Converts the encoder layers' linear layers as `quantize` asks (`--quantize`): int8 for
    /// the V, output and MLP projections (see [`int8`]) or bf16 for all of them (see
    /// [`bf16`]); the model must compute in f32 on the CPU, anything else is refused. `None`
    /// packs f32 CPU weights once for the CPU kernel (`linalg::PackedWeight`; the same
    /// products, faster) and leaves any other model as it is.
    fn quantize(&mut self, quantize: Quantize) -> Result<()>;
}

/// The model families sieve knows, told apart by the files of a model folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Hugging Face `CLIPModel` (`model_type` "clip", or none in older configs).
    #[default]
    Clip,
    /// Hugging Face `SiglipModel` (`model_type` "siglip").
    Siglip,
    /// Hugging Face `Dinov2Model` (`model_type` "dinov2"), image only.
    Dinov2,
    /// open_clip's own layout (`open_clip_config.json`, no `config.json`).
    OpenClip,
}

impl Family {
    /// The family a `config.json` declares with `model_type`.
    pub fn from_config(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| Error::Json { path: path.into(), source })?;
        match value.get("model_type").and_then(|t| t.as_str()) {
            None | Some("clip") => Ok(Family::Clip),
            Some("siglip") => Ok(Family::Siglip),
            Some("dinov2") => Ok(Family::Dinov2),
            Some(other) => Err(Error::ModelFile {
                path: path.into(),
                reason: format!(
                    "model_type `{other}` is not a family sieve loads (it loads clip, siglip and dinov2 in \
                     Hugging Face layout, and open_clip's own layout; siglip2's NaFlex models are not supported)"
                ),
            }),
        }
    }

    /// Whether the family has a text tower (and so needs a tokenizer).
    pub fn has_text(self) -> bool {
        !matches!(self, Family::Dinov2)
    }

    fn is_clip(&self) -> bool {
        *self == Family::Clip
    }
}

/// Loads the model `spec` names onto `device`, computing in `dtype`, as the family its files
/// declare.
pub fn load(spec: &ModelSpec, device: &Device, dtype: DType) -> Result<Box<dyn Encoder>> {
    let files = ModelFiles::resolve(spec)?;
    match files.family {
        Family::Clip => Ok(Box::new(Clip::from_files(spec, &files, device, dtype)?)),
        Family::Dinov2 => Ok(Box::new(dinov2::Dinov2::from_files(spec, &files, device, dtype)?)),
        Family::OpenClip => Ok(Box::new(openclip::OpenClip::from_files(spec, &files, device, dtype)?)),
        Family::Siglip => Ok(Box::new(siglip::Siglip::from_files(spec, &files, device, dtype)?)),
    }
}

/// How the encoder layers' linear layers compute on the CPU (`--quantize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quantize {
    /// In the compute dtype (f32 on the CPU).
    #[default]
    None,
    /// The attention output projection and the MLP in int8: weights per output channel,
    /// activations quantised per row as they arrive ([`int8`]); everything else f32. CPU only.
    Int8,
    /// Every encoder layer's linear layers in bf16 with f32 sums ([`bf16`]); everything else
    /// f32. CPU with AVX-512 BF16 only.
    Bf16,
}

/// run.json's `compute_dtype` for int8 linear layers with everything else in f32.
const INT8_COMPUTE_DTYPE: &str = "f32+int8";
/// run.json's `compute_dtype` for bf16 linear layers with everything else in f32.
const BF16_COMPUTE_DTYPE: &str = "f32+bf16";

impl Quantize {
    /// run.json's `compute_dtype` for a model computing in `dtype` quantised this way: runs that
    /// differ in it are different jobs (resume and merge refuse to mix them).
    pub fn compute_dtype(self, dtype: DType) -> String {
        match self {
            Quantize::None => format!("{dtype:?}").to_lowercase(),
            Quantize::Int8 => INT8_COMPUTE_DTYPE.into(),
            Quantize::Bf16 => BF16_COMPUTE_DTYPE.into(),
        }
    }

    /// The quantisation a run.json `compute_dtype` records.
    pub fn of_compute_dtype(compute_dtype: &str) -> Self {
        match compute_dtype {
            INT8_COMPUTE_DTYPE => Quantize::Int8,
            BF16_COMPUTE_DTYPE => Quantize::Bf16,
            _ => Quantize::None,
        }
    }

    /// Whether this CPU computes this way at speed: bf16 needs AVX-512 BF16 (and AVX-512 not
    /// ruled out by `SIEVE_CPU_KERNEL`); int8 and f32 run anywhere.
    pub fn available(self) -> bool {
        self != Quantize::Bf16 || bf16::kern() != bf16::Kern::Portable
    }
}

/// Refuses a `quantize` that cannot run on `device` in `dtype`: int8 and bf16 are for the CPU
/// in f32, and bf16 for a CPU with AVX-512 BF16.
pub(crate) fn check_quantize(device: &Device, dtype: DType, quantize: Quantize) -> Result<()> {
    let name = match quantize {
        Quantize::None => return Ok(()),
        Quantize::Int8 => "int8",
        Quantize::Bf16 => "bf16",
    };
    if !device.is_cpu() || dtype != DType::F32 {
        return Err(Error::InvalidArg {
            what: "--quantize",
            reason: format!("{name} runs on the CPU only (add --device cpu; GPUs compute in f16)"),
        });
    }
    if !quantize.available() {
        return Err(Error::InvalidArg {
            what: "--quantize",
            reason: "bf16 needs a CPU with AVX-512 BF16 (Intel Cooper Lake or Sapphire Rapids and later, AMD \
                     Zen 4 and later), and this one lacks it (or SIEVE_CPU_KERNEL rules AVX-512 out); without \
                     the instruction bf16 is slower than f32. --quantize int8 is faster on any x86 CPU"
                .into(),
        });
    }
    Ok(())
}

/// [`load`], then quantised as `quantize` asks. int8 runs on the CPU only: on AVX-512 VNNI or
/// AVX2 kernels, or, with a warning, a slower portable one (the embeddings are the same); bf16
/// on CPUs with AVX-512 BF16 only.
pub fn load_quantized(spec: &ModelSpec, device: &Device, dtype: DType, quantize: Quantize) -> Result<Box<dyn Encoder>> {
    check_quantize(device, dtype, quantize)?;
    let mut encoder = load(spec, device, dtype)?;
    // `None` packs f32 CPU weights for the fused path's kernel.
    encoder.quantize(quantize)?;
    if quantize == Quantize::Int8 && int8::kern() == int8::Kern::Portable {
        tracing::warn!(
            "--quantize int8: this CPU has neither AVX-512 VNNI nor AVX2, so int8 runs on the portable \
             kernel, slower than f32 (the embeddings are the same)"
        );
    }
    Ok(encoder)
}

impl ModelInfo {
    /// The record of a model `spec` named, loaded from `files`: where from (revision and commit
    /// for the Hub), the weights' digest, the embedding width and the family.
    pub(crate) fn of(spec: &ModelSpec, files: &ModelFiles, embed_dim: usize, family: Family) -> Result<Self> {
        let (revision, commit) = files.origin(spec);
        Ok(Self {
            id: spec.name.clone(),
            revision,
            commit,
            source: files.config.parent().map(|p| p.display().to_string()).unwrap_or_default(),
            weights_sha256: crate::digest::sha256_file(&files.weights)?,
            embed_dim,
            family,
            pair_logit: None,
        })
    }
}

/// Row-wise L2 normalisation; all-zero rows stay zero.
pub fn l2_normalize(xs: &Tensor) -> Result<Tensor> {
    let norm = xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    Ok(xs.broadcast_div(&norm)?)
}

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

/// Where a loaded model came from, recorded in `run.json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ModelInfo {
    /// The `--model` value: a Hub repo id or a folder.
    pub id: String,
    /// The revision fetched from the Hub: `--revision`, else the registry's, else `main`
    /// (`None` for a local folder).
    pub revision: Option<String>,
    /// The commit that revision resolved to in the Hub cache (absent for a local folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The folder the files were read from.
    pub source: String,
    /// SHA-256 of the weights file, so runs made with different weights can be told apart.
    pub weights_sha256: String,
    pub embed_dim: usize,
    /// The model family; left out of `run.json` for CLIP, so runs made before other families
    /// existed read (and are written) unchanged.
    #[serde(default, skip_serializing_if = "Family::is_clip")]
    pub family: Family,
    /// The model's own pair score, `sigmoid(exp(scale) · cosine + bias)` (SigLIP); left out of
    /// `run.json` for families without one, so their runs read and are written unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair_logit: Option<PairLogit>,
}

/// A model's logit for an image-caption pair as a function of their cosine: SigLIP's
/// `logit_scale` (stored as its log, as in the checkpoint) and `logit_bias`.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq)]
pub struct PairLogit {
    pub scale: f32,
    pub bias: f32,
}

impl PairLogit {
    /// The probability the model gives a pair whose embeddings have cosine `cos`.
    pub fn probability(&self, cos: f32) -> f32 {
        let logit = f64::from(self.scale).exp() * f64::from(cos) + f64::from(self.bias);
        (1.0 / (1.0 + (-logit).exp())) as f32
    }
}
