//! Scoring and diversity on 1,000,000 synthetic 512-d pairs (`SIEVE_BENCH_ROWS`) on the CPU,
//! 1% of them with a planted mismatched caption. Names are `cpu/analyze/...`:
//!
//! - score/threshold: every pair's cosine, the bottom 1% flagged low_score, and their repair
//!   suggestions (k-means over the captions, then each flagged image searches its nearest
//!   clusters);
//! - score/rank-top10: the same plus the rank test (every image against the caption index, and
//!   the captions whose own image failed it against the image index, top 10);
//! - diversity/image: one embedding's full metrics (k-means with 100 clusters, the d×d Gram
//!   matrix and its eigenvalues, cluster entropy and coverage, nearest-neighbour similarity of
//!   10,000 sampled queries);
//! - diversity/all-embeddings: what `sieve diversity` measures for a run: images, captions and
//!   the joint 1024-d embedding.
//!
//! A full run takes about a quarter of an hour on 2 cores (ten samples each);
//! `cargo run --release --example time_analyze` times one of each and checks the rank test
//! against exact search.

use candle_core::Device;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sieve::analyze::common::{Embedded, SearchOptions};
use sieve::analyze::diversity::{self, Clustered, MeasureParams};
use sieve::analyze::pairs::{bottom_percent_cut, score_pairs};
use sieve::index::synthetic::planted_pairs_mismatched;

const DIM: usize = 512;

fn bench(c: &mut Criterion) {
    let n = std::env::var("SIEVE_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let (image, text, _) = planted_pairs_mismatched(n, DIM, 0.01);
    let items = Embedded { rows: (0..n).collect(), image, text, has_caption: vec![true; n] };
    let cpu = Device::Cpu;
    let search = SearchOptions::default();
    let bottom_1_percent = |cos: &[f32]| bottom_percent_cut(cos, 1.0);
    let p = MeasureParams { min_share: 0.1, nn_queries: 10_000, probes: 3, seed: 0 };

    let mut g = c.benchmark_group("cpu/analyze");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(format!("score/threshold/{n}x{DIM}"), |b| {
        b.iter(|| score_pairs(&items, bottom_1_percent, 0, &search, &cpu).unwrap())
    });
    g.bench_function(format!("score/rank-top10/{n}x{DIM}"), |b| {
        b.iter(|| score_pairs(&items, bottom_1_percent, 10, &search, &cpu).unwrap())
    });
    g.bench_function(format!("diversity/image/{n}x{DIM}"), |b| {
        b.iter_batched(
            || items.image.clone(),
            |image| {
                let c = Clustered::new(image, diversity::DEFAULT_CLUSTERS, 0, &cpu).unwrap();
                diversity::measure(&c, None, None, &p, &cpu).unwrap()
            },
            BatchSize::PerIteration,
        )
    });
    let all: Vec<usize> = (0..n).collect();
    g.bench_function(format!("diversity/all-embeddings/{n}x{DIM}"), |b| {
        b.iter_batched(
            || (items.image.clone(), items.text.clone()),
            |(image, text)| {
                diversity::measure_embeddings(image, text, &all, &[], &[], diversity::DEFAULT_CLUSTERS, 0, &p, &cpu)
                    .unwrap()
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
