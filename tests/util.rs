//! Shared helpers: paths to the committed fixtures, loading the tiny model, vector maths.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use sieve::model::{Clip, ModelSpec};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny_model_dir() -> PathBuf {
    root().join("models/tiny-clip")
}

pub fn fixtures() -> PathBuf {
    root().join("tests/fixtures")
}

pub fn tiny_clip() -> Clip {
    let dir = tiny_model_dir();
    Clip::load(&ModelSpec::new(dir.display().to_string(), None), &Device::Cpu, DType::F32).expect("tiny model loads")
}

/// `tests/fixtures/golden/manifest.json`.
#[derive(Debug, Deserialize)]
pub struct Golden {
    #[allow(dead_code)] // shown in failure messages via Debug
    pub transformers: String,
    pub image_processor: String,
    pub images: Vec<String>,
    pub captions: Vec<String>,
    pub input_ids: Vec<Vec<u32>>,
    pub untruncated_lengths: Vec<usize>,
}

pub fn golden() -> Golden {
    let p = fixtures().join("golden/manifest.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("golden manifest exists")).expect("golden manifest parses")
}

/// A 2-D f32 `.npy` from the golden folder, as rows.
pub fn golden_rows(name: &str) -> Vec<Vec<f32>> {
    Tensor::read_npy(fixtures().join("golden").join(name)).unwrap().to_dtype(DType::F32).unwrap().to_vec2().unwrap()
}

pub fn golden_pixels(stem: &str) -> Tensor {
    Tensor::read_npy(fixtures().join("golden").join(format!("pixels_{stem}.npy")))
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

pub fn stem(file: &str) -> &str {
    Path::new(file).file_stem().unwrap().to_str().unwrap()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
