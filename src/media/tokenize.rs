//! Caption tokenisation as transformers' `CLIPTokenizer` does it: the model's own `tokenizer.json`
//! (NFC, whitespace clean-up, lower-casing, CLIP's pre-tokeniser regex, byte-level BPE with `</w>`,
//! `<|startoftext|>` … `<|endoftext|>`), then truncation to the model's context length keeping
//! the end token. `tokenizer.json` files carry no truncation setting, so we set it here.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result};

/// Token ids of one caption and whether the caption had to be cut to fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    /// The caption was longer than the model's context and was truncated.
    pub truncated: bool,
}

#[derive(Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    max_len: usize,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer").field("max_len", &self.max_len).finish()
    }
}

impl ClipTokenizer {
    /// Loads `tokenizer.json`; `max_len` is the text tower's `max_position_embeddings`.
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| Error::ModelFile { path: path.into(), reason: format!("not a valid tokenizer.json: {e}") })?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                direction: TruncationDirection::Right,
                stride: 0,
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        inner.with_padding(None);
        Ok(Self { inner, max_len })
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Token ids with the start and end tokens, at most `max_len` of them.
    pub fn encode(&self, caption: &str) -> Result<Tokens> {
        let enc =
            self.inner.encode(caption, true).map_err(|e| Error::Tokenizer(format!("{e} (caption {caption:?})")))?;
        Ok(Tokens { ids: enc.get_ids().to_vec(), truncated: !enc.get_overflowing().is_empty() })
    }
}
