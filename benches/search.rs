//! Neighbour search and grouping at 100k vectors (512-d, planted near-duplicates), on the CPU.
//! `cargo bench --bench search`. Names are `cpu/search/...` and `cpu/grouping/...`.
//!
//! - exact: 1,000 queries against all 100k vectors (a full exact self-join is 100× that; see
//!   scripts/bench_vs_faiss.py for whole-corpus timings);
//! - hnsw: the same 1,000 queries against a prebuilt graph, and building the graph;
//! - clusters: the whole SemDeDup-style self-join (k-means + exact search per cluster);
//! - grouping: components and star over the exact pairs of the 100k vectors.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sieve::analyze::groups::{group, Grouping};
use sieve::index::hnsw::HnswParams;
use sieve::index::kmeans::KMeansParams;
use sieve::index::synthetic::planted;
use sieve::index::{ClusteredIndex, ExactIndex, HnswIndex, Matrix, NeighbourIndex};

const N: usize = 100_000;
const DIM: usize = 512;
const T: f32 = 0.95;

fn bench(c: &mut Criterion) {
    let data = planted(N, DIM, 0.1, 0);
    let queries = Matrix::gather(data.as_slice(), DIM, &(0..1000).map(|i| i * (N / 1000)).collect::<Vec<_>>());
    let cpu = candle_core::Device::Cpu;

    let mut g = c.benchmark_group("cpu/search");
    g.sample_size(10);
    g.throughput(Throughput::Elements(queries.rows() as u64));
    let exact = ExactIndex::new(&data, cpu.clone());
    g.bench_function("exact/1k-queries-x-100k", |b| b.iter(|| exact.range_search(&queries, T).unwrap()));
    let hnsw = HnswIndex::build(&data, HnswParams::default());
    g.bench_function("hnsw/1k-queries-x-100k", |b| b.iter(|| hnsw.range_search(&queries, T).unwrap()));
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("hnsw/build-100k", |b| b.iter(|| HnswIndex::build(&data, HnswParams::default())));
    g.bench_function("clusters/self-join-100k-k100", |b| {
        b.iter(|| {
            ClusteredIndex::build(&data, KMeansParams::new(N / 1000, 0), 0.05, cpu.clone())
                .unwrap()
                .self_pairs(T)
                .unwrap()
        })
    });
    g.finish();

    let pairs =
        ClusteredIndex::build(&data, KMeansParams::new(N / 1000, 0), 0.05, cpu.clone()).unwrap().self_pairs(T).unwrap();
    let rank: Vec<u32> = (0..N as u32).collect();
    let mut g = c.benchmark_group("cpu/grouping");
    g.throughput(Throughput::Elements(N as u64));
    for grouping in [Grouping::Components, Grouping::Star] {
        g.bench_function(format!("{}/100k-{}-pairs", grouping.as_str(), pairs.len()), |b| {
            b.iter(|| group(N, &pairs, &rank, grouping))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
