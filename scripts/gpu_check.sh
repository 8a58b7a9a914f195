#!/usr/bin/env bash
# One prepared check for a GPU machine: sieve's CUDA build against PyTorch on the same card.
#
#   scripts/gpu_check.sh [SIEVE_BINARY]      (default dist-bin/sieve-cuda, from scripts/build-cuda.sh)
#
# Assumes python3 with PyTorch (CUDA) and transformers, and no cargo and no internet. Prints:
#   1. the card;
#   2. model-only images/s and captions/s at batch 256 (ViT-B/32 shape, random weights) for sieve
#      and for transformers' CLIPModel in fp16 with SDPA, and their ratio (plus sieve with its
#      attention and layer-norm kernels off, and candle's stock CLIP, for reference);
#   3. end-to-end `sieve embed` over N generated 500x375 JPEGs (random ViT-B/32 weights) against
#      sieve's own CPU stage alone on the same images and cores, and that CPU stage against PIL
#      (decode + bicubic resize + crop + normalise, one process per core);
#   4. CUDA-vs-CPU parity: ViT-B/32 random weights (f16 on the GPU vs f32 on the CPU), and the
#      tiny test model's embeddings of tests/fixtures/images;
#   5. partitioned dedup (dedup-centroids, dedup-partition x3, dedup-combine) on the device gives
#      the bytes of one-process `sieve dedup --clusters` on the same device.
# Everything goes to stdout and to $OUT/gpu_check.log ($OUT defaults to /tmp/sieve-gpu-check).
# Environment: N (images, default 20000), BATCH (default 256), ITERS (default 30), DEVICE (default
# cuda; `cpu` dry-runs the plumbing on a machine without a GPU), PYTHON (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-dist-bin/sieve-cuda}")
OUT=${OUT:-/tmp/sieve-gpu-check}
N=${N:-20000}
BATCH=${BATCH:-256}
ITERS=${ITERS:-30}
WORK=${WORK:-/tmp/sieve-gpu-work}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"
exec > >(tee "$OUT/gpu_check.log") 2>&1
t0=$(date +%s)
say() { echo; echo "== $* (t+$(( $(date +%s) - t0 ))s)"; }

# The binary loads libcuda, cuBLAS(Lt), cuRAND and NVRTC at start-up.
libdirs=""
for d in /usr/local/nvidia/lib64 /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
         $("$PY" -c 'import glob, site; print(" ".join(glob.glob(site.getsitepackages()[0] + "/nvidia/*/lib")))' 2>/dev/null); do
  [ -d "$d" ] && libdirs="$libdirs:$d"
done
export LD_LIBRARY_PATH="${libdirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

say "card"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
echo "host: $(nproc) cores; sieve binary $BIN"
if ldd "$BIN" | grep -q "not found"; then
  echo "MISSING LIBRARIES:"; ldd "$BIN" | grep "not found"
fi
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'

say "model only, batch $BATCH: sieve (ViT-B/32 shape, random weights, f16)"
"$BIN" bench --device "$DEVICE" --batch-size "$BATCH" --iters "$ITERS" --parity --json | tee "$OUT/sieve_bench.json"
say "model only, batch $BATCH: sieve with its attention and layer-norm kernels off (candle's ops)"
"$BIN" bench --cuda-disable attention,layernorm --device "$DEVICE" --batch-size "$BATCH" --iters "$ITERS" --json |
  tee "$OUT/sieve_bench_generic.json"
say "model only, batch $BATCH: transformers CLIPModel fp16 SDPA"
"$PY" scripts/torch_clip_bench.py "$BATCH" "$ITERS" | tee "$OUT/torch_bench.txt"
say "model only, batch $BATCH: candle-transformers stock CLIP (baseline)"
"$BIN" bench --stock --device "$DEVICE" --batch-size "$BATCH" --iters 5 --json | tee "$OUT/stock_bench.json"

say "inputs: a random-weight ViT-B/32 model folder and $N JPEGs"
MODEL=$WORK/vit-b32-random
if [ ! -f "$MODEL/model.safetensors" ]; then
  "$PY" - "$MODEL" <<'EOF'
import shutil, sys, torch
from transformers import CLIPConfig, CLIPModel
out = sys.argv[1]
torch.manual_seed(0)
CLIPModel(CLIPConfig.from_json_file("models/clip-vit-base-patch32/config.json")).save_pretrained(out, safe_serialization=True)
shutil.copy("models/clip-vit-base-patch32/preprocessor_config.json", out)
for f in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy("models/tiny-clip/" + f, out)
print("wrote", out)
EOF
fi
[ -d "$WORK/jpegs" ] || "$BIN" bench --write-jpegs "$WORK/jpegs" --count "$N"
du -sh "$WORK/jpegs"

say "CPU stage alone (decode, resize, normalise, hash) over $N JPEGs, all cores"
"$BIN" bench --decode "$WORK/jpegs" --model "$MODEL" --batch-size 256 --json | tee "$OUT/cpu_stage.json"
say "PIL over the same JPEGs, one process per core"
"$PY" - "$WORK/jpegs" <<'EOF' | tee "$OUT/pil.txt"
import glob, os, sys, time
from multiprocessing import Pool
import numpy as np
from PIL import Image
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
def one(p):
    im = Image.open(p).convert("RGB")
    w, h = im.size
    s = 224 / min(w, h)
    im = im.resize((max(224, round(w * s)), max(224, round(h * s))), Image.BICUBIC)
    w, h = im.size
    l, t = (w - 224) // 2, (h - 224) // 2
    a = np.asarray(im.crop((l, t, l + 224, t + 224)), np.float32) / 255.0
    return ((a - MEAN) / STD).transpose(2, 0, 1).shape[0]
files = sorted(glob.glob(sys.argv[1] + "/*.jpg"))
with Pool(os.cpu_count()) as pool:
    pool.map(one, files[:64])
    t = time.perf_counter()
    pool.map(one, files, chunksize=16)
    dt = time.perf_counter() - t
print(f"PIL {len(files)} images, {os.cpu_count()} processes: {dt:.2f}s, images_per_s={len(files) / dt:.1f}")
EOF
say "end to end: sieve embed --device $DEVICE --batch-size auto over the same JPEGs"
rm -rf "$WORK/run"
RUST_LOG=sieve=info "$BIN" embed "$WORK/jpegs" --out "$WORK/run" --model "$MODEL" --device "$DEVICE" -q 2>&1 |
  grep -v "^\s*$" | tail -n 5 | tee "$OUT/e2e.txt"

say "parity: tiny model on tests/fixtures/images, CUDA (f16) vs CPU (f32)"
rm -rf "$WORK/fx-cuda" "$WORK/fx-cpu"
"$BIN" embed tests/fixtures/images --out "$WORK/fx-cuda" --model models/tiny-clip --device "$DEVICE" -q
"$BIN" embed tests/fixtures/images --out "$WORK/fx-cpu" --model models/tiny-clip --device cpu -q
"$PY" - "$WORK" <<'EOF' | tee "$OUT/parity.txt"
import glob, sys
import numpy as np
w = sys.argv[1]
def load(d):
    return np.concatenate([np.load(p).astype(np.float64) for p in sorted(glob.glob(f"{w}/{d}/img_emb/*.npy"))])
a, b = load("fx-cuda"), load("fx-cpu")
keep = np.linalg.norm(b, axis=1) > 0
cos = (a[keep] * b[keep]).sum(1) / (np.linalg.norm(a[keep], axis=1) * np.linalg.norm(b[keep], axis=1))
print(f"fixtures: {keep.sum()} images, lowest cosine CUDA vs CPU {cos.min():.6f}")
EOF

say "partitioned dedup on $DEVICE equals one-process dedup (tiny model, fixtures)"
R=$WORK/fx-cuda
rm -rf "$WORK/one" "$WORK/cent" "$WORK/parts"; mkdir -p "$WORK/one"
"$BIN" dedup "$R" -q --device "$DEVICE" --clusters 2 --sample 8 --seed 7 &&
  cp "$R"/dedup/{groups.parquet,keep.txt,remove.txt,summary.json} "$WORK/one/" &&
  "$BIN" dedup-centroids "$R" -q --device "$DEVICE" --clusters 2 --sample 8 --seed 7 --out "$WORK/cent" &&
  for j in 0 1 2; do
    "$BIN" dedup-partition "$R" -q --device "$DEVICE" --centroids "$WORK/cent" --partition "$j/3" --out "$WORK/parts"
  done &&
  "$BIN" dedup-combine "$R" -q --device "$DEVICE" --partitions "$WORK/parts"
same=yes
for f in groups.parquet keep.txt remove.txt summary.json; do
  cmp -s "$R/dedup/$f" "$WORK/one/$f" || same="no ($f differs)"
done
echo "partitioned (3 partitions) == one process on $DEVICE: $same" | tee "$OUT/partition.txt"

say "summary"
"$PY" - "$OUT" <<'EOF'
import json, re, sys
o = sys.argv[1]
def rd(p):
    try:
        return open(f"{o}/{p}").read()
    except OSError:
        return ""
def js(p):
    try:
        return json.loads(rd(p).strip().splitlines()[-1])
    except Exception:
        return {}
s, st, cpu = js("sieve_bench.json"), js("stock_bench.json"), js("cpu_stage.json")
gen = js("sieve_bench_generic.json")
t = rd("torch_bench.txt")
ti = re.search(r"imgs_per_s=([\d.]+)", t)
tc = re.search(r"caps_per_s=([\d.]+)", t)
pil = re.search(r"images_per_s=([\d.]+)", rd("pil.txt"))
e2e = re.search(r"\(([\d.]+) (?:images|records)/s\)", rd("e2e.txt"))
def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "n/a"
si, sc = s.get("images_per_s"), s.get("captions_per_s")
ti, tc = (float(ti.group(1)) if ti else None), (float(tc.group(1)) if tc else None)
print(f"model only  sieve {si and round(si)} img/s {sc and round(sc)} cap/s | torch fp16 {ti} img/s {tc} cap/s"
      f" | ratio images {ratio(si, ti)} captions {ratio(sc, tc)}")
print(f"sieve without its attention/layer-norm kernels {gen.get('images_per_s') and round(gen['images_per_s'])} img/s "
      f"{gen.get('captions_per_s') and round(gen['captions_per_s'])} cap/s")
print(f"stock candle {st.get('images_per_s') and round(st['images_per_s'])} img/s "
      f"{st.get('captions_per_s') and round(st['captions_per_s'])} cap/s")
print(f"parity (ViT-B/32 random, f16 vs f32): {s.get('parity')}")
cs = cpu.get("images_per_s")
pl = float(pil.group(1)) if pil else None
ee = float(e2e.group(1)) if e2e else None
print(f"CPU stage {cs and round(cs)} img/s | PIL {pl} img/s | ratio {ratio(cs, pl)}")
print(f"end to end {ee} img/s | vs CPU stage {ratio(ee, cs)}")
print(rd("parity.txt").strip())
print(rd("partition.txt").strip())
EOF
echo "done in $(( $(date +%s) - t0 ))s"
