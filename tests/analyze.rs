//! `sieve score`, `sieve diversity` and `sieve select`: k-NN search, the diversity metrics
//! against analytic cases and an independent NumPy computation
//! (`scripts/make_diversity_reference.py`), and the commands end to end on planted runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt32Type, UInt64Type};
use arrow_array::Array;
use candle_core::{DType, Device, Tensor};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;
use sieve::analyze::diversity::{self, Clustered, MeasureParams};
use sieve::analyze::select::balanced_quota;
use sieve::index::hnsw::HnswParams;
use sieve::index::kmeans::KMeansParams;
use sieve::index::synthetic::planted;
use sieve::index::{ClusteredIndex, ExactIndex, HnswIndex, Matrix, NeighbourIndex};

use crate::util::*;

fn sieve() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sieve"));
    c.env_remove("RUST_LOG").env_remove("SIEVE_MODEL");
    c
}

fn run_ok(c: &mut Command) {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{:?}: {}", c, String::from_utf8_lossy(&out.stderr));
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn unit_vec(i: usize, dim: usize) -> Vec<f32> {
    let mut v = vec![0f32; dim];
    v[i] = 1.0;
    v
}

/// Vendi (q = 1, 2, ∞) and effective rank of the rows of `m`, through the d×d dual.
fn dual_metrics(m: &Matrix) -> [f64; 4] {
    let eig = diversity::spectrum(&diversity::gram_sum(m, None), m.dim(), m.rows());
    [
        diversity::vendi(&eig, 1.0),
        diversity::vendi(&eig, 2.0),
        diversity::vendi(&eig, f64::INFINITY),
        diversity::effective_rank(&eig),
    ]
}

#[test]
fn knn_exact_matches_brute_force_and_approximate_indexes_recall_it() {
    let (n, dim, k) = (3000, 64, 5);
    let data = planted(n, dim, 0.1, 7);
    let queries: Vec<usize> = (0..n).step_by(15).collect();
    let q = Matrix::gather(data.as_slice(), dim, &queries);
    let skip: Vec<u32> = queries.iter().map(|&i| i as u32).collect();
    // Brute force: every row, self excluded, ties to the lower row.
    let truth: Vec<Vec<u32>> = queries
        .iter()
        .map(|&i| {
            let mut s: Vec<(u32, f32)> =
                (0..n).filter(|&j| j != i).map(|j| (j as u32, sieve::index::dot(data.row(i), data.row(j)))).collect();
            s.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            s.into_iter().take(k).map(|p| p.0).collect()
        })
        .collect();
    let exact = ExactIndex::new(&data, Device::Cpu).knn(&q, k, Some(&skip)).unwrap();
    for (got, want) in exact.iter().zip(&truth) {
        assert_eq!(got.iter().map(|p| p.0).collect::<Vec<_>>(), *want);
        assert!(got.windows(2).all(|w| w[0].1 >= w[1].1), "most similar first: {got:?}");
    }
    let recall = |lists: &[Vec<(u32, f32)>]| {
        let hits: usize = lists.iter().zip(&truth).map(|(l, t)| l.iter().filter(|p| t.contains(&p.0)).count()).sum();
        hits as f64 / (truth.len() * k) as f64
    };
    let clustered = ClusteredIndex::build(&data, KMeansParams::new(30, 0), 0.05, Device::Cpu).unwrap().with_probes(10);
    let c = clustered.knn(&q, k, Some(&skip)).unwrap();
    for (l, &i) in c.iter().zip(&queries) {
        assert!(l.iter().all(|&(j, _)| j as usize != i), "a query never finds itself");
    }
    assert!(recall(&c) >= 0.9, "clustered recall {}", recall(&c));
    // Many small clusters, found through the two-level k-means: 100 clusters of about 30,
    // 33 probed, so about as many rows searched per query as above (recall 0.97 here; 0.99
    // when every centroid is compared, 0.85 with 3 instead of 6 coarse probes).
    let two = ClusteredIndex::build_two_level(&data, KMeansParams::new(100, 0), Device::Cpu).unwrap().with_probes(33);
    assert_eq!(two.centroids().rows(), 100);
    let t = two.knn(&q, k, Some(&skip)).unwrap();
    assert!(t.iter().zip(&queries).all(|(l, &i)| l.iter().all(|&(j, _)| j as usize != i)));
    assert!(recall(&t) >= 0.9, "two-level clustered recall {}", recall(&t));
    let h = HnswIndex::build(&data, HnswParams::default()).knn(&q, k, Some(&skip)).unwrap();
    assert!(recall(&h) >= 0.95, "hnsw recall {}", recall(&h));
}

#[test]
fn vendi_of_k_orthonormal_directions_repeated_is_k_and_identical_rows_score_1() {
    let dim = 16;
    for k in [1usize, 3, 7] {
        let rows: Vec<f32> = (0..k).flat_map(|i| (0..5).flat_map(move |_| unit_vec(i, dim))).collect();
        let m = Matrix::new(dim, rows).unwrap();
        for (name, v) in ["q1", "q2", "inf", "effective rank"].iter().zip(dual_metrics(&m)) {
            assert!((v - k as f64).abs() < 1e-9, "{k} directions: {name} = {v}");
        }
    }
    // The same (non-axis) unit vector 40 times: one distinct item.
    let v: Vec<f32> = (0..dim).map(|i| (i as f32 + 1.0).sin()).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let rows: Vec<f32> = (0..40).flat_map(|_| v.iter().map(|x| x / norm)).collect();
    for v in dual_metrics(&Matrix::new(dim, rows).unwrap()) {
        assert!((v - 1.0).abs() < 1e-5, "identical rows: {v}");
    }
    // Two orthogonal directions repeated 1 and 3 times: eigenvalues 1/4 and 3/4.
    let rows: Vec<f32> = [0, 1, 1, 1].iter().flat_map(|&i| unit_vec(i, dim)).collect();
    let [q1, q2, inf, _] = dual_metrics(&Matrix::new(dim, rows).unwrap());
    let h = -(0.25f64 * 0.25f64.ln() + 0.75 * 0.75f64.ln());
    assert!((q1 - h.exp()).abs() < 1e-9 && (q2 - 1.6).abs() < 1e-9 && (inf - 4.0 / 3.0).abs() < 1e-9);
}

#[test]
fn diversity_metrics_match_the_numpy_reference() {
    let dir = fixtures().join("diversity");
    let expected = json(&dir.join("expected.json"));
    let sets = expected["sets"].as_object().unwrap();
    assert_eq!(sets.len(), 3);
    for (name, e) in sets {
        let x = Tensor::read_npy(dir.join(format!("{name}.npy"))).unwrap().to_dtype(DType::F32).unwrap();
        let (n, dim) = x.dims2().unwrap();
        let m = Matrix::new(dim, x.flatten_all().unwrap().to_vec1().unwrap()).unwrap();
        let labels: Vec<u32> = Tensor::read_npy(dir.join(format!("{name}_labels.npy"))).unwrap().to_vec1().unwrap();
        let f = |k: &str| e[k].as_f64().unwrap();
        let close = |what: &str, got: f64, want: f64, tol: f64| {
            assert!((got - want).abs() <= tol * want.abs().max(1.0), "{name} {what}: {got} vs NumPy {want}");
        };
        let [q1, q2, inf, erank] = dual_metrics(&m);
        close("vendi q1", q1, f("vendi_q1"), 1e-5);
        close("vendi q2", q2, f("vendi_q2"), 1e-5);
        close("vendi inf", inf, f("vendi_inf"), 1e-5);
        close("effective rank", erank, f("effective_rank"), 1e-5);
        let k = e["clusters"].as_u64().unwrap() as usize;
        let cs = diversity::cluster_stats(labels, k, expected["min_share"].as_f64().unwrap());
        close("cluster entropy", cs.entropy, f("cluster_entropy"), 1e-12);
        close("normalised entropy", cs.entropy_normalised, f("cluster_entropy_normalised"), 1e-12);
        close("coverage", cs.coverage, f("coverage"), 1e-12);
        // Nearest-neighbour similarity through the command's own path (exact below nn_queries).
        let c = Clustered::new(m, 4, 0, &Device::Cpu).unwrap();
        let p = MeasureParams { min_share: 0.1, nn_queries: 10_000, probes: 3, seed: 0 };
        let got = diversity::measure(&c, None, None, &p, &Device::Cpu).unwrap();
        let nn = got.nn_similarity.unwrap();
        assert!(nn.exact && nn.queries == n);
        close("nn mean", nn.mean, f("nn_mean"), 1e-5);
        for (pname, v) in e["nn_percentiles"].as_object().unwrap() {
            close(pname, nn.percentiles[pname] as f64, v.as_f64().unwrap(), 1e-5);
        }
        close("measure() vendi q1", got.vendi.q1, f("vendi_q1"), 1e-5);
    }
}

#[test]
fn diversity_command_reports_overall_and_per_folder_and_reruns_identically() {
    let dim = 16;
    // Folder a: one direction 6 times. Folder b: 4 orthonormal directions twice each, with
    // captions on 4 orthonormal directions. Folder c: 2 items, no captions.
    let mut items = Vec::new();
    let mut folders = Vec::new();
    for _ in 0..6 {
        items.push(Planted { image: unit_vec(0, dim), caption: None, size: (10, 10), sha: None, phash: None });
        folders.push("a");
    }
    for i in 0..8 {
        let caption = Some(unit_vec(8 + i % 4, dim));
        items.push(Planted { image: unit_vec(1 + i % 4, dim), caption, size: (10, 10), sha: None, phash: None });
        folders.push("b");
    }
    for i in 0..2 {
        items.push(Planted { image: unit_vec(5 + i, dim), caption: None, size: (10, 10), sha: None, phash: None });
        folders.push("c");
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    planted_run_with_uris(&run, &items, "w", |i| format!("{}/{i:03}.jpg", folders[i]));
    run_ok(sieve().args(["diversity", "--by", "folder", "--device", "cpu"]).arg(&run));
    let first = std::fs::read(run.join("diversity.json")).unwrap();
    let r = json(&run.join("diversity.json"));
    assert_eq!(r["embedded"], 16);
    assert_eq!(r["with_caption"], 8);
    assert_eq!(r["by"], "folder");
    let groups: BTreeMap<String, &Value> =
        r["groups"].as_array().unwrap().iter().map(|g| (g["value"].as_str().unwrap().to_string(), g)).collect();
    assert_eq!(groups.keys().cloned().collect::<Vec<_>>(), ["a", "b", "c"]);
    let q1 = |v: &Value| v["vendi"]["q1"].as_f64().unwrap();
    assert!((q1(&groups["a"]["image"]) - 1.0).abs() < 1e-6);
    assert!((q1(&groups["b"]["image"]) - 4.0).abs() < 1e-6);
    assert!((q1(&groups["b"]["text"]) - 4.0).abs() < 1e-6);
    // Joint vectors [image, caption]/√2 of b: 4 distinct orthonormal pairs.
    assert!((q1(&groups["b"]["joint"]) - 4.0).abs() < 1e-6);
    assert!(groups["a"]["text"].is_null() && groups["c"]["joint"].is_null());
    assert_eq!(groups["a"]["items"], 6);
    // Identical images: nearest-neighbour similarity 1; b's images each have one twin.
    assert!((groups["a"]["image"]["nn_similarity"]["mean"].as_f64().unwrap() - 1.0).abs() < 1e-6);
    assert!((groups["b"]["image"]["nn_similarity"]["percentiles"]["p1"].as_f64().unwrap() - 1.0).abs() < 1e-6);
    // The whole run: 7 directions with multiplicities 6, 2, 2, 2, 2, 1, 1.
    let p: Vec<f64> = [6.0, 2.0, 2.0, 2.0, 2.0, 1.0, 1.0].iter().map(|c| c / 16.0).collect();
    let want = (-p.iter().map(|x| x * x.ln()).sum::<f64>()).exp();
    assert!((q1(&r["overall"]["image"]) - want).abs() < 1e-6, "{} vs {want}", q1(&r["overall"]["image"]));
    run_ok(sieve().args(["diversity", "--by", "folder", "--device", "cpu"]).arg(&run));
    assert_eq!(std::fs::read(run.join("diversity.json")).unwrap(), first, "reruns write the same file");

    let out = sieve().args(["diversity", "--by", "colour", "--device", "cpu"]).arg(&run).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no metadata column `colour`") && err.contains("folder"), "{err}");
}

/// `id -> (cosine, caption_rank, image_rank, flag, suggested id, suggested cosine)` from pairs.parquet.
type PairRow = (f32, Option<u32>, Option<u32>, Option<String>, Option<u64>, Option<f32>);

fn read_pairs(run: &Path) -> BTreeMap<u64, PairRow> {
    let f = std::fs::File::open(run.join("pairs.parquet")).unwrap();
    let mut out = BTreeMap::new();
    for b in ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap() {
        let b = b.unwrap();
        let col = |n: &str| b.column_by_name(n).unwrap().clone();
        let (id, cos, cr, ir, flag, sid, scos) = (
            col("id"),
            col("cosine"),
            col("caption_rank"),
            col("image_rank"),
            col("flag"),
            col("suggested_caption_id"),
            col("suggested_cosine"),
        );
        let clip = col("clip_score");
        for i in 0..b.num_rows() {
            let c = cos.as_primitive::<Float32Type>().value(i);
            assert!((clip.as_primitive::<Float32Type>().value(i) - (100.0 * c).max(0.0)).abs() < 1e-4);
            let u32_at = |a: &arrow_array::ArrayRef| a.is_valid(i).then(|| a.as_primitive::<UInt32Type>().value(i));
            out.insert(
                id.as_primitive::<UInt64Type>().value(i),
                (
                    c,
                    u32_at(&cr),
                    u32_at(&ir),
                    flag.is_valid(i).then(|| flag.as_string::<i32>().value(i).to_string()),
                    sid.is_valid(i).then(|| sid.as_primitive::<UInt64Type>().value(i)),
                    scos.is_valid(i).then(|| scos.as_primitive::<Float32Type>().value(i)),
                ),
            );
        }
    }
    out
}

#[test]
fn score_flags_low_scores_and_swapped_captions_with_a_repair_suggestion() {
    let dim = 32;
    let caption_near = |i: usize, c: f32, other: usize| {
        let mut v = vec![0f32; dim];
        v[i] = c;
        v[other] = (1.0 - c * c).sqrt();
        v
    };
    let mut items: Vec<Planted> = (0..12)
        .map(|i| Planted {
            image: unit_vec(i, dim),
            caption: Some(caption_near(i, 0.8, 31)),
            size: (10, 10),
            sha: None,
            phash: None,
        })
        .collect();
    // Items 3 and 4 have each other's captions; 7's caption barely fits; 11 has none.
    items[3].caption = Some(caption_near(4, 0.8, 31));
    items[4].caption = Some(caption_near(3, 0.8, 31));
    items[7].caption = Some(caption_near(7, 0.1, 30));
    items[11].caption = None;
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    planted_run(&run, &items, "w");

    run_ok(sieve().args(["score", "--min-score", "0.2", "--top-k", "1", "--device", "cpu"]).arg(&run));
    let pairs = read_pairs(&run);
    assert_eq!(pairs.len(), 11, "every item with a caption, and only those");
    assert!(!pairs.contains_key(&11));
    let (cos, cr, ir, flag, sid, scos) = pairs[&3].clone();
    assert!(cos.abs() < 1e-3);
    assert_eq!((cr, ir, flag.as_deref(), sid), (None, None, Some("low_score,outranked"), Some(4)));
    assert!((scos.unwrap() - 0.8).abs() < 1e-3);
    assert_eq!(pairs[&4].3.as_deref(), Some("low_score,outranked"));
    assert_eq!(pairs[&4].4, Some(3));
    let p7 = &pairs[&7];
    assert!((p7.0 - 0.1).abs() < 1e-3);
    // Its caption ranks first for its image, so its image's rank was not needed (null).
    assert_eq!((p7.1, p7.2, p7.3.as_deref()), (Some(1), None, Some("low_score")));
    assert!(p7.5.unwrap() < p7.0, "no caption fits image 7 better than its own");
    let p0 = &pairs[&0];
    assert!((p0.0 - 0.8).abs() < 1e-3);
    assert_eq!((p0.1, p0.2, p0.3.as_deref(), p0.4), (Some(1), None, None, None));

    let s = json(&run.join("pairs_summary.json"));
    assert_eq!(s["pairs"], 11);
    assert_eq!(s["no_caption"], 1);
    assert_eq!((s["low_score"].as_u64(), s["outranked"].as_u64(), s["both"].as_u64()), (Some(3), Some(2), Some(2)));
    assert_eq!((s["flagged"].as_u64(), s["better_caption_found"].as_u64()), (Some(3), Some(2)));
    assert_eq!(s["threshold_source"], "min-score");
    assert_eq!(
        s["cosine"]["histogram"]["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum::<u64>(),
        11
    );
    assert!((s["cosine"]["percentiles"]["p50"].as_f64().unwrap() - 0.8).abs() < 1e-3);

    // The model's default (the registry's default for an unlisted model: 0.28).
    run_ok(sieve().args(["score", "--device", "cpu"]).arg(&run));
    let s = json(&run.join("pairs_summary.json"));
    assert_eq!(s["threshold_source"], "model");
    assert!((s["min_cosine"].as_f64().unwrap() - 0.28).abs() < 1e-6);
    assert_eq!((s["low_score"].as_u64(), s["outranked"].as_u64()), (Some(3), Some(0)), "k = 10 outranks nothing here");
    // The lowest 30%: 3 of 11 pairs.
    run_ok(sieve().args(["score", "--bottom-percent", "30", "--top-k", "0", "--device", "cpu"]).arg(&run));
    let s = json(&run.join("pairs_summary.json"));
    assert_eq!((s["low_score"].as_u64(), s["outranked"].as_u64()), (Some(3), Some(0)));
    assert_eq!(read_pairs(&run)[&3].4, Some(4), "suggestions without the rank test too");

    for (args, needle) in [
        (vec!["--min-score", "28"], "pass 0.28"),
        (vec!["--bottom-percent", "120"], "0 to 100"),
        (vec!["--index", "faiss"], "--index"),
    ] {
        let out = sieve().arg("score").arg(&run).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn balanced_quota_spreads_the_budget_as_evenly_as_sizes_allow() {
    assert_eq!(balanced_quota(&[40, 8, 2], 9), vec![4, 3, 2]);
    assert_eq!(balanced_quota(&[5, 5, 5], 7).iter().sum::<usize>(), 7);
    assert!(balanced_quota(&[5, 5, 5], 7).iter().all(|&q| (2..=3).contains(&q)));
    assert_eq!(balanced_quota(&[1, 0, 3], 10), vec![1, 0, 3]);
}

#[test]
fn select_drops_duplicates_first_and_covers_every_cluster() {
    let dim = 16;
    // Three clusters around e0 (40 items), e1 (8) and e2 (4), spread inside each.
    let mut items = Vec::new();
    let mut cluster = Vec::new();
    for (c, size) in [(0usize, 40usize), (1, 8), (2, 4)] {
        for j in 0..size {
            let image = near(c, 0.97 - 0.002 * j as f32, 3 + j % 13, dim);
            items.push(Planted { image, caption: None, size: (10, 10), sha: None, phash: None });
            cluster.push(c);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    planted_run(&run, &items, "w");
    let uri = |i: usize| format!("img/{i:03}.jpg");
    std::fs::create_dir_all(run.join("dedup")).unwrap();
    std::fs::write(run.join("dedup/remove.txt"), format!("{}\n{}\n", uri(1), uri(2))).unwrap();

    let keep_of = |run: &Path| -> Vec<usize> {
        let text = std::fs::read_to_string(run.join("selection/keep.txt")).unwrap();
        text.lines().map(|l| (0..items.len()).find(|&i| uri(i) == l).expect("a uri of the run")).collect()
    };
    for strategy in ["k-center", "cluster-balanced"] {
        run_ok(sieve().args(["select", "--budget", "9", "--strategy", strategy, "--device", "cpu"]).arg(&run));
        let keep = keep_of(&run);
        assert_eq!(keep.len(), 9, "{strategy}");
        assert!(keep.windows(2).all(|w| w[0] < w[1]), "{strategy}: run order, no repeats");
        assert!(!keep.contains(&1) && !keep.contains(&2), "{strategy}: duplicates go first");
        let per: BTreeSet<usize> = keep.iter().map(|&i| cluster[i]).collect();
        assert_eq!(per.len(), 3, "{strategy}: every cluster is represented: {keep:?}");
        let s = json(&run.join("selection/summary.json"));
        assert_eq!((s["pool"].as_u64(), s["dropped_duplicates"].as_u64()), (Some(50), Some(2)));
        assert_eq!(s["dedup_applied"], true);
        let v = |k: &str| s[k]["vendi_q1"].as_f64().unwrap();
        assert!(v("selection_diversity") > v("random_diversity"), "{strategy}: {s}");
        assert_eq!(s["random_diversity"]["items"], 9);
    }

    let out =
        sieve().args(["select", "--budget", "5", "--drop-flagged", "--device", "cpu"]).arg(&run).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("sieve score"), "{err}");
    for args in [
        vec!["--budget", "0"],
        vec!["--budget", "3", "--strategy", "best"],
        vec!["--budget", "3", "--embedding", "audio"],
    ] {
        let out = sieve().arg("select").arg(&run).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
