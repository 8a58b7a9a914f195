//! Inputs: turning what the user points at into a deterministic list of [`Record`]s. A record
//! that is already known to be unusable (a dangling link, say) carries its [`Skip`] from here so
//! it is still listed in the output.

pub mod dir;

use std::path::PathBuf;

use crate::media::decode::Skip;

/// Where a record's caption comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptionSource {
    /// No caption.
    None,
    /// A sidecar text file, read during decoding.
    File(PathBuf),
}

/// One input item: an image and its optional caption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Stable id: the record's position in the sorted input.
    pub id: u64,
    /// The image's path as written to metadata.
    pub uri: String,
    /// Where to read the image bytes.
    pub path: PathBuf,
    pub caption: CaptionSource,
    /// Known before decoding that this record cannot be embedded.
    pub skip: Option<Skip>,
}
