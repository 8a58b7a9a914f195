//! `sieve run`: the main job in one command writes what the stage commands write one by one,
//! (report.html included) resumes by skipping finished stages, reruns a stage whose options changed (and the stages
//! after it), and prints a machine-readable summary with `--json`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::*;

fn sieve() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sieve"));
    c.env_remove("RUST_LOG").env_remove("SIEVE_MODEL");
    c
}

/// The fixture images with captions, a byte-identical copy (an exact duplicate) and a file that
/// is not an image.
fn corpus(dir: &Path) -> PathBuf {
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    for entry in std::fs::read_dir(fixtures().join("images")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::copy(&p, input.join(&name)).unwrap();
        std::fs::write(input.join(format!("{}.txt", stem(&name))), format!("a picture called {name}")).unwrap();
    }
    std::fs::copy(input.join("photo.jpg"), input.join("photo_copy.jpg")).unwrap();
    std::fs::write(input.join("notes.png"), b"not an image at all").unwrap();
    input
}

fn run_cmd(input: &Path, out: &Path, extra: &[&str]) -> Output {
    let out = sieve()
        .args(["run", "-q", "--json", "--model"])
        .arg(tiny_model_dir())
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(["--batch-size", "4"])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "sieve run failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn json(out: &Output) -> Value {
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(stdout.lines().count(), 1, "--json prints one line: {stdout}");
    serde_json::from_str(&stdout).unwrap()
}

fn statuses(v: &Value) -> Vec<(String, String)> {
    STAGES.iter().map(|s| (s.to_string(), v[s]["status"].as_str().unwrap_or("?").to_string())).collect()
}

const STAGES: [&str; 6] = ["embed", "dedup", "score", "quality", "diversity", "report"];

fn expect(v: &Value, want: [&str; 6]) {
    let got = statuses(v);
    let want: Vec<(String, String)> = STAGES.iter().zip(want).map(|(s, w)| (s.to_string(), w.to_string())).collect();
    assert_eq!(got, want);
}

/// Every file the stages write, relative to the run, with its bytes (JSON summaries without
/// their `run` field, the run directory's path).
fn outputs(run: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for rel in [
        "metadata/part-00000.parquet",
        "img_emb/part-00000.npy",
        "text_emb/part-00000.npy",
        "dedup/groups.parquet",
        "dedup/keep.txt",
        "dedup/remove.txt",
        "dedup/summary.json",
        "pairs.parquet",
        "pairs_summary.json",
        "quality.parquet",
        "quality_summary.json",
        "diversity.json",
        "report.html",
    ] {
        let mut bytes = std::fs::read(run.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        if rel.ends_with(".json") {
            let mut v: Value = serde_json::from_slice(&bytes).unwrap();
            if let Some(o) = v.as_object_mut() {
                o.remove("run");
            }
            bytes = serde_json::to_vec(&v).unwrap();
        }
        if rel.ends_with(".html") {
            // The page names its run directory.
            let page = String::from_utf8(bytes).unwrap();
            bytes = page.replace(&*run.to_string_lossy(), "RUN").into_bytes();
        }
        files.push((rel.to_string(), bytes));
    }
    files
}

fn stage_cmd(args: &[&str], run: &Path) {
    let out = sieve().args(args).arg(run).arg("-q").output().unwrap();
    assert!(out.status.success(), "sieve {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn run_writes_what_the_stage_commands_write_and_prints_a_json_summary() {
    let dir = tempfile::tempdir().unwrap();
    let input = corpus(dir.path());
    let run = dir.path().join("run");
    let out = run_cmd(&input, &run, &[]);
    let v = json(&out);
    expect(&v, ["ran", "ran", "ran", "ran", "ran", "ran"]);
    let counts = &v["embed"]["manifest"]["counts"];
    assert_eq!(counts["records"], 10);
    assert_eq!(counts["embedded"], 9);
    assert_eq!(counts["skipped_by_reason"]["not-an-image"], 1, "{counts}");
    assert_eq!(v["dedup"]["summary"]["kinds"]["exact"]["duplicates"], 1, "{}", v["dedup"]);
    assert_eq!(v["score"]["summary"]["pairs"], 8, "photo_copy.jpg has no caption");
    assert_eq!(v["diversity"]["summary"]["embedded"], 9);
    let report = &v["report"]["summary"];
    assert_eq!(report["path"].as_str().map(PathBuf::from), Some(run.join("report.html")), "{report}");
    assert!(report["thumbnails"].as_u64().unwrap() >= 9, "{report}");
    let missing: Vec<&Value> = report["sections"].as_array().unwrap().iter().filter(|s| s["present"] != true).collect();
    assert!(missing.is_empty(), "every stage ran, so every section has its data: {missing:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in ["sieve embed", "sieve dedup:", "sieve score:", "sieve quality:", "sieve diversity:", "sieve report:"] {
        assert!(stderr.contains(line), "no {line:?} in {stderr}");
    }

    // The same stages as separate commands write the same bytes.
    // (In a folder of the same name: the page's title is the run folder's name.)
    let sep = dir.path().join("separate").join("run");
    let e = sieve()
        .args(["embed", "-q", "--model"])
        .arg(tiny_model_dir())
        .arg(&input)
        .arg("--out")
        .arg(&sep)
        .args(["--batch-size", "4"])
        .output()
        .unwrap();
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    for stage in [&["dedup"][..], &["score"], &["quality"], &["diversity"], &["report"]] {
        stage_cmd(stage, &sep);
    }
    let (a, b) = (outputs(&run), outputs(&sep));
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name} differs between `sieve run` and the stage commands");
    }
}

#[test]
fn rerunning_skips_finished_stages_and_reruns_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let input = corpus(dir.path());
    let run = dir.path().join("run");
    run_cmd(&input, &run, &[]);
    let first = outputs(&run);

    // The same command again: nothing to do, nothing rewritten.
    let v = json(&run_cmd(&input, &run, &[]));
    expect(&v, ["done", "done", "done", "done", "done", "done"]);
    assert_eq!(outputs(&run), first);

    // Another score threshold: dedup stays, score and every later stage run again.
    let v = json(&run_cmd(&input, &run, &["--min-score", "0.5"]));
    expect(&v, ["done", "done", "ran", "ran", "ran", "ran"]);
    assert_eq!(v["score"]["summary"]["low_score"], 8, "every tiny-model pair is under 0.5: {}", v["score"]);

    // A deleted output is made again, and only from that stage on.
    std::fs::remove_file(run.join("diversity.json")).unwrap();
    let v = json(&run_cmd(&input, &run, &["--min-score", "0.5"]));
    expect(&v, ["done", "done", "done", "done", "ran", "ran"]);
    std::fs::remove_file(run.join("report.html")).unwrap();
    let v = json(&run_cmd(&input, &run, &["--min-score", "0.5"]));
    expect(&v, ["done", "done", "done", "done", "done", "ran"]);

    // An output edited by hand (or by the stage's own command with other options) is not
    // trusted.
    std::fs::write(run.join("dedup/summary.json"), b"{}").unwrap();
    let v = json(&run_cmd(&input, &run, &["--min-score", "0.5"]));
    expect(&v, ["done", "ran", "ran", "ran", "ran", "ran"]);

    // Left-out stages are reported as such; an unreadable record file means everything reruns.
    std::fs::write(run.join("stages.json"), b"not json").unwrap();
    let v = json(&run_cmd(&input, &run, &["--skip", "dedup,diversity"]));
    expect(&v, ["done", "skipped", "ran", "ran", "skipped", "ran"]);
    assert!(v["dedup"].get("summary").is_none());

    // Without the report stage no page is written.
    let bare = dir.path().join("bare");
    let v = json(&run_cmd(&input, &bare, &["--skip", "report"]));
    expect(&v, ["ran", "ran", "ran", "ran", "ran", "skipped"]);
    assert!(!bare.join("report.html").exists());
}

#[test]
fn run_checks_every_stage_argument_before_embedding() {
    let dir = tempfile::tempdir().unwrap();
    let input = corpus(dir.path());
    for (args, what) in [
        (vec!["--skip", "dedup,typo"], "--skip"),
        (vec!["--keep", "newest"], "keep"),
        (vec!["--min-score", "30"], "--min-score"),
        (vec!["--index", "faiss"], "faiss"),
    ] {
        let run = dir.path().join("bad");
        let out = sieve()
            .args(["run", "-q", "--model"])
            .arg(tiny_model_dir())
            .arg(&input)
            .arg("--out")
            .arg(&run)
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(what), "{args:?}: {stderr}");
        assert!(!run.exists(), "{args:?}: nothing may be written before the arguments are checked");
    }
}

#[test]
fn a_run_without_captions_goes_through_every_index() {
    // The caption kinds then have no vectors; clustered and graph search must not choke on that.
    let dir = tempfile::tempdir().unwrap();
    for index in ["exact", "clusters", "hnsw"] {
        let run = dir.path().join(index);
        let v = json(&run_cmd(&fixtures().join("images"), &run, &["--index", index]));
        expect(&v, ["ran", "ran", "ran", "ran", "ran", "ran"]);
        assert_eq!(v["score"]["summary"]["pairs"], 0);
        assert_eq!(v["dedup"]["summary"]["embedded"], 8, "{index}");
    }
}
