//! Caption tokenisation as transformers' `SiglipTokenizer` does it, from the model's
//! `spiece.model` (SigLIP repos ship no `tokenizer.json`) and `tokenizer_config.json`:
//!
//! 1. `▁` in the caption becomes a space and one `▁` is put in front;
//! 2. the text is split at the special tokens (`</s>`, `<unk>`, the pad token), which map to
//!    their ids;
//! 3. each other piece is canonicalised (`canonicalize_text`): lower-cased (Python's
//!    `str.lower`), ASCII punctuation (`string.punctuation`) removed, runs of whitespace
//!    (Python's `\s`) made one space, stripped;
//! 4. and encoded by SentencePiece: its normaliser (the model's precompiled NFKC map, `▁` and
//!    spaces as whitespace, runs collapsed, the end stripped; the start is not, as transformers
//!    encodes `<unk>` + text and drops `<unk>`'s pieces), then the unigram model's best
//!    segmentation (tokenizers' `Unigram`, SentencePiece's Viterbi with unknown characters fused);
//! 5. a lone leading `▁` before a special token is dropped, `</s>` is appended unless the ids
//!    already end with it, and the ids are cut to `max_len` (keeping room for `</s>`) and padded
//!    with the pad token to `max_len` (`padding="max_length"`, as SigLIP was trained).
//!
//! `tests/siglip.rs` checks it id for id against `SiglipTokenizer` on the fixture captions and
//! tricky ones (punctuation, CJK, emoji, fullwidth, special tokens, empty, very long).

use std::path::Path;

use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::precompiled::Precompiled;
use tokenizers::{Model, NormalizedString, Normalizer};

use super::spiece::{PieceType, SentencePieceModel};
use crate::error::{Error, Result};

const SPIECE_UNDERLINE: char = '▁';

/// What sieve reads of a SigLIP `tokenizer_config.json`; missing keys take `SiglipTokenizer`'s
/// defaults.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default)]
struct TokenizerConfig {
    eos_token: Token,
    unk_token: Token,
    pad_token: Token,
    do_lower_case: bool,
}

/// A token given as a string or as an `AddedToken` object with its `content`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
enum Token {
    Text(String),
    Added { content: String },
}

impl Token {
    fn text(&self) -> &str {
        match self {
            Token::Text(s) | Token::Added { content: s } => s,
        }
    }
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        Self {
            eos_token: Token::Text("</s>".into()),
            unk_token: Token::Text("<unk>".into()),
            pad_token: Token::Text("</s>".into()),
            do_lower_case: true,
        }
    }
}

/// A SigLIP tokenizer built from `spiece.model`.
#[derive(Clone)]
pub struct SiglipTokenizer {
    unigram: Unigram,
    charsmap: Option<Precompiled>,
    /// The special tokens' texts and ids, longest first (the order a trie would match them).
    specials: Vec<(String, u32)>,
    underline_id: Option<u32>,
    eos: u32,
    pad: u32,
    lower: bool,
}

impl std::fmt::Debug for SiglipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiglipTokenizer").field("eos", &self.eos).field("pad", &self.pad).finish()
    }
}

impl SiglipTokenizer {
    /// Reads `spiece.model` and, if given, `tokenizer_config.json`.
    pub fn from_files(spiece: &Path, config: Option<&Path>) -> Result<Self> {
        let model = SentencePieceModel::from_file(spiece)?;
        let bad = |reason: String| Error::ModelFile { path: spiece.into(), reason };
        if model.model_type != 1 {
            return Err(bad(format!(
                "a SentencePiece model of type {} (sieve reads unigram models, type 1, as SigLIP's are)",
                model.model_type
            )));
        }
        if model.byte_fallback {
            return Err(bad("a SentencePiece model with byte fallback, which SigLIP's tokenizer does not use".into()));
        }
        let cfg = match config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
                serde_json::from_str::<TokenizerConfig>(&text)
                    .map_err(|source| Error::Json { path: path.into(), source })?
            }
            None => TokenizerConfig::default(),
        };
        let id_of =
            |piece: &str| -> Result<u32> {
                model.pieces.iter().position(|p| p.piece == piece).map(|i| i as u32).ok_or_else(|| {
                    bad(format!("no piece `{piece}`, which tokenizer_config.json names as a special token"))
                })
            };
        let eos = id_of(cfg.eos_token.text())?;
        let pad = id_of(cfg.pad_token.text())?;
        let unk = id_of(cfg.unk_token.text())?;
        let mut specials: Vec<(String, u32)> = vec![
            (cfg.eos_token.text().to_string(), eos),
            (cfg.unk_token.text().to_string(), unk),
            (cfg.pad_token.text().to_string(), pad),
        ];
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        specials.dedup();
        // SentencePiece never matches control and unknown pieces in text; a name no normalised
        // text can contain (NUL is removed by the normaliser) keeps their ids but takes them
        // out of the unigram model's reach.
        let vocab: Vec<(String, f64)> = model
            .pieces
            .iter()
            .enumerate()
            .map(|(i, p)| match p.kind {
                PieceType::Control | PieceType::Unknown | PieceType::Unused => (format!("\0{i}"), f64::from(p.score)),
                _ => (p.piece.clone(), f64::from(p.score)),
            })
            .collect();
        let unigram = Unigram::from(vocab, model.unk_id, false).map_err(|e| bad(e.to_string()))?;
        let charsmap = if model.precompiled_charsmap.is_empty() {
            None
        } else {
            Some(
                Precompiled::from(&model.precompiled_charsmap)
                    .map_err(|e| bad(format!("its normalisation map does not read: {e}")))?,
            )
        };
        let underline_id = model.pieces.iter().position(|p| p.piece == "▁").map(|i| i as u32);
        Ok(Self { unigram, charsmap, specials, underline_id, eos, pad, lower: cfg.do_lower_case })
    }

    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// The ids before the end token, truncation and padding.
    fn ids(&self, caption: &str) -> Result<Vec<u32>> {
        let text = format!("{SPIECE_UNDERLINE}{}", caption.replace(SPIECE_UNDERLINE, " "));
        let mut ids = Vec::new();
        let mut first_is_underline = false;
        for (i, (chunk, special)) in self.split_specials(&text).into_iter().enumerate() {
            match special {
                Some(id) => ids.push(id),
                None => {
                    let pieces = self.encode_chunk(&chunk)?;
                    if i == 0 && pieces.len() == 1 && Some(pieces[0]) == self.underline_id {
                        first_is_underline = true;
                    }
                    ids.extend(pieces);
                }
            }
        }
        // transformers drops a lone leading `▁` followed by a special token.
        if first_is_underline && ids.len() > 1 && self.specials.iter().any(|(_, id)| *id == ids[1]) {
            ids.remove(0);
        }
        Ok(ids)
    }

    /// Ids padded to `max_len` with the end token, the untruncated length, and whether it was cut.
    pub fn encode(&self, caption: &str, max_len: usize) -> Result<(Vec<u32>, usize, bool)> {
        let mut ids = self.ids(caption)?;
        if ids.last() != Some(&self.eos) {
            ids.push(self.eos);
        }
        let len = ids.len();
        let truncated = len > max_len;
        if truncated {
            // transformers truncates to leave room for `</s>` and then appends it.
            ids = self.ids(caption)?;
            ids.truncate(max_len.saturating_sub(1));
            if ids.last() != Some(&self.eos) {
                ids.push(self.eos);
            }
        }
        ids.resize(max_len.max(ids.len()), self.pad);
        Ok((ids, len, truncated))
    }

    /// The text cut at the special tokens, each given as its id. (Spaces next to them need no
    /// stripping: canonicalisation strips every piece.)
    fn split_specials(&self, text: &str) -> Vec<(String, Option<u32>)> {
        let mut out: Vec<(String, Option<u32>)> = Vec::new();
        let mut rest = text;
        let mut plain = String::new();
        while !rest.is_empty() {
            if let Some((s, id)) = self.specials.iter().find(|(s, _)| !s.is_empty() && rest.starts_with(s.as_str())) {
                out.push((std::mem::take(&mut plain), None));
                out.push((String::new(), Some(*id)));
                rest = &rest[s.len()..];
            } else {
                let c = rest.chars().next().expect("not empty");
                plain.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        out.push((plain, None));
        out.retain(|(t, id)| id.is_some() || !t.is_empty());
        out
    }

    /// SentencePiece ids of one canonicalised piece of text.
    fn encode_chunk(&self, chunk: &str) -> Result<Vec<u32>> {
        let text = canonicalize(chunk, self.lower);
        let mut normalized = NormalizedString::from(text.replace(SPIECE_UNDERLINE, " ").as_str());
        if let Some(map) = &self.charsmap {
            map.normalize(&mut normalized).map_err(|e| Error::Tokenizer(format!("{e} (caption {chunk:?})")))?;
        }
        // SentencePiece's whitespace handling after `<unk>`: runs become one `▁`, none at the end.
        let mut spm = String::with_capacity(normalized.get().len());
        let mut space = false;
        for c in normalized.get().chars() {
            if c == ' ' {
                space = true;
            } else {
                if space {
                    spm.push(SPIECE_UNDERLINE);
                    space = false;
                }
                spm.push(c);
            }
        }
        if spm.is_empty() {
            return Ok(Vec::new());
        }
        let tokens = self.unigram.tokenize(&spm).map_err(|e| Error::Tokenizer(format!("{e} (caption {chunk:?})")))?;
        Ok(tokens.into_iter().map(|t| t.id).collect())
    }
}

/// Python's `str.isspace`, which `re`'s `\s` and `str.strip` use: Unicode whitespace plus the
/// four ASCII separators U+001C..U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// transformers' `SiglipTokenizer.canonicalize_text`: lower case, no ASCII punctuation,
/// whitespace runs as one space, stripped.
pub fn canonicalize(text: &str, lower: bool) -> String {
    let lowered;
    let text = if lower {
        lowered = text.to_lowercase();
        lowered.as_str()
    } else {
        text
    };
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars().filter(|c| !c.is_ascii_punctuation()) {
        if is_py_space(c) {
            space = true;
        } else {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::canonicalize;

    #[test]
    fn canonicalize_is_transformers() {
        assert_eq!(canonicalize("  A PHOTO, of a Dog!! ", true), "a photo of a dog");
        assert_eq!(canonicalize("tab\tand\nnew\u{1c}line", true), "tab and new line");
        assert_eq!(canonicalize("!!!", true), "");
        assert_eq!(canonicalize("Ünï café 日本", false), "Ünï café 日本");
    }
}
