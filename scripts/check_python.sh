#!/usr/bin/env bash
# The Python package (docs/python.md) built and tested as a user gets it: a fresh venv, clippy on
# the extension crate, the wheel built by maturin, installed, and python/tests run against it
# (they compare with the binary).
#
#   scripts/check_python.sh [SIEVE_BINARY]   default: $CARGO_TARGET_DIR/debug/sieve or target/debug/sieve
#
# The wheel is built in the dev profile into the same target/ as cargo (the workspace shares it),
# so it reuses the dependencies `cargo test` built: a release build would compile everything again
# (about 15 minutes on CI's 2 cores). Where there is no python3 or venv, or PyPI cannot be reached,
# it prints "skipping python check: <why>" and exits 0; a failed build or test exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
SIEVE=${1:-${CARGO_TARGET_DIR:-target}/debug/sieve}
# maturin and pytest pinned (they decide how the wheel is built and tests run); the libraries the
# package uses float, as a user's would.
PKGS="maturin==1.16.0 pytest==9.2.0 numpy pyarrow pandas pillow tqdm"
skip() { echo "skipping python check: $*"; exit 0; }
[ -x "$SIEVE" ] || { echo "check_python: no sieve binary at $SIEVE (build it first)" >&2; exit 1; }
command -v python3 >/dev/null || skip "no python3"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log="$work/log"
python3 -m venv "$work/venv" >"$log" 2>&1 || skip "python3 -m venv failed: $(tail -1 "$log")"
py="$work/venv/bin/python"
# Reachability first, so that only an unreachable PyPI skips; a failed install after it fails.
"$py" -m pip download -q --no-deps -d "$work/probe" pytest==9.2.0 >"$log" 2>&1 ||
  skip "PyPI unreachable: $(tail -1 "$log")"
# shellcheck disable=SC2086
"$py" -m pip install -q $PKGS
"$py" --version
# The extension's own lints (the root's `cargo clippy` leaves python/ out: not a default member).
PYO3_PYTHON="$py" cargo clippy -p sieve-curate --all-targets --locked -- -D warnings
t0=$SECONDS
"$work/venv/bin/maturin" build --profile dev --locked --out "$work/wheel"
echo "wheel built in $((SECONDS - t0)) s: $(cd "$work/wheel" && ls)"
"$py" -m pip install -q "$work"/wheel/*.whl
t0=$SECONDS
SIEVE_BIN="$SIEVE" "$py" -m pytest python/tests -q -p no:cacheprovider
echo "pytest in $((SECONDS - t0)) s"
