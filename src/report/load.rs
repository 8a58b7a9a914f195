//! Reading what each stage wrote, leniently: a file that is missing means the stage was not run,
//! one that cannot be read is reported in its section. Summaries are read into the types their
//! stages write (`#[serde(default)]` there, so a field an older sieve did not write takes its
//! default, and floats written as `null` for NaN read back as NaN through
//! [`crate::analyze::common::lenient`]); the page shows a NaN as "–".

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use candle_core::Device;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::de::DeserializeOwned;

use super::{ReportOptions, Section};
use crate::analyze::common::Distribution;
use crate::analyze::{dedup, diversity, pairs, quality};
use crate::audit;
use crate::error::Result;
use crate::index::{ExactIndex, Matrix, NeighbourIndex};
use crate::model::registry;
use crate::store::layout::{self, Layout};
use crate::store::Run;

/// A stage's output: not run, unreadable (why), or read.
#[derive(Debug)]
pub enum Stage<T> {
    NotRun,
    Failed(String),
    Ready(T),
}

impl<T> Stage<T> {
    pub fn ready(&self) -> Option<&T> {
        match self {
            Stage::Ready(t) => Some(t),
            _ => None,
        }
    }

    /// Reads `path` with `read` when it exists.
    fn read(path: &Path, read: impl FnOnce(&Path) -> std::result::Result<T, String>) -> Self {
        if !path.exists() {
            return Stage::NotRun;
        }
        match read(path) {
            Ok(t) => Stage::Ready(t),
            Err(e) => Stage::Failed(format!("{} could not be read: {e}", path.display())),
        }
    }
}

fn json<T: DeserializeOwned>(path: &Path) -> std::result::Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// `dedup/summary.json`, read into the stage's own type.
pub type DedupSummary = dedup::Summary;

/// `pairs_summary.json`, read into the stage's own type.
pub type PairsSummary = pairs::Summary;

/// `diversity.json`, read into the stage's own type.
pub type Diversity = diversity::Report;

/// One embedding's diversity metrics in `diversity.json`.
pub type Metrics = diversity::Metrics;

/// `quality_summary.json`, read into the stage's own type (fields an older sieve did not write
/// take their defaults; `records` and `with_caption` then read as unknown).
pub type Quality = quality::Summary;

/// `audit_summary.json`, read into the stage's own type.
pub type Audit = audit::summary::Summary;

/// One member of a duplicate group, as `dedup/groups.parquet` lists it.
#[derive(Debug, Clone)]
pub struct Member {
    pub uri: String,
    /// `run`, or `against` for an item of the `--against` corpus.
    pub source: String,
    pub kept: bool,
    /// Similarity to the kept item (1 for the kept item itself).
    pub similarity: f32,
}

/// A duplicate group, its kept member first.
#[derive(Debug, Clone)]
pub struct DupGroup {
    pub kind: String,
    pub group_id: u64,
    /// Members shown (at most `ReportOptions::group_members`), the kept one first.
    pub members: Vec<Member>,
    /// Members in the group.
    pub size: usize,
    /// For a borderline group: its threshold, and how far its least similar member is above it.
    pub margin: Option<(f32, f32)>,
    /// The lowest similarity between two members (`group_diameter`; absent in older runs and
    /// for groups over 256 members).
    pub diameter: Option<f32>,
}

/// Duplicate groups picked for the page.
#[derive(Debug, Default)]
pub struct Dedup {
    pub summary: DedupSummary,
    /// Kept items that carry a removed copy's caption (the first few of
    /// `dedup/captions.parquet`): (uri, own caption, adopted caption, adopted from).
    pub captions: Vec<CaptionSwap>,
    pub largest: Vec<DupGroup>,
    pub borderline: Vec<DupGroup>,
    pub total_groups: usize,
}

/// One scored pair, as `pairs.parquet` lists it, with the captions looked up.
#[derive(Debug, Clone)]
pub struct Pair {
    pub id: u64,
    pub uri: String,
    pub caption: Option<String>,
    pub cosine: f32,
    pub clip_score: f32,
    pub caption_rank: Option<u32>,
    pub low_score: bool,
    pub outranked: bool,
    pub suggested_id: Option<u64>,
    pub suggested_caption: Option<String>,
    pub suggested_cosine: Option<f32>,
}

/// Pairs picked for the page.
#[derive(Debug, Default)]
pub struct Pairs {
    pub summary: PairsSummary,
    pub lowest: Vec<Pair>,
    pub outranked: Vec<Pair>,
}

/// Nearest-neighbour similarity of images, computed here from the embeddings.
#[derive(Debug)]
pub struct NearestNeighbours {
    pub distribution: Distribution,
    pub queries: usize,
    pub items: usize,
    /// The image threshold drawn, and whether `sieve dedup` used it (else the model's default).
    pub threshold: f32,
    pub threshold_from_dedup: bool,
}

/// A skipped record.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub uri: String,
    pub reason: String,
    pub error: Option<String>,
}

/// Everything the page shows.
#[derive(Debug)]
pub struct Data {
    pub dedup: Stage<Dedup>,
    pub pairs: Stage<Pairs>,
    pub diversity: Stage<Diversity>,
    pub quality: Stage<Quality>,
    /// The concept audit: shown only when it was run.
    pub audit: Stage<Audit>,
    pub nn: Option<NearestNeighbours>,
    pub skipped: Vec<Skipped>,
}

fn col<'a>(batch: &'a RecordBatch, name: &str) -> std::result::Result<&'a dyn Array, String> {
    batch.column_by_name(name).map(|c| c.as_ref()).ok_or_else(|| format!("no `{name}` column"))
}

fn u64s(b: &RecordBatch, name: &str) -> std::result::Result<Vec<Option<u64>>, String> {
    Ok(col(b, name)?
        .as_primitive_opt::<UInt64Type>()
        .ok_or_else(|| format!("`{name}` is not uint64"))?
        .iter()
        .collect())
}

fn u32s(b: &RecordBatch, name: &str) -> std::result::Result<Vec<Option<u32>>, String> {
    Ok(col(b, name)?
        .as_primitive_opt::<UInt32Type>()
        .ok_or_else(|| format!("`{name}` is not uint32"))?
        .iter()
        .collect())
}

fn f32s(b: &RecordBatch, name: &str) -> std::result::Result<Vec<Option<f32>>, String> {
    Ok(col(b, name)?
        .as_primitive_opt::<Float32Type>()
        .ok_or_else(|| format!("`{name}` is not float32"))?
        .iter()
        .collect())
}

fn bools(b: &RecordBatch, name: &str) -> std::result::Result<Vec<bool>, String> {
    let c = col(b, name)?.as_boolean_opt().ok_or_else(|| format!("`{name}` is not boolean"))?;
    Ok(c.iter().map(|v| v.unwrap_or(false)).collect())
}

fn strs(b: &RecordBatch, name: &str) -> std::result::Result<Vec<Option<String>>, String> {
    let c = col(b, name)?.as_string_opt::<i32>().ok_or_else(|| format!("`{name}` is not a string column"))?;
    Ok(c.iter().map(|v| v.map(str::to_string)).collect())
}

fn batches(path: &Path) -> std::result::Result<Vec<RecordBatch>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).and_then(|b| b.build()).map_err(|e| e.to_string())?;
    reader.collect::<std::result::Result<Vec<_>, _>>().map_err(|e| e.to_string())
}

/// A kept image that carries a removed copy's caption: (uri, its own caption, the caption it
/// carries, the uri that caption came from).
pub type CaptionSwap = (String, Option<String>, String, String);

/// Caption replacements shown on the page.
const CAPTIONS_SHOWN: usize = 10;

/// The first rows of `dedup/captions.parquet`.
fn read_captions(path: &Path) -> std::result::Result<Vec<CaptionSwap>, String> {
    let mut out = Vec::new();
    for b in batches(path)? {
        let (uri, own, caption, from) =
            (strs(&b, "uri")?, strs(&b, "own_caption")?, strs(&b, "caption")?, strs(&b, "caption_from_uri")?);
        for i in 0..b.num_rows() {
            if out.len() == CAPTIONS_SHOWN {
                return Ok(out);
            }
            out.push((
                uri[i].clone().unwrap_or_default(),
                own[i].clone(),
                caption[i].clone().unwrap_or_default(),
                from[i].clone().unwrap_or_default(),
            ));
        }
    }
    Ok(out)
}

/// Every group of `dedup/groups.parquet`, in file order (kind, then group id).
fn read_groups(path: &Path) -> std::result::Result<Vec<DupGroup>, String> {
    let mut groups: Vec<DupGroup> = Vec::new();
    for b in batches(path)? {
        let (uri, source, kind) = (strs(&b, "uri")?, strs(&b, "source")?, strs(&b, "kind")?);
        let (gid, kept, sim) = (u64s(&b, "group_id")?, bools(&b, "kept")?, f32s(&b, "similarity")?);
        // Written since the group diagnostics exist; older runs have none.
        let diameter = if b.column_by_name("group_diameter").is_some() {
            f32s(&b, "group_diameter")?
        } else {
            vec![None; b.num_rows()]
        };
        for i in 0..b.num_rows() {
            let kind = kind[i].clone().unwrap_or_default();
            let group_id = gid[i].unwrap_or_default();
            let member = Member {
                uri: uri[i].clone().unwrap_or_default(),
                source: source[i].clone().unwrap_or_else(|| "run".into()),
                kept: kept[i],
                similarity: sim[i].unwrap_or(f32::NAN),
            };
            match groups.last_mut() {
                Some(g) if g.kind == kind && g.group_id == group_id => g.members.push(member),
                _ => groups.push(DupGroup {
                    kind,
                    group_id,
                    members: vec![member],
                    size: 0,
                    margin: None,
                    diameter: diameter[i],
                }),
            }
        }
    }
    for g in &mut groups {
        // Kept member first, as dedup writes them; sort anyway so the page never depends on it.
        g.members.sort_by_key(|m| !m.kept);
        g.size = g.members.len();
    }
    Ok(groups)
}

fn read_pairs(path: &Path) -> std::result::Result<Vec<Pair>, String> {
    let mut pairs = Vec::new();
    for b in batches(path)? {
        let (id, uri, cosine, clip) = (u64s(&b, "id")?, strs(&b, "uri")?, f32s(&b, "cosine")?, f32s(&b, "clip_score")?);
        let (low, out, rank) = (bools(&b, "low_score")?, bools(&b, "outranked")?, u32s(&b, "caption_rank")?);
        let (sid, scap, scos) =
            (u64s(&b, "suggested_caption_id")?, strs(&b, "suggested_caption")?, f32s(&b, "suggested_cosine")?);
        for i in 0..b.num_rows() {
            pairs.push(Pair {
                id: id[i].unwrap_or_default(),
                uri: uri[i].clone().unwrap_or_default(),
                caption: None,
                cosine: cosine[i].unwrap_or(f32::NAN),
                clip_score: clip[i].unwrap_or(f32::NAN),
                caption_rank: rank[i],
                low_score: low[i],
                outranked: out[i],
                suggested_id: sid[i],
                suggested_caption: scap[i].clone(),
                suggested_cosine: scos[i],
            });
        }
    }
    Ok(pairs)
}

/// The lowest similarity to the kept item among a group's other members.
fn weakest(g: &DupGroup) -> Option<f32> {
    g.members.iter().filter(|m| !m.kept && m.similarity.is_finite()).map(|m| m.similarity).min_by(f32::total_cmp)
}

fn pick_groups(mut all: Vec<DupGroup>, summary: DedupSummary, opts: &ReportOptions) -> Dedup {
    let total_groups = all.len();
    // Largest first; ties: kind and group order, so the page is deterministic.
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(all[i].members.len()));
    let cap = opts.group_members.max(1);
    let largest: Vec<DupGroup> = order
        .iter()
        .take(opts.groups)
        .map(|&i| {
            let mut g = all[i].clone();
            g.members.truncate(cap);
            g
        })
        .collect();

    // Borderline: groups whose least similar member is nearest its kind's threshold. Exact
    // duplicates have no threshold, and joint groups' similarity mixes two thresholds.
    let t = &summary.thresholds;
    let threshold = |kind: &str| {
        match kind {
            "image" => Some(t.image),
            "caption" => Some(t.caption),
            "perceptual" => Some(1.0 - t.perceptual_distance as f32 / 64.0),
            _ => None,
        }
        .filter(|t| t.is_finite())
    };
    for g in &mut all {
        if let (Some(th), Some(w)) = (threshold(&g.kind), weakest(g)) {
            g.margin = Some((th, w - th));
        }
    }
    let shown: std::collections::HashSet<(String, u64)> =
        largest.iter().map(|g| (g.kind.clone(), g.group_id)).collect();
    let mut near: Vec<&DupGroup> =
        all.iter().filter(|g| g.margin.is_some() && !shown.contains(&(g.kind.clone(), g.group_id))).collect();
    near.sort_by(|a, b| {
        let (ma, mb) = (a.margin.map_or(f32::INFINITY, |m| m.1.abs()), b.margin.map_or(f32::INFINITY, |m| m.1.abs()));
        ma.total_cmp(&mb)
    });
    let borderline = near
        .into_iter()
        .take(opts.groups)
        .map(|g| {
            // The members nearest the threshold first, after the kept one.
            let mut g = g.clone();
            g.members.sort_by(|a, b| b.kept.cmp(&a.kept).then(a.similarity.total_cmp(&b.similarity)));
            g.members.truncate(cap);
            g
        })
        .collect();
    Dedup { summary, captions: Vec::new(), largest, borderline, total_groups }
}

fn pick_pairs(mut all: Vec<Pair>, summary: PairsSummary, captions: &HashMap<u64, Option<String>>, n: usize) -> Pairs {
    let caption = |id: u64| captions.get(&id).cloned().flatten();
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by(|&a, &b| all[a].cosine.total_cmp(&all[b].cosine).then(all[a].id.cmp(&all[b].id)));
    let lowest_idx: Vec<usize> = order.iter().copied().take(n).collect();
    // Outranked: the ones a better caption would gain most on, beyond those already shown.
    let mut out_idx: Vec<usize> = (0..all.len()).filter(|&i| all[i].outranked && !lowest_idx.contains(&i)).collect();
    let gain = |p: &Pair| p.suggested_cosine.map_or(f32::NEG_INFINITY, |s| s - p.cosine);
    out_idx.sort_by(|&a, &b| gain(&all[b]).total_cmp(&gain(&all[a])).then(all[a].id.cmp(&all[b].id)));
    out_idx.truncate(n);
    let mut take = |idx: &[usize]| -> Vec<Pair> {
        idx.iter()
            .map(|&i| {
                let p = &mut all[i];
                p.caption = caption(p.id);
                // The suggestion's text from the run's own metadata, by id; the copy in
                // pairs.parquet stands in for an id this run does not hold.
                if let Some(text) = p.suggested_id.and_then(caption) {
                    p.suggested_caption = Some(text);
                }
                p.clone()
            })
            .collect()
    };
    let lowest = take(&lowest_idx);
    let outranked = take(&out_idx);
    Pairs { summary, lowest, outranked }
}

/// Nearest-neighbour similarity of every embedded image (a seeded sample of `opts.nn_sample`
/// beyond that many) among all embedded images, by exact search.
fn nearest_neighbours(run: &Run, opts: &ReportOptions, dedup: &Stage<Dedup>) -> Result<Option<NearestNeighbours>> {
    let rows: Vec<usize> = (0..run.meta.len()).filter(|&r| run.meta.embedded[r]).collect();
    let n = rows.len();
    if n < 2 || opts.nn_sample == 0 {
        return Ok(None);
    }
    let d = run.manifest.embed_dim;
    let all = run.embeddings(false)?;
    let m = if n == run.meta.len() { Matrix::new(d, all)? } else { Matrix::gather(&all, d, &rows) };
    let queries: Vec<usize> = if n <= opts.nn_sample {
        (0..n).collect()
    } else {
        let mut q = rand::seq::index::sample(&mut StdRng::seed_from_u64(opts.seed), n, opts.nn_sample).into_vec();
        q.sort_unstable();
        q
    };
    let q = Matrix::gather(m.as_slice(), d, &queries);
    let skip: Vec<u32> = queries.iter().map(|&i| i as u32).collect();
    let lists = ExactIndex::new(&m, Device::Cpu).knn(&q, 1, Some(&skip))?;
    let sims: Vec<f32> = lists.iter().filter_map(|l| l.first().map(|&(_, s)| s)).collect();
    let from_dedup = dedup.ready().map(|d| d.summary.thresholds.image).filter(|t| t.is_finite());
    let threshold = from_dedup.unwrap_or_else(|| registry::dedup_defaults(&run.manifest.model.id).image);
    Ok(Some(NearestNeighbours {
        distribution: Distribution::of(&sims, 40),
        queries: queries.len(),
        items: n,
        threshold,
        threshold_from_dedup: from_dedup.is_some(),
    }))
}

impl Data {
    pub fn load(run: &Run, opts: &ReportOptions) -> Result<Self> {
        let files = Layout::new(&run.dir);
        // A stage output naming items this run does not hold was computed from another run
        // (e.g. left behind by an older sieve's `embed --overwrite`): never shown beside this
        // run's records.
        let uri_of: HashMap<u64, &str> =
            run.meta.id.iter().copied().zip(run.meta.uri.iter().map(String::as_str)).collect();
        let uris: std::collections::HashSet<&str> = run.meta.uri.iter().map(String::as_str).collect();
        fn stale<T>(what: &str, cmd: &str) -> Stage<T> {
            Stage::Failed(format!(
                "{what} was computed from another run (it names items this run does not hold), so it is not shown; \
                 run `sieve {cmd} RUN` again"
            ))
        }
        // An output whose summary names another run's fingerprint is never shown; outputs of
        // older sieves (no fingerprint) are judged by what they list, below.
        fn unless_foreign<T>(run: &Run, stage: Stage<T>, summary: &str, cmd: &str) -> Stage<T> {
            match (stage, run.provenance(summary, cmd)) {
                (Stage::Ready(_), crate::store::Provenance::Foreign(why)) => Stage::Failed(why),
                (stage, _) => stage,
            }
        }
        let dedup = match Stage::read(&files.dedup_summary(), json::<DedupSummary>) {
            Stage::Ready(summary) if summary.embedded as u64 != run.manifest.counts.embedded => {
                stale(&format!("{}/", layout::DEDUP_DIR), "dedup")
            }
            Stage::Ready(summary) => {
                match Stage::read(&files.dedup_groups(), read_groups).ready_or_failed() {
                    Stage::Ready(groups)
                        if groups
                            .iter()
                            .flat_map(|g| &g.members)
                            .any(|m| m.source == "run" && !uris.contains(m.uri.as_str())) =>
                    {
                        stale(&format!("{}/", layout::DEDUP_DIR), "dedup")
                    }
                    s => s.map(|groups| {
                        let mut d = pick_groups(groups, summary, opts);
                        // Older runs have no captions.parquet: nothing to show, not an error.
                        d.captions = read_captions(&files.dedup_captions()).unwrap_or_default();
                        d
                    }),
                }
            }
            Stage::NotRun => Stage::NotRun,
            Stage::Failed(e) => Stage::Failed(e),
        };
        let dedup = unless_foreign(run, dedup, layout::DEDUP_SUMMARY, "dedup");
        let captions: HashMap<u64, Option<String>> =
            run.meta.id.iter().copied().zip(run.meta.caption.iter().cloned()).collect();
        let pairs = match Stage::read(&files.pairs_summary(), json::<PairsSummary>) {
            Stage::Ready(summary) => match Stage::read(&files.pairs(), read_pairs).ready_or_failed() {
                Stage::Ready(all) if all.iter().any(|p| uri_of.get(&p.id) != Some(&p.uri.as_str())) => {
                    stale(layout::PAIRS, "score")
                }
                s => s.map(|all| pick_pairs(all, summary, &captions, opts.pairs)),
            },
            Stage::NotRun => Stage::NotRun,
            Stage::Failed(e) => Stage::Failed(e),
        };
        let pairs = unless_foreign(run, pairs, layout::PAIRS_SUMMARY, "score");
        let c = &run.manifest.counts;
        let diversity = match Stage::read(&files.diversity(), json::<Diversity>) {
            Stage::Ready(d) if (d.embedded as u64, d.with_caption as u64) != (c.embedded, c.with_caption) => {
                stale(layout::DIVERSITY, "diversity")
            }
            s => s,
        };
        let diversity = unless_foreign(run, diversity, layout::DIVERSITY, "diversity");
        let quality = match Stage::read(&files.quality_summary(), json::<Quality>) {
            Stage::Ready(q) if q.records != quality::UNKNOWN && q.records as u64 != c.records => {
                stale(layout::QUALITY_SUMMARY, "quality")
            }
            s => s,
        };
        let quality = unless_foreign(run, quality, layout::QUALITY_SUMMARY, "quality");
        let audit = match Stage::read(&files.audit_summary(), json::<Audit>) {
            Stage::Ready(a) if a.embedded as u64 != c.embedded => stale(layout::AUDIT_SUMMARY, "audit"),
            s => s,
        };
        let audit = unless_foreign(run, audit, layout::AUDIT_SUMMARY, "audit");
        let nn = nearest_neighbours(run, opts, &dedup)?;

        let mut skipped = Vec::new();
        if run.manifest.counts.skipped > 0 {
            let reasons = run.column_strings("reason")?;
            let errors = run.column_strings("error")?;
            for r in (0..run.meta.len()).filter(|&r| !run.meta.embedded[r]).take(opts.skipped) {
                skipped.push(Skipped {
                    uri: run.meta.uri[r].clone(),
                    reason: reasons[r].clone().unwrap_or_else(|| "unknown".into()),
                    error: errors[r].clone(),
                });
            }
        }
        Ok(Self { dedup, pairs, diversity, quality, audit, nn, skipped })
    }

    /// Uris of the items shown with a thumbnail, in page order (with repeats).
    pub fn shown_uris(&self) -> Vec<String> {
        let mut uris = Vec::new();
        if let Some(d) = self.dedup.ready() {
            for g in d.largest.iter().chain(&d.borderline) {
                uris.extend(g.members.iter().map(|m| m.uri.clone()));
            }
        }
        if let Some(p) = self.pairs.ready() {
            uris.extend(p.lowest.iter().chain(&p.outranked).map(|p| p.uri.clone()));
        }
        if let Some(a) = self.audit.ready() {
            for g in &a.audit {
                for c in &g.concepts {
                    uris.extend(g.examples.get(c).into_iter().flatten().map(|e| e.uri.clone()));
                }
                uris.extend(g.disagreements.iter().map(|d| d.uri.clone()));
            }
        }
        uris
    }

    pub fn sections(&self) -> Vec<Section> {
        fn section<T>(name: &'static str, stage: &Stage<T>, cmd: &str) -> Section {
            match stage {
                Stage::Ready(_) => Section { name, present: true, note: None },
                Stage::NotRun => Section { name, present: false, note: Some(not_run(cmd)) },
                Stage::Failed(e) => Section { name, present: false, note: Some(e.clone()) },
            }
        }
        let mut all = vec![
            Section { name: "summary", present: true, note: None },
            section("duplicates", &self.dedup, "dedup"),
            section("pairs", &self.pairs, "score"),
            Section {
                name: "plots",
                present: self.pairs.ready().is_some() || self.nn.is_some(),
                note: self.nn.is_none().then(|| "fewer than two embedded images".to_string()),
            },
            section("diversity", &self.diversity, "diversity"),
            section("quality", &self.quality, "quality"),
            Section { name: "skipped", present: true, note: None },
        ];
        // The audit needs a concept file: its section is there only when it was run.
        if !matches!(self.audit, Stage::NotRun) {
            all.insert(all.len() - 1, section("audit", &self.audit, "audit"));
        }
        all
    }
}

/// The note shown for a stage that has not been run.
pub fn not_run(cmd: &str) -> String {
    format!("not run (run `sieve {cmd} RUN`)")
}

impl<T> Stage<T> {
    fn ready_or_failed(self) -> Stage<T> {
        match self {
            Stage::NotRun => Stage::Failed("its output file is missing; rerun the stage".into()),
            s => s,
        }
    }

    fn map<U>(self, f: impl FnOnce(T) -> U) -> Stage<U> {
        match self {
            Stage::Ready(t) => Stage::Ready(f(t)),
            Stage::NotRun => Stage::NotRun,
            Stage::Failed(e) => Stage::Failed(e),
        }
    }
}
