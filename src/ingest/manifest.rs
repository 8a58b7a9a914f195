//! Manifests: CSV, TSV, JSONL and Parquet files with one row per image, naming it in an image
//! column (a path, relative to the manifest's folder, or a URL) and optionally its caption.
//! Every row becomes a record, in file order; a row that cannot be used is listed with a reason
//! (`bad-manifest-line`, `remote-uri`) and its line number, never dropped.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::Array;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::{CaptionSource, InputFormat, Record, Source};
use crate::error::{Error, Result};
use crate::media::decode::{Skip, SkipReason};

/// Image columns tried in order when `--image-col` is not given (case-insensitive).
pub const IMAGE_COLUMNS: &[&str] = &[
    "image",
    "path",
    "image_path",
    "filepath",
    "file_path",
    "file",
    "filename",
    "file_name",
    "url",
    "image_url",
    "uri",
];
/// Caption columns tried in order when `--caption-col` is not given (case-insensitive).
pub const CAPTION_COLUMNS: &[&str] = &["caption", "text", "txt", "title", "alt", "alt_text", "description", "prompt"];

/// The records of one manifest and the columns used.
#[derive(Debug)]
pub struct Manifest {
    pub records: Vec<Record>,
    pub image_col: String,
    pub caption_col: Option<String>,
}

fn pick(
    names: &[String],
    wanted: Option<&str>,
    defaults: &[&str],
    what: &'static str,
    path: &Path,
) -> Result<Option<usize>> {
    let find =
        |n: &str| names.iter().position(|c| c == n).or_else(|| names.iter().position(|c| c.eq_ignore_ascii_case(n)));
    match wanted {
        Some(w) => find(w).map(Some).ok_or_else(|| Error::InvalidArg {
            what,
            reason: format!("{} has no column `{w}`; its columns are: {}", path.display(), names.join(", ")),
        }),
        None => Ok(defaults.iter().find_map(|d| find(d))),
    }
}

fn columns(
    names: &[String],
    image: Option<&str>,
    caption: Option<&str>,
    path: &Path,
) -> Result<(usize, Option<usize>)> {
    let img = pick(names, image, IMAGE_COLUMNS, "input option image_col", path)?.ok_or_else(|| Error::InvalidArg {
        what: "input option image_col",
        reason: format!(
            "{} has none of the usual image columns ({}); its columns are: {}. Name one with --image-col",
            path.display(),
            IMAGE_COLUMNS.join(", "),
            names.join(", ")
        ),
    })?;
    let cap = pick(names, caption, CAPTION_COLUMNS, "input option caption_col", path)?;
    if cap.is_none() {
        tracing::info!("{} has no caption column; embedding images only", path.display());
    }
    Ok((img, cap))
}

/// True for `scheme://…` other than `file://`.
pub fn is_remote(uri: &str) -> bool {
    match uri.split_once("://") {
        Some((scheme, _)) => {
            !scheme.is_empty()
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
                && !scheme.eq_ignore_ascii_case("file")
        }
        None => false,
    }
}

/// Builds rows into records, numbering them in file order.
struct Builder<'a> {
    manifest: &'a Path,
    base: PathBuf,
    records: Vec<Record>,
    /// `--max-caption-bytes`: longer captions are held only a little past it (the pipeline cuts
    /// them there and flags them), so one huge field costs no memory downstream.
    max_caption: u64,
}

impl Builder<'_> {
    fn skipped(&mut self, uri: String, reason: SkipReason, detail: String) {
        let id = self.records.len() as u64;
        self.records.push(Record {
            id,
            uri,
            source: Source::None,
            caption: CaptionSource::None,
            skip: Some(Skip::new(reason, detail)),
        });
    }

    fn bad_line(&mut self, line: u64, detail: impl std::fmt::Display) {
        let uri = format!("{}:{line}", self.manifest.display());
        self.skipped(uri, SkipReason::BadManifestLine, format!("{}, line {line}: {detail}", self.manifest.display()));
    }

    fn row(&mut self, line: u64, image: Option<&str>, caption: Option<(String, bool)>) {
        let image = image.map(str::trim).unwrap_or_default();
        if image.is_empty() {
            self.bad_line(line, "no image path or URL");
            return;
        }
        let caption = match caption {
            Some((mut text, lossy)) => {
                // Kept just over the limit (a char is at most 4 bytes) so it is still seen as long.
                let keep = self.max_caption.saturating_add(4);
                if text.len() as u64 > keep {
                    let mut end = keep as usize;
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    text.truncate(end);
                }
                CaptionSource::Text { text, lossy }
            }
            None => CaptionSource::None,
        };
        let id = self.records.len() as u64;
        if is_remote(image) {
            self.records.push(Record {
                id,
                uri: image.to_string(),
                source: Source::None,
                caption,
                skip: Some(Skip::new(
                    SkipReason::RemoteUri,
                    format!("line {line}: a remote URL; download it first (e.g. with img2dataset)"),
                )),
            });
            return;
        }
        let local = image.strip_prefix("file://").unwrap_or(image);
        let path = if Path::new(local).is_absolute() { PathBuf::from(local) } else { self.base.join(local) };
        self.records.push(Record {
            id,
            uri: path.display().to_string(),
            source: Source::File(path),
            caption,
            skip: None,
        });
    }
}

fn lossy(bytes: &[u8]) -> (String, bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), false),
        Err(_) => (String::from_utf8_lossy(bytes).into_owned(), true),
    }
}

/// Reads the manifest at `path` as `format` (one of the manifest formats).
pub fn scan(path: &Path, format: InputFormat, image_col: Option<&str>, caption_col: Option<&str>) -> Result<Manifest> {
    scan_with(path, format, image_col, caption_col, super::DEFAULT_MAX_CAPTION_BYTES)
}

/// [`scan`] with captions held to `max_caption_bytes` (`--max-caption-bytes`).
pub fn scan_with(
    path: &Path,
    format: InputFormat,
    image_col: Option<&str>,
    caption_col: Option<&str>,
    max_caption_bytes: u64,
) -> Result<Manifest> {
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut b = Builder { manifest: path, base, records: Vec::new(), max_caption: max_caption_bytes };
    let (img, cap, names) = match format {
        InputFormat::Csv | InputFormat::Tsv => {
            scan_delimited(path, format == InputFormat::Tsv, image_col, caption_col, &mut b)?
        }
        InputFormat::Jsonl => scan_jsonl(path, image_col, caption_col, &mut b)?,
        InputFormat::Parquet => scan_parquet(path, image_col, caption_col, &mut b)?,
        InputFormat::Dir | InputFormat::Wds => unreachable!("not a manifest format"),
    };
    Ok(Manifest { records: b.records, image_col: names[img].clone(), caption_col: cap.map(|c| names[c].clone()) })
}

type Picked = (usize, Option<usize>, Vec<String>);

fn scan_delimited(
    path: &Path,
    tabs: bool,
    image_col: Option<&str>,
    caption_col: Option<&str>,
    b: &mut Builder,
) -> Result<Picked> {
    use std::io::{Seek, SeekFrom};
    let read_err = |e: csv::Error| Error::io("reading manifest", path, std::io::Error::other(e));
    // TSV as clip-retrieval and img2dataset write it: no quoting, so `5" tall` stays as is.
    let builder = |headers: bool| {
        let mut rb = csv::ReaderBuilder::new();
        rb.delimiter(if tabs { b'\t' } else { b',' }).quoting(!tabs).flexible(true).has_headers(headers);
        rb
    };
    let mut file = File::open(path).map_err(|e| Error::io("reading manifest", path, e))?;
    let mut reader = builder(true)
        .from_reader(BufReader::new(file.try_clone().map_err(|e| Error::io("reading manifest", path, e))?));
    let headers = reader.byte_headers().map_err(read_err)?;
    let names: Vec<String> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let s = String::from_utf8_lossy(h);
            let s = if i == 0 { s.trim_start_matches('\u{feff}') } else { &s };
            s.trim().to_string()
        })
        .collect();
    let (img, cap) = columns(&names, image_col, caption_col, path)?;
    let cols = Cols { img, cap, fields: names.len(), quoting: !tabs };
    let mut at = Restart { byte: 0, line: 0 };
    while let Some(next) = read_rows(&mut reader, at, cols, path, b)? {
        // A row with a malformed quote swallowed the lines after it: read them again, alone.
        at = next;
        file.seek(SeekFrom::Start(at.byte)).map_err(|e| Error::io("reading manifest", path, e))?;
        let f = file.try_clone().map_err(|e| Error::io("reading manifest", path, e))?;
        reader = builder(false).from_reader(BufReader::new(f));
    }
    Ok((img, cap, names))
}

#[derive(Clone, Copy)]
struct Cols {
    img: usize,
    cap: Option<usize>,
    fields: usize,
    quoting: bool,
}

/// Where a reader starts in the manifest: its byte offset, and the line before its first.
#[derive(Clone, Copy)]
struct Restart {
    byte: u64,
    line: u64,
}

/// Reads the records of `reader` (which starts at `at`) into `b`. A record that spans several
/// lines because of a malformed quote (one never closed, or closed and followed by more text)
/// would hide the rows on those lines: it is listed as `bad-manifest-line` instead, and the
/// place to read again from (the line after its first) is returned.
fn read_rows<R: std::io::Read>(
    reader: &mut csv::Reader<R>,
    at: Restart,
    cols: Cols,
    path: &Path,
    b: &mut Builder,
) -> Result<Option<Restart>> {
    let mut record = csv::ByteRecord::new();
    // The previous record: (line, absolute byte offset, its index in `b.records`).
    let mut prev: Option<(u64, u64, usize)> = None;
    loop {
        let next = reader.read_byte_record(&mut record);
        let here = reader.position();
        let (line_now, byte_now) = (at.line + here.line(), at.byte + here.byte());
        if let Some((line, byte, index)) = prev.take() {
            // Only records spanning several lines can have swallowed rows.
            let ended = !matches!(next, Ok(true));
            let next_line =
                if ended { line_now + 1 } else { record.position().map_or(line_now, |p| at.line + p.line()) };
            if cols.quoting && next_line > line + 1 {
                let end = if ended { byte_now } else { record.position().map_or(byte_now, |p| at.byte + p.byte()) };
                if let Some(nl) = malformed_quote(path, byte, end)? {
                    b.records.truncate(index);
                    b.bad_line(
                        line,
                        "a quote here is not closed where the field ends, so the field would run on over the \
                         next lines; the lines after this one are read as rows of their own",
                    );
                    return Ok(Some(Restart { byte: byte + nl + 1, line }));
                }
            }
        }
        match next {
            Ok(false) => return Ok(None),
            Ok(true) => {
                let (line, byte) = record.position().map_or((0, 0), |p| (at.line + p.line(), at.byte + p.byte()));
                let image = record.get(cols.img).map(|v| String::from_utf8_lossy(v).into_owned());
                let caption = cols.cap.and_then(|c| record.get(c)).map(lossy);
                prev = Some((line, byte, b.records.len()));
                if record.len() != cols.fields && image.is_none() {
                    b.bad_line(line, format!("{} fields where the header has {}", record.len(), cols.fields));
                    continue;
                }
                b.row(line, image.as_deref(), caption);
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| at.line + p.line());
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    return Err(Error::io("reading manifest", path, std::io::Error::other(e)));
                }
                b.bad_line(line, e);
            }
        }
    }
}

/// Whether the CSV record in bytes `[start, end)` of the manifest has a malformed quote: one
/// never closed, or closed and followed by more text in the same field. Returns the offset of
/// the record's first newline (where to read again from), `None` when it is well formed.
/// Follows the csv crate's reading: a quote opens a field only at its start, `""` inside one
/// is a literal quote.
fn malformed_quote(path: &Path, start: u64, end: u64) -> Result<Option<u64>> {
    use std::io::{Read, Seek, SeekFrom};
    #[derive(PartialEq, Clone, Copy)]
    enum S {
        FieldStart,
        Unquoted,
        Quoted,
        QuoteInQuoted,
    }
    let read_err = |e| Error::io("reading manifest", path, e);
    let mut f = File::open(path).map_err(read_err)?;
    f.seek(SeekFrom::Start(start)).map_err(read_err)?;
    let mut bytes = Vec::new();
    f.take(end.saturating_sub(start)).read_to_end(&mut bytes).map_err(read_err)?;
    let Some(nl) = bytes.iter().position(|&c| c == b'\n') else { return Ok(None) };
    let mut s = S::FieldStart;
    for &c in &bytes {
        s = match (s, c) {
            (S::FieldStart, b'"') => S::Quoted,
            (S::FieldStart | S::Unquoted | S::QuoteInQuoted, b',' | b'\n' | b'\r') => S::FieldStart,
            (S::FieldStart | S::Unquoted, _) => S::Unquoted,
            (S::Quoted, b'"') => S::QuoteInQuoted,
            (S::Quoted, _) => S::Quoted,
            (S::QuoteInQuoted, b'"') => S::Quoted,
            (S::QuoteInQuoted, _) => return Ok(Some(nl as u64)), // text after the closing quote
        };
    }
    Ok((s == S::Quoted).then_some(nl as u64))
}

fn json_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn scan_jsonl(path: &Path, image_col: Option<&str>, caption_col: Option<&str>, b: &mut Builder) -> Result<Picked> {
    let file = File::open(path).map_err(|e| Error::io("reading manifest", path, e))?;
    let mut cols: Option<Picked> = None;
    for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line_no = i as u64 + 1;
        let bytes = line.map_err(|e| Error::io("reading manifest", path, e))?;
        let (text, was_lossy) = lossy(&bytes);
        if text.trim().is_empty() {
            continue;
        }
        let obj = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(o)) => o,
            Ok(_) => {
                b.bad_line(line_no, "not a JSON object");
                continue;
            }
            Err(e) => {
                b.bad_line(line_no, format!("invalid JSON: {e}"));
                continue;
            }
        };
        if cols.is_none() {
            let names: Vec<String> = obj.keys().cloned().collect();
            let (img, cap) = columns(&names, image_col, caption_col, path)?;
            cols = Some((img, cap, names));
        }
        let (img, cap, names) = cols.as_ref().expect("set above");
        let image = obj.get(&names[*img]).and_then(json_text);
        let caption = cap.and_then(|c| obj.get(&names[c])).and_then(json_text).map(|t| {
            let l = was_lossy && t.contains('\u{fffd}');
            (t, l)
        });
        b.row(line_no, image.as_deref(), caption);
    }
    cols.ok_or_else(|| Error::InvalidArg { what: "INPUT", reason: format!("{} holds no JSON lines", path.display()) })
}

fn string_values(col: &dyn Array) -> Option<Vec<Option<String>>> {
    let own = |v: Option<&str>| v.map(str::to_string);
    if let Some(a) = col.as_string_opt::<i32>() {
        Some(a.iter().map(own).collect())
    } else if let Some(a) = col.as_string_opt::<i64>() {
        Some(a.iter().map(own).collect())
    } else {
        col.as_string_view_opt().map(|a| a.iter().map(own).collect())
    }
}

fn scan_parquet(path: &Path, image_col: Option<&str>, caption_col: Option<&str>, b: &mut Builder) -> Result<Picked> {
    crate::error::guard_parquet(path, || scan_parquet_unguarded(path, image_col, caption_col, b))
}

fn scan_parquet_unguarded(
    path: &Path,
    image_col: Option<&str>,
    caption_col: Option<&str>,
    b: &mut Builder,
) -> Result<Picked> {
    let file = File::open(path).map_err(|e| Error::io("reading manifest", path, e))?;
    let parquet_err = |source| Error::Parquet { path: path.into(), source };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?;
    let names: Vec<String> = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
    let (img, cap) = columns(&names, image_col, caption_col, path)?;
    let mut wanted = vec![img];
    wanted.extend(cap);
    let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
    let reader = builder.with_projection(mask).build().map_err(parquet_err)?;
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| parquet_err(e.into()))?;
        let get = |name: &str| -> Result<Vec<Option<String>>> {
            let c = batch.column_by_name(name).expect("projected column");
            string_values(c.as_ref()).ok_or_else(|| Error::InvalidArg {
                what: "INPUT",
                reason: format!("{}: column `{name}` is {}, expected text", path.display(), c.data_type()),
            })
        };
        let images = get(&names[img])?;
        let captions = cap.map(|c| get(&names[c])).transpose()?;
        for (i, image) in images.into_iter().enumerate() {
            row += 1;
            let caption = captions.as_ref().and_then(|c| c[i].clone()).map(|t| (t, false));
            b.row(row, image.as_deref(), caption);
        }
    }
    Ok((img, cap, names))
}
