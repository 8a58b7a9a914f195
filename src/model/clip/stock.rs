//! candle-transformers' stock CLIP, configured from a `config.json` (it ships only presets).
//! sieve does not embed with it; it is the baseline that `sieve bench --stock` measures and an
//! independent second implementation the tests compare sieve's towers against.

use candle_nn::VarBuilder;
use candle_transformers::models::clip::{self, text_model, vision_model};

use super::config::ClipConfig;
use crate::error::{Error, Result};
use crate::model::layers::Activation;

/// The stock model's configuration for `c`. It supports QuickGELU only.
pub fn stock_config(c: &ClipConfig) -> Result<clip::ClipConfig> {
    let (t, v) = (&c.text_config, &c.vision_config);
    for act in [&t.hidden_act, &v.hidden_act] {
        if Activation::parse(act)? != Activation::QuickGelu {
            return Err(Error::Model {
                reason: format!("candle-transformers' stock CLIP supports quick_gelu only, not {act}"),
            });
        }
    }
    Ok(clip::ClipConfig {
        text_config: text_model::ClipTextConfig {
            vocab_size: t.vocab_size,
            embed_dim: t.hidden_size,
            activation: text_model::Activation::QuickGelu,
            intermediate_size: t.intermediate_size,
            max_position_embeddings: t.max_position_embeddings,
            pad_with: None,
            num_hidden_layers: t.num_hidden_layers,
            num_attention_heads: t.num_attention_heads,
            projection_dim: c.projection_dim,
        },
        vision_config: vision_model::ClipVisionConfig {
            embed_dim: v.hidden_size,
            activation: text_model::Activation::QuickGelu,
            intermediate_size: v.intermediate_size,
            num_hidden_layers: v.num_hidden_layers,
            num_attention_heads: v.num_attention_heads,
            projection_dim: c.projection_dim,
            num_channels: v.num_channels,
            image_size: v.image_size,
            patch_size: v.patch_size,
        },
        logit_scale_init_value: c.logit_scale_init_value as f32,
        image_size: v.image_size,
    })
}

/// The stock model over the same weights sieve's [`super::ClipModel`] loads.
pub fn stock_model(vb: VarBuilder, c: &ClipConfig) -> Result<clip::ClipModel> {
    Ok(clip::ClipModel::new(vb, &stock_config(c)?)?)
}
