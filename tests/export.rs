//! `sieve export`: the layouts clip-retrieval and dataframe users read, row for row with the run,
//! and new WebDataset shards of a curated subset.

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

/// Runs `sieve ARGS…` and returns its stderr, failing the test unless it succeeded.
fn ok(args: &[&std::ffi::OsStr]) -> String {
    let o = sieve().args(args).output().unwrap();
    assert!(o.status.success(), "sieve {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One sample read back from an exported shard.
#[derive(Debug)]
struct Sample {
    shard: String,
    key: String,
    ext: String,
    image: Vec<u8>,
    txt: Option<String>,
    json: serde_json::Value,
}

/// The samples of the tar shards in `out`, in shard order; every member of a sample sits
/// together, image first, as a WebDataset reader groups them.
fn read_shards(out: &Path) -> Vec<Sample> {
    let mut names: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar"))
        .collect();
    names.sort();
    let mut samples: Vec<Sample> = Vec::new();
    for name in names {
        let mut a = tar::Archive::new(std::fs::File::open(out.join(&name)).unwrap());
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header();
            assert_eq!((h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap()), (0o644, 0, 0));
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            let file_start = path.rfind('/').map_or(0, |i| i + 1);
            let dot = file_start + path[file_start..].find('.').unwrap();
            let (key, ext) = (path[..dot].to_string(), path[dot + 1..].to_string());
            match ext.as_str() {
                "txt" => {
                    let s = samples.last_mut().unwrap();
                    assert_eq!(s.key, key, "{path} follows its image");
                    s.txt = Some(String::from_utf8(data).unwrap());
                }
                "json" => {
                    let s = samples.last_mut().unwrap();
                    assert_eq!(s.key, key, "{path} follows its image");
                    s.json = serde_json::from_slice(&data).unwrap();
                }
                _ => samples.push(Sample {
                    shard: name.clone(),
                    key,
                    ext,
                    image: data,
                    txt: None,
                    json: serde_json::Value::Null,
                }),
            }
        }
    }
    samples
}

fn keep_txt(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

/// Every file of an export folder, by name, with its bytes.
fn files(out: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

/// The curated subset of a folder run as tar shards: exactly dedup's kept records, in run
/// order, the original bytes, the captions and sieve's fields; resumable after a kill and
/// byte-identical from run to run.
#[test]
fn webdataset_export_writes_the_kept_records_as_resumable_identical_shards() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = demo_run(dir.path());
    for stage in ["dedup", "score", "quality"] {
        ok(&[stage.as_ref(), "-q".as_ref(), run_dir.as_os_str()]);
    }
    let run = Run::open(&run_dir).unwrap();
    let kept = keep_txt(&run_dir.join("dedup/keep.txt"));
    let embedded = run.meta.embedded.iter().filter(|&&e| e).count();
    assert!(kept.len() < embedded, "the demo has duplicates to drop");
    let out = dir.path().join("wds");
    let o = export(&run_dir, &out, "webdataset", &["--subset", "keep", "--shard-size", "2", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["written"], kept.len());
    assert_eq!((summary["skipped"].as_u64(), summary["complete"].as_bool()), (Some(0), Some(true)));
    assert_eq!(summary["left_out"], run.meta.len() - kept.len());

    let samples = read_shards(&out);
    let uris: Vec<&str> = samples.iter().map(|s| s.json["sieve"]["uri"].as_str().unwrap()).collect();
    assert_eq!(uris, kept, "exactly dedup's kept records, in run order");
    let shards = kept.len().div_ceil(2);
    assert!(shards >= 3, "enough shards to keep one on resume: {shards}");
    assert_eq!(summary["shards"].as_array().unwrap().len(), shards);
    for (i, s) in samples.iter().enumerate() {
        assert_eq!(s.shard, format!("{:05}.tar", i / 2), "two samples a shard");
        assert_eq!(s.key, format!("{i:09}"), "a folder's records are numbered");
        let r = run.meta.uri.iter().position(|u| u == uris[i]).unwrap();
        assert_eq!(s.image, std::fs::read(uris[i]).unwrap(), "{}: the original bytes", uris[i]);
        assert_eq!(Some(s.ext.as_str()), Path::new(uris[i]).extension().and_then(|e| e.to_str()));
        assert_eq!(s.txt.as_deref(), run.meta.caption[r].as_deref());
        let j = &s.json["sieve"];
        assert_eq!(j["id"], run.meta.id[r]);
        assert_eq!(j["sha256"].as_str(), run.meta.sha256[r].as_deref());
        assert_eq!(
            (j["width"].as_u64(), j["height"].as_u64()),
            (run.meta.width[r].map(u64::from), run.meta.height[r].map(u64::from))
        );
        assert_eq!(j["dedup_kept"], true);
        assert!(j["quality_flags"].is_array(), "{j}");
        assert_eq!(j["caption_fit"]["cosine"].is_number(), s.txt.is_some(), "{j}");
    }
    assert!(samples.iter().any(|s| s.json["sieve"]["duplicates"].is_array()), "kept items of duplicate groups say so");
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("00000_stats.json")).unwrap()).unwrap();
    assert_eq!((stats["count"].as_u64(), stats["successes"].as_u64()), (Some(2), Some(2)));

    // The same command again, into another folder: byte for byte the same files.
    let again = dir.path().join("again");
    let args = ["--subset", "keep", "--shard-size", "2"];
    assert!(export(&run_dir, &again, "webdataset", &args).status.success());
    let want = files(&out);
    assert_eq!(files(&again), want, "deterministic");
    // A kill: the last shard never renamed into place (a temporary file left), the one before
    // renamed but without its stats. Rerunning the same command finishes it, identically.
    let last = format!("{:05}", shards - 1);
    std::fs::remove_file(again.join(format!("{last}.tar"))).unwrap();
    std::fs::remove_file(again.join(format!("{last}_stats.json"))).unwrap();
    std::fs::write(again.join(format!(".{last}.tar.999.0.tmp")), b"half a shard").unwrap();
    std::fs::remove_file(again.join("00000_stats.json")).unwrap();
    let o = export(&run_dir, &again, "webdataset", &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("kept from an earlier run"));
    assert_eq!(files(&again), want, "a resumed export equals an uninterrupted one");

    // Other parameters onto an export: refused unless --overwrite.
    let o = export(&run_dir, &again, "webdataset", &["--subset", "keep", "--shard-size", "3"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--shard-size 2 vs 3"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = export(&run_dir, &again, "webdataset", &["--subset", "all", "--shard-size", "100", "--overwrite"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let all = read_shards(&again);
    assert_eq!(all.len(), embedded);
    assert!(all.iter().any(|s| s.json["sieve"]["dedup_kept"] == false), "--subset all carries dedup's decision");

    // --subset applies to the embedding layouts too.
    let pq = dir.path().join("pq");
    let o = export(&run_dir, &pq, "parquet", &["--subset", "keep", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["rows"], kept.len());
}

/// Tar shards in, tar shards out: keys and the source's `.json` fields survive, a key two
/// shards share is made unique, and a record whose bytes changed since embedding is skipped
/// and listed, not written.
#[test]
fn webdataset_export_of_tar_shards_keeps_keys_and_json_and_skips_changed_records() {
    let dir = tempfile::tempdir().unwrap();
    let demo = root().join("demo");
    let img = |f: &str| std::fs::read(demo.join(f)).unwrap();
    let shards = dir.path().join("shards");
    std::fs::create_dir_all(&shards).unwrap();
    let files0 = ["landscapes/beach.jpg", "objects/cup.jpg", "patterns/dots.png", "landscapes/beach.jpg"];
    let mut b = tar::Builder::new(std::fs::File::create(shards.join("00000.tar")).unwrap());
    for (i, f) in files0.iter().enumerate() {
        let key = format!("{i:09}");
        let ext = f.rsplit('.').next().unwrap();
        tar_append(&mut b, &format!("{key}.{ext}"), &img(f));
        tar_append(&mut b, &format!("{key}.txt"), format!("caption {i}").as_bytes());
        tar_append(&mut b, &format!("{key}.json"), format!(r#"{{"key": "{key}", "url": "http://x/{i}"}}"#).as_bytes());
    }
    b.finish().unwrap();
    drop(b);
    let mut b = tar::Builder::new(std::fs::File::create(shards.join("00001.tar")).unwrap());
    tar_append(&mut b, "000000001.jpg", &img("objects/star.jpg")); // the same key as in 00000.tar
    tar_append(&mut b, "000000001.json", b"[1, 2]"); // JSON, but not an object
    b.finish().unwrap();
    drop(b);
    let run_dir = dir.path().join("run");
    let o = sieve()
        .args(["embed", "-q", "--device", "cpu", "--model"])
        .arg(tiny_model_dir())
        .arg(&shards)
        .arg("--out")
        .arg(&run_dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Usage errors (exit 2), before dedup has run.
    let out = dir.path().join("wds");
    for (args, says) in [
        (&["--subset", "keep"][..], "run `sieve dedup"),
        (&["--subset", "selection"][..], "run `sieve select"),
        (&[][..], "needs --subset"),
        (&["--subset", "all", "--shard-size", "0"][..], "--shard-size"),
    ] {
        let o = export(&run_dir, &out, "webdataset", args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains(says), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let o = export(&run_dir, &out, "parquet", &["--shard-size", "5"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!out.exists(), "nothing written");
    // A folder of source shards is not an earlier export, even with --overwrite.
    let o = export(&run_dir, &shards, "webdataset", &["--subset", "all", "--overwrite"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("which no export wrote"));
    assert!(shards.join("00000.tar").is_file() && shards.join("00001.tar").is_file());

    ok(&["dedup".as_ref(), "-q".as_ref(), run_dir.as_os_str()]);
    let kept = keep_txt(&run_dir.join("dedup/keep.txt"));
    let tar0 = shards.join("00000.tar").display().to_string();
    assert!(kept.len() < 5, "the exact copy is removed: {kept:?}");
    assert!(kept.contains(&format!("{tar0}/000000001.jpg")), "{kept:?}");
    let o = export(&run_dir, &out, "webdataset", &["--subset", "keep", "--shard-size", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let samples = read_shards(&out);
    let uris: Vec<&str> = samples.iter().map(|s| s.json["sieve"]["uri"].as_str().unwrap()).collect();
    assert_eq!(uris, kept);
    let run = Run::open(&run_dir).unwrap();
    for s in &samples {
        let uri = s.json["sieve"]["uri"].as_str().unwrap();
        let (tar, member) = uri.split_once(".tar/").unwrap();
        let id = s.json["sieve"]["id"].as_u64().unwrap();
        if tar.ends_with("00001") {
            assert_eq!(s.key, format!("000000001_{id}"), "a key taken by an earlier shard");
            assert_eq!(s.json["original"], serde_json::json!([1, 2]));
            assert_eq!(s.image, img("objects/star.jpg"));
            assert_eq!(s.txt, None);
        } else {
            let i: usize = member[..9].parse().unwrap();
            assert_eq!((s.key.as_str(), s.ext.as_str()), (&member[..9], files0[i].rsplit('.').next().unwrap()));
            assert_eq!(s.image, img(files0[i]), "{uri}: the original bytes");
            assert_eq!(s.txt.as_deref(), Some(format!("caption {i}").as_str()));
            assert_eq!(s.json["url"], format!("http://x/{i}"), "the source's own fields");
            assert_eq!(s.json["key"], member[..9]);
        }
        let r = run.meta.id.iter().position(|&x| x == id).unwrap();
        assert_eq!(s.json["sieve"]["sha256"].as_str(), run.meta.sha256[r].as_deref());
    }
    assert_eq!(
        std::fs::read_dir(&out)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "tar"))
            .count(),
        kept.len().div_ceil(2)
    );

    // After embedding, the cup changes (same length, one byte) and the second shard goes: both
    // skipped, counted, listed with their reasons; the rest is written.
    let mut bytes = std::fs::read(shards.join("00000.tar")).unwrap();
    let cup = img("objects/cup.jpg");
    let at = bytes.windows(cup.len()).position(|w| w == cup).unwrap();
    bytes[at + cup.len() / 2] ^= 0x55;
    std::fs::write(shards.join("00000.tar"), bytes).unwrap();
    std::fs::remove_file(shards.join("00001.tar")).unwrap();
    let changed = dir.path().join("changed");
    let o = export(&run_dir, &changed, "webdataset", &["--subset", "keep", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let cup_uri = format!("{tar0}/000000001.jpg");
    let star_uri = format!("{}/000000001.jpg", shards.join("00001.tar").display());
    assert!(stderr.contains(&cup_uri) && stderr.contains("changed since"), "{stderr}");
    assert!(stderr.contains(&star_uri) && stderr.contains("not found"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((summary["skipped"].as_u64(), summary["written"].as_u64()), (Some(2), Some(kept.len() as u64 - 2)));
    let listed: Vec<&str> =
        summary["skipped_records"].as_array().unwrap().iter().map(|s| s["uri"].as_str().unwrap()).collect();
    assert_eq!(listed, [cup_uri.as_str(), star_uri.as_str()]);
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(changed.join("_sieve_export.json")).unwrap()).unwrap();
    assert_eq!(on_disk["skipped_records"], summary["skipped_records"]);
    let written: Vec<String> =
        read_shards(&changed).iter().map(|s| s.json["sieve"]["uri"].as_str().unwrap().to_string()).collect();
    assert_eq!(written.len(), kept.len() - 2);
    assert!(!written.contains(&cup_uri) && !written.contains(&star_uri));
}
