//! Quality signals computed while the data is already in memory, so a large run pays almost
//! nothing for them (`sieve quality` only thresholds what is stored here):
//!
//! - **image** signals come from the small thumbnail the perceptual hash already makes
//!   ([`super::phash::thumbnail`], longest side at most 128 px, area-averaged), never from a
//!   second pass over the full pixels: brightness (mean luma, ITU-R 601 as Pillow's `L`),
//!   contrast (luma standard deviation), information (Shannon entropy of the 256-bin luma
//!   histogram, 0–8 bits, as cleanvision's `low_information`), colour (the largest channel
//!   spread of any thumbnail pixel: 0 for an image whose pixels are all grey). Blur is the
//!   variance of the 4-neighbour Laplacian (Pertuz et al. 2013, OpenCV's `Laplacian` with
//!   `ksize=1`) on a copy of the thumbnail resized to a fixed longest side of
//!   [`BLUR_SIDE`] px, so the figure does not depend on the image's size;
//! - **caption** signals come from the text and its tokenisation: length in characters and
//!   tokens (before truncation), boilerplate (a file name, a URL, a camera default such as
//!   `IMG_1234`, a placeholder, an id, or one word repeated) and the dominant Unicode script.

use image::{GrayImage, RgbImage};

/// Longest side of the grey copy blur is measured on.
pub const BLUR_SIDE: u32 = 64;

/// Image quality signals of one decoded image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageSignals {
    /// Variance of the Laplacian of the fixed-size grey copy (low: blurry or flat); `None` when
    /// the copy is under 3 px on a side (a strip), where it is not defined.
    pub blur: Option<f32>,
    /// Mean luma, 0–255.
    pub brightness: f32,
    /// Standard deviation of luma, 0–127.5.
    pub contrast: f32,
    /// Entropy of the luma histogram in bits, 0 (one grey level) to 8.
    pub entropy: f32,
    /// Largest `max(R,G,B) − min(R,G,B)` of any thumbnail pixel, 0–255 (0: no colour at all).
    pub chroma: f32,
    /// The file stores colour channels (not a grey-only format or grey JPEG).
    pub colour_container: bool,
    /// Frames in the file (more than 1: animated or multi-frame); only the first is embedded.
    pub frames: u32,
}

/// Pillow's `L` conversion (its `L24` macro: ITU-R 601 weights in 16-bit fixed point, rounded).
fn luma(p: &[u8]) -> u8 {
    ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

/// Signals of the image whose perceptual-hash thumbnail is `thumb`.
pub fn image_signals(thumb: &RgbImage, colour_container: bool, frames: u32) -> ImageSignals {
    let (w, h) = thumb.dimensions();
    let mut hist = [0u32; 256];
    let mut chroma = 0u8;
    // One pass: luma, its histogram, and the largest channel spread.
    let grey: Vec<u8> = thumb
        .as_raw()
        .chunks_exact(3)
        .map(|p| {
            let (lo, hi) = (p[0].min(p[1]).min(p[2]), p[0].max(p[1]).max(p[2]));
            chroma = chroma.max(hi - lo);
            let l = luma(p);
            hist[l as usize] += 1;
            l
        })
        .collect();
    let n = grey.len().max(1) as f64;
    // Mean, variance and entropy from the histogram alone.
    let (mut sum, mut sum2, mut entropy) = (0f64, 0f64, 0f64);
    for (v, &c) in hist.iter().enumerate().filter(|(_, &c)| c > 0) {
        let (v, c) = (v as f64, c as f64);
        sum += v * c;
        sum2 += v * v * c;
        let p = c / n;
        entropy -= p * p.log2();
    }
    let mean = sum / n;
    let var = (sum2 / n - mean * mean).max(0.0);
    let (small, sw, sh) = fixed_size(&grey, w as usize, h as usize);
    ImageSignals {
        blur: laplacian_variance_f32(&small, sw, sh),
        brightness: mean as f32,
        contrast: var.sqrt() as f32,
        entropy: entropy.max(0.0) as f32,
        chroma: chroma as f32,
        colour_container,
        frames,
    }
}

/// `grey` (`w × h`) area-averaged to a longest side of [`BLUR_SIDE`], as floats; smaller images
/// are left as they are (enlarging would blur them). A hand-rolled separable box filter with
/// fractional edges: `image::imageops::resize` on the thumbnail cost 10% of the CPU stage.
fn fixed_size(grey: &[u8], w: usize, h: usize) -> (Vec<f32>, usize, usize) {
    let long = w.max(h);
    if long <= BLUR_SIDE as usize {
        return (grey.iter().map(|&v| v as f32).collect(), w, h);
    }
    let scale = |v: usize| ((v * BLUR_SIDE as usize + long / 2) / long).max(1);
    let (ow, oh) = (scale(w), scale(h));
    let (xw, yw) = (area_weights(w, ow), area_weights(h, oh));
    let mut rows = vec![0f32; h * ow];
    for (src, dst) in grey.chunks_exact(w).zip(rows.chunks_exact_mut(ow)) {
        for (d, (start, ws)) in dst.iter_mut().zip(&xw) {
            *d = ws.iter().zip(&src[*start..]).map(|(k, &v)| k * v as f32).sum();
        }
    }
    let mut out = vec![0f32; oh * ow];
    for (dst, (start, ws)) in out.chunks_exact_mut(ow).zip(&yw) {
        for (k, src) in ws.iter().zip(rows.chunks_exact(ow).skip(*start)) {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d += k * v;
            }
        }
    }
    (out, ow, oh)
}

/// For each of `n_out` output cells, the first input index it covers and the share of each
/// input cell in it (summing to 1).
fn area_weights(n_in: usize, n_out: usize) -> Vec<(usize, Vec<f32>)> {
    let step = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            let (lo, hi) = (o as f64 * step, ((o + 1) as f64 * step).min(n_in as f64));
            let first = lo.floor() as usize;
            let last = (hi.ceil() as usize).min(n_in);
            let ws = (first..last).map(|i| ((hi.min(i as f64 + 1.0) - lo.max(i as f64)) / step) as f32).collect();
            (first, ws)
        })
        .collect()
}

/// Variance of the 4-neighbour Laplacian over the interior pixels.
pub fn laplacian_variance(grey: &GrayImage) -> Option<f32> {
    let px: Vec<f32> = grey.as_raw().iter().map(|&v| v as f32).collect();
    laplacian_variance_f32(&px, grey.width() as usize, grey.height() as usize)
}

fn laplacian_variance_f32(px: &[f32], w: usize, h: usize) -> Option<f32> {
    if w < 3 || h < 3 {
        return None;
    }
    let (mut sum, mut sum2) = (0f64, 0f64);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let i = y * w + x;
            let l = (px[i - 1] + px[i + 1] + px[i - w] + px[i + w] - 4.0 * px[i]) as f64;
            sum += l;
            sum2 += l * l;
        }
    }
    let n = ((w - 2) * (h - 2)) as f64;
    let mean = sum / n;
    Some((sum2 / n - mean * mean).max(0.0) as f32)
}

/// Caption quality signals of one caption (after trimming).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CaptionSignals {
    /// Length in Unicode scalar values.
    pub chars: u32,
    /// Tokens the caption takes with the start and end tokens, before truncation (over the
    /// model's window, run.json's `text_max_tokens`, means it was truncated).
    pub tokens: u32,
    /// Why the caption looks like boilerplate: `url`, `camera-default`, `file-name`, `id`,
    /// `placeholder` or `repeated-word`; `None` when it does not.
    pub boilerplate: Option<String>,
    /// The Unicode script most of its letters are in (`Latin`, `Cyrillic`, `Han`, …); `None`
    /// without letters.
    pub script: Option<String>,
}

/// Signals of `text` (already trimmed) that tokenised to `tokens` tokens before truncation.
pub fn caption_signals(text: &str, tokens: usize) -> CaptionSignals {
    CaptionSignals {
        chars: text.chars().count() as u32,
        tokens: tokens as u32,
        boilerplate: boilerplate(text).map(str::to_string),
        script: dominant_script(text).map(str::to_string),
    }
}

const FILE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "jpe", "png", "gif", "webp", "bmp", "tif", "tiff", "heic", "heif", "avif", "svg", "ico", "jfif",
    "raw", "cr2", "nef", "arw", "dng", "psd", "mp4", "mov", "avi", "mkv", "webm", "pdf", "txt", "html", "htm", "php",
    "aspx",
];

/// Camera and phone file-name prefixes followed by a number (`IMG_1234`, `DSC01234`, `PXL_2023…`).
const CAMERA_PREFIXES: &[&str] = &[
    "img",
    "dsc",
    "dscn",
    "dscf",
    "dcim",
    "pict",
    "pic",
    "p",
    "mvi",
    "vid",
    "gopr",
    "gp",
    "dji",
    "pxl",
    "sam",
    "wp",
    "photo",
    "image",
    "screenshot",
    "screen shot",
    "scan",
    "imag",
    "snapshot",
    "dc",
];

/// Whole captions that say nothing about the picture.
const PLACEHOLDERS: &[&str] = &[
    "image",
    "img",
    "photo",
    "picture",
    "pic",
    "untitled",
    "no title",
    "no caption",
    "caption",
    "null",
    "none",
    "n/a",
    "na",
    "nan",
    "undefined",
    "placeholder",
    "thumbnail",
    "default",
    "image not found",
    "no image",
    "stock photo",
    "click to enlarge",
    "download",
];

/// Which kind of boilerplate `text` is, if any (see [`CaptionSignals::boilerplate`]).
pub fn boilerplate(text: &str) -> Option<&'static str> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    let lower = t.to_lowercase();
    let one_token = !t.chars().any(char::is_whitespace);
    if one_token && (lower.contains("://") || lower.starts_with("www.") || lower.starts_with("data:image/")) {
        return Some("url");
    }
    // Strip a file extension for the name checks.
    let (stem, ext) = match lower.rsplit_once('.') {
        Some((s, e)) if FILE_EXTENSIONS.contains(&e) && !s.is_empty() => (s, Some(e)),
        _ => (lower.as_str(), None),
    };
    let stem = stem.rsplit(['/', '\\']).next().unwrap_or(stem);
    for prefix in CAMERA_PREFIXES {
        if let Some(rest) = stem.strip_prefix(prefix) {
            let rest = rest.trim_start_matches(['_', '-', ' ']);
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            // The number, then perhaps more digits and separators (`IMG_20190101_123456`,
            // `DSC_0042 (2)`), nothing wordy.
            if digits >= 3 && rest.chars().all(|c| c.is_ascii_digit() || "_-() ~".contains(c)) {
                return Some("camera-default");
            }
        }
    }
    if ext.is_some() && !stem.contains(' ') {
        return Some("file-name");
    }
    if one_token && (t.contains('/') || t.contains('\\')) && t.len() > 1 {
        return Some("file-name");
    }
    if one_token
        && t.len() >= 6
        && t.chars().any(|c| c.is_ascii_digit())
        && t.chars().all(|c| c.is_ascii_hexdigit() || "_-".contains(c))
    {
        return Some("id");
    }
    let words: Vec<String> =
        lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_string).collect();
    if PLACEHOLDERS.contains(&lower.trim_end_matches(['.', '!'])) {
        return Some("placeholder");
    }
    if words.len() >= 2 && words.iter().all(|w| w == &words[0]) {
        return Some("repeated-word");
    }
    None
}

/// Unicode script of a letter (the Unicode Character Database's Script property, via the
/// `unicode-script` crate); `None` for what is not a letter or belongs to no one script (digits,
/// punctuation, combining marks: Common and Inherited).
fn script_of(c: char) -> Option<&'static str> {
    use unicode_script::{Script, UnicodeScript};
    if !c.is_alphabetic() {
        return None;
    }
    match c.script() {
        Script::Common | Script::Inherited | Script::Unknown => None,
        s => Some(s.full_name()),
    }
}

/// The script most letters of `text` are in (ties: the first to reach the top count).
pub fn dominant_script(text: &str) -> Option<&'static str> {
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for s in text.chars().filter_map(script_of) {
        match counts.iter_mut().find(|(name, _)| *name == s) {
            Some((_, n)) => *n += 1,
            None => counts.push((s, 1)),
        }
    }
    let top = counts.iter().map(|&(_, n)| n).max()?;
    counts.into_iter().find(|&(_, n)| n == top).map(|(s, _)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boilerplate_kinds() {
        for (text, want) in [
            ("IMG_0001.JPG", Some("camera-default")),
            ("DSC01234", Some("camera-default")),
            ("PXL_20230101_123456789.jpg", Some("camera-default")),
            ("IMG_20190101_123456", Some("camera-default")),
            ("https://x.y/z.jpg", Some("url")),
            ("www.example.com/cat", Some("url")),
            ("holiday_beach.png", Some("file-name")),
            ("photos/2019/beach", Some("file-name")),
            ("3f9a0c2e7b1d", Some("id")),
            ("untitled", Some("placeholder")),
            ("Image", Some("placeholder")),
            ("cat cat cat", Some("repeated-word")),
            ("a cat on a mat", None),
            ("cat", None),
            ("image of a dog.jpg on a table", None),
            ("a photo of the img 1234 exhibit", None),
            ("", None),
        ] {
            assert_eq!(boilerplate(text), want, "{text:?}");
        }
    }

    #[test]
    fn dominant_scripts() {
        assert_eq!(dominant_script("a cat"), Some("Latin"));
        assert_eq!(dominant_script("кошка на ковре, a cat"), Some("Cyrillic"));
        assert_eq!(dominant_script("小猫在睡觉"), Some("Han"));
        assert_eq!(dominant_script("ねこがねている"), Some("Hiragana"));
        assert_eq!(dominant_script("고양이"), Some("Hangul"));
        assert_eq!(dominant_script("قطة"), Some("Arabic"));
        assert_eq!(dominant_script("1234 !!"), None);
    }

    #[test]
    fn laplacian_of_flat_is_zero_and_of_edges_is_positive() {
        let flat = GrayImage::from_pixel(10, 10, image::Luma([77]));
        assert_eq!(laplacian_variance(&flat), Some(0.0));
        let checker = GrayImage::from_fn(10, 10, |x, y| image::Luma([if (x + y) % 2 == 0 { 0 } else { 255 }]));
        assert!(laplacian_variance(&checker).unwrap() > 1000.0);
        assert_eq!(laplacian_variance(&GrayImage::new(2, 50)), None);
    }

    #[test]
    fn area_resize_averages_and_keeps_the_mean() {
        // 128 → 64: pairs averaged exactly.
        let src: Vec<u8> = (0..128 * 2).map(|i| (i % 128) as u8).collect();
        let (out, w, h) = fixed_size(&src, 128, 2);
        assert_eq!((w, h), (64, 1));
        assert!((out[0] - 0.5).abs() < 1e-4 && (out[63] - 126.5).abs() < 1e-4, "{out:?}");
        // A non-integer ratio keeps a flat image flat.
        let (out, w, h) = fixed_size(&[200u8; 100 * 75], 100, 75);
        assert_eq!((w, h), (64, 48));
        assert!(out.iter().all(|&v| (v - 200.0).abs() < 1e-3));
    }
}
