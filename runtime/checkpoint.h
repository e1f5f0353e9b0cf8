// Checkpoints (ARCHITECTURE §4.5): one HDF5 file of FULL tensors (independent of
// the parallel layout): /params/<name>, /adam_m/<name>, /adam_v/<name> (float32,
// shapes as given), plus the training state as attributes of /: step, seed,
// rng (uint64[4]), data_position, format_version, model (json). Written to a temp
// file beside PATH, fsync'd, renamed: a crash never leaves a half checkpoint at PATH.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *name;   // "wte", "h.qkvw", ...
    float *data;        // full tensor
    int ndim;
    long shape[4];
} CkptTensor;

typedef struct {
    int64_t step;           // steps completed
    uint64_t seed;
    uint64_t rng[4];        // any RNG state the runtime keeps
    int64_t data_position;  // data cursor (e.g. sequences consumed), for resume
    const char *model_json; // written; on read, compared if non-NULL
} CkptState;

// Write params/m/v (three arrays of n tensors with the same names and shapes).
int checkpoint_write(const char *path, const CkptTensor *params, const CkptTensor *m, const CkptTensor *v, int n,
                     const CkptState *st, char *err, size_t errlen);
// Read into the given buffers; names and shapes must match exactly (err names the
// first mismatch). model_json in st, if non-NULL, must match the file's.
int checkpoint_read(const char *path, CkptTensor *params, CkptTensor *m, CkptTensor *v, int n, CkptState *st,
                    char *err, size_t errlen);
// Path of the newest DIR/step-NNNNNN.h5 (highest step), malloc'd; NULL if none.
char *checkpoint_latest(const char *dir);
// "DIR/step-NNNNNN.h5", malloc'd.
char *checkpoint_path(const char *dir, int64_t step);
