//! `sieve compare A B`: CMMD against an independent NumPy computation, a run against itself (no
//! shift, coverage 1), a sample of a run (no shift beyond noise), a planted novel region (found,
//! with its items), and runs of different encoders (refused).

use std::path::{Path, PathBuf};
use std::process::Output;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sieve::index::Matrix;
use sieve::store::Run;

use crate::cmd::*;
use crate::util::*;

fn sieve(args: &[&str]) -> Output {
    sieve_out(args)
}

fn json(o: &Output) -> serde_json::Value {
    stdout_json(o)
}

fn compare(a: &Path, b: &Path, more: &[&str]) -> serde_json::Value {
    let mut args = vec!["compare", "-q", "--json", a.to_str().unwrap(), b.to_str().unwrap()];
    args.extend(more);
    json(&sieve(&args))
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn cmmd_matches_an_independent_numpy_computation() {
    // tests/fixtures/cmmd/expected.json: scripts/check_cmmd.py (NumPy, float64, the kernel from
    // squared norms as google-research/cmmd computes it).
    let text = std::fs::read_to_string(fixtures().join("cmmd").join("expected.json")).unwrap();
    let want: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!((f(&want["sigma"]), f(&want["scale"])), (sieve::compare::cmmd::SIGMA, sieve::compare::cmmd::SCALE));
    let matrix = |rows: &serde_json::Value| {
        let rows = rows.as_array().unwrap();
        let d = rows[0].as_array().unwrap().len();
        Matrix::new(d, rows.iter().flat_map(|r| r.as_array().unwrap().iter().map(|v| f(v) as f32)).collect()).unwrap()
    };
    let cases = want["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let got = sieve::compare::cmmd::cmmd(&matrix(&case["x"]), &matrix(&case["y"]));
        let (u, b) = (f(&case["unbiased"]), f(&case["biased"]));
        assert!((got.unbiased - u).abs() < 1e-4, "{}: unbiased {} vs NumPy {u}", case["name"], got.unbiased);
        assert!((got.biased - b).abs() < 1e-4, "{}: biased {} vs NumPy {b}", case["name"], got.biased);
    }
    // The shifted pair is far apart, the same-distribution pair near 0 (unbiased).
    assert!(f(&cases[0]["unbiased"]) > 1.0 && f(&cases[1]["unbiased"]).abs() < 0.1);
}

/// The fixture pictures with a caption each, embedded by the tiny model.
fn fixture_run(root: &Path) -> PathBuf {
    let pics = root.join("pics");
    std::fs::create_dir_all(&pics).unwrap();
    for (i, f) in ["photo.jpg", "tall.jpg", "wide.png", "tiny.png", "palette.png", "gray.png"].iter().enumerate() {
        std::fs::copy(fixtures().join("images").join(f), pics.join(f)).unwrap();
        let stem = Path::new(f).file_stem().unwrap().to_str().unwrap();
        std::fs::write(pics.join(format!("{stem}.txt")), format!("caption number {i} of {stem}")).unwrap();
    }
    embed_with(&pics, &root.join("run"), &tiny_model_dir())
}

#[test]
fn a_run_compared_with_itself_shows_no_shift_and_full_coverage() {
    let dir = tempfile::tempdir().unwrap();
    let run = fixture_run(dir.path());
    let out = dir.path().join("cmp");
    let c = compare(&run, &run, &["--out", out.to_str().unwrap()]);
    let opened = Run::open(&run).unwrap();
    let m = c["modalities"].as_array().unwrap();
    assert_eq!(m.len(), 2, "image and caption: {c}");
    for (mo, text) in m.iter().zip([false, true]) {
        assert_eq!(mo["space"], if text { "caption" } else { "image" });
        assert_eq!((mo["sampled_a"].as_u64(), mo["sampled_b"].as_u64()), (Some(6), Some(6)));
        // The biased estimate (google-research/cmmd's) of a set against itself is 0.
        assert!(f(&mo["cmmd_biased"]).abs() < 1e-6, "{mo}");
        // The unbiased one is −2(1 − mean off-diagonal kernel)/n × 1000: computed here directly.
        let e = opened.embeddings(text).unwrap();
        let d = opened.manifest.embed_dim;
        let rows: Vec<Vec<f64>> = (0..6)
            .map(|i| {
                let v: Vec<f64> = e[i * d..(i + 1) * d].iter().map(|&x| x as f64).collect();
                let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                v.iter().map(|x| x / n).collect()
            })
            .collect();
        let mut off = 0.0;
        for i in 0..6 {
            for j in 0..6 {
                if i != j {
                    let d2: f64 = rows[i].iter().zip(&rows[j]).map(|(a, b)| (a - b) * (a - b)).sum();
                    off += (-d2 / 200.0).exp() / 30.0;
                }
            }
        }
        let want = -2.0 * (1.0 - off) / 6.0 * 1000.0;
        assert!((f(&mo["cmmd"]) - want).abs() < 1e-3, "{} vs {want}", mo["cmmd"]);
        assert_eq!(f(&mo["test"]["p_value"]), 1.0, "{mo}");
        assert_eq!(mo["shift"], false);
        for cov in ["coverage_b_by_a", "coverage_a_by_b"] {
            assert_eq!(f(&mo[cov]["share"]), 1.0, "{cov}: {mo}");
            assert!(f(&mo[cov]["nearest_p10"]) > 0.999, "{mo}");
        }
        assert_eq!(mo["novel"].as_array().unwrap().len(), 0);
        assert_eq!(mo["vanished"].as_array().unwrap().len(), 0);
    }
    assert!(c["verdict"].as_str().unwrap().starts_with("no shift beyond noise"), "{}", c["verdict"]);
    assert!(c.get("concepts").is_none(), "no audit, no concepts section");
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("compare.json")).unwrap()).unwrap();
    assert_eq!(written, c);
    let page = std::fs::read_to_string(out.join("compare.html")).unwrap();
    assert!(page.contains("no shift beyond noise") && page.contains("Content-Security-Policy"));
}

#[test]
fn an_image_only_run_compares_its_images_and_says_why_there_are_no_captions() {
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    std::fs::create_dir_all(&pics).unwrap();
    for f in ["photo.jpg", "tall.jpg", "wide.png", "gray.png"] {
        std::fs::copy(fixtures().join("images").join(f), pics.join(f)).unwrap();
        std::fs::write(pics.join(f).with_extension("txt"), "a caption").unwrap();
    }
    let run = embed_with(&pics, &dir.path().join("run"), &root().join("models").join("tiny-dinov2"));
    let c = compare(&run, &run, &[]);
    let m = c["modalities"].as_array().unwrap();
    assert_eq!((m.len(), &m[0]["space"]), (1, &serde_json::json!("image")));
    assert_eq!(f(&m[0]["coverage_b_by_a"]["share"]), 1.0);
    assert!(c["notes"][0].as_str().unwrap().contains("image-only model"), "{}", c["notes"]);
    // Against a CLIP run of the same pictures: other weights, refused.
    let clip = fixture_run(&dir.path().join("clip"));
    let o = sieve(&["compare", run.to_str().unwrap(), clip.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A unit vector near `centre` (a basis direction of 16), seeded.
fn member(rng: &mut StdRng, centre: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..16).map(|_| rng.random_range(-0.4f32..0.4)).collect();
    v[centre] += 1.0;
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn planted(v: &[f32], caption: bool) -> Planted {
    Planted { image: v.to_vec(), caption: caption.then(|| v.to_vec()), size: (64, 64), sha: None, phash: None }
}

#[test]
fn a_sample_shows_no_shift_and_a_planted_region_is_found_and_located() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    // A: 200 items in four regions (item i near direction i % 4).
    let a_vecs: Vec<Vec<f32>> = (0..200).map(|i| member(&mut rng, i % 4)).collect();
    let a = dir.path().join("a");
    planted_run_with_uris(&a, &a_vecs.iter().map(|v| planted(v, true)).collect::<Vec<_>>(), "w", |i| {
        format!("old/{i:03}.jpg")
    });
    // A sample of A: every third item (67, from every region), no captions.
    let third: Vec<Planted> = a_vecs.iter().step_by(3).map(|v| planted(v, false)).collect();
    let sample = dir.path().join("sample");
    planted_run_with_uris(&sample, &third, "w", |i| format!("old/{:03}.jpg", 3 * i));
    // B: 150 of A's items and 50 in a fifth region A never had.
    let mut b_vecs: Vec<Vec<f32>> =
        a_vecs.iter().enumerate().filter(|(i, _)| i % 4 != 3).map(|(_, v)| v.clone()).collect();
    b_vecs.extend((0..50).map(|_| member(&mut rng, 9)));
    let b = dir.path().join("b");
    planted_run_with_uris(&b, &b_vecs.iter().map(|v| planted(v, true)).collect::<Vec<_>>(), "w", |i| {
        if i < 150 {
            format!("old/b{i:03}.jpg")
        } else {
            format!("new/{i:03}.jpg")
        }
    });

    let s = compare(&a, &sample, &["--clusters", "8"]);
    let m = s["modalities"].as_array().unwrap();
    assert_eq!(m.len(), 1, "the sample has no captions: {s}");
    assert!(s["notes"][0].as_str().unwrap().starts_with("caption: not compared"), "{}", s["notes"]);
    let im = &m[0];
    assert!(f(&im["test"]["p_value"]) > 0.05, "a sample of A is no shift: {im}");
    assert_eq!(f(&im["coverage_b_by_a"]["share"]), 1.0, "every sampled item is in A");
    assert!((f(&im["coverage_a_by_b"]["share"]) - 67.0 / 200.0).abs() < 1e-9, "a third of A is in the sample: {im}");
    assert_eq!((im["novel"].as_array().unwrap().len(), im["vanished"].as_array().unwrap().len()), (0, 0), "{im}");
    assert!(s["verdict"].as_str().unwrap().starts_with("no shift beyond noise"), "{}", s["verdict"]);

    let c = compare(&a, &b, &["--clusters", "8"]);
    assert_eq!(c, compare(&a, &b, &["--clusters", "8"]), "reruns agree");
    let m = c["modalities"].as_array().unwrap();
    assert_eq!(m.len(), 2);
    for mo in m {
        assert_eq!(f(&mo["test"]["p_value"]), 1.0 / 201.0, "the planted shift is found: {mo}");
        assert!(f(&mo["cmmd"]) > 0.3, "{mo}");
        assert!((f(&mo["coverage_b_by_a"]["share"]) - 0.75).abs() < 1e-9, "{mo}");
        assert!((f(&mo["coverage_a_by_b"]["share"]) - 0.75).abs() < 1e-9, "{mo}");
        // The novel regions are the planted one: 50 items of B, none of A, every example new.
        let novel = mo["novel"].as_array().unwrap();
        assert!(!novel.is_empty(), "{mo}");
        let items: u64 = novel.iter().map(|r| r["items_b"].as_u64().unwrap()).sum();
        assert_eq!(items, 50, "{mo}");
        for r in novel {
            assert_eq!((r["items_a"].as_u64(), f(&r["covered"])), (Some(0), 0.0));
            for e in r["examples"].as_array().unwrap() {
                assert!(e["uri"].as_str().unwrap().starts_with("new/"), "{e}");
            }
        }
        // A's fourth region shrank to 0 in B: vanished.
        let vanished = mo["vanished"].as_array().unwrap();
        let items: u64 = vanished.iter().map(|r| r["items_a"].as_u64().unwrap()).sum();
        assert_eq!(items, 50, "{mo}");
        for r in vanished {
            for e in r["examples"].as_array().unwrap() {
                assert_eq!(e["id"].as_u64().unwrap() % 4, 3, "{e}");
            }
        }
    }
    let verdict = c["verdict"].as_str().unwrap();
    assert!(verdict.starts_with("shift: image p=0.005"), "{verdict}");
}

#[test]
fn runs_of_different_encoders_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = vec![planted(&[1.0, 0.0, 0.0, 0.0], false), planted(&[0.0, 1.0, 0.0, 0.0], false)];
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    planted_run(&a, &v, "weights-one");
    planted_run(&b, &v, "weights-two");
    let o = sieve(&["compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("different spaces"), "{err}");
}

#[test]
fn concept_shares_appear_side_by_side_when_both_runs_were_audited() {
    let dir = tempfile::tempdir().unwrap();
    let v: Vec<Planted> =
        (0..4).map(|i| planted(&[(i == 0) as u8 as f32, (i != 0) as u8 as f32, 0.0, 0.0], false)).collect();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    planted_run(&a, &v, "w");
    planted_run(&b, &v, "w");
    std::fs::write(a.join("audit_summary.json"), r#"{"groups": {"pet": {"dog": 0.5, "cat": 0.25, "none": 0.25}}}"#)
        .unwrap();
    assert!(compare(&a, &b, &[]).get("concepts").is_none(), "only A was audited");
    std::fs::write(b.join("audit_summary.json"), r#"{"groups": {"pet": {"dog": 0.125, "none": 0.875}}}"#).unwrap();
    let c = compare(&a, &b, &[]);
    assert_eq!(
        c["concepts"],
        serde_json::json!([
            {"concept": "pet: cat", "a": 0.25, "b": null},
            {"concept": "pet: dog", "a": 0.5, "b": 0.125},
            {"concept": "pet: none", "a": 0.25, "b": 0.875}
        ])
    );
}

/// The time of `sieve compare` at its default sample (10,000 per run) on two runs of 20,000
/// planted 512-d items each (B with a fifth of its items in a region A lacks). Run by hand:
/// `cargo test --release --test tests compare::timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn timing_at_the_default_sample() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let mut item = |c: usize| {
        let mut v: Vec<f32> = (0..512).map(|_| rng.random_range(-0.05f32..0.05)).collect();
        v[c] += 1.0;
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        planted(&v.iter().map(|x| x / n).collect::<Vec<_>>(), true)
    };
    let a: Vec<Planted> = (0..20_000).map(|i| item(i % 50)).collect();
    let b: Vec<Planted> = (0..20_000).map(|i| item(if i % 5 == 0 { 100 + i % 7 } else { i % 50 })).collect();
    let (ra, rb) = (dir.path().join("a"), dir.path().join("b"));
    planted_run(&ra, &a, "w");
    planted_run(&rb, &b, "w");
    let t = std::time::Instant::now();
    let c = compare(&ra, &rb, &[]);
    eprintln!("sieve compare, 2 × 20,000 items of 512-d, image and caption, default sample: {:.1?}", t.elapsed());
    eprintln!("{}", c["verdict"]);
    for m in c["modalities"].as_array().unwrap() {
        assert_eq!(m["sampled_a"], 10_000);
        assert!(m["shift"].as_bool().unwrap());
        assert!(!m["novel"].as_array().unwrap().is_empty(), "{}", m["novel"]);
    }
}

#[test]
fn overlap_lists_the_eval_items_that_dedup_against_found_in_train() {
    let dir = tempfile::tempdir().unwrap();
    let (train, eval) = (dir.path().join("train"), dir.path().join("eval"));
    let item = |v: Vec<f32>, sha: &'static str| Planted {
        image: v,
        caption: None,
        size: (64, 64),
        sha: Some(sha),
        phash: None,
    };
    let d = 8;
    planted_run(
        &train,
        &[item(near(0, 1.0, 1, d), "t0"), item(near(2, 1.0, 3, d), "t1"), item(near(4, 1.0, 5, d), "t2")],
        "w",
    );
    // EVAL: the bytes of TRAIN 0 (another vector: sha256 alone matches), a near-copy of TRAIN 1
    // (cosine 0.99), and something new.
    planted_run(
        &eval,
        &[item(near(6, 1.0, 7, d), "t0"), item(near(2, 0.99, 3, d), "e1"), item(near(7, 1.0, 6, d), "e2")],
        "w",
    );
    let (t, e) = (train.to_str().unwrap(), eval.to_str().unwrap());
    let o = sieve(&["compare", t, e, "--overlap"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--against"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = sieve(&["dedup", "-q", e, "--against", t, "--device", "cpu"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = dir.path().join("out");
    let c = compare(&train, &eval, &["--overlap", "--out", out.to_str().unwrap()]);
    assert_eq!((c["eval_items"].as_u64(), c["overlapping"].as_u64()), (Some(3), Some(2)), "{c}");
    assert_eq!(c["by_kind"], serde_json::json!({"exact": 1, "image": 1}));
    let items = c["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{c}");
    assert_eq!(
        (&items[0]["kind"], &items[0]["id"], &items[0]["train"][0]["id"]),
        (&"exact".into(), &0.into(), &0.into())
    );
    assert_eq!(
        (&items[1]["kind"], &items[1]["id"], &items[1]["train"][0]["id"]),
        (&"image".into(), &1.into(), &1.into())
    );
    assert!((f(&items[1]["similarity"]) - 0.99).abs() < 2e-3, "{}", items[1]);
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("overlap.json")).unwrap()).unwrap();
    assert_eq!(written, c);
    // Deduplicated against another corpus: refused.
    let o = sieve(&["compare", e, e, "--overlap"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Two audited runs show their concept shares side by side, as `sieve audit` wrote them.
#[test]
fn audited_runs_show_their_concept_shares_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let run = fixture_run(dir.path());
    let concepts = dir.path().join("concepts.txt");
    std::fs::write(&concepts, "lighting: daylight | night | studio\nsubject: a dog | a car\n").unwrap();
    let o = sieve(&["audit", "-q", run.to_str().unwrap(), "--concepts", concepts.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("audit_summary.json")).unwrap()).unwrap();
    let c = compare(&run, &run, &[]);
    let rows = c["concepts"].as_array().unwrap_or_else(|| panic!("no concepts section: {c}"));
    let mut expected = 0;
    for (group, shares) in summary["groups"].as_object().unwrap() {
        for (concept, share) in shares.as_object().unwrap() {
            expected += 1;
            let name = format!("{group}: {concept}");
            let row = rows.iter().find(|r| r["concept"] == name.as_str()).unwrap_or_else(|| panic!("{name}: {c}"));
            assert_eq!((&row["a"], &row["b"]), (share, share), "{name}");
        }
    }
    // Every concept of both groups plus each group's none.
    assert_eq!((rows.len(), expected), (7, 7), "{c}");
}
