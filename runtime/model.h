// The transformer of lsst-run (ARCHITECTURE §4.1) and its parallel layout.
// Decoder-only, pre-LayerNorm, causal, byte tokens, learned token and position
// embeddings, untied output projection. llm.c style: every parameter lives in
// one buffer carved by a size table; every activation in another.
//
// Layout: this rank holds B sequences (its data group's share of the global
// batch), and of each sequence T = seq_len / sp_size tokens: its LSS segment
// (contiguous, or chunks sp_rank and 2N-1-sp_rank with zigzag balance).
// pos[t] is the global position of local token t.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "comm.h"
#include "config.h"

#define NUM_PARAM_TENSORS 17
// The position embedding is the LAST tensor: its rows are owned per sequence rank,
// so every tensor before it (the shared weights) is one contiguous block.
#define PARAM_WPE (NUM_PARAM_TENSORS - 1)

typedef struct {
    float *wte;      // (V, C)
    float *ln1w;     // (L, C)
    float *ln1b;     // (L, C)
    float *qkvw;     // (L, 3C, C)  rows: Q, then K, then V (so [K|V] is one matmul)
    float *qkvb;     // (L, 3C)
    float *attprojw; // (L, C, C)
    float *attprojb; // (L, C)
    float *ln2w;     // (L, C)
    float *ln2b;     // (L, C)
    float *fcw;      // (L, F, C)
    float *fcb;      // (L, F)
    float *fcprojw;  // (L, C, F)
    float *fcprojb;  // (L, C)
    float *lnfw;     // (C)
    float *lnfb;     // (C)
    float *wout;     // (V, C)
    float *wpe;      // (T, C)  this rank's positions only (local order)
} ParamTensors;

typedef struct {
    float *encoded;   // (B, T, C)
    float *ln1;       // (L, B, T, C)
    float *ln1_mean;  // (L, B, T)
    float *ln1_rstd;  // (L, B, T)
    float *q;         // (L, B, T, C)
    float *kv;        // (L, B, T, 2C)   [K|V] of the local tokens: the all-gather's send buffer
    float *kv_full;   // (L, B, S, 2C)   [K|V] of the whole sequence, global order (S = seq_len)
    float *atty;      // (L, B, T, C)
    float *att_lse;   // (L, B, NH, T)
    float *residual2; // (L, B, T, C)
    float *ln2;       // (L, B, T, C)
    float *ln2_mean;  // (L, B, T)
    float *ln2_rstd;  // (L, B, T)
    float *fch;       // (L, B, T, F)
    float *fch_gelu;  // (L, B, T, F)
    float *residual3; // (L, B, T, C)
    float *lnf;       // (B, T, C)
    float *lnf_mean;  // (B, T)
    float *lnf_rstd;  // (B, T)
    float *logits;    // (B, T, V)  overwritten in place by dlogits
    float *losses;    // (B, T)
} Activations;

// Backward scratch: one layer's worth, reused for every layer.
typedef struct {
    float *dres;      // (B, T, C) gradient of the residual stream
    float *dx;        // (B, T, C) gradient into a LayerNorm output
    float *datty;     // (B, T, C)
    float *dq;        // (B, T, C)
    float *dkv;       // (B, T, 2C) this rank's share of d[K|V] after the reduce-scatter
    float *dkv_full;  // (B, S, 2C) partial d[K|V] of the whole sequence from the local queries
    float *kv_xchg;   // (sp, B, T, 2C) rank-major exchange buffer for the gather / reduce-scatter
    float *dfch;      // (B, T, F)
    float *dfch_gelu; // (B, T, F)
    float *tmp;       // (B, T, C) projection outputs before the residual add
} Scratch;

typedef struct {
    RunConfig cfg;
    int L, C, NH, F, V, S;  // S = seq_len (global)
    int B, T;               // local sequences, local tokens per sequence
    int sp_size, sp_rank;
    Balance balance;
    size_t param_sizes[NUM_PARAM_TENSORS];
    size_t num_params;      // floats held on this rank (wpe: own rows only)
    ParamTensors params, grads;
    float *params_mem, *grads_mem, *m_mem, *v_mem;
    Activations acts;
    float *acts_mem;
    Scratch scratch;
    float *scratch_mem;
    int *tokens;            // (B, T) inputs
    int *targets;           // (B, T)
    int *pos;               // (T) global position of each local token
    int *pos_of_rank;       // (sp, T) positions of every rank of the sequence group (for reordering)
    size_t mem_bytes;       // bytes of all the above (the runtime's own allocations)
} Model;

extern const char *const param_names[NUM_PARAM_TENSORS];

// Allocate everything for this rank's share; positions from the balance mode.
void model_init(Model *m, const RunConfig *cfg, int sp_rank, int sp_size, int local_batch);
void model_free(Model *m);
// Deterministic initialization from the seed; identical on every layout.
void model_init_params(Model *m, uint64_t seed);
// Full shape of parameter tensor i (wpe: (S, C)), as ndim/shape.
void model_param_shape(const Model *m, int i, int *ndim, long shape[4]);

// Forward over the local tokens; with targets, also the loss backward seed:
// returns the SUM of token losses on this rank (nats); logits hold dlogits * dloss
// after it when dloss != 0 (training), untouched otherwise (evaluation).
double model_forward(Model *m, Comm *comm, float dloss);
// Backward into m->grads (zeroed here first). Requires model_forward with dloss != 0.
void model_backward(Model *m, Comm *comm);
