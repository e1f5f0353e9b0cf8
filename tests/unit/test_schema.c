// schema: types, ranges, enums, unknown keys with suggestions, required keys, defaults,
// open maps and lists, --set overrides, one-line messages with file:line:col.
#include "check.h"
#include "common.h"
#include "schema.h"
#include "yaml_tree.h"

#include <string.h>

// A workflow-like schema: the kinds lsst-submit needs (lists of maps, open maps, checks).
static int check_hhmmss(const YNode *v, char *msg, size_t len) {
    int h, m, s;
    char end;
    if (sscanf(v->value, "%d:%d:%d%c", &h, &m, &s, &end) == 3 && m < 60 && s < 60) return 0;
    snprintf(msg, len, "expected HH:MM:SS, got '%s'", v->value);
    return -1;
}

static const SchemaKey stage_keys[] = {
    {.name = "name", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED},
    {.name = "nodes", .type = SCHEMA_INT, .flags = SCHEMA_MIN, .min = 1, .def = "1"},
    {.name = "time", .type = SCHEMA_STRING, .check = check_hhmmss, .def = "00:10:00"},
    {.name = "after", .type = SCHEMA_LIST, .each = &(const SchemaKey){.type = SCHEMA_STRING}},
    {.name = "exclusive", .type = SCHEMA_BOOL, .def = "false"},
    {0}};

static const SchemaKey limits_keys[] = {
    {.name = "max_jobs", .type = SCHEMA_INT, .flags = SCHEMA_MIN, .min = 1, .def = "100"},
    {.name = "share", .type = SCHEMA_FLOAT, .flags = SCHEMA_MIN_EXCL | SCHEMA_MAX, .min = 0, .max = 1, .def = "0.5"},
    {0}};

static const SchemaKey top_keys[] = {
    {.name = "name", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED},
    {.name = "vars", .type = SCHEMA_MAP, .each = &(const SchemaKey){.type = SCHEMA_SCALAR}},
    {.name = "stages", .type = SCHEMA_LIST, .flags = SCHEMA_REQUIRED,
     .each = &(const SchemaKey){.type = SCHEMA_MAP, .keys = stage_keys}},
    {.name = "scheduler", .type = SCHEMA_ENUM, .choices = (const char *const[]){"slurm", "lsf", "local", NULL},
     .def = "local"},
    {.name = "limits", .type = SCHEMA_MAP, .keys = limits_keys},
    {.name = "big", .type = SCHEMA_INT, .flags = SCHEMA_INT64},
    {0}};

static const char *BASE = "name: demo\n"          // 1
                          "vars: {n: 3, s: x}\n"  // 2
                          "stages:\n"             // 3
                          "  - name: prep\n"      // 4
                          "    time: 01:00:00\n"  // 5
                          "  - name: train\n"     // 6
                          "    nodes: 2\n"        // 7
                          "    after: [prep]\n";  // 8

// Load `doc` as "w.yaml", apply sets, validate; return the error ("" when valid).
static char errbuf[1024];
static const char *validate(const char *doc, const char *const *sets, int nsets, YNode **out) {
    errbuf[0] = '\0';
    YNode *root = yn_load_string(doc, strlen(doc), "w.yaml", errbuf, sizeof errbuf);
    if (!root) return errbuf;
    int rc = 0;
    for (int i = 0; i < nsets && !rc; i++) rc = schema_set(root, top_keys, sets[i], errbuf, sizeof errbuf);
    if (!rc) rc = schema_validate(root, top_keys, errbuf, sizeof errbuf);
    if (out && !rc) *out = root;
    else yn_free(root);
    return errbuf;
}

static void expect(const char *doc, const char *want) {
    const char *got = validate(doc, NULL, 0, NULL);
    CHECK(!strcmp(got, want), "error: %s", want);
    if (strcmp(got, want)) printf("#   got:  %s\n", got);
}

static void expect_set(const char *set, const char *want) {
    const char *got = validate(BASE, &set, 1, NULL);
    CHECK(!strcmp(got, want), "--set %s: %s", set, want[0] ? want : "(accepted)");
    if (strcmp(got, want)) printf("#   got:  %s\n", got);
}

static char *cat(const char *a, const char *b) { return xasprintf("%s%s", a, b); }

static void test_valid_and_defaults(void) {
    YNode *root = NULL;
    const char *err = validate(BASE, NULL, 0, &root);
    CHECK(root && !err[0], "the base document is valid (%s)", err);
    if (!root) return;
    CHECK(schema_int(root, "limits.max_jobs") == 100, "an absent optional map gets its defaults");
    CHECK(schema_float(root, "limits.share") == 0.5, "float default");
    CHECK(!strcmp(schema_str(root, "scheduler"), "local"), "enum default");
    YNode *stages = schema_lookup(root, "stages");
    CHECK(stages && stages->n == 2 && schema_int(stages->items[0], "nodes") == 1, "defaults inside list items");
    CHECK(stages && !strcmp(schema_str(stages->items[0], "time"), "01:00:00"), "given value kept");
    CHECK(stages && !schema_bool(stages->items[1], "exclusive"), "bool default");
    CHECK(schema_enum(root, "scheduler", (const char *const[]){"slurm", "lsf", "local", NULL}) == 2, "enum index");
    CHECK(schema_lookup(root, "big") == NULL, "an optional key without a default stays absent");
    CHECK(schema_lookup(root, "vars.n") && schema_int(root, "vars.n") == 3, "open map values");
    YNode *lim = schema_lookup(root, "limits");
    CHECK(lim && lim->line == 1 && lim->col == 1 && !strcmp(lim->file, "w.yaml"), "defaults sit at the parent map");
    yn_free(root);

    char *doc = cat(BASE, "limits:\nbig: 9000000000\n");
    err = validate(doc, NULL, 0, &root);
    CHECK(!err[0] && schema_int(root, "big") == 9000000000LL && schema_int(root, "limits.max_jobs") == 100,
          "a null section is an empty map; SCHEMA_INT64 takes large values (%s)", err);
    if (!err[0]) yn_free(root);
    free(doc);
}

static void test_errors(void) {
    char *d;
    expect(d = cat(BASE, "nmae: x\n"), "w.yaml:9:1: unknown key 'nmae' (did you mean 'name'?)"), free(d);
    expect(d = cat(BASE, "zzz: 1\n"), "w.yaml:9:1: unknown key 'zzz'"), free(d);
    expect(d = cat(BASE, "limits: {max_job: 3}\n"),
           "w.yaml:9:10: unknown key 'limits.max_job' (did you mean 'max_jobs'?)"), free(d);
    expect(d = cat(BASE, "limits: {max_jobs: many}\n"),
           "w.yaml:9:20: limits.max_jobs: expected an integer, got 'many'"), free(d);
    expect(d = cat(BASE, "limits: {max_jobs: 1.5}\n"), "w.yaml:9:20: limits.max_jobs: expected an integer, got '1.5'"),
        free(d);
    expect(d = cat(BASE, "limits: {max_jobs: '3'}\n"), "w.yaml:9:20: limits.max_jobs: expected an integer, got '3'"),
        free(d);
    expect(d = cat(BASE, "limits: {max_jobs: 0}\n"), "w.yaml:9:20: limits.max_jobs: must be >= 1, got 0"), free(d);
    expect(d = cat(BASE, "limits: {max_jobs: 3000000000}\n"),
           "w.yaml:9:20: limits.max_jobs: must be <= 2147483647, got 3000000000"), free(d);
    expect(d = cat(BASE, "limits: {share: 0}\n"), "w.yaml:9:17: limits.share: must be > 0, got 0"), free(d);
    expect(d = cat(BASE, "limits: {share: 1.5}\n"), "w.yaml:9:17: limits.share: must be <= 1, got 1.5"), free(d);
    expect(d = cat(BASE, "limits: {share: .nan}\n"), "w.yaml:9:17: limits.share: expected a number, got '.nan'"),
        free(d);
    expect(d = cat(BASE, "limits: 5\n"), "w.yaml:9:9: limits: expected a map, got '5'"), free(d);
    expect(d = cat(BASE, "scheduler: slurmm\n"),
           "w.yaml:9:12: scheduler: expected one of slurm, lsf, local, got 'slurmm' (did you mean 'slurm'?)"),
        free(d);
    expect(d = cat(BASE, "scheduler: pbs\n"), "w.yaml:9:12: scheduler: expected one of slurm, lsf, local, got 'pbs'"),
        free(d);
    expect(d = cat(BASE, "scheduler: [slurm]\n"),
           "w.yaml:9:12: scheduler: expected one of slurm, lsf, local, got a list"), free(d);
    expect("name: x\nstages: []\nvars: {n: [1]}\n", "w.yaml:3:11: vars.n: expected a single value, got a list");
    // nested in lists
    expect(d = cat(BASE, "    nodez: 2\n"), "w.yaml:9:5: unknown key 'stages[1].nodez' (did you mean 'nodes'?)"),
        free(d);
    expect(d = cat(BASE, "    exclusive: maybe\n"), "w.yaml:9:16: stages[1].exclusive: expected true or false, got 'maybe'"),
        free(d);
    expect(d = cat(BASE, "    time: 1 hour\n"), "w.yaml:9:11: stages[1].time: expected HH:MM:SS, got '1 hour'"),
        free(d);
    expect(d = cat(BASE, "  - name: x\n    after: prep\n"), "w.yaml:10:12: stages[2].after: expected a list, got 'prep'"),
        free(d);
    expect(d = cat(BASE, "  - name: x\n    after: [prep, {a: 1}]\n"), "w.yaml:10:19: stages[2].after[1]: expected a string, got a map"),
        free(d);
    expect(d = cat(BASE, "  - nodes: 1\n"), "w.yaml:9:5: missing required key 'stages[2].name'"), free(d);
    expect("name: x\n", "w.yaml:1:1: missing required key 'stages'");
    expect("name:\nstages: []\n", "w.yaml:1:6: name: expected a string, got nothing");
    expect("- 1\n", "w.yaml:1:1: expected a map of keys at the top, got a list");
    // Messages stay on one line whatever the value holds.
    expect("name: demo\nstages: []\nscheduler: \"a\\nb\"\n",
           "w.yaml:3:12: scheduler: expected one of slurm, lsf, local, got 'a?b'");
}

static void test_set(void) {
    expect_set("limits.max_jobs=7", "");
    YNode *root = NULL;
    const char *sets[] = {"limits.share=1e-1", "scheduler=slurm", "vars.new='quoted: text'"};
    const char *err = validate(BASE, sets, 3, &root);
    CHECK(root && !err[0], "overrides into an absent section, an enum, an open map (%s)", err);
    if (root) {
        CHECK(schema_float(root, "limits.share") == 0.1 && !strcmp(schema_str(root, "scheduler"), "slurm") &&
                  !strcmp(schema_str(root, "vars.new"), "quoted: text"),
              "overridden values are read back");
        YNode *share = schema_lookup(root, "limits.share");
        CHECK(share && share->line == 0 && !strcmp(share->file, "--set limits.share=1e-1"), "override position");
        yn_free(root);
    }
    expect_set("limits.max_jobs=0", "--set limits.max_jobs=0: limits.max_jobs: must be >= 1, got 0");
    expect_set("name=", "--set name=: name: expected a string, got nothing");
    expect_set("limits.max_job=3", "--set limits.max_job=3: unknown key 'limits.max_job' (did you mean 'limits.max_jobs'?)");
    expect_set("limts.share=0.2", "--set limts.share=0.2: unknown key 'limts.share' (did you mean 'limits.share'?)");
    expect_set("max_jobs=2", "--set max_jobs=2: unknown key 'max_jobs' (did you mean 'limits.max_jobs'?)");
    expect_set("qqq=1", "--set qqq=1: unknown key 'qqq'");
    expect_set("name.sub=1", "--set name.sub=1: unknown key 'name.sub'");
    expect_set("limits..share=1", "--set limits..share=1: unknown key 'limits..share' (did you mean 'limits.share'?)");
    expect_set("limits=3", "--set limits=3: 'limits' is a map; set its entries one at a time");
    expect_set("stages=3", "--set stages=3: 'stages' is a list; set its entries one at a time");
    expect_set("limits.share", "--set limits.share: expected KEY=VALUE");
    expect_set("=3", "--set =3: expected KEY=VALUE");
    expect_set("scheduler=a: b", "--set scheduler=a: b: the value must be one YAML scalar (quote it if it holds ': ' or ' #')");
    expect_set("scheduler=[slurm]", "--set scheduler=[slurm]: the value must be one YAML scalar (quote it if it holds ': ' or ' #')");
    // The parent exists but is not a map: the error points at it in the file.
    const char *set = "limits.share=0.2";
    char *doc = cat(BASE, "limits: 5\n");
    err = validate(doc, &set, 1, NULL);
    CHECK(!strcmp(err, "w.yaml:9:9: limits: expected a map, got '5'"), "--set below a scalar (%s)", err);
    free(doc);
}

static void test_error_at(void) {
    char err[128];
    YNode *file_node = yn_new_scalar("x", true, "f.yaml", 3, 7);
    YNode *set_node = yn_new_scalar("x", true, "--set a.b=1", 0, 0);
    schema_error_at(err, sizeof err, file_node, "bad %d", 1);
    CHECK(!strcmp(err, "f.yaml:3:7: bad 1"), "file:line:col prefix (%s)", err);
    schema_error_at(err, sizeof err, set_node, "bad");
    CHECK(!strcmp(err, "--set a.b=1: bad"), "no :0:0 for an override (%s)", err);
    schema_error_at(err, sizeof err, NULL, "two\nlines");
    CHECK(!strcmp(err, "two lines"), "always one line (%s)", err);
    yn_free(file_node);
    yn_free(set_node);
    char b[32];
    CHECK(!strcmp(schema_fmt_double(3.0e-4, b), "0.0003") && !strcmp(schema_fmt_double(1e-8, b), "1e-08") &&
              !strcmp(schema_fmt_double(0.1 + 0.2, b), "0.30000000000000004"),
          "shortest round-trip doubles");
}

int main(void) {
    test_valid_and_defaults();
    test_errors();
    test_set();
    test_error_at();
    return check_done();
}
