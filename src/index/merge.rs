//! Pairs as several sorted streams merged into one, so a search made of pieces (the clusters of
//! a clustered search, or a self-search next to a search against another collection) hands
//! its pairs over in global `(a, b)` order without holding them all.
//!
//! Each piece is a [`SortedBatches`]: batches sorted by `(a, b)`, pulled on demand, with a
//! lower bound on the `a` of the pairs it has not handed yet. [`merge_each`] hands on every
//! buffered pair whose `a` is below the least of those bounds (all of them are in by then),
//! sorted, repeats dropped as [`sort_dedup`] drops them, in batches of at most [`BATCH`] pairs,
//! then pulls the pieces holding the bound back. So at most one pulled batch per piece waits
//! (in chunks, freed as they are handed on), besides the batch handed on.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use rayon::prelude::*;

use super::{sort_dedup, Pair};
use crate::error::Result;

/// A piece of a search whose pairs come in batches sorted by `(a, b)`, each batch's pairs after
/// the previous batch's.
pub trait SortedBatches: Send {
    /// No pair still to be pulled has an `a` below this; `None` once every pair was pulled.
    fn next_a(&self) -> Option<u32>;

    /// The next batch, of up to `blocks` units of work (pieces may compute them in parallel).
    /// Called only while [`Self::next_a`] is `Some`; every pair has `a ≥` that bound.
    fn pull(&mut self, blocks: usize) -> Result<Vec<Pair>>;
}

/// Pairs already in memory, sorted (the merge's tests).
#[cfg(test)]
pub struct Held {
    pairs: Option<Vec<Pair>>,
}

#[cfg(test)]
impl Held {
    pub fn new(pairs: Vec<Pair>) -> Self {
        Self { pairs: (!pairs.is_empty()).then_some(pairs) }
    }
}

#[cfg(test)]
impl SortedBatches for Held {
    fn next_a(&self) -> Option<u32> {
        self.pairs.as_ref().map(|p| p[0].a)
    }

    fn pull(&mut self, _blocks: usize) -> Result<Vec<Pair>> {
        Ok(self.pairs.take().unwrap_or_default())
    }
}

/// Another piece's pairs with `b` moved up by `offset` (rows of a second collection numbered
/// after the first's).
pub struct ShiftB<'a> {
    pub inner: Box<dyn SortedBatches + 'a>,
    pub offset: u32,
}

impl SortedBatches for ShiftB<'_> {
    fn next_a(&self) -> Option<u32> {
        self.inner.next_a()
    }

    fn pull(&mut self, blocks: usize) -> Result<Vec<Pair>> {
        let mut v = self.inner.pull(blocks)?;
        for p in &mut v {
            p.b += self.offset;
        }
        Ok(v)
    }
}

/// Pairs handed on per batch at most (more only when one item's pairs alone are more).
const BATCH: usize = 1 << 20;
/// Pulled pairs wait in chunks of at most this many, so the ones handed on are freed as they go.
const CHUNK: usize = 1 << 16;

/// A piece's pulled pairs not handed on yet, in order.
#[derive(Default)]
struct Waiting {
    chunks: VecDeque<Vec<Pair>>,
}

impl Waiting {
    fn first_a(&self) -> Option<u32> {
        self.chunks.front().map(|c| c[0].a)
    }

    fn push(&mut self, pairs: Vec<Pair>) {
        if pairs.len() <= CHUNK {
            if !pairs.is_empty() {
                self.chunks.push_back(pairs);
            }
        } else {
            self.chunks.extend(pairs.chunks(CHUNK).map(<[Pair]>::to_vec));
        }
    }

    /// How many waiting pairs have `a < x`.
    fn count_below(&self, x: u32) -> usize {
        let mut n = 0;
        for c in &self.chunks {
            if c[c.len() - 1].a < x {
                n += c.len();
            } else {
                return n + c.partition_point(|p| p.a < x);
            }
        }
        n
    }

    /// Moves the waiting pairs with `a < x` to `out`.
    fn take_below(&mut self, x: u32, out: &mut Vec<Pair>) {
        while let Some(c) = self.chunks.front_mut() {
            if c[c.len() - 1].a < x {
                out.extend_from_slice(c);
                self.chunks.pop_front();
            } else {
                let k = c.partition_point(|p| p.a < x);
                out.extend_from_slice(&c[..k]);
                c.drain(..k);
                return;
            }
        }
    }
}

/// Hands every pair of `pieces` to `f` in batches sorted by `(a, b)` over the whole stream,
/// repeats (a pair found by two pieces) dropped keeping the lowest similarity: the pairs, in
/// order, that collecting every piece and calling [`sort_dedup`] gives. Batches hold at most
/// [`BATCH`] pairs unless one item has more.
pub fn merge_each<'a>(
    mut pieces: Vec<Box<dyn SortedBatches + 'a>>,
    f: &mut dyn FnMut(Vec<Pair>) -> Result<()>,
) -> Result<()> {
    let threads = rayon::current_num_threads().max(1);
    let mut waiting: Vec<Waiting> = (0..pieces.len()).map(|_| Waiting::default()).collect();
    // Pieces with pairs to pull, by their bound; pieces with waiting pairs, by the first one.
    let mut to_pull: BinaryHeap<Reverse<(u32, usize)>> =
        pieces.iter().enumerate().filter_map(|(i, p)| Some(Reverse((p.next_a()?, i)))).collect();
    let mut queued: BinaryHeap<Reverse<(u32, usize)>> = BinaryHeap::new();
    loop {
        // Every pair with `a` below the bound has been pulled: hand those on.
        let bound = to_pull.peek().map_or(u32::MAX as u64 + 1, |r| r.0 .0 as u64);
        let mut active: Vec<usize> = Vec::new();
        while let Some(&Reverse((a, i))) = queued.peek() {
            if a as u64 >= bound {
                break;
            }
            queued.pop();
            active.push(i);
        }
        if let Some(lowest) = active.iter().filter_map(|&i| waiting[i].first_a()).min() {
            let mut from = lowest as u64;
            while from < bound {
                // The next batch ends at `to`: the bound, or sooner to stay within BATCH pairs.
                let count = |x: u64| -> usize { active.iter().map(|&i| count_below_u64(&waiting[i], x)).sum() };
                let mut to = bound;
                if count(to) > BATCH {
                    let (mut lo, mut hi) = (from + 1, bound);
                    while lo < hi {
                        let mid = lo + (hi - lo).div_ceil(2);
                        if count(mid) <= BATCH {
                            lo = mid;
                        } else {
                            hi = mid - 1;
                        }
                    }
                    to = lo;
                }
                let mut out = Vec::new();
                for &i in &active {
                    take_below_u64(&mut waiting[i], to, &mut out);
                }
                if !out.is_empty() {
                    sort_dedup(&mut out);
                    f(out)?;
                }
                from = to;
            }
        }
        for i in active {
            if let Some(a) = waiting[i].first_a() {
                queued.push(Reverse((a, i)));
            }
        }
        if bound > u32::MAX as u64 {
            return Ok(());
        }
        let bound = bound as u32;
        // Every piece at the bound must be pulled; with threads to spare, also the next pieces
        // that wait with nothing pulled.
        let mut pick: Vec<usize> = Vec::new();
        while let Some(&Reverse((a, i))) = to_pull.peek() {
            if a != bound && (pick.len() >= threads || waiting[i].first_a().is_some()) {
                break;
            }
            to_pull.pop();
            pick.push(i);
        }
        let blocks = threads.div_ceil(pick.len()).max(1);
        pick.sort_unstable();
        let mut chosen: Vec<(usize, &mut Box<dyn SortedBatches + 'a>)> = Vec::with_capacity(pick.len());
        let mut next = pick.iter().peekable();
        for (i, p) in pieces.iter_mut().enumerate() {
            if next.peek() == Some(&&i) {
                next.next();
                chosen.push((i, p));
            }
        }
        let pulled: Vec<(usize, Result<Vec<Pair>>, Option<u32>)> = chosen
            .into_par_iter()
            .map(|(i, p)| {
                let got = p.pull(blocks);
                (i, got, p.next_a())
            })
            .collect();
        for (i, got, next_a) in pulled {
            let got = got?;
            if let Some(a) = next_a {
                to_pull.push(Reverse((a, i)));
            }
            let was_waiting = waiting[i].first_a().is_some();
            waiting[i].push(got);
            if !was_waiting {
                if let Some(a) = waiting[i].first_a() {
                    queued.push(Reverse((a, i)));
                }
            }
        }
    }
}

/// [`Waiting::count_below`] for a bound that may be past every `u32`.
fn count_below_u64(w: &Waiting, x: u64) -> usize {
    if x > u32::MAX as u64 {
        w.chunks.iter().map(Vec::len).sum()
    } else {
        w.count_below(x as u32)
    }
}

/// [`Waiting::take_below`] for a bound that may be past every `u32`.
fn take_below_u64(w: &mut Waiting, x: u64, out: &mut Vec<Pair>) {
    if x > u32::MAX as u64 {
        for c in w.chunks.drain(..) {
            out.extend(c);
        }
    } else {
        w.take_below(x as u32, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A piece handing fixed batches, one per pull.
    struct Batches(Vec<Vec<Pair>>, usize);

    impl SortedBatches for Batches {
        fn next_a(&self) -> Option<u32> {
            self.0.get(self.1).map(|b| b.first().map_or(0, |p| p.a))
        }
        fn pull(&mut self, _blocks: usize) -> Result<Vec<Pair>> {
            self.1 += 1;
            Ok(self.0[self.1 - 1].clone())
        }
    }

    fn p(a: u32, b: u32, sim: f32) -> Pair {
        Pair { a, b, sim }
    }

    #[test]
    fn merging_gives_the_sorted_union_with_repeats_dropped_at_their_lowest_similarity() {
        let one = vec![vec![p(0, 1, 0.9), p(0, 5, 0.8), p(2, 3, 0.7)], vec![], vec![p(4, 9, 0.5), p(7, 8, 0.6)]];
        let two = vec![vec![p(0, 5, 0.7), p(1, 2, 0.9)], vec![p(4, 9, 0.4), p(4, 10, 0.95)], vec![p(9, 11, 0.5)]];
        let three = vec![vec![p(3, 4, 1.0)]];
        let mut want: Vec<Pair> = one.iter().chain(&two).chain(&three).flatten().copied().collect();
        sort_dedup(&mut want);
        let pieces: Vec<Box<dyn SortedBatches>> = vec![
            Box::new(Batches(one, 0)),
            Box::new(Batches(two, 0)),
            Box::new(Batches(three, 0)),
            Box::new(Held::new(Vec::new())),
        ];
        let mut got = Vec::new();
        let mut last = None;
        merge_each(pieces, &mut |batch| {
            assert!(!batch.is_empty());
            for q in &batch {
                assert!(last < Some((q.a, q.b)), "sorted across batches, no repeats");
                last = Some((q.a, q.b));
            }
            got.extend(batch);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, want);
        assert_eq!(got.iter().find(|q| (q.a, q.b) == (0, 5)).unwrap().sim, 0.7);
        assert_eq!(got.iter().find(|q| (q.a, q.b) == (4, 9)).unwrap().sim, 0.4);
    }
}
