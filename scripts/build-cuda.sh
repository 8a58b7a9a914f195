#!/usr/bin/env bash
# Builds `sieve` with CUDA support, on a machine with or without a CUDA toolkit or a GPU.
#
#   scripts/build-cuda.sh            -> dist-bin/sieve-cuda (profile `dist`: fat LTO, stripped)
#
# With a system toolkit (nvcc on PATH, or CUDA_HOME / /usr/local/cuda) it is used as is. Without
# one, nvcc and the CUDA libraries come from PyPI (pinned to one CUDA version, installed with
# --no-deps into ~/.cache/sieve-cuda), and a stand-in libcuda.so is built for linking only; the
# real driver is loaded at run time on the GPU machine.
#
# Environment:
#   CUDA_COMPUTE_CAP     target GPU's compute capability without the dot (default 90: H100/H200;
#                        80 for A100, 89 for L4/L40/RTX 40xx, 86 for RTX 30xx/A10). Needed because
#                        there may be no GPU (and no nvidia-smi) on the build machine.
#   (The PyPI route fetches CUDA 13.0, for drivers >= 580. PTX from an nvcc newer than the target
#   driver's CUDA version will not load; for an older driver install its toolkit and use that.)
#   CUDA_TOOLKIT_DIR     where the PyPI toolkit goes (default ~/.cache/sieve-cuda)
#   CARGO_PROFILE        cargo profile (default dist)
#   OUT                  output path (default dist-bin/sieve-cuda)
#
# Needs: cargo, gcc <= 14, and for the PyPI route python3 with pip. At run time the binary loads
# libcuda.so.1, libcublas(Lt), libcurand and libnvrtc: see the README's GPU section.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PROFILE=${CARGO_PROFILE:-dist}
OUT=${OUT:-$ROOT/dist-bin/sieve-cuda}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
started=$(date +%s)

system_nvcc() {
  if command -v nvcc >/dev/null 2>&1; then command -v nvcc; return; fi
  for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
    if [ -n "$d" ] && [ -x "$d/bin/nvcc" ]; then echo "$d/bin/nvcc"; return; fi
  done
  return 1
}

if nvcc_path=$(system_nvcc); then
  CUDA=$(cd "$(dirname "$nvcc_path")/.." && pwd)
  echo "build-cuda: using the system CUDA toolkit in $CUDA"
  export CUDA_HOME=$CUDA CUDA_PATH=$CUDA CUDA_ROOT=$CUDA PATH=$CUDA/bin:$PATH
else
  TK=${CUDA_TOOLKIT_DIR:-$HOME/.cache/sieve-cuda}/13.0
  CUDA=$TK/nvidia/cu13
  export CUDARC_CUDA_VERSION=13000
  LIBS="cublas.so.13 cublasLt.so.13 cudart.so.13 nvrtc.so.13 curand.so.10"
  if [ ! -x "$CUDA/bin/nvcc" ]; then
    echo "build-cuda: no CUDA toolkit found; fetching CUDA 13.0 from PyPI into $TK"
    # --no-deps and exact pins: otherwise pip pulls nvvm/crt 13.5, whose PTX a CUDA 13.0 driver
    # (580.x) cannot load.
    python3 -m pip install --quiet --no-deps --target "$TK" \
      nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.1.0.3 \
      nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88
  fi
  # Unversioned names for -l<lib>.
  ( cd "$CUDA/lib"
    for l in $LIBS; do ln -sf "lib$l" "lib${l%%.so.*}.so"; done )
  # A stand-in libcuda.so.1 for linking only, from the cu* names in cudarc's source.
  mkdir -p "$CUDA/lib/stubs"
  if [ ! -e "$CUDA/lib/stubs/libcuda.so" ]; then
    cargo fetch --locked >/dev/null
    src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-* | sort -V | tail -1)
    grep -ohE '^\s*(pub )?(unsafe )?fn (cu[A-Za-z0-9_]+)\(' "$src/src/driver/sys/mod.rs" |
      sed -E 's/.*fn (cu[A-Za-z0-9_]+)\(/\1/' | sort -u |
      awk '{print "int " $1 "(void) { return 100; }"}' > "$CUDA/lib/stubs/libcuda_stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA/lib/stubs/libcuda.so" "$CUDA/lib/stubs/libcuda_stub.c"
  fi
  export CUDA_HOME=$CUDA CUDA_PATH=$CUDA CUDA_ROOT=$CUDA PATH=$CUDA/bin:$PATH
  export LIBRARY_PATH=$CUDA/lib:$CUDA/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
fi

echo "build-cuda: compute capability $CUDA_COMPUTE_CAP, nvcc $(nvcc --version | grep -o 'release [0-9.]*')"
# A separate target folder, so the CPU build's artefacts are not rebuilt each time.
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/cuda} \
  cargo build --locked --profile "$PROFILE" --features cuda --bin sieve
bin=${CARGO_TARGET_DIR:-$ROOT/target/cuda}/$PROFILE/sieve
mkdir -p "$(dirname "$OUT")"
cp "$bin" "$OUT"
echo "build-cuda: $OUT ($(du -h "$OUT" | cut -f1)) in $(( $(date +%s) - started )) s"
