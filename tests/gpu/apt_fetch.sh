#!/usr/bin/env bash
# apt_fetch.sh DEST PKG...: downloads the .deb files of PKG... from Debian 12's non-free archive
# into DEST, with apt's lists and caches in a temporary folder: nothing of the system's is touched
# (nor needs root), nothing is installed. Used by nvdisasm.sh and old_toolkit.sh.
# Exit status 1 (and apt's last line on stderr) if the download fails.
set -euo pipefail
dest=$1; shift
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$dest"
echo "deb http://deb.debian.org/debian bookworm non-free" > "$tmp/sources.list"
apt=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o Debug::NoLocking=1)
apt-get "${apt[@]}" update -qq > "$tmp/log" 2>&1 &&
  (cd "$dest" && apt-get "${apt[@]}" download -qq "$@" >> "$tmp/log" 2>&1) || {
  echo "apt_fetch.sh: could not fetch $* from Debian non-free: $(grep -v unsandboxed "$tmp/log" | tail -1)" >&2
  exit 1; }
