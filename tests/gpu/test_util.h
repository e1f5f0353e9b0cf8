// Host helpers shared by the kernel test programs (test_cuda_kernels.cu and the CPU emulators
// emulate_layers.cpp, emulate_attention.cpp): their random inputs and their command line.
#pragma once
#include <stdint.h>
#include <stdio.h>
#include <string.h>

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
};

// [--quick] [--only SUBSTRING]: 0, or 2 after a usage line. quick may be NULL (a program without
// a quick mode takes the flag and ignores it, so one command line serves every program).
static inline int parse_test_args(int argc, char **argv, bool *quick, const char **only) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            if (quick) *quick = true;
        } else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            *only = argv[++i];
        } else {
            fprintf(stderr, "usage: %s [--quick] [--only SUBSTRING]\n", argv[0]);
            return 2;
        }
    }
    return 0;
}
