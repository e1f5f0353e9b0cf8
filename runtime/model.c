// The model: parameter/activation tables, initialization, the layout of tensors
// across the sequence group, and the LSS forward and backward passes with their
// communication at two named points per layer:
//   forward:  ONE all-gather of [K|V] inside the sequence group
//   backward: ONE reduce-scatter of d[K|V] inside the sequence group
// (The megatron-sp passes are in megatron.c.)
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "kernels.h"
#include "memory.h"

const char *const param_names[NUM_PARAM_TENSORS] = {
    "wte", "h.ln1w", "h.ln1b", "h.qkvw", "h.qkvb", "h.attprojw", "h.attprojb", "h.ln2w", "h.ln2b",
    "h.fcw", "h.fcb", "h.fcprojw", "h.fcprojb", "lnfw", "lnfb", "wout", "wpe"};

void model_param_shape(const Model *m, int i, int *ndim, long shape[4]) {
    long L = m->L, C = m->C, F = m->F, V = m->V, S = m->S;
    long shapes[NUM_PARAM_TENSORS][4] = {{V, C}, {L, C}, {L, C}, {L, 3 * C, C}, {L, 3 * C}, {L, C, C},
                                         {L, C}, {L, C}, {L, C}, {L, F, C}, {L, F}, {L, C, F},
                                         {L, C}, {C}, {C}, {V, C}, {S, C}};
    int nd[NUM_PARAM_TENSORS] = {2, 2, 2, 3, 2, 3, 2, 2, 2, 3, 2, 3, 2, 1, 1, 2, 2};
    *ndim = nd[i];
    memcpy(shape, shapes[i], sizeof shapes[i]);
}

size_t model_full_size(const Model *m, int i) {
    int nd;
    long shape[4];
    model_param_shape(m, i, &nd, shape);
    size_t n = 1;
    for (int d = 0; d < nd; d++) n *= (size_t)shape[d];
    return n;
}

// Which tensors megatron-sp splits, as (A, M, I) views of the full tensor with M split.
static void set_layout(Model *m) {
    long L = m->L, C = m->C, F = m->F;
    long split[NUM_PARAM_TENSORS][3] = {[P_QKVW] = {3 * L, C, C},     [P_QKVB] = {3 * L, C, 1},
                                        [P_ATTPROJW] = {L * C, C, 1}, [P_FCW] = {L, F, C},
                                        [P_FCB] = {L, F, 1},          [P_FCPROJW] = {L * C, F, 1}};
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        m->shard[i] = i == PARAM_WPE ? SHARD_ROWS : (m->tp > 1 && split[i][0]) ? SHARD_SPLIT : SHARD_NONE;
        memcpy(m->split[i], split[i], sizeof split[i]);
        m->param_sizes[i] = model_full_size(m, i);
        if (m->shard[i] == SHARD_SPLIT) m->param_sizes[i] /= (size_t)m->tp;
        if (i == PARAM_WPE) m->param_sizes[i] = (size_t)m->T * (size_t)m->C;
    }
}

// Index in the full tensor of element j of rank r's share of tensor i.
static size_t full_index(const Model *m, int i, int r, size_t j) {
    if (m->shard[i] == SHARD_ROWS) return (size_t)m->pos_of_rank[(size_t)r * m->T + j / m->C] * m->C + j % m->C;
    if (m->shard[i] == SHARD_NONE) return j;
    size_t M = (size_t)m->split[i][1], I = (size_t)m->split[i][2], Ms = M / (size_t)m->tp;
    size_t a = j / (Ms * I), rem = j % (Ms * I);
    return (a * M + (size_t)r * Ms + rem / I) * I + rem % I;
}

void model_gather_tensor(const Model *m, Comm *comm, int i, const float *local, float *full, float *xchg) {
    size_t n = m->param_sizes[i];
    if (m->shard[i] == SHARD_NONE) { memcpy(full, local, n * sizeof(float)); return; }
    comm_allgather(comm, GROUP_SEQ, local, xchg, (long)n);
    for (int r = 0; r < m->sp_size; r++)
        for (size_t j = 0; j < n; j++) full[full_index(m, i, r, j)] = xchg[(size_t)r * n + j];
}

void model_slice_tensor(const Model *m, int i, const float *full, float *local) {
    for (size_t j = 0; j < m->param_sizes[i]; j++) local[j] = full[full_index(m, i, m->sp_rank, j)];
}

static void carve_params(ParamTensors *p, float *mem, const size_t *sz) {
    float **ptrs[NUM_PARAM_TENSORS] = {&p->wte, &p->ln1w, &p->ln1b, &p->qkvw, &p->qkvb, &p->attprojw,
                                       &p->attprojb, &p->ln2w, &p->ln2b, &p->fcw, &p->fcb, &p->fcprojw,
                                       &p->fcprojb, &p->lnfw, &p->lnfb, &p->wout, &p->wpe};
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        *ptrs[i] = mem;
        mem += sz[i];
    }
}

// Carve `n` tensors of the given sizes out of one buffer (NULL: just count); returns the total.
static size_t carve(float *mem, float ***ptrs, const size_t *sizes, int n) {
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (mem) *ptrs[i] = mem + total;
        total += sizes[i];
    }
    return total;
}

static size_t carve_acts(Activations *a, float *mem, const Model *m) {
    size_t L = (size_t)m->L, BT = (size_t)m->B * (size_t)m->T, C = (size_t)m->C, Cl = (size_t)m->Cl;
    size_t BS = (size_t)m->B * (size_t)m->S;
    bool mg = m->scheme == SCHEME_MEGATRON_SP;
    size_t Bw = mg ? BS : BT; // rows of the head/column-parallel region
    size_t kv_layers = m->cfg.kv == KV_REGATHER ? 1 : L; // regather: one buffer, refilled per layer
    float **ptrs[] = {&a->encoded, &a->ln1, &a->ln1_mean, &a->ln1_rstd, &a->residual2, &a->ln2, &a->ln2_mean,
                      &a->ln2_rstd, &a->residual3, &a->lnf, &a->lnf_mean, &a->lnf_rstd, &a->logits, &a->losses,
                      &a->q, &a->kv, &a->kv_full, &a->ln1_full, &a->qkv, &a->ln2_full, &a->atty, &a->att_lse,
                      &a->fch, &a->fch_gelu};
    size_t sizes[] = {BT * C, L * BT * C, L * BT, L * BT, L * BT * C, L * BT * C, L * BT, L * BT, L * BT * C,
                      BT * C, BT, BT, BT * (size_t)m->V, BT,
                      mg ? 0 : L * BT * C, mg ? 0 : L * BT * 2 * C, mg || m->sp_size == 1 ? 0 : kv_layers * BS * 2 * C,
                      mg ? L * BS * C : 0, mg ? L * BS * 3 * Cl : 0, mg ? L * BS * C : 0,
                      L * Bw * Cl, L * Bw * (size_t)m->NHl, L * Bw * (size_t)m->Fl, L * Bw * (size_t)m->Fl};
    return carve(mem, ptrs, sizes, (int)(sizeof sizes / sizeof sizes[0]));
}

static size_t carve_scratch(Scratch *s, float *mem, const Model *m) {
    size_t BT = (size_t)m->B * (size_t)m->T, C = (size_t)m->C, Cl = (size_t)m->Cl, Fl = (size_t)m->Fl;
    size_t BS = (size_t)m->B * (size_t)m->S;
    bool mg = m->scheme == SCHEME_MEGATRON_SP;
    size_t W = mg ? C : 2 * C, Bw = mg ? BS : BT;
    float **ptrs[] = {&s->dres, &s->dx, &s->tmp, &s->xchg, &s->seq_full, &s->dseq_full,
                      &s->datty, &s->dq, &s->dkv, &s->dfch, &s->dfch_gelu};
    size_t xchg = m->sp_size > 1 ? BS * W : 0;              // only exchanged when there are peers
    size_t seq_full = mg || m->sp_size > 1 ? BS * W : 0;    // lss with one rank: d[K|V] goes to dkv
    size_t sizes[] = {BT * C, BT * C, BT * C, xchg, seq_full, mg ? BS * C : 0,
                      Bw * Cl, mg ? BS * 3 * Cl : BT * C, mg ? 0 : BT * 2 * C, Bw * Fl, Bw * Fl};
    return carve(mem, ptrs, sizes, (int)(sizeof sizes / sizeof sizes[0]));
}

// Global position of local token t of sequence rank r (ARCHITECTURE §4.2):
// contiguous segments, or zigzag chunks r and 2N-1-r of length S/(2N).
static int global_pos(int r, int t, int N, int S, Balance balance) {
    int T = S / N;
    if (balance != BALANCE_ZIGZAG) return r * T + t;
    int chunk = S / (2 * N);
    return t < chunk ? r * chunk + t : (2 * N - 1 - r) * chunk + (t - chunk);
}

static void init_positions(Model *m) {
    size_t T = (size_t)m->T;
    m->pos = rt_calloc(T, sizeof(int));
    m->pos_of_rank = rt_calloc((size_t)m->sp_size * T, sizeof(int));
    m->pos_full = rt_calloc((size_t)m->S, sizeof(int));
    for (int r = 0; r < m->sp_size; r++)
        for (size_t t = 0; t < T; t++) m->pos_of_rank[r * T + t] = global_pos(r, (int)t, m->sp_size, m->S, m->balance);
    memcpy(m->pos, m->pos_of_rank + (size_t)m->sp_rank * T, T * sizeof(int));
    for (int t = 0; t < m->S; t++) m->pos_full[t] = t;
}

void model_layout(Model *m, const RunConfig *cfg, int sp_rank, int sp_size, int local_batch) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->scheme = cfg->scheme;
    m->L = cfg->layers, m->C = cfg->dim, m->NH = cfg->heads, m->F = cfg->mlp, m->V = cfg->vocab;
    m->S = cfg->seq_len;
    m->B = local_batch;
    m->sp_size = sp_size, m->sp_rank = sp_rank;
    m->T = cfg->seq_len / sp_size;
    m->balance = cfg->balance;
    m->tp = cfg->scheme == SCHEME_MEGATRON_SP ? sp_size : 1;
    m->Cl = m->C / m->tp, m->Fl = m->F / m->tp, m->NHl = m->NH / m->tp;
    set_layout(m);
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) m->num_params += m->param_sizes[i];
    // backend: cuda keeps activations and scratch on the device (gpu.c); the host holds the
    // parameters, gradients and moments only.
    bool host_compute = cfg->backend != BACKEND_CUDA;
    m->num_acts = host_compute ? carve_acts(&m->acts, NULL, m) : 0;
    m->num_scratch = host_compute ? carve_scratch(&m->scratch, NULL, m) : 0;
    size_t BT = (size_t)m->B * (size_t)m->T;
    m->mem_bytes = (4 * m->num_params + m->num_acts + m->num_scratch) * sizeof(float) +
                   (2 * BT + (size_t)m->T * (1 + (size_t)sp_size) + (size_t)m->S) * sizeof(int);
}

void model_init(Model *m, const RunConfig *cfg, int sp_rank, int sp_size, int local_batch) {
    model_layout(m, cfg, sp_rank, sp_size, local_batch);
    init_positions(m);
    // One buffer for each kind: params, grads, AdamW m, AdamW v, activations, scratch.
    m->params_mem = rt_calloc(m->num_params, sizeof(float));
    m->grads_mem = rt_calloc(m->num_params, sizeof(float));
    m->m_mem = rt_calloc(m->num_params, sizeof(float));
    m->v_mem = rt_calloc(m->num_params, sizeof(float));
    carve_params(&m->params, m->params_mem, m->param_sizes);
    carve_params(&m->grads, m->grads_mem, m->param_sizes);
    if (m->num_acts) {
        m->acts_mem = rt_calloc(m->num_acts, sizeof(float));
        carve_acts(&m->acts, m->acts_mem, m);
    }
    if (m->num_scratch) {
        m->scratch_mem = rt_calloc(m->num_scratch, sizeof(float));
        carve_scratch(&m->scratch, m->scratch_mem, m);
    }
    size_t BT = (size_t)m->B * (size_t)m->T;
    m->tokens = rt_calloc(BT, sizeof(int));
    m->targets = rt_calloc(BT, sizeof(int));
}

void model_free(Model *m) {
    size_t BT = (size_t)m->B * (size_t)m->T, f = sizeof(float), i = sizeof(int);
    rt_free(m->params_mem, m->num_params, f), rt_free(m->grads_mem, m->num_params, f);
    rt_free(m->m_mem, m->num_params, f), rt_free(m->v_mem, m->num_params, f);
    rt_free(m->acts_mem, m->num_acts, f), rt_free(m->scratch_mem, m->num_scratch, f);
    rt_free(m->tokens, BT, i), rt_free(m->targets, BT, i), rt_free(m->pos, (size_t)m->T, i);
    rt_free(m->pos_of_rank, (size_t)m->sp_size * (size_t)m->T, i), rt_free(m->pos_full, (size_t)m->S, i);
    memset(m, 0, sizeof *m);
}

// ---- initialization: a counter-based normal RNG ------------------------------------
static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static float normal_at(uint64_t seed, int tensor, size_t index) {
    uint64_t h = splitmix64(seed ^ splitmix64(((uint64_t)tensor << 48) ^ (uint64_t)index));
    uint64_t h2 = splitmix64(h);
    double u1 = ((double)(h >> 11) + 0.5) / 9007199254740992.0;
    double u2 = (double)(h2 >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void model_init_params(Model *m, uint64_t seed) {
    float *p = m->params_mem;
    double resid_scale = 1.0 / sqrt(2.0 * m->L); // GPT-2: residual projections scaled by depth
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        bool ln_weight = i == P_LN1W || i == P_LN2W || i == P_LNFW;
        bool bias = i == P_LN1B || i == P_LN2B || i == P_LNFB || i == P_QKVB || i == P_ATTPROJB || i == P_FCB ||
                    i == P_FCPROJB;
        double std = (i == P_ATTPROJW || i == P_FCPROJW) ? 0.02 * resid_scale : 0.02;
        for (size_t j = 0; j < m->param_sizes[i]; j++)
            p[j] = ln_weight ? 1.0f : bias ? 0.0f : (float)(std * normal_at(seed, i, full_index(m, i, m->sp_rank, j)));
        p += m->param_sizes[i];
    }
}

// ---- whole-sequence exchange inside the sequence group ----------------------------------
// The collectives move rank-major blocks (sp, B, T, W); the sequence in global order is
// (B, S, W): every rank's rows go to their positions.
// Rank-major blocks (sp, B, T, W) in xchg -> (B, S, W) in global order.
// Rank-major blocks (sp, B, T, W) in xchg (what the all-gather returns) -> (B, S, W) in global
// order, and back (what the reduce-scatter takes). Twins of cuda_seq_place_rows_bf16 /
// cuda_seq_take_rows_float.
static void seq_place_rows(const Model *m, const float *xchg, float *full, int W) {
    size_t T = (size_t)m->T, B = (size_t)m->B, S = (size_t)m->S, w = (size_t)W;
    for (int r = 0; r < m->sp_size; r++)
        for (size_t b = 0; b < B; b++)
            for (size_t t = 0; t < T; t++)
                memcpy(full + (b * S + (size_t)m->pos_of_rank[r * T + t]) * w, xchg + (((size_t)r * B + b) * T + t) * w,
                       w * sizeof(float));
}

void seq_allgather(Model *m, Comm *comm, const float *local, float *full, int W) {
    size_t n = (size_t)m->B * (size_t)m->T * (size_t)W;
    if (m->sp_size == 1) { memcpy(full, local, n * sizeof(float)); return; }
    comm_allgather(comm, GROUP_SEQ, local, m->scratch.xchg, (long)n);
    seq_place_rows(m, m->scratch.xchg, full, W);
}

static void seq_take_rows(const Model *m, const float *full, float *xchg, int W) {
    size_t T = (size_t)m->T, B = (size_t)m->B, S = (size_t)m->S, w = (size_t)W;
    for (int r = 0; r < m->sp_size; r++)
        for (size_t b = 0; b < B; b++)
            for (size_t t = 0; t < T; t++)
                memcpy(xchg + (((size_t)r * B + b) * T + t) * w, full + (b * S + (size_t)m->pos_of_rank[r * T + t]) * w,
                       w * sizeof(float));
}

void seq_reduce_scatter(Model *m, Comm *comm, const float *full, float *local, int W) {
    size_t n = (size_t)m->B * (size_t)m->T * (size_t)W;
    if (m->sp_size == 1) { memcpy(local, full, n * sizeof(float)); return; }
    seq_take_rows(m, full, m->scratch.xchg, W);
    comm_reduce_scatter(comm, GROUP_SEQ, m->scratch.xchg, local, (long)n);
}

// ---- output head (every scheme: local tokens) ----------------------------------------------
double head_forward(Model *m, const float *residual, float dloss) {
    int BT = m->B * m->T, C = m->C, V = m->V;
    Activations *a = &m->acts;
    layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, residual, m->params.lnfw, m->params.lnfb, BT, C);
    matmul_forward(a->logits, a->lnf, m->params.wout, NULL, BT, C, V);
    if (dloss != 0.0f) softmax_xent_forward_backward(a->losses, a->logits, m->targets, BT, V, dloss);
    else softmax_xent_forward(a->losses, a->logits, m->targets, BT, V);
    double sum = 0.0;
    for (int i = 0; i < BT; i++) sum += a->losses[i];
    return sum;
}

// Leaves d(residual) in scratch.dres.
void head_backward(Model *m, const float *residual) {
    int BT = m->B * m->T, C = m->C, V = m->V;
    Activations *a = &m->acts;
    Scratch *s = &m->scratch;
    memset(s->dx, 0, (size_t)BT * C * sizeof(float));
    matmul_backward(s->dx, m->grads.wout, NULL, a->logits, a->lnf, m->params.wout, BT, C, V);
    memset(s->dres, 0, (size_t)BT * C * sizeof(float));
    layernorm_backward(s->dres, m->grads.lnfw, m->grads.lnfb, s->dx, residual, m->params.lnfw, a->lnf_mean,
                       a->lnf_rstd, BT, C);
}

// ---- LSS forward ---------------------------------------------------------------------------
// Layer l's [K|V] of the whole sequence: its own buffer (kv: keep), one buffer every layer
// refills (kv: regather), or the local [K|V] itself on one rank.
static float *kv_full_of(Model *m, int l) {
    if (m->sp_size == 1) return m->acts.kv + (size_t)l * m->B * m->T * 2 * m->C;
    size_t layer = m->cfg.kv == KV_REGATHER ? 0 : (size_t)l;
    return m->acts.kv_full + layer * m->B * m->S * 2 * m->C;
}

static double lss_forward(Model *m, Comm *comm, float dloss) {
    int B = m->B, T = m->T, C = m->C, NH = m->NH, F = m->F, S = m->S, BT = B * T;
    ParamTensors *p = &m->params;
    Activations *a = &m->acts;
    size_t btc = (size_t)BT * C, bt = (size_t)BT;
    embedding_forward(a->encoded, m->tokens, p->wte, p->wpe, B, T, C);
    const float *residual = a->encoded;
    for (int l = 0; l < m->L; l++) {
        float *ln1 = a->ln1 + l * btc, *q = a->q + l * btc, *kv = a->kv + l * 2 * btc;
        float *kv_full = kv_full_of(m, l);
        float *atty = a->atty + l * btc, *lse = a->att_lse + l * bt * NH, *residual2 = a->residual2 + l * btc;
        float *ln2 = a->ln2 + l * btc, *fch = a->fch + l * bt * F, *fch_gelu = a->fch_gelu + l * bt * F;
        float *residual3 = a->residual3 + l * btc;
        const float *qkvw = p->qkvw + (size_t)l * 3 * C * C, *qkvb = p->qkvb + (size_t)l * 3 * C;

        layernorm_forward(ln1, a->ln1_mean + l * bt, a->ln1_rstd + l * bt, residual, p->ln1w + l * C,
                          p->ln1b + l * C, BT, C);
        // [K|V] first (rows C..3C of qkvw): ONE all-gather over the sequence group,
        // in flight while Q is projected.
        matmul_forward(kv, ln1, qkvw + (size_t)C * C, qkvb + C, BT, C, 2 * C);
        CommPending gather;
        if (m->sp_size > 1) comm_iallgather(comm, GROUP_SEQ, kv, m->scratch.xchg, (long)btc * 2, &gather);
        matmul_forward(q, ln1, qkvw, qkvb, BT, C, C);
        if (m->sp_size > 1) {
            comm_wait(comm, &gather);
            seq_place_rows(m, m->scratch.xchg, kv_full, 2 * C);
        }
        // Local queries against all keys, causal in global positions: whole rows of the
        // attention matrix, so nothing partial is ever aggregated.
        attention_forward(atty, lse, q, kv_full, kv_full + C, m->pos, B, T, S, NH, C / NH, C, 2 * C);
        matmul_forward(m->scratch.tmp, atty, p->attprojw + (size_t)l * C * C, p->attprojb + l * C, BT, C, C);
        residual_forward(residual2, residual, m->scratch.tmp, (long)btc);

        layernorm_forward(ln2, a->ln2_mean + l * bt, a->ln2_rstd + l * bt, residual2, p->ln2w + l * C,
                          p->ln2b + l * C, BT, C);
        matmul_forward(fch, ln2, p->fcw + (size_t)l * F * C, p->fcb + (size_t)l * F, BT, C, F);
        gelu_forward(fch_gelu, fch, (long)bt * F);
        matmul_forward(m->scratch.tmp, fch_gelu, p->fcprojw + (size_t)l * C * F, p->fcprojb + l * C, BT, F, C);
        residual_forward(residual3, residual2, m->scratch.tmp, (long)btc);
        residual = residual3;
    }
    return head_forward(m, residual, dloss);
}

// ---- LSS backward --------------------------------------------------------------------------
static void lss_backward(Model *m, Comm *comm) {
    int B = m->B, T = m->T, C = m->C, NH = m->NH, F = m->F, S = m->S, BT = B * T;
    ParamTensors *p = &m->params, *g = &m->grads;
    Activations *a = &m->acts;
    Scratch *s = &m->scratch;
    size_t btc = (size_t)BT * C, bt = (size_t)BT;
    head_backward(m, m->L > 0 ? a->residual3 + (size_t)(m->L - 1) * btc : a->encoded);
    for (int l = m->L - 1; l >= 0; l--) {
        const float *residual = l == 0 ? a->encoded : a->residual3 + (size_t)(l - 1) * btc;
        float *ln1 = a->ln1 + l * btc, *q = a->q + l * btc, *kv = a->kv + l * 2 * btc;
        float *kv_full = kv_full_of(m, l);
        float *atty = a->atty + l * btc, *lse = a->att_lse + l * bt * NH, *residual2 = a->residual2 + l * btc;
        float *ln2 = a->ln2 + l * btc, *fch = a->fch + l * bt * F, *fch_gelu = a->fch_gelu + l * bt * F;
        const float *qkvw = p->qkvw + (size_t)l * 3 * C * C;
        float *dqkvw = g->qkvw + (size_t)l * 3 * C * C, *dqkvb = g->qkvb + (size_t)l * 3 * C;
        float *dkv_full = m->sp_size == 1 ? s->dkv : s->seq_full;

        // MLP: residual3 = residual2 + fcproj(gelu(fc(ln2(residual2))))
        memset(s->dfch_gelu, 0, bt * F * sizeof(float));
        matmul_backward(s->dfch_gelu, g->fcprojw + (size_t)l * C * F, g->fcprojb + l * C, s->dres, fch_gelu,
                        p->fcprojw + (size_t)l * C * F, BT, F, C);
        memset(s->dfch, 0, bt * F * sizeof(float));
        gelu_backward(s->dfch, fch, s->dfch_gelu, (long)bt * F);
        memset(s->dx, 0, btc * sizeof(float));
        matmul_backward(s->dx, g->fcw + (size_t)l * F * C, g->fcb + (size_t)l * F, s->dfch, ln2,
                        p->fcw + (size_t)l * F * C, BT, C, F);
        layernorm_backward(s->dres, g->ln2w + l * C, g->ln2b + l * C, s->dx, residual2, p->ln2w + l * C,
                           a->ln2_mean + l * bt, a->ln2_rstd + l * bt, BT, C);

        // Attention: residual2 = residual + attproj(attention(q, kv_full))
        memset(s->datty, 0, btc * sizeof(float));
        matmul_backward(s->datty, g->attprojw + (size_t)l * C * C, g->attprojb + l * C, s->dres, atty,
                        p->attprojw + (size_t)l * C * C, BT, C, C);
        // kv: regather — the one buffer still holds the last layer's [K|V] from the forward;
        // every other layer's is gathered again (L - 1 more all-gathers per step).
        if (m->cfg.kv == KV_REGATHER && m->sp_size > 1 && l != m->L - 1) seq_allgather(m, comm, kv, kv_full, 2 * C);
        memset(s->dq, 0, btc * sizeof(float));
        memset(dkv_full, 0, (size_t)B * S * 2 * C * sizeof(float));
        attention_backward(s->dq, dkv_full, dkv_full + C, s->datty, atty, lse, q, kv_full, kv_full + C, m->pos, B,
                           T, S, NH, C / NH, C, 2 * C);
        // ONE reduce-scatter returns every rank's partial d[K|V] to the owning segments.
        if (m->sp_size > 1) seq_reduce_scatter(m, comm, dkv_full, s->dkv, 2 * C);
        memset(s->dx, 0, btc * sizeof(float));
        matmul_backward(s->dx, dqkvw, dqkvb, s->dq, ln1, qkvw, BT, C, C);
        matmul_backward(s->dx, dqkvw + (size_t)C * C, dqkvb + C, s->dkv, ln1, qkvw + (size_t)C * C, BT, C, 2 * C);
        layernorm_backward(s->dres, g->ln1w + l * C, g->ln1b + l * C, s->dx, residual, p->ln1w + l * C,
                           a->ln1_mean + l * bt, a->ln1_rstd + l * bt, BT, C);
        // The key bias adds q.b to every score of a query: softmax ignores it, so its
        // exact gradient is 0. Set it exactly: AdamW would turn the rounding noise of
        // the computed value into lr-sized steps that differ from layout to layout.
        memset(dqkvb + C, 0, (size_t)C * sizeof(float));
    }
    embedding_backward(g->wte, g->wpe, s->dres, m->tokens, B, T, C);
}

double model_forward(Model *m, Comm *comm, float dloss) {
    return m->scheme == SCHEME_MEGATRON_SP ? megatron_forward(m, comm, dloss) : lss_forward(m, comm, dloss);
}

void model_backward(Model *m, Comm *comm) {
    memset(m->grads_mem, 0, m->num_params * sizeof(float));
    if (m->scheme == SCHEME_MEGATRON_SP) megatron_backward(m, comm);
    else lss_backward(m, comm);
}
