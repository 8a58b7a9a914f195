//! Cluster-partitioned `sieve dedup`, for engines that spread work over machines (Ray, Slurm,
//! Spark): the SemDeDup-style clustered search of [`super::dedup`] cut into three steps that
//! other processes can run.
//!
//! 1. [`compute_centroids`] (`sieve dedup-centroids`): seeded k-means on a sample of the image
//!    embeddings (and of the caption embeddings), trained exactly as `sieve dedup --clusters K`
//!    trains them, written to a folder with the run's fingerprint.
//! 2. [`partition`] (`sieve dedup-partition --partition i/n`): assigns every vector to its
//!    nearest centroids and searches the clusters `c` with `c mod n = i`, writing the pairs found.
//! 3. `sieve dedup-combine` ([`super::dedup`] with `from_partitions`): the union of the
//!    partitions' pairs stands in for the search; everything else (exact and perceptual
//!    duplicates, joint pairs, groups, keep choice, outputs) is the one-process code.
//!
//! The partitions run [`ClusteredIndex::self_pairs_in`], whose union over the clusters is
//! `self_pairs`, so the combined result equals the one-process `sieve dedup --clusters K`
//! (same sample and seed, or the same `--centroids`) byte for byte.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt64Type};
use arrow_array::{ArrayRef, Float32Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use candle_core::{DType, Device, Tensor};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use super::{kmeans_params, load_items, space_vectors, to_items, DedupOptions, Items, Kind, Space, Thresholds};
use crate::device;
use crate::error::{Error, Result};
use crate::index::spill::{PairSorter, SortedPairs};
use crate::index::{kmeans, ClusteredIndex, Matrix, NeighbourIndex, Pair};
use crate::ingest::Shard;
use crate::store::{sha256_file, write_atomic, write_parquet_atomic, Run};

/// The file in a centroids folder that describes it (written last).
pub const CENTROIDS_JSON: &str = "centroids.json";

/// Where `sieve dedup-centroids` writes by default.
pub fn default_centroids_dir(run: &Path) -> PathBuf {
    crate::store::Layout::new(run).dedup_centroids_dir()
}

/// Where `sieve dedup-partition` writes, and `sieve dedup-combine` reads, by default.
pub fn default_partitions_dir(run: &Path) -> PathBuf {
    crate::store::Layout::new(run).dedup_partitions_dir()
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// One space's centroids in `centroids.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SpaceCentroids {
    /// `.npy` file in the folder: float32 `[clusters, embed_dim]`.
    pub file: String,
    pub clusters: usize,
    /// Vectors of the space (all embedded items for `image`, those with a caption for `caption`).
    pub vectors: usize,
    pub sha256: String,
}

/// `centroids.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CentroidsManifest {
    pub sieve_version: String,
    pub run: String,
    /// SHA-256 of the run's `run.json`.
    pub run_sha256: String,
    pub embed_dim: usize,
    /// `--clusters` asked for (a space with fewer vectors gets one cluster per vector).
    pub clusters: usize,
    pub sample: Option<usize>,
    pub seed: u64,
    /// `image`, and `caption` when the run has captions.
    pub spaces: BTreeMap<String, SpaceCentroids>,
}

/// Centroids read back and checked against a run.
pub struct Centroids {
    dir: PathBuf,
    pub manifest: CentroidsManifest,
    /// SHA-256 of `centroids.json`, recorded by each partition.
    pub sha256: String,
    spaces: BTreeMap<String, Matrix>,
}

fn bad_centroids(dir: &Path, reason: String) -> Error {
    Error::InvalidArg { what: "--centroids", reason: format!("{}: {reason}", dir.display()) }
}

impl Centroids {
    /// Reads the centroids in `dir`, refusing them unless they were computed from `run`.
    pub fn load(dir: &Path, run: &Run) -> Result<Self> {
        let path = dir.join(CENTROIDS_JSON);
        if !path.is_file() {
            return Err(bad_centroids(
                dir,
                format!(
                    "no {CENTROIDS_JSON}; compute centroids with `sieve dedup-centroids RUN --clusters K --out DIR`"
                ),
            ));
        }
        let text = fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
        let manifest: CentroidsManifest =
            serde_json::from_str(&text).map_err(|source| Error::Json { path: path.clone(), source })?;
        let want = &run.fingerprint;
        if manifest.run_sha256 != *want {
            return Err(bad_centroids(
                dir,
                format!(
                    "computed from another run ({}, run.json sha256 {}…), not {} (run.json sha256 {}…); \
                     compute them from this run with `sieve dedup-centroids {}`",
                    manifest.run,
                    short(&manifest.run_sha256),
                    run.dir.display(),
                    short(want),
                    run.dir.display()
                ),
            ));
        }
        let d = run.manifest.embed_dim;
        let mut spaces = BTreeMap::new();
        for (name, s) in &manifest.spaces {
            let file = dir.join(&s.file);
            let sha = sha256_file(&file)?;
            if sha != s.sha256 {
                return Err(bad_centroids(
                    dir,
                    format!("{} changed after {CENTROIDS_JSON} was written (sha256 differs)", s.file),
                ));
            }
            let t = Tensor::read_npy(&file)?;
            let (k, dim) = t.dims2().map_err(|_| bad_centroids(dir, format!("{} is not a 2-D array", s.file)))?;
            if dim != d || k != s.clusters || t.dtype() != DType::F32 {
                return Err(bad_centroids(
                    dir,
                    format!(
                        "{} holds {:?} [{k}, {dim}], expected float32 [{}, {d}] (the run's embeddings are {d}-d)",
                        s.file,
                        t.dtype(),
                        s.clusters
                    ),
                ));
            }
            spaces.insert(name.clone(), Matrix::new(d, t.flatten_all()?.to_vec1::<f32>()?)?);
        }
        Ok(Self { dir: dir.into(), manifest, sha256: crate::store::sha256_bytes(text.as_bytes()), spaces })
    }

    /// The centroids of one space.
    pub(crate) fn space(&self, space: Space) -> Result<Matrix> {
        self.spaces.get(space.as_str()).cloned().ok_or_else(|| {
            bad_centroids(
                &self.dir,
                format!(
                    "no {} centroids (the run had no {} vectors when they were computed)",
                    space.as_str(),
                    space.as_str()
                ),
            )
        })
    }
}

/// `sieve dedup-centroids`: trains k-means on each space of the run with `opts.clusters`,
/// `opts.sample` and `opts.seed` (exactly as `sieve dedup --clusters` does) and writes the
/// centroids to `out`: `image.npy`, `caption.npy` (float32) and `centroids.json`.
pub fn compute_centroids(opts: &DedupOptions, out: &Path) -> Result<CentroidsManifest> {
    let k = opts.clusters.ok_or_else(|| Error::InvalidArg {
        what: "--clusters",
        reason: "is required: the number of k-means clusters (partitions of the search)".into(),
    })?;
    let run = Run::open(&opts.run)?;
    let items = load_items(&run, None, true)?;
    let dev = device::open(opts.device)?;
    fs::create_dir_all(out).map_err(|e| Error::io("creating", out, e))?;
    let mut spaces = BTreeMap::new();
    for space in [Space::Image, Space::Caption] {
        let (vectors, _) = space_vectors(&items, space);
        if vectors.rows() == 0 {
            continue;
        }
        let c = kmeans::train(&vectors, kmeans_params(k, vectors.rows(), opts), &dev)?;
        let file = format!("{}.npy", space.as_str());
        let path = out.join(&file);
        let tmp = crate::store::tmp_path(&path);
        Tensor::from_slice(c.as_slice(), (c.rows(), c.dim()), &Device::Cpu)?.write_npy(&tmp)?;
        fs::rename(&tmp, &path).map_err(|e| Error::io("writing", &path, e))?;
        spaces.insert(
            space.as_str().to_string(),
            SpaceCentroids { file, clusters: c.rows(), vectors: vectors.rows(), sha256: sha256_file(&path)? },
        );
    }
    let manifest = CentroidsManifest {
        sieve_version: env!("CARGO_PKG_VERSION").to_string(),
        run: run.dir.display().to_string(),
        run_sha256: run.fingerprint.clone(),
        embed_dim: run.manifest.embed_dim,
        clusters: k,
        sample: opts.sample,
        seed: opts.seed,
        spaces,
    };
    write_json(&out.join(CENTROIDS_JSON), &manifest)?;
    Ok(manifest)
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let json = serde_json::to_vec_pretty(value).expect("serialises");
    write_atomic(path, |w| {
        w.write_all(&json)?;
        w.write_all(b"\n")
    })
}

/// The spaces `kinds` needs searched: image for `image` and `joint`, caption for `caption`.
fn spaces_for(kinds: &[Kind]) -> Vec<Space> {
    let mut s = Vec::new();
    if kinds.iter().any(|k| matches!(k, Kind::Image | Kind::Joint)) {
        s.push(Space::Image);
    }
    if kinds.contains(&Kind::Caption) {
        s.push(Space::Caption);
    }
    s
}

/// `part-IIIII-of-NNNNN.json`, next to its `.parquet` of pairs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartitionInfo {
    pub sieve_version: String,
    pub run_sha256: String,
    /// SHA-256 of the `centroids.json` used.
    pub centroids_sha256: String,
    pub partition: u32,
    pub partitions: u32,
    pub kinds: Vec<String>,
    pub image_threshold: f32,
    pub caption_threshold: f32,
    pub border: f32,
    /// The index per space searched, as the one-process summary names it.
    pub index: BTreeMap<String, String>,
    /// Pairs found per space.
    pub pairs: BTreeMap<String, usize>,
    /// The pairs file: kind (`image` or `caption`), a_id < b_id (record ids), similarity.
    pub file: String,
}

fn partition_stem(p: Shard) -> String {
    format!("part-{:05}-of-{:05}", p.index, p.count)
}

/// The schema of a partition's pairs file.
fn partition_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("kind", DataType::Utf8, false),
        Field::new("a_id", DataType::UInt64, false),
        Field::new("b_id", DataType::UInt64, false),
        Field::new("similarity", DataType::Float32, false),
    ]))
}

/// `sieve dedup-partition`: the image (and caption) pairs inside the clusters `c` with
/// `c mod part.count = part.index`, found with the centroids in `centroids_dir`, written to
/// `out/part-IIIII-of-NNNNN.{parquet,json}` (the JSON last, so its presence marks a finished
/// partition; rerunning overwrites both with the same bytes).
pub fn partition(opts: &DedupOptions, centroids_dir: &Path, part: Shard, out: &Path) -> Result<PartitionInfo> {
    if opts.against.is_some() {
        return Err(Error::InvalidArg {
            what: "--against",
            reason: "is not supported by partitioned dedup; run `sieve dedup --against` in one process".into(),
        });
    }
    let run = Run::open(&opts.run)?;
    let thresholds = super::resolve_thresholds(&run, opts)?;
    let spaces = spaces_for(&opts.kinds);
    let items = load_items(&run, None, spaces.contains(&Space::Caption))?;
    let centroids = Centroids::load(centroids_dir, &run)?;
    let dev = device::open(opts.device)?;
    let (n, i) = (part.count as usize, part.index as usize);
    let (mut kind, mut a_id, mut b_id, mut sim) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut index, mut counts) = (BTreeMap::new(), BTreeMap::new());
    for space in spaces {
        let threshold = if space == Space::Image { thresholds.image } else { thresholds.caption };
        let (vectors, rows) = space_vectors(&items, space);
        let (pairs, name) = if vectors.rows() == 0 {
            (Vec::new(), String::from("none"))
        } else {
            let c = centroids.space(space)?;
            let assigned = kmeans::assign(&vectors, &c, &dev)?;
            let idx = ClusteredIndex::from_assignment(&vectors, c, &assigned, opts.border, dev.clone());
            (to_items(idx.self_pairs_in(threshold, |cluster| cluster % n == i)?, rows.as_deref()), idx.name())
        };
        tracing::info!("partition {part}: {} {} pairs", pairs.len(), space.as_str());
        counts.insert(space.as_str().to_string(), pairs.len());
        index.insert(space.as_str().to_string(), name);
        for p in &pairs {
            kind.push(space.as_str());
            a_id.push(items.id[p.a as usize]);
            b_id.push(items.id[p.b as usize]);
            sim.push(p.sim);
        }
    }
    fs::create_dir_all(out).map_err(|e| Error::io("creating", out, e))?;
    let stem = partition_stem(part);
    let file = format!("{stem}.parquet");
    let path = out.join(&file);
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(kind)),
        Arc::new(UInt64Array::from(a_id)),
        Arc::new(UInt64Array::from(b_id)),
        Arc::new(Float32Array::from(sim)),
    ];
    let batch = RecordBatch::try_new(partition_schema(), cols)
        .map_err(|e| Error::Parquet { path: path.clone(), source: e.into() })?;
    write_parquet_atomic(&path, &batch)?;
    let info = PartitionInfo {
        sieve_version: env!("CARGO_PKG_VERSION").to_string(),
        run_sha256: run.fingerprint.clone(),
        centroids_sha256: centroids.sha256.clone(),
        partition: part.index,
        partitions: part.count,
        kinds: opts.kinds.iter().map(|k| k.as_str().to_string()).collect(),
        image_threshold: thresholds.image,
        caption_threshold: thresholds.caption,
        border: opts.border,
        index,
        pairs: counts,
        file,
    };
    write_json(&out.join(format!("{stem}.json")), &info)?;
    Ok(info)
}

/// The pairs of every partition in a folder, checked to be complete and to fit the run: what
/// `sieve dedup-combine` uses in place of the search. The pairs stay in the files: each space's
/// are read (and sorted, on disk beyond the budget) when dedup asks for them.
pub(crate) struct Fixed {
    /// Every partition's pairs file.
    files: Vec<PathBuf>,
    index: BTreeMap<String, String>,
}

fn bad_partitions(dir: &Path, reason: String) -> Error {
    Error::InvalidArg { what: "--partitions", reason: format!("{}: {reason}", dir.display()) }
}

impl Fixed {
    pub(crate) fn read(dir: &Path, run: &Run, thresholds: &Thresholds, opts: &DedupOptions) -> Result<Self> {
        let hint = "run `sieve dedup-partition RUN --centroids DIR --partition i/n` for every i in 0..n";
        if !dir.is_dir() {
            return Err(bad_partitions(dir, format!("no such folder; {hint}")));
        }
        let entries = fs::read_dir(dir).map_err(|e| Error::io("reading", dir, e))?;
        let mut infos: Vec<PartitionInfo> = Vec::new();
        for e in entries {
            let path = e.map_err(|e| Error::io("reading", dir, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with("part-") && name.ends_with(".json") {
                let text = fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
                infos.push(serde_json::from_str(&text).map_err(|source| Error::Json { path: path.clone(), source })?);
            }
        }
        if infos.is_empty() {
            return Err(bad_partitions(dir, format!("no finished partitions (part-*.json); {hint}")));
        }
        let counts: BTreeSet<u32> = infos.iter().map(|p| p.partitions).collect();
        if counts.len() > 1 {
            return Err(bad_partitions(
                dir,
                format!("holds partitions of different splits (n = {counts:?}); empty the folder and rerun them"),
            ));
        }
        let n = infos[0].partitions;
        let have: BTreeSet<u32> = infos.iter().map(|p| p.partition).collect();
        let missing: Vec<String> = (0..n).filter(|i| !have.contains(i)).map(|i| format!("{i}/{n}")).collect();
        if !missing.is_empty() {
            return Err(bad_partitions(
                dir,
                format!("missing {} of {n} partitions: {}; {hint}", missing.len(), missing.join(", ")),
            ));
        }
        infos.sort_by_key(|p| p.partition);
        let want = &run.fingerprint;
        let kinds: Vec<String> = opts.kinds.iter().map(|k| k.as_str().to_string()).collect();
        for p in &infos {
            let which = format!("partition {}/{n}", p.partition);
            if p.run_sha256 != *want {
                return Err(bad_partitions(
                    dir,
                    format!(
                        "{which} was computed from another run (run.json sha256 {}…, this run's is {}…)",
                        short(&p.run_sha256),
                        short(want)
                    ),
                ));
            }
            if p.centroids_sha256 != infos[0].centroids_sha256 {
                return Err(bad_partitions(
                    dir,
                    format!("{which} used other centroids than partition 0/{n}; rerun all with the same --centroids"),
                ));
            }
            if p.kinds != kinds || p.image_threshold != thresholds.image || p.caption_threshold != thresholds.caption {
                return Err(bad_partitions(
                    dir,
                    format!(
                        "{which} was computed with --kinds {} and thresholds image {} caption {}, but this combine \
                         asks for --kinds {} and image {} caption {}; pass the same flags to both",
                        p.kinds.join(","),
                        p.image_threshold,
                        p.caption_threshold,
                        kinds.join(","),
                        thresholds.image,
                        thresholds.caption
                    ),
                ));
            }
        }
        let mut files = Vec::new();
        for p in &infos {
            let path = dir.join(&p.file);
            let mut found = 0;
            each_pair(&path, &mut |_, _, _, _| {
                found += 1;
                Ok(())
            })?;
            if found != p.pairs.values().sum::<usize>() {
                return Err(bad_partitions(
                    dir,
                    format!("{} holds {found} pairs, its JSON says {}", p.file, p.pairs.values().sum::<usize>()),
                ));
            }
            files.push(path);
        }
        tracing::info!("combining {n} partitions from {}", dir.display());
        Ok(Self { files, index: infos[0].index.clone() })
    }

    /// The union of the partitions' pairs of `space`, in item indices, sorted by `sorter`; and
    /// the index name.
    pub(crate) fn pairs(&self, space: Space, items: &Items, mut sorter: PairSorter) -> Result<(SortedPairs, String)> {
        let Some(name) = self.index.get(space.as_str()) else {
            return Err(Error::InvalidArg {
                what: "--partitions",
                reason: format!("the partitions hold no {} search", space.as_str()),
            });
        };
        let of: HashMap<u64, u32> = items.id.iter().enumerate().map(|(i, &id)| (id, i as u32)).collect();
        let mut batch = Vec::new();
        for path in &self.files {
            each_pair(path, &mut |kind, a, b, sim| {
                if kind != space.as_str() {
                    return Ok(());
                }
                let (Some(&a), Some(&b)) = (of.get(&a), of.get(&b)) else {
                    return Err(Error::InvalidArg {
                        what: "--partitions",
                        reason: format!(
                            "a {} pair in {} names id {a} or {b}, not an embedded item of the run",
                            space.as_str(),
                            path.display()
                        ),
                    });
                };
                batch.push(Pair { a: a.min(b), b: a.max(b), sim });
                if batch.len() >= 1 << 16 {
                    sorter.push(&batch)?;
                    batch.clear();
                }
                Ok(())
            })?;
        }
        sorter.push(&batch)?;
        Ok((sorter.finish()?, name.clone()))
    }
}

/// Calls `f` with each row of a partition's pairs file: kind, a_id, b_id, similarity. A file of
/// another shape is an error naming it, never a panic.
fn each_pair(path: &Path, f: &mut dyn FnMut(&str, u64, u64, f32) -> Result<()>) -> Result<()> {
    use arrow_array::Array;
    let perr = |source| Error::Parquet { path: path.to_path_buf(), source };
    let file = fs::File::open(path).map_err(|e| Error::io("reading", path, e))?;
    crate::error::guard_parquet(path, || {
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(perr)?.build().map_err(perr)?;
        for batch in reader {
            let b = batch.map_err(|e| perr(e.into()))?;
            let bad = |name: &str| Error::Parquet {
                path: path.to_path_buf(),
                source: parquet::errors::ParquetError::General(format!(
                    "no `{name}` column of the partition pairs' type"
                )),
            };
            let col = |name: &str| b.column_by_name(name).cloned().ok_or_else(|| bad(name));
            let (kind, a, bb, s) = (col("kind")?, col("a_id")?, col("b_id")?, col("similarity")?);
            let kind = kind.as_string_opt::<i32>().ok_or_else(|| bad("kind"))?;
            let a = a.as_primitive_opt::<UInt64Type>().ok_or_else(|| bad("a_id"))?;
            let bb = bb.as_primitive_opt::<UInt64Type>().ok_or_else(|| bad("b_id"))?;
            let s = s.as_primitive_opt::<Float32Type>().ok_or_else(|| bad("similarity"))?;
            for r in 0..b.num_rows() {
                if kind.is_null(r) || a.is_null(r) || bb.is_null(r) || s.is_null(r) || !s.value(r).is_finite() {
                    return Err(Error::Parquet {
                        path: path.to_path_buf(),
                        source: parquet::errors::ParquetError::General(format!(
                            "row {r} of a batch has a missing or non-finite value"
                        )),
                    });
                }
                f(kind.value(r), a.value(r), bb.value(r), s.value(r))?;
            }
        }
        Ok(())
    })
}
