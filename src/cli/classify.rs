//! `sieve classify`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use sieve::classify::{Activation, ClassifyOptions, LayoutKind, Output};
use sieve::store::lock::{Mode, RunLock};

use super::search::SpaceArg;
use super::{print_json, Global};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActivationArg {
    /// No nonlinearity (the LAION aesthetic MLP).
    None,
    /// ReLU (the CLIP-based NSFW detectors).
    Relu,
    /// The exact (erf) GELU, as nn.GELU().
    Gelu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputArg {
    /// The last layer's values as they are.
    None,
    /// 1 / (1 + e^-x) of each output.
    Sigmoid,
    /// Softmax over the outputs.
    Softmax,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LayoutArg {
    /// `…weight` tensors shaped [out, in] (PyTorch nn.Linear).
    Torch,
    /// `…kernel` tensors shaped [in, out] (Keras Dense).
    Keras,
}

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// Run directory whose stored embeddings the head scores.
    pub run: PathBuf,

    /// The head: a safetensors file of dense layers (`….weight` [out, in] or `….kernel`
    /// [in, out], each with an optional `….bias`), applied in the natural order of their names.
    /// The first layer must take the run's embedding width.
    #[arg(long, value_name = "FILE")]
    pub head: PathBuf,

    /// Name of the outputs, RUN/classify/NAME.parquet and NAME.json [default: the head file's stem].
    #[arg(long)]
    pub name: Option<String>,

    /// Score the image embeddings or the caption embeddings.
    #[arg(long, value_enum, default_value_t = SpaceArg::Image)]
    pub space: SpaceArg,

    /// The activation between layers; required when the head has more than one layer.
    #[arg(long, value_enum)]
    pub activation: Option<ActivationArg>,

    /// What the last layer's outputs go through.
    #[arg(long, value_enum, default_value_t = OutputArg::None)]
    pub output: OutputArg,

    /// Which output (0-based) is the score; required when the head has several.
    #[arg(long)]
    pub class: Option<usize>,

    /// How the weights are laid out [default: from the tensor names].
    #[arg(long, value_enum)]
    pub layout: Option<LayoutArg>,
}

pub fn execute(args: ClassifyArgs, g: Global) -> anyhow::Result<()> {
    let opts = ClassifyOptions {
        run: args.run.clone(),
        head: args.head,
        name: args.name,
        caption: args.space == SpaceArg::Caption,
        layout: args.layout.map(|l| match l {
            LayoutArg::Torch => LayoutKind::Torch,
            LayoutArg::Keras => LayoutKind::Keras,
        }),
        activation: args.activation.map(|a| match a {
            ActivationArg::None => Activation::None,
            ActivationArg::Relu => Activation::Relu,
            ActivationArg::Gelu => Activation::Gelu,
        }),
        output: match args.output {
            OutputArg::None => Output::None,
            OutputArg::Sigmoid => Output::Sigmoid,
            OutputArg::Softmax => Output::Softmax,
        },
        class: args.class,
    };
    let _lock = RunLock::acquire(&args.run, Mode::Shared, "sieve classify")?;
    let s = sieve::classify::classify(&opts)?;
    if !g.quiet {
        let q = |k: &str| s.quantiles.get(k).map_or("-".to_string(), |v| format!("{v:.4}"));
        eprintln!(
            "sieve classify: {} {} embeddings scored by {} ({} layers), {} without one; median {}, p5 {}, p95 {}",
            s.scored,
            s.space,
            s.name,
            s.layers.len(),
            s.unscored,
            q("p50"),
            q("p05"),
            q("p95")
        );
        eprintln!("  scores -> {}", sieve::store::Layout::new(&args.run).classify(&s.name, "parquet").display());
    }
    print_json(g, &s)
}
