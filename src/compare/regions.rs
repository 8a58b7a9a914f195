//! Novel and vanished regions: seeded spherical k-means (`index::kmeans`) on the two samples
//! pooled, then each cluster's share of A's sample and of B's. A cluster that holds at least
//! [`MIN_REGION_SHARE`] of one side's sample but under [`MAX_OTHER_RATIO`] of that share of the
//! other side's is a region the other side lacks: *novel* when B has it and A does not,
//! *vanished* when A has it and B does not. Comparing shares rather than counts makes the test
//! independent of the sample sizes; a sample drawn from the same data lands in every cluster in
//! about the same proportion.

use candle_core::Device;
use serde::Serialize;

use crate::error::Result;
use crate::index::kmeans::{self, KMeansParams};
use crate::index::Matrix;

/// Default number of clusters (as `sieve diversity`'s): fine enough that a region of 1% of a run
/// gets clusters of its own rather than being merged with others.
pub const DEFAULT_CLUSTERS: usize = 100;
/// Fewest pooled items per cluster on average: the cluster count is capped at the pooled items
/// over this, so small samples are not cut into clusters of a few items each (noise).
pub const MIN_CLUSTER_ITEMS: usize = 20;
/// A region holds at least this share of its side's sample.
pub const MIN_REGION_SHARE: f64 = 0.005;
/// … and the other side holds under this fraction of that share there.
pub const MAX_OTHER_RATIO: f64 = 0.25;
/// Fewest items of a region (below, a cluster is too small to call).
pub const MIN_REGION_ITEMS: usize = 5;
/// Example items listed per region.
pub const EXAMPLES: usize = 6;

/// One cluster of the pooled samples.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cluster {
    pub cluster: usize,
    pub items_a: usize,
    pub items_b: usize,
    /// Shares of each side's sample in this cluster.
    pub share_a: f64,
    pub share_b: f64,
}

/// The clusters, and for each side its items' cluster and cosine to the centroid.
pub struct Clustering {
    pub clusters: Vec<Cluster>,
    pub assigned_a: Vec<(u32, f32)>,
    pub assigned_b: Vec<(u32, f32)>,
}

/// Clusters `a` and `b` pooled into (at most) `k` clusters, seeded.
pub fn cluster(a: &Matrix, b: &Matrix, k: usize, seed: u64) -> Result<Clustering> {
    let d = a.dim();
    let mut pooled = Vec::with_capacity((a.rows() + b.rows()) * d);
    pooled.extend_from_slice(a.as_slice());
    pooled.extend_from_slice(b.as_slice());
    let pooled = Matrix::new(d, pooled)?;
    let k = k.clamp(1, pooled.rows().max(1));
    let device = Device::Cpu;
    let centroids = kmeans::train(&pooled, KMeansParams::new(k, seed), &device)?;
    let top = |m: &Matrix| -> Result<Vec<(u32, f32)>> {
        Ok(kmeans::assign(m, &centroids, &device)?.into_iter().map(|t| (t.best, t.best_sim)).collect())
    };
    let (assigned_a, assigned_b) = (top(a)?, top(b)?);
    let count = |v: &[(u32, f32)]| {
        let mut c = vec![0usize; k];
        v.iter().for_each(|&(best, _)| c[best as usize] += 1);
        c
    };
    let (ca, cb) = (count(&assigned_a), count(&assigned_b));
    let share = |c: usize, n: usize| if n == 0 { 0.0 } else { c as f64 / n as f64 };
    let clusters = (0..k)
        .map(|c| Cluster {
            cluster: c,
            items_a: ca[c],
            items_b: cb[c],
            share_a: share(ca[c], a.rows()),
            share_b: share(cb[c], b.rows()),
        })
        .collect();
    Ok(Clustering { clusters, assigned_a, assigned_b })
}

/// Whether a cluster holding `share` of its side (`items` items) and `other` of the other side's
/// is a region the other side lacks.
pub fn lacking(share: f64, items: usize, other: f64) -> bool {
    share >= MIN_REGION_SHARE && items >= MIN_REGION_ITEMS && other < MAX_OTHER_RATIO * share
}

/// The members of cluster `c` (indexes into the side's sample), nearest the centroid first,
/// at most `max`.
pub fn examples(assigned: &[(u32, f32)], c: usize, max: usize) -> Vec<usize> {
    let mut members: Vec<(usize, f32)> =
        assigned.iter().enumerate().filter(|(_, t)| t.0 as usize == c).map(|(i, t)| (i, t.1)).collect();
    members.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
    members.into_iter().take(max).map(|m| m.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_only_b_holds_is_lacking_from_a() {
        let e = |i: usize| {
            let mut v = vec![0f32; 4];
            v[i] = 1.0;
            v
        };
        let a: Vec<f32> = (0..20).flat_map(|i| e(i % 2)).collect();
        let b: Vec<f32> = (0..20).flat_map(|i| e(if i < 10 { i % 2 } else { 3 })).collect();
        let c = cluster(&Matrix::new(4, a).unwrap(), &Matrix::new(4, b).unwrap(), 3, 1).unwrap();
        let novel: Vec<&Cluster> = c.clusters.iter().filter(|k| lacking(k.share_b, k.items_b, k.share_a)).collect();
        assert_eq!(novel.len(), 1, "{:?}", c.clusters);
        assert_eq!((novel[0].items_a, novel[0].items_b), (0, 10));
        let ex = examples(&c.assigned_b, novel[0].cluster, 4);
        assert_eq!(ex, vec![10, 11, 12, 13]);
        assert!(!c.clusters.iter().any(|k| lacking(k.share_a, k.items_a, k.share_b)));
    }
}
