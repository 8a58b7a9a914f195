//! Image bytes stored in a Parquet column, read in place: img2dataset's `parquet` output (a
//! binary `jpg` column) and Hugging Face `datasets`' `Image` feature (a `{bytes, path}` struct).
//!
//! Listing reads no image bytes. A record's bytes are read when it is decoded, one row group of
//! the image column at a time; the last [`CACHED_ROW_GROUPS`] decoded row groups are kept, so
//! records read in order (as the pipeline reads them) decode each row group once, and memory
//! holds at most that many row groups of the image column, never the whole file.
//!
//! A record's uri is `FILE.parquet#ROW`, ROW counted from 0 in the file; [`locate`] reads such a
//! uri back (for the report's thumbnails and `sieve export`).

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use crate::error::{Error, Result};

/// Decoded row groups of the image column kept per file.
pub const CACHED_ROW_GROUPS: usize = 2;

/// How a Parquet column holds images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellKind {
    /// Binary values (img2dataset's `jpg`, `png`, `webp` columns).
    Binary,
    /// A struct with a binary `bytes` field and a text `path` field (`datasets`' `Image`); a row
    /// with no bytes is read from its `path`.
    BytesPath,
}

/// Whether `ty` holds image bytes, and how.
pub fn cell_kind(ty: &DataType) -> Option<CellKind> {
    match ty {
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Some(CellKind::Binary),
        DataType::Struct(fields) => {
            let bytes = fields.iter().find(|f| f.name() == "bytes")?;
            cell_kind(bytes.data_type()).filter(|k| *k == CellKind::Binary).map(|_| CellKind::BytesPath)
        }
        _ => None,
    }
}

/// The binary values of `col` (of a kind [`cell_kind`] accepts, the struct's `bytes` field for
/// [`CellKind::BytesPath`]) at `row`, or `None` where null.
fn value(col: &dyn Array, row: usize) -> Option<Vec<u8>> {
    let col = match col.as_struct_opt() {
        Some(s) => s.column_by_name("bytes")?.as_ref(),
        None => col,
    };
    if col.is_null(row) {
        return None;
    }
    if let Some(a) = col.as_binary_opt::<i32>() {
        Some(a.value(row).to_vec())
    } else if let Some(a) = col.as_binary_opt::<i64>() {
        Some(a.value(row).to_vec())
    } else {
        col.as_binary_view_opt().map(|a| a.value(row).to_vec())
    }
}

/// The image column of one Parquet file, read one row group at a time.
#[derive(Debug)]
pub struct ImageColumn {
    pub path: PathBuf,
    /// The column's index among the file's root (top-level) columns.
    root: usize,
    /// The first row of each row group, and the file's row count last.
    starts: Vec<u64>,
    /// Recently decoded row groups, newest last: (row group, its image column in batches).
    cache: Mutex<VecDeque<(usize, Arc<Vec<ArrayRef>>)>>,
}

impl ImageColumn {
    /// The column `root` (a root column index) of the Parquet file at `path`.
    pub fn open(path: &Path, root: usize) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io("reading", path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|source| Error::Parquet { path: path.into(), source })?;
        let mut starts = vec![0u64];
        for rg in builder.metadata().row_groups() {
            let last = *starts.last().expect("non-empty");
            starts.push(last + rg.num_rows().max(0) as u64);
        }
        Ok(Self { path: path.into(), root, starts, cache: Mutex::new(VecDeque::new()) })
    }

    /// Rows in the file.
    pub fn rows(&self) -> u64 {
        *self.starts.last().expect("non-empty")
    }

    /// The bytes in row `row` (from 0), `Ok(None)` where the cell is null.
    pub fn read(&self, row: u64) -> Result<Option<Vec<u8>>> {
        if row >= self.rows() {
            return Err(self.err(format!("row {row} is past the file's {} rows", self.rows())));
        }
        let rg = self.starts.partition_point(|&s| s <= row) - 1;
        let batches = self.row_group(rg)?;
        let mut at = (row - self.starts[rg]) as usize;
        for b in batches.iter() {
            if at < b.len() {
                return Ok(value(b.as_ref(), at));
            }
            at -= b.len();
        }
        Err(self.err(format!("row group {rg} holds fewer rows than its metadata says")))
    }

    fn err(&self, reason: String) -> Error {
        Error::Parquet { path: self.path.clone(), source: parquet::errors::ParquetError::General(reason) }
    }

    /// The image column of row group `rg`, decoded once while it stays in the cache. The lock is
    /// held while decoding: threads wanting the same row group wait for it rather than decode it
    /// again.
    fn row_group(&self, rg: usize) -> Result<Arc<Vec<ArrayRef>>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, b)) = cache.iter().find(|(i, _)| *i == rg) {
            return Ok(b.clone());
        }
        let batches = Arc::new(crate::error::guard_parquet(&self.path, || self.decode(rg))?);
        if cache.len() >= CACHED_ROW_GROUPS {
            cache.pop_front();
        }
        cache.push_back((rg, batches.clone()));
        Ok(batches)
    }

    fn decode(&self, rg: usize) -> Result<Vec<ArrayRef>> {
        let parquet_err = |source| Error::Parquet { path: self.path.clone(), source };
        let file = File::open(&self.path).map_err(|e| Error::io("reading", &self.path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), [self.root]);
        let reader = builder.with_row_groups(vec![rg]).with_projection(mask).build().map_err(parquet_err)?;
        let mut out = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| parquet_err(e.into()))?;
            out.push(batch.column(0).clone());
        }
        Ok(out)
    }
}

/// One cell of an [`ImageColumn`]: where a record's image bytes are.
#[derive(Debug, Clone)]
pub struct Cell {
    pub column: Arc<ImageColumn>,
    pub row: u64,
    /// For a `{bytes, path}` struct: the file to read when the row holds no bytes.
    pub fallback: Option<PathBuf>,
}

/// The uri of row `row` of the Parquet file `path`.
pub fn uri(path: &Path, row: u64) -> String {
    format!("{}#{row}", path.display())
}

/// The Parquet file and row a `FILE.parquet#ROW` uri names, when FILE is a file.
pub fn parse_uri(uri: &str) -> Option<(PathBuf, u64)> {
    let (file, row) = uri.rsplit_once('#')?;
    let row = row.parse().ok()?;
    let path = PathBuf::from(file);
    let parquet = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet") || e.eq_ignore_ascii_case("pq"));
    (parquet && path.is_file()).then_some((path, row))
}

/// The image column of the Parquet file at `path` as listing finds it by name, else its first
/// column holding bytes (a run made with `--image-col` naming another).
pub fn open_image_column(path: &Path) -> Result<ImageColumn> {
    let file = File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let builder = crate::error::guard_parquet(path, || {
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| Error::Parquet { path: path.into(), source })
    })?;
    let names: Vec<(String, DataType)> =
        builder.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
    let root =
        image_column(&names).or_else(|| names.iter().position(|(_, ty)| cell_kind(ty).is_some())).ok_or_else(|| {
            Error::InvalidArg { what: "uri", reason: format!("{} has no image bytes column", path.display()) }
        })?;
    ImageColumn::open(path, root)
}

/// Reads the image bytes a `FILE.parquet#ROW` uri names ([`open_image_column`]); `Ok(None)`
/// when `uri` is not such a uri, an error when it is and cannot be read or the cell is null.
/// Each call opens the file: [`crate::ingest::locate::Locator`] keeps columns open for many.
pub fn locate(uri: &str) -> Result<Option<Vec<u8>>> {
    let Some((path, row)) = parse_uri(uri) else { return Ok(None) };
    read_row(&open_image_column(&path)?, row).map(Some)
}

/// Row `row` of `column`, an error where null.
pub fn read_row(column: &ImageColumn, row: u64) -> Result<Vec<u8>> {
    column.read(row)?.ok_or_else(|| Error::InvalidArg {
        what: "uri",
        reason: format!("row {row} of {} holds no image", column.path.display()),
    })
}

/// Image-bytes columns looked for, in order, before text columns (case-insensitive):
/// `datasets`' `image`, img2dataset's `jpg`/`png`/`webp` (its `--encode_format`).
pub const BYTES_COLUMNS: &[&str] = &["image", "jpg", "jpeg", "png", "webp", "img", "image_bytes", "bytes"];

/// The first column of [`BYTES_COLUMNS`] holding image bytes, by index.
pub fn image_column(columns: &[(String, DataType)]) -> Option<usize> {
    BYTES_COLUMNS.iter().find_map(|want| {
        columns.iter().position(|(name, ty)| name.eq_ignore_ascii_case(want) && cell_kind(ty).is_some())
    })
}
