//! `sieve compare TRAIN EVAL --overlap`: the items of EVAL that duplicate items of TRAIN, by
//! kind (exact sha256, perceptual, image or caption embedding, joint). The matching is
//! `sieve dedup EVAL --against TRAIN`'s (one matcher, its thresholds and index): this reads what
//! it wrote, `EVAL/dedup/groups.parquet`, and lists each EVAL item in a group with a TRAIN item.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt64Type};
use arrow_array::Array;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::layout::{self, Layout};
use crate::store::Run;

/// A TRAIN item an EVAL item duplicates.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Match {
    pub id: u64,
    pub uri: String,
}

/// An EVAL item duplicating TRAIN in one kind.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Overlapping {
    pub kind: String,
    pub id: u64,
    pub uri: String,
    /// Its similarity to its group's kept item (dedup's `similarity`).
    pub similarity: f32,
    /// The TRAIN items of its group.
    pub train: Vec<Match>,
}

/// The overlap of EVAL with TRAIN.
#[derive(Debug, Clone, Serialize)]
pub struct Overlap {
    pub train: String,
    pub eval: String,
    /// EVAL's embedded items.
    pub eval_items: usize,
    /// EVAL items duplicating TRAIN in any kind, and their share of `eval_items`.
    pub overlapping: usize,
    pub share: f64,
    /// Per kind, the EVAL items duplicating TRAIN in it.
    pub by_kind: BTreeMap<String, usize>,
    /// Every (kind, EVAL item), by kind then id.
    pub items: Vec<Overlapping>,
}

/// A member of a duplicate group: an item of TRAIN (`source` `against`) or of EVAL.
struct Member {
    train: bool,
    id: u64,
    uri: String,
    similarity: f32,
}

/// Reads `sieve dedup EVAL --against TRAIN`'s groups; refuses when that has not been run (or was
/// run against another corpus, or on another run).
pub fn overlap(train: &Run, eval: &Run) -> Result<Overlap> {
    let layout = Layout::new(&eval.dir);
    let redo = format!("run `sieve dedup {} --against {}` first", eval.dir.display(), train.dir.display());
    let refuse = |why: String| Error::InvalidArg { what: "--overlap", reason: format!("{why}; {redo}") };
    let summary: serde_json::Value = std::fs::read(layout.dedup_summary())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| refuse(format!("{} has no readable {}", eval.dir.display(), layout::DEDUP_SUMMARY)))?;
    let against = summary.get("against").and_then(|a| a.as_str());
    let same = |p: &str| Path::new(p).canonicalize().ok() == train.dir.canonicalize().ok();
    if !against.is_some_and(same) {
        return Err(refuse(format!(
            "{} was deduplicated against {}, not {}",
            eval.dir.display(),
            against.unwrap_or("no other run"),
            train.dir.display()
        )));
    }
    eval.check_provenance(layout::DEDUP_SUMMARY, "dedup")?;
    let path = layout.dedup_groups();
    let file = File::open(&path).map_err(|e| Error::io("reading", &path, e))?;
    let parquet_err = |source| Error::Parquet { path: path.clone(), source };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?.build().map_err(parquet_err)?;
    // (kind, group) → its members.
    let mut groups: BTreeMap<(String, u64), Vec<Member>> = BTreeMap::new();
    let missing = |c: &str| Error::RunDir { path: path.clone(), reason: format!("has no usable `{c}` column") };
    for batch in reader {
        let b = batch.map_err(|e| parquet_err(e.into()))?;
        let text =
            |c: &'static str| b.column_by_name(c).and_then(|a| a.as_string_opt::<i32>()).ok_or_else(|| missing(c));
        let (uri, source, kind) = (text("uri")?, text("source")?, text("kind")?);
        let int = |c: &'static str| {
            b.column_by_name(c).and_then(|a| a.as_primitive_opt::<UInt64Type>()).ok_or_else(|| missing(c))
        };
        let (id, group) = (int("id")?, int("group_id")?);
        let sim = b
            .column_by_name("similarity")
            .and_then(|a| a.as_primitive_opt::<Float32Type>())
            .ok_or_else(|| missing("similarity"))?;
        for i in 0..b.num_rows() {
            let s = if sim.is_null(i) { f32::NAN } else { sim.value(i) };
            groups.entry((kind.value(i).to_string(), group.value(i))).or_default().push(Member {
                train: source.value(i) == "against",
                id: id.value(i),
                uri: uri.value(i).to_string(),
                similarity: s,
            });
        }
    }
    let mut items = Vec::new();
    for ((kind, _), members) in groups {
        let train_members: Vec<Match> =
            members.iter().filter(|m| m.train).map(|m| Match { id: m.id, uri: m.uri.clone() }).collect();
        if train_members.is_empty() {
            continue;
        }
        for m in members.iter().filter(|m| !m.train) {
            items.push(Overlapping {
                kind: kind.clone(),
                id: m.id,
                uri: m.uri.clone(),
                similarity: m.similarity,
                train: train_members.clone(),
            });
        }
    }
    items.sort_by(|a, b| a.kind.cmp(&b.kind).then(a.id.cmp(&b.id)));
    items.dedup_by(|a, b| a.kind == b.kind && a.id == b.id);
    let mut by_kind = BTreeMap::new();
    for it in &items {
        *by_kind.entry(it.kind.clone()).or_insert(0) += 1;
    }
    let distinct: std::collections::BTreeSet<u64> = items.iter().map(|i| i.id).collect();
    let eval_items = eval.meta.embedded.iter().filter(|&&e| e).count();
    Ok(Overlap {
        train: train.dir.display().to_string(),
        eval: eval.dir.display().to_string(),
        eval_items,
        overlapping: distinct.len(),
        share: if eval_items == 0 { 0.0 } else { distinct.len() as f64 / eval_items as f64 },
        by_kind,
        items,
    })
}

/// Writes `dir/overlap.json` (creating `dir`), atomically.
pub fn write(dir: &Path, o: &Overlap) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let json = serde_json::to_vec_pretty(o).expect("the overlap serialises");
    crate::store::write_atomic(&dir.join("overlap.json"), |w| std::io::Write::write_all(w, &json))
}
