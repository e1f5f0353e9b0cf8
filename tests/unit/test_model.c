// The whole model, one rank: the gradient of the loss with respect to every
// parameter tensor (analytic, model_backward) against central finite differences
// of the loss (model_forward), on a tiny model. This checks the wiring of the
// layers (residuals, LayerNorms, [K|V] layout, output head) that the per-kernel
// tests cannot. One rank needs no MPI: size-1 groups never call it.
#include <math.h>
#include <string.h>

#include "check.h"
#include "model.h"

static RunConfig tiny_config(Scheme scheme) {
    RunConfig c;
    memset(&c, 0, sizeof c);
    c.seq_len = 12, c.batch = 2;
    c.layers = 2, c.dim = 8, c.heads = 2, c.mlp = 16, c.vocab = 11;
    c.scheme = scheme, c.sequence = 1, c.data = 1;
    return c;
}

// Mean loss over the batch's tokens, in double.
static double loss_of(Model *m, Comm *comm) {
    return model_forward(m, comm, 0.0f) / ((double)m->B * m->T);
}

// Perturb enough that the float32 loss moves well above its rounding, and compare.
static void check_tensor(Model *m, Comm *comm, int i, const char *scheme) {
    size_t off = 0;
    for (int k = 0; k < i; k++) off += m->param_sizes[k];
    size_t n = m->param_sizes[i];
    double worst = 0;
    size_t worst_j = 0;
    double worst_a = 0, worst_fd = 0;
    for (int s = 0; s < 6; s++) {
        size_t j = (size_t)(s * 7919 + 13) % n;
        float *p = m->params_mem + off + j;
        float saved = *p;
        double h = 2e-3;
        *p = saved + (float)h;
        double up = loss_of(m, comm);
        *p = saved - (float)h;
        double down = loss_of(m, comm);
        *p = saved;
        double fd = (up - down) / (2 * h);
        double a = m->grads_mem[off + j];
        double err = fabs(a - fd) / (2e-4 + 2e-2 * fabs(fd));
        if (err > worst) worst = err, worst_j = j, worst_a = a, worst_fd = fd;
    }
    CHECK(worst <= 1.0, "%s: d loss / d %s matches finite differences (|a-fd| <= 2e-4 + 2e-2|fd|)", scheme,
          param_names[i]);
    if (worst > 1.0) printf("#   element %zu: analytic %.6g, finite difference %.6g\n", worst_j, worst_a, worst_fd);
}

static void check_scheme(Scheme scheme, const char *name) {
    RunConfig cfg = tiny_config(scheme);
    Comm comm;
    memset(&comm, 0, sizeof comm);
    comm.world_size = comm.sp_size = comm.dp_size = 1;
    Model m;
    model_init(&m, &cfg, 0, 1, cfg.batch);
    model_init_params(&m, 5);
    // Larger weights than the init's 0.02 so every path carries signal.
    for (size_t j = 0; j < m.num_params; j++) m.params_mem[j] *= 5.0f;
    for (int t = 0; t < m.B * m.T; t++) {
        m.tokens[t] = (t * 7 + 3) % cfg.vocab;
        m.targets[t] = (t * 5 + 1) % cfg.vocab;
    }
    float dloss = 1.0f / (float)(m.B * m.T);
    double loss = model_forward(&m, &comm, dloss) / (m.B * m.T);
    CHECK(isfinite(loss) && loss > 0, "%s: loss %.4f is finite", name, loss);
    model_backward(&m, &comm);
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) check_tensor(&m, &comm, i, name);
    model_free(&m);
}

int main(void) {
    check_scheme(SCHEME_NONE, "none");
    check_scheme(SCHEME_MEGATRON_SP, "megatron-sp (one rank)");
    return check_done();
}
