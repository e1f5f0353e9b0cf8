#!/usr/bin/env bash
# tests/fetch.sh URL SHA256 DEST: download URL to DEST when the network allows, and keep it
# only if its SHA-256 is SHA256. DEST appears whole or not at all (a temporary file beside
# it, renamed). A host that cannot be reached fails within ~10 s (connect timeout); a
# transfer slower than 10 kB/s for 30 s is given up.
# Exit 0: DEST written. 1: nothing written, one line on stderr says why. 2: usage.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: tests/fetch.sh URL SHA256 DEST" >&2; exit 2; }
url=$1 sha=$2 dest=$3
command -v curl >/dev/null || { echo "fetch: curl is not installed; cannot download $url" >&2; exit 1; }
dir=$(dirname "$dest") made=
[ -d "$dir" ] || { mkdir -p "$dir"; made=$dir; }
part=$(mktemp "$dest.part.XXXXXX")
trap 'rm -f "$part"; [ -z "$made" ] || [ -e "$dest" ] || rmdir "$made" 2>/dev/null || true' EXIT
if ! msg=$(curl -fsS -L --connect-timeout 10 --speed-limit 10000 --speed-time 30 -o "$part" "$url" 2>&1); then
  echo "fetch: cannot download $url: ${msg#curl: }" >&2
  exit 1
fi
got=$(sha256sum "$part" | cut -d' ' -f1)
if [ "$got" != "$sha" ]; then
  echo "fetch: $url has SHA-256 $got, expected $sha; not kept" >&2
  exit 1
fi
chmod 644 "$part"
mv -f "$part" "$dest"
