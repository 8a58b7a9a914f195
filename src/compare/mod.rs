//! `sieve compare A B`: how run B differs from run A, per modality (image embeddings always,
//! caption embeddings when both runs have them). Both runs must come from the same encoder
//! weights: embeddings of different encoders live in different spaces.
//!
//! Each run is sampled (seeded, at most `sample` items per modality) and every figure is taken
//! on the samples, so the cost does not grow with the runs: reading a sample touches only the
//! parts holding sampled rows, one at a time.
//!
//! - **CMMD** ([`cmmd`]): the MMD of the embeddings under the CMMD paper's Gaussian kernel, and a
//!   permutation p-value.
//! - **Coverage** ([`coverage`]): the share of B's items whose nearest A item has cosine ≥ the
//!   threshold (by default the model's semantic-duplicate threshold, as `sieve dedup` uses),
//!   and of A by B.
//! - **Regions** ([`regions`]): k-means clusters of the pooled samples that one side holds and
//!   the other does not (novel: B's; vanished: A's), with example items.
//! - **Concepts**: when both runs hold an `audit_summary.json` (`sieve audit`), its concept
//!   shares side by side.

pub mod cmmd;
pub mod coverage;
pub mod html;
pub mod overlap;
pub mod regions;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::index::Matrix;
use crate::model::registry;
use crate::store::Run;

/// Default items sampled from each run, per modality.
pub const DEFAULT_SAMPLE: usize = 10_000;
/// A p-value under this is a shift.
pub const ALPHA: f64 = 0.05;
/// The file `sieve audit` writes into a run, read here leniently for its `concepts`.
pub const AUDIT_SUMMARY: &str = "audit_summary.json";

/// How to compare.
#[derive(Debug, Clone, Serialize)]
pub struct CompareOptions {
    /// Items sampled from each run, per modality.
    pub sample: usize,
    /// Relabellings in the permutation test.
    pub permutations: usize,
    /// Cosine at or above which an item counts as covered; `None`: the model's semantic-duplicate
    /// threshold for each modality (`models/registry.json`).
    pub threshold: Option<f32>,
    /// k-means clusters for the regions.
    pub clusters: usize,
    pub seed: u64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        Self {
            sample: DEFAULT_SAMPLE,
            permutations: cmmd::DEFAULT_PERMUTATIONS,
            threshold: None,
            clusters: regions::DEFAULT_CLUSTERS,
            seed: 0,
        }
    }
}

/// One run, as compared.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub run: String,
    pub run_fingerprint: String,
    pub embedded: usize,
    pub with_caption: usize,
}

/// An item shown for a region.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Example {
    pub id: u64,
    pub uri: String,
    pub caption: Option<String>,
}

/// A region one side holds and the other lacks.
#[derive(Debug, Clone, Serialize)]
pub struct Region {
    #[serde(flatten)]
    pub cluster: regions::Cluster,
    /// Share of the region's items (on the side that holds it) covered by the other side.
    pub covered: f64,
    /// Items of the side that holds it, nearest the cluster's centre first.
    pub examples: Vec<Example>,
}

/// The figures of one modality.
#[derive(Debug, Clone, Serialize)]
pub struct Modality {
    /// `image` or `caption`.
    pub space: &'static str,
    /// Items sampled from A and from B.
    pub sampled_a: usize,
    pub sampled_b: usize,
    /// CMMD of the samples (unbiased; `biased` as google-research/cmmd computes it).
    pub cmmd: f64,
    pub cmmd_biased: f64,
    pub test: cmmd::PermutationTest,
    pub shift: bool,
    pub threshold: f32,
    /// B's items covered by A, and A's by B.
    pub coverage_b_by_a: coverage::Coverage,
    pub coverage_a_by_b: coverage::Coverage,
    pub clusters: usize,
    pub novel: Vec<Region>,
    pub vanished: Vec<Region>,
}

/// One concept's shares in each run's audit.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConceptShare {
    pub concept: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
}

/// The comparison, as `--json` prints it and `compare.json` holds it.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub sieve_version: String,
    pub model: String,
    pub a: Side,
    pub b: Side,
    pub options: CompareOptions,
    pub modalities: Vec<Modality>,
    /// Why a modality was left out (e.g. an image-only model has no caption embeddings).
    pub notes: Vec<String>,
    /// Concept shares side by side, when both runs were audited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concepts: Option<Vec<ConceptShare>>,
    pub verdict: String,
}

/// A seeded sample of one run's vectors in one space.
pub struct Sample {
    /// Metadata rows, ascending.
    pub rows: Vec<usize>,
    /// Their vectors, L2-normalised in f32.
    pub vectors: Matrix,
}

/// At most `n` of `run`'s embedded items (with a caption vector, for `text`), drawn with `seed`;
/// reads only the parts that hold sampled rows, one at a time.
pub fn sample(run: &Run, text: bool, n: usize, seed: u64) -> Result<Sample> {
    let d = run.manifest.embed_dim;
    let eligible: Vec<usize> =
        (0..run.meta.len()).filter(|&g| run.meta.embedded[g] && (!text || run.meta.caption[g].is_some())).collect();
    let picked: Vec<usize> = if eligible.len() <= n {
        eligible
    } else {
        let mut idx = rand::seq::index::sample(&mut StdRng::seed_from_u64(seed), eligible.len(), n).into_vec();
        idx.sort_unstable();
        idx.into_iter().map(|i| eligible[i]).collect()
    };
    let mut rows = Vec::with_capacity(picked.len());
    let mut data = Vec::with_capacity(picked.len() * d);
    let (mut start, mut k) = (0, 0);
    for (p, &count) in run.part_rows.iter().enumerate() {
        let end = start + count;
        if k < picked.len() && picked[k] < end {
            let values = run.embedding_part(text, p)?;
            while k < picked.len() && picked[k] < end {
                let v = &values[(picked[k] - start) * d..(picked[k] - start + 1) * d];
                // A caption without a vector (an image-only model's zero row) is no sample.
                if v.iter().any(|&x| x != 0.0) {
                    rows.push(picked[k]);
                    data.extend_from_slice(v);
                }
                k += 1;
            }
        }
        start = end;
    }
    let mut vectors = Matrix::new(d, data)?;
    crate::analyze::diversity::normalise_rows(&mut vectors);
    Ok(Sample { rows, vectors })
}

fn side(run: &Run) -> Side {
    Side {
        run: run.dir.display().to_string(),
        run_fingerprint: run.fingerprint.clone(),
        embedded: run.manifest.counts.embedded as usize,
        with_caption: run.manifest.counts.with_caption as usize,
    }
}

/// Refuses two runs whose embeddings are not comparable.
pub fn check_same_space(a: &Run, b: &Run) -> Result<()> {
    let (ma, mb) = (&a.manifest.model, &b.manifest.model);
    if ma.weights_sha256 != mb.weights_sha256 || a.manifest.embed_dim != b.manifest.embed_dim {
        return Err(Error::InvalidArg {
            what: "A and B",
            reason: format!(
                "{} was embedded with {} (weights {}) and {} with {} (weights {}): embeddings of different \
                 encoders live in different spaces and cannot be compared; embed both with one model",
                a.dir.display(),
                ma.id,
                short(&ma.weights_sha256),
                b.dir.display(),
                mb.id,
                short(&mb.weights_sha256)
            ),
        });
    }
    Ok(())
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// Compares run `b` with run `a`.
pub fn compare(a: &Run, b: &Run, opts: &CompareOptions) -> Result<Comparison> {
    if opts.sample < 2 {
        return Err(Error::InvalidArg { what: "--sample", reason: "must be at least 2".into() });
    }
    if opts.clusters == 0 {
        return Err(Error::InvalidArg { what: "--clusters", reason: "must be at least 1".into() });
    }
    if let Some(t) = opts.threshold {
        if !(-1.0..=1.0).contains(&t) {
            return Err(Error::InvalidArg { what: "--threshold", reason: format!("{t} is not a cosine in [-1, 1]") });
        }
    }
    check_same_space(a, b)?;
    let model = a.manifest.model.id.clone();
    let defaults = registry::dedup_defaults(&model);
    let mut modalities = Vec::new();
    let mut notes = Vec::new();
    for text in [false, true] {
        if text {
            let lacks = |r: &Run| {
                if !r.manifest.model.family.has_text() {
                    Some(format!("{} was embedded with an image-only model ({})", r.dir.display(), r.manifest.model.id))
                } else if r.manifest.counts.with_caption == 0 {
                    Some(format!("{} holds no captions", r.dir.display()))
                } else {
                    None
                }
            };
            if let Some(why) = lacks(a).or_else(|| lacks(b)) {
                notes.push(format!("caption: not compared: {why}"));
                continue;
            }
        }
        let threshold = opts.threshold.unwrap_or(if text { defaults.caption } else { defaults.image });
        modalities.push(modality(a, b, text, threshold, opts)?);
    }
    let concepts = concepts(&a.dir, &b.dir);
    let verdict = verdict(&modalities);
    Ok(Comparison {
        sieve_version: env!("CARGO_PKG_VERSION").to_string(),
        model,
        a: side(a),
        b: side(b),
        options: opts.clone(),
        modalities,
        notes,
        concepts,
        verdict,
    })
}

fn modality(a: &Run, b: &Run, text: bool, threshold: f32, opts: &CompareOptions) -> Result<Modality> {
    let space = if text { "caption" } else { "image" };
    let (sa, sb) = (sample(a, text, opts.sample, opts.seed)?, sample(b, text, opts.sample, opts.seed)?);
    if sa.rows.len() < 2 || sb.rows.len() < 2 {
        return Err(Error::InvalidArg {
            what: "A and B",
            reason: format!(
                "{space} embeddings: A has {} and B {} items; comparing needs at least 2 on each side",
                sa.rows.len(),
                sb.rows.len()
            ),
        });
    }
    let (x, y) = (&sa.vectors, &sb.vectors);
    tracing::info!("compare {space}: CMMD of {} and {} items", x.rows(), y.rows());
    let value = cmmd::cmmd(x, y);
    let cap = cmmd::PERMUTATION_SAMPLE;
    let sub = |m: &Matrix, salt: u64| -> Matrix {
        if m.rows() <= cap {
            return m.clone();
        }
        let mut idx = rand::seq::index::sample(&mut StdRng::seed_from_u64(opts.seed ^ salt), m.rows(), cap).into_vec();
        idx.sort_unstable();
        Matrix::gather(m.as_slice(), m.dim(), &idx)
    };
    let test = cmmd::permutation_test(&sub(x, 1), &sub(y, 1), opts.permutations, opts.seed);
    tracing::info!("compare {space}: coverage and regions");
    let near_b = coverage::nearest(y, x);
    let near_a = coverage::nearest(x, y);
    let k = opts.clusters.min((x.rows() + y.rows()) / regions::MIN_CLUSTER_ITEMS).max(1);
    let clustering = regions::cluster(x, y, k, opts.seed)?;
    let region = |c: &regions::Cluster, run: &Run, s: &Sample, assigned: &[(u32, f32)], near: &[f32]| {
        let members: Vec<usize> = (0..assigned.len()).filter(|&i| assigned[i].0 as usize == c.cluster).collect();
        let covered = members.iter().filter(|&&i| near[i] >= threshold).count();
        let examples = regions::examples(assigned, c.cluster, regions::EXAMPLES)
            .into_iter()
            .map(|i| {
                let g = s.rows[i];
                Example { id: run.meta.id[g], uri: run.meta.uri[g].clone(), caption: run.meta.caption[g].clone() }
            })
            .collect();
        Region {
            cluster: c.clone(),
            covered: if members.is_empty() { 1.0 } else { covered as f64 / members.len() as f64 },
            examples,
        }
    };
    let mut novel = Vec::new();
    let mut vanished = Vec::new();
    for c in &clustering.clusters {
        if regions::lacking(c.share_b, c.items_b, c.share_a) {
            novel.push(region(c, b, &sb, &clustering.assigned_b, &near_b));
        }
        if regions::lacking(c.share_a, c.items_a, c.share_b) {
            vanished.push(region(c, a, &sa, &clustering.assigned_a, &near_a));
        }
    }
    // Largest first.
    novel.sort_by(|p, q| q.cluster.share_b.total_cmp(&p.cluster.share_b));
    vanished.sort_by(|p, q| q.cluster.share_a.total_cmp(&p.cluster.share_a));
    Ok(Modality {
        space,
        sampled_a: x.rows(),
        sampled_b: y.rows(),
        cmmd: value.unbiased,
        cmmd_biased: value.biased,
        shift: test.p_value < ALPHA,
        test,
        threshold,
        coverage_b_by_a: coverage::coverage(&near_b, threshold),
        coverage_a_by_b: coverage::coverage(&near_a, threshold),
        clusters: clustering.clusters.len(),
        novel,
        vanished,
    })
}

/// Writes `dir/compare.json` and `dir/compare.html` (creating `dir`), each atomically.
pub fn write(dir: &Path, c: &Comparison, a: &Run, b: &Run) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let json = serde_json::to_vec_pretty(c).expect("the comparison serialises");
    crate::store::write_atomic(&dir.join("compare.json"), |w| std::io::Write::write_all(w, &json))?;
    let page = html::page(c, a, b);
    crate::store::write_atomic(&dir.join("compare.html"), |w| std::io::Write::write_all(w, page.as_bytes()))
}

/// One line: no shift, or where the shift is.
pub fn verdict(modalities: &[Modality]) -> String {
    let shifted: Vec<&Modality> = modalities.iter().filter(|m| m.shift).collect();
    if shifted.is_empty() {
        let ps: Vec<String> = modalities.iter().map(|m| format!("{} p={:.3}", m.space, m.test.p_value)).collect();
        return format!("no shift beyond noise ({})", ps.join(", "));
    }
    let parts: Vec<String> = shifted
        .iter()
        .map(|m| {
            format!(
                "{} p={:.3} (CMMD {:.3}), novel regions: {}, vanished regions: {}",
                m.space,
                m.test.p_value,
                m.cmmd,
                m.novel.len(),
                m.vanished.len()
            )
        })
        .collect();
    format!("shift: {}", parts.join("; "))
}

/// Concept shares side by side when both runs hold the summary `sieve audit` writes: its
/// `groups` map (`{"lighting": {"daylight": 0.6, "night": 0.3, "none": 0.1}}`, image-side
/// shares), one row per `group: concept`. `None` when either run lacks one (or it is unreadable).
pub fn concepts(a: &Path, b: &Path) -> Option<Vec<ConceptShare>> {
    let (ca, cb) = (read_concepts(&a.join(AUDIT_SUMMARY))?, read_concepts(&b.join(AUDIT_SUMMARY))?);
    let names: std::collections::BTreeSet<&String> = ca.keys().chain(cb.keys()).collect();
    Some(
        names
            .into_iter()
            .map(|n| ConceptShare { concept: n.clone(), a: ca.get(n).copied(), b: cb.get(n).copied() })
            .collect(),
    )
}

fn read_concepts(path: &PathBuf) -> Option<BTreeMap<String, f64>> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let mut out = BTreeMap::new();
    for (group, shares) in v.get("groups")?.as_object()? {
        for (concept, share) in shares.as_object()? {
            out.insert(format!("{group}: {concept}"), share.as_f64()?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concepts_are_read_from_the_audit_groups_and_absent_without_both_audits() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join(AUDIT_SUMMARY), r#"{"groups": {"animal": {"dog": 0.5, "cat": 0.25, "none": 0.25}}}"#)
            .unwrap();
        assert_eq!(concepts(&a, &b), None);
        std::fs::write(
            b.join(AUDIT_SUMMARY),
            r#"{"groups": {"animal": {"dog": 0.1, "none": 0.9}, "thing": {"car": 0.3, "none": 0.7}}}"#,
        )
        .unwrap();
        let got = concepts(&a, &b).unwrap();
        let row = |c: &str, a, b| ConceptShare { concept: c.into(), a, b };
        assert_eq!(
            got,
            vec![
                row("animal: cat", Some(0.25), None),
                row("animal: dog", Some(0.5), Some(0.1)),
                row("animal: none", Some(0.25), Some(0.9)),
                row("thing: car", None, Some(0.3)),
                row("thing: none", None, Some(0.7)),
            ]
        );
    }
}
