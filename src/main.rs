//! The `sieve` binary: parse arguments, run, print errors with their causes, map to exit codes
//! (0 done, even with skipped files; 1 the run could not be done; 2 bad usage).

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    // RUST_LOG wins; otherwise warnings, or only errors with --quiet.
    let level = if args.quiet { "error" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_ansi(args.color.enabled())
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
