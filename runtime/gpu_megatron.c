// megatron-sp on the CUDA backend: megatron.c's passes with the bf16 kernels, the same 8
// collectives per layer (gpu.c's gather / reduce-scatter). Two differences of form, same sums:
// the row-parallel biases enter on sequence rank 0 only (its partial product carries the bias
// through the GEMM epilogue, the reduce-scatter adds it once), and their gradients are the
// column sums of the gathered whole-sequence gradient on rank 0 only (megatron.c sums each
// rank's own rows; the sequence group's gradient sum makes both the same).
#ifdef LSST_CUDA
#include "gpu_impl.h"

// out = residual + reduce_scatter(inp (B, S, K) @ w (C, K)^T) + bias: collectives 2 and 4.
static void row_parallel_out(Gpu *g, Model *m, Comm *comm, bf16 *out, const bf16 *residual, const bf16 *inp,
                             const bf16 *w, const bf16 *bias, int K) {
    int BS = m->B * m->S, C = m->C;
    cuda_matmul_forward_bf16(g->s.seq_full, inp, w, m->sp_rank == 0 ? bias : NULL, BS, K, C, g->stream);
    gpu_reduce_scatter(g, m, comm, g->s.seq_full, g->s.tmp, C);
    cuda_residual_forward_bf16(out, residual, g->s.tmp, (long)m->B * m->T * C, g->stream);
}

double gpu_megatron_forward(Gpu *g, Model *m, Comm *comm, float dloss) {
    int B = m->B, T = m->T, C = m->C, S = m->S, BT = B * T, BS = B * S, Cl = m->Cl, Fl = m->Fl, NHl = m->NHl;
    DevActs *a = &g->a;
    cudaStream_t st = g->stream;
    size_t btc = (size_t)BT * C, bt = (size_t)BT, bsc = (size_t)BS * C, bs = (size_t)BS;
    cuda_embedding_forward_bf16(a->encoded, g->tokens, P(P_WTE), P(PARAM_WPE), B, T, C, st);
    const bf16 *residual = a->encoded;
    for (int l = 0; l < m->L; l++) {
        bf16 *ln1 = a->ln1 + l * btc, *ln1_full = a->ln1_full + l * bsc, *qkv = a->qkv + l * bs * 3 * Cl;
        bf16 *atty = a->atty + l * bs * Cl, *residual2 = a->residual2 + l * btc, *ln2 = a->ln2 + l * btc;
        bf16 *ln2_full = a->ln2_full + l * bsc, *fch = a->fch + l * bs * Fl, *fch_gelu = a->fch_gelu + l * bs * Fl;
        bf16 *residual3 = a->residual3 + l * btc;
        float *lse = a->att_lse + l * bs * NHl;

        cuda_layernorm_forward_bf16(ln1, a->ln1_mean + l * bt, a->ln1_rstd + l * bt, residual, P(P_LN1W) + l * C,
                                    P(P_LN1B) + l * C, BT, C, st);
        gpu_gather(g, m, comm, ln1, ln1_full, C);                                      // collective 1
        cuda_matmul_forward_bf16(qkv, ln1_full, PB(P_QKVW) + (size_t)l * 3 * Cl * C, PB(P_QKVB) + (size_t)l * 3 * Cl,
                                 BS, C, 3 * Cl, st);
        cuda_attention_forward_bf16(atty, lse, qkv, qkv + Cl, qkv + 2 * Cl, g->pos_full, B, S, S, NHl, C / m->NH,
                                    3 * Cl, 3 * Cl, st);
        row_parallel_out(g, m, comm, residual2, residual, atty, PB(P_ATTPROJW) + (size_t)l * C * Cl,
                         PB(P_ATTPROJB) + l * C, Cl);                                   // collective 2

        cuda_layernorm_forward_bf16(ln2, a->ln2_mean + l * bt, a->ln2_rstd + l * bt, residual2, P(P_LN2W) + l * C,
                                    P(P_LN2B) + l * C, BT, C, st);
        gpu_gather(g, m, comm, ln2, ln2_full, C);                                      // collective 3
        cuda_matmul_gelu_forward_bf16(fch_gelu, fch, ln2_full, PB(P_FCW) + (size_t)l * Fl * C,
                                      PB(P_FCB) + (size_t)l * Fl, BS, C, Fl, st);
        row_parallel_out(g, m, comm, residual3, residual2, fch_gelu, PB(P_FCPROJW) + (size_t)l * C * Fl,
                         PB(P_FCPROJB) + l * C, Fl);                                    // collective 4
        residual = residual3;
    }
    return gpu_head_forward(g, m, residual, dloss);
}

// MLP backward of layer l: d(residual2) accumulated into s.dres.
static void mlp_backward(Gpu *g, Model *m, Comm *comm, int l) {
    int BT = m->B * m->T, BS = m->B * m->S, C = m->C, Fl = m->Fl;
    size_t bt = (size_t)BT, bs = (size_t)BS, bsc = bs * C;
    DevActs *a = &g->a;
    DevScratch *s = &g->s;
    cudaStream_t st = g->stream;
    gpu_gather(g, m, comm, s->dres, s->dseq_full, C);                                  // collective 5
    cuda_matmul_backward_dgelu_bf16(s->dfch, G(P_FCPROJW) + (size_t)l * C * Fl,
                                    m->sp_rank == 0 ? G(P_FCPROJB) + l * C : NULL, s->dseq_full,
                                    a->fch_gelu + l * bs * Fl, PB(P_FCPROJW) + (size_t)l * C * Fl, a->fch + l * bs * Fl,
                                    BS, Fl, C, st);
    cuda_matmul_backward_write_bf16(s->seq_full, G(P_FCW) + (size_t)l * Fl * C, G(P_FCB) + (size_t)l * Fl, s->dfch,
                                    a->ln2_full + l * bsc, PB(P_FCW) + (size_t)l * Fl * C, BS, C, Fl, st);
    gpu_reduce_scatter(g, m, comm, s->seq_full, s->dx, C);                             // collective 6
    cuda_layernorm_backward_bf16(s->dres, G(P_LN2W) + l * C, G(P_LN2B) + l * C, s->dx, a->residual2 + l * bt * C,
                                 P(P_LN2W) + l * C, a->ln2_mean + l * bt, a->ln2_rstd + l * bt, BT, C, st);
}

// Attention backward of layer l: d(residual) accumulated into s.dres.
static void attention_backward(Gpu *g, Model *m, Comm *comm, int l) {
    int B = m->B, T = m->T, S = m->S, BT = B * T, BS = B * S, C = m->C, Cl = m->Cl, NHl = m->NHl;
    size_t bt = (size_t)BT, bs = (size_t)BS, bsc = bs * C, btc = bt * C;
    DevActs *a = &g->a;
    DevScratch *s = &g->s;
    cudaStream_t st = g->stream;
    const bf16 *residual = l == 0 ? a->encoded : a->residual3 + (size_t)(l - 1) * btc;
    bf16 *qkv = a->qkv + l * bs * 3 * Cl, *atty = a->atty + l * bs * Cl;
    float *dqkvb = G(P_QKVB) + (size_t)l * 3 * Cl;
    gpu_gather(g, m, comm, s->dres, s->dseq_full, C);                                  // collective 7
    cuda_matmul_backward_write_bf16(s->datty, G(P_ATTPROJW) + (size_t)l * C * Cl,
                                    m->sp_rank == 0 ? G(P_ATTPROJB) + l * C : NULL, s->dseq_full, atty,
                                    PB(P_ATTPROJW) + (size_t)l * C * Cl, BS, Cl, C, st);
    cuda_attention_backward_write_bf16(s->dq, s->dq + Cl, s->dq + 2 * Cl, s->datty, atty, a->att_lse + l * bs * NHl,
                                       qkv, qkv + Cl, qkv + 2 * Cl, g->pos_full, B, S, S, NHl, C / m->NH, 3 * Cl,
                                       3 * Cl, s->attn, st);
    cuda_matmul_backward_write_bf16(s->seq_full, G(P_QKVW) + (size_t)l * 3 * Cl * C, dqkvb, s->dq,
                                    a->ln1_full + l * bsc, PB(P_QKVW) + (size_t)l * 3 * Cl * C, BS, C, 3 * Cl, st);
    gpu_reduce_scatter(g, m, comm, s->seq_full, s->dx, C);                             // collective 8
    cuda_layernorm_backward_bf16(s->dres, G(P_LN1W) + l * C, G(P_LN1B) + l * C, s->dx, residual, P(P_LN1W) + l * C,
                                 a->ln1_mean + l * bt, a->ln1_rstd + l * bt, BT, C, st);
    gpu_zero(g, dqkvb + Cl, (size_t)Cl * sizeof(float));   // the key bias: exact gradient 0 (model.c)
}

void gpu_megatron_backward(Gpu *g, Model *m, Comm *comm) {
    size_t btc = (size_t)m->B * m->T * m->C;
    gpu_head_backward(g, m, m->L > 0 ? g->a.residual3 + (size_t)(m->L - 1) * btc : g->a.encoded);
    for (int l = m->L - 1; l >= 0; l--) {
        mlp_backward(g, m, comm, l);
        attention_backward(g, m, comm, l);
    }
    cuda_embedding_backward_bf16(G(P_WTE), G(PARAM_WPE), g->s.dres, g->tokens, m->B, m->T, m->C, m->V, g->stream);
}
#endif
