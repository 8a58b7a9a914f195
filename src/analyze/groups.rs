//! Turning duplicate pairs into groups with one kept item each.
//!
//! - `components`: connected components (union-find) of the pair graph. Simple and
//!   transitive, but a chain A~B~C puts A and C together even when A and C are not alike.
//! - `star`: items are visited in keep order; an item not yet grouped becomes a group's kept
//!   item and takes every ungrouped item within the threshold of it. Every member is then a
//!   direct duplicate of its kept item, and chains are split.

use std::str::FromStr;

use crate::error::{Error, Result};
use crate::index::Pair;

/// `--grouping`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Grouping {
    Components,
    Star,
}

impl Grouping {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Components => "components",
            Self::Star => "star",
        }
    }
}

impl FromStr for Grouping {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "components" => Ok(Self::Components),
            "star" => Ok(Self::Star),
            _ => Err(Error::InvalidArg {
                what: "dedup option grouping",
                reason: format!("`{s}`: expected components or star"),
            }),
        }
    }
}

/// A group of two or more items; `kept` is also in `members`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub kept: u32,
    /// Ascending.
    pub members: Vec<u32>,
}

/// Union-find with path halving and union by size.
pub struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    pub fn new(n: usize) -> Self {
        Self { parent: (0..n as u32).collect(), size: vec![1; n] }
    }

    pub fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = self.parent[x as usize];
        }
        x
    }

    pub fn union(&mut self, a: u32, b: u32) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a as usize] < self.size[b as usize] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b as usize] = a;
        self.size[a as usize] += self.size[b as usize];
    }
}

/// Sets of items (e.g. identical hashes) as groups, without building pairs.
pub fn from_sets(sets: Vec<Vec<u32>>, rank: &[u32]) -> Vec<Group> {
    let mut groups: Vec<Group> = sets
        .into_iter()
        .filter(|s| s.len() > 1)
        .map(|mut members| {
            members.sort_unstable();
            let kept = *members.iter().min_by_key(|&&m| rank[m as usize]).expect("non-empty");
            Group { kept, members }
        })
        .collect();
    groups.sort_unstable_by_key(|g| rank[g.kept as usize]);
    groups
}

/// Groups `n` items linked by `pairs`. `rank[i]` orders the items for keeping (lower is kept
/// first; a total order). Groups come out ordered by their kept item's rank.
pub fn group(n: usize, pairs: &[Pair], rank: &[u32], grouping: Grouping) -> Vec<Group> {
    assert_eq!(rank.len(), n, "one rank per item");
    match grouping {
        Grouping::Components => {
            let mut uf = UnionFind::new(n);
            for p in pairs {
                uf.union(p.a, p.b);
            }
            let mut by_root: std::collections::HashMap<u32, Vec<u32>> = std::collections::HashMap::new();
            let mut touched: Vec<u32> = pairs.iter().flat_map(|p| [p.a, p.b]).collect();
            touched.sort_unstable();
            touched.dedup();
            for i in touched {
                let r = uf.find(i);
                by_root.entry(r).or_default().push(i);
            }
            from_sets(by_root.into_values().collect(), rank)
        }
        Grouping::Star => {
            // Adjacency in CSR form.
            let mut degree = vec![0u32; n + 1];
            for p in pairs {
                degree[p.a as usize + 1] += 1;
                degree[p.b as usize + 1] += 1;
            }
            for i in 0..n {
                degree[i + 1] += degree[i];
            }
            let offsets = degree;
            let mut fill = offsets.clone();
            let mut adj = vec![0u32; pairs.len() * 2];
            for p in pairs {
                adj[fill[p.a as usize] as usize] = p.b;
                fill[p.a as usize] += 1;
                adj[fill[p.b as usize] as usize] = p.a;
                fill[p.b as usize] += 1;
            }
            let mut order: Vec<u32> =
                (0..n as u32).filter(|&i| offsets[i as usize + 1] > offsets[i as usize]).collect();
            order.sort_unstable_by_key(|&i| rank[i as usize]);
            let mut assigned = vec![false; n];
            let mut groups = Vec::new();
            for leader in order {
                if assigned[leader as usize] {
                    continue;
                }
                let neigh = &adj[offsets[leader as usize] as usize..offsets[leader as usize + 1] as usize];
                let mut members: Vec<u32> = neigh.iter().copied().filter(|&j| !assigned[j as usize]).collect();
                if members.is_empty() {
                    continue;
                }
                members.push(leader);
                members.sort_unstable();
                members.dedup();
                for &m in &members {
                    assigned[m as usize] = true;
                }
                groups.push(Group { kept: leader, members });
            }
            groups
        }
    }
}

/// Connected components of the pairs of `pairs` as groups (`--grouping components`), read as a
/// stream: a union-find over the items, never every pair at once. The same groups as
/// [`group`] with [`Grouping::Components`].
pub(crate) fn components(n: usize, pairs: &crate::analyze::stream::PairSource, rank: &[u32]) -> Result<Vec<Group>> {
    let mut uf = UnionFind::new(n);
    let mut touched = vec![false; n];
    pairs.each(&mut |batch| {
        for p in batch {
            uf.union(p.a, p.b);
            touched[p.a as usize] = true;
            touched[p.b as usize] = true;
        }
        Ok(())
    })?;
    let mut by_root: std::collections::HashMap<u32, Vec<u32>> = std::collections::HashMap::new();
    for i in (0..n as u32).filter(|&i| touched[i as usize]) {
        let r = uf.find(i);
        by_root.entry(r).or_default().push(i);
    }
    Ok(from_sets(by_root.into_values().collect(), rank))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: u32, b: u32) -> Pair {
        Pair { a, b, sim: 0.9 }
    }

    #[test]
    fn components_chain_and_star_split() {
        // A~B~C, A≁C; D~E.
        let pairs = [p(0, 1), p(1, 2), p(3, 4)];
        let rank: Vec<u32> = (0..6).collect();
        let comps = group(6, &pairs, &rank, Grouping::Components);
        assert_eq!(comps, vec![Group { kept: 0, members: vec![0, 1, 2] }, Group { kept: 3, members: vec![3, 4] }]);
        let stars = group(6, &pairs, &rank, Grouping::Star);
        assert_eq!(stars, vec![Group { kept: 0, members: vec![0, 1] }, Group { kept: 3, members: vec![3, 4] }]);
        // With B kept first, B's star covers A and C.
        let rank = vec![1, 0, 2, 3, 4, 5];
        let stars = group(6, &pairs, &rank, Grouping::Star);
        assert_eq!(stars[0], Group { kept: 1, members: vec![0, 1, 2] });
    }
}
