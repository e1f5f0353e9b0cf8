#!/usr/bin/env bash
# lsst-run training throughput on the CPU backend (issue 3, "Speed").
#
#   tests/bench/train-bench.sh [--quick] [--record] [WORKDIR]
#
# One rank, scheme none, 2 OpenMP threads, backend cpu, real enwik8 bytes
# (lsst-prep of ../shared/data/enwik8/enwik8-head-4MB), vocab 256, mlp 4 x dim:
#   d512-b4   6 layers, dim 512, 8 heads, batch 4, seq 1024  (the FLOP/s goal's shape, and
#             llm.c's second shape)
#   d512-b1   the same model at batch 1 (skinny GEMMs: 1024 rows)
#   d256-b4   4 layers, dim 256, 4 heads, batch 4, seq 256   (llm.c's first shape)
# Each run: WARMUP steps not counted, then STEPS measured steps; t_step is read back from
# the run's metrics file (/steps, h5py with /usr/bin/python3); the median is the figure,
# min and max are printed beside it.
#
# Model FLOPs of one training step (forward + backward; what is counted is fixed by the
# model, not by what the kernels happen to compute):
#   6 * N * tokens + 12 * C * P * L * batch
#   N      = parameters that multiply activations: every parameter except the wte and wpe
#            lookup tables (wout, the untied output projection, is counted)
#   tokens = batch * seq_len (every position has a target)
#   P      = seq_len * (seq_len + 1) / 2, the (query, key) pairs the causal mask leaves
#            visible, diagonal included (~ l^2 / 2)
#   attention: forward 2 * C * P (Q K^T) + 2 * C * P (P V) = 4 * C * P per layer and
#            sequence; backward 2x forward = 8 * C * P (dV, dP, dQ, dK). Not counted: the
#            Q K^T the backward recomputes, softmax, layernorm, GELU, the optimizer.
# Model GFLOP/s = FLOPs / median t_step. The denominator is this machine's sgemm ceiling
# measured IN THE SAME RUN (tests/bench/sgemm-ceiling.c against the OpenBLAS the Makefile
# links, 2 threads, best of several runs of large square and model-shaped GEMMs), once
# before and once after the training runs; the higher of the two is used (the lower
# fraction).
#
# Peer: karpathy/llm.c's CPU trainer (train_gpt2.c, OpenMP, 2 threads). It cannot be
# fetched on the machine this was written on, so by default the figures are those of issue
# 3 (measured on this machine kind with vocab 256, machine otherwise idle):
# 4L/256d/4h/B4/T256 0.8 s/step; 6L/512d/8h/B4/T1024 37 s/step; that host's sgemm ceiling
# 377 GFLOP/s. The output says so. With LLMC_DIR=/path/to/llm.c (a checkout of
# karpathy/llm.c) the peer is built and timed here instead: the script copies
# train_gpt2.c, Makefile and llmc/ into WORKDIR, writes a random-weight checkpoint of the
# benchmarked shape (gpt2_124M.bin, header version 3, vocab = padded vocab = 256) and the
# enwik8 bytes as uint16 token files (dev/data/tinyshakespeare/tiny_shakespeare_{train,val}
# .bin, header 20240520 v1), patches B, T, the step count and turns off the periodic
# validation and sampling, then runs `make train_gpt2` and `OMP_NUM_THREADS=2 ./train_gpt2`
# and reads the "step N: train loss X (took Y ms)" lines. Written against llm.c master's
# formats; not run here (no llm.c on this machine).
#
# Goals (issue 3): model FLOP/s >= 50% of the sgemm ceiling at dim 512 / 8 heads / seq 1024;
# >= 10x llm.c's tokens/s at both llm.c shapes.
# Environment: LSST_BIN (default ./bin), STEPS (default 8; --quick 3), WARMUP (default 2),
# THREADS (default 2), LLMC_DIR, BENCH_MACHINE (names the machine for --record),
# OPENBLAS_CORETYPE: used as set, never changed, and printed; the ceiling and the runs of one
# invocation share it, so `OPENBLAS_CORETYPE=SkylakeX tests/bench/train-bench.sh` is a complete
# second report under that setting. --record appends the table to
# tests/bench/RESULTS.md. Not part of `make test`: about 1.5 minutes on 2 cores; run it on
# an otherwise idle machine (the other processes' CPU use during each run is printed).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
BIN=${LSST_BIN:-$REPO/bin}
SHARED=${LSST_SHARED:-$REPO/../shared}
PY=/usr/bin/python3   # Debian's python3 has h5py + numpy (not a pyenv one on PATH)
THREADS=${THREADS:-2} WARMUP=${WARMUP:-2}
steps_default=8 quick=0 record=0 work=
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1; steps_default=3; shift ;;
    --record) record=1; shift ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "train-bench.sh: unknown option $1" >&2; exit 2 ;;
    *) work=$1; shift ;;
  esac
done
STEPS=${STEPS:-$steps_default}
for b in lsst-run lsst-prep; do
  [ -x "$BIN/$b" ] || { echo "train-bench.sh: no $BIN/$b (run make, or set LSST_BIN)" >&2; exit 2; }
done
[ -f "$SHARED/data/enwik8/enwik8-head-4MB" ] || { echo "train-bench.sh: no $SHARED/data/enwik8/enwik8-head-4MB" >&2; exit 2; }
"$PY" -c 'import h5py, numpy' 2>/dev/null || { echo "train-bench.sh: $PY lacks h5py/numpy (apt install python3-h5py)" >&2; exit 2; }
if [ -z "$work" ]; then work=$(mktemp -d "${TMPDIR:-/tmp}/lsst-train-bench.XXXXXX"); trap 'rm -rf "$work"' EXIT; fi
mkdir -p "$work"

# The sgemm-ceiling program, against the same OpenBLAS as the Makefile (the OpenMP build when
# installed).
eval "$(make -s --no-print-directory print-blas)"   # blas_cflags, blas_libs: the OpenBLAS the Makefile links
# shellcheck disable=SC2086
${CC:-gcc} -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -O2 -fopenmp $blas_cflags tests/bench/sgemm-ceiling.c \
  $blas_libs -lm -o "$work/sgemm-ceiling"
"$BIN/lsst-prep" --quiet "$SHARED/data/enwik8/enwik8-head-4MB" "$work/enwik8"

# measure LOG CMD...: runs CMD (stdout+stderr to LOG) and prints "WALL OTHERS": wall seconds and
# the CPUs the rest of the machine kept busy meanwhile (all busy time in /proc/stat minus this
# command's own CPU time, over the wall time; 0 on an idle machine, up to the core count).
measure() {
  "$PY" - "$@" <<'PY'
import os, resource, subprocess, sys, time
def busy():
    f = [int(x) for x in open('/proc/stat').readline().split()[1:9]]
    return (sum(f) - f[3] - f[4]) / os.sysconf('SC_CLK_TCK')
log, cmd = sys.argv[1], sys.argv[2:]
r0, b0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), busy(), time.monotonic()
with open(log, 'w') as out:
    rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT)
t1, b1, r1 = time.monotonic(), busy(), resource.getrusage(resource.RUSAGE_CHILDREN)
own = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
print(f"{t1 - t0:.3f} {max(0.0, (b1 - b0 - own) / (t1 - t0)):.2f}")
sys.exit(rc)
PY
}

ceiling() { # ceiling TAG: runs sgemm-ceiling, prints its GFLOP/s
  local others quick_flag=()
  [ "$quick" = 1 ] && quick_flag=(--quick)
  others=$(measure "$work/ceiling-$1.log" "$work/sgemm-ceiling" --threads "$THREADS" "${quick_flag[@]}") ||
    { cat "$work/ceiling-$1.log" >&2; exit 1; }
  sed 's/^/  /' "$work/ceiling-$1.log" >&2
  echo "  (other processes kept ${others#* } CPUs busy meanwhile)" >&2
  awk '/^ceiling_gflops/ { print $2 }' "$work/ceiling-$1.log"
}

# name layers dim heads batch seq; peer s/step from issue 3 (- : none)
shapes=(
  "d512-b4 6 512 8 4 1024 37"
  "d512-b1 6 512 8 1 1024 -"
  "d256-b4 4 256 4 4 256 0.8"
)

echo "# train-bench $(date -u +%Y-%m-%dT%H:%M:%SZ): $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p'), $(grep -m1 -o 'avx512f' /proc/cpuinfo || echo no-avx512)), load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "# lsst-run: $("$BIN/lsst-run" --version); OMP_NUM_THREADS=$THREADS; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)}; $WARMUP warm-up + $STEPS measured steps" >&2
echo "sgemm ceiling, before the training runs:" >&2
ceil0=$(ceiling before)

results=$work/results.txt
: >"$results"
for s in "${shapes[@]}"; do
  read -r name L C NH B T peer <<<"$s"
  out=$work/run-$name
  cat >"$work/$name.yaml" <<YAML
data:     {dir: $work/enwik8, seq_len: $T, batch: $B}
model:    {layers: $L, dim: $C, heads: $NH, mlp: $((4 * C)), vocab: 256}
parallel: {scheme: none, sequence: 1, data: 1}
train:    {steps: $((WARMUP + STEPS)), lr: 3.0e-4, warmup: 2, seed: 1, eval_every: 0, ckpt_every: 0}
backend:  cpu
output:   {dir: $out}
YAML
  rm -rf "$out"
  m=$(OMP_NUM_THREADS=$THREADS measure "$work/$name.log" "$BIN/lsst-run" --config "$work/$name.yaml") ||
    { cat "$work/$name.log" >&2; exit 1; }
  read -r wall others <<<"$m"
  params=$(sed -n 's/.*ranks, \([0-9]*\) params\/rank.*/\1/p' "$work/$name.log")
  # t_step of the measured steps: median min max
  m=$("$PY" -c "
import h5py, numpy as np, sys
t = h5py.File(sys.argv[1], 'r')['steps']['t_step'][int(sys.argv[2]):]
assert len(t) > 0, 'no measured steps in ' + sys.argv[1]
print(np.median(t), t.min(), t.max())" "$out/metrics/rank-00000.h5" "$WARMUP")
  read -r med lo hi <<<"$m"
  printf '  %-8s %dL/%dd/%dh/B%d/T%d: t_step median %.3f s (min %.3f, max %.3f) over %d steps; run %.0f s; other processes kept %s CPUs busy\n' \
    "$name" "$L" "$C" "$NH" "$B" "$T" "$med" "$lo" "$hi" "$STEPS" "$wall" "$others" >&2
  echo "$name $L $C $NH $B $T $params $med $lo $hi $others $peer" >>"$results"
done

# ---- the peer, when a checkout of llm.c is given ------------------------------------------------
# llmc_run NAME L C NH B T: prints llm.c's median step seconds at that shape.
llmc_run() {
  local name=$1 L=$2 C=$3 NH=$4 B=$5 T=$6 d=$work/llmc-$1
  rm -rf "$d"; mkdir -p "$d/dev/data/tinyshakespeare"
  cp -r "$LLMC_DIR/train_gpt2.c" "$LLMC_DIR/Makefile" "$LLMC_DIR/llmc" "$d/"
  local n=$((WARMUP + STEPS - 1)) src=$d/train_gpt2.c
  # B, T, the number of steps; no periodic validation or sampling (not part of a step's time).
  sed -i -e "s/^\( *\)int B = 4;/\1int B = $B;/" -e "s/^\( *\)int T = 64;/\1int T = $T;/" \
         -e "s/for (int step = 0; step <= 40; step++)/for (int step = 0; step <= $n; step++)/" \
         -e 's/if (step % 10 == 0) {/if (0) {/' -e 's/if (step > 0 \&\& step % 20 == 0) {/if (0) {/' "$src"
  for want in "int B = $B;" "int T = $T;" "step <= $n;"; do
    grep -qF "$want" "$src" || { echo "train-bench.sh: could not patch '$want' into llm.c's train_gpt2.c (its source changed?)" >&2; return 1; }
  done
  [ "$(grep -c 'if (0) {' "$src")" -ge 2 ] || { echo "train-bench.sh: could not turn off llm.c's validation/sampling" >&2; return 1; }
  grep -q 'model_header\[1\] != 3' "$src" || { echo "train-bench.sh: llm.c's checkpoint is not version 3 (its source changed?)" >&2; return 1; }
  "$PY" - "$d" "$L" "$C" "$NH" "$T" "$SHARED/data/enwik8/enwik8-head-4MB" <<'PY'
import numpy as np, sys
d, L, C, NH, T, text = sys.argv[1], *map(int, sys.argv[2:6]), sys.argv[6]
V = Vp = 256
hdr = np.zeros(256, np.int32); hdr[:8] = [20240326, 3, T, V, L, NH, C, Vp]
sizes = [Vp*C, T*C, L*C, L*C, L*3*C*C, L*3*C, L*C*C, L*C, L*C, L*C, L*4*C*C, L*4*C, L*C*4*C, L*C, C, C]
kind = ['w', 'w', 'one', 'zero', 'w', 'zero', 'w', 'zero', 'one', 'zero', 'w', 'zero', 'w', 'zero', 'one', 'zero']
rng = np.random.default_rng(1)
with open(f'{d}/gpt2_124M.bin', 'wb') as f:
    f.write(hdr.tobytes())
    for n, k in zip(sizes, kind):
        a = (0.02 * rng.standard_normal(n)) if k == 'w' else np.full(n, 1.0 if k == 'one' else 0.0)
        f.write(a.astype(np.float32).tobytes())
tok = np.fromfile(text, np.uint8).astype(np.uint16)
cut = len(tok) * 9 // 10
for split, part in (('train', tok[:cut]), ('val', tok[cut:])):
    h = np.zeros(256, np.int32); h[:3] = [20240520, 1, len(part)]
    with open(f'{d}/dev/data/tinyshakespeare/tiny_shakespeare_{split}.bin', 'wb') as f:
        f.write(h.tobytes()); f.write(part.tobytes())
PY
  make -s -C "$d" train_gpt2 >"$d/build.log" 2>&1 || { cat "$d/build.log" >&2; return 1; }
  (cd "$d" && OMP_NUM_THREADS=$THREADS ./train_gpt2 >run.log 2>&1) || { tail "$d/run.log" >&2; return 1; }
  "$PY" -c "
import re, sys, numpy as np
t = [float(m.group(1)) / 1e3 for m in re.finditer(r'^step \d+: train loss \S+ \(took ([0-9.]+) ms\)', open(sys.argv[1]).read(), re.M)]
assert len(t) > int(sys.argv[2]), 'no step lines in llm.c output'
print(np.median(t[int(sys.argv[2]):]))" "$d/run.log" "$WARMUP"
}
peer_src="issue 3's figures (peer not rerun in the same run: not fetchable here; figures from the issue, same machine kind, whose sgemm ceiling was 377 GFLOP/s)"
if [ -n "${LLMC_DIR:-}" ]; then
  peer_src="llm.c from $LLMC_DIR, built and run in this run (OMP_NUM_THREADS=$THREADS)"
  tmp=$work/results.peer; : >"$tmp"
  while read -r name L C NH B T params med lo hi others peer; do
    if [ "$peer" != - ]; then peer=$(llmc_run "$name" "$L" "$C" "$NH" "$B" "$T"); fi
    echo "$name $L $C $NH $B $T $params $med $lo $hi $others $peer" >>"$tmp"
  done <"$results"
  mv "$tmp" "$results"
fi

echo "sgemm ceiling, after the training runs:" >&2
ceil1=$(ceiling after)

table=$("$PY" - "$results" "$ceil0" "$ceil1" "$peer_src" "${LLMC_DIR:+here}" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
c0, c1, src, peer_here = float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5] == 'here'
ceil = max(c0, c1)
PEER_CEIL = 377.0   # GFLOP/s: the sgemm ceiling of the issue's machine (only for the normalized lines)
print(f"sgemm ceiling (OpenBLAS, 2 threads, best GEMM): {c0:.1f} GFLOP/s before, {c1:.1f} after; "
      f"fractions below use {ceil:.1f}.")
print(f"Peer: {src}.")
print()
print("| shape | params (N counted) | tokens/step | GFLOP/step | t_step median (min-max) | tokens/s | model GFLOP/s "
      "| of sgemm ceiling | peer tokens/s | vs peer | others' CPUs |")
print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
summary = []
for name, L, C, NH, B, T, params, med, lo, hi, others, peer in rows:
    L, C, NH, B, T, params = map(int, (L, C, NH, B, T, params))
    med, lo, hi = float(med), float(lo), float(hi)
    N = params - 256 * C - T * C                     # minus the wte (V, C) and wpe (T, C) lookup tables
    tokens, P = B * T, T * (T + 1) // 2
    flop = 6 * N * tokens + 12 * C * P * L * B
    gfs, tps = flop / med / 1e9, tokens / med
    shape = f"{L}L/{C}d/{NH}h/B{B}/T{T}"
    p_tps = ratio = ''
    if peer != '-':
        p_tps, ratio = f"{tokens / float(peer):,.0f}", f"{tps * float(peer) / tokens:.1f}x"
    print(f"| {name}: {shape} | {params:,} ({N:,}) | {tokens} | {flop / 1e9:.1f} | {med:.3f} s ({lo:.3f}-{hi:.3f}) | "
          f"{tps:,.0f} | {gfs:.1f} | {100 * gfs / ceil:.0f}% | {p_tps} | {ratio} | {float(others):.2f} |")
    summary.append((name, shape, gfs, tps * float(peer) / tokens if peer != '-' else None,
                    flop / float(peer) / 1e9 if peer != '-' else None))
print()
for name, shape, gfs, ratio, peer_gfs in summary:
    if name == 'd512-b4':
        print(f"Goal, model FLOP/s >= 50% of the sgemm ceiling at {shape}: "
              f"**{'met' if gfs >= 0.5 * ceil else 'NOT met'}** ({100 * gfs / ceil:.0f}%: {gfs:.1f} of {ceil:.1f} GFLOP/s).")
for name, shape, gfs, ratio, peer_gfs in summary:
    if ratio is not None:
        print(f"Goal, >= 10x llm.c tokens/s at {shape}: **{'met' if ratio >= 10 else 'NOT met'}** ({ratio:.1f}x).")
if not peer_here:
    print()
    print(f"Normalized by each machine's own sgemm ceiling (not the goal metric; the peer figures come from a host "
          f"whose ceiling was {PEER_CEIL:.0f} GFLOP/s, this run's is {ceil:.1f}):")
    for name, shape, gfs, ratio, peer_gfs in summary:
        if ratio is not None:
            ours, theirs = gfs / ceil, peer_gfs / PEER_CEIL
            print(f"  {shape}: lsst-run {100 * ours:.1f}% of its ceiling, llm.c {100 * theirs:.1f}% of its: "
                  f"{ours / theirs:.1f}x")
PY
)
echo
echo "$table"

if [ "$record" = 1 ]; then
  res=$REPO/tests/bench/RESULTS.md
  [ -f "$res" ] || printf '# Benchmark results\n' >"$res"
  grep -q '^## lsst-run training throughput (CPU)' "$res" || printf '\n## lsst-run training throughput (CPU)\n' >>"$res"
  {
    printf '\n### %s, %s\n\n' "$(date +%Y-%m-%d)" "${BENCH_MACHINE:-$(nproc)-CPU $(lscpu | sed -n 's/^Model name: *//p')}"
    # shellcheck disable=SC2016
    printf '`tests/bench/train-bench.sh` (%s warm-up + %s measured steps, OMP_NUM_THREADS=%s, OPENBLAS_CORETYPE=%s, lsst-run %s).\n\n' \
      "$WARMUP" "$STEPS" "$THREADS" "${OPENBLAS_CORETYPE:-(unset)}" "$("$BIN/lsst-run" --version | cut -d' ' -f2-)"
    echo "$table"
  } >>"$res"
  echo "appended to $res" >&2
fi
