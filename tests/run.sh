#!/usr/bin/env bash
# The whole lsst test suite. Every part speaks TAP; this script counts and prints
# one closing line "N passed, N failed, N skipped". Exit 0 only when nothing failed.
#   tests/run.sh            all parts
#   tests/run.sh unit cli   only those parts (unit, cli, mpi, slurm, gpu)
# gpu: the CUDA kernels' device code run on the CPU by tests/gpu/emulate.sh (needs the CUDA
# headers, not a GPU; skipped without them), and the wgmma kernels' SASS checked for a known
# ptxas miscompile by tests/gpu/sass_check.sh (needs nvcc). The GPU itself is tests/gpu/run.sh's.
set -u
cd "$(dirname "$0")/.."
parts=("$@"); [ ${#parts[@]} -eq 0 ] && parts=(unit cli mpi slurm gpu)
log=$(mktemp -d "${TMPDIR:-/tmp}/lsst-test.XXXXXX")
pass=0 fail=0 skip=0
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# count NAME CMD...: run one TAP producer, echo its output, count its results.
count() {
  local name=$1; shift
  local out=$log/$(echo "$name" | tr '/ ' '__').tap rc
  "$@" >"$out" 2>&1; rc=$?
  local p f s
  p=$(grep -cE '^ok [0-9]+' "$out" | tr -d ' ')
  s=$(grep -cE '^ok [0-9]+.*# (skip|SKIP)' "$out" | tr -d ' ')
  f=$(grep -cE '^not ok [0-9]+' "$out" | tr -d ' ')
  p=$((p - s))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "not ok - $name exited with status $rc" >>"$out"; fi
  pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
  printf '%-40s %4d passed %4d failed %4d skipped\n' "$name" "$p" "$f" "$s"
  if [ "$f" -ne 0 ]; then grep -vE '^ok ' "$out" | sed 's/^/    /' | head -n 60; fi
}

for part in "${parts[@]}"; do
  case $part in
    unit)
      for t in "${BUILD:-build}"/asan/tests/test_*; do [ -x "$t" ] && count "unit/${t##*/}" "$t"; done ;;
    cli|mpi|slurm)
      for f in tests/$part/*.bats; do [ -e "$f" ] && count "$part/${f##*/}" bats --tap "$f"; done ;;
    gpu)
      bf16_h=${CUDA_HOME:-/usr/local/cuda}/include/cuda_bf16.h
      if [ -f "$bf16_h" ]; then count gpu/emulate bash tests/gpu/emulate.sh --quick
      else count gpu/emulate echo "ok 1 # skip no CUDA headers ($bf16_h)"; fi
      count gpu/sass bash tests/gpu/sass_check.sh ;;
    *) echo "tests/run.sh: unknown part '$part'" >&2; exit 2 ;;
  esac
done
rm -rf "$log"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
