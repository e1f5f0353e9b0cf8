// lsst-run configuration (ARCHITECTURE §4): loaded from YAML, overridden by
// --set key=value, validated completely before anything is allocated.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef enum { SCHEME_NONE, SCHEME_LSS, SCHEME_MEGATRON_SP } Scheme;
typedef enum { BALANCE_NONE, BALANCE_ZIGZAG } Balance;
// lss: keep every layer's gathered [K|V] for the backward, or gather it again there
// (memory O(l/N) per layer instead of O(l), one more all-gather per layer).
typedef enum { KV_KEEP, KV_REGATHER } KvMode;
typedef enum { BACKEND_CPU, BACKEND_CUDA } Backend;
typedef enum { COMM_AUTO, COMM_MPI, COMM_NCCL } CommKind;

typedef struct {
    char *path;            // the config file as given
    // data:
    char *data_dir;        // lsst-prep output directory (relative paths: to the current directory)
    int seq_len;           // tokens per sequence (global)
    int batch;             // GLOBAL sequences per step
    // model:
    int layers, dim, heads, mlp, vocab;
    // parallel:
    Scheme scheme;
    int sequence, data;    // grid: sequence x data ranks
    Balance balance;
    KvMode kv;
    // train:
    int steps;
    double lr;             // peak learning rate
    double lr_min;         // floor of the cosine decay (default lr / 10)
    int warmup;            // linear warmup steps
    uint64_t seed;
    int eval_every;        // 0: no periodic evaluation
    int eval_sequences;    // sequences of the valid split per evaluation (default 16)
    int ckpt_every;        // 0: checkpoint only at the end
    double weight_decay;   // AdamW decoupled weight decay on matrices (default 0.1)
    double clip;           // gradient-norm clip (default 1.0; 0 disables)
    double beta1, beta2, eps;
    // backend, comm:
    Backend backend;
    CommKind comm;
    // output:
    char *output_dir;
} RunConfig;

// Load PATH, apply overrides ("key.sub=value", YAML scalar syntax), validate.
// On failure return -1 with ONE line in err: "PATH:LINE:COL: message" (or
// "--set KEY=VALUE: message" for an override), with "did you mean" for unknown keys.
int config_load(RunConfig *c, const char *path, char *const *sets, int nsets, char *err, size_t errlen);
// Checks that depend on the number of ranks (world = sequence x data, divisibility,
// megatron-sp heads % sequence). -1 with a message in err.
int config_check_layout(const RunConfig *c, int world_size, char *err, size_t errlen);
// Write the resolved configuration (every key, defaults filled in) atomically.
int config_write_resolved(const RunConfig *c, const char *path);
// The model section as one-line JSON (metrics attribute "model"); malloc'd.
char *config_model_json(const RunConfig *c);
const char *scheme_name(Scheme s);
const char *balance_name(Balance b);
const char *kv_name(KvMode k);
const char *backend_name(Backend b);
const char *comm_name(CommKind k);
void config_free(RunConfig *c);
