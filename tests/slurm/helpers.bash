# Shared by tests/slurm/*.bats: skip (with the reason) when no Slurm controller answers,
# wait for a run with lsst-status.
load ../lib
FIX=$REPO/tests/fixtures/workflows

# Whether a Slurm controller answers (setup_file may not skip: it returns early instead).
cluster_up() { command -v scontrol >/dev/null && scontrol ping 2>/dev/null | grep -q 'is UP'; }

# Skip (with the reason) unless a Slurm controller answers; never pass silently without a cluster.
need_cluster() {
  command -v scontrol >/dev/null || skip "no Slurm client installed (make deps; tests/slurm/cluster.sh up)"
  cluster_up || skip "no Slurm controller answers 'scontrol ping' (start one: tests/slurm/cluster.sh up)"
}

# wait_run DIR [SECONDS]: until no job of the run is pending or running; prints the status.
wait_run() {
  local dir=$1 limit=${2:-180}
  timeout "$limit" "$BIN/lsst-status" --watch --interval 2 "$dir" >/dev/null 2>&1 || true
  "$BIN/lsst-status" "$dir"
}

# state_of DIR STAGE POINT: the STATE column of one job.
state_of() { "$BIN/lsst-status" "$1" | awk -v s="$2" -v p="$3" '$1 == s && $2 == p { print $4 }'; }

# submit_train NAME STEPS [ARGS]: workflow NAME, one 2-rank training stage (the tiny model on the
# 4 MB data, STEPS steps, then lsst-run's ARGS), submitted to the Slurm cluster; lsst-submit's
# output, the run directory last.
submit_train() {
  local data; data=$(prep_data)
  cat > "$1.yaml" <<YAML
name: $1
stages:
  - name: train
    ranks: 2
    time: "00:05:00"
    run: >-
      lsst-run --config {{workflow_dir}}/tiny.yaml --set data.dir=$data --set output.dir={{job_dir}}
      --set train.steps=$2 ${3:-}
YAML
  cp "$FIX/tiny.yaml" .
  "$BIN/lsst-submit" -q --site slurm --out runs "$1.yaml"
}

# wait_step DIR N: until the run's training job has printed step N (60 s at most; 1 if never).
wait_step() {
  for _ in $(seq 300); do grep -q "step $2/" "$1"/train/0/slurm-*.out 2>/dev/null && return 0; sleep 0.2; done
  return 1
}
