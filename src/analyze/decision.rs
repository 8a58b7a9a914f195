//! The one removal decision of `sieve dedup` and the groups written from it.
//!
//! Each kind of duplicate is a [`Relation`] (sets of identical files, or pairs within the kind's
//! threshold). [`decide`] removes an item when an item kept before it in keep order is its
//! direct duplicate under any removal kind; [`removal_groups`] and [`report_groups`] turn that
//! decision into the rows of `groups.parquet`, and [`diagnostics`] says how tight each group is
//! and which pairs of a kind join two groups.
//!
//! Pairs are read as streams ([`PairSource`]), each pass with O(n) state: near-duplicate-heavy
//! data has quadratically many pairs, which are never all held here.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use super::groups::{self, Grouping};
use super::stream::PairSource;
use crate::error::Result;
use crate::index::Pair;

/// One kind's duplicate relation.
pub(crate) enum Relation<'a> {
    /// Sets of items with identical bytes (`exact`): every two members are duplicates.
    Sets(Vec<Vec<u32>>),
    /// Pairs within the kind's threshold, `a < b`, sorted.
    Pairs(Rc<PairSource<'a>>),
}

impl Relation<'_> {
    pub(crate) fn describe(&self) -> Result<String> {
        Ok(match self {
            Relation::Sets(s) => format!("{} sets of identical files", s.len()),
            Relation::Pairs(p) => {
                let n = p.len()?;
                let again = if p.is_held() { "" } else { ", over the memory budget: searched again for each pass" };
                format!("{n} pairs{again}")
            }
        })
    }

    /// Calls `f` with each batch of pairs (none for sets).
    fn each_pair(&self, f: &mut dyn FnMut(&[Pair]) -> Result<()>) -> Result<()> {
        match self {
            Relation::Sets(_) => Ok(()),
            Relation::Pairs(p) => p.each(f),
        }
    }
}

/// Summed similarity of each item to its duplicates under the removal kinds (for `central`),
/// summed in pair order.
pub(crate) fn degree_centrality(n: usize, removal: &[&Relation]) -> Result<Vec<f32>> {
    let mut c = vec![0f32; n];
    for r in removal {
        match r {
            Relation::Pairs(pairs) => pairs.each(&mut |batch| {
                for p in batch {
                    c[p.a as usize] += p.sim;
                    c[p.b as usize] += p.sim;
                }
                Ok(())
            })?,
            Relation::Sets(sets) => {
                for s in sets {
                    for &m in s {
                        c[m as usize] += (s.len() - 1) as f32;
                    }
                }
            }
        }
    }
    Ok(c)
}

const UNKNOWN: u8 = 0;
const LEADS: u8 = 1;
const FOLLOWS: u8 = 2;

/// Greedy leaders over the union of `rels` in `rank` order (lowest first): an item leads unless
/// an item that leads and ranks before it is its duplicate (`force`d items always lead). Visiting
/// items in rank order would need each item's earlier duplicates at hand, that is every pair;
/// instead each round reads the pairs once, settling every item whose earlier duplicates are
/// settled (or one of which leads), and also those whose only unsettled earlier duplicate
/// settles earlier in the same round. The earliest unsettled item always settles, and one
/// round settles a set of stars whole; a chain takes a round per two links where items have
/// several unsettled earlier duplicates.
fn leaders(n: usize, rank: &[u32], rels: &[&Relation], force: &dyn Fn(u32) -> bool) -> Result<Vec<bool>> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_unstable_by_key(|&i| rank[i as usize]);
    // Each set's members in rank order.
    let sets: Vec<Vec<u32>> = rels
        .iter()
        .filter_map(|r| match r {
            Relation::Sets(s) => Some(s),
            Relation::Pairs(_) => None,
        })
        .flatten()
        .map(|s| {
            let mut m = s.clone();
            m.sort_unstable_by_key(|&i| rank[i as usize]);
            m
        })
        .collect();
    let mut status = vec![UNKNOWN; n];
    // Per unsettled item: an earlier duplicate leads; how many earlier duplicates (with
    // repeats) are unsettled, and the best rank among them.
    let mut led = vec![false; n];
    let mut unsettled = vec![0u32; n];
    let mut first = vec![u32::MAX; n];
    let mut rounds = 0;
    loop {
        rounds += 1;
        led.fill(false);
        unsettled.fill(0);
        first.fill(u32::MAX);
        let mut note = |lo: u32, hi: u32| {
            if status[hi as usize] == UNKNOWN {
                match status[lo as usize] {
                    LEADS => led[hi as usize] = true,
                    UNKNOWN => {
                        unsettled[hi as usize] += 1;
                        first[hi as usize] = first[hi as usize].min(rank[lo as usize]);
                    }
                    _ => {}
                }
            }
        };
        for r in rels {
            r.each_pair(&mut |batch| {
                for p in batch {
                    if rank[p.a as usize] < rank[p.b as usize] {
                        note(p.a, p.b);
                    } else {
                        note(p.b, p.a);
                    }
                }
                Ok(())
            })?;
        }
        // Every two members of a set are duplicates: what `note` would gather from each earlier
        // member, gathered in one walk (a set of identical files can be large).
        for s in &sets {
            let (mut leads_before, mut unsettled_before, mut first_before) = (false, 0u32, u32::MAX);
            for &m in s {
                let m_ = m as usize;
                if status[m_] == UNKNOWN {
                    led[m_] |= leads_before;
                    unsettled[m_] += unsettled_before;
                    first[m_] = first[m_].min(first_before);
                    unsettled_before += 1;
                    first_before = first_before.min(rank[m_]);
                }
                leads_before |= status[m_] == LEADS;
            }
        }
        let mut left = 0usize;
        for &i in &order {
            let i_ = i as usize;
            if status[i_] != UNKNOWN {
                continue;
            }
            status[i_] = if force(i) || (!led[i_] && unsettled[i_] == 0) {
                LEADS
            } else if led[i_] {
                FOLLOWS
            } else {
                match status[order[first[i_] as usize] as usize] {
                    LEADS => FOLLOWS,
                    FOLLOWS if unsettled[i_] == 1 => LEADS,
                    _ => UNKNOWN,
                }
            };
            left += usize::from(status[i_] == UNKNOWN);
        }
        if left == 0 {
            break;
        }
    }
    tracing::debug!("leaders settled in {rounds} rounds");
    Ok(status.into_iter().map(|s| s == LEADS).collect())
}

/// For each item, its best-ranked duplicate under `rels` that `leads` (among those ranked
/// before it when `earlier_only`); `u32::MAX` for none.
fn best_leader(n: usize, rank: &[u32], rels: &[&Relation], leads: &[bool], earlier_only: bool) -> Result<Vec<u32>> {
    let mut best = vec![u32::MAX; n];
    let mut offer = |to: u32, from: u32| {
        if leads[from as usize]
            && (!earlier_only || rank[from as usize] < rank[to as usize])
            && (best[to as usize] == u32::MAX || rank[from as usize] < rank[best[to as usize] as usize])
        {
            best[to as usize] = from;
        }
    };
    for r in rels {
        match r {
            Relation::Pairs(p) => p.each(&mut |batch| {
                for p in batch {
                    offer(p.a, p.b);
                    offer(p.b, p.a);
                }
                Ok(())
            })?,
            Relation::Sets(sets) => {
                for s in sets {
                    if let Some(&k) = s.iter().filter(|&&m| leads[m as usize]).min_by_key(|&&m| rank[m as usize]) {
                        for &m in s {
                            if m != k {
                                offer(m, k);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(best)
}

/// The one removal decision of a dedup run.
pub(crate) struct Decision {
    /// Items removed (never an `--against` item).
    pub(crate) removed: Vec<bool>,
    /// For a removed item, the kept item it was removed in favour of; for a kept one, itself.
    pub(crate) keeper: Vec<u32>,
}

/// Decides which items go, over every removal kind at once, as visiting the items in keep
/// order (`rank`, lowest first; `--against` items rank first and are always kept) would: an
/// item is removed when an item already kept is its direct duplicate under any removal kind,
/// in favour of the best-ranked such item, and kept otherwise. So every removed item is
/// directly within a threshold of the item kept in its place, no two kept items of this run are
/// direct duplicates, and every removed item has a kept copy: nothing chains and no picture
/// loses every copy.
pub(crate) fn decide(n: usize, rank: &[u32], is_old: &dyn Fn(u32) -> bool, removal: &[&Relation]) -> Result<Decision> {
    let kept = leaders(n, rank, removal, is_old)?;
    let best = best_leader(n, rank, removal, &kept, true)?;
    let removed: Vec<bool> = kept.iter().map(|&k| !k).collect();
    let keeper = (0..n as u32).map(|i| if kept[i as usize] { i } else { best[i as usize] }).collect();
    Ok(Decision { removed, keeper })
}

/// A group as written to `groups.parquet`: each member with the item kept in its place
/// (itself when kept), kept members first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutGroup {
    pub(crate) rows: Vec<(u32, u32)>,
}

/// Orders each group's rows (kept members first, then by item) and the groups by their first
/// kept member's rank.
fn finish(mut groups: Vec<OutGroup>, rank: &[u32]) -> Vec<OutGroup> {
    for g in &mut groups {
        g.rows.sort_unstable_by_key(|&(m, k)| (m != k, rank[k as usize], m));
    }
    groups.retain(|g| g.rows.len() > 1);
    groups.sort_by_key(|g| rank[g.rows[0].1 as usize]);
    groups
}

/// The group of each of `n` items (`u32::MAX` for none).
fn group_of(n: usize, groups: &[OutGroup]) -> Vec<u32> {
    let mut of = vec![u32::MAX; n];
    for (g, grp) in groups.iter().enumerate() {
        for &(m, _) in &grp.rows {
            of[m as usize] = g as u32;
        }
    }
    of
}

/// Joins groups that share an edge of `pairs` (`--grouping components`), keeping each row's
/// own kept item.
fn join_components(n: usize, groups: Vec<OutGroup>, pairs: &PairSource) -> Result<Vec<OutGroup>> {
    let group_of = group_of(n, &groups);
    let mut uf = groups::UnionFind::new(groups.len());
    pairs.each(&mut |batch| {
        for p in batch {
            let (a, b) = (group_of[p.a as usize], group_of[p.b as usize]);
            if a != u32::MAX && b != u32::MAX {
                uf.union(a, b);
            }
        }
        Ok(())
    })?;
    let mut joined: BTreeMap<u32, OutGroup> = BTreeMap::new();
    for (g, grp) in groups.into_iter().enumerate() {
        joined.entry(uf.find(g as u32)).or_insert_with(|| OutGroup { rows: Vec::new() }).rows.extend(grp.rows);
    }
    Ok(joined.into_values().collect())
}

/// The groups of a removal kind: each kept item with the removed items that are its direct
/// duplicates under this kind (a removed item goes with its best-ranked kept duplicate), so
/// `kept`/`kept_id` say exactly what keep.txt and remove.txt say.
pub(crate) fn removal_groups(
    n: usize,
    relation: &Relation,
    rank: &[u32],
    removed: &[bool],
    grouping: Grouping,
) -> Result<Vec<OutGroup>> {
    match relation {
        Relation::Sets(sets) => {
            let groups = sets
                .iter()
                .filter_map(|s| {
                    let leader = *s.iter().filter(|&&m| !removed[m as usize]).min_by_key(|&&m| rank[m as usize])?;
                    let mut rows = vec![(leader, leader)];
                    rows.extend(s.iter().filter(|&&m| removed[m as usize]).map(|&m| (m, leader)));
                    Some(OutGroup { rows })
                })
                .collect();
            Ok(finish(groups, rank))
        }
        Relation::Pairs(pairs) => {
            let kept: Vec<bool> = removed.iter().map(|&r| !r).collect();
            let best = best_leader(n, rank, &[relation], &kept, false)?;
            let mut by_keeper: HashMap<u32, Vec<u32>> = HashMap::new();
            for r in (0..n as u32).filter(|&r| removed[r as usize] && best[r as usize] != u32::MAX) {
                by_keeper.entry(best[r as usize]).or_default().push(r);
            }
            let groups: Vec<OutGroup> = by_keeper
                .into_iter()
                .map(|(k, ms)| OutGroup {
                    rows: std::iter::once((k, k)).chain(ms.into_iter().map(|m| (m, k))).collect(),
                })
                .collect();
            let groups = if grouping == Grouping::Components { join_components(n, groups, pairs)? } else { groups };
            Ok(finish(groups, rank))
        }
    }
}

/// The groups of a kind that only reports (not in `--remove-kinds`): stars (or components) of
/// the kind's own relation whose representative is the best-ranked kept member where there is
/// one; every row's `kept` still says the item's one removal decision.
pub(crate) fn report_groups(
    n: usize,
    relation: &Relation,
    rank: &[u32],
    removed: &[bool],
    grouping: Grouping,
) -> Result<Vec<OutGroup>> {
    // Kept items first, then by rank.
    let order_key = |i: u32| (removed[i as usize], rank[i as usize]);
    let mut rank2 = vec![0u32; n];
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_unstable_by_key(|&i| order_key(i));
    for (r, &i) in order.iter().enumerate() {
        rank2[i as usize] = r as u32;
    }
    let groups: Vec<OutGroup> = match relation {
        Relation::Sets(sets) => sets
            .iter()
            .map(|s| {
                let leader = *s.iter().min_by_key(|&&m| rank2[m as usize]).expect("non-empty");
                OutGroup { rows: s.iter().map(|&m| (m, leader)).collect() }
            })
            .collect(),
        Relation::Pairs(pairs) => {
            let grouped = match grouping {
                Grouping::Components => groups::components(n, pairs, &rank2)?,
                Grouping::Star => stars(n, relation, &rank2)?,
            };
            grouped.into_iter().map(|g| OutGroup { rows: g.members.iter().map(|&m| (m, g.kept)).collect() }).collect()
        }
    };
    let mut groups = finish(groups, &rank2);
    groups.sort_by_key(|g| rank2[g.rows[0].1 as usize]);
    Ok(groups)
}

/// Star groups of a relation of pairs (`--grouping star`, as [`groups::group`] makes them from
/// all pairs at once): in `rank` order, an item not yet grouped takes every ungrouped duplicate;
/// that is, the greedy leaders, each with the items whose best-ranked leading duplicate it is.
fn stars(n: usize, relation: &Relation, rank: &[u32]) -> Result<Vec<groups::Group>> {
    let leads = leaders(n, rank, &[relation], &|_| false)?;
    let best = best_leader(n, rank, &[relation], &leads, true)?;
    let mut members: HashMap<u32, Vec<u32>> = HashMap::new();
    for i in (0..n as u32).filter(|&i| best[i as usize] != u32::MAX) {
        members.entry(best[i as usize]).or_default().push(i);
    }
    let mut groups: Vec<groups::Group> = members
        .into_iter()
        .map(|(kept, mut m)| {
            m.push(kept);
            m.sort_unstable();
            groups::Group { kept, members: m }
        })
        .collect();
    groups.sort_unstable_by_key(|g| rank[g.kept as usize]);
    Ok(groups)
}

/// How tight a group is, for choosing thresholds by looking.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GroupStats {
    /// The lowest similarity of a member to the item kept in its place.
    pub(crate) min_to_kept: f32,
    /// The lowest similarity between any two members (the group's diameter as a similarity),
    /// for groups of at most [`DIAMETER_MAX_MEMBERS`] members.
    pub(crate) diameter: Option<f32>,
}

/// Largest group whose diameter is measured (the cost is quadratic in the members).
pub(crate) const DIAMETER_MAX_MEMBERS: usize = 256;

/// A pair of a kind whose two items are in two different groups of that kind: what would have
/// joined them under chaining.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bridge {
    pub(crate) pair: Pair,
    pub(crate) groups: (u32, u32),
}

/// Each group's [`GroupStats`] (`sims[g][r]`: row `r`'s similarity to its kept item) and, for a
/// relation of pairs, the [`Bridge`]s between groups, in pair order.
pub(crate) fn diagnostics(
    n: usize,
    relation: &Relation,
    groups: &[OutGroup],
    sims: &[Vec<f32>],
    sim: &dyn Fn(u32, u32) -> f32,
) -> Result<(Vec<GroupStats>, Vec<Bridge>)> {
    let stats = groups
        .iter()
        .zip(sims)
        .map(|(g, s)| {
            let min_to_kept = g.rows.iter().zip(s).filter(|((m, k), _)| m != k).map(|(_, &v)| v).fold(1.0f32, f32::min);
            let diameter = (g.rows.len() <= DIAMETER_MAX_MEMBERS).then(|| {
                let mut d = 1.0f32;
                for (x, &(a, _)) in g.rows.iter().enumerate() {
                    for &(b, _) in &g.rows[x + 1..] {
                        d = d.min(sim(a, b));
                    }
                }
                d
            });
            GroupStats { min_to_kept, diameter }
        })
        .collect();
    let mut bridges = Vec::new();
    // A bridge joins two groups: with one group or none, no pass is needed.
    if let (Relation::Pairs(pairs), true) = (relation, groups.len() > 1) {
        let group_of = group_of(n, groups);
        pairs.each(&mut |batch| {
            bridges.extend(batch.iter().filter_map(|p| {
                let (ga, gb) = (group_of[p.a as usize], group_of[p.b as usize]);
                (ga != u32::MAX && gb != u32::MAX && ga != gb).then_some(Bridge { pair: *p, groups: (ga, gb) })
            }));
            Ok(())
        })?;
    }
    Ok((stats, bridges))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn p(a: u32, b: u32, sim: f32) -> Pair {
        Pair { a, b, sim }
    }

    fn pairs(v: Vec<Pair>) -> Relation<'static> {
        Relation::Pairs(Rc::new(PairSource::held(v)))
    }

    #[test]
    fn decide_keeps_in_rank_order_and_never_chains() {
        // 0~1, 1~2 (a chain), 3 = 4 (identical bytes), 4~5; rank = id.
        let rel = pairs(vec![p(0, 1, 0.9), p(1, 2, 0.9), p(4, 5, 0.9)]);
        let sets = Relation::Sets(vec![vec![3, 4]]);
        let rank: Vec<u32> = (0..7).collect();
        let d = decide(7, &rank, &|_| false, &[&rel, &sets]).unwrap();
        // 1 goes for 0; 2's only duplicate (1) is gone, so 2 stays; 4 goes for 3 (bytes); 5's
        // duplicate 4 is gone, so 5 stays.
        assert_eq!(d.removed, vec![false, true, false, false, true, false, false]);
        // An old item (against) is never removed, and a new item goes for it.
        let d = decide(3, &[1, 0, 2], &|i| i == 1, &[&pairs(vec![p(0, 1, 0.9), p(1, 2, 0.9)])]).unwrap();
        assert_eq!(d.removed, vec![true, false, true]);
    }

    /// The decision as first written: items visited in rank order over all pairs in memory.
    fn decide_in_memory(
        n: usize,
        rank: &[u32],
        is_old: &dyn Fn(u32) -> bool,
        all: &[Pair],
        sets: &[Vec<u32>],
    ) -> Decision {
        let mut adj = vec![Vec::new(); n];
        for q in all {
            adj[q.a as usize].push(q.b);
            adj[q.b as usize].push(q.a);
        }
        for s in sets {
            for &x in s {
                adj[x as usize].extend(s.iter().copied().filter(|&y| y != x));
            }
        }
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_unstable_by_key(|&i| rank[i as usize]);
        let (mut kept, mut removed, mut keeper) = (vec![false; n], vec![false; n], (0..n as u32).collect::<Vec<_>>());
        for i in order {
            let best = adj[i as usize].iter().copied().filter(|&j| kept[j as usize]).min_by_key(|&j| rank[j as usize]);
            match best {
                Some(b) if !is_old(i) => {
                    removed[i as usize] = true;
                    keeper[i as usize] = b;
                }
                _ => kept[i as usize] = true,
            }
        }
        Decision { removed, keeper }
    }

    /// Random graphs of stars, chains and cliques: the streamed decision and star groups equal
    /// the in-memory ones.
    #[test]
    fn streamed_decision_and_stars_equal_the_in_memory_ones() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for round in 0..60 {
            let n = rng.random_range(2..120usize);
            let mut all = Vec::new();
            for a in 0..n as u32 {
                for b in a + 1..n as u32 {
                    let close = (b - a) as usize <= rng.random_range(1..4);
                    if rng.random_bool(if close { 0.5 } else { 0.03 }) {
                        all.push(p(a, b, 0.9));
                    }
                }
            }
            let sets: Vec<Vec<u32>> = if round % 2 == 0 {
                vec![(0..n as u32).step_by(7).collect(), vec![1, (n - 1) as u32]]
                    .into_iter()
                    .filter(|s| s.len() > 1 && s[0] != s[1])
                    .collect()
            } else {
                Vec::new()
            };
            let mut rank: Vec<u32> = (0..n as u32).collect();
            for i in (1..n).rev() {
                rank.swap(i, rng.random_range(0..=i));
            }
            let is_old = |i: u32| round % 3 == 0 && (i as usize) < n / 4;
            let rel = pairs(all.clone());
            let set_rel = Relation::Sets(sets.clone());
            let got = decide(n, &rank, &is_old, &[&rel, &set_rel]).unwrap();
            let want = decide_in_memory(n, &rank, &is_old, &all, &sets);
            assert_eq!(got.removed, want.removed, "round {round}");
            assert_eq!(got.keeper, want.keeper, "round {round}");
            assert_eq!(stars(n, &rel, &rank).unwrap(), groups::group(n, &all, &rank, Grouping::Star), "round {round}");
        }
    }

    #[test]
    fn groups_and_diagnostics_follow_the_decision() {
        let rel = pairs(vec![p(0, 1, 0.95), p(0, 2, 0.9), p(1, 3, 0.97), p(3, 4, 0.99)]);
        let rank: Vec<u32> = (0..5).collect();
        let d = decide(5, &rank, &|_| false, &[&rel]).unwrap();
        assert_eq!(d.removed, vec![false, true, true, false, true]);
        let stars = removal_groups(5, &rel, &rank, &d.removed, Grouping::Star).unwrap();
        assert_eq!(
            stars,
            vec![OutGroup { rows: vec![(0, 0), (1, 0), (2, 0)] }, OutGroup { rows: vec![(3, 3), (4, 3)] }]
        );
        let comps = removal_groups(5, &rel, &rank, &d.removed, Grouping::Components).unwrap();
        assert_eq!(comps.len(), 1, "1~3 joins the two stars for review");
        assert_eq!(comps[0].rows.iter().filter(|(m, k)| m == k).count(), 2, "two kept items in one component");
        let table: HashMap<(u32, u32), f32> = [((0, 1), 0.95), ((0, 2), 0.9), ((1, 2), 0.8), ((3, 4), 0.99)].into();
        let sim = |a: u32, b: u32| *table.get(&(a.min(b), a.max(b))).unwrap_or(&0.1);
        let sims: Vec<Vec<f32>> =
            stars.iter().map(|g| g.rows.iter().map(|&(m, k)| if m == k { 1.0 } else { sim(k, m) }).collect()).collect();
        let (stats, bridges) = diagnostics(5, &rel, &stars, &sims, &sim).unwrap();
        assert_eq!(stats[0], GroupStats { min_to_kept: 0.9, diameter: Some(0.8) });
        assert_eq!(stats[1], GroupStats { min_to_kept: 0.99, diameter: Some(0.99) });
        assert_eq!(bridges, vec![Bridge { pair: p(1, 3, 0.97), groups: (0, 1) }]);
    }
}
