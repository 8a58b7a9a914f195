#!/usr/bin/env bash
# The CPU stage (read, decode, preprocess, fingerprint, quality signals) of two sieve binaries on
# the same folder, alternated so that drift on a shared machine hits both alike:
#
#   scripts/compare_cpu_stage.sh OLD_SIEVE NEW_SIEVE DIR [ROUNDS]       (default 5 rounds)
#
# Prints each run's images/s (`sieve bench --decode DIR --json`, the pass with quality signals,
# as `sieve embed` runs it), the medians and NEW/OLD. With CALLGRIND=1 it also counts the
# instructions of `sieve embed DIR` on one thread under valgrind (repeatable to ~0.01%, unlike
# time), which takes a few minutes per binary. DIR: e.g. the 300 pictures of
# `python3 scripts/bench_pictures.py --split both --per-split 150` (CACHE/sources-v1).
set -euo pipefail
old=$1 new=$2 dir=$3 rounds=${4:-5}
model=$(cd "$(dirname "$0")/.." && pwd)/models/tiny-clip
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) threads"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for ((i = 1; i <= rounds; i++)); do
  for b in old new; do
    bin=${!b}
    "$bin" bench --decode "$dir" --model "$model" --json 2>/dev/null |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["images_per_s"])' >>"$tmp/$b"
    echo "round $i $b $(tail -n 1 "$tmp/$b") images/s"
  done
done
python3 - "$tmp" <<'EOF'
import statistics, sys
m = {b: statistics.median(float(x) for x in open(f"{sys.argv[1]}/{b}")) for b in ("old", "new")}
print(f"median images/s: old {m['old']:.1f}, new {m['new']:.1f}, new/old {m['new'] / m['old']:.3f}")
EOF
if [ "${CALLGRIND:-0}" = 1 ]; then
  for b in old new; do
    bin=${!b}
    RAYON_NUM_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$tmp/$b.cg" \
      "$bin" embed -q "$dir" --out "$tmp/run-$b" --model "$model" --device cpu --batch-size 32 2>"$tmp/$b.err"
    grep -o 'refs: *[0-9,]*' "$tmp/$b.err" | tr -d ', ' | cut -d: -f2 >"$tmp/$b.ir"
    echo "instructions, sieve embed on one thread: $b $(cat "$tmp/$b.ir")"
  done
  python3 -c "import sys; o, n = (int(open(f'$tmp/{b}.ir').read()) for b in ('old', 'new')); print(f'instructions new/old {n / o:.4f}')"
fi
