//! Running the sieve binary from the tests (kept out of util.rs, which an example also includes
//! and where `CARGO_BIN_EXE_sieve` is not defined).

use std::path::{Path, PathBuf};

/// Runs the sieve binary with `args` (no RUST_LOG, no SIEVE_MODEL from the environment).
pub fn sieve_out(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sieve"))
        .env_remove("RUST_LOG")
        .env_remove("SIEVE_MODEL")
        .args(args)
        .output()
        .unwrap()
}

/// A successful command's stdout as JSON.
pub fn stdout_json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `sieve embed -q INPUT --out RUN --model MODEL --device cpu`, which must succeed; returns RUN.
pub fn embed_with(input: &Path, run: &Path, model: &Path) -> PathBuf {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sieve"))
        .env_remove("RUST_LOG")
        .env_remove("SIEVE_MODEL")
        .args(["embed", "-q"])
        .args([input, Path::new("--out"), run, Path::new("--model"), model])
        .args(["--device", "cpu"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    run.to_path_buf()
}
