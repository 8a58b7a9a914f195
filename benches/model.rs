//! Image and text tower throughput at ViT-B/32 size, DINOv2's ViT-B/14 image tower at 224 px,
//! and SigLIP's base towers (ViT-B/16 at 224 px, 64 text positions), with random weights on the
//! CPU. Per-FLOP speed of the families: divide each throughput by the tower's FLOPs per image
//! (printed by this bench).
//! `cargo bench --bench model`. For a ratio against PyTorch on the same machine, run
//! `scripts/bench_vs_torch.py`.

use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sieve::model::clip::ClipConfig;
use sieve::model::dinov2::Dinov2Config;
use sieve::model::siglip::SiglipConfig;
use sieve::testing::{random_dinov2, random_inputs, random_model, random_siglip};

const BATCH: usize = 8;

fn bench(c: &mut Criterion) {
    let config = ClipConfig::from_file(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/clip-vit-base-patch32/config.json"
    )))
    .expect("ViT-B/32 config");
    let device = Device::Cpu;
    let model = random_model(&config, &device, DType::F32, 0).unwrap();
    let (pixels, tokens) = random_inputs(&config, BATCH, 1).unwrap();
    let mut g = c.benchmark_group("cpu/vit-b-32");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function(format!("image-tower/batch{BATCH}"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                // to_vec2 copies to the host, which also synchronises a GPU device.
                model.embed_images(&pixels).unwrap().to_vec2::<f32>().unwrap();
            }
            start.elapsed()
        })
    });
    g.bench_function(format!("text-tower/batch{BATCH}-len77"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                model.embed_texts(&tokens).unwrap().to_vec2::<f32>().unwrap();
            }
            start.elapsed()
        })
    });
    g.finish();

    // DINOv2 ViT-B/14 (facebook/dinov2-base's shape: 518 px position grid, 224 px crops).
    let dino = Dinov2Config { image_size: 518, ..Dinov2Config::default() };
    let dmodel = random_dinov2(&dino, 224, 0).unwrap();
    let dpixels = pixels.clone();
    let mut g = c.benchmark_group("cpu/dinov2-b-14");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function(format!("image-tower/batch{BATCH}"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                dmodel.embed_images(&dpixels).unwrap().to_vec2::<f32>().unwrap();
            }
            start.elapsed()
        })
    });
    g.finish();

    // SigLIP base (google/siglip-base-patch16-224's shape: transformers' SiglipConfig defaults).
    let sig = SiglipConfig::default();
    let smodel = random_siglip(&sig, 0).unwrap();
    let s = sig.vision_config.image_size;
    let spixels = candle_core::Tensor::randn(0f32, 1.0, (BATCH, 3, s, s), &device).unwrap();
    let stokens: Vec<Vec<u32>> =
        (0..BATCH).map(|i| (0..64).map(|j| ((i * 131 + j * 7) % 32000) as u32).collect()).collect();
    let mut g = c.benchmark_group("cpu/siglip-b-16");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function(format!("image-tower/batch{BATCH}"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                smodel.embed_images(&spixels).unwrap().to_vec2::<f32>().unwrap();
            }
            start.elapsed()
        })
    });
    g.bench_function(format!("text-tower/batch{BATCH}-len64"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                smodel.embed_texts(&stokens).unwrap().to_vec2::<f32>().unwrap();
            }
            start.elapsed()
        })
    });
    g.finish();
    // Multiply-adds ×2 per image of a ViT: per layer 4h² (Q, K, V, out) + 2·h·inter (MLP) per
    // token and 2·tokens·h for attention, plus the patch embedding.
    let flops = |tokens: usize, h: usize, inter: usize, layers: usize, patch_in: usize| {
        2.0 * (layers * (tokens * (4 * h * h + 2 * h * inter) + 2 * tokens * tokens * h) + (tokens - 1) * patch_in * h)
            as f64
    };
    let v = &config.vision_config;
    let clip_tokens = (v.image_size / v.patch_size).pow(2) + 1;
    // SigLIP: no class token (every layer sees the 196 patch tokens), and the pooling head (one
    // query; K/V over the tokens; out projection and MLP on one row).
    let sv = &sig.vision_config;
    let (st, sh, si) = ((sv.image_size / sv.patch_size).pow(2), sv.hidden_size, sv.intermediate_size);
    let siglip = 2.0
        * (sv.num_hidden_layers * (st * (4 * sh * sh + 2 * sh * si) + 2 * st * st * sh)
            + st * 3 * sv.patch_size * sv.patch_size * sh
            + 2 * st * sh * sh
            + 2 * st * sh
            + 2 * sh * sh
            + 2 * sh * si) as f64;
    eprintln!(
        "GFLOPs per image: clip vit-b-32 image tower {:.2}, dinov2 vit-b-14 at 224 {:.2}, siglip b-16 image tower {:.2}",
        flops(clip_tokens, v.hidden_size, v.intermediate_size, v.num_hidden_layers, 3 * v.patch_size * v.patch_size)
            / 1e9,
        flops(257, 768, 3072, 12, 3 * 14 * 14) / 1e9,
        siglip / 1e9
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
