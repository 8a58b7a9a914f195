//! A kind's duplicate pairs as a stream that can be read again, so `sieve dedup` never has to
//! hold every pair: near-duplicate-heavy data has quadratically many (20k copies of one
//! picture: 200M pairs, 2.4 GB at 12 bytes each), while everything dedup derives from them
//! (the decision, groups, bridges) needs only O(n) state per pass.
//!
//! A [`PairSource`] hands its pairs in batches, sorted by `(a, b)` over the whole stream. The
//! first read keeps a copy while the pairs stay within a budget linear in the number of items
//! ([`CACHE_PAIRS_PER_ITEM`]); later reads replay that copy, so an ordinary corpus is searched
//! once as before. Beyond the budget the copy is dropped and every read searches again: more
//! time, bounded memory.

use std::cell::{Cell, RefCell};

use crate::error::Result;
use crate::index::Pair;

/// Pairs a source may keep per item for replaying without searching again (12 bytes each:
/// 768 bytes per item, less than one 512-d f32 vector's 2 KiB).
pub const CACHE_PAIRS_PER_ITEM: usize = 64;

/// Pairs handed per batch when replaying a kept copy.
const REPLAY_BATCH: usize = 1 << 16;

/// Hands batches of pairs to a consumer, in `(a, b)` order; the same pairs on every call.
pub(crate) type Produce<'a> = Box<dyn Fn(&mut dyn FnMut(Vec<Pair>) -> Result<()>) -> Result<()> + 'a>;

enum Kept {
    /// Not read through yet.
    Unread,
    /// Every pair, within the budget.
    All(Vec<Pair>),
    /// Over budget: each read produces the pairs again.
    TooMany,
}

/// One kind's pairs, readable any number of times (see the module doc).
pub(crate) struct PairSource<'a> {
    produce: Option<Produce<'a>>,
    kept: RefCell<Kept>,
    budget: usize,
    len: Cell<Option<usize>>,
}

impl<'a> PairSource<'a> {
    /// Pairs already in memory (read from `dedup-partition` files, or found by a search that
    /// returns them all at once).
    pub(crate) fn held(pairs: Vec<Pair>) -> Self {
        Self { produce: None, len: Cell::new(Some(pairs.len())), kept: RefCell::new(Kept::All(pairs)), budget: 0 }
    }

    /// Pairs `produce` finds, for `n` items: kept after the first read while within a budget of
    /// `per_item` pairs per item ([`CACHE_PAIRS_PER_ITEM`] by default, `--cache-pairs-per-item`:
    /// 0 streams every pass, which checks that streaming changes nothing).
    pub(crate) fn new(n: usize, per_item: usize, produce: Produce<'a>) -> Self {
        let budget = per_item.saturating_mul(n);
        Self { produce: Some(produce), kept: RefCell::new(Kept::Unread), budget, len: Cell::new(None) }
    }

    /// Calls `f` with every pair, in batches sorted by `(a, b)` across the whole stream.
    pub(crate) fn each(&self, f: &mut dyn FnMut(&[Pair]) -> Result<()>) -> Result<()> {
        if let Kept::All(pairs) = &*self.kept.borrow() {
            for batch in pairs.chunks(REPLAY_BATCH) {
                f(batch)?;
            }
            return Ok(());
        }
        let produce = self.produce.as_ref().expect("a source without pairs held produces them");
        let first = matches!(*self.kept.borrow(), Kept::Unread);
        let mut copy: Option<Vec<Pair>> = first.then(Vec::new);
        let mut count = 0usize;
        produce(&mut |batch: Vec<Pair>| {
            count += batch.len();
            if let Some(c) = &mut copy {
                if c.len() + batch.len() <= self.budget {
                    c.extend_from_slice(&batch);
                } else {
                    copy = None;
                }
            }
            f(&batch)
        })?;
        self.len.set(Some(count));
        *self.kept.borrow_mut() = match copy {
            Some(c) => Kept::All(c),
            None => Kept::TooMany,
        };
        Ok(())
    }

    /// The number of pairs (reading them once if not read yet).
    pub(crate) fn len(&self) -> Result<usize> {
        if self.len.get().is_none() {
            self.each(&mut |_| Ok(()))?;
        }
        Ok(self.len.get().expect("counted"))
    }

    /// Every pair in one vector (for callers that need them all, e.g. `sieve dedup-calibrate`).
    pub(crate) fn collect(&self) -> Result<Vec<Pair>> {
        let mut all = Vec::new();
        self.each(&mut |b| {
            all.extend_from_slice(b);
            Ok(())
        })?;
        Ok(all)
    }

    /// Whether every pair is held in memory, so reading them again costs no search.
    pub(crate) fn is_held(&self) -> bool {
        matches!(*self.kept.borrow(), Kept::All(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: u32, b: u32) -> Pair {
        Pair { a, b, sim: 1.0 }
    }

    #[test]
    fn keeps_a_copy_only_within_the_budget() {
        let runs = Cell::new(0);
        let make = |k: u32| {
            let runs = &runs;
            Box::new(move |f: &mut dyn FnMut(Vec<Pair>) -> Result<()>| {
                runs.set(runs.get() + 1);
                (0..k).try_for_each(|a| f(vec![p(a, a + 1), p(a, a + 2)]))
            }) as Produce<'_>
        };
        // 2 items' budget: 128 pairs; 10 pairs fit, so the second read replays.
        let small = PairSource::new(2, CACHE_PAIRS_PER_ITEM, make(5));
        assert_eq!(small.len().unwrap(), 10);
        assert_eq!(small.collect().unwrap().len(), 10);
        assert!(small.is_held());
        assert_eq!(runs.get(), 1);
        // 200 pairs do not fit: every read produces them again, in the same order.
        let big = PairSource::new(2, CACHE_PAIRS_PER_ITEM, make(100));
        let first = big.collect().unwrap();
        assert!(!big.is_held());
        assert_eq!(big.collect().unwrap(), first);
        assert_eq!(runs.get(), 3);
    }
}
