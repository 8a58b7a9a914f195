//! Preprocessing throughput on the CPU: decode + CLIP preprocess of real fixture files, and the
//! resize/crop/normalise step alone. `cargo bench --bench preprocess`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sieve::media::decode::{decode, Limits};
use sieve::media::preprocess::Preprocessor;
use sieve::media::preprocess::PreprocessorConfig;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/images/{name}", env!("CARGO_MANIFEST_DIR"))).expect("fixture exists")
}

fn bench(c: &mut Criterion) {
    let pre = Preprocessor::new(PreprocessorConfig::default());
    let mut g = c.benchmark_group("cpu/preprocess");
    g.throughput(Throughput::Elements(1));
    for name in ["photo.jpg", "wide.png"] {
        let bytes = fixture(name);
        let mut out = vec![0f32; pre.output_len()];
        g.bench_function(format!("decode+preprocess/{name}"), |b| {
            b.iter(|| {
                let d = decode(&bytes, &Limits::default()).unwrap();
                pre.preprocess_into(&d.rgb, &mut out);
            })
        });
        let decoded = decode(&bytes, &Limits::default()).unwrap();
        g.bench_function(format!("preprocess-only/{name}"), |b| b.iter(|| pre.preprocess_into(&decoded.rgb, &mut out)));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
