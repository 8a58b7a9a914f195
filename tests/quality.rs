//! Quality signals end to end: generated images and captions whose answers are known go through
//! `sieve embed`, `sieve quality` and `sieve select --drop-flags`.

use std::collections::BTreeMap;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::Array;
use image::{Rgb, RgbImage};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::cli::sieve;
use crate::util::*;

/// One row of quality.parquet: the signals as floats (None where null) and the raised flags.
#[derive(Debug)]
struct QRow {
    signals: BTreeMap<String, Option<f32>>,
    flags: Vec<String>,
    boilerplate: Option<String>,
}

fn file_name(uri: &str) -> String {
    Path::new(uri).file_name().unwrap().to_string_lossy().into_owned()
}

fn read_quality(run: &Path) -> BTreeMap<String, QRow> {
    let file = std::fs::File::open(run.join("quality.parquet")).unwrap();
    let mut out = BTreeMap::new();
    for batch in ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap() {
        let batch = batch.unwrap();
        let uri = batch.column_by_name("uri").unwrap().as_string::<i32>().clone();
        let flags = batch.column_by_name("flags").unwrap().as_string::<i32>().clone();
        let boiler = batch.column_by_name("caption_boilerplate").unwrap().as_string::<i32>().clone();
        for i in 0..batch.num_rows() {
            let mut signals = BTreeMap::new();
            for f in batch.schema().fields() {
                if f.data_type() == &arrow_schema::DataType::Float32 {
                    let c = batch.column_by_name(f.name()).unwrap().as_primitive::<Float32Type>();
                    signals.insert(f.name().clone(), c.is_valid(i).then(|| c.value(i)));
                }
            }
            let row = QRow {
                signals,
                flags: if flags.is_valid(i) {
                    flags.value(i).split(',').map(str::to_string).collect()
                } else {
                    Vec::new()
                },
                boilerplate: boiler.is_valid(i).then(|| boiler.value(i).to_string()),
            };
            out.insert(file_name(uri.value(i)), row);
        }
    }
    out
}

fn checkerboard() -> RgbImage {
    // Red and blue squares, with a green ramp so the histogram has many levels.
    RgbImage::from_fn(512, 512, |x, y| {
        let g = ((x + y) / 4) as u8;
        if (x / 32 + y / 32) % 2 == 0 {
            Rgb([250, g, 20])
        } else {
            Rgb([10, g, 240])
        }
    })
}

/// Writes the known-answer corpus: image files and their caption sidecars.
fn write_corpus(dir: &Path) {
    let long_caption = (0..500).map(|i| format!("word{}", i % 37)).collect::<Vec<_>>().join(" ");
    let sharp = checkerboard();
    let blurred = image::imageops::blur(&sharp, 16.0);
    let strip = RgbImage::from_fn(1, 400, |_, y| Rgb([(y % 256) as u8, 200, 50]));
    let items: Vec<(&str, RgbImage, Option<&str>)> = vec![
        ("checker.png", sharp, Some("a red and blue checkerboard pattern")),
        ("checker_blur.png", blurred, Some("")),
        ("black.png", RgbImage::new(300, 200), Some("IMG_0001.JPG")),
        ("grey.png", RgbImage::from_pixel(256, 256, Rgb([128, 128, 128])), Some("https://x.y/z.jpg")),
        ("strip.png", strip, Some(long_caption.as_str())),
    ];
    for (name, img, caption) in items {
        img.save(dir.join(name)).unwrap();
        if let Some(c) = caption {
            std::fs::write(dir.join(name).with_extension("txt"), c).unwrap();
        }
    }
    // A three-frame animated GIF, no caption.
    let file = std::fs::File::create(dir.join("anim.gif")).unwrap();
    let mut enc = image::codecs::gif::GifEncoder::new(file);
    for v in [30u8, 120, 220] {
        let frame = image::RgbaImage::from_fn(96, 80, |x, y| {
            let s = if (x / 8 + y / 8) % 2 == 0 { v } else { 255 - v };
            image::Rgba([s, (x * 2) as u8, 255 - s, 255])
        });
        enc.encode_frame(image::Frame::new(frame)).unwrap();
    }
}

fn embed_corpus(root: &Path) -> std::path::PathBuf {
    let input = root.join("in");
    std::fs::create_dir_all(&input).unwrap();
    write_corpus(&input);
    let run = root.join("run");
    let out = sieve()
        .args(["embed", input.to_str().unwrap(), "--out", run.to_str().unwrap()])
        .args(["--model", tiny_model_dir().to_str().unwrap(), "--device", "cpu", "--batch-size", "4"])
        .output()
        .unwrap();
    assert!(out.status.success(), "embed failed: {}", String::from_utf8_lossy(&out.stderr));
    run
}

fn has(row: &QRow, flag: &str) -> bool {
    row.flags.iter().any(|f| f == flag)
}

#[test]
fn known_images_and_captions_get_their_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let run = embed_corpus(tmp.path());
    let out = sieve().args(["quality", run.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "quality failed: {}", String::from_utf8_lossy(&out.stderr));
    let q = read_quality(&run);
    assert_eq!(q.len(), 6, "{q:#?}");
    let sig = |uri: &str, s: &str| q[uri].signals[s];

    // Blur: the sharp checkerboard's Laplacian variance is far above its heavy blur's.
    let (sharp, blurred) = (sig("checker.png", "blur").unwrap(), sig("checker_blur.png", "blur").unwrap());
    assert!(sharp > 10.0 * blurred, "sharp {sharp} vs blurred {blurred}");
    assert!(!has(&q["checker.png"], "blur") && has(&q["checker_blur.png"], "blur"), "{q:#?}");
    assert!(
        q["checker.png"].flags.is_empty(),
        "the sharp checkerboard with a good caption: {:?}",
        q["checker.png"].flags
    );

    // A black frame in an RGB file: dark, no information, no contrast, no colour.
    let black = &q["black.png"];
    assert_eq!(sig("black.png", "brightness"), Some(0.0));
    assert_eq!(sig("black.png", "entropy"), Some(0.0));
    for f in ["dark", "low_information", "low_contrast", "grayscale", "boilerplate"] {
        assert!(has(black, f), "black.png lacks {f}: {:?}", black.flags);
    }
    assert!(!has(black, "bright"));
    assert_eq!(black.boilerplate.as_deref(), Some("camera-default"));

    // A uniform grey: no information and no colour, but neither dark nor bright.
    let grey = &q["grey.png"];
    assert!((sig("grey.png", "brightness").unwrap() - 128.0).abs() < 0.5);
    for f in ["low_information", "low_contrast", "grayscale", "blur", "boilerplate"] {
        assert!(has(grey, f), "grey.png lacks {f}: {:?}", grey.flags);
    }
    assert!(!has(grey, "dark") && !has(grey, "bright"));
    assert_eq!(grey.boilerplate.as_deref(), Some("url"));

    // A 1×400 strip: tiny and odd, blur undefined (null, not flagged); its 500-word caption
    // is truncated.
    let strip = &q["strip.png"];
    assert_eq!(sig("strip.png", "aspect"), Some(400.0));
    assert_eq!(sig("strip.png", "min_side"), Some(1.0));
    assert_eq!(sig("strip.png", "blur"), None);
    for f in ["tiny", "odd_aspect", "truncated"] {
        assert!(has(strip, f), "strip.png lacks {f}: {:?}", strip.flags);
    }
    assert!(!has(strip, "blur") && !has(strip, "grayscale"));
    assert!(sig("strip.png", "caption_tokens").unwrap() > 500.0, "{:?}", sig("strip.png", "caption_tokens"));

    // The empty caption and the missing one.
    assert!(has(&q["checker_blur.png"], "empty_caption"));
    assert!(!has(&q["checker_blur.png"], "short_caption"));
    let anim = &q["anim.gif"];
    assert!(has(anim, "animated") && has(anim, "no_caption"), "{:?}", anim.flags);
    assert_eq!(sig("anim.gif", "frames"), Some(3.0));

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("quality_summary.json")).unwrap()).unwrap();
    let count = |name: &str| {
        summary["flags"].as_array().unwrap().iter().find(|f| f["name"] == name).unwrap()["count"].as_u64().unwrap()
    };
    // Flat images read as blurry too (low_information tells them apart).
    assert_eq!(count("blur"), 3); // the blurred checkerboard, the black frame, the uniform grey
    assert_eq!(count("dark"), 1);
    assert_eq!(count("boilerplate"), 2);
    assert_eq!(summary["boilerplate"]["url"], 1);
    assert_eq!(summary["scripts"]["Latin"], 4); // all but the empty caption
    assert_eq!(summary["scripts"]["none"], 1);

    // Relative thresholds: the 1-in-6 most extreme per flag, whatever the values.
    let out = sieve().args(["quality", run.to_str().unwrap(), "--percentile", "brightness=50"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "brightness is a signal, not a flag");
    let out = sieve()
        .args(["quality", run.to_str().unwrap(), "--threshold", "dark=200", "--percentile", "blur=0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let q2 = read_quality(&run);
    assert!(q2.values().all(|r| !has(r, "blur")), "blur=0% flags nothing");
    assert!(has(&q2["grey.png"], "dark"), "dark under 200 includes the grey");
}

#[test]
fn select_drops_the_flags_it_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    let run = embed_corpus(tmp.path());
    let select = |extra: &[&str]| {
        sieve()
            .args(["select", run.to_str().unwrap(), "--budget", "100", "--device", "cpu"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = select(&["--drop-flags", "blur,dark"]);
    assert!(!out.status.success(), "needs quality.parquet first");
    assert!(String::from_utf8_lossy(&out.stderr).contains("sieve quality"));
    assert!(sieve().args(["quality", run.to_str().unwrap()]).status().unwrap().success());
    let out = select(&["--drop-flags", "blurry"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown flag `blurry`"));
    let out = select(&["--drop-flags", "blur,dark"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let keep = std::fs::read_to_string(run.join("selection/keep.txt")).unwrap();
    let keep: Vec<String> = keep.lines().map(file_name).collect();
    assert_eq!(keep, ["anim.gif", "checker.png", "strip.png"]);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("selection/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["dropped_quality"], 3);
}

#[test]
fn runs_without_signals_still_open() {
    // A run written before the signals existed: the planted run has none of them.
    let tmp = tempfile::tempdir().unwrap();
    let dim = 8;
    let items: Vec<Planted> = (0..4)
        .map(|i| Planted {
            image: near(i, 1.0, (i + 1) % dim, dim),
            caption: Some(near(i, 1.0, (i + 1) % dim, dim)),
            size: (640, 480),
            sha: None,
            phash: None,
        })
        .collect();
    planted_run(tmp.path(), &items, "w");
    let s = sieve::analyze::quality::quality(&sieve::analyze::quality::QualityOptions::new(tmp.path())).unwrap();
    assert_eq!(s.with_image_signals, 0);
    assert_eq!(s.flags.iter().find(|f| f.name == "blur").unwrap().measured, 0);
    assert_eq!(s.flags.iter().find(|f| f.name == "tiny").unwrap().measured, 4);
    assert_eq!(s.flagged, 0);
}

#[test]
fn bench_decode_times_with_and_without_signals() {
    let tmp = tempfile::tempdir().unwrap();
    write_corpus(tmp.path());
    let out = sieve()
        .args(["bench", "--decode", tmp.path().to_str().unwrap(), "--model", tiny_model_dir().to_str().unwrap()])
        .args(["--batch-size", "2", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["records"], 6);
    assert!(r["images_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["images_per_s_without_signals"].as_f64().unwrap() > 0.0);
    assert!(r["signals_ratio"].as_f64().unwrap() > 0.0);
}

#[test]
fn frames_are_counted_from_the_container() {
    use image::ImageFormat;
    use sieve::media::decode::frame_count;
    // APNG: acTL (num_frames = 4) before IDAT.
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in
        [(&b"IHDR"[..], vec![0u8; 13]), (b"acTL", [4u32.to_be_bytes(), 0u32.to_be_bytes()].concat()), (b"IDAT", vec![])]
    {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(kind);
        png.extend_from_slice(&data);
        png.extend_from_slice(&[0; 4]);
    }
    assert_eq!(frame_count(ImageFormat::Png, &png), 4);
    assert_eq!(frame_count(ImageFormat::Png, &png[..33]), 1, "a still PNG (IHDR only)");
    // Animated WebP: VP8X with the animation bit, then two ANMF chunks (one of odd size, padded).
    let mut webp = b"RIFF\0\0\0\0WEBP".to_vec();
    for (kind, len) in [(&b"VP8X"[..], 10usize), (b"ANIM", 6), (b"ANMF", 17), (b"ANMF", 20)] {
        webp.extend_from_slice(kind);
        webp.extend_from_slice(&(len as u32).to_le_bytes());
        let mut data = vec![0u8; len + (len & 1)];
        if kind == b"VP8X" {
            data[0] = 0x02;
        }
        webp.extend_from_slice(&data);
    }
    assert_eq!(frame_count(ImageFormat::WebP, &webp), 2);
    webp[20] = 0; // animation bit off
    assert_eq!(frame_count(ImageFormat::WebP, &webp), 1);
    assert_eq!(frame_count(ImageFormat::Jpeg, b"\xff\xd8"), 1);
}
