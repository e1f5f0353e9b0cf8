// lsst-archive's library: the member path and link rules, the suffix -> compression
// map, and a create / verify / extract round trip whose bytes do not depend on mtimes.
#include "archive_check.h"
#include "archive_create.h"
#include "check.h"
#include "common.h"

#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void test_paths(void) {
    static const struct { const char *path; int ok; } cases[] = {
        {"run/metrics/rank-00000.h5", 1}, {"./run/a", 1}, {"run/./a", 1}, {"run/a..b", 1}, {"..run/a", 1},
        {"/etc/passwd", 0}, {"../x", 0}, {"run/../../x", 0}, {"run/..", 0}, {"..", 0}, {"", 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char why[128] = "";
        int rc = archive_path_check(cases[i].path, why, sizeof why);
        CHECK((rc == 0) == cases[i].ok, "path '%s' %s (%s)", cases[i].path, cases[i].ok ? "safe" : "refused", why);
    }
}

static bool links_s_and_t(const char *path, void *ctx) {
    (void)ctx;
    return !strcmp(path, "run/s") || !strcmp(path, "run/sub/t");
}

static void test_links(void) {
    static const struct { const char *link, *target; int ok; } cases[] = {
        {"run/l", "metrics/rank-00000.h5", 1},   // sibling
        {"run/a/l", "../b", 1},                  // run/b
        {"run/l", "..", 1},                      // the extraction directory itself
        {"run/l", "../other/x", 1},              // still inside the directory
        {"run/l", "../../x", 0},                 // above it
        {"run/a/l", "./../../../x", 0},
        {"run/l", "/tmp", 0},                    // absolute
        {"run/l", "", 0},
        {"run/l", "s", 1},                       // to a link: that link is checked on its own
        {"run/l", "s/x", 0},                     // through the link run/s
        {"run/l", "s/..", 0},                    // '..' after a link is not lexical
        {"run/sub/l", "t/../x", 0},
        {"run/sub/l", "../s2/x", 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char why[128] = "";
        int rc = archive_link_check(cases[i].link, cases[i].target, links_s_and_t, NULL, why, sizeof why);
        CHECK((rc == 0) == cases[i].ok, "link %s -> '%s' %s (%s)", cases[i].link, cases[i].target,
              cases[i].ok ? "safe" : "refused", why);
    }
}

static void test_suffix(void) {
    CHECK(archive_compression_for("x.tar.zst") == ARCHIVE_ZSTD && archive_compression_for("x.tzst") == ARCHIVE_ZSTD,
          ".tar.zst / .tzst: zstd");
    CHECK(archive_compression_for("a/x.tar.xz") == ARCHIVE_XZ && archive_compression_for("x.tar") == ARCHIVE_PLAIN,
          ".tar.xz: xz, .tar: none");
    CHECK(archive_compression_for("x.zip") < 0 && archive_compression_for(".tar") < 0, "others: unknown");
}

static void put(const char *dir, const char *rel, const char *text) {
    char *p = path_join(dir, rel), *d = path_dirname(p);
    mkdir_p(d, 0755);
    write_file_atomic(p, text, strlen(text));
    free(p);
    free(d);
}

static void test_roundtrip(const char *tmp) {
    char *run = path_join(tmp, "20261126-000000-beef");
    put(run, "train/0/metrics/rank-00000.h5", "rank zero");
    put(run, "train/0/log", "step 1\n");
    put(run, "b-first", "");
    put(run, "workflow.yaml", "name: x\n");
    char *a1 = path_join(tmp, "one.tar.zst"), *a2 = path_join(tmp, "two.tar.zst"), err[1024] = "";
    ArchiveStats st;
    int rc = archive_create(run, a1, &st, err, sizeof err);
    CHECK(rc == 0, "archive created (%s)", err);
    // 4 files + generated provenance + manifest; top dir + train, train/0, train/0/metrics
    CHECK(st.files == 6 && st.dirs == 4 && st.links == 0, "counts (%lld files, %lld dirs)", (long long)st.files,
          (long long)st.dirs);
    char *log = path_join(run, "train/0/log");
    struct timespec times[2] = {{.tv_sec = 1000000000}, {.tv_sec = 1000000000}};
    utimensat(AT_FDCWD, log, times, 0);
    chmod(log, 0664);
    free(log);
    rc = archive_create(run, a2, &st, err, sizeof err);
    size_t n1 = 0, n2 = 0;
    char *b1 = read_file(a1, &n1), *b2 = read_file(a2, &n2);
    CHECK(rc == 0 && b1 && b2 && n1 == n2 && !memcmp(b1, b2, n1), "same content, same bytes (%zu, %zu)", n1, n2);
    free(b1);
    free(b2);
    ArchiveSummary sum;
    rc = archive_verify(a1, &sum, err, sizeof err);
    CHECK(rc == 0 && !strcmp(sum.top, "20261126-000000-beef") && sum.files == 6, "verify passes (%s)", err);
    char *dest = path_join(tmp, "restored");
    rc = archive_extract(a1, dest, &sum, err, sizeof err);
    CHECK(rc == 0, "extract (%s)", err);
    char *got = path_join(dest, "20261126-000000-beef/train/0/metrics/rank-00000.h5");
    char *text = read_file(got, NULL);
    CHECK(text && !strcmp(text, "rank zero"), "extracted content");
    free(text);
    free(got);
    char *prov = path_join(dest, "20261126-000000-beef/provenance.yaml");
    text = read_file(prov, NULL);
    CHECK(text && strstr(text, "lsst_version: " LSST_VERSION "\n"), "generated provenance");
    free(text);
    free(prov);
    rc = archive_extract(a1, dest, &sum, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "already exists"), "no extraction over an existing directory (%s)", err);
    // A MANIFEST.sha256 of the user's own is not silently replaced.
    put(run, "MANIFEST.sha256", "mine");
    rc = archive_create(run, a2, &st, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "MANIFEST.sha256 exists"), "a run's own MANIFEST.sha256 is an error (%s)", err);
    free(dest);
    free(a1);
    free(a2);
    free(run);
}

int main(void) {
    lsst_prog = "test_archive";
    test_paths();
    test_links();
    test_suffix();
    char tmpl[] = "/tmp/lsst-test-archive.XXXXXX";
    if (mkdtemp(tmpl)) {
        test_roundtrip(tmpl);
        rm_rf(tmpl);
    } else {
        CHECK(0, "mkdtemp");
    }
    return check_done();
}
