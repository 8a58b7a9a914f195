//! Decoding untrusted image bytes: the format is sniffed from the content (not the extension),
//! sizes are checked from the header before any pixel buffer is allocated, EXIF orientation is
//! applied, and every failure becomes a [`Skip`] with a stable reason code instead of an error.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

/// Default `--max-caption-bytes`: far more than any model's context (CLIP reads 77 tokens),
/// small enough that a runaway caption file costs nothing.
pub const DEFAULT_MAX_CAPTION_BYTES: u64 = 64 << 10;

/// Size limits applied before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Largest file accepted, in bytes.
    pub max_bytes: u64,
    /// Largest width × height accepted (decompression-bomb guard).
    pub max_pixels: u64,
    /// Longest caption kept, in bytes; longer ones are cut there and flagged (runs made before
    /// the limit existed read as the default).
    #[serde(default = "default_max_caption_bytes")]
    pub max_caption_bytes: u64,
}

fn default_max_caption_bytes() -> u64 {
    DEFAULT_MAX_CAPTION_BYTES
}

impl Default for Limits {
    fn default() -> Self {
        // 2 × PIL's MAX_IMAGE_PIXELS, the size at which PIL raises DecompressionBombError.
        Self { max_bytes: 256 << 20, max_pixels: 178_956_970, max_caption_bytes: default_max_caption_bytes() }
    }
}

/// Why a record was not embedded. The string codes are stable: they are written to metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// The file could not be read from disk.
    Unreadable,
    /// The file is empty.
    EmptyFile,
    /// The file is larger than `--max-bytes`.
    TooLarge,
    /// The header declares more pixels than `--max-pixels`.
    TooManyPixels,
    /// The content is not an image format sieve can decode.
    NotAnImage,
    /// A known image format that failed to decode (corrupt or truncated).
    DecodeError,
    /// A manifest names a remote URL; downloading is img2dataset's job, not sieve's.
    RemoteUri,
    /// A manifest line that could not be parsed or names no image.
    BadManifestLine,
    /// A tar shard that could not be read (past this point, its members are unknown).
    CorruptArchive,
    /// The file a manifest names does not exist, or a tar sample has no image member.
    Missing,
    /// Not a regular file (a FIFO, socket or device, or a tar member that is a link or device):
    /// never opened for reading, so it cannot hang or exhaust memory.
    NotAFile,
    /// A symlink in the input folder whose target lies outside it (followed only with
    /// `--follow-links`).
    LinkOutsideInput,
    /// The model produced NaN or infinite values for this record; nothing was stored.
    NonFiniteEmbedding,
}

impl SkipReason {
    pub fn code(self) -> &'static str {
        match self {
            SkipReason::Unreadable => "unreadable",
            SkipReason::EmptyFile => "empty-file",
            SkipReason::TooLarge => "too-large",
            SkipReason::TooManyPixels => "too-many-pixels",
            SkipReason::NotAnImage => "not-an-image",
            SkipReason::DecodeError => "decode-error",
            SkipReason::RemoteUri => "remote-uri",
            SkipReason::BadManifestLine => "bad-manifest-line",
            SkipReason::CorruptArchive => "corrupt-archive",
            SkipReason::Missing => "missing",
            SkipReason::NotAFile => "not-a-file",
            SkipReason::LinkOutsideInput => "link-outside-input",
            SkipReason::NonFiniteEmbedding => "non-finite-embedding",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// A record that is listed, not embedded: the reason code and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub reason: SkipReason,
    pub detail: String,
}

impl Skip {
    pub fn new(reason: SkipReason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}

/// A decoded image, converted to 8-bit RGB, upright.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub rgb: RgbImage,
    /// Width as displayed (after EXIF orientation).
    pub width: u32,
    pub height: u32,
    /// The file stores colour (false for grey-only pixel formats and grey JPEGs).
    pub colour: bool,
    /// Frames the container holds (GIF, APNG, animated WebP); 1 for a still image. Read from
    /// the container's structure; only the first frame is decoded.
    pub frames: u32,
}

/// Decodes `bytes` into upright 8-bit RGB, refusing oversize inputs before allocating pixels.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Decoded, Skip> {
    if bytes.is_empty() {
        return Err(Skip::new(SkipReason::EmptyFile, "file is empty"));
    }
    if bytes.len() as u64 > limits.max_bytes {
        return Err(Skip::new(
            SkipReason::TooLarge,
            format!("{} bytes, over the limit of {} (--max-bytes)", bytes.len(), limits.max_bytes),
        ));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Skip::new(SkipReason::Unreadable, e.to_string()))?;
    // Buffers the decoders allocate beyond the header's size (a GIF frame larger than its
    // screen, say) are held to what --max-pixels allows at 8 bytes a pixel (16-bit RGBA), and
    // never above image's own default.
    let mut alloc = image::Limits::default();
    alloc.max_alloc = alloc.max_alloc.map(|m| m.min(limits.max_pixels.saturating_mul(8)));
    reader.limits(alloc);
    let Some(format) = reader.format() else {
        return Err(Skip::new(SkipReason::NotAnImage, "content is not a recognised image format"));
    };
    if format == image::ImageFormat::Jpeg {
        let (mut rgb, orientation, colour) = super::jpeg::decode(bytes, limits)?;
        if orientation != image::metadata::Orientation::NoTransforms {
            let mut img = DynamicImage::ImageRgb8(rgb);
            img.apply_orientation(orientation);
            rgb = img.into_rgb8();
        }
        let (width, height) = rgb.dimensions();
        return Ok(Decoded { rgb, width, height, colour, frames: 1 });
    }
    if let Some((w, h)) = declared_size(format, bytes) {
        check_pixels(format, w, h, limits)?;
    }
    let decode_err = |e: image::ImageError| match e {
        image::ImageError::Unsupported(u) => Skip::new(SkipReason::NotAnImage, format!("{format:?}: {u}")),
        // A frame or buffer larger than the header's size (an animated GIF frame, say).
        image::ImageError::Limits(l) => {
            Skip::new(SkipReason::TooManyPixels, format!("{format:?}: refused before allocating: {l}"))
        }
        other => Skip::new(SkipReason::DecodeError, format!("{format:?}: {other}")),
    };
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(Skip::new(SkipReason::DecodeError, format!("{format:?}: header says {w}×{h} pixels")));
    }
    check_pixels(format, w as u64, h as u64, limits)?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let colour = !matches!(
        decoder.color_type(),
        image::ColorType::L8 | image::ColorType::La8 | image::ColorType::L16 | image::ColorType::La16
    );
    let mut img = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    img.apply_orientation(orientation);
    let rgb = to_rgb8(img);
    let (width, height) = rgb.dimensions();
    Ok(Decoded { rgb, width, height, colour, frames: frame_count(format, bytes) })
}

/// Frames in an animated container, counted from its structure without decoding them: GIF
/// image descriptors, APNG's `acTL` frame count, WebP `ANMF` chunks. 1 for anything else or a
/// structure that cannot be walked (the first frame decoded, so the file is an image).
pub fn frame_count(format: image::ImageFormat, bytes: &[u8]) -> u32 {
    let n = match format {
        image::ImageFormat::Gif => gif_frames(bytes),
        image::ImageFormat::Png => png_frames(bytes),
        image::ImageFormat::WebP => webp_frames(bytes),
        _ => None,
    };
    n.unwrap_or(1).max(1)
}

fn gif_frames(b: &[u8]) -> Option<u32> {
    let flags = *b.get(10)?;
    let mut i = 13 + if flags & 0x80 != 0 { 3 << ((flags & 7) + 1) } else { 0 };
    let skip_sub_blocks = |mut i: usize| -> Option<usize> {
        loop {
            let len = *b.get(i)? as usize;
            i += 1 + len;
            if len == 0 {
                return Some(i);
            }
        }
    };
    let mut frames = 0;
    loop {
        match b.get(i) {
            Some(0x2C) => {
                frames += 1;
                let packed = *b.get(i + 9)?;
                i += 10 + if packed & 0x80 != 0 { 3 << ((packed & 7) + 1) } else { 0 };
                i = match skip_sub_blocks(i + 1) {
                    Some(i) => i,
                    None => return Some(frames), // truncated inside a frame
                };
            }
            Some(0x21) => i = skip_sub_blocks(i + 2)?,
            _ => return Some(frames), // trailer (0x3B), or junk after the last frame
        }
    }
}

fn png_frames(b: &[u8]) -> Option<u32> {
    let mut i = 8;
    while i + 8 <= b.len() {
        let len = u32::from_be_bytes(b[i..i + 4].try_into().ok()?) as usize;
        let kind = &b[i + 4..i + 8];
        if kind == b"acTL" {
            return Some(u32::from_be_bytes(b.get(i + 8..i + 12)?.try_into().ok()?));
        }
        if kind == b"IDAT" {
            return None; // acTL must come before the image data
        }
        i = i.checked_add(12 + len)?;
    }
    None
}

fn webp_frames(b: &[u8]) -> Option<u32> {
    let mut i = 12;
    let mut frames = 0;
    while i + 8 <= b.len() {
        let kind = &b[i..i + 4];
        let len = u32::from_le_bytes(b[i + 4..i + 8].try_into().ok()?) as usize;
        if kind == b"VP8X" && b.get(i + 8)? & 0x02 == 0 {
            return None; // not animated
        }
        if kind == b"ANMF" {
            frames += 1;
        }
        i = i.checked_add(8 + len + (len & 1))?;
    }
    Some(frames)
}

fn check_pixels(format: image::ImageFormat, w: u64, h: u64, limits: &Limits) -> Result<(), Skip> {
    if w * h > limits.max_pixels {
        return Err(Skip::new(
            SkipReason::TooManyPixels,
            format!("{format:?}: {w}×{h} pixels, over the limit of {} (--max-pixels)", limits.max_pixels),
        ));
    }
    Ok(())
}

/// The size a header declares, read here for formats whose decoder refuses large sizes with an
/// error of its own before telling us the size (image's BMP decoder stops at 65535 per side), so
/// that a bomb is refused as `too-many-pixels`, not as a decode error. Other formats report
/// their header's size through `ImageDecoder::dimensions` before any pixel is allocated.
fn declared_size(format: image::ImageFormat, bytes: &[u8]) -> Option<(u64, u64)> {
    let le = |i: usize, n: usize| -> Option<u64> {
        let b = bytes.get(i..i + n)?;
        Some(b.iter().rev().fold(0u64, |acc, &x| acc << 8 | x as u64))
    };
    match format {
        // BITMAPCOREHEADER (12 bytes) has u16 sizes; the later headers i32, negative height
        // meaning top-down.
        image::ImageFormat::Bmp => match le(14, 4)? {
            12 => Some((le(18, 2)?, le(20, 2)?)),
            _ => Some((
                (le(18, 4)? as u32 as i32).unsigned_abs() as u64,
                (le(22, 4)? as u32 as i32).unsigned_abs() as u64,
            )),
        },
        _ => None,
    }
}

/// RGB as transformers' `convert_to_rgb` makes it from what Pillow opens: images with
/// transparency are composited onto white (PIL's `alpha_composite`, bit-exact), grey is
/// replicated. 16-bit samples become 8-bit as Pillow reads them: RGB(A) and grey+alpha keep the
/// high byte (Pillow's `RGB;16B`/`LA;16B` unpackers), while 16-bit grey without alpha opens as
/// `I;16`, whose conversion to RGB clamps each value to 0..=255 rather than scaling it. That
/// turns most 16-bit grey photos nearly white; it is what transformers' models see, so we match.
fn to_rgb8(img: DynamicImage) -> RgbImage {
    let high_byte = |v: u16| (v >> 8) as u8;
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma16(grey) => {
            let (w, h) = grey.dimensions();
            let rgb = grey.into_raw().into_iter().flat_map(|v| [v.min(255) as u8; 3]).collect();
            RgbImage::from_raw(w, h, rgb).expect("3 samples per pixel")
        }
        DynamicImage::ImageRgb16(rgb) => {
            let (w, h) = rgb.dimensions();
            RgbImage::from_raw(w, h, rgb.into_raw().into_iter().map(high_byte).collect()).expect("same length")
        }
        DynamicImage::ImageLumaA16(la) => {
            let (w, h) = la.dimensions();
            let rgba: Vec<u8> = la
                .as_raw()
                .chunks_exact(2)
                .flat_map(|p| {
                    let l = high_byte(p[0]);
                    [l, l, l, high_byte(p[1])]
                })
                .collect();
            composite_rgba_on_white(&image::RgbaImage::from_raw(w, h, rgba).expect("4 samples per pixel"))
        }
        DynamicImage::ImageRgba16(rgba) => {
            let (w, h) = rgba.dimensions();
            let rgba = image::RgbaImage::from_raw(w, h, rgba.into_raw().into_iter().map(high_byte).collect());
            composite_rgba_on_white(&rgba.expect("same length"))
        }
        other if other.color().has_alpha() => composite_rgba_on_white(&other.to_rgba8()),
        other => other.to_rgb8(),
    }
}

fn composite_rgba_on_white(rgba: &image::RgbaImage) -> RgbImage {
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (src, dst) in rgba.pixels().zip(out.pixels_mut()) {
        let a = src[3] as u32;
        for c in 0..3 {
            dst[c] = composite_on_white(src[c] as u32, a);
        }
    }
    out
}

/// One channel of PIL's `ImagingAlphaComposite` with an opaque white destination
/// (PRECISION_BITS = 7, SHIFTFORDIV255 rounding).
fn composite_on_white(c: u32, a: u32) -> u8 {
    let coef1 = a << 7;
    let coef2 = (255 - a) << 7;
    let tmp = c * coef1 + 255 * coef2 + (0x80 << 7);
    ((((tmp >> 8) + tmp) >> 8) >> 7) as u8
}
