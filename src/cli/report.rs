//! `sieve report`.

use std::path::PathBuf;

use clap::Args;
use sieve::report::{ReportOptions, ReportSummary};
use sieve::store::lock::{Mode, RunLock};

use super::{print_json, Global};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run directory (made by `sieve embed`; dedup, score, diversity and quality add sections).
    pub run: PathBuf,

    /// Where to write the page [default: RUN/report.html].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Duplicate groups shown in each list (the largest; those nearest the threshold).
    #[arg(long, default_value_t = sieve::report::DEFAULT_GROUPS)]
    pub groups: usize,

    /// Pairs shown in each list (the lowest-scoring; the outranked).
    #[arg(long, default_value_t = sieve::report::DEFAULT_PAIRS)]
    pub pairs: usize,

    /// Skipped files listed by name (the counts by reason are always complete).
    #[arg(long, default_value_t = sieve::report::DEFAULT_SKIPPED)]
    pub skipped: usize,

    /// Most thumbnails embedded in the page (about 5 KB each); further items get a placeholder.
    #[arg(long, default_value_t = sieve::report::DEFAULT_MAX_THUMBNAILS)]
    pub max_thumbnails: usize,

    /// Images whose nearest neighbour is searched for the similarity histogram: all of them up
    /// to this many, a seeded sample beyond (0: no histogram).
    #[arg(long, default_value_t = sieve::report::DEFAULT_NN_SAMPLE)]
    pub nn_sample: usize,
}

impl From<&ReportArgs> for ReportOptions {
    fn from(a: &ReportArgs) -> Self {
        ReportOptions {
            out: a.out.clone(),
            groups: a.groups,
            pairs: a.pairs,
            skipped: a.skipped,
            max_thumbnails: a.max_thumbnails,
            nn_sample: a.nn_sample,
            ..ReportOptions::new(&a.run)
        }
    }
}

pub fn execute(args: ReportArgs, g: Global) -> anyhow::Result<()> {
    let opts = ReportOptions::from(&args);
    let _lock = RunLock::acquire(&opts.run, Mode::Shared, "sieve report")?;
    let s = sieve::report::report(&opts)?;
    print_summary(&s);
    print_json(g, &s)
}

/// Size, thumbnails and the sections left empty (report and run).
pub fn print_summary(s: &ReportSummary) {
    eprintln!(
        "sieve report: {} KB, {} thumbnails ({} placeholders) in {:.1}s -> {}",
        s.bytes.div_ceil(1024),
        s.thumbnails,
        s.placeholders,
        s.seconds,
        s.path.display()
    );
    for section in s.sections.iter().filter(|s| !s.present) {
        eprintln!("  {:<11} {}", section.name, section.note.as_deref().unwrap_or("empty"));
    }
}
