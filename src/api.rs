//! Embedding in memory, for callers that hold images and captions rather than a dataset on disk
//! (the Python package's `Model`). It goes through the same steps as `sieve embed` (decode with
//! [`decode::decode`], the encoder's preprocessor into [`HostPixels`], the encoder, f16
//! rounding as the run directory stores it), so a row equals the one `sieve embed` writes for the
//! same file with the same model and device.

use candle_core::{DType, Device};

use crate::device::{self, BatchSize, DeviceSpec, HostPixels};
use crate::error::{Error, Result};
use crate::media::decode::{self, Limits};
use crate::model::{Encoder, ModelSpec};
use crate::progress::{check_cancel, Progress};

/// A loaded model, its device and the batch size `sieve embed` would use with them.
#[derive(Debug)]
pub struct Embedder {
    encoder: Box<dyn Encoder>,
    device: Device,
    dtype: DType,
    batch_size: usize,
    limits: Limits,
}

impl Embedder {
    /// Loads `model` on `device` as `sieve embed --model --device --batch-size` does.
    pub fn load(model: &ModelSpec, device: DeviceSpec, batch_size: BatchSize) -> Result<Self> {
        Self::load_quantized(model, device, batch_size, crate::model::Quantize::None)
    }

    /// [`Embedder::load`] with `--quantize`'s choice (int8 on the CPU only).
    pub fn load_quantized(
        model: &ModelSpec,
        device: DeviceSpec,
        batch_size: BatchSize,
        quantize: crate::model::Quantize,
    ) -> Result<Self> {
        let device = device::open(device)?;
        let dtype = device::compute_dtype(&device);
        let encoder = crate::model::load_quantized(model, &device, dtype, quantize)?;
        let batch_size = device::resolve_batch_size(batch_size, &device, encoder.bytes_per_item());
        Ok(Self { encoder, device, dtype, batch_size, limits: Limits::default() })
    }

    /// The model's record (as in run.json).
    pub fn encoder(&self) -> &dyn Encoder {
        &*self.encoder
    }

    /// The device, as run.json describes it (`cpu`, `cuda:0 (…)`).
    pub fn device(&self) -> String {
        device::describe(&self.device)
    }

    /// Items per forward pass.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Embeds encoded image files (JPEG, PNG, … as bytes), one row per image, each a unit vector
    /// rounded to f16 as stored (returned as f32). An image that does not decode is an error
    /// naming its position and sieve's skip reason. Stops between batches after
    /// [`crate::progress::request_cancel`].
    pub fn embed_images(&self, images: &[Vec<u8>]) -> Result<Vec<Vec<f32>>> {
        let len = self.encoder.preprocessor().output_len();
        let (h, w) = self.encoder.preprocessor().output_size();
        let progress = Progress::with(images.len() as u64, "embedding", "images", false);
        let mut pixels = HostPixels::new(&self.device, self.dtype, self.batch_size.min(images.len()).max(1) * len);
        let mut rows = Vec::with_capacity(images.len());
        for (b, chunk) in images.chunks(self.batch_size).enumerate() {
            check_cancel()?;
            let decoded = pixels.fill(chunk.len(), len, |i, out| {
                decode::decode(&chunk[i], &self.limits)
                    .map(|d| self.encoder.preprocessor().preprocess_pixels(&d.rgb, out))
            })?;
            if let Some((i, skip)) = decoded.iter().enumerate().find_map(|(i, r)| r.as_ref().err().map(|s| (i, s))) {
                return Err(Error::InvalidArg {
                    what: "image",
                    reason: format!(
                        "item {} cannot be embedded: {} ({})",
                        b * self.batch_size + i,
                        skip.reason.code(),
                        skip.detail
                    ),
                });
            }
            let tensor = pixels.to_tensor(chunk.len(), (3, h as usize, w as usize), &self.device)?;
            rows.extend(stored(self.encoder.embed_images(&tensor)?.to_vec2()?));
            progress.inc(chunk.len() as u64);
        }
        Ok(rows)
    }

    /// Embeds captions as `sieve embed` embeds a record's caption (trimmed, cut to the default
    /// `--max-caption-bytes`, tokenised and truncated to the model's context), rounded to f16 as
    /// stored. A model without a text tower (DINOv2) is an error.
    pub fn embed_texts(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let Some(tokenizer) = self.encoder.tokenizer() else {
            return Err(Error::Model {
                reason: format!("{} has no text tower; it embeds images only", self.encoder.info().id),
            });
        };
        let progress = Progress::with(texts.len() as u64, "embedding", "captions", false);
        let mut rows = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.batch_size) {
            check_cancel()?;
            let ids = chunk
                .iter()
                .map(|t| {
                    let mut text = t.clone();
                    crate::pipeline::cut_caption(&mut text, self.limits.max_caption_bytes);
                    tokenizer.encode(text.trim()).map(|t| t.ids)
                })
                .collect::<Result<Vec<_>>>()?;
            rows.extend(stored(self.encoder.embed_texts(&ids)?.to_vec2()?));
            progress.inc(chunk.len() as u64);
        }
        Ok(rows)
    }
}

/// `rows` as the run directory stores them: every value rounded to f16.
fn stored(mut rows: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    for v in rows.iter_mut().flatten() {
        *v = half::f16::from_f32(*v).to_f32();
    }
    rows
}
