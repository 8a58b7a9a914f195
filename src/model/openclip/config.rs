//! open_clip's `open_clip_config.json` (`model_cfg`, `preprocess_cfg`) translated into the CLIP
//! family's [`ClipConfig`] and a [`PreprocessorConfig`] that reproduces open_clip's
//! `image_transform` (torchvision on PIL images). Missing keys take open_clip's defaults
//! (`CLIPVisionCfg`, `CLIPTextCfg`, `PreprocessCfg`); a key that changes the architecture in a
//! way sieve does not build (ResNet or timm towers, Hugging Face text towers, layer scale,
//! attentional pooling, CoCa, a logit bias) is refused with its name.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::media::preprocess_config::{PreprocessorConfig, SizeSpec};
use crate::model::clip::{ClipConfig, TextConfig, VisionConfig};

/// What `open_clip_config.json` describes, in sieve's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenClipConfig {
    /// The towers as a CLIP config; text pooling at the highest token id (open_clip's
    /// `argmax`) is transformers' legacy rule, selected by `eos_token_id` 2.
    pub clip: ClipConfig,
    /// open_clip's eval transform.
    pub preprocess: PreprocessorConfig,
    /// Text weights under `text.` (`custom_text`, open_clip's `CustomTextCLIP`).
    pub custom_text: bool,
}

/// Keys whose value must be the default (`Value::Null` here also accepts a JSON null or a
/// missing key), with what sieve would need to honour another value.
const VISION_FIXED: &[(&str, Value)] = &[
    ("ls_init_value", Value::Null),
    ("attentional_pool", Value::Bool(false)),
    ("no_ln_pre", Value::Bool(false)),
    ("input_patchnorm", Value::Bool(false)),
    ("global_average_pool", Value::Bool(false)),
    ("act_kwargs", Value::Null),
    ("timm_model_name", Value::Null),
    ("qk_norm", Value::Bool(false)),
    ("scaled_cosine_attn", Value::Bool(false)),
    ("scale_heads", Value::Bool(false)),
    ("scale_attn_inner", Value::Bool(false)),
    ("scale_attn", Value::Bool(false)),
    ("scale_fc", Value::Bool(false)),
];
/// Keys that do not change inference (training-only, or equivalent for class-token pooling).
const VISION_FREE: &[&str] = &[
    "layers",
    "width",
    "head_width",
    "mlp_ratio",
    "patch_size",
    "image_size",
    "patch_dropout",
    "attn_pooler_queries",
    "attn_pooler_heads",
    "final_ln_after_pool",
    "output_tokens",
    "norm_kwargs",
    "pool_type",
    "pos_embed_type",
    "block_type",
    "timm_model_pretrained",
    "timm_pool",
    "timm_proj",
    "timm_proj_bias",
    "timm_drop",
    "timm_drop_path",
];
const TEXT_FIXED: &[(&str, Value)] = &[
    ("ls_init_value", Value::Null),
    ("embed_cls", Value::Bool(false)),
    ("no_causal_mask", Value::Bool(false)),
    ("proj_bias", Value::Bool(false)),
    ("act_kwargs", Value::Null),
    ("hf_model_name", Value::Null),
    ("hf_tokenizer_name", Value::Null),
    ("tokenizer_mode", Value::Null),
    ("tokenizer_kwargs", Value::Null),
    ("qk_norm", Value::Bool(false)),
    ("scaled_cosine_attn", Value::Bool(false)),
    ("scale_heads", Value::Bool(false)),
    ("scale_attn_inner", Value::Bool(false)),
    ("scale_attn", Value::Bool(false)),
    ("scale_fc", Value::Bool(false)),
];
const TEXT_FREE: &[&str] = &[
    "context_length",
    "vocab_size",
    "width",
    "heads",
    "layers",
    "mlp_ratio",
    "pad_id",
    "eos_id",
    "final_ln_after_pool",
    "pool_type",
    "proj_type",
    "output_tokens",
    "norm_kwargs",
    "block_type",
    "hf_model_pretrained",
    "hf_proj_type",
    "hf_pooler_type",
];

impl OpenClipConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|source| Error::Json { path: path.into(), source })?;
        Self::from_value(&value).map_err(|reason| Error::ModelFile { path: path.into(), reason })
    }

    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        let model = v.get("model_cfg").and_then(Value::as_object).ok_or("no `model_cfg` object")?;
        for (k, val) in model {
            match k.as_str() {
                "embed_dim" | "vision_cfg" | "text_cfg" | "quick_gelu" | "custom_text" | "cast_dtype"
                | "init_logit_scale" => {}
                "init_logit_bias" | "nonscalar_logit_scale" | "multimodal_cfg" if is_default(val, &Value::Null) => {}
                "nonscalar_logit_scale" if val == &Value::Bool(false) => {}
                other => return Err(format!("model_cfg.{other} = {val} is not something sieve loads (a CLIP ViT)")),
            }
        }
        let embed_dim = uint(model, "embed_dim", None, "model_cfg")?;
        let quick_gelu = model.get("quick_gelu").and_then(Value::as_bool).unwrap_or(false);
        let custom_text = model.get("custom_text").and_then(Value::as_bool).unwrap_or(false);
        let act = if quick_gelu { "quick_gelu" } else { "gelu" }.to_string();
        let empty = Map::new();
        let obj = |k: &str| -> std::result::Result<&Map<String, Value>, String> {
            match model.get(k) {
                None => Ok(&empty),
                Some(Value::Object(m)) => Ok(m),
                Some(other) => Err(format!("model_cfg.{k} is {other}, not an object")),
            }
        };
        let (vc, tc) = (obj("vision_cfg")?, obj("text_cfg")?);
        check_keys(vc, "vision_cfg", VISION_FIXED, VISION_FREE)?;
        check_keys(tc, "text_cfg", TEXT_FIXED, TEXT_FREE)?;
        for (cfg, name, key, want) in [
            (vc, "vision_cfg", "pool_type", "tok"),
            (vc, "vision_cfg", "pos_embed_type", "learnable"),
            (tc, "text_cfg", "pool_type", "argmax"),
            (tc, "text_cfg", "proj_type", "linear"),
        ] {
            if let Some(got) = cfg.get(key).filter(|g| !g.is_null()) {
                if got.as_str() != Some(want) {
                    return Err(format!("{name}.{key} = {got}: sieve builds only `{want}`"));
                }
            }
        }
        for (cfg, name) in [(vc, "vision_cfg"), (tc, "text_cfg")] {
            if let Some(b) = cfg.get("block_type").filter(|b| !b.is_null()) {
                if b.as_str() != Some("default") {
                    return Err(format!("{name}.block_type = {b}: sieve builds only the default block"));
                }
            }
        }
        if vc.get("layers").is_some_and(|l| !l.is_u64()) {
            return Err("vision_cfg.layers is not a number: a ResNet tower, which sieve does not build".into());
        }

        let width = uint(vc, "width", Some(768), "vision_cfg")?;
        let head_width = uint(vc, "head_width", Some(64), "vision_cfg")?;
        let image_size = square(vc, "image_size", 224)?;
        let vision = VisionConfig {
            hidden_size: width,
            intermediate_size: mlp(vc, width, "vision_cfg")?,
            num_hidden_layers: uint(vc, "layers", Some(12), "vision_cfg")?,
            num_attention_heads: width.checked_div(head_width).unwrap_or(0),
            num_channels: 3,
            image_size,
            patch_size: square(vc, "patch_size", 16)?,
            hidden_act: act.clone(),
            layer_norm_eps: eps(vc, "vision_cfg")?,
        };
        if head_width == 0 || width % head_width != 0 {
            return Err(format!("vision_cfg.width {width} is not a multiple of head_width {head_width}"));
        }
        let text = TextConfig {
            vocab_size: uint(tc, "vocab_size", Some(49408), "text_cfg")?,
            hidden_size: uint(tc, "width", Some(512), "text_cfg")?,
            intermediate_size: mlp(tc, uint(tc, "width", Some(512), "text_cfg")?, "text_cfg")?,
            num_hidden_layers: uint(tc, "layers", Some(12), "text_cfg")?,
            num_attention_heads: uint(tc, "heads", Some(8), "text_cfg")?,
            max_position_embeddings: uint(tc, "context_length", Some(77), "text_cfg")?,
            hidden_act: act,
            layer_norm_eps: eps(tc, "text_cfg")?,
            // transformers' legacy rule: pool at the highest id, as open_clip's `argmax`.
            eos_token_id: 2,
            bos_token_id: 0,
            pad_token_id: 0,
        };
        if text.vocab_size == 0 || text.max_position_embeddings == 0 || embed_dim == 0 {
            return Err("vocab_size, context_length and embed_dim must be positive".into());
        }
        let clip =
            ClipConfig { text_config: text, vision_config: vision, projection_dim: embed_dim, ..Default::default() };
        clip.validate()?;
        let preprocess = preprocess(v.get("preprocess_cfg"), image_size)?;
        Ok(Self { clip, preprocess, custom_text })
    }
}

fn is_default(v: &Value, default: &Value) -> bool {
    v == default || v.is_null() || (default.is_null() && v.as_object().is_some_and(Map::is_empty))
}

fn check_keys(
    cfg: &Map<String, Value>,
    name: &str,
    fixed: &[(&str, Value)],
    free: &[&str],
) -> std::result::Result<(), String> {
    for (k, v) in cfg {
        if free.contains(&k.as_str()) {
            continue;
        }
        match fixed.iter().find(|(f, _)| f == k) {
            Some((_, d)) if is_default(v, d) || (k == "hf_tokenizer_name" && v.as_str() == Some("")) => {}
            Some(_) => return Err(format!("{name}.{k} = {v}: not supported by sieve")),
            None => {
                return Err(format!("{name}.{k}: a key sieve does not know, so it cannot say the model is a CLIP ViT"))
            }
        }
    }
    Ok(())
}

fn uint(cfg: &Map<String, Value>, key: &str, default: Option<usize>, name: &str) -> std::result::Result<usize, String> {
    match (cfg.get(key), default) {
        (None, Some(d)) => Ok(d),
        (None, None) => Err(format!("{name} has no `{key}`")),
        (Some(v), _) => v
            .as_u64()
            .filter(|&n| n < (1 << 24))
            .map(|n| n as usize)
            .ok_or_else(|| format!("{name}.{key} = {v}: need a whole number")),
    }
}

/// A size given as a number or a square `[n, n]`.
fn square(cfg: &Map<String, Value>, key: &str, default: usize) -> std::result::Result<usize, String> {
    match cfg.get(key) {
        None => Ok(default),
        Some(Value::Array(a)) if a.len() == 2 && a[0] == a[1] => {
            a[0].as_u64().filter(|&n| n > 0 && n < (1 << 16)).map(|n| n as usize).ok_or(format!("{key}: {a:?}"))
        }
        Some(v) => v
            .as_u64()
            .filter(|&n| n > 0 && n < (1 << 16))
            .map(|n| n as usize)
            .ok_or_else(|| format!("{key} = {v}: need a positive number (or a square [n, n])")),
    }
}

/// open_clip's MLP width, `int(width * mlp_ratio)`.
fn mlp(cfg: &Map<String, Value>, width: usize, name: &str) -> std::result::Result<usize, String> {
    let ratio = match cfg.get("mlp_ratio") {
        None => 4.0,
        Some(v) => {
            v.as_f64().filter(|r| r.is_finite() && *r > 0.0 && *r < 64.0).ok_or(format!("{name}.mlp_ratio = {v}"))?
        }
    };
    Ok((width as f64 * ratio) as usize)
}

/// The LayerNorm epsilon: `norm_kwargs.eps`, else PyTorch's 1e-5.
fn eps(cfg: &Map<String, Value>, name: &str) -> std::result::Result<f64, String> {
    let Some(kw) = cfg.get("norm_kwargs").filter(|v| !v.is_null()) else { return Ok(1e-5) };
    let kw = kw.as_object().ok_or(format!("{name}.norm_kwargs = {kw}: not an object"))?;
    if let Some(k) = kw.keys().find(|k| k.as_str() != "eps") {
        return Err(format!("{name}.norm_kwargs.{k}: only eps is supported"));
    }
    match kw.get("eps") {
        None => Ok(1e-5),
        Some(e) => e.as_f64().filter(|e| e.is_finite() && *e > 0.0).ok_or(format!("{name}.norm_kwargs.eps = {e}")),
    }
}

/// open_clip's eval `image_transform` for `preprocess_cfg` as a [`PreprocessorConfig`].
fn preprocess(cfg: Option<&Value>, image_size: usize) -> std::result::Result<PreprocessorConfig, String> {
    let empty = Map::new();
    let cfg = match cfg {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(other) => return Err(format!("preprocess_cfg is {other}, not an object")),
    };
    let size = square(cfg, "size", image_size)?;
    if size != image_size {
        return Err(format!("preprocess_cfg.size {size} differs from the model's image_size {image_size}"));
    }
    let triple = |key: &str, default: [f32; 3]| -> std::result::Result<[f32; 3], String> {
        let bad = |v: &Value| format!("preprocess_cfg.{key} = {v}: need one or three finite numbers");
        let out = match cfg.get(key) {
            None | Some(Value::Null) => default,
            Some(Value::Array(a)) if a.len() == 3 => {
                let mut o = [0f32; 3];
                for (x, v) in o.iter_mut().zip(a) {
                    *x = v.as_f64().ok_or_else(|| bad(v))? as f32;
                }
                o
            }
            Some(v) => [v.as_f64().ok_or_else(|| bad(v))? as f32; 3],
        };
        if out.iter().any(|x| !x.is_finite()) || (key == "std" && out.contains(&0.0)) {
            return Err(format!("preprocess_cfg.{key} {out:?}: need finite values and a non-zero std"));
        }
        Ok(out)
    };
    let defaults = PreprocessorConfig::default();
    let s = size as u32;
    let mut p = PreprocessorConfig {
        image_mean: triple("mean", defaults.image_mean)?,
        image_std: triple("std", defaults.image_std)?,
        crop_size: SizeSpec::HeightWidth { height: s, width: s },
        crop_round_half_even: true,
        ..defaults
    };
    // open_clip maps anything but "bilinear" (including "random") to bicubic at eval.
    p.resample = match cfg.get("interpolation").and_then(Value::as_str) {
        Some("bilinear") => 2,
        None | Some("bicubic") | Some("random") => 3,
        Some(other) => {
            return Err(format!("preprocess_cfg.interpolation `{other}`: open_clip takes bicubic or bilinear"))
        }
    };
    match cfg.get("resize_mode").and_then(Value::as_str).unwrap_or("shortest") {
        "shortest" => p.size = SizeSpec::ShortestEdge { shortest_edge: s },
        "squash" => {
            p.size = SizeSpec::HeightWidth { height: s, width: s };
            p.do_center_crop = false;
        }
        "longest" => {
            p.size = SizeSpec::HeightWidth { height: s, width: s };
            p.resize_longest = true;
        }
        other => {
            return Err(format!("preprocess_cfg.resize_mode `{other}`: open_clip takes shortest, longest or squash"))
        }
    }
    if let Some(fill) = cfg.get("fill_color").filter(|f| f.as_u64() != Some(0) && !f.is_null()) {
        return Err(format!("preprocess_cfg.fill_color = {fill}: sieve pads with 0 only"));
    }
    if let Some(mode) = cfg.get("mode").filter(|m| m.as_str() != Some("RGB") && !m.is_null()) {
        return Err(format!("preprocess_cfg.mode = {mode}: open_clip takes RGB only"));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> std::result::Result<OpenClipConfig, String> {
        OpenClipConfig::from_value(&serde_json::from_str(s).unwrap())
    }

    #[test]
    fn defaults_are_open_clips() {
        let c = parse(r#"{"model_cfg": {"embed_dim": 512}}"#).unwrap();
        let v = &c.clip.vision_config;
        assert_eq!((v.hidden_size, v.num_attention_heads, v.intermediate_size, v.patch_size), (768, 12, 3072, 16));
        assert_eq!((v.hidden_act.as_str(), c.clip.text_config.hidden_size), ("gelu", 512));
        assert_eq!(c.preprocess.resample, 3);
        assert_eq!(c.preprocess.size, SizeSpec::ShortestEdge { shortest_edge: 224 });
    }

    #[test]
    fn unsupported_keys_are_named() {
        for (cfg, want) in [
            (r#"{"model_cfg": {"embed_dim": 8, "vision_cfg": {"layers": [3, 4, 6, 3]}}}"#, "ResNet"),
            (r#"{"model_cfg": {"embed_dim": 8, "text_cfg": {"hf_model_name": "xlm-roberta"}}}"#, "hf_model_name"),
            (r#"{"model_cfg": {"embed_dim": 8, "init_logit_bias": -10}}"#, "init_logit_bias"),
            (r#"{"model_cfg": {"embed_dim": 8, "vision_cfg": {"ls_init_value": 0.1}}}"#, "ls_init_value"),
            (r#"{"model_cfg": {"embed_dim": 8, "text_cfg": {"pool_type": "last"}}}"#, "pool_type"),
            (r#"{"model_cfg": {"embed_dim": 8, "vision_cfg": {"frobnicate": 1}}}"#, "frobnicate"),
            (r#"{"model_cfg": {"embed_dim": 8, "vision_cfg": {"width": 100, "head_width": 64}}}"#, "head_width"),
            (r#"{"model_cfg": {"embed_dim": 8}, "preprocess_cfg": {"resize_mode": "crop"}}"#, "resize_mode"),
            (r#"{"model_cfg": {"embed_dim": 8}, "preprocess_cfg": {"std": [0, 1, 1]}}"#, "std"),
            (r#"{"model_cfg": {"embed_dim": 8}, "preprocess_cfg": {"size": 336}}"#, "size"),
            (r#"{"model_cfg": {"vision_cfg": {}}}"#, "embed_dim"),
            (r#"{"model_cfg": {"embed_dim": 8, "text_cfg": {"heads": 0}}}"#, "num_attention_heads"),
            (r#"{"model_cfg": {"embed_dim": 8, "text_cfg": {"width": 30, "heads": 8}}}"#, "divisible"),
            (r#"{"model_cfg": {"embed_dim": 8, "vision_cfg": {"image_size": 224, "patch_size": 30}}}"#, "patch_size"),
            (r#"{"model_cfg": {"embed_dim": 8, "vision_cfg": {"head_width": 0}}}"#, "head_width"),
            (r#"{"model_cfg": {"embed_dim": 8, "vision_cfg": {"mlp_ratio": -1}}}"#, "mlp_ratio"),
            (r#"{"model_cfg": {"embed_dim": 8, "vision_cfg": {"norm_kwargs": {"eps": 0}}}}"#, "eps"),
            (r#"{"model_cfg": {"embed_dim": 8, "text_cfg": {"context_length": 0}}}"#, "context_length"),
            (r#"{"model": {}}"#, "model_cfg"),
            (r#"[]"#, "model_cfg"),
        ] {
            let e = parse(cfg).unwrap_err();
            assert!(e.contains(want), "{cfg}: {e}");
        }
    }
}
