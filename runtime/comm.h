// Communication for the distributed schemes (ARCHITECTURE §4.2-4.4): MPI
// communicators for the world, the sequence groups and the data groups, the few
// collectives the schemes use, and a count of every byte and second spent in them.
//
// Grid: world = sp_size x dp_size ranks, rank = dp_rank * sp_size + sp_rank.
//   seq group  (GROUP_SEQ):  the sp_size ranks sharing one sequence (same dp_rank),
//                            group rank = sp_rank.
//   data group (GROUP_DATA): the dp_size ranks holding the same segment (same sp_rank),
//                            group rank = dp_rank.
//
// Buffers are host memory (the CPU backend, the CUDA backend with comm: mpi); NCCL moves
// device buffers itself (runtime/gpu_comm.c) and counts through comm_count.
// Counts are in elements, `bytes` in bytes. A group of size 1 never calls MPI:
// the collective is a local copy (or nothing) and is not counted.
//
// Byte counting (CommStats.bytes, metrics column comm_bytes): the bytes THIS rank
// sends under the bandwidth-optimal ring algorithm of each collective, n = group size,
// s = element size (4 for float, 8 for double):
//   all-gather      (n-1) * count * s             (count: elements per rank)
//   reduce-scatter  (n-1) * count * s             (count: elements per rank)
//   all-reduce      2 * (n-1) * count * s / n     (reduce-scatter + all-gather; rounded down)
//   broadcast       bytes on every rank except the last of the chain root, root+1, ...,
//                   root-1 (mod n), which sends nothing: a pipelined chain moves the
//                   message n-1 times, (n-1) * bytes over the group as the rings do.
// These are model volumes, the same on every machine and MPI library, so runs can be
// compared; the MPI library may choose another algorithm (it is never slower by much
// in bandwidth, and the model is exact for the ring algorithms Open MPI uses for large
// messages). Seconds are wall time (MPI_Wtime) inside the collectives, waiting for
// the slowest rank included.
//
// Determinism: the result of every collective is bitwise identical on all ranks of
// the group (Open MPI's all-reduce algorithms -- recursive doubling, ring,
// Rabenseifner -- either reduce each element once and distribute it, or combine
// partial sums pairwise, a+b == b+a in IEEE arithmetic; tests/mpi checks it), and the
// same for the same layout and inputs from run to run. The summation order is not the
// single-rank order, so sums match a single rank to float rounding, not bitwise.
//
// Errors: every MPI call is checked (mpiCheck); a failure prints file:line, the call
// and MPI's error string on stderr and calls MPI_Abort(MPI_COMM_WORLD, 1), so one
// failing rank brings the whole job down instead of hanging the others.
#pragma once
#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { GROUP_WORLD, GROUP_SEQ, GROUP_DATA } CommGroup;

typedef struct {
    int64_t bytes;     // bytes sent by this rank (model volume, see above)
    double seconds;    // wall seconds inside collectives
    int64_t calls;     // collectives that communicated (size-1 groups excluded)
} CommStats;

typedef struct {
    MPI_Comm world, seq, data;   // private communicators (MPI_ERRORS_RETURN); seq: same dp_rank, data: same sp_rank
    int rank, world_size;        // rank = dp_rank * sp_size + sp_rank
    int sp_rank, sp_size;        // position in / size of the sequence group
    int dp_rank, dp_size;        // position in / size of the data group
    long max_chunk;              // elements per MPI call for all-reduce / bytes for broadcast
                                 // (INT_MAX; longer buffers go in pieces; tests lower it)
    CommStats stats;             // since comm_init or the last comm_stats_reset
} Comm;

// Build the grid over `world` (duplicated; the caller keeps its own). The size of
// `world` must equal sp_size * dp_size: otherwise -1 with one line in err, on every
// rank alike (nothing is created; no rank hangs; print err on rank 0 only). 0 on success.
// All ranks must pass the same sp_size, dp_size. MPI calls are made by one thread
// (MPI_THREAD_FUNNELED suffices).
int comm_init(Comm *c, MPI_Comm world, int sp_size, int dp_size, char *err, size_t errlen);
void comm_free(Comm *c);   // before MPI_Finalize; safe after a failed comm_init

// The communicator of a group, its size and this rank's position in it.
MPI_Comm comm_group(const Comm *c, CommGroup g);
int comm_group_size(const Comm *c, CommGroup g);
int comm_group_rank(const Comm *c, CommGroup g);

// recv (n * count) = concatenation of every rank's send (count), in group-rank order.
// send may be recv + group_rank * count (in place).
void comm_allgather(Comm *c, CommGroup g, const float *send, float *recv, long count);
// send (n * count): block j (count elements) is this rank's contribution to group rank
// j; recv (count) = sum over the group of block group_rank. send and recv must not overlap.
void comm_reduce_scatter(Comm *c, CommGroup g, const float *send, float *recv, long count);
// buf (count) = sum over the group of buf, in place.
void comm_allreduce_sum(Comm *c, CommGroup g, float *buf, long count);
void comm_allreduce_sum_double(Comm *c, CommGroup g, double *buf, long count);
// buf (bytes) on every rank = buf of group rank `root`.
void comm_broadcast(Comm *c, CommGroup g, void *buf, long bytes, int root);

// Non-blocking all-gather, so the [K|V] gather can overlap the Q projection: post,
// compute, comm_wait. Same layout as comm_allgather; send and recv must stay untouched
// until comm_wait returns. Counted at comm_wait: the bytes, and the seconds spent in the
// post plus inside comm_wait (not the overlapped compute). Open MPI advances a
// non-blocking collective only inside MPI calls, so much of the transfer may still
// happen in comm_wait.
typedef struct {
    MPI_Request req;   // MPI_REQUEST_NULL when nothing is in flight (or a size-1 group)
    double t_post;     // seconds spent posting
    int64_t bytes;     // bytes this rank sends (counted at comm_wait)
} CommPending;
void comm_iallgather(Comm *c, CommGroup g, const float *send, float *recv, long count, CommPending *p);
void comm_wait(Comm *c, CommPending *p);

// Logical OR of `flag` (0 or not) over the world: 1 on every rank if any rank passed a
// non-zero flag. All ranks call it at the same step boundary (signal agreement).
int comm_any_flag(Comm *c, int flag);
// same[i] = 1 on every rank if every rank of the world passed the same v[i], else 0 (n values).
void comm_all_equal_u64(Comm *c, const uint64_t *v, int *same, int n);

void comm_stats_reset(Comm *c);

// Collectives made outside this file (NCCL on device buffers, runtime/gpu_comm.c) are counted
// with the same byte model. comm_model_bytes: what this rank sends in a group of n ranks;
// `bytes` is the per-rank block (all-gather, reduce-scatter) or the whole buffer (all-reduce).
// comm_count adds one call of `bytes` and `seconds` to the statistics.
typedef enum { COLL_ALLGATHER, COLL_REDUCE_SCATTER, COLL_ALLREDUCE } CommColl;
int64_t comm_model_bytes(CommColl op, int n, int64_t bytes);
void comm_count(Comm *c, int64_t bytes, double seconds);

// mpiCheck(MPI_Xxx(...)): on failure print "FILE:LINE: CALL failed: MPI error string"
// with the world rank on stderr, then MPI_Abort(MPI_COMM_WORLD, 1). Calls on a
// communicator must have MPI_ERRORS_RETURN set to be seen here (Comm's are).
#define mpiCheck(call)                                                                  \
    do {                                                                                \
        int mpi_err_ = (call);                                                          \
        if (mpi_err_ != MPI_SUCCESS) mpi_fail_(mpi_err_, #call, __FILE__, __LINE__);    \
    } while (0)
_Noreturn void mpi_fail_(int err, const char *call, const char *file, int line);
// A failure that must take the whole job down (MPI_Abort), printed as one line with the world
// rank; also for the CUDA and NCCL checks of runtime/gpu*.c.
__attribute__((format(printf, 1, 2))) _Noreturn void comm_abort(const char *fmt, ...);
