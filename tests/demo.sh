#!/usr/bin/env bash
# make demo: the quickstart on this machine, from nothing.
#   make deps -> make -> lsst-submit --site local workflows/quickstart.yaml
#   (prep enwik8 -> 2-rank LSS training, ~2 minutes on 2 CPU cores -> report -> archive)
# Data, first found: $ENWIK8; data/enwik8.zip; a download of enwik8.zip into data/ when
# the network allows (SHA-256 checked; DOWNLOAD=0 skips it; ENWIK8_URL names a mirror);
# the prefix in ../shared/data/enwik8/; else a message saying how to get enwik8.
# tests/demo.sh --data: only find (or fetch) the data, print its path, build nothing.
set -euo pipefail
[ -z "${ENWIK8:-}" ] || [ ! -e "$ENWIK8" ] || ENWIK8=$(realpath "$ENWIK8")   # before the cd
cd "$(dirname "$0")/.."
REPO=$PWD
ZIP_URL=${ENWIK8_URL:-http://mattmahoney.net/dc/enwik8.zip}
ZIP_SHA=547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc
say() { printf 'make demo: %s\n' "$*" >&2; }

pick_data() {
  if [ -n "${ENWIK8:-}" ]; then
    [ -r "$ENWIK8" ] || { say "error: ENWIK8=$ENWIK8 is not a readable file"; exit 2; }
    realpath "$ENWIK8"; return
  fi
  if [ -f data/enwik8.zip ]; then realpath data/enwik8.zip; return; fi
  if [ "${DOWNLOAD:-1}" != 0 ]; then
    say "downloading $ZIP_URL (36 MB; DOWNLOAD=0 skips this)"
    if tests/fetch.sh "$ZIP_URL" "$ZIP_SHA" data/enwik8.zip; then realpath data/enwik8.zip; return; fi
    say "no download; looking for the enwik8 prefix in ../shared"
  fi
  local prefix=$REPO/../shared/data/enwik8/enwik8-head-4MB
  if [ -r "$prefix" ]; then realpath "$prefix"; return; fi
  say "error: no enwik8 here. Get it with one of:"
  say "  ENWIK8=/path/to/enwik8 make demo        (the raw file or enwik8.zip)"
  say "  put enwik8.zip in $REPO/data/ and run make demo"
  say "  make demo on a machine that can reach $ZIP_URL (or ENWIK8_URL=a mirror)"
  exit 2
}
if [ "${1:-}" = --data ]; then pick_data; exit 0; fi
tests/deps.sh
say "building (make)"
make -s -j"$(nproc)"
source=$(pick_data)
say "data: $source"

rundir=$(bin/lsst-submit --site local --set source="$source" --out runs workflows/quickstart.yaml | tail -n 1)
bpc=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "final_valid_bpc") c = i } NR == 2 { print $c }' \
      "$rundir/report/0/summary.csv")
echo
echo "run:     $rundir"
echo "report:  $rundir/report/0/report.html  (and report.md, summary.csv)"
echo "archive: $rundir.tar  (check it: bin/lsst-archive --verify $rundir.tar)"
case $bpc in   # 4 decimals, as report.md rounds it; anything but a number as it is
  '' | *[!0-9.eE+-]*) echo "final valid bpc: ${bpc:-n/a}" ;;
  *) printf 'final valid bpc: %.4f\n' "$bpc" ;;
esac
