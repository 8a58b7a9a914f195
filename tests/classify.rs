//! `sieve classify`: a head from a safetensors file applied to a run's stored embeddings,
//! checked against the same layers computed here in f64; the head files users get wrong are
//! refused with the file named. (The layer maths against torch: `classify::tests` in the library.)

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;

use arrow_array::cast::AsArray;
use arrow_array::Array;
use rand::{Rng, SeedableRng};
use sieve::store::Run;

use crate::cmd::sieve_out;
use crate::search::captioned_run;

fn sieve(args: &[&str]) -> Output {
    sieve_out(args)
}

/// Writes f32 tensors (name, shape, values) as a safetensors file.
fn write_head(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            (name.to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b).unwrap())
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, None, path).unwrap();
}

fn random(n: usize, rng: &mut rand::rngs::StdRng) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-0.5f32..0.5)).collect()
}

#[test]
fn an_mlp_head_scores_every_embedded_item_as_computed_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let run = captioned_run(dir.path());
    let opened = Run::open(&run).unwrap();
    let d = opened.manifest.embed_dim;
    let mut rng = rand::rngs::StdRng::seed_from_u64(25);
    let (w1, b1, w2, b2) = (random(5 * d, &mut rng), random(5, &mut rng), random(5, &mut rng), random(1, &mut rng));
    let head = dir.path().join("mine.safetensors");
    // Names out of order on purpose: layers.10 comes after layers.2.
    write_head(
        &head,
        &[
            ("layers.10.weight", vec![1, 5], w2.clone()),
            ("layers.10.bias", vec![1], b2.clone()),
            ("layers.2.weight", vec![5, d], w1.clone()),
            ("layers.2.bias", vec![5], b1.clone()),
        ],
    );
    let (r, h) = (run.to_str().unwrap(), head.to_str().unwrap());
    let o = sieve(&["classify", r, "--head", h, "--activation", "relu", "--output", "sigmoid", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["name"], "mine");
    assert_eq!(summary["layers"], serde_json::json!([[d, 5], [5, 1]]));
    assert_eq!((summary["scored"].as_u64(), summary["unscored"].as_u64()), (Some(6), Some(1)), "{summary}");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("classify/mine.json")).unwrap()).unwrap();
    assert_eq!(written, summary);

    let f = std::fs::File::open(run.join("classify/mine.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(f, 1024).unwrap();
    let batch = reader.map(|b| b.unwrap()).next().unwrap();
    let ids = batch.column_by_name("id").unwrap().as_primitive::<arrow_array::types::UInt64Type>();
    let scores = batch.column_by_name("score").unwrap().as_primitive::<arrow_array::types::Float32Type>();
    let pct = batch.column_by_name("percentile").unwrap().as_primitive::<arrow_array::types::Float32Type>();
    let row_of: HashMap<u64, usize> = opened.meta.id.iter().enumerate().map(|(g, &id)| (id, g)).collect();
    let e = opened.embeddings(false).unwrap();
    let mut seen = Vec::new();
    for i in 0..batch.num_rows() {
        let g = row_of[&ids.value(i)];
        if !opened.meta.embedded[g] {
            assert!(scores.is_null(i) && pct.is_null(i), "{} has no embedding, so no score", opened.meta.uri[g]);
            continue;
        }
        let x = &e[g * d..(g + 1) * d];
        let hidden: Vec<f64> = (0..5)
            .map(|j| (b1[j] as f64 + (0..d).map(|k| w1[j * d + k] as f64 * x[k] as f64).sum::<f64>()).max(0.0))
            .collect();
        let logit = b2[0] as f64 + (0..5).map(|j| w2[j] as f64 * hidden[j]).sum::<f64>();
        let want = 1.0 / (1.0 + (-logit).exp());
        assert!((scores.value(i) as f64 - want).abs() < 1e-5, "{}: {} vs {want}", opened.meta.uri[g], scores.value(i));
        seen.push((scores.value(i), pct.value(i)));
    }
    assert_eq!(seen.len(), 6);
    // Percentiles follow the scores: the highest is 100, and they order as the scores do.
    seen.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(seen.last().unwrap().1, 100.0);
    assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "{seen:?}");

    // The caption space works too, and --name chooses the files.
    let o = sieve(&["classify", r, "--head", h, "--activation", "relu", "--space", "caption", "--name", "cap", "-q"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(run.join("classify/cap.parquet").is_file() && run.join("classify/cap.json").is_file());
}

#[test]
fn heads_that_do_not_fit_are_refused_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let run = captioned_run(dir.path());
    let d = Run::open(&run).unwrap().manifest.embed_dim;
    let r = run.to_str().unwrap();
    let p = |name: &str| dir.path().join(name);
    let two = p("two.safetensors");
    write_head(&two, &[("0.weight", vec![3, d], vec![0.1; 3 * d]), ("1.weight", vec![2, 3], vec![0.2; 6])]);
    let other_model = p("wide.safetensors");
    write_head(&other_model, &[("weight", vec![1, d + 1], vec![0.0; d + 1])]);
    let gap = p("gap.safetensors");
    write_head(&gap, &[("a.weight", vec![3, d], vec![0.0; 3 * d]), ("b.weight", vec![1, 4], vec![0.0; 4])]);
    let nan = p("nan.safetensors");
    let mut w = vec![0.0; d];
    w[d / 2] = f32::NAN;
    write_head(&nan, &[("weight", vec![1, d], w)]);
    let junk = p("junk.safetensors");
    std::fs::write(&junk, b"\xff\xff\xff\xff\xff\xff\xff\x7fnot safetensors").unwrap();
    // A 3 GB file (sparse: no disk used), as a model checkpoint given by mistake: refused from
    // its size, never read.
    let huge = p("huge.safetensors");
    std::fs::File::create(&huge).unwrap().set_len(3 << 30).unwrap();
    let s = |x: &Path| x.to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (vec![s(&two)], 2, "--activation"),
        (vec![s(&two), "--activation".into(), "none".into()], 2, "--class"),
        (vec![s(&two), "--activation".into(), "none".into(), "--class".into(), "2".into()], 2, "2 outputs"),
        (vec![s(&other_model)], 2, "another model"),
        (vec![s(&gap), "--activation".into(), "relu".into()], 1, "previous layer gives 3"),
        (vec![s(&nan)], 1, "non-finite"),
        (vec![s(&junk)], 1, "not a safetensors file"),
        (vec![s(&huge)], 1, "an embedding head has at most"),
        (
            vec![
                s(&two),
                "--activation".into(),
                "none".into(),
                "--class".into(),
                "0".into(),
                "--name".into(),
                "../x".into(),
            ],
            2,
            "--name",
        ),
    ];
    for (more, code, says) in cases {
        let mut args = vec!["classify".to_string(), r.to_string(), "--head".to_string()];
        args.extend(more.clone());
        let o = sieve(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{more:?}: {err}");
        assert!(err.contains(says) && !err.contains("panicked"), "{more:?}: {err}");
    }
    assert!(!run.join("classify/x.parquet").exists() && !dir.path().join("x.parquet").exists());
    // The two-layer head with its activation and class named works.
    let o = sieve(&["classify", r, "--head", &s(&two), "--activation", "none", "--class", "1", "-q"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
