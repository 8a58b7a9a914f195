//! `sieve run`: embed, then every later stage, with the flags of each stage shared with its own
//! command (flattened), so a flag means the same in both places.

use clap::{Args, ValueEnum};
use sieve::analyze::dedup::DedupOptions;
use sieve::analyze::diversity::DiversityOptions;
use sieve::analyze::quality::QualityOptions;
use sieve::audit::concepts::ConceptSet;
use sieve::audit::AuditOptions;
use sieve::error::{Error, Result};
use sieve::pipeline::EmbedOptions;
use sieve::report::ReportOptions;
use sieve::run::{RunOptions, StageStatus};
use sieve::store::lock::{Mode, RunLock};

use super::audit::MarginArgs;
use super::common::{search_options, IndexArg};
use super::dedup::{KeepArgs, MatchArgs, MemoryArgs};
use super::diversity::DiversityArgs;
use super::embed::EmbedArgs;
use super::score::FlagArgs;
use super::{invalid, print_json, Global};

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub embed: EmbedArgs,

    /// Stages to leave out, comma-separated: dedup, score, quality, diversity, report.
    #[arg(long, value_name = "STAGES", value_delimiter = ',', hide_possible_values = true)]
    pub skip: Vec<StageArg>,

    #[command(flatten, next_help_heading = "Dedup")]
    pub matching: MatchArgs,

    #[command(flatten, next_help_heading = "Dedup")]
    pub keeping: KeepArgs,

    #[command(flatten, next_help_heading = "Dedup")]
    pub memory: MemoryArgs,

    #[command(flatten, next_help_heading = "Score")]
    pub score: FlagArgs,

    /// Diversity and audit: also measure each group of this metadata column (e.g. `folder`).
    #[arg(long, value_name = "COLUMN", help_heading = "Diversity")]
    pub by: Option<String>,

    /// Audit: zero-shot concept coverage against this concept file, as `sieve audit --concepts`
    /// (left out without it).
    #[arg(long, value_name = "FILE", help_heading = "Audit")]
    pub concepts: Option<std::path::PathBuf>,

    #[command(flatten, next_help_heading = "Audit")]
    pub audit: MarginArgs,

    /// Dedup and score: neighbour search, auto, exact, clusters or hnsw.
    #[arg(long, default_value = "auto", help_heading = "Search", hide_possible_values = true)]
    pub index: IndexArg,

    /// Dedup and score: k-means clusters for clustered search (implies --index clusters).
    #[arg(long, value_name = "K", help_heading = "Search")]
    pub clusters: Option<usize>,

    /// Seed for every k-means and sample (the same seed gives the same outputs).
    #[arg(long, default_value_t = 0, help_heading = "Search")]
    pub seed: u64,
}

/// A stage after embedding, for `--skip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StageArg {
    Dedup,
    Score,
    Quality,
    Diversity,
    Report,
}

impl TryFrom<&RunArgs> for RunOptions {
    type Error = Error;

    /// Every stage's arguments are checked, also those of skipped stages: a typo fails now, not
    /// after an hour of embedding. The embedding shows a progress bar unless `--quiet`
    /// (a global flag, set by the caller).
    fn try_from(a: &RunArgs) -> Result<Self> {
        let wanted = |stage| !a.skip.contains(&stage);
        let run = a.embed.out.clone();
        let device = a.embed.model.device;
        let mut dedup = DedupOptions {
            index: a.index.into(),
            clusters: a.clusters,
            seed: a.seed,
            device,
            ..DedupOptions::new(run.clone())
        };
        if a.clusters == Some(0) {
            return Err(invalid("--clusters", "must be at least 1"));
        }
        a.matching.apply(&mut dedup)?;
        a.keeping.apply(&mut dedup);
        a.memory.apply(&mut dedup);
        let search = search_options(a.index, a.clusters, sieve::index::clustered::DEFAULT_PROBES, a.seed)?;
        let score = a.score.options(run.clone(), search, device)?;
        let diversity = DiversityOptions::try_from(&DiversityArgs::for_run(run.clone(), a.by.clone(), a.seed, device))?;
        let margin = a.audit.checked()?;
        let audit = match &a.concepts {
            Some(file) => Some(AuditOptions {
                margin,
                by: a.by.clone(),
                device,
                ..AuditOptions::new(run.clone(), ConceptSet::read(file)?)
            }),
            None => None,
        };
        Ok(RunOptions {
            embed: EmbedOptions::try_from(&a.embed)?,
            dedup: wanted(StageArg::Dedup).then_some(dedup),
            score: wanted(StageArg::Score).then_some(score),
            quality: wanted(StageArg::Quality).then(|| QualityOptions::new(run.clone())),
            diversity: wanted(StageArg::Diversity).then_some(diversity),
            audit,
            report: wanted(StageArg::Report).then(|| ReportOptions::new(run.clone())),
        })
    }
}

pub fn execute(args: RunArgs, g: Global) -> anyhow::Result<()> {
    let mut opts = RunOptions::try_from(&args)?;
    opts.embed.progress = !g.quiet;
    super::common::disable_fast_paths(&args.embed.model.cuda_disable);
    let run = opts.embed.out.clone();
    let _lock = RunLock::acquire(&run, Mode::Exclusive, "sieve run")?;
    let s = sieve::run::run(&opts, |stage, status| match status {
        StageStatus::Ran => {
            if stage == "dedup" {
                super::hand_back_large_frees();
            }
            eprintln!("sieve run: {stage}…")
        }
        StageStatus::Done => eprintln!("sieve run: {stage} already done with these options; skipped"),
        StageStatus::Skipped if stage == "audit" => {} // only with --concepts
        StageStatus::Skipped => eprintln!("sieve run: {stage} left out (--skip)"),
    })?;
    if s.embed.resumed_rows > 0 {
        eprintln!("sieve run: embedding resumed after {} records already written", s.embed.resumed_rows);
    }
    super::embed::print_summary("sieve embed", &s.embed.manifest, &run);
    if let Some(d) = &s.dedup.summary {
        super::dedup::print_summary("sieve dedup", d, &run);
    }
    if let Some(p) = &s.score.summary {
        super::score::print_summary(p, &run);
    }
    if let Some(q) = &s.quality.summary {
        super::quality::print_summary(q, &run);
    }
    if let Some(r) = &s.diversity.summary {
        super::diversity::print_summary(r, &run);
    }
    if let Some(a) = &s.audit.summary {
        super::audit::print_summary(a, &run);
    }
    if let Some(r) = &s.report.summary {
        super::report::print_summary(r);
    }
    print_json(g, &s)
}
