// data: reads through the manifest and HDF5 shards equal the source bytes (across
// shard boundaries, from cached handles), out-of-range and broken inputs are one-line
// errors naming the file, sampling is a deterministic, unbiased pure function, and
// evaluation windows tile the split. The shards are written here with the HDF5 C API
// in lsst-prep's format (ARCHITECTURE §3) and small (4 KiB chunks, 64 KiB shards);
// when lsst-prep is built (LSST_BIN or ./bin), its output is read back as well.
#include "check.h"
#include "common.h"
#include "data.h"
#include "manifest.h"

#include <errno.h>
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { SRC_SIZE = 300000, SHARD = 65536, CHUNK = 4096 };
static unsigned char src[SRC_SIZE];   // the "input file": every byte value occurs
static const uint64_t split_off[3] = {0, 270000, 285000}, split_len[3] = {270000, 15000, 15000};
static const char *split_names[3] = {"train", "valid", "test"};

static uint64_t lcg_state = 42;
static uint64_t lcg(void) { return (lcg_state = lcg_state * 6364136223846793005ULL + 1442695040888963407ULL) >> 17; }

// A scalar attribute on obj (plain HDF5 API: the test writes shards independently of lsst).
static int put_attr(hid_t obj, const char *name, hid_t filetype, hid_t memtype, const void *value) {
    hid_t space = H5Screate(H5S_SCALAR), attr = -1;
    int rc = space >= 0 && (attr = H5Acreate2(obj, name, filetype, space, H5P_DEFAULT, H5P_DEFAULT)) >= 0 &&
                     H5Awrite(attr, memtype, value) >= 0
                 ? 0
                 : -1;
    if (attr >= 0) H5Aclose(attr);
    if (space >= 0) H5Sclose(space);
    return rc;
}

// One shard as lsst-prep writes it: /tokens uint8, chunked, fletcher32; attributes
// split, shard, offset (in the source), vocab_size.
static int write_shard(const char *path, const char *split, int shard, uint64_t offset, const unsigned char *tokens,
                       hsize_t n, int vocab_size) {
    hid_t file = -1, space = -1, dcpl = -1, dset = -1, str = -1;
    hsize_t chunk = n < CHUNK ? n : CHUNK;
    int rc = -1;
    if ((file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)) < 0) goto done;
    if ((space = H5Screate_simple(1, &n, NULL)) < 0 || (dcpl = H5Pcreate(H5P_DATASET_CREATE)) < 0) goto done;
    if (H5Pset_chunk(dcpl, 1, &chunk) < 0 || H5Pset_fletcher32(dcpl) < 0) goto done;
    if ((dset = H5Dcreate2(file, "/tokens", H5T_STD_U8LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT)) < 0) goto done;
    if (H5Dwrite(dset, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, tokens) < 0) goto done;
    if ((str = H5Tcopy(H5T_C_S1)) < 0 || H5Tset_size(str, strlen(split)) < 0) goto done;
    if (put_attr(dset, "split", str, str, split) < 0 ||
        put_attr(dset, "shard", H5T_STD_I32LE, H5T_NATIVE_INT, &shard) < 0 ||
        put_attr(dset, "offset", H5T_STD_U64LE, H5T_NATIVE_UINT64, &offset) < 0 ||
        put_attr(dset, "vocab_size", H5T_STD_I32LE, H5T_NATIVE_INT, &vocab_size) < 0)
        goto done;
    rc = 0;
done:
    if (str >= 0) H5Tclose(str);
    if (dset >= 0) H5Dclose(dset);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    if (file >= 0) H5Fclose(file);
    return rc;
}

// DIR with shards of at most SHARD tokens per split and its manifest.
static int make_dataset(const char *dir, const char *vocab_kind, int vocab_size) {
    Manifest m = {0};
    m.source_name = xstrdup("random.bin");
    m.source_size = SRC_SIZE;
    memset(m.source_sha256, 'a', 64);
    m.recognized = xstrdup("none");
    m.vocab_kind = xstrdup(vocab_kind);
    m.vocab_size = vocab_size;
    m.nsplits = 3;
    int rc = 0;
    for (int i = 0; i < 3; i++) {
        ManifestSplit *sp = &m.splits[i];
        sp->name = xstrdup(split_names[i]);
        sp->offset = split_off[i];
        sp->tokens = split_len[i];
        sp->nshards = (int)((split_len[i] + SHARD - 1) / SHARD);
        sp->shards = xcalloc((size_t)sp->nshards, sizeof *sp->shards);
        for (int j = 0; j < sp->nshards; j++) {
            ManifestShard *sh = &sp->shards[j];
            sh->file = xasprintf("%s-%05d.h5", split_names[i], j);
            sh->offset = split_off[i] + (uint64_t)j * SHARD;
            sh->tokens = split_off[i] + split_len[i] - sh->offset < SHARD ? split_off[i] + split_len[i] - sh->offset
                                                                           : SHARD;
            char *path = path_join(dir, sh->file);
            if (write_shard(path, split_names[i], j, sh->offset, src + sh->offset, sh->tokens, vocab_size) != 0 ||
                sha256_file(path, sh->sha256, NULL) != 0)
                rc = -1;
            free(path);
        }
    }
    if (manifest_write(&m, dir) != 0) rc = -1;
    manifest_free(&m);
    return rc;
}

static char *make_dir(const char *what) {
    char *tmpl = xasprintf("%s/lsst-test-data-%s.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", what);
    if (!mkdtemp(tmpl)) { free(tmpl); return NULL; }
    return tmpl;
}

// data_read(start, n) against the source bytes of split `si`.
static int read_matches(DataSplit *d, int si, uint64_t start, int n) {
    int *out = xmalloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    char err[512] = "";
    int ok = data_read(d, start, n, out, err, sizeof err) == 0;
    for (int i = 0; ok && i < n; i++) ok = out[i] == src[split_off[si] + start + (uint64_t)i];
    if (!ok) printf("#   read [%llu, +%d) of %s: %s\n", (unsigned long long)start, n, split_names[si], err);
    free(out);
    return ok;
}

static void test_reads(const char *dir) {
    char err[512] = "";
    DataSplit *d = data_open(dir, "train", err, sizeof err);
    CHECK(d != NULL, "data_open train (%s)", err);
    if (!d) return;
    CHECK(data_tokens(d) == 270000 && data_vocab_size(d) == 256, "train: 270000 tokens, vocab 256 (got %llu, %d)",
          (unsigned long long)data_tokens(d), data_vocab_size(d));
    CHECK(read_matches(d, 0, 0, 100) && read_matches(d, 0, 1000, 4097), "reads inside the first shard equal the bytes");
    CHECK(read_matches(d, 0, SHARD - 100, 200), "a read across the boundary of shards 0 and 1");
    CHECK(read_matches(d, 0, SHARD - 1, 2) && read_matches(d, 0, SHARD, 1) && read_matches(d, 0, SHARD - 1, 1),
          "reads of the tokens on either side of a boundary");
    CHECK(read_matches(d, 0, 60000, 140000), "a read spanning four shards");
    CHECK(read_matches(d, 0, 0, 270000), "the whole split in one read (5 shards, last one short)");
    CHECK(read_matches(d, 0, 269999, 1) && read_matches(d, 0, 270000, 0), "the last token; an empty read at the end");
    int ok = 1;
    for (int i = 0; i < 300 && ok; i++) {
        int n = 1 + (int)(lcg() % 9000);
        ok = read_matches(d, 0, lcg() % (270000 - (uint64_t)n + 1), n);
    }
    CHECK(ok, "300 random ranges equal the source bytes");

    // Out of range: nothing read, one line naming the directory, split and range.
    int out[16];
    int rc = data_read(d, 269995, 10, out, err, sizeof err);
    CHECK(rc == -1 && strstr(err, dir) && strstr(err, "[269995, 270005)") && strstr(err, "outside split train") &&
              !strchr(err, '\n'),
          "a read past the end is an error (%s)", err);
    CHECK(data_read(d, 300000, 1, out, err, sizeof err) == -1 && data_read(d, 0, -1, out, err, sizeof err) == -1,
          "a start past the end and a negative count are errors");

    // Handles stay open: after the first read, the file can go and shard 0 still reads.
    char *shard0 = path_join(dir, "train-00000.h5"), *moved = path_join(dir, "moved.h5");
    CHECK(rename(shard0, moved) == 0 && read_matches(d, 0, 5, 500), "shard files stay open between reads");
    CHECK(rename(moved, shard0) == 0, "(shard put back)");
    free(shard0);
    free(moved);
    data_close(d);

    err[0] = 0;
    d = data_open(dir, "valid", err, sizeof err);
    CHECK(d && data_tokens(d) == 15000 && read_matches(d, 1, 0, 15000) && read_matches(d, 1, 14000, 1000),
          "valid split: its own offset in the source (%s)", err);
    data_close(d);
    d = data_open(dir, "test", err, sizeof err);
    CHECK(d && read_matches(d, 2, 123, 4097), "test split reads (%s)", err);
    data_close(d);
}

static void test_errors(const char *dir) {
    char err[512] = "";
    DataSplit *d = data_open("/nonexistent/lsst-data", "train", err, sizeof err);
    CHECK(!d && strstr(err, "/nonexistent/lsst-data/manifest.yaml") && !strchr(err, '\n'),
          "a missing directory names its manifest (%s)", err);
    d = data_open(dir, "training", err, sizeof err);
    CHECK(!d && strstr(err, "no split 'training'"), "an unknown split is an error (%s)", err);

    char *bad = make_dir("bad");
    char *manifest = path_join(bad, "manifest.yaml");
    write_file_atomic(manifest, "format: lsst-shards\nformat_version: [1\n", 38);
    d = data_open(bad, "train", err, sizeof err);
    CHECK(!d && strstr(err, manifest) && !strchr(err, '\n'), "a corrupt manifest is one line naming it (%s)", err);
    write_file_atomic(manifest, "format: something-else\n", 23);
    d = data_open(bad, "train", err, sizeof err);
    CHECK(!d && strstr(err, manifest) && strstr(err, "lsst-shards"), "a manifest of another format (%s)", err);
    unlink(manifest);
    free(manifest);

    // A listed shard that is missing fails at open, not at the first read of it.
    CHECK(make_dataset(bad, "raw", 256) == 0, "(second dataset written)");
    char *shard = path_join(bad, "train-00002.h5"), *moved = path_join(bad, "elsewhere");
    rename(shard, moved);
    d = data_open(bad, "train", err, sizeof err);
    CHECK(!d && strstr(err, shard) && strstr(err, "No such file"), "a missing shard fails data_open (%s)", err);
    rename(moved, shard);

    // A shard that is not HDF5, and one whose bytes were damaged (fletcher32).
    char *junk = path_join(bad, "train-00001.h5");
    size_t len = 0;
    char *bytes = read_file(junk, &len);
    write_file_atomic(junk, "not hdf5", 8);
    d = data_open(bad, "train", err, sizeof err);
    int out[300];
    CHECK(d && data_read(d, 0, 10, out, err, sizeof err) == 0, "shard 0 reads when shard 1 is broken");
    int rc = d ? data_read(d, SHARD + 10, 10, out, err, sizeof err) : 0;
    CHECK(rc == -1 && strstr(err, junk) && strstr(err, "cannot open shard") && !strchr(err, '\n'),
          "a shard that is not HDF5: one line naming it (%s)", err);
    data_close(d);
    char *at = bytes ? memmem(bytes, len, src + SHARD + 5000, 64) : NULL;   // raw chunks hold the bytes verbatim
    CHECK(at != NULL, "(the shard's bytes found in its file)");
    if (at) {
        at[10] ^= 0x5a;
        write_file_atomic(junk, bytes, len);
        d = data_open(bad, "train", err, sizeof err);
        rc = d ? data_read(d, SHARD + 5000 - 100, 300, out, err, sizeof err) : 0;
        CHECK(rc == -1 && strstr(err, junk) && strstr(err, "cannot read tokens"),
              "a damaged chunk fails its checksum (%s)", err);
        data_close(d);
    }
    free(bytes);
    free(junk);

    // A manifest that disagrees with the shard, and ids outside a compact vocabulary.
    Manifest m;
    CHECK(manifest_load(&m, bad, err, sizeof err) == 0, "(manifest reloads)");
    m.splits[0].shards[3].tokens -= 1;   // still contiguous: shard 4 starts one token earlier
    m.splits[0].shards[4].offset -= 1;
    m.splits[0].shards[4].tokens += 1;
    manifest_write(&m, bad);
    d = data_open(bad, "train", err, sizeof err);
    rc = d ? data_read(d, 3 * SHARD + 1, 1, out, err, sizeof err) : 0;
    CHECK(rc == -1 && strstr(err, "train-00003.h5") && strstr(err, "65536 tokens, but manifest.yaml lists 65535"),
          "a shard longer than listed is an error (%s)", err);
    rc = d ? data_read(d, 4 * SHARD + 1, 1, out, err, sizeof err) : 0;
    CHECK(rc == -1 && strstr(err, "train-00004.h5"), "a shard shorter than listed is an error (%s)", err);
    data_close(d);
    free(m.vocab_kind);
    m.vocab_kind = xstrdup("compact");
    m.vocab_size = 200;
    manifest_write(&m, bad);
    manifest_free(&m);
    d = data_open(bad, "valid", err, sizeof err);
    int *all = xmalloc(15000 * sizeof(int));
    rc = d ? data_read(d, 0, 15000, all, err, sizeof err) : 0;
    free(all);
    CHECK(rc == -1 && strstr(err, "valid-00000.h5") && strstr(err, "outside the vocabulary (size 200)"),
          "a token id >= vocab_size is an error (%s)", err);
    data_close(d);

    free(shard);
    free(moved);
    rm_rf(bad);
    free(bad);
}

static void test_sampling(void) {
    const uint64_t N = 1000;
    const int L = 100;   // starts 0 .. 899
    int ok = 1, lo = 0, hi = 0;
    for (int64_t step = 1; step <= 100; step++)
        for (int64_t i = 0; i < 100; i++) {
            uint64_t s = data_sample_start(7, step, i, N, L);
            ok &= s <= N - L - 1 && s == data_sample_start(7, step, i, N, L);
            lo |= s == 0;
            hi |= s == N - L - 1;
        }
    CHECK(ok, "10000 starts are in [0, ntokens - seq_len - 1] and reproducible");
    CHECK(lo && hi, "both ends of the range occur");
    int same_step = 0, same_index = 0, same_seed = 0;
    for (int64_t k = 1; k <= 1000; k++) {
        uint64_t big = 1ULL << 40;
        same_step += data_sample_start(1, k, 0, big, 4096) == data_sample_start(1, k + 1, 0, big, 4096);
        same_index += data_sample_start(1, 5, k, big, 4096) == data_sample_start(1, 5, k + 1, big, 4096);
        same_seed +=
            data_sample_start((uint64_t)k, 5, 0, big, 4096) == data_sample_start((uint64_t)k + 1, 5, 0, big, 4096);
    }
    CHECK(same_step == 0 && same_index == 0 && same_seed == 0,
          "neighbouring steps, indices and seeds give different starts (%d, %d, %d equal)", same_step, same_index,
          same_seed);
    // Uniform: 10 buckets of 90 starts, 200000 draws, each within 3% of 20000 (sd ~134).
    long buckets[10] = {0};
    for (int64_t i = 0; i < 200000; i++) buckets[data_sample_start(3, 1 + i / 100, i % 100, N, L) / 90]++;
    ok = 1;
    for (int b = 0; b < 10; b++) ok &= labs(buckets[b] - 20000) < 600;
    CHECK(ok, "starts are uniform over 10 buckets (%ld .. %ld)", buckets[0], buckets[9]);
    // A range just over 2^63: half of the raw draws are rejected; results stay in range
    // and both halves occur (a modulo would put 2/3 of them in the lower half).
    uint64_t range = (1ULL << 63) + 1, low = 0;
    ok = 1;
    for (int64_t i = 0; i < 3000; i++) {
        uint64_t s = data_sample_start(9, 1, i, range + 10, 10);
        ok &= s < range;
        low += s < range / 2;
    }
    CHECK(ok && low > 1350 && low < 1650, "a 2^63+1 range: in range, no bias to the lower half (%llu of 3000)",
          (unsigned long long)low);
    CHECK(data_sample_start(5, 3, 2, 101, 100) == 0 && data_sample_start(5, 3, 2, 100, 100) == 0,
          "one possible start (ntokens = seq_len + 1) gives 0; no full window gives 0");
    int seen[2] = {0, 0};
    for (int64_t i = 0; i < 64; i++) seen[data_sample_start(5, 1, i, 102, 100)]++;
    CHECK(seen[0] > 10 && seen[1] > 10, "two possible starts both occur (%d, %d)", seen[0], seen[1]);
    // Which text a step trains on is part of the contract (resume, grids, versions).
    // (Values from an independent Python transcription of the algorithm in data.c.)
    CHECK(data_sample_start(1, 1, 0, 90000000, 4096) == 70800691 &&
              data_sample_start(1234, 500, 7, 90000000, 4096) == 22624079,
          "pinned values: the sampler has not changed (%llu, %llu)",
          (unsigned long long)data_sample_start(1, 1, 0, 90000000, 4096),
          (unsigned long long)data_sample_start(1234, 500, 7, 90000000, 4096));
}

static void test_eval(void) {
    const uint64_t N = 10000;
    const int L = 128;   // (N - 1) / L = 78 windows
    CHECK(data_eval_start(0, N, L) == 0 && data_eval_start(1, N, L) == 128 && data_eval_start(77, N, L) == 77 * 128,
          "window k starts at k * seq_len");
    CHECK(data_eval_start(78, N, L) == 0 && data_eval_start(79, N, L) == 128 && data_eval_start(-1, N, L) == 77 * 128,
          "windows wrap after the last one that fits");
    int ok = 1;
    for (int64_t k = -300; k < 300; k++) ok &= data_eval_start(k, N, L) + L + 1 <= N;
    CHECK(ok, "every window of seq_len + 1 tokens fits in the split");
    CHECK(data_eval_start(3, 129, 128) == 0 && data_eval_start(0, 257, 128) == 0 && data_eval_start(1, 257, 128) == 128,
          "exact fits: 129 tokens hold one window of 128, 257 hold two");
}

// lsst-prep's own output (when built) reads back as the bytes of its input.
static void test_lsst_prep(void) {
    const char *bin = getenv("LSST_BIN") ? getenv("LSST_BIN") : "./bin";
    char *prep = path_join(bin, "lsst-prep");
    if (access(prep, X_OK) != 0) {
        printf("ok %d - lsst-prep output reads back # SKIP %s not built\n", ++check_n, prep);
        free(prep);
        return;
    }
    char *dir = make_dir("prep"), *input = path_join(dir, "input.bin"), *out = path_join(dir, "out");
    write_file_atomic(input, src, SRC_SIZE);
    char *cmd = xasprintf("'%s' --quiet --shard-size 65536 '%s' '%s'", prep, input, out);
    int rc = system(cmd);
    CHECK(rc == 0, "lsst-prep --shard-size 65536 runs (%s: %d)", cmd, rc);
    char err[512] = "";
    DataSplit *d = rc == 0 ? data_open(out, "train", err, sizeof err) : NULL;
    CHECK(d && data_tokens(d) == 270000 && data_vocab_size(d) == 256, "its train split: 270000 tokens, vocab 256 (%s)",
          err);
    CHECK(d && read_matches(d, 0, 0, 270000) && read_matches(d, 0, SHARD - 7, 14),
          "its train split reads back as the input bytes, across shards");
    data_close(d);
    d = rc == 0 ? data_open(out, "test", err, sizeof err) : NULL;
    CHECK(d && read_matches(d, 2, 0, 15000), "its test split too (%s)", err);
    data_close(d);
    rm_rf(dir);
    free(cmd);
    free(dir);
    free(input);
    free(out);
    free(prep);
}

int main(void) {
    for (int i = 0; i < SRC_SIZE; i++) src[i] = (unsigned char)(lcg() >> 8);
    for (int i = 0; i < 256; i++) src[1000 + i] = (unsigned char)i;   // every value, for sure
    char *dir = make_dir("ok");
    CHECK(dir && make_dataset(dir, "raw", 256) == 0, "a dataset of 64 KiB shards is written (%s)", dir);
    if (dir) {
        test_reads(dir);
        test_errors(dir);
        rm_rf(dir);
        free(dir);
    }
    test_sampling();
    test_eval();
    test_lsst_prep();
    return check_done();
}
