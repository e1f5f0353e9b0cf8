#!/usr/bin/env bats
# Distributed lsst-run: invalid layouts fail on every rank with ONE message from
# rank 0 and never hang; a dying rank brings the job down; checkpoints move
# between grids and schemes.
load ../lib

setup_file() { export DATA=$(prep_data); }
setup() { cd "$BATS_TEST_TMPDIR"; write_config run.yaml "$DATA" out; }

# layout_error NRANKS EXPECTED-TEXT --set ...: fails, one error line, nothing allocated
layout_error() {
  local n=$1 want=$2; shift 2
  run mpirun_n "$n" "$BIN/lsst-run" --config run.yaml "$@"
  echo "$output"
  [ "$status" -ne 0 ]
  [ "$status" -ne 124 ]           # failed, and not by the timeout
  [ "$(grep -c 'lsst-run: error' <<<"$output")" -eq 1 ]  # rank 0 speaks once
  [[ "$output" == *"$want"* ]]
  [ ! -e out ]
}

@test "layout: seq_len not divisible by parallel.sequence" {
  layout_error 2 "seq_len" --set parallel.scheme=lss --set parallel.sequence=2 --set data.seq_len=65
}

@test "layout: world size differs from sequence x data" {
  layout_error 3 "3 ranks" --set parallel.scheme=lss --set parallel.sequence=2 --set parallel.data=1
}

@test "layout: batch not divisible by parallel.data" {
  layout_error 2 "batch" --set parallel.scheme=lss --set parallel.data=2 --set data.batch=3
}

@test "layout: megatron-sp refuses heads not divisible by sequence, naming the heads" {
  layout_error 3 "heads" --set parallel.scheme=megatron-sp --set parallel.sequence=3 --set data.seq_len=96
}

@test "layout: lss runs at sequence degree above the head count, where megatron-sp cannot" {
  run mpirun_n 4 "$BIN/lsst-run" --config run.yaml --set model.heads=2 --set parallel.scheme=lss \
      --set parallel.sequence=4 --set train.steps=2 --set output.dir=lss
  [ "$status" -eq 0 ]
  [ -f lss/checkpoints/step-000002.h5 ]
  layout_error 4 "heads" --set model.heads=2 --set parallel.scheme=megatron-sp --set parallel.sequence=4
}

@test "layout: a rank killed mid-run brings the job down promptly; the last checkpoint resumes" {
  mpirun_n 2 "$BIN/lsst-run" --config run.yaml --set parallel.scheme=lss --set parallel.sequence=2 \
      --set train.steps=100000 --set train.ckpt_every=2 >log 2>&1 &
  job=$!
  for i in $(seq 1 200); do [ -e out/checkpoints/step-000004.h5 ] && break; sleep 0.1; done
  [ -e out/checkpoints/step-000004.h5 ]
  victim=$(pgrep -f "lsst-run --config run.yaml" -n)
  kill -KILL "$victim"
  t0=$SECONDS; rc=0; wait $job || rc=$?
  echo "mpirun exit $rc after $((SECONDS - t0)) s"
  [ "$rc" -ne 0 ]
  [ "$rc" -ne 124 ]
  [ $((SECONDS - t0)) -le 20 ]
  last=$(ls out/checkpoints | tail -1)
  run mpirun_n 2 "$BIN/lsst-run" --config run.yaml --set parallel.scheme=lss --set parallel.sequence=2 \
      --set train.steps=$(( 10#${last:5:6} + 2 )) --resume latest
  [ "$status" -eq 0 ]
  [[ "$output" == *"resumed from out/checkpoints/$last"* ]]
}

@test "layout: a shard damaged on disk: the one rank that reads it ends the job with one error naming the file, promptly" {
  # 64Ki-token shards; with seed 7, rank 1 of 2 (data-parallel) reads shard 20 for its batch of
  # step 21 only. Before: that rank returned alone and its peer waited in a collective forever.
  "$BIN/lsst-prep" --quiet --shard-size 64Ki "$ENWIK8_4M" d
  damage_chunk d/train-00020.h5
  t0=$SECONDS
  run mpirun_n 2 "$BIN/lsst-run" --config run.yaml --set data.dir=d --set parallel.data=2 \
      --set train.steps=40 --set train.ckpt_every=5
  echo "$output"
  [ "$status" -ne 0 ]
  [ "$status" -ne 124 ]
  [ $((SECONDS - t0)) -le 30 ]
  [ "$(grep -c 'lsst-run: error' <<<"$output")" -eq 1 ]
  [[ "$output" == *"lsst-run: error: rank 1: d/train-00020.h5: cannot read tokens"* ]]
  # The read for step 21 first fails during step 20 (read ahead): step 20 still ends and saves.
  [ -f out/checkpoints/step-000020.h5 ]
  [ ! -e out/checkpoints/step-000025.h5 ]
}

@test "layout: a checkpoint written by one grid resumes on other grids and schemes with the same losses" {
  "$BIN/lsst-run" --config run.yaml --set train.steps=8 --set output.dir=ref >/dev/null
  # Same schedule (8 steps), checkpoint at step 4 on a 2x1 LSS grid.
  mpirun_n 2 "$BIN/lsst-run" --config run.yaml --set train.steps=8 --set train.ckpt_every=4 \
      --set parallel.scheme=lss --set parallel.sequence=2 --set output.dir=a >/dev/null
  for grid in "megatron-sp 2 2" "lss 4 1" "none 1 1"; do
    set -- $grid
    rm -rf b && mkdir -p b/checkpoints && cp a/checkpoints/step-000004.h5 b/checkpoints/
    run mpirun_n $(( $2 * $3 )) "$BIN/lsst-run" --config run.yaml --set train.steps=8 --set parallel.scheme=$1 \
        --set parallel.sequence=$2 --set parallel.data=$3 --set output.dir=b --resume latest
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    "$PY" - ref b <<'PY'
import h5py, sys, numpy as np
r = h5py.File(sys.argv[1] + "/metrics/rank-00000.h5", "r")["steps"][()]
b = h5py.File(sys.argv[2] + "/metrics/rank-00000.h5", "r")["steps"][()]
assert list(b["step"]) == [5, 6, 7, 8], list(b["step"])
rel = np.abs(b["loss"] - r["loss"][4:]) / r["loss"][4:]
print("resumed losses, max rel diff to the single-rank run: %.2e" % rel.max())
assert rel.max() < 1e-5, rel
PY
  done
}

@test "layout: --plan predicts, without allocating, the mem_peak every rank measures" {
  for scheme in lss megatron-sp; do
    plan=$("$BIN/lsst-run" --config run.yaml --plan --set parallel.scheme=$scheme --set parallel.sequence=2 \
           --set parallel.data=2 | awk '{print $4}')
    run mpirun_n 4 "$BIN/lsst-run" --config run.yaml --set parallel.scheme=$scheme --set parallel.sequence=2 \
        --set parallel.data=2 --set train.steps=2 --set output.dir=$scheme
    [ "$status" -eq 0 ]
    for r in 0 1 2 3; do
      [ "$(h5 $scheme/metrics/rank-0000$r.h5 "int(f['steps']['mem_peak'].max())")" = "$plan" ]
    done
  done
}

@test "layout: parallel.kv regather is for lss only, and lowers the memory per rank lss needs" {
  run "$BIN/lsst-run" --config run.yaml --plan --set parallel.scheme=megatron-sp --set parallel.sequence=2 \
      --set parallel.kv=regather
  [ "$status" -eq 2 ]
  [[ "$output" == *"parallel.kv: regather re-gathers the [K|V] of scheme lss only, but scheme is megatron-sp"* ]]
  keep=$("$BIN/lsst-run" --config run.yaml --plan --set parallel.scheme=lss --set parallel.sequence=2 | awk '{print $4}')
  regather=$("$BIN/lsst-run" --config run.yaml --plan --set parallel.scheme=lss --set parallel.sequence=2 \
             --set parallel.kv=regather | awk '{print $4}')
  # 2 layers, batch 4, seq 64, dim 32: one layer's [K|V] of the whole sequence less
  [ $(( keep - regather )) -eq $(( 4 * 64 * 2 * 32 * 4 )) ]
}
