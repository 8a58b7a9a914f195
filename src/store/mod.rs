//! The run directory (docs/run-directory.md lists every file and column): `metadata/part-NNNNN.parquet` with one row per input
//! record, `img_emb/` and `text_emb/` `part-NNNNN.npy` float16 arrays whose row i belongs to
//! metadata row i (zero rows where nothing was embedded), and `run.json`. Every file is written
//! to a temporary name and renamed into place, so a reader never sees half a part.

pub mod layout;
pub mod lock;
pub mod merge;
pub mod npy;
pub mod read;

pub use layout::{Layout, STAGE_OUTPUTS};
pub use read::{Metadata, Provenance, Run};

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, FixedSizeBinaryArray, Float32Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema};
use half::f16;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::media::fingerprint::Fingerprint;
use crate::media::quality::{CaptionSignals, ImageSignals};

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
    /// The 64-bit median hash older runs stored; new runs write null (dedup reads
    /// [`Row::fingerprint`]), merge carries an older run's values over.
    pub phash: Option<u64>,
    /// DCT pHash, its mirror and the coefficients that confirm a match
    /// ([`crate::media::fingerprint`]); `None` in runs made before they were recorded.
    pub fingerprint: Option<Fingerprint>,
    pub status: Status,
    /// Stable reason code for a skipped record (e.g. `decode-error`).
    pub reason: Option<String>,
    /// Human-readable detail for a skipped record.
    pub error: Option<String>,
    pub image_embedding: Option<Vec<f32>>,
    pub text_embedding: Option<Vec<f32>>,
    /// Image quality signals, for decoded images ([`crate::media::quality`]); `None` in runs
    /// made before they were recorded.
    pub image_signals: Option<ImageSignals>,
    /// Caption quality signals, for records with a caption.
    pub caption_signals: Option<CaptionSignals>,
    /// Where the sample came from, as its source recorded it (img2dataset's fields).
    pub origin: Origin,
}

/// A sample's own fields, as its source recorded them: img2dataset's `key`, `url` and original
/// size (from each sample's `.json`, or a manifest's columns of those names), and the source's
/// other fields as one JSON object (the `.json`'s other fields, or the manifest columns named
/// with `--keep-cols`). All `None` where the input has none (a folder of pictures).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub key: Option<String>,
    pub url: Option<String>,
    pub original_width: Option<u32>,
    pub original_height: Option<u32>,
    /// A JSON object, serialised.
    pub extra: Option<String>,
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

pub use crate::digest::{sha256_bytes, sha256_file};
pub use crate::error::guard_parquet;

/// An error unless `found` (the SHA-256 of `path`) is `want`, the checksum run.json records.
pub fn check_sha256(path: &Path, found: &str, want: &str) -> Result<()> {
    if found == want {
        return Ok(());
    }
    Err(Error::RunDir {
        path: path.into(),
        reason: format!(
            "does not match its checksum in run.json (SHA-256 {}…, recorded {}…): the file was changed or damaged \
             after it was written; embedding again (--overwrite) repairs the run",
            &found[..found.len().min(12)],
            &want[..want.len().min(12)]
        ),
    })
}

/// A temporary name next to `path`, unique to this process and call, so two processes (or
/// threads) writing the same file never share one: `.NAME.PID.N.tmp`.
pub fn tmp_path(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Writes `contents` to `path` atomically: a temporary file in the same folder (see
/// [`tmp_path`]), fsync, rename.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut BufWriter<fs::File>) -> std::io::Result<()>) -> Result<()> {
    let tmp = tmp_path(path);
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

/// Calls `f` with each record batch of the parquet file at `path`, errors naming the file.
pub fn for_each_batch(path: &Path, mut f: impl FnMut(RecordBatch) -> Result<()>) -> Result<()> {
    let file = fs::File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let parquet_err = |source| Error::Parquet { path: path.to_path_buf(), source };
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(parquet_err)?
        .build()
        .map_err(parquet_err)?;
    for batch in reader {
        f(batch.map_err(|e| parquet_err(e.into()))?)?;
    }
    Ok(())
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
        // The perceptual fingerprint dedup compares (media::fingerprint); null in older runs.
        Field::new("phash_dct", DataType::UInt64, true),
        Field::new("phash_dct_mirror", DataType::UInt64, true),
        Field::new("phash_dct_coeffs", DataType::FixedSizeBinary(crate::media::fingerprint::BYTES as i32), true),
        Field::new("status", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, true),
        Field::new("error", DataType::Utf8, true),
        // Quality signals (see media::quality); null where not measured.
        Field::new("blur", DataType::Float32, true),
        Field::new("brightness", DataType::Float32, true),
        Field::new("contrast", DataType::Float32, true),
        Field::new("entropy", DataType::Float32, true),
        Field::new("chroma", DataType::Float32, true),
        Field::new("colour_container", DataType::Boolean, true),
        Field::new("frames", DataType::UInt32, true),
        Field::new("sharpness", DataType::Float32, true),
        Field::new("highlights", DataType::Float32, true),
        Field::new("lightness", DataType::Float32, true),
        Field::new("caption_chars", DataType::UInt32, true),
        Field::new("caption_tokens", DataType::UInt32, true),
        Field::new("caption_boilerplate", DataType::Utf8, true),
        Field::new("caption_script", DataType::Utf8, true),
        // The sample's own fields (Origin); null in older runs and where the input has none.
        Field::new("key", DataType::Utf8, true),
        Field::new("url", DataType::Utf8, true),
        Field::new("original_width", DataType::UInt32, true),
        Field::new("original_height", DataType::UInt32, true),
        Field::new("extra", DataType::Utf8, true),
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
            col(Arc::new(rows.iter().map(|r| r.fingerprint.map(|f| f.hash)).collect::<UInt64Array>())),
            col(Arc::new(rows.iter().map(|r| r.fingerprint.map(|f| f.mirror)).collect::<UInt64Array>())),
            col(Arc::new(
                FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                    rows.iter().map(|r| r.fingerprint.map(|f| f.coeffs)),
                    crate::media::fingerprint::BYTES as i32,
                )
                .expect("64-byte values"),
            )),
            col(Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.status.as_str())))),
            col(Arc::new(rows.iter().map(|r| r.reason.as_deref()).collect::<StringArray>())),
            col(Arc::new(rows.iter().map(|r| r.error.as_deref()).collect::<StringArray>())),
            col(Arc::new(rows.iter().map(|r| r.image_signals.and_then(|s| s.blur)).collect::<Float32Array>())),
            col(Arc::new(rows.iter().map(|r| r.image_signals.map(|s| s.brightness)).collect::<Float32Array>())),
            col(Arc::new(rows.iter().map(|r| r.image_signals.map(|s| s.contrast)).collect::<Float32Array>())),
            col(Arc::new(rows.iter().map(|r| r.image_signals.map(|s| s.entropy)).collect::<Float32Array>())),
            col(Arc::new(rows.iter().map(|r| r.image_signals.map(|s| s.chroma)).collect::<Float32Array>())),
            col(Arc::new(rows.iter().map(|r| r.image_signals.map(|s| s.colour_container)).collect::<BooleanArray>())),
            col(Arc::new(rows.iter().map(|r| r.image_signals.map(|s| s.frames)).collect::<UInt32Array>())),
            col(Arc::new(rows.iter().map(|r| r.image_signals.and_then(|s| s.sharpness)).collect::<Float32Array>())),
            col(Arc::new(rows.iter().map(|r| r.image_signals.and_then(|s| s.highlights)).collect::<Float32Array>())),
            col(Arc::new(rows.iter().map(|r| r.image_signals.and_then(|s| s.lightness)).collect::<Float32Array>())),
            col(Arc::new(rows.iter().map(|r| r.caption_signals.as_ref().map(|s| s.chars)).collect::<UInt32Array>())),
            col(Arc::new(rows.iter().map(|r| r.caption_signals.as_ref().map(|s| s.tokens)).collect::<UInt32Array>())),
            col(Arc::new(
                rows.iter()
                    .map(|r| r.caption_signals.as_ref().and_then(|s| s.boilerplate.as_deref()))
                    .collect::<StringArray>(),
            )),
            col(Arc::new(
                rows.iter()
                    .map(|r| r.caption_signals.as_ref().and_then(|s| s.script.as_deref()))
                    .collect::<StringArray>(),
            )),
            col(Arc::new(rows.iter().map(|r| r.origin.key.as_deref()).collect::<StringArray>())),
            col(Arc::new(rows.iter().map(|r| r.origin.url.as_deref()).collect::<StringArray>())),
            col(Arc::new(rows.iter().map(|r| r.origin.original_width).collect::<UInt32Array>())),
            col(Arc::new(rows.iter().map(|r| r.origin.original_height).collect::<UInt32Array>())),
            col(Arc::new(rows.iter().map(|r| r.origin.extra.as_deref()).collect::<StringArray>())),
        ],
    )
}

pub use layout::part as part_name;

/// Writes rows into a run directory, one set of part files per `part_size` rows.
pub struct RunWriter {
    dir: PathBuf,
    part_size: usize,
    embed_dim: usize,
    pending: Vec<Row>,
    parts: Vec<String>,
    counts: Counts,
    checksums: BTreeMap<String, String>,
}

impl RunWriter {
    /// Prepares `dir` (created if missing). It must not already hold a run unless `overwrite`.
    pub fn create(dir: &Path, part_size: usize, embed_dim: usize, overwrite: bool) -> Result<Self> {
        if part_size == 0 {
            return Err(Error::InvalidArg { what: "embed option part_size", reason: "must be at least 1".into() });
        }
        if holds_run(dir) {
            if !overwrite {
                return Err(Error::RunDir {
                    path: dir.into(),
                    reason: "already holds a run; choose another --out or pass --overwrite to replace it".into(),
                });
            }
            wipe(dir)?;
        }
        let w = Self::fresh(dir, part_size, embed_dim)?;
        w.create_part_dirs()?;
        Ok(w)
    }

    fn fresh(dir: &Path, part_size: usize, embed_dim: usize) -> Result<Self> {
        Ok(Self {
            dir: dir.into(),
            part_size,
            embed_dim,
            pending: Vec::new(),
            parts: Vec::new(),
            counts: Counts::default(),
            checksums: BTreeMap::new(),
        })
    }

    fn create_part_dirs(&self) -> Result<()> {
        for sub in PART_DIRS {
            let p = Layout::new(&self.dir).part_dir(sub);
            fs::create_dir_all(&p).map_err(|e| Error::io("creating", &p, e))?;
        }
        Ok(())
    }

    /// Starts or resumes the run `manifest` describes (its `counts` and `parts` empty) in `dir`
    /// for records with ids `ids`, in order:
    /// - an empty `dir` (or `overwrite`): a fresh run, with `run.json` marked incomplete until
    ///   [`RunWriter::finish`];
    /// - an interrupted run of the same job: its complete parts are kept (checked against
    ///   `ids`), anything after them is removed, and writing resumes after their rows;
    /// - a finished run of the same job: nothing to do;
    /// - anything else is refused, naming what differs.
    pub fn start(dir: &Path, manifest: &RunManifest, ids: &[u64], overwrite: bool) -> Result<Start> {
        let part_size = manifest.part_size;
        if part_size == 0 {
            return Err(Error::InvalidArg { what: "embed option part_size", reason: "must be at least 1".into() });
        }
        let refuse = |reason: String| Error::RunDir { path: dir.into(), reason };
        if overwrite && holds_run(dir) {
            wipe(dir)?;
        }
        if Layout::new(dir).run_json().is_file() {
            let old = read_manifest(dir)?;
            let diff = job_differences(&old, manifest);
            if !diff.is_empty() {
                return Err(refuse(format!(
                    "holds a run of a different job (it differs in {}); pass --overwrite to replace it or choose another --out",
                    diff.join(", ")
                )));
            }
            if old.complete {
                return Ok(Start::Complete(Box::new(old)));
            }
            let mut w = Self::fresh(dir, part_size, manifest.embed_dim)?;
            w.create_part_dirs()?;
            let done = w.keep_complete_parts(ids)?;
            return Ok(Start::Resume(w, done));
        }
        let has_parts = PART_DIRS.iter().any(|sub| {
            fs::read_dir(Layout::new(dir).part_dir(sub)).is_ok_and(|mut entries| entries.any(|e| e.is_ok()))
        });
        if has_parts {
            return Err(refuse(
                "holds parts but no run.json, so it cannot be resumed safely; pass --overwrite to start again".into(),
            ));
        }
        // run.json first: a run killed at any later moment can be recognised and resumed.
        fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        let w = Self::fresh(dir, part_size, manifest.embed_dim)?;
        w.write_manifest(manifest)?;
        w.create_part_dirs()?;
        Ok(Start::Fresh(w))
    }

    /// Keeps the leading parts that are whole (metadata and both embedding files, all with the
    /// part's rows, ids as expected) and removes every other file under the part folders.
    fn keep_complete_parts(&mut self, ids: &[u64]) -> Result<usize> {
        let d = self.embed_dim;
        let dir = self.dir.clone();
        let files = Layout::new(&dir);
        let mut done = 0;
        loop {
            let index = self.parts.len();
            let part = part_name(index);
            let meta = files.metadata_part(&part);
            if !meta.is_file() || done + self.part_size > ids.len() {
                break;
            }
            let Ok(rows) = read::read_rows(&meta) else { break };
            let want = &ids[done..done + self.part_size];
            if rows.len() != self.part_size || rows.iter().map(|r| r.id).ne(want.iter().copied()) {
                break;
            }
            let shapes_ok = [false, true]
                .iter()
                .all(|&text| npy::read_shape(&files.emb_part(text, &part)).ok() == Some((rows.len(), d)));
            if !shapes_ok {
                break;
            }
            for row in &rows {
                self.count(row, row.status == Status::Embedded && row.caption.is_some());
            }
            for sub in [layout::IMG_EMB, layout::TEXT_EMB, layout::METADATA] {
                let rel = layout::part_file(sub, &part);
                self.checksums.insert(rel.clone(), sha256_file(&files.file(&rel))?);
            }
            done += rows.len();
            self.parts.push(part);
        }
        let keep: std::collections::HashSet<String> =
            self.parts.iter().flat_map(|p| [format!("{p}.parquet"), format!("{p}.npy")]).collect();
        for sub in PART_DIRS {
            let folder = files.part_dir(sub);
            let entries = fs::read_dir(&folder).map_err(|e| Error::io("reading", &folder, e))?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) {
                    let p = entry.path();
                    fs::remove_file(&p).map_err(|e| Error::io("removing", &p, e))?;
                }
            }
        }
        tracing::info!("resuming {}: {} complete parts, {done} rows", self.dir.display(), self.parts.len());
        Ok(done)
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
            self.count(&row, row.text_embedding.is_some());
            self.pending.push(row);
            if self.pending.len() >= self.part_size {
                self.flush_part()?;
            }
        }
        Ok(())
    }

    fn count(&mut self, row: &Row, with_caption: bool) {
        let c = &mut self.counts;
        c.records += 1;
        match row.status {
            Status::Embedded => c.embedded += 1,
            Status::Skipped => {
                c.skipped += 1;
                *c.skipped_by_reason.entry(row.reason.clone().unwrap_or_else(|| "unknown".into())).or_default() += 1;
            }
        }
        c.with_caption += u64::from(with_caption);
        c.captions_truncated += u64::from(row.caption_truncated);
        c.captions_lossy += u64::from(row.caption_lossy);
    }

    fn flush_part(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending);
        let index = self.parts.len();
        let d = self.embed_dim;
        // Embeddings first, metadata last: a part counts as written once its metadata exists.
        let part = part_name(index);
        for (sub, pick) in [(layout::IMG_EMB, true), (layout::TEXT_EMB, false)] {
            let mut data = Vec::with_capacity(rows.len() * d);
            for r in &rows {
                match if pick { &r.image_embedding } else { &r.text_embedding } {
                    Some(e) => data.extend(e.iter().map(|&v| f16::from_f32(v))),
                    None => data.extend(std::iter::repeat_n(f16::ZERO, d)),
                }
            }
            let rel = layout::part_file(sub, &part);
            let path = self.dir.join(&rel);
            let mut bytes = Vec::with_capacity(128 + data.len() * 2);
            npy::write_f16(&mut bytes, rows.len(), d, &data).map_err(|e| Error::io("writing", &path, e))?;
            drop(data);
            self.checksums.insert(rel, sha256_bytes(&bytes));
            write_atomic(&path, |w| w.write_all(&bytes))?;
        }
        let rel = layout::part_file(layout::METADATA, &part);
        let path = self.dir.join(&rel);
        let batch = metadata_batch(&rows).map_err(|e| Error::Parquet { path: path.clone(), source: e.into() })?;
        write_parquet_atomic(&path, &batch)?;
        self.checksums.insert(rel, sha256_file(&path)?);
        self.parts.push(part);
        Ok(())
    }

    /// Writes the last part and `run.json` (with `counts` and `parts` filled in, marked complete).
    pub fn finish(mut self, mut manifest: RunManifest) -> Result<RunManifest> {
        self.flush_part()?;
        manifest.counts = self.counts.clone();
        manifest.parts = self.parts.clone();
        manifest.checksums = std::mem::take(&mut self.checksums);
        manifest.complete = true;
        self.write_dataset_card(&manifest)?;
        self.write_manifest(&manifest)?;
        Ok(manifest)
    }

    /// `README.md`, a dataset card whose `configs` make `datasets.load_dataset(RUN)` read the
    /// metadata parts (and not the summaries' JSON). No date in it: reruns stay byte-identical.
    fn write_dataset_card(&self, manifest: &RunManifest) -> Result<()> {
        let card = format!(
            "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: \"{meta}/part-*.parquet\"\n\
             ---\n\n# A sieve run\n\n\
             Written by sieve {version} with the model `{model}`. `{meta}/part-*.parquet` holds one row per \
             input record (its uri, caption, status and, for a skipped one, the reason); \
             `datasets.load_dataset(\"path/to/this/folder\")` reads them as its `train` split. \
             `{img}/` and `{text}/` hold float16 `.npy` embeddings row-aligned with the metadata parts, \
             and `{run_json}` describes the run. The stages' outputs are described in sieve's \
             docs/run-directory.md.\n",
            meta = layout::METADATA,
            img = layout::IMG_EMB,
            text = layout::TEXT_EMB,
            run_json = layout::RUN_JSON,
            version = manifest.sieve_version,
            model = manifest.model.id,
        );
        write_atomic(&Layout::new(&self.dir).dataset_card(), |w| w.write_all(card.as_bytes()))
    }

    fn write_manifest(&self, manifest: &RunManifest) -> Result<()> {
        let path = Layout::new(&self.dir).run_json();
        let json = serde_json::to_vec_pretty(manifest).expect("run manifest serialises");
        write_atomic(&path, |w| {
            w.write_all(&json)?;
            w.write_all(b"\n")
        })
    }
}

/// How [`RunWriter::start`] found the run directory.
pub enum Start {
    Fresh(RunWriter),
    /// An interrupted run: the writer and the number of rows already written.
    Resume(RunWriter, usize),
    /// The same job already finished: its manifest.
    Complete(Box<RunManifest>),
}

use layout::PART_DIRS;

fn holds_run(dir: &Path) -> bool {
    let files = Layout::new(dir);
    files.run_json().exists() || files.part_dir(layout::METADATA).exists()
}

/// Removes a run's own files from `dir`, and the later stages' outputs computed from them.
fn wipe(dir: &Path) -> Result<()> {
    for sub in PART_DIRS.iter().chain(STAGE_OUTPUTS) {
        let p = Layout::new(dir).file(sub);
        let removed = match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&p),
            Ok(_) => fs::remove_file(&p),
            Err(_) => continue,
        };
        removed.map_err(|e| Error::io("removing", &p, e))?;
    }
    let _ = fs::remove_file(Layout::new(dir).run_json());
    Ok(())
}

/// What makes two manifests different jobs (whose rows must not be mixed in one run): the
/// model's weights, the preprocessing, the input listing, the limits and the part size.
pub fn job_differences(a: &RunManifest, b: &RunManifest) -> Vec<&'static str> {
    let mut diff = Vec::new();
    if a.model.weights_sha256 != b.model.weights_sha256 || a.embed_dim != b.embed_dim {
        diff.push("the model");
    }
    if a.compute_dtype != b.compute_dtype {
        diff.push("the compute dtype (device)");
    }
    if a.preprocessing != b.preprocessing || a.text_max_tokens != b.text_max_tokens {
        diff.push("the preprocessing");
    }
    if a.input != b.input {
        diff.push("the input (paths, format, columns, shard or the files listed)");
    }
    if a.limits != b.limits {
        diff.push("--max-bytes/--max-pixels");
    }
    if a.part_size != b.part_size {
        diff.push("--part-size");
    }
    diff
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
    pub preprocessing: crate::media::preprocess::PreprocessorConfig,
    pub text_max_tokens: usize,
    pub input: InputInfo,
    pub limits: crate::media::decode::Limits,
    pub batch_size: usize,
    pub part_size: usize,
    /// False while `sieve embed` is running (or was killed): rerun it to finish.
    #[serde(default = "yes")]
    pub complete: bool,
    pub counts: Counts,
    /// Part names, e.g. `part-00000`, present in each of metadata/, img_emb/, text_emb/.
    pub parts: Vec<String>,
    /// The runs `sieve merge` combined into this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
    /// SHA-256 of every part file (`img_emb/part-00000.npy` → hex), checked whenever a part is
    /// read and by `sieve verify`; empty in runs made before they were recorded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checksums: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

/// What was read.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct InputInfo {
    /// The inputs, brace patterns expanded (all of them, also those other shards read).
    pub paths: Vec<String>,
    /// dir, csv, tsv, jsonl, parquet or wds.
    pub format: String,
    /// Manifest columns used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_col: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption_col: Option<String>,
    /// `--keep-cols`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keep_cols: Vec<String>,
    /// `--shard i/n`, when only a slice of the input was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::ingest::Shard>,
    /// Records listed (this shard's).
    pub records: u64,
    /// SHA-256 over the listed records' ids and uris, so a resumed run can tell the input
    /// has not changed.
    pub listing_sha256: String,
}

/// Reads a run's `run.json`.
pub fn read_manifest(dir: &Path) -> Result<RunManifest> {
    Ok(read_manifest_and_fingerprint(dir)?.0)
}

/// Reads a run's `run.json` and the run's fingerprint: the SHA-256 of that file (the model and
/// its weights, the preprocessing, the input listing, the counts and every part's checksum).
/// A complete run's run.json is never rewritten, so the fingerprint names its data; every stage
/// output records it, and one computed from another run (a copied folder, a run replaced
/// behind its back) is recognised and never used.
pub fn read_manifest_and_fingerprint(dir: &Path) -> Result<(RunManifest, String)> {
    let path = Layout::new(dir).run_json();
    let bytes = fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
    let m: RunManifest = serde_json::from_slice(&bytes).map_err(|source| Error::Json { path: path.clone(), source })?;
    check_manifest(&m).map_err(|reason| Error::RunDir { path, reason })?;
    Ok((m, sha256_bytes(&bytes)))
}

/// The largest embedding dimension a run may declare (the widest CLIP models use 1280).
pub const MAX_EMBED_DIM: usize = 1 << 16;

/// What a run.json must satisfy before anything it names is read: a sane dimension and part
/// size, and part names of the form `part-NNNNN` (never a path).
fn check_manifest(m: &RunManifest) -> std::result::Result<(), String> {
    if m.embed_dim == 0 || m.embed_dim > MAX_EMBED_DIM || m.model.embed_dim != m.embed_dim {
        return Err(format!("embed_dim {} is not a dimension sieve writes (1 to {MAX_EMBED_DIM})", m.embed_dim));
    }
    if m.part_size == 0 {
        return Err("part_size is 0".into());
    }
    for p in &m.parts {
        let digits = p.strip_prefix("part-").unwrap_or("");
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("lists a part named {p:?}; parts are named part-NNNNN"));
        }
    }
    Ok(())
}
