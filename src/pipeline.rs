//! The only place that knows about threads and channels. `sieve embed` runs as: a producer thread
//! that decodes, preprocesses and tokenises one batch at a time on the rayon pool, a bounded
//! channel (so decoding runs at most a couple of batches ahead and memory stays flat), and the
//! calling thread, which owns the model and the device, embeds each batch and hands rows to the
//! run-directory writer in input order.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Tensor;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;

use crate::device::{self, DeviceSpec};
use crate::error::{Error, Result};
use crate::ingest::{CaptionSource, Record};
use crate::media::decode::{self, Limits, Skip, SkipReason};
use crate::media::phash;
use crate::media::tokenize::Tokens;
use crate::model::{l2_normalize, Clip, ModelSpec};
use crate::store::{self, InputInfo, Row, RunManifest, RunWriter, Status};

/// Everything `sieve embed` needs, validated.
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    pub input: PathBuf,
    pub out: PathBuf,
    pub model: ModelSpec,
    pub device: DeviceSpec,
    pub batch_size: usize,
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
}

struct ImageMeta {
    width: u32,
    height: u32,
    sha256: String,
    phash: u64,
}

struct PreparedCaption {
    text: String,
    lossy: bool,
    tokens: Tokens,
}

/// A batch of prepared records and the pixels of those whose image decoded, packed in order.
struct Batch {
    items: Vec<Prepared>,
    pixels: Vec<f32>,
    ok: usize,
}

fn read_image(record: &Record, limits: &Limits, clip: &Clip, out: &mut [f32]) -> std::result::Result<ImageMeta, Skip> {
    if let Some(skip) = &record.skip {
        return Err(skip.clone());
    }
    let meta = std::fs::metadata(&record.path).map_err(|e| Skip::new(SkipReason::Unreadable, e.to_string()))?;
    if meta.len() > limits.max_bytes {
        return Err(Skip::new(
            SkipReason::TooLarge,
            format!("{} bytes, over the limit of {} (--max-bytes)", meta.len(), limits.max_bytes),
        ));
    }
    let bytes = std::fs::read(&record.path).map_err(|e| Skip::new(SkipReason::Unreadable, e.to_string()))?;
    let decoded = decode::decode(&bytes, limits)?;
    clip.preprocessor.preprocess_into(&decoded.rgb, out);
    Ok(ImageMeta {
        width: decoded.width,
        height: decoded.height,
        sha256: store::sha256_bytes(&bytes),
        phash: phash::phash(&decoded.rgb),
    })
}

fn read_caption(record: &Record, clip: &Clip) -> Option<PreparedCaption> {
    let CaptionSource::File(path) = &record.caption else { return None };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("cannot read caption {}: {e}; embedding the image without it", path.display());
            return None;
        }
    };
    let (text, lossy) = match String::from_utf8(bytes) {
        Ok(s) => (s, false),
        Err(e) => {
            tracing::warn!("caption {} is not valid UTF-8; decoded lossily", path.display());
            (String::from_utf8_lossy(e.as_bytes()).into_owned(), true)
        }
    };
    let text = text.trim().to_string();
    match clip.tokenizer.encode(&text) {
        Ok(tokens) => Some(PreparedCaption { text, lossy, tokens }),
        Err(e) => {
            tracing::warn!("cannot tokenise caption {}: {e}", path.display());
            None
        }
    }
}

/// CPU stage for one batch: decode + preprocess + tokenise on the rayon pool.
fn prepare_batch(records: &[Record], clip: &Clip, limits: &Limits) -> Batch {
    let len = clip.preprocessor.output_len();
    let mut pixels = vec![0f32; records.len() * len];
    let results: Vec<(std::result::Result<ImageMeta, Skip>, Option<PreparedCaption>)> = records
        .par_iter()
        .zip(pixels.par_chunks_mut(len))
        .map(|(rec, out)| {
            let image = read_image(rec, limits, clip, out);
            let caption = read_caption(rec, clip);
            (image, caption)
        })
        .collect();
    // Pack the pixels of decoded images to the front, keeping order.
    let mut ok = 0;
    for (i, (image, _)) in results.iter().enumerate() {
        if image.is_ok() {
            if ok != i {
                pixels.copy_within(i * len..(i + 1) * len, ok * len);
            }
            ok += 1;
        }
    }
    pixels.truncate(ok * len);
    let items = records
        .iter()
        .cloned()
        .zip(results)
        .map(|(record, (image, caption))| Prepared { record, image, caption })
        .collect();
    Batch { items, pixels, ok }
}

/// Embeds a prepared batch and turns it into output rows.
fn embed_batch(batch: Batch, clip: &Clip) -> Result<Vec<Row>> {
    let (h, w) = clip.preprocessor.output_size();
    let img_emb: Vec<Vec<f32>> = if batch.ok > 0 {
        let pixels = Tensor::from_vec(batch.pixels, (batch.ok, 3, h as usize, w as usize), &candle_core::Device::Cpu)?;
        l2_normalize(&clip.model.embed_images(&pixels)?)?.to_vec2()?
    } else {
        Vec::new()
    };
    let token_batch: Vec<Vec<u32>> = batch
        .items
        .iter()
        .filter(|p| p.image.is_ok())
        .filter_map(|p| p.caption.as_ref().map(|c| c.tokens.ids.clone()))
        .collect();
    let text_emb: Vec<Vec<f32>> = if token_batch.is_empty() {
        Vec::new()
    } else {
        l2_normalize(&clip.model.embed_texts(&token_batch)?)?.to_vec2()?
    };
    let mut img_it = img_emb.into_iter();
    let mut text_it = text_emb.into_iter();
    let rows = batch
        .items
        .into_iter()
        .map(|p| {
            let (caption, lossy, truncated) = match &p.caption {
                Some(c) => (Some(c.text.clone()), c.lossy, c.tokens.truncated),
                None => (None, false, false),
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
                status: Status::Skipped,
                reason: None,
                error: None,
                image_embedding: None,
                text_embedding: None,
            };
            match p.image {
                Ok(meta) => {
                    row.status = Status::Embedded;
                    row.sha256 = Some(meta.sha256);
                    row.width = Some(meta.width);
                    row.height = Some(meta.height);
                    row.phash = Some(meta.phash);
                    row.image_embedding = img_it.next();
                    if p.caption.is_some() {
                        row.text_embedding = text_it.next();
                    }
                }
                Err(skip) => {
                    tracing::warn!("skipped {}: {} ({})", row.uri, skip.reason, skip.detail);
                    row.reason = Some(skip.reason.code().to_string());
                    row.error = Some(skip.detail);
                }
            }
            row
        })
        .collect();
    Ok(rows)
}

fn progress_bar(len: u64, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{spinner} embedding [{bar:30}] {pos}/{len} images  {per_sec}  ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb
}

/// Runs `sieve embed`: lists the input, embeds every record it can, lists the rest with a
/// reason, and writes the run directory.
pub fn embed(opts: &EmbedOptions) -> Result<RunManifest> {
    if opts.batch_size == 0 {
        return Err(Error::InvalidArg { what: "--batch-size", reason: "must be at least 1".into() });
    }
    let records = crate::ingest::dir::scan(&opts.input)?;
    tracing::info!("{} images found under {}", records.len(), opts.input.display());
    let device = device::open(opts.device)?;
    let dtype = device::compute_dtype(&device);
    let clip = Clip::load(&opts.model, &device, dtype)?;
    tracing::info!("model {} on {} ({dtype:?})", clip.info.id, device::describe(&device));
    let mut writer = RunWriter::create(&opts.out, opts.part_size, clip.model.embed_dim(), opts.overwrite)?;

    let pb = progress_bar(records.len() as u64, opts.progress);
    let started = Instant::now();
    let (tx, rx) = crossbeam_channel::bounded::<Batch>(2);
    std::thread::scope(|s| -> Result<()> {
        let clip_ref = &clip;
        let records_ref = &records;
        let limits = opts.limits;
        let batch_size = opts.batch_size;
        s.spawn(move || {
            for chunk in records_ref.chunks(batch_size) {
                if tx.send(prepare_batch(chunk, clip_ref, &limits)).is_err() {
                    break; // the embedding side stopped (with an error it reports)
                }
            }
        });
        for batch in rx.iter() {
            let n = batch.items.len() as u64;
            let rows = embed_batch(batch, &clip)?;
            writer.push(rows)?;
            pb.inc(n);
        }
        Ok(())
    })?;
    pb.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();

    let manifest = RunManifest {
        sieve_version: env!("CARGO_PKG_VERSION").to_string(),
        model: clip.info.clone(),
        device: device::describe(&device),
        compute_dtype: format!("{dtype:?}").to_lowercase(),
        storage_dtype: "float16".into(),
        embed_dim: clip.model.embed_dim(),
        preprocessing: clip.preprocessor.config().clone(),
        text_max_tokens: clip.tokenizer.max_len(),
        input: InputInfo { path: opts.input.display().to_string(), format: "dir".into() },
        limits: opts.limits,
        batch_size: opts.batch_size,
        part_size: opts.part_size,
        counts: Default::default(),
        parts: Vec::new(),
    };
    let manifest = writer.finish(manifest)?;
    tracing::info!(
        "embedded {} of {} records in {elapsed:.1}s ({:.1} images/s)",
        manifest.counts.embedded,
        manifest.counts.records,
        manifest.counts.records as f64 / elapsed.max(1e-9)
    );
    Ok(manifest)
}
