//! Scoring and diversity on synthetic 512-d embeddings, on the CPU: 1,000,000 rows by default
//! (`SIEVE_BENCH_ROWS`), the rank test on 100,000 (`SIEVE_BENCH_RANK_ROWS`; at a million rows
//! one iteration takes about a minute on 2 cores, so ten samples would take ten;
//! `cargo run --release --example time_analyze -- 1000000 rank` times it once). Names are
//! `cpu/analyze/...`:
//!
//! - score/threshold: every pair's cosine, the bottom 1% flagged low_score, and their repair
//!   suggestions (k-means over the captions, then each flagged image searches its nearest
//!   clusters);
//! - score/rank-top10: the same plus the rank test (every image against the caption index and
//!   every caption against the image index, top 10);
//! - diversity/image: one embedding's full metrics (k-means with 100 clusters, the d×d Gram
//!   matrix and its eigenvalues, cluster entropy and coverage, nearest-neighbour similarity of
//!   10,000 sampled queries).

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sieve::analyze::common::{Embedded, SearchOptions};
use sieve::analyze::diversity::{self, Clustered, MeasureParams};
use sieve::analyze::pairs::{bottom_percent_cut, score_pairs};
use sieve::index::synthetic::planted_pairs;

const DIM: usize = 512;

fn pairs(n: usize) -> Embedded {
    let (image, text) = planted_pairs(n, DIM);
    Embedded { rows: (0..n).collect(), image, text, has_caption: vec![true; n] }
}

fn bench(c: &mut Criterion) {
    let rows = |var: &str, default: usize| std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let n = rows("SIEVE_BENCH_ROWS", 1_000_000);
    let n_rank = rows("SIEVE_BENCH_RANK_ROWS", 100_000);
    let items = pairs(n);
    let rank_items = pairs(n_rank);
    let cpu = Device::Cpu;
    let search = SearchOptions::default();
    let bottom_1_percent = |cos: &[f32]| bottom_percent_cut(cos, 1.0);

    let mut g = c.benchmark_group("cpu/analyze");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(format!("score/threshold/{n}x{DIM}"), |b| {
        b.iter(|| score_pairs(&items, bottom_1_percent, 0, &search, &cpu).unwrap())
    });
    g.throughput(Throughput::Elements(n_rank as u64));
    g.bench_function(format!("score/rank-top10/{n_rank}x{DIM}"), |b| {
        b.iter(|| score_pairs(&rank_items, bottom_1_percent, 10, &search, &cpu).unwrap())
    });
    g.throughput(Throughput::Elements(n as u64));
    let p = MeasureParams { min_share: 0.1, nn_queries: 10_000, probes: 3, seed: 0 };
    g.bench_function(format!("diversity/image/{n}x{DIM}"), |b| {
        b.iter(|| {
            let c = Clustered::new(items.image.clone(), diversity::DEFAULT_CLUSTERS, 0, &cpu).unwrap();
            diversity::measure(&c, None, None, &p, &cpu).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
