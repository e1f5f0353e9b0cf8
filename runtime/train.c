// The training loop. One step reads top to bottom: batch -> forward (with the
// [K|V] all-gathers) -> backward (with the d[K|V] reduce-scatters) -> double
// gradient averaging -> clip -> AdamW -> metrics.
#include "train.h"

#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "common.h"
#include "gpu.h"
#include "kernels.h"
#include "memory.h"

static volatile sig_atomic_t g_stop_signal;
static void on_stop_signal(int sig) { g_stop_signal = sig; }

// Rank 0 speaks for the job (errors that every rank hits identically).
static void say(Trainer *tr, FILE *fp, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(Trainer *tr, FILE *fp, const char *fmt, ...) {
    if (tr->comm.rank != 0) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(fp, "%s%s\n", tr->prefix, line);
    if (tr->log) { fprintf(tr->log, "%s\n", line); fflush(tr->log); }
}

double lr_at(const RunConfig *cfg, int64_t step) {
    if (cfg->warmup > 0 && step <= cfg->warmup) return cfg->lr * (double)step / (double)cfg->warmup;
    double span = (double)(cfg->steps - cfg->warmup);
    double progress = span > 0 ? (double)(step - cfg->warmup) / span : 1.0;
    if (progress > 1.0) progress = 1.0;
    return cfg->lr_min + 0.5 * (cfg->lr - cfg->lr_min) * (1.0 + cos(M_PI * progress));
}

// ---- data: this rank's tokens of each of its sequences ------------------------
// Local tokens are contiguous runs of global positions (one run, or two with zigzag);
// each run reads its tokens plus one more for the shifted target.
static int load_sequence(Trainer *tr, DataSplit *d, uint64_t start, int b, bool valid_row, char *err, size_t errlen) {
    Model *m = &tr->model;
    int T = m->T;
    for (int t0 = 0; t0 < T;) {
        int t1 = t0 + 1;
        while (t1 < T && m->pos[t1] == m->pos[t1 - 1] + 1) t1++;
        int n = t1 - t0;
        int *tmp = tr->read_buf;
        if (data_read(d, start + (uint64_t)m->pos[t0], n + 1, tmp, err, errlen) != 0) return -1;
        for (int i = 0; i < n; i++) {
            m->tokens[(size_t)b * T + t0 + i] = tmp[i];
            m->targets[(size_t)b * T + t0 + i] = valid_row ? tmp[i + 1] : -1;
        }
        t0 = t1;
    }
    return 0;
}

static int load_train_batch(Trainer *tr, int64_t step, char *err, size_t errlen) {
    uint64_t ntok = data_tokens(tr->train);
    for (int b = 0; b < tr->local_batch; b++) {
        int64_t index = (int64_t)tr->comm.dp_rank * tr->local_batch + b;
        uint64_t start = data_sample_start(tr->cfg.seed, step, index, ntok, tr->cfg.seq_len);
        if (load_sequence(tr, tr->train, start, b, true, err, errlen) != 0) return -1;
    }
    return 0;
}

// A read that failed (a damaged shard): with several ranks the whole job ends here, as on an MPI
// error (comm_abort): a rank that returned alone would leave its peers waiting in a collective.
static int read_failed(Trainer *tr, const char *err) {
    if (tr->comm.world_size > 1) comm_abort("%s", err);
    lsst_error("%s", err);
    return -1;
}

static bool eval_due(const RunConfig *c, int64_t step) {
    return c->eval_every > 0 && (step % c->eval_every == 0 || step == c->steps);
}

// ---- the backend: the model's passes on the CPU or on this rank's GPU ----------------
static double forward(Trainer *tr, float dloss) {
    return tr->gpu ? gpu_forward(tr->gpu, &tr->model, &tr->comm, dloss) : model_forward(&tr->model, &tr->comm, dloss);
}

static void backward(Trainer *tr) {
    if (tr->gpu) gpu_backward(tr->gpu, &tr->model, &tr->comm);
    else model_backward(&tr->model, &tr->comm);
}

// ---- gradients ------------------------------------------------------------------
// Sum of the gradients [off, off + n) over a group: on the device (comm: nccl) or on the host.
static void grads_allreduce(Trainer *tr, CommGroup grp, size_t off, size_t n) {
    if (tr->gpu && gpu_nccl(tr->gpu)) gpu_allreduce_grads(tr->gpu, &tr->comm, grp, off, n);
    else comm_allreduce_sum(&tr->comm, grp, tr->model.grads_mem + off, (long)n);
}

// Double gradient averaging (ARCHITECTURE §4.2, step 5). Each rank's loss is
// scaled by 1/(global tokens), so SUMS over the groups give the exact gradient of
// the global mean loss. Replicated weights: over the sequence group, then the data
// group. Tensors held in shares (the wpe rows of a sequence rank; megatron-sp's
// heads and columns): the data group only.
static void average_gradients(Trainer *tr) {
    Model *m = &tr->model;
    if (tr->comm.world_size == 1) return;
    bool staged = tr->gpu && !gpu_nccl(tr->gpu);   // comm: mpi sums device gradients on the host
    if (staged) gpu_grads_to_host(tr->gpu, m);
    size_t off = 0, run_start = 0, run_len = 0;
    for (int i = 0; i <= NUM_PARAM_TENSORS; i++) { // one call per run of replicated tensors
        bool replicated = i < NUM_PARAM_TENSORS && m->shard[i] == SHARD_NONE;
        if (replicated) {
            if (run_len == 0) run_start = off;
            run_len += m->param_sizes[i];
        } else if (run_len > 0) {
            grads_allreduce(tr, GROUP_SEQ, run_start, run_len);
            run_len = 0;
        }
        if (i < NUM_PARAM_TENSORS) off += m->param_sizes[i];
    }
    grads_allreduce(tr, GROUP_DATA, 0, m->num_params);
    if (staged) gpu_grads_to_device(tr->gpu, m);
}

// Global gradient norm: replicated tensors are identical on every rank of the
// sequence group; the squares of the shares are summed over it.
static double gradient_norm(Trainer *tr) {
    Model *m = &tr->model;
    double sq[2] = {0, 0}, per_tensor[NUM_PARAM_TENSORS]; // replicated, shared out
    if (tr->gpu)
        gpu_grad_sum_squares(tr->gpu, m, per_tensor);
    else
        for (size_t i = 0, off = 0; i < NUM_PARAM_TENSORS; off += m->param_sizes[i++])
            per_tensor[i] = sum_squares(m->grads_mem + off, (long)m->param_sizes[i]);
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) sq[m->shard[i] != SHARD_NONE] += per_tensor[i];
    comm_allreduce_sum_double(&tr->comm, GROUP_SEQ, &sq[1], 1);
    return sqrt(sq[0] + sq[1]);
}

static bool decays(int i) {
    const char *n = param_names[i];
    return !strcmp(n, "wte") || !strcmp(n, "wpe") || !strcmp(n, "wout") || !strcmp(n, "h.qkvw") ||
           !strcmp(n, "h.attprojw") || !strcmp(n, "h.fcw") || !strcmp(n, "h.fcprojw");
}

// grad_scale: the clipping factor (1: none). The GPU applies it inside AdamW (no pass of its own
// over the gradients; the same bits); the CPU has scaled the gradients already (train_step).
static void optimizer_step(Trainer *tr, double lr, int64_t step, float grad_scale) {
    Model *m = &tr->model;
    const RunConfig *c = &tr->cfg;
    size_t off = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        size_t n = m->param_sizes[i];
        float wd = decays(i) ? (float)c->weight_decay : 0.0f;
        if (tr->gpu)
            gpu_adamw(tr->gpu, off, n, (float)lr, (float)c->beta1, (float)c->beta2, (float)c->eps, wd, (int)step,
                      grad_scale);
        else
            adamw_update(m->params_mem + off, m->grads_mem + off, m->m_mem + off, m->v_mem + off, (long)n, (float)lr,
                         (float)c->beta1, (float)c->beta2, (float)c->eps, wd, (int)step);
        off += n;
    }
}

// ---- one training step ------------------------------------------------------------
static int train_step(Trainer *tr, int64_t step, StepRow *row) {
    Model *m = &tr->model;
    const RunConfig *c = &tr->cfg;
    if (tr->gpu) gpu_sync(tr->gpu, &tr->comm);   // the evaluation before (and its NCCL time): not this step's
    double t0 = now_seconds();
    comm_stats_reset(&tr->comm);
    char err[512];
    if (tr->prefetched != step && load_train_batch(tr, step, err, sizeof err) != 0) return read_failed(tr, err);
    float dloss = (float)(1.0 / ((double)c->batch * (double)c->seq_len));
    double loss_sum = forward(tr, dloss);
    backward(tr);
    // The next step's batch, read while the GPU runs this backward (queued: the host would only
    // wait for it); the forward has copied this step's tokens to the device, the CPU backward is
    // done with them. Not before an evaluation (its windows take the buffers). A read that fails
    // here is tried again, and reported, at the next step's start: this step still ends and saves.
    tr->prefetched = 0;
    if (step < c->steps && !eval_due(c, step) && load_train_batch(tr, step + 1, err, sizeof err) == 0)
        tr->prefetched = step + 1;
    average_gradients(tr);
    comm_allreduce_sum_double(&tr->comm, GROUP_WORLD, &loss_sum, 1);
    double grad_norm = gradient_norm(tr);
    float grad_scale = 1.0f;
    if (c->clip > 0 && grad_norm > c->clip) {
        grad_scale = (float)(c->clip / grad_norm);
        if (!tr->gpu) scale_inplace(m->grads_mem, (long)m->num_params, grad_scale);
    }
    double lr = lr_at(c, step);
    optimizer_step(tr, lr, step, grad_scale);
    if (tr->gpu) gpu_sync(tr->gpu, &tr->comm);
    double t_step = now_seconds() - t0;

    memset(row, 0, sizeof *row);
    row->step = step;
    row->loss = loss_sum / ((double)c->batch * (double)c->seq_len);
    row->lr = lr;
    row->grad_norm = grad_norm;
    row->tokens = (int64_t)m->B * m->T;
    row->t_step = t_step;
    row->t_comm = tr->comm.stats.seconds;
    row->t_compute = t_step - row->t_comm;
    row->comm_bytes = tr->comm.stats.bytes;
    row->mem_peak = (int64_t)(tr->gpu ? gpu_mem_bytes(tr->gpu) : rt_mem_peak()); // cuda: device bytes
    return 0;
}

// ---- evaluation --------------------------------------------------------------------
int trainer_evaluate(Trainer *tr, const char *split_name, DataSplit *split, double *loss_out) {
    Model *m = &tr->model;
    int per_round = tr->local_batch * tr->comm.dp_size;
    int n = tr->cfg.eval_sequences;
    uint64_t ntok = data_tokens(split);
    double sums[2] = {0, 0}; // loss sum, tokens
    tr->prefetched = 0;      // the windows below take the batch buffers
    for (int r = 0; r * per_round < n; r++) {
        for (int b = 0; b < tr->local_batch; b++) {
            int64_t index = (int64_t)r * per_round + (int64_t)tr->comm.dp_rank * tr->local_batch + b;
            bool valid = index < n;
            char err[512];
            uint64_t start = data_eval_start(valid ? index : 0, ntok, tr->cfg.seq_len);
            if (load_sequence(tr, split, start, b, valid, err, sizeof err) != 0) return read_failed(tr, err);
            if (valid) sums[1] += m->T;
        }
        sums[0] += forward(tr, 0.0f);
    }
    comm_allreduce_sum_double(&tr->comm, GROUP_WORLD, sums, 2);
    double loss = sums[0] / sums[1];
    EvalRow row = {.step = tr->step, .loss = loss, .bpc = loss / M_LN2};
    snprintf(row.split, sizeof row.split, "%s", split_name);
    if (metrics_append_eval(tr->metrics, &row) != 0) lsst_warn("%scannot append to the metrics file", tr->prefix);
    say(tr, stdout, "eval %s | step %lld | loss %.4f | bpc %.4f", split_name, (long long)tr->step, loss, row.bpc);
    *loss_out = loss;
    return 0;
}

// ---- checkpoints: full tensors, whatever the layout --------------------------------
// Tensors held in shares (wpe rows, megatron-sp's heads and columns) and their AdamW
// moments are gathered over the sequence group into full tensors; rank 0 writes.
// ckpt_full holds, for every shared-out tensor, its full params, m and v.
static void ckpt_tensors(Trainer *tr, CkptTensor ts[3][NUM_PARAM_TENSORS]) {
    Model *m = &tr->model;
    float *base[3] = {m->params_mem, m->m_mem, m->v_mem};
    float *full = tr->ckpt_full;
    size_t off = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        for (int k = 0; k < 3; k++) {
            ts[k][i].name = param_names[i];
            model_param_shape(m, i, &ts[k][i].ndim, ts[k][i].shape);
            ts[k][i].data = base[k] + off;
            if (m->shard[i] != SHARD_NONE) {
                ts[k][i].data = full;
                full += model_full_size(m, i);
            }
        }
        off += m->param_sizes[i];
    }
}

static size_t ckpt_full_size(const Model *m, size_t *xchg) {
    size_t n = 0;
    *xchg = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        if (m->shard[i] == SHARD_NONE) continue;
        n += 3 * model_full_size(m, i);
        if (model_full_size(m, i) > *xchg) *xchg = model_full_size(m, i);
    }
    return n;
}

// Every full tensor is the same on every rank, bit for bit: replicated ones get the same sums
// everywhere (comm.h: MPI's reduction order depends only on the group's size). With comm: nccl
// the sums are NCCL's, whose order follows each communicator's topology, so a checkpoint checks:
// the first 64 bits of the SHA-256 of each tensor's params, m and v, compared over the world; rank
// 0 names those that differ.
static void check_replicas(Trainer *tr, CkptTensor ts[3][NUM_PARAM_TENSORS]) {
    uint64_t h[NUM_PARAM_TENSORS];
    int same[NUM_PARAM_TENSORS];
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        Sha256 *sha = sha256_new();
        for (int k = 0; k < 3; k++) sha256_update(sha, ts[k][i].data, model_full_size(&tr->model, i) * sizeof(float));
        char hex[65];
        sha256_final_hex(sha, hex);
        hex[16] = '\0';
        h[i] = strtoull(hex, NULL, 16);
    }
    comm_all_equal_u64(&tr->comm, h, same, NUM_PARAM_TENSORS);
    for (int i = 0; i < NUM_PARAM_TENSORS; i++)
        if (!same[i] && tr->comm.rank == 0)
            lsst_warn("step %lld: %s is not the same on every rank (its copies drifted apart: the checkpoint "
                      "holds rank 0's)", (long long)tr->step, param_names[i]);
}

int trainer_save_checkpoint(Trainer *tr) {
    Model *m = &tr->model;
    CkptTensor ts[3][NUM_PARAM_TENSORS];
    ckpt_tensors(tr, ts);
    if (tr->gpu) gpu_state_to_host(tr->gpu, m);
    float *base[3] = {m->params_mem, m->m_mem, m->v_mem};
    size_t off = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        if (m->shard[i] != SHARD_NONE)
            for (int k = 0; k < 3; k++) model_gather_tensor(m, &tr->comm, i, base[k] + off, ts[k][i].data, tr->ckpt_xchg);
        off += m->param_sizes[i];
    }
    if (tr->comm.world_size > 1) check_replicas(tr, ts);
    int ok = 1;
    char *path = NULL;
    if (tr->comm.rank == 0) {
        char *json = config_model_json(&tr->cfg);
        CkptState st = {.step = tr->step, .seed = tr->cfg.seed, .data_position = tr->step * tr->cfg.batch,
                        .model_json = json};
        char *dir = path_join(tr->cfg.output_dir, "checkpoints");
        path = checkpoint_path(dir, tr->step);
        char err[1024];
        if (checkpoint_write(path, ts[0], ts[1], ts[2], NUM_PARAM_TENSORS, &st, err, sizeof err) != 0) {
            lsst_error("%s", err);
            ok = 0;
        }
        free(json);
        free(dir);
    }
    comm_broadcast(&tr->comm, GROUP_WORLD, &ok, sizeof ok, 0);
    if (ok) say(tr, stdout, "checkpoint %s", path);
    free(path);
    return ok ? 0 : -1;
}

// Every rank reads the full tensors and keeps its share: any grid resumes any checkpoint.
static int load_checkpoint(Trainer *tr, const char *path) {
    Model *m = &tr->model;
    CkptTensor ts[3][NUM_PARAM_TENSORS];
    ckpt_tensors(tr, ts);
    char *json = config_model_json(&tr->cfg);
    CkptState st = {.model_json = json};
    char err[1024];
    int rc = checkpoint_read(path, ts[0], ts[1], ts[2], NUM_PARAM_TENSORS, &st, err, sizeof err);
    free(json);
    if (rc != 0) {
        say(tr, stderr, "lsst-run: error: %s", err);
        return -1;
    }
    float *base[3] = {m->params_mem, m->m_mem, m->v_mem};
    size_t off = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        if (m->shard[i] != SHARD_NONE)
            for (int k = 0; k < 3; k++) model_slice_tensor(m, i, ts[k][i].data, base[k] + off);
        off += m->param_sizes[i];
    }
    tr->step = st.step;
    return 0;
}

// ---- setup --------------------------------------------------------------------------
static int open_split(Trainer *tr, const char *name, DataSplit **out) {
    char err[1024];
    *out = data_open(tr->cfg.data_dir, name, err, sizeof err);
    if (!*out) { say(tr, stderr, "lsst-run: error: %s", err); return -1; }
    const RunConfig *c = &tr->cfg;
    if (data_vocab_size(*out) > c->vocab) {
        say(tr, stderr, "lsst-run: error: model.vocab %d is smaller than the vocabulary of %s (%d)", c->vocab,
            c->data_dir, data_vocab_size(*out));
        return -1;
    }
    if (data_tokens(*out) < (uint64_t)c->seq_len + 1) {
        say(tr, stderr, "lsst-run: error: the %s split of %s has %llu tokens, fewer than data.seq_len + 1 = %d",
            name, c->data_dir, (unsigned long long)data_tokens(*out), c->seq_len + 1);
        return -1;
    }
    return 0;
}

static char *resolve_resume(Trainer *tr, const char *resume) {
    if (!resume) return NULL;
    if (strcmp(resume, "latest") != 0) return xstrdup(resume);
    char *dir = path_join(tr->cfg.output_dir, "checkpoints");
    char *latest = checkpoint_latest(dir);
    free(dir);
    return latest;
}

static int prepare_output(Trainer *tr, bool resuming) {
    const RunConfig *c = &tr->cfg;
    int ok = 1;
    if (tr->comm.rank == 0) {
        char *metrics = path_join(c->output_dir, "metrics"), *ckpt = path_join(c->output_dir, "checkpoints");
        char *runyaml = path_join(c->output_dir, "run.yaml"), *log = path_join(c->output_dir, "log");
        if (mkdir_p(metrics, 0777) != 0 || mkdir_p(ckpt, 0777) != 0) {
            lsst_error("cannot create %s: %s", c->output_dir, strerror(errno));
            ok = 0;
        } else if (config_write_resolved(c, runyaml) != 0) {
            lsst_error("cannot write %s: %s", runyaml, strerror(errno));
            ok = 0;
        } else if (!(tr->log = fopen(log, resuming ? "a" : "w"))) {
            lsst_error("cannot write %s: %s", log, strerror(errno));
            ok = 0;
        }
        free(metrics), free(ckpt), free(runyaml), free(log);
    }
    comm_broadcast(&tr->comm, GROUP_WORLD, &ok, sizeof ok, 0);
    return ok ? 0 : -1;
}

static int open_metrics(Trainer *tr, int64_t keep_until) {
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    char *json = config_model_json(&tr->cfg);
    MetricsAttrs at = {.rank = tr->comm.rank, .world = tr->comm.world_size, .sp_rank = tr->comm.sp_rank,
                       .dp_rank = tr->comm.dp_rank, .sp_size = tr->comm.sp_size, .dp_size = tr->comm.dp_size,
                       .scheme = scheme_name(tr->cfg.scheme), .backend = backend_name(tr->cfg.backend),
                       .host = host, .device = tr->gpu ? gpu_device_name(tr->gpu) : "cpu",
                       .seq_len = tr->cfg.seq_len, .model_json = json, .git = lsst_git()};
    char *name = xasprintf("metrics/rank-%05d.h5", tr->comm.rank);
    char *path = path_join(tr->cfg.output_dir, name);
    char err[1024];
    tr->metrics = metrics_open(path, &at, keep_until, err, sizeof err);
    if (!tr->metrics) lsst_error("%s%s", tr->prefix, err);
    free(json), free(name), free(path);
    return comm_any_flag(&tr->comm, tr->metrics == NULL) ? -1 : 0;
}

size_t trainer_plan_bytes(const RunConfig *cfg) {
    Model m;
    model_layout(&m, cfg, 0, cfg->sequence, cfg->batch / cfg->data);
    if (cfg->backend == BACKEND_CUDA) return gpu_plan_bytes(&m);   // device bytes (what mem_peak reports)
    size_t xchg, full = ckpt_full_size(&m, &xchg);
    return m.mem_bytes + (full + xchg) * sizeof(float) + ((size_t)m.T + 1) * sizeof(int);
}

int trainer_setup(Trainer *tr, const RunConfig *cfg, const char *resume, const char *eval_only) {
    memset(tr, 0, sizeof *tr);
    tr->cfg = *cfg;
    char err[1024];
    if (comm_init(&tr->comm, MPI_COMM_WORLD, cfg->sequence, cfg->data, err, sizeof err) != 0) {
        lsst_error("%s", err);
        return EXIT_USAGE;
    }
    tr->comm_ready = true;
    if (tr->comm.world_size > 1) snprintf(tr->prefix, sizeof tr->prefix, "[rank %d/%d] ", tr->comm.rank, tr->comm.world_size);
    tr->local_batch = cfg->batch / cfg->data;
    if (!eval_only && open_split(tr, "train", &tr->train) != 0) return EXIT_USAGE;
    const char *eval_split = eval_only ? eval_only : "valid";
    if ((eval_only || cfg->eval_every > 0) && open_split(tr, eval_split, &tr->valid) != 0) return EXIT_USAGE;

    char *ckpt = resolve_resume(tr, eval_only && !resume ? "latest" : resume);
    if (eval_only && !ckpt) {
        say(tr, stderr, "lsst-run: error: --eval-only needs a checkpoint: none in %s/checkpoints (give --resume PATH)",
            cfg->output_dir);
        return EXIT_USAGE;
    }
    model_init(&tr->model, cfg, tr->comm.sp_rank, tr->comm.sp_size, tr->local_batch);
    size_t xchg;
    tr->ckpt_floats = ckpt_full_size(&tr->model, &xchg) + xchg;
    tr->ckpt_full = rt_calloc(tr->ckpt_floats, sizeof(float));
    tr->ckpt_xchg = tr->ckpt_full + tr->ckpt_floats - xchg;
    tr->read_buf = rt_calloc((size_t)tr->model.T + 1, sizeof(int));
    if (cfg->backend == BACKEND_CUDA) {
        tr->gpu = gpu_open(&tr->model, &tr->comm, err, sizeof err);
        if (!tr->gpu) lsst_error("%s%s", tr->prefix, err);
        if (comm_any_flag(&tr->comm, tr->gpu == NULL)) { free(ckpt); return EXIT_RUNTIME; }
        gpu_comm_open(tr->gpu, &tr->model, &tr->comm);   // collective: every rank has its GPU now
    }
    if (prepare_output(tr, ckpt != NULL) != 0) { free(ckpt); return EXIT_RUNTIME; }
    if (ckpt) {
        int rc = load_checkpoint(tr, ckpt);
        if (rc == 0) say(tr, stdout, "resumed from %s at step %lld", ckpt, (long long)tr->step);
        free(ckpt);
        if (rc != 0) return EXIT_USAGE;
    } else {
        if (resume) say(tr, stdout, "no checkpoint in %s/checkpoints: starting from step 0", cfg->output_dir);
        model_init_params(&tr->model, cfg->seed);
    }
    if (tr->gpu) gpu_state_to_device(tr->gpu, &tr->model);
    if (open_metrics(tr, tr->step > 0 ? tr->step : -1) != 0) return EXIT_RUNTIME;
    signal(SIGTERM, on_stop_signal);
    signal(SIGUSR1, on_stop_signal);
    return EXIT_OK;
}

// ---- the loop -----------------------------------------------------------------------
int trainer_run(Trainer *tr) {
    const RunConfig *c = &tr->cfg;
    if (tr->step == 0)
        say(tr, stdout, "lsst-run: %s, %d x %d ranks, %zu params/rank, seq %d, batch %d, %d steps", scheme_name(c->scheme),
            c->sequence, c->data, tr->model.num_params, c->seq_len, c->batch, c->steps);
    if (tr->gpu) {
        char line[1024];
        gpu_kernels_line(&tr->model, line, sizeof line);
        say(tr, stdout, "%s: %s", gpu_device_name(tr->gpu), line);
    }
    if (tr->step == 0 && tr->gpu && gpu_nccl(tr->gpu))
        say(tr, stdout, "NCCL communicators: %.1f MiB of device memory on rank 0's GPU (not in mem_peak)",
            (double)gpu_nccl_bytes(tr->gpu) / (1 << 20));
    bool saved = false;
    while (tr->step < c->steps) {
        StepRow row;
        int64_t step = tr->step + 1;
        if (train_step(tr, step, &row) != 0) return EXIT_RUNTIME;
        tr->step = step;
        saved = false;
        if (metrics_append_step(tr->metrics, &row) != 0) lsst_warn("%scannot append to the metrics file", tr->prefix);
        double tok_s = (double)c->batch * c->seq_len / row.t_step;
        say(tr, stdout, "step %lld/%d | loss %.4f | bpc %.4f | lr %.2e | %.1f ms | %.0f tok/s", (long long)step,
            c->steps, row.loss, row.loss / M_LN2, row.lr, 1e3 * row.t_step, tok_s);
        double eval_loss;
        if (eval_due(c, step) && trainer_evaluate(tr, "valid", tr->valid, &eval_loss) != 0) return EXIT_RUNTIME;
        if (c->ckpt_every > 0 && step % c->ckpt_every == 0) {
            if (trainer_save_checkpoint(tr) != 0) return EXIT_RUNTIME;
            saved = true;
        }
        if (comm_any_flag(&tr->comm, g_stop_signal != 0)) {
            say(tr, stdout, "stop signal: checkpointing at step %lld and exiting with %d (requeue)", (long long)step,
                EXIT_REQUEUE);
            if (!saved && trainer_save_checkpoint(tr) != 0) return EXIT_RUNTIME;
            metrics_flush(tr->metrics);
            return EXIT_REQUEUE;
        }
    }
    if (!saved && trainer_save_checkpoint(tr) != 0) return EXIT_RUNTIME;
    return EXIT_OK;
}

void trainer_free(Trainer *tr) {
    if (tr->metrics) metrics_close(tr->metrics);
    if (tr->train) data_close(tr->train);
    if (tr->valid) data_close(tr->valid);
    if (tr->log) fclose(tr->log);
    rt_free(tr->ckpt_full, tr->ckpt_floats, sizeof(float));
    rt_free(tr->read_buf, (size_t)tr->model.T + 1, sizeof(int));
    gpu_close(tr->gpu);
    if (tr->model.params_mem) model_free(&tr->model);
    if (tr->comm_ready) comm_free(&tr->comm);
}
