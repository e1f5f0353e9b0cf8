// One pass over a job's rank files accumulates, per step, the max of t_step and
// the sums over ranks (tokens, bytes, t_comm, t_step) plus how many ranks reported
// it; per rank, sums over its rows past the warm-up. The timed steps are known only
// after the last file (a live run's ranks have flushed different numbers of rows),
// so a rank whose rows are not exactly the timed steps is read a second time with
// the timed steps as a mask. A finished run needs no second pass.
#include "report_load.h"

#include "common.h"
#include "report_stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STEP (INT64_C(1) << 26)   // larger step numbers mean a damaged file

typedef struct {
    int64_t cap;             // steps 1..cap
    double *t_max;           // max over ranks of t_step (s)
    double *t_sum, *comm_sum; // sums over ranks of t_step, t_comm (s)
    int64_t *tokens, *bytes; // sums over ranks
    int32_t *count;          // ranks that reported the step
} StepAcc;

typedef struct {             // per-rank sums over a set of steps
    double t_step, t_compute, t_comm, bytes;
    int64_t n;
} RankSums;

static void acc_reserve(StepAcc *a, int64_t last_step) {
    if (last_step <= a->cap) return;
    int64_t cap = a->cap ? a->cap : 1024;
    while (cap < last_step) cap *= 2;
    size_t n = (size_t)cap, old = (size_t)a->cap;
    a->t_max = xrealloc(a->t_max, n * sizeof *a->t_max);
    a->t_sum = xrealloc(a->t_sum, n * sizeof *a->t_sum);
    a->comm_sum = xrealloc(a->comm_sum, n * sizeof *a->comm_sum);
    a->tokens = xrealloc(a->tokens, n * sizeof *a->tokens);
    a->bytes = xrealloc(a->bytes, n * sizeof *a->bytes);
    a->count = xrealloc(a->count, n * sizeof *a->count);
    memset(a->t_max + old, 0, (n - old) * sizeof *a->t_max);
    memset(a->t_sum + old, 0, (n - old) * sizeof *a->t_sum);
    memset(a->comm_sum + old, 0, (n - old) * sizeof *a->comm_sum);
    memset(a->tokens + old, 0, (n - old) * sizeof *a->tokens);
    memset(a->bytes + old, 0, (n - old) * sizeof *a->bytes);
    memset(a->count + old, 0, (n - old) * sizeof *a->count);
    a->cap = cap;
}

static void acc_free(StepAcc *a) {
    free(a->t_max);
    free(a->t_sum);
    free(a->comm_sum);
    free(a->tokens);
    free(a->bytes);
    free(a->count);
}

static void skip(Job *j, const char *path, const char *reason) {
    lsst_warn("%s: skipped: %s", path, reason);
    j->skipped = xrealloc(j->skipped, (size_t)(j->n_skipped + 1) * sizeof *j->skipped);
    j->skipped[j->n_skipped].path = xstrdup(path);
    j->skipped[j->n_skipped].reason = xstrdup(reason);
    j->n_skipped++;
}

// Sums over the rows whose step is in `mask` (indexed by step - 1; NULL: every step > warmup).
static RankSums rank_sums(const ReportRow *rows, int64_t n, const bool *mask, int64_t mask_len, int warmup) {
    RankSums s = {0};
    for (int64_t i = 0; i < n; i++) {
        const ReportRow *row = &rows[i];
        if (mask ? (row->step > mask_len || !mask[row->step - 1]) : row->step <= warmup) continue;
        s.t_step += row->t_step;
        s.t_compute += row->t_compute;
        s.t_comm += row->t_comm;
        s.bytes += (double)row->comm_bytes;
        s.n++;
    }
    return s;
}

static void set_rank_means(RankStats *s, RankSums sums) {
    double n = (double)sums.n;
    s->t_step_mean = sums.n ? sums.t_step / n : NAN;
    s->t_compute_mean = sums.n ? sums.t_compute / n : NAN;
    s->t_comm_mean = sums.n ? sums.t_comm / n : NAN;
    s->comm_bytes_mean = sums.n ? sums.bytes / n : NAN;
}

static void take_config(Job *j, RankFile *f) {
    j->scheme = f->scheme, f->scheme = NULL;
    j->backend = f->backend, f->backend = NULL;
    j->device = f->device, f->device = NULL;
    j->model_text = f->model, f->model = NULL;
    j->git = f->git, f->git = NULL;
    j->world = f->world;
    j->sp_size = f->sp_size;
    j->dp_size = f->dp_size;
    j->seq_len = f->seq_len;
    report_parse_model(j);
    j->n_loss = f->n_rows;
    j->loss_step = xmalloc((size_t)(f->n_rows ? f->n_rows : 1) * sizeof *j->loss_step);
    j->loss = xmalloc((size_t)(f->n_rows ? f->n_rows : 1) * sizeof *j->loss);
    for (int64_t i = 0; i < f->n_rows; i++) {
        j->loss_step[i] = f->rows[i].step;
        j->loss[i] = f->rows[i].loss;
    }
    j->valid = f->valid, f->valid = NULL, j->n_valid = f->n_valid;
    j->test = f->test, f->test = NULL, j->n_test = f->n_test;
}

void report_load_job(Job *j, RankReader *rd, int warmup) {
    StepAcc acc = {0};
    RankSums *sums = xcalloc((size_t)j->n_files, sizeof *sums);
    int *file_of_rank = NULL;   // (world) index into j->ranks + 1; 0: not seen
    j->ranks = xcalloc((size_t)j->n_files, sizeof *j->ranks);
    char err[512], why[700];

    for (int i = 0; i < j->n_files; i++) {
        const char *path = j->files[i];
        RankFile f;
        bool first = j->n_ranks == 0;
        if (rank_reader_read(rd, path, first, first, &f, err, sizeof err) != 0) {
            skip(j, path, err);
            continue;
        }
        if (f.n_rows && f.rows[f.n_rows - 1].step > MAX_STEP) {
            snprintf(why, sizeof why, "step %lld is beyond any real run", (long long)f.rows[f.n_rows - 1].step);
            skip(j, path, why);
            rank_file_clear(&f);
            continue;
        }
        if (!first && f.world != j->world) {
            snprintf(why, sizeof why, "from another run: world %d, but %s has world %d", f.world,
                     j->ranks[0].path, j->world);
            skip(j, path, why);
            rank_file_clear(&f);
            continue;
        }
        if (!file_of_rank) file_of_rank = xcalloc((size_t)f.world, sizeof *file_of_rank);
        if (file_of_rank[f.rank]) {
            snprintf(why, sizeof why, "rank %d again (already read from %s)", f.rank,
                     j->ranks[file_of_rank[f.rank] - 1].path);
            skip(j, path, why);
            rank_file_clear(&f);
            continue;
        }
        if (first) take_config(j, &f);

        RankStats *s = &j->ranks[j->n_ranks];
        file_of_rank[f.rank] = ++j->n_ranks;
        s->path = xstrdup(path);
        s->rank = f.rank;
        s->sp_rank = f.sp_rank;
        s->dp_rank = f.dp_rank;
        s->host = f.host, f.host = NULL;
        s->rows = f.n_rows;
        if (f.n_rows) {
            s->first_step = f.rows[0].step;
            s->last_step = f.rows[f.n_rows - 1].step;
            acc_reserve(&acc, s->last_step);
        }
        for (int64_t k = 0; k < f.n_rows; k++) {
            const ReportRow *row = &f.rows[k];
            int64_t x = row->step - 1;
            if (row->t_step > acc.t_max[x] || acc.count[x] == 0) acc.t_max[x] = row->t_step;
            acc.t_sum[x] += row->t_step;
            acc.comm_sum[x] += row->t_comm;
            acc.tokens[x] += row->tokens;
            acc.bytes[x] += row->comm_bytes;
            acc.count[x]++;
            if (k == 0 || row->mem_peak > s->mem_peak) s->mem_peak = row->mem_peak;
        }
        sums[j->n_ranks - 1] = rank_sums(f.rows, f.n_rows, NULL, 0, warmup);
        rank_file_clear(&f);
    }

    // Timed steps: reported by every rank that has rows, past the warm-up.
    int with_rows = 0;
    j->rows_min = j->rows_max = 0;
    for (int r = 0; r < j->n_ranks; r++) {
        with_rows += j->ranks[r].rows > 0;
        if (r == 0 || j->ranks[r].rows < j->rows_min) j->rows_min = j->ranks[r].rows;
        if (r == 0 || j->ranks[r].rows > j->rows_max) j->rows_max = j->ranks[r].rows;
    }
    bool *timed = xcalloc((size_t)(acc.cap ? acc.cap : 1), sizeof *timed);
    j->step = xmalloc((size_t)(acc.cap ? acc.cap : 1) * sizeof *j->step);
    j->step_time = xmalloc((size_t)(acc.cap ? acc.cap : 1) * sizeof *j->step_time);
    double t_total = 0, t_sum = 0, comm_sum = 0, tokens = 0, bytes = 0;
    for (int64_t x = 0; x < acc.cap; x++) {
        if (with_rows == 0 || acc.count[x] != with_rows || x + 1 <= warmup) continue;
        timed[x] = true;
        j->step[j->n_steps] = x + 1;
        j->step_time[j->n_steps++] = acc.t_max[x];
        t_total += acc.t_max[x];
        t_sum += acc.t_sum[x];
        comm_sum += acc.comm_sum[x];
        tokens += (double)acc.tokens[x];
        bytes += (double)acc.bytes[x];
    }
    double n = (double)j->n_steps;
    j->tokens_per_step = j->n_steps ? tokens / n : NAN;
    j->tokens_per_s = j->n_steps && t_total > 0 ? tokens / t_total : NAN;
    j->comm_share = j->n_steps && t_sum > 0 ? comm_sum / t_sum : NAN;
    j->bytes_per_step = j->n_steps ? bytes / n : NAN;

    // Per-rank means over exactly the timed steps; re-read ranks with other rows.
    for (int r = 0; r < j->n_ranks; r++) {
        RankStats *s = &j->ranks[r];
        if (sums[r].n != j->n_steps) {
            RankFile f;
            if (rank_reader_read(rd, s->path, false, false, &f, err, sizeof err) == 0) {
                sums[r] = rank_sums(f.rows, f.n_rows, timed, acc.cap, warmup);
                rank_file_clear(&f);
            } else {
                lsst_warn("%s: cannot read it again (%s): rank %d's means include its steps that other ranks "
                          "have not reported", s->path, err, s->rank);
            }
        }
        set_rank_means(s, sums[r]);
    }
    report_job_stats(j);
    free(timed);
    free(sums);
    free(file_of_rank);
    acc_free(&acc);
}
