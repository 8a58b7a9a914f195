//! Shared helpers: paths to the committed fixtures, loading the tiny model, vector maths.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use sieve::model::{Clip, ModelSpec};
use sieve::store::{InputInfo, Row, RunManifest, RunWriter, Status};

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

/// An item of a planted run.
pub struct Planted {
    pub image: Vec<f32>,
    pub caption: Option<Vec<f32>>,
    pub size: (u32, u32),
    pub sha: Option<&'static str>,
    pub phash: Option<u64>,
}

/// A perceptual fingerprint whose hash is `hash` and whose stored coefficients are ±60 by the
/// hash bits, so two planted fingerprints `d` bits apart correlate at about `1 − 2d/62`; the
/// mirror hash is what mirroring those coefficients gives.
pub fn planted_fingerprint(hash: u64) -> sieve::media::fingerprint::Fingerprint {
    let bit = |p: usize| (hash >> (63 - p)) & 1 == 1;
    let mut coeffs = [85u8; sieve::media::fingerprint::BYTES];
    coeffs[0] = 128;
    coeffs[1] = 50;
    let mut mirror = 1u64; // the DC bit
    for p in 1..64 {
        let v = p % 8;
        let flip = v % 2 == 1;
        let set = bit(p) != flip;
        mirror = (mirror << 1) | set as u64;
        if p < 63 {
            coeffs[1 + p] = if bit(p) { 60i8 as u8 } else { (-60i8) as u8 };
        }
    }
    sieve::media::fingerprint::Fingerprint { hash, mirror, coeffs }
}

/// A vector at cosine `c` from `e0` in the (e0, e_k) plane.
pub fn at(c: f32, k: usize, dim: usize) -> Vec<f32> {
    let mut v = vec![0f32; dim];
    v[0] = c;
    v[k] = (1.0 - c * c).sqrt();
    v
}

/// A vector at cosine `c` from `e_i` in the (e_i, e_j) plane.
pub fn near(i: usize, c: f32, j: usize, dim: usize) -> Vec<f32> {
    let mut v = vec![0f32; dim];
    v[i] = c;
    v[j] = (1.0 - c * c).sqrt();
    v
}

/// Writes a run directory holding `items` (ids 0..), as `sieve embed` would.
pub fn planted_run(dir: &Path, items: &[Planted], weights_sha256: &str) {
    planted_run_with_uris(dir, items, weights_sha256, |i| format!("img/{i:03}.jpg"));
}

/// [`planted_run`] with item `i` at `uri(i)`.
pub fn planted_run_with_uris(dir: &Path, items: &[Planted], weights_sha256: &str, uri: impl Fn(usize) -> String) {
    let dim = items[0].image.len();
    let mut w = RunWriter::create(dir, 1000, dim, true).unwrap();
    let rows = items.iter().enumerate().map(|(i, it)| Row {
        id: i as u64,
        uri: uri(i),
        caption: it.caption.as_ref().map(|_| format!("caption {i}")),
        caption_lossy: false,
        caption_truncated: false,
        sha256: Some(it.sha.map(str::to_string).unwrap_or_else(|| format!("sha-{i}"))),
        width: Some(it.size.0),
        height: Some(it.size.1),
        phash: it.phash,
        fingerprint: it.phash.map(planted_fingerprint),
        status: Status::Embedded,
        reason: None,
        error: None,
        image_embedding: Some(it.image.clone()),
        text_embedding: it.caption.clone(),
        image_signals: None,
        caption_signals: None,
        origin: Default::default(),
    });
    w.push(rows).unwrap();
    let manifest = RunManifest {
        sieve_version: "test".into(),
        model: sieve::model::ModelInfo {
            id: "planted".into(),
            revision: None,
            commit: None,
            source: "test".into(),
            weights_sha256: weights_sha256.into(),
            embed_dim: dim,
            family: Default::default(),
            pair_logit: None,
        },
        device: "cpu".into(),
        compute_dtype: "f32".into(),
        storage_dtype: "float16".into(),
        embed_dim: dim,
        preprocessing: Default::default(),
        text_max_tokens: 77,
        input: InputInfo { paths: vec!["planted".into()], format: "dir".into(), ..Default::default() },
        limits: Default::default(),
        batch_size: 1,
        part_size: 1000,
        complete: false,
        counts: Default::default(),
        parts: Vec::new(),
        merged_from: Vec::new(),
        checksums: Default::default(),
    };
    w.finish(manifest).unwrap();
}

/// Writes `img` as a JPEG of this quality (image's own encoder).
pub fn save_jpeg(img: &image::RgbImage, p: &Path, quality: u8) {
    use image::ImageEncoder;
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality)
        .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
        .unwrap();
    std::fs::write(p, buf).unwrap();
}

/// Drops the part checksums from a run's run.json, as in runs made before they were recorded
/// (for tests that edit a part to imitate such a run).
pub fn forget_checksums(run: &Path) {
    let mut m = sieve::store::read_manifest(run).unwrap();
    m.checksums.clear();
    std::fs::write(run.join("run.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

/// Appends a regular member `name` holding `data` to a tar being built.
pub fn tar_append(b: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, data).unwrap();
}
