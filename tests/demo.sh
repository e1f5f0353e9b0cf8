#!/usr/bin/env bash
# make demo: the quickstart on this machine, from nothing.
#   make deps -> make -> lsst-submit --site local workflows/quickstart.yaml
#   (prep enwik8 -> 2-rank LSS training, ~2 minutes on 2 CPU cores -> report -> archive)
# Data, first found: $ENWIK8; data/enwik8.zip; a download of enwik8.zip when
# DOWNLOAD=1 (SHA-256 checked); the prefix in ../shared/data/enwik8/; else a message.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
ZIP_URL=http://mattmahoney.net/dc/enwik8.zip
ZIP_SHA=547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc
say() { printf 'make demo: %s\n' "$*" >&2; }

tests/deps.sh
say "building (make)"
make -s -j"$(nproc)"

pick_data() {
  if [ -n "${ENWIK8:-}" ]; then
    [ -r "$ENWIK8" ] || { say "error: ENWIK8=$ENWIK8 is not a readable file"; exit 2; }
    realpath "$ENWIK8"; return
  fi
  if [ -f data/enwik8.zip ]; then realpath data/enwik8.zip; return; fi
  if [ "${DOWNLOAD:-0}" = 1 ]; then
    mkdir -p data
    say "downloading $ZIP_URL"
    if curl -fsSL --max-time 600 -o data/enwik8.zip.part "$ZIP_URL" &&
       [ "$(sha256sum data/enwik8.zip.part | cut -d' ' -f1)" = "$ZIP_SHA" ]; then
      mv data/enwik8.zip.part data/enwik8.zip; realpath data/enwik8.zip; return
    fi
    rm -f data/enwik8.zip.part
    say "download failed or the SHA-256 did not match; trying the shared prefix"
  fi
  local prefix=$REPO/../shared/data/enwik8/enwik8-head-4MB
  if [ -r "$prefix" ]; then realpath "$prefix"; return; fi
  say "error: no enwik8 here. Get it with one of:"
  say "  ENWIK8=/path/to/enwik8 make demo        (the raw file or enwik8.zip)"
  say "  put enwik8.zip in $REPO/data/ and run make demo"
  say "  DOWNLOAD=1 make demo                    (fetches $ZIP_URL, checks its SHA-256)"
  exit 2
}
source=$(pick_data)
say "data: $source"

rundir=$(bin/lsst-submit --site local --set source="$source" --out runs workflows/quickstart.yaml | tail -n 1)
bpc=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "final_valid_bpc") c = i } NR == 2 { print $c }' \
      "$rundir/report/0/summary.csv")
echo
echo "run:     $rundir"
echo "report:  $rundir/report/0/report.html  (and report.md, summary.csv)"
echo "archive: $rundir.tar  (check it: bin/lsst-archive --verify $rundir.tar)"
echo "final valid bpc: $bpc"
