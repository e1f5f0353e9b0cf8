// CPU kernels for the token-wise layers: embedding, layernorm, GELU, residual, softmax
// cross-entropy, and the optimizer helpers (AdamW, sum of squares, scaling).
// Parallel over rows or channels with OpenMP. Every reduction has a fixed order that does
// not depend on the thread count (sums over rows are split by channel, never by row), so
// results are bit-identical for any number of threads.
#include <math.h>
#include <omp.h>
#include <string.h>

#include "cpu.h"
#include "fastmath.h"
#include "kernels.h"

// Channel slices for the reductions over rows: wide enough for full vectors, few enough
// to give every thread work at C = 512.
enum { CHANNEL_SLICE = 64 };

// ---- embedding --------------------------------------------------------------

void embedding_forward(float *out, const int *tokens, const float *wte, const float *wpe, int B, int T, int C) {
#pragma omp parallel for schedule(static)
    for (long bt = 0; bt < (long)B * T; bt++) {
        float *o = out + bt * C;
        const float *e = wte + (long)tokens[bt] * C;
        const float *p = wpe + (bt % T) * C;
#pragma omp simd
        for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
    }
}

// dwte is a scatter-add (tokens repeat), so threads own channel slices and each one walks the
// tokens in order: no races, and every dwte element sums in token order.
void embedding_backward(float *dwte, float *dwpe, const float *dout, const int *tokens, int B, int T, int C) {
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < C; c0 += CHANNEL_SLICE) {
        int nc = C - c0 < CHANNEL_SLICE ? C - c0 : CHANNEL_SLICE;
        for (long bt = 0; bt < (long)B * T; bt++) {
            float *dw = dwte + (long)tokens[bt] * C + c0;
            const float *d = dout + bt * C + c0;
#pragma omp simd
            for (int c = 0; c < nc; c++) dw[c] += d[c];
        }
    }
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        float *dp = dwpe + (long)t * C;
        for (int b = 0; b < B; b++) {
            const float *d = dout + ((long)b * T + t) * C;
#pragma omp simd
            for (int c = 0; c < C; c++) dp[c] += d[c];
        }
    }
}

// ---- layernorm --------------------------------------------------------------

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C) {
    const float eps = 1e-5f;
#pragma omp parallel for schedule(static)
    for (long n = 0; n < N; n++) {
        const float *x = inp + n * C;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int c = 0; c < C; c++) sum += x[c];
        float m = sum / C;
        float var = 0.0f;  // two passes: no cancellation for rows with a large mean
#pragma omp simd reduction(+ : var)
        for (int c = 0; c < C; c++) var += (x[c] - m) * (x[c] - m);
        float s = 1.0f / sqrtf(var / C + eps);
        float *o = out + n * C;
#pragma omp simd
        for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * weight[c] + bias[c];
        mean[n] = m;
        rstd[n] = s;
    }
}

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C) {
    // dinp: rows are independent.
#pragma omp parallel for schedule(static)
    for (long n = 0; n < N; n++) {
        const float *x = inp + n * C, *d = dout + n * C;
        const float m = mean[n], s = rstd[n];
        float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
#pragma omp simd reduction(+ : dnorm_mean, dnorm_norm_mean)
        for (int c = 0; c < C; c++) {
            float dnorm = weight[c] * d[c];
            dnorm_mean += dnorm;
            dnorm_norm_mean += dnorm * (x[c] - m) * s;
        }
        dnorm_mean /= C;
        dnorm_norm_mean /= C;
        float *di = dinp + n * C;
#pragma omp simd
        for (int c = 0; c < C; c++) {
            float norm = (x[c] - m) * s;
            di[c] += (weight[c] * d[c] - dnorm_mean - norm * dnorm_norm_mean) * s;
        }
    }
    // dweight, dbias: sums over rows, split by channel slice so the order is fixed.
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < C; c0 += CHANNEL_SLICE) {
        int nc = C - c0 < CHANNEL_SLICE ? C - c0 : CHANNEL_SLICE;
        float dw[CHANNEL_SLICE], db[CHANNEL_SLICE];
        for (int c = 0; c < nc; c++) dw[c] = db[c] = 0.0f;
        for (long n = 0; n < N; n++) {
            const float *x = inp + n * C + c0, *d = dout + n * C + c0;
            const float m = mean[n], s = rstd[n];
#pragma omp simd
            for (int c = 0; c < nc; c++) {
                dw[c] += (x[c] - m) * s * d[c];
                db[c] += d[c];
            }
        }
        for (int c = 0; c < nc; c++) {
            dweight[c0 + c] += dw[c];
            dbias[c0 + c] += db[c];
        }
    }
}

// ---- GELU (tanh approximation, as GPT-2) ------------------------------------------

#define GELU_SCALE 0.7978845608028654f  // sqrt(2/pi)
#define GELU_CUBE 0.044715f

// tanh(u) = sign(u) (1 - e) / (1 + e), e = exp(-2|u|): vectorizable, absolute error ~1e-7.
static inline float tanh_approx(float u) {
    float a = fabsf(u);
    float e = exp2_approx(-2.0f * LOG2E_F * a);
    return copysignf((1.0f - e) / (1.0f + e), u);
}

// Contiguous chunks per OpenMP iteration; the chunk loops are the vectorized (and cloned) part.
enum { GELU_CHUNK = 4096 };

CPU_VECTOR_CLONES static void gelu_forward_chunk(float *out, const float *inp, long n) {
#pragma omp simd
    for (long i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_SCALE * (x + GELU_CUBE * x * x * x);
        out[i] = 0.5f * x * (1.0f + tanh_approx(u));
    }
}

CPU_VECTOR_CLONES static void gelu_backward_chunk(float *dinp, const float *inp, const float *dout, long n) {
#pragma omp simd
    for (long i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_SCALE * (x + GELU_CUBE * x * x * x);
        float th = tanh_approx(u);
        float du = GELU_SCALE * (1.0f + 3.0f * GELU_CUBE * x * x);
        float g = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du;
        dinp[i] += g * dout[i];
    }
}

void gelu_forward(float *out, const float *inp, long n) {
#pragma omp parallel for schedule(static)
    for (long i0 = 0; i0 < n; i0 += GELU_CHUNK)
        gelu_forward_chunk(out + i0, inp + i0, n - i0 < GELU_CHUNK ? n - i0 : GELU_CHUNK);
}

void gelu_backward(float *dinp, const float *inp, const float *dout, long n) {
#pragma omp parallel for schedule(static)
    for (long i0 = 0; i0 < n; i0 += GELU_CHUNK)
        gelu_backward_chunk(dinp + i0, inp + i0, dout + i0, n - i0 < GELU_CHUNK ? n - i0 : GELU_CHUNK);
}

// ---- residual -------------------------------------------------------------------

void residual_forward(float *out, const float *a, const float *b, long n) {
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) out[i] = a[i] + b[i];
}

// ---- softmax cross-entropy --------------------------------------------------------
// One row at a time with libm expf (runs once per step on (N, V); accuracy over speed).

// Returns log(sum exp(row - max)) + max.
static float row_logsumexp(const float *row, int V) {
    float mx = row[0];
    for (int j = 1; j < V; j++) mx = row[j] > mx ? row[j] : mx;
    float sum = 0.0f;
    for (int j = 0; j < V; j++) sum += expf(row[j] - mx);
    return mx + logf(sum);
}

void softmax_xent_forward(float *losses, const float *logits, const int *targets, int N, int V) {
#pragma omp parallel for schedule(static)
    for (long n = 0; n < N; n++) {
        int t = targets[n];
        losses[n] = t < 0 ? 0.0f : row_logsumexp(logits + n * V, V) - logits[n * V + t];
    }
}

void softmax_xent_forward_backward(float *losses, float *logits, const int *targets, int N, int V, float dloss) {
#pragma omp parallel for schedule(static)
    for (long n = 0; n < N; n++) {
        float *row = logits + n * V;
        int t = targets[n];
        if (t < 0) {
            losses[n] = 0.0f;
            memset(row, 0, sizeof(float) * V);
            continue;
        }
        float lse = row_logsumexp(row, V);
        losses[n] = lse - row[t];
        for (int j = 0; j < V; j++) row[j] = dloss * expf(row[j] - lse);
        row[t] -= dloss;
    }
}

// ---- optimizer --------------------------------------------------------------------

void adamw_update(float *params, const float *grads, float *m, float *v, long n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int t) {
    // Bias corrections in double: beta^t for large t loses digits in float.
    const float c1 = (float)(1.0 / (1.0 - pow(beta1, t)));
    const float c2 = (float)(1.0 / (1.0 - pow(beta2, t)));
    // No simd: sqrtf may set errno, so compilers keep it scalar (the loop streams five arrays).
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        float g = grads[i];
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float mhat = mi * c1, vhat = vi * c2;
        params[i] -= lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * params[i]);
    }
}

// A fixed number of chunks, each summed in double and combined in chunk order: the result does
// not depend on the thread count (an OpenMP reduction clause combines in arbitrary order).
enum { SUM_CHUNKS = 64 };

double sum_squares(const float *x, long n) {
    double partial[SUM_CHUNKS];
    long chunk = (n + SUM_CHUNKS - 1) / SUM_CHUNKS;
#pragma omp parallel for schedule(static)
    for (int k = 0; k < SUM_CHUNKS; k++) {
        long i0 = k * chunk, i1 = i0 + chunk < n ? i0 + chunk : n;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (long i = i0; i < i1; i++) s += (double)x[i] * x[i];
        partial[k] = s;
    }
    double total = 0.0;
    for (int k = 0; k < SUM_CHUNKS; k++) total += partial[k];
    return total;
}

void scale_inplace(float *x, long n, float s) {
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) x[i] *= s;
}
