//! The one removal decision of `sieve dedup` and the groups written from it.
//!
//! Each kind of duplicate is a [`Relation`] (sets of identical files, or pairs within the kind's
//! threshold). [`decide`] visits items once in keep order and removes an item when an item
//! already kept is its direct duplicate under any removal kind; [`removal_groups`] and
//! [`report_groups`] turn that decision into the rows of `groups.parquet`, and [`diagnostics`]
//! says how tight each group is and which pairs of a kind join two groups.

use std::collections::{BTreeMap, HashMap};

use super::groups::{self, Grouping};
use crate::index::Pair;

/// One kind's duplicate relation.
pub(crate) enum Relation {
    /// Sets of items with identical bytes (`exact`): every two members are duplicates.
    Sets(Vec<Vec<u32>>),
    /// Pairs within the kind's threshold, `a < b`.
    Pairs(Vec<Pair>),
}

impl Relation {
    pub(crate) fn describe(&self) -> String {
        match self {
            Relation::Sets(s) => format!("{} sets of identical files", s.len()),
            Relation::Pairs(p) => format!("{} pairs", p.len()),
        }
    }
}

/// Neighbour lists (compressed rows) of the pairs of one or more relations.
struct Adjacency {
    offsets: Vec<usize>,
    adj: Vec<u32>,
}

impl Adjacency {
    fn new<'a>(n: usize, pairs: impl Iterator<Item = &'a Pair> + Clone) -> Self {
        let mut offsets = vec![0usize; n + 1];
        for p in pairs.clone() {
            offsets[p.a as usize + 1] += 1;
            offsets[p.b as usize + 1] += 1;
        }
        for i in 0..n {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let mut adj = vec![0u32; offsets[n]];
        for p in pairs {
            adj[fill[p.a as usize]] = p.b;
            fill[p.a as usize] += 1;
            adj[fill[p.b as usize]] = p.a;
            fill[p.b as usize] += 1;
        }
        Self { offsets, adj }
    }

    fn neighbours(&self, i: u32) -> &[u32] {
        &self.adj[self.offsets[i as usize]..self.offsets[i as usize + 1]]
    }
}

/// The one removal decision of a dedup run.
pub(crate) struct Decision {
    /// Items removed (never an `--against` item).
    pub(crate) removed: Vec<bool>,
    /// For a removed item, the kept item it was removed in favour of; for a kept one, itself.
    pub(crate) keeper: Vec<u32>,
}

/// Decides which items go, over every removal kind at once: items are visited in keep order
/// (`rank`, lowest first; `--against` items rank first and are always kept); an item is removed
/// when an item already kept is its direct duplicate under any removal kind, in favour of the
/// best-ranked such item, and kept otherwise. So every removed item is directly within a
/// threshold of the item kept in its place, no two kept items of this run are direct
/// duplicates, and every removed item has a kept copy: nothing chains and no picture loses
/// every copy.
pub(crate) fn decide(n: usize, rank: &[u32], is_old: &dyn Fn(u32) -> bool, removal: &[&Relation]) -> Decision {
    let pairs = removal.iter().flat_map(|r| match r {
        Relation::Pairs(p) => p.as_slice(),
        Relation::Sets(_) => &[],
    });
    let adj = Adjacency::new(n, pairs);
    // For each kind of sets: the set of each item and each set's kept member.
    let mut sets: Vec<(Vec<u32>, Vec<Option<u32>>)> = Vec::new();
    for r in removal {
        if let Relation::Sets(s) = r {
            let mut set_of = vec![u32::MAX; n];
            for (k, members) in s.iter().enumerate() {
                for &m in members {
                    set_of[m as usize] = k as u32;
                }
            }
            sets.push((set_of, vec![None; s.len()]));
        }
    }
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_unstable_by_key(|&i| rank[i as usize]);
    let mut kept = vec![false; n];
    let mut removed = vec![false; n];
    let mut keeper: Vec<u32> = (0..n as u32).collect();
    for i in order {
        let mut best: Option<u32> = None;
        let mut consider = |c: u32| {
            if best.is_none_or(|b| rank[c as usize] < rank[b as usize]) {
                best = Some(c);
            }
        };
        for &j in adj.neighbours(i) {
            if kept[j as usize] {
                consider(j);
            }
        }
        for (set_of, set_kept) in &sets {
            let s = set_of[i as usize];
            if s != u32::MAX {
                if let Some(k) = set_kept[s as usize] {
                    consider(k);
                }
            }
        }
        match best {
            Some(b) if !is_old(i) => {
                removed[i as usize] = true;
                keeper[i as usize] = b;
            }
            _ => {
                kept[i as usize] = true;
                for (set_of, set_kept) in &mut sets {
                    let s = set_of[i as usize];
                    if s != u32::MAX && set_kept[s as usize].is_none() {
                        set_kept[s as usize] = Some(i);
                    }
                }
            }
        }
    }
    Decision { removed, keeper }
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
fn join_components(n: usize, groups: Vec<OutGroup>, pairs: &[Pair]) -> Vec<OutGroup> {
    let group_of = group_of(n, &groups);
    let mut uf = groups::UnionFind::new(groups.len());
    for p in pairs {
        let (a, b) = (group_of[p.a as usize], group_of[p.b as usize]);
        if a != u32::MAX && b != u32::MAX {
            uf.union(a, b);
        }
    }
    let mut joined: BTreeMap<u32, OutGroup> = BTreeMap::new();
    for (g, grp) in groups.into_iter().enumerate() {
        joined.entry(uf.find(g as u32)).or_insert_with(|| OutGroup { rows: Vec::new() }).rows.extend(grp.rows);
    }
    joined.into_values().collect()
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
) -> Vec<OutGroup> {
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
            finish(groups, rank)
        }
        Relation::Pairs(pairs) => {
            let adj = Adjacency::new(n, pairs.iter());
            let mut by_keeper: HashMap<u32, Vec<u32>> = HashMap::new();
            for r in (0..n as u32).filter(|&r| removed[r as usize]) {
                let k = adj
                    .neighbours(r)
                    .iter()
                    .copied()
                    .filter(|&k| !removed[k as usize])
                    .min_by_key(|&k| rank[k as usize]);
                if let Some(k) = k {
                    by_keeper.entry(k).or_default().push(r);
                }
            }
            let groups: Vec<OutGroup> = by_keeper
                .into_iter()
                .map(|(k, ms)| OutGroup {
                    rows: std::iter::once((k, k)).chain(ms.into_iter().map(|m| (m, k))).collect(),
                })
                .collect();
            let groups = if grouping == Grouping::Components { join_components(n, groups, pairs) } else { groups };
            finish(groups, rank)
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
) -> Vec<OutGroup> {
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
            let grouped = groups::group(n, pairs, &rank2, grouping);
            grouped.into_iter().map(|g| OutGroup { rows: g.members.iter().map(|&m| (m, g.kept)).collect() }).collect()
        }
    };
    let mut groups = finish(groups, &rank2);
    groups.sort_by_key(|g| rank2[g.rows[0].1 as usize]);
    groups
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
/// relation of pairs, the [`Bridge`]s between groups.
pub(crate) fn diagnostics(
    n: usize,
    relation: &Relation,
    groups: &[OutGroup],
    sims: &[Vec<f32>],
    sim: &dyn Fn(u32, u32) -> f32,
) -> (Vec<GroupStats>, Vec<Bridge>) {
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
    let bridges = match relation {
        Relation::Sets(_) => Vec::new(),
        Relation::Pairs(pairs) => {
            let group_of = group_of(n, groups);
            pairs
                .iter()
                .filter_map(|p| {
                    let (ga, gb) = (group_of[p.a as usize], group_of[p.b as usize]);
                    (ga != u32::MAX && gb != u32::MAX && ga != gb).then_some(Bridge { pair: *p, groups: (ga, gb) })
                })
                .collect()
        }
    };
    (stats, bridges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: u32, b: u32, sim: f32) -> Pair {
        Pair { a, b, sim }
    }

    #[test]
    fn decide_keeps_in_rank_order_and_never_chains() {
        // 0~1, 1~2 (a chain), 3 = 4 (identical bytes), 4~5; rank = id.
        let pairs = Relation::Pairs(vec![p(0, 1, 0.9), p(1, 2, 0.9), p(4, 5, 0.9)]);
        let sets = Relation::Sets(vec![vec![3, 4]]);
        let rank: Vec<u32> = (0..7).collect();
        let d = decide(7, &rank, &|_| false, &[&pairs, &sets]);
        // 1 goes for 0; 2's only duplicate (1) is gone, so 2 stays; 4 goes for 3 (bytes); 5's
        // duplicate 4 is gone, so 5 stays.
        assert_eq!(d.removed, vec![false, true, false, false, true, false, false]);
        // An old item (against) is never removed, and a new item goes for it.
        let d = decide(3, &[1, 0, 2], &|i| i == 1, &[&Relation::Pairs(vec![p(0, 1, 0.9), p(1, 2, 0.9)])]);
        assert_eq!(d.removed, vec![true, false, true]);
    }

    #[test]
    fn groups_and_diagnostics_follow_the_decision() {
        let pairs = vec![p(0, 1, 0.95), p(0, 2, 0.9), p(1, 3, 0.97), p(3, 4, 0.99)];
        let rel = Relation::Pairs(pairs);
        let rank: Vec<u32> = (0..5).collect();
        let d = decide(5, &rank, &|_| false, &[&rel]);
        assert_eq!(d.removed, vec![false, true, true, false, true]);
        let stars = removal_groups(5, &rel, &rank, &d.removed, Grouping::Star);
        assert_eq!(
            stars,
            vec![OutGroup { rows: vec![(0, 0), (1, 0), (2, 0)] }, OutGroup { rows: vec![(3, 3), (4, 3)] }]
        );
        let comps = removal_groups(5, &rel, &rank, &d.removed, Grouping::Components);
        assert_eq!(comps.len(), 1, "1~3 joins the two stars for review");
        assert_eq!(comps[0].rows.iter().filter(|(m, k)| m == k).count(), 2, "two kept items in one component");
        let table: HashMap<(u32, u32), f32> = [((0, 1), 0.95), ((0, 2), 0.9), ((1, 2), 0.8), ((3, 4), 0.99)].into();
        let sim = |a: u32, b: u32| *table.get(&(a.min(b), a.max(b))).unwrap_or(&0.1);
        let sims: Vec<Vec<f32>> =
            stars.iter().map(|g| g.rows.iter().map(|&(m, k)| if m == k { 1.0 } else { sim(k, m) }).collect()).collect();
        let (stats, bridges) = diagnostics(5, &rel, &stars, &sims, &sim);
        assert_eq!(stats[0], GroupStats { min_to_kept: 0.9, diameter: Some(0.8) });
        assert_eq!(stats[1], GroupStats { min_to_kept: 0.99, diameter: Some(0.99) });
        assert_eq!(bridges, vec![Bridge { pair: p(1, 3, 0.97), groups: (0, 1) }]);
    }
}
