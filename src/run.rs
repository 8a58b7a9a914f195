//! `sieve run`: the main job in one command — embed, then dedup, score, quality, diversity, the
//! concept audit (with `--concepts`) and the report over the same run directory — resumable.
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
use crate::audit;
use crate::error::Result;
use crate::pipeline::{self, EmbedOptions};
use crate::report;
use crate::store::{self, layout, Layout, RunManifest};

/// File in the run directory recording the finished stages.
pub const STAGES_FILE: &str = layout::STAGES_JSON;

/// The stages after embedding, in the order they run.
pub const STAGES: [&str; 6] = ["dedup", "score", "quality", "diversity", "audit", "report"];

/// Everything `sieve run` does; a stage set to `None` is left out.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub embed: EmbedOptions,
    pub dedup: Option<dedup::DedupOptions>,
    pub score: Option<pairs::ScoreOptions>,
    pub quality: Option<quality::QualityOptions>,
    pub diversity: Option<diversity::DiversityOptions>,
    /// The concept audit (`--concepts`).
    pub audit: Option<audit::AuditOptions>,
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

/// The outcome of one stage, as its own command reports it.
#[derive(Debug, Clone, Serialize)]
pub struct StageOutcome<T> {
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
    pub dedup: StageOutcome<dedup::Summary>,
    pub score: StageOutcome<pairs::Summary>,
    pub quality: StageOutcome<quality::Summary>,
    pub diversity: StageOutcome<diversity::Report>,
    pub audit: StageOutcome<audit::summary::Summary>,
    pub report: StageOutcome<report::ReportSummary>,
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
    /// The stage's options as JSON (the run path written `RUN`), see [`fingerprint`].
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

/// The options of a stage as recorded: their JSON (fields in declaration order, so stable across
/// builds, unlike `Debug`), with the run path written `RUN` so that a moved run directory still
/// matches. Records written by sieves that used the `Debug` form never match: a rerun over such
/// a run recomputes its stages once.
fn fingerprint(options: &impl Serialize, run: &Path) -> String {
    let json = serde_json::to_string(options).expect("stage options serialise");
    let run = serde_json::to_string(&run.to_string_lossy()).expect("a string serialises");
    json.replace(&run, "\"RUN\"")
}

/// A stage after embedding, as [`run`] drives it: its name (as `stages.json` and `--skip` know
/// it), its options (`None`: left out), the file it writes last (relative to the run; its
/// checksum tells whether the output is still the one recorded) and the call that runs it.
pub struct Stage<'a, O, S> {
    pub name: &'static str,
    pub options: Option<&'a O>,
    pub output: String,
    pub call: fn(&O) -> Result<S>,
}

/// What the stages share while [`run`] drives them: the run, its records, and whether an
/// earlier stage ran (then every later one runs too: it may read what the earlier one wrote).
struct Driver<'r, F> {
    run: &'r Path,
    records: StageRecords,
    stale: bool,
    on_stage: F,
}

impl<F: FnMut(&str, &StageStatus)> Driver<'_, F> {
    /// Runs `stage` unless an earlier invocation finished it with the same options and its
    /// output is unchanged; records it in `stages.json` when it runs.
    fn drive<O: Serialize, S>(&mut self, stage: Stage<'_, O, S>) -> Result<StageOutcome<S>> {
        let Some(o) = stage.options else {
            (self.on_stage)(stage.name, &StageStatus::Skipped);
            return Ok(StageOutcome { status: StageStatus::Skipped, seconds: 0.0, summary: None });
        };
        let options = fingerprint(o, self.run);
        if !self.stale && self.records.is_done(self.run, stage.name, &options) {
            (self.on_stage)(stage.name, &StageStatus::Done);
            return Ok(StageOutcome { status: StageStatus::Done, seconds: 0.0, summary: None });
        }
        crate::progress::check_cancel()?;
        self.stale = true;
        (self.on_stage)(stage.name, &StageStatus::Ran);
        self.records.stages.remove(stage.name);
        self.records.save(self.run)?;
        let t = Instant::now();
        let summary = (stage.call)(o)?;
        let seconds = t.elapsed().as_secs_f64();
        let output_sha256 = store::sha256_file(&Layout::new(self.run).file(&stage.output))?;
        self.records
            .stages
            .insert(stage.name.to_string(), StageRecord { options, output: stage.output, output_sha256, seconds });
        self.records.save(self.run)?;
        Ok(StageOutcome { status: StageStatus::Ran, seconds, summary: Some(summary) })
    }
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
    let stale = !outcome.already_complete;
    if stale {
        records.save(&run)?;
    }

    let mut driver = Driver { run: &run, records, stale, on_stage };
    let dedup = driver.drive(Stage {
        name: "dedup",
        options: opts.dedup.as_ref(),
        output: layout::DEDUP_SUMMARY.into(),
        call: dedup::dedup,
    })?;
    let score = driver.drive(Stage {
        name: "score",
        options: opts.score.as_ref(),
        output: layout::PAIRS_SUMMARY.into(),
        call: pairs::score,
    })?;
    let quality = driver.drive(Stage {
        name: "quality",
        options: opts.quality.as_ref(),
        output: layout::QUALITY_SUMMARY.into(),
        call: quality::quality,
    })?;
    let diversity = driver.drive(Stage {
        name: "diversity",
        options: opts.diversity.as_ref(),
        output: layout::DIVERSITY.into(),
        call: diversity::diversity,
    })?;
    let audit = driver.drive(Stage {
        name: "audit",
        options: opts.audit.as_ref(),
        output: layout::AUDIT_SUMMARY.into(),
        call: audit::audit,
    })?;
    // The page goes where --out says; recorded relative to the run when it is inside it.
    let report_out = opts.report.as_ref().map(|o| o.out_path()).unwrap_or_default();
    let report_out = report_out.strip_prefix(&run).unwrap_or(&report_out).to_string_lossy().into_owned();
    let report = driver.drive(Stage {
        name: "report",
        options: opts.report.as_ref(),
        output: report_out,
        call: report::report,
    })?;
    Ok(RunSummary { run, embed, dedup, score, quality, diversity, audit, report })
}
