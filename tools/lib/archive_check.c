// See archive_check.h. Both --verify and --extract read the archive in one streaming
// pass that checks every member before anything is written; --extract then reads it a
// second time to write, checking each member again against what the first pass saw
// (a file swapped in between is caught) and each file's sha256 against the manifest,
// and lets libarchive refuse "..", absolute paths and writing through symbolic links
// as well (ARCHIVE_EXTRACT_SECURE_*).
#include "archive_check.h"

#include "archive_create.h"
#include "common.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// ---- path rules ----

int archive_path_check(const char *path, char *why, size_t n) {
    if (!*path) return snprintf(why, n, "empty path"), -1;
    if (path[0] == '/') return snprintf(why, n, "absolute path"), -1;
    for (const char *p = path; *p;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 2 && !strncmp(p, "..", 2)) return snprintf(why, n, "'..' in the path"), -1;
        if (!slash) break;
        p = slash + 1;
    }
    return 0;
}

int archive_link_check(const char *link_path, const char *target, bool (*is_symlink)(const char *path, void *ctx),
                       void *ctx, char *why, size_t n) {
    if (!*target) return snprintf(why, n, "(empty target)"), -1;
    if (target[0] == '/') return snprintf(why, n, "(an absolute target) leaves the directory"), -1;
    // Components of the link's directory, then the target's, resolved on a stack.
    size_t cap = strlen(link_path) + strlen(target) + 2;
    char *buf = xmalloc(cap);
    const char **stack = xmalloc(cap * sizeof *stack);
    size_t depth = 0;
    int rc = 0;
    snprintf(buf, cap, "%s", link_path);
    char *last = strrchr(buf, '/');
    if (last) {   // the link's directory
        *last = '\0';
        for (char *save = NULL, *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save))
            if (strcmp(c, ".")) stack[depth++] = c;
    }
    char *tbuf = xstrdup(target);
    char *path = xmalloc(cap);
    char *save = NULL;
    for (char *c = strtok_r(tbuf, "/", &save); c && rc == 0; c = strtok_r(NULL, "/", &save)) {
        if (!strcmp(c, ".")) continue;
        // The component before this one must not be a link: resolving through it could go anywhere.
        if (depth) {
            size_t len = 0;
            path[0] = '\0';
            for (size_t i = 0; i < depth; i++) len += (size_t)snprintf(path + len, cap - len, "%s%s", i ? "/" : "", stack[i]);
            if (is_symlink && is_symlink(path, ctx)) {
                snprintf(why, n, "goes through the symbolic link %s", path);
                rc = -1;
                break;
            }
        }
        if (!strcmp(c, "..")) {
            if (depth == 0) {
                snprintf(why, n, "leaves the directory");
                rc = -1;
                break;
            }
            depth--;
        } else {
            stack[depth++] = c;
        }
    }
    free(path);
    free(tbuf);
    free(stack);
    free(buf);
    return rc;
}

// ---- reading ----

typedef struct {
    char *path;        // full member path as in the archive
    char type;         // 'd', 'f', 'l', 'h' (hard link)
    char *target;      // link target
    char hex[65];      // file: sha256
    uint64_t size;     // file: bytes
} Member;

typedef struct {
    Member *v;
    size_t n, cap;
    char *manifest;    // MANIFEST.sha256 text
    size_t manifest_len;
} Members;

static void members_free(Members *m) {
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].path);
        free(m->v[i].target);
    }
    free(m->v);
    free(m->manifest);
    memset(m, 0, sizeof *m);
}

static struct archive *open_read(const char *file, char *err, size_t errlen) {
    struct archive *a = archive_read_new();
    if (!a) lsst_die(EXIT_RUNTIME, "out of memory");
    archive_read_support_filter_all(a);
    archive_read_support_format_tar(a);
    if (archive_read_open_filename(a, file, 1 << 16) != ARCHIVE_OK) {
        snprintf(err, errlen, "%s: %s", file, archive_error_string(a));
        archive_read_free(a);
        return NULL;
    }
    return a;
}

// Strip a leading "./" (tar writers differ) and trailing slashes of directories.
static char *clean_path(const char *p) {
    while (p[0] == '.' && p[1] == '/') p += 2;
    char *s = xstrdup(p);
    for (size_t n = strlen(s); n > 1 && s[n - 1] == '/'; n--) s[n - 1] = '\0';
    return s;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

typedef struct {
    char **paths;   // sorted paths of symbolic-link members
    size_t n;
} LinkSet;

static bool in_link_set(const char *path, void *ctx) {
    const LinkSet *ls = ctx;
    return ls->n && bsearch(&path, ls->paths, ls->n, sizeof *ls->paths, cmp_str) != NULL;
}

// Pass 1: read every member, check its path, hash its data. Stops at the first problem.
static int read_members(const char *file, Members *m, char *err, size_t errlen) {
    struct archive *a = open_read(file, err, errlen);
    if (!a) return -1;
    struct archive_entry *e;
    char why[256];
    int rc = -1, r;
    while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK || r == ARCHIVE_WARN) {
        const char *raw = archive_entry_pathname(e);
        if (!raw) raw = "";
        if (archive_path_check(raw, why, sizeof why) != 0) {
            snprintf(err, errlen, "%s: unsafe member '%s': %s", file, raw, why);
            goto done;
        }
        Member mb = {.path = clean_path(raw)};
        mode_t type = archive_entry_filetype(e);
        const char *hl = archive_entry_hardlink(e);
        if (hl) {
            mb.type = 'h';
            mb.target = clean_path(hl);
            if (archive_path_check(hl, why, sizeof why) != 0) {
                snprintf(err, errlen, "%s: unsafe hard link '%s' -> '%s': %s", file, raw, hl, why);
                free(mb.path);
                free(mb.target);
                goto done;
            }
        } else if (type == AE_IFDIR) {
            mb.type = 'd';
        } else if (type == AE_IFLNK) {
            mb.type = 'l';
            mb.target = xstrdup(archive_entry_symlink(e) ? archive_entry_symlink(e) : "");
        } else if (type == AE_IFREG) {
            mb.type = 'f';
        } else {
            snprintf(err, errlen, "%s: member '%s' is a device, FIFO or socket: refused", file, raw);
            free(mb.path);
            goto done;
        }
        if (mb.type == 'f') {
            bool is_manifest = false;
            const char *slash = strchr(mb.path, '/');
            is_manifest = slash && !strcmp(slash + 1, ARCHIVE_MANIFEST);
            Sha256 *s = sha256_new();
            FILE *keep = NULL;
            if (is_manifest) {
                free(m->manifest);
                m->manifest = NULL;
                keep = open_memstream(&m->manifest, &m->manifest_len);
            }
            const void *buf;
            size_t len;
            la_int64_t off;
            int dr;
            while ((dr = archive_read_data_block(a, &buf, &len, &off)) == ARCHIVE_OK) {
                sha256_update(s, buf, len);
                if (keep) fwrite(buf, 1, len, keep);
                mb.size += len;
            }
            sha256_final_hex(s, mb.hex);
            if (keep) fclose(keep);
            if (dr != ARCHIVE_EOF && dr != ARCHIVE_OK) {
                snprintf(err, errlen, "%s: damaged while reading member '%s': %s", file, raw, archive_error_string(a));
                free(mb.path);
                goto done;
            }
        }
        if (m->n == m->cap) {
            m->cap = m->cap ? 2 * m->cap : 256;
            m->v = xrealloc(m->v, m->cap * sizeof *m->v);
        }
        m->v[m->n++] = mb;
    }
    if (r != ARCHIVE_EOF) {
        if (m->n) snprintf(err, errlen, "%s: damaged after member '%s' (%zu members read): %s", file, m->v[m->n - 1].path,
                           m->n, archive_error_string(a));
        else snprintf(err, errlen, "%s: not a readable tar archive: %s", file, archive_error_string(a));
        goto done;
    }
    rc = 0;
done:
    archive_read_free(a);
    return rc;
}

typedef struct {
    char *path;   // relative to the top directory
    char hex[65];
    bool seen;
} ManifestLine;

static int cmp_line(const void *a, const void *b) { return strcmp(((const ManifestLine *)a)->path, ((const ManifestLine *)b)->path); }

static void lines_free(ManifestLine *lines, size_t n) {
    for (size_t k = 0; k < n; k++) free(lines[k].path);
    free(lines);
}

// MANIFEST.sha256 (m->manifest, parsed in place) against the regular files of the top
// directory sum->top: every file listed with its checksum, every line a file of the
// archive, and a provenance.yaml. 0, or -1 with the first problem in err.
static int check_manifest(const char *file, Members *m, const ArchiveSummary *sum, char *err, size_t errlen) {
    if (!m->manifest) {
        snprintf(err, errlen, "%s: no %s/%s: not an lsst archive", file, sum->top, ARCHIVE_MANIFEST);
        return -1;
    }
    size_t top_len = strlen(sum->top);
    ManifestLine *lines = NULL;
    size_t n_lines = 0, cap_lines = 0;
    char *save = NULL;
    int line_no = 0, rc = -1;
    for (char *line = strtok_r(m->manifest, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        line_no++;
        size_t hl = strspn(line, "0123456789abcdef");
        if (hl != 64 || strncmp(line + 64, "  ", 2) || !line[66]) {
            snprintf(err, errlen, "%s: %s/%s line %d: not '<sha256>  <path>'", file, sum->top, ARCHIVE_MANIFEST, line_no);
            goto done;
        }
        if (n_lines == cap_lines) lines = xrealloc(lines, (cap_lines = cap_lines ? 2 * cap_lines : 64) * sizeof *lines);
        ManifestLine *ml = &lines[n_lines++];
        memcpy(ml->hex, line, 64);
        ml->hex[64] = '\0';
        ml->path = xstrdup(line + 66);
        ml->seen = false;
    }
    qsort(lines, n_lines, sizeof *lines, cmp_line);
    bool have_prov = false;
    for (size_t i = 0; i < m->n; i++) {
        const Member *mb = &m->v[i];
        if (mb->type != 'f') continue;
        const char *rel = mb->path + top_len + 1;
        if (!strcmp(rel, ARCHIVE_MANIFEST)) continue;
        have_prov |= !strcmp(rel, ARCHIVE_PROVENANCE);
        ManifestLine key = {.path = (char *)rel};
        ManifestLine *ml = bsearch(&key, lines, n_lines, sizeof *lines, cmp_line);
        if (!ml) {
            snprintf(err, errlen, "%s: member '%s' is not in %s", file, mb->path, ARCHIVE_MANIFEST);
            goto done;
        }
        if (strcmp(ml->hex, mb->hex)) {
            snprintf(err, errlen, "%s: member '%s': checksum mismatch (manifest %.12s..., content %.12s...)", file,
                     mb->path, ml->hex, mb->hex);
            goto done;
        }
        ml->seen = true;
    }
    for (size_t k = 0; k < n_lines; k++) {
        if (!lines[k].seen) {
            snprintf(err, errlen, "%s: '%s/%s' is listed in %s but is not in the archive", file, sum->top, lines[k].path,
                     ARCHIVE_MANIFEST);
            goto done;
        }
    }
    if (!have_prov) {
        snprintf(err, errlen, "%s: no %s/%s", file, sum->top, ARCHIVE_PROVENANCE);
        goto done;
    }
    rc = 0;
done:
    lines_free(lines, n_lines);
    return rc;
}

// Every check on the members of pass 1. The first problem in archive order wins.
static int check_members(const char *file, Members *m, ArchiveSummary *sum, char *err, size_t errlen) {
    memset(sum, 0, sizeof *sum);
    if (m->n == 0) return snprintf(err, errlen, "%s: empty archive", file), -1;
    // One top directory.
    const char *first = m->v[0].path;
    size_t top_len = strcspn(first, "/");
    if (top_len >= sizeof sum->top) return snprintf(err, errlen, "%s: top directory name too long", file), -1;
    memcpy(sum->top, first, top_len);
    sum->top[top_len] = '\0';
    for (size_t i = 0; i < m->n; i++) {
        const char *p = m->v[i].path;
        if (strncmp(p, sum->top, top_len) || (p[top_len] != '/' && p[top_len] != '\0'))
            return snprintf(err, errlen, "%s: member '%s' is outside the top directory '%s'", file, p, sum->top), -1;
        if (p[top_len] == '\0' && m->v[i].type != 'd')
            return snprintf(err, errlen, "%s: member '%s' should be the top directory", file, p), -1;
    }
    // Links: symbolic ones must stay inside, hard ones must name an earlier regular file; nothing beneath a link.
    LinkSet ls = {xmalloc((m->n ? m->n : 1) * sizeof(char *)), 0};
    for (size_t i = 0; i < m->n; i++)
        if (m->v[i].type == 'l') ls.paths[ls.n++] = m->v[i].path;
    qsort(ls.paths, ls.n, sizeof *ls.paths, cmp_str);
    char why[256];
    int rc = -1;
    for (size_t i = 0; i < m->n; i++) {
        const Member *mb = &m->v[i];
        // Any parent that is a link?
        char *parent = xstrdup(mb->path);
        for (char *s = strrchr(parent, '/'); s; s = strrchr(parent, '/')) {
            *s = '\0';
            if (in_link_set(parent, &ls)) {
                snprintf(err, errlen, "%s: member '%s' lies beneath the symbolic link '%s': refused", file, mb->path, parent);
                free(parent);
                goto done;
            }
        }
        free(parent);
        if (mb->type == 'l' && archive_link_check(mb->path, mb->target, in_link_set, &ls, why, sizeof why) != 0) {
            snprintf(err, errlen, "%s: symbolic link '%s' -> '%s' %s: refused", file, mb->path, mb->target, why);
            goto done;
        }
        if (mb->type == 'h') {
            bool found = false;
            for (size_t k = 0; k < i && !found; k++) found = m->v[k].type == 'f' && !strcmp(m->v[k].path, mb->target);
            if (!found) {
                snprintf(err, errlen, "%s: hard link '%s' -> '%s' does not name an earlier file of the archive: refused",
                         file, mb->path, mb->target);
                goto done;
            }
        }
        sum->files += mb->type == 'f' || mb->type == 'h';
        if (mb->type == 'f') sum->bytes += mb->size;
        sum->dirs += mb->type == 'd';
        sum->links += mb->type == 'l';
    }
    rc = check_manifest(file, m, sum, err, errlen);
done:
    free(ls.paths);
    return rc;
}

int archive_verify(const char *file, ArchiveSummary *sum, char *err, size_t errlen) {
    Members m = {0};
    int rc = read_members(file, &m, err, errlen);
    if (rc == 0) rc = check_members(file, &m, sum, err, errlen);
    members_free(&m);
    return rc;
}

// ---- extraction ----

// libarchive's secure flags refuse ".." and absolute paths in what it writes, so the
// members are written relative to DIR after a chdir there (and back at the end).
int archive_extract(const char *file, const char *dir, ArchiveSummary *sum, char *err, size_t errlen) {
    Members m = {0};
    struct archive *a = NULL, *disk = NULL;
    char *tmp = NULL, *abs_file = NULL;
    int cwd = -1, rc = read_members(file, &m, err, errlen);
    if (rc == 0) rc = check_members(file, &m, sum, err, errlen);
    if (rc != 0) goto done;
    rc = -1;
    if (!(abs_file = realpath(file, NULL))) {
        snprintf(err, errlen, "%s: %s", file, strerror(errno));
        goto done;
    }
    if (mkdir_p(dir, 0755) != 0) {
        snprintf(err, errlen, "%s: cannot create: %s", dir, strerror(errno));
        goto done;
    }
    if ((cwd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 || chdir(dir) != 0) {
        snprintf(err, errlen, "%s: cannot enter: %s", dir, strerror(errno));
        goto done;
    }
    if (path_exists(sum->top)) {
        snprintf(err, errlen, "%s/%s already exists: not overwriting it", dir, sum->top);
        goto done;
    }
    tmp = xasprintf(".%s.lsst-extract.%ld", sum->top, (long)getpid());
    size_t top_len = strlen(sum->top);

    if (!(a = open_read(abs_file, err, errlen))) goto done;
    disk = archive_write_disk_new();
    if (!disk) lsst_die(EXIT_RUNTIME, "out of memory");
    archive_write_disk_set_options(disk, ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                             ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS | ARCHIVE_EXTRACT_NO_OVERWRITE);
    struct archive_entry *e;
    size_t i = 0;
    int r;
    while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK || r == ARCHIVE_WARN) {
        const Member *mb = i < m.n ? &m.v[i] : NULL;
        char *path = clean_path(archive_entry_pathname(e) ? archive_entry_pathname(e) : "");
        const char *link = archive_entry_symlink(e);
        bool same = mb && !strcmp(path, mb->path) &&
                    (mb->type != 'l' || (link && !strcmp(link, mb->target)));
        free(path);
        if (!same) {
            snprintf(err, errlen, "%s: the archive changed while it was being extracted", file);
            goto done;
        }
        // Member TOP/x goes to TMP/x.
        char *dest = xasprintf("%s%s", tmp, mb->path + top_len);
        archive_entry_set_pathname(e, dest);
        free(dest);
        if (mb->type == 'h') {
            char *target = xasprintf("%s%s", tmp, mb->target + top_len);
            archive_entry_set_hardlink(e, target);
            free(target);
        }
        if (mb->type == 'd') archive_entry_set_perm(e, 0755);   // we write inside it even if it says 0555
        if (archive_write_header(disk, e) != ARCHIVE_OK) {
            snprintf(err, errlen, "%s: cannot extract '%s': %s", file, mb->path, archive_error_string(disk));
            goto done;
        }
        if (mb->type == 'f') {
            Sha256 *s = sha256_new();
            const void *buf;
            size_t len;
            la_int64_t off;
            int dr;
            char hex[65];
            while ((dr = archive_read_data_block(a, &buf, &len, &off)) == ARCHIVE_OK) {
                sha256_update(s, buf, len);
                if (archive_write_data_block(disk, buf, len, off) != ARCHIVE_OK) {
                    sha256_final_hex(s, hex);
                    snprintf(err, errlen, "%s: cannot write '%s': %s", file, mb->path, archive_error_string(disk));
                    goto done;
                }
            }
            sha256_final_hex(s, hex);
            if (dr != ARCHIVE_EOF) {
                snprintf(err, errlen, "%s: damaged while reading member '%s': %s", file, mb->path, archive_error_string(a));
                goto done;
            }
            if (strcmp(hex, mb->hex)) {
                snprintf(err, errlen, "%s: member '%s' changed while it was being extracted", file, mb->path);
                goto done;
            }
        }
        if (archive_write_finish_entry(disk) != ARCHIVE_OK) {
            snprintf(err, errlen, "%s: cannot finish '%s': %s", file, mb->path, archive_error_string(disk));
            goto done;
        }
        i++;
    }
    if (r != ARCHIVE_EOF || i != m.n) {
        snprintf(err, errlen, "%s: the archive changed while it was being extracted", file);
        goto done;
    }
    if (archive_write_close(disk) != ARCHIVE_OK) {
        snprintf(err, errlen, "%s: cannot finish extracting: %s", file, archive_error_string(disk));
        goto done;
    }
    if (rename(tmp, sum->top) != 0) {
        snprintf(err, errlen, "%s/%s: cannot rename %s onto it: %s", dir, sum->top, tmp, strerror(errno));
        goto done;
    }
    fsync_dir(".");
    rc = 0;
done:
    if (a) archive_read_free(a);
    if (disk) archive_write_free(disk);
    if (rc != 0 && tmp && cwd >= 0) rm_rf(tmp);
    if (cwd >= 0) {
        if (fchdir(cwd) != 0) lsst_die(EXIT_RUNTIME, "cannot return to the working directory: %s", strerror(errno));
        close(cwd);
    }
    free(tmp);
    free(abs_file);
    members_free(&m);
    return rc;
}
