#!/usr/bin/env bats
# lsst-prep: exact shards, manifest, vocab, splits, verify, atomic output, and
# every bad-input case (one-line error, exit status per ARCHITECTURE §7, nothing left).

load prep_helpers

setup() {
  [ -x "$PREP" ] || skip "no $PREP (build first)"
  [ -f "$IN1M" ] || skip "no shared data at $DATA"
  T=$BATS_TEST_TMPDIR
}

teardown() {
  if [ -n "${MNT:-}" ]; then umount "$MNT" 2>/dev/null || true; fi
  if [ -n "${PUBLIC:-}" ]; then rm -rf "$PUBLIC"; fi
}

# ---- help, version, usage ----

@test "--help shows usage, options and a real example; --version" {
  run "$PREP" --help
  [ "$status" -eq 0 ]
  [[ $output == *"usage: lsst-prep [options] INPUT OUTDIR"* ]]
  [[ $output == *"--verify OUTDIR"* && $output == *"--shard-size"* && $output == *"--expect-sha256"* ]]
  [[ $output == *"lsst-prep enwik8.zip data/enwik8"* ]]
  run "$PREP" --version
  [ "$status" -eq 0 ]
  [[ $output =~ ^lsst-prep\ [0-9]+\.[0-9]+\.[0-9]+\ \(git\ .+\)$ ]]
}

@test "usage errors exit 2: unknown option, wrong argument count, bad option values" {
  run "$PREP" --bogus "$IN1M" "$T/o"
  [ "$status" -eq 2 ]
  [[ $output == *"Try 'lsst-prep --help'"* ]]
  run "$PREP" "$IN1M"
  [ "$status" -eq 2 ]
  [[ $output == *"expected INPUT and OUTDIR"* ]]
  run "$PREP" --vocab bpe "$IN1M" "$T/o"
  expect_failure 2 "$T/o" "--vocab bpe" "raw or compact"
  run "$PREP" --shard-size 12Q "$IN1M" "$T/o"
  expect_failure 2 "$T/o" "--shard-size 12Q"
  run "$PREP" --shard-size 0 "$IN1M" "$T/o"
  expect_failure 2 "$T/o" "--shard-size 0"
  run "$PREP" --expect-sha256 abc "$IN1M" "$T/o"
  expect_failure 2 "$T/o" "64 hex digits"
  run "$PREP" --verify "$T/o" --force
  [ "$status" -eq 2 ]
}

# ---- exactness ----

@test "raw 1 MiB: shards rebuild the input byte for byte; manifest numbers as documented" {
  run "$PREP" "$IN1M" "$T/o"
  [ "$status" -eq 0 ]
  [[ $output == *"$T/o: 1048576 tokens (vocab raw, 256): train $T1M in 1 shard, valid $V1M in 1, test $V1M in 1"* ]]
  concat_shards "$T/o" "$T/cat.bin"
  cmp "$T/cat.bin" "$IN1M"
  sha=$(sha256sum "$IN1M" | cut -d' ' -f1)
  py '
m = yaml.safe_load(open(sys.argv[1] + "/manifest.yaml"))
assert m["format"] == "lsst-shards" and m["format_version"] == 1
assert m["source"] == {"name": "enwik8-head-1MiB", "size": 1048576, "sha256": sys.argv[2], "recognized": "none"}, m["source"]
assert m["vocab"] == {"kind": "raw", "size": 256}
s = m["splits"]
assert (s["train"]["offset"], s["train"]["tokens"]) == (0, 943720)
assert (s["valid"]["offset"], s["valid"]["tokens"]) == (943720, 52428)
assert (s["test"]["offset"], s["test"]["tokens"]) == (996148, 52428)
for name in s:
    for sh in s[name]["shards"]:
        assert sh["sha256"] == hashlib.sha256(open(sys.argv[1] + "/" + sh["file"], "rb").read()).hexdigest()
' "$T/o" "$sha"
  # Nothing but the manifest and the shards.
  [ "$(ls -A "$T/o" | tr '\n' ' ')" = "manifest.yaml test-00000.h5 train-00000.h5 valid-00000.h5 " ]
  [ -z "$(ls -A "$T" | grep lsst-prep)" ]
}

@test "shards: /tokens is chunked uint8 with fletcher32; attributes split, shard, offset, vocab_size" {
  "$PREP" -q "$IN1M" "$T/o"
  py '
f = h5py.File(sys.argv[1], "r")
t = f["tokens"]
assert t.dtype == np.uint8 and t.shape == (52428,)
assert t.chunks is not None and t.fletcher32
for obj in (t, f):
    assert obj.attrs["split"] == "valid" and int(obj.attrs["shard"]) == 0
    assert int(obj.attrs["offset"]) == 943720 and int(obj.attrs["vocab_size"]) == 256
assert "vocab" not in f
' "$T/o/valid-00000.h5"
  # h5dump (the HDF5 tools) reads them too.
  run h5dump -p -H "$T/o/train-00000.h5"
  [ "$status" -eq 0 ]
  [[ $output == *"H5T_STD_U8LE"* && $output == *"CHUNKED ( 943720 )"* && $output == *"FLETCHER32"* ]]
  run h5dump -d /tokens -s 0 -c 12 "$T/o/train-00000.h5"
  [ "$status" -eq 0 ]
  # enwik8 starts with "<mediawiki x": 60 109 101 100 105 97 119 105 107 105 32 120
  [[ $output == *"60, 109, 101, 100, 105, 97, 119, 105, 107, 105, 32, 120"* ]]
}

@test "chunk checksums: partial edge chunks, odd chunk sizes, constant bytes all read back through HDF5's fletcher32" {
  # 2,500,001 bytes: train 2,375,001 = two full 1 MiB chunks and an odd edge chunk
  head -c 2500001 "$DATA/enwik8-head-4MB" >"$T/text"
  "$PREP" -q "$T/text" "$T/a"
  concat_shards "$T/a" "$T/cat.bin"          # h5py reads every chunk: HDF5 checks each fletcher32
  cmp "$T/cat.bin" "$T/text"
  # all 0xff, odd chunk size (chunk = shard = 100001 tokens), compact vocab of 1
  head -c 1500001 /dev/zero | tr '\0' '\377' >"$T/ff"
  "$PREP" -q --shard-size 100001 "$T/ff" "$T/b"
  concat_shards "$T/b" "$T/cat2.bin"
  cmp "$T/cat2.bin" "$T/ff"
  "$PREP" -q --vocab compact --shard-size 100001 "$T/ff" "$T/c"
  py 'f = h5py.File(sys.argv[1], "r"); assert (f["tokens"][...] == 0).all() and list(f["vocab"][...]) == [255]' "$T/c/train-00000.h5"
  for d in a b c; do "$PREP" -q --verify "$T/$d"; done
  run h5dump -d /tokens -s 1048570 -c 4 "$T/a/train-00000.h5"   # the HDF5 tools agree
  [ "$status" -eq 0 ]
}

@test "zip: the member is streamed; same tokens as the raw file; sha256 is of the unzipped content" {
  (cd "$(dirname "$IN1M")" && zip -q -X "$T/in.zip" "$(basename "$IN1M")")
  run "$PREP" "$T/in.zip" "$T/z"
  [ "$status" -eq 0 ]
  concat_shards "$T/z" "$T/cat.bin"
  cmp "$T/cat.bin" "$IN1M"
  sha=$(sha256sum "$IN1M" | cut -d' ' -f1)
  py '
m = yaml.safe_load(open(sys.argv[1] + "/manifest.yaml"))
assert m["source"]["name"] == "in.zip:enwik8-head-1MiB", m["source"]
assert m["source"]["size"] == 1048576 and m["source"]["sha256"] == sys.argv[2]
' "$T/z" "$sha"
  # --expect-sha256 of a zip means the content (documented), so this passes:
  run "$PREP" -q --expect-sha256 "$sha" "$T/in.zip" "$T/z2"
  [ "$status" -eq 0 ]
  "$PREP" -q --verify "$T/z2"
}

@test "--shard-size: several shards per split, contiguous offsets, exact concatenation; K is 1000, KiB 1024" {
  run "$PREP" -q --shard-size 256KiB "$IN1M" "$T/o"
  [ "$status" -eq 0 ]
  py '
m = yaml.safe_load(open(sys.argv[1] + "/manifest.yaml"))
tr = m["splits"]["train"]["shards"]
assert [s["tokens"] for s in tr] == [262144, 262144, 262144, 943720 - 3 * 262144], tr
assert [s["offset"] for s in tr] == [0, 262144, 524288, 786432]
assert [s["file"] for s in tr] == ["train-%05d.h5" % i for i in range(4)]
assert [s["tokens"] for s in m["splits"]["valid"]["shards"]] == [52428]
' "$T/o"
  concat_shards "$T/o" "$T/cat.bin"
  cmp "$T/cat.bin" "$IN1M"
  run "$PREP" -q --shard-size 20K "$IN1M" "$T/k"
  [ "$status" -eq 0 ]
  py '
m = yaml.safe_load(open(sys.argv[1] + "/manifest.yaml"))
v = m["splits"]["valid"]["shards"]
assert [s["tokens"] for s in v] == [20000, 20000, 12428], v
assert [s["offset"] for s in v] == [943720, 963720, 983720]
' "$T/k"
  concat_shards "$T/k" "$T/cat2.bin"
  cmp "$T/cat2.bin" "$IN1M"
}

@test "--vocab compact: dense ids in byte order, /vocab in every shard, round trip gives the input" {
  run "$PREP" -q --vocab compact --shard-size 300000 "$IN1M" "$T/c"
  [ "$status" -eq 0 ]
  py '
d = sys.argv[1]
m = yaml.safe_load(open(d + "/manifest.yaml"))
data = np.fromfile(sys.argv[2], dtype=np.uint8)
present = np.unique(data)
assert m["vocab"] == {"kind": "compact", "size": len(present)} and len(present) == 195, m["vocab"]
for name in m["splits"]:
    for sh in m["splits"][name]["shards"]:
        f = h5py.File(d + "/" + sh["file"], "r")
        assert (f["vocab"][...] == present).all()
        assert int(f["tokens"].attrs["vocab_size"]) == 195
        t = f["tokens"][...]
        assert t.max() < 195
        # ids follow byte order: id = rank of the byte among those present
        assert (t == np.searchsorted(present, data[sh["offset"]:sh["offset"] + sh["tokens"]])).all()
' "$T/c" "$IN1M"
  concat_shards "$T/c" "$T/cat.bin"
  cmp "$T/cat.bin" "$IN1M"
  "$PREP" -q --verify "$T/c"
}

@test "splits: 90/5/5 rounding (valid, test = floor 5%), --split percentages and bytes" {
  head -c 39 "$IN1M" >"$T/in39"
  "$PREP" -q "$T/in39" "$T/a"
  py '
m = yaml.safe_load(open(sys.argv[1] + "/manifest.yaml"))["splits"]
assert [m[s]["tokens"] for s in ("train", "valid", "test")] == [37, 1, 1], m
' "$T/a"
  "$PREP" -q --split 80%,12.5%,7.5% "$IN1M" "$T/b"
  py '
m = yaml.safe_load(open(sys.argv[1] + "/manifest.yaml"))["splits"]
v, t = 1048576 * 125 // 1000, 1048576 * 75 // 1000
assert [m[s]["tokens"] for s in ("train", "valid", "test")] == [1048576 - v - t, v, t], m
' "$T/b"
  "$PREP" -q --split 1000000,40000,8576 "$IN1M" "$T/c"
  py '
m = yaml.safe_load(open(sys.argv[1] + "/manifest.yaml"))["splits"]
assert [(m[s]["offset"], m[s]["tokens"]) for s in ("train", "valid", "test")] == [(0, 1000000), (1000000, 40000), (1040000, 8576)]
' "$T/c"
  concat_shards "$T/c" "$T/cat.bin"
  cmp "$T/cat.bin" "$IN1M"
}

@test "split errors: sums, mixed units, empty parts, input too small (exit 2, nothing left)" {
  run "$PREP" --split 90%,5%,4% "$IN1M" "$T/o"
  expect_failure 2 "$T/o" "sum to 99%"
  run "$PREP" --split 90%,5%,50000 "$IN1M" "$T/o"
  expect_failure 2 "$T/o" "give all three parts as percentages or all three as byte counts"
  run "$PREP" --split 100%,0%,0% "$IN1M" "$T/o"
  expect_failure 2 "$T/o" "at least 1 byte"
  run "$PREP" --split 90,5 "$IN1M" "$T/o"
  expect_failure 2 "$T/o" "three parts"
  run "$PREP" --split 1000000,40000,8575 "$IN1M" "$T/o"
  expect_failure 2 "$T/o" "$IN1M" "sums to 1048575 bytes, but the input has 1048576 bytes"
  # The minimum for 90/5/5 is 20 bytes (floor(20 * 5%) = 1); 19 is refused.
  head -c 19 "$IN1M" >"$T/in19"
  run "$PREP" "$T/in19" "$T/o"
  expect_failure 2 "$T/o" "$T/in19" "19 bytes is too small" "at least 20 bytes"
  head -c 20 "$IN1M" >"$T/in20"
  run "$PREP" -q "$T/in20" "$T/o20"
  [ "$status" -eq 0 ]
  "$PREP" -q --verify "$T/o20"
}

@test "a 100,000,000-byte file that is not enwik8 gets 90M/5M/5M and recognized: none" {
  truncate -s 100000000 "$T/zeros"
  run "$PREP" --shard-size 64MiB "$T/zeros" "$T/o"
  [ "$status" -eq 0 ]
  [[ $output == *"has enwik8's size but not its SHA-256"* ]]
  py '
m = yaml.safe_load(open(sys.argv[1] + "/manifest.yaml"))
s = m["splits"]
assert [(s[k]["offset"], s[k]["tokens"]) for k in ("train", "valid", "test")] == [(0, 90000000), (90000000, 5000000), (95000000, 5000000)]
assert m["source"]["recognized"] == "none"
' "$T/o"
  rm -rf "$T/o" "$T/zeros"
}

@test "recognition: note on stderr and recognized: in the manifest (identity of enwik8 swapped in by a test hook)" {
  # The real files are not on these machines; LSST_PREP_TEST_ENWIK8[_ZIP]=SIZE:SHA256
  # make the 1 MiB prefix and its zip play enwik8 and enwik8.zip.
  sha=$(sha256sum "$IN1M" | cut -d' ' -f1)
  (cd "$(dirname "$IN1M")" && zip -q "$T/in.zip" "$(basename "$IN1M")")
  zsha=$(sha256sum "$T/in.zip" | cut -d' ' -f1); zsize=$(stat -c %s "$T/in.zip")
  run env LSST_PREP_TEST_ENWIK8="$N1M:$sha" "$PREP" "$IN1M" "$T/r"
  [ "$status" -eq 0 ]
  [[ $output == *"lsst-prep: note: $IN1M is the real enwik8 ($N1M bytes, SHA-256 ${sha:0:12}...)"* ]]
  grep -q "^  recognized: enwik8$" "$T/r/manifest.yaml"
  run env LSST_PREP_TEST_ENWIK8="$N1M:$sha" LSST_PREP_TEST_ENWIK8_ZIP="$zsize:$zsha" "$PREP" "$T/in.zip" "$T/z"
  [ "$status" -eq 0 ]
  [[ $output == *"lsst-prep: note: $T/in.zip is the enwik8.zip distribution"* ]]
  grep -q "^  recognized: enwik8.zip$" "$T/z/manifest.yaml"
  # the zip's content alone is enough for "enwik8" when the archive is another one
  run env LSST_PREP_TEST_ENWIK8="$N1M:$sha" "$PREP" -q "$T/in.zip" "$T/z2"
  [ "$status" -eq 0 ] && [ -z "$output" ]       # --quiet: no note
  grep -q "^  recognized: enwik8$" "$T/z2/manifest.yaml"
  # without the hook the same bytes are not enwik8
  grep -q "^  recognized: none$" <("$PREP" -q "$IN1M" "$T/n" && cat "$T/n/manifest.yaml")
}

# ---- --expect-sha256 ----

@test "--expect-sha256: match passes (any case), mismatch is refused with exit 2 and nothing left" {
  sha=$(sha256sum "$IN1M" | cut -d' ' -f1)
  run "$PREP" -q --expect-sha256 "${sha^^}" "$IN1M" "$T/ok"
  [ "$status" -eq 0 ]
  wrong=$(printf '%064d' 0)
  run "$PREP" --expect-sha256 "$wrong" "$IN1M" "$T/o"
  expect_failure 2 "$T/o" "$IN1M" "SHA-256 mismatch" "expected $wrong, got $sha"
  # also when a first pass (compact vocab) finds the hash before any shard is written
  run "$PREP" --vocab compact --expect-sha256 "$wrong" "$IN1M" "$T/o"
  expect_failure 2 "$T/o" "SHA-256 mismatch"
}

# ---- output directory ----

@test "existing OUTDIR is refused without --force; --force replaces it completely" {
  "$PREP" -q --shard-size 300000 "$IN1M" "$T/o"
  [ -f "$T/o/train-00003.h5" ]
  run "$PREP" "$IN1M" "$T/o"
  [ "$status" -eq 2 ]
  [[ $output == "lsst-prep: error: $T/o: already exists; use --force to replace it" ]]
  [ -f "$T/o/train-00003.h5" ]                  # untouched
  run "$PREP" -q --force "$IN1M" "$T/o/"        # trailing slash is the same directory
  [ "$status" -eq 0 ]
  [ ! -e "$T/o/train-00003.h5" ]                # the old shards are gone
  [ "$(ls -A "$T" | grep -c lsst-prep)" -eq 0 ]
  "$PREP" -q --verify "$T/o"
}

@test "--force without renameat2 (rename aside, rename in, remove old); an interrupted one is restored" {
  "$PREP" -q --split 80%,10%,10% "$IN1M" "$T/o"
  run env LSST_TEST_NO_RENAMEAT2=1 "$PREP" -q --force "$IN1M" "$T/o"
  [ "$status" -eq 0 ]
  grep -q "tokens: 943720" "$T/o/manifest.yaml"     # the new 90% one
  [ "$(ls -A "$T" | grep -c lsst-prep)" -eq 0 ]      # the old one, set aside, is gone
  "$PREP" -q --verify "$T/o"
  LSST_TEST_NO_RENAMEAT2=1 "$PREP" -q "$IN1M" "$T/fresh"   # plain rename() when OUTDIR is new
  "$PREP" -q --verify "$T/fresh"
  rm -rf "$T/fresh"
  # A run killed between its two renames leaves OUTDIR missing and the old output
  # aside under a dead PID: the next run puts it back (and then refuses: it exists).
  sh -c 'exit 0' & dead=$!; wait "$dead"
  mv "$T/o" "$T/.o.lsst-prep-old.$HOST.$dead"
  run "$PREP" "$IN1M" "$T/o"
  [ "$status" -eq 2 ]
  [[ $output == *"note: restored $T/o from $T/.o.lsst-prep-old.$HOST.$dead"* ]]
  [[ $output == *"error: $T/o: already exists; use --force"* ]]
  "$PREP" -q --verify "$T/o"
  [ "$(ls -A "$T" | grep -c lsst-prep)" -eq 0 ]
}

@test "--force refuses a directory that is not lsst-prep output, and a regular file" {
  mkdir "$T/home"; echo precious >"$T/home/notes.txt"
  run "$PREP" --force "$IN1M" "$T/home"
  [ "$status" -eq 2 ]
  [[ $output == *"not an lsst-prep output"* ]]
  [ -f "$T/home/notes.txt" ]
  echo x >"$T/file"
  run "$PREP" --force "$IN1M" "$T/file"
  [ "$status" -eq 2 ]
  [[ $output == *"exists and is not a directory"* ]]
  [ "$(cat "$T/file")" = x ]
}

@test "output path unwritable: parent missing, parent is a file (exit 2, nothing created)" {
  run "$PREP" "$IN1M" "$T/missing/o"
  expect_failure 2 "$T/missing/o" "$T/missing/o" "parent directory $T/missing" "No such file or directory"
  [ ! -e "$T/missing" ]
  echo x >"$T/afile"
  run "$PREP" "$IN1M" "$T/afile/o"
  [ "$status" -eq 2 ]
  [[ $output == "lsst-prep: error: $T/afile/o: cannot create it: $T/afile is not a directory" ]]
}

# ---- bad input ----

@test "missing input file" {
  run "$PREP" "$T/nope.bin" "$T/o"
  expect_failure 2 "$T/o" "$T/nope.bin" "No such file or directory"
}

@test "input that is a directory" {
  run "$PREP" "$T" "$T/o"
  expect_failure 2 "$T/o" "$T" "is a directory"
}

@test "unreadable input (chmod 000, run as an unprivileged user via setpriv)" {
  command -v setpriv >/dev/null || skip "no setpriv"
  [ "$(id -u)" -eq 0 ] || skip "needs root to switch to nobody"
  # nobody must reach the file and the binary: a world-traversable dir outside BATS_TEST_TMPDIR
  PUBLIC=$(mktemp -d /tmp/lsst-prep-public.XXXXXX)
  chmod 755 "$PUBLIC"
  head -c 1000 "$IN1M" >"$PUBLIC/secret.bin"
  chmod 000 "$PUBLIC/secret.bin"
  chmod 1777 "$PUBLIC"
  run setpriv --reuid=65534 --regid=65534 --clear-groups "$PREP" "$PUBLIC/secret.bin" "$PUBLIC/o"
  expect_failure 2 "$PUBLIC/o" "$PUBLIC/secret.bin" "Permission denied"
}

@test "parent directory not writable (run as an unprivileged user via setpriv)" {
  command -v setpriv >/dev/null || skip "no setpriv"
  [ "$(id -u)" -eq 0 ] || skip "needs root to switch to nobody"
  PUBLIC=$(mktemp -d /tmp/lsst-prep-public.XXXXXX)
  chmod 755 "$PUBLIC"                           # root's, not writable for nobody
  head -c 1000 "$IN1M" >"$PUBLIC/in.bin"; chmod 644 "$PUBLIC/in.bin"
  run setpriv --reuid=65534 --regid=65534 --clear-groups "$PREP" "$PUBLIC/in.bin" "$PUBLIC/o"
  expect_failure 2 "$PUBLIC/o" "$PUBLIC/o" "parent directory $PUBLIC" "Permission denied"
}

@test "empty input file, empty zip member" {
  : >"$T/empty.bin"
  run "$PREP" "$T/empty.bin" "$T/o"
  expect_failure 2 "$T/o" "$T/empty.bin" "empty (0 bytes)"
  : >"$T/e"
  (cd "$T" && zip -q em.zip e)
  run "$PREP" "$T/em.zip" "$T/o"
  expect_failure 2 "$T/o" "$T/em.zip" "empty (0 bytes)"
}

@test "truncated zip" {
  (cd "$(dirname "$IN1M")" && zip -q "$T/in.zip" "$(basename "$IN1M")")
  head -c 200000 "$T/in.zip" >"$T/trunc.zip"
  run "$PREP" "$T/trunc.zip" "$T/o"
  expect_failure 2 "$T/o" "$T/trunc.zip" "corrupt or truncated zip"
}

@test "corrupt zip: damaged deflate data, a CRC mismatch, a non-zip named .zip" {
  (cd "$(dirname "$IN1M")" && zip -q "$T/in.zip" "$(basename "$IN1M")")
  cp "$T/in.zip" "$T/bad.zip"
  printf '\xde\xad\xbe\xef\xde\xad\xbe\xef' | dd of="$T/bad.zip" bs=1 seek=150000 conv=notrunc 2>/dev/null
  run "$PREP" "$T/bad.zip" "$T/o"
  expect_failure 2 "$T/o" "$T/bad.zip" "corrupt or truncated zip" "member 'enwik8-head-1MiB'"
  # a stored (uncompressed) member with one byte changed: only the CRC can tell
  (cd "$(dirname "$IN1M")" && zip -q -0 "$T/stored.zip" "$(basename "$IN1M")")
  printf 'X' | dd of="$T/stored.zip" bs=1 seek=500000 conv=notrunc 2>/dev/null
  run "$PREP" "$T/stored.zip" "$T/o"
  expect_failure 2 "$T/o" "$T/stored.zip" "bad CRC"
  echo "just text" >"$T/fake.zip"
  run "$PREP" "$T/fake.zip" "$T/o"
  expect_failure 2 "$T/o" "$T/fake.zip" "corrupt or truncated zip"
}

@test "zip with zero members" {
  # the 22-byte end-of-central-directory record alone is a valid, empty zip
  printf 'PK\005\006\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0' >"$T/none.zip"
  py 'import zipfile; assert zipfile.ZipFile(sys.argv[1]).namelist() == []' "$T/none.zip"
  run "$PREP" "$T/none.zip" "$T/o"
  expect_failure 2 "$T/o" "$T/none.zip" "no members"
}

@test "zip with several members" {
  head -c 100 "$IN1M" >"$T/a.txt"; head -c 200 "$IN1M" >"$T/b.txt"
  (cd "$T" && zip -q two.zip a.txt b.txt)
  run "$PREP" "$T/two.zip" "$T/o"
  expect_failure 2 "$T/o" "$T/two.zip" "2 members ('a.txt', 'b.txt')" "exactly one"
}

@test "disk full: file-size limit (ulimit -f; lsst-prep ignores SIGXFSZ, gets EFBIG) -> exit 1, nothing left" {
  # 512 KiB limit, the 944 KB train shard cannot be written; no `trap '' XFSZ` here on purpose
  run bash -c 'ulimit -f 512; exec "$0" "$1" "$2"' "$PREP" "$IN1M" "$T/o"
  expect_failure 1 "$T/o" "$T/o/train-00000.h5" "File too large"
}

@test "disk full: a tiny tmpfs (ENOSPC) at several points of the run -> exit 1, nothing left" {
  MNT=$T/mnt; mkdir "$MNT"
  mount -t tmpfs -o size=512k tmpfs "$MNT" 2>/dev/null || { MNT=; skip "cannot mount tmpfs here"; }
  run "$PREP" "$IN1M" "$MNT/o"
  expect_failure 1 "$MNT/o" "$MNT/o/train-00000.h5" "No space left on device"
  [ -z "$(ls -A "$MNT")" ]
  umount "$MNT"
  # room for the train shard but not for everything: fails later, still cleans up
  mount -t tmpfs -o size=1000k tmpfs "$MNT"
  run "$PREP" "$IN1M" "$MNT/o"
  expect_failure 1 "$MNT/o" "No space left on device"
  [ -z "$(ls -A "$MNT")" ]
}

# ---- interruption ----

@test "SIGINT and SIGTERM: the temp dir is removed, no OUTDIR, killed by the signal" {
  for sig in INT TERM; do
    LSST_PREP_TEST_STALL=1 "$PREP" -q --shard-size 300000 "$IN1M" "$T/o" 2>"$T/err" &
    pid=$!
    wait_for_tmp "$T" o "$pid"
    kill -"$sig" "$pid"
    rc=0; wait "$pid" || rc=$?
    [ "$rc" -eq $((128 + $(kill -l "$sig"))) ]
    grep -q "lsst-prep: error: interrupted by SIG$sig" "$T/err"
    no_leftovers "$T/o"
  done
}

@test "SIGKILL: no OUTDIR; the next run removes the dead run's temp dir, not a live process's or another host's" {
  LSST_PREP_TEST_STALL=1 "$PREP" -q --shard-size 300000 "$IN1M" "$T/o" &
  pid=$!
  wait_for_tmp "$T" o "$pid"
  kill -KILL "$pid"
  wait "$pid" || true
  [ ! -e "$T/o" ]
  [ -d "$T/.o.lsst-prep-tmp.$HOST.$pid" ]
  mkdir "$T/.o.lsst-prep-tmp.$HOST.1"           # PID 1 is alive: not ours to remove
  mkdir "$T/.o.lsst-prep-tmp.other-node.$pid"   # another host's: its PIDs mean nothing here
  run "$PREP" "$IN1M" "$T/o"
  [ "$status" -eq 0 ]
  [[ $output == *"removed $T/.o.lsst-prep-tmp.$HOST.$pid (left by process $pid"* ]]
  [ ! -e "$T/.o.lsst-prep-tmp.$HOST.$pid" ]
  [ -d "$T/.o.lsst-prep-tmp.$HOST.1" ]
  [ -d "$T/.o.lsst-prep-tmp.other-node.$pid" ]
  "$PREP" -q --verify "$T/o"
}

@test "SIGKILL during --force leaves the old OUTDIR complete" {
  "$PREP" -q --split 80%,10%,10% "$IN1M" "$T/o"
  LSST_PREP_TEST_STALL=1 "$PREP" -q --force --shard-size 300000 "$IN1M" "$T/o" &
  pid=$!
  wait_for_tmp "$T" o "$pid"
  kill -KILL "$pid"
  wait "$pid" || true
  run "$PREP" --verify "$T/o"
  [ "$status" -eq 0 ]
  grep -q "tokens: 838862" "$T/o/manifest.yaml"  # still the 80% one: 1048576 - 2 * 104857
}

# ---- progress and quiet ----

@test "progress bar only on a terminal; --quiet prints nothing" {
  command -v script >/dev/null || skip "no script(1) for a pseudo-terminal"
  run script -qefc "'$PREP' '$IN1M' '$T/tty'" /dev/null
  [ "$status" -eq 0 ]
  [[ $output == *"lsst-prep: write ["*"100%"*"MB/s ETA"* ]]
  # not a terminal: no bar, just the summary on stdout
  "$PREP" "$IN1M" "$T/pipe" 2>"$T/err" >"$T/out"
  [ ! -s "$T/err" ]
  grep -q "^$T/pipe: 1048576 tokens" "$T/out"
  run script -qefc "'$PREP' --quiet '$IN1M' '$T/q'" /dev/null
  [ "$status" -eq 0 ]
  [ -z "$output" ]
}

# ---- --verify ----

@test "--verify: OK on a good directory, exit 0 with one line" {
  "$PREP" -q --shard-size 300000 "$IN1M" "$T/o"
  run "$PREP" --verify "$T/o"
  [ "$status" -eq 0 ]
  [ "${#lines[@]}" -eq 1 ]
  [[ $output == "$T/o: OK: 6 shards, 1048576 tokens"* ]]
}

@test "--verify: a flipped byte in a data chunk is caught by fletcher32 and names the file (exit 1)" {
  "$PREP" -q --shard-size 300000 "$IN1M" "$T/o"
  off=$(py 'f = h5py.File(sys.argv[1], "r"); print(f["tokens"].id.get_chunk_info(0).byte_offset + 1000)' "$T/o/train-00002.h5")
  printf '\x00' | dd of="$T/o/train-00002.h5" bs=1 seek="$off" conv=notrunc 2>/dev/null
  run "$PREP" --verify "$T/o"
  [ "$status" -eq 1 ]
  [ "${#lines[@]}" -eq 1 ]
  [[ $output == "lsst-prep: error: $T/o/train-00002.h5: /tokens [0, 300000): "* ]]
  [[ $output == *"letcher32"* ]] || [[ $output == *"checksum"* ]]
}

@test "--verify: sha256 mismatch, missing shard, wrong token count, damaged manifest (exit 1, names the file)" {
  "$PREP" -q --shard-size 300000 "$IN1M" "$T/o"
  cp -a "$T/o" "$T/clean"
  # a manifest hash that does not match the file
  good=$(sha256sum "$T/o/valid-00000.h5" | cut -d' ' -f1)
  sed -i "s/$good/$(printf '%064d' 0)/" "$T/o/manifest.yaml"
  run "$PREP" --verify "$T/o"
  [ "$status" -eq 1 ]
  [[ $output == "lsst-prep: error: $T/o/valid-00000.h5: SHA-256 mismatch"* ]]
  # a missing shard
  rm -rf "$T/o"; cp -a "$T/clean" "$T/o"; rm "$T/o/test-00000.h5"
  run "$PREP" --verify "$T/o"
  [ "$status" -eq 1 ]
  [[ $output == "lsst-prep: error: $T/o/test-00000.h5: No such file or directory"* ]]
  # a shard swapped for another one (right format, wrong content and attributes)
  rm -rf "$T/o"; cp -a "$T/clean" "$T/o"; cp "$T/o/train-00000.h5" "$T/o/train-00001.h5"
  run "$PREP" --verify "$T/o"
  [ "$status" -eq 1 ]
  [[ $output == "lsst-prep: error: $T/o/train-00001.h5: "*"attribute shard is not 1"* ]]
  # a truncated shard
  rm -rf "$T/o"; cp -a "$T/clean" "$T/o"; truncate -s 5000 "$T/o/train-00003.h5"
  run "$PREP" --verify "$T/o"
  [ "$status" -eq 1 ]
  [[ $output == "lsst-prep: error: $T/o/train-00003.h5: "* ]]
  # a manifest that is not valid: position in the message
  rm -rf "$T/o"; cp -a "$T/clean" "$T/o"; sed -i 's/^  size: 256$/  size: many/' "$T/o/manifest.yaml"
  run "$PREP" --verify "$T/o"
  [ "$status" -eq 1 ]
  [[ $output =~ ^lsst-prep:\ error:\ .*/o/manifest.yaml:[0-9]+:[0-9]+:\ vocab.size: ]]
  # not a directory / missing
  run "$PREP" --verify "$T/nothing"
  [ "$status" -eq 2 ]
  [[ $output == *"$T/nothing"* ]]
  run "$PREP" -q --verify "$T/clean"
  [ "$status" -eq 0 ]
  [ -z "$output" ]
}
