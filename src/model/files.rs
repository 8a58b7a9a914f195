//! Where a model's files come from: a local folder, or the Hugging Face Hub (`--revision`,
//! `HF_HUB_OFFLINE`) through the cache as huggingface_hub lays it out ([`super::hub`]), and the
//! weights as a candle `VarBuilder`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::{registry, Family, ModelSpec};
use crate::error::{Error, Result};

/// The files of a model in Hugging Face layout (`config.json`, `preprocessor_config.json`,
/// `tokenizer.json` unless the family is image-only or SigLIP, whose tokenizer is
/// `spiece.model` with `tokenizer_config.json` beside it; weights), resolved to local paths, and the
/// family its `config.json` declares; or in open_clip's layout, where `config` and
/// `preprocessor` are both `open_clip_config.json`.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub family: Family,
    pub config: PathBuf,
    pub preprocessor: PathBuf,
    /// `None` for an image-only family.
    pub tokenizer: Option<PathBuf>,
    pub weights: PathBuf,
}

const WEIGHT_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

/// open_clip's Hub layout: its config (model and preprocessing) and weights, in the order
/// open_clip prefers them. Its repos usually also ship a `tokenizer.json` (the CLIP BPE).
const OPEN_CLIP_CONFIG: &str = "open_clip_config.json";
const OPEN_CLIP_WEIGHTS: [&str; 2] = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"];

/// The revision a Hub model is fetched at: `--revision`, else the registry's, else `main`.
fn hub_revision(spec: &ModelSpec) -> String {
    spec.revision.clone().unwrap_or_else(|| registry::default_revision(&spec.name))
}

impl ModelFiles {
    /// The revision fetched and the commit it resolved to, for a model from the Hub cache
    /// (`None`s for a local folder).
    pub fn origin(&self, spec: &ModelSpec) -> (Option<String>, Option<String>) {
        if Path::new(&spec.name).is_dir() {
            return (None, None);
        }
        (Some(hub_revision(spec)), super::hub::snapshot_commit(&self.config))
    }

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
        let hf_config = dir.join("config.json");
        if dir.join(OPEN_CLIP_CONFIG).is_file() && (!hf_config.is_file() || is_timm_config(&hf_config)) {
            return Self::open_clip_dir(dir);
        }
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
        let config = need("config.json")?;
        let family = Family::from_config(&config)?;
        let preprocessor = need("preprocessor_config.json")?;
        let tokenizer = match family {
            Family::Siglip => {
                Some(siglip_tokenizer(&dir.display().to_string(), |f| Some(dir.join(f)).filter(|p| p.is_file()))?)
            }
            _ if family.has_text() => Some(need("tokenizer.json")?),
            _ => None,
        };
        Ok(Self { family, config, preprocessor, tokenizer, weights })
    }

    /// A folder in open_clip's layout (no `config.json`). The tokenizer is optional here; the
    /// family says what it needs when it is missing.
    fn open_clip_dir(dir: &Path) -> Result<Self> {
        let weights = OPEN_CLIP_WEIGHTS.iter().map(|f| dir.join(f)).find(|p| p.is_file()).ok_or_else(|| {
            Error::ModelUnavailable {
                model: dir.display().to_string(),
                reason: format!("the folder has {OPEN_CLIP_CONFIG} but neither {}", OPEN_CLIP_WEIGHTS.join(" nor ")),
            }
        })?;
        let config = dir.join(OPEN_CLIP_CONFIG);
        let tokenizer = Some(dir.join("tokenizer.json")).filter(|p| p.is_file());
        Ok(Self { family: Family::OpenClip, preprocessor: config.clone(), config, tokenizer, weights })
    }

    fn from_hub(spec: &ModelSpec) -> Result<Self> {
        use hf_hub::{Repo, RepoType};
        let revision = hub_revision(spec);
        let repo = Repo::with_revision(spec.name.clone(), RepoType::Model, revision.clone());
        let unavailable =
            |reason: String| Error::ModelUnavailable { model: format!("{}@{revision}", spec.name), reason };
        let offline = super::hub::offline();
        let cache = super::hub::cache_dir();
        let api = if offline {
            None
        } else {
            Some(
                hf_hub::api::sync::ApiBuilder::from_env()
                    .with_cache_dir(cache.clone())
                    .with_progress(false)
                    .build()
                    .map_err(|e| unavailable(format!("cannot set up the Hub client: {e}")))?,
            )
        };
        let fetch_from = |repo: &Repo, name: &str| -> Result<PathBuf> {
            if let Some(p) = super::hub::cached_file(&cache, &repo.url(), repo.revision(), name) {
                return Ok(p);
            }
            match &api {
                None => Err(unavailable(format!(
                    "{name} is not in the Hub cache ({}) and HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set",
                    cache.display()
                ))),
                Some(api) => {
                    tracing::info!("downloading {name} from {}@{}", repo.url(), repo.revision());
                    api.repo(repo.clone()).get(name).map_err(|e| unavailable(format!("downloading {name}: {e}")))
                }
            }
        };
        let fetch = |name: &str| fetch_from(&repo, name);
        let config = match fetch("config.json") {
            Ok(p) if !is_timm_config(&p) => p,
            // No Hugging Face config: open_clip's own layout, if the repo has its config.
            other => {
                let first = match other {
                    Err(e) => e,
                    Ok(p) => Error::ModelFile { path: p, reason: "a timm config.json, and no open_clip config".into() },
                };
                let Ok(config) = fetch(OPEN_CLIP_CONFIG) else { return Err(first) };
                let weights = match fetch(OPEN_CLIP_WEIGHTS[0]) {
                    Ok(p) => p,
                    Err(first) => fetch(OPEN_CLIP_WEIGHTS[1]).map_err(|_| first)?,
                };
                // A repo without tokenizer.json: open_clip then uses the CLIP BPE it bundles,
                // the vocabulary of OpenAI's CLIP repos, read from there.
                let tokenizer = match fetch("tokenizer.json") {
                    Ok(p) => p,
                    Err(first) => {
                        let openai = Repo::with_revision(
                            super::DEFAULT_MODEL.into(),
                            RepoType::Model,
                            registry::default_revision(super::DEFAULT_MODEL),
                        );
                        fetch_from(&openai, "tokenizer.json").map_err(|_| first)?
                    }
                };
                let preprocessor = config.clone();
                return Ok(Self {
                    family: Family::OpenClip,
                    config,
                    preprocessor,
                    tokenizer: Some(tokenizer),
                    weights,
                });
            }
        };
        let family = Family::from_config(&config)?;
        let preprocessor = fetch("preprocessor_config.json")?;
        let tokenizer = match family {
            // tokenizer_config.json lands beside spiece.model in the cache, where the family reads it.
            Family::Siglip => Some(siglip_tokenizer(&spec.name, |f| fetch(f).ok())?),
            _ if family.has_text() => Some(fetch("tokenizer.json")?),
            _ => None,
        };
        let weights = match fetch(WEIGHT_FILES[0]) {
            Ok(p) => p,
            Err(first) => fetch(WEIGHT_FILES[1]).map_err(|_| first)?,
        };
        Ok(Self { family, config, preprocessor, tokenizer, weights })
    }
}

/// A SigLIP model's tokenizer: `spiece.model` (with `tokenizer_config.json` where there is one,
/// fetched so it lies beside it). SigLIP 2's checkpoints in `SiglipModel` layout ship Gemma's
/// tokenizer (`tokenizer.json`, no `spiece.model`), which sieve does not reproduce: refused.
fn siglip_tokenizer(model: &str, find: impl Fn(&str) -> Option<PathBuf>) -> Result<PathBuf> {
    if let Some(spiece) = find("spiece.model") {
        let _ = find("tokenizer_config.json");
        return Ok(spiece);
    }
    let reason = if find("tokenizer.json").is_some() {
        "it is a SigLIP model with a tokenizer.json but no spiece.model, as SigLIP 2 ships Gemma's tokenizer; \
         sieve loads SigLIP's SentencePiece tokenizer only"
    } else {
        "a SigLIP model needs its spiece.model"
    };
    Err(Error::ModelUnavailable { model: model.to_string(), reason: reason.into() })
}

/// Whether `path` is a timm `config.json` (`architecture`, no `model_type`), as the timm
/// organisation's open_clip repos ship beside `open_clip_config.json`.
fn is_timm_config(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else { return false };
    let Ok(serde_json::Value::Object(v)) = serde_json::from_str::<serde_json::Value>(&text) else { return false };
    v.contains_key("architecture") && !v.contains_key("model_type") && !v.contains_key("text_config")
}

/// The weights at `path` (safetensors, memory-mapped, or a PyTorch pickle), cast to `dtype`.
pub(crate) fn weights_builder(path: &Path, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
    let bad = |e: candle_core::Error| Error::ModelFile { path: path.into(), reason: e.to_string() };
    if path.extension().is_some_and(|e| e == "safetensors") {
        // SAFETY: the file is memory-mapped read-only; sieve never writes model files.
        unsafe { VarBuilder::from_mmaped_safetensors(&[path], dtype, device).map_err(bad) }
    } else {
        VarBuilder::from_pth(path, dtype, device).map_err(bad)
    }
}
