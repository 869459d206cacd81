#!/usr/bin/env bash
# Prepares dist/, what bench/gpu-session.sh needs on a GPU machine that has no Rust toolchain
# and no internet, within the 64 MiB that travels to it:
#   dist/stepwise.xz         this checkout's `--features cuda` release build, stripped
#   dist/stepwise-before.xz  the same of BEFORE=<git revision>, for the before/after rows
#   dist/cifar10-jpeg.tar.gz the real CIFAR-10 images (if CIFAR_JPEG names the archive)
#   dist/pylib/safetensors   safetensors' Python package (its abi3 wheel), for the checks
# Installs the CUDA toolkit from PyPI on first use (scripts/cuda-toolkit.sh); the first build
# compiles candle's kernels for about 7 minutes, later ones reuse target-cuda/ (and
# target-cuda-before/ for BEFORE).
#   [BEFORE=<rev>] [CIFAR_JPEG=../shared/data/cifar10-jpeg.tar.gz] bench/dist.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist
eval "$(WITH_CUDNN=1 scripts/cuda-toolkit.sh | tail -1)"

# Builds the cli of the tree in $1 in the target directory $2 and packs it as dist/$3.xz.
# The earlier revision builds in a target directory of its own: its workspace crates have
# the same names and versions, so in a shared one each build overwrote the other's
# libraries while cargo still counted its own as fresh.
pack() {
  (cd "$1" && CARGO_TARGET_DIR=$2 cargo build --release --locked -p cli --features cuda)
  strip -o "dist/$3" "$2/release/stepwise"
  xz -9 -T2 -f "dist/$3"
}

pack . "$PWD/target-cuda" stepwise
if [ -n "${BEFORE:-}" ]; then
  tree=$(mktemp -d)
  git worktree add -q --detach "$tree" "$BEFORE"
  trap 'git worktree remove --force "$tree"' EXIT
  pack "$tree" "$PWD/target-cuda-before" stepwise-before
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
