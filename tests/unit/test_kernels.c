// CPU kernels (kernels/kernels.h) against float64 references written here.
// Forward kernels: values on random inputs. Backward kernels: the float32 analytic gradients
// against central finite differences of a float64 reference loss L = sum(G * f(x)) with a fixed
// random G (the FD is computed entirely in double, so it is exact to ~1e-9). Inputs are drawn as
// floats and widened, so kernel and reference see the same numbers.
// Tolerances are stated in each check's name: |got - want| <= atol + rtol |want|.
#include "check.h"
#include "kernels.h"

#include <omp.h>
#include <stdint.h>
#include <string.h>

// ---- helpers ----------------------------------------------------------------------

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng_next(void) {  // xorshift64*
    rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}
static double urand(void) { return (double)(rng_next() >> 11) / 9007199254740992.0 * 2.0 - 1.0; }  // [-1, 1)

static void *xcalloc(long n, size_t size) {
    void *p = calloc(n > 0 ? (size_t)n : 1, size);
    if (!p) { fprintf(stderr, "test_kernels: out of memory\n"); exit(1); }
    return p;
}
static float *frand(long n, double scale) {
    float *x = xcalloc(n, sizeof *x);
    for (long i = 0; i < n; i++) x[i] = (float)(scale * urand());
    return x;
}
static float *fcopy(const float *x, long n) {
    float *y = xcalloc(n, sizeof *y);
    memcpy(y, x, sizeof *y * n);
    return y;
}
static double *widen(const float *x, long n) {
    double *y = xcalloc(n, sizeof *y);
    for (long i = 0; i < n; i++) y[i] = x[i];
    return y;
}
static double maxabs(const double *x, long n) {
    double m = 0;
    for (long i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}
// Compares a float result with a double reference (widening the float).
static int close_f(const char *what, const float *got, const double *want, long n, double rtol, double atol) {
    double *g = widen(got, n);
    int ok = check_close(what, g, want, n, rtol, atol);
    free(g);
    return ok;
}

// The float64 reference loss, evaluated on the double inputs held by ctx. elem is the logical index
// of the element being perturbed: a loss may then evaluate only the terms that element reaches.
typedef double (*LossFn)(void *ctx, long elem);

// Finite-difference check of the analytic gradient g against dL/dx. Element s of the tensor lives at
// x[off[s]] and g[off[s]] (off NULL: at s), so strided tensors work. Checks every element when
// n <= max_samples, else max_samples random ones. atol is atol_rel * max |FD gradient|.
static void check_fd(const char *what, LossFn loss, void *ctx, double *x, const float *g, const long *off, long n,
                     long max_samples, double rtol, double atol_rel) {
    long m = n <= max_samples ? n : max_samples;
    double *got = xcalloc(m, sizeof *got), *want = xcalloc(m, sizeof *want);
    for (long s = 0; s < m; s++) {
        long e = n <= max_samples ? s : (long)(rng_next() % (uint64_t)n);
        long i = off ? off[e] : e;
        double save = x[i], h = 1e-5 * (fabs(save) > 1 ? fabs(save) : 1);
        x[i] = save + h;
        double lp = loss(ctx, e);
        x[i] = save - h;
        double lm = loss(ctx, e);
        x[i] = save;
        want[s] = (lp - lm) / (2 * h);
        got[s] = g[i];
    }
    char name[256];
    snprintf(name, sizeof name, "%s vs finite differences (rtol=%g, atol=%g*max|grad|)", what, rtol, atol_rel);
    check_close(name, got, want, m, rtol, atol_rel * maxabs(want, m));
    free(got), free(want);
}

// Backward kernels accumulate: a second call on the same buffer adds the same gradient again.
static void check_doubled(const char *what, const float *once, const float *twice, long n, double rtol) {
    double *want = xcalloc(n, sizeof *want);
    for (long i = 0; i < n; i++) want[i] = 2.0 * once[i];
    char name[256];
    snprintf(name, sizeof name, "%s accumulates: a second call doubles it", what);
    close_f(name, twice, want, n, rtol, rtol * maxabs(want, n));
    free(want);
}

static double dot_loss(const double *G, const double *y, long n) {
    double s = 0;
    for (long i = 0; i < n; i++) s += G[i] * y[i];
    return s;
}

// ---- embedding ----------------------------------------------------------------------

typedef struct {
    int B, T, C;
    const int *tokens;
    double *wte, *wpe, *G, *out;
} EmbCtx;

static void ref_embedding(EmbCtx *c) {
    for (int bt = 0; bt < c->B * c->T; bt++)
        for (int i = 0; i < c->C; i++)
            c->out[(long)bt * c->C + i] = c->wte[(long)c->tokens[bt] * c->C + i] + c->wpe[(long)(bt % c->T) * c->C + i];
}
static double emb_loss(void *p, long elem) {
    (void)elem;
    EmbCtx *c = p;
    ref_embedding(c);
    return dot_loss(c->G, c->out, (long)c->B * c->T * c->C);
}

static void test_embedding(void) {
    enum { B = 3, T = 5, C = 70, V = 7 };  // C > 64: two channel slices in the backward
    int tokens[B * T];
    for (int i = 0; i < B * T; i++) tokens[i] = (int)(rng_next() % 4);  // repeats: the dwte scatter-add
    tokens[0] = V - 1;
    float *wte = frand(V * C, 1), *wpe = frand(T * C, 1), *dout = frand(B * T * C, 1);
    float *out = xcalloc(B * T * C, sizeof *out);
    EmbCtx ctx = {B, T, C, tokens, widen(wte, V * C), widen(wpe, T * C), widen(dout, B * T * C),
                  xcalloc(B * T * C, sizeof(double))};
    embedding_forward(out, tokens, wte, wpe, B, T, C);
    ref_embedding(&ctx);
    close_f("embedding_forward equals wte[token] + wpe[t] (rtol=1e-7, atol=0: one rounding)", out, ctx.out, B * T * C, 1e-7, 0);

    float *dwte = xcalloc(V * C, sizeof *dwte), *dwpe = xcalloc(T * C, sizeof *dwpe);
    embedding_backward(dwte, dwpe, dout, tokens, B, T, C);
    check_fd("embedding_backward dwte", emb_loss, &ctx, ctx.wte, dwte, NULL, V * C, V * C, 1e-6, 1e-7);
    check_fd("embedding_backward dwpe", emb_loss, &ctx, ctx.wpe, dwpe, NULL, T * C, T * C, 1e-6, 1e-7);
    float *dwte1 = fcopy(dwte, V * C), *dwpe1 = fcopy(dwpe, T * C);
    embedding_backward(dwte, dwpe, dout, tokens, B, T, C);
    check_doubled("embedding_backward dwte", dwte1, dwte, V * C, 1e-6);
    check_doubled("embedding_backward dwpe", dwpe1, dwpe, T * C, 1e-6);
    free(wte), free(wpe), free(dout), free(out), free(dwte), free(dwpe), free(dwte1), free(dwpe1);
    free(ctx.wte), free(ctx.wpe), free(ctx.G), free(ctx.out);
}

// ---- layernorm ----------------------------------------------------------------------

typedef struct {
    int N, C;
    double *x, *w, *b, *G, *out, *mean, *rstd;
} LnCtx;

static void ref_layernorm(LnCtx *c) {
    for (int n = 0; n < c->N; n++) {
        const double *x = c->x + (long)n * c->C;
        double m = 0, v = 0;
        for (int i = 0; i < c->C; i++) m += x[i];
        m /= c->C;
        for (int i = 0; i < c->C; i++) v += (x[i] - m) * (x[i] - m);
        double s = 1.0 / sqrt(v / c->C + 1e-5);
        for (int i = 0; i < c->C; i++) c->out[(long)n * c->C + i] = (x[i] - m) * s * c->w[i] + c->b[i];
        c->mean[n] = m, c->rstd[n] = s;
    }
}
static double ln_loss(void *p, long elem) {
    (void)elem;
    LnCtx *c = p;
    ref_layernorm(c);
    return dot_loss(c->G, c->out, (long)c->N * c->C);
}

static void test_layernorm(void) {
    enum { N = 9, C = 70 };
    float *x = frand(N * C, 1), *w = frand(C, 1), *b = frand(C, 1), *dout = frand(N * C, 1);
    for (int i = 0; i < N * C; i++) x[i] += (float)(i / C);  // row means 0..8: the variance must not cancel
    LnCtx ctx = {N, C, widen(x, N * C), widen(w, C), widen(b, C), widen(dout, N * C), xcalloc(N * C, sizeof(double)),
                 xcalloc(N, sizeof(double)), xcalloc(N, sizeof(double))};
    float *out = xcalloc(N * C, sizeof *out), *mean = xcalloc(N, sizeof *mean), *rstd = xcalloc(N, sizeof *rstd);
    layernorm_forward(out, mean, rstd, x, w, b, N, C);
    ref_layernorm(&ctx);
    close_f("layernorm_forward out, row means up to 8 (rtol=1e-5, atol=1e-5)", out, ctx.out, N * C, 1e-5, 1e-5);
    close_f("layernorm_forward mean (rtol=1e-6, atol=1e-7)", mean, ctx.mean, N, 1e-6, 1e-7);
    close_f("layernorm_forward rstd (rtol=1e-5, atol=0)", rstd, ctx.rstd, N, 1e-5, 0);

    float *dx = xcalloc(N * C, sizeof *dx), *dw = xcalloc(C, sizeof *dw), *db = xcalloc(C, sizeof *db);
    layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, N, C);
    check_fd("layernorm_backward dinp", ln_loss, &ctx, ctx.x, dx, NULL, N * C, N * C, 1e-5, 1e-6);
    check_fd("layernorm_backward dweight", ln_loss, &ctx, ctx.w, dw, NULL, C, C, 1e-5, 1e-5);
    check_fd("layernorm_backward dbias", ln_loss, &ctx, ctx.b, db, NULL, C, C, 1e-5, 1e-6);
    float *dx1 = fcopy(dx, N * C), *dw1 = fcopy(dw, C), *db1 = fcopy(db, C);
    layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, N, C);
    check_doubled("layernorm_backward dinp", dx1, dx, N * C, 0);
    check_doubled("layernorm_backward dweight", dw1, dw, C, 0);
    check_doubled("layernorm_backward dbias", db1, db, C, 0);
    free(x), free(w), free(b), free(dout), free(out), free(mean), free(rstd), free(dx), free(dw), free(db);
    free(dx1), free(dw1), free(db1);
    free(ctx.x), free(ctx.w), free(ctx.b), free(ctx.G), free(ctx.out), free(ctx.mean), free(ctx.rstd);
}

// ---- matmul -------------------------------------------------------------------------

typedef struct {
    int N, C, OC;
    double *x, *w, *bias, *G, *out;  // bias NULL: none
} MmCtx;

static void ref_matmul(MmCtx *c) {
    for (int n = 0; n < c->N; n++)
        for (int o = 0; o < c->OC; o++) {
            double s = c->bias ? c->bias[o] : 0;
            for (int i = 0; i < c->C; i++) s += c->x[(long)n * c->C + i] * c->w[(long)o * c->C + i];
            c->out[(long)n * c->OC + o] = s;
        }
}
static double mm_loss(void *p, long elem) {
    (void)elem;
    MmCtx *c = p;
    ref_matmul(c);
    return dot_loss(c->G, c->out, (long)c->N * c->OC);
}

static void test_matmul_case(int N, int C, int OC, int with_bias, int with_dinp, int fd) {
    char what[160];
    float *x = frand((long)N * C, 1), *w = frand((long)OC * C, 1), *b = frand(OC, 1), *dout = frand((long)N * OC, 1);
    MmCtx ctx = {N, C, OC, widen(x, (long)N * C), widen(w, (long)OC * C), with_bias ? widen(b, OC) : NULL,
                 widen(dout, (long)N * OC), xcalloc((long)N * OC, sizeof(double))};
    float *out = frand((long)N * OC, 1);  // garbage: the forward overwrites
    matmul_forward(out, x, w, with_bias ? b : NULL, N, C, OC);
    ref_matmul(&ctx);
    snprintf(what, sizeof what, "matmul_forward N=%d C=%d OC=%d %s (rtol=1e-5, atol=1e-5)", N, C, OC,
             with_bias ? "bias" : "no bias");
    close_f(what, out, ctx.out, (long)N * OC, 1e-5, 1e-5);
    if (fd) {
        float *dx = xcalloc((long)N * C, sizeof *dx), *dw = xcalloc((long)OC * C, sizeof *dw), *db = xcalloc(OC, sizeof *db);
        matmul_backward(with_dinp ? dx : NULL, dw, with_bias ? db : NULL, dout, x, w, N, C, OC);
        if (with_dinp) check_fd("matmul_backward dinp", mm_loss, &ctx, ctx.x, dx, NULL, (long)N * C, 400, 1e-5, 1e-6);
        else {
            int untouched = 1;
            for (long i = 0; i < (long)N * C; i++) untouched &= dx[i] == 0;
            CHECK(untouched, "matmul_backward with dinp NULL and dbias NULL");
        }
        check_fd("matmul_backward dweight", mm_loss, &ctx, ctx.w, dw, NULL, (long)OC * C, 400, 1e-5, 1e-6);
        if (with_bias) check_fd("matmul_backward dbias", mm_loss, &ctx, ctx.bias, db, NULL, OC, OC, 1e-5, 1e-6);
        float *dx1 = fcopy(dx, (long)N * C), *dw1 = fcopy(dw, (long)OC * C), *db1 = fcopy(db, OC);
        matmul_backward(with_dinp ? dx : NULL, dw, with_bias ? db : NULL, dout, x, w, N, C, OC);
        if (with_dinp) check_doubled("matmul_backward dinp", dx1, dx, (long)N * C, 1e-6);
        check_doubled("matmul_backward dweight", dw1, dw, (long)OC * C, 1e-6);
        if (with_bias) check_doubled("matmul_backward dbias", db1, db, OC, 1e-6);
        free(dx), free(dw), free(db), free(dx1), free(dw1), free(db1);
    }
    free(x), free(w), free(b), free(dout), free(out);
    free(ctx.x), free(ctx.w), free(ctx.bias), free(ctx.G), free(ctx.out);
}

static void test_matmul(void) {
    test_matmul_case(37, 19, 23, 1, 1, 1);
    test_matmul_case(37, 19, 71, 0, 0, 1);   // no bias, dinp and dbias NULL; OC > 64: two bias slices
    test_matmul_case(256, 128, 96, 1, 1, 0);  // large enough for OpenBLAS threads
}

// ---- GELU ---------------------------------------------------------------------------

typedef struct {
    long n;
    double *x, *G, *out;
} GeluCtx;

static void ref_gelu(GeluCtx *c) {
    const double s = sqrt(2.0 / M_PI);
    for (long i = 0; i < c->n; i++) {
        double x = c->x[i];
        c->out[i] = 0.5 * x * (1.0 + tanh(s * (x + 0.044715 * x * x * x)));
    }
}
static double gelu_loss(void *p, long elem) {
    (void)elem;
    GeluCtx *c = p;
    ref_gelu(c);
    return dot_loss(c->G, c->out, c->n);
}

static void test_gelu(void) {
    enum { n = 1003 };
    float *x = frand(n, 6), *dout = frand(n, 1);
    x[0] = 0, x[1] = 1e-4f, x[2] = -1e-4f, x[3] = 20, x[4] = -20, x[5] = 60, x[6] = -60;
    GeluCtx ctx = {n, widen(x, n), widen(dout, n), xcalloc(n, sizeof(double))};
    float *out = xcalloc(n, sizeof *out), *dx = xcalloc(n, sizeof *dx);
    gelu_forward(out, x, n);
    ref_gelu(&ctx);
    close_f("gelu_forward tanh approximation (rtol=1e-5, atol=1e-6)", out, ctx.out, n, 1e-5, 1e-6);
    gelu_backward(dx, x, dout, n);
    check_fd("gelu_backward", gelu_loss, &ctx, ctx.x, dx, NULL, n, n, 1e-5, 1e-6);
    float *dx1 = fcopy(dx, n);
    gelu_backward(dx, x, dout, n);
    check_doubled("gelu_backward", dx1, dx, n, 0);
    free(x), free(dout), free(out), free(dx), free(dx1), free(ctx.x), free(ctx.G), free(ctx.out);
}

static void test_residual(void) {
    enum { n = 1001 };
    float *a = frand(n, 1), *b = frand(n, 1), *out = xcalloc(n, sizeof *out);
    residual_forward(out, a, b, n);
    int ok = 1;
    for (int i = 0; i < n; i++) ok &= out[i] == a[i] + b[i];
    CHECK(ok, "residual_forward equals a + b exactly");
    free(a), free(b), free(out);
}

// ---- softmax cross-entropy ------------------------------------------------------------

typedef struct {
    int N, V;
    const int *targets;
    double *logits, dloss, *losses;
} XentCtx;

static void ref_xent(XentCtx *c) {
    for (int n = 0; n < c->N; n++) {
        const double *row = c->logits + (long)n * c->V;
        if (c->targets[n] < 0) { c->losses[n] = 0; continue; }
        double mx = row[0], s = 0;
        for (int j = 1; j < c->V; j++) mx = row[j] > mx ? row[j] : mx;
        for (int j = 0; j < c->V; j++) s += exp(row[j] - mx);
        c->losses[n] = mx + log(s) - row[c->targets[n]];
    }
}
static double xent_loss(void *p, long elem) {
    (void)elem;
    XentCtx *c = p;
    ref_xent(c);
    double s = 0;
    for (int n = 0; n < c->N; n++) s += c->dloss * c->losses[n];
    return s;
}

static void test_xent(void) {
    enum { N = 10, V = 37 };
    int targets[N];
    for (int n = 0; n < N; n++) targets[n] = (int)(rng_next() % V);
    targets[3] = -1, targets[7] = -100;  // ignored rows
    float *logits = frand(N * V, 4);
    logits[5 * V + 2] = 80;  // a large logit: the row max must be subtracted
    XentCtx ctx = {N, V, targets, widen(logits, N * V), 1.0 / 8, xcalloc(N, sizeof(double))};
    ref_xent(&ctx);
    float *losses = frand(N, 1), *losses2 = frand(N, 1);
    softmax_xent_forward(losses, logits, targets, N, V);
    close_f("softmax_xent_forward losses in nats (rtol=1e-5, atol=1e-6)", losses, ctx.losses, N, 1e-5, 1e-6);
    CHECK(losses[3] == 0 && losses[7] == 0, "softmax_xent_forward: targets < 0 give loss 0");
    float *grad = fcopy(logits, N * V);
    softmax_xent_forward_backward(losses2, grad, targets, N, V, (float)ctx.dloss);
    close_f("softmax_xent_forward_backward losses (rtol=1e-5, atol=1e-6)", losses2, ctx.losses, N, 1e-5, 1e-6);
    check_fd("softmax_xent_forward_backward dlogits", xent_loss, &ctx, ctx.logits, grad, NULL, N * V, N * V, 1e-5, 1e-6);
    int zero = 1;
    for (int j = 0; j < V; j++) zero &= grad[3 * V + j] == 0 && grad[7 * V + j] == 0;
    CHECK(zero, "softmax_xent_forward_backward: ignored rows get gradient 0");
    free(logits), free(losses), free(losses2), free(grad), free(ctx.logits), free(ctx.losses);
}

// ---- optimizer --------------------------------------------------------------------------

static void test_adamw(void) {
    enum { n = 1001, steps = 5 };
    // The reference uses the float hyperparameters the kernel receives (0.999f is not 0.999).
    const double lr = 1e-2f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.1f;
    float *p = frand(n, 1), *m = xcalloc(n, sizeof *m), *v = xcalloc(n, sizeof *v);
    double *rp = widen(p, n), *rm = xcalloc(n, sizeof *rm), *rv = xcalloc(n, sizeof *rv);
    for (int t = 1; t <= steps; t++) {
        float *g = frand(n, t == 3 ? 1e-3 : 1);  // one step with small gradients
        g[0] = 0;
        adamw_update(p, g, m, v, n, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd, t);
        for (int i = 0; i < n; i++) {
            rm[i] = b1 * rm[i] + (1 - b1) * g[i];
            rv[i] = b2 * rv[i] + (1 - b2) * (double)g[i] * g[i];
            double mhat = rm[i] / (1 - pow(b1, t)), vhat = rv[i] / (1 - pow(b2, t));
            rp[i] -= lr * (mhat / (sqrt(vhat) + eps) + wd * rp[i]);
        }
        char what[128];
        snprintf(what, sizeof what, "adamw_update step %d params (rtol=1e-5, atol=1e-6)", t);
        close_f(what, p, rp, n, 1e-5, 1e-6);
        free(g);
    }
    close_f("adamw_update m after 5 steps (rtol=1e-5, atol=1e-8)", m, rm, n, 1e-5, 1e-8);
    close_f("adamw_update v after 5 steps (rtol=1e-5, atol=1e-10)", v, rv, n, 1e-5, 1e-10);
    free(p), free(m), free(v), free(rp), free(rm), free(rv);
}

static void test_sum_scale(void) {
    enum { n = 100003 };
    float *x = frand(n, 3);
    double want = 0;
    for (long i = 0; i < n; i++) want += (double)x[i] * x[i];
    double got = sum_squares(x, n);
    check_close("sum_squares accumulates in double (rtol=1e-12, atol=0)", &got, &want, 1, 1e-12, 0);
    int saved = omp_get_max_threads(), same = 1;
    for (int nt = 1; nt <= 3; nt++) {
        omp_set_num_threads(nt);
        double again = sum_squares(x, n);
        same &= memcmp(&again, &got, sizeof got) == 0;
    }
    omp_set_num_threads(saved);
    CHECK(same, "sum_squares is bit-identical with 1, 2, 3 threads");
    double small = sum_squares(x, 5), want_small = 0;
    for (int i = 0; i < 5; i++) want_small += (double)x[i] * x[i];
    check_close("sum_squares n=5 (fewer elements than chunks) (rtol=1e-15)", &small, &want_small, 1, 1e-15, 0);
    float *y = fcopy(x, n);
    scale_inplace(y, n, 0.37f);
    int ok = 1;
    for (long i = 0; i < n; i++) ok &= y[i] == x[i] * 0.37f;
    CHECK(ok, "scale_inplace multiplies every element exactly");
    free(x), free(y);
}

// ---- attention --------------------------------------------------------------------------

typedef struct {
    const char *name;
    int B, NH, hs, Tq, Tk, ldq, ldkv;  // ldq, ldkv: 0 means C
    int q_col, k_col, v_col;            // column offsets of q, k, v within their rows
    int fd_samples;                     // FD samples per tensor
} AttnCase;

typedef struct {
    int B, NH, hs, Tq, Tk, ldq, ldkv, C;
    const int *q_pos;
    double *qbuf, *kvbuf;  // strided double copies; q at qbuf + q_col, k/v at kvbuf + k_col / v_col
    int q_col, k_col, v_col;
    double *G, *out, *lse;  // G, out (B, Tq, C); lse (B, NH, Tq)
    int fd_T;               // rows of the tensor being checked by finite differences (Tq or Tk)
} AttnRef;

// softmax(q k^T / sqrt(hs) + causal mask by position) v, in double, one query at a time;
// only sequence `only_b` and head `only_h` when those are >= 0.
static void ref_attention_part(AttnRef *r, int only_b, int only_h) {
    double *p = xcalloc(r->Tk, sizeof *p);
    const double scale = 1.0 / sqrt(r->hs);
    for (int b = 0; b < r->B; b++)
        for (int h = 0; h < r->NH; h++)
            for (int t = 0; t < r->Tq; t++) {
                if ((only_b >= 0 && b != only_b) || (only_h >= 0 && h != only_h)) continue;
                const double *q = r->qbuf + ((long)b * r->Tq + t) * r->ldq + r->q_col + h * r->hs;
                int nv = r->q_pos[t] + 1 < r->Tk ? r->q_pos[t] + 1 : r->Tk;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < nv; j++) {
                    const double *k = r->kvbuf + ((long)b * r->Tk + j) * r->ldkv + r->k_col + h * r->hs;
                    double s = 0;
                    for (int c = 0; c < r->hs; c++) s += q[c] * k[c];
                    p[j] = s * scale;
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int j = 0; j < nv; j++) sum += p[j] = exp(p[j] - mx);
                double *o = r->out + ((long)b * r->Tq + t) * r->C + h * r->hs;
                for (int c = 0; c < r->hs; c++) o[c] = 0;
                for (int j = 0; j < nv; j++) {
                    const double *v = r->kvbuf + ((long)b * r->Tk + j) * r->ldkv + r->v_col + h * r->hs;
                    for (int c = 0; c < r->hs; c++) o[c] += p[j] / sum * v[c];
                }
                r->lse[((long)b * r->NH + h) * r->Tq + t] = mx + log(sum);
            }
    free(p);
}
static void ref_attention(AttnRef *r) { ref_attention_part(r, -1, -1); }

// L = sum(G * out) over the (b, h) that the perturbed element belongs to (the rest is constant):
// elem indexes a logical (B, fd_T, C) tensor.
static double attn_loss(void *p, long elem) {
    AttnRef *r = p;
    const int b = (int)(elem / ((long)r->fd_T * r->C)), h = (int)(elem % r->C) / r->hs;
    ref_attention_part(r, b, h);
    double s = 0;
    for (int t = 0; t < r->Tq; t++)
        for (int c = h * r->hs; c < (h + 1) * r->hs; c++) {
            long i = ((long)b * r->Tq + t) * r->C + c;
            s += r->G[i] * r->out[i];
        }
    return s;
}

// Analytic float64 backward (naive): dS = P (dout v^T - rowsum(dout * out)); dq = dS k / sqrt(hs),
// dk = dS^T q / sqrt(hs), dv = P^T dout. Gradients land at the same strided offsets as the inputs.
static void ref_attention_backward(AttnRef *r, double *dq, double *dkv) {
    ref_attention(r);
    double *p = xcalloc(r->Tk, sizeof *p);
    const double scale = 1.0 / sqrt(r->hs);
    for (int b = 0; b < r->B; b++)
        for (int h = 0; h < r->NH; h++)
            for (int t = 0; t < r->Tq; t++) {
                const long qo = ((long)b * r->Tq + t) * r->ldq + r->q_col + h * r->hs;
                const double *q = r->qbuf + qo, *d = r->G + ((long)b * r->Tq + t) * r->C + h * r->hs;
                const double *o = r->out + ((long)b * r->Tq + t) * r->C + h * r->hs;
                const double lse = r->lse[((long)b * r->NH + h) * r->Tq + t];
                int nv = r->q_pos[t] + 1 < r->Tk ? r->q_pos[t] + 1 : r->Tk;
                double D = 0;
                for (int c = 0; c < r->hs; c++) D += d[c] * o[c];
                for (int j = 0; j < nv; j++) {
                    const long ko = ((long)b * r->Tk + j) * r->ldkv + h * r->hs;
                    const double *k = r->kvbuf + ko + r->k_col, *v = r->kvbuf + ko + r->v_col;
                    double s = 0, dp = 0;
                    for (int c = 0; c < r->hs; c++) s += q[c] * k[c], dp += d[c] * v[c];
                    p[j] = exp(s * scale - lse);
                    double ds = p[j] * (dp - D);
                    for (int c = 0; c < r->hs; c++) {
                        dq[qo + c] += ds * k[c] * scale;
                        dkv[ko + r->k_col + c] += ds * q[c] * scale;
                        dkv[ko + r->v_col + c] += p[j] * d[c];
                    }
                }
            }
    free(p);
}

// Offsets of the logical (B, T, C) elements of a tensor stored at column col with row stride ld.
static long *strided_offsets(int B, int T, int C, int ld, int col) {
    long *off = xcalloc((long)B * T * C, sizeof *off);
    for (long bt = 0; bt < (long)B * T; bt++)
        for (int c = 0; c < C; c++) off[bt * C + c] = bt * ld + col + c;
    return off;
}

static int all_zero_outside(const float *x, int rows, int ld, int col0, int ncol, int col1, int ncol1) {
    for (long r = 0; r < rows; r++)
        for (int c = 0; c < ld; c++) {
            int inside = (c >= col0 && c < col0 + ncol) || (c >= col1 && c < col1 + ncol1);
            if (!inside && x[r * ld + c] != 0) return 0;
        }
    return 1;
}

static void test_attention_case(const AttnCase *tc, const int *q_pos) {
    const int B = tc->B, NH = tc->NH, hs = tc->hs, Tq = tc->Tq, Tk = tc->Tk, C = NH * hs;
    const int ldq = tc->ldq ? tc->ldq : C, ldkv = tc->ldkv ? tc->ldkv : C;
    const long nq = (long)B * Tq * ldq, nkv = (long)B * Tk * ldkv, no = (long)B * Tq * C, nl = (long)B * NH * Tq;
    char what[256];
    float *qbuf = frand(nq, 1), *kvbuf = frand(nkv, 1), *dout = frand(no, 1);
    const float *q = qbuf + tc->q_col, *k = kvbuf + tc->k_col, *v = kvbuf + tc->v_col;
    AttnRef r = {B, NH, hs, Tq, Tk, ldq, ldkv, C, q_pos, widen(qbuf, nq), widen(kvbuf, nkv), tc->q_col, tc->k_col,
                 tc->v_col, widen(dout, no), xcalloc(no, sizeof(double)), xcalloc(nl, sizeof(double)), 0};

    float *out = frand(no, 1), *lse = frand(nl, 1);  // garbage: the forward overwrites
    attention_forward(out, lse, q, k, v, q_pos, B, Tq, Tk, NH, hs, ldq, ldkv);
    ref_attention(&r);
    snprintf(what, sizeof what, "attention_forward %s: out = softmax(qk^T/sqrt(hs) + mask) v (rtol=1e-5, atol=1e-6)",
             tc->name);
    close_f(what, out, r.out, no, 1e-5, 1e-6);
    snprintf(what, sizeof what, "attention_forward %s: lse (rtol=1e-5, atol=1e-5)", tc->name);
    close_f(what, lse, r.lse, nl, 1e-5, 1e-5);

    float *dqbuf = xcalloc(nq, sizeof *dqbuf), *dkvbuf = xcalloc(nkv, sizeof *dkvbuf);
    float *dq = dqbuf + tc->q_col, *dk = dkvbuf + tc->k_col, *dv = dkvbuf + tc->v_col;
    attention_backward(dq, dk, dv, dout, out, lse, q, k, v, q_pos, B, Tq, Tk, NH, hs, ldq, ldkv);

    // Against the analytic float64 backward, every element.
    double *rdq = xcalloc(nq, sizeof *rdq), *rdkv = xcalloc(nkv, sizeof *rdkv);
    ref_attention_backward(&r, rdq, rdkv);
    snprintf(what, sizeof what, "attention_backward %s: dq, dk, dv vs float64 analytic backward (rtol=1e-5, atol=1e-5*max|grad|)",
             tc->name);
    double *g1 = widen(dqbuf, nq), *g2 = widen(dkvbuf, nkv);
    double amax = fmax(maxabs(rdq, nq), maxabs(rdkv, nkv));
    int ok = check_close(what, g1, rdq, nq, 1e-5, 1e-5 * amax);
    if (ok) {
        check_close(what, g2, rdkv, nkv, 1e-5, 1e-5 * amax);
    }
    free(g1), free(g2), free(rdq), free(rdkv);

    // Against finite differences of the float64 reference forward.
    long *qoff = strided_offsets(B, Tq, C, ldq, tc->q_col);
    long *koff = strided_offsets(B, Tk, C, ldkv, tc->k_col), *voff = strided_offsets(B, Tk, C, ldkv, tc->v_col);
    r.fd_T = Tq;
    snprintf(what, sizeof what, "attention_backward %s: dq", tc->name);
    check_fd(what, attn_loss, &r, r.qbuf, dqbuf, qoff, (long)B * Tq * C, tc->fd_samples, 1e-5, 1e-5);
    r.fd_T = Tk;
    snprintf(what, sizeof what, "attention_backward %s: dk", tc->name);
    check_fd(what, attn_loss, &r, r.kvbuf, dkvbuf, koff, (long)B * Tk * C, tc->fd_samples, 1e-5, 1e-5);
    snprintf(what, sizeof what, "attention_backward %s: dv", tc->name);
    check_fd(what, attn_loss, &r, r.kvbuf, dkvbuf, voff, (long)B * Tk * C, tc->fd_samples, 1e-5, 1e-5);

    // Strided gradients touch only their own columns.
    if (ldq != C || ldkv != C) {
        snprintf(what, sizeof what, "attention_backward %s: writes only the q / k / v columns of strided rows", tc->name);
        CHECK(all_zero_outside(dqbuf, B * Tq, ldq, tc->q_col, C, tc->q_col, C) &&
                  all_zero_outside(dkvbuf, B * Tk, ldkv, tc->k_col, C, tc->v_col, C),
              "%s", what);
    }

    // Accumulate contract: a second call adds the same gradient again.
    float *dq1 = fcopy(dqbuf, nq), *dkv1 = fcopy(dkvbuf, nkv);
    attention_backward(dq, dk, dv, dout, out, lse, q, k, v, q_pos, B, Tq, Tk, NH, hs, ldq, ldkv);
    snprintf(what, sizeof what, "attention_backward %s: dq", tc->name);
    check_doubled(what, dq1, dqbuf, nq, 1e-6);
    snprintf(what, sizeof what, "attention_backward %s: dk, dv", tc->name);
    check_doubled(what, dkv1, dkvbuf, nkv, 1e-6);

    free(qbuf), free(kvbuf), free(dout), free(out), free(lse), free(dqbuf), free(dkvbuf), free(dq1), free(dkv1);
    free(qoff), free(koff), free(voff);
    free(r.qbuf), free(r.kvbuf), free(r.G), free(r.out), free(r.lse);
}

static void test_attention(void) {
    int pos[256];
    // LSS: this rank's 16 queries sit at global positions 32..47 of a 64-token sequence.
    for (int t = 0; t < 16; t++) pos[t] = 32 + t;
    test_attention_case(&(AttnCase){"LSS offset B=2 NH=2 hs=8 Tq=16@32 Tk=64", 2, 2, 8, 16, 64, 0, 0, 0, 0, 0, 300},
                        pos);
    // Zigzag: two runs of positions; one query block holds both.
    for (int t = 0; t < 8; t++) pos[t] = t, pos[8 + t] = 120 + t;
    test_attention_case(&(AttnCase){"zigzag B=1 NH=2 hs=8 pos=[0..7]+[120..127] Tk=128", 1, 2, 8, 16, 128, 0, 0, 0, 0, 0,
                                    300},
                        pos);
    // Zigzag over three query blocks of 64 (the middle one straddles both runs), Tk not a block multiple.
    for (int t = 0; t < 65; t++) pos[t] = t, pos[65 + t] = 135 + t;
    test_attention_case(&(AttnCase){"zigzag B=1 NH=2 hs=16 pos=[0..64]+[135..199] Tk=200", 1, 2, 16, 130, 200, 0, 0, 0,
                                    0, 0, 40},
                        pos);
    // Strides: q at column C of a 3C-wide row (ldq = 3C); k and v interleaved in one (k | v) row, ld 2C.
    for (int t = 0; t < 20; t++) pos[t] = 25 + t;
    test_attention_case(&(AttnCase){"strides ldq=3C ldkv=2C B=2 NH=2 hs=8 Tq=20@25 Tk=45", 2, 2, 8, 20, 45, 48, 32, 16, 0,
                                    16, 300},
                        pos);
    // Several heads, B > 1, Tq and Tk not multiples of the block.
    for (int t = 0; t < 70; t++) pos[t] = 80 + t;
    test_attention_case(&(AttnCase){"B=2 NH=3 hs=16 Tq=70@80 Tk=150", 2, 3, 16, 70, 150, 0, 0, 0, 0, 0, 40}, pos);
    // The model's head size: plain causal self-attention, 3 query blocks x 2 key blocks (the last partial).
    for (int t = 0; t < 130; t++) pos[t] = t;
    test_attention_case(&(AttnCase){"causal B=1 NH=2 hs=64 Tq=Tk=130", 1, 2, 64, 130, 130, 0, 0, 0, 0, 0, 20}, pos);
    // hs = 128: tile products with a longer contraction.
    for (int t = 0; t < 50; t++) pos[t] = 50 + t;
    test_attention_case(&(AttnCase){"B=1 NH=1 hs=128 Tq=50@50 Tk=100", 1, 1, 128, 50, 100, 0, 0, 0, 0, 0, 20}, pos);
}

// Same inputs -> same bits: twice with the same thread count, and across thread counts (which
// also switches the backward between its one-pass and two-pass schedules).
static void test_attention_determinism(void) {
    enum { B = 2, NH = 3, hs = 16, Tq = 100, Tk = 300, C = NH * hs };
    const long nq = (long)B * Tq * C, nkv = (long)B * Tk * C, nl = (long)B * NH * Tq;
    int pos[Tq];
    for (int t = 0; t < 50; t++) pos[t] = t, pos[50 + t] = 250 + t;  // zigzag
    float *q = frand(nq, 1), *k = frand(nkv, 1), *v = frand(nkv, 1), *dout = frand(nq, 1);
    // [0]: the first run; [1]: every later run.
    float *out[2], *lse[2], *dq[2], *dk[2], *dv[2];
    for (int s = 0; s < 2; s++) {
        out[s] = xcalloc(nq, sizeof(float)), lse[s] = xcalloc(nl, sizeof(float)), dq[s] = xcalloc(nq, sizeof(float));
        dk[s] = xcalloc(nkv, sizeof(float)), dv[s] = xcalloc(nkv, sizeof(float));
    }
    const int threads[] = {2, 2, 1, 4, 5};  // B*NH = 6: one pass with 1, 2 threads; two passes with 4, 5
    int saved = omp_get_max_threads(), same_twice = 0, same_fwd = 1, same_bwd = 1;
    for (int run = 0; run < 5; run++) {
        int s = run > 0;
        memset(dq[s], 0, sizeof(float) * nq), memset(dk[s], 0, sizeof(float) * nkv), memset(dv[s], 0, sizeof(float) * nkv);
        omp_set_num_threads(threads[run]);
        attention_forward(out[s], lse[s], q, k, v, pos, B, Tq, Tk, NH, hs, C, C);
        attention_backward(dq[s], dk[s], dv[s], dout, out[s], lse[s], q, k, v, pos, B, Tq, Tk, NH, hs, C, C);
        if (run == 0) continue;
        int f = !memcmp(out[0], out[1], sizeof(float) * nq) && !memcmp(lse[0], lse[1], sizeof(float) * nl);
        int g = !memcmp(dq[0], dq[1], sizeof(float) * nq) && !memcmp(dk[0], dk[1], sizeof(float) * nkv) &&
                !memcmp(dv[0], dv[1], sizeof(float) * nkv);
        if (run == 1) same_twice = f && g;
        same_fwd &= f, same_bwd &= g;
    }
    omp_set_num_threads(saved);
    CHECK(same_twice, "attention forward + backward: two runs with 2 threads are bit-identical");
    CHECK(same_fwd, "attention_forward: bit-identical with 1, 2, 4, 5 threads");
    CHECK(same_bwd, "attention_backward: bit-identical with 1, 2 (one pass) and 4, 5 threads (two passes)");
    for (int s = 0; s < 2; s++) free(out[s]), free(lse[s]), free(dq[s]), free(dk[s]), free(dv[s]);
    free(q), free(k), free(v), free(dout);
}

// The reductions over rows (dwte, dwpe, dweight, dbias) are split by channel, so their bits do not
// depend on the thread count.
static void test_rowsum_determinism(void) {
    enum { N = 300, C = 200, V = 11, T = 100 };
    int tokens[N];
    for (int i = 0; i < N; i++) tokens[i] = (int)(rng_next() % V);
    float *x = frand(N * C, 1), *w = frand(C, 1), *b = frand(C, 1), *dout = frand(N * C, 1), *y = frand(N * C, 1);
    float *mean = frand(N, 1), *rstd = frand(N, 1), *win = frand(C * C, 1);
    layernorm_forward(y, mean, rstd, x, w, b, N, C);
    float *g[2][6];  // [run][dwte, dwpe, dinp, dweight, dbias, matmul dbias]
    const long n[6] = {V * C, T * C, N * C, C, C, C};
    const int threads[2] = {1, 3};
    int saved = omp_get_max_threads(), same = 1;
    for (int r = 0; r < 2; r++) {
        for (int i = 0; i < 6; i++) g[r][i] = xcalloc(n[i], sizeof(float));
        omp_set_num_threads(threads[r]);
        embedding_backward(g[r][0], g[r][1], dout, tokens, N / T, T, C);
        layernorm_backward(g[r][2], g[r][3], g[r][4], dout, x, w, mean, rstd, N, C);
        float *dw = xcalloc(C * C, sizeof(float));
        matmul_backward(NULL, dw, g[r][5], dout, x, win, N, C, C);
        free(dw);
    }
    omp_set_num_threads(saved);
    for (int i = 0; i < 6; i++) same &= !memcmp(g[0][i], g[1][i], sizeof(float) * n[i]);
    CHECK(same, "embedding_backward, layernorm_backward, matmul_backward dbias: bit-identical with 1 and 3 threads");
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < 6; i++) free(g[r][i]);
    free(x), free(w), free(b), free(dout), free(y), free(mean), free(rstd), free(win);
}

int main(void) {
    test_embedding();
    test_layernorm();
    test_matmul();
    test_gelu();
    test_residual();
    test_xent();
    test_adamw();
    test_sum_scale();
    test_rowsum_determinism();
    test_attention();
    test_attention_determinism();
    return check_done();
}
