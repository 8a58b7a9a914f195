//! Thumbnails for the report: an item's bytes are read from its uri (a file, or a tar member
//! `TAR/MEMBER` read in place), decoded by [`crate::media::decode`] (so EXIF orientation, CMYK
//! and the size limits are handled as when embedding), shrunk to fit a square box and embedded
//! as a base64 JPEG `data:` URI. Anything that fails becomes a reason shown in a placeholder.

use std::collections::HashMap;

use base64::Engine;
use image::codecs::jpeg::JpegEncoder;
use rayon::prelude::*;

use crate::ingest::locate::Locator;
use crate::media::decode::{decode, Limits};

/// JPEG quality of the thumbnails: small files, no visible blocking at 128 px.
const JPEG_QUALITY: u8 = 80;

/// Makes thumbnails for the uris of one run.
pub(crate) struct Thumbnailer {
    limits: Limits,
    size: u32,
    locator: Locator,
}

impl Thumbnailer {
    pub fn new(limits: Limits, size: u32) -> Self {
        Self { limits, size: size.max(8), locator: Locator::new(limits.max_bytes) }
    }

    /// Thumbnails of `uris` (in parallel), each a `data:` URI or the reason there is none.
    pub fn make_all(&self, uris: &[String]) -> HashMap<String, Result<String, String>> {
        uris.par_iter().map(|u| (u.clone(), self.make(u))).collect()
    }

    fn make(&self, uri: &str) -> Result<String, String> {
        let bytes = self.locator.read(uri)?;
        let img = decode(&bytes, &self.limits).map_err(|s| format!("{}: {}", s.reason, s.detail))?.rgb;
        let (w, h) = img.dimensions();
        let scale = (self.size as f64 / w.max(h) as f64).min(1.0);
        let (tw, th) = (((w as f64 * scale).round() as u32).max(1), ((h as f64 * scale).round() as u32).max(1));
        let small = if (tw, th) == (w, h) { img } else { image::imageops::thumbnail(&img, tw, th) };
        let mut jpeg = Vec::new();
        JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY)
            .encode_image(&small)
            .map_err(|e| format!("encoding the thumbnail: {e}"))?;
        Ok(format!("data:image/jpeg;base64,{}", base64::engine::general_purpose::STANDARD.encode(&jpeg)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_or_undecodable_bytes_give_a_reason_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.jpg");
        std::fs::write(&bad, b"not an image").unwrap();
        let t = Thumbnailer::new(Limits::default(), 64);
        let uris = vec![bad.display().to_string(), dir.path().join("gone.png").display().to_string()];
        let out = t.make_all(&uris);
        assert!(out[&uris[0]].as_ref().unwrap_err().starts_with("not-an-image"), "{:?}", out[&uris[0]]);
        assert!(out[&uris[1]].as_ref().unwrap_err().starts_with("not found"), "{:?}", out[&uris[1]]);
    }

    #[test]
    fn a_picture_becomes_a_small_jpeg_data_uri() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        image::RgbImage::from_fn(400, 100, |x, _| image::Rgb([(x % 256) as u8, 0, 0])).save(&p).unwrap();
        let t = Thumbnailer::new(Limits::default(), 64);
        let uri = t.make(&p.display().to_string()).unwrap();
        let b64 = uri.strip_prefix("data:image/jpeg;base64,").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        let img = image::load_from_memory(&bytes).unwrap();
        assert_eq!((img.width(), img.height()), (64, 16));
    }
}
