//! The only place that knows about threads and channels. `sieve embed` runs as: a producer thread
//! that decodes, preprocesses and tokenises one batch at a time on the rayon pool, a bounded
//! channel (so decoding runs at most a couple of batches ahead and memory stays flat), and the
//! calling thread, which owns the model and the device, embeds each batch and hands rows to the
//! run-directory writer in input order.

use std::path::PathBuf;
use std::time::Instant;

use crate::device::{self, BatchSize, DeviceSpec, HostPixels};
use crate::error::Result;
use crate::ingest::{io_skip, CaptionSource, InputSpec, Record, Source};
use crate::media::decode::{self, Limits, Skip, SkipReason};
use crate::media::fingerprint::{self, Fingerprint};
use crate::media::preprocess::PixelsMut;
use crate::media::quality::{self, CaptionSignals, ImageSignals};
use crate::media::thumbnail;
use crate::model::{Encoder, ModelSpec};
use crate::store::{self, InputInfo, Row, RunManifest, RunWriter, Start, Status};

/// Pixel buffers in flight: one being embedded, one ready, one being filled.
const PIXEL_BUFFERS: usize = 3;

/// Everything `sieve embed` needs, validated.
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    pub input: InputSpec,
    pub out: PathBuf,
    pub model: ModelSpec,
    pub device: DeviceSpec,
    pub batch_size: BatchSize,
    /// int8 linear layers on the CPU (`--quantize int8`).
    pub quantize: crate::model::Quantize,
    pub part_size: usize,
    pub limits: Limits,
    pub overwrite: bool,
    /// Show a progress bar (only drawn when stderr is a terminal).
    pub progress: bool,
}

/// A record after the CPU stage: pixels (or why not) and caption tokens.
struct Prepared {
    record: Record,
    image: std::result::Result<ImageMeta, Skip>,
    caption: Option<PreparedCaption>,
    origin: store::Origin,
}

struct ImageMeta {
    width: u32,
    height: u32,
    sha256: String,
    fingerprint: Fingerprint,
    signals: Option<ImageSignals>,
}

struct PreparedCaption {
    text: String,
    lossy: bool,
    /// Token ids for the text tower; `None` with an image-only model, which keeps the caption's
    /// text and signals but embeds no text.
    ids: Option<Vec<u32>>,
    /// Cut to fit `--max-caption-bytes` or the model's context.
    truncated: bool,
    signals: Option<CaptionSignals>,
}

/// A batch of prepared records and the pixels of those whose image decoded, packed in order.
struct Batch {
    items: Vec<Prepared>,
    pixels: HostPixels,
    ok: usize,
}

fn too_large(len: u64, limits: &Limits) -> Option<Skip> {
    (len > limits.max_bytes).then(|| {
        Skip::new(SkipReason::TooLarge, format!("{len} bytes, over the limit of {} (--max-bytes)", limits.max_bytes))
    })
}

/// A file's bytes, regular files only, never more than the size limit read.
fn file_bytes(path: &std::path::Path, limits: &Limits) -> std::result::Result<Vec<u8>, Skip> {
    if let Some(skip) = std::fs::metadata(path).ok().and_then(|m| too_large(m.len(), limits)) {
        return Err(skip);
    }
    let (bytes, more) = crate::ingest::read_regular(path, limits.max_bytes)?;
    if more {
        return Err(Skip::new(
            SkipReason::TooLarge,
            format!("more than {} bytes, the limit (--max-bytes)", limits.max_bytes),
        ));
    }
    Ok(bytes)
}

/// The image's bytes: regular files only, never more than the size limit read (it is checked
/// from the metadata first, then enforced while reading).
fn image_bytes(record: &Record, limits: &Limits) -> std::result::Result<Vec<u8>, Skip> {
    if let Some(skip) = &record.skip {
        return Err(skip.clone());
    }
    match &record.source {
        Source::File(path) => file_bytes(path, limits),
        Source::Member(m) => {
            if let Some(skip) = too_large(m.len, limits) {
                return Err(skip);
            }
            m.read().map_err(io_skip)
        }
        Source::Cell(cell) => {
            let bytes = cell.column.read(cell.row).map_err(|e| Skip::new(SkipReason::Unreadable, format!("{e:#}")))?;
            match (bytes, &cell.fallback) {
                (Some(bytes), _) => match too_large(bytes.len() as u64, limits) {
                    Some(skip) => Err(skip),
                    None => Ok(bytes),
                },
                (None, Some(path)) => file_bytes(path, limits),
                (None, None) => Err(Skip::new(SkipReason::Missing, "the row's image cell is empty (null)")),
            }
        }
        Source::None => Err(Skip::new(SkipReason::Unreadable, "nothing to read")),
    }
}

/// Reads, decodes and preprocesses one image into `out`; with `signals`, also measures its
/// perceptual fingerprint and quality signals on one small copy (no second pass over the pixels).
fn read_image(
    record: &Record,
    limits: &Limits,
    encoder: &dyn Encoder,
    out: PixelsMut<'_>,
    signals: bool,
) -> std::result::Result<ImageMeta, Skip> {
    let bytes = image_bytes(record, limits)?;
    let decoded = decode::decode(&bytes, limits)?;
    encoder.preprocessor().preprocess_pixels(&decoded.rgb, out);
    let thumb = thumbnail::thumbnail(&decoded.rgb);
    Ok(ImageMeta {
        width: decoded.width,
        height: decoded.height,
        sha256: store::sha256_bytes(&bytes),
        fingerprint: fingerprint::fingerprint(&thumb),
        signals: signals.then(|| quality::image_signals(&thumb, decoded.colour, decoded.frames)),
    })
}

/// Caption text from bytes: lossily decoded when not UTF-8 (then flagged).
fn caption_text(bytes: Vec<u8>, json: bool, what: &str) -> Option<(String, bool)> {
    let (text, lossy) = match String::from_utf8(bytes) {
        Ok(s) => (s, false),
        Err(e) => {
            crate::progress::warn_record("caption-not-utf8", || {
                format!("caption {what} is not valid UTF-8; decoded lossily")
            });
            (String::from_utf8_lossy(e.as_bytes()).into_owned(), true)
        }
    };
    if !json {
        return Some((text, lossy));
    }
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => match v.get("caption") {
            Some(serde_json::Value::String(s)) => Some((s.clone(), lossy && s.contains('\u{fffd}'))),
            Some(serde_json::Value::Null) | None => None,
            Some(other) => Some((other.to_string(), false)),
        },
        Err(e) => {
            crate::progress::warn_record("caption-not-json", || {
                format!("caption {what} is not valid JSON ({e}); embedding the image without it")
            });
            None
        }
    }
}

/// Drops a UTF-8 sequence left incomplete at the end of `bytes` by a cut (so the cut alone does
/// not make a caption read as not UTF-8).
fn trim_partial_char(bytes: &mut Vec<u8>) {
    let len = bytes.len();
    // The start of the last character: at most 3 continuation bytes back.
    let Some(start) = (len.saturating_sub(4)..len).rev().find(|&i| bytes[i] & 0xC0 != 0x80) else { return };
    if std::str::from_utf8(&bytes[start..]).is_err_and(|e| e.error_len().is_none()) {
        bytes.truncate(start);
    }
}

/// Cuts `text` to at most `limit` bytes, at a character boundary.
pub(crate) fn cut_caption(text: &mut String, limit: u64) -> bool {
    if text.len() as u64 <= limit {
        return false;
    }
    let mut end = limit as usize;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

fn read_caption(record: &Record, encoder: &dyn Encoder, limits: &Limits, signals: bool) -> Option<PreparedCaption> {
    let limit = limits.max_caption_bytes;
    let cut = std::cell::Cell::new(false);
    let read_file = |path: &PathBuf| match crate::ingest::read_regular(path, limit) {
        Ok((mut b, more)) => {
            if more {
                trim_partial_char(&mut b);
            }
            cut.set(cut.get() | more);
            Some(b)
        }
        Err(skip) => {
            crate::progress::warn_record("caption-unreadable", || {
                format!("cannot read caption {}: {}; embedding the image without it", path.display(), skip.detail)
            });
            None
        }
    };
    let read_member = |m: &crate::ingest::Member| match m.read_limited(limit) {
        Ok((mut b, more)) => {
            if more {
                trim_partial_char(&mut b);
            }
            cut.set(cut.get() | more);
            Some(b)
        }
        Err(e) => {
            crate::progress::warn_record("caption-unreadable", || {
                format!("cannot read the caption of {}: {e}; embedding the image without it", record.uri)
            });
            None
        }
    };
    let (mut text, lossy) = match &record.caption {
        CaptionSource::None => return None,
        CaptionSource::Text { text, lossy } => (text.clone(), *lossy),
        CaptionSource::File(p) => caption_text(read_file(p)?, false, &p.display().to_string())?,
        CaptionSource::JsonFile(p) => caption_text(read_file(p)?, true, &p.display().to_string())?,
        CaptionSource::Member(m) => caption_text(read_member(m)?, false, &format!("of {}", record.uri))?,
        CaptionSource::JsonMember(m) => caption_text(read_member(m)?, true, &format!("of {}", record.uri))?,
    };
    let mut cut = cut.get();
    cut |= cut_caption(&mut text, limit);
    if cut {
        crate::progress::warn_record("caption-truncated", || {
            format!(
                "caption of {} is longer than {limit} bytes (--max-caption-bytes); cut there and flagged caption_truncated",
                record.uri
            )
        });
    }
    let text = text.trim().to_string();
    let Some(tokenizer) = encoder.tokenizer() else {
        let signals = signals.then(|| quality::caption_signals(&text, 0));
        return Some(PreparedCaption { text, lossy, ids: None, truncated: cut, signals });
    };
    match tokenizer.encode(&text) {
        Ok(tokens) => {
            let signals = signals.then(|| quality::caption_signals(&text, tokens.len));
            Some(PreparedCaption { text, lossy, truncated: tokens.truncated | cut, ids: Some(tokens.ids), signals })
        }
        Err(e) => {
            crate::progress::warn_record("caption-untokenisable", || {
                format!("cannot tokenise the caption of {}: {e}", record.uri)
            });
            None
        }
    }
}

/// CPU stage for one batch: decode + preprocess + tokenise on the rayon pool, writing pixels
/// into `pixels` (a recycled buffer with room for the batch); `signals`: also measure the
/// quality signals (always, in `sieve embed`; off only to time what they cost).
fn prepare_batch(
    records: &[Record],
    encoder: &dyn Encoder,
    limits: &Limits,
    mut pixels: HostPixels,
    signals: bool,
) -> Result<Batch> {
    let len = encoder.preprocessor().output_len();
    let results = pixels.fill(records.len(), len, |i, out| {
        let rec = &records[i];
        let origin = rec.origin.as_ref().map(|o| o.resolve(&rec.uri)).unwrap_or_default();
        (read_image(rec, limits, encoder, out, signals), read_caption(rec, encoder, limits, signals), origin)
    })?;
    // Pack the pixels of decoded images to the front, keeping order.
    let decoded: Vec<bool> = results.iter().map(|(image, _, _)| image.is_ok()).collect();
    let ok = pixels.compact(&decoded, len)?;
    let items = records
        .iter()
        .cloned()
        .zip(results)
        .map(|(record, (image, caption, origin))| Prepared { record, image, caption, origin })
        .collect();
    Ok(Batch { items, pixels, ok })
}

/// Embeds a prepared batch and turns it into output rows.
/// The pixel buffer goes back to `free` as soon as its copy to the device is queued.
fn embed_batch(batch: Batch, encoder: &dyn Encoder, free: &crossbeam_channel::Sender<HostPixels>) -> Result<Vec<Row>> {
    let (h, w) = encoder.preprocessor().output_size();
    let pixels = (batch.ok > 0)
        .then(|| batch.pixels.to_tensor(batch.ok, (3, h as usize, w as usize), encoder.device()))
        .transpose()?;
    let _ = free.send(batch.pixels);
    let img_emb = pixels.map(|p| encoder.embed_images(&p)).transpose()?;
    let token_batch: Vec<Vec<u32>> = batch
        .items
        .iter()
        .filter(|p| p.image.is_ok())
        .filter_map(|p| p.caption.as_ref().and_then(|c| c.ids.clone()))
        .collect();
    // Both towers are queued before either result is read back, so the device runs them
    // back to back.
    let text_emb = if token_batch.is_empty() { None } else { Some(encoder.embed_texts(&token_batch)?) };
    let img_emb: Vec<Vec<f32>> = img_emb.map(|t| t.to_vec2()).transpose()?.unwrap_or_default();
    let text_emb: Vec<Vec<f32>> = text_emb.map(|t| t.to_vec2()).transpose()?.unwrap_or_default();
    let mut img_it = img_emb.into_iter();
    let mut text_it = text_emb.into_iter();
    let rows = batch
        .items
        .into_iter()
        .map(|p| {
            let (caption, lossy, truncated, caption_signals, embeds_text) = match p.caption {
                Some(c) => (Some(c.text), c.lossy, c.truncated, c.signals, c.ids.is_some()),
                None => (None, false, false, None, false),
            };
            let mut row = Row {
                id: p.record.id,
                uri: p.record.uri,
                caption,
                caption_lossy: lossy,
                caption_truncated: truncated,
                sha256: None,
                width: None,
                height: None,
                phash: None,
                fingerprint: None,
                status: Status::Skipped,
                reason: None,
                error: None,
                image_embedding: None,
                text_embedding: None,
                image_signals: None,
                caption_signals,
                origin: p.origin,
            };
            match p.image {
                Ok(meta) => {
                    row.status = Status::Embedded;
                    row.sha256 = Some(meta.sha256);
                    row.width = Some(meta.width);
                    row.height = Some(meta.height);
                    row.fingerprint = Some(meta.fingerprint);
                    row.image_signals = meta.signals;
                    row.image_embedding = img_it.next();
                    if embeds_text {
                        row.text_embedding = text_it.next();
                    }
                    let finite = |e: &Option<Vec<f32>>| e.as_ref().is_none_or(|v| v.iter().all(|x| x.is_finite()));
                    let bad = [("image", finite(&row.image_embedding)), ("caption", finite(&row.text_embedding))]
                        .into_iter()
                        .filter(|(_, ok)| !ok)
                        .map(|(what, _)| what)
                        .collect::<Vec<_>>();
                    if !bad.is_empty() {
                        // Never stored: a NaN would poison every later stage.
                        crate::progress::warn_record(SkipReason::NonFiniteEmbedding.code(), || {
                            format!("skipped {}: the model's {} embedding is not finite", row.uri, bad.join(" and "))
                        });
                        row.status = Status::Skipped;
                        row.reason = Some(SkipReason::NonFiniteEmbedding.code().to_string());
                        row.error =
                            Some(format!("the model's {} embedding holds NaN or infinite values", bad.join(" and ")));
                        row.image_embedding = None;
                        row.text_embedding = None;
                    }
                }
                Err(skip) => {
                    crate::progress::warn_record(skip.reason.code(), || {
                        format!("skipped {}: {} ({})", row.uri, skip.reason, skip.detail)
                    });
                    row.reason = Some(skip.reason.code().to_string());
                    row.error = Some(skip.detail);
                }
            }
            row
        })
        .collect();
    Ok(rows)
}

/// Non-finite embeddings with none finite after which the model is taken to be broken.
const NON_FINITE_PROBE: u64 = 32;

/// Fails the run when the model has given non-finite embeddings for at least `probe` records
/// and a finite one for none: its weights or configuration are broken (e.g. `image_std` of 0,
/// NaN weights), and every record would otherwise end as `non-finite-embedding`.
fn check_model_output(counts: &store::Counts, probe: u64, encoder: &dyn Encoder) -> Result<()> {
    let bad = counts.skipped_by_reason.get(SkipReason::NonFiniteEmbedding.code()).copied().unwrap_or(0);
    if counts.embedded == 0 && bad >= probe.max(1) {
        return Err(crate::Error::ModelFile {
            path: encoder.info().source.clone().into(),
            reason: format!(
                "the model gives NaN or infinite embeddings for all {bad} records so far; its weights or \
                 configuration (e.g. a zero image_std in preprocessor_config.json) are broken"
            ),
        });
    }
    Ok(())
}

/// What `sieve embed` did.
#[derive(Debug, Clone)]
pub struct EmbedOutcome {
    pub manifest: RunManifest,
    /// Rows found already written by an interrupted run of the same command.
    pub resumed_rows: usize,
    /// The same command had already finished: nothing was done.
    pub already_complete: bool,
}

/// Runs `sieve embed`: lists the input, embeds every record it can, lists the rest with a
/// reason, and writes the run directory; resumes an interrupted run of the same command.
pub fn embed(opts: &EmbedOptions) -> Result<EmbedOutcome> {
    crate::progress::reset_record_warnings();
    let listing = crate::ingest::list(&opts.input)?;
    tracing::info!("{} records in {} input(s) ({})", listing.records.len(), listing.paths.len(), listing.format.name());
    let device = device::open(opts.device)?;
    let dtype = device::compute_dtype(&device);
    let encoder = crate::model::load_quantized(&opts.model, &device, dtype, opts.quantize)?;
    let encoder = &*encoder;
    let batch_size = device::resolve_batch_size(opts.batch_size, &device, encoder.bytes_per_item());
    let compute_dtype = opts.quantize.compute_dtype(dtype);
    tracing::info!(
        "model {} on {} ({compute_dtype}), batch size {batch_size}",
        encoder.info().id,
        device::describe(&device)
    );
    let manifest = RunManifest {
        sieve_version: env!("CARGO_PKG_VERSION").to_string(),
        model: encoder.info().clone(),
        device: device::describe(&device),
        compute_dtype,
        storage_dtype: "float16".into(),
        embed_dim: encoder.embed_dim(),
        preprocessing: encoder.preprocessor().config().clone(),
        text_max_tokens: encoder.tokenizer().map_or(0, |t| t.max_len()),
        input: InputInfo {
            paths: listing.paths.iter().map(|p| p.display().to_string()).collect(),
            format: listing.format.name().into(),
            image_col: listing.image_col.clone(),
            caption_col: listing.caption_col.clone(),
            keep_cols: opts.input.keep_cols.clone(),
            shard: opts.input.shard,
            records: listing.records.len() as u64,
            listing_sha256: listing.fingerprint(),
        },
        limits: opts.limits,
        batch_size,
        part_size: opts.part_size,
        complete: false,
        counts: Default::default(),
        parts: Vec::new(),
        merged_from: Vec::new(),
        checksums: Default::default(),
    };
    let ids: Vec<u64> = listing.records.iter().map(|r| r.id).collect();
    let (mut writer, done) = match RunWriter::start(&opts.out, &manifest, &ids, opts.overwrite)? {
        Start::Complete(m) => {
            tracing::info!("{} already holds this run, complete; nothing to do", opts.out.display());
            return Ok(EmbedOutcome { manifest: *m, resumed_rows: 0, already_complete: true });
        }
        Start::Fresh(w) => (w, 0),
        Start::Resume(w, done) => {
            tracing::info!("resuming after {done} of {} records already written", ids.len());
            (w, done)
        }
    };
    let records = &listing.records[done..];
    if !device.is_cpu() && !records.is_empty() {
        // Part of loading: otherwise the first batch compiles kernels while the decoders,
        // which can run only a few batches ahead, stall.
        let t = Instant::now();
        encoder.warm_up()?;
        tracing::info!("device warmed up in {:.2}s", t.elapsed().as_secs_f64());
    }

    let pb = crate::progress::Progress::with(records.len() as u64, "embedding", "images", opts.progress);
    let started = Instant::now();
    let (tx, rx) = crossbeam_channel::bounded::<Result<Batch>>(1);
    let (free_tx, free_rx) = crossbeam_channel::bounded::<HostPixels>(PIXEL_BUFFERS);
    let item_len = encoder.preprocessor().output_len();
    for _ in 0..PIXEL_BUFFERS.min(records.len().div_ceil(batch_size)) {
        let _ = free_tx.send(HostPixels::new(&device, dtype, batch_size * item_len));
    }
    std::thread::scope(|s| -> Result<()> {
        // Owned here so that an early return drops them and unblocks the producer.
        let (rx, free_tx) = (rx, free_tx);
        let encoder_ref = encoder;
        let limits = opts.limits;
        s.spawn(move || {
            for chunk in records.chunks(batch_size) {
                let Ok(buf) = free_rx.recv() else { break };
                if tx.send(prepare_batch(chunk, encoder_ref, &limits, buf, true)).is_err() {
                    break; // the embedding side stopped (with an error it reports)
                }
            }
        });
        for batch in rx.iter() {
            // Between batches: what is written so far stays a resumable run.
            crate::progress::check_cancel()?;
            let batch = batch?;
            let n = batch.items.len() as u64;
            let rows = embed_batch(batch, encoder, &free_tx)?;
            writer.push(rows)?;
            pb.inc(n);
            check_model_output(writer.counts(), NON_FINITE_PROBE, encoder)?;
        }
        Ok(())
    })?;
    drop(pb);
    check_model_output(writer.counts(), 1, encoder)?;
    let elapsed = started.elapsed().as_secs_f64();
    let manifest = writer.finish(manifest)?;
    tracing::info!(
        "embedded {} of {} records in {elapsed:.1}s ({:.1} records/s)",
        manifest.counts.embedded,
        manifest.counts.records,
        records.len() as f64 / elapsed.max(1e-9)
    );
    Ok(EmbedOutcome { manifest, resumed_rows: done, already_complete: false })
}

/// Throughput of the CPU stage alone, with and without the quality signals.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CpuStageRate {
    pub records: usize,
    pub decoded: usize,
    pub threads: usize,
    /// Time with the quality signals, as `sieve embed` runs.
    pub seconds: f64,
    pub images_per_s: f64,
    /// The same batches without the quality signals.
    pub seconds_without_signals: f64,
    pub images_per_s_without_signals: f64,
    /// `seconds / seconds_without_signals`: what the signals cost (1.03 = 3% slower).
    pub signals_ratio: f64,
}

/// Runs `sieve embed`'s CPU stage (read, decode, preprocess into f16 buffers as for a GPU, hash,
/// tokenise) over every image under `input`, on all cores, without a model: the rate a device
/// can be fed at. `model` gives the preprocessing and tokeniser.
///
/// Every batch runs twice, with and without the quality signals, alternating which goes first,
/// after one untimed read of every file, so both see the same files, caches and machine state
/// and their ratio is the signals' cost.
pub fn cpu_stage_rate(
    input: &std::path::Path,
    model: &ModelSpec,
    limits: Limits,
    batch_size: usize,
) -> Result<CpuStageRate> {
    let records = crate::ingest::dir::scan(input)?;
    let encoder = crate::model::load(model, &candle_core::Device::Cpu, candle_core::DType::F32)?;
    let encoder = &*encoder;
    let len = encoder.preprocessor().output_len();
    let mut buf = HostPixels::F16(vec![half::f16::ZERO; batch_size * len]);
    {
        use rayon::prelude::*;
        records.par_iter().for_each(|r| {
            let _ = image_bytes(r, &limits);
        });
    }
    let (mut with, mut without) = (0f64, 0f64);
    let mut decoded = 0;
    for (k, chunk) in records.chunks(batch_size.max(1)).enumerate() {
        for signals in [k % 2 == 1, k % 2 == 0] {
            let started = Instant::now();
            let batch = prepare_batch(chunk, encoder, &limits, buf, signals)?;
            let t = started.elapsed().as_secs_f64();
            if signals {
                with += t;
                decoded += batch.ok;
            } else {
                without += t;
            }
            buf = batch.pixels;
        }
    }
    let rate = |s: f64| records.len() as f64 / s.max(1e-9);
    Ok(CpuStageRate {
        records: records.len(),
        decoded,
        threads: rayon::current_num_threads(),
        seconds: with,
        images_per_s: rate(with),
        seconds_without_signals: without,
        images_per_s_without_signals: rate(without),
        signals_ratio: with / without.max(1e-9),
    })
}
