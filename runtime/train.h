// The training loop of lsst-run: data, the step (forward, backward, the double
// gradient averaging, clipping, AdamW), evaluation, checkpoints, metrics.
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "comm.h"
#include "config.h"
#include "data.h"
#include "gpu.h"
#include "metrics.h"
#include "model.h"

// lsst-run's exit codes (beyond 0 ok / 1 runtime failure / 2 invalid input):
// 75 = stopped on SIGTERM/SIGUSR1 after writing a checkpoint; requeue and --resume latest.
enum { EXIT_REQUEUE = 75 };

typedef struct {
    RunConfig cfg;
    Comm comm;
    bool comm_ready;
    Model model;
    Gpu *gpu;              // backend: cuda (NULL: the CPU backend)
    DataSplit *train, *valid;
    MetricsFile *metrics;
    FILE *log;             // rank 0: output.dir/log
    int64_t step;          // steps completed
    int local_batch;       // sequences per data group
    char prefix[32];       // "[rank 0/4] " when multi-rank, else ""
    float *ckpt_full;      // full params, m, v of every tensor held in shares (checkpoints)
    float *ckpt_xchg;      // gather buffer: the largest such tensor
    size_t ckpt_floats;    // size of ckpt_full + ckpt_xchg
    int *read_buf;         // (T + 1) tokens of one contiguous run
    int64_t prefetched;    // the step whose batch model.tokens/targets hold already (0: none)
} Trainer;

// Everything after a validated config: data, model, output dir, metrics, resume.
// resume: NULL, "latest" or a checkpoint path. Returns an exit code: 0, or 2 (bad
// input: data, checkpoint) / 1 (runtime failure) after rank 0 said why.
int trainer_setup(Trainer *tr, const RunConfig *cfg, const char *resume, const char *eval_only);
// Run to cfg.steps; returns an exit code (0, or EXIT_REQUEUE after a signal).
int trainer_run(Trainer *tr);
// Evaluate `split` ("valid" | "test") over cfg.eval_sequences windows: *loss = the mean loss
// (nats). -1 if a read failed (said; with several ranks the job is aborted).
int trainer_evaluate(Trainer *tr, const char *split_name, DataSplit *split, double *loss);
int trainer_save_checkpoint(Trainer *tr);
void trainer_free(Trainer *tr);
// Bytes one rank will allocate for this config (what metrics report as mem_peak),
// computed without allocating: lsst-run --plan.
size_t trainer_plan_bytes(const RunConfig *cfg);
// Learning rate at 1-based step: linear warmup, cosine decay to lr_min.
double lr_at(const RunConfig *cfg, int64_t step);
