#!/usr/bin/env bash
# The Ray pipeline (scripts/ray/sieve_ray.py) on a local Ray cluster against one process, over
# the same corpus with duplicates (bench JPEGs, the fixture images, byte-identical copies and
# shared captions; model models/tiny-clip, offline). Fails unless the embeddings and metadata are
# byte-identical and keep.txt/remove.txt (and groups.parquet) are the same, also after one embed
# task is killed (SIGKILL) and retried by Ray.
#
#   scripts/ray/test_ray.sh [SIEVE_BINARY]      default: $CARGO_TARGET_DIR/debug/sieve or target/debug/sieve
#
# Installs Ray (pinned) into a throwaway venv ($SIEVE_RAY_VENV, default /tmp/sieve-ray-venv; where
# python3 has no venv module, or SIEVE_RAY_PIP_TARGET=1, with pip --target); builds nothing. Where Ray cannot be installed or started it prints "skipping Ray test: <why>"
# and exits 0; any other failure exits 1. WORKERS (default 3) sets the Ray workers.
set -euo pipefail
cd "$(dirname "$0")/../.."
RAY_VERSION=2.60.0
SIEVE=${1:-${CARGO_TARGET_DIR:-target}/debug/sieve}
VENV=${SIEVE_RAY_VENV:-/tmp/sieve-ray-venv}
WORKERS=${WORKERS:-3}
skip() { echo "skipping Ray test: $*"; exit 0; }

[ -x "$SIEVE" ] || { echo "test_ray: no sieve binary at $SIEVE (build it first: cargo build)" >&2; exit 1; }
SIEVE=$(cd "$(dirname "$SIEVE")" && pwd)/$(basename "$SIEVE")
if ! "$VENV/bin/python" -c "import ray; assert ray.__version__ == '$RAY_VERSION'" 2>/dev/null; then
  command -v python3 >/dev/null || skip "no python3"
  echo "== installing ray==$RAY_VERSION into $VENV"
  log=$(mktemp)
  if [ -z "${SIEVE_RAY_PIP_TARGET:-}" ] && python3 -m venv --clear "$VENV" >"$log" 2>&1; then
    "$VENV/bin/pip" install -q "ray==$RAY_VERSION" >"$log" 2>&1 || skip "pip install ray==$RAY_VERSION failed: $(tail -1 "$log")"
  else
    # No venv module (Debian's python3 without python3-venv): pip --target into a folder, and a
    # python that puts it on PYTHONPATH (inherited by Ray's worker processes).
    python3 -m pip install -q --upgrade --target "$VENV/lib" "ray==$RAY_VERSION" >"$log" 2>&1 \
      || skip "no venv, and pip install --target ray==$RAY_VERSION failed: $(tail -1 "$log")"
    mkdir -p "$VENV/bin"
    printf '#!/bin/sh\nPYTHONPATH="%s${PYTHONPATH:+:$PYTHONPATH}" exec "%s" "$@"\n' "$VENV/lib" "$(command -v python3)" >"$VENV/bin/python"
    chmod +x "$VENV/bin/python"
  fi
fi
PY="$VENV/bin/python"
probe=$("$PY" -c "import ray; ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False); ray.shutdown()" 2>&1) \
  || skip "a local Ray cluster does not start here: $(echo "$probe" | tail -1)"

W=$(mktemp -d /tmp/sieve-ray-test.XXXXXX)
trap 'rm -rf "$W"' EXIT
echo "== corpus in $W/in"
"$SIEVE" bench --write-jpegs "$W/in/jpegs" --count 48 2>/dev/null
cp tests/fixtures/images/* "$W/in/"
# Duplicates: byte-identical copies (exact, perceptual and image duplicates) and shared captions.
for i in 000003 000017 000029 000041; do cp "$W/in/jpegs/img-$i.jpg" "$W/in/copy-$i.jpg"; done
cp tests/fixtures/images/photo.jpg "$W/in/photo-copy.jpg"
n=0
for f in "$W"/in/jpegs/*.jpg "$W"/in/copy-*.jpg; do
  echo "a picture of thing $((n % 9))" >"${f%.jpg}.txt"; n=$((n + 1))
done
MODEL=$PWD/models/tiny-clip
KMEANS=(--clusters 4 --seed 3)
# The tiny model's weights are random, so its image similarities are high across the board:
# 0.995 leaves several image groups of different sizes, not one of everything.
DEDUP=(--device cpu --image-threshold 0.995 --caption-threshold 0.99)

echo "== one process"
t0=$(date +%s%N)
"$SIEVE" embed -q "$W/in" --out "$W/single" --model "$MODEL" --device cpu --part-size 16
"$SIEVE" dedup -q "$W/single" "${KMEANS[@]}" "${DEDUP[@]}"
echo "one process: embed + dedup $(( ($(date +%s%N) - t0) / 1000000 )) ms"

echo "== Ray, $WORKERS workers; shard 1's first embed attempt is killed (SIGKILL), Ray retries it"
# A sieve that kills its first embed of shard 1/N part-way: the retry must resume it exactly.
cat >"$W/flaky-sieve" <<FLAKY
#!/usr/bin/env bash
if [[ " \$* " == *" embed "*" --shard 1/$WORKERS "* ]] && [ ! -e "$W/killed" ]; then
  touch "$W/killed"
  "$SIEVE" "\$@" & pid=\$!
  sleep 0.5; kill -9 \$pid; wait \$pid
  exit 137
fi
exec "$SIEVE" "\$@"
FLAKY
chmod +x "$W/flaky-sieve"
ray_args=()
for a in "${DEDUP[@]}"; do ray_args+=("--dedup-arg=$a"); done
RAY_ADDRESS= "$PY" scripts/ray/sieve_ray.py "$W/in" --out "$W/ray" --workers "$WORKERS" --partitions 5 \
  --model "$MODEL" --sieve "$W/flaky-sieve" --clusters 4 --seed 3 --embed-arg=--device=cpu --embed-arg=--part-size=16 "${ray_args[@]}"

[ -e "$W/killed" ] || { echo "test_ray: the embed of shard 1 was never killed" >&2; exit 1; }

echo "== compare"
"$PY" - "$W/single" "$W/ray/run" <<'EOF'
import hashlib, json, sys
from pathlib import Path
a, b = Path(sys.argv[1]), Path(sys.argv[2])
fail = []
files = sorted(p.relative_to(a) for d in ("img_emb", "text_emb", "metadata") for p in (a / d).iterdir())
if not files or sorted(p.relative_to(b) for d in ("img_emb", "text_emb", "metadata") for p in (b / d).iterdir()) != files:
    fail.append(f"different part files: {files}")
for f in files:
    if (a / f).read_bytes() != (b / f).read_bytes():
        fail.append(f"{f} differs")
ma, mb = json.loads((a / "run.json").read_text()), json.loads((b / "run.json").read_text())
if ma["counts"] != mb["counts"]:
    fail.append(f"counts differ: {ma['counts']} vs {mb['counts']}")
lines = lambda p: set(p.read_text().splitlines())
keep, remove = lines(a / "dedup/keep.txt"), lines(a / "dedup/remove.txt")
if keep != lines(b / "dedup/keep.txt") or remove != lines(b / "dedup/remove.txt"):
    fail.append("keep.txt/remove.txt differ")
if (a / "dedup/groups.parquet").read_bytes() != (b / "dedup/groups.parquet").read_bytes():
    fail.append("dedup/groups.parquet differs")
sa, sb = (json.loads((r / "dedup/summary.json").read_text()) for r in (a, b))
# The run path and the run's fingerprint (the SHA-256 of its run.json, which names the merged
# shards in the Ray run) differ by design; each must name its own run.
for s, r in ((sa, a), (sb, b)):
    s.pop("run")
    if s.pop("run_fingerprint") != hashlib.sha256((r / "run.json").read_bytes()).hexdigest():
        fail.append(f"{r}/dedup/summary.json does not name its run's fingerprint")
if sa != sb:
    fail.append(f"summary.json differs beyond the run path and fingerprint:\n{sa}\n{sb}")
groups = {k: v["groups"] for k, v in sa["kinds"].items()}
if len(remove) < 5 or not len(keep) > 10 or not all(groups.get(k) for k in ("exact", "caption", "perceptual")) or not groups.get("image", 0) > 1:
    fail.append(f"the corpus should have duplicates: removed {len(remove)}, groups {groups}")
if fail:
    sys.exit("test_ray: FAILED\n  " + "\n  ".join(fail))
print(f"test_ray: ok: {len(files)} run files byte-identical ({ma['counts']['embedded']} embedded); "
      f"dedup keeps {len(keep)}, removes {len(remove)}, groups {groups}: the same in both")
EOF
