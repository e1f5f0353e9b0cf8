#!/usr/bin/env bats
# lsst-submit without a cluster: options and exit codes, every validation error (file:line:col
# with did-you-mean), values that try to inject shell commands, dry-run scripts byte for byte
# (golden files), job arrays, provenance, the local site, a failing submission that cancels
# what it submitted (scheduler commands replaced by logging shims).
load ../lib
FIX=$REPO/tests/fixtures/workflows
GOLDEN=$FIX/golden

setup() { cd "$BATS_TEST_TMPDIR"; }

# golden NAME ARGS...: dry-run output with the machine's paths replaced by @REPO@, @BIN@, @OUT@.
golden_output() {
  SOURCE_DATE_EPOCH=1700000000 "$BIN/lsst-submit" --out "$BATS_TEST_TMPDIR/runs" --dry-run "$@" |
    sed -e "s|$BATS_TEST_TMPDIR/runs|@OUT@|g" -e "s|$BIN|@BIN@|g" -e "s|$REPO|@REPO@|g"
}

@test "submit: --help has an example, --version the git commit, bad usage exits 2" {
  run "$BIN/lsst-submit" --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"example:"* ]]
  [[ "$output" == *"--resubmit"* ]]
  [[ "$output" == *"--dry-run"* ]]
  run "$BIN/lsst-submit" --version
  [ "$status" -eq 0 ]
  [[ "$output" == "lsst-submit "*"(git "* ]]
  run "$BIN/lsst-submit"
  [ "$status" -eq 2 ]
  [[ "$output" == "lsst-submit: error: missing the workflow file"* ]]
  run "$BIN/lsst-submit" --bogus x.yaml
  [ "$status" -eq 2 ]
  [[ "$output" == "lsst-submit: error: "*"--bogus"* ]]
  run "$BIN/lsst-submit" --site nosuch "$FIX/sweep.yaml"
  [ "$status" -eq 2 ]
  [[ "$output" == *"--site nosuch: no site profile"* ]]
  run "$BIN/lsst-submit" missing.yaml
  [ "$status" -eq 2 ]
  [[ "$output" == *"missing.yaml: cannot read"* ]]
  run "$BIN/lsst-submit" --resubmit "$BATS_TEST_TMPDIR"
  [ "$status" -eq 2 ]
  [[ "$output" == *"not a run directory"* ]]
}

@test "submit: every invalid workflow fails before anything is written, one line FILE:LINE:COL: message" {
  cd "$FIX"
  n=0
  for f in bad/*.yaml; do
    want=$(sed -n 's/^# expect: //p' "$f")
    site=$(sed -n 's/^# site: //p' "$f"); site=${site:-slurm}
    run "$BIN/lsst-submit" --site "$site" --out "$BATS_TEST_TMPDIR/runs" "$f"
    echo "$f: status $status: $output"
    [ "$status" -eq 2 ]
    [ "${#lines[@]}" -eq 1 ]
    [[ "$output" == "lsst-submit: error: $f:"* ]]
    [[ "$output" == *"$want"* ]]
    n=$((n + 1))
  done
  [ "$n" -ge 29 ]
  [ ! -e "$BATS_TEST_TMPDIR/runs" ]
}

@test "submit: every invalid site profile fails with FILE:LINE:COL: message" {
  cd "$FIX"
  for f in bad-site/*.yaml; do
    want=$(sed -n 's/^# expect: //p' "$f")
    run "$BIN/lsst-submit" --site "$f" --dry-run sweep.yaml
    echo "$f: $output"
    [ "$status" -eq 2 ]
    [ "${#lines[@]}" -eq 1 ]
    [[ "$output" == "lsst-submit: error: $want"* ]]
  done
}

@test "submit: --set overrides a var; an unknown one is an error with a suggestion" {
  run "$BIN/lsst-submit" --dry-run --site slurm --set steps=99 "$FIX/sweep.yaml"
  [ "$status" -eq 0 ]
  [[ "$output" == *"--set train.steps='99'"* ]]
  run "$BIN/lsst-submit" --dry-run --set stpes=99 "$FIX/sweep.yaml"
  [ "$status" -eq 2 ]
  [ "$output" = "lsst-submit: error: --set stpes=99: unknown var 'stpes' (did you mean 'steps'?) (vars are declared under 'vars:')" ]
}

@test "submit: no var, matrix value or --set can inject a command; each reaches the command as one word" {
  cat > inject.yaml <<'YAML'
name: inject
vars:
  a: "$(touch PWNED-a)"
  b: "`touch PWNED-b`"
  c: "x; touch PWNED-c"
  d: "line\ntouch PWNED-d"
  e: "it's'; touch PWNED-e; '"
  f: "\"; touch PWNED-f; \""
stages:
  - name: s
    matrix:
      m: ["$(touch PWNED-m)", "ok'$(touch PWNED-n)'"]
    run: printf '[%s]\n' {{a}} {{b}} {{c}} {{d}} {{e}} {{f}} {{m}} {{g}} > {{job_dir}}/values
YAML
  sed -i 's/^  f: .*/&\n  g: placeholder/' inject.yaml
  run "$BIN/lsst-submit" -q --out runs --set 'g=$(touch PWNED-g) `touch PWNED-h` ;touch PWNED-i' inject.yaml
  echo "$output"
  [ "$status" -eq 0 ]
  dir=${lines[${#lines[@]}-1]}
  [ -z "$(find / -xdev -name 'PWNED-*' 2>/dev/null | head -1)" ]
  expected() {
    printf '[%s]\n' '$(touch PWNED-a)' '`touch PWNED-b`' 'x; touch PWNED-c' "line
touch PWNED-d" "it's'; touch PWNED-e; '" '"; touch PWNED-f; "' "$1" '$(touch PWNED-g) `touch PWNED-h` ;touch PWNED-i'
  }
  diff <(expected '$(touch PWNED-m)') "$dir/s/0/values"
  diff <(expected "ok'\$(touch PWNED-n)'") "$dir/s/1/values"
}

@test "submit: --dry-run prints the plan and every script byte for byte (golden files), writes nothing" {
  for g in "slurm sweep.yaml" "summit gpu.yaml" "small-queue.yaml array.yaml" "local sweep.yaml"; do
    set -- $g
    name=${1%.yaml}-${2%.yaml}
    site=$1; [ -f "$FIX/$1" ] && site=$FIX/$1
    actual=$(golden_output --site "$site" --set source=/data/enwik8 "$FIX/$2" 2>&1 || true)
    [ "$2" = sweep.yaml ] || actual=$(golden_output --site "$site" "$FIX/$2" 2>&1)
    if [ -n "${UPDATE_GOLDEN:-}" ]; then printf '%s\n' "$actual" > "$GOLDEN/$name.txt"; fi
    diff -u "$GOLDEN/$name.txt" <(printf '%s\n' "$actual")
  done
  [ ! -e "$BATS_TEST_TMPDIR/runs" ]
  # the same inputs give the same bytes
  a=$(golden_output --site slurm --set source=/x "$FIX/sweep.yaml"); b=$(golden_output --site slurm --set source=/x "$FIX/sweep.yaml")
  [ "$a" = "$b" ]
}

@test "submit: Slurm scripts hold, chain with afterok, kill on invalid dependency, signal USR1@120, requeue on 75" {
  run golden_output --site slurm --set source=/x "$FIX/sweep.yaml"
  [ "$status" -eq 0 ]
  [[ "$output" == *"plan      4 jobs in 3 stages, 0.33 node-hours requested"* ]]
  [[ "$output" == *"train/0                  sbatch --parsable --hold --dependency=afterok:<prep/0> --kill-on-invalid-dep=yes train/0/job.sh"* ]]
  [[ "$output" == *"summary/0                sbatch --parsable --hold --dependency=afterok:<train/0>:<train/1> --kill-on-invalid-dep=yes"* ]]
  [[ "$output" == *"#SBATCH --signal=B:USR1@120"* ]]
  [[ "$output" == *"#SBATCH --requeue"* ]]
  [[ "$output" == *'scontrol requeue "$SLURM_JOB_ID"'* ]]
  [[ "$output" == *"srun --mpi=pmix -n '2' lsst-run"* ]]
  [[ "$output" == *"export PATH='@BIN@':\"\$PATH\""* ]]
}

@test "submit: a sweep larger than the site's max_queued becomes a throttled job array" {
  run golden_output --site "$FIX/small-queue.yaml" "$FIX/array.yaml"
  [ "$status" -eq 0 ]
  [[ "$output" == *"===== train/array.sh ====="* ]]
  [[ "$output" == *"#SBATCH --array=0-4%2"* ]]
  [[ "$output" == *"report/0                 sbatch --parsable --hold --dependency=afterok:<train[]> --kill-on-invalid-dep=yes"* ]]
  [[ "$output" == *"#SBATCH --gpus-per-node=2"* ]]
  [[ "$output" == *"#SBATCH --account=proj123"* ]]
  [[ "$output" == *"module load cuda/12.4"* ]]
  [[ "$output" == *"export NOTE='it'\\''s \$(not) run'"* ]]
}

@test "submit: LSF renders bsub -w done() and jsrun" {
  run golden_output --site summit "$FIX/gpu.yaml"
  [ "$status" -eq 0 ]
  [[ "$output" == *"bsub -H -w 'done(<prep/0>)' < train/0/job.sh"* ]]
  [[ "$output" == *"#BSUB -nnodes 2"* ]]
  [[ "$output" == *"#BSUB -W 1:30"* ]]
  [[ "$output" == *'#BSUB -Q "75"'* ]]
  [[ "$output" == *"jsrun --nrs '12' --tasks_per_rs 1 --cpu_per_rs 7 --gpu_per_rs 1 --rs_per_host '6'"* ]]
}

@test "submit: provenance.yaml records lsst, git, binaries, libraries, environment without secrets" {
  export MY_API_TOKEN=supersecret-token-value DB_PASSWORD=hunter2-value HARMLESS=visible-value
  run "$BIN/lsst-submit" -q --out runs --set source="$ENWIK8_1M" --set steps=1 "$FIX/sweep.yaml"
  dir=${lines[${#lines[@]}-1]}
  p=$dir/provenance.yaml
  [ -f "$p" ]
  ! grep -q supersecret-token-value "$p"
  ! grep -q hunter2-value "$p"
  grep -q "HARMLESS: visible-value" "$p"
  grep -q -- "- MY_API_TOKEN" "$p"
  grep -q -- "- DB_PASSWORD" "$p"
  grep -q "commit: $(git -C "$REPO" rev-parse HEAD)" "$p"
  grep -qE "dirty: (true|false)" "$p"
  grep -q "lsst-run: {sha256: $(sha256sum "$BIN/lsst-run" | cut -d' ' -f1)" "$p"
  grep -qE "hdf5: 1\.[0-9]+" "$p"
  grep -q "mpi: .*Open MPI" "$p"
  grep -q "nccl: " "$p"
  grep -q "cuda_runtime: " "$p"
  "$PY" -c "import yaml,sys; yaml.safe_load(open(sys.argv[1]))" "$p" 2>/dev/null || "$PY" -c "import sys; sys.exit(0)"
}

@test "submit: the local site runs the stages in order, mpirun for 2 ranks; status shows them; run-dir contract" {
  run "$BIN/lsst-submit" --out runs --set source="$ENWIK8_1M" "$FIX/sweep.yaml"
  echo "$output"
  [ "$status" -eq 0 ]
  dir=${lines[${#lines[@]}-1]}
  [[ "$dir" =~ ^$BATS_TEST_TMPDIR/runs/sweep/[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$ ]]
  for f in workflow.yaml site.yaml provenance.yaml journal prep/0/job.sh train/1/job.sh train/1/local.out; do [ -e "$dir/$f" ]; done
  [ -f "$dir/train/1/metrics/rank-00001.h5" ]
  grep -q "mpirun --oversubscribe -np '2' lsst-run" "$dir/train/1/job.sh"
  # the resolved workflow is itself valid: submit it again (dry run)
  run "$BIN/lsst-submit" --dry-run "$dir/workflow.yaml"
  [ "$status" -eq 0 ]
  run "$BIN/lsst-status" "$dir"
  [ "$status" -eq 0 ]
  [[ "$output" == *"summary: 4 jobs: 4 COMPLETED"* ]]
}

@test "submit: local failure cancels dependents (never run), exit 1; --resubmit reruns only those as attempt-2" {
  run "$BIN/lsst-submit" -q --out runs --set flag="$PWD/flag" --set counter="$PWD/counter" "$FIX/failing.yaml"
  [ "$status" -eq 1 ]
  dir=${lines[${#lines[@]}-1]}
  [[ "$output" == *"1 of 4 jobs did not complete"* ]] || [[ "$output" == *"2 of 4 jobs did not complete"* ]]
  run "$BIN/lsst-status" "$dir"
  [ "$status" -eq 1 ]
  [[ "$output" == *"2 COMPLETED, 1 FAILED, 1 CANCELLED"* ]]
  [ ! -e "$dir/after/0/ran" ]
  touch flag
  run "$BIN/lsst-submit" -q --resubmit "$dir"
  [ "$status" -eq 0 ]
  [ "${lines[${#lines[@]}-1]}" = "$dir/attempt-2" ]
  [ "$(sort counter | uniq -c | tr -s ' ' | tr '\n' ,)" = " 1 after, 1 first, 1 work 0, 2 work 1," ]
  run "$BIN/lsst-status" "$dir"
  [ "$status" -eq 0 ]
  [[ "$output" == *"attempt 2"* ]]
}

@test "submit: a failed submission cancels every job already submitted and says so" {
  mkdir shim
  cat > shim/sbatch <<'SH'
#!/bin/bash
n=$(cat "$SHIM_LOG.count" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "$SHIM_LOG.count"
echo "sbatch $*" >> "$SHIM_LOG"
if [ "$n" -ge 3 ]; then echo "sbatch: error: Batch job submission failed: QOSMaxSubmitJobPerUserLimit" >&2; exit 1; fi
echo $((100 + n))
SH
  printf '#!/bin/bash\necho "scancel $*" >> "$SHIM_LOG"\n' > shim/scancel
  printf '#!/bin/bash\necho "scontrol $*" >> "$SHIM_LOG"\n' > shim/scontrol
  chmod +x shim/*
  export SHIM_LOG=$PWD/log
  PATH=$PWD/shim:$PATH run "$BIN/lsst-submit" --site slurm --out runs --set source=/x "$FIX/sweep.yaml"
  echo "$output"
  [ "$status" -eq 1 ]
  [[ "$output" == *"submitting train/1 failed: sbatch (exit 1): sbatch: error: Batch job submission failed: QOSMaxSubmitJobPerUserLimit; cancelled the 2 jobs already submitted (101 102)"* ]]
  grep -qx "scancel 101 102" log
  ! grep -q "scontrol release" log
  grep -q -- "--parsable --hold --dependency=afterok:101 --kill-on-invalid-dep=yes" log
  dir=${lines[${#lines[@]}-1]}
  grep -q "^failed submitting train/1" "$dir/journal"
  grep -qx "cancelled 101 102" "$dir/journal"
}

@test "submit: the quickstart workflow runs on the local site (prep, 2-rank LSS training, report, archive)" {
  run "$BIN/lsst-submit" -q --out runs --set steps=4 --set seq_len=128 "$REPO/workflows/quickstart.yaml"
  echo "$output"
  dir=${lines[${#lines[@]}-1]}
  run "$BIN/lsst-status" "$dir"
  echo "$output"
  [[ "$output" == *"prep "*"COMPLETED"* ]]
  [[ "$output" == *"train "*"COMPLETED"* ]]
  [ "$(h5 "$dir/train/0/metrics/rank-00001.h5" "f.attrs['scheme'], int(f.attrs['world'])")" = "('lss', 2)" ]
  if [ -x "$BIN/lsst-report" ] && [ -x "$BIN/lsst-archive" ]; then
    [ "$status" -eq 0 ]
    [[ "$output" == *"4 COMPLETED"* ]]
  else
    skip "lsst-report/lsst-archive not built yet: prep and train checked"
  fi
}

@test "submit: lss-vs-megatron and seq-scaling plan on every site profile" {
  for s in slurm perlmutter alps summit; do
    cpu=(); [ $s = slurm ] && cpu=(--set gpus=0 --set backend=cpu)
    run "$BIN/lsst-submit" --dry-run --site $s "${cpu[@]}" "$REPO/workflows/lss-vs-megatron.yaml"
    [ "$status" -eq 0 ]
    [[ "$output" == *"plan      8 jobs in 3 stages"* ]]
    run "$BIN/lsst-submit" --dry-run --site $s "${cpu[@]}" "$REPO/workflows/seq-scaling.yaml"
    [ "$status" -eq 0 ]
    [[ "$output" == *"plan      7 jobs in 3 stages"* ]]
  done
  run "$BIN/lsst-submit" --dry-run --site perlmutter "$REPO/workflows/seq-scaling.yaml"
  [[ "$output" == *"--set data.seq_len='131072'"* ]]
  [[ "$output" == *"#SBATCH --nodes=16"* ]]
}

@test "submit: --resubmit --dry-run prints the submissions the real resubmit makes (array whose point 0 completed)" {
  # A run of array.yaml on small-queue (train: a 5-task array, id 101) where only train/2 failed.
  run_=$PWD/run; mkdir -p "$run_" shim
  cp "$FIX/array.yaml" "$run_/workflow.yaml"; cp "$FIX/small-queue.yaml" "$run_/site.yaml"
  {
    printf 'lsst-journal 1\nworkflow array\nsite small-queue\nscheduler slurm\nattempt 1\nworkflow_dir %s\n' "$FIX"
    echo "job prep 0"; for p in 0 1 2 3 4; do echo "job train $p"; done; echo "job report 0"
    printf 'submit prep 0 100\n'; for p in 0 1 2 3 4; do echo "submit train $p 101_$p"; done
    printf 'submit report 0 102\nreleased\n'
  } > "$run_/journal"
  cat > shim/sacct <<'SH'
#!/bin/bash
printf '%s\n' "100|COMPLETED|00:00:01|0:0|None" "101_0|COMPLETED|00:00:01|0:0|None" "101_1|COMPLETED|00:00:01|0:0|None" \
  "101_2|FAILED|00:00:01|1:0|NonZeroExitCode" "101_3|COMPLETED|00:00:01|0:0|None" "101_4|COMPLETED|00:00:01|0:0|None" \
  "102|CANCELLED by 0|00:00:00|0:0|DependencyNeverSatisfied"
SH
  cat > shim/sbatch <<'SH'
#!/bin/bash
n=$(cat "$SHIM_LOG.count" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "$SHIM_LOG.count"
echo "sbatch $*" >> "$SHIM_LOG"; echo $((200 + n))
SH
  printf '#!/bin/bash\necho "scontrol $*" >> "$SHIM_LOG"\n' > shim/scontrol
  chmod +x shim/*
  export SHIM_LOG=$PWD/log
  PATH=$PWD/shim:$PATH run "$BIN/lsst-submit" --resubmit "$run_" --dry-run
  echo "$output"
  [ "$status" -eq 0 ]
  [[ "$output" == *"resubmitting 2 of 7 jobs"* ]]
  [[ "$output" == *"plan      2 jobs in 3 stages"* ]]
  [[ "$output" == *"  train                    sbatch --parsable --hold train/array.sh   (1 tasks, at most 2 at once)"* ]]
  [[ "$output" == *"  report/0                 sbatch --parsable --hold --dependency=afterok:<train[]> --kill-on-invalid-dep=yes report/0/job.sh"* ]]
  [[ "$output" == *"#SBATCH --array=2%2"* ]]
  [ ! -e log ]
  # the real resubmit: the same two submissions, report after the array
  PATH=$PWD/shim:$PATH run "$BIN/lsst-submit" -q --resubmit "$run_"
  echo "$output"; cat log
  [ "$status" -eq 0 ]
  [ "$(grep -c '^sbatch' log)" -eq 2 ]
  grep -qx "sbatch --parsable --hold $run_/attempt-2/train/array.sh" log
  grep -qx "sbatch --parsable --hold --dependency=afterok:201 --kill-on-invalid-dep=yes $run_/attempt-2/report/0/job.sh" log
  grep -qx "scontrol release 201,202" log
}

@test "submit: the run directory appears whole (no temporary files, executable scripts); {{attempt}} is 1, then 2" {
  cat > att.yaml <<'YAML'
name: att
vars: {flag: /nonexistent}
stages:
  - name: a
    time: "00:02:00"
    run: echo attempt {{ attempt }} > {{job_dir}}/out; test -e {{flag}}
YAML
  run "$BIN/lsst-submit" -q --out runs --set flag="$PWD/flag" att.yaml
  [ "$status" -eq 1 ]
  dir=${lines[${#lines[@]}-1]}
  [ "$(cat "$dir/a/0/out")" = "attempt 1" ]
  [ -x "$dir/a/0/job.sh" ]
  [ -z "$(find runs -name '*.tmp.*')" ]
  [ "$(ls -A runs/att)" = "$(basename "$dir")" ]
  touch flag
  run "$BIN/lsst-submit" -q --resubmit "$dir"
  [ "$status" -eq 0 ]
  [ "$(cat "$dir/attempt-2/a/0/out")" = "attempt 2" ]
  grep -q "echo attempt '2' >" "$dir/attempt-2/a/0/job.sh"
  [ -z "$(find runs -name '*.tmp.*')" ]
}
