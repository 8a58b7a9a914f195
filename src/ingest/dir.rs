//! A folder of images, walked recursively in sorted order, with optional sidecar captions: for
//! `a/b/cat.jpg`, the caption is `a/b/cat.txt` when it exists, else the `caption` field of
//! `a/b/cat.json`. Symlinks whose targets stay inside the folder are followed; those that leave
//! it are not (unless `--follow-links`): an image reached that way is listed as
//! `link-outside-input`, a caption is not read. Loops and dangling links are reported, never
//! fatal; FIFOs, sockets and devices named like images are listed as `not-a-file`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use super::origin::{JsonAt, OriginSource};
use super::{CaptionSource, Record, Source};
use crate::error::{Error, Result};
use crate::media::decode::{Skip, SkipReason};

/// File extensions (lower case) treated as images.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

pub(crate) fn is_image_name(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Lists the image records under `root`, sorted by path (links leaving `root` not followed).
pub fn scan(root: &Path) -> Result<Vec<Record>> {
    scan_with(root, false)
}

/// Whether `path` (reached under `root`, whose canonical form is `real_root`) resolves to
/// somewhere inside it. Unresolvable paths count as inside: reading them fails on its own.
fn inside(path: &Path, real_root: &Path) -> bool {
    std::fs::canonicalize(path).map_or(true, |p| p.starts_with(real_root))
}

/// [`scan`]; with `follow_links`, symlinks leaving `root` are followed too.
pub fn scan_with(root: &Path, follow_links: bool) -> Result<Vec<Record>> {
    let meta = std::fs::metadata(root).map_err(|e| Error::io("reading input folder", root, e))?;
    if !meta.is_dir() {
        return Err(Error::InvalidArg { what: "INPUT", reason: format!("{} is not a folder", root.display()) });
    }
    let real_root = std::fs::canonicalize(root).map_err(|e| Error::io("reading input folder", root, e))?;
    // Folders reached through a symlink: only what lies under them, or is a link itself, can
    // resolve outside `root`, so only that is canonicalised.
    let linked_dirs: std::cell::RefCell<Vec<PathBuf>> = Default::default();
    let via_link =
        |e: &walkdir::DirEntry| e.path_is_symlink() || linked_dirs.borrow().iter().any(|d| e.path().starts_with(d));
    let leaves = |e: &walkdir::DirEntry| !follow_links && via_link(e) && !inside(e.path(), &real_root);
    let mut files: BTreeSet<PathBuf> = BTreeSet::new();
    let mut outside: BTreeSet<PathBuf> = BTreeSet::new();
    let mut broken: Vec<(PathBuf, Skip)> = Vec::new();
    // A linked folder outside `root` is not walked into (its images could be anything).
    let walk = WalkDir::new(root).follow_links(true).sort_by_file_name().into_iter().filter_entry(|e| {
        let linked_dir = e.path_is_symlink() && e.file_type().is_dir();
        if !linked_dir {
            return true;
        }
        if leaves(e) {
            crate::progress::warn_record("link-outside-input", || {
                format!(
                    "not following {}: it links outside the input folder (pass --follow-links to follow it)",
                    e.path().display()
                )
            });
            return false;
        }
        linked_dirs.borrow_mut().push(e.path().to_path_buf());
        true
    });
    for entry in walk {
        match entry {
            Ok(e) if e.file_type().is_file() => {
                if leaves(&e) {
                    outside.insert(e.into_path());
                } else {
                    files.insert(e.into_path());
                }
            }
            Ok(e) if !e.file_type().is_dir() && is_image_name(e.path()) => {
                // A FIFO, socket or device named like an image: listed, never opened.
                let what = crate::ingest::file_kind(&e.file_type());
                broken.push((
                    e.into_path(),
                    Skip::new(SkipReason::NotAFile, format!("is {what}; only regular files are read")),
                ));
            }
            Ok(_) => {} // folders (even ones named like images) and other non-files
            Err(err) => {
                let path = err.path().map(Path::to_path_buf);
                let what = if err.loop_ancestor().is_some() { "symlink loop".to_string() } else { err.to_string() };
                match path {
                    Some(p) if is_image_name(&p) && !p.is_dir() => {
                        broken.push((p, Skip::new(SkipReason::Unreadable, what)));
                    }
                    Some(p) => {
                        crate::progress::warn_record("walk-error", || format!("skipping {}: {what}", p.display()))
                    }
                    None => tracing::warn!("while walking {}: {what}", root.display()),
                }
            }
        }
    }
    let mut items: Vec<(PathBuf, CaptionSource, Option<Skip>, Option<PathBuf>)> = files
        .iter()
        .filter(|p| is_image_name(p))
        .map(|p| {
            let (txt, json) = (p.with_extension("txt"), p.with_extension("json"));
            for side in [&txt, &json] {
                if outside.contains(side) {
                    crate::progress::warn_record("link-outside-input", || {
                        format!(
                            "not reading caption {}: it links outside the input folder (pass --follow-links to read it)",
                            side.display()
                        )
                    });
                }
            }
            // img2dataset's `files` layout: the `.json` beside each picture holds its fields
            // (key, url, original size…), read into the metadata whether or not it holds the caption.
            let json = files.contains(&json).then_some(json);
            let caption = if files.contains(&txt) {
                CaptionSource::File(txt)
            } else if let Some(json) = &json {
                CaptionSource::JsonFile(json.clone())
            } else {
                CaptionSource::None
            };
            (p.clone(), caption, None, json)
        })
        .collect();
    items.extend(broken.into_iter().map(|(p, s)| (p, CaptionSource::None, Some(s), None)));
    items.extend(outside.iter().filter(|p| is_image_name(p)).map(|p| {
        let target = std::fs::canonicalize(p).map(|t| t.display().to_string()).unwrap_or_default();
        let skip = Skip::new(
            SkipReason::LinkOutsideInput,
            format!("links to {target}, outside the input folder; pass --follow-links to read it"),
        );
        (p.clone(), CaptionSource::None, Some(skip), None)
    }));
    items.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, (path, caption, skip, json))| Record {
            id: i as u64,
            uri: path.display().to_string(),
            source: if skip.is_some() { Source::None } else { Source::File(path) },
            caption,
            skip,
            origin: json.map(|j| Box::new(OriginSource { json: Some(JsonAt::File(j)), ..Default::default() })),
        })
        .collect())
}
