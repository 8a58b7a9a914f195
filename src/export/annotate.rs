//! What the later stages say about each record, gathered by id for the `sieve` object of a
//! webdataset export's `KEY.json`: `sieve quality`'s flags, `sieve score`'s caption fit,
//! `sieve dedup`'s groups, decision and replacement caption, and whether `sieve select` chose it.
//! Only the stages that ran, and only outputs computed from this run (a stale one is left out
//! with a warning, as the report does).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::store::layout::{self, Layout};
use crate::store::{Provenance, Run};

/// The stage outputs' fields per record id.
#[derive(Default)]
pub struct Annotations {
    by_id: HashMap<u64, Map<String, Value>>,
    /// Fields every record gets when their stage ran (`dedup_kept`, `selected`).
    lists: Vec<(&'static str, HashSet<String>)>,
    /// The stage outputs read (name in the run, path), for the summary and the resume check.
    pub sources: Vec<(&'static str, PathBuf)>,
}

impl Annotations {
    /// Reads what exists in `run` about the records whose ids are in `wanted`.
    pub fn load(run: &Run, wanted: &HashSet<u64>) -> Result<Self> {
        let l = Layout::new(&run.dir);
        let mut a = Self::default();
        if a.usable(run, &l.quality(), layout::QUALITY_SUMMARY, "quality") {
            a.sources.push((layout::QUALITY, l.quality()));
            for_each_row(&l.quality(), &["flags"], |id, v| {
                if wanted.contains(&id) {
                    let flags: Vec<Value> =
                        v[0].as_str().unwrap_or("").split(',').filter(|f| !f.is_empty()).map(|f| json!(f)).collect();
                    a.entry(id).insert("quality_flags".into(), Value::Array(flags));
                }
            })?;
        }
        if a.usable(run, &l.pairs(), layout::PAIRS_SUMMARY, "score") {
            a.sources.push((layout::PAIRS, l.pairs()));
            for_each_row(&l.pairs(), &["cosine", "clip_score", "flag"], |id, v| {
                if wanted.contains(&id) {
                    let fit = json!({"cosine": v[0], "clip_score": v[1], "flag": v[2]});
                    a.entry(id).insert("caption_fit".into(), fit);
                }
            })?;
        }
        if a.usable(run, &l.dedup_groups(), layout::DEDUP_SUMMARY, "dedup") {
            a.sources.push((layout::DEDUP_GROUPS, l.dedup_groups()));
            let cols = ["source", "kind", "group_id", "kept", "kept_id", "similarity"];
            for_each_row(&l.dedup_groups(), &cols, |id, v| {
                if wanted.contains(&id) && v[0].as_str() == Some("run") {
                    let group =
                        json!({"kind": v[1], "group_id": v[2], "kept": v[3], "kept_id": v[4], "similarity": v[5]});
                    let e = a.entry(id).entry("duplicates").or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(groups) = e {
                        groups.push(group);
                    }
                }
            })?;
        }
        if a.usable(run, &l.dedup_captions(), layout::DEDUP_SUMMARY, "dedup") {
            a.sources.push((layout::DEDUP_CAPTIONS, l.dedup_captions()));
            for_each_row(&l.dedup_captions(), &["caption", "caption_from_id", "score"], |id, v| {
                if wanted.contains(&id) {
                    let c = json!({"caption": v[0], "from_id": v[1], "score": v[2]});
                    a.entry(id).insert("dedup_caption".into(), c);
                }
            })?;
        }
        for (field, name, file, summary, command) in [
            ("dedup_kept", layout::DEDUP_KEEP, l.dedup_keep(), layout::DEDUP_SUMMARY, "dedup"),
            ("selected", layout::SELECTION_KEEP, l.selection_keep(), layout::SELECTION_SUMMARY, "select"),
        ] {
            if a.usable(run, &file, summary, command) {
                a.sources.push((name, file.clone()));
                let text = std::fs::read_to_string(&file).map_err(|e| Error::io("reading", &file, e))?;
                a.lists.push((field, text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect()));
            }
        }
        Ok(a)
    }

    /// The fields for record `id` (uri `uri`), added to `into`.
    pub fn add(&self, id: u64, uri: &str, into: &mut Map<String, Value>) {
        if let Some(m) = self.by_id.get(&id) {
            into.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        for (field, uris) in &self.lists {
            into.insert((*field).into(), Value::Bool(uris.contains(uri)));
        }
    }

    fn entry(&mut self, id: u64) -> &mut Map<String, Value> {
        self.by_id.entry(id).or_default()
    }

    /// Whether `file` exists and was computed from `run` (warns when it was not).
    fn usable(&self, run: &Run, file: &Path, summary: &str, command: &str) -> bool {
        if !file.is_file() {
            return false;
        }
        match run.provenance(summary, command) {
            Provenance::Foreign(why) => {
                tracing::warn!("{why}; its fields are left out of the exported JSON");
                false
            }
            _ => true,
        }
    }
}

/// Calls `f(id, values)` for each row of the Parquet file at `path`, `values` holding the
/// columns `cols` as JSON (null where a column is null or absent).
fn for_each_row(path: &Path, cols: &[&str], mut f: impl FnMut(u64, Vec<Value>)) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let parquet_err = |source| Error::Parquet { path: path.to_path_buf(), source };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?.build().map_err(parquet_err)?;
    for batch in reader {
        let batch = batch.map_err(|e| parquet_err(e.into()))?;
        let ids = batch
            .column_by_name("id")
            .and_then(|c| c.as_primitive_opt::<UInt64Type>())
            .ok_or_else(|| Error::RunDir { path: path.to_path_buf(), reason: "has no `id` (uint64) column".into() })?;
        let columns: Vec<Option<&ArrayRef>> = cols.iter().map(|c| batch.column_by_name(c)).collect();
        for i in 0..batch.num_rows() {
            f(ids.value(i), columns.iter().map(|c| c.map_or(Value::Null, |c| cell(c, i))).collect());
        }
    }
    Ok(())
}

/// Row `i` of `a` as JSON: text, integers, booleans and floats (written as the shortest decimal
/// that reads back as the stored float32, so `0.1` and not `0.10000000149011612`); else null.
fn cell(a: &ArrayRef, i: usize) -> Value {
    if a.is_null(i) {
        return Value::Null;
    }
    match a.data_type() {
        DataType::Utf8 => json!(a.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => json!(a.as_string::<i64>().value(i)),
        DataType::Boolean => json!(a.as_boolean().value(i)),
        DataType::UInt64 => json!(a.as_primitive::<UInt64Type>().value(i)),
        DataType::UInt32 => json!(a.as_primitive::<UInt32Type>().value(i)),
        DataType::Int64 => json!(a.as_primitive::<Int64Type>().value(i)),
        DataType::Int32 => json!(a.as_primitive::<Int32Type>().value(i)),
        DataType::Float32 => {
            let v = a.as_primitive::<Float32Type>().value(i);
            v.to_string().parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number)
        }
        DataType::Float64 => {
            serde_json::Number::from_f64(a.as_primitive::<Float64Type>().value(i)).map_or(Value::Null, Value::Number)
        }
        _ => Value::Null,
    }
}
