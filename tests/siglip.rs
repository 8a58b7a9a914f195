//! SigLIP against transformers' `SiglipModel` and `SiglipTokenizer` on the same files (golden
//! files from scripts/make_reference_siglip.py, on models/tiny-siglip: a tiny seeded model, a
//! SentencePiece vocabulary trained by the script, and a config.json that leaves transformers'
//! defaults out as the Hub's do).

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use sieve::media::decode::{decode, Limits};
use sieve::model::siglip::{Siglip, SiglipConfig};
use sieve::model::{Encoder, Family, ModelFiles, ModelSpec};

use crate::util::*;

/// Cosine similarity required against transformers' embeddings.
const COSINE_MIN: f64 = 0.9999;

fn gold() -> PathBuf {
    fixtures().join("golden/siglip")
}

fn dir() -> PathBuf {
    root().join("models/tiny-siglip")
}

fn load() -> Siglip {
    let spec = ModelSpec::new(dir().display().to_string(), None);
    let files = ModelFiles::resolve(&spec).unwrap();
    Siglip::from_files(&spec, &files, &Device::Cpu, DType::F32).unwrap()
}

fn rows(name: &str) -> Vec<Vec<f32>> {
    Tensor::read_npy(gold().join(name)).unwrap().to_vec2().unwrap()
}

#[derive(serde::Deserialize)]
struct Manifest {
    images: Vec<String>,
    captions: usize,
    pairs: usize,
    logit_scale: f32,
    logit_bias: f32,
}

fn manifest() -> Manifest {
    serde_json::from_str(&std::fs::read_to_string(gold().join("manifest.json")).unwrap()).unwrap()
}

#[derive(serde::Deserialize)]
struct Tokens {
    captions: Vec<String>,
    ids: Vec<Vec<u32>>,
    untruncated_len: Vec<usize>,
}

fn tokens() -> Tokens {
    serde_json::from_str(&std::fs::read_to_string(gold().join("tokens.json")).unwrap()).unwrap()
}

fn golden_pixels() -> Tensor {
    let px: Vec<Tensor> = manifest()
        .images
        .iter()
        .map(|f| Tensor::read_npy(gold().join(format!("pixels_{}.npy", stem(f)))).unwrap())
        .collect();
    Tensor::stack(&px, 0).unwrap()
}

fn assert_rows_match(got: &[Vec<f32>], want: &[Vec<f32>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let c = cosine(g, w);
        assert!(c >= COSINE_MIN, "{what} {i}: cosine {c} < {COSINE_MIN}");
    }
}

#[test]
fn siglip_folder_loads_as_its_family() {
    let m = sieve::model::load(&ModelSpec::new(dir().display().to_string(), None), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(m.family(), Family::Siglip);
    assert_eq!(m.embed_dim(), 32);
    assert_eq!(m.info().family, Family::Siglip);
    let t = m.tokenizer().expect("SigLIP has a text tower");
    assert_eq!(t.max_len(), 64, "max_position_embeddings left out of config.json: transformers' 64");
    assert_eq!(t.pad_id(), Some(1), "pads with </s>, as google's SigLIP tokenizers do");
    let logit = m.info().pair_logit.expect("SigLIP records its pair logit");
    let g = manifest();
    assert_eq!((logit.scale, logit.bias), (g.logit_scale, g.logit_bias), "as stored, the scale not exponentiated");
    // run.json keeps it; other families' ModelInfo leaves the key out (tests/parity.rs's CLIP
    // runs compare run.json byte for byte).
    let json = serde_json::to_value(m.info()).unwrap();
    assert_eq!(json["pair_logit"]["scale"].as_f64().unwrap() as f32, g.logit_scale);
    let clip =
        sieve::model::load(&ModelSpec::new(tiny_model_dir().display().to_string(), None), &Device::Cpu, DType::F32)
            .unwrap();
    assert!(serde_json::to_value(clip.info()).unwrap().get("pair_logit").is_none());
}

#[test]
fn sparse_config_takes_transformers_defaults() {
    let c = SiglipConfig::from_file(&dir().join("config.json")).unwrap();
    let (t, v) = (&c.text_config, &c.vision_config);
    assert_eq!((t.vocab_size, t.hidden_size, t.max_position_embeddings, t.pad_token_id), (300, 32, 64, 1));
    assert_eq!((t.hidden_act.as_str(), t.layer_norm_eps, t.projection_size()), ("gelu_pytorch_tanh", 1e-6, 32));
    assert_eq!((v.image_size, v.patch_size, v.num_channels, v.layer_norm_eps), (32, 8, 3, 1e-6));
    // Nothing but the model type: transformers' SiglipConfig() itself (base, patch 16, 224 px).
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("config.json");
    std::fs::write(&p, r#"{"model_type": "siglip", "text_config": {}, "vision_config": {"patch_size": 16}}"#).unwrap();
    let c = SiglipConfig::from_file(&p).unwrap();
    assert_eq!((c.text_config.vocab_size, c.vision_config.hidden_size, c.vision_config.image_size), (32000, 768, 224));
    // A text head that does not project to the image width is refused, naming the file.
    std::fs::write(&p, r#"{"text_config": {"projection_size": 16}, "vision_config": {}}"#).unwrap();
    let e = SiglipConfig::from_file(&p).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("projects to 16"), "{e}");
}

#[test]
fn siglip_tokens_match_siglip_tokenizer() {
    let g = tokens();
    let m = load();
    assert!(g.captions.len() >= 20);
    for ((caption, want), len) in g.captions.iter().zip(&g.ids).zip(&g.untruncated_len) {
        let got = m.tokenizer.encode(caption).unwrap();
        assert_eq!(&got.ids, want, "caption {caption:?}");
        assert_eq!(got.len, *len, "untruncated length of {caption:?}");
        assert_eq!(got.truncated, *len > 64, "{caption:?}");
    }
}

#[test]
fn siglip_pixels_match_siglip_image_processor() {
    let m = load();
    for file in &manifest().images {
        let bytes = std::fs::read(fixtures().join("images").join(file)).unwrap();
        let ours = m.preprocessor.preprocess(&decode(&bytes, &Limits::default()).unwrap().rgb);
        let theirs = Tensor::read_npy(gold().join(format!("pixels_{}.npy", stem(file))))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let d = max_abs(&ours, &theirs);
        assert!(d <= 1e-4, "{file}: pixel max-abs {d}");
    }
}

#[test]
fn siglip_embeddings_match_transformers() {
    let m = load();
    let g = manifest();
    // Model only, from transformers' pixels and ids.
    let img = m.embed_images(&golden_pixels()).unwrap().to_vec2::<f32>().unwrap();
    assert_rows_match(&img, &rows("image_embeds.npy"), "image");
    let ids = &tokens().ids[..g.captions];
    let txt = m.embed_texts(ids).unwrap().to_vec2::<f32>().unwrap();
    assert_rows_match(&txt, &rows("text_embeds.npy"), "caption");
    for r in img.iter().chain(&txt) {
        let n: f32 = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "rows are L2-normalised, got norm {n}");
    }
    // End to end: sieve's own decoding, preprocessing and tokenisation of the fixture files.
    let captions: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("captions.json")).unwrap()).unwrap();
    let ours: Vec<Vec<u32>> = captions.iter().map(|c| m.tokenizer.encode(c).unwrap().ids).collect();
    let txt2 = m.embed_texts(&ours).unwrap().to_vec2::<f32>().unwrap();
    assert_rows_match(&txt2, &rows("text_embeds.npy"), "caption end to end");
    let (h, w) = m.preprocessor.output_size();
    let px: Vec<Tensor> = g
        .images
        .iter()
        .map(|f| {
            let bytes = std::fs::read(fixtures().join("images").join(f)).unwrap();
            let v = m.preprocessor.preprocess(&decode(&bytes, &Limits::default()).unwrap().rgb);
            Tensor::from_vec(v, (3, h as usize, w as usize), &Device::Cpu).unwrap()
        })
        .collect();
    let img2 = m.embed_images(&Tensor::stack(&px, 0).unwrap()).unwrap().to_vec2::<f32>().unwrap();
    assert_rows_match(&img2, &rows("image_embeds.npy"), "image end to end");
    // The pictures differ clearly, so matching is not matching a constant.
    let spread = (0..img.len()).flat_map(|i| (0..i).map(move |j| (i, j))).map(|(i, j)| cosine(&img[i], &img[j]));
    assert!(spread.fold(1.0f64, f64::min) < 0.9, "fixture images should not all embed alike");
}

#[test]
fn siglip_batched_equals_single_and_fused_equals_generic() {
    let m = load();
    let pixels = golden_pixels();
    let batched = m.embed_images(&pixels).unwrap().to_vec2::<f32>().unwrap();
    let single = rows("image_embeds_single.npy");
    for (i, row) in batched.iter().enumerate() {
        let one = m.embed_images(&pixels.narrow(0, i, 1).unwrap()).unwrap().to_vec2::<f32>().unwrap();
        assert!(max_abs(row, &one[0]) <= 1e-5, "image {i}: batched vs single {}", max_abs(row, &one[0]));
        assert!(cosine(&one[0], &single[i]) >= COSINE_MIN);
    }
    let ids = tokens().ids;
    let txt = m.embed_texts(&ids).unwrap().to_vec2::<f32>().unwrap();
    let one = m.embed_texts(&ids[3..4]).unwrap().to_vec2::<f32>().unwrap();
    assert!(max_abs(&txt[3], &one[0]) <= 1e-5);
    let mut generic = load();
    generic.model.set_fused_cpu(false);
    let gi = generic.embed_images(&pixels).unwrap().to_vec2::<f32>().unwrap();
    let gt = generic.embed_texts(&ids).unwrap().to_vec2::<f32>().unwrap();
    for (a, b) in batched.iter().zip(&gi).chain(txt.iter().zip(&gt)) {
        let d = max_abs(a, b);
        assert!(d <= 1e-5, "fused vs generic CPU path: {d}");
    }
}

#[test]
fn siglip_pair_probability_is_the_models_sigmoid() {
    let m = load();
    let g = manifest();
    let want = rows("logits_per_text.npy");
    assert_eq!(want.len(), g.pairs);
    let img = m.embed_images(&golden_pixels().narrow(0, 0, g.pairs).unwrap()).unwrap().to_vec2::<f32>().unwrap();
    let txt = m.embed_texts(&tokens().ids[..g.pairs]).unwrap().to_vec2::<f32>().unwrap();
    let logit = m.info.pair_logit.unwrap();
    for (t, row) in want.iter().enumerate() {
        for (i, &l) in row.iter().enumerate() {
            let cos: f32 = txt[t].iter().zip(&img[i]).map(|(a, b)| a * b).sum();
            let p = logit.probability(cos);
            let expect = 1.0 / (1.0 + (-f64::from(l)).exp());
            assert!((f64::from(p) - expect).abs() < 1e-4, "text {t} image {i}: {p} vs sigmoid(logit) {expect}");
        }
    }
}

#[test]
fn siglip_tokenizer_files_are_required_and_gemma_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "preprocessor_config.json", "model.safetensors"] {
        std::fs::copy(dir().join(f), tmp.path().join(f)).unwrap();
    }
    let spec = ModelSpec::new(tmp.path().display().to_string(), None);
    let e = sieve::model::load(&spec, &Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(e.contains("spiece.model"), "{e}");
    // SigLIP 2 in SiglipModel layout: Gemma's tokenizer.json and no spiece.model.
    std::fs::copy(tiny_model_dir().join("tokenizer.json"), tmp.path().join("tokenizer.json")).unwrap();
    let e = sieve::model::load(&spec, &Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json") && e.contains("SigLIP 2"), "{e}");
    // A spiece.model that is not one is named.
    std::fs::write(tmp.path().join("spiece.model"), b"\xff\xff not protobuf").unwrap();
    let e = sieve::model::load(&spec, &Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(e.contains("spiece.model") && e.contains("SentencePiece"), "{e}");
    // Without tokenizer_config.json, SiglipTokenizer's defaults (the same as the file's here).
    std::fs::copy(dir().join("spiece.model"), tmp.path().join("spiece.model")).unwrap();
    let m = sieve::model::load(&spec, &Device::Cpu, DType::F32).unwrap();
    let g = tokens();
    assert_eq!(m.tokenizer().unwrap().encode(&g.captions[0]).unwrap().ids, g.ids[0]);
}

/// `pairs.parquet`'s rows as `uri -> (cosine, pair_probability)`; the probability is `None`
/// when the column is absent.
fn pair_rows(run: &std::path::Path) -> std::collections::BTreeMap<String, (f32, Option<f32>)> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Float32Type;
    let f = std::fs::File::open(run.join("pairs.parquet")).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for b in parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap() {
        let b = b.unwrap();
        let uri = b.column_by_name("uri").unwrap().as_string::<i32>().clone();
        let cos = b.column_by_name("cosine").unwrap().as_primitive::<Float32Type>().clone();
        let prob = b.column_by_name("pair_probability").map(|c| c.as_primitive::<Float32Type>().clone());
        for i in 0..b.num_rows() {
            out.insert(uri.value(i).to_string(), (cos.value(i), prob.as_ref().map(|p| p.value(i))));
        }
    }
    out
}

/// `sieve run` with the tiny SigLIP on the fixture pictures, each with the caption the golden
/// logits pair it with: `sieve score` reports the model's own pair probability beside the
/// cosine, equal to transformers' `sigmoid(logits_per_text)` for the pair; a CLIP run's
/// outputs have neither the column nor the summary key.
#[test]
fn score_reports_siglip_pair_probability_and_only_for_siglip() {
    let g = manifest();
    let captions: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("captions.json")).unwrap()).unwrap();
    let logits = rows("logits_per_text.npy");
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    for (i, file) in g.images.iter().enumerate().take(g.pairs) {
        std::fs::copy(fixtures().join("images").join(file), input.join(file)).unwrap();
        std::fs::write(input.join(format!("{}.txt", stem(file))), &captions[i]).unwrap();
    }
    let run_with = |model: PathBuf, out: &std::path::Path| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_sieve"))
            .env_remove("RUST_LOG")
            .args(["run", "--quiet", "--device", "cpu", "--model"])
            .arg(model)
            .arg(&input)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let run = tmp.path().join("siglip");
    run_with(dir(), &run);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(manifest["model"]["family"], "siglip");
    let logit = sieve::model::PairLogit {
        scale: manifest["model"]["pair_logit"]["scale"].as_f64().unwrap() as f32,
        bias: manifest["model"]["pair_logit"]["bias"].as_f64().unwrap() as f32,
    };
    let pairs = pair_rows(&run);
    assert!(pairs.len() >= 6, "the fixture pairs with a caption: {}", pairs.len());
    let mut checked = 0;
    for (i, file) in g.images.iter().enumerate().take(g.pairs) {
        let Some((cos, prob)) = pairs.iter().find(|(uri, _)| uri.ends_with(file.as_str())).map(|(_, v)| *v) else {
            continue; // an empty caption is no caption
        };
        let prob = prob.expect("a SigLIP run has the pair_probability column");
        assert!((prob - logit.probability(cos)).abs() < 1e-6);
        // Against transformers' own logit for the pair; the run stores embeddings in f16.
        let want = 1.0 / (1.0 + (-f64::from(logits[i][i])).exp());
        assert!((f64::from(prob) - want).abs() < 5e-3, "{file}: {prob} vs transformers' {want}");
        checked += 1;
    }
    assert_eq!(checked, pairs.len());
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("pairs_summary.json")).unwrap()).unwrap();
    let counts = s["pair_probability"]["histogram"]["counts"].as_array().unwrap();
    assert_eq!(counts.iter().map(|c| c.as_u64().unwrap()).sum::<u64>(), pairs.len() as u64);

    let clip = tmp.path().join("clip");
    run_with(tiny_model_dir(), &clip);
    assert!(pair_rows(&clip).values().all(|(_, p)| p.is_none()), "no pair_probability column for CLIP");
    let s = std::fs::read_to_string(clip.join("pairs_summary.json")).unwrap();
    assert!(!s.contains("pair_probability"), "{s}");
    assert!(!std::fs::read_to_string(clip.join("run.json")).unwrap().contains("pair_logit"));
}

#[test]
fn registry_lists_siglip_with_uncalibrated_thresholds() {
    use sieve::model::registry;
    for (id, dim, size) in
        [("google/siglip-base-patch16-224", 768, 224), ("google/siglip-so400m-patch14-384", 1152, 384)]
    {
        let m = registry::lookup(id).unwrap_or_else(|| panic!("{id} in models/registry.json"));
        assert_eq!((m.embed_dim, m.image_size), (dim, size), "{id}");
        assert!(m.notes.contains("uncalibrated"), "{id}: {}", m.notes);
        assert_eq!(registry::score_defaults(id).min_cosine, 0.1);
    }
    // transformers' SiglipConfig() is the base model, whose width the registry states.
    let base = SiglipConfig::default();
    assert_eq!((base.embed_dim(), base.vision_config.image_size), (768, 224));
}

/// `sieve bench` times CLIP-shaped towers; a SigLIP config is refused rather than read as a
/// CLIP one with CLIP's defaults.
#[test]
fn bench_refuses_a_siglip_config() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sieve"))
        .args(["bench", "--quiet", "--iters", "1", "--config"])
        .arg(dir().join("config.json"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Siglip config") && err.contains("cargo bench"), "{err}");
}
