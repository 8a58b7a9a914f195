//! Fails a build with the `jpeg-simd` feature (the default) when `nasm` cannot be run.
//! mozjpeg-sys then quietly builds libjpeg-turbo without its SIMD decoder, 2-3x slower, with only
//! a cargo warning nobody reads; a binary that slow should be a choice (`--no-default-features`).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PATH");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    // mozjpeg-sys assembles its SIMD code with nasm on x86 only (ARM uses the C compiler).
    if std::env::var_os("CARGO_FEATURE_JPEG_SIMD").is_none() || !matches!(arch.as_str(), "x86" | "x86_64") {
        return;
    }
    // The same probe as mozjpeg-sys's build script: `nasm -v`, and not a 0.x version.
    let problem = match Command::new("nasm").arg("-v").output() {
        Err(e) => Some(format!("`nasm -v` could not be run ({e})")),
        Ok(out) if !out.status.success() => Some(format!("`nasm -v` failed ({})", out.status)),
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("NASM version 0.") => {
            Some(format!("nasm is too old: {}", String::from_utf8_lossy(&out.stdout).trim()))
        }
        Ok(_) => None,
    };
    if let Some(problem) = problem {
        eprintln!(
            "error: the `jpeg-simd` feature (on by default) needs nasm to build libjpeg-turbo's SIMD \
             JPEG decoder, and {problem}.\n\
             Without it JPEG decoding is 2-3x slower. Either install nasm (Debian/Ubuntu: \
             `sudo apt install nasm`; macOS: `brew install nasm`) and build again (if mozjpeg-sys was \
             already built without it: `cargo clean -p mozjpeg-sys` first), or build without SIMD \
             JPEG decoding: `cargo build --release --no-default-features`."
        );
        std::process::exit(1);
    }
}
