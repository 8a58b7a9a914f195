//! Partitioned dedup (`dedup-centroids`, `dedup-partition`, `dedup-combine`): the combined
//! result is byte-identical to one-process `sieve dedup --clusters K`, and wrong inputs are
//! refused with a message that says what to do.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::{Rgb, RgbImage};
use sieve::index::kmeans::KMeansParams;
use sieve::index::synthetic::planted;
use sieve::index::{sort_dedup, ClusteredIndex, NeighbourIndex};

use crate::util::*;

const OUTPUTS: [&str; 4] = ["groups.parquet", "keep.txt", "remove.txt", "summary.json"];

fn sieve(args: &[&str], paths: &[&Path]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sieve"));
    c.env_remove("RUST_LOG").env_remove("SIEVE_MODEL").args(args);
    for p in paths {
        c.arg(p);
    }
    c.output().unwrap()
}

fn ok(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

fn fails(out: Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{err}");
    err
}

fn snapshot(run: &Path) -> Vec<Vec<u8>> {
    OUTPUTS.iter().map(|f| std::fs::read(run.join("dedup").join(f)).unwrap()).collect()
}

fn clear_dedup(run: &Path) {
    for f in OUTPUTS {
        std::fs::remove_file(run.join("dedup").join(f)).unwrap();
    }
}

/// Runs the three partitioned steps with `n` partitions (and `flags` for each dedup step) and
/// returns the dedup outputs, which it then removes.
fn partitioned(run: &Path, work: &Path, clusters: &str, n: u32, flags: &[&str]) -> Vec<Vec<u8>> {
    let centroids = work.join(format!("centroids-{n}"));
    let parts = work.join(format!("parts-{n}"));
    ok(sieve(
        &["dedup-centroids", "--clusters", clusters, "--sample", "300", "--seed", "7", "--out"],
        &[&centroids, run],
    ));
    for i in 0..n {
        let p = format!("{i}/{n}");
        let mut args = vec!["dedup-partition", "--device", "cpu", "--partition", &p];
        args.extend(flags);
        ok(sieve(&args, &[run, Path::new("--centroids"), &centroids, Path::new("--out"), &parts]));
    }
    let mut args = vec!["dedup-combine", "--device", "cpu"];
    args.extend(flags);
    ok(sieve(&args, &[run, Path::new("--partitions"), &parts]));
    let s = snapshot(run);
    clear_dedup(run);
    s
}

/// 600 items: planted image near-duplicates, planted caption near-duplicates on two thirds of
/// them, some shared bytes and perceptual copies.
fn planted_corpus(run: &Path) {
    let (n, d) = (600, 32);
    let img = planted(n, d, 0.3, 11);
    let cap = planted(n, d, 0.3, 12);
    let items: Vec<Planted> = (0..n)
        .map(|i| Planted {
            image: img.row(i).to_vec(),
            caption: (i % 3 != 0).then(|| cap.row(i).to_vec()),
            size: (10 + (i as u32 * 7) % 50, 10 + (i as u32 * 13) % 40),
            sha: if i % 97 == 5 { Some("shared") } else { None },
            phash: Some(if i % 50 == 1 {
                0xF0F0_F0F0_0000_FFFF ^ (i as u64 % 4)
            } else {
                (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            }),
        })
        .collect();
    planted_run(run, &items, "w");
}

#[test]
fn union_of_cluster_subsets_is_the_clustered_self_search() {
    let data = planted(3000, 48, 0.3, 5);
    let idx = ClusteredIndex::build(&data, KMeansParams::new(12, 1), 0.05, candle_core::Device::Cpu).unwrap();
    let all = idx.self_pairs(0.93).unwrap();
    assert!(all.len() > 300, "{} planted pairs", all.len());
    for n in [2, 5, 12] {
        let mut union = Vec::new();
        let mut nonempty = 0;
        for i in 0..n {
            let part = idx.self_pairs_in(0.93, |c| c % n == i).unwrap();
            nonempty += usize::from(!part.is_empty());
            union.extend(part);
        }
        assert!(nonempty > 1, "split into {n}: the pairs fall in several partitions");
        sort_dedup(&mut union);
        assert_eq!(union, all, "split into {n}");
    }
}

#[test]
fn partitioned_dedup_is_byte_identical_to_one_process_on_a_planted_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    planted_corpus(&run);
    let flags = ["--image-threshold", "0.95", "--caption-threshold", "0.95"];
    let mut one = vec!["dedup", "--device", "cpu", "--clusters", "8", "--sample", "300", "--seed", "7"];
    one.extend(flags);
    ok(sieve(&one, &[&run]));
    let single = snapshot(&run);
    clear_dedup(&run);
    let summary: serde_json::Value = serde_json::from_slice(&single[3]).unwrap();
    assert_eq!(summary["index"], "clusters(k=8,border=0.05,cpu)");
    for kind in ["exact", "perceptual", "image", "caption", "joint"] {
        assert!(summary["kinds"][kind]["groups"].as_u64().unwrap() > 0, "{kind}: {summary}");
    }
    assert!(summary["removed"].as_u64().unwrap() > 50, "{summary}");

    for n in [1, 3, 8, 11] {
        assert!(partitioned(&run, dir.path(), "8", n, &flags) == single, "{n} partitions differ from one process");
    }
    // With a budget of no pairs in memory, the combine sorts the partitions' pairs on disk (and
    // the one-process search streams every pass): the same bytes, and no sorting folder left.
    let mut args = vec!["dedup-combine", "--device", "cpu", "--cache-pairs-per-item", "0"];
    args.extend(flags);
    ok(sieve(&args, &[&run, Path::new("--partitions"), &dir.path().join("parts-3")]));
    assert!(snapshot(&run) == single, "dedup-combine sorting on disk differs");
    clear_dedup(&run);
    let mut streamed = one.clone();
    streamed.extend(["--cache-pairs-per-item", "0"]);
    ok(sieve(&streamed, &[&run]));
    assert!(snapshot(&run) == single, "streaming every pass differs");
    clear_dedup(&run);
    let left: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(".sieve-spill-"))
        .collect();
    assert!(left.is_empty(), "sorting folders left behind: {left:?}");
    // The one-process command with the partitions' centroids file gives the same again.
    let centroids = dir.path().join("centroids-3");
    let mut with = one.clone();
    with.extend(["--centroids", centroids.to_str().unwrap()]);
    ok(sieve(&with, &[&run]));
    assert!(snapshot(&run) == single, "sieve dedup --centroids differs");
    // Each partition found part of the pairs, not all of them.
    let jsons: Vec<serde_json::Value> = (0..3)
        .map(|i| {
            let p = dir.path().join(format!("parts-3/part-{i:05}-of-00003.json"));
            serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
        })
        .collect();
    let image: Vec<u64> = jsons.iter().map(|j| j["pairs"]["image"].as_u64().unwrap()).collect();
    assert!(image.iter().all(|&c| c > 0), "image pairs per partition {image:?}");
}

/// Eight pictures with captions, each also re-encoded and brightened, one copied byte for byte.
fn edited_corpus(dir: &Path) -> PathBuf {
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    for seed in 1..=8u64 {
        let img = sieve::bench::photo_like(seed, 160, 120);
        img.save(input.join(format!("p{seed}.png"))).unwrap();
        save_jpeg(&img, &input.join(format!("p{seed}_reencoded.jpg")), 70);
        let bright =
            RgbImage::from_fn(160, 120, |x, y| Rgb(img.get_pixel(x, y).0.map(|v| (v as f32 * 1.15).min(255.0) as u8)));
        bright.save(input.join(format!("p{seed}_bright.png"))).unwrap();
        for name in [format!("p{seed}"), format!("p{seed}_reencoded"), format!("p{seed}_bright")] {
            std::fs::write(input.join(format!("{name}.txt")), format!("a photo number {}", seed % 3)).unwrap();
        }
    }
    std::fs::copy(input.join("p2.png"), input.join("p2_copy.png")).unwrap();
    input
}

#[test]
fn partitioned_dedup_matches_one_process_on_embedded_images() {
    let dir = tempfile::tempdir().unwrap();
    let input = edited_corpus(dir.path());
    let run = dir.path().join("run");
    ok(sieve(&["embed", "-q", "--model"], &[&tiny_model_dir(), &input, Path::new("--out"), &run]));
    ok(sieve(&["dedup", "--device", "cpu", "--clusters", "3", "--sample", "300", "--seed", "7"], &[&run]));
    let single = snapshot(&run);
    clear_dedup(&run);
    let summary: serde_json::Value = serde_json::from_slice(&single[3]).unwrap();
    assert!(summary["kinds"]["perceptual"]["groups"].as_u64() >= Some(1), "{summary}");
    assert!(summary["removed"].as_u64().unwrap() >= 8, "{summary}");
    assert!(partitioned(&run, dir.path(), "3", 2, &[]) == single, "partitioned differs from one process");
}

#[test]
fn partitioned_dedup_refuses_wrong_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    planted_corpus(&run);
    let c = dir.path().join("c");
    let parts = dir.path().join("parts");
    ok(sieve(&["dedup-centroids", "--clusters", "4", "--out"], &[&c, &run]));
    let part = |p: &str, extra: &[&str], centroids: &Path| {
        let mut args = vec!["dedup-partition", "--device", "cpu", "--partition", p];
        args.extend(extra);
        sieve(&args, &[&run, Path::new("--centroids"), centroids, Path::new("--out"), &parts])
    };
    let combine = |extra: &[&str]| {
        let mut args = vec!["dedup-combine", "--device", "cpu"];
        args.extend(extra);
        sieve(&args, &[&run, Path::new("--partitions"), &parts])
    };

    // No partitions yet, then a missing one.
    let e = fails(combine(&[]), 2);
    assert!(e.contains("no such folder") && e.contains("dedup-partition"), "{e}");
    std::fs::create_dir_all(&parts).unwrap();
    let e = fails(combine(&[]), 2);
    assert!(e.contains("no finished partitions") && e.contains("dedup-partition"), "{e}");
    ok(part("0/3", &[], &c));
    ok(part("2/3", &[], &c));
    let e = fails(combine(&[]), 2);
    assert!(e.contains("missing 1 of 3 partitions: 1/3"), "{e}");
    // Other thresholds than the partitions used.
    ok(part("1/3", &[], &c));
    let e = fails(combine(&["--image-threshold", "0.9"]), 2);
    assert!(e.contains("partition 0/3") && e.contains("pass the same flags"), "{e}");
    ok(combine(&[]));
    // A partition from another split in the same folder.
    ok(part("0/2", &[], &c));
    let e = fails(combine(&[]), 2);
    assert!(e.contains("different splits"), "{e}");

    // Centroids of another run (same model, other content) are refused, as are edited ones.
    let other = dir.path().join("other");
    let img = planted(50, 32, 0.3, 99);
    planted_run(
        &other,
        &(0..50)
            .map(|i| Planted { image: img.row(i).to_vec(), caption: None, size: (9, 9), sha: None, phash: None })
            .collect::<Vec<_>>(),
        "w",
    );
    let oc = dir.path().join("oc");
    ok(sieve(&["dedup-centroids", "--clusters", "4", "--out"], &[&oc, &other]));
    let e = fails(part("0/3", &[], &oc), 2);
    assert!(e.contains("computed from another run") && e.contains("sieve dedup-centroids"), "{e}");
    let e = fails(sieve(&["dedup", "--centroids"], &[&oc, &run]), 2);
    assert!(e.contains("computed from another run"), "{e}");
    std::fs::copy(oc.join("image.npy"), c.join("image.npy")).unwrap();
    let e = fails(part("0/3", &[], &c), 2);
    assert!(e.contains("image.npy changed"), "{e}");
    let e = fails(part("0/3", &[], &dir.path().join("nothing")), 2);
    assert!(e.contains("no centroids.json"), "{e}");

    // Bad partition strings and a missing --centroids.
    let e = fails(part("3/3", &[], &c), 2);
    assert!(e.contains("--partition"), "{e}");
    let e = fails(sieve(&["dedup-partition", "--partition", "0/2"], &[&run]), 2);
    assert!(e.contains("--centroids") && e.contains("is required"), "{e}");

    // An unfinished run.
    let manifest = run.join("run.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("\"complete\": true", "\"complete\": false")).unwrap();
    let e = fails(sieve(&["dedup-centroids", "--clusters", "4"], &[&run]), 1);
    assert!(e.contains("unfinished run"), "{e}");
}
