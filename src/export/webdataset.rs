//! `sieve export --format webdataset`: the curated records as new WebDataset tar shards, as
//! DataComp's resharder and img2dataset write them, so a trainer reads the result of curation.
//!
//! - **Shards.** `OUT/00000.tar`, `00001.tar`…, at most `shard_size` samples each, in run order.
//!   Each sample is `KEY.EXT` (the original image bytes, never re-encoded; EXT from the source's
//!   name, else sniffed from the bytes), `KEY.txt` (the run's caption, when there is one) and
//!   `KEY.json`: the source sample's own `.json` fields (a tar's `KEY.json` member, a folder's
//!   sidecar `NAME.json`) with sieve's under a `sieve` object (id, uri, sha256, width, height,
//!   and what the later stages said: [`super::annotate`]).
//! - **Keys.** A tar member keeps its key (its path up to the first dot of its file name); any
//!   other record gets its 9-digit position in the export, as img2dataset numbers downloads. A key
//!   already taken (two shards both holding `000000001`, a sample with two images) gets `_ID`
//!   appended. Keys are settled for the whole export before writing, so a shard's content
//!   depends only on the run, the subset and the shard size.
//! - **Checked bytes.** Each image is read from its uri when its shard is written, a few samples
//!   at a time, and its SHA-256 compared with the one the run recorded: a record that can no
//!   longer be read, or whose file changed since embedding, is skipped, counted and listed with
//!   its reason (`NNNNN_stats.json`, `_sieve_export.json`) and warned about, never written.
//! - **Resume and determinism.** A shard is written to a temporary name and renamed; its
//!   `NNNNN_stats.json` follows. `_sieve_export.json` records the parameters (run fingerprint,
//!   subset, shard size, a digest of every sample's id and key) before the first shard; rerunning
//!   the same command keeps every shard that has its stats file and writes the rest. Another
//!   export's folder is refused unless `--overwrite`. Tar headers carry a fixed mtime, mode 0644,
//!   uid/gid 0 and no user names, so the same run gives byte-identical shards.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::annotate::Annotations;
use super::{check_out, clear_out, not_empty, subset_rows, ExportOptions, Subset};
use crate::error::{Error, Result};
use crate::ingest::dir::IMAGE_EXTENSIONS;
use crate::ingest::locate::{split_key, Locator};
use crate::store::{sha256_bytes, sha256_file, write_atomic, Run};

/// The export's parameters and outcome, in `OUT/_sieve_export.json`.
pub const SUMMARY: &str = "_sieve_export.json";

/// Samples read ahead of the writer, in parallel: memory stays at a few samples.
const READ_AHEAD: usize = 16;

/// Skipped records warned about one by one; the summary lists all.
const SHOWN_SKIPS: usize = 5;

/// The tar headers' fixed mtime (the `tar` crate's deterministic one, 2006-07-24; GNU tar warns
/// about 0).
const MTIME: u64 = 1_153_704_088;

/// What decides which sample goes into which shard; an export resumes only onto the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    pub format: String,
    pub run_fingerprint: String,
    pub subset: Subset,
    pub shard_size: usize,
    /// Samples chosen for the export.
    pub samples: usize,
    /// SHA-256 over every planned sample's id and key, in order.
    pub plan_sha256: String,
    /// The stage outputs whose fields the `sieve` objects carry, with each file's SHA-256: a
    /// stage rerun between a kill and the resume would give the shards two versions of them.
    pub annotations: BTreeMap<String, String>,
}

/// One shard's outcome, also its `NNNNN_stats.json` (img2dataset's `count` and `successes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardStats {
    pub shard: String,
    /// Samples planned for it.
    pub count: usize,
    /// Samples written.
    pub successes: usize,
    /// Samples skipped: unreadable, or changed since the run was made.
    pub failed_to_read: usize,
    pub skipped: Vec<SkippedRecord>,
}

/// A record that was not written, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedRecord {
    pub id: u64,
    pub uri: String,
    pub key: String,
    pub reason: String,
}

/// `OUT/_sieve_export.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub sieve_version: String,
    pub run: String,
    #[serde(flatten)]
    pub params: Params,
    /// False until every shard is written.
    pub complete: bool,
    /// Samples written, over all shards.
    pub written: usize,
    /// Samples skipped (listed in `skipped_records`).
    pub skipped: usize,
    /// The run's records not exported: not embedded, or not in the subset.
    pub left_out: usize,
    pub shards: Vec<ShardStats>,
    pub skipped_records: Vec<SkippedRecord>,
}

/// What [`export`] did: the summary, and how many complete shards an earlier, interrupted run
/// had left (kept as they were).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub out: String,
    #[serde(flatten)]
    pub summary: Summary,
    pub resumed_shards: usize,
}

/// One planned sample.
struct Item {
    row: usize,
    key: String,
    /// The image member's extension, when the uri names one sieve reads.
    ext: Option<String>,
}

/// Writes the records of `run` in `opts.subset` into `out` as tar shards (see the module doc).
pub fn export(run: &Run, out: &Path, opts: &ExportOptions) -> Result<Outcome> {
    if opts.shard_size == 0 {
        return Err(Error::InvalidArg { what: "--shard-size", reason: "must be at least 1".into() });
    }
    let chosen = subset_rows(run, opts.subset)?;
    let origins = Origins::load(run)?;
    let plan = plan(run, &chosen, &origins);
    let wanted: HashSet<u64> = plan.iter().map(|it| run.meta.id[it.row]).collect();
    let annotations = Annotations::load(run, &wanted)?;
    let mut sources = BTreeMap::new();
    for (name, path) in &annotations.sources {
        sources.insert(name.to_string(), sha256_file(path)?);
    }
    let params = Params {
        format: "webdataset".into(),
        run_fingerprint: run.fingerprint.clone(),
        subset: opts.subset,
        shard_size: opts.shard_size,
        samples: plan.len(),
        plan_sha256: sha256_bytes(
            plan.iter().map(|it| format!("{}\t{}\n", run.meta.id[it.row], it.key)).collect::<String>().as_bytes(),
        ),
        annotations: sources,
    };
    let summary_path = out.join(SUMMARY);
    let entries = check_out(run, out)?;
    let mut resuming = false;
    if !entries.is_empty() {
        if opts.overwrite {
            clear_out(out, entries)?;
        } else {
            let earlier = fs::read(&summary_path).ok().and_then(|b| serde_json::from_slice::<Summary>(&b).ok());
            match earlier {
                None => return Err(not_empty(out)),
                Some(e) if e.params != params => {
                    return Err(Error::InvalidArg {
                        what: "export option out",
                        reason: format!(
                            "{} holds an export made with other parameters ({}); pass --overwrite to replace it",
                            out.display(),
                            differences(&e.params, &params)
                        ),
                    })
                }
                Some(_) => resuming = true,
            }
            // Leftovers of writes a kill interrupted.
            for p in entries.iter().filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(".tmp"))) {
                fs::remove_file(p).map_err(|e| Error::io("removing", p, e))?;
            }
        }
    }
    fs::create_dir_all(out).map_err(|e| Error::io("creating", out, e))?;
    let mut summary = Summary {
        sieve_version: env!("CARGO_PKG_VERSION").into(),
        run: run.dir.display().to_string(),
        params,
        complete: false,
        written: 0,
        skipped: 0,
        left_out: run.meta.len() - plan.len(),
        shards: Vec::new(),
        skipped_records: Vec::new(),
    };
    if !resuming {
        write_json(&summary_path, &summary)?;
    }
    let writer = Writer { run, locator: Locator::new(run.manifest.limits.max_bytes), annotations, origins };
    let mut resumed_shards = 0;
    let shards = plan.len().div_ceil(opts.shard_size);
    let bar = crate::progress::Progress::new(plan.len() as u64, "export", "samples");
    for (k, items) in plan.chunks(opts.shard_size).enumerate() {
        let tar = out.join(format!("{k:05}.tar"));
        let stats_path = out.join(format!("{k:05}_stats.json"));
        let done = (resuming && tar.is_file())
            .then(|| fs::read(&stats_path).ok().and_then(|b| serde_json::from_slice::<ShardStats>(&b).ok()))
            .flatten()
            .filter(|s| s.count == items.len());
        let stats = match done {
            Some(s) => {
                resumed_shards += 1;
                s
            }
            None => {
                let s = writer.write_shard(&tar, items)?;
                write_json(&stats_path, &s)?;
                s
            }
        };
        summary.written += stats.successes;
        summary.skipped += stats.failed_to_read;
        summary.skipped_records.extend(stats.skipped.iter().cloned());
        summary.shards.push(stats);
        bar.inc(items.len() as u64);
        tracing::debug!("shard {}/{shards} done", k + 1);
    }
    drop(bar);
    for s in summary.skipped_records.iter().take(SHOWN_SKIPS) {
        tracing::warn!("{} not exported: {}", s.uri, s.reason);
    }
    if summary.skipped > SHOWN_SKIPS {
        tracing::warn!(
            "{} more records not exported; {} lists each",
            summary.skipped - SHOWN_SKIPS,
            summary_path.display()
        );
    }
    summary.complete = true;
    write_json(&summary_path, &summary)?;
    Ok(Outcome { out: out.display().to_string(), summary, resumed_shards })
}

/// The samples of the export in run order, each with its unique key.
fn plan(run: &Run, chosen: &[bool], origins: &Origins) -> Vec<Item> {
    let mut taken: HashSet<String> = HashSet::new();
    let mut plan = Vec::new();
    for row in (0..run.meta.len()).filter(|&r| chosen[r]) {
        let uri = &run.meta.uri[row];
        let (mut key, ext) = match uri.split_once(".tar/") {
            Some((_, member)) => {
                let (key, ext) = split_key(member);
                (key.to_string(), Some(ext.to_ascii_lowercase()).filter(|e| !e.is_empty()))
            }
            None => {
                let ext = Path::new(uri).extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
                // The source's own key (img2dataset's), where it recorded one usable as a name.
                let key = origins.key(row).filter(|k| !k.is_empty() && !k.contains(['/', '.']) && !k.starts_with('_'));
                (
                    key.map_or_else(|| format!("{:09}", plan.len()), str::to_string),
                    ext.filter(|e| IMAGE_EXTENSIONS.contains(&e.as_str())),
                )
            }
        };
        while taken.contains(&key) {
            key = format!("{key}_{}", run.meta.id[row]);
        }
        taken.insert(key.clone());
        plan.push(Item { row, key, ext });
    }
    plan
}

/// What differs between two exports' parameters, for the refusal.
fn differences(was: &Params, now: &Params) -> String {
    let mut d = Vec::new();
    if was.format != now.format {
        d.push(format!("format {} vs {}", was.format, now.format));
    }
    if was.run_fingerprint != now.run_fingerprint {
        d.push("another run".to_string());
    }
    if was.subset != now.subset {
        d.push(format!("--subset {:?} vs {:?}", was.subset, now.subset).to_lowercase());
    }
    if was.shard_size != now.shard_size {
        d.push(format!("--shard-size {} vs {}", was.shard_size, now.shard_size));
    }
    if was.annotations != now.annotations {
        d.push("the stage outputs joined into the JSON changed (a stage ran again)".to_string());
    }
    if d.is_empty() && was.samples != now.samples {
        d.push(format!("{} samples chosen then, {} now", was.samples, now.samples));
    }
    if d.is_empty() {
        d.push("other samples chosen (dedup or select ran again)".to_string());
    }
    d.join(", ")
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("summaries serialise");
    bytes.push(b'\n');
    write_atomic(path, |w| w.write_all(&bytes))
}

/// One sample's members, read and checked.
struct Sample {
    image: Vec<u8>,
    ext: String,
    json: Vec<u8>,
}

struct Writer<'a> {
    run: &'a Run,
    locator: Locator,
    annotations: Annotations,
    origins: Origins,
}

/// The samples' own fields the run recorded (metadata's `key`, `url`, `original_width`,
/// `original_height`, `extra`): the JSON of a sample whose source has no `.json` beside it (a
/// Parquet or CSV manifest's row). Empty for runs made before sieve recorded them.
struct Origins {
    columns: Vec<(&'static str, Vec<Option<String>>)>,
}

impl Origins {
    const NAMES: [&'static str; 5] = ["key", "url", "original_width", "original_height", "extra"];

    fn load(run: &Run) -> Result<Self> {
        let mut columns = Vec::new();
        for name in Self::NAMES {
            match run.column_strings(name) {
                Ok(v) if v.iter().any(Option::is_some) => columns.push((name, v)),
                Ok(_) => {}
                // A run made before the columns existed.
                Err(Error::InvalidArg { what: "metadata column", .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Self { columns })
    }

    fn key(&self, row: usize) -> Option<&str> {
        self.columns.iter().find(|(n, _)| *n == "key").and_then(|(_, v)| v[row].as_deref())
    }

    /// The recorded fields of `row` as a `.json` object (`extra`'s fields beside the others).
    fn json(&self, row: usize) -> Map<String, Value> {
        let mut obj = Map::new();
        for (name, values) in &self.columns {
            let Some(v) = values[row].as_deref() else { continue };
            match *name {
                "extra" => {
                    if let Ok(Value::Object(extra)) = serde_json::from_str::<Value>(v) {
                        obj.extend(extra);
                    }
                }
                "original_width" | "original_height" => {
                    obj.insert(name.to_string(), v.parse::<u64>().map_or_else(|_| json!(v), |n| json!(n)));
                }
                _ => {
                    obj.insert(name.to_string(), json!(v));
                }
            }
        }
        obj
    }
}

impl Writer<'_> {
    /// Writes `items` as the tar at `path` (atomically) and returns its stats.
    fn write_shard(&self, path: &Path, items: &[Item]) -> Result<ShardStats> {
        let meta = &self.run.meta;
        let mut skipped = Vec::new();
        let mut successes = 0;
        write_atomic(path, |w| {
            let mut b = tar::Builder::new(w);
            for chunk in items.chunks(READ_AHEAD) {
                let read: Vec<std::result::Result<Sample, String>> = chunk.par_iter().map(|it| self.read(it)).collect();
                for (it, sample) in chunk.iter().zip(read) {
                    let s = match sample {
                        Ok(s) => s,
                        Err(reason) => {
                            let (id, uri) = (meta.id[it.row], meta.uri[it.row].clone());
                            skipped.push(SkippedRecord { id, uri, key: it.key.clone(), reason });
                            continue;
                        }
                    };
                    append(&mut b, &format!("{}.{}", it.key, s.ext), &s.image)?;
                    if let Some(c) = &meta.caption[it.row] {
                        append(&mut b, &format!("{}.txt", it.key), c.as_bytes())?;
                    }
                    append(&mut b, &format!("{}.json", it.key), &s.json)?;
                    successes += 1;
                }
            }
            b.into_inner().map(|_| ())
        })?;
        let shard = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(ShardStats { shard, count: items.len(), successes, failed_to_read: skipped.len(), skipped })
    }

    /// The sample of `it`: its image bytes (checked against the run's SHA-256) and its JSON.
    fn read(&self, it: &Item) -> std::result::Result<Sample, String> {
        let meta = &self.run.meta;
        let (id, uri) = (meta.id[it.row], meta.uri[it.row].as_str());
        let image = self.locator.read(uri)?;
        let sha256 = sha256_bytes(&image);
        if let Some(recorded) = &meta.sha256[it.row] {
            if !recorded.eq_ignore_ascii_case(&sha256) {
                return Err(format!(
                    "changed since the run was made (SHA-256 {}…, the run recorded {}…)",
                    &sha256[..12],
                    recorded.chars().take(12).collect::<String>()
                ));
            }
        }
        let ext = it.ext.clone().unwrap_or_else(|| {
            image::guess_format(&image)
                .ok()
                .and_then(|f| f.extensions_str().first().map(|e| e.to_string()))
                .unwrap_or_else(|| "bin".into())
        });
        let mut sieve = Map::new();
        sieve.insert("id".into(), json!(id));
        sieve.insert("uri".into(), json!(uri));
        sieve.insert("sha256".into(), json!(sha256));
        sieve.insert("width".into(), json!(meta.width[it.row]));
        sieve.insert("height".into(), json!(meta.height[it.row]));
        self.annotations.add(id, uri, &mut sieve);
        // The source's own fields first; sieve's own object replaces a `sieve` field there.
        let mut obj = match self.locator.sidecar(uri, "json") {
            Ok(Some(bytes)) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(m)) => m,
                Ok(other) => Map::from_iter([("original".to_string(), other)]),
                Err(e) => {
                    sieve.insert("original_json_error".into(), json!(format!("not JSON: {e}")));
                    Map::new()
                }
            },
            Ok(None) => self.origins.json(it.row),
            Err(e) => {
                sieve.insert("original_json_error".into(), json!(e));
                Map::new()
            }
        };
        obj.insert("sieve".into(), Value::Object(sieve));
        let json = serde_json::to_vec(&Value::Object(obj)).expect("JSON values serialise");
        Ok(Sample { image, ext, json })
    }
}

/// Appends a regular member with fixed metadata, so the same content gives the same bytes.
fn append<W: Write>(b: &mut tar::Builder<W>, name: &str, data: &[u8]) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    b.append_data(&mut h, name, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_have_fixed_headers() {
        let mut b = tar::Builder::new(Vec::new());
        append(&mut b, "000000000.jpg", b"abc").unwrap();
        let bytes = b.into_inner().unwrap();
        let mut a = tar::Archive::new(&bytes[..]);
        let e = a.entries().unwrap().next().unwrap().unwrap();
        let h = e.header();
        assert_eq!((h.mtime().unwrap(), h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap()), (MTIME, 0o644, 0, 0));
        assert_eq!(h.username().unwrap(), Some(""));
    }
}
