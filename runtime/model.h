// The transformer of lsst-run (ARCHITECTURE §4.1) and its parallel layout.
// Decoder-only, pre-LayerNorm, causal, byte tokens, learned token and position
// embeddings, untied output projection. llm.c style: every parameter lives in
// one buffer carved by a size table; every activation in another.
//
// Layout: this rank holds B sequences (its data group's share of the global
// batch), and of each sequence T = S / sp_size tokens (S = seq_len): its segment
// (contiguous, or chunks sp_rank and 2N-1-sp_rank with zigzag balance); pos[t]
// is the global position of local token t. Token-wise work (embeddings, LayerNorm,
// residuals, loss) runs on the local tokens in every scheme.
//   lss / none:   weights replicated; attention of the local queries against the
//                 whole sequence's [K|V] (model.c).
//   megatron-sp:  tensor parallelism of degree tp = sp_size: each rank holds the
//                 heads [r*NH/tp, (r+1)*NH/tp) and MLP columns [r*F/tp, ...) and
//                 works on the whole sequence between an all-gather and a
//                 reduce-scatter (megatron.c).
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "comm.h"
#include "config.h"

#define NUM_PARAM_TENSORS 17
// The position embedding is the LAST tensor: its rows are owned per sequence rank,
// so the tensors before it are one contiguous block.
#define PARAM_WPE (NUM_PARAM_TENSORS - 1)
// Index of each tensor (param_names, param_sizes, the order of the parameter block).
enum { P_WTE, P_LN1W, P_LN1B, P_QKVW, P_QKVB, P_ATTPROJW, P_ATTPROJB, P_LN2W, P_LN2B, P_FCW, P_FCB,
       P_FCPROJW, P_FCPROJB, P_LNFW, P_LNFB, P_WOUT };

// Cl = C / tp, Fl = F / tp, NHl = NH / tp (tp = 1 except for megatron-sp).
typedef struct {
    float *wte;      // (V, C)
    float *ln1w;     // (L, C)
    float *ln1b;     // (L, C)
    float *qkvw;     // (L, 3Cl, C)  rows: Q, then K, then V of this rank's heads
    float *qkvb;     // (L, 3Cl)
    float *attprojw; // (L, C, Cl)   columns of this rank's heads
    float *attprojb; // (L, C)
    float *ln2w;     // (L, C)
    float *ln2b;     // (L, C)
    float *fcw;      // (L, Fl, C)
    float *fcb;      // (L, Fl)
    float *fcprojw;  // (L, C, Fl)
    float *fcprojb;  // (L, C)
    float *lnfw;     // (C)
    float *lnfb;     // (C)
    float *wout;     // (V, C)
    float *wpe;      // (T, C)  this rank's positions only (local order)
} ParamTensors;

// Shapes: "local" = (B, T, ·) this rank's tokens; "full" = (B, S, ·) whole sequence.
typedef struct {
    float *encoded;   // (B, T, C)
    float *ln1;       // (L, B, T, C)
    float *ln1_mean;  // (L, B, T)
    float *ln1_rstd;  // (L, B, T)
    float *residual2; // (L, B, T, C)
    float *ln2;       // (L, B, T, C)
    float *ln2_mean;  // (L, B, T)
    float *ln2_rstd;  // (L, B, T)
    float *residual3; // (L, B, T, C)
    float *lnf;       // (B, T, C)
    float *lnf_mean;  // (B, T)
    float *lnf_rstd;  // (B, T)
    float *logits;    // (B, T, V)  overwritten in place by dlogits
    float *losses;    // (B, T)
    // lss / none (local queries, full keys):
    float *q;         // (L, B, T, C)
    float *kv;        // (L, B, T, 2C)  [K|V] of the local tokens: the all-gather's send buffer
    float *kv_full;   // (L, B, S, 2C)  [K|V] of the whole sequence, global order
    // megatron-sp (whole sequence, this rank's heads / MLP columns):
    float *ln1_full;  // (L, B, S, C)
    float *qkv;       // (L, B, S, 3Cl)
    float *ln2_full;  // (L, B, S, C)
    // both; lss: (B, T, ·) local, megatron-sp: (B, S, ·) full with this rank's heads/columns:
    float *atty;      // (L, B, T|S, Cl)
    float *att_lse;   // (L, B, NHl, T|S)
    float *fch;       // (L, B, T|S, Fl)
    float *fch_gelu;  // (L, B, T|S, Fl)
} Activations;

// Backward scratch: one layer's worth, reused for every layer.
typedef struct {
    float *dres;      // (B, T, C) gradient of the residual stream
    float *dx;        // (B, T, C) gradient into a LayerNorm output
    float *tmp;       // (B, T, C) projection outputs before the residual add
    float *xchg;      // (sp, B, T, W) rank-major exchange buffer, W = 2C (lss) or C (megatron-sp)
    float *seq_full;  // (B, S, W) whole-sequence buffer: lss d[K|V], megatron-sp partial sums
    float *dseq_full; // (B, S, C) megatron-sp: gathered gradient of a residual branch
    float *datty;     // (B, T|S, Cl)
    float *dq;        // lss: (B, T, C); megatron-sp: d[q|k|v] (B, S, 3Cl)
    float *dkv;       // lss: (B, T, 2C) this rank's share of d[K|V] after the reduce-scatter
    float *dfch;      // (B, T|S, Fl)
    float *dfch_gelu; // (B, T|S, Fl)
} Scratch;

// How a tensor is laid out across the sequence group.
typedef enum {
    SHARD_NONE,   // replicated; the sequence group's gradients are partial: summed over it
    SHARD_ROWS,   // wpe: rank r holds the rows of its positions
    SHARD_SPLIT,  // megatron-sp: full viewed as (A, M, I), rank r holds [:, r*M/tp : (r+1)*M/tp, :]
} ShardKind;

typedef struct {
    RunConfig cfg;
    Scheme scheme;
    int L, C, NH, F, V, S;   // S = seq_len (global)
    int B, T;                // local sequences, local tokens per sequence
    int sp_size, sp_rank;
    int tp, Cl, Fl, NHl;     // tensor-parallel degree and this rank's share
    Balance balance;
    size_t param_sizes[NUM_PARAM_TENSORS];   // floats held on this rank
    ShardKind shard[NUM_PARAM_TENSORS];
    long split[NUM_PARAM_TENSORS][3];        // (A, M, I) of SHARD_SPLIT tensors
    size_t num_params;       // floats held on this rank
    ParamTensors params, grads;
    float *params_mem, *grads_mem, *m_mem, *v_mem;
    Activations acts;
    float *acts_mem;
    Scratch scratch;
    float *scratch_mem;
    int *tokens;             // (B, T) inputs
    int *targets;            // (B, T)
    int *pos;                // (T) global position of each local token
    int *pos_of_rank;        // (sp, T) positions of every rank of the sequence group
    int *pos_full;           // (S) 0..S-1 (megatron-sp attention over the whole sequence)
    size_t num_acts, num_scratch;   // floats
    size_t mem_bytes;        // bytes of all the above, planned (model_layout) = allocated (model_init)
} Model;

extern const char *const param_names[NUM_PARAM_TENSORS];

// Sizes of everything for this rank's share, nothing allocated (lsst-run --plan).
void model_layout(Model *m, const RunConfig *cfg, int sp_rank, int sp_size, int local_batch);
// model_layout, then allocate (zeroed) through rt_calloc.
void model_init(Model *m, const RunConfig *cfg, int sp_rank, int sp_size, int local_batch);
void model_free(Model *m);
// Deterministic initialization from the seed: every element of the FULL model has
// a value that depends only on (seed, tensor, index), so every layout starts alike.
void model_init_params(Model *m, uint64_t seed);
// Full (layout-independent) shape of tensor i and its number of elements.
void model_param_shape(const Model *m, int i, int *ndim, long shape[4]);
size_t model_full_size(const Model *m, int i);
// Assemble the full tensor i from every sequence rank's share (collective over the
// sequence group; xchg holds sp_size * param_sizes[i] floats) / take this rank's share.
void model_gather_tensor(const Model *m, Comm *comm, int i, const float *local, float *full, float *xchg);
void model_slice_tensor(const Model *m, int i, const float *full, float *local);

// Forward over the local tokens; returns the SUM of token losses on this rank (nats).
// dloss != 0 (training): logits then hold dloss * dlogits for model_backward.
double model_forward(Model *m, Comm *comm, float dloss);
// Backward into m->grads (zeroed first). Requires model_forward with dloss != 0.
void model_backward(Model *m, Comm *comm);

// Scheme internals shared by model.c and megatron.c.
// Whole-sequence exchange of width-W rows inside the sequence group:
//   gather:         local (B, T, W) of every rank -> full (B, S, W) in global order
//   reduce-scatter: partial full (B, S, W) of every rank -> summed local (B, T, W)
void seq_allgather(Model *m, Comm *comm, const float *local, float *full, int W);
void seq_reduce_scatter(Model *m, Comm *comm, const float *full, float *local, int W);
double megatron_forward(Model *m, Comm *comm, float dloss);
void megatron_backward(Model *m, Comm *comm);
// Output head shared by the schemes: final LayerNorm, projection, loss (+ its backward).
double head_forward(Model *m, const float *residual, float dloss);
void head_backward(Model *m, const float *residual);
