//! Inputs: turning what the user points at into a deterministic list of [`Record`]s. A folder,
//! a manifest (CSV, TSV, JSONL, Parquet) or WebDataset tar shards. A record that is already known
//! to be unusable (a dangling link, a remote URL, a malformed manifest line) carries its [`Skip`]
//! from here so it is still listed in the output.

pub mod cells;
pub mod dir;
pub mod locate;
pub mod manifest;
pub mod origin;
pub mod wds;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::media::decode::{Skip, SkipReason};

pub use crate::media::decode::DEFAULT_MAX_CAPTION_BYTES;

/// A Skip for an I/O error while reading a record's bytes.
pub fn io_skip(e: std::io::Error) -> Skip {
    match e.kind() {
        std::io::ErrorKind::NotFound => Skip::new(SkipReason::Missing, e.to_string()),
        std::io::ErrorKind::UnexpectedEof => Skip::new(SkipReason::DecodeError, "the tar ends inside this member"),
        _ => Skip::new(SkipReason::Unreadable, e.to_string()),
    }
}

/// What kind of thing a non-regular file is, for messages.
pub fn file_kind(ft: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if ft.is_socket() {
            return "a socket";
        }
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
    }
    if ft.is_dir() {
        "a folder"
    } else if ft.is_symlink() {
        "a symlink"
    } else {
        "not a regular file"
    }
}

fn not_a_file(ft: &std::fs::FileType) -> Skip {
    Skip::new(SkipReason::NotAFile, format!("is {}; only regular files are read", file_kind(ft)))
}

/// Reads the regular file at `path`, at most `limit` bytes: `(bytes, more)` where `more` says the
/// file held more than `limit` (then `bytes` is its first `limit`). A FIFO, socket, device or
/// folder is refused from its metadata before it is opened, and the file is opened non-blocking
/// and checked again, so one swapped in meanwhile cannot hang the reader; the size is enforced
/// by reading, not trusted from the metadata (`/proc` files report 0).
pub fn read_regular(path: &Path, limit: u64) -> std::result::Result<(Vec<u8>, bool), Skip> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(io_skip)?;
    if !meta.is_file() {
        return Err(not_a_file(&meta.file_type()));
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let file = opts.open(path).map_err(io_skip)?;
    let meta = file.metadata().map_err(io_skip)?;
    if !meta.is_file() {
        return Err(not_a_file(&meta.file_type()));
    }
    let mut buf = Vec::with_capacity(meta.len().min(limit) as usize + 1);
    (&file).take(limit.saturating_add(1)).read_to_end(&mut buf).map_err(io_skip)?;
    let more = buf.len() as u64 > limit;
    buf.truncate(limit as usize);
    Ok((buf, more))
}

/// A byte range of an archive: one tar member, read in place (never unpacked to disk).
#[derive(Debug, Clone)]
pub struct Member {
    pub archive: Arc<Archive>,
    pub offset: u64,
    pub len: u64,
}

impl Member {
    pub fn read(&self) -> std::io::Result<Vec<u8>> {
        self.archive.read_at(self.offset, self.len)
    }

    /// The member's first `limit` bytes at most, and whether it holds more.
    pub fn read_limited(&self, limit: u64) -> std::io::Result<(Vec<u8>, bool)> {
        Ok((self.archive.read_at(self.offset, self.len.min(limit))?, self.len > limit))
    }
}

/// An open archive file shared by its members' records.
#[derive(Debug)]
pub struct Archive {
    pub path: PathBuf,
    file: File,
}

impl Archive {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Ok(Self { path: path.into(), file: File::open(path)? })
    }

    /// Reads `len` bytes at `offset`; safe to call from many threads at once.
    pub fn read_at(&self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            self.file.read_exact_at(&mut buf, offset)?;
        }
        #[cfg(not(unix))]
        {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = File::open(&self.path)?;
            f.seek(SeekFrom::Start(offset))?;
            f.read_exact(&mut buf)?;
        }
        Ok(buf)
    }
}

/// Where a record's image bytes are.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    Member(Member),
    /// A cell of a Parquet manifest's image bytes column ([`cells`]).
    Cell(cells::Cell),
    /// Nothing to read: the record carries its [`Skip`].
    None,
}

/// Where a record's caption comes from.
#[derive(Debug, Clone)]
pub enum CaptionSource {
    /// No caption.
    None,
    /// A sidecar text file, read during decoding.
    File(PathBuf),
    /// A sidecar JSON file whose `caption` field is the caption.
    JsonFile(PathBuf),
    /// Text from a manifest; `lossy` when its bytes were not valid UTF-8.
    Text { text: String, lossy: bool },
    /// A `.txt` member of a tar shard.
    Member(Member),
    /// A `.json` member of a tar shard, holding a `caption` field.
    JsonMember(Member),
}

/// One input item: an image and its optional caption.
#[derive(Debug, Clone)]
pub struct Record {
    /// Stable id: the record's position in the sorted input (for tar shards,
    /// `shard index × TAR_ID_STRIDE + position in the shard`, see [`wds`]).
    pub id: u64,
    /// The image's location as written to metadata.
    pub uri: String,
    pub source: Source,
    pub caption: CaptionSource,
    /// Known before decoding that this record cannot be embedded.
    pub skip: Option<Skip>,
    /// The sample's own fields, where the input has any (boxed: most inputs have none).
    pub origin: Option<Box<origin::OriginSource>>,
}

/// The kinds of input sieve reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    Dir,
    Csv,
    Tsv,
    Jsonl,
    Parquet,
    Wds,
}

impl InputFormat {
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Dir => "dir",
            InputFormat::Csv => "csv",
            InputFormat::Tsv => "tsv",
            InputFormat::Jsonl => "jsonl",
            InputFormat::Parquet => "parquet",
            InputFormat::Wds => "wds",
        }
    }

    /// The format a path's name or kind implies, if any.
    pub fn detect(path: &Path) -> Option<Self> {
        if path.is_dir() {
            return Some(InputFormat::Dir);
        }
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "csv" => InputFormat::Csv,
            "tsv" | "tab" => InputFormat::Tsv,
            "jsonl" | "ndjson" => InputFormat::Jsonl,
            "parquet" | "pq" => InputFormat::Parquet,
            "tar" => InputFormat::Wds,
            _ => return None,
        })
    }
}

impl std::str::FromStr for InputFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "dir" | "folder" => InputFormat::Dir,
            "csv" => InputFormat::Csv,
            "tsv" => InputFormat::Tsv,
            "jsonl" | "ndjson" => InputFormat::Jsonl,
            "parquet" => InputFormat::Parquet,
            "wds" | "webdataset" | "tar" => InputFormat::Wds,
            other => {
                return Err(Error::InvalidArg {
                    what: "input option format",
                    reason: format!("unknown format `{other}`; use dir, csv, tsv, jsonl, parquet or wds"),
                })
            }
        })
    }
}

/// `--shard i/n`: this process handles the i-th of n deterministic slices (0 ≤ i < n).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// The slice `[start, end)` of `len` items this shard takes: contiguous, sizes differing by
    /// at most one, together covering every item exactly once.
    pub fn range(&self, len: usize) -> std::ops::Range<usize> {
        let (i, n) = (self.index as usize, self.count as usize);
        (len * i / n)..(len * (i + 1) / n)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidArg { what: "input option shard", reason };
        let (i, n) = s.split_once('/').ok_or_else(|| bad(format!("`{s}` is not of the form i/n, e.g. 0/4")))?;
        let index: u32 = i.trim().parse().map_err(|_| bad(format!("`{i}` is not a shard index")))?;
        let count: u32 = n.trim().parse().map_err(|_| bad(format!("`{n}` is not a shard count")))?;
        if count == 0 || index >= count {
            return Err(bad(format!("`{s}`: need 0 ≤ i < n (shards are numbered from 0)")));
        }
        Ok(Shard { index, count })
    }
}

/// What to read and how.
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// Input paths as given (brace patterns such as `shards/{00000..00009}.tar` are expanded).
    pub paths: Vec<PathBuf>,
    /// `None`: detected from the paths.
    pub format: Option<InputFormat>,
    pub image_col: Option<String>,
    pub caption_col: Option<String>,
    pub shard: Option<Shard>,
    /// Follow symlinks in an input folder whose targets lie outside it (`--follow-links`).
    pub follow_links: bool,
    /// Captions longer than this many bytes are cut there (`--max-caption-bytes`).
    pub max_caption_bytes: u64,
    /// Manifest columns carried into each record's `extra` field (`--keep-cols`).
    pub keep_cols: Vec<String>,
}

/// The records of an input, after sharding.
#[derive(Debug, Clone)]
pub struct Listing {
    pub format: InputFormat,
    pub paths: Vec<PathBuf>,
    /// Manifest columns used (manifests only).
    pub image_col: Option<String>,
    pub caption_col: Option<String>,
    pub records: Vec<Record>,
}

impl Listing {
    /// SHA-256 over every record's id and uri: a resumed run checks the input has not changed.
    pub fn fingerprint(&self) -> String {
        crate::digest::listing_sha256(self.records.iter().map(|r| (r.id, r.uri.as_str())))
    }
}

/// Expands shell-style braces: `{a,b}` alternatives and `{000..099}` numeric ranges (zero
/// padded to the width of the wider bound when either bound has a leading zero), as bash and
/// WebDataset do, so quoted patterns work in every shell.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>> {
    let Some(open) = pattern.find('{') else { return Ok(vec![pattern.to_string()]) };
    let bad = |reason: &str| Error::InvalidArg { what: "INPUT", reason: format!("`{pattern}`: {reason}") };
    // The matching close brace (braces may nest).
    let mut depth = 0;
    let mut close = None;
    for (i, c) in pattern[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let close = close.ok_or_else(|| bad("unbalanced `{`"))?;
    let (head, body, tail) = (&pattern[..open], &pattern[open + 1..close], &pattern[close + 1..]);
    let mut alternatives = Vec::new();
    if let Some((a, b)) = body.split_once("..").filter(|(a, b)| !a.contains(',') && !b.contains(',')) {
        let (lo, hi): (u64, u64) = (
            a.parse().map_err(|_| bad(&format!("`{a}` is not a number")))?,
            b.parse().map_err(|_| bad(&format!("`{b}` is not a number")))?,
        );
        if hi < lo {
            return Err(bad("range runs backwards"));
        }
        if hi - lo > 10_000_000 {
            return Err(bad("range is too long"));
        }
        let width = if (a.len() > 1 && a.starts_with('0')) || (b.len() > 1 && b.starts_with('0')) {
            a.len().max(b.len())
        } else {
            0
        };
        alternatives.extend((lo..=hi).map(|v| format!("{v:0width$}")));
    } else {
        // Split on top-level commas.
        let (mut depth, mut start) = (0, 0);
        for (i, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    alternatives.push(body[start..i].to_string());
                    start = i + 1;
                }
                _ => {}
            }
        }
        alternatives.push(body[start..].to_string());
        if alternatives.len() == 1 {
            // `{x}` is literal in bash; keep it.
            return Ok(expand_braces(tail)?.into_iter().map(|t| format!("{head}{{{body}}}{t}")).collect());
        }
    }
    let mut out = Vec::new();
    for alt in alternatives {
        for expanded in expand_braces(&format!("{head}{alt}{tail}"))? {
            out.push(expanded);
        }
    }
    Ok(out)
}

/// Expands `*`, `?` and `[…]` in paths that do not exist as written, as a shell would (sorted,
/// a leading dot matched only literally); a pattern that matches nothing is an error, not a
/// literal name. A quoted `'shards/*.tar'` so works as it does unquoted.
fn expand_globs(paths: Vec<PathBuf>) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let text = p.to_string_lossy().into_owned();
        if p.exists() || !text.contains(['*', '?', '[']) {
            out.push(p);
            continue;
        }
        let bad = |reason: String| Error::InvalidArg { what: "INPUT", reason };
        let options = glob::MatchOptions { require_literal_leading_dot: true, ..Default::default() };
        let matches =
            glob::glob_with(&text, options).map_err(|e| bad(format!("`{text}` is not a valid pattern: {e}")))?;
        let mut found = Vec::new();
        for m in matches {
            found.push(m.map_err(|e| bad(format!("while expanding `{text}`: {e}")))?);
        }
        if found.is_empty() {
            return Err(bad(format!("`{text}` matches no file")));
        }
        out.extend(found);
    }
    Ok(out)
}

/// A folder of WebDataset tars as img2dataset writes them (tars, with parquet and json beside
/// them, no pictures and no subfolders) is read as those tars, in name order; with
/// `--input-format wds`, any folder's tars are. Other inputs pass through.
fn tars_of_folder(paths: Vec<PathBuf>, forced: Option<InputFormat>) -> Result<Vec<PathBuf>> {
    let [dir] = paths.as_slice() else { return Ok(paths) };
    if !dir.is_dir() || !matches!(forced, None | Some(InputFormat::Wds)) {
        return Ok(paths);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("reading", dir, e))?;
    let (mut tars, mut other_content) = (Vec::new(), false);
    for e in entries {
        let e = e.map_err(|e| Error::io("reading", dir, e))?;
        let path = e.path();
        let is_tar = path.extension().is_some_and(|x| x.eq_ignore_ascii_case("tar"));
        if is_tar && path.is_file() {
            tars.push(path);
        } else if path.is_dir() || dir::is_image_name(&path) {
            other_content = true;
        }
    }
    tars.sort();
    match forced {
        Some(_) if tars.is_empty() => Err(Error::InvalidArg {
            what: "INPUT",
            reason: format!("{} holds no .tar files to read as WebDataset shards", dir.display()),
        }),
        Some(_) => Ok(tars),
        None if !tars.is_empty() && !other_content => {
            tracing::info!("{}: a folder of {} tar shards, read as WebDataset", dir.display(), tars.len());
            Ok(tars)
        }
        None => {
            if !tars.is_empty() {
                tracing::warn!(
                    "{} holds pictures or folders and {} .tar files; the tars are not read (pass them as `{}/*.tar`)",
                    dir.display(),
                    tars.len(),
                    dir.display()
                );
            }
            Ok(paths)
        }
    }
}

/// Lists the records of `spec`, then keeps this shard's slice. With tar shards, whole tars are
/// split among the shards (so a shard never reads another's tars); otherwise the sorted record
/// list is cut into `count` contiguous slices.
pub fn list(spec: &InputSpec) -> Result<Listing> {
    let mut paths = Vec::new();
    for p in &spec.paths {
        let text = p.to_string_lossy();
        if text.contains('{') && !p.exists() {
            paths.extend(expand_braces(&text)?.into_iter().map(PathBuf::from));
        } else {
            paths.push(p.clone());
        }
    }
    let paths = expand_globs(paths)?;
    if paths.is_empty() {
        return Err(Error::InvalidArg { what: "INPUT", reason: "no input given".into() });
    }
    let paths = tars_of_folder(paths, spec.format)?;
    let format = match spec.format {
        Some(f) => f,
        None => {
            let mut found: Option<InputFormat> = None;
            for p in &paths {
                if !p.exists() {
                    return Err(Error::InvalidArg { what: "INPUT", reason: format!("{} does not exist", p.display()) });
                }
                let f = InputFormat::detect(p).ok_or_else(|| Error::InvalidArg {
                    what: "INPUT",
                    reason: format!(
                        "cannot tell what {} is from its name; pass --input-format dir, csv, tsv, jsonl, parquet or wds",
                        p.display()
                    ),
                })?;
                match found {
                    Some(g) if g != f => {
                        return Err(Error::InvalidArg {
                            what: "INPUT",
                            reason: format!(
                                "inputs mix formats ({} and {}); give one kind at a time",
                                g.name(),
                                f.name()
                            ),
                        })
                    }
                    _ => found = Some(f),
                }
            }
            found.expect("at least one path")
        }
    };
    if format == InputFormat::Dir && paths.len() > 1 {
        return Err(Error::InvalidArg {
            what: "INPUT",
            reason: "give one folder (it is walked recursively), or a manifest listing the files".into(),
        });
    }
    if matches!(format, InputFormat::Dir | InputFormat::Wds) {
        // A column option on input without columns would be silently ignored: say so instead.
        let keep = (!spec.keep_cols.is_empty()).then(|| spec.keep_cols.join(","));
        for (what, col) in [
            ("input option image_col", &spec.image_col),
            ("input option caption_col", &spec.caption_col),
            ("input option keep_cols", &keep),
        ] {
            if col.is_some() {
                return Err(Error::InvalidArg {
                    what,
                    reason: format!(
                        "names a column of a manifest (CSV, TSV, JSONL or Parquet), and the input is {}; \
                         captions there come from files beside each image, and every field of a \
                         sample's .json is kept",
                        if format == InputFormat::Dir { "a folder" } else { "WebDataset tars" }
                    ),
                });
            }
        }
    }
    let mut listing = Listing { format, paths: paths.clone(), image_col: None, caption_col: None, records: Vec::new() };
    match format {
        InputFormat::Dir => listing.records = dir::scan_with(&paths[0], spec.follow_links)?,
        InputFormat::Wds => {
            let indices: Vec<usize> = match spec.shard {
                Some(s) => {
                    let r = s.range(paths.len());
                    if r.is_empty() {
                        tracing::warn!(
                            "shard {s} gets none of the {} tar files; use fewer shards than tars",
                            paths.len()
                        );
                    }
                    r.collect()
                }
                None => (0..paths.len()).collect(),
            };
            for i in indices {
                listing.records.extend(wds::scan(&paths[i], i as u64)?);
            }
            return Ok(listing);
        }
        InputFormat::Csv | InputFormat::Tsv | InputFormat::Jsonl | InputFormat::Parquet => {
            let mut cols = None;
            for p in &paths {
                let m = manifest::scan_with(
                    p,
                    format,
                    spec.image_col.as_deref(),
                    spec.caption_col.as_deref(),
                    spec.max_caption_bytes,
                    &spec.keep_cols,
                )?;
                let base = listing.records.len() as u64;
                listing.records.extend(m.records.into_iter().map(|mut r| {
                    r.id += base;
                    r
                }));
                cols.get_or_insert((m.image_col, m.caption_col));
            }
            if let Some((i, c)) = cols {
                listing.image_col = Some(i);
                listing.caption_col = c;
            }
        }
    }
    if let Some(s) = spec.shard {
        let r = s.range(listing.records.len());
        listing.records = listing.records.drain(r).collect();
    }
    Ok(listing)
}
