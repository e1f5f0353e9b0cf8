#!/usr/bin/env bats
# runtime/comm under mpirun: grid mapping, collective values, byte counters,
# iallgather, flag agreement on 2x1, 1x2, 2x2, 3x1 grids (sequence x data); and the
# failure paths: a world that does not fill the grid, a rank exiting mid-run, a failed
# MPI call, a misuse -- each brings the whole job down quickly, never hangs.
# The program is built by make: ${BUILD:-build}/mpi/test_comm (tests/mpi/test_comm.c).

setup_file() {
  ROOT=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
  export TEST_COMM=$ROOT/${BUILD:-build}/mpi/test_comm
  # Open MPI as root in containers; no CMA single-copy (needs ptrace rights).
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  export OMPI_MCA_btl_vader_single_copy_mechanism=none
}

# mpi NP ARGS...: run test_comm on NP ranks (more ranks than cores is fine), 30 s at most.
mpi() {
  local np=$1; shift
  [ -x "$TEST_COMM" ] || { echo "missing $TEST_COMM: build it with make (rule for \$(BUILD)/mpi/%)"; return 1; }
  local t0=$SECONDS
  run timeout 30 mpirun --oversubscribe --bind-to none -np "$np" "$TEST_COMM" "$@"
  elapsed=$((SECONDS - t0))
  echo "$output"
  echo "# exit status $status after ${elapsed}s"
}

# The TAP of test_comm passed entirely: a plan, as many ok lines, no not ok.
all_passed() {
  [ "$status" -eq 0 ] || return 1
  local plan
  plan=$(grep -E '^1\.\.[0-9]+$' <<<"$output" | tail -n 1 | cut -d. -f3)
  [ -n "$plan" ] && [ "$plan" -gt 40 ] || return 1
  [ "$(grep -cE '^ok [0-9]+' <<<"$output")" -eq "$plan" ] && ! grep -qE '^not ok' <<<"$output"
}

@test "comm: 2x1 grid (sequence 2, data 1)" {
  mpi 2 2 1
  all_passed
}

@test "comm: 1x2 grid (sequence 1, data 2)" {
  mpi 2 1 2
  all_passed
}

@test "comm: 2x2 grid" {
  mpi 4 2 2
  all_passed
}

@test "comm: 3x1 grid" {
  mpi 3 3 1
  all_passed
}

@test "comm: one rank (1x1) needs no peer" {
  mpi 1 1 1
  all_passed
}

@test "comm: 3 ranks for a 2x2 grid fail on every rank with one message from rank 0" {
  mpi 3 2 2
  [ "$status" -eq 2 ]
  [ "$elapsed" -lt 10 ]
  [ "$(grep -c 'test_comm: error:' <<<"$output")" -eq 1 ]
  grep -q '^test_comm: error: 3 ranks do not fill the grid sequence 2 x data 2 (4 ranks needed)$' <<<"$output"
}

@test "comm: an invalid grid size is refused alike on every rank" {
  mpi 2 0 2
  [ "$status" -eq 2 ]
  [ "$(grep -c 'test_comm: error:' <<<"$output")" -eq 1 ]
  grep -q 'invalid grid: sequence 0 x data 2' <<<"$output"
}

@test "comm: a rank exiting before a collective brings the job down" {
  mpi 3 3 1 exit-rank1
  [ "$status" -ne 0 ]
  [ "$status" -ne 124 ]
  [ "$elapsed" -lt 10 ]
}

@test "comm: a failed MPI call prints file:line and the MPI error, then aborts every rank" {
  mpi 2 2 1 mpi-error
  [ "$status" -ne 0 ]
  [ "$status" -ne 124 ]
  [ "$elapsed" -lt 10 ]
  grep -qE '^test_comm: error: rank 1: tests/mpi/test_comm.c:[0-9]+: MPI_Bcast\(buf, -1, .*\) failed: MPI_ERR_COUNT' <<<"$output"
}

@test "comm: a misuse (broadcast root outside the group) aborts the job with the reason" {
  mpi 4 2 2 bad-root
  [ "$status" -ne 0 ]
  [ "$status" -ne 124 ]
  [ "$elapsed" -lt 10 ]
  grep -q 'comm_broadcast: root 99 outside a group of 4 ranks' <<<"$output"
}
