//! Model loading: config.json defaults, folder vs Hub resolution and its errors, the registry.

use sieve::device::DeviceSpec;
use sieve::model::config::{ClipConfig, SizeSpec};
use sieve::model::{registry, ModelFiles, ModelSpec, PreprocessorConfig};

use crate::util::*;

#[test]
fn empty_config_takes_transformers_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.json");
    std::fs::write(&p, "{}").unwrap();
    let c = ClipConfig::from_file(&p).unwrap();
    assert_eq!(c.vision_config.patch_size, 32);
    assert_eq!(c.vision_config.hidden_size, 768);
    assert_eq!(c.text_config.hidden_size, 512);
    assert_eq!(c.text_config.max_position_embeddings, 77);
    assert_eq!(c.projection_dim, 512);
}

#[test]
fn large_config_is_read_not_preset() {
    // ViT-L/14-336's distinguishing keys; everything else default.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.json");
    std::fs::write(
        &p,
        r#"{"projection_dim": 768,
            "text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12},
            "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                              "num_attention_heads": 16, "image_size": 336, "patch_size": 14}}"#,
    )
    .unwrap();
    let c = ClipConfig::from_file(&p).unwrap();
    assert_eq!(
        (c.vision_config.image_size, c.vision_config.patch_size, c.vision_config.num_hidden_layers),
        (336, 14, 24)
    );
    assert_eq!(c.projection_dim, 768);
}

#[test]
fn inconsistent_config_is_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.json");
    std::fs::write(&p, r#"{"vision_config": {"hidden_size": 100, "num_attention_heads": 12}}"#).unwrap();
    let e = ClipConfig::from_file(&p).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("divisible"), "{e}");
}

#[test]
fn old_style_preprocessor_sizes_parse() {
    // Older preprocessor_config.json files give sizes as bare numbers.
    let c: PreprocessorConfig = serde_json::from_str(r#"{"size": 224, "crop_size": 224}"#).unwrap();
    assert_eq!(c.size, SizeSpec::Square(224));
    assert_eq!(c.output_size(), (224, 224));
    let p = sieve::media::preprocess::Preprocessor::new(c);
    assert_eq!(p.resize_target(500, 375), (298, 224));
    assert_eq!(p.resize_target(200, 800), (224, 896));
}

#[test]
fn tiny_model_loads_from_its_folder() {
    let clip = tiny_clip();
    assert_eq!(clip.model.embed_dim(), 16);
    assert_eq!(clip.info.revision, None);
    assert_eq!(clip.info.weights_sha256.len(), 64);
}

#[test]
fn unreachable_model_says_how_to_use_a_local_folder() {
    let home = tempfile::tempdir().unwrap();
    // Process-wide env: only this test reads HF_HOME/HF_HUB_OFFLINE in this binary.
    std::env::set_var("HF_HOME", home.path());
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let e = ModelFiles::resolve(&ModelSpec::new("no-such-org/no-such-clip", None)).unwrap_err().to_string();
    assert!(e.contains("no-such-org/no-such-clip@main"), "{e}");
    assert!(e.contains("HF_HUB_OFFLINE"), "{e}");
    assert!(e.contains("--model /path/to/folder"), "{e}");
}

#[test]
fn folder_missing_a_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "preprocessor_config.json", "model.safetensors"] {
        std::fs::copy(tiny_model_dir().join(f), dir.path().join(f)).unwrap();
    }
    let e = ModelFiles::resolve(&ModelSpec::new(dir.path().display().to_string(), None)).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
}

#[test]
fn weights_that_do_not_fit_the_config_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["preprocessor_config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(tiny_model_dir().join(f), dir.path().join(f)).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny_model_dir().join("config.json")).unwrap()).unwrap();
    cfg["vision_config"]["hidden_size"] = 64.into();
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let spec = ModelSpec::new(dir.path().display().to_string(), None);
    let e =
        sieve::model::Clip::load(&spec, &candle_core::Device::Cpu, candle_core::DType::F32).unwrap_err().to_string();
    assert!(e.contains("model.safetensors") && e.contains("do not fit"), "{e}");
}

#[test]
fn text_pooling_follows_transformers() {
    let clip = tiny_clip();
    // The tiny model keeps OpenAI's legacy eos_token_id = 2: pool at the highest id.
    assert_eq!(clip.model.config().text_config.eos_token_id, 2);
    assert_eq!(clip.model.text_pool_position(&[49406, 320, 49407, 49407]), 2);
}

#[test]
fn registry_parses_and_has_the_default() {
    let models = registry::known_models();
    assert!(models.iter().any(|m| m.id == sieve::model::DEFAULT_MODEL));
    assert_eq!(registry::default_revision("openai/clip-vit-base-patch32"), "main");
}

#[test]
fn device_specs_parse() {
    assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
    assert_eq!("cuda:1".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(1));
    assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
    assert!("gpu".parse::<DeviceSpec>().is_err());
    assert!("cuda:x".parse::<DeviceSpec>().is_err());
    assert!(sieve::device::open(DeviceSpec::Cpu).unwrap().is_cpu());
}

#[test]
fn agrees_with_candle_transformers_stock_clip() {
    // A second, independent implementation of the same maths (convolution patch embedding,
    // separate Q/K/V, argmax pooling) on the same weights.
    use candle_core::{DType, Device, Tensor};
    let clip = tiny_clip();
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[tiny_model_dir().join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
    }
    .unwrap();
    let stock = sieve::model::stock::stock_model(vb, clip.model.config()).unwrap();
    let g = golden();
    let pixels: Vec<Tensor> = g.images.iter().map(|f| golden_pixels(stem(f))).collect();
    let pixels = Tensor::stack(&pixels, 0).unwrap();
    let ours = clip.model.embed_images(&pixels).unwrap().to_vec2::<f32>().unwrap();
    let theirs = stock.get_image_features(&pixels).unwrap().to_vec2::<f32>().unwrap();
    for (a, b) in ours.iter().zip(&theirs) {
        assert!(max_abs(a, b) < 1e-4, "image features differ: {}", max_abs(a, b));
    }
    // One caption at a time: the stock model has no padding mask of its own.
    for caption in &g.captions {
        let ids = clip.tokenizer.encode(caption).unwrap().ids;
        let ours = clip.model.embed_texts(std::slice::from_ref(&ids)).unwrap().to_vec2::<f32>().unwrap();
        let t = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let theirs = stock.get_text_features(&t).unwrap().to_vec2::<f32>().unwrap();
        assert!(max_abs(&ours[0], &theirs[0]) < 1e-4, "text features differ for {caption:?}");
    }
}

#[test]
fn fused_cpu_kernels_equal_generic_candle_ops() {
    use candle_core::Tensor;
    let g = golden();
    let fused = tiny_clip();
    let mut generic = tiny_clip();
    generic.model.set_fused_cpu(false);
    let pixels: Vec<Tensor> = g.images.iter().map(|f| golden_pixels(stem(f))).collect();
    let pixels = Tensor::stack(&pixels, 0).unwrap();
    let a = fused.model.embed_images(&pixels).unwrap().to_vec2::<f32>().unwrap();
    let b = generic.model.embed_images(&pixels).unwrap().to_vec2::<f32>().unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!(max_abs(x, y) < 1e-5, "image: fused vs generic max-abs {}", max_abs(x, y));
    }
    // A padded batch of captions of different lengths exercises the causal path.
    let ids: Vec<Vec<u32>> = g.captions.iter().map(|c| fused.tokenizer.encode(c).unwrap().ids).collect();
    let a = fused.model.embed_texts(&ids).unwrap().to_vec2::<f32>().unwrap();
    let b = generic.model.embed_texts(&ids).unwrap().to_vec2::<f32>().unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!(max_abs(x, y) < 1e-5, "text: fused vs generic max-abs {}", max_abs(x, y));
    }
}
