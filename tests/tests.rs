//! sieve's integration tests, one binary (ripgrep's layout). Everything is offline: the model is
//! `models/tiny-clip` and the golden outputs in `tests/fixtures/golden` come from transformers via
//! `scripts/make_reference.py`.

mod cmd;
mod util;

mod analyze;
mod audit;
mod classify;
mod cli;
mod compare;
mod dedup;
mod dedup_invariants;
mod export;
mod families;
mod hostile;
mod img2dataset;
mod ingest;
mod int8;
mod model;
mod openclip;
mod parity;
mod partition;
mod quality;
mod report;
mod robust;
mod run;
mod search;
mod select;
mod siglip;
mod store;
