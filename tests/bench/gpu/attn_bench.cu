// Causal attention forward + backward TFLOP/s of lsst's CUDA kernels (bf16, tensor cores), at the
// shapes of tests/bench/gpu/sdpa_peer.py (PyTorch scaled_dot_product_attention on the same GPU).
//
//   attn_bench [--hs 64,128] [--seq 4096,8192,16384,32768] [--iters 10] [--warmup 3] [--variants]
//              [--batch B] [--heads NH] [--skip SUBSTRING]
//
// Shapes: batch x heads fill the GPU as FlashAttention's benchmark does: B = max(1, 16384 / T),
// NH = 2048 / hs (model dim 2048); --batch / --heads fix them instead (e.g. a training run's
// shape: tests/gpu/run.sh times tests/bench/gpu/e2e_compare.sh's, batch 1 x 12 heads of 64). q, k, v, out, dout: (B, T, NH*hs) bf16, row stride NH*hs;
// positions 0..T-1 (one rank, self-attention).
// FLOPs (the FlashAttention convention, so both sides count the same work): forward
// 4 * B * NH * T^2 * hs / 2 (causal: half the matrix), backward 2.5 x forward. Our backward
// actually computes 3.5 x forward (scores recomputed in both of its kernels); that cost is ours.
// Time: CUDA events around each call, median over --iters after --warmup calls.
// Output: one CSV line per (hs, T, variant) on stdout:
//   impl,hs,seq,batch,heads,variant,fwd_ms,bwd_ms,fwd_tflops,bwd_tflops,total_tflops,fwd_variant,bwd_variant
// First the row "default": the pair lsst-run uses here (cuda_attention_apply_env: wgmma on sm_90).
// Then (--variants) row vN pairs forward variant N and backward variant N; where a head size has
// fewer of one kind, or that side's name contains the --skip string (e.g. wgmma, after one of
// those brought the process down), that side is variant 0 again: fwd_variant / bwd_variant say
// which ran. (--skip applies to the default row too.)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "cuda/kernels_cuda.h"
#include "test_util.h"

typedef __nv_bfloat16 bf16_t;

static std::vector<int> parse_list(const char *s) {
    std::vector<int> v;
    while (*s) {
        v.push_back(atoi(s));
        const char *c = strchr(s, ',');
        if (!c) break;
        s = c + 1;
    }
    return v;
}

__global__ void fill_random(bf16_t *x, long n, unsigned seed, float scale) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        unsigned h = (unsigned)i * 2654435761u ^ seed;
        h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
        x[i] = __float2bfloat16(scale * ((h & 0xffffff) / 8388608.0f - 1.0f));
    }
}

static float median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

int main(int argc, char **argv) {
    std::vector<int> hss = {64, 128}, seqs = {4096, 8192, 16384, 32768};
    int iters = 10, warmup = 3, batch = 0, heads = 0;
    bool variants = false;
    const char *skip = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--hs") && i + 1 < argc) hss = parse_list(argv[++i]);
        else if (!strcmp(argv[i], "--seq") && i + 1 < argc) seqs = parse_list(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--variants")) variants = true;
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--heads") && i + 1 < argc) heads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--skip") && i + 1 < argc) skip = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--hs 64,128] [--seq 4096,...] [--iters N] [--warmup N] [--variants] "
                            "[--batch B] [--heads NH] [--skip SUBSTRING]\n", argv[0]);
            return 2;
        }
    }
    CHECK(cudaSetDevice(0));
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    fprintf(stderr, "# attn_bench on %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor,
            prop.multiProcessorCount);
    cudaStream_t stream;
    CHECK(cudaStreamCreate(&stream));
    cuda_kernels_init(0);
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    printf("impl,hs,seq,batch,heads,variant,fwd_ms,bwd_ms,fwd_tflops,bwd_tflops,total_tflops,fwd_variant,"
           "bwd_variant\n");
    fflush(stdout);

    for (int hs : hss)
        for (int T : seqs) {
            // The pair lsst-run would use (cuda_kernels_init applied the defaults and environment).
            const int def_f = cuda_attention_selected(hs, 0), def_b = cuda_attention_selected(hs, 1);
            const int B = batch > 0 ? batch : std::max(1, 16384 / T), NH = heads > 0 ? heads : 2048 / hs;
            const int C = NH * hs;
            const long n = (long)B * T * C;
            bf16_t *q, *k, *v, *out, *dout, *dq, *dk, *dv;
            float *lse;
            int *pos;
            void *scratch;
            bf16_t **bufs[] = {&q, &k, &v, &out, &dout, &dq, &dk, &dv};
            for (bf16_t **b : bufs) CHECK(cudaMalloc(b, sizeof(bf16_t) * n));
            CHECK(cudaMalloc(&lse, sizeof(float) * B * NH * T));
            CHECK(cudaMalloc(&pos, sizeof(int) * T));
            CHECK(cudaMalloc(&scratch, cuda_attention_backward_scratch_bytes_any(B, NH, T, hs)));
            std::vector<int> hpos(T);
            for (int t = 0; t < T; t++) hpos[t] = t;
            CHECK(cudaMemcpy(pos, hpos.data(), sizeof(int) * T, cudaMemcpyHostToDevice));
            unsigned seed = 1;
            for (bf16_t *b : {q, k, v, dout}) fill_random<<<1024, 256, 0, stream>>>(b, n, seed++, 1.0f);
            CHECK(cudaGetLastError());
            const double fwd_flops = 4.0 * B * NH * (double)T * T * hs / 2.0, bwd_flops = 2.5 * fwd_flops;

            const int nvar = variants ? cuda_attention_variants(hs) : 0;
            for (int var = -1; var < nvar; var++) {   // -1: the default pair
                const int want_f = var < 0 ? def_f : var, want_b = var < 0 ? def_b : var;
                const char *fname = cuda_attention_variant_name(hs, want_f, 0);
                const char *bname = cuda_attention_variant_name(hs, want_b, 1);
                auto runs = [&](const char *n) { return strcmp(n, "none") && !(skip && strstr(n, skip)); };
                const int fv = runs(fname) ? want_f : 0, bv = runs(bname) ? want_b : 0;
                if (var > 0 && fv == 0 && bv == 0) continue;  // nothing of this variant runs here
                if (hs == 16 || hs == 32 || hs == 64 || hs == 128) cuda_attention_select(hs, fv, bv);
                std::vector<float> tf, tb;
                for (int it = 0; it < warmup + iters; it++) {
                    float ms;
                    CHECK(cudaEventRecord(e0, stream));
                    cuda_attention_forward_bf16(out, lse, q, k, v, pos, B, T, T, NH, hs, C, C, stream);
                    CHECK(cudaEventRecord(e1, stream));
                    CHECK(cudaEventSynchronize(e1));
                    CHECK(cudaEventElapsedTime(&ms, e0, e1));
                    if (it >= warmup) tf.push_back(ms);
                    CHECK(cudaEventRecord(e0, stream));
                    cuda_attention_backward_bf16(dq, dk, dv, dout, out, lse, q, k, v, pos, B, T, T, NH, hs, C, C,
                                                 scratch, stream);
                    CHECK(cudaEventRecord(e1, stream));
                    CHECK(cudaEventSynchronize(e1));
                    CHECK(cudaEventElapsedTime(&ms, e0, e1));
                    if (it >= warmup) tb.push_back(ms);
                }
                const float mf = median(tf), mb = median(tb);
                char label[16];
                if (var < 0) snprintf(label, sizeof label, "default");
                else snprintf(label, sizeof label, "v%d", var);
                printf("lsst,%d,%d,%d,%d,%s,%.4f,%.4f,%.2f,%.2f,%.2f,v%d,v%d\n", hs, T, B, NH, label, mf, mb,
                       fwd_flops / (mf * 1e-3) / 1e12, bwd_flops / (mb * 1e-3) / 1e12,
                       (fwd_flops + bwd_flops) / ((mf + mb) * 1e-3) / 1e12, fv, bv);
                fflush(stdout);
                fprintf(stderr, "#   hs=%d T=%d %s: %s | %s\n", hs, T, label, fv == want_f ? fname : "(variant 0 fwd)",
                        bv == want_b ? bname : "(variant 0 bwd)");
            }
            if (hs == 16 || hs == 32 || hs == 64 || hs == 128) cuda_attention_select(hs, def_f, def_b);
            CHECK(cudaStreamSynchronize(stream));
            for (bf16_t **b : bufs) CHECK(cudaFree(*b));
            CHECK(cudaFree(lse));
            CHECK(cudaFree(pos));
            CHECK(cudaFree(scratch));
        }
    cuda_kernels_shutdown();
    return 0;
}
