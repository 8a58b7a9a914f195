//! SHA-256 digests as lower-case hex: of files (model weights, run parts, run.json), of bytes,
//! and of an input's listing. Every room that fingerprints something uses these, so the same
//! input always gives the same text.

use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// SHA-256 of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io("reading", path, e))?;
    Ok(hex(&h.finalize()))
}

/// SHA-256 of bytes, as lower-case hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The same digest as [`crate::ingest::Listing::fingerprint`], so merging every shard of an input
/// gives the fingerprint of the unsharded run.
pub fn listing_sha256<'a>(rows: impl IntoIterator<Item = (u64, &'a str)>) -> String {
    let mut h = Sha256::new();
    for (id, uri) in rows {
        h.update(id.to_le_bytes());
        h.update(uri.as_bytes());
        h.update([0u8]);
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
