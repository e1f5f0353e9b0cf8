// yaml_tree and common: positions in errors, typed scalars, round trip, atomic files,
// publishing a temp file or directory.
#include "check.h"
#include "common.h"
#include "yaml_tree.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_positions(void) {
    const char *doc = "data:\n  dir: x\n  seq_len: 128\nmodel: {layers: 2, dim: 64}\nlist: [1, 'two']\n";
    char err[256] = "";
    YNode *root = yn_load_string(doc, strlen(doc), "t.yaml", err, sizeof err);
    CHECK(root && root->kind == YNODE_MAP && root->n == 3, "parses a map with 3 keys (%s)", err);
    YNode *sl = yn_get(yn_get(root, "data"), "seq_len");
    long long v = 0;
    CHECK(sl && yn_as_int(sl, &v) && v == 128, "data.seq_len is the integer 128");
    CHECK(sl && sl->line == 3 && sl->col == 12, "data.seq_len at 3:12 (got %d:%d)", sl ? sl->line : 0, sl ? sl->col : 0);
    YNode *two = yn_get(root, "list")->items[1];
    CHECK(!two->plain && !yn_as_int(two, &v), "a quoted scalar is not a number");
    double d;
    CHECK(!yn_as_double(yn_get(yn_get(root, "data"), "dir"), &d), "a word is not a double");
    yn_free(root);
}

static void test_errors(void) {
    char err[256] = "";
    const char *dup = "a: 1\nb: 2\na: 3\n";
    YNode *r = yn_load_string(dup, strlen(dup), "d.yaml", err, sizeof err);
    CHECK(!r && strstr(err, "d.yaml:3:1: duplicate key 'a'"), "duplicate key names file:line:col (%s)", err);
    const char *bad = "a: [1, 2\nb: 3\n";
    r = yn_load_string(bad, strlen(bad), "s.yaml", err, sizeof err);
    CHECK(!r && !strncmp(err, "s.yaml:", 7), "syntax error names the file (%s)", err);
    r = yn_load_file("/nonexistent/x.yaml", err, sizeof err);
    CHECK(!r && strstr(err, "cannot read"), "missing file is an error (%s)", err);
}

static void test_roundtrip(void) {
    const char *doc = "name: \"a: b\"\nvals:\n  - 1\n  - {x: 2, y: [3]}\nempty: {}\n";
    char err[256] = "";
    YNode *r = yn_load_string(doc, strlen(doc), "r.yaml", err, sizeof err);
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    yn_write(fp, r, 0);
    fclose(fp);
    YNode *r2 = yn_load_string(buf, len, "r2.yaml", err, sizeof err);
    CHECK(r2 && !strcmp(yn_get(r2, "name")->value, "a: b"), "quoted value survives a round trip");
    YNode *vals = r2 ? yn_get(r2, "vals") : NULL;
    long long v = 0;
    CHECK(vals && vals->n == 2 && yn_as_int(yn_get(vals->items[1], "x"), &v) && v == 2, "nested map in a list");
    free(buf);
    yn_free(r);
    yn_free(r2);
}

static void test_did_you_mean(void) {
    const char *keys[] = {"layers", "dim", "heads", "mlp", "vocab"};
    CHECK(did_you_mean("layrs", keys, 5) && !strcmp(did_you_mean("layrs", keys, 5), "layers"), "layrs -> layers");
    CHECK(did_you_mean("banana", keys, 5) == NULL, "no suggestion for an unrelated word");
}

static void test_atomic(void) {
    char dir[] = "/tmp/lsst-unit-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "temp dir");
    char *path = path_join(dir, "f.txt");
    CHECK(write_file_atomic(path, "hello", 5) == 0, "atomic write");
    size_t n = 0;
    char *txt = read_file(path, &n);
    CHECK(txt && n == 5 && !strcmp(txt, "hello"), "reads back what was written");
    free(txt);
    AtomicFile af;
    CHECK(atomic_open(&af, path) == 0, "atomic open over an existing file");
    fputs("partial", af.fp);
    atomic_abort(&af);
    txt = read_file(path, &n);
    CHECK(txt && !strcmp(txt, "hello"), "an aborted write leaves the old file intact");
    free(txt);
    char hex[65];
    uint64_t size = 0;
    CHECK(sha256_file(path, hex, &size) == 0 && size == 5 &&
              !strcmp(hex, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"),
          "sha256 of 'hello'");
    CHECK(rm_rf(dir) == 0 && !path_exists(dir), "rm_rf removes the tree");
    free(path);
}

static void test_commit_tmp_file(void) {
    char dir[] = "/tmp/lsst-unit-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "temp dir");
    char *path = path_join(dir, "f.txt"), *tmp = path_join(dir, "f.txt.tmp.1"), err[512] = "";
    write_file_atomic(path, "old", 3);
    write_file_atomic(tmp, "new", 3);
    CHECK(commit_tmp_file(tmp, path, err, sizeof err) == 0, "commit a temp file (%s)", err);
    char *txt = read_file(path, NULL);
    CHECK(txt && !strcmp(txt, "new") && !path_exists(tmp), "the temp file replaced PATH and is gone");
    free(txt);
    CHECK(commit_tmp_file(tmp, path, err, sizeof err) == -1 && strstr(err, "cannot sync"),
          "a missing temp file is an error naming the step (%s)", err);
    char *sub = path_join(dir, "sub"), *inner = path_join(sub, "x");
    mkdir_p(sub, 0755);
    write_file_atomic(inner, "x", 1);
    write_file_atomic(tmp, "new", 3);
    CHECK(commit_tmp_file(tmp, sub, err, sizeof err) == -1 && strstr(err, "cannot rename") && !path_exists(tmp),
          "a failed rename removes the temp file (%s)", err);
    CHECK(is_dir(sub) && path_exists(inner), "and leaves PATH as it was");
    rm_rf(dir);
    free(path);
    free(tmp);
    free(sub);
    free(inner);
}

// A directory at path holding one file `name` with text.
static void make_dir_with(const char *path, const char *name, const char *text) {
    mkdir_p(path, 0755);
    char *file = path_join(path, name);
    write_file_atomic(file, text, strlen(text));
    free(file);
}

static bool dir_has(const char *dir, const char *name) {
    char *file = path_join(dir, name);
    bool yes = path_exists(file);
    free(file);
    return yes;
}

// One replace_dir of final by a fresh tmp holding `name`; the old content must end up in the leftover.
static void replace_once(const char *tmp, const char *final, const char *aside, const char *name, const char *old,
                         const char *expect_leftover, const char *what) {
    make_dir_with(tmp, name, name);
    char *left = NULL, err[512] = "";
    int rc = replace_dir(tmp, final, aside, true, &left, err, sizeof err);
    CHECK(rc == 0 && dir_has(final, name) && !dir_has(final, old), "%s: FINAL is the new directory (%s)", what, err);
    CHECK(left && !strcmp(left, expect_leftover) && dir_has(left, old), "%s: the old one is left at %s", what,
          expect_leftover);
    rm_rf(left);
    free(left);
}

static void test_replace_dir(void) {
    char dir[] = "/tmp/lsst-unit-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "temp dir");
    char *tmp = path_join(dir, "d.tmp"), *final = path_join(dir, "d"), *aside = path_join(dir, "d.old");
    char *left = NULL, err[512] = "";
    make_dir_with(tmp, "a", "a");
    CHECK(replace_dir(tmp, final, aside, false, &left, err, sizeof err) == 0 && !left && dir_has(final, "a") &&
              !path_exists(tmp),
          "a new FINAL: renamed into place, nothing left over (%s)", err);
    replace_once(tmp, final, aside, "b", "a", tmp, "renameat2 exchange");
    setenv("LSST_TEST_NO_RENAMEAT2", "1", 1);
    replace_once(tmp, final, aside, "c", "b", aside, "rename aside");
    unsetenv("LSST_TEST_NO_RENAMEAT2");
    make_dir_with(tmp, "d", "d");
    CHECK(replace_dir(tmp, final, aside, false, &left, err, sizeof err) == -1 && left && !strcmp(left, tmp) &&
              dir_has(final, "c"),
          "without `replace` an existing FINAL stays; TMP is left to remove (%s)", err);
    rm_rf(left);
    free(left);
    CHECK(replace_dir(tmp, final, aside, true, &left, err, sizeof err) == -1 && strstr(err, "cannot sync") &&
              dir_has(final, "c"),
          "a missing TMP is an error (%s)", err);
    free(left);
    rm_rf(dir);
    free(tmp);
    free(final);
    free(aside);
}

int main(void) {
    test_positions();
    test_errors();
    test_roundtrip();
    test_did_you_mean();
    test_atomic();
    test_commit_tmp_file();
    test_replace_dir();
    return check_done();
}
