# Shared by the bats suites: where the binaries, the shared data and h5py live.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${LSST_BIN:-$REPO/bin}
SHARED=${LSST_SHARED:-$REPO/../shared}
ENWIK8_1M=$SHARED/data/enwik8/enwik8-head-1MiB
ENWIK8_4M=$SHARED/data/enwik8/enwik8-head-4MB
PY=/usr/bin/python3            # Debian's python3 has h5py + numpy (not a pyenv one on PATH)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
# Keep BLAS/OpenMP at one thread per rank when several ranks share 2 cores.
mpirun_n() { local n=$1; shift; OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 timeout 120 mpirun --oversubscribe -np "$n" "$@"; }

# A small run config; extra "key: value" lines may follow via --set on the command line.
write_config() { # write_config FILE DATA_DIR OUT_DIR
  cat >"$1" <<YAML
data:     {dir: $2, seq_len: 64, batch: 4}
model:    {layers: 2, dim: 32, heads: 4, mlp: 128, vocab: 256}
parallel: {scheme: none, sequence: 1, data: 1}
train:    {steps: 6, lr: 3.0e-3, warmup: 2, seed: 7, eval_every: 0, ckpt_every: 0}
backend:  cpu
output:   {dir: $3}
YAML
}

# Prepared 4 MB enwik8 prefix, made once per suite under BATS_FILE_TMPDIR.
prep_data() {
  local d=$BATS_FILE_TMPDIR/enwik8
  [ -f "$d/manifest.yaml" ] || "$BIN/lsst-prep" --quiet "$ENWIK8_4M" "$d" >&2
  echo "$d"
}

# h5 FILE EXPR: print a python expression evaluated with f = h5py.File(FILE)
h5() { "$PY" -c "import h5py, numpy as np, sys; f = h5py.File(sys.argv[1], 'r', swmr=True); print(($2))" "$1"; }

# damage_chunk SHARD: flips one byte in the middle of the first chunk of a shard's /tokens, so
# that HDF5's fletcher32 check refuses to read that chunk (a shard damaged on disk).
damage_chunk() {
  "$PY" - "$1" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    c = f["tokens"].id.get_chunk_info(0)
off = c.byte_offset + c.size // 2
with open(sys.argv[1], "r+b") as fh:
    fh.seek(off); b = fh.read(1); fh.seek(off); fh.write(bytes([b[0] ^ 0x5A]))
PY
}
