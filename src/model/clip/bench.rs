//! Model-only throughput with random weights of a real model's shape, for `sieve bench` and the
//! comparison script `scripts/bench_vs_torch.py` (which runs transformers on the same shapes).

use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::Serialize;

use super::{random_model, ClipConfig, ClipModel};
use crate::error::Result;

/// Throughput of both towers at one batch size.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub device: String,
    pub dtype: String,
    pub batch_size: usize,
    pub iters: usize,
    /// Text sequence length used (the model's full context, as a padded batch would be).
    pub text_seq_len: usize,
    /// The CPU GEMM kernel (`linalg::kernel`), with `--quantize` followed by the int8 or bf16
    /// kernel (`avx512+bf16:Amx`): what a CPU figure was measured on.
    pub cpu_kernel: String,
    pub images_per_s: f64,
    pub captions_per_s: f64,
    /// With `--parity`: agreement with the same weights in f32 on the CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parity: Option<Parity>,
}

/// Random but valid inputs for a model: pixels in the normalised range and full-length token
/// sequences ending in `<|endoftext|>`. Benches reach it through `sieve::testing`.
pub(crate) fn random_inputs(config: &ClipConfig, batch: usize, seed: u64) -> Result<(Tensor, Vec<Vec<u32>>)> {
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
        cpu_kernel: crate::linalg::kernel().name().to_string(),
        images_per_s: n / img,
        captions_per_s: n / txt,
        parity: None,
    })
}

/// The same measurement for candle-transformers' stock CLIP (the baseline sieve's own model
/// code is compared with), with random weights of the same shape.
pub fn run_stock(config: &ClipConfig, device: &Device, batch: usize, iters: usize) -> Result<Throughput> {
    let dtype = crate::device::compute_dtype(device);
    let vb = crate::model::random::RandomWeights::new(0).var_builder(dtype, device);
    let model = super::stock::stock_model(vb, config)?;
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
        // candle's matmuls follow gemm's own detection, not SIEVE_CPU_KERNEL.
        cpu_kernel: crate::linalg::Kernel::available()[0].name().to_string(),
        images_per_s: n / img,
        captions_per_s: n / txt,
        parity: None,
    })
}

/// Builds a random-weight model from a config, quantised as `quantize` asks, and measures it
/// (and with `parity`, compares it with the same weights in f32 on the CPU on 8 inputs).
pub fn run(
    config: &ClipConfig,
    device: &Device,
    batch: usize,
    iters: usize,
    parity: bool,
    quantize: crate::model::Quantize,
) -> Result<Throughput> {
    let dtype = crate::device::compute_dtype(device);
    let mut model = random_model(config, device, dtype, 0)?;
    crate::model::check_quantize(device, dtype, quantize)?;
    // `None` packs f32 CPU weights for the fused path's kernel, as `model::load_quantized` does.
    model.quantize(quantize)?;
    let mut t = model_throughput(&model, batch, iters)?;
    t.dtype = quantize.compute_dtype(dtype);
    match quantize {
        crate::model::Quantize::None => {}
        crate::model::Quantize::Int8 => t.cpu_kernel += &format!("+int8:{:?}", crate::model::int8::kern()),
        crate::model::Quantize::Bf16 => t.cpu_kernel += &format!("+bf16:{:?}", crate::model::bf16::kern()),
    }
    if parity {
        t.parity = Some(self::parity(config, &model, 8)?);
    }
    Ok(t)
}

/// Lowest cosine similarity between the rows of two embedding matrices.
fn min_row_cosine(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let dot: f64 = x.iter().zip(y).map(|(p, q)| (*p as f64) * (*q as f64)).sum();
            let n = |v: &[f32]| v.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            dot / (n(x) * n(y)).max(1e-30)
        })
        .fold(f64::INFINITY, f64::min)
}

/// Agreement of a device model with the same weights in f32 on the CPU.
#[derive(Debug, Clone, Serialize)]
pub struct Parity {
    pub items: usize,
    pub min_cosine_images: f64,
    pub min_cosine_captions: f64,
}

/// Embeds `items` random inputs with `model` and with the same random weights in f32 on the
/// CPU, and compares.
pub fn parity(config: &ClipConfig, model: &ClipModel, items: usize) -> Result<Parity> {
    let cpu = random_model(config, &Device::Cpu, candle_core::DType::F32, 0)?;
    let (pixels, tokens) = random_inputs(config, items, 11)?;
    let a = model.embed_images(&pixels)?.to_vec2::<f32>()?;
    let b = cpu.embed_images(&pixels)?.to_vec2::<f32>()?;
    let c = model.embed_texts(&tokens)?.to_vec2::<f32>()?;
    let d = cpu.embed_texts(&tokens)?.to_vec2::<f32>()?;
    Ok(Parity { items, min_cosine_images: min_row_cosine(&a, &b), min_cosine_captions: min_row_cosine(&c, &d) })
}
