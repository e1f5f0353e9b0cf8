// Per-rank metrics file (ARCHITECTURE §4): /steps and /eval, extensible compound
// tables written in HDF5 SWMR mode, so readers can follow a live run and a killed run
// keeps every row up to its last flush.
//
// Life of a file:
//   metrics_open   builds the file under "PATH.tmp.PID" (latest file format, chunked
//                  unlimited datasets, attributes, and on resume the kept rows of the old
//                  file), closes it, renames it onto PATH, then reopens PATH with
//                  H5F_ACC_SWMR_WRITE. From then on no object or attribute is created.
//   append         extends a table by one row (H5Dset_extent + one-row hyperslab write);
//                  every METRICS_FLUSH_ROWS rows (both tables together) -> H5Fflush.
//   close          flushes and closes; the file is then an ordinary HDF5 file.
//
// Resume reads the old file (SWMR read, so a file left by a killed writer works too;
// HDF5 1.10 refuses to open such a file read-write without h5clear) and rewrites it
// rather than shrinking it in place: one code path for clean and killed files, and the
// old file stays intact at PATH until the new one is complete.
#include "metrics.h"

#include "common.h"
#include "h5util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
    METRICS_FLUSH_ROWS = 10,   // rows between flushes: a kill loses at most this many
    STEPS_CHUNK_ROWS = 1024,   // 80 KiB chunks
    EVAL_CHUNK_ROWS = 256,     // 8 KiB chunks
};

struct MetricsFile {
    hid_t file, steps, eval;
    hid_t step_mem, eval_mem;   // compound memory types of StepRow / EvalRow
    hid_t row_space;            // memory dataspace of one row
    hsize_t n_steps, n_eval;    // rows in the tables
    int unflushed;              // rows appended since the last flush
    char *path;
    char err[1024];             // last error (metrics_error)
};

// Field layout shared by the memory type (native, struct offsets) and the file type
// (little-endian, packed): the two are identical on x86-64 and aarch64 since every field is 8 bytes.
static hid_t step_type(int file) {
    hid_t i64 = file ? H5T_STD_I64LE : H5T_NATIVE_INT64, f64 = file ? H5T_IEEE_F64LE : H5T_NATIVE_DOUBLE;
    hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(StepRow));
    if (t < 0) return -1;
    if (H5Tinsert(t, "step", HOFFSET(StepRow, step), i64) < 0 ||
        H5Tinsert(t, "loss", HOFFSET(StepRow, loss), f64) < 0 ||
        H5Tinsert(t, "lr", HOFFSET(StepRow, lr), f64) < 0 ||
        H5Tinsert(t, "grad_norm", HOFFSET(StepRow, grad_norm), f64) < 0 ||
        H5Tinsert(t, "tokens", HOFFSET(StepRow, tokens), i64) < 0 ||
        H5Tinsert(t, "t_step", HOFFSET(StepRow, t_step), f64) < 0 ||
        H5Tinsert(t, "t_compute", HOFFSET(StepRow, t_compute), f64) < 0 ||
        H5Tinsert(t, "t_comm", HOFFSET(StepRow, t_comm), f64) < 0 ||
        H5Tinsert(t, "comm_bytes", HOFFSET(StepRow, comm_bytes), i64) < 0 ||
        H5Tinsert(t, "mem_peak", HOFFSET(StepRow, mem_peak), i64) < 0 || (file && H5Tpack(t) < 0)) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

static hid_t eval_type(int file) {
    hid_t i64 = file ? H5T_STD_I64LE : H5T_NATIVE_INT64, f64 = file ? H5T_IEEE_F64LE : H5T_NATIVE_DOUBLE;
    hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(EvalRow)), split = H5Tcopy(H5T_C_S1);
    int ok = t >= 0 && split >= 0 && H5Tset_size(split, sizeof ((EvalRow *)0)->split) >= 0 &&
             H5Tset_strpad(split, H5T_STR_NULLPAD) >= 0 && H5Tinsert(t, "step", HOFFSET(EvalRow, step), i64) >= 0 &&
             H5Tinsert(t, "split", HOFFSET(EvalRow, split), split) >= 0 &&
             H5Tinsert(t, "loss", HOFFSET(EvalRow, loss), f64) >= 0 &&
             H5Tinsert(t, "bpc", HOFFSET(EvalRow, bpc), f64) >= 0 && (!file || H5Tpack(t) >= 0);
    if (split >= 0) H5Tclose(split);
    if (!ok && t >= 0) H5Tclose(t);
    return ok ? t : -1;
}

// Rows of the old file kept on resume.
typedef struct {
    StepRow *steps;
    EvalRow *eval;
    hsize_t n_steps, n_eval;
} KeptRows;

// Read the rows of table `name` whose step <= keep into a malloc'd array; 0, or -1 if unreadable.
static int read_kept(hid_t file, const char *name, hid_t memtype, size_t row_size, int64_t keep, void **rows_out,
                     hsize_t *n_out) {
    hid_t ds = -1, space = -1;
    char *rows = NULL;
    hsize_t n = 0, kept = 0;
    int rc = -1;
    if ((ds = H5Dopen2(file, name, H5P_DEFAULT)) < 0 || (space = H5Dget_space(ds)) < 0 ||
        H5Sget_simple_extent_ndims(space) != 1 || H5Sget_simple_extent_dims(space, &n, NULL) < 0)
        goto done;
    rows = xmalloc(n ? n * row_size : 1);
    if (n && H5Dread(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows) < 0) goto done;
    for (hsize_t i = 0; i < n; i++) {   // step is the first field of both row types
        int64_t step;
        memcpy(&step, rows + i * row_size, sizeof step);
        if (step <= keep) memmove(rows + kept++ * row_size, rows + i * row_size, row_size);
    }
    rc = 0;
done:
    h5_close(&space);
    h5_close(&ds);
    if (rc) free(rows), rows = NULL, kept = 0;
    *rows_out = rows;
    *n_out = kept;
    return rc;
}

// Old rows with step <= keep; a missing or unreadable old file gives no rows (a fresh start).
static void load_kept(const char *path, int64_t keep, hid_t step_mem, hid_t eval_mem, KeptRows *k) {
    memset(k, 0, sizeof *k);
    if (access(path, F_OK) != 0) return;
    // SWMR read opens files left by a killed SWMR writer; plain read-only covers files
    // written with an older format.
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, H5P_DEFAULT);
    if (file < 0) file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        H5Eclear2(H5E_DEFAULT);
        return;
    }
    void *steps = NULL, *eval = NULL;
    if (read_kept(file, "steps", step_mem, sizeof(StepRow), keep, &steps, &k->n_steps) == 0 &&
        read_kept(file, "eval", eval_mem, sizeof(EvalRow), keep, &eval, &k->n_eval) == 0) {
        k->steps = steps;
        k->eval = eval;
    } else {
        free(steps);
        free(eval);
        k->n_steps = k->n_eval = 0;
    }
    H5Fclose(file);
    H5Eclear2(H5E_DEFAULT);
}

static herr_t write_attrs(hid_t file, const MetricsAttrs *a) {
    const struct {
        const char *name;
        int value;
    } ints[] = {{"rank", a->rank},       {"world", a->world},     {"sp_rank", a->sp_rank}, {"dp_rank", a->dp_rank},
                {"sp_size", a->sp_size}, {"dp_size", a->dp_size}, {"seq_len", a->seq_len}};
    const struct {
        const char *name, *value;
    } strs[] = {{"scheme", a->scheme}, {"backend", a->backend}, {"host", a->host},
                {"device", a->device}, {"model", a->model_json}, {"git", a->git}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int32_t v = ints[i].value;
        if (h5_attr_write_as(file, ints[i].name, H5T_STD_I32LE, H5T_NATIVE_INT32, &v) < 0) return -1;
    }
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (h5_attr_write_str(file, strs[i].name, strs[i].value) < 0) return -1;
    return 0;
}

// Create table `name` holding n rows (chunked, unlimited).
static herr_t create_table(hid_t file, const char *name, hid_t filetype, hid_t memtype, hsize_t chunk_rows,
                           hsize_t n, const void *rows) {
    hsize_t maxdims = H5S_UNLIMITED;
    hid_t space = H5Screate_simple(1, &n, &maxdims), dcpl = H5Pcreate(H5P_DATASET_CREATE), ds = -1;
    herr_t rc = -1;
    if (space >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, 1, &chunk_rows) >= 0 &&
        (ds = H5Dcreate2(file, name, filetype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT)) >= 0 &&
        (n == 0 || H5Dwrite(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows) >= 0))
        rc = 0;
    h5_close(&ds);
    h5_close(&dcpl);
    h5_close(&space);
    return rc;
}

static void metrics_free(MetricsFile *m) {
    h5_close(&m->steps);
    h5_close(&m->eval);
    h5_close(&m->step_mem);
    h5_close(&m->eval_mem);
    h5_close(&m->row_space);
    h5_close(&m->file);
    free(m->path);
    free(m);
}

MetricsFile *metrics_open(const char *path, const MetricsAttrs *attrs, int64_t keep_until_step, char *err,
                          size_t errlen) {
    h5_quiet();
    MetricsFile *m = xcalloc(1, sizeof *m);
    m->file = m->steps = m->eval = m->step_mem = m->eval_mem = m->row_space = -1;
    m->path = xstrdup(path);
    char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
    hid_t fapl = -1, file = -1, step_file = -1, eval_file = -1;
    KeptRows kept = {0};
    hsize_t one = 1;

    h5Check(m->step_mem = step_type(0), "cannot build the /steps row type");
    h5Check(m->eval_mem = eval_type(0), "cannot build the /eval row type");
    h5Check(step_file = step_type(1), "cannot build the /steps row type");
    h5Check(eval_file = eval_type(1), "cannot build the /eval row type");
    h5Check(m->row_space = H5Screate_simple(1, &one, NULL), "cannot create a dataspace");
    if (keep_until_step >= 0) load_kept(path, keep_until_step, m->step_mem, m->eval_mem, &kept);

    // SWMR needs the latest file format (superblock v3, extensible-array chunk index).
    h5Check(fapl = H5Pcreate(H5P_FILE_ACCESS), "cannot create a property list");
    h5Check(H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST), "cannot set the file format");
    h5Check(file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl), "cannot create %s", tmp);
    h5Check(create_table(file, "steps", step_file, m->step_mem, STEPS_CHUNK_ROWS, kept.n_steps, kept.steps),
            "cannot create /steps");
    h5Check(create_table(file, "eval", eval_file, m->eval_mem, EVAL_CHUNK_ROWS, kept.n_eval, kept.eval),
            "cannot create /eval");
    const MetricsAttrs none = {0};
    h5Check(write_attrs(file, attrs ? attrs : &none), "cannot write the attributes of /");
    herr_t closed = H5Fclose(file);
    file = -1;
    h5Check(closed, "cannot close %s", tmp);
    if (commit_tmp_file(tmp, path, err, errlen) < 0) goto fail;   // a directory not synced is no reason to stop

    h5Check(m->file = H5Fopen(path, H5F_ACC_RDWR | H5F_ACC_SWMR_WRITE, fapl), "cannot open for SWMR writing");
    h5Check(m->steps = H5Dopen2(m->file, "steps", H5P_DEFAULT), "cannot open /steps");
    h5Check(m->eval = H5Dopen2(m->file, "eval", H5P_DEFAULT), "cannot open /eval");
    m->n_steps = kept.n_steps;
    m->n_eval = kept.n_eval;
    H5Pclose(fapl);
    H5Tclose(step_file);
    H5Tclose(eval_file);
    free(kept.steps);
    free(kept.eval);
    free(tmp);
    return m;

fail:
    h5_close(&file);
    h5_close(&fapl);
    h5_close(&step_file);
    h5_close(&eval_file);
    unlink(tmp);
    free(tmp);
    free(kept.steps);
    free(kept.eval);
    metrics_free(m);
    return NULL;
}

static int append_row(MetricsFile *m, hid_t ds, hid_t memtype, hsize_t *count, const void *row, const char *table) {
    char *err = m->err;
    size_t errlen = sizeof m->err;
    const char *path = m->path;
    hsize_t start = *count, rows = *count + 1, one = 1;
    hid_t space = -1;
    h5Check(H5Dset_extent(ds, &rows), "cannot extend %s to %llu rows", table, (unsigned long long)rows);
    h5Check(space = H5Dget_space(ds), "cannot get the dataspace of %s", table);
    h5Check(H5Sselect_hyperslab(space, H5S_SELECT_SET, &start, NULL, &one, NULL), "cannot select row %llu of %s",
            (unsigned long long)start, table);
    h5Check(H5Dwrite(ds, memtype, m->row_space, space, H5P_DEFAULT, row), "cannot write row %llu of %s",
            (unsigned long long)start, table);
    H5Sclose(space);
    *count = rows;
    if (++m->unflushed >= METRICS_FLUSH_ROWS) return metrics_flush(m);
    return 0;
fail:
    h5_close(&space);
    return -1;
}

int metrics_append_step(MetricsFile *m, const StepRow *row) {
    h5_quiet();
    return append_row(m, m->steps, m->step_mem, &m->n_steps, row, "/steps");
}

int metrics_append_eval(MetricsFile *m, const EvalRow *row) {
    h5_quiet();
    // Null-pad the split name: bytes after the terminator never reach the file.
    EvalRow r = *row;
    size_t len = strnlen(row->split, sizeof r.split);
    memset(r.split + len, 0, sizeof r.split - len);
    return append_row(m, m->eval, m->eval_mem, &m->n_eval, &r, "/eval");
}

int metrics_flush(MetricsFile *m) {
    h5_quiet();
    char *err = m->err;
    size_t errlen = sizeof m->err;
    const char *path = m->path;
    h5Check(H5Fflush(m->file, H5F_SCOPE_LOCAL), "cannot flush");
    m->unflushed = 0;
    return 0;
fail:
    return -1;
}

int metrics_close(MetricsFile *m) {
    if (!m) return 0;
    int rc = metrics_flush(m);
    char *err = m->err;
    size_t errlen = sizeof m->err;
    const char *path = m->path;
    h5_close(&m->steps);
    h5_close(&m->eval);
    hid_t file = m->file;
    m->file = -1;
    h5Check(H5Fclose(file), "cannot close");
    goto done;
fail:
    rc = -1;
done:
    // No caller can ask after the free: say it here.
    if (rc) lsst_error("metrics: %s", m->err);
    metrics_free(m);
    return rc;
}

const char *metrics_error(const MetricsFile *m) { return m->err; }
