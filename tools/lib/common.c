#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/evp.h>

const char *lsst_prog = "lsst";

static void vmessage(const char *kind, const char *fmt, va_list ap) {
    fflush(stdout);
    fprintf(stderr, "%s: %s: ", lsst_prog, kind);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void lsst_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmessage("error", fmt, ap);
    va_end(ap);
}

void lsst_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmessage("warning", fmt, ap);
    va_end(ap);
}

void lsst_die(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmessage("error", fmt, ap);
    va_end(ap);
    exit(code);
}

void lsst_usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmessage("error", fmt, ap);
    va_end(ap);
    fprintf(stderr, "Try '%s --help'.\n", lsst_prog);
    exit(EXIT_USAGE);
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) lsst_die(EXIT_RUNTIME, "out of memory allocating %zu bytes", n);
    return p;
}

void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) lsst_die(EXIT_RUNTIME, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) lsst_die(EXIT_RUNTIME, "out of memory allocating %zu bytes", n);
    return q;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

char *xasprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) lsst_die(EXIT_RUNTIME, "out of memory formatting a string");
    return s;
}

void lsst_print_version(void) {
    printf("%s %s (git %s)\n", lsst_prog, LSST_VERSION, lsst_git());
}

// ---- SHA-256 ----
struct Sha256 { EVP_MD_CTX *ctx; };

Sha256 *sha256_new(void) {
    Sha256 *s = xmalloc(sizeof *s);
    s->ctx = EVP_MD_CTX_new();
    if (!s->ctx || EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL) != 1)
        lsst_die(EXIT_RUNTIME, "OpenSSL: cannot initialise SHA-256");
    return s;
}

void sha256_update(Sha256 *s, const void *data, size_t n) {
    if (EVP_DigestUpdate(s->ctx, data, n) != 1) lsst_die(EXIT_RUNTIME, "OpenSSL: SHA-256 update failed");
}

void sha256_final_hex(Sha256 *s, char hex[65]) {
    unsigned char md[32];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(s->ctx, md, &len) != 1 || len != 32)
        lsst_die(EXIT_RUNTIME, "OpenSSL: SHA-256 final failed");
    for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", md[i]);
    hex[64] = '\0';
    EVP_MD_CTX_free(s->ctx);
    free(s);
}

int sha256_file(const char *path, char hex[65], uint64_t *size_out) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    Sha256 *s = sha256_new();
    size_t cap = 1 << 20;
    unsigned char *buf = xmalloc(cap);
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, cap);
        if (n < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            free(buf);
            sha256_final_hex(s, hex);
            close(fd);
            errno = e;
            return -1;
        }
        if (n == 0) break;
        sha256_update(s, buf, (size_t)n);
        total += (uint64_t)n;
    }
    free(buf);
    close(fd);
    sha256_final_hex(s, hex);
    if (size_out) *size_out = total;
    return 0;
}

// ---- atomic files ----
int atomic_open(AtomicFile *af, const char *path) {
    af->path = xstrdup(path);
    af->tmp_path = xasprintf("%s.tmp.%ld", path, (long)getpid());
    af->fp = fopen(af->tmp_path, "wbx");
    if (!af->fp) {
        int e = errno;
        free(af->path);
        free(af->tmp_path);
        af->path = af->tmp_path = NULL;
        errno = e;
        return -1;
    }
    return 0;
}

static void atomic_free(AtomicFile *af) {
    free(af->path);
    free(af->tmp_path);
    af->path = af->tmp_path = NULL;
    af->fp = NULL;
}

int atomic_commit(AtomicFile *af) {
    int rc = 0, e = 0;
    if (fflush(af->fp) != 0) { rc = -1; e = errno; }
    if (fclose(af->fp) != 0 && rc == 0) { rc = -1; e = errno; }
    if (rc != 0) unlink(af->tmp_path);
    // A failed directory fsync (1) is not reported here: the file is complete at PATH.
    else if (commit_tmp_file(af->tmp_path, af->path, NULL, 0) < 0) { rc = -1; e = errno; }
    atomic_free(af);
    errno = e;
    return rc;
}

// fsync a closed file by name (data written through another handle: stdio, HDF5, libarchive).
int fsync_file(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

int write_new_file(const char *path, const void *data, size_t n, unsigned mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode);
    if (fd < 0) return -1;
    int rc = 0;
    for (size_t done = 0; !rc && done < n;) {
        ssize_t w = write(fd, (const char *)data + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w == 0) errno = EIO;
        if (w <= 0) rc = -1;
        else done += (size_t)w;
    }
    if (!rc) rc = fsync(fd);
    int e = errno;
    if (close(fd) != 0 && !rc) rc = -1, e = errno;
    errno = e;
    return rc;
}

int commit_tmp_file(const char *tmp, const char *path, char *err, size_t errlen) {
    const char *what = fsync_file(tmp) != 0 ? "sync" : rename(tmp, path) != 0 ? "rename" : NULL;
    if (what) {
        int e = errno;
        if (err) snprintf(err, errlen, "%s: cannot %s %s into place: %s", path, what, tmp, strerror(e));
        unlink(tmp);
        errno = e;
        return -1;
    }
    char *dir = path_dirname(path);
    int rc = fsync_dir(dir);
    int e = errno;
    if (rc != 0 && err) snprintf(err, errlen, "%s: cannot sync its directory %s: %s", path, dir, strerror(e));
    free(dir);
    errno = e;
    return rc == 0 ? 0 : 1;
}

void atomic_abort(AtomicFile *af) {
    if (af->fp) fclose(af->fp);
    if (af->tmp_path) unlink(af->tmp_path);
    atomic_free(af);
}

int fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int write_file_atomic(const char *path, const void *data, size_t n) {
    AtomicFile af;
    if (atomic_open(&af, path) != 0) return -1;
    if (n && fwrite(data, 1, n, af.fp) != n) {
        int e = errno;
        atomic_abort(&af);
        errno = e ? e : EIO;
        return -1;
    }
    return atomic_commit(&af);
}

// ---- replacing a directory ----
// Without renameat2 flags: FINAL aside, TMP in, and FINAL back if that fails.
static int rename_aside(const char *tmp, const char *final, const char *aside, bool exists, char **leftover,
                        char *err, size_t errlen) {
    if (exists && rename(final, aside) != 0) {
        snprintf(err, errlen, "%s: cannot move it aside to %s: %s", final, aside, strerror(errno));
        return -1;
    }
    if (rename(tmp, final) != 0) {
        int e = errno;
        bool restored = !exists || rename(aside, final) == 0;
        snprintf(err, errlen, "%s: cannot rename %s into place: %s%s%s", final, tmp, strerror(e),
                 restored ? "" : "; the old one is at ", restored ? "" : aside);
        errno = e;
        return -1;
    }
    free(*leftover);
    *leftover = exists ? xstrdup(aside) : NULL;
    return 0;
}

int replace_dir(const char *tmp, const char *final, const char *aside, bool replace, char **leftover, char *err,
                size_t errlen) {
    *leftover = xstrdup(tmp);
    if (fsync_dir(tmp) != 0) {
        snprintf(err, errlen, "%s: cannot sync to disk: %s", tmp, strerror(errno));
        return -1;
    }
    bool exchange = replace && path_exists(final);
    // Test hook: behave as on a file system without renameat2 flags. Not for users.
    bool have_flags = !getenv("LSST_TEST_NO_RENAMEAT2");
    errno = EINVAL;
    if (have_flags &&
        renameat2(AT_FDCWD, tmp, AT_FDCWD, final, exchange ? RENAME_EXCHANGE : RENAME_NOREPLACE) == 0) {
        if (!exchange) {   // FINAL was new: nothing to remove (else TMP now holds the old FINAL)
            free(*leftover);
            *leftover = NULL;
        }
    } else if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) {
        snprintf(err, errlen, "%s: cannot rename %s into place: %s", final, tmp, strerror(errno));
        return -1;
    } else if (rename_aside(tmp, final, aside, exchange, leftover, err, errlen) != 0) {
        return -1;
    }
    char *parent = path_dirname(final);
    int rc = fsync_dir(parent);
    if (rc != 0) snprintf(err, errlen, "%s: cannot sync its directory %s: %s", final, parent, strerror(errno));
    free(parent);
    return rc;
}

// ---- filesystem ----
bool path_exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int mkdir_p(const char *path, unsigned mode) {
    char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, mode) != 0 && errno != EEXIST) { int e = errno; free(p); errno = e; return -1; }
        *s = '/';
    }
    int rc = mkdir(p, mode);
    int e = errno;
    free(p);
    if (rc != 0 && e == EEXIST && is_dir(path)) return 0;
    errno = e;
    return rc;
}

int rm_rf(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode)) return unlink(path);
    DIR *d = opendir(path);
    if (!d) return -1;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char *child = path_join(path, de->d_name);
        if (rm_rf(child) != 0) rc = -1;
        free(child);
    }
    closedir(d);
    if (rmdir(path) != 0) rc = -1;
    return rc;
}

char *path_join(const char *a, const char *b) {
    if (b[0] == '/') return xstrdup(b);
    size_t la = strlen(a);
    return xasprintf("%s%s%s", a, (la && a[la - 1] == '/') ? "" : "/", b);
}

char *path_dirname(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return xstrdup(".");
    if (slash == path) return xstrdup("/");
    return strndup(path, (size_t)(slash - path));
}

const char *path_basename(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

char *read_file(const char *path, size_t *len_out) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = xmalloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len - 1 == 0) buf = xrealloc(buf, cap *= 2);
    }
    int err = ferror(f);
    fclose(f);
    if (err) { free(buf); errno = EIO; return NULL; }
    buf[len] = '\0';
    if (len_out) *len_out = len;
    return buf;
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
