//! `sieve run`: the main job in one command — embed, then dedup, score, quality, diversity and
//! the report over the same run directory — resumable.
//!
//! Embedding resumes part by part (see [`crate::pipeline::embed`]). For the later stages,
//! `RUN/stages.json` records each finished stage: the options it ran with and the SHA-256 of
//! the file it writes last. Rerunning the same command skips a stage whose record matches (same
//! options, output unchanged) and runs it again otherwise, together with every stage after it;
//! when embedding did any work, every later stage runs again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::analyze::{dedup, diversity, pairs, quality};
use crate::error::Result;
use crate::pipeline::{self, EmbedOptions};
use crate::report;
use crate::store::{self, layout, Layout, RunManifest};

/// File in the run directory recording the finished stages.
pub const STAGES_FILE: &str = layout::STAGES_JSON;

/// The stages after embedding, in the order they run.
pub const STAGES: [&str; 5] = ["dedup", "score", "quality", "diversity", "report"];

/// Everything `sieve run` does; a stage set to `None` is left out.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub embed: EmbedOptions,
    pub dedup: Option<dedup::DedupOptions>,
    pub score: Option<pairs::ScoreOptions>,
    pub quality: Option<quality::QualityOptions>,
    pub diversity: Option<diversity::DiversityOptions>,
    /// The page, made last from what the stages before wrote.
    pub report: Option<report::ReportOptions>,
}

/// What happened to one stage.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageStatus {
    /// Ran in this invocation.
    Ran,
    /// Already done by an earlier invocation of the same command.
    Done,
    /// Left out (`--skip`).
    Skipped,
}

/// The summary of one stage, as its own command reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Stage<T> {
    pub status: StageStatus,
    pub seconds: f64,
    /// The stage's summary (absent when skipped, or done earlier: then read its output file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<T>,
}

/// What `sieve run` did (printed by `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run: PathBuf,
    pub embed: EmbedStage,
    pub dedup: Stage<dedup::Summary>,
    pub score: Stage<pairs::Summary>,
    pub quality: Stage<quality::Summary>,
    pub diversity: Stage<diversity::Report>,
    pub report: Stage<report::ReportSummary>,
}

/// The embedding stage's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedStage {
    pub status: StageStatus,
    pub seconds: f64,
    /// Rows an interrupted earlier invocation had written.
    pub resumed_rows: usize,
    pub manifest: RunManifest,
}

/// `RUN/stages.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct StageRecords {
    /// The fingerprint of the run the stages were computed from (absent in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run_fingerprint: Option<String>,
    stages: BTreeMap<String, StageRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct StageRecord {
    /// The stage's options, as `{:?}` prints them (the run path left out).
    options: String,
    /// The file the stage writes last, relative to the run.
    output: String,
    output_sha256: String,
    seconds: f64,
}

impl StageRecords {
    fn load(run: &Path) -> Self {
        let path = Layout::new(run).stages_json();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!("{}: unreadable ({e}); every stage runs again", path.display());
                Self::default()
            }),
            Err(_) => Self::default(),
        }
    }

    fn save(&self, run: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("stage records serialise");
        store::write_atomic(&Layout::new(run).stages_json(), |w| std::io::Write::write_all(w, &json))
    }

    /// Whether `stage` finished with `options` and its output is still the one it wrote.
    fn is_done(&self, run: &Path, stage: &str, options: &str) -> bool {
        let Some(r) = self.stages.get(stage) else { return false };
        r.options == options && store::sha256_file(&run.join(&r.output)).is_ok_and(|sha| sha == r.output_sha256)
    }
}

/// The options of a stage as recorded: their `Debug` form with the run path left out, so that a
/// moved run directory still matches.
fn fingerprint(options: &impl std::fmt::Debug, run: &Path) -> String {
    format!("{options:?}").replace(&format!("{:?}", run), "RUN")
}

/// Runs every stage of `opts` in order, skipping what an earlier invocation of the same command
/// finished. `on_stage` is told each stage's name before it runs (for the terminal).
pub fn run(opts: &RunOptions, mut on_stage: impl FnMut(&str, &StageStatus)) -> Result<RunSummary> {
    let run = opts.embed.out.clone();
    on_stage("embed", &StageStatus::Ran);
    let t = Instant::now();
    let outcome = pipeline::embed(&opts.embed)?;
    let embed = EmbedStage {
        status: if outcome.already_complete { StageStatus::Done } else { StageStatus::Ran },
        seconds: t.elapsed().as_secs_f64(),
        resumed_rows: outcome.resumed_rows,
        manifest: outcome.manifest,
    };
    if outcome.already_complete {
        on_stage("embed", &StageStatus::Done);
    }

    let run_fingerprint = store::read_manifest_and_fingerprint(&run)?.1;
    let mut records = if outcome.already_complete { StageRecords::load(&run) } else { StageRecords::default() };
    if records.run_fingerprint.as_ref().is_some_and(|f| *f != run_fingerprint) {
        tracing::warn!(
            "{}: the stages recorded there were computed from another run; every stage runs again",
            Layout::new(&run).stages_json().display()
        );
        records = StageRecords::default();
    }
    records.run_fingerprint = Some(run_fingerprint);
    // Once a stage runs, every later one runs too (it may read what the earlier one wrote).
    let mut stale = !outcome.already_complete;
    if stale {
        records.save(&run)?;
    }

    macro_rules! stage {
        ($name:literal, $opts:expr, $output:expr, $call:expr) => {{
            match $opts {
                None => {
                    on_stage($name, &StageStatus::Skipped);
                    Stage { status: StageStatus::Skipped, seconds: 0.0, summary: None }
                }
                Some(o) => {
                    let options = fingerprint(o, &run);
                    if !stale && records.is_done(&run, $name, &options) {
                        on_stage($name, &StageStatus::Done);
                        Stage { status: StageStatus::Done, seconds: 0.0, summary: None }
                    } else {
                        stale = true;
                        on_stage($name, &StageStatus::Ran);
                        records.stages.remove($name);
                        records.save(&run)?;
                        let t = Instant::now();
                        let summary = $call(o)?;
                        let seconds = t.elapsed().as_secs_f64();
                        let output: &str = $output;
                        let output_sha256 = store::sha256_file(&Layout::new(&run).file(output))?;
                        records.stages.insert(
                            $name.to_string(),
                            StageRecord { options, output: output.to_string(), output_sha256, seconds },
                        );
                        records.save(&run)?;
                        Stage { status: StageStatus::Ran, seconds, summary: Some(summary) }
                    }
                }
            }
        }};
    }

    let dedup = stage!("dedup", &opts.dedup, layout::DEDUP_SUMMARY, dedup::dedup);
    let score = stage!("score", &opts.score, layout::PAIRS_SUMMARY, pairs::score);
    let quality = stage!("quality", &opts.quality, layout::QUALITY_SUMMARY, quality::quality);
    let diversity = stage!("diversity", &opts.diversity, layout::DIVERSITY, diversity::diversity);
    let report_out = opts.report.as_ref().map(|o| o.out_path()).unwrap_or_default();
    let report_out = report_out.strip_prefix(&run).unwrap_or(&report_out).to_string_lossy().into_owned();
    let report = stage!("report", &opts.report, &report_out, report::report);
    let _ = stale;
    Ok(RunSummary { run, embed, dedup, score, quality, diversity, report })
}
