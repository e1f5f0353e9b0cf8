// The arithmetic of lsst-report (definitions in report_job.h): percentiles,
// model FLOPs, per-job summary numbers, scaling series and lss / megatron-sp ratios.
#pragma once
#include "report_job.h"

// p-th percentile (0..100) of sorted[n] with linear interpolation between order
// statistics (numpy.percentile's default); NaN when n == 0.
double report_percentile(const double *sorted, int64_t n, double p);

// Model FLOPs per token of one training step (3 x forward, matmuls only, full
// seq_len x seq_len attention): 6 (L (4E^2 + 2EM) + EV) + 12 L l E. NaN if a size is 0.
double report_flops_per_token(int layers, int dim, int mlp, int vocab, int seq_len);

// Fill j->layers, dim, heads, mlp, vocab from j->model_text (JSON or YAML map);
// missing keys stay 0 (mlp defaults to 4 x dim, vocab to 256, as lsst-run does).
void report_parse_model(Job *j);

// From j->step_time and j->ranks: t_mean, t_median, t_p99, memory over ranks,
// imbalance and the slowest ranks, final loss / bpc, model FLOPs (needs
// tokens_per_step, seq_len and the model sizes).
void report_job_stats(Job *j);

// Across jobs: scaling series (per scheme, model, backend and device; >= 2 jobs)
// and lss / megatron-sp pairs.
void report_cross(Report *r);
