// Private to kernels/cuda: device helpers shared by the kernels (no library headers, so the
// CPU emulator of tests/gpu can include it too).
#pragma once
#include <cuda_bf16.h>

// Row chunks of the column reductions (a multiple of 16: layers_kernels.h sum_chunks): a constant,
// so results depend only on shapes.
enum { REDUCE_CHUNKS = 64 };
// Row chunks of the LayerNorm backward with its column sums in the same pass (LSST_LN=fused): 256
// blocks of 8 warps, about two per SM of an H100 (a constant too; a multiple of 8).
enum { LN_CHUNKS = 256 };
// The widest row a LayerNorm kernel keeps in registers: LN_MAX_GROUPS groups of V elements a lane.
enum { LN_MAX_GROUPS = 4 };
// Blocks of the sum of squares' first pass (constant for the same reason).
enum { SUMSQ_BLOCKS = 256 };
// Tensors one launch of cuda_sum_squares_tensors takes.
enum { SUMSQ_MAX_TENSORS = 32 };

// ---- device helpers -------------------------------------------------------------------------
template <typename T> __device__ __forceinline__ float to_float(T x);
template <> __device__ __forceinline__ float to_float<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// Butterfly reductions: every lane ends with the result, and the order of additions is fixed.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
