#!/usr/bin/env bats
# The invariant of context parallelism: every grid gives the single-rank result.
# For each layout, a short run's loss and gradient norm at every step, and all
# parameters and AdamW moments after the run, equal the single-rank run of the
# same config within float32 rounding (tests/mpi/compare.py states the tolerance:
# 1e-5 relative for the loss; 1e-4 for the gradient norm and, relative to each
# tensor's largest element, for the tensors after 4 AdamW steps).
load ../lib

setup_file() {
  export DATA=$(prep_data)
  cd "$BATS_FILE_TMPDIR"
  write_config run.yaml "$DATA" ref
  # seq 96 divides into 1..4 segments and 2N zigzag chunks; 4 heads split over 2 and 4 ranks.
  export SETS="--set data.seq_len=96 --set data.batch=4 --set train.steps=4 --set train.ckpt_every=0"
  "$BIN/lsst-run" --config run.yaml $SETS >ref.log 2>&1
}

grid() { # grid SCHEME SEQ DATA BALANCE
  local out=$BATS_FILE_TMPDIR/$1-$2x$3-$4-${KV:-keep} n=$(( $2 * $3 ))
  cd "$BATS_FILE_TMPDIR"
  run mpirun_n "$n" "$BIN/lsst-run" --config run.yaml $SETS --set parallel.scheme=$1 \
      --set parallel.sequence=$2 --set parallel.data=$3 --set parallel.balance=$4 --set parallel.kv=${KV:-keep} \
      --set output.dir=$out
  [ "$status" -eq 0 ] || { echo "$output"; return 1; }
  # The final checkpoint compared every tensor's copies over the ranks: all the same.
  [[ "$output" != *"is not the same on every rank"* ]] || { echo "$output"; return 1; }
  run "$PY" "$REPO/tests/mpi/compare.py" "$BATS_FILE_TMPDIR/ref" "$out"
  echo "$1 $2x$3 $4 kv ${KV:-keep}: $output" >&3
  [ "$status" -eq 0 ]
}

@test "lss 2x1 equals one rank" { grid lss 2 1 none; }
@test "lss 3x1 equals one rank" { grid lss 3 1 none; }
@test "lss 4x1 equals one rank" { grid lss 4 1 none; }
@test "lss 2x2 equals one rank" { grid lss 2 2 none; }
@test "lss 1x2 (data parallel only) equals one rank" { grid lss 1 2 none; }
@test "lss zigzag 2x1 equals one rank" { grid lss 2 1 zigzag; }
@test "lss zigzag 4x1 equals one rank" { grid lss 4 1 zigzag; }
@test "lss zigzag 2x2 equals one rank" { grid lss 2 2 zigzag; }
@test "megatron-sp 2x1 equals one rank" { grid megatron-sp 2 1 none; }
@test "megatron-sp 4x1 equals one rank" { grid megatron-sp 4 1 none; }
@test "megatron-sp 2x2 equals one rank" { grid megatron-sp 2 2 none; }
@test "lss kv regather 2x1 equals one rank" { KV=regather grid lss 2 1 none; }
@test "lss kv regather zigzag 4x1 equals one rank" { KV=regather grid lss 4 1 zigzag; }
@test "lss kv regather 2x2 equals one rank" { KV=regather grid lss 2 2 none; }
