// See report_read.h. Cost per file on a page-cached 1,000-row file: ~0.1 ms
// (open, 7 integer and 1 string attributes, one dataset read, close).
#include "report_read.h"
#include "h5err.h"

#include "common.h"

#include <hdf5.h>
#include <stdlib.h>
#include <string.h>

struct RankReader {
    hid_t row_type;      // memory compound: the ReportRow subset of /steps
    hid_t eval_type;     // memory compound: step, split, bpc of /eval
    hid_t dxpl;          // transfer list carrying our conversion buffers
    ReportRow *rows;
    size_t rows_cap;     // rows
    void *tconv, *bkg;   // conversion and background buffers
    size_t conv_cap;     // bytes each
};

typedef struct {
    int64_t step;
    char split[8];
    double bpc;
} EvalRead;

RankReader *rank_reader_new(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    RankReader *rd = xcalloc(1, sizeof *rd);
    hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(ReportRow));
    hid_t e = H5Tcreate(H5T_COMPOUND, sizeof(EvalRead)), split = H5Tcopy(H5T_C_S1);
    if (t < 0 || e < 0 || split < 0 || H5Tinsert(t, "step", HOFFSET(ReportRow, step), H5T_NATIVE_INT64) < 0 ||
        H5Tinsert(t, "loss", HOFFSET(ReportRow, loss), H5T_NATIVE_DOUBLE) < 0 ||
        H5Tinsert(t, "tokens", HOFFSET(ReportRow, tokens), H5T_NATIVE_INT64) < 0 ||
        H5Tinsert(t, "t_step", HOFFSET(ReportRow, t_step), H5T_NATIVE_DOUBLE) < 0 ||
        H5Tinsert(t, "t_compute", HOFFSET(ReportRow, t_compute), H5T_NATIVE_DOUBLE) < 0 ||
        H5Tinsert(t, "t_comm", HOFFSET(ReportRow, t_comm), H5T_NATIVE_DOUBLE) < 0 ||
        H5Tinsert(t, "comm_bytes", HOFFSET(ReportRow, comm_bytes), H5T_NATIVE_INT64) < 0 ||
        H5Tinsert(t, "mem_peak", HOFFSET(ReportRow, mem_peak), H5T_NATIVE_INT64) < 0 ||
        H5Tset_size(split, 8) < 0 || H5Tset_strpad(split, H5T_STR_NULLPAD) < 0 ||
        H5Tinsert(e, "step", HOFFSET(EvalRead, step), H5T_NATIVE_INT64) < 0 ||
        H5Tinsert(e, "split", HOFFSET(EvalRead, split), split) < 0 ||
        H5Tinsert(e, "bpc", HOFFSET(EvalRead, bpc), H5T_NATIVE_DOUBLE) < 0 ||
        (rd->dxpl = H5Pcreate(H5P_DATASET_XFER)) < 0)
        lsst_die(EXIT_RUNTIME, "HDF5: cannot build the metrics row types");
    H5Tclose(split);
    rd->row_type = t;
    rd->eval_type = e;
    return rd;
}

void rank_reader_free(RankReader *rd) {
    if (!rd) return;
    H5Tclose(rd->row_type);
    H5Tclose(rd->eval_type);
    H5Pclose(rd->dxpl);
    free(rd->rows);
    free(rd->tconv);
    free(rd->bkg);
    free(rd);
}

void rank_file_clear(RankFile *f) {
    free(f->host);
    free(f->scheme);
    free(f->backend);
    free(f->device);
    free(f->model);
    free(f->git);
    free(f->valid);
    free(f->test);
    memset(f, 0, sizeof *f);
}

static int read_int_attr(hid_t file, const char *name, int *out) {
    hid_t a = H5Aopen(file, name, H5P_DEFAULT);
    if (a < 0) return -1;
    int rc = H5Aread(a, H5T_NATIVE_INT, out) < 0 ? -1 : 0;
    H5Aclose(a);
    return rc;
}

// A string attribute, variable- or fixed-length, as a malloc'd string; NULL on failure.
static char *read_str_attr(hid_t file, const char *name) {
    hid_t a = H5Aopen(file, name, H5P_DEFAULT), ft = -1, mt = -1;
    char *out = NULL;
    if (a < 0 || (ft = H5Aget_type(a)) < 0 || H5Tget_class(ft) != H5T_STRING) goto done;
    if (H5Tis_variable_str(ft) > 0) {
        char *s = NULL;
        // The memory type takes the attribute's character set: HDF5 converts none into another.
        if ((mt = H5Tcopy(H5T_C_S1)) < 0 || H5Tset_size(mt, H5T_VARIABLE) < 0 ||
            H5Tset_cset(mt, H5Tget_cset(ft)) < 0 || H5Aread(a, mt, &s) < 0)
            goto done;
        out = xstrdup(s ? s : "");
        H5free_memory(s);
    } else {
        size_t n = H5Tget_size(ft);
        char *s = xcalloc(n + 1, 1);
        if ((mt = H5Tcopy(H5T_C_S1)) < 0 || H5Tset_size(mt, n + 1) < 0 || H5Tset_cset(mt, H5Tget_cset(ft)) < 0 ||
            H5Aread(a, mt, s) < 0) {
            free(s);
            goto done;
        }
        out = s;
    }
done:
    if (mt >= 0) H5Tclose(mt);
    if (ft >= 0) H5Tclose(ft);
    if (a >= 0) H5Aclose(a);
    return out;
}

// Make room for n step rows. Only read_steps calls it: the rows it fills are handed out
// in RankFile.rows, so nothing after it in the same read may move them.
static void reserve_rows(RankReader *rd, size_t n) {
    if (n <= rd->rows_cap) return;
    rd->rows_cap = n + n / 2;
    free(rd->rows);
    rd->rows = xmalloc(rd->rows_cap * sizeof *rd->rows);
}

// Make room in the conversion buffers for n rows of a file row of file_row_size bytes
// (or of our memory row, if larger); re-point the transfer list's buffers.
static int reserve_conv(RankReader *rd, size_t n, size_t file_row_size) {
    size_t row = file_row_size > sizeof(ReportRow) ? file_row_size : sizeof(ReportRow);
    if (row < sizeof(EvalRead)) row = sizeof(EvalRead);
    size_t need = (n ? n : 1) * row;
    if (need <= rd->conv_cap) return 0;
    rd->conv_cap = need + need / 2;
    free(rd->tconv);
    free(rd->bkg);
    rd->tconv = xmalloc(rd->conv_cap);
    rd->bkg = xmalloc(rd->conv_cap);
    return H5Pset_buffer(rd->dxpl, rd->conv_cap, rd->tconv, rd->bkg) < 0 ? -1 : 0;
}

static const char *const STEP_FIELDS[] = {"step",   "loss",      "tokens",     "t_step",
                                          "t_compute", "t_comm", "comm_bytes", "mem_peak", NULL};
static const char *const EVAL_FIELDS[] = {"step", "split", "bpc", NULL};

// Rows of 1-D compound dataset `name` with (at least) the fields the report reads:
// opens it, checks, returns the dataset and its row count. HDF5 would read a compound
// lacking a field without complaint, leaving that field of our rows as it was.
static hid_t open_table(hid_t file, const char *name, hsize_t *n, size_t *file_row_size, char *err, size_t errlen) {
    hid_t ds = H5Dopen2(file, name, H5P_DEFAULT), space = -1, type = -1;
    if (ds < 0) {
        h5_errf(err, errlen, "%s", name[0] == 's' ? "no /steps table" : "no /eval table");
        return -1;
    }
    if ((space = H5Dget_space(ds)) < 0 || H5Sget_simple_extent_ndims(space) != 1 ||
        H5Sget_simple_extent_dims(space, n, NULL) < 0 || (type = H5Dget_type(ds)) < 0 ||
        H5Tget_class(type) != H5T_COMPOUND) {
        h5_errf(err, errlen, "%s", name[0] == 's' ? "/steps is not a 1-D compound table" : "/eval is not a 1-D compound table");
        if (space >= 0) H5Sclose(space);
        if (type >= 0) H5Tclose(type);
        H5Dclose(ds);
        return -1;
    }
    const char *const *fields = name[0] == 's' ? STEP_FIELDS : EVAL_FIELDS;
    for (int i = 0; fields[i]; i++) {
        if (H5Tget_member_index(type, fields[i]) < 0) {
            H5Eclear2(H5E_DEFAULT);
            snprintf(err, errlen, "/%s has no field '%s'", name, fields[i]);
            H5Sclose(space);
            H5Tclose(type);
            H5Dclose(ds);
            return -1;
        }
    }
    *file_row_size = H5Tget_size(type);
    H5Sclose(space);
    H5Tclose(type);
    return ds;
}

static int read_steps(RankReader *rd, hid_t file, RankFile *out, char *err, size_t errlen) {
    hsize_t n = 0;
    size_t row_size = 0;
    hid_t ds = open_table(file, "steps", &n, &row_size, err, errlen);
    if (ds < 0) return -1;
    int rc = -1;
    reserve_rows(rd, (size_t)n);
    if (reserve_conv(rd, (size_t)n, row_size) != 0) {
        h5_errf(err, errlen, "%s", "cannot set the conversion buffers");
    } else if (n && H5Dread(ds, rd->row_type, H5S_ALL, H5S_ALL, rd->dxpl, rd->rows) < 0) {
        h5_errf(err, errlen, "%s", "cannot read /steps");
    } else {
        rc = 0;
        for (hsize_t i = 0; i < n; i++) {
            if (rd->rows[i].step < 1 || (i && rd->rows[i].step <= rd->rows[i - 1].step)) {
                snprintf(err, errlen, "/steps row %llu: step %lld does not follow step %lld", (unsigned long long)i,
                         (long long)rd->rows[i].step, i ? (long long)rd->rows[i - 1].step : 0LL);
                rc = -1;
                break;
            }
        }
    }
    H5Dclose(ds);
    out->rows = rd->rows;
    out->n_rows = (int64_t)n;
    return rc;
}

static int read_eval(RankReader *rd, hid_t file, RankFile *out, char *err, size_t errlen) {
    if (H5Lexists(file, "eval", H5P_DEFAULT) <= 0) {   // no evaluation table: no eval rows
        H5Eclear2(H5E_DEFAULT);
        return 0;
    }
    hsize_t n = 0;
    size_t row_size = 0;
    hid_t ds = open_table(file, "eval", &n, &row_size, err, errlen);
    if (ds < 0) return -1;
    EvalRead *rows = xmalloc((n ? n : 1) * sizeof *rows);
    int rc = -1;
    if (reserve_conv(rd, (size_t)n, row_size) != 0) {
        h5_errf(err, errlen, "%s", "cannot set the conversion buffers");
    } else if (n && H5Dread(ds, rd->eval_type, H5S_ALL, H5S_ALL, rd->dxpl, rows) < 0) {
        h5_errf(err, errlen, "%s", "cannot read /eval (step, split, bpc)");
    } else {
        rc = 0;
        out->valid = xmalloc((n ? n : 1) * sizeof *out->valid);
        out->test = xmalloc((n ? n : 1) * sizeof *out->test);
        for (hsize_t i = 0; i < n; i++) {
            EvalPoint p = {rows[i].step, rows[i].bpc};
            if (!strncmp(rows[i].split, "valid", 8)) out->valid[out->n_valid++] = p;
            else if (!strncmp(rows[i].split, "test", 8)) out->test[out->n_test++] = p;
        }
    }
    free(rows);
    H5Dclose(ds);
    return rc;
}

int rank_reader_read(RankReader *rd, const char *path, bool want_config, bool want_eval, RankFile *out, char *err,
                     size_t errlen) {
    memset(out, 0, sizeof *out);
    // SWMR read opens a file a running or killed writer holds in SWMR mode; a plain
    // read-only open covers files written with an older format (not SWMR-capable).
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, H5P_DEFAULT);
    if (file < 0) {
        H5Eclear2(H5E_DEFAULT);
        file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    }
    if (file < 0) {
        h5_errf(err, errlen, "%s", "not a readable HDF5 file");
        return -1;
    }
    static const char *const int_names[] = {"rank", "world", "sp_rank", "dp_rank", "sp_size", "dp_size", "seq_len"};
    int *ints[] = {&out->rank, &out->world, &out->sp_rank, &out->dp_rank, &out->sp_size, &out->dp_size, &out->seq_len};
    int rc = -1;
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if (read_int_attr(file, int_names[i], ints[i]) != 0) {
            char what[64];
            snprintf(what, sizeof what, "no integer attribute '%s'", int_names[i]);
            h5_errf(err, errlen, "%s", what);
            goto done;
        }
    }
    if (out->world < 1 || out->world > (1 << 24) || out->rank < 0 || out->rank >= out->world) {
        snprintf(err, errlen, "attribute rank %d is not in [0, world %d)", out->rank, out->world);
        goto done;
    }
    if (!(out->host = read_str_attr(file, "host"))) {
        h5_errf(err, errlen, "%s", "no string attribute 'host'");
        goto done;
    }
    if (want_config) {
        static const char *const names[] = {"scheme", "backend", "device", "model", "git"};
        char **strs[] = {&out->scheme, &out->backend, &out->device, &out->model, &out->git};
        for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
            if (!(*strs[i] = read_str_attr(file, names[i]))) {
                char what[64];
                snprintf(what, sizeof what, "no string attribute '%s'", names[i]);
                h5_errf(err, errlen, "%s", what);
                goto done;
            }
        }
    }
    if (read_steps(rd, file, out, err, errlen) != 0) goto done;
    if (want_eval && read_eval(rd, file, out, err, errlen) != 0) goto done;
    rc = 0;
done:
    if (H5Fclose(file) < 0 && rc == 0) {
        h5_errf(err, errlen, "%s", "cannot close");
        rc = -1;
    }
    if (rc != 0) {
        out->rows = NULL;
        rank_file_clear(out);
    }
    return rc;
}
