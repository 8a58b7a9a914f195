//! The pickers: greedy farthest-point (k-center) and cluster-balanced selection of a budget of
//! rows, and the water-filling quota both cluster-balanced selection and `--balance-by` use.

use candle_core::Device;
use rayon::prelude::*;

use super::Strategy;
use crate::analyze::diversity::Clustered;
use crate::error::Result;
use crate::index::{dot, Matrix};

/// Greedy farthest-point selection of `budget` rows of `m` (all of them when fewer), starting
/// from `start`: each step takes the row least similar to everything taken so far (ties: the
/// lowest row). Returned in the order picked.
pub fn k_center(m: &Matrix, budget: usize, start: usize) -> Vec<usize> {
    let n = m.rows();
    let budget = budget.min(n);
    if budget == 0 {
        return Vec::new();
    }
    let mut picked = Vec::with_capacity(budget);
    let mut taken = vec![false; n];
    let mut nearest = vec![f32::NEG_INFINITY; n];
    let mut next = start;
    while picked.len() < budget {
        picked.push(next);
        taken[next] = true;
        let c = m.row(next);
        nearest.par_iter_mut().enumerate().for_each(|(i, s)| {
            *s = s.max(dot(c, m.row(i)));
        });
        // The untaken row with the lowest similarity to its nearest picked row.
        let best = nearest
            .par_iter()
            .enumerate()
            .filter(|&(i, _)| !taken[i])
            .min_by(|a, b| a.1.total_cmp(b.1).then(a.0.cmp(&b.0)));
        match best {
            Some((i, _)) => next = i,
            None => break,
        }
    }
    picked
}

/// How many of each cluster's items to take so the total is `budget` and the counts are as even
/// as the sizes allow (water-filling; leftovers go to the lowest cluster ids with room).
pub fn balanced_quota(sizes: &[usize], budget: usize) -> Vec<usize> {
    let total: usize = sizes.iter().sum();
    let budget = budget.min(total);
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&c| (sizes[c], c));
    let mut quota = vec![0usize; sizes.len()];
    let mut remaining = budget;
    for (done, &c) in order.iter().enumerate() {
        let left = sizes.len() - done;
        let share = remaining / left;
        quota[c] = sizes[c].min(share);
        remaining -= quota[c];
    }
    for c in 0..sizes.len() {
        if remaining == 0 {
            break;
        }
        if quota[c] < sizes[c] {
            quota[c] += 1;
            remaining -= 1;
        }
    }
    quota
}

/// Cluster-balanced selection of `budget` rows of `m` over `k` seeded k-means clusters.
pub fn cluster_balanced(m: &Matrix, budget: usize, k: usize, seed: u64, device: &Device) -> Result<Vec<usize>> {
    let n = m.rows();
    if budget >= n {
        return Ok((0..n).collect());
    }
    let c = Clustered::new(m.clone(), k, seed, device)?;
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); c.k()];
    for (i, t) in c.assigned.iter().enumerate() {
        members[t.best as usize].push(i);
    }
    let quota = balanced_quota(&members.iter().map(Vec::len).collect::<Vec<_>>(), budget);
    let d = m.dim();
    let picked: Vec<Vec<usize>> = members
        .par_iter()
        .enumerate()
        .map(|(ci, rows)| {
            if quota[ci] == 0 {
                return Vec::new();
            }
            let sub = Matrix::gather(c.vectors.as_slice(), d, rows);
            let centroid = c.centroids.row(ci);
            let start = (0..rows.len())
                .max_by(|&a, &b| dot(centroid, sub.row(a)).total_cmp(&dot(centroid, sub.row(b))).then(b.cmp(&a)))
                .unwrap_or(0);
            k_center(&sub, quota[ci], start).into_iter().map(|j| rows[j]).collect()
        })
        .collect();
    let mut out: Vec<usize> = picked.into_iter().flatten().collect();
    out.sort_unstable();
    Ok(out)
}

/// Picks `quota` of `rows` of `vectors` (normalised) with `strategy` over `k` clusters; returns
/// rows of `vectors`, sorted. The rows are picked from as a matrix of their own (no copy when
/// they are all of `vectors`, in order).
pub fn pick(
    vectors: &Matrix,
    rows: &[usize],
    quota: usize,
    strategy: Strategy,
    k: usize,
    seed: u64,
    device: &Device,
) -> Result<Vec<usize>> {
    let all = rows.len() == vectors.rows() && rows.iter().enumerate().all(|(i, &r)| i == r);
    let gathered;
    let m = if all {
        vectors
    } else {
        gathered = Matrix::gather(vectors.as_slice(), vectors.dim(), rows);
        &gathered
    };
    let mut chosen = match strategy {
        Strategy::ClusterBalanced => cluster_balanced(m, quota, k, seed, device)?,
        Strategy::KCenter => {
            // Start from the item nearest the mean direction.
            let mut mean = vec![0f32; m.dim()];
            for r in 0..m.rows() {
                for (s, x) in mean.iter_mut().zip(m.row(r)) {
                    *s += x;
                }
            }
            let start = (0..m.rows())
                .max_by(|&a, &b| dot(&mean, m.row(a)).total_cmp(&dot(&mean, m.row(b))).then(b.cmp(&a)))
                .unwrap_or(0);
            k_center(m, quota, start)
        }
    };
    if !all {
        for c in &mut chosen {
            *c = rows[*c];
        }
    }
    chosen.sort_unstable();
    Ok(chosen)
}
