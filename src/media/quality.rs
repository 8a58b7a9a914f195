//! Quality signals computed while the data is already in memory, so a large run pays almost
//! nothing for them (`sieve quality` only thresholds what is stored here):
//!
//! - **image** signals come from the small thumbnail the perceptual hash already makes
//!   ([`super::thumbnail::thumbnail`], longest side at most 128 px, area-averaged), never from a
//!   second pass over the full pixels: brightness (mean luma, ITU-R 601 as Pillow's `L`),
//!   contrast (luma standard deviation), information (Shannon entropy of the 256-bin luma
//!   histogram, 0–8 bits, as cleanvision's `low_information`), colour (the largest channel
//!   spread of any thumbnail pixel: 0 for an image whose pixels are all grey).
//!
//!   What a person calls dark, bright or blurry is judged on the content, so those signals
//!   are robust to a flat background and a few highlights. The *content* is the pixels not of
//!   a uniform border colour (when at least 60% of the border pixels share one colour, as clip
//!   art on white or a product on black; the whole picture otherwise, or when under 2% would
//!   be left). `highlights` is the 95th percentile of each pixel's brightest channel (HSV
//!   value), the higher of the whole picture's and the content's: under-exposed pictures have
//!   nothing bright, while a red light on black or a black drawing on white keep theirs.
//!   `lightness` is the higher of the 25th percentile of luma and the median of each pixel's
//!   darkest channel, each the lower of the whole picture's and the content's: over-exposed
//!   or washed-out pictures are light even in their darker quarter or blown out to near white
//!   over half their area, while a bird on a white background or a yellow sun is neither. `sharpness` compares detail at two scales
//!   tied to the picture, not to a pixel count: the variance of the 4-neighbour Laplacian
//!   (Pertuz et al. 2013) on the thumbnail over the same on a copy of half its size, each plus
//!   [`SHARPNESS_FLOOR`]. A sharp picture has about as much detail at the finer scale as at
//!   the coarser one (natural images are roughly scale-invariant), a blurred one loses the
//!   finer detail first (a Gaussian of radius 0.7% of the long side drops the ratio about
//!   tenfold), and a smooth gradient, with next to no detail at either scale, stays near 1.
//!   The older `blur` (the Laplacian variance on a 64-px copy, absolute, so it flags smooth
//!   gradients and misses blur that a 64-px copy hides) is still recorded;
//! - **caption** signals come from the text and its tokenisation: length in characters and
//!   tokens (before truncation), boilerplate (a file name, a URL, a camera default such as
//!   `IMG_1234`, a placeholder, an id, or one word repeated) and the dominant Unicode script.

use image::{GrayImage, RgbImage};

/// Longest side of the grey copy blur is measured on.
pub const BLUR_SIDE: u32 = 64;

/// Added to both Laplacian variances of `sharpness` (grey levels squared), so that pictures
/// with next to no detail at either scale (flat frames, smooth gradients) read as about 1, not
/// as the ratio of two noises. Natural pictures' variances on the thumbnail are in the
/// hundreds; chosen on the calibration half of `scripts/bench_quality.py` (1 to 5 do as well).
pub const SHARPNESS_FLOOR: f64 = 2.0;

/// Border pixels that must share a colour for it to be taken as the background.
const BORDER_SHARE: f64 = 0.6;
/// How far (largest channel difference) a pixel may be from the background colour and still
/// be background.
const BORDER_TOLERANCE: i32 = 12;

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
    /// Fine-scale over coarse-scale detail (see the module docs): about 1 or more for sharp
    /// pictures and those without detail, small for blurred ones; `None` when the thumbnail is
    /// under 6 px on a side, or in runs made before it was recorded.
    pub sharpness: Option<f32>,
    /// 95th percentile of each pixel's brightest channel, 0–255, the higher of the whole
    /// picture's and its content's (low: under-exposed); `None` in older runs.
    pub highlights: Option<f32>,
    /// The higher of the 25th percentile of luma and the median of each pixel's darkest
    /// channel, each the lower of the whole picture's and its content's, 0–255 (high:
    /// over-exposed or washed out); `None` in older runs.
    pub lightness: Option<f32>,
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
    // Each pixel's brightest and darkest channel, for exposure.
    let (mut value, mut white) = ([0u32; 256], [0u32; 256]);
    let mut chroma = 0u8;
    // One pass: luma, its histogram, the channel extremes and the largest channel spread.
    let grey: Vec<u8> = thumb
        .as_raw()
        .chunks_exact(3)
        .map(|p| {
            let (lo, hi) = (p[0].min(p[1]).min(p[2]), p[0].max(p[1]).max(p[2]));
            chroma = chroma.max(hi - lo);
            value[hi as usize] += 1;
            white[lo as usize] += 1;
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
    let (highlights, lightness) = exposure(thumb, &grey, [&hist, &value, &white]);
    ImageSignals {
        blur: laplacian_variance_f32(&small, sw, sh),
        sharpness: sharpness(&grey, w as usize, h as usize),
        highlights: Some(highlights),
        lightness: Some(lightness),
        brightness: mean as f32,
        contrast: var.sqrt() as f32,
        entropy: entropy.max(0.0) as f32,
        chroma: chroma as f32,
        colour_container,
        frames,
    }
}

/// The smallest value `v` with at least `p` (0–1) of the histogram's mass at or below it.
fn percentile(hist: &[u32; 256], p: f64) -> f32 {
    let n: u64 = hist.iter().map(|&c| c as u64).sum();
    let want = (p * n as f64).ceil().max(1.0) as u64;
    let mut seen = 0u64;
    for (v, &c) in hist.iter().enumerate() {
        seen += c as u64;
        if seen >= want {
            return v as f32;
        }
    }
    255.0
}

/// The background colour: the colour (to 5 bits a channel) at least [`BORDER_SHARE`] of the
/// border pixels share, averaged over them; `None` when the border is not uniform.
fn border_colour(thumb: &RgbImage) -> Option<[i32; 3]> {
    let (w, h) = thumb.dimensions();
    if w < 3 || h < 3 {
        return None;
    }
    let border = (0..w).flat_map(|x| [(x, 0), (x, h - 1)]).chain((1..h - 1).flat_map(|y| [(0, y), (w - 1, y)]));
    let key = |p: &image::Rgb<u8>| ((p[0] as u16 >> 3) << 10) | ((p[1] as u16 >> 3) << 5) | (p[2] as u16 >> 3);
    let pixels: Vec<image::Rgb<u8>> = border.map(|(x, y)| *thumb.get_pixel(x, y)).collect();
    let mut keys: Vec<u16> = pixels.iter().map(key).collect();
    keys.sort_unstable();
    let (mut best, mut best_len, mut run) = (keys[0], 0, 0);
    for (i, &k) in keys.iter().enumerate() {
        run = if i > 0 && keys[i - 1] == k { run + 1 } else { 1 };
        if run > best_len {
            (best, best_len) = (k, run);
        }
    }
    if (best_len as f64) < BORDER_SHARE * keys.len() as f64 {
        return None;
    }
    let mut sum = [0i64; 3];
    for p in pixels.iter().filter(|p| key(p) == best) {
        for c in 0..3 {
            sum[c] += p[c] as i64;
        }
    }
    Some(sum.map(|s| (s / best_len as i64) as i32))
}

/// `(highlights, lightness)` of the thumbnail whose luma is `grey`, given the whole picture's
/// histograms of luma, of each pixel's brightest channel (HSV value) and of its darkest one
/// (high only for near-white pixels).
fn exposure(thumb: &RgbImage, grey: &[u8], [luma_all, value_all, white_all]: [&[u32; 256]; 3]) -> (f32, f32) {
    let mut highlights = percentile(value_all, 0.95);
    let (mut dark_quarter, mut white_half) = (percentile(luma_all, 0.25), percentile(white_all, 0.5));
    // With a uniform border colour, the same over the content too (a second pass, only then).
    if let Some(b) = border_colour(thumb) {
        let (mut value, mut white, mut luma) = ([0u32; 256], [0u32; 256], [0u32; 256]);
        let mut content = 0usize;
        for (p, &l) in thumb.as_raw().chunks_exact(3).zip(grey) {
            let d = |c: usize| (p[c] as i32 - b[c]).abs();
            if d(0).max(d(1)).max(d(2)) > BORDER_TOLERANCE {
                value[p[0].max(p[1]).max(p[2]) as usize] += 1;
                white[p[0].min(p[1]).min(p[2]) as usize] += 1;
                luma[l as usize] += 1;
                content += 1;
            }
        }
        // Under 2% content: a blank frame, judged whole.
        if content as f64 >= 0.02 * grey.len() as f64 {
            highlights = highlights.max(percentile(&value, 0.95));
            dark_quarter = dark_quarter.min(percentile(&luma, 0.25));
            white_half = white_half.min(percentile(&white, 0.5));
        }
    }
    // Over-exposed: even the darker quarter is light (washed out), or at least half the
    // picture is blown out to near white (a light yellow sun is neither).
    (highlights, dark_quarter.max(white_half))
}

/// `(L(grey) + F) / (L(half) + F)`: L the Laplacian variance, `half` the 2 × 2 block average of
/// `grey` (a last odd row or column left out), F [`SHARPNESS_FLOOR`]; `None` under 6 px on a
/// side. In integers: the half copy is kept as block sums (4× the average, so 16× the variance).
fn sharpness(grey: &[u8], w: usize, h: usize) -> Option<f32> {
    if w < 6 || h < 6 {
        return None;
    }
    let fine = laplacian_variance_int(grey, w, h)?;
    let (hw, hh) = (w / 2, h / 2);
    let mut half = vec![0u16; hw * hh];
    for (y, dst) in half.chunks_exact_mut(hw).enumerate() {
        let (r0, r1) = (&grey[2 * y * w..][..2 * hw], &grey[(2 * y + 1) * w..][..2 * hw]);
        for (x, d) in dst.iter_mut().enumerate() {
            *d = r0[2 * x] as u16 + r0[2 * x + 1] as u16 + r1[2 * x] as u16 + r1[2 * x + 1] as u16;
        }
    }
    let coarse = laplacian_variance_int(&half, hw, hh)? / 16.0;
    Some(((fine + SHARPNESS_FLOOR) / (coarse + SHARPNESS_FLOOR)) as f32)
}

/// Variance of the 4-neighbour Laplacian over the interior pixels, in exact integer sums.
fn laplacian_variance_int<T: Copy + Into<i32>>(px: &[T], w: usize, h: usize) -> Option<f64> {
    if w < 3 || h < 3 {
        return None;
    }
    let (mut sum, mut sum2) = (0i64, 0i64);
    for y in 1..h - 1 {
        let (up, row, down) = (&px[(y - 1) * w..][..w], &px[y * w..][..w], &px[(y + 1) * w..][..w]);
        let (mut s, mut s2) = (0i64, 0i64);
        for x in 1..w - 1 {
            let l = row[x - 1].into() + row[x + 1].into() + up[x].into() + down[x].into() - 4 * row[x].into();
            s += l as i64;
            s2 += (l as i64) * (l as i64);
        }
        sum += s;
        sum2 += s2;
    }
    let n = ((w - 2) * (h - 2)) as f64;
    let mean = sum as f64 / n;
    Some((sum2 as f64 / n - mean * mean).max(0.0))
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
    area_resize(grey, w, h, scale(w), scale(h))
}

/// `grey` (`w × h`) area-averaged to `ow × oh` (no larger), as floats.
fn area_resize(grey: &[u8], w: usize, h: usize, ow: usize, oh: usize) -> (Vec<f32>, usize, usize) {
    let (ow, oh) = (ow.clamp(1, w), oh.clamp(1, h));
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
    /// model's window, run.json's `text_max_tokens`, means it was truncated); 0 with an
    /// image-only model, which tokenises nothing.
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
    fn sharpness_is_about_one_without_detail_and_small_when_blurred() {
        // Flat and a gentle gradient: no detail at either scale, so not "blurry".
        let flat = vec![128u8; 128 * 96];
        assert!((sharpness(&flat, 128, 96).unwrap() - 1.0).abs() < 1e-6);
        let ramp: Vec<u8> = (0..128 * 96).map(|i| ((i % 128) + (i / 128)) as u8).collect();
        assert!(sharpness(&ramp, 128, 96).unwrap() > 0.9);
        // Fine noise-like detail, then the same box-blurred (3 × 3, twice).
        let mut state = 1u32;
        let sharp: Vec<u8> = (0..128 * 96)
            .map(|_| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                (state >> 24) as u8
            })
            .collect();
        let box3 = |src: &[u8]| -> Vec<u8> {
            (0..128 * 96i32)
                .map(|i| {
                    let (x, y) = (i % 128, i / 128);
                    let mut t = 0u32;
                    for (dx, dy) in (-1..=1).flat_map(|dx| (-1..=1).map(move |dy| (dx, dy))) {
                        let (xx, yy) = ((x + dx).clamp(0, 127), (y + dy).clamp(0, 95));
                        t += src[(yy * 128 + xx) as usize] as u32;
                    }
                    (t / 9) as u8
                })
                .collect()
        };
        let blurred = box3(&box3(&sharp));
        let (s, b) = (sharpness(&sharp, 128, 96).unwrap(), sharpness(&blurred, 128, 96).unwrap());
        assert!(s > 1.0 && b < 0.3, "sharp {s}, blurred {b}");
        assert_eq!(sharpness(&flat[..5 * 40], 5, 40), None);
    }

    #[test]
    fn exposure_ignores_a_uniform_border_colour() {
        // A mid-grey square on white: the white is background, so not light; the same square
        // filling the frame, washed out, is.
        let on_white = RgbImage::from_fn(100, 100, |x, y| {
            let inside = (30..70).contains(&x) && (30..70).contains(&y);
            image::Rgb(if inside { [120, 100, 80] } else { [255, 255, 255] })
        });
        assert_eq!(border_colour(&on_white), Some([255, 255, 255]));
        let s = image_signals(&on_white, true, 1);
        assert!(s.lightness.unwrap() < 110.0, "{s:?}");
        let washed = RgbImage::from_fn(100, 100, |x, _| image::Rgb([220 + (x % 30) as u8, 235, 230]));
        assert_eq!(border_colour(&washed), None);
        assert!(image_signals(&washed, true, 1).lightness.unwrap() > 200.0);
        // A lit lamp on black is not dark; the same frame without the lamp is.
        let lamp = RgbImage::from_fn(100, 100, |x, y| {
            let lit = (x as i32 - 50).pow(2) + (y as i32 - 50).pow(2) < 100;
            image::Rgb(if lit { [255, 60, 30] } else { [0, 0, 0] })
        });
        assert!(image_signals(&lamp, true, 1).highlights.unwrap() > 200.0);
        let black = RgbImage::new(100, 100);
        assert_eq!(image_signals(&black, true, 1).highlights, Some(0.0));
        // Percentiles from a histogram.
        let mut hist = [0u32; 256];
        hist[10] = 25;
        hist[200] = 75;
        assert_eq!((percentile(&hist, 0.25), percentile(&hist, 0.26), percentile(&hist, 1.0)), (10.0, 200.0, 200.0));
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
