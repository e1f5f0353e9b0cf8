#!/usr/bin/env bash
# Prints the path of an nvdisasm that reads raw SM90 code (tests/gpu/sass_check.sh): the CUDA
# toolkit's own, else one cached under build-cuda/sass, else fetched there from Debian's
# non-free nvidia-cuda-toolkit package (CUDA 11.8: its nvdisasm cannot read a CUDA 13 cubin, but
# `nvdisasm -b SM90` disassembles the raw instructions of its sections). Only the one binary is
# kept; nothing is installed. Exit status 1 if none can be had.
set -euo pipefail
cd "$(dirname "$0")/../.."
cuda=${CUDA_HOME:-/usr/local/cuda}
if [ -x "$cuda/bin/nvdisasm" ]; then echo "$cuda/bin/nvdisasm"; exit 0; fi
build=${BUILD:-build-cuda}; case $build in /*) ;; *) build=$PWD/$build ;; esac
tools=$build/sass
if [ -x "$tools/nvdisasm" ]; then echo "$tools/nvdisasm"; exit 0; fi
mkdir -p "$tools"; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
bash tests/gpu/apt_fetch.sh "$tmp" nvidia-cuda-toolkit || exit 1
dpkg-deb --fsys-tarfile "$tmp"/nvidia-cuda-toolkit_*.deb | tar -x -C "$tmp" ./usr/bin/nvdisasm
mv "$tmp/usr/bin/nvdisasm" "$tools/nvdisasm.tmp" && mv "$tools/nvdisasm.tmp" "$tools/nvdisasm"
echo "$tools/nvdisasm"
