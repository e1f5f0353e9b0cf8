// Runs the CUDA attention kernels (kernels/cuda/attention_kernels.h, the very source nvcc compiles)
// on the CPU and compares them with the CPU twin (kernels/cpu/attention.c). For machines without
// a GPU: it checks the index arithmetic, fragment layouts, masking, online softmax, the tiling and
// the shared-memory pipelines of every tensor-core variant before a GPU ever runs them.
//
//   emulate_attention [--quick] [--only SUBSTRING]      (build: tests/gpu/emulate.sh)
//
// How: tests/gpu/emu.h (fibers for threads, PTX semantics for ldmatrix / mma.sync / cp.async /
// wgmma, several copy modes and schedules).
//
// What it cannot check: real timing, bank conflicts, register limits, and whether the hardware
// agrees with the PTX ISA text (the GPU test, tests/gpu/test_cuda_kernels.cu, does that).
#include "emu.h"
#include "test_util.h"
#include "cuda/attention_kernels.h"

// ---- driver --------------------------------------------------------------------------------------
typedef __nv_bfloat16 bf16_t;
using std::vector;

static bool quick = false;
static const char *only = NULL;
static int n_pass = 0, n_fail = 0;

static SplitMix64 rng = {0x1234567887654321ull};
static float bf16r(float x) { return __bfloat162float(__float2bfloat16(x)); }
static vector<float> random_bf16(long n, float lo, float hi) {
    vector<float> v(n);
    for (auto &x : v) x = bf16r(rng.uniform(lo, hi));
    return v;
}
static vector<bf16_t> to_bf16(const vector<float> &v) {
    vector<bf16_t> r(v.size());
    for (size_t i = 0; i < v.size(); i++) r[i] = __float2bfloat16(v[i]);
    return r;
}
static vector<float> to_float(const vector<bf16_t> &v) {
    vector<float> r(v.size());
    for (size_t i = 0; i < v.size(); i++) r[i] = __bfloat162float(v[i]);
    return r;
}

// Max of |got - ref| / (|ref| + rms(ref)); non-finite ref must match exactly; NaN counts.
static double compare(const vector<float> &got, const vector<float> &ref, long *bad, double *rms_err = NULL) {
    double ss = 0.0;
    long nf = 0;
    for (float r : ref)
        if (isfinite(r)) ss += (double)r * r, nf++;
    const double fl = nf && ss > 0 ? sqrt(ss / nf) : 1e-30;
    double err = 0.0, sse = 0.0;
    *bad = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        if (!isfinite(ref[i])) {
            if (!(got[i] == ref[i])) (*bad)++;
            continue;
        }
        if (!isfinite(got[i])) {
            (*bad)++;
            continue;
        }
        err = std::max(err, fabs((double)got[i] - ref[i]) / (fabs(ref[i]) + fl));
        sse += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
    }
    if (rms_err) *rms_err = nf ? sqrt(sse / nf) / fl : 0.0;  // rms error / rms value
    return err;
}

// Tolerances for bf16 attention: max error 5e-2 (single elements whose value is small next to the
// rounding of the bf16 terms summed into them) and rms error 5e-3 (bf16 rounding alone gives
// ~2e-3; an indexing or masking bug gives far more on the elements it touches).
static const double MAX_TOL = 5e-2, RMS_TOL = 5e-3;

static void report(const std::string &name, const vector<std::pair<const char *, vector<float>>> &got,
                   const vector<vector<float>> &ref, double tol = MAX_TOL, double rms_tol = RMS_TOL) {
    bool ok = true;
    std::string detail;
    for (size_t i = 0; i < got.size(); i++) {
        long bad;
        double rms;
        const double e = compare(got[i].second, ref[i], &bad, &rms);
        ok = ok && bad == 0 && e <= tol && rms <= rms_tol;
        char buf[128];
        snprintf(buf, sizeof buf, "%s%s err %.2e (rms %.1e)%s", i ? ", " : "", got[i].first, e, rms, bad ? " BAD" : "");
        detail += buf;
        if (bad) detail += " (" + std::to_string(bad) + " non-finite/mismatched)";
    }
    (ok ? n_pass : n_fail)++;
    printf("%s %d - %s (%s; tol %.0e, rms %.0e)\n", ok ? "ok" : "not ok", n_pass + n_fail, name.c_str(),
           detail.c_str(), tol, rms_tol);
    fflush(stdout);
}

struct Case {
    const char *name;
    int B, NH, Tq, Tk;
    bool packed;
    vector<int> pos;
};

static vector<Case> cases() {
    vector<Case> cs;
    const int s = quick ? 2 : 1;
    {
        Case c = {"self", 1, 2, 160 / s, 160 / s, true, {}};
        for (int t = 0; t < c.Tq; t++) c.pos.push_back(t);
        cs.push_back(c);
    }
    {
        Case c = {"lss-segment", 1, 1, 80 / s, 304 / s, false, {}};
        for (int t = 0; t < c.Tq; t++) c.pos.push_back(2 * c.Tq + 8 + t);
        cs.push_back(c);
    }
    {
        const int chunk = 48 / s;
        Case c = {"zigzag", 2, 1, 2 * chunk, 8 * chunk, false, {}};
        for (int t = 0; t < chunk; t++) c.pos.push_back(chunk + t);
        for (int t = 0; t < chunk; t++) c.pos.push_back(6 * chunk + t);
        cs.push_back(c);
    }
    if (emu::copy_mode == emu::EAGER && emu::schedule == emu::ROUND_ROBIN) {
        // Taller than the largest query block (256 rows), so every row of such a CTA is checked
        // (a wrong row mapping that repeats rows shows only there); one schedule: it is slow.
        Case c = {"tall", 1, 1, 264, 264, false, {}};
        for (int t = 0; t < c.Tq; t++) c.pos.push_back(t);
        cs.push_back(c);
    }
    {
        // Query blocks (up to 128 rows) that see no key at all: their dq rows are written as zeros.
        // Then blocks whose first row sees all but the last key of a 64- (128-) key block: its
        // position 62 (126) is one short of the dK/dV kernel's all-visible shortcut.
        Case c = {"masked-start", 1, 1, 256, 190, false, {}};
        for (int t = 0; t < c.Tq; t++) c.pos.push_back(t < 128 ? -1 : t - 66);
        cs.push_back(c);
    }
    {
        Case c = {"odd-positions", 1, 1, 70 / s, 150 / s, false, {}};
        for (int t = 0; t < c.Tq; t++) c.pos.push_back(t % 9 == 4 ? -1 : t % 13 == 5 ? c.Tk + 7 : (c.Tk - 1 - 2 * t));
        cs.push_back(c);
    }
    return cs;
}

// Problem data of one case at one head size: bf16-rounded inputs, the CPU reference.
struct Problem {
    const Case *c;
    int hs, C, ldq, ldkv;
    long nq, nkv;
    // gq_ref, gkv_ref: the gradients added to q0, kv0 (the outputs' values before an accumulating
    // call); gq_w, gkv_w: the gradients alone (a writing call's).
    vector<float> qh, kvh, dout, out_ref, lse_ref, gq_ref, gkv_ref, q0, kv0, gq_w, gkv_w;
    vector<bf16_t> qb, kvb, doutb;
    const float *q() const { return qh.data(); }
    const float *k() const { return c->packed ? qh.data() + C : kvh.data(); }
    const float *v() const { return c->packed ? qh.data() + 2 * C : kvh.data() + C; }
};

static vector<float> accum_init(const vector<float> &g) {
    double ss = 0.0;
    for (float x : g) ss += (double)x * x;
    const float rms = g.empty() ? 1.0f : (float)sqrt(ss / g.size()) + 1e-6f;
    return random_bf16((long)g.size(), -rms, rms);
}

static Problem make_problem(const Case &c, int hs) {
    Problem p;
    p.c = &c, p.hs = hs, p.C = c.NH * hs;
    p.ldq = c.packed ? 3 * p.C : p.C, p.ldkv = c.packed ? 3 * p.C : 2 * p.C;
    p.nq = (long)c.B * c.Tq * p.ldq, p.nkv = c.packed ? 1 : (long)c.B * c.Tk * p.ldkv;
    p.qh = random_bf16(p.nq, -2.0f, 2.0f), p.kvh = random_bf16(p.nkv, -2.0f, 2.0f);
    p.dout = random_bf16((long)c.B * c.Tq * p.C, -1.0f, 1.0f);
    p.out_ref.resize((long)c.B * c.Tq * p.C), p.lse_ref.resize((long)c.B * c.NH * c.Tq);
    attention_forward(p.out_ref.data(), p.lse_ref.data(), p.q(), p.k(), p.v(), c.pos.data(), c.B, c.Tq, c.Tk, c.NH,
                      hs, p.ldq, p.ldkv);
    p.gq_ref.assign(p.nq, 0.0f), p.gkv_ref.assign(p.nkv, 0.0f);
    float *gq = p.gq_ref.data(), *gk = c.packed ? gq + p.C : p.gkv_ref.data();
    float *gv = c.packed ? gq + 2 * p.C : p.gkv_ref.data() + p.C;
    attention_backward(gq, gk, gv, p.dout.data(), p.out_ref.data(), p.lse_ref.data(), p.q(), p.k(), p.v(),
                       c.pos.data(), c.B, c.Tq, c.Tk, c.NH, hs, p.ldq, p.ldkv);
    p.gq_w = p.gq_ref, p.gkv_w = p.gkv_ref;
    p.q0 = accum_init(p.gq_ref), p.kv0 = accum_init(p.gkv_ref);
    for (long i = 0; i < p.nq; i++) p.gq_ref[i] += p.q0[i];
    for (long i = 0; i < p.nkv; i++) p.gkv_ref[i] += p.kv0[i];
    p.qb = to_bf16(p.qh), p.kvb = to_bf16(p.kvh), p.doutb = to_bf16(p.dout);
    return p;
}

static AttnArgs base_args(const Problem &p, const int *pos) {
    AttnArgs a = {};
    a.q = p.qb.data();
    a.k = p.c->packed ? p.qb.data() + p.C : p.kvb.data();
    a.v = p.c->packed ? p.qb.data() + 2 * p.C : p.kvb.data() + p.C;
    a.q_pos = pos;
    a.B = p.c->B, a.Tq = p.c->Tq, a.Tk = p.c->Tk, a.NH = p.c->NH, a.hs = p.hs, a.ldq = p.ldq, a.ldkv = p.ldkv;
    a.scale = 1.0f / sqrtf((float)p.hs);
    a.scale_log2 = a.scale * 1.44269504088896341f;
    return a;
}

static unsigned cdiv(long a, long b) { return (unsigned)((a + b - 1) / b); }

static const char *mode_name() {
    if (emu::schedule == emu::WARP_GREEDY) return emu::copy_mode == emu::EAGER ? "eager, warp-greedy" : "lazy, warp-greedy";
    return emu::copy_mode == emu::EAGER ? "eager" : "lazy";
}

template <int HS, int MT, int NW, int BC, bool QR, int WG>
static void run_fwd_variant(const Problem &p, vector<float> &out, vector<float> &lse) {
    const Case &c = *p.c;
    vector<bf16_t> outb((long)c.B * c.Tq * p.C, __float2bfloat16(NAN));
    lse.assign((long)c.B * c.NH * c.Tq, NAN);
    AttnArgs a = base_args(p, c.pos.data());
    a.out = outb.data(), a.lse = lse.data();
    memset(attn_smem, 0xFF, sizeof attn_smem);  // stale shared memory is NaN, as poison
    EmuDim3 grid;
    grid.x = c.B * c.NH, grid.y = cdiv(c.Tq, 16 * MT * NW), grid.z = 1;
    emu::launch(grid, 32 * NW, [&] { attn_fwd_kernel<HS, MT, NW, BC, QR, WG>(a); });
    out = to_float(outb);
}

template <int HS, int MT, int NW, int BC, bool QR, int WG> static void test_fwd_variant() {
    for (const Case &c : cases()) {
        char name[200];
        snprintf(name, sizeof name, "fwd hs=%d MT=%d NW=%d BC=%d QR=%d%s %s [%s]", HS, MT, NW, BC, (int)QR,
                 WG == 2 ? " wgmma pipelined" : WG ? " wgmma" : "", c.name, mode_name());
        if (only && !strstr(name, only)) continue;
        const Problem p = make_problem(c, HS);
        vector<float> out, lse;
        run_fwd_variant<HS, MT, NW, BC, QR, WG>(p, out, lse);
        report(name, {{"out", out}, {"lse", lse}}, {p.out_ref, p.lse_ref});
    }
}

// The backward's outputs before a call: q0, kv0 (accumulated into), or NaN (written: every element
// must be). In place: the kernels' arguments keep pointing at them.
static void init_outputs(const Problem &p, bool write, vector<bf16_t> &gq, vector<bf16_t> &gkv) {
    gq.resize(p.q0.size()), gkv.resize(p.kv0.size());
    for (size_t i = 0; i < gq.size(); i++) gq[i] = __float2bfloat16(write ? NAN : p.q0[i]);
    for (size_t i = 0; i < gkv.size(); i++) gkv[i] = __float2bfloat16(write ? NAN : p.kv0[i]);
}

template <int HS, int NW, int BQ, bool KVR, int NWQ, int BK, bool QOR, int WG> static void test_bwd_variant() {
    // The lazy schedule checks the writing backward (cuda_attention_backward_write_bf16), the
    // others the accumulating one.
    const bool write = emu::copy_mode == emu::LAZY;
    for (const Case &c : cases()) {
        char name[200];
        snprintf(name, sizeof name, "bwd hs=%d NW=%d BQ=%d KVR=%d NWQ=%d BK=%d QOR=%d%s %s%s [%s]", HS, NW, BQ,
                 (int)KVR, NWQ, BK, (int)QOR, WG == 3 ? " wgmma pipelined both" : WG == 2 ? " wgmma pipelined" : WG ? " wgmma" : "",
                 c.name, write ? " write" : "", mode_name());
        if (only && !strstr(name, only)) continue;
        const Problem p = make_problem(c, HS);
        // Forward with the default variant of the head size gives out (bf16) and lse, as on the GPU.
        vector<float> out_f, lse;
        run_fwd_variant<HS, (HS == 64 ? 2 : 1), (HS == 128 ? 8 : 4), 64, true, 0>(p, out_f, lse);
        const vector<bf16_t> outb = to_bf16(out_f);
        vector<float> dsum((long)c.B * c.NH * c.Tq, NAN);
        const int nqb16 = (c.Tq + MIN_QBLOCK - 1) / MIN_QBLOCK;
        vector<int> qmax(2 * nqb16, -7);   // qmax, then qmin (as attention.cu's scratch)
        vector<bf16_t> gq, gkv;
        init_outputs(p, write, gq, gkv);
        AttnArgs a = base_args(p, c.pos.data());
        a.write = write;
        a.dout = p.doutb.data(), a.out_c = outb.data(), a.lse_c = lse.data(), a.dsum = dsum.data();
        a.qmax = qmax.data(), a.qmin = qmax.data() + nqb16;
        a.dq = gq.data();
        a.dk = c.packed ? gq.data() + p.C : gkv.data();
        a.dv = c.packed ? gq.data() + 2 * p.C : gkv.data() + p.C;
        // As attention.cu's launch_bwd: dQ in its own kernel, or in the dK/dV kernel (ordered, in
        // CHAINS chains, atomic or fixed point); the kernels' modes; the slots of dq_acc.
        constexpr int DQ = dq_kind(NWQ), CHAINS = dq_chains(NWQ, BK), FIX = dq_fix_bits(NWQ);
        constexpr int MODE = dq_fix_mode(NWQ);
        constexpr int WG_KV = WG == 3 ? 3 : WG != 0, WG_Q = WG >= 2 ? 2 : WG;
        const size_t rows = (size_t)c.B * c.NH * c.Tq, slot = rows * HS;
        vector<int> row_exp(DQ == DQ_FIXED ? rows : 0, -999), row_bad(row_exp.size(), -1);
        vector<unsigned> kv_max(2 * c.B * c.NH, 0);
        if (DQ == DQ_FIXED) a.dq_exp = row_exp.data(), a.dq_bad = row_bad.data(), a.kv_max = kv_max.data();
        auto bounds = [&](const bf16_t *dout) {   // D; fixed point: the heads' Kmax, Vmax, the rows' exponents
            a.dout = dout;
            if constexpr (DQ == DQ_FIXED) {   // a small grid: the grid-stride loop too
                std::fill(kv_max.begin(), kv_max.end(), 0u);
                EmuDim3 g0;
                g0.x = c.B * c.NH, g0.y = 2;
                emu::launch(g0, 64, [&] { attn_kv_bound_kernel<bf16_t>(kv_max.data(), a.k, a.v, c.Tk, c.NH, HS, p.ldkv); });
            }
            EmuDim3 g1;
            g1.x = cdiv((long)c.B * c.NH * c.Tq, 8), g1.y = 1;
            emu::launch(g1, 256, [&] {
                attn_dsum_kernel<bf16_t>(dsum.data(), dout, outb.data(), c.B, c.Tq, c.NH, HS, a.dq_exp, a.dq_bad,
                                         a.kv_max, FIX - 2);
            });
        };
        bounds(p.doutb.data());
        EmuDim3 g2;
        g2.x = cdiv(cdiv(c.Tq, BQ), 128), g2.y = 1;
        emu::launch(g2, 128, [&] {
            attn_qblock_max_kernel(qmax.data(), qmax.data() + nqb16, c.pos.data(), c.Tq, c.Tk, BQ);
        });
        vector<int> sem(DQ == DQ_ORDERED ? 1 + (size_t)c.B * c.NH * cdiv(c.Tq, BQ) * CHAINS : 0, 0);   // ticket, semaphores
        // dq_acc: fp32 (NaN: an ordered sum must write before it reads), or the zeroed integers.
        vector<float> acc(DQ != DQ_SPLIT ? slot * CHAINS * dq_acc_bytes(NWQ) / 4 : 0, DQ == DQ_ORDERED ? NAN : 0.0f);
        a.dq_ticket = sem.data(), a.dq_sem = sem.data() + 1, a.dq_acc = acc.data();
        auto zero_heads = [&](bf16_t *x, int ld, long rows) {
            for (long r = 0; r < rows; r++) std::fill(x + r * ld, x + r * ld + p.C, __float2bfloat16(0.0f));
        };
        auto dkdv_dq = [&] {
            if (DQ != DQ_SPLIT && write) {   // as launch_bwd: the outputs a fused kernel adds into
                zero_heads(a.dk, p.ldkv, (long)c.B * c.Tk), zero_heads(a.dv, p.ldkv, (long)c.B * c.Tk);
                if (DQ == DQ_ORDERED && CHAINS == 1) zero_heads(a.dq, p.ldq, (long)c.B * c.Tq);
            }
            memset(attn_smem, 0xFF, sizeof attn_smem);
            EmuDim3 g3;
            g3.x = c.B * c.NH, g3.y = cdiv(c.Tk, 16 * NW);
            emu::launch(g3, 32 * NW, [&] { attn_bwd_dkdv_kernel<HS, NW, BQ, KVR, DQ, WG_KV, CHAINS, FIX, MODE>(a); });
            EmuDim3 g5;
            g5.x = 3, g5.y = 1;   // fewer threads than pairs: the grid-stride loop too
            if constexpr (DQ == DQ_ATOMIC || DQ == DQ_FIXED || CHAINS > 1)
                emu::launch(g5, 64, [&] { attn_dq_finish_kernel<FIX>(a, CHAINS, BQ, 16 * NW); });
        };
        dkdv_dq();
        if constexpr (DQ == DQ_SPLIT) {
            memset(attn_smem, 0xFF, sizeof attn_smem);
            EmuDim3 g4;
            g4.x = c.B * c.NH, g4.y = cdiv(c.Tq, 16 * NWQ);
            emu::launch(g4, 32 * NWQ, [&] { attn_bwd_dq_kernel<HS, NWQ, BK, QOR, WG_Q>(a); });
        }
        if constexpr (DQ == DQ_FIXED) {   // the blocks (so the adds) in reverse order: the same bits
            const vector<bf16_t> gq1 = gq, gkv1 = gkv;
            const vector<float> acc1 = acc;   // the integer sums themselves (fp32 ones would differ here)
            init_outputs(p, write, gq, gkv);
            std::fill(acc.begin(), acc.end(), 0.0f);
            emu::reverse_blocks = true;
            dkdv_dq();
            emu::reverse_blocks = false;
            const bool same = !memcmp(gq.data(), gq1.data(), gq.size() * sizeof(bf16_t)) &&
                              !memcmp(gkv.data(), gkv1.data(), gkv.size() * sizeof(bf16_t)) &&
                              !memcmp(acc.data(), acc1.data(), acc.size() * sizeof(float));
            (same ? n_pass : n_fail)++;
            printf("%s %d - %s: the same bits with the blocks in reverse order\n", same ? "ok" : "not ok",
                   n_pass + n_fail, name);
        }
        const vector<float> &rq = write ? p.gq_w : p.gq_ref, &rkv = write ? p.gkv_w : p.gkv_ref;
        if (c.packed) report(name, {{"dqkv", to_float(gq)}}, {rq});
        else report(name, {{"dq", to_float(gq)}, {"dkv", to_float(gkv)}}, {rq, rkv});
        // A NaN in one row of dO (caught by the row's bound) or of Q (by the adds' range check): that
        // dq row NaN, no other.
        for (int in_q = 0; DQ == DQ_FIXED && !strcmp(c.name, "lss-segment") && in_q < 2; in_q++) {
            vector<bf16_t> dout_nan = p.doutb, q_nan = p.qb;
            const int r0 = c.Tq / 2;   // (b 0, row r0, head 0)
            (in_q ? q_nan[(long)r0 * p.ldq + 3] : dout_nan[(long)r0 * p.C + 3]) = __float2bfloat16(NAN);
            a.q = q_nan.data();
            bounds(dout_nan.data());
            init_outputs(p, write, gq, gkv);
            std::fill(acc.begin(), acc.end(), 0.0f);
            dkdv_dq();
            a.q = p.qb.data();
            long wrong = 0;
            for (long i = 0; i < (long)gq.size(); i++) {
                const long t = i / p.ldq, col = i % p.ldq;
                wrong += isnan(__bfloat162float(gq[i])) != (t == r0 && col < HS);   // (B 1 here)
            }
            (wrong ? n_fail : n_pass)++;
            printf("%s %d - %s: a NaN in %s row %d makes that row's dq NaN and no other (%ld wrong)\n",
                   wrong ? "not ok" : "ok", n_pass + n_fail, name, in_q ? "Q" : "dO", r0, wrong);
        }
    }
}

// The CUDA-core kernels too (they are what sm_70 and odd head sizes run).
static void test_generic(int hs, bool write) {
    for (const Case &c : cases()) {
        char name[200];
        snprintf(name, sizeof name, "cuda-core fwd+bwd hs=%d %s%s", hs, c.name, write ? " write" : "");
        if (only && !strstr(name, only)) continue;
        const Problem p = make_problem(c, hs);
        vector<bf16_t> outb((long)c.B * c.Tq * p.C, __float2bfloat16(NAN));
        vector<float> lse((long)c.B * c.NH * c.Tq, NAN), dsum(lse.size(), NAN);
        const bf16_t *q = p.qb.data(), *k = c.packed ? q + p.C : p.kvb.data();
        const bf16_t *v = c.packed ? q + 2 * p.C : p.kvb.data() + p.C;
        const float scale = 1.0f / sqrtf((float)hs);
        EmuDim3 g;
        g.x = cdiv((long)c.B * c.NH * c.Tq, GEN_WARPS), g.y = 1;
        emu::launch(g, GEN_WARPS * 32, [&] {
            gen_forward_kernel<bf16_t>(outb.data(), lse.data(), q, k, v, c.pos.data(), c.B, c.Tq, c.Tk, c.NH, hs,
                                       p.ldq, p.ldkv, scale);
        });
        EmuDim3 g1;
        g1.x = cdiv((long)c.B * c.NH * c.Tq, 8), g1.y = 1;
        emu::launch(g1, 256, [&] {
            attn_dsum_kernel<bf16_t>(dsum.data(), p.doutb.data(), outb.data(), c.B, c.Tq, c.NH, hs);
        });
        vector<bf16_t> gq, gkv;
        init_outputs(p, write, gq, gkv);
        bf16_t *dq = gq.data(), *dk = c.packed ? gq.data() + p.C : gkv.data();
        bf16_t *dv = c.packed ? gq.data() + 2 * p.C : gkv.data() + p.C;
        emu::launch(g, GEN_WARPS * 32, [&] {
            gen_backward_dq_kernel<bf16_t>(dq, p.doutb.data(), lse.data(), dsum.data(), q, k, v, c.pos.data(), c.B,
                                           c.Tq, c.Tk, c.NH, hs, p.ldq, p.ldkv, scale, write);
        });
        EmuDim3 g2;
        g2.x = cdiv((long)c.B * c.NH * c.Tk, GEN_WARPS), g2.y = 1;
        emu::launch(g2, GEN_WARPS * 32, [&] {
            gen_backward_dkv_kernel<bf16_t>(dk, dv, p.doutb.data(), lse.data(), dsum.data(), q, k, v, c.pos.data(),
                                            c.B, c.Tq, c.Tk, c.NH, hs, p.ldq, p.ldkv, scale, write);
        });
        vector<std::pair<const char *, vector<float>>> got = {{"out", to_float(outb)}, {"lse", lse}, {"dq", to_float(gq)}};
        vector<vector<float>> ref = {p.out_ref, p.lse_ref, write ? p.gq_w : p.gq_ref};
        if (!c.packed) got.push_back({"dkv", to_float(gkv)}), ref.push_back(write ? p.gkv_w : p.gkv_ref);
        report(name, got, ref);
    }
}

#define RUN_FWD(HS, MT, NW, BC, QR, WG) test_fwd_variant<HS, MT, NW, BC, QR, WG>();
#define RUN_BWD(HS, NW, BQ, KVR, NWQ, BK, QOR, WG) test_bwd_variant<HS, NW, BQ, KVR, NWQ, BK, QOR, WG>();

int main(int argc, char **argv) {
    if (parse_test_args(argc, argv, &quick, &only)) return 2;
    for (int hs : {32, 48})
        for (bool write : {false, true}) test_generic(hs, write);
    // cp.async at issue / at the wait; warps in near lockstep / one warp racing ahead.
    const std::pair<emu::CopyMode, emu::Schedule> modes[] = {
        {emu::EAGER, emu::ROUND_ROBIN}, {emu::LAZY, emu::ROUND_ROBIN}, {emu::EAGER, emu::WARP_GREEDY}};
    for (auto m : modes) {
        emu::copy_mode = m.first, emu::schedule = m.second;
        ATTN_FWD_VARIANTS(RUN_FWD)
        ATTN_BWD_VARIANTS(RUN_BWD)
    }
    printf("1..%d\n%d passed, %d failed\n", n_pass + n_fail, n_pass, n_fail);
    return n_fail ? 1 : 0;
}
