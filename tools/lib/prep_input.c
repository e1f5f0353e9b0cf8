#include "prep_input.h"
#include "common.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

struct PrepInput {
    char *path;
    uint64_t file_size;     // bytes on disk
    int fd;                 // plain file; -1 for a zip
    struct archive *zip;    // zip: positioned inside the member's data
    char *member;           // zip member name
    int64_t size;           // content bytes, -1 unknown
};

__attribute__((format(printf, 3, 4))) static void set_err(PrepError *e, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->code = code;
}

bool prep_input_path_is_zip(const char *path) {
    size_t n = strlen(path);
    return n >= 4 && !strcasecmp(path + n - 4, ".zip");
}

// libarchive failures: a real I/O error is a runtime failure; anything else
// (bad format, bad CRC, truncation) means the zip itself is broken.
static void zip_err(PrepError *e, struct archive *a, const char *path, const char *what) {
    int errnum = archive_errno(a);
    char s[400];
    snprintf(s, sizeof s, "%s", archive_error_string(a) ? archive_error_string(a) : "unknown libarchive error");
    for (size_t n = strlen(s); n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '.'); n--) s[n - 1] = '\0';
    for (char *c = s; *c; c++)
        if (*c == '\n') *c = ' ';  // one line
    bool io = errnum == EIO || errnum == ENOMEM;
    set_err(e, io ? EXIT_RUNTIME : EXIT_USAGE, "%s: %s%s: %s", path, io ? "" : "corrupt or truncated zip: ", what, s);
}

static struct archive *zip_open(const char *path, PrepError *e) {
    struct archive *a = archive_read_new();
    if (!a) { set_err(e, EXIT_RUNTIME, "%s: cannot initialise libarchive", path); return NULL; }
    if (archive_read_support_format_zip(a) != ARCHIVE_OK) {
        set_err(e, EXIT_RUNTIME, "%s: libarchive lacks zip support: %s", path, archive_error_string(a));
        archive_read_free(a);
        return NULL;
    }
    if (archive_read_open_filename(a, path, 1 << 20) != ARCHIVE_OK) {
        zip_err(e, a, path, "cannot open");
        archive_read_free(a);
        return NULL;
    }
    return a;
}

// Position a fresh archive at the data of its first entry (the only one, checked by open).
static int zip_seek_member(PrepInput *in, PrepError *e) {
    in->zip = zip_open(in->path, e);
    if (!in->zip) return -1;
    struct archive_entry *ent;
    int r = archive_read_next_header(in->zip, &ent);
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) { zip_err(e, in->zip, in->path, "reading the member header"); return -1; }
    return 0;
}

// Count the members of the zip (reading only headers where the zip allows),
// and remember the first one's name, type and size.
static int zip_scan(PrepInput *in, PrepError *e) {
    struct archive *a = zip_open(in->path, e);
    if (!a) return -1;
    int count = 0, rc = -1;
    char names[256] = "";
    struct archive_entry *ent;
    for (;;) {
        int r = archive_read_next_header(a, &ent);
        if (r == ARCHIVE_EOF) break;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) { zip_err(e, a, in->path, "reading the member list"); goto out; }
        const char *name = archive_entry_pathname(ent);
        if (!name) name = "?";
        if (count == 0) {
            in->member = xstrdup(name);
            if (archive_entry_filetype(ent) != AE_IFREG) {
                set_err(e, EXIT_USAGE, "%s: member '%s' is not a regular file", in->path, name);
                goto out;
            }
            in->size = archive_entry_size_is_set(ent) ? (int64_t)archive_entry_size(ent) : -1;
        }
        if (count < 4) {
            size_t len = strlen(names);
            snprintf(names + len, sizeof names - len, "%s'%s'", count ? ", " : "", name);
        }
        count++;
        if (archive_read_data_skip(a) != ARCHIVE_OK) { zip_err(e, a, in->path, "reading the member list"); goto out; }
    }
    if (count == 0) { set_err(e, EXIT_USAGE, "%s: the zip has no members (expected exactly one file)", in->path); goto out; }
    if (count > 1) {
        set_err(e, EXIT_USAGE, "%s: the zip has %d members (%s%s); lsst-prep reads a zip with exactly one file", in->path,
                count, names, count > 4 ? ", ..." : "");
        goto out;
    }
    rc = 0;
out:
    archive_read_free(a);
    return rc;
}

PrepInput *prep_input_open(const char *path, PrepError *e) {
    PrepInput *in = xcalloc(1, sizeof *in);
    in->path = xstrdup(path);
    in->fd = -1;
    in->size = -1;
    // Open the file itself first: the plain-file checks and messages are the same for a zip.
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int code = (errno == ENOENT || errno == EACCES || errno == ENOTDIR || errno == ELOOP) ? EXIT_USAGE : EXIT_RUNTIME;
        set_err(e, code, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) { set_err(e, EXIT_RUNTIME, "%s: cannot stat: %s", path, strerror(errno)); close(fd); goto fail; }
    if (S_ISDIR(st.st_mode)) { set_err(e, EXIT_USAGE, "%s: is a directory, not a file", path); close(fd); goto fail; }
    if (!S_ISREG(st.st_mode)) {
        set_err(e, EXIT_USAGE, "%s: not a regular file (lsst-prep needs its size up front)", path);
        close(fd);
        goto fail;
    }
    // A read of one byte proves the file is readable now, not only openable.
    char probe;
    if (st.st_size > 0 && pread(fd, &probe, 1, 0) < 0) {
        set_err(e, errno == EISDIR ? EXIT_USAGE : EXIT_RUNTIME, "%s: cannot read: %s", path, strerror(errno));
        close(fd);
        goto fail;
    }
    in->file_size = (uint64_t)st.st_size;
    if (!prep_input_path_is_zip(path)) {
        in->fd = fd;
        in->size = (int64_t)st.st_size;
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        return in;
    }
    close(fd);
    if (st.st_size == 0) { set_err(e, EXIT_USAGE, "%s: empty file (0 bytes), not a zip", path); goto fail; }
    if (zip_scan(in, e) != 0 || zip_seek_member(in, e) != 0) goto fail;
    return in;
fail:
    prep_input_close(in);
    return NULL;
}

int64_t prep_input_size(const PrepInput *in) { return in->size; }
const char *prep_input_member(const PrepInput *in) { return in->member; }
uint64_t prep_input_file_size(const PrepInput *in) { return in->file_size; }

ssize_t prep_input_read(PrepInput *in, void *buf, size_t n, PrepError *e) {
    size_t got = 0;
    while (got < n) {
        ssize_t r;
        if (in->zip) {
            r = archive_read_data(in->zip, (char *)buf + got, n - got);
            if (r < 0) {
                if (r == ARCHIVE_RETRY) continue;
                char what[300];
                snprintf(what, sizeof what, "member '%s'", in->member ? in->member : "?");
                zip_err(e, in->zip, in->path, what);
                return -1;
            }
        } else {
            r = read(in->fd, (char *)buf + got, n - got);
            if (r < 0) {
                if (errno == EINTR) continue;
                set_err(e, EXIT_RUNTIME, "%s: read failed: %s", in->path, strerror(errno));
                return -1;
            }
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

int prep_input_rewind(PrepInput *in, PrepError *e) {
    if (!in->zip) {
        if (lseek(in->fd, 0, SEEK_SET) != 0) {
            set_err(e, EXIT_RUNTIME, "%s: cannot seek: %s", in->path, strerror(errno));
            return -1;
        }
        return 0;
    }
    archive_read_free(in->zip);
    in->zip = NULL;
    return zip_seek_member(in, e);
}

void prep_input_close(PrepInput *in) {
    if (!in) return;
    if (in->fd >= 0) close(in->fd);
    if (in->zip) archive_read_free(in->zip);
    free(in->member);
    free(in->path);
    free(in);
}
