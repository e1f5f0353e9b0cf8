// CUDA kernels for the token-wise layers: embedding, layernorm, GELU, residual, softmax
// cross-entropy, and the optimizer helpers (AdamW, sum of squares, scaling). Twins of
// kernels/cpu/layers.c; each is a template over the activation type T (float or bf16) with
// fp32 arithmetic. No float atomics anywhere: sums over rows are two-pass (fixed partial
// rows, then a fixed-order combine) or owned by one thread, so results depend only on shapes.
#include <math.h>

#include "cuda_common.h"
#include "layers_kernels.h"

static bool ln_fused = true;   // the LayerNorm kernels with the row in registers; LSST_LN=split: false

template <typename T>
static void embedding_forward_t(T *out, const int *tokens, const float *wte, const float *wpe, int B, int T_, int C,
                                cudaStream_t stream) {
    const long n = (long)B * T_ * C;
    if (n <= 0) return;
    embedding_forward_kernel<T><<<elementwise_grid(n, BLOCK), BLOCK, 0, stream>>>(out, tokens, wte, wpe, T_, C, n);
    cudaCheckLaunch();
}

template <typename T>
static void embedding_backward_t(float *dwte, float *dwpe, const T *dout, const int *tokens, int B, int T_, int C,
                                 int V, cudaStream_t stream) {
    if ((long)B * T_ * C <= 0) return;
    cudaRequire(V > 0 && V <= 65535, "cuda_embedding_backward: vocabulary size %d outside [1, 65535]", V);
    const dim3 grid(ceil_div_u(C, BLOCK), (unsigned)V);
    embedding_backward_wte_kernel<T><<<grid, BLOCK, 0, stream>>>(dwte, dout, tokens, (long)B * T_, C);
    cudaCheckLaunch();
    embedding_backward_wpe_kernel<T><<<elementwise_grid((long)T_ * C, BLOCK), BLOCK, 0, stream>>>(dwpe, dout, B, T_,
                                                                                                    C);
    cudaCheckLaunch();
}

// ---- layernorm: host side ----------------------------------------------------------------

// The module scratch of a column reduction over `cols` columns: the partial sums at its start,
// the tickets of the column groups (ints, 0 between launches: zeroed at init, put back by the
// kernels) at its end.
struct ReductionScratch {
    float *partial;
    int *tickets;
};
static ReductionScratch reduction_scratch(int cols) {
    CudaKernels *k = cuda_kernels();
    cudaRequire(cuda_kernels_reduction_bytes(cols) <= k->scratch_bytes,
                "CUDA kernels: a reduction over %d columns needs %zu bytes of scratch, the module has %zu "
                "(pass a larger size to cuda_kernels_init)",
                cols, cuda_kernels_reduction_bytes(cols), k->scratch_bytes);
    return {(float *)k->scratch, (int *)((char *)k->scratch + k->scratch_bytes) - ceil_div_u(cols, 32)};
}

// f(std::integral_constant<int, V>(), std::integral_constant<int, G>()) for the register layout
// of a row of C (layers_kernels.h: with_row_groups): V = vec16<T>() where `vec`, else 1; false
// (f not called) where a row does not fit.
template <typename T, typename F> static bool with_row_layout(bool vec, int C, F f) {
    if (vec) return with_row_groups<vec16<T>()>(C, [&](auto g) { f(std::integral_constant<int, vec16<T>()>(), g); });
    return with_row_groups<1>(C, [&](auto g) { f(std::integral_constant<int, 1>(), g); });
}

// Grid of the column reductions (layers_kernels.h): 32*V columns per block, REDUCE_CHUNKS row chunks.
static dim3 colsum_grid(int cols, int V) { return dim3(ceil_div_u(cols, 32 * V), REDUCE_CHUNKS); }

template <typename T>
static void layernorm_forward_t(T *out, float *mean, float *rstd, const T *inp, const float *weight, const float *bias,
                                int N, int C, cudaStream_t stream) {
    if (N <= 0 || C <= 0) return;
    const unsigned grid = ceil_div_u(N, WARPS_PER_BLOCK);
    const bool vec = C % vec16<T>() == 0 && aligned16(out, inp, weight, bias);
    if (ln_fused && with_row_layout<T>(vec, C, [&](auto v, auto g) {
            layernorm_forward_rows_kernel<T, decltype(v)::value, decltype(g)::value>
                <<<grid, BLOCK, 0, stream>>>(out, mean, rstd, inp, weight, bias, N, C);
        })) {
        cudaCheckLaunch();
        return;
    }
    if (vec)
        layernorm_forward_kernel<T, vec16<T>()><<<grid, BLOCK, 0, stream>>>(out, mean, rstd, inp, weight, bias, N, C);
    else
        layernorm_forward_kernel<T, 1><<<grid, BLOCK, 0, stream>>>(out, mean, rstd, inp, weight, bias, N, C);
    cudaCheckLaunch();
}

template <typename T>
static void layernorm_backward_t(T *dinp, float *dweight, float *dbias, const T *dout, const T *inp,
                                 const float *weight, const float *mean, const float *rstd, int N, int C,
                                 cudaStream_t stream) {
    if (N <= 0 || C <= 0) return;
    const unsigned grid = ceil_div_u(N, WARPS_PER_BLOCK);
    const bool vec = C % vec16<T>() == 0 && aligned16(dinp, dout, inp, weight);
    const ReductionScratch r = reduction_scratch(C);
    if (ln_fused) {   // one pass: dinp and the chunks' column partials, then their sum
        float *partial_w = r.partial, *partial_b = r.partial + (size_t)LN_CHUNKS * C;
        if (with_row_layout<T>(vec, C, [&](auto v, auto g) {
                layernorm_backward_fused_kernel<T, decltype(v)::value, decltype(g)::value>
                    <<<dim3(1, LN_CHUNKS), BLOCK, 0, stream>>>(dinp, partial_w, partial_b, dout, inp, weight, mean,
                                                              rstd, N, C);
            })) {
            cudaCheckLaunch();
            columns_finish_kernel<<<ceil_div_u(C, 32), BLOCK, 0, stream>>>(dweight, dbias, partial_w, partial_b,
                                                                          LN_CHUNKS, C);
            cudaCheckLaunch();
            return;
        }
    }
    if (vec)
        layernorm_backward_dinp_kernel<T, vec16<T>()><<<grid, BLOCK, 0, stream>>>(dinp, dout, inp, weight, mean, rstd,
                                                                                  N, C);
    else
        layernorm_backward_dinp_kernel<T, 1><<<grid, BLOCK, 0, stream>>>(dinp, dout, inp, weight, mean, rstd, N, C);
    cudaCheckLaunch();
    float *partial_w = r.partial, *partial_b = r.partial + (size_t)REDUCE_CHUNKS * C;
    if (C % vec16<T>() == 0 && aligned16(dout, inp))
        layernorm_backward_columns_kernel<T, vec16<T>()><<<colsum_grid(C, vec16<T>()), BLOCK, 0, stream>>>(
            dweight, dbias, partial_w, partial_b, r.tickets, dout, inp, mean, rstd, N, C);
    else
        layernorm_backward_columns_kernel<T, 1><<<colsum_grid(C, 1), BLOCK, 0, stream>>>(
            dweight, dbias, partial_w, partial_b, r.tickets, dout, inp, mean, rstd, N, C);
    cudaCheckLaunch();
}

// Used by matmul.cu: dbias (OC) += colsum(dout (N, OC)).
template <typename T> void cuda_colsum_accumulate(float *dbias, const T *dout, int N, int OC, cudaStream_t stream) {
    if (N <= 0 || OC <= 0) return;
    const ReductionScratch r = reduction_scratch(OC);
    if (OC % vec16<T>() == 0 && aligned16(dout))
        colsum_kernel<T, vec16<T>()><<<colsum_grid(OC, vec16<T>()), BLOCK, 0, stream>>>(dbias, r.partial, r.tickets,
                                                                                       dout, N, OC);
    else
        colsum_kernel<T, 1><<<colsum_grid(OC, 1), BLOCK, 0, stream>>>(dbias, r.partial, r.tickets, dout, N, OC);
    cudaCheckLaunch();
}
// Used by matmul.cu: n floats of the reduction scratch (the bias gradients of its epilogue).
float *cuda_reduction_scratch_floats(int n) { return reduction_scratch(n).partial; }
template void cuda_colsum_accumulate<float>(float *, const float *, int, int, cudaStream_t);
template void cuda_colsum_accumulate<bf16_t>(float *, const bf16_t *, int, int, cudaStream_t);

// ---- the C interface ----------------------------------------------------------------------

#define ELEMENTWISE(kernel, n, ...)                                                         \
    do {                                                                                    \
        if ((n) <= 0) return;                                                               \
        kernel<<<elementwise_grid((n), BLOCK), BLOCK, 0, stream>>>(__VA_ARGS__);            \
        cudaCheckLaunch();                                                                  \
    } while (0)

#define ROWWISE(kernel, N, ...)                                                             \
    do {                                                                                    \
        if ((N) <= 0) return;                                                               \
        kernel<<<ceil_div_u((N), WARPS_PER_BLOCK), BLOCK, 0, stream>>>(__VA_ARGS__);        \
        cudaCheckLaunch();                                                                  \
    } while (0)

// Element-wise kernels over groups of V elements: vec16<T>() when the tensors are 16-byte aligned
// (one thread per group; the n % V tail is handled inside), else V = 1.
#define GROUPWISE(kernel, T, n, p0, p1, p2, ...)                                                      \
    do {                                                                                             \
        if ((n) <= 0) return;                                                                        \
        if (aligned16(p0, p1, p2)) {                                                                 \
            constexpr int V = vec16<T>();                                                            \
            kernel<T, V><<<elementwise_grid(((n) + V - 1) / V, BLOCK), BLOCK, 0, stream>>>(__VA_ARGS__); \
        } else {                                                                                     \
            kernel<T, 1><<<elementwise_grid((n), BLOCK), BLOCK, 0, stream>>>(__VA_ARGS__);           \
        }                                                                                            \
        cudaCheckLaunch();                                                                           \
    } while (0)

template <typename T> static void gelu_forward_t(T *out, const T *inp, long n, cudaStream_t stream) {
    GROUPWISE(gelu_forward_kernel, T, n, out, inp, inp, out, inp, n);
}
template <typename T> static void gelu_backward_t(T *dinp, const T *inp, const T *dout, long n, cudaStream_t stream) {
    GROUPWISE(gelu_backward_kernel, T, n, dinp, inp, dout, dinp, inp, dout, n);
}
template <typename T> static void gelu_backward_inplace_t(T *d, const T *inp, long n, cudaStream_t stream) {
    GROUPWISE(gelu_backward_inplace_kernel, T, n, d, inp, inp, d, inp, n);
}
template <typename T> static void residual_forward_t(T *out, const T *a, const T *b, long n, cudaStream_t stream) {
    GROUPWISE(residual_forward_kernel, T, n, out, a, b, out, a, b, n);
}

void cuda_gelu_backward_inplace_bf16(bf16 *d, const bf16 *inp, long n, cudaStream_t stream) {
    gelu_backward_inplace_t<bf16_t>(d, inp, n, stream);
}

void cuda_layers_apply_env(void) { cuda_env_flag("LSST_LN", &ln_fused); }   // fused | split

extern "C" {

void cuda_layernorm_select(int fused) { ln_fused = fused != 0; }
int cuda_layernorm_selected(void) { return ln_fused; }

void cuda_embedding_forward(float *out, const int *tokens, const float *wte, const float *wpe, int B, int T, int C,
                            cudaStream_t stream) {
    embedding_forward_t<float>(out, tokens, wte, wpe, B, T, C, stream);
}
void cuda_embedding_forward_bf16(bf16 *out, const int *tokens, const float *wte, const float *wpe, int B, int T,
                                 int C, cudaStream_t stream) {
    embedding_forward_t<bf16_t>(out, tokens, wte, wpe, B, T, C, stream);
}
void cuda_embedding_backward(float *dwte, float *dwpe, const float *dout, const int *tokens, int B, int T, int C,
                             int V, cudaStream_t stream) {
    embedding_backward_t<float>(dwte, dwpe, dout, tokens, B, T, C, V, stream);
}
void cuda_embedding_backward_bf16(float *dwte, float *dwpe, const bf16 *dout, const int *tokens, int B, int T, int C,
                                  int V, cudaStream_t stream) {
    embedding_backward_t<bf16_t>(dwte, dwpe, dout, tokens, B, T, C, V, stream);
}

void cuda_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                            const float *bias, int N, int C, cudaStream_t stream) {
    layernorm_forward_t<float>(out, mean, rstd, inp, weight, bias, N, C, stream);
}
void cuda_layernorm_forward_bf16(bf16 *out, float *mean, float *rstd, const bf16 *inp, const float *weight,
                                 const float *bias, int N, int C, cudaStream_t stream) {
    layernorm_forward_t<bf16_t>(out, mean, rstd, inp, weight, bias, N, C, stream);
}
void cuda_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                             const float *weight, const float *mean, const float *rstd, int N, int C,
                             cudaStream_t stream) {
    layernorm_backward_t<float>(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C, stream);
}
void cuda_layernorm_backward_bf16(bf16 *dinp, float *dweight, float *dbias, const bf16 *dout, const bf16 *inp,
                                  const float *weight, const float *mean, const float *rstd, int N, int C,
                                  cudaStream_t stream) {
    layernorm_backward_t<bf16_t>(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C, stream);
}

void cuda_gelu_forward(float *out, const float *inp, long n, cudaStream_t stream) {
    gelu_forward_t<float>(out, inp, n, stream);
}
void cuda_gelu_forward_bf16(bf16 *out, const bf16 *inp, long n, cudaStream_t stream) {
    gelu_forward_t<bf16_t>(out, inp, n, stream);
}
void cuda_gelu_backward(float *dinp, const float *inp, const float *dout, long n, cudaStream_t stream) {
    gelu_backward_t<float>(dinp, inp, dout, n, stream);
}
void cuda_gelu_backward_bf16(bf16 *dinp, const bf16 *inp, const bf16 *dout, long n, cudaStream_t stream) {
    gelu_backward_t<bf16_t>(dinp, inp, dout, n, stream);
}
void cuda_residual_forward(float *out, const float *a, const float *b, long n, cudaStream_t stream) {
    residual_forward_t<float>(out, a, b, n, stream);
}
void cuda_residual_forward_bf16(bf16 *out, const bf16 *a, const bf16 *b, long n, cudaStream_t stream) {
    residual_forward_t<bf16_t>(out, a, b, n, stream);
}

void cuda_softmax_xent_forward(float *losses, const float *logits, const int *targets, int N, int V,
                               cudaStream_t stream) {
    ROWWISE(softmax_xent_forward_kernel<float>, N, losses, logits, targets, N, V);
}
void cuda_softmax_xent_forward_bf16(float *losses, const bf16 *logits, const int *targets, int N, int V,
                                    cudaStream_t stream) {
    ROWWISE(softmax_xent_forward_kernel<bf16_t>, N, losses, logits, targets, N, V);
}
void cuda_softmax_xent_forward_backward(float *losses, float *logits, const int *targets, int N, int V, float dloss,
                                        cudaStream_t stream) {
    ROWWISE(softmax_xent_forward_backward_kernel<float>, N, losses, logits, targets, N, V, dloss);
}
void cuda_softmax_xent_forward_backward_bf16(float *losses, bf16 *logits, const int *targets, int N, int V,
                                             float dloss, cudaStream_t stream) {
    ROWWISE(softmax_xent_forward_backward_kernel<bf16_t>, N, losses, logits, targets, N, V, dloss);
}

void cuda_adamw_update(float *params, bf16 *params_bf16, const float *grads, float *m, float *v, long n, float lr,
                       float beta1, float beta2, float eps, float weight_decay, int t, float grad_scale,
                       cudaStream_t stream) {
    // Bias corrections in double on the host, as the CPU twin.
    const float c1 = (float)(1.0 / (1.0 - pow(beta1, t)));
    const float c2 = (float)(1.0 / (1.0 - pow(beta2, t)));
    ELEMENTWISE(adamw_kernel, n, params, params_bf16, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, grad_scale,
                c1, c2);
}

void cuda_copy_to_bf16(bf16 *dst, const float *src, long n, cudaStream_t stream) {
    ELEMENTWISE(copy_to_bf16_kernel, n, dst, src, n);
}

void cuda_seq_place_rows_bf16(bf16 *full, const bf16 *xchg, const int *pos_of_rank, int n, int B, int T, int W,
                              cudaStream_t stream) {
    const long count = (long)n * B * T * W;
    ELEMENTWISE(seq_place_rows_kernel, count, full, xchg, pos_of_rank, B, T, n * T, W, count);
}

void cuda_seq_take_rows_float(float *xchg, const bf16 *full, const int *pos_of_rank, int n, int B, int T, int W,
                              cudaStream_t stream) {
    const long count = (long)n * B * T * W;
    ELEMENTWISE(seq_take_rows_kernel, count, xchg, full, pos_of_rank, B, T, n * T, W, count);
}

void cuda_sum_squares(double *result, const float *x, long n, cudaStream_t stream) {
    CudaKernels *k = cuda_kernels();
    double *partial = (double *)k->scratch;  // SUMSQ_BLOCKS doubles: far below any scratch size
    // n == 0 still runs: the partials are zeros and *result = 0.
    sum_squares_partial_kernel<<<SUMSQ_BLOCKS, BLOCK, 0, stream>>>(partial, x, n < 0 ? 0 : n);
    cudaCheckLaunch();
    sum_squares_final_kernel<<<1, BLOCK, 0, stream>>>(result, partial);
    cudaCheckLaunch();
}

void cuda_sum_squares_tensors(double *results, const float *x, const size_t *sizes, int count,
                              cudaStream_t stream) {
    CudaKernels *k = cuda_kernels();
    cudaRequire(count >= 0 && count <= SUMSQ_MAX_TENSORS, "cuda_sum_squares_tensors: %d tensors (at most %d)", count,
                SUMSQ_MAX_TENSORS);
    if (count == 0) return;
    SumsqTensors t;
    t.off[0] = 0;
    for (int j = 0; j < count; j++) t.off[j + 1] = t.off[j] + (long)sizes[j];
    double *partial = (double *)k->scratch;   // count * SUMSQ_BLOCKS doubles: 64 KiB at most
    sum_squares_tensors_kernel<<<dim3(SUMSQ_BLOCKS, count), BLOCK, 0, stream>>>(partial, x, t);
    cudaCheckLaunch();
    sum_squares_final_kernel<<<count, BLOCK, 0, stream>>>(results, partial);
    cudaCheckLaunch();
}

double cuda_sum_squares_host(const float *x, long n, cudaStream_t stream) {
    // The result goes to the module scratch, right after the partials.
    double *result_dev = (double *)cuda_kernels()->scratch + SUMSQ_BLOCKS;
    cuda_sum_squares(result_dev, x, n, stream);
    double result = 0.0;
    cudaCheck(cudaMemcpyAsync(&result, result_dev, sizeof(double), cudaMemcpyDeviceToHost, stream));
    cudaCheck(cudaStreamSynchronize(stream));
    return result;
}

void cuda_scale_inplace(float *x, long n, float s, cudaStream_t stream) { ELEMENTWISE(scale_kernel, n, x, n, s); }

}  // extern "C"
