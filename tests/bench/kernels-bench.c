// Kernel bench: the CPU kernels at the trainer benchmark's shapes (dim 512, 8 heads, hs 64,
// seq 1024), against the machine's sgemm ceiling (best OpenBLAS sgemm GFLOP/s of this run).
//   tests/bench/kernels-bench.sh [--quick]
// FLOP conventions: sgemm 2*M*N*K. Attention counts the visible (query, key) pairs P of the
// causal mask: forward 4*hs*P per head (q k^T and p v), backward 8*hs*P (what a model FLOP/s
// figure counts; the kernel also recomputes q k^T, 2*hs*P more, not counted).
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static float *frand(long n) {
    float *x = malloc(sizeof(float) * (n > 0 ? n : 1));
    if (!x) { fprintf(stderr, "kernels-bench: out of memory\n"); exit(1); }
    unsigned s = 12345;
    for (long i = 0; i < n; i++) s = s * 1103515245u + 12345u, x[i] = ((s >> 9) / 4194304.0f - 1.0f);
    return x;
}

static int quick;
static double best_sgemm;  // GFLOP/s: the best GEMM figure of this run, the "ceiling"

// Best of `reps` timings (seconds) of fn(ctx), after one warm-up call.
typedef void (*BenchFn)(void *ctx);
static double best_time(BenchFn fn, void *ctx) {
    int reps = quick ? 3 : 10;
    fn(ctx);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = now();
        fn(ctx);
        t = now() - t;
        best = t < best ? t : best;
    }
    return best;
}

// ---- sgemm ceiling ----------------------------------------------------------------
typedef struct { int M, N, K; float *a, *b, *c; } Gemm;
static void run_gemm(void *p) {
    Gemm *g = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->M, g->N, g->K, 1.0f, g->a, g->K, g->b, g->K, 0.0f, g->c,
                g->N);
}
static double bench_sgemm(int M, int N, int K, const char *what) {
    Gemm g = {M, N, K, frand((long)M * K), frand((long)N * K), frand((long)M * N)};
    double t = best_time(run_gemm, &g);
    double gf = 2.0 * M * N * K / t / 1e9;
    printf("sgemm %-34s M=%-5d N=%-5d K=%-5d %8.2f ms %8.1f GFLOP/s\n", what, M, N, K, 1e3 * t, gf);
    free(g.a), free(g.b), free(g.c);
    best_sgemm = fmax(best_sgemm, gf);
    return gf;
}

// matmul_forward / matmul_backward at a model shape (OpenMP-split single-threaded sgemm).
typedef struct { int N, C, OC; float *x, *w, *b, *y, *dx, *dw, *db; } Mm;
static void run_mm_fwd(void *p) { Mm *m = p; matmul_forward(m->y, m->x, m->w, m->b, m->N, m->C, m->OC); }
static void run_mm_bwd(void *p) { Mm *m = p; matmul_backward(m->dx, m->dw, m->db, m->y, m->x, m->w, m->N, m->C, m->OC); }
// Returns forward GFLOP/s.
static double bench_matmul(int N, int C, int OC, const char *what) {
    Mm m = {N, C, OC, frand((long)N * C), frand((long)OC * C), frand(OC), frand((long)N * OC), frand((long)N * C),
            frand((long)OC * C), frand(OC)};
    double tf = best_time(run_mm_fwd, &m), tb = best_time(run_mm_bwd, &m);
    double gf = 2.0 * N * C * OC / tf / 1e9, gb = 4.0 * N * C * OC / tb / 1e9;
    printf("matmul %-33s N=%-5d C=%-5d OC=%-4d fwd %6.1f GFLOP/s | bwd %6.1f GFLOP/s\n", what, N, C, OC, gf, gb);
    free(m.x), free(m.w), free(m.b), free(m.y), free(m.dx), free(m.dw), free(m.db);
    best_sgemm = fmax(best_sgemm, fmax(gf, gb));
    return gf;
}

// ---- attention ----------------------------------------------------------------------
typedef struct {
    int B, Tq, Tk, NH, hs;
    int *pos;
    float *q, *k, *v, *out, *lse, *dout, *dq, *dk, *dv;
} Attn;
static void run_attn_fwd(void *p) {
    Attn *a = p;
    int C = a->NH * a->hs;
    attention_forward(a->out, a->lse, a->q, a->k, a->v, a->pos, a->B, a->Tq, a->Tk, a->NH, a->hs, C, C);
}
static void run_attn_bwd(void *p) {
    Attn *a = p;
    int C = a->NH * a->hs;
    attention_backward(a->dq, a->dk, a->dv, a->dout, a->out, a->lse, a->q, a->k, a->v, a->pos, a->B, a->Tq, a->Tk,
                       a->NH, a->hs, C, C);
}
// Returns fwd+bwd GFLOP/s.
static double bench_attention(const char *what, int B, int Tq, int Tk, int NH, int hs, const int *pos) {
    int C = NH * hs;
    Attn a = {B, Tq, Tk, NH, hs, malloc(sizeof(int) * Tq), frand((long)B * Tq * C), frand((long)B * Tk * C),
              frand((long)B * Tk * C), frand((long)B * Tq * C), frand((long)B * NH * Tq), frand((long)B * Tq * C),
              frand((long)B * Tq * C), frand((long)B * Tk * C), frand((long)B * Tk * C)};
    memcpy(a.pos, pos, sizeof(int) * Tq);
    double pairs = 0;
    for (int t = 0; t < Tq; t++) pairs += pos[t] + 1 < Tk ? pos[t] + 1 : Tk;
    double fwd_flop = 4.0 * hs * pairs * B * NH;
    double tf = best_time(run_attn_fwd, &a);
    double tb = best_time(run_attn_bwd, &a);
    double gff = fwd_flop / tf / 1e9, gfb = 2 * fwd_flop / tb / 1e9, gft = 3 * fwd_flop / (tf + tb) / 1e9;
    printf("attention %-34s fwd %6.2f ms %6.1f GFLOP/s | bwd %6.2f ms %6.1f GFLOP/s | fwd+bwd %6.1f GFLOP/s\n", what,
           1e3 * tf, gff, 1e3 * tb, gfb, gft);
    free(a.pos), free(a.q), free(a.k), free(a.v), free(a.out), free(a.lse), free(a.dout), free(a.dq), free(a.dk),
        free(a.dv);
    return gft;
}

// ---- token-wise kernels ----------------------------------------------------------------
typedef struct { int N, C; float *x, *y, *w, *b, *mean, *rstd, *dx, *dw, *db; } Rows;
static void run_ln_fwd(void *p) { Rows *r = p; layernorm_forward(r->y, r->mean, r->rstd, r->x, r->w, r->b, r->N, r->C); }
static void run_ln_bwd(void *p) {
    Rows *r = p;
    layernorm_backward(r->dx, r->dw, r->db, r->y, r->x, r->w, r->mean, r->rstd, r->N, r->C);
}
static void run_gelu_fwd(void *p) { Rows *r = p; gelu_forward(r->y, r->x, (long)r->N * r->C); }
static void run_gelu_bwd(void *p) { Rows *r = p; gelu_backward(r->dx, r->x, r->y, (long)r->N * r->C); }
static void bench_rows(const char *what, BenchFn fn, Rows *r, double bytes) {
    double t = best_time(fn, r);
    printf("%-44s N=%-5d C=%-5d %8.3f ms %8.1f GB/s\n", what, r->N, r->C, 1e3 * t, bytes / t / 1e9);
}

int main(int argc, char **argv) {
    quick = argc > 1 && !strcmp(argv[1], "--quick");
    const char *core = getenv("OPENBLAS_CORETYPE");
    printf("# kernels-bench: %d OpenMP threads, OpenBLAS %d threads (%s), OPENBLAS_CORETYPE=%s\n",
           omp_get_max_threads(), openblas_get_num_threads(), openblas_get_config(), core ? core : "(unset)");

    // The ceiling: OpenBLAS's own threads on large products (measured before any kernel runs: the
    // kernels keep BLAS on the calling thread and split GEMMs over OpenMP), then matmul_forward /
    // matmul_backward at the model's projection shapes; the best of all of them is the ceiling.
    bench_sgemm(2048, 2048, 2048, "square 2048, OpenBLAS threads");
    bench_sgemm(1024, 1536, 512, "qkv shape, OpenBLAS threads");
    bench_sgemm(1024, 1024, 1024, "square 1024, OpenBLAS threads");
    const double first = bench_matmul(1024, 512, 1536, "qkv projection");
    bench_matmul(1024, 512, 2048, "mlp up");
    bench_matmul(1024, 2048, 512, "mlp down");
    bench_matmul(1024, 512, 512, "attention output");

    const int T = 1024, NH = 8, hs = 64;
    int *pos = malloc(sizeof(int) * T);
    const char *names[5] = {"causal B=1 T=1024 NH=8 hs=64", "LSS last of 4: Tq=256@768 Tk=1024",
                            "zigzag Tq=256 [0,128)+[896,1024)", "causal B=4 T=1024 NH=8 hs=64",
                            "causal B=1 T=1024 NH=2 hs=256"};
    double attn[5] = {0};
    for (int t = 0; t < T; t++) pos[t] = t;
    attn[0] = bench_attention(names[0], 1, T, T, NH, hs, pos);
    // LSS, 4 sequence ranks: the last segment (queries 768..1023) against all 1024 keys.
    for (int t = 0; t < T / 4; t++) pos[t] = 3 * T / 4 + t;
    attn[1] = bench_attention(names[1], 1, T / 4, T, NH, hs, pos);
    // Zigzag, 4 ranks: chunk 0 and chunk 7 of eight 128-token chunks.
    for (int t = 0; t < T / 8; t++) pos[t] = t, pos[T / 8 + t] = 7 * T / 8 + t;
    attn[2] = bench_attention(names[2], 1, T / 4, T, NH, hs, pos);
    if (!quick) {
        for (int t = 0; t < T; t++) pos[t] = t;
        attn[3] = bench_attention(names[3], 4, T, T, NH, hs, pos);
        attn[4] = bench_attention(names[4], 1, T, T, 2, 256, pos);
    }
    free(pos);

    const int N = 1024, C = 512;
    Rows r = {N, C, frand((long)N * 4 * C), frand((long)N * 4 * C), frand(C), frand(C), frand(N), frand(N),
              frand((long)N * 4 * C), frand(C), frand(C)};
    bench_rows("layernorm_forward", run_ln_fwd, &r, 2.0 * N * C * 4);
    bench_rows("layernorm_backward", run_ln_bwd, &r, 4.0 * N * C * 4);
    r.C = 4 * C;
    bench_rows("gelu_forward", run_gelu_fwd, &r, 2.0 * N * 4 * C * 4);
    bench_rows("gelu_backward", run_gelu_bwd, &r, 4.0 * N * 4 * C * 4);
    free(r.x), free(r.y), free(r.w), free(r.b), free(r.mean), free(r.rstd), free(r.dx), free(r.dw), free(r.db);
    // Other processes on a shared machine make timings noisy: the first matmul again as a check.
    const double last = bench_matmul(1024, 512, 1536, "qkv projection (noise check)");
    if (fabs(last - first) > 0.15 * first)
        printf("# WARNING: the same matmul ran at %.0f and %.0f GFLOP/s: the machine is busy, figures are unreliable\n",
               first, last);
    printf("# sgemm ceiling (best GEMM figure above): %.1f GFLOP/s\n", best_sgemm);
    for (int i = 0; i < 5; i++)
        if (attn[i] > 0)
            printf("# attention %-34s fwd+bwd %6.1f GFLOP/s = %3.0f%% of the ceiling\n", names[i], attn[i],
                   100 * attn[i] / best_sgemm);
    return 0;
}
