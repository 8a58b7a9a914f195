//! `sieve audit`: zero-shot concept coverage. A concept file ([`concepts`]) lists groups of
//! concepts (lighting: daylight | night | studio); each concept is embedded by the run's own
//! text tower from a small prompt ensemble ([`prompts`]); each embedded item gets, per group,
//! its best concept by cosine and the margin over the runner-up ([`assign()`]), on the image side
//! (stored image embeddings) and, with captions, on the caption side (stored caption
//! embeddings), and "none" when the margin is under `--margin`. Writes `RUN/audit.parquet`
//! (one row per item and group) and `RUN/audit_summary.json` ([`summary`]: counts and shares per
//! concept overall and per `--by` value, the under-represented concepts, where image and
//! caption disagree, and examples for the report).
//!
//! The margin default ([`DEFAULT_MARGIN`]) is not calibrated on labelled data: see its doc.

pub mod assign;
pub mod concepts;
pub mod prompts;
pub mod summary;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, BooleanArray, Float32Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use rayon::prelude::*;
use serde::Serialize;

use self::assign::{assign, Assignment};
use self::concepts::{ConceptSet, NONE};
use self::summary::{Agreement, ByValue, Disagreement, Example, GroupAudit, Side, Summary, UNDER_REPRESENTED};
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::model::{Encoder, ModelSpec};
use crate::store::{write_atomic, write_parquet_atomic, Layout, Run};

/// Default `--margin`: a cosine lead of 0.01 of the best concept over the second. CLIP scales
/// cosines by its learned logit scale, 100, before the softmax over prompts, so a lead of 0.01
/// is a logit lead of 1: the best concept is e ≈ 2.7 times as likely as the runner-up under
/// the model's own zero-shot softmax. That is how the default was chosen; it was not tuned on
/// labelled data. The planted test (`tests/audit.rs`) checks the assignment at this margin.
pub const DEFAULT_MARGIN: f32 = 0.01;
/// Default examples kept per concept (for the report).
pub const DEFAULT_EXAMPLES: usize = 4;
/// Most distinct `--by` values.
pub const MAX_BY_VALUES: usize = crate::analyze::diversity::MAX_GROUPS;

/// Everything `sieve audit` needs, validated.
#[derive(Debug, Clone, Serialize)]
pub struct AuditOptions {
    pub run: PathBuf,
    /// The parsed concept file (its digest is part of it, so `sieve run` reruns the audit when
    /// the file changes).
    pub concepts: ConceptSet,
    /// Cosine lead under which an item is "none of these".
    pub margin: f32,
    /// Metadata column to count per value of (`folder`: the uri's folder).
    pub by: Option<String>,
    /// Examples kept per concept.
    pub examples: usize,
    /// The model to embed the prompts with: `None` for the run's own (run.json). Its weights
    /// must be the run's.
    #[serde(skip)]
    pub model: Option<ModelSpec>,
    pub device: DeviceSpec,
}

impl AuditOptions {
    /// Defaults for `run` and `concepts` (as the CLI's defaults).
    pub fn new(run: impl Into<PathBuf>, concepts: ConceptSet) -> Self {
        Self {
            run: run.into(),
            concepts,
            margin: DEFAULT_MARGIN,
            by: None,
            examples: DEFAULT_EXAMPLES,
            model: None,
            device: DeviceSpec::Auto,
        }
    }
}

/// The concepts' directions: per group, its concepts' unit rows one after another.
pub struct Directions {
    pub per_group: Vec<Vec<f32>>,
    /// The template set's name and its size.
    pub templates: String,
    pub prompts_per_concept: usize,
}

/// Runs `sieve audit`: embeds the concepts with the run's model and audits the run.
pub fn audit(opts: &AuditOptions) -> Result<Summary> {
    let run = Run::open(&opts.run)?;
    let family = run.manifest.model.family;
    let Some((name, templates)) = prompts::templates(family) else {
        return Err(Error::InvalidArg {
            what: "--concepts",
            reason: format!(
                "{} was embedded with {} ({family:?}), an image-only model with no text tower: concepts cannot be \
                 embedded; embed the run with a CLIP, OpenCLIP or SigLIP model to audit it",
                run.dir.display(),
                run.manifest.model.id
            ),
        });
    };
    let encoder = crate::search::run_model(&run, opts.model.as_ref(), opts.device)?;
    let directions = embed_concepts(&*encoder, &opts.concepts, name, templates)?;
    audit_with(&run, opts, &directions)
}

/// Each concept's direction: the unit mean of its prompts' embeddings.
pub fn embed_concepts(
    encoder: &dyn Encoder,
    concepts: &ConceptSet,
    name: &str,
    templates: &[&str],
) -> Result<Directions> {
    let tokenizer = encoder.tokenizer().ok_or_else(|| Error::InvalidArg {
        what: "--concepts",
        reason: format!("the model {} has no text tower", encoder.info().id),
    })?;
    let d = encoder.info().embed_dim;
    let mut per_group = Vec::with_capacity(concepts.groups.len());
    for g in &concepts.groups {
        let mut rows = Vec::with_capacity(g.concepts.len() * d);
        for c in &g.concepts {
            let ids = prompts::prompts(&c.name, c.prompt.as_deref(), templates)
                .iter()
                .map(|p| Ok(tokenizer.encode(p)?.ids))
                .collect::<Result<Vec<_>>>()?;
            let emb: Vec<f32> = encoder.embed_texts(&ids)?.flatten_all()?.to_vec1::<f32>()?;
            rows.extend(prompts::mean_direction(&emb, d));
        }
        per_group.push(rows);
    }
    Ok(Directions { per_group, templates: name.into(), prompts_per_concept: templates.len() })
}

/// One embedded item's answers, per group: the image side, and the caption side when it has one.
struct ItemAnswer {
    row: usize,
    image: Vec<Assignment>,
    caption: Option<Vec<Assignment>>,
}

/// Audits `run` against concept `directions` (from [`embed_concepts`], or planted by a test) and
/// writes `audit.parquet` and `audit_summary.json`.
pub fn audit_with(run: &Run, opts: &AuditOptions, directions: &Directions) -> Result<Summary> {
    let started = Instant::now();
    if !(0.0..=2.0).contains(&opts.margin) {
        return Err(Error::InvalidArg { what: "--margin", reason: format!("{} is not in [0, 2]", opts.margin) });
    }
    let d = run.manifest.embed_dim;
    let groups = &opts.concepts.groups;
    for (g, dirs) in groups.iter().zip(&directions.per_group) {
        if dirs.len() != g.concepts.len() * d {
            return Err(Error::InvalidArg {
                what: "--concepts",
                reason: format!("the concept embeddings of group `{}` are not {d} wide, as the run's are", g.name),
            });
        }
    }
    let captions = run.manifest.model.family.has_text() && run.manifest.counts.with_caption > 0;
    let mut answers: Vec<ItemAnswer> = Vec::new();
    let mut start = 0;
    for (p, &rows) in run.part_rows.iter().enumerate() {
        crate::progress::check_cancel()?;
        let img = run.embedding_part(false, p)?;
        let txt = if captions { Some(run.embedding_part(true, p)?) } else { None };
        let part: Vec<ItemAnswer> = (0..rows)
            .into_par_iter()
            .filter(|&r| run.meta.embedded[start + r])
            .map(|r| {
                let of = |v: &[f32]| -> Vec<Assignment> {
                    directions.per_group.iter().map(|dirs| assign(&v[r * d..(r + 1) * d], dirs, opts.margin)).collect()
                };
                let caption = txt.as_deref().filter(|_| run.meta.caption[start + r].is_some()).map(of);
                ItemAnswer { row: start + r, image: of(&img), caption }
            })
            .collect();
        answers.extend(part);
        start += rows;
    }
    let by_values = match &opts.by {
        None => None,
        Some(col) => {
            let values = run.column_strings(col)?;
            let distinct: std::collections::BTreeSet<&str> =
                answers.iter().filter_map(|a| values[a.row].as_deref()).collect();
            if distinct.len() > MAX_BY_VALUES {
                return Err(Error::InvalidArg {
                    what: "metadata column",
                    reason: format!(
                        "column `{col}` has {} distinct values among the embedded rows; at most {MAX_BY_VALUES} \
                         (group by something coarser, such as the source folder)",
                        distinct.len()
                    ),
                });
            }
            Some(values)
        }
    };

    write_parquet(run, opts, &answers)?;

    let mut audit = Vec::with_capacity(groups.len());
    for (gi, g) in groups.iter().enumerate() {
        let names: Vec<String> = g.concepts.iter().map(|c| c.name.clone()).collect();
        let image_side = |set: &[&ItemAnswer]| Side::tally(&names, set.iter().map(|a| a.image[gi].concept()));
        let caption_side = |set: &[&ItemAnswer]| {
            captions
                .then(|| Side::tally(&names, set.iter().filter_map(|a| a.caption.as_ref()).map(|c| c[gi].concept())))
        };
        let all: Vec<&ItemAnswer> = answers.iter().collect();
        let agreement = captions.then(|| {
            let mut a = Agreement::default();
            for x in &answers {
                if let Some(c) = &x.caption {
                    let (i, c) = (x.image[gi].concept(), c[gi].concept());
                    a.items += 1;
                    a.agree += (i == c) as usize;
                    a.disagree += (i.is_some() && c.is_some() && i != c) as usize;
                }
            }
            a.agree_share = if a.items == 0 { 0.0 } else { a.agree as f64 / a.items as f64 };
            a
        });
        let mut by = Vec::new();
        if let Some(values) = &by_values {
            // Values by name, nulls last.
            let mut sets: BTreeMap<(bool, &str), Vec<&ItemAnswer>> = BTreeMap::new();
            for a in &answers {
                let v = values[a.row].as_deref();
                sets.entry((v.is_none(), v.unwrap_or(""))).or_default().push(a);
            }
            for ((null, v), set) in sets {
                by.push(ByValue {
                    value: (!null).then(|| v.to_string()),
                    image: image_side(&set),
                    caption: caption_side(&set),
                });
            }
        }
        let mut examples = BTreeMap::new();
        for (k, name) in names.iter().enumerate() {
            let mut chosen: Vec<&ItemAnswer> =
                answers.iter().filter(|a| a.image[gi].concept() == Some(k as u32)).collect();
            chosen.sort_by(|a, b| b.image[gi].margin.total_cmp(&a.image[gi].margin).then(a.row.cmp(&b.row)));
            let list: Vec<Example> = chosen
                .iter()
                .take(opts.examples)
                .map(|a| Example {
                    id: run.meta.id[a.row],
                    uri: run.meta.uri[a.row].clone(),
                    margin: a.image[gi].margin,
                })
                .collect();
            examples.insert(name.clone(), list);
        }
        // Both sides assigned, to different concepts; the clearest (larger smaller margin) first.
        let mut split: Vec<(&ItemAnswer, Assignment, Assignment)> = answers
            .iter()
            .filter_map(|a| {
                let c = a.caption.as_ref()?[gi];
                let i = a.image[gi];
                (i.assigned && c.assigned && i.best != c.best).then_some((a, i, c))
            })
            .collect();
        split.sort_by(|x, y| {
            y.1.margin.min(y.2.margin).total_cmp(&x.1.margin.min(x.2.margin)).then(x.0.row.cmp(&y.0.row))
        });
        let disagreements = split
            .iter()
            .take(opts.examples)
            .map(|(a, i, c)| Disagreement {
                id: run.meta.id[a.row],
                uri: run.meta.uri[a.row].clone(),
                image_concept: names[i.best as usize].clone(),
                caption_concept: names[c.best as usize].clone(),
            })
            .collect();
        audit.push(GroupAudit {
            group: g.name.clone(),
            concepts: names.clone(),
            image: image_side(&all),
            caption: caption_side(&all),
            agreement,
            by,
            examples,
            disagreements,
        });
    }
    let summary = Summary {
        sieve_version: env!("CARGO_PKG_VERSION").to_string(),
        run: opts.run.display().to_string(),
        run_fingerprint: run.fingerprint.clone(),
        model: run.manifest.model.id.clone(),
        concepts_file: opts.concepts.path.display().to_string(),
        concepts_sha256: opts.concepts.sha256.clone(),
        templates: directions.templates.clone(),
        prompts_per_concept: directions.prompts_per_concept,
        margin: opts.margin,
        under_represented_below: UNDER_REPRESENTED,
        by: opts.by.clone(),
        embedded: answers.len(),
        with_caption: answers.iter().filter(|a| a.caption.is_some()).count(),
        groups: audit.iter().map(|g| (g.group.clone(), g.image.shares())).collect(),
        audit,
    };
    let json = serde_json::to_vec_pretty(&summary).expect("summary serialises");
    write_atomic(&Layout::new(&opts.run).audit_summary(), |w| std::io::Write::write_all(w, &json))?;
    tracing::info!("audit: {} items, {} groups in {:.1?}", summary.embedded, groups.len(), started.elapsed());
    Ok(summary)
}

/// The schema of `audit.parquet`.
pub fn schema() -> Arc<Schema> {
    let f = |n: &str, t: DataType, null: bool| Field::new(n, t, null);
    Arc::new(Schema::new(vec![
        f("id", DataType::UInt64, false),
        f("uri", DataType::Utf8, false),
        f("group", DataType::Utf8, false),
        f("image_concept", DataType::Utf8, false),
        f("image_best", DataType::Utf8, false),
        f("image_cosine", DataType::Float32, false),
        f("image_margin", DataType::Float32, false),
        f("caption_concept", DataType::Utf8, true),
        f("caption_best", DataType::Utf8, true),
        f("caption_cosine", DataType::Float32, true),
        f("caption_margin", DataType::Float32, true),
        f("agree", DataType::Boolean, true),
    ]))
}

/// `audit.parquet`: one row per embedded item and group, in run order then file order.
fn write_parquet(run: &Run, opts: &AuditOptions, answers: &[ItemAnswer]) -> Result<()> {
    let groups = &opts.concepts.groups;
    let rows: Vec<(&ItemAnswer, usize)> = answers.iter().flat_map(|a| (0..groups.len()).map(move |g| (a, g))).collect();
    let name = |g: usize, k: u32| groups[g].concepts[k as usize].name.as_str();
    let concept = |g: usize, a: &Assignment| a.concept().map_or(NONE, |k| name(g, k));
    let cap = |a: &ItemAnswer, g: usize| a.caption.as_ref().map(|c| c[g]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|(a, _)| run.meta.id[a.row]))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|(a, _)| run.meta.uri[a.row].as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|&(_, g)| groups[g].name.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|&(a, g)| concept(g, &a.image[g])))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|&(a, g)| name(g, a.image[g].best)))),
        Arc::new(Float32Array::from_iter_values(rows.iter().map(|&(a, g)| a.image[g].cosine))),
        Arc::new(Float32Array::from_iter_values(rows.iter().map(|&(a, g)| a.image[g].margin))),
        Arc::new(rows.iter().map(|&(a, g)| cap(a, g).map(|c| concept(g, &c))).collect::<StringArray>()),
        Arc::new(rows.iter().map(|&(a, g)| cap(a, g).map(|c| name(g, c.best))).collect::<StringArray>()),
        Arc::new(rows.iter().map(|&(a, g)| cap(a, g).map(|c| c.cosine)).collect::<Float32Array>()),
        Arc::new(rows.iter().map(|&(a, g)| cap(a, g).map(|c| c.margin)).collect::<Float32Array>()),
        Arc::new(
            rows.iter().map(|&(a, g)| cap(a, g).map(|c| c.concept() == a.image[g].concept())).collect::<BooleanArray>(),
        ),
    ];
    let path = Layout::new(&opts.run).audit();
    let batch =
        RecordBatch::try_new(schema(), columns).map_err(|e| Error::Parquet { path: path.clone(), source: e.into() })?;
    write_parquet_atomic(&path, &batch)
}
