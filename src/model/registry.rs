//! The known-model registry, `models/registry.json`, compiled into the binary so it is there at
//! run time: Hub ids, their default revisions, and (in later stages) per-model defaults.

use serde::Deserialize;

/// One known model.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct KnownModel {
    pub id: String,
    pub revision: Option<String>,
    pub embed_dim: usize,
    pub image_size: usize,
    pub notes: String,
}

#[derive(Deserialize)]
struct Registry {
    models: Vec<KnownModel>,
}

const REGISTRY_JSON: &str = include_str!("../../models/registry.json");

/// All known models, in registry order.
pub fn known_models() -> Vec<KnownModel> {
    serde_json::from_str::<Registry>(REGISTRY_JSON).expect("models/registry.json is valid (checked by a test)").models
}

/// The registry entry for `id`, if any.
pub fn lookup(id: &str) -> Option<KnownModel> {
    known_models().into_iter().find(|m| m.id == id)
}

/// The revision to fetch when none is given: the registry's, else `main`.
pub fn default_revision(id: &str) -> String {
    lookup(id).and_then(|m| m.revision).unwrap_or_else(|| "main".to_string())
}
