#!/usr/bin/env bats
# lsst-status without a cluster: every Slurm state from one batched sacct call (a shim that
# logs its calls prints canned accounting lines), the fallback without accounting (scontrol,
# then sacct -c), usage errors, exit codes.
load ../lib

setup() {
  cd "$BATS_TEST_TMPDIR"
  mkdir -p shim run
  export SHIM_LOG=$PWD/calls
  # A run of 11 jobs submitted to Slurm (ids 201..211, 205 an array task).
  {
    printf 'lsst-journal 1\nworkflow w\nsite slurm\nscheduler slurm\nattempt 1\nworkflow_dir /w\n'
    for i in 0 1 2 3 4 5 6 7 8 9 10; do echo "job s $i"; done
    for i in 0 1 2 3 5 6 7 8 9 10; do echo "submit s $i $((201 + i))"; done
    echo "submit s 4 300_4"
    echo released
  } > run/journal
}

sacct_shim() { # the lines sacct prints
  cat > shim/sacct <<SH
#!/bin/bash
echo "sacct \$*" >> "\$SHIM_LOG"
cat <<'OUT'
$1
OUT
SH
  chmod +x shim/sacct
}

@test "status: --help, --version, usage errors exit 2" {
  run "$BIN/lsst-status" --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"example:"* ]]
  [[ "$output" == *"--watch"* ]]
  run "$BIN/lsst-status" --version
  [ "$status" -eq 0 ]
  [[ "$output" == "lsst-status "*"(git "* ]]
  run "$BIN/lsst-status"
  [ "$status" -eq 2 ]
  run "$BIN/lsst-status" --interval 1 --watch run
  [ "$status" -eq 2 ]
  [[ "$output" == *"--interval 1: expected whole seconds, 2 to 86400"* ]]
  run "$BIN/lsst-status" nowhere
  [ "$status" -eq 2 ]
  [[ "$output" == "lsst-status: error: nowhere: no such run directory" ]]
  mkdir empty
  run "$BIN/lsst-status" empty
  [ "$status" -eq 2 ]
  [[ "$output" == *"not a run directory"* ]]
}

@test "status: every Slurm state from ONE batched sacct call; exit 1 unless all completed" {
  sacct_shim "201|COMPLETED|00:00:05|0:0|None
202|RUNNING|00:01:00|0:0|None
203|PENDING|00:00:00|0:0|Dependency
204|FAILED|00:00:09|3:0|NonZeroExitCode
300_4|CANCELLED by 0|00:00:00|0:0|DependencyNeverSatisfied
206|TIMEOUT|00:10:00|0:15|TimeLimit
207|PREEMPTED|00:02:00|0:15|None
208|NODE_FAIL|00:03:00|0:9|None
209|REQUEUED|00:00:30|0:0|None
210|OUT_OF_MEMORY|00:00:07|0:125|None
211|COMPLETED|00:00:01|0:0|None
211.batch|COMPLETED|00:00:01|0:0|"
  PATH=$PWD/shim:$PATH run "$BIN/lsst-status" run
  echo "$output"
  [ "$status" -eq 1 ]
  [ "$(wc -l < calls)" -eq 1 ]
  grep -q -- "-j 201,202,203,204,300,206,207,208,209,210,211" calls
  for st in COMPLETED RUNNING PENDING FAILED CANCELLED TIMEOUT PREEMPTED NODE_FAIL REQUEUED OUT_OF_MEMORY; do
    [[ "$output" == *" $st "* ]]
  done
  [[ "$output" == *"s      4      300_4   CANCELLED"*"dependency failed (DependencyNeverSatisfied): never ran"* ]]
  [[ "$output" == *"s      3      204     FAILED         00:00:09    3 "* ]]
  [[ "$output" == *"s      5      206     TIMEOUT        00:10:00    sig 15"* ]]
  [[ "$output" == *"summary: 11 jobs: 2 COMPLETED, 1 RUNNING, 1 PENDING, 1 FAILED, 1 CANCELLED, 1 TIMEOUT, 1 PREEMPTED, 1 NODE_FAIL, 1 REQUEUED, 1 OUT_OF_MEMORY (1 scheduler query)"* ]]
}

@test "status: all completed exits 0" {
  lines_=""
  for i in 201 202 203 204 206 207 208 209 210 211; do lines_+="$i|COMPLETED|00:00:01|0:0|None"$'\n'; done
  sacct_shim "${lines_}300_4|COMPLETED|00:00:01|0:0|None"
  PATH=$PWD/shim:$PATH run "$BIN/lsst-status" run
  [ "$status" -eq 0 ]
  [[ "$output" == *"summary: 11 jobs: 11 COMPLETED (1 scheduler query)"* ]]
}

@test "status: without accounting, scontrol then sacct -c; a job nobody knows is UNKNOWN" {
  cat > shim/sacct <<'SH'
#!/bin/bash
echo "sacct $*" >> "$SHIM_LOG"
if [ "$1" = -c ]; then echo "204|FAILED|00:00:02|1:0"; exit 0; fi
echo "Slurm accounting storage is disabled" >&2; exit 1
SH
  cat > shim/scontrol <<'SH'
#!/bin/bash
echo "scontrol $*" >> "$SHIM_LOG"
echo "JobId=201 JobName=a JobState=COMPLETED Reason=None RunTime=00:00:03 ExitCode=0:0"
echo "JobId=299 ArrayJobId=300 ArrayTaskId=4 JobState=CANCELLED Reason=DependencyNeverSatisfied RunTime=00:00:00 ExitCode=0:0"
SH
  chmod +x shim/*
  PATH=$PWD/shim:$PATH run "$BIN/lsst-status" run
  echo "$output"
  [ "$status" -eq 1 ]
  [ "$(wc -l < calls)" -eq 3 ]
  grep -qx "scontrol -o show job" calls
  grep -q -- "sacct -c -n -P -j 202,203,204,206,207,208,209,210,211 " calls
  [[ "$output" == *"s      0      201     COMPLETED"* ]]
  [[ "$output" == *"s      3      204     FAILED         00:00:02    1 "* ]]
  [[ "$output" == *"s      4      300_4   CANCELLED"* ]]
  [[ "$output" == *"s      1      202     UNKNOWN"*"the scheduler no longer knows this job"* ]]
}

@test "status: --watch refreshes until nothing is pending or running" {
  cat > shim/sacct <<'SH'
#!/bin/bash
n=$(wc -l < "$SHIM_LOG" 2>/dev/null || echo 0); echo "sacct" >> "$SHIM_LOG"
state=RUNNING; [ "$n" -ge 1 ] && state=COMPLETED
for i in 201 202 203 204 206 207 208 209 210 211; do echo "$i|$state|00:00:01|0:0|None"; done
echo "300_4|COMPLETED|00:00:01|0:0|None"
SH
  chmod +x shim/sacct
  PATH=$PWD/shim:$PATH run timeout 20 "$BIN/lsst-status" --watch --interval 2 run
  [ "$status" -eq 0 ]
  [ "$(wc -l < calls)" -eq 2 ]
  [[ "$output" == *"10 RUNNING"* ]]
  [[ "$output" == *"11 COMPLETED"* ]]
}

@test "status: an array's tasks are asked for once, as the array (40k tasks fit on one sacct command line)" {
  mkdir big
  {
    printf 'lsst-journal 1\nworkflow w\nsite slurm\nscheduler slurm\nattempt 1\nworkflow_dir /w\n'
    echo "job prep 0"
    seq 0 39999 | sed 's/^/job train /'
    echo "job report 0"
    echo "submit prep 0 399"
    seq 0 39999 | sed 's/.*/submit train & 400_&/'
    echo "submit report 0 401"
    echo released
  } > big/journal
  sacct_shim "399|COMPLETED|00:00:05|0:0|None
400_0|COMPLETED|00:00:05|0:0|None
400_[1-39999%50]|PENDING|00:00:00|0:0|JobArrayTaskLimit
401|PENDING|00:00:00|0:0|Dependency"
  PATH=$PWD/shim:$PATH run timeout 60 "$BIN/lsst-status" big
  [ "$status" -eq 1 ]
  [ "$(wc -l < calls)" -eq 1 ]
  grep -qx -- "sacct -X -n -P -j 399,400,401 -o JobID,State,Elapsed,ExitCode,Reason" calls
  [[ "$output" == *"summary: 40002 jobs: 2 COMPLETED, 40000 PENDING (1 scheduler query)"* ]]
}
