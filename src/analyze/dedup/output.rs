//! The files `sieve dedup` writes besides keep.txt, remove.txt and summary.json: the groups,
//! bridges, caption replacements and (with `--pairs`) every pair.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float32Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::{embedded_rows, CaptionChoice, Items, Kind, KindResult};
use crate::analyze::decision::Relation;
use crate::error::{Error, Result};
use crate::store::{write_atomic, Run};

/// The schema of `dedup/groups.parquet`.
pub fn groups_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::UInt64, false),
        Field::new("uri", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("group_id", DataType::UInt64, false),
        Field::new("kept", DataType::Boolean, false),
        Field::new("kept_id", DataType::UInt64, false),
        Field::new("kept_uri", DataType::Utf8, false),
        Field::new("kept_source", DataType::Utf8, false),
        Field::new("similarity", DataType::Float32, false),
        // Group diagnostics: the lowest similarity of a member to its kept item, and the lowest
        // between any two members (null for groups over 256 members).
        Field::new("group_min_similarity", DataType::Float32, false),
        Field::new("group_diameter", DataType::Float32, true),
    ]))
}

/// The schema of `dedup/captions.parquet`: kept items and the caption they carry instead of
/// their own.
pub fn captions_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::UInt64, false),
        Field::new("uri", DataType::Utf8, false),
        Field::new("caption", DataType::Utf8, false),
        Field::new("caption_from_id", DataType::UInt64, false),
        Field::new("caption_from_uri", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
        Field::new("own_caption", DataType::Utf8, true),
        Field::new("own_score", DataType::Float32, true),
    ]))
}

pub(crate) fn write_captions(path: &Path, items: &Items, run: &Run, choices: &[CaptionChoice]) -> Result<()> {
    let rows = embedded_rows(run);
    let caption = |i: u32| run.meta.caption[rows[i as usize]].as_deref();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(choices.iter().map(|c| items.id[c.kept as usize]))),
        Arc::new(StringArray::from_iter_values(choices.iter().map(|c| items.uri[c.kept as usize].as_str()))),
        Arc::new(StringArray::from_iter_values(choices.iter().map(|c| caption(c.from).unwrap_or_default()))),
        Arc::new(UInt64Array::from_iter_values(choices.iter().map(|c| items.id[c.from as usize]))),
        Arc::new(StringArray::from_iter_values(choices.iter().map(|c| items.uri[c.from as usize].as_str()))),
        Arc::new(Float32Array::from_iter_values(choices.iter().map(|c| c.score))),
        Arc::new(choices.iter().map(|c| caption(c.kept)).collect::<StringArray>()),
        Arc::new(choices.iter().map(|c| c.own_score).collect::<Float32Array>()),
    ];
    write_parquet(path, captions_schema(), cols)
}

/// The schema of `dedup/bridges.parquet`: pairs of a kind whose items are in two different
/// groups of that kind (what chaining would have joined).
pub fn bridges_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("kind", DataType::Utf8, false),
        Field::new("a_id", DataType::UInt64, false),
        Field::new("a_source", DataType::Utf8, false),
        Field::new("a_group_id", DataType::UInt64, false),
        Field::new("b_id", DataType::UInt64, false),
        Field::new("b_source", DataType::Utf8, false),
        Field::new("b_group_id", DataType::UInt64, false),
        Field::new("similarity", DataType::Float32, false),
    ]))
}

pub(crate) fn write_bridges(path: &Path, items: &Items, results: &[KindResult]) -> Result<()> {
    let source = |i: u32| if items.is_old(i) { "against" } else { "run" };
    let all = || results.iter().flat_map(|r| r.bridges.iter().map(move |b| (r.kind, b)));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(all().map(|(k, _)| k.as_str()))),
        Arc::new(UInt64Array::from_iter_values(all().map(|(_, b)| items.id[b.pair.a as usize]))),
        Arc::new(StringArray::from_iter_values(all().map(|(_, b)| source(b.pair.a)))),
        Arc::new(UInt64Array::from_iter_values(all().map(|(_, b)| b.groups.0 as u64))),
        Arc::new(UInt64Array::from_iter_values(all().map(|(_, b)| items.id[b.pair.b as usize]))),
        Arc::new(StringArray::from_iter_values(all().map(|(_, b)| source(b.pair.b)))),
        Arc::new(UInt64Array::from_iter_values(all().map(|(_, b)| b.groups.1 as u64))),
        Arc::new(Float32Array::from_iter_values(all().map(|(_, b)| b.pair.sim))),
    ];
    write_parquet(path, bridges_schema(), cols)
}

pub(crate) fn write_groups(path: &Path, items: &Items, removed: &[bool], results: &[KindResult]) -> Result<()> {
    let source = |i: u32| if items.is_old(i) { "against" } else { "run" };
    let (mut id, mut uri, mut src, mut kind, mut gid) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut kept, mut kept_id, mut kept_uri, mut kept_src, mut simv) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut min_to_kept, mut diameter) = (vec![], vec![]);
    for r in results {
        for (g_idx, ((g, s), st)) in r.groups.iter().zip(&r.sims).zip(&r.stats).enumerate() {
            for (&(m, k), &sim) in g.rows.iter().zip(s) {
                min_to_kept.push(st.min_to_kept);
                diameter.push(st.diameter);
                id.push(items.id[m as usize]);
                uri.push(items.uri[m as usize].as_str());
                src.push(source(m));
                kind.push(r.kind.as_str());
                gid.push(g_idx as u64);
                kept.push(!removed[m as usize]);
                kept_id.push(items.id[k as usize]);
                kept_uri.push(items.uri[k as usize].as_str());
                kept_src.push(source(k));
                simv.push(sim);
            }
        }
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from(id)),
        Arc::new(StringArray::from(uri)),
        Arc::new(StringArray::from(src)),
        Arc::new(StringArray::from(kind)),
        Arc::new(UInt64Array::from(gid)),
        Arc::new(BooleanArray::from(kept)),
        Arc::new(UInt64Array::from(kept_id)),
        Arc::new(StringArray::from(kept_uri)),
        Arc::new(StringArray::from(kept_src)),
        Arc::new(Float32Array::from(simv)),
        Arc::new(Float32Array::from(min_to_kept)),
        Arc::new(Float32Array::from(diameter)),
    ];
    write_parquet(path, groups_schema(), cols)
}

/// The schema of `dedup/pairs.parquet` (written with `--pairs`).
pub fn pairs_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("kind", DataType::Utf8, false),
        Field::new("a_id", DataType::UInt64, false),
        Field::new("a_source", DataType::Utf8, false),
        Field::new("b_id", DataType::UInt64, false),
        Field::new("b_source", DataType::Utf8, false),
        Field::new("similarity", DataType::Float32, false),
    ]))
}

/// Writes every pair of every kind, streamed batch by batch into the Parquet writer (never
/// all at once: they can be quadratically many).
pub(crate) fn write_pairs(path: &Path, items: &Items, relations: &[(Kind, Relation)]) -> Result<()> {
    let source = |i: u32| if items.is_old(i) { "against" } else { "run" };
    let schema = pairs_schema();
    let parquet_err = |e: parquet::errors::ParquetError| Error::Parquet { path: path.into(), source: e };
    let mut failed: Option<Error> = None;
    let written = write_atomic(path, |w| {
        let write = || -> Result<()> {
            let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
            let mut writer = ArrowWriter::try_new(w, schema.clone(), Some(props)).map_err(parquet_err)?;
            for (kind, rel) in relations {
                let Relation::Pairs(pairs) = rel else { continue };
                pairs.each(&mut |batch| {
                    let cols: Vec<ArrayRef> = vec![
                        Arc::new(StringArray::from_iter_values(batch.iter().map(|_| kind.as_str()))),
                        Arc::new(UInt64Array::from_iter_values(batch.iter().map(|p| items.id[p.a as usize]))),
                        Arc::new(StringArray::from_iter_values(batch.iter().map(|p| source(p.a)))),
                        Arc::new(UInt64Array::from_iter_values(batch.iter().map(|p| items.id[p.b as usize]))),
                        Arc::new(StringArray::from_iter_values(batch.iter().map(|p| source(p.b)))),
                        Arc::new(Float32Array::from_iter_values(batch.iter().map(|p| p.sim))),
                    ];
                    let batch = RecordBatch::try_new(schema.clone(), cols)
                        .map_err(|e| Error::Parquet { path: path.into(), source: e.into() })?;
                    writer.write(&batch).map_err(parquet_err)
                })?;
            }
            writer.close().map_err(parquet_err)?;
            Ok(())
        };
        write().map_err(|e| {
            let msg = e.to_string();
            failed = Some(e);
            std::io::Error::other(msg)
        })
    });
    written.map_err(|e| failed.take().unwrap_or(e))
}

fn write_parquet(path: &Path, schema: Arc<Schema>, cols: Vec<ArrayRef>) -> Result<()> {
    let batch =
        RecordBatch::try_new(schema, cols).map_err(|e| Error::Parquet { path: path.into(), source: e.into() })?;
    crate::store::write_parquet_atomic(path, &batch)
}
