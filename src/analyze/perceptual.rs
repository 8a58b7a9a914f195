//! Pairs of 64-bit perceptual hashes within a Hamming distance, by multi-index hashing: split
//! the hash into `t + 1` bit ranges; two hashes within distance `t` agree exactly on at least one
//! range (pigeonhole), so only items sharing a range value are compared. Each pair is reported
//! once, from the first range on which it agrees.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::index::Pair;
use crate::media::fingerprint::hamming;
use crate::media::fingerprint::{self, Fingerprint};

/// Bit masks of the `parts` ranges covering 64 bits.
fn ranges(parts: u32) -> Vec<u64> {
    let parts = parts.clamp(1, 64);
    (0..parts)
        .map(|i| {
            let lo = 64 * i / parts;
            let hi = 64 * (i + 1) / parts;
            let width = hi - lo;
            let ones = if width == 64 { u64::MAX } else { (1u64 << width) - 1 };
            ones << lo
        })
        .collect()
}

/// Pairs `a < b` among `hashes` (items without a hash are skipped) with distance ≤ `max_distance`;
/// `sim` is `1 − distance / 64`. `allowed(a, b)` can veto pairs (e.g. two items of an old corpus).
pub fn pairs(hashes: &[Option<u64>], max_distance: u32, allowed: impl Fn(u32, u32) -> bool) -> Vec<Pair> {
    let masks = ranges(max_distance + 1);
    let mut out = Vec::new();
    for (r, &mask) in masks.iter().enumerate() {
        let mut buckets: HashMap<u64, Vec<u32>> = HashMap::new();
        for (i, h) in hashes.iter().enumerate() {
            if let Some(h) = h {
                buckets.entry(h & mask).or_default().push(i as u32);
            }
        }
        for items in buckets.values() {
            for (x, &a) in items.iter().enumerate() {
                let ha = hashes[a as usize].expect("bucketed");
                for &b in &items[x + 1..] {
                    let hb = hashes[b as usize].expect("bucketed");
                    // Reported from the first range the two agree on.
                    if masks[..r].iter().any(|&m| ha & m == hb & m) {
                        continue;
                    }
                    let dist = hamming(ha, hb);
                    if dist <= max_distance && allowed(a, b) {
                        out.push(Pair { a, b, sim: 1.0 - dist as f32 / 64.0 });
                    }
                }
            }
        }
    }
    out.sort_unstable_by_key(|p| (p.a, p.b));
    out
}

/// Perceptual duplicate pairs `a < b` among `fps` (items without a fingerprint are skipped):
/// candidates whose hash is within `max_distance` bits of the other's hash or of its mirror
/// hash (multi-index hashing over both), each confirmed by [`fingerprint::confirmed`] with
/// `min_correlation`. `sim` is `1 − distance / 64` of the closer orientation.
pub fn fingerprint_pairs(
    fps: &[Option<Fingerprint>],
    max_distance: u32,
    min_correlation: f32,
    allowed: impl Fn(u32, u32) -> bool + Sync,
) -> Vec<Pair> {
    let mut out = Vec::new();
    fingerprint_pairs_each(fps, max_distance, min_correlation, allowed, &mut |b| {
        out.extend(b);
        Ok(())
    })
    .expect("collecting cannot fail");
    out
}

/// Items per search task of [`fingerprint_pairs_each`].
const CHUNK: usize = 256;

/// [`fingerprint_pairs`] handed to `f` in batches sorted by `(a, b)`, a chunk of items `a` per
/// thread at a time, so copies of one picture (quadratically many pairs) are never all held.
/// Each item's hash is looked up in tables of every item's hash and mirror hash per bit range;
/// its candidates `b > a` are then exactly the items whose hash or mirror hash is within
/// `max_distance` of it, which is what [`fingerprint::compare`] measures.
pub fn fingerprint_pairs_each(
    fps: &[Option<Fingerprint>],
    max_distance: u32,
    min_correlation: f32,
    allowed: impl Fn(u32, u32) -> bool + Sync,
    f: &mut dyn FnMut(Vec<Pair>) -> crate::error::Result<()>,
) -> crate::error::Result<()> {
    let masks = ranges(max_distance + 1);
    // Entry 2i is item i's hash, 2i + 1 its mirror hash; each table lists entries ascending.
    let tables: Vec<HashMap<u64, Vec<u32>>> = masks
        .iter()
        .map(|&m| {
            let mut t: HashMap<u64, Vec<u32>> = HashMap::new();
            for (i, fp) in fps.iter().enumerate() {
                if let Some(fp) = fp {
                    t.entry(fp.hash & m).or_default().push(2 * i as u32);
                    t.entry(fp.mirror & m).or_default().push(2 * i as u32 + 1);
                }
            }
            t
        })
        .collect();
    let n = fps.len();
    let starts: Vec<usize> = (0..n).step_by(CHUNK).collect();
    for wave in starts.chunks(rayon::current_num_threads().max(1)) {
        let found: Vec<Vec<Pair>> = wave
            .par_iter()
            .map_init(
                || vec![u32::MAX; n],
                |seen, &a0| {
                    let mut out = Vec::new();
                    let mut cand: Vec<u32> = Vec::new();
                    for a in a0..(a0 + CHUNK).min(n) {
                        let Some(fa) = &fps[a] else { continue };
                        cand.clear();
                        for (table, &m) in tables.iter().zip(&masks) {
                            let Some(list) = table.get(&(fa.hash & m)) else { continue };
                            let from = list.partition_point(|&e| (e / 2) as usize <= a);
                            for &e in &list[from..] {
                                let b = e / 2;
                                if seen[b as usize] != a as u32 {
                                    seen[b as usize] = a as u32;
                                    // The hash distance first: sharing a bit range is common
                                    // where hashes are skewed, and the correlation is dearer.
                                    let fb = fps[b as usize].as_ref().expect("in a table");
                                    if hamming(fa.hash, fb.hash).min(hamming(fa.hash, fb.mirror)) <= max_distance {
                                        cand.push(b);
                                    }
                                }
                            }
                        }
                        if cand.len() > (n - a) / 8 {
                            // Many candidates: a scan of the marks is cheaper than a sort.
                            cand.clear();
                            cand.extend((a as u32 + 1..n as u32).filter(|&b| seen[b as usize] == a as u32));
                        } else {
                            cand.sort_unstable();
                        }
                        for &b in &cand {
                            let Some(fb) = &fps[b as usize] else { continue };
                            if !allowed(a as u32, b) {
                                continue;
                            }
                            let (dist, _, corr) = fingerprint::compare(fa, fb);
                            if dist <= max_distance && fingerprint::confirmed(fa, fb, corr, min_correlation) {
                                out.push(Pair { a: a as u32, b, sim: 1.0 - dist as f32 / 64.0 });
                            }
                        }
                    }
                    out
                },
            )
            .collect();
        for batch in found {
            f(batch)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn matches_brute_force() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut hashes: Vec<Option<u64>> = Vec::new();
        for _ in 0..300 {
            let base: u64 = rng.random();
            hashes.push(Some(base));
            for _ in 0..2 {
                let mut h = base;
                for _ in 0..rng.random_range(0..12) {
                    h ^= 1 << rng.random_range(0..64);
                }
                hashes.push(Some(h));
            }
        }
        hashes.push(None);
        for t in [0, 3, 8, 10] {
            let fast = pairs(&hashes, t, |_, _| true);
            let mut brute = Vec::new();
            for a in 0..hashes.len() {
                for b in a + 1..hashes.len() {
                    if let (Some(x), Some(y)) = (hashes[a], hashes[b]) {
                        if hamming(x, y) <= t {
                            brute.push((a as u32, b as u32));
                        }
                    }
                }
            }
            let got: Vec<(u32, u32)> = fast.iter().map(|p| (p.a, p.b)).collect();
            assert_eq!(got, brute, "t = {t}");
            assert!(!brute.is_empty());
        }
    }

    #[test]
    fn fingerprint_pairs_match_brute_force() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut fps: Vec<Option<Fingerprint>> = Vec::new();
        for i in 0..700 {
            let base: u64 = rng.random();
            let coeffs = [rng.random::<u8>(); fingerprint::BYTES];
            for _ in 0..3 {
                let mut h = base;
                for _ in 0..rng.random_range(0..16) {
                    h ^= 1 << rng.random_range(0..64);
                }
                // Some mirror hashes near another copy's hash, as mirrored copies have.
                let mirror = if rng.random_bool(0.3) { base ^ 1 } else { rng.random() };
                fps.push((i % 50 != 0).then_some(Fingerprint { hash: h, mirror, coeffs }));
            }
        }
        let allowed = |a: u32, b: u32| !(a + b).is_multiple_of(11);
        for t in [0, 6, 12] {
            let mut brute = Vec::new();
            for a in 0..fps.len() {
                for b in a + 1..fps.len() {
                    let (Some(fa), Some(fb)) = (&fps[a], &fps[b]) else { continue };
                    let (dist, _, corr) = fingerprint::compare(fa, fb);
                    if dist <= t && fingerprint::confirmed(fa, fb, corr, 0.5) && allowed(a as u32, b as u32) {
                        brute.push(Pair { a: a as u32, b: b as u32, sim: 1.0 - dist as f32 / 64.0 });
                    }
                }
            }
            assert!(brute.len() > 5, "t = {t}: {} pairs", brute.len());
            assert_eq!(fingerprint_pairs(&fps, t, 0.5, allowed), brute, "t = {t}");
        }
    }
}
