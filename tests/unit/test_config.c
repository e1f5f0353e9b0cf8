// runtime/config: the example configs, defaults, every error path with its exact
// "file:line:col: message", --set overrides, the layout check, the resolved round trip.
// Run from the repository root (tests/run.sh does): fixtures are tests/fixtures/config/.
#include "check.h"
#include "common.h"
#include "config.h"
#include "yaml_tree.h"

#include <string.h>

#define FIX "tests/fixtures/config/"

static char tmpdir[] = "/tmp/lsst-cfg-XXXXXX";
static char cfg_path[256];
static char err[1024];

// A valid config; the tests edit one line of it at a time.
static const char *BASE = "data:\n"              // 1
                          "  dir: data/enwik8\n" // 2
                          "  seq_len: 4096\n"    // 3
                          "  batch: 4\n"         // 4
                          "model:\n"             // 5
                          "  layers: 2\n"        // 6
                          "  dim: 64\n"          // 7
                          "  heads: 4\n"         // 8
                          "parallel:\n"          // 9
                          "  scheme: lss\n"      // 10
                          "  sequence: 4\n"      // 11
                          "  data: 2\n"          // 12
                          "train:\n"             // 13
                          "  steps: 10\n"        // 14
                          "output:\n"            // 15
                          "  dir: runs/x\n";     // 16

// BASE with lines first..last replaced by `text` (several lines allowed; NULL deletes them).
static char *with_lines(int first, int last, const char *text) {
    char *out = xstrdup("");
    const char *p = BASE;
    for (int n = 1; *p; n++) {
        const char *nl = strchr(p, '\n');
        char *next = n < first || n > last ? xasprintf("%s%.*s", out, (int)(nl - p + 1), p)
                     : n > first || !text  ? xstrdup(out)
                                           : xasprintf("%s%s\n", out, text);
        free(out);
        out = next;
        p = nl + 1;
    }
    return out;
}
static char *with_line(int line, const char *text) { return with_lines(line, line, text); }

static int load_doc(RunConfig *c, const char *doc, char *const *sets, int nsets) {
    write_file_atomic(cfg_path, doc, strlen(doc));
    err[0] = '\0';
    return config_load(c, cfg_path, sets, nsets, err, sizeof err);
}

// want: the exact error; a leading ':' stands for the config path ("PATH:7:8: ...").
static void expect_error(char *doc, char *const *sets, int nsets, const char *want) {
    RunConfig c;
    int rc = load_doc(&c, doc, sets, nsets);
    char *full = want[0] == ':' ? xasprintf("%s%s", cfg_path, want) : xstrdup(want);
    CHECK(rc == -1 && !strcmp(err, full), "%s", want);
    if (strcmp(err, full)) printf("#   got:  %s\n#   want: %s\n", err, full);
    CHECK(c.path == NULL && c.data_dir == NULL, "a failed load leaves nothing allocated");
    config_free(&c);
    free(full);
    free(doc);
}

static void expect_file_error(const char *path, const char *want) {
    RunConfig c;
    int rc = config_load(&c, path, NULL, 0, err, sizeof err);
    CHECK(rc == -1 && !strcmp(err, want), "%s", want);
    if (strcmp(err, want)) printf("#   got:  %s\n", err);
    config_free(&c);
}

static void test_full_example(void) {
    RunConfig c;
    int rc = config_load(&c, FIX "full.yaml", NULL, 0, err, sizeof err);
    CHECK(rc == 0, "full.yaml loads (%s)", err);
    if (rc) return;
    CHECK(!strcmp(c.path, FIX "full.yaml") && !strcmp(c.data_dir, "data/enwik8") && c.seq_len == 4096 && c.batch == 4,
          "data section");
    CHECK(c.layers == 12 && c.dim == 512 && c.heads == 8 && c.mlp == 2048 && c.vocab == 256, "model section");
    CHECK(c.scheme == SCHEME_LSS && c.sequence == 4 && c.data == 2 && c.balance == BALANCE_ZIGZAG, "parallel section");
    CHECK(c.steps == 1000 && c.lr == 3.0e-4 && c.lr_min == 3.0e-5 && c.warmup == 100 && c.seed == 1 &&
              c.eval_every == 200 && c.eval_sequences == 16 && c.ckpt_every == 500 && c.weight_decay == 0.1 &&
              c.clip == 1.0 && c.beta1 == 0.9 && c.beta2 == 0.95 && c.eps == 1.0e-8,
          "train section");
    CHECK(c.backend == BACKEND_CPU && c.comm == COMM_AUTO && !strcmp(c.output_dir, "runs/example"), "backend, comm, output");
    CHECK(config_check_layout(&c, 8, err, sizeof err) == 0, "8 ranks fit 4 x 2 (%s)", err);
    config_free(&c);
    config_free(&c); // safe twice
}

static void test_defaults(void) {
    RunConfig c;
    int rc = config_load(&c, FIX "minimal.yaml", NULL, 0, err, sizeof err);
    CHECK(rc == 0, "minimal.yaml loads (%s)", err);
    if (rc) return;
    CHECK(c.batch == 1 && c.mlp == 4 * 64 && c.vocab == 256, "data/model defaults: batch 1, mlp 4 x dim, vocab 256");
    CHECK(c.scheme == SCHEME_NONE && c.sequence == 1 && c.data == 1 && c.balance == BALANCE_NONE,
          "parallel defaults: none, 1 x 1, no balance");
    CHECK(c.lr == 3.0e-4 && c.lr_min == 3.0e-4 / 10 && c.warmup == 0 && c.seed == 1 && c.eval_every == 0 &&
              c.eval_sequences == 16 && c.ckpt_every == 0,
          "train defaults: lr 3e-4, lr_min lr/10, warmup 0, seed 1, eval_every 0, eval_sequences 16, ckpt_every 0");
    CHECK(c.weight_decay == 0.1 && c.clip == 1.0 && c.beta1 == 0.9 && c.beta2 == 0.95 && c.eps == 1.0e-8,
          "optimizer defaults: weight_decay 0.1, clip 1, betas 0.9/0.95, eps 1e-8");
    CHECK(c.backend == BACKEND_CPU && c.comm == COMM_AUTO, "backend cpu, comm auto");
    CHECK(!strcmp(c.data_dir, "data/enwik8") && !strcmp(c.output_dir, "runs/minimal"), "relative paths kept as written");
    char *json = config_model_json(&c);
    CHECK(!strcmp(json, "{\"layers\":2,\"dim\":64,\"heads\":4,\"mlp\":256,\"vocab\":256}"), "model json: %s", json);
    free(json);
    CHECK(config_check_layout(&c, 1, err, sizeof err) == 0, "one rank, no launcher");
    config_free(&c);
    CHECK(!strcmp(scheme_name(SCHEME_MEGATRON_SP), "megatron-sp") && !strcmp(balance_name(BALANCE_ZIGZAG), "zigzag") &&
              !strcmp(backend_name(BACKEND_CUDA), "cuda") && !strcmp(comm_name(COMM_NCCL), "nccl"),
          "enum names");
}

static void test_fixture_errors(void) {
    expect_file_error(FIX "bad-unknown-key.yaml",
                      FIX "bad-unknown-key.yaml:4:3: unknown key 'model.dimm' (did you mean 'dim'?)");
    expect_file_error(FIX "bad-type.yaml", FIX "bad-type.yaml:2:25: model.dim: expected an integer, got 'abc'");
    expect_file_error(FIX "bad-enum.yaml", FIX "bad-enum.yaml:4:11: parallel.scheme: expected one of lss, megatron-sp, "
                                           "none, got 'lsss' (did you mean 'lss'?)");
    expect_file_error(FIX "bad-heads.yaml", FIX "bad-heads.yaml:2:36: model.heads: dim 64 is not divisible by heads 5 "
                                            "(each head takes dim/heads channels)");
    expect_file_error(FIX "bad-megatron-heads.yaml",
                      FIX "bad-megatron-heads.yaml:5:13: parallel.sequence: megatron-sp splits the 8 heads across "
                          "ranks; 8 heads are not divisible by sequence 3");
    expect_file_error(FIX "bad-missing-key.yaml", FIX "bad-missing-key.yaml:2:3: missing required key 'data.seq_len'");
    expect_file_error("/nonexistent/run.yaml", "/nonexistent/run.yaml: cannot read: No such file or directory");
}

static void test_errors(void) {
    RunConfig c;
    int rc = load_doc(&c, BASE, NULL, 0);
    CHECK(rc == 0, "the base config is valid (%s)", err);
    config_free(&c);

    // unknown keys, types, ranges
    expect_error(with_line(13, "trian:"), NULL, 0, ":13:1: unknown key 'trian' (did you mean 'train'?)");
    expect_error(with_lines(13, 14, "train:\n  steps: 10\nbakend: cpu"), NULL, 0,
                 ":15:1: unknown key 'bakend' (did you mean 'backend'?)");
    expect_error(with_line(7, "  dimm: 64"), NULL, 0, ":7:3: unknown key 'model.dimm' (did you mean 'dim'?)");
    expect_error(with_line(14, "  stepz: 10"), NULL, 0, ":14:3: unknown key 'train.stepz' (did you mean 'steps'?)");
    expect_error(with_line(7, "  dim: abc"), NULL, 0, ":7:8: model.dim: expected an integer, got 'abc'");
    expect_error(with_line(2, "  dir: [a, b]"), NULL, 0, ":2:8: data.dir: expected a string, got a list");
    expect_error(with_line(16, "  dir: ''"), NULL, 0, ":16:8: output.dir: must not be empty");
    expect_error(with_line(14, "  steps: 10\n  lr: fast"), NULL, 0, ":15:7: train.lr: expected a number, got 'fast'");
    expect_error(with_lines(9, 12, "parallel: 4"), NULL, 0, ":9:11: parallel: expected a map, got '4'");
    expect_error(with_line(7, "  dim: 0"), NULL, 0, ":7:8: model.dim: must be >= 1, got 0");
    expect_error(with_line(3, "  seq_len: 1"), NULL, 0, ":3:12: data.seq_len: must be >= 2, got 1");
    expect_error(with_line(4, "  batch: 0"), NULL, 0, ":4:10: data.batch: must be >= 1, got 0");
    expect_error(with_line(14, "  steps: 0"), NULL, 0, ":14:10: train.steps: must be >= 1, got 0");
    expect_error(with_line(14, "  steps: 10\n  lr: 0"), NULL, 0, ":15:7: train.lr: must be > 0, got 0");
    expect_error(with_line(14, "  steps: 10\n  lr: -1e-3"), NULL, 0, ":15:7: train.lr: must be > 0, got -1e-3");
    expect_error(with_line(14, "  steps: 10\n  warmup: -1"), NULL, 0, ":15:11: train.warmup: must be >= 0, got -1");
    expect_error(with_line(14, "  steps: 10\n  beta2: 1"), NULL, 0, ":15:10: train.beta2: must be < 1, got 1");
    expect_error(with_line(8, "  heads: 4\n  vocab: 1"), NULL, 0, ":9:10: model.vocab: must be >= 2, got 1");
    expect_error(with_line(8, "  heads: 4\n  vocab: 65537"), NULL, 0, ":9:10: model.vocab: must be <= 65536, got 65537");
    expect_error(with_line(11, "  sequence: 0"), NULL, 0, ":11:13: parallel.sequence: must be >= 1, got 0");
    expect_error(with_line(12, "  data: 0"), NULL, 0, ":12:9: parallel.data: must be >= 1, got 0");
    expect_error(with_line(10, "  scheme: lsss"), NULL, 0,
                 ":10:11: parallel.scheme: expected one of lss, megatron-sp, none, got 'lsss' (did you mean 'lss'?)");
    expect_error(with_line(12, "  data: 2\n  balance: zigzg"), NULL, 0,
                 ":13:12: parallel.balance: expected one of none, zigzag, got 'zigzg' (did you mean 'zigzag'?)");
    expect_error(with_line(16, "  dir: runs/x\nbackend: gpu"), NULL, 0, ":17:10: backend: expected one of cpu, cuda, got 'gpu' (did you mean 'cpu'?)");
    expect_error(with_line(16, "  dir: runs/x\ncomm: ncl"), NULL, 0,
                 ":17:7: comm: expected one of auto, mpi, nccl, got 'ncl' (did you mean 'nccl'?)");
    // required keys: the position of the parent map
    expect_error(with_line(3, NULL), NULL, 0, ":2:3: missing required key 'data.seq_len'");
    expect_error(with_line(16, NULL), NULL, 0, ":15:8: missing required key 'output.dir'"); // "output:" alone: an empty map
    expect_error(with_lines(15, 16, NULL), NULL, 0, ":1:1: missing required key 'output'");
    expect_error(xstrdup("- 1\n"), NULL, 0, ":1:1: expected a map of keys at the top, got a list");

    // rules between keys point at the offending key
    expect_error(with_line(8, "  heads: 5"), NULL, 0,
                 ":8:10: model.heads: dim 64 is not divisible by heads 5 (each head takes dim/heads channels)");
    expect_error(with_line(3, "  seq_len: 4098"), NULL, 0,
                 ":11:13: parallel.sequence: data.seq_len 4098 is not divisible by sequence 4 (each rank holds "
                 "seq_len/sequence tokens)");
    char *zigzag[] = {"data.seq_len=4100"};
    expect_error(with_line(12, "  data: 2\n  balance: zigzag"), zigzag, 1,
                 ":13:12: parallel.balance: zigzag cuts data.seq_len into 2 x sequence = 8 chunks; 4100 is not "
                 "divisible by 8");
    expect_error(with_line(4, "  batch: 3"), NULL, 0,
                 ":12:9: parallel.data: data.batch 3 is not divisible by data 2 (each data group takes batch/data "
                 "sequences)");
    expect_error(with_line(10, "  scheme: megatron-sp\n  balance: zigzag"), NULL, 0,
                 ":11:12: parallel.balance: zigzag balances the causal attention of scheme lss only, but scheme is "
                 "megatron-sp");
    expect_error(with_line(10, "  scheme: none"), NULL, 0,
                 ":11:13: parallel.sequence: scheme none keeps each sequence on one rank, so sequence must be 1, got "
                 "4 (use scheme lss or megatron-sp to split sequences)");
    expect_error(with_line(10, NULL), NULL, 0, // scheme absent: defaults to none
                 ":10:13: parallel.sequence: scheme none keeps each sequence on one rank, so sequence must be 1, got "
                 "4 (use scheme lss or megatron-sp to split sequences)");
    expect_error(with_lines(10, 12, "  scheme: megatron-sp\n  sequence: 3\n  data: 1"), NULL, 0,
                 ":11:13: parallel.sequence: megatron-sp splits the 4 heads across ranks; 4 heads are not divisible "
                 "by sequence 3");
    char *mlp[] = {"parallel.scheme=megatron-sp", "model.mlp=102"};
    expect_error(xstrdup(BASE), mlp, 2,
                 ":11:13: parallel.sequence: megatron-sp splits the 102 MLP columns across ranks; 102 columns are not "
                 "divisible by sequence 4");
    char *lr_min[] = {"train.lr_min=0.01"};
    expect_error(xstrdup(BASE), lr_min, 1, "--set train.lr_min=0.01: train.lr_min: must be <= train.lr (0.0003), got 0.01");
    char *nccl[] = {"comm=nccl"};
    expect_error(xstrdup(BASE), nccl, 1, "--set comm=nccl: comm: nccl needs backend: cuda (the cpu backend communicates "
                                         "through MPI)");
    char *cuda_odd[] = {"backend=cuda", "model.dim=33", "model.heads=3"};
    expect_error(xstrdup(BASE), cuda_odd, 3, "--set model.dim=33: model.dim: backend: cuda needs an even dim (bf16 "
                                             "rows travel between ranks as 4-byte words), got 33");
#ifndef LSST_CUDA
    char *cuda[] = {"backend=cuda"};
    expect_error(xstrdup(BASE), cuda, 1, "--set backend=cuda: backend: cuda, but this lsst-run was built without CUDA "
                                         "(rebuild with make CUDA=1, or use backend: cpu)");
    expect_error(with_line(16, "  dir: runs/x\nbackend: cuda"), NULL, 0,
                 ":17:10: backend: cuda, but this lsst-run was built without CUDA (rebuild with make CUDA=1, or use "
                 "backend: cpu)");
#endif
    // YAML syntax errors come from the parser, with the position
    RunConfig c2;
    rc = load_doc(&c2, "data: [1,\n", NULL, 0);
    CHECK(rc == -1 && !strncmp(err, cfg_path, strlen(cfg_path)) && strstr(err, ": YAML syntax error: "),
          "syntax error names the file (%s)", err);
}

static void test_overrides(void) {
    RunConfig c;
    char *sets[] = {"model.dim=128", "backend=cpu", "train.lr=1e-3", "parallel.balance=zigzag", "data.dir='my data'",
                    "train.seed=18446744073709551615"};
    int rc = load_doc(&c, BASE, sets, 5);
    CHECK(rc == 0, "--set model.dim=128 backend=cpu train.lr=1e-3 parallel.balance=zigzag data.dir='my data' (%s)", err);
    if (!rc) {
        CHECK(c.dim == 128 && c.mlp == 512 && c.lr == 1e-3 && c.lr_min == 1e-4 && c.balance == BALANCE_ZIGZAG &&
                  !strcmp(c.data_dir, "my data"),
              "overrides win, and defaults follow them (mlp 4 x 128, lr_min lr/10)");
        config_free(&c);
    }
    char *later[] = {"model.dim=32", "model.dim=256"};
    rc = load_doc(&c, BASE, later, 2);
    CHECK(rc == 0 && c.dim == 256, "the last --set of a key wins");
    config_free(&c);
    // a section absent from the file
    char *par[] = {"parallel.sequence=2", "parallel.scheme=lss"};
    char *doc = with_lines(9, 12, NULL);
    rc = load_doc(&c, doc, par, 2);
    CHECK(rc == 0 && c.scheme == SCHEME_LSS && c.sequence == 2 && c.data == 1, "--set into an absent section (%s)", err);
    config_free(&c);
    free(doc);

    expect_error(xstrdup(BASE), &sets[5], 1,
                 "--set train.seed=18446744073709551615: train.seed: expected an integer, got '18446744073709551615'");
    char *s1[] = {"model.dimm=128"};
    expect_error(xstrdup(BASE), s1, 1, "--set model.dimm=128: unknown key 'model.dimm' (did you mean 'model.dim'?)");
    char *s2[] = {"modle.dim=128"};
    expect_error(xstrdup(BASE), s2, 1, "--set modle.dim=128: unknown key 'modle.dim' (did you mean 'model.dim'?)");
    char *s3[] = {"dim=128"};
    expect_error(xstrdup(BASE), s3, 1, "--set dim=128: unknown key 'dim' (did you mean 'model.dim'?)");
    char *s4[] = {"model.dim=0"};
    expect_error(xstrdup(BASE), s4, 1, "--set model.dim=0: model.dim: must be >= 1, got 0");
    char *s5[] = {"model.dim=abc"};
    expect_error(xstrdup(BASE), s5, 1, "--set model.dim=abc: model.dim: expected an integer, got 'abc'");
    char *s6[] = {"model.heads=5"};
    expect_error(xstrdup(BASE), s6, 1,
                 "--set model.heads=5: model.heads: dim 64 is not divisible by heads 5 (each head takes dim/heads "
                 "channels)");
    char *s7[] = {"parallel.scheme=lsss"};
    expect_error(xstrdup(BASE), s7, 1, "--set parallel.scheme=lsss: parallel.scheme: expected one of lss, megatron-sp, "
                                       "none, got 'lsss' (did you mean 'lss'?)");
    char *s8[] = {"model=3"};
    expect_error(xstrdup(BASE), s8, 1, "--set model=3: 'model' is a map; set its entries one at a time");
    char *s9[] = {"model.dim"};
    expect_error(xstrdup(BASE), s9, 1, "--set model.dim: expected KEY=VALUE");
    char *s10[] = {"output.dir="};
    expect_error(xstrdup(BASE), s10, 1, "--set output.dir=: output.dir: expected a string, got nothing");
}

static void test_layout(void) {
    RunConfig c;
    int rc = load_doc(&c, BASE, NULL, 0);
    CHECK(rc == 0, "base loads");
    CHECK(config_check_layout(&c, 8, err, sizeof err) == 0, "8 ranks = 4 x 2");
    CHECK(config_check_layout(&c, 4, err, sizeof err) == -1 &&
              !strcmp(err, "4 ranks launched, but parallel.sequence x parallel.data = 4 x 2 = 8"),
          "4 ranks for a 4 x 2 grid (%s)", err);
    CHECK(config_check_layout(&c, 1, err, sizeof err) == -1 &&
              !strcmp(err, "1 rank launched, but parallel.sequence x parallel.data = 4 x 2 = 8"),
          "1 rank for a 4 x 2 grid (%s)", err);
    // A RunConfig changed by hand is checked again, without positions.
    c.scheme = SCHEME_MEGATRON_SP;
    c.sequence = 3;
    c.data = 1;
    CHECK(config_check_layout(&c, 3, err, sizeof err) == -1 &&
              !strcmp(err, "parallel.sequence: megatron-sp splits the 4 heads across ranks; 4 heads are not divisible "
                           "by sequence 3"),
          "layout check repeats the rules between keys (%s)", err);
    c.sequence = 0;
    CHECK(config_check_layout(&c, 3, err, sizeof err) == -1 && !strcmp(err, "parallel.sequence: must be >= 1, got 0"),
          "no division by zero on a hand-made config (%s)", err);
    config_free(&c);
}

static int same_config(const RunConfig *a, const RunConfig *b) {
    return !strcmp(a->data_dir, b->data_dir) && a->seq_len == b->seq_len && a->batch == b->batch &&
           a->layers == b->layers && a->dim == b->dim && a->heads == b->heads && a->mlp == b->mlp &&
           a->vocab == b->vocab && a->scheme == b->scheme && a->sequence == b->sequence && a->data == b->data &&
           a->balance == b->balance && a->steps == b->steps && a->lr == b->lr && a->lr_min == b->lr_min &&
           a->warmup == b->warmup && a->seed == b->seed && a->eval_every == b->eval_every &&
           a->eval_sequences == b->eval_sequences && a->ckpt_every == b->ckpt_every &&
           a->weight_decay == b->weight_decay && a->clip == b->clip && a->beta1 == b->beta1 && a->beta2 == b->beta2 &&
           a->eps == b->eps && a->backend == b->backend && a->comm == b->comm && !strcmp(a->output_dir, b->output_dir);
}

static void roundtrip(const char *what, const char *path, char *const *sets, int nsets) {
    RunConfig a, b;
    char *resolved = path_join(tmpdir, "run.yaml");
    int rc = config_load(&a, path, sets, nsets, err, sizeof err);
    CHECK(rc == 0, "%s loads (%s)", what, err);
    if (rc) { free(resolved); return; }
    CHECK(config_write_resolved(&a, resolved) == 0, "%s: resolved config written", what);
    rc = config_load(&b, resolved, NULL, 0, err, sizeof err);
    CHECK(rc == 0 && same_config(&a, &b), "%s: the resolved config loads to an identical RunConfig (%s)", what, err);
    if (rc == 0) config_free(&b);
    config_free(&a);
    free(resolved);
}

static void test_roundtrip(void) {
    roundtrip("full.yaml", FIX "full.yaml", NULL, 0);
    roundtrip("minimal.yaml", FIX "minimal.yaml", NULL, 0);
    char *odd[] = {"data.dir=\"~\"", "output.dir='it''s: here #1'", "train.lr=0.1", "train.lr_min=0.030000000000000002",
                   "train.seed=9223372036854775807", "train.eps=1e-300"};
    roundtrip("odd strings and numbers", FIX "minimal.yaml", odd, 6);
    char *odd2[] = {"data.dir=null", "output.dir=123"};
    RunConfig c;
    CHECK(config_load(&c, FIX "minimal.yaml", odd2 + 1, 1, err, sizeof err) == 0 && !strcmp(c.output_dir, "123"),
          "a number is a valid directory name");
    config_free(&c);
    CHECK(config_load(&c, FIX "minimal.yaml", odd2, 1, err, sizeof err) == -1 &&
              !strcmp(err, "--set data.dir=null: data.dir: expected a string, got 'null'"),
          "null is not a directory (%s)", err);

    // The resolved file lists every key, and README documents every key it lists.
    CHECK(config_load(&c, FIX "full.yaml", NULL, 0, err, sizeof err) == 0, "full.yaml");
    char *resolved = path_join(tmpdir, "resolved.yaml");
    CHECK(config_write_resolved(&c, resolved) == 0, "write");
    config_free(&c);
    YNode *root = yn_load_file(resolved, err, sizeof err);
    char *readme = read_file("README.md", NULL);
    int keys = 0, missing = 0;
    for (int i = 0; root && readme && i < root->n; i++) {
        YNode *sec = root->items[i];
        for (int j = 0; j < (sec->kind == YNODE_MAP ? sec->n : 1); j++) {
            char *key = sec->kind == YNODE_MAP ? xasprintf("`%s.%s`", root->keys[i]->value, sec->keys[j]->value)
                                               : xasprintf("`%s`", root->keys[i]->value);
            keys++;
            if (!strstr(readme, key)) { missing++; printf("#   README lacks %s\n", key); }
            free(key);
        }
    }
    CHECK(root && readme && keys == 29 && missing == 0, "README documents all %d keys of the resolved config", keys);
    char *bad = path_join(tmpdir, "no/such/dir/run.yaml");
    CHECK(config_write_resolved(&(RunConfig){0}, bad) == -1, "writing into a missing directory fails");
    free(bad);
    free(readme);
    yn_free(root);
    free(resolved);
}

int main(void) {
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    snprintf(cfg_path, sizeof cfg_path, "%s/cfg.yaml", tmpdir);
    test_full_example();
    test_defaults();
    test_fixture_errors();
    test_errors();
    test_overrides();
    test_layout();
    test_roundtrip();
    rm_rf(tmpdir);
    return check_done();
}
