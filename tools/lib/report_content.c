// See report_content.h. The definitions listed at the end of every report are the
// ones in report_job.h; keep the two (and README "Reports: lsst-report") in step.
#include "report_content.h"

#include "common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *fmt_seconds(char *buf, size_t n, double s) {
    if (isnan(s)) snprintf(buf, n, "n/a");
    else if (s < 1e-3) snprintf(buf, n, "%.3g us", s * 1e6);
    else if (s < 1) snprintf(buf, n, "%.3g ms", s * 1e3);
    else snprintf(buf, n, "%.4g s", s);
    return buf;
}

const char *fmt_bytes(char *buf, size_t n, double b) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    if (isnan(b)) {
        snprintf(buf, n, "n/a");
        return buf;
    }
    int u = 0;
    while (fabs(b) >= 1024 && u < 5) b /= 1024, u++;
    if (u == 0) snprintf(buf, n, "%.0f B", b);
    else snprintf(buf, n, "%.3g %s", b, units[u]);
    return buf;
}

const char *fmt_percent(char *buf, size_t n, double f) {
    if (isnan(f)) snprintf(buf, n, "n/a");
    else snprintf(buf, n, "%.1f%%", 100 * f);
    return buf;
}

const char *fmt_ratio(char *buf, size_t n, double r) {
    if (isnan(r) || isinf(r)) snprintf(buf, n, "n/a");
    else snprintf(buf, n, "%.3gx", r);
    return buf;
}

const char *fmt_number(char *buf, size_t n, double x) {
    static const char *const suffix[] = {"", " k", " M", " G", " T", " P", " E"};
    if (isnan(x) || isinf(x)) {
        snprintf(buf, n, "n/a");
        return buf;
    }
    int u = 0;
    while (fabs(x) >= 1000 && u < 6) x /= 1000, u++;
    snprintf(buf, n, "%.3g%s", x, suffix[u]);
    return buf;
}

typedef char Cell[48];
typedef const char *(*NumFmt)(char *buf, size_t n, double x);   // fmt_seconds, fmt_bytes, ...

static const char *or_unknown(const char *s) { return s && *s ? s : "?"; }

// One table cell: x as fmt writes it.
static void num_cell(DocBlock *t, NumFmt fmt, double x) {
    Cell c;
    doc_cell(t, "%s", fmt(c, sizeof c, x));
}

static void summary_table(Doc *d, const Report *r) {
    DocBlock *t = doc_table(d, 14, "lllrrrrrrrrrrr");
    const char *head[] = {"job", "scheme", "grid sp x dp", "ranks", "seq_len", "steps", "step time mean",
                          "median", "p99", "tokens/s", "comm share", "bytes/step", "peak mem/rank", "valid bpc"};
    for (int c = 0; c < 14; c++) doc_cell(t, "%s", head[c]);
    for (int i = 0; i < r->n_jobs; i++) {
        const Job *j = &r->jobs[i];
        doc_cell(t, "%s", j->label);
        doc_cell(t, "%s", or_unknown(j->scheme));
        doc_cell(t, "%d x %d", j->sp_size, j->dp_size);
        doc_cell(t, "%d", j->world);
        doc_cell(t, "%d", j->seq_len);
        doc_cell(t, "%lld", (long long)j->n_steps);
        num_cell(t, fmt_seconds, j->t_mean);
        num_cell(t, fmt_seconds, j->t_median);
        num_cell(t, fmt_seconds, j->t_p99);
        num_cell(t, fmt_number, j->tokens_per_s);
        num_cell(t, fmt_percent, j->comm_share);
        num_cell(t, fmt_bytes, j->bytes_per_step);
        if (j->n_ranks) num_cell(t, fmt_bytes, (double)j->mem_max);
        else doc_cell(t, "n/a");
        if (isnan(j->final_valid_bpc)) doc_cell(t, "n/a");
        else doc_cell(t, "%.4f", j->final_valid_bpc);
    }
}

static void scaling_section(Doc *d, PlotSet *ps, const Report *r) {
    if (r->n_series == 0) return;
    doc_heading(d, 2, "scaling", "Scaling");
    doc_para(d, "Jobs of the same scheme, model, backend and device form a series, ordered by rank count; the "
                "smallest run of the series is the baseline (P0 ranks). Following the LSS Transformer paper's "
                "weak-scaling study (the sequence length grows with the number of ranks), speedup S = (model FLOP/s "
                "of the run) / (model FLOP/s of the baseline) and parallel efficiency E = S / (P / P0). Model FLOPs "
                "grow faster than linearly with the sequence length (attention), so E > 100%% (super-linear) is "
                "possible in weak scaling. For runs of equal sequence length and batch the FLOPs per step are "
                "equal and S is the ratio of mean step times (strong scaling). Model FLOP/s = model FLOPs per step "
                "/ mean step time.");
    for (int s = 0; s < r->n_series; s++) {
        const ScalingSeries *se = &r->series[s];
        const Job *base = &r->jobs[se->jobs[0]];
        doc_heading(d, 3, NULL, "%s on %s (%s), model %s", or_unknown(base->scheme), or_unknown(base->backend),
                    or_unknown(base->device), or_unknown(base->model_text));
        if (!se->by_flops) doc_para(d, "The model sizes are unknown for some jobs: speedup from tokens/s instead.");
        DocBlock *t = doc_table(d, 10, "lrlrrrrrrr");
        const char *head[] = {"job",   "ranks",           "grid sp x dp", "seq_len", "tokens/step",
                              "step time mean", "model TFLOP/s", "speedup", "efficiency", "peak mem/rank"};
        for (int c = 0; c < 10; c++) doc_cell(t, "%s", head[c]);
        for (int i = 0; i < se->n; i++) {
            const Job *j = &r->jobs[se->jobs[i]];
            doc_cell(t, "%s", j->label);
            doc_cell(t, "%d", j->world);
            doc_cell(t, "%d x %d", j->sp_size, j->dp_size);
            doc_cell(t, "%d", j->seq_len);
            num_cell(t, fmt_number, j->tokens_per_step);
            num_cell(t, fmt_seconds, j->t_mean);
            if (isnan(j->flops_per_s)) doc_cell(t, "n/a");
            else doc_cell(t, "%.4g", j->flops_per_s / 1e12);
            num_cell(t, fmt_ratio, se->speedup[i]);
            num_cell(t, fmt_percent, se->efficiency[i]);
            num_cell(t, fmt_bytes, (double)j->mem_max);
        }
    }
    doc_plot(d, plot_scaling(ps, r, false));
    doc_plot(d, plot_scaling(ps, r, true));
}

static void ratio_section(Doc *d, const Report *r) {
    bool have_lss = false, have_meg = false;
    for (int i = 0; i < r->n_jobs; i++) {
        const char *s = r->jobs[i].scheme ? r->jobs[i].scheme : "";
        have_lss |= !strcmp(s, "lss");
        have_meg |= !strcmp(s, "megatron-sp");
    }
    if (!have_lss || !have_meg) return;
    doc_heading(d, 2, "lss-vs-megatron", "LSS vs megatron-sp at equal rank counts");
    if (r->n_ratios == 0) {
        doc_para(d, "No lss job has a megatron-sp twin (same ranks, grid, sequence length, model, backend and "
                    "device), so there is nothing to compare.");
        return;
    }
    doc_para(d, "Each lss job next to the megatron-sp job of the same ranks, grid, sequence length, model, backend "
                "and device. Ratios are megatron-sp / lss: above 1 means lss is faster, needs less memory, or "
                "sends fewer bytes (the paper reports 5.6x faster and 10.2x less memory on 144 GPUs).");
    DocBlock *t = doc_table(d, 13, "rlrllrrrrrrrr");
    const char *head[] = {"ranks",          "grid sp x dp",      "seq_len",         "lss job",
                          "megatron-sp job", "step time lss",     "megatron-sp",     "time ratio",
                          "peak mem lss",   "megatron-sp",       "memory ratio",    "bytes/step lss",
                          "comm ratio"};
    for (int c = 0; c < 13; c++) doc_cell(t, "%s", head[c]);
    for (int i = 0; i < r->n_ratios; i++) {
        const SchemeRatio *q = &r->ratios[i];
        const Job *l = &r->jobs[q->lss], *m = &r->jobs[q->megatron];
        doc_cell(t, "%d", l->world);
        doc_cell(t, "%d x %d", l->sp_size, l->dp_size);
        doc_cell(t, "%d", l->seq_len);
        doc_cell(t, "%s", l->label);
        doc_cell(t, "%s", m->label);
        num_cell(t, fmt_seconds, l->t_mean);
        num_cell(t, fmt_seconds, m->t_mean);
        num_cell(t, fmt_ratio, q->time);
        num_cell(t, fmt_bytes, (double)l->mem_max);
        num_cell(t, fmt_bytes, (double)m->mem_max);
        num_cell(t, fmt_ratio, q->memory);
        num_cell(t, fmt_bytes, l->bytes_per_step);
        num_cell(t, fmt_ratio, q->comm);
    }
}

// "1, 3, 5" of the ranks in [0, world) with no readable file (at most 20 named).
static char *missing_ranks(const Job *j, int *count) {
    bool *seen = xcalloc((size_t)(j->world > 0 ? j->world : 1), sizeof *seen);
    for (int r = 0; r < j->n_ranks; r++)
        if (j->ranks[r].rank < j->world) seen[j->ranks[r].rank] = true;
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    *count = 0;
    for (int r = 0; r < j->world; r++) {
        if (seen[r]) continue;
        if (*count < 20) fprintf(f, "%s%d", *count ? ", " : "", r);
        else if (*count == 20) fputs(", ...", f);
        (*count)++;
    }
    fclose(f);
    free(seen);
    return out;
}

static void kv(DocBlock *t, const char *key, const char *value) {
    doc_cell(t, "%s", key);
    doc_cell(t, "%s", value);
}

static void job_section(Doc *d, PlotSet *ps, const Report *r, int index) {
    const Job *j = &r->jobs[index];
    char anchor[32];
    snprintf(anchor, sizeof anchor, "job-%d", index + 1);
    doc_heading(d, 2, anchor, "Job %s", j->label);
    doc_para(d, "Directory: %s", j->dir);
    if (j->n_ranks == 0) {
        doc_para(d, "None of its %d rank files could be read.", j->n_files);
    } else {
        Cell a, b, c;
        int n_missing = 0;
        char *missing = missing_ranks(j, &n_missing);
        DocBlock *t = doc_table(d, 2, "ll");
        kv(t, "setting", "value");
        kv(t, "scheme", or_unknown(j->scheme));
        snprintf(a, sizeof a, "%d sequence x %d data = %d ranks", j->sp_size, j->dp_size, j->world);
        kv(t, "grid", a);
        snprintf(a, sizeof a, "%d", j->seq_len);
        kv(t, "seq_len", a);
        kv(t, "model", or_unknown(j->model_text));
        kv(t, "backend", or_unknown(j->backend));
        kv(t, "device", or_unknown(j->device));
        kv(t, "git", or_unknown(j->git));
        char *files = xasprintf("%d read, %d skipped; %d of %d ranks present%s%s", j->n_ranks, j->n_skipped,
                                j->world - n_missing, j->world, n_missing ? "; missing: " : "", n_missing ? missing : "");
        kv(t, "rank files", files);
        free(files);
        free(missing);

        if (j->rows_min != j->rows_max)
            doc_para(d, "The rank files hold %lld to %lld rows: the run is still writing, or was stopped. The "
                        "statistics use the %lld steps every rank reported.",
                     (long long)j->rows_min, (long long)j->rows_max, (long long)j->n_steps);
        t = doc_table(d, 2, "lr");
        kv(t, "performance", "value");
        snprintf(a, sizeof a, "%lld", (long long)j->n_steps);
        kv(t, "timed steps", a);
        kv(t, "step time mean", fmt_seconds(a, sizeof a, j->t_mean));
        kv(t, "step time median", fmt_seconds(a, sizeof a, j->t_median));
        kv(t, "step time p99", fmt_seconds(a, sizeof a, j->t_p99));
        kv(t, "tokens per step", fmt_number(a, sizeof a, j->tokens_per_step));
        kv(t, "tokens/s", fmt_number(a, sizeof a, j->tokens_per_s));
        kv(t, "model FLOPs per step", fmt_number(a, sizeof a, j->flops_per_step));
        kv(t, "model FLOP/s", fmt_number(a, sizeof a, j->flops_per_s));
        kv(t, "communication share of step time", fmt_percent(a, sizeof a, j->comm_share));
        char *bytes = xasprintf("%s (%s per rank)", fmt_bytes(b, sizeof b, j->bytes_per_step),
                                fmt_bytes(c, sizeof c, j->bytes_per_step / j->n_ranks));
        kv(t, "bytes sent per step", bytes);
        free(bytes);
        char *mem = xasprintf("max %s, min %s, mean %s", fmt_bytes(a, sizeof a, (double)j->mem_max),
                              fmt_bytes(b, sizeof b, (double)j->mem_min), fmt_bytes(c, sizeof c, j->mem_mean));
        kv(t, "peak memory per rank", mem);
        free(mem);
        kv(t, "rank imbalance (t_compute max/mean - 1)", fmt_percent(a, sizeof a, j->imbalance));

        if (j->n_slowest) {
            doc_para(d, "Slowest ranks (largest mean t_compute over the timed steps):");
            t = doc_table(d, 8, "rrrlrrrr");
            const char *head[] = {"rank", "sp_rank", "dp_rank", "host", "t_compute", "t_step", "t_comm", "peak mem"};
            for (int c2 = 0; c2 < 8; c2++) doc_cell(t, "%s", head[c2]);
            for (int k2 = 0; k2 < j->n_slowest; k2++) {
                const RankStats *s = &j->ranks[j->slowest[k2]];
                doc_cell(t, "%d", s->rank);
                doc_cell(t, "%d", s->sp_rank);
                doc_cell(t, "%d", s->dp_rank);
                doc_cell(t, "%s", s->host);
                num_cell(t, fmt_seconds, s->t_compute_mean);
                num_cell(t, fmt_seconds, s->t_step_mean);
                num_cell(t, fmt_seconds, s->t_comm_mean);
                num_cell(t, fmt_bytes, (double)s->mem_peak);
            }
        }

        t = doc_table(d, 2, "lr");
        kv(t, "training", "value");
        if (j->n_loss) {
            snprintf(a, sizeof a, "%.4f (%.4f bpc) at step %lld", j->final_loss, j->final_loss / M_LN2,
                     (long long)j->loss_step[j->n_loss - 1]);
            kv(t, "final train loss", a);
        }
        if (j->n_valid) snprintf(a, sizeof a, "%.4f at step %lld", j->final_valid_bpc, (long long)j->valid[j->n_valid - 1].step);
        kv(t, "final valid bpc", j->n_valid ? a : "n/a (no evaluation rows)");
        if (j->n_test) {
            snprintf(a, sizeof a, "%.4f at step %lld", j->final_test_bpc, (long long)j->test[j->n_test - 1].step);
            kv(t, "final test bpc", a);
        }
        doc_plot(d, plot_job_bpc(ps, j, index));
        doc_plot(d, plot_job_step_time(ps, j, index));
        doc_plot(d, plot_job_ranks(ps, j, index));
    }
    if (j->n_skipped) {
        doc_para(d, "Skipped rank files:");
        DocBlock *l = doc_list(d);
        for (int k2 = 0; k2 < j->n_skipped; k2++) doc_item(l, "%s: %s", j->skipped[k2].path, j->skipped[k2].reason);
    }
}

static void definitions(Doc *d, const Report *r) {
    doc_heading(d, 2, "definitions", "Definitions");
    DocBlock *l = doc_list(d);
    doc_item(l, "Timed steps: the steps present in every readable rank file of the job (a live or killed run's "
                "ranks may have flushed different numbers of rows)%s.",
             r->warmup ? ", without the warm-up steps" : "");
    if (r->warmup) doc_item(l, "Warm-up: steps 1 to %d are left out of every timing statistic (--warmup %d).",
                            r->warmup, r->warmup);
    doc_item(l, "Step time T_s of step s: the maximum over ranks of t_step (a synchronous step ends when its slowest "
                "rank ends). Mean, median and p99 are over the timed steps; p99 interpolates linearly between order "
                "statistics (the value at index 0.99 (n - 1) of the sorted T_s, as numpy.percentile).");
    doc_item(l, "tokens/s: tokens of all ranks over the timed steps / sum of T_s over the timed steps.");
    doc_item(l, "Communication share: sum of t_comm / sum of t_step, over the timed steps and all ranks.");
    doc_item(l, "Bytes sent per step: mean over the timed steps of the sum over ranks of comm_bytes.");
    doc_item(l, "Peak memory per rank: the largest mem_peak in the rank's file.");
    doc_item(l, "Rank imbalance: C_r = rank r's mean t_compute over the timed steps; imbalance = max C_r / mean C_r "
                "- 1. The slowest ranks are those with the largest C_r.");
    doc_item(l, "Model FLOPs per step: tokens per step x (6 (L (4 E^2 + 2 E M) + E V) + 12 L l E) with L layers, "
                "width E, MLP width M, vocabulary V, sequence length l: forward + backward (3x forward) of the "
                "matrix products, full l x l attention.");
    doc_item(l, "bpc: bits per character = loss / ln 2; train bpc from the loss of each step, valid and test bpc "
                "from the evaluation rows.");
}

void report_build(const Report *r, Doc *d, PlotSet *ps) {
    doc_heading(d, 1, NULL, "lsst report: %s", r->title);
    doc_para(d, "%d job%s, %lld rank file%s read, %lld skipped. Written by lsst-report %s (git %s). The definitions of "
                "every number are at the end.",
             r->n_jobs, r->n_jobs == 1 ? "" : "s", (long long)r->files_read, r->files_read == 1 ? "" : "s",
             (long long)r->files_skipped,
             LSST_VERSION, lsst_git());
    doc_heading(d, 2, "summary", "Summary");
    summary_table(d, r);
    scaling_section(d, ps, r);
    ratio_section(d, r);
    int all = plot_all_bpc(ps, r);
    if (all >= 0) {
        doc_heading(d, 2, "curves", "Training curves");
        doc_plot(d, all);
    }
    for (int i = 0; i < r->n_jobs; i++) job_section(d, ps, r, i);
    definitions(d, r);
}
