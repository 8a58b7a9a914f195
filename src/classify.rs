//! `sieve classify`: a small published head (a linear layer or an MLP, in safetensors) applied
//! to a run's stored embeddings, the way the LAION aesthetic predictor and the CLIP-based NSFW
//! detectors are used: no image is decoded and no encoder runs. The user brings the weights.
//!
//! **The head file.** Its layers are the tensors named `….weight` (PyTorch's `nn.Linear`,
//! `[out, in]`) or `….kernel` (Keras' `Dense`, `[in, out]`), each with an optional `….bias`
//! beside it, in the natural order of their names (`layers.2` before `layers.10`). The first
//! layer's input must be the run's embedding width and each layer's input the previous one's
//! output. Between layers comes `activation` (required when there is more than one layer: the
//! LAION aesthetic MLP has none, the NSFW detector ReLU, and guessing would be silently wrong);
//! after the last, `output` (none, sigmoid or softmax). Dropout layers hold no weights and do
//! nothing at inference, as in the references.
//!
//! **Outputs.** `RUN/classify/NAME.parquet` (id, uri, score, percentile; null where the item
//! has no embedding of the chosen space) and `RUN/classify/NAME.json` (the head's file digest and
//! shapes, what was applied, counts and score quantiles), both written atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float32Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::{write_atomic, write_parquet_atomic, Layout, Run};

/// The nonlinearity between layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    None,
    Relu,
    /// The exact (erf) GELU, as `nn.GELU()`.
    Gelu,
}

/// What the last layer's outputs go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    None,
    Sigmoid,
    Softmax,
}

/// How the weights are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutKind {
    /// `….weight` `[out, in]`.
    Torch,
    /// `….kernel` `[in, out]`.
    Keras,
}

/// One dense layer, weights row-major `[out, in]`.
#[derive(Debug, Clone)]
struct Dense {
    name: String,
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
}

impl Dense {
    fn outputs(&self) -> usize {
        self.bias.len()
    }
}

/// The most a head may hold: far above any published embedding head (the LAION aesthetic MLP
/// has 0.9 M weights), far below what would exhaust memory.
const MAX_WEIGHTS: usize = 1 << 28;
const MAX_LAYERS: usize = 64;

/// A loaded head.
#[derive(Debug, Clone)]
pub struct Head {
    layers: Vec<Dense>,
    pub layout: LayoutKind,
    pub activation: Activation,
    pub output: Output,
    /// SHA-256 of the file.
    pub sha256: String,
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::ModelFile { path: path.to_path_buf(), reason: reason.into() }
}

/// Names compared with their digit runs as numbers (`layers.2` < `layers.10`).
fn natural_key(name: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut digits = String::new();
    let mut text = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            if !text.is_empty() {
                out.push((u64::MAX, std::mem::take(&mut text)));
            }
            digits.push(c);
        } else {
            if !digits.is_empty() {
                out.push((digits.parse().unwrap_or(u64::MAX - 1), String::new()));
                digits.clear();
            }
            text.push(c);
        }
    }
    if !digits.is_empty() {
        out.push((digits.parse().unwrap_or(u64::MAX - 1), String::new()));
    }
    if !text.is_empty() {
        out.push((u64::MAX, text));
    }
    out
}

fn to_f32(path: &Path, name: &str, t: &safetensors::tensor::TensorView) -> Result<Vec<f32>> {
    use safetensors::Dtype;
    let b = t.data();
    let v: Vec<f32> = match t.dtype() {
        Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::F64 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        other => return Err(bad(path, format!("tensor {name} is {other:?}; a head's weights are floats"))),
    };
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(bad(path, format!("tensor {name} holds a non-finite value at {i}")));
    }
    Ok(v)
}

impl Head {
    /// Loads `path`; `inputs` is the run's embedding width. `layout` `None` reads it from the
    /// tensor names.
    pub fn load(
        path: &Path,
        inputs: usize,
        layout: Option<LayoutKind>,
        activation: Option<Activation>,
        output: Output,
    ) -> Result<Head> {
        // Refuse a file too large to hold a head before reading it (f64 weights at most, and a
        // header): a model checkpoint given by mistake is not read into memory.
        let size = std::fs::metadata(path).map_err(|e| Error::io("reading the head", path, e))?.len();
        if size > (MAX_WEIGHTS as u64) * 8 + (1 << 20) {
            return Err(bad(path, format!("{size} bytes; an embedding head has at most {MAX_WEIGHTS} weights")));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io("reading the head", path, e))?;
        let sha256 = crate::digest::sha256_bytes(&bytes);
        let tensors = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(path, format!("not a safetensors file: {e}")))?;
        let names: Vec<String> = tensors.names().into_iter().map(String::from).collect();
        let has = |suffix: &str| {
            names
                .iter()
                .any(|n| n == suffix || n.ends_with(&format!(".{suffix}")) || n.ends_with(&format!("/{suffix}")))
        };
        let layout = match layout {
            Some(l) => l,
            None => match (has("weight"), has("kernel")) {
                (true, false) => LayoutKind::Torch,
                (false, true) => LayoutKind::Keras,
                (true, true) => {
                    return Err(bad(path, "it has both `weight` and `kernel` tensors; say which with --layout"))
                }
                (false, false) => {
                    return Err(bad(path, "no `…weight` (PyTorch) or `…kernel` (Keras) tensor: not a dense head"))
                }
            },
        };
        let suffix = match layout {
            LayoutKind::Torch => "weight",
            LayoutKind::Keras => "kernel",
        };
        // prefix → the weight's name, for every layer.
        let mut found: Vec<(String, String)> = names
            .iter()
            .filter_map(|n| {
                if n == suffix {
                    Some((String::new(), n.clone()))
                } else {
                    n.strip_suffix(suffix)
                        .filter(|p| p.ends_with('.') || p.ends_with('/'))
                        .map(|p| (p.to_string(), n.clone()))
                }
            })
            .collect();
        if found.is_empty() {
            return Err(bad(path, format!("no `…{suffix}` tensor ({layout:?} layout)")));
        }
        if found.len() > MAX_LAYERS {
            return Err(bad(path, format!("{} layers; at most {MAX_LAYERS}", found.len())));
        }
        found.sort_by_key(|(prefix, _)| natural_key(prefix));
        let mut layers = Vec::new();
        let mut total = 0usize;
        let mut width = inputs;
        for (prefix, wname) in &found {
            let w = tensors.tensor(wname).map_err(|e| bad(path, e.to_string()))?;
            let shape = w.shape().to_vec();
            let (out, inp) = match (layout, shape.as_slice()) {
                (LayoutKind::Torch, &[o, i]) => (o, i),
                (LayoutKind::Keras, &[i, o]) => (o, i),
                (LayoutKind::Torch, &[o]) if layers.is_empty() && o == width => (1, o),
                _ => return Err(bad(path, format!("tensor {wname} has shape {shape:?}; a dense layer's is 2-d"))),
            };
            total = total.saturating_add(out.saturating_mul(inp));
            if total > MAX_WEIGHTS {
                return Err(bad(path, format!("more than {MAX_WEIGHTS} weights; not an embedding head")));
            }
            if inp != width && layers.is_empty() {
                // A head made for another encoder: the user named the wrong file (exit 2).
                return Err(Error::InvalidArg {
                    what: "--head",
                    reason: format!(
                        "{}: its first layer {wname} takes {inp} inputs, the run's embeddings have {width} \
                         (a head for another model?)",
                        path.display()
                    ),
                });
            }
            if inp != width {
                return Err(bad(path, format!("layer {wname} takes {inp} inputs, the previous layer gives {width}")));
            }
            let raw = to_f32(path, wname, &w)?;
            let weight = match layout {
                LayoutKind::Torch => raw,
                // [in, out] → [out, in].
                LayoutKind::Keras => (0..out * inp).map(|x| raw[(x % inp) * out + x / inp]).collect(),
            };
            let bname = format!("{prefix}bias");
            let bias = match tensors.tensor(&bname) {
                Ok(b) => {
                    let v = to_f32(path, &bname, &b)?;
                    if v.len() != out {
                        return Err(bad(path, format!("{bname} has {} values, its layer {out} outputs", v.len())));
                    }
                    v
                }
                Err(_) => vec![0.0; out],
            };
            layers.push(Dense { name: wname.clone(), weight, bias, inputs: inp });
            width = out;
        }
        let activation = match activation {
            Some(a) => a,
            None if layers.len() == 1 => Activation::None,
            None => {
                return Err(Error::InvalidArg {
                    what: "--activation",
                    reason: format!(
                        "{} has {} layers; say which activation comes between them \
                         (none for the LAION aesthetic MLP, relu for the NSFW detector)",
                        path.display(),
                        layers.len()
                    ),
                })
            }
        };
        Ok(Head { layers, layout, activation, output, sha256 })
    }

    /// The number of outputs.
    pub fn outputs(&self) -> usize {
        self.layers.last().map_or(0, Dense::outputs)
    }

    /// `(name, inputs, outputs)` per layer.
    pub fn shapes(&self) -> Vec<(String, usize, usize)> {
        self.layers.iter().map(|l| (l.name.clone(), l.inputs, l.outputs())).collect()
    }

    /// The head on `rows` rows of `x` (row-major), `rows × outputs()` values.
    pub fn apply(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut cur = x.to_vec();
        for (i, l) in self.layers.iter().enumerate() {
            let n = l.outputs();
            let mut next: Vec<f32> = (0..rows).flat_map(|_| l.bias.iter().copied()).collect();
            crate::linalg::matmul_wt(&mut next, &cur, &l.weight, rows, n, l.inputs, true, crate::linalg::threads());
            if i + 1 < self.layers.len() {
                match self.activation {
                    Activation::None => {}
                    Activation::Relu => next.iter_mut().for_each(|v| *v = v.max(0.0)),
                    Activation::Gelu => next.iter_mut().for_each(|v| *v = gelu(*v)),
                }
            }
            cur = next;
        }
        let n = self.outputs();
        match self.output {
            Output::None => {}
            Output::Sigmoid => cur.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
            Output::Softmax => cur.chunks_mut(n).for_each(|r| {
                let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = r
                    .iter_mut()
                    .map(|v| {
                        *v = (*v - max).exp();
                        *v
                    })
                    .sum();
                r.iter_mut().for_each(|v| *v /= sum);
            }),
        }
        cur
    }
}

/// The exact GELU, `x·Φ(x)`, through libm's erf.
fn gelu(x: f32) -> f32 {
    (0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2))) as f32
}

/// What to classify.
#[derive(Debug, Clone)]
pub struct ClassifyOptions {
    pub run: PathBuf,
    pub head: PathBuf,
    /// The outputs' name (`RUN/classify/NAME.*`); the head file's stem when `None`.
    pub name: Option<String>,
    /// Apply to the caption embeddings instead of the image ones.
    pub caption: bool,
    pub layout: Option<LayoutKind>,
    pub activation: Option<Activation>,
    pub output: Output,
    /// Which output is the score (required when the head has several).
    pub class: Option<usize>,
}

/// `RUN/classify/NAME.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub name: String,
    pub head: String,
    pub head_sha256: String,
    pub layout: LayoutKind,
    /// `[inputs, outputs]` per layer, in order.
    pub layers: Vec<[usize; 2]>,
    pub activation: Activation,
    pub output: Output,
    pub class: usize,
    pub space: &'static str,
    pub run_fingerprint: String,
    /// Items scored, and items without an embedding of the space (null scores).
    pub scored: usize,
    pub unscored: usize,
    pub mean: Option<f64>,
    /// Score quantiles (p1, p5, p25, p50, p75, p95, p99, by the nearest rank).
    pub quantiles: BTreeMap<String, f32>,
}

/// A usable name for the outputs: letters, digits, `-`, `_`, `.` (not leading), ≤ 64 bytes.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArg {
            what: "--name",
            reason: format!("{name:?}: use 1–64 ASCII letters, digits, '-', '_' or '.', not starting with '.'"),
        })
    }
}

/// Percentiles as pandas' `rank(pct=True) * 100` (ties share their average rank).
pub fn percentiles(scores: &[f32]) -> Vec<f32> {
    let n = scores.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut out = vec![0f32; n];
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = (100.0 * avg_rank / n as f64) as f32;
        }
        i = j + 1;
    }
    out
}

/// Runs the head over `opts.run` and writes its outputs.
pub fn classify(opts: &ClassifyOptions) -> Result<Summary> {
    let run = Run::open(&opts.run)?;
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => opts.head.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    check_name(&name)?;
    let d = run.manifest.embed_dim;
    let head = Head::load(&opts.head, d, opts.layout, opts.activation, opts.output)?;
    let outputs = head.outputs();
    let class = match opts.class {
        Some(c) if c < outputs => c,
        Some(c) => {
            return Err(Error::InvalidArg {
                what: "--class",
                reason: format!("{c}: the head has {outputs} outputs (0-based)"),
            })
        }
        None if outputs == 1 => 0,
        None => {
            return Err(Error::InvalidArg {
                what: "--class",
                reason: format!("the head has {outputs} outputs; say which one is the score (0-based)"),
            })
        }
    };
    if opts.caption && !(run.manifest.model.family.has_text() && run.manifest.counts.with_caption > 0) {
        return Err(Error::InvalidArg {
            what: "--space",
            reason: format!("{} holds no caption embeddings", run.dir.display()),
        });
    }
    let total = run.meta.id.len();
    let mut score: Vec<Option<f32>> = vec![None; total];
    let mut start = 0;
    for (p, &rows) in run.part_rows.iter().enumerate() {
        let values = run.embedding_part(opts.caption, p)?;
        let out = head.apply(&values, rows);
        for r in 0..rows {
            let g = start + r;
            let live = run.meta.embedded[g] && (!opts.caption || run.meta.caption[g].is_some());
            if live {
                score[g] = Some(out[r * outputs + class]);
            }
        }
        start += rows;
    }
    let live: Vec<f32> = score.iter().flatten().copied().collect();
    let pct = percentiles(&live);
    let mut pct_all: Vec<Option<f32>> = vec![None; total];
    let mut next = pct.iter();
    for (g, s) in score.iter().enumerate() {
        if s.is_some() {
            pct_all[g] = next.next().copied();
        }
    }
    let mut sorted = live.clone();
    sorted.sort_by(f32::total_cmp);
    let quantiles = if sorted.is_empty() {
        BTreeMap::new()
    } else {
        [1, 5, 25, 50, 75, 95, 99]
            .iter()
            .map(|&q| {
                let rank = ((q as f64 / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
                (format!("p{q:02}"), sorted[rank - 1])
            })
            .collect()
    };
    let layout = Layout::new(&opts.run);
    std::fs::create_dir_all(layout.classify_dir()).map_err(|e| Error::io("creating", layout.classify_dir(), e))?;
    let path = layout.classify(&name, "parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::UInt64, false),
        Field::new("uri", DataType::Utf8, false),
        Field::new("score", DataType::Float32, true),
        Field::new("percentile", DataType::Float32, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(run.meta.id.iter().copied())),
        Arc::new(StringArray::from_iter_values(run.meta.uri.iter())),
        Arc::new(score.iter().copied().collect::<Float32Array>()),
        Arc::new(pct_all.iter().copied().collect::<Float32Array>()),
    ];
    let batch =
        RecordBatch::try_new(schema, columns).map_err(|e| Error::Parquet { path: path.clone(), source: e.into() })?;
    write_parquet_atomic(&path, &batch)?;
    let summary = Summary {
        name: name.clone(),
        head: opts.head.display().to_string(),
        head_sha256: head.sha256.clone(),
        layout: head.layout,
        layers: head.shapes().iter().map(|(_, i, o)| [*i, *o]).collect(),
        activation: head.activation,
        output: head.output,
        class,
        space: if opts.caption { "caption" } else { "image" },
        run_fingerprint: run.fingerprint.clone(),
        scored: live.len(),
        unscored: total - live.len(),
        mean: (!live.is_empty()).then(|| live.iter().map(|&v| v as f64).sum::<f64>() / live.len() as f64),
        quantiles,
    };
    let json = serde_json::to_vec_pretty(&summary).map_err(|e| Error::Pipeline(e.to_string()))?;
    write_atomic(&layout.classify(&name, "json"), |w| std::io::Write::write_all(w, &json))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_puts_ten_after_two() {
        let mut v = vec!["layers.10.", "layers.2.", "layers.0.", "head."];
        v.sort_by_key(|s| natural_key(s));
        assert_eq!(v, ["head.", "layers.0.", "layers.2.", "layers.10."]);
    }

    #[test]
    fn percentiles_are_pandas_average_ranks() {
        // pandas: pd.Series([3, 1, 2, 2]).rank(pct=True) * 100 == [100, 25, 62.5, 62.5]
        assert_eq!(percentiles(&[3.0, 1.0, 2.0, 2.0]), vec![100.0, 25.0, 62.5, 62.5]);
        assert!(percentiles(&[]).is_empty());
    }

    #[test]
    fn names_that_could_leave_the_folder_are_refused() {
        for bad in ["", "../x", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("laion-aesthetic_v2.1").unwrap();
    }

    /// Heads written by torch (scripts/make_head_fixtures.py): the same outputs within f32
    /// rounding for a PyTorch MLP with ReLU, a Keras-layout stack with GELU and softmax, the
    /// LAION aesthetic MLP's layer names without activation, and a single linear layer.
    #[test]
    fn heads_match_torch() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/heads");
        let cases: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("cases.json")).unwrap()).unwrap();
        let x: Vec<f32> = cases["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32))
            .collect();
        let rows = cases["inputs"].as_array().unwrap().len();
        let dim = x.len() / rows;
        let mut checked = 0;
        for case in cases["heads"].as_array().unwrap() {
            let parse = |k: &str| case[k].as_str().unwrap().to_string();
            let activation = match parse("activation").as_str() {
                "relu" => Activation::Relu,
                "gelu" => Activation::Gelu,
                _ => Activation::None,
            };
            let output = match parse("output").as_str() {
                "sigmoid" => Output::Sigmoid,
                "softmax" => Output::Softmax,
                _ => Output::None,
            };
            let head = Head::load(&dir.join(parse("file")), dim, None, Some(activation), output).unwrap();
            let want: Vec<f32> = case["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32))
                .collect();
            let got = head.apply(&x, rows);
            assert_eq!(got.len(), want.len(), "{}", parse("file"));
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(worst < 1e-5, "{}: off by {worst}", parse("file"));
            checked += 1;
        }
        assert_eq!(checked, 4);
    }
}
