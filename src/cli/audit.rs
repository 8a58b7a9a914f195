//! `sieve audit`.

use std::path::{Path, PathBuf};

use clap::Args;
use sieve::audit::concepts::ConceptSet;
use sieve::audit::summary::Summary;
use sieve::audit::AuditOptions;
use sieve::device::DeviceSpec;
use sieve::error::Result;
use sieve::model::ModelSpec;
use sieve::store::lock::{Mode, RunLock};
use sieve::store::Layout;

use super::common::device;
use super::{invalid, print_json, Global};

/// The flags `sieve audit` shares with `sieve run`.
#[derive(Debug, Args)]
pub struct MarginArgs {
    /// Audit: an item gets its best concept of a group only when that concept's cosine leads the
    /// second best's by at least this much; otherwise it is `none` (docs/guide.md, "Concept
    /// coverage", says how the default was chosen).
    #[arg(long, value_name = "COSINE", default_value_t = sieve::audit::DEFAULT_MARGIN)]
    pub margin: f32,
}

impl MarginArgs {
    pub fn checked(&self) -> Result<f32> {
        if !(0.0..=2.0).contains(&self.margin) {
            return Err(invalid("--margin", format!("{} is not a cosine lead in [0, 2]", self.margin)));
        }
        Ok(self.margin)
    }
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Run directory (made by `sieve embed` with a model that has a text tower).
    pub run: PathBuf,

    /// The concept file: `GROUP: A | B | C` lines, or one concept a line (one group); `#`
    /// comments; `NAME = PROMPT` gives a concept its own prompt.
    #[arg(long, value_name = "FILE")]
    pub concepts: PathBuf,

    #[command(flatten)]
    pub margin: MarginArgs,

    /// Also count per value of this metadata column: `folder` (the folder part of the uri) or
    /// any text, integer or boolean column of RUN/metadata (at most 1,000 values).
    #[arg(long, value_name = "COLUMN")]
    pub by: Option<String>,

    /// Examples kept per concept in audit_summary.json (the report shows them).
    #[arg(long, default_value_t = sieve::audit::DEFAULT_EXAMPLES)]
    pub examples: usize,

    /// The model to embed the concepts with [default: the run's, from run.json]; its weights
    /// must be the run's.
    #[arg(long)]
    pub model: Option<String>,

    /// Hub revision of --model.
    #[arg(long)]
    pub revision: Option<String>,

    /// Compute device for the concept prompts: auto, cpu, cuda[:N] or metal[:N].
    #[arg(long, default_value = "auto", value_parser = device)]
    pub device: DeviceSpec,
}

impl TryFrom<&AuditArgs> for AuditOptions {
    type Error = sieve::error::Error;

    fn try_from(a: &AuditArgs) -> Result<Self> {
        Ok(AuditOptions {
            margin: a.margin.checked()?,
            by: a.by.clone(),
            examples: a.examples,
            model: a.model.clone().map(|m| ModelSpec::new(m, a.revision.clone())),
            device: a.device,
            ..AuditOptions::new(a.run.clone(), ConceptSet::read(&a.concepts)?)
        })
    }
}

pub fn execute(args: AuditArgs, g: Global) -> anyhow::Result<()> {
    let opts = AuditOptions::try_from(&args)?;
    let _lock = RunLock::acquire(&args.run, Mode::Shared, "sieve audit")?;
    let s = sieve::audit::audit(&opts)?;
    print_summary(&s, &opts.run);
    print_json(g, &s)
}

/// Per group: each concept's share of the images (and captions), the under-represented ones
/// and the agreement.
pub fn print_summary(s: &Summary, run: &Path) {
    let l = Layout::new(run);
    eprintln!(
        "sieve audit: {} embedded ({} with captions), {} groups, margin {} -> {}, {}",
        s.embedded,
        s.with_caption,
        s.audit.len(),
        s.margin,
        l.audit().display(),
        l.audit_summary().display()
    );
    for g in &s.audit {
        let line: Vec<String> = g
            .image
            .concepts
            .iter()
            .map(|c| {
                let cap = g.caption.as_ref().and_then(|side| side.concepts.iter().find(|x| x.concept == c.concept));
                match cap {
                    Some(x) => format!("{} {:.1}% (captions {:.1}%)", c.concept, 100.0 * c.share, 100.0 * x.share),
                    None => format!("{} {:.1}%", c.concept, 100.0 * c.share),
                }
            })
            .collect();
        eprintln!("  {}: {}", g.group, line.join(", "));
        if !g.image.under_represented.is_empty() {
            eprintln!("    under-represented (images): {}", g.image.under_represented.join(", "));
        }
        if let Some(a) = &g.agreement {
            eprintln!("    image and caption agree on {:.1}% of {} items", 100.0 * a.agree_share, a.items);
        }
    }
}
