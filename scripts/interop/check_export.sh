#!/usr/bin/env bash
# `sieve export` fed to the tools it is for: autofaiss builds a faiss index from the
# clip-retrieval layout (as clip-retrieval's `clip_index` does), and each image's nearest
# neighbour found through that index joins back, by the exported `id`, to the same record of the
# run; DuckDB and pandas read the Parquet layout with the embeddings as fixed-size lists; the
# `webdataset` package reads the tar shards of `--format webdataset` (the kept records, each with
# its original bytes, caption and JSON).
#
#   scripts/interop/check_export.sh [SIEVE_BINARY]   default: $CARGO_TARGET_DIR/debug/sieve or target/debug/sieve
#
# Installs autofaiss, faiss-cpu, pandas, pyarrow and duckdb (pinned) into a throwaway venv
# ($SIEVE_INTEROP_VENV, default /tmp/sieve-interop-venv). Where they cannot be installed it prints
# "skipping export check: <why>" and exits 0; a wrong result exits 1. webdataset (pinned) is added
# to the venv the same way; where it cannot be, only the shard check is skipped, with a line
# that says so.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIEVE=${1:-${CARGO_TARGET_DIR:-target}/debug/sieve}
VENV=${SIEVE_INTEROP_VENV:-/tmp/sieve-interop-venv}
PKGS="autofaiss==2.18.0 faiss-cpu==1.15.1 pandas==2.3.3 pyarrow==17.0.0 duckdb==2.0.1 numpy==1.26.4"
skip() { echo "skipping export check: $*"; exit 0; }
[ -x "$SIEVE" ] || { echo "check_export: no sieve binary at $SIEVE (build it first)" >&2; exit 1; }
if ! "$VENV/bin/python" -c "import autofaiss, faiss, duckdb, pandas, pyarrow" 2>/dev/null; then
  command -v python3 >/dev/null || skip "no python3"
  log=$(mktemp)
  python3 -m venv --clear "$VENV" >"$log" 2>&1 || skip "python3 -m venv failed: $(tail -1 "$log")"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q $PKGS >"$log" 2>&1 || skip "pip install failed: $(tail -1 "$log")"
fi
WDS_PKG="webdataset==1.0.2"
wds=1
if ! "$VENV/bin/python" -c "import webdataset" 2>/dev/null; then
  log=$(mktemp)
  "$VENV/bin/pip" install -q "$WDS_PKG" >"$log" 2>&1 || { echo "skipping webdataset shard check: pip install failed: $(tail -1 "$log")"; wds=0; }
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$SIEVE" embed -q demo --out "$work/run" --model models/tiny-clip --part-size 8
"$SIEVE" export -q "$work/run" --out "$work/cr" --format clip-retrieval
"$SIEVE" export -q "$work/run" --out "$work/pq" --format parquet
"$VENV/bin/python" - "$work" <<'PY'
import glob, json, sys
import numpy as np, pandas as pd, pyarrow.parquet as pq, duckdb
from autofaiss import build_index

work = sys.argv[1]
index, _ = build_index(embeddings=f"{work}/cr/img_emb", index_path=f"{work}/knn.index",
                       index_infos_path=f"{work}/infos.json", save_on_disk=True,
                       max_index_memory_usage="100M", current_memory_available="500M",
                       metric_type="ip", verbose=40)
# clip_back's order: metadata files sorted by name, concatenated.
meta = pd.concat([pd.read_parquet(f) for f in sorted(glob.glob(f"{work}/cr/metadata/*.parquet"))], ignore_index=True)
emb = np.concatenate([np.load(f) for f in sorted(glob.glob(f"{work}/cr/img_emb/*.npy"))]).astype("float32")
assert index.ntotal == len(meta) == len(emb), (index.ntotal, len(meta), len(emb))
run_meta = pd.concat([pd.read_parquet(f) for f in sorted(glob.glob(f"{work}/run/metadata/*.parquet"))], ignore_index=True)
run_emb = np.concatenate([np.load(f) for f in sorted(glob.glob(f"{work}/run/img_emb/*.npy"))]).astype("float32")
row_of = {int(i): r for r, i in enumerate(run_meta["id"])}
scores, found = index.search(emb, 3)
wrong = 0
for k in range(len(emb)):
    for score, hit in zip(scores[k], found[k]):
        # The record a faiss row number joins to (by the exported id) has, in the run itself,
        # the embedding that gave faiss's score: row numbers and ids agree.
        rid = int(meta["id"][hit])
        if abs(float(run_emb[row_of[rid]] @ emb[k]) - float(score)) > 1e-3:
            wrong += 1
assert wrong == 0, f"{wrong} of {3 * len(emb)} faiss hits join to a record with another embedding"
assert set(meta["id"]) == set(run_meta["id"][run_meta["status"] == "embedded"]), "exactly the embedded records"
con = duckdb.connect()
n, d = con.execute(f"select count(*), max(len(img_emb)) from read_parquet('{work}/pq/*.parquet')").fetchone()
assert n == len(meta) and d == emb.shape[1], (n, d)
print(json.dumps({"faiss_rows": int(index.ntotal), "hits_joined": 3 * len(emb), "duckdb_rows": n, "dim": d}))
PY
echo "export check: autofaiss index and DuckDB read the exports; every hit joins back by id"
# clip-retrieval's own clip_index on the export, as its docs run it after clip_inference. The
# package's __init__ imports clip_back (flask, torch, a CLIP model from the Hub), which cannot run
# here, so it is installed without its dependencies and clip_index.py (fire + autofaiss) is loaded
# from its file.
CR_PKG="clip-retrieval==2.45.0"
if "$VENV/bin/pip" install -q --no-deps "$CR_PKG" fire==0.7.1 >"$work/cr-pip.log" 2>&1; then
  "$VENV/bin/python" - "$work" <<'PY'
import glob, importlib.util, json, os, sys
import faiss, numpy as np, pandas as pd

work = sys.argv[1]
package = importlib.util.find_spec("clip_retrieval").submodule_search_locations[0]  # not imported
spec = importlib.util.spec_from_file_location("clip_index", os.path.join(package, "clip_index.py"))
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
mod.clip_index(f"{work}/cr", f"{work}/index", max_index_memory_usage="100M", current_memory_available="500M")
image, text = faiss.read_index(f"{work}/index/image.index"), faiss.read_index(f"{work}/index/text.index")
meta = pd.concat([pd.read_parquet(f) for f in sorted(glob.glob(f"{work}/index/metadata/*.parquet"))], ignore_index=True)
assert image.ntotal == text.ntotal == len(meta), (image.ntotal, text.ntotal, len(meta))
assert {"image_path", "caption", "url", "id"} <= set(meta.columns), meta.columns
# A caption's nearest image, as clip_back answers a text query: row numbers index the metadata.
txt = np.concatenate([np.load(f) for f in sorted(glob.glob(f"{work}/cr/text_emb/*.npy"))]).astype("float32")
_, found = image.search(txt[:5], 1)
assert all(0 <= int(f) < len(meta) for f in found[:, 0])
print(json.dumps({"clip_index_image_rows": int(image.ntotal), "clip_index_text_rows": int(text.ntotal)}))
PY
  echo "export check: clip-retrieval's clip_index indexed the export (image and text) with its metadata"
else
  echo "skipping clip_index check: pip install $CR_PKG failed: $(tail -1 "$work/cr-pip.log")"
fi
[ "$wds" = 1 ] || exit 0
"$SIEVE" dedup -q "$work/run"
"$SIEVE" export -q "$work/run" --out "$work/wds" --format webdataset --subset keep --shard-size 4
"$VENV/bin/python" - "$work" <<'PY'
import glob, json, sys
import webdataset as wds

work = sys.argv[1]
kept = open(f"{work}/run/dedup/keep.txt").read().split()
shards = sorted(glob.glob(f"{work}/wds/*.tar"))
seen = []
for s in wds.WebDataset(shards, shardshuffle=False):
    meta = json.loads(s["json"])["sieve"]
    img = next(v for k, v in s.items() if k in ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"))
    assert img == open(meta["uri"], "rb").read(), meta["uri"]
    if "txt" in s:
        assert s["txt"].decode(), meta["uri"]
    seen.append(meta["uri"])
assert seen == kept, (len(seen), len(kept))
print(json.dumps({"webdataset_samples": len(seen), "shards": len(shards)}))
PY
echo "export check: webdataset reads the exported shards: the kept records, original bytes"
