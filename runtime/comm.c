// Communication for the distributed schemes: see comm.h for the grid, the byte
// model and the error policy.
#include "comm.h"

#include "common.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// One line "PROG: error: rank R: MESSAGE" (one fprintf, so lines of several failing ranks do
// not interleave on a shared stderr), then the whole job goes down: a rank that exited alone
// would leave its peers waiting in a collective. Before MPI_Init or after MPI_Finalize: this
// process only.
_Noreturn void comm_abort(const char *fmt, ...) {
    int rank = -1, up = 0, down = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&down);
    const bool live = up && !down;
    if (live) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    fflush(stdout);
    fprintf(stderr, "%s: error: rank %d: %s\n", lsst_prog, rank, what);
    if (live) MPI_Abort(MPI_COMM_WORLD, 1);
    _Exit(1);   // MPI_Abort does not return; keeps _Noreturn honest if it ever does
}

_Noreturn void mpi_fail_(int err, const char *call, const char *file, int line) {
    char msg[MPI_MAX_ERROR_STRING] = "unknown MPI error";
    int len = 0;
    MPI_Error_string(err, msg, &len);
    comm_abort("%s:%d: %s failed: %s", file, line, call, msg);
}

int comm_init(Comm *c, MPI_Comm world, int sp_size, int dp_size, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    c->world = c->seq = c->data = MPI_COMM_NULL;
    int world_size, rank;
    mpiCheck(MPI_Comm_size(world, &world_size));
    mpiCheck(MPI_Comm_rank(world, &rank));
    // Decided from arguments every rank holds alike, so all ranks fail together.
    if (sp_size < 1 || dp_size < 1) {
        snprintf(err, errlen, "invalid grid: sequence %d x data %d (both must be >= 1)", sp_size, dp_size);
        return -1;
    }
    if ((long long)sp_size * dp_size != world_size) {
        snprintf(err, errlen, "%d ranks do not fill the grid sequence %d x data %d (%lld ranks needed)", world_size,
                 sp_size, dp_size, (long long)sp_size * dp_size);
        return -1;
    }
    c->rank = rank;
    c->world_size = world_size;
    c->sp_size = sp_size;
    c->dp_size = dp_size;
    c->sp_rank = rank % sp_size;
    c->dp_rank = rank / sp_size;
    c->max_chunk = INT_MAX;
    mpiCheck(MPI_Comm_dup(world, &c->world));
    mpiCheck(MPI_Comm_set_errhandler(c->world, MPI_ERRORS_RETURN));
    // color selects the group, key orders it: group rank = sp_rank (seq) or dp_rank (data).
    mpiCheck(MPI_Comm_split(c->world, c->dp_rank, c->sp_rank, &c->seq));
    mpiCheck(MPI_Comm_split(c->world, c->sp_rank, c->dp_rank, &c->data));
    mpiCheck(MPI_Comm_set_errhandler(c->seq, MPI_ERRORS_RETURN));
    mpiCheck(MPI_Comm_set_errhandler(c->data, MPI_ERRORS_RETURN));
    return 0;
}

void comm_free(Comm *c) {
    MPI_Comm *comms[] = {&c->data, &c->seq, &c->world};
    for (int i = 0; i < 3; i++)
        if (*comms[i] != MPI_COMM_NULL) mpiCheck(MPI_Comm_free(comms[i]));
}

MPI_Comm comm_group(const Comm *c, CommGroup g) {
    return g == GROUP_SEQ ? c->seq : g == GROUP_DATA ? c->data : c->world;
}
int comm_group_size(const Comm *c, CommGroup g) {
    return g == GROUP_SEQ ? c->sp_size : g == GROUP_DATA ? c->dp_size : c->world_size;
}
int comm_group_rank(const Comm *c, CommGroup g) {
    return g == GROUP_SEQ ? c->sp_rank : g == GROUP_DATA ? c->dp_rank : c->rank;
}

void comm_count(Comm *c, int64_t bytes, double seconds) {
    c->stats.bytes += bytes;
    c->stats.seconds += seconds;
    c->stats.calls++;
}

int64_t comm_model_bytes(CommColl op, int n, int64_t bytes) {
    return op == COLL_ALLREDUCE ? 2 * (int64_t)(n - 1) * bytes / n : (int64_t)(n - 1) * bytes;
}

// MPI counts are int: per-rank blocks of all-gather / reduce-scatter must fit one.
static void check_block(const char *fn, long count) {
    if (count < 0 || count > INT_MAX) comm_abort("%s: count %ld outside [0, %d]", fn, count, INT_MAX);
}

// The blocking all-gather is the non-blocking one, waited for at once (same copy on a
// size-1 group, same bytes and seconds counted).
void comm_allgather(Comm *c, CommGroup g, const float *send, float *recv, long count) {
    CommPending p;
    comm_iallgather(c, g, send, recv, count, &p);
    comm_wait(c, &p);
}

void comm_reduce_scatter(Comm *c, CommGroup g, const float *send, float *recv, long count) {
    int n = comm_group_size(c, g);
    check_block("comm_reduce_scatter", count);
    if (n == 1) {
        memmove(recv, send, (size_t)count * sizeof(float));
        return;
    }
    double t0 = MPI_Wtime();
    mpiCheck(MPI_Reduce_scatter_block(send, recv, (int)count, MPI_FLOAT, MPI_SUM, comm_group(c, g)));
    comm_count(c, comm_model_bytes(COLL_REDUCE_SCATTER, n, (int64_t)count * (int64_t)sizeof(float)), MPI_Wtime() - t0);
}

// In-place sum over the group, in pieces of at most max_chunk elements.
static void allreduce_sum(Comm *c, CommGroup g, void *buf, long count, MPI_Datatype type, size_t size) {
    int n = comm_group_size(c, g);
    if (count < 0) comm_abort("comm_allreduce_sum: count %ld < 0", count);
    if (n == 1) return;
    double t0 = MPI_Wtime();
    for (long done = 0; done < count;) {
        long chunk = count - done < c->max_chunk ? count - done : c->max_chunk;
        mpiCheck(MPI_Allreduce(MPI_IN_PLACE, (char *)buf + (size_t)done * size, (int)chunk, type, MPI_SUM,
                               comm_group(c, g)));
        done += chunk;
    }
    comm_count(c, comm_model_bytes(COLL_ALLREDUCE, n, (int64_t)count * (int64_t)size), MPI_Wtime() - t0);
}

void comm_allreduce_sum(Comm *c, CommGroup g, float *buf, long count) {
    allreduce_sum(c, g, buf, count, MPI_FLOAT, sizeof(float));
}

void comm_allreduce_sum_double(Comm *c, CommGroup g, double *buf, long count) {
    allreduce_sum(c, g, buf, count, MPI_DOUBLE, sizeof(double));
}

void comm_broadcast(Comm *c, CommGroup g, void *buf, long bytes, int root) {
    int n = comm_group_size(c, g), r = comm_group_rank(c, g);
    if (root < 0 || root >= n) comm_abort("comm_broadcast: root %d outside a group of %d ranks", root, n);
    if (bytes < 0) comm_abort("comm_broadcast: bytes %ld < 0", bytes);
    if (n == 1) return;
    double t0 = MPI_Wtime();
    for (long done = 0; done < bytes;) {
        long chunk = bytes - done < c->max_chunk ? bytes - done : c->max_chunk;
        mpiCheck(MPI_Bcast((char *)buf + done, (int)chunk, MPI_BYTE, root, comm_group(c, g)));
        done += chunk;
    }
    // Chain root, root+1, ..., root-1: every rank but the last forwards the message once.
    int chain_pos = (r - root + n) % n;
    comm_count(c, chain_pos == n - 1 ? 0 : bytes, MPI_Wtime() - t0);
}

void comm_iallgather(Comm *c, CommGroup g, const float *send, float *recv, long count, CommPending *p) {
    int n = comm_group_size(c, g), r = comm_group_rank(c, g);
    check_block("comm_iallgather", count);
    p->req = MPI_REQUEST_NULL;
    p->t_post = 0;
    p->bytes = 0;
    float *own = recv + (size_t)r * count;
    if (n == 1) {
        if (send != own) memmove(own, send, (size_t)count * sizeof(float));
        return;
    }
    const void *sendbuf = send == own ? MPI_IN_PLACE : (const void *)send;
    double t0 = MPI_Wtime();
    mpiCheck(MPI_Iallgather(sendbuf, (int)count, MPI_FLOAT, recv, (int)count, MPI_FLOAT, comm_group(c, g), &p->req));
    p->t_post = MPI_Wtime() - t0;
    p->bytes = comm_model_bytes(COLL_ALLGATHER, n, (int64_t)count * (int64_t)sizeof(float));
}

void comm_wait(Comm *c, CommPending *p) {
    if (p->req == MPI_REQUEST_NULL) return;   // size-1 group, or already waited for
    double t0 = MPI_Wtime();
    mpiCheck(MPI_Wait(&p->req, MPI_STATUS_IGNORE));
    comm_count(c, p->bytes, p->t_post + (MPI_Wtime() - t0));
    p->t_post = 0;
    p->bytes = 0;
}

int comm_any_flag(Comm *c, int flag) {
    int in = flag != 0, out = in, n = c->world_size;
    if (n == 1) return out;
    double t0 = MPI_Wtime();
    mpiCheck(MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_LOR, c->world));
    comm_count(c, comm_model_bytes(COLL_ALLREDUCE, n, (int64_t)sizeof(int)), MPI_Wtime() - t0);
    return out;
}

void comm_all_equal_u64(Comm *c, const uint64_t *v, int *same, int n) {
    for (int i = 0; i < n; i++) same[i] = 1;
    if (c->world_size == 1) return;
    uint64_t *lo = xmalloc(2 * (size_t)n * sizeof *lo), *hi = lo + n;
    double t0 = MPI_Wtime();
    mpiCheck(MPI_Allreduce(v, lo, n, MPI_UINT64_T, MPI_MIN, c->world));
    mpiCheck(MPI_Allreduce(v, hi, n, MPI_UINT64_T, MPI_MAX, c->world));
    comm_count(c, 2 * comm_model_bytes(COLL_ALLREDUCE, c->world_size, (int64_t)n * 8), MPI_Wtime() - t0);
    for (int i = 0; i < n; i++) same[i] = lo[i] == hi[i];
    free(lo);
}

void comm_stats_reset(Comm *c) { memset(&c->stats, 0, sizeof c->stats); }
