//! Writes planted runs for measuring `sieve dedup` (see docs/dedup.md, "Memory"):
//!
//! - `cargo run --release --example dedup_corpus -- near-identical 20000 OUT`: N 512-d unit
//!   vectors, one base plus tiny noise (every pair within the default image threshold), with
//!   equal perceptual fingerprints: N(N−1)/2 image and perceptual pairs in one cluster;
//! - `... mixed 20000 OUT`: planted topics with groups of 2–5 near-copies
//!   ([`sieve::index::synthetic::planted`]), captions near their images, perceptual hashes from
//!   the vectors' signs, some identical files: an ordinary corpus for timing.

#[path = "../tests/util.rs"]
#[allow(dead_code)]
mod util;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use util::{planted_run_with_uris, Planted};

const DIM: usize = 512;

fn unit(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, n, out] = args.as_slice() else {
        eprintln!("usage: dedup_corpus near-identical|mixed N OUT");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("N is a number");
    let mut rng = StdRng::seed_from_u64(11);
    let noise = |rng: &mut StdRng, s: f32| -> f32 { s * (rng.random::<f32>() - 0.5) };
    let items: Vec<Planted> = match mode.as_str() {
        "near-identical" => {
            let mut base: Vec<f32> = (0..DIM).map(|_| noise(&mut rng, 1.0)).collect();
            unit(&mut base);
            (0..n)
                .map(|_| {
                    let mut v: Vec<f32> = base.iter().map(|b| b + noise(&mut rng, 0.002)).collect();
                    unit(&mut v);
                    Planted { image: v, caption: None, size: (64, 64), sha: None, phash: Some(0x5a5a_0f0f_3c3c_9696) }
                })
                .collect()
        }
        "mixed" => {
            let data = sieve::index::synthetic::planted(n, DIM, 0.3, 5);
            (0..n)
                .map(|i| {
                    let image = data.row(i).to_vec();
                    let caption = (i % 5 != 0).then(|| {
                        let mut t: Vec<f32> = image.iter().map(|x| x + noise(&mut rng, 0.02)).collect();
                        unit(&mut t);
                        t
                    });
                    let phash =
                        (i % 7 != 0).then(|| image[..64].iter().fold(0u64, |h, &x| (h << 1) | (x > 0.0) as u64));
                    let sha = (i % 97 == 1).then_some("same-bytes");
                    Planted { image, caption, size: (32 + (i % 13) as u32, 32), sha, phash }
                })
                .collect()
        }
        m => panic!("unknown mode {m}"),
    };
    planted_run_with_uris(std::path::Path::new(out), &items, "w", |i| format!("img/{i:05}.jpg"));
}
