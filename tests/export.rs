//! `sieve export`: the layouts clip-retrieval and dataframe users read, row for row with the run.

use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sieve::store::{npy, Run};

use crate::cli::sieve;
use crate::util::*;

fn batch(path: &Path) -> RecordBatch {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let mut batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 1, "a small part reads as one batch");
    batches.pop().unwrap()
}

fn demo_run(dir: &Path) -> std::path::PathBuf {
    let run = dir.join("run");
    let o = sieve()
        .args(["embed", "-q", "--device", "cpu", "--part-size", "4", "--model"])
        .arg(tiny_model_dir())
        .arg(root().join("demo"))
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    run
}

fn export(run: &Path, out: &Path, format: &str, extra: &[&str]) -> std::process::Output {
    sieve().arg("export").arg(run).arg("--out").arg(out).args(["--format", format]).args(extra).output().unwrap()
}

/// clip-retrieval's layout: only embedded records, files numbered with its zero padding, and row
/// k of the embeddings is the record whose id is row k of the metadata.
#[test]
fn clip_retrieval_export_holds_the_embedded_rows_in_order_with_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = demo_run(dir.path());
    let run = Run::open(&run_dir).unwrap();
    let (d, n) = (run.manifest.embed_dim, run.meta.len());
    let embedded: Vec<usize> = (0..n).filter(|&r| run.meta.embedded[r]).collect();
    assert!(embedded.len() < n, "the demo has a skipped file to leave out");
    assert!(run.manifest.parts.len() >= 10, "enough parts for two-digit names: {}", run.manifest.parts.len());
    let out = dir.path().join("cr");
    let o = export(&run_dir, &out, "clip-retrieval", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let mut names: Vec<String> = std::fs::read_dir(out.join("img_emb"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names[0], "img_emb_00.npy", "{names:?}");
    let (all_img, all_txt) = (run.embeddings(false).unwrap(), run.embeddings(true).unwrap());
    let row_of: std::collections::HashMap<u64, usize> = run.meta.id.iter().enumerate().map(|(r, &i)| (i, r)).collect();
    let mut seen = Vec::new();
    for name in &names {
        let k = name.trim_start_matches("img_emb_").trim_end_matches(".npy");
        let (rows, cols, img) = npy::read_f16(&out.join("img_emb").join(name)).unwrap();
        let (_, _, txt) = npy::read_f16(&out.join(format!("text_emb/text_emb_{k}.npy"))).unwrap();
        let meta = batch(&out.join(format!("metadata/metadata_{k}.parquet")));
        assert_eq!((rows, cols, meta.num_rows()), (meta.num_rows(), d, rows));
        let ids = meta.column_by_name("id").unwrap().as_primitive::<UInt64Type>();
        let paths = meta.column_by_name("image_path").unwrap().as_string::<i32>();
        assert!(meta.column_by_name("caption").is_some() && meta.column_by_name("url").is_some());
        for j in 0..rows {
            let r = row_of[&ids.value(j)];
            assert!(run.meta.embedded[r]);
            assert_eq!(paths.value(j), run.meta.uri[r]);
            assert_eq!(&img[j * d..(j + 1) * d], &all_img[r * d..(r + 1) * d], "image row {j} of {name}");
            assert_eq!(&txt[j * d..(j + 1) * d], &all_txt[r * d..(r + 1) * d], "caption row {j} of {name}");
            seen.push(r);
        }
    }
    assert_eq!(seen, embedded, "every embedded record once, in run order");

    // Refusals: a used folder, a folder inside the run; --overwrite replaces only an export.
    let o = export(&run_dir, &out, "clip-retrieval", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let o = export(&run_dir, &run_dir.join("exported"), "parquet", &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("inside the run directory"));
    let o = export(&run_dir, &out, "clip-retrieval", &["--overwrite"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let o = export(&run_dir, &out, "parquet", &["--overwrite"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(out.join("notes.txt").is_file() && out.join("img_emb").is_dir(), "nothing removed");
}

/// The Parquet layout: embeddings as fixed-size float32 lists, a caption embedding only where
/// there is a caption.
#[test]
fn parquet_export_has_fixed_size_list_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = demo_run(dir.path());
    let run = Run::open(&run_dir).unwrap();
    let d = run.manifest.embed_dim;
    let out = dir.path().join("pq");
    let o = export(&run_dir, &out, "parquet", &["--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let embedded = run.meta.embedded.iter().filter(|&&e| e).count();
    assert_eq!(summary["rows"], embedded);
    assert_eq!(summary["left_out"], run.meta.len() - embedded);
    let all_img = run.embeddings(false).unwrap();
    let (mut rows, mut without_caption) = (0, 0);
    let mut parts: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
    parts.sort();
    for p in parts {
        let b = batch(&p);
        let ids = b.column_by_name("id").unwrap().as_primitive::<UInt64Type>().clone();
        let img = b.column_by_name("img_emb").unwrap().as_fixed_size_list().clone();
        let txt = b.column_by_name("text_emb").unwrap().as_fixed_size_list().clone();
        let caption = b.column_by_name("caption").unwrap().as_string::<i32>().clone();
        assert_eq!(img.value_length() as usize, d);
        for j in 0..b.num_rows() {
            let r = run.meta.id.iter().position(|&i| i == ids.value(j)).unwrap();
            let v = img.value(j);
            let v = v.as_primitive::<Float32Type>();
            assert_eq!(v.values().as_ref(), &all_img[r * d..(r + 1) * d]);
            assert_eq!(txt.is_null(j), caption.is_null(j), "a caption embedding exactly where a caption is");
            without_caption += usize::from(caption.is_null(j));
        }
        rows += b.num_rows();
    }
    assert_eq!(rows, embedded);
    assert!(without_caption > 0, "the demo has a picture without a caption");
}
