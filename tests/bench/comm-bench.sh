#!/usr/bin/env bash
# LSS vs megatron-sp on the same model and sequence, at sequence degree 2 and 4
# (issue 4, "Measured"). For each: bytes sent per rank per step from the metrics
# counters next to the analytic volumes, peak memory per rank, step time, and the
# longest sequence that fits a fixed memory budget per rank (lsst-run --plan, the
# same byte count the runs measure). Then LSS at a sequence degree above the head
# count, which megatron-sp refuses.
#   tests/bench/comm-bench.sh [--record]    (--record appends the table to RESULTS.md)
# Not part of make test: about a minute on 2 cores. With more ranks than cores the
# step times are those of oversubscribed ranks (1 OpenMP thread each): compare
# them between schemes at the same N only.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${LSST_BIN:-$REPO/bin}
SHARED=${LSST_SHARED:-$REPO/../shared}
SEQ=${SEQ:-4096} LAYERS=${LAYERS:-2} DIM=${DIM:-128} HEADS=${HEADS:-4} BUDGET_MIB=${BUDGET_MIB:-1024}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
work=$(mktemp -d "${TMPDIR:-/tmp}/lsst-comm-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
"$BIN/lsst-prep" --quiet "$SHARED/data/enwik8/enwik8-head-4MB" data
cat > run.yaml <<YAML
data:     {dir: data, seq_len: $SEQ, batch: 1}
model:    {layers: $LAYERS, dim: $DIM, heads: $HEADS, mlp: $((4 * DIM)), vocab: 256}
parallel: {scheme: lss, sequence: 2, data: 1}
train:    {steps: 4, lr: 1.0e-3, warmup: 0, seed: 1, eval_every: 0, ckpt_every: 0}
output:   {dir: out}
YAML

# longest seq_len (multiple of 2N*64) whose planned bytes per rank fit the budget
longest() { # longest SCHEME N
  local lo=0 hi=$((1 << 22)) q=$((2 * $2 * 64)) mid bytes
  while [ $((hi - lo)) -gt $q ]; do
    mid=$(( (lo + hi) / 2 / q * q ))
    [ "$mid" -le "$lo" ] && break
    bytes=$("$BIN/lsst-run" --config run.yaml --plan --set parallel.scheme=$1 --set parallel.sequence=$2 \
            --set data.seq_len=$mid | awk '{print $4}')
    if [ "$bytes" -le $((BUDGET_MIB * 1048576)) ]; then lo=$mid; else hi=$mid; fi
  done
  echo "$lo"
}

for n in 2 4; do
  for scheme in lss megatron-sp; do
    mpirun --oversubscribe -np $n "$BIN/lsst-run" --config run.yaml --set parallel.scheme=$scheme \
        --set parallel.sequence=$n --set output.dir=$scheme-$n >/dev/null
    longest $scheme $n > $scheme-$n/longest
  done
  # zigzag: the same bytes and memory, causal attention work even across ranks
  mpirun --oversubscribe -np $n "$BIN/lsst-run" --config run.yaml --set parallel.scheme=lss \
      --set parallel.balance=zigzag --set parallel.sequence=$n --set output.dir=lss-zigzag-$n >/dev/null
  cp lss-$n/longest lss-zigzag-$n/longest
  # kv regather: [K|V] gathered again in the backward instead of kept per layer
  mpirun --oversubscribe -np $n "$BIN/lsst-run" --config run.yaml --set parallel.scheme=lss \
      --set parallel.balance=zigzag --set parallel.kv=regather --set parallel.sequence=$n \
      --set output.dir=lss-regather-$n >/dev/null
  longest_kv() { # like longest, with kv regather
    local lo=0 hi=$((1 << 22)) q=$((2 * $1 * 64)) mid bytes
    while [ $((hi - lo)) -gt $q ]; do
      mid=$(( (lo + hi) / 2 / q * q )); [ "$mid" -le "$lo" ] && break
      bytes=$("$BIN/lsst-run" --config run.yaml --plan --set parallel.scheme=lss --set parallel.sequence=$1 \
              --set parallel.kv=regather --set data.seq_len=$mid | awk '{print $4}')
      if [ "$bytes" -le $((BUDGET_MIB * 1048576)) ]; then lo=$mid; else hi=$mid; fi
    done
    echo "$lo"
  }
  longest_kv $n > lss-regather-$n/longest
done
# LSS with more sequence ranks than heads (megatron-sp cannot split 2 heads over 4 ranks)
mpirun --oversubscribe -np 4 "$BIN/lsst-run" --config run.yaml --set parallel.scheme=lss --set parallel.sequence=4 \
    --set model.heads=2 --set output.dir=lss-4-h2 >/dev/null
if "$BIN/lsst-run" --config run.yaml --plan --set parallel.scheme=megatron-sp --set parallel.sequence=4 \
    --set model.heads=2 >/dev/null 2>mg.err; then echo "megatron-sp accepted 2 heads on 4 ranks?" >&2; exit 1; fi

/usr/bin/python3 - "$SEQ" "$LAYERS" "$DIM" "$BUDGET_MIB" "$(cat mg.err)" <<'PY' | tee table.md
import glob, sys, h5py, numpy as np
S, L, C, budget, mg_err = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
F, V, B = 4 * C, 256, 1
# parameters reduced over the sequence group (replicated); see runtime/model.c set_layout
layer_all = 2*C + 3*C*C + 3*C + C*C + C + 2*C + F*C + F + C*F + C      # ln1, qkv, attproj, ln2, fc, fcproj
layer_split = 3*C*C + 3*C + C*C + F*C + F + C*F                        # megatron-sp splits these
head = V*C + 2*C + V*C                                                  # wte, lnf, wout (wpe: owned rows)
def analytic(scheme, n):
    f = (n - 1) / n
    if scheme == "lss":
        act = 4 * f * B * S * C * 4 * L          # [K|V] all-gather + d[K|V] reduce-scatter, 2C wide
        repl = head + L * layer_all
    else:
        act = 8 * f * B * S * C * 4 * L          # 4 all-gathers + 4 reduce-scatters of B x S x C
        repl = head + L * (layer_all - layer_split)
    grad = int(2 * (n - 1) * repl * 4 / n)       # gradient all-reduce over the sequence group
    return act, grad
print(f"| scheme | N | bytes/step counted | analytic activations | analytic grad all-reduce | gap | mem/rank MiB | step s | longest seq in {budget} MiB |")
print("|---|---|---|---|---|---|---|---|---|")
rows = {}
for scheme in ("lss", "lss-zigzag", "lss-regather", "megatron-sp"):
    for n in (2, 4):
        d = f"{scheme}-{n}"
        st = [h5py.File(p, "r")["steps"][()] for p in sorted(glob.glob(f"{d}/metrics/rank-*.h5"))]
        counted = int(st[0]["comm_bytes"][1:].mean())
        mem = max(int(s["mem_peak"].max()) for s in st) / 2**20
        t = float(np.median(np.max([s["t_step"][1:] for s in st], axis=0)))
        act, grad = analytic("megatron-sp" if scheme == "megatron-sp" else "lss", n)
        if scheme == "lss-regather":
            act += (L - 1) / L * act / 2   # L-1 more [K|V] all-gathers (the last layer's is still there)
        gap = counted - act - grad
        longest = open(f"{d}/longest").read().strip()
        rows[(scheme, n)] = (counted, mem, t, int(longest))
        print(f"| {scheme} | {n} | {counted:,} | {int(act):,} | {grad:,} | {gap:,} | {mem:.1f} | {t:.3f} | {int(longest):,} |")
for n in (2, 4):
    l, m = rows[("lss-zigzag", n)], rows[("megatron-sp", n)]
    r = rows[("lss-regather", n)]
    print(f"\nN={n}: lss kv regather / keep: bytes {r[0]/l[0]:.2f}x, memory {r[1]/l[1]:.2f}x, step time {r[2]/l[2]:.2f}x, longest sequence {r[3]/l[3]:.2f}x; vs megatron-sp: memory {r[1]/m[1]:.2f}x, longest sequence {r[3]/max(m[3],1):.2f}x")
    print(f"N={n}: megatron-sp / lss (zigzag): bytes {m[0]/l[0]:.2f}x, memory {m[1]/l[1]:.2f}x, step time {m[2]/l[2]:.2f}x, "
          f"longest sequence lss/megatron-sp {l[3]/max(m[3],1):.2f}x")
st = h5py.File("lss-4-h2/metrics/rank-00000.h5", "r")["steps"][()]
print(f"\nLSS with 4 sequence ranks and 2 heads: ran, {float(np.median(st['t_step'][1:])):.3f} s/step. "
      f"megatron-sp refused: {mg_err.strip()}")
print("\nThe gap (counted - analytic) is the per-step scalars: the loss all-reduce (8-byte double over the world),"
      " the gradient-norm all-reduce of the shares (double, sequence group) and the stop-signal flag (4 bytes).")
PY
if [ "${1:-}" = --record ]; then
  { echo; echo "## lss vs megatron-sp communication, memory, time ($(date -u +%Y-%m-%d), $(nproc --all)-core $(uname -m), seq $SEQ, $LAYERS layers, dim $DIM, $HEADS heads, CPU backend, 1 thread/rank)"; echo; cat table.md; } >> "$REPO/tests/bench/RESULTS.md"
fi
