// Shared code of the lsst tools and runtime: messages and exit codes, checked
// allocation, SHA-256, atomic files, small filesystem helpers.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdbool.h>

// Exit codes (ARCHITECTURE §7).
enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

// The program name used in messages ("lsst-prep"); set once in main().
extern const char *lsst_prog;

// "lsst-TOOL: error: ..." on stderr. die() also exits with `code`.
void lsst_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void lsst_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void lsst_die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// A usage error: "lsst-TOOL: error: ..." then "Try 'lsst-TOOL --help'.", exit 2.
_Noreturn void lsst_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Checked allocation: out of memory is fatal with the size that failed.
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// "lsst-TOOL X.Y.Z (git DESC)" for --version.
void lsst_print_version(void);
// `git describe --always --dirty` of the checkout this build came from (generated per build).
const char *lsst_git(void);

// SHA-256 (OpenSSL EVP). hex must hold 65 chars.
typedef struct Sha256 Sha256;
Sha256 *sha256_new(void);
void sha256_update(Sha256 *s, const void *data, size_t n);
void sha256_final_hex(Sha256 *s, char hex[65]); // frees s
// Hash a whole file; returns 0, or -1 with errno set.
int sha256_file(const char *path, char hex[65], uint64_t *size_out);

// Atomic file: write to "PATH.tmp.PID" beside PATH, then commit = fsync + rename
// + fsync of the directory; abort = unlink the temp file. Nothing half-written
// ever appears at PATH.
typedef struct {
    char *path;
    char *tmp_path;
    FILE *fp;
} AtomicFile;
int atomic_open(AtomicFile *af, const char *path);   // 0 or -1 (errno)
int atomic_commit(AtomicFile *af);                   // 0 or -1 (errno); closes
void atomic_abort(AtomicFile *af);
// Publish a finished, closed temp file: fsync it, rename it onto PATH, fsync PATH's directory.
// 0; -1 nothing published (TMP removed); 1 PATH complete but its directory not synced (callers
// that need durability treat it as failure). err (may be NULL) gets "PATH: ..." on non-zero.
int commit_tmp_file(const char *tmp, const char *path, char *err, size_t errlen);
// Publish directory TMP (beside FINAL, its content already synced) as FINAL: TMP is synced, then
// renamed into place; an existing FINAL, when `replace`, is exchanged with it in one step
// (renameat2), so a complete FINAL is always there. Without renameat2 flags: FINAL to ASIDE, TMP
// in, ASIDE back on failure. Then FINAL's directory is synced. *leftover (malloc'd or NULL) is the
// directory to remove afterwards, also on failure: TMP unpublished, or the old FINAL. 0, or -1 + err.
// Without `replace` an existing FINAL is an error, not replaced, and ASIDE is not used (may be NULL).
int replace_dir(const char *tmp, const char *final, const char *aside, bool replace, char **leftover, char *err,
                size_t errlen);
// fsync a directory (after a rename inside it), a file; 0 or -1 (errno).
int fsync_dir(const char *dir);
int fsync_file(const char *path);
// Create PATH (it must not exist) with MODE (umask applies) holding DATA, synced to disk: a file
// inside a private temporary directory that is then published whole (replace_dir), so it needs
// no rename of its own. 0, or -1 (errno; PATH may be left partial: remove the directory).
int write_new_file(const char *path, const void *data, size_t n, unsigned mode);
// Write a whole buffer atomically.
int write_file_atomic(const char *path, const void *data, size_t n);

// Filesystem helpers.
bool path_exists(const char *path);
bool is_dir(const char *path);
int mkdir_p(const char *path, unsigned mode);       // 0 or -1 (errno)
int rm_rf(const char *path);                        // 0 or -1 (errno)
char *path_join(const char *a, const char *b);      // malloc'd
char *path_dirname(const char *path);               // malloc'd
const char *path_basename(const char *path);        // pointer into path
// Read a whole file into a malloc'd, NUL-terminated buffer; NULL + errno on failure.
char *read_file(const char *path, size_t *len_out);

// Monotonic clock, seconds.
double now_seconds(void);
