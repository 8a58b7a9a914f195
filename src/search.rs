//! `sieve search`: the items of a run nearest a query, by the run's own encoder. A query is a
//! text (embedded by the caption tower), a picture (by the image tower, preprocessed as the run's
//! pictures were) or a record of the run (its stored embedding); it is compared with the run's
//! stored image embeddings (`Space::Image`: text→image, image→image) or caption embeddings
//! (`Space::Caption`). The scan is exact, one run part at a time (memory: one part's embeddings
//! and the top list), so its answer is the true top N; similarities are cosines against the
//! stored float16 rows, so a record queried by itself comes first at 1 (within float16's 1e-3).
//! Many text queries at once ([`search_many`], `--queries FILE`) go through dedup's exact
//! neighbour index part by part, on the chosen device: one pass over the run for all of them.

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use rayon::prelude::*;
use serde::Serialize;

use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::index::topk::TopK;
use crate::media::decode::Limits;
use crate::model::{Encoder, ModelSpec};
use crate::store::Run;

/// What to look for.
#[derive(Debug, Clone)]
pub enum Query {
    Text(String),
    Image(PathBuf),
    /// A record of the run, by id.
    Id(u64),
}

/// Which stored embeddings to search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Space {
    Image,
    Caption,
}

/// How to search.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    pub query: Query,
    pub space: Space,
    pub top: usize,
    /// The model to embed a text or picture query with: `None` for the run's own (run.json).
    /// Its weights must be the run's.
    pub model: Option<ModelSpec>,
    pub device: DeviceSpec,
    /// The top N within each value of this metadata column (`folder`: the uri's folder), rather
    /// than overall.
    pub by: Option<String>,
}

/// One hit.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Hit {
    pub rank: usize,
    pub similarity: f32,
    pub id: u64,
    pub uri: String,
    pub caption: Option<String>,
    /// The hit's value of the `--by` column (null where the record has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// The answer.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    pub run: String,
    pub query: String,
    pub space: Space,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Items searched (embedded; with a caption, in the caption space).
    pub searched: usize,
    pub hits: Vec<Hit>,
}

/// Runs `opts` against `run`.
pub fn search(run: &Run, opts: &SearchOptions) -> Result<Found> {
    if opts.top == 0 {
        return Err(Error::InvalidArg { what: "--top", reason: "must be at least 1".into() });
    }
    let d = run.manifest.embed_dim;
    let caption = searches_captions(run, opts.space)?;
    let (query, shown) = match &opts.query {
        Query::Id(id) => (stored(run, *id, caption)?, format!("id {id}")),
        Query::Text(text) => {
            let encoder = run_model(run, opts.model.as_ref(), opts.device)?;
            let tokenizer = encoder.tokenizer().ok_or_else(|| Error::InvalidArg {
                what: "--text",
                reason: format!(
                    "the run's model ({}) has no text tower; query with --image or --id",
                    encoder.info().id
                ),
            })?;
            let ids = tokenizer.encode(text)?.ids;
            (row(&encoder.embed_texts(&[ids])?)?, format!("text {text:?}"))
        }
        Query::Image(path) => {
            let encoder = run_model(run, opts.model.as_ref(), opts.device)?;
            (picture(&*encoder, path, &run.manifest.limits)?, format!("image {}", path.display()))
        }
    };
    if query.len() != d {
        return Err(Error::InvalidArg {
            what: "query",
            reason: format!("the query embedding has {} values, the run's {d}", query.len()),
        });
    }
    let groups = opts.by.as_deref().map(|c| run.column_strings(c)).transpose()?;
    // One top list per group (one in all without --by); groups by name, nulls last. The parts
    // are read and scanned in parallel (reading, checking and widening the stored rows is most
    // of the time) and their lists merged: a top list keeps the lower row on ties, so the
    // answer does not depend on the order.
    type Tops = std::collections::BTreeMap<(bool, String), TopK>;
    let starts: Vec<usize> = run.part_rows.iter().scan(0, |acc, &r| Some(std::mem::replace(acc, *acc + r))).collect();
    let per_part: Vec<(usize, Tops)> = (0..run.part_rows.len())
        .into_par_iter()
        .map(|p| -> Result<(usize, Tops)> {
            crate::progress::check_cancel()?;
            let values = run.embedding_part(caption, p)?;
            let (start, mut searched, mut tops) = (starts[p], 0, Tops::new());
            for r in 0..run.part_rows[p] {
                let g = start + r;
                if !run.meta.embedded[g] || (caption && run.meta.caption[g].is_none()) {
                    continue;
                }
                searched += 1;
                let v = &values[r * d..(r + 1) * d];
                let sim: f32 = v.iter().zip(&query).map(|(a, b)| a * b).sum();
                let group = groups.as_ref().and_then(|v| v[g].clone());
                let key = (group.is_none(), group.unwrap_or_default());
                tops.entry(key).or_insert_with(|| TopK::new(opts.top)).push(g as u32, sim);
            }
            Ok((searched, tops))
        })
        .collect::<Result<_>>()?;
    let mut tops = Tops::new();
    let mut searched = 0;
    for (n, part) in per_part {
        searched += n;
        for (key, top) in part {
            let merged = tops.entry(key).or_insert_with(|| TopK::new(opts.top));
            for (g, sim) in top.into_vec() {
                merged.push(g, sim);
            }
        }
    }
    let mut hits = Vec::new();
    for ((null, group), top) in tops {
        hits.extend(ranked(run, top, (opts.by.is_some() && !null).then_some(group)));
    }
    Ok(Found {
        run: run.dir.display().to_string(),
        query: shown,
        space: opts.space,
        by: opts.by.clone(),
        searched,
        hits,
    })
}

/// Most queries in one `--queries` file.
pub const MAX_QUERIES: usize = 100_000;
/// Texts embedded per forward pass of the caption tower.
const QUERY_BATCH: usize = 64;

/// Many text queries at once (`--queries FILE`): the texts are embedded in batches, then each
/// part of the run is searched for all of them with one [`ExactIndex`](crate::index::ExactIndex) (device-aware: the
/// similarity products run on `opts.device`, as dedup's exact search does), each query keeping
/// its own top list. Exact, so each answer is what [`search`] gives for that text alone.
/// `opts.query` is ignored; `--by` is refused (one query at a time for per-group lists).
pub fn search_many(run: &Run, texts: &[String], opts: &SearchOptions) -> Result<Vec<Found>> {
    use crate::index::{ExactIndex, Matrix, NeighbourIndex};
    if opts.top == 0 {
        return Err(Error::InvalidArg { what: "--top", reason: "must be at least 1".into() });
    }
    if opts.by.is_some() {
        return Err(Error::InvalidArg {
            what: "--by",
            reason: "lists per group one query at a time: use --text with --by, not --queries".into(),
        });
    }
    if texts.is_empty() || texts.len() > MAX_QUERIES {
        return Err(Error::InvalidArg {
            what: "--queries",
            reason: format!("holds {} queries; give between 1 and {MAX_QUERIES}", texts.len()),
        });
    }
    let d = run.manifest.embed_dim;
    let caption = searches_captions(run, opts.space)?;
    let encoder = run_model(run, opts.model.as_ref(), opts.device)?;
    let tokenizer = encoder.tokenizer().ok_or_else(|| Error::InvalidArg {
        what: "--queries",
        reason: format!("the run's model ({}) has no text tower", encoder.info().id),
    })?;
    let mut q = Vec::with_capacity(texts.len() * d);
    for chunk in texts.chunks(QUERY_BATCH) {
        crate::progress::check_cancel()?;
        let ids = chunk.iter().map(|t| Ok(tokenizer.encode(t)?.ids)).collect::<Result<Vec<_>>>()?;
        q.extend(encoder.embed_texts(&ids)?.flatten_all()?.to_vec1::<f32>()?);
    }
    let queries = Matrix::new(d, q)?;
    let device = crate::device::open(opts.device)?;
    let mut tops: Vec<TopK> = (0..texts.len()).map(|_| TopK::new(opts.top)).collect();
    let (mut searched, mut start) = (0, 0);
    for (p, &rows) in run.part_rows.iter().enumerate() {
        crate::progress::check_cancel()?;
        let values = run.embedding_part(caption, p)?;
        let keep: Vec<usize> = (0..rows)
            .filter(|&r| run.meta.embedded[start + r] && !(caption && run.meta.caption[start + r].is_none()))
            .collect();
        if !keep.is_empty() {
            searched += keep.len();
            let data = Matrix::gather(&values, d, &keep);
            let found = ExactIndex::new(&data, device.clone()).knn(&queries, opts.top, None)?;
            for (top, list) in tops.iter_mut().zip(found) {
                for (r, sim) in list {
                    top.push((start + keep[r as usize]) as u32, sim);
                }
            }
        }
        start += rows;
    }
    Ok(texts
        .iter()
        .zip(tops)
        .map(|(text, top)| Found {
            run: run.dir.display().to_string(),
            query: format!("text {text:?}"),
            space: opts.space,
            by: None,
            searched,
            hits: ranked(run, top, None),
        })
        .collect())
}

/// Whether `space` is the caption space, refused when `run` holds no caption embeddings.
fn searches_captions(run: &Run, space: Space) -> Result<bool> {
    let caption = space == Space::Caption;
    if caption && !(run.manifest.model.family.has_text() && run.manifest.counts.with_caption > 0) {
        return Err(Error::InvalidArg {
            what: "--space",
            reason: format!("{} holds no caption embeddings to search", run.dir.display()),
        });
    }
    Ok(caption)
}

/// A top list as hits, ranked from 1.
fn ranked(run: &Run, top: TopK, group: Option<String>) -> Vec<Hit> {
    top.into_vec()
        .into_iter()
        .enumerate()
        .map(|(i, (g, sim))| {
            let g = g as usize;
            Hit {
                rank: i + 1,
                similarity: sim,
                id: run.meta.id[g],
                uri: run.meta.uri[g].clone(),
                caption: run.meta.caption[g].clone(),
                group: group.clone(),
            }
        })
        .collect()
}

/// The queries of a `--queries` file: one text a line, blank lines skipped (at most 1 MiB).
pub fn read_queries(path: &Path) -> Result<Vec<String>> {
    let bad = |reason: String| Error::InvalidArg { what: "--queries", reason: format!("{}: {reason}", path.display()) };
    let (bytes, more) = crate::ingest::read_regular(path, 1 << 20).map_err(|s| bad(s.detail))?;
    if more {
        return Err(bad("over 1 MiB; split it".into()));
    }
    let text = String::from_utf8(bytes).map_err(|_| bad("is not UTF-8".into()))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())
}

/// A self-contained HTML page of `found` with thumbnails (`size` px), as the report makes them
/// (same decoding, same Content-Security-Policy: nothing is fetched).
pub fn html(found: &Found, run: &Run, size: u32) -> String {
    use crate::report::page::{head, shown, thumb, MAX_SHOWN_CHARS};
    use maud::{html, DOCTYPE};
    let t = crate::report::thumbs::Thumbnailer::new(run.manifest.limits, size);
    let uris: Vec<String> = found.hits.iter().map(|h| h.uri.clone()).collect();
    let thumbs = t.make_all(&uris);
    let title = format!("sieve search: {}", shown(&found.query, MAX_SHOWN_CHARS));
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(&title, format!(
                "body{{font:14px system-ui,sans-serif;margin:1.5em}}figure{{display:inline-block;width:{}px;\
                 vertical-align:top;margin:.4em}}figcaption{{font-size:12px;overflow-wrap:anywhere}}\
                 .ph{{width:{size}px;height:{size}px;background:#eee;font-size:11px}}.muted{{color:#666}}",
                size + 16
            )))
            body {
                h1 { bdi { (title) } }
                p.muted { (found.hits.len()) " of " (found.searched) " " (format!("{:?}", found.space).to_lowercase())
                    " embeddings in " bdi { (shown(&found.run, MAX_SHOWN_CHARS)) } }
                @for h in &found.hits {
                    figure {
                        (thumb(&h.uri, &thumbs))
                        figcaption {
                            @if let Some(g) = &h.group { span.muted { bdi { (shown(g, MAX_SHOWN_CHARS)) } " · " } }
                            "#" (h.rank) " · " (format!("{:.4}", h.similarity)) " · id " (h.id) br;
                            bdi title=(shown(&h.uri, MAX_SHOWN_CHARS)) { (shown(&h.uri, 80)) }
                            @if let Some(c) = &h.caption { br; "“" bdi { (shown(c, MAX_SHOWN_CHARS)) } "”" }
                        }
                    }
                }
            }
        }
    }
    .into_string()
}

/// The stored embedding of record `id` (its image's, or its caption's in the caption space).
fn stored(run: &Run, id: u64, caption: bool) -> Result<Vec<f32>> {
    let bad = |reason: String| Error::InvalidArg { what: "--id", reason };
    let g = run.meta.id.iter().position(|&x| x == id).ok_or_else(|| bad(format!("the run has no record {id}")))?;
    if !run.meta.embedded[g] {
        return Err(bad(format!("record {id} ({}) was skipped, so has no embedding", run.meta.uri[g])));
    }
    if caption && run.meta.caption[g].is_none() {
        return Err(bad(format!("record {id} ({}) has no caption", run.meta.uri[g])));
    }
    let d = run.manifest.embed_dim;
    let (mut start, mut part) = (0, 0);
    while start + run.part_rows[part] <= g {
        start += run.part_rows[part];
        part += 1;
    }
    let values = run.embedding_part(caption, part)?;
    Ok(values[(g - start) * d..(g - start + 1) * d].to_vec())
}

/// The run's model (`model`, else run.json's), refused unless its weights are the run's: a
/// query or concept embedded by other weights lives in another space. `sieve search` and
/// `sieve audit` load their encoder through this.
pub(crate) fn run_model(run: &Run, model: Option<&ModelSpec>, device: DeviceSpec) -> Result<Box<dyn Encoder>> {
    let m = &run.manifest.model;
    let spec = model.cloned().unwrap_or_else(|| ModelSpec::new(m.id.clone(), m.revision.clone()));
    let device = crate::device::open(device)?;
    // A run embedded with int8 or bf16 linear layers gets its queries the same way where it
    // can (the CPU, with AVX-512 BF16 for bf16), else in the device's own precision.
    let quantize = match crate::model::Quantize::of_compute_dtype(&run.manifest.compute_dtype) {
        q if device.is_cpu() && q.available() => q,
        _ => crate::model::Quantize::None,
    };
    let encoder = crate::model::load_quantized(&spec, &device, crate::device::compute_dtype(&device), quantize)?;
    if encoder.info().weights_sha256 != m.weights_sha256 {
        return Err(Error::InvalidArg {
            what: "--model",
            reason: format!(
                "{} has other weights than the model {} was embedded with ({}): its embeddings live in another space",
                spec.name,
                run.dir.display(),
                m.id
            ),
        });
    }
    Ok(encoder)
}

fn row(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_vec2::<f32>()?.into_iter().next().unwrap_or_default())
}

/// The embedding of the picture at `path`, read, decoded and preprocessed as `sieve embed` does.
fn picture(encoder: &dyn Encoder, path: &Path, limits: &Limits) -> Result<Vec<f32>> {
    let bad = |reason: String| Error::InvalidArg { what: "--image", reason: format!("{}: {reason}", path.display()) };
    let (bytes, more) = crate::ingest::read_regular(path, limits.max_bytes).map_err(|s| bad(s.detail))?;
    if more {
        return Err(bad(format!("over the run's --max-bytes ({})", limits.max_bytes)));
    }
    let decoded = crate::media::decode::decode(&bytes, limits).map_err(|s| bad(s.detail))?;
    let pre = encoder.preprocessor();
    let (h, w) = pre.output_size();
    let pixels = Tensor::from_vec(pre.preprocess(&decoded.rgb), (1, 3, h as usize, w as usize), encoder.device())?;
    row(&encoder.embed_images(&pixels)?)
}
