// runtime/comm: grid mapping, collective values against closed forms, byte counters,
// the non-blocking all-gather, flag agreement, bitwise agreement of all-reduce across
// ranks, and the failure paths. Run under mpirun (tests/mpi/comm.bats):
//   test_comm SP DP              all checks on an SP x DP grid; rank 0 prints TAP
//   test_comm SP DP exit-rank1   rank 1 exits with status 3 before a collective
//   test_comm SP DP mpi-error    rank 1 makes a failing MPI call through mpiCheck
//   test_comm SP DP bad-root     every rank broadcasts from a root outside the group
// Each check is decided on every rank; rank 0 prints one TAP line for all of them,
// naming the ranks where it failed.
#include "../unit/check.h"
#include "comm.h"
#include "common.h"

#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

static int world_rank, world_size;

// One TAP line for a check decided on every rank (collective over MPI_COMM_WORLD,
// through raw MPI so the Comm counters are untouched).
__attribute__((format(printf, 3, 4))) static void check_all_(int ok, int line, const char *fmt, ...) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    int oks[64] = {0};
    ok = ok != 0;
    MPI_Gather(&ok, 1, MPI_INT, oks, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (world_rank != 0) return;
    int all = 1;
    for (int i = 0; i < world_size; i++) all &= oks[i];
    CHECK(all, "%s", what);
    if (!all) {
        printf("#   test_comm.c:%d: failed on ranks", line);
        for (int i = 0; i < world_size; i++)
            if (!oks[i]) printf(" %d", i);
        printf("\n");
    }
}
#define CHECK_ALL(ok, ...) check_all_((ok), __LINE__, __VA_ARGS__)

static const char *group_name(CommGroup g) { return g == GROUP_SEQ ? "seq" : g == GROUP_DATA ? "data" : "world"; }

// World rank of member j of this rank's group g.
static int member(const Comm *c, CommGroup g, int j) {
    return g == GROUP_SEQ ? c->dp_rank * c->sp_size + j : g == GROUP_DATA ? j * c->sp_size + c->sp_rank : j;
}

// Worst mismatch of got against want (reported on stderr by the failing rank).
static int same_floats(const char *what, const float *got, const double *want, long n) {
    for (long i = 0; i < n; i++)
        if (got[i] != want[i]) {
            fprintf(stderr, "# rank %d: %s: element %ld is %.9g, want %.9g\n", world_rank, what, i, got[i], want[i]);
            return 0;
        }
    return 1;
}

static void test_grid(Comm *c) {
    int mpi_rank, mpi_size;
    MPI_Comm_rank(c->seq, &mpi_rank);
    MPI_Comm_size(c->seq, &mpi_size);
    int seq_ok = mpi_rank == c->sp_rank && mpi_size == c->sp_size;
    MPI_Comm_rank(c->data, &mpi_rank);
    MPI_Comm_size(c->data, &mpi_size);
    int data_ok = mpi_rank == c->dp_rank && mpi_size == c->dp_size;
    CHECK_ALL(c->rank == world_rank && c->world_size == world_size &&
                  c->rank == c->dp_rank * c->sp_size + c->sp_rank && c->sp_rank < c->sp_size &&
                  c->dp_rank < c->dp_size,
              "rank = dp_rank * sp_size + sp_rank on a %d x %d grid", c->sp_size, c->dp_size);
    CHECK_ALL(seq_ok && data_ok, "seq/data communicators: ranks sp_rank/dp_rank, sizes sp_size/dp_size");
    for (CommGroup g = GROUP_WORLD; g <= GROUP_DATA; g++) {
        // Membership: gather the world ranks of the group.
        int n = comm_group_size(c, g);
        float me = (float)c->rank, ranks[64];
        comm_allgather(c, g, &me, ranks, 1);
        int ok = 1;
        for (int j = 0; j < n; j++) ok &= ranks[j] == (float)member(c, g, j);
        CHECK_ALL(ok, "%s group members in group-rank order", group_name(g));
    }
}

static void test_allgather(Comm *c, CommGroup g) {
    const long count = 1000;
    int n = comm_group_size(c, g), r = comm_group_rank(c, g);
    float *send = xmalloc(count * sizeof(float)), *recv = xmalloc(n * count * sizeof(float));
    double *want = xmalloc(n * count * sizeof(double));
    for (long i = 0; i < count; i++) send[i] = (float)(c->rank * 4096 + i);
    for (int j = 0; j < n; j++)
        for (long i = 0; i < count; i++) want[j * count + i] = member(c, g, j) * 4096 + i;
    comm_stats_reset(c);
    comm_allgather(c, g, send, recv, count);
    int64_t bytes = (int64_t)(n - 1) * count * 4;
    CHECK_ALL(same_floats("allgather", recv, want, n * count), "%s allgather: rank-major blocks", group_name(g));
    CHECK_ALL(c->stats.bytes == bytes && c->stats.calls == (n > 1) && c->stats.seconds >= 0,
              "%s allgather counts (n-1)*count*4 = %lld bytes, %d call", group_name(g), (long long)bytes, n > 1);
    // In place: own block already at recv + r*count, the rest garbage.
    for (long i = 0; i < n * count; i++) recv[i] = -1.0f;
    memcpy(recv + r * count, send, count * sizeof(float));
    comm_allgather(c, g, recv + r * count, recv, count);
    CHECK_ALL(same_floats("allgather in place", recv, want, n * count), "%s allgather in place", group_name(g));
    // Non-blocking: counted at comm_wait, values as the blocking one.
    for (long i = 0; i < n * count; i++) recv[i] = -1.0f;
    comm_stats_reset(c);
    CommPending p;
    comm_iallgather(c, g, send, recv, count, &p);
    volatile double busy = 0;   // "the Q projection"
    for (int i = 0; i < 100000; i++) busy += i * 1e-9;
    int64_t before_wait = c->stats.bytes;
    comm_wait(c, &p);
    comm_wait(c, &p);   // a second wait is a no-op
    CHECK_ALL(same_floats("iallgather", recv, want, n * count) && before_wait == 0 && c->stats.bytes == bytes &&
                  c->stats.calls == (n > 1),
              "%s iallgather + comm_wait: values, %lld bytes counted once at the wait", group_name(g),
              (long long)bytes);
    free(send);
    free(recv);
    free(want);
}

static void test_reduce_scatter(Comm *c, CommGroup g) {
    const long count = 777;
    int n = comm_group_size(c, g), r = comm_group_rank(c, g);
    float *send = xmalloc(n * count * sizeof(float)), *recv = xmalloc(count * sizeof(float));
    double *want = xmalloc(count * sizeof(double));
    // Block j, element i: (rank + 1) * (j * count + i + 1): small integers, exact in float.
    for (int j = 0; j < n; j++)
        for (long i = 0; i < count; i++) send[j * count + i] = (float)((c->rank + 1) * (j * count + i + 1));
    double members = 0;
    for (int j = 0; j < n; j++) members += member(c, g, j) + 1;
    for (long i = 0; i < count; i++) want[i] = members * (r * count + i + 1);
    comm_stats_reset(c);
    comm_reduce_scatter(c, g, send, recv, count);
    int64_t bytes = (int64_t)(n - 1) * count * 4;
    CHECK_ALL(same_floats("reduce_scatter", recv, want, count), "%s reduce_scatter: sum of block group_rank",
              group_name(g));
    CHECK_ALL(c->stats.bytes == bytes && c->stats.calls == (n > 1),
              "%s reduce_scatter counts (n-1)*count*4 = %lld bytes", group_name(g), (long long)bytes);
    free(send);
    free(recv);
    free(want);
}

static void test_allreduce(Comm *c, CommGroup g) {
    int n = comm_group_size(c, g);
    double members = 0;
    for (int j = 0; j < n; j++) members += member(c, g, j) + 1;
    const long count = 1001;
    float *buf = xmalloc(count * sizeof(float));
    double *want = xmalloc(count * sizeof(double)), *dbuf = xmalloc(count * sizeof(double));
    for (long i = 0; i < count; i++) {
        buf[i] = (float)((c->rank + 1) * (i + 1));
        dbuf[i] = (c->rank + 1) * (i + 1) + 0.25;
        want[i] = members * (i + 1);
    }
    comm_stats_reset(c);
    comm_allreduce_sum(c, g, buf, count);
    int64_t bytes = 2 * (int64_t)(n - 1) * count * 4 / n;
    CHECK_ALL(same_floats("allreduce", buf, want, count), "%s allreduce_sum (float)", group_name(g));
    CHECK_ALL(c->stats.bytes == bytes && c->stats.calls == (n > 1),
              "%s allreduce counts 2*(n-1)*count*4/n = %lld bytes", group_name(g), (long long)bytes);
    comm_stats_reset(c);
    comm_allreduce_sum_double(c, g, dbuf, count);
    int ok = c->stats.bytes == 2 * (int64_t)(n - 1) * count * 8 / n;
    for (long i = 0; i < count; i++) ok &= dbuf[i] == want[i] + 0.25 * n;
    CHECK_ALL(ok, "%s allreduce_sum_double: values and 2*(n-1)*count*8/n bytes", group_name(g));
    // In pieces: max_chunk elements per MPI call, one counted call.
    for (long i = 0; i < count; i++) buf[i] = (float)((c->rank + 1) * (i + 1));
    comm_stats_reset(c);
    c->max_chunk = 7;
    comm_allreduce_sum(c, g, buf, count);
    c->max_chunk = 2147483647;
    CHECK_ALL(same_floats("chunked allreduce", buf, want, count) && c->stats.bytes == bytes &&
                  c->stats.calls == (n > 1),
              "%s allreduce in 7-element pieces: same values and bytes", group_name(g));
    free(buf);
    free(want);
    free(dbuf);
}

// Values whose float sum depends on the order: the result must still be bitwise the
// same on every rank of the group, and within float rounding of the exact sum.
static uint64_t lcg(uint64_t *s) { return *s = *s * 6364136223846793005ULL + 1442695040888963407ULL; }
static float rand_value(uint64_t *s) {
    double u = (double)(lcg(s) >> 11) / 9007199254740992.0;   // [0, 1)
    int e = (int)(lcg(s) >> 60) - 8;                           // scales 2^-8 .. 2^7
    return (float)((2 * u - 1) * ldexp(1.0, e));
}

static void test_bitwise(Comm *c, CommGroup g, long count) {
    int n = comm_group_size(c, g);
    float *buf = xmalloc(count * sizeof(float)), *ref = xmalloc(count * sizeof(float));
    double *exact = xcalloc(count, sizeof(double)), *abs_sum = xcalloc(count, sizeof(double));
    for (int j = 0; j < n; j++) {   // every rank can generate every member's values
        uint64_t s = 1000 + member(c, g, j);
        for (long i = 0; i < count; i++) {
            float v = rand_value(&s);
            exact[i] += v;
            abs_sum[i] += fabs(v);
            if (member(c, g, j) == c->rank) buf[i] = v;
        }
    }
    comm_allreduce_sum(c, g, buf, count);
    memcpy(ref, buf, count * sizeof(float));
    MPI_Bcast(ref, (int)count, MPI_FLOAT, 0, comm_group(c, g));
    int same = memcmp(ref, buf, count * sizeof(float)) == 0, near = 1;
    // Any summation order of n floats: |error| <= n * eps32 * sum |v|.
    for (long i = 0; i < count; i++) near &= fabs(buf[i] - exact[i]) <= n * 1.2e-7 * abs_sum[i];
    CHECK_ALL(same && near, "%s allreduce of %ld order-sensitive floats: bitwise equal on all ranks, near exact sum",
              group_name(g), count);
    free(buf);
    free(ref);
    free(exact);
    free(abs_sum);
}

static void test_broadcast(Comm *c, CommGroup g) {
    int n = comm_group_size(c, g), r = comm_group_rank(c, g), root = n - 1;
    const long bytes = 1000;
    unsigned char buf[1000];
    for (long i = 0; i < bytes; i++) buf[i] = r == root ? (unsigned char)(i * 7 + 3) : 0;
    comm_stats_reset(c);
    c->max_chunk = 64;
    comm_broadcast(c, g, buf, bytes, root);
    c->max_chunk = 2147483647;
    int ok = 1;
    for (long i = 0; i < bytes; i++) ok &= buf[i] == (unsigned char)(i * 7 + 3);
    CHECK_ALL(ok, "%s broadcast of %ld bytes from group rank %d (64-byte pieces)", group_name(g), bytes, root);
    // Chain root, root+1, ..., root-1: all but the last forward it; the group sends (n-1)*bytes.
    int64_t want = (r - root + n) % n == n - 1 ? 0 : bytes, total = 0;
    MPI_Allreduce(&c->stats.bytes, &total, 1, MPI_INT64_T, MPI_SUM, comm_group(c, g));
    CHECK_ALL(c->stats.bytes == (n > 1 ? want : 0) && total == (int64_t)(n - 1) * bytes,
              "%s broadcast counts bytes on all but the chain's last rank: %lld over the group", group_name(g),
              (long long)total);
}

static void test_flags(Comm *c) {
    CHECK_ALL(comm_any_flag(c, 0) == 0, "comm_any_flag: 0 when no rank raises it");
    CHECK_ALL(comm_any_flag(c, c->rank == c->world_size - 1 ? 7 : 0) == 1, "comm_any_flag: 1 everywhere when the "
                                                                          "last rank raises it");
    CHECK_ALL(comm_any_flag(c, 1) == 1, "comm_any_flag: 1 when every rank raises it");
    int64_t bytes = c->world_size > 1 ? 2 * (int64_t)(c->world_size - 1) * 4 / c->world_size : 0;
    comm_stats_reset(c);
    comm_any_flag(c, 0);
    CHECK_ALL(c->stats.bytes == bytes && c->stats.calls == (c->world_size > 1),
              "comm_any_flag is counted as a 4-byte all-reduce (%lld bytes)", (long long)bytes);
    comm_stats_reset(c);
    CHECK_ALL(c->stats.bytes == 0 && c->stats.calls == 0 && c->stats.seconds == 0, "comm_stats_reset zeroes");
    // Agreement of 64-bit values (checkpoints compare the tensors' hashes): value 1 differs on the
    // last rank only.
    const uint64_t v[3] = {42, c->rank == c->world_size - 1 ? (1ull << 63) | 5 : 5, UINT64_MAX};
    int same[3] = {-1, -1, -1};
    comm_all_equal_u64(c, v, same, 3);
    CHECK_ALL(same[0] == 1 && same[1] == (c->world_size == 1) && same[2] == 1,
              "comm_all_equal_u64: %d %d %d (want 1 %d 1)", same[0], same[1], same[2], c->world_size == 1);
}

int main(int argc, char **argv) {
    lsst_prog = "test_comm";
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    if (argc < 3 || world_size > 64) {
        if (world_rank == 0) fprintf(stderr, "usage: test_comm SP DP [exit-rank1|mpi-error|bad-root] (<= 64 ranks)\n");
        MPI_Finalize();
        return 2;
    }
    const char *mode = argc > 3 ? argv[3] : "";
    Comm c;
    char err[256];
    if (comm_init(&c, MPI_COMM_WORLD, atoi(argv[1]), atoi(argv[2]), err, sizeof err) != 0) {
        if (world_rank == 0) lsst_error("%s", err);
        comm_free(&c);
        MPI_Finalize();
        return 2;
    }
    if (*mode) {
        float x = 1;
        if (!strcmp(mode, "exit-rank1") && c.rank == 1) exit(3);
        if (!strcmp(mode, "mpi-error") && c.rank == 1) {
            char buf[8];
            mpiCheck(MPI_Bcast(buf, -1, MPI_BYTE, 0, c.world));
        }
        if (!strcmp(mode, "bad-root")) comm_broadcast(&c, GROUP_WORLD, &x, sizeof x, 99);
        comm_allreduce_sum(&c, GROUP_WORLD, &x, 1);   // the others wait here for the failed rank
        sleep(60);                                    // not reached when the job goes down
        return 0;
    }
    test_grid(&c);
    for (CommGroup g = GROUP_WORLD; g <= GROUP_DATA; g++) {
        test_allgather(&c, g);
        test_reduce_scatter(&c, g);
        test_allreduce(&c, g);
        test_bitwise(&c, g, 1000);       // small: recursive doubling in Open MPI's tuned choice
        test_bitwise(&c, g, 1 << 18);    // 1 MiB: ring / Rabenseifner
        test_broadcast(&c, g);
    }
    test_flags(&c);
    comm_free(&c);
    CHECK_ALL(c.world == MPI_COMM_NULL && c.seq == MPI_COMM_NULL && c.data == MPI_COMM_NULL,
              "comm_free releases the three communicators");
    MPI_Finalize();
    return world_rank == 0 ? check_done() : 0;
}
