//! The run directory (see DESIGN.md): `metadata/part-NNNNN.parquet` with one row per input
//! record, `img_emb/` and `text_emb/` `part-NNNNN.npy` float16 arrays whose row i belongs to
//! metadata row i (zero rows where nothing was embedded), and `run.json`. Every file is written
//! to a temporary name and renamed into place, so a reader never sees half a part.

pub mod npy;
pub mod read;

pub use read::{Metadata, Run};

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use half::f16;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Embedded,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Embedded => "embedded",
            Status::Skipped => "skipped",
        }
    }
}

/// One output row: a record's metadata and its embeddings (L2-normalised, or none).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: u64,
    pub uri: String,
    pub caption: Option<String>,
    /// The caption file was not valid UTF-8 and was decoded lossily.
    pub caption_lossy: bool,
    /// The caption was longer than the model's context and was truncated.
    pub caption_truncated: bool,
    pub sha256: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// 64-bit perceptual hash of the decoded image ([`crate::media::phash`]).
    pub phash: Option<u64>,
    pub status: Status,
    /// Stable reason code for a skipped record (e.g. `decode-error`).
    pub reason: Option<String>,
    /// Human-readable detail for a skipped record.
    pub error: Option<String>,
    pub image_embedding: Option<Vec<f32>>,
    pub text_embedding: Option<Vec<f32>>,
}

/// Counts written to `run.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub records: u64,
    pub embedded: u64,
    pub skipped: u64,
    /// Embedded records that also have a caption embedding.
    pub with_caption: u64,
    pub captions_truncated: u64,
    pub captions_lossy: u64,
    pub skipped_by_reason: BTreeMap<String, u64>,
}

/// SHA-256 of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io("reading", path, e))?;
    Ok(hex(&h.finalize()))
}

/// SHA-256 of bytes, as lower-case hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `contents` to `path` atomically: a temporary file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut BufWriter<fs::File>) -> std::io::Result<()>) -> Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let result = (|| {
        let mut w = BufWriter::new(fs::File::create(&tmp)?);
        write(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| Error::io("writing", path, e))
}

/// Writes one record batch as a Snappy-compressed Parquet file, atomically (see
/// [`write_atomic`]); Parquet errors keep their own message and name the file.
pub fn write_parquet_atomic(path: &Path, batch: &RecordBatch) -> Result<()> {
    let mut parquet_err = None;
    write_atomic(path, |w| {
        let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let res = ArrowWriter::try_new(w, batch.schema(), Some(props)).and_then(|mut aw| {
            aw.write(batch)?;
            aw.close().map(|_| ())
        });
        res.map_err(|e| {
            let msg = e.to_string();
            parquet_err = Some(e);
            std::io::Error::other(msg)
        })
    })
    .map_err(|e| match parquet_err.take() {
        Some(source) => Error::Parquet { path: path.into(), source },
        None => e,
    })
}

/// The parquet schema of `metadata/part-*.parquet`.
pub fn metadata_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::UInt64, false),
        Field::new("uri", DataType::Utf8, false),
        Field::new("caption", DataType::Utf8, true),
        Field::new("caption_lossy", DataType::Boolean, false),
        Field::new("caption_truncated", DataType::Boolean, false),
        Field::new("sha256", DataType::Utf8, true),
        Field::new("width", DataType::UInt32, true),
        Field::new("height", DataType::UInt32, true),
        Field::new("phash", DataType::UInt64, true),
        Field::new("status", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, true),
        Field::new("error", DataType::Utf8, true),
    ]))
}

fn metadata_batch(rows: &[Row]) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let col = |a: ArrayRef| a;
    RecordBatch::try_new(
        metadata_schema(),
        vec![
            col(Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.id)))),
            col(Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.uri.as_str())))),
            col(Arc::new(rows.iter().map(|r| r.caption.as_deref()).collect::<StringArray>())),
            col(Arc::new(rows.iter().map(|r| Some(r.caption_lossy)).collect::<BooleanArray>())),
            col(Arc::new(rows.iter().map(|r| Some(r.caption_truncated)).collect::<BooleanArray>())),
            col(Arc::new(rows.iter().map(|r| r.sha256.as_deref()).collect::<StringArray>())),
            col(Arc::new(rows.iter().map(|r| r.width).collect::<UInt32Array>())),
            col(Arc::new(rows.iter().map(|r| r.height).collect::<UInt32Array>())),
            col(Arc::new(rows.iter().map(|r| r.phash).collect::<UInt64Array>())),
            col(Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.status.as_str())))),
            col(Arc::new(rows.iter().map(|r| r.reason.as_deref()).collect::<StringArray>())),
            col(Arc::new(rows.iter().map(|r| r.error.as_deref()).collect::<StringArray>())),
        ],
    )
}

/// Names of the run directory's parts.
pub fn part_name(index: usize, ext: &str) -> String {
    format!("part-{index:05}.{ext}")
}

/// Writes rows into a run directory, one set of part files per `part_size` rows.
pub struct RunWriter {
    dir: PathBuf,
    part_size: usize,
    embed_dim: usize,
    pending: Vec<Row>,
    parts: Vec<String>,
    counts: Counts,
}

impl RunWriter {
    /// Prepares `dir` (created if missing). It must not already hold a run unless `overwrite`.
    pub fn create(dir: &Path, part_size: usize, embed_dim: usize, overwrite: bool) -> Result<Self> {
        if part_size == 0 {
            return Err(Error::InvalidArg { what: "--part-size", reason: "must be at least 1".into() });
        }
        if dir.join("run.json").exists() || dir.join("metadata").exists() {
            if !overwrite {
                return Err(Error::RunDir {
                    path: dir.into(),
                    reason: "already holds a run; choose another --out or pass --overwrite to replace it".into(),
                });
            }
            for sub in ["metadata", "img_emb", "text_emb"] {
                let p = dir.join(sub);
                if p.exists() {
                    fs::remove_dir_all(&p).map_err(|e| Error::io("removing", &p, e))?;
                }
            }
            let _ = fs::remove_file(dir.join("run.json"));
        }
        for sub in ["metadata", "img_emb", "text_emb"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| Error::io("creating", &p, e))?;
        }
        Ok(Self {
            dir: dir.into(),
            part_size,
            embed_dim,
            pending: Vec::new(),
            parts: Vec::new(),
            counts: Counts::default(),
        })
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Adds rows (in id order); full parts are written as they fill.
    pub fn push(&mut self, rows: impl IntoIterator<Item = Row>) -> Result<()> {
        for row in rows {
            for (emb, what) in [(&row.image_embedding, "image"), (&row.text_embedding, "text")] {
                if let Some(e) = emb {
                    if e.len() != self.embed_dim {
                        tracing::error!("{what} embedding of {} has the wrong size", row.uri);
                        return Err(Error::DimMismatch { expected: self.embed_dim, found: e.len() });
                    }
                }
            }
            let c = &mut self.counts;
            c.records += 1;
            match row.status {
                Status::Embedded => c.embedded += 1,
                Status::Skipped => {
                    c.skipped += 1;
                    *c.skipped_by_reason.entry(row.reason.clone().unwrap_or_else(|| "unknown".into())).or_default() +=
                        1;
                }
            }
            c.with_caption += u64::from(row.text_embedding.is_some());
            c.captions_truncated += u64::from(row.caption_truncated);
            c.captions_lossy += u64::from(row.caption_lossy);
            self.pending.push(row);
            if self.pending.len() >= self.part_size {
                self.flush_part()?;
            }
        }
        Ok(())
    }

    fn flush_part(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending);
        let index = self.parts.len();
        let d = self.embed_dim;
        // Embeddings first, metadata last: a part counts as written once its metadata exists.
        for (sub, pick) in [("img_emb", true), ("text_emb", false)] {
            let mut data = Vec::with_capacity(rows.len() * d);
            for r in &rows {
                match if pick { &r.image_embedding } else { &r.text_embedding } {
                    Some(e) => data.extend(e.iter().map(|&v| f16::from_f32(v))),
                    None => data.extend(std::iter::repeat_n(f16::ZERO, d)),
                }
            }
            let path = self.dir.join(sub).join(part_name(index, "npy"));
            write_atomic(&path, |w| npy::write_f16(w, rows.len(), d, &data))?;
        }
        let path = self.dir.join("metadata").join(part_name(index, "parquet"));
        let batch = metadata_batch(&rows).map_err(|e| Error::Parquet { path: path.clone(), source: e.into() })?;
        write_parquet_atomic(&path, &batch)?;
        self.parts.push(format!("part-{index:05}"));
        Ok(())
    }

    /// Writes the last part and `run.json` (with `counts` and `parts` filled in).
    pub fn finish(mut self, mut manifest: RunManifest) -> Result<RunManifest> {
        self.flush_part()?;
        manifest.counts = self.counts.clone();
        manifest.parts = self.parts.clone();
        let path = self.dir.join("run.json");
        let json = serde_json::to_vec_pretty(&manifest).expect("run manifest serialises");
        write_atomic(&path, |w| {
            w.write_all(&json)?;
            w.write_all(b"\n")
        })?;
        Ok(manifest)
    }
}

/// `run.json`: how a run was made and what it holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunManifest {
    pub sieve_version: String,
    pub model: crate::model::ModelInfo,
    /// Device and dtype the embeddings were computed with.
    pub device: String,
    pub compute_dtype: String,
    /// Embeddings are stored as this dtype, L2-normalised.
    pub storage_dtype: String,
    pub embed_dim: usize,
    pub preprocessing: crate::model::PreprocessorConfig,
    pub text_max_tokens: usize,
    pub input: InputInfo,
    pub limits: crate::media::decode::Limits,
    pub batch_size: usize,
    pub part_size: usize,
    pub counts: Counts,
    /// Part names, e.g. `part-00000`, present in each of metadata/, img_emb/, text_emb/.
    pub parts: Vec<String>,
}

/// What was read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InputInfo {
    pub path: String,
    pub format: String,
}

/// Reads a run's `run.json`.
pub fn read_manifest(dir: &Path) -> Result<RunManifest> {
    let path = dir.join("run.json");
    let text = fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
    serde_json::from_str(&text).map_err(|source| Error::Json { path, source })
}
