// The CUDA kernels of lsst-run: twins of kernels/kernels.h on DEVICE pointers.
// Same shapes, same names with a cuda_ prefix, same conventions:
//  - Forward kernels overwrite their outputs.
//  - Backward kernels ACCUMULATE (+=) into every gradient output; the caller zeroes.
//  - B = sequences, T = tokens held here, C = model dim, NH = heads, hs = C / NH,
//    F = MLP hidden size, V = vocab size, N = rows. Row-major.
//  - Deterministic: the same inputs on the same GPU model give the same bits (no float
//    atomics; every reduction has a fixed order that depends only on the shapes).
//  - Asynchronous: every call is queued on `stream` and returns; nothing synchronizes
//    except cuda_sum_squares_host. Kernels of this file that share the module scratch
//    (see cuda_kernels_init) must run on one stream (or be ordered by the caller).
//  - Every CUDA / cuBLAS error aborts the process with file:line and the error string.
//
// Two precisions:
//  - fp32 twins (cuda_<name>): float everywhere, exactly the CPU signatures. GEMMs are
//    cuBLAS fp32 (no TF32); attention is a plain CUDA-core kernel (any arch, any hs
//    <= 256). This is the path for sm_70 (V100) and for exactness checks.
//  - bf16 mixed precision (cuda_<name>_bf16): activations and activation gradients in
//    bf16; parameters, parameter gradients, optimizer state, LayerNorm statistics,
//    softmax statistics (lse) and losses in fp32. GEMMs take the bf16 COPY of their
//    weights (written by cuda_adamw_update's params_bf16) and accumulate in fp32;
//    every other kernel reads the fp32 master parameters. Attention uses tensor cores
//    (mma.sync m16n8k16 bf16, sm_80+) for hs in {16, 32, 64, 128}; other hs, or an
//    sm_7x device, fall back to the CUDA-core kernel on the same bf16 tensors.
//    bf16 GEMMs need sm_80+ (cuBLAS has no bf16 tensor-core GEMM on Volta).
#pragma once
#include <stddef.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
#include <cuda_bf16.h>
typedef __nv_bfloat16 bf16;
extern "C" {
#else
#include <cuda_bf16.h>
typedef __nv_bfloat16_raw bf16;  // storage view for C callers: 16 bits, same layout
#endif

// ---- module state -------------------------------------------------------------------
// Creates the cuBLAS / cuBLASLt handles on the CURRENT device and allocates the module's
// device memory: the cuBLASLt workspace and a scratch for the reductions (partial sums and
// tickets of LayerNorm / bias gradients, sum of squares). scratch_bytes = 0 picks the default
// (16 MiB: enough for reductions over up to 32760 columns). Call once per process after
// cudaSetDevice; calling again is a no-op.
void cuda_kernels_init(size_t scratch_bytes);
// 0 if every kernel switch in the environment (LSST_GELU, LSST_BGRAD, LSST_LN, LSST_RESIDUAL,
// LSST_QKV, LSST_ATTN_WGMMA, LSST_ATTN_BWD, LSST_ATTN_VARIANTS: kernels/cuda/README.md) is unset or
// has a value it takes; else -1 and one line in err. Needs no device (cuda_kernels_init refuses
// the same values).
// cuda_kernels_env_switch: the index of switch `name`'s value among the values it takes, in the
// order the README lists them (LSST_QKV: 0 fused, 1 split), -1 when unset; for the runtime's own
// switch (LSST_QKV: how lsst-run lays out Q, K, V), checked with the others. Needs no device.
int cuda_kernels_env_check(char *err, size_t n);
int cuda_attention_env_check(char *err, size_t n);   // LSST_ATTN_VARIANTS only
int cuda_kernels_env_switch(const char *name);
void cuda_kernels_shutdown(void);
// Device bytes the module holds (workspace + scratch), for exact memory accounting.
size_t cuda_kernels_device_bytes(void);
// What cuda_kernels_init(scratch_bytes) will allocate, computed without a device.
size_t cuda_kernels_plan_bytes(size_t scratch_bytes);
// Scratch bytes a reduction over `cols` columns needs (LayerNorm backward: cols = C;
// matmul backward bias: cols = OC). Larger than the scratch -> the call aborts.
size_t cuda_kernels_reduction_bytes(int cols);

// ---- embedding ------------------------------------------------------------------------
// out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:]   wte (V,C), wpe (T,C) fp32 master weights.
void cuda_embedding_forward(float *out, const int *tokens, const float *wte, const float *wpe, int B, int T, int C,
                            cudaStream_t stream);
void cuda_embedding_forward_bf16(bf16 *out, const int *tokens, const float *wte, const float *wpe, int B, int T,
                                 int C, cudaStream_t stream);
// dwte[tokens[b,t],:] += dout[b,t,:]; dwpe[t,:] += sum_b dout[b,t,:]. V = rows of dwte.
// Deterministic without atomics: each (vocab row, channel slice) is owned by one thread
// block that scans the tokens in order (work O(V * B*T) token reads: meant for byte-level
// vocabularies, V <= a few thousand).
void cuda_embedding_backward(float *dwte, float *dwpe, const float *dout, const int *tokens, int B, int T, int C,
                             int V, cudaStream_t stream);
void cuda_embedding_backward_bf16(float *dwte, float *dwpe, const bf16 *dout, const int *tokens, int B, int T, int C,
                                  int V, cudaStream_t stream);

// ---- layernorm --------------------------------------------------------------------------
// out (N,C), mean (N), rstd (N) fp32; weight, bias (C) fp32; eps = 1e-5.
void cuda_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                            const float *bias, int N, int C, cudaStream_t stream);
void cuda_layernorm_forward_bf16(bf16 *out, float *mean, float *rstd, const bf16 *inp, const float *weight,
                                 const float *bias, int N, int C, cudaStream_t stream);
// dinp (N,C) +=; dweight, dbias (C) fp32 += (column sums through the module scratch).
// Which kernels: 0 ("split") one warp per row re-reading the row for each pass, the backward's
// column sums in a kernel of their own; 1 ("fused", the default) the row in registers (C <= 1024
// for bf16, 512 for fp32 rows 16-byte aligned; wider rows take the split kernels), the backward's
// column sums in the same pass as dinp (same out, mean, rstd, dinp bits; dweight, dbias summed in
// another fixed order). LSST_LN=fused (split) selects 1 (0) at cuda_kernels_init.
void cuda_layernorm_select(int fused);
int cuda_layernorm_selected(void);
void cuda_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                             const float *weight, const float *mean, const float *rstd, int N, int C,
                             cudaStream_t stream);
void cuda_layernorm_backward_bf16(bf16 *dinp, float *dweight, float *dbias, const bf16 *dout, const bf16 *inp,
                                  const float *weight, const float *mean, const float *rstd, int N, int C,
                                  cudaStream_t stream);

// ---- matmul (cuBLAS / cuBLASLt) ------------------------------------------------------------
// out (N,OC) = inp (N,C) @ weight (OC,C)^T + bias (OC); bias may be NULL.
void cuda_matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC,
                         cudaStream_t stream);
// bf16: weight and bias are the bf16 copies; fp32 accumulation (CUBLAS_COMPUTE_32F); the
// bias is added in the cuBLASLt epilogue before the single rounding to bf16.
void cuda_matmul_forward_bf16(bf16 *out, const bf16 *inp, const bf16 *weight, const bf16 *bias, int N, int C,
                              int OC, cudaStream_t stream);
// dinp (N,C) += dout @ weight; dweight (OC,C) += dout^T @ inp; dbias (OC) += colsum(dout).
// dinp / dbias may be NULL.
void cuda_matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                          const float *weight, int N, int C, int OC, cudaStream_t stream);
// bf16: dinp bf16 (+= in the GEMM epilogue, one rounding); dweight, dbias fp32.
void cuda_matmul_backward_bf16(bf16 *dinp, float *dweight, float *dbias, const bf16 *dout, const bf16 *inp,
                               const bf16 *weight, int N, int C, int OC, cudaStream_t stream);
// The same with dinp WRITTEN (= dout @ weight, not +=): what zeroing dinp and then accumulating
// gives (x + 0 = x), without the memset and the GEMM's read of dinp; dweight, dbias +=.
void cuda_matmul_backward_write_bf16(bf16 *dinp, float *dweight, float *dbias, const bf16 *dout, const bf16 *inp,
                                     const bf16 *weight, int N, int C, int OC, cudaStream_t stream);

// ---- matmul with the MLP's GELU (bf16) ---------------------------------------------------------
// pre (N,OC) = inp (N,C) @ weight (OC,C)^T + bias (OC); out = gelu(pre). Both are written: the
// backward reads pre.
void cuda_matmul_gelu_forward_bf16(bf16 *out, bf16 *pre, const bf16 *inp, const bf16 *weight, const bf16 *bias,
                                   int N, int C, int OC, cudaStream_t stream);
// Backward of the product that follows the GELU (its input inp = gelu(pre), (N,C)), with the
// GELU's backward folded in: dpre (N,C) = gelu'(pre) * (dout @ weight), WRITTEN (not
// accumulated: no zeroing needed); dweight (OC,C) += dout^T @ inp; dbias (OC) += colsum(dout)
// (may be NULL).
void cuda_matmul_backward_dgelu_bf16(bf16 *dpre, float *dweight, float *dbias, const bf16 *dout, const bf16 *inp,
                                     const bf16 *weight, const bf16 *pre, int N, int C, int OC,
                                     cudaStream_t stream);
// Where the GELU of those two runs: 1 = in the products' cuBLASLt epilogues (GELU_AUX_BIAS,
// DGELU; the default; falls back to the kernels where cuBLASLt offers no algorithm, counted by
// cuda_matmul_gelu_fallbacks), 0 = GELU kernels after the products. LSST_GELU=kernels (epilogue)
// in the environment selects 0 (1) at cuda_kernels_init.
void cuda_matmul_gelu_select(int epilogue);
int cuda_matmul_gelu_selected(void);   // 1: the epilogues (default), 0: the kernels (LSST_GELU=kernels)
long cuda_matmul_gelu_fallbacks(void);
// Where the bias gradients of the bf16 matmul backwards are summed: 0 = a column-sum kernel over
// dout after the products, 1 = in the dweight product's cuBLASLt epilogue (BGRADB, the default;
// falls back to the kernel where cuBLASLt offers no algorithm, counted). LSST_BGRAD=epilogue
// (kernels) selects 1 (0) at cuda_kernels_init.
void cuda_matmul_bgrad_select(int epilogue);
int cuda_matmul_bgrad_selected(void);
long cuda_matmul_bgrad_fallbacks(void);

// ---- matmul with the residual add (bf16) -------------------------------------------------------
// out (N,OC) = residual (N,OC) + inp (N,C) @ weight (OC,C)^T + bias (OC) (bias may be NULL); out
// may be residual. tmp (N,OC): scratch of way 0, the product written to tmp and then
// cuda_residual_forward_bf16 (two roundings to bf16). 1 = the residual added in the product's
// cuBLASLt epilogue (C = residual, beta = 1: one rounding, no tmp; the default; falls back to way
// 0 where cuBLASLt offers no algorithm, counted). LSST_RESIDUAL=epilogue (kernel)
// selects 1 (0) at cuda_kernels_init.
void cuda_matmul_residual_forward_bf16(bf16 *out, bf16 *tmp, const bf16 *residual, const bf16 *inp,
                                       const bf16 *weight, const bf16 *bias, int N, int C, int OC,
                                       cudaStream_t stream);
void cuda_matmul_residual_select(int epilogue);
int cuda_matmul_residual_selected(void);
long cuda_matmul_residual_fallbacks(void);

// ---- GELU (tanh approximation) / residual ---------------------------------------------------
void cuda_gelu_forward(float *out, const float *inp, long n, cudaStream_t stream);
void cuda_gelu_forward_bf16(bf16 *out, const bf16 *inp, long n, cudaStream_t stream);
void cuda_gelu_backward(float *dinp, const float *inp, const float *dout, long n, cudaStream_t stream);
void cuda_gelu_backward_bf16(bf16 *dinp, const bf16 *inp, const bf16 *dout, long n, cudaStream_t stream);
void cuda_residual_forward(float *out, const float *a, const float *b, long n, cudaStream_t stream);
void cuda_residual_forward_bf16(bf16 *out, const bf16 *a, const bf16 *b, long n, cudaStream_t stream);

// ---- causal multi-head attention, memory-efficient (flash-style) ---------------------------
// As kernels.h: queries are this rank's tokens, keys/values the whole sequence in global
// order; head h uses columns [h*hs, (h+1)*hs).
//   q (B,Tq,·) row stride ldq; query t has global position q_pos[t] (device array, any
//   order: contiguous, zigzag, ...); k, v (B,Tk,·) row stride ldkv; key j has position j.
//   out (B,Tq,C) row stride C = NH*hs; lse (B,NH,Tq) fp32, natural log (-inf: no key).
// Key j is visible to query t iff j <= q_pos[t]. Scale 1/sqrt(hs). No Tq x Tk matrix.
// The tensor-core path (bf16, sm_80+) needs hs in {16,32,64,128}, ldq, ldkv multiples of 8
// and q, k, v 16-byte aligned; anything else takes the CUDA-core path (slow, correct).
void cuda_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, const int *q_pos,
                            int B, int Tq, int Tk, int NH, int hs, int ldq, int ldkv, cudaStream_t stream);
void cuda_attention_forward_bf16(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                                 const int *q_pos, int B, int Tq, int Tk, int NH, int hs, int ldq, int ldkv,
                                 cudaStream_t stream);
// Backward recomputes scores from q, k, v, lse. Accumulates dq (ldq) and dk, dv (ldkv);
// dk/dv are partial (this rank's queries only), summed across the sequence group by the
// caller. `scratch`: device memory of cuda_attention_backward_scratch_bytes(B, NH, Tq, hs)
// bytes (D = rowsum(dout*out) per query and head, per-query-block position ranges and, for a
// fused variant, its dq partial sums, fp32 or fixed-point integers: see below).
// dk/dv are written by one pass over query blocks per key block; dq by one pass over key
// blocks per query block, or (fused variants) summed over key blocks in a fixed order: no
// float atomics, deterministic. The one exception: the atomic variants (LSST_ATTN_BWD=atomic,
// never a default) sum dq by fp32 atomics; cuda_attention_bwd_deterministic says which.
size_t cuda_attention_backward_scratch_bytes(int B, int NH, int Tq, int hs);
// The scratch is what the backward variant selected for hs needs (before cuda_kernels_init: the one
// the environment will select), so a variant selected later (cuda_attention_select) may need more:
// cuda_attention_backward_scratch_bytes_any is enough for every variant of hs (tests, benchmarks).
size_t cuda_attention_backward_scratch_bytes_any(int B, int NH, int Tq, int hs);
void cuda_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                             const float *q, const float *k, const float *v, const int *q_pos, int B, int Tq, int Tk,
                             int NH, int hs, int ldq, int ldkv, void *scratch, cudaStream_t stream);
void cuda_attention_backward_bf16(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out, const float *lse,
                                  const bf16 *q, const bf16 *k, const bf16 *v, const int *q_pos, int B, int Tq,
                                  int Tk, int NH, int hs, int ldq, int ldkv, void *scratch, cudaStream_t stream);
// The same with dq, dk, dv WRITTEN (every element of their heads' columns in rows < Tq, < Tk:
// zeros where nothing is added), not accumulated: the caller zeroes nothing.
void cuda_attention_backward_write_bf16(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out,
                                        const float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                                        const int *q_pos, int B, int Tq, int Tk, int NH, int hs, int ldq, int ldkv,
                                        void *scratch, cudaStream_t stream);
// Tuning and tests: which tile configuration the bf16 tensor-core kernels use for head size
// hs (variant 0 = default; see attention.cu for the table); -1 forces the CUDA-core path.
// cuda_attention_variants: the number of variants for hs (0: no tensor-core kernel for hs);
// cuda_attention_variant_name: a short description of one ("fwd 128x64 8 warps", ...), "none"
// where hs has no such variant or it cannot run here (wgmma variants: an sm_90 GPU and an sm_90a
// build); cuda_attention_select refuses those.
int cuda_attention_variants(int hs);
void cuda_attention_select(int hs, int fwd_variant, int bwd_variant);
const char *cuda_attention_variant_name(int hs, int variant, int backward);
// 1 if backward variant `variant` of hs (-1: the CUDA-core kernel) gives the same bits every run.
int cuda_attention_bwd_deterministic(int hs, int variant);
// The variant the bf16 calls use for hs now (-1: the CUDA-core kernel, also for head sizes without
// tensor-core kernels).
int cuda_attention_selected(int hs, int backward);

// ---- output: fused softmax cross-entropy ---------------------------------------------------
// logits (N,V); losses (N) fp32 nats; targets[n] < 0: loss 0, gradient 0. The backward
// variant overwrites logits IN PLACE with dloss * (softmax - onehot). Statistics in fp32.
void cuda_softmax_xent_forward(float *losses, const float *logits, const int *targets, int N, int V,
                               cudaStream_t stream);
void cuda_softmax_xent_forward_bf16(float *losses, const bf16 *logits, const int *targets, int N, int V,
                                    cudaStream_t stream);
void cuda_softmax_xent_forward_backward(float *losses, float *logits, const int *targets, int N, int V, float dloss,
                                        cudaStream_t stream);
void cuda_softmax_xent_forward_backward_bf16(float *losses, bf16 *logits, const int *targets, int N, int V,
                                             float dloss, cudaStream_t stream);

// ---- optimizer -----------------------------------------------------------------------------
// AdamW on fp32 master weights, t 1-based: p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p).
// params_bf16 (may be NULL): receives the updated parameters rounded to bf16, in the same pass.
// grad_scale: the gradient clipping factor (1: none), the same bits as cuda_scale_inplace on the
// gradients first, without that pass over them (0.36 ms of a 91M-parameter step on an H100).
void cuda_adamw_update(float *params, bf16 *params_bf16, const float *grads, float *m, float *v, long n, float lr,
                       float beta1, float beta2, float eps, float weight_decay, int t, float grad_scale,
                       cudaStream_t stream);
// Rounds fp32 params to their bf16 copy (after init or a checkpoint load).
void cuda_copy_to_bf16(bf16 *dst, const float *src, long n, cudaStream_t stream);
// Sum of squares in double with a fixed tree (same bits for the same n on any GPU), written
// to *result (device pointer); the _host variant synchronizes the stream and returns it.
void cuda_sum_squares(double *result, const float *x, long n, cudaStream_t stream);
double cuda_sum_squares_host(const float *x, long n, cudaStream_t stream);
// The same for `count` (<= 32) tensors laid end to end from x (tensor j: sizes[j] floats; sizes a
// host array) in one launch: results[j] (device) has the bits of cuda_sum_squares on tensor j.
void cuda_sum_squares_tensors(double *results, const float *x, const size_t *sizes, int count,
                              cudaStream_t stream);
void cuda_scale_inplace(float *x, long n, float s, cudaStream_t stream);

// ---- sequence-group rows (the NCCL exchanges of runtime/gpu_comm.c) -------------------------
// xchg (n, B, T, W): the n ranks' rows in group-rank order, as an all-gather returns them and
// a reduce-scatter takes them; full (B, S = n*T, W) in global order; row t of rank r is global
// position pos_of_rank[r*T + t] (device array, n*T ints; a permutation of 0..S-1).
// place: full = xchg's rows in global order (twin: model.c seq_place_rows);
// take: xchg = full's rows in rank order, widened to fp32 (twin: model.c seq_take_rows).
void cuda_seq_place_rows_bf16(bf16 *full, const bf16 *xchg, const int *pos_of_rank, int n, int B, int T, int W,
                              cudaStream_t stream);
void cuda_seq_take_rows_float(float *xchg, const bf16 *full, const int *pos_of_rank, int n, int B, int T, int W,
                              cudaStream_t stream);

#ifdef __cplusplus
}
#endif
