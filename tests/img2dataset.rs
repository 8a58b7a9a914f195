//! img2dataset's three output formats and `datasets`' Image column, as those tools write them
//! (`tests/fixtures/img2dataset`, made by `scripts/interop/make_img2dataset_fixtures.sh` with
//! img2dataset 1.47 and datasets 4.4): each read in place, the same pictures giving the same
//! embeddings whatever the format, img2dataset's fields carried into the metadata, and its failed
//! downloads listed with its own error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow_array::builder::BinaryBuilder;
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use sieve::store::{read::read_part_rows, read_manifest, Row, Status};

use crate::util::*;

fn fixture(rel: &str) -> PathBuf {
    fixtures().join("img2dataset").join(rel)
}

fn embed(input: &str, out: &Path, extra: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sieve"));
    c.env_remove("RUST_LOG").env_remove("SIEVE_MODEL");
    c.arg("embed")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(["--model", tiny_model_dir().to_str().unwrap(), "--device", "cpu", "--batch-size", "2", "-q"])
        .args(extra)
        .output()
        .unwrap()
}

fn rows_of(input: &str, out: &Path, extra: &[&str]) -> Vec<Row> {
    let o = embed(input, out, extra);
    assert!(o.status.success(), "{input}: {}", String::from_utf8_lossy(&o.stderr));
    let m = read_manifest(out).unwrap();
    m.parts.iter().flat_map(|p| read_part_rows(out, p, m.embed_dim).unwrap()).collect()
}

/// Embedded rows by caption (unique in the fixtures).
fn by_caption(rows: &[Row]) -> BTreeMap<String, &Row> {
    rows.iter().filter(|r| r.status == Status::Embedded).map(|r| (r.caption.clone().unwrap(), r)).collect()
}

#[test]
fn img2dataset_files_webdataset_and_parquet_give_the_same_records_and_fields() {
    let dir = tempfile::tempdir().unwrap();
    let glob = |f: &str| fixture(f).display().to_string();
    let files = rows_of(&glob("files"), &dir.path().join("files"), &[]);
    let wds = rows_of(&glob("webdataset"), &dir.path().join("wds"), &[]);
    let parquet = rows_of(&glob("parquet/*.parquet"), &dir.path().join("pq"), &[]);
    // Five pictures were downloaded; the sixth URL answered 404.
    for (name, rows) in [("files", &files), ("webdataset", &wds), ("parquet", &parquet)] {
        assert_eq!(by_caption(rows).len(), 5, "{name}: {rows:?}");
    }
    assert_eq!(files.len(), 5);
    assert_eq!(wds.len(), 5);
    assert_eq!(parquet.len(), 6, "img2dataset's parquet keeps the failed row, and so does the run");
    let failed = parquet.iter().find(|r| r.status == Status::Skipped).unwrap();
    assert_eq!(failed.reason.as_deref(), Some("missing"));
    let error = failed.error.as_deref().unwrap();
    assert!(error.contains("failed_to_download") && error.contains("404"), "{error}");
    assert_eq!(failed.origin.url.as_deref(), Some("http://127.0.0.1:8765/missing.jpg"));
    assert!(failed.uri.ends_with("00000.parquet#2"), "{}", failed.uri);

    let (f, w, p) = (by_caption(&files), by_caption(&wds), by_caption(&parquet));
    for (caption, a) in &f {
        for (name, b) in [("webdataset", w[caption]), ("parquet", p[caption])] {
            assert_eq!(a.sha256, b.sha256, "{name}: the same bytes as the files output for {caption:?}");
            assert_eq!(a.image_embedding, b.image_embedding, "{name}: {caption:?}");
            assert_eq!(a.text_embedding, b.text_embedding, "{name}: {caption:?}");
            assert_eq!(
                (&a.origin.key, &a.origin.url, a.origin.original_width, a.origin.original_height),
                (&b.origin.key, &b.origin.url, b.origin.original_width, b.origin.original_height),
                "{name}: {caption:?}"
            );
        }
    }
    let photo = f["a photo of a street"];
    assert_eq!(photo.origin.key.as_deref(), Some("000000"));
    assert_eq!(photo.origin.url.as_deref(), Some("http://127.0.0.1:8765/photo.jpg"));
    assert_eq!((photo.origin.original_width, photo.origin.original_height), (Some(500), Some(375)));
    // The .json's other fields, kept as one JSON object (tars and files); the parquet's other
    // columns only when named.
    let extra: serde_json::Value =
        serde_json::from_str(w["a photo of a street"].origin.extra.as_deref().unwrap()).unwrap();
    assert_eq!(extra["status"], "success");
    assert_eq!(extra["exif"], "{}");
    assert!(extra.get("caption").is_none() && extra.get("key").is_none(), "{extra}");
    assert_eq!(photo.origin.extra, w["a photo of a street"].origin.extra);
    assert_eq!(p["a photo of a street"].origin.extra, None);
    let kept = rows_of(&glob("parquet/00000.parquet"), &dir.path().join("kept"), &["--keep-cols", "status,width"]);
    let extra: serde_json::Value = serde_json::from_str(kept[0].origin.extra.as_deref().unwrap()).unwrap();
    assert_eq!(extra, serde_json::json!({"status": "success", "width": 32}));
    let extra: serde_json::Value = serde_json::from_str(kept[2].origin.extra.as_deref().unwrap()).unwrap();
    assert_eq!(extra, serde_json::json!({"status": "failed_to_download", "width": null}));
}

#[test]
fn a_datasets_image_column_is_read_from_its_bytes_or_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let hf = rows_of(&fixture("hf-image.parquet").display().to_string(), &dir.path().join("hf"), &[]);
    let paths = rows_of(&fixture("hf-paths.parquet").display().to_string(), &dir.path().join("paths"), &[]);
    // The same pictures as files, in a folder.
    let pics = dir.path().join("pics");
    std::fs::create_dir_all(&pics).unwrap();
    for f in ["photo.jpg", "palette.png", "tiny.png", "gray.png"] {
        std::fs::copy(fixtures().join("images").join(f), pics.join(f)).unwrap();
    }
    let folder = rows_of(&pics.display().to_string(), &dir.path().join("folder"), &[]);
    let by_sha: BTreeMap<_, _> = folder.iter().map(|r| (r.sha256.clone().unwrap(), r)).collect();
    assert_eq!(hf.len() + paths.len(), 4);
    for r in hf.iter().chain(&paths) {
        assert_eq!(r.status, Status::Embedded, "{r:?}");
        let same = by_sha[r.sha256.as_ref().unwrap()];
        assert_eq!(r.image_embedding, same.image_embedding, "{}", r.uri);
    }
    assert_eq!(hf.iter().map(|r| r.caption.clone().unwrap()).collect::<Vec<_>>(), ["a street", "palette art", "tiny"]);
}

#[test]
fn image_bytes_are_read_one_row_group_at_a_time_and_bad_cells_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let pics = ["photo.jpg", "tall.jpg", "palette.png", "tiny.png", "gray.png"];
    let mut jpg = BinaryBuilder::new();
    for (i, p) in pics.iter().enumerate() {
        match i {
            1 => jpg.append_value(b"not a picture"),
            3 => jpg.append_null(),
            _ => jpg.append_value(std::fs::read(fixtures().join("images").join(p)).unwrap()),
        }
    }
    let captions: StringArray = pics.iter().map(|p| Some(format!("caption of {p}"))).collect();
    let batch = RecordBatch::try_from_iter([
        ("caption", std::sync::Arc::new(captions) as ArrayRef),
        ("jpg", std::sync::Arc::new(jpg.finish()) as ArrayRef),
    ])
    .unwrap();
    let path = dir.path().join("shard.parquet");
    let props = parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(2)).build();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), Some(props))
            .unwrap();
    w.write(&batch).unwrap();
    assert_eq!(w.close().unwrap().num_row_groups(), 3);
    let rows = rows_of(&path.display().to_string(), &dir.path().join("run"), &[]);
    let status: Vec<_> = rows.iter().map(|r| (r.status, r.reason.clone())).collect();
    assert_eq!(
        status,
        [
            (Status::Embedded, None),
            (Status::Skipped, Some("not-an-image".into())),
            (Status::Embedded, None),
            (Status::Skipped, Some("missing".into())),
            (Status::Embedded, None),
        ]
    );
    for (r, p) in rows.iter().zip(pics) {
        if r.status == Status::Embedded {
            assert_eq!(
                r.sha256.as_deref(),
                Some(sieve::store::sha256_bytes(&std::fs::read(fixtures().join("images").join(p)).unwrap()).as_str())
            );
        }
    }
    // A cell is read back by its uri (the report's thumbnails, `sieve export`), in any order.
    for (i, p) in pics.iter().enumerate().rev() {
        let got = sieve::ingest::cells::locate(&format!("{}#{i}", path.display()));
        match i {
            3 => assert!(got.is_err(), "a null cell is an error"),
            1 => assert_eq!(got.unwrap().unwrap(), b"not a picture"),
            _ => assert_eq!(got.unwrap().unwrap(), std::fs::read(fixtures().join("images").join(p)).unwrap()),
        }
    }
    assert!(sieve::ingest::cells::locate(&format!("{}#9", path.display())).is_err(), "past the last row");
    assert!(sieve::ingest::cells::locate("photo.jpg").unwrap().is_none(), "not a parquet uri");
    // The binary column named with --image-col reads as when it is found by its name.
    let named = rows_of(&path.display().to_string(), &dir.path().join("named"), &["--image-col", "JPG"]);
    let sha = |rows: &[Row]| rows.iter().map(|r| r.sha256.clone()).collect::<Vec<_>>();
    assert_eq!(sha(&named), sha(&rows));
}

#[test]
fn an_img2dataset_parquet_run_exports_its_keys_urls_and_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let input = fixture("parquet/*.parquet").display().to_string();
    let rows = rows_of(&input, &run, &[]);
    let sieve = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_sieve")).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    let (run_s, wds, cr) = (run.display().to_string(), dir.path().join("wds"), dir.path().join("cr"));
    sieve(&["export", "-q", &run_s, "--out", wds.to_str().unwrap(), "--format", "webdataset", "--subset", "all"]);
    sieve(&["export", "-q", &run_s, "--out", cr.to_str().unwrap(), "--format", "clip-retrieval"]);
    // The shard holds img2dataset's keys, the original bytes and its fields.
    let mut members = BTreeMap::new();
    let mut a = tar::Archive::new(std::fs::File::open(wds.join("00000.tar")).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
        members.insert(e.path().unwrap().display().to_string(), bytes);
    }
    let embedded: Vec<&Row> = rows.iter().filter(|r| r.status == Status::Embedded).collect();
    assert_eq!(members.len(), 3 * embedded.len());
    for r in embedded {
        let key = r.origin.key.as_deref().unwrap();
        let image = &members[&format!("{key}.jpg")];
        assert_eq!(Some(sieve::store::sha256_bytes(image)), r.sha256, "{key}");
        let json: serde_json::Value = serde_json::from_slice(&members[&format!("{key}.json")]).unwrap();
        assert_eq!(json["url"].as_str(), r.origin.url.as_deref());
        assert_eq!(json["original_width"].as_u64(), r.origin.original_width.map(u64::from));
        assert_eq!(json["sieve"]["id"], r.id);
    }
    // clip-retrieval's metadata carries the recorded URL, not the uri.
    let file = std::fs::File::open(cr.join("metadata/metadata_0.parquet")).unwrap();
    let batch = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let url = arrow_array::cast::AsArray::as_string::<i32>(batch.column_by_name("url").unwrap().as_ref());
    assert_eq!(url.value(0), "http://127.0.0.1:8765/photo.jpg");
}
