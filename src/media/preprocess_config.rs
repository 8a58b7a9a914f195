//! An image processor's `preprocessor_config.json` (transformers' `CLIPImageProcessor` keys;
//! other families' processors use the same keys). Missing keys take `CLIPImageProcessor`'s
//! defaults. [`super::preprocess::Preprocessor`] runs it; `run.json` records it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A size given as `{"shortest_edge": n}` or `{"height": h, "width": w}` (or, in old files, a bare number).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum SizeSpec {
    ShortestEdge { shortest_edge: u32 },
    HeightWidth { height: u32, width: u32 },
    Square(u32),
}

/// `preprocessor_config.json` of a CLIP model (`CLIPImageProcessor`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PreprocessorConfig {
    pub do_resize: bool,
    pub size: SizeSpec,
    /// PIL resampling filter id; CLIP uses 3 (bicubic).
    pub resample: u32,
    pub do_center_crop: bool,
    pub crop_size: SizeSpec,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    pub do_convert_rgb: bool,
    /// torchvision's centre crop, as open_clip applies it: the offset `(size - crop) / 2`
    /// rounded half to even instead of truncated as transformers does. Not a transformers key;
    /// left out of `run.json` when false, so CLIP runs record the same bytes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub crop_round_half_even: bool,
    /// open_clip's `resize_mode: longest`: scale so the image fits inside `size` (each side
    /// rounded half to even), then centre crop or pad to `crop_size`. Not a transformers key;
    /// left out of `run.json` when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub resize_longest: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for PreprocessorConfig {
    fn default() -> Self {
        Self {
            do_resize: true,
            size: SizeSpec::ShortestEdge { shortest_edge: 224 },
            resample: 3,
            do_center_crop: true,
            crop_size: SizeSpec::HeightWidth { height: 224, width: 224 },
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            #[allow(clippy::excessive_precision)] // CLIP's published constants, digit for digit
            image_std: [0.268_629_54, 0.261_302_58, 0.275_777_1],
            do_convert_rgb: true,
            crop_round_half_even: false,
            resize_longest: false,
        }
    }
}

impl PreprocessorConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_file_over(path, &serde_json::Map::new())
    }

    /// The file's keys over `defaults` (another processor's defaults, such as
    /// `SiglipImageProcessor`'s), and `CLIPImageProcessor`'s for keys neither has.
    pub fn from_file_over(path: &Path, defaults: &serde_json::Map<String, serde_json::Value>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
        let mut value: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| Error::Json { path: path.into(), source })?;
        if let serde_json::Value::Object(map) = &mut value {
            for (k, v) in defaults {
                map.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let config: Self = serde_json::from_value(value).map_err(|source| Error::Json { path: path.into(), source })?;
        // A zero or non-finite std (or a non-finite mean) makes every pixel NaN or infinite.
        let bad = |v: &[f32; 3], zero_ok: bool| v.iter().any(|x| !x.is_finite() || (!zero_ok && *x == 0.0));
        if bad(&config.image_std, false) || bad(&config.image_mean, true) {
            return Err(Error::ModelFile {
                path: path.into(),
                reason: format!(
                    "image_mean {:?} / image_std {:?}: need finite values and a non-zero std",
                    config.image_mean, config.image_std
                ),
            });
        }
        Ok(config)
    }

    /// Output (height, width) of the centre crop, or of the resize when no crop is configured.
    pub fn output_size(&self) -> (u32, u32) {
        let spec = if self.do_center_crop { self.crop_size } else { self.size };
        match spec {
            SizeSpec::ShortestEdge { shortest_edge } => (shortest_edge, shortest_edge),
            SizeSpec::HeightWidth { height, width } => (height, width),
            SizeSpec::Square(n) => (n, n),
        }
    }
}
