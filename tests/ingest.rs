//! Inputs beyond a folder (manifests of every kind, WebDataset tars), resuming a killed run,
//! and `--shard` + `sieve merge`: every record listed once, the same embeddings whatever the
//! input's shape, and a killed or sharded run ending with exactly the rows of a plain one.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow_array::{RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use sieve::ingest::{expand_braces, Shard};
use sieve::store::{read::read_part_rows, read_manifest, Row, Status};

use crate::util::*;

fn sieve() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sieve"));
    c.env_remove("RUST_LOG").env_remove("SIEVE_MODEL");
    c
}

fn embed(inputs: &[OsString], out: &Path, extra: &[&str]) -> Output {
    sieve()
        .arg("embed")
        .args(inputs)
        .arg("--out")
        .arg(out)
        .args(["--model", tiny_model_dir().to_str().unwrap(), "--device", "cpu", "--batch-size", "3", "--quiet"])
        .args(extra)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "exit {:?}\n{stderr}", o.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Every row of a finished run, with embeddings.
fn rows(run: &Path) -> Vec<Row> {
    let m = read_manifest(run).unwrap();
    assert!(m.complete, "{} is unfinished", run.display());
    m.parts.iter().flat_map(|p| read_part_rows(run, p, m.embed_dim).unwrap()).collect()
}

/// The files of a run's parts, by relative path.
fn part_files(run: &Path) -> BTreeMap<String, Vec<u8>> {
    ["metadata", "img_emb", "text_emb"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(run.join(sub)).unwrap().map(move |e| (sub, e.unwrap())))
        .map(|(sub, e)| (format!("{sub}/{}", e.file_name().to_string_lossy()), std::fs::read(e.path()).unwrap()))
        .collect()
}

const IMAGES: [&str; 4] = ["photo.jpg", "tall.jpg", "wide.png", "tiny.png"];

/// `root/imgs/` with four fixture images, and the image embeddings a folder run gives them.
fn image_folder(root: &Path) -> BTreeMap<String, Vec<f32>> {
    let imgs = root.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    for f in IMAGES {
        std::fs::copy(fixtures().join("images").join(f), imgs.join(f)).unwrap();
    }
    let run = root.join("dir-run");
    ok(&embed(&[imgs.clone().into()], &run, &[]));
    rows(&run)
        .into_iter()
        .map(|r| (Path::new(&r.uri).file_name().unwrap().to_string_lossy().into_owned(), r.image_embedding.unwrap()))
        .collect()
}

#[test]
fn brace_patterns_and_shard_slices() {
    assert_eq!(expand_braces("s/{000..002}.tar").unwrap(), ["s/000.tar", "s/001.tar", "s/002.tar"]);
    assert_eq!(expand_braces("{a,b}-{8..10}").unwrap(), ["a-8", "a-9", "a-10", "b-8", "b-9", "b-10"]);
    assert_eq!(expand_braces("plain.tar").unwrap(), ["plain.tar"]);
    assert!(expand_braces("s/{3..1}.tar").is_err() && expand_braces("s/{0..").is_err());
    for n in 1..7u32 {
        for len in [0usize, 1, 5, 17] {
            let mut covered = Vec::new();
            for i in 0..n {
                covered.extend(Shard { index: i, count: n }.range(len));
            }
            assert_eq!(covered, (0..len).collect::<Vec<_>>(), "{n} shards of {len}");
        }
    }
    assert!("3/3".parse::<Shard>().is_err() && "1/0".parse::<Shard>().is_err() && "x".parse::<Shard>().is_err());
    assert_eq!("2/5".parse::<Shard>().unwrap(), Shard { index: 2, count: 5 });
}

/// What a manifest row should become.
enum Want {
    Embedded { image: &'static str, caption: Option<&'static str> },
    Skipped(&'static str),
}

#[test]
fn manifests_of_every_kind_list_every_row_and_embed_like_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let reference = image_folder(root);
    let abs_wide = root.join("imgs/wide.png").display().to_string();
    let url_tiny = format!("file://{}", root.join("imgs/tiny.png").display());
    // (image, caption) rows; relative paths resolve against the manifest's folder.
    let table: Vec<(&str, Option<&str>)> = vec![
        ("imgs/photo.jpg", Some("a photo, with a comma")),
        ("imgs/tall.jpg", Some("5\" tall")),
        ("https://example.com/x.jpg", Some("remote")),
        ("", Some("no image at all")),
        ("imgs/absent.jpg", Some("gone")),
        (&abs_wide, Some("an absolute path")),
        (&url_tiny, None),
    ];
    let want = [
        Want::Embedded { image: "photo.jpg", caption: Some("a photo, with a comma") },
        Want::Embedded { image: "tall.jpg", caption: Some("5\" tall") },
        Want::Skipped("remote-uri"),
        Want::Skipped("bad-manifest-line"),
        Want::Skipped("missing"),
        Want::Embedded { image: "wide.png", caption: Some("an absolute path") },
        Want::Embedded { image: "tiny.png", caption: None },
    ];

    // CSV with the default column names, quoted as the csv crate writes it.
    let mut w = csv::Writer::from_path(root.join("m.csv")).unwrap();
    w.write_record(["id", "filepath", "text"]).unwrap();
    for (i, (img, cap)) in table.iter().enumerate() {
        w.write_record([i.to_string().as_str(), img, cap.unwrap_or("")]).unwrap();
    }
    w.flush().unwrap();
    // TSV, unquoted as img2dataset and clip-retrieval write it.
    let mut tsv = String::from("image\tcaption\n");
    for (img, cap) in &table {
        tsv += &format!("{img}\t{}\n", cap.unwrap_or(""));
    }
    std::fs::write(root.join("m.tsv"), tsv).unwrap();
    // JSONL with a malformed line and a non-UTF-8 caption appended.
    let mut jsonl = Vec::new();
    for (img, cap) in &table {
        jsonl.extend(serde_json::json!({ "url": img, "caption": cap }).to_string().into_bytes());
        jsonl.push(b'\n');
    }
    jsonl.extend_from_slice(b"{\"url\": \"imgs/photo.jpg\", \"caption\": \"caf\xe9\"}\n\n{broken json\n");
    std::fs::write(root.join("m.jsonl"), jsonl).unwrap();
    // Parquet with custom column names, chosen with --image-col/--caption-col.
    let schema = Arc::new(Schema::new(vec![
        Field::new("picture", DataType::Utf8, true),
        Field::new("alt_words", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(table.iter().map(|(i, _)| Some(*i)).collect::<StringArray>()),
            Arc::new(table.iter().map(|(_, c)| *c).collect::<StringArray>()),
        ],
    )
    .unwrap();
    let mut pw =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(root.join("m.parquet")).unwrap(), schema, None)
            .unwrap();
    pw.write(&batch).unwrap();
    pw.close().unwrap();

    for (file, extra) in [
        ("m.csv", vec![]),
        ("m.tsv", vec![]),
        ("m.jsonl", vec![]),
        ("m.parquet", vec!["--image-col", "picture", "--caption-col", "alt_words"]),
    ] {
        let out = root.join(format!("run-{file}"));
        let stderr = ok(&embed(&[root.join(file).into()], &out, &extra));
        assert!(stderr.contains("remote-uri") && stderr.contains("bad-manifest-line"), "{file}: summary\n{stderr}");
        let got = rows(&out);
        let extra_rows = if file == "m.jsonl" { 2 } else { 0 };
        assert_eq!(got.len(), want.len() + extra_rows, "{file}: one record per row");
        for (i, (row, want)) in got.iter().zip(&want).enumerate() {
            assert_eq!(row.id, i as u64, "{file}: ids follow the rows");
            match want {
                Want::Embedded { image, caption } => {
                    assert_eq!(row.status, Status::Embedded, "{file} row {i}: {:?} {:?}", row.reason, row.error);
                    assert!(row.uri.ends_with(image), "{file} row {i}: {}", row.uri);
                    assert!(Path::new(&row.uri).is_file(), "{file}: uri {} resolves to the file", row.uri);
                    // An empty CSV/TSV cell is an empty caption; JSON null and Parquet null are none.
                    let cap = match (caption, file) {
                        (None, "m.csv" | "m.tsv") => Some(""),
                        _ => *caption,
                    };
                    assert_eq!(row.caption.as_deref(), cap, "{file} row {i}");
                    assert_eq!(row.text_embedding.is_some(), cap.is_some(), "{file} row {i}");
                    assert_eq!(
                        row.image_embedding.as_ref(),
                        Some(&reference[*image]),
                        "{file} row {i}: as from a folder"
                    );
                }
                Want::Skipped(reason) => {
                    assert_eq!(row.status, Status::Skipped, "{file} row {i}");
                    assert_eq!(row.reason.as_deref(), Some(*reason), "{file} row {i}: {:?}", row.error);
                }
            }
        }
        if file == "m.jsonl" {
            let lossy = &got[7];
            assert!(lossy.caption_lossy && lossy.caption.as_deref() == Some("caf\u{fffd}"), "{lossy:?}");
            assert_eq!(got[8].reason.as_deref(), Some("bad-manifest-line"));
            assert!(got[8].uri.ends_with("m.jsonl:10") && got[8].error.as_deref().unwrap().contains("line 10"));
        }
    }

    // A named column that does not exist: a usage error naming the columns there are.
    let o = embed(&[root.join("m.csv").into()], &root.join("bad"), &["--image-col", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("filepath"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn webdataset_shards_are_read_in_place_with_brace_patterns() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let reference = image_folder(root);
    let img = |f: &str| std::fs::read(fixtures().join("images").join(f)).unwrap();
    let shards = root.join("shards");
    std::fs::create_dir_all(&shards).unwrap();

    let mut b = tar::Builder::new(std::fs::File::create(shards.join("00000.tar")).unwrap());
    tar_append(&mut b, "000.jpg", &img("photo.jpg"));
    tar_append(&mut b, "000.txt", b"a photo of a cat");
    tar_append(&mut b, "000.json", br#"{"caption": "ignored: the .txt wins", "url": "http://x"}"#);
    tar_append(&mut b, "001.png", &img("wide.png"));
    tar_append(&mut b, "001.json", br#"{"caption": "from the json", "key": "001"}"#);
    tar_append(&mut b, "002.txt", b"a caption whose image failed to download");
    tar_append(&mut b, "003.jpg", b"<html>not a picture</html>");
    tar_append(&mut b, "sub/004.jpg", &img("tall.jpg"));
    tar_append(&mut b, "sub/004.seg.png", &img("tiny.png")); // another field, not a sample
    b.finish().unwrap();
    let mut b = tar::Builder::new(std::fs::File::create(shards.join("00001.tar")).unwrap());
    tar_append(&mut b, "100.png", &img("tiny.png"));
    tar_append(&mut b, "100.txt", b"caf\xe9");
    b.finish().unwrap();
    // The third shard is cut short inside its second member's header.
    let mut b = tar::Builder::new(std::fs::File::create(shards.join("00002.tar")).unwrap());
    tar_append(&mut b, "200.jpg", &img("photo.jpg"));
    tar_append(&mut b, "201.jpg", &img("tall.jpg"));
    b.finish().unwrap();
    let full = std::fs::read(shards.join("00002.tar")).unwrap();
    let first_end = 512 + img("photo.jpg").len().div_ceil(512) * 512;
    let mut cut = full[..first_end + 100].to_vec();
    cut[first_end + 10] ^= 0xff; // a damaged header
    std::fs::write(shards.join("00002.tar"), cut).unwrap();

    let out = root.join("run");
    // The pattern is passed as one argument, as from a quoting shell.
    let stderr = ok(&embed(&[format!("{}/{{00000..00002}}.tar", shards.display()).into()], &out, &[]));
    assert!(stderr.contains("corrupt-archive"), "{stderr}");
    let got = rows(&out);
    let s = |n: &str| format!("{}/{n}", shards.display());
    type Expected<'a> = Result<(&'a str, Option<&'a str>), &'a str>;
    let expect: Vec<(u64, String, Expected)> = vec![
        (0, s("00000.tar/000.jpg"), Ok(("photo.jpg", Some("a photo of a cat")))),
        (1, s("00000.tar/001.png"), Ok(("wide.png", Some("from the json")))),
        (2, s("00000.tar/002.txt"), Err("missing")),
        (3, s("00000.tar/003.jpg"), Err("not-an-image")),
        (4, s("00000.tar/sub/004.jpg"), Ok(("tall.jpg", None))),
        (1_000_000_000, s("00001.tar/100.png"), Ok(("tiny.png", Some("caf\u{fffd}")))),
        (2_000_000_000, s("00002.tar/200.jpg"), Ok(("photo.jpg", None))),
        (2_000_000_001, s("00002.tar"), Err("corrupt-archive")),
    ];
    assert_eq!(got.len(), expect.len(), "{:#?}", got.iter().map(|r| &r.uri).collect::<Vec<_>>());
    for (row, (id, uri, want)) in got.iter().zip(&expect) {
        assert_eq!((&row.id, &row.uri), (id, uri));
        match want {
            Ok((image, caption)) => {
                assert_eq!(row.status, Status::Embedded, "{uri}: {:?}", row.error);
                assert_eq!(row.image_embedding.as_ref(), Some(&reference[*image]), "{uri}: as from a folder");
                assert_eq!(row.caption.as_deref(), *caption, "{uri}");
                assert_eq!(row.caption_lossy, caption.is_some_and(|c| c.contains('\u{fffd}')), "{uri}");
            }
            Err(reason) => assert_eq!(row.reason.as_deref(), Some(*reason), "{uri}: {:?}", row.error),
        }
    }
    assert!(!shards.join("000.jpg").exists(), "nothing unpacked");

    // --shard splits whole tars: 2 of 3 shards, then merged, equal the unsharded run.
    for i in 0..2 {
        let pattern = format!("{}/{{00000..00002}}.tar", shards.display());
        ok(&embed(&[pattern.into()], &root.join(format!("part{i}")), &["--shard", &format!("{i}/2")]));
    }
    let merged = root.join("merged");
    ok(&sieve()
        .arg("merge")
        .args([root.join("part0"), root.join("part1")])
        .arg("--out")
        .arg(&merged)
        .output()
        .unwrap());
    assert_eq!(rows(&merged), got);
}

/// `n` copies of the fixture images (one in three with a caption), for runs long enough to kill.
fn many_images(dir: &Path, n: usize) -> PathBuf {
    let input = dir.join("many");
    std::fs::create_dir_all(&input).unwrap();
    let g = golden();
    for i in 0..n {
        let f = &g.images[i % g.images.len()];
        let ext = Path::new(f).extension().unwrap().to_str().unwrap();
        std::fs::copy(fixtures().join("images").join(f), input.join(format!("{i:04}.{ext}"))).unwrap();
        if i % 3 == 0 {
            std::fs::write(input.join(format!("{i:04}.txt")), &g.captions[i % g.captions.len()]).unwrap();
        }
    }
    input
}

fn metadata_parts(run: &Path) -> usize {
    std::fs::read_dir(run.join("metadata"))
        .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with(".parquet")).count())
        .unwrap_or(0)
}

#[test]
fn a_killed_embed_resumes_to_exactly_the_rows_of_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = many_images(dir.path(), 240);
    let args = ["--part-size", "4"];
    let whole = dir.path().join("whole");
    ok(&embed(&[input.clone().into()], &whole, &args));

    let out = dir.path().join("killed");
    let mut kills_mid_run = 0;
    // Kill with SIGKILL a little later each time; every rerun resumes what the last one left.
    for target_parts in [3, 15, 30, 45] {
        let mut child = sieve()
            .arg("embed")
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .args(["--model", tiny_model_dir().to_str().unwrap(), "--device", "cpu", "--quiet", "--batch-size", "3"])
            .args(args)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if metadata_parts(&out) >= target_parts {
                child.kill().unwrap(); // SIGKILL
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        child.wait().unwrap();
        if read_manifest(&out).is_ok_and(|m| !m.complete) {
            kills_mid_run += 1;
            // An unfinished run is refused by the later stages, with the way out.
            let o = sieve().arg("merge").arg(&out).arg("--out").arg(dir.path().join("m")).output().unwrap();
            assert!(String::from_utf8_lossy(&o.stderr).contains("rerun"), "{}", String::from_utf8_lossy(&o.stderr));
        }
    }
    assert!(kills_mid_run >= 2, "only {kills_mid_run} kills landed while the run was going");
    let stderr = ok(&embed(&[input.clone().into()], &out, &args));
    assert!(stderr.contains("resumed after"), "{stderr}");
    // Byte for byte: the same parts with the same rows, nothing twice, nothing missing.
    let (a, b) = (part_files(&whole), part_files(&out));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "no stray or missing part files");
    for (k, v) in &a {
        assert!(v == &b[k], "{k} differs from the uninterrupted run");
    }
    assert_eq!(read_manifest(&whole).unwrap().counts, read_manifest(&out).unwrap().counts);
    let ids: Vec<u64> = rows(&out).iter().map(|r| r.id).collect();
    assert_eq!(ids, (0..240).collect::<Vec<u64>>());

    // A finished run is left alone; a different command in the same folder is refused.
    let stderr = ok(&embed(&[input.clone().into()], &out, &args));
    assert!(stderr.contains("nothing to do"), "{stderr}");
    let o = embed(&[input.into()], &out, &["--part-size", "5"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--part-size"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn shards_merge_into_the_unsharded_run_and_mismatches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let input = many_images(root, 23);
    let args = ["--part-size", "4"];
    let whole = root.join("whole");
    ok(&embed(&[input.clone().into()], &whole, &args));
    let shard = |i: u32, n: u32| {
        let out = root.join(format!("s{i}of{n}"));
        ok(&embed(&[input.clone().into()], &out, &[&args[..], &["--shard", &format!("{i}/{n}")]].concat()));
        out
    };
    let parts: Vec<PathBuf> = (0..3).map(|i| shard(i, 3)).collect();
    let counts: Vec<u64> = parts.iter().map(|p| read_manifest(p).unwrap().counts.records).collect();
    assert_eq!(counts, [7, 8, 8]);
    let merged = root.join("merged");
    // Given in any order.
    let stderr =
        ok(&sieve().arg("merge").args([&parts[2], &parts[0], &parts[1]]).arg("--out").arg(&merged).output().unwrap());
    assert!(stderr.contains("23 records"), "{stderr}");
    assert_eq!(part_files(&whole), part_files(&merged), "merged parts equal the unsharded run's, byte for byte");
    let (mw, mm) = (read_manifest(&whole).unwrap(), read_manifest(&merged).unwrap());
    assert_eq!((&mw.input, &mw.counts), (&mm.input, &mm.counts));

    let merge =
        |runs: &[&Path], out: &str| sieve().arg("merge").args(runs).arg("--out").arg(root.join(out)).output().unwrap();
    // The same shard twice.
    let o = merge(&[&parts[0], &parts[0]], "twice");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("overlaps"), "{}", String::from_utf8_lossy(&o.stderr));
    // Another model's preprocessing (a copy of the tiny model with another normalisation).
    let model = root.join("other-model");
    std::fs::create_dir_all(&model).unwrap();
    for e in std::fs::read_dir(tiny_model_dir()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), model.join(e.file_name())).unwrap();
    }
    let cfg = model.join("preprocessor_config.json");
    let mut pre: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    pre["image_mean"] = serde_json::json!([0.5, 0.5, 0.5]);
    std::fs::write(&cfg, pre.to_string()).unwrap();
    let other = root.join("other");
    ok(&sieve()
        .arg("embed")
        .arg(&input)
        .arg("--out")
        .arg(&other)
        .args(["--model", model.to_str().unwrap(), "--device", "cpu", "--quiet", "--shard", "1/3"])
        .args(args)
        .output()
        .unwrap());
    let o = merge(&[&parts[0], &other], "mixed");
    assert_eq!(o.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&o.stderr);
    assert!(msg.contains("preprocessing") && msg.contains("cannot be merged"), "{msg}");
    assert!(!root.join("mixed").join("run.json").exists());
}

/// img2dataset's output folder (tars with parquet and json beside them) is read as its tars, and
/// a quoted glob expands as a shell would: both give the run the brace pattern gives.
#[test]
fn a_folder_of_tars_and_quoted_globs_read_like_the_tars() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let img = |f: &str| std::fs::read(fixtures().join("images").join(f)).unwrap();
    let shards = root.join("img2dataset-out");
    std::fs::create_dir_all(&shards).unwrap();
    for (i, pics) in [["photo.jpg", "wide.png"], ["tall.jpg", "tiny.png"]].iter().enumerate() {
        let mut b = tar::Builder::new(std::fs::File::create(shards.join(format!("{i:05}.tar"))).unwrap());
        for (j, p) in pics.iter().enumerate() {
            let ext = Path::new(p).extension().unwrap().to_str().unwrap();
            tar_append(&mut b, &format!("{i:05}{j:04}.{ext}"), &img(p));
            tar_append(&mut b, &format!("{i:05}{j:04}.txt"), format!("caption {i} {j}").as_bytes());
        }
        b.finish().unwrap();
        std::fs::write(shards.join(format!("{i:05}.parquet")), b"not read").unwrap();
        std::fs::write(shards.join(format!("{i:05}_stats.json")), b"{}").unwrap();
    }
    let braces = root.join("braces");
    ok(&embed(&[format!("{}/{{00000..00001}}.tar", shards.display()).into()], &braces, &[]));
    let want = rows(&braces);
    assert_eq!(want.len(), 4);
    let folder = root.join("folder");
    ok(&embed(&[shards.clone().into()], &folder, &[]));
    assert_eq!(rows(&folder), want, "a folder of tars reads as its tars, in name order");
    let glob = root.join("glob");
    ok(&embed(&[format!("{}/*.tar", shards.display()).into()], &glob, &[]));
    assert_eq!(rows(&glob), want, "a quoted glob expands as the shell would");
    let o = embed(&[format!("{}/*.tgz", shards.display()).into()], &root.join("none"), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("matches no file"), "{}", String::from_utf8_lossy(&o.stderr));
    // A folder of pictures with a stray tar stays a folder of pictures (and says so).
    std::fs::write(shards.join("cover.jpg"), img("photo.jpg")).unwrap();
    let mixed = root.join("mixed");
    let o = sieve()
        .arg("embed")
        .arg(&shards)
        .arg("--out")
        .arg(&mixed)
        .args(["--model", tiny_model_dir().to_str().unwrap(), "--device", "cpu"])
        .output()
        .unwrap();
    let stderr = ok(&o);
    assert!(stderr.contains("the tars are not read"), "{stderr}");
    assert_eq!(rows(&mixed).len(), 1);
}
