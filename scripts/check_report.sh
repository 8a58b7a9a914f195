#!/usr/bin/env bash
# Real-browser check of `sieve report`: builds a small fixture run with the given sieve binary
# (the bundled images in two folders, an exact duplicate, captions — one holding <script> —, a
# broken and an empty file; then embed with models/tiny-clip, dedup, score, diversity --by
# folder, quality, report), renders RUN/report.html in headless Chromium and fails if the page
# logs a console error or warning, throws, shows a broken image, or requests anything other
# than the file itself and data: URIs (scripts/report-check/check.mjs, playwright-core driving
# the system's chromium). Then a self-test: the same check must fail on copies of the report
# with an external <img> injected, with and without the page's Content-Security-Policy.
#
# usage: scripts/check_report.sh [SIEVE_BIN] [SCREENSHOT]
#   SIEVE_BIN   default: ${CARGO_TARGET_DIR:-target}/debug/sieve
#   SCREENSHOT  default: ${CARGO_TARGET_DIR:-target}/report-screenshot.png
#   CHROMIUM    the browser (default: chromium on PATH)
# Exit codes: 0 passed, 1 the check failed, 3 it could not run here (no chromium, node or npm
# packages); the reason is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
sieve=$(realpath -m "${1:-$target/debug/sieve}")
shot=$(realpath -m "${2:-$target/report-screenshot.png}")
cannot() { echo "check_report: cannot run: $*" >&2; exit 3; }

[ -x "$sieve" ] || cannot "no sieve binary at $sieve (cargo build first, or pass its path)"
export CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[ -n "$CHROMIUM" ] && [ -x "$CHROMIUM" ] || cannot "no chromium (apt-get install chromium, or set CHROMIUM)"
command -v node >/dev/null || cannot "no node"
if [ ! -d scripts/report-check/node_modules/playwright-core ]; then
  (cd scripts/report-check && npm ci --no-audit --no-fund --loglevel=error) ||
    cannot "npm ci in scripts/report-check failed (playwright-core, pinned in package-lock.json)"
fi
mkdir -p "$(dirname "$shot")"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
in=$work/in
mkdir -p "$in/street" "$in/studio"
cp tests/fixtures/images/{photo.jpg,tall.jpg,wide.png,alpha.png} "$in/street/"
cp tests/fixtures/images/{gray.png,palette.png,square.bmp,tiny.png} "$in/studio/"
cp tests/fixtures/images/photo.jpg "$in/studio/photo_copy.jpg"
echo "a street with parked cars" > "$in/street/photo.txt"
echo "a tall building at night" > "$in/street/tall.txt"
echo "a wide panorama of hills" > "$in/street/wide.txt"
echo 'a logo <script>alert("x")</script> & "friends"' > "$in/street/alpha.txt"
echo "a grey square" > "$in/studio/gray.txt"
echo "a red and blue palette" > "$in/studio/palette.txt"
echo "a street with parked cars" > "$in/studio/photo_copy.txt"
printf 'not a picture' > "$in/studio/broken.jpg"
: > "$in/studio/empty.png"

run=$work/run
"$sieve" embed -q --model models/tiny-clip "$in" --out "$run" 2>/dev/null
"$sieve" dedup -q "$run" 2>/dev/null
"$sieve" score -q "$run" 2>/dev/null
"$sieve" diversity -q "$run" --by folder --clusters 3 2>/dev/null
"$sieve" quality -q "$run" 2>/dev/null
"$sieve" report "$run"

node scripts/report-check/check.mjs "$run/report.html" "$shot"

# Self-test: the check must catch an outside request, whether the page's CSP blocks it (a
# console error) or not (a request).
inject='<img src="https://example.invalid/pixel.png" alt="">'
sed "s|</body>|$inject</body>|" "$run/report.html" > "$work/with-csp.html"
sed -e "s|</body>|$inject</body>|" -e 's|<meta http-equiv="Content-Security-Policy"[^>]*>||' \
  "$run/report.html" > "$work/without-csp.html"
for page in with-csp without-csp; do
  if node scripts/report-check/check.mjs "$work/$page.html" "$work/$page.png" > "$work/$page.log" 2>&1; then
    cat "$work/$page.log"
    echo "check_report: FAIL self-test: an injected external image ($page) went unnoticed" >&2
    exit 1
  fi
  grep -q 'FAIL' "$work/$page.log" || { cat "$work/$page.log"; echo "check_report: FAIL self-test ($page): the check crashed" >&2; exit 1; }
  echo "check_report: self-test ok ($page): $(grep -m1 FAIL "$work/$page.log" | cut -c1-140)"
done
