// Matmul on cuBLAS(Lt). Row-major (N, C) tensors are column-major (C, N) to cuBLAS, so every
// product below is written on the transposes:
//   forward   out^T (OC,N)  = W (OC,C) . inp^T (C,N)       W row-major = (C,OC) col-major: op T
//   dinp      dinp^T (C,N) += W^T (C,OC) . dout^T (OC,N)   op N, op N
//   dweight   dW^T (C,OC)  += inp^T (C,N) . dout (N,OC)    op N, op T
// bf16: cuBLASLt with fp32 compute (CUBLAS_COMPUTE_32F), the bias in the epilogue, beta = 1 for
// the accumulating products; when cuBLASLt offers no algorithm for a case (alignment, types) the
// same product goes through cublasGemmEx (bias broadcast first, then beta = 1). fp32: GemmEx
// with fp32 compute (no TF32).
// The MLP's GELU: forward and backward inside the product's cuBLASLt epilogue (default:
// GELU_AUX_BIAS writes gelu(x) and keeps its input x; DGELU multiplies the dinp product by
// gelu'(x)), sparing a full pass over the (N, 4C) activations each way; or as the GELU kernels
// after the product (LSST_GELU=kernels). H100, e2e shapes (RESULTS.md): the epilogue pair takes
// 0.090 + 0.169 ms against 0.108 + 0.189 ms for product + kernel.
// The bias gradients (bf16): by default the dweight product computes them in its cuBLASLt
// epilogue (BGRADB: the sum of op(B) = dout over the contraction, the tokens), sparing a pass
// over dout; the epilogue writes, so it writes into the reduction scratch and a small add
// accumulates (the += contract). LSST_BGRAD=kernels: a column-sum kernel over dout after the
// products (cuda_colsum_accumulate), also where cuBLASLt offers no algorithm.
// The residual stream's adds after the attention and MLP output products: by default cuBLASLt
// adds the residual as its C (beta 1) before the product's one rounding; LSST_RESIDUAL=kernel
// writes the product into a temporary, then runs the residual kernel (two roundings to bf16, a
// pass that reads two tensors and writes one). H200, e2e shapes (RESULTS.md, 2026-11-27): the
// residual epilogue is faster than product + kernel (0.027-0.030 against 0.037-0.040 ms for the
// attention projection); the bias-gradient one was faster in one call (fc backward 0.148 against
// 0.161 ms) and slower in the next (0.146 against 0.139); with the fused LayerNorm and the one
// Q, K, V product a whole step is 0.2 ms faster.
#include <string.h>

#include "cuda_common.h"

typedef __nv_bfloat16 bf16_t;

template <typename T> void cuda_colsum_accumulate(float *dbias, const T *dout, int N, int OC, cudaStream_t stream);
float *cuda_reduction_scratch_floats(int n);

// The epilogue of a cuBLASLt product (part of a plan's key).
typedef enum { EPI_NONE, EPI_BIAS, EPI_GELU_AUX_BIAS, EPI_DGELU, EPI_BGRADB } Epi;

static bool gelu_epilogue = true;   // LSST_GELU=kernels: false
static long gelu_fallbacks;  // epilogue wanted, cuBLASLt had no algorithm: the kernels ran
static bool bgrad_epilogue = true;   // LSST_BGRAD=kernels: false
static long bgrad_fallbacks;   // likewise for the bias-gradient epilogue
static bool residual_epilogue = true;   // LSST_RESIDUAL=kernel: false
static long residual_fallbacks;   // likewise for the residual epilogue

// D (m, n) col-major, ldd: D[j*ldd + i] = bias[i] (the bias of output channel i, every row j).
template <typename T> __global__ void bias_broadcast_kernel(T *D, const T *bias, int m, int n, int ldd) {
    const long total = (long)m * n;
    for (long idx = blockIdx.x * (long)blockDim.x + threadIdx.x; idx < total; idx += (long)gridDim.x * blockDim.x) {
        const long j = idx / m;
        const int i = (int)(idx % m);
        D[j * ldd + i] = bias[i];
    }
}

template <typename T> static void bias_broadcast(T *D, const T *bias, int m, int n, int ldd, cudaStream_t stream) {
    bias_broadcast_kernel<T><<<elementwise_grid((long)m * n, 256), 256, 0, stream>>>(D, bias, m, n, ldd);
    cudaCheckLaunch();
}

// ---- cuBLASLt with a small cache of descriptors and chosen algorithms ------------------------

// Largest power of two (<= 256) dividing the address: cuBLASLt assumes 256 unless told.
static uint32_t pointer_alignment(const void *p) {
    const uintptr_t a = (uintptr_t)p;
    uint32_t align = 256;
    while (align > 1 && a % align) align >>= 1;
    return align;
}

typedef struct {
    // key
    cublasOperation_t ta, tb;
    int m, n, k, lda, ldb, ldd;
    cudaDataType ab_type, d_type;
    Epi epi;
    uint32_t align[4];
    // value
    int ok;  // 0: cuBLASLt has no algorithm for this case (use GemmEx)
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a_layout, b_layout, d_layout;
    cublasLtMatmulAlgo_t algo;
} LtPlan;

enum { LT_CACHE_SIZE = 128 };
static LtPlan lt_cache[LT_CACHE_SIZE];
static int lt_cache_used;

static int plan_matches(const LtPlan *p, const LtPlan *key) {
    return p->ta == key->ta && p->tb == key->tb && p->m == key->m && p->n == key->n && p->k == key->k &&
           p->lda == key->lda && p->ldb == key->ldb && p->ldd == key->ldd && p->ab_type == key->ab_type &&
           p->d_type == key->d_type && p->epi == key->epi && p->align[0] == key->align[0] &&
           p->align[1] == key->align[1] && p->align[2] == key->align[2] && p->align[3] == key->align[3];
}

static void plan_create(LtPlan *p, CudaKernels *kern) {
    cublasCheck(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const int32_t ta = p->ta, tb = p->tb;
    cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    if (p->epi != EPI_NONE) {
        const cublasLtEpilogue_t epi = p->epi == EPI_BIAS            ? CUBLASLT_EPILOGUE_BIAS
                                       : p->epi == EPI_GELU_AUX_BIAS ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS
                                       : p->epi == EPI_DGELU         ? CUBLASLT_EPILOGUE_DGELU
                                                                     : CUBLASLT_EPILOGUE_BGRADB;
        cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    }
    if (p->epi == EPI_BGRADB) {   // the bias gradient in fp32 (what D is here; said, not assumed)
        const int32_t bias_type = CUDA_R_32F;
        cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                                   sizeof bias_type));
    }
    if (p->epi == EPI_GELU_AUX_BIAS || p->epi == EPI_DGELU) {  // the GELU's input: laid out like D
        const int64_t aux_ld = p->ldd;
        cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld,
                                                   sizeof aux_ld));
    }
    // Stored shapes (rows x cols, col-major) of A and B before op().
    const bool an = p->ta == CUBLAS_OP_N, bn = p->tb == CUBLAS_OP_N;
    cublasCheck(cublasLtMatrixLayoutCreate(&p->a_layout, p->ab_type, an ? p->m : p->k, an ? p->k : p->m, p->lda));
    cublasCheck(cublasLtMatrixLayoutCreate(&p->b_layout, p->ab_type, bn ? p->k : p->n, bn ? p->n : p->k, p->ldb));
    cublasCheck(cublasLtMatrixLayoutCreate(&p->d_layout, p->d_type, p->m, p->n, p->ldd));

    cublasLtMatmulPreference_t pref;
    cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = kern->workspace_bytes;
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4; i++)
        cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, align_attr[i], &p->align[i], sizeof p->align[i]));
    cublasLtMatmulHeuristicResult_t result;
    int count = 0;
    // NOT_SUPPORTED (no heuristic for this configuration) is an answer, not an error.
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(kern->cublaslt, p->desc, p->a_layout, p->b_layout,
                                                             p->d_layout, p->d_layout, pref, 1, &result, &count);
    cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
    p->ok = st == CUBLAS_STATUS_SUCCESS && count > 0 && result.state == CUBLAS_STATUS_SUCCESS;
    if (p->ok) p->algo = result.algo;
}

static void plan_destroy(LtPlan *p) {
    cublasCheck(cublasLtMatrixLayoutDestroy(p->d_layout));
    cublasCheck(cublasLtMatrixLayoutDestroy(p->b_layout));
    cublasCheck(cublasLtMatrixLayoutDestroy(p->a_layout));
    cublasCheck(cublasLtMatmulDescDestroy(p->desc));
}

void cuda_matmul_cache_clear(void) {
    for (int i = 0; i < lt_cache_used; i++) plan_destroy(&lt_cache[i]);
    lt_cache_used = 0;
}

// D (m,n; ldd) = epilogue(op(A) op(B) + beta Cin) through cuBLASLt, fp32 compute (Cin NULL: D, the
// accumulating products; else a tensor laid out like D); false (nothing done) when cuBLASLt has
// no algorithm for the case. A, B of ab_type, D of d_type; the bias (m,
// EPI_BIAS / EPI_GELU_AUX_BIAS) of d_type (cuBLASLt's rule); aux (m,n; ldd) of d_type is the
// GELU's input, written by EPI_GELU_AUX_BIAS and read by EPI_DGELU. EPI_BGRADB: `bias` (n, fp32)
// is written with the column sums of op(B) (k x n).
static bool gemm_lt(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *A, int lda,
                    const void *B, int ldb, void *D, int ldd, cudaDataType ab_type, cudaDataType d_type, float beta,
                    Epi epi, const void *bias, void *aux, const void *Cin, cudaStream_t stream) {
    if (!Cin) Cin = D;
    // The epilogue's vectors want 16-byte alignment (and aux rows a multiple of 8 elements).
    if (ab_type != CUDA_R_16BF || (bias && pointer_alignment(bias) < 16)) return false;
    if (aux && (pointer_alignment(aux) < 16 || ldd % 8)) return false;
    CudaKernels *kern = cuda_kernels();
    LtPlan key = {};
    key.ta = ta, key.tb = tb, key.m = m, key.n = n, key.k = k, key.lda = lda, key.ldb = ldb, key.ldd = ldd;
    key.ab_type = ab_type, key.d_type = d_type, key.epi = epi;
    key.align[0] = pointer_alignment(A), key.align[1] = pointer_alignment(B);
    key.align[2] = pointer_alignment(Cin), key.align[3] = pointer_alignment(D);
    LtPlan *plan = NULL, local;
    for (int i = 0; i < lt_cache_used && !plan; i++)
        if (plan_matches(&lt_cache[i], &key)) plan = &lt_cache[i];
    if (!plan) {
        plan = lt_cache_used < LT_CACHE_SIZE ? &lt_cache[lt_cache_used++] : &local;
        *plan = key;
        plan_create(plan, kern);
    }
    const bool ok = plan->ok;
    if (ok) {
        const float one = 1.0f;
        if (bias)
            cublasCheck(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                       sizeof bias));
        if (aux)
            cublasCheck(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux,
                                                       sizeof aux));
        cublasCheck(cublasLtMatmul(kern->cublaslt, plan->desc, &one, A, plan->a_layout, B, plan->b_layout, &beta, Cin,
                                   plan->d_layout, D, plan->d_layout, &plan->algo, kern->workspace,
                                   kern->workspace_bytes, stream));
    }
    if (plan == &local) plan_destroy(&local);
    return ok;
}

// D (m,n; ldd) = op(A) op(B) + beta D [+ bias (m)], fp32 compute: cuBLASLt for bf16 inputs
// (fused bias), else (or when cuBLASLt has no algorithm) cublasGemmEx with the bias broadcast first.
static void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *A, int lda,
                 const void *B, int ldb, void *D, int ldd, cudaDataType ab_type, cudaDataType d_type, float beta,
                 const void *bias, cudaStream_t stream) {
    if (m <= 0 || n <= 0) return;
    CudaKernels *kern = cuda_kernels();
    const float one = 1.0f;
    const size_t elt = d_type == CUDA_R_16BF ? 2 : 4;
    if (k <= 0) {  // empty contraction: D = beta D + bias, with beta 0 or 1 here
        if (bias && d_type == CUDA_R_16BF) bias_broadcast((bf16_t *)D, (const bf16_t *)bias, m, n, ldd, stream);
        else if (bias) bias_broadcast((float *)D, (const float *)bias, m, n, ldd, stream);
        else if (beta == 0.0f) cudaCheck(cudaMemset2DAsync(D, (size_t)ldd * elt, 0, (size_t)m * elt, n, stream));
        return;
    }
    if (gemm_lt(ta, tb, m, n, k, A, lda, B, ldb, D, ldd, ab_type, d_type, beta, bias ? EPI_BIAS : EPI_NONE, bias,
                NULL, NULL, stream))
        return;
    if (bias) {
        if (d_type == CUDA_R_16BF) bias_broadcast((bf16_t *)D, (const bf16_t *)bias, m, n, ldd, stream);
        else bias_broadcast((float *)D, (const float *)bias, m, n, ldd, stream);
        beta = 1.0f;
    }
    cublasCheck(cublasSetStream(kern->cublas, stream));
    cublasCheck(cublasGemmEx(kern->cublas, ta, tb, m, n, k, &one, A, ab_type, lda, B, ab_type, ldb,
                             &beta, D, d_type, ldd, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// dweight (fp32, +=) = dout^T @ inp with dbias (fp32, +=) = colsum(dout) in the product's epilogue
// (bf16, LSST_BGRAD=epilogue); false (nothing done) where cuBLASLt has no algorithm for it.
static bool dweight_bgrad_lt(float *dweight, float *dbias, const bf16_t *dout, const bf16_t *inp, int N, int C, int OC,
                             cudaStream_t stream) {
    if (!bgrad_epilogue || !dbias || N <= 0 || C <= 0 || OC <= 0) return false;
    float *sums = cuda_reduction_scratch_floats(OC);
    if (!gemm_lt(CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, inp, C, dout, OC, dweight, C, CUDA_R_16BF, CUDA_R_32F, 1.0f,
                 EPI_BGRADB, sums, NULL, NULL, stream)) {
        bgrad_fallbacks++;
        return false;
    }
    cuda_residual_forward(dbias, dbias, sums, OC, stream);
    return true;
}

// dinp (T) = dout @ weight + beta dinp (beta 1: += in the GEMM, 0: written); dweight (fp32, +=) =
// dout^T @ inp; dbias (fp32, +=) = colsum(dout).
template <typename T>
static void matmul_backward_t(T *dinp, float *dweight, float *dbias, const T *dout, const T *inp, const T *weight,
                              int N, int C, int OC, cudaDataType type, float beta, cudaStream_t stream) {
    if (dinp) gemm(CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, weight, C, dout, OC, dinp, C, type, type, beta, NULL, stream);
    if constexpr (sizeof(T) == 2)
        if (dweight_bgrad_lt(dweight, dbias, dout, inp, N, C, OC, stream)) return;
    gemm(CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, inp, C, dout, OC, dweight, C, type, CUDA_R_32F, 1.0f, NULL, stream);
    if (dbias) cuda_colsum_accumulate<T>(dbias, dout, N, OC, stream);
}

// The MLP's GELU around its two products (bf16). Forward: pre = inp @ weight^T + bias, out =
// gelu(pre). Backward of the product after the GELU: dpre = gelu'(pre) (dout @ weight), written
// (not accumulated), then that product's dweight and dbias as matmul_backward_t.
static bool gelu_in_epilogue(int N, int C, int OC) { return gelu_epilogue && N > 0 && C > 0 && OC > 0; }

void cuda_matmul_apply_env(void) {
    cuda_env_flag("LSST_GELU", &gelu_epilogue);     // epilogue | kernels
    cuda_env_flag("LSST_BGRAD", &bgrad_epilogue);   // epilogue | kernels
    cuda_env_flag("LSST_RESIDUAL", &residual_epilogue);   // epilogue | kernel
}

extern "C" {

void cuda_matmul_gelu_select(int epilogue) { gelu_epilogue = epilogue != 0; }
int cuda_matmul_gelu_selected(void) { return gelu_epilogue; }
long cuda_matmul_gelu_fallbacks(void) { return gelu_fallbacks; }
void cuda_matmul_bgrad_select(int epilogue) { bgrad_epilogue = epilogue != 0; }
int cuda_matmul_bgrad_selected(void) { return bgrad_epilogue; }
long cuda_matmul_bgrad_fallbacks(void) { return bgrad_fallbacks; }
void cuda_matmul_residual_select(int epilogue) { residual_epilogue = epilogue != 0; }
int cuda_matmul_residual_selected(void) { return residual_epilogue; }
long cuda_matmul_residual_fallbacks(void) { return residual_fallbacks; }

void cuda_matmul_gelu_forward_bf16(bf16 *out, bf16 *pre, const bf16 *inp, const bf16 *weight, const bf16 *bias,
                                   int N, int C, int OC, cudaStream_t stream) {
    if (gelu_in_epilogue(N, C, OC) && bias) {  // (GELU_AUX without a bias: not needed, not offered)
        if (gemm_lt(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, weight, C, inp, C, out, OC, CUDA_R_16BF, CUDA_R_16BF, 0.0f,
                    EPI_GELU_AUX_BIAS, bias, pre, NULL, stream))
            return;
        gelu_fallbacks++;
    }
    gemm(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, weight, C, inp, C, pre, OC, CUDA_R_16BF, CUDA_R_16BF, 0.0f, bias, stream);
    cuda_gelu_forward_bf16(out, pre, (long)N * OC, stream);
}

void cuda_matmul_backward_dgelu_bf16(bf16 *dpre, float *dweight, float *dbias, const bf16 *dout, const bf16 *inp,
                                     const bf16 *weight, const bf16 *pre, int N, int C, int OC,
                                     cudaStream_t stream) {
    bool done = false;
    if (gelu_in_epilogue(N, C, OC)) {
        done = gemm_lt(CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, weight, C, dout, OC, dpre, C, CUDA_R_16BF, CUDA_R_16BF,
                       0.0f, EPI_DGELU, NULL, (void *)pre, NULL, stream);
        if (!done) gelu_fallbacks++;
    }
    if (!done) {
        gemm(CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, weight, C, dout, OC, dpre, C, CUDA_R_16BF, CUDA_R_16BF, 0.0f, NULL,
             stream);
        cuda_gelu_backward_inplace_bf16(dpre, pre, (long)N * C, stream);
    }
    matmul_backward_t<bf16_t>(NULL, dweight, dbias, dout, inp, weight, N, C, OC, CUDA_R_16BF, 1.0f, stream);
}

void cuda_matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC,
                         cudaStream_t stream) {
    gemm(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, weight, C, inp, C, out, OC, CUDA_R_32F, CUDA_R_32F, 0.0f, bias, stream);
}

void cuda_matmul_forward_bf16(bf16 *out, const bf16 *inp, const bf16 *weight, const bf16 *bias, int N, int C,
                              int OC, cudaStream_t stream) {
    gemm(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, weight, C, inp, C, out, OC, CUDA_R_16BF, CUDA_R_16BF, 0.0f, bias,
         stream);
}

void cuda_matmul_residual_forward_bf16(bf16 *out, bf16 *tmp, const bf16 *residual, const bf16 *inp,
                                       const bf16 *weight, const bf16 *bias, int N, int C, int OC,
                                       cudaStream_t stream) {
    if (residual_epilogue && N > 0 && C > 0 && OC > 0) {   // the residual as C, beta 1
        if (gemm_lt(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, weight, C, inp, C, out, OC, CUDA_R_16BF, CUDA_R_16BF, 1.0f,
                    bias ? EPI_BIAS : EPI_NONE, bias, NULL, residual, stream))
            return;
        residual_fallbacks++;
    }
    cuda_matmul_forward_bf16(tmp, inp, weight, bias, N, C, OC, stream);
    cuda_residual_forward_bf16(out, residual, tmp, (long)N * OC, stream);
}

void cuda_matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                          const float *weight, int N, int C, int OC, cudaStream_t stream) {
    matmul_backward_t<float>(dinp, dweight, dbias, dout, inp, weight, N, C, OC, CUDA_R_32F, 1.0f, stream);
}

void cuda_matmul_backward_bf16(bf16 *dinp, float *dweight, float *dbias, const bf16 *dout, const bf16 *inp,
                               const bf16 *weight, int N, int C, int OC, cudaStream_t stream) {
    matmul_backward_t<bf16_t>(dinp, dweight, dbias, dout, inp, weight, N, C, OC, CUDA_R_16BF, 1.0f, stream);
}

void cuda_matmul_backward_write_bf16(bf16 *dinp, float *dweight, float *dbias, const bf16 *dout, const bf16 *inp,
                                     const bf16 *weight, int N, int C, int OC, cudaStream_t stream) {
    matmul_backward_t<bf16_t>(dinp, dweight, dbias, dout, inp, weight, N, C, OC, CUDA_R_16BF, 0.0f, stream);
}

}  // extern "C"
