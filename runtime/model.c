// The model: parameter/activation tables, initialization, and the forward and
// backward passes with the LSS communication at its two named points:
//   forward:  ONE all-gather of [K|V] per layer inside the sequence group
//   backward: ONE reduce-scatter of d[K|V] per layer inside the sequence group
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "kernels.h"

const char *const param_names[NUM_PARAM_TENSORS] = {
    "wte", "h.ln1w", "h.ln1b", "h.qkvw", "h.qkvb", "h.attprojw", "h.attprojb", "h.ln2w", "h.ln2b",
    "h.fcw", "h.fcb", "h.fcprojw", "h.fcprojb", "lnfw", "lnfb", "wout", "wpe"};

static void param_sizes(size_t *sz, int L, int C, int F, int V, int T) {
    size_t l = (size_t)L, c = (size_t)C, f = (size_t)F;
    size_t s[NUM_PARAM_TENSORS] = {(size_t)V * c, l * c, l * c, l * 3 * c * c, l * 3 * c, l * c * c, l * c,
                                   l * c, l * c, l * f * c, l * f, l * c * f, l * c, c, c, (size_t)V * c,
                                   (size_t)T * c};
    memcpy(sz, s, sizeof s);
}

void model_param_shape(const Model *m, int i, int *ndim, long shape[4]) {
    long L = m->L, C = m->C, F = m->F, V = m->V, S = m->S;
    long shapes[NUM_PARAM_TENSORS][4] = {{V, C}, {L, C}, {L, C}, {L, 3 * C, C}, {L, 3 * C}, {L, C, C},
                                         {L, C}, {L, C}, {L, C}, {L, F, C}, {L, F}, {L, C, F},
                                         {L, C}, {C}, {C}, {V, C}, {S, C}};
    int nd[NUM_PARAM_TENSORS] = {2, 2, 2, 3, 2, 3, 2, 2, 2, 3, 2, 3, 2, 1, 1, 2, 2};
    *ndim = nd[i];
    memcpy(shape, shapes[i], sizeof shapes[i]);
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

// Carve `n` tensors of the given sizes out of one buffer; returns the total.
static size_t carve(float *mem, float ***ptrs, const size_t *sizes, int n) {
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (mem) *ptrs[i] = mem + total;
        total += sizes[i];
    }
    return total;
}

static size_t carve_acts(Activations *a, float *mem, const Model *m) {
    size_t L = (size_t)m->L, BT = (size_t)m->B * (size_t)m->T, C = (size_t)m->C, F = (size_t)m->F;
    size_t BS = (size_t)m->B * (size_t)m->S;
    float **ptrs[] = {&a->encoded, &a->ln1, &a->ln1_mean, &a->ln1_rstd, &a->q, &a->kv, &a->kv_full,
                      &a->atty, &a->att_lse, &a->residual2, &a->ln2, &a->ln2_mean, &a->ln2_rstd, &a->fch,
                      &a->fch_gelu, &a->residual3, &a->lnf, &a->lnf_mean, &a->lnf_rstd, &a->logits, &a->losses};
    size_t sizes[] = {BT * C, L * BT * C, L * BT, L * BT, L * BT * C, L * BT * 2 * C, L * BS * 2 * C,
                      L * BT * C, L * BT * (size_t)m->NH, L * BT * C, L * BT * C, L * BT, L * BT, L * BT * F,
                      L * BT * F, L * BT * C, BT * C, BT, BT, BT * (size_t)m->V, BT};
    return carve(mem, ptrs, sizes, (int)(sizeof sizes / sizeof sizes[0]));
}

static size_t carve_scratch(Scratch *s, float *mem, const Model *m) {
    size_t BT = (size_t)m->B * (size_t)m->T, C = (size_t)m->C, F = (size_t)m->F;
    size_t BS = (size_t)m->B * (size_t)m->S;
    float **ptrs[] = {&s->dres, &s->dx, &s->datty, &s->dq, &s->dkv, &s->dkv_full, &s->kv_xchg,
                      &s->dfch, &s->dfch_gelu, &s->tmp};
    size_t sizes[] = {BT * C, BT * C, BT * C, BT * C, BT * 2 * C, BS * 2 * C, BS * 2 * C, BT * F, BT * F, BT * C};
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

void model_init(Model *m, const RunConfig *cfg, int sp_rank, int sp_size, int local_batch) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->L = cfg->layers;
    m->C = cfg->dim;
    m->NH = cfg->heads;
    m->F = cfg->mlp;
    m->V = cfg->vocab;
    m->S = cfg->seq_len;
    m->B = local_batch;
    m->sp_size = sp_size;
    m->sp_rank = sp_rank;
    m->T = cfg->seq_len / sp_size;
    m->balance = cfg->balance;

    param_sizes(m->param_sizes, m->L, m->C, m->F, m->V, m->T);
    m->num_params = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) m->num_params += m->param_sizes[i];
    // One buffer for each kind: params, grads, AdamW m, AdamW v, activations, scratch.
    m->params_mem = xcalloc(m->num_params, sizeof(float));
    m->grads_mem = xcalloc(m->num_params, sizeof(float));
    m->m_mem = xcalloc(m->num_params, sizeof(float));
    m->v_mem = xcalloc(m->num_params, sizeof(float));
    carve_params(&m->params, m->params_mem, m->param_sizes);
    carve_params(&m->grads, m->grads_mem, m->param_sizes);
    size_t nacts = carve_acts(&m->acts, NULL, m);
    m->acts_mem = xcalloc(nacts, sizeof(float));
    carve_acts(&m->acts, m->acts_mem, m);
    size_t nscratch = carve_scratch(&m->scratch, NULL, m);
    m->scratch_mem = xcalloc(nscratch, sizeof(float));
    carve_scratch(&m->scratch, m->scratch_mem, m);

    size_t BT = (size_t)m->B * (size_t)m->T;
    m->tokens = xcalloc(BT, sizeof(int));
    m->targets = xcalloc(BT, sizeof(int));
    m->pos = xcalloc((size_t)m->T, sizeof(int));
    m->pos_of_rank = xcalloc((size_t)sp_size * (size_t)m->T, sizeof(int));
    for (int r = 0; r < sp_size; r++)
        for (int t = 0; t < m->T; t++) m->pos_of_rank[r * m->T + t] = global_pos(r, t, sp_size, m->S, m->balance);
    memcpy(m->pos, m->pos_of_rank + (size_t)sp_rank * (size_t)m->T, (size_t)m->T * sizeof(int));
    m->mem_bytes = (4 * m->num_params + nacts + nscratch) * sizeof(float) +
                   (2 * BT + (size_t)m->T * (1 + (size_t)sp_size)) * sizeof(int);
}

void model_free(Model *m) {
    free(m->params_mem);
    free(m->grads_mem);
    free(m->m_mem);
    free(m->v_mem);
    free(m->acts_mem);
    free(m->scratch_mem);
    free(m->tokens);
    free(m->targets);
    free(m->pos);
    free(m->pos_of_rank);
    memset(m, 0, sizeof *m);
}

// ---- initialization: a counter-based normal RNG, so every element's value
// depends only on (seed, tensor, index), never on the layout.
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
        size_t n = m->param_sizes[i];
        const char *name = param_names[i];
        bool is_ln_weight = !strcmp(name, "h.ln1w") || !strcmp(name, "h.ln2w") || !strcmp(name, "lnfw");
        bool is_bias = !is_ln_weight && (name[strlen(name) - 1] == 'b');
        double std = 0.02;
        if (!strcmp(name, "h.attprojw") || !strcmp(name, "h.fcprojw")) std *= resid_scale;
        // wpe: this rank's rows are the global rows pos[t]; index by global element.
        for (size_t j = 0; j < n; j++) {
            size_t global_j = j;
            if (i == PARAM_WPE) global_j = (size_t)m->pos[j / (size_t)m->C] * (size_t)m->C + j % (size_t)m->C;
            if (is_ln_weight) p[j] = 1.0f;
            else if (is_bias) p[j] = 0.0f;
            else p[j] = (float)(std * normal_at(seed, i, global_j));
        }
        p += n;
    }
}

// ---- the LSS exchange of [K|V] ------------------------------------------------
// The gather returns rank-major blocks (sp, B, T, 2C); attention wants the
// sequence in global order (B, S, 2C): place every rank's tokens at their positions.
static void kv_gather(Model *m, Comm *comm, const float *kv_local, float *kv_full) {
    size_t C2 = 2 * (size_t)m->C, T = (size_t)m->T, B = (size_t)m->B, S = (size_t)m->S;
    if (m->sp_size == 1) { // the local tokens are the whole sequence
        memcpy(kv_full, kv_local, B * T * C2 * sizeof(float));
        return;
    }
    comm_allgather(comm, GROUP_SEQ, kv_local, m->scratch.kv_xchg, (long)(B * T * C2));
    for (int r = 0; r < m->sp_size; r++)
        for (size_t b = 0; b < B; b++)
            for (size_t t = 0; t < T; t++) {
                size_t pos = (size_t)m->pos_of_rank[(size_t)r * T + t];
                memcpy(kv_full + (b * S + pos) * C2, m->scratch.kv_xchg + (((size_t)r * B + b) * T + t) * C2,
                       C2 * sizeof(float));
            }
}

// The mirror: partial d[K|V] of the whole sequence (B, S, 2C) -> rank-major blocks
// -> ONE reduce-scatter -> this rank's d[K|V] (B, T, 2C), summed over the group.
static void dkv_reduce_scatter(Model *m, Comm *comm, const float *dkv_full, float *dkv) {
    size_t C2 = 2 * (size_t)m->C, T = (size_t)m->T, B = (size_t)m->B, S = (size_t)m->S;
    if (m->sp_size == 1) {
        memcpy(dkv, dkv_full, B * T * C2 * sizeof(float));
        return;
    }
    for (int r = 0; r < m->sp_size; r++)
        for (size_t b = 0; b < B; b++)
            for (size_t t = 0; t < T; t++) {
                size_t pos = (size_t)m->pos_of_rank[(size_t)r * T + t];
                memcpy(m->scratch.kv_xchg + (((size_t)r * B + b) * T + t) * C2, dkv_full + (b * S + pos) * C2,
                       C2 * sizeof(float));
            }
    comm_reduce_scatter(comm, GROUP_SEQ, m->scratch.kv_xchg, dkv, (long)(B * T * C2));
}

// ---- forward ---------------------------------------------------------------------
double model_forward(Model *m, Comm *comm, float dloss) {
    int B = m->B, T = m->T, C = m->C, NH = m->NH, F = m->F, V = m->V, S = m->S, BT = B * T;
    ParamTensors *p = &m->params;
    Activations *a = &m->acts;
    embedding_forward(a->encoded, m->tokens, p->wte, p->wpe, B, T, C);
    const float *residual = a->encoded;
    for (int l = 0; l < m->L; l++) {
        size_t btc = (size_t)BT * C, bt = (size_t)BT;
        float *ln1 = a->ln1 + l * btc, *q = a->q + l * btc, *kv = a->kv + l * 2 * btc;
        float *kv_full = a->kv_full + (size_t)l * B * S * 2 * C;
        float *atty = a->atty + l * btc, *lse = a->att_lse + l * bt * NH, *residual2 = a->residual2 + l * btc;
        float *ln2 = a->ln2 + l * btc, *fch = a->fch + l * bt * F, *fch_gelu = a->fch_gelu + l * bt * F;
        float *residual3 = a->residual3 + l * btc;
        const float *qkvw = p->qkvw + (size_t)l * 3 * C * C, *qkvb = p->qkvb + (size_t)l * 3 * C;

        layernorm_forward(ln1, a->ln1_mean + l * bt, a->ln1_rstd + l * bt, residual, p->ln1w + l * C,
                          p->ln1b + l * C, BT, C);
        // [K|V] first (rows C..3C of qkvw), gathered over the sequence group; then Q.
        matmul_forward(kv, ln1, qkvw + (size_t)C * C, qkvb + C, BT, C, 2 * C);
        kv_gather(m, comm, kv, kv_full);
        matmul_forward(q, ln1, qkvw, qkvb, BT, C, C);
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
    layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, residual, p->lnfw, p->lnfb, BT, C);
    matmul_forward(a->logits, a->lnf, p->wout, NULL, BT, C, V);
    if (dloss != 0.0f) softmax_xent_forward_backward(a->losses, a->logits, m->targets, BT, V, dloss);
    else softmax_xent_forward(a->losses, a->logits, m->targets, BT, V);
    double sum = 0.0;
    for (int i = 0; i < BT; i++) sum += a->losses[i];
    return sum;
}

// ---- backward --------------------------------------------------------------------
void model_backward(Model *m, Comm *comm) {
    int B = m->B, T = m->T, C = m->C, NH = m->NH, F = m->F, V = m->V, S = m->S, BT = B * T;
    ParamTensors *p = &m->params, *g = &m->grads;
    Activations *a = &m->acts;
    Scratch *s = &m->scratch;
    size_t btc = (size_t)BT * C, bt = (size_t)BT;
    memset(m->grads_mem, 0, m->num_params * sizeof(float));

    // Output projection and final LayerNorm (a->logits holds dlogits).
    memset(s->dx, 0, btc * sizeof(float));
    matmul_backward(s->dx, g->wout, NULL, a->logits, a->lnf, p->wout, BT, C, V);
    const float *last = m->L > 0 ? a->residual3 + (size_t)(m->L - 1) * btc : a->encoded;
    memset(s->dres, 0, btc * sizeof(float));
    layernorm_backward(s->dres, g->lnfw, g->lnfb, s->dx, last, p->lnfw, a->lnf_mean, a->lnf_rstd, BT, C);

    for (int l = m->L - 1; l >= 0; l--) {
        const float *residual = l == 0 ? a->encoded : a->residual3 + (size_t)(l - 1) * btc;
        float *ln1 = a->ln1 + l * btc, *q = a->q + l * btc;
        float *kv_full = a->kv_full + (size_t)l * B * S * 2 * C;
        float *atty = a->atty + l * btc, *lse = a->att_lse + l * bt * NH, *residual2 = a->residual2 + l * btc;
        float *ln2 = a->ln2 + l * btc, *fch = a->fch + l * bt * F, *fch_gelu = a->fch_gelu + l * bt * F;
        const float *qkvw = p->qkvw + (size_t)l * 3 * C * C;
        float *dqkvw = g->qkvw + (size_t)l * 3 * C * C, *dqkvb = g->qkvb + (size_t)l * 3 * C;

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
        memset(s->dq, 0, btc * sizeof(float));
        memset(s->dkv_full, 0, (size_t)B * S * 2 * C * sizeof(float));
        attention_backward(s->dq, s->dkv_full, s->dkv_full + C, s->datty, atty, lse, q, kv_full, kv_full + C,
                           m->pos, B, T, S, NH, C / NH, C, 2 * C);
        dkv_reduce_scatter(m, comm, s->dkv_full, s->dkv);
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
