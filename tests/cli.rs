//! `sieve embed` end to end, as a user runs it: a folder with good images, captions and hostile
//! files; every file embedded or listed with a reason; outputs aligned, correct and reproducible.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow_array::{Array, BooleanArray, StringArray, UInt64Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sieve::store::npy;

use crate::util::*;

pub(crate) fn sieve() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sieve"));
    c.env_remove("RUST_LOG").env_remove("SIEVE_MODEL");
    c
}

pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A PNG whose header claims `w`×`h` pixels followed by the start of a compressed stream: a
/// decompression bomb must be refused from the header alone, before any pixel is allocated.
pub(crate) fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    let idat = b"IDAT\x78\x9c\xed\xc1\x01\x0d\x00\x00\x00\xc2\xa0".to_vec();
    png.extend_from_slice(&(idat.len() as u32 - 4).to_be_bytes());
    png.extend_from_slice(&idat);
    png.extend_from_slice(&crc32(&idat).to_be_bytes());
    png.extend_from_slice(&0u32.to_be_bytes());
    png.extend_from_slice(b"IEND");
    png.extend_from_slice(&crc32(b"IEND").to_be_bytes());
    png
}

struct Corpus {
    _dir: tempfile::TempDir,
    input: PathBuf,
    /// file name (relative) -> expected outcome: Ok(golden image index, caption index) or Err(reason)
    expect: BTreeMap<String, Result<(usize, Option<usize>), &'static str>>,
}

fn build_corpus() -> Corpus {
    let g = golden();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let mut expect = BTreeMap::new();
    for (i, file) in g.images.iter().enumerate() {
        std::fs::copy(fixtures().join("images").join(file), input.join(file)).unwrap();
        // Every image but the last gets the caption of the same index.
        let cap = (i + 1 < g.images.len()).then_some(i);
        if let Some(c) = cap {
            std::fs::write(input.join(format!("{}.txt", stem(file))), &g.captions[c]).unwrap();
        }
        expect.insert(file.clone(), Ok((i, cap)));
    }
    // A folder named like an image, holding an image: walked into, not treated as a file.
    std::fs::create_dir_all(input.join("folder.jpg")).unwrap();
    std::fs::copy(fixtures().join("images").join(&g.images[0]), input.join("folder.jpg/inner.png")).unwrap();
    expect.insert("folder.jpg/inner.png".into(), Ok((0, None)));

    let wide = std::fs::read(fixtures().join("images/wide.png")).unwrap();
    let photo = std::fs::read(fixtures().join("images/photo.jpg")).unwrap();
    let hostile: [(&str, Vec<u8>, &str); 6] = [
        ("zz-truncated.jpg", photo[..photo.len() / 2].to_vec(), "decode-error"),
        ("zz-empty.png", vec![], "empty-file"),
        ("zz-text.jpg", b"this is not a picture\n".to_vec(), "not-an-image"),
        ("zz-random.webp", (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect(), "not-an-image"),
        ("zz-truncated.png", wide[..wide.len() / 2].to_vec(), "decode-error"),
        ("zz-bomb.png", png_header_only(100_000, 100_000), "too-many-pixels"),
    ];
    for (name, bytes, reason) in hostile {
        std::fs::write(input.join(name), bytes).unwrap();
        expect.insert(name.into(), Err(reason));
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(input.join("does-not-exist.jpg"), input.join("zz-dangling.jpg")).unwrap();
        expect.insert("zz-dangling.jpg".into(), Err("unreadable"));
    }
    // Files that are neither images nor sidecars are ignored, not listed.
    std::fs::write(input.join("README.md"), "notes").unwrap();
    Corpus { _dir: dir, input, expect }
}

fn embed(input: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    sieve()
        .arg("embed")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args([
            "--model",
            tiny_model_dir().to_str().unwrap(),
            "--device",
            "cpu",
            "--batch-size",
            "3",
            "--part-size",
            "4",
        ])
        .args(extra)
        .output()
        .unwrap()
}

struct MetaRow {
    uri: String,
    caption: Option<String>,
    caption_lossy: bool,
    status: String,
    reason: Option<String>,
    id: u64,
}

fn read_metadata(path: &Path) -> Vec<MetaRow> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap().build().unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let b = batch.unwrap();
        let s = |n: &str| b.column_by_name(n).unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
        let (uri, caption, status, reason) = (s("uri"), s("caption"), s("status"), s("reason"));
        let lossy = b.column_by_name("caption_lossy").unwrap().as_any().downcast_ref::<BooleanArray>().unwrap().clone();
        let id = b.column_by_name("id").unwrap().as_any().downcast_ref::<UInt64Array>().unwrap().clone();
        for i in 0..b.num_rows() {
            let opt = |a: &StringArray| (!a.is_null(i)).then(|| a.value(i).to_string());
            rows.push(MetaRow {
                uri: uri.value(i).to_string(),
                caption: opt(&caption),
                caption_lossy: lossy.value(i),
                status: status.value(i).to_string(),
                reason: opt(&reason),
                id: id.value(i),
            });
        }
    }
    rows
}

fn normalized(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

#[test]
fn embed_lists_every_file_and_matches_the_reference() {
    let c = build_corpus();
    let out = c._dir.path().join("run");
    let o = embed(&c.input, &out, &["--quiet"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "exit {:?}\n{stderr}", o.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("skipped") && stderr.contains("too-many-pixels"), "summary by reason missing:\n{stderr}");

    let manifest = sieve::store::read_manifest(&out).unwrap();
    assert_eq!(manifest.counts.records as usize, c.expect.len());
    let n_parts = c.expect.len().div_ceil(4);
    assert_eq!(manifest.parts.len(), n_parts);

    let g = golden();
    let img_golden = golden_rows("image_embeds.npy");
    let txt_golden = golden_rows("text_embeds.npy");
    let mut seen = BTreeMap::new();
    let mut next_id = 0;
    for part in &manifest.parts {
        let meta = read_metadata(&out.join("metadata").join(format!("{part}.parquet")));
        let (ir, id_, img) = npy::read_f16(&out.join("img_emb").join(format!("{part}.npy"))).unwrap();
        let (tr, td, txt) = npy::read_f16(&out.join("text_emb").join(format!("{part}.npy"))).unwrap();
        assert_eq!((ir, tr), (meta.len(), meta.len()), "{part}: embedding rows must align with metadata rows");
        assert_eq!((id_, td), (16, 16));
        for (i, row) in meta.iter().enumerate() {
            assert_eq!(row.id, next_id, "ids are dense and in order");
            next_id += 1;
            let rel = Path::new(&row.uri).strip_prefix(&c.input).unwrap().to_str().unwrap().to_string();
            let want = c.expect.get(&rel).unwrap_or_else(|| panic!("unexpected row {rel}"));
            let img_row = &img[i * 16..(i + 1) * 16];
            let txt_row = &txt[i * 16..(i + 1) * 16];
            match want {
                Ok((gi, cap)) => {
                    assert_eq!(row.status, "embedded", "{rel}: {:?}", row.reason);
                    let cos = cosine(img_row, &normalized(&img_golden[*gi]));
                    assert!(cos >= 0.9999, "{rel}: image cosine {cos}");
                    match cap {
                        Some(ci) => {
                            assert_eq!(row.caption.as_deref(), Some(g.captions[*ci].trim()));
                            let cos = cosine(txt_row, &normalized(&txt_golden[*ci]));
                            assert!(cos >= 0.9999, "{rel}: caption cosine {cos}");
                        }
                        None => assert!(txt_row.iter().all(|&v| v == 0.0), "{rel}: no caption, zero text row"),
                    }
                }
                Err(reason) => {
                    assert_eq!(row.status, "skipped", "{rel}");
                    assert_eq!(row.reason.as_deref(), Some(*reason), "{rel}");
                    assert!(img_row.iter().chain(txt_row).all(|&v| v == 0.0), "{rel}: skipped rows are zero");
                }
            }
            assert!(seen.insert(rel.clone(), ()).is_none(), "{rel} listed twice");
        }
    }
    let missing: Vec<_> = c.expect.keys().filter(|k| !seen.contains_key(*k)).collect();
    assert!(missing.is_empty(), "records lost: {missing:?}");
    assert!(!seen.contains_key("README.md"));
}

#[test]
fn rerun_is_a_no_op_another_command_is_refused_and_overwrite_is_byte_identical() {
    let c = build_corpus();
    let out = c._dir.path().join("run");
    assert!(embed(&c.input, &out, &["--quiet"]).status.success());
    let snapshot = |dir: &Path| -> BTreeMap<String, Vec<u8>> {
        walkdir::WalkDir::new(dir)
            .sort_by_file_name()
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().is_file())
            .map(|e| (e.path().strip_prefix(dir).unwrap().display().to_string(), std::fs::read(e.path()).unwrap()))
            .collect()
    };
    let first = snapshot(&out);
    assert!(first.keys().any(|k| k.ends_with(".parquet")) && first.contains_key("run.json"));

    // The same command again: the run is finished, nothing is rewritten.
    let o = embed(&c.input, &out, &["--quiet"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing to do"));
    assert!(snapshot(&out) == first);
    // Another command into the same folder: refused, naming the way out.
    let o = embed(&c.input, &out, &["--quiet", "--max-pixels", "1000000"]);
    assert_eq!(o.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&o.stderr);
    assert!(msg.contains("--overwrite") && msg.contains("--max-pixels"), "{msg}");

    assert!(embed(&c.input, &out, &["--quiet", "--overwrite"]).status.success());
    let second = snapshot(&out);
    assert_eq!(first.keys().collect::<Vec<_>>(), second.keys().collect::<Vec<_>>());
    for (k, v) in &first {
        assert!(v == &second[k], "{k} differs between identical runs");
    }
}

#[test]
fn non_utf8_caption_is_decoded_lossily_and_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(fixtures().join("images/tiny.png"), input.join("a.png")).unwrap();
    std::fs::write(input.join("a.txt"), b"caf\xe9 au lait\n").unwrap();
    let out = dir.path().join("run");
    let o = embed(&input, &out, &["--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let meta = read_metadata(&out.join("metadata/part-00000.parquet"));
    assert_eq!(meta.len(), 1);
    assert!(meta[0].caption_lossy);
    assert_eq!(meta[0].caption.as_deref(), Some("caf\u{fffd} au lait"));
}

#[test]
fn usage_errors_exit_2_and_missing_models_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let o = sieve().args(["embed", ".", "--out"]).arg(dir.path().join("r")).args(["--device", "gpu"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--device"));

    let o = sieve()
        .args(["embed"])
        .arg(fixtures().join("images"))
        .arg("--out")
        .arg(dir.path().join("r"))
        .args(["--model", "nobody/nothing-here", "--device", "cpu"])
        .env("HF_HOME", dir.path())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nobody/nothing-here") && err.contains("local folder"), "{err}");
}

#[test]
fn help_explains_the_embed_command() {
    let o = sieve().args(["embed", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    for needle in ["--model", "--device", "--batch-size", "HF_HUB_OFFLINE", "too-many-pixels", "run.json"] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[test]
fn version_names_the_build_features_and_the_cpu() {
    let o = sieve().arg("--version").output().unwrap();
    assert!(o.status.success());
    let v = String::from_utf8_lossy(&o.stdout);
    let prefix = concat!("sieve ", env!("CARGO_PKG_VERSION"), " (features: ");
    assert!(v.starts_with(prefix) && v.contains("; cpu: ") && v.trim_end().ends_with(')'), "{v}");
    // A build without SIMD JPEG decoding is 2-3x slower at decoding; --version must say so.
    assert_eq!(v.contains("jpeg-simd"), cfg!(feature = "jpeg-simd"), "{v}");
    #[cfg(target_arch = "x86_64")]
    assert_eq!(v.contains(" avx2"), std::is_x86_feature_detected!("avx2"), "{v}");
}

/// A model whose files are wrong is not a usage error: no flag fixes it, so it exits 1, not 2.
#[test]
fn a_model_config_problem_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let src = tiny_model_dir().join("config.json");
    let gelu = dir.path().join("gelu.json");
    std::fs::write(&gelu, std::fs::read_to_string(&src).unwrap().replace("quick_gelu", "gelu")).unwrap();
    // The stock CLIP runs QuickGELU only: this model config does not fit it.
    let o = sieve()
        .args(["bench", "--stock", "--device", "cpu", "--batch-size", "1", "--iters", "1", "--config"])
        .arg(&gelu)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("quick_gelu"), "{}", String::from_utf8_lossy(&o.stderr));
    // An unknown activation in config.json names the file.
    let swish = dir.path().join("swish.json");
    std::fs::write(&swish, std::fs::read_to_string(&src).unwrap().replace("quick_gelu", "swish")).unwrap();
    let o = sieve()
        .args(["bench", "--device", "cpu", "--batch-size", "1", "--iters", "1", "--config"])
        .arg(&swish)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("swish.json") && err.contains("swish"), "{err}");
}

/// Logs fit a file: no colour codes unless asked for, one warning per kind of skip for the first
/// few records and a line for the rest (each still in the metadata and the summary), none with
/// `-q`.
#[test]
fn logs_are_plain_in_a_file_few_per_skip_kind_and_quiet_with_q() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::copy(fixtures().join("images/photo.jpg"), input.join("photo.jpg")).unwrap();
    for i in 0..7 {
        std::fs::write(input.join(format!("broken{i}.jpg")), b"not a picture at all").unwrap();
    }
    let out = embed(&input, &dir.path().join("plain"), &[]);
    assert!(out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains('\u{1b}'), "colour codes in a piped stderr:\n{err}");
    let examples = err.lines().filter(|l| l.contains("WARN") && l.contains("skipped ") && l.contains("broken")).count();
    assert_eq!(examples, 3, "{err}");
    assert_eq!(err.matches("more records with `not-an-image` are not shown").count(), 1, "{err}");
    assert!(err.contains("7 skipped") && err.contains("skipped        7  not-an-image"), "{err}");
    let rows = read_metadata(&dir.path().join("plain/metadata/part-00000.parquet"));
    let listed = rows.iter().filter(|r| r.reason.as_deref() == Some("not-an-image")).count();
    assert!(listed >= 3, "the first part alone lists {listed}");

    let out = embed(&input, &dir.path().join("quiet"), &["-q"]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success() && !err.contains("WARN"), "{err}");
    assert!(err.contains("7 skipped"), "the summary still prints with -q:\n{err}");

    let out = embed(&input, &dir.path().join("colour"), &["--color", "always"]);
    assert!(String::from_utf8(out.stderr).unwrap().contains("\u{1b}["), "--color always gives colour codes");
    let out = embed(&input, &dir.path().join("never"), &["--color", "sometimes"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn completions_and_man_page_come_from_the_command_definitions() {
    for (shell, marker) in [("bash", "_sieve()"), ("zsh", "#compdef sieve"), ("fish", "complete -c sieve")] {
        let out = sieve().args(["completions", shell]).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success() && text.contains(marker), "{shell}: {text:.200}");
        assert!(text.contains("dedup") && text.contains("remove-kinds"), "{shell} completes subcommands and flags");
    }
    let out = sieve().arg("man").output().unwrap();
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success() && page.starts_with(".ie") && page.contains(".TH sieve 1"), "{page:.300}");
    assert!(page.contains("dedup") && page.contains("Exit codes"), "{page:.300}");
    let dir = tempfile::tempdir().unwrap();
    let out = sieve().args(["man", "--dir"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dedup = std::fs::read_to_string(dir.path().join("sieve-dedup.1")).unwrap();
    assert!(dedup.contains("remove\\-kinds"), "the subcommand's page lists its flags:\n{dedup:.400}");
}

/// A column flag on input without columns is refused with the reason, not silently ignored.
#[test]
fn column_flags_on_folder_input_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = embed(&fixtures().join("images"), &dir.path().join("r"), &["--caption-col", "text"]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--caption-col") && err.contains("the input is a folder"), "{err}");
    assert!(!dir.path().join("r").exists(), "nothing written");
}

/// A model in the Hub cache as huggingface_hub lays it out: found through HF_HUB_CACHE, by a
/// commit sha with no refs/ file (Python writes none for one) or by a branch, offline with
/// Python's truthy spellings; run.json records the revision and the commit it resolved to.
#[test]
fn hub_cache_is_found_as_huggingface_hub_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("somewhere/hub-cache");
    let sha = "9f1c2e3d4b5a69788796a5b4c3d2e1f0a9b8c7d6";
    let snap = cache.join("models--sieve-test--tiny-clip/snapshots").join(sha);
    std::fs::create_dir_all(&snap).unwrap();
    for f in ["config.json", "preprocessor_config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(tiny_model_dir().join(f), snap.join(f)).unwrap();
    }
    let embed = |out: &str, revision: &str, env: (&str, &str)| {
        sieve()
            .args(["embed", "-q", "--model", "sieve-test/tiny-clip", "--revision", revision, "--device", "cpu"])
            .arg(fixtures().join("images"))
            .arg("--out")
            .arg(dir.path().join(out))
            .env("HF_HOME", dir.path().join("unused-home"))
            .env("HF_HUB_CACHE", &cache)
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("TRANSFORMERS_OFFLINE")
            .env(env.0, env.1)
            .output()
            .unwrap()
    };
    let model = |out: &str| -> serde_json::Value {
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(out).join("run.json")).unwrap()).unwrap();
        m["model"].clone()
    };
    let o = embed("by-sha", sha, ("HF_HUB_OFFLINE", "True"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!((model("by-sha")["revision"].as_str(), model("by-sha")["commit"].as_str()), (Some(sha), Some(sha)));

    let o = embed("no-ref", "main", ("TRANSFORMERS_OFFLINE", "yes"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("sieve-test/tiny-clip@main") && err.contains("not in the Hub cache"), "{err}");

    std::fs::create_dir_all(cache.join("models--sieve-test--tiny-clip/refs")).unwrap();
    std::fs::write(cache.join("models--sieve-test--tiny-clip/refs/main"), sha).unwrap();
    let o = embed("by-branch", "main", ("HF_HUB_OFFLINE", "ON"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(model("by-branch")["revision"], "main");
    assert_eq!(model("by-branch")["commit"], sha);
    // The same weights either way: the embeddings are the same bytes.
    for f in ["img_emb/part-00000.npy", "metadata/part-00000.parquet"] {
        let (a, b) = (dir.path().join("by-sha").join(f), dir.path().join("by-branch").join(f));
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap(), "{f}");
    }
}

/// The run directory carries a dataset card whose `configs` point `datasets.load_dataset(RUN)`
/// at the metadata parts (without it, `datasets` takes the summaries' JSON files as data and
/// fails; checked by hand with datasets 5.2, see docs/run-directory.md).
#[test]
fn the_run_directory_has_a_dataset_card_naming_the_metadata_parts() {
    let dir = tempfile::tempdir().unwrap();
    let out = embed(&fixtures().join("images"), &dir.path().join("r"), &[]);
    assert!(out.status.success());
    let card = std::fs::read_to_string(dir.path().join("r/README.md")).unwrap();
    let front = card.strip_prefix("---\n").and_then(|c| c.split_once("\n---\n")).map(|(f, _)| f).unwrap();
    assert!(front.contains("configs:\n- config_name: default\n  data_files:\n  - split: train\n"), "{front}");
    assert!(front.contains("path: \"metadata/part-*.parquet\""), "{front}");
    let parts = std::fs::read_dir(dir.path().join("r/metadata")).unwrap().count();
    assert!(parts >= 2, "the glob has several parts to match here: {parts}");
}
