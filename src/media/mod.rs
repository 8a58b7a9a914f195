//! Media handling: decoding untrusted image bytes, CLIP image preprocessing, caption tokenisation.

pub mod decode;
pub mod fingerprint;
pub mod jpeg;
pub mod preprocess;
pub mod preprocess_config;
pub mod quality;
pub mod resample;
pub mod textclean;
pub mod thumbnail;
pub mod tokenize;
