//! `sieve score`: how well each caption fits its image. Every embedded item with a caption gets
//! its CLIP score (the image-caption cosine, and `max(100·cos, 0)` as torchmetrics' CLIPScore
//! reports it) and two mismatch flags:
//!
//! - `low_score`: the cosine is under a threshold (the model's default from the registry,
//!   `--min-score`, or the cut that flags `--bottom-percent` of the pairs);
//! - `outranked`: rank-based, so it works whatever the model's score scale. At least `k` other
//!   captions fit the image better than its own, and at least `k` other images fit the caption
//!   better than its own image (both k-NN searches use the neighbour index).
//!
//! A flagged pair also gets a repair suggestion: the other caption in the dataset that fits its
//! image best, and that caption's score with the image.
//!
//! A model that scores pairs itself (SigLIP: `sigmoid(exp(logit_scale)·cos + logit_bias)`,
//! recorded in `run.json` as the model's `pair_logit`) also gets that probability, as the
//! `pair_probability` column and its distribution in the summary; for other models neither
//! exists, so their outputs are unchanged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, BooleanArray, Float32Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::common::{build_index, lenient, Distribution, Embedded, SearchOptions};
use crate::device::{self, DeviceSpec};
use crate::error::{Error, Result};
use crate::index::{dot, Matrix, Neighbours};
use crate::model::registry;
use crate::store::{write_atomic, write_parquet_atomic, Layout, Run};

/// Default `k` of the rank test.
pub const DEFAULT_TOP_K: usize = 10;

/// Where the low-score threshold comes from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Threshold {
    /// The model's default from the registry.
    Model,
    /// `--min-score`: a cosine.
    MinCosine(f32),
    /// `--bottom-percent`: flag this share (0–100) of the pairs with the lowest scores.
    BottomPercent(f64),
}

/// Everything `sieve score` needs, validated.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreOptions {
    pub run: PathBuf,
    pub threshold: Threshold,
    /// k of the rank test; 0 turns the `outranked` flag off.
    pub top_k: usize,
    pub search: SearchOptions,
    pub device: DeviceSpec,
}

impl ScoreOptions {
    /// Defaults for `run` (as the CLI's defaults).
    pub fn new(run: impl Into<PathBuf>) -> Self {
        Self {
            run: run.into(),
            threshold: Threshold::Model,
            top_k: DEFAULT_TOP_K,
            search: SearchOptions::default(),
            device: DeviceSpec::Auto,
        }
    }
}

/// The score and flags of one pair (one embedded item with a caption).
#[derive(Debug, Clone, PartialEq)]
pub struct PairScore {
    /// Item index in [`Embedded`].
    pub item: usize,
    pub cosine: f32,
    /// 1-based rank of its own caption among all captions for its image; `None` beyond `k`.
    pub caption_rank: Option<u32>,
    /// 1-based rank of its own image among all images for its caption; `None` beyond `k`, and
    /// when not searched (its caption is within the top k for its image, so it is not outranked).
    pub image_rank: Option<u32>,
    pub low_score: bool,
    pub outranked: bool,
    /// For a flagged pair: the other caption (item index) that fits the image best, and its cosine.
    pub suggestion: Option<(usize, f32)>,
}

/// `pairs_summary.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Summary {
    pub sieve_version: String,
    pub run: String,
    /// The fingerprint of the run this was computed from ([`crate::store::Run::fingerprint`]);
    /// readers refuse or recompute an output whose fingerprint is not their run's.
    pub run_fingerprint: String,
    pub model: String,
    pub records: u64,
    pub embedded: usize,
    /// Embedded items with a caption: the pairs scored.
    pub pairs: usize,
    /// Embedded items without a caption (not scored).
    pub no_caption: usize,
    /// Cosine under which a pair is `low_score`.
    #[serde(deserialize_with = "lenient::f32")]
    pub min_cosine: f32,
    /// `model` (registry default), `min-score` or `bottom-percent`.
    pub threshold_source: String,
    pub bottom_percent: Option<f64>,
    /// k of the rank test (0: off).
    pub top_k: usize,
    /// Index used for the rank test and the suggestions.
    pub index: String,
    /// Distribution of the cosine over the pairs.
    pub cosine: Distribution,
    /// Distribution of the CLIPScore (`max(100·cos, 0)`).
    pub clip_score: Distribution,
    /// Distribution of the model's own pair probability, for a model that has one (SigLIP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pair_probability: Option<Distribution>,
    pub low_score: usize,
    pub outranked: usize,
    /// Flagged by both.
    pub both: usize,
    /// Flagged by either.
    pub flagged: usize,
    /// Flagged pairs whose suggested caption scores higher with the image than their own.
    pub better_caption_found: usize,
}

/// The smallest cosine that leaves `percent`% of `cosines` strictly below it (∞ for 100%).
pub fn bottom_percent_cut(cosines: &[f32], percent: f64) -> f32 {
    let mut v = cosines.to_vec();
    v.sort_unstable_by(f32::total_cmp);
    let cut = ((percent / 100.0) * v.len() as f64).round() as usize;
    v.get(cut).copied().unwrap_or(f32::INFINITY)
}

/// CLIPScore as torchmetrics reports it.
pub fn clip_score(cosine: f32) -> f32 {
    (100.0 * cosine).max(0.0)
}

/// 1-based rank of `own` (whose similarity is `own_sim`) in a top-k list that may hold it:
/// one more than the number of other entries strictly more similar; `None` when all `k`
/// entries are.
fn rank_in(list: &[(u32, f32)], own: u32, own_sim: f32, k: usize) -> Option<u32> {
    let better = list.iter().filter(|&&(j, s)| j != own && s > own_sim).count();
    (better < k).then_some(better as u32 + 1)
}

/// Scores the pairs of `items` (the items with a caption; pure: no files). `min_cosine_for`
/// turns the pairs' cosines into the low-score threshold.
pub fn score_pairs(
    items: &Embedded,
    min_cosine_for: impl FnOnce(&[f32]) -> f32,
    top_k: usize,
    search: &SearchOptions,
    device: &candle_core::Device,
) -> Result<(Vec<PairScore>, f32, String)> {
    let pair_items: Vec<usize> = (0..items.len()).filter(|&i| items.has_caption[i]).collect();
    let n = pair_items.len();
    let cosine: Vec<f32> = pair_items.par_iter().map(|&i| dot(items.image.row(i), items.text.row(i))).collect();
    let min_cosine = min_cosine_for(&cosine);
    let low: Vec<bool> = cosine.iter().map(|&c| c < min_cosine).collect();
    let mut scores: Vec<PairScore> = (0..n)
        .map(|p| PairScore {
            item: pair_items[p],
            cosine: cosine[p],
            caption_rank: None,
            image_rank: None,
            low_score: low[p],
            outranked: false,
            suggestion: None,
        })
        .collect();
    if n < 2 {
        return Ok((scores, min_cosine, "none".into()));
    }
    let d = items.image.dim();
    // Copies only when some items have no caption (a million 512-d rows is 2 GB).
    let (images, texts) = (items.image.select(&pair_items), items.text.select(&pair_items));
    // Images ask the caption index. Without the rank test only low-score pairs need a suggestion.
    let askers: Vec<usize> = if top_k > 0 { (0..n).collect() } else { (0..n).filter(|&p| low[p]).collect() };
    if askers.is_empty() {
        return Ok((scores, min_cosine, "none".into()));
    }
    let text_index = build_index(&texts, search, device, askers.len())?;
    let index_name = text_index.name();
    let k = top_k.max(1) + 1;
    let asked = images.select(&askers);
    let t0 = Instant::now();
    let caption_lists: Vec<Neighbours> = text_index.knn(&asked, k, None)?;
    drop(text_index);
    tracing::info!("score: {} images searched the caption index in {:.1?}", askers.len(), t0.elapsed());
    let mut lists_of: Vec<Option<Neighbours>> = vec![None; n];
    for (&p, l) in askers.iter().zip(caption_lists) {
        lists_of[p] = Some(l);
    }
    if top_k > 0 {
        for (p, s) in scores.iter_mut().enumerate() {
            s.caption_rank = rank_in(lists_of[p].as_deref().unwrap_or(&[]), p as u32, s.cosine, top_k);
        }
        // Outranked needs both sides to fail, so only captions whose own side failed search the
        // image index.
        let failed: Vec<usize> = (0..n).filter(|&p| scores[p].caption_rank.is_none()).collect();
        if !failed.is_empty() {
            let image_index = build_index(&images, search, device, failed.len())?;
            let t0 = Instant::now();
            let image_lists = image_index.knn(&Matrix::gather(texts.as_slice(), d, &failed), k, None)?;
            tracing::info!("score: {} captions searched the image index in {:.1?}", failed.len(), t0.elapsed());
            for (&p, l) in failed.iter().zip(&image_lists) {
                let s = &mut scores[p];
                s.image_rank = rank_in(l, p as u32, s.cosine, top_k);
                s.outranked = s.image_rank.is_none();
            }
        }
    }
    for (p, s) in scores.iter_mut().enumerate() {
        if s.low_score || s.outranked {
            s.suggestion = lists_of[p]
                .as_deref()
                .and_then(|l| l.iter().find(|&&(j, _)| j as usize != p))
                .map(|&(j, sim)| (pair_items[j as usize], sim));
        }
    }
    Ok((scores, min_cosine, index_name))
}

/// The schema of `pairs.parquet`; with `pair_probability` last for a model that scores pairs
/// itself.
pub fn pairs_schema(pair_probability: bool) -> Arc<Schema> {
    let mut fields = vec![
        Field::new("id", DataType::UInt64, false),
        Field::new("uri", DataType::Utf8, false),
        Field::new("cosine", DataType::Float32, false),
        Field::new("clip_score", DataType::Float32, false),
        Field::new("caption_rank", DataType::UInt32, true),
        Field::new("image_rank", DataType::UInt32, true),
        Field::new("low_score", DataType::Boolean, false),
        Field::new("outranked", DataType::Boolean, false),
        Field::new("flag", DataType::Utf8, true),
        Field::new("suggested_caption_id", DataType::UInt64, true),
        Field::new("suggested_caption", DataType::Utf8, true),
        Field::new("suggested_cosine", DataType::Float32, true),
    ];
    if pair_probability {
        fields.push(Field::new("pair_probability", DataType::Float32, false));
    }
    Arc::new(Schema::new(fields))
}

fn flag_of(s: &PairScore) -> Option<&'static str> {
    match (s.low_score, s.outranked) {
        (true, true) => Some("low_score,outranked"),
        (true, false) => Some("low_score"),
        (false, true) => Some("outranked"),
        (false, false) => None,
    }
}

/// Runs `sieve score`; returns the summary (also written to `RUN/pairs_summary.json`).
pub fn score(opts: &ScoreOptions) -> Result<Summary> {
    let started = Instant::now();
    let run = Run::open(&opts.run)?;
    if !run.manifest.model.family.has_text() {
        tracing::warn!(
            "{} is an image-only model: the run holds no caption embeddings, so there is no caption fit to score",
            run.manifest.model.id
        );
    }
    let items = Embedded::load(&run)?;
    let dev = device::open(opts.device)?;
    let model_default = registry::score_defaults(&run.manifest.model.id).min_cosine;
    let (source, bottom) = match opts.threshold {
        Threshold::Model => ("model", None),
        Threshold::MinCosine(_) => ("min-score", None),
        Threshold::BottomPercent(p) => ("bottom-percent", Some(p)),
    };
    let threshold = opts.threshold;
    let min_cosine_for = move |cos: &[f32]| match threshold {
        Threshold::Model => model_default,
        Threshold::MinCosine(c) => c,
        Threshold::BottomPercent(p) => bottom_percent_cut(cos, p),
    };
    let (scores, min_cosine, index) = score_pairs(&items, min_cosine_for, opts.top_k, &opts.search, &dev)?;

    let meta = &run.meta;
    let row = |item: usize| items.rows[item];
    let pair_logit = run.manifest.model.pair_logit;
    let probability: Option<Vec<f32>> = pair_logit.map(|l| scores.iter().map(|s| l.probability(s.cosine)).collect());
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(scores.iter().map(|s| meta.id[row(s.item)]))) as ArrayRef,
        Arc::new(StringArray::from_iter_values(scores.iter().map(|s| meta.uri[row(s.item)].as_str()))),
        Arc::new(Float32Array::from_iter_values(scores.iter().map(|s| s.cosine))),
        Arc::new(Float32Array::from_iter_values(scores.iter().map(|s| clip_score(s.cosine)))),
        Arc::new(scores.iter().map(|s| s.caption_rank).collect::<UInt32Array>()),
        Arc::new(scores.iter().map(|s| s.image_rank).collect::<UInt32Array>()),
        Arc::new(scores.iter().map(|s| Some(s.low_score)).collect::<BooleanArray>()),
        Arc::new(scores.iter().map(|s| Some(s.outranked)).collect::<BooleanArray>()),
        Arc::new(scores.iter().map(flag_of).collect::<StringArray>()),
        Arc::new(scores.iter().map(|s| s.suggestion.map(|(j, _)| meta.id[row(j)])).collect::<UInt64Array>()),
        Arc::new(
            scores
                .iter()
                .map(|s| s.suggestion.and_then(|(j, _)| meta.caption[row(j)].as_deref()))
                .collect::<StringArray>(),
        ),
        Arc::new(scores.iter().map(|s| s.suggestion.map(|(_, c)| c)).collect::<Float32Array>()),
    ];
    if let Some(p) = &probability {
        columns.push(Arc::new(Float32Array::from_iter_values(p.iter().copied())));
    }
    let batch = RecordBatch::try_new(pairs_schema(probability.is_some()), columns)
        .map_err(|e| Error::Parquet { path: Layout::new(&opts.run).pairs(), source: e.into() })?;
    write_parquet_atomic(&Layout::new(&opts.run).pairs(), &batch)?;

    let cos: Vec<f32> = scores.iter().map(|s| s.cosine).collect();
    let clip: Vec<f32> = cos.iter().map(|&c| clip_score(c)).collect();
    let count = |f: &dyn Fn(&PairScore) -> bool| scores.iter().filter(|s| f(s)).count();
    let summary = Summary {
        sieve_version: env!("CARGO_PKG_VERSION").to_string(),
        run: opts.run.display().to_string(),
        run_fingerprint: run.fingerprint.clone(),
        model: run.manifest.model.id.clone(),
        records: run.manifest.counts.records,
        embedded: items.len(),
        pairs: scores.len(),
        no_caption: items.len() - scores.len(),
        min_cosine,
        threshold_source: source.into(),
        bottom_percent: bottom,
        top_k: opts.top_k,
        index,
        cosine: Distribution::of(&cos, 40),
        clip_score: Distribution::of(&clip, 40),
        pair_probability: probability.as_deref().map(|p| Distribution::of(p, 40)),
        low_score: count(&|s| s.low_score),
        outranked: count(&|s| s.outranked),
        both: count(&|s| s.low_score && s.outranked),
        flagged: count(&|s| s.low_score || s.outranked),
        better_caption_found: count(&|s| s.suggestion.is_some_and(|(_, c)| c > s.cosine)),
    };
    let json = serde_json::to_vec_pretty(&summary).expect("summary serialises");
    write_atomic(&Layout::new(&opts.run).pairs_summary(), |w| std::io::Write::write_all(w, &json))?;
    tracing::info!("score: {} pairs in {:.1?}", summary.pairs, started.elapsed());
    Ok(summary)
}
