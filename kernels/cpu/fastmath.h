// Private to kernels/cpu: an exp2 that gcc vectorizes. libm's expf/tanhf are scalar calls
// (glibc only offers vector variants under -ffast-math), and the attention softmax and GELU
// call them once per score / activation, which would make those loops call-bound.
#pragma once
#include <stdint.h>
#include <string.h>

// 2^x with relative error <= 2e-7 for x in [-126, 127]; x is clamped to that range first
// (-inf gives 2^-126: callers that need exact zeros, e.g. masked scores, mask them out).
// The clamps compare the bits as integers: a float compare before float arithmetic makes gcc
// branch (it may not if-convert trapping compares) and the loop stops vectorizing.
static inline float exp2_approx(float x) {
    int32_t bits;
    memcpy(&bits, &x, sizeof bits);
    const int32_t plus_127 = 0x42FE0000;     // bits of 127.0f; positive floats order as signed ints
    const uint32_t minus_126 = 0xC2FC0000u;  // bits of -126.0f; negative floats order as unsigned ints
    bits = bits > plus_127 ? plus_127 : bits;
    uint32_t ubits = (uint32_t)bits;
    ubits = ubits > minus_126 ? minus_126 : ubits;
    memcpy(&x, &ubits, sizeof x);
    // x = n + f with n an integer and f in [-0.5, 0.5]: adding 1.5*2^23 rounds to an integer.
    const float round_magic = 12582912.0f;
    float n = (x + round_magic) - round_magic;
    float f = x - n;
    // 2^f = e^(f ln 2), Taylor to degree 7: truncation < 1.1e-9 for |f| <= 0.5.
    float p = 1.5252734e-05f;
    p = p * f + 1.5403530e-04f;
    p = p * f + 1.3333558e-03f;
    p = p * f + 9.6181291e-03f;
    p = p * f + 5.5504109e-02f;
    p = p * f + 2.4022651e-01f;
    p = p * f + 6.9314718e-01f;
    p = p * f + 1.0f;
    const int32_t scale_bits = ((int32_t)n + 127) << 23;  // 2^n as a float, n in [-126, 127]
    float scale;
    memcpy(&scale, &scale_bits, sizeof scale);
    return p * scale;
}

#define LOG2E_F 1.44269504088896341f
#define LN2_F 0.693147180559945309f

// x where mask is all ones, +0 where it is 0 (an integer AND: a float select would make gcc
// branch, see above).
static inline float keep_if(float x, int32_t mask) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    bits &= (uint32_t)mask;
    memcpy(&x, &bits, sizeof x);
    return x;
}
