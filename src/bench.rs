//! Model-only throughput with random weights of a real model's shape, for `sieve bench` and the
//! comparison script `scripts/bench_vs_torch.py` (which runs transformers on the same shapes).

use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::error::Result;
use crate::model::{random_model, ClipConfig, ClipModel};

/// Throughput of both towers at one batch size.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub device: String,
    pub dtype: String,
    pub batch_size: usize,
    pub iters: usize,
    /// Text sequence length used (the model's full context, as a padded batch would be).
    pub text_seq_len: usize,
    pub images_per_s: f64,
    pub captions_per_s: f64,
}

/// Random but valid inputs for a model: pixels in the normalised range and full-length token
/// sequences ending in `<|endoftext|>`.
pub fn random_inputs(config: &ClipConfig, batch: usize, seed: u64) -> Result<(Tensor, Vec<Vec<u32>>)> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let s = config.vision_config.image_size;
    let pixels: Vec<f32> = (0..batch * 3 * s * s).map(|_| rng.random_range(-1.8f32..2.1)).collect();
    let pixels = Tensor::from_vec(pixels, (batch, 3, s, s), &Device::Cpu)?;
    let t = &config.text_config;
    let eos = if t.eos_token_id == 2 { t.vocab_size as u32 - 1 } else { t.eos_token_id };
    let tokens = (0..batch)
        .map(|_| {
            let mut ids: Vec<u32> = (0..t.max_position_embeddings - 1).map(|_| rng.random_range(1..eos)).collect();
            ids.push(eos);
            ids
        })
        .collect();
    Ok((pixels, tokens))
}

fn time<F: FnMut() -> Result<()>>(iters: usize, mut f: F) -> Result<f64> {
    f()?; // warm-up (allocations, kernels)
    let start = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Measures images/s and captions/s of `model` at `batch` (outputs are copied to the host each
/// iteration, which also synchronises a GPU).
pub fn model_throughput(model: &ClipModel, batch: usize, iters: usize) -> Result<Throughput> {
    let (pixels, tokens) = random_inputs(model.config(), batch, 7)?;
    let pixels = pixels.to_device(model.device())?;
    let img = time(iters, || {
        model.embed_images(&pixels)?.to_vec2::<f32>()?;
        Ok(())
    })?;
    let txt = time(iters, || {
        model.embed_texts(&tokens)?.to_vec2::<f32>()?;
        Ok(())
    })?;
    let n = (batch * iters) as f64;
    Ok(Throughput {
        device: crate::device::describe(model.device()),
        dtype: format!("{:?}", model.dtype()).to_lowercase(),
        batch_size: batch,
        iters,
        text_seq_len: model.config().text_config.max_position_embeddings,
        images_per_s: n / img,
        captions_per_s: n / txt,
    })
}

/// The same measurement for candle-transformers' stock CLIP (the baseline sieve's own model
/// code is compared with), with random weights of the same shape.
pub fn run_stock(config: &ClipConfig, device: &Device, batch: usize, iters: usize) -> Result<Throughput> {
    let dtype = crate::device::compute_dtype(device);
    let vb = crate::model::RandomWeights::new(0).var_builder(dtype, device);
    let model = crate::model::stock::stock_model(vb, config)?;
    let (pixels, tokens) = random_inputs(config, batch, 7)?;
    let pixels = pixels.to_device(device)?.to_dtype(dtype)?;
    let ids: Vec<u32> = tokens.concat();
    let ids = Tensor::from_vec(ids, (batch, config.text_config.max_position_embeddings), device)?;
    let img = time(iters, || {
        model.get_image_features(&pixels)?.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        Ok(())
    })?;
    let txt = time(iters, || {
        model.get_text_features(&ids)?.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        Ok(())
    })?;
    let n = (batch * iters) as f64;
    Ok(Throughput {
        device: format!("{} (candle-transformers stock CLIP)", crate::device::describe(device)),
        dtype: format!("{dtype:?}").to_lowercase(),
        batch_size: batch,
        iters,
        text_seq_len: config.text_config.max_position_embeddings,
        images_per_s: n / img,
        captions_per_s: n / txt,
    })
}

/// Builds a random-weight model from a config and measures it.
pub fn run(config: &ClipConfig, device: &Device, batch: usize, iters: usize) -> Result<Throughput> {
    let model = random_model(config, device, crate::device::compute_dtype(device), 0)?;
    model_throughput(&model, batch, iters)
}
