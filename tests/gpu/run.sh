#!/usr/bin/env bash
# The one script of a GPU session (issue 5): builds the CUDA kernels and lsst-run, runs every kernel
# against its CPU twin, lsst-run backend: cuda against backend: cpu (tests/gpu/train_check.sh), the
# attention benchmark of every variant at the e2e shape (its fastest pair is then timed end to
# end too), the other kernels of a step at the e2e shapes (tests/bench/gpu/layers_bench.cu), the
# end-to-end speed against torch.compile, the attention benchmark of every variant at every shape
# and of PyTorch SDPA,
# compute-sanitizer (memcheck, racecheck) on the kernel test, and prints a summary table LAST. Logs go to
# build-gpu/logs; $OUT (the device machine's output folder; default build-gpu/out) gets summary.md and
# logs.tar.gz, rewritten after every phase (so a call cut short still returns what ran).
#
#   device: bash tests/gpu/run.sh           (carry .device-kit: see tests/gpu/README.md)
#   here:   bash tests/gpu/run.sh           (no GPU: builds, then every GPU phase reports "skip")
#
# Knobs: GPU_BUDGET_S (default 480: the whole script, build included; a phase that no longer fits
# is skipped and says so), GPU_E2E=0 (skips tests/bench/gpu/e2e_compare.sh, ~1 min), GPU_PROFILE=0
# (skips tests/bench/gpu/profile.sh, ~1-2 min, and with it the summary's table of a step's kernels
# by class, lsst-run's beside torch.compile's: tests/bench/gpu/kernel_classes.py),
# GPU_SKIP=name,name (phases not to run, by their names in the summary: e.g. a second call that
# only confirms new defaults, GPU_SKIP=memcheck,racecheck,attn-lsst,attn-sdpa,profile),
# BUILD (default build-gpu), CUDA_ARCH (default: the GPU's compute capability).
# Each phase's failure is recorded and the later phases still run; exit status 1 if any failed.
set -u
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
OUT=${OUT:-$ROOT/build-gpu/out}
BUILD=${BUILD:-build-gpu}
# Phase logs go to LOGS; OUT gets summary.md and logs.tar.gz (a device call returns few files).
case $BUILD in /*) LOGS=$BUILD/logs ;; *) LOGS=$ROOT/$BUILD/logs ;; esac
rm -rf "$LOGS"; mkdir -p "$LOGS"
BUDGET=${GPU_BUDGET_S:-480}
mkdir -p "$OUT"
T0=$(date +%s)
NAMES=() RESULTS=() SECONDS_=() NOTES=()
FAILED=0

elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( BUDGET - $(elapsed) )); }
summary() {  # the table of the phases so far
  echo "| phase | result | s | note |"
  echo "|---|---|---:|---|"
  for i in "${!NAMES[@]}"; do echo "| ${NAMES[$i]} | ${RESULTS[$i]} | ${SECONDS_[$i]} | ${NOTES[$i]} |"; done
}
record() {  # name result seconds note; then $OUT gets the table and the logs so far
  NAMES+=("$1") RESULTS+=("$2") SECONDS_+=("$3") NOTES+=("$4")
  [ "$2" = FAIL ] && FAILED=1
  printf '=== %-14s %-5s %4ss  %s\n' "$1" "$2" "$3" "$4"
  summary > "$OUT/summary.md"
  tar -czf "$OUT/logs.tar.gz" -C "$LOGS" . 2> /dev/null
}
# run NAME LIMIT_S MIN_S CMD...: runs CMD (a program, or a function exported with export -f) with a
# timeout of min(LIMIT, time left), output to $LOGS/NAME.log and the terminal, unless less than
# MIN_S seconds are left (then records a skip). Sets RC (exit status, 124 = timeout, or "skip")
# and LAST_S (seconds).
run() {
  local name=$1 limit=$2 min=$3; shift 3
  local l t; l=$(left); LAST_S=0
  case ",${GPU_SKIP:-}," in *",$name,"*) RC=skip; record "$name" skip 0 "GPU_SKIP"; return ;; esac
  if [ "$l" -lt "$min" ]; then RC=skip; record "$name" skip 0 "budget: ${l}s left, needs ${min}s"; return; fi
  [ "$limit" -gt "$l" ] && limit=$l
  t=$(date +%s)
  echo "=== $name: $* (limit ${limit}s)"
  if declare -F "$1" > /dev/null; then
    timeout --kill-after=10 "$limit" bash -c "$*" 2>&1 | tee "$LOGS/$name.log"
  else
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$LOGS/$name.log"
  fi
  RC=${PIPESTATUS[0]}
  LAST_S=$(( $(date +%s) - t ))
  [ "$RC" = 124 ] && echo "=== $name: TIMEOUT after ${limit}s" | tee -a "$LOGS/$name.log"
}

# ---- 1. the machine --------------------------------------------------------------------------
export PATH=${CUDA_HOME:-/usr/local/cuda}/bin:$PATH
GPU_NAME=none ARCH=${CUDA_ARCH:-}
{
  echo "date: $(date -u +%FT%TZ)"; echo "host: $(hostname)"; uname -a
  nvidia-smi 2>&1 | head -20
  nvcc --version 2>&1 | tail -2
  env -u LD_LIBRARY_PATH python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
  git log -1 --format='commit %H %s' 2>/dev/null; git status --short 2>/dev/null | head -20
} > "$LOGS/machine.txt" 2>&1
if command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; then
  GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  [ -z "$ARCH" ] && [ -n "$cap" ] && ARCH=$cap
fi
[ -z "$ARCH" ] && ARCH="80 90"
HAVE_GPU=0; [ "$GPU_NAME" != none ] && HAVE_GPU=1
record machine ok 0 "$GPU_NAME, CUDA_ARCH=$ARCH"

# ---- 2. device kit (MPI, HDF5, libyaml, OpenBLAS): on the GPU machine only ------------------
if [ -f .device-kit/setup.sh ] && { [ "$HAVE_GPU" = 1 ] || [ "${FORCE_KIT:-0}" = 1 ]; }; then
  run kit 120 30 bash .device-kit/setup.sh .device-kit
  if [ "$RC" = 0 ] && [ -f /opt/lsst-kit/env.sh ]; then
    # shellcheck disable=SC1091
    . /opt/lsst-kit/env.sh
    record kit ok "$LAST_S" "/opt/lsst-kit"
  else
    record kit FAIL "$LAST_S" "setup.sh rc=$RC (see kit.log); building with what the image has"
  fi
else
  record kit skip 0 "no GPU here or no .device-kit: the installed libraries are used"
fi

# ---- 3. build: the kernel library with the test and the benchmark, then the whole project ---------
JOBS=$(nproc 2>/dev/null || echo 4)
run build-tests 240 60 make -s CUDA=1 BUILD="$BUILD" BIN="$BUILD/bin" CUDA_ARCH="$ARCH" -j"$JOBS" gpu-tests
if [ "$RC" = 0 ]; then record build-tests ok "$LAST_S" "libkernels.a (sm $ARCH), test_cuda_kernels, attn_bench, layers_bench"
elif [ "$RC" != skip ]; then record build-tests FAIL "${LAST_S:-0}" "rc=$RC"; fi
TEST=$BUILD/tests/gpu/test_cuda_kernels BENCH=$BUILD/tests/bench/gpu/attn_bench

# the whole project: lsst-run with the CUDA backend and the kit's MPI, HDF5, libyaml
run build-all 150 30 make -s CUDA=1 BUILD="$BUILD" BIN="$BUILD/bin" CUDA_ARCH="$ARCH" -j"$JOBS"
if [ "$RC" = 0 ]; then record build-all ok "$LAST_S" "$BUILD/bin"; elif [ "$RC" != skip ]; then record build-all FAIL "$LAST_S" "rc=$RC"; fi

# ---- 4. kernels against their CPU twins ---------------------------------------------------------
tap_counts() { grep -E '^[0-9]+ passed, [0-9]+ failed' "$LOGS/$1.log" | tail -1; }
if [ "$HAVE_GPU" = 1 ] && [ -x "$TEST" ]; then
  run kernel-tests 180 20 "$TEST"
  counts=$(tap_counts kernel-tests)
  if [ "$RC" = 0 ]; then record kernel-tests ok "$LAST_S" "$counts"
  elif [ "$RC" = skip ]; then :
  else
    record kernel-tests FAIL "$LAST_S" "rc=$RC ${counts:-no summary}; $(grep -c '^not ok' "$LOGS/kernel-tests.log") not ok; after: $(grep -E '^(not )?ok' "$LOGS/kernel-tests.log" | tail -1 | cut -c1-90); $(tail -1 "$LOGS/kernel-tests.log" | cut -c1-120)"
    if [ -z "$counts" ]; then   # the process went down (a CUDA error is sticky): the rest, without wgmma
      run kernel-tests-no-wgmma 180 20 "$TEST" --skip wgmma
      counts=$(tap_counts kernel-tests-no-wgmma)
      if [ "$RC" = 0 ]; then record kernel-tests-no-wgmma ok "$LAST_S" "$counts"
      elif [ "$RC" != skip ]; then record kernel-tests-no-wgmma FAIL "$LAST_S" "rc=$RC ${counts:-no summary}"; fi
    fi
  fi
else
  record kernel-tests skip 0 "no GPU or no test binary"
fi

# The kernel tests' logs: attn_table.py chooses (and shows as best) only variants they passed, and
# e2e_compare.sh marks a run whose attention kernels they did not pass.
TESTED=()
for f in kernel-tests kernel-tests-no-wgmma; do [ -f "$LOGS/$f.log" ] && TESTED+=("$LOGS/$f.log"); done

# ---- 4b. compute-sanitizer on the kernel test (early: the budget cuts the benchmarks, not these) -----
SAN=$(command -v compute-sanitizer || ls "${CUDA_HOME:-/usr/local/cuda}"/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)
sanitize() {  # name tool args...
  local name=$1 tool=$2; shift 2
  if [ "$HAVE_GPU" != 1 ] || [ ! -x "$TEST" ] || [ -z "$SAN" ]; then
    record "$name" skip 0 "no GPU, test binary or compute-sanitizer"; return
  fi
  run "$name" 150 40 "$SAN" --tool "$tool" --error-exitcode 9 --print-limit 50 "$@"
  local summary; summary=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$LOGS/$name.log" | tail -1)
  case "$RC" in
    0) record "$name" ok "$LAST_S" "${summary:-clean}" ;;
    skip) ;;
    124) record "$name" FAIL "$LAST_S" "timeout" ;;
    *) record "$name" FAIL "$LAST_S" "rc=$RC ${summary}" ;;
  esac
}
sanitize memcheck memcheck "$TEST" --quick
# racecheck: the tensor-core attention kernels at a size where every double buffer is refilled
# (self-attention, 200 tokens: 4 key tiles, 4 query blocks) — the shared-memory hazards to catch.
sanitize racecheck racecheck "$TEST" --only "bf16 self"

# ---- 5. lsst-run backend: cuda against backend: cpu, multi-rank on one GPU, memcheck --------------
if [ "$HAVE_GPU" = 1 ] && [ -x "$BUILD/bin/lsst-run" ]; then
  run train-check 240 60 env BIN="$BUILD/bin" bash tests/gpu/train_check.sh /tmp/lsst-train-check
  counts=$(tap_counts train-check)
  if [ "$RC" = 0 ]; then record train-check ok "$LAST_S" "$counts"
  elif [ "$RC" != skip ]; then record train-check FAIL "$LAST_S" "rc=$RC ${counts:-no summary}; $(grep -c '^not ok' "$LOGS/train-check.log") not ok"; fi
else
  record train-check skip 0 "no GPU or no lsst-run"
fi

# ---- 6. attention benchmark, lsst side, at the e2e shape: its fastest pair feeds 7 ---------------------
# sweep NAME LIMIT MIN CSV NOTE ARGS...: attn_bench --variants ARGS; the CSV rows that ran, even
# when cut short, into $LOGS/CSV. If the process went down (a sticky CUDA error, not the time
# limit), once more without the wgmma variants (NAME-no-wgmma), its rows appended.
sweep() {
  local name=$1 limit=$2 min=$3 csv=$4 note=$5; shift 5
  run "$name" "$limit" "$min" "$BENCH" --variants "$@"
  [ -f "$LOGS/$name.log" ] && grep -v '^#' "$LOGS/$name.log" | grep -E '^(impl|lsst),' > "$LOGS/$csv"
  case "$RC" in
    0) record "$name" ok "$LAST_S" "$note" ;;
    skip) ;;
    124) record "$name" FAIL "$LAST_S" "timeout" ;;
    *) record "$name" FAIL "$LAST_S" "rc=$RC; $(tail -1 "$LOGS/$name.log" | cut -c1-120)"
       run "$name-no-wgmma" "$limit" "$min" "$BENCH" --variants "$@" --skip wgmma
       [ -f "$LOGS/$name-no-wgmma.log" ] && grep -v '^#' "$LOGS/$name-no-wgmma.log" | grep -E '^lsst,' >> "$LOGS/$csv"
       if [ "$RC" = 0 ]; then record "$name-no-wgmma" ok "$LAST_S" "rows appended to $csv"
       elif [ "$RC" != skip ]; then record "$name-no-wgmma" FAIL "$LAST_S" "rc=$RC"; fi ;;
  esac
}
# First the e2e run's own shape (batch 1, 12 heads of 64, T 8192): its fastest pair is what e2e
# times; the sweep over every shape comes after e2e (6c), so a tight budget cuts it, not e2e.
E2E_VARIANTS=
if [ "$HAVE_GPU" = 1 ] && [ -x "$BENCH" ]; then
  sweep attn-e2e-shape 60 20 attn_e2e_shape.csv "its fastest pair is e2e's 'best' run" \
    --hs 64 --seq 8192 --batch 1 --heads 12
  # Only variants the kernel tests passed (a fast but wrong one must not time the e2e run).
  E2E_VARIANTS=$(env -u LD_LIBRARY_PATH python3 tests/bench/gpu/attn_table.py --best 64 8192 "$LOGS/attn_e2e_shape.csv" \
    "${TESTED[@]}")
  if [ -n "$E2E_VARIANTS" ]; then record attn-e2e-best ok 0 "fastest pair at 1 x 12 heads, hs 64, T 8192: $E2E_VARIANTS"
  else record attn-e2e-best skip 0 "no row at the e2e shape of a variant the kernel tests passed"; fi
else
  record attn-e2e-shape skip 0 "no GPU or no benchmark binary"
fi

# ---- 6b. the rest of a step (LayerNorm, GELU, column sums, GEMMs, AdamW) at the e2e shapes, vs a copy --
LAYERS_BENCH=$BUILD/tests/bench/gpu/layers_bench
if [ "$HAVE_GPU" = 1 ] && [ -x "$LAYERS_BENCH" ]; then
  run layers 60 15 "$LAYERS_BENCH"
  [ -f "$LOGS/layers.log" ] && grep -E '^[a-z_]+[a-z_ ()]*,' "$LOGS/layers.log" > "$LOGS/layers.csv"
  if [ "$RC" = 0 ]; then record layers ok "$LAST_S" "$(grep -m1 '^# sum of ms_per_step' "$LOGS/layers.log" | cut -c3-)"
  elif [ "$RC" != skip ]; then record layers FAIL "$LAST_S" "rc=$RC"; fi
else
  record layers skip 0 "no GPU or no layers_bench"
fi

# ---- 7. end-to-end training speed vs torch.compile (GPU_E2E=0 skips) -----------------------------
if [ "${GPU_E2E:-1}" = 1 ] && [ "$HAVE_GPU" = 1 ]; then
  run e2e 300 120 env BUILD="$BUILD" OUT="$LOGS" NO_BUILD=1 E2E_ATTN_VARIANTS="$E2E_VARIANTS" \
    E2E_KERNEL_TEST_LOGS="${TESTED[*]}" bash tests/bench/gpu/e2e_compare.sh 15
  if [ "$RC" = 0 ]; then record e2e ok "$LAST_S" "$(grep -E '^\| (torch|lsst)' "$LOGS/e2e.log" | tr '\n' ' ')"
  elif [ "$RC" != skip ]; then record e2e FAIL "$LAST_S" "rc=$RC"; fi
else
  record e2e skip 0 "no GPU, or GPU_E2E=0"
fi

# ---- 7a. attention benchmark, lsst side: every variant at every shape -------------------------------
if [ "$HAVE_GPU" = 1 ] && [ -x "$BENCH" ]; then
  sweep attn-lsst 150 40 attn_lsst.csv attn_lsst.csv
else
  record attn-lsst skip 0 "no GPU or no benchmark binary"
fi

# ---- 7b. where the step time goes: per-kernel times of one e2e-sized step (GPU_PROFILE=0 skips) ------
if [ "${GPU_PROFILE:-1}" = 1 ] && [ "$HAVE_GPU" = 1 ] && [ -x "$BUILD/bin/lsst-run" ]; then
  profile_cfg=(); [ -f "$LOGS/e2e_run.yaml" ] && profile_cfg=(CONFIG="$LOGS/e2e_run.yaml")   # e2e's model and data
  run profile 150 60 env BIN="$BUILD/bin" "${profile_cfg[@]}" bash tests/bench/gpu/profile.sh /tmp/lsst-profile 1
  cp /tmp/lsst-profile/kernels_per_step.csv "$LOGS/lsst_kernels.csv" 2> /dev/null
  if [ "$RC" = 0 ]; then record profile ok "$LAST_S" "$(grep -m1 'ms of kernels per step' "$LOGS/profile.log")"
  elif [ "$RC" != skip ]; then record profile FAIL "$LAST_S" "rc=$RC"; fi
else
  record profile skip 0 "no GPU, or GPU_PROFILE=0"
fi

# ---- 8. attention benchmark, PyTorch SDPA side (same GPU, same run) --------------------------------
if [ "$HAVE_GPU" = 1 ]; then
  run attn-sdpa 150 40 env -u LD_LIBRARY_PATH python3 tests/bench/gpu/sdpa_peer.py
  if [ "$RC" = 0 ]; then grep -E '^(impl|sdpa-)' "$LOGS/attn-sdpa.log" > "$LOGS/attn_sdpa.csv"; record attn-sdpa ok "$LAST_S" "attn_sdpa.csv"
  elif [ "$RC" != skip ]; then record attn-sdpa FAIL "$LAST_S" "rc=$RC"; fi
else
  record attn-sdpa skip 0 "no GPU"
fi

# ---- summary: printed last ---------------------------------------------------------------------
{
  echo
  echo "== tests/gpu/run.sh summary: $GPU_NAME, CUDA_ARCH=$ARCH, $(elapsed)s of ${BUDGET}s =="
  summary
  if [ -s "$LOGS/attn_lsst.csv" ]; then
    echo
    env -u LD_LIBRARY_PATH python3 tests/bench/gpu/attn_table.py "$LOGS/attn_lsst.csv" "$LOGS/attn_sdpa.csv" \
      "${TESTED[@]}" 2>&1
  fi
  if [ -s "$LOGS/layers.csv" ]; then   # the non-attention kernels, costliest per step first
    echo
    echo "| kernel | shape | calls/step | ms | GB/s | of copy | TFLOP/s | ms/step |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    tail -n +2 "$LOGS/layers.csv" | sort -t, -k9,9gr |
      awk -F, '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $6, $7, $8, $9 }'
  fi
  if [ -s "$LOGS/lsst_kernels.csv" ] && [ -s "$LOGS/torch_kernels.csv" ]; then   # a step's kernels by class
    echo
    env -u LD_LIBRARY_PATH python3 tests/bench/gpu/kernel_classes.py --names lsst,torch \
      "$LOGS/lsst_kernels.csv" "$LOGS/torch_kernels.csv" 2>&1
  fi
  n_ok=0 n_bad=0
  for r in "${RESULTS[@]}"; do case $r in ok) n_ok=$((n_ok + 1));; FAIL) n_bad=$((n_bad + 1));; esac; done
  echo
  echo "gpu-run: $n_ok passed, $n_bad failed"
} | tee "$LOGS/summary.md"
cp "$LOGS/summary.md" "$OUT/summary.md"
tar -czf "$OUT/logs.tar.gz" -C "$LOGS" . 2> /dev/null
exit $FAILED
