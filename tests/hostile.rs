//! Hostile inputs (issue 5): odd-but-valid formats decode to transformers' pixels, and a corpus of
//! odd and broken files runs through `sieve embed` with every file embedded or listed with its
//! specific reason, no panic, exit 0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use serde::Deserialize;
use sieve::media::decode::{decode, Limits};

use crate::util::*;

/// `tests/fixtures/hostile/manifest.json` (scripts/make_hostile_fixtures.py).
#[derive(Debug, Deserialize)]
struct Manifest {
    fixtures: Vec<Fixture>,
}

#[derive(Debug, Deserialize)]
struct Fixture {
    file: String,
    what: String,
    size: [u32; 2],
}

fn hostile_dir() -> PathBuf {
    fixtures().join("hostile")
}

fn manifest() -> Manifest {
    let p = hostile_dir().join("manifest.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("hostile manifest exists")).expect("manifest parses")
}

/// The RGB image CLIPImageProcessor resized for `file` (uint8, row-major HWC) and its size.
fn reference_rgb(file: &str) -> image::RgbImage {
    let t = Tensor::read_npy(hostile_dir().join("ref").join(format!("{file}.npy"))).unwrap();
    let (h, w, c) = t.dims3().unwrap();
    assert_eq!(c, 3);
    let data = t.to_dtype(DType::U8).unwrap().flatten_all().unwrap().to_vec1::<u8>().unwrap();
    image::RgbImage::from_raw(w as u32, h as u32, data).unwrap()
}

/// `pixel_values[:, 14::28, 14::28]` of a CHW 3×224×224 array, flattened.
fn grid(pixels: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(192);
    for c in 0..3 {
        for y in (14..224).step_by(28) {
            for x in (14..224).step_by(28) {
                out.push(pixels[c * 224 * 224 + y * 224 + x]);
            }
        }
    }
    out
}

/// Every odd-but-valid fixture decodes to exactly the RGB image CLIPImageProcessor resizes (so
/// identical pixel_values), at its displayed (EXIF-oriented) size.
#[test]
fn odd_formats_decode_to_the_reference_pixels() {
    let m = manifest();
    let clip = tiny_clip();
    let grids = Tensor::read_npy(hostile_dir().join("ref/pixel_grid.npy")).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(grids.len(), m.fixtures.len());
    let mut failures = Vec::new();
    for (fx, want_grid) in m.fixtures.iter().zip(&grids) {
        let bytes = std::fs::read(hostile_dir().join(&fx.file)).unwrap();
        let decoded = match decode(&bytes, &Limits::default()) {
            Ok(d) => d,
            Err(s) => {
                failures.push(format!("{}: not decoded: {s:?}", fx.file));
                continue;
            }
        };
        let want = reference_rgb(&fx.file);
        if (decoded.width, decoded.height) != (fx.size[0], fx.size[1]) || decoded.rgb.dimensions() != want.dimensions()
        {
            failures.push(format!(
                "{} ({}): decoded {}x{}, reference {:?}",
                fx.file, fx.what, decoded.width, decoded.height, fx.size
            ));
            continue;
        }
        let levels = decoded.rgb.as_raw().iter().zip(want.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
        let ours = clip.preprocessor.preprocess(&decoded.rgb);
        let theirs = clip.preprocessor.preprocess(&want);
        let d_pixels = max_abs(&ours, &theirs);
        let d_grid = max_abs(&grid(&ours), want_grid);
        eprintln!("{:22} levels {levels:3}  pixel max-abs {d_pixels:.5}  grid max-abs {d_grid:.5}", fx.file);
        // Tolerance: none. JPEG goes through libjpeg-turbo as in Pillow, lossless formats have one
        // answer, and image-webp's lossy decoder (VP8 plus libwebp's fancy upsampling and
        // YUV->RGB) reproduces libwebp's output exactly on these files.
        if levels > 0 {
            failures.push(format!("{} ({}): {levels} levels off Pillow", fx.file, fx.what));
        }
        if d_grid > 1e-4 {
            failures.push(format!("{} ({}): pixel_values max-abs {d_grid} at the sampled grid", fx.file, fx.what));
        }
        // Through the preprocessor (a bit-exact port of CLIPImageProcessor's), the RGB reference
        // and the processor's own pixel_values agree to float rounding.
        let grid_ref = grid(&theirs);
        assert!(max_abs(&grid_ref, want_grid) <= 1e-4, "{}: preprocessor disagrees with the processor", fx.file);
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures differ:\n{}",
        failures.len(),
        m.fixtures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The corpus run through the binary.

/// `--max-bytes` for the corpus run: above every fixture, below `big.bmp`.
const MAX_BYTES: u64 = 100_000;

/// How a corpus file must end.
#[derive(Debug)]
enum Outcome {
    /// Embedded, with the image embedding of this fixture's reference pixels.
    Embedded(String),
    /// Listed as skipped with this reason code.
    Skipped(&'static str),
}

/// What the metadata must say about an embedded file's caption.
#[derive(Debug, Clone, PartialEq)]
enum Caption {
    /// No sidecar: null caption, zero text row.
    Absent,
    /// Exactly this text, flags clear.
    Text(String),
    /// Not UTF-8: decoded with U+FFFD and flagged `caption_lossy`.
    Lossy,
    /// Empty once trimmed: stored as "", embedded as the tokenizer encodes "" (BOS, EOS).
    Empty,
    /// Over 77 tokens: stored whole, embedded truncated, flagged `caption_truncated`.
    Truncated,
}

struct Corpus {
    _dir: tempfile::TempDir,
    input: PathBuf,
    /// Path relative to `input` -> what its metadata row must say.
    expect: BTreeMap<String, (Outcome, Caption)>,
}

impl Corpus {
    fn write(&self, rel: &str, bytes: &[u8]) {
        let p = self.input.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    fn put(&mut self, rel: &str, bytes: &[u8], outcome: Outcome, caption: Caption) {
        self.write(rel, bytes);
        self.expect.insert(rel.to_string(), (outcome, caption));
    }
}

fn fixture_bytes(file: &str) -> Vec<u8> {
    std::fs::read(hostile_dir().join(file)).unwrap()
}

/// A copy of a JPEG with its frame header (SOFn) changed by `patch(segment)`.
fn patch_sof(jpeg: &[u8], patch: impl Fn(&mut [u8])) -> Vec<u8> {
    let mut j = jpeg.to_vec();
    let mut i = 2;
    while i + 4 < j.len() {
        assert_eq!(j[i], 0xFF, "JPEG segments are contiguous before the scan");
        let marker = j[i + 1];
        let len = u16::from_be_bytes([j[i + 2], j[i + 3]]) as usize;
        if matches!(marker, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF) {
            patch(&mut j[i + 4..i + 2 + len]);
            return j;
        }
        i += 2 + len;
    }
    panic!("no frame header");
}

/// A GIF with a `screen` canvas and one `frame`-sized image holding a few bytes of LZW data.
fn gif_header_only(screen: (u16, u16), frame: (u16, u16)) -> Vec<u8> {
    let mut g = b"GIF89a".to_vec();
    g.extend(screen.0.to_le_bytes());
    g.extend(screen.1.to_le_bytes());
    g.extend([0x80, 0, 0, 0, 0, 0, 255, 255, 255]); // two-entry global colour table
    g.extend([0x2C, 0, 0, 0, 0]);
    g.extend(frame.0.to_le_bytes());
    g.extend(frame.1.to_le_bytes());
    g.extend([0, 2, 2, 0x4C, 0x01, 0, 0x3B]);
    g
}

/// A 24-bit BMP header declaring `w`×`h` pixels, followed by 16 bytes of pixel data.
fn bmp_header_only(w: i32, h: i32) -> Vec<u8> {
    let mut b = b"BM".to_vec();
    b.extend(70u32.to_le_bytes());
    b.extend([0; 4]);
    b.extend(54u32.to_le_bytes());
    b.extend(40u32.to_le_bytes());
    b.extend(w.to_le_bytes());
    b.extend(h.to_le_bytes());
    b.extend(1u16.to_le_bytes());
    b.extend(24u16.to_le_bytes());
    b.extend([0; 8]); // BI_RGB, image size 0
    b.extend(2835u32.to_le_bytes());
    b.extend(2835u32.to_le_bytes());
    b.extend([0; 8]);
    b.extend([0; 16]);
    b
}

/// A little-endian greyscale TIFF declaring `w`×`h` pixels in one strip of 16 bytes.
fn tiff_header_only(w: u32, h: u32) -> Vec<u8> {
    const SHORT: u16 = 3;
    const LONG: u16 = 4;
    let n = 9u16;
    let data_at = 8 + 2 + 12 * n as u32 + 4;
    let entries = [
        (256, LONG, w),
        (257, LONG, h),
        (258, SHORT, 8),
        (259, SHORT, 1),
        (262, SHORT, 1),
        (273, LONG, data_at),
        (277, SHORT, 1),
        (278, LONG, h),
        (279, LONG, 16),
    ];
    let mut t = b"II*\0".to_vec();
    t.extend(8u32.to_le_bytes());
    t.extend(n.to_le_bytes());
    for (tag, ty, value) in entries {
        t.extend((tag as u16).to_le_bytes());
        t.extend(ty.to_le_bytes());
        t.extend(1u32.to_le_bytes());
        if ty == SHORT {
            t.extend((value as u16).to_le_bytes());
            t.extend([0, 0]);
        } else {
            t.extend(value.to_le_bytes());
        }
    }
    t.extend(0u32.to_le_bytes());
    t.extend([0; 16]);
    t
}

/// A RIFF/WebP file holding `chunks` (fourcc, payload).
fn webp(chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut body = b"WEBP".to_vec();
    for (fourcc, data) in chunks {
        body.extend(*fourcc);
        body.extend((data.len() as u32).to_le_bytes());
        body.extend(data);
        if data.len() % 2 == 1 {
            body.push(0);
        }
    }
    let mut w = b"RIFF".to_vec();
    w.extend((body.len() as u32).to_le_bytes());
    w.extend(body);
    w
}

/// A lossy WebP key frame declaring the largest size VP8 can, 16383×16383, and no data.
fn webp_vp8_header_only() -> Vec<u8> {
    let mut vp8 = vec![0, 0, 0, 0x9d, 0x01, 0x2a];
    vp8.extend(0x3fffu16.to_le_bytes());
    vp8.extend(0x3fffu16.to_le_bytes());
    vp8.extend([0; 10]);
    webp(&[(b"VP8 ", vp8)])
}

/// An extended WebP whose canvas (VP8X) is 20000×20000, holding a 1×1 lossless image.
fn webp_vp8x_canvas_bomb() -> Vec<u8> {
    let mut vp8x = vec![0; 4];
    vp8x.extend(&(20_000u32 - 1).to_le_bytes()[..3]);
    vp8x.extend(&(20_000u32 - 1).to_le_bytes()[..3]);
    let vp8l = vec![0x2f, 0, 0, 0, 0, 0x07, 0, 0, 0];
    webp(&[(b"VP8X", vp8x), (b"VP8L", vp8l)])
}

fn long_caption() -> String {
    let words = ["a", "photo", "of", "the", "quick", "brown", "fox", "over", "lazy", "dogs"];
    (0..2000).map(|i| words[i * 7 % words.len()]).collect::<Vec<_>>().join(" ")
}

fn build_corpus() -> Corpus {
    use Outcome::*;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let mut c = Corpus { _dir: dir, input: input.clone(), expect: BTreeMap::new() };

    // Odd but valid: every fixture embedded with transformers' pixels.
    let m = manifest();
    let captions: BTreeMap<&str, (Vec<u8>, Caption)> = BTreeMap::from([
        ("animated.gif", (b"an animated gif\n".to_vec(), Caption::Text("an animated gif".into()))),
        ("progressive.jpg", (b"caf\xe9 au lait \xff\xfe in Latin-1\n".to_vec(), Caption::Lossy)),
        ("gray.jpg", (Vec::new(), Caption::Empty)),
        ("rgb.bmp", (b" \t\n \r\n".to_vec(), Caption::Empty)),
        ("lossy.webp", (long_caption().into_bytes(), Caption::Truncated)),
    ]);
    for fx in &m.fixtures {
        let file = fx.file.as_str();
        let caption = match captions.get(file) {
            Some((text, want)) => {
                c.write(&format!("ok/{}.txt", stem(file)), text);
                want.clone()
            }
            None => Caption::Absent,
        };
        c.put(&format!("ok/{file}"), &fixture_bytes(file), Embedded(file.into()), caption);
    }

    // Broken: each refused with its specific reason.
    let half = |file: &str| {
        let b = fixture_bytes(file);
        b[..b.len() / 2].to_vec()
    };
    let mut bad_crc = fixture_bytes("interlaced.png");
    bad_crc[29] ^= 0xff; // last byte of IHDR's CRC
    let mut big = Vec::new();
    image::RgbImage::from_fn(200, 200, |x, y| image::Rgb([x as u8, y as u8, (x ^ y) as u8]))
        .write_to(&mut std::io::Cursor::new(&mut big), image::ImageFormat::Bmp)
        .unwrap();
    assert!(big.len() as u64 > MAX_BYTES);
    let broken: Vec<(&str, Vec<u8>, &'static str)> = vec![
        ("truncated.jpg", half("progressive.jpg"), "decode-error"),
        ("truncated-cmyk.jpg", half("cmyk.jpg"), "decode-error"),
        ("truncated.png", half("interlaced.png"), "decode-error"),
        ("truncated.gif", fixture_bytes("animated.gif")[..500].to_vec(), "decode-error"),
        ("truncated.webp", half("lossless-alpha.webp"), "decode-error"),
        ("truncated.tiff", half("rgb-lzw.tiff"), "decode-error"),
        ("truncated.bmp", half("rgb.bmp"), "decode-error"),
        ("bad-crc.png", bad_crc, "decode-error"),
        ("12-bit.jpg", patch_sof(&fixture_bytes("gray.jpg"), |s| s[0] = 12), "decode-error"),
        ("zero-width.jpg", patch_sof(&fixture_bytes("gray.jpg"), |s| s[3..5].copy_from_slice(&[0, 0])), "decode-error"),
        ("empty.jpg", Vec::new(), "empty-file"),
        ("text.jpg", b"this is not a picture\n".to_vec(), "not-an-image"),
        ("page.png", b"<!DOCTYPE html>\n<html><body><h1>404 Not Found</h1></body></html>\n".to_vec(), "not-an-image"),
        ("random.gif", (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect(), "not-an-image"),
        ("bomb.png", crate::cli::png_header_only(100_000, 100_000), "too-many-pixels"),
        ("bomb.gif", gif_header_only((65_535, 65_535), (65_535, 65_535)), "too-many-pixels"),
        ("frame-bomb.gif", gif_header_only((16, 16), (65_535, 65_535)), "too-many-pixels"),
        ("bomb.bmp", bmp_header_only(60_000, -60_000), "too-many-pixels"),
        ("huge.bmp", bmp_header_only(100_000, 100_000), "too-many-pixels"),
        ("bomb.tiff", tiff_header_only(100_000, 100_000), "too-many-pixels"),
        ("bomb.webp", webp_vp8_header_only(), "too-many-pixels"),
        ("canvas-bomb.webp", webp_vp8x_canvas_bomb(), "too-many-pixels"),
        (
            "bomb.jpg",
            patch_sof(&fixture_bytes("gray.jpg"), |s| s[1..5].copy_from_slice(&[0xff, 0xdc, 0xff, 0xdc])),
            "too-many-pixels",
        ),
        ("big.bmp", big, "too-large"),
    ];
    for (name, bytes, reason) in broken {
        c.put(&format!("broken/{name}"), &bytes, Skipped(reason), Caption::Absent);
    }

    // The walk: links and folders that must not stop it or be listed twice.
    #[cfg(unix)]
    {
        use std::os::unix::fs::symlink;
        symlink(input.join("broken/nowhere.jpg"), input.join("broken/dangling.jpg")).unwrap();
        c.expect.insert("broken/dangling.jpg".into(), (Skipped("unreadable"), Caption::Absent));
        symlink("self-loop.png", input.join("broken/self-loop.png")).unwrap();
        c.expect.insert("broken/self-loop.png".into(), (Skipped("unreadable"), Caption::Absent));
        std::fs::create_dir_all(input.join("walk")).unwrap();
        symlink("..", input.join("walk/loop")).unwrap(); // a directory loop: not followed twice
        symlink("../ok/la.png", input.join("walk/link.png")).unwrap();
        c.expect.insert("walk/link.png".into(), (Embedded("la.png".into()), Caption::Absent));
        // Unreadable (chmod 000), unless permissions do not bind us (root).
        use std::os::unix::fs::PermissionsExt;
        let locked = input.join("broken/locked.png");
        c.put("broken/locked.png", &fixture_bytes("la.png"), Skipped("unreadable"), Caption::Absent);
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        if std::fs::read(&locked).is_ok() {
            eprintln!("permissions do not apply (running as root?): skipping the chmod 000 case");
            std::fs::remove_file(&locked).unwrap();
            c.expect.remove("broken/locked.png");
        }
    }
    c.put("walk/folder.png/inner.jpg", &fixture_bytes("gray.jpg"), Embedded("gray.jpg".into()), Caption::Absent);
    std::fs::create_dir_all(input.join("walk/empty.jpg")).unwrap();
    c.write("walk/notes.md", b"not an image, not listed");
    c
}

/// One metadata row, the columns this test checks.
#[derive(Debug)]
struct MetaRow {
    uri: String,
    caption: Option<String>,
    caption_lossy: bool,
    caption_truncated: bool,
    width: Option<u32>,
    height: Option<u32>,
    status: String,
    reason: Option<String>,
}

fn read_metadata(path: &Path) -> Vec<MetaRow> {
    use arrow_array::{Array, BooleanArray, StringArray, UInt32Array};
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let b = batch.unwrap();
        let col = |n: &str| b.column_by_name(n).unwrap().clone();
        let (uri, caption, status, reason) = (col("uri"), col("caption"), col("status"), col("reason"));
        let (lossy, truncated, width, height) =
            (col("caption_lossy"), col("caption_truncated"), col("width"), col("height"));
        let s = |a: &dyn Array| a.as_any().downcast_ref::<StringArray>().unwrap().clone();
        let flag = |a: &dyn Array| a.as_any().downcast_ref::<BooleanArray>().unwrap().clone();
        let u32s = |a: &dyn Array| a.as_any().downcast_ref::<UInt32Array>().unwrap().clone();
        let (uri, caption, status, reason) = (s(&uri), s(&caption), s(&status), s(&reason));
        let (lossy, truncated, width, height) = (flag(&lossy), flag(&truncated), u32s(&width), u32s(&height));
        for i in 0..b.num_rows() {
            rows.push(MetaRow {
                uri: uri.value(i).to_string(),
                caption: (!caption.is_null(i)).then(|| caption.value(i).to_string()),
                caption_lossy: lossy.value(i),
                caption_truncated: truncated.value(i),
                width: (!width.is_null(i)).then(|| width.value(i)),
                height: (!height.is_null(i)).then(|| height.value(i)),
                status: status.value(i).to_string(),
                reason: (!reason.is_null(i)).then(|| reason.value(i).to_string()),
            });
        }
    }
    rows
}

/// `  skipped <n>  <reason>` lines of the summary `sieve embed` prints at the end.
fn skipped_summary(stderr: &str) -> BTreeMap<String, u64> {
    stderr
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("skipped")).then_some(())?;
            let n = w.next()?.parse().ok()?;
            Some((w.next()?.to_string(), n))
        })
        .collect()
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// The whole corpus through `sieve embed`: exit 0, no panic, every file listed once with its
/// outcome and reason, caption flags set, odd formats embedded from transformers' pixels, and the
/// skipped-by-reason summary on stderr.
#[test]
fn embed_survives_a_hostile_corpus() {
    let c = build_corpus();
    assert!(c.expect.len() >= 25, "corpus too small: {}", c.expect.len());
    let out = c._dir.path().join("run");
    let o = crate::cli::sieve()
        .arg("embed")
        .arg(&c.input)
        .arg("--out")
        .arg(&out)
        .args(["--model", tiny_model_dir().to_str().unwrap(), "--device", "cpu", "--quiet"])
        .args(["--max-bytes", &MAX_BYTES.to_string(), "--batch-size", "8"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "exit {:?}\n{stderr}", o.status);
    assert!(!stderr.contains("panicked"), "{stderr}");

    let clip = tiny_clip();
    let manifest = sieve::store::read_manifest(&out).unwrap();
    let sizes: BTreeMap<String, [u32; 2]> = manifest_sizes();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut want_skipped: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures = Vec::new();
    for part in &manifest.parts {
        let meta = read_metadata(&out.join("metadata").join(format!("{part}.parquet")));
        let (_, dim, img) = sieve::store::npy::read_f16(&out.join("img_emb").join(format!("{part}.npy"))).unwrap();
        let (_, _, txt) = sieve::store::npy::read_f16(&out.join("text_emb").join(format!("{part}.npy"))).unwrap();
        for (i, row) in meta.iter().enumerate() {
            let rel = Path::new(&row.uri).strip_prefix(&c.input).unwrap().to_str().unwrap().to_string();
            *seen.entry(rel.clone()).or_default() += 1;
            let Some((outcome, caption)) = c.expect.get(&rel) else {
                failures.push(format!("{rel}: listed but not expected ({row:?})"));
                continue;
            };
            let (img_row, txt_row) = (&img[i * dim..(i + 1) * dim], &txt[i * dim..(i + 1) * dim]);
            match outcome {
                Outcome::Skipped(reason) => {
                    *want_skipped.entry(reason.to_string()).or_default() += 1;
                    if row.status != "skipped" || row.reason.as_deref() != Some(*reason) {
                        failures.push(format!("{rel}: want skipped/{reason}, got {}/{:?}", row.status, row.reason));
                    }
                }
                Outcome::Embedded(fixture) => {
                    if row.status != "embedded" {
                        failures.push(format!("{rel}: want embedded, got {}/{:?}", row.status, row.reason));
                        continue;
                    }
                    let size = sizes[fixture];
                    if (row.width, row.height) != (Some(size[0]), Some(size[1])) {
                        failures.push(format!("{rel}: size {:?}x{:?}, want {size:?}", row.width, row.height));
                    }
                    let px = clip.preprocessor.preprocess(&reference_rgb(fixture));
                    let px = Tensor::from_vec(px, (1, 3, 224, 224), &candle_core::Device::Cpu).unwrap();
                    let want = clip.model.embed_images(&px).unwrap().to_vec2::<f32>().unwrap().remove(0);
                    let cos = cosine(img_row, &unit(&want));
                    if cos < 0.9999 {
                        failures.push(format!("{rel}: image embedding cosine {cos} to the reference pixels'"));
                    }
                    if let Err(e) = check_caption(&clip, &rel, row, caption, txt_row) {
                        failures.push(e);
                    }
                }
            }
        }
    }
    for (rel, n) in &seen {
        if *n != 1 {
            failures.push(format!("{rel}: listed {n} times"));
        }
    }
    for rel in c.expect.keys().filter(|k| !seen.contains_key(*k)) {
        failures.push(format!("{rel}: not listed"));
    }
    assert!(failures.is_empty(), "{} problems:\n{}\n--- stderr\n{stderr}", failures.len(), failures.join("\n"));
    assert_eq!(skipped_summary(&stderr), want_skipped, "skipped-by-reason summary:\n{stderr}");
    assert_eq!(manifest.counts.records as usize, c.expect.len());
}

fn check_caption(
    clip: &sieve::model::Clip,
    rel: &str,
    row: &MetaRow,
    want: &Caption,
    txt_row: &[f32],
) -> Result<(), String> {
    let flags = (row.caption_lossy, row.caption_truncated);
    let text = match (want, &row.caption) {
        (Caption::Absent, None) if txt_row.iter().all(|&v| v == 0.0) && flags == (false, false) => return Ok(()),
        (Caption::Text(t), Some(got)) if got == t && flags == (false, false) => got,
        (Caption::Lossy, Some(got)) if got.contains('\u{fffd}') && flags == (true, false) => got,
        (Caption::Empty, Some(got)) if got.is_empty() && flags == (false, false) => got,
        (Caption::Truncated, Some(got)) if got.split(' ').count() == 2000 && flags == (false, true) => got,
        _ => return Err(format!("{rel}: caption {:?} flags {flags:?}, want {want:?}", row.caption)),
    };
    // The text row is the embedding of what the tokenizer makes of the stored caption.
    let ids = clip.tokenizer.encode(text).unwrap().ids;
    if *want == Caption::Empty && ids.len() != 2 {
        return Err(format!("{rel}: empty caption tokenised as {ids:?}, want BOS, EOS"));
    }
    let want_emb = clip.model.embed_texts(&[ids]).unwrap().to_vec2::<f32>().unwrap().remove(0);
    let cos = cosine(txt_row, &unit(&want_emb));
    if cos < 0.9999 {
        return Err(format!("{rel}: text embedding cosine {cos}"));
    }
    Ok(())
}

fn manifest_sizes() -> BTreeMap<String, [u32; 2]> {
    manifest().fixtures.into_iter().map(|f| (f.file, f.size)).collect()
}
/// Bombs are refused from their headers with `too-many-pixels` (none of these could be
/// allocated in the test's memory), also where a decoder's buffer outgrows the header: a GIF
/// frame larger than its screen is held to `--max-pixels` too.
#[test]
fn bombs_are_refused_before_allocation() {
    let bombs: [(&str, Vec<u8>); 8] = [
        ("png", crate::cli::png_header_only(100_000, 100_000)),
        ("gif", gif_header_only((65_535, 65_535), (65_535, 65_535))),
        ("bmp", bmp_header_only(60_000, -60_000)),
        ("bmp over 65535", bmp_header_only(100_000, 100_000)),
        ("tiff", tiff_header_only(100_000, 100_000)),
        ("webp", webp_vp8_header_only()),
        ("webp canvas", webp_vp8x_canvas_bomb()),
        ("jpeg", patch_sof(&fixture_bytes("gray.jpg"), |s| s[1..5].copy_from_slice(&[0xff, 0xdc, 0xff, 0xdc]))),
    ];
    for (what, bytes) in bombs {
        let skip = decode(&bytes, &Limits::default()).unwrap_err();
        assert_eq!(skip.reason.code(), "too-many-pixels", "{what}: {skip:?}");
        assert!(skip.detail.contains("--max-pixels"), "{what}: {}", skip.detail);
    }
    // 16×16 screen, 2000×2000 frame: 4 M pixels against a limit of 1 M.
    let limits = Limits { max_pixels: 1_000_000, ..Limits::default() };
    let skip = decode(&gif_header_only((16, 16), (2000, 2000)), &limits).unwrap_err();
    assert_eq!(skip.reason.code(), "too-many-pixels", "{skip:?}");
    // The same file is fine by the default limit (and then fails on its missing data).
    let skip = decode(&gif_header_only((16, 16), (2000, 2000)), &Limits::default()).unwrap_err();
    assert_eq!(skip.reason.code(), "decode-error", "{skip:?}");
}
