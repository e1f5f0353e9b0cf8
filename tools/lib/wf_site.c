// Site profiles (site/*.yaml): which scheduler, where to charge, how to launch ranks,
// and the machine's limits. Every value that reaches a batch script is either quoted
// by the renderer or restricted here to characters that cannot start a new command.
#include "common.h"
#include "schema.h"
#include "workflow.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

// Indexed by Scheduler; also the choices of a site's `scheduler:`.
static const char *const scheduler_names[] = {"local", "slurm", "lsf", NULL};

const char *scheduler_name(Scheduler s) {
    return s >= SCHED_LOCAL && s <= SCHED_LSF ? scheduler_names[s] : "?";
}

int scheduler_from_name(const char *name) {
    for (int s = 0; scheduler_names[s]; s++)
        if (!strcmp(name, scheduler_names[s])) return s;
    return -1;
}

long wf_parse_time(const char *text) {
    long h = 0, m = 0, s = 0;
    int used = 0;
    if (!text || sscanf(text, "%ld:%2ld:%2ld%n", &h, &m, &s, &used) != 3 || text[used]) return -1;
    for (const char *p = text; *p; p++)
        if (!isdigit((unsigned char)*p) && *p != ':') return -1;
    if (h < 0 || h > 100000 || m > 59 || s > 59) return -1;
    return h * 3600 + m * 60 + s;
}

const char *wf_fmt_time(long seconds, char buf[16]) {
    if (seconds < 0 || seconds > 999999L * 3600) seconds = 0;
    snprintf(buf, 16, "%02d:%02d:%02d", (int)(seconds / 3600), (int)(seconds / 60 % 60), (int)(seconds % 60));
    return buf;
}

bool wf_safe_word(const char *text, const char *extra) {
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        if (!isalnum(*p) && !strchr("_.-", *p) && !(extra && strchr(extra, *p))) return false;
    return true;
}

// ---- checks used by the schema ----

static int check_time(const YNode *v, char *msg, size_t len) {
    if (wf_parse_time(v->value) >= 0) return 0;
    snprintf(msg, len, "expected a time HH:MM:SS, got '%s'", v->value);
    return -1;
}

static int check_name(const YNode *v, char *msg, size_t len) {
    if (v->value[0] && wf_safe_word(v->value, NULL)) return 0;
    snprintf(msg, len, "must be letters, digits, '_', '.', '-' (it names files and jobs), got '%s'", v->value);
    return -1;
}

// Account, partition, qos, constraint: written into #SBATCH/#BSUB lines.
static int check_directive_word(const YNode *v, char *msg, size_t len) {
    if (wf_safe_word(v->value, ",:+@=&|()[]*!")) return 0;
    snprintf(msg, len, "may hold letters, digits and _ . - , : + @ = & | ( ) [ ] * ! only, got '%s'", v->value);
    return -1;
}

static int check_one_line(const YNode *v, char *msg, size_t len) {
    for (const unsigned char *p = (const unsigned char *)v->value; *p; p++)
        if (*p < 0x20 || *p == 0x7f) {
            snprintf(msg, len, "must be one line without control characters");
            return -1;
        }
    return 0;
}

static int check_module(const YNode *v, char *msg, size_t len) {
    if (v->value[0] && wf_safe_word(v->value, "/+@:")) return 0;
    snprintf(msg, len, "a module name may hold letters, digits and _ . - / + @ : only, got '%s'", v->value);
    return -1;
}

static int check_env(const YNode *map, char *msg, size_t len) {
    for (int i = 0; i < map->n; i++) {
        const char *k = map->keys[i]->value;
        if (!wf_identifier(k, strlen(k))) {
            snprintf(msg, len, "'%s' is not an environment variable name", k);
            return -1;
        }
    }
    return 0;
}

enum { REQ = SCHEMA_REQUIRED, MIN = SCHEMA_MIN };

static const SchemaKey walltime_keys[] = {
    {.name = "nodes", .type = SCHEMA_INT, .flags = REQ | MIN, .min = 1},
    {.name = "time", .type = SCHEMA_STRING, .flags = REQ, .check = check_time},
    {0}};
static const SchemaKey walltime_item = {.type = SCHEMA_MAP, .keys = walltime_keys};

static const SchemaKey limits_keys[] = {
    {.name = "max_nodes", .type = SCHEMA_INT, .flags = MIN, .min = 0, .def = "0"},
    {.name = "max_queued", .type = SCHEMA_INT, .flags = MIN, .min = 1, .def = "1000"},
    {.name = "array_throttle", .type = SCHEMA_INT, .flags = MIN, .min = 1, .def = "50"},
    {.name = "default_time", .type = SCHEMA_STRING, .def = "01:00:00", .check = check_time},
    {.name = "walltime", .type = SCHEMA_LIST, .each = &walltime_item},
    {0}};

static const SchemaKey module_item = {.type = SCHEMA_STRING, .check = check_module};
static const SchemaKey directive_item = {.type = SCHEMA_STRING, .check = check_one_line};
static const SchemaKey env_value = {.type = SCHEMA_SCALAR};

static const SchemaKey site_schema[] = {
    {.name = "name", .type = SCHEMA_STRING, .flags = REQ, .check = check_name},
    {.name = "description", .type = SCHEMA_STRING},
    {.name = "scheduler", .type = SCHEMA_ENUM, .flags = REQ, .choices = scheduler_names},
    {.name = "account", .type = SCHEMA_STRING, .check = check_directive_word},
    {.name = "partition", .type = SCHEMA_STRING, .check = check_directive_word},
    {.name = "qos", .type = SCHEMA_STRING, .check = check_directive_word},
    {.name = "constraint", .type = SCHEMA_STRING, .check = check_directive_word},
    {.name = "cores_per_node", .type = SCHEMA_INT, .flags = MIN, .min = 0, .def = "0"},
    {.name = "gpus_per_node", .type = SCHEMA_INT, .flags = MIN, .min = 0, .def = "0"},
    {.name = "launcher", .type = SCHEMA_STRING, .flags = REQ, .check = check_one_line},
    {.name = "modules", .type = SCHEMA_LIST, .each = &module_item},
    {.name = "env", .type = SCHEMA_MAP, .each = &env_value, .check = check_env},
    {.name = "directives", .type = SCHEMA_LIST, .each = &directive_item},
    {.name = "archive", .type = SCHEMA_STRING, .check = check_one_line},
    {.name = "limits", .type = SCHEMA_MAP, .keys = limits_keys},
    {0}};

static const char *opt_str(const YNode *root, const char *key) {
    const char *s = schema_str(root, key);
    return s ? s : "";
}

static const char **list_strings(const YNode *list, int *n) {
    *n = list ? list->n : 0;
    const char **out = xcalloc((size_t)*n + 1, sizeof *out);
    for (int i = 0; i < *n; i++) out[i] = list->items[i]->value;
    return out;
}

static int cmp_walltime(const void *a, const void *b) {
    const WalltimeLimit *x = a, *y = b;
    return (x->max_nodes > y->max_nodes) - (x->max_nodes < y->max_nodes);
}

static bool looks_like_path(const char *s) {
    size_t n = strlen(s);
    return strchr(s, '/') || (n > 5 && !strcmp(s + n - 5, ".yaml")) || (n > 4 && !strcmp(s + n - 4, ".yml"));
}

static int load_site(Site *site, const char *name_or_path, const char *lsst_root, char *err, size_t errlen);

int site_load(Site *site, const char *name_or_path, const char *lsst_root, char *err, size_t errlen) {
    memset(site, 0, sizeof *site);
    int rc = load_site(site, name_or_path, lsst_root, err, errlen);
    if (rc) site_free(site);
    return rc;
}

static int load_site(Site *site, const char *name_or_path, const char *lsst_root, char *err, size_t errlen) {
    if (looks_like_path(name_or_path)) {
        site->path = xstrdup(name_or_path);
    } else {
        if (!wf_safe_word(name_or_path, NULL)) {
            snprintf(err, errlen, "--site %s: not a site name (letters, digits, _ . -) or a path", name_or_path);
            return -1;
        }
        char *dir = path_join(lsst_root, "site");
        char *file = xasprintf("%s.yaml", name_or_path);
        site->path = path_join(dir, file);
        free(dir);
        free(file);
        if (!path_exists(site->path)) {
            snprintf(err, errlen, "--site %s: no site profile %s", name_or_path, site->path);
            return -1;
        }
    }
    site->root = yn_load_file(site->path, err, errlen);
    if (!site->root) return -1;
    if (schema_validate(site->root, site_schema, err, errlen)) return -1;
    const YNode *r = site->root;
    site->name = xstrdup(schema_str(r, "name"));
    site->scheduler = (Scheduler)schema_enum(r, "scheduler", scheduler_names);
    site->account = opt_str(r, "account");
    site->partition = opt_str(r, "partition");
    site->qos = opt_str(r, "qos");
    site->constraint = opt_str(r, "constraint");
    site->launcher = schema_str(r, "launcher");
    site->archive = opt_str(r, "archive");
    site->cores_per_node = (int)schema_int(r, "cores_per_node");
    site->gpus_per_node = (int)schema_int(r, "gpus_per_node");
    site->max_nodes = (int)schema_int(r, "limits.max_nodes");
    site->max_queued = (int)schema_int(r, "limits.max_queued");
    site->array_throttle = (int)schema_int(r, "limits.array_throttle");
    site->default_time = wf_parse_time(schema_str(r, "limits.default_time"));
    const YNode *wt = schema_lookup(r, "limits.walltime");
    site->nwalltime = wt ? wt->n : 0;
    site->walltime = xcalloc((size_t)site->nwalltime + 1, sizeof *site->walltime);
    for (int i = 0; i < site->nwalltime; i++) {
        site->walltime[i].max_nodes = (int)schema_int(wt->items[i], "nodes");
        site->walltime[i].seconds = wf_parse_time(schema_str(wt->items[i], "time"));
    }
    qsort(site->walltime, (size_t)site->nwalltime, sizeof *site->walltime, cmp_walltime);
    site->modules = list_strings(schema_lookup(r, "modules"), &site->nmodules);
    site->directives = list_strings(schema_lookup(r, "directives"), &site->ndirectives);
    const YNode *env = schema_lookup(r, "env");
    site->nenv = env ? env->n : 0;
    site->env_names = xcalloc((size_t)site->nenv + 1, sizeof(char *));
    site->env_values = xcalloc((size_t)site->nenv + 1, sizeof(char *));
    for (int i = 0; i < site->nenv; i++) {
        site->env_names[i] = env->keys[i]->value;
        site->env_values[i] = yn_is_null(env->items[i]) ? "" : env->items[i]->value;
    }
    return 0;
}

void site_free(Site *site) {
    yn_free(site->root);
    free(site->path);
    free(site->name);
    free(site->walltime);
    free(site->modules);
    free(site->directives);
    free(site->env_names);
    free(site->env_values);
    memset(site, 0, sizeof *site);
}

long site_walltime_limit(const Site *site, int nodes) {
    for (int i = 0; i < site->nwalltime; i++)
        if (nodes <= site->walltime[i].max_nodes) return site->walltime[i].seconds;
    // Larger than every listed size: the largest size's limit applies (max_nodes is checked apart).
    return site->nwalltime ? site->walltime[site->nwalltime - 1].seconds : 0;
}

int wf_locate(char **root, char **bin_dir, char *err, size_t errlen) {
    *root = *bin_dir = NULL;
    char *exe = realpath("/proc/self/exe", NULL);
    if (!exe) {
        snprintf(err, errlen, "cannot find this program (/proc/self/exe): %m");
        return -1;
    }
    *bin_dir = path_dirname(exe);
    free(exe);
    const char *env = getenv("LSST_ROOT");
    if (env && env[0]) {
        char *t = path_join(env, "templates");
        bool ok = is_dir(t);
        free(t);
        if (!ok) {
            snprintf(err, errlen, "LSST_ROOT=%s has no templates/ directory", env);
            return -1;
        }
        *root = realpath(env, NULL);
        return *root ? 0 : -1;
    }
    char *dir = xstrdup(*bin_dir);
    for (int up = 0; up < 3; up++) {
        char *parent = path_dirname(dir);
        free(dir);
        dir = parent;
        char *t = path_join(dir, "templates/slurm.sh");
        bool ok = path_exists(t);
        free(t);
        if (ok) {
            *root = dir;
            return 0;
        }
    }
    free(dir);
    snprintf(err, errlen, "cannot find templates/ above %s (set LSST_ROOT to the lsst source directory)", *bin_dir);
    return -1;
}
