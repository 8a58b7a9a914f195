//! `sieve audit` and `sieve compare` on the CPU, on the synthetic 512-d pairs of
//! `benches/analyze.rs` (1,000,000 of them by default, `SIEVE_BENCH_ROWS`; 1% with a planted
//! mismatched caption). Names are `cpu/curate/...`; only the computation is timed, not reading
//! the run or writing `audit.parquet`, `compare.json` and the pages:
//!
//! - audit/assign-8: every image of the run assigned to one group of 8 concept directions (unit
//!   rows) at the default margin (`audit::DEFAULT_MARGIN`), in parallel over the items, as
//!   `audit::audit_with` does for each side and group (the caption side and each further group
//!   cost the same again);
//! - compare/...: what `sieve compare` does for one modality on two default-size samples
//!   (`compare::DEFAULT_SAMPLE`, 10,000 items each; A drawn from the images, B from the
//!   captions, so there is a shift to find), with `compare()`'s defaults:
//!   - cmmd: the CMMD of the two samples (`cmmd::cmmd`, three tiled kernel sums);
//!   - permutation-test: each side sub-sampled to `cmmd::PERMUTATION_SAMPLE` (2,000) items, the
//!     pooled kernel matrix and `cmmd::DEFAULT_PERMUTATIONS` (200) relabellings;
//!   - coverage: each side's nearest item on the other (exact search both ways) and both
//!     coverages at the model's image threshold;
//!   - regions: k-means of the 20,000 pooled items into `regions::DEFAULT_CLUSTERS` (100) and
//!     both sides' assignment;
//!   - modality: all of the above in sequence, one modality of `sieve compare` less reading the
//!     samples (a run with captions compares two modalities: twice this).
//!
//! Drawing the samples (`compare::sample`) reads parquet parts and is not timed here. The whole
//! file takes about 6 minutes on 2 cores (ten samples each, making the data included);
//! docs/performance.md has the figures.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;
use sieve::audit::assign::assign;
use sieve::audit::DEFAULT_MARGIN;
use sieve::compare::{cmmd, coverage, regions, CompareOptions, DEFAULT_SAMPLE};
use sieve::index::synthetic::planted_pairs_mismatched;
use sieve::index::Matrix;
use sieve::model::registry;

const DIM: usize = 512;
/// Concepts in the audited group.
const CONCEPTS: usize = 8;
/// The model whose image threshold the coverage uses (the default model's).
const MODEL: &str = "openai/clip-vit-base-patch32";

/// A seeded sample of at most `n` rows of `m`, ascending (as `compare::sample` draws one).
fn sample(m: &Matrix, n: usize, seed: u64) -> Matrix {
    if m.rows() <= n {
        return m.clone();
    }
    let mut idx = rand::seq::index::sample(&mut StdRng::seed_from_u64(seed), m.rows(), n).into_vec();
    idx.sort_unstable();
    Matrix::gather(m.as_slice(), m.dim(), &idx)
}

/// The permutation test as `compare` runs it: each side sub-sampled to the cap first.
fn permutation_test(x: &Matrix, y: &Matrix, opts: &CompareOptions) -> cmmd::PermutationTest {
    let (sx, sy) =
        (sample(x, cmmd::PERMUTATION_SAMPLE, opts.seed ^ 1), sample(y, cmmd::PERMUTATION_SAMPLE, opts.seed ^ 1));
    cmmd::permutation_test(&sx, &sy, opts.permutations, opts.seed)
}

fn coverage_both_ways(x: &Matrix, y: &Matrix, threshold: f32) -> (coverage::Coverage, coverage::Coverage) {
    let near_b = coverage::nearest(y, x);
    let near_a = coverage::nearest(x, y);
    (coverage::coverage(&near_b, threshold), coverage::coverage(&near_a, threshold))
}

fn regions(x: &Matrix, y: &Matrix, opts: &CompareOptions) -> regions::Clustering {
    let k = opts.clusters.min((x.rows() + y.rows()) / regions::MIN_CLUSTER_ITEMS).max(1);
    regions::cluster(x, y, k, opts.seed).unwrap()
}

fn bench(c: &mut Criterion) {
    let n = std::env::var("SIEVE_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let (image, text, _) = planted_pairs_mismatched(n, DIM, 0.01);

    // Concept directions: unit rows spread over the run (its topics).
    let picks: Vec<usize> = (0..CONCEPTS).map(|k| k * n / CONCEPTS).collect();
    let directions = Matrix::gather(image.as_slice(), DIM, &picks).into_vec();
    let mut g = c.benchmark_group("cpu/curate");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(format!("audit/assign-{CONCEPTS}/{n}x{DIM}"), |b| {
        b.iter(|| (0..n).into_par_iter().map(|r| assign(image.row(r), &directions, DEFAULT_MARGIN)).collect::<Vec<_>>())
    });

    let opts = CompareOptions::default();
    let (x, y) = (sample(&image, opts.sample, opts.seed), sample(&text, opts.sample, opts.seed ^ 2));
    drop((image, text));
    let threshold = registry::dedup_defaults(MODEL).image;
    let s = DEFAULT_SAMPLE.min(n);
    g.throughput(Throughput::Elements((x.rows() + y.rows()) as u64));
    g.bench_function(format!("compare/cmmd/{s}+{s}x{DIM}"), |b| b.iter(|| cmmd::cmmd(&x, &y)));
    g.bench_function(format!("compare/permutation-test/{s}+{s}x{DIM}"), |b| b.iter(|| permutation_test(&x, &y, &opts)));
    g.bench_function(format!("compare/coverage/{s}+{s}x{DIM}"), |b| b.iter(|| coverage_both_ways(&x, &y, threshold)));
    g.bench_function(format!("compare/regions/{s}+{s}x{DIM}"), |b| b.iter(|| regions(&x, &y, &opts)));
    g.bench_function(format!("compare/modality/{s}+{s}x{DIM}"), |b| {
        b.iter(|| {
            (
                cmmd::cmmd(&x, &y),
                permutation_test(&x, &y, &opts),
                coverage_both_ways(&x, &y, threshold),
                regions(&x, &y, &opts),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
