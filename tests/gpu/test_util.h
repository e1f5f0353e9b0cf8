// Host helpers shared by the GPU test programs (test_cuda_kernels.cu, tests/bench/gpu/attn_bench.cu)
// and the CPU emulators (emulate_layers.cpp, emulate_attention.cpp): the CUDA error check, random
// inputs, shared references and the command line.
#pragma once
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utility>
#include <vector>

// splitmix64; each program seeds its own generator, so its inputs are fixed.
struct SplitMix64 {
    uint64_t state;
    uint64_t next() {
        uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    float uniform(float lo, float hi) { return lo + (hi - lo) * (float)((next() >> 40) / 16777216.0); }
    std::vector<int> permutation(int n) {   // a random order of 0..n-1 (Fisher-Yates)
        std::vector<int> p(n);
        for (int i = 0; i < n; i++) p[i] = i;
        for (int i = n - 1; i > 0; i--) std::swap(p[i], p[next() % (uint64_t)(i + 1)]);
        return p;
    }
};

// The sequence group's row layout (runtime/model.c seq_place_rows), the reference of the
// cuda_seq_* kernels: full (B, S = n*T, W)[b, pos[r*T + t]] = xchg (n, B, T, W)[r, b, t].
static inline std::vector<float> seq_place_reference(const std::vector<float> &xchg, const std::vector<int> &pos,
                                                     int n, int B, int T, int W) {
    const long S = (long)n * T;
    std::vector<float> full(xchg.size());
    for (int r = 0; r < n; r++)
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                for (int w = 0; w < W; w++)
                    full[((long)b * S + pos[r * T + t]) * W + w] = xchg[(((long)r * B + b) * T + t) * W + w];
    return full;
}

#ifdef __CUDACC__
// CHECK(cudaCall(...)): on an error, file:line, the call and CUDA's message on stderr; exit 2.
#define CHECK(call)                                                                                \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)
#endif

// [--quick] [--only SUBSTRING] [--skip SUBSTRING]: 0, or 2 after a usage line. quick may be NULL
// (a program without a quick mode takes the flag and ignores it, so one command line serves every
// program); skip may be NULL (the program has no --skip: tests/gpu/run.sh uses it to rerun the
// kernel test without the wgmma variants when one of them brought the process down).
static inline int parse_test_args(int argc, char **argv, bool *quick, const char **only,
                                  const char **skip = NULL) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            if (quick) *quick = true;
        } else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            *only = argv[++i];
        } else if (skip && !strcmp(argv[i], "--skip") && i + 1 < argc) {
            *skip = argv[++i];
        } else {
            fprintf(stderr, "usage: %s [--quick] [--only SUBSTRING]%s\n", argv[0], skip ? " [--skip SUBSTRING]" : "");
            return 2;
        }
    }
    return 0;
}
