//! NumPy `.npy` (format 1.0) reading and writing for 2-D little-endian float16 arrays, the layout
//! clip-retrieval and autofaiss read.

use std::io::{Read, Write};
use std::path::Path;

use half::f16;

use crate::error::{Error, Result};

/// Serialises a row-major `[rows, cols]` f16 array.
pub fn write_f16<W: Write>(mut w: W, rows: usize, cols: usize, data: &[f16]) -> std::io::Result<()> {
    assert_eq!(data.len(), rows * cols, "npy data does not match its shape");
    let dict = format!("{{'descr': '<f2', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + header length (2) + dict + padding + '\n' is a multiple of 64.
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let header = format!("{dict}{}\n", " ".repeat(pad));
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&(header.len() as u16).to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    let mut bytes = Vec::with_capacity(data.len() * 2);
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    w.write_all(&bytes)
}

/// The `(rows, cols)` of a 2-D `<f2` file, from its header, checked against the file's length.
pub fn read_shape(path: &Path) -> Result<(usize, usize)> {
    let mut head = vec![0u8; 4096];
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let len = f.metadata().map_err(|e| Error::io("reading", path, e))?.len();
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]).map_err(|e| Error::io("reading", path, e))? {
            0 => break,
            k => n += k,
        }
    }
    head.truncate(n);
    let (rows, cols, start) = parse_header(&head, path)?;
    if Some(len) != data_len(rows, cols, start) {
        return Err(Error::RunDir { path: path.into(), reason: "data length does not match the shape".into() });
    }
    Ok((rows, cols))
}

/// The file length a `rows × cols` array after a header of `start` bytes needs (`None`: more
/// than any file can hold).
fn data_len(rows: usize, cols: usize, start: usize) -> Option<u64> {
    (rows as u64).checked_mul(cols as u64)?.checked_mul(2)?.checked_add(start as u64)
}

/// Parses the header: `(rows, cols, offset of the data)`.
fn parse_header(bytes: &[u8], path: &Path) -> Result<(usize, usize, usize)> {
    let bad =
        |reason: &str| Error::RunDir { path: path.into(), reason: format!("not a 2-D float16 .npy file: {reason}") };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("bad magic"));
    }
    let (hlen, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        _ => return Err(bad("unknown version")),
    };
    let end = start.checked_add(hlen).ok_or_else(|| bad("short header"))?;
    let header =
        std::str::from_utf8(bytes.get(start..end).ok_or_else(|| bad("short header"))?).map_err(|_| bad("header"))?;
    if !header.contains("'<f2'") || header.contains("'fortran_order': True") {
        return Err(bad("dtype is not little-endian float16 in C order"));
    }
    let shape = header.split("'shape': (").nth(1).and_then(|s| s.split(')').next()).ok_or_else(|| bad("no shape"))?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("shape")))
        .collect::<Result<_>>()?;
    let [rows, cols] = dims[..] else { return Err(bad("not 2-D")) };
    Ok((rows, cols, start + hlen))
}

/// Reads a 2-D `<f2` array written by [`write_f16`] (or by NumPy): `(rows, cols, values as f32)`.
pub fn read_f16(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    read_f16_checked(path, None)
}

/// [`read_f16`], checking the file's SHA-256 against `sha256` when given (from run.json).
pub fn read_f16_checked(path: &Path, sha256: Option<&str>) -> Result<(usize, usize, Vec<f32>)> {
    let bad =
        |reason: &str| Error::RunDir { path: path.into(), reason: format!("not a 2-D float16 .npy file: {reason}") };
    let mut bytes = Vec::new();
    std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| Error::io("reading", path, e))?;
    if let Some(want) = sha256 {
        super::check_sha256(path, &super::sha256_bytes(&bytes), want)?;
    }
    let (rows, cols, start) = parse_header(&bytes, path)?;
    if Some(bytes.len() as u64) != data_len(rows, cols, start) {
        return Err(bad("data length does not match the shape"));
    }
    let body = &bytes[start..];
    let values = body.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect();
    Ok((rows, cols, values))
}
