//! Media handling: decoding untrusted image bytes, CLIP image preprocessing, caption tokenisation
//! (`tokenizer.json`, or SigLIP's `spiece.model`).

pub mod decode;
pub mod fingerprint;
pub mod jpeg;
pub mod preprocess;
pub mod preprocess_config;
pub mod quality;
pub mod resample;
pub mod siglip_text;
pub mod spiece;
pub mod textclean;
pub mod thumbnail;
pub mod tokenize;
