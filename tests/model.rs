//! Model loading: config.json defaults, folder vs Hub resolution and its errors, the registry.

use sieve::device::DeviceSpec;
use sieve::media::preprocess::PreprocessorConfig;
use sieve::media::preprocess::SizeSpec;
use sieve::model::clip::ClipConfig;
use sieve::model::{registry, ModelFiles, ModelSpec};

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
fn batch_size_auto_fits_device_memory() {
    use sieve::device::{auto_gpu_batch, resolve_batch_size, BatchSize};
    use sieve::model::clip::bytes_per_item;
    assert_eq!("auto".parse::<BatchSize>().unwrap(), BatchSize::Auto);
    assert_eq!("96".parse::<BatchSize>().unwrap(), BatchSize::Fixed(96));
    assert!("0".parse::<BatchSize>().is_err() && "big".parse::<BatchSize>().is_err());
    let cfg = ClipConfig::from_file(std::path::Path::new("models/clip-vit-base-patch32/config.json")).unwrap();
    let per = bytes_per_item(&cfg, candle_core::DType::F16);
    // ViT-B/32: 50 tokens × (6·768 + 2·3072) f16 values, attention 3 × 12 × 50², pixels 6 B × 3·224².
    assert_eq!(per, 2 * (50 * (6 * 768 + 2 * 3072) + 3 * 12 * 50 * 50) + 6 * 3 * 224 * 224);
    assert_eq!(auto_gpu_batch(80 << 30, per), 512, "an 80 GB card takes the cap");
    let b = auto_gpu_batch(300 << 20, per);
    assert!(b.is_multiple_of(32) && b as u64 * per <= 150 << 20 && (b as u64 + 32) * per > 150 << 20, "{b}");
    assert_eq!(auto_gpu_batch(10 << 20, per), 2, "below 32 it still fits what it can");
    assert_eq!(auto_gpu_batch(1, per), 1);
    let cpu = candle_core::Device::Cpu;
    assert_eq!(resolve_batch_size(BatchSize::Auto, &cpu, bytes_per_item(&cfg, candle_core::DType::F32)), 64);
    assert_eq!(resolve_batch_size(BatchSize::Fixed(7), &cpu, bytes_per_item(&cfg, candle_core::DType::F32)), 7);
}

#[test]
fn host_pixel_buffers_fill_pack_and_upload_in_order() {
    use sieve::device::HostPixels;
    use sieve::media::preprocess::PixelsMut;
    let cpu = candle_core::Device::Cpu;
    for dtype in [candle_core::DType::F32, candle_core::DType::F16] {
        // A GPU model's buffer is f16; on the CPU device the f16 path is exercised directly.
        let mut buf = match dtype {
            candle_core::DType::F32 => HostPixels::new(&cpu, dtype, 4 * 6),
            _ => HostPixels::F16(vec![half::f16::ZERO; 4 * 6]),
        };
        // Three items of 1×2×3 values; the middle one "fails to decode".
        let ok = buf
            .fill(3, 6, |i, out| {
                let v = |j: usize| (10 * i + j) as f32;
                match out {
                    PixelsMut::F32(o) => o.iter_mut().enumerate().for_each(|(j, x)| *x = v(j)),
                    PixelsMut::F16(o) => o.iter_mut().enumerate().for_each(|(j, x)| *x = half::f16::from_f32(v(j))),
                }
                i != 1
            })
            .unwrap();
        assert_eq!(ok, vec![true, false, true]);
        assert_eq!(buf.compact(&ok, 6).unwrap(), 2);
        let t = buf.to_tensor(2, (1, 2, 3), &cpu).unwrap();
        assert_eq!(t.dims(), &[2, 1, 2, 3]);
        let got = t.to_dtype(candle_core::DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want: Vec<f32> = [0, 1, 2, 3, 4, 5, 20, 21, 22, 23, 24, 25].iter().map(|&v| v as f32).collect();
        assert_eq!(got, want, "{dtype:?}");
    }
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
    let stock = sieve::model::clip::stock::stock_model(vb, clip.model.config()).unwrap();
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

/// Embeds the golden images and captions with both models and checks they agree within `tol`
/// (max-abs per feature). A padded batch of captions of different lengths exercises the
/// causal path.
fn assert_same_embeddings(a: &sieve::model::Clip, b: &sieve::model::Clip, tol: f32, what: &str) {
    use candle_core::Tensor;
    let g = golden();
    let pixels: Vec<Tensor> = g.images.iter().map(|f| golden_pixels(stem(f))).collect();
    let pixels = Tensor::stack(&pixels, 0).unwrap();
    let ids: Vec<Vec<u32>> = g.captions.iter().map(|c| a.tokenizer.encode(c).unwrap().ids).collect();
    let images = |c: &sieve::model::Clip| c.model.embed_images(&pixels).unwrap().to_vec2::<f32>().unwrap();
    let texts = |c: &sieve::model::Clip| c.model.embed_texts(&ids).unwrap().to_vec2::<f32>().unwrap();
    for (tower, x, y) in [("image", images(a), images(b)), ("text", texts(a), texts(b))] {
        for (p, q) in x.iter().zip(&y) {
            assert!(max_abs(p, q) < tol, "{tower}: {what} max-abs {}", max_abs(p, q));
        }
    }
}

#[test]
fn fused_cpu_kernels_equal_generic_candle_ops() {
    let mut generic = tiny_clip();
    generic.model.set_fused_cpu(false);
    assert_same_embeddings(&tiny_clip(), &generic, 1e-5, "fused vs generic");
}

#[test]
fn folded_constants_the_gpu_layout_equal_the_reference_maths() {
    // GPUs run the generic path with the attention scale and QuickGELU's 1.702 folded into the
    // weights; here the same code runs on the CPU in f32 against the fused kernels.
    let mut folded = tiny_clip();
    folded.model.fold_constants().unwrap();
    assert_same_embeddings(&tiny_clip(), &folded, 1e-4, "folded vs reference");
}

/// Problems with a model's configuration are model errors (exit 1), not usage errors (exit 2).
#[test]
fn model_config_problems_are_model_errors() {
    use sieve::model::Activation;
    assert!(matches!(Activation::parse("swish"), Err(sieve::Error::Model { .. })));
    assert_eq!(Activation::parse("quick_gelu").unwrap(), Activation::QuickGelu);
}
