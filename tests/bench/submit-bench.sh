#!/usr/bin/env bash
# Benchmark of lsst-submit / lsst-status (not part of `make test`):
#  1. plan + render a 1,000-point sweep (--dry-run: every script printed) — best of 5 runs;
#  2. lsst-status on 1,000 jobs: the number of scheduler calls (a PATH shim logs each call) and
#     the time, (a) with accounting (a sacct shim prints 1,000 canned lines), (b) on the real
#     cluster of tests/slurm/cluster.sh when one answers: 1,000 jobs submitted for real, then
#     lsst-status with shims that log each call and exec the real command.
# Usage: tests/bench/submit-bench.sh   (LSST_BIN=dir of the binaries; default ./bin)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${LSST_BIN:-$PWD/bin}
work=$(mktemp -d "${TMPDIR:-/tmp}/submit-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
best_of() { # best_of N CMD...: the fastest of N runs, seconds
  local best=999999 t0 t1
  for _ in $(seq "$1"); do
    t0=$(date +%s.%N); "${@:2}" >/dev/null; t1=$(date +%s.%N)
    best=$(awk -v a="$t0" -v b="$t1" -v m="$best" 'BEGIN { t = b - a; print (t < m ? t : m) }')
  done
  printf '%.3f' "$best"
}

# A 1,000-point sweep: 10 x 100, each point 2 ranks; a site without a queue cap.
python3 - "$work" <<'PY'
import sys
d = sys.argv[1]
open(f"{d}/sweep.yaml", "w").write(f"""name: bench
vars: {{steps: 10}}
stages:
  - name: train
    ranks: 2
    matrix:
      lr: [{", ".join(str(i) for i in range(10))}]
      seed: [{", ".join(str(i) for i in range(100))}]
    run: lsst-run --config c.yaml --set train.lr={{{{lr}}}} --set train.seed={{{{seed}}}} --set train.steps={{{{steps}}}}
""")
open(f"{d}/trivial.yaml", "w").write(f"""name: trivial
stages:
  - name: t
    time: "00:05:00"
    matrix: {{i: [{", ".join(str(i) for i in range(1000))}]}}
    run: "true"
""")
PY
sed -e 's/max_queued: 1000 /max_queued: 100000/' site/slurm.yaml > "$work/bigqueue.yaml"
sed -i 's/^name: slurm/name: bigqueue/' "$work/bigqueue.yaml"

echo "== 1. plan + render a 1,000-point sweep (--dry-run, every script printed)"
out=$("$BIN/lsst-submit" --dry-run --site "$work/bigqueue.yaml" "$work/sweep.yaml")
echo "   $(grep '^plan' <<<"$out")"
echo "   scripts printed: $(grep -c '^===== .*/job.sh' <<<"$out"), bytes: $(wc -c <<<"$out")"
echo "   best of 5: $(best_of 5 "$BIN/lsst-submit" --dry-run --site "$work/bigqueue.yaml" "$work/sweep.yaml") s"
echo "   the same sweep as one job array (site max_queued 4), best of 5: $(best_of 5 "$BIN/lsst-submit" --dry-run --site tests/fixtures/workflows/small-queue.yaml "$work/sweep.yaml") s"

echo "== 2a. lsst-status on 1,000 jobs, accounting on (sacct shim with 1,000 lines)"
mkdir -p "$work/run" "$work/shim"
{
  printf 'lsst-journal 1\nworkflow bench\nsite slurm\nscheduler slurm\nattempt 1\nworkflow_dir /w\n'
  for i in $(seq 0 999); do echo "job train $i"; done
  for i in $(seq 0 999); do echo "submit train $i $((5000 + i))"; done
  echo released
} > "$work/run/journal"
for i in $(seq 0 999); do echo "$((5000 + i))|COMPLETED|00:00:01|0:0|None"; done > "$work/sacct.out"
cat > "$work/shim/sacct" <<SH
#!/bin/bash
echo "sacct \$*" >> "$work/calls"
cat "$work/sacct.out"
SH
chmod +x "$work/shim/sacct"
PATH=$work/shim:$PATH "$BIN/lsst-status" "$work/run" | tail -n 1 | sed 's/^/   /'
echo "   scheduler calls: $(wc -l < "$work/calls")"
echo "   best of 5: $(PATH=$work/shim:$PATH best_of 5 "$BIN/lsst-status" "$work/run") s (5 runs -> $(wc -l < "$work/calls") calls logged in all)"

echo "== 2b. the real cluster: 1,000 jobs submitted, then lsst-status"
if ! scontrol ping 2>/dev/null | grep -q 'is UP'; then echo "   skipped: no Slurm controller answers (tests/slurm/cluster.sh up)"; exit 0; fi
t0=$(date +%s.%N)
dir=$("$BIN/lsst-submit" -q --site slurm --out "$work/runs" "$work/trivial.yaml" | tail -n 1)
t1=$(date +%s.%N)
printf '   submitted 1,000 held jobs + released them in %.2f s (%s)\n' "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$dir"
rm -rf "$work/shim"/* "$work/calls"
for c in sacct scontrol squeue; do
  real=$(command -v $c)
  printf '#!/bin/bash\necho "%s $*" >> "%s/calls"\nexec %s "$@"\n' "$c" "$work" "$real" > "$work/shim/$c"
done
chmod +x "$work/shim"/*
t0=$(date +%s.%N)
PATH=$work/shim:$PATH "$BIN/lsst-status" "$dir" | tail -n 1 | sed 's/^/   /' || true
t1=$(date +%s.%N)
printf '   lsst-status took %.3f s; scheduler calls:\n' "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
sed 's/-j [0-9,]*/-j <ids>/; s/^/     /' "$work/calls"
echo "   waiting for the 1,000 jobs to finish ..."
timeout 600 "$BIN/lsst-status" --watch --interval 5 "$dir" > /dev/null || true
rm -f "$work/calls"
t0=$(date +%s.%N)
PATH=$work/shim:$PATH "$BIN/lsst-status" "$dir" | tail -n 1 | sed 's/^/   /' || true
t1=$(date +%s.%N)
printf '   after they finished: lsst-status took %.3f s; scheduler calls:\n' "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
sed 's/-j [0-9,]*/-j <ids>/; s/^/     /' "$work/calls"
