//! `sieve export`: a run's embedded rows in the layouts other tools read.
//!
//! - **clip-retrieval** (`Format::ClipRetrieval`): what its `clip_inference` step writes, so
//!   `clip_index` (autofaiss), `clip_back` and `clip_filter` take it unmodified: `img_emb/img_emb_N.npy`,
//!   `text_emb/text_emb_N.npy` (float16, as sieve stores them) and `metadata/metadata_N.parquet`
//!   with `image_path`, `caption`, `url` and sieve's `id`, row for row; N zero-padded as
//!   clip-retrieval pads it, so sorting by name (as autofaiss does) keeps the order. Only
//!   embedded records are exported: row k of the concatenated files, the k-th vector in a faiss
//!   index built from them, is the record whose `id` is in row k of the metadata, which joins back
//!   to `dedup/groups.parquet`, `pairs.parquet` and `quality.parquet`.
//! - **parquet** (`Format::Parquet`): `part-N.parquet`, one table per run part, embeddings as
//!   fixed-size lists of float32 beside `id`, `uri` and `caption`, for `datasets`, LanceDB,
//!   DuckDB or polars users.
//! - **webdataset** (`Format::Webdataset`, [`webdataset`]): the chosen records' original image
//!   bytes, captions and JSON (the source's fields plus sieve's scores and flags) as new tar
//!   shards a trainer reads, as DataComp's resharder writes them.
//!
//! Which records: [`Subset`] (every embedded one, what `sieve dedup` keeps, or what `sieve select`
//! chose), for every format. Every file is written atomically, one run part (or shard) at a time
//! (memory: one part, or a few samples).

mod annotate;
pub mod webdataset;

use std::collections::HashSet;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
use arrow_array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use half::f16;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::layout::{self, Layout};
use crate::store::{npy, write_atomic, write_parquet_atomic, Run};

/// The layout `sieve export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    ClipRetrieval,
    Parquet,
    Webdataset,
}

/// Which of a run's records `sieve export` writes (always embedded ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Subset {
    /// Every embedded record.
    All,
    /// Those `sieve dedup` keeps (`dedup/keep.txt`).
    Keep,
    /// Those `sieve select` chose (`selection/keep.txt`).
    Selection,
}

/// What `sieve export` writes, and where from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    pub format: Format,
    pub subset: Subset,
    /// Samples per tar shard (webdataset only); at least 1.
    pub shard_size: usize,
    pub overwrite: bool,
}

/// img2dataset's default shard size.
pub const DEFAULT_SHARD_SIZE: usize = 10_000;

/// What [`export`] wrote: the embedding layouts' summary or the webdataset one.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Exported {
    Embeddings(ExportSummary),
    Webdataset(webdataset::Outcome),
}

/// Writes the records of `run` that `opts.subset` names into `out` in `opts.format`. `out` must
/// not exist or be empty, unless `overwrite`, which replaces the files of an earlier export; a
/// webdataset export resumes an interrupted one made with the same parameters.
pub fn export(run: &Run, out: &Path, opts: &ExportOptions) -> Result<Exported> {
    match opts.format {
        Format::Webdataset => webdataset::export(run, out, opts).map(Exported::Webdataset),
        _ => export_embeddings(run, out, opts).map(Exported::Embeddings),
    }
}

/// For each row of `run`: whether it is embedded and in `subset`.
pub fn subset_rows(run: &Run, subset: Subset) -> Result<Vec<bool>> {
    let (file, summary, command) = match subset {
        Subset::All => return Ok(run.meta.embedded.clone()),
        Subset::Keep => (Layout::new(&run.dir).dedup_keep(), layout::DEDUP_SUMMARY, "dedup"),
        Subset::Selection => (Layout::new(&run.dir).selection_keep(), layout::SELECTION_SUMMARY, "select"),
    };
    if !file.is_file() {
        return Err(Error::InvalidArg {
            what: "--subset",
            reason: format!(
                "{} does not exist; run `sieve {command} {}` first (or pass --subset all)",
                file.display(),
                run.dir.display()
            ),
        });
    }
    run.check_provenance(summary, command)?;
    let text = fs::read_to_string(&file).map_err(|e| Error::io("reading", &file, e))?;
    let listed: HashSet<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let ours: HashSet<&str> = run.meta.uri.iter().map(String::as_str).collect();
    if let Some(foreign) = listed.iter().find(|u| !ours.contains(*u)) {
        return Err(Error::RunDir {
            path: file.clone(),
            reason: format!(
                "lists {foreign}, which this run does not hold; run `sieve {command} {}` again",
                run.dir.display()
            ),
        });
    }
    Ok((0..run.meta.len()).map(|r| run.meta.embedded[r] && listed.contains(run.meta.uri[r].as_str())).collect())
}

/// What [`export`] wrote.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExportSummary {
    pub run: String,
    pub out: String,
    pub format: Format,
    pub subset: Subset,
    /// Records exported (the run's embedded ones in the subset).
    pub rows: usize,
    /// Records left out: skipped at embed (so without an embedding), or not in the subset.
    pub left_out: usize,
    /// Output parts written.
    pub parts: usize,
    /// Whether caption embeddings were exported (the run holds any).
    pub text: bool,
}

/// The clip-retrieval and Parquet layouts: the embedded rows of `run` in `opts.subset`.
fn export_embeddings(run: &Run, out: &Path, opts: &ExportOptions) -> Result<ExportSummary> {
    let format = opts.format;
    let chosen = subset_rows(run, opts.subset)?;
    let entries = check_out(run, out)?;
    if !entries.is_empty() {
        if !opts.overwrite {
            return Err(not_empty(out));
        }
        clear_out(out, entries)?;
    }
    fs::create_dir_all(out).map_err(|e| Error::io("creating", out, e))?;
    let m = &run.manifest;
    let d = m.embed_dim;
    let text = m.model.family.has_text() && m.counts.with_caption > 0;
    let parts_in = m.parts.len();
    let nonempty: Vec<usize> = (0..parts_in)
        .filter(|&p| {
            let start: usize = run.part_rows[..p].iter().sum();
            (start..start + run.part_rows[p]).any(|r| chosen[r])
        })
        .collect();
    // clip-retrieval's padding: int(log10(partition count)) + 1 digits.
    let width = nonempty.len().max(1).to_string().len();
    if format == Format::ClipRetrieval {
        for sub in ["img_emb", "metadata"].into_iter().chain(text.then_some("text_emb")) {
            let dir = out.join(sub);
            fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        }
    }
    let recorded_url = match format {
        Format::ClipRetrieval => Some(run.column_strings("url")?),
        _ => None,
    };
    let mut rows = 0;
    for (k, &p) in nonempty.iter().enumerate() {
        let start: usize = run.part_rows[..p].iter().sum();
        let keep: Vec<usize> = (start..start + run.part_rows[p]).filter(|&r| chosen[r]).collect();
        let pick = |values: &[f32]| -> Vec<f32> {
            keep.iter().flat_map(|&r| values[(r - start) * d..(r - start + 1) * d].iter().copied()).collect()
        };
        let img = pick(&run.embedding_part(false, p)?);
        let txt = if text { Some(pick(&run.embedding_part(true, p)?)) } else { None };
        let ids: Vec<u64> = keep.iter().map(|&r| run.meta.id[r]).collect();
        let uris: Vec<&str> = keep.iter().map(|&r| run.meta.uri[r].as_str()).collect();
        let captions: Vec<Option<&str>> = keep.iter().map(|&r| run.meta.caption[r].as_deref()).collect();
        match format {
            Format::ClipRetrieval => {
                let n = format!("{k:0width$}");
                write_npy(&out.join(format!("img_emb/img_emb_{n}.npy")), keep.len(), d, &img)?;
                if let Some(t) = &txt {
                    write_npy(&out.join(format!("text_emb/text_emb_{n}.npy")), keep.len(), d, t)?;
                }
                // The URL the source recorded (img2dataset's), else the uri where it is one.
                let url: Vec<Option<&str>> = keep
                    .iter()
                    .zip(&uris)
                    .map(|(&r, u)| {
                        recorded_url
                            .as_ref()
                            .and_then(|v| v[r].as_deref())
                            .or_else(|| (u.starts_with("http://") || u.starts_with("https://")).then_some(*u))
                    })
                    .collect();
                let batch = RecordBatch::try_from_iter([
                    ("image_path", Arc::new(StringArray::from(uris.clone())) as ArrayRef),
                    ("caption", Arc::new(StringArray::from(captions)) as ArrayRef),
                    ("url", Arc::new(StringArray::from(url)) as ArrayRef),
                    ("id", Arc::new(UInt64Array::from(ids)) as ArrayRef),
                ])
                .map_err(|e| Error::io("building", out, std::io::Error::other(e.to_string())))?;
                write_parquet_atomic(&out.join(format!("metadata/metadata_{n}.parquet")), &batch)?;
            }
            Format::Webdataset => unreachable!("export() sends webdataset to its module"),
            Format::Parquet => {
                let mut fields = vec![
                    Field::new("id", DataType::UInt64, false),
                    Field::new("uri", DataType::Utf8, false),
                    Field::new("caption", DataType::Utf8, true),
                ];
                let mut columns: Vec<ArrayRef> = vec![
                    Arc::new(UInt64Array::from(ids)),
                    Arc::new(StringArray::from(uris)),
                    Arc::new(StringArray::from(captions.clone())),
                ];
                let item = Arc::new(Field::new("item", DataType::Float32, false));
                let list_type = DataType::FixedSizeList(item.clone(), d as i32);
                fields.push(Field::new("img_emb", list_type.clone(), false));
                columns.push(fixed_list(&img, d, item.clone(), None));
                if let Some(t) = &txt {
                    // No caption, no caption embedding: null, not the stored zero row.
                    let valid: Vec<bool> = captions.iter().map(Option::is_some).collect();
                    fields.push(Field::new("text_emb", list_type, true));
                    columns.push(fixed_list(t, d, item.clone(), Some(&valid)));
                }
                let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
                    .map_err(|e| Error::io("building", out, std::io::Error::other(e.to_string())))?;
                write_parquet_atomic(&out.join(format!("part-{k:05}.parquet")), &batch)?;
            }
        }
        rows += keep.len();
    }
    Ok(ExportSummary {
        run: run.dir.display().to_string(),
        out: out.display().to_string(),
        format,
        subset: opts.subset,
        rows,
        left_out: run.meta.len() - rows,
        parts: nonempty.len(),
        text,
    })
}

fn write_npy(path: &Path, rows: usize, d: usize, values: &[f32]) -> Result<()> {
    let halves: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
    write_atomic(path, |w| npy::write_f16(w, rows, d, &halves))
}

fn fixed_list(values: &[f32], d: usize, item: Arc<Field>, valid: Option<&[bool]>) -> ArrayRef {
    let mut b = FixedSizeListBuilder::new(Float32Builder::with_capacity(values.len()), d as i32).with_field(item);
    for (i, row) in values.chunks_exact(d).enumerate() {
        b.values().append_slice(row);
        b.append(valid.is_none_or(|v| v[i]));
    }
    Arc::new(b.finish())
}

/// Checks that `out` may be written (never the run directory itself, nor a folder inside it;
/// not a file) and returns what it holds (nothing when missing).
fn check_out(run: &Run, out: &Path) -> Result<Vec<PathBuf>> {
    let invalid = |reason: String| Error::InvalidArg { what: "export option out", reason };
    let canon = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let run_dir = canon(&run.dir);
    let mut probe: PathBuf = out.to_path_buf();
    // The nearest existing ancestor tells whether `out` would be inside the run.
    while !probe.exists() {
        match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe = p.to_path_buf(),
            _ => break,
        }
    }
    if probe.exists() && canon(&probe).starts_with(&run_dir) {
        return Err(invalid(format!("{} is inside the run directory; export somewhere else", out.display())));
    }
    if !out.exists() {
        return Ok(Vec::new());
    }
    if !out.is_dir() {
        return Err(invalid(format!("{} exists and is not a folder", out.display())));
    }
    let mut entries: Vec<PathBuf> =
        fs::read_dir(out).map_err(|e| Error::io("reading", out, e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    Ok(entries)
}

fn not_empty(out: &Path) -> Error {
    Error::InvalidArg {
        what: "export option out",
        reason: format!("{} is not empty; pass --overwrite to replace an earlier export there", out.display()),
    }
}

/// Whether a file in an export folder is one an export writes: any layout's, or a temporary
/// file of an interrupted write. Numbered tars and stats files count only beside a webdataset
/// export's summary (`in_wds_export`): img2dataset names its shards the same way, and a folder
/// of source shards must never be taken for an earlier export.
fn written_by_export(p: &Path, in_wds_export: bool) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    matches!(name, "img_emb" | "text_emb" | "metadata" | webdataset::SUMMARY)
        || (name.starts_with("part-") && name.ends_with(".parquet"))
        || (in_wds_export && name.strip_suffix(".tar").is_some_and(digits))
        || (in_wds_export && name.strip_suffix("_stats.json").is_some_and(digits))
        || (name.starts_with('.') && name.ends_with(".tmp"))
}

/// Removes `entries` (what `out` holds), all an earlier export's, else removes nothing.
fn clear_out(out: &Path, entries: Vec<PathBuf>) -> Result<()> {
    let in_wds_export = entries.iter().any(|p| p.file_name().is_some_and(|n| n == webdataset::SUMMARY));
    if let Some(other) = entries.iter().find(|p| !written_by_export(p, in_wds_export)) {
        return Err(Error::InvalidArg {
            what: "export option out",
            reason: format!(
                "{} holds {}, which no export wrote; refusing to remove it",
                out.display(),
                other.display()
            ),
        });
    }
    for p in entries {
        let r = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
        r.map_err(|e| Error::io("removing", &p, e))?;
    }
    Ok(())
}
