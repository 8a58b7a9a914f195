//! Caption tokenisation as transformers' `CLIPTokenizer` does it: the model's own `tokenizer.json`
//! (NFC, whitespace clean-up, lower-casing, CLIP's pre-tokeniser regex, byte-level BPE with `</w>`,
//! `<|startoftext|>` … `<|endoftext|>`), then truncation to the model's context length keeping
//! the end token. `tokenizer.json` files carry no truncation setting; we encode whole (so the
//! untruncated length is known) and cut here.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::{Error, Result};

/// Token ids of one caption and whether the caption had to be cut to fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    /// The caption was longer than the model's context and was truncated.
    pub truncated: bool,
    /// Tokens the caption takes before truncation, start and end tokens included.
    pub len: usize,
}

#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_len: usize,
    /// Clean captions as open_clip's tokenizer does first ([`super::textclean::open_clip_clean`]).
    open_clip_clean: bool,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("max_len", &self.max_len)
            .field("open_clip_clean", &self.open_clip_clean)
            .finish()
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json`; `max_len` is the text tower's `max_position_embeddings`.
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| Error::ModelFile { path: path.into(), reason: format!("not a valid tokenizer.json: {e}") })?;
        inner.with_truncation(None).map_err(|e| Error::Tokenizer(e.to_string()))?;
        inner.with_padding(None);
        Ok(Self { inner, max_len, open_clip_clean: false })
    }

    /// The same tokenizer, cleaning each caption as open_clip's does before encoding (ftfy's
    /// fixes, HTML unescaping, whitespace, lower case). open_clip's truncation is the one
    /// [`Self::encode`] applies: the first `max_len` tokens, the last replaced by the end token.
    pub fn with_open_clip_clean(mut self) -> Self {
        self.open_clip_clean = true;
        self
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Token ids with the start and end tokens, at most `max_len` of them.
    pub fn encode(&self, caption: &str) -> Result<Tokens> {
        let cleaned;
        let caption = if self.open_clip_clean {
            cleaned = super::textclean::open_clip_clean(caption);
            cleaned.as_str()
        } else {
            caption
        };
        let enc =
            self.inner.encode(caption, true).map_err(|e| Error::Tokenizer(format!("{e} (caption {caption:?})")))?;
        let ids = enc.get_ids();
        if ids.len() <= self.max_len {
            return Ok(Tokens { ids: ids.to_vec(), truncated: false, len: ids.len() });
        }
        // Right truncation keeping the end token, as the tokenizer's own truncation does for one
        // sequence; encoding whole first gives the untruncated length without a second pass.
        let mut cut = ids[..self.max_len - 1].to_vec();
        cut.push(*ids.last().expect("longer than max_len"));
        Ok(Tokens { ids: cut, truncated: true, len: ids.len() })
    }
}
