//! WebDataset tar shards, as img2dataset writes them: members `KEY.jpg`, `KEY.txt`, `KEY.json`
//! grouped by key (the member's path up to the first dot of its file name). Only the headers are
//! read here, seeking past the data; a member's bytes are read in place when it is decoded, so
//! nothing is unpacked to disk.
//!
//! A record's id is `tar index × TAR_ID_STRIDE + position in the tar`, so each shard's ids are
//! known without reading the other shards (`--shard` splits whole tars among processes). Its uri
//! is `TAR/MEMBER`, e.g. `shards/00003.tar/000030007.jpg`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::dir::IMAGE_EXTENSIONS;
use super::locate::split_key;
use super::origin::{JsonAt, Origin, OriginSource};
use super::{Archive, CaptionSource, Member, Record, Source};
use crate::error::{Error, Result};
use crate::media::decode::{Skip, SkipReason};

/// Ids of the records of tar `i` start at `i × TAR_ID_STRIDE`.
pub const TAR_ID_STRIDE: u64 = 1_000_000_000;

#[derive(Default)]
struct Sample {
    images: Vec<(String, Member)>,
    /// Image-named members that are not regular files (links, devices, FIFOs): listed, never read.
    specials: Vec<(String, String)>,
    txt: Option<Member>,
    json: Option<Member>,
    first_member: String,
}

/// Lists the samples of the tar at `path`, the `index`-th of the input.
pub fn scan(path: &Path, index: u64) -> Result<Vec<Record>> {
    let base = index * TAR_ID_STRIDE;
    let shown = path.display().to_string();
    let corrupt = |id: u64, detail: String| Record {
        id,
        uri: shown.clone(),
        source: Source::None,
        caption: CaptionSource::None,
        skip: Some(Skip::new(SkipReason::CorruptArchive, detail)),
        origin: None,
    };
    let archive = match Archive::open(path) {
        Ok(a) => Arc::new(a),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::InvalidArg { what: "INPUT", reason: format!("{shown} does not exist") })
        }
        Err(e) => return Ok(vec![corrupt(base, format!("cannot open: {e}"))]),
    };
    if archive.read_at(0, 2).is_ok_and(|magic| magic == [0x1f, 0x8b]) {
        return Ok(vec![corrupt(base, "gzip-compressed tar; sieve reads plain .tar shards (gunzip it first)".into())]);
    }
    // The headers are read through the same open file the members will be read from.
    let mut tar = tar::Archive::new(&archive.file);
    let mut order: Vec<String> = Vec::new();
    let mut samples: HashMap<String, Sample> = HashMap::new();
    let mut failure = None;
    let mut members = 0u64;
    match tar.entries_with_seek() {
        Err(e) => failure = Some(e.to_string()),
        Ok(entries) => {
            for entry in entries {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                };
                let kind = entry.header().entry_type();
                if !kind.is_file() {
                    let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                    let (key, ext) = split_key(&name);
                    if !kind.is_dir() && IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) {
                        let what = if kind.is_symlink() {
                            "a symlink"
                        } else if kind.is_hard_link() {
                            "a hard link"
                        } else {
                            "not a regular file"
                        };
                        let sample = samples.entry(key.to_string()).or_insert_with(|| {
                            order.push(key.to_string());
                            Sample { first_member: name.clone(), ..Default::default() }
                        });
                        sample.specials.push((name, format!("tar member is {what}; only regular members are read")));
                    }
                    continue;
                }
                members += 1;
                let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                let member = Member { archive: archive.clone(), offset: entry.raw_file_position(), len: entry.size() };
                let (key, ext) = split_key(&name);
                let ext = ext.to_ascii_lowercase();
                let sample = samples.entry(key.to_string()).or_insert_with(|| {
                    order.push(key.to_string());
                    Sample { first_member: name.clone(), ..Default::default() }
                });
                if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
                    sample.images.push((name, member));
                } else if ext == "txt" {
                    sample.txt.get_or_insert(member);
                } else if ext == "json" {
                    sample.json.get_or_insert(member);
                }
            }
        }
    }
    let mut records = Vec::new();
    for key in order {
        let s = samples.remove(&key).expect("listed key");
        let caption = match (s.txt, &s.json) {
            (Some(m), _) => CaptionSource::Member(m),
            (None, Some(m)) => CaptionSource::JsonMember(m.clone()),
            (None, None) => CaptionSource::None,
        };
        let had_specials = !s.specials.is_empty();
        for (name, detail) in s.specials {
            let id = base + records.len() as u64;
            records.push(Record {
                id,
                uri: format!("{shown}/{name}"),
                source: Source::None,
                caption: CaptionSource::None,
                skip: Some(Skip::new(SkipReason::NotAFile, detail)),
                origin: None,
            });
        }
        if s.images.is_empty() {
            if had_specials {
                continue; // its image is listed above, as a link or device member
            }
            if matches!(caption, CaptionSource::None) {
                continue; // neither image nor caption (e.g. a lone .npy): not a sample
            }
            let id = base + records.len() as u64;
            records.push(Record {
                id,
                uri: format!("{shown}/{}", s.first_member),
                source: Source::None,
                caption: CaptionSource::None,
                skip: Some(Skip::new(SkipReason::Missing, format!("sample `{key}` has no image member"))),
                origin: None,
            });
            continue;
        }
        // The sample's key, and its `.json` (img2dataset's fields), read when decoding.
        let origin = OriginSource {
            fields: Origin { key: Some(key.rsplit('/').next().unwrap_or(&key).to_string()), ..Default::default() },
            json: s.json.map(JsonAt::Member),
        };
        for (name, member) in s.images {
            let id = base + records.len() as u64;
            records.push(Record {
                id,
                uri: format!("{shown}/{name}"),
                source: Source::Member(member),
                caption: caption.clone(),
                skip: None,
                origin: Some(Box::new(origin.clone())),
            });
        }
    }
    if let Some(e) = failure {
        tracing::warn!("{shown}: unreadable after {members} members: {e}");
        let id = base + records.len() as u64;
        records.push(corrupt(id, format!("unreadable after {members} members: {e}")));
    }
    if records.len() as u64 >= TAR_ID_STRIDE {
        return Err(Error::InvalidArg { what: "INPUT", reason: format!("{shown} holds over {TAR_ID_STRIDE} samples") });
    }
    Ok(records)
}
