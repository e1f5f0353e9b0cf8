// lsst-prep: bytes (enwik8, enwik8.zip, any file) -> HDF5 token shards + manifest.yaml
// (ARCHITECTURE §3). `lsst-prep --verify OUTDIR` re-checks an output directory.
//
// One pass over the input writes the shards (a first counting pass only for
// --vocab compact, or for a zip that does not record its member's size). The
// input is read one 1 MiB chunk at a time; each chunk goes to the file as
// stored (tokens + fletcher32) with H5Dwrite_chunk. SHA-256 of the input and of
// each closed shard (read back from the page cache) run on a second thread
// (prep_hash.c). Everything goes to PARENT/.NAME.lsst-prep-tmp.HOST.PID and is renamed
// to OUTDIR at the end.
#include "common.h"
#include "h5err.h"
#include "manifest.h"
#include "prep_hash.h"
#include "prep_input.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <hdf5.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHUNK_TOKENS (1u << 20)        // HDF5 chunk of /tokens: 1 MiB, also the unit of reading
#define FLETCHER_BYTES 4               // checksum appended to each stored chunk
#define NBUF 16                        // input buffers in flight between reading and hashing
#define VERIFY_BYTES (4u << 20)        // --verify reads /tokens in pieces of this size
#define DEFAULT_SHARD_SIZE (16u << 20) // tokens per shard: 16 MiB -> 6 train shards for enwik8
#define MAX_SHARDS 100000              // per split: names are SPLIT-NNNNN.h5

#define ENWIK8_SIZE 100000000ull
#define ENWIK8_SHA256 "2b49720ec4d78c3c9fabaee6e4179a5e997302b3a70029f30f2d582218c024a8"
#define ENWIK8_ZIP_SIZE 36445475ull
#define ENWIK8_ZIP_SHA256 "547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc"

static const char *const SPLIT_NAMES[3] = {"train", "valid", "test"};

// ---- failure and cleanup ----
// The temp directory is removed on every way out that is not success: fail()
// removes it itself, lsst_die() (out of memory) through the atexit hook; SIGINT/SIGTERM/SIGHUP set
// a flag the loops check (check_signal) so removal never runs inside a handler.
static char *g_tmp_dir;                  // ours while set
static volatile sig_atomic_t g_signal;   // the signal that asked us to stop

static void remove_tmp_dir(void) {
    if (!g_tmp_dir) return;
    rm_rf(g_tmp_dir);
    free(g_tmp_dir);
    g_tmp_dir = NULL;
}

__attribute__((format(printf, 2, 3))) static _Noreturn void fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lsst_error("%s", msg);
    remove_tmp_dir();
    fflush(stdout);
    // _exit, not exit: HDF5 1.10's exit hook can crash closing a file whose write
    // just failed (disk full), and nothing of ours needs flushing any more.
    _exit(code);
}

static void on_signal(int sig) { g_signal = sig; }

static void check_signal(void) {
    int sig = g_signal;
    if (!sig) return;
    remove_tmp_dir();
    const char *name = sigabbrev_np(sig);
    lsst_error("interrupted by SIG%s; the temporary directory was removed, nothing was written", name ? name : "?");
    signal(sig, SIG_DFL);
    raise(sig);
    _exit(128 + sig);
}

static void install_signals(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    // Past a file-size limit, write() must fail with EFBIG (reported, cleaned up)
    // instead of the default SIGXFSZ killing us with the temp dir left behind.
    signal(SIGXFSZ, SIG_IGN);
}

// ---- HDF5 errors ----
// HDF5 failures carry the innermost message of HDF5's error stack (h5err.h).
static const char *h5_cause_or_unknown(void) {
    const char *c = h5_cause();
    return c ? c : "unknown HDF5 error";
}

// Every HDF5 call is checked: on failure, "PATH: WHAT: cause" and exit `code`.
#define H5TRY(call, code, path, what)                                          \
    do {                                                                         \
        if ((call) < 0) fail(code, "%s: %s: %s", (path), (what), h5_cause_or_unknown());    \
    } while (0)

// ---- sizes and splits ----

// "16MiB", "16M", "64k", "1048576": K/M/G are powers of 1000, Ki/Mi/Gi (with or
// without a trailing B) powers of 1024. False on anything else or overflow.
static bool parse_size(const char *s, uint64_t *out) {
    if (!isdigit((unsigned char)s[0])) return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno) return false;
    static const struct { const char *suffix; uint64_t mult; } units[] = {
        {"", 1}, {"b", 1}, {"k", 1000}, {"kb", 1000}, {"m", 1000000}, {"mb", 1000000}, {"g", 1000000000},
        {"gb", 1000000000}, {"ki", 1ull << 10}, {"kib", 1ull << 10}, {"mi", 1ull << 20}, {"mib", 1ull << 20},
        {"gi", 1ull << 30}, {"gib", 1ull << 30}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(end, units[i].suffix)) continue;
        if (v > UINT64_MAX / units[i].mult) return false;
        *out = v * units[i].mult;
        return true;
    }
    return false;
}

// "5%", "12.5%": a percentage in millionths of a percent (100% = 100000000).
static bool parse_percent(const char *s, uint64_t *out) {
    uint64_t whole = 0, frac = 0;
    int ndig = 0, nfrac = 0;
    const char *p = s;
    for (; isdigit((unsigned char)*p); p++, ndig++) {
        whole = whole * 10 + (uint64_t)(*p - '0');
        if (whole > 100) return false;
    }
    if (*p == '.') {
        for (p++; isdigit((unsigned char)*p); p++, nfrac++) {
            if (nfrac >= 6) return false;
            frac = frac * 10 + (uint64_t)(*p - '0');
        }
        if (nfrac == 0) return false;
    }
    if (ndig == 0 || strcmp(p, "%") != 0) return false;
    for (int i = nfrac; i < 6; i++) frac *= 10;
    *out = whole * 1000000 + frac;
    return true;
}

typedef struct {
    bool percent;     // parts are percentages (millionths of a percent) rather than bytes
    uint64_t part[3]; // train, valid, test
    char text[96];    // as given, for messages
} SplitSpec;

static void parse_split(const char *arg, SplitSpec *sp) {
    snprintf(sp->text, sizeof sp->text, "%s", arg);
    char *copy = xstrdup(arg), *save = NULL;
    int n = 0, npercent = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save), n++) {
        if (n == 3) break;
        bool pc = strchr(tok, '%') != NULL;
        npercent += pc;
        if (!(pc ? parse_percent(tok, &sp->part[n]) : parse_size(tok, &sp->part[n])))
            fail(EXIT_USAGE, "--split %s: '%s' is neither a byte count (e.g. 5000000, 5M) nor a percentage (e.g. 5%%)",
                 arg, tok);
        if (sp->part[n] == 0) fail(EXIT_USAGE, "--split %s: '%s': every split needs at least 1 byte", arg, tok);
    }
    free(copy);
    if (n != 3 || arg[strlen(arg) - 1] == ',')
        fail(EXIT_USAGE, "--split %s: expected three parts TRAIN,VALID,TEST (e.g. 90%%,5%%,5%% or 900000,50000,50000)",
             arg);
    if (npercent != 0 && npercent != 3)
        fail(EXIT_USAGE, "--split %s: give all three parts as percentages or all three as byte counts", arg);
    sp->percent = npercent == 3;
    if (sp->percent && sp->part[0] + sp->part[1] + sp->part[2] != 100000000)
        fail(EXIT_USAGE, "--split %s: the percentages sum to %.6g%%, not 100%%", arg,
             (double)(sp->part[0] + sp->part[1] + sp->part[2]) / 1e6);
}

// Tokens of each split for an input of n bytes. Percentages: valid and test get
// floor(n * p / 100), train the rest. Returns false (with why) if a split is empty
// or byte counts do not add up to n.
static bool split_sizes(const SplitSpec *sp, uint64_t n, uint64_t out[3], char *why, size_t whylen) {
    if (!sp->percent) {
        unsigned __int128 sum = (unsigned __int128)sp->part[0] + sp->part[1] + sp->part[2];
        if (sum != n) {
            snprintf(why, whylen, "the split %s sums to %llu bytes, but the input has %llu bytes", sp->text,
                     (unsigned long long)sum, (unsigned long long)n);
            return false;
        }
        memcpy(out, sp->part, 3 * sizeof *out);
        return true;
    }
    out[1] = (uint64_t)((unsigned __int128)n * sp->part[1] / 100000000);
    out[2] = (uint64_t)((unsigned __int128)n * sp->part[2] / 100000000);
    out[0] = n - out[1] - out[2];
    for (int i = 0; i < 3; i++) {
        if (out[i] > 0) continue;
        // The smallest input that gives every split a byte, for the message.
        uint64_t need = 1, t[3];
        while (need < (1ull << 40)) {
            t[1] = (uint64_t)((unsigned __int128)need * sp->part[1] / 100000000);
            t[2] = (uint64_t)((unsigned __int128)need * sp->part[2] / 100000000);
            if (t[1] && t[2] && need - t[1] - t[2]) break;
            uint64_t step = need / 64;
            need += step ? step : 1;
        }
        while (need > 1) {  // the loop above may overshoot; walk back to the smallest
            uint64_t m = need - 1;
            t[1] = (uint64_t)((unsigned __int128)m * sp->part[1] / 100000000);
            t[2] = (uint64_t)((unsigned __int128)m * sp->part[2] / 100000000);
            if (!(t[1] && t[2] && m - t[1] - t[2])) break;
            need = m;
        }
        snprintf(why, whylen,
                 "%llu bytes is too small for the split %s: %s would get 0 bytes (every split needs at least 1 byte; "
                 "this split needs an input of at least %llu bytes)",
                 (unsigned long long)n, sp->text, SPLIT_NAMES[i], (unsigned long long)need);
        return false;
    }
    return true;
}

// ---- progress bar (stderr, only when it is a terminal) ----
typedef struct {
    bool on;
    const char *label;
    uint64_t total, done;  // bytes
    double t0, last;       // seconds
} Progress;

static void progress_start(Progress *p, bool on, const char *label, uint64_t total) {
    p->on = on;
    p->label = label;
    p->total = total;
    p->done = 0;
    p->t0 = now_seconds();
    p->last = 0;
}

static void progress_draw(Progress *p, bool final) {
    double t = now_seconds();
    if (!p->on || (!final && t - p->last < 0.1)) return;
    p->last = t;
    double frac = p->total ? (double)p->done / (double)p->total : 1.0;
    double rate = (double)p->done / 1e6 / (t - p->t0 > 1e-9 ? t - p->t0 : 1e-9);  // MB/s
    double eta = rate > 0 ? ((double)(p->total - p->done) / 1e6) / rate : 0;
    char bar[31];
    int fill = (int)(frac * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = '\0';
    fprintf(stderr, "\r%s: %-5s [%s] %3d%% %8.1f/%.1f MB %7.1f MB/s ETA %d:%02d ", lsst_prog, p->label, bar,
            (int)(frac * 100), (double)p->done / 1e6, (double)p->total / 1e6, rate, (int)eta / 60, (int)eta % 60);
    if (final) fputc('\n', stderr);
    fflush(stderr);
}

static void progress_add(Progress *p, uint64_t n) {
    p->done += n;
    progress_draw(p, false);
}

// ---- the preparation ----
typedef struct {
    // options
    const char *input_path, *outdir_arg;
    SplitSpec split;
    uint64_t shard_size;
    bool compact, force, quiet, progress;
    char expect_sha[65];  // "" when not given
    // paths
    char *outdir, *parent, *base;  // OUTDIR without trailing slashes, its parent, its last component
    // input
    PrepInput *in;
    uint64_t size;                 // content bytes
    char sha256[65];               // of the content ("" until known)
    const char *recognized;
    // vocab: byte -> id and id -> byte
    uint8_t to_id[256], to_byte[256];
    int vocab_size;
    // input buffers (CHUNK_TOKENS + FLETCHER_BYTES each): the hasher thread may still
    // read the content part of bufs[i] until its ticket[i] is done; `mapped` holds
    // compact ids. The chunk written is the buffer with its checksum appended.
    PrepHasher *hasher;
    unsigned char *bufs[NBUF], *mapped;
    uint64_t ticket[NBUF], last_ticket;
    int cur;
    Progress prog;
    Manifest man;
} Prep;

static void note(const Prep *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(const Prep *p, const char *fmt, ...) {
    if (p->quiet) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: note: ", lsst_prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static _Noreturn void fail_input(const PrepError *e) { fail(e->code, "%s", e->msg); }

// The next input buffer, once the hasher is done with what it held.
static unsigned char *next_buf(Prep *p) {
    p->cur = (p->cur + 1) % NBUF;
    prep_hasher_wait(p->hasher, p->ticket[p->cur]);
    return p->bufs[p->cur];
}

// Hash buf (the current buffer) in the background.
static void hash_async(Prep *p, Sha256 *sha, const unsigned char *buf, size_t n) {
    p->ticket[p->cur] = p->last_ticket = prep_hasher_update(p->hasher, sha, buf, n);
}

// Read exactly n content bytes at source offset `at` (the content must not end early).
static unsigned char *read_piece(Prep *p, size_t n, uint64_t at) {
    PrepError e;
    unsigned char *buf = next_buf(p);
    ssize_t r = prep_input_read(p->in, buf, n, &e);
    if (r < 0) fail_input(&e);
    if ((size_t)r < n) {
        if (prep_input_member(p->in))
            fail(EXIT_USAGE, "%s: corrupt zip: member '%s' ends at byte %llu but records %llu bytes", p->input_path,
                 prep_input_member(p->in), (unsigned long long)(at + (uint64_t)r), (unsigned long long)p->size);
        fail(EXIT_RUNTIME, "%s: the file shrank while being read (%llu bytes instead of %llu)", p->input_path,
             (unsigned long long)(at + (uint64_t)r), (unsigned long long)p->size);
    }
    return buf;
}

// After the last byte: the content must end here (for a zip this read also checks the CRC).
static void expect_end(Prep *p) {
    PrepError e;
    unsigned char extra;
    ssize_t r = prep_input_read(p->in, &extra, 1, &e);
    if (r < 0) fail_input(&e);
    if (r > 0) {
        if (prep_input_member(p->in))
            fail(EXIT_USAGE, "%s: corrupt zip: member '%s' is longer than the %llu bytes it records", p->input_path,
                 prep_input_member(p->in), (unsigned long long)p->size);
        fail(EXIT_RUNTIME, "%s: the file grew while being read (more than %llu bytes)", p->input_path,
             (unsigned long long)p->size);
    }
}

// The first pass, when needed: count the content, note which byte values occur, hash it.
static void scan_pass(Prep *p, bool *present) {
    Sha256 *sha = sha256_new();
    PrepError e;
    uint64_t total = 0;
    progress_start(&p->prog, p->progress, "scan", prep_input_size(p->in) > 0 ? (uint64_t)prep_input_size(p->in) : 0);
    for (;;) {
        unsigned char *b = next_buf(p);
        ssize_t r = prep_input_read(p->in, b, CHUNK_TOKENS, &e);
        if (r < 0) fail_input(&e);
        if (r == 0) break;
        hash_async(p, sha, b, (size_t)r);
        for (ssize_t i = 0; i < r; i++) present[b[i]] = true;
        total += (uint64_t)r;
        if (p->prog.total < total) p->prog.total = total;
        progress_add(&p->prog, (uint64_t)r);
        check_signal();
    }
    progress_draw(&p->prog, true);
    prep_hasher_wait(p->hasher, p->last_ticket);
    sha256_final_hex(sha, p->sha256);
    if (prep_input_size(p->in) >= 0 && total != (uint64_t)prep_input_size(p->in)) {
        if (prep_input_member(p->in))
            fail(EXIT_USAGE, "%s: corrupt zip: member '%s' holds %llu bytes but records %llu", p->input_path,
                 prep_input_member(p->in), (unsigned long long)total, (unsigned long long)prep_input_size(p->in));
        fail(EXIT_RUNTIME, "%s: the file changed size while being read (%llu bytes, then %llu)", p->input_path,
             (unsigned long long)prep_input_size(p->in), (unsigned long long)total);
    }
    p->size = total;
    if (prep_input_rewind(p->in, &e) != 0) fail_input(&e);
}

static void check_expected_sha(const Prep *p) {
    if (!p->expect_sha[0] || !strcmp(p->expect_sha, p->sha256)) return;
    fail(EXIT_USAGE, "%s: SHA-256 mismatch%s: expected %s, got %s", p->input_path,
         prep_input_member(p->in) ? " (of the unzipped member)" : "", p->expect_sha, p->sha256);
}

static void attr_write(hid_t obj, const char *name, hid_t file_type, hid_t mem_type, const void *value,
                       const char *path) {
    hid_t space = H5Screate(H5S_SCALAR);
    H5TRY(space, EXIT_RUNTIME, path, "cannot create a dataspace");
    hid_t attr = H5Acreate2(obj, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    H5TRY(attr, EXIT_RUNTIME, path, "cannot create an attribute");
    H5TRY(H5Awrite(attr, mem_type, value), EXIT_RUNTIME, path, "cannot write an attribute");
    H5TRY(H5Aclose(attr), EXIT_RUNTIME, path, "cannot close an attribute");
    H5TRY(H5Sclose(space), EXIT_RUNTIME, path, "cannot close a dataspace");
}

// split (string), shard, offset (byte offset in the source), vocab_size.
static void shard_attrs(hid_t obj, const char *split, int shard, uint64_t offset, int vocab_size, const char *path) {
    hid_t str = H5Tcopy(H5T_C_S1);
    H5TRY(str, EXIT_RUNTIME, path, "cannot create a string type");
    H5TRY(H5Tset_size(str, H5T_VARIABLE), EXIT_RUNTIME, path, "cannot create a string type");
    H5TRY(H5Tset_cset(str, H5T_CSET_UTF8), EXIT_RUNTIME, path, "cannot create a string type");
    attr_write(obj, "split", str, str, &split, path);
    H5TRY(H5Tclose(str), EXIT_RUNTIME, path, "cannot close a type");
    int32_t shard32 = shard, vocab32 = vocab_size;
    attr_write(obj, "shard", H5T_STD_I32LE, H5T_NATIVE_INT32, &shard32, path);
    attr_write(obj, "offset", H5T_STD_U64LE, H5T_NATIVE_UINT64, &offset, path);
    attr_write(obj, "vocab_size", H5T_STD_I32LE, H5T_NATIVE_INT32, &vocab32, path);
}

// Write source bytes [offset, offset + tokens) as TMP/NAME with its /tokens (and /vocab).
static void write_shard(Prep *p, Sha256 *content_sha, const char *split, int index, uint64_t offset, uint64_t tokens,
                        ManifestShard *sh) {
    sh->file = xasprintf("%s-%05d.h5", split, index);
    sh->offset = offset;
    sh->tokens = tokens;
    char *path = path_join(g_tmp_dir, sh->file);
    const char *shown = sh->file;  // messages name OUTDIR/FILE: what the user knows
    char *display = path_join(p->outdir, shown);

    hid_t file = H5Fcreate(path, H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT);
    H5TRY(file, EXIT_RUNTIME, display, "cannot create");
    hsize_t dims = tokens, chunk = tokens < CHUNK_TOKENS ? tokens : CHUNK_TOKENS;
    hid_t space = H5Screate_simple(1, &dims, NULL);
    H5TRY(space, EXIT_RUNTIME, display, "cannot create the /tokens dataspace");
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5TRY(dcpl, EXIT_RUNTIME, display, "cannot create a property list");
    H5TRY(H5Pset_chunk(dcpl, 1, &chunk), EXIT_RUNTIME, display, "cannot set the chunk size");
    H5TRY(H5Pset_fletcher32(dcpl), EXIT_RUNTIME, display, "cannot add the fletcher32 filter");
    H5TRY(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER), EXIT_RUNTIME, display, "cannot set the fill time");
    hid_t dset = H5Dcreate2(file, "tokens", H5T_STD_U8LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5TRY(dset, EXIT_RUNTIME, display, "cannot create /tokens");
    shard_attrs(dset, split, index, offset, p->vocab_size, display);
    shard_attrs(file, split, index, offset, p->vocab_size, display);
    if (p->compact) {
        hsize_t vdims = (hsize_t)p->vocab_size;
        hid_t vspace = H5Screate_simple(1, &vdims, NULL);
        H5TRY(vspace, EXIT_RUNTIME, display, "cannot create the /vocab dataspace");
        hid_t vset = H5Dcreate2(file, "vocab", H5T_STD_U8LE, vspace, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5TRY(vset, EXIT_RUNTIME, display, "cannot create /vocab");
        H5TRY(H5Dwrite(vset, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, p->to_byte), EXIT_RUNTIME, display,
                "cannot write /vocab");
        H5TRY(H5Dclose(vset), EXIT_RUNTIME, display, "cannot close /vocab");
        H5TRY(H5Sclose(vspace), EXIT_RUNTIME, display, "cannot close a dataspace");
    }

    // One chunk at a time, written as stored: the tokens, then their fletcher32
    // (what HDF5's filter would append), straight to the file with H5Dwrite_chunk.
    // HDF5's own filter checksums a byte at a time; this is 4x less CPU per byte.
    for (uint64_t done = 0; done < tokens;) {
        size_t len = tokens - done < chunk ? (size_t)(tokens - done) : (size_t)chunk;
        unsigned char *bytes = read_piece(p, len, offset + done), *data = bytes;
        if (content_sha) hash_async(p, content_sha, bytes, len);  // reads bytes[0, len) only
        if (p->compact) {
            data = p->mapped;
            for (size_t i = 0; i < len; i++) data[i] = p->to_id[bytes[i]];
        }
        // The last chunk of a shard is stored full-size like any other; pad with zeros.
        memset(data + len, 0, (size_t)chunk - len);
        uint32_t sum = prep_fletcher32(data, (size_t)chunk);
        for (int i = 0; i < FLETCHER_BYTES; i++) data[chunk + (hsize_t)i] = (unsigned char)(sum >> (8 * i));
        hsize_t coord = done;
        H5TRY(H5Dwrite_chunk(dset, H5P_DEFAULT, 0, &coord, (size_t)chunk + FLETCHER_BYTES, data), EXIT_RUNTIME,
              display, "cannot write /tokens");
        done += len;
        progress_add(&p->prog, len);
        check_signal();
    }
    H5TRY(H5Dclose(dset), EXIT_RUNTIME, display, "cannot write /tokens");
    H5TRY(H5Pclose(dcpl), EXIT_RUNTIME, display, "cannot close a property list");
    H5TRY(H5Sclose(space), EXIT_RUNTIME, display, "cannot close a dataspace");
    H5TRY(H5Fclose(file), EXIT_RUNTIME, display, "cannot finish writing");
    prep_hasher_file(p->hasher, path, sh->sha256);
    free(display);
    free(path);

    // Test hook: stop here (after the first complete shard) until a signal comes, so
    // tests can interrupt or kill a run at a known point. Not for users.
    const char *stall = getenv("LSST_PREP_TEST_STALL");
    if (stall && !strcmp(stall, "1")) {
        while (!g_signal) usleep(10000);
        check_signal();
    }
}

static void write_pass(Prep *p, const uint64_t split_tokens[3]) {
    Manifest *m = &p->man;
    m->nsplits = 3;
    // Hash the content here unless the first pass did.
    Sha256 *content_sha = p->sha256[0] ? NULL : sha256_new();
    progress_start(&p->prog, p->progress, "write", p->size);
    uint64_t offset = 0;
    for (int s = 0; s < 3; s++) {
        ManifestSplit *sp = &m->splits[s];
        sp->name = xstrdup(SPLIT_NAMES[s]);
        sp->offset = offset;
        sp->tokens = split_tokens[s];
        sp->nshards = (int)((split_tokens[s] + p->shard_size - 1) / p->shard_size);
        sp->shards = xcalloc((size_t)sp->nshards, sizeof *sp->shards);
        for (int k = 0; k < sp->nshards; k++) {
            uint64_t n = split_tokens[s] - (uint64_t)k * p->shard_size;
            if (n > p->shard_size) n = p->shard_size;
            write_shard(p, content_sha, SPLIT_NAMES[s], k, offset, n, &sp->shards[k]);
            offset += n;
        }
    }
    expect_end(p);
    progress_draw(&p->prog, true);
    char err[600];
    if (prep_hasher_finish(p->hasher, err, sizeof err) != 0) fail(EXIT_RUNTIME, "%s", err);
    p->hasher = NULL;
    if (content_sha) sha256_final_hex(content_sha, p->sha256);
}

// The identity (size, SHA-256) of a known file. Test hook: LSST_PREP_TEST_ENWIK8 and
// LSST_PREP_TEST_ENWIK8_ZIP = "SIZE:SHA256" stand in for the real files, so the
// tests reach this code without the 100 MB original. Not for users.
typedef struct {
    uint64_t size;
    char sha256[65];
} Known;

static Known known(const char *env, uint64_t size, const char *sha256) {
    Known k = {size, ""};
    snprintf(k.sha256, sizeof k.sha256, "%s", sha256);
    const char *v = getenv(env);
    unsigned long long s;
    char hex[65];
    if (v && sscanf(v, "%llu:%64[0-9a-f]", &s, hex) == 2 && strlen(hex) == 64) {
        k.size = s;
        memcpy(k.sha256, hex, 65);
    }
    return k;
}

static void recognize(Prep *p) {
    Known raw = known("LSST_PREP_TEST_ENWIK8", ENWIK8_SIZE, ENWIK8_SHA256);
    Known zip = known("LSST_PREP_TEST_ENWIK8_ZIP", ENWIK8_ZIP_SIZE, ENWIK8_ZIP_SHA256);
    p->recognized = "none";
    bool content = p->size == raw.size && !strcmp(p->sha256, raw.sha256);
    const char *member = prep_input_member(p->in);
    if (member && content && prep_input_file_size(p->in) == zip.size) {
        char zsha[65];
        if (sha256_file(p->input_path, zsha, NULL) == 0 && !strcmp(zsha, zip.sha256)) {
            p->recognized = "enwik8.zip";
            note(p, "%s is the enwik8.zip distribution (%llu bytes, SHA-256 %.12s...); its member is enwik8",
                 p->input_path, (unsigned long long)zip.size, zip.sha256);
            return;
        }
    }
    if (content) {
        p->recognized = "enwik8";
        note(p, "%s%s%s is the real enwik8 (%llu bytes, SHA-256 %.12s...)", p->input_path, member ? ":" : "",
             member ? member : "", (unsigned long long)raw.size, raw.sha256);
    } else if (p->size == raw.size) {
        note(p, "%s has enwik8's size but not its SHA-256 (%s); treated as an ordinary file", p->input_path,
             p->sha256);
    }
}

// ---- the output directory ----

// This host's name, for the temp dirs: a PID means something only on its own
// host, and OUTDIR may be on a file system that other nodes share.
static const char *host_name(void) {
    static char host[65];
    if (!host[0] && (gethostname(host, sizeof host - 1) != 0 || !host[0])) snprintf(host, sizeof host, "localhost");
    for (char *c = host; *c; c++)
        if (*c == '/') *c = '_';
    return host;
}

// Temp and set-aside names: PARENT/.NAME.lsst-prep-tmp.HOST.PID, PARENT/.NAME.lsst-prep-old.HOST.PID
static char *sibling(const Prep *p, const char *kind, long pid) {
    char *name = xasprintf(".%s.lsst-prep-%s.%s.%ld", p->base, kind, host_name(), pid);
    char *path = path_join(p->parent, name);
    free(name);
    return path;
}

// Remove what killed runs on this host left beside OUTDIR: temp dirs of
// processes that no longer exist; an old OUTDIR set aside by a --force run that
// died between its two renames goes back into place if OUTDIR is missing.
// Entries of other hosts are left alone (their PIDs cannot be checked from here).
static void clean_stale(const Prep *p) {
    DIR *d = opendir(p->parent);
    if (!d) return;
    char *tmp_prefix = xasprintf(".%s.lsst-prep-tmp.%s.", p->base, host_name());
    char *old_prefix = xasprintf(".%s.lsst-prep-old.%s.", p->base, host_name());
    struct dirent *de;
    while ((de = readdir(d))) {
        bool is_tmp = !strncmp(de->d_name, tmp_prefix, strlen(tmp_prefix));
        bool is_old = !strncmp(de->d_name, old_prefix, strlen(old_prefix));
        if (!is_tmp && !is_old) continue;
        const char *digits = de->d_name + strlen(is_tmp ? tmp_prefix : old_prefix);
        char *end;
        long pid = strtol(digits, &end, 10);
        if (!isdigit((unsigned char)digits[0]) || *end || pid <= 0) continue;
        // Our own PID can only be a leftover of an earlier process that had it.
        if (pid != (long)getpid() && (kill((pid_t)pid, 0) == 0 || errno != ESRCH)) continue;
        char *path = path_join(p->parent, de->d_name);
        if (is_old && !path_exists(p->outdir) && rename(path, p->outdir) == 0) {
            note(p, "restored %s from %s (a --force run was interrupted)", p->outdir, path);
        } else if (rm_rf(path) == 0) {
            note(p, "removed %s (left by process %ld, which no longer runs)", path, pid);
        } else {
            lsst_warn("cannot remove %s (left by process %ld): %s", path, pid, strerror(errno));
        }
        free(path);
    }
    closedir(d);
    free(tmp_prefix);
    free(old_prefix);
}

// OUTDIR must be creatable: its parent exists and is a directory; an existing
// OUTDIR is replaced only with --force, and only if it looks like lsst-prep output.
static void check_outdir(Prep *p) {
    char *o = xstrdup(p->outdir_arg);
    for (size_t n = strlen(o); n > 1 && o[n - 1] == '/'; n--) o[n - 1] = '\0';
    p->outdir = o;
    p->parent = path_dirname(o);
    p->base = xstrdup(path_basename(o));
    if (!p->base[0] || !strcmp(p->base, ".") || !strcmp(p->base, "..") || !strcmp(o, "/"))
        fail(EXIT_USAGE, "%s: OUTDIR must name a new directory", p->outdir_arg);
    struct stat st;
    if (stat(p->parent, &st) != 0)
        fail(EXIT_USAGE, "%s: cannot create it: parent directory %s: %s%s", o, p->parent, strerror(errno),
             errno == ENOENT ? " (create it first, e.g. mkdir -p)" : "");
    if (!S_ISDIR(st.st_mode)) fail(EXIT_USAGE, "%s: cannot create it: %s is not a directory", o, p->parent);
    if (access(p->parent, W_OK | X_OK) != 0)
        fail(EXIT_USAGE, "%s: cannot create it: parent directory %s: %s", o, p->parent, strerror(errno));
    clean_stale(p);
    if (lstat(o, &st) != 0) return;
    if (!p->force) fail(EXIT_USAGE, "%s: already exists; use --force to replace it", o);
    if (!S_ISDIR(st.st_mode)) fail(EXIT_USAGE, "%s: exists and is not a directory; refusing to replace it", o);
    char *man = path_join(o, MANIFEST_FILE);
    bool looks_ours = path_exists(man);
    free(man);
    if (!looks_ours) {
        DIR *d = opendir(o);
        struct dirent *de;
        int entries = 0;
        while (d && (de = readdir(d)))
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) entries++;
        if (d) closedir(d);
        if (entries)
            fail(EXIT_USAGE, "%s: exists and is not an lsst-prep output (no %s); refusing to replace it even with --force",
                 o, MANIFEST_FILE);
    }
}

static void make_tmp_dir(Prep *p) {
    char *tmp = sibling(p, "tmp", (long)getpid());
    if (mkdir(tmp, 0777) != 0) fail(EXIT_RUNTIME, "%s: cannot create the temporary directory %s: %s", p->outdir, tmp,
                                    strerror(errno));
    g_tmp_dir = tmp;
}

static void fsync_path(const char *path, const char *display) {
    if (fsync_file(path) != 0) fail(EXIT_RUNTIME, "%s: cannot sync to disk: %s", display, strerror(errno));
}

// Make the temp dir durable, then move it to OUTDIR in one rename (replace_dir). With
// --force and an existing OUTDIR the two are exchanged atomically (renameat2), so there
// is always a complete OUTDIR; filesystems without that get rename-aside.
static void commit(Prep *p) {
    for (int s = 0; s < 3; s++)
        for (int k = 0; k < p->man.splits[s].nshards; k++) {
            char *path = path_join(g_tmp_dir, p->man.splits[s].shards[k].file);
            char *display = path_join(p->outdir, p->man.splits[s].shards[k].file);
            fsync_path(path, display);
            free(display);
            free(path);
            check_signal();
        }
    if (manifest_write(&p->man, g_tmp_dir) != 0)
        fail(EXIT_RUNTIME, "%s/%s: cannot write: %s", p->outdir, MANIFEST_FILE, strerror(errno));
    check_signal();

    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    sigprocmask(SIG_BLOCK, &block, &old);
    if (!p->force && path_exists(p->outdir))
        fail(EXIT_RUNTIME, "%s: appeared while preparing; use --force to replace it", p->outdir);
    char *aside = sibling(p, "old", (long)getpid()), *leftover = NULL, err[1024];
    int rc = replace_dir(g_tmp_dir, p->outdir, aside, p->force, &leftover, err, sizeof err);
    free(aside);
    free(g_tmp_dir);
    g_tmp_dir = leftover;  // unpublished output or the replaced one: removed either way
    if (rc != 0) fail(EXIT_RUNTIME, "%s", err);
    remove_tmp_dir();
    sigprocmask(SIG_SETMASK, &old, NULL);
}

static int prepare(Prep *p) {
    PrepError e;
    p->in = prep_input_open(p->input_path, &e);
    if (!p->in) fail_input(&e);
    check_outdir(p);
    int64_t known = prep_input_size(p->in);
    if (known == 0)
        fail(EXIT_USAGE, "%s: %s is empty (0 bytes); nothing to prepare", p->input_path,
             prep_input_member(p->in) ? "the zip member" : "the file");
    for (int i = 0; i < NBUF; i++) p->bufs[i] = xmalloc(CHUNK_TOKENS + FLETCHER_BYTES);
    p->mapped = xmalloc(CHUNK_TOKENS + FLETCHER_BYTES);
    p->hasher = prep_hasher_start();

    // Vocabulary: raw = identity over 256; compact = dense ids of the bytes present.
    bool present[256] = {false};
    if (p->compact || known < 0) scan_pass(p, present);
    else p->size = (uint64_t)known;
    if (p->size == 0) fail(EXIT_USAGE, "%s: the zip member is empty (0 bytes); nothing to prepare", p->input_path);
    if (p->sha256[0]) check_expected_sha(p);  // before writing anything
    if (p->compact) {
        p->vocab_size = 0;
        for (int b = 0; b < 256; b++)
            if (present[b]) { p->to_id[b] = (uint8_t)p->vocab_size; p->to_byte[p->vocab_size++] = (uint8_t)b; }
    } else {
        p->vocab_size = 256;
        for (int b = 0; b < 256; b++) p->to_id[b] = p->to_byte[b] = (uint8_t)b;
    }

    uint64_t split_tokens[3];
    char why[512];
    if (!split_sizes(&p->split, p->size, split_tokens, why, sizeof why)) fail(EXIT_USAGE, "%s: %s", p->input_path, why);
    for (int s = 0; s < 3; s++)
        if ((split_tokens[s] + p->shard_size - 1) / p->shard_size >= MAX_SHARDS)
            fail(EXIT_USAGE, "--shard-size %llu gives %s %llu shards; at most %d per split (use a larger --shard-size)",
                 (unsigned long long)p->shard_size, SPLIT_NAMES[s],
                 (unsigned long long)((split_tokens[s] + p->shard_size - 1) / p->shard_size), MAX_SHARDS - 1);

    make_tmp_dir(p);
    write_pass(p, split_tokens);
    check_expected_sha(p);
    recognize(p);

    Manifest *m = &p->man;
    const char *member = prep_input_member(p->in);
    m->source_name = member ? xasprintf("%s:%s", path_basename(p->input_path), member)
                            : xstrdup(path_basename(p->input_path));
    m->source_size = p->size;
    memcpy(m->source_sha256, p->sha256, 65);
    m->recognized = xstrdup(p->recognized);
    m->vocab_kind = xstrdup(p->compact ? "compact" : "raw");
    m->vocab_size = p->vocab_size;
    commit(p);

    if (!p->quiet) {
        printf("%s: %llu tokens (vocab %s, %d): train %llu in %d shard%s, valid %llu in %d, test %llu in %d\n",
               p->outdir, (unsigned long long)p->size, m->vocab_kind, p->vocab_size,
               (unsigned long long)m->splits[0].tokens, m->splits[0].nshards, m->splits[0].nshards == 1 ? "" : "s",
               (unsigned long long)m->splits[1].tokens, m->splits[1].nshards, (unsigned long long)m->splits[2].tokens,
               m->splits[2].nshards);
    }
    manifest_free(m);
    prep_input_close(p->in);
    for (int i = 0; i < NBUF; i++) free(p->bufs[i]);
    free(p->mapped);
    free(p->outdir);
    free(p->parent);
    free(p->base);
    return EXIT_OK;
}

// ---- --verify ----

// Read a scalar attribute of obj as uint64 / string; false when absent or of another kind.
static bool attr_u64(hid_t obj, const char *name, uint64_t *out) {
    if (H5Aexists(obj, name) <= 0) return false;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return false;
    hid_t t = H5Aget_type(a);
    bool ok = t >= 0 && H5Tget_class(t) == H5T_INTEGER && H5Aread(a, H5T_NATIVE_UINT64, out) >= 0;
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return ok;
}

static bool attr_str_is(hid_t obj, const char *name, const char *want) {
    if (H5Aexists(obj, name) <= 0) return false;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return false;
    hid_t t = H5Aget_type(a);
    bool ok = false;
    if (t >= 0 && H5Tget_class(t) == H5T_STRING) {
        if (H5Tis_variable_str(t) > 0) {
            char *s = NULL;
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, H5T_VARIABLE);
            H5Tset_cset(mt, H5Tget_cset(t));
            if (H5Aread(a, mt, &s) >= 0 && s) {
                ok = !strcmp(s, want);
                H5free_memory(s);
            }
            H5Tclose(mt);
        } else {
            size_t n = H5Tget_size(t);
            char *s = xcalloc(n + 1, 1);
            if (H5Aread(a, t, s) >= 0) ok = !strcmp(s, want);
            free(s);
        }
    }
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return ok;
}

static void verify_attrs(hid_t obj, const char *where, const char *path, const char *split, int shard,
                         uint64_t offset, int vocab_size) {
    uint64_t v;
    if (!attr_str_is(obj, "split", split)) fail(EXIT_RUNTIME, "%s: %s attribute split is not '%s'", path, where, split);
    if (!attr_u64(obj, "shard", &v) || v != (uint64_t)shard)
        fail(EXIT_RUNTIME, "%s: %s attribute shard is not %d", path, where, shard);
    if (!attr_u64(obj, "offset", &v) || v != offset)
        fail(EXIT_RUNTIME, "%s: %s attribute offset is not %llu", path, where, (unsigned long long)offset);
    if (!attr_u64(obj, "vocab_size", &v) || v != (uint64_t)vocab_size)
        fail(EXIT_RUNTIME, "%s: %s attribute vocab_size is not %d", path, where, vocab_size);
}

// Check one shard; its bytes (ids mapped back through /vocab) go into content_sha.
static void verify_shard(const Manifest *m, const ManifestSplit *sp, int k, Sha256 *content_sha, unsigned char *buf) {
    const ManifestShard *sh = &sp->shards[k];
    char *path = path_join(m->dir, sh->file);
    struct stat st;
    if (stat(path, &st) != 0) fail(EXIT_RUNTIME, "%s: %s (listed in %s/%s)", path, strerror(errno), m->dir, MANIFEST_FILE);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    H5TRY(file, EXIT_RUNTIME, path, "not a readable HDF5 file");
    verify_attrs(file, "root group", path, sp->name, k, sh->offset, m->vocab_size);
    if (H5Lexists(file, "tokens", H5P_DEFAULT) <= 0) fail(EXIT_RUNTIME, "%s: no dataset /tokens", path);
    hid_t dset = H5Dopen2(file, "tokens", H5P_DEFAULT);
    H5TRY(dset, EXIT_RUNTIME, path, "cannot open /tokens");
    verify_attrs(dset, "/tokens", path, sp->name, k, sh->offset, m->vocab_size);
    hid_t type = H5Dget_type(dset);
    H5TRY(type, EXIT_RUNTIME, path, "cannot read the type of /tokens");
    if (H5Tget_class(type) != H5T_INTEGER || H5Tget_size(type) != 1 || H5Tget_sign(type) != H5T_SGN_NONE)
        fail(EXIT_RUNTIME, "%s: /tokens is not uint8", path);
    H5Tclose(type);
    hid_t space = H5Dget_space(dset);
    H5TRY(space, EXIT_RUNTIME, path, "cannot read the shape of /tokens");
    hsize_t dims = 0;
    if (H5Sget_simple_extent_ndims(space) != 1 || H5Sget_simple_extent_dims(space, &dims, NULL) != 1)
        fail(EXIT_RUNTIME, "%s: /tokens is not 1-D", path);
    if (dims != sh->tokens)
        fail(EXIT_RUNTIME, "%s: /tokens holds %llu tokens, %s/%s says %llu", path, (unsigned long long)dims, m->dir,
             MANIFEST_FILE, (unsigned long long)sh->tokens);
    hid_t dcpl = H5Dget_create_plist(dset);
    H5TRY(dcpl, EXIT_RUNTIME, path, "cannot read the properties of /tokens");
    unsigned fl = 0;
    if (H5Pget_layout(dcpl) != H5D_CHUNKED || H5Pget_filter_by_id2(dcpl, H5Z_FILTER_FLETCHER32, &fl, NULL, NULL, 0,
                                                                    NULL, NULL) < 0)
        fail(EXIT_RUNTIME, "%s: /tokens is not chunked with the fletcher32 filter", path);
    H5Pclose(dcpl);
    H5Eclear2(H5E_DEFAULT);

    uint8_t to_byte[256];
    for (int i = 0; i < 256; i++) to_byte[i] = (uint8_t)i;
    if (!strcmp(m->vocab_kind, "compact")) {
        if (H5Lexists(file, "vocab", H5P_DEFAULT) <= 0) fail(EXIT_RUNTIME, "%s: no dataset /vocab (vocab compact)", path);
        hid_t v = H5Dopen2(file, "vocab", H5P_DEFAULT);
        H5TRY(v, EXIT_RUNTIME, path, "cannot open /vocab");
        hid_t vs = H5Dget_space(v);
        hsize_t vn = 0;
        if (vs < 0 || H5Sget_simple_extent_ndims(vs) != 1 || H5Sget_simple_extent_dims(vs, &vn, NULL) != 1 ||
            vn != (hsize_t)m->vocab_size)
            fail(EXIT_RUNTIME, "%s: /vocab does not hold %d entries", path, m->vocab_size);
        H5TRY(H5Dread(v, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, to_byte), EXIT_RUNTIME, path,
                "cannot read /vocab");
        for (int i = 1; i < m->vocab_size; i++)
            if (to_byte[i] <= to_byte[i - 1]) fail(EXIT_RUNTIME, "%s: /vocab is not in increasing byte order", path);
        H5Sclose(vs);
        H5Dclose(v);
    }
    // Read every token: HDF5 checks each chunk's fletcher32 on the way.
    for (hsize_t done = 0; done < dims;) {
        hsize_t len = dims - done < VERIFY_BYTES ? dims - done : VERIFY_BYTES, start = done;
        hid_t mem = H5Screate_simple(1, &len, NULL);
        H5TRY(mem, EXIT_RUNTIME, path, "cannot create a dataspace");
        H5TRY(H5Sselect_hyperslab(space, H5S_SELECT_SET, &start, NULL, &len, NULL), EXIT_RUNTIME, path,
                "cannot select a hyperslab");
        char what[96];
        snprintf(what, sizeof what, "/tokens [%llu, %llu)", (unsigned long long)start, (unsigned long long)(start + len));
        H5TRY(H5Dread(dset, H5T_NATIVE_UCHAR, mem, space, H5P_DEFAULT, buf), EXIT_RUNTIME, path, what);
        H5Sclose(mem);
        for (hsize_t i = 0; i < len; i++) {
            if (buf[i] >= m->vocab_size)
                fail(EXIT_RUNTIME, "%s: token %llu is %d, outside the vocabulary of %d", path,
                     (unsigned long long)(start + i), buf[i], m->vocab_size);
            buf[i] = to_byte[buf[i]];
        }
        sha256_update(content_sha, buf, (size_t)len);
        done += len;
    }
    H5Sclose(space);
    H5Dclose(dset);
    H5TRY(H5Fclose(file), EXIT_RUNTIME, path, "cannot close");
    char hex[65];
    if (sha256_file(path, hex, NULL) != 0) fail(EXIT_RUNTIME, "%s: cannot read: %s", path, strerror(errno));
    if (strcmp(hex, sh->sha256))
        fail(EXIT_RUNTIME, "%s: SHA-256 mismatch: %s/%s says %s, the file has %s", path, m->dir, MANIFEST_FILE,
             sh->sha256, hex);
    free(path);
}

static int verify(const char *dir, bool quiet) {
    struct stat st;
    if (stat(dir, &st) != 0) fail(EXIT_USAGE, "%s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) fail(EXIT_USAGE, "%s: not a directory", dir);
    Manifest m;
    char err[1024];
    if (manifest_load(&m, dir, err, sizeof err) != 0) fail(EXIT_RUNTIME, "%s", err);
    unsigned char *buf = xmalloc(VERIFY_BYTES);
    Sha256 *content = sha256_new();
    int nshards = 0;
    for (int s = 0; s < m.nsplits; s++)
        for (int k = 0; k < m.splits[s].nshards; k++, nshards++) verify_shard(&m, &m.splits[s], k, content, buf);
    char hex[65];
    sha256_final_hex(content, hex);
    if (strcmp(hex, m.source_sha256))
        fail(EXIT_RUNTIME, "%s: the shards' bytes hash to %s, but %s/%s says the source is %s", dir, hex, dir,
             MANIFEST_FILE, m.source_sha256);
    if (!quiet)
        printf("%s: OK: %d shards, %llu tokens (vocab %s, %d); every shard's SHA-256 and fletcher32 checksums match, "
               "and the tokens rebuild the source (SHA-256 %.12s...)\n",
               dir, nshards, (unsigned long long)m.source_size, m.vocab_kind, m.vocab_size, m.source_sha256);
    free(buf);
    manifest_free(&m);
    return EXIT_OK;
}

// ---- main ----

static void usage(FILE *f) {
    fprintf(f,
            "usage: lsst-prep [options] INPUT OUTDIR\n"
            "       lsst-prep --verify OUTDIR\n"
            "\n"
            "Turn a byte file into HDF5 token shards and a manifest for lsst-run (one byte = one token).\n"
            "INPUT is enwik8, enwik8.zip (any *.zip with exactly one member, streamed, never unzipped to disk)\n"
            "or any regular file. OUTDIR must not exist (see --force); its parent must.\n"
            "\n"
            "Options:\n"
            "  --split TRAIN,VALID,TEST  split sizes, as percentages summing to 100 (default 90%%,5%%,5%%:\n"
            "                            valid and test get floor(5%%), train the rest) or as byte counts\n"
            "                            summing to the input size (e.g. 90M,5M,5M)\n"
            "  --shard-size SIZE         tokens per shard file (default 16MiB); K/M/G = 1000^n, Ki/Mi/Gi = 1024^n\n"
            "  --vocab raw|compact       raw: token = byte, vocab 256 (default); compact: dense ids of the\n"
            "                            bytes present, in byte order, table stored as /vocab in every shard\n"
            "  --expect-sha256 HEX       refuse the input unless its SHA-256 is HEX (for a zip: of the\n"
            "                            unzipped member)\n"
            "  --force                   replace an existing OUTDIR (one that holds a manifest.yaml, or is empty)\n"
            "  --verify OUTDIR           re-check OUTDIR against its manifest: sizes, SHA-256 of every shard,\n"
            "                            fletcher32 of every chunk, and the SHA-256 of the rebuilt source\n"
            "  -q, --quiet               no progress bar, notes or summary; errors only\n"
            "  -h, --help                this help\n"
            "  -V, --version             version\n"
            "\n"
            "Example:\n"
            "  mkdir -p data\n"
            "  lsst-prep enwik8.zip data/enwik8        # 90M/5M/5M bytes, 6+1+1 shards, vocab 256\n"
            "  lsst-prep --verify data/enwik8\n"
            "\n"
            "Exit status: 0 ok, 1 runtime failure (disk full, I/O error, damaged OUTDIR in --verify),\n"
            "2 usage or invalid input (bad option, missing/empty/corrupt input, hash mismatch, OUTDIR exists).\n");
}

int main(int argc, char **argv) {
    lsst_prog = "lsst-prep";
    // HDF5 allocates a buffer per chunk for the fletcher32 filter; keeping such
    // blocks in the heap instead of fresh mmaps saves a page fault per 4 KiB.
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    Prep p = {0};
    p.shard_size = DEFAULT_SHARD_SIZE;
    parse_split("90%,5%,5%", &p.split);
    const char *verify_dir = NULL;
    bool other_options = false;
    enum { OPT_SPLIT = 256, OPT_SHARD, OPT_VOCAB, OPT_EXPECT, OPT_FORCE, OPT_VERIFY };
    static const struct option longopts[] = {
        {"split", required_argument, NULL, OPT_SPLIT},
        {"shard-size", required_argument, NULL, OPT_SHARD},
        {"vocab", required_argument, NULL, OPT_VOCAB},
        {"expect-sha256", required_argument, NULL, OPT_EXPECT},
        {"force", no_argument, NULL, OPT_FORCE},
        {"verify", required_argument, NULL, OPT_VERIFY},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "qhV", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_SPLIT: parse_split(optarg, &p.split); other_options = true; break;
        case OPT_SHARD:
            if (!parse_size(optarg, &p.shard_size) || p.shard_size == 0)
                fail(EXIT_USAGE, "--shard-size %s: expected a positive size such as 16MiB, 8M or 1048576", optarg);
            other_options = true;
            break;
        case OPT_VOCAB:
            if (strcmp(optarg, "raw") && strcmp(optarg, "compact"))
                fail(EXIT_USAGE, "--vocab %s: expected raw or compact", optarg);
            p.compact = !strcmp(optarg, "compact");
            other_options = true;
            break;
        case OPT_EXPECT: {
            size_t n = strlen(optarg);
            bool ok = n == 64;
            for (size_t i = 0; ok && i < n; i++) ok = isxdigit((unsigned char)optarg[i]);
            if (!ok) fail(EXIT_USAGE, "--expect-sha256 %s: expected 64 hex digits", optarg);
            for (size_t i = 0; i < n; i++) p.expect_sha[i] = (char)tolower((unsigned char)optarg[i]);
            p.expect_sha[64] = '\0';
            other_options = true;
            break;
        }
        case OPT_FORCE: p.force = true; other_options = true; break;
        case OPT_VERIFY: verify_dir = optarg; break;
        case 'q': p.quiet = true; break;
        case 'h': usage(stdout); return EXIT_OK;
        case 'V': lsst_print_version(); return EXIT_OK;
        default: fprintf(stderr, "Try 'lsst-prep --help'.\n"); return EXIT_USAGE;
        }
    }
    atexit(remove_tmp_dir);
    install_signals();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (verify_dir) {
        if (other_options || optind != argc)
            fail(EXIT_USAGE, "--verify takes only OUTDIR (and --quiet); try 'lsst-prep --help'");
        return verify(verify_dir, p.quiet);
    }
    if (argc - optind != 2) {
        lsst_error("expected INPUT and OUTDIR, got %d argument%s", argc - optind, argc - optind == 1 ? "" : "s");
        fprintf(stderr, "Try 'lsst-prep --help'.\n");
        return EXIT_USAGE;
    }
    p.input_path = argv[optind];
    p.outdir_arg = argv[optind + 1];
    p.progress = !p.quiet && isatty(STDERR_FILENO);
    return prepare(&p);
}
