//! `sieve select --reference` and `--score-percent`: planted clusters, a reference run drawn
//! from some of them, and captions whose CLIP score is known, so the filter's output is known
//! exactly. (`--balance-by` is tested with the planted audit in `audit.rs`.)

use std::collections::BTreeSet;
use std::path::Path;

use crate::cmd::*;
use crate::util::*;

const DIM: usize = 20;

/// Four clusters of 12 around axes 0..4, spread over axes 4..16. Item i's caption sits at
/// cosine `score(i)` from its image (towards axis 19, which no image uses).
fn pool_item(i: usize) -> Planted {
    let (c, j) = (i / 12, i % 12);
    let image = near(c, 0.97 - 0.004 * j as f32, 4 + j, DIM);
    let s = score(i);
    let caption: Vec<f32> =
        image.iter().enumerate().map(|(k, x)| s * x + if k == 19 { (1.0 - s * s).sqrt() } else { 0.0 }).collect();
    Planted { image, caption: Some(caption), size: (10, 10), sha: None, phash: None }
}

/// Distinct CLIP scores 0.50..0.97, 0.01 apart, scattered over the clusters.
fn score(i: usize) -> f32 {
    0.5 + 0.01 * ((i * 7) % 48) as f32
}

fn pool(dir: &Path) -> std::path::PathBuf {
    let run = dir.join("pool");
    planted_run(&run, &(0..48).map(pool_item).collect::<Vec<_>>(), "w");
    run
}

/// A reference run: the images of clusters 0 and 1 (as a benchmark's training set that looks
/// like part of the pool), embedded with weights `weights`.
fn reference(dir: &Path, weights: &str) -> std::path::PathBuf {
    let run = dir.join(format!("reference-{weights}"));
    let items: Vec<Planted> = (0..24).map(|i| Planted { caption: None, ..pool_item(i) }).collect();
    planted_run(&run, &items, weights);
    run
}

fn kept(run: &Path) -> BTreeSet<usize> {
    let text = std::fs::read_to_string(run.join("selection/keep.txt")).unwrap();
    text.lines().map(|l| l.trim_start_matches("img/").trim_end_matches(".jpg").parse().unwrap()).collect()
}

fn select(run: &Path, more: &[&str]) -> serde_json::Value {
    let mut args = vec!["select", run.to_str().unwrap(), "--device", "cpu", "--json", "--keep-duplicates"];
    args.extend(more);
    stdout_json(&sieve_out(&args))
}

#[test]
fn the_reference_keeps_exactly_the_clusters_it_falls_in() {
    let dir = tempfile::tempdir().unwrap();
    let (run, refs) = (pool(dir.path()), reference(dir.path(), "w"));
    // No score filter, a budget above the pool: the filter's whole output.
    let s = select(&run, &["--budget", "100", "--reference", refs.to_str().unwrap(), "--score-percent", "100"]);
    let want: BTreeSet<usize> = (0..24).collect();
    assert_eq!(kept(&run), want, "{s}");
    let r = &s["reference"];
    assert_eq!(
        (r["items"].as_u64(), r["passed"].as_u64(), r["in_target_clusters"].as_u64()),
        (Some(24), Some(24), Some(24))
    );
    assert!(r["target_clusters"].as_u64().unwrap() < r["clusters"].as_u64().unwrap(), "{r}");
    assert!(r.get("score").is_none(), "no score filter at 100%: {r}");
    // Every reference item is in the selection: its nearest selected item is itself.
    assert!(r["nearest_selected"].as_f64().unwrap() > 0.999, "{r}");
    assert!(r["nearest_selected"].as_f64().unwrap() >= r["nearest_random"].as_f64().unwrap(), "{r}");

    // A budget below what passes: the strategy picks from inside the filter.
    select(&run, &["--budget", "6", "--reference", refs.to_str().unwrap(), "--score-percent", "100"]);
    let k = kept(&run);
    assert_eq!(k.len(), 6);
    assert!(k.iter().all(|&i| i < 24), "{k:?}");
    assert!(k.iter().any(|&i| i < 12) && k.iter().any(|&i| i >= 12), "both clusters: {k:?}");
}

#[test]
fn the_default_intersects_with_the_top_30_percent_by_clip_score() {
    let dir = tempfile::tempdir().unwrap();
    let (run, refs) = (pool(dir.path()), reference(dir.path(), "w"));
    // The top 30% of 48 scores: the 15 highest (0.97 down to 0.83).
    let top: BTreeSet<usize> = (0..48).filter(|&i| score(i) > 0.825).collect();
    assert_eq!(top.len(), 15);
    let s = select(&run, &["--budget", "100", "--reference", refs.to_str().unwrap()]);
    let want: BTreeSet<usize> = top.iter().copied().filter(|&i| i < 24).collect();
    assert!(!want.is_empty() && want.len() < 15);
    assert_eq!(kept(&run), want, "{s}");
    let f = &s["reference"]["score"];
    assert_eq!((f["percent"].as_f64(), f["scored"].as_u64(), f["passed"].as_u64()), (Some(30.0), Some(48), Some(15)));
    assert!((f["threshold"].as_f64().unwrap() - 0.83).abs() < 2e-3, "{f}");

    // --score-percent alone: the CLIP-score filter without a reference.
    let s = select(&run, &["--budget", "100", "--score-percent", "30"]);
    assert_eq!(kept(&run), top, "{s}");
    assert_eq!(s["score"]["passed"], 15);
}

#[test]
fn a_reference_from_another_encoder_or_nonsense_flags_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (run, other) = (pool(dir.path()), reference(dir.path(), "other-weights"));
    let r = run.to_str().unwrap();
    for (more, says) in [
        (vec!["--reference", other.to_str().unwrap()], "different spaces"),
        (vec!["--score-percent", "0"], "(0, 100]"),
        (vec!["--score-percent", "NaN"], "(0, 100]"),
        (vec!["--score-percent", "101"], "(0, 100]"),
        (vec!["--reference-clusters", "3"], "needs --reference"),
        (vec!["--reference", other.to_str().unwrap(), "--reference-clusters", "0"], "at least 1"),
    ] {
        let mut args = vec!["select", r, "--budget", "5", "--device", "cpu"];
        args.extend(&more);
        let o = sieve_out(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{more:?}: {err}");
        assert!(err.contains(says), "{more:?}: {err}");
    }
    let o = sieve_out(&["select", r, "--budget", "5", "--reference", dir.path().join("nothing").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a sieve run directory"));
}
