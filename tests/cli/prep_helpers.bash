# Helpers for prep.bats: where things are, and the checks every failure case shares.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${LSST_BIN:-$REPO/bin}
PREP=$BIN/lsst-prep
DATA=$REPO/../shared/data/enwik8
IN1M=$DATA/enwik8-head-1MiB
PY=/usr/bin/python3   # Debian's python3 has h5py + numpy (not the pyenv one on PATH)
HOST=$(hostname)      # temp dirs are .NAME.lsst-prep-tmp.HOST.PID

# The whole 1 MiB prefix: split sizes by the 90/5/5 rule (valid, test = floor(5%)).
N1M=1048576
V1M=52428            # floor(1048576 * 5 / 100)
T1M=$((N1M - 2 * V1M))  # 943720

# py CODE ARGS...: run python with h5py/numpy, sys.argv[1:] = ARGS.
py() { local code=$1; shift; "$PY" -c "import sys, h5py, numpy as np, hashlib, yaml
$code" "$@"; }

# The bytes of all shards' /tokens of DIR, in manifest order (= offset order),
# mapped back through /vocab for compact vocab, written to FILE. Also checks
# that shard offsets are contiguous and agree with the shard attributes.
concat_shards() { # concat_shards DIR FILE
  py '
d, out = sys.argv[1], sys.argv[2]
m = yaml.safe_load(open(d + "/manifest.yaml"))
parts, pos = [], 0
for name in ("train", "valid", "test"):
    sp = m["splits"][name]
    assert sp["offset"] == pos, (name, sp["offset"], pos)
    for i, sh in enumerate(sp["shards"]):
        with h5py.File(d + "/" + sh["file"], "r") as f:
            t = f["tokens"]
            assert t.dtype == np.uint8 and t.ndim == 1, t.dtype
            assert t.shape[0] == sh["tokens"], (sh, t.shape)
            assert sh["offset"] == pos and int(t.attrs["offset"]) == pos, (sh, pos)
            assert t.attrs["split"] == name and int(t.attrs["shard"]) == i
            assert int(t.attrs["vocab_size"]) == m["vocab"]["size"]
            ids = t[...]
            if m["vocab"]["kind"] == "compact":
                ids = f["vocab"][...][ids]
            parts.append(ids.tobytes())
        pos += sh["tokens"]
assert pos == m["source"]["size"]
open(out, "wb").write(b"".join(parts))
' "$1" "$2"
}

# The check every failure case shares: status, one line "lsst-prep: error: ..."
# that contains each given text, and nothing left beside OUTDIR.
# expect_failure STATUS OUTDIR TEXT...   (after `run`)
expect_failure() {
  local want=$1 out=$2; shift 2
  if [ "$status" -ne "$want" ]; then echo "status $status, want $want; output: $output"; return 1; fi
  if [ "${#lines[@]}" -ne 1 ]; then echo "want one line, got: $output"; return 1; fi
  case ${lines[0]} in "lsst-prep: error: "*) ;; *) echo "not an lsst-prep error: $output"; return 1 ;; esac
  local t
  for t in "$@"; do
    case $output in *"$t"*) ;; *) echo "message lacks '$t': $output"; return 1 ;; esac
  done
  no_leftovers "$out"
}

# Neither OUTDIR nor any temp dir of ours beside it.
no_leftovers() {
  local out=$1 parent base
  parent=$(dirname "$out"); base=$(basename "$out")
  if [ -e "$out" ]; then echo "$out was left behind"; return 1; fi
  if compgen -G "$parent/.$base.lsst-prep-*" >/dev/null; then
    echo "temp dirs left: $(ls -a "$parent")"; return 1
  fi
}

# Wait (up to 10 s) until PID's temp dir holds its first shard file.
wait_for_tmp() { # wait_for_tmp PARENT BASE PID
  local i
  for i in $(seq 200); do
    [ -f "$1/.$2.lsst-prep-tmp.$HOST.$3/train-00000.h5" ] && return 0
    sleep 0.05
  done
  echo "no temp dir for pid $3"; return 1
}
