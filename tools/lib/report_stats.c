// See report_stats.h and the definitions in report_job.h.
#include "report_stats.h"

#include "common.h"
#include "yaml_tree.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double report_percentile(const double *sorted, int64_t n, double p) {
    if (n <= 0) return NAN;
    double h = (double)(n - 1) * p / 100.0;
    int64_t lo = (int64_t)floor(h);
    if (lo >= n - 1) return sorted[n - 1];
    return sorted[lo] + (h - (double)lo) * (sorted[lo + 1] - sorted[lo]);
}

double report_flops_per_token(int layers, int dim, int mlp, int vocab, int seq_len) {
    if (layers <= 0 || dim <= 0 || mlp <= 0 || vocab <= 0 || seq_len <= 0) return NAN;
    double L = layers, E = dim, M = mlp, V = vocab, l = seq_len;
    return 6.0 * (L * (4.0 * E * E + 2.0 * E * M) + E * V) + 12.0 * L * l * E;
}

static int model_int(const YNode *map, const char *key) {
    long long v = 0;
    const YNode *n = yn_get(map, key);
    return n && yn_as_int(n, &v) && v > 0 && v <= 1 << 30 ? (int)v : 0;
}

void report_parse_model(Job *j) {
    if (!j->model_text) return;
    char err[256];
    YNode *root = yn_load_string(j->model_text, strlen(j->model_text), "model", err, sizeof err);
    if (!root) return;
    if (root->kind == YNODE_MAP) {
        j->layers = model_int(root, "layers");
        j->dim = model_int(root, "dim");
        j->heads = model_int(root, "heads");
        j->mlp = model_int(root, "mlp");
        j->vocab = model_int(root, "vocab");
        if (!j->mlp && j->dim) j->mlp = 4 * j->dim;
        if (!j->vocab && j->dim) j->vocab = 256;
    }
    yn_free(root);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void report_job_stats(Job *j) {
    double *sorted = xmalloc((size_t)(j->n_steps ? j->n_steps : 1) * sizeof *sorted);
    double sum = 0;
    for (int64_t i = 0; i < j->n_steps; i++) sum += sorted[i] = j->step_time[i];
    qsort(sorted, (size_t)j->n_steps, sizeof *sorted, cmp_double);
    j->t_mean = j->n_steps ? sum / (double)j->n_steps : NAN;
    j->t_median = report_percentile(sorted, j->n_steps, 50);
    j->t_p99 = report_percentile(sorted, j->n_steps, 99);
    free(sorted);

    // Memory and imbalance over the readable ranks.
    j->mem_max = j->mem_min = 0;
    j->mem_mean = NAN;
    double mem_sum = 0, c_sum = 0, c_max = 0;
    int n_c = 0;
    for (int r = 0; r < j->n_ranks; r++) {
        const RankStats *s = &j->ranks[r];
        if (r == 0 || s->mem_peak > j->mem_max) j->mem_max = s->mem_peak;
        if (r == 0 || s->mem_peak < j->mem_min) j->mem_min = s->mem_peak;
        mem_sum += (double)s->mem_peak;
        if (!isnan(s->t_compute_mean)) {
            c_sum += s->t_compute_mean;
            if (n_c == 0 || s->t_compute_mean > c_max) c_max = s->t_compute_mean;
            n_c++;
        }
    }
    if (j->n_ranks) j->mem_mean = mem_sum / j->n_ranks;
    j->imbalance = n_c && c_sum > 0 ? c_max / (c_sum / n_c) - 1.0 : NAN;
    // Slowest ranks: largest mean t_compute first, ties by rank (ranks are sorted by rank).
    j->n_slowest = 0;
    for (int r = 0; r < j->n_ranks; r++) {
        double c = j->ranks[r].t_compute_mean;
        if (isnan(c)) continue;
        int pos = j->n_slowest;
        while (pos > 0 && j->ranks[j->slowest[pos - 1]].t_compute_mean < c) pos--;
        if (pos >= REPORT_SLOWEST) continue;
        int last = j->n_slowest < REPORT_SLOWEST ? j->n_slowest : REPORT_SLOWEST - 1;
        for (int k = last; k > pos; k--) j->slowest[k] = j->slowest[k - 1];
        j->slowest[pos] = r;
        if (j->n_slowest < REPORT_SLOWEST) j->n_slowest++;
    }

    j->final_loss = j->n_loss ? j->loss[j->n_loss - 1] : NAN;
    j->final_valid_bpc = j->n_valid ? j->valid[j->n_valid - 1].bpc : NAN;
    j->final_test_bpc = j->n_test ? j->test[j->n_test - 1].bpc : NAN;
    j->flops_per_step = j->tokens_per_step * report_flops_per_token(j->layers, j->dim, j->mlp, j->vocab, j->seq_len);
    j->flops_per_s = j->flops_per_step / j->t_mean;
}

// ---- across jobs ----

static bool same_str(const char *a, const char *b) { return !strcmp(a ? a : "", b ? b : ""); }

// Jobs that scale against each other: same scheme, model, backend and device.
static bool same_series(const Job *a, const Job *b) {
    return same_str(a->scheme, b->scheme) && same_str(a->model_text, b->model_text) &&
           same_str(a->backend, b->backend) && same_str(a->device, b->device);
}

static const Report *g_sort_report;   // qsort has no context argument
static int by_size(const void *pa, const void *pb) {
    const Job *a = &g_sort_report->jobs[*(const int *)pa], *b = &g_sort_report->jobs[*(const int *)pb];
    if (a->world != b->world) return a->world < b->world ? -1 : 1;
    if (a->seq_len != b->seq_len) return a->seq_len < b->seq_len ? -1 : 1;
    return *(const int *)pa - *(const int *)pb;
}

static void add_series(Report *r, int *members, int n) {
    g_sort_report = r;
    qsort(members, (size_t)n, sizeof *members, by_size);
    ScalingSeries s = {.jobs = members, .n = n};
    s.speedup = xmalloc((size_t)n * sizeof *s.speedup);
    s.efficiency = xmalloc((size_t)n * sizeof *s.efficiency);
    s.by_flops = true;
    for (int i = 0; i < n; i++) s.by_flops &= !isnan(r->jobs[members[i]].flops_per_s);
    const Job *base = &r->jobs[members[0]];
    for (int i = 0; i < n; i++) {
        const Job *j = &r->jobs[members[i]];
        s.speedup[i] = s.by_flops ? j->flops_per_s / base->flops_per_s : j->tokens_per_s / base->tokens_per_s;
        s.efficiency[i] = s.speedup[i] / ((double)j->world / (double)base->world);
    }
    r->series = xrealloc(r->series, (size_t)(r->n_series + 1) * sizeof *r->series);
    r->series[r->n_series++] = s;
}

void report_cross(Report *r) {
    bool *used = xcalloc((size_t)r->n_jobs + 1, sizeof *used);
    for (int a = 0; a < r->n_jobs; a++) {
        if (used[a] || r->jobs[a].n_steps == 0) continue;
        int *members = xmalloc((size_t)r->n_jobs * sizeof *members), n = 0;
        for (int b = a; b < r->n_jobs; b++) {
            if (used[b] || r->jobs[b].n_steps == 0 || !same_series(&r->jobs[a], &r->jobs[b])) continue;
            used[b] = true;
            members[n++] = b;
        }
        if (n >= 2) add_series(r, members, n);
        else free(members);
    }
    free(used);

    for (int a = 0; a < r->n_jobs; a++) {
        const Job *l = &r->jobs[a];
        if (!same_str(l->scheme, "lss") || l->n_steps == 0) continue;
        for (int b = 0; b < r->n_jobs; b++) {
            const Job *m = &r->jobs[b];
            if (!same_str(m->scheme, "megatron-sp") || m->n_steps == 0 || m->world != l->world ||
                m->sp_size != l->sp_size || m->dp_size != l->dp_size || m->seq_len != l->seq_len ||
                !same_str(m->model_text, l->model_text) || !same_str(m->backend, l->backend) ||
                !same_str(m->device, l->device))
                continue;
            SchemeRatio q = {.lss = a, .megatron = b};
            q.time = m->t_mean / l->t_mean;
            q.memory = l->mem_max > 0 ? (double)m->mem_max / (double)l->mem_max : NAN;
            q.comm = l->bytes_per_step > 0 ? m->bytes_per_step / l->bytes_per_step : NAN;
            r->ratios = xrealloc(r->ratios, (size_t)(r->n_ratios + 1) * sizeof *r->ratios);
            r->ratios[r->n_ratios++] = q;
        }
    }
}
