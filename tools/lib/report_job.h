// lsst-report's data model (ARCHITECTURE §6): the jobs found under the given
// directories, what was read from their per-rank metrics files, and the numbers
// the report shows. Filled by report_scan (which files), report_load (reading and
// per-job statistics) and report_cross (scaling series, lss / megatron-sp ratios);
// read by the writers (report_doc, report_csv, report_h5).
//
// Definitions (the report and README state the same):
//   timed steps  the steps present in EVERY readable rank file of the job that has
//                rows (a live or killed run: ranks may have flushed different
//                numbers of rows), minus steps <= --warmup.
//   T_s          step time of step s = max over ranks of t_step (a synchronous step
//                ends when its slowest rank ends). mean / median / p99 are over the
//                timed steps; p99 interpolates linearly between order statistics
//                (numpy.percentile's default: index 0.99 * (n - 1) of the sorted T_s).
//   tokens/s     sum over timed steps and ranks of tokens / sum over timed steps of T_s.
//   comm share   sum of t_comm / sum of t_step, over timed steps and all ranks.
//   bytes/step   mean over timed steps of the sum over ranks of comm_bytes.
//   peak memory  per rank: max of mem_peak over its rows.
//   imbalance    C_r = rank r's mean t_compute over the timed steps;
//                imbalance = max_r C_r / mean_r C_r - 1; the slowest ranks are the
//                largest C_r (time a rank spends computing; the others wait in comm).
//   model FLOPs  per step = 3 x forward = tokens x (6 (L (4E^2 + 2EM) + EV) + 12 L l E)
//                (matmuls only, full l x l attention), tokens = sum over ranks.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#define REPORT_SLOWEST 5   // slowest ranks named per job

// One row of /steps as the report reads it: the columns it uses, laid out as the
// compound subset type it is read with (one H5Dread per file).
typedef struct {
    int64_t step;        // 1-based
    double loss;         // nats/token, mean over the global batch (the same on every rank)
    int64_t tokens;      // tokens this rank processed this step
    double t_step;       // seconds
    double t_compute;    // seconds
    double t_comm;       // seconds
    int64_t comm_bytes;  // bytes this rank sent in collectives
    int64_t mem_peak;    // bytes
} ReportRow;

typedef struct {
    int64_t step;
    double bpc;          // bits per character (loss / ln 2)
} EvalPoint;

typedef struct {
    char *path;
    int rank, sp_rank, dp_rank;
    char *host;
    int64_t rows;                  // rows read
    int64_t first_step, last_step; // of its rows (0 when none)
    // Over the job's timed steps:
    double t_step_mean, t_compute_mean, t_comm_mean;   // seconds
    double comm_bytes_mean;                            // bytes per step
    int64_t mem_peak;                                  // bytes, max over all rows
} RankStats;

typedef struct {
    char *path;
    char *reason;
} Skipped;

typedef struct {
    char *label;                 // job name: its directory relative to the directory given
    char *dir;                   // the job's output directory (holds metrics/)
    char **files;                // rank files found, sorted by rank number in the name
    int n_files;

    // Configuration, from the lowest readable rank file.
    char *scheme, *backend, *device, *model_text, *git;
    int world, sp_size, dp_size, seq_len;
    int layers, dim, heads, mlp, vocab;   // parsed from model_text; 0 when absent

    RankStats *ranks;            // readable rank files, sorted by rank
    int n_ranks;
    Skipped *skipped;            // damaged or foreign files, with why
    int n_skipped;
    int64_t rows_min, rows_max;  // rows per readable rank file

    // Timed steps.
    int64_t n_steps;
    int64_t *step;               // (n_steps) step numbers
    double *step_time;           // (n_steps) T_s, seconds

    // Curves, from the lowest readable rank file.
    int64_t n_loss;
    int64_t *loss_step;
    double *loss;                // nats/token
    EvalPoint *valid, *test;
    int64_t n_valid, n_test;

    // Statistics (NaN when undefined: no timed steps, no eval rows, unknown model).
    double t_mean, t_median, t_p99;          // seconds
    double tokens_per_step, tokens_per_s;
    double comm_share;                       // 0..1
    double bytes_per_step;                   // all ranks together
    double flops_per_step, flops_per_s;      // model FLOPs (see above)
    int64_t mem_max, mem_min;                // bytes, over ranks
    double mem_mean;
    double imbalance;                        // max/mean - 1 of per-rank mean t_compute
    int slowest[REPORT_SLOWEST];             // indices into ranks, slowest first
    int n_slowest;
    double final_loss, final_valid_bpc, final_test_bpc;
} Job;

// Jobs of one scheme, model and backend, ordered by rank count: a scaling series.
typedef struct {
    int *jobs;                   // indices into Report.jobs, baseline first
    int n;
    double *speedup, *efficiency;
    bool by_flops;               // speedup from model FLOP rates (else from tokens/s)
} ScalingSeries;

// An lss job and a megatron-sp job of the same grid, sequence length, model and backend.
typedef struct {
    int lss, megatron;           // indices into Report.jobs
    double time, memory, comm;   // megatron-sp / lss: mean step time, max peak memory, bytes per step
} SchemeRatio;

typedef struct {
    char *title;                 // what the report is about (the directories given)
    Job *jobs;
    int n_jobs;
    ScalingSeries *series;
    int n_series;
    SchemeRatio *ratios;
    int n_ratios;
    int warmup;                  // steps <= warmup left out of the timing statistics
    int64_t files_read, files_skipped;
} Report;

void report_free(Report *r);
