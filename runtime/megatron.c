// The baseline the paper compares against: Megatron-LM's sequence parallelism
// (ARCHITECTURE §4.3). Tensor parallelism of degree tp = sp_size inside the
// sequence group (this rank: heads [r*NH/tp, (r+1)*NH/tp), MLP columns
// [r*F/tp, (r+1)*F/tp)); LayerNorm, residuals and the loss run on the local
// sequence segment. Per layer and step, 8 collectives of B x S x C:
//   forward:  all-gather before attention and before the MLP, reduce-scatter after each;
//   backward: the mirror (all-gather of the branch gradient, reduce-scatter of the
//             input gradient), twice.
// Same kernels as LSS; the gathered LayerNorm outputs are kept for the weight gradients.
#include <string.h>

#include "kernels.h"
#include "model.h"

// out (N, C) += bias (C)
static void add_bias(float *out, const float *bias, int N, int C) {
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) out[(size_t)n * C + c] += bias[c];
}

// dbias (C) += column sums of dout (N, C)
static void bias_backward(float *dbias, const float *dout, int N, int C) {
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) dbias[c] += dout[(size_t)n * C + c];
}

// A row-parallel projection: partial products over this rank's heads/columns summed
// by ONE reduce-scatter onto the local tokens, then the bias and the residual.
static void row_parallel_out(Model *m, Comm *comm, float *out, const float *residual, const float *inp,
                             const float *w, const float *bias, int K) {
    int BS = m->B * m->S, BT = m->B * m->T, C = m->C;
    matmul_forward(m->scratch.seq_full, inp, w, NULL, BS, K, C);
    seq_reduce_scatter(m, comm, m->scratch.seq_full, m->scratch.tmp, C);
    add_bias(m->scratch.tmp, bias, BT, C);
    residual_forward(out, residual, m->scratch.tmp, (long)BT * C);
}

double megatron_forward(Model *m, Comm *comm, float dloss) {
    int B = m->B, T = m->T, C = m->C, S = m->S, BT = B * T, BS = B * S;
    int Cl = m->Cl, Fl = m->Fl, NHl = m->NHl;
    ParamTensors *p = &m->params;
    Activations *a = &m->acts;
    size_t btc = (size_t)BT * C, bt = (size_t)BT, bsc = (size_t)BS * C, bs = (size_t)BS;
    embedding_forward(a->encoded, m->tokens, p->wte, p->wpe, B, T, C);
    const float *residual = a->encoded;
    for (int l = 0; l < m->L; l++) {
        float *ln1 = a->ln1 + l * btc, *ln1_full = a->ln1_full + l * bsc, *qkv = a->qkv + l * bs * 3 * Cl;
        float *atty = a->atty + l * bs * Cl, *lse = a->att_lse + l * bs * NHl, *residual2 = a->residual2 + l * btc;
        float *ln2 = a->ln2 + l * btc, *ln2_full = a->ln2_full + l * bsc;
        float *fch = a->fch + l * bs * Fl, *fch_gelu = a->fch_gelu + l * bs * Fl, *residual3 = a->residual3 + l * btc;

        layernorm_forward(ln1, a->ln1_mean + l * bt, a->ln1_rstd + l * bt, residual, p->ln1w + l * C,
                          p->ln1b + l * C, BT, C);
        seq_allgather(m, comm, ln1, ln1_full, C);                               // collective 1
        matmul_forward(qkv, ln1_full, p->qkvw + (size_t)l * 3 * Cl * C, p->qkvb + (size_t)l * 3 * Cl, BS, C, 3 * Cl);
        attention_forward(atty, lse, qkv, qkv + Cl, qkv + 2 * Cl, m->pos_full, B, S, S, NHl, C / m->NH, 3 * Cl,
                          3 * Cl);
        row_parallel_out(m, comm, residual2, residual, atty, p->attprojw + (size_t)l * C * Cl, p->attprojb + l * C,
                         Cl);                                                   // collective 2

        layernorm_forward(ln2, a->ln2_mean + l * bt, a->ln2_rstd + l * bt, residual2, p->ln2w + l * C,
                          p->ln2b + l * C, BT, C);
        seq_allgather(m, comm, ln2, ln2_full, C);                               // collective 3
        matmul_forward(fch, ln2_full, p->fcw + (size_t)l * Fl * C, p->fcb + (size_t)l * Fl, BS, C, Fl);
        gelu_forward(fch_gelu, fch, (long)bs * Fl);
        row_parallel_out(m, comm, residual3, residual2, fch_gelu, p->fcprojw + (size_t)l * C * Fl,
                         p->fcprojb + l * C, Fl);                               // collective 4
        residual = residual3;
    }
    return head_forward(m, residual, dloss);
}

void megatron_backward(Model *m, Comm *comm) {
    int B = m->B, T = m->T, C = m->C, S = m->S, BT = B * T, BS = B * S;
    int Cl = m->Cl, Fl = m->Fl, NHl = m->NHl;
    ParamTensors *p = &m->params, *g = &m->grads;
    Activations *a = &m->acts;
    Scratch *s = &m->scratch;
    size_t btc = (size_t)BT * C, bt = (size_t)BT, bsc = (size_t)BS * C, bs = (size_t)BS;
    head_backward(m, m->L > 0 ? a->residual3 + (size_t)(m->L - 1) * btc : a->encoded);
    for (int l = m->L - 1; l >= 0; l--) {
        const float *residual = l == 0 ? a->encoded : a->residual3 + (size_t)(l - 1) * btc;
        float *ln1_full = a->ln1_full + l * bsc, *qkv = a->qkv + l * bs * 3 * Cl;
        float *atty = a->atty + l * bs * Cl, *lse = a->att_lse + l * bs * NHl, *residual2 = a->residual2 + l * btc;
        float *ln2_full = a->ln2_full + l * bsc, *fch = a->fch + l * bs * Fl, *fch_gelu = a->fch_gelu + l * bs * Fl;
        float *dqkvb = g->qkvb + (size_t)l * 3 * Cl;

        // MLP. The reduce-scatter's mirror: gather the residual gradient.
        bias_backward(g->fcprojb + l * C, s->dres, BT, C);
        seq_allgather(m, comm, s->dres, s->dseq_full, C);                       // collective 5
        memset(s->dfch_gelu, 0, bs * Fl * sizeof(float));
        matmul_backward(s->dfch_gelu, g->fcprojw + (size_t)l * C * Fl, NULL, s->dseq_full, fch_gelu,
                        p->fcprojw + (size_t)l * C * Fl, BS, Fl, C);
        memset(s->dfch, 0, bs * Fl * sizeof(float));
        gelu_backward(s->dfch, fch, s->dfch_gelu, (long)bs * Fl);
        memset(s->seq_full, 0, bsc * sizeof(float));
        matmul_backward(s->seq_full, g->fcw + (size_t)l * Fl * C, g->fcb + (size_t)l * Fl, s->dfch, ln2_full,
                        p->fcw + (size_t)l * Fl * C, BS, C, Fl);
        seq_reduce_scatter(m, comm, s->seq_full, s->dx, C);                     // collective 6 (all-gather's mirror)
        layernorm_backward(s->dres, g->ln2w + l * C, g->ln2b + l * C, s->dx, residual2, p->ln2w + l * C,
                           a->ln2_mean + l * bt, a->ln2_rstd + l * bt, BT, C);

        // Attention.
        bias_backward(g->attprojb + l * C, s->dres, BT, C);
        seq_allgather(m, comm, s->dres, s->dseq_full, C);                       // collective 7
        memset(s->datty, 0, bs * Cl * sizeof(float));
        matmul_backward(s->datty, g->attprojw + (size_t)l * C * Cl, NULL, s->dseq_full, atty,
                        p->attprojw + (size_t)l * C * Cl, BS, Cl, C);
        memset(s->dq, 0, bs * 3 * Cl * sizeof(float));
        attention_backward(s->dq, s->dq + Cl, s->dq + 2 * Cl, s->datty, atty, lse, qkv, qkv + Cl, qkv + 2 * Cl,
                           m->pos_full, B, S, S, NHl, C / m->NH, 3 * Cl, 3 * Cl);
        memset(s->seq_full, 0, bsc * sizeof(float));
        matmul_backward(s->seq_full, g->qkvw + (size_t)l * 3 * Cl * C, dqkvb, s->dq, ln1_full,
                        p->qkvw + (size_t)l * 3 * Cl * C, BS, C, 3 * Cl);
        seq_reduce_scatter(m, comm, s->seq_full, s->dx, C);                     // collective 8
        layernorm_backward(s->dres, g->ln1w + l * C, g->ln1b + l * C, s->dx, residual, p->ln1w + l * C,
                           a->ln1_mean + l * bt, a->ln1_rstd + l * bt, BT, C);
        memset(dqkvb + Cl, 0, (size_t)Cl * sizeof(float)); // the key bias: exact gradient 0 (see model.c)
    }
    embedding_backward(g->wte, g->wpe, s->dres, m->tokens, B, T, C);
}
