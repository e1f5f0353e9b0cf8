// Schema validation of YAML trees: see schema.h for the table format and messages.
#include "schema.h"
#include "common.h"

#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum { PATH_MAX_LEN = 512 };

void schema_error_at(char *err, size_t errlen, const YNode *at, const char *fmt, ...) {
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0) msg = NULL;
    va_end(ap);
    const char *m = msg ? msg : "(out of memory formatting an error)";
    if (!at || !at->file) snprintf(err, errlen, "%s", m);
    else if (at->line <= 0) snprintf(err, errlen, "%s: %s", at->file, m);
    else snprintf(err, errlen, "%s:%d:%d: %s", at->file, at->line, at->col, m);
    free(msg);
    for (char *p = err; *p; p++) // one line, whatever the values held
        if (*p == '\n' || *p == '\r') *p = ' ';
}

// A value as shown in a message: quoted, control characters replaced, long text cut.
static const char *show(const YNode *n, char *buf, size_t len) {
    if (n->kind == YNODE_MAP) return "a map";
    if (n->kind == YNODE_SEQ) return "a list";
    if (n->plain && !n->value[0]) return "nothing";
    size_t j = 0;
    buf[j++] = '\'';
    for (const char *p = n->value; *p && j + 5 < len; p++) buf[j++] = (unsigned char)*p < 0x20 ? '?' : *p;
    if (strlen(n->value) + 5 >= len) { buf[j - 3] = buf[j - 2] = buf[j - 1] = '.'; }
    buf[j++] = '\'';
    buf[j] = '\0';
    return buf;
}

const char *schema_fmt_double(double v, char buf[32]) {
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, 32, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    return buf;
}

static void child_path(char out[PATH_MAX_LEN], const char *parent, const char *name) {
    if (parent[0]) snprintf(out, PATH_MAX_LEN, "%s.%s", parent, name);
    else snprintf(out, PATH_MAX_LEN, "%s", name);
}

static const SchemaKey *find_key(const SchemaKey *keys, const char *name) {
    for (const SchemaKey *k = keys; k && k->name; k++)
        if (!strcmp(k->name, name)) return k;
    return NULL;
}

static const char *suggest(const SchemaKey *keys, const char *word) {
    const char *names[256];
    int n = 0;
    for (const SchemaKey *k = keys; k && k->name && n < 256; k++) names[n++] = k->name;
    return did_you_mean(word, names, n);
}

static const char *type_name(SchemaType t) {
    switch (t) {
    case SCHEMA_INT: return "an integer";
    case SCHEMA_FLOAT: return "a number";
    case SCHEMA_STRING: return "a string";
    case SCHEMA_BOOL: return "true or false";
    case SCHEMA_ENUM: return "one of the listed words";
    case SCHEMA_SCALAR: return "a single value";
    case SCHEMA_MAP: return "a map";
    case SCHEMA_LIST: return "a list";
    }
    return "?";
}

static int type_error(const YNode *n, const SchemaKey *sk, const char *path, char *err, size_t errlen) {
    char buf[96];
    schema_error_at(err, errlen, n, "%s%sexpected %s, got %s", path, path[0] ? ": " : "", type_name(sk->type),
                    show(n, buf, sizeof buf));
    return -1;
}

static int range_check(const YNode *n, const SchemaKey *sk, const char *path, double v, char *err, size_t errlen) {
    const char *op = NULL;
    double bound = 0;
    if ((sk->flags & SCHEMA_MIN) && !(v >= sk->min)) { op = ">="; bound = sk->min; }
    else if ((sk->flags & SCHEMA_MIN_EXCL) && !(v > sk->min)) { op = ">"; bound = sk->min; }
    else if ((sk->flags & SCHEMA_MAX) && !(v <= sk->max)) { op = "<="; bound = sk->max; }
    else if ((sk->flags & SCHEMA_MAX_EXCL) && !(v < sk->max)) { op = "<"; bound = sk->max; }
    if (!op) return 0;
    char nb[32];
    schema_error_at(err, errlen, n, "%s: must be %s %s, got %s", path, op, schema_fmt_double(bound, nb), n->value);
    return -1;
}

// A null value where a map or list is expected counts as an empty one ("parallel:" with
// every key commented out).
static void null_to_empty(YNode *n, YNodeKind kind) {
    free(n->value);
    n->value = NULL;
    n->kind = kind;
    n->plain = false;
}

static int validate_map(YNode *map, const SchemaKey *keys, const char *path, char *err, size_t errlen);

static int validate_value(YNode *n, const SchemaKey *sk, const char *path, char *err, size_t errlen) {
    char buf[96];
    switch (sk->type) {
    case SCHEMA_INT: {
        long long v;
        if (!yn_as_int(n, &v)) return type_error(n, sk, path, err, errlen);
        if (!(sk->flags & SCHEMA_INT64) && (v < INT_MIN || v > INT_MAX)) {
            schema_error_at(err, errlen, n, "%s: must be %s %d, got %s", path, v < 0 ? ">=" : "<=",
                            v < 0 ? INT_MIN : INT_MAX, n->value);
            return -1;
        }
        if (range_check(n, sk, path, (double)v, err, errlen)) return -1;
        break;
    }
    case SCHEMA_FLOAT: {
        double v;
        if (!yn_as_double(n, &v)) return type_error(n, sk, path, err, errlen);
        if (range_check(n, sk, path, v, err, errlen)) return -1;
        break;
    }
    case SCHEMA_STRING:
        if (n->kind != YNODE_SCALAR || yn_is_null(n)) return type_error(n, sk, path, err, errlen);
        break;
    case SCHEMA_BOOL: {
        bool b;
        if (!yn_as_bool(n, &b)) return type_error(n, sk, path, err, errlen);
        break;
    }
    case SCHEMA_ENUM: {
        int count = 0;
        for (; sk->choices[count]; count++)
            if (n->kind == YNODE_SCALAR && !strcmp(n->value, sk->choices[count])) break;
        if (sk->choices[count]) break;
        char list[512] = "";
        size_t used = 0;
        for (int i = 0; i < count && used < sizeof list; i++)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", sk->choices[i]);
        const char *hint = n->kind == YNODE_SCALAR ? did_you_mean(n->value, sk->choices, count) : NULL;
        schema_error_at(err, errlen, n, "%s: expected one of %s, got %s%s%s%s", path, list, show(n, buf, sizeof buf),
                        hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "");
        return -1;
    }
    case SCHEMA_SCALAR:
        if (n->kind != YNODE_SCALAR) return type_error(n, sk, path, err, errlen);
        break;
    case SCHEMA_MAP:
        if (yn_is_null(n)) null_to_empty(n, YNODE_MAP);
        if (n->kind != YNODE_MAP) return type_error(n, sk, path, err, errlen);
        if (sk->keys) {
            if (validate_map(n, sk->keys, path, err, errlen)) return -1;
        } else if (sk->each) {
            for (int i = 0; i < n->n; i++) {
                char sub[PATH_MAX_LEN];
                child_path(sub, path, n->keys[i]->value);
                if (validate_value(n->items[i], sk->each, sub, err, errlen)) return -1;
            }
        }
        break;
    case SCHEMA_LIST:
        if (yn_is_null(n)) null_to_empty(n, YNODE_SEQ);
        if (n->kind != YNODE_SEQ) return type_error(n, sk, path, err, errlen);
        for (int i = 0; sk->each && i < n->n; i++) {
            char sub[PATH_MAX_LEN];
            snprintf(sub, sizeof sub, "%s[%d]", path, i);
            if (validate_value(n->items[i], sk->each, sub, err, errlen)) return -1;
        }
        break;
    }
    if (sk->check) {
        char msg[512] = "";
        if (sk->check(n, msg, sizeof msg)) {
            schema_error_at(err, errlen, n, "%s: %s", path, msg);
            return -1;
        }
    }
    return 0;
}

static int validate_map(YNode *map, const SchemaKey *keys, const char *path, char *err, size_t errlen) {
    char sub[PATH_MAX_LEN];
    for (int i = 0; i < map->n; i++) {
        const char *name = map->keys[i]->value;
        const SchemaKey *sk = find_key(keys, name);
        child_path(sub, path, name);
        if (!sk) {
            const char *hint = suggest(keys, name);
            YNode shown = {.kind = YNODE_SCALAR, .value = sub};
            char buf[PATH_MAX_LEN + 8];
            schema_error_at(err, errlen, map->keys[i], "unknown key %s%s%s%s", show(&shown, buf, sizeof buf),
                            hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "");
            return -1;
        }
        if (validate_value(map->items[i], sk, sub, err, errlen)) return -1;
    }
    for (const SchemaKey *sk = keys; sk->name; sk++) {
        if (yn_find(map, sk->name) >= 0) continue;
        child_path(sub, path, sk->name);
        if (sk->flags & SCHEMA_REQUIRED) {
            schema_error_at(err, errlen, map, "missing required key '%s'", sub);
            return -1;
        }
        YNode *value = NULL;
        if (sk->def) value = yn_new_scalar(sk->def, true, map->file, map->line, map->col);
        else if (sk->type == SCHEMA_MAP && sk->keys) value = yn_new_map(map->file, map->line, map->col);
        if (!value) continue;
        yn_map_set(map, yn_new_scalar(sk->name, true, map->file, map->line, map->col), value);
        if (validate_value(value, sk, sub, err, errlen)) return -1; // defaults obey the schema too
    }
    return 0;
}

int schema_validate(YNode *root, const SchemaKey *keys, char *err, size_t errlen) {
    if (root->kind != YNODE_MAP) {
        char buf[96];
        schema_error_at(err, errlen, root, "expected a map of keys at the top, got %s", show(root, buf, sizeof buf));
        return -1;
    }
    return validate_map(root, keys, "", err, errlen);
}

// ---- --set KEY=VALUE ----

// Every leaf path of a schema whose last component is `last` (for "dim" -> "model.dim").
static int find_leaf(const SchemaKey *keys, const char *prefix, const char *last, char found[PATH_MAX_LEN], int count) {
    for (const SchemaKey *k = keys; k && k->name; k++) {
        char sub[PATH_MAX_LEN];
        child_path(sub, prefix, k->name);
        if (k->type == SCHEMA_MAP && k->keys) count = find_leaf(k->keys, sub, last, found, count);
        else if (!strcmp(k->name, last)) {
            if (!count) snprintf(found, PATH_MAX_LEN, "%s", sub);
            count++;
        }
    }
    return count;
}

static int unknown_override(const char *assignment, const SchemaKey *top, const SchemaKey *table, char **parts,
                            int nparts, int bad, char *err, size_t errlen) {
    char key[PATH_MAX_LEN] = "", hint[PATH_MAX_LEN] = "";
    for (int i = 0; i < nparts; i++) {
        char tmp[PATH_MAX_LEN];
        child_path(tmp, key, parts[i]);
        memcpy(key, tmp, sizeof key);
    }
    const char *near = table ? suggest(table, parts[bad]) : NULL;
    if (near) {
        for (int i = 0; i < nparts; i++) {
            char tmp[PATH_MAX_LEN];
            child_path(tmp, hint, i == bad ? near : parts[i]);
            memcpy(hint, tmp, sizeof hint);
        }
    } else if (find_leaf(top, "", parts[nparts - 1], hint, 0) != 1) {
        hint[0] = '\0';
    }
    YNode at = {.kind = YNODE_SCALAR, .file = assignment};
    schema_error_at(err, errlen, &at, "unknown key '%s'%s%s%s", key, hint[0] ? " (did you mean '" : "", hint,
                    hint[0] ? "'?)" : "");
    return -1;
}

// The value of an override: one YAML scalar, positioned at line 0 of "--set KEY=VALUE".
static YNode *parse_override_value(const char *assignment, const char *text, char *err, size_t errlen) {
    YNode at = {.kind = YNODE_SCALAR, .file = assignment};
    if (!text[strspn(text, " \t")]) return yn_new_scalar("", true, assignment, 0, 0);
    char perr[256];
    YNode *v = yn_load_string(text, strlen(text), assignment, perr, sizeof perr);
    if (!v || v->kind != YNODE_SCALAR) {
        yn_free(v);
        schema_error_at(err, errlen, &at, "the value must be one YAML scalar (quote it if it holds ': ' or ' #')");
        return NULL;
    }
    v->line = v->col = 0;
    return v;
}

int schema_set(YNode *root, const SchemaKey *keys, const char *set, char *err, size_t errlen) {
    char *assignment = xasprintf("--set %s", set); // the "file" of every node it makes
    YNode at = {.kind = YNODE_SCALAR, .file = assignment};
    const char *eq = strchr(set, '=');
    char *key = xasprintf("%.*s", eq ? (int)(eq - set) : 0, set), *rest = key, *part;
    char *parts[32], dotted[PATH_MAX_LEN] = "";
    int nparts = 0, rc = -1;
    const SchemaKey *table = keys, *each = NULL, *sk = NULL;
    YNode *map = root;
    if (!eq || eq == set) {
        schema_error_at(err, errlen, &at, "expected KEY=VALUE");
        goto out;
    }
    if (root->kind != YNODE_MAP) {
        char buf[96];
        schema_error_at(err, errlen, root, "expected a map of keys at the top, got %s", show(root, buf, sizeof buf));
        goto out;
    }
    while ((part = strsep(&rest, ".")) != NULL) {
        if (nparts == 32) { schema_error_at(err, errlen, &at, "key nested too deeply"); goto out; }
        parts[nparts++] = part;
    }
    for (int i = 0; i < nparts; i++) {
        if (!parts[i][0]) { unknown_override(assignment, keys, NULL, parts, nparts, i, err, errlen); goto out; }
        static const SchemaKey any_scalar = {.name = "*", .type = SCHEMA_SCALAR};
        sk = table ? find_key(table, parts[i]) : each ? each : &any_scalar;
        if (!sk) { unknown_override(assignment, keys, table, parts, nparts, i, err, errlen); goto out; }
        char sub[PATH_MAX_LEN];
        child_path(sub, dotted, parts[i]);
        memcpy(dotted, sub, sizeof dotted);
        if (i == nparts - 1) break;
        if (sk->type != SCHEMA_MAP) { unknown_override(assignment, keys, NULL, parts, nparts, i + 1, err, errlen); goto out; }
        YNode *child = yn_get(map, parts[i]);
        if (child && yn_is_null(child)) null_to_empty(child, YNODE_MAP);
        if (!child) {
            child = yn_new_map(assignment, 0, 0);
            yn_map_set(map, yn_new_scalar(parts[i], true, assignment, 0, 0), child);
        } else if (child->kind != YNODE_MAP) {
            char buf[96];
            schema_error_at(err, errlen, child, "%s: expected a map, got %s", dotted, show(child, buf, sizeof buf));
            goto out;
        }
        map = child;
        table = sk->keys;
        each = sk->each;
    }
    if (sk->type == SCHEMA_MAP || sk->type == SCHEMA_LIST) {
        schema_error_at(err, errlen, &at, "'%s' is a %s; set its entries one at a time", dotted,
                        sk->type == SCHEMA_MAP ? "map" : "list");
        goto out;
    }
    YNode *value = parse_override_value(assignment, eq + 1, err, errlen);
    if (!value) goto out;
    yn_map_set(map, yn_new_scalar(parts[nparts - 1], true, assignment, 0, 0), value);
    rc = 0;
out:
    free(key);
    free(assignment);
    return rc;
}

// ---- reads of validated trees ----

YNode *schema_lookup(const YNode *root, const char *dotted) {
    char path[PATH_MAX_LEN];
    snprintf(path, sizeof path, "%s", dotted);
    YNode *node = (YNode *)root;
    for (char *rest = path, *part; node && (part = strsep(&rest, ".")) != NULL;) node = yn_get(node, part);
    return node;
}

long long schema_int(const YNode *root, const char *dotted) {
    long long v = 0;
    return yn_as_int(schema_lookup(root, dotted), &v) ? v : 0;
}

double schema_float(const YNode *root, const char *dotted) {
    double v = 0;
    return yn_as_double(schema_lookup(root, dotted), &v) ? v : 0.0;
}

bool schema_bool(const YNode *root, const char *dotted) {
    bool v = false;
    return yn_as_bool(schema_lookup(root, dotted), &v) && v;
}

const char *schema_str(const YNode *root, const char *dotted) {
    const YNode *n = schema_lookup(root, dotted);
    return n && n->kind == YNODE_SCALAR ? n->value : NULL;
}

int schema_enum(const YNode *root, const char *dotted, const char *const *choices) {
    const char *s = schema_str(root, dotted);
    for (int i = 0; s && choices[i]; i++)
        if (!strcmp(s, choices[i])) return i;
    return -1;
}
