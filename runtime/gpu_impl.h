// Private to the CUDA backend (gpu.c: arenas, transfers, the LSS passes, the optimizer;
// gpu_comm.c: the exchanges and gradient sums over MPI or NCCL; gpu_megatron.c: the
// megatron-sp passes). Built with make CUDA=1 only.
#pragma once
#ifdef LSST_CUDA
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <stdbool.h>

#include "cuda/kernels_cuda.h"
#include "gpu.h"

#define CU(call) gpu_check_((call), #call, __FILE__, __LINE__)
void gpu_check_(cudaError_t e, const char *call, const char *file, int line);

// Device activations: model.h's Activations, bf16 (statistics, lse and losses fp32).
// "rows" = B*T local tokens (lss / none) or B*S whole sequences (megatron-sp's head/column region).
typedef struct {
    bf16 *encoded, *ln1, *residual2, *ln2, *residual3, *lnf, *logits;   // local tokens
    bf16 *q, *kv, *kv_full;                                             // lss / none
    bf16 *ln1_full, *qkv, *ln2_full;                                    // megatron-sp
    bf16 *atty, *fch, *fch_gelu;                                        // rows
    float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd, *lnf_mean, *lnf_rstd, *losses, *att_lse;
} DevActs;

// One layer's backward scratch (model.h's Scratch), plus the fp32 buffers of the reduce-scatters.
typedef struct {
    bf16 *dres, *dx, *tmp;        // (B, T, C)
    bf16 *datty, *dfch;               // rows x Cl, rows x Fl
    bf16 *dq;                     // lss: (B, T, C); megatron-sp: d[q|k|v] (B, S, 3Cl)
    bf16 *dkv;                    // lss: (B, T, 2C)
    bf16 *seq_full;               // (B, S, W): lss d[K|V] (sp > 1), megatron-sp partial sums
    bf16 *dseq_full;              // megatron-sp: gathered residual gradient (B, S, C)
    float *wide_full, *wide_local;   // (B, S, W), (B, T, W) fp32: the reduce-scatter's operands (sp > 1)
    void *attn;                   // attention backward scratch
} DevScratch;

enum { ARENA_STATE, ARENA_ACTS, ARENA_SCRATCH, NUM_ARENAS };
enum { GPU_TIMED_COLLECTIVES = 64 };   // ring of start/end event pairs timing the NCCL calls

struct Gpu {
    int device;
    char name[300];
    cudaStream_t stream;
    float *params, *grads, *m, *v;   // (num_params) each, the host Model's layout
    bf16 *params_bf16;               // (num_params)
    double *sumsq;                   // (NUM_PARAM_TENSORS)
    int *tokens, *targets, *pos;     // (B, T), (B, T), (T)
    int *pos_full;                   // (S): 0..S-1 (megatron-sp)
    int *pos_of_rank;                // (sp, T): every rank's positions (sp > 1)
    size_t off[NUM_PARAM_TENSORS];   // offset of each tensor in the parameter block
    bool qkv_fused;                  // Q, K, V in one tensor from one product (gpu.c: qkv_fused)
    DevActs a;
    DevScratch s;
    void *arena[NUM_ARENAS];
    size_t arena_bytes[NUM_ARENAS];
    // comm: mpi: pinned host staging of the sequence-group exchanges (sp > 1), rows of up to W
    // elements, and the host gradient buffer, registered (pinned) when there are peers.
    float *h_xchg;        // (sp, B, T, W) fp32: the blocks (bf16 ones use the first half)
    float *h_local;       // (B, T, W) fp32: what a reduce-scatter returns
    void *grads_pinned;   // m->grads_mem while registered, else NULL
    float *h_losses;      // (B, T)
    // comm: nccl (gpu_comm.c): communicators (NULL: a group of one rank), the stream they run
    // on, the fences, and the start/end events of the collectives not yet timed.
    bool nccl;
    ncclComm_t nccl_seq, nccl_data;
    cudaStream_t comm_stream;
    cudaEvent_t ev_ready, ev_done, ev_time[2 * GPU_TIMED_COLLECTIVES];
    long n_timed;          // collectives timed since the last gpu_sync (ring slot: % GPU_TIMED_COLLECTIVES)
    size_t nccl_bytes;     // device memory NCCL took for the communicators (measured; not in the arenas)
};

// Width of the rows the sequence group exchanges: [K|V] (lss) or a residual-stream row (megatron-sp).
static inline size_t gpu_exchange_width(const Model *m) {
    return (size_t)m->C * (m->scheme == SCHEME_MEGATRON_SP ? 1 : 2);
}
void gpu_comm_close(Gpu *g);
// Waits for the compute stream (gpu_wait) or an event. With NCCL communicators, polls their
// asynchronous errors meanwhile (gpu_comm.c): a failed link or peer would leave NCCL's kernels,
// and this rank, waiting forever; instead the job ends as on an MPI error.
void gpu_wait(Gpu *g);
void gpu_wait_event(Gpu *g, cudaEvent_t ev);

// Parameters (fp32 master, bf16 copy) and gradients of tensor i on the device.
#define P(i) (g->params + g->off[i])
#define PB(i) (g->params_bf16 + g->off[i])
#define G(i) (g->grads + g->off[i])

void gpu_to_device(Gpu *g, void *dst, const void *src, size_t bytes);
void gpu_to_host(Gpu *g, void *dst, const void *src, size_t bytes);   // synchronizes the stream
void gpu_zero(Gpu *g, void *p, size_t bytes);

// All-gather of (B, T, W) bf16 rows into the whole sequence (B, S, W) in global order; with
// peers (sp > 1) also in two halves, so that work can be queued in between. Then the
// reduce-scatter, the gather's mirror, summed in fp32.
void gpu_gather(Gpu *g, Model *m, Comm *comm, const bf16 *local, bf16 *full, int W);
void gpu_gather_post(Gpu *g, Model *m, Comm *comm, const bf16 *local, int W, CommPending *p);
void gpu_gather_finish(Gpu *g, Model *m, Comm *comm, bf16 *full, int W, CommPending *p);
void gpu_reduce_scatter(Gpu *g, Model *m, Comm *comm, const bf16 *full, bf16 *local, int W);

// The output head (every scheme, local tokens); its backward leaves d(residual) in s.dres.
double gpu_head_forward(Gpu *g, const Model *m, const bf16 *residual, float dloss);
void gpu_head_backward(Gpu *g, const Model *m, const bf16 *residual);

double gpu_megatron_forward(Gpu *g, Model *m, Comm *comm, float dloss);
void gpu_megatron_backward(Gpu *g, Model *m, Comm *comm);
#endif
