//! OpenCLIP checkpoints in open_clip's own layout against open_clip_torch on the same files
//! (golden files from scripts/make_reference_openclip.py): models/tiny-openclip (QuickGELU,
//! safetensors, shortest-edge bicubic) and models/tiny-openclip-gelu (GELU, a PyTorch pickle,
//! longest-edge bilinear, LayerNorm eps 1e-6), open_clip's caption clean-up against ftfy, and
//! the real configs of the big checkpoints (models/openclip-configs) against the shapes
//! open_clip builds for them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Shape, Tensor};
use sieve::media::decode::{decode, Limits};
use sieve::media::textclean::{fix_text, open_clip_clean};
use sieve::model::openclip::{OpenClip, OpenClipConfig};
use sieve::model::{Encoder, Family, ModelFiles, ModelSpec};

use crate::util::*;

/// Cosine similarity required against open_clip's embeddings.
const COSINE_MIN: f64 = 0.9999;
const MODELS: [&str; 2] = ["tiny-openclip", "tiny-openclip-gelu"];

fn gold() -> PathBuf {
    fixtures().join("golden/openclip")
}

fn load(name: &str) -> OpenClip {
    let spec = ModelSpec::new(root().join("models").join(name).display().to_string(), None);
    let files = ModelFiles::resolve(&spec).unwrap();
    OpenClip::from_files(&spec, &files, &Device::Cpu, DType::F32).unwrap()
}

fn rows(name: &str) -> Vec<Vec<f32>> {
    Tensor::read_npy(gold().join(name)).unwrap().to_vec2().unwrap()
}

fn npy(name: &str) -> Tensor {
    Tensor::read_npy(gold().join(name)).unwrap()
}

#[derive(serde::Deserialize)]
struct Manifest {
    images: Vec<String>,
}

fn images() -> Vec<String> {
    let m: Manifest = serde_json::from_str(&std::fs::read_to_string(gold().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m.images.len(), 8);
    m.images
}

#[derive(serde::Deserialize)]
struct Tokens {
    captions: Vec<String>,
    ids: Vec<Vec<u32>>,
}

fn tokens() -> Tokens {
    serde_json::from_str(&std::fs::read_to_string(gold().join("tokens.json")).unwrap()).unwrap()
}

/// open_clip resizes a picture in its own mode and converts to RGB afterwards: an RGBA file is
/// resampled with premultiplied alpha and its alpha then dropped, a palette file is resized
/// with nearest-neighbour. sieve (like transformers) converts first (alpha onto white, palette
/// expanded), so for those two fixture files the pixels differ; see docs/guide.md.
const CONVERTED_AFTER_RESIZE: [&str; 2] = ["alpha.png", "palette.png"];

#[test]
fn openclip_folders_load_as_their_family() {
    for name in MODELS {
        let dir = root().join("models").join(name);
        let m = sieve::model::load(&ModelSpec::new(dir.display().to_string(), None), &Device::Cpu, DType::F32).unwrap();
        assert_eq!(m.family(), Family::OpenClip);
        assert_eq!(m.embed_dim(), 16);
        assert!(m.tokenizer().is_some());
        assert_eq!(m.info().family, Family::OpenClip);
    }
    // The safetensors model and the pickled one; logit_scale is read (4.0 stored, e^4 applied).
    let m = load("tiny-openclip");
    assert!((m.logit_scale() - 4f32.exp()).abs() < 1e-3, "{}", m.logit_scale());
    assert!(load("tiny-openclip-gelu").info().source.ends_with("tiny-openclip-gelu"));
    // A folder downloaded from a timm/ repo also holds timm's config.json: still open_clip's.
    let dir = tempfile::tempdir().unwrap();
    for f in ["open_clip_config.json", "open_clip_model.safetensors", "tokenizer.json"] {
        std::fs::copy(root().join("models/tiny-openclip").join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(dir.path().join("config.json"), r#"{"architecture": "vit_base_patch16_clip_224"}"#).unwrap();
    let spec = ModelSpec::new(dir.path().display().to_string(), None);
    assert_eq!(ModelFiles::resolve(&spec).unwrap().family, Family::OpenClip);
    // An HF config.json beside open_clip's wins: that folder is a transformers CLIP.
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "clip"}"#).unwrap();
    let e = ModelFiles::resolve(&spec).unwrap_err().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn openclip_pixels_match_open_clips_transform() {
    let files = images();
    let squash = {
        // The same model with `resize_mode: squash` (DFN's preprocessing) at 40 px.
        let mut cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root().join("models/tiny-openclip/open_clip_config.json")).unwrap(),
        )
        .unwrap();
        cfg["preprocess_cfg"]["resize_mode"] = "squash".into();
        cfg["model_cfg"]["vision_cfg"]["image_size"] = 40.into();
        cfg["model_cfg"]["vision_cfg"]["patch_size"] = 8.into();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("open_clip_config.json"), cfg.to_string()).unwrap();
        let c = OpenClipConfig::from_file(&dir.path().join("open_clip_config.json")).unwrap();
        sieve::media::preprocess::Preprocessor::new(c.preprocess)
    };
    for (prefix, pre) in [
        ("tiny-openclip", load("tiny-openclip").clip.preprocessor),
        ("tiny-openclip-gelu", load("tiny-openclip-gelu").clip.preprocessor),
        ("squash", squash),
    ] {
        let mut worst = 0f32;
        for file in &files {
            let bytes = std::fs::read(fixtures().join("images").join(file)).unwrap();
            let ours = pre.preprocess(&decode(&bytes, &Limits::default()).unwrap().rgb);
            let theirs = npy(&format!("{prefix}_pixels_{}.npy", stem(file))).flatten_all().unwrap();
            let d = max_abs(&ours, &theirs.to_vec1::<f32>().unwrap());
            if CONVERTED_AFTER_RESIZE.contains(&file.as_str()) {
                // The known difference (documented above); a fix would make these match.
                assert!(d > 1e-2, "{prefix} {file}: now matches ({d}); move it to the checked files");
            } else {
                assert!(d <= 1e-4, "{prefix} {file}: pixel max-abs {d}");
                worst = worst.max(d);
            }
        }
        eprintln!("{prefix}: pixel max-abs {worst:.2e} over the 6 RGB and grey files");
    }
}

#[test]
fn openclip_tokens_match_open_clips_tokenizer() {
    let t = tokens();
    let m = load("tiny-openclip");
    let tok = m.tokenizer().unwrap();
    assert_eq!(tok.max_len(), 77);
    for (caption, want) in t.captions.iter().zip(&t.ids) {
        let got = tok.encode(caption).unwrap();
        // open_clip pads to 77 with 0; sieve keeps the ids unpadded.
        assert_eq!(&got.ids[..], &want[..got.ids.len()], "{caption:?}");
        assert!(want[got.ids.len()..].iter().all(|&id| id == 0), "{caption:?}: {:?} vs {want:?}", got.ids);
        assert_eq!(got.truncated, got.len > 77, "{caption:?}");
    }
    // The long caption is cut to 77 with the end token last, as open_clip cuts it.
    assert!(t.ids.iter().any(|ids| ids[76] == 49407));
    // A curly apostrophe tokenises as the straight one.
    assert_eq!(tok.encode("don\u{2019}t").unwrap().ids, tok.encode("don't").unwrap().ids);
}

#[derive(serde::Deserialize)]
struct CleanCase {
    input: String,
    fix_text: String,
    clean: String,
}

#[test]
fn openclip_text_clean_up_matches_ftfy_and_open_clip() {
    let cases: Vec<CleanCase> =
        serde_json::from_str(&std::fs::read_to_string(gold().join("ftfy.json")).unwrap()).unwrap();
    assert!(cases.len() >= 20);
    for c in &cases {
        assert_eq!(fix_text(&c.input), c.fix_text, "ftfy.fix_text({:?})", c.input);
        assert_eq!(open_clip_clean(&c.input), c.clean, "open_clip clean-up of {:?}", c.input);
    }
}

#[test]
fn openclip_embeddings_match_open_clip() {
    let t = tokens();
    for name in MODELS {
        let m = load(name);
        let files = images();
        let pixels: Vec<Tensor> = files.iter().map(|f| npy(&format!("{name}_pixels_{}.npy", stem(f)))).collect();
        let got = m.embed_images(&Tensor::stack(&pixels, 0).unwrap()).unwrap().to_vec2::<f32>().unwrap();
        let want = rows(&format!("{name}_image_embeds.npy"));
        let single = rows(&format!("{name}_image_embeds_single.npy"));
        let (mut min_img, mut min_txt) = (1f64, 1f64);
        for (i, file) in files.iter().enumerate() {
            let c = cosine(&got[i], &want[i]);
            assert!(c >= COSINE_MIN, "{name} {file}: image cosine {c}");
            min_img = min_img.min(c);
            let one = m.embed_images(&pixels[i].unsqueeze(0).unwrap()).unwrap().to_vec2::<f32>().unwrap();
            assert!(max_abs(&one[0], &got[i]) < 1e-5, "{name} {file}: batched != single");
            assert!(cosine(&one[0], &single[i]) >= COSINE_MIN);
        }
        // Different pictures give clearly different rows (the check above is not vacuous).
        assert!(cosine(&want[0], &want[3]) < 0.99, "{name}: {}", cosine(&want[0], &want[3]));
        let ids: Vec<Vec<u32>> = t.captions.iter().map(|c| m.tokenizer().unwrap().encode(c).unwrap().ids).collect();
        let got = m.embed_texts(&ids).unwrap().to_vec2::<f32>().unwrap();
        let want = rows(&format!("{name}_text_embeds.npy"));
        for (i, caption) in t.captions.iter().enumerate() {
            let c = cosine(&got[i], &want[i]);
            assert!(c >= COSINE_MIN, "{name} {caption:?}: text cosine {c}");
            min_txt = min_txt.min(c);
            let one = m.embed_texts(&ids[i..i + 1]).unwrap().to_vec2::<f32>().unwrap();
            assert!(max_abs(&one[0], &got[i]) < 1e-5, "{name} {caption:?}: batched != single");
        }
        assert!(cosine(&want[0], &want[2]) < 0.99, "{name}: captions differ");
        // candle's generic ops, and those with the constants folded as on a GPU, agree too.
        let mut generic = m.clip.model.clone();
        generic.set_fused_cpu(false);
        let mut folded = generic.clone();
        folded.fold_constants().unwrap();
        for model in [&generic, &folded] {
            let img = model.embed_images(&Tensor::stack(&pixels, 0).unwrap()).unwrap().to_vec2::<f32>().unwrap();
            let txt = model.embed_texts(&ids).unwrap().to_vec2::<f32>().unwrap();
            let want_img = rows(&format!("{name}_image_embeds.npy"));
            for (i, row) in img.iter().enumerate() {
                assert!(cosine(row, &want_img[i]) >= COSINE_MIN, "{name}: generic/folded image {i}");
            }
            for (i, row) in txt.iter().enumerate() {
                assert!(cosine(row, &want[i]) >= COSINE_MIN, "{name}: generic/folded text {i}");
            }
        }
        eprintln!("{name}: min image cosine {min_img:.7}, min text cosine {min_txt:.7} to open_clip");
    }
}

/// Serves zero tensors of the shapes open_clip builds for a config, without allocating them.
struct Shapes(HashMap<String, Vec<usize>>);

impl candle_nn::var_builder::SimpleBackend for Shapes {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dt: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dt, dev)?;
        assert_eq!(t.shape(), &s);
        Ok(t)
    }
    fn get_unchecked(&self, name: &str, dt: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let shape = self.0.get(name).ok_or_else(|| candle_core::Error::Msg(format!("no {name}")))?;
        Tensor::zeros((), dt, dev)?.broadcast_as(shape.as_slice())
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

#[derive(serde::Deserialize)]
struct RealConfig {
    dir: String,
    parameters: u64,
    shapes: HashMap<String, Vec<usize>>,
}

/// The real checkpoints' configs (ViT-B/32, B/16, L/14, H/14; GELU and QuickGELU; shortest and
/// squash preprocessing) translate to towers that take exactly the tensors open_clip builds for
/// them, every one of them but the logit scale.
#[test]
fn real_openclip_configs_take_open_clips_shapes() {
    let real: HashMap<String, RealConfig> =
        serde_json::from_str(&std::fs::read_to_string(gold().join("real_configs.json")).unwrap()).unwrap();
    assert_eq!(real.len(), 6);
    for (repo, r) in &real {
        let cfg = OpenClipConfig::from_file(&root().join(&r.dir).join("open_clip_config.json")).unwrap();
        let c = &cfg.clip;
        let (v, t) = (&c.vision_config, &c.text_config);
        let layer = |h: u64, i: u64| 4 * h * h + 4 * h + 2 * h * i + i + h + 4 * h;
        let (vh, vi, th, ti) =
            (v.hidden_size as u64, v.intermediate_size as u64, t.hidden_size as u64, t.intermediate_size as u64);
        let grid = (v.image_size / v.patch_size) as u64;
        let params = 3 * vh * (v.patch_size as u64).pow(2)
            + vh
            + (grid * grid + 1) * vh
            + 4 * vh
            + v.num_hidden_layers as u64 * layer(vh, vi)
            + (t.vocab_size as u64 + t.max_position_embeddings as u64) * th
            + 2 * th
            + t.num_hidden_layers as u64 * layer(th, ti)
            + c.projection_dim as u64 * (vh + th)
            + 1;
        assert_eq!(params, r.parameters, "{repo}: parameter count");
        // Its registry entry agrees with the config.
        let known = sieve::model::registry::lookup(repo).unwrap_or_else(|| panic!("{repo} is not in the registry"));
        assert_eq!((known.embed_dim, known.image_size), (c.projection_dim, v.image_size), "{repo}");
        let weights = candle_nn::VarBuilder::from_backend(Box::new(Shapes(r.shapes.clone())), DType::F16, Device::Cpu);
        let model = sieve::model::openclip::model_over(weights, &cfg).unwrap_or_else(|e| panic!("{repo}: {e}"));
        assert_eq!(model.embed_dim(), c.projection_dim);
        let quick = repo.contains("DFN") || repo.contains("metaclip");
        assert_eq!(v.hidden_act == "quick_gelu", quick, "{repo}");
        let squash = cfg.preprocess.size == sieve::media::preprocess::SizeSpec::HeightWidth { height: 224, width: 224 };
        assert_eq!(!cfg.preprocess.do_center_crop && squash, repo.contains("DFN"), "{repo}: DFN squashes");
    }
}

/// Hostile or truncated open_clip folders fail with the file named, never a panic.
#[test]
fn broken_openclip_folders_say_what_is_wrong() {
    let src = root().join("models/tiny-openclip");
    let copy = |dir: &Path, skip: &str| {
        for f in ["open_clip_config.json", "open_clip_model.safetensors", "tokenizer.json"] {
            if f != skip {
                std::fs::copy(src.join(f), dir.join(f)).unwrap();
            }
        }
    };
    let try_load = |dir: &Path| {
        sieve::model::load(&ModelSpec::new(dir.display().to_string(), None), &Device::Cpu, DType::F32)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    copy(dir.path(), "tokenizer.json");
    let e = try_load(dir.path());
    assert!(e.contains("tokenizer.json"), "{e}");
    std::fs::copy(src.join("tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    let cfg = dir.path().join("open_clip_config.json");
    for (text, want) in [
        ("{", "open_clip_config.json"),
        (r#"{"model_cfg": 3}"#, "model_cfg"),
        (r#"{"model_cfg": {"embed_dim": 16, "vision_cfg": {"layers": "x"}}}"#, "ResNet"),
        // The config and the weights disagree: the tensor and both shapes are named.
        (
            r#"{"model_cfg": {"embed_dim": 16, "quick_gelu": true, "vision_cfg": {"image_size": 64, "layers": 2, "width": 48, "head_width": 8, "patch_size": 16}, "text_cfg": {"width": 16, "heads": 2, "layers": 2}}}"#,
            "visual.",
        ),
        (
            r#"{"model_cfg": {"embed_dim": 16, "vision_cfg": {"image_size": 64, "layers": 3, "width": 32, "head_width": 8, "patch_size": 16}, "text_cfg": {"width": 16, "heads": 2, "layers": 2}}}"#,
            "resblocks.2",
        ),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let e = try_load(dir.path());
        assert!(e.contains("open_clip") && e.contains(want), "{text}: {e}");
    }
    // Weights cut short.
    std::fs::copy(src.join("open_clip_config.json"), &cfg).unwrap();
    let w = std::fs::read(src.join("open_clip_model.safetensors")).unwrap();
    std::fs::write(dir.path().join("open_clip_model.safetensors"), &w[..w.len() / 2]).unwrap();
    let e = try_load(dir.path());
    assert!(e.contains("open_clip_model.safetensors"), "{e}");
    // No weights at all.
    std::fs::remove_file(dir.path().join("open_clip_model.safetensors")).unwrap();
    let e = try_load(dir.path());
    assert!(e.contains("open_clip_pytorch_model.bin"), "{e}");
}

/// A run with an OpenCLIP checkpoint goes through every stage and records the family; CLIP
/// runs do not (families.rs).
#[test]
fn an_openclip_run_records_its_family() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    for (file, caption) in [("photo.jpg", "a photo"), ("tall.jpg", "Don\u{2019}t &amp; tall"), ("wide.png", "wide")] {
        std::fs::copy(fixtures().join("images").join(file), input.join(file)).unwrap();
        std::fs::write(input.join(format!("{}.txt", stem(file))), caption).unwrap();
    }
    let out = dir.path().join("run");
    let o = crate::cli::sieve()
        .args(["run", "--quiet", "--model"])
        .arg(root().join("models/tiny-openclip"))
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(manifest["model"]["family"], "openclip");
    assert_eq!(manifest["embed_dim"], 16);
    assert_eq!(manifest["text_max_tokens"], 77);
    let pairs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("pairs_summary.json")).unwrap()).unwrap();
    assert_eq!(pairs["pairs"], 3, "{pairs}");
    assert!(out.join("report.html").is_file() && out.join("dedup/summary.json").is_file());
}

/// `--model ORG/NAME` finds an open_clip repo in the Hub cache (offline here): no
/// `config.json`, or timm's beside open_clip's; without its own tokenizer.json it takes the
/// CLIP BPE from openai/clip-vit-base-patch32's, and says so when that is missing too.
#[test]
fn openclip_repo_ids_resolve_through_the_hub_cache() {
    let home = tempfile::tempdir().unwrap();
    let put = |repo: &str, files: &[(&str, PathBuf)]| {
        let base = home.path().join("hub").join(format!("models--{}", repo.replace('/', "--")));
        std::fs::create_dir_all(base.join("refs")).unwrap();
        std::fs::write(base.join("refs/main"), "0123abcd").unwrap();
        let snap = base.join("snapshots/0123abcd");
        std::fs::create_dir_all(&snap).unwrap();
        for (name, from) in files {
            std::fs::copy(from, snap.join(name)).unwrap();
        }
    };
    let src = root().join("models/tiny-openclip");
    let timm = home.path().join("timm-config.json");
    std::fs::write(&timm, r#"{"architecture": "vit_base_patch16_clip_224", "num_classes": 16}"#).unwrap();
    put(
        "sieve-test/tiny-openclip",
        &[
            ("open_clip_config.json", src.join("open_clip_config.json")),
            ("open_clip_model.safetensors", src.join("open_clip_model.safetensors")),
            ("config.json", timm),
        ],
    );
    let embed = |out: &str| {
        crate::cli::sieve()
            .args(["embed", "--quiet", "--model", "sieve-test/tiny-openclip", "--device", "cpu"])
            .arg(fixtures().join("images"))
            .arg("--out")
            .arg(home.path().join(out))
            .env("HF_HOME", home.path())
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap()
    };
    let o = embed("r1");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("tokenizer.json"), "{err}");
    put("openai/clip-vit-base-patch32", &[("tokenizer.json", src.join("tokenizer.json"))]);
    let o = embed("r2");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.path().join("r2/run.json")).unwrap()).unwrap();
    assert_eq!(manifest["model"]["family"], "openclip");
    assert_eq!(manifest["model"]["id"], "sieve-test/tiny-openclip");
}

/// `custom_text` checkpoints (open_clip's `CustomTextCLIP`) keep the text tower under `text.`:
/// the same weights renamed so give the same embeddings.
#[test]
fn custom_text_checkpoints_load_their_text_tower() {
    let src = root().join("models/tiny-openclip");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("open_clip_config.json")).unwrap()).unwrap();
    cfg["model_cfg"]["custom_text"] = true.into();
    std::fs::write(dir.path().join("open_clip_config.json"), cfg.to_string()).unwrap();
    let tensors = candle_core::safetensors::load(src.join("open_clip_model.safetensors"), &Device::Cpu).unwrap();
    let renamed: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| if k.starts_with("visual.") || k == "logit_scale" { (k, v) } else { (format!("text.{k}"), v) })
        .collect();
    assert!(renamed.contains_key("text.text_projection") && renamed.contains_key("text.token_embedding.weight"));
    candle_core::safetensors::save(&renamed, dir.path().join("open_clip_model.safetensors")).unwrap();
    let spec = ModelSpec::new(dir.path().display().to_string(), None);
    let custom = sieve::model::load(&spec, &Device::Cpu, DType::F32).unwrap();
    let plain = load("tiny-openclip");
    let ids = vec![plain.tokenizer().unwrap().encode("a photo of a cat").unwrap().ids];
    let (a, b) = (
        custom.embed_texts(&ids).unwrap().to_vec2::<f32>().unwrap(),
        plain.embed_texts(&ids).unwrap().to_vec2::<f32>().unwrap(),
    );
    assert_eq!(a, b);
    // Without the flag the renamed tower is not found, and the error names the tensor.
    cfg["model_cfg"]["custom_text"] = false.into();
    std::fs::write(dir.path().join("open_clip_config.json"), cfg.to_string()).unwrap();
    let e = sieve::model::load(&spec, &Device::Cpu, DType::F32).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("token_embedding.weight"), "{e}");
}

/// open_clip's preprocessing keys are recorded in an OpenCLIP run's run.json and absent from a
/// CLIP run's, whose bytes stay what they were before OpenCLIP existed.
#[test]
fn torchvision_preprocess_keys_stay_out_of_clip_runs() {
    let dir = tempfile::tempdir().unwrap();
    for (model, want) in [(tiny_model_dir(), false), (root().join("models/tiny-openclip-gelu"), true)] {
        let out = dir.path().join(model.file_name().unwrap());
        let o = crate::cli::sieve()
            .args(["embed", "--quiet", "--model"])
            .arg(&model)
            .arg(fixtures().join("images"))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = std::fs::read_to_string(out.join("run.json")).unwrap();
        for key in ["crop_round_half_even", "resize_longest"] {
            assert_eq!(text.contains(key), want, "{}: {key}", model.display());
        }
    }
}
