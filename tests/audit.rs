//! `sieve audit`: zero-shot concept coverage. Planted structure at the library level (concept
//! directions and items built from them, so every assignment is known), then the command on the
//! tiny model: outputs, determinism, `sieve run --concepts`, the report, and usage errors.

use std::path::{Path, PathBuf};
use std::process::Output;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use sieve::audit::concepts::ConceptSet;
use sieve::audit::{audit_with, AuditOptions, Directions};
use sieve::store::Run;

use crate::cmd::*;
use crate::util::*;

const DIM: usize = 16;

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// `Σ weight·e_axis` plus a small deterministic component in the noise dimensions (8..16),
/// normalised.
fn mix(parts: &[(usize, f32)], seed: usize) -> Vec<f32> {
    let mut v = vec![0f32; DIM];
    for &(axis, w) in parts {
        v[axis] += w;
    }
    for (k, x) in v.iter_mut().enumerate().skip(8) {
        *x += 0.05 * (((seed * 31 + k * 17) % 13) as f32 / 6.0 - 1.0);
    }
    unit(v)
}

fn axis(k: usize) -> Vec<f32> {
    let mut v = vec![0f32; DIM];
    v[k] = 1.0;
    v
}

fn batches(path: &Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

fn strings(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    b.column_by_name(name).unwrap().as_string::<i32>().iter().map(|s| s.map(str::to_string)).collect()
}

fn floats(b: &RecordBatch, name: &str) -> Vec<Option<f32>> {
    b.column_by_name(name).unwrap().as_primitive::<arrow_array::types::Float32Type>().iter().collect()
}

/// Lighting concepts on axes 0, 1, 2 (daylight, night, studio), background on axes 3, 4
/// (plain, outdoors). 30 items:
/// - 0..14 daylight, 14..22 night, 22..24 studio (rare: under-represented);
/// - 24..27 exactly between daylight and night: margin 0, none;
/// - 27 daylight with night at 0.97 (a margin of about 0.017: daylight), 28 with night at 0.995
///   (about 0.003: none);
/// - 29 daylight again.
///
/// Background alternates plain/outdoors. Captions: the image's vector, except items 0..4,
/// whose caption says night (a disagreement), and items 25 and 29, which have no caption.
/// Folders: `a/` for items 0..15, `b/` after.
fn planted(dir: &Path) -> PathBuf {
    let lighting = |i: usize| -> Vec<(usize, f32)> {
        match i {
            0..=13 | 29 => vec![(0, 1.0)],
            14..=21 => vec![(1, 1.0)],
            22..=23 => vec![(2, 1.0)],
            24..=26 => vec![(0, 1.0), (1, 1.0)],
            27 => vec![(0, 1.0), (1, 0.97)],
            _ => vec![(0, 1.0), (1, 0.995)],
        }
    };
    let items: Vec<Planted> = (0..30)
        .map(|i| {
            let background = (3 + i % 2, 1.0);
            let mut l = lighting(i);
            l.push(background);
            let image = mix(&l, i);
            let caption = match i {
                0..=3 => Some(mix(&[(1, 1.0), background], i + 100)),
                25 | 29 => None,
                _ => Some(image.clone()),
            };
            Planted { image, caption, size: (64, 64), sha: None, phash: None }
        })
        .collect();
    let run = dir.join("run");
    planted_run_with_uris(&run, &items, "planted", |i| format!("{}/{i:03}.jpg", if i < 15 { "a" } else { "b" }));
    run
}

fn planted_options(dir: &Path, run: &Path) -> (AuditOptions, Directions) {
    let file = dir.join("concepts.txt");
    std::fs::write(&file, "# planted\nlighting: daylight | night | studio\nbackground: plain | outdoors\n").unwrap();
    let concepts = ConceptSet::read(&file).unwrap();
    let directions = Directions {
        per_group: vec![
            [0, 1, 2].iter().flat_map(|&k| axis(k)).collect(),
            [3, 4].iter().flat_map(|&k| axis(k)).collect(),
        ],
        templates: "planted".into(),
        prompts_per_concept: 1,
    };
    (AuditOptions { by: Some("folder".into()), ..AuditOptions::new(run, concepts) }, directions)
}

#[test]
fn planted_concepts_are_found_ties_are_none_and_the_rare_one_is_called_out() {
    let dir = tempfile::tempdir().unwrap();
    let run = planted(dir.path());
    let (opts, directions) = planted_options(dir.path(), &run);
    assert_eq!(opts.margin, 0.01, "the documented default");
    let s = audit_with(&Run::open(&run).unwrap(), &opts, &directions).unwrap();
    assert_eq!((s.embedded, s.with_caption), (30, 28));

    // Lighting, image side: daylight 0..14, 27, 29 = 16; night 8; studio 2; none 24, 25, 26, 28 = 4.
    let l = &s.audit[0];
    assert_eq!(l.group, "lighting");
    let counts: Vec<(&str, usize)> = l.image.concepts.iter().map(|c| (c.concept.as_str(), c.count)).collect();
    assert_eq!(counts, [("daylight", 16), ("night", 8), ("studio", 2), ("none", 4)]);
    // Even share 1/3; under half of it (1/6 = 5 of 30): studio.
    assert_eq!(l.image.under_represented, ["studio"]);
    // Captions (28): items 0..4 say night; 25 and 29 have none. daylight 16 − 4 − 1 = 11,
    // night 8 + 4 = 12, studio 2, none 4 − 1 = 3.
    let cap: Vec<usize> = l.caption.as_ref().unwrap().concepts.iter().map(|c| c.count).collect();
    assert_eq!(cap, [11, 12, 2, 3]);
    let a = l.agreement.as_ref().unwrap();
    assert_eq!((a.items, a.agree, a.disagree), (28, 24, 4));
    // The four, image daylight and caption night, are listed (up to --examples).
    let mut split: Vec<u64> = l.disagreements.iter().map(|d| d.id).collect();
    split.sort_unstable();
    assert_eq!(split, [0, 1, 2, 3]);
    assert!(l
        .disagreements
        .iter()
        .all(|d| (d.image_concept.as_str(), d.caption_concept.as_str()) == ("daylight", "night")));
    assert!(s.audit[1].disagreements.is_empty());
    // Per folder: a/ holds items 0..15 (14 daylight, 1 night), b/ the rest.
    assert_eq!(l.by.len(), 2);
    assert_eq!(l.by[0].value.as_deref(), Some("a"));
    let a: Vec<usize> = l.by[0].image.concepts.iter().map(|c| c.count).collect();
    assert_eq!(a, [14, 1, 0, 0]);
    assert_eq!(l.by[0].image.under_represented, ["night", "studio"]);
    let b: Vec<usize> = l.by[1].image.concepts.iter().map(|c| c.count).collect();
    assert_eq!(b, [2, 7, 2, 4]);
    // 2 of 15 is under a sixth.
    assert_eq!(l.by[1].image.under_represented, ["daylight", "studio"]);
    // Examples: daylight's are the items with the largest margins, at most 4.
    assert_eq!(l.examples["daylight"].len(), 4);
    let mut studio: Vec<u64> = l.examples["studio"].iter().map(|e| e.id).collect();
    studio.sort_unstable();
    assert_eq!(studio, [22, 23]);
    assert!(l.examples["daylight"].windows(2).all(|w| w[0].margin >= w[1].margin));

    // Background: every item is assigned its planted half (15 each), captions agree.
    let bg = &s.audit[1];
    let counts: Vec<usize> = bg.image.concepts.iter().map(|c| c.count).collect();
    assert_eq!(counts, [15, 15, 0]);
    assert!(bg.image.under_represented.is_empty());
    assert_eq!(bg.agreement.as_ref().unwrap().agree, 28);

    // The top-level map other tools read: group → concept → share (image side).
    assert_eq!(s.groups["lighting"]["studio"], 2.0 / 30.0);
    assert_eq!(s.groups["lighting"]["none"], 4.0 / 30.0);
    assert_eq!(s.groups["background"].len(), 3);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("audit_summary.json")).unwrap()).unwrap();
    assert_eq!(json["groups"]["lighting"]["daylight"], 16.0 / 30.0);
    assert_eq!(
        json["concepts_sha256"],
        sieve::digest::sha256_bytes(&std::fs::read(dir.path().join("concepts.txt")).unwrap())
    );
    assert_eq!(json["run_fingerprint"], Run::open(&run).unwrap().fingerprint);

    // audit.parquet: one row per item and group, item by item, with the real margins.
    let b = batches(&run.join("audit.parquet"));
    assert_eq!(b.iter().map(|b| b.num_rows()).sum::<usize>(), 60);
    let b = &b[0];
    let (group, concept, best) = (strings(b, "group"), strings(b, "image_concept"), strings(b, "image_best"));
    let margin = floats(b, "image_margin");
    let row = |item: usize| 2 * item; // the lighting row of an item
    assert_eq!(group[row(27)].as_deref(), Some("lighting"));
    assert_eq!(group[row(27) + 1].as_deref(), Some("background"));
    // Item 27: daylight 1, night 0.97; the margin is 0.03 over the vector's norm.
    let v = mix(&[(0, 1.0), (1, 0.97), (4, 1.0)], 27);
    assert!((margin[row(27)].unwrap() - (v[0] - v[1])).abs() < 2e-3, "{:?} vs {}", margin[row(27)], v[0] - v[1]);
    assert!(margin[row(27)].unwrap() > 0.01);
    assert_eq!(concept[row(27)].as_deref(), Some("daylight"));
    // Item 28: night at 0.995, under the margin: none, though daylight is still the best.
    assert!(margin[row(28)].unwrap() < 0.01);
    assert_eq!((concept[row(28)].as_deref(), best[row(28)].as_deref()), (Some("none"), Some("daylight")));
    // Exact ties: margin 0.
    assert_eq!(margin[row(24)], Some(0.0));
    // Items without a caption have no caption side; item 0's caption disagrees.
    let (cap, agree) = (strings(b, "caption_concept"), b.column_by_name("agree").unwrap().as_boolean().clone());
    assert_eq!(cap[row(25)], None);
    assert!(agree.is_null(row(25)));
    assert_eq!(cap[row(0)].as_deref(), Some("night"));
    assert!(!agree.value(row(0)) && agree.value(row(5)));
}

#[test]
fn a_wider_margin_leaves_more_items_unassigned() {
    let dir = tempfile::tempdir().unwrap();
    let run = planted(dir.path());
    let (opts, directions) = planted_options(dir.path(), &run);
    let r = Run::open(&run).unwrap();
    // At 0 only exact ties are none (their lead is 0, which meets 0: the first concept); at 0.02
    // item 27 (lead ≈ 0.017) joins them.
    let none_at = |margin: f32| {
        let s = audit_with(&r, &AuditOptions { margin, ..opts.clone() }, &directions).unwrap();
        s.audit[0].image.concepts.last().unwrap().count
    };
    assert_eq!(none_at(0.0), 0);
    assert_eq!(none_at(0.01), 4);
    assert_eq!(none_at(0.02), 5);
    let err = audit_with(&r, &AuditOptions { margin: f32::NAN, ..opts.clone() }, &directions).unwrap_err();
    assert!(err.to_string().contains("--margin"), "{err}");
}

fn sieve(args: &[&str]) -> Output {
    sieve_out(args)
}

/// The captioned fixture pictures embedded by `model`.
fn embedded(root: &Path, model: &str) -> PathBuf {
    let pics = root.join("pics");
    std::fs::create_dir_all(&pics).unwrap();
    for f in ["photo.jpg", "tall.jpg", "wide.png", "gray.png"] {
        std::fs::copy(fixtures().join("images").join(f), pics.join(f)).unwrap();
        std::fs::write(pics.join(f).with_extension("txt"), format!("a picture of {f}")).unwrap();
    }
    let run = root.join(format!("run-{}", Path::new(model).file_name().unwrap().to_str().unwrap()));
    embed_with(&pics, &run, Path::new(model))
}

#[test]
fn the_command_writes_both_files_deterministically_and_the_report_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model_dir();
    let run = embedded(dir.path(), model.to_str().unwrap());
    let concepts = dir.path().join("c.txt");
    std::fs::write(&concepts, "lighting: daylight | night = a photo taken at night | studio\ncat\ndog\n").unwrap();
    let (r, c) = (run.to_str().unwrap(), concepts.to_str().unwrap());
    let o = sieve(&["audit", r, "--concepts", c, "--device", "cpu", "--by", "folder", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["templates"], "clip");
    assert_eq!(s["prompts_per_concept"], 8);
    assert_eq!(s["embedded"], 4);
    for g in ["lighting", "concepts"] {
        let shares: f64 = s["groups"][g].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum();
        assert!((shares - 1.0).abs() < 1e-9, "{g}: {shares}");
    }
    assert_eq!(s["groups"]["concepts"].as_object().unwrap().len(), 3, "cat, dog, none");
    let first =
        (std::fs::read(run.join("audit.parquet")).unwrap(), std::fs::read(run.join("audit_summary.json")).unwrap());
    assert_eq!(batches(&run.join("audit.parquet")).iter().map(|b| b.num_rows()).sum::<usize>(), 8);
    let o = sieve(&["audit", r, "--concepts", c, "--device", "cpu", "--by", "folder"]);
    assert!(o.status.success());
    assert_eq!(
        first,
        (std::fs::read(run.join("audit.parquet")).unwrap(), std::fs::read(run.join("audit_summary.json")).unwrap())
    );
    let o = sieve(&["report", r]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(page.contains("Concept coverage"));
    assert!(page.contains("data:image"), "example thumbnails");
}

#[test]
fn sieve_run_with_concepts_runs_the_audit_stage_once() {
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    std::fs::create_dir_all(&pics).unwrap();
    for f in ["photo.jpg", "tall.jpg", "wide.png"] {
        std::fs::copy(fixtures().join("images").join(f), pics.join(f)).unwrap();
    }
    let concepts = dir.path().join("c.txt");
    std::fs::write(&concepts, "cat\ndog\n").unwrap();
    let out = dir.path().join("run");
    let model = tiny_model_dir();
    let args = [
        "run",
        "-q",
        pics.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "--concepts",
        concepts.to_str().unwrap(),
        "--json",
    ];
    let o = sieve(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["audit"]["status"], "ran");
    assert_eq!(s["audit"]["summary"]["with_caption"], 0, "no captions: image side only");
    assert!(s["audit"]["summary"]["audit"][0]["caption"].is_null());
    assert!(std::fs::read_to_string(out.join("report.html")).unwrap().contains("Concept coverage"));
    let stages: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("stages.json")).unwrap()).unwrap();
    assert_eq!(stages["stages"]["audit"]["output"], "audit_summary.json");
    // Unchanged: skipped. An edited concept file: the audit (and the report) run again.
    let o = sieve(&args);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["audit"]["status"], "done");
    std::fs::write(&concepts, "cat\ndog\nbird\n").unwrap();
    let o = sieve(&args);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((s["audit"]["status"].as_str(), s["report"]["status"].as_str()), (Some("ran"), Some("ran")));
    assert_eq!(s["audit"]["summary"]["groups"]["concepts"].as_object().unwrap().len(), 4);
}

#[test]
fn unusable_concepts_and_models_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = embedded(dir.path(), tiny_model_dir().to_str().unwrap());
    let r = run.to_str().unwrap();
    let file = |name: &str, text: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let many: String = (0..10_000).map(|i| format!("concept {i}\n")).collect();
    let long = format!("g: a | {}\n", "b".repeat(1 << 20));
    let siglip = root().join("models/tiny-siglip").display().to_string();
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (file("empty.txt", b""), vec![], "no concepts"),
        (file("dup.txt", b"cat\ndog\ncat\n"), vec![], "twice"),
        (file("many.txt", many.as_bytes()), vec![], "more than 1000"),
        (file("long.txt", long.as_bytes()), vec![], "bytes"),
        (file("bin.txt", b"\xff\xfe cat\ndog\n"), vec![], "UTF-8"),
        (dir.path().join("missing.txt").display().to_string(), vec![], "missing.txt"),
        (file("ok.txt", b"cat\ndog\n"), vec!["--margin=-1"], "--margin"),
        (file("ok2.txt", b"cat\ndog\n"), vec!["--model", siglip.as_str()], "other weights"),
    ];
    for (concepts, extra, says) in &cases {
        let mut args = vec!["audit", r, "--concepts", concepts.as_str(), "--device", "cpu"];
        args.extend(extra.iter().copied());
        let o = sieve(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{says}: {err}");
        assert!(err.contains(says), "{says}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // A DINOv2 run has no text tower to embed concepts with.
    let sub = dir.path().join("dino");
    std::fs::create_dir_all(&sub).unwrap();
    let dino = embedded(&sub, root().join("models/tiny-dinov2").to_str().unwrap());
    let o = sieve(&["audit", dino.to_str().unwrap(), "--concepts", &cases[6].0, "--device", "cpu"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no text tower"), "{err}");
}

/// The planted lighting concept of item `i` (see [`planted`]).
fn planted_lighting(i: usize) -> &'static str {
    match i {
        0..=13 | 27 | 29 => "daylight",
        14..=21 => "night",
        22..=23 => "studio",
        _ => "none",
    }
}

#[test]
fn select_balances_the_budget_over_the_audited_concepts() {
    let dir = tempfile::tempdir().unwrap();
    let run = planted(dir.path());
    let (opts, directions) = planted_options(dir.path(), &run);
    audit_with(&Run::open(&run).unwrap(), &opts, &directions).unwrap();
    let r = run.to_str().unwrap();
    let selected = |more: &[&str]| -> (std::collections::BTreeMap<&'static str, usize>, serde_json::Value) {
        let mut args = vec!["select", r, "--device", "cpu", "--json", "--balance-by", "lighting"];
        args.extend(more);
        let s = stdout_json(&sieve_out(&args));
        let keep = std::fs::read_to_string(run.join("selection/keep.txt")).unwrap();
        let mut per = std::collections::BTreeMap::new();
        for line in keep.lines() {
            // a/007.jpg -> 7
            let i: usize = line[2..5].parse().unwrap();
            *per.entry(planted_lighting(i)).or_insert(0) += 1;
        }
        (per, s)
    };
    // Pool: daylight 16, night 8, studio 2, none 4. Budget 12, even target: none keeps its pool
    // share (12 · 4/30 → 2); studio gives all 2 of its ≈3.3; daylight and night share the other 8.
    let (per, s) = selected(&["--budget", "12"]);
    let want = [("daylight", 4), ("night", 4), ("none", 2), ("studio", 2)];
    assert_eq!(per.into_iter().collect::<Vec<_>>(), want, "{s}");
    let b = &s["balance"];
    assert_eq!((b["group"].as_str(), b["side"].as_str()), (Some("lighting"), Some("image")));
    for (c, n) in want {
        assert_eq!(b["selected"][c], n, "{c}: {b}");
    }
    assert_eq!(b["available"]["daylight"], 16);
    assert!((b["target"]["none"].as_f64().unwrap() - 4.0 / 30.0).abs() < 1e-9, "{b}");
    // The pool's own shares would give daylight about 6 of 12: the balance moved it.
    assert_eq!(s["selected"], 12);

    // An explicit target: night three times daylight, none dropped. Night holds 8, so it gives
    // all 8 and daylight takes the rest of the 12.
    let (per, s) = selected(&["--budget", "12", "--balance-to", "night=3,daylight=1,none=0"]);
    assert_eq!(per.into_iter().collect::<Vec<_>>(), [("daylight", 4), ("night", 8)], "{s}");
    // Only studio (2 items) weighed: 2 selected, short of the budget, never filled from others.
    let (per, s) = selected(&["--budget", "12", "--balance-to", "studio=1,none=0"]);
    assert_eq!(per.into_iter().collect::<Vec<_>>(), [("studio", 2)], "{s}");

    // Usage errors name the problem and exit 2.
    for (more, says) in [
        (&["--balance-by", "mood"][..], "lighting, background"),
        (&["--balance-by", "lighting", "--balance-to", "dusk=1"][..], "daylight, night, studio"),
        (&["--balance-by", "lighting", "--balance-to", "night=-1"][..], "at least 0"),
        (&["--balance-to", "night=1"][..], "--balance-by"),
    ] {
        let mut args = vec!["select", r, "--budget", "5", "--device", "cpu"];
        args.extend(more);
        let o = sieve_out(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{more:?}: {err}");
        assert!(err.contains(says), "{more:?}: {err}");
    }
    // Without an audit: exit 1, saying how to make one.
    std::fs::remove_file(run.join("audit.parquet")).unwrap();
    let o = sieve_out(&["select", r, "--budget", "5", "--balance-by", "lighting"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("sieve audit"));
}
