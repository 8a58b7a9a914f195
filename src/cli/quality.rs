//! `sieve quality`.

use std::path::{Path, PathBuf};

use clap::Args;
use sieve::analyze::quality::{flag, flag_names, Cut, QualityOptions, Summary};
use sieve::error::{Error, Result};
use sieve::store::lock::{Mode, RunLock};
use sieve::store::Layout;

use super::{print_json, Global};

#[derive(Debug, Args)]
pub struct QualityArgs {
    /// Run directory (made by `sieve embed`).
    pub run: PathBuf,

    /// Override a flag's threshold: NAME=VALUE, e.g. blur=50 or tiny=200 (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub threshold: Vec<String>,

    /// Relative threshold: NAME=P flags the P% (0-100) of items furthest on the flag's side,
    /// e.g. blur=5 for the 5% blurriest (repeatable; at most P% when values tie).
    #[arg(long, value_name = "NAME=P")]
    pub percentile: Vec<String>,
}

impl TryFrom<&QualityArgs> for QualityOptions {
    type Error = Error;

    fn try_from(a: &QualityArgs) -> Result<Self> {
        let mut opts = QualityOptions::new(a.run.clone());
        let pairs =
            a.threshold.iter().map(|t| ("--threshold", t)).chain(a.percentile.iter().map(|p| ("--percentile", p)));
        for (what, arg) in pairs {
            let invalid = |reason: String| Error::InvalidArg { what, reason };
            let (name, value) = arg.split_once('=').ok_or_else(|| invalid(format!("`{arg}`: expected NAME=VALUE")))?;
            let def = flag(name).ok_or_else(|| invalid(format!("unknown flag `{name}`; flags: {}", flag_names())))?;
            if def.signal.is_none() {
                return Err(invalid(format!("`{name}` is a yes/no flag with no threshold")));
            }
            let v: f64 = value.parse().map_err(|_| invalid(format!("`{value}` is not a number")))?;
            if !v.is_finite() {
                return Err(invalid(format!("`{arg}`: the threshold must be a finite number")));
            }
            let cut = if what == "--percentile" {
                if !(0.0..=100.0).contains(&v) {
                    return Err(invalid(format!("{v}: expected 0 to 100")));
                }
                Cut::Percentile(v)
            } else {
                Cut::Value(v)
            };
            if opts.cuts.insert(name.to_string(), cut).is_some() {
                return Err(invalid(format!("`{name}` is given more than once")));
            }
        }
        Ok(opts)
    }
}

pub fn execute(args: QualityArgs, g: Global) -> anyhow::Result<()> {
    let opts = QualityOptions::try_from(&args)?;
    let _lock = RunLock::acquire(&opts.run, Mode::Shared, "sieve quality")?;
    let s = sieve::analyze::quality::quality(&opts)?;
    print_summary(&s, &opts.run);
    print_json(g, &s)
}

/// Image and caption problems apart, each with its flags' counts (quality and run).
pub fn print_summary(s: &Summary, run: &Path) {
    // A run without captions says so instead of counting every item as missing one.
    let counts = |modality: &str| {
        let parts: Vec<String> = s
            .flags
            .iter()
            .filter(|f| f.modality == modality && f.count > 0)
            .map(|f| format!("{} {}", f.name, f.count))
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    };
    let captions = if s.with_caption == 0 {
        "no captions in this run, caption flags not applied".to_string()
    } else {
        format!("{} with a caption problem{}", s.flagged_caption, counts("caption"))
    };
    eprintln!(
        "sieve quality: {} records, {} embedded; {} with an image problem{}; {} -> {}",
        s.records,
        s.embedded,
        s.flagged_image,
        counts("image"),
        captions,
        Layout::new(run).quality().display()
    );
    for f in &s.flags {
        eprintln!("  {:<16} {:>8} of {:>8}  {}", f.name, f.count, f.measured, f.rule);
    }
}
