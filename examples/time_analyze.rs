//! Times `sieve score`'s and `sieve diversity`'s analyses once on synthetic 512-d embeddings
//! (the data of `benches/analyze.rs`), for sizes too slow for criterion's ten samples:
//! `cargo run --release --example time_analyze -- 1000000 threshold,rank,diversity` (and
//! `all-embeddings`: image, caption and joint, as `sieve diversity` measures a run).

use std::time::Instant;

use candle_core::Device;
use sieve::analyze::common::{Embedded, SearchOptions};
use sieve::analyze::diversity::{self, Clustered, MeasureParams};
use sieve::analyze::pairs::{bottom_percent_cut, score_pairs};
use sieve::index::synthetic::planted_pairs;
use sieve::index::Matrix;

const DIM: usize = 512;

fn pairs(n: usize) -> Embedded {
    let (image, text) = planted_pairs(n, DIM);
    Embedded { rows: (0..n).collect(), image, text, has_caption: vec![true; n] }
}

fn main() {
    tracing_subscriber::fmt().with_env_filter("info").with_writer(std::io::stderr).init();
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let what = args.next().unwrap_or_else(|| "threshold,rank,diversity".into());
    let items = pairs(n);
    let cpu = Device::Cpu;
    let search = SearchOptions::default();
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
        let out = s.iter().filter(|s| s.outranked).count();
        println!("score/rank-top10 {n}x{DIM}: {:.2?} ({index}, {out} outranked)", t.elapsed());
    }
    if what.contains("all-embeddings") {
        // What `sieve diversity` does for a run: image, caption and joint ([img, txt]/√2).
        let t = Instant::now();
        let p = MeasureParams { min_share: 0.1, nn_queries: 10_000, probes: 3, seed: 0 };
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let mut joint = Vec::with_capacity(n * 2 * DIM);
        for i in 0..n {
            joint.extend(items.image.row(i).iter().map(|x| x * s));
            joint.extend(items.text.row(i).iter().map(|x| x * s));
        }
        let joint = Matrix::new(2 * DIM, joint).unwrap();
        for (name, m) in [("image", items.image.clone()), ("caption", items.text.clone()), ("joint", joint)] {
            let t1 = Instant::now();
            let c = Clustered::new(m, diversity::DEFAULT_CLUSTERS, 0, &cpu).unwrap();
            let v = diversity::measure(&c, None, None, &p, &cpu).unwrap().vendi.q1;
            println!("  {name}: {:.2?} (Vendi {v:.1})", t1.elapsed());
        }
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
