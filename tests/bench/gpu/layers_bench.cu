// Everything of a training step but attention, kernel by kernel, at the end-to-end model's shapes
// (tests/bench/gpu/e2e_compare.sh: 12 layers, dim 768, MLP 3072, vocab 256, 8192 tokens per rank):
// where the non-attention time goes, measured against the GPU's own limits in the same run.
//
//   layers_bench [--tokens N] [--dim C] [--mlp F] [--layers L] [--vocab V] [--iters 20] [--warmup 3]
//
// Memory-bound kernels: GB/s of the bytes their contract must move (each input read once, each
// output written once; += outputs read and written), and that over a device-to-device
// cudaMemcpyAsync of 512 MiB (read + write), the practical bandwidth limit ("copy" row first).
// GEMMs (cuBLASLt, bf16, fp32 accumulate): TFLOP/s (forward 2 N C OC, backward 4 N C OC), and the
// MLP's GELU both ways (kernels, cuBLASLt epilogue) at the shape a step runs them.
// Time: CUDA events around each call, median over --iters after --warmup calls.
// Output: CSV on stdout, one line per kernel:
//   kernel,shape,calls_per_step,ms,gbytes,gb_s,of_copy,tflops,ms_per_step
// (calls_per_step: how often one step of the e2e model runs it; ms_per_step = ms x calls), then a
// '#' line with the sum of ms_per_step.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <functional>
#include <vector>

#include "cuda/cuda_common.h"
#include "test_util.h"

typedef __nv_bfloat16 bf16_t;
template <typename T> void cuda_colsum_accumulate(float *dbias, const T *dout, int N, int OC, cudaStream_t stream);

__global__ void fill_bf16(bf16_t *x, long n, unsigned seed, float scale) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        unsigned h = (unsigned)i * 2654435761u ^ seed;
        h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
        x[i] = __float2bfloat16(scale * ((h & 0xffffff) / 8388608.0f - 1.0f));
    }
}
__global__ void fill_f32(float *x, long n, unsigned seed, float scale, float offset) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        unsigned h = (unsigned)i * 2654435761u ^ seed;
        h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
        x[i] = offset + scale * ((h & 0xffffff) / 8388608.0f - 1.0f);
    }
}

static cudaStream_t stream;
static cudaEvent_t e0, e1;
static int iters = 20, warmup = 3;
static double copy_gb_s = 0.0, total_ms = 0.0;

static double median_ms(const std::function<void()> &f) {
    std::vector<float> t;
    for (int it = 0; it < warmup + iters; it++) {
        float ms;
        CHECK(cudaEventRecord(e0, stream));
        f();
        CHECK(cudaEventRecord(e1, stream));
        CHECK(cudaEventSynchronize(e1));
        CHECK(cudaEventElapsedTime(&ms, e0, e1));
        if (it >= warmup) t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

// One CSV row: a memory-bound kernel (bytes > 0) or a GEMM (flops > 0).
static void row(const char *kernel, const char *shape, int calls, double ms, double bytes, double flops) {
    const double gb_s = bytes > 0 ? bytes / (ms * 1e-3) / 1e9 : 0.0;
    printf("%s,%s,%d,%.4f,%.4f,%.1f,%.3f,%.1f,%.4f\n", kernel, shape, calls, ms, bytes / 1e9, gb_s,
           copy_gb_s > 0 && bytes > 0 ? gb_s / copy_gb_s : 0.0, flops > 0 ? flops / (ms * 1e-3) / 1e12 : 0.0,
           ms * calls);
    fflush(stdout);
    total_ms += ms * calls;
}

template <typename T> static T *dalloc(long n) {
    T *p;
    CHECK(cudaMalloc(&p, sizeof(T) * (size_t)(n > 0 ? n : 1)));
    return p;
}
static bf16_t *random_bf16(long n, unsigned seed, float scale = 1.0f) {
    bf16_t *p = dalloc<bf16_t>(n);
    fill_bf16<<<1024, 256, 0, stream>>>(p, n, seed, scale);
    CHECK(cudaGetLastError());
    return p;
}
static float *random_f32(long n, unsigned seed, float scale = 1.0f, float offset = 0.0f) {
    float *p = dalloc<float>(n);
    fill_f32<<<1024, 256, 0, stream>>>(p, n, seed, scale, offset);
    CHECK(cudaGetLastError());
    return p;
}

int main(int argc, char **argv) {
    int N = 8192, C = 768, F = 3072, L = 12, V = 256;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokens") && i + 1 < argc) N = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dim") && i + 1 < argc) C = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--mlp") && i + 1 < argc) F = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--layers") && i + 1 < argc) L = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--vocab") && i + 1 < argc) V = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--tokens N] [--dim C] [--mlp F] [--layers L] [--vocab V] [--iters N] "
                            "[--warmup N]\n", argv[0]);
            return 2;
        }
    }
    if (N < 1 || C < 1 || F < 1 || L < 1 || V < 1 || iters < 1 || warmup < 0) {
        fprintf(stderr, "%s: every size must be positive\n", argv[0]);
        return 2;
    }
    CHECK(cudaSetDevice(0));
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    fprintf(stderr, "# layers_bench on %s (sm_%d%d, %d SMs): N %d, C %d, F %d, L %d, V %d\n", prop.name, prop.major,
            prop.minor, prop.multiProcessorCount, N, C, F, L, V);
    CHECK(cudaStreamCreate(&stream));
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    cuda_kernels_init(0);
    printf("kernel,shape,calls_per_step,ms,gbytes,gb_s,of_copy,tflops,ms_per_step\n");
    const long nc = (long)N * C, nf = (long)N * F;
    const int WIDE = F > 3 * C ? F : 3 * C;   // the widest output of a product: weights, biases, gradients
    char shape[64], shape_f[64];
    snprintf(shape, sizeof shape, "%dx%d", N, C);
    snprintf(shape_f, sizeof shape_f, "%dx%d", N, F);

    {  // the physical limit: a device-to-device copy (read + write)
        const size_t bytes = (size_t)512 << 20;
        char *a = dalloc<char>((long)bytes), *b = dalloc<char>((long)bytes);
        CHECK(cudaMemsetAsync(a, 1, bytes, stream));
        const double ms = median_ms([&] { CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream)); });
        copy_gb_s = 2.0 * bytes / (ms * 1e-3) / 1e9;
        printf("copy,512MiB,0,%.4f,%.4f,%.1f,1.000,0.0,0.0000\n", ms, 2.0 * bytes / 1e9, copy_gb_s);
        CHECK(cudaFree(a));
        CHECK(cudaFree(b));
    }

    // Activations (bf16) and the per-layer parameters (fp32 masters, bf16 copies).
    bf16_t *x = random_bf16(nc, 1), *y = random_bf16(nc, 2), *dy = random_bf16(nc, 3, 0.01f), *out = random_bf16(nc, 4);
    bf16_t *pre = random_bf16(nf, 5), *act = random_bf16(nf, 6), *dpre = random_bf16(nf, 7, 0.01f);
    bf16_t *qkv_d = random_bf16(3 * nc, 8, 0.01f), *logits = random_bf16((long)N * V, 9);
    float *lnw = random_f32(C, 10, 0.1f, 1.0f), *lnb = random_f32(C, 11, 0.1f), *mean = dalloc<float>(N),
          *rstd = dalloc<float>(N), *dw = random_f32(WIDE, 12), *db = random_f32(WIDE, 13), *losses = dalloc<float>(N);
    int *targets = dalloc<int>(N);
    {
        std::vector<int> t(N);
        for (int i = 0; i < N; i++) t[i] = (i * 37) % V;
        CHECK(cudaMemcpy(targets, t.data(), sizeof(int) * N, cudaMemcpyHostToDevice));
    }

    // ---- token-wise layers: calls per step as lsst-run's LSS pass (runtime/gpu.c) -------------
    // LayerNorm both ways (split, default, or LSST_LN=fused): the default way counts its calls.
    double ms = 0.0;
    const int ln_default = cuda_layernorm_selected();
    for (int fused = 0; fused < 2; fused++) {
        cuda_layernorm_select(fused);
        const int calls = fused == ln_default ? 2 * L + 1 : 0;
        ms = median_ms([&] { cuda_layernorm_forward_bf16(out, mean, rstd, x, lnw, lnb, N, C, stream); });
        row(fused ? "layernorm_forward_fused" : "layernorm_forward", shape, calls, ms, 4.0 * nc + 8.0 * N, 0);
        ms = median_ms([&] { cuda_layernorm_backward_bf16(y, dw, db, dy, x, lnw, mean, rstd, N, C, stream); });
        row(fused ? "layernorm_backward_fused" : "layernorm_backward", shape, calls, ms, 8.0 * nc + 8.0 * N, 0);
    }
    cuda_layernorm_select(ln_default);
    // The defaults of the other switches: which rows below count their calls.
    const int residual_default = cuda_matmul_residual_selected(), bgrad_default = cuda_matmul_bgrad_selected();
    const int qkv_fused = cuda_kernels_env_switch("LSST_QKV") != 1, qkv_one = qkv_fused ? L : 0;
    ms = median_ms([&] { cuda_residual_forward_bf16(out, x, y, nc, stream); });
    row("residual_forward", shape, residual_default ? 0 : 2 * L, ms, 6.0 * nc, 0);
    // The GELU kernels: counted in the product + GELU pair rows below (calls_per_step 0 here).
    ms = median_ms([&] { cuda_gelu_forward_bf16(act, pre, nf, stream); });
    row("gelu_forward", shape_f, 0, ms, 4.0 * nf, 0);
    ms = median_ms([&] { cuda_gelu_backward_inplace_bf16(dpre, pre, nf, stream); });
    row("gelu_backward_inplace", shape_f, 0, ms, 6.0 * nf, 0);
    // The matmul bias gradients as kernels (LSST_BGRAD=kernels; by default in the products'
    // epilogues, 0 calls here): qkv (one product, or q and [k|v]), attention projection, fc (the
    // fc projection's is part of its product + dGELU pair row below).
    const int bg = bgrad_default ? 0 : 1;
    const struct { const char *name; int cols, calls; } sums[] = {
        {"colsum", C, bg * (2 * L - qkv_one)}, {"colsum", 2 * C, bg * (L - qkv_one)}, {"colsum", 3 * C, bg * qkv_one},
        {"colsum", F, bg * L}};
    for (const auto &s : sums) {
        char sh[64];
        snprintf(sh, sizeof sh, "%dx%d", N, s.cols);
        ms = median_ms([&] { cuda_colsum_accumulate<bf16_t>(db, s.cols == F ? dpre : qkv_d, N, s.cols, stream); });
        row(s.name, sh, s.calls, ms, 2.0 * N * s.cols, 0);
    }
    {
        char sh[64];
        snprintf(sh, sizeof sh, "%dx%d", N, V);
        ms = median_ms([&] {
            cuda_softmax_xent_forward_backward_bf16(losses, logits, targets, N, V, 1.0f / N, stream);
        });
        row("softmax_xent_fwd_bwd", sh, 1, ms, 4.0 * N * V + 8.0 * N, 0);
    }

    // ---- GEMMs (cuBLASLt): the four products of a layer, forward and backward ---------------------
    {
        bf16_t *w = random_bf16((long)WIDE * C, 14, 0.02f), *bias = random_bf16(WIDE, 15, 0.02f);
        float *dweight = dalloc<float>((long)WIDE * C);
        CHECK(cudaMemsetAsync(dweight, 0, sizeof(float) * (size_t)WIDE * C, stream));
        // Calls per step forward and backward (the default: one product of Q, K, V; two with
        // LSST_QKV=split); the fc forward and the fc projection's backward are the product + GELU
        // pairs below. residual: the product feeds a residual add (by default in its epilogue).
        const struct { const char *name; int in, outc, fwd_calls, bwd_calls; bf16_t *inp, *o; bool residual; } g[] = {
            {"matmul_qkv", C, 3 * C, qkv_one, qkv_one, x, qkv_d, false},
            {"matmul_q", C, C, L - qkv_one, L - qkv_one, x, qkv_d, false},
            {"matmul_kv", C, 2 * C, L - qkv_one, L - qkv_one, x, qkv_d, false},
            {"matmul_attproj", C, C, L, L, x, out, true}, {"matmul_fc", C, F, 0, L, x, pre, false},
            {"matmul_fcproj", F, C, L, 0, act, out, true}};
        for (const auto &p : g) {
            char sh[64], name[80];
            snprintf(sh, sizeof sh, "%dx%dx%d", N, p.in, p.outc);
            const double flops = 2.0 * N * p.in * p.outc;
            ms = median_ms([&] { cuda_matmul_forward_bf16(p.o, p.inp, w, bias, N, p.in, p.outc, stream); });
            snprintf(name, sizeof name, "%s_fwd", p.name);
            row(name, sh, p.residual && residual_default ? 0 : p.fwd_calls, ms, 0, flops);
            if (p.residual) {   // out = y + product, the residual as cuBLASLt's C (the default; against
                                // this row + residual_forward, LSST_RESIDUAL=kernel)
                cuda_matmul_residual_select(1);
                ms = median_ms([&] {
                    cuda_matmul_residual_forward_bf16(p.o, dy, y, p.inp, w, bias, N, p.in, p.outc, stream);
                });
                cuda_matmul_residual_select(residual_default);
                snprintf(name, sizeof name, "%s_residual_epilogue_fwd", p.name);
                row(name, sh, residual_default ? p.fwd_calls : 0, ms, 0, flops);
            }
            bf16_t *dinp = p.in == F ? dpre : y;
            ms = median_ms([&] {
                cuda_matmul_backward_bf16(dinp, dweight, NULL, p.o, p.inp, w, N, p.in, p.outc, stream);
            });
            snprintf(name, sizeof name, "%s_bwd", p.name);
            row(name, sh, bg * p.bwd_calls, ms, 0, 2.0 * flops);
            // The same with its bias gradient in the dweight product's epilogue (the default; against
            // this row + the colsum row of its width, LSST_BGRAD=kernels).
            cuda_matmul_bgrad_select(1);
            ms = median_ms([&] {
                cuda_matmul_backward_bf16(dinp, dweight, db, p.o, p.inp, w, N, p.in, p.outc, stream);
            });
            cuda_matmul_bgrad_select(bgrad_default);
            snprintf(name, sizeof name, "%s_bwd_bgrad_epilogue", p.name);
            row(name, sh, (1 - bg) * p.bwd_calls, ms, 0, 2.0 * flops);
        }
        fprintf(stderr, "# bias-gradient / residual epilogue fallbacks (cuBLASLt had no algorithm): %ld / %ld\n",
                cuda_matmul_bgrad_fallbacks(), cuda_matmul_residual_fallbacks());
        // The MLP's product + GELU pair, both ways (the epilogues, default, or LSST_GELU=kernels):
        // the default way counts L calls per step, the other 0.
        const int epi_default = cuda_matmul_gelu_selected();
        for (int epi = 0; epi < 2; epi++) {
            char sh[64], name[80];
            snprintf(sh, sizeof sh, "%dx%dx%d", N, C, F);
            cuda_matmul_gelu_select(epi);
            const double flops = 2.0 * N * C * F;
            ms = median_ms([&] { cuda_matmul_gelu_forward_bf16(act, pre, x, w, bias, N, C, F, stream); });
            snprintf(name, sizeof name, "fc_gelu_fwd_%s", epi ? "epilogue" : "kernels");
            row(name, sh, epi == epi_default ? L : 0, ms, 0, flops);
            snprintf(sh, sizeof sh, "%dx%dx%d", N, F, C);
            ms = median_ms([&] {
                cuda_matmul_backward_dgelu_bf16(dpre, dweight, db, out, act, w, pre, N, F, C, stream);
            });
            snprintf(name, sizeof name, "fcproj_dgelu_bwd_%s", epi ? "epilogue" : "kernels");
            row(name, sh, epi == epi_default ? L : 0, ms, 0, 2.0 * flops);
        }
        fprintf(stderr, "# GELU epilogue fallbacks (cuBLASLt had no algorithm): %ld\n", cuda_matmul_gelu_fallbacks());
        cuda_matmul_gelu_select(epi_default);
        CHECK(cudaFree(w));
        CHECK(cudaFree(bias));
        CHECK(cudaFree(dweight));
    }

    // ---- optimizer over every parameter of the model: norms, clip, AdamW -------------------------
    {
        // The model's 17 tensors in lsst-run's order (runtime/model.h): wte, the blocks' (2
        // LayerNorms, qkv, attention projection, fc, fc projection), lnf, wout, wpe.
        const size_t sizes[] = {(size_t)V * C, (size_t)L * C, (size_t)L * C, (size_t)L * 3 * C * C, (size_t)L * 3 * C,
                                (size_t)L * C * C, (size_t)L * C, (size_t)L * C, (size_t)L * C, (size_t)L * F * C,
                                (size_t)L * F, (size_t)L * C * F, (size_t)L * C, (size_t)C, (size_t)C, (size_t)V * C,
                                (size_t)N * C};
        const int count = sizeof sizes / sizeof sizes[0];
        long P = 0;
        for (size_t n : sizes) P += (long)n;
        float *p = random_f32(P, 16, 0.02f), *gr = random_f32(P, 17, 0.001f), *m = random_f32(P, 18, 0.001f),
              *v = random_f32(P, 19, 1e-6f, 2e-6f);
        bf16_t *pb = dalloc<bf16_t>(P);
        double *res = dalloc<double>(1);
        char sh[64];
        snprintf(sh, sizeof sh, "%ld", P);
        // The gradient norm's per-tensor sums: one launch over the 17 tensors (lsst-run since
        // 2026-11-26), against a launch pair per tensor (before) and one sum over all of them.
        double *sums = dalloc<double>(count);
        ms = median_ms([&] { cuda_sum_squares_tensors(sums, gr, sizes, count, stream); });
        row("sum_squares_tensors (one launch)", sh, 1, ms, 4.0 * P, 0);
        ms = median_ms([&] {
            for (long j = 0, off = 0; j < count; off += (long)sizes[j++])
                cuda_sum_squares(sums + j, gr + off, (long)sizes[j], stream);
        });
        row("sum_squares (a launch pair per tensor)", sh, 0, ms, 4.0 * P, 0);
        ms = median_ms([&] { cuda_sum_squares(res, gr, P, stream); });
        row("sum_squares (all as one tensor)", sh, 0, ms, 4.0 * P, 0);
        CHECK(cudaFree(sums));
        // The clip: inside AdamW (its grad_scale) since 2026-11-26; the separate pass it replaced, 0 calls.
        ms = median_ms([&] { cuda_scale_inplace(gr, P, 1.0f, stream); });
        row("scale_inplace (clip)", sh, 0, ms, 8.0 * P, 0);
        ms = median_ms([&] { cuda_adamw_update(p, pb, gr, m, v, P, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 10, 0.5f, stream); });
        row("adamw (with the clip)", sh, 1, ms, 30.0 * P, 0);
        for (void *q : {(void *)p, (void *)gr, (void *)m, (void *)v, (void *)pb, (void *)res}) CHECK(cudaFree(q));
    }
    printf("# sum of ms_per_step (everything of a step but attention and the embedding): %.3f ms\n", total_ms);
    CHECK(cudaStreamSynchronize(stream));
    for (void *q : {(void *)x, (void *)y, (void *)dy, (void *)out, (void *)pre, (void *)act, (void *)dpre,
                    (void *)qkv_d, (void *)logits, (void *)lnw, (void *)lnb, (void *)mean, (void *)rstd, (void *)dw,
                    (void *)db, (void *)losses, (void *)targets})
        CHECK(cudaFree(q));
    cuda_kernels_shutdown();
    return 0;
}
