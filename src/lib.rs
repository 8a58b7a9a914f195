//! sieve: curate image–text training data.
//!
//! A CLIP-style encoder (candle; CUDA, Metal or CPU) embeds images and captions into one space;
//! later stages find duplicates, score caption fit, measure diversity and select a subset. This
//! crate is the library behind the `sieve` binary; see DESIGN.md for the data flow and the run
//! directory format.

pub mod analyze;
pub mod bench;
pub mod cli;
pub mod device;
pub mod error;
pub mod index;
pub mod ingest;
pub mod media;
pub mod model;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod run;
pub mod store;

pub use error::{Error, Result};
