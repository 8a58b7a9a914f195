//! `sieve dedup --calibrate`: thresholds chosen by looking, not guessing. One pass searches every
//! kind at a looser threshold than its default (cosine kinds 0.10 lower, the perceptual
//! distance 6 bits higher), then writes, without touching keep.txt or remove.txt:
//!
//! - `dedup/calibrate.json`: per kind, the histogram of pair similarities (0.01 bands; one band
//!   per Hamming distance for `perceptual`) and the removal rate against the threshold: the
//!   one removal decision redone for every band edge, the other removal kinds at their
//!   thresholds (SemDeDup's eps sweep, in one pass);
//! - `dedup/calibrate.html`: for each band, a few sample pairs as thumbnails beside the pair
//!   count and the removal rate a threshold there would give. Self-contained like the report.

use std::collections::BTreeMap;
use std::io::Write;

use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Serialize;

use super::decision::{decide, Relation};
use super::dedup::{find_relations, keep_rank, load_items, resolve_thresholds, DedupOptions, Items, KeepPolicy, Kind};
use super::stream::PairSource;
use crate::device;
use crate::error::{Error, Result};
use crate::index::Pair;
use crate::store::{write_atomic, Layout, Run};

/// Sample pairs shown per band.
pub const SAMPLES_PER_BAND: usize = 3;
/// How much looser than its default threshold each cosine kind is searched.
const COSINE_SLACK: f32 = 0.10;
/// How many bits further than its default distance the perceptual kind is searched.
const HAMMING_SLACK: u32 = 6;

/// A kind's relation with every pair in memory, to cut at each band.
enum Held {
    Sets(Vec<Vec<u32>>),
    Pairs(Vec<Pair>),
}

impl Held {
    /// The relation of the pairs that pass `keep`.
    fn filtered(&self, keep: impl Fn(&Pair) -> bool) -> Relation<'static> {
        match self {
            Held::Sets(s) => Relation::Sets(s.clone()),
            Held::Pairs(p) => {
                Relation::Pairs(std::rc::Rc::new(PairSource::held(p.iter().filter(|q| keep(q)).copied().collect())))
            }
        }
    }
}

/// One band of a kind's histogram, with what a threshold at its lower edge would remove.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Band {
    /// Lower edge of the band: a cosine, or for `perceptual` a similarity `1 − distance / 64`.
    pub from: f32,
    /// Hamming distance of the band (`perceptual` only).
    pub distance: Option<u32>,
    /// Pairs in the band.
    pub pairs: usize,
    /// Items removed with the kind's threshold at this band's lower edge (this band and every
    /// closer one counted as duplicates).
    pub removed: usize,
    /// `removed` / embedded.
    pub removal_rate: f64,
    /// The threshold in force: this is the default's band.
    pub is_default: bool,
    /// Sample pairs, as (id, uri, id, uri, similarity).
    pub samples: Vec<(u64, String, u64, String, f32)>,
}

/// One kind's calibration.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KindCalibration {
    /// `cosine` or `hamming`.
    pub measure: String,
    /// Whether the kind is a removal kind (its sweep moves the decision).
    pub removes: bool,
    /// Closest band first.
    pub bands: Vec<Band>,
}

/// `dedup/calibrate.json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Calibration {
    pub sieve_version: String,
    pub run: String,
    pub embedded: usize,
    /// Removed with every threshold at its default.
    pub removed_at_defaults: usize,
    pub kinds: BTreeMap<String, KindCalibration>,
}

/// The band of a pair: for cosine kinds `b` when `1 − b/100 ≤ sim < 1 − (b−1)/100` (so a
/// threshold at band `b`'s lower edge keeps bands `0..=b`), for `perceptual` the Hamming
/// distance.
fn band_of(kind: Kind, sim: f32) -> u32 {
    if kind == Kind::Perceptual {
        ((1.0 - sim) * 64.0).round() as u32
    } else {
        ((1.0 - sim.min(1.0)) * 100.0 - 1e-3).ceil().max(0.0) as u32
    }
}

/// Runs the calibration pass over `opts.run` and writes `calibrate.json` and `calibrate.html`.
pub fn calibrate(opts: &DedupOptions) -> Result<Calibration> {
    if opts.against.is_some() || opts.from_partitions.is_some() {
        return Err(Error::InvalidArg {
            what: "dedup calibration",
            reason: "calibrates one run on its own; drop --against and partitioned inputs".into(),
        });
    }
    let run = Run::open(&opts.run)?;
    let defaults = resolve_thresholds(&run, opts)?;
    let mut loose = defaults;
    loose.image = (defaults.image - COSINE_SLACK).max(-1.0);
    loose.caption = (defaults.caption - COSINE_SLACK).max(-1.0);
    loose.perceptual_distance = (defaults.perceptual_distance + HAMMING_SLACK).min(32);
    let need_text = opts.kinds.iter().any(|k| matches!(k, Kind::Caption | Kind::Joint))
        || matches!(opts.keep, KeepPolicy::Auto | KeepPolicy::BestScore);
    let items = load_items(&run, None, need_text)?;
    let policy = match opts.keep {
        KeepPolicy::Auto if items.has_caption.iter().any(|&c| c) => KeepPolicy::BestScore,
        KeepPolicy::Auto => KeepPolicy::Largest,
        // The central order depends on the pairs, which the sweep changes: first order here.
        KeepPolicy::Central => KeepPolicy::First,
        p => p,
    };
    let rank = keep_rank(&items, policy, None);
    let dev = device::open(opts.device)?;
    let centroids = match &opts.centroids {
        Some(dir) => Some(super::partition::Centroids::load(dir, &run)?),
        None => None,
    };
    let (relations, _) = find_relations(&items, &loose, opts, &dev, None, centroids.as_ref())?;
    // The sweep cuts each kind's pairs at every band: all of them, in memory.
    let relations: Vec<(Kind, Held)> = relations
        .into_iter()
        .map(|(k, r)| {
            Ok((
                k,
                match r {
                    Relation::Sets(s) => Held::Sets(s),
                    Relation::Pairs(p) => Held::Pairs(p.collect()?),
                },
            ))
        })
        .collect::<Result<_>>()?;
    let n = items.id.len();
    let never_old = |_| false;

    // A kind's relation cut at a threshold band (pairs of bands ≤ `band`).
    let cut = |kind: Kind, rel: &Held, band: u32| -> Relation { rel.filtered(|q| band_of(kind, q.sim) <= band) };
    let default_band = |kind: Kind| match kind {
        Kind::Perceptual => defaults.perceptual_distance,
        Kind::Image => band_of(kind, defaults.image),
        _ => band_of(kind, defaults.caption),
    };
    // Each kind at its default threshold (exactly, not rounded to a band).
    let at_defaults: Vec<(Kind, Relation)> = relations
        .iter()
        .map(|(k, r)| {
            let keep = |q: &&Pair| match k {
                Kind::Perceptual => band_of(*k, q.sim) <= defaults.perceptual_distance,
                Kind::Image | Kind::Joint => {
                    q.sim >= defaults.image.min(if *k == Kind::Joint { defaults.caption } else { 1.0 })
                }
                Kind::Caption => q.sim >= defaults.caption,
                Kind::Exact => true,
            };
            (*k, r.filtered(|q| keep(&q)))
        })
        .collect();
    let removal_at = |swept: Option<(Kind, &Relation)>| -> Result<usize> {
        let rels: Vec<&Relation> = at_defaults
            .iter()
            .filter(|(k, _)| opts.remove_kinds.contains(k))
            .map(|(k, r)| match swept {
                Some((sk, sr)) if sk == *k => sr,
                _ => r,
            })
            .collect();
        Ok(decide(n, &rank, &never_old, &rels)?.removed.iter().filter(|&&r| r).count())
    };
    let removed_at_defaults = removal_at(None)?;

    let mut kinds = BTreeMap::new();
    for (kind, rel) in &relations {
        let Held::Pairs(pairs) = rel else { continue };
        let mut by_band: BTreeMap<u32, Vec<&Pair>> = BTreeMap::new();
        for p in pairs {
            by_band.entry(band_of(*kind, p.sim)).or_default().push(p);
        }
        let last = match kind {
            Kind::Perceptual => loose.perceptual_distance,
            Kind::Image => band_of(*kind, loose.image),
            _ => band_of(*kind, loose.caption),
        };
        let removes = opts.remove_kinds.contains(kind);
        let bands = (0..=last)
            .map(|b| {
                let in_band = by_band.get(&b).map(Vec::as_slice).unwrap_or(&[]);
                let removed =
                    if removes { removal_at(Some((*kind, &cut(*kind, rel, b))))? } else { removed_at_defaults };
                // Evenly spaced samples of the band, so a rerun shows the same pairs.
                let step = (in_band.len() / SAMPLES_PER_BAND).max(1);
                let samples = in_band
                    .iter()
                    .step_by(step)
                    .take(SAMPLES_PER_BAND)
                    .map(|p| {
                        let (a, c) = (p.a as usize, p.b as usize);
                        (items.id[a], items.uri[a].clone(), items.id[c], items.uri[c].clone(), p.sim)
                    })
                    .collect();
                Ok(Band {
                    from: if *kind == Kind::Perceptual { 1.0 - b as f32 / 64.0 } else { 1.0 - b as f32 / 100.0 },
                    distance: (*kind == Kind::Perceptual).then_some(b),
                    pairs: in_band.len(),
                    removed,
                    removal_rate: if n == 0 { 0.0 } else { removed as f64 / n as f64 },
                    is_default: b == default_band(*kind),
                    samples,
                })
            })
            .collect::<Result<_>>()?;
        let measure = if *kind == Kind::Perceptual { "hamming" } else { "cosine" };
        kinds.insert(kind.as_str().to_string(), KindCalibration { measure: measure.into(), removes, bands });
    }
    let cal = Calibration {
        sieve_version: env!("CARGO_PKG_VERSION").to_string(),
        run: run.dir.display().to_string(),
        embedded: n,
        removed_at_defaults,
        kinds,
    };
    let files = Layout::new(&run.dir);
    let out = files.dedup_dir();
    std::fs::create_dir_all(&out).map_err(|e| Error::io("creating", &out, e))?;
    let json = serde_json::to_vec_pretty(&cal).expect("calibration serialises");
    write_atomic(&files.calibrate_json(), |w| {
        w.write_all(&json)?;
        w.write_all(b"\n")
    })?;
    let page = page(&cal, &items, &run);
    write_atomic(&files.calibrate_html(), |w| w.write_all(page.as_bytes()))?;
    Ok(cal)
}

fn page(cal: &Calibration, _items: &Items, run: &Run) -> String {
    let uris: Vec<String> = cal
        .kinds
        .values()
        .flat_map(|k| k.bands.iter().flat_map(|b| b.samples.iter().flat_map(|s| [s.1.clone(), s.3.clone()])))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let thumbs = crate::report::thumbnails(run, &uris, 96);
    let thumb = |uri: &str| -> Markup {
        let shown = crate::report::shown(uri, 200);
        match thumbs.get(uri) {
            Some(Ok(data)) => html! { img src=(data) title=(shown) alt=(shown); },
            Some(Err(why)) => html! { span.ph title=(shown) { "no preview: " (crate::report::shown(why, 200)) } },
            None => html! { span.ph title=(shown) { "no preview" } },
        }
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy" content=(crate::report::CSP);
                title { "sieve dedup --calibrate: " (crate::report::shown(&cal.run, 200)) }
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { "Choosing dedup thresholds" }
                p {
                    (cal.embedded) " embedded items; " (cal.removed_at_defaults)
                    " removed with every threshold at its default. Each band lists its pairs, what a threshold at its \
                     lower edge would remove (the other kinds at their defaults), and sample pairs; empty bands are \
                     left out (two DCT pHashes always differ in an even number of bits)."
                }
                @for (name, k) in &cal.kinds {
                    h2 { (name) " (" (k.measure) @if !k.removes { ", reported only" } ")" }
                    table {
                        tr { th { "band" } th { "pairs" } th { "removed at this threshold" } th { "samples" } }
                        @for b in k.bands.iter().filter(|b| b.pairs > 0 || b.is_default) {
                            tr class=(if b.is_default { "default" } else { "" }) {
                                td {
                                    @if let Some(d) = b.distance { "≤ " (d) " bits" } @else { "≥ " (format!("{:.2}", b.from)) }
                                    @if b.is_default { br; "(default)" }
                                }
                                td { (b.pairs) }
                                td { (b.removed) " (" (format!("{:.1}%", 100.0 * b.removal_rate)) ")" }
                                td {
                                    @for s in &b.samples {
                                        span.pair { (thumb(&s.1)) (thumb(&s.3)) br; (format!("{:.3}", s.4)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    markup.into_string()
}

const CSS: &str = r#"
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
td, th { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
tr.default { background: #fff6d6; }
span.pair { display: inline-block; margin: 0 8px 4px 0; text-align: center; font-size: 12px; }
span.pair img { max-width: 96px; max-height: 96px; margin: 1px; }
span.ph { display: inline-block; width: 96px; font-size: 11px; color: #888; }
"#;

/// `removed` per band of `kind` in a calibration, for printing.
pub fn sweep_lines(cal: &Calibration) -> Vec<String> {
    let mut out = Vec::new();
    for (name, k) in &cal.kinds {
        if !k.removes {
            continue;
        }
        let cells: Vec<String> = k
            .bands
            .iter()
            .filter(|b| b.pairs > 0 || b.is_default)
            .map(|b| {
                let at = match b.distance {
                    Some(d) => format!("{d}"),
                    None => format!("{:.2}", b.from),
                };
                format!("{at}{}: {:.1}%", if b.is_default { "*" } else { "" }, 100.0 * b.removal_rate)
            })
            .collect();
        out.push(format!("  {name:<11} {}", cells.join("  ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_are_hundredths_of_cosine_or_bits() {
        assert_eq!(band_of(Kind::Image, 1.0), 0);
        assert_eq!(band_of(Kind::Image, 0.995), 1);
        assert_eq!(band_of(Kind::Image, 0.99), 1);
        assert_eq!(band_of(Kind::Image, 0.95), 5);
        assert_eq!(band_of(Kind::Image, 0.9499), 6);
        assert_eq!(band_of(Kind::Perceptual, 1.0 - 12.0 / 64.0), 12);
    }
}
