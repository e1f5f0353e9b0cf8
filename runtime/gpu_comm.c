// The CUDA backend's communication: the sequence group's row exchanges (the LSS [K|V]
// all-gather and d[K|V] reduce-scatter, megatron-sp's 8 collectives) and the gradient sums,
// in one of two ways, picked by the config's `comm`:
//
//   mpi (and auto): the blocks go through pinned host buffers and the MPI collectives of
//        comm.h. Several ranks may share one GPU. Gradients are summed on the host (train.c
//        stages them; the host gradient buffer is pinned for it).
//   nccl: on device buffers with NCCL communicators for the sequence and the data group,
//        bootstrapped over those groups' MPI communicators (a group of one rank has none).
//        One GPU per rank (NCCL refuses two ranks on one GPU; gpu_open checks first).
//        Every NCCL call runs on a communication stream, fenced by events: it starts after
//        everything queued on the compute stream so far, and the compute stream waits for it
//        where the result is used (gpu_gather_finish), so the [K|V] gather overlaps the Q GEMM.
//        One collective is in flight at a time; all ranks queue them in the same order.
//        Counted like the MPI ones (comm_model_bytes); the seconds are the device time
//        between events around each call (waiting for peers included), added to comm's
//        statistics as the events complete (a ring of them) and by gpu_sync.
//
// Both ways exchange the same layout, built on the device either way: the n ranks' (B, T, W)
// blocks in group-rank order in s.wide_full, placed into / taken from the whole sequence
// (B, S, W) by cuda_seq_place_rows_bf16 / cuda_seq_take_rows_float. Only the transport of
// the blocks differs. [K|V] travels as bf16; partial gradients are summed in fp32.
#include "gpu.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#ifdef LSST_CUDA
#include "gpu_impl.h"

static _Noreturn void nccl_fail(ncclResult_t r, const char *call, const char *file, int line) {
    comm_abort("%s:%d: %s failed: %s (%s)", file, line, call, ncclGetErrorString(r), ncclGetLastError(NULL));
}
#define NC(call)                                                                    \
    do {                                                                            \
        ncclResult_t nc_r_ = (call);                                                \
        if (nc_r_ != ncclSuccess) nccl_fail(nc_r_, #call, __FILE__, __LINE__);      \
    } while (0)

// An asynchronous NCCL error of a communicator (NULL: none): abort it, then the job.
static void nccl_check_async(ncclComm_t c) {
    ncclResult_t async = ncclSuccess;
    if (!c) return;
    NC(ncclCommGetAsyncError(c, &async));
    if (async == ncclSuccess) return;   // (blocking communicators: never ncclInProgress)
    ncclCommAbort(c);
    comm_abort("NCCL: %s (%s)", ncclGetErrorString(async), ncclGetLastError(NULL));
}

// Polls query(what) until cudaSuccess (an error other than cudaErrorNotReady ends the job), and
// the communicators' asynchronous errors meanwhile.
static void wait_polling(Gpu *g, cudaError_t (*query)(void *), void *what) {
    for (;;) {
        cudaError_t e = query(what);
        if (e == cudaSuccess) return;
        if (e != cudaErrorNotReady) CU(e);
        nccl_check_async(g->nccl_seq);
        nccl_check_async(g->nccl_data);
        sched_yield();
    }
}
static cudaError_t query_stream(void *s) { return cudaStreamQuery((cudaStream_t)s); }
static cudaError_t query_event(void *e) { return cudaEventQuery((cudaEvent_t)e); }

void gpu_wait(Gpu *g) {
    if (g->nccl_seq || g->nccl_data) wait_polling(g, query_stream, g->stream);
    else CU(cudaStreamSynchronize(g->stream));
}

void gpu_wait_event(Gpu *g, cudaEvent_t ev) {
    if (g->nccl_seq || g->nccl_data) wait_polling(g, query_event, ev);
    else CU(cudaEventSynchronize(ev));
}

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
        // Gradients cross to the host every step: pinned, the copies run at full speed.
        if (comm->world_size > 1 && cudaHostRegister(m->grads_mem, m->num_params * sizeof(float), 0) == cudaSuccess)
            g->grads_pinned = m->grads_mem;
        (void)cudaGetLastError();   // a failed registration only costs speed
        g->h_xchg = pinned(m->sp_size > 1 ? BS * W * sizeof(float) : 0);
        g->h_local = pinned(m->sp_size > 1 ? BT * W * sizeof(float) : 0);
        return;
    }
    // Peers connected now rather than at their first collectives (NCCL >= 2.22's default): the
    // measure below is then all NCCL takes, and nothing is allocated mid-step. A user's setting wins.
    setenv("NCCL_RUNTIME_CONNECT", "0", 0);
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

void gpu_comm_close(Gpu *g) {
    if (g->grads_pinned) CU(cudaHostUnregister(g->grads_pinned));
    if (g->h_xchg) CU(cudaFreeHost(g->h_xchg));
    if (g->h_local) CU(cudaFreeHost(g->h_local));
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
// The start/end events of collective k are ring slot k % GPU_TIMED_COLLECTIVES. A slot is read
// when it is reused (its collective is that many calls old: long done) or at gpu_sync.
static void add_time(Gpu *g, Comm *comm, long k) {
    cudaEvent_t *ev = g->ev_time + 2 * (k % GPU_TIMED_COLLECTIVES);
    float ms = 0.0f;
    gpu_wait_event(g, ev[1]);
    CU(cudaEventElapsedTime(&ms, ev[0], ev[1]));
    comm->stats.seconds += ms / 1e3;
}

void gpu_sync(Gpu *g, Comm *comm) {
    gpu_wait(g);
    if (!g->nccl) return;
    long first = g->n_timed > GPU_TIMED_COLLECTIVES ? g->n_timed - GPU_TIMED_COLLECTIVES : 0;
    for (long k = first; k < g->n_timed; k++) add_time(g, comm, k);
    g->n_timed = 0;
}

// Start a collective on the comm stream after all work queued on the compute stream.
static void nccl_begin(Gpu *g, Comm *comm) {
    if (g->n_timed >= GPU_TIMED_COLLECTIVES) add_time(g, comm, g->n_timed - GPU_TIMED_COLLECTIVES);
    CU(cudaEventRecord(g->ev_ready, g->stream));
    CU(cudaStreamWaitEvent(g->comm_stream, g->ev_ready, 0));
    CU(cudaEventRecord(g->ev_time[2 * (g->n_timed % GPU_TIMED_COLLECTIVES)], g->comm_stream));
}

static void nccl_end(Gpu *g, Comm *comm, int64_t bytes) {
    CU(cudaEventRecord(g->ev_time[2 * (g->n_timed % GPU_TIMED_COLLECTIVES) + 1], g->comm_stream));
    g->n_timed++;
    CU(cudaEventRecord(g->ev_done, g->comm_stream));
    comm_count(comm, bytes, 0.0);   // seconds: add_time
}

// The compute stream waits for the collective in flight.
static void nccl_join(Gpu *g) { CU(cudaStreamWaitEvent(g->stream, g->ev_done, 0)); }

// ---- sequence-group exchanges ---------------------------------------------------------------
// The blocks live in s.wide_full (bf16 for the gather, fp32 for the reduce-scatter). mpi: the
// same bytes staged through h_xchg (bf16 rows of W travel as float rows of W/2, counted as
// such; this rank's block is sent in place); nccl: straight from and to s.wide_full.
void gpu_gather_post(Gpu *g, Model *m, Comm *comm, const bf16 *local, int W, CommPending *p) {
    size_t n = (size_t)m->B * m->T * W;
    if (g->nccl) {
        *p = (CommPending){.req = MPI_REQUEST_NULL};
        nccl_begin(g, comm);
        NC(ncclAllGather(local, g->s.wide_full, n, ncclBfloat16, g->nccl_seq, g->comm_stream));
        nccl_end(g, comm, comm_model_bytes(COLL_ALLGATHER, m->sp_size, (int64_t)(n * sizeof(bf16))));
        return;
    }
    float *own = g->h_xchg + (size_t)m->sp_rank * (n / 2);
    gpu_to_host(g, own, local, n * sizeof(bf16));
    comm_iallgather(comm, GROUP_SEQ, own, g->h_xchg, (long)(n / 2), p);
}

void gpu_gather_finish(Gpu *g, Model *m, Comm *comm, bf16 *full, int W, CommPending *p) {
    if (g->nccl) nccl_join(g);
    else {
        comm_wait(comm, p);
        gpu_to_device(g, g->s.wide_full, g->h_xchg, (size_t)m->B * m->S * W * sizeof(bf16));
    }
    cuda_seq_place_rows_bf16(full, (const bf16 *)g->s.wide_full, g->pos_of_rank, m->sp_size, m->B, m->T, W,
                             g->stream);
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
    cuda_seq_take_rows_float(g->s.wide_full, full, g->pos_of_rank, m->sp_size, m->B, m->T, W, g->stream);
    if (g->nccl) {
        nccl_begin(g, comm);
        NC(ncclReduceScatter(g->s.wide_full, g->s.wide_local, nl, ncclFloat, ncclSum, g->nccl_seq, g->comm_stream));
        nccl_end(g, comm, comm_model_bytes(COLL_REDUCE_SCATTER, m->sp_size, (int64_t)(nl * sizeof(float))));
        nccl_join(g);
    } else {
        gpu_to_host(g, g->h_xchg, g->s.wide_full, nf * sizeof(float));
        comm_reduce_scatter(comm, GROUP_SEQ, g->h_xchg, g->h_local, (long)nl);
        gpu_to_device(g, g->s.wide_local, g->h_local, nl * sizeof(float));
    }
    cuda_copy_to_bf16(local, g->s.wide_local, (long)nl, g->stream);
}

// ---- gradient sums (nccl) -------------------------------------------------------------------
void gpu_allreduce_grads(Gpu *g, Comm *comm, CommGroup grp, size_t off, size_t n) {
    ncclComm_t c = grp == GROUP_SEQ ? g->nccl_seq : grp == GROUP_DATA ? g->nccl_data : NULL;
    if (comm_group_size(comm, grp) == 1 || n == 0) return;
    if (!c) lsst_die(1, "internal error: gpu_allreduce_grads without an NCCL communicator for the group");
    nccl_begin(g, comm);
    NC(ncclAllReduce(g->grads + off, g->grads + off, n, ncclFloat, ncclSum, c, g->comm_stream));
    nccl_end(g, comm, comm_model_bytes(COLL_ALLREDUCE, comm_group_size(comm, grp), (int64_t)(n * sizeof(float))));
    nccl_join(g);
}

#else  // built without CUDA: gpu_open has refused backend: cuda before any of this is reached
static _Noreturn void not_built(void) { lsst_die(1, "internal error: CUDA backend called in a build without CUDA"); }
void gpu_comm_open(Gpu *g, Model *m, Comm *comm) { (void)g, (void)m, (void)comm; not_built(); }
bool gpu_nccl(const Gpu *g) { (void)g; not_built(); }
size_t gpu_nccl_bytes(const Gpu *g) { (void)g; not_built(); }
void gpu_sync(Gpu *g, Comm *comm) { (void)g, (void)comm; not_built(); }
void gpu_allreduce_grads(Gpu *g, Comm *comm, CommGroup grp, size_t off, size_t n) {
    (void)g, (void)comm, (void)grp, (void)off, (void)n;
    not_built();
}
#endif
