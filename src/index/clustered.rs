//! SemDeDup-style search for large corpora: seeded k-means splits the vectors into k clusters,
//! and exact search runs only inside each cluster. An item whose second-nearest centroid is
//! almost as near as its nearest (within `border`) also joins that second cluster, so
//! near-duplicates split by a cluster boundary are still found. With clusters of about N/k
//! items, time is about N²/k and memory about N: linear in N for a fixed cluster size.

use candle_core::Device;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;

use super::kmeans::{self, KMeansParams, Top2};
use super::merge::{merge_each, SortedBatches};
use super::{exact, topk, ExactIndex, Matrix, NeighbourIndex, Neighbours, Pair};
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
    /// Groups of the centroids for finding a query's nearest ones (see [`TwoLevel`]); `None`:
    /// every query is compared with every centroid.
    two_level: Option<TwoLevel>,
    device: Device,
}

fn members_of(assigned: &[Top2], k: usize, border: f32) -> Vec<Vec<u32>> {
    let mut members = vec![Vec::new(); k];
    for (i, t) in assigned.iter().enumerate() {
        if t.best as usize >= k {
            continue; // no nearest centroid (a NaN vector): in no cluster, rather than a panic
        }
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
        Self { data, centroids, probes: DEFAULT_PROBES, members, border, two_level: None, device }
    }

    /// A k-NN index over `data` with `params.k` clusters found by a two-level k-means
    /// ([`TwoLevel`]): training, assigning the rows and finding a query's nearest clusters each
    /// cost about 2√k products per vector instead of k, so the index can use many small
    /// clusters. Rows belong to their nearest cluster only (no border copies).
    pub fn build_two_level(data: &'a Matrix, params: KMeansParams, device: Device) -> Result<Self> {
        let t0 = std::time::Instant::now();
        let quantiser = TwoLevel::train(data, params, &device)?;
        let nearest = quantiser.nearest(data, 1, &device)?;
        let assigned: Vec<Top2> = nearest
            .iter()
            .map(|l| {
                let (best, best_sim) = l[0];
                Top2 { best, best_sim, second: u32::MAX, second_sim: f32::NEG_INFINITY }
            })
            .collect();
        tracing::info!(
            "two-level k-means: {} groups of {} clusters in {:.1?}",
            quantiser.groups.len(),
            quantiser.fine.rows(),
            t0.elapsed()
        );
        let mut index = Self::from_assignment(data, quantiser.fine.clone(), &assigned, 0.0, device);
        index.two_level = Some(quantiser);
        Ok(index)
    }

    /// k-NN queries search their `probes` nearest clusters (more: better recall, slower).
    pub fn with_probes(mut self, probes: usize) -> Self {
        self.probes = probes.max(1);
        self
    }

    pub fn centroids(&self) -> &Matrix {
        &self.centroids
    }

    /// Cluster members (nearest plus border), for reports and tests.
    pub fn members(&self) -> &[Vec<u32>] {
        &self.members
    }

    /// Each cluster's members, giving up the index (for a caller that searches them again).
    pub fn into_members(self) -> Vec<Vec<u32>> {
        self.members
    }

    /// The clusters each row of `queries` belongs to (nearest, plus border ones), as members of
    /// each cluster: what [`NeighbourIndex::range_search`] searches against each cluster.
    pub fn query_members(&self, queries: &Matrix) -> Result<Vec<Vec<u32>>> {
        let assigned = kmeans::assign(queries, &self.centroids, &self.device)?;
        Ok(members_of(&assigned, self.members.len(), self.border))
    }

    /// [`NeighbourIndex::self_pairs`] restricted to the clusters `c` with `wanted(c)`: the pairs
    /// found inside those clusters only. The union over any split of the clusters, put through
    /// [`sort_dedup`](super::sort_dedup), is exactly `self_pairs` (which is this with every cluster), so clusters
    /// can be searched by separate processes (`sieve dedup-partition`).
    pub fn self_pairs_in(&self, threshold: f32, wanted: impl Fn(usize) -> bool + Sync) -> Result<Vec<Pair>> {
        let mut pairs = Vec::new();
        self.self_pairs_each_in(threshold, &wanted, &mut |b| {
            pairs.extend(b);
            Ok(())
        })?;
        Ok(pairs)
    }

    /// [`Self::self_pairs_in`] handed to `f` in batches sorted by `(a, b)` across the whole
    /// stream (see [`merge_each`]): at most a block of query rows per cluster is held.
    pub fn self_pairs_each_in(
        &self,
        threshold: f32,
        wanted: &dyn Fn(usize) -> bool,
        f: &mut dyn FnMut(Vec<Pair>) -> Result<()>,
    ) -> Result<()> {
        merge_each(cluster_pieces(self.data, self.data, None, &self.members, threshold, &self.device, wanted), f)
    }
}

/// One cluster's exact search as a [`SortedBatches`] piece: its query rows `qs` against its rows
/// `ds` (ascending rows of the whole collections; a self-join when `qs` is `ds` of the same
/// matrix), a block of query rows at a time, gathered and searched when pulled. The blocks and
/// tiles are those of [`ExactIndex`] over the gathered cluster, so are the similarities.
struct ClusterBlocks<'a> {
    queries: &'a Matrix,
    data: &'a Matrix,
    qs: &'a [u32],
    ds: &'a [u32],
    self_join: bool,
    threshold: f32,
    device: Device,
    next: usize,
}

impl ClusterBlocks<'_> {
    /// Query rows `r0..r1` of this cluster, in the collections' numbering.
    fn block(&self, r0: usize, r1: usize) -> Result<Vec<Pair>> {
        if self.self_join {
            // A self-join block reads the cluster's rows from its first one on.
            let sub = self.data.gather_u32(&self.ds[r0..]);
            let pairs = exact::search_rows(&sub, &sub, 0, r1 - r0, self.threshold, true, &self.device)?;
            let rows = &self.ds[r0..];
            Ok(pairs.into_iter().map(|p| Pair { a: rows[p.a as usize], b: rows[p.b as usize], sim: p.sim }).collect())
        } else {
            let (sub_q, sub_d) = (self.queries.gather_u32(&self.qs[r0..r1]), self.data.gather_u32(self.ds));
            let pairs = exact::search_rows(&sub_q, &sub_d, 0, r1 - r0, self.threshold, false, &self.device)?;
            let qs = &self.qs[r0..r1];
            Ok(pairs.into_iter().map(|p| Pair { a: qs[p.a as usize], b: self.ds[p.b as usize], sim: p.sim }).collect())
        }
    }
}

impl SortedBatches for ClusterBlocks<'_> {
    fn next_a(&self) -> Option<u32> {
        self.qs.get(self.next).copied()
    }

    fn pull(&mut self, blocks: usize) -> Result<Vec<Pair>> {
        let rows = exact::block_rows(&self.device);
        let n = self.qs.len();
        let starts: Vec<usize> = (self.next..n).step_by(rows).take(blocks.max(1)).collect();
        self.next = (self.next + rows * starts.len()).min(n);
        let parts: Vec<Vec<Pair>> =
            starts.par_iter().map(|&r0| self.block(r0, (r0 + rows).min(n))).collect::<Result<_>>()?;
        Ok(parts.concat())
    }
}

/// The pieces of a search inside clusters, one per cluster `c` with `wanted(c)` and something to
/// search: rows `q_members[c]` of `queries` against rows `members[c]` of `data`, or, without
/// `q_members`, the members of each cluster among themselves (`queries` is then `data`). Merged
/// by [`merge_each`], they give what collecting every cluster's pairs and [`sort_dedup`](super::sort_dedup) give.
pub(crate) fn cluster_pieces<'a>(
    queries: &'a Matrix,
    data: &'a Matrix,
    q_members: Option<&'a [Vec<u32>]>,
    members: &'a [Vec<u32>],
    threshold: f32,
    device: &Device,
    wanted: &dyn Fn(usize) -> bool,
) -> Vec<Box<dyn SortedBatches + 'a>> {
    let mut pieces: Vec<Box<dyn SortedBatches + 'a>> = Vec::new();
    for (c, ds) in members.iter().enumerate() {
        let qs = match q_members {
            Some(q) => &q[c][..],
            None => &ds[..],
        };
        let searchable = if q_members.is_some() { !qs.is_empty() && !ds.is_empty() } else { ds.len() >= 2 };
        if searchable && wanted(c) {
            pieces.push(Box::new(ClusterBlocks {
                queries,
                data,
                qs,
                ds,
                self_join: q_members.is_none(),
                threshold,
                device: device.clone(),
                next: 0,
            }));
        }
    }
    pieces
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

    fn self_pairs_each(&self, threshold: f32, f: &mut dyn FnMut(Vec<Pair>) -> Result<()>) -> Result<()> {
        self.self_pairs_each_in(threshold, &|_| true, f)
    }

    fn range_search(&self, queries: &Matrix, threshold: f32) -> Result<Vec<Pair>> {
        let q_members = self.query_members(queries)?;
        let pieces =
            cluster_pieces(queries, self.data, Some(&q_members), &self.members, threshold, &self.device, &|_| true);
        let mut pairs = Vec::new();
        merge_each(pieces, &mut |b| {
            pairs.extend(b);
            Ok(())
        })?;
        Ok(pairs)
    }

    fn knn(&self, queries: &Matrix, k: usize, skip: Option<&[u32]>) -> Result<Vec<Neighbours>> {
        let probes = self.probes.min(self.centroids.rows());
        let started = std::time::Instant::now();
        let nearest = match &self.two_level {
            Some(q) => q.nearest(queries, probes, &self.device)?,
            None => ExactIndex::new(&self.centroids, self.device.clone()).knn(queries, probes, None)?,
        };
        let looked_up = started.elapsed();
        let found =
            knn_in_clusters(queries, self.data, &self.members, &nearest, k, skip, &self.device, "clustered k-NN")?;
        tracing::debug!(
            "clustered k-NN of {} queries: their {probes} nearest clusters in {looked_up:.2?}, searched in {:.2?}",
            queries.rows(),
            started.elapsed() - looked_up
        );
        Ok(found)
    }
}

/// Each query's `k` most similar rows of `data` within the clusters `nearest[q]` names
/// (`members[c]`: the rows of cluster c), never row `skip[q]`: every cluster is searched for its
/// `k` best (one more with `skip`) and the answers merged, a row in two clusters counted once.
///
/// The answers land in one flat array of `probes × want` slots per query rather than a list per
/// (query, cluster): on 1M queries the millions of small lists cost as much time to allocate and
/// gather as the search's products.
#[allow(clippy::too_many_arguments)]
fn knn_in_clusters(
    queries: &Matrix,
    data: &Matrix,
    members: &[Vec<u32>],
    nearest: &[Neighbours],
    k: usize,
    skip: Option<&[u32]>,
    device: &Device,
    what: &str,
) -> Result<Vec<Neighbours>> {
    if queries.dim() != data.dim() {
        return Err(crate::Error::DimMismatch { expected: data.dim(), found: queries.dim() });
    }
    let want = k + usize::from(skip.is_some());
    let probes = nearest.iter().map(Vec::len).max().unwrap_or(0);
    if k == 0 || probes == 0 {
        return Ok(vec![Vec::new(); queries.rows()]);
    }
    // asked[c]: the queries that probe cluster c, and the slot (q·probes + j) of each answer.
    let mut asked: Vec<(Vec<u32>, Vec<u32>)> = vec![(Vec::new(), Vec::new()); members.len()];
    for (q, cs) in nearest.iter().enumerate() {
        for (j, &(c, _)) in cs.iter().enumerate() {
            let (qs, slots) = &mut asked[c as usize];
            qs.push(q as u32);
            slots.push((q * probes + j) as u32);
        }
    }
    let progress = Progress::new(members.len() as u64, what, "clusters");
    // Each cluster's answers, `want` per query (short lists padded with `EMPTY`), as rows of
    // `data`.
    let answer = |lists: Vec<Neighbours>, ds: &[u32]| -> Vec<(u32, f32)> {
        let mut flat = Vec::with_capacity(lists.len() * want);
        for l in lists {
            let n = l.len();
            flat.extend(l.into_iter().map(|(j, s)| (ds[j as usize], s)));
            flat.extend(std::iter::repeat_n(EMPTY, want - n));
        }
        flat
    };
    let found: Vec<(usize, Vec<(u32, f32)>)> = if device.is_cpu() {
        // The largest products first, so the last to finish are small; each thread reuses its
        // buffers from cluster to cluster (see `topk::knn_gathered`).
        let packed = crate::linalg::panels::Panels::available();
        let mut order: Vec<usize> =
            (0..members.len()).filter(|&c| !asked[c].0.is_empty() && !members[c].is_empty()).collect();
        order.sort_by_key(|&c| std::cmp::Reverse(asked[c].0.len() * members[c].len()));
        order
            .par_iter()
            .map_init(
                || (Vec::new(), topk::Scratch::default()),
                |(rows, scratch), &c| {
                    progress.inc(1);
                    let (qs, ds) = (&asked[c].0, &members[c]);
                    let lists = if packed && qs.len() < ds.len() {
                        topk::knn_packed_queries(queries, qs, data, ds, want, scratch)
                    } else if packed {
                        scratch.panels.pack(data.dim(), ds.iter().map(|&r| data.row(r as usize)));
                        topk::knn_packed(queries, qs, want, scratch)
                    } else {
                        rows.clear();
                        for &r in ds {
                            rows.extend_from_slice(data.row(r as usize));
                        }
                        topk::knn_gathered(queries, qs, rows, data.dim(), want, scratch)
                    };
                    (c, answer(lists, ds))
                },
            )
            .collect()
    } else {
        asked
            .par_iter()
            .zip(members.par_iter())
            .enumerate()
            .filter(|(_, ((qs, _), ds))| !qs.is_empty() && !ds.is_empty())
            .map(|(c, ((qs, _), ds))| -> Result<(usize, Vec<(u32, f32)>)> {
                progress.inc(1);
                let (sub_q, sub_d) = (queries.gather_u32(qs), data.gather_u32(ds));
                let lists = ExactIndex::new(&sub_d, device.clone()).knn(&sub_q, want, None)?;
                Ok((c, answer(lists, ds)))
            })
            .collect::<Result<_>>()?
    };
    let mut slots = vec![EMPTY; queries.rows() * probes * want];
    for (c, flat) in found {
        for (&slot, answer) in asked[c].1.iter().zip(flat.chunks_exact(want)) {
            slots[slot as usize * want..][..want].copy_from_slice(answer);
        }
    }
    Ok(slots
        .par_chunks(probes * want)
        .enumerate()
        .map(|(q, s)| {
            let skip_row = skip.map(|s| s[q]);
            topk::merge(s.iter().copied().filter(|&(r, _)| r != EMPTY.0 && Some(r) != skip_row), k)
        })
        .collect())
}

/// A slot no answer filled.
const EMPTY: (u32, f32) = (u32::MAX, f32::NEG_INFINITY);

/// Centroids in two levels, as hierarchical k-means builds them: `√k` coarse centroids trained on
/// a sample, then each coarse cluster's share of the sample split into fine centroids (in
/// proportion to its size, `k` in all). A vector's nearest fine centroids are looked for among
/// the fine centroids of its [`COARSE_PROBES`] nearest coarse ones, so training and lookup cost
/// about `2√k` products per vector instead of `k`; the answer is approximate (a vector near a
/// coarse border may miss its very nearest fine centroid for a near one).
#[derive(Debug, Clone)]
pub struct TwoLevel {
    coarse: Matrix,
    fine: Matrix,
    /// Fine centroids (rows of `fine`) under each coarse one.
    groups: Vec<Vec<u32>>,
}

/// Coarse clusters whose fine centroids a lookup compares. With 3, a small test's k-NN recall
/// fell from 0.99 (every centroid compared) to 0.85; with 6 it is 0.97 there, and the
/// million-pair rank test costs 35 s instead of 33 s.
pub const COARSE_PROBES: usize = 6;

impl TwoLevel {
    /// Trains about `params.k` fine centroids on a seeded sample of `data` of
    /// `params.max_points_per_centroid` rows per fine centroid (or `params.sample`).
    pub fn train(data: &Matrix, params: KMeansParams, device: &Device) -> Result<Self> {
        let (n, d) = (data.rows(), data.dim());
        let k = params.k.clamp(1, n.max(1));
        let m = match params.sample {
            Some(s) => s.clamp(k, n),
            None => n.min(k.saturating_mul(params.max_points_per_centroid.max(1))),
        };
        let mut rng = StdRng::seed_from_u64(params.seed);
        let mut picked = rand::seq::index::sample(&mut rng, n, m).into_vec();
        picked.sort_unstable();
        let sample = Matrix::gather(data.as_slice(), d, &picked);
        let k1 = ((k as f64).sqrt().round() as usize).clamp(1, k);
        let progress = Progress::new(k1 as u64 + 1, "two-level k-means", "groups");
        let coarse_params = KMeansParams { k: k1, sample: Some(m), ..params };
        let coarse = kmeans::train(&sample, coarse_params, device)?;
        progress.inc(1);
        let mut parts: Vec<Vec<u32>> = vec![Vec::new(); k1];
        for (i, t) in kmeans::assign(&sample, &coarse, device)?.iter().enumerate() {
            parts[t.best as usize].push(i as u32);
        }
        // Fine centroids per coarse cluster: proportional to its sample rows (largest
        // remainders), at least one for a nonempty cluster, at most its rows.
        let quota: Vec<f64> = parts.iter().map(|p| p.len() as f64 * k as f64 / m as f64).collect();
        let mut share: Vec<usize> = parts
            .iter()
            .zip(&quota)
            .map(|(p, &q)| if p.is_empty() { 0 } else { (q.floor() as usize).max(1) })
            .collect();
        let mut order: Vec<usize> = (0..k1).collect();
        order.sort_by(|&a, &b| (quota[b] - quota[b].floor()).total_cmp(&(quota[a] - quota[a].floor())).then(a.cmp(&b)));
        let mut left = k.saturating_sub(share.iter().sum());
        for &c in order.iter().cycle().take(k1 * 2) {
            if left == 0 {
                break;
            }
            if share[c] < parts[c].len() && !parts[c].is_empty() {
                share[c] += 1;
                left -= 1;
            }
        }
        let fine_parts: Vec<Matrix> = parts
            .par_iter()
            .zip(&share)
            .enumerate()
            .map(|(c, (rows, &kc))| -> Result<Matrix> {
                let kc = kc.min(rows.len());
                if kc == 0 {
                    return Matrix::new(d, Vec::new());
                }
                let rows: Vec<usize> = rows.iter().map(|&r| r as usize).collect();
                let sub = Matrix::gather(sample.as_slice(), d, &rows);
                let p = KMeansParams {
                    k: kc,
                    sample: Some(rows.len()),
                    seed: params.seed.wrapping_add(1 + c as u64),
                    ..params
                };
                let fine = kmeans::train(&sub, p, device)?;
                progress.inc(1);
                Ok(fine)
            })
            .collect::<Result<_>>()?;
        let mut fine = Vec::with_capacity(k * d);
        let mut groups = Vec::with_capacity(k1);
        for f in &fine_parts {
            let first = fine.len() / d;
            groups.push((first as u32..(first + f.rows()) as u32).collect());
            fine.extend_from_slice(f.as_slice());
        }
        Ok(Self { coarse, fine: Matrix::new(d, fine)?, groups })
    }

    pub fn fine(&self) -> &Matrix {
        &self.fine
    }

    /// The `p` nearest fine centroids of each row of `rows` (among those of its
    /// [`COARSE_PROBES`] nearest coarse centroids), most similar first.
    pub fn nearest(&self, rows: &Matrix, p: usize, device: &Device) -> Result<Vec<Neighbours>> {
        let coarse =
            ExactIndex::new(&self.coarse, device.clone()).knn(rows, COARSE_PROBES.min(self.coarse.rows()), None)?;
        knn_in_clusters(rows, &self.fine, &self.groups, &coarse, p, None, device, "nearest clusters")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::synthetic::planted;

    #[test]
    fn two_level_centroids_are_grouped_once_and_lookup_finds_the_nearest_almost_always() {
        let data = planted(4000, 32, 0.1, 3);
        let params = KMeansParams::new(150, 5);
        let q = TwoLevel::train(&data, params, &Device::Cpu).unwrap();
        assert_eq!(q.fine().rows(), 150);
        assert_eq!(q.groups.len(), 12);
        let mut all: Vec<u32> = q.groups.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..150).collect::<Vec<u32>>(), "every fine centroid in exactly one group");
        let again = TwoLevel::train(&data, params, &Device::Cpu).unwrap();
        assert_eq!(again.fine(), q.fine(), "seeded: the same centroids");

        let got = q.nearest(&data, 2, &Device::Cpu).unwrap();
        let exact = ExactIndex::new(q.fine(), Device::Cpu).knn(&data, 1, None).unwrap();
        let mut same = 0;
        for (i, (g, e)) in got.iter().zip(&exact).enumerate() {
            assert_eq!(g.len(), 2);
            assert!(g[0].1 >= g[1].1);
            let (c, sim) = g[0];
            assert!((sim - crate::index::dot(data.row(i), q.fine().row(c as usize))).abs() < 1e-5);
            same += usize::from(c == e[0].0);
        }
        assert!(same as f64 >= 0.9 * data.rows() as f64, "nearest centroid found for {same} of {}", data.rows());
    }

    #[test]
    fn knn_answers_every_query_for_any_k_with_or_without_skip() {
        let data = planted(600, 16, 0.0, 4);
        let index = ClusteredIndex::build(&data, KMeansParams::new(12, 5), 0.0, Device::Cpu).unwrap().with_probes(3);
        let skip: Vec<u32> = (0..600).collect();
        for k in [0, 1, 5] {
            let plain = index.knn(&data, k, None).unwrap();
            let skipped = index.knn(&data, k, Some(&skip)).unwrap();
            assert_eq!((plain.len(), skipped.len()), (600, 600), "k {k}");
            for (q, (p, s)) in plain.iter().zip(&skipped).enumerate() {
                assert_eq!((p.len(), s.len()), (k, k), "k {k}, query {q}");
                if k > 0 {
                    assert_eq!(p[0].0, q as u32, "a row is its own nearest");
                    assert!(s.iter().all(|&(r, _)| r != q as u32), "the skipped row returned");
                }
            }
        }
    }
}
