//! Seeded synthetic embeddings with planted near-duplicate groups, for tests and benchmarks
//! (the same recipe as `scripts/bench_vs_faiss.py`): unit vectors around a number of random
//! "topics" (so the data has the cluster structure real embeddings have), where some items are
//! noisy copies of another.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::Matrix;

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn unit(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

/// Synthetic data: `n` unit vectors of width `dim`; about `dup_fraction` of them are copies in
/// groups of 2 to 5, each copy `normalise(base + σ·noise)` with σ drawn per group from
/// `[0.05, 0.3]` (copy–copy cosine about 0.92 to 0.998, so groups straddle a 0.95 threshold).
pub fn planted(n: usize, dim: usize, dup_fraction: f64, seed: u64) -> Matrix {
    let mut rng = StdRng::seed_from_u64(seed);
    let topics = 64.min(n.max(1));
    let mut centres = vec![0f32; topics * dim];
    centres.iter_mut().for_each(|x| *x = normal(&mut rng));
    for c in centres.chunks_exact_mut(dim) {
        unit(c);
    }
    let noise_scale = 1.5 / (dim as f32).sqrt();
    let mut data = Vec::with_capacity(n * dim);
    let mut i = 0;
    while i < n {
        let t = rng.random_range(0..topics);
        let mut base: Vec<f32> =
            centres[t * dim..(t + 1) * dim].iter().map(|c| c + noise_scale * normal(&mut rng)).collect();
        unit(&mut base);
        let copies = if rng.random_bool(dup_fraction / 3.5) { rng.random_range(2..=5usize) } else { 1 };
        let sigma = rng.random_range(0.05f32..0.3) / (dim as f32).sqrt();
        for c in 0..copies.min(n - i) {
            if c == 0 {
                data.extend_from_slice(&base);
            } else {
                let mut v: Vec<f32> = base.iter().map(|b| b + sigma * normal(&mut rng)).collect();
                unit(&mut v);
                data.extend(v);
            }
            i += 1;
        }
    }
    Matrix::new(dim, data).expect("rows of dim")
}

/// Synthetic image–caption pairs for benchmarks: images from [`planted`] (5% planted copies);
/// each caption is `normalise(image + other)` with `other` an independent planted vector, so
/// pair cosines spread around 0.7 and both sides have topic structure.
pub fn planted_pairs(n: usize, dim: usize) -> (Matrix, Matrix) {
    let (image, text, _) = planted_pairs_mismatched(n, dim, 0.0);
    (image, text)
}

/// [`planted_pairs`] where a seeded `share` (0–1) of the captions describe another image
/// (`normalise(image[j] + other[i])` for a random `j`), as scraped captions sometimes do; also
/// returns those items, ascending, so a benchmark can check the rank test finds them.
pub fn planted_pairs_mismatched(n: usize, dim: usize, share: f64) -> (Matrix, Matrix, Vec<usize>) {
    let image = planted(n, dim, 0.05, 1);
    let other = planted(n, dim, 0.0, 2);
    let mut rng = StdRng::seed_from_u64(3);
    let mut text = Vec::with_capacity(n * dim);
    let mut mismatched = Vec::new();
    for i in 0..n {
        let start = text.len();
        let described = if share > 0.0 && n > 1 && rng.random_bool(share.min(1.0)) {
            mismatched.push(i);
            (i + rng.random_range(1..n)) % n
        } else {
            i
        };
        text.extend(image.row(described).iter().zip(other.row(i)).map(|(a, b)| a + b));
        unit(&mut text[start..]);
    }
    (image, Matrix { dim, data: text }, mismatched)
}
