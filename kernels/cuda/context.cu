// Module state of the CUDA kernels: cuBLAS / cuBLASLt handles, their workspace, and the scratch
// of the two-pass reductions. One per process (one GPU per rank).
#include <string.h>

#include <algorithm>

#include "cuda_common.h"

static CudaKernels g_kernels;

// 32 MiB: what cuBLASLt's heuristics want for large GEMMs on Hopper (also fine on Ampere).
static const size_t WORKSPACE_BYTES = (size_t)32 << 20;
static const size_t DEFAULT_SCRATCH_BYTES = (size_t)16 << 20;

void cuda_check_fail(const char *what, const char *err, const char *file, int line) {
    fprintf(stderr, "lsst: error: %s:%d: %s: %s\n", file, line, what, err);
    exit(1);
}

const char *cublas_status_string(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH (bf16 GEMMs need sm_80+)";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
    }
}

void cuda_kernels_init(size_t scratch_bytes) {
    CudaKernels *k = &g_kernels;
    if (k->initialized) return;
    cudaCheck(cudaGetDevice(&k->device));
    // cudaDeviceGetAttribute rather than cudaDeviceProp: the struct lost fields in CUDA 13.
    cudaCheck(cudaDeviceGetAttribute(&k->sm_major, cudaDevAttrComputeCapabilityMajor, k->device));
    cudaCheck(cudaDeviceGetAttribute(&k->sm_minor, cudaDevAttrComputeCapabilityMinor, k->device));
    cudaCheck(cudaDeviceGetAttribute(&k->num_sms, cudaDevAttrMultiProcessorCount, k->device));
    cudaCheck(cudaDeviceGetAttribute(&k->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, k->device));
    cublasCheck(cublasCreate(&k->cublas));
    cublasCheck(cublasLtCreate(&k->cublaslt));
    // fp32 GEMMs stay fp32: no TF32 behind the caller's back.
    cublasCheck(cublasSetMathMode(k->cublas, CUBLAS_DEFAULT_MATH));
    k->workspace_bytes = WORKSPACE_BYTES;
    cudaCheck(cudaMalloc(&k->workspace, k->workspace_bytes));
    // One fixed workspace for cuBLAS too: no allocation inside GEMM calls, and the same
    // algorithms (hence bits) every call.
    cublasCheck(cublasSetWorkspace(k->cublas, k->workspace, k->workspace_bytes));
    k->scratch_bytes = scratch_bytes ? scratch_bytes : DEFAULT_SCRATCH_BYTES;
    cudaCheck(cudaMalloc(&k->scratch, k->scratch_bytes));
    cudaCheck(cudaMemset(k->scratch, 0, k->scratch_bytes));   // the column reductions' tickets start at 0
    k->initialized = 1;
    cuda_attention_apply_env();
    cuda_matmul_apply_env();
    cuda_layers_apply_env();
}

void cuda_kernels_shutdown(void) {
    CudaKernels *k = &g_kernels;
    if (!k->initialized) return;
    cuda_matmul_cache_clear();
    cudaCheck(cudaFree(k->scratch));
    cudaCheck(cudaFree(k->workspace));
    cublasCheck(cublasLtDestroy(k->cublaslt));
    cublasCheck(cublasDestroy(k->cublas));
    *k = CudaKernels{};
}

CudaKernels *cuda_kernels(void) {
    if (!g_kernels.initialized) cuda_kernels_init(0);
    return &g_kernels;
}

size_t cuda_kernels_device_bytes(void) {
    return g_kernels.initialized ? g_kernels.workspace_bytes + g_kernels.scratch_bytes : 0;
}

size_t cuda_kernels_plan_bytes(size_t scratch_bytes) {
    return WORKSPACE_BYTES + (scratch_bytes ? scratch_bytes : DEFAULT_SCRATCH_BYTES);
}

// Two fp32 partial arrays (e.g. dweight and dbias) of REDUCE_CHUNKS rows each (LN_CHUNKS for the
// fused LayerNorm backward), and an int ticket per 32 columns (layers.cu: reduction_scratch).
size_t cuda_kernels_reduction_bytes(int cols) {
    const size_t chunks = std::max<size_t>(LN_CHUNKS, REDUCE_CHUNKS);
    return 2 * chunks * (size_t)cols * sizeof(float) + (size_t)(cols + 31) / 32 * sizeof(int);
}

// The environment's kernel switches (kernels/cuda/README.md) and the values each takes; a
// switch's value is known by its index here (cuda_env_switch).
struct EnvSwitch {
    const char *name, *values[4];
};
static const EnvSwitch env_switches[] = {
    {"LSST_GELU", {"epilogue", "kernels"}},    {"LSST_BGRAD", {"epilogue", "kernels"}},
    {"LSST_LN", {"fused", "split"}},           {"LSST_RESIDUAL", {"epilogue", "kernel"}},
    {"LSST_QKV", {"fused", "split"}},          {"LSST_ATTN_WGMMA", {"1", "0"}},
    {"LSST_ATTN_BWD", {"split", "fused", "atomic", "fixed"}}};

// The index of the variable's value among sw's values; -1 unset or empty, -2 (and one line in
// err) anything else.
static int switch_value(const EnvSwitch &sw, char *err, size_t n) {
    const char *e = getenv(sw.name);
    if (!e || !*e) return -1;
    int count = 0;
    while (count < 4 && sw.values[count]) {
        if (!strcmp(e, sw.values[count])) return count;
        count++;
    }
    int len = snprintf(err, n, "%s=%s: expected ", sw.name, e);
    for (int i = 0; i < count && len >= 0 && (size_t)len < n; i++)
        len += snprintf(err + len, n - len, "%s%s", sw.values[i], i + 2 < count ? ", " : i + 1 < count ? " or " : "");
    return -2;
}

int cuda_kernels_env_check(char *err, size_t n) {
    for (const EnvSwitch &sw : env_switches)
        if (switch_value(sw, err, n) == -2) return -1;
    return cuda_attention_env_check(err, n);
}

int cuda_env_switch(const char *name) {
    for (const EnvSwitch &sw : env_switches) {
        if (strcmp(sw.name, name)) continue;
        char err[256];
        const int v = switch_value(sw, err, sizeof err);
        cudaRequire(v != -2, "%s", err);
        return v;
    }
    cudaRequire(false, "cuda_env_switch: %s is not a kernel switch", name);
    return -1;
}

int cuda_kernels_env_switch(const char *name) { return cuda_env_switch(name); }

void cuda_env_flag(const char *name, bool *flag) {
    const int v = cuda_env_switch(name);
    if (v >= 0) *flag = v == 0;
}
