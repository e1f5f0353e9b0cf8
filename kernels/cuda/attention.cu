// Memory-efficient (flash-style) causal attention on the GPU. Twin of kernels/cpu/attention.c.
//
// Two implementations behind one interface (kernels_cuda.h):
//  1. Tensor cores (bf16, sm_80+, hs in {16, 32, 64, 128}): FlashAttention-2 structure written
//     with mma.sync.m16n8k16 bf16 -> fp32, ldmatrix and cp.async (inline PTX).
//       forward   one CTA per (b, h, block of BR queries); each warp owns 16*MT query rows and
//                 walks the key blocks (BC keys, double-buffered in shared memory) with an
//                 online softmax in fp32, base 2; S and P never leave registers (the C
//                 fragment of S = Q K^T is re-packed in place as the A fragment of P V).
//       backward  D = rowsum(dout * out) first (one warp per query row and head), then two
//                 kernels that each own their outputs, so there are no atomics:
//                   dK/dV: one CTA per (b, h, block of 16*NW keys); walks the query blocks
//                          that see it, computes S^T = K Q^T and dP^T = V dO^T, then
//                          dV += P^T dO and dK += dS^T Q;
//                   dQ:    one CTA per (b, h, block of 16*NW queries); walks its key blocks,
//                          S = Q K^T, dP = dO V^T, dQ += dS K.
//                 Scores are recomputed in both (7 tile products instead of FA2's 5) — the
//                 price of determinism without a dq accumulator in global memory.
//                 Fused variants (NWQ = 0) have that accumulator instead: the dK/dV kernel
//                 computes each query block's partial dQ = dS K and the key blocks add them
//                 in fp32 in ascending order, one at a time (a semaphore per query block;
//                 see attn_bwd_dkdv_kernel): 5 products, still deterministic. Atomic
//                 variants (NWQ = -1) add the partials by fp32 atomics instead (as
//                 FlashAttention-2): no waits, not deterministic, never a default.
//                 Fixed-point variants (NWQ = -2 to -7) add them as integers in a per-row
//                 unit from a bound known beforehand: no waits, and the same bits in any order.
//  2. CUDA cores (any arch, any hs <= 256, fp32 or bf16): one warp per query row (forward,
//     dq) or key row (dk, dv), dot products reduced across the warp. Correct and slow: the
//     fp32 path, Volta (sm_70) and odd head sizes.
//
// Masking is by global position (key j visible to query t iff j <= q_pos[t]); q_pos may be any
// sequence (contiguous, zigzag). A query block reads keys [0, 1 + max position in the block)
// and masks per element only in key blocks beyond 1 + min position. Rows past Tq and keys past
// Tk are zero-filled in shared memory, masked, and never written.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type";
// g = lane / 4, t = lane % 4; each .b32 register holds two bf16, the lower column in the low half):
//   A (16x16, row):  a0 = (g, 2t..2t+1)  a1 = (g+8, 2t..)  a2 = (g, 2t+8..)  a3 = (g+8, 2t+8..)
//   B (16x8, col):   b0 = (k 2t..2t+1, n g)                b1 = (k 2t+8.., n g)
//   C (16x8, f32):   c0,c1 = (g, 2t), (g, 2t+1)            c2,c3 = (g+8, 2t), (g+8, 2t+1)
// ldmatrix.x4: lanes 8i..8i+7 give the row addresses of 8x8 matrix i, which lands in register i;
// without .trans lane l receives (row l/4, cols 2(l%4), +1) of each matrix, with .trans the
// transpose. Hence, on row-major shared tiles:
//   A from [m][k]:           row = r0 + (lane & 15),                 col = c0 + (lane >> 4) * 8
//   B from [n][k] (no trans), two n-tiles: row = n0 + (lane & 7) + (lane >> 4) * 8,
//                                          col = k0 + ((lane >> 3) & 1) * 8
//                            -> r0, r1 = b0, b1 of n-tile n0;  r2, r3 = b0, b1 of n-tile n0 + 8
//   B from [k][n] (.trans), two n-tiles:  row = k0 + (lane & 15),   col = n0 + (lane >> 4) * 8
//                            -> r0, r1 = b0, b1 of n-tile n0;  r2, r3 = b0, b1 of n-tile n0 + 8
//   C of two n-tiles (n0, n0+8) -> A of one k-step: a0 = pack(c0,c1 of n0), a1 = pack(c2,c3 of
//   n0), a2 = pack(c0,c1 of n0+8), a3 = pack(c2,c3 of n0+8).
// Shared tiles are row-major (rows x HS bf16) with the 16-byte chunks of row r XOR-swizzled by
// r mod 8 (mod HS/8 for narrow heads), so the 8 rows of an ldmatrix hit distinct banks.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>

#include "cuda_common.h"
#include "attention_kernels.h"

// ---- launchers and the variant tables ----------------------------------------------------------

template <typename K> static void set_smem(K kernel, size_t bytes) {
    // Above 48 KiB a kernel must opt in; idempotent, so simply done before each launch.
    cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

// Dynamic shared memory of each kernel (wgmma kernels, WG, align their tiles to 1024 bytes in it):
// what the launchers ask for, and what a variant needs of the GPU (FwdVariant, BwdVariant::smem).
constexpr size_t wg_pad(int wg) { return wg ? 1024 : 0; }
template <int HS, int MT, int NW, int BC, int WG> constexpr size_t fwd_smem() {
    return (size_t)(16 * MT * NW + 4 * BC) * HS * sizeof(bf16_t) + wg_pad(WG);
}
template <int HS, int NWQ, int BK, int WG> constexpr size_t dq_smem() {   // the dQ kernel's
    constexpr int KBUF = WG == 2 ? 3 : 2;                                   // K buffers (pipelined: 3)
    return (size_t)(2 * 16 * NWQ + (KBUF + 2) * BK) * HS * sizeof(bf16_t) + wg_pad(WG);
}
// The dK/dV kernel's (WG_KV: its mode; FUSED: dQ in it, from NWQ).
template <int HS, int NW, int BQ, int NWQ, int WG_KV> constexpr size_t dkdv_smem() {
    constexpr int QBUF = WG_KV == 3 ? 3 : 2;   // query-block buffers (pipelined: 3)
    constexpr bool FUSED = dq_kind(NWQ) != DQ_SPLIT;
    return (size_t)(2 * 16 * NW + 2 * QBUF * BQ) * HS * sizeof(bf16_t) + (size_t)3 * QBUF * BQ * sizeof(float) +
           (FUSED ? (size_t)BQ * 16 * NW * sizeof(bf16_t) : 0) + dq_stage_bytes(NWQ, BQ, HS) + wg_pad(WG_KV);
}
// WG 0 mma.sync, 1 wgmma, 2 + the dQ kernel pipelined, 3 + the dK/dV kernel too: each kernel
// gets the mode it runs (so WG 1 and 2 share one dK/dV kernel, 2 and 3 one dQ kernel).
constexpr int wg_kv(int wg) { return wg == 3 ? 3 : wg != 0; }
constexpr int wg_q(int wg) { return wg >= 2 ? 2 : wg; }
template <int HS, int NW, int BQ, int NWQ, int BK, int WG> constexpr size_t bwd_smem() {   // its largest
    constexpr size_t kv = dkdv_smem<HS, NW, BQ, NWQ, wg_kv(WG)>();
    constexpr size_t q = dq_kind(NWQ) == DQ_SPLIT ? dq_smem<HS, NWQ, BK, wg_q(WG)>() : 0;
    return kv > q ? kv : q;
}

template <int HS, int MT, int NW, int BC, bool QR, int WG>
static void launch_fwd(const AttnArgs &a, cudaStream_t stream) {
    constexpr int BR = 16 * MT * NW;
    constexpr size_t smem = fwd_smem<HS, MT, NW, BC, WG>();
    set_smem(attn_fwd_kernel<HS, MT, NW, BC, QR, WG>, smem);
    const dim3 grid((unsigned)(a.B * a.NH), ceil_div_u(a.Tq, BR));
    attn_fwd_kernel<HS, MT, NW, BC, QR, WG><<<grid, NW * 32, smem, stream>>>(a);
    cudaCheckLaunch();
}

template <int HS, int NWQ, int BK, bool QO_REGS, int WG>
static void launch_bwd_dq(const AttnArgs &a, cudaStream_t stream) {
    constexpr int BQ2 = 16 * NWQ;
    constexpr size_t smem_q = dq_smem<HS, NWQ, BK, WG>();
    set_smem(attn_bwd_dq_kernel<HS, NWQ, BK, QO_REGS, WG>, smem_q);
    attn_bwd_dq_kernel<HS, NWQ, BK, QO_REGS, WG>
        <<<dim3((unsigned)(a.B * a.NH), ceil_div_u(a.Tq, BQ2)), NWQ * 32, smem_q, stream>>>(a);
    cudaCheckLaunch();
}

// The first `cols` columns of `rows` rows (row stride ld) = 0.
static void zero_heads(bf16_t *p, int ld, int rows, int cols, cudaStream_t stream) {
    cudaCheck(
        cudaMemset2DAsync(p, (size_t)ld * sizeof(bf16_t), 0, (size_t)cols * sizeof(bf16_t), (size_t)rows, stream));
}

template <int HS, int NW, int BQ, bool KV_REGS, int NWQ, int BK, bool QO_REGS, int WG>
static void launch_bwd(AttnArgs a, cudaStream_t stream) {
    // Position ranges of the dK/dV kernel's query blocks, then the two kernels (or the fused one).
    int *qmax = const_cast<int *>(a.qmax);
    const int nqb = (a.Tq + BQ - 1) / BQ;
    attn_qblock_max_kernel<<<ceil_div_u(nqb, 128), 128, 0, stream>>>(qmax, const_cast<int *>(a.qmin), a.q_pos, a.Tq,
                                                                      a.Tk, BQ);
    cudaCheckLaunch();
    constexpr int BKV = 16 * NW, DQ = dq_kind(NWQ);
    constexpr int CHAINS = dq_chains(NWQ, BK), FIX_BITS = dq_fix_bits(NWQ);
    constexpr int FIX_MODE = dq_fix_mode(NWQ);
    constexpr bool FUSED = DQ != DQ_SPLIT;
    constexpr int WG_KV = wg_kv(WG), WG_Q = wg_q(WG);
    constexpr size_t smem_kv = dkdv_smem<HS, NW, BQ, NWQ, WG_KV>();
    // Zeroed: the ordered kernel's ticket counter and semaphores (one int before the
    // semaphores); the atomic kernels' dQ sums.
    if (DQ == DQ_ORDERED)
        cudaCheck(cudaMemsetAsync(a.dq_ticket, 0, (1 + (size_t)a.B * a.NH * nqb * CHAINS) * sizeof(int), stream));
    if (DQ == DQ_ATOMIC || DQ == DQ_FIXED)
        cudaCheck(cudaMemsetAsync(a.dq_acc, 0, (size_t)a.B * a.NH * a.Tq * HS * dq_acc_bytes(NWQ), stream));
    // Written outputs that a fused kernel adds into (dk, dv; dq too in one ordered chain): zeroed.
    if (FUSED && a.write) {
        zero_heads(a.dk, a.ldkv, a.B * a.Tk, a.NH * HS, stream);
        zero_heads(a.dv, a.ldkv, a.B * a.Tk, a.NH * HS, stream);
        if (DQ == DQ_ORDERED && CHAINS == 1) zero_heads(a.dq, a.ldq, a.B * a.Tq, a.NH * HS, stream);
    }
    set_smem(attn_bwd_dkdv_kernel<HS, NW, BQ, KV_REGS, DQ, WG_KV, CHAINS, FIX_BITS, FIX_MODE>, smem_kv);
    attn_bwd_dkdv_kernel<HS, NW, BQ, KV_REGS, DQ, WG_KV, CHAINS, FIX_BITS, FIX_MODE>
        <<<dim3((unsigned)(a.B * a.NH), ceil_div_u(a.Tk, BKV)), NW * 32, smem_kv, stream>>>(a);
    cudaCheckLaunch();
    if constexpr (!FUSED) launch_bwd_dq<HS, NWQ, BK, QO_REGS, WG_Q>(a, stream);
    if constexpr (DQ == DQ_ATOMIC || DQ == DQ_FIXED || CHAINS > 1) {   // the sums (in slots) into dq
        attn_dq_finish_kernel<FIX_BITS><<<elementwise_grid((long)a.B * a.NH * a.Tq * HS / 2, 256), 256, 0, stream>>>(
            a, CHAINS, BQ, BKV);
        cudaCheckLaunch();
    }
}

typedef void (*AttnLaunch)(const AttnArgs &, cudaStream_t);
typedef void (*AttnLaunchBwd)(AttnArgs, cudaStream_t);
struct FwdVariant {
    int hs;
    AttnLaunch launch;
    const char *name;
    bool wg;      // wgmma (sm_90a)
    size_t smem;  // dynamic shared memory it asks of the GPU (its largest kernel's)
};
struct BwdVariant {
    int hs;
    AttnLaunchBwd launch;
    const char *name;
    int dq;       // DQ_SPLIT, or dQ in the dK/dV kernel (DQ_ORDERED, DQ_ATOMIC, DQ_FIXED: dq_acc, dq_sem)
    int slots;    // of dq_acc (and of the semaphores): 0 split, 1, or the ordered sums' chains
    bool wg;      // wgmma (sm_90a)
    int acc_bytes;   // of an element of dq_acc: 4 (fp32, int32) or 8 (int64)
    size_t smem;     // dynamic shared memory it asks of the GPU (its largest kernel's)
};
#define WG_SUFFIX_0 ""
#define WG_SUFFIX_1 ", wgmma"
#define WG_SUFFIX_2 ", wgmma, pipelined (the next block's products during this one's softmax / dS)"
#define WG_SUFFIX_3 ", wgmma, both kernels pipelined (the next block's products during this one's dS)"
#define FWD_ENTRY(HS, MT, NW, BC, QR, WG)                                                               \
    {HS, launch_fwd<HS, MT, NW, BC, QR, WG>,                                                            \
     "fwd " #NW " warps x " #MT "*16 rows, key blocks of " #BC " (Q regs " #QR ")" WG_SUFFIX_##WG, WG != 0, \
     fwd_smem<HS, MT, NW, BC, WG>()},
#define FUSED_NAME(NW, BQ, KVR, HOW, WG)                                                             \
    "fused dkdv+dq " #NW " warps x 16 keys, query blocks of " #BQ " (KV regs " #KVR "), dq summed " HOW       \
        WG_SUFFIX_##WG
#define BWD_ENTRY(HS, NW, BQ, KVR, NWQ, BK, QOR, WG)                                                   \
    {HS, launch_bwd<HS, NW, BQ, KVR, NWQ, BK, QOR, WG>,                                              \
     NWQ == 0 && BK > 1 ? FUSED_NAME(NW, BQ, KVR, "in key-block order in " #BK " chains", WG)             \
     : NWQ == 0  ? FUSED_NAME(NW, BQ, KVR, "in key-block order", WG)                                       \
     : NWQ == -1 ? FUSED_NAME(NW, BQ, KVR, "by fp32 atomics (not deterministic)", WG)                      \
     : NWQ == -2 ? FUSED_NAME(NW, BQ, KVR, "in 64-bit fixed point by integer atomics", WG)                 \
     : NWQ == -3 ? FUSED_NAME(NW, BQ, KVR, "in 32-bit fixed point by integer atomics", WG)                 \
     : NWQ == -4 ? FUSED_NAME(NW, BQ, KVR, "in 64-bit fixed point by integer atomics, staged", WG)         \
     : NWQ == -5 ? FUSED_NAME(NW, BQ, KVR, "in 32-bit fixed point by integer atomics, staged", WG)         \
     : NWQ == -6 ? FUSED_NAME(NW, BQ, KVR, "in 64-bit fixed point by bulk reductions", WG)                 \
     : NWQ == -7 ? FUSED_NAME(NW, BQ, KVR, "in 32-bit fixed point by bulk reductions", WG)                 \
                 : "dkdv " #NW " warps x 16 keys, query blocks of " #BQ " (KV regs " #KVR "); dq " #NWQ        \
                   " warps x 16 rows, key blocks of " #BK " (Q/dO regs " #QOR ")" WG_SUFFIX_##WG,         \
     dq_kind(NWQ), dq_slots(NWQ, BK), WG != 0, dq_acc_bytes(NWQ), bwd_smem<HS, NW, BQ, NWQ, BK, WG>()},
static constexpr FwdVariant fwd_variants[] = {ATTN_FWD_VARIANTS(FWD_ENTRY)};
static constexpr BwdVariant bwd_variants[] = {ATTN_BWD_VARIANTS(BWD_ENTRY)};
// Every variant fits the GPUs it is for: the mma.sync ones an A100 (163 KiB of shared memory a
// block: Perlmutter's, which no test here runs on), the wgmma ones an H100 (227 KiB).
template <typename V, size_t N> constexpr bool fit_a100_h100(const V (&table)[N]) {
    for (size_t i = 0; i < N; i++)
        if (table[i].smem > (table[i].wg ? 227u : 163u) * 1024) return false;
    return true;
}
static_assert(fit_a100_h100(fwd_variants) && fit_a100_h100(bwd_variants),
              "an attention variant asks for more shared memory than the GPU it is for has");
enum {
    N_FWD = (int)(sizeof fwd_variants / sizeof *fwd_variants),
    N_BWD = (int)(sizeof bwd_variants / sizeof *bwd_variants)
};

// The variant-th entry of head size hs in a table (NULL when there is none).
template <typename V> static const V *find_variant(const V *table, int n, int hs, int variant) {
    if (variant < 0) return NULL;
    for (int i = 0; i < n; i++)
        if (table[i].hs == hs && variant-- == 0) return &table[i];
    return NULL;
}
template <typename V> static int count_variants(const V *table, int n, int hs) {
    int c = 0;
    for (int i = 0; i < n; i++) c += table[i].hs == hs;
    return c;
}

// Selected variant per head size (index into that head size's entries; -1: CUDA-core path).
static const int head_sizes[] = {16, 32, 64, 128};
static int selected_fwd[4], selected_bwd[4];

static int table_index(int hs) {
    for (int i = 0; i < 4; i++)
        if (head_sizes[i] == hs) return i;
    return -1;
}

// Whether the wgmma variants run here: an sm_90 GPU and kernels built for sm_90a (the probe
// kernel's sm_90a build sets the flag; its other builds leave it 0).
__device__ int attn_wgmma_built;
__global__ void attn_wgmma_probe_kernel() {
#ifdef ATTN_WGMMA
    attn_wgmma_built = 1;
#endif
}
static bool wgmma_ok;
static bool env_applied;   // cuda_attention_apply_env ran: selected_* hold the choice

// The most dynamic shared memory a block may have here (cuda_attention_apply_env; until then, as
// for --plan without a GPU, no limit). sm_86 and sm_89 GPUs, which run the sm_80 code, give a
// block at most 99 KiB of the 163 KiB an A100 gives: some hs-128 variants do not fit.
static size_t smem_limit = SIZE_MAX;
// Whether a variant runs here: its wgmma kernels need wgmma_ok, and every kernel its shared memory.
// NULL (the CUDA-core path) runs anywhere.
template <typename V> static bool variant_runs(const V *v) {
    return !v || ((!v->wg || wgmma_ok) && v->smem <= smem_limit);
}
static int variant_dq(const FwdVariant &) { return DQ_SPLIT; }
static int variant_dq(const BwdVariant &v) { return v.dq; }

// The first variant of head size hs (index among its entries) that runs here, of the kind asked
// for (the backward: dq DQ_SPLIT, DQ_ORDERED, DQ_ATOMIC or DQ_FIXED; -1: any), wgmma or mma.sync as `wg`
// says; where hs has no wgmma variant of that kind, its first mma.sync one. -1: none at all.
template <typename V> static int first_variant(const V *table, int n, int hs, bool wg, int dq) {
    int mma = -1;   // the first mma.sync match (the answer for !wg, the fallback for wg)
    for (int i = 0, v = 0; i < n; i++) {
        if (table[i].hs != hs) continue;
        const bool kind_ok = dq < 0 || dq == variant_dq(table[i]);
        if (variant_runs(&table[i]) && kind_ok) {
            if (table[i].wg == wg) return v;
            if (mma < 0 && !table[i].wg) mma = v;
        }
        v++;
    }
    return mma;
}

// LSST_ATTN_VARIANTS="HS=F/B[,HS=F/B...]": forward variant F and backward variant B for head size
// HS (the indices attn_bench --variants reports), as cuda_attention_select.
static bool parse_long(const char **p, char sep, long *out) {   // digits, then sep (or the end if 0)
    char *end;
    *out = strtol(*p, &end, 10);
    if (end == *p || *end != sep) return false;
    *p = sep ? end + 1 : end;
    return true;
}
// each(hs, f, b) for every HS=F/B of the variable (unset: none), each checked: a head size with
// tensor-core kernels and variants it has. false, with the reason in err, at the first bad one.
template <typename F> static bool scan_variants_env(F each, char *err, size_t n) {
    const char *e = getenv("LSST_ATTN_VARIANTS");
    if (!e) return true;
    for (const char *p = e; *p;) {
        long hs, f, b;
        if (!(parse_long(&p, '=', &hs) && parse_long(&p, '/', &f) && (parse_long(&p, ',', &b) || parse_long(&p, 0, &b)))) {
            snprintf(err, n, "LSST_ATTN_VARIANTS=%s: expected HS=F/B[,HS=F/B...]", e);
            return false;
        }
        const long nf = count_variants(fwd_variants, N_FWD, (int)hs), nb = count_variants(bwd_variants, N_BWD, (int)hs);
        if (table_index((int)hs) < 0 || f < -1 || f >= nf || b < -1 || b >= nb) {
            snprintf(err, n, "LSST_ATTN_VARIANTS=%s: head size %ld has %ld forward and %ld backward variants", e, hs,
                     nf, nb);
            return false;
        }
        each((int)hs, (int)f, (int)b);
    }
    return true;
}
template <typename F> static void each_variants_env(F each) {
    char err[512];
    cudaRequire(scan_variants_env(each, err, sizeof err), "%s", err);
}

// LSST_ATTN_BWD (split | fused | atomic | fixed: the DQ kinds in that order): the kind of backward
// asked for, DQ_SPLIT unless set (measured 3x faster than fused at hs 64 on an H100).
static int env_bwd_kind(void) {
    static_assert(DQ_SPLIT == 0 && DQ_ORDERED == 1 && DQ_ATOMIC == 2 && DQ_FIXED == 3,
                  "LSST_ATTN_BWD's values in DQ order");
    const int v = cuda_env_switch("LSST_ATTN_BWD");
    return v < 0 ? DQ_SPLIT : v;
}

// At init: the wgmma probe, the defaults, then the environment's choice of kernels (for timing a
// whole training run with a non-default choice: tests/bench/gpu/e2e_compare.sh). Defaults: where
// the wgmma kernels run (sm_90 and an sm_90a build), each head size's first wgmma forward and
// backward variants (measured the fastest on an H200, RESULTS.md), else the first mma.sync ones
// that run here (variant 0 but where its shared memory does not fit: variant_runs), else the
// CUDA-core kernels. LSST_ATTN_WGMMA=0: mma.sync on sm_90 too. LSST_ATTN_BWD=split|fused|atomic|fixed:
// the first backward variant of that kind (DQ_SPLIT, DQ_ORDERED, DQ_ATOMIC: not deterministic,
// DQ_FIXED: its first is the 64-bit one by bulk reductions) that runs here (of the wgmma ones where those are
// chosen); a head size without one keeps the first split one. Then LSST_ATTN_VARIANTS (above) for
// the head sizes it names.
void cuda_attention_apply_env(void) {
    if (cuda_kernels()->sm_major == 9) {
        attn_wgmma_probe_kernel<<<1, 1>>>();
        cudaCheckLaunch();
        int built = 0;
        cudaCheck(cudaMemcpyFromSymbol(&built, attn_wgmma_built, sizeof built));
        wgmma_ok = built != 0;
    }
    smem_limit = (size_t)cuda_kernels()->smem_optin;
    const int dq = env_bwd_kind();
    bool want_wg = true;
    cuda_env_flag("LSST_ATTN_WGMMA", &want_wg);   // 1 | 0
    const bool wg = wgmma_ok && want_wg;
    for (int ti = 0; ti < 4; ti++) {
        const int hs = head_sizes[ti];
        const int f = first_variant(fwd_variants, N_FWD, hs, wg, -1);
        const int b = first_variant(bwd_variants, N_BWD, hs, wg, dq);
        // None of that kind: the first mma.sync one that runs here (split), else -1: CUDA-core.
        selected_fwd[ti] = f >= 0 ? f : first_variant(fwd_variants, N_FWD, hs, false, -1);
        selected_bwd[ti] = b >= 0 ? b : first_variant(bwd_variants, N_BWD, hs, false, DQ_SPLIT);
    }
    each_variants_env([](int hs, int f, int b) { cuda_attention_select(hs, f, b); });
    env_applied = true;
}


// ---- the C interface ----------------------------------------------------------------------------

template <typename T>
static void attention_forward_generic(T *out, float *lse, const T *q, const T *k, const T *v, const int *q_pos, int B,
                                      int Tq, int Tk, int NH, int hs, int ldq, int ldkv, cudaStream_t stream) {
    cudaRequire(hs <= 32 * GEN_MAX_PER_LANE, "cuda attention: head size %d > %d", hs, 32 * GEN_MAX_PER_LANE);
    const long rows = (long)B * NH * Tq;
    gen_forward_kernel<T><<<ceil_div_u(rows, GEN_WARPS), GEN_WARPS * 32, 0, stream>>>(
        out, lse, q, k, v, q_pos, B, Tq, Tk, NH, hs, ldq, ldkv, 1.0f / sqrtf((float)hs));
    cudaCheckLaunch();
}

template <typename T>
static void attention_backward_generic(T *dq, T *dk, T *dv, const T *dout, const float *lse, const float *dsum,
                                       const T *q, const T *k, const T *v, const int *q_pos, int B, int Tq, int Tk,
                                       int NH, int hs, int ldq, int ldkv, cudaStream_t stream, bool write = false) {
    cudaRequire(hs <= 32 * GEN_MAX_PER_LANE, "cuda attention: head size %d > %d", hs, 32 * GEN_MAX_PER_LANE);
    const float scale = 1.0f / sqrtf((float)hs);
    gen_backward_dq_kernel<T><<<ceil_div_u((long)B * NH * Tq, GEN_WARPS), GEN_WARPS * 32, 0, stream>>>(
        dq, dout, lse, dsum, q, k, v, q_pos, B, Tq, Tk, NH, hs, ldq, ldkv, scale, write);
    cudaCheckLaunch();
    if (Tk <= 0) return;
    gen_backward_dkv_kernel<T><<<ceil_div_u((long)B * NH * Tk, GEN_WARPS), GEN_WARPS * 32, 0, stream>>>(
        dk, dv, dout, lse, dsum, q, k, v, q_pos, B, Tq, Tk, NH, hs, ldq, ldkv, scale, write);
    cudaCheckLaunch();
}

// D at the scratch's start; with row_exp, the fixed-point rows' exponents too (attn_dsum_kernel).
template <typename T>
static float *attention_dsum(void *scratch, const T *dout, const T *out, int B, int Tq, int NH, int hs,
                             cudaStream_t stream, int *row_exp = NULL, int *row_bad = NULL,
                             const unsigned *kv_max = NULL, int fix_p = 0) {
    float *dsum = (float *)scratch;
    attn_dsum_kernel<T><<<ceil_div_u((long)B * NH * Tq, 8), 256, 0, stream>>>(dsum, dout, out, B, Tq, NH, hs, row_exp,
                                                                              row_bad, kv_max, fix_p);
    cudaCheckLaunch();
    return dsum;
}

static size_t dsum_bytes(int B, int NH, int Tq) { return ((size_t)B * NH * Tq * sizeof(float) + 255) / 256 * 256; }

// Whether this call can take the tensor-core path (the variant is chosen by the caller).
static bool tensor_core_ok(int hs, int ldq, int ldkv, const void *const *ptrs, int nptrs) {
    if (table_index(hs) < 0 || cuda_kernels()->sm_major < 8) return false;
    if (ldq % 8 || ldkv % 8) return false;
    for (int i = 0; i < nptrs; i++)
        if (!aligned16(ptrs[i])) return false;
    return true;
}

extern "C" {

int cuda_attention_variants(int hs) {
    const int nf = count_variants(fwd_variants, N_FWD, hs), nb = count_variants(bwd_variants, N_BWD, hs);
    return nf > nb ? nf : nb;
}

void cuda_attention_select(int hs, int fwd_variant, int bwd_variant) {
    const int ti = table_index(hs);
    const int nf = count_variants(fwd_variants, N_FWD, hs), nb = count_variants(bwd_variants, N_BWD, hs);
    cudaRequire(ti >= 0, "cuda_attention_select: no tensor-core kernels for head size %d", hs);
    cudaRequire(fwd_variant >= -1 && fwd_variant < nf && bwd_variant >= -1 && bwd_variant < nb,
                "cuda_attention_select: head size %d has %d forward and %d backward variants", hs, nf, nb);
    const FwdVariant *f = find_variant(fwd_variants, N_FWD, hs, fwd_variant);
    const BwdVariant *b = find_variant(bwd_variants, N_BWD, hs, bwd_variant);
    cudaRequire(variant_runs(f) && variant_runs(b),
                "cuda_attention_select: head size %d, variants %d/%d do not run here (wgmma kernels need an sm_90 "
                "GPU and an sm_90a build; %zu bytes of shared memory a block at most)",
                hs, fwd_variant, bwd_variant, smem_limit);
    selected_fwd[ti] = fwd_variant;
    selected_bwd[ti] = bwd_variant;
}

int cuda_attention_selected(int hs, int backward) {
    const int ti = table_index(hs);
    if (ti < 0 || cuda_kernels()->sm_major < 8) return -1;
    return backward ? selected_bwd[ti] : selected_fwd[ti];
}

const char *cuda_attention_variant_name(int hs, int variant, int backward) {
    if (variant < 0) return "cuda-core";
    if (backward) {
        const BwdVariant *v = find_variant(bwd_variants, N_BWD, hs, variant);
        return v && variant_runs(v) ? v->name : "none";
    }
    const FwdVariant *v = find_variant(fwd_variants, N_FWD, hs, variant);
    return v && variant_runs(v) ? v->name : "none";
}

int cuda_attention_env_check(char *err, size_t n) {
    return scan_variants_env([](int, int, int) {}, err, n) ? 0 : -1;
}

int cuda_attention_bwd_deterministic(int hs, int variant) {
    const BwdVariant *v = find_variant(bwd_variants, N_BWD, hs, variant);
    return !v || v->dq != DQ_ATOMIC;
}

// The backward's scratch: D (dsum), the query blocks' position maxima and minima (qmax, then
// qmin, a table of the smallest query blocks each) and, for a fused
// variant, its ticket counter and semaphores (dq_ticket, dq_sem) and dQ sums (dq_acc) in `slots`
// slots (BwdVariant::slots: 0 for a split variant) of acc_bytes an element; for a fixed-point
// one also the rows' exponents and marks (dq_exp, dq_bad) and the heads' Kmax, Vmax (kv_max).
struct BwdScratch {
    size_t qmax, sem, acc, exp, bad, kv_max, total;
};
static BwdScratch bwd_scratch(int B, int NH, int Tq, const BwdVariant *v, int hs) {
    auto round256 = [](size_t n) { return (n + 255) / 256 * 256; };
    const size_t nqb = (size_t)(Tq + MIN_QBLOCK - 1) / MIN_QBLOCK, rows = (size_t)B * NH * Tq;
    const size_t slots = v ? (size_t)v->slots : 0;
    const bool fixed = v && v->dq == DQ_FIXED;
    BwdScratch s;
    s.qmax = dsum_bytes(B, NH, Tq);
    s.sem = s.qmax + round256(2 * nqb * sizeof(int));
    s.acc = s.sem + (slots ? round256((1 + (size_t)B * NH * nqb * slots) * sizeof(int)) : 0);   // ticket, semaphores
    s.exp = s.acc + round256(slots * rows * hs * (v ? v->acc_bytes : 0));
    s.bad = s.exp + (fixed ? round256(rows * sizeof(int)) : 0);
    s.kv_max = s.bad + (fixed ? round256(rows * sizeof(int)) : 0);
    s.total = s.kv_max + (fixed ? 2 * (size_t)B * NH * sizeof(unsigned) : 0);
    return s;
}

// The backward variant the environment chooses for hs, found without a device (a plan made before
// cuda_kernels_init): LSST_ATTN_VARIANTS's for hs, else the first of the LSST_ATTN_BWD kind (the
// mma.sync one: of a kind, the first wgmma and mma.sync variants need the same scratch), else 0.
static int env_bwd_variant(int hs) {
    const int first = first_variant(bwd_variants, N_BWD, hs, false, env_bwd_kind());
    int b = first >= 0 ? first : 0;
    each_variants_env([&](int h, int, int v) { b = h == hs ? v : b; });
    return b;
}

size_t cuda_attention_backward_scratch_bytes(int B, int NH, int Tq, int hs) {
    const int ti = table_index(hs);
    const int v = !env_applied ? env_bwd_variant(hs) : ti < 0 ? -1 : selected_bwd[ti];
    return bwd_scratch(B, NH, Tq, find_variant(bwd_variants, N_BWD, hs, v), hs).total;
}

size_t cuda_attention_backward_scratch_bytes_any(int B, int NH, int Tq, int hs) {
    size_t most = bwd_scratch(B, NH, Tq, NULL, hs).total;
    for (int v = 0; v < count_variants(bwd_variants, N_BWD, hs); v++)
        most = std::max(most, bwd_scratch(B, NH, Tq, find_variant(bwd_variants, N_BWD, hs, v), hs).total);
    return most;
}

void cuda_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, const int *q_pos,
                            int B, int Tq, int Tk, int NH, int hs, int ldq, int ldkv, cudaStream_t stream) {
    if (B <= 0 || Tq <= 0 || NH <= 0 || hs <= 0) return;
    attention_forward_generic<float>(out, lse, q, k, v, q_pos, B, Tq, Tk, NH, hs, ldq, ldkv, stream);
}

void cuda_attention_forward_bf16(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                                 const int *q_pos, int B, int Tq, int Tk, int NH, int hs, int ldq, int ldkv,
                                 cudaStream_t stream) {
    if (B <= 0 || Tq <= 0 || NH <= 0 || hs <= 0) return;
    const void *ptrs[] = {out, q, k, v};
    const int ti = table_index(hs);
    const FwdVariant *var =
        tensor_core_ok(hs, ldq, ldkv, ptrs, 4) ? find_variant(fwd_variants, N_FWD, hs, selected_fwd[ti]) : NULL;
    if (!var) {
        attention_forward_generic<bf16_t>(out, lse, q, k, v, q_pos, B, Tq, Tk, NH, hs, ldq, ldkv, stream);
        return;
    }
    AttnArgs a = {};
    a.out = out, a.lse = lse, a.q = q, a.k = k, a.v = v, a.q_pos = q_pos;
    a.B = B, a.Tq = Tq, a.Tk = Tk, a.NH = NH, a.hs = hs, a.ldq = ldq, a.ldkv = ldkv;
    a.scale = 1.0f / sqrtf((float)hs);
    a.scale_log2 = a.scale * LOG2E_F;
    var->launch(a, stream);
}

void cuda_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                             const float *q, const float *k, const float *v, const int *q_pos, int B, int Tq, int Tk,
                             int NH, int hs, int ldq, int ldkv, void *scratch, cudaStream_t stream) {
    if (B <= 0 || Tq <= 0 || NH <= 0 || hs <= 0) return;
    const float *dsum = attention_dsum<float>(scratch, dout, out, B, Tq, NH, hs, stream);
    attention_backward_generic<float>(dq, dk, dv, dout, lse, dsum, q, k, v, q_pos, B, Tq, Tk, NH, hs, ldq, ldkv,
                                      stream);
}

// The fixed-point backward's bound (attention_kernels.h, "fixed-point dQ sums"): the heads' Kmax,
// Vmax, for attention_dsum's row exponents.
static void fixed_point_kv_max(const AttnArgs &a, cudaStream_t stream) {
    cudaCheck(cudaMemsetAsync(a.kv_max, 0, 2 * (size_t)a.B * a.NH * sizeof(unsigned), stream));
    const unsigned chunks = std::min(ceil_div_u(a.Tk, 64), 64u);   // 8 warps a block, 8+ key rows a warp
    attn_kv_bound_kernel<bf16_t><<<dim3((unsigned)(a.B * a.NH), chunks), 256, 0, stream>>>(a.kv_max, a.k, a.v, a.Tk,
                                                                                         a.NH, a.hs, a.ldkv);
    cudaCheckLaunch();
}

}  // extern "C"

static void attention_backward_bf16(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out, const float *lse,
                                    const bf16 *q, const bf16 *k, const bf16 *v, const int *q_pos, int B, int Tq,
                                    int Tk, int NH, int hs, int ldq, int ldkv, void *scratch, cudaStream_t stream,
                                    bool write) {
    if (B <= 0 || Tq <= 0 || NH <= 0 || hs <= 0) return;
    const void *ptrs[] = {dq, dk, dv, dout, q, k, v};
    const int ti = table_index(hs);
    const BwdVariant *var =
        tensor_core_ok(hs, ldq, ldkv, ptrs, 7) ? find_variant(bwd_variants, N_BWD, hs, selected_bwd[ti]) : NULL;
    if (!var || Tk <= 0) {
        const float *dsum = attention_dsum<bf16_t>(scratch, dout, out, B, Tq, NH, hs, stream);
        attention_backward_generic<bf16_t>(dq, dk, dv, dout, lse, dsum, q, k, v, q_pos, B, Tq, Tk, NH, hs, ldq, ldkv,
                                           stream, write);
        return;
    }
    AttnArgs a = {};
    a.write = write;
    a.dq = dq, a.dk = dk, a.dv = dv, a.dout = dout, a.out_c = out, a.lse_c = lse, a.dsum = (float *)scratch;
    a.q = q, a.k = k, a.v = v, a.q_pos = q_pos;
    const BwdScratch sc = bwd_scratch(B, NH, Tq, var, hs);
    auto at = [&](size_t off) { return (void *)((char *)scratch + off); };
    a.qmax = (const int *)at(sc.qmax);
    a.qmin = a.qmax + (Tq + MIN_QBLOCK - 1) / MIN_QBLOCK;
    const bool fused = var->dq != DQ_SPLIT, fixed = var->dq == DQ_FIXED;
    a.dq_ticket = fused ? (int *)at(sc.sem) : NULL;
    a.dq_sem = fused ? a.dq_ticket + 1 : NULL;
    a.dq_acc = fused ? (float *)at(sc.acc) : NULL;
    a.dq_exp = fixed ? (int *)at(sc.exp) : NULL, a.dq_bad = fixed ? (int *)at(sc.bad) : NULL;
    a.kv_max = fixed ? (unsigned *)at(sc.kv_max) : NULL;
    a.B = B, a.Tq = Tq, a.Tk = Tk, a.NH = NH, a.hs = hs, a.ldq = ldq, a.ldkv = ldkv;
    a.scale = 1.0f / sqrtf((float)hs);
    a.scale_log2 = a.scale * LOG2E_F;
    if (fixed) fixed_point_kv_max(a, stream);
    attention_dsum<bf16_t>(scratch, dout, out, B, Tq, NH, hs, stream, a.dq_exp, a.dq_bad, a.kv_max,
                           var->acc_bytes * 8 - 2);
    var->launch(a, stream);
}

extern "C" {

void cuda_attention_backward_bf16(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out, const float *lse,
                                  const bf16 *q, const bf16 *k, const bf16 *v, const int *q_pos, int B, int Tq,
                                  int Tk, int NH, int hs, int ldq, int ldkv, void *scratch, cudaStream_t stream) {
    attention_backward_bf16(dq, dk, dv, dout, out, lse, q, k, v, q_pos, B, Tq, Tk, NH, hs, ldq, ldkv, scratch, stream,
                            false);
}

void cuda_attention_backward_write_bf16(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out,
                                        const float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                                        const int *q_pos, int B, int Tq, int Tk, int NH, int hs, int ldq, int ldkv,
                                        void *scratch, cudaStream_t stream) {
    attention_backward_bf16(dq, dk, dv, dout, out, lse, q, k, v, q_pos, B, Tq, Tk, NH, hs, ldq, ldkv, scratch, stream,
                            true);
}

}  // extern "C"
