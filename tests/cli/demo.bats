#!/usr/bin/env bats
# make demo's data: the order it looks in (tests/demo.sh --data) and the download
# (tests/fetch.sh), against a real HTTP server on this machine.
load ../lib

setup() {
  cd "$BATS_TEST_TMPDIR"
  mkdir www
  head -c 100000 "$ENWIK8_1M" >www/enwik8.zip
  SHA=$(sha256sum www/enwik8.zip | cut -d' ' -f1)
}

teardown() { [ -z "${SERVER:-}" ] || kill "$SERVER" 2>/dev/null || true; }

# serve: a python3 http.server on a free port over www/; sets PORT and SERVER.
serve() {
  PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$PY" -m http.server --bind 127.0.0.1 --directory www "$PORT" >/dev/null 2>&1 &
  SERVER=$!
  for _ in $(seq 50); do curl -fs -o /dev/null "http://127.0.0.1:$PORT/" && return; sleep 0.1; done
  return 1
}

@test "fetch: downloads a file whose SHA-256 matches, whole, nothing else left" {
  serve
  run "$REPO/tests/fetch.sh" "http://127.0.0.1:$PORT/enwik8.zip" "$SHA" out/enwik8.zip
  [ "$status" -eq 0 ]
  cmp www/enwik8.zip out/enwik8.zip
  [ "$(ls out)" = enwik8.zip ]
}

@test "fetch: a SHA-256 mismatch keeps nothing and says both digests" {
  serve
  run "$REPO/tests/fetch.sh" "http://127.0.0.1:$PORT/enwik8.zip" "${SHA/?/0}0" out/enwik8.zip
  [ "$status" -eq 1 ]
  [[ "$output" == *"has SHA-256 $SHA, expected"*"not kept"* ]]
  [ ! -e out ]
}

@test "fetch: a missing file (404) or an unreachable host fails in one line, keeps nothing" {
  serve
  run "$REPO/tests/fetch.sh" "http://127.0.0.1:$PORT/nothing.zip" "$SHA" out/enwik8.zip
  [ "$status" -eq 1 ]
  [[ "$output" == "fetch: cannot download http://127.0.0.1:$PORT/nothing.zip: "*404* ]]
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
  SECONDS=0
  run "$REPO/tests/fetch.sh" "http://127.0.0.1:$PORT/enwik8.zip" "$SHA" out/enwik8.zip
  [ "$status" -eq 1 ]
  [ "${#lines[@]}" -eq 1 ]
  [ "$SECONDS" -lt 10 ]
  [ ! -e out ]
  run "$REPO/tests/fetch.sh" only-two args
  [ "$status" -eq 2 ]
}

@test "demo data: ENWIK8 first; a bad ENWIK8 is an error" {
  echo x >mine
  run env ENWIK8=mine "$REPO/tests/demo.sh" --data
  [ "$status" -eq 0 ]
  [ "$output" = "$PWD/mine" ]
  run env ENWIK8=missing "$REPO/tests/demo.sh" --data
  [ "$status" -eq 2 ]
  [[ "$output" == *"error: ENWIK8=missing is not a readable file"* ]]
}

@test "demo data: a failed download (wrong file at ENWIK8_URL) falls back to the shared prefix, writes no data/enwik8.zip" {
  [ ! -e "$REPO/data/enwik8.zip" ] || skip "this checkout has data/enwik8.zip (it comes first)"
  serve
  run env ENWIK8_URL="http://127.0.0.1:$PORT/enwik8.zip" "$REPO/tests/demo.sh" --data
  [ "$status" -eq 0 ]
  [ "${lines[-1]}" = "$(realpath "$ENWIK8_4M")" ]
  [[ "$output" == *"downloading http://127.0.0.1:$PORT/enwik8.zip"*"not kept"*"no download"* ]]
  [ ! -e "$REPO/data/enwik8.zip" ]
  run env DOWNLOAD=0 ENWIK8_URL="http://127.0.0.1:$PORT/enwik8.zip" "$REPO/tests/demo.sh" --data
  [ "$status" -eq 0 ]
  [ "$output" = "$(realpath "$ENWIK8_4M")" ]
}

@test "demo data: nothing anywhere: a message saying how to get enwik8, exit 2, nothing written" {
  mkdir -p lone/repo/tests
  cp "$REPO/tests/demo.sh" "$REPO/tests/fetch.sh" lone/repo/tests/   # a checkout with no ../shared beside it
  serve
  run env ENWIK8_URL="http://127.0.0.1:$PORT/missing.zip" lone/repo/tests/demo.sh --data
  [ "$status" -eq 2 ]
  [[ "$output" == *"error: no enwik8 here. Get it with one of:"*"ENWIK8=/path/to/enwik8 make demo"*"ENWIK8_URL=a mirror"* ]]
  [ ! -e lone/repo/data ]
}
