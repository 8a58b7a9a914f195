//! Caption tokenisation as transformers' `CLIPTokenizer` does it: the model's own `tokenizer.json`
//! (NFC, whitespace clean-up, lower-casing, CLIP's pre-tokeniser regex, byte-level BPE with `</w>`,
//! `<|startoftext|>` … `<|endoftext|>`), then truncation to the model's context length keeping
//! the end token. `tokenizer.json` files carry no truncation setting; we encode whole (so the
//! untruncated length is known) and cut here. SigLIP's SentencePiece tokenizer, read from
//! `spiece.model`, is [`super::siglip_text`].

use std::path::Path;

use tokenizers::Tokenizer;

use super::siglip_text::SiglipTokenizer;
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
enum Inner {
    /// A `tokenizer.json` (CLIP's BPE).
    Json(Box<Tokenizer>),
    /// SigLIP's `spiece.model`; its ids are padded to `max_len`.
    Siglip(Box<SiglipTokenizer>),
}

#[derive(Clone)]
pub struct TextTokenizer {
    inner: Inner,
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
        Ok(Self { inner: Inner::Json(Box::new(inner)), max_len, open_clip_clean: false })
    }

    /// SigLIP's tokenizer from `spiece.model` and, where the folder has one,
    /// `tokenizer_config.json`; ids come padded to `max_len`, as SigLIP was trained.
    pub fn siglip(spiece: &Path, config: Option<&Path>, max_len: usize) -> Result<Self> {
        Ok(Self {
            inner: Inner::Siglip(Box::new(SiglipTokenizer::from_files(spiece, config)?)),
            max_len,
            open_clip_clean: false,
        })
    }

    /// The id sequences are padded to `max_len` with this id (SigLIP), or not padded (`None`).
    pub fn pad_id(&self) -> Option<u32> {
        match &self.inner {
            Inner::Json(_) => None,
            Inner::Siglip(t) => Some(t.pad_id()),
        }
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

    /// Token ids with the start and end tokens, at most `max_len` of them (SigLIP's: exactly
    /// `max_len`, padded).
    pub fn encode(&self, caption: &str) -> Result<Tokens> {
        let inner = match &self.inner {
            Inner::Json(t) => t,
            Inner::Siglip(t) => {
                let (ids, len, truncated) = t.encode(caption, self.max_len)?;
                return Ok(Tokens { ids, truncated, len });
            }
        };
        let cleaned;
        let caption = if self.open_clip_clean {
            cleaned = super::textclean::open_clip_clean(caption);
            cleaned.as_str()
        } else {
            caption
        };
        let enc = inner.encode(caption, true).map_err(|e| Error::Tokenizer(format!("{e} (caption {caption:?})")))?;
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
