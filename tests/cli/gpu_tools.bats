#!/usr/bin/env bats
# The GPU session's helpers that decide something without a GPU: tests/bench/gpu/attn_table.py
# picks the attention variants the e2e run times (only variants the kernel tests passed).
load ../lib

setup() {
  cd "$BATS_TEST_TMPDIR"
  cat > ours.csv <<'CSV'
impl,hs,seq,batch,heads,variant,fwd_ms,bwd_ms,fwd_tflops,bwd_tflops,total_tflops,fwd_variant,bwd_variant
lsst,64,8192,1,12,v0,1.0,3.0,100,80,85,v0,v0
lsst,64,8192,1,12,v1,0.9,2.5,110,90,95,v1,v1
lsst,64,8192,1,12,v12,0.5,3.5,200,70,80,v12,v0
lsst,64,8192,1,12,v13,0.6,2.0,180,110,120,v13,v13
CSV
  cat > tests.log <<'TAP'
ok 1 - attention_forward bf16 self hs=64 [v0: fwd a; dkdv b] (out err 1e-3)
ok 2 - attention_backward bf16 self hs=64 [v0: fwd a; dkdv b] (dq err 1e-3)
ok 3 - attention_forward bf16 self hs=64 [v1: fwd a; dkdv b] (out err 1e-3)
ok 4 - attention_backward bf16 self hs=64 [v1: fwd a; dkdv b] (dq err 1e-3)
not ok 5 - attention_forward bf16 self hs=64 [v12: fwd c, wgmma; -] (out err 2.0)
ok 6 - attention_forward bf16 zigzag hs=64 [v12: fwd c, wgmma; -] (out err 1e-3)
ok 7 - attention_forward bf16 self hs=128 [v13: fwd d; dkdv e] (out err 1e-3)
TAP
}

@test "attn_table --best: the fastest forward and backward variants" {
  run "$PY" "$REPO/tests/bench/gpu/attn_table.py" --best 64 8192 ours.csv
  [ "$status" -eq 0 ]
  [ "$output" = "64=12/13" ]
}

@test "attn_table --best with the kernel tests: a variant with a not ok, or never tested, is not chosen" {
  run "$PY" "$REPO/tests/bench/gpu/attn_table.py" --best 64 8192 ours.csv tests.log
  [ "$status" -eq 0 ]
  [ "$output" = "64=1/1" ]   # v12 failed once; v13 passed only at hs 128
}

@test "attn_table --best: an atomic (not deterministic) backward is never the e2e pair's" {
  echo "lsst,64,8192,1,12,v2,0.95,1.0,105,200,180,v0,v2" >> ours.csv
  { cat tests.log
    echo "ok 8 - attention_backward bf16 self hs=64 [v2: -; fused dkdv+dq 4 warps x 16 keys, query blocks of 64 (KV regs true), dq summed by fp32 atomics (not deterministic), wgmma] (dq err 1e-3)"
  } > atomic.log
  run "$PY" "$REPO/tests/bench/gpu/attn_table.py" --best 64 8192 ours.csv atomic.log
  [ "$status" -eq 0 ]
  [ "$output" = "64=1/1" ]   # v2's backward is the fastest and passed, but sums dq by atomics
  sed -i 's/by fp32 atomics (not deterministic)/in key-block order/' atomic.log
  run "$PY" "$REPO/tests/bench/gpu/attn_table.py" --best 64 8192 ours.csv atomic.log
  [ "$output" = "64=1/2" ]
}

@test "attn_table's table with the kernel tests shows only tested variants as best" {
  run "$PY" "$REPO/tests/bench/gpu/attn_table.py" ours.csv /dev/null tests.log
  [ "$status" -eq 0 ]
  [[ "$output" == *"110 (v1) / 90 (v1) / 95"* ]]
  run "$PY" "$REPO/tests/bench/gpu/attn_table.py" ours.csv /dev/null
  [[ "$output" == *"200 (v12) / 110 (v13)"* ]]
}

@test "attn_table: the default row is the default column, and the goal is judged on it" {
  { cat ours.csv; echo "lsst,64,8192,1,12,default,0.6,2.5,180,90,100,v13,v1"; } > with_default.csv
  cat > sdpa.csv <<'CSV'
impl,hs,seq,batch,heads,variant,fwd_ms,bwd_ms,fwd_tflops,bwd_tflops,total_tflops
sdpa-flash,64,8192,1,12,-,0.5,2.0,200,150,125
CSV
  run "$PY" "$REPO/tests/bench/gpu/attn_table.py" with_default.csv sdpa.csv
  [ "$status" -eq 0 ]
  [[ "$output" == *"| (13/1) 180 / 90 / 100 |"* ]]
  [[ "$output" == *"| 0.80 | 1.02 |"* ]]   # default 100 / 125; best: v12 fwd + v13 bwd, 128 / 125
  [[ "$output" == *"Worst lsst default / SDPA-flash ratio: 0.80 (goal >= 0.70: met)"* ]]
}

@test "attn_table --check-run: an e2e run's kernels against the kernel tests" {
  echo "cuda:0 H100: attention (head size 64): forward v1 fwd a | backward v1 dkdv b | GELU: kernels" > good.log
  echo "cuda:0 H100: attention (head size 64): forward v12 fwd c | backward v1 dkdv b | GELU: kernels" > bad.log
  run "$PY" "$REPO/tests/bench/gpu/attn_table.py" --check-run good.log tests.log
  [ "$output" = "tested" ]
  run "$PY" "$REPO/tests/bench/gpu/attn_table.py" --check-run bad.log tests.log
  [ "$output" = "NOT tested-ok: fwd v12" ]
  run "$PY" "$REPO/tests/bench/gpu/attn_table.py" --check-run missing.log tests.log
  [[ "$output" == "no log"* ]]
}

# tests/bench/gpu/kernel_classes.py: a step's kernels by class, lsst-run's beside torch.compile's.
@test "kernel_classes: every kernel of kernels/cuda falls in a class" {
  { echo "kernel,calls_per_step,ms_per_step"
    # every __global__ function's name (launch bounds may nest parentheses and wrap the line)
    perl -0777 -ne 'print "$1,1,0.1\n" while /__global__\s+void\s+(?:__launch_bounds__\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)\s*)?(\w+)\s*\(/g' \
      "$REPO"/kernels/cuda/*.h "$REPO"/kernels/cuda/*.cu | sort -u; } > ours.csv
  [ "$(wc -l < ours.csv)" -gt 30 ]
  run "$PY" "$REPO/tests/bench/gpu/kernel_classes.py" ours.csv
  [ "$status" -eq 0 ]
  [[ "$output" != *"| other |"* ]] || { echo "$output"; false; }
}

@test "kernel_classes: torch.compile's kernels, and the two sides' difference by class" {
  cat > torch.csv <<'CSV'
kernel,calls_per_step,ms_per_step
"void flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<Flash_bwd_kernel_traits<64, 128, 128, 8, 2, 4, 2, false, false, cutlass::bfloat16_t>, false, true, false, false, false, true, false>(flash::Flash_bwd_params)",12,10.0
"void flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4, false, false, cutlass::bfloat16_t>, false, true, false, false, false, false, false, false>(flash::Flash_fwd_params)",12,4.0
nvjet_tst_128x256_64x4_1x2_h_bz_coopB_TNT,60,7.5
triton_red_fused_add_native_layer_norm_native_layer_norm_backward_3,24,0.6
triton_poi_fused_gelu_gelu_backward_7,12,0.5
"void at::native::(anonymous namespace)::fused_adamw_kernel<float>",4,0.9
CSV
  cat > lsst.csv <<'CSV'
kernel,calls_per_step,ms_per_step
attn_bwd_dkdv_kernel,12,9.0
attn_bwd_dq_kernel,12,5.0
attn_fwd_kernel,12,4.0
attn_dsum_kernel,12,0.4
layernorm_backward_dinp_kernel,25,1.0
adamw_kernel,1,1.0
CSV
  run "$PY" "$REPO/tests/bench/gpu/kernel_classes.py" --names lsst,torch lsst.csv torch.csv
  [ "$status" -eq 0 ]
  [[ "$output" == *"| attention backward | 14.400 | 36 | 10.000 | 12 | +4.400 |"* ]]
  [[ "$output" == *"| attention forward | 4.000 | 12 | 4.000 | 12 | +0.000 |"* ]]
  [[ "$output" == *"| GEMM | 0.000 | 0 | 7.500 | 60 | -7.500 |"* ]]
  [[ "$output" == *"| LayerNorm | 1.000 | 25 | 0.600 | 24 | +0.400 |"* ]]
  [[ "$output" == *"| GELU | 0.000 | 0 | 0.500 | 12 | -0.500 |"* ]]
  [[ "$output" == *"| optimizer, clipping, casts | 1.000 | 1 | 0.900 | 4 | +0.100 |"* ]]
  [[ "$output" == *"**20.400**"*"**23.500**"*"**-3.100**"* ]]
  [[ "$output" != *"no class"* ]]
  run "$PY" "$REPO/tests/bench/gpu/kernel_classes.py" --names one lsst.csv torch.csv
  [ "$status" -eq 2 ]
}
