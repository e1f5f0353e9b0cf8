// Per-rank metrics file (ARCHITECTURE §4, contract): metrics/rank-NNNNN.h5 with
//   /steps  extensible compound table, one row per step:
//           step, loss, lr, grad_norm, tokens, t_step, t_compute, t_comm, comm_bytes, mem_peak
//   /eval   extensible compound table: step, split, loss, bpc
//   attributes: rank, world, sp_rank, dp_rank, sp_size, dp_size, scheme, backend,
//               host, device, seq_len, model (json text), git
// Written in HDF5 SWMR mode and flushed every few rows, so a reader (h5py, lsst-report)
// can read it while the run goes on and a killed run keeps what was flushed.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int64_t step;        // 1-based
    double loss;         // mean loss over the global batch (nats/token)
    double lr;
    double grad_norm;    // global gradient norm before clipping
    int64_t tokens;      // tokens this rank processed this step
    double t_step;       // seconds
    double t_compute;    // seconds
    double t_comm;       // seconds
    int64_t comm_bytes;  // bytes this rank sent in collectives this step
    int64_t mem_peak;    // bytes: peak of this rank's own allocations
} StepRow;

typedef struct {
    int64_t step;
    char split[8];       // "valid" or "test"
    double loss;         // nats/token
    double bpc;          // loss / ln 2
} EvalRow;

typedef struct {
    int rank, world, sp_rank, dp_rank, sp_size, dp_size;
    const char *scheme, *backend, *host, *device;
    int seq_len;
    const char *model_json;
    const char *git;
} MetricsAttrs;

typedef struct MetricsFile MetricsFile;

// Create PATH (replacing an old one) or, with keep_until_step >= 0, reopen an
// existing file and drop its rows with step > keep_until_step (resume).
// NULL with a message in err on failure.
MetricsFile *metrics_open(const char *path, const MetricsAttrs *attrs, int64_t keep_until_step, char *err,
                          size_t errlen);
int metrics_append_step(MetricsFile *m, const StepRow *row);   // 0 / -1
int metrics_append_eval(MetricsFile *m, const EvalRow *row);   // 0 / -1
int metrics_flush(MetricsFile *m);                              // 0 / -1
int metrics_close(MetricsFile *m);                              // flushes; 0 / -1
// The message of the last failed append/flush ("PATH: cannot ...: cause"); "" if none.
// metrics_close reports its own failure on stderr (the handle is gone when it returns).
const char *metrics_error(const MetricsFile *m);
