#!/usr/bin/env bash
# Wall time per stage of scripts/ray/sieve_ray.py with 1, 2 and 4 local Ray workers, next to one
# process (sieve embed + sieve dedup --clusters, run after them), over COUNT bench JPEGs (500x375) with the tiny
# test model on the CPU. docs/performance.md's scaling table comes from this.
#
#   scripts/ray/bench_ray.sh [SIEVE_BINARY] [COUNT] [WORKERS...]   defaults: target/debug/sieve 2000 1 2 4
#
# Needs Ray in $SIEVE_RAY_VENV (default /tmp/sieve-ray-venv; scripts/ray/test_ray.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/../.."
SIEVE=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/debug/sieve}")
COUNT=${2:-2000}
shift $(( $# < 2 ? $# : 2 ))
WORKERS=("$@")
[ ${#WORKERS[@]} -gt 0 ] || WORKERS=(1 2 4)
PY=${SIEVE_RAY_VENV:-/tmp/sieve-ray-venv}/bin/python
W=${BENCH_DIR:-/tmp/sieve-ray-bench}
K=8
mkdir -p "$W"
[ -d "$W/in" ] || "$SIEVE" bench --write-jpegs "$W/in" --count "$COUNT"
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
# The tiny model's random weights put every bench JPEG within 0.95 of the others; at 0.995 the
# image kind finds groups of a few items, as real near-duplicates are.
DEDUP=(--device cpu --image-threshold 0.995)
dedup_args=(); for a in "${DEDUP[@]}"; do dedup_args+=("--dedup-arg=$a"); done
cat "$W"/in/* >/dev/null # every run reads the JPEGs from the page cache

for w in "${WORKERS[@]}"; do
  echo "== Ray, $w workers"
  rm -rf "$W/ray$w"
  t=$(date +%s%N)
  RAY_ADDRESS= "$PY" scripts/ray/sieve_ray.py "$W/in" --out "$W/ray$w" --workers "$w" --model models/tiny-clip \
    --sieve "$SIEVE" --clusters $K --embed-arg=--device=cpu "${dedup_args[@]}"
  echo "Ray $w workers: $(ms "$t") ms including Ray start-up"
done
echo "== one process ($(nproc) cores)"
rm -rf "$W/single"
t=$(date +%s%N); "$SIEVE" embed -q "$W/in" --out "$W/single" --model models/tiny-clip --device cpu; e=$(ms "$t")
t=$(date +%s%N); "$SIEVE" dedup -q "$W/single" --clusters $K "${DEDUP[@]}"; d=$(ms "$t")
echo "one process: embed ${e} ms, dedup --clusters $K ${d} ms"
for w in "${WORKERS[@]}"; do
  cmp "$W/single/dedup/keep.txt" "$W/ray$w/run/dedup/keep.txt" && echo "Ray $w workers: keep.txt identical to one process"
done
