//! The known-model registry, `models/registry.json`, compiled into the binary so it is there at
//! run time: Hub ids, their default revisions, and per-model defaults (dedup thresholds).

use serde::{Deserialize, Serialize};

/// Default `sieve dedup` thresholds for a model.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
pub struct DedupDefaults {
    /// Image-embedding cosine at or above which two images are near-duplicates.
    pub image: f32,
    /// Caption-embedding cosine at or above which two captions are near-duplicates.
    pub caption: f32,
    /// Largest Hamming distance between two 64-bit perceptual hashes of duplicates.
    pub perceptual_distance: u32,
}

/// Default `sieve score` settings for a model.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
pub struct ScoreDefaults {
    /// Image-caption cosine under which a pair is flagged `low_score`.
    pub min_cosine: f32,
}

/// One known model.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct KnownModel {
    pub id: String,
    pub revision: Option<String>,
    pub embed_dim: usize,
    pub image_size: usize,
    pub notes: String,
    pub dedup: Option<DedupDefaults>,
    pub score: Option<ScoreDefaults>,
}

#[derive(Deserialize)]
struct Registry {
    models: Vec<KnownModel>,
    dedup_default: DedupDefaults,
    score_default: ScoreDefaults,
}

const REGISTRY_JSON: &str = include_str!("../../models/registry.json");

fn registry() -> Registry {
    serde_json::from_str::<Registry>(REGISTRY_JSON).expect("models/registry.json is valid (checked by a test)")
}

/// All known models, in registry order.
pub fn known_models() -> Vec<KnownModel> {
    registry().models
}

/// The registry entry for `id`, if any. A local folder matches the entry whose last path
/// component it shares (`/data/clip-vit-base-patch32` → `openai/clip-vit-base-patch32`).
pub fn lookup(id: &str) -> Option<KnownModel> {
    let models = known_models();
    if let Some(m) = models.iter().find(|m| m.id == id) {
        return Some(m.clone());
    }
    let last = |s: &str| s.trim_end_matches('/').rsplit('/').next().unwrap_or("").to_string();
    let name = last(id);
    models.into_iter().find(|m| !name.is_empty() && last(&m.id) == name)
}

/// The revision to fetch when none is given: the registry's, else `main`.
pub fn default_revision(id: &str) -> String {
    lookup(id).and_then(|m| m.revision).unwrap_or_else(|| "main".to_string())
}

/// Dedup thresholds for runs made with model `id`: the model's own, else the registry default.
pub fn dedup_defaults(id: &str) -> DedupDefaults {
    lookup(id).and_then(|m| m.dedup).unwrap_or_else(|| registry().dedup_default)
}

/// Score settings for runs made with model `id`: the model's own, else the registry default.
pub fn score_defaults(id: &str) -> ScoreDefaults {
    lookup(id).and_then(|m| m.score).unwrap_or_else(|| registry().score_default)
}
