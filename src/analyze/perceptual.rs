//! Pairs of 64-bit perceptual hashes within a Hamming distance, by multi-index hashing: split
//! the hash into `t + 1` bit ranges; two hashes within distance `t` agree exactly on at least one
//! range (pigeonhole), so only items sharing a range value are compared. Each pair is reported
//! once, from the first range on which it agrees.

use std::collections::HashMap;

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
    allowed: impl Fn(u32, u32) -> bool,
) -> Vec<Pair> {
    // Entry 2i is item i's hash, 2i + 1 its mirror hash. Two mirror hashes agree about as well
    // as the two hashes, so mirror–mirror candidates add nothing new; they are dropped below
    // through the item pair's dedup.
    let entries: Vec<Option<u64>> = fps.iter().flat_map(|f| [f.map(|f| f.hash), f.map(|f| f.mirror)]).collect();
    let mut candidates: Vec<(u32, u32)> = pairs(&entries, max_distance, |x, y| {
        let (a, b) = (x / 2, y / 2);
        a != b && !(x % 2 == 1 && y % 2 == 1)
    })
    .into_iter()
    .map(|p| (p.a / 2, p.b / 2))
    .map(|(a, b)| (a.min(b), a.max(b)))
    .collect();
    candidates.sort_unstable();
    candidates.dedup();
    candidates
        .into_iter()
        .filter(|&(a, b)| allowed(a, b))
        .filter_map(|(a, b)| {
            let (fa, fb) = (fps[a as usize].as_ref()?, fps[b as usize].as_ref()?);
            let (dist, _, corr) = fingerprint::compare(fa, fb);
            (dist <= max_distance && fingerprint::confirmed(fa, fb, corr, min_correlation)).then_some(Pair {
                a,
                b,
                sim: 1.0 - dist as f32 / 64.0,
            })
        })
        .collect()
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
}
