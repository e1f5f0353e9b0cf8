// The machine's sgemm ceiling, the denominator of tests/bench/train-bench.sh's model FLOP/s
// fraction: OpenBLAS's own sgemm with its own threads (default 2) on large square products and
// on the GEMMs of the benchmarked models (all tokens of a step as rows), best of several runs
// after a warm-up call. FLOPs of one product: 2*M*N*K.
//   sgemm-ceiling [--threads N] [--reps R] [--quick]
// Prints one line per product, then "ceiling_gflops X" (the best figure of all), for scripts.
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static float *frand(long n) {
    float *x = malloc(sizeof(float) * (size_t)n);
    if (!x) { fprintf(stderr, "sgemm-ceiling: out of memory\n"); exit(1); }
    unsigned s = 12345;
    for (long i = 0; i < n; i++) s = s * 1103515245u + 12345u, x[i] = (float)((s >> 9) / 4194304.0 - 1.0);
    return x;
}

// C (M,N) = A (M,K) @ B (N,K)^T, the layout of a linear layer's forward (weights are (out, in)).
static double bench(int M, int N, int K, int reps, const char *what) {
    float *a = frand((long)M * K), *b = frand((long)N * K), *c = frand((long)M * N);
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {  // r = 0 is the warm-up
        double t = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, b, K, 0.0f, c, N);
        t = now() - t;
        if (r > 0 && t < best) best = t;
    }
    free(a), free(b), free(c);
    double gflops = 2.0 * M * N * K / best / 1e9;
    printf("sgemm %-28s M=%-5d N=%-5d K=%-5d best of %d %9.2f ms %7.1f GFLOP/s\n", what, M, N, K, reps, 1e3 * best,
           gflops);
    fflush(stdout);
    return gflops;
}

int main(int argc, char **argv) {
    int threads = 2, reps = 5, quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else {
            fprintf(stderr, "usage: sgemm-ceiling [--threads N] [--reps R] [--quick]\n");
            return 2;
        }
    }
    if (threads < 1 || reps < 1) { fprintf(stderr, "sgemm-ceiling: --threads and --reps must be >= 1\n"); return 2; }
    openblas_set_num_threads(threads);  // OpenMP build: sets the OpenMP thread count too
    omp_set_num_threads(threads);
    const char *core = getenv("OPENBLAS_CORETYPE");
    printf("# sgemm-ceiling: OpenBLAS %d threads, core %s, OPENBLAS_CORETYPE=%s, %s\n", openblas_get_num_threads(),
           openblas_get_corename(), core ? core : "(unset)", openblas_get_config());
    double best = 0;
#define TAKE(x) do { double g_ = (x); best = g_ > best ? g_ : best; } while (0)
    TAKE(bench(2048, 2048, 2048, reps, "square 2048"));
    if (!quick) TAKE(bench(4096, 4096, 4096, reps < 3 ? reps : 3, "square 4096"));
    // dim 512, 4096 tokens a step (batch 4 x seq 1024): qkv, mlp up, mlp down, attention out
    TAKE(bench(4096, 1536, 512, reps, "d512 qkv (4096 tokens)"));
    TAKE(bench(4096, 2048, 512, reps, "d512 mlp up"));
    TAKE(bench(4096, 512, 2048, reps, "d512 mlp down"));
    TAKE(bench(4096, 512, 512, reps, "d512 attn out"));
    // dim 256, 1024 tokens a step (batch 4 x seq 256)
    TAKE(bench(1024, 768, 256, reps, "d256 qkv (1024 tokens)"));
    TAKE(bench(1024, 1024, 256, reps, "d256 mlp up"));
    TAKE(bench(1024, 256, 1024, reps, "d256 mlp down"));
    printf("ceiling_gflops %.1f\n", best);
    return 0;
}
