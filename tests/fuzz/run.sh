#!/usr/bin/env bash
# Fuzz the config loader with libFuzzer (clang, from Debian's clang + libclang-rt-*-dev)
# for SECONDS (default 60), seeded with every config in tests/fixtures/config/.
# Not part of make test. Crashes are written to build/fuzz/ as crash-* inputs.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
out=build/fuzz
mkdir -p "$out/corpus"
cp tests/fixtures/config/*.yaml "$out/corpus/"
src="tools/lib/common.c tools/lib/yaml_tree.c tools/lib/schema.c runtime/config.c"
clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Itools/lib -Iruntime -Ikernels \
  -DLSST_VERSION='"fuzz"' tests/fuzz/fuzz_config.c $src build/version.c $(pkg-config --cflags --libs yaml-0.1 libcrypto) \
  -lm -o "$out/fuzz_config"
cd "$out" && ./fuzz_config -max_total_time="$secs" -max_len=4096 corpus
