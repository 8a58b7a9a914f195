//! The `sieve` binary: parse arguments, run, print errors with their causes, map to exit codes
//! (0 done, even with skipped files; 1 the run could not be done; 2 bad usage).

use std::process::ExitCode;

use clap::Parser;

mod cli;

/// Allocations from this size on get their own mapping, returned to the system when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 1 << 20;

fn main() -> ExitCode {
    // glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB) and
    // keeps later blocks under it in the heap, where freed memory mostly stays: with dedup's
    // blocks of pairs (a few MB each, made and freed on every pass) 20,001 near-identical items
    // peaked at 510 MB instead of 438 MB. A fixed threshold hands such blocks back when freed.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator setting; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("error: {err:#}");
            exit_code(err.downcast_ref::<sieve::Error>())
        }
    }
}

/// 2 for a setting the user can fix on the command line; 1 for everything else, including a
/// model whose files are broken (`ModelFile`, `Model`): no flag fixes those.
fn exit_code(err: Option<&sieve::Error>) -> ExitCode {
    match err {
        Some(sieve::Error::InvalidArg { .. }) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}
