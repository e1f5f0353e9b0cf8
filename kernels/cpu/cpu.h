// Private to kernels/cpu: how the CPU kernels use BLAS.
//
// The kernels thread with OpenMP and call BLAS from inside their parallel regions (attention
// tiles) or split large GEMMs over OpenMP threads themselves (cpu_sgemm), so BLAS must not start
// threads of its own. OpenBLAS built with OpenMP (what the Makefile links when installed) already
// runs single-threaded inside a parallel region. OpenBLAS built with pthreads would not, and its
// spinning pool fights libgomp's for the cores (whole scheduler ticks per kernel switch on a
// 2-core machine), so for that build the first kernel call sets OpenBLAS to one thread.
#pragma once
#include <cblas.h>

// Makes BLAS calls run on the calling thread (once per process; call outside parallel regions).
void cpu_blas_single_threaded(void);

// C (M,N) = alpha op(A) op(B) + beta C, row-major, split across the OpenMP threads by blocks of
// rows of C (or columns when C is short and wide). Each element is computed by exactly one thread
// with the full contraction, so results depend only on the shapes and the thread count.
void cpu_sgemm(enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha, const float *A,
               int lda, const float *B, int ldb, float beta, float *C, int ldc);

// The Makefile builds for baseline x86-64 (SSE2). The elementwise loops between GEMMs (softmax
// with exp2, GELU) are worth wider vectors: gcc compiles functions marked CPU_VECTOR_CLONES once
// more for AVX2 and picks the version at load time (glibc ifunc). Elementwise results are the
// same in both versions (no FMA contraction in ISO C mode); vectorized reductions may differ in
// the last bit between machines, never between runs.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CPU_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CPU_VECTOR_CLONES
#endif
