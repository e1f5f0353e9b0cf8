#!/usr/bin/env bash
# Builds and runs the CPU emulation of the CUDA kernels (tests/gpu/emu.h: fibers for threads, PTX
# semantics for ldmatrix / mma.sync / cp.async) against their CPU twins: emulate_layers.cpp (the
# token-wise kernels) and emulate_attention.cpp (every attention variant). Needs no GPU: only the
# CUDA headers (cuda_bf16.h), g++, gcc and OpenBLAS.
#   BUILD=build-cuda tests/gpu/emulate.sh [layers|attention] [--quick] [--only SUBSTRING]
# Last line: "N passed, N failed" (both programs together); exit status 1 on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${BUILD:-build-cuda}/emu
cuda_home=${CUDA_HOME:-/usr/local/cuda}
mkdir -p "$build"
eval "$(make -s --no-print-directory print-blas)"   # blas_cflags, blas_libs: the OpenBLAS the Makefile links
objs=()
for src in kernels/cpu/*.c; do
  obj=$build/$(basename "${src%.c}").o
  # shellcheck disable=SC2086
  gcc -std=c11 -D_GNU_SOURCE -O2 -fopenmp -Wall -Wextra -Werror -Ikernels $blas_cflags -c "$src" -o "$obj"
  objs+=("$obj")
done
which=all
case "${1:-}" in layers|attention) which=$1; shift;; esac
pass=0 fail=0 status=0
for prog in layers attention; do
  [ "$which" = all ] || [ "$which" = "$prog" ] || continue
  # shellcheck disable=SC2086
  g++ -std=c++17 -O2 -Wall -Wextra -Werror -Wno-unknown-pragmas -Ikernels -Itests/gpu -I"$cuda_home/include" \
    "tests/gpu/emulate_$prog.cpp" "${objs[@]}" $blas_libs -fopenmp -lm -o "$build/emulate_$prog"
  "$build/emulate_$prog" "$@" | tee "$build/emulate_$prog.log" || status=1
  counts=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$build/emulate_$prog.log" | tail -1)
  if [ -z "$counts" ]; then fail=$((fail + 1)); status=1; continue; fi  # crashed before its summary
  pass=$((pass + ${counts%% passed*})); f=${counts#*, }; fail=$((fail + ${f%% failed*}))
done
echo "$pass passed, $fail failed"
exit $status
