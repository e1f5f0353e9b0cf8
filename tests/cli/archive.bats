#!/usr/bin/env bats
# lsst-archive: deterministic archives of a real run directory (2-rank lsst-run output
# and its report), MANIFEST.sha256 and provenance inside, --verify naming the first bad
# member, --extract refusing hostile archives (crafted here with python's tarfile),
# and the site archive command (--then / $LSST_SITE_ARCHIVE).
load ../lib

setup_file() {
  export DATA=$(prep_data)
  cd "$BATS_FILE_TMPDIR"
  write_config run.yaml "$DATA" out
  export RUN=$BATS_FILE_TMPDIR/runs/quickstart/20261126-101500-4f2a
  mpirun_n 2 "$BIN/lsst-run" --config run.yaml --set parallel.scheme=lss --set parallel.sequence=2 \
    --set train.eval_every=3 --set output.dir="$RUN/train/0" >train.log 2>&1 || { cat train.log; return 1; }
  "$BIN/lsst-report" "$RUN" >/dev/null
  mkdir -p "$RUN/prep/0"
  printf '#!/bin/sh\necho prep\n' >"$RUN/prep/0/job.sh"
  chmod 755 "$RUN/prep/0/job.sh"
}

setup() {
  cd "$BATS_TEST_TMPDIR"
  unset LSST_SITE_ARCHIVE
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# tarball NAME.tar.xz SPEC...: a tar.xz built by python's tarfile; SPEC is
# f:PATH:TEXT (file), d:PATH (directory), l:PATH:TARGET (symlink), h:PATH:TARGET (hard link).
tarball() {
  "$PY" - "$@" <<'PY'
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w:xz") as t:
    for spec in sys.argv[2:]:
        kind, path, *rest = spec.split(":", 2)
        ti = tarfile.TarInfo(path)
        if kind == "f":
            data = rest[0].encode(); ti.size = len(data); t.addfile(ti, io.BytesIO(data)); continue
        ti.type = {"d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE}[kind]
        if rest: ti.linkname = rest[0]
        t.addfile(ti)
PY
}

@test "archive: --help shows an example, --version the git commit" {
  run "$BIN/lsst-archive" --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"example:"* ]]
  [[ "$output" == *"--verify"* ]]
  [[ "$output" == *"{{archive}}"* ]]
  run "$BIN/lsst-archive" --version
  [ "$status" -eq 0 ]
  [[ "$output" == "lsst-archive "*"(git "* ]]
}

@test "archive: usage errors exit 2 with lsst-archive: error:" {
  run "$BIN/lsst-archive"
  [ "$status" -eq 2 ]
  [[ "$output" == "lsst-archive: error: no run directory given"* ]]
  run "$BIN/lsst-archive" nowhere
  [ "$status" -eq 2 ]
  [ "$output" = "lsst-archive: error: nowhere: no such directory" ]
  run "$BIN/lsst-archive" "$RUN" -o x.zip
  [ "$status" -eq 2 ]
  [[ "$output" == *"x.zip: unknown archive suffix"* ]]
  [ ! -e x.zip ]
  run "$BIN/lsst-archive" "$RUN" -o "$RUN/self.tar.zst"
  [ "$status" -eq 2 ]
  [[ "$output" == *"cannot be written inside the run directory"* ]]
  run "$BIN/lsst-archive" --verify
  [ "$status" -eq 2 ]
  run "$BIN/lsst-archive" --verify a b
  [ "$status" -eq 2 ]
  run "$BIN/lsst-archive" --extract only-one
  [ "$status" -eq 2 ]
  run "$BIN/lsst-archive" --verify missing.tar.zst
  [ "$status" -eq 2 ]
  [[ "$output" == *"missing.tar.zst: no such file"* ]]
  run "$BIN/lsst-archive" --frobnicate "$RUN"
  [ "$status" -eq 2 ]
}

@test "archive: same content, same bytes: again, after touching mtimes and modes, from a copy elsewhere" {
  run "$BIN/lsst-archive" "$RUN" -o a1.tar.zst
  [ "$status" -eq 0 ]
  [ "${lines[-1]}" = "a1.tar.zst" ]
  run "$BIN/lsst-archive" "$RUN" -o a2.tar.zst
  [ "$(sha a1.tar.zst)" = "$(sha a2.tar.zst)" ]
  mkdir -p elsewhere/deeper
  cp -r "$RUN" elsewhere/deeper/
  copy=elsewhere/deeper/$(basename "$RUN")
  find "$copy" -exec touch -h -d '2001-02-03 04:05:06' {} +
  chmod g+w "$copy/train/0/run.yaml"
  run "$BIN/lsst-archive" "$copy" -o a3.tar.zst
  [ "$status" -eq 0 ]
  [ "$(sha a1.tar.zst)" = "$(sha a3.tar.zst)" ]
  # and different content gives different bytes
  echo "changed" >>"$copy/train/0/log"
  run "$BIN/lsst-archive" "$copy" -o a4.tar.zst
  [ "$(sha a1.tar.zst)" != "$(sha a4.tar.zst)" ]
  # the default name is RUNDIR.tar.zst beside it
  run "$BIN/lsst-archive" "$copy/"
  [ "$status" -eq 0 ]
  [ "${lines[-1]}" = "$copy.tar.zst" ]
  [ -f "$copy.tar.zst" ]
}

@test "archive: sorted members, fixed owners, modes and mtimes, manifest last, generated provenance" {
  # The same archive uncompressed, for the standard tools (tar; zstd itself is not a dependency).
  run "$BIN/lsst-archive" "$RUN" -o a.tar
  [ "$status" -eq 0 ]
  run "$BIN/lsst-archive" "$RUN" -o a.tar.zst
  [ "$status" -eq 0 ]
  if command -v zstd >/dev/null; then zstd -qdc a.tar.zst | cmp - a.tar; fi
  name=$(basename "$RUN")
  tar -tvf a.tar >list
  # owners 0/0, mtime 1970-01-01 00:00 (UTC), modes 0644/0755 only
  [ -z "$(grep -v ' 0/0 ' list)" ]
  [ -z "$(TZ=UTC tar -tvf a.tar | grep -v ' 1970-01-01 00:00 ')" ]
  [ -z "$(awk '{print $1}' list | grep -Ev '^(drwxr-xr-x|-rw-r--r--|-rwxr-xr-x)$')" ]
  grep -q -- "-rwxr-xr-x .* $name/prep/0/job.sh$" list
  # order: the top directory, then every path sorted byte-wise, MANIFEST.sha256 last
  tar -tf a.tar >names
  [ "$(head -1 names)" = "$name/" ]
  [ "$(tail -1 names)" = "$name/MANIFEST.sha256" ]
  sed '$d' names | sed 's#/$##' >body
  LC_ALL=C sort -c body
  # provenance: generated (no provenance.yaml in the run directory): lsst version and git commit
  ver=$("$BIN/lsst-archive" --version | sed 's/^lsst-archive \([^ ]*\) .*/\1/')
  tar -xOf a.tar "$name/provenance.yaml" >prov
  grep -q "^lsst_version: $ver$" prov
  grep -Eq "^lsst_git: [0-9a-f]{7}" prov
  grep -q "^run_dir_name: $name$" prov
  # the manifest checks with the standard tool after a plain tar extraction
  mkdir x
  tar -xf a.tar -C x
  (cd "x/$name" && sha256sum --quiet -c MANIFEST.sha256)
  [ "$(wc -l <"x/$name/MANIFEST.sha256")" -eq "$(find "x/$name" -type f ! -name MANIFEST.sha256 | wc -l)" ]
  diff -r --exclude=MANIFEST.sha256 --exclude=provenance.yaml "$RUN" "x/$name"
  # the zstd archive holds the same members
  run "$BIN/lsst-archive" --extract a.tar.zst y
  [ "$status" -eq 0 ]
  diff -r "x/$name" "y/$name"
}

@test "archive: the run's own provenance.yaml is archived as is; .tar.xz and .tar by suffix" {
  cp -r "$RUN" run
  printf 'lsst: {version: 0.1.0, git: abc123}\nhost_hashes: {}\n' >run/provenance.yaml
  run "$BIN/lsst-archive" run -o p.tar.xz
  [ "$status" -eq 0 ]
  xz -t p.tar.xz
  [ "$(tar -xJOf p.tar.xz run/provenance.yaml)" = "$(cat run/provenance.yaml)" ]
  [ "$(tar -tJf p.tar.xz | grep -c provenance.yaml)" -eq 1 ]
  run "$BIN/lsst-archive" --verify p.tar.xz
  [ "$status" -eq 0 ]
  run "$BIN/lsst-archive" run -o p.tar
  [ "$status" -eq 0 ]
  tar -tf p.tar >/dev/null
  run "$BIN/lsst-archive" --verify p.tar
  [ "$status" -eq 0 ]
  [[ "$output" == "p.tar: OK: run/ with "* ]]
}

@test "archive: --verify passes a good archive and names the first bad member of a tampered one" {
  run "$BIN/lsst-archive" "$RUN" -o good.tar
  run "$BIN/lsst-archive" --verify good.tar
  echo "$output"
  [ "$status" -eq 0 ]
  [[ "$output" == *"every checksum matches MANIFEST.sha256"* ]]
  name=$(basename "$RUN")
  # Rewrite the tar with two members changed (same sizes), the manifest kept: the first one in archive order is named.
  "$PY" - good.tar bad.tar "$name/train/0/metrics/rank-00001.h5" "$name/train/0/run.yaml" <<'PY'
import io, sys, tarfile
src, dst, *victims = sys.argv[1:]
with tarfile.open(src) as i, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as o:
    for m in i.getmembers():
        data = i.extractfile(m).read() if m.isfile() else None
        if m.name in victims:
            data = bytes([data[0] ^ 1]) + data[1:]
        o.addfile(m, io.BytesIO(data) if data is not None else None)
PY
  run "$BIN/lsst-archive" --verify bad.tar
  echo "$output"
  [ "$status" -eq 1 ]
  [[ "$output" == "lsst-archive: error: bad.tar: member '$name/train/0/metrics/rank-00001.h5': checksum mismatch"* ]]
  # a member the manifest does not list, a listed file that is missing, no manifest at all
  h=$(printf p | sha256sum | cut -d' ' -f1)
  tarball extra.tar.xz "d:$name" "f:$name/provenance.yaml:p" "f:$name/extra:x" "f:$name/MANIFEST.sha256:$h  provenance.yaml"
  run "$BIN/lsst-archive" --verify extra.tar.xz
  [ "$status" -eq 1 ]
  [[ "$output" == *"member '$name/extra' is not in MANIFEST.sha256"* ]]
  tarball gone.tar.xz "d:$name" "f:$name/provenance.yaml:p" "f:$name/MANIFEST.sha256:$h  provenance.yaml
$h  metrics/rank-00000.h5
"
  run "$BIN/lsst-archive" --verify gone.tar.xz
  [ "$status" -eq 1 ]
  [[ "$output" == *"'$name/metrics/rank-00000.h5' is listed in MANIFEST.sha256 but is not in the archive"* ]]
  tarball plain.tar.xz "d:r" "f:r/a:x"
  run "$BIN/lsst-archive" --verify plain.tar.xz
  [ "$status" -eq 1 ]
  [[ "$output" == *"no r/MANIFEST.sha256: not an lsst archive"* ]]
}

@test "archive: --verify fails on a corrupted compressed file, naming where" {
  run "$BIN/lsst-archive" "$RUN" -o a.tar.zst
  size=$(stat -c %s a.tar.zst)
  "$PY" -c "
import sys; p = 'a.tar.zst'; b = bytearray(open(p, 'rb').read()); b[len(b) // 2] ^= 0xff; open(p, 'wb').write(b)"
  run "$BIN/lsst-archive" --verify a.tar.zst
  echo "$output"
  [ "$status" -eq 1 ]
  [[ "$output" == "lsst-archive: error: a.tar.zst: "* ]]
  [[ "$output" == *"member '"*"'"* || "$output" == *"damaged"* || "$output" == *"checksum mismatch"* ]]
  head -c $((size / 2)) a.tar.zst >cut.tar.zst
  run "$BIN/lsst-archive" --verify cut.tar.zst
  [ "$status" -eq 1 ]
}

@test "archive: --extract restores the run directory exactly, and never over an existing one" {
  run "$BIN/lsst-archive" "$RUN" -o a.tar.zst
  run "$BIN/lsst-archive" --extract a.tar.zst restored/here
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$output" = "restored/here/$(basename "$RUN")" ]
  diff -r --exclude=provenance.yaml --exclude=MANIFEST.sha256 "$RUN" "restored/here/$(basename "$RUN")"
  [ -x "restored/here/$(basename "$RUN")/prep/0/job.sh" ]
  [ -z "$(ls -A restored/here | grep -v "^$(basename "$RUN")$")" ]     # no temp directory left
  run "$BIN/lsst-archive" --extract a.tar.zst restored/here
  [ "$status" -eq 1 ]
  [[ "$output" == *"already exists: not overwriting it"* ]]
  # an absolute target directory and one written with '..' work too
  mkdir -p sub
  run "$BIN/lsst-archive" --extract a.tar.zst "$PWD/sub/../abs"
  [ "$status" -eq 0 ]
  [ -d "abs/$(basename "$RUN")/train/0/metrics" ]
}

@test "archive: --extract refuses absolute paths, '..', and links leaving the directory; writes nothing" {
  mkdir jail
  bad() { # bad NAME EXPECTED-MESSAGE SPEC...
    local name=$1 msg=$2; shift 2
    tarball "$name.tar.xz" "$@"
    run "$BIN/lsst-archive" --extract "$name.tar.xz" jail/out
    echo "$name: $output"
    [ "$status" -eq 1 ] && [[ "$output" == *"$msg"* ]] || return 1
    [ ! -e jail/out ]
    [ ! -e "$BATS_TEST_TMPDIR/pwned" ]
    [ ! -e jail/pwned ]
    [ ! -e /tmp/pwned-lsst ]
  }
  bad abs "absolute path" "f:$BATS_TEST_TMPDIR/pwned:x"
  bad dotdot "'..' in the path" "d:run" "f:run/../../pwned:x"
  bad dotdot2 "'..' in the path" "f:../pwned:x"
  bad symabs "leaves the directory" "d:run" "l:run/l:/tmp" "f:run/x:x"
  bad symup "leaves the directory" "d:run" "l:run/l:../../pwned"
  bad through "beneath the symbolic link" "d:run" "l:run/l:." "f:run/l/x:x"
  bad chain "goes through the symbolic link run/s" "d:run" "l:run/s:." "l:run/t:s/../.."
  bad hardabs "absolute path" "d:run" "h:run/h:/etc/passwd"
  bad hardup "'..' in the path" "d:run" "h:run/h:../pwned"
  bad hardnone "does not name an earlier file" "d:run" "h:run/h:run/nothing"
  bad two "outside the top directory" "d:run" "f:run/a:x" "f:other/b:y"
}

@test "archive: symbolic links inside the run are kept; links leaving it are left out with a warning" {
  cp -r "$RUN" run
  ln -s metrics/rank-00000.h5 run/train/0/first-rank.h5
  ln -s /etc/passwd run/outside
  ln -s ../../elsewhere run/train/up
  run "$BIN/lsst-archive" run -o l.tar.zst
  echo "$output"
  [ "$status" -eq 0 ]
  [[ "$output" == *"lsst-archive: warning: run/outside: not archived: symbolic link to /etc/passwd"* ]]
  [[ "$output" == *"lsst-archive: warning: run/train/up: not archived: symbolic link to ../../elsewhere leaves the directory"* ]]
  run "$BIN/lsst-archive" --extract l.tar.zst x
  [ "$status" -eq 0 ]
  [ "$(readlink x/run/train/0/first-rank.h5)" = "metrics/rank-00000.h5" ]
  cmp x/run/train/0/first-rank.h5 run/train/0/metrics/rank-00000.h5
  [ ! -e x/run/outside ]
  [ ! -L x/run/outside ]
}

@test "archive: --then runs the site command with {{archive}} quoted; \$LSST_SITE_ARCHIVE is the default" {
  mkdir -p "project dir"
  run "$BIN/lsst-archive" "$RUN" -o "my run.tar.zst" --then 'cp {{archive}} "project dir"/ && echo {{archive_name}} >"project dir"/name'
  echo "$output"
  [ "$status" -eq 0 ]
  [ "${lines[-1]}" = "my run.tar.zst" ]
  cmp "my run.tar.zst" "project dir/my run.tar.zst"
  [ "$(cat "project dir/name")" = "my run.tar.zst" ]
  # what a batch job does: lsst-submit exports the site profile's archive: command
  LSST_SITE_ARCHIVE='echo "$LSST_ARCHIVE" >site.txt; echo {{run_dir}} >>site.txt' run "$BIN/lsst-archive" "$RUN" -o s.tar.zst
  [ "$status" -eq 0 ]
  [ "$(sed -n 1p site.txt)" = "$PWD/s.tar.zst" ]
  [ "$(sed -n 2p site.txt)" = "$RUN" ]
  LSST_SITE_ARCHIVE='echo ran >nothen.txt' run "$BIN/lsst-archive" "$RUN" -o n.tar.zst --no-then
  [ "$status" -eq 0 ]
  [ ! -e nothen.txt ]
  # a failing command: exit 1, the archive stays
  run "$BIN/lsst-archive" "$RUN" -o f.tar.zst --then 'exit 3'
  [ "$status" -eq 1 ]
  [[ "$output" == *"the archive command failed (exit 3)"* ]]
  [ -f f.tar.zst ]
  run "$BIN/lsst-archive" "$RUN" -o u.tar.zst --then 'hsi put {{archvie}}'
  [ "$status" -eq 2 ]
  [[ "$output" == *"unknown placeholder {{archvie}}"* ]]
  [ ! -e u.tar.zst ]
  # an unclosed reference is refused before writing, too
  run "$BIN/lsst-archive" "$RUN" -o c.tar.zst --then 'hsi put {{archive'
  [ "$status" -eq 2 ]
  [[ "$output" == *"unclosed '{{'"* ]]
  [ ! -e c.tar.zst ]
}
