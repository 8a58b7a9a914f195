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
    // Radius 8 on 512 px: heavy (1.6% of the side), but not so heavy that nothing is left to
    // judge; a blur that leaves a flat smudge reads like a smooth gradient (low_contrast says).
    let blurred = image::imageops::blur(&sharp, 8.0);
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

    // Blur: the sharp checkerboard keeps its fine detail, its heavy blur loses it.
    let (sharp, blurred) = (sig("checker.png", "sharpness").unwrap(), sig("checker_blur.png", "sharpness").unwrap());
    assert!(sharp > 3.0 * blurred, "sharp {sharp} vs blurred {blurred}");
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

    // A uniform grey: no information and no colour, but neither dark nor bright, and not
    // blurry either (nothing to be sharp about: low_information says what is wrong).
    let grey = &q["grey.png"];
    assert!((sig("grey.png", "brightness").unwrap() - 128.0).abs() < 0.5);
    for f in ["low_information", "low_contrast", "grayscale", "boilerplate"] {
        assert!(has(grey, f), "grey.png lacks {f}: {:?}", grey.flags);
    }
    assert!(!has(grey, "dark") && !has(grey, "bright") && !has(grey, "blur"));
    assert_eq!(grey.boilerplate.as_deref(), Some("url"));

    // A 1×400 strip: tiny and odd, blur undefined (null, not flagged); its 500-word caption
    // is truncated.
    let strip = &q["strip.png"];
    assert_eq!(sig("strip.png", "aspect"), Some(400.0));
    assert_eq!(sig("strip.png", "min_side"), Some(1.0));
    assert_eq!(sig("strip.png", "blur"), None);
    assert_eq!(sig("strip.png", "sharpness"), None);
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
    // Only the blurred checkerboard: flat frames are not blurry (low_information flags them).
    assert_eq!(count("blur"), 1);
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
    // The run has captions, so the GIF without one is a caption problem.
    assert!(summary["flagged_caption"].as_u64().unwrap() >= 1);
}

/// A deterministic "dead leaves" picture (overlapping discs of power-law sizes and random
/// colours: a standard model of natural images' scale-invariant detail), `w × h`.
fn dead_leaves(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) as f64) / (1u64 << 31) as f64
    };
    let mut img = RgbImage::from_pixel(w, h, Rgb([90, 120, 150]));
    let scale = w.max(h) as f64 / 1024.0;
    for _ in 0..1500 {
        let (cx, cy) = (next() * w as f64, next() * h as f64);
        let r = (3.0 + 150.0 * next().powi(3)) * scale;
        let c = Rgb([(30.0 + 200.0 * next()) as u8, (30.0 + 200.0 * next()) as u8, (30.0 + 200.0 * next()) as u8]);
        let (x0, x1) = ((cx - r).max(0.0) as u32, ((cx + r) as u32).min(w - 1));
        let (y0, y1) = ((cy - r).max(0.0) as u32, ((cy + r) as u32).min(h - 1));
        for y in y0..=y1 {
            for x in x0..=x1 {
                if (x as f64 - cx).powi(2) + (y as f64 - cy).powi(2) <= r * r {
                    img.put_pixel(x, y, c);
                }
            }
        }
    }
    img
}

fn scaled(img: &RgbImage, k: f32) -> RgbImage {
    let mut out = img.clone();
    out.pixels_mut().for_each(|p| p.0 = p.0.map(|v| (v as f32 * k).round().min(255.0) as u8));
    out
}

/// A bird (a brown body, orange beak, dark eye) on a white background, `size` px square.
fn bird_on_white(size: u32) -> RgbImage {
    let s = size as f32;
    RgbImage::from_fn(size, size, |x, y| {
        let (x, y) = (x as f32 / s, y as f32 / s);
        let body = ((x - 0.5) / 0.22).powi(2) + ((y - 0.55) / 0.15).powi(2) <= 1.0;
        let head = (x - 0.68).powi(2) + (y - 0.38).powi(2) <= 0.09f32.powi(2);
        let eye = (x - 0.7).powi(2) + (y - 0.36).powi(2) <= 0.015f32.powi(2);
        let beak = x > 0.76 && x < 0.84 && (y - 0.39).abs() < 0.02;
        if eye {
            Rgb([20, 20, 25])
        } else if beak {
            Rgb([240, 150, 30])
        } else if head || body {
            let shade = (60.0 * (x * 20.0).sin() * (y * 17.0).cos()) as i32;
            Rgb([(140 + shade) as u8, (95 + shade) as u8, (60 + shade / 2) as u8])
        } else {
            Rgb([255, 255, 255])
        }
    })
}

/// Traffic lights at night: three lit discs on a black background.
fn stoplight(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (x, y) = (x as f32 / w as f32, y as f32 / h as f32);
        let lamp = |cy: f32| (x - 0.5).powi(2) + (y - cy).powi(2) <= 0.07f32.powi(2);
        if lamp(0.25) {
            Rgb([255, 40, 30])
        } else if lamp(0.5) {
            Rgb([255, 190, 0])
        } else if lamp(0.75) {
            Rgb([30, 255, 120])
        } else if (x - 0.5).abs() < 0.12 && (0.12..0.88).contains(&y) {
            Rgb([28, 28, 30])
        } else {
            Rgb([0, 0, 0])
        }
    })
}

#[test]
fn flags_match_what_a_person_sees() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let leaves = dead_leaves(1024, 768, 7);
    let big = dead_leaves(2048, 1536, 11);
    leaves.save(input.join("leaves.png")).unwrap();
    save_jpeg(&image::imageops::blur(&leaves, 7.0), &input.join("leaves_blur.jpg"), 92);
    // Blur is judged relative to the picture: the same 0.7% of the long side on a 2048-px one.
    save_jpeg(&big, &input.join("big.jpg"), 92);
    save_jpeg(&image::imageops::blur(&big, 14.0), &input.join("big_blur.jpg"), 92);
    let gradient = RgbImage::from_fn(1024, 768, |x, y| Rgb([(x / 4) as u8, (y / 3) as u8, 160]));
    gradient.save(input.join("gradient.png")).unwrap();
    scaled(&leaves, 0.25).save(input.join("leaves_dark.png")).unwrap();
    scaled(&leaves, 3.0).save(input.join("leaves_bright.png")).unwrap();
    let bird = bird_on_white(400);
    bird.save(input.join("bird.png")).unwrap();
    scaled(&bird, 3.0).save(input.join("bird_bright.png")).unwrap();
    stoplight(300, 600).save(input.join("stoplight.png")).unwrap();
    image::DynamicImage::ImageRgb8(leaves.clone()).into_luma8().save(input.join("grey.png")).unwrap();
    let grey_rgb = image::DynamicImage::ImageLuma8(image::DynamicImage::ImageRgb8(leaves).into_luma8()).into_rgb8();
    save_jpeg(&grey_rgb, &input.join("grey_rgb.jpg"), 92);

    let run = tmp.path().join("run");
    let out = sieve()
        .args(["embed", input.to_str().unwrap(), "--out", run.to_str().unwrap()])
        .args(["--model", tiny_model_dir().to_str().unwrap(), "--device", "cpu"])
        .output()
        .unwrap();
    assert!(out.status.success(), "embed failed: {}", String::from_utf8_lossy(&out.stderr));
    let out = sieve().args(["quality", run.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "quality failed: {}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let q = read_quality(&run);
    let image_flags = |name: &str| -> Vec<&str> {
        q[name]
            .flags
            .iter()
            .map(String::as_str)
            .filter(|f| ["blur", "dark", "bright", "grayscale"].contains(f))
            .collect()
    };
    for (name, want) in [
        ("leaves.png", vec![]),
        ("leaves_blur.jpg", vec!["blur"]),
        ("big.jpg", vec![]),
        ("big_blur.jpg", vec!["blur"]),
        ("gradient.png", vec![]),
        ("leaves_dark.png", vec!["dark"]),
        ("leaves_bright.png", vec!["bright"]),
        ("bird.png", vec![]),
        ("bird_bright.png", vec!["bright"]),
        ("stoplight.png", vec![]),
        ("grey.png", vec!["grayscale"]),
        ("grey_rgb.jpg", vec!["grayscale"]),
    ] {
        assert_eq!(image_flags(name), want, "{name}: {:?}", q[name].signals);
    }
    // Why each grey one is grey.
    let file = std::fs::File::open(run.join("quality.parquet")).unwrap();
    let mut reasons = BTreeMap::new();
    for batch in ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap() {
        let batch = batch.unwrap();
        let uri = batch.column_by_name("uri").unwrap().as_string::<i32>().clone();
        let reason = batch.column_by_name("grayscale_reason").unwrap().as_string::<i32>().clone();
        for i in 0..batch.num_rows() {
            reasons.insert(file_name(uri.value(i)), reason.is_valid(i).then(|| reason.value(i).to_string()));
        }
    }
    assert_eq!(reasons["grey.png"].as_deref(), Some("stored-grey"));
    assert_eq!(reasons["grey_rgb.jpg"].as_deref(), Some("grey-content"));
    assert_eq!(reasons["leaves.png"], None);

    // An image-only folder: a missing caption is no problem of the item, and the summary says
    // there are no captions rather than counting every item under captions.
    assert!(q.values().all(|r| !has(r, "no_caption")));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("quality_summary.json")).unwrap()).unwrap();
    assert_eq!(summary["flagged_caption"], 0);
    assert_eq!(summary["flagged_image"], 7);
    assert!(stderr.contains("no captions in this run"), "{stderr}");
    assert!(stderr.contains("7 with an image problem"), "{stderr}");
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
    assert_eq!(keep, ["anim.gif", "checker.png", "grey.png", "strip.png"]);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("selection/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["dropped_quality"], 2); // the blurred checkerboard and the black frame
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
