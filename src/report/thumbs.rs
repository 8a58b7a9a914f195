//! Thumbnails for the report: an item's bytes are read from its uri (a file, or a tar member
//! `TAR/MEMBER` read in place), decoded by [`crate::media::decode`] (so EXIF orientation, CMYK
//! and the size limits are handled as when embedding), shrunk to fit a square box and embedded
//! as a base64 JPEG `data:` URI. Anything that fails becomes a reason shown in a placeholder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use image::codecs::jpeg::JpegEncoder;
use rayon::prelude::*;

use crate::ingest::{wds, Member, Source};
use crate::media::decode::{decode, Limits};

/// JPEG quality of the thumbnails: small files, no visible blocking at 128 px.
const JPEG_QUALITY: u8 = 80;

/// Members of each tar shard a uri named, by uri (scanned once per shard).
type TarIndex = HashMap<PathBuf, Arc<HashMap<String, Member>>>;

/// Makes thumbnails for the uris of one run.
pub(crate) struct Thumbnailer {
    limits: Limits,
    size: u32,
    tars: Mutex<TarIndex>,
}

impl Thumbnailer {
    pub fn new(limits: Limits, size: u32) -> Self {
        Self { limits, size: size.max(8), tars: Mutex::new(HashMap::new()) }
    }

    /// Thumbnails of `uris` (in parallel), each a `data:` URI or the reason there is none.
    pub fn make_all(&self, uris: &[String]) -> HashMap<String, Result<String, String>> {
        uris.par_iter().map(|u| (u.clone(), self.make(u))).collect()
    }

    fn make(&self, uri: &str) -> Result<String, String> {
        let bytes = self.read(uri)?;
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

    /// The bytes of `uri`: the file it names, else a member of the tar shard its prefix names.
    fn read(&self, uri: &str) -> Result<Vec<u8>, String> {
        let path = Path::new(uri);
        if path.is_file() {
            let len = path.metadata().map_err(|e| e.to_string())?.len();
            if len > self.limits.max_bytes {
                return Err(format!("{len} bytes, over the run's --max-bytes"));
            }
            return std::fs::read(path).map_err(|e| format!("cannot read: {e}"));
        }
        let Some(tar) = tar_prefix(uri) else {
            return Err("not found (the report reads images from their uri, relative to the current folder)".into());
        };
        let members = self.tar_members(&tar)?;
        let member = members.get(uri).ok_or_else(|| format!("no such member in {}", tar.display()))?;
        if member.len > self.limits.max_bytes {
            return Err(format!("{} bytes, over the run's --max-bytes", member.len));
        }
        member.read().map_err(|e| format!("cannot read from {}: {e}", tar.display()))
    }

    fn tar_members(&self, tar: &Path) -> Result<Arc<HashMap<String, Member>>, String> {
        let mut tars = self.tars.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = tars.get(tar) {
            return Ok(m.clone());
        }
        let records = wds::scan(tar, 0).map_err(|e| format!("{e:#}"))?;
        let members: HashMap<String, Member> = records
            .into_iter()
            .filter_map(|r| match r.source {
                Source::Member(m) => Some((r.uri, m)),
                _ => None,
            })
            .collect();
        let members = Arc::new(members);
        tars.insert(tar.to_path_buf(), members.clone());
        Ok(members)
    }
}

/// The tar file a `TAR/MEMBER` uri names, if its prefix up to a `.tar/` is a file.
fn tar_prefix(uri: &str) -> Option<PathBuf> {
    uri.match_indices(".tar/").map(|(i, _)| PathBuf::from(&uri[..i + 4])).find(|p| p.is_file())
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
