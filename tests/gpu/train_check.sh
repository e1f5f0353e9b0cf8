#!/usr/bin/env bash
# lsst-run backend: cuda against backend: cpu on the lent GPU (issue 5), one script:
#   - 50 steps, same config: cuda (bf16) losses within bf16 tolerance of the cpu (fp32) ones;
#   - lss 2x1, 4x1, 2x2, 2x1 zigzag + kv regather and megatron-sp 2x1, 4x1, 2x2 on ONE GPU
#     (comm: mpi) equal 1 rank;
#   - evaluation (steps 25, 50) within the same tolerance;
#   - --plan = the device mem_peak the run reports; resume from a checkpoint is bit-exact;
#   - learning: the loss falls;
#   - the non-default kernel choices (LSST_GELU=kernels, LSST_ATTN_BWD=fused, both: 1 rank and
#     lss 2x1 / megatron-sp 2x1; LSST_BGRAD=kernels, LSST_LN=split, LSST_RESIDUAL=kernel,
#     LSST_QKV=split: 1 rank, the last two in the lss 2x1 run too) within the same
#     tolerance of cpu / of cuda 1 rank; at head size 64 the defaults (on an sm_90 GPU the wgmma
#     variants: the run's kernels line must name them), the mma.sync variants
#     (LSST_ATTN_WGMMA=0), the fused backward, the atomic one (LSST_ATTN_BWD=atomic, wgmma and
#     mma.sync) and the fixed-point one (LSST_ATTN_BWD=fixed; 1 rank and lss 2x1; run twice:
#     bitwise the same) likewise;
#   - comm: nccl: 1 rank bitwise equal to comm: mpi; with 2+ GPUs lss 2x1 (+ zigzag/regather)
#     and megatron-sp 2x1 (2x2 of both with 4+ GPUs), one GPU per rank, equal 1 rank; with one
#     GPU, 2 ranks with comm: nccl are refused with a clear message.
# Then compute-sanitizer memcheck on a 3-step cuda run (lss 2x1).
#   tests/gpu/train_check.sh WORKDIR        (BIN: where lsst-run is, default build-gpu/bin)
# The comparisons are tests/gpu/train_check.py's; it prints "N passed, N failed" last.
set -u
cd "$(dirname "$0")/../.." || exit 2
W=${1:?usage: train_check.sh WORKDIR}
BIN=${BIN:-build-gpu/bin}
PY=${PY:-python3}
rm -rf "$W"; mkdir -p "$W"
corpus=.device-data/enwik8-head-1MiB
[ -f "$corpus" ] || corpus=../shared/data/enwik8/enwik8-head-1MiB
"$BIN/lsst-prep" --quiet "$corpus" "$W/data" || exit 1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=4
cat > "$W/base.yaml" <<YAML
data:     {dir: $W/data, seq_len: 512, batch: 4}
model:    {layers: 2, dim: 128, heads: 4, mlp: 512, vocab: 256}
parallel: {scheme: none, sequence: 1, data: 1}
train:    {steps: 50, lr: 1.0e-3, warmup: 5, seed: 11, eval_every: 25, eval_sequences: 4, ckpt_every: 25}
backend:  cpu
output:   {dir: $W/unused}
YAML
fail=0
run() {  # run NAME RANKS [--set ...]: one lsst-run, its log in WORKDIR/NAME.log
  local name=$1 n=$2; shift 2
  local cmd=("$BIN/lsst-run" --config "$W/base.yaml" --set "output.dir=$W/$name" "$@")
  [ "$n" -gt 1 ] && cmd=(mpirun --oversubscribe -np "$n" "${cmd[@]}")
  if ! timeout 300 "${cmd[@]}" > "$W/$name.log" 2>&1; then
    echo "not ok - $name: lsst-run failed:"; tail -5 "$W/$name.log"; fail=1
  fi
}
plan() {  # plan NAME [--set ...]: lsst-run --plan's bytes into WORKDIR/NAME.plan
  local name=$1; shift
  "$BIN/lsst-run" --config "$W/base.yaml" --plan "$@" | grep -o '[0-9]* bytes' | awk '{print $1}' > "$W/$name.plan"
}
cuda=(--set "backend=${BACKEND:-cuda}")   # BACKEND=cpu: the same runs on the CPU (checks this script)
lss() { echo --set parallel.scheme=lss --set parallel.sequence="$1" --set parallel.data="$2"; }
mg() { echo --set parallel.scheme=megatron-sp --set parallel.sequence="$1" --set parallel.data="$2"; }
run cpu-1 1
run cuda-1 1 "${cuda[@]}"
# shellcheck disable=SC2046
run cuda-2x1 2 "${cuda[@]}" $(lss 2 1)
# shellcheck disable=SC2046
run cuda-4x1 4 "${cuda[@]}" $(lss 4 1)
# shellcheck disable=SC2046
run cuda-2x2 4 "${cuda[@]}" $(lss 2 2)
# shellcheck disable=SC2046
run cuda-2x1-zz-regather 2 "${cuda[@]}" $(lss 2 1) --set parallel.balance=zigzag --set parallel.kv=regather
# shellcheck disable=SC2046
run cuda-mg-2x1 2 "${cuda[@]}" $(mg 2 1)
# shellcheck disable=SC2046
run cuda-mg-4x1 4 "${cuda[@]}" $(mg 4 1)
# shellcheck disable=SC2046
run cuda-mg-2x2 4 "${cuda[@]}" $(mg 2 2)
run cuda-1-resumed 1 "${cuda[@]}" --resume "$W/cuda-1/checkpoints/step-000025.h5"
if [ "${BACKEND:-cuda}" = cuda ]; then   # train_check.py compares these by name (cuda-1-*, cuda-*-opt)
  LSST_GELU=kernels run cuda-1-gelu-kernels 1 "${cuda[@]}"
  LSST_ATTN_BWD=fused run cuda-1-fused-bwd 1 "${cuda[@]}"
  LSST_BGRAD=kernels run cuda-1-bgrad-kernels 1 "${cuda[@]}"
  LSST_LN=split run cuda-1-ln-split 1 "${cuda[@]}"
  LSST_RESIDUAL=kernel run cuda-1-residual-kernel 1 "${cuda[@]}"
  LSST_QKV=split run cuda-1-qkv-split 1 "${cuda[@]}"
  LSST_QKV=split plan cuda-1-qkv-split "${cuda[@]}"
  # shellcheck disable=SC2046
  LSST_GELU=kernels LSST_ATTN_BWD=fused LSST_RESIDUAL=kernel LSST_QKV=split run cuda-2x1-opt 2 "${cuda[@]}" \
    $(lss 2 1)
  # shellcheck disable=SC2046
  LSST_GELU=kernels LSST_ATTN_BWD=fused run cuda-mg-2x1-opt 2 "${cuda[@]}" $(mg 2 1)
  # Head size 64 (2 heads), where the wgmma (sm_90a) variants exist: the defaults (wgmma on sm_90),
  # mma.sync (LSST_ATTN_WGMMA=0) and the fused backward (1 rank vs cpu), and lss 2x1 with the
  # fused backward vs cuda 1 rank.
  hs64=(--set model.heads=2)
  run cpu-hs64 1 "${hs64[@]}"
  run cuda-hs64 1 "${cuda[@]}" "${hs64[@]}"
  LSST_ATTN_WGMMA=0 run cuda-hs64-mma 1 "${cuda[@]}" "${hs64[@]}"
  LSST_ATTN_BWD=fused run cuda-hs64-wgmma-fused 1 "${cuda[@]}" "${hs64[@]}"
  # shellcheck disable=SC2046
  LSST_ATTN_BWD=fused run cuda-hs64-2x1-wgmma 2 "${cuda[@]}" "${hs64[@]}" $(lss 2 1)
  # dQ by fp32 atomics (not deterministic): the wgmma kernel on sm_90, the mma.sync one elsewhere
  LSST_ATTN_BWD=atomic run cuda-hs64-atomic 1 "${cuda[@]}" "${hs64[@]}"
  LSST_ATTN_WGMMA=0 LSST_ATTN_BWD=atomic run cuda-hs64-mma-atomic 1 "${cuda[@]}" "${hs64[@]}"
  # dQ as fixed-point integer sums (deterministic): 1 rank vs cpu, and lss 2x1 vs cuda 1 rank
  LSST_ATTN_BWD=fixed run cuda-hs64-fixed 1 "${cuda[@]}" "${hs64[@]}"
  # shellcheck disable=SC2046
  LSST_ATTN_BWD=fixed run cuda-hs64-2x1-fixed 2 "${cuda[@]}" "${hs64[@]}" $(lss 2 1)
  LSST_ATTN_BWD=fixed run cuda-hs64-fixed-again 1 "${cuda[@]}" "${hs64[@]}"
fi
NCCL_RUNS=
nccl() {  # nccl NAME RANKS [--set ...]: a comm: nccl run, compared with cuda-1 by train_check.py
  local name=$1; shift
  run "$name" "$@" "${cuda[@]}" --set comm=nccl
  NCCL_RUNS="$NCCL_RUNS $name"
}
NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [ "${BACKEND:-cuda}" = cuda ]; then
  nccl cuda-1-nccl 1
  # shellcheck disable=SC2046
  if [ "$NGPU" -ge 2 ]; then
    nccl cuda-nccl-2x1 2 $(lss 2 1)
    nccl cuda-nccl-2x1-zz-regather 2 $(lss 2 1) --set parallel.balance=zigzag --set parallel.kv=regather
    nccl cuda-nccl-mg-2x1 2 $(mg 2 1)
    plan cuda-nccl-2x1 "${cuda[@]}" $(lss 2 1) --set comm=nccl
  fi
  # shellcheck disable=SC2046
  [ "$NGPU" -ge 4 ] && nccl cuda-nccl-2x2 4 $(lss 2 2) && nccl cuda-nccl-mg-2x2 4 $(mg 2 2)
  if [ "$NGPU" -eq 1 ]; then
    # shellcheck disable=SC2046
    timeout 120 mpirun --oversubscribe -np 2 "$BIN/lsst-run" --config "$W/base.yaml" --set "output.dir=$W/nccl-shared" \
      "${cuda[@]}" $(lss 2 1) --set comm=nccl > "$W/nccl-shared.log" 2>&1
    rc=$?
    if [ "$rc" -eq 1 ] && grep -q "comm: nccl needs a GPU per rank, but ranks 0 and 1 of this node both use GPU " "$W/nccl-shared.log"; then
      echo "ok - comm: nccl with 2 ranks on 1 GPU is refused: $(grep -m1 'needs a GPU per rank' "$W/nccl-shared.log")"
    else
      echo "not ok - comm: nccl with 2 ranks on 1 GPU: exit $rc"; tail -5 "$W/nccl-shared.log"; fail=1
    fi
  fi
fi
export NCCL_RUNS
plan cuda-1 "${cuda[@]}"
# shellcheck disable=SC2046
plan cuda-2x1 "${cuda[@]}" $(lss 2 1)
# shellcheck disable=SC2046
plan cuda-mg-2x1 "${cuda[@]}" $(mg 2 1)
env -u LD_LIBRARY_PATH "$PY" tests/gpu/train_check.py "$W" || fail=1

[ "${BACKEND:-cuda}" = cuda ] || exit $fail
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
# shellcheck disable=SC2046
if timeout 300 mpirun --oversubscribe -np 2 "$SAN" --tool memcheck --error-exitcode 9 --print-limit 20 \
     "$BIN/lsst-run" --config "$W/base.yaml" --set "output.dir=$W/memcheck" --set train.steps=3 \
     --set train.ckpt_every=0 "${cuda[@]}" $(lss 2 1) > "$W/memcheck.log" 2>&1; then
  echo "ok - compute-sanitizer memcheck: lsst-run cuda lss 2x1, 3 steps: $(grep -c 'ERROR SUMMARY: 0 errors' "$W/memcheck.log")/2 ranks clean"
else
  echo "not ok - compute-sanitizer memcheck on lsst-run:"; grep -E 'ERROR SUMMARY|Invalid|error' "$W/memcheck.log" | head -10; fail=1
fi
exit $fail
