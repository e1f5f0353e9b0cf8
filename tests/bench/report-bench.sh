#!/usr/bin/env bash
# Benchmark (not a test): lsst-report against an h5py + numpy peer (report_peer.py)
# on the paper's largest run: 3,456 rank files x 1,000 steps, same files, same run.
# lsst-report does its whole job (every statistic, plots, report.md/html, summary.csv/h5);
# the peer computes only the step-time statistics. Both must agree on mean, median, p99.
#
#   tests/bench/report-bench.sh [RANKS] [STEPS] [REPEATS]     (default 3456 1000 3)
#
# Files are generated once (tests/bench/gen_ranks.py, ~30 s) under
# ${LSST_BENCH_DIR:-${TMPDIR:-/tmp}/lsst-report-bench-RANKSxSTEPS} and read from the page
# cache (read once before timing). Each tool runs REPEATS times, alternating; the median
# wall time counts. Exit 1 when the numbers disagree or lsst-report is not 2x faster.
set -euo pipefail
cd "$(dirname "$0")/../.."
ranks=${1:-3456} steps=${2:-1000} repeats=${3:-3}
BIN=${LSST_BIN:-$PWD/bin}
PY=/usr/bin/python3
dir=${LSST_BENCH_DIR:-${TMPDIR:-/tmp}/lsst-report-bench-${ranks}x${steps}}
[ -x "$BIN/lsst-report" ] || { echo "report-bench: no $BIN/lsst-report (make, or set LSST_BIN)" >&2; exit 2; }

if [ ! -f "$dir/.complete" ]; then
  echo "generating $ranks rank files x $steps steps in $dir ..."
  rm -rf "$dir"
  "$PY" tests/bench/gen_ranks.py "$dir/job" "$ranks" "$steps" --sp 8
  touch "$dir/.complete"
fi
cat "$dir"/job/metrics/rank-*.h5 >/dev/null    # page cache: both tools read from memory

now() { date +%s.%N; }
report_t=() peer_t=()
for i in $(seq "$repeats"); do
  t0=$(now); "$BIN/lsst-report" "$dir/job" -o "$dir/report" >/dev/null; t1=$(now)
  peer_out=$("$PY" tests/bench/report_peer.py "$dir/job"); t2=$(now)
  report_t+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')"); peer_t+=("$(awk -v a="$t1" -v b="$t2" 'BEGIN {print b - a}')")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
r=$(median "${report_t[@]}") p=$(median "${peer_t[@]}")

# Same numbers: the peer's mean / median / p99 against summary.csv.
"$PY" - "$dir/report/summary.csv" "$peer_out" <<'PY'
import csv, sys
row = next(csv.DictReader(open(sys.argv[1], newline="")))
w = sys.argv[2].split()
peer = dict(zip(w[0::2], w[1::2]))
for ours, theirs in (("step_time_mean_s", "mean"), ("step_time_median_s", "median"), ("step_time_p99_s", "p99")):
    a, b = float(row[ours]), float(peer[theirs])
    assert abs(a - b) <= 1e-8 * abs(b), f"{ours}: lsst-report {a} vs peer {b}"
assert int(row["ranks_read"]) == int(peer["files"]) and int(row["steps"]) == int(peer["steps"])
print(f"same statistics: mean {row['step_time_mean_s']} s, median {row['step_time_median_s']} s, p99 {row['step_time_p99_s']} s")
PY
speedup=$(awk -v p="$p" -v r="$r" 'BEGIN {print p / r}')
printf 'lsst-report   %6.2f s  (runs: %s)\n' "$r" "${report_t[*]}"
printf 'h5py + numpy  %6.2f s  (runs: %s)\n' "$p" "${peer_t[*]}"
printf 'speedup       %6.1fx  (%d rank files x %d steps, median of %d, %s, %d cores)\n' "$speedup" "$ranks" "$steps" \
  "$repeats" "$(. /etc/os-release && echo "$PRETTY_NAME")" "$(nproc)"
if awk -v s="$speedup" 'BEGIN {exit !(s < 2)}'; then echo "report-bench: lsst-report is not 2x faster than the peer" >&2; exit 1; fi
