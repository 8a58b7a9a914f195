//! `sieve dedup`: neighbour search (exact, HNSW, clustered) on planted data, grouping and keep
//! policies on planted runs, and the command end to end on edited copies of images.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt64Type};
use image::{Rgb, RgbImage};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sieve::analyze::dedup::{dedup, DedupOptions, KeepPolicy, Kind};
use sieve::analyze::groups::Grouping;
use sieve::index::hnsw::HnswParams;
use sieve::index::kmeans::KMeansParams;
use sieve::index::synthetic::planted;
use sieve::index::{ClusteredIndex, ExactIndex, HnswIndex, IndexChoice, Matrix, NeighbourIndex, Pair};

use crate::util::*;

fn sieve() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sieve"));
    c.env_remove("RUST_LOG").env_remove("SIEVE_MODEL");
    c
}

fn keys(pairs: &[Pair]) -> BTreeSet<(u32, u32)> {
    pairs.iter().map(|p| (p.a, p.b)).collect()
}

fn recall(found: &[Pair], truth: &[Pair]) -> f64 {
    let f = keys(found);
    truth.iter().filter(|p| f.contains(&(p.a, p.b))).count() as f64 / truth.len().max(1) as f64
}

#[test]
fn exact_search_matches_brute_force_and_the_device_path() {
    let data = planted(1500, 48, 0.3, 1);
    let t = 0.95;
    let mut brute = Vec::new();
    for a in 0..data.rows() {
        for b in a + 1..data.rows() {
            let s: f32 = data.row(a).iter().zip(data.row(b)).map(|(x, y)| x * y).sum();
            if s >= t {
                brute.push((a as u32, b as u32));
            }
        }
    }
    let exact = ExactIndex::new(&data, candle_core::Device::Cpu).self_pairs(t).unwrap();
    // Pairs within a rounding step of the threshold may fall either way; none are here.
    assert_eq!(keys(&exact), brute.iter().copied().collect());
    assert!(brute.len() > 100, "planted data has duplicates: {}", brute.len());
    for p in &exact {
        assert!(p.a < p.b && p.sim >= t);
    }
    let via_candle = sieve::index::exact::self_pairs_via_candle(&data, t, &candle_core::Device::Cpu).unwrap();
    assert_eq!(keys(&via_candle), keys(&exact));
    // Range search of the data against itself finds each pair from both ends, plus itself.
    let range = ExactIndex::new(&data, candle_core::Device::Cpu).range_search(&data, t).unwrap();
    assert_eq!(range.len(), 2 * exact.len() + data.rows());
}

#[test]
fn hnsw_and_clustered_search_recall_at_least_099_of_exact() {
    let data = planted(10_000, 64, 0.3, 2);
    let t = 0.95;
    let exact = ExactIndex::new(&data, candle_core::Device::Cpu).self_pairs(t).unwrap();
    assert!(exact.len() > 1000, "{} planted pairs", exact.len());
    let hnsw = HnswIndex::build(&data, HnswParams::default()).self_pairs(t).unwrap();
    let r = recall(&hnsw, &exact);
    assert!(r >= 0.99, "HNSW recall {r:.4}");
    assert!(keys(&hnsw).is_subset(&keys(&exact)), "HNSW reports only pairs that pass the threshold");
    let clustered = ClusteredIndex::build(&data, KMeansParams::new(10, 0), 0.05, candle_core::Device::Cpu).unwrap();
    let c = clustered.self_pairs(t).unwrap();
    let rc = recall(&c, &exact);
    assert!(rc >= 0.99, "clustered recall {rc:.4}");
    // Seeded: a second build gives the same pairs, bit for bit.
    let again = ClusteredIndex::build(&data, KMeansParams::new(10, 0), 0.05, candle_core::Device::Cpu).unwrap();
    assert_eq!(again.self_pairs(t).unwrap(), c);
    // Range search agrees with exact range search as well.
    let queries = Matrix::gather(data.as_slice(), data.dim(), &(0..2000).collect::<Vec<_>>());
    let ex = ExactIndex::new(&data, candle_core::Device::Cpu).range_search(&queries, t).unwrap();
    let hr = HnswIndex::build(&data, HnswParams::default()).range_search(&queries, t).unwrap();
    assert!(recall(&hr, &ex) >= 0.99, "HNSW range recall {}", recall(&hr, &ex));
    let cr = clustered.range_search(&queries, t).unwrap();
    assert!(recall(&cr, &ex) >= 0.99, "clustered range recall {}", recall(&cr, &ex));
}

#[test]
fn auto_index_picks_exact_for_small_collections_and_clusters_beyond() {
    let cpu = candle_core::Device::Cpu;
    assert_eq!(IndexChoice::Auto.resolve(1000, &cpu), IndexChoice::Exact);
    assert_eq!(IndexChoice::Auto.resolve(10_000_000, &cpu), IndexChoice::Clusters);
    assert_eq!("clusters".parse::<IndexChoice>().unwrap(), IndexChoice::Clusters);
    assert_eq!(IndexChoice::Hnsw.resolve(10, &cpu), IndexChoice::Hnsw);
}

/// `--index hnsw` sorts the pairs its graph finds (from either end, in no order) before dedup
/// reads them: in memory within `--cache-pairs-per-item`, on disk beyond. Both give the same
/// files, and the pairs are exact search's on planted data.
#[test]
fn hnsw_pairs_sorted_on_disk_give_the_same_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let data = planted(2_000, 32, 0.3, 9);
    let items: Vec<Planted> = (0..data.rows()).map(|i| item(data.row(i).to_vec())).collect();
    planted_run(&run, &items, "w");
    // One thread: the graph is built in a fixed order, so two builds are the same graph.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let files = ["groups.parquet", "keep.txt", "remove.txt"];
    let mut outputs = Vec::new();
    for (index, cache) in [(IndexChoice::Hnsw, 64), (IndexChoice::Hnsw, 0), (IndexChoice::Exact, 64)] {
        let opts = DedupOptions {
            index,
            kinds: vec![Kind::Image],
            remove_kinds: vec![Kind::Image],
            cache_pairs_per_item: cache,
            ..DedupOptions::new(&run)
        };
        let summary = pool.install(|| dedup(&opts)).unwrap();
        assert!(summary.kinds["image"].duplicates > 200, "{index:?}: {:?}", summary.kinds["image"]);
        outputs.push(files.map(|f| std::fs::read(run.join("dedup").join(f)).unwrap()));
        let left = std::fs::read_dir(&run).unwrap().filter(|e| {
            e.as_ref().unwrap().file_name().to_string_lossy().starts_with(sieve::index::spill::SPILL_PREFIX)
        });
        assert_eq!(left.count(), 0, "the sorting folder is removed");
    }
    assert!(outputs[0] == outputs[1], "HNSW's pairs sorted on disk give other files than in memory");
    assert!(outputs[0] == outputs[2], "HNSW's dedup differs from exact search's on planted data");
}

fn item(image: Vec<f32>) -> Planted {
    Planted { image, caption: None, size: (100, 100), sha: None, phash: None }
}

/// `(kind, id) -> (group_id, kept_id, similarity)` from `dedup/groups.parquet`.
fn read_groups(run: &Path) -> BTreeMap<(String, String, u64), (u64, u64, f32)> {
    let f = std::fs::File::open(run.join("dedup/groups.parquet")).unwrap();
    let mut out = BTreeMap::new();
    for b in ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap() {
        let b = b.unwrap();
        let s = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
        let u = |n: &str| b.column_by_name(n).unwrap().as_primitive::<UInt64Type>().clone();
        let (kind, src, id, gid, kept) = (s("kind"), s("source"), u("id"), u("group_id"), u("kept_id"));
        let sim = b.column_by_name("similarity").unwrap().as_primitive::<Float32Type>().clone();
        for i in 0..b.num_rows() {
            out.insert(
                (kind.value(i).to_string(), src.value(i).to_string(), id.value(i)),
                (gid.value(i), kept.value(i), sim.value(i)),
            );
        }
    }
    out
}

/// A key of [`read_groups`].
fn key(kind: &str, source: &str, id: u64) -> (String, String, u64) {
    (kind.to_string(), source.to_string(), id)
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn no_grouping_chains_a_removal() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // cos(A, B) = cos(B, C) = 0.97 but cos(A, C) = 0.88: a chain. D is unrelated.
    let d = 16;
    let a = at(1.0, 1, d);
    let b = at(0.97, 1, d);
    // B = (0.97, s, 0); C = 0.97·B + s·e2, so cos(B, C) = 0.97 and cos(A, C) = 0.97² ≈ 0.94.
    let s = (1.0 - 0.97f32 * 0.97).sqrt();
    let mut c = vec![0f32; d];
    c[0] = 0.97 * 0.97;
    c[1] = 0.97 * s;
    c[2] = s;
    let cos = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
    assert!(cos(&a, &b) > 0.96 && cos(&b, &c) > 0.96 && cos(&a, &c) < 0.95);
    let dd = at(0.0, 5, d);
    planted_run(&run, &[item(a), item(b), item(c), item(dd)], "w");
    let mut opts = DedupOptions::new(&run);
    opts.kinds = vec![Kind::Image];
    opts.keep = KeepPolicy::First;
    opts.image_threshold = Some(0.95);
    // The old `components` grouping removed B and C for A (C only through B). Now the decision
    // is made once in keep order whatever the grouping: A is kept, B goes for A, and C, whose
    // only duplicate B is gone, is kept.
    for grouping in [Grouping::Star, Grouping::Components] {
        opts.grouping = grouping;
        dedup(&opts).unwrap();
        let g = read_groups(&run);
        let gid = |id| g.get(&key("image", "run", id)).map(|v| v.0);
        assert_eq!((gid(0), gid(1), gid(2), gid(3)), (Some(0), Some(0), None, None), "{grouping:?}");
        assert_eq!(g[&key("image", "run", 1)].1, 0, "{grouping:?}: B is removed for A");
        for (_, (_, _, sim)) in g.iter() {
            assert!(*sim >= 0.95, "{grouping:?}: every member is a direct duplicate of its kept item");
        }
        assert_eq!(lines(&run.join("dedup/remove.txt")), vec!["img/001.jpg"], "{grouping:?}");
    }
}

#[test]
fn keep_policies_choose_the_documented_item() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let d = 16;
    // Three near-duplicates of e0: item 0 small with a poorly fitting caption, item 1 largest,
    // item 2 the best caption fit and in the middle of the group; item 3 a distinct image.
    let imgs = [at(0.985, 1, d), at(0.99, 2, d), at(1.0, 1, d), at(0.0, 7, d)];
    let captions = [Some(at(0.2, 3, d)), None, Some(at(0.9, 3, d)), Some(at(0.0, 8, d))];
    let sizes = [(50, 50), (4000, 3000), (640, 480), (10, 10)];
    let items: Vec<Planted> = (0..4)
        .map(|i| Planted {
            image: imgs[i].clone(),
            caption: captions[i].clone(),
            size: sizes[i],
            sha: None,
            phash: None,
        })
        .collect();
    planted_run(&run, &items, "w");
    let kept_for = |policy: KeepPolicy| {
        let mut o = DedupOptions::new(&run);
        o.kinds = vec![Kind::Image];
        o.keep = policy;
        o.image_threshold = Some(0.95);
        let s = dedup(&o).unwrap();
        (read_groups(&run)[&key("image", "run", 0)].1, s.keep)
    };
    assert_eq!(kept_for(KeepPolicy::First), (0, "first".into()));
    assert_eq!(kept_for(KeepPolicy::Largest), (1, "largest".into()));
    assert_eq!(kept_for(KeepPolicy::BestScore), (2, "best-score".into()));
    assert_eq!(kept_for(KeepPolicy::Auto), (2, "best-score".into()), "auto = best-score when captions exist");
    // Most similar to the rest: item 2 (cos 0.985 and 0.99 to the others) over item 0 and 1.
    assert_eq!(kept_for(KeepPolicy::Central).0, 2);
}

#[test]
fn caption_joint_exact_and_perceptual_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let d = 16;
    // A 9×9 item with an optional caption, optional shared bytes and a perceptual hash.
    let p = |image, caption, sha, phash| Planted { image, caption, size: (9, 9), sha, phash: Some(phash) };
    let items = vec![
        // 0 and 1: same bytes.
        p(at(1.0, 1, d), None, Some("same"), 0xFFFF_0000_FFFF_0000),
        p(at(1.0, 1, d), None, Some("same"), 0xFFFF_0000_FFFF_0000),
        // 2: a perceptual copy of 0 (3 bits differ), semantically distinct.
        p(at(0.0, 2, d), None, None, 0xFFFF_0000_FFFF_0007),
        // 3 and 4: the same caption on different images; 5 and 6: image and caption both alike.
        p(at(0.0, 3, d), Some(at(1.0, 9, d)), None, 0x9E37_79B9_7F4A_7C15),
        p(at(0.0, 4, d), Some(at(1.0, 9, d)), None, 0x0F0F_0F0F_0F0F_0F0F),
        p(at(0.0, 5, d), Some(at(0.0, 10, d)), None, 0x2545_F491_4F6C_DD1D),
        p(at(0.1, 5, d), Some(at(0.02, 10, d)), None, 0xAAAA_AAAA_AAAA_AAAA),
    ];
    planted_run(&run, &items, "w");
    let mut o = DedupOptions::new(&run);
    o.keep = KeepPolicy::First;
    o.image_threshold = Some(0.95);
    o.caption_threshold = Some(0.97);
    let s = dedup(&o).unwrap();
    let g = read_groups(&run);
    let members =
        |kind: &str| -> BTreeSet<u64> { g.keys().filter(|(k, _, _)| k == kind).map(|(_, _, id)| *id).collect() };
    assert_eq!(members("exact"), BTreeSet::from([0, 1]));
    assert_eq!(members("perceptual"), BTreeSet::from([0, 1, 2]));
    assert_eq!(members("image"), BTreeSet::from([0, 1, 5, 6]));
    assert_eq!(members("caption"), BTreeSet::from([3, 4, 5, 6]));
    assert_eq!(members("joint"), BTreeSet::from([5, 6]));
    // Caption-only duplicates are reported, not removed (default --remove-kinds).
    assert_eq!(lines(&run.join("dedup/remove.txt")), vec!["img/001.jpg", "img/002.jpg", "img/006.jpg"]);
    assert_eq!(s.removed, 3);
    assert_eq!(s.kinds["caption"].duplicates, 2);
    assert_eq!(s.kinds["joint"].groups, 1);
}

#[test]
fn a_run_without_perceptual_hashes_skips_only_the_perceptual_kind() {
    // Runs written before the `phash` (or the `phash_dct…`) columns existed have none of them.
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let d = 16;
    let twin = |sha| Planted { image: at(1.0, 1, d), caption: None, size: (9, 9), sha: Some(sha), phash: Some(7) };
    planted_run(&run, &[twin("same"), twin("same"), item(at(0.0, 3, d))], "w");
    let part = run.join("metadata/part-00000.parquet");
    let batch = {
        let f = std::fs::File::open(&part).unwrap();
        let mut r = ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
        let b = r.next().unwrap().unwrap();
        let keep: Vec<usize> =
            (0..b.num_columns()).filter(|&i| !b.schema().field(i).name().starts_with("phash")).collect();
        b.project(&keep).unwrap()
    };
    assert!(batch.column_by_name("phash").is_none() && batch.column_by_name("phash_dct").is_none());
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&part).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    forget_checksums(&run); // such runs predate part checksums too

    let mut o = DedupOptions::new(&run);
    o.keep = KeepPolicy::First;
    o.image_threshold = Some(0.95);
    let s = dedup(&o).unwrap();
    assert!(!s.kinds.contains_key("perceptual"), "{:?}", s.kinds.keys());
    assert_eq!(s.kinds["exact"].duplicates, 1);
    assert_eq!(s.kinds["image"].duplicates, 1);
    assert_eq!(lines(&run.join("dedup/remove.txt")), vec!["img/001.jpg"]);
}

#[test]
fn against_keeps_the_old_corpus_and_refuses_another_model() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new, other) = (dir.path().join("old"), dir.path().join("new"), dir.path().join("other"));
    let d = 16;
    // Old: e0, e1, and a near-copy of e1.
    planted_run(&old, &[item(at(1.0, 1, d)), item(near(1, 1.0, 2, d)), item(near(1, 0.999, 2, d))], "w");
    // New: a near-copy of old 0, something new (e4), and a near-copy of that.
    planted_run(&new, &[item(at(0.99, 1, d)), item(near(4, 1.0, 5, d)), item(near(4, 0.995, 6, d))], "w");
    let mut o = DedupOptions::new(&new);
    o.against = Some(old.clone());
    o.kinds = vec![Kind::Image];
    o.keep = KeepPolicy::Largest;
    o.image_threshold = Some(0.95);
    let s = dedup(&o).unwrap();
    assert_eq!(s.against_items, 3);
    assert_eq!(lines(&new.join("dedup/remove.txt")), vec!["img/000.jpg", "img/002.jpg"]);
    assert_eq!(lines(&new.join("dedup/keep.txt")), vec!["img/001.jpg"]);
    let g = read_groups(&new);
    let (gid, kept, _) = g[&key("image", "run", 0)];
    assert_eq!(kept, 0);
    assert_eq!(g[&key("image", "against", 0)].0, gid, "new 0 is grouped with old 0");
    assert!(
        !g.contains_key(&key("image", "against", 1)),
        "duplicates inside the old corpus are not this run's business"
    );

    planted_run(&other, &[item(at(1.0, 1, d))], "different-weights");
    o.against = Some(other);
    let e = dedup(&o).unwrap_err().to_string();
    assert!(e.contains("different models") && e.contains("--model"), "{e}");
}

use sieve::bench::photo_like as picture;

fn save_png(img: &RgbImage, p: &Path) {
    img.save(p).unwrap();
}

/// Five pictures, each with six edited copies (re-encoded, resized, cropped, brightened,
/// mirrored, framed in black), and one byte-identical copy.
pub fn edited_corpus(dir: &Path) -> PathBuf {
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    for seed in 1..=5u64 {
        let img = picture(seed, 320, 240);
        save_png(&img, &input.join(format!("p{seed}.png")));
        save_jpeg(&img, &input.join(format!("p{seed}_reencoded.jpg")), 60);
        save_png(
            &image::imageops::resize(&img, 200, 150, image::imageops::FilterType::Triangle),
            &input.join(format!("p{seed}_resized.png")),
        );
        save_png(
            &image::imageops::crop_imm(&img, 16, 12, 288, 216).to_image(),
            &input.join(format!("p{seed}_cropped.png")),
        );
        let bright =
            RgbImage::from_fn(320, 240, |x, y| Rgb(img.get_pixel(x, y).0.map(|v| (v as f32 * 1.2).min(255.0) as u8)));
        save_png(&bright, &input.join(format!("p{seed}_brightened.png")));
        save_png(&image::imageops::flip_horizontal(&img), &input.join(format!("p{seed}_mirrored.png")));
        // Framed within the original's size (a larger framed copy would be kept as `largest`).
        let mut framed = RgbImage::from_pixel(320, 240, Rgb([0, 0, 0]));
        let inner = image::imageops::resize(&img, 280, 210, image::imageops::FilterType::Triangle);
        image::imageops::replace(&mut framed, &inner, 20, 15);
        save_png(&framed, &input.join(format!("p{seed}_framed.png")));
    }
    std::fs::copy(input.join("p3.png"), input.join("p3_copy.png")).unwrap();
    input
}

/// [`edited_corpus`] in `dir`, embedded with the tiny model into `dir/run`.
pub fn embedded_edited_corpus(dir: &Path) -> PathBuf {
    let input = edited_corpus(dir);
    let run = dir.join("run");
    let out = sieve()
        .args(["embed", "-q", "--model"])
        .arg(tiny_model_dir())
        .arg(&input)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    run
}

#[test]
fn edited_copies_group_with_their_original_and_reruns_are_identical() {
    let dir = tempfile::tempdir().unwrap();
    let run = embedded_edited_corpus(dir.path());
    // The tiny model has random weights, so its image similarities mean nothing: judge the
    // perceptual and exact kinds here (planted-vector tests cover the semantic kinds).
    let dedup_cmd = || {
        let out = sieve()
            .args(["dedup", "-q", "--kinds", "exact,perceptual,image", "--remove-kinds", "exact,perceptual"])
            .arg(&run)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stderr).unwrap()
    };
    let printed = dedup_cmd();
    assert!(printed.contains("keep 5, remove 31"), "{printed}");
    let g = read_groups(&run);
    let uri_of: HashMap<u64, String> = {
        let meta = sieve::store::Run::open(&run).unwrap().meta;
        let name = |u: &String| Path::new(u).file_name().unwrap().to_string_lossy().into_owned();
        meta.id.iter().copied().zip(meta.uri.iter().map(name)).collect()
    };
    let mut group_of: BTreeMap<String, u64> = BTreeMap::new();
    for ((kind, _, id), (gid, _, _)) in &g {
        if kind == "perceptual" {
            group_of.insert(uri_of[id].clone(), *gid);
        }
    }
    for seed in 1..=5 {
        let original = group_of
            .get(&format!("p{seed}.png"))
            .copied()
            .unwrap_or_else(|| panic!("p{seed} not grouped: {group_of:?}"));
        for edit in ["reencoded.jpg", "resized.png", "cropped.png", "brightened.png", "mirrored.png", "framed.png"] {
            assert_eq!(group_of.get(&format!("p{seed}_{edit}")), Some(&original), "p{seed}_{edit}");
        }
        for other in seed + 1..=5 {
            assert_ne!(group_of[&format!("p{other}.png")], original, "distinct pictures p{seed} and p{other} grouped");
        }
    }
    let exact: Vec<&u64> = g.keys().filter(|(k, _, _)| k == "exact").map(|(_, _, id)| id).collect();
    assert_eq!(
        exact.iter().map(|id| uri_of[id].as_str()).collect::<BTreeSet<_>>(),
        BTreeSet::from(["p3.png", "p3_copy.png"])
    );
    // Every embedded record in exactly one list.
    let keep = lines(&run.join("dedup/keep.txt"));
    let remove = lines(&run.join("dedup/remove.txt"));
    assert_eq!(keep.len() + remove.len(), 36);
    assert!(keep.iter().all(|k| !remove.contains(k)));

    let snapshot = |run: &Path| -> Vec<Vec<u8>> {
        ["groups.parquet", "keep.txt", "remove.txt", "summary.json"]
            .iter()
            .map(|f| std::fs::read(run.join("dedup").join(f)).unwrap())
            .collect()
    };
    let first = snapshot(&run);
    dedup_cmd();
    assert_eq!(snapshot(&run), first, "rerun wrote different bytes");
    let summary: serde_json::Value = serde_json::from_slice(&first[3]).unwrap();
    assert_eq!(summary["index"], "exact(cpu)");
    assert_eq!(summary["thresholds"]["perceptual_distance"], 12);
}

#[test]
fn dedup_rejects_bad_arguments_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [vec!["--kinds", "pixels"], vec!["--keep", "newest"], vec!["--index", "faiss"], vec!["--grouping", "x"]]
    {
        let out = sieve().arg("dedup").arg(dir.path()).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = sieve().arg("dedup").arg(dir.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("not a sieve run directory") && err.contains("sieve embed"), "{err}");
}

#[test]
fn calibrate_sweeps_the_threshold_and_agrees_with_dedup_at_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let run = embedded_edited_corpus(dir.path());
    let args = ["--kinds", "exact,perceptual", "--remove-kinds", "exact,perceptual"];
    let out = sieve().args(["dedup", "--calibrate", "--json"]).args(args).arg(&run).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cal: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!run.join("dedup/keep.txt").exists(), "calibration decides nothing");
    let printed = String::from_utf8_lossy(&out.stderr);
    assert!(printed.contains("perceptual") && printed.contains("12*"), "{printed}");
    let bands = cal["kinds"]["perceptual"]["bands"].as_array().unwrap();
    assert_eq!(bands.len(), 19, "distances 0 to 12 + 6");
    let removed: Vec<u64> = bands.iter().map(|b| b["removed"].as_u64().unwrap()).collect();
    assert!(removed.windows(2).all(|w| w[0] <= w[1]), "a looser threshold never removes less: {removed:?}");
    let pairs: u64 = bands.iter().map(|b| b["pairs"].as_u64().unwrap()).sum();
    assert!(pairs > 30, "{pairs} pairs");
    let default = bands.iter().find(|b| b["is_default"] == true).unwrap();
    assert_eq!(default["distance"], 12);
    // The sweep at the default threshold is the decision `sieve dedup` makes.
    let out = sieve().args(["dedup", "--json"]).args(args).arg(&run).output().unwrap();
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(default["removed"], s["removed"]);
    assert_eq!(cal["removed_at_defaults"], s["removed"]);
    // The page shows sample pairs as thumbnails and loads nothing.
    let html = std::fs::read_to_string(run.join("dedup/calibrate.html")).unwrap();
    assert!(html.matches("src=\"data:image/jpeg;base64,").count() >= 6, "sample thumbnails");
    assert!(html.contains("default-src 'none'") && !html.contains("http://") && !html.contains("https://"));
}

#[test]
fn the_best_fitting_caption_survives_with_the_kept_image() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let d = 16;
    // Three copies of one image: 0 the largest (kept) with a caption that fits it poorly, 1 a
    // copy whose caption fits it well, 2 a copy without caption; 3 and 4 another pair whose
    // kept item already has the better caption.
    let p = |image, caption, size| Planted { image, caption, size, sha: None, phash: None };
    let items = vec![
        p(at(1.0, 1, d), Some(near(0, 0.1, 3, d)), (900, 900)),
        p(at(0.99, 1, d), Some(near(0, 0.8, 4, d)), (100, 100)),
        p(at(0.995, 2, d), None, (100, 100)),
        p(near(5, 1.0, 6, d), Some(near(5, 0.9, 7, d)), (900, 900)),
        p(near(5, 0.99, 6, d), Some(near(5, 0.3, 8, d)), (100, 100)),
    ];
    planted_run(&run, &items, "w");
    let mut o = DedupOptions::new(&run);
    o.kinds = vec![Kind::Image];
    o.keep = KeepPolicy::Largest;
    o.image_threshold = Some(0.95);
    let s = dedup(&o).unwrap();
    assert_eq!((s.removed, s.captions_replaced, s.captions_dropped), (3, 1, 1), "{s:?}");
    let f = std::fs::File::open(run.join("dedup/captions.parquet")).unwrap();
    let b = ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap().next().unwrap().unwrap();
    assert_eq!(b.num_rows(), 1);
    let u = |n: &str| b.column_by_name(n).unwrap().as_primitive::<UInt64Type>().value(0);
    let st = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().value(0).to_string();
    assert_eq!((u("id"), u("caption_from_id")), (0, 1));
    assert_eq!((st("caption"), st("own_caption")), ("caption 1".to_string(), "caption 0".to_string()));
    let score = b.column_by_name("score").unwrap().as_primitive::<Float32Type>().value(0);
    let own = b.column_by_name("own_score").unwrap().as_primitive::<Float32Type>().value(0);
    assert!((score - 0.8).abs() < 1e-3 && (own - 0.1).abs() < 1e-3, "{score} {own}");

    o.caption_policy = sieve::analyze::dedup::CaptionPolicy::Kept;
    let s = dedup(&o).unwrap();
    assert_eq!((s.captions_replaced, s.captions_dropped, s.caption_policy.as_str()), (0, 2, "kept"));
}
