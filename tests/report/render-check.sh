#!/usr/bin/env bash
# Check that an lsst-report page renders on its own, in headless Chromium, and take a
# screenshot to look at. Not part of `make test` (Chromium is a large optional
# package: apt-get install chromium).
#
#   tests/report/render-check.sh REPORT_HTML [SCREENSHOT_PNG] [WIDTHxHEIGHT]
#
# 1. The page must be self-contained: no reference to anything outside it (no
#    src=/href= to another file or URL, no CSS url() or @import, no <script>).
# 2. Chromium renders it with every network request failing (proxy to a closed
#    port, no name resolution), and the DOM it built must hold as many <svg> plots
#    as the file (so each inlined SVG parsed).
# 3. A full-page screenshot (default report.png beside the page, 1200x6000) to view.
set -euo pipefail
html=${1:?usage: render-check.sh REPORT_HTML [SCREENSHOT_PNG] [WIDTHxHEIGHT]}
png=${2:-$(dirname "$html")/report.png}
size=${3:-1200x6000}
chrome=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$chrome" ] || { echo "render-check: no chromium (apt-get install chromium)" >&2; exit 2; }
[ -f "$html" ] || { echo "render-check: $html: no such file" >&2; exit 2; }

# 1. self-contained
if grep -Eniq '<script|<link|<iframe|<img|<object|<embed|@import|url\((["'\'' ]*)(https?:|//|file:|data:)|src=|href="[^#]|href='\''[^#]' "$html"; then
  echo "render-check: $html refers to something outside itself:" >&2
  grep -Eno '<script|<link|<iframe|<img|<object|<embed|@import|url\([^)]*\)|src=[^ >]*|href="[^#][^"]*"|href='\''[^#][^'\'']*'\''' "$html" | grep -v "url(#" | head >&2 || true
  exit 1
fi
want=$(grep -o '<svg' "$html" | wc -l)

# 2. render with the network off; count the <svg> elements in the DOM Chromium built
flags=(--headless=new --no-sandbox --disable-gpu --hide-scrollbars --no-first-run
       --proxy-server=127.0.0.1:9 --host-resolver-rules="MAP * ~NOTFOUND" --user-data-dir="$(mktemp -d)")
abs=$(cd "$(dirname "$html")" && pwd)/$(basename "$html")
got=$("$chrome" "${flags[@]}" --dump-dom "file://$abs" 2>/dev/null | grep -o '<svg' | wc -l)
if [ "$got" -ne "$want" ]; then
  echo "render-check: the page has $want <svg> plots, Chromium's DOM $got" >&2
  exit 1
fi

# 3. screenshot
"$chrome" "${flags[@]}" --window-size="${size/x/,}" --screenshot="$png" "file://$abs" >/dev/null 2>&1
[ -s "$png" ] || { echo "render-check: no screenshot written" >&2; exit 1; }
echo "render-check: $html: self-contained, $got plots rendered; screenshot $png"
