#!/usr/bin/env bats
# lsst-run on one rank (CPU backend): config errors, learning, metrics contract,
# checkpoints, bit-exact resume, signals.
load ../lib

setup_file() { export DATA=$(prep_data); }
setup() { cd "$BATS_TEST_TMPDIR"; write_config run.yaml "$DATA" out; }

@test "run: --help shows an example, --version the git commit" {
  run "$BIN/lsst-run" --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"example:"* ]]
  [[ "$output" == *"--resume"* ]]
  run "$BIN/lsst-run" --version
  [ "$status" -eq 0 ]
  [[ "$output" == "lsst-run "*"(git "* ]]
}

@test "run: unknown key is an error at file:line:col with a suggestion, nothing written" {
  sed -i 's/layers: 2/layrs: 2/' run.yaml
  run "$BIN/lsst-run" --config run.yaml
  [ "$status" -eq 2 ]
  [[ "$output" == "lsst-run: error: run.yaml:2:"*"unknown key"*"layrs"*"did you mean"*"layers"* ]]
  [ "${#lines[@]}" -eq 1 ]
  [ ! -e out ]
}

@test "run: wrong type and impossible values are errors before anything is allocated" {
  run "$BIN/lsst-run" --config run.yaml --set model.dim=abc
  [ "$status" -eq 2 ]
  [[ "$output" == *"model.dim"* ]]
  [ ! -e out ]
  run "$BIN/lsst-run" --config run.yaml --set model.heads=5
  [ "$status" -eq 2 ]
  [[ "$output" == *"heads"* ]]
  [ ! -e out ]
  run "$BIN/lsst-run" --config run.yaml --set train.stepz=3
  [ "$status" -eq 2 ]
  [[ "$output" == *"--set train.stepz=3"*"did you mean"* ]]
  run "$BIN/lsst-run" --config missing.yaml
  [ "$status" -eq 2 ]
  [[ "$output" == *"missing.yaml"* ]]
  run "$BIN/lsst-run"
  [ "$status" -eq 2 ]
  [[ "$output" == *"--config"* ]]
}

@test "run: data errors name the directory" {
  run "$BIN/lsst-run" --config run.yaml --set data.dir=nowhere
  [ "$status" -eq 2 ]
  [[ "$output" == *"nowhere"* ]]
  run "$BIN/lsst-run" --config run.yaml --set model.vocab=100
  [ "$status" -eq 2 ]
  [[ "$output" == *"vocab"* ]]
}

@test "run: a damaged shard read by an evaluation fails the run (exit 1, one error naming the file)" {
  "$BIN/lsst-prep" --quiet "$ENWIK8_4M" d
  damage_chunk d/valid-00000.h5
  run "$BIN/lsst-run" --config run.yaml --set data.dir=d --set train.eval_every=2
  echo "$output"
  [ "$status" -eq 1 ]
  [ "$(grep -c 'lsst-run: error' <<<"$output")" -eq 1 ]
  [[ "$output" == *"lsst-run: error: d/valid-00000.h5: cannot read tokens"* ]]
  [[ "$output" != *"step 3/6"* ]]   # before: the error, then training went on and exited 0
}

@test "run: writes run.yaml, log, metrics with the contract's fields and attributes, a final checkpoint" {
  run "$BIN/lsst-run" --config run.yaml --set train.eval_every=3
  [ "$status" -eq 0 ]
  [[ "${lines[1]}" == "step 1/6 | loss "*" | bpc "*" | lr "*" ms | "*" tok/s" ]]
  [ -f out/run.yaml ]
  [ -f out/log ]
  [ -f out/checkpoints/step-000006.h5 ]
  grep -q "step 6/6" out/log
  run h5 out/metrics/rank-00000.h5 "list(f['steps'].dtype.names), len(f['steps']), list(f['steps']['step'])"
  [ "$output" = "(['step', 'loss', 'lr', 'grad_norm', 'tokens', 't_step', 't_compute', 't_comm', 'comm_bytes', 'mem_peak'], 6, [1, 2, 3, 4, 5, 6])" ]
  run h5 out/metrics/rank-00000.h5 "sorted(f.attrs.keys())"
  [ "$output" = "['backend', 'device', 'dp_rank', 'dp_size', 'git', 'host', 'model', 'rank', 'scheme', 'seq_len', 'sp_rank', 'sp_size', 'world']" ]
  run h5 out/metrics/rank-00000.h5 "len(f['eval']), f['eval']['split'][0].decode(), f['eval']['step'][1], int(f['steps']['mem_peak'][0] > 0), int(f['steps']['tokens'][0])"
  [ "$output" = "(2, 'valid', 6, 1, 256)" ]
  # run.yaml is the complete resolved config: it runs again as is
  run "$BIN/lsst-run" --config out/run.yaml --set output.dir=again --set train.steps=1
  [ "$status" -eq 0 ]
  [ -f again/checkpoints/step-000001.h5 ]
}

@test "run: the loss falls from ln 256 to well below the unigram entropy of the data" {
  # Entropy of the byte distribution of the training text, computed here, not hard-coded.
  H=$("$PY" -c "
import numpy as np, sys
b = np.fromfile(sys.argv[1], dtype=np.uint8); p = np.bincount(b, minlength=256) / len(b); p = p[p > 0]
print(float(-(p * np.log(p)).sum()))" "$ENWIK8_4M")
  run "$BIN/lsst-run" --config run.yaml --set train.steps=300 --set train.lr=1e-2 --set train.warmup=20 \
      --set model.dim=64 --set data.seq_len=128 --set data.batch=8 --set train.eval_every=300
  [ "$status" -eq 0 ]
  first=$(h5 out/metrics/rank-00000.h5 "f['steps']['loss'][0]")
  last=$(h5 out/metrics/rank-00000.h5 "f['steps']['loss'][-10:].mean()")
  valid=$(h5 out/metrics/rank-00000.h5 "f['eval']['loss'][-1]")
  echo "first $first last10 $last valid $valid unigram entropy $H" >&3
  "$PY" -c "import math,sys; f,l,v,h=map(float,sys.argv[1:]); assert abs(f-math.log(256))<0.1, f; assert l < h-0.5, (l,h); assert v < h-0.3, (v,h)" "$first" "$last" "$valid" "$H"
}

@test "run: resume is bit-exact: losses after step k equal the uninterrupted run" {
  run "$BIN/lsst-run" --config run.yaml --set train.steps=12 --set output.dir=full
  [ "$status" -eq 0 ]
  run "$BIN/lsst-run" --config run.yaml --set train.steps=12 --set train.ckpt_every=5 --set output.dir=part
  [ "$status" -eq 0 ]
  # Throw away the tail, keep the step-5 checkpoint, and resume from it.
  rm part/checkpoints/step-000010.h5 part/checkpoints/step-000012.h5
  run "$BIN/lsst-run" --config run.yaml --set train.steps=12 --set train.ckpt_every=5 --set output.dir=part --resume latest
  [ "$status" -eq 0 ]
  [[ "$output" == *"resumed from part/checkpoints/step-000005.h5 at step 5"* ]]
  a=$(h5 full/metrics/rank-00000.h5 "f['steps']['loss'].tobytes().hex()")
  b=$(h5 part/metrics/rank-00000.h5 "f['steps']['loss'].tobytes().hex()")
  [ "$a" = "$b" ]
  run h5 part/metrics/rank-00000.h5 "list(f['steps']['step'])"
  [ "$output" = "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]" ]
  "$PY" - full/checkpoints/step-000012.h5 part/checkpoints/step-000012.h5 <<'PY'
import h5py, sys, numpy as np
a, b = h5py.File(sys.argv[1], 'r'), h5py.File(sys.argv[2], 'r')
for g in ('params', 'adam_m', 'adam_v'):
    for k in a[g]:
        assert np.array_equal(a[g][k][()], b[g][k][()]), (g, k)
PY
}

@test "run: evaluations between steps leave training alone: the same losses with and without them" {
  # (The next step's batch is read during a step; an evaluation reads its windows into the same
  # buffers, so the batch must be read again after it.)
  run "$BIN/lsst-run" --config run.yaml --set train.steps=7 --set train.eval_every=0 --set output.dir=plain
  [ "$status" -eq 0 ]
  run "$BIN/lsst-run" --config run.yaml --set train.steps=7 --set train.eval_every=2 --set output.dir=evals
  [ "$status" -eq 0 ]
  [[ "$output" == *"eval valid | step 2 |"* ]]
  a=$(h5 plain/metrics/rank-00000.h5 "f['steps']['loss'].tobytes().hex()")
  b=$(h5 evals/metrics/rank-00000.h5 "f['steps']['loss'].tobytes().hex()")
  [ "$a" = "$b" ]
}

@test "run: --resume with a missing file is an error; latest with none starts from step 0" {
  run "$BIN/lsst-run" --config run.yaml --resume nothere.h5
  [ "$status" -eq 2 ]
  [[ "$output" == *"nothere.h5"* ]]
  run "$BIN/lsst-run" --config run.yaml --resume latest --set train.steps=2
  [ "$status" -eq 0 ]
  [[ "$output" == *"starting from step 0"* ]]
}

@test "run: SIGTERM finishes the step, checkpoints, exits 75; --resume latest completes the run" {
  "$BIN/lsst-run" --config run.yaml --set train.steps=100000 >log 2>&1 &
  pid=$!
  for i in $(seq 1 100); do grep -q "step 3/" log && break; sleep 0.1; done
  kill -TERM $pid
  rc=0; wait $pid || rc=$?
  [ "$rc" -eq 75 ]
  ckpt=$(ls out/checkpoints/)
  [ -n "$ckpt" ]
  grep -q "stop signal" log
  run "$BIN/lsst-run" --config run.yaml --set train.steps=$(( 10#${ckpt:5:6} + 2 )) --resume latest
  [ "$status" -eq 0 ]
}

@test "run: --eval-only test evaluates the latest checkpoint" {
  run "$BIN/lsst-run" --config run.yaml
  [ "$status" -eq 0 ]
  run "$BIN/lsst-run" --config run.yaml --eval-only test
  [ "$status" -eq 0 ]
  [[ "$output" == *"eval test | step 6 | loss "* ]]
  run "$BIN/lsst-run" --config run.yaml --eval-only train
  [ "$status" -eq 2 ]
}

@test "run: the evaluation loss equals an independent float64 numpy transformer on the checkpoint" {
  run "$BIN/lsst-run" --config run.yaml --set train.eval_sequences=4 --set train.steps=10
  [ "$status" -eq 0 ]
  run "$BIN/lsst-run" --config run.yaml --set train.eval_sequences=4 --eval-only valid
  [ "$status" -eq 0 ]
  ours=$(sed -n 's/.*eval valid | step 10 | loss \([0-9.]*\) .*/\1/p' <<<"$output")
  ref=$("$PY" "$REPO/tests/cli/reference_model.py" out/checkpoints/step-000010.h5 "$DATA/valid-00000.h5" 64 4 4)
  echo "lsst-run $ours, numpy reference $ref"
  "$PY" -c "import sys; a, b = map(float, sys.argv[1:]); assert abs(a - b) < 1e-4, (a, b)" "$ours" "$ref"
}

# The CUDA build (.ci/run makes it into build-cuda before the tests) on a machine without a GPU.
@test "run: backend cuda without a visible GPU: one clear error, exit 1, nothing written; --plan works (mpi, nccl)" {
  cuda_run=$REPO/build-cuda/bin/lsst-run
  [ -x "$cuda_run" ] || skip "no CUDA build (make CUDA=1 BUILD=build-cuda BIN=build-cuda/bin)"
  if nvidia-smi -L > /dev/null 2>&1; then skip "a GPU is visible here"; fi
  run "$cuda_run" --config run.yaml --set backend=cuda
  [ "$status" -eq 1 ]
  [[ "$output" == "lsst-run: error: backend: cuda, but no CUDA device is visible ("*")" ]]
  [ "${#lines[@]}" -eq 1 ]
  [ ! -e out ]
  # 2 ranks, comm: nccl: the GPU-per-rank check talks to the node's ranks; none may hang.
  run mpirun_n 2 "$cuda_run" --config run.yaml --set backend=cuda --set comm=nccl --set parallel.scheme=lss \
      --set parallel.sequence=2
  [ "$status" -ne 0 ]
  [ "$(grep -c "no CUDA device is visible" <<<"$output")" -eq 2 ]
  [ ! -e out ]
  run "$cuda_run" --config run.yaml --set backend=cuda --plan
  [ "$status" -eq 0 ]
  [[ "$output" == "device memory per rank: "*" bytes ("*" MiB) for none, 1 x 1 ranks, seq 64" ]]
  # The attention backward's scratch follows the environment's choice, found without a device: at
  # head size 64 the fused backward adds its fp32 dQ sums, B x NH x T x hs floats (4 x 2 x 64 x
  # 64), and its semaphores (one 256-byte block); a bad choice is refused.
  hs64=(--set backend=cuda --set model.dim=128 --set model.heads=2 --set model.mlp=512 --plan)
  run "$cuda_run" --config run.yaml "${hs64[@]}"
  plain=$(echo "$output" | awk '{print $5}')
  run env LSST_ATTN_BWD=fused "$cuda_run" --config run.yaml "${hs64[@]}"
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | awk '{print $5}')" -eq $((plain + 4 * 2 * 64 * 64 * 4 + 256)) ]
  # The fixed-point backward: 64-bit sums, the ticket block, each row's exponent and mark (2 x 2 KiB),
  # the heads' Kmax and Vmax (4 x 2 x 2 floats).
  run env LSST_ATTN_BWD=fixed "$cuda_run" --config run.yaml "${hs64[@]}"
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | awk '{print $5}')" -eq $((plain + 4 * 2 * 64 * 64 * 8 + 256 + 2 * 2048 + 64)) ]
  # The kernel switches are checked with the config, without a device, before --plan or a run.
  run env LSST_ATTN_BWD=sometimes "$cuda_run" --config run.yaml --set backend=cuda --plan
  [ "$status" -eq 2 ]
  [ "$output" = "lsst-run: error: LSST_ATTN_BWD=sometimes: expected split, fused, atomic or fixed" ]
  run env LSST_LN=maybe "$cuda_run" --config run.yaml --set backend=cuda
  [ "$status" -eq 2 ]
  [ "$output" = "lsst-run: error: LSST_LN=maybe: expected fused or split" ]
  [ ! -e out ]
  run env LSST_RESIDUAL=kernels "$cuda_run" --config run.yaml --set backend=cuda --plan
  [ "$status" -eq 2 ]
  [ "$output" = "lsst-run: error: LSST_RESIDUAL=kernels: expected epilogue or kernel" ]
  # Q and [K|V] apart (LSST_QKV=split; by default one tensor with one rank of the sequence): the
  # same bytes, laid out otherwise (the tensors' sizes here are multiples of the 256-byte carve).
  run env LSST_QKV=split "$cuda_run" --config run.yaml "${hs64[@]}"
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | awk '{print $5}')" -eq "$plain" ]
  run env LSST_QKV=one "$cuda_run" --config run.yaml "${hs64[@]}"
  [ "$status" -eq 2 ]
  [ "$output" = "lsst-run: error: LSST_QKV=one: expected fused or split" ]
  run env LSST_ATTN_VARIANTS=64=1/999 "$cuda_run" --config run.yaml --set backend=cuda --plan
  [ "$status" -eq 2 ]
  [[ "$output" == "lsst-run: error: LSST_ATTN_VARIANTS=64=1/999: head size 64 has "*" backward variants" ]]
  # The paper's config as its workflows run it on GPUs (backend: cuda is its default).
  for scheme in lss megatron-sp; do
    run "$cuda_run" --config "$REPO/workflows/configs/paper.yaml" --plan --set parallel.scheme=$scheme \
        --set parallel.sequence=4 --set data.seq_len=16384
    [ "$status" -eq 0 ]
    [[ "$output" == "device memory per rank: "*" for $scheme, 4 x 1 ranks, seq 16384" ]]
    mpi_bytes=$(echo "$output" | awk '{print $5}')
    # comm: nccl carves the same device memory as comm: mpi (the blocks are placed on the device
    # either way; NCCL's own buffers are not lsst's and are reported at start-up).
    run "$cuda_run" --config "$REPO/workflows/configs/paper.yaml" --plan --set parallel.scheme=$scheme \
        --set parallel.sequence=4 --set data.seq_len=16384 --set comm=nccl
    [ "$status" -eq 0 ]
    [ "$(echo "$output" | awk '{print $5}')" -eq "$mpi_bytes" ]
  done
}
