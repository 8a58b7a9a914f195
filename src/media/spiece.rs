//! A reader for SentencePiece's `spiece.model` (a protobuf `ModelProto`), for the fields
//! sieve's SigLIP tokenizer needs: the pieces with their scores and types, the model type and
//! ids from the trainer spec, and the normalizer spec (its precompiled character map and
//! whitespace flags). Protobuf's wire format is small enough to read by hand, which keeps a
//! code generator out of the build.

use std::path::Path;

use crate::error::{Error, Result};

/// A piece's type (`ModelProto.SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceType {
    fn from_proto(v: u64) -> Self {
        match v {
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => PieceType::Normal,
        }
    }
}

/// One vocabulary entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceType,
}

/// What sieve reads of a `spiece.model`.
#[derive(Debug, Clone, PartialEq)]
pub struct SentencePieceModel {
    pub pieces: Vec<Piece>,
    /// `TrainerSpec.model_type`: 1 unigram, 2 BPE, 3 word, 4 char.
    pub model_type: u64,
    pub byte_fallback: bool,
    pub unk_id: Option<usize>,
    /// `NormalizerSpec.name` (`nmt_nfkc`, `identity`, …).
    pub normalizer_name: String,
    pub precompiled_charsmap: Vec<u8>,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

impl Default for SentencePieceModel {
    fn default() -> Self {
        // protobuf's declared defaults for the fields read here.
        Self {
            pieces: Vec::new(),
            model_type: 1,
            byte_fallback: false,
            unk_id: Some(0),
            normalizer_name: String::new(),
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

/// A protobuf field: its number and value.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
    Fixed64,
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.at).ok_or("truncated varint")?;
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or("truncated field")?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    /// The next field, or `None` at the end of the message.
    fn field(&mut self) -> std::result::Result<Option<(u64, Value<'a>)>, String> {
        if self.at == self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
                Value::Bytes(self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        Ok(Some((key >> 3, value)))
    }
}

fn utf8(b: &[u8]) -> std::result::Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".to_string())
}

impl SentencePieceModel {
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
        Self::parse(&bytes).map_err(|reason| Error::ModelFile {
            path: path.into(),
            reason: format!("not a SentencePiece model: {reason}"),
        })
    }

    pub fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        let mut m = Self::default();
        let mut r = Reader::new(bytes);
        while let Some((field, value)) = r.field()? {
            match (field, value) {
                (1, Value::Bytes(b)) => m.pieces.push(parse_piece(b)?),
                (2, Value::Bytes(b)) => m.read_trainer(b)?,
                (3, Value::Bytes(b)) => m.read_normalizer(b)?,
                _ => {}
            }
        }
        if m.pieces.is_empty() {
            return Err("it has no pieces".into());
        }
        if m.unk_id.is_some_and(|u| u >= m.pieces.len()) {
            m.unk_id = None;
        }
        Ok(m)
    }

    fn read_trainer(&mut self, b: &[u8]) -> std::result::Result<(), String> {
        let mut r = Reader::new(b);
        while let Some((field, value)) = r.field()? {
            match (field, value) {
                (3, Value::Varint(v)) => self.model_type = v,
                (35, Value::Varint(v)) => self.byte_fallback = v != 0,
                // A negative id (-1: none) is a 10-byte varint of a two's-complement i32.
                (40, Value::Varint(v)) => self.unk_id = usize::try_from(v as i64).ok(),
                _ => {}
            }
        }
        Ok(())
    }

    fn read_normalizer(&mut self, b: &[u8]) -> std::result::Result<(), String> {
        let mut r = Reader::new(b);
        while let Some((field, value)) = r.field()? {
            match (field, value) {
                (1, Value::Bytes(s)) => self.normalizer_name = utf8(s)?,
                (2, Value::Bytes(s)) => self.precompiled_charsmap = s.to_vec(),
                (3, Value::Varint(v)) => self.add_dummy_prefix = v != 0,
                (4, Value::Varint(v)) => self.remove_extra_whitespaces = v != 0,
                (5, Value::Varint(v)) => self.escape_whitespaces = v != 0,
                _ => {}
            }
        }
        Ok(())
    }
}

fn parse_piece(b: &[u8]) -> std::result::Result<Piece, String> {
    let mut p = Piece { piece: String::new(), score: 0.0, kind: PieceType::Normal };
    let mut r = Reader::new(b);
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Value::Bytes(s)) => p.piece = utf8(s)?,
            (2, Value::Fixed32(bits)) => p.score = f32::from_bits(bits),
            (3, Value::Varint(v)) => p.kind = PieceType::from_proto(v),
            _ => {}
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pieces_and_rejects_garbage() {
        // One piece "a" (score 1.5, type 2 = unknown), a trainer spec with unk_id 0, and a
        // normalizer spec without a dummy prefix.
        let mut bytes = vec![0x0a, 10, 0x0a, 1, b'a', 0x15];
        bytes.extend_from_slice(&1.5f32.to_le_bytes());
        bytes.extend_from_slice(&[0x18, 2]);
        bytes.extend_from_slice(&[0x12, 3, 0xc0, 0x02, 0]);
        bytes.extend_from_slice(&[0x1a, 2, 0x18, 0]);
        let m = SentencePieceModel::parse(&bytes).unwrap();
        assert_eq!(m.pieces, vec![Piece { piece: "a".into(), score: 1.5, kind: PieceType::Unknown }]);
        assert_eq!(m.unk_id, Some(0));
        assert!(!m.add_dummy_prefix);
        assert!(SentencePieceModel::parse(b"").is_err());
        assert!(SentencePieceModel::parse(&[0x0a, 200]).is_err());
        assert!(SentencePieceModel::parse(&[0xff]).is_err());
    }
}
