#!/usr/bin/env bash
# lsst-prep throughput against the I/O floor (cp) and the usual Python preparation.
#
#   tests/bench/prep-bench.sh [--runs N] [--py-runs N] [--record] [WORKDIR]
#
# Builds a 100,000,000-byte input by repeating enwik8-head-4MB (truncated to
# exactly 1e8 bytes), warms the page cache with it, then runs RUNS rounds of
# every command (Python: PY_RUNS runs) and keeps each one's best wall time. Before
# every run the previous output is removed and `sync` writes back dirty pages, so
# no run pays for another's writeback; caches are not dropped.
# Goals: lsst-prep within 2x of cp; the Python peer at least 25x slower than lsst-prep.
# --record appends the figures to tests/bench/RESULTS.md (BENCH_MACHINE names the machine).
# Not part of `make test`; needs ~800 MB free in WORKDIR (default: a temp dir under $TMPDIR).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
BIN=${LSST_BIN:-$REPO/bin}
DATA=$REPO/../shared/data/enwik8
PY=${PY:-/usr/bin/python3}
runs=3 py_runs=2 record=0 work=
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --py-runs) py_runs=$2; shift 2 ;;
    --record) record=1; shift ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "prep-bench.sh: unknown option $1" >&2; exit 2 ;;
    *) work=$1; shift ;;
  esac
done
[ "$runs" -ge 1 ] && [ "$py_runs" -ge 1 ] || { echo "prep-bench.sh: --runs and --py-runs must be at least 1" >&2; exit 2; }
[ -x "$BIN/lsst-prep" ] || { echo "prep-bench.sh: no $BIN/lsst-prep (run make, or set LSST_BIN)" >&2; exit 2; }
[ -f "$DATA/enwik8-head-4MB" ] || { echo "prep-bench.sh: no $DATA/enwik8-head-4MB" >&2; exit 2; }
if [ -z "$work" ]; then work=$(mktemp -d "${TMPDIR:-/tmp}/lsst-prep-bench.XXXXXX"); trap 'rm -rf "$work"' EXIT; fi
mkdir -p "$work"

in=$work/input-1e8.bin
if [ "$(stat -c %s "$in" 2>/dev/null || echo 0)" != 100000000 ]; then
  # Whole copies, then the part of one more that makes 1e8 bytes (a `| head -c` would end the
  # writer with SIGPIPE, which pipefail turns into a failure).
  part=$(stat -c %s "$DATA/enwik8-head-4MB")
  for _ in $(seq $((100000000 / part))); do cat "$DATA/enwik8-head-4MB"; done >"$in"
  head -c $((100000000 % part)) "$DATA/enwik8-head-4MB" >>"$in"
fi
[ "$(stat -c %s "$in")" = 100000000 ]
cat "$in" >/dev/null   # page cache warm, as for every command

# once NAME OUTPUT CMD...: one timed run (previous output removed, dirty pages
# written back first); prints "WALL CPU" in seconds (CPU = user + sys).
once() {
  local name=$1 out=$2; shift 2
  local t0 t1 t cpu
  rm -rf "$out"; sync
  t0=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o "$work/cpu" "$@" >/dev/null
  t1=$(date +%s.%N)
  rm -rf "$out"
  t=$(echo "$t1 - $t0" | bc -l)
  cpu=$(awk '{ printf "%.3f", $1 + $2 }' "$work/cpu")
  printf '  %-28s %6.3f s wall, %6.3f s CPU\n' "$name" "$t" "$cpu" >&2
  printf '%.3f %s\n' "$t" "$cpu"
}

# Rounds run every command once, in turn, so a burst of load elsewhere on the
# machine hits all of them alike; each command keeps its best round.
names=(cp cps prep comp)
declare -A best_t best_c
keep() { # keep KEY WALL CPU
  if [ -z "${best_t[$1]:-}" ] || [ "$(echo "$2 < ${best_t[$1]}" | bc -l)" = 1 ]; then best_t[$1]=$2; best_c[$1]=$3; fi
}
load0=$(cut -d' ' -f1 /proc/loadavg)
echo "input: $in (100,000,000 bytes); $runs rounds ($py_runs for Python); load average $load0" >&2
for r in $(seq "$runs"); do
  echo " round $r" >&2
  read -r t c < <(once "cp" "$work/copy.bin" cp "$in" "$work/copy.bin"); keep cp "$t" "$c"
  read -r t c < <(once "cp + sync of the copy" "$work/copy.bin" sh -c 'cp "$0" "$1" && sync "$1"' "$in" "$work/copy.bin"); keep cps "$t" "$c"
  read -r t c < <(once "lsst-prep" "$work/prep" "$BIN/lsst-prep" -q "$in" "$work/prep"); keep prep "$t" "$c"
  read -r t c < <(once "lsst-prep --vocab compact" "$work/prep" "$BIN/lsst-prep" -q --vocab compact "$in" "$work/prep"); keep comp "$t" "$c"
done
for r in $(seq "$py_runs"); do
  read -r t c < <(once "Python peer" "$work/peer" "$PY" "$REPO/tests/bench/prep_peer.py" "$in" "$work/peer"); keep py "$t" "$c"
done
load1=$(cut -d' ' -f1 /proc/loadavg)
t_cp=${best_t[cp]} c_cp=${best_c[cp]} t_cps=${best_t[cps]} c_cps=${best_c[cps]}
t_prep=${best_t[prep]} c_prep=${best_c[prep]} t_comp=${best_t[comp]} c_comp=${best_c[comp]}
t_py=${best_t[py]} c_py=${best_c[py]}

r_cp=$(echo "$t_prep / $t_cp" | bc -l)
r_cps=$(echo "$t_prep / $t_cps" | bc -l)
r_py=$(echo "$t_py / $t_prep" | bc -l)
verdict() { [ "$(echo "$1" | bc -l)" = 1 ] && echo met || echo "NOT met"; }
g_cp=$(verdict "$r_cp <= 2")
g_py=$(verdict "$r_py >= 25")
mbs=$(echo "100 / $t_prep" | bc -l)

table=$(cat <<EOF
| command | best wall (s) | CPU of that run (s) | ratio |
|---|---:|---:|---|
| \`cp\` | $t_cp | $c_cp | 1 |
| \`cp\` + \`sync\` of the copy | $t_cps | $c_cps | |
| \`lsst-prep\` (vocab raw) | $t_prep | $c_prep | $(printf '%.1f' "$r_cp")x cp, $(printf '%.1f' "$r_cps")x cp+sync; $(printf '%.0f' "$mbs") MB/s |
| \`lsst-prep --vocab compact\` | $t_comp | $c_comp | $(printf '%.1f' "$(echo "$t_comp / $t_cp" | bc -l)")x cp |
| Python peer (\`prep_peer.py\`) | $t_py | $c_py | $(printf '%.0f' "$r_py")x lsst-prep |

Goals: lsst-prep within 2x of cp: **$g_cp** ($(printf '%.2f' "$r_cp")x); Python peer at least 25x slower: **$g_py** ($(printf '%.0f' "$r_py")x).
EOF
)
echo
echo "$table"

if [ "$record" = 1 ]; then
  machine=${BENCH_MACHINE:-"$(nproc)-core $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(. /etc/os-release && echo "$PRETTY_NAME")"}
  results=$REPO/tests/bench/RESULTS.md
  [ -f "$results" ] || printf '# Benchmark results\n' >"$results"
  {
    printf '\n## lsst-prep: %s, %s\n\n' "$(date +%F)" "$machine"
    printf 'tests/bench/prep-bench.sh --runs %s --py-runs %s: 100,000,000-byte input (enwik8-head-4MB repeated),\n' "$runs" "$py_runs"
    printf 'page cache warm, `sync` before each run, best wall time of the rounds; filesystem %s;\n' "$(findmnt -n -o FSTYPE --target "$work" 2>/dev/null || echo '?')"
    printf 'load average %s at the start, %s at the end (other work on the machine).\n\n' "$load0" "$load1"
    echo "$table"
  } >>"$results"
  echo "appended to $results" >&2
fi
