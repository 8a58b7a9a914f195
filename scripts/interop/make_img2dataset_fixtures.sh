#!/usr/bin/env bash
# Makes tests/fixtures/img2dataset/: what img2dataset 1.47 itself writes, in its three output
# formats (`files`, `webdataset`, `parquet`), for five pictures of tests/fixtures/images served
# from 127.0.0.1 and one URL that answers 404; and what Hugging Face `datasets` writes for an
# `Image` column (`{bytes, path}` structs). The tests read these files as users' inputs are, so
# they are committed; rerun this only to refresh them.
#
#   scripts/interop/make_img2dataset_fixtures.sh
#
# Needs python3 and PyPI (img2dataset==1.47.0 and datasets into a throwaway venv,
# $SIEVE_I2D_VENV, default /tmp/sieve-i2d-venv) and port 8765 free on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${SIEVE_I2D_VENV:-/tmp/sieve-i2d-venv}
OUT=tests/fixtures/img2dataset
if ! "$VENV/bin/python" -c "import img2dataset, datasets" 2>/dev/null; then
  python3 -m venv --clear "$VENV"
  "$VENV/bin/pip" install -q img2dataset==1.47.0 datasets==4.4.1 pillow
fi
work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
cp tests/fixtures/images/{photo.jpg,tall.jpg,palette.png,gray.png,tiny.png} "$work/"
(cd "$work" && exec python3 -m http.server 8765 --bind 127.0.0.1) >/dev/null 2>&1 &
server=$!
sleep 1
cat >"$work/urls.csv" <<'CSV'
url,caption
http://127.0.0.1:8765/photo.jpg,a photo of a street
http://127.0.0.1:8765/tall.jpg,"a tall picture, with a comma"
http://127.0.0.1:8765/missing.jpg,this one is gone
http://127.0.0.1:8765/palette.png,palette art
http://127.0.0.1:8765/gray.png,a gray picture
http://127.0.0.1:8765/tiny.png,tiny
CSV
rm -rf "$OUT"
mkdir -p "$OUT"
# One process and one thread, so samples keep the url list's order; 4 samples per shard, so
# there are two shards; small pictures, so the fixtures stay small.
for format in files webdataset parquet; do
  "$VENV/bin/img2dataset" --url_list "$work/urls.csv" --input_format csv --url_col url --caption_col caption \
    --output_format "$format" --output_folder "$OUT/$format" --image_size 32 --resize_mode center_crop \
    --processes_count 1 --thread_count 1 --number_sample_per_shard 4 >"$work/$format.log" 2>&1
done
# `datasets`' Image feature: the bytes embedded in a {bytes, path} struct; and one table whose
# structs hold only a path (relative to the parquet's folder), as a dataset of local files can.
"$VENV/bin/python" - "$work" "$OUT" <<'PY'
import sys, shutil, pyarrow as pa, pyarrow.parquet as pq
from datasets import Dataset, Image
work, out = sys.argv[1], sys.argv[2]
names = ["photo.jpg", "palette.png", "tiny.png"]
ds = Dataset.from_dict({"image": [f"{work}/{n}" for n in names], "text": ["a street", "palette art", "tiny"]})
ds = ds.cast_column("image", Image())
# What push_to_hub does before writing: the files' bytes embedded, the path cut to its name.
from datasets.table import embed_table_storage
ds = ds.with_format("arrow").map(embed_table_storage, batched=True).with_format(None)
ds.to_parquet(f"{out}/hf-image.parquet")
shutil.copy(f"{work}/gray.png", f"{out}/gray.png")
paths_only = pa.StructArray.from_arrays([pa.array([None], pa.binary()), pa.array(["gray.png"])], names=["bytes", "path"])
pq.write_table(pa.table({"image": paths_only, "text": ["a gray picture"]}), f"{out}/hf-paths.parquet")
PY
find "$OUT" -type f | sort
