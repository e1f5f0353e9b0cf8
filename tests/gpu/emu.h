// A CPU emulator for CUDA device code (tests/gpu/emulate_*.cpp): every CUDA thread is a fiber
// (ucontext) of one OS thread, blocks run one after another. __syncthreads, warp shuffles, ballots,
// ldmatrix and mma.sync are collectives: each lane posts its operands to a per-warp exchange area,
// waits for the other lanes, and computes ITS OWN result with the semantics the PTX ISA gives (the
// definitions are spelled out below, independently of the kernel code); wgmma.mma_async likewise
// over its warpgroup, with shared-memory matrix descriptors and the 128-byte swizzle. cp.async runs in two
// modes: EAGER copies at issue (catches a prefetch that overwrites a buffer other warps still
// read), LAZY copies at the latest legal moment, cp.async.wait_group (catches a read that does not
// wait for its data). Two schedules: round-robin (warps nearly in lockstep) and warp-greedy (one
// warp runs as far as it can before the next: exposes a missing __syncthreads). A deadlock (a
// barrier some thread never reaches) is reported. Include it BEFORE the device code.
#pragma once
#include <cuda_bf16.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

extern "C" {
#include "kernels.h"
}

// ---- the CUDA vocabulary, for the host compiler ----------------------------------------------
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#undef __align__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static  // blocks run one at a time: a static is the block's shared variable
#define __align__(n) alignas(n)
#define __launch_bounds__(...)
#define ATTN_EMULATE 1

using std::max;
using std::min;

struct EmuDim3 {
    unsigned x = 0, y = 0, z = 0;
};

namespace emu {

enum CopyMode { EAGER, LAZY };
static CopyMode copy_mode = EAGER;
enum Schedule { ROUND_ROBIN, WARP_GREEDY };
static Schedule schedule = ROUND_ROBIN;

struct Copy {
    unsigned char *dst;
    const unsigned char *src;
    int bytes;       // of 16; the rest zero-filled
    uint32_t chunk;  // dst's 16-byte chunk of the shared memory
};

// One thread's share of a wgmma.mma_async: its n / 2 accumulators d, the two rows of A they need
// (rows g and g + 8 of its warp's slice, from the warp's registers at issue) or A's descriptor,
// B's descriptor.
struct WgOp {
    float *d;   // n / 2 accumulators
    int n;
    bool acc, a_smem, trans_b;
    uint64_t desc_a, desc_b;
    int warp_in_group, lane;
    float a[2][16];
};

struct Fiber {
    ucontext_t ctx;    // where it starts (makecontext)
    jmp_buf jb;        // where it waits, once started
    bool started = false;
    EmuDim3 tid;
    bool done = false;
    std::vector<Copy> pending;        // LAZY mode: issued, not yet performed
    std::vector<size_t> group_ends;   // committed group boundaries in `pending`
    std::vector<WgOp> wg_pending;     // wgmma: the same for the warpgroup MMAs
    std::vector<size_t> wg_group_ends;
    bool wg_fenced = false;           // wgmma.fence since the last wgmma.wait_group
    std::vector<uint32_t> unfenced;   // chunks this thread wrote since its fence.proxy.async
    // Bulk reductions (cp.reduce.async.bulk) issued, not yet performed (LAZY: until a wait).
    struct Bulk {
        unsigned char *dst;
        const unsigned char *src;
        uint32_t bytes;
        int bits;
    };
    std::vector<Bulk> bulk_pending;
};

struct Barrier {
    int arrived = 0;
    long generation = 0;
};

// Per-warp exchange area of the collectives.
struct WarpX {
    uint32_t addr[32];
    uint32_t a[32][4];
    uint32_t b[32][2];
    float f[32];
    double d[32];
};

static std::vector<Fiber> fibers;
static std::vector<std::vector<char>> stacks;  // reused from block to block
static size_t stack_bytes = 1 << 18;
static int cur = -1;
static jmp_buf scheduler;   // the scheduler, while a fiber runs
static EmuDim3 block_idx, grid_dim, block_dim;
static std::function<void()> kernel_body;
static std::vector<Barrier> warp_barrier;
static std::vector<Barrier> wg_barrier;  // per warpgroup (4 warps)
static Barrier block_barrier;
static std::vector<WarpX> warp_x;
// Per 16-byte chunk of shared memory: 1 + the thread whose cp.async (or st_shared_bf16) wrote it
// last, until that thread's fence.proxy.async (0: none). wgmma (the async proxy) must not read a
// marked chunk.
static std::vector<int> proxy_writer;
static long progress = 0;  // barrier arrivals + fiber exits: a round without any is a deadlock
static uint64_t sched_seed = 0x9e3779b97f4a7c15ull;

// Switches: a fiber starts with setcontext, then fibers and the scheduler jump to each other with
// _setjmp / _longjmp, which (unlike swapcontext) leave the signal mask alone: no system call per
// switch (swapcontext's took ~45% of the emulator's time).
static inline void yield() {
    if (!_setjmp(fibers[cur].jb)) _longjmp(scheduler, 1);
}

static inline void arrive_and_wait(Barrier &b, int count) {
    const long gen = b.generation;
    progress++;
    if (++b.arrived == count) {
        b.arrived = 0;
        b.generation++;
        return;
    }
    while (b.generation == gen) yield();
}

static inline int nthreads() { return (int)fibers.size(); }
static inline int lane() { return (int)fibers[cur].tid.x % 32; }
static inline int warp() { return (int)fibers[cur].tid.x / 32; }
static inline int warp_size_of(int w) { return std::min(32, nthreads() - 32 * w); }
static inline void warp_sync() { arrive_and_wait(warp_barrier[warp()], warp_size_of(warp())); }

static inline void perform(const Copy &c) {
    memcpy(c.dst, c.src, c.bytes);
    memset(c.dst + c.bytes, 0, 16 - c.bytes);
    proxy_writer[c.chunk] = cur + 1;
    fibers[cur].unfenced.push_back(c.chunk);
}

static inline void fiber_entry() {
    kernel_body();
    if (!fibers[cur].wg_group_ends.empty()) {
        fprintf(stderr, "emulate: thread %u ends with wgmma groups not waited for\n", fibers[cur].tid.x);
        exit(5);
    }
    if (!fibers[cur].bulk_pending.empty()) {
        fprintf(stderr, "emulate: thread %u ends with bulk reductions not waited for\n", fibers[cur].tid.x);
        exit(5);
    }
    fibers[cur].done = true;
    progress++;
    _longjmp(scheduler, 1);   // never resumed
}

// Runs fiber t until it waits or ends.
__attribute__((noinline)) static void run_fiber(int t) {
    cur = t;
    if (_setjmp(scheduler)) return;   // back from the fiber
    if (!fibers[t].started) {
        fibers[t].started = true;
        setcontext(&fibers[t].ctx);
    }
    _longjmp(fibers[t].jb, 1);
}

static inline void deadlock(unsigned bx, unsigned by);

// Round-robin: every live fiber runs to its next barrier, each round from a pseudo-random start;
// warps progress nearly in lockstep.
static inline void run_round_robin(int threads, unsigned bx, unsigned by) {
    for (;;) {
        const long before = progress;
        int live = 0;
        sched_seed = sched_seed * 6364136223846793005ull + 1442695040888963407ull;
        const int start = (int)((sched_seed >> 33) % threads);
        for (int i = 0; i < threads; i++) {
            const int t = (start + i) % threads;
            if (fibers[t].done) continue;
            live++;
            run_fiber(t);
        }
        cur = -1;
        if (live == 0) return;
        if (progress == before) deadlock(bx, by);
    }
}

// Warp-greedy: one warp at a time runs as far as it can (until all its threads wait at
// __syncthreads or end), warps taken in a pseudo-random order: a warp races ahead of the others,
// which exposes a missing __syncthreads before a shared buffer is refilled.
static inline void run_warp_greedy(int threads, unsigned bx, unsigned by) {
    const int nwarps = (threads + 31) / 32;
    std::vector<int> order(nwarps);
    for (;;) {
        const long before_pass = progress;
        for (int w = 0; w < nwarps; w++) order[w] = w;
        for (int w = nwarps - 1; w > 0; w--) {
            sched_seed = sched_seed * 6364136223846793005ull + 1442695040888963407ull;
            std::swap(order[w], order[(sched_seed >> 33) % (w + 1)]);
        }
        int live = 0;
        for (int w : order) {
            for (;;) {
                const long before = progress;
                int live_w = 0;
                for (int t = 32 * w; t < std::min(threads, 32 * w + 32); t++) {
                    if (fibers[t].done) continue;
                    live_w++;
                    run_fiber(t);
                }
                cur = -1;
                live += live_w;
                if (live_w == 0 || progress == before) break;
            }
        }
        if (live == 0) return;
        if (progress == before_pass) deadlock(bx, by);
    }
}

static inline void deadlock(unsigned bx, unsigned by) {
    fprintf(stderr, "emulate_attention: DEADLOCK in block (%u, %u): threads wait at a barrier that others never "
                    "reach\n", bx, by);
    exit(3);
}

// Blocks in reverse launch order (a GPU may run blocks in any order: what must not depend on it).
static bool reverse_blocks = false;

// Runs kernel_body on every thread of every block, blocks in launch order (x fastest).
static inline void launch(EmuDim3 grid, int threads, std::function<void()> body) {
    grid_dim = grid;
    block_dim.x = threads, block_dim.y = block_dim.z = 1;
    kernel_body = std::move(body);
    for (unsigned iy = 0; iy < grid.y; iy++)
        for (unsigned ix = 0; ix < grid.x; ix++) {
            const unsigned by = reverse_blocks ? grid.y - 1 - iy : iy, bx = reverse_blocks ? grid.x - 1 - ix : ix;
            block_idx.x = bx, block_idx.y = by, block_idx.z = 0;
            fibers.assign(threads, Fiber());
            warp_barrier.assign((threads + 31) / 32, Barrier());
            wg_barrier.assign((threads + 127) / 128, Barrier());
            proxy_writer.assign(256 * 1024 / 16, 0);
            warp_x.assign((threads + 31) / 32, WarpX());
            block_barrier = Barrier();
            for (int t = 0; t < threads; t++) {
                Fiber &f = fibers[t];
                f.tid.x = t;
                if ((int)stacks.size() <= t) stacks.emplace_back(stack_bytes);
                getcontext(&f.ctx);
                f.ctx.uc_stack.ss_sp = stacks[t].data();
                f.ctx.uc_stack.ss_size = stacks[t].size();
                f.ctx.uc_link = NULL;
                makecontext(&f.ctx, fiber_entry, 0);
            }
            if (schedule == ROUND_ROBIN) run_round_robin(threads, bx, by);
            else run_warp_greedy(threads, bx, by);
        }
}

}  // namespace emu

// ---- CUDA built-ins --------------------------------------------------------------------------
#define threadIdx (emu::fibers[emu::cur].tid)
#define blockIdx (emu::block_idx)
#define gridDim (emu::grid_dim)
#define blockDim (emu::block_dim)

static inline void __syncthreads() { emu::arrive_and_wait(emu::block_barrier, emu::nthreads()); }
static inline int atomicMax(int *p, int v) {  // fibers never preempt each other: plain code is atomic
    const int old = *p;
    *p = std::max(old, v);
    return old;
}
static inline int atomicAdd(int *p, int v) {
    const int old = *p;
    *p = old + v;
    return old;
}
static inline float atomicAdd(float *p, float v) {
    const float old = *p;
    *p = old + v;
    return old;
}
static inline unsigned atomicMax(unsigned *p, unsigned v) {
    const unsigned old = *p;
    *p = std::max(old, v);
    return old;
}
static inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v) {
    const unsigned long long old = *p;
    *p = old + v;   // modulo 2^64, as the hardware's
    return old;
}
static inline unsigned __float_as_uint(float x) {
    unsigned u;
    memcpy(&u, &x, sizeof u);
    return u;
}
static inline float __uint_as_float(unsigned u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
// Round to nearest even, as cvt.rni; out of range (and NaN): the PTX ISA's saturation does not
// matter here (the kernels mark such values), any value will do.
static inline int __float2int_rn(float x) {
    return x > -2147483648.0f && x < 2147483648.0f ? (int)nearbyintf(x) : INT_MIN;
}
static inline long long __float2ll_rn(float x) {
    return x > -9.2233720e18f && x < 9.2233720e18f ? (long long)nearbyintf(x) : LLONG_MIN;
}
static inline int atomicMin(int *p, int v) {
    const int old = *p;
    *p = std::min(old, v);
    return old;
}
static inline float __shfl_xor_sync(unsigned, float v, int mask) {
    emu::WarpX &x = emu::warp_x[emu::warp()];
    x.f[emu::lane()] = v;
    emu::warp_sync();
    const float r = x.f[emu::lane() ^ mask];
    emu::warp_sync();
    return r;
}
static inline double __shfl_xor_sync(unsigned, double v, int mask) {
    emu::WarpX &x = emu::warp_x[emu::warp()];
    x.d[emu::lane()] = v;
    emu::warp_sync();
    const double r = x.d[emu::lane() ^ mask];
    emu::warp_sync();
    return r;
}

// __ballot_sync: bit l set iff lane l's predicate is true.
static inline unsigned __ballot_sync(unsigned, int pred) {
    emu::WarpX &x = emu::warp_x[emu::warp()];
    x.f[emu::lane()] = pred ? 1.0f : 0.0f;
    emu::warp_sync();
    unsigned m = 0;
    for (int l = 0; l < emu::warp_size_of(emu::warp()); l++)
        if (x.f[l] != 0.0f) m |= 1u << l;
    emu::warp_sync();
    return m;
}
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_sync(); }

// Global memory: one block at a time, so every store is visible to later blocks at once.
static inline float __ldcg(const float *p) { return *p; }
static inline void __stcg(float *p, float v) { *p = v; }
static inline void __threadfence() {}

// ---- the PTX helpers of attention_kernels.h, with the PTX ISA's semantics ----------------------
alignas(16) static unsigned char attn_smem[256 * 1024];  // the dynamic shared memory of a block
// The shared-window address of attn_smem[0]: 16-byte aligned like a GPU's dynamic shared memory,
// deliberately not 1024-byte aligned (wgmma's swizzle works on addresses: kernels must align).
static const uint32_t SMEM_BIAS = 0x230;

// The fused backward's semaphores. Blocks run in launch order (y-major, as a GPU dispatches
// them), so the turn a block waits for must already be posted by an earlier block: anything
// else would spin forever on the GPU, and is reported here.
static inline void attn_wait_turn(const int *sem, int turn) {
    if (*sem != turn) {
        fprintf(stderr, "emulate_attention: block (%u, %u) waits for turn %d, the semaphore shows %d: it would "
                        "never come\n", emu::block_idx.x, emu::block_idx.y, turn, *sem);
        exit(4);
    }
}
static inline void attn_post_turn(int *sem, int turn) { *sem = turn; }

static inline uint32_t smem_addr(const void *p) {
    const unsigned char *c = (const unsigned char *)p;
    if (c < attn_smem || c >= attn_smem + sizeof attn_smem) {
        fprintf(stderr, "emulate_attention: smem_addr of a non-shared pointer\n");
        abort();
    }
    return (uint32_t)(c - attn_smem) + SMEM_BIAS;
}
static inline unsigned char *smem_ptr(uint32_t addr, int bytes) {
    if (addr < SMEM_BIAS || addr - SMEM_BIAS + bytes > sizeof attn_smem) {
        fprintf(stderr, "emulate: shared address %u out of range\n", addr);
        abort();
    }
    return attn_smem + (addr - SMEM_BIAS);
}

static inline uint16_t smem_u16(uint32_t addr) {
    uint16_t v;
    memcpy(&v, smem_ptr(addr, 2), 2);
    return v;
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8i..8i+7 give the addresses of rows 0..7
// of matrix i (16 bytes each, 16-byte aligned). Without .trans, lane l receives in register i the
// elements (row l/4, cols 2(l%4) and 2(l%4)+1) of matrix i, the lower column in the low half;
// with .trans, the elements (rows 2(l%4) and 2(l%4)+1, col l/4), i.e. of the transpose.
// ldmatrix / stmatrix: this lane's row address (16-byte aligned) posted to the warp's exchange,
// once every lane has posted its own.
static inline emu::WarpX &post_row_address(uint32_t addr, const char *what) {
    emu::WarpX &x = emu::warp_x[emu::warp()];
    if (addr % 16) {
        fprintf(stderr, "emulate_attention: %s row address %u not 16-byte aligned\n", what, addr);
        abort();
    }
    x.addr[emu::lane()] = addr;
    emu::warp_sync();
    return x;
}
static inline void ldmatrix(uint32_t (&r)[4], uint32_t addr, bool trans) {
    const emu::WarpX &x = post_row_address(addr, "ldmatrix");
    const int l = emu::lane();
    for (int i = 0; i < 4; i++) {
        uint16_t lo, hi;
        if (!trans) {
            const uint32_t row = x.addr[8 * i + l / 4];
            lo = smem_u16(row + 2 * (2 * (l % 4)));
            hi = smem_u16(row + 2 * (2 * (l % 4) + 1));
        } else {
            lo = smem_u16(x.addr[8 * i + 2 * (l % 4)] + 2 * (l / 4));
            hi = smem_u16(x.addr[8 * i + 2 * (l % 4) + 1] + 2 * (l / 4));
        }
        r[i] = (uint32_t)lo | (uint32_t)hi << 16;
    }
    emu::warp_sync();
}
// stmatrix.sync.aligned.m8n8.x4.trans.shared.b16: lanes 8i..8i+7 give the addresses of rows 0..7
// of stored matrix i (16 bytes each, 16-byte aligned); lane l's register i holds elements
// (l/4, 2(l%4)) and (l/4, 2(l%4)+1) of matrix i, the first in the low half, and element (r, c)
// goes to row c, column r. Each lane writes its own elements once every lane has posted its
// address; the rows are marked for the proxy fence as st_shared_bf16's stores are.
static inline void stsm_x4_trans(uint32_t addr, const uint32_t (&r)[4]) {
    const emu::WarpX &x = post_row_address(addr, "stmatrix");
    const int l = emu::lane();
    for (int i = 0; i < 4; i++)
        for (int e = 0; e < 2; e++) {
            const uint32_t row = x.addr[8 * i + 2 * (l % 4) + e], at = row + 2 * (l / 4);
            const uint16_t v = (uint16_t)(r[i] >> (16 * e));
            memcpy(smem_ptr(at, 2), &v, 2);
            emu::proxy_writer[(at - SMEM_BIAS) / 16] = emu::cur + 1;
            emu::fibers[emu::cur].unfenced.push_back((at - SMEM_BIAS) / 16);
        }
    emu::warp_sync();
}
// ex2.approx.ftz.f32: 2^x, results below the smallest normal flushed to +0 (approx: the
// emulator's exp2f is exact to fp32, the SFU's within 2 ulp).
static inline float fast_exp2(float x) {
    const float r = exp2f(x);
    return r < 1.17549435e-38f ? 0.0f : r;
}
static inline void ldsm_x4(uint32_t (&r)[4], uint32_t addr) { ldmatrix(r, addr, false); }
static inline void ldsm_x4_trans(uint32_t (&r)[4], uint32_t addr) { ldmatrix(r, addr, true); }

static inline float bf16_bits_to_float(uint32_t bits16) {
    const uint32_t u = bits16 << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, g = lane/4, t = lane%4:
//   A (16x16): a0 = (g, 2t|2t+1), a1 = (g+8, 2t|2t+1), a2 = (g, 2t+8|2t+9), a3 = (g+8, 2t+8|2t+9)
//   B (16x8):  b0 = (k 2t|2t+1, n g), b1 = (k 2t+8|2t+9, n g)
//   C, D (16x8 f32): c0 = (g, 2t), c1 = (g, 2t+1), c2 = (g+8, 2t), c3 = (g+8, 2t+1)
// ("x|y": the two halves of one register, x in the low 16 bits).
static inline float mma_a(const emu::WarpX &x, int row, int k) {
    const int ln = (row % 8) * 4 + (k % 8) / 2, reg = (row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
    return bf16_bits_to_float(k % 2 ? x.a[ln][reg] >> 16 : x.a[ln][reg] & 0xffff);
}
static inline float mma_b(const emu::WarpX &x, int k, int n) {
    const int ln = n * 4 + (k % 8) / 2, reg = k >= 8 ? 1 : 0;
    return bf16_bits_to_float(k % 2 ? x.b[ln][reg] >> 16 : x.b[ln][reg] & 0xffff);
}
static inline void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    emu::WarpX &x = emu::warp_x[emu::warp()];
    const int l = emu::lane(), g = l / 4, t = l % 4;
    for (int i = 0; i < 4; i++) x.a[l][i] = a[i];
    x.b[l][0] = b0, x.b[l][1] = b1;
    emu::warp_sync();
    for (int i = 0; i < 4; i++) {
        const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
        float acc = d[i];
        for (int k = 0; k < 16; k++) acc += mma_a(x, row, k) * mma_b(x, k, col);
        d[i] = acc;
    }
    emu::warp_sync();
}

// cp.async.cg.shared.global [dst], [src], 16, src_bytes: src_bytes < 16 zero-fills the rest.
static inline void cp_async16(uint32_t dst, const void *src, int src_bytes) {
    if (dst % 16 || (uintptr_t)src % 16) {
        fprintf(stderr, "emulate_attention: cp.async with a misaligned address\n");
        abort();
    }
    const emu::Copy c = {smem_ptr(dst, 16), (const unsigned char *)src, src_bytes, (dst - SMEM_BIAS) / 16};
    if (emu::copy_mode == emu::EAGER) emu::perform(c);
    else emu::fibers[emu::cur].pending.push_back(c);
}
static inline void cp_async_commit() {
    emu::fibers[emu::cur].group_ends.push_back(emu::fibers[emu::cur].pending.size());
}
// cp.async.wait_group N: all but the newest N committed groups of this thread are complete.
template <int N> static void cp_async_wait() {
    emu::Fiber &f = emu::fibers[emu::cur];
    const size_t groups = f.group_ends.size();
    if (groups <= (size_t)N) return;
    const size_t upto = f.group_ends[groups - 1 - N];
    for (size_t i = 0; i < upto; i++) emu::perform(f.pending[i]);
    f.pending.erase(f.pending.begin(), f.pending.begin() + upto);
    for (size_t &e : f.group_ends) e = e > upto ? e - upto : 0;
    f.group_ends.erase(f.group_ends.begin(), f.group_ends.begin() + (groups - N));
}


// ---- wgmma (sm_90a), m64nNk16 bf16 -> f32, N = 32, 64 or 128 ---------------------------------------
// Collective over the warpgroup (all 4 warps must issue it). A from registers: warp w of the group
// holds rows 16w.. of A in mma.sync's A layout; D: warp w's rows, the C fragments of its N / 8 n-tiles.
// Descriptor (PTX ISA "Matrix Descriptor Format"): start address >> 4 in bits 0-13, leading byte
// offset >> 4 in 16-29, stride byte offset >> 4 in 32-45, base offset in 49-51, swizzle in 62-63
// (1 = 128-byte). Canonical 128-byte-swizzled layouts (CUTLASS's GMMA atoms), element offsets
// before the swizzle: K-major (mn, k) -> (mn / 8) SBO + (mn % 8) 128 + 2k bytes; MN-major
// (k, mn) -> (mn / 64) LBO + 2 (mn % 64) + (k % 8) 128 + (k / 8) SBO. The swizzle XORs address
// bits 4-6 with bits 7-9. EAGER performs at issue; LAZY at wgmma.wait_group (so a read of D, or a
// shared-memory write, before the wait shows).
static inline uint32_t wg_address(uint64_t desc, int mn, int k, bool mn_major) {
    const uint32_t start = (uint32_t)(desc & 0x3FFF) << 4, lbo = (uint32_t)((desc >> 16) & 0x3FFF) << 4;
    const uint32_t sbo = (uint32_t)((desc >> 32) & 0x3FFF) << 4;
    if ((desc >> 62) != 1 || ((desc >> 49) & 7) != 0) {
        fprintf(stderr, "emulate: wgmma descriptor without 128-byte swizzle or with a base offset\n");
        abort();
    }
    uint32_t a = start + (mn_major ? (mn / 64) * lbo + 2 * (mn % 64) + (k % 8) * 128 + (k / 8) * sbo
                                   : (mn / 8) * sbo + (mn % 8) * 128 + 2 * k);
    return a ^ (((a >> 7) & 7) << 4);
}
static inline float wg_operand(uint64_t desc, int mn, int k, bool mn_major) {
    const uint32_t addr = wg_address(desc, mn, k, mn_major);
    const float v = bf16_bits_to_float(smem_u16(addr));
    if (const int w = emu::proxy_writer[(addr - SMEM_BIAS) / 16]) {
        fprintf(stderr, "emulate: wgmma reads shared memory that thread %d wrote (cp.async or a store) and has "
                        "not made visible to the async proxy (fence.proxy.async)\n", w - 1);
        exit(6);
    }
    return v;
}
static inline void wg_perform(const emu::WgOp &op) {
    const int g = op.lane / 4, t = op.lane % 4;
    for (int j = 0; j < op.n / 2; j++) {
        const int nt = j / 4, i = j % 4, r = g + 8 * (i >> 1), col = nt * 8 + 2 * t + (i & 1);
        float acc = op.acc ? op.d[j] : 0.0f;
        for (int k = 0; k < 16; k++) {
            const float av = op.a_smem ? wg_operand(op.desc_a, 16 * op.warp_in_group + r, k, false) : op.a[i >> 1][k];
            acc += av * wg_operand(op.desc_b, col, k, op.trans_b);
        }
        op.d[j] = acc;
    }
}
static inline void wg_issue(float *d, int n, const uint32_t *a, uint64_t desc_a, uint64_t desc_b, bool trans_b,
                            bool acc) {
    emu::Fiber &f = emu::fibers[emu::cur];
    if (!f.wg_fenced) {
        fprintf(stderr, "emulate: wgmma.mma_async without a wgmma.fence since the last wait\n");
        exit(5);
    }
    if (emu::nthreads() % 128) {
        fprintf(stderr, "emulate: wgmma in a block of %d threads (not whole warpgroups)\n", emu::nthreads());
        exit(5);
    }
    emu::arrive_and_wait(emu::wg_barrier[emu::warp() / 4], 128);
    emu::WgOp op;
    op.d = d, op.n = n, op.acc = acc, op.a_smem = a == NULL, op.trans_b = trans_b;
    op.desc_a = desc_a, op.desc_b = desc_b, op.warp_in_group = emu::warp() % 4, op.lane = emu::lane();
    if (a) {
        emu::WarpX &x = emu::warp_x[emu::warp()];
        for (int i = 0; i < 4; i++) x.a[op.lane][i] = a[i];
        emu::warp_sync();
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 16; k++) op.a[h][k] = mma_a(x, op.lane / 4 + 8 * h, k);
        emu::warp_sync();
    }
    if (emu::copy_mode == emu::EAGER) wg_perform(op);
    else f.wg_pending.push_back(op);
}
template <bool TRANS_B, int NT>
static inline void wgmma_rs(float (&d)[NT][4], const uint32_t (&a)[4], uint64_t desc_b, bool acc) {
    static_assert(NT == 4 || NT == 8 || NT == 16, "wgmma: N = 32, 64 or 128");
    wg_issue(&d[0][0], 8 * NT, a, 0, desc_b, TRANS_B, acc);
}
template <bool TRANS_B, int NT>
static inline void wgmma_ss(float (&d)[NT][4], uint64_t desc_a, uint64_t desc_b, bool acc) {
    static_assert(NT == 4 || NT == 8 || NT == 16, "wgmma: N = 32, 64 or 128");
    wg_issue(&d[0][0], 8 * NT, NULL, desc_a, desc_b, TRANS_B, acc);
}
static inline void wgmma_fence() { emu::fibers[emu::cur].wg_fenced = true; }
static inline void wgmma_commit() {
    emu::Fiber &f = emu::fibers[emu::cur];
    f.wg_group_ends.push_back(f.wg_pending.size());
}
// wgmma.wait_group N: all but the newest N committed groups of this thread are complete.
template <int N> static void wgmma_wait() {
    emu::Fiber &f = emu::fibers[emu::cur];
    f.wg_fenced = false;
    const size_t groups = f.wg_group_ends.size();
    if (groups <= (size_t)N) return;
    const size_t upto = f.wg_group_ends[groups - 1 - N];
    for (size_t i = 0; i < upto; i++) wg_perform(f.wg_pending[i]);
    f.wg_pending.erase(f.wg_pending.begin(), f.wg_pending.begin() + upto);
    for (size_t &e : f.wg_group_ends) e = e > upto ? e - upto : 0;
    f.wg_group_ends.erase(f.wg_group_ends.begin(), f.wg_group_ends.begin() + (groups - N));
}
// fence.proxy.async: orders this thread's generic shared-memory writes before later wgmma reads.
// Checked for cp.async writes and the stores of st_shared_bf16 (proxy_writer).
static inline void st_shared_bf16(__nv_bfloat16 *p, float v) {
    *p = __float2bfloat16_rn(v);
    const uint32_t c = (smem_addr(p) - SMEM_BIAS) / 16;
    emu::proxy_writer[c] = emu::cur + 1;
    emu::fibers[emu::cur].unfenced.push_back(c);
}
// Two consecutive integers into shared memory: marked like st_shared_bf16 (an async-proxy reader
// needs a fence after them).
template <typename I> static inline void st_shared_pair(I *p, I a, I b) {
    p[0] = a, p[1] = b;
    const uint32_t c = (smem_addr(p) - SMEM_BIAS) / 16;
    emu::proxy_writer[c] = emu::cur + 1;
    emu::fibers[emu::cur].unfenced.push_back(c);
}
// cp.reduce.async.bulk ... .add.u64 / .u32: the source must be fenced (no marked chunk) at issue;
// the source is read and the adds done at issue (EAGER) or at the next wait (LAZY: a source
// rewritten before bulk_wait_read then gives wrong sums).
template <typename U> static inline void bulk_add(const emu::Fiber::Bulk &op) {   // modulo 2^bits
    for (uint32_t i = 0; i < op.bytes / sizeof(U); i++) {
        U d, x;
        memcpy(&d, op.dst + sizeof(U) * i, sizeof d), memcpy(&x, op.src + sizeof(U) * i, sizeof x);
        d += x;
        memcpy(op.dst + sizeof(U) * i, &d, sizeof d);
    }
}
static inline void bulk_perform(const emu::Fiber::Bulk &op) {
    if (op.bits == 64) bulk_add<unsigned long long>(op);
    else bulk_add<uint32_t>(op);
}
template <int BITS> static inline void bulk_reduce_add(void *dst, uint32_t src, uint32_t bytes) {
    if (src % 16 || bytes % 16 || (uintptr_t)dst % 16) {
        fprintf(stderr, "emulate: bulk reduction not 16-byte aligned\n");
        fflush(NULL);
        _exit(6);   // (on a fiber's stack: no destructors)
    }
    for (uint32_t off = 0; off < bytes; off += 16)
        if (emu::proxy_writer[(src - SMEM_BIAS + off) / 16]) {
            fprintf(stderr, "emulate: bulk reduction reads shared memory written without fence.proxy.async\n");
            fflush(NULL);
            _exit(6);
        }
    const emu::Fiber::Bulk op = {(unsigned char *)dst, attn_smem + (src - SMEM_BIAS), bytes, BITS};
    if (emu::copy_mode == emu::EAGER) bulk_perform(op);
    else emu::fibers[emu::cur].bulk_pending.push_back(op);
}
static inline void bulk_wait_read() {
    for (const auto &op : emu::fibers[emu::cur].bulk_pending) bulk_perform(op);
    emu::fibers[emu::cur].bulk_pending.clear();
}
static inline void bulk_wait_all() { bulk_wait_read(); }
static inline void fence_proxy_async() {
    emu::Fiber &f = emu::fibers[emu::cur];
    for (uint32_t c : f.unfenced)
        if (emu::proxy_writer[c] == emu::cur + 1) emu::proxy_writer[c] = 0;
    f.unfenced.clear();
}
