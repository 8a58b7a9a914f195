//! `sieve merge`: combines run directories made by `sieve embed --shard i/n` (or any runs of
//! disjoint inputs made with the same model and preprocessing) into one run, rows in id order,
//! re-cut into parts of equal size. The embeddings are copied exactly (float16 in and out).

use std::path::{Path, PathBuf};

use super::{read, read_manifest, Layout, RunManifest, RunWriter, Start};
use crate::error::{Error, Result};

/// Options of `sieve merge`.
#[derive(Debug, Clone)]
pub struct MergeOptions {
    pub runs: Vec<PathBuf>,
    pub out: PathBuf,
    /// Rows per part of the merged run; `None`: the first run's.
    pub part_size: Option<usize>,
    pub overwrite: bool,
}

/// What makes two runs impossible to merge: embeddings from different models or preprocessing
/// do not live in one space.
fn incompatibilities(a: &RunManifest, b: &RunManifest) -> Vec<String> {
    let mut out = Vec::new();
    if a.model.weights_sha256 != b.model.weights_sha256 || a.embed_dim != b.embed_dim {
        out.push(format!(
            "the model ({} with weights {}… vs {} with weights {}…)",
            a.model.id,
            &a.model.weights_sha256.get(..12).unwrap_or_default(),
            b.model.id,
            &b.model.weights_sha256.get(..12).unwrap_or_default()
        ));
    }
    if a.preprocessing != b.preprocessing {
        out.push("the image preprocessing (preprocessor_config.json)".into());
    }
    if a.text_max_tokens != b.text_max_tokens {
        out.push(format!("the text context ({} vs {} tokens)", a.text_max_tokens, b.text_max_tokens));
    }
    if a.storage_dtype != b.storage_dtype {
        out.push(format!("the storage dtype ({} vs {})", a.storage_dtype, b.storage_dtype));
    }
    out
}

/// The first and last id of a run (`None` when it holds no rows).
fn id_range(dir: &Path, m: &RunManifest) -> Result<Option<(u64, u64)>> {
    let (Some(first), Some(last)) = (m.parts.first(), m.parts.last()) else { return Ok(None) };
    let head = read::read_rows(&Layout::new(dir).metadata_part(first))?;
    let tail = if first == last { head.clone() } else { read::read_rows(&Layout::new(dir).metadata_part(last))? };
    Ok(head.first().zip(tail.last()).map(|(a, b)| (a.id, b.id)))
}

/// Merges `opts.runs` into `opts.out`.
pub fn merge(opts: &MergeOptions) -> Result<RunManifest> {
    merge_run(opts).map(|o| o.manifest)
}

/// Merges `opts.runs` into `opts.out`, resuming a merge into the same --out that was
/// interrupted, and doing nothing when it already finished (like `sieve embed`).
pub fn merge_run(opts: &MergeOptions) -> Result<MergeOutcome> {
    if opts.runs.is_empty() {
        return Err(Error::InvalidArg { what: "RUN", reason: "name at least one run to merge".into() });
    }
    let mut runs: Vec<(PathBuf, RunManifest)> = Vec::new();
    for dir in &opts.runs {
        if !Layout::new(dir).run_json().is_file() {
            return Err(Error::RunDir {
                path: dir.clone(),
                reason: "is not a sieve run directory (no run.json)".into(),
            });
        }
        let m = read_manifest(dir)?;
        if !m.complete {
            return Err(Error::RunDir {
                path: dir.clone(),
                reason: "is unfinished (its sieve embed was interrupted); rerun that command to finish it first".into(),
            });
        }
        if let Some((first, _)) = runs.first() {
            let bad = incompatibilities(&runs[0].1, &m);
            if !bad.is_empty() {
                return Err(Error::RunDir {
                    path: dir.clone(),
                    reason: format!(
                        "cannot be merged with {}: they differ in {}. Embeddings from different models or \
                         preprocessing are not comparable; re-embed with the same --model",
                        first.display(),
                        bad.join(" and ")
                    ),
                });
            }
            let m0: &RunManifest = &runs[0].1;
            if (&m0.input.paths, &m0.input.format) != (&m.input.paths, &m.input.format) {
                return Err(Error::RunDir {
                    path: dir.clone(),
                    reason: format!(
                        "was made from another input than {} ({} {} vs {} {}); sieve merge combines the \
                         --shard runs of one input (list several inputs in one sieve embed instead)",
                        first.display(),
                        m.input.format,
                        m.input.paths.join(" "),
                        m0.input.format,
                        m0.input.paths.join(" ")
                    ),
                });
            }
            if m0.compute_dtype != m.compute_dtype {
                tracing::warn!(
                    "{} was computed in {} and {} in {}; merging anyway (same weights)",
                    first.display(),
                    m0.compute_dtype,
                    dir.display(),
                    m.compute_dtype
                );
            }
            if m0.limits != m.limits {
                tracing::warn!("{} and {} used different --max-bytes/--max-pixels", first.display(), dir.display());
            }
        }
        runs.push((dir.clone(), m));
    }

    // Order by first id; ids must not interleave (that would mean overlapping inputs).
    let mut ranged = Vec::new();
    for (dir, m) in &runs {
        if let Some(r) = id_range(dir, m)? {
            ranged.push((r, dir, m));
        }
    }
    ranged.sort_by_key(|(r, _, _)| *r);
    for w in ranged.windows(2) {
        let ((_, last_a), dir_a, _) = &w[0];
        let ((first_b, _), dir_b, _) = &w[1];
        if first_b <= last_a {
            return Err(Error::RunDir {
                path: dir_b.to_path_buf(),
                reason: format!(
                    "overlaps {} (ids up to {last_a} there, from {first_b} here): the same records embedded twice? \
                     Merge the shards of one input, each once",
                    dir_a.display()
                ),
            });
        }
    }
    check_shards(&runs);

    let first = &runs[0].1;
    let part_size = opts.part_size.unwrap_or(first.part_size);
    // The merged run's listing first (metadata only), so that its run.json can be written before
    // any part: a merge killed midway is then resumed like `sieve embed`, and a finished one is
    // recognised.
    let mut listing: Vec<(u64, String)> = Vec::new();
    for (_, dir, m) in &ranged {
        for part in &m.parts {
            let rows = read::read_rows(&Layout::new(dir).metadata_part(part))?;
            listing.extend(rows.into_iter().map(|r| (r.id, r.uri)));
        }
    }
    let mut manifest = first.clone();
    manifest.input.shard = None;
    manifest.input.records = listing.len() as u64;
    manifest.input.listing_sha256 = listing_sha256(listing.iter().map(|(id, uri)| (*id, uri.as_str())));
    manifest.part_size = part_size;
    manifest.merged_from = opts.runs.iter().map(|p| p.display().to_string()).collect();
    manifest.counts = Default::default();
    manifest.parts = Vec::new();
    manifest.checksums = Default::default();
    manifest.complete = false;
    let ids: Vec<u64> = listing.iter().map(|(id, _)| *id).collect();
    drop(listing);
    let (mut writer, done) = match RunWriter::start(&opts.out, &manifest, &ids, opts.overwrite)? {
        Start::Complete(m) => return Ok(MergeOutcome { manifest: *m, resumed_rows: 0, already_complete: true }),
        Start::Fresh(w) => (w, 0),
        Start::Resume(w, done) => (w, done),
    };
    let mut skip = done;
    for (_, dir, m) in &ranged {
        for part in &m.parts {
            let rows = read::read_part_rows_checked(dir, part, m.embed_dim, Some(m))?;
            if skip >= rows.len() {
                skip -= rows.len();
                continue;
            }
            writer.push(rows.into_iter().skip(skip))?;
            skip = 0;
        }
    }
    let manifest = writer.finish(manifest)?;
    Ok(MergeOutcome { manifest, resumed_rows: done, already_complete: false })
}

/// What `sieve merge` did.
#[derive(Debug, Clone)]
pub struct MergeOutcome {
    pub manifest: RunManifest,
    /// Rows an interrupted merge into the same --out had already written.
    pub resumed_rows: usize,
    /// The same merge had already finished: nothing was done.
    pub already_complete: bool,
}

pub use crate::digest::listing_sha256;

/// Warns when the runs are shards of one input but not all of them, or one twice.
fn check_shards(runs: &[(PathBuf, RunManifest)]) {
    let shards: Vec<_> = runs.iter().filter_map(|(_, m)| m.input.shard).collect();
    if shards.len() != runs.len() {
        return;
    }
    let n = shards[0].count;
    if shards.iter().any(|s| s.count != n) {
        tracing::warn!("merging shards of different --shard counts");
        return;
    }
    let missing: Vec<String> =
        (0..n).filter(|i| !shards.iter().any(|s| s.index == *i)).map(|i| format!("{i}/{n}")).collect();
    if !missing.is_empty() {
        tracing::warn!("merging {} of {n} shards; missing {}", shards.len(), missing.join(", "));
    }
}
