//! "Never crash, hang, leak or mix runs": non-finite and damaged embeddings, special files,
//! links leaving the input folder, manifest rows lost to a stray quote, unbounded sizes, two
//! writers, stale stage outputs, interrupted merges. See docs/robustness.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::cli::sieve;
use crate::util::*;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `cmd`, killing it (and failing the test) if it takes longer than `limit`.
fn run_within(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("hung for {limit:?}:\n{}", stderr(&o));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The golden images (and captions, but for the last) copied into `dir/in`.
fn small_input(dir: &Path) -> PathBuf {
    let g = golden();
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    for (i, file) in g.images.iter().enumerate() {
        std::fs::copy(fixtures().join("images").join(file), input.join(file)).unwrap();
        if i + 1 < g.images.len() {
            std::fs::write(input.join(format!("{}.txt", stem(file))), &g.captions[i]).unwrap();
        }
    }
    input
}

fn embed(input: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut c = sieve();
    c.args(["embed", "-q", "--device", "cpu", "--model"]).arg(tiny_model_dir()).arg(input).arg("--out").arg(out);
    c.args(extra);
    run_within(c, Duration::from_secs(300))
}

fn embed_ok(input: &Path, out: &Path, extra: &[&str]) -> String {
    let o = embed(input, out, extra);
    assert!(o.status.success(), "embed failed:\n{}", stderr(&o));
    stderr(&o)
}

fn rows(run: &Path) -> Vec<sieve::store::Row> {
    let m = sieve::store::read_manifest(run).unwrap();
    m.parts.iter().flat_map(|p| sieve::store::read::read_part_rows(run, p, m.embed_dim).unwrap()).collect()
}

fn by_name(rows: &[sieve::store::Row], name: &str) -> sieve::store::Row {
    rows.iter()
        .find(|r| Path::new(&r.uri).file_name().unwrap() == name)
        .unwrap_or_else(|| panic!("{name} not listed"))
        .clone()
}

/// Overwrites value `col` of row `row` of a 2-D float16 .npy with `value`.
fn poke_f16(path: &Path, row: usize, col: usize, value: f32) {
    let mut bytes = std::fs::read(path).unwrap();
    let (_, cols) = sieve::store::npy::read_shape(path).unwrap();
    let start = bytes.len() - sieve::store::npy::read_shape(path).unwrap().0 * cols * 2;
    let at = start + (row * cols + col) * 2;
    bytes[at..at + 2].copy_from_slice(&half::f16::from_f32(value).to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

// ---------------------------------------------------------------------------------------------
// (1) Non-finite and damaged embeddings.

/// One NaN in one stored embedding: every stage that reads the embeddings exits 1 naming the
/// file and the row (it used to panic in k-means or carry the NaN into its outputs); so does a
/// row that is not of unit norm.
#[test]
fn damaged_embeddings_are_refused_naming_file_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_input(dir.path());
    let run = dir.path().join("run");
    embed_ok(&input, &run, &[]);
    let part = run.join("img_emb/part-00000.npy");
    let clean = std::fs::read(&part).unwrap();
    // Checksums first: a changed part no longer matches run.json.
    poke_f16(&part, 2, 1, f32::NAN);
    let o = sieve().args(["diversity", "-q"]).arg(&run).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("part-00000.npy") && stderr(&o).contains("checksum"), "{}", stderr(&o));
    let o = sieve().arg("verify").arg(&run).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("checksum"), "{}", stderr(&o));
    // Without checksums (a run made by an older sieve, or damaged before they were taken), the
    // values themselves are checked.
    let mut m = sieve::store::read_manifest(&run).unwrap();
    let checksums = std::mem::take(&mut m.checksums);
    assert_eq!(checksums.len(), 3, "{checksums:?}");
    std::fs::write(run.join("run.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    for (value, what) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf"), (40.0, "norm")] {
        std::fs::write(&part, &clean).unwrap();
        poke_f16(&part, 2, 1, value);
        let cmds: [&[&str]; 6] = [
            &["diversity"],
            &["select", "--budget", "3"],
            &["dedup", "--clusters", "2"],
            &["dedup"],
            &["score"],
            &["score", "--index", "clusters"],
        ];
        for args in cmds {
            let o = run_within(
                {
                    let mut c = sieve();
                    c.args(args).arg(&run).args(["-q"]);
                    c
                },
                Duration::from_secs(120),
            );
            let e = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{args:?} with {what}: {e}");
            assert!(!e.contains("panicked"), "{args:?}: {e}");
            assert!(e.contains("img_emb/part-00000.npy") && e.contains("row 2"), "{args:?} with {what}: {e}");
            if what == "norm" {
                assert!(e.contains("norm"), "{e}");
            }
        }
    }
    // `sieve verify` finds it too, and passes the clean run.
    std::fs::write(&part, &clean).unwrap();
    let o = sieve().arg("verify").arg(&run).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    poke_f16(&part, 2, 1, f32::NAN);
    let o = sieve().arg("verify").arg(&run).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("row 2"), "{}", stderr(&o));
}

/// A copy of the tiny model with `edit` applied to its folder.
fn broken_model(dir: &Path, edit: impl FnOnce(&Path)) -> PathBuf {
    let m = dir.join("model");
    std::fs::create_dir_all(&m).unwrap();
    for e in std::fs::read_dir(tiny_model_dir()).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), m.join(e.file_name())).unwrap();
        }
    }
    edit(&m);
    m
}

/// A model that yields NaN is refused with a clear error, not "embedded" with NaN vectors.
#[test]
fn a_model_that_yields_nan_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_input(dir.path());
    // image_std of zeros: refused when the config is read.
    let zero_std = broken_model(&dir.path().join("a"), |m| {
        let p = m.join("preprocessor_config.json");
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        v["image_std"] = serde_json::json!([0.0, 0.0, 0.0]);
        std::fs::write(&p, v.to_string()).unwrap();
    });
    let mut c = sieve();
    c.args(["embed", "-q", "--device", "cpu", "--model"])
        .arg(&zero_std)
        .arg(&input)
        .arg("--out")
        .arg(dir.path().join("r1"));
    let o = run_within(c, Duration::from_secs(120));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("image_std"), "{}", stderr(&o));

    // NaN weights in the visual projection: every image embedding is NaN.
    let nan_weights = broken_model(&dir.path().join("b"), |m| {
        let p = m.join("model.safetensors");
        let mut bytes = std::fs::read(&p).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let t = &header["visual_projection.weight"];
        assert_eq!(t["dtype"], "F16", "{t}");
        let (a, b) = (t["data_offsets"][0].as_u64().unwrap() as usize, t["data_offsets"][1].as_u64().unwrap() as usize);
        for v in bytes[8 + n + a..8 + n + b].chunks_exact_mut(2) {
            v.copy_from_slice(&half::f16::NAN.to_le_bytes());
        }
        std::fs::write(&p, bytes).unwrap();
    });
    let mut c = sieve();
    let out = dir.path().join("r2");
    c.args(["embed", "-q", "--device", "cpu", "--model"]).arg(&nan_weights).arg(&input).arg("--out").arg(&out);
    let o = run_within(c, Duration::from_secs(120));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("NaN or infinite"), "{}", stderr(&o));
    assert!(!sieve::store::read_manifest(&out).is_ok_and(|m| m.complete), "a broken run must not read as finished");
}

// ---------------------------------------------------------------------------------------------
// (2) Special files, (3) links leaving the input folder.

#[cfg(unix)]
fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().unwrap();
    assert!(st.success());
}

/// FIFOs and devices are listed as `not-a-file`, never opened: a FIFO image or caption used to
/// hang `embed` forever, /dev/zero to be read until memory ran out.
#[cfg(unix)]
#[test]
fn special_files_are_listed_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_input(dir.path());
    mkfifo(&input.join("pipe.jpg"));
    // square.bmp has no caption: give it a FIFO one.
    mkfifo(&input.join("square.txt"));
    std::os::unix::fs::symlink("/dev/zero", input.join("zero.png")).unwrap();
    let run = dir.path().join("run");
    // /dev/zero is outside the folder: followed only with --follow-links, and then refused.
    embed_ok(&input, &run, &["--follow-links"]);
    let rows = rows(&run);
    for name in ["pipe.jpg", "zero.png"] {
        let r = by_name(&rows, name);
        assert_eq!(r.reason.as_deref(), Some("not-a-file"), "{name}: {r:?}");
    }
    let square = by_name(&rows, "square.bmp");
    assert_eq!(square.status, sieve::store::Status::Embedded);
    assert_eq!(square.caption, None);

    // In a manifest too.
    let csv = dir.path().join("m.csv");
    std::fs::write(&csv, "image,caption\n/dev/zero,zero\n/dev/urandom,random\n").unwrap();
    let run2 = dir.path().join("run2");
    embed_ok(&csv, &run2, &[]);
    let rows = self::rows(&run2);
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.reason.as_deref() == Some("not-a-file")), "{rows:?}");

    // Tar members that are links are listed, not dropped.
    let tar_path = dir.path().join("shard.tar");
    let mut t = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
    t.append_path_with_name(fixtures().join("images/photo.jpg"), "000.jpg").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    t.append_link(&mut h, "001.jpg", "/etc/passwd").unwrap();
    t.finish().unwrap();
    drop(t);
    let run3 = dir.path().join("run3");
    embed_ok(&tar_path, &run3, &[]);
    let rows = self::rows(&run3);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(by_name(&rows, "001.jpg").reason.as_deref(), Some("not-a-file"));
    assert_eq!(by_name(&rows, "000.jpg").status, sieve::store::Status::Embedded);
}

/// `a.txt -> /etc/passwd` (or any file outside the input) is not read as a caption, and an image
/// linked from outside is listed as `link-outside-input`; `--follow-links` reads both.
#[cfg(unix)]
#[test]
fn links_leaving_the_input_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_input(dir.path());
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "SECRET-TOKEN=hunter2").unwrap();
    std::fs::copy(fixtures().join("images/photo.jpg"), outside.join("far.jpg")).unwrap();
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    std::fs::copy(fixtures().join("images/photo.jpg"), outside.join("sub/deep.jpg")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), input.join("square.txt")).unwrap();
    std::os::unix::fs::symlink(outside.join("far.jpg"), input.join("far.jpg")).unwrap();
    std::os::unix::fs::symlink(outside.join("sub"), input.join("linked")).unwrap();
    std::os::unix::fs::symlink("photo.jpg", input.join("inside.jpg")).unwrap();

    let run = dir.path().join("run");
    embed_ok(&input, &run, &[]);
    let rows = rows(&run);
    assert!(rows.iter().all(|r| !r.caption.as_deref().unwrap_or("").contains("SECRET")), "host file leaked");
    assert_eq!(by_name(&rows, "square.bmp").caption, None);
    assert_eq!(by_name(&rows, "far.jpg").reason.as_deref(), Some("link-outside-input"));
    assert!(rows.iter().all(|r| !r.uri.contains("deep.jpg")), "walked into a linked folder outside the input");
    assert_eq!(by_name(&rows, "inside.jpg").status, sieve::store::Status::Embedded);

    let run2 = dir.path().join("run2");
    embed_ok(&input, &run2, &["--follow-links"]);
    let rows = self::rows(&run2);
    assert_eq!(by_name(&rows, "square.bmp").caption.as_deref(), Some("SECRET-TOKEN=hunter2"));
    assert_eq!(by_name(&rows, "far.jpg").status, sieve::store::Status::Embedded);
    assert_eq!(by_name(&rows, "deep.jpg").status, sieve::store::Status::Embedded);
}

// ---------------------------------------------------------------------------------------------
// (6) Manifest rows.

/// A quote that is never closed used to swallow every later row into one field (3 rows, 1
/// record, no warning): the row is listed as bad-manifest-line and the rows after it are read.
#[test]
fn an_unterminated_quote_does_not_swallow_rows() {
    use sieve::ingest::{manifest, InputFormat};
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("m.csv");
    std::fs::write(&csv, "image,caption\na.jpg,\"a cat\nb.jpg,a dog\nc.jpg,\"a \"\"quoted\"\" bird\"\nd.jpg,x\n")
        .unwrap();
    let m = manifest::scan(&csv, InputFormat::Csv, None, None).unwrap();
    let got: Vec<(String, Option<&str>)> = m
        .records
        .iter()
        .map(|r| {
            let name = Path::new(&r.uri).file_name().unwrap().to_string_lossy().into_owned();
            (name, r.skip.as_ref().map(|s| s.reason.code()))
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("m.csv:2".to_string(), Some("bad-manifest-line")),
            ("b.jpg".into(), None),
            ("c.jpg".into(), None),
            ("d.jpg".into(), None),
        ],
        "{:?}",
        m.records
    );
    assert!(m.records[0].skip.as_ref().unwrap().detail.contains("line 2"), "{:?}", m.records[0].skip);
    assert_eq!(m.records.iter().map(|r| r.id).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    // A legitimate multi-line quoted caption is one row, as before.
    std::fs::write(&csv, "image,caption\na.jpg,\"two\nlines\"\nb.jpg,x\n").unwrap();
    let m = manifest::scan(&csv, InputFormat::Csv, None, None).unwrap();
    assert_eq!(m.records.len(), 2);
    assert!(m.records.iter().all(|r| r.skip.is_none()));
}

// ---------------------------------------------------------------------------------------------
// (7) Bounds, (9) smaller things.

/// Sizes that could only abort on allocation are refused up front with exit 2 and the bound.
#[test]
fn oversized_settings_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let o = sieve()
        .args(["embed", "x", "--out"])
        .arg(dir.path().join("r"))
        .args(["--batch-size", "100000"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("2048"), "{}", stderr(&o));
    let o = sieve().args(["score", "x", "--top-k", "100000000"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("10000"), "{}", stderr(&o));
    let o = sieve().args(["quality", "x", "--threshold", "blur=NaN"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = sieve().args(["dedup", "x", "--image-threshold", "NaN"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // --out naming a file.
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let o = sieve().args(["embed", "x", "--out"]).arg(&file).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is not a folder"), "{}", stderr(&o));
}

/// A caption file is read only up to --max-caption-bytes, cut and flagged.
#[test]
fn long_captions_are_cut_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_input(dir.path());
    let huge = "é".repeat(1 << 20); // 2 MB, two bytes a char
    std::fs::write(input.join("tiny.txt"), &huge).unwrap();
    let run = dir.path().join("run");
    embed_ok(&input, &run, &["--max-caption-bytes", "1001"]);
    let r = by_name(&rows(&run), "tiny.png");
    let c = r.caption.unwrap();
    assert_eq!(c.len(), 1000, "cut at a char boundary at or below the limit");
    assert!(r.caption_truncated);
    // Manifest captions too.
    let csv = dir.path().join("m.csv");
    std::fs::write(&csv, format!("image,caption\nin/tiny.png,{}\n", "a".repeat(5000))).unwrap();
    let run2 = dir.path().join("run2");
    embed_ok(&csv, &run2, &["--max-caption-bytes", "100"]);
    let r = rows(&run2).remove(0);
    assert_eq!(r.caption.as_deref().map(str::len), Some(100));
    assert!(r.caption_truncated);
}

// ---------------------------------------------------------------------------------------------
// (5) One writer; (4) stale outputs; (8) merge.

/// A second writer of a run directory exits 1 naming the holder.
#[cfg(unix)]
#[test]
fn a_second_writer_is_refused() {
    use sieve::store::lock::{Mode, RunLock};
    let dir = tempfile::tempdir().unwrap();
    let input = small_input(dir.path());
    let run = dir.path().join("run");
    let held = RunLock::acquire(&run, Mode::Exclusive, "test holder").unwrap();
    let o = embed(&input, &run, &["--overwrite"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("in use by another sieve process") && stderr(&o).contains("test holder"),
        "{}",
        stderr(&o)
    );
    let o = sieve().args(["report", "-q"]).arg(&run).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "stages wait for the writer: {}", stderr(&o));
    drop(held);
    // A writer that fails before writing anything leaves no empty run folder behind.
    let never = dir.path().join("never");
    let o = embed(&dir.path().join("no-such-input"), &never, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!never.exists());
    embed_ok(&input, &run, &[]);
    // Stages share the lock with each other.
    let _shared = RunLock::acquire(&run, Mode::Shared, "test").unwrap();
    let o = sieve().args(["quality", "-q"]).arg(&run).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Temporary names are unique per process and call.
    let p = run.join("x.json");
    assert_ne!(sieve::store::tmp_path(&p), sieve::store::tmp_path(&p));
}

/// `embed --overwrite` removes the later stages' outputs, so a report never shows another run's
/// duplicates beside this run's records.
#[test]
fn overwriting_a_run_removes_its_stage_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_input(dir.path());
    let run = dir.path().join("run");
    embed_ok(&input, &run, &[]);
    for args in [&["dedup", "-q"][..], &["quality", "-q"], &["select", "-q", "--budget", "2"]] {
        let o = sieve().args(args).arg(&run).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    assert!(run.join("dedup/remove.txt").exists() && run.join("selection/keep.txt").exists());
    std::fs::remove_file(input.join("tiny.png")).unwrap();
    embed_ok(&input, &run, &["--overwrite"]);
    for stale in sieve::store::STAGE_OUTPUTS {
        assert!(!run.join(stale).exists(), "{stale} survived --overwrite");
    }
}

/// Copies the later stages' outputs (and `extra`) of run `from` into run `to`, as a user
/// copying folders around would.
fn copy_stage_outputs(from: &Path, to: &Path, extra: &[&str]) {
    std::fs::create_dir_all(to.join("dedup")).unwrap();
    let files = [
        "dedup/summary.json",
        "dedup/groups.parquet",
        "dedup/keep.txt",
        "dedup/remove.txt",
        "pairs.parquet",
        "pairs_summary.json",
        "diversity.json",
        "quality_summary.json",
        "quality.parquet",
    ];
    for f in files.iter().chain(extra) {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

/// Outputs computed from another run (copied in, or left by an older sieve) are refused by
/// `select` and not shown by `report`, which says why.
#[test]
fn stage_outputs_of_another_run_are_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let input_a = small_input(&dir.path().join("a"));
    let input_b = small_input(&dir.path().join("b"));
    std::fs::remove_file(input_b.join("wide.png")).unwrap();
    let (run_a, run_b) = (dir.path().join("run_a"), dir.path().join("run_b"));
    embed_ok(&input_a, &run_a, &[]);
    embed_ok(&input_b, &run_b, &[]);
    for args in
        [&["dedup", "-q", "--image-threshold=-1"][..], &["score", "-q"], &["quality", "-q"], &["diversity", "-q"]]
    {
        let o = sieve().args(args).arg(&run_a).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    copy_stage_outputs(&run_a, &run_b, &[]);
    let o = sieve().args(["select", "-q", "--budget", "2"]).arg(&run_b).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("computed from another run"), "{}", stderr(&o));
    let o = sieve().args(["report", "-q"]).arg(&run_b).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("dedup/ was computed from another run"), "{e}");
    assert!(e.contains("pairs.parquet was computed from another run"), "{e}");
    assert!(e.contains("diversity.json was computed from another run"), "{e}");
    assert!(e.contains("quality_summary.json was computed from another run"), "{e}");
}

/// Every stage output names the run it was computed from (`run_fingerprint`, the SHA-256 of the
/// run's manifest with its part checksums): outputs of a run with the same file names and counts
/// but other pixels, which nothing they list gives away, are refused by `select`, not shown by
/// `report`, and recomputed by `run`, each saying why.
#[test]
fn stage_outputs_name_their_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_input(dir.path());
    let (input_a, input_b) = (&input, &input);
    let (run_a, run_b) = (dir.path().join("run_a"), dir.path().join("run_b"));
    let run = |input: &Path, out: &Path| {
        let mut c = sieve();
        c.args(["run", "--device", "cpu", "--model"]).arg(tiny_model_dir()).arg(input).arg("--out").arg(out);
        run_within(c, Duration::from_secs(300))
    };
    let o = run(input_a, &run_a);
    assert!(o.status.success(), "{}", stderr(&o));
    // Then the same names, so the same uris and counts, but one picture's bytes differ.
    std::fs::copy(input.join("wide.png"), input.join("palette.png")).unwrap();
    embed_ok(input_b, &run_b, &[]);
    let fingerprint = |path: &Path| -> String {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        v["run_fingerprint"].as_str().expect("run_fingerprint recorded").to_string()
    };
    let a = fingerprint(&run_a.join("dedup/summary.json"));
    for f in ["pairs_summary.json", "quality_summary.json", "diversity.json"] {
        assert_eq!(fingerprint(&run_a.join(f)), a, "{f}");
    }
    // Its own outputs are used: select applies dedup/remove.txt and the report shows them.
    let o = sieve().args(["select", "-q", "--budget", "2", "--drop-flags", "dark"]).arg(&run_a).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = sieve().args(["report", "-q"]).arg(&run_a).output().unwrap();
    assert!(o.status.success() && !stderr(&o).contains("another run"), "{}", stderr(&o));

    copy_stage_outputs(&run_a, &run_b, &["stages.json"]);
    for args in [
        &["select", "-q", "--budget", "2"][..],
        &["select", "-q", "--budget", "2", "--keep-duplicates", "--drop-flagged"],
    ] {
        let o = sieve().args(args).arg(&run_b).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("was computed from another run (its run fingerprint"), "{}", stderr(&o));
    }
    // (Not -q: these are warnings, which -q silences.)
    let o = sieve().args(["report"]).arg(&run_b).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["dedup/summary.json", "pairs_summary.json", "diversity.json", "quality_summary.json"] {
        assert!(stderr(&o).contains(&format!("{f} was computed from another run")), "{f}: {}", stderr(&o));
    }
    // `run` recomputes every stage (stages.json names run A) and says so.
    let o = run(input_b, &run_b);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("computed from another run; every stage runs again"), "{}", stderr(&o));
    let b = fingerprint(&run_b.join("dedup/summary.json"));
    assert_ne!(a, b);
    for f in ["pairs_summary.json", "quality_summary.json", "diversity.json"] {
        assert_eq!(fingerprint(&run_b.join(f)), b, "{f}");
    }
    let o = sieve().args(["select", "-q", "--budget", "2"]).arg(&run_b).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // A hostile fingerprint (multi-byte characters where the message cuts it) is refused, not a panic.
    let summary = run_b.join("dedup/summary.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    v["run_fingerprint"] = serde_json::json!("aéééééééééééé");
    std::fs::write(&summary, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = sieve().args(["select", "-q", "--budget", "2"]).arg(&run_b).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("computed from another run"), "{}", stderr(&o));
}

/// A merge killed midway is resumed by rerunning it; a finished merge rerun does nothing.
#[test]
fn merge_resumes_and_a_finished_merge_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_input(dir.path());
    let shards: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("s{i}"))).collect();
    for (i, s) in shards.iter().enumerate() {
        embed_ok(&input, s, &["--shard", &format!("{i}/2")]);
    }
    let out = dir.path().join("merged");
    let merge = || {
        let mut c = sieve();
        c.args(["merge", "-q"]).args(&shards).arg("--out").arg(&out).args(["--part-size", "2"]);
        run_within(c, Duration::from_secs(60))
    };
    let o = merge();
    assert!(o.status.success(), "{}", stderr(&o));
    let full = rows(&out);
    // A finished merge, rerun: nothing to do.
    let o = merge();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing to do"), "{}", stderr(&o));
    // Killed after two parts: run.json incomplete, later parts missing.
    let mut m = sieve::store::read_manifest(&out).unwrap();
    m.complete = false;
    let parts = std::mem::take(&mut m.parts);
    m.counts = Default::default();
    std::fs::write(out.join("run.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    for p in &parts[2..] {
        std::fs::remove_file(out.join("metadata").join(format!("{p}.parquet"))).unwrap();
    }
    let o = merge();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resumed after 4 records"), "{}", stderr(&o));
    assert_eq!(rows(&out), full);
}

// ---------------------------------------------------------------------------------------------
// Readers fed random and truncated bytes: a clear error, never a panic (proptest).

mod readers {
    use std::path::Path;
    use std::sync::OnceLock;

    use proptest::prelude::*;
    use sieve::ingest::{manifest, InputFormat};

    use crate::util::*;

    fn valid_npy() -> Vec<u8> {
        let mut b = Vec::new();
        sieve::store::npy::write_f16(&mut b, 3, 4, &[half::f16::from_f32(0.5); 12]).unwrap();
        b
    }

    /// A metadata part of a small planted run (also a Parquet manifest: it has `uri`, `caption`).
    fn valid_parquet() -> &'static [u8] {
        static P: OnceLock<Vec<u8>> = OnceLock::new();
        P.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let items: Vec<Planted> = (0..4)
                .map(|i| Planted {
                    image: at(0.5, i + 1, 8),
                    caption: Some(at(0.5, 7 - i, 8)),
                    size: (8, 8),
                    sha: None,
                    phash: Some(i as u64),
                })
                .collect();
            planted_run(dir.path(), &items, "w");
            std::fs::read(dir.path().join("metadata/part-00000.parquet")).unwrap()
        })
    }

    const CSV: &[u8] = b"image,caption\na.jpg,\"a cat\"\nb.jpg,\"x\"\"y\"\nc.jpg,plain\n";
    const JSONL: &[u8] = b"{\"image\": \"a.jpg\", \"caption\": \"a cat\"}\n{\"image\": \"b.jpg\"}\n";

    /// Random bytes, a truncation of `valid`, or `valid` with a few bytes changed.
    fn hostile(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
        let n = valid.len();
        let (v1, v2) = (valid.clone(), valid);
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..1024),
            (0..=n).prop_map(move |cut| v1[..cut].to_vec()),
            prop::collection::vec((0..n, any::<u8>()), 1..12).prop_map(move |edits| {
                let mut b = v2.clone();
                for (i, v) in edits {
                    b[i] = v;
                }
                b
            }),
        ]
    }

    fn file_with(bytes: &[u8], ext: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(format!("f.{ext}"));
        std::fs::write(&p, bytes).unwrap();
        (dir, p)
    }

    /// An error must say which file it is about.
    fn names(e: &sieve::Error, p: &Path) -> bool {
        format!("{e:#}").contains(&p.display().to_string())
    }

    /// A damaged parquet file on which the parquet crate's decoder divides by zero: an error
    /// naming the file, never a panic.
    #[test]
    fn parquet_decoder_panic_is_an_error() {
        use super::stderr;
        use crate::cli::sieve;
        let p = fixtures().join("hostile/parquet-divide-by-zero.parquet");
        let e = sieve::store::read::read_rows(&p).expect_err("damaged");
        let why = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default();
        assert!(names(&e, &p) && why.contains("damaged"), "{e:#}: {why}");
        // As a manifest only the image and caption columns are decoded: a list, or an error naming it.
        if let Err(e) = manifest::scan(&p, InputFormat::Parquet, None, None) {
            assert!(names(&e, &p), "{e:#}");
        }
        let dir = tempfile::tempdir().unwrap();
        let o = sieve()
            .args(["embed", "-q", "--device", "cpu", "--input-format", "parquet", "--model"])
            .arg(tiny_model_dir())
            .arg(&p)
            .arg("--out")
            .arg(dir.path().join("run"))
            .output()
            .unwrap();
        assert!(matches!(o.status.code(), Some(0..=2)), "exit {:?}: {}", o.status.code(), stderr(&o));
    }

    proptest! {
        // A fixed seed: tests are deterministic (a random one found the parquet crate's division by
        // zero once; that file is now a fixture, checked below on every run).
        #![proptest_config(ProptestConfig {
            cases: 200,
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(20261202),
            ..ProptestConfig::default()
        })]

        #[test]
        fn npy_reader(bytes in hostile(valid_npy())) {
            let (_d, p) = file_with(&bytes, "npy");
            match sieve::store::npy::read_f16(&p) {
                Ok((r, c, v)) => prop_assert_eq!(v.len(), r * c),
                Err(e) => prop_assert!(names(&e, &p), "{e}"),
            }
            if let Err(e) = sieve::store::npy::read_shape(&p) {
                prop_assert!(names(&e, &p), "{e}");
            }
        }

        #[test]
        fn parquet_reader(bytes in hostile(valid_parquet().to_vec())) {
            let (_d, p) = file_with(&bytes, "parquet");
            if let Err(e) = sieve::store::read::read_rows(&p) {
                prop_assert!(names(&e, &p), "{e}");
            }
            let _ = manifest::scan(&p, InputFormat::Parquet, None, None);
        }

        #[test]
        fn manifest_reader(bytes in hostile(CSV.to_vec()), jsonl in hostile(JSONL.to_vec())) {
            for (b, ext, format) in [
                (&bytes, "csv", InputFormat::Csv),
                (&bytes, "tsv", InputFormat::Tsv),
                (&jsonl, "jsonl", InputFormat::Jsonl),
            ] {
                let (_d, p) = file_with(b, ext);
                match manifest::scan(&p, format, None, None) {
                    // Ids are positions; every bad row is listed with its line.
                    Ok(m) => {
                        prop_assert!(m.records.iter().enumerate().all(|(i, r)| r.id == i as u64));
                        prop_assert!(m.records.iter().filter_map(|r| r.skip.as_ref()).all(|s| s.reason.code() != "bad-manifest-line" || s.detail.contains("line")));
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        prop_assert!(!msg.is_empty());
                    }
                }
            }
        }
    }
}
