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
//!
//! Every file is written atomically, one run part at a time (memory: one part).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
use arrow_array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use half::f16;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::{npy, write_atomic, write_parquet_atomic, Run};

/// The layout `sieve export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    ClipRetrieval,
    Parquet,
}

/// What [`export`] wrote.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExportSummary {
    pub run: String,
    pub out: String,
    pub format: Format,
    /// Records exported (the run's embedded ones).
    pub rows: usize,
    /// Records left out: skipped at embed, so without an embedding.
    pub left_out: usize,
    /// Output parts written.
    pub parts: usize,
    /// Whether caption embeddings were exported (the run holds any).
    pub text: bool,
}

/// Writes the embedded rows of `run` into `out` in `format`. `out` must not exist or be empty,
/// unless `overwrite`, which replaces the files of an earlier export of the same layout.
pub fn export(run: &Run, out: &Path, format: Format, overwrite: bool) -> Result<ExportSummary> {
    prepare_out(run, out, overwrite)?;
    let m = &run.manifest;
    let d = m.embed_dim;
    let text = m.model.family.has_text() && m.counts.with_caption > 0;
    let parts_in = m.parts.len();
    let nonempty: Vec<usize> = (0..parts_in)
        .filter(|&p| {
            let start: usize = run.part_rows[..p].iter().sum();
            (start..start + run.part_rows[p]).any(|r| run.meta.embedded[r])
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
    let mut rows = 0;
    for (k, &p) in nonempty.iter().enumerate() {
        let start: usize = run.part_rows[..p].iter().sum();
        let keep: Vec<usize> = (start..start + run.part_rows[p]).filter(|&r| run.meta.embedded[r]).collect();
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
                let url: Vec<Option<&str>> = uris
                    .iter()
                    .map(|u| (u.starts_with("http://") || u.starts_with("https://")).then_some(*u))
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

/// `out` ready to write into: created when missing; an existing one must be empty, or, with
/// `overwrite`, hold nothing but an earlier export's files, which are removed. Never the run
/// directory itself, nor a folder inside it.
fn prepare_out(run: &Run, out: &Path, overwrite: bool) -> Result<()> {
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
    if out.exists() {
        if !out.is_dir() {
            return Err(invalid(format!("{} exists and is not a folder", out.display())));
        }
        let entries: Vec<PathBuf> = fs::read_dir(out)
            .map_err(|e| Error::io("reading", out, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        if !entries.is_empty() {
            if !overwrite {
                return Err(invalid(format!(
                    "{} is not empty; pass --overwrite to replace an earlier export there",
                    out.display()
                )));
            }
            let ours = |p: &Path| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                matches!(name, "img_emb" | "text_emb" | "metadata")
                    || (name.starts_with("part-") && name.ends_with(".parquet"))
            };
            if let Some(other) = entries.iter().find(|p| !ours(p)) {
                return Err(invalid(format!(
                    "{} holds {}, which no export wrote; refusing to remove it",
                    out.display(),
                    other.display()
                )));
            }
            for p in entries {
                let r = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
                r.map_err(|e| Error::io("removing", &p, e))?;
            }
        }
    }
    fs::create_dir_all(out).map_err(|e| Error::io("creating", out, e))
}
