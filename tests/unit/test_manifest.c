// manifest: write + load round trip, lookup, and one-line errors with
// DIR/manifest.yaml:LINE:COL for wrong types, missing keys and inconsistent numbers.
#include "check.h"
#include "common.h"
#include "manifest.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *SHA_A = "2b49720ec4d78c3c9fabaee6e4179a5e997302b3a70029f30f2d582218c024a8";
static const char *SHA_B = "547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc";

// A manifest of 1000 bytes: train [0,900) in two shards, valid [900,950), test [950,1000).
static void fill(Manifest *m) {
    memset(m, 0, sizeof *m);
    m->source_name = xstrdup("my data: v1.bin");  // needs quoting in YAML
    m->source_size = 1000;
    memcpy(m->source_sha256, SHA_A, 65);
    m->recognized = xstrdup("none");
    m->vocab_kind = xstrdup("compact");
    m->vocab_size = 97;
    m->nsplits = 3;
    static const char *names[3] = {"train", "valid", "test"};
    static const uint64_t offs[3] = {0, 900, 950}, toks[3] = {900, 50, 50};
    for (int i = 0; i < 3; i++) {
        ManifestSplit *sp = &m->splits[i];
        sp->name = xstrdup(names[i]);
        sp->offset = offs[i];
        sp->tokens = toks[i];
        sp->nshards = i == 0 ? 2 : 1;
        sp->shards = xcalloc((size_t)sp->nshards, sizeof *sp->shards);
        uint64_t off = offs[i];
        for (int j = 0; j < sp->nshards; j++) {
            ManifestShard *sh = &sp->shards[j];
            sh->file = xasprintf("%s-%05d.h5", names[i], j);
            sh->offset = off;
            sh->tokens = sp->nshards == 2 ? (j == 0 ? 512 : 388) : toks[i];
            off += sh->tokens;
            memcpy(sh->sha256, j ? SHA_A : SHA_B, 65);
        }
    }
}

static char *make_dir(void) {
    char tmpl[] = "/tmp/lsst-test-manifest.XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? xstrdup(d) : NULL;
}

static void test_roundtrip(const char *dir) {
    Manifest w, r;
    fill(&w);
    CHECK(manifest_write(&w, dir) == 0, "manifest_write succeeds (%s)", strerror(errno));
    char err[512] = "";
    int rc = manifest_load(&r, dir, err, sizeof err);
    CHECK(rc == 0, "manifest_load reads back what was written (%s)", err);
    if (rc != 0) { manifest_free(&w); return; }
    CHECK(!strcmp(r.dir, dir), "dir is remembered");
    CHECK(!strcmp(r.source_name, w.source_name), "source name with ': ' survives quoting (%s)", r.source_name);
    CHECK(r.source_size == 1000 && !strcmp(r.source_sha256, SHA_A), "source size and sha256");
    CHECK(!strcmp(r.recognized, "none") && !strcmp(r.vocab_kind, "compact") && r.vocab_size == 97, "recognized, vocab");
    CHECK(r.nsplits == 3, "three splits");
    int same = 1;
    for (int i = 0; i < 3; i++) {
        same &= !strcmp(r.splits[i].name, w.splits[i].name) && r.splits[i].offset == w.splits[i].offset &&
                r.splits[i].tokens == w.splits[i].tokens && r.splits[i].nshards == w.splits[i].nshards;
        for (int j = 0; same && j < w.splits[i].nshards; j++) {
            const ManifestShard *a = &w.splits[i].shards[j], *b = &r.splits[i].shards[j];
            same &= !strcmp(a->file, b->file) && a->offset == b->offset && a->tokens == b->tokens &&
                    !strcmp(a->sha256, b->sha256);
        }
    }
    CHECK(same, "every split and shard field round-trips");
    const ManifestSplit *v = manifest_split(&r, "valid");
    CHECK(v && v->offset == 900 && v->tokens == 50, "manifest_split finds valid");
    CHECK(manifest_split(&r, "dev") == NULL, "manifest_split of an unknown name is NULL");
    errno = 0;
    CHECK(manifest_write(&w, "/nonexistent-lsst-dir") == -1 && errno == ENOENT,
          "manifest_write into a missing directory fails with errno ENOENT (%s)", strerror(errno));
    char *tmp = xasprintf("%s/manifest.yaml.tmp.%ld", dir, (long)getpid());
    CHECK(!path_exists(tmp), "no temp file left beside manifest.yaml");
    free(tmp);
    manifest_free(&r);
    CHECK(r.dir == NULL && r.nsplits == 0, "manifest_free clears the struct");
    manifest_free(&w);
}

// Write `text` as DIR/manifest.yaml, load it, expect failure with `want` in the message.
static void expect_error(const char *dir, const char *text, const char *want, const char *what) {
    char *path = path_join(dir, "manifest.yaml");
    FILE *f = fopen(path, "w");
    if (f) { fputs(text, f); fclose(f); }
    Manifest m;
    char err[512] = "";
    int rc = manifest_load(&m, dir, err, sizeof err);
    CHECK(rc == -1 && strstr(err, want) && !strchr(err, '\n'), "%s: one line containing '%s' (got '%s')", what,
          want, err);
    if (rc == 0) manifest_free(&m);
    CHECK(m.dir == NULL && m.source_name == NULL, "%s: nothing left allocated in the struct", what);
    free(path);
}

static const char *GOOD =
    "format: lsst-shards\n"                                                                        // 1
    "format_version: 1\n"                                                                          // 2
    "source: {name: x, size: 10, sha256: %s, recognized: none}\n"                                  // 3
    "vocab: {kind: raw, size: 256}\n"                                                              // 4
    "splits:\n"                                                                                    // 5
    "  train: {offset: 0, tokens: 8, shards: [{file: train-00000.h5, offset: 0, tokens: 8, sha256: %s}]}\n"
    "  valid: {offset: 8, tokens: 1, shards: [{file: valid-00000.h5, offset: 8, tokens: 1, sha256: %s}]}\n"
    "  test: {offset: 9, tokens: 1, shards: [{file: test-00000.h5, offset: 9, tokens: 1, sha256: %s}]}\n";

static char *good(void) { return xasprintf(GOOD, SHA_A, SHA_A, SHA_A, SHA_A); }

// good() with the first occurrence of `from` replaced by `to`.
static char *edit(const char *from, const char *to) {
    char *g = good();
    char *p = strstr(g, from);
    if (!p) return g;
    char *s = xasprintf("%.*s%s%s", (int)(p - g), g, to, p + strlen(from));
    free(g);
    return s;
}

static void test_errors(const char *dir) {
    char *path = path_join(dir, "manifest.yaml");
    char *g = good();
    Manifest m;
    char err[512] = "";
    FILE *f = fopen(path, "w");
    if (f) { fputs(g, f); fclose(f); }
    int rc = manifest_load(&m, dir, err, sizeof err);
    CHECK(rc == 0, "the hand-written reference manifest loads (%s)", err);
    if (rc == 0) manifest_free(&m);
    free(g);

    char want[600];
    char *t;
    // wrong type: source.size is a word (line 3, column of the value)
    t = edit("size: 10", "size: ten");
    snprintf(want, sizeof want, "%s:3:", path);
    expect_error(dir, t, want, "wrong type names the file and line");
    expect_error(dir, t, "source.size: expected a non-negative integer, got 'ten'", "wrong type says what");
    char *col = xasprintf("%s:3:%d:", path, (int)(strstr(t, "ten") - strstr(t, "source:")) + 1);
    expect_error(dir, t, col, "wrong type points at the value's column");
    free(col);
    free(t);
    // missing key: vocab without size, reported at the vocab mapping (line 4, col 8)
    t = edit("vocab: {kind: raw, size: 256}", "vocab: {kind: raw}");
    snprintf(want, sizeof want, "%s:4:8: vocab: missing key 'size'", path);
    expect_error(dir, t, want, "missing key at its mapping");
    free(t);
    // missing top-level key
    t = edit("format_version: 1\n", "");
    snprintf(want, sizeof want, "%s:1:1: manifest: missing key 'format_version'", path);
    expect_error(dir, t, want, "missing top-level key");
    free(t);
    // a mapping where a number belongs
    t = edit("tokens: 8, shards", "tokens: {a: 1}, shards");
    expect_error(dir, t, "splits.train.tokens: expected a non-negative integer, got a mapping", "mapping for integer");
    free(t);
    t = edit("format_version: 1", "format_version: 2");
    snprintf(want, sizeof want, "%s:2:17: format_version: 2 is not supported", path);
    expect_error(dir, t, want, "future format version");
    free(t);
    t = edit("recognized: none", "recognised: none");
    expect_error(dir, t, "unknown key 'recognised' (did you mean 'recognized'?)", "unknown key with suggestion");
    free(t);
    t = edit("kind: raw, size: 256", "kind: raw, size: 200");
    expect_error(dir, t, "vocab.size: 200 is not valid for vocab raw", "raw vocab must be 256");
    free(t);
    t = edit("sha256: 2b49", "sha256: zz49");
    expect_error(dir, t, "source.sha256: expected 64 lowercase hex digits", "bad sha256");
    free(t);
    t = edit("file: train-00000.h5", "file: ../etc/passwd");
    expect_error(dir, t, "is not a plain file name", "shard file may not leave the directory");
    free(t);
    t = edit("offset: 8, tokens: 1, shards: [{file: valid-00000.h5, offset: 8",
             "offset: 8, tokens: 1, shards: [{file: valid-00000.h5, offset: 7");
    expect_error(dir, t, "splits.valid.shards[0].offset: 7, but the shards before it end at 8", "gap between shards");
    free(t);
    t = edit("offset: 0, tokens: 8, shards", "offset: 0, tokens: 9, shards");
    expect_error(dir, t, "splits.train.tokens: 9, but its shards hold 8", "split tokens disagree with shards");
    free(t);
    t = edit("size: 10", "size: 11");
    expect_error(dir, t, "they hold 10 tokens, but source.size is 11", "splits must cover the source");
    free(t);
    t = edit("format: lsst-shards", "format: something");
    expect_error(dir, t, "format: expected 'lsst-shards'", "wrong format");
    free(t);
    expect_error(dir, "format: [1, 2\n", "manifest.yaml:", "YAML syntax error has a position");
    unlink(path);
    snprintf(want, sizeof want, "%s: cannot read:", path);
    Manifest m2;
    rc = manifest_load(&m2, dir, err, sizeof err);
    CHECK(rc == -1 && strstr(err, want), "missing manifest names the path (%s)", err);
    free(path);
}

int main(void) {
    char *dir = make_dir();
    CHECK(dir != NULL, "temporary directory");
    if (!dir) return check_done();
    test_roundtrip(dir);
    test_errors(dir);
    rm_rf(dir);
    free(dir);
    return check_done();
}
