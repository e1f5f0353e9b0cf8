// See report_summary.h. summary.h5 layout:
//   /jobs                  1-D compound, one row per job, the CSV columns (strings fixed-length)
//   /job-NNN/              one group per job (NNN = row of /jobs, from 1), attributes label, dir
//       step, step_time    int64, float64 (s): the timed steps and T_s (max over ranks)
//       loss_step, loss    int64, float64 (nats/token): train loss per step (lowest readable rank)
//       valid, test        compound (step int64, bpc float64)
//       ranks              compound (rank, sp_rank, dp_rank int32, host string, rows int64,
//                          t_step_mean, t_compute_mean, t_comm_mean float64 (s),
//                          comm_bytes_per_step float64, mem_peak int64)
//   /scaling               compound (series int32, job int32 = row of /jobs from 1, ranks int32,
//                          speedup, efficiency float64), series in order, baseline first
//   /ratios                compound (lss_job, megatron_job int32 = rows of /jobs from 1,
//                          time, memory, comm float64: megatron-sp / lss)
#include "report_summary.h"

#include "common.h"
#include "h5err.h"

#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const REPORT_CSV_COLUMNS[] = {
    "job", "dir", "scheme", "world", "sp_size", "dp_size", "seq_len", "backend", "device", "layers", "dim", "heads",
    "mlp", "vocab", "rank_files", "ranks_read", "files_skipped", "steps", "step_time_mean_s", "step_time_median_s",
    "step_time_p99_s", "tokens_per_step", "tokens_per_s", "model_flops_per_step", "model_flops_per_s", "comm_share",
    "comm_bytes_per_step", "mem_peak_max_bytes", "mem_peak_min_bytes", "mem_peak_mean_bytes", "imbalance",
    "slowest_ranks", "final_loss", "final_valid_bpc", "final_test_bpc"};
const int REPORT_CSV_NCOLUMNS = sizeof REPORT_CSV_COLUMNS / sizeof REPORT_CSV_COLUMNS[0];

enum { COL_STR, COL_INT, COL_REAL };

// Column i of job j as text (malloc'd) and its kind.
static char *column(const Job *j, int i, int *kind) {
    const char *s = NULL;
    long long n = 0;
    double x = NAN;
    *kind = COL_STR;
    switch (i) {
    case 0: s = j->label; break;
    case 1: s = j->dir; break;
    case 2: s = j->scheme; break;
    case 3: n = j->world, *kind = COL_INT; break;
    case 4: n = j->sp_size, *kind = COL_INT; break;
    case 5: n = j->dp_size, *kind = COL_INT; break;
    case 6: n = j->seq_len, *kind = COL_INT; break;
    case 7: s = j->backend; break;
    case 8: s = j->device; break;
    case 9: n = j->layers, *kind = COL_INT; break;
    case 10: n = j->dim, *kind = COL_INT; break;
    case 11: n = j->heads, *kind = COL_INT; break;
    case 12: n = j->mlp, *kind = COL_INT; break;
    case 13: n = j->vocab, *kind = COL_INT; break;
    case 14: n = j->n_files, *kind = COL_INT; break;
    case 15: n = j->n_ranks, *kind = COL_INT; break;
    case 16: n = j->n_skipped, *kind = COL_INT; break;
    case 17: n = j->n_steps, *kind = COL_INT; break;
    case 18: x = j->t_mean, *kind = COL_REAL; break;
    case 19: x = j->t_median, *kind = COL_REAL; break;
    case 20: x = j->t_p99, *kind = COL_REAL; break;
    case 21: x = j->tokens_per_step, *kind = COL_REAL; break;
    case 22: x = j->tokens_per_s, *kind = COL_REAL; break;
    case 23: x = j->flops_per_step, *kind = COL_REAL; break;
    case 24: x = j->flops_per_s, *kind = COL_REAL; break;
    case 25: x = j->comm_share, *kind = COL_REAL; break;
    case 26: x = j->bytes_per_step, *kind = COL_REAL; break;
    case 27: n = j->mem_max, *kind = COL_INT; break;
    case 28: n = j->mem_min, *kind = COL_INT; break;
    case 29: x = j->mem_mean, *kind = COL_REAL; break;
    case 30: x = j->imbalance, *kind = COL_REAL; break;
    case 31: {   // "17;3;5": rank numbers, slowest first
        char *out = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&out, &len);
        for (int k = 0; k < j->n_slowest; k++) fprintf(f, "%s%d", k ? ";" : "", j->ranks[j->slowest[k]].rank);
        fclose(f);
        return out;
    }
    case 32: x = j->final_loss, *kind = COL_REAL; break;
    case 33: x = j->final_valid_bpc, *kind = COL_REAL; break;
    case 34: x = j->final_test_bpc, *kind = COL_REAL; break;
    }
    if (*kind == COL_STR) return xstrdup(s ? s : "");
    if (*kind == COL_INT) return xasprintf("%lld", n);
    return isnan(x) || isinf(x) ? xstrdup("") : xasprintf("%.9g", x);
}

void report_put_csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

int report_write_csv(const Report *r, FILE *f) {
    for (int c = 0; c < REPORT_CSV_NCOLUMNS; c++) fprintf(f, "%s%s", c ? "," : "", REPORT_CSV_COLUMNS[c]);
    fputs("\r\n", f);
    for (int i = 0; i < r->n_jobs; i++) {
        for (int c = 0; c < REPORT_CSV_NCOLUMNS; c++) {
            int kind;
            char *v = column(&r->jobs[i], c, &kind);
            if (c) fputc(',', f);
            report_put_csv_field(f, v);
            free(v);
        }
        fputs("\r\n", f);
    }
    return ferror(f) ? -1 : 0;
}

// ---- summary.h5 ----

typedef struct {
    int32_t rank, sp_rank, dp_rank;
    const char *host;       // variable-length string
    int64_t rows;
    double t_step_mean, t_compute_mean, t_comm_mean, comm_bytes_per_step;
    int64_t mem_peak;
} RankRowH5;

#define TRY(call, what)                               \
    do {                                              \
        if ((call) < 0) {                             \
            h5_errf(err, errlen, "%s: %s", path, (what));    \
            goto fail;                                \
        }                                             \
    } while (0)

static herr_t write_1d(hid_t loc, const char *name, hid_t filetype, hid_t memtype, hsize_t n, const void *data) {
    hid_t space = H5Screate_simple(1, &n, NULL);
    if (space < 0) return -1;
    hid_t ds = H5Dcreate2(loc, name, filetype, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = ds < 0 ? -1 : (n ? H5Dwrite(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : 0);
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(space);
    return rc;
}

static herr_t write_str_attr(hid_t loc, const char *name, const char *value) {
    hid_t type = H5Tcopy(H5T_C_S1), space = H5Screate(H5S_SCALAR), a = -1;
    herr_t rc = -1;
    if (type >= 0 && space >= 0 && H5Tset_size(type, H5T_VARIABLE) >= 0 && H5Tset_cset(type, H5T_CSET_UTF8) >= 0 &&
        (a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT)) >= 0 && H5Awrite(a, type, &value) >= 0)
        rc = 0;
    if (a >= 0) H5Aclose(a);
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    return rc;
}

static int column_kind(int c) {
    Job zero;
    memset(&zero, 0, sizeof zero);
    int kind;
    free(column(&zero, c, &kind));
    return kind;
}

// /jobs: a compound of the CSV columns; strings as variable-length UTF-8.
static herr_t write_jobs(hid_t file, const Report *r) {
    int nc = REPORT_CSV_NCOLUMNS;
    hid_t str = H5Tcopy(H5T_C_S1);
    if (str < 0 || H5Tset_size(str, H5T_VARIABLE) < 0 || H5Tset_cset(str, H5T_CSET_UTF8) < 0) return -1;
    size_t row = (size_t)nc * 8;   // every field is 8 bytes: char *, int64 or double
    hid_t t = H5Tcreate(H5T_COMPOUND, row);
    herr_t rc = t < 0 ? -1 : 0;
    char *buf = xcalloc((size_t)(r->n_jobs ? r->n_jobs : 1), row);
    char **strings = xcalloc((size_t)(r->n_jobs ? r->n_jobs : 1) * (size_t)nc, sizeof *strings);
    for (int c = 0; c < nc && rc == 0; c++) {
        int kind = column_kind(c);
        hid_t ft = kind == COL_STR ? str : kind == COL_INT ? H5T_NATIVE_INT64 : H5T_NATIVE_DOUBLE;
        if (H5Tinsert(t, REPORT_CSV_COLUMNS[c], (size_t)c * 8, ft) < 0) rc = -1;
        for (int i = 0; i < r->n_jobs; i++) {
            char *v = column(&r->jobs[i], c, &kind);
            char *slot = buf + (size_t)i * row + (size_t)c * 8;
            if (kind == COL_STR) {
                strings[(size_t)i * (size_t)nc + (size_t)c] = v;
                memcpy(slot, &v, sizeof v);
                continue;
            }
            if (kind == COL_INT) {
                int64_t x = strtoll(v, NULL, 10);
                memcpy(slot, &x, sizeof x);
            } else {
                double x = *v ? strtod(v, NULL) : NAN;
                memcpy(slot, &x, sizeof x);
            }
            free(v);
        }
    }
    if (rc == 0) rc = write_1d(file, "jobs", t, t, (hsize_t)r->n_jobs, buf);
    for (size_t k = 0; k < (size_t)(r->n_jobs ? r->n_jobs : 1) * (size_t)nc; k++) free(strings[k]);
    free(strings);
    free(buf);
    if (t >= 0) H5Tclose(t);
    H5Tclose(str);
    return rc;
}

static herr_t write_job(hid_t file, const Job *j, int index) {
    char name[32];
    snprintf(name, sizeof name, "job-%03d", index + 1);
    hid_t g = H5Gcreate2(file, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return -1;
    herr_t rc = -1;
    hid_t ev = H5Tcreate(H5T_COMPOUND, sizeof(EvalPoint)), rk = H5Tcreate(H5T_COMPOUND, sizeof(RankRowH5));
    hid_t str = H5Tcopy(H5T_C_S1);
    RankRowH5 *rows = xcalloc((size_t)(j->n_ranks ? j->n_ranks : 1), sizeof *rows);
    for (int r = 0; r < j->n_ranks; r++) {
        const RankStats *s = &j->ranks[r];
        rows[r] = (RankRowH5){s->rank, s->sp_rank, s->dp_rank, s->host ? s->host : "", s->rows, s->t_step_mean,
                              s->t_compute_mean, s->t_comm_mean, s->comm_bytes_mean, s->mem_peak};
    }
    if (ev < 0 || rk < 0 || str < 0 || H5Tset_size(str, H5T_VARIABLE) < 0 || H5Tset_cset(str, H5T_CSET_UTF8) < 0 ||
        H5Tinsert(ev, "step", HOFFSET(EvalPoint, step), H5T_NATIVE_INT64) < 0 ||
        H5Tinsert(ev, "bpc", HOFFSET(EvalPoint, bpc), H5T_NATIVE_DOUBLE) < 0 ||
        H5Tinsert(rk, "rank", HOFFSET(RankRowH5, rank), H5T_NATIVE_INT32) < 0 ||
        H5Tinsert(rk, "sp_rank", HOFFSET(RankRowH5, sp_rank), H5T_NATIVE_INT32) < 0 ||
        H5Tinsert(rk, "dp_rank", HOFFSET(RankRowH5, dp_rank), H5T_NATIVE_INT32) < 0 ||
        H5Tinsert(rk, "host", HOFFSET(RankRowH5, host), str) < 0 ||
        H5Tinsert(rk, "rows", HOFFSET(RankRowH5, rows), H5T_NATIVE_INT64) < 0 ||
        H5Tinsert(rk, "t_step_mean", HOFFSET(RankRowH5, t_step_mean), H5T_NATIVE_DOUBLE) < 0 ||
        H5Tinsert(rk, "t_compute_mean", HOFFSET(RankRowH5, t_compute_mean), H5T_NATIVE_DOUBLE) < 0 ||
        H5Tinsert(rk, "t_comm_mean", HOFFSET(RankRowH5, t_comm_mean), H5T_NATIVE_DOUBLE) < 0 ||
        H5Tinsert(rk, "comm_bytes_per_step", HOFFSET(RankRowH5, comm_bytes_per_step), H5T_NATIVE_DOUBLE) < 0 ||
        H5Tinsert(rk, "mem_peak", HOFFSET(RankRowH5, mem_peak), H5T_NATIVE_INT64) < 0)
        goto done;
    if (write_str_attr(g, "label", j->label) < 0 || write_str_attr(g, "dir", j->dir) < 0 ||
        write_1d(g, "step", H5T_STD_I64LE, H5T_NATIVE_INT64, (hsize_t)j->n_steps, j->step) < 0 ||
        write_1d(g, "step_time", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, (hsize_t)j->n_steps, j->step_time) < 0 ||
        write_1d(g, "loss_step", H5T_STD_I64LE, H5T_NATIVE_INT64, (hsize_t)j->n_loss, j->loss_step) < 0 ||
        write_1d(g, "loss", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, (hsize_t)j->n_loss, j->loss) < 0 ||
        write_1d(g, "valid", ev, ev, (hsize_t)j->n_valid, j->valid) < 0 ||
        write_1d(g, "test", ev, ev, (hsize_t)j->n_test, j->test) < 0 ||
        write_1d(g, "ranks", rk, rk, (hsize_t)j->n_ranks, rows) < 0)
        goto done;
    rc = 0;
done:
    free(rows);
    if (str >= 0) H5Tclose(str);
    if (ev >= 0) H5Tclose(ev);
    if (rk >= 0) H5Tclose(rk);
    H5Gclose(g);
    return rc;
}

typedef struct {
    int32_t series, job, ranks;
    double speedup, efficiency;
} ScalingRowH5;

typedef struct {
    int32_t lss_job, megatron_job;
    double time, memory, comm;
} RatioRowH5;

static herr_t write_cross(hid_t file, const Report *r) {
    size_t n = 0;
    for (int s = 0; s < r->n_series; s++) n += (size_t)r->series[s].n;
    ScalingRowH5 *sc = xcalloc(n ? n : 1, sizeof *sc);
    RatioRowH5 *ra = xcalloc((size_t)(r->n_ratios ? r->n_ratios : 1), sizeof *ra);
    size_t k = 0;
    for (int s = 0; s < r->n_series; s++)
        for (int i = 0; i < r->series[s].n; i++, k++)
            sc[k] = (ScalingRowH5){s, r->series[s].jobs[i] + 1, r->jobs[r->series[s].jobs[i]].world,
                                   r->series[s].speedup[i], r->series[s].efficiency[i]};
    for (int i = 0; i < r->n_ratios; i++)
        ra[i] = (RatioRowH5){r->ratios[i].lss + 1, r->ratios[i].megatron + 1, r->ratios[i].time, r->ratios[i].memory,
                             r->ratios[i].comm};
    hid_t st = H5Tcreate(H5T_COMPOUND, sizeof(ScalingRowH5)), rt = H5Tcreate(H5T_COMPOUND, sizeof(RatioRowH5));
    herr_t rc = -1;
    if (st >= 0 && rt >= 0 && H5Tinsert(st, "series", HOFFSET(ScalingRowH5, series), H5T_NATIVE_INT32) >= 0 &&
        H5Tinsert(st, "job", HOFFSET(ScalingRowH5, job), H5T_NATIVE_INT32) >= 0 &&
        H5Tinsert(st, "ranks", HOFFSET(ScalingRowH5, ranks), H5T_NATIVE_INT32) >= 0 &&
        H5Tinsert(st, "speedup", HOFFSET(ScalingRowH5, speedup), H5T_NATIVE_DOUBLE) >= 0 &&
        H5Tinsert(st, "efficiency", HOFFSET(ScalingRowH5, efficiency), H5T_NATIVE_DOUBLE) >= 0 &&
        H5Tinsert(rt, "lss_job", HOFFSET(RatioRowH5, lss_job), H5T_NATIVE_INT32) >= 0 &&
        H5Tinsert(rt, "megatron_job", HOFFSET(RatioRowH5, megatron_job), H5T_NATIVE_INT32) >= 0 &&
        H5Tinsert(rt, "time", HOFFSET(RatioRowH5, time), H5T_NATIVE_DOUBLE) >= 0 &&
        H5Tinsert(rt, "memory", HOFFSET(RatioRowH5, memory), H5T_NATIVE_DOUBLE) >= 0 &&
        H5Tinsert(rt, "comm", HOFFSET(RatioRowH5, comm), H5T_NATIVE_DOUBLE) >= 0 &&
        write_1d(file, "scaling", st, st, (hsize_t)n, sc) >= 0 &&
        write_1d(file, "ratios", rt, rt, (hsize_t)r->n_ratios, ra) >= 0)
        rc = 0;
    if (st >= 0) H5Tclose(st);
    if (rt >= 0) H5Tclose(rt);
    free(sc);
    free(ra);
    return rc;
}

int report_write_h5(const Report *r, const char *path, char *err, size_t errlen) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    TRY(file, "cannot create the file");
    TRY(write_str_attr(file, "lsst_version", LSST_VERSION), "cannot write the attributes");
    TRY(write_str_attr(file, "title", r->title), "cannot write the attributes");
    TRY(write_jobs(file, r), "cannot write /jobs");
    TRY(write_cross(file, r), "cannot write /scaling and /ratios");
    for (int i = 0; i < r->n_jobs; i++) {
        if (write_job(file, &r->jobs[i], i) < 0) {
            char what[48];
            snprintf(what, sizeof what, "cannot write /job-%03d", i + 1);
            h5_errf(err, errlen, "%s: %s", path, what);
            goto fail;
        }
    }
    herr_t closed = H5Fclose(file);
    file = -1;
    TRY(closed, "cannot close the file");
    return 0;
fail:
    if (file >= 0) H5Fclose(file);
    H5Eclear2(H5E_DEFAULT);
    return -1;
}
