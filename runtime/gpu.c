// The CUDA backend of lsst-run: arenas, host staging, and the LSS forward and backward of
// model.c on the device with the bf16 kernels of kernels/cuda. Read model.c first: every
// step here is the same step there, with the same communication at the same two points.
#include "gpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#ifdef LSST_CUDA
#include "gpu_impl.h"

// A CUDA error mid-step takes the whole job down, as an MPI or NCCL one does (comm_abort).
void gpu_check_(cudaError_t e, const char *call, const char *file, int line) {
    if (e != cudaSuccess) comm_abort("%s:%d: %s failed: %s", file, line, call, cudaGetErrorString(e));
}

// ---- arenas: one allocation per kind, tensors carved at 256-byte boundaries -------------------
typedef struct {
    char *base;
    size_t off;
} Carver;

// A tensor of 0 bytes (not used by this scheme or layout) gets NULL, never an address.
static void *take(Carver *c, size_t bytes) {
    c->off = (c->off + 255) & ~(size_t)255;
    void *p = c->base && bytes ? c->base + c->off : NULL;
    c->off += bytes;
    return p;
}
#define TAKE(c, ptr, count) ((ptr) = take((c), (size_t)(count) * sizeof *(ptr)))

static void layout_state(Gpu *g, const Model *m, Carver *c) {
    size_t n = m->num_params, BT = (size_t)m->B * m->T;
    TAKE(c, g->params, n), TAKE(c, g->grads, n), TAKE(c, g->m, n), TAKE(c, g->v, n);
    TAKE(c, g->params_bf16, n);
    TAKE(c, g->sumsq, NUM_PARAM_TENSORS);
    TAKE(c, g->tokens, BT), TAKE(c, g->targets, BT), TAKE(c, g->pos, m->T);
    TAKE(c, g->pos_full, m->scheme == SCHEME_MEGATRON_SP ? m->S : 0);
    TAKE(c, g->pos_of_rank, m->sp_size > 1 ? m->S : 0);
}

// lss / none without peers (sp 1), unless LSST_QKV=split: a layer's Q, K, V in one (B, T, 3C) tensor,
// the output of ONE product (a->q, s->dq; row stride 3C), as megatron-sp's qkv. Else q (B, T, C)
// and [K|V] (B, T, 2C) apart: with peers the [K|V] product comes first and its all-gather is in
// flight while Q is projected (the paper's overlap), and [K|V] is what the gather sends. Decided
// once (Gpu.qkv_fused, before the arenas are laid out).
static bool qkv_fused(const Model *m) {
    return m->scheme != SCHEME_MEGATRON_SP && m->sp_size == 1 && cuda_kernels_env_switch("LSST_QKV") != 1;
}

// model.c's carve_acts / carve_scratch, in bf16 on the device.
static void layout_acts(Gpu *g, const Model *m, Carver *c) {
    size_t L = m->L, BT = (size_t)m->B * m->T, BS = (size_t)m->B * m->S, C = m->C, Cl = m->Cl, Fl = m->Fl;
    bool mg = m->scheme == SCHEME_MEGATRON_SP, fq = g->qkv_fused;
    size_t rows = mg ? BS : BT, kv_layers = m->cfg.kv == KV_REGATHER ? 1 : L;
    DevActs *a = &g->a;
    TAKE(c, a->encoded, BT * C), TAKE(c, a->ln1, L * BT * C), TAKE(c, a->residual2, L * BT * C);
    TAKE(c, a->ln2, L * BT * C), TAKE(c, a->residual3, L * BT * C), TAKE(c, a->lnf, BT * C);
    TAKE(c, a->logits, BT * m->V);
    TAKE(c, a->q, mg ? 0 : L * BT * (fq ? 3 : 1) * C), TAKE(c, a->kv, mg || fq ? 0 : L * BT * 2 * C);
    TAKE(c, a->kv_full, mg || m->sp_size == 1 ? 0 : kv_layers * BS * 2 * C);
    TAKE(c, a->ln1_full, mg ? L * BS * C : 0), TAKE(c, a->qkv, mg ? L * BS * 3 * Cl : 0);
    TAKE(c, a->ln2_full, mg ? L * BS * C : 0);
    TAKE(c, a->atty, L * rows * Cl), TAKE(c, a->fch, L * rows * Fl), TAKE(c, a->fch_gelu, L * rows * Fl);
    TAKE(c, a->ln1_mean, L * BT), TAKE(c, a->ln1_rstd, L * BT), TAKE(c, a->ln2_mean, L * BT);
    TAKE(c, a->ln2_rstd, L * BT), TAKE(c, a->lnf_mean, BT), TAKE(c, a->lnf_rstd, BT), TAKE(c, a->losses, BT);
    TAKE(c, a->att_lse, L * rows * m->NHl);
}

static void layout_scratch(Gpu *g, const Model *m, Carver *c) {
    size_t BT = (size_t)m->B * m->T, BS = (size_t)m->B * m->S, C = m->C, Cl = m->Cl, Fl = m->Fl;
    bool mg = m->scheme == SCHEME_MEGATRON_SP, peers = m->sp_size > 1, fq = g->qkv_fused;
    size_t rows = mg ? BS : BT, W = gpu_exchange_width(m);
    DevScratch *s = &g->s;
    TAKE(c, s->dres, BT * C), TAKE(c, s->dx, BT * C), TAKE(c, s->tmp, BT * C);
    TAKE(c, s->datty, rows * Cl), TAKE(c, s->dfch, rows * Fl);
    TAKE(c, s->dq, mg ? BS * 3 * Cl : BT * (fq ? 3 : 1) * C), TAKE(c, s->dkv, mg || fq ? 0 : BT * 2 * C);
    TAKE(c, s->seq_full, mg || peers ? BS * W : 0), TAKE(c, s->dseq_full, mg ? BS * C : 0);
    TAKE(c, s->wide_full, peers ? BS * W : 0), TAKE(c, s->wide_local, peers ? BT * W : 0);
    s->attn = take(c, cuda_attention_backward_scratch_bytes(m->B, m->NHl, mg ? m->S : m->T, m->C / m->NH));
}

static void (*const layouts[NUM_ARENAS])(Gpu *, const Model *, Carver *) = {layout_state, layout_acts,
                                                                            layout_scratch};

// Bytes of arena k: its layout carved from no base.
static size_t arena_size(Gpu *g, const Model *m, int k) {
    Carver c = {NULL, 0};
    layouts[k](g, m, &c);
    return c.off;
}

// The kernel module's reduction scratch: the widest reduction is over max(3C, F, V) columns.
static size_t kernel_scratch_bytes(const Model *m) {
    int cols = 3 * m->C;
    if (m->F > cols) cols = m->F;
    if (m->V > cols) cols = m->V;
    size_t need = cuda_kernels_reduction_bytes(cols), floor_bytes = (size_t)1 << 20;
    return need > floor_bytes ? need : floor_bytes;
}

size_t gpu_plan_bytes(const Model *m) {
    Gpu g;
    memset(&g, 0, sizeof g);
    g.qkv_fused = qkv_fused(m);
    size_t total = cuda_kernels_plan_bytes(kernel_scratch_bytes(m));
    for (int k = 0; k < NUM_ARENAS; k++) total += arena_size(&g, m, k);
    return total;
}

size_t gpu_mem_bytes(const Gpu *g) {
    size_t total = cuda_kernels_device_bytes();
    for (int k = 0; k < NUM_ARENAS; k++) total += g->arena_bytes[k];
    return total;
}

const char *gpu_device_name(const Gpu *g) { return g->name; }

void gpu_kernels_line(const Model *m, char *buf, size_t n) {
    const int hs = m->C / m->NH, f = cuda_attention_selected(hs, 0), b = cuda_attention_selected(hs, 1);
    snprintf(buf, n,
             "attention (head size %d): forward v%d %s | backward v%d %s | GELU: %s | bias gradients: %s | "
             "LayerNorm: %s | residual adds: %s | QKV: %s",
             hs, f, cuda_attention_variant_name(hs, f, 0), b, cuda_attention_variant_name(hs, b, 1),
             cuda_matmul_gelu_selected() ? "cuBLASLt epilogues" : "kernels",
             cuda_matmul_bgrad_selected() ? "cuBLASLt epilogues" : "kernels",
             cuda_layernorm_selected() ? "fused" : "split",
             m->scheme == SCHEME_MEGATRON_SP ? "kernel (after the reduce-scatter)"
             : cuda_matmul_residual_selected() ? "cuBLASLt epilogues" : "kernel",
             m->scheme == SCHEME_MEGATRON_SP || qkv_fused(m) ? "one product" : "two products");
}

// ---- open / close ---------------------------------------------------------------------------
// NCCL cannot put two ranks on one GPU. The node's ranks compare the PCI bus ids of the devices
// they picked (device < 0: none), so a launcher that shows each rank only its own GPU
// (CUDA_VISIBLE_DEVICES per task) passes. Collective over the node; sets err once.
static void check_gpu_per_rank(MPI_Comm node, int device, char *err, size_t errlen) {
    enum { ID = 32 };
    int node_rank, node_size;
    mpiCheck(MPI_Comm_rank(node, &node_rank));
    mpiCheck(MPI_Comm_size(node, &node_size));
    char mine[ID] = "", *all = xmalloc((size_t)node_size * ID);
    if (device >= 0) CU(cudaDeviceGetPCIBusId(mine, ID, device));
    mpiCheck(MPI_Allgather(mine, ID, MPI_CHAR, all, ID, MPI_CHAR, node));
    for (int r = 0; r < node_size && mine[0] && !err[0]; r++)
        if (r != node_rank && !strcmp(all + (size_t)r * ID, mine))
            snprintf(err, errlen, "comm: nccl needs a GPU per rank, but ranks %d and %d of this node both use GPU %s "
                     "(comm: mpi lets ranks share GPUs)", r < node_rank ? r : node_rank, r < node_rank ? node_rank : r,
                     mine);
    free(all);
}

static void alloc_arenas(Gpu *g, const Model *m) {
    for (int k = 0; k < NUM_ARENAS; k++) {
        size_t bytes = g->arena_bytes[k] = arena_size(g, m, k);
        CU(cudaMalloc(&g->arena[k], bytes ? bytes : 1));
        CU(cudaMemsetAsync(g->arena[k], 0, bytes, g->stream));
        Carver c = {g->arena[k], 0};
        layouts[k](g, m, &c);
    }
    size_t off = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) g->off[i] = off, off += m->param_sizes[i];
    gpu_to_device(g, g->pos, m->pos, (size_t)m->T * sizeof(int));
    if (g->pos_full) gpu_to_device(g, g->pos_full, m->pos_full, (size_t)m->S * sizeof(int));
    if (g->pos_of_rank) gpu_to_device(g, g->pos_of_rank, m->pos_of_rank, (size_t)m->S * sizeof(int));
}

int gpu_check_env(char *err, size_t errlen) { return cuda_kernels_env_check(err, errlen); }

Gpu *gpu_open(Model *m, Comm *comm, char *err, size_t errlen) {
    MPI_Comm node;
    int node_rank, ndev = 0;
    mpiCheck(MPI_Comm_split_type(comm_group(comm, GROUP_WORLD), MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    mpiCheck(MPI_Comm_rank(node, &node_rank));
    cudaError_t e = cudaGetDeviceCount(&ndev);
    // The GPU of this rank's index among the job's processes on its node (node_rank: MPI's view,
    // which SLURM_LOCALID, OMPI_COMM_WORLD_LOCAL_RANK and the like give under their own launcher;
    // but mpirun inside a Slurm allocation leaves SLURM_LOCALID 0 on every rank).
    int device = e == cudaSuccess && ndev > 0 ? node_rank % ndev : -1;
    err[0] = '\0';
    if (device < 0)
        snprintf(err, errlen, "backend: cuda, but no CUDA device is visible (%s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    if (m->cfg.comm == COMM_NCCL) check_gpu_per_rank(node, device, err, errlen);   // every rank, even without a GPU
    mpiCheck(MPI_Comm_free(&node));
    if (err[0]) return NULL;
    Gpu *g = xmalloc(sizeof *g);
    memset(g, 0, sizeof *g);
    g->device = device;
    g->qkv_fused = qkv_fused(m);
    CU(cudaSetDevice(g->device));
    struct cudaDeviceProp prop;
    CU(cudaGetDeviceProperties(&prop, g->device));
    if (prop.major < 8) {
        snprintf(err, errlen, "backend: cuda needs compute capability 8.0 or newer for bf16 (cuda:%d %s is %d.%d)",
                 g->device, prop.name, prop.major, prop.minor);
        free(g);
        return NULL;
    }
    snprintf(g->name, sizeof g->name, "cuda:%d %s", g->device, prop.name);
    g->nccl = m->cfg.comm == COMM_NCCL;
    CU(cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking));
    cuda_kernels_init(kernel_scratch_bytes(m));
    alloc_arenas(g, m);
    CU(cudaMallocHost((void **)&g->h_losses, (size_t)m->B * m->T * sizeof(float)));
    return g;
}

void gpu_close(Gpu *g) {
    if (!g) return;
    CU(cudaStreamSynchronize(g->stream));
    gpu_comm_close(g);
    CU(cudaFreeHost(g->h_losses));
    for (int k = 0; k < NUM_ARENAS; k++) CU(cudaFree(g->arena[k]));
    CU(cudaStreamDestroy(g->stream));
    cuda_kernels_shutdown();
    free(g);
}

// ---- host <-> device ------------------------------------------------------------------------
void gpu_to_device(Gpu *g, void *dst, const void *src, size_t bytes) {
    CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, g->stream));
}
void gpu_to_host(Gpu *g, void *dst, const void *src, size_t bytes) {
    CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, g->stream));
    gpu_wait(g);
}
void gpu_zero(Gpu *g, void *p, size_t bytes) { CU(cudaMemsetAsync(p, 0, bytes, g->stream)); }

void gpu_state_to_device(Gpu *g, const Model *m) {
    size_t bytes = m->num_params * sizeof(float);
    gpu_to_device(g, g->params, m->params_mem, bytes);
    gpu_to_device(g, g->m, m->m_mem, bytes);
    gpu_to_device(g, g->v, m->v_mem, bytes);
    cuda_copy_to_bf16(g->params_bf16, g->params, (long)m->num_params, g->stream);
    CU(cudaStreamSynchronize(g->stream));
}

void gpu_state_to_host(Gpu *g, Model *m) {
    size_t bytes = m->num_params * sizeof(float);
    gpu_to_host(g, m->params_mem, g->params, bytes);
    gpu_to_host(g, m->m_mem, g->m, bytes);
    gpu_to_host(g, m->v_mem, g->v, bytes);
}

void gpu_grads_to_host(Gpu *g, Model *m) { gpu_to_host(g, m->grads_mem, g->grads, m->num_params * sizeof(float)); }

void gpu_grads_to_device(Gpu *g, const Model *m) {
    gpu_to_device(g, g->grads, m->grads_mem, m->num_params * sizeof(float));
}

// ---- output head ----------------------------------------------------------------------------------
double gpu_head_forward(Gpu *g, const Model *m, const bf16 *residual, float dloss) {
    int BT = m->B * m->T, C = m->C, V = m->V;
    DevActs *a = &g->a;
    cudaStream_t st = g->stream;
    cuda_layernorm_forward_bf16(a->lnf, a->lnf_mean, a->lnf_rstd, residual, P(P_LNFW), P(P_LNFB), BT, C, st);
    cuda_matmul_forward_bf16(a->logits, a->lnf, PB(P_WOUT), NULL, BT, C, V, st);
    if (dloss != 0.0f) cuda_softmax_xent_forward_backward_bf16(a->losses, a->logits, g->targets, BT, V, dloss, st);
    else cuda_softmax_xent_forward_bf16(a->losses, a->logits, g->targets, BT, V, st);
    gpu_to_host(g, g->h_losses, a->losses, (size_t)BT * sizeof(float));
    double sum = 0.0;
    for (int i = 0; i < BT; i++) sum += g->h_losses[i];
    return sum;
}

void gpu_head_backward(Gpu *g, const Model *m, const bf16 *residual) {
    int BT = m->B * m->T, C = m->C, V = m->V;
    DevActs *a = &g->a;
    DevScratch *s = &g->s;
    cudaStream_t st = g->stream;
    cuda_matmul_backward_write_bf16(s->dx, G(P_WOUT), NULL, a->logits, a->lnf, PB(P_WOUT), BT, C, V, st);
    gpu_zero(g, s->dres, (size_t)BT * C * sizeof(bf16));
    cuda_layernorm_backward_bf16(s->dres, G(P_LNFW), G(P_LNFB), s->dx, residual, P(P_LNFW), a->lnf_mean, a->lnf_rstd,
                                 BT, C, st);
}

// ---- LSS forward ---------------------------------------------------------------------------------
static bf16 *kv_full_of(Gpu *g, const Model *m, int l) {
    if (m->sp_size == 1) return g->a.kv + (size_t)l * m->B * m->T * 2 * m->C;
    size_t layer = m->cfg.kv == KV_REGATHER ? 0 : (size_t)l;
    return g->a.kv_full + layer * m->B * m->S * 2 * m->C;
}

// Layer l's Q, K, V from ln1 and the attention over them into atty (lse: its statistics).
static void qkv_attention_forward(Gpu *g, Model *m, Comm *comm, int l, const bf16 *ln1) {
    int B = m->B, T = m->T, C = m->C, NH = m->NH, S = m->S, BT = B * T;
    size_t btc = (size_t)BT * C;
    DevActs *a = &g->a;
    cudaStream_t st = g->stream;
    bf16 *atty = a->atty + l * btc;
    float *lse = a->att_lse + l * (size_t)BT * NH;
    const bf16 *qkvw = PB(P_QKVW) + (size_t)l * 3 * C * C, *qkvb = PB(P_QKVB) + (size_t)l * 3 * C;
    if (g->qkv_fused) {
        bf16 *qkv = a->q + l * 3 * btc;
        cuda_matmul_forward_bf16(qkv, ln1, qkvw, qkvb, BT, C, 3 * C, st);
        cuda_attention_forward_bf16(atty, lse, qkv, qkv + C, qkv + 2 * C, g->pos, B, T, S, NH, C / NH, 3 * C, 3 * C,
                                    st);
        return;
    }
    bf16 *q = a->q + l * btc, *kv = a->kv + l * 2 * btc, *kv_full = kv_full_of(g, m, l);
    // [K|V] first; its all-gather is in flight while the GPU projects Q.
    cuda_matmul_forward_bf16(kv, ln1, qkvw + (size_t)C * C, qkvb + C, BT, C, 2 * C, st);
    CommPending gather;
    if (m->sp_size > 1) gpu_gather_post(g, m, comm, kv, 2 * C, &gather);
    cuda_matmul_forward_bf16(q, ln1, qkvw, qkvb, BT, C, C, st);
    if (m->sp_size > 1) gpu_gather_finish(g, m, comm, kv_full, 2 * C, &gather);
    cuda_attention_forward_bf16(atty, lse, q, kv_full, kv_full + C, g->pos, B, T, S, NH, C / NH, C, 2 * C, st);
}

static double lss_forward(Gpu *g, Model *m, Comm *comm, float dloss) {
    int B = m->B, T = m->T, C = m->C, F = m->F, BT = B * T;
    DevActs *a = &g->a;
    cudaStream_t st = g->stream;
    size_t btc = (size_t)BT * C, bt = (size_t)BT;
    cuda_embedding_forward_bf16(a->encoded, g->tokens, P(P_WTE), P(PARAM_WPE), B, T, C, st);
    const bf16 *residual = a->encoded;
    for (int l = 0; l < m->L; l++) {
        bf16 *ln1 = a->ln1 + l * btc, *atty = a->atty + l * btc, *residual2 = a->residual2 + l * btc;
        bf16 *ln2 = a->ln2 + l * btc, *fch = a->fch + l * bt * F, *fch_gelu = a->fch_gelu + l * bt * F;
        bf16 *residual3 = a->residual3 + l * btc;

        cuda_layernorm_forward_bf16(ln1, a->ln1_mean + l * bt, a->ln1_rstd + l * bt, residual, P(P_LN1W) + l * C,
                                    P(P_LN1B) + l * C, BT, C, st);
        qkv_attention_forward(g, m, comm, l, ln1);
        cuda_matmul_residual_forward_bf16(residual2, g->s.tmp, residual, atty, PB(P_ATTPROJW) + (size_t)l * C * C,
                                          PB(P_ATTPROJB) + l * C, BT, C, C, st);

        cuda_layernorm_forward_bf16(ln2, a->ln2_mean + l * bt, a->ln2_rstd + l * bt, residual2, P(P_LN2W) + l * C,
                                    P(P_LN2B) + l * C, BT, C, st);
        cuda_matmul_gelu_forward_bf16(fch_gelu, fch, ln2, PB(P_FCW) + (size_t)l * F * C, PB(P_FCB) + (size_t)l * F,
                                      BT, C, F, st);
        cuda_matmul_residual_forward_bf16(residual3, g->s.tmp, residual2, fch_gelu,
                                          PB(P_FCPROJW) + (size_t)l * C * F, PB(P_FCPROJB) + l * C, BT, F, C, st);
        residual = residual3;
    }
    return gpu_head_forward(g, m, residual, dloss);
}

// ---- LSS backward --------------------------------------------------------------------------------
static void mlp_backward(Gpu *g, const Model *m, int l) {
    int BT = m->B * m->T, C = m->C, F = m->F;
    size_t btc = (size_t)BT * C, bt = (size_t)BT;
    DevActs *a = &g->a;
    DevScratch *s = &g->s;
    cudaStream_t st = g->stream;
    cuda_matmul_backward_dgelu_bf16(s->dfch, G(P_FCPROJW) + (size_t)l * C * F, G(P_FCPROJB) + l * C, s->dres,
                                    a->fch_gelu + l * bt * F, PB(P_FCPROJW) + (size_t)l * C * F, a->fch + l * bt * F,
                                    BT, F, C, st);
    cuda_matmul_backward_write_bf16(s->dx, G(P_FCW) + (size_t)l * F * C, G(P_FCB) + (size_t)l * F, s->dfch,
                                    a->ln2 + l * btc, PB(P_FCW) + (size_t)l * F * C, BT, C, F, st);
    cuda_layernorm_backward_bf16(s->dres, G(P_LN2W) + l * C, G(P_LN2B) + l * C, s->dx, a->residual2 + l * btc,
                                 P(P_LN2W) + l * C, a->ln2_mean + l * bt, a->ln2_rstd + l * bt, BT, C, st);
}

// The attention's backward from datty to dq, d[K|V] (this rank's rows), then their products' into
// dx (written) and the QKV weight and bias gradients.
static void qkv_attention_backward(Gpu *g, Model *m, Comm *comm, int l) {
    int B = m->B, T = m->T, C = m->C, NH = m->NH, S = m->S, BT = B * T, hs = C / NH;
    size_t btc = (size_t)BT * C;
    DevActs *a = &g->a;
    DevScratch *s = &g->s;
    cudaStream_t st = g->stream;
    const bf16 *ln1 = a->ln1 + l * btc, *atty = a->atty + l * btc, *qkvw = PB(P_QKVW) + (size_t)l * 3 * C * C;
    const float *lse = a->att_lse + l * (size_t)BT * NH;
    float *dqkvw = G(P_QKVW) + (size_t)l * 3 * C * C, *dqkvb = G(P_QKVB) + (size_t)l * 3 * C;
    if (g->qkv_fused) {
        const bf16 *qkv = a->q + l * 3 * btc;
        cuda_attention_backward_write_bf16(s->dq, s->dq + C, s->dq + 2 * C, s->datty, atty, lse, qkv, qkv + C,
                                           qkv + 2 * C, g->pos, B, T, S, NH, hs, 3 * C, 3 * C, s->attn, st);
        cuda_matmul_backward_write_bf16(s->dx, dqkvw, dqkvb, s->dq, ln1, qkvw, BT, C, 3 * C, st);
        return;
    }
    const bf16 *q = a->q + l * btc;
    bf16 *kv_full = kv_full_of(g, m, l), *dkv_full = m->sp_size == 1 ? s->dkv : s->seq_full;
    if (m->cfg.kv == KV_REGATHER && m->sp_size > 1 && l != m->L - 1) {
        gpu_gather(g, m, comm, a->kv + l * 2 * btc, kv_full, 2 * C);
    }
    cuda_attention_backward_write_bf16(s->dq, dkv_full, dkv_full + C, s->datty, atty, lse, q, kv_full, kv_full + C,
                                       g->pos, B, T, S, NH, hs, C, 2 * C, s->attn, st);
    // ONE reduce-scatter returns every rank's partial d[K|V] to the owning segments.
    if (m->sp_size > 1) gpu_reduce_scatter(g, m, comm, s->seq_full, s->dkv, 2 * C);
    cuda_matmul_backward_write_bf16(s->dx, dqkvw, dqkvb, s->dq, ln1, qkvw, BT, C, C, st);
    cuda_matmul_backward_bf16(s->dx, dqkvw + (size_t)C * C, dqkvb + C, s->dkv, ln1, qkvw + (size_t)C * C, BT, C,
                              2 * C, st);
}

static void attention_backward(Gpu *g, Model *m, Comm *comm, int l) {
    int BT = m->B * m->T, C = m->C;
    size_t btc = (size_t)BT * C, bt = (size_t)BT;
    DevActs *a = &g->a;
    DevScratch *s = &g->s;
    cudaStream_t st = g->stream;
    const bf16 *residual = l == 0 ? a->encoded : a->residual3 + (size_t)(l - 1) * btc;
    cuda_matmul_backward_write_bf16(s->datty, G(P_ATTPROJW) + (size_t)l * C * C, G(P_ATTPROJB) + l * C, s->dres,
                                    a->atty + l * btc, PB(P_ATTPROJW) + (size_t)l * C * C, BT, C, C, st);
    qkv_attention_backward(g, m, comm, l);
    cuda_layernorm_backward_bf16(s->dres, G(P_LN1W) + l * C, G(P_LN1B) + l * C, s->dx, residual, P(P_LN1W) + l * C,
                                 a->ln1_mean + l * bt, a->ln1_rstd + l * bt, BT, C, st);
    // The key bias: exact gradient 0 (model.c).
    gpu_zero(g, G(P_QKVB) + (size_t)l * 3 * C + C, (size_t)C * sizeof(float));
}

static void lss_backward(Gpu *g, Model *m, Comm *comm) {
    size_t btc = (size_t)m->B * m->T * m->C;
    gpu_head_backward(g, m, m->L > 0 ? g->a.residual3 + (size_t)(m->L - 1) * btc : g->a.encoded);
    for (int l = m->L - 1; l >= 0; l--) {
        mlp_backward(g, m, l);
        attention_backward(g, m, comm, l);
    }
    cuda_embedding_backward_bf16(G(P_WTE), G(PARAM_WPE), g->s.dres, g->tokens, m->B, m->T, m->C, m->V, g->stream);
}

// ---- the passes -----------------------------------------------------------------------------------
double gpu_forward(Gpu *g, Model *m, Comm *comm, float dloss) {
    size_t bt = (size_t)m->B * m->T;
    gpu_to_device(g, g->tokens, m->tokens, bt * sizeof(int));
    gpu_to_device(g, g->targets, m->targets, bt * sizeof(int));
    return m->scheme == SCHEME_MEGATRON_SP ? gpu_megatron_forward(g, m, comm, dloss) : lss_forward(g, m, comm, dloss);
}

void gpu_backward(Gpu *g, Model *m, Comm *comm) {
    gpu_zero(g, g->grads, m->num_params * sizeof(float));
    if (m->scheme == SCHEME_MEGATRON_SP) gpu_megatron_backward(g, m, comm);
    else lss_backward(g, m, comm);
}

// ---- optimizer ------------------------------------------------------------------------------------
void gpu_grad_sum_squares(Gpu *g, const Model *m, double *out) {
    cuda_sum_squares_tensors(g->sumsq, g->grads, m->param_sizes, NUM_PARAM_TENSORS, g->stream);
    gpu_to_host(g, out, g->sumsq, NUM_PARAM_TENSORS * sizeof(double));
}

void gpu_adamw(Gpu *g, size_t off, size_t n, float lr, float beta1, float beta2, float eps, float weight_decay,
               int t, float grad_scale) {
    cuda_adamw_update(g->params + off, g->params_bf16 + off, g->grads + off, g->m + off, g->v + off, (long)n, lr,
                      beta1, beta2, eps, weight_decay, t, grad_scale, g->stream);
}

#else  // built without CUDA: config validation refuses backend: cuda before any of this is reached

int gpu_check_env(char *err, size_t errlen) { (void)err, (void)errlen; return 0; }

Gpu *gpu_open(Model *m, Comm *comm, char *err, size_t errlen) {
    (void)m, (void)comm;
    snprintf(err, errlen, "backend: cuda, but this lsst-run was built without CUDA (rebuild with make CUDA=1)");
    return NULL;
}
static _Noreturn void not_built(void) { lsst_die(1, "internal error: CUDA backend called in a build without CUDA"); }
void gpu_close(Gpu *g) { if (g) not_built(); }
size_t gpu_plan_bytes(const Model *m) { (void)m; not_built(); }
size_t gpu_mem_bytes(const Gpu *g) { (void)g; not_built(); }
const char *gpu_device_name(const Gpu *g) { (void)g; not_built(); }
void gpu_kernels_line(const Model *m, char *buf, size_t n) { (void)m, (void)buf, (void)n; not_built(); }
void gpu_state_to_device(Gpu *g, const Model *m) { (void)g, (void)m; not_built(); }
void gpu_state_to_host(Gpu *g, Model *m) { (void)g, (void)m; not_built(); }
void gpu_grads_to_host(Gpu *g, Model *m) { (void)g, (void)m; not_built(); }
void gpu_grads_to_device(Gpu *g, const Model *m) { (void)g, (void)m; not_built(); }
double gpu_forward(Gpu *g, Model *m, Comm *comm, float dloss) { (void)g, (void)m, (void)comm, (void)dloss; not_built(); }
void gpu_backward(Gpu *g, Model *m, Comm *comm) { (void)g, (void)m, (void)comm; not_built(); }
void gpu_grad_sum_squares(Gpu *g, const Model *m, double *out) { (void)g, (void)m, (void)out; not_built(); }
void gpu_adamw(Gpu *g, size_t off, size_t n, float lr, float beta1, float beta2, float eps, float weight_decay,
               int t, float grad_scale) {
    (void)g, (void)off, (void)n, (void)lr, (void)beta1, (void)beta2, (void)eps, (void)weight_decay, (void)t;
    (void)grad_scale;
    not_built();
}
#endif
