// Runs the token-wise CUDA kernels (kernels/cuda/layers_kernels.h, the very source nvcc compiles)
// on the CPU (tests/gpu/emu.h) and compares them with their CPU twins (kernels/cpu/layers.c),
// fp32 and bf16. For machines without a GPU: checks the indexing, the ballot compaction of the
// embedding backward, the two-pass reductions, the in-place cross-entropy, before a GPU runs them.
// The host wrappers (grid sizes, scratch) and the cuBLAS GEMMs are not covered: the GPU test is.
//
//   emulate_layers [--only SUBSTRING]      (build: tests/gpu/emulate.sh)
#include "emu.h"
#include "test_util.h"
#include "cuda/layers_kernels.h"

using std::vector;

static const char *only = NULL;
static int n_pass = 0, n_fail = 0;

static SplitMix64 rng = {0x2545F4914F6CDD1Dull};
static vector<float> rnd(long n, float lo = -1.0f, float hi = 1.0f) {
    vector<float> v(n);
    for (auto &x : v) x = rng.uniform(lo, hi);
    return v;
}

template <typename T> struct P;
template <> struct P<float> {
    static constexpr const char *name = "f32";
    static constexpr double tol = 1e-4;
    static float round(float x) { return x; }
};
template <> struct P<bf16_t> {
    static constexpr const char *name = "bf16";
    static constexpr double tol = 1e-2;
    static float round(float x) { return __bfloat162float(__float2bfloat16(x)); }
};
template <typename T> static vector<float> act(vector<float> v) {
    for (auto &x : v) x = P<T>::round(x);
    return v;
}
template <typename T> static vector<T> dev(const vector<float> &v) {
    vector<T> r(v.size());
    for (size_t i = 0; i < v.size(); i++) r[i] = from_float<T>(v[i]);
    return r;
}
template <typename T> static vector<float> host(const vector<T> &v) {
    vector<float> r(v.size());
    for (size_t i = 0; i < v.size(); i++) r[i] = to_float<T>(v[i]);
    return r;
}
template <typename T> static vector<T> poisoned(long n) {
    vector<T> v(n);
    memset((void *)v.data(), 0xFF, sizeof(T) * n);
    return v;
}

// max |g - r| / (|r| + rms(r)) and rms(g - r) / rms(r); NaN where r is finite fails.
static void report(const std::string &name, const vector<std::pair<const char *, vector<float>>> &got,
                   const vector<vector<float>> &ref, double tol) {
    bool ok = true;
    std::string detail;
    for (size_t k = 0; k < got.size(); k++) {
        const vector<float> &g = got[k].second, &r = ref[k];
        double ss = 0.0, sse = 0.0, err = 0.0;
        long bad = 0;
        for (float x : r) ss += (double)x * x;
        const double fl = r.empty() || ss == 0.0 ? 1e-30 : sqrt(ss / r.size());
        for (size_t i = 0; i < r.size(); i++) {
            if (!isfinite(g[i])) {
                bad++;
                continue;
            }
            err = std::max(err, fabs((double)g[i] - r[i]) / (fabs(r[i]) + fl));
            sse += ((double)g[i] - r[i]) * ((double)g[i] - r[i]);
        }
        const double rms = r.empty() ? 0.0 : sqrt(sse / r.size()) / fl;
        ok = ok && !bad && err <= tol && rms <= tol / 3;
        char buf[160];
        snprintf(buf, sizeof buf, "%s%s err %.2e rms %.1e%s", k ? ", " : "", got[k].first, err, rms, bad ? " NaN!" : "");
        detail += buf;
    }
    (ok ? n_pass : n_fail)++;
    printf("%s %d - %s (%s; tol %.0e)\n", ok ? "ok" : "not ok", n_pass + n_fail, name.c_str(), detail.c_str(), tol);
    fflush(stdout);
}
// Two results that must be the same bits (the same sums in the same order).
// The column reductions' tickets: every one back at 0 after a launch.
static void check_tickets(const std::string &name, const vector<int> &tickets) {
    bool ok = true;
    for (int t : tickets) ok = ok && t == 0;
    (ok ? n_pass : n_fail)++;
    printf("%s %d - %s (all back at 0)\n", ok ? "ok" : "not ok", n_pass + n_fail, name.c_str());
}

static void check_bits(const std::string &name, const vector<float> &got, const vector<float> &ref,
                       const char *what = "the scalar kernel") {
    const bool ok = got.size() == ref.size() && !memcmp(got.data(), ref.data(), sizeof(float) * got.size());
    (ok ? n_pass : n_fail)++;
    printf("%s %d - %s (bitwise equal to %s)\n", ok ? "ok" : "not ok", n_pass + n_fail, name.c_str(), what);
}

static bool want(const std::string &name) { return !only || name.find(only) != std::string::npos; }
static EmuDim3 grid(unsigned x, unsigned y = 1) {
    EmuDim3 g;
    g.x = x, g.y = y, g.z = 1;
    return g;
}
static unsigned cdiv(long a, long b) { return (unsigned)((a + b - 1) / b); }

template <typename T> static void test_embedding() {
    const int B = 2, T_ = 150, C = 40, V = 16;
    const long BT = (long)B * T_;
    vector<int> tok(BT);
    for (auto &t : tok) t = (int)(rng.uniform(0.0f, 1.0f) * 12);  // rows 12..15 never used
    vector<float> wte = rnd((long)V * C), wpe = rnd((long)T_ * C);
    if (want(std::string("embedding_forward ") + P<T>::name)) {
        vector<float> ref(BT * C);
        embedding_forward(ref.data(), tok.data(), wte.data(), wpe.data(), B, T_, C);
        vector<T> out = poisoned<T>(BT * C);
        emu::launch(grid(3), BLOCK, [&] {
            embedding_forward_kernel<T>(out.data(), tok.data(), wte.data(), wpe.data(), T_, C, BT * C);
        });
        report(std::string("embedding_forward ") + P<T>::name, {{"out", host(out)}}, {ref}, P<T>::tol);
    }
    if (want(std::string("embedding_backward ") + P<T>::name)) {
        vector<float> dout = act<T>(rnd(BT * C)), w0 = rnd((long)V * C), p0 = rnd((long)T_ * C);
        vector<float> rw = w0, rp = p0;
        embedding_backward(rw.data(), rp.data(), dout.data(), tok.data(), B, T_, C);
        vector<T> d = dev<T>(dout);
        vector<float> gw = w0, gp = p0;
        emu::launch(grid(cdiv(C, BLOCK), V), BLOCK, [&] {
            embedding_backward_wte_kernel<T>(gw.data(), d.data(), tok.data(), BT, C);
        });
        emu::launch(grid(2), BLOCK, [&] { embedding_backward_wpe_kernel<T>(gp.data(), d.data(), B, T_, C); });
        report(std::string("embedding_backward ") + P<T>::name, {{"dwte", gw}, {"dwpe", gp}}, {rw, rp}, P<T>::tol);
    }
}

// N = 37: at most one row per reduction chunk; N = 1100: several per chunk and per warp.
template <typename T> static void test_layernorm(int N) {
    const int C = 72;
    vector<float> x = act<T>(rnd((long)N * C, -2.0f, 3.0f)), w = rnd(C, 0.5f, 1.5f), b = rnd(C);
    vector<float> ref((long)N * C), mean(N), rstd(N);
    layernorm_forward(ref.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    vector<T> xd = dev<T>(x);
    if (want(std::string("layernorm_forward ") + P<T>::name)) {
        vector<T> out = poisoned<T>((long)N * C);
        vector<float> m(N, NAN), r(N, NAN);
        emu::launch(grid(cdiv(N, WARPS_PER_BLOCK)), BLOCK, [&] {
            layernorm_forward_kernel<T, 1>(out.data(), m.data(), r.data(), xd.data(), w.data(), b.data(), N, C);
        });
        report(std::string("layernorm_forward ") + P<T>::name, {{"out", host(out)}, {"mean", m}, {"rstd", r}},
               {ref, mean, rstd}, P<T>::tol);
        vector<T> out_v = poisoned<T>((long)N * C);   // C = 72: the vectorized kernel applies too
        vector<float> m_v(N, NAN), r_v(N, NAN);
        emu::launch(grid(cdiv(N, WARPS_PER_BLOCK)), BLOCK, [&] {
            layernorm_forward_kernel<T, vec16<T>()>(out_v.data(), m_v.data(), r_v.data(), xd.data(), w.data(),
                                                    b.data(), N, C);
        });
        report(std::string("layernorm_forward vec ") + P<T>::name,
               {{"out", host(out_v)}, {"mean", m_v}, {"rstd", r_v}}, {ref, mean, rstd}, P<T>::tol);
    }
    if (want(std::string("layernorm_backward ") + P<T>::name)) {
        vector<float> dout = act<T>(rnd((long)N * C)), i0 = act<T>(rnd((long)N * C)), w0 = rnd(C), b0 = rnd(C);
        vector<float> ri = i0, rw = w0, rb = b0;
        layernorm_backward(ri.data(), rw.data(), rb.data(), dout.data(), x.data(), w.data(), mean.data(), rstd.data(),
                           N, C);
        vector<T> dd = dev<T>(dout), di = dev<T>(i0);
        vector<float> gw = w0, gb = b0;
        vector<T> di_vec = di;  // C = 72: the vectorized kernel applies too
        emu::launch(grid(cdiv(N, WARPS_PER_BLOCK)), BLOCK, [&] {
            layernorm_backward_dinp_kernel<T, 1>(di.data(), dd.data(), xd.data(), w.data(), mean.data(), rstd.data(), N, C);
        });
        emu::launch(grid(cdiv(N, WARPS_PER_BLOCK)), BLOCK, [&] {
            layernorm_backward_dinp_kernel<T, vec16<T>()>(di_vec.data(), dd.data(), xd.data(), w.data(), mean.data(),
                                                  rstd.data(), N, C);
        });
        report(std::string("layernorm_backward vec ") + P<T>::name, {{"dinp", host(di_vec)}}, {ri}, P<T>::tol);
        // The column sums, scalar and vectorized (C = 72: the vectorized kernel applies too), twice
        // each: the tickets must be back at 0 after a launch, so a second one adds the same again.
        constexpr int V = vec16<T>();
        vector<int> tickets(cdiv(C, 32), 0);
        auto columns = [&](int v, vector<float> &ow, vector<float> &ob) {
            vector<float> pw((size_t)REDUCE_CHUNKS * C, NAN), pb((size_t)REDUCE_CHUNKS * C, NAN);
            emu::launch(grid(cdiv(C, 32 * v), REDUCE_CHUNKS), BLOCK, [&] {
                if (v == 1)
                    layernorm_backward_columns_kernel<T, 1>(ow.data(), ob.data(), pw.data(), pb.data(), tickets.data(),
                                                            dd.data(), xd.data(), mean.data(), rstd.data(), N, C);
                else
                    layernorm_backward_columns_kernel<T, V>(ow.data(), ob.data(), pw.data(), pb.data(), tickets.data(),
                                                            dd.data(), xd.data(), mean.data(), rstd.data(), N, C);
            });
            check_tickets(std::string("layernorm_backward tickets V=") + std::to_string(v) + " " + P<T>::name, tickets);
        };
        columns(1, gw, gb);
        report(std::string("layernorm_backward ") + P<T>::name, {{"dinp", host(di)}, {"dweight", gw}, {"dbias", gb}},
               {ri, rw, rb}, P<T>::tol);
        // The vectorized sums: the same sums in the same order, so the same bits.
        vector<float> gw_v = w0, gb_v = b0;
        columns(V, gw_v, gb_v);
        check_bits(std::string("layernorm_backward columns vec (dweight) ") + P<T>::name, gw_v, gw);
        check_bits(std::string("layernorm_backward columns vec (dbias) ") + P<T>::name, gb_v, gb);
        columns(V, gw_v, gb_v);
        for (int c = 0; c < C; c++) rw[c] += rw[c] - w0[c], rb[c] += rb[c] - b0[c];
        report(std::string("layernorm_backward columns twice ") + P<T>::name, {{"dweight", gw_v}, {"dbias", gb_v}},
               {rw, rb}, P<T>::tol);
    }
    if (want(std::string("colsum ") + P<T>::name)) {  // the matmul bias gradient
        const int OC = 296;   // a multiple of 8 (the vector kernel applies), not of 32*8 (a partial block)
        vector<float> d = act<T>(rnd((long)N * OC)), b0 = rnd(OC), ref = b0;
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) ref[o] += d[(long)n * OC + o];
        vector<T> dd = dev<T>(d);
        constexpr int V = vec16<T>();
        vector<int> tickets(cdiv(OC, 32), 0);
        auto colsum = [&](int v, vector<float> &got) {
            vector<float> part((size_t)REDUCE_CHUNKS * OC, NAN);
            emu::launch(grid(cdiv(OC, 32 * v), REDUCE_CHUNKS), BLOCK, [&] {
                if (v == 1) colsum_kernel<T, 1>(got.data(), part.data(), tickets.data(), dd.data(), N, OC);
                else colsum_kernel<T, V>(got.data(), part.data(), tickets.data(), dd.data(), N, OC);
            });
            check_tickets(std::string("colsum tickets V=") + std::to_string(v) + " " + P<T>::name, tickets);
        };
        vector<float> got = b0, got_v = b0;
        colsum(1, got);
        report(std::string("colsum ") + P<T>::name, {{"dbias", got}}, {ref}, P<T>::tol);
        colsum(V, got_v);
        check_bits(std::string("colsum vec ") + P<T>::name, got_v, got);
        colsum(V, got_v);
        for (int o = 0; o < OC; o++) ref[o] += ref[o] - b0[o];
        report(std::string("colsum twice ") + P<T>::name, {{"dbias", got_v}}, {ref}, P<T>::tol);
    }
}

// The LayerNorm kernels with the row in registers (LSST_LN=fused), V = 1 and the vector width,
// at widths that give 1 to 4 groups a lane: out, mean, rstd and dinp bitwise those of the split
// kernels (same arithmetic, same order); dweight, dbias against the CPU twin, bitwise the same for
// both V (their order follows the rows), and twice accumulates twice. `chunks` row chunks (the
// backward's grid; LN_CHUNKS on the GPU, fewer here so that warps take several rows at small N).
template <typename T> static void test_layernorm_fused(int N, int C, int chunks) {
    const std::string name = std::string("layernorm fused C=") + std::to_string(C) + " N=" + std::to_string(N) +
                             " chunks=" + std::to_string(chunks) + " " + P<T>::name;
    if (!want(name)) return;
    vector<float> x = act<T>(rnd((long)N * C, -2.0f, 3.0f)), w = rnd(C, 0.5f, 1.5f), b = rnd(C);
    vector<float> ref((long)N * C), mean(N), rstd(N);
    layernorm_forward(ref.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    vector<float> dout = act<T>(rnd((long)N * C)), i0 = act<T>(rnd((long)N * C)), w0 = rnd(C), b0 = rnd(C);
    vector<float> ri = i0, rw = w0, rb = b0;
    layernorm_backward(ri.data(), rw.data(), rb.data(), dout.data(), x.data(), w.data(), mean.data(), rstd.data(), N,
                       C);
    const vector<T> xd = dev<T>(x), dd = dev<T>(dout);
    vector<float> sums[2][2];   // [V = 1, vector][dweight, dbias]
    auto run = [&](auto vc, int vi) {
        constexpr int V = decltype(vc)::value;
        const std::string tag = name + " V=" + std::to_string(V);
        // the split kernels' results
        vector<T> out = poisoned<T>((long)N * C), di = dev<T>(i0);
        vector<float> m(N, NAN), r(N, NAN);
        emu::launch(grid(cdiv(N, WARPS_PER_BLOCK)), BLOCK, [&] {
            layernorm_forward_kernel<T, V>(out.data(), m.data(), r.data(), xd.data(), w.data(), b.data(), N, C);
        });
        emu::launch(grid(cdiv(N, WARPS_PER_BLOCK)), BLOCK, [&] {
            layernorm_backward_dinp_kernel<T, V>(di.data(), dd.data(), xd.data(), w.data(), mean.data(), rstd.data(),
                                                 N, C);
        });
        // the fused ones
        vector<T> out_f = poisoned<T>((long)N * C), di_f = dev<T>(i0);
        vector<float> m_f(N, NAN), r_f(N, NAN), pw((size_t)chunks * C, NAN), pb((size_t)chunks * C, NAN);
        vector<float> gw = w0, gb = b0;
        const bool fits = with_row_groups<V>(C, [&](auto g) {
            constexpr int G = decltype(g)::value;
            emu::launch(grid(cdiv(N, WARPS_PER_BLOCK)), BLOCK, [&] {
                layernorm_forward_rows_kernel<T, V, G>(out_f.data(), m_f.data(), r_f.data(), xd.data(), w.data(),
                                                       b.data(), N, C);
            });
            for (int twice = 0; twice < 2; twice++) {
                if (twice) di_f = dev<T>(i0);
                emu::launch(grid(1, chunks), BLOCK, [&] {
                    layernorm_backward_fused_kernel<T, V, G>(di_f.data(), pw.data(), pb.data(), dd.data(), xd.data(),
                                                             w.data(), mean.data(), rstd.data(), N, C);
                });
                emu::launch(grid(cdiv(C, 32)), BLOCK, [&] {
                    columns_finish_kernel(gw.data(), gb.data(), pw.data(), pb.data(), chunks, C);
                });
                if (!twice) sums[vi][0] = gw, sums[vi][1] = gb;
            }
        });
        if (!fits) {
            printf("# %s: a row does not fit in registers\n", tag.c_str());
            return;
        }
        report(tag + " forward", {{"out", host(out_f)}, {"mean", m_f}, {"rstd", r_f}}, {ref, mean, rstd}, P<T>::tol);
        check_bits(tag + " forward out", host(out_f), host(out), "the split kernel");
        check_bits(tag + " forward mean", m_f, m, "the split kernel");
        check_bits(tag + " forward rstd", r_f, r, "the split kernel");
        report(tag + " backward", {{"dinp", host(di_f)}, {"dweight", sums[vi][0]}, {"dbias", sums[vi][1]}},
               {ri, rw, rb}, P<T>::tol);
        check_bits(tag + " backward dinp", host(di_f), host(di), "the split kernel");
        vector<float> rw2 = rw, rb2 = rb;
        for (int c = 0; c < C; c++) rw2[c] += rw[c] - w0[c], rb2[c] += rb[c] - b0[c];
        report(tag + " backward twice", {{"dweight", gw}, {"dbias", gb}}, {rw2, rb2}, P<T>::tol);
    };
    run(std::integral_constant<int, 1>(), 0);
    if (C % vec16<T>() == 0) {
        run(std::integral_constant<int, vec16<T>()>(), 1);
        if (!sums[0][0].empty() && !sums[1][0].empty()) {
            check_bits(name + " dweight, V=1 against vector", sums[1][0], sums[0][0], "V = 1");
            check_bits(name + " dbias, V=1 against vector", sums[1][1], sums[0][1], "V = 1");
        }
    }
}

template <typename T> static void test_elementwise() {
    const long n = 1003;  // no multiple of 4 or 8: the vector kernels have a tail
    vector<float> x = act<T>(rnd(n, -4.0f, 4.0f)), y = act<T>(rnd(n));
    vector<T> xd = dev<T>(x), yd = dev<T>(y);
    if (want(std::string("gelu ") + P<T>::name)) {
        vector<float> ref(n), g0 = act<T>(rnd(n)), rg = g0;
        gelu_forward(ref.data(), x.data(), n);
        gelu_backward(rg.data(), x.data(), y.data(), n);
        vector<T> out = poisoned<T>(n), gi = dev<T>(g0);
        emu::launch(grid(2), BLOCK, [&] { gelu_forward_kernel<T, 1>(out.data(), xd.data(), n); });
        emu::launch(grid(2), BLOCK, [&] { gelu_backward_kernel<T, 1>(gi.data(), xd.data(), yd.data(), n); });
        report(std::string("gelu ") + P<T>::name, {{"out", host(out)}, {"dinp", host(gi)}}, {ref, rg}, P<T>::tol);
        // The vectorized kernels: vectors, then the tail (a grid of 3 blocks).
        vector<T> out_v = poisoned<T>(n), gi_v = dev<T>(g0);
        emu::launch(grid(3), BLOCK, [&] { gelu_forward_kernel<T, vec16<T>()>(out_v.data(), xd.data(), n); });
        emu::launch(grid(3), BLOCK, [&] { gelu_backward_kernel<T, vec16<T>()>(gi_v.data(), xd.data(), yd.data(), n); });
        report(std::string("gelu vec ") + P<T>::name, {{"out", host(out_v)}, {"dinp", host(gi_v)}}, {ref, rg},
               P<T>::tol);
        // In place: d = gelu'(x) d (the backward after a product that wrote d), scalar and vector.
        vector<float> rd(n, 0.0f);
        gelu_backward(rd.data(), x.data(), y.data(), n);
        vector<T> d1 = dev<T>(y), dv = dev<T>(y);
        emu::launch(grid(2), BLOCK, [&] { gelu_backward_inplace_kernel<T, 1>(d1.data(), xd.data(), n); });
        emu::launch(grid(3), BLOCK, [&] { gelu_backward_inplace_kernel<T, vec16<T>()>(dv.data(), xd.data(), n); });
        report(std::string("gelu in place ") + P<T>::name, {{"d", host(d1)}, {"d (vec)", host(dv)}}, {rd, rd},
               P<T>::tol);
    }
    if (want(std::string("residual ") + P<T>::name)) {
        vector<float> ref(n);
        residual_forward(ref.data(), x.data(), y.data(), n);
        vector<T> out = poisoned<T>(n);
        vector<T> out_v = poisoned<T>(n);
        emu::launch(grid(2), BLOCK, [&] { residual_forward_kernel<T, 1>(out.data(), xd.data(), yd.data(), n); });
        emu::launch(grid(1), BLOCK, [&] { residual_forward_kernel<T, vec16<T>()>(out_v.data(), xd.data(), yd.data(), n); });
        report(std::string("residual ") + P<T>::name, {{"out", host(out)}, {"out (vec)", host(out_v)}}, {ref, ref},
               P<T>::tol);
    }
}

template <typename T> static void test_xent(int V) {
    const int N = 19;
    const std::string name = std::string("softmax_xent ") + P<T>::name + " V=" + std::to_string(V);
    if (!want(name)) return;
    vector<float> logits = act<T>(rnd((long)N * V, -6.0f, 6.0f));
    vector<int> targets(N);
    for (int i = 0; i < N; i++) targets[i] = i % 7 == 3 ? -1 : (int)(rng.uniform(0.0f, 1.0f) * V) % V;
    vector<float> ref(N), grad = logits, ref2(N);
    softmax_xent_forward(ref.data(), logits.data(), targets.data(), N, V);
    softmax_xent_forward_backward(ref2.data(), grad.data(), targets.data(), N, V, 1.0f / N);
    vector<T> ld = dev<T>(logits);
    vector<float> losses(N, NAN), losses2(N, NAN);
    emu::launch(grid(cdiv(N, WARPS_PER_BLOCK)), BLOCK,
                [&] { softmax_xent_forward_kernel<T>(losses.data(), ld.data(), targets.data(), N, V); });
    emu::launch(grid(cdiv(N, WARPS_PER_BLOCK)), BLOCK, [&] {
        softmax_xent_forward_backward_kernel<T>(losses2.data(), ld.data(), targets.data(), N, V, 1.0f / N);
    });
    report(name, {{"losses", losses}, {"losses(fb)", losses2}, {"dlogits", host(ld)}}, {ref, ref2, grad}, P<T>::tol);
}

static void test_optimizer() {
    const long n = 1000;
    if (want("adamw")) {
        vector<float> p = rnd(n), g = rnd(n, -0.1f, 0.1f), m = rnd(n, -0.01f, 0.01f), v = rnd(n, 0.0f, 1e-3f);
        vector<float> rp = p, rm = m, rv = v;
        adamw_update(rp.data(), g.data(), rm.data(), rv.data(), n, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 7);
        const float c1 = (float)(1.0 / (1.0 - pow(0.9f, 7))), c2 = (float)(1.0 / (1.0 - pow(0.95f, 7)));
        vector<bf16_t> copy = poisoned<bf16_t>(n);
        emu::launch(grid(2), BLOCK, [&] {
            adamw_kernel(p.data(), copy.data(), g.data(), m.data(), v.data(), n, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f,
                         c1, c2);
        });
        vector<float> rcopy = act<bf16_t>(rp);
        report("adamw + bf16 copy", {{"params", p}, {"m", m}, {"v", v}, {"bf16", host(copy)}}, {rp, rm, rv, rcopy}, 1e-5);
        // The clipping factor inside: the same bits as the scale kernel on the gradients first.
        vector<float> p0 = rnd(n), g0 = rnd(n, -0.1f, 0.1f), m0 = rnd(n, -0.01f, 0.01f), v0 = rnd(n, 0.0f, 1e-3f);
        vector<float> p1 = p0, m1 = m0, v1 = v0, p2 = p0, g2 = g0, m2 = m0, v2 = v0;
        emu::launch(grid(2), BLOCK, [&] {
            adamw_kernel(p1.data(), nullptr, g0.data(), m1.data(), v1.data(), n, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.37f,
                         c1, c2);
        });
        emu::launch(grid(2), BLOCK, [&] { scale_kernel(g2.data(), n, 0.37f); });
        emu::launch(grid(2), BLOCK, [&] {
            adamw_kernel(p2.data(), nullptr, g2.data(), m2.data(), v2.data(), n, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f,
                         c1, c2);
        });
        check_bits("adamw grad_scale (params)", p1, p2, "scale_kernel, then adamw");
        check_bits("adamw grad_scale (m)", m1, m2, "scale_kernel, then adamw");
        check_bits("adamw grad_scale (v)", v1, v2, "scale_kernel, then adamw");
    }
    if (want("sum_squares")) {
        for (long len : {0L, 1L, 1000L, 70001L}) {
            vector<float> x = rnd(len > 0 ? len : 1);
            const double ref = sum_squares(x.data(), len);
            vector<double> partial(SUMSQ_BLOCKS, NAN), result(1, NAN);
            emu::launch(grid(SUMSQ_BLOCKS), BLOCK, [&] { sum_squares_partial_kernel(partial.data(), x.data(), len); });
            emu::launch(grid(1), BLOCK, [&] { sum_squares_final_kernel(result.data(), partial.data()); });
            report("sum_squares n=" + std::to_string(len), {{"sum", {(float)result[0]}}}, {{(float)ref}}, 1e-6);
        }
    }
    if (want("sum_squares_tensors")) {   // one launch over tensors end to end: each one's bits alone
        const long sizes[] = {0, 1, 1000, 5, 70001, 768};
        const int count = sizeof sizes / sizeof sizes[0];
        SumsqTensors t;
        t.off[0] = 0;
        for (int j = 0; j < count; j++) t.off[j + 1] = t.off[j] + sizes[j];
        vector<float> x = rnd(t.off[count]);
        vector<double> each(count), all(count, NAN), partial(SUMSQ_BLOCKS), partials((long)count * SUMSQ_BLOCKS);
        for (int j = 0; j < count; j++) {
            const float *xj = x.data() + t.off[j];
            emu::launch(grid(SUMSQ_BLOCKS), BLOCK, [&] { sum_squares_partial_kernel(partial.data(), xj, sizes[j]); });
            emu::launch(grid(1), BLOCK, [&] { sum_squares_final_kernel(each.data() + j, partial.data()); });
        }
        emu::launch(grid(SUMSQ_BLOCKS, count), BLOCK, [&] { sum_squares_tensors_kernel(partials.data(), x.data(), t); });
        emu::launch(grid(count), BLOCK, [&] { sum_squares_final_kernel(all.data(), partials.data()); });
        vector<float> each_bits(2 * count), all_bits(2 * count);   // the doubles' bytes
        memcpy(each_bits.data(), each.data(), count * sizeof(double));
        memcpy(all_bits.data(), all.data(), count * sizeof(double));
        check_bits("sum_squares_tensors", all_bits, each_bits, "one tensor at a time");
    }
    if (want("scale")) {
        vector<float> x = rnd(n), ref = x;
        scale_inplace(ref.data(), n, 0.37f);
        emu::launch(grid(2), BLOCK, [&] { scale_kernel(x.data(), n, 0.37f); });
        report("scale_inplace (exact)", {{"x", x}}, {ref}, 0.0);
    }
}

// The sequence group's row layouts (the NCCL exchanges): place against test_util.h's
// reference over a random order of positions, take back to the rank-ordered blocks. Exact.
static void test_seq_rows() {
    if (!want("seq_rows")) return;
    const int n = 3, B = 2, T = 5, W = 6, S = n * T;
    const long count = (long)n * B * T * W;
    vector<int> pos = rng.permutation(S);
    vector<float> xchg = act<bf16_t>(rnd(count, -100.0f, 100.0f));
    vector<bf16_t> xd = dev<bf16_t>(xchg), full = poisoned<bf16_t>(count);
    vector<float> back(count, NAN);
    emu::launch(grid(2), BLOCK, [&] { seq_place_rows_kernel(full.data(), xd.data(), pos.data(), B, T, S, W, count); });
    emu::launch(grid(3), BLOCK, [&] { seq_take_rows_kernel(back.data(), full.data(), pos.data(), B, T, S, W, count); });
    report("seq_place_rows / seq_take_rows (exact)", {{"full", host(full)}, {"xchg", back}},
           {seq_place_reference(xchg, pos, n, B, T, W), xchg}, 0.0);
}

int main(int argc, char **argv) {
    if (parse_test_args(argc, argv, NULL, &only)) return 2;
    emu::stack_bytes = 1 << 16;
    for (auto sched : {emu::ROUND_ROBIN, emu::WARP_GREEDY}) {
        emu::schedule = sched;
        test_embedding<float>(), test_embedding<bf16_t>();
        for (int N : {37, 1100}) test_layernorm<float>(N), test_layernorm<bf16_t>(N);
        // C 72: V = 1 with 3 groups a lane, vector with 1; 1000: bf16 vector 4 groups (the last one
        // partial; fp32 and V = 1 too wide: not run); 512: fp32 vector 4 groups. 300 rows in 7
        // chunks: up to 6 rows a warp, a short last chunk; LN_CHUNKS at N 37: most chunks empty.
        for (int C : {72, 1000}) test_layernorm_fused<float>(300, C, 7), test_layernorm_fused<bf16_t>(300, C, 7);
        test_layernorm_fused<float>(300, 512, 7), test_layernorm_fused<bf16_t>(37, 72, LN_CHUNKS);
        test_elementwise<float>(), test_elementwise<bf16_t>();
        for (int V : {256, 77}) test_xent<float>(V), test_xent<bf16_t>(V);
        test_optimizer();
        test_seq_rows();
    }
    printf("1..%d\n%d passed, %d failed\n", n_pass + n_fail, n_pass, n_fail);
    return n_fail ? 1 : 0;
}
