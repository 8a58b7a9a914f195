//! Image and text tower throughput at ViT-B/32 size with random weights on the CPU.
//! `cargo bench --bench model`. For a ratio against PyTorch on the same machine, run
//! `scripts/bench_vs_torch.py`.

use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sieve::model::clip::ClipConfig;
use sieve::testing::{random_inputs, random_model};

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
}

criterion_group!(benches, bench);
criterion_main!(benches);
