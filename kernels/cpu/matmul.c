// CPU matmul on CBLAS sgemm, threaded with OpenMP (see cpu.h for why OpenBLAS runs single-threaded).
#include <omp.h>
#include <pthread.h>

#include "cpu.h"
#include "kernels.h"

static void blas_set_single_thread(void) {
#ifdef OPENBLAS_VERSION  // defined by OpenBLAS's cblas.h; other CBLAS libraries keep their own threading
    // Only the pthreads build (1): in the OpenMP build (2) this call would set omp_set_num_threads.
    if (openblas_get_parallel() == 1) openblas_set_num_threads(1);
#endif
}

void cpu_blas_single_threaded(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, blas_set_single_thread);
}

// Blocks of C are whole multiples of this many rows (columns): full GEMM micro-tiles.
enum { GEMM_ALIGN = 16 };

void cpu_sgemm(enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha, const float *A,
               int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    cpu_blas_single_threaded();
    if (M <= 0 || N <= 0) return;
    const int nthreads = omp_get_max_threads();
    const int split_rows = M >= N || N < 2 * GEMM_ALIGN;
    const int extent = split_rows ? M : N;
    int chunk = (extent + nthreads - 1) / nthreads;
    chunk = (chunk + GEMM_ALIGN - 1) / GEMM_ALIGN * GEMM_ALIGN;
    const int nchunks = (extent + chunk - 1) / chunk;
    if (nchunks <= 1) {
        cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#pragma omp parallel for schedule(static, 1) num_threads(nchunks)
    for (int i = 0; i < nchunks; i++) {
        const int lo = i * chunk, n = extent - lo < chunk ? extent - lo : chunk;
        if (split_rows) {
            // Rows lo.. of C and of op(A): A's rows when not transposed, its columns when transposed.
            const float *a = ta == CblasNoTrans ? A + (long)lo * lda : A + lo;
            cblas_sgemm(CblasRowMajor, ta, tb, n, N, K, alpha, a, lda, B, ldb, beta, C + (long)lo * ldc, ldc);
        } else {
            const float *b = tb == CblasNoTrans ? B + lo : B + (long)lo * ldb;
            cblas_sgemm(CblasRowMajor, ta, tb, M, n, K, alpha, A, lda, b, ldb, beta, C + lo, ldc);
        }
    }
}

// out (N,OC) = inp (N,C) @ weight (OC,C)^T + bias (OC)
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC) {
    float beta = 0.0f;
    if (bias) {
#pragma omp parallel for schedule(static)
        for (long n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) out[n * OC + o] = bias[o];
        beta = 1.0f;
    }
    cpu_sgemm(CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, weight, C, beta, out, OC);
}

// dinp (N,C) += dout @ weight; dweight (OC,C) += dout^T @ inp; dbias (OC) += colsum(dout)
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int C, int OC) {
    if (dinp) cpu_sgemm(CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC, weight, C, 1.0f, dinp, C);
    cpu_sgemm(CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
    if (dbias) {
        // Split by output channel, rows summed in order: fixed order for any thread count.
        enum { SLICE = 64 };
#pragma omp parallel for schedule(static)
        for (int o0 = 0; o0 < OC; o0 += SLICE) {
            const int no = OC - o0 < SLICE ? OC - o0 : SLICE;
            float acc[SLICE] = {0};
            for (long n = 0; n < N; n++) {
                const float *d = dout + n * OC + o0;
#pragma omp simd
                for (int o = 0; o < no; o++) acc[o] += d[o];
            }
            for (int o = 0; o < no; o++) dbias[o0 + o] += acc[o];
        }
    }
}
