// See archive_create.h. One pass: each file is hashed while its bytes go into the
// archive, so the manifest (the last member) describes exactly what was written.
#include "archive_create.h"

#include "archive_check.h"
#include "common.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char *rel;      // path relative to the run directory
    char type;      // 'd' directory, 'f' regular file, 'l' symbolic link
    bool exec;      // file with any execute bit
    uint64_t size;  // file: bytes at scan time
    char *target;   // link target
} Entry;

typedef struct {
    Entry *v;
    size_t n, cap;
    int64_t skipped;
} Entries;

int archive_compression_for(const char *path) {
    size_t n = strlen(path);
    struct { const char *suffix; int kind; } known[] = {
        {".tar.zst", ARCHIVE_ZSTD}, {".tzst", ARCHIVE_ZSTD}, {".tar.xz", ARCHIVE_XZ}, {".txz", ARCHIVE_XZ},
        {".tar", ARCHIVE_PLAIN}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        size_t k = strlen(known[i].suffix);
        if (n > k && !strcmp(path + n - k, known[i].suffix)) return known[i].kind;
    }
    return -1;
}

static void push(Entries *es, Entry e) {
    if (es->n == es->cap) {
        es->cap = es->cap ? 2 * es->cap : 256;
        es->v = xrealloc(es->v, es->cap * sizeof *es->v);
    }
    es->v[es->n++] = e;
}

// Collect everything under dir (rel: its path relative to the run directory, "" at the top).
// The archive being written is never inside the run directory (lsst-archive refuses that).
static int scan(Entries *es, const char *root, const char *rel, char *err, size_t errlen) {
    char *dir = *rel ? path_join(root, rel) : xstrdup(root);
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "%s: cannot read the directory: %s", dir, strerror(errno));
        free(dir);
        return -1;
    }
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char *child_rel = *rel ? xasprintf("%s/%s", rel, de->d_name) : xstrdup(de->d_name);
        char *child = path_join(root, child_rel);
        struct stat st;
        if (lstat(child, &st) != 0) {
            snprintf(err, errlen, "%s: %s", child, strerror(errno));
            rc = -1;
        } else if (strchr(de->d_name, '\n') || strchr(de->d_name, '\\')) {
            snprintf(err, errlen, "%s: a file name with a newline or backslash cannot be listed in %s", child,
                     ARCHIVE_MANIFEST);
            rc = -1;
        } else if (S_ISDIR(st.st_mode)) {
            push(es, (Entry){.rel = child_rel, .type = 'd'});
            child_rel = NULL;
            rc = scan(es, root, es->v[es->n - 1].rel, err, errlen);
        } else if (S_ISREG(st.st_mode)) {
            push(es, (Entry){.rel = child_rel, .type = 'f', .exec = (st.st_mode & 0111) != 0, .size = (uint64_t)st.st_size});
            child_rel = NULL;
        } else if (S_ISLNK(st.st_mode)) {
            char buf[4096];
            ssize_t n = readlink(child, buf, sizeof buf - 1);
            if (n < 0) {
                snprintf(err, errlen, "%s: cannot read the link: %s", child, strerror(errno));
                rc = -1;
            } else {
                buf[n] = '\0';
                push(es, (Entry){.rel = child_rel, .type = 'l', .target = xstrdup(buf)});
                child_rel = NULL;
            }
        } else {
            lsst_warn("%s: not archived: not a regular file, directory or symbolic link", child);
            es->skipped++;
        }
        free(child_rel);
        free(child);
    }
    closedir(d);
    free(dir);
    return rc;
}

static int by_rel(const void *a, const void *b) { return strcmp(((const Entry *)a)->rel, ((const Entry *)b)->rel); }

// Symbolic links must stay inside the run directory and not go through another link,
// the rule --extract enforces; others are left out with a warning.
static bool symlink_named(const char *path, void *ctx) {
    const Entries *es = ctx;
    Entry key = {.rel = (char *)path};
    const Entry *e = bsearch(&key, es->v, es->n, sizeof *es->v, by_rel);
    return e && e->type == 'l';
}

static void drop_escaping_links(Entries *es, const char *root) {
    size_t kept = 0;
    char why[256];
    for (size_t i = 0; i < es->n; i++) {
        Entry *e = &es->v[i];
        if (e->type == 'l' && archive_link_check(e->rel, e->target, symlink_named, es, why, sizeof why) != 0) {
            lsst_warn("%s/%s: not archived: symbolic link to %s %s", root, e->rel, e->target, why);
            es->skipped++;
            e->type = 'x';   // keeps the array sorted for symlink_named while we go
        }
    }
    for (size_t i = 0; i < es->n; i++) {
        if (es->v[i].type == 'x') {
            free(es->v[i].rel);
            free(es->v[i].target);
        } else {
            es->v[kept++] = es->v[i];
        }
    }
    es->n = kept;
}

static struct archive_entry *header(const char *name, const char *rel, mode_t type, int perm, int64_t size) {
    struct archive_entry *e = archive_entry_new();
    if (!e) lsst_die(EXIT_RUNTIME, "out of memory");
    char *path = *rel ? xasprintf("%s/%s", name, rel) : xasprintf("%s/", name);
    archive_entry_set_pathname(e, path);
    free(path);
    archive_entry_set_filetype(e, (unsigned)type);
    archive_entry_set_perm(e, (mode_t)perm);
    archive_entry_set_size(e, size);
    archive_entry_set_mtime(e, 0, 0);
    archive_entry_set_uid(e, 0);
    archive_entry_set_gid(e, 0);
    return e;
}

static int write_header(struct archive *a, struct archive_entry *e, char *err, size_t errlen) {
    int r = archive_write_header(a, e);
    if (r != ARCHIVE_OK) {
        snprintf(err, errlen, "%s: cannot write the header: %s", archive_entry_pathname(e), archive_error_string(a));
        archive_entry_free(e);
        return -1;
    }
    archive_entry_free(e);
    return 0;
}

static int write_bytes(struct archive *a, const char *what, const void *data, size_t n, char *err, size_t errlen) {
    while (n) {
        la_ssize_t w = archive_write_data(a, data, n);
        if (w <= 0) {
            snprintf(err, errlen, "%s: cannot write: %s", what, archive_error_string(a));
            return -1;
        }
        data = (const char *)data + w;
        n -= (size_t)w;
    }
    return 0;
}

// A member NAME/rel holding text (provenance, manifest); its hash into hex.
static int write_text(struct archive *a, const char *name, const char *rel, const char *text, char hex[65], char *err,
                      size_t errlen) {
    size_t n = strlen(text);
    if (write_header(a, header(name, rel, AE_IFREG, 0644, (int64_t)n), err, errlen) != 0) return -1;
    if (hex) {
        Sha256 *s = sha256_new();
        sha256_update(s, text, n);
        sha256_final_hex(s, hex);
    }
    return write_bytes(a, rel, text, n, err, errlen);
}

// Stream one file into the archive, hashing what goes in; exactly e->size bytes.
static int write_file(struct archive *a, const char *root, const char *name, const Entry *e, char hex[65],
                      unsigned char *buf, size_t cap, char *err, size_t errlen) {
    char *path = path_join(root, e->rel);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    int rc = -1;
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        free(path);
        return -1;
    }
    if (write_header(a, header(name, e->rel, AE_IFREG, e->exec ? 0755 : 0644, (int64_t)e->size), err, errlen) != 0)
        goto done;
    Sha256 *s = sha256_new();
    uint64_t left = e->size;
    while (left) {
        ssize_t n = read(fd, buf, left < cap ? (size_t)left : cap);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            snprintf(err, errlen, "%s: %s while archiving it (%llu bytes short)", path,
                     n < 0 ? strerror(errno) : "the file shrank", (unsigned long long)left);
            sha256_final_hex(s, hex);
            goto done;
        }
        sha256_update(s, buf, (size_t)n);
        if (write_bytes(a, path, buf, (size_t)n, err, errlen) != 0) {
            sha256_final_hex(s, hex);
            goto done;
        }
        left -= (uint64_t)n;
    }
    sha256_final_hex(s, hex);
    rc = 0;
done:
    close(fd);
    free(path);
    return rc;
}

static char *generated_provenance(const char *name) {
    return xasprintf("# Written by lsst-archive: the run directory had no provenance.yaml.\n"
                     "lsst_version: %s\n"
                     "lsst_git: %s\n"
                     "run_dir_name: %s\n",
                     LSST_VERSION, lsst_git(), name);
}

int archive_create(const char *run_dir, const char *out_path, ArchiveStats *stats, char *err, size_t errlen) {
    memset(stats, 0, sizeof *stats);
    int kind = archive_compression_for(out_path);
    if (kind < 0) {
        snprintf(err, errlen, "%s: unknown archive suffix (use .tar.zst, .tar.xz or .tar)", out_path);
        return -1;
    }
    char *real = realpath(run_dir, NULL);
    if (!real) {
        snprintf(err, errlen, "%s: %s", run_dir, strerror(errno));
        return -1;
    }
    const char *name = path_basename(real);
    if (!*name) {
        snprintf(err, errlen, "%s: cannot archive the root directory", run_dir);
        free(real);
        return -1;
    }
    Entries es = {0};
    int rc = -1;
    struct archive *a = NULL;
    AtomicFile af = {0};
    char *manifest_text = NULL, *prov = NULL;
    size_t manifest_len = 0;
    FILE *manifest = open_memstream(&manifest_text, &manifest_len);
    size_t cap = 1 << 20;
    unsigned char *buf = xmalloc(cap);
    if (!manifest) lsst_die(EXIT_RUNTIME, "out of memory");

    if (scan(&es, real, "", err, errlen) != 0) goto done;
    qsort(es.v, es.n, sizeof *es.v, by_rel);
    drop_escaping_links(&es, run_dir);
    stats->skipped = es.skipped;
    bool have_prov = false, have_manifest = false;
    for (size_t i = 0; i < es.n; i++) {
        have_prov |= es.v[i].type == 'f' && !strcmp(es.v[i].rel, ARCHIVE_PROVENANCE);
        have_manifest |= !strcmp(es.v[i].rel, ARCHIVE_MANIFEST);
    }
    if (have_manifest) {
        snprintf(err, errlen, "%s/%s exists: the archive writes its own manifest there (move the file away)", run_dir,
                 ARCHIVE_MANIFEST);
        goto done;
    }
    if (!have_prov) prov = generated_provenance(name);

    // libarchive writes to the temp file's descriptor; stdio never buffers anything of it.
    if (atomic_open(&af, out_path) != 0) {
        snprintf(err, errlen, "%s: cannot create its temporary file: %s", out_path, strerror(errno));
        goto done;
    }
    a = archive_write_new();
    if (!a || archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
        (kind == ARCHIVE_ZSTD && archive_write_add_filter_zstd(a) != ARCHIVE_OK) ||
        (kind == ARCHIVE_XZ && archive_write_add_filter_xz(a) != ARCHIVE_OK) ||
        (kind == ARCHIVE_PLAIN && archive_write_add_filter_none(a) != ARCHIVE_OK) ||
        archive_write_open_fd(a, fileno(af.fp)) != ARCHIVE_OK) {
        snprintf(err, errlen, "%s: cannot start the archive: %s", out_path, a ? archive_error_string(a) : "no memory");
        goto done;
    }
    if (write_header(a, header(name, "", AE_IFDIR, 0755, 0), err, errlen) != 0) goto done;
    stats->dirs++;
    // The generated provenance goes where its name sorts among the others.
    bool prov_written = prov == NULL;
    char hex[65];
    for (size_t i = 0; i <= es.n; i++) {
        if (!prov_written && (i == es.n || strcmp(ARCHIVE_PROVENANCE, es.v[i].rel) < 0)) {
            if (write_text(a, name, ARCHIVE_PROVENANCE, prov, hex, err, errlen) != 0) goto done;
            fprintf(manifest, "%s  %s\n", hex, ARCHIVE_PROVENANCE);
            stats->files++;
            stats->bytes += strlen(prov);
            prov_written = true;
        }
        if (i == es.n) break;
        const Entry *e = &es.v[i];
        if (e->type == 'd') {
            if (write_header(a, header(name, e->rel, AE_IFDIR, 0755, 0), err, errlen) != 0) goto done;
            stats->dirs++;
        } else if (e->type == 'l') {
            struct archive_entry *h = header(name, e->rel, AE_IFLNK, 0777, 0);
            archive_entry_set_symlink(h, e->target);
            if (write_header(a, h, err, errlen) != 0) goto done;
            stats->links++;
        } else {
            if (write_file(a, real, name, e, hex, buf, cap, err, errlen) != 0) goto done;
            fprintf(manifest, "%s  %s\n", hex, e->rel);
            stats->files++;
            stats->bytes += e->size;
        }
    }
    if (fflush(manifest) != 0) lsst_die(EXIT_RUNTIME, "out of memory");
    if (write_text(a, name, ARCHIVE_MANIFEST, manifest_text, NULL, err, errlen) != 0) goto done;
    stats->files++;
    stats->bytes += strlen(manifest_text);
    if (archive_write_close(a) != ARCHIVE_OK) {
        snprintf(err, errlen, "%s: cannot finish the archive: %s", out_path, archive_error_string(a));
        goto done;
    }
    if (atomic_commit(&af) != 0) {
        snprintf(err, errlen, "%s: cannot write: %s", out_path, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    if (a) archive_write_free(a);
    if (rc != 0) atomic_abort(&af);   // no-op after a failed commit: that removed the temp file
    fclose(manifest);
    free(manifest_text);
    free(prov);
    free(buf);
    for (size_t i = 0; i < es.n; i++) {
        free(es.v[i].rel);
        free(es.v[i].target);
    }
    free(es.v);
    free(real);
    return rc;
}
