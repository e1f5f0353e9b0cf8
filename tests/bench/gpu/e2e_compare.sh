#!/usr/bin/env bash
# End-to-end training speed, issue 5: lsst-run (backend: cuda) against the same model in PyTorch
# (tests/bench/gpu/torch_peer.py, torch.compile) on the same GPU: tokens/s and MFU, 12 layers,
# dim 768, 12 heads, seq 8192, batch 1.
#
# Both sides: fp32 master weights, bf16 compute, the same model, init, optimizer and clipping;
# tokens/s from the median step time after WARM steps, MFU against the card's dense bf16 peak.
# OUT/torch_kernels.csv: torch.compile's kernels per step (torch.profiler), for
# tests/bench/gpu/kernel_classes.py to set beside lsst-run's (tests/bench/gpu/profile.sh).
#
#   BUILD=build-gpu OUT=... [E2E_ATTN_VARIANTS=64=F/B] [E2E_KERNEL_TEST_LOGS="LOG..."] [E2E_ALL=1] \
#     bash tests/bench/gpu/e2e_compare.sh [STEPS]
# Runs: torch.compile; lsst-run with its defaults, with LSST_BGRAD=kernels LSST_LN=split
# LSST_RESIDUAL=kernel LSST_QKV=split together (the defaults before 2026-11-27), with
# LSST_BGRAD=kernels alone, with LSST_ATTN_BWD=atomic and =fixed, and with the attention
# benchmark's fastest pair; E2E_ALL=1 adds the other ways measured before (mma.sync, GELU kernels,
# fused backward, each of the other switches alone).
# With the kernel tests' logs (test_cuda_kernels TAP; tests/gpu/run.sh passes them), each lsst run
# says whether the attention kernels it used passed them ("tested"); a run that used a kernel that
# failed or was not tested is no result (the table says so instead of a ratio).
# Needs: the device kit sourced (MPI, HDF5, libyaml for lsst-run), python3 with torch. NO_BUILD=1:
# lsst-run is already built (tests/gpu/run.sh). Exit status 1 when any run gave no step time.
set -u
cd "$(dirname "$0")/../../.." || exit 2
BUILD=${BUILD:-build-gpu}
OUT=${OUT:-$BUILD/out}
STEPS=${1:-30}
WARM=10
mkdir -p "$OUT"
L=12 C=768 NH=12 T=8192 V=256

# Model FLOPs per token (the convention of torch_peer.py): 6 * matmul params + 6 * L * C * T.
flops_per_token=$(( 6 * (L * 12 * C * C + V * C) + 6 * L * C * T ))
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
case "$gpu" in
  *H200*) peak=989e12 ;; *"H100 PCIe"*) peak=756e12 ;; *H100*) peak=989e12 ;; *A100*) peak=312e12 ;; *) peak=0 ;;
esac

# ---- PyTorch (torch.compile) ----------------------------------------------------------------------
env -u LD_LIBRARY_PATH python3 tests/bench/gpu/torch_peer.py --layers $L --dim $C --heads $NH --seq $T \
  --steps "$STEPS" --warmup $WARM --profile "$OUT/torch_kernels.csv" 2>&1 | tee "$OUT/e2e_torch.log"
torch_line=$(grep '^torch-compile' "$OUT/e2e_torch.log" | tail -1)
rc=0
[ -n "$torch_line" ] || { echo "e2e: torch.compile gave no result (see e2e_torch.log)"; rc=1; }

# ---- lsst-run, backend: cuda: the default kernels, then the non-default choices (environment) -----
bin=$BUILD/bin/lsst-run
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
[ "${NO_BUILD:-0}" = 1 ] ||
  make -s CUDA=1 BUILD="$BUILD" BIN="$BUILD/bin" CUDA_ARCH="${CUDA_ARCH:-${arch:-90}}" -j"$(nproc)" all \
    > "$OUT/e2e_build.log" 2>&1 || echo "e2e: make CUDA=1 all failed (see e2e_build.log)"
lsst_lines=()
# lsst_run NAME [VAR=VALUE...]: one training run with those environment settings (LSST_ATTN_BWD,
# LSST_ATTN_WGMMA, LSST_GELU, LSST_BGRAD, LSST_LN, LSST_RESIDUAL, LSST_QKV: kernels/cuda/README.md); appends
# "NAME,ms,tokens/s,MFU" to lsst_lines
# (each log's "cuda:N ...: attention ..." line says which kernels ran).
lsst_run() {
  local name=$1 log=$OUT/e2e_$1.log ms
  shift
  env "$@" "$bin" --config "$OUT/e2e_run.yaml" --set output.dir="$BUILD/e2e-$name" 2>&1 | tee "$log"
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "e2e: $name: lsst-run failed (see $log)"; rc=1; }
  # "step N/M | loss ... | X ms | Y tok/s" (one rank, no prefix): median step time after the warmup,
  # from Y (to 1 token/s; X is printed to 0.1 ms only).
  ms=$(grep -E '^step [0-9]+/' "$log" |
       awk -F'|' -v w=$WARM -v T=$T '{split($1, a, "[ /]"); if (a[2] + 0 > w) {gsub(/ tok\/s/, "", $6);
                                     if ($6 + 0 > 0) printf "%.4f\n", 1e3 * T / ($6 + 0)}}' |
       sort -g | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]}')
  [ -n "$ms" ] || { echo "e2e: $name: no step times (see $log)"; rc=1; return; }
  lsst_lines+=("$(awk -v n="$name" -v ms="$ms" -v T=$T -v f=$flops_per_token -v p=$peak \
    'BEGIN {tok = T / (ms / 1e3); printf "%s,%.3f,%.0f,%s", n, ms, tok, (p > 0 ? sprintf("%.4f", f * tok / p) : "nan")}')")
}
if [ -x "$bin" ] && nm "$bin" 2> /dev/null | grep -q ' T cuda_attention_forward_bf16$'; then
  data=$BUILD/e2e-data
  corpus=.device-data/enwik8-head-1MiB   # carried to the device machine (../shared does not travel)
  [ -f "$corpus" ] || corpus=../shared/data/enwik8/enwik8-head-1MiB
  [ -f "$data/manifest.yaml" ] || "$BUILD/bin/lsst-prep" --force "$corpus" "$data" > /dev/null
  cat > "$OUT/e2e_run.yaml" <<EOF
data:     {dir: $data, seq_len: $T, batch: 1}
model:    {layers: $L, dim: $C, heads: $NH, mlp: $((4 * C)), vocab: $V}
parallel: {scheme: none}
train:    {steps: $((STEPS + WARM)), lr: 3.0e-4, warmup: 0, seed: 1, eval_every: 0, ckpt_every: 0}
backend:  cuda
output:   {dir: $BUILD/e2e-run}
EOF
  # The defaults (on sm_90: wgmma attention; GELU, bias gradients and residual adds in the GEMM
  # epilogues; LayerNorm with the row in registers; Q, K, V as one product), then the other ways.
  # No longer timed here (H100, 2026-11-26, RESULTS.md): the fused backward (65 ms against 31),
  # the mma.sync attention (LSST_ATTN_WGMMA=0: 36.6), the GELU kernels (LSST_GELU=kernels: 31.2
  # against 30.8), nor (H200, 2026-11-27) LSST_LN, LSST_RESIDUAL, LSST_QKV alone (each within
  # 0.1 ms of the step without it); set E2E_ALL=1 to time those again.
  lsst_run lsst-cuda
  old=(LSST_BGRAD=kernels LSST_LN=split LSST_RESIDUAL=kernel LSST_QKV=split)
  if [ "${E2E_ALL:-0}" = 1 ]; then
    lsst_run lsst-cuda-mma LSST_ATTN_WGMMA=0
    lsst_run lsst-cuda-gelu-kernels LSST_GELU=kernels
    lsst_run lsst-cuda-fused-bwd LSST_ATTN_BWD=fused
    for v in LSST_LN=split LSST_RESIDUAL=kernel LSST_QKV=split; do
      lsst_run "lsst-cuda-$(echo "${v#LSST_}" | tr 'A-Z_=' 'a-z--')" "$v"
    done
  fi
  # The four switches the other way (the defaults before 2026-11-27): what they save together.
  lsst_run lsst-cuda-kernels-split "${old[@]}"
  # The bias gradients alone the other way: on dae1fee's defaults their epilogues cost 0.19 ms a
  # step (H200, 2026-11-27), yet the four together saved 0.2; whether this one belongs is open.
  lsst_run lsst-cuda-bgrad-kernels LSST_BGRAD=kernels
  # dQ summed by fp32 atomics in the dK/dV kernel (FlashAttention-2's way; not deterministic, so
  # not a default): what determinism costs.
  lsst_run lsst-cuda-atomic LSST_ATTN_BWD=atomic
  # The same sums as 64-bit fixed-point integers: deterministic too, but slower than split.
  lsst_run lsst-cuda-fixed LSST_ATTN_BWD=fixed
  if [ -n "${E2E_ATTN_VARIANTS:-}" ]; then   # the attention benchmark's fastest pair (tests/gpu/run.sh)
    lsst_run lsst-cuda-best LSST_ATTN_VARIANTS="$E2E_ATTN_VARIANTS"
  fi
else
  echo "e2e: $bin was built without CUDA (make CUDA=1): lsst side skipped"
  rc=1
fi

# ---- table ------------------------------------------------------------------------------------------
echo
echo "| impl | step ms | tokens/s | MFU | attention kernels |"
echo "|---|---:|---:|---:|---|"
if [ -n "$torch_line" ]; then
  IFS=, read -r impl _ _ _ _ _ _ ms tok mfu _ <<< "$torch_line"
  echo "| $impl | $ms | $tok | $mfu | SDPA |"
  torch_tok=$tok
fi
[ ${#lsst_lines[@]} -gt 0 ] || echo "| lsst-cuda | - | - | - (no result: see e2e_lsst-cuda.log) | - |"
read -r -a test_logs <<< "${E2E_KERNEL_TEST_LOGS:-}"
for line in "${lsst_lines[@]}"; do
  IFS=, read -r impl ms tok mfu <<< "$line"
  verdict="not checked (no kernel test logs)"
  [ ${#test_logs[@]} -gt 0 ] &&
    verdict=$(env -u LD_LIBRARY_PATH python3 tests/bench/gpu/attn_table.py --check-run "$OUT/e2e_$impl.log" "${test_logs[@]}")
  echo "| $impl | $ms | $tok | $mfu | $verdict |"
  case $verdict in
    tested|"not checked"*)
      [ -n "${torch_tok:-}" ] && awk -v n="$impl" -v a="$tok" -v b="$torch_tok" \
        'BEGIN {printf "%s / torch.compile tokens/s: %.2f (goal >= 1.00: %s)\n", n, a / b, (a >= b ? "met" : "NOT met")}' ;;
    *) echo "$impl: no result (its attention kernels: $verdict)" ;;
  esac
done
exit $rc
