//! The encoder seam: model families told apart by their files, and DINOv2 against transformers'
//! `Dinov2Model` on the same weights and inputs (golden files from
//! scripts/make_reference_dinov2.py, on models/tiny-dinov2, whose crop is smaller than its
//! config's image_size so the position embeddings are interpolated).

use candle_core::{DType, Device, Tensor};
use sieve::media::decode::{decode, Limits};
use sieve::model::{Encoder, Family, ModelSpec};

use crate::cli::sieve;
use crate::util::*;

/// Cosine similarity required against transformers' embeddings.
const COSINE_MIN: f64 = 0.9999;

fn dinov2_dir() -> std::path::PathBuf {
    root().join("models/tiny-dinov2")
}

fn tiny_dinov2() -> Box<dyn Encoder> {
    sieve::model::load(&ModelSpec::new(dinov2_dir().display().to_string(), None), &Device::Cpu, DType::F32).unwrap()
}

#[derive(serde::Deserialize)]
struct DinoGolden {
    images: Vec<String>,
}

fn dino_golden() -> DinoGolden {
    let p = fixtures().join("golden/dinov2/manifest.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn dino_rows(name: &str) -> Vec<Vec<f32>> {
    Tensor::read_npy(fixtures().join("golden/dinov2").join(name)).unwrap().to_vec2().unwrap()
}

fn dino_pixels(stem: &str) -> Tensor {
    Tensor::read_npy(fixtures().join(format!("golden/dinov2/pixels_{stem}.npy"))).unwrap()
}

/// Rows minus their mean over the batch: the part that depends on the picture. The tiny random
/// model's outputs share a large constant part (cosines between different pictures are
/// 0.95–0.999), so matching it alone would prove little.
fn centred(rows: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let d = rows[0].len();
    let mean: Vec<f32> = (0..d).map(|j| rows.iter().map(|r| r[j]).sum::<f32>() / rows.len() as f32).collect();
    rows.iter().map(|r| r.iter().zip(&mean).map(|(a, m)| a - m).collect()).collect()
}

#[test]
fn a_folder_declares_its_family() {
    let m = tiny_dinov2();
    assert_eq!(m.family(), Family::Dinov2);
    assert!(m.tokenizer().is_none(), "DINOv2 is image-only");
    assert_eq!(m.embed_dim(), 32);
    assert!(m.embed_texts(&[vec![1, 2]]).unwrap_err().to_string().contains("image-only"));
    let clip =
        sieve::model::load(&ModelSpec::new(tiny_model_dir().display().to_string(), None), &Device::Cpu, DType::F32)
            .unwrap();
    assert_eq!(clip.family(), Family::Clip);
    assert!(clip.tokenizer().is_some());
}

#[test]
fn families_not_loaded_say_so() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["preprocessor_config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(tiny_model_dir().join(f), dir.path().join(f)).unwrap();
    }
    let spec = ModelSpec::new(dir.path().display().to_string(), None);
    // SigLIP loads (tests/siglip.rs), but not SigLIP 2's Gemma tokenizer.json in its place, nor
    // SigLIP 2's NaFlex model type.
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "siglip"}"#).unwrap();
    let e = sieve::model::load(&spec, &Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(e.contains("SigLIP 2") && e.contains("spiece.model"), "{e}");
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "siglip2"}"#).unwrap();
    let e = sieve::model::load(&spec, &Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("siglip2"), "{e}");
    // An unknown model_type names the file instead of loading CLIP defaults over it.
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
    let e = sieve::model::load(&spec, &Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("llama"), "{e}");
    // open_clip's own layout (no config.json) is read as OpenCLIP's (loaded in tests/openclip.rs):
    // here without its weights, which it names.
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    std::fs::write(dir.path().join("open_clip_config.json"), "{}").unwrap();
    let e = sieve::model::load(&spec, &Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(e.contains("open_clip_config.json") && e.contains("open_clip_model.safetensors"), "{e}");
}

#[test]
fn dinov2_pixels_match_bit_image_processor() {
    let g = dino_golden();
    let m = tiny_dinov2();
    assert_eq!(g.images.len(), 8);
    for file in &g.images {
        let bytes = std::fs::read(fixtures().join("images").join(file)).unwrap();
        let ours = m.preprocessor().preprocess(&decode(&bytes, &Limits::default()).unwrap().rgb);
        let theirs = dino_pixels(stem(file)).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let d = max_abs(&ours, &theirs);
        // The same resize (shortest edge, Pillow's bicubic), centre crop and normalisation as
        // CLIP's processor: exact up to float rounding.
        assert!(d <= 1e-4, "{file}: pixel max-abs {d}");
    }
}

#[test]
fn dinov2_embeddings_match_transformers() {
    let g = dino_golden();
    let m = tiny_dinov2();
    let want = dino_rows("image_embeds.npy");
    let pixels: Vec<Tensor> = g.images.iter().map(|f| dino_pixels(stem(f))).collect();
    let got = m.embed_images(&Tensor::stack(&pixels, 0).unwrap()).unwrap().to_vec2::<f32>().unwrap();
    for (i, file) in g.images.iter().enumerate() {
        let norm: f32 = got[i].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{file}: rows are L2-normalised, got norm {norm}");
        let c = cosine(&got[i], &want[i]);
        assert!(c >= COSINE_MIN, "{file}: cosine {c} < {COSINE_MIN}");
    }
    // The picture-dependent part matches too (normalised rows, centred over the batch).
    let unit: Vec<Vec<f32>> = want
        .iter()
        .map(|r| {
            let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            r.iter().map(|x| x / n).collect()
        })
        .collect();
    let (a, b) = (centred(&got), centred(&unit));
    for (i, file) in g.images.iter().enumerate() {
        let c = cosine(&a[i], &b[i]);
        assert!(c >= 0.999, "{file}: centred cosine {c}");
    }
    // Batched equals one at a time, and both equal transformers' one-at-a-time run.
    let single = dino_rows("image_embeds_single.npy");
    for (i, p) in pixels.iter().enumerate() {
        let one = m.embed_images(&p.unsqueeze(0).unwrap()).unwrap().to_vec2::<f32>().unwrap();
        assert!(max_abs(&one[0], &got[i]) < 1e-5, "{}: batched != single", g.images[i]);
        assert!(cosine(&one[0], &single[i]) >= COSINE_MIN);
    }
}

/// transformers 5 saves DINOv2 layers under new names (`attention.q_proj` …); the Hub's
/// checkpoints use the old ones. Both load to the same model.
#[test]
fn dinov2_loads_transformers_5_tensor_names() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(dinov2_dir().join(f), dir.path().join(f)).unwrap();
    }
    let tensors = candle_core::safetensors::load(dinov2_dir().join("model.safetensors"), &Device::Cpu).unwrap();
    let renamed: std::collections::HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| {
            let k = k
                .replace("attention.attention.query", "attention.q_proj")
                .replace("attention.attention.key", "attention.k_proj")
                .replace("attention.attention.value", "attention.v_proj")
                .replace("attention.output.dense", "attention.o_proj");
            (k, v)
        })
        .collect();
    assert!(renamed.keys().any(|k| k.contains("attention.q_proj")));
    candle_core::safetensors::save(&renamed, dir.path().join("model.safetensors")).unwrap();
    let v5 =
        sieve::model::load(&ModelSpec::new(dir.path().display().to_string(), None), &Device::Cpu, DType::F32).unwrap();
    let hub = tiny_dinov2();
    let px = dino_pixels("photo").unsqueeze(0).unwrap();
    let (a, b) = (
        v5.embed_images(&px).unwrap().to_vec2::<f32>().unwrap(),
        hub.embed_images(&px).unwrap().to_vec2::<f32>().unwrap(),
    );
    assert_eq!(a, b);
}

/// A run made with an image-only model: captions are kept as text and signals but not embedded,
/// run.json names the family, and the stages that need caption embeddings say so instead of
/// failing.
#[test]
fn an_image_only_run_goes_through_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = sieve()
        .args(["run", "--model"])
        .arg(dinov2_dir())
        .arg(fixtures().join("images"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("image-only"), "score says why it has nothing to score: {err}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(manifest["model"]["family"], "dinov2");
    assert_eq!(manifest["text_max_tokens"], 0);
    assert_eq!(manifest["embed_dim"], 32);
    let pairs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("pairs_summary.json")).unwrap()).unwrap();
    assert_eq!(pairs["pairs"], 0);
    assert!(out.join("report.html").is_file());
    assert!(out.join("dedup/summary.json").is_file());
}

/// A CLIP run's run.json has no `family` key, so files written before families existed and
/// after are the same bytes.
#[test]
fn clip_runs_do_not_record_a_family() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = sieve()
        .args(["embed", "--quiet", "--model"])
        .arg(tiny_model_dir())
        .arg(fixtures().join("images"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(out.join("run.json")).unwrap();
    assert!(!text.contains("\"family\""), "{text}");
}

/// The fused CPU layer (GELU, layer scale folded) and candle's generic ops give the same
/// embeddings, and both match transformers.
#[test]
fn dinov2_fused_and_generic_cpu_paths_agree() {
    let spec = ModelSpec::new(dinov2_dir().display().to_string(), None);
    let files = sieve::model::ModelFiles::resolve(&spec).unwrap();
    let mut m = sieve::model::dinov2::Dinov2::from_files(&spec, &files, &Device::Cpu, DType::F32).unwrap();
    let g = dino_golden();
    let want = dino_rows("image_embeds.npy");
    let pixels: Vec<Tensor> = g.images.iter().map(|f| dino_pixels(stem(f))).collect();
    let batch = Tensor::stack(&pixels, 0).unwrap();
    let fused = m.model.embed_images(&batch).unwrap().to_vec2::<f32>().unwrap();
    m.model.set_fused_cpu(false);
    let generic = m.model.embed_images(&batch).unwrap().to_vec2::<f32>().unwrap();
    for i in 0..g.images.len() {
        assert!(max_abs(&fused[i], &generic[i]) < 1e-4, "{}: fused vs generic", g.images[i]);
        assert!(cosine(&generic[i], &want[i]) >= COSINE_MIN, "{}: generic vs transformers", g.images[i]);
    }
}
