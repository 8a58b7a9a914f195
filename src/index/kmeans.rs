//! Seeded spherical k-means (cosine similarity, unit centroids), as SemDeDup clusters
//! embeddings before searching inside each cluster. Training uses a seeded sample of at most
//! `max_points_per_centroid × k` rows (faiss's rule); assignment covers every row. Sums are taken
//! per cluster in row order, so the result depends only on the data, k and the seed.

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::Matrix;
use crate::error::{Error, Result};
use crate::linalg::matmul_wt;

/// k-means settings.
#[derive(Debug, Clone, Copy)]
pub struct KMeansParams {
    pub k: usize,
    pub iters: usize,
    pub seed: u64,
    pub max_points_per_centroid: usize,
    /// Training rows, overriding `max_points_per_centroid × k` (at least k, at most all rows).
    pub sample: Option<usize>,
}

impl KMeansParams {
    pub fn new(k: usize, seed: u64) -> Self {
        Self { k, iters: 12, seed, max_points_per_centroid: 256, sample: None }
    }
}

/// A row's two most similar centroids.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Top2 {
    pub best: u32,
    pub best_sim: f32,
    /// `u32::MAX` when there is a single centroid.
    pub second: u32,
    pub second_sim: f32,
}

const ROWS: usize = 512;

fn top2_of(line: &[f32]) -> Top2 {
    let mut t = Top2 { best: u32::MAX, best_sim: f32::NEG_INFINITY, second: u32::MAX, second_sim: f32::NEG_INFINITY };
    for (c, &s) in line.iter().enumerate() {
        if s > t.best_sim {
            t.second = t.best;
            t.second_sim = t.best_sim;
            t.best = c as u32;
            t.best_sim = s;
        } else if s > t.second_sim {
            t.second = c as u32;
            t.second_sim = s;
        }
    }
    t
}

/// The two nearest centroids of every row of `data`.
pub fn assign(data: &Matrix, centroids: &Matrix, device: &Device) -> Result<Vec<Top2>> {
    let (n, k, d) = (data.rows(), centroids.rows(), data.dim());
    if device.is_cpu() {
        let blocks: Vec<usize> = (0..n).step_by(ROWS).collect();
        let out: Vec<Vec<Top2>> = blocks
            .par_iter()
            .map(|&r0| {
                let r1 = (r0 + ROWS).min(n);
                let mut tile = vec![0f32; (r1 - r0) * k];
                matmul_wt(
                    &mut tile,
                    data.block(r0, r1),
                    centroids.as_slice(),
                    r1 - r0,
                    k,
                    d,
                    false,
                    gemm::Parallelism::None,
                );
                tile.chunks_exact(k).map(top2_of).collect()
            })
            .collect();
        return Ok(out.into_iter().flatten().collect());
    }
    let c = Tensor::from_slice(centroids.as_slice(), (k, d), device)?.t()?;
    let mut out = Vec::with_capacity(n);
    let rows = (1 << 24) / k.max(1);
    for r0 in (0..n).step_by(rows.max(1)) {
        let r1 = (r0 + rows).min(n);
        let x = Tensor::from_slice(data.block(r0, r1), (r1 - r0, d), device)?;
        let tile = x.matmul(&c)?.flatten_all()?.to_vec1::<f32>()?;
        out.extend(tile.chunks_exact(k).map(top2_of));
    }
    Ok(out)
}

fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Trains `params.k` unit centroids on `data`.
pub fn train(data: &Matrix, params: KMeansParams, device: &Device) -> Result<Matrix> {
    let (n, d) = (data.rows(), data.dim());
    let k = params.k;
    if k == 0 || k > n {
        return Err(Error::InvalidArg {
            what: "--clusters",
            reason: format!("{k} clusters for {n} vectors: must be between 1 and the number of vectors"),
        });
    }
    // A NaN makes every similarity NaN and no cluster nearest; the run readers refuse such
    // vectors, so this only guards other callers.
    if let Some(i) = data.as_slice().iter().position(|x| !x.is_finite()) {
        return Err(Error::Pipeline(format!("k-means: vector {} holds a non-finite value", i / d.max(1))));
    }
    let mut rng = StdRng::seed_from_u64(params.seed);
    let m = match params.sample {
        Some(s) => s.clamp(k, n),
        None => n.min(k.saturating_mul(params.max_points_per_centroid.max(1))),
    };
    let mut sample: Vec<usize> = rand::seq::index::sample(&mut rng, n, m).into_vec();
    // The first k of the (random-order) sample seed the centroids; then train on the sorted sample.
    let mut centroids = Matrix::gather(data.as_slice(), d, &sample[..k]);
    sample.sort_unstable();
    let train = Matrix::gather(data.as_slice(), d, &sample);
    let progress = crate::progress::Progress::new(params.iters as u64, "k-means", "iterations");
    for iter in 0..params.iters {
        progress.inc(1);
        let assigned = assign(&train, &centroids, device)?;
        let mut members: Vec<Vec<u32>> = vec![Vec::new(); k];
        for (i, t) in assigned.iter().enumerate() {
            // No nearest centroid (NaN similarities): left out of this round, never an index panic.
            members.get_mut(t.best as usize).unwrap_or(&mut Vec::new()).push(i as u32);
        }
        let new: Vec<Vec<f32>> = members
            .par_iter()
            .map(|rows| {
                let mut sum = vec![0f64; d];
                for &r in rows {
                    for (s, &x) in sum.iter_mut().zip(train.row(r as usize)) {
                        *s += x as f64;
                    }
                }
                let mut c: Vec<f32> = sum.into_iter().map(|s| s as f32).collect();
                normalise(&mut c);
                c
            })
            .collect();
        let mut data_c = Vec::with_capacity(k * d);
        let mut empty = 0;
        for (c, rows) in new.into_iter().zip(&members) {
            if rows.is_empty() {
                // Re-seed an empty cluster with a random training row.
                empty += 1;
                data_c.extend_from_slice(train.row(rng.random_range(0..train.rows())));
            } else {
                data_c.extend(c);
            }
        }
        centroids = Matrix::new(d, data_c)?;
        tracing::debug!("k-means iteration {iter}: {empty} empty clusters re-seeded");
    }
    Ok(centroids)
}
