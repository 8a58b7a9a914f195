//! A folder of images, walked recursively in sorted order, with optional sidecar captions: for
//! `a/b/cat.jpg`, the caption is `a/b/cat.txt` when it exists, else the `caption` field of
//! `a/b/cat.json`. Symlinks are followed; loops and dangling links are reported, never fatal.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use super::{CaptionSource, Record, Source};
use crate::error::{Error, Result};
use crate::media::decode::{Skip, SkipReason};

/// File extensions (lower case) treated as images.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

fn is_image_name(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Lists the image records under `root`, sorted by path.
pub fn scan(root: &Path) -> Result<Vec<Record>> {
    let meta = std::fs::metadata(root).map_err(|e| Error::io("reading input folder", root, e))?;
    if !meta.is_dir() {
        return Err(Error::InvalidArg { what: "INPUT", reason: format!("{} is not a folder", root.display()) });
    }
    let mut files: BTreeSet<PathBuf> = BTreeSet::new();
    let mut broken: Vec<(PathBuf, Skip)> = Vec::new();
    for entry in WalkDir::new(root).follow_links(true).sort_by_file_name() {
        match entry {
            Ok(e) if e.file_type().is_file() => {
                files.insert(e.into_path());
            }
            Ok(_) => {} // folders (even ones named like images) and other non-files
            Err(err) => {
                let path = err.path().map(Path::to_path_buf);
                let what = if err.loop_ancestor().is_some() { "symlink loop".to_string() } else { err.to_string() };
                match path {
                    Some(p) if is_image_name(&p) && !p.is_dir() => {
                        broken.push((p, Skip::new(SkipReason::Unreadable, what)));
                    }
                    Some(p) => tracing::warn!("skipping {}: {what}", p.display()),
                    None => tracing::warn!("while walking {}: {what}", root.display()),
                }
            }
        }
    }
    let mut items: Vec<(PathBuf, CaptionSource, Option<Skip>)> = files
        .iter()
        .filter(|p| is_image_name(p))
        .map(|p| {
            let (txt, json) = (p.with_extension("txt"), p.with_extension("json"));
            let caption = if files.contains(&txt) {
                CaptionSource::File(txt)
            } else if files.contains(&json) {
                CaptionSource::JsonFile(json)
            } else {
                CaptionSource::None
            };
            (p.clone(), caption, None)
        })
        .collect();
    items.extend(broken.into_iter().map(|(p, s)| (p, CaptionSource::None, Some(s))));
    items.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, (path, caption, skip))| Record {
            id: i as u64,
            uri: path.display().to_string(),
            source: if skip.is_some() { Source::None } else { Source::File(path) },
            caption,
            skip,
        })
        .collect())
}
