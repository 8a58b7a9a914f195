//! Manifests: CSV, TSV, JSONL and Parquet files with one row per image, naming it in an image
//! column (a path, relative to the manifest's folder, or a URL) and optionally its caption.
//! Every row becomes a record, in file order; a row that cannot be used is listed with a reason
//! (`bad-manifest-line`, `remote-uri`) and its line number, never dropped.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::Array;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use serde_json::{Map, Value};

use super::cells::{self, Cell, CellKind};
use super::origin::{self, Origin, OriginSource};
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
    /// The columns carried into each record's [`Origin`]: img2dataset's fields found by name,
    /// and `--keep-cols`.
    keep: Keep,
    /// `--keep-cols`.
    keep_cols: &'a [String],
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
            origin: None,
        });
    }

    fn bad_line(&mut self, line: u64, detail: impl std::fmt::Display) {
        let uri = format!("{}:{line}", self.manifest.display());
        self.skipped(uri, SkipReason::BadManifestLine, format!("{}, line {line}: {detail}", self.manifest.display()));
    }

    fn caption(&self, caption: Option<(String, bool)>) -> CaptionSource {
        match caption {
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
        }
    }

    /// A row whose image bytes are a cell of the manifest itself.
    fn cell(&mut self, cell: Cell, caption: Option<(String, bool)>, skip: Option<Skip>, origin: Option<Origin>) {
        let id = self.records.len() as u64;
        let uri = cells::uri(&cell.column.path, cell.row);
        let caption = self.caption(caption);
        let source = if skip.is_some() { Source::None } else { Source::Cell(cell) };
        let origin = boxed(origin);
        self.records.push(Record { id, uri, source, caption, skip, origin });
    }

    fn row(&mut self, line: u64, image: Option<&str>, caption: Option<(String, bool)>, origin: Option<Origin>) {
        let origin = boxed(origin);
        let image = image.map(str::trim).unwrap_or_default();
        if image.is_empty() {
            self.bad_line(line, "no image path or URL");
            return;
        }
        let caption = self.caption(caption);
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
                origin,
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
            origin,
        });
    }
}

fn boxed(origin: Option<Origin>) -> Option<Box<OriginSource>> {
    origin.map(|fields| Box::new(OriginSource { fields, json: None }))
}

/// The manifest columns carried into each record's [`Origin`]: img2dataset's fields where a
/// column has their name (`key`, `url`, `original_width`, `original_height`), and the columns
/// named with `--keep-cols` (into `extra`). Each as (column index, name).
#[derive(Debug, Default, Clone)]
struct Keep {
    typed: Vec<(usize, String)>,
    named: Vec<(usize, String)>,
}

impl Keep {
    fn find(names: &[String], keep_cols: &[String], path: &Path) -> Result<Self> {
        let mut keep = Keep::default();
        for field in origin::TYPED {
            if let Some(i) = pick(names, None, &[field], "input option keep_cols", path)? {
                keep.typed.push((i, field.to_string()));
            }
        }
        for want in keep_cols {
            let i = pick(names, Some(want), &[], "input option keep_cols", path)?.expect("named column found");
            keep.named.push((i, names[i].clone()));
        }
        Ok(keep)
    }

    /// Every column index kept.
    fn columns(&self) -> impl Iterator<Item = usize> + '_ {
        self.typed.iter().chain(&self.named).map(|(i, _)| *i)
    }

    /// The origin of one row, from its values (`value(index, name)`); `None` when it has none.
    fn origin(&self, value: impl Fn(usize, &str) -> Option<Value>) -> Option<Origin> {
        if self.typed.is_empty() && self.named.is_empty() {
            return None;
        }
        let mut o = Origin::default();
        let typed: Map<String, Value> =
            self.typed.iter().filter_map(|(i, name)| value(*i, name).map(|v| (name.clone(), v))).collect();
        origin::merge_json(&mut o, typed);
        let named: Map<String, Value> =
            self.named.iter().map(|(i, name)| (name.clone(), value(*i, name).unwrap_or(Value::Null))).collect();
        origin::merge_extra(&mut o, named);
        (o != Origin::default()).then_some(o)
    }
}

/// A Parquet column's values as JSON: text, integers, floats and booleans (null where null);
/// `None` for other types.
fn json_values(col: &dyn Array) -> Option<Vec<Value>> {
    use arrow_array::types::*;
    use arrow_array::ArrowPrimitiveType;
    fn prim<T: ArrowPrimitiveType>(col: &dyn Array, f: impl Fn(T::Native) -> Value) -> Option<Vec<Value>> {
        col.as_primitive_opt::<T>().map(|a| a.iter().map(|v| v.map_or(Value::Null, &f)).collect())
    }
    if let Some(v) = string_values(col) {
        return Some(v.into_iter().map(|s| s.map_or(Value::Null, Value::String)).collect());
    }
    if let Some(a) = col.as_boolean_opt() {
        return Some(a.iter().map(|v| v.map_or(Value::Null, Value::Bool)).collect());
    }
    let float = |x: f64| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number);
    prim::<Int8Type>(col, |x| x.into())
        .or_else(|| prim::<Int16Type>(col, |x| x.into()))
        .or_else(|| prim::<Int32Type>(col, |x| x.into()))
        .or_else(|| prim::<Int64Type>(col, |x| x.into()))
        .or_else(|| prim::<UInt8Type>(col, |x| x.into()))
        .or_else(|| prim::<UInt16Type>(col, |x| x.into()))
        .or_else(|| prim::<UInt32Type>(col, |x| x.into()))
        .or_else(|| prim::<UInt64Type>(col, |x| x.into()))
        .or_else(|| prim::<Float32Type>(col, |x| float(x as f64)))
        .or_else(|| prim::<Float64Type>(col, float))
}

/// The kept columns of a Parquet batch as JSON values, by column index. A `--keep-cols` column
/// of another type is an error; an img2dataset-named column of another type is not kept.
fn kept_values(
    batch: &arrow_array::RecordBatch,
    keep: &Keep,
    names: &[String],
    path: &Path,
) -> Result<std::collections::HashMap<usize, Vec<Value>>> {
    let mut out = std::collections::HashMap::new();
    for (i, named) in keep.typed.iter().map(|(i, _)| (*i, false)).chain(keep.named.iter().map(|(i, _)| (*i, true))) {
        let Some(c) = batch.column_by_name(&names[i]) else { continue };
        match json_values(c.as_ref()) {
            Some(v) => {
                out.insert(i, v);
            }
            None if named => {
                return Err(Error::InvalidArg {
                    what: "input option keep_cols",
                    reason: format!(
                        "{}: column `{}` is {}; --keep-cols takes text, number and boolean columns",
                        path.display(),
                        names[i],
                        c.data_type()
                    ),
                })
            }
            None => {}
        }
    }
    Ok(out)
}

fn lossy(bytes: &[u8]) -> (String, bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), false),
        Err(_) => (String::from_utf8_lossy(bytes).into_owned(), true),
    }
}

/// Reads the manifest at `path` as `format` (one of the manifest formats).
pub fn scan(path: &Path, format: InputFormat, image_col: Option<&str>, caption_col: Option<&str>) -> Result<Manifest> {
    scan_with(path, format, image_col, caption_col, super::DEFAULT_MAX_CAPTION_BYTES, &[])
}

/// [`scan`] with captions held to `max_caption_bytes` (`--max-caption-bytes`), and the columns
/// `keep_cols` (`--keep-cols`) carried into each record's `extra` field.
pub fn scan_with(
    path: &Path,
    format: InputFormat,
    image_col: Option<&str>,
    caption_col: Option<&str>,
    max_caption_bytes: u64,
    keep_cols: &[String],
) -> Result<Manifest> {
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut b = Builder {
        manifest: path,
        base,
        records: Vec::new(),
        max_caption: max_caption_bytes,
        keep: Keep::default(),
        keep_cols,
    };
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
    b.keep = Keep::find(&names, b.keep_cols, path)?;
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
                let origin = b
                    .keep
                    .origin(|i, _| record.get(i).map(|v| lossy(v).0).filter(|v| !v.is_empty()).map(Value::String));
                b.row(line, image.as_deref(), caption, origin);
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

fn json_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
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
        let obj = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(o)) => o,
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
            b.keep = Keep::find(&names, b.keep_cols, path)?;
            cols = Some((img, cap, names));
        }
        let (img, cap, names) = cols.as_ref().expect("set above");
        let image = obj.get(&names[*img]).and_then(json_text);
        let caption = cap.and_then(|c| obj.get(&names[c])).and_then(json_text).map(|t| {
            let l = was_lossy && t.contains('\u{fffd}');
            (t, l)
        });
        let origin = b.keep.origin(|_, name| obj.get(name).cloned());
        b.row(line_no, image.as_deref(), caption, origin);
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
    let typed: Vec<(String, arrow_schema::DataType)> =
        builder.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
    let names: Vec<String> = typed.iter().map(|(n, _)| n.clone()).collect();
    let bytes_col = match image_col {
        Some(want) => pick(&names, Some(want), &[], "input option image_col", path)?
            .filter(|&i| cells::cell_kind(&typed[i].1).is_some()),
        None => cells::image_column(&typed),
    };
    if let Some(img) = bytes_col {
        drop(builder);
        let cap = pick(&names, caption_col, CAPTION_COLUMNS, "input option caption_col", path)?;
        b.keep = Keep::find(&names, b.keep_cols, path)?;
        scan_cells(path, img, cap, &typed, b)?;
        return Ok((img, cap, names));
    }
    let (img, cap) = columns(&names, image_col, caption_col, path)?;
    b.keep = Keep::find(&names, b.keep_cols, path)?;
    let mut wanted = vec![img];
    wanted.extend(cap);
    wanted.extend(b.keep.columns().filter(|&k| k != img && Some(k) != cap));
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
        let kept = kept_values(&batch, &b.keep, &names, path)?;
        for (i, image) in images.into_iter().enumerate() {
            row += 1;
            let caption = captions.as_ref().and_then(|c| c[i].clone()).map(|t| (t, false));
            let origin = b.keep.origin(|c, _| kept.get(&c).map(|v| v[i].clone()).filter(|v| !v.is_null()));
            b.row(row, image.as_deref(), caption, origin);
        }
    }
    Ok((img, cap, names))
}

/// Reads a Parquet manifest whose image column holds the images' bytes ([`cells`]): the caption,
/// a `{bytes, path}` struct's `path`, and img2dataset's `status` and `error_message` are read
/// now; the bytes only when each record is decoded. A row img2dataset failed to download (its
/// `status` is not `success`) is listed as `missing` with img2dataset's error.
fn scan_cells(
    path: &Path,
    img: usize,
    cap: Option<usize>,
    typed: &[(String, arrow_schema::DataType)],
    b: &mut Builder,
) -> Result<()> {
    let parquet_err = |source| Error::Parquet { path: path.into(), source };
    let kind = cells::cell_kind(&typed[img].1).expect("an image bytes column");
    let column = Arc::new(cells::ImageColumn::open(path, img)?);
    let file = File::open(path).map_err(|e| Error::io("reading manifest", path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?;
    let text_col = |name: &str| {
        typed.iter().position(|(n, t)| {
            n == name
                && matches!(
                    t,
                    arrow_schema::DataType::Utf8 | arrow_schema::DataType::LargeUtf8 | arrow_schema::DataType::Utf8View
                )
        })
    };
    let (status, error) = (text_col("status"), text_col("error_message"));
    // Leaves, not roots: of the image column only a struct's `path`, never the bytes.
    let descr = builder.parquet_schema();
    let mut leaves = Vec::new();
    for (i, c) in descr.columns().iter().enumerate() {
        let parts = c.path().parts();
        let root = typed.iter().position(|(n, _)| *n == parts[0]);
        let wanted = match root {
            Some(r) if r == img => kind == CellKind::BytesPath && parts.len() == 2 && parts[1] == "path",
            Some(r) => Some(r) == cap || Some(r) == status || Some(r) == error || b.keep.columns().any(|k| k == r),
            None => false,
        };
        if wanted {
            leaves.push(i);
        }
    }
    let mask = ProjectionMask::leaves(descr, leaves);
    let reader = builder.with_projection(mask).build().map_err(parquet_err)?;
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| parquet_err(e.into()))?;
        let n = batch.num_rows();
        let texts = |col: Option<usize>| -> Result<Option<Vec<Option<String>>>> {
            let Some(c) = col else { return Ok(None) };
            let name = &typed[c].0;
            let a = batch.column_by_name(name).expect("projected column");
            string_values(a.as_ref()).map(Some).ok_or_else(|| Error::InvalidArg {
                what: "INPUT",
                reason: format!("{}: column `{name}` is {}, expected text", path.display(), a.data_type()),
            })
        };
        let captions = texts(cap)?;
        let (statuses, errors) = (texts(status)?, texts(error)?);
        let names: Vec<String> = typed.iter().map(|(n, _)| n.clone()).collect();
        let kept = kept_values(&batch, &b.keep, &names, path)?;
        let fallbacks: Option<Vec<Option<String>>> = match kind {
            CellKind::BytesPath => batch
                .column_by_name(&typed[img].0)
                .and_then(|c| c.as_struct_opt().and_then(|s| s.column_by_name("path").cloned()))
                .and_then(|p| string_values(p.as_ref())),
            CellKind::Binary => None,
        };
        for i in 0..n {
            let caption = captions.as_ref().and_then(|c| c[i].clone()).map(|t| (t, false));
            let fallback = fallbacks.as_ref().and_then(|f| f[i].as_deref()).filter(|p| !p.is_empty()).map(|p| {
                let local = p.strip_prefix("file://").unwrap_or(p);
                if Path::new(local).is_absolute() {
                    PathBuf::from(local)
                } else {
                    b.base.join(local)
                }
            });
            let failed = statuses.as_ref().and_then(|s| s[i].as_deref()).filter(|s| *s != "success");
            let skip = failed.map(|s| {
                let why = errors.as_ref().and_then(|e| e[i].as_deref()).unwrap_or("no error given");
                Skip::new(SkipReason::Missing, format!("img2dataset did not store it (status `{s}`: {why})"))
            });
            let origin = b.keep.origin(|c, _| kept.get(&c).map(|v| v[i].clone()).filter(|v| !v.is_null()));
            b.cell(Cell { column: column.clone(), row, fallback }, caption, skip, origin);
            row += 1;
        }
    }
    if row != column.rows() {
        return Err(parquet_err(parquet::errors::ParquetError::General(format!(
            "read {row} rows where the metadata says {}",
            column.rows()
        ))));
    }
    Ok(())
}
