//! SemDeDup-style search for large corpora: seeded k-means splits the vectors into k clusters,
//! and exact search runs only inside each cluster. An item whose second-nearest centroid is
//! almost as near as its nearest (within `border`) also joins that second cluster, so
//! near-duplicates split by a cluster boundary are still found. With clusters of about N/k
//! items, time is about N²/k and memory about N: linear in N for a fixed cluster size.

use candle_core::Device;
use rayon::prelude::*;

use super::kmeans::{self, KMeansParams, Top2};
use super::{sort_dedup, topk, ExactIndex, Matrix, NeighbourIndex, Neighbours, Pair};
use crate::error::Result;
use crate::progress::Progress;

/// Default `border`: the similarity gap under which an item also joins its second cluster.
pub const DEFAULT_BORDER: f32 = 0.05;

/// Default number of clusters a k-NN query searches (its nearest centroids).
pub const DEFAULT_PROBES: usize = 3;

/// Exact search inside k-means clusters.
pub struct ClusteredIndex<'a> {
    data: &'a Matrix,
    centroids: Matrix,
    /// Clusters a k-NN query searches.
    probes: usize,
    /// Members of each cluster (nearest, plus border items), ascending.
    members: Vec<Vec<u32>>,
    border: f32,
    device: Device,
}

fn members_of(assigned: &[Top2], k: usize, border: f32) -> Vec<Vec<u32>> {
    let mut members = vec![Vec::new(); k];
    for (i, t) in assigned.iter().enumerate() {
        members[t.best as usize].push(i as u32);
        if t.second != u32::MAX && t.best_sim - t.second_sim <= border {
            members[t.second as usize].push(i as u32);
        }
    }
    for m in &mut members {
        m.sort_unstable();
    }
    members
}

impl<'a> ClusteredIndex<'a> {
    pub fn build(data: &'a Matrix, params: KMeansParams, border: f32, device: Device) -> Result<Self> {
        let centroids = kmeans::train(data, params, &device)?;
        let assigned = kmeans::assign(data, &centroids, &device)?;
        Ok(Self::from_assignment(data, centroids, &assigned, border, device))
    }

    /// An index over `data` from centroids trained elsewhere and each row's two nearest of them
    /// (as [`kmeans::assign`] gives), so a caller that already clustered does not train again.
    pub fn from_assignment(
        data: &'a Matrix,
        centroids: Matrix,
        assigned: &[Top2],
        border: f32,
        device: Device,
    ) -> Self {
        let k = centroids.rows();
        let members = members_of(assigned, k, border);
        let largest = members.iter().map(Vec::len).max().unwrap_or(0);
        let joined: usize = members.iter().map(Vec::len).sum::<usize>() - data.rows();
        tracing::info!(
            "k-means: {k} clusters over {} vectors, largest {largest}, {joined} border items also searched in a second cluster",
            data.rows()
        );
        Self { data, centroids, probes: DEFAULT_PROBES, members, border, device }
    }

    /// k-NN queries search their `probes` nearest clusters (more: better recall, slower).
    pub fn with_probes(mut self, probes: usize) -> Self {
        self.probes = probes.max(1);
        self
    }

    pub fn centroids(&self) -> &Matrix {
        &self.centroids
    }

    /// The query rows `qs` and the indexed rows `ds` of one cluster, as matrices.
    fn gather(&self, queries: &Matrix, qs: &[u32], ds: &[u32]) -> (Matrix, Matrix) {
        let d = self.data.dim();
        let rows = |r: &[u32]| r.iter().map(|&r| r as usize).collect::<Vec<_>>();
        (Matrix::gather(queries.as_slice(), d, &rows(qs)), Matrix::gather(self.data.as_slice(), d, &rows(ds)))
    }

    /// Cluster members (nearest plus border), for reports and tests.
    pub fn members(&self) -> &[Vec<u32>] {
        &self.members
    }

    /// [`NeighbourIndex::self_pairs`] restricted to the clusters `c` with `wanted(c)`: the pairs
    /// found inside those clusters only. The union over any split of the clusters, put through
    /// [`sort_dedup`], is exactly `self_pairs` (which is this with every cluster), so clusters
    /// can be searched by separate processes (`sieve dedup-partition`).
    pub fn self_pairs_in(&self, threshold: f32, wanted: impl Fn(usize) -> bool + Sync) -> Result<Vec<Pair>> {
        let d = self.data.dim();
        let progress = Progress::new(self.members.len() as u64, "clustered search", "clusters");
        let found: Vec<Vec<Pair>> = self
            .members
            .par_iter()
            .enumerate()
            .map(|(c, rows)| -> Result<Vec<Pair>> {
                progress.inc(1);
                if rows.len() < 2 || !wanted(c) {
                    return Ok(Vec::new());
                }
                let idx: Vec<usize> = rows.iter().map(|&r| r as usize).collect();
                let sub = Matrix::gather(self.data.as_slice(), d, &idx);
                let pairs = ExactIndex::new(&sub, self.device.clone()).self_pairs(threshold)?;
                // Members are ascending, so local a < b maps to global a < b.
                Ok(pairs
                    .into_iter()
                    .map(|p| Pair { a: rows[p.a as usize], b: rows[p.b as usize], sim: p.sim })
                    .collect())
            })
            .collect::<Result<_>>()?;
        let mut pairs: Vec<Pair> = found.into_iter().flatten().collect();
        sort_dedup(&mut pairs);
        Ok(pairs)
    }
}

impl NeighbourIndex for ClusteredIndex<'_> {
    fn name(&self) -> String {
        format!("clusters(k={},border={},{})", self.members.len(), self.border, crate::device::describe(&self.device))
    }

    fn len(&self) -> usize {
        self.data.rows()
    }

    fn self_pairs(&self, threshold: f32) -> Result<Vec<Pair>> {
        self.self_pairs_in(threshold, |_| true)
    }

    fn range_search(&self, queries: &Matrix, threshold: f32) -> Result<Vec<Pair>> {
        let assigned = kmeans::assign(queries, &self.centroids, &self.device)?;
        let q_members = members_of(&assigned, self.members.len(), self.border);
        let progress = Progress::new(self.members.len() as u64, "clustered search", "clusters");
        let found: Vec<Vec<Pair>> = q_members
            .par_iter()
            .zip(self.members.par_iter())
            .map(|(qs, ds)| -> Result<Vec<Pair>> {
                progress.inc(1);
                if qs.is_empty() || ds.is_empty() {
                    return Ok(Vec::new());
                }
                let (sub_q, sub_d) = self.gather(queries, qs, ds);
                let pairs = ExactIndex::new(&sub_d, self.device.clone()).range_search(&sub_q, threshold)?;
                Ok(pairs.into_iter().map(|p| Pair { a: qs[p.a as usize], b: ds[p.b as usize], sim: p.sim }).collect())
            })
            .collect::<Result<_>>()?;
        let mut pairs: Vec<Pair> = found.into_iter().flatten().collect();
        sort_dedup(&mut pairs);
        Ok(pairs)
    }

    fn knn(&self, queries: &Matrix, k: usize, skip: Option<&[u32]>) -> Result<Vec<Neighbours>> {
        let nq = queries.rows();
        let want = k + usize::from(skip.is_some());
        let probes = self.probes.min(self.centroids.rows());
        let nearest = ExactIndex::new(&self.centroids, self.device.clone()).knn(queries, probes, None)?;
        let mut asked: Vec<Vec<u32>> = vec![Vec::new(); self.members.len()];
        for (q, cs) in nearest.iter().enumerate() {
            for &(c, _) in cs {
                asked[c as usize].push(q as u32);
            }
        }
        let progress = Progress::new(self.members.len() as u64, "clustered k-NN", "clusters");
        let found: Vec<Vec<(u32, Neighbours)>> = asked
            .par_iter()
            .zip(self.members.par_iter())
            .map(|(qs, ds)| -> Result<Vec<(u32, Neighbours)>> {
                progress.inc(1);
                if qs.is_empty() || ds.is_empty() {
                    return Ok(Vec::new());
                }
                let (sub_q, sub_d) = self.gather(queries, qs, ds);
                let lists = ExactIndex::new(&sub_d, self.device.clone()).knn(&sub_q, want, None)?;
                Ok(qs
                    .iter()
                    .zip(lists)
                    .map(|(&q, l)| (q, l.into_iter().map(|(j, s)| (ds[j as usize], s)).collect()))
                    .collect())
            })
            .collect::<Result<_>>()?;
        let mut parts: Vec<Vec<(u32, f32)>> = vec![Vec::new(); nq];
        for (q, l) in found.into_iter().flatten() {
            parts[q as usize].extend(l);
        }
        Ok(parts
            .into_par_iter()
            .enumerate()
            .map(|(q, p)| {
                let skip_row = skip.map(|s| s[q]);
                topk::merge(p.into_iter().filter(|&(j, _)| Some(j) != skip_row), k)
            })
            .collect())
    }
}
