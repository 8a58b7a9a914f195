//! `sieve report`: one self-contained HTML page for people, made from what the other stages
//! wrote to a run directory (parquet/JSON for machines, one HTML page for people; docs/guide.md, "The report").
//!
//! The page shows samples and aggregates only — summary counts, a few duplicate groups and
//! pairs as thumbnails, histograms, per-group diversity, a capped list of skipped files — so its
//! size is bounded whatever the run's size. It makes no network request: thumbnails are base64
//! `data:` URIs, plots inline SVG, CSS inline, and a Content-Security-Policy forbids anything
//! else. A stage that has not been run (or whose output cannot be read) is shown as such; text
//! from the data is escaped by the template (maud). The same run gives a byte-identical page.

mod load;
pub(crate) mod page;
pub mod plot;
pub(crate) mod thumbs;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::{write_atomic, Layout, Run};

/// Default number of duplicate groups in each list (largest, borderline).
pub const DEFAULT_GROUPS: usize = 6;
/// Default number of pairs in each list (lowest score, outranked).
pub const DEFAULT_PAIRS: usize = 12;
/// Default number of skipped files listed.
pub const DEFAULT_SKIPPED: usize = 100;
/// Default cap on the thumbnails embedded in the page (about 5 KB each).
pub const DEFAULT_MAX_THUMBNAILS: usize = 300;
/// Default number of items whose nearest neighbour is searched for the NN histogram.
pub const DEFAULT_NN_SAMPLE: usize = 1000;

/// Everything `sieve report` needs.
#[derive(Debug, Clone, Serialize)]
pub struct ReportOptions {
    pub run: PathBuf,
    /// Where to write the page; `None`: `RUN/report.html`.
    pub out: Option<PathBuf>,
    /// Duplicate groups shown in each list (the largest; those nearest the threshold).
    pub groups: usize,
    /// Members shown per duplicate group (the kept one first).
    pub group_members: usize,
    /// Pairs shown in each list (the lowest-scoring; the outranked).
    pub pairs: usize,
    /// Skipped files listed by name (the counts by reason are always complete).
    pub skipped: usize,
    /// Most thumbnails embedded; items beyond it get a placeholder.
    pub max_thumbnails: usize,
    /// Longest side of a thumbnail, in pixels.
    pub thumbnail_size: u32,
    /// Items whose nearest neighbour (among all embedded images) is searched for the
    /// nearest-neighbour histogram: all of them up to this many, a seeded sample beyond.
    pub nn_sample: usize,
    pub seed: u64,
}

impl ReportOptions {
    /// Defaults for `run` (as the CLI's defaults).
    pub fn new(run: impl Into<PathBuf>) -> Self {
        Self {
            run: run.into(),
            out: None,
            groups: DEFAULT_GROUPS,
            group_members: 10,
            pairs: DEFAULT_PAIRS,
            skipped: DEFAULT_SKIPPED,
            max_thumbnails: DEFAULT_MAX_THUMBNAILS,
            thumbnail_size: 128,
            nn_sample: DEFAULT_NN_SAMPLE,
            seed: 0,
        }
    }

    /// The page's path: `out`, or `RUN/report.html`.
    pub fn out_path(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| Layout::new(&self.run).report())
    }
}

/// One section of the page and whether the stage behind it had been run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Section {
    /// `summary`, `duplicates`, `pairs`, `plots`, `diversity`, `quality`, `skipped`.
    pub name: &'static str,
    /// The section shows data (false: "not run", or its files could not be read).
    pub present: bool,
    /// Why it is empty, e.g. "not run (run `sieve dedup RUN`)".
    pub note: Option<String>,
}

/// What `report` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ReportSummary {
    pub path: PathBuf,
    pub bytes: u64,
    pub sections: Vec<Section>,
    /// Thumbnails embedded, and items shown with a placeholder instead (unreadable image, or
    /// over `max_thumbnails`).
    pub thumbnails: usize,
    pub placeholders: usize,
    pub seconds: f64,
}

impl ReportSummary {
    /// Names of the sections whose stage has not been run or could not be read.
    pub fn missing(&self) -> Vec<&'static str> {
        self.sections.iter().filter(|s| !s.present).map(|s| s.name).collect()
    }
}

pub(crate) use page::{shown, CSP};

/// Thumbnails (`data:` URIs, or why none) of `uris` of `run`, at most `size` px on a side, as the
/// report makes them (`sieve dedup --calibrate` shows pairs with them).
pub(crate) fn thumbnails(
    run: &Run,
    uris: &[String],
    size: u32,
) -> std::collections::HashMap<String, std::result::Result<String, String>> {
    thumbs::Thumbnailer::new(run.manifest.limits, size).make_all(uris)
}

/// Writes the report page of the run in `opts.run` (see the module docs).
pub fn report(opts: &ReportOptions) -> Result<ReportSummary> {
    let started = Instant::now();
    let run = Run::open(&opts.run)?;
    let data = load::Data::load(&run, opts)?;

    // Thumbnails, in page order, each uri once, up to the cap.
    let mut seen = BTreeSet::new();
    let wanted: Vec<String> = data.shown_uris().into_iter().filter(|u| seen.insert(u.clone())).collect();
    let embedded_uris: Vec<String> = wanted.iter().take(opts.max_thumbnails).cloned().collect();
    let thumbnailer = thumbs::Thumbnailer::new(run.manifest.limits, opts.thumbnail_size);
    let thumbs = thumbnailer.make_all(&embedded_uris);
    let thumbnails = thumbs.values().filter(|t| t.is_ok()).count();

    let html = page::render(&run, &data, &thumbs, opts);
    let out = opts.out_path();
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(Error::InvalidArg {
                what: "report option out",
                reason: format!("folder {} does not exist", parent.display()),
            });
        }
    }
    write_atomic(&out, |w| w.write_all(html.as_bytes()))?;
    Ok(ReportSummary {
        path: out,
        bytes: html.len() as u64,
        sections: data.sections(),
        thumbnails,
        placeholders: wanted.len() - thumbnails,
        seconds: started.elapsed().as_secs_f64(),
    })
}
