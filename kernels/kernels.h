// The compute kernels of lsst-run behind one backend-neutral interface.
// Flat functions with explicit shapes, llm.c style. Shapes are row-major.
//
// Conventions (every backend keeps them):
//  - Forward kernels overwrite their outputs.
//  - Backward kernels ACCUMULATE (+=) into every gradient output (dinp, dweight,
//    dbias, dq, dkv, ...); the caller zeroes gradient buffers when it needs to.
//  - B = sequences, T = tokens per sequence held here, C = model dim,
//    NH = heads, hs = C / NH, F = MLP hidden size, V = vocab size, N = rows.
//  - Deterministic: the same inputs and thread count give the same bits.
// The CPU implementations are in kernels/cpu/ (C, OpenMP, CBLAS sgemm); the CUDA
// ones (kernels/cuda/) keep the same shapes on device pointers.
#pragma once
#include <stddef.h>

// ---- embedding --------------------------------------------------------------
// out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:]
// wpe holds the rows of the positions this rank owns, in local order (T, C).
void embedding_forward(float *out, const int *tokens, const float *wte, const float *wpe, int B, int T, int C);
// dwte[tokens[b,t],:] += dout[b,t,:]; dwpe[t,:] += sum_b dout[b,t,:]
void embedding_backward(float *dwte, float *dwpe, const float *dout, const int *tokens, int B, int T, int C);

// ---- layernorm --------------------------------------------------------------
// out (N,C), mean (N), rstd (N) saved for backward; eps = 1e-5.
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C);
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C);

// ---- matmul (CBLAS sgemm) ------------------------------------------------------
// out (N,OC) = inp (N,C) @ weight(OC,C)^T + bias (OC) ; bias may be NULL.
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC);
// dinp (N,C) += dout @ weight; dweight (OC,C) += dout^T @ inp; dbias (OC) += colsum(dout).
// dinp / dbias may be NULL (not needed).
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int C, int OC);

// ---- GELU (tanh approximation) -------------------------------------------------
void gelu_forward(float *out, const float *inp, long n);
void gelu_backward(float *dinp, const float *inp, const float *dout, long n);

// ---- residual -------------------------------------------------------------------
void residual_forward(float *out, const float *a, const float *b, long n);   // out = a + b

// ---- causal multi-head attention, memory-efficient (flash-style) ---------------
// Queries are this rank's tokens; keys/values are the FULL sequence (gathered), in
// global position order. Head h uses columns [h*hs, (h+1)*hs) of q, k, v rows.
//   q    (B, Tq, ·) row stride ldq     ; query t has global position q_pos[t]
//   k, v (B, Tk, ·) row stride ldkv    ; key j has global position j
//   out  (B, Tq, C) row stride C
//   lse  (B, NH, Tq) log-sum-exp of the scaled scores per query (saved for backward)
// Key j is visible to query t iff j <= q_pos[t]. Scale 1/sqrt(hs). No (Tq x Tk)
// matrix is ever held: work is blockwise with an online softmax; memory is
// O(threads x block x (Tk-block + hs)).
void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                       const int *q_pos, int B, int Tq, int Tk, int NH, int hs, int ldq, int ldkv);
// Recomputes the scores blockwise from q, k, v, lse. Accumulates dq (B,Tq,·; ldq)
// and dk, dv (B,Tk,·; ldkv): dk/dv are partial (this rank's queries only) and are
// summed across the sequence group by the caller (the LSS reduce-scatter).
void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                        const float *q, const float *k, const float *v, const int *q_pos, int B, int Tq, int Tk,
                        int NH, int hs, int ldq, int ldkv);

// ---- output: fused softmax cross-entropy -----------------------------------------
// logits (N,V) in; losses[n] = -log softmax(logits[n])[targets[n]] (nats).
// Rows with targets[n] < 0 are ignored (loss 0, gradient 0).
// The backward variant overwrites logits IN PLACE with dloss * (softmax - onehot),
// so no probability matrix is ever materialized besides the logits themselves.
void softmax_xent_forward(float *losses, const float *logits, const int *targets, int N, int V);
void softmax_xent_forward_backward(float *losses, float *logits, const int *targets, int N, int V, float dloss);

// ---- optimizer --------------------------------------------------------------------
// AdamW with bias correction and decoupled weight decay; t is the 1-based step.
// p -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * p)
void adamw_update(float *params, const float *grads, float *m, float *v, long n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int t);
// Sum of squares (accumulated in double) and in-place scaling, for gradient clipping.
double sum_squares(const float *x, long n);
void scale_inplace(float *x, long n, float s);
