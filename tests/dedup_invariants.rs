//! The removal decision's invariants, checked on random planted runs and on a real embedded run,
//! for every grouping, keep policy and with or without `--against`:
//!
//! 1. every embedded item is in exactly one of keep.txt and remove.txt (skipped ones in neither);
//! 2. every row of groups.parquet says `kept` exactly when keep.txt lists the item;
//! 3. every removed row of a removal kind names a kept item (`kept_id`) that is its direct
//!    duplicate under that kind, and every removed item has such a row;
//! 4. no two kept items (of this run, or of this run and the `--against` run) are direct
//!    duplicates under a removal kind, so no distinct picture loses every copy and no group
//!    keeps two copies.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rand::{Rng, SeedableRng};
use sieve::analyze::dedup::{dedup, DedupOptions, KeepPolicy, Kind};
use sieve::analyze::groups::Grouping;
use sieve::media::fingerprint::{compare, confirmed};
use sieve::store::Run;

use crate::util::*;

/// One item of either run, as the checks see it.
struct Item {
    uri: String,
    sha: Option<String>,
    fp: Option<sieve::media::fingerprint::Fingerprint>,
    image: Vec<f32>,
}

fn items_of(run: &Run) -> BTreeMap<u64, Item> {
    let d = run.manifest.embed_dim;
    let emb = run.embeddings(false).unwrap();
    let m = &run.meta;
    (0..m.len())
        .filter(|&r| m.embedded[r])
        .map(|r| {
            (
                m.id[r],
                Item {
                    uri: m.uri[r].clone(),
                    sha: m.sha256[r].clone(),
                    fp: m.fingerprint.as_ref().and_then(|f| f[r]),
                    image: emb[r * d..(r + 1) * d].to_vec(),
                },
            )
        })
        .collect()
}

/// Whether `a` and `b` are direct duplicates under `kind`; `slack` widens (+) or narrows (−)
/// the image threshold for pairs that sit on it within rounding.
fn direct(kind: &str, a: &Item, b: &Item, t: &serde_json::Value, slack: f32) -> bool {
    match kind {
        "exact" => a.sha.is_some() && a.sha == b.sha,
        "perceptual" => match (&a.fp, &b.fp) {
            (Some(x), Some(y)) => {
                let (dist, _, corr) = compare(x, y);
                dist <= t["perceptual_distance"].as_u64().unwrap() as u32
                    && confirmed(x, y, corr, t["perceptual_correlation"].as_f64().unwrap() as f32)
            }
            _ => false,
        },
        "image" => {
            let s: f32 = a.image.iter().zip(&b.image).map(|(x, y)| x * y).sum();
            s >= t["image"].as_f64().unwrap() as f32 - slack
        }
        k => panic!("not a removal kind here: {k}"),
    }
}

struct GroupRow {
    kind: String,
    source: String,
    id: u64,
    kept: bool,
    kept_id: u64,
    kept_source: String,
}

fn group_rows(run: &Path) -> Vec<GroupRow> {
    let f = std::fs::File::open(run.join("dedup/groups.parquet")).unwrap();
    let mut out = Vec::new();
    for b in ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap() {
        let b = b.unwrap();
        let s = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
        let u = |n: &str| b.column_by_name(n).unwrap().as_primitive::<UInt64Type>().clone();
        let kept = b.column_by_name("kept").unwrap().as_boolean().clone();
        let (kind, src, id, kid, ksrc) = (s("kind"), s("source"), u("id"), u("kept_id"), s("kept_source"));
        for i in 0..b.num_rows() {
            out.push(GroupRow {
                kind: kind.value(i).into(),
                source: src.value(i).into(),
                id: id.value(i),
                kept: kept.value(i),
                kept_id: kid.value(i),
                kept_source: ksrc.value(i).into(),
            });
        }
    }
    out
}

/// Checks invariants 1–4 of the dedup output in `opts.run`; `what` names the case.
fn check(opts: &DedupOptions, what: &str) {
    let run = Run::open(&opts.run).unwrap();
    let new = items_of(&run);
    let old = opts.against.as_ref().map(|p| items_of(&Run::open(p).unwrap())).unwrap_or_default();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(opts.run.join("dedup/summary.json")).unwrap()).unwrap();
    let t = &summary["thresholds"];
    let lines = |f: &str| -> Vec<String> {
        std::fs::read_to_string(opts.run.join("dedup").join(f)).unwrap().lines().map(str::to_string).collect()
    };
    let (keep, remove) = (lines("keep.txt"), lines("remove.txt"));
    // 1.
    let keep_set: HashSet<&str> = keep.iter().map(String::as_str).collect();
    let remove_set: HashSet<&str> = remove.iter().map(String::as_str).collect();
    assert_eq!(keep_set.len(), keep.len(), "{what}: a line twice in keep.txt");
    assert_eq!(remove_set.len(), remove.len(), "{what}: a line twice in remove.txt");
    assert_eq!(keep.len() + remove.len(), new.len(), "{what}: embedded items vs keep + remove");
    for it in new.values() {
        assert!(
            keep_set.contains(it.uri.as_str()) != remove_set.contains(it.uri.as_str()),
            "{what}: {} not in exactly one list",
            it.uri
        );
    }
    let kept = |source: &str, id: u64| source == "against" || keep_set.contains(new[&id].uri.as_str());
    let item = |source: &str, id: u64| if source == "against" { &old[&id] } else { &new[&id] };
    let removal: Vec<String> =
        summary["remove_kinds"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().into()).collect();
    // 2. and 3.
    let mut explained: HashSet<u64> = HashSet::new();
    for r in group_rows(&opts.run) {
        assert_eq!(
            r.kept,
            kept(&r.source, r.id),
            "{what}: {} {} {} `kept` disagrees with keep.txt",
            r.kind,
            r.source,
            r.id
        );
        if removal.contains(&r.kind) && !r.kept {
            assert!(
                kept(&r.kept_source, r.kept_id),
                "{what}: {} {} removed for {} which is not kept",
                r.kind,
                r.id,
                r.kept_id
            );
            assert!(
                direct(&r.kind, item(&r.source, r.id), item(&r.kept_source, r.kept_id), t, 1e-4),
                "{what}: {} {} removed for {} {} which is not its direct duplicate",
                r.kind,
                r.id,
                r.kept_source,
                r.kept_id
            );
            explained.insert(r.id);
        }
    }
    for (id, it) in &new {
        if remove_set.contains(it.uri.as_str()) {
            assert!(explained.contains(id), "{what}: {id} removed but no removal-kind group says for which item");
        }
    }
    // 4.
    let kept_items: Vec<(&str, &Item)> = new
        .values()
        .filter(|it| keep_set.contains(it.uri.as_str()))
        .map(|it| ("run", it))
        .chain(old.values().map(|it| ("against", it)))
        .collect();
    for (x, (sa, a)) in kept_items.iter().enumerate() {
        for (sb, b) in &kept_items[x + 1..] {
            if *sa == "against" && *sb == "against" {
                continue;
            }
            for k in &removal {
                assert!(!direct(k, a, b, t, -1e-4), "{what}: kept {} and {} are direct {k} duplicates", a.uri, b.uri);
            }
        }
    }
}

/// A random run: `n` items around a few planted centres (image vectors at varying distances,
/// fingerprints with varying bit flips, some shared bytes, some captions).
fn random_run(dir: &Path, n: usize, seed: u64, weights: &str) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let d = 16;
    let centres: Vec<(Vec<f32>, u64)> = (0..n / 6)
        .map(|_| {
            let v: Vec<f32> = (0..d).map(|_| rng.random::<f32>() - 0.5).collect();
            (v, rng.random())
        })
        .collect();
    const SHAS: [&str; 4] = ["s0", "s1", "s2", "s3"];
    let items: Vec<Planted> = (0..n)
        .map(|_| {
            let (c, h) = &centres[rng.random_range(0..centres.len())];
            let noise = [0.02f32, 0.1, 0.25, 0.5][rng.random_range(0..4)];
            let mut v: Vec<f32> = c.iter().map(|x| x + noise * (rng.random::<f32>() - 0.5)).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            let mut hash = *h;
            for _ in 0..rng.random_range(0..16) {
                hash ^= 1 << rng.random_range(0..64);
            }
            Planted {
                caption: rng.random_bool(0.5).then(|| v.clone()),
                image: v,
                size: (rng.random_range(10..100), rng.random_range(10..100)),
                sha: rng.random_bool(0.1).then(|| SHAS[rng.random_range(0..SHAS.len())]),
                phash: rng.random_bool(0.95).then_some(hash),
            }
        })
        .collect();
    planted_run(dir, &items, weights);
}

const POLICIES: [KeepPolicy; 5] =
    [KeepPolicy::Auto, KeepPolicy::BestScore, KeepPolicy::Largest, KeepPolicy::First, KeepPolicy::Central];

#[test]
fn removal_decisions_hold_their_invariants_on_random_runs() {
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..3u64 {
        let (run, old) = (dir.path().join(format!("run{seed}")), dir.path().join(format!("old{seed}")));
        random_run(&run, 150, seed, "w");
        random_run(&old, 60, seed + 100, "w");
        for grouping in [Grouping::Star, Grouping::Components] {
            for keep in POLICIES {
                for against in [false, true] {
                    let mut o = DedupOptions::new(&run);
                    o.kinds = vec![Kind::Exact, Kind::Perceptual, Kind::Image, Kind::Caption, Kind::Joint];
                    o.remove_kinds = vec![Kind::Exact, Kind::Perceptual, Kind::Image];
                    o.image_threshold = Some(0.97);
                    o.perceptual_distance = Some(8);
                    o.perceptual_correlation = Some(0.5);
                    o.grouping = grouping;
                    o.keep = keep;
                    o.against = against.then(|| old.clone());
                    let s = dedup(&o).unwrap();
                    let what = format!("seed {seed}, {grouping:?}, {keep:?}, against {against}");
                    assert!(s.removed > 10 && s.kept > 10, "{what}: a test that removes nothing proves nothing: {s:?}");
                    check(&o, &what);
                }
            }
        }
    }
}

#[test]
fn removal_decisions_hold_their_invariants_on_a_real_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = crate::dedup::embedded_edited_corpus(dir.path());
    for grouping in [Grouping::Star, Grouping::Components] {
        for keep in POLICIES {
            let mut o = DedupOptions::new(&run);
            o.kinds = vec![Kind::Exact, Kind::Perceptual, Kind::Image];
            o.remove_kinds = vec![Kind::Exact, Kind::Perceptual];
            o.grouping = grouping;
            o.keep = keep;
            let s = dedup(&o).unwrap();
            assert!(s.removed >= 20, "{grouping:?} {keep:?}: {s:?}");
            check(&o, &format!("real run, {grouping:?}, {keep:?}"));
        }
    }
}
