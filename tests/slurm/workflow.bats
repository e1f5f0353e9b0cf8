#!/usr/bin/env bats
# lsst-submit / lsst-status on a REAL Slurm cluster (tests/slurm/cluster.sh up): a sweep whose
# training points run 2 MPI ranks under srun --mpi=pmix, a failing stage whose dependents are
# cancelled and never run, --resubmit, a time limit (TIMEOUT), a requeue on exit 75, a rank
# killed mid-run ending its job, and the same workflow on --site local giving the same outputs.
load helpers

setup_file() {
  cluster_up || return 0   # every test then skips, saying why
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  cd "$BATS_FILE_TMPDIR"
  # The time-limit job takes a minute or more (Slurm limits are whole minutes): start it first,
  # so it runs while the other tests do; the last test checks it.
  "$BIN/lsst-submit" -q --site slurm --out runs "$FIX/timeout.yaml" | tail -n 1 > timeout.dir
  "$BIN/lsst-submit" -q --site slurm --out runs "$FIX/requeue.yaml" | tail -n 1 > requeue.dir
}

setup() { need_cluster; cd "$BATS_FILE_TMPDIR"; }

@test "slurm: a sweep (2 points x 2 MPI ranks under srun --mpi=pmix) runs through prep -> train -> summary" {
  run "$BIN/lsst-submit" --site slurm --out runs --set source="$ENWIK8_1M" "$FIX/sweep.yaml"
  [ "$status" -eq 0 ]
  dir=${lines[${#lines[@]}-1]}
  [[ "$dir" == "$BATS_FILE_TMPDIR/runs/sweep/"* ]]
  [ -d "$dir" ]
  [[ "$output" == *"submitted 4 jobs to slurm"* ]]
  # every job id is in the journal, and the jobs were released together
  [ "$(grep -c '^submit ' "$dir/journal")" -eq 4 ]
  grep -qx released "$dir/journal"
  echo "$dir" > sweep.dir
  run wait_run "$dir" 240
  echo "$output"
  [ "$status" -eq 0 ]
  [[ "$output" == *"summary: 4 jobs: 4 COMPLETED"* ]]
  # both points trained on 2 ranks: one metrics file per rank, launched by srun with PMIx
  for p in 0 1; do
    [ -f "$dir/train/$p/metrics/rank-00000.h5" ]
    [ -f "$dir/train/$p/metrics/rank-00001.h5" ]
    [ "$(h5 "$dir/train/$p/metrics/rank-00001.h5" "int(f.attrs['world'])")" = 2 ]
    grep -q "srun --mpi=pmix -n '2' lsst-run" "$dir/train/$p/job.sh"
    ls "$dir"/train/$p/slurm-*.out
  done
  [ "$(h5 "$dir/train/0/metrics/rank-00000.h5" "f.attrs['scheme']")" = lss ]
  [ "$(h5 "$dir/train/1/metrics/rank-00000.h5" "f.attrs['scheme']")" = megatron-sp ]
  [ "$(cat "$dir/summary/0/metrics-files")" = 4 ]
  # the summary ran as the Slurm job the journal names
  grep -q "^submit summary 0 $(cat "$dir/summary/0/ran")\$" "$dir/journal"
  # the run directory contract
  for f in workflow.yaml site.yaml provenance.yaml journal; do [ -s "$dir/$f" ]; done
}

@test "slurm: the same workflow on --site local gives the same outputs" {
  [ -s sweep.dir ] || skip "needs the sweep of the previous test"
  slurm_dir=$(cat sweep.dir)
  run "$BIN/lsst-submit" --site local --out local-runs --set source="$ENWIK8_1M" "$FIX/sweep.yaml"
  [ "$status" -eq 0 ]
  local_dir=${lines[${#lines[@]}-1]}
  run "$BIN/lsst-status" "$local_dir"
  [ "$status" -eq 0 ]
  [[ "$output" == *"4 COMPLETED"* ]]
  # the same files (less the scheduler's own output files) ...
  list() { (cd "$1" && find . -type f ! -name 'slurm-*.out' ! -name 'local.out' ! -name 'job.sh' ! -name journal \
             ! -name provenance.yaml ! -name site.yaml ! -name ran | sort); }
  diff <(list "$slurm_dir") <(list "$local_dir")
  # ... and the same training: identical losses per step on every rank
  for p in 0 1; do for r in 0 1; do
    a=$(h5 "$slurm_dir/train/$p/metrics/rank-0000$r.h5" "list(f['steps']['loss'])")
    b=$(h5 "$local_dir/train/$p/metrics/rank-0000$r.h5" "list(f['steps']['loss'])")
    [ "$a" = "$b" ]
  done; done
  [ "$(cat "$local_dir/summary/0/metrics-files")" = 4 ]
}

@test "slurm: a failing job's dependents end CANCELLED and never run; lsst-status reports both; exit 1" {
  run "$BIN/lsst-submit" -q --site slurm --out runs --set flag="$PWD/flag" --set counter="$PWD/counter" "$FIX/failing.yaml"
  [ "$status" -eq 0 ]
  dir=${lines[${#lines[@]}-1]}
  echo "$dir" > failing.dir
  run wait_run "$dir" 120
  echo "$output"
  [ "$status" -eq 1 ]
  [ "$(state_of "$dir" first 0)" = COMPLETED ]
  [ "$(state_of "$dir" work 0)" = COMPLETED ]
  [ "$(state_of "$dir" work 1)" = FAILED ]
  [ "$(state_of "$dir" after 0)" = CANCELLED ]
  [[ "$output" == *"work "*" 1 "*"FAILED"*" 3 "* ]]
  [[ "$output" == *"after"*"CANCELLED"*"dependency failed"* ]]
  [[ "$output" == *"summary: 4 jobs: 2 COMPLETED, 1 FAILED, 1 CANCELLED"* ]]
  # the dependent never ran
  [ ! -e "$dir/after/0/ran" ]
  ! grep -q after counter
  grep -q "point 1 fails" "$dir"/work/1/slurm-*.out
}

@test "slurm: --resubmit reruns only the failed job and its dependents, as attempt-2" {
  [ -s failing.dir ] || skip "needs the failing run of the previous test"
  dir=$(cat failing.dir)
  touch flag   # point 1 succeeds from now on
  run "$BIN/lsst-submit" --resubmit "$dir"
  echo "$output"
  [ "$status" -eq 0 ]
  [[ "$output" == *"resubmitting 2 of 4 jobs"* ]]
  [ "${lines[${#lines[@]}-1]}" = "$dir/attempt-2" ]
  run wait_run "$dir" 120
  echo "$output"
  [ "$status" -eq 0 ]
  [[ "$output" == *"attempt 2"* ]]
  [[ "$output" == *"summary: 4 jobs: 4 COMPLETED"* ]]
  [[ "$output" == *"kept from an earlier attempt"* ]]
  # only work/1 and after/0 ran again: `first` and work 0 ran once, work 1 twice
  [ "$(grep -c '^first$' counter)" = 1 ]
  [ "$(grep -c '^work 0$' counter)" = 1 ]
  [ "$(grep -c '^work 1$' counter)" = 2 ]
  [ "$(grep -c '^after$' counter)" = 1 ]
  # the earlier attempt is untouched; kept jobs are links to it
  [ -f "$dir/work/1/job.sh" ]
  [ ! -e "$dir/after/0/ran" ]
  [ -L "$dir/attempt-2/first/0" ]
  [ -f "$dir/attempt-2/work/0/done" ]
  [ -f "$dir/attempt-2/after/0/ran" ]
  [ "$(grep -c '^submit ' "$dir/attempt-2/journal")" = 2 ]
  # nothing left to do
  run "$BIN/lsst-submit" --resubmit "$dir"
  [ "$status" -eq 0 ]
  [[ "$output" == *"nothing to resubmit"* ]]
  [ ! -e "$dir/attempt-3" ]
}

@test "slurm: exit 75 (checkpointed on a signal) requeues the job, which then completes" {
  dir=$(cat requeue.dir)
  [ -d "$dir" ]
  run wait_run "$dir" 120
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$(cat "$dir/once/0/result")" = "second run" ]
  grep -q "requeueing job" "$dir"/once/0/slurm-*.out
  grep -q "(restart 1)" "$dir"/once/0/slurm-*.out
}

@test "slurm: a job killed by its time limit shows TIMEOUT" {
  dir=$(cat timeout.dir)
  [ -d "$dir" ]
  run wait_run "$dir" 200
  echo "$output"
  [ "$status" -eq 1 ]
  [ "$(state_of "$dir" sleepy 0)" = TIMEOUT ]
}

@test "slurm: a sweep larger than the site's max_queued runs as one throttled job array" {
  sed -e 's/^name: slurm/name: tiny-queue/' -e 's/max_queued: 1000 /max_queued: 2/' -e 's/array_throttle: 50 /array_throttle: 2/' \
    "$REPO/site/slurm.yaml" > tiny-queue.yaml
  cat > arr.yaml <<'YAML'
name: arr
stages:
  - name: t
    time: "00:02:00"
    matrix: {i: [a, b, c]}
    run: echo {{i}} > {{job_dir}}/value
  - name: after
    after: [t]
    time: "00:02:00"
    run: cat {{run_dir}}/t/*/value | tr -d '\n' > {{job_dir}}/all
YAML
  run "$BIN/lsst-submit" --site ./tiny-queue.yaml --out runs arr.yaml
  echo "$output"
  [ "$status" -eq 0 ]
  dir=${lines[${#lines[@]}-1]}
  grep -q -- "--array=0-2%2" "$dir/t/array.sh"
  run wait_run "$dir" 120
  echo "$output"
  [ "$status" -eq 0 ]
  [[ "$output" == *"summary: 4 jobs: 4 COMPLETED"* ]]
  [[ "$output" == *"t      2      "*"_2 "* ]]
  [ "$(cat "$dir/after/0/all")" = abc ]
  ls "$dir"/t/2/slurm-*_2.out
}

@test "slurm: SIGUSR1 (the time-limit warning) -> lsst-run checkpoints, exits 75 -> requeued -> resumes, completes" {
  run submit_train sig 3000 "--resume latest"
  [ "$status" -eq 0 ]
  dir=${lines[${#lines[@]}-1]}
  job=$(awk '$1 == "submit" { print $4 }' "$dir/journal")
  # Once it trains, send what Slurm sends 120 s before the limit: SIGUSR1 to the batch shell.
  wait_step "$dir" 200 || true
  scancel --signal=USR1 --batch "$job"
  run wait_run "$dir" 180
  echo "$output"
  [ "$status" -eq 0 ]
  out=$(cat "$dir"/train/0/slurm-*.out)
  [[ "$out" == *"SIGUSR1 received"* ]]
  [[ "$out" == *"exiting with 75"* ]]
  [[ "$out" == *"requeueing job $job"* ]]
  [[ "$out" == *"(restart 1)"* ]]
  [[ "$out" == *"resumed from"* ]]
  [[ "$out" == *"step 3000/3000"* ]]
  [ "$(ls "$dir/train/0/checkpoints" | wc -l)" -eq 2 ]
}

@test "slurm: a rank killed under srun (--mpi=pmix) ends the whole job promptly: FAILED, not a hang to the limit" {
  run submit_train kill 100000
  [ "$status" -eq 0 ]
  dir=${lines[${#lines[@]}-1]}
  wait_step "$dir" 100
  # One of the two ranks dies without a word (an OOM kill, a node's fault): its peer is left in a
  # collective. PMIx tells the step, and Slurm cancels it: no rank waits for the time limit.
  victim=$(pgrep -n -f "output.dir=$dir/train/0")
  kill -KILL "$victim"
  t0=$SECONDS
  run wait_run "$dir" 60
  echo "$output"
  [ $((SECONDS - t0)) -le 30 ]
  [ "$status" -eq 1 ]
  [ "$(state_of "$dir" train 0)" = FAILED ]
}
