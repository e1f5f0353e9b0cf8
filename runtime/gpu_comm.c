// The CUDA backend's communication: the sequence group's row exchanges (the LSS [K|V]
// all-gather and d[K|V] reduce-scatter, megatron-sp's 8 collectives) and the gradient sums,
// in one of two ways, picked by the config's `comm`:
//
//   mpi (and auto): through pinned host buffers and the MPI collectives of comm.h. Several
//        ranks may share one GPU. Gradients are summed on the host (train.c stages them).
//   nccl: on device buffers with NCCL communicators for the sequence and the data group,
//        bootstrapped over those groups' MPI communicators (a group of one rank has none).
//        One GPU per rank (NCCL refuses two ranks on one GPU; gpu_open checks first).
//        Every NCCL call runs on a communication stream, fenced by events: it starts after
//        everything queued on the compute stream so far, and the compute stream waits for it
//        where the result is used (gpu_gather_finish), so the [K|V] gather overlaps the Q GEMM.
//        One collective is in flight at a time; all ranks queue them in the same order.
//        Counted like the MPI ones (comm_model_bytes); the seconds are the device time
//        between events around each call (waiting for peers included), added to comm's
//        statistics by gpu_comm_flush.
//
// Both ways exchange the same layout: the n ranks' (B, T, W) blocks in group-rank order, placed
// into / taken from the whole sequence (B, S, W) by model.c's seq_place_rows / seq_take_rows
// (mpi, on the host) or their CUDA twins (nccl, on the device). [K|V] travels as bf16; partial
// gradients are summed in fp32.
#include "gpu.h"

#include <stdio.h>
#include <string.h>

#include "common.h"

#ifdef LSST_CUDA
#include "gpu_impl.h"

static _Noreturn void nccl_fail(ncclResult_t r, const char *call, const char *file, int line) {
    int rank = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    fflush(stdout);
    fprintf(stderr, "%s: error: rank %d: %s:%d: %s failed: %s (%s)\n", lsst_prog, rank, file, line, call,
            ncclGetErrorString(r), ncclGetLastError(NULL));
    MPI_Abort(MPI_COMM_WORLD, 1);
    _Exit(1);
}
#define NC(call)                                                                    \
    do {                                                                            \
        ncclResult_t nc_r_ = (call);                                                \
        if (nc_r_ != ncclSuccess) nccl_fail(nc_r_, #call, __FILE__, __LINE__);      \
    } while (0)

static void *pinned(size_t bytes) {
    void *p = NULL;
    if (bytes) CU(cudaMallocHost(&p, bytes));
    return p;
}

// The NCCL communicator of a group over its MPI communicator; NULL for a group of one rank.
static ncclComm_t nccl_group(Comm *comm, CommGroup grp) {
    int n = comm_group_size(comm, grp), r = comm_group_rank(comm, grp);
    if (n == 1) return NULL;
    ncclUniqueId id;
    if (r == 0) NC(ncclGetUniqueId(&id));
    mpiCheck(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, comm_group(comm, grp)));
    ncclComm_t c;
    NC(ncclCommInitRank(&c, n, id, r));
    return c;
}

void gpu_comm_open(Gpu *g, Model *m, Comm *comm) {
    size_t BT = (size_t)m->B * m->T, BS = (size_t)m->B * m->S, W = gpu_exchange_width(m);
    if (!g->nccl) {
        if (m->sp_size == 1) return;
        g->h_local_bf16 = pinned(BT * W * sizeof(bf16));
        g->h_full = pinned(BS * W * sizeof(float));
        g->h_local = pinned(BT * W * sizeof(float));
        g->h_xchg = pinned(BS * W * sizeof(float));
        m->scratch.xchg = g->h_xchg;   // seq_allgather / seq_reduce_scatter stage through it
        return;
    }
    size_t free0, free1, total;
    CU(cudaMemGetInfo(&free0, &total));
    g->nccl_seq = nccl_group(comm, GROUP_SEQ);
    g->nccl_data = nccl_group(comm, GROUP_DATA);
    CU(cudaMemGetInfo(&free1, &total));
    g->nccl_bytes = free0 > free1 ? free0 - free1 : 0;   // NCCL's own buffers: outside the arenas
    CU(cudaStreamCreateWithFlags(&g->comm_stream, cudaStreamNonBlocking));
    CU(cudaEventCreateWithFlags(&g->ev_ready, cudaEventDisableTiming));
    CU(cudaEventCreateWithFlags(&g->ev_done, cudaEventDisableTiming));
    for (int i = 0; i < 2 * GPU_TIMED_COLLECTIVES; i++) CU(cudaEventCreate(&g->ev_time[i]));
}

void gpu_comm_close(Gpu *g, Model *m) {
    void *host[] = {g->h_local_bf16, g->h_full, g->h_local, g->h_xchg};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++)
        if (host[i]) CU(cudaFreeHost(host[i]));
    if (g->h_xchg && m->scratch.xchg == g->h_xchg) m->scratch.xchg = NULL;
    if (!g->comm_stream) return;   // comm: mpi, or gpu_comm_open never ran (another rank failed)
    if (g->nccl_seq) NC(ncclCommDestroy(g->nccl_seq));
    if (g->nccl_data) NC(ncclCommDestroy(g->nccl_data));
    for (int i = 0; i < 2 * GPU_TIMED_COLLECTIVES; i++) CU(cudaEventDestroy(g->ev_time[i]));
    CU(cudaEventDestroy(g->ev_ready));
    CU(cudaEventDestroy(g->ev_done));
    CU(cudaStreamDestroy(g->comm_stream));
}

bool gpu_nccl(const Gpu *g) { return g->nccl; }
size_t gpu_nccl_bytes(const Gpu *g) { return g->nccl_bytes; }

// ---- NCCL: fences and timing ----------------------------------------------------------------
// Seconds between the start and end events of the collectives timed so far.
static void collect_times(Gpu *g) {
    for (int k = 0; k < g->n_timed; k++) {
        float ms = 0.0f;
        CU(cudaEventSynchronize(g->ev_time[2 * k + 1]));
        CU(cudaEventElapsedTime(&ms, g->ev_time[2 * k], g->ev_time[2 * k + 1]));
        g->nccl_seconds += ms / 1e3;
    }
    g->n_timed = 0;
}

void gpu_comm_flush(Gpu *g, Comm *comm) {
    if (!g->nccl) return;
    collect_times(g);
    comm->stats.seconds += g->nccl_seconds;
    g->nccl_seconds = 0.0;
}

// Start a collective on the comm stream after all work queued on the compute stream.
static void nccl_begin(Gpu *g) {
    if (g->n_timed == GPU_TIMED_COLLECTIVES) collect_times(g);
    CU(cudaEventRecord(g->ev_ready, g->stream));
    CU(cudaStreamWaitEvent(g->comm_stream, g->ev_ready, 0));
    CU(cudaEventRecord(g->ev_time[2 * g->n_timed], g->comm_stream));
}

static void nccl_end(Gpu *g, Comm *comm, int64_t bytes) {
    CU(cudaEventRecord(g->ev_time[2 * g->n_timed + 1], g->comm_stream));
    g->n_timed++;
    CU(cudaEventRecord(g->ev_done, g->comm_stream));
    comm_count(comm, bytes, 0.0);   // seconds: gpu_comm_flush
}

// The compute stream waits for the collective in flight.
static void nccl_join(Gpu *g) { CU(cudaStreamWaitEvent(g->stream, g->ev_done, 0)); }

// ---- sequence-group exchanges ---------------------------------------------------------------
// mpi: bf16 rows of W travel as float rows of W/2, the same bytes. nccl: the gathered blocks
// land in s.wide_full (as bf16), the reduce-scatter's fp32 blocks leave from it.
void gpu_gather_post(Gpu *g, Model *m, Comm *comm, const bf16 *local, int W, CommPending *p) {
    size_t n = (size_t)m->B * m->T * W;
    if (g->nccl) {
        *p = (CommPending){.req = MPI_REQUEST_NULL};
        nccl_begin(g);
        NC(ncclAllGather(local, g->s.wide_full, n, ncclBfloat16, g->nccl_seq, g->comm_stream));
        nccl_end(g, comm, comm_model_bytes(COLL_ALLGATHER, m->sp_size, (int64_t)(n * sizeof(bf16))));
        return;
    }
    gpu_to_host(g, g->h_local_bf16, local, n * sizeof(bf16));
    comm_iallgather(comm, GROUP_SEQ, g->h_local_bf16, g->h_xchg, (long)(n / 2), p);
}

void gpu_gather_finish(Gpu *g, Model *m, Comm *comm, bf16 *full, int W, CommPending *p) {
    if (g->nccl) {
        nccl_join(g);
        cuda_seq_place_rows_bf16(full, (const bf16 *)g->s.wide_full, g->pos_of_rank, m->sp_size, m->B, m->T, W,
                                 g->stream);
        return;
    }
    comm_wait(comm, p);
    seq_place_rows(m, g->h_xchg, g->h_full, W / 2);
    gpu_to_device(g, full, g->h_full, (size_t)m->B * m->S * W * sizeof(bf16));
}

void gpu_gather(Gpu *g, Model *m, Comm *comm, const bf16 *local, bf16 *full, int W) {
    if (m->sp_size == 1) {
        CU(cudaMemcpyAsync(full, local, (size_t)m->B * m->T * W * sizeof(bf16), cudaMemcpyDeviceToDevice, g->stream));
        return;
    }
    CommPending p;
    gpu_gather_post(g, m, comm, local, W, &p);
    gpu_gather_finish(g, m, comm, full, W, &p);
}

// Every rank's partial (B, S, W) -> this rank's rows, summed in fp32, into local.
void gpu_reduce_scatter(Gpu *g, Model *m, Comm *comm, const bf16 *full, bf16 *local, int W) {
    size_t nf = (size_t)m->B * m->S * W, nl = (size_t)m->B * m->T * W;
    if (m->sp_size == 1) {
        CU(cudaMemcpyAsync(local, full, nl * sizeof(bf16), cudaMemcpyDeviceToDevice, g->stream));
        return;
    }
    if (g->nccl) {
        cuda_seq_take_rows_float(g->s.wide_full, full, g->pos_of_rank, m->sp_size, m->B, m->T, W, g->stream);
        nccl_begin(g);
        NC(ncclReduceScatter(g->s.wide_full, g->s.wide_local, nl, ncclFloat, ncclSum, g->nccl_seq, g->comm_stream));
        nccl_end(g, comm, comm_model_bytes(COLL_REDUCE_SCATTER, m->sp_size, (int64_t)(nl * sizeof(float))));
        nccl_join(g);
    } else {
        cuda_copy_to_float(g->s.wide_full, full, (long)nf, g->stream);
        gpu_to_host(g, g->h_full, g->s.wide_full, nf * sizeof(float));
        seq_reduce_scatter(m, comm, g->h_full, g->h_local, W);
        gpu_to_device(g, g->s.wide_local, g->h_local, nl * sizeof(float));
    }
    cuda_copy_to_bf16(local, g->s.wide_local, (long)nl, g->stream);
}

// ---- gradient sums (nccl) -------------------------------------------------------------------
void gpu_allreduce_grads(Gpu *g, Comm *comm, CommGroup grp, size_t off, size_t n) {
    ncclComm_t c = grp == GROUP_SEQ ? g->nccl_seq : grp == GROUP_DATA ? g->nccl_data : NULL;
    if (comm_group_size(comm, grp) == 1 || n == 0) return;
    if (!c) lsst_die(1, "internal error: gpu_allreduce_grads without an NCCL communicator for the group");
    nccl_begin(g);
    NC(ncclAllReduce(g->grads + off, g->grads + off, n, ncclFloat, ncclSum, c, g->comm_stream));
    nccl_end(g, comm, comm_model_bytes(COLL_ALLREDUCE, comm_group_size(comm, grp), (int64_t)(n * sizeof(float))));
    nccl_join(g);
}

#else  // built without CUDA: gpu_open has refused backend: cuda before any of this is reached
static _Noreturn void not_built(void) { lsst_die(1, "internal error: CUDA backend called in a build without CUDA"); }
void gpu_comm_open(Gpu *g, Model *m, Comm *comm) { (void)g, (void)m, (void)comm; not_built(); }
bool gpu_nccl(const Gpu *g) { (void)g; not_built(); }
size_t gpu_nccl_bytes(const Gpu *g) { (void)g; not_built(); }
void gpu_comm_flush(Gpu *g, Comm *comm) { (void)g, (void)comm; not_built(); }
void gpu_allreduce_grads(Gpu *g, Comm *comm, CommGroup grp, size_t off, size_t n) {
    (void)g, (void)comm, (void)grp, (void)off, (void)n;
    not_built();
}
#endif
