//! `sieve search`: the exact nearest items of a run to a text, a picture or a record, by the run's
//! own model, checked against a scan of the stored embeddings.

use std::path::Path;
use std::process::Output;

use sieve::store::Run;

use crate::cmd::*;
use crate::util::*;

fn sieve(args: &[&str]) -> Output {
    sieve_out(args)
}

fn json(o: &Output) -> serde_json::Value {
    stdout_json(o)
}

/// A run of the fixture pictures, each with a caption of its own, and one file that is no picture
/// (also used by classify.rs).
pub fn captioned_run(root: &Path) -> std::path::PathBuf {
    let pics = root.join("pics");
    std::fs::create_dir_all(&pics).unwrap();
    for (i, f) in ["photo.jpg", "tall.jpg", "wide.png", "tiny.png", "palette.png", "gray.png"].iter().enumerate() {
        std::fs::copy(fixtures().join("images").join(f), pics.join(f)).unwrap();
        let stem = Path::new(f).file_stem().unwrap().to_str().unwrap();
        std::fs::write(pics.join(format!("{stem}.txt")), format!("caption number {i} of {stem}")).unwrap();
    }
    std::fs::write(pics.join("broken.jpg"), b"not a picture").unwrap();
    embedded(&pics, &root.join("run"))
}

/// The run of `input` in `run`, made with the tiny model.
fn embedded(input: &Path, run: &Path) -> std::path::PathBuf {
    embed_with(input, run, &tiny_model_dir())
}

#[test]
fn every_picture_finds_itself_first_and_the_order_is_the_exact_scan() {
    let dir = tempfile::tempdir().unwrap();
    let run = captioned_run(dir.path());
    let r = run.to_str().unwrap();
    let opened = Run::open(&run).unwrap();
    let d = opened.manifest.embed_dim;
    let images = opened.embeddings(false).unwrap();
    let model = tiny_model_dir();
    for (g, uri) in opened.meta.uri.iter().enumerate() {
        if !opened.meta.embedded[g] {
            continue;
        }
        let id = opened.meta.id[g].to_string();
        let by_image = json(&sieve(&["search", r, "--image", uri, "--top", "3", "--device", "cpu", "--json"]));
        let by_id = json(&sieve(&["search", r, "--id", &id, "--top", "100", "--json"]));
        let first = &by_image["hits"][0];
        assert_eq!(first["uri"], uri.as_str(), "{uri} finds itself first");
        assert!(first["similarity"].as_f64().unwrap() > 0.999, "{first}");
        // --id ranks every embedded image by its stored embedding: the exact scan's order.
        let q = &images[g * d..(g + 1) * d];
        let mut want: Vec<(f32, u64)> = (0..opened.meta.len())
            .filter(|&h| opened.meta.embedded[h])
            .map(|h| (images[h * d..(h + 1) * d].iter().zip(q).map(|(a, b)| a * b).sum(), opened.meta.id[h]))
            .collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let got: Vec<u64> = by_id["hits"].as_array().unwrap().iter().map(|h| h["id"].as_u64().unwrap()).collect();
        assert_eq!(got, want.iter().map(|w| w.1).collect::<Vec<_>>(), "query {uri}");
        assert_eq!(by_id["searched"], 6, "the skipped file is not searched");
    }
    // A caption, as text, finds its own record first among the captions.
    let text = json(&sieve(&[
        "search",
        r,
        "--text",
        "caption number 2 of wide",
        "--space",
        "caption",
        "--top",
        "1",
        "--device",
        "cpu",
        "--json",
        "--model",
        model.to_str().unwrap(),
    ]));
    assert!(text["hits"][0]["uri"].as_str().unwrap().ends_with("wide.png"), "{text}");
    assert!(text["hits"][0]["similarity"].as_f64().unwrap() > 0.999);
}

#[test]
fn queries_that_cannot_be_answered_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = captioned_run(dir.path());
    let r = run.to_str().unwrap();
    let skipped = Run::open(&run).unwrap();
    let broken = skipped.meta.uri.iter().position(|u| u.ends_with("broken.jpg")).unwrap();
    let broken_id = skipped.meta.id[broken].to_string();
    let other = root_model("tiny-siglip");
    for (args, says) in [
        (vec!["--id", "12345"], "no record 12345"),
        (vec!["--id", broken_id.as_str()], "was skipped"),
        (vec!["--id", "0", "--top", "0"], "at least 1"),
        (vec!["--image", "no-such-file.jpg", "--device", "cpu"], "no-such-file.jpg"),
        (vec!["--text", "a cat", "--device", "cpu", "--model", other.as_str()], "other weights"),
    ] {
        let mut all = vec!["search", r];
        all.extend(args.iter().copied());
        let o = sieve(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

fn root_model(name: &str) -> String {
    root().join("models").join(name).display().to_string()
}

#[test]
fn by_a_column_lists_the_top_of_each_group_and_html_shows_each_hit() {
    let dir = tempfile::tempdir().unwrap();
    let run = embedded(&root().join("demo"), &dir.path().join("run"));
    let (r, page) = (run.to_str().unwrap(), dir.path().join("hits.html"));
    let overall = json(&sieve(&["search", r, "--id", "3", "--top", "100", "--json"]));
    let by = json(&sieve(&[
        "search",
        r,
        "--id",
        "3",
        "--top",
        "2",
        "--by",
        "folder",
        "--json",
        "--html",
        page.to_str().unwrap(),
    ]));
    let hits = by["hits"].as_array().unwrap();
    let folder = |h: &serde_json::Value| Path::new(h["uri"].as_str().unwrap()).parent().unwrap().display().to_string();
    let groups: std::collections::BTreeSet<String> = hits.iter().map(folder).collect();
    assert_eq!(groups.len(), 5, "demo's five folders");
    assert_eq!(hits.len(), 10);
    for g in &groups {
        // Each group's two are the first two of that folder in the overall ranking.
        let want: Vec<&serde_json::Value> =
            overall["hits"].as_array().unwrap().iter().filter(|h| &folder(h) == g).take(2).map(|h| &h["id"]).collect();
        let got: Vec<&serde_json::Value> = hits.iter().filter(|h| h["group"] == g.as_str()).map(|h| &h["id"]).collect();
        assert_eq!(got, want, "{g}");
        assert_eq!(
            hits.iter().filter(|h| h["group"] == g.as_str()).map(|h| h["rank"].as_u64().unwrap()).collect::<Vec<_>>(),
            [1, 2]
        );
    }
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(html.matches("src=\"data:image/jpeg;base64,").count(), 10, "a thumbnail per hit");
    assert!(html.contains("Content-Security-Policy"));
}

#[test]
fn many_queries_in_one_pass_answer_as_each_alone() {
    let dir = tempfile::tempdir().unwrap();
    let run = captioned_run(dir.path());
    let r = run.to_str().unwrap();
    let texts = ["caption number 2 of wide", "a photo", "gray", "a tall picture of something"];
    let file = dir.path().join("queries.txt");
    std::fs::write(&file, format!("{}\n\n  {}  \n{}\n{}\n", texts[0], texts[1], texts[2], texts[3])).unwrap();
    for space in ["image", "caption"] {
        let all =
            json(&sieve(&["search", r, "--queries", file.to_str().unwrap(), "--top", "4", "--space", space, "--json"]));
        let all = all.as_array().unwrap();
        assert_eq!(all.len(), 4, "blank lines skipped, lines trimmed");
        for (text, many) in texts.iter().zip(all) {
            let one = json(&sieve(&["search", r, "--text", text, "--top", "4", "--space", space, "--json"]));
            assert_eq!(many["query"], one["query"]);
            assert_eq!(many["searched"], one["searched"]);
            let (a, b) = (many["hits"].as_array().unwrap(), one["hits"].as_array().unwrap());
            assert_eq!(a.len(), 4);
            let ids = |h: &[serde_json::Value]| h.iter().map(|x| x["id"].as_u64().unwrap()).collect::<Vec<_>>();
            assert_eq!(ids(a), ids(b), "{space} {text}: {many} vs {one}");
            for (x, y) in a.iter().zip(b) {
                let (x, y) = (x["similarity"].as_f64().unwrap(), y["similarity"].as_f64().unwrap());
                assert!((x - y).abs() < 1e-4, "{space} {text}: {x} vs {y}");
            }
        }
    }
    // The table names each query's number.
    let o = sieve(&["search", r, "--queries", file.to_str().unwrap(), "--top", "1"]);
    let table = String::from_utf8(o.stdout).unwrap();
    assert_eq!(table.lines().count(), 5, "{table}");
    assert!(table.lines().nth(4).unwrap().starts_with("4  "), "{table}");

    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n  \n").unwrap();
    for args in [
        vec!["--queries", empty.to_str().unwrap()],
        vec!["--queries", file.to_str().unwrap(), "--by", "folder"],
        vec!["--queries", file.to_str().unwrap(), "--html", "x.html"],
        vec!["--queries", dir.path().to_str().unwrap()],
    ] {
        let mut all = vec!["search", r];
        all.extend(&args);
        let o = sieve(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
