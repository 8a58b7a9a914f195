//! `sieve bench`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use sieve::device::DeviceSpec;

use super::common::{device, disable_fast_paths, FastPathArg};
use super::Global;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// CLIP config.json (or an OpenCLIP open_clip_config.json) giving the model's shape.
    #[arg(long, default_value = "models/clip-vit-base-patch32/config.json")]
    pub config: PathBuf,

    /// Batch size.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,

    /// Timed iterations per tower (after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,

    /// Compute device: auto, cpu, cuda[:N] or metal[:N].
    #[arg(long, default_value = "auto", value_parser = device)]
    pub device: DeviceSpec,

    /// Compute the encoder layers' linear layers in int8 or bf16 (CPU only; see `sieve embed
    /// --quantize`). With --parity, the lowest cosine to f32 is printed.
    #[arg(long, value_name = "PRECISION", default_value = "none", conflicts_with = "stock")]
    pub quantize: super::embed::QuantizeArg,

    /// Measure candle-transformers' stock CLIP instead of sieve's model (the baseline).
    #[arg(long)]
    pub stock: bool,

    /// Also embed a few random inputs on the CPU in f32 and report the lowest cosine between
    /// those and the device's embeddings (a GPU's f16 against the reference precision).
    #[arg(long)]
    pub parity: bool,

    /// Turn off sieve's own CUDA kernels (comma-separated: attention, layernorm), to measure
    /// them against candle's ops with the same binary.
    #[arg(long, value_name = "KERNELS", value_delimiter = ',', env = "SIEVE_CUDA_DISABLE")]
    pub cuda_disable: Vec<FastPathArg>,

    /// Instead of the model, measure the CPU stage of `sieve embed` over the images in DIR
    /// (read, decode, resize, normalise, hash, tokenise captions; all cores): the rate the
    /// device can be fed at. Preprocessing follows --model's preprocessor_config.json. Every
    /// batch runs with and without the quality signals (alternating), and both rates and their
    /// ratio are printed.
    #[arg(long, value_name = "DIR")]
    pub decode: Option<PathBuf>,

    /// Model whose preprocessing --decode uses (a folder or Hub id).
    #[arg(long, default_value = "models/tiny-clip")]
    pub model: String,

    /// Write --count synthetic photo-like 500×375 JPEGs (quality 90) into DIR and exit; input
    /// for --decode and end-to-end timing on machines without a dataset.
    #[arg(long, value_name = "DIR", hide = true)]
    pub write_jpegs: Option<PathBuf>,

    /// Number of images for --write-jpegs.
    #[arg(long, default_value_t = 2000, hide = true)]
    pub count: usize,
}

pub fn execute(args: BenchArgs, g: Global) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if let Some(dir) = &args.write_jpegs {
        sieve::bench::write_jpegs(dir, args.count)?;
        eprintln!("sieve bench: wrote {} JPEGs to {}", args.count, dir.display());
        return Ok(());
    }
    if let Some(dir) = &args.decode {
        let model = sieve::model::ModelSpec::new(args.model.clone(), None);
        let r = sieve::pipeline::cpu_stage_rate(dir, &model, Default::default(), args.batch_size)?;
        if g.json {
            writeln!(out, "{}", serde_json::to_string(&r)?)?;
        } else {
            writeln!(
                out,
                "CPU stage: {} records ({} decoded) on {} threads: {:.1} images/s with quality signals \
                 ({:.2}s), {:.1} images/s without ({:.2}s): ratio {:.3} ({:+.1}%)",
                r.records,
                r.decoded,
                r.threads,
                r.images_per_s,
                r.seconds,
                r.images_per_s_without_signals,
                r.seconds_without_signals,
                r.signals_ratio,
                100.0 * (r.signals_ratio - 1.0)
            )?;
        }
        return Ok(());
    }
    disable_fast_paths(&args.cuda_disable);
    // An open_clip_config.json (OpenCLIP's layout) describes the same towers.
    let config = if args.config.file_name().is_some_and(|n| n == "open_clip_config.json") {
        sieve::model::openclip::OpenClipConfig::from_file(&args.config)?.clip
    } else {
        // Another family's config.json would parse as CLIP's with CLIP's defaults filled in,
        // and the figures would be for a model that does not exist.
        let family = sieve::model::Family::from_config(&args.config)?;
        if family != sieve::model::Family::Clip {
            anyhow::bail!(
                "{} is a {family:?} config; sieve bench measures CLIP-shaped towers only \
                 (SigLIP's and DINOv2's are in `cargo bench --bench model`)",
                args.config.display()
            );
        }
        sieve::model::clip::ClipConfig::from_file(&args.config)?
    };
    let device = sieve::device::open(args.device)?;
    let t = if args.stock {
        sieve::model::clip::bench::run_stock(&config, &device, args.batch_size, args.iters)
    } else {
        sieve::model::clip::bench::run(&config, &device, args.batch_size, args.iters, args.parity, args.quantize.into())
    }
    .with_context(|| format!("benchmarking {}", args.config.display()))?;
    if g.json {
        writeln!(out, "{}", serde_json::to_string(&t)?)?;
    } else {
        writeln!(
            out,
            "{} {} batch {}: {:.1} images/s, {:.1} captions/s (text length {}; kernel {})",
            t.device, t.dtype, t.batch_size, t.images_per_s, t.captions_per_s, t.text_seq_len, t.cpu_kernel
        )?;
        if let Some(p) = &t.parity {
            writeln!(
                out,
                "parity with f32 on the CPU ({} items): lowest cosine {:.6} images, {:.6} captions",
                p.items, p.min_cosine_images, p.min_cosine_captions
            )?;
        }
    }
    Ok(())
}
