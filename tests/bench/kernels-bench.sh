#!/usr/bin/env bash
# Kernel bench (not part of `make test`): builds $BUILD/libkernels.a with the Makefile's flags,
# compiles tests/bench/kernels-bench.c against it (same OpenBLAS as the Makefile: the OpenMP build
# when installed) and runs it.
#   BUILD=build-kern tests/bench/kernels-bench.sh [--quick]
# Prints sgemm GFLOP/s (the ceiling every other figure is compared with), matmul and attention
# forward / backward GFLOP/s at the trainer benchmark's shapes, and GB/s of the token-wise kernels.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${BUILD:-build}
make -s BUILD="$build" "$build/libkernels.a"
eval "$(make -s --no-print-directory print-blas)"   # blas_cflags, blas_libs: the OpenBLAS the Makefile links
mkdir -p "$build/bench"
# shellcheck disable=SC2086
${CC:-gcc} -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -O2 -fopenmp -Ikernels $blas_cflags \
  tests/bench/kernels-bench.c "$build/libkernels.a" $blas_libs -lm -o "$build/bench/kernels-bench"
exec "$build/bench/kernels-bench" "$@"
