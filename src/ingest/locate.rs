//! A record's original bytes, read back from its uri after the run was made: the file a path
//! names, the member of a WebDataset tar a `TAR/MEMBER` uri names (read in place), or the cell
//! of a Parquet image column a `FILE.parquet#ROW` uri names ([`super::cells`]). Used by the
//! report's thumbnails and by `sieve export --format webdataset`. Uris are relative to the folder
//! `sieve embed` ran in, as the run records them.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Archive, Member};

/// Tar shards whose member lists are kept at once: readers go through a run in order, so a few
/// suffice, and a run of thousands of shards never holds every member list.
const CACHED_TARS: usize = 16;

/// The regular members of one tar by name, or why it cannot be read.
type Members = Arc<Result<HashMap<String, Member>, String>>;

/// Reads records' bytes by uri, keeping the member lists of the last few tars it opened.
pub struct Locator {
    max_bytes: u64,
    tars: Mutex<(HashMap<PathBuf, Members>, VecDeque<PathBuf>)>,
    /// Open Parquet image columns (each caching its last row groups), as many as tars.
    columns: Mutex<VecDeque<(PathBuf, Arc<super::cells::ImageColumn>)>>,
}

impl Locator {
    /// `max_bytes`: the run's `--max-bytes`; a larger file or member is refused, not read.
    pub fn new(max_bytes: u64) -> Self {
        Self { max_bytes, tars: Mutex::new((HashMap::new(), VecDeque::new())), columns: Mutex::new(VecDeque::new()) }
    }

    /// The bytes of `uri`: the file it names, else a member of the tar shard its prefix names.
    /// The error is a short reason for a message.
    pub fn read(&self, uri: &str) -> Result<Vec<u8>, String> {
        match self.find(uri)? {
            Some(bytes) => Ok(bytes),
            None => Err("not found (images are read from their uri, relative to the current folder)".into()),
        }
    }

    /// The bytes of the file or tar member beside `uri` with extension `ext` (`a/cat.jpg` →
    /// `a/cat.json`; in a tar, the same sample's `KEY.json`); `Ok(None)` when there is none.
    pub fn sidecar(&self, uri: &str, ext: &str) -> Result<Option<Vec<u8>>, String> {
        let (key, _) = split_key(uri);
        // A tar member's key ends at the first dot of its file name; a file's extension is
        // only its last one (`a/b.c.jpg` → `a/b.c.json`), as folder input pairs captions.
        let file = Path::new(uri).with_extension(ext);
        if file.is_file() {
            return self.find(&file.display().to_string());
        }
        match tar_prefix(uri) {
            Some(_) => self.find(&format!("{key}.{ext}")),
            None => Ok(None),
        }
    }

    /// The bytes of `uri`, `None` when neither a file nor a member of a tar has that name.
    fn find(&self, uri: &str) -> Result<Option<Vec<u8>>, String> {
        let path = Path::new(uri);
        if path.is_file() {
            let len = path.metadata().map_err(|e| e.to_string())?.len();
            if len > self.max_bytes {
                return Err(format!("{len} bytes, over the run's --max-bytes"));
            }
            return std::fs::read(path).map(Some).map_err(|e| format!("cannot read: {e}"));
        }
        if let Some((file, row)) = super::cells::parse_uri(uri) {
            let column = self.column(&file)?;
            let bytes = super::cells::read_row(&column, row).map_err(|e| format!("{e:#}"))?;
            if bytes.len() as u64 > self.max_bytes {
                return Err(format!("{} bytes, over the run's --max-bytes", bytes.len()));
            }
            return Ok(Some(bytes));
        }
        let Some(tar) = tar_prefix(uri) else { return Ok(None) };
        let members = self.members(&tar);
        let members = members.as_ref().as_ref().map_err(Clone::clone)?;
        let Some(member) = members.get(&uri[tar.as_os_str().len() + 1..]) else { return Ok(None) };
        if member.len > self.max_bytes {
            return Err(format!("{} bytes, over the run's --max-bytes", member.len));
        }
        member.read().map(Some).map_err(|e| format!("cannot read from {}: {e}", tar.display()))
    }

    fn column(&self, file: &Path) -> Result<Arc<super::cells::ImageColumn>, String> {
        let mut columns = self.columns.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = columns.iter().find(|(p, _)| p == file) {
            return Ok(c.clone());
        }
        let c = Arc::new(super::cells::open_image_column(file).map_err(|e| format!("{e:#}"))?);
        if columns.len() >= CACHED_TARS {
            columns.pop_front();
        }
        columns.push_back((file.to_path_buf(), c.clone()));
        Ok(c)
    }

    fn members(&self, tar: &Path) -> Members {
        let mut guard = self.tars.lock().unwrap_or_else(|e| e.into_inner());
        let (tars, order) = &mut *guard;
        if let Some(m) = tars.get(tar) {
            return m.clone();
        }
        let members = Arc::new(scan(tar));
        if order.len() >= CACHED_TARS {
            if let Some(old) = order.pop_front() {
                tars.remove(&old);
            }
        }
        tars.insert(tar.to_path_buf(), members.clone());
        order.push_back(tar.to_path_buf());
        members
    }
}

/// The regular members of the tar at `path`, by name (the first of a repeated name).
fn scan(path: &Path) -> Result<HashMap<String, Member>, String> {
    let archive = Arc::new(Archive::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?);
    let mut tar = tar::Archive::new(&archive.file);
    let mut out = HashMap::new();
    let entries = tar.entries_with_seek().map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let member = Member { archive: archive.clone(), offset: entry.raw_file_position(), len: entry.size() };
        out.entry(name).or_insert(member);
    }
    Ok(out)
}

/// The tar file a `TAR/MEMBER` uri names, if its prefix up to a `.tar/` is a file.
pub fn tar_prefix(uri: &str) -> Option<PathBuf> {
    uri.match_indices(".tar/").map(|(i, _)| PathBuf::from(&uri[..i + 4])).find(|p| p.is_file())
}

/// Splits a path into (key, extension) as WebDataset does: the key runs up to the first dot of
/// the file name (`dir/abc.seg.png` → (`dir/abc`, `seg.png`)).
pub fn split_key(name: &str) -> (&str, &str) {
    let file_start = name.rfind('/').map_or(0, |i| i + 1);
    match name[file_start..].find('.') {
        Some(dot) => (&name[..file_start + dot], &name[file_start + dot + 1..]),
        None => (name, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_tar_members_and_their_sidecars_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let tar_path = dir.path().join("s.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
        for (name, data) in [("k1.jpg", &b"JPEG"[..]), ("k1.json", b"{\"a\":1}"), ("d/k2.seg.png", b"PNG")] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        }
        b.finish().unwrap();
        drop(b);
        let l = Locator::new(1 << 20);
        let t = tar_path.display().to_string();
        assert_eq!(l.read(&format!("{t}/k1.jpg")).unwrap(), b"JPEG");
        assert_eq!(l.sidecar(&format!("{t}/k1.jpg"), "json").unwrap().unwrap(), b"{\"a\":1}");
        assert_eq!(l.read(&format!("{t}/d/k2.seg.png")).unwrap(), b"PNG");
        assert_eq!(l.sidecar(&format!("{t}/d/k2.seg.png"), "json").unwrap(), None);
        assert!(l.read(&format!("{t}/gone.jpg")).unwrap_err().starts_with("not found"));
        let f = dir.path().join("a.b.jpg");
        std::fs::write(&f, b"x").unwrap();
        std::fs::write(dir.path().join("a.b.json"), b"{}").unwrap();
        assert_eq!(l.sidecar(&f.display().to_string(), "json").unwrap().unwrap(), b"{}");
        assert!(Locator::new(0).read(&f.display().to_string()).unwrap_err().contains("--max-bytes"));
        assert_eq!(split_key("d/abc.seg.png"), ("d/abc", "seg.png"));
    }
}
