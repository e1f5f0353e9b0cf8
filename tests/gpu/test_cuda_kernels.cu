// Every CUDA kernel of kernels/cuda against its CPU twin (kernels/cpu, linked from libkernels.a)
// on random inputs. Prints TAP lines and, last, "N passed, N failed"; exits 1 on any failure.
//
//   test_cuda_kernels [--quick] [--only SUBSTRING] [--skip SUBSTRING]
//
// Method, for every kernel:
//  - Inputs are random; for the bf16 variants they are rounded to bf16 first and the CPU twin
//    runs in fp32 on the same rounded values, so only the GPU's arithmetic and output rounding
//    differ.
//  - Forward outputs are poisoned first (every byte 0xFF: NaN in fp32 and bf16), so an element
//    the kernel does not write shows up as NaN. Any NaN in a GPU output fails the test.
//  - Backward outputs (which accumulate) start from random values of the gradient's own
//    magnitude, the same on both sides: an element not written, or overwritten instead of
//    accumulated, shows up as an error.
//  - Error = max_i |gpu_i - cpu_i| / (|cpu_i| + rms(cpu)): relative, with elements near zero
//    measured against the tensor's typical magnitude; and rms error = rms(gpu - cpu) / rms(cpu).
//    Tolerances (max / rms): fp32 1e-4 / 3e-5 (attention 1e-3 / 1e-4); bf16 1e-2 / 3e-3
//    (matmul 2e-2 / 7e-3, attention 5e-2 / 5e-3); exact where the kernel must be (copies,
//    scaling).
//  - Determinism: kernels that reduce (embedding / layernorm / attention backward, sum of
//    squares) run twice and must give identical bits.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <string>
#include <vector>

extern "C" {
#include "kernels.h"
}
#include "cuda/kernels_cuda.h"
#include "test_util.h"

typedef __nv_bfloat16 bf16_t;
using std::vector;

static bool quick = false;
static const char *only = NULL, *skip = NULL;   // --only / --skip SUBSTRING of test names
static int n_pass = 0, n_fail = 0;
static cudaStream_t stream;

// ---- random numbers (splitmix64) ------------------------------------------------------------
static SplitMix64 rng = {0x1234567887654321ull};
static vector<float> random_vec(long n, float lo = -1.0f, float hi = 1.0f) {
    vector<float> v(n);
    for (auto &x : v) x = rng.uniform(lo, hi);
    return v;
}
static float bf16_round(float x) { return __bfloat162float(__float2bfloat16(x)); }
static vector<float> rounded(vector<float> v) {
    for (auto &x : v) x = bf16_round(x);
    return v;
}

// ---- device buffers ----------------------------------------------------------------------------
template <typename T> struct Dev {
    T *p = nullptr;
    long n = 0;
    explicit Dev(long n_) : n(n_) { CHECK(cudaMalloc(&p, sizeof(T) * (n > 0 ? n : 1))); }
    ~Dev() { cudaFree(p); }
    Dev(const Dev &) = delete;
    Dev &operator=(const Dev &) = delete;
    void poison() { CHECK(cudaMemset(p, 0xFF, sizeof(T) * n)); }
};
static void upload(Dev<float> &d, const vector<float> &h) {
    CHECK(cudaMemcpy(d.p, h.data(), sizeof(float) * h.size(), cudaMemcpyHostToDevice));
}
static void upload(Dev<bf16_t> &d, const vector<float> &h) {
    vector<bf16_t> t(h.size());
    for (size_t i = 0; i < h.size(); i++) t[i] = __float2bfloat16(h[i]);
    CHECK(cudaMemcpy(d.p, t.data(), sizeof(bf16_t) * t.size(), cudaMemcpyHostToDevice));
}
static void upload(Dev<int> &d, const vector<int> &h) {
    CHECK(cudaMemcpy(d.p, h.data(), sizeof(int) * h.size(), cudaMemcpyHostToDevice));
}
static vector<float> download(const Dev<float> &d) {
    CHECK(cudaStreamSynchronize(stream));
    vector<float> h(d.n);
    CHECK(cudaMemcpy(h.data(), d.p, sizeof(float) * d.n, cudaMemcpyDeviceToHost));
    return h;
}
static vector<float> download(const Dev<bf16_t> &d) {
    CHECK(cudaStreamSynchronize(stream));
    vector<bf16_t> t(d.n);
    CHECK(cudaMemcpy(t.data(), d.p, sizeof(bf16_t) * d.n, cudaMemcpyDeviceToHost));
    vector<float> h(d.n);
    for (long i = 0; i < d.n; i++) h[i] = __bfloat162float(t[i]);
    return h;
}
template <typename T> static vector<unsigned char> download_bytes(const Dev<T> &d) {
    CHECK(cudaStreamSynchronize(stream));
    vector<unsigned char> h(sizeof(T) * d.n);
    CHECK(cudaMemcpy(h.data(), d.p, h.size(), cudaMemcpyDeviceToHost));
    return h;
}

// ---- comparison and TAP -----------------------------------------------------------------------
struct Cmp {
    double err = 0.0;  // max relative error (see the header)
    double rms = 0.0;  // rms error / rms of the reference
    long nan = 0;      // NaN / inf in the GPU output where the reference is finite
    long worst = -1;
};
static Cmp compare(const vector<float> &got, const vector<float> &ref) {
    Cmp c;
    double ss = 0.0;
    long finite = 0;
    for (float r : ref)
        if (isfinite(r)) ss += (double)r * r, finite++;
    const double rms = finite ? sqrt(ss / finite) : 0.0;
    const double floor_ = rms > 0.0 ? rms : 1e-30;
    double sse = 0.0;
    for (size_t i = 0; i < ref.size(); i++) {
        const double r = ref[i], g = got[i];
        if (!isfinite(r)) {  // -inf lse of rows that see no key: must match exactly
            if (!(g == r)) c.nan++;
            continue;
        }
        if (!isfinite(g)) {
            c.nan++;
            continue;
        }
        const double e = fabs(g - r) / (fabs(r) + floor_);
        sse += (g - r) * (g - r);
        if (e > c.err) c.err = e, c.worst = (long)i;
    }
    c.rms = finite ? sqrt(sse / finite) / floor_ : 0.0;
    return c;
}

static bool selected(const std::string &name) {
    return (!only || name.find(only) != std::string::npos) && (!skip || name.find(skip) == std::string::npos);
}

// One TAP line for all the named outputs of one test: each must have no NaN, max error <= tol
// and rms error <= rms_tol (rms_tol < 0: tol / 3).
static void report(const std::string &name, const vector<std::pair<const char *, Cmp>> &outs, double tol,
                   bool extra_ok = true, const char *extra = "", double rms_tol = -1.0) {
    bool ok = extra_ok;
    std::string detail;
    char buf[256];
    if (rms_tol < 0.0) rms_tol = tol / 3.0;
    for (auto &o : outs) {
        ok = ok && o.second.nan == 0 && o.second.err <= tol && o.second.rms <= rms_tol;
        snprintf(buf, sizeof buf, "%s%s err %.2e rms %.1e%s", detail.empty() ? "" : ", ", o.first, o.second.err,
                 o.second.rms, o.second.nan ? " NaN!" : "");
        detail += buf;
        if (o.second.nan) {
            snprintf(buf, sizeof buf, " (%ld bad)", o.second.nan);
            detail += buf;
        }
    }
    (ok ? n_pass : n_fail)++;
    printf("%s %d - %s (%s; tol %.0e, rms %.0e)%s%s\n", ok ? "ok" : "not ok", n_pass + n_fail, name.c_str(),
           detail.c_str(), tol, rms_tol, extra_ok ? "" : " ", extra_ok ? "" : extra);
    fflush(stdout);
}

// Initial values for accumulating outputs: random, of the magnitude of the expected gradient.
static vector<float> accum_init(const vector<float> &grad_ref, bool bf16) {
    double ss = 0.0;
    for (float g : grad_ref) ss += (double)g * g;
    const float rms = grad_ref.empty() ? 1.0f : (float)sqrt(ss / grad_ref.size());
    vector<float> v = random_vec((long)grad_ref.size(), -rms, rms);
    return bf16 ? rounded(v) : v;
}
static vector<float> plus(vector<float> a, const vector<float> &b) {
    for (size_t i = 0; i < a.size(); i++) a[i] += b[i];
    return a;
}

// Activation type of a test: fp32 twins or bf16 mixed precision.
template <typename T> struct Prec;
template <> struct Prec<float> {
    static constexpr bool bf16 = false;
    static constexpr const char *name = "f32";
    static constexpr double tol = 1e-4;
};
template <> struct Prec<bf16_t> {
    static constexpr bool bf16 = true;
    static constexpr const char *name = "bf16";
    static constexpr double tol = 1e-2;
};
template <typename T> static vector<float> act(vector<float> v) { return Prec<T>::bf16 ? rounded(v) : v; }

// ---- the kernel calls, by precision ---------------------------------------------------------------
static void gpu_embedding_forward(float *o, const int *t, const float *w, const float *p, int B, int T, int C) {
    cuda_embedding_forward(o, t, w, p, B, T, C, stream);
}
static void gpu_embedding_forward(bf16_t *o, const int *t, const float *w, const float *p, int B, int T, int C) {
    cuda_embedding_forward_bf16(o, t, w, p, B, T, C, stream);
}
static void gpu_embedding_backward(float *dw, float *dp, const float *d, const int *t, int B, int T, int C, int V) {
    cuda_embedding_backward(dw, dp, d, t, B, T, C, V, stream);
}
static void gpu_embedding_backward(float *dw, float *dp, const bf16_t *d, const int *t, int B, int T, int C, int V) {
    cuda_embedding_backward_bf16(dw, dp, d, t, B, T, C, V, stream);
}
static void gpu_layernorm_forward(float *o, float *m, float *r, const float *x, const float *w, const float *b, int N,
                                  int C) {
    cuda_layernorm_forward(o, m, r, x, w, b, N, C, stream);
}
static void gpu_layernorm_forward(bf16_t *o, float *m, float *r, const bf16_t *x, const float *w, const float *b,
                                  int N, int C) {
    cuda_layernorm_forward_bf16(o, m, r, x, w, b, N, C, stream);
}
static void gpu_layernorm_backward(float *di, float *dw, float *db, const float *d, const float *x, const float *w,
                                   const float *m, const float *r, int N, int C) {
    cuda_layernorm_backward(di, dw, db, d, x, w, m, r, N, C, stream);
}
static void gpu_layernorm_backward(bf16_t *di, float *dw, float *db, const bf16_t *d, const bf16_t *x, const float *w,
                                   const float *m, const float *r, int N, int C) {
    cuda_layernorm_backward_bf16(di, dw, db, d, x, w, m, r, N, C, stream);
}
static void gpu_matmul_forward(float *o, const float *x, const float *w, const float *b, int N, int C, int OC) {
    cuda_matmul_forward(o, x, w, b, N, C, OC, stream);
}
static void gpu_matmul_forward(bf16_t *o, const bf16_t *x, const bf16_t *w, const bf16_t *b, int N, int C, int OC) {
    cuda_matmul_forward_bf16(o, x, w, b, N, C, OC, stream);
}
static void gpu_matmul_backward(float *di, float *dw, float *db, const float *d, const float *x, const float *w, int N,
                                int C, int OC) {
    cuda_matmul_backward(di, dw, db, d, x, w, N, C, OC, stream);
}
static void gpu_matmul_backward(bf16_t *di, float *dw, float *db, const bf16_t *d, const bf16_t *x, const bf16_t *w,
                                int N, int C, int OC) {
    cuda_matmul_backward_bf16(di, dw, db, d, x, w, N, C, OC, stream);
}
static void gpu_gelu_forward(float *o, const float *x, long n) { cuda_gelu_forward(o, x, n, stream); }
static void gpu_gelu_forward(bf16_t *o, const bf16_t *x, long n) { cuda_gelu_forward_bf16(o, x, n, stream); }
static void gpu_gelu_backward(float *di, const float *x, const float *d, long n) {
    cuda_gelu_backward(di, x, d, n, stream);
}
static void gpu_gelu_backward(bf16_t *di, const bf16_t *x, const bf16_t *d, long n) {
    cuda_gelu_backward_bf16(di, x, d, n, stream);
}
static void gpu_residual(float *o, const float *a, const float *b, long n) { cuda_residual_forward(o, a, b, n, stream); }
static void gpu_residual(bf16_t *o, const bf16_t *a, const bf16_t *b, long n) {
    cuda_residual_forward_bf16(o, a, b, n, stream);
}
static void gpu_xent_forward(float *l, const float *x, const int *t, int N, int V) {
    cuda_softmax_xent_forward(l, x, t, N, V, stream);
}
static void gpu_xent_forward(float *l, const bf16_t *x, const int *t, int N, int V) {
    cuda_softmax_xent_forward_bf16(l, x, t, N, V, stream);
}
static void gpu_xent_forward_backward(float *l, float *x, const int *t, int N, int V, float d) {
    cuda_softmax_xent_forward_backward(l, x, t, N, V, d, stream);
}
static void gpu_xent_forward_backward(float *l, bf16_t *x, const int *t, int N, int V, float d) {
    cuda_softmax_xent_forward_backward_bf16(l, x, t, N, V, d, stream);
}
static void gpu_attention_forward(float *o, float *lse, const float *q, const float *k, const float *v,
                                  const int *pos, int B, int Tq, int Tk, int NH, int hs, int ldq, int ldkv) {
    cuda_attention_forward(o, lse, q, k, v, pos, B, Tq, Tk, NH, hs, ldq, ldkv, stream);
}
static void gpu_attention_forward(bf16_t *o, float *lse, const bf16_t *q, const bf16_t *k, const bf16_t *v,
                                  const int *pos, int B, int Tq, int Tk, int NH, int hs, int ldq, int ldkv) {
    cuda_attention_forward_bf16(o, lse, q, k, v, pos, B, Tq, Tk, NH, hs, ldq, ldkv, stream);
}
static void gpu_attention_backward(float *dq, float *dk, float *dv, const float *d, const float *o, const float *lse,
                                   const float *q, const float *k, const float *v, const int *pos, int B, int Tq,
                                   int Tk, int NH, int hs, int ldq, int ldkv, void *scratch) {
    cuda_attention_backward(dq, dk, dv, d, o, lse, q, k, v, pos, B, Tq, Tk, NH, hs, ldq, ldkv, scratch, stream);
}
static void gpu_attention_backward(bf16_t *dq, bf16_t *dk, bf16_t *dv, const bf16_t *d, const bf16_t *o,
                                   const float *lse, const bf16_t *q, const bf16_t *k, const bf16_t *v,
                                   const int *pos, int B, int Tq, int Tk, int NH, int hs, int ldq, int ldkv,
                                   void *scratch) {
    cuda_attention_backward_bf16(dq, dk, dv, d, o, lse, q, k, v, pos, B, Tq, Tk, NH, hs, ldq, ldkv, scratch, stream);
}

static std::string tname(const char *kernel, const char *prec, const char *extra = "") {
    return std::string(kernel) + " " + prec + (extra[0] ? " " : "") + extra;
}

// A kernel switch (cuda_layernorm_select, cuda_matmul_*_select) set to v for the scope's life,
// then back to what it was (the defaults of cuda_kernels_init, for the tests after).
struct Switch {
    void (*set)(int);
    int before;
    Switch(int (*get)(void), void (*set_)(int), int v) : set(set_), before(get()) { set(v); }
    ~Switch() { set(before); }
};

// ---- token-wise kernels ---------------------------------------------------------------------------

template <typename T> static void test_embedding() {
    const int B = 2, T_ = quick ? 37 : 200, C = quick ? 40 : 96, V = 256;
    const std::string fwd = tname("embedding_forward", Prec<T>::name), bwd = tname("embedding_backward", Prec<T>::name);
    vector<int> tok(B * T_);
    for (auto &t : tok) t = (int)(rng.next() % 64) * 3 % V;  // a skewed subset of the vocabulary
    vector<float> wte = random_vec((long)V * C), wpe = random_vec((long)T_ * C);
    Dev<int> dtok(B * T_);
    Dev<float> dwte_w(V * C), dwpe_w((long)T_ * C);
    upload(dtok, tok), upload(dwte_w, wte), upload(dwpe_w, wpe);
    if (selected(fwd)) {
        vector<float> ref((long)B * T_ * C);
        embedding_forward(ref.data(), tok.data(), wte.data(), wpe.data(), B, T_, C);
        Dev<T> out((long)B * T_ * C);
        out.poison();
        gpu_embedding_forward(out.p, dtok.p, dwte_w.p, dwpe_w.p, B, T_, C);
        report(fwd, {{"out", compare(download(out), ref)}}, Prec<T>::tol);
    }
    if (selected(bwd)) {
        vector<float> dout = act<T>(random_vec((long)B * T_ * C));
        vector<float> gw((long)V * C, 0.0f), gp((long)T_ * C, 0.0f);
        embedding_backward(gw.data(), gp.data(), dout.data(), tok.data(), B, T_, C);
        vector<float> w0 = accum_init(gw, false), p0 = accum_init(gp, false);
        vector<float> rw = w0, rp = p0;
        embedding_backward(rw.data(), rp.data(), dout.data(), tok.data(), B, T_, C);
        Dev<T> d((long)B * T_ * C);
        Dev<float> dw((long)V * C), dp((long)T_ * C);
        upload(d, dout), upload(dw, w0), upload(dp, p0);
        gpu_embedding_backward(dw.p, dp.p, d.p, dtok.p, B, T_, C, V);
        vector<unsigned char> bits = download_bytes(dw);
        Cmp cw = compare(download(dw), rw), cp = compare(download(dp), rp);
        upload(dw, w0), upload(dp, p0);
        gpu_embedding_backward(dw.p, dp.p, d.p, dtok.p, B, T_, C, V);
        const bool same = bits == download_bytes(dw);
        report(bwd, {{"dwte", cw}, {"dwpe", cp}}, Prec<T>::tol, same, "(not deterministic)");
    }
}

// C a multiple of 8 takes the vectorized backward kernel, any other C the scalar one. fused: the
// kernels with the row in registers (cuda_layernorm_select; rows too wide take the split ones).
template <typename T> static void test_layernorm(int C, bool fused = false) {
    const int N = quick ? 33 : 300;
    const std::string shape = "C=" + std::to_string(C) + (fused ? " fused" : "");
    const Switch ln(cuda_layernorm_selected, cuda_layernorm_select, fused);
    const std::string fwd = tname("layernorm_forward", Prec<T>::name, shape.c_str()),
                      bwd = tname("layernorm_backward", Prec<T>::name, shape.c_str());
    vector<float> x = act<T>(random_vec((long)N * C, -2.0f, 3.0f)), w = random_vec(C, 0.5f, 1.5f), b = random_vec(C);
    vector<float> ref((long)N * C), mean(N), rstd(N);
    layernorm_forward(ref.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    Dev<T> dx((long)N * C), dout_((long)N * C);
    Dev<float> dw(C), db(C), dmean(N), drstd(N);
    upload(dx, x), upload(dw, w), upload(db, b);
    if (selected(fwd)) {
        dout_.poison(), dmean.poison(), drstd.poison();
        gpu_layernorm_forward(dout_.p, dmean.p, drstd.p, dx.p, dw.p, db.p, N, C);
        report(fwd, {{"out", compare(download(dout_), ref)}, {"mean", compare(download(dmean), mean)},
                     {"rstd", compare(download(drstd), rstd)}},
               Prec<T>::tol);
    }
    if (selected(bwd)) {
        vector<float> dout = act<T>(random_vec((long)N * C));
        vector<float> gi((long)N * C, 0.0f), gw(C, 0.0f), gb(C, 0.0f);
        layernorm_backward(gi.data(), gw.data(), gb.data(), dout.data(), x.data(), w.data(), mean.data(), rstd.data(),
                           N, C);
        vector<float> i0 = accum_init(gi, Prec<T>::bf16), w0 = accum_init(gw, false), b0 = accum_init(gb, false);
        vector<float> ri = i0, rw = w0, rb = b0;
        layernorm_backward(ri.data(), rw.data(), rb.data(), dout.data(), x.data(), w.data(), mean.data(), rstd.data(),
                           N, C);
        Dev<T> dd((long)N * C), di((long)N * C);
        Dev<float> gdw(C), gdb(C);
        upload(dd, dout), upload(di, i0), upload(gdw, w0), upload(gdb, b0), upload(dmean, mean), upload(drstd, rstd);
        gpu_layernorm_backward(di.p, gdw.p, gdb.p, dd.p, dx.p, dw.p, dmean.p, drstd.p, N, C);
        vector<unsigned char> bits = download_bytes(gdw);
        Cmp ci = compare(download(di), ri), cw = compare(download(gdw), rw), cb = compare(download(gdb), rb);
        upload(gdw, w0), upload(gdb, b0), upload(di, i0);
        gpu_layernorm_backward(di.p, gdw.p, gdb.p, dd.p, dx.p, dw.p, dmean.p, drstd.p, N, C);
        const bool same = bits == download_bytes(gdw);
        report(bwd, {{"dinp", ci}, {"dweight", cw}, {"dbias", cb}}, Prec<T>::tol, same, "(not deterministic)");
    }
}

// call() with the bias gradients in the dweight product's epilogue (bgrad) or not; whether no
// bias-gradient epilogue fell back to the column-sum kernel meanwhile.
template <typename F> static bool bgrad_path(bool bgrad, F call) {
    const Switch sw(cuda_matmul_bgrad_selected, cuda_matmul_bgrad_select, bgrad);
    const long fb0 = cuda_matmul_bgrad_fallbacks();
    call();
    return cuda_matmul_bgrad_fallbacks() == fb0;
}

// bias_offset: 1 makes the bias pointer 2/4-byte aligned only (the cuBLASLt epilogue needs 16:
// this takes the cublasGemmEx fallback). bgrad (bf16): the bias gradient in the dweight product's
// cuBLASLt epilogue (cuda_matmul_bgrad_select), which must then be the path taken.
template <typename T> static void test_matmul(bool with_bias, int bias_offset, bool bgrad = false) {
    const int N = quick ? 40 : 257, C = quick ? 48 : 192, OC = quick ? 80 : 320;
    char extra[80];
    snprintf(extra, sizeof extra, "%s%s%s", with_bias ? "bias" : "no-bias", bias_offset ? " unaligned-bias" : "",
             bgrad ? " bgrad-epilogue" : "");
    const std::string fwd = tname("matmul_forward", Prec<T>::name, extra);
    const std::string bwd = tname("matmul_backward", Prec<T>::name, extra);
    const double tol = Prec<T>::bf16 ? 2e-2 : 1e-4;
    vector<float> x = act<T>(random_vec((long)N * C)), w = act<T>(random_vec((long)OC * C)),
                  b = act<T>(random_vec(OC + bias_offset));
    Dev<T> dx((long)N * C), dw((long)OC * C), db(OC + bias_offset);
    upload(dx, x), upload(dw, w), upload(db, b);
    if (selected(fwd)) {
        vector<float> ref((long)N * OC);
        matmul_forward(ref.data(), x.data(), w.data(), with_bias ? b.data() + bias_offset : NULL, N, C, OC);
        Dev<T> out((long)N * OC);
        out.poison();
        gpu_matmul_forward(out.p, dx.p, dw.p, with_bias ? db.p + bias_offset : NULL, N, C, OC);
        report(fwd, {{"out", compare(download(out), ref)}}, tol);
    }
    if (selected(bwd)) {
        vector<float> dout = act<T>(random_vec((long)N * OC));
        vector<float> gi((long)N * C, 0.0f), gw((long)OC * C, 0.0f), gb(OC, 0.0f);
        matmul_backward(gi.data(), gw.data(), gb.data(), dout.data(), x.data(), w.data(), N, C, OC);
        vector<float> i0 = accum_init(gi, Prec<T>::bf16), w0 = accum_init(gw, false), b0 = accum_init(gb, false);
        vector<float> ri = i0, rw = w0, rb = b0;
        matmul_backward(with_bias ? ri.data() : NULL, rw.data(), with_bias ? rb.data() : NULL, dout.data(), x.data(),
                        w.data(), N, C, OC);
        Dev<T> dd((long)N * OC), di((long)N * C);
        Dev<float> gdw((long)OC * C), gdb(OC);
        upload(dd, dout), upload(di, i0), upload(gdw, w0), upload(gdb, b0);
        // Without bias: the NULL dinp / dbias form (they must stay untouched).
        const bool path_ok = bgrad_path(bgrad, [&] {
            gpu_matmul_backward(with_bias ? di.p : NULL, gdw.p, with_bias ? gdb.p : NULL, dd.p, dx.p, dw.p, N, C, OC);
        });
        report(bwd, {{"dinp", compare(download(di), ri)}, {"dweight", compare(download(gdw), rw)},
                     {"dbias", compare(download(gdb), rb)}},
               tol, path_ok, "(cuBLASLt offered no bias-gradient epilogue: the column-sum kernel ran)");
    }
}

// The backward that writes dinp (bf16): a poisoned dinp comes back fully written, equal to the
// reference from a zero dinp; dweight, dbias accumulate as the += form (bias gradients by the
// kernel, or in the epilogue with bgrad).
static void test_matmul_write(bool bgrad) {
    const int N = quick ? 40 : 257, C = quick ? 48 : 192, OC = quick ? 80 : 320;
    const std::string name = tname("matmul_backward_write", "bf16", bgrad ? "bgrad-epilogue" : "");
    if (!selected(name)) return;
    vector<float> x = rounded(random_vec((long)N * C)), w = rounded(random_vec((long)OC * C)),
                  dout = rounded(random_vec((long)N * OC));
    vector<float> ri((long)N * C, 0.0f), gw((long)OC * C, 0.0f), gb(OC, 0.0f);
    matmul_backward(ri.data(), gw.data(), gb.data(), dout.data(), x.data(), w.data(), N, C, OC);
    vector<float> w0 = accum_init(gw, false), b0 = accum_init(gb, false), rw = w0, rb = b0;
    matmul_backward(NULL, rw.data(), rb.data(), dout.data(), x.data(), w.data(), N, C, OC);
    Dev<bf16_t> dx((long)N * C), dw((long)OC * C), dd((long)N * OC), di((long)N * C);
    Dev<float> gdw((long)OC * C), gdb(OC);
    upload(dx, x), upload(dw, w), upload(dd, dout), upload(gdw, w0), upload(gdb, b0);
    di.poison();
    const bool path_ok =
        bgrad_path(bgrad, [&] { cuda_matmul_backward_write_bf16(di.p, gdw.p, gdb.p, dd.p, dx.p, dw.p, N, C, OC, stream); });
    report(name, {{"dinp", compare(download(di), ri)}, {"dweight", compare(download(gdw), rw)},
                  {"dbias", compare(download(gdb), rb)}},
           2e-2, path_ok, "(cuBLASLt offered no bias-gradient epilogue: the column-sum kernel ran)");
}

// The MLP's GELU around its products (bf16), with the GELU kernels (epilogue 0) or in cuBLASLt's
// epilogues (1): against matmul + gelu on the CPU. Rows of 8-multiple widths must take the
// epilogue (no fallback counted); odd widths must fall back to the kernels, not fail.
static void test_matmul_gelu(int epilogue, int C, int OC) {
    const int N = quick ? 40 : 257;
    const bool aligned = C % 8 == 0 && OC % 8 == 0;
    char extra[64];
    snprintf(extra, sizeof extra, "%s C=%d OC=%d", epilogue ? "epilogue" : "kernels", C, OC);
    const std::string fwd = tname("matmul_gelu_forward", "bf16", extra);
    const std::string bwd = tname("matmul_backward_dgelu", "bf16", extra);
    const double tol = 2e-2;
    const Switch sw(cuda_matmul_gelu_selected, cuda_matmul_gelu_select, epilogue);
    if (selected(fwd)) {  // x (N,C) -> pre, out (N,OC)
        vector<float> x = rounded(random_vec((long)N * C)), w = rounded(random_vec((long)OC * C)),
                      b = rounded(random_vec(OC));
        vector<float> pre((long)N * OC), out((long)N * OC);
        matmul_forward(pre.data(), x.data(), w.data(), b.data(), N, C, OC);
        gelu_forward(out.data(), pre.data(), (long)N * OC);
        Dev<bf16_t> dx((long)N * C), dw((long)OC * C), db(OC), dpre((long)N * OC), dout((long)N * OC);
        upload(dx, x), upload(dw, w), upload(db, b);
        dpre.poison(), dout.poison();
        const long fb0 = cuda_matmul_gelu_fallbacks();
        cuda_matmul_gelu_forward_bf16(dout.p, dpre.p, dx.p, dw.p, db.p, N, C, OC, stream);
        const long fb = cuda_matmul_gelu_fallbacks() - fb0;
        const bool path_ok = !epilogue || (aligned ? fb == 0 : fb == 1);
        report(fwd, {{"out", compare(download(dout), out)}, {"pre", compare(download(dpre), pre)}}, tol, path_ok,
               "(the epilogue path was not the one expected)");
    }
    if (selected(bwd)) {  // the product after the GELU: inp = gelu(pre) (N,C) -> dout (N,OC)
        vector<float> pre = rounded(random_vec((long)N * C, -4.0f, 4.0f)), inp((long)N * C);
        gelu_forward(inp.data(), pre.data(), (long)N * C);
        inp = rounded(inp);
        vector<float> w = rounded(random_vec((long)OC * C)), dout = rounded(random_vec((long)N * OC));
        vector<float> dg((long)N * C, 0.0f), gw((long)OC * C, 0.0f), gb(OC, 0.0f), rdpre((long)N * C, 0.0f);
        matmul_backward(dg.data(), gw.data(), gb.data(), dout.data(), inp.data(), w.data(), N, C, OC);
        vector<float> w0 = accum_init(gw, false), b0 = accum_init(gb, false);
        gelu_backward(rdpre.data(), pre.data(), dg.data(), (long)N * C);
        Dev<bf16_t> dpre_in((long)N * C), dinp((long)N * C), dw((long)OC * C), dd((long)N * OC), ddpre((long)N * C);
        Dev<float> gdw((long)OC * C), gdb(OC);
        upload(dpre_in, pre), upload(dinp, inp), upload(dw, w), upload(dd, dout), upload(gdw, w0), upload(gdb, b0);
        ddpre.poison();
        const long fb0 = cuda_matmul_gelu_fallbacks();
        cuda_matmul_backward_dgelu_bf16(ddpre.p, gdw.p, gdb.p, dd.p, dinp.p, dw.p, dpre_in.p, N, C, OC, stream);
        const long fb = cuda_matmul_gelu_fallbacks() - fb0;
        const bool path_ok = !epilogue || (aligned ? fb == 0 : fb == 1);
        report(bwd, {{"dpre", compare(download(ddpre), rdpre)}, {"dweight", compare(download(gdw), plus(w0, gw))},
                     {"dbias", compare(download(gdb), plus(b0, gb))}},
               tol, path_ok, "(the epilogue path was not the one expected)");
    }
}

// The product with the residual add (bf16), product into tmp then the residual kernel (epilogue
// 0) or in cuBLASLt's epilogue (epilogue 1, the default: C = the residual, beta 1), against matmul +
// residual on the CPU; out poisoned first (fully written), and out == residual (in place) too. Rows
// of 8-multiple widths must take the epilogue; for other widths cuBLASLt may offer an algorithm
// or not (an H200 with CUDA 13.0 took C=100, OC=76 in the epilogue), the result must be right.
static void test_matmul_residual(int epilogue, int C, int OC, bool in_place) {
    const int N = quick ? 40 : 257;
    const bool aligned = C % 8 == 0 && OC % 8 == 0;
    char extra[80];
    snprintf(extra, sizeof extra, "%s C=%d OC=%d%s", epilogue ? "epilogue" : "kernel", C, OC,
             in_place ? " in-place" : "");
    const std::string name = tname("matmul_residual_forward", "bf16", extra);
    if (!selected(name)) return;
    vector<float> x = rounded(random_vec((long)N * C)), w = rounded(random_vec((long)OC * C)),
                  b = rounded(random_vec(OC)), r = rounded(random_vec((long)N * OC)), ref((long)N * OC);
    matmul_forward(ref.data(), x.data(), w.data(), b.data(), N, C, OC);
    residual_forward(ref.data(), r.data(), ref.data(), (long)N * OC);
    Dev<bf16_t> dx((long)N * C), dw((long)OC * C), db(OC), dr((long)N * OC), out((long)N * OC), tmp((long)N * OC);
    upload(dx, x), upload(dw, w), upload(db, b), upload(dr, r);
    out.poison(), tmp.poison();
    bf16_t *o = in_place ? dr.p : out.p;
    const Switch sw(cuda_matmul_residual_selected, cuda_matmul_residual_select, epilogue);
    const long fb0 = cuda_matmul_residual_fallbacks();
    cuda_matmul_residual_forward_bf16(o, tmp.p, dr.p, dx.p, dw.p, db.p, N, C, OC, stream);
    const long fb = cuda_matmul_residual_fallbacks() - fb0;
    const bool path_ok = !epilogue || (aligned ? fb == 0 : fb <= 1);
    report(name, {{"out", compare(download(in_place ? dr : out), ref)}}, 2e-2, path_ok,
           "(the epilogue path was not the one expected)");
}

template <typename T> static void test_gelu_residual() {
    const long n = quick ? 5003 : 100003;
    const std::string gf = tname("gelu_forward", Prec<T>::name), gb = tname("gelu_backward", Prec<T>::name),
                      rs = tname("residual_forward", Prec<T>::name);
    vector<float> x = act<T>(random_vec(n, -4.0f, 4.0f)), y = act<T>(random_vec(n));
    Dev<T> dx(n), dy(n), out(n);
    upload(dx, x), upload(dy, y);
    if (selected(gf)) {
        vector<float> ref(n);
        gelu_forward(ref.data(), x.data(), n);
        out.poison();
        gpu_gelu_forward(out.p, dx.p, n);
        report(gf, {{"out", compare(download(out), ref)}}, Prec<T>::tol);
        // Pointers one element past 16-byte alignment: the scalar kernel.
        out.poison();
        gpu_gelu_forward(out.p + 1, dx.p + 1, n - 1);
        vector<float> got = download(out);
        got[0] = ref[0];
        report(gf + " (unaligned)", {{"out", compare(got, ref)}}, Prec<T>::tol);
    }
    if (selected(gb)) {
        vector<float> g(n, 0.0f);
        gelu_backward(g.data(), x.data(), y.data(), n);
        vector<float> i0 = accum_init(g, Prec<T>::bf16), ref = i0;
        gelu_backward(ref.data(), x.data(), y.data(), n);
        upload(out, i0);
        gpu_gelu_backward(out.p, dx.p, dy.p, n);
        report(gb, {{"dinp", compare(download(out), ref)}}, Prec<T>::tol);
        upload(out, i0);
        gpu_gelu_backward(out.p + 1, dx.p + 1, dy.p + 1, n - 1);
        vector<float> got = download(out);
        got[0] = ref[0];
        report(gb + " (unaligned)", {{"dinp", compare(got, ref)}}, Prec<T>::tol);
    }
    if (selected(rs)) {
        vector<float> ref(n);
        residual_forward(ref.data(), x.data(), y.data(), n);
        out.poison();
        gpu_residual(out.p, dx.p, dy.p, n);
        report(rs, {{"out", compare(download(out), ref)}}, Prec<T>::tol);
        out.poison();
        gpu_residual(out.p + 1, dx.p + 1, dy.p + 1, n - 1);
        vector<float> got = download(out);
        got[0] = ref[0];
        report(rs + " (unaligned)", {{"out", compare(got, ref)}}, Prec<T>::tol);
    }
}

template <typename T> static void test_softmax_xent(int V) {
    const int N = quick ? 19 : 300;
    char extra[32];
    snprintf(extra, sizeof extra, "V=%d", V);
    const std::string f = tname("softmax_xent_forward", Prec<T>::name, extra);
    const std::string fb = tname("softmax_xent_forward_backward", Prec<T>::name, extra);
    vector<float> logits = act<T>(random_vec((long)N * V, -6.0f, 6.0f));
    vector<int> targets(N);
    for (int i = 0; i < N; i++) targets[i] = i % 7 == 3 ? -1 : (int)(rng.next() % V);  // some ignored rows
    Dev<T> dl((long)N * V);
    Dev<int> dt(N);
    Dev<float> losses(N);
    upload(dt, targets);
    const float dloss = 1.0f / N;
    if (selected(f)) {
        vector<float> ref(N);
        softmax_xent_forward(ref.data(), logits.data(), targets.data(), N, V);
        upload(dl, logits);
        losses.poison();
        gpu_xent_forward(losses.p, dl.p, dt.p, N, V);
        report(f, {{"losses", compare(download(losses), ref)}}, Prec<T>::tol);
    }
    if (selected(fb)) {
        vector<float> ref(N), grad = logits;
        softmax_xent_forward_backward(ref.data(), grad.data(), targets.data(), N, V, dloss);
        upload(dl, logits);
        losses.poison();
        gpu_xent_forward_backward(losses.p, dl.p, dt.p, N, V, dloss);
        report(fb, {{"losses", compare(download(losses), ref)}, {"dlogits", compare(download(dl), grad)}},
               Prec<T>::tol);
    }
}

static void test_optimizer() {
    const long n = quick ? 4099 : 100003;
    if (selected("adamw_update")) {
        for (int with_copy = 0; with_copy < 2; with_copy++) {
            vector<float> p = random_vec(n), g = random_vec(n, -0.1f, 0.1f), m = random_vec(n, -0.01f, 0.01f),
                          v = random_vec(n, 0.0f, 1e-3f);
            vector<float> rp = p, rm = m, rv = v;
            adamw_update(rp.data(), g.data(), rm.data(), rv.data(), n, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 7);
            Dev<float> dp(n), dg(n), dm(n), dv(n);
            Dev<bf16_t> copy(n);
            upload(dp, p), upload(dg, g), upload(dm, m), upload(dv, v);
            copy.poison();
            cuda_adamw_update(dp.p, with_copy ? copy.p : NULL, dg.p, dm.p, dv.p, n, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 7,
                              1.0f, stream);
            vector<std::pair<const char *, Cmp>> outs = {
                {"params", compare(download(dp), rp)}, {"m", compare(download(dm), rm)}, {"v", compare(download(dv), rv)}};
            if (with_copy) outs.push_back({"params_bf16", compare(download(copy), rounded(rp))});
            report(with_copy ? "adamw_update + bf16 copy" : "adamw_update", outs, with_copy ? 1e-2 : 1e-5);
        }
        // The clipping factor inside AdamW: the same bits as scaling the gradients first.
        vector<float> p = random_vec(n), g = random_vec(n, -0.1f, 0.1f), m = random_vec(n, -0.01f, 0.01f),
                      v = random_vec(n, 0.0f, 1e-3f);
        Dev<float> dp(n), dg(n), dm(n), dv(n), dp2(n), dg2(n), dm2(n), dv2(n);
        upload(dp, p), upload(dg, g), upload(dm, m), upload(dv, v);
        upload(dp2, p), upload(dg2, g), upload(dm2, m), upload(dv2, v);
        cuda_adamw_update(dp.p, NULL, dg.p, dm.p, dv.p, n, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 7, 0.37f, stream);
        cuda_scale_inplace(dg2.p, n, 0.37f, stream);
        cuda_adamw_update(dp2.p, NULL, dg2.p, dm2.p, dv2.p, n, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 7, 1.0f, stream);
        report("adamw_update grad_scale = scale_inplace first (exact)",
               {{"params", compare(download(dp), download(dp2))}, {"m", compare(download(dm), download(dm2))},
                {"v", compare(download(dv), download(dv2))}}, 0.0);
    }
    if (selected("copy_to_bf16")) {
        vector<float> x = random_vec(n, -100.0f, 100.0f);
        Dev<float> dx(n);
        Dev<bf16_t> out(n);
        upload(dx, x);
        out.poison();
        cuda_copy_to_bf16(out.p, dx.p, n, stream);
        report("copy_to_bf16 (exact)", {{"out", compare(download(out), rounded(x))}}, 0.0);
    }
    if (selected("scale_inplace")) {
        vector<float> x = random_vec(n), ref = x;
        scale_inplace(ref.data(), n, 0.37f);
        Dev<float> dx(n);
        upload(dx, x);
        cuda_scale_inplace(dx.p, n, 0.37f, stream);
        report("scale_inplace (exact)", {{"x", compare(download(dx), ref)}}, 0.0);
    }
    if (selected("sum_squares")) {
        const long sizes[] = {0, 1, 1000, quick ? 70001 : 1000003};
        for (long len : sizes) {
            vector<float> x = random_vec(len > 0 ? len : 1);
            const double ref = sum_squares(x.data(), len);
            Dev<float> dx(len > 0 ? len : 1);
            upload(dx, x);
            Dev<double> res(1);
            res.poison();
            cuda_sum_squares(res.p, dx.p, len, stream);
            double got = 0.0, again = 0.0;
            CHECK(cudaStreamSynchronize(stream));
            CHECK(cudaMemcpy(&got, res.p, sizeof got, cudaMemcpyDeviceToHost));
            again = cuda_sum_squares_host(dx.p, len, stream);
            Cmp c;
            c.err = fabs(got - ref) / (fabs(ref) > 0.0 ? fabs(ref) : 1.0);
            c.nan = isfinite(got) ? 0 : 1;
            char name[64];
            snprintf(name, sizeof name, "sum_squares n=%ld", len);
            report(name, {{"sum", c}}, 1e-9, memcmp(&got, &again, sizeof got) == 0, "(not deterministic)");
        }
    }
    if (selected("sum_squares_tensors")) {   // one launch over tensors end to end: each one's bits alone
        const size_t sizes[] = {0, 1, 1000, 5, quick ? 70001u : 1000003u, 768};
        const int count = sizeof sizes / sizeof sizes[0];
        long total = 0;
        for (size_t n : sizes) total += (long)n;
        vector<float> x = random_vec(total);
        Dev<float> dx(total);
        upload(dx, x);
        Dev<double> each(count), all(count);
        all.poison();
        for (long j = 0, off = 0; j < count; off += (long)sizes[j++])
            cuda_sum_squares(each.p + j, dx.p + off, (long)sizes[j], stream);
        cuda_sum_squares_tensors(all.p, dx.p, sizes, count, stream);
        Cmp c;
        c.err = download_bytes(each) == download_bytes(all) ? 0.0 : 1.0;
        report("sum_squares_tensors (the bits of one tensor at a time)", {{"sums", c}}, 0.0);
    }
}

// ---- attention ------------------------------------------------------------------------------------

struct AttnCase {
    const char *name;
    int B, NH, Tq, Tk;
    bool packed;  // q, k, v columns of one (B, T, 3C) buffer (megatron-sp / single rank) or q (B,Tq,C) + kv (B,Tk,2C)
    vector<int> pos;
};

static vector<AttnCase> attention_cases() {
    vector<AttnCase> cases;
    const int s = quick ? 2 : 1;  // quick: smaller sequences
    {
        AttnCase c = {"self", 2, 2, 200 / s, 200 / s, true, {}};
        for (int t = 0; t < c.Tq; t++) c.pos.push_back(t);
        cases.push_back(c);
    }
    {  // LSS rank 2 of 4, segment not aligned to any block size
        AttnCase c = {"lss-segment", 1, 2, 96 / s, 384 / s, false, {}};
        for (int t = 0; t < c.Tq; t++) c.pos.push_back(2 * c.Tq + 8 + t);
        cases.push_back(c);
    }
    {  // zigzag: rank 1 of 4 holds chunks 1 and 6 of 8
        const int chunk = 64 / s;
        AttnCase c = {"zigzag", 2, 1, 2 * chunk, 8 * chunk, false, {}};
        for (int t = 0; t < chunk; t++) c.pos.push_back(chunk + t);
        for (int t = 0; t < chunk; t++) c.pos.push_back(6 * chunk + t);
        cases.push_back(c);
    }
    {  // odd positions: rows that see no key, positions past the end, descending runs
        AttnCase c = {"odd-positions", 1, 3, 70 / s, 150 / s, false, {}};
        for (int t = 0; t < c.Tq; t++) c.pos.push_back(t % 9 == 4 ? -1 : t % 13 == 5 ? c.Tk + 7 : (c.Tk - 1 - 2 * t));
        cases.push_back(c);
    }
    {  // query blocks (up to 128 rows) that see no key: their dq rows written as zeros; then blocks
       // whose first row sees all but the last key of a 64- (128-) key block (position 62, 126)
        AttnCase c = {"masked-start", 1, 2, 256, 190, false, {}};
        for (int t = 0; t < c.Tq; t++) c.pos.push_back(t < 128 ? -1 : t - 66);
        cases.push_back(c);
    }
    return cases;
}

// One case, one head size, one variant (fwd_v / bwd_v as cuda_attention_select; -1: CUDA cores).
template <typename T>
static void test_attention_case(const AttnCase &c, int hs, int fwd_v, int bwd_v, const char *label) {
    const int B = c.B, NH = c.NH, Tq = c.Tq, Tk = c.Tk, C = NH * hs;
    const int ldq = c.packed ? 3 * C : C, ldkv = c.packed ? 3 * C : 2 * C;
    char extra[160];
    snprintf(extra, sizeof extra, "%s hs=%d [%s]", c.name, hs, label);
    const std::string fwd = tname("attention_forward", Prec<T>::name, extra);
    const std::string bwd = tname("attention_backward", Prec<T>::name, extra);
    if (!selected(fwd) && !selected(bwd)) return;
    if (hs == 16 || hs == 32 || hs == 64 || hs == 128) cuda_attention_select(hs, fwd_v, bwd_v);
    // bf16: max 5e-2 / rms 5e-3 (rounding of P and dS to bf16 for the tensor cores gives rms ~2e-3
    // and rare elements near 2e-2; an indexing or masking bug gives far more). fp32: 1e-3 / 1e-4.
    const double tol = Prec<T>::bf16 ? 5e-2 : 1e-3, rms_tol = Prec<T>::bf16 ? 5e-3 : 1e-4;

    // Buffers: qbuf (B, Tq, ldq) and kvbuf (B, Tk, ldkv); packed: one buffer, Tq = Tk.
    const long nq = (long)B * Tq * ldq, nkv = c.packed ? 0 : (long)B * Tk * ldkv;
    vector<float> qh = act<T>(random_vec(nq, -2.0f, 2.0f)), kvh = act<T>(random_vec(nkv > 0 ? nkv : 1, -2.0f, 2.0f));
    const float *q = qh.data();
    const float *k = c.packed ? qh.data() + C : kvh.data(), *v = c.packed ? qh.data() + 2 * C : kvh.data() + C;
    vector<float> out_ref((long)B * Tq * C), lse_ref((long)B * NH * Tq);
    attention_forward(out_ref.data(), lse_ref.data(), q, k, v, c.pos.data(), B, Tq, Tk, NH, hs, ldq, ldkv);

    Dev<T> dq_in(nq), dkv_in(nkv > 0 ? nkv : 1), dout_((long)B * Tq * C);
    Dev<float> dlse((long)B * NH * Tq);
    Dev<int> dpos(Tq);
    upload(dq_in, qh), upload(dkv_in, kvh), upload(dpos, c.pos);
    const T *gq = dq_in.p;
    const T *gk = c.packed ? dq_in.p + C : dkv_in.p, *gv = c.packed ? dq_in.p + 2 * C : dkv_in.p + C;
    dout_.poison(), dlse.poison();
    gpu_attention_forward(dout_.p, dlse.p, gq, gk, gv, dpos.p, B, Tq, Tk, NH, hs, ldq, ldkv);
    if (selected(fwd))
        report(fwd, {{"out", compare(download(dout_), out_ref)}, {"lse", compare(download(dlse), lse_ref)}}, tol, true,
               "", rms_tol);
    if (!selected(bwd)) return;

    // The backward starts from the reference forward's out (rounded as the kernel's own would be)
    // and lse, so a wrong forward does not fail the backward variant paired with it.
    const vector<float> out_in = act<T>(out_ref);
    Dev<T> gout((long)B * Tq * C);
    Dev<float> glse((long)B * NH * Tq);
    upload(gout, out_in), upload(glse, lse_ref);
    // Backward: gradients accumulate into buffers shaped like the inputs (dq in the q buffer's
    // layout, dk/dv in the kv layout), the other columns of those buffers must stay untouched.
    vector<float> dout = act<T>(random_vec((long)B * Tq * C));
    vector<float> gq_ref(nq, 0.0f), gkv_ref(nkv > 0 ? nkv : 1, 0.0f);
    {
        float *gqp = gq_ref.data(), *gkp = c.packed ? gq_ref.data() + C : gkv_ref.data();
        float *gvp = c.packed ? gq_ref.data() + 2 * C : gkv_ref.data() + C;
        attention_backward(gqp, gkp, gvp, dout.data(), out_in.data(), lse_ref.data(), q, k, v, c.pos.data(), B, Tq,
                           Tk, NH, hs, ldq, ldkv);
    }
    const vector<float> q0 = accum_init(gq_ref, Prec<T>::bf16), kv0 = accum_init(gkv_ref, Prec<T>::bf16);
    const vector<float> q_tot = plus(q0, gq_ref), kv_tot = plus(kv0, gkv_ref);
    Dev<T> gdout((long)B * Tq * C), gdq(nq), gdkv(nkv > 0 ? nkv : 1);
    Dev<unsigned char> scratch((long)cuda_attention_backward_scratch_bytes(B, NH, Tq, hs));
    upload(gdout, dout);
    vector<unsigned char> first_q, first_kv;
    vector<std::pair<const char *, Cmp>> outs;
    for (int run = 0; run < 2; run++) {
        upload(gdq, q0), upload(gdkv, kv0);
        T *pq = gdq.p, *pk = c.packed ? gdq.p + C : gdkv.p, *pv = c.packed ? gdq.p + 2 * C : gdkv.p + C;
        gpu_attention_backward(pq, pk, pv, gdout.p, gout.p, glse.p, gq, gk, gv, dpos.p, B, Tq, Tk, NH, hs, ldq, ldkv,
                               scratch.p);
        if (run == 0) {
            outs.push_back({c.packed ? "dqkv" : "dq", compare(download(gdq), q_tot)});
            if (!c.packed) outs.push_back({"dkv", compare(download(gdkv), kv_tot)});
            first_q = download_bytes(gdq), first_kv = download_bytes(gdkv);
        }
    }
    // The atomic variants' dq may differ in its last bits from run to run (their contract; dk, dv
    // may not, but where they share dq's buffer).
    const bool same = first_kv == download_bytes(gdkv) &&
                      (first_q == download_bytes(gdq) || !cuda_attention_bwd_deterministic(hs, cuda_attention_selected(hs, 1)));
    if constexpr (Prec<T>::bf16) {   // the writing call (lsst-run's): every element, over poison
        gdq.poison(), gdkv.poison();
        T *pq = gdq.p, *pk = c.packed ? gdq.p + C : gdkv.p, *pv = c.packed ? gdq.p + 2 * C : gdkv.p + C;
        cuda_attention_backward_write_bf16(pq, pk, pv, gdout.p, gout.p, glse.p, gq, gk, gv, dpos.p, B, Tq, Tk, NH, hs,
                                           ldq, ldkv, scratch.p, stream);
        outs.push_back({c.packed ? "dqkv written" : "dq written", compare(download(gdq), gq_ref)});
        if (!c.packed) outs.push_back({"dkv written", compare(download(gdkv), gkv_ref)});
    }
    report(bwd, outs, tol, same, "(not deterministic)", rms_tol);
}

template <typename T> static void test_attention() {
    const int head_sizes[] = {16, 32, 64, 128, 48};  // 48: no tensor-core kernel (CUDA-core path)
    for (const AttnCase &c : attention_cases())
        for (int hs : head_sizes) {
            if (!Prec<T>::bf16 || hs == 48) {  // fp32 and odd heads: the CUDA-core kernel only
                test_attention_case<T>(c, hs, -1, -1, "cuda-core");
                continue;
            }
            test_attention_case<T>(c, hs, -1, -1, "cuda-core");
            // The defaults (they run here) stand in for a variant's missing direction, and return.
            const int def_f = cuda_attention_selected(hs, 0), def_b = cuda_attention_selected(hs, 1);
            const int nv = cuda_attention_variants(hs);
            for (int var = 0; var < nv; var++) {
                const bool has_f = strcmp(cuda_attention_variant_name(hs, var, 0), "none") != 0;
                const bool has_b = strcmp(cuda_attention_variant_name(hs, var, 1), "none") != 0;
                if (!has_f && !has_b) continue;  // e.g. a wgmma variant on a GPU that cannot run it, or
                                                  // one whose shared memory does not fit (sm_86, sm_89)
                char label[200];
                snprintf(label, sizeof label, "v%d: %s; %s", var, has_f ? cuda_attention_variant_name(hs, var, 0) : "-",
                         has_b ? cuda_attention_variant_name(hs, var, 1) : "-");
                test_attention_case<T>(c, hs, has_f ? var : def_f, has_b ? var : def_b, label);
            }
            cuda_attention_select(hs, def_f, def_b);
        }
}

// ---- sequence-group rows (the NCCL exchanges) ----------------------------------------------------
// Reference: test_util.h's seq_place_reference over a random permutation of the positions
// (contiguous and zigzag are special cases); take must give xchg back. Both are copies: exact.
static void test_seq_rows() {
    if (!selected("seq_rows")) return;
    const int shapes[][4] = {{2, 3, 5, 6}, {4, 2, quick ? 16 : 64, 2 * 72}};   // n, B, T, W
    for (const auto &sh : shapes) {
        const int n = sh[0], B = sh[1], T = sh[2], W = sh[3], S = n * T;
        const long count = (long)n * B * T * W;
        vector<int> pos = rng.permutation(S);
        vector<float> xchg = rounded(random_vec(count, -100.0f, 100.0f));
        vector<float> full = seq_place_reference(xchg, pos, n, B, T, W);
        Dev<int> dpos(S);
        Dev<bf16_t> dx(count), dfull(count);
        Dev<float> back(count);
        upload(dpos, pos), upload(dx, xchg);
        dfull.poison(), back.poison();
        cuda_seq_place_rows_bf16(dfull.p, dx.p, dpos.p, n, B, T, W, stream);
        cuda_seq_take_rows_float(back.p, dfull.p, dpos.p, n, B, T, W, stream);
        char name[96];
        snprintf(name, sizeof name, "seq_place_rows / seq_take_rows n=%d B=%d T=%d W=%d (exact)", n, B, T, W);
        report(name, {{"full", compare(download(dfull), full)}, {"xchg", compare(download(back), xchg)}}, 0.0);
    }
}

int main(int argc, char **argv) {
    if (parse_test_args(argc, argv, &quick, &only, &skip)) return 2;
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("1..0 # SKIP no CUDA device\n0 passed, 0 failed\n");
        return 0;
    }
    CHECK(cudaSetDevice(0));
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("# device: %s (sm_%d%d, %d SMs)%s\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount,
           quick ? " quick" : "");
    CHECK(cudaStreamCreate(&stream));
    cuda_kernels_init(0);

    test_embedding<float>(), test_embedding<bf16_t>();
    for (int C : {quick ? 72 : 200, 70}) test_layernorm<float>(C), test_layernorm<bf16_t>(C);
    for (int C : {72, 768, 1000, 1030}) test_layernorm<float>(C, true), test_layernorm<bf16_t>(C, true);
    for (int bias = 0; bias < 2; bias++) test_matmul<float>(bias, 0), test_matmul<bf16_t>(bias, 0);
    test_matmul<float>(true, 1), test_matmul<bf16_t>(true, 1);
    test_matmul<bf16_t>(true, 0, true), test_matmul<bf16_t>(false, 0, true);
    test_matmul_write(false), test_matmul_write(true);
    for (int epilogue = 0; epilogue < 2; epilogue++)
        test_matmul_gelu(epilogue, quick ? 48 : 192, quick ? 80 : 320), test_matmul_gelu(epilogue, 100, 76);
    for (int epilogue = 0; epilogue < 2; epilogue++)
        for (bool in_place : {false, true})
            test_matmul_residual(epilogue, quick ? 48 : 192, quick ? 80 : 320, in_place),
                test_matmul_residual(epilogue, 100, 76, in_place);
    test_gelu_residual<float>(), test_gelu_residual<bf16_t>();
    for (int V : {256, 77}) test_softmax_xent<float>(V), test_softmax_xent<bf16_t>(V);
    test_optimizer();
    test_seq_rows();
    test_attention<float>(), test_attention<bf16_t>();

    CHECK(cudaStreamSynchronize(stream));
    CHECK(cudaGetLastError());
    cuda_kernels_shutdown();
    CHECK(cudaStreamDestroy(stream));
    printf("1..%d\n%d passed, %d failed\n", n_pass + n_fail, n_pass, n_fail);
    return n_fail ? 1 : 0;
}
