#!/usr/bin/env bash
# lsst-run on the device machine: prep a corpus, train a small model on 2 MPI ranks (lss 2x1) and on
# 1 rank, on the CPU backend, and check both runs wrote the same losses. Proves the device kit
# (MPI, HDF5, libyaml, OpenBLAS) carries the whole trainer there.
#   tests/gpu/smoke.sh WORKDIR      (BUILD: where bin/ is, default build-gpu)
set -eu
cd "$(dirname "$0")/../.."
W=${1:?usage: smoke.sh WORKDIR}
BIN=${BIN:-${BUILD:-build-gpu}/bin}
mkdir -p "$W"
corpus=.device-data/enwik8-head-1MiB
if [ ! -f "$corpus" ]; then  # no carried enwik8: any bytes will do for a smoke run
  corpus=$W/corpus.bin; cat kernels/*/*.c kernels/*/*.cu runtime/*.c tools/*.c tools/lib/*.c > "$corpus"
fi
"$BIN/lsst-prep" --quiet --force "$corpus" "$W/data"
cfg() {  # cfg NAME SCHEME SEQ
  cat > "$W/$1.yaml" <<YAML
data:     {dir: $W/data, seq_len: 128, batch: 2}
model:    {layers: 2, dim: 64, heads: 4, mlp: 256, vocab: 256}
parallel: {scheme: $2, sequence: $3, data: 1}
train:    {steps: 5, lr: 3.0e-3, warmup: 2, seed: 3, eval_every: 0, ckpt_every: 0}
backend:  cpu
output:   {dir: $W/$1}
YAML
}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=2
cfg one none 1; cfg lss lss 2
"$BIN/lsst-run" --config "$W/one.yaml" > "$W/one.log"
mpirun --oversubscribe -np 2 "$BIN/lsst-run" --config "$W/lss.yaml" > "$W/lss.log"
loss() { grep -o 'loss [0-9.]*' "$1" | awk '{print $2}' | tr '\n' ' '; }
a=$(loss "$W/one.log") b=$(loss "$W/lss.log")
echo "1 rank: $a"; echo "lss 2x1: $b"
python3 - "$a" "$b" <<'PY'
import sys
a, b = (list(map(float, s.split())) for s in sys.argv[1:3])
assert len(a) == len(b) == 5, (a, b)
d = max(abs(x - y) for x, y in zip(a, b))
print(f"smoke: 5 steps, 1 rank vs lss 2x1 max |dloss| {d:.2e}")
sys.exit(0 if d < 1e-4 else 1)
PY
