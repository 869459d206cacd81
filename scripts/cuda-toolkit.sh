#!/usr/bin/env bash
# Installs what `cargo build --features cuda` needs on a machine without a system CUDA
# toolkit (and without a GPU): nvcc 13.0, headers, cuBLAS/cuRAND/NVRTC/cudart and optionally
# cuDNN 9 from PyPI wheels into a prefix, plus a link-time stub of the driver library (at run
# time the real driver's libcuda.so.1 is used). Prints the exports to use.
#
#   scripts/cuda-toolkit.sh [PREFIX]            # default PREFIX=~/.cache/cuda-pypi
#   WITH_CUDNN=1 scripts/cuda-toolkit.sh        # also cuDNN 9 (~1 GB)
#   eval "$(scripts/cuda-toolkit.sh | tail -1)"
#   cargo build --release -p cli --features cuda
#
# CUDA 13.0 matches an R580 driver; a newer nvcc emits PTX that an R580 driver refuses.
# CUDA_COMPUTE_CAP=90 targets Hopper (H100/H200); 80 for A100, 89 for L4/L40/RTX 40xx.
# Users with a system toolkit need none of this: set CUDA_HOME and CUDA_COMPUTE_CAP.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/cuda-pypi}
SITE=$PREFIX/site
T=$PREFIX/cuda
mkdir -p "$SITE"
pkgs=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-crt==13.0.88
      nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88
      nvidia-curand==10.4.0.35 nvidia-cublas==13.1.0.3)
[ "${WITH_CUDNN:-0}" = 1 ] && pkgs+=(nvidia-cudnn-cu13==9.27.0.42)
# Installed once: a second call only prints the exports.
if [ ! -x "$SITE/nvidia/cu13/bin/nvcc" ] || { [ "${WITH_CUDNN:-0}" = 1 ] && [ ! -d "$SITE/nvidia/cudnn/lib" ]; }; then
  python3 -m pip install -q --no-deps --target "$SITE" --upgrade "${pkgs[@]}" >&2
fi
N=$SITE/nvidia/cu13
mkdir -p "$T/lib64"
ln -sfn "$N/bin" "$T/bin"; ln -sfn "$N/include" "$T/include"; ln -sfn "$N/nvvm" "$T/nvvm"
for f in "$N"/lib/lib{cublas,cublasLt,curand,nvrtc,cudart}.so.*; do
  case "$f" in *builtins*|*alt*) continue;; esac
  base=$(basename "$f"); ln -sf "$f" "$T/lib64/$base"; ln -sf "$f" "$T/lib64/${base%%.so.*}.so"
done
if [ -d "$SITE/nvidia/cudnn/lib" ]; then
  for f in "$SITE"/nvidia/cudnn/lib/libcudnn*.so.9; do
    base=$(basename "$f"); ln -sf "$f" "$T/lib64/$base"; ln -sf "$f" "$T/lib64/${base%%.so.*}.so"
  done
  ln -sfn "$SITE/nvidia/cudnn/include" "$T/include-cudnn"
fi
# Link-time stub of the driver API: one empty function per cu* symbol cudarc declares.
cargo fetch -q >&2
CUDARC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* 2>/dev/null | tail -1 || true)
if [ -z "$CUDARC" ]; then
  echo "cudarc 0.19 sources not found in the cargo registry" >&2; exit 1
fi
grep -ohE 'fn cu[A-Za-z0-9_]+\(' "$CUDARC"/src/driver/sys/mod.rs | sed 's/fn //; s/(//' | sort -u \
  | awk '{print "void "$1"(void){}"}' > "$T/cuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$T/lib64/libcuda.so" "$T/cuda_stub.c"
"$T/bin/nvcc" --version | tail -2 >&2
echo "export CUDA_HOME=$T PATH=$T/bin:\$PATH LIBRARY_PATH=$T/lib64:\${LIBRARY_PATH:-} CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}"
