// lsst-run configuration: YAML file -> --set overrides -> schema (types, ranges,
// unknown keys) -> rules between keys -> RunConfig. Everything is checked here,
// before any rank allocates; errors are one line "FILE:LINE:COL: message".
#include "config.h"
#include "common.h"
#include "schema.h"
#include "yaml_tree.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

const char *scheme_name(Scheme s) {
    switch (s) {
    case SCHEME_NONE: return "none";
    case SCHEME_LSS: return "lss";
    case SCHEME_MEGATRON_SP: return "megatron-sp";
    }
    return "?";
}

const char *balance_name(Balance b) { return b == BALANCE_ZIGZAG ? "zigzag" : "none"; }
const char *kv_name(KvMode k) { return k == KV_REGATHER ? "regather" : "keep"; }
const char *backend_name(Backend b) { return b == BACKEND_CUDA ? "cuda" : "cpu"; }

const char *comm_name(CommKind k) {
    switch (k) {
    case COMM_AUTO: return "auto";
    case COMM_MPI: return "mpi";
    case COMM_NCCL: return "nccl";
    }
    return "?";
}

// ---- the schema (README "lsst-run configuration" documents every key) ----

#define CHOICES(...) ((const char *const[]){__VA_ARGS__, NULL})
enum { REQ = SCHEMA_REQUIRED, MIN = SCHEMA_MIN };

static int nonempty(const YNode *value, char *msg, size_t len) {
    if (value->value[0]) return 0;
    snprintf(msg, len, "must not be empty");
    return -1;
}

static const SchemaKey data_keys[] = {
    {.name = "dir", .type = SCHEMA_STRING, .flags = REQ, .check = nonempty},
    {.name = "seq_len", .type = SCHEMA_INT, .flags = REQ | MIN, .min = 2},
    {.name = "batch", .type = SCHEMA_INT, .flags = MIN, .min = 1, .def = "1"},
    {0}};

static const SchemaKey model_keys[] = {
    {.name = "layers", .type = SCHEMA_INT, .flags = REQ | MIN, .min = 1},
    {.name = "dim", .type = SCHEMA_INT, .flags = REQ | MIN, .min = 1},
    {.name = "heads", .type = SCHEMA_INT, .flags = REQ | MIN, .min = 1},
    {.name = "mlp", .type = SCHEMA_INT, .flags = MIN, .min = 1}, // default 4 x dim
    {.name = "vocab", .type = SCHEMA_INT, .flags = MIN | SCHEMA_MAX, .min = 2, .max = 65536, .def = "256"},
    {0}};

static const SchemaKey parallel_keys[] = {
    {.name = "scheme", .type = SCHEMA_ENUM, .choices = CHOICES("lss", "megatron-sp", "none"), .def = "none"},
    {.name = "sequence", .type = SCHEMA_INT, .flags = MIN, .min = 1, .def = "1"},
    {.name = "data", .type = SCHEMA_INT, .flags = MIN, .min = 1, .def = "1"},
    {.name = "balance", .type = SCHEMA_ENUM, .choices = CHOICES("none", "zigzag"), .def = "none"},
    {.name = "kv", .type = SCHEMA_ENUM, .choices = CHOICES("keep", "regather"), .def = "keep"},
    {0}};

static const SchemaKey train_keys[] = {
    {.name = "steps", .type = SCHEMA_INT, .flags = REQ | MIN, .min = 1},
    {.name = "lr", .type = SCHEMA_FLOAT, .flags = SCHEMA_MIN_EXCL, .min = 0, .def = "3.0e-4"},
    {.name = "lr_min", .type = SCHEMA_FLOAT, .flags = MIN, .min = 0}, // default lr / 10
    {.name = "warmup", .type = SCHEMA_INT, .flags = MIN, .min = 0, .def = "0"},
    {.name = "seed", .type = SCHEMA_INT, .flags = MIN | SCHEMA_INT64, .min = 0, .def = "1"},
    {.name = "eval_every", .type = SCHEMA_INT, .flags = MIN, .min = 0, .def = "0"},
    {.name = "eval_sequences", .type = SCHEMA_INT, .flags = MIN, .min = 1, .def = "16"},
    {.name = "ckpt_every", .type = SCHEMA_INT, .flags = MIN, .min = 0, .def = "0"},
    {.name = "weight_decay", .type = SCHEMA_FLOAT, .flags = MIN, .min = 0, .def = "0.1"},
    {.name = "clip", .type = SCHEMA_FLOAT, .flags = MIN, .min = 0, .def = "1.0"},
    {.name = "beta1", .type = SCHEMA_FLOAT, .flags = MIN | SCHEMA_MAX_EXCL, .min = 0, .max = 1, .def = "0.9"},
    {.name = "beta2", .type = SCHEMA_FLOAT, .flags = MIN | SCHEMA_MAX_EXCL, .min = 0, .max = 1, .def = "0.95"},
    {.name = "eps", .type = SCHEMA_FLOAT, .flags = SCHEMA_MIN_EXCL, .min = 0, .def = "1.0e-8"},
    {0}};

static const SchemaKey output_keys[] = {
    {.name = "dir", .type = SCHEMA_STRING, .flags = REQ, .check = nonempty},
    {0}};

static const SchemaKey config_schema[] = {
    {.name = "data", .type = SCHEMA_MAP, .flags = REQ, .keys = data_keys},
    {.name = "model", .type = SCHEMA_MAP, .flags = REQ, .keys = model_keys},
    {.name = "parallel", .type = SCHEMA_MAP, .keys = parallel_keys},
    {.name = "train", .type = SCHEMA_MAP, .flags = REQ, .keys = train_keys},
    {.name = "backend", .type = SCHEMA_ENUM, .choices = CHOICES("cpu", "cuda"), .def = "cpu"},
    {.name = "comm", .type = SCHEMA_ENUM, .choices = CHOICES("auto", "mpi", "nccl"), .def = "auto"},
    {.name = "output", .type = SCHEMA_MAP, .flags = REQ, .keys = output_keys},
    {0}};

// ---- rules between keys ----

// The first broken rule between keys: writes "KEY: message" into msg and returns
// KEY (the key to point at), or NULL when all hold. Shared by config_load (which
// adds the key's file:line:col) and config_check_layout (a RunConfig may be made
// by hand). Order matters where several rules break at once: the most specific first.
static const char *cross_field_error(const RunConfig *c, char *msg, size_t len) {
#define FAIL(key, ...) do { snprintf(msg, len, key ": " __VA_ARGS__); return key; } while (0)
    if (c->heads < 1) FAIL("model.heads", "must be >= 1, got %d", c->heads);
    if (c->sequence < 1) FAIL("parallel.sequence", "must be >= 1, got %d", c->sequence);
    if (c->data < 1) FAIL("parallel.data", "must be >= 1, got %d", c->data);
    if (c->dim % c->heads)
        FAIL("model.heads", "dim %d is not divisible by heads %d (each head takes dim/heads channels)", c->dim,
             c->heads);
    if (c->lr_min > c->lr) FAIL("train.lr_min", "must be <= train.lr (%g), got %g", c->lr, c->lr_min);
    if (c->balance == BALANCE_ZIGZAG && c->scheme != SCHEME_LSS)
        FAIL("parallel.balance", "zigzag balances the causal attention of scheme lss only, but scheme is %s",
             scheme_name(c->scheme));
    if (c->kv == KV_REGATHER && c->scheme != SCHEME_LSS)
        FAIL("parallel.kv", "regather re-gathers the [K|V] of scheme lss only, but scheme is %s",
             scheme_name(c->scheme));
    if (c->scheme == SCHEME_NONE && c->sequence > 1)
        FAIL("parallel.sequence",
             "scheme none keeps each sequence on one rank, so sequence must be 1, got %d "
             "(use scheme lss or megatron-sp to split sequences)",
             c->sequence);
    if (c->scheme == SCHEME_MEGATRON_SP && c->heads % c->sequence)
        FAIL("parallel.sequence",
             "megatron-sp splits the %d heads across ranks; %d heads are not divisible by sequence %d", c->heads,
             c->heads, c->sequence);
    if (c->scheme == SCHEME_MEGATRON_SP && c->mlp % c->sequence)
        FAIL("parallel.sequence",
             "megatron-sp splits the %d MLP columns across ranks; %d columns are not divisible by sequence %d",
             c->mlp, c->mlp, c->sequence);
    if (c->seq_len % c->sequence)
        FAIL("parallel.sequence",
             "data.seq_len %d is not divisible by sequence %d (each rank holds seq_len/sequence tokens)", c->seq_len,
             c->sequence);
    if (c->balance == BALANCE_ZIGZAG && c->seq_len % (2LL * c->sequence))
        FAIL("parallel.balance", "zigzag cuts data.seq_len into 2 x sequence = %lld chunks; %d is not divisible by %lld",
             2LL * c->sequence, c->seq_len, 2LL * c->sequence);
    if (c->batch % c->data)
        FAIL("parallel.data", "data.batch %d is not divisible by data %d (each data group takes batch/data sequences)",
             c->batch, c->data);
    if (c->backend == BACKEND_CUDA && c->dim % 2)
        FAIL("model.dim", "backend: cuda needs an even dim (bf16 rows travel between ranks as 4-byte words), got %d",
             c->dim);
#ifndef LSST_CUDA
    if (c->backend == BACKEND_CUDA)
        FAIL("backend", "cuda, but this lsst-run was built without CUDA (rebuild with make CUDA=1, or use backend: cpu)");
#endif
    if (c->comm == COMM_NCCL && c->backend != BACKEND_CUDA)
        FAIL("comm", "nccl needs backend: cuda (the cpu backend communicates through MPI)");
    return NULL;
#undef FAIL
}

int config_check_layout(const RunConfig *c, int world_size, char *err, size_t errlen) {
    if (cross_field_error(c, err, errlen)) return -1;
    long long grid = (long long)c->sequence * c->data;
    if (world_size != grid) {
        snprintf(err, errlen, "%d rank%s launched, but parallel.sequence x parallel.data = %d x %d = %lld", world_size,
                 world_size == 1 ? "" : "s", c->sequence, c->data, grid);
        return -1;
    }
    return 0;
}

// ---- loading ----

static int enum_value(const char *text, const char *(*name)(int), int count) {
    for (int i = 0; i < count; i++)
        if (!strcmp(text, name(i))) return i;
    return 0;
}
static const char *scheme_name_i(int i) { return scheme_name((Scheme)i); }
static const char *balance_name_i(int i) { return balance_name((Balance)i); }
static const char *kv_name_i(int i) { return kv_name((KvMode)i); }
static const char *backend_name_i(int i) { return backend_name((Backend)i); }
static const char *comm_name_i(int i) { return comm_name((CommKind)i); }

// Fill c from a validated tree; -1 with err only for the computed default of model.mlp.
static int read_tree(RunConfig *c, const YNode *root, char *err, size_t errlen) {
    c->data_dir = xstrdup(schema_str(root, "data.dir"));
    c->seq_len = (int)schema_int(root, "data.seq_len");
    c->batch = (int)schema_int(root, "data.batch");
    c->layers = (int)schema_int(root, "model.layers");
    c->dim = (int)schema_int(root, "model.dim");
    c->heads = (int)schema_int(root, "model.heads");
    c->vocab = (int)schema_int(root, "model.vocab");
    if (schema_lookup(root, "model.mlp")) {
        c->mlp = (int)schema_int(root, "model.mlp");
    } else if (c->dim > INT_MAX / 4) {
        schema_error_at(err, errlen, schema_lookup(root, "model.dim"),
                        "model.dim: the default model.mlp = 4 x dim overflows an int; set model.mlp");
        return -1;
    } else {
        c->mlp = 4 * c->dim;
    }
    c->scheme = (Scheme)enum_value(schema_str(root, "parallel.scheme"), scheme_name_i, 3);
    c->sequence = (int)schema_int(root, "parallel.sequence");
    c->data = (int)schema_int(root, "parallel.data");
    c->balance = (Balance)enum_value(schema_str(root, "parallel.balance"), balance_name_i, 2);
    c->kv = (KvMode)enum_value(schema_str(root, "parallel.kv"), kv_name_i, 2);
    c->steps = (int)schema_int(root, "train.steps");
    c->lr = schema_float(root, "train.lr");
    c->lr_min = schema_lookup(root, "train.lr_min") ? schema_float(root, "train.lr_min") : c->lr / 10;
    c->warmup = (int)schema_int(root, "train.warmup");
    c->seed = (uint64_t)schema_int(root, "train.seed");
    c->eval_every = (int)schema_int(root, "train.eval_every");
    c->eval_sequences = (int)schema_int(root, "train.eval_sequences");
    c->ckpt_every = (int)schema_int(root, "train.ckpt_every");
    c->weight_decay = schema_float(root, "train.weight_decay");
    c->clip = schema_float(root, "train.clip");
    c->beta1 = schema_float(root, "train.beta1");
    c->beta2 = schema_float(root, "train.beta2");
    c->eps = schema_float(root, "train.eps");
    c->backend = (Backend)enum_value(schema_str(root, "backend"), backend_name_i, 2);
    c->comm = (CommKind)enum_value(schema_str(root, "comm"), comm_name_i, 3);
    c->output_dir = xstrdup(schema_str(root, "output.dir"));
    return 0;
}

int config_load(RunConfig *c, const char *path, char *const *sets, int nsets, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    c->path = xstrdup(path);
    YNode *root = yn_load_file(path, err, errlen);
    int rc = -1;
    if (!root) goto out;
    for (int i = 0; i < nsets; i++)
        if (schema_set(root, config_schema, sets[i], err, errlen)) goto out;
    if (schema_validate(root, config_schema, err, errlen)) goto out;
    if (read_tree(c, root, err, errlen)) goto out;
    char msg[512];
    const char *key = cross_field_error(c, msg, sizeof msg);
    if (key) {
        schema_error_at(err, errlen, schema_lookup(root, key), "%s", msg);
        goto out;
    }
    rc = 0;
out:
    yn_free(root);
    if (rc) config_free(c);
    return rc;
}

void config_free(RunConfig *c) {
    free(c->path);
    free(c->data_dir);
    free(c->output_dir);
    memset(c, 0, sizeof *c);
}

// ---- output ----

// A string value that reads back as the same string (never as null).
static char *yaml_string(const char *s) {
    char *q = yn_quote(s);
    if (q[0] != '"' && (!strcmp(q, "~") || !strcmp(q, "null") || !strcmp(q, "Null") || !strcmp(q, "NULL"))) {
        free(q);
        q = xasprintf("\"%s\"", s);
    }
    return q;
}

int config_write_resolved(const RunConfig *c, const char *path) {
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    if (!fp) return -1;
    char *data_dir = yaml_string(c->data_dir ? c->data_dir : "");
    char *output_dir = yaml_string(c->output_dir ? c->output_dir : "");
    char b[7][32]; // formatted doubles
    fprintf(fp, "# lsst-run configuration, resolved: every key with the value this run used (defaults filled in).\n");
    fprintf(fp, "data:\n  dir: %s\n  seq_len: %d\n  batch: %d\n", data_dir, c->seq_len, c->batch);
    fprintf(fp, "model:\n  layers: %d\n  dim: %d\n  heads: %d\n  mlp: %d\n  vocab: %d\n", c->layers, c->dim,
            c->heads, c->mlp, c->vocab);
    fprintf(fp, "parallel:\n  scheme: %s\n  sequence: %d\n  data: %d\n  balance: %s\n  kv: %s\n",
            scheme_name(c->scheme), c->sequence, c->data, balance_name(c->balance), kv_name(c->kv));
    fprintf(fp, "train:\n  steps: %d\n  lr: %s\n  lr_min: %s\n  warmup: %d\n  seed: %llu\n", c->steps,
            schema_fmt_double(c->lr, b[0]), schema_fmt_double(c->lr_min, b[1]), c->warmup,
            (unsigned long long)c->seed);
    fprintf(fp, "  eval_every: %d\n  eval_sequences: %d\n  ckpt_every: %d\n", c->eval_every, c->eval_sequences,
            c->ckpt_every);
    fprintf(fp, "  weight_decay: %s\n  clip: %s\n  beta1: %s\n  beta2: %s\n  eps: %s\n",
            schema_fmt_double(c->weight_decay, b[2]), schema_fmt_double(c->clip, b[3]),
            schema_fmt_double(c->beta1, b[4]), schema_fmt_double(c->beta2, b[5]), schema_fmt_double(c->eps, b[6]));
    fprintf(fp, "backend: %s\ncomm: %s\noutput:\n  dir: %s\n", backend_name(c->backend), comm_name(c->comm),
            output_dir);
    free(data_dir);
    free(output_dir);
    if (fclose(fp) != 0) { free(text); return -1; }
    int rc = write_file_atomic(path, text, len);
    int e = errno;
    free(text);
    errno = e;
    return rc;
}

char *config_model_json(const RunConfig *c) {
    return xasprintf("{\"layers\":%d,\"dim\":%d,\"heads\":%d,\"mlp\":%d,\"vocab\":%d}", c->layers, c->dim, c->heads,
                     c->mlp, c->vocab);
}
