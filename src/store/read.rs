//! Reading a run directory back: the metadata of every row and the embedding matrices.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::layout::{self, Layout};
use super::{npy, Row, RunManifest, Status};
use crate::error::{Error, Result};
use crate::media::fingerprint::Fingerprint;
use crate::media::quality::{CaptionSignals, ImageSignals};

/// The metadata columns later stages use, one entry per row in run order.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    pub id: Vec<u64>,
    pub uri: Vec<String>,
    pub caption: Vec<Option<String>>,
    pub sha256: Vec<Option<String>>,
    pub width: Vec<Option<u32>>,
    pub height: Vec<Option<u32>>,
    /// `None` for runs written before perceptual hashes were recorded.
    pub phash: Option<Vec<Option<u64>>>,
    /// `None` for runs written before perceptual fingerprints were recorded.
    pub fingerprint: Option<Vec<Option<Fingerprint>>>,
    pub embedded: Vec<bool>,
}

impl Metadata {
    pub fn len(&self) -> usize {
        self.id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }
}

/// A run directory opened for reading.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    pub manifest: RunManifest,
    /// The SHA-256 of `run.json`, recorded by every stage output computed from this run
    /// ([`super::read_manifest_and_fingerprint`]).
    pub fingerprint: String,
    pub meta: Metadata,
    /// Rows of each metadata part, in part order.
    pub part_rows: Vec<usize>,
}

/// How far the norm of a stored embedding may be from 1: float16 rounding of a unit vector
/// moves it by well under 1e-3, so anything further was damaged or written by something else.
pub const NORM_TOLERANCE: f32 = 0.01;

/// Checks the rows of one embedding part (`d` columns): every value finite, and each row `i`
/// for which `has(i)` holds an embedding of unit norm. `ids` are the part's record ids, for
/// the message, which names the file, the row and the id.
pub fn check_embedding_rows(
    path: &Path,
    values: &[f32],
    d: usize,
    ids: &[u64],
    has: impl Fn(usize) -> bool,
) -> Result<()> {
    let fix = "the run is damaged or was not written by sieve embed; `sieve verify RUN` checks every part, \
               and embedding again (--overwrite) repairs it";
    for (i, row) in values.chunks_exact(d.max(1)).enumerate() {
        let id = ids.get(i).copied().unwrap_or(i as u64);
        if let Some(j) = row.iter().position(|x| !x.is_finite()) {
            return Err(bad(path, format!("row {i} (id {id}) holds {} at column {j}; {fix}", row[j])));
        }
        if has(i) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            if (norm - 1.0).abs() > NORM_TOLERANCE {
                return Err(bad(
                    path,
                    format!("row {i} (id {id}) has norm {norm}, not 1 (embeddings are stored L2-normalised); {fix}"),
                ));
            }
        }
    }
    Ok(())
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::RunDir { path: path.into(), reason: reason.into() }
}

fn column<'a>(batch: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a dyn Array> {
    batch.column_by_name(name).map(|c| c.as_ref()).ok_or_else(|| bad(path, format!("no `{name}` column")))
}

/// The perceptual fingerprints of a metadata batch (`phash_dct`, `phash_dct_mirror`,
/// `phash_dct_coeffs`), `None` when the batch has not got the columns (an older run).
fn fingerprints(batch: &RecordBatch, path: &Path) -> Result<Option<Vec<Option<Fingerprint>>>> {
    let (Some(h), Some(m), Some(c)) = (
        batch.column_by_name("phash_dct"),
        batch.column_by_name("phash_dct_mirror"),
        batch.column_by_name("phash_dct_coeffs"),
    ) else {
        return Ok(None);
    };
    let u64s = |a: &dyn Array, name: &str| {
        a.as_primitive_opt::<UInt64Type>().cloned().ok_or_else(|| bad(path, format!("`{name}` is not uint64")))
    };
    let (h, m) = (u64s(h, "phash_dct")?, u64s(m, "phash_dct_mirror")?);
    let c = c
        .as_fixed_size_binary_opt()
        .filter(|c| c.value_length() == crate::media::fingerprint::BYTES as i32)
        .ok_or_else(|| {
            bad(path, format!("`phash_dct_coeffs` is not {}-byte binary", crate::media::fingerprint::BYTES))
        })?;
    Ok(Some(
        (0..batch.num_rows())
            .map(|i| {
                (h.is_valid(i) && m.is_valid(i) && c.is_valid(i)).then(|| Fingerprint {
                    hash: h.value(i),
                    mirror: m.value(i),
                    coeffs: c.value(i).try_into().expect("checked length"),
                })
            })
            .collect(),
    ))
}

fn read_metadata_part(path: &Path, meta: &mut Metadata) -> Result<usize> {
    super::guard_parquet(path, || read_metadata_part_unguarded(path, meta))
}

fn read_metadata_part_unguarded(path: &Path, meta: &mut Metadata) -> Result<usize> {
    let file = File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let parquet_err = |source| Error::Parquet { path: path.into(), source };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?.build().map_err(parquet_err)?;
    let mut rows = 0;
    for batch in reader {
        let batch = batch.map_err(|e| parquet_err(e.into()))?;
        let n = batch.num_rows();
        rows += n;
        let strs = |name| -> Result<Vec<Option<String>>> {
            let c = column(&batch, name, path)?;
            let c = c.as_string_opt::<i32>().ok_or_else(|| bad(path, format!("`{name}` is not a string column")))?;
            Ok(c.iter().map(|v| v.map(str::to_string)).collect())
        };
        let ids = column(&batch, "id", path)?
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| bad(path, "`id` is not uint64"))?
            .values()
            .to_vec();
        meta.id.extend(ids);
        meta.uri.extend(strs("uri")?.into_iter().map(Option::unwrap_or_default));
        meta.caption.extend(strs("caption")?);
        meta.sha256.extend(strs("sha256")?);
        meta.embedded.extend(strs("status")?.into_iter().map(|s| s.as_deref() == Some("embedded")));
        for (name, dst) in [("width", &mut meta.width), ("height", &mut meta.height)] {
            let c = column(&batch, name, path)?
                .as_primitive_opt::<UInt32Type>()
                .ok_or_else(|| bad(path, format!("`{name}` is not uint32")))?;
            dst.extend(c.iter());
        }
        match (batch.column_by_name("phash"), meta.phash.as_mut()) {
            (Some(c), Some(dst)) => {
                let c = c.as_primitive_opt::<UInt64Type>().ok_or_else(|| bad(path, "`phash` is not uint64"))?;
                dst.extend(c.iter());
            }
            _ => meta.phash = None,
        }
        match (fingerprints(&batch, path)?, meta.fingerprint.as_mut()) {
            (Some(f), Some(dst)) => dst.extend(f),
            _ => meta.fingerprint = None,
        }
    }
    Ok(rows)
}

/// Whether a stage output was computed from the run it sits in, judged by the run fingerprint
/// its summary records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provenance {
    /// It names this run.
    Ours,
    /// Written by a sieve older than the fingerprint: readers judge it by what it lists.
    Unnamed,
    /// It names another run; the message says which file and how to remake it.
    Foreign(String),
}

impl Run {
    /// Where the stage output summarised by `summary` (relative to the run, e.g.
    /// `dedup/summary.json`, which a stage writes last) came from; `command` remakes it. An
    /// output without a summary (written by hand, or by an older sieve) is `Unnamed`.
    pub fn provenance(&self, summary: &str, command: &str) -> Provenance {
        #[derive(serde::Deserialize)]
        struct Named {
            run_fingerprint: Option<String>,
        }
        let path = self.dir.join(summary);
        let redo = format!("run `sieve {command} {}` again", self.dir.display());
        let named = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Named>(&bytes),
            Err(_) => return Provenance::Unnamed,
        };
        match named {
            Ok(Named { run_fingerprint: None }) => Provenance::Unnamed,
            Ok(Named { run_fingerprint: Some(f) }) if f == self.fingerprint => Provenance::Ours,
            Ok(Named { run_fingerprint: Some(f) }) => Provenance::Foreign(format!(
                "{summary} was computed from another run (its run fingerprint is {}…, this run's {}…), so it is not used; {redo}",
                f.chars().take(12).collect::<String>(),
                &self.fingerprint[..12],
            )),
            Err(e) => Provenance::Foreign(format!("{summary} is unreadable ({e}); {redo}")),
        }
    }

    /// An error unless the stage output summarised by `summary` may be used with this run
    /// (see [`Run::provenance`]).
    pub fn check_provenance(&self, summary: &str, command: &str) -> Result<()> {
        match self.provenance(summary, command) {
            Provenance::Foreign(why) => Err(bad(&self.dir, why)),
            _ => Ok(()),
        }
    }

    /// Opens `dir`: reads `run.json` and every metadata part it lists.
    pub fn open(dir: &Path) -> Result<Self> {
        if !Layout::new(dir).run_json().is_file() {
            return Err(bad(
                dir,
                "is not a sieve run directory (no run.json); make one with `sieve embed INPUT --out RUN`",
            ));
        }
        let (manifest, fingerprint) = super::read_manifest_and_fingerprint(dir)?;
        if !manifest.complete {
            return Err(bad(
                dir,
                "is an unfinished run (sieve embed was interrupted); rerun the same sieve embed command to finish it",
            ));
        }
        let mut meta = Metadata { phash: Some(Vec::new()), fingerprint: Some(Vec::new()), ..Default::default() };
        let mut part_rows = Vec::with_capacity(manifest.parts.len());
        for part in &manifest.parts {
            let path = Layout::new(dir).metadata_part(part);
            verify_part_file(&manifest, dir, &layout::part_file(layout::METADATA, part))?;
            part_rows.push(read_metadata_part(&path, &mut meta)?);
        }
        if meta.len() as u64 != manifest.counts.records {
            return Err(bad(
                dir,
                format!("metadata holds {} rows but run.json counts {}", meta.len(), manifest.counts.records),
            ));
        }
        if let Some(i) = meta.id.windows(2).position(|w| w[0] >= w[1]) {
            return Err(bad(
                dir,
                format!("metadata ids are not increasing (id {} then {} at row {})", meta.id[i], meta.id[i + 1], i + 1),
            ));
        }
        if meta.phash.is_none() {
            tracing::warn!(
                "{} has no perceptual hashes (made by an older sieve); perceptual dedup is skipped",
                dir.display()
            );
        }
        Ok(Self { dir: dir.into(), manifest, fingerprint, meta, part_rows })
    }

    /// Metadata column `name` as text, one entry per row (`None` where null): any string,
    /// integer or boolean column of the metadata parts, or `folder`, the folder part of `uri`
    /// (`a/b/c.jpg` → `a/b`, `.` for files at the top).
    pub fn column_strings(&self, name: &str) -> Result<Vec<Option<String>>> {
        if name == "folder" && !self.has_column("folder")? {
            return Ok(self
                .meta
                .uri
                .iter()
                .map(|u| Some(u.rsplit_once('/').map(|(dir, _)| dir).unwrap_or(".").to_string()))
                .collect());
        }
        let mut out = Vec::with_capacity(self.meta.len());
        for part in &self.manifest.parts {
            let path = Layout::new(&self.dir).metadata_part(part);
            let file = File::open(&path).map_err(|e| Error::io("reading", &path, e))?;
            let parquet_err = |source| Error::Parquet { path: path.clone(), source };
            let reader =
                ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?.build().map_err(parquet_err)?;
            for batch in reader {
                let batch = batch.map_err(|e| parquet_err(e.into()))?;
                if batch.column_by_name(name).is_none() && super::metadata_schema().field_with_name(name).is_ok() {
                    // A column this version writes, in a part an older version wrote (a resumed
                    // or merged run): null there.
                    out.extend(std::iter::repeat_n(None, batch.num_rows()));
                    continue;
                }
                let c = batch.column_by_name(name).ok_or_else(|| {
                    let names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
                    Error::InvalidArg {
                        what: "metadata column",
                        reason: format!("no metadata column `{name}`; columns: folder, {}", names.join(", ")),
                    }
                })?;
                let text: Vec<Option<String>> = if let Some(a) = c.as_string_opt::<i32>() {
                    a.iter().map(|v| v.map(str::to_string)).collect()
                } else if let Some(a) = c.as_primitive_opt::<UInt64Type>() {
                    a.iter().map(|v| v.map(|x| x.to_string())).collect()
                } else if let Some(a) = c.as_primitive_opt::<UInt32Type>() {
                    a.iter().map(|v| v.map(|x| x.to_string())).collect()
                } else if let Some(a) = c.as_primitive_opt::<Int64Type>() {
                    a.iter().map(|v| v.map(|x| x.to_string())).collect()
                } else if let Some(a) = c.as_primitive_opt::<Int32Type>() {
                    a.iter().map(|v| v.map(|x| x.to_string())).collect()
                } else if let Some(a) = c.as_boolean_opt() {
                    a.iter().map(|v| v.map(|x| x.to_string())).collect()
                } else {
                    return Err(Error::InvalidArg {
                        what: "metadata column",
                        reason: format!("column `{name}` is {}; expected text, integers or booleans", c.data_type()),
                    });
                };
                out.extend(text);
            }
        }
        Ok(out)
    }

    fn has_column(&self, name: &str) -> Result<bool> {
        let Some(part) = self.manifest.parts.first() else { return Ok(false) };
        let path = Layout::new(&self.dir).metadata_part(part);
        let file = File::open(&path).map_err(|e| Error::io("reading", &path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|source| Error::Parquet { path: path.clone(), source })?;
        Ok(builder.schema().field_with_name(name).is_ok())
    }

    /// All rows of `img_emb` (`text = false`) or `text_emb`, concatenated: `(rows × dim)` f32.
    /// Every part is checked as it is read: its shape against the metadata, every value finite,
    /// and every embedded row (with a caption, for `text_emb`) of unit norm; a part that fails
    /// is an error naming the file, the row and its id.
    pub fn embeddings(&self, text: bool) -> Result<Vec<f32>> {
        let sub = layout::emb_dir(text);
        let d = self.manifest.embed_dim;
        let mut out = Vec::with_capacity(self.meta.len().saturating_mul(d));
        for p in 0..self.manifest.parts.len() {
            out.extend(self.embedding_part(text, p)?);
        }
        if out.len() != self.meta.len() * d {
            return Err(bad(&self.dir.join(sub), "embedding rows do not match the metadata rows"));
        }
        Ok(out)
    }

    /// The rows of part `p` (an index into `manifest.parts`) of `img_emb` or `text_emb`, checked
    /// as [`Run::embeddings`] checks them.
    pub fn embedding_part(&self, text: bool, p: usize) -> Result<Vec<f32>> {
        let sub = layout::emb_dir(text);
        let d = self.manifest.embed_dim;
        let part = &self.manifest.parts[p];
        let n = self.part_rows[p];
        let start: usize = self.part_rows[..p].iter().sum();
        let path = Layout::new(&self.dir).emb_part(text, part);
        let sha = self.manifest.checksums.get(&layout::part_file(sub, part));
        let (rows, cols, values) = npy::read_f16_checked(&path, sha.map(String::as_str))?;
        if (rows, cols) != (n, d) {
            return Err(bad(
                &path,
                format!("holds {rows}×{cols}, but the metadata part has {n} rows of dimension {d}"),
            ));
        }
        // An image-only model stores a zero text row for every item, captioned or not.
        let has = |i: usize| {
            self.meta.embedded[start + i]
                && (!text || (self.meta.caption[start + i].is_some() && self.manifest.model.family.has_text()))
        };
        check_embedding_rows(&path, &values, d, &self.meta.id[start..start + n], has)?;
        Ok(values)
    }
}

/// Every row of one metadata part, without embeddings (see [`read_part_rows`]).
pub fn read_rows(path: &Path) -> Result<Vec<Row>> {
    super::guard_parquet(path, || read_rows_unguarded(path))
}

fn read_rows_unguarded(path: &Path) -> Result<Vec<Row>> {
    let file = File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let parquet_err = |source| Error::Parquet { path: path.into(), source };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?.build().map_err(parquet_err)?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| parquet_err(e.into()))?;
        let strs = |name| -> Result<Vec<Option<String>>> {
            let c = column(&batch, name, path)?;
            let c = c.as_string_opt::<i32>().ok_or_else(|| bad(path, format!("`{name}` is not a string column")))?;
            Ok(c.iter().map(|v| v.map(str::to_string)).collect())
        };
        let bools = |name| -> Result<Vec<bool>> {
            let c = column(&batch, name, path)?
                .as_boolean_opt()
                .ok_or_else(|| bad(path, format!("`{name}` is not boolean")))?;
            Ok(c.iter().map(|v| v.unwrap_or(false)).collect())
        };
        let u32s = |name| -> Result<Vec<Option<u32>>> {
            let c = column(&batch, name, path)?
                .as_primitive_opt::<UInt32Type>()
                .ok_or_else(|| bad(path, format!("`{name}` is not uint32")))?;
            Ok(c.iter().collect())
        };
        let u64s = |name| -> Result<Vec<Option<u64>>> {
            let c = column(&batch, name, path)?
                .as_primitive_opt::<UInt64Type>()
                .ok_or_else(|| bad(path, format!("`{name}` is not uint64")))?;
            Ok(c.iter().collect())
        };
        // Columns added after the first release are optional: older runs have none of them.
        let opt = |name: &str| batch.column_by_name(name).is_some();
        let n = batch.num_rows();
        let opt_u64s = |name| -> Result<Vec<Option<u64>>> {
            if opt(name) {
                u64s(name)
            } else {
                Ok(vec![None; n])
            }
        };
        let opt_u32s = |name| -> Result<Vec<Option<u32>>> {
            if opt(name) {
                u32s(name)
            } else {
                Ok(vec![None; n])
            }
        };
        let opt_strs = |name| -> Result<Vec<Option<String>>> {
            if opt(name) {
                strs(name)
            } else {
                Ok(vec![None; n])
            }
        };
        let opt_f32s = |name: &str| -> Result<Vec<Option<f32>>> {
            let Some(c) = batch.column_by_name(name) else { return Ok(vec![None; n]) };
            let c = c.as_primitive_opt::<Float32Type>().ok_or_else(|| bad(path, format!("`{name}` is not float32")))?;
            Ok(c.iter().collect())
        };
        let opt_bools = |name: &str| -> Result<Vec<Option<bool>>> {
            let Some(c) = batch.column_by_name(name) else { return Ok(vec![None; n]) };
            let c = c.as_boolean_opt().ok_or_else(|| bad(path, format!("`{name}` is not boolean")))?;
            Ok(c.iter().collect())
        };
        let (id, uri, caption, sha) = (u64s("id")?, strs("uri")?, strs("caption")?, strs("sha256")?);
        let (lossy, truncated) = (bools("caption_lossy")?, bools("caption_truncated")?);
        let (width, height, phash) = (u32s("width")?, u32s("height")?, opt_u64s("phash")?);
        let fingerprint = fingerprints(&batch, path)?.unwrap_or_else(|| vec![None; n]);
        let (status, reason, error) = (strs("status")?, strs("reason")?, strs("error")?);
        let (blur, brightness, contrast) = (opt_f32s("blur")?, opt_f32s("brightness")?, opt_f32s("contrast")?);
        let (entropy, chroma, colour, frames) =
            (opt_f32s("entropy")?, opt_f32s("chroma")?, opt_bools("colour_container")?, opt_u32s("frames")?);
        let (sharpness, highlights, lightness) =
            (opt_f32s("sharpness")?, opt_f32s("highlights")?, opt_f32s("lightness")?);
        let (chars, tokens) = (opt_u32s("caption_chars")?, opt_u32s("caption_tokens")?);
        let (boilerplate, script) = (opt_strs("caption_boilerplate")?, opt_strs("caption_script")?);
        let (key, url, extra) = (opt_strs("key")?, opt_strs("url")?, opt_strs("extra")?);
        let (original_width, original_height) = (opt_u32s("original_width")?, opt_u32s("original_height")?);
        for i in 0..n {
            let image_signals = brightness[i].map(|b| ImageSignals {
                blur: blur[i],
                sharpness: sharpness[i],
                highlights: highlights[i],
                lightness: lightness[i],
                brightness: b,
                contrast: contrast[i].unwrap_or(f32::NAN),
                entropy: entropy[i].unwrap_or(f32::NAN),
                chroma: chroma[i].unwrap_or(f32::NAN),
                colour_container: colour[i].unwrap_or(true),
                frames: frames[i].unwrap_or(1),
            });
            let caption_signals = chars[i].map(|c| CaptionSignals {
                chars: c,
                tokens: tokens[i].unwrap_or(0),
                boilerplate: boilerplate[i].clone(),
                script: script[i].clone(),
            });
            rows.push(Row {
                id: id[i].ok_or_else(|| bad(path, "null id"))?,
                uri: uri[i].clone().unwrap_or_default(),
                caption: caption[i].clone(),
                caption_lossy: lossy[i],
                caption_truncated: truncated[i],
                sha256: sha[i].clone(),
                width: width[i],
                height: height[i],
                phash: phash[i],
                fingerprint: fingerprint[i],
                status: if status[i].as_deref() == Some("embedded") { Status::Embedded } else { Status::Skipped },
                reason: reason[i].clone(),
                error: error[i].clone(),
                image_embedding: None,
                text_embedding: None,
                image_signals,
                caption_signals,
                origin: super::Origin {
                    key: key[i].clone(),
                    url: url[i].clone(),
                    original_width: original_width[i],
                    original_height: original_height[i],
                    extra: extra[i].clone(),
                },
            });
        }
    }
    Ok(rows)
}

/// Checks the file `rel` (e.g. `metadata/part-00000.parquet`) of the run in `dir` against the
/// checksum its run.json records, if any.
pub fn verify_part_file(manifest: &RunManifest, dir: &Path, rel: &str) -> Result<()> {
    match manifest.checksums.get(rel) {
        Some(want) => {
            let path = dir.join(rel);
            super::check_sha256(&path, &super::sha256_file(&path)?, want)
        }
        None => Ok(()),
    }
}

/// Every row of part `part` (e.g. `part-00003`) of the run in `dir`, with its embeddings
/// (`None` for the zero rows of records that have none).
pub fn read_part_rows(dir: &Path, part: &str, embed_dim: usize) -> Result<Vec<Row>> {
    read_part_rows_checked(dir, part, embed_dim, None)
}

/// [`read_part_rows`], checking each file against the checksums of `manifest` when given.
pub fn read_part_rows_checked(
    dir: &Path,
    part: &str,
    embed_dim: usize,
    manifest: Option<&RunManifest>,
) -> Result<Vec<Row>> {
    if let Some(m) = manifest {
        verify_part_file(m, dir, &layout::part_file(layout::METADATA, part))?;
    }
    let files = Layout::new(dir);
    let mut rows = read_rows(&files.metadata_part(part))?;
    for text in [false, true] {
        let path = files.emb_part(text, part);
        let sha = manifest.and_then(|m| m.checksums.get(&layout::part_file(layout::emb_dir(text), part)));
        let (n, d, values) = npy::read_f16_checked(&path, sha.map(String::as_str))?;
        if n != rows.len() || d != embed_dim {
            return Err(bad(&path, format!("holds {n}×{d}, expected {}×{embed_dim}", rows.len())));
        }
        let ids: Vec<u64> = rows.iter().map(|r| r.id).collect();
        let has = |i: usize| {
            let r = &rows[i];
            r.status == Status::Embedded && (!text || r.caption.is_some())
        };
        check_embedding_rows(&path, &values, d, &ids, has)?;
        for (row, v) in rows.iter_mut().zip(values.chunks_exact(d.max(1))) {
            let has = match (text, row.status) {
                (_, Status::Skipped) => false,
                (false, Status::Embedded) => true,
                (true, Status::Embedded) => row.caption.is_some(),
            };
            if has {
                let e = Some(v.to_vec());
                if text {
                    row.text_embedding = e;
                } else {
                    row.image_embedding = e;
                }
            }
        }
    }
    Ok(rows)
}

/// What `sieve verify` checked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifySummary {
    pub parts: usize,
    pub rows: usize,
    /// Part files checked against a checksum in run.json (0 for runs made before they were
    /// recorded).
    pub checksums: usize,
}

/// `sieve verify`: opens the run (every metadata part, checked against its checksum; row counts;
/// increasing ids) and reads both embedding matrices (checksums, shapes, every value finite,
/// every embedded row of unit norm). The first problem is the error, naming the file and row.
pub fn verify(dir: &Path) -> Result<VerifySummary> {
    let run = Run::open(dir)?;
    for text in [false, true] {
        run.embeddings(text)?;
    }
    let checksums = run
        .manifest
        .parts
        .iter()
        .flat_map(|p| layout::PART_DIRS.map(|sub| layout::part_file(sub, p)))
        .filter(|f| run.manifest.checksums.contains_key(f))
        .count();
    Ok(VerifySummary { parts: run.manifest.parts.len(), rows: run.meta.len(), checksums })
}
