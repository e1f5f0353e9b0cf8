#include "prep_hash.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QUEUE_LEN 64
#define FILE_READ_BYTES (4u << 20)

// Two kinds of jobs. Updates of one Sha256 must run in order, and the main
// thread waits for them to reuse its input buffers, so the worker runs them
// first. File jobs are independent: the worker runs them when no update is
// pending, and at the end the main thread runs them too.
typedef struct {
    Sha256 *sha;
    const void *data;
    size_t n;
} UpdateJob;

typedef struct {
    char *path;  // owned
    char *hex;   // 65 chars, filled when hashed
} FileJob;

struct PrepHasher {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t changed;          // a job was queued or finished, or stop was set
    UpdateJob updates[QUEUE_LEN];    // ring: pending are [done, queued)
    uint64_t queued, done;           // tickets: update k has ticket k + 1
    FileJob *files;                  // [0, nfiles); [next_file, nfiles) not started
    int nfiles, cap_files, next_file;
    bool stop;
    char err[512];                   // first failure, "" if none (under mu)
    unsigned char *buf;              // FILE_READ_BYTES, the worker's for file jobs
};

static void set_err(PrepHasher *h, const char *path, int errnum) {
    pthread_mutex_lock(&h->mu);
    if (!h->err[0]) snprintf(h->err, sizeof h->err, "%s: cannot read back: %s", path, strerror(errnum));
    pthread_mutex_unlock(&h->mu);
}

// A file being hashed, one FILE_READ_BYTES piece at a time (so the worker can
// run pending updates in between).
typedef struct {
    FileJob job;
    int fd;
    Sha256 *sha;
} FileHash;

static bool file_open(PrepHasher *h, FileHash *fh, FileJob job) {
    fh->job = job;
    fh->fd = open(job.path, O_RDONLY | O_CLOEXEC);
    if (fh->fd < 0) { set_err(h, job.path, errno); return false; }
    // The writeback of this shard starts now; the final fsync then mostly finds it done.
    sync_file_range(fh->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    fh->sha = sha256_new();
    return true;
}

// Hash the next piece; false when the file is done (hex filled) or failed.
static bool file_step(PrepHasher *h, FileHash *fh, unsigned char *buf) {
    ssize_t r;
    do r = read(fh->fd, buf, FILE_READ_BYTES);
    while (r < 0 && errno == EINTR);
    if (r < 0) set_err(h, fh->job.path, errno);
    if (r > 0) { sha256_update(fh->sha, buf, (size_t)r); return true; }
    close(fh->fd);
    sha256_final_hex(fh->sha, fh->job.hex);
    return false;
}

static void hash_file(PrepHasher *h, FileJob job, unsigned char *buf) {
    FileHash fh;
    if (file_open(h, &fh, job))
        while (file_step(h, &fh, buf)) {}
}

// Take the next file job, or NULL; called with mu held.
static FileJob *take_file(PrepHasher *h) {
    return h->next_file < h->nfiles ? &h->files[h->next_file++] : NULL;
}

static void *worker(void *arg) {
    PrepHasher *h = arg;
    FileHash fh;
    bool in_file = false;  // fh is open
    pthread_mutex_lock(&h->mu);
    for (;;) {
        if (h->done < h->queued) {
            UpdateJob u = h->updates[h->done % QUEUE_LEN];
            pthread_mutex_unlock(&h->mu);
            sha256_update(u.sha, u.data, u.n);
            pthread_mutex_lock(&h->mu);
            h->done++;
            pthread_cond_broadcast(&h->changed);
            continue;
        }
        FileJob *f = in_file ? NULL : take_file(h);
        if (in_file || f) {
            FileJob j = f ? *f : fh.job;  // copy: files[] may move when the main thread queues more
            pthread_mutex_unlock(&h->mu);
            if (!in_file) in_file = file_open(h, &fh, j);
            if (in_file) in_file = file_step(h, &fh, h->buf);
            pthread_mutex_lock(&h->mu);
            continue;
        }
        if (h->stop) break;
        pthread_cond_wait(&h->changed, &h->mu);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

PrepHasher *prep_hasher_start(void) {
    PrepHasher *h = xcalloc(1, sizeof *h);
    h->buf = xmalloc(FILE_READ_BYTES);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->changed, NULL);
    // Signals go to the main thread, whose loops check for them.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&h->thread, NULL, worker, h);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) lsst_die(EXIT_RUNTIME, "cannot start the hashing thread: %s", strerror(rc));
    return h;
}

uint64_t prep_hasher_update(PrepHasher *h, Sha256 *sha, const void *data, size_t n) {
    pthread_mutex_lock(&h->mu);
    while (h->queued - h->done >= QUEUE_LEN) pthread_cond_wait(&h->changed, &h->mu);
    h->updates[h->queued % QUEUE_LEN] = (UpdateJob){sha, data, n};
    uint64_t ticket = ++h->queued;
    pthread_cond_broadcast(&h->changed);
    pthread_mutex_unlock(&h->mu);
    return ticket;
}

void prep_hasher_file(PrepHasher *h, const char *path, char hex[65]) {
    hex[0] = '\0';
    pthread_mutex_lock(&h->mu);
    if (h->nfiles == h->cap_files) {
        h->cap_files = h->cap_files ? 2 * h->cap_files : 16;
        h->files = xrealloc(h->files, (size_t)h->cap_files * sizeof *h->files);
    }
    h->files[h->nfiles++] = (FileJob){xstrdup(path), hex};
    pthread_cond_broadcast(&h->changed);
    pthread_mutex_unlock(&h->mu);
}

void prep_hasher_wait(PrepHasher *h, uint64_t ticket) {
    pthread_mutex_lock(&h->mu);
    while (h->done < ticket) pthread_cond_wait(&h->changed, &h->mu);
    pthread_mutex_unlock(&h->mu);
}

int prep_hasher_finish(PrepHasher *h, char *err, size_t errlen) {
    unsigned char *buf = xmalloc(FILE_READ_BYTES);
    pthread_mutex_lock(&h->mu);
    h->stop = true;
    pthread_cond_broadcast(&h->changed);
    // Share the file jobs that are left with the worker.
    for (FileJob *f; (f = take_file(h));) {
        FileJob j = *f;
        pthread_mutex_unlock(&h->mu);
        hash_file(h, j, buf);
        pthread_mutex_lock(&h->mu);
    }
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->thread, NULL);
    free(buf);
    int rc = h->err[0] ? -1 : 0;
    if (rc) snprintf(err, errlen, "%s", h->err);
    for (int i = 0; i < h->nfiles; i++) free(h->files[i].path);
    free(h->files);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->changed);
    free(h->buf);
    free(h);
    return rc;
}

// ---- fletcher32 ----
// HDF5 sums big-endian 16-bit words w_i (an odd last byte is the high half of a
// word) with folds mod 65535 every 360 words: sum1 = Σ w_i, sum2 = Σ (n - i) w_i.
// Folding keeps both congruent mod 65535 and never turns a positive sum into 0,
// so the result is each exact sum reduced to 0 (only for all-zero data) or to
// 1..65535. Here the exact sums come from 64-bit totals of 16-byte blocks: in a
// block, lanes a hold words 0,2,4,6 and lanes b words 1,3,5,7; per segment of m
// blocks, A = Σ words per lane and P = Σ of A after each block, so the segment
// adds Σ_q (8 P_q - q A_q) to sum2 (q = word position in the block). With m <= 256,
// P stays below 2^32.
typedef uint32_t v4u32 __attribute__((vector_size(16)));

static uint64_t hsum(v4u32 v) { return (uint64_t)v[0] + v[1] + v[2] + v[3]; }

uint32_t prep_fletcher32(const void *data, size_t len) {
    const uint8_t *p = data;
    uint64_t s1 = 0, s2 = 0;
    size_t nblocks = len / 16;
    const v4u32 lo = {0xff, 0xff, 0xff, 0xff}, hi = {0xff00, 0xff00, 0xff00, 0xff00};
    const v4u32 pos_a = {0, 2, 4, 6}, pos_b = {1, 3, 5, 7};
    while (nblocks) {
        size_t m = nblocks < 256 ? nblocks : 256;
        v4u32 aa = {0}, ab = {0}, pa = {0}, pb = {0};
        for (size_t j = 0; j < m; j++, p += 16) {
            v4u32 x;
            memcpy(&x, p, 16);  // little-endian lanes: bytes b0 b1 b2 b3 = words (b0 b1), (b2 b3)
            v4u32 wa = ((x << 8) & hi) | ((x >> 8) & lo);
            v4u32 wb = ((x >> 8) & hi) | (x >> 24);
            aa += wa;
            ab += wb;
            pa += aa;
            pb += ab;
        }
        uint64_t seg1 = hsum(aa) + hsum(ab);
        uint64_t seg2 = 8 * (hsum(pa) + hsum(pb)) - hsum(pos_a * aa) - hsum(pos_b * ab);
        s2 += 8 * m * s1 + seg2;
        s1 += seg1;
        nblocks -= m;
    }
    size_t rest = len % 16;
    for (size_t i = 0; i + 1 < rest; i += 2, p += 2) {
        s1 += ((uint32_t)p[0] << 8) | p[1];
        s2 += s1;
    }
    if (rest % 2) {
        s1 += (uint32_t)p[0] << 8;
        s2 += s1;
    }
    uint32_t r1 = s1 ? (uint32_t)((s1 - 1) % 65535 + 1) : 0;
    uint32_t r2 = s2 ? (uint32_t)((s2 - 1) % 65535 + 1) : 0;
    return (r2 << 16) | r1;
}
