// Device code of the CUDA attention (kernels/cuda/attention.cu): the kernels and their helpers,
// in a header so that tests/gpu/emulate_attention.cpp can run the very same code on the CPU.
// See attention.cu for the design and the fragment layouts.
#pragma once
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

#include "device_common.h"

typedef __nv_bfloat16 bf16_t;

#define LOG2E_F 1.44269504088896341f
#define LN2_F 0.693147180559945309f

// Smallest query block of any backward variant: the size of the position-range table.
enum { MIN_QBLOCK = 16 };

// The tensor-core configurations, in one list for attention.cu's tables and for the CPU
// emulator. The first entry of a head size is its default (variant 0) where the wgmma kernels do
// not run; where they do (sm_90, sm_90a build), its first wgmma forward and first wgmma split
// backward are the defaults (cuda_attention_apply_env).
//   forward  (HS, MT, NW, BC, Q_REGS, WG): NW warps x 16*MT query rows each (block of 16*MT*NW
//            queries), key blocks of BC; Q fragments in registers (Q_REGS) or re-read from
//            shared memory per key block (wgmma: S read from the shared Q tile by the wgmma
//            itself); WG 0: mma.sync, 1: wgmma, 2: wgmma with the next key
//            block's scores in flight during the softmax (attn_fwd_kernel).
//   backward (HS, NW, BQ, KV_REGS, NWQ, BK, QO_REGS, WG): dK/dV kernel with 16*NW keys per CTA and
//            query blocks of BQ (K, V fragments in registers if KV_REGS); dQ kernel with 16*NWQ
//            queries per CTA and key blocks of BK (Q, dO fragments in registers if QO_REGS).
//            NWQ = 0: no dQ kernel, the dK/dV kernel computes dQ too and the key blocks add their
//            partials in key-block order (DQ_ORDERED; QO_REGS unused; BK > 1: in BK chains, see
//            attn_bwd_dkdv_kernel's CHAINS); NWQ = -1: the same with
//            the partials added by fp32 atomics, then written into dq by attn_dq_finish_kernel
//            (DQ_ATOMIC: FlashAttention-2's way; the sum order varies from run to run, so not
//            deterministic: never a default, LSST_ATTN_BWD=atomic); NWQ = -2 (-3): the partials
//            added as 64-bit (32-bit) fixed-point integers by integer atomics, whose sum does
//            not depend on the order (DQ_FIXED, deterministic; LSST_ATTN_BWD=fixed); -4 (-5):
//            the same through shared memory, the adds over whole sectors; -6 (-7): through
//            shared memory, one bulk reduction a query block.
//   backward WG 0: mma.sync, 1: wgmma, 2: wgmma with the dQ kernel pipelined (attn_bwd_dq_kernel),
//            3: both kernels pipelined (attn_bwd_dkdv_kernel too).
//   wgmma (WG >= 1): the products as Hopper wgmma, one per warpgroup of 4 warps and 64 rows
//   (sm_90a only: attention.cu skips these variants elsewhere; hs 64 or 128; fused: hs 64, one
//   or two warpgroups, query blocks of 64).
// Measured (tests/bench/gpu/attn_bench.cu --variants, RESULTS.md): each kind's first wgmma
// entry is its fastest correct one on an H200 (2026-11-27): at hs 64 the forward with 4 warps and
// 128-key blocks, the split backward with K, V read from shared memory by the wgmma (3 CTAs an
// SM) and the pipelined dQ kernel (+11-16% over K, V in registers), the fp32-atomic backward
// with 2 warpgroups, the fixed-point one with one bulk reduction a query block (64-bit); at
// hs 128 the pipelined forward (+5-7% over the plain one) and the backward with 64-query blocks
// (+16-18% over 32, despite 20 bytes of spills). The fused backwards in key-block order are 3x
// slower than the split ones at T >= 4k (that order serializes the CTAs); the fixed-point ones
// 1.4x (the bulk form) to 2.7x. The mma.sync defaults are those an H200 measured fastest
// (2026-11-26: hs 64 backward with 4 warps 7-10% ahead of 8). Left out as
// miscompiled (wrong on the H100): the non-pipelined wgmma forward and dQ kernels at hs 64 with
// 64-key blocks and Q / dO in registers (see attn_fwd_kernel); their forms with Q / dO from
// shared memory close the lists. Left out for spills (ptxas -v, sm_90a):
// the pipelined forward with 1 warpgroup and 128-key blocks (48 bytes), the pipelined dQ kernel
// at hs 128 with 64-key blocks (280), the pipelined dK/dV kernel at hs 128 (176). No wgmma
// variant listed spills, but the hs-128 backward with 64-query blocks (20 bytes) and the hs-64
// dK/dV kernel with K, V from shared memory (24, at 3 CTAs an SM); several
// mma.sync kernels at 255 registers spill 4-60 bytes (the fused dK/dV ones among them), as built
// for sm_80 too. Every variant listed passed test_cuda_kernels on an H200 (2026-11-27).
#define ATTN_FWD_VARIANTS(X)                                                                    \
    X(16, 1, 4, 64, true, 0) X(32, 1, 4, 64, true, 0)                                           \
    X(64, 2, 4, 64, true, 0) X(64, 1, 8, 64, true, 0) X(64, 1, 4, 64, true, 0)                  \
    X(128, 1, 8, 64, true, 0) X(128, 1, 4, 64, true, 0) X(128, 1, 8, 32, true, 0)               \
    X(64, 2, 8, 64, true, 0) X(64, 2, 4, 32, true, 0) X(64, 2, 4, 64, false, 0)                 \
    X(128, 2, 4, 32, false, 0)                                                                  \
    X(64, 1, 4, 128, true, 1) X(64, 1, 8, 128, true, 1)                                         \
    X(128, 1, 4, 64, true, 2) X(128, 1, 4, 64, true, 1) X(128, 1, 8, 64, true, 1)               \
    X(64, 1, 4, 64, true, 2) X(64, 1, 8, 64, true, 2) X(64, 1, 8, 128, true, 2)                 \
    X(128, 1, 8, 64, true, 2)                                                                   \
    X(64, 1, 4, 64, false, 1) X(64, 1, 8, 64, false, 1)
#define ATTN_BWD_VARIANTS(X)                                                                    \
    X(16, 4, 64, true, 4, 64, true, 0) X(32, 4, 64, true, 4, 64, true, 0)                       \
    X(64, 4, 64, true, 4, 64, true, 0) X(64, 8, 64, true, 8, 64, true, 0)                       \
    X(128, 8, 32, false, 8, 64, false, 0) X(128, 4, 32, false, 4, 32, false, 0)                 \
    X(64, 4, 64, true, 0, 0, false, 0) X(64, 8, 64, true, 0, 0, false, 0)                       \
    X(128, 4, 32, false, 0, 0, false, 0)                                                        \
    X(128, 4, 16, false, 4, 32, false, 0) X(128, 4, 16, false, 0, 0, false, 0)                  \
    X(128, 8, 32, false, 0, 0, false, 0) X(64, 4, 32, true, 0, 0, false, 0)                     \
    X(64, 8, 32, true, 0, 0, false, 0)                                                          \
    X(64, 4, 64, true, 0, 0, false, 1)                                                          \
    X(128, 4, 64, false, 4, 64, false, 1) X(128, 4, 32, false, 4, 64, false, 1)                 \
    X(64, 4, 64, false, 4, 64, true, 2)                                                         \
    X(64, 4, 64, true, 4, 64, true, 2) X(64, 8, 64, true, 8, 64, true, 2)                       \
    X(128, 4, 32, false, 4, 32, false, 2)                                                       \
    X(64, 4, 32, true, 4, 64, true, 3) X(64, 8, 32, true, 8, 64, true, 3)                       \
    X(64, 4, 64, true, 4, 64, false, 1) X(64, 8, 64, true, 8, 64, false, 1)                     \
    X(64, 8, 64, true, -1, 0, false, 1)                                                         \
    X(64, 4, 64, true, -1, 0, false, 1) X(64, 4, 64, true, -1, 0, false, 0)                      \
    X(128, 4, 32, false, -1, 0, false, 0)                                                       \
    X(64, 4, 64, true, 0, 4, false, 1) X(64, 4, 64, true, 0, 16, false, 1)                     \
    X(64, 4, 64, true, -6, 0, false, 1)                                                         \
    X(64, 4, 64, true, -2, 0, false, 1) X(64, 4, 64, true, -3, 0, false, 1)                     \
    X(64, 4, 64, true, -2, 0, false, 0) X(128, 4, 32, false, -2, 0, false, 0)                  \
    X(64, 4, 64, true, -4, 0, false, 1) X(64, 4, 64, true, -5, 0, false, 1)                     \
    X(64, 8, 64, true, -2, 0, false, 1)                                                         \
    X(64, 8, 64, true, -4, 0, false, 1) X(64, 8, 64, true, -5, 0, false, 1)                     \
    X(64, 8, 64, true, -6, 0, false, 1)                                                         \
    X(64, 8, 64, true, -7, 0, false, 1)                                                         \
    X(64, 8, 64, false, 8, 64, true, 2)                                                         \
    X(64, 8, 64, false, -1, 0, false, 1) X(64, 8, 64, false, -2, 0, false, 1)                   \
    X(64, 4, 64, false, -6, 0, false, 1) X(64, 8, 64, false, -6, 0, false, 1)

// How a backward variant computes dQ (from its NWQ): its own kernel, in the dK/dV kernel summed in
// key-block order, or in the dK/dV kernel summed by fp32 atomics, or by integer atomics on fixed
// point (NWQ -2: 64-bit, -3: 32-bit sums; see "fixed-point dQ sums" below).
enum { DQ_SPLIT = 0, DQ_ORDERED = 1, DQ_ATOMIC = 2, DQ_FIXED = 3 };
constexpr int dq_kind(int nwq) {
    return nwq > 0 ? DQ_SPLIT : nwq == 0 ? DQ_ORDERED : nwq == -1 ? DQ_ATOMIC : DQ_FIXED;
}
// The fixed-point kinds (fixed_dq_add), 64 / 32 bits: NWQ -2 / -3 add from the MMA fragments
// (mode 0), -4 / -5 through shared memory by reds over whole sectors (mode 1), -6 / -7 through
// shared memory by one bulk reduction a query block (mode 2).
constexpr int dq_fix_bits(int nwq) { return nwq < -1 ? (nwq % 2 == 0 ? 64 : 32) : 0; }
constexpr int dq_fix_mode(int nwq) { return nwq <= -6 ? 2 : nwq <= -4 ? 1 : 0; }
// Bytes of one element of the dQ sums (dq_acc): fp32, or the fixed-point integers.
constexpr int dq_acc_bytes(int nwq) { return dq_fix_bits(nwq) == 64 ? 8 : 4; }
// Shared memory of the staged adds: a query block's integer partials (and 16 bytes to align them).
constexpr int dq_stage_bytes(int nwq, int bq, int hs) {
    return dq_fix_mode(nwq) ? bq * hs * dq_acc_bytes(nwq) + 16 : 0;
}
// The chains an ordered variant sums in (its BK; 1 for the other kinds), and the slots of fp32 dQ
// sums a variant needs (none for a split one, one a chain otherwise).
constexpr int dq_chains(int nwq, int bk) { return nwq == 0 && bk > 1 ? bk : 1; }
constexpr int dq_slots(int nwq, int bk) { return nwq > 0 ? 0 : dq_chains(nwq, bk); }

// ============================================================================================
// Shared by both implementations: D = rowsum(dout * out), per (b, h, t).
// ============================================================================================

// ---- fixed-point dQ sums (DQ_FIXED) ----------------------------------------------------------
// Row r's dQ (before the 1/sqrt(hs) scale) is sum_j dS_rj K_j with dS_rj = P_rj (dP_rj - D_r),
// dP_rj = dO_r . V_j, D_r = dO_r . O_r, sum_j P_rj = 1 and |O_r| <= max_j |V_j| (O_r is a mean of
// the V_j), so every element of it, and of any partial sum over a subset of the keys, is at most
// 2 |dO_r| Vmax Kmax in magnitude (Vmax = max_j |V_j|, Kmax = max |K_jc| over the head's keys).
// The bound used is twice that (room for the bf16 roundings of dS and O): bound_r < 2^e_r, and
// the partials are added as integers in units of 2^(e_r - P), P = BITS - 2, so every partial and
// the row's final sum stay below 2^(P - 1) units: no final sum overflows, and integer adds wrap
// modulo 2^BITS, so the intermediate sums do not matter either: the result has the same bits
// whatever the order of the adds. 64-bit sums keep each partial to fp32 precision (24 bits of 62)
// however loose the bound; 32-bit ones keep 30 bits below the bound. A partial beyond 2^P units
// (a NaN, an inf: the bound cannot fail otherwise) marks the row, whose dq becomes NaN.
// e_r is clamped below at P - 126, so that 2^(P - e_r) is a normal float.

// 2^k as a float for k in [-126, 127] (a normal float: built from its exponent bits, exact).
__device__ __forceinline__ float exp2_int(int k) { return __uint_as_float((unsigned)(127 + k) << 23); }
// e_r of a finite bound (above), for p = P.
__device__ __forceinline__ int attn_fix_exponent(float bound, int p) {
    int e = 0;
    frexpf(bound, &e);   // bound = m 2^e, m in [0.5, 1); 0: e = 0
    return e > p - 126 ? e : p - 126;
}

// kv_max[2 (b NH + h)] = Kmax, [.. + 1] = Vmax of head (b, h) (above), as the bits of non-negative
// floats, whose unsigned order is their order (a NaN above inf: it propagates): atomicMax, exact
// and order-independent; kv_max zeroed before. Grid (B NH, any), a warp per key row.
__device__ __forceinline__ float nan_max(float a, float b) { return b > a || b != b ? b : a; }
template <typename T>
__global__ void attn_kv_bound_kernel(unsigned *kv_max, const T *k, const T *v, int Tk, int NH, int hs, int ldkv) {
    const int bh = blockIdx.x, b = bh / NH, h = bh % NH, lane = threadIdx.x % 32, nw = blockDim.x / 32;
    float km = 0.0f, vm = 0.0f;
    for (int j = blockIdx.y * nw + threadIdx.x / 32; j < Tk; j += gridDim.y * nw) {
        const long row = ((long)b * Tk + j) * ldkv + (long)h * hs;
        float ss = 0.0f;
        for (int c = lane; c < hs; c += 32) {
            const float x = to_float(v[row + c]);
            km = nan_max(km, fabsf(to_float(k[row + c])));
            ss += x * x;
        }
        vm = nan_max(vm, sqrtf(warp_sum(ss)));
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) km = nan_max(km, __shfl_xor_sync(0xffffffffu, km, o));
    if (lane == 0) {
        atomicMax(kv_max + 2 * bh, __float_as_uint(km) & 0x7fffffffu);
        atomicMax(kv_max + 2 * bh + 1, __float_as_uint(vm) & 0x7fffffffu);
    }
}

// D = rowsum(dout * out) per (b, h, t); with row_exp (fixed-point sums, fix_p = P above, kv_max
// from attn_kv_bound_kernel): also the row's exponent e_r and whether its bound is finite
// (row_bad 0) or not (1: dq NaN).
template <typename T>
__global__ void attn_dsum_kernel(float *dsum, const T *dout, const T *out, int B, int Tq, int NH, int hs,
                                 int *row_exp = NULL, int *row_bad = NULL, const unsigned *kv_max = NULL,
                                 int fix_p = 0) {
    const long idx = (long)blockIdx.x * 8 + threadIdx.x / 32;  // (b * NH + h) * Tq + t
    const int lane = threadIdx.x % 32;
    if (idx >= (long)B * NH * Tq) return;
    const int t = (int)(idx % Tq), h = (int)(idx / Tq % NH), b = (int)(idx / Tq / NH);
    const long row = ((long)b * Tq + t) * NH * hs + (long)h * hs;
    float s = 0.0f, ss = 0.0f;
    for (int c = lane; c < hs; c += 32) {
        const float d = to_float(dout[row + c]);
        s += d * to_float(out[row + c]);
        ss += d * d;
    }
    s = warp_sum(s);
    if (lane == 0) dsum[idx] = s;
    if (!row_exp) return;
    ss = warp_sum(ss);
    const long bh = idx / Tq;
    const float bound = 4.0f * sqrtf(ss) * __uint_as_float(kv_max[2 * bh]) * __uint_as_float(kv_max[2 * bh + 1]);
    if (lane == 0) {
        const bool ok = isfinite(bound);
        row_exp[idx] = ok ? attn_fix_exponent(bound, fix_p) : 0;
        row_bad[idx] = !ok;
    }
}

// qmax[qb] = the largest visible key index of query block qb (min(q_pos, Tk - 1) over its rows),
// -1 when no row sees a key; qmin[qb] = the smallest position of its rows (-1 for a block cut
// short by Tq: its missing rows see nothing), so keys <= qmin[qb] are visible to all BQ rows.
__global__ void attn_qblock_max_kernel(int *qmax, int *qmin, const int *q_pos, int Tq, int Tk, int BQ) {
    const int qb = blockIdx.x * blockDim.x + threadIdx.x;
    if (qb * BQ >= Tq) return;
    int mx = -1, mn = qb * BQ + BQ <= Tq ? INT_MAX : -1;
    for (int r = qb * BQ; r < Tq && r < qb * BQ + BQ; r++) {
        mx = max(mx, min(q_pos[r], Tk - 1));
        mn = min(mn, q_pos[r]);
    }
    qmax[qb] = mx;
    qmin[qb] = mn;
}

// ============================================================================================
// CUDA-core implementation (any arch, any hs <= 256). One warp per row; lane owns columns
// lane, lane + 32, ...
// ============================================================================================

enum { GEN_WARPS = 4, GEN_MAX_PER_LANE = 8 };

template <typename T>
__device__ __forceinline__ float warp_dot(const float (&a)[GEN_MAX_PER_LANE], const T *row, int hs, int lane) {
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < GEN_MAX_PER_LANE; i++) {
        const int c = lane + 32 * i;
        if (c < hs) s += a[i] * to_float(row[c]);
    }
    return warp_sum(s);
}

template <typename T>
__device__ __forceinline__ void load_row(float (&a)[GEN_MAX_PER_LANE], const T *row, int hs, int lane) {
#pragma unroll
    for (int i = 0; i < GEN_MAX_PER_LANE; i++) {
        const int c = lane + 32 * i;
        a[i] = c < hs ? to_float(row[c]) : 0.0f;
    }
}

template <typename T>
__global__ void gen_forward_kernel(T *out, float *lse, const T *q, const T *k, const T *v, const int *q_pos, int B,
                                   int Tq, int Tk, int NH, int hs, int ldq, int ldkv, float scale) {
    const long idx = (long)blockIdx.x * GEN_WARPS + threadIdx.x / 32;  // (b * NH + h) * Tq + t
    const int lane = threadIdx.x % 32;
    if (idx >= (long)B * NH * Tq) return;
    const int t = (int)(idx % Tq), h = (int)(idx / Tq % NH), b = (int)(idx / Tq / NH);
    float qv[GEN_MAX_PER_LANE], o[GEN_MAX_PER_LANE] = {};
    load_row(qv, q + ((long)b * Tq + t) * ldq + (long)h * hs, hs, lane);
    const int lim = min(q_pos[t], Tk - 1);
    float m = -INFINITY, l = 0.0f;
    for (int j = 0; j <= lim; j++) {
        const long krow = ((long)b * Tk + j) * ldkv + (long)h * hs;
        const float s = warp_dot(qv, k + krow, hs, lane) * scale;
        const float m_new = fmaxf(m, s);
        const float alpha = expf(m - m_new), p = expf(s - m_new);  // m = -inf: alpha = 0
        l = l * alpha + p;
#pragma unroll
        for (int i = 0; i < GEN_MAX_PER_LANE; i++) {
            const int c = lane + 32 * i;
            o[i] = o[i] * alpha + (c < hs ? p * to_float(v[krow + c]) : 0.0f);
        }
        m = m_new;
    }
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    T *orow = out + ((long)b * Tq + t) * NH * hs + (long)h * hs;
#pragma unroll
    for (int i = 0; i < GEN_MAX_PER_LANE; i++) {
        const int c = lane + 32 * i;
        if (c < hs) orow[c] = from_float<T>(o[i] * inv);
    }
    if (lane == 0) lse[idx] = l > 0.0f ? m + logf(l) : -INFINITY;
}

template <typename T>
__global__ void gen_backward_dq_kernel(T *dq, const T *dout, const float *lse, const float *dsum, const T *q,
                                       const T *k, const T *v, const int *q_pos, int B, int Tq, int Tk, int NH, int hs,
                                       int ldq, int ldkv, float scale, bool write = false) {
    const long idx = (long)blockIdx.x * GEN_WARPS + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (idx >= (long)B * NH * Tq) return;
    const int t = (int)(idx % Tq), h = (int)(idx / Tq % NH), b = (int)(idx / Tq / NH);
    float qv[GEN_MAX_PER_LANE], dov[GEN_MAX_PER_LANE], acc[GEN_MAX_PER_LANE] = {};
    const long qrow = ((long)b * Tq + t) * ldq + (long)h * hs;
    load_row(qv, q + qrow, hs, lane);
    load_row(dov, dout + ((long)b * Tq + t) * NH * hs + (long)h * hs, hs, lane);
    const float lse_t = lse[idx], d_t = dsum[idx];
    const int lim = min(q_pos[t], Tk - 1);
    for (int j = 0; j <= lim; j++) {
        const long krow = ((long)b * Tk + j) * ldkv + (long)h * hs;
        const float p = expf(warp_dot(qv, k + krow, hs, lane) * scale - lse_t);
        const float ds = p * (warp_dot(dov, v + krow, hs, lane) - d_t);
#pragma unroll
        for (int i = 0; i < GEN_MAX_PER_LANE; i++) {
            const int c = lane + 32 * i;
            if (c < hs) acc[i] += ds * to_float(k[krow + c]);
        }
    }
#pragma unroll
    for (int i = 0; i < GEN_MAX_PER_LANE; i++) {
        const int c = lane + 32 * i;
        if (c < hs) dq[qrow + c] = from_float<T>((write ? 0.0f : to_float(dq[qrow + c])) + scale * acc[i]);
    }
}

template <typename T>
__global__ void gen_backward_dkv_kernel(T *dk, T *dv, const T *dout, const float *lse, const float *dsum, const T *q,
                                        const T *k, const T *v, const int *q_pos, int B, int Tq, int Tk, int NH,
                                        int hs, int ldq, int ldkv, float scale, bool write = false) {
    const long idx = (long)blockIdx.x * GEN_WARPS + threadIdx.x / 32;  // (b * NH + h) * Tk + j
    const int lane = threadIdx.x % 32;
    if (idx >= (long)B * NH * Tk) return;
    const int j = (int)(idx % Tk), h = (int)(idx / Tk % NH), b = (int)(idx / Tk / NH);
    float kv_[GEN_MAX_PER_LANE], vv[GEN_MAX_PER_LANE], dk_acc[GEN_MAX_PER_LANE] = {}, dv_acc[GEN_MAX_PER_LANE] = {};
    const long krow = ((long)b * Tk + j) * ldkv + (long)h * hs;
    load_row(kv_, k + krow, hs, lane);
    load_row(vv, v + krow, hs, lane);
    for (int t = 0; t < Tq; t++) {
        if (j > q_pos[t]) continue;
        const long qrow = ((long)b * Tq + t) * ldq + (long)h * hs;
        const long orow = ((long)b * Tq + t) * NH * hs + (long)h * hs;
        const long st = ((long)b * NH + h) * Tq + t;
        const float p = expf(warp_dot(kv_, q + qrow, hs, lane) * scale - lse[st]);
        const float ds = p * (warp_dot(vv, dout + orow, hs, lane) - dsum[st]);
#pragma unroll
        for (int i = 0; i < GEN_MAX_PER_LANE; i++) {
            const int c = lane + 32 * i;
            if (c < hs) {
                dv_acc[i] += p * to_float(dout[orow + c]);
                dk_acc[i] += ds * to_float(q[qrow + c]);
            }
        }
    }
#pragma unroll
    for (int i = 0; i < GEN_MAX_PER_LANE; i++) {
        const int c = lane + 32 * i;
        if (c < hs) {
            dk[krow + c] = from_float<T>((write ? 0.0f : to_float(dk[krow + c])) + scale * dk_acc[i]);
            dv[krow + c] = from_float<T>((write ? 0.0f : to_float(dv[krow + c])) + dv_acc[i]);
        }
    }
}

// ============================================================================================
// Tensor-core implementation (sm_80+).
// ============================================================================================

// The PTX-level helpers. tests/gpu/emulate_attention.cpp defines ATTN_EMULATE and supplies
// CPU versions of exactly these (with the semantics of the PTX ISA) to run the kernels below.
#ifndef ATTN_EMULATE
extern __shared__ __align__(16) unsigned char attn_smem[];

// 2^x by the SFU alone (ex2.approx.ftz): exp2f adds a range check and two multiplies per call to
// return results below 2^-126 as subnormals, which this flushes to 0. Every exponent here is of a
// softmax weight (x <= 0 up to rounding, against a row sum >= 1), where such a term is 0 to fp32.
static __device__ __forceinline__ float fast_exp2(float x) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}

static __device__ __forceinline__ uint32_t smem_addr(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

static __device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
#endif
}

static __device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], uint32_t addr) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
#endif
}

// d += a (16x16 bf16, row) * b (16x8 bf16, col), fp32 accumulate.
static __device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// 16 bytes global -> shared, asynchronous; src_bytes = 0 writes zeros and reads nothing.
static __device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, int src_bytes) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
#endif
}
static __device__ __forceinline__ void cp_async_commit() {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
// Waits until at most N of this thread's committed groups are pending.
template <int N> static __device__ __forceinline__ void cp_async_wait() {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// The fused backward's ordered dQ sums (attn_bwd_dkdv_kernel<..., DQ_ORDERED>): one thread of a CTA
// waits until the semaphore of a query block shows the CTA's turn (acquire, gpu scope); after its
// stores (and a fence) the CTA posts the next turn (release). The partial sums travel through L2
// (.cg: not cached in the SM's L1, which is not coherent across SMs).
static __device__ __forceinline__ void attn_wait_turn(const int *sem, int turn) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    for (;;) {
        int v;
        asm volatile("ld.global.acquire.gpu.b32 %0, [%1];\n" : "=r"(v) : "l"(sem) : "memory");
        if (v == turn) return;
        __nanosleep(64);   // waiting CTAs poll L2 gently
    }
#endif
}
static __device__ __forceinline__ void attn_post_turn(int *sem, int turn) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    asm volatile("st.global.release.gpu.b32 [%0], %1;\n" ::"l"(sem), "r"(turn) : "memory");
#endif
}

// ---- Hopper warpgroup MMA (sm_90a: wgmma.mma_async) ------------------------------------------
// A warpgroup (4 consecutive warps, 128 threads) computes a 64 x 64 product per k-step of 16 with
// B (and optionally A) read from shared memory through a matrix descriptor, once for the whole
// warpgroup: with mma.sync every warp loads the same B fragments itself (4x the shared-memory
// reads). The register layouts are those of mma.sync (PTX ISA, "wgmma .m64nNk16 register
// fragments"): warp w of the group holds rows 16w..16w+15 of A (as mma's A fragment) and of D
// (as mma's C fragments of the 8 n-tiles, in order), so the kernels' softmax and packing code is
// the same for both. Shared tiles: 128-byte rows (hs 64 bf16) with the 16-byte chunks of row r
// XOR-swizzled by r mod 8 = swz<64>, which is the 128-byte swizzle wgmma applies to addresses
// (bits 4-6 ^= bits 7-9), provided each tile starts on a 1024-byte boundary.
//   K-major operand (mn x 16 k, k contiguous; B of S = Q K^T): element (mn, k) at start +
//     (mn / 8) * SBO + (mn % 8) * 128 + 2k, SBO = 1024; the k-step advances start by 32 bytes.
//   MN-major operand (16 k x mn, mn contiguous; B of O = P V, "transposed"): element (k, mn) at
//     start + (mn / 64) * LBO + 2 (mn % 64) + (k % 8) * 128 + (k / 8) * SBO, SBO = 1024; the
//     k-step advances start by 16 rows (2048 bytes).
// Protocol: wgmma_fence before a batch (registers written since), the mma_asyncs, commit, wait;
// then wg_fence_acc on the accumulators so the compiler cannot move their reads above the wait.
// Operands that ordinary code wrote just before (packed P or dS, rescaled O) go through
// wg_fence_a / wg_fence_acc BEFORE wgmma_fence, so those writes cannot sink below it (as
// CUTLASS's warpgroup_fence_operand); operands loaded by ldmatrix (asm volatile) need nothing.
// Shared memory written by threads (st.shared, cp.async) is read by wgmma through the async
// proxy: fence_proxy_async in the writing threads, then a barrier.
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ATTN_WGMMA 1
#endif
// stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 (sm_90; the wgmma kernels only): register i of
// lane l holds elements (row l/4, cols 2(l%4), 2(l%4)+1) of 8x8 matrix i (mma's C fragment, the
// lower column in the low half); lanes 8i..8i+7 give the addresses of rows 0..7 of the stored
// matrix i (16 bytes each, 16-byte aligned), which gets the transpose: its row c, column r is
// element (r, c). One instruction for the 128 bf16 a thread quad would store one by one.
static __device__ __forceinline__ void stsm_x4_trans(uint32_t addr, const uint32_t (&r)[4]) {
#ifdef ATTN_WGMMA
    asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(r[0]),
                 "r"(r[1]), "r"(r[2]), "r"(r[3])
                 : "memory");
#elif defined(__CUDA_ARCH__)
    __trap();
#endif
}
static __device__ __forceinline__ void wgmma_fence() {
#ifdef ATTN_WGMMA
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#elif defined(__CUDA_ARCH__)
    __trap();
#endif
}
static __device__ __forceinline__ void wgmma_commit() {
#ifdef ATTN_WGMMA
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N> static __device__ __forceinline__ void wgmma_wait() {
#ifdef ATTN_WGMMA
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
static __device__ __forceinline__ void fence_proxy_async() {
#ifdef ATTN_WGMMA
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// A bulk reduction by the async proxy (sm_90; one thread issues it): global [dst, dst + bytes) +=
// shared [src, src + bytes) element-wise as BITS-bit unsigned integers (two's complement: signed
// sums alike), committed as a bulk group. The source must be fenced first (fence_proxy_async in
// its writers, then a barrier) and rewritten only after bulk_wait_read; bulk_wait_all before the
// CTA exits.
template <int BITS> static __device__ __forceinline__ void bulk_reduce_add(void *dst, uint32_t src, uint32_t bytes) {
#ifdef ATTN_WGMMA
    if constexpr (BITS == 64)
        asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.u64 [%0], [%1], %2;\n"
                     ::"l"(dst), "r"(src), "r"(bytes) : "memory");
    else
        asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.u32 [%0], [%1], %2;\n"
                     ::"l"(dst), "r"(src), "r"(bytes) : "memory");
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
#endif
}
static __device__ __forceinline__ void bulk_wait_read() {
#ifdef ATTN_WGMMA
    asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
#endif
}
static __device__ __forceinline__ void bulk_wait_all() {
#ifdef ATTN_WGMMA
    asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
#endif
}
// Two consecutive integers into shared memory, one store.
static __device__ __forceinline__ void st_shared_pair(unsigned long long *p, unsigned long long a,
                                                      unsigned long long b) {
    *reinterpret_cast<ulonglong2 *>(p) = make_ulonglong2(a, b);
}
static __device__ __forceinline__ void st_shared_pair(int *p, int a, int b) {
    *reinterpret_cast<int2 *>(p) = make_int2(a, b);
}
// A thread's store of one bf16 into shared memory (the emulator tracks these for the proxy fence).
static __device__ __forceinline__ void st_shared_bf16(bf16_t *p, float v) { *p = __float2bfloat16_rn(v); }
// The accumulator operands of a m64nNk16 wgmma (N/2 floats per thread: %0 .. %(N/2 - 1)).
#define WG_D_REGS32 \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}"
#define WG_D_REGS64 \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
    "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define WG_D_REGS128 \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
    "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, " \
    "%39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, " \
    "%58, %59, %60, %61, %62, %63}"
#define WG_D_ROW(i) "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])
#define WG_D_OPS32 \
    WG_D_ROW(0), WG_D_ROW(1), WG_D_ROW(2), WG_D_ROW(3)
#define WG_D_OPS64 \
    WG_D_ROW(0), WG_D_ROW(1), WG_D_ROW(2), WG_D_ROW(3), WG_D_ROW(4), WG_D_ROW(5), WG_D_ROW(6), \
    WG_D_ROW(7)
#define WG_D_OPS128 \
    WG_D_ROW(0), WG_D_ROW(1), WG_D_ROW(2), WG_D_ROW(3), WG_D_ROW(4), WG_D_ROW(5), WG_D_ROW(6), \
    WG_D_ROW(7), WG_D_ROW(8), WG_D_ROW(9), WG_D_ROW(10), WG_D_ROW(11), WG_D_ROW(12), WG_D_ROW(13), \
    WG_D_ROW(14), WG_D_ROW(15)
// d (64 x N over the warpgroup, N = 8 NT) = (acc ? d : 0) + A * B, B from its descriptor (MN-major
// if TRANS_B), A from registers in mma.sync's A layout (rs) or from its descriptor, K-major (ss).
template <bool TRANS_B, int NT>
static __device__ __forceinline__ void wgmma_rs(float (&d)[NT][4], const uint32_t (&a)[4], uint64_t desc_b, bool acc) {
    static_assert(NT == 4 || NT == 8 || NT == 16, "wgmma: N = 32, 64 or 128");
#ifdef ATTN_WGMMA
    if constexpr (NT == 4)
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %22, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 " WG_D_REGS32
                     ", {%16, %17, %18, %19}, %20, p, 1, 1, %21;\n}\n"
                     : WG_D_OPS32
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "n"(TRANS_B ? 1 : 0), "r"((int)acc));
    else if constexpr (NT == 8)
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %38, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WG_D_REGS64
                     ", {%32, %33, %34, %35}, %36, p, 1, 1, %37;\n}\n"
                     : WG_D_OPS64
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "n"(TRANS_B ? 1 : 0), "r"((int)acc));
    else
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %70, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " WG_D_REGS128
                     ", {%64, %65, %66, %67}, %68, p, 1, 1, %69;\n}\n"
                     : WG_D_OPS128
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "n"(TRANS_B ? 1 : 0), "r"((int)acc));
#endif
}
template <bool TRANS_B, int NT>
static __device__ __forceinline__ void wgmma_ss(float (&d)[NT][4], uint64_t desc_a, uint64_t desc_b, bool acc) {
    static_assert(NT == 4 || NT == 8 || NT == 16, "wgmma: N = 32, 64 or 128");
#ifdef ATTN_WGMMA
    if constexpr (NT == 4)
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %19, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 " WG_D_REGS32
                     ", %16, %17, p, 1, 1, 0, %18;\n}\n"
                     : WG_D_OPS32
                     : "l"(desc_a), "l"(desc_b), "n"(TRANS_B ? 1 : 0), "r"((int)acc));
    else if constexpr (NT == 8)
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %35, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WG_D_REGS64
                     ", %32, %33, p, 1, 1, 0, %34;\n}\n"
                     : WG_D_OPS64
                     : "l"(desc_a), "l"(desc_b), "n"(TRANS_B ? 1 : 0), "r"((int)acc));
    else
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %67, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " WG_D_REGS128
                     ", %64, %65, p, 1, 1, 0, %66;\n}\n"
                     : WG_D_OPS128
                     : "l"(desc_a), "l"(desc_b), "n"(TRANS_B ? 1 : 0), "r"((int)acc));
#endif
}
#endif  // ATTN_EMULATE

// Matrix descriptor of a 128-byte-swizzled shared operand (smem_addr of its first element).
static __device__ __forceinline__ uint64_t wgmma_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((addr & 0x3FFFF) >> 4) | (uint64_t)(lbo >> 4) << 16 | (uint64_t)(sbo >> 4) << 32 | 1ull << 62;
}
// Operands in a tile of ROWS rows laid out by tile_off<HS, ROWS, true> (column blocks of 64):
// K-major, the 64 x 16 slice at rows row0.. and columns 16 ks..; MN-major (all columns), the
// 16 x N slice at rows 16 ks.. (LBO: from one column block to the next).
// The offset from the tile's start is added to the tile's descriptor (its address field holds
// addr / 16, and shared addresses stay below 2^18: no carry out of it), so the descriptor of a
// tile is built once and each k-step's is one add (as CUTLASS does), not a mask, shift and or.
template <int ROWS> static __device__ __forceinline__ uint64_t wg_desc_k(const bf16_t *p, int row0, int ks) {
    return wgmma_desc(smem_addr(p), 16, 1024) + (uint64_t)(((ks >> 2) * ROWS * 128 + row0 * 128 + 32 * (ks & 3)) >> 4);
}
template <int ROWS> static __device__ __forceinline__ uint64_t wg_desc_mn(const bf16_t *p, int ks) {
    return wgmma_desc(smem_addr(p), ROWS * 128, 1024) + (uint64_t)((2048 * ks) >> 4);
}
// d (+)= sum over k-steps ks of A[ks] * B(tile of ROWS rows, k-step ks); acc = false: the first
// step overwrites d.
template <bool TRANS_B, int ROWS, int KS, int NT>
static __device__ __forceinline__ void wg_rs_k(float (&d)[NT][4], const uint32_t (&a)[KS][4], const bf16_t *tile,
                                               bool acc) {
#pragma unroll
    for (int ks = 0; ks < KS; ks++)
        wgmma_rs<TRANS_B>(d, a[ks], TRANS_B ? wg_desc_mn<ROWS>(tile, ks) : wg_desc_k<ROWS>(tile, 0, ks),
                          acc || ks > 0);
}
static __device__ __forceinline__ void wg_commit_wait() {
    wgmma_commit();
    wgmma_wait<0>();
}
template <int K> static __device__ __forceinline__ void wg_fence_a(uint32_t (&a)[K][4]) {
#ifndef ATTN_EMULATE
#pragma unroll
    for (int i = 0; i < K; i++)
        asm volatile("" : "+r"(a[i][0]), "+r"(a[i][1]), "+r"(a[i][2]), "+r"(a[i][3])::"memory");
#else
    (void)a;
#endif
}
// Around a batch: ties the accumulators to the fence before it and to the wait after it.
template <int N> static __device__ __forceinline__ void wg_fence_acc(float (&d)[N][4]) {
#ifndef ATTN_EMULATE
#pragma unroll
    for (int i = 0; i < N; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) asm volatile("" : "+f"(d[i][j])::"memory");
#else
    (void)d;
#endif
}
// One batch over M row tiles (the forward's): d[m] (+)= a[m] B(tile), issued and committed as
// one group, not waited for. Operands are fenced before wgmma.fence (the protocol above); until
// the wait (wg_batch_done), d must not be touched.
template <bool TRANS_B, int ROWS, int M, int KS, int NT>
static __device__ __forceinline__ void wg_batch_issue(float (&d)[M][NT][4], uint32_t (&a)[M][KS][4],
                                                      const bf16_t *tile, bool acc) {
#pragma unroll
    for (int m = 0; m < M; m++) {
        wg_fence_a(a[m]);
        wg_fence_acc(d[m]);
    }
    wgmma_fence();
#pragma unroll
    for (int m = 0; m < M; m++) wg_rs_k<TRANS_B, ROWS>(d[m], a[m], tile, acc);
    wgmma_commit();
}
// After the wait that completed d's batch: ties d's later reads to that wait.
template <int M, int NT> static __device__ __forceinline__ void wg_batch_done(float (&d)[M][NT][4]) {
#pragma unroll
    for (int m = 0; m < M; m++) wg_fence_acc(d[m]);
}
// Pipelined backward kernels: the next block's two products (xn, yn), waited for, become the
// current ones (x, y).
template <int NT>
static __device__ __forceinline__ void wg_take_next(float (&x)[NT][4], float (&y)[NT][4], float (&xn)[NT][4],
                                                    float (&yn)[NT][4]) {
    wg_fence_acc(xn);
    wg_fence_acc(yn);
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int i = 0; i < 4; i++) x[nt][i] = xn[nt][i], y[nt][i] = yn[nt][i];
}
// A batch issued and waited for.
template <bool TRANS_B, int ROWS, int M, int KS, int NT>
static __device__ __forceinline__ void wg_batch(float (&d)[M][NT][4], uint32_t (&a)[M][KS][4], const bf16_t *tile,
                                                bool acc) {
    wg_batch_issue<TRANS_B, ROWS>(d, a, tile, acc);
    wgmma_wait<0>();
    wg_batch_done(d);
}
// The same with A from a shared tile too: d[m] (64 x N, N = 8 NT) = A B^T over HS columns, both
// K-major shared tiles, A's rows row0 + 64 m.. of a tile of RA rows, B a tile of N rows (the
// forward's S with Q from shared memory); issued and waited for.
template <int HS, int RA, int M, int NT>
static __device__ __forceinline__ void wg_batch_ss(float (&d)[M][NT][4], const bf16_t *a, int row0, const bf16_t *b) {
#pragma unroll
    for (int m = 0; m < M; m++) wg_fence_acc(d[m]);
    wgmma_fence();
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int ks = 0; ks < HS / 16; ks++)
            wgmma_ss<false>(d[m], wg_desc_k<RA>(a, row0 + 64 * m, ks), wg_desc_k<8 * NT>(b, 0, ks), ks > 0);
    wg_commit_wait();
    wg_batch_done(d);
}
// The same for one row tile (the backward's dQ += dS K): d (+)= a B(tile), waited for with every
// group still in flight.
template <bool TRANS_B, int ROWS, int KS, int NT>
static __device__ __forceinline__ void wg_batch(float (&d)[NT][4], uint32_t (&a)[KS][4], const bf16_t *tile,
                                                bool acc) {
    wg_batch<TRANS_B, ROWS>(reinterpret_cast<float(&)[1][NT][4]>(d), reinterpret_cast<uint32_t(&)[1][KS][4]>(a),
                            tile, acc);
}
// The dynamic shared memory from a 1024-byte boundary when ALIGN (wgmma kernels: their
// launchers ask for 1024 bytes more).
template <bool ALIGN> static __device__ __forceinline__ unsigned char *attn_smem_base() {
    return ALIGN ? attn_smem + ((1024u - (smem_addr(attn_smem) & 1023u)) & 1023u) : attn_smem;
}

static __device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

// The C fragments of two n-tiles (c0: columns 0-7, c1: 8-15) as one A fragment (bf16), see
// attention.cu: the scores of k-step kk are pack_a(a, s[2 kk], s[2 kk + 1]).
static __device__ __forceinline__ void pack_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
    a[0] = pack_bf16(c0[0], c0[1]);
    a[1] = pack_bf16(c0[2], c0[3]);
    a[2] = pack_bf16(c1[0], c1[1]);
    a[3] = pack_bf16(c1[2], c1[3]);
}

// c0, c1 (two n-tiles) += a * B, B's two n-tiles loaded by one ldmatrix.x4 at the lane's address
// (TRANS: .trans, B stored [k][n]; else [n][k]): the mma.sync step the backward's products repeat.
template <bool TRANS>
static __device__ __forceinline__ void mma_x2(float (&c0)[4], float (&c1)[4], const uint32_t (&a)[4], uint32_t addr) {
    uint32_t b[4];
    if constexpr (TRANS) ldsm_x4_trans(b, addr);
    else ldsm_x4(b, addr);
    mma_bf16(c0, a, b[0], b[1]);
    mma_bf16(c1, a, b[2], b[3]);
}

// A bf16 pair of the backward's outputs (dst 4-byte aligned): dst[0..1] = (a, b) where write
// (AttnArgs::write), += otherwise: one path, the read predicated off (0 + a is a, but for the sign
// of a zero).
static __device__ __forceinline__ void put_bf16x2(bf16_t *dst, float a, float b, bool write) {
    __nv_bfloat162 *p = reinterpret_cast<__nv_bfloat162 *>(dst);
    const float x = write ? 0.0f : __low2float(*p), y = write ? 0.0f : __high2float(*p);
    *p = __floats2bfloat162_rn(x + a, y + b);   // (not the float2 forms: sm_80+ only before CUDA 12)
}

// Rows [r0, r1) of a head's HS columns at base (row stride ld elements, 16-byte aligned rows) = 0,
// by the CTA's NT threads: the write-mode outputs of a block that adds nothing.
template <int HS, int NT> static __device__ void zero_head_rows(bf16_t *base, long ld, int r0, int r1, int tid) {
    constexpr int V = HS / 8;   // 16-byte pieces a row
    for (int i = tid; i < (r1 - r0) * V; i += NT)
        *reinterpret_cast<uint4 *>(base + (long)(r0 + i / V) * ld + (i % V) * 8) = make_uint4(0, 0, 0, 0);
}

// p[0] += x, p[1] += y as fp32 atomics (p 8-byte aligned): one vector reduction on sm_90 (the
// float2 atomicAdd came with CUDA 12).
static __device__ __forceinline__ void atomic_add2(float *p, float x, float y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && __CUDACC_VER_MAJOR__ >= 12
    atomicAdd(reinterpret_cast<float2 *>(p), make_float2(x, y));
#else
    atomicAdd(p, x);
    atomicAdd(p + 1, y);
#endif
}

// Element offset of (row, col) in a swizzled rows x HS tile; col is a multiple of 8 for every
// access that matters (cp.async chunks, ldmatrix rows).
template <int HS> static __device__ __forceinline__ int swz(int row, int col) {
    constexpr int CHUNKS = HS / 8;
    constexpr int MASK = (CHUNKS < 8 ? CHUNKS : 8) - 1;
    return row * HS + ((((col >> 3) ^ (row & MASK))) << 3) + (col & 7);
}

// Element offset of (row, col) in a shared tile of ROWS rows: swz<HS>, or in the wgmma kernels
// (WG) with heads wider than 64, HS / 64 column blocks [block][ROWS][64] of swz<64> each (wgmma's
// 128-byte swizzle spans 64 bf16 columns).
template <int HS, int ROWS, bool WG> static __device__ __forceinline__ int tile_off(int row, int col) {
    if constexpr (WG && HS > 64) return (col >> 6) * ROWS * 64 + swz<64>(row, col & 63);
    else return swz<HS>(row, col);
}

// Rows [0, ROWS) of a matrix (row stride ld elements, HS columns from src) into a swizzled
// shared tile (tile_off); rows >= nvalid are filled with zeros. All NT threads take part.
template <int ROWS, int HS, int NT, bool WG = false>
static __device__ __forceinline__ void load_tile(bf16_t *dst, const bf16_t *src, long ld, int nvalid, int tid) {
    constexpr int CHUNKS = HS / 8, TOTAL = ROWS * CHUNKS, ITERS = (TOTAL + NT - 1) / NT;
    constexpr int RSTEP = NT / CHUNKS, RSTRIDE = WG && HS > 64 ? 64 : HS;   // rows a pass; tile row stride
    // Every pass takes the same column, RSTEP rows on: the swizzle (row mod 8) is the same, so the
    // shared offset grows by a constant and the source pointer by RSTEP rows (one add each pass,
    // not a 64-bit multiply and the swizzle's arithmetic per chunk).
    static_assert(NT % CHUNKS == 0 && RSTEP % 8 == 0, "load_tile: whole rows a pass, a multiple of 8");
    const int r0 = tid / CHUNKS, col = (tid % CHUNKS) * 8;
    const uint32_t d0 = smem_addr(dst + tile_off<HS, ROWS, WG>(r0, col));
    const bf16_t *p = src + r0 * ld + col;
    const long step = RSTEP * ld;
    // Every row there (all but a sequence's last block): no per-row select. Worth its branch from
    // 4 chunks a thread (SASS: 8 chunks save ~40 instructions; with 2, the branch costs ~10 more).
    if (ITERS >= 4 && nvalid >= ROWS) {
#pragma unroll
        for (int it = 0; it < ITERS; it++, p += step)
            if (TOTAL % NT == 0 || r0 + it * RSTEP < ROWS) cp_async16(d0 + it * RSTEP * RSTRIDE * 2, p, 16);
        return;
    }
#pragma unroll
    for (int it = 0; it < ITERS; it++, p += step) {
        const int row = r0 + it * RSTEP;
        if (TOTAL % NT == 0 || row < ROWS) {
            const bool valid = row < nvalid;
            cp_async16(d0 + it * RSTEP * RSTRIDE * 2, valid ? p : src, valid ? 16 : 0);
        }
    }
}

// The largest and smallest visible-key index of the block's valid rows, through shared memory
// (integer atomics: exact and order-independent). lim = min(q_pos, Tk - 1), -1 for no key.
static __device__ __forceinline__ void block_minmax(int my_max, int my_min, int *s_max, int *s_min, int *out_max,
                                                    int *out_min) {
    if (threadIdx.x == 0) *s_max = -1, *s_min = INT_MAX;
    __syncthreads();
    atomicMax(s_max, my_max);
    atomicMin(s_min, my_min);
    __syncthreads();
    *out_max = *s_max;
    *out_min = *s_min;
}

struct AttnArgs {
    bf16_t *out, *dq, *dk, *dv;
    float *lse;
    const bf16_t *q, *k, *v, *dout, *out_c;
    const float *lse_c, *dsum;
    const int *q_pos, *qmax;
    float *dq_acc;  // fused backward: (B, NH, Tq, hs) fp32 partial sums of dQ (DQ_FIXED: the integers)
    int *dq_sem;    // fused backward: (B, NH, query blocks) turn of the next key block, zeroed per call
    int *dq_ticket; // fused backward: the next tile to hand out, zeroed per call
    int *dq_exp, *dq_bad;   // DQ_FIXED: (B, NH, Tq) the rows' exponents e_r and NaN marks
    unsigned *kv_max;       // DQ_FIXED: (B, NH, 2) Kmax, Vmax bits
    int B, Tq, Tk, NH, hs, ldq, ldkv;
    float scale, scale_log2;
    int write;   // backward: 1 = dq, dk, dv written (all of their heads' columns), 0 = +=
    const int *qmin;   // backward: (query blocks of the dK/dV kernel) smallest position of each
};

// ---- forward ------------------------------------------------------------------------------
// CTA: (b, h) = blockIdx.x, query block gridDim.y - 1 - blockIdx.y (later blocks see more keys:
// launched first). Warp w owns rows [w*16*MT, (w+1)*16*MT) of the block; with wgmma (WG 1 or 2),
// warp w of warpgroup g holds rows 16w + 64 (g MT + mt) of the group's mt-th 64-row product.
// WG 2 pipelines the key blocks: S of block kb + 1 (Q K^T) runs on the tensor cores while the
// warpgroup does block kb's softmax, then P V of block kb; so K runs one block ahead of V (K of
// kb + 2 and V of kb + 1 are prefetched during block kb, into the buffers blocks kb and kb - 1
// are done with).
template <int HS, int MT, int NW, int BC, bool Q_REGS = true, int WG = 0>
__global__ void __launch_bounds__(NW * 32) attn_fwd_kernel(AttnArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    __trap();
#else
    constexpr int BR = 16 * MT * NW, NT = 32 * NW;
    constexpr int NS = BC / 8;   // n-tiles of S (keys)
    constexpr int KQ = HS / 16;  // k-steps of Q K^T
    constexpr int NO = HS / 8;   // n-tiles of O (head dim)
    static_assert(BC % 16 == 0 && HS % 16 == 0, "tile shapes");
    constexpr bool W = WG != 0, PIPE = WG == 2;   // wgmma; S of the next key block in flight
    static_assert(!W || (NW % 4 == 0 && HS % 64 == 0 && (BC == 64 || BC == 128) && (Q_REGS || !PIPE)),
                  "wgmma: warpgroups");
    // A ptxas miscompile (CUDA 13.0.88, sm_90a), seen on an H100 on 2026-11-26 (out error 2) and
    // then in the SASS (nvdisasm): with Q in registers (WG 1, hs 64, 64-key blocks), S = Q K^T
    // and O += P V are both HGMMA.64x64x16 with A from registers, and ptxas gives P's fragments
    // the registers of Q's (R88-R103), which the next key block's S still reads: from the second
    // key block on, S is P K^T. The dQ kernel's S / dP and dQ += dS K products of that shape
    // fail the same way (dS in dO's registers). The pipelined kernels (Q live across the P V
    // product), 128-key blocks (S is 64x128) and hs 128 (P V is 64x128) get separate registers
    // and pass. So with wgmma at hs 64 and 64-key blocks, Q comes from shared memory (Q_REGS
    // false: S as wgmma with both operands in shared memory, FlashAttention-3's choice too).
#ifndef ATTN_SASS_SELFTEST   // tests/gpu/sass_check.sh builds it on purpose, to see the check fail
    static_assert(!(WG == 1 && HS == 64 && BC == 64 && Q_REGS), "ptxas miscompiles this one: Q_REGS false");
#endif
    bf16_t *sQ = reinterpret_cast<bf16_t *>(attn_smem_base<W>());
    bf16_t *sK = sQ + BR * HS;      // 2 buffers
    bf16_t *sV = sK + 2 * BC * HS;  // 2 buffers
    __shared__ int s_max, s_min;

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane >> 2, t4 = lane & 3;
    const int b = blockIdx.x / a.NH, h = blockIdx.x % a.NH;
    const int q0 = (gridDim.y - 1 - blockIdx.y) * BR;
    const int C = a.NH * HS, Tq = a.Tq, Tk = a.Tk;
    auto rowof = [&](int mt) {   // the first row of the warp's row tile mt
        return W ? (warp / 4 * MT + mt) * 64 + warp % 4 * 16 : (warp * MT + mt) * 16;
    };

    int lim[MT][2];
    int my_max = -1, my_min = INT_MAX;
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const int r = q0 + rowof(mt) + g + 8 * hh;
            lim[mt][hh] = r < Tq ? min(a.q_pos[r], Tk - 1) : -1;
            if (r < Tq) my_max = max(my_max, lim[mt][hh]), my_min = min(my_min, lim[mt][hh]);
        }
    int kend, kfull;
    block_minmax(my_max, my_min, &s_max, &s_min, &kend, &kfull);
    kend += 1;   // keys [0, kend) are visible to some row of the block
    kfull += 1;  // keys [0, kfull) are visible to every valid row

    if (kend <= 0) {  // no row sees a key: zeros, lse = -inf
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                const int r = q0 + rowof(mt) + g + 8 * hh;
                if (r >= Tq) continue;
                bf16_t *orow = a.out + ((long)b * Tq + r) * C + h * HS;
#pragma unroll
                for (int no = 0; no < NO; no++)
                    *reinterpret_cast<__nv_bfloat162 *>(orow + no * 8 + 2 * t4) = __floats2bfloat162_rn(0.0f, 0.0f);
                if (t4 == 0) a.lse[((long)b * a.NH + h) * Tq + r] = -INFINITY;
            }
        return;
    }
    const int nkb = (kend + BC - 1) / BC;
    const bf16_t *kbase = a.k + (long)b * Tk * a.ldkv + h * HS;
    const bf16_t *vbase = a.v + (long)b * Tk * a.ldkv + h * HS;

    // Key block kb's K and V tiles: into buffer `buf` of sK / sV.
    auto load_k = [&](int kb, int buf) {
        const int k1 = kb * BC;
        load_tile<BC, HS, NT, W>(sK + buf * BC * HS, kbase + (long)k1 * a.ldkv, a.ldkv, kend - k1, tid);
    };
    auto load_v = [&](int kb, int buf) {
        const int k1 = kb * BC;
        load_tile<BC, HS, NT, W>(sV + buf * BC * HS, vbase + (long)k1 * a.ldkv, a.ldkv, kend - k1, tid);
    };
    load_tile<BR, HS, NT, W>(sQ, a.q + ((long)b * Tq + q0) * a.ldq + h * HS, a.ldq, Tq - q0, tid);
    load_k(0, 0);
    if (PIPE) {   // Q and K of block 0 first; then (K of block 1, V of block 0): block 0's prefetch
        cp_async_commit();
        if (nkb > 1) load_k(1, 1);
    }
    load_v(0, 0);
    cp_async_commit();
    cp_async_wait<PIPE ? 1 : 0>();
    if constexpr (W) fence_proxy_async();
    __syncthreads();

    // The warp's Q fragments: in registers for the whole kernel (Q_REGS), or re-read from the
    // shared tile at each k-step of every key block (fewer registers: wide heads with MT = 2).
    constexpr int QF = Q_REGS ? KQ : 1;
    uint32_t qf[MT][QF][4];
    auto load_qf = [&](int mt, int ks, uint32_t(&dst)[4]) {
        ldsm_x4(dst, smem_addr(sQ + tile_off<HS, BR, W>(rowof(mt) + (lane & 15), ks * 16 + (lane >> 4) * 8)));
    };
    if (Q_REGS)
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int ks = 0; ks < QF; ks++) load_qf(mt, ks, qf[mt][ks]);

    float o[MT][NO][4];
    float m_run[MT][2], l_run[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int no = 0; no < NO; no++) o[mt][no][0] = o[mt][no][1] = o[mt][no][2] = o[mt][no][3] = 0.0f;
        m_run[mt][0] = m_run[mt][1] = -INFINITY;
        l_run[mt][0] = l_run[mt][1] = 0.0f;
    }

    // S = Q K^T (raw scores) of the key block in tile cK, with mma.sync (the wgmma kernels issue
    // it as a batch).
    auto scores = [&](float(&s)[MT][NS][4], const bf16_t *cK) {
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < NS; nt++) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < KQ; ks++) {
            if (!Q_REGS)
#pragma unroll
                for (int mt = 0; mt < MT; mt++) load_qf(mt, ks, qf[mt][0]);
            const int kq = Q_REGS ? ks : 0;
#pragma unroll
            for (int np = 0; np < NS / 2; np++) {
                uint32_t kf[4];
                ldsm_x4(kf, smem_addr(cK + swz<HS>(np * 16 + (lane & 7) + (lane >> 4) * 8,
                                                   ks * 16 + ((lane >> 3) & 1) * 8)));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma_bf16(s[mt][2 * np], qf[mt][kq], kf[0], kf[1]);
                    mma_bf16(s[mt][2 * np + 1], qf[mt][kq], kf[2], kf[3]);
                }
            }
        }
    };
    // Online softmax, base 2, per row (a row's values live in the 4 lanes of a quad), of the
    // scores of the key block at k0: s becomes P (not normalized), O is rescaled. The running max
    // is of the scaled scores (log2 units); the block's is taken of the raw ones (the scale is
    // positive and rounding monotone: the same value), so each weight costs one FFMA and one
    // SFU exp2 (FlashAttention's form), not a multiply, a subtract and exp2f's range check.
    auto softmax = [&](float(&s)[MT][NS][4], int k0) {
        const bool need_mask = k0 + BC > kfull;
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                if (need_mask)   // a branch: most blocks skip the compares
#pragma unroll
                    for (int nt = 0; nt < NS; nt++)
#pragma unroll
                        for (int e = 0; e < 2; e++)
                            if (k0 + nt * 8 + 2 * t4 + e > lim[mt][hh]) s[mt][nt][2 * hh + e] = -INFINITY;
                float mx = -INFINITY;
#pragma unroll
                for (int nt = 0; nt < NS; nt++)
#pragma unroll
                    for (int e = 0; e < 2; e++) mx = fmaxf(mx, s[mt][nt][2 * hh + e]);
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                const float m_new = fmaxf(m_run[mt][hh], mx * a.scale_log2);
                const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // no key yet: keep exps at 0
                const float alpha = fast_exp2(m_run[mt][hh] - m_use);
                m_run[mt][hh] = m_new;
                float rowsum = 0.0f;
#pragma unroll
                for (int nt = 0; nt < NS; nt++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const float p = fast_exp2(fmaf(s[mt][nt][2 * hh + e], a.scale_log2, -m_use));
                        s[mt][nt][2 * hh + e] = p;
                        rowsum += p;
                    }
                // Per-lane partial sums (the quad's lanes share alpha): reduced once at the end.
                l_run[mt][hh] = l_run[mt][hh] * alpha + rowsum;
#pragma unroll
                for (int no = 0; no < NO; no++) o[mt][no][2 * hh] *= alpha, o[mt][no][2 * hh + 1] *= alpha;
            }
    };

    float s[MT][NS][4];
    if constexpr (PIPE) {
        wg_batch<false, BC>(s, qf, sK, false);   // S of key block 0
        __syncthreads();   // every warpgroup is done with K of block 0: its buffer takes block 2
    }
    for (int kb = 0; kb < nkb; kb++) {
        const int buf = kb & 1;
        // Prefetch into the buffers the previous iterations are done with: K and V of the next
        // block; PIPE: K of block kb + 2 and V of block kb + 1.
        if (PIPE) {
            if (kb + 2 < nkb) load_k(kb + 2, buf);
            if (kb + 1 < nkb) load_v(kb + 1, buf ^ 1);
        } else if (kb + 1 < nkb) {
            load_k(kb + 1, buf ^ 1);
            load_v(kb + 1, buf ^ 1);
        }
        cp_async_commit();  // possibly empty: keeps the group count uniform
        cp_async_wait<1>();
        if constexpr (W) fence_proxy_async();
        __syncthreads();
        const bf16_t *cV = sV + buf * BC * HS;
        const bool next = PIPE && kb + 1 < nkb;
        float sn[MT][NS][4];   // PIPE: S of block kb + 1, in flight during block kb's softmax
        if constexpr (PIPE) {
            if (next) wg_batch_issue<false, BC>(sn, qf, sK + (buf ^ 1) * BC * HS, false);
        } else if constexpr (W && Q_REGS) {
            wg_batch<false, BC>(s, qf, sK + buf * BC * HS, false);
        } else if constexpr (W) {   // Q from its shared tile (see the miscompile above)
            wg_batch_ss<HS, BR>(s, sQ, rowof(0) & ~63, sK + buf * BC * HS);
        } else {
            scores(s, sK + buf * BC * HS);
        }
        softmax(s, kb * BC);

        // O += P V
        if constexpr (W) {
            uint32_t pa[MT][BC / 16][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int kk = 0; kk < BC / 16; kk++) pack_a(pa[mt][kk], s[mt][2 * kk], s[mt][2 * kk + 1]);
            wg_batch_issue<true, BC>(o, pa, cV, true);
            wgmma_wait<0>();   // P V, and S of block kb + 1
            wg_batch_done(o);
            if (next) {
                wg_batch_done(sn);
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int nt = 0; nt < NS; nt++)
#pragma unroll
                        for (int e = 0; e < 4; e++) s[mt][nt][e] = sn[mt][nt][e];
            }
        } else {
#pragma unroll
            for (int kk = 0; kk < BC / 16; kk++) {
                uint32_t pa[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; mt++) pack_a(pa[mt], s[mt][2 * kk], s[mt][2 * kk + 1]);
#pragma unroll
                for (int np = 0; np < NO / 2; np++) {
                    uint32_t vf[4];
                    ldsm_x4_trans(vf, smem_addr(cV + swz<HS>(kk * 16 + (lane & 15), np * 16 + (lane >> 4) * 8)));
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        mma_bf16(o[mt][2 * np], pa[mt], vf[0], vf[1]);
                        mma_bf16(o[mt][2 * np + 1], pa[mt], vf[2], vf[3]);
                    }
                }
            }
        }
        __syncthreads();  // the buffers of this block are refilled by the next iterations' prefetches
    }

#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            float l = l_run[mt][hh];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            const int r = q0 + rowof(mt) + g + 8 * hh;
            if (r >= Tq) continue;
            const float inv = l > 0.0f ? 1.0f / l : 0.0f;
            bf16_t *orow = a.out + ((long)b * Tq + r) * C + h * HS;
#pragma unroll
            for (int no = 0; no < NO; no++)
                *reinterpret_cast<__nv_bfloat162 *>(orow + no * 8 + 2 * t4) =
                    __floats2bfloat162_rn(o[mt][no][2 * hh] * inv, o[mt][no][2 * hh + 1] * inv);
            if (t4 == 0)
                a.lse[((long)b * a.NH + h) * Tq + r] = l > 0.0f ? (m_run[mt][hh] + log2f(l)) * LN2_F : -INFINITY;
        }
#endif
}

// ---- backward: the two recomputed products both kernels start with -----------------------------
// x = A B^T and y = A2 B2^T over the head dimension, for the warp's 16 rows (A, A2) against the
// N rows of two shared tiles (B, B2): S^T, dP^T in the dK/dV kernel (A = K, A2 = V, B = Q, B2 = dO),
// S, dP in the dQ kernel (A = Q, A2 = dO, B = K, B2 = V). The A fragments come from registers
// (af, a2f, REGS) or from the shared tiles sa, sa2 (RA rows) at the lane's row arow. WG: the
// warpgroup's wgmma products (B from the K-major tiles; A from registers, or from sa, sa2 at the
// warpgroup's 64 rows).
// The wgmma form, issued and committed as one group, not waited for (x, y untouchable until the wait).
template <int HS, int N, bool REGS, int F, int RA>
static __device__ __forceinline__ void bwd_recompute_issue(float (&x)[N / 8][4], float (&y)[N / 8][4],
                                                           const uint32_t (&af)[F][4], const uint32_t (&a2f)[F][4],
                                                           const bf16_t *sa, const bf16_t *sa2, int arow,
                                                           const bf16_t *b, const bf16_t *b2) {
    wgmma_fence();
    if constexpr (REGS) {
        wg_rs_k<false, N>(x, af, b, false);
        wg_rs_k<false, N>(y, a2f, b2, false);
    } else {
        const int row0 = arow & ~63;   // the warpgroup's first row
#pragma unroll
        for (int ks = 0; ks < HS / 16; ks++) {
            wgmma_ss<false>(x, wg_desc_k<RA>(sa, row0, ks), wg_desc_k<N>(b, 0, ks), ks > 0);
            wgmma_ss<false>(y, wg_desc_k<RA>(sa2, row0, ks), wg_desc_k<N>(b2, 0, ks), ks > 0);
        }
    }
    wgmma_commit();
}
template <int HS, int N, bool REGS, int F, bool WG = false, int RA = 0>
static __device__ __forceinline__ void bwd_recompute(float (&x)[N / 8][4], float (&y)[N / 8][4],
                                                     const uint32_t (&af)[F][4], const uint32_t (&a2f)[F][4],
                                                     const bf16_t *sa, const bf16_t *sa2, int arow, const bf16_t *b,
                                                     const bf16_t *b2, int lane) {
    if constexpr (WG) {
        bwd_recompute_issue<HS, N, REGS, F, RA>(x, y, af, a2f, sa, sa2, arow, b, b2);
        wgmma_wait<0>();
        wg_fence_acc(x);
        wg_fence_acc(y);
    } else {
#pragma unroll
        for (int nt = 0; nt < N / 8; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) x[nt][i] = y[nt][i] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < HS / 16; ks++) {
            uint32_t a[4], a2[4];
            if (REGS) {
#pragma unroll
                for (int i = 0; i < 4; i++) a[i] = af[REGS ? ks : 0][i], a2[i] = a2f[REGS ? ks : 0][i];
            } else {
                ldsm_x4(a, smem_addr(sa + swz<HS>(arow, ks * 16 + (lane >> 4) * 8)));
                ldsm_x4(a2, smem_addr(sa2 + swz<HS>(arow, ks * 16 + (lane >> 4) * 8)));
            }
#pragma unroll
            for (int np = 0; np < N / 16; np++) {
                const int r = np * 16 + (lane & 7) + (lane >> 4) * 8, c = ks * 16 + ((lane >> 3) & 1) * 8;
                mma_x2<false>(x[2 * np], x[2 * np + 1], a, smem_addr(b + swz<HS>(r, c)));
                mma_x2<false>(y[2 * np], y[2 * np + 1], a2, smem_addr(b2 + swz<HS>(r, c)));
            }
        }
    }
}

// The fixed-point adds of a thread's partial dQ (DQ_FIXED, see attn_fix_exponent): C fragments
// dq[no] of local rows rl0, rl0 + 8 of the query block at row q0 (t0 = (b NH + h) Tq: the head's
// first row), columns col + 8 no, +1. MODE 0: straight from the fragments (a thread quad's 8
// columns of a row span 2 sectors per 64-bit instruction). MODE 1 (NWQ -4, -5): the block's
// integers go through shared memory first, then the adds run over consecutive addresses, each
// warp instruction covering whole 32-byte sectors; local row r keeps column c at
// c ^ stage_swz(r): the fragments' writes (rows r..r+7 of a quad's columns) hit distinct banks
// (64 bits: two wavefronts, the least for 256 bytes), and a warp's reads of 32 consecutive columns
// stay a permutation of them. MODE 2 (NWQ -6, -7): shared memory laid out as the block's rows of
// dq_acc (2-way conflicts on the writes), added by one bulk reduction (FlashAttention-3's way).
template <int BITS> struct FixInt { typedef int T; };
template <> struct FixInt<64> { typedef unsigned long long T; };
template <int BITS> struct FixSigned { typedef int T; };
template <> struct FixSigned<64> { typedef long long T; };
template <int BITS> __device__ __forceinline__ int stage_swz(int r) {
    return BITS == 64 ? (r & 1) | (r >> 1 & 1) << 3 : (r & 1) | (r >> 1 & 3) << 3;
}
// x as an integer of BITS bits (x in units already); bad set if |x| is not below 2^(BITS - 2).
template <int BITS> __device__ __forceinline__ typename FixInt<BITS>::T fix_int(float x, bool &bad) {
    bad |= !(fabsf(x) < (float)(1ull << (BITS - 2)));
    if constexpr (BITS == 64) return (unsigned long long)__float2ll_rn(x);
    else return __float2int_rn(x);
}
template <int HS, int BITS, int NOW, int BQ, int NT, int MODE>
static __device__ __forceinline__ void fixed_dq_add(const AttnArgs &a, const float (&dq)[NOW][4], long t0, int q0,
                                                    int rl0, int col, void *stage) {
    typedef typename FixInt<BITS>::T I;
    constexpr int P = BITS - 2;
    I *st = reinterpret_cast<I *>(stage);
    if constexpr (MODE == 2) {   // the previous block's bulk reduction has read st
        if (threadIdx.x == 0) bulk_wait_read();
        __syncthreads();
    }
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        const int rl = rl0 + 8 * hh, r = q0 + rl;
        if (r >= a.Tq) continue;   // (staged: that row of st is not read)
        const float unit = exp2_int(P - a.dq_exp[t0 + r]);   // e_r in [P - 126, 128]
        bool bad = false;
#pragma unroll
        for (int no = 0; no < NOW; no++) {
            const int c = col + no * 8;
            const I v0 = fix_int<BITS>(dq[no][2 * hh] * unit, bad), v1 = fix_int<BITS>(dq[no][2 * hh + 1] * unit, bad);
            if constexpr (MODE == 2) {
                st_shared_pair(st + rl * HS + c, v0, v1);
            } else if constexpr (MODE == 1) {
                st[rl * HS + (c ^ stage_swz<BITS>(rl))] = v0, st[rl * HS + ((c + 1) ^ stage_swz<BITS>(rl))] = v1;
            } else {
                atomicAdd(reinterpret_cast<I *>(a.dq_acc) + (t0 + r) * HS + c, v0);
                atomicAdd(reinterpret_cast<I *>(a.dq_acc) + (t0 + r) * HS + c + 1, v1);
            }
        }
        if (bad) a.dq_bad[t0 + r] = 1;
    }
    if constexpr (MODE == 2) {   // the block's rows in one bulk reduction (a head's rows are contiguous)
        fence_proxy_async();
        __syncthreads();
        if (threadIdx.x == 0)
            bulk_reduce_add<BITS>(reinterpret_cast<I *>(a.dq_acc) + (t0 + q0) * HS, smem_addr(st),
                                  (uint32_t)(min(BQ, a.Tq - q0) * HS * sizeof(I)));
    }
    if constexpr (MODE == 1) {
        __syncthreads();
        I *acc = reinterpret_cast<I *>(a.dq_acc) + (t0 + q0) * HS;
        for (int i = threadIdx.x; i < BQ * HS; i += NT) {
            const int rl = i / HS, c = i % HS;
            if (q0 + rl < a.Tq) atomicAdd(acc + i, st[rl * HS + (c ^ stage_swz<BITS>(rl))]);
        }
        __syncthreads();   // st is the next block's
    }
}

// ---- backward: the fused kernel's dQ of one query block ----------------------------------------
// dQ_part (BQ x HS) = dS (BQ x BKV, shared, [query][key]) @ K (BKV x HS, shared), then the ordered
// sum into dq_acc / dq (see attn_bwd_dkdv_kernel; CHAINS > 1: into slot kb % CHAINS of dq_acc,
// attn_dq_finish_kernel adds the slots into dq), or (ATOMIC) fp32 atomic adds into dq_acc. Warp
// w computes row tile w % (BQ/16) of the block, columns [c0, c0 + HS / (NW / (BQ/16))). WG: warpgroup
// g computes the columns [c0, c0 + 64 / warpgroups) of all 64 rows over all keys, both operands from
// shared memory (dS K-major in column blocks of 64 keys, K MN-major from column c0), warp w
// computing rows 16 (w % 4).. as with mma.sync.
template <int HS, int NW, int BQ, bool WG = false, int DQ = DQ_ORDERED, int CHAINS = 1, int FIX_BITS = 0,
          int FIX_MODE = 0>
static __device__ __forceinline__ void fused_dq_add(const AttnArgs &a, const bf16_t *sdS, const bf16_t *sK, int b,
                                                    int h, int kb, int qb, int nqb, void *stage) {
    constexpr int BKV = 16 * NW, RT = BQ / 16, WC = HS / (NW / RT), NOW = WC / 8;
    static_assert(NW % RT == 0 && WC % 16 == 0, "fused dQ: the warps split BQ/16 row tiles x HS columns");
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane >> 2, t4 = lane & 3;
    const int rt = warp % RT, c0 = (warp / RT) * WC;
    float dq[NOW][4];
    if constexpr (WG) {   // the first k-step overwrites dq
        static_assert((NW == 4 || NW == 8) && BQ == 64 && HS == 64, "wgmma: 1 or 2 warpgroups, 64 x 64 tiles");
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < BKV / 16; ks++)
            wgmma_ss<true>(dq, wg_desc_k<BQ>(sdS, 0, ks), wg_desc_mn<BKV>(sK + c0, ks), ks > 0);
        wg_commit_wait();
        wg_fence_acc(dq);
    } else {
#pragma unroll
        for (int no = 0; no < NOW; no++) dq[no][0] = dq[no][1] = dq[no][2] = dq[no][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < BKV / 16; ks++) {
            uint32_t da[4];
            ldsm_x4(da, smem_addr(sdS + swz<BKV>(rt * 16 + (lane & 15), ks * 16 + (lane >> 4) * 8)));
#pragma unroll
            for (int np = 0; np < NOW / 2; np++)
                mma_x2<true>(dq[2 * np], dq[2 * np + 1], da,
                             smem_addr(sK + swz<HS>(ks * 16 + (lane & 15), c0 + np * 16 + (lane >> 4) * 8)));
        }
    }
    if constexpr (DQ == DQ_FIXED) {
        fixed_dq_add<HS, FIX_BITS, NOW, BQ, NW * 32, FIX_MODE>(a, dq, ((long)b * a.NH + h) * a.Tq, qb * BQ,
                                                               rt * 16 + g, c0 + 2 * t4, stage);
        return;
    }
    float *acc = a.dq_acc + ((long)b * a.NH + h) * a.Tq * HS;
    if constexpr (DQ == DQ_ATOMIC) {
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const int r = qb * BQ + rt * 16 + g + 8 * hh;
            if (r >= a.Tq) continue;
#pragma unroll
            for (int no = 0; no < NOW; no++)
                atomic_add2(acc + (long)r * HS + c0 + no * 8 + 2 * t4, dq[no][2 * hh], dq[no][2 * hh + 1]);
        }
        return;
    }
    // Contributors: key blocks 0 .. last; this one is turn `turn` of its chain kb % CHAINS, whose
    // sum lives in that slot of dq_acc. One chain: its last turn adds the sum into dq itself.
    const int chain = kb % CHAINS, turn = kb / CHAINS, last = a.qmax[qb] / BKV;
    const bool to_dq = CHAINS == 1 && kb == last;
    int *sem = a.dq_sem + (((long)b * a.NH + h) * nqb + qb) * CHAINS + chain;
    acc += (long)chain * a.B * a.NH * a.Tq * HS;
    if (tid == 0) attn_wait_turn(sem, turn);
    __syncthreads();
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        const int r = qb * BQ + rt * 16 + g + 8 * hh;
        if (r >= a.Tq) continue;
        bf16_t *dqrow = a.dq + ((long)b * a.Tq + r) * a.ldq + h * HS + c0;
#pragma unroll
        for (int no = 0; no < NOW; no++) {
            const long i = (long)r * HS + c0 + no * 8 + 2 * t4;
            float x = dq[no][2 * hh], y = dq[no][2 * hh + 1];
            if (turn > 0) x += __ldcg(acc + i), y += __ldcg(acc + i + 1);
            if (to_dq) put_bf16x2(dqrow + no * 8 + 2 * t4, a.scale * x, a.scale * y, false);
            else __stcg(acc + i, x), __stcg(acc + i + 1, y);
        }
    }
    __threadfence();
    __syncthreads();
    if (tid == 0 && !to_dq) attn_post_turn(sem, turn + 1);
}

// ---- backward: dK, dV -----------------------------------------------------------------------
// CTA: (b, h) = blockIdx.x, keys [k0, k0 + 16*NW), k0 = blockIdx.y * 16*NW (DQ_ORDERED: the
// same numbering, by ticket). Warp w owns keys k0 + 16w .. +15 (rows of S^T, dK, dV). Query
// blocks of BQ rows that see the keys are visited in ascending order (DQ_ORDERED: descending),
// double-buffered. KV_REGS keeps the warp's K and V fragments in registers (small heads);
// otherwise they are re-read from shared memory per query block.
// DQ_ORDERED: dQ here too, no dQ kernel (5 tile products instead of 7). Per query block the CTA
// puts dS in shared memory and computes its partial dQ = dS K over its keys; the partials of
// the key blocks that see a query block (0 .. qmax / BKV) are summed in fp32 in dq_acc in
// ascending key-block order, each CTA waiting for its turn on the block's semaphore: a fixed
// order, so deterministic without float atomics. The last one adds the sum into dq (bf16).
// Key block k waits only for key block k - 1 of its (b, h), whose CTA took its ticket earlier
// (tiles are handed out in start order, key block by key block), so every wait ends.
// Why descending: a query block's first contributor is key block 0 and its last the diagonal
// one. In ascending order key block k meets query block q at its (q - k)-th step and key block
// k - 1 at its (q - k + 1)-th, so each CTA would idle one whole step per key block before it
// (k steps for key block k, at the start). In descending order both meet q at the same step
// (the blocks from the end), so k waits only for k - 1's add of that step: the resident CTAs of
// a head run skewed by one add each, not by one step, and read the same Q / dO tiles together.
// CHAINS > 1 (ordered only): the key blocks of a query block add in CHAINS chains instead of
// one, key block k into the sum (slot) of chain k % CHAINS after k - CHAINS, so a key block waits
// for one CHAINS-th of the adds before it; attn_dq_finish_kernel then adds the chains' sums into
// dq in chain order. Still a fixed order; CHAINS slots of dq_acc.
// DQ_ATOMIC: the same partial dQ, added into dq_acc (zeroed before) by fp32 atomics as it comes,
// query blocks ascending as in the split kernel (at each step the CTAs of a head are at
// different query blocks: few adds to the same address at once); attn_dq_finish_kernel then
// adds dq_acc into dq. No waits; the sum order, and so its rounding, varies from run to run.
// WG 1, 2: the products as wgmma, one per warpgroup of 64 keys (sm_90a; hs 64 or 128, query
// blocks of 32 or 64; K, V from shared memory where not KV_REGS). WG 3 (split only) pipelines the
// query blocks as the dQ kernel does its key blocks: S^T and dP^T of the next query block run on
// the tensor cores while the warpgroup computes this block's P^T and dS^T; Q, dO and their row
// statistics are triple-buffered (this block's for dV and dK, the next one's in flight, the one
// after arriving).
// The split hs-64 warpgroup with K and V read from shared memory is built for 3 CTAs an SM (168
// registers: 24 bytes of spills, 3 local loads on the prefetch's path), where its 187 registers
// would allow 2, as the register-fragment default's 218 do: more warps to hide latency with.
template <int HS, int NW, bool KV_REGS, int DQ, int WG>
constexpr int dkdv_min_blocks() { return !KV_REGS && WG != 0 && DQ == DQ_SPLIT && NW == 4 && HS == 64 ? 3 : 1; }
template <int HS, int NW, int BQ, bool KV_REGS, int DQ = DQ_SPLIT, int WG = 0, int CHAINS = 1, int FIX_BITS = 0,
          int FIX_MODE = 0>
__global__ void __launch_bounds__(NW * 32, (dkdv_min_blocks<HS, NW, KV_REGS, DQ, WG>()))
    attn_bwd_dkdv_kernel(AttnArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    __trap();
#else
    constexpr int BKV = 16 * NW, NT = 32 * NW;
    constexpr int NQ = BQ / 8;   // n-tiles of S^T (queries)
    constexpr int KH = HS / 16;  // k-steps over the head dim
    constexpr int NO = HS / 8;   // n-tiles of dK, dV (head dim)
    static_assert(BQ % 16 == 0 && BQ >= MIN_QBLOCK, "query block");
    constexpr bool W = WG != 0, PIPE = WG == 3;
    constexpr bool FUSED_DQ = DQ != DQ_SPLIT, ORDERED = DQ == DQ_ORDERED;
    constexpr int QBUF = PIPE ? 3 : 2;   // buffers of the query-block tiles and statistics
    static_assert(!W || (NW % 4 == 0 && HS % 64 == 0 && BQ % 32 == 0 &&
                         (!FUSED_DQ || ((NW == 4 || NW == 8) && HS == 64 && BQ == 64))),
                  "wgmma: warpgroups of 64 keys, query blocks of 32 or 64 (fused: 1 or 2 warpgroups, hs 64, "
                  "query blocks of 64)");
    static_assert(!PIPE || !FUSED_DQ, "pipelined: the split backward only");
    bf16_t *sK = reinterpret_cast<bf16_t *>(attn_smem_base<W>());
    bf16_t *sV = sK + BKV * HS;
    bf16_t *sQ = sV + BKV * HS;         // QBUF buffers
    bf16_t *sdO = sQ + QBUF * BQ * HS;  // QBUF buffers
    bf16_t *sdS = sdO + QBUF * BQ * HS; // FUSED_DQ: BQ x BKV, dS [query][key]
    // The query rows' statistics, QBUF x BQ each, by pairs of rows: the two columns of S^T a thread
    // holds in an n-tile are one such pair, so one 16-byte load gives their lse * log2(e) and D, one
    // 8-byte load their positions.
    float4 *s_ld = reinterpret_cast<float4 *>(sdS + (FUSED_DQ ? BQ * BKV : 0));  // (l2, D, l2, D)
    int2 *s_pos = reinterpret_cast<int2 *>(s_ld + QBUF * BQ / 2);
    void *s_stage = reinterpret_cast<void *>((reinterpret_cast<uintptr_t>(s_pos + QBUF * BQ / 2) + 15) & ~(uintptr_t)15);

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane >> 2, t4 = lane & 3;
    // The CTA's tile: (b*NH + h, key block kb) = blockIdx. Ordered: the tile of the CTA's ticket,
    // tickets taken in the order CTAs start, tiles numbered key block by key block, so the key
    // block a CTA waits for belongs to a CTA that started before it, in any dispatch order.
    int bh = blockIdx.x, kb = blockIdx.y;
    if constexpr (ORDERED) {
        __shared__ int s_ticket;
        if (tid == 0) s_ticket = atomicAdd(a.dq_ticket, 1);
        __syncthreads();
        bh = s_ticket % (int)gridDim.x, kb = s_ticket / (int)gridDim.x;
    }
    const int b = bh / a.NH, h = bh % a.NH;
    const int k0 = kb * BKV;
    const int C = a.NH * HS, Tq = a.Tq, Tk = a.Tk;
    const int nqb = (Tq + BQ - 1) / BQ;

    // The query blocks that see key k0 or later (the table is uniform across the CTA): ascending;
    // ordered, descending (STEP -1), see the comment above.
    constexpr int STEP = ORDERED ? -1 : 1;
    auto seeing = [&](int blk) {   // blk, or the next block in STEP order that sees the keys; -1 or nqb: none
        while (blk >= 0 && blk < nqb && a.qmax[blk] < k0) blk += STEP;
        return blk;
    };
    int qb = seeing(ORDERED ? nqb - 1 : 0);
    // Written, not added (AttnArgs::write): the split kernel only. The fused ones add into dk, dv
    // zeroed by the launcher (launch_bwd): at 255 registers, a write path tips several into spills.
    const bool write = !FUSED_DQ && a.write;
    if (qb < 0 || qb >= nqb) {   // no query sees these keys: nothing to add (written: zeros)
        if (write) {
            const int k1 = min(k0 + BKV, Tk);
            zero_head_rows<HS, NT>(a.dk + (long)b * Tk * a.ldkv + h * HS, a.ldkv, k0, k1, tid);
            zero_head_rows<HS, NT>(a.dv + (long)b * Tk * a.ldkv + h * HS, a.ldkv, k0, k1, tid);
        }
        return;
    }

    const long stat0 = ((long)b * a.NH + h) * Tq;
    auto load_query_block = [&](int blk, int buf) {
        const int q0 = blk * BQ;
        load_tile<BQ, HS, NT, W>(sQ + buf * BQ * HS, a.q + ((long)b * Tq + q0) * a.ldq + h * HS, a.ldq, Tq - q0, tid);
        load_tile<BQ, HS, NT, W>(sdO + buf * BQ * HS, a.dout + ((long)b * Tq + q0) * C + h * HS, C, Tq - q0, tid);
        for (int i = tid; i < BQ; i += NT) {
            const int r = q0 + i;
            const bool valid = r < Tq;
            const int pos = valid ? a.q_pos[r] : -1;
            const float l2 = valid ? a.lse_c[stat0 + r] * LOG2E_F : 0.0f, d = valid ? a.dsum[stat0 + r] : 0.0f;
            float4 &ld = s_ld[(buf * BQ + i) / 2];
            int2 &p2 = s_pos[(buf * BQ + i) / 2];
            if (i % 2) ld.z = l2, ld.w = d, p2.y = pos;
            else ld.x = l2, ld.y = d, p2.x = pos;
        }
    };

    load_tile<BKV, HS, NT, W>(sK, a.k + ((long)b * Tk + k0) * a.ldkv + h * HS, a.ldkv, Tk - k0, tid);
    load_tile<BKV, HS, NT, W>(sV, a.v + ((long)b * Tk + k0) * a.ldkv + h * HS, a.ldkv, Tk - k0, tid);
    load_query_block(qb, 0);
    cp_async_commit();
    int nxt = seeing(qb + STEP);   // PIPE: the next query block, loaded with the first
    if (PIPE) {
        if (nxt >= 0 && nxt < nqb) load_query_block(nxt, 1);
        cp_async_commit();
    }

    constexpr int KF = KV_REGS ? KH : 1;
    uint32_t kf[KF][4], vf[KF][4];
    const int krow_a = warp * 16 + (lane & 15);  // A-operand row address of this lane
    if (KV_REGS || PIPE) {
        cp_async_wait<PIPE ? 1 : 0>();
        if constexpr (W) fence_proxy_async();
        __syncthreads();
    }
    if (KV_REGS)
#pragma unroll
        for (int ks = 0; ks < KF; ks++) {
            ldsm_x4(kf[ks], smem_addr(sK + tile_off<HS, BKV, W>(krow_a, ks * 16 + (lane >> 4) * 8)));
            ldsm_x4(vf[ks], smem_addr(sV + tile_off<HS, BKV, W>(krow_a, ks * 16 + (lane >> 4) * 8)));
        }

    float dK[NO][4], dV[NO][4];
#pragma unroll
    for (int no = 0; no < NO; no++)
#pragma unroll
        for (int i = 0; i < 4; i++) dK[no][i] = dV[no][i] = 0.0f;
    const int key_lo = k0 + warp * 16 + g;  // this lane's keys: key_lo, key_lo + 8

    float st[NQ][4], dpt[NQ][4];   // S^T = K Q^T and dP^T = V dO^T (16 keys x BQ queries per warp)
    if constexpr (PIPE)
        bwd_recompute<HS, BQ, KV_REGS, KF, true, BKV>(st, dpt, kf, vf, sK, sV, krow_a, sQ, sdO, lane);
    int buf = 0;   // this query block's buffers (PIPE: the next block's are (buf + 1) % 3)
    while (qb >= 0 && qb < nqb) {
        // Prefetch the next query block (PIPE: the one after it) into buffers the previous
        // iterations are done with.
        const int next = PIPE ? nxt : seeing(qb + STEP), pre = PIPE ? seeing(next + STEP) : next;
        if (pre >= 0 && pre < nqb) load_query_block(pre, PIPE ? (buf + 2) % 3 : buf ^ 1);
        cp_async_commit();
        cp_async_wait<1>();
        if constexpr (W) fence_proxy_async();
        __syncthreads();
        const bf16_t *cQ = sQ + buf * BQ * HS, *cdO = sdO + buf * BQ * HS;
        const float4 *cld = s_ld + buf * BQ / 2;
        const int2 *cp = s_pos + buf * BQ / 2;

        const bool more = PIPE && next >= 0 && next < nqb;
        float stn[NQ][4], dptn[NQ][4];   // PIPE: S^T and dP^T of the next block, in flight below
        if constexpr (PIPE) {
            const int nb = (buf + 1) % 3;
            if (more)
                bwd_recompute_issue<HS, BQ, KV_REGS, KF, BKV>(stn, dptn, kf, vf, sK, sV, krow_a, sQ + nb * BQ * HS,
                                                              sdO + nb * BQ * HS);
        } else {
            bwd_recompute<HS, BQ, KV_REGS, KF, W, BKV>(st, dpt, kf, vf, sK, sV, krow_a, cQ, cdO, lane);
        }
        // P^T = exp2(S^T scale log2e - lse2) where visible; dS^T = P^T (dP^T - D).
        auto weights = [&](auto masked) {
#pragma unroll
            for (int nt = 0; nt < NQ; nt++) {
                const float4 ld = cld[nt * 4 + t4];   // columns nt * 8 + 2 t4 + e, e = 0, 1
                int2 pos = make_int2(0, 0);
                if constexpr (decltype(masked)::value) pos = cp[nt * 4 + t4];
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const float l2 = e ? ld.z : ld.x, d = e ? ld.w : ld.y;
#pragma unroll
                    for (int hh = 0; hh < 2; hh++) {
                        const int i = 2 * hh + e;
                        const bool visible = !decltype(masked)::value || key_lo + 8 * hh <= (e ? pos.y : pos.x);
                        // exp2 of every element, then the select: no per-element branch around it
                        // (an invisible key's inf or NaN is dropped by the select).
                        const float e2 = fast_exp2(fmaf(st[nt][i], a.scale_log2, -l2));
                        const float p = visible ? e2 : 0.0f;
                        dpt[nt][i] = p * (dpt[nt][i] - d);
                        st[nt][i] = p;
                    }
                }
            }
        };
        // A query block whose rows all see every key of the CTA (most of them) skips the positions
        // and compares: a branch, two copies of the loop. Only where K and V are read from shared
        // memory by the wgmma: with their fragments in registers, ptxas (13.0) gave those registers
        // to the copies' loads while the next block's S^T still needed them (sass_check.sh).
        if constexpr (W && !KV_REGS) {
            if (k0 + BKV - 1 <= a.qmin[qb]) weights(std::false_type());
            else weights(std::true_type());
        } else {
            weights(std::true_type());
        }
        // dV += P^T dO, dK += dS^T Q (k-steps over the block's queries)
        if constexpr (W) {
            uint32_t pa[BQ / 16][4], da[BQ / 16][4];
#pragma unroll
            for (int kk = 0; kk < BQ / 16; kk++) {
                pack_a(pa[kk], st[2 * kk], st[2 * kk + 1]);
                pack_a(da[kk], dpt[2 * kk], dpt[2 * kk + 1]);
            }
            wg_fence_a(pa);
            wg_fence_a(da);
            wgmma_fence();
            wg_rs_k<true, BQ>(dV, pa, cdO, true);
            wg_rs_k<true, BQ>(dK, da, cQ, true);
            wg_commit_wait();   // dV, dK, and (PIPE) S^T and dP^T of the next block
            wg_fence_acc(dV);
            wg_fence_acc(dK);
            if (more) wg_take_next(st, dpt, stn, dptn);
        } else {
#pragma unroll
            for (int kk = 0; kk < BQ / 16; kk++) {
                uint32_t pa[4], da[4];
                pack_a(pa, st[2 * kk], st[2 * kk + 1]);
                pack_a(da, dpt[2 * kk], dpt[2 * kk + 1]);
#pragma unroll
                for (int np = 0; np < NO / 2; np++) {
                    const int r = kk * 16 + (lane & 15), c = np * 16 + (lane >> 4) * 8;
                    mma_x2<true>(dV[2 * np], dV[2 * np + 1], pa, smem_addr(cdO + swz<HS>(r, c)));
                    mma_x2<true>(dK[2 * np], dK[2 * np + 1], da, smem_addr(cQ + swz<HS>(r, c)));
                }
            }
        }
        if constexpr (FUSED_DQ && W) {
            // dS [query][key] from dS^T's fragments, 16 queries x the warp's 16 keys a stmatrix:
            // packed as for the dK product (matrix 0: keys g, queries 2t4..; 1: keys g + 8; 2, 3:
            // queries + 8), stored transposed; lane l addresses row l % 8 of matrix l / 8.
            const int mrow = (lane & 7) + ((lane >> 4) << 3), mcol = warp * 16 + ((lane >> 3) & 1) * 8;
#pragma unroll
            for (int kk = 0; kk < BQ / 16; kk++) {
                uint32_t ds[4];
                pack_a(ds, dpt[2 * kk], dpt[2 * kk + 1]);
                stsm_x4_trans(smem_addr(sdS + tile_off<BKV, BQ, W>(kk * 16 + mrow, mcol)), ds);
            }
        } else if constexpr (FUSED_DQ) {
#pragma unroll
            for (int nt = 0; nt < NQ; nt++)
#pragma unroll
                for (int i = 0; i < 4; i++)   // C fragment of dS^T: key row g + 8(i/2), query col 2t4 + i%2
                    st_shared_bf16(sdS + tile_off<BKV, BQ, W>(nt * 8 + 2 * t4 + (i & 1), warp * 16 + g + 8 * (i >> 1)),
                                   dpt[nt][i]);
        }
        if constexpr (FUSED_DQ) {
            if constexpr (W) fence_proxy_async();
            __syncthreads();
            fused_dq_add<HS, NW, BQ, W, DQ, CHAINS, FIX_BITS, FIX_MODE>(a, sdS, sK, b, h, kb, qb, nqb, s_stage);
        }
        __syncthreads();  // buffer `buf` is refilled by a later iteration's prefetch
        buf = PIPE ? (buf + 1) % 3 : buf ^ 1;
        qb = next;
        nxt = pre;
    }
    if constexpr (FUSED_DQ && FIX_MODE == 2)
        if (tid == 0) bulk_wait_all();   // the last bulk reduction is done with its shared source

#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        const int key = key_lo + 8 * hh;
        if (key >= Tk) continue;
        bf16_t *dkrow = a.dk + ((long)b * Tk + key) * a.ldkv + h * HS;
        bf16_t *dvrow = a.dv + ((long)b * Tk + key) * a.ldkv + h * HS;
#pragma unroll
        for (int no = 0; no < NO; no++) {
            put_bf16x2(dkrow + no * 8 + 2 * t4, a.scale * dK[no][2 * hh], a.scale * dK[no][2 * hh + 1], write);
            put_bf16x2(dvrow + no * 8 + 2 * t4, dV[no][2 * hh], dV[no][2 * hh + 1], write);
        }
    }
#endif
}

// The last step of the atomic backward (one slot), of the ordered one in chains (a slot per chain)
// and (BITS 64 or 32) of the fixed-point one: dq (b, t, h*hs + c) += (a.write: =) scale * the row's
// sum (b, h, t, c) of dq_acc. fp32 (BITS 0): the sum of slots j in slot order, over the slots that hold a sum
// for the row: j <= the last key block (of bkv keys) its query block (of bq) sees. Fixed point:
// the integer sum in units of 2^(e_r - P) (one rounding to fp32, then an exact power of two), NaN
// for a marked row. Two columns a thread.
template <int BITS>
__global__ void attn_dq_finish_kernel(AttnArgs a, int slots, int bq, int bkv) {
    const long n = (long)a.B * a.NH * a.Tq * a.hs / 2, slot = 2 * n;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const long e = 2 * i, row = e / a.hs;   // row (b * NH + h) * Tq + t
        const int c = (int)(e - row * a.hs), t = (int)(row % a.Tq), bh = (int)(row / a.Tq);
        const int qm = a.qmax[t / bq], last = qm < 0 ? -1 : qm / bkv;
        bf16_t *dst = a.dq + ((long)(bh / a.NH) * a.Tq + t) * a.ldq + (bh % a.NH) * a.hs + c;
        if (last < 0) {   // no key visible: nothing was added (written: zeros)
            if (a.write) put_bf16x2(dst, 0.0f, 0.0f, true);
            continue;
        }
        float x = 0.0f, y = 0.0f;
        if constexpr (BITS == 0) {
            for (int j = 0; j < slots && j <= last; j++) x += a.dq_acc[j * slot + e], y += a.dq_acc[j * slot + e + 1];
        } else {
            typedef typename FixSigned<BITS>::T I;   // the integer sums' bits, read as signed
            const I *acc = reinterpret_cast<const I *>(a.dq_acc);
            const float unit = a.dq_bad[row] ? NAN : exp2_int(a.dq_exp[row] - (BITS - 2));   // [2^-126, 2^(130 - BITS)]
            x = (float)acc[e] * unit, y = (float)acc[e + 1] * unit;
        }
        put_bf16x2(dst, a.scale * x, a.scale * y, a.write);
    }
}

// ---- backward: dQ -----------------------------------------------------------------------------
// CTA: (b, h) = blockIdx.x, queries [q0, q0 + 16*NW), heavy blocks first as in the forward.
// Warp w owns 16 query rows. Key blocks of BK keys, double-buffered. QO_REGS keeps the warp's
// Q and dO fragments in registers (small heads).
// WG 1: the products as wgmma, one per warpgroup of 64 queries (sm_90a; hs 64 or 128; Q, dO from
// shared memory where not QO_REGS). WG 2 pipelines the key blocks as the forward does: S and dP of
// block kb + 1 run on the tensor cores while the warpgroup computes block kb's dS; K is
// triple-buffered (block kb's for dQ += dS K, kb + 1's in flight, kb + 2's arriving), V double.
template <int HS, int NW, int BK, bool QO_REGS, int WG = 0>
__global__ void __launch_bounds__(NW * 32) attn_bwd_dq_kernel(AttnArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    __trap();
#else
    constexpr int BQ = 16 * NW, NT = 32 * NW;
    constexpr int NS = BK / 8, KH = HS / 16, NO = HS / 8;
    constexpr bool W = WG != 0, PIPE = WG == 2;
    constexpr int KBUF = PIPE ? 3 : 2;
    static_assert(BK % 16 == 0, "key block");
    static_assert(!W || (NW % 4 == 0 && HS % 64 == 0 && BK % 32 == 0), "wgmma: warpgroups of 64 queries");
    static_assert(!(WG == 1 && HS == 64 && BK == 64 && QO_REGS), "ptxas miscompiles this one (see attn_fwd_kernel)");
    bf16_t *sQ = reinterpret_cast<bf16_t *>(attn_smem_base<W>());
    bf16_t *sdO = sQ + BQ * HS;
    bf16_t *sK = sdO + BQ * HS;        // KBUF buffers
    bf16_t *sV = sK + KBUF * BK * HS;  // 2 buffers
    __shared__ int s_max, s_min;

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane >> 2, t4 = lane & 3;
    const int b = blockIdx.x / a.NH, h = blockIdx.x % a.NH;
    const int q0 = (gridDim.y - 1 - blockIdx.y) * BQ;
    const int C = a.NH * HS, Tq = a.Tq, Tk = a.Tk;
    const long stat0 = ((long)b * a.NH + h) * Tq;

    int lim[2];
    float l2[2], dr[2];
    int my_max = -1, my_min = INT_MAX;
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        const int r = q0 + warp * 16 + g + 8 * hh;
        const bool valid = r < Tq;
        lim[hh] = valid ? min(a.q_pos[r], Tk - 1) : -1;
        l2[hh] = valid ? a.lse_c[stat0 + r] * LOG2E_F : 0.0f;
        dr[hh] = valid ? a.dsum[stat0 + r] : 0.0f;
        if (valid) my_max = max(my_max, lim[hh]), my_min = min(my_min, lim[hh]);
    }
    int kend, kfull;
    block_minmax(my_max, my_min, &s_max, &s_min, &kend, &kfull);
    kend += 1;
    kfull += 1;
    if (kend <= 0) {   // no query of the block sees a key: dq unchanged (written: zeros)
        if (a.write) zero_head_rows<HS, NT>(a.dq + (long)b * Tq * a.ldq + h * HS, a.ldq, q0, min(q0 + BQ, Tq), tid);
        return;
    }
    const int nkb = (kend + BK - 1) / BK;
    const bf16_t *kbase = a.k + (long)b * Tk * a.ldkv + h * HS;
    const bf16_t *vbase = a.v + (long)b * Tk * a.ldkv + h * HS;
    // Key block kb's K and V tiles, and where they live (K: buffer kb % KBUF; V: kb % 2).
    auto kbuf = [&](int kb) { return sK + (kb % KBUF) * BK * HS; };
    auto vbuf = [&](int kb) { return sV + (kb & 1) * BK * HS; };
    auto load_kv = [&](int kb) {
        const int k1 = kb * BK;
        load_tile<BK, HS, NT, W>(kbuf(kb), kbase + (long)k1 * a.ldkv, a.ldkv, kend - k1, tid);
        load_tile<BK, HS, NT, W>(vbuf(kb), vbase + (long)k1 * a.ldkv, a.ldkv, kend - k1, tid);
    };

    load_tile<BQ, HS, NT, W>(sQ, a.q + ((long)b * Tq + q0) * a.ldq + h * HS, a.ldq, Tq - q0, tid);
    load_tile<BQ, HS, NT, W>(sdO, a.dout + ((long)b * Tq + q0) * C + h * HS, C, Tq - q0, tid);
    load_kv(0);
    cp_async_commit();
    if (PIPE) {   // block 1 too: block 0's prefetch
        if (nkb > 1) load_kv(1);
        cp_async_commit();
    }

    constexpr int QF = QO_REGS ? KH : 1;
    uint32_t qf[QF][4], of[QF][4];
    const int qrow_a = warp * 16 + (lane & 15);
    if (QO_REGS || PIPE) {
        cp_async_wait<PIPE ? 1 : 0>();
        if constexpr (W) fence_proxy_async();
        __syncthreads();
    }
    if (QO_REGS)
#pragma unroll
        for (int ks = 0; ks < QF; ks++) {
            ldsm_x4(qf[ks], smem_addr(sQ + tile_off<HS, BQ, W>(qrow_a, ks * 16 + (lane >> 4) * 8)));
            ldsm_x4(of[ks], smem_addr(sdO + tile_off<HS, BQ, W>(qrow_a, ks * 16 + (lane >> 4) * 8)));
        }

    float dQ[NO][4];
#pragma unroll
    for (int no = 0; no < NO; no++) dQ[no][0] = dQ[no][1] = dQ[no][2] = dQ[no][3] = 0.0f;

    float s[NS][4], dp[NS][4];   // S = Q K^T, dP = dO V^T of the current key block
    if constexpr (PIPE) {
        bwd_recompute<HS, BK, QO_REGS, QF, true, BQ>(s, dp, qf, of, sQ, sdO, qrow_a, kbuf(0), vbuf(0), lane);
        __syncthreads();   // every warpgroup is done with V of block 0: its buffer takes block 2
    }
    for (int kb = 0; kb < nkb; kb++) {
        // Prefetch into buffers the previous iterations are done with: block kb + 1 (PIPE: kb + 2).
        const int pre = PIPE ? kb + 2 : kb + 1;
        if (pre < nkb) load_kv(pre);
        cp_async_commit();
        cp_async_wait<1>();
        if constexpr (W) fence_proxy_async();
        __syncthreads();
        const bf16_t *cK = kbuf(kb);
        const int k0 = kb * BK;

        const bool next = PIPE && kb + 1 < nkb;
        float sn[NS][4], dpn[NS][4];   // PIPE: S and dP of block kb + 1, in flight during this dS
        if constexpr (PIPE) {
            if (next)
                bwd_recompute_issue<HS, BK, QO_REGS, QF, BQ>(sn, dpn, qf, of, sQ, sdO, qrow_a, kbuf(kb + 1),
                                                             vbuf(kb + 1));
        } else {
            bwd_recompute<HS, BK, QO_REGS, QF, W, BQ>(s, dp, qf, of, sQ, sdO, qrow_a, cK, vbuf(kb), lane);
        }
        const bool need_mask = k0 + BK > kfull;
#pragma unroll
        for (int nt = 0; nt < NS; nt++)
#pragma unroll
            for (int hh = 0; hh < 2; hh++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int i = 2 * hh + e;
                    const bool visible = !need_mask || k0 + nt * 8 + 2 * t4 + e <= lim[hh];
                    const float p = visible ? fast_exp2(fmaf(s[nt][i], a.scale_log2, -l2[hh])) : 0.0f;
                    s[nt][i] = p * (dp[nt][i] - dr[hh]);  // dS
                }
        // dQ += dS K
        if constexpr (W) {
            uint32_t da[BK / 16][4];
#pragma unroll
            for (int kk = 0; kk < BK / 16; kk++) pack_a(da[kk], s[2 * kk], s[2 * kk + 1]);
            wg_batch<true, BK>(dQ, da, cK, true);   // its wait completes S and dP of block kb + 1 too
            if (next) wg_take_next(s, dp, sn, dpn);
        } else {
#pragma unroll
            for (int kk = 0; kk < BK / 16; kk++) {
                uint32_t da[4];
                pack_a(da, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
                for (int np = 0; np < NO / 2; np++)
                    mma_x2<true>(dQ[2 * np], dQ[2 * np + 1], da,
                                 smem_addr(cK + swz<HS>(kk * 16 + (lane & 15), np * 16 + (lane >> 4) * 8)));
            }
        }
        __syncthreads();   // this block's buffers are refilled by the next iterations' prefetches
    }

#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        const int r = q0 + warp * 16 + g + 8 * hh;
        if (r >= Tq) continue;
        bf16_t *dqrow = a.dq + ((long)b * Tq + r) * a.ldq + h * HS;
#pragma unroll
        for (int no = 0; no < NO; no++)
            put_bf16x2(dqrow + no * 8 + 2 * t4, a.scale * dQ[no][2 * hh], a.scale * dQ[no][2 * hh + 1], a.write);
    }
#endif
}

