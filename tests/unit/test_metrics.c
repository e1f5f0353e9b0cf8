// metrics: round trip of every field and attribute (read back through the plain HDF5
// C API, with types built here, not the writer's), replacement, resume truncation,
// live SWMR reading, and a writer killed with SIGKILL after a flush.
#include "check.h"
#include "common.h"
#include "metrics.h"

#include <hdf5.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[256];
static int have_h5py;

static const char *FIELDS[] = {"step",   "loss",      "lr",     "grad_norm",  "tokens",
                               "t_step", "t_compute", "t_comm", "comm_bytes", "mem_peak"};

static MetricsAttrs test_attrs(void) {
    return (MetricsAttrs){.rank = 3, .world = 8, .sp_rank = 1, .dp_rank = 1, .sp_size = 2, .dp_size = 4,
                          .scheme = "lss", .backend = "cpu", .host = "node-07", .device = "cpu:0",
                          .seq_len = 4096, .model_json = "{\"layers\": 2, \"dim\": 64, \"name\": \"caf\xc3\xa9\"}",
                          .git = "abc1234-dirty"};
}

static StepRow step_row(int64_t s) {
    return (StepRow){.step = s, .loss = 5.5 - 0.01 * (double)s, .lr = 3e-4 * (double)s / 7.0,
                     .grad_norm = 1.0 / (double)s,
                     .tokens = 4096 * s, .t_step = 0.125 + (double)s * 1e-3, .t_compute = 0.1 + (double)s * 1e-4,
                     .t_comm = 0.015625 * (double)s, .comm_bytes = ((int64_t)1 << 40) + s,
                     .mem_peak = 123456789012LL + s};
}

static EvalRow eval_row(int64_t s, const char *split) {
    EvalRow r = {.step = s, .loss = 1.5 + (double)s, .bpc = (1.5 + (double)s) / 0.6931471805599453};
    memset(r.split, 'X', sizeof r.split);   // garbage after the terminator must not reach the file
    memcpy(r.split, split, strlen(split) + 1);
    return r;
}

// The reader's own view of the rows (same field names, independent layout).
typedef struct {
    double loss, lr, grad_norm, t_step, t_compute, t_comm;
    long long step, tokens, comm_bytes, mem_peak;
} ReadStep;

typedef struct {
    char split[9];   // one byte more than the file: always terminated
    long long step;
    double loss, bpc;
} ReadEval;

static hid_t read_step_type(void) {
    hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(ReadStep));
#define F(name, type) H5Tinsert(t, #name, HOFFSET(ReadStep, name), type)
    F(step, H5T_NATIVE_LLONG); F(loss, H5T_NATIVE_DOUBLE); F(lr, H5T_NATIVE_DOUBLE);
    F(grad_norm, H5T_NATIVE_DOUBLE); F(tokens, H5T_NATIVE_LLONG); F(t_step, H5T_NATIVE_DOUBLE);
    F(t_compute, H5T_NATIVE_DOUBLE); F(t_comm, H5T_NATIVE_DOUBLE); F(comm_bytes, H5T_NATIVE_LLONG);
    F(mem_peak, H5T_NATIVE_LLONG);
#undef F
    return t;
}

static hid_t read_eval_type(void) {
    hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(ReadEval)), s = H5Tcopy(H5T_C_S1);
    H5Tset_size(s, 9);
    H5Tset_strpad(s, H5T_STR_NULLTERM);
    H5Tinsert(t, "step", HOFFSET(ReadEval, step), H5T_NATIVE_LLONG);
    H5Tinsert(t, "split", HOFFSET(ReadEval, split), s);
    H5Tinsert(t, "loss", HOFFSET(ReadEval, loss), H5T_NATIVE_DOUBLE);
    H5Tinsert(t, "bpc", HOFFSET(ReadEval, bpc), H5T_NATIVE_DOUBLE);
    H5Tclose(s);
    return t;
}

// Open for reading: SWMR read when asked (files of a live or killed writer).
static hid_t open_ro(const char *path, int swmr) {
    return H5Fopen(path, H5F_ACC_RDONLY | (swmr ? H5F_ACC_SWMR_READ : 0), H5P_DEFAULT);
}

// Read a whole table into a malloc'd array; returns the row count or -1.
static long read_table(hid_t file, const char *name, hid_t memtype, size_t row_size, void **rows) {
    *rows = NULL;
    hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
    if (ds < 0) return -1;
    hid_t space = H5Dget_space(ds);
    hsize_t n = 0;
    H5Sget_simple_extent_dims(space, &n, NULL);
    *rows = xcalloc(n + 1, row_size);
    long rc = (long)n;
    if (n && H5Dread(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, *rows) < 0) rc = -1;
    H5Sclose(space);
    H5Dclose(ds);
    return rc;
}

static long read_steps(const char *path, int swmr, ReadStep **rows) {
    hid_t f = open_ro(path, swmr), t = read_step_type();
    long n = f < 0 ? -1 : read_table(f, "steps", t, sizeof(ReadStep), (void **)rows);
    H5Tclose(t);
    if (f >= 0) H5Fclose(f);
    return n;
}

static int step_equal(const ReadStep *g, const StepRow *w) {
    return g->step == w->step && g->loss == w->loss && g->lr == w->lr && g->grad_norm == w->grad_norm &&
           g->tokens == w->tokens && g->t_step == w->t_step && g->t_compute == w->t_compute && g->t_comm == w->t_comm &&
           g->comm_bytes == w->comm_bytes && g->mem_peak == w->mem_peak;
}

static int attr_int(hid_t f, const char *name, int *out) {
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    if (a < 0) return -1;
    herr_t rc = H5Aread(a, H5T_NATIVE_INT, out);
    H5Aclose(a);
    return rc;
}

// String attribute: variable-length expected (h5py reads it as str).
static char *attr_str(hid_t f, const char *name) {
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    if (a < 0) return NULL;
    hid_t t = H5Aget_type(a);
    char *s = NULL, *out = NULL;
    if (H5Tis_variable_str(t) > 0 && H5Aread(a, t, &s) >= 0) {
        out = xstrdup(s);
        H5free_memory(s);
    }
    H5Tclose(t);
    H5Aclose(a);
    return out;
}

static void test_fields_and_attrs(void) {
    char *path = xasprintf("%s/rank-00000.h5", tmpdir), err[512] = "";
    MetricsAttrs a = test_attrs();
    // An old file at PATH is replaced, not appended to.
    MetricsFile *m = metrics_open(path, &a, -1, err, sizeof err);
    for (int64_t s = 1; s <= 5; s++) { StepRow r = step_row(100 + s); metrics_append_step(m, &r); }
    metrics_close(m);

    m = metrics_open(path, &a, -1, err, sizeof err);
    CHECK(m != NULL, "metrics_open replaces an existing file (%s)", err);
    if (!m) { free(path); return; }
    int fails = 0;
    for (int64_t s = 1; s <= 23; s++) { StepRow r = step_row(s); fails += metrics_append_step(m, &r) != 0; }
    EvalRow e1 = eval_row(10, "valid"), e2 = eval_row(20, "test"), e3 = eval_row(20, "validate");   // 8 chars: no NUL
    fails += metrics_append_eval(m, &e1) != 0;
    fails += metrics_append_eval(m, &e2) != 0;
    fails += metrics_append_eval(m, &e3) != 0;
    CHECK(fails == 0, "23 step rows and 3 eval rows appended (%s)", metrics_error(m));
    CHECK(metrics_close(m) == 0, "metrics_close");

    char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
    CHECK(!path_exists(tmp), "no temporary file is left beside the metrics file");
    free(tmp);

    hid_t f = open_ro(path, 0);
    CHECK(f >= 0, "a closed metrics file opens with a plain read-only H5Fopen");
    if (f < 0) { free(path); return; }

    // /steps: field names and order, types, chunked + unlimited.
    hid_t ds = H5Dopen2(f, "steps", H5P_DEFAULT), ft = H5Dget_type(ds), dcpl = H5Dget_create_plist(ds);
    int names_ok = H5Tget_class(ft) == H5T_COMPOUND && H5Tget_nmembers(ft) == 10;
    for (int i = 0; names_ok && i < 10; i++) {
        char *nm = H5Tget_member_name(ft, (unsigned)i);
        hid_t mt = H5Tget_member_type(ft, (unsigned)i);
        int is_int = !strcmp(FIELDS[i], "step") || !strcmp(FIELDS[i], "tokens") || !strcmp(FIELDS[i], "comm_bytes") ||
                     !strcmp(FIELDS[i], "mem_peak");
        names_ok = !strcmp(nm, FIELDS[i]) && H5Tget_size(mt) == 8 &&
                   H5Tget_class(mt) == (is_int ? H5T_INTEGER : H5T_FLOAT);
        if (is_int && names_ok) names_ok = H5Tget_sign(mt) == H5T_SGN_2;
        H5free_memory(nm);
        H5Tclose(mt);
    }
    CHECK(names_ok, "/steps has exactly the fields step..mem_peak in order, int64/float64");
    hid_t sp = H5Dget_space(ds);
    hsize_t dims = 0, maxdims = 0;
    H5Sget_simple_extent_dims(sp, &dims, &maxdims);
    CHECK(H5Pget_layout(dcpl) == H5D_CHUNKED && maxdims == H5S_UNLIMITED && dims == 23,
          "/steps is chunked, unlimited, 23 rows (got %llu)", (unsigned long long)dims);
    H5Sclose(sp);
    H5Pclose(dcpl);
    H5Tclose(ft);
    H5Dclose(ds);

    hid_t st = read_step_type();
    ReadStep *rows = NULL;
    long n = read_table(f, "steps", st, sizeof(ReadStep), (void **)&rows);
    int same = n == 23;
    for (long i = 0; same && i < n; i++) { StepRow w = step_row(i + 1); same = step_equal(&rows[i], &w); }
    CHECK(same, "every field of every step row reads back exactly");
    free(rows);
    H5Tclose(st);

    // /eval: fields, fixed 8-byte null-padded split.
    ds = H5Dopen2(f, "eval", H5P_DEFAULT);
    ft = H5Dget_type(ds);
    int ev_ok = H5Tget_nmembers(ft) == 4;
    const char *ev_names[] = {"step", "split", "loss", "bpc"};
    for (int i = 0; ev_ok && i < 4; i++) {
        char *nm = H5Tget_member_name(ft, (unsigned)i);
        ev_ok = !strcmp(nm, ev_names[i]);
        H5free_memory(nm);
    }
    hid_t split_t = H5Tget_member_type(ft, 1);
    ev_ok = ev_ok && H5Tget_class(split_t) == H5T_STRING && H5Tget_size(split_t) == 8 &&
            H5Tget_strpad(split_t) == H5T_STR_NULLPAD && H5Tis_variable_str(split_t) == 0;
    CHECK(ev_ok, "/eval has fields step, split (string 8, null-padded), loss, bpc");
    H5Tclose(split_t);
    H5Tclose(ft);
    // Raw bytes of the split field: "valid" then zeros, never the caller's 'X' padding.
    hid_t raw = H5Tcreate(H5T_COMPOUND, 8), s8 = H5Tcopy(H5T_C_S1);
    H5Tset_size(s8, 8);
    H5Tset_strpad(s8, H5T_STR_NULLPAD);
    H5Tinsert(raw, "split", 0, s8);
    char splits[3][8];
    H5Dread(ds, raw, H5S_ALL, H5S_ALL, H5P_DEFAULT, splits);
    CHECK(!memcmp(splits[0], "valid\0\0\0", 8) && !memcmp(splits[1], "test\0\0\0\0", 8) &&
              !memcmp(splits[2], "validate", 8),
          "split is null-padded in the file ('valid\\0\\0\\0', 'test\\0...', 'validate')");
    H5Tclose(s8);
    H5Tclose(raw);
    H5Dclose(ds);
    hid_t et = read_eval_type();
    ReadEval *ev = NULL;
    n = read_table(f, "eval", et, sizeof(ReadEval), (void **)&ev);
    CHECK(n == 3 && ev[0].step == 10 && !strcmp(ev[0].split, "valid") && ev[0].loss == e1.loss && ev[0].bpc == e1.bpc &&
              ev[1].step == 20 && !strcmp(ev[1].split, "test") && ev[2].loss == e3.loss,
          "eval rows read back exactly");
    free(ev);
    H5Tclose(et);

    // Attributes.
    const char *int_names[] = {"rank", "world", "sp_rank", "dp_rank", "sp_size", "dp_size", "seq_len"};
    int int_want[] = {a.rank, a.world, a.sp_rank, a.dp_rank, a.sp_size, a.dp_size, a.seq_len};
    int ints_ok = 1;
    for (int i = 0; i < 7; i++) {
        int v = -1;
        if (attr_int(f, int_names[i], &v) < 0 || v != int_want[i]) {
            ints_ok = 0;
            printf("#   attribute %s: got %d want %d\n", int_names[i], v, int_want[i]);
        }
    }
    CHECK(ints_ok, "integer attributes rank, world, sp_rank, dp_rank, sp_size, dp_size, seq_len");
    const char *str_names[] = {"scheme", "backend", "host", "device", "model", "git"};
    const char *str_want[] = {a.scheme, a.backend, a.host, a.device, a.model_json, a.git};
    int strs_ok = 1;
    for (int i = 0; i < 6; i++) {
        char *v = attr_str(f, str_names[i]);
        if (!v || strcmp(v, str_want[i])) {
            strs_ok = 0;
            printf("#   attribute %s: got '%s' want '%s'\n", str_names[i], v ? v : "(none)", str_want[i]);
        }
        free(v);
    }
    CHECK(strs_ok, "string attributes scheme, backend, host, device, model (UTF-8 json), git");
    H5Fclose(f);
    free(path);
}

static long python_rows(const char *path, const char *expect_py) {
    // Exit status = row count (0..200), 255 on failure; expect_py is an extra assertion.
    char *cmd = xasprintf("/usr/bin/python3 -c '"
                          "import sys, h5py\n"
                          "f = h5py.File(sys.argv[1], \"r\", libver=\"latest\", swmr=True)\n"
                          "s = f[\"steps\"]\n"
                          "assert s.dtype.names == (\"step\",\"loss\",\"lr\",\"grad_norm\",\"tokens\",\"t_step\","
                          "\"t_compute\",\"t_comm\",\"comm_bytes\",\"mem_peak\"), s.dtype.names\n"
                          "assert f[\"eval\"].dtype.names == (\"step\",\"split\",\"loss\",\"bpc\")\n"
                          "assert list(s[\"step\"]) == list(range(1, len(s) + 1))\n"
                          "assert f.attrs[\"scheme\"] == \"lss\" and int(f.attrs[\"rank\"]) == 3\n"
                          "%s\n"
                          "sys.exit(len(s))' '%s' >/dev/null 2>%s/py.err",
                          expect_py, path, tmpdir);
    int st = system(cmd);
    free(cmd);
    return WIFEXITED(st) && WEXITSTATUS(st) != 1 ? WEXITSTATUS(st) : -1;
}

static void test_resume(void) {
    char *path = xasprintf("%s/resume.h5", tmpdir), err[512] = "";
    MetricsAttrs a = test_attrs();
    MetricsFile *m = metrics_open(path, &a, -1, err, sizeof err);
    for (int64_t s = 1; s <= 10; s++) { StepRow r = step_row(s); metrics_append_step(m, &r); }
    EvalRow e5 = eval_row(5, "valid"), e10 = eval_row(10, "valid");
    metrics_append_eval(m, &e5);
    metrics_append_eval(m, &e10);
    metrics_close(m);

    a.host = "node-99";   // resumed elsewhere: attributes describe the new run
    m = metrics_open(path, &a, 6, err, sizeof err);
    CHECK(m != NULL, "metrics_open with keep_until_step=6 reopens (%s)", err);
    if (!m) { free(path); return; }
    for (int64_t s = 7; s <= 8; s++) { StepRow r = step_row(s); metrics_append_step(m, &r); }
    metrics_close(m);

    ReadStep *rows = NULL;
    long n = read_steps(path, 0, &rows);
    int same = n == 8;
    for (long i = 0; same && i < n; i++) { StepRow w = step_row(i + 1); same = step_equal(&rows[i], &w); }
    CHECK(same, "resume: write 1..10, keep 6, append 7..8 -> rows 1..8 exactly (got %ld rows)", n);
    free(rows);
    hid_t f = open_ro(path, 0), et = read_eval_type();
    ReadEval *ev = NULL;
    n = read_table(f, "eval", et, sizeof(ReadEval), (void **)&ev);
    CHECK(n == 1 && ev[0].step == 5, "resume: eval rows after step 6 are dropped (%ld rows)", n);
    free(ev);
    char *host = attr_str(f, "host");
    CHECK(host && !strcmp(host, "node-99"), "resume: attributes are rewritten (host %s)", host ? host : "?");
    free(host);
    H5Tclose(et);
    H5Fclose(f);

    // Resume with no file, and with garbage at PATH: a fresh file.
    char *missing = xasprintf("%s/missing.h5", tmpdir), *junk = xasprintf("%s/junk.h5", tmpdir);
    write_file_atomic(junk, "not hdf5\n", 9);
    const char *paths[] = {missing, junk};
    for (int i = 0; i < 2; i++) {
        m = metrics_open(paths[i], &a, 6, err, sizeof err);
        StepRow r = step_row(1);
        int rc = m ? metrics_append_step(m, &r) : -1;
        metrics_close(m);
        rows = NULL;
        n = read_steps(paths[i], 0, &rows);
        CHECK(rc == 0 && n == 1 && rows[0].step == 1, "resume from a %s file starts a fresh one (%s)",
              i ? "non-HDF5" : "missing", err);
        free(rows);
    }
    free(missing);
    free(junk);
    free(path);
}

static void test_errors(void) {
    char err[512] = "";
    MetricsAttrs a = test_attrs();
    MetricsFile *m = metrics_open("/nonexistent-dir/rank-00000.h5", &a, -1, err, sizeof err);
    CHECK(!m && strstr(err, "/nonexistent-dir/rank-00000.h5") && strstr(err, "No such file or directory"),
          "an uncreatable file names the path and the cause: %s", err);
    CHECK(!strchr(err, '\n'), "the message is one line");
}

// A live writer: readers (h5py with swmr=True) see the flushed rows while it runs.
static void test_live_read(void) {
    if (!have_h5py) {
        CHECK(1, "# SKIP h5py live read: /usr/bin/python3 with h5py not found");
        return;
    }
    char *path = xasprintf("%s/live.h5", tmpdir), err[512] = "";
    MetricsAttrs a = test_attrs();
    MetricsFile *m = metrics_open(path, &a, -1, err, sizeof err);
    for (int64_t s = 1; s <= 15; s++) { StepRow r = step_row(s); metrics_append_step(m, &r); }
    metrics_flush(m);
    long n1 = python_rows(path, "");
    // 15 more: the periodic flush comes after 10 of them (rows 16..25); 26..30 wait for the next.
    for (int64_t s = 16; s <= 30; s++) { StepRow r = step_row(s); metrics_append_step(m, &r); }
    long n2 = python_rows(path, "");
    metrics_flush(m);
    long n3 = python_rows(path, "");
    CHECK(n1 == 15 && n2 == 25 && n3 == 30,
          "h5py (swmr=True) follows a live writer: 15 rows, 25 after the periodic flush, 30 after metrics_flush "
          "(got %ld, %ld, %ld)", n1, n2, n3);
    metrics_close(m);
    free(path);
}

// Child: open, append `rows`, flush if asked, SIGKILL. Returns the wait status.
static int killed_writer(const char *path, int rows, int flush) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        char err[512];
        MetricsAttrs a = test_attrs();
        MetricsFile *m = metrics_open(path, &a, -1, err, sizeof err);
        if (!m) _exit(3);
        for (int64_t s = 1; s <= rows; s++) { StepRow r = step_row(s); metrics_append_step(m, &r); }
        if (flush) metrics_flush(m);
        raise(SIGKILL);
        _exit(4);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return st;
}

static void test_killed(void) {
    char *path = xasprintf("%s/killed.h5", tmpdir);
    int st = killed_writer(path, 25, 1);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the writer child died of SIGKILL");

    hid_t plain = open_ro(path, 0);
    CHECK(plain < 0,
          "a plain read-only H5Fopen refuses a killed SWMR writer's file (status flags set; h5clear -s fixes)");
    if (plain >= 0) H5Fclose(plain);
    H5Eclear2(H5E_DEFAULT);

    ReadStep *rows = NULL;
    long n = read_steps(path, 1, &rows);
    int same = n == 25;
    for (long i = 0; same && i < n; i++) { StepRow w = step_row(i + 1); same = step_equal(&rows[i], &w); }
    CHECK(same, "SWMR read of the killed file: all 25 flushed rows, exact (got %ld)", n);
    free(rows);

    if (have_h5py) {
        long pn = python_rows(path, "assert len(s) == 25");
        CHECK(pn == 25, "h5py (/usr/bin/python3, swmr=True) reads the killed file: 25 rows, field names (got %ld)", pn);
    } else {
        CHECK(1, "# SKIP h5py check: /usr/bin/python3 with h5py not found");
    }

    // Resume from the killed file (the usual resume after a node failure).
    char err[512] = "";
    MetricsAttrs a = test_attrs();
    MetricsFile *m = metrics_open(path, &a, 20, err, sizeof err);
    StepRow r = step_row(21);
    int rc = m ? metrics_append_step(m, &r) : -1;
    metrics_close(m);
    rows = NULL;
    n = read_steps(path, 0, &rows);
    same = rc == 0 && n == 21;
    for (long i = 0; same && i < n; i++) { StepRow w = step_row(i + 1); same = step_equal(&rows[i], &w); }
    CHECK(same, "resume (keep 20) from the killed file: rows 1..21 (got %ld; %s)", n, err);
    free(rows);

    // No explicit flush: the every-10-rows flush alone keeps at least rows 1..20 of 25.
    char *path2 = xasprintf("%s/killed2.h5", tmpdir);
    killed_writer(path2, 25, 0);
    rows = NULL;
    n = read_steps(path2, 1, &rows);
    same = n >= 20 && n <= 25;
    for (long i = 0; same && i < n; i++) { StepRow w = step_row(i + 1); same = step_equal(&rows[i], &w); }
    CHECK(same, "killed without metrics_flush: the periodic flush kept >= 20 rows (got %ld)", n);
    free(rows);
    free(path2);
    free(path);
}

int main(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    snprintf(tmpdir, sizeof tmpdir, "%s/lsst-metrics.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    have_h5py = access("/usr/bin/python3", X_OK) == 0 &&
                system("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1") == 0;
    test_fields_and_attrs();
    test_resume();
    test_errors();
    test_live_read();
    test_killed();
    rm_rf(tmpdir);
    return check_done();
}
