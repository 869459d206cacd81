#!/usr/bin/env bash
# Prepares dist/, what bench/gpu-session.sh needs on a GPU machine that has no Rust toolchain
# and no internet, within the 64 MiB that travels to it:
#   dist/stepwise.xz         this checkout's `--features cuda` release build, stripped
#   dist/stepwise-before.xz  the same of BEFORE=<git revision>, for the before/after rows
#   dist/cifar10-jpeg.tar.gz the real CIFAR-10 images (if CIFAR_JPEG names the archive)
#   dist/pylib/safetensors   safetensors' Python package (its abi3 wheel), for the checks
# Installs the CUDA toolkit from PyPI on first use (scripts/cuda-toolkit.sh); the first build
# compiles candle's kernels for about 7 minutes, later ones reuse target-cuda/.
#   [BEFORE=<rev>] [CIFAR_JPEG=../shared/data/cifar10-jpeg.tar.gz] bench/dist.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist
eval "$(WITH_CUDNN=1 scripts/cuda-toolkit.sh | tail -1)"
export CARGO_TARGET_DIR=$PWD/target-cuda

# Builds the cli of the tree in $1 and packs it as dist/$2.xz.
pack() {
  (cd "$1" && cargo build --release --locked -p cli --features cuda)
  strip -o "dist/$2" "$CARGO_TARGET_DIR/release/stepwise"
  xz -9 -T2 -f "dist/$2"
}

pack . stepwise
if [ -n "${BEFORE:-}" ]; then
  tree=$(mktemp -d)
  git worktree add -q --detach "$tree" "$BEFORE"
  trap 'git worktree remove --force "$tree"' EXIT
  pack "$tree" stepwise-before
fi
if [ -n "${CIFAR_JPEG:-}" ]; then
  install -m 644 "$CIFAR_JPEG" dist/cifar10-jpeg.tar.gz
fi
if [ ! -d dist/pylib/safetensors ]; then
  wheels=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
    --python-version 3.9 -d "$wheels" safetensors
  python3 -m zipfile -e "$wheels"/safetensors-*.whl dist/pylib
  rm -rf "$wheels"
fi
du -sch dist/*
