//! `sieve quality`: turns the quality signals `sieve embed` recorded (see
//! [`crate::media::quality`]) into flags, one per kind of problem, each by a documented default
//! threshold that `--threshold NAME=VALUE` overrides or `--percentile NAME=P` replaces with a
//! relative one (the P% of the run's items furthest on the flag's side). Nothing is decoded or
//! tokenised again: this stage reads the metadata columns only.
//!
//! Image flags follow cleanvision's issue types (blurry, dark, light, low information, odd
//! size and aspect ratio, grayscale) and DataComp's basic filter (aspect ratio over 3); caption
//! flags cover what neither reports: missing, empty, short, truncated, boilerplate, not UTF-8.
//! The defaults come from the distributions on real pictures in docs/guide.md's "Quality signals" table; those of
//! blur, dark, bright and grayscale from labelled real pictures (docs/quality.md).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float32Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};

use super::common::Distribution;
use crate::error::{Error, Result};
use crate::store::{read, write_atomic, write_parquet_atomic, Layout, Row, Status};

/// Which side of its threshold a flag is raised on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// value < threshold
    Below,
    /// value > threshold
    Above,
}

/// A flag: a signal and a threshold (or a yes/no fact about the row).
#[derive(Debug, Clone, Copy)]
pub struct FlagDef {
    pub name: &'static str,
    /// The signal it thresholds (a column of quality.parquet); `None` for yes/no flags.
    pub signal: Option<&'static str>,
    pub side: Side,
    /// Default threshold (unused by yes/no flags).
    pub default: f64,
    /// `image` or `caption`.
    pub modality: &'static str,
    pub doc: &'static str,
}

const fn num(
    name: &'static str,
    signal: &'static str,
    side: Side,
    default: f64,
    modality: &'static str,
    doc: &'static str,
) -> FlagDef {
    FlagDef { name, signal: Some(signal), side, default, modality, doc }
}

const fn yes_no(name: &'static str, modality: &'static str, doc: &'static str) -> FlagDef {
    FlagDef { name, signal: None, side: Side::Above, default: 0.0, modality, doc }
}

/// Default thresholds of the image flags calibrated by `scripts/bench_quality.py` (see
/// docs/quality.md): dark, bright and grayscale picked on its calibration half and checked on
/// the held-out half; blur set above the step edges of clip art (its calibration pick, 0.2,
/// sits in a narrow gap and misses blurred copies on the held-out half).
pub const BLUR_DEFAULT: f64 = 0.3;
pub const DARK_DEFAULT: f64 = 80.0;
pub const BRIGHT_DEFAULT: f64 = 192.0;
pub const GRAYSCALE_DEFAULT: f64 = 5.0;

/// Every flag, in report order. Defaults: see docs/guide.md, "Quality signals".
pub const FLAGS: &[FlagDef] = &[
    num(
        "blur",
        "sharpness",
        Side::Below,
        BLUR_DEFAULT,
        "image",
        "detail on the thumbnail over detail at half its size (about 1: sharp or no detail)",
    ),
    num(
        "dark",
        "highlights",
        Side::Below,
        DARK_DEFAULT,
        "image",
        "95th percentile of the brightest channel, of the picture or its content (0-255)",
    ),
    num(
        "bright",
        "lightness",
        Side::Above,
        BRIGHT_DEFAULT,
        "image",
        "luma p25 or darkest-channel p50, of the picture or its content (0-255): over-exposed or washed out",
    ),
    num("low_contrast", "contrast", Side::Below, 16.0, "image", "standard deviation of luma"),
    num("low_information", "entropy", Side::Below, 1.0, "image", "entropy of the luma histogram, bits (0-8)"),
    num("tiny", "min_side", Side::Below, 64.0, "image", "shorter side in pixels"),
    num("odd_aspect", "aspect", Side::Above, 3.0, "image", "longer side / shorter side"),
    num(
        "grayscale",
        "chroma",
        Side::Below,
        GRAYSCALE_DEFAULT,
        "image",
        "largest channel spread (0 in a file that stores grey); grayscale_reason says which",
    ),
    num("animated", "frames", Side::Above, 1.0, "image", "frames in the file"),
    yes_no("no_caption", "caption", "the record has no caption"),
    yes_no("empty_caption", "caption", "the caption is empty or whitespace"),
    num("short_caption", "caption_tokens", Side::Below, 5.0, "caption", "tokens with start/end (5: 3 words)"),
    yes_no("truncated", "caption", "longer than the model's window (run.json text_max_tokens)"),
    yes_no(
        "boilerplate",
        "caption",
        "a file name, URL, camera default (IMG_1234), placeholder, id or one word repeated",
    ),
    yes_no("non_utf8", "caption", "the caption file was not UTF-8 (decoded lossily)"),
];

/// The flag called `name`.
pub fn flag(name: &str) -> Option<&'static FlagDef> {
    FLAGS.iter().find(|f| f.name == name)
}

/// Names of every flag, comma-separated (for messages).
pub fn flag_names() -> String {
    FLAGS.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
}

/// Where a flag's threshold comes from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Cut {
    Default,
    /// `--threshold NAME=VALUE`.
    Value(f64),
    /// `--percentile NAME=P`: flag the P% (0-100) furthest on the flag's side.
    Percentile(f64),
}

/// Everything `sieve quality` needs, validated.
#[derive(Debug, Clone, Serialize)]
pub struct QualityOptions {
    pub run: PathBuf,
    /// Overrides by flag name (absent: the default).
    pub cuts: BTreeMap<String, Cut>,
}

impl QualityOptions {
    pub fn new(run: impl Into<PathBuf>) -> Self {
        Self { run: run.into(), cuts: BTreeMap::new() }
    }
}

/// One flag's line of the summary.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FlagSummary {
    pub name: String,
    pub modality: String,
    /// The signal thresholded, or null for a yes/no flag.
    pub signal: Option<String>,
    /// e.g. `blur < 100`.
    pub rule: String,
    pub threshold: Option<f64>,
    /// `default`, `threshold` or `percentile`.
    pub source: String,
    pub percentile: Option<f64>,
    /// Items the flag could be evaluated on (those with the signal).
    pub measured: usize,
    pub count: usize,
    pub doc: String,
}

/// `RUN/quality_summary.json`. The report reads it back leniently: a field an older sieve did
/// not write takes its default, and `signals` is not read back.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Summary {
    pub sieve_version: String,
    pub run: String,
    /// The fingerprint of the run this was computed from ([`crate::store::Run::fingerprint`]);
    /// readers refuse or recompute an output whose fingerprint is not their run's.
    pub run_fingerprint: String,
    /// Records read ([`UNKNOWN`] when read from a summary of an older sieve, which did not
    /// record it).
    #[serde(default = "unknown")]
    pub records: usize,
    pub embedded: usize,
    /// Embedded images with image signals (0 for runs made before they were recorded).
    pub with_image_signals: usize,
    /// Records with a caption ([`UNKNOWN`] when read from an older summary: read as "some").
    #[serde(default = "unknown")]
    pub with_caption: usize,
    pub flags: Vec<FlagSummary>,
    /// Items with at least one flag, of each modality and of either.
    pub flagged_image: usize,
    pub flagged_caption: usize,
    pub flagged: usize,
    /// Distribution of each numeric signal over the items that have it (not read back).
    #[serde(skip_deserializing)]
    pub signals: BTreeMap<String, Distribution>,
    /// Captions per dominant script (`none`: no letters).
    pub scripts: BTreeMap<String, usize>,
    /// Captions per kind of boilerplate.
    pub boilerplate: BTreeMap<String, usize>,
}

/// A count absent from a summary read back.
pub const UNKNOWN: usize = usize::MAX;

fn unknown() -> usize {
    UNKNOWN
}

/// The numeric signal `name` of a row (derived ones included), if it has it.
pub fn signal(row: &Row, name: &str) -> Option<f64> {
    let img = row.image_signals.as_ref().filter(|_| row.status == Status::Embedded);
    let cap = row.caption_signals.as_ref();
    let side = |long: bool| {
        let (w, h) = (row.width? as f64, row.height? as f64);
        (row.status == Status::Embedded).then_some(if long { w.max(h) } else { w.min(h) })
    };
    match name {
        "blur" => img.and_then(|s| s.blur).map(f64::from),
        "sharpness" => img.and_then(|s| s.sharpness).map(f64::from),
        "highlights" => img.and_then(|s| s.highlights).map(f64::from),
        "lightness" => img.and_then(|s| s.lightness).map(f64::from),
        "brightness" => img.map(|s| s.brightness as f64),
        "contrast" => img.map(|s| s.contrast as f64),
        "entropy" => img.map(|s| s.entropy as f64),
        // A file that stores grey has no colour, whatever its pixels.
        "chroma" => img.map(|s| if s.colour_container { s.chroma as f64 } else { 0.0 }),
        "frames" => img.map(|s| s.frames as f64),
        "min_side" => side(false),
        "aspect" => Some(side(true)? / side(false)?.max(1.0)),
        "caption_chars" => cap.map(|s| s.chars as f64),
        // Empty captions have their own flag.
        // 0 tokens: an image-only model tokenised nothing (any tokenised caption has its start
        // and end tokens), so the signal is unknown rather than short.
        "caption_tokens" => cap.filter(|s| s.chars > 0 && s.tokens > 0).map(|s| s.tokens as f64),
        _ => None,
    }
}

/// Numeric signals reported in the summary.
const SIGNALS: &[&str] = &[
    "sharpness",
    "highlights",
    "lightness",
    "blur",
    "brightness",
    "contrast",
    "entropy",
    "chroma",
    "frames",
    "min_side",
    "aspect",
    "caption_chars",
    "caption_tokens",
];

/// Why a row is grayscale: `stored-grey` (the file stores one grey channel) or `grey-content`
/// (a colour file whose pixels are grey), given whether its `grayscale` flag is raised.
pub fn grayscale_reason(row: &Row, flagged: bool) -> Option<&'static str> {
    let s = row.image_signals.as_ref().filter(|_| flagged)?;
    Some(if s.colour_container { "grey-content" } else { "stored-grey" })
}

/// A yes/no flag's value for a row (`None`: not applicable). `captioned`: the run has captions
/// at all; in an image-only run a missing caption is no problem of the item.
fn yes_no_value(row: &Row, name: &str, captioned: bool) -> Option<bool> {
    let cap = row.caption_signals.as_ref();
    match name {
        "no_caption" => captioned.then_some(row.caption.is_none()),
        "empty_caption" => row.caption.as_ref().map(|c| c.trim().is_empty()),
        "truncated" => row.caption.as_ref().map(|_| row.caption_truncated),
        "boilerplate" => cap.map(|s| s.boilerplate.is_some()),
        "non_utf8" => row.caption.as_ref().map(|_| row.caption_lossy),
        _ => None,
    }
}

/// The threshold `cut` gives a numeric flag over `values` (the rows that have the signal).
pub fn threshold(def: &FlagDef, cut: Cut, values: &[f64]) -> f64 {
    match cut {
        Cut::Default => def.default,
        Cut::Value(v) => v,
        Cut::Percentile(p) => {
            let mut v = values.to_vec();
            v.sort_unstable_by(f64::total_cmp);
            let k = ((p.clamp(0.0, 100.0) / 100.0) * v.len() as f64).round() as usize;
            // The cut leaves at most P% strictly on the flag's side.
            match def.side {
                Side::Below => v.get(k).copied().unwrap_or(f64::INFINITY),
                Side::Above => v.len().checked_sub(k + 1).map(|i| v[i]).unwrap_or(f64::NEG_INFINITY),
            }
        }
    }
}

fn raised(side: Side, value: f64, t: f64) -> bool {
    match side {
        Side::Below => value < t,
        Side::Above => value > t,
    }
}

/// Flags of every row: `flags[f][r]` for flag `FLAGS[f]` and row `r`, plus each flag's summary.
pub fn flag_rows(rows: &[Row], cuts: &BTreeMap<String, Cut>) -> (Vec<Vec<bool>>, Vec<FlagSummary>) {
    let captioned = rows.iter().any(|r| r.caption.is_some());
    let mut out = Vec::with_capacity(FLAGS.len());
    let mut summaries = Vec::with_capacity(FLAGS.len());
    for def in FLAGS {
        let cut = cuts.get(def.name).copied().unwrap_or(Cut::Default);
        let (flags, measured, t) = match def.signal {
            Some(sig) => {
                let vals: Vec<Option<f64>> = rows.iter().map(|r| signal(r, sig)).collect();
                let present: Vec<f64> = vals.iter().flatten().copied().collect();
                let t = threshold(def, cut, &present);
                let flags = vals.iter().map(|v| v.is_some_and(|v| raised(def.side, v, t))).collect();
                (flags, present.len(), Some(t))
            }
            None => {
                let vals: Vec<Option<bool>> = rows.iter().map(|r| yes_no_value(r, def.name, captioned)).collect();
                let flags: Vec<bool> = vals.iter().map(|v| v.unwrap_or(false)).collect();
                (flags, vals.iter().flatten().count(), None)
            }
        };
        let (source, percentile) = match cut {
            Cut::Default => ("default", None),
            Cut::Value(_) => ("threshold", None),
            Cut::Percentile(p) => ("percentile", Some(p)),
        };
        let rule = match (def.signal, t) {
            (Some(sig), Some(t)) => format!("{sig} {} {t}", if def.side == Side::Below { "<" } else { ">" }),
            _ => def.doc.to_string(),
        };
        summaries.push(FlagSummary {
            name: def.name.into(),
            modality: def.modality.into(),
            signal: def.signal.map(str::to_string),
            rule,
            threshold: t,
            source: if def.signal.is_some() { source.into() } else { "yes/no".into() },
            percentile,
            measured,
            count: flags.iter().filter(|&&f| f).count(),
            doc: def.doc.into(),
        });
        out.push(flags);
    }
    (out, summaries)
}

/// The schema of `quality.parquet`: the signals, one boolean `flag_NAME` per flag, and `flags`,
/// the raised flags' names comma-separated (null when none).
pub fn quality_schema() -> Arc<Schema> {
    let mut fields = vec![
        Field::new("id", DataType::UInt64, false),
        Field::new("uri", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("width", DataType::UInt32, true),
        Field::new("height", DataType::UInt32, true),
    ];
    for s in SIGNALS {
        fields.push(Field::new(*s, DataType::Float32, true));
    }
    fields.push(Field::new("colour_container", DataType::Boolean, true));
    fields.push(Field::new("grayscale_reason", DataType::Utf8, true));
    fields.push(Field::new("caption_boilerplate", DataType::Utf8, true));
    fields.push(Field::new("caption_script", DataType::Utf8, true));
    for f in FLAGS {
        fields.push(Field::new(format!("flag_{}", f.name), DataType::Boolean, false));
    }
    fields.push(Field::new("flags", DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

fn all_rows(run: &crate::store::Run) -> Result<Vec<Row>> {
    let mut rows = Vec::with_capacity(run.meta.len());
    for part in &run.manifest.parts {
        rows.extend(read::read_rows(&Layout::new(&run.dir).metadata_part(part))?);
    }
    Ok(rows)
}

/// Runs `sieve quality`; returns the summary (also written to `RUN/quality_summary.json`, with
/// every row's signals and flags in `RUN/quality.parquet`).
pub fn quality(opts: &QualityOptions) -> Result<Summary> {
    let run = crate::store::Run::open(&opts.run)?;
    let rows = all_rows(&run)?;
    let embedded = rows.iter().filter(|r| r.status == Status::Embedded).count();
    let with_image_signals = rows.iter().filter(|r| r.status == Status::Embedded && r.image_signals.is_some()).count();
    if embedded > 0 && with_image_signals == 0 {
        tracing::warn!(
            "{} has no image quality signals (made by an older sieve); rerun sieve embed with --overwrite \
             to measure them; only caption flags are computed",
            opts.run.display()
        );
    } else if rows
        .iter()
        .any(|r| r.status == Status::Embedded && r.image_signals.is_some_and(|s| s.highlights.is_none()))
    {
        tracing::warn!(
            "{} was embedded by an older sieve, without the sharpness, highlights and lightness signals: \
             the blur, dark and bright flags are not computed for those items; rerun sieve embed with \
             --overwrite to measure them",
            opts.run.display()
        );
    }
    let (flags, summaries) = flag_rows(&rows, &opts.cuts);

    let path = Layout::new(&opts.run).quality();
    let f32col = |name: &str| -> ArrayRef {
        Arc::new(rows.iter().map(|r| signal(r, name).map(|v| v as f32)).collect::<Float32Array>())
    };
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.id))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.uri.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.status.as_str()))),
        Arc::new(rows.iter().map(|r| r.width).collect::<UInt32Array>()),
        Arc::new(rows.iter().map(|r| r.height).collect::<UInt32Array>()),
    ];
    for s in SIGNALS {
        cols.push(f32col(s));
    }
    cols.push(Arc::new(rows.iter().map(|r| r.image_signals.map(|s| s.colour_container)).collect::<BooleanArray>()));
    let grey = &flags[FLAGS.iter().position(|f| f.name == "grayscale").expect("grayscale is a flag")];
    cols.push(Arc::new(rows.iter().zip(grey).map(|(r, &g)| grayscale_reason(r, g)).collect::<StringArray>()));
    cols.push(Arc::new(
        rows.iter().map(|r| r.caption_signals.as_ref().and_then(|s| s.boilerplate.as_deref())).collect::<StringArray>(),
    ));
    cols.push(Arc::new(
        rows.iter().map(|r| r.caption_signals.as_ref().and_then(|s| s.script.as_deref())).collect::<StringArray>(),
    ));
    for f in &flags {
        cols.push(Arc::new(f.iter().map(|&b| Some(b)).collect::<BooleanArray>()));
    }
    let joined: Vec<Option<String>> = (0..rows.len())
        .map(|r| {
            let names: Vec<&str> = FLAGS.iter().zip(&flags).filter(|(_, f)| f[r]).map(|(d, _)| d.name).collect();
            (!names.is_empty()).then(|| names.join(","))
        })
        .collect();
    cols.push(Arc::new(joined.iter().map(|s| s.as_deref()).collect::<StringArray>()));
    let batch = RecordBatch::try_new(quality_schema(), cols)
        .map_err(|e| Error::Parquet { path: path.clone(), source: e.into() })?;
    write_parquet_atomic(&path, &batch)?;

    let any = |modality: Option<&str>| {
        (0..rows.len())
            .filter(|&r| FLAGS.iter().zip(&flags).any(|(d, f)| f[r] && modality.is_none_or(|m| d.modality == m)))
            .count()
    };
    let mut signals = BTreeMap::new();
    for s in SIGNALS {
        let v: Vec<f32> = rows.iter().filter_map(|r| signal(r, s)).map(|v| v as f32).collect();
        if !v.is_empty() {
            signals.insert(s.to_string(), Distribution::of(&v, 20));
        }
    }
    let mut scripts = BTreeMap::new();
    let mut boilerplate = BTreeMap::new();
    for s in rows.iter().filter_map(|r| r.caption_signals.as_ref()) {
        *scripts.entry(s.script.clone().unwrap_or_else(|| "none".into())).or_insert(0) += 1;
        if let Some(b) = &s.boilerplate {
            *boilerplate.entry(b.clone()).or_insert(0) += 1;
        }
    }
    let summary = Summary {
        sieve_version: env!("CARGO_PKG_VERSION").to_string(),
        run: opts.run.display().to_string(),
        run_fingerprint: run.fingerprint.clone(),
        records: rows.len(),
        embedded,
        with_image_signals,
        with_caption: rows.iter().filter(|r| r.caption.is_some()).count(),
        flags: summaries,
        flagged_image: any(Some("image")),
        flagged_caption: any(Some("caption")),
        flagged: any(None),
        signals,
        scripts,
        boilerplate,
    };
    let json = serde_json::to_vec_pretty(&summary).expect("summary serialises");
    write_atomic(&Layout::new(&opts.run).quality_summary(), |w| std::io::Write::write_all(w, &json))?;
    Ok(summary)
}

/// Ids of the rows of `RUN/quality.parquet` with any of `names` raised.
pub fn flagged_ids(run: &std::path::Path, names: &[String]) -> Result<std::collections::HashSet<u64>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::UInt64Type;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let path = Layout::new(run).quality();
    if !path.is_file() {
        return Err(Error::RunDir {
            path: run.into(),
            reason: "--drop-flags needs quality.parquet; make it with `sieve quality RUN` first".into(),
        });
    }
    let file = std::fs::File::open(&path).map_err(|e| Error::io("reading", &path, e))?;
    let parquet_err = |source| Error::Parquet { path: path.clone(), source };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?.build().map_err(parquet_err)?;
    let mut out = std::collections::HashSet::new();
    for batch in reader {
        let batch = batch.map_err(|e| parquet_err(e.into()))?;
        let bad = |what: &str| Error::RunDir { path: path.clone(), reason: format!("no {what} column") };
        let ids = batch
            .column_by_name("id")
            .and_then(|c| c.as_primitive_opt::<UInt64Type>())
            .ok_or_else(|| bad("`id` (uint64)"))?;
        for name in names {
            let c = batch
                .column_by_name(&format!("flag_{name}"))
                .and_then(|c| c.as_boolean_opt())
                .ok_or_else(|| bad(&format!("boolean `flag_{name}`")))?;
            for (i, v) in c.iter().enumerate() {
                if v == Some(true) {
                    out.insert(ids.value(i));
                }
            }
        }
    }
    Ok(out)
}

/// Parses `--drop-flags`: known flag names, comma-separated.
pub fn parse_flag_list(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if flag(name).is_none() {
            return Err(Error::InvalidArg {
                what: "select option drop_flags",
                reason: format!("unknown flag `{name}`; flags: {}", flag_names()),
            });
        }
        out.push(name.to_string());
    }
    if out.is_empty() {
        return Err(Error::InvalidArg {
            what: "select option drop_flags",
            reason: format!("no flags given; flags: {}", flag_names()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_cuts_flag_at_most_p_percent_on_their_side() {
        let v: Vec<f64> = (0..100).map(f64::from).collect();
        let blur = flag("blur").unwrap();
        let t = threshold(blur, Cut::Percentile(5.0), &v);
        assert_eq!(v.iter().filter(|&&x| raised(blur.side, x, t)).count(), 5);
        let aspect = flag("odd_aspect").unwrap();
        let t = threshold(aspect, Cut::Percentile(10.0), &v);
        assert_eq!(v.iter().filter(|&&x| raised(aspect.side, x, t)).count(), 10);
        assert_eq!(
            v.iter().filter(|&&x| raised(aspect.side, x, threshold(aspect, Cut::Percentile(0.0), &v))).count(),
            0
        );
    }

    #[test]
    fn flag_names_are_unique_and_parse() {
        let mut names: Vec<&str> = FLAGS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FLAGS.len());
        assert_eq!(parse_flag_list("blur, dark").unwrap(), vec!["blur", "dark"]);
        assert!(parse_flag_list("blurry").is_err());
    }
}
