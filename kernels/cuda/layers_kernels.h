// Device code of the token-wise CUDA kernels (kernels/cuda/layers.cu): the kernels, in a header
// so that tests/gpu/emulate_layers.cpp can run the very same source on the CPU. See layers.cu.
#pragma once
#include <math.h>

#include <type_traits>

#include "device_common.h"

typedef __nv_bfloat16 bf16_t;

enum { BLOCK = 256, WARPS_PER_BLOCK = BLOCK / 32 };

// V consecutive elements of T. V = 1: plain loads. V * sizeof(T) = 16 (8 bf16 or 4 floats): one
// uint4 load / store, for 16-byte aligned tensors (the launchers in layers.cu check; the kernels
// below are instantiated for both). The CPU emulator compiles this as host C++, where the uint4
// view would break the aliasing rules: it copies element by element.
template <typename T, int V> struct alignas(V * sizeof(T)) VecN {
    T v[V];
};
template <typename T> constexpr int vec16() { return 16 / (int)sizeof(T); }
template <typename T, int V> __device__ __forceinline__ VecN<T, V> load_vec(const T *p) {
    VecN<T, V> r;
#ifdef __CUDA_ARCH__
    if constexpr (V * sizeof(T) == 16) *reinterpret_cast<uint4 *>(r.v) = *reinterpret_cast<const uint4 *>(p);
    else
#endif
        for (int k = 0; k < V; k++) r.v[k] = p[k];
    return r;
}
template <typename T, int V> __device__ __forceinline__ void store_vec(T *p, const VecN<T, V> &x) {
#ifdef __CUDA_ARCH__
    if constexpr (V * sizeof(T) == 16) *reinterpret_cast<uint4 *>(p) = *reinterpret_cast<const uint4 *>(x.v);
    else
#endif
        for (int k = 0; k < V; k++) p[k] = x.v[k];
}

// V consecutive floats of a parameter vector (LayerNorm weight, bias) in 16-byte loads where V
// is a multiple of 4 (then p must be 16-byte aligned), else one by one.
template <int V> __device__ __forceinline__ VecN<float, V> load_params(const float *p) {
    VecN<float, V> r;
    if constexpr (V % 4 == 0) {
        for (int j = 0; j < V / 4; j++) {
            const VecN<float, 4> q = load_vec<float, 4>(p + 4 * j);
            for (int k = 0; k < 4; k++) r.v[4 * j + k] = q.v[k];
        }
    } else {
        for (int k = 0; k < V; k++) r.v[k] = p[k];
    }
    return r;
}

// ---- embedding --------------------------------------------------------------------------

template <typename T>
__global__ void embedding_forward_kernel(T *out, const int *tokens, const float *wte, const float *wpe, int T_,
                                         int C, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const long bt = i / C;
        const int c = (int)(i % C), t = (int)(bt % T_);
        out[i] = from_float<T>(wte[(long)tokens[bt] * C + c] + wpe[(long)t * C + c]);
    }
}

// dwte: block (channel slice, vocab row v). The block walks the tokens in order, 256 at a
// time, compacts the positions holding v (ballot + prefix: ascending order kept), and each
// thread adds those rows of its channel. One owner per dwte element: no atomics.
template <typename T>
__global__ void embedding_backward_wte_kernel(float *dwte, const T *dout, const int *tokens, long BT, int C) {
    __shared__ int positions[BLOCK];
    __shared__ int warp_count[WARPS_PER_BLOCK];
    const int v = blockIdx.y;
    const int c = blockIdx.x * BLOCK + threadIdx.x;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float acc = 0.0f;
    for (long i0 = 0; i0 < BT; i0 += BLOCK) {
        const long i = i0 + threadIdx.x;
        const bool match = i < BT && tokens[i] == v;
        const unsigned mask = __ballot_sync(0xffffffffu, match);
        if (lane == 0) warp_count[warp] = __popc(mask);
        __syncthreads();
        int offset = 0, total = 0;
        for (int w = 0; w < WARPS_PER_BLOCK; w++) {
            offset += w < warp ? warp_count[w] : 0;
            total += warp_count[w];
        }
        if (match) positions[offset + __popc(mask & ((1u << lane) - 1u))] = (int)(i - i0);
        __syncthreads();
        if (c < C)
            for (int j = 0; j < total; j++) acc += to_float(dout[(i0 + positions[j]) * C + c]);
        __syncthreads();  // positions / warp_count are rewritten by the next chunk
    }
    if (c < C) dwte[(long)v * C + c] += acc;
}

// dwpe[t,c] += sum_b dout[b,t,c]: one thread per element, b in order.
template <typename T>
__global__ void embedding_backward_wpe_kernel(float *dwpe, const T *dout, int B, int T_, int C) {
    const long n = (long)T_ * C;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int b = 0; b < B; b++) acc += to_float(dout[(long)b * n + i]);
        dwpe[i] += acc;
    }
}

// ---- layernorm --------------------------------------------------------------------------
// One warp per row; two passes over the row for the variance, as the CPU twin. Lane j of the
// row's warp takes the V-element groups j, j+32, ... (V = 1 or vec16<T>(): C a multiple of V,
// rows, weight and bias 16-byte aligned; weight and bias then in 16-byte loads too).

template <typename T, int V>
__global__ void layernorm_forward_kernel(T *out, float *mean, float *rstd, const T *inp, const float *weight,
                                         const float *bias, int N, int C) {
    const long row = (long)blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= N) return;
    const T *x = inp + row * C;
    float sum = 0.0f;
    for (int c0 = lane * V; c0 < C; c0 += 32 * V) {
        const VecN<T, V> xv = load_vec<T, V>(x + c0);
        for (int k = 0; k < V; k++) sum += to_float(xv.v[k]);
    }
    const float m = warp_sum(sum) / C;
    float var = 0.0f;
    for (int c0 = lane * V; c0 < C; c0 += 32 * V) {
        const VecN<T, V> xv = load_vec<T, V>(x + c0);
        for (int k = 0; k < V; k++) {
            const float d = to_float(xv.v[k]) - m;
            var += d * d;
        }
    }
    const float s = 1.0f / sqrtf(warp_sum(var) / C + 1e-5f);
    T *o = out + row * C;
    for (int c0 = lane * V; c0 < C; c0 += 32 * V) {
        const VecN<T, V> xv = load_vec<T, V>(x + c0);
        const VecN<float, V> wv = load_params<V>(weight + c0), bv = load_params<V>(bias + c0);
        VecN<T, V> ov;
        for (int k = 0; k < V; k++) ov.v[k] = from_float<T>((to_float(xv.v[k]) - m) * s * wv.v[k] + bv.v[k]);
        store_vec<T, V>(o + c0, ov);
    }
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = s;
    }
}

template <typename T, int V>
__global__ void layernorm_backward_dinp_kernel(T *dinp, const T *dout, const T *inp, const float *weight,
                                               const float *mean, const float *rstd, int N, int C) {
    const long row = (long)blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= N) return;
    const T *x = inp + row * C, *d = dout + row * C;
    const float m = mean[row], s = rstd[row];
    float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
    for (int c0 = lane * V; c0 < C; c0 += 32 * V) {
        const VecN<T, V> xv = load_vec<T, V>(x + c0), dv = load_vec<T, V>(d + c0);
        const VecN<float, V> wv = load_params<V>(weight + c0);
        for (int k = 0; k < V; k++) {
            const float dnorm = wv.v[k] * to_float(dv.v[k]);
            dnorm_mean += dnorm;
            dnorm_norm_mean += dnorm * (to_float(xv.v[k]) - m) * s;
        }
    }
    dnorm_mean = warp_sum(dnorm_mean) / C;
    dnorm_norm_mean = warp_sum(dnorm_norm_mean) / C;
    T *di = dinp + row * C;
    for (int c0 = lane * V; c0 < C; c0 += 32 * V) {
        const VecN<T, V> xv = load_vec<T, V>(x + c0), dv = load_vec<T, V>(d + c0);
        VecN<T, V> iv = load_vec<T, V>(di + c0);
        const VecN<float, V> wv = load_params<V>(weight + c0);
        for (int k = 0; k < V; k++) {
            const float norm = (to_float(xv.v[k]) - m) * s;
            const float g = (wv.v[k] * to_float(dv.v[k]) - dnorm_mean - norm * dnorm_norm_mean) * s;
            iv.v[k] = from_float<T>(to_float(iv.v[k]) + g);
        }
        store_vec<T, V>(di + c0, iv);
    }
}

// The column reductions (LayerNorm dweight/dbias, matmul dbias) in one launch. Block (x, k) sums
// chunk k = blockIdx.y of the rows, rows [k*rows, (k+1)*rows), over its 32*V adjacent columns
// (lane l: the V columns from 32*V*x + V*l; V = vec16<T>() for 16-byte aligned rows: one 16-byte
// load per lane and row, 512 contiguous bytes per warp; else V = 1). Its warps split the chunk's
// rows (warp w: rows r0 + w, r0 + w + WARPS_PER_BLOCK, ...) and warp 0 adds the warps' sums in
// warp order, into partial[k, c]. The last block of column group x to get there (a ticket per
// column group, counted with atomicAdd and put back to 0 by that block for the next launch) then
// adds the REDUCE_CHUNKS partials of its columns into the output, k = 0, 1, ... in order. Every
// column is summed in the same order for any V and whichever block comes last, so V and the
// schedule change the speed, not the bits; every order depends on the shapes only.
static __device__ __forceinline__ void chunk_rows(int N, long *r0, long *r1, int chunks = REDUCE_CHUNKS) {
    const long rows = (N + chunks - 1) / chunks;
    *r0 = blockIdx.y * rows;
    *r1 = *r0 + rows < N ? *r0 + rows : N;
}

// acc[k] of every warp -> acc[k] of warp 0 = the sum over the warps, in warp order.
template <int K> __device__ __forceinline__ void sum_over_warps(float (&acc)[K]) {
    __shared__ float sums[K][WARPS_PER_BLOCK][32];
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    for (int k = 0; k < K; k++) sums[k][w][lane] = acc[k];
    __syncthreads();
    if (w == 0)
        for (int k = 0; k < K; k++) {
            float s = 0.0f;
            for (int i = 0; i < WARPS_PER_BLOCK; i++) s += sums[k][i][lane];
            acc[k] = s;
        }
}

// After the block's partials are written: true in every thread of the column group's last block.
static __device__ __forceinline__ bool last_block_of_columns(int *tickets) {
    __shared__ bool last;
    __threadfence();   // the partials this thread wrote, visible device-wide before the ticket
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atomicAdd(&tickets[blockIdx.x], 1) == (int)gridDim.y - 1;
        if (last) tickets[blockIdx.x] = 0;
    }
    __syncthreads();
    if (last) __threadfence();   // then the other blocks' partials, seen through their tickets
    return last;
}

// sum_k partial[k, c], k in order; the loads in batches of 16 issued before their adds, so the
// tail of the reduction waits for 4 round trips to L2, not 64. __ldcg: the other blocks' partials
// from L2, never from a stale L1 line.
static __device__ __forceinline__ float sum_chunks(const float *partial, int C, int c) {
    static_assert(REDUCE_CHUNKS % 16 == 0, "sum_chunks: batches of 16 chunks");
    float s = 0.0f;
    for (int k0 = 0; k0 < REDUCE_CHUNKS; k0 += 16) {
        float p[16];
#pragma unroll
        for (int k = 0; k < 16; k++) p[k] = __ldcg(partial + (long)(k0 + k) * C + c);
#pragma unroll
        for (int k = 0; k < 16; k++) s += p[k];
    }
    return s;
}

// out0[c] += sum_k partial0[k, c] (and out1 from partial1) over the block's columns.
static __device__ __forceinline__ void finish_columns(float *out0, float *out1, const float *partial0,
                                                      const float *partial1, int C, int V) {
    const int c0 = blockIdx.x * 32 * V, c1 = c0 + 32 * V < C ? c0 + 32 * V : C;
    for (int c = c0 + (int)threadIdx.x; c < c1; c += BLOCK) {
        out0[c] += sum_chunks(partial0, C, c);
        if (out1) out1[c] += sum_chunks(partial1, C, c);
    }
}

// dweight += sum_n norm[n, c] dout[n, c], dbias += sum_n dout[n, c] (partial_b: the dbias partials).
template <typename T, int V>
__global__ void layernorm_backward_columns_kernel(float *dweight, float *dbias, float *partial_w, float *partial_b,
                                                  int *tickets, const T *dout, const T *inp, const float *mean,
                                                  const float *rstd, int N, int C) {
    const int c = (blockIdx.x * 32 + threadIdx.x % 32) * V, w = threadIdx.x / 32;
    long r0, r1;
    chunk_rows(N, &r0, &r1);
    float acc[2 * V];   // dweight of the V columns, then their dbias
    for (int k = 0; k < 2 * V; k++) acc[k] = 0.0f;
    if (c < C)
#pragma unroll 4
        for (long n = r0 + w; n < r1; n += WARPS_PER_BLOCK) {
            const VecN<T, V> dv = load_vec<T, V>(dout + n * C + c), xv = load_vec<T, V>(inp + n * C + c);
            const float m = mean[n], s = rstd[n];
            for (int k = 0; k < V; k++) {
                const float d = to_float(dv.v[k]);
                acc[k] += (to_float(xv.v[k]) - m) * s * d;
                acc[V + k] += d;
            }
        }
    sum_over_warps(acc);
    if (w == 0 && c < C)
        for (int k = 0; k < V; k++) {
            partial_w[(long)blockIdx.y * C + c + k] = acc[k];
            partial_b[(long)blockIdx.y * C + c + k] = acc[V + k];
        }
    if (last_block_of_columns(tickets)) finish_columns(dweight, dbias, partial_w, partial_b, C, V);
}

// out (C) += sum_n x[n, c].
template <typename T, int V>
__global__ void colsum_kernel(float *out, float *partial, int *tickets, const T *x, int N, int C) {
    const int c = (blockIdx.x * 32 + threadIdx.x % 32) * V, w = threadIdx.x / 32;
    long r0, r1;
    chunk_rows(N, &r0, &r1);
    float acc[V];
    for (int k = 0; k < V; k++) acc[k] = 0.0f;
    if (c < C)
#pragma unroll 4
        for (long n = r0 + w; n < r1; n += WARPS_PER_BLOCK) {
            const VecN<T, V> xv = load_vec<T, V>(x + n * C + c);
            for (int k = 0; k < V; k++) acc[k] += to_float(xv.v[k]);
        }
    sum_over_warps(acc);
    if (w == 0 && c < C)
        for (int k = 0; k < V; k++) partial[(long)blockIdx.y * C + c + k] = acc[k];
    if (last_block_of_columns(tickets)) finish_columns(out, nullptr, partial, nullptr, C, V);
}

// ---- layernorm with the row in registers (LSST_LN=fused; cuda_layernorm_select) -------------
// The kernels above re-read a row from L1/L2 for each pass. These read it once: lane j keeps its
// G groups (V elements from (j + 32 g) V, g < G = ceil(C / (32 V)) <= LN_MAX_GROUPS) in
// registers. The arithmetic and its order are those of the kernels above, so out, mean, rstd and
// dinp have the same bits (for the same V). The backward also sums its chunk's column partials
// of dweight and dbias in the same pass, so x and dout are read once in all (the split form reads
// them again in layernorm_backward_columns_kernel): block k = blockIdx.y of LN_CHUNKS takes rows
// [k rows, (k+1) rows), warp w the rows r0 + w, r0 + w + 8, ...; each lane sums its own columns
// over its rows, the warps' sums are added in warp order into partial[k, c], and
// columns_finish_kernel adds the chunks in order. Every order depends on the shapes only (not on
// V: a column's sums follow the rows, whoever holds it). (A version that also loaded the warp's
// next row during this one's arithmetic and kept the weights in registers took 219 registers at
// C 768, one block an SM, or spilled at the 128 of two; left out, unmeasured.)

// Host side: f(std::integral_constant<int, G>()) for G = ceil(C / (32 V)), the groups of V
// elements a lane holds of a row of C; false (f not called) when that exceeds LN_MAX_GROUPS.
template <int V, typename F> static bool with_row_groups(int C, F f) {
    static_assert(LN_MAX_GROUPS == 4, "with_row_groups: one case per group count");
    switch ((C + 32 * V - 1) / (32 * V)) {
    case 1: f(std::integral_constant<int, 1>()); return true;
    case 2: f(std::integral_constant<int, 2>()); return true;
    case 3: f(std::integral_constant<int, 3>()); return true;
    case 4: f(std::integral_constant<int, 4>()); return true;
    default: return false;
    }
}

template <typename T, int V, int G>
__device__ __forceinline__ void load_row(VecN<T, V> (&r)[G], const T *x, int C, int lane) {
#pragma unroll
    for (int g = 0; g < G; g++)
        if ((lane + 32 * g) * V < C) r[g] = load_vec<T, V>(x + (lane + 32 * g) * V);
        else
            for (int k = 0; k < V; k++) r[g].v[k] = from_float<T>(0.0f);   // never read; defined all the same
}

template <typename T, int V, int G>
__global__ void layernorm_forward_rows_kernel(T *out, float *mean, float *rstd, const T *inp, const float *weight,
                                              const float *bias, int N, int C) {
    const long row = (long)blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= N) return;
    VecN<T, V> xv[G];
    load_row<T, V, G>(xv, inp + row * C, C, lane);
    float sum = 0.0f;
#pragma unroll
    for (int g = 0; g < G; g++)
        if ((lane + 32 * g) * V < C)
            for (int k = 0; k < V; k++) sum += to_float(xv[g].v[k]);
    const float m = warp_sum(sum) / C;
    float var = 0.0f;
#pragma unroll
    for (int g = 0; g < G; g++)
        if ((lane + 32 * g) * V < C)
            for (int k = 0; k < V; k++) {
                const float d = to_float(xv[g].v[k]) - m;
                var += d * d;
            }
    const float s = 1.0f / sqrtf(warp_sum(var) / C + 1e-5f);
    T *o = out + row * C;
#pragma unroll
    for (int g = 0; g < G; g++) {
        const int c0 = (lane + 32 * g) * V;
        if (c0 >= C) continue;
        const VecN<float, V> wv = load_params<V>(weight + c0), bv = load_params<V>(bias + c0);
        VecN<T, V> ov;
        for (int k = 0; k < V; k++) ov.v[k] = from_float<T>((to_float(xv[g].v[k]) - m) * s * wv.v[k] + bv.v[k]);
        store_vec<T, V>(o + c0, ov);
    }
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = s;
    }
}

// One row of the fused backward: dinp += the row's input gradient (as layernorm_backward_dinp_kernel),
// acc_w += norm * dout, acc_b += dout over the lane's columns.
template <typename T, int V, int G>
__device__ __forceinline__ void layernorm_backward_row(T *di, const VecN<T, V> (&xv)[G], const VecN<T, V> (&dv)[G],
                                                       const float *weight, float m, float s, int C, int lane,
                                                       float (&acc_w)[G][V], float (&acc_b)[G][V]) {
    float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
#pragma unroll
    for (int g = 0; g < G; g++)
        if ((lane + 32 * g) * V < C) {
            const VecN<float, V> wv = load_params<V>(weight + (lane + 32 * g) * V);
            for (int k = 0; k < V; k++) {
                const float dnorm = wv.v[k] * to_float(dv[g].v[k]);
                dnorm_mean += dnorm;
                dnorm_norm_mean += dnorm * (to_float(xv[g].v[k]) - m) * s;
            }
        }
    dnorm_mean = warp_sum(dnorm_mean) / C;
    dnorm_norm_mean = warp_sum(dnorm_norm_mean) / C;
#pragma unroll
    for (int g = 0; g < G; g++) {
        const int c0 = (lane + 32 * g) * V;
        if (c0 >= C) continue;
        VecN<T, V> iv = load_vec<T, V>(di + c0);
        const VecN<float, V> wv = load_params<V>(weight + c0);
        for (int k = 0; k < V; k++) {
            const float d = to_float(dv[g].v[k]), norm = (to_float(xv[g].v[k]) - m) * s;
            iv.v[k] = from_float<T>(to_float(iv.v[k]) + (wv.v[k] * d - dnorm_mean - norm * dnorm_norm_mean) * s);
            acc_w[g][k] += norm * d;
            acc_b[g][k] += d;
        }
        store_vec<T, V>(di + c0, iv);
    }
}

// partial[blockIdx.y, c] = sum over the block's warps, in warp order, of acc[g][k] (column
// (lane + 32 g) V + k of lane `lane` of each warp).
template <int V, int G>
__device__ __forceinline__ void store_chunk_sums(float *partial, const float (&acc)[G][V], int C) {
    __shared__ float sums[WARPS_PER_BLOCK][32 * V];
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
#pragma unroll
    for (int g = 0; g < G; g++) {
        for (int k = 0; k < V; k++) sums[w][lane * V + k] = acc[g][k];
        __syncthreads();
        for (int j = threadIdx.x; j < 32 * V; j += BLOCK) {
            float t = 0.0f;
            for (int i = 0; i < WARPS_PER_BLOCK; i++) t += sums[i][j];
            if (32 * V * g + j < C) partial[(long)blockIdx.y * C + 32 * V * g + j] = t;
        }
        __syncthreads();   // sums is rewritten for the next group
    }
}

template <typename T, int V, int G>
__global__ void __launch_bounds__(BLOCK, 2) layernorm_backward_fused_kernel(T *dinp, float *partial_w, float *partial_b, const T *dout,
                                                const T *inp, const float *weight, const float *mean,
                                                const float *rstd, int N, int C) {
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    long r0, r1;
    chunk_rows(N, &r0, &r1, (int)gridDim.y);
    float acc_w[G][V], acc_b[G][V];
#pragma unroll
    for (int g = 0; g < G; g++)
        for (int k = 0; k < V; k++) acc_w[g][k] = acc_b[g][k] = 0.0f;
    for (long n = r0 + w; n < r1; n += WARPS_PER_BLOCK) {
        VecN<T, V> xv[G], dv[G];
        load_row<T, V, G>(xv, inp + n * C, C, lane);
        load_row<T, V, G>(dv, dout + n * C, C, lane);
        layernorm_backward_row<T, V, G>(dinp + n * C, xv, dv, weight, mean[n], rstd[n], C, lane, acc_w, acc_b);
    }
    store_chunk_sums<V, G>(partial_w, acc_w, C);
    store_chunk_sums<V, G>(partial_b, acc_b, C);
}

// out0[c] += sum_k partial0[k, c] (and out1 from partial1, if given), k < chunks: block x takes the
// columns [32 x, 32 x + 32); warp w sums the chunks w, w + 8, ... in order, then the warps' sums
// are added in warp order.
__global__ void columns_finish_kernel(float *out0, float *out1, const float *partial0, const float *partial1,
                                      int chunks, int C) {
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, c = blockIdx.x * 32 + lane;
    float acc[2] = {0.0f, 0.0f};
    if (c < C)
#pragma unroll 8
        for (int k = w; k < chunks; k += WARPS_PER_BLOCK) {
            acc[0] += partial0[(long)k * C + c];
            if (partial1) acc[1] += partial1[(long)k * C + c];
        }
    sum_over_warps(acc);
    if (w == 0 && c < C) {
        out0[c] += acc[0];
        if (out1) out1[c] += acc[1];
    }
}

// ---- GELU (tanh approximation, as GPT-2) / residual ---------------------------------------

#define GELU_SCALE 0.7978845608028654f  // sqrt(2/pi)
#define GELU_CUBE 0.044715f

// tanh: the hardware approximation (max error ~2^-11, below bf16's 2^-9) for bf16 tensors,
// tanhf for fp32 (the exact twin). The CPU emulator of tests/gpu takes tanhf.
template <typename T> __device__ __forceinline__ float gelu_tanh(float u) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
    if (sizeof(T) == 2) {
        float t;
        asm("tanh.approx.f32 %0, %1;" : "=f"(t) : "f"(u));
        return t;
    }
#endif
    return tanhf(u);
}
template <typename T> __device__ __forceinline__ float gelu_value(float x) {
    return 0.5f * x * (1.0f + gelu_tanh<T>(GELU_SCALE * (x + GELU_CUBE * x * x * x)));
}
template <typename T> __device__ __forceinline__ float gelu_grad(float x) {
    const float th = gelu_tanh<T>(GELU_SCALE * (x + GELU_CUBE * x * x * x));
    const float du = GELU_SCALE * (1.0f + 3.0f * GELU_CUBE * x * x);
    return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du;
}

// Groups of V elements (V = 1, or vec16<T>() for 16-byte aligned tensors), then the n % V tail.
template <typename T, int V> __global__ void gelu_forward_kernel(T *out, const T *inp, long n) {
    const long nv = n / V, stride = (long)gridDim.x * blockDim.x, first = blockIdx.x * (long)blockDim.x + threadIdx.x;
    for (long i = first; i < nv; i += stride) {
        const VecN<T, V> x = load_vec<T, V>(inp + i * V);
        VecN<T, V> y;
        for (int k = 0; k < V; k++) y.v[k] = from_float<T>(gelu_value<T>(to_float(x.v[k])));
        store_vec<T, V>(out + i * V, y);
    }
    for (long i = nv * V + first; i < n; i += stride) out[i] = from_float<T>(gelu_value<T>(to_float(inp[i])));
}

// ACCUM: dinp += gelu'(inp) dout (the backward contract); otherwise dinp = gelu'(inp) dout, and
// dinp may be dout itself (each element is read before the same thread writes it).
template <typename T, int V, bool ACCUM>
__device__ __forceinline__ void gelu_backward_body(T *dinp, const T *inp, const T *dout, long n) {
    const long nv = n / V, stride = (long)gridDim.x * blockDim.x, first = blockIdx.x * (long)blockDim.x + threadIdx.x;
    for (long i = first; i < nv; i += stride) {
        const VecN<T, V> x = load_vec<T, V>(inp + i * V), d = load_vec<T, V>(dout + i * V);
        VecN<T, V> g = ACCUM ? load_vec<T, V>(dinp + i * V) : d;
        for (int k = 0; k < V; k++)
            g.v[k] = from_float<T>((ACCUM ? to_float(g.v[k]) : 0.0f) + gelu_grad<T>(to_float(x.v[k])) * to_float(d.v[k]));
        store_vec<T, V>(dinp + i * V, g);
    }
    for (long i = nv * V + first; i < n; i += stride)
        dinp[i] = from_float<T>((ACCUM ? to_float(dinp[i]) : 0.0f) + gelu_grad<T>(to_float(inp[i])) * to_float(dout[i]));
}
template <typename T, int V> __global__ void gelu_backward_kernel(T *dinp, const T *inp, const T *dout, long n) {
    gelu_backward_body<T, V, true>(dinp, inp, dout, n);
}
// d = gelu'(inp) d, in place: the GELU's backward after a product that wrote d (matmul.cu).
template <typename T, int V> __global__ void gelu_backward_inplace_kernel(T *d, const T *inp, long n) {
    gelu_backward_body<T, V, false>(d, inp, d, n);
}

template <typename T, int V> __global__ void residual_forward_kernel(T *out, const T *a, const T *b, long n) {
    const long nv = n / V, stride = (long)gridDim.x * blockDim.x, first = blockIdx.x * (long)blockDim.x + threadIdx.x;
    for (long i = first; i < nv; i += stride) {
        const VecN<T, V> x = load_vec<T, V>(a + i * V), y = load_vec<T, V>(b + i * V);
        VecN<T, V> z;
        for (int k = 0; k < V; k++) z.v[k] = from_float<T>(to_float(x.v[k]) + to_float(y.v[k]));
        store_vec<T, V>(out + i * V, z);
    }
    for (long i = nv * V + first; i < n; i += stride) out[i] = from_float<T>(to_float(a[i]) + to_float(b[i]));
}

// ---- softmax cross-entropy ----------------------------------------------------------------
// One warp per row; max, sum and lse in fp32 with butterfly (fixed-order) reductions.

template <typename T>
__device__ __forceinline__ float row_logsumexp(const T *row, int V, int lane) {
    float mx = -INFINITY;
    for (int j = lane; j < V; j += 32) mx = fmaxf(mx, to_float(row[j]));
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int j = lane; j < V; j += 32) sum += expf(to_float(row[j]) - mx);
    return mx + logf(warp_sum(sum));
}

template <typename T>
__global__ void softmax_xent_forward_kernel(float *losses, const T *logits, const int *targets, int N, int V) {
    const long n = (long)blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (n >= N) return;
    const int t = targets[n];
    if (t < 0) {
        if (lane == 0) losses[n] = 0.0f;
        return;
    }
    const T *row = logits + n * V;
    const float lse = row_logsumexp(row, V, lane);
    if (lane == 0) losses[n] = lse - to_float(row[t]);
}

template <typename T>
__global__ void softmax_xent_forward_backward_kernel(float *losses, T *logits, const int *targets, int N, int V,
                                                     float dloss) {
    const long n = (long)blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (n >= N) return;
    T *row = logits + n * V;
    const int t = targets[n];
    if (t < 0) {
        for (int j = lane; j < V; j += 32) row[j] = from_float<T>(0.0f);
        if (lane == 0) losses[n] = 0.0f;
        return;
    }
    const float lse = row_logsumexp(row, V, lane);
    const float target_logit = to_float(row[t]);
    __syncwarp();  // every lane has read the row before any lane overwrites it
    for (int j = lane; j < V; j += 32) {
        float g = dloss * expf(to_float(row[j]) - lse);
        if (j == t) g -= dloss;
        row[j] = from_float<T>(g);
    }
    if (lane == 0) losses[n] = lse - target_logit;
}

// ---- optimizer ----------------------------------------------------------------------------

// grad_scale: the gradient clipping factor (1: none), applied as the clip pass would have (g * s
// rounded to fp32 on its own, then used), so the results are those of scale_kernel + this with 1.
__global__ void adamw_kernel(float *params, bf16_t *params_bf16, const float *grads, float *m, float *v, long n,
                             float lr, float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                             float c1, float c2) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const float g = grads[i] * grad_scale;
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        const float mhat = mi * c1, vhat = vi * c2;
        float p = params[i];
        p -= lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * p);
        params[i] = p;
        if (params_bf16) params_bf16[i] = __float2bfloat16_rn(p);
    }
}

__global__ void copy_to_bf16_kernel(bf16_t *dst, const float *src, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

// ---- sequence-group rows: the layouts of the NCCL exchanges ------------------------------
// xchg (n, B, T, W): the n ranks' rows in group-rank order (what an all-gather returns, what a
// reduce-scatter takes); full (B, S = n*T, W) in global order. Row t of rank r is the global
// position pos_of_rank[r*T + t]. Element i of xchg <-> this element of full:
__device__ __forceinline__ long seq_full_index(long i, const int *pos_of_rank, int B, int T_, int S, int W) {
    const long row = i / W, rb = row / T_;
    const int w = (int)(i - row * W), t = (int)(row - rb * T_), b = (int)(rb % B), r = (int)(rb / B);
    return ((long)b * S + pos_of_rank[(long)r * T_ + t]) * W + w;
}

__global__ void seq_place_rows_kernel(bf16_t *full, const bf16_t *xchg, const int *pos_of_rank, int B, int T_, int S,
                                      int W, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        full[seq_full_index(i, pos_of_rank, B, T_, S, W)] = xchg[i];
}

__global__ void seq_take_rows_kernel(float *xchg, const bf16_t *full, const int *pos_of_rank, int B, int T_, int S,
                                     int W, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        xchg[i] = __bfloat162float(full[seq_full_index(i, pos_of_rank, B, T_, S, W)]);
}

// Block-wide sum in double with a fixed order: warps butterfly, then warp 0 adds the warp sums.
__device__ double block_sum_d(double v) {
    __shared__ double warp_sums[WARPS_PER_BLOCK];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    v = warp_sum_d(v);
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    double total = 0.0;
    if (threadIdx.x == 0)
        for (int w = 0; w < WARPS_PER_BLOCK; w++) total += warp_sums[w];
    return total;  // valid in thread 0
}

// Block k's share of a sum of squares of x (n floats): chunk k of SUMSQ_BLOCKS (a function of n
// only), each thread its elements in order, the block's threads by block_sum_d. Unrolled so that
// a thread has 4 loads in flight (the adds stay in order: the same bits).
__device__ double sum_squares_chunk(const float *x, long n, int k) {
    const long chunk = (n + SUMSQ_BLOCKS - 1) / SUMSQ_BLOCKS;
    const long i0 = k * chunk, i1 = i0 + chunk < n ? i0 + chunk : n;
    double s = 0.0;
#pragma unroll 4
    for (long i = i0 + threadIdx.x; i < i1; i += BLOCK) s += (double)x[i] * x[i];
    return block_sum_d(s);
}

// Pass 1: block k sums chunk k of x.
__global__ void sum_squares_partial_kernel(double *partial, const float *x, long n) {
    const double s = sum_squares_chunk(x, n, blockIdx.x);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Pass 1 for several tensors of one array in one launch (the gradient norm's per-tensor sums):
// tensor j = x[off[j] .. off[j + 1]), blockIdx.y = j; its partials at partial + j * SUMSQ_BLOCKS,
// the bits of sum_squares_partial_kernel on that tensor alone.
struct SumsqTensors {
    long off[SUMSQ_MAX_TENSORS + 1];
};
__global__ void sum_squares_tensors_kernel(double *partial, const float *x, SumsqTensors t) {
    const int j = blockIdx.y;
    const double s = sum_squares_chunk(x + t.off[j], t.off[j + 1] - t.off[j], blockIdx.x);
    if (threadIdx.x == 0) partial[(long)j * SUMSQ_BLOCKS + blockIdx.x] = s;
}

// Pass 2: block j adds the SUMSQ_BLOCKS partials of sum j (at partial + j * SUMSQ_BLOCKS) with the
// same fixed tree into result[j].
__global__ void sum_squares_final_kernel(double *result, const double *partial) {
    partial += (long)blockIdx.x * SUMSQ_BLOCKS;
    double s = 0.0;
    for (int k = threadIdx.x; k < SUMSQ_BLOCKS; k += BLOCK) s += partial[k];
    s = block_sum_d(s);
    if (threadIdx.x == 0) result[blockIdx.x] = s;
}

__global__ void scale_kernel(float *x, long n, float s) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) x[i] *= s;
}

