//! Times `sieve score`'s and `sieve diversity`'s analyses once on synthetic 512-d embeddings
//! (the data of `benches/analyze.rs`), for sizes too slow for criterion's ten samples:
//! `cargo run --release --example time_analyze -- 1000000 threshold,rank,diversity` (and
//! `all-embeddings`: image, caption and joint, as `sieve diversity` measures a run).
//!
//! The pairs have 1% planted mismatched captions. `rank` prints how many of them the rank test
//! flags, and checks its ranks against an exact search for 2,000 sampled images: the share of
//! those whose own caption gets the same rank (or the same "beyond k") as exact search gives
//! (`SIEVE_SHOW=1` lists the others). `SIEVE_CLUSTERS` and `SIEVE_PROBES` set `--clusters` and
//! `--probes` of the search.

use std::time::Instant;

use candle_core::Device;
use sieve::analyze::common::{Embedded, SearchOptions};
use sieve::analyze::diversity::{self, Clustered, MeasureParams};
use sieve::analyze::pairs::{bottom_percent_cut, score_pairs};
use sieve::index::synthetic::planted_pairs_mismatched;
use sieve::index::{ExactIndex, Matrix, NeighbourIndex};

const DIM: usize = 512;

fn pairs(n: usize) -> (Embedded, Vec<usize>) {
    let (image, text, mismatched) = planted_pairs_mismatched(n, DIM, 0.01);
    (Embedded { rows: (0..n).collect(), image, text, has_caption: vec![true; n] }, mismatched)
}

/// Share of `sample` images whose caption rank (top `k`) matches an exact search's.
fn exact_agreement(items: &Embedded, ranks: &[Option<u32>], sample: &[usize], k: usize) -> f64 {
    let queries = Matrix::gather(items.image.as_slice(), DIM, sample);
    let exact = ExactIndex::new(&items.text, Device::Cpu).knn(&queries, k + 1, None).unwrap();
    let same = sample
        .iter()
        .zip(&exact)
        .filter(|&(&i, list)| {
            let own = sieve::index::dot(items.image.row(i), items.text.row(i));
            let better = list.iter().filter(|&&(j, s)| j as usize != i && s > own).count();
            let rank = (better < k).then_some(better as u32 + 1);
            if rank != ranks[i] && std::env::var("SIEVE_SHOW").is_ok() {
                eprintln!("item {i}: exact {rank:?} clustered {:?} own {own} list {:?}", ranks[i], &list[..4]);
            }
            rank == ranks[i]
        })
        .count();
    same as f64 / sample.len() as f64
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let what = args.next().unwrap_or_else(|| "threshold,rank,diversity".into());
    let (items, mismatched) = pairs(n);
    let cpu = Device::Cpu;
    let mut search = SearchOptions::default();
    let env = |v: &str| std::env::var(v).ok().and_then(|x| x.parse::<usize>().ok());
    search.clusters = env("SIEVE_CLUSTERS");
    if let Some(p) = env("SIEVE_PROBES") {
        search.probes = p;
    }
    let bottom_1_percent = |cos: &[f32]| bottom_percent_cut(cos, 1.0);
    if what.contains("threshold") {
        let t = Instant::now();
        let (s, ..) = score_pairs(&items, bottom_1_percent, 0, &search, &cpu).unwrap();
        println!(
            "score/threshold {n}x{DIM}: {:.2?} ({} low_score)",
            t.elapsed(),
            s.iter().filter(|s| s.low_score).count()
        );
    }
    if what.contains("rank") {
        let t = Instant::now();
        let (s, _, index) = score_pairs(&items, bottom_1_percent, 10, &search, &cpu).unwrap();
        let elapsed = t.elapsed();
        let out = s.iter().filter(|s| s.outranked).count();
        let found = mismatched.iter().filter(|&&i| s[i].outranked).count();
        println!(
            "score/rank-top10 {n}x{DIM}: {elapsed:.2?} ({index}, {out} outranked, {found} of the {} planted mismatches)",
            mismatched.len()
        );
        let ranks: Vec<Option<u32>> = s.iter().map(|s| s.caption_rank).collect();
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
        let mut sample = rand::seq::index::sample(&mut rng, n, 2000.min(n)).into_vec();
        sample.sort_unstable();
        println!(
            "  caption ranks equal to exact search's: {:.4} of {} sampled images",
            exact_agreement(&items, &ranks, &sample, 10),
            sample.len()
        );
    }
    if what.contains("all-embeddings") {
        // What `sieve diversity` does for a run: image, caption and joint ([img, txt]/√2).
        // (The copies the function takes are made before the clock starts.)
        let (image, text) = (items.image.clone(), items.text.clone());
        let all: Vec<usize> = (0..n).collect();
        let p = MeasureParams { min_share: 0.1, nn_queries: 10_000, probes: 3, seed: 0 };
        let t = Instant::now();
        let (m, _) =
            diversity::measure_embeddings(image, text, &all, &[], &[], diversity::DEFAULT_CLUSTERS, 0, &p, &cpu)
                .unwrap();
        let vendi = |m: &Option<diversity::Metrics>| m.as_ref().map_or(f64::NAN, |m| m.vendi.q1);
        println!("  Vendi: image {:.1}, caption {:.1}, joint {:.1}", vendi(&m.image), vendi(&m.text), vendi(&m.joint));
        println!("diversity/all-embeddings {n}x{DIM}: {:.2?}", t.elapsed());
    }
    if what.contains("diversity") {
        let t = Instant::now();
        let c = Clustered::new(items.image.clone(), diversity::DEFAULT_CLUSTERS, 0, &cpu).unwrap();
        let p = MeasureParams { min_share: 0.1, nn_queries: 10_000, probes: 3, seed: 0 };
        let m = diversity::measure(&c, None, None, &p, &cpu).unwrap();
        println!("diversity/image {n}x{DIM}: {:.2?} (Vendi {:.1})", t.elapsed(), m.vendi.q1);
    }
}
