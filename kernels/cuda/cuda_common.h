// Private to kernels/cuda: error checks, the module state, and small device helpers shared by
// the .cu files. CUDA C++ only (nvcc).
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels_cuda.h"

// ---- checked calls --------------------------------------------------------------------------
// Every failure prints the call, file:line and the library's message, then exits (1): a
// kernel error leaves the device in an unknown state, there is nothing to recover.
void cuda_check_fail(const char *what, const char *err, const char *file, int line);
const char *cublas_status_string(cublasStatus_t s);
#define cudaCheck(call)                                                                   \
    do {                                                                                  \
        cudaError_t err_ = (call);                                                        \
        if (err_ != cudaSuccess) cuda_check_fail(#call, cudaGetErrorString(err_), __FILE__, __LINE__); \
    } while (0)
#define cublasCheck(call)                                                                 \
    do {                                                                                  \
        cublasStatus_t st_ = (call);                                                      \
        if (st_ != CUBLAS_STATUS_SUCCESS) cuda_check_fail(#call, cublas_status_string(st_), __FILE__, __LINE__); \
    } while (0)
// After every kernel launch: launch-configuration errors surface here (execution errors at
// the next synchronizing call).
#define cudaCheckLaunch() cudaCheck(cudaGetLastError())
// Argument checks of the host wrappers (shapes the kernels cannot handle).
#define cudaRequire(cond, ...)                                                            \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "lsst: error: %s:%d: ", __FILE__, __LINE__);                  \
            fprintf(stderr, __VA_ARGS__);                                                 \
            fputc('\n', stderr);                                                          \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

// ---- module state (context.cu) ----------------------------------------------------------------
typedef struct {
    int initialized;
    int device, sm_major, sm_minor, num_sms;
    int smem_optin;   // the most dynamic shared memory a block can opt in to (bytes)
    cublasHandle_t cublas;
    cublasLtHandle_t cublaslt;
    void *workspace;  // cuBLAS(Lt) workspace
    size_t workspace_bytes;
    void *scratch;  // reductions: partial sums (its start), column tickets (its end)
    size_t scratch_bytes;
} CudaKernels;
// The module state, initialized on first use if the caller did not (cuda_kernels_init(0)).
CudaKernels *cuda_kernels(void);
// Frees the cuBLASLt plans cached by matmul.cu (called by cuda_kernels_shutdown).
void cuda_matmul_cache_clear(void);
// attention.cu: the environment's choice of attention kernels (LSST_ATTN_BWD), at init.
void cuda_attention_apply_env(void);
// matmul.cu: the environment's choice of where the MLP's GELU and the bias gradients run
// (LSST_GELU, LSST_BGRAD), at init.
void cuda_matmul_apply_env(void);
// layers.cu: the environment's choice of LayerNorm kernels (LSST_LN), at init.
void cuda_layers_apply_env(void);
// The environment's kernel switches (context.cu's table): the index of switch `name`'s value
// among the values it takes, -1 when unset or empty; anything else refused (cudaRequire, with
// the message cuda_kernels_env_check gives). cuda_env_flag: *flag = (the first value), left
// alone when unset.
int cuda_env_switch(const char *name);
void cuda_env_flag(const char *name, bool *flag);
// layers.cu: d = gelu'(inp) d in place (bf16), for matmul.cu's GELU backward without the epilogue.
void cuda_gelu_backward_inplace_bf16(bf16 *d, const bf16 *inp, long n, cudaStream_t stream);


static inline unsigned ceil_div_u(long a, long b) { return (unsigned)((a + b - 1) / b); }
// Whether every pointer is 16-byte aligned (the vectorized and tensor-core kernels' condition).
template <typename... P> static inline bool aligned16(const P *...p) {
    return ((reinterpret_cast<uintptr_t>(p) | ...) & 15) == 0;
}
// Grid size for grid-stride elementwise loops: enough blocks to fill any current GPU.
static inline unsigned elementwise_grid(long n, int block) {
    long g = (n + block - 1) / block;
    return (unsigned)(g < 1 ? 1 : g > 65535L * 8 ? 65535L * 8 : g);
}

#include "device_common.h"
