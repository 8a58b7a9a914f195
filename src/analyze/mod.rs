//! Analyses over a run directory: pure functions over embeddings and metadata, each testable
//! alone, plus the glue that reads a run and writes the results next to it.

pub mod calibrate;
pub mod common;
pub mod decision;
pub mod dedup;
pub mod diversity;
pub mod groups;
pub mod pairs;
pub mod perceptual;
pub mod quality;
pub mod select;
mod stream;

/// `sieve dedup-centroids`, `dedup-partition` and `dedup-combine` (a room of dedup's, here under
/// its old path).
pub use dedup::partition;
