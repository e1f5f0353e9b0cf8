// Workflows: load -> --set vars -> schema -> names, `after`, cycles -> matrix/zip shapes
// -> {{references}} -> per-job resources against the site's limits -> the plan (jobs).
// Everything is checked before anything is written; every error is one line
// "FILE:LINE:COL: message" pointing at the value in question.
#include "workflow.h"
#include "common.h"
#include "schema.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

// ---- WfBuf ----

static void wfb_grow(WfBuf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    b->s = xrealloc(b->s, cap);
    b->cap = cap;
}
void wfb_addn(WfBuf *b, const char *text, size_t n) {
    wfb_grow(b, n);
    memcpy(b->s + b->len, text, n);
    b->len += n;
    b->s[b->len] = '\0';
}
void wfb_add(WfBuf *b, const char *text) { wfb_addn(b, text, strlen(text)); }
void wfb_addf(WfBuf *b, const char *fmt, ...) {
    va_list ap, aq;
    va_start(ap, fmt);
    va_copy(aq, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    wfb_grow(b, (size_t)n);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, aq);
    va_end(aq);
    b->len += (size_t)n;
}
// Inside single quotes the shell interprets nothing; a quote itself is closed, escaped and
// reopened ('\''). Newlines, $, `, ; stay literal: any value is exactly one word.
void wfb_add_quoted(WfBuf *b, const char *value) {
    wfb_add(b, "'");
    for (const char *p = value; *p; p++) {
        if (*p == '\'') wfb_add(b, "'\\''");
        else wfb_addn(b, p, 1);
    }
    wfb_add(b, "'");
}
char *wfb_take(WfBuf *b) {
    char *s = b->s ? b->s : xstrdup("");
    memset(b, 0, sizeof *b);
    return s;
}
void wfb_free(WfBuf *b) {
    free(b->s);
    memset(b, 0, sizeof *b);
}

// ---- templates: {{name}} ----

int wf_next_ref(const char *p, WfRef *ref) {
    const char *open = strstr(p, "{{");
    if (!open) return 0;
    ref->start = open;
    const char *close = strstr(open + 2, "}}");
    if (!close) return -1;
    const char *a = open + 2, *z = close;
    while (a < z && *a == ' ') a++;
    while (z > a && z[-1] == ' ') z--;
    ref->name = a;
    ref->name_len = (size_t)(z - a);
    ref->end = close + 2;
    return 1;
}

bool wf_identifier(const char *s, size_t len) {
    if (!len || isdigit((unsigned char)s[0])) return false;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_') return false;
    return true;
}

int wf_template_refs(const char *tmpl, int (*fn)(void *, const char *, size_t), void *ctx, char *err,
                     size_t errlen) {
    WfRef ref;
    for (const char *p = tmpl;; p = ref.end) {
        int found = wf_next_ref(p, &ref);
        if (!found) return 0;
        if (found < 0) {
            snprintf(err, errlen, "unclosed '{{' at offset %td (a reference is {{name}})", ref.start - tmpl);
            return -2;
        }
        if (!wf_identifier(ref.name, ref.name_len)) {
            int shown = ref.end - ref.start > 60 ? 60 : (int)(ref.end - ref.start);
            snprintf(err, errlen, "'%.*s' is not a reference (a reference is {{name}}: letters, digits, _)", shown,
                     ref.start);
            return -2;
        }
        int rc = fn(ctx, ref.name, ref.name_len);
        if (rc) return rc;
    }
}

int wf_expand(const char *tmpl, WfLookup lookup, void *ctx, WfBuf *out, char *err, size_t errlen) {
    const char *p = tmpl;
    WfRef ref;
    for (int found; (found = wf_next_ref(p, &ref));) {
        wfb_addn(out, p, (size_t)(ref.start - p));
        if (found < 0) {
            snprintf(err, errlen, "unclosed '{{' (a reference is {{name}})");
            return -1;
        }
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)ref.name_len, ref.name);
        const char *value = ref.name_len < sizeof name ? lookup(ctx, name) : NULL;
        if (!value) {
            snprintf(err, errlen, "unknown name '{{%s}}'", name);
            return -1;
        }
        wfb_add_quoted(out, value);
        p = ref.end;
    }
    wfb_add(out, p);
    return 0;
}

// ---- the schema ----

const char *const wf_resource_names[WF_NRES] = {"nodes", "ranks", "ranks_per_node", "gpus_per_rank",
                                                "cpus_per_rank", "time"};
// Names every job has; a var or matrix axis may not take them.
static const char *const builtins[] = {"run_dir", "job_dir", "stage", "point", "workflow_dir", "workflow",
                                       "attempt", "nodes", "ranks", "ranks_per_node", "gpus_per_rank",
                                       "cpus_per_rank", NULL};

static int check_name(const YNode *v, char *msg, size_t len) {
    if (v->value[0] && wf_safe_word(v->value, NULL)) return 0;
    snprintf(msg, len, "must be letters, digits, '_', '.', '-' (it names directories and jobs), got '%s'",
             v->value);
    return -1;
}

// "{{name}}" alone: the value comes from a var or matrix axis (checked later, per job). ref:
// the reference found (may be NULL).
static bool single_ref(const char *s, WfRef *ref) {
    WfRef local;
    if (!ref) ref = &local;
    return wf_next_ref(s, ref) == 1 && ref->start == s && !*ref->end && wf_identifier(ref->name, ref->name_len);
}

static int check_count(const YNode *v, char *msg, size_t len) {
    long long x;
    if (single_ref(v->value, NULL)) return 0;
    if (!yn_as_int(v, &x)) {
        snprintf(msg, len, "expected an integer or a {{name}}, got '%s'", v->value);
        return -1;
    }
    if (x < 0 || x > 1000000) {
        snprintf(msg, len, "must be between 0 and 1000000, got %lld", x);
        return -1;
    }
    return 0;
}

static int check_time(const YNode *v, char *msg, size_t len) {
    if (single_ref(v->value, NULL) || wf_parse_time(v->value) >= 0) return 0;
    snprintf(msg, len, "expected a time HH:MM:SS or a {{name}}, got '%s'", v->value);
    return -1;
}

static int check_axis(const YNode *list, char *msg, size_t len) {
    if (list->n > 0) return 0;
    snprintf(msg, len, "an empty list gives no jobs; give at least one value");
    return -1;
}

static const SchemaKey scalar_item = {.type = SCHEMA_SCALAR};
static const SchemaKey axis_list = {.type = SCHEMA_LIST, .each = &scalar_item, .check = check_axis};
static const SchemaKey after_item = {.type = SCHEMA_STRING};

static const SchemaKey stage_keys[] = {
    {.name = "name", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED, .check = check_name},
    {.name = "description", .type = SCHEMA_STRING},
    {.name = "run", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED},
    {.name = "after", .type = SCHEMA_LIST, .each = &after_item},
    {.name = "nodes", .type = SCHEMA_SCALAR, .check = check_count},
    {.name = "ranks", .type = SCHEMA_SCALAR, .check = check_count},
    {.name = "ranks_per_node", .type = SCHEMA_SCALAR, .check = check_count},
    {.name = "gpus_per_rank", .type = SCHEMA_SCALAR, .check = check_count},
    {.name = "cpus_per_rank", .type = SCHEMA_SCALAR, .check = check_count},
    {.name = "time", .type = SCHEMA_SCALAR, .check = check_time},
    {.name = "matrix", .type = SCHEMA_MAP, .each = &axis_list},
    {.name = "zip", .type = SCHEMA_MAP, .each = &axis_list},
    {0}};
static const SchemaKey stage_item = {.type = SCHEMA_MAP, .keys = stage_keys};

static int check_stages(const YNode *list, char *msg, size_t len) {
    if (list->n > 0) return 0;
    snprintf(msg, len, "a workflow needs at least one stage");
    return -1;
}

static const SchemaKey workflow_schema[] = {
    {.name = "name", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED, .check = check_name},
    {.name = "description", .type = SCHEMA_STRING},
    {.name = "vars", .type = SCHEMA_MAP, .each = &scalar_item},
    {.name = "stages", .type = SCHEMA_LIST, .flags = SCHEMA_REQUIRED, .each = &stage_item, .check = check_stages},
    {0}};

// ---- helpers ----

#define FAIL_AT(node, ...)                                    \
    do {                                                      \
        schema_error_at(err, errlen, (node), __VA_ARGS__);    \
        return -1;                                            \
    } while (0)

static int find_builtin(const char *name) {
    for (int i = 0; builtins[i]; i++)
        if (!strcmp(builtins[i], name)) return i;
    return -1;
}

static int find_var(const Workflow *wf, const char *name) {
    for (int i = 0; i < wf->nvars; i++)
        if (!strcmp(wf->var_names[i], name)) return i;
    return -1;
}

static int find_axis(const WfStage *st, const char *name) {
    for (int i = 0; i < st->naxes; i++)
        if (!strcmp(st->axes[i].name, name)) return i;
    return -1;
}

static int find_stage(const Workflow *wf, const char *name, int upto) {
    for (int i = 0; i < upto; i++)
        if (!strcmp(wf->stages[i].name, name)) return i;
    return -1;
}

static const char *scalar_text(const YNode *n) { return yn_is_null(n) ? "" : n->value; }

// ---- --set NAME=VALUE ----

static int apply_set(YNode *root, const char *assignment, char *err, size_t errlen) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment) {
        snprintf(err, errlen, "--set %s: expected NAME=VALUE (a var of the workflow)", assignment);
        return -1;
    }
    char *name = strndup(assignment, (size_t)(eq - assignment));
    YNode *vars = yn_get(root, "vars");
    int idx = vars && vars->kind == YNODE_MAP ? yn_find(vars, name) : -1;
    if (idx < 0) {
        const char *names[512];
        int n = 0;
        for (int i = 0; vars && vars->kind == YNODE_MAP && i < vars->n && n < 512; i++)
            names[n++] = vars->keys[i]->value;
        const char *hint = did_you_mean(name, names, n);
        snprintf(err, errlen, "--set %s: unknown var '%s'%s%s%s (vars are declared under 'vars:')", assignment,
                 name, hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "");
        free(name);
        return -1;
    }
    char *file = xasprintf("--set %s", assignment); // interned by yn_new_scalar: errors name the override
    YNode *value = yn_new_scalar(eq + 1, false, file, 0, 0);
    yn_map_set(vars, yn_new_scalar(name, false, vars->file, vars->line, vars->col), value);
    free(file);
    free(name);
    return 0;
}

// ---- validation of references ----

typedef struct {
    const Workflow *wf;
    const WfStage *st; // NULL: launcher (builtins only)
    const char *bad;
    size_t badlen;
} RefCtx;

static int ref_known(void *p, const char *name, size_t len) {
    RefCtx *rc = p;
    char buf[128];
    snprintf(buf, sizeof buf, "%.*s", (int)(len < 127 ? len : 127), name);
    bool ok = find_builtin(buf) >= 0 || (rc->st && (find_var(rc->wf, buf) >= 0 || find_axis(rc->st, buf) >= 0));
    if (ok) return 0;
    rc->bad = name;
    rc->badlen = len;
    return 1;
}

static void unknown_ref_message(const Workflow *wf, const WfStage *st, const char *name, char *msg, size_t len) {
    const char *cands[1024];
    int n = 0;
    for (int i = 0; builtins[i] && n < 1024; i++) cands[n++] = builtins[i];
    for (int i = 0; st && i < wf->nvars && n < 1024; i++) cands[n++] = wf->var_names[i];
    for (int i = 0; st && i < st->naxes && n < 1024; i++) cands[n++] = st->axes[i].name;
    const char *hint = did_you_mean(name, cands, n);
    snprintf(msg, len, "unknown name '{{%s}}'%s%s%s; known: vars, matrix/zip values, builtins (%s)", name,
             hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "",
             st ? "run_dir, job_dir, stage, point, workflow_dir, workflow, attempt, nodes, ranks, ..."
                : "nodes, ranks, ranks_per_node, gpus_per_rank, cpus_per_rank, ...");
}

static int check_refs(const Workflow *wf, const WfStage *st, const YNode *at, const char *tmpl, const char *what,
                      char *err, size_t errlen) {
    RefCtx rc = {.wf = wf, .st = st};
    char msg[512];
    int r = wf_template_refs(tmpl, ref_known, &rc, msg, sizeof msg);
    if (r == -2) FAIL_AT(at, "%s: %s", what, msg);
    if (r) {
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(rc.badlen < 127 ? rc.badlen : 127), rc.bad);
        unknown_ref_message(wf, st, name, msg, sizeof msg);
        FAIL_AT(at, "%s: %s", what, msg);
    }
    return 0;
}

// ---- stages ----

static int read_axes(WfStage *st, const YNode *map, bool zip, const Workflow *wf, const char *path, char *err,
                     size_t errlen) {
    if (!map) return 0;
    int first = st->naxes;
    st->axes = xrealloc(st->axes, (size_t)(st->naxes + map->n) * sizeof *st->axes);
    for (int i = 0; i < map->n; i++) {
        const YNode *key = map->keys[i], *list = map->items[i];
        const char *name = key->value;
        if (!wf_identifier(name, strlen(name)))
            FAIL_AT(key, "%s.%s: a matrix name must be letters, digits, '_' (it is used as {{%s}})", path, name,
                    name);
        if (find_builtin(name) >= 0)
            FAIL_AT(key, "%s.%s: '%s' is a builtin name ({{%s}}); pick another name", path, name, name, name);
        if (find_var(wf, name) >= 0)
            FAIL_AT(key, "%s.%s: '%s' is also a var; a matrix value would hide it", path, name, name);
        if (find_axis(st, name) >= 0)
            FAIL_AT(key, "%s.%s: '%s' is both in matrix and zip; a value can vary one way only", path, name, name);
        if (zip && st->naxes > first && list->n != st->axes[first].nvalues)
            FAIL_AT(list, "%s.%s: zip pairs lists item by item, but '%s' has %d values and '%s' has %d", path, name,
                    name, list->n, st->axes[first].name, st->axes[first].nvalues);
        WfAxis *ax = &st->axes[st->naxes++];
        memset(ax, 0, sizeof *ax);
        ax->name = xstrdup(name);
        ax->node = list;
        ax->zip = zip;
        ax->nvalues = list->n;
        ax->values = xcalloc((size_t)list->n, sizeof(char *));
        for (int k = 0; k < list->n; k++) ax->values[k] = xstrdup(scalar_text(list->items[k]));
    }
    return 0;
}

static int read_stage(Workflow *wf, int index, const YNode *sn, char *err, size_t errlen) {
    WfStage *st = &wf->stages[index];
    char path[64];
    snprintf(path, sizeof path, "stages[%d]", index);
    st->node = sn;
    st->name = xstrdup(schema_str(sn, "name"));
    if (find_stage(wf, st->name, index) >= 0)
        FAIL_AT(yn_get(sn, "name"), "%s.name: stage '%s' is defined twice", path, st->name);
    st->run_node = yn_get(sn, "run");
    st->run = st->run_node->value;
    for (int r = 0; r < WF_NRES; r++) {
        const YNode *v = yn_get(sn, wf_resource_names[r]);
        st->res[r] = v && !yn_is_null(v) ? v : NULL;
    }
    if (st->res[WF_RANKS] && st->res[WF_RANKS_PER_NODE])
        FAIL_AT(st->res[WF_RANKS_PER_NODE], "%s.ranks_per_node: give ranks or ranks_per_node, not both", path);
    char sub[80];
    snprintf(sub, sizeof sub, "%s.matrix", path);
    if (read_axes(st, yn_get(sn, "matrix"), false, wf, sub, err, errlen)) return -1;
    snprintf(sub, sizeof sub, "%s.zip", path);
    if (read_axes(st, yn_get(sn, "zip"), true, wf, sub, err, errlen)) return -1;
    long long points = 1;
    int zip_len = 0;
    for (int a = 0; a < st->naxes; a++) {
        if (st->axes[a].zip) zip_len = st->axes[a].nvalues;
        else points *= st->axes[a].nvalues;
        if (points > 1000000)
            FAIL_AT(st->axes[a].node, "%s: the matrix gives more than 1,000,000 jobs", path);
    }
    if (zip_len) points *= zip_len;
    if (points > 1000000) FAIL_AT(sn, "%s: the matrix and zip give more than 1,000,000 jobs", path);
    st->npoints = (int)points;
    snprintf(sub, sizeof sub, "%s.run", path);
    if (check_refs(wf, st, st->run_node, st->run, sub, err, errlen)) return -1;
    return 0;
}

static int resolve_after(Workflow *wf, char *err, size_t errlen) {
    const char **names = xcalloc((size_t)wf->nstages, sizeof *names);
    for (int i = 0; i < wf->nstages; i++) names[i] = wf->stages[i].name;
    int rc = 0;
    for (int i = 0; i < wf->nstages && !rc; i++) {
        WfStage *st = &wf->stages[i];
        const YNode *after = yn_get(st->node, "after");
        st->after = xcalloc((size_t)(after ? after->n : 0) + 1, sizeof(int));
        for (int k = 0; after && k < after->n; k++) {
            const char *dep = after->items[k]->value;
            int d = find_stage(wf, dep, wf->nstages);
            if (d < 0) {
                const char *hint = did_you_mean(dep, names, wf->nstages);
                schema_error_at(err, errlen, after->items[k], "stages[%d].after: unknown stage '%s'%s%s%s", i, dep,
                                hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "");
                rc = -1;
                break;
            }
            bool dup = false;
            for (int m = 0; m < st->nafter; m++) dup = dup || st->after[m] == d;
            if (!dup) st->after[st->nafter++] = d;
        }
    }
    free(names);
    return rc;
}

// Kahn's algorithm for the order; on a cycle, walk it to name every stage in it.
static int order_stages(Workflow *wf, char *err, size_t errlen) {
    int n = wf->nstages;
    int *pending = xcalloc((size_t)n, sizeof(int)); // unresolved dependencies per stage
    bool *done = xcalloc((size_t)n, sizeof(bool));
    wf->order = xcalloc((size_t)n, sizeof(int));
    for (int i = 0; i < n; i++) pending[i] = wf->stages[i].nafter;
    int count = 0;
    for (bool progress = true; progress && count < n;) {
        progress = false;
        for (int i = 0; i < n; i++) {
            if (done[i] || pending[i]) continue;
            done[i] = true;
            progress = true;
            wf->order[count++] = i;
            for (int j = 0; j < n; j++)
                for (int k = 0; k < wf->stages[j].nafter; k++)
                    if (wf->stages[j].after[k] == i) pending[j]--;
        }
    }
    int rc = 0;
    if (count < n) {
        // From any stage left, follow unresolved `after` edges until a stage repeats.
        int start = 0;
        while (done[start]) start++;
        int *seen = xcalloc((size_t)n, sizeof(int)), *path = xcalloc((size_t)n + 1, sizeof(int)), len = 0, cur = start;
        while (!seen[cur]) {
            seen[cur] = ++len;
            path[len - 1] = cur;
            const WfStage *st = &wf->stages[cur];
            int next = -1;
            for (int k = 0; k < st->nafter && next < 0; k++)
                if (!done[st->after[k]]) next = st->after[k];
            cur = next;
        }
        WfBuf b = {0};
        for (int k = seen[cur] - 1; k < len; k++) wfb_addf(&b, "%s -> ", wf->stages[path[k]].name);
        wfb_add(&b, wf->stages[cur].name);
        const YNode *after = yn_get(wf->stages[cur].node, "after");
        schema_error_at(err, errlen, after ? after : wf->stages[cur].node,
                        "stages[%d].after: the stages wait for each other in a cycle: %s (each waits for the next)",
                        cur, b.s);
        wfb_free(&b);
        free(seen);
        free(path);
        rc = -1;
    }
    free(pending);
    free(done);
    return rc;
}

// ---- jobs ----

static const char *job_value(const Workflow *wf, const WfStage *st, const WfJob *job, const char *name) {
    int a = find_axis(st, name);
    if (a >= 0) return job->values[a];
    int v = find_var(wf, name);
    return v >= 0 ? wf->var_values[v] : NULL;
}

// A resource's value for one job: the integer as written, or the var/matrix value it names.
static int job_resource(const Workflow *wf, const WfStage *st, const WfJob *job, int r, long long def, long long *out,
                        char *err, size_t errlen) {
    const YNode *v = st->res[r];
    if (!v) {
        *out = def;
        return 0;
    }
    const char *text = v->value;
    char name[128] = "";
    WfRef ref;
    if (single_ref(text, &ref)) {
        snprintf(name, sizeof name, "%.*s", (int)ref.name_len, ref.name);
        text = job_value(wf, st, job, name);
        if (!text) {
            char msg[512];
            unknown_ref_message(wf, st, name, msg, sizeof msg);
            FAIL_AT(v, "stages[%d].%s: %s", (int)(st - wf->stages), wf_resource_names[r], msg);
        }
    }
    if (r == WF_TIME) {
        long t = wf_parse_time(text);
        if (t < 0)
            FAIL_AT(v, "stages[%d].time: expected HH:MM:SS, got '%s'%s%s%s", (int)(st - wf->stages), text,
                    name[0] ? " (from {{" : "", name, name[0] ? "}})" : "");
        *out = t;
        return 0;
    }
    const char *where = job->label[0] ? job->label : NULL;
    YNode tmp = {.kind = YNODE_SCALAR, .value = (char *)text, .plain = true};
    long long x;
    if (!yn_as_int(&tmp, &x) || x < 0 || x > 1000000)
        FAIL_AT(v, "stages[%d].%s: expected an integer 0..1000000, got '%s'%s%s%s%s%s", (int)(st - wf->stages),
                wf_resource_names[r], text, name[0] ? " from {{" : "", name, name[0] ? "}}" : "",
                where ? " at point " : "", where ? where : "");
    *out = x;
    return 0;
}

static int plan_job(const Workflow *wf, const Site *site, WfStage *st, WfJob *job, char *err, size_t errlen) {
    int si = (int)(st - wf->stages);
    long long nodes, ranks, rpn, gpr, cpr, time;
    if (job_resource(wf, st, job, WF_NODES, 1, &nodes, err, errlen) ||
        job_resource(wf, st, job, WF_RANKS, 0, &ranks, err, errlen) ||
        job_resource(wf, st, job, WF_RANKS_PER_NODE, 0, &rpn, err, errlen) ||
        job_resource(wf, st, job, WF_GPUS_PER_RANK, 0, &gpr, err, errlen) ||
        job_resource(wf, st, job, WF_CPUS_PER_RANK, 1, &cpr, err, errlen) ||
        job_resource(wf, st, job, WF_TIME, site->default_time, &time, err, errlen))
        return -1;
    const YNode *at_nodes = st->res[WF_NODES] ? st->res[WF_NODES] : st->node;
    const char *pt = job->label[0] ? job->label : "";
    const char *sep = job->label[0] ? " at point " : "";
    if (nodes < 1) FAIL_AT(at_nodes, "stages[%d].nodes: must be >= 1, got %lld%s%s", si, nodes, sep, pt);
    if (cpr < 1)
        FAIL_AT(st->res[WF_CPUS_PER_RANK], "stages[%d].cpus_per_rank: must be >= 1, got %lld%s%s", si, cpr, sep, pt);
    if (st->res[WF_RANKS]) {
        if (ranks < 1) FAIL_AT(st->res[WF_RANKS], "stages[%d].ranks: must be >= 1, got %lld%s%s", si, ranks, sep, pt);
        if (ranks % nodes)
            FAIL_AT(st->res[WF_RANKS], "stages[%d].ranks: %lld ranks do not split evenly over %lld nodes%s%s", si,
                    ranks, nodes, sep, pt);
        rpn = ranks / nodes;
    } else if (st->res[WF_RANKS_PER_NODE]) {
        if (rpn < 1)
            FAIL_AT(st->res[WF_RANKS_PER_NODE], "stages[%d].ranks_per_node: must be >= 1, got %lld%s%s", si, rpn, sep,
                    pt);
        ranks = rpn * nodes;
    }
    long long tasks_per_node = ranks ? rpn : 1;
    if (site->max_nodes && nodes > site->max_nodes)
        FAIL_AT(at_nodes, "stages[%d].nodes: %lld nodes, but site %s has at most %d per job%s%s", si, nodes,
                site->name, site->max_nodes, sep, pt);
    const YNode *at_rank = st->res[WF_RANKS] ? st->res[WF_RANKS] : st->res[WF_RANKS_PER_NODE];
    if (!at_rank) at_rank = st->node;
    if (site->cores_per_node && tasks_per_node * cpr > site->cores_per_node)
        FAIL_AT(at_rank, "stages[%d]: %lld ranks per node x %lld cpus_per_rank = %lld cores, but a %s node has %d%s%s",
                si, tasks_per_node, cpr, tasks_per_node * cpr, site->name, site->cores_per_node, sep, pt);
    if (gpr > 0 && tasks_per_node * gpr > site->gpus_per_node) {
        const YNode *at = st->res[WF_GPUS_PER_RANK];
        if (!site->gpus_per_node) FAIL_AT(at, "stages[%d].gpus_per_rank: site %s has no GPUs", si, site->name);
        FAIL_AT(at, "stages[%d].gpus_per_rank: %lld ranks per node x %lld GPUs = %lld, but a %s node has %d%s%s", si,
                tasks_per_node, gpr, tasks_per_node * gpr, site->name, site->gpus_per_node, sep, pt);
    }
    long limit = site_walltime_limit(site, (int)nodes);
    if (time <= 0)
        FAIL_AT(st->res[WF_TIME] ? st->res[WF_TIME] : st->node, "stages[%d].time: must be more than 00:00:00", si);
    if (limit && time > limit) {
        char a[16], b[16];
        FAIL_AT(st->res[WF_TIME] ? st->res[WF_TIME] : st->node,
                "stages[%d].time: %s is longer than site %s allows for %lld node%s (%s)%s%s", si, wf_fmt_time(time, a),
                site->name, nodes, nodes == 1 ? "" : "s", wf_fmt_time(limit, b), sep, pt);
    }
    job->nodes = (int)nodes;
    job->ranks = (int)ranks;
    job->ranks_per_node = (int)rpn;
    job->gpus_per_rank = (int)gpr;
    job->cpus_per_rank = (int)cpr;
    job->time = time;
    return 0;
}

static int plan_jobs(Workflow *wf, const Site *site, char *err, size_t errlen) {
    long long total = 0;
    for (int i = 0; i < wf->nstages; i++) total += wf->stages[i].npoints;
    if (total > 1000000) FAIL_AT(wf->root, "the workflow gives %lld jobs; at most 1,000,000", total);
    wf->njobs = (int)total;
    wf->jobs = xcalloc((size_t)total, sizeof(WfJob));
    int j = 0;
    for (int i = 0; i < wf->nstages; i++) {
        WfStage *st = &wf->stages[i];
        st->first_job = j;
        for (int p = 0; p < st->npoints; p++, j++) {
            WfJob *job = &wf->jobs[j];
            job->stage = i;
            job->point = p;
            job->key = xasprintf("%s/%d", st->name, p);
            job->values = xcalloc((size_t)st->naxes + 1, sizeof(char *));
            // Matrix axes vary like digits (the last fastest); the zip index is the innermost.
            int zip_len = 0;
            for (int a = 0; a < st->naxes; a++)
                if (st->axes[a].zip) zip_len = st->axes[a].nvalues;
            int rest = p, zi = 0;
            if (zip_len) {
                zi = rest % zip_len;
                rest /= zip_len;
            }
            for (int a = st->naxes - 1; a >= 0; a--) {
                if (st->axes[a].zip) continue;
                job->values[a] = st->axes[a].values[rest % st->axes[a].nvalues];
                rest /= st->axes[a].nvalues;
            }
            WfBuf label = {0};
            for (int a = 0; a < st->naxes; a++) {
                if (st->axes[a].zip) job->values[a] = st->axes[a].values[zi];
                wfb_addf(&label, "%s%s=%s", a ? " " : "", st->axes[a].name, job->values[a]);
            }
            job->label = wfb_take(&label);
            for (char *c = job->label; *c; c++)
                if ((unsigned char)*c < 0x20) *c = '?'; // a label is one line
            if (plan_job(wf, site, st, job, err, errlen)) return -1;
        }
    }
    // Sweeps larger than the site's queue cap: every multi-point stage becomes one job array.
    if (site->scheduler != SCHED_LOCAL && total > site->max_queued) {
        long long queued = 0;
        for (int i = 0; i < wf->nstages; i++) {
            WfStage *st = &wf->stages[i];
            st->array = st->npoints > 1;
            queued += st->array ? 1 : st->npoints;
            for (int p = 1; st->array && p < st->npoints; p++) {
                const WfJob *a = &wf->jobs[st->first_job], *b = &wf->jobs[st->first_job + p];
                if (a->nodes != b->nodes || a->ranks != b->ranks || a->gpus_per_rank != b->gpus_per_rank ||
                    a->cpus_per_rank != b->cpus_per_rank || a->time != b->time)
                    FAIL_AT(st->node,
                            "stages[%d]: %lld jobs exceed site %s's max_queued %d, so stage '%s' must be one job array, "
                            "but its points ask for different resources (split the stage)",
                            i, total, site->name, site->max_queued, st->name);
            }
        }
        if (queued > site->max_queued)
            FAIL_AT(wf->root, "the workflow needs %lld queued jobs even as job arrays; site %s allows %d", queued,
                    site->name, site->max_queued);
    }
    return 0;
}

// ---- load ----

static int load_and_plan(Workflow *wf, const char *path, char **sets, int nsets, const Site *site, char *err,
                         size_t errlen) {
    wf->path = xstrdup(path);
    char *dir = path_dirname(path);
    char *real = realpath(dir, NULL);
    wf->dir = real ? real : xstrdup(dir);
    free(dir);
    wf->root = yn_load_file(path, err, errlen);
    if (!wf->root) return -1;
    // Vars overridden before validation, so a bad override is reported like a bad value.
    YNode *vars = yn_get(wf->root, "vars");
    if (nsets && !vars) {
        vars = yn_new_map(path, 1, 1);
        if (wf->root->kind == YNODE_MAP) yn_map_set(wf->root, yn_new_scalar("vars", true, path, 1, 1), vars);
        else yn_free(vars);
    }
    for (int i = 0; i < nsets; i++)
        if (apply_set(wf->root, sets[i], err, errlen)) return -1;
    if (schema_validate(wf->root, workflow_schema, err, errlen)) return -1;
    wf->name = xstrdup(schema_str(wf->root, "name"));
    vars = yn_get(wf->root, "vars");
    wf->nvars = vars ? vars->n : 0;
    wf->var_names = xcalloc((size_t)wf->nvars + 1, sizeof(char *));
    wf->var_values = xcalloc((size_t)wf->nvars + 1, sizeof(char *));
    for (int i = 0; i < wf->nvars; i++) {
        const char *name = vars->keys[i]->value;
        if (!wf_identifier(name, strlen(name)))
            FAIL_AT(vars->keys[i], "vars.%s: a var name must be letters, digits, '_' (it is used as {{%s}})", name,
                    name);
        if (find_builtin(name) >= 0)
            FAIL_AT(vars->keys[i], "vars.%s: '%s' is a builtin name ({{%s}}); pick another name", name, name, name);
        wf->var_names[i] = xstrdup(name);
        wf->var_values[i] = xstrdup(scalar_text(vars->items[i]));
    }
    const YNode *stages = yn_get(wf->root, "stages");
    wf->nstages = stages->n;
    wf->stages = xcalloc((size_t)wf->nstages, sizeof(WfStage));
    for (int i = 0; i < wf->nstages; i++)
        if (read_stage(wf, i, stages->items[i], err, errlen)) return -1;
    if (resolve_after(wf, err, errlen) || order_stages(wf, err, errlen)) return -1;
    if (check_refs(wf, NULL, yn_get(site->root, "launcher"), site->launcher, "launcher", err, errlen)) return -1;
    return plan_jobs(wf, site, err, errlen);
}

int workflow_load(Workflow *wf, const char *path, char **sets, int nsets, const Site *site, char *err,
                  size_t errlen) {
    memset(wf, 0, sizeof *wf);
    int rc = load_and_plan(wf, path, sets, nsets, site, err, errlen);
    if (rc) workflow_free(wf); // nothing half-built stays behind
    return rc;
}

void workflow_free(Workflow *wf) {
    for (int i = 0; wf->stages && i < wf->nstages; i++) {
        WfStage *st = &wf->stages[i];
        free(st->name);
        free(st->after);
        for (int a = 0; a < st->naxes; a++) {
            free(st->axes[a].name);
            for (int k = 0; k < st->axes[a].nvalues; k++) free(st->axes[a].values[k]);
            free(st->axes[a].values);
        }
        free(st->axes);
    }
    for (int j = 0; wf->jobs && j < wf->njobs; j++) {
        free(wf->jobs[j].key);
        free(wf->jobs[j].label);
        free(wf->jobs[j].values);
    }
    for (int i = 0; wf->var_names && i < wf->nvars; i++) {
        free(wf->var_names[i]);
        free(wf->var_values[i]);
    }
    free(wf->var_names);
    free(wf->var_values);
    free(wf->jobs);
    free(wf->stages);
    free(wf->order);
    free(wf->name);
    free(wf->path);
    free(wf->dir);
    yn_free(wf->root);
    memset(wf, 0, sizeof *wf);
}

int *workflow_job_order(const Workflow *wf) {
    int *order = xcalloc((size_t)wf->njobs + 1, sizeof(int)), n = 0;
    for (int k = 0; k < wf->nstages; k++) {
        const WfStage *st = &wf->stages[wf->order[k]];
        for (int p = 0; p < st->npoints; p++) order[n++] = st->first_job + p;
    }
    return order;
}

double workflow_node_hours(const Workflow *wf, const bool *selected) {
    double h = 0;
    for (int j = 0; j < wf->njobs; j++)
        if (!selected || selected[j]) h += wf->jobs[j].nodes * (wf->jobs[j].time / 3600.0);
    return h;
}

bool wf_submits(const Workflow *wf, int j, const bool *selected) {
    if (selected && !selected[j]) return false;
    const WfStage *st = &wf->stages[wf->jobs[j].stage];
    if (!st->array) return true;
    // An array goes as its first selected point. The scan stops at the nearest selected
    // point before j, so asking for every point of a stage costs O(points), not O(points^2).
    for (int k = j - 1; k >= st->first_job; k--)
        if (!selected || selected[k]) return false;
    return true;
}

int wf_job_deps(const Workflow *wf, int j, const bool *selected, int *deps) {
    const WfStage *st = &wf->stages[wf->jobs[j].stage];
    int ndeps = 0;
    for (int a = 0; a < st->nafter; a++) {
        const WfStage *dep = &wf->stages[st->after[a]];
        for (int k = dep->first_job; k < dep->first_job + dep->npoints; k++) {
            if (selected && !selected[k]) continue;
            deps[ndeps++] = k;
            if (dep->array) break; // an array once, as its first selected point
        }
    }
    return ndeps;
}

const char *wf_job_lookup(const Workflow *wf, const WfJob *job, const char *name) {
    return job_value(wf, &wf->stages[job->stage], job, name);
}
