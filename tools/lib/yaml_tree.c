#include "yaml_tree.h"
#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

typedef struct {
    yaml_parser_t parser;
    const char *file;
    char *err;
    size_t errlen;
    bool failed;
} Loader;

static void fail_at(Loader *L, yaml_mark_t m, const char *msg) {
    if (L->failed) return;
    L->failed = true;
    snprintf(L->err, L->errlen, "%s:%zu:%zu: %s", L->file, m.line + 1, m.column + 1, msg);
}

static YNode *node_new(YNodeKind kind, const char *file, int line, int col) {
    YNode *n = xcalloc(1, sizeof *n);
    n->kind = kind;
    n->file = file;
    n->line = line;
    n->col = col;
    return n;
}

static void push(YNode ***arr, int n, YNode *x) {
    *arr = xrealloc(*arr, (size_t)(n + 1) * sizeof **arr);
    (*arr)[n] = x;
}

static bool next_event(Loader *L, yaml_event_t *ev) {
    if (!yaml_parser_parse(&L->parser, ev)) {
        yaml_mark_t m = L->parser.problem_mark;
        char msg[256];
        snprintf(msg, sizeof msg, "YAML syntax error: %s%s%s", L->parser.problem ? L->parser.problem : "invalid YAML",
                 L->parser.context ? " " : "", L->parser.context ? L->parser.context : "");
        fail_at(L, m, msg);
        return false;
    }
    return true;
}

static YNode *parse_node(Loader *L, yaml_event_t *ev);

static YNode *parse_collection(Loader *L, yaml_event_t *start, bool is_map) {
    yaml_mark_t m = start->start_mark;
    YNode *node = node_new(is_map ? YNODE_MAP : YNODE_SEQ, L->file, (int)m.line + 1, (int)m.column + 1);
    yaml_event_type_t end = is_map ? YAML_MAPPING_END_EVENT : YAML_SEQUENCE_END_EVENT;
    for (;;) {
        yaml_event_t ev;
        if (!next_event(L, &ev)) goto bad;
        if (ev.type == end) { yaml_event_delete(&ev); return node; }
        YNode *key = NULL;
        if (is_map) {
            if (ev.type != YAML_SCALAR_EVENT) {
                fail_at(L, ev.start_mark, "mapping keys must be plain words");
                yaml_event_delete(&ev);
                goto bad;
            }
            yaml_mark_t key_mark = ev.start_mark;
            key = parse_node(L, &ev);
            if (!key) goto bad;
            if (yn_find(node, key->value) >= 0) {
                char msg[300];
                snprintf(msg, sizeof msg, "duplicate key '%s'", key->value);
                fail_at(L, key_mark, msg);
                yn_free(key);
                goto bad;
            }
            if (!next_event(L, &ev)) { yn_free(key); goto bad; }
        }
        YNode *val = parse_node(L, &ev);
        if (!val) { yn_free(key); goto bad; }
        if (is_map) push(&node->keys, node->n, key);
        push(&node->items, node->n, val);
        node->n++;
    }
bad:
    yn_free(node);
    return NULL;
}

// Consumes *ev.
static YNode *parse_node(Loader *L, yaml_event_t *ev) {
    YNode *node = NULL;
    yaml_mark_t m = ev->start_mark;
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        if (ev->data.scalar.anchor) { fail_at(L, m, "YAML anchors are not supported"); break; }
        node = node_new(YNODE_SCALAR, L->file, (int)m.line + 1, (int)m.column + 1);
        node->value = strndup((const char *)ev->data.scalar.value, ev->data.scalar.length);
        node->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        break;
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        bool is_map = ev->type == YAML_MAPPING_START_EVENT;
        const void *anchor = is_map ? (void *)ev->data.mapping_start.anchor : (void *)ev->data.sequence_start.anchor;
        if (anchor) { fail_at(L, m, "YAML anchors are not supported"); break; }
        node = parse_collection(L, ev, is_map);
        break;
    }
    case YAML_ALIAS_EVENT: fail_at(L, m, "YAML aliases are not supported"); break;
    default: fail_at(L, m, "unexpected YAML event"); break;
    }
    yaml_event_delete(ev);
    return node;
}

static YNode *load(Loader *L) {
    YNode *root = NULL;
    yaml_event_t ev;
    for (;;) {
        if (!next_event(L, &ev)) goto bad;
        yaml_event_type_t t = ev.type;
        if (t == YAML_STREAM_START_EVENT) { yaml_event_delete(&ev); continue; }
        if (t == YAML_STREAM_END_EVENT) { yaml_event_delete(&ev); break; }
        if (t == YAML_DOCUMENT_START_EVENT) {
            if (root) { fail_at(L, ev.start_mark, "only one YAML document is allowed"); yaml_event_delete(&ev); goto bad; }
            yaml_event_delete(&ev);
            if (!next_event(L, &ev)) goto bad;
            root = parse_node(L, &ev);
            if (!root) goto bad;
            continue;
        }
        yaml_event_delete(&ev); // DOCUMENT_END
    }
    if (!root) root = node_new(YNODE_MAP, L->file, 1, 1);
    return root;
bad:
    yn_free(root);
    return NULL;
}

static YNode *load_with(Loader *L, char *err, size_t errlen) {
    L->err = err;
    L->errlen = errlen;
    L->failed = false;
    YNode *root = load(L);
    yaml_parser_delete(&L->parser);
    return root;
}

// The root owns a copy of the file name; every node points at it.
static void set_file(YNode *n, const char *file) {
    n->file = file;
    for (int i = 0; i < n->n; i++) {
        if (n->keys) set_file(n->keys[i], file);
        set_file(n->items[i], file);
    }
}


static char *g_names[1024];
static int g_nnames;

static const char *intern_name(const char *name) {
    for (int i = 0; i < g_nnames; i++)
        if (!strcmp(g_names[i], name)) return g_names[i];
    char *s = xstrdup(name);
    if (g_nnames < 1024) g_names[g_nnames++] = s;
    return s;
}

YNode *yn_load_string(const char *text, size_t len, const char *name, char *err, size_t errlen) {
    Loader L = {0};
    L.file = intern_name(name);
    if (!yaml_parser_initialize(&L.parser)) { snprintf(err, errlen, "%s: cannot initialise libyaml", name); return NULL; }
    yaml_parser_set_input_string(&L.parser, (const unsigned char *)text, len);
    YNode *root = load_with(&L, err, errlen);
    if (root) set_file(root, L.file);
    return root;
}

YNode *yn_load_file(const char *path, char *err, size_t errlen) {
    size_t len = 0;
    char *text = read_file(path, &len);
    if (!text) { snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno)); return NULL; }
    YNode *root = yn_load_string(text, len, path, err, errlen);
    free(text);
    return root;
}

void yn_free(YNode *n) {
    if (!n) return;
    for (int i = 0; i < n->n; i++) {
        if (n->keys) yn_free(n->keys[i]);
        yn_free(n->items[i]);
    }
    free(n->keys);
    free(n->items);
    free(n->value);
    free(n);
}

int yn_find(const YNode *map, const char *key) {
    if (!map || map->kind != YNODE_MAP) return -1;
    for (int i = 0; i < map->n; i++)
        if (!strcmp(map->keys[i]->value, key)) return i;
    return -1;
}

YNode *yn_get(const YNode *map, const char *key) {
    int i = yn_find(map, key);
    return i < 0 ? NULL : map->items[i];
}

bool yn_is_null(const YNode *n) {
    return n && n->kind == YNODE_SCALAR && n->plain &&
           (!n->value[0] || !strcmp(n->value, "~") || !strcmp(n->value, "null") || !strcmp(n->value, "Null") ||
            !strcmp(n->value, "NULL"));
}

bool yn_as_int(const YNode *n, long long *out) {
    if (!n || n->kind != YNODE_SCALAR || !n->plain || !n->value[0]) return false;
    const char *s = n->value;
    char clean[64];
    size_t j = 0;
    for (size_t i = 0; s[i]; i++) { // allow 1_000_000
        if (s[i] == '_' && i > 0) continue;
        if (j + 1 >= sizeof clean) return false;
        clean[j++] = s[i];
    }
    clean[j] = '\0';
    errno = 0;
    char *end;
    long long v = strtoll(clean, &end, 10);
    if (errno || *end) {
        // Accept integral floats written like 1e6.
        double d;
        if (!yn_as_double(n, &d) || d != floor(d) || fabs(d) > 9.0e18) return false;
        v = (long long)d;
    }
    *out = v;
    return true;
}

bool yn_as_double(const YNode *n, double *out) {
    if (!n || n->kind != YNODE_SCALAR || !n->plain || !n->value[0]) return false;
    if (strpbrk(n->value, "xXpP")) return false; // no hex floats
    errno = 0;
    char *end;
    double v = strtod(n->value, &end);
    if (errno || *end || !isfinite(v)) return false;
    if (!isdigit((unsigned char)n->value[0]) && n->value[0] != '-' && n->value[0] != '+' && n->value[0] != '.')
        return false; // no "inf"/"nan" words
    *out = v;
    return true;
}

bool yn_as_bool(const YNode *n, bool *out) {
    if (!n || n->kind != YNODE_SCALAR || !n->plain) return false;
    const char *v = n->value;
    if (!strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "TRUE") || !strcmp(v, "yes") || !strcmp(v, "on")) { *out = true; return true; }
    if (!strcmp(v, "false") || !strcmp(v, "False") || !strcmp(v, "FALSE") || !strcmp(v, "no") || !strcmp(v, "off")) { *out = false; return true; }
    return false;
}

YNode *yn_new_scalar(const char *value, bool plain, const char *file, int line, int col) {
    YNode *n = node_new(YNODE_SCALAR, file ? intern_name(file) : NULL, line, col);
    n->value = xstrdup(value);
    n->plain = plain;
    return n;
}

YNode *yn_new_map(const char *file, int line, int col) { return node_new(YNODE_MAP, file ? intern_name(file) : NULL, line, col); }
YNode *yn_new_seq(const char *file, int line, int col) { return node_new(YNODE_SEQ, file ? intern_name(file) : NULL, line, col); }

void yn_map_set(YNode *map, YNode *key, YNode *value) {
    int i = yn_find(map, key->value);
    if (i >= 0) {
        yn_free(map->items[i]);
        map->items[i] = value;
        yn_free(key);
        return;
    }
    push(&map->keys, map->n, key);
    push(&map->items, map->n, value);
    map->n++;
}

void yn_seq_push(YNode *seq, YNode *item) {
    push(&seq->items, seq->n, item);
    seq->n++;
}

YNode *yn_clone(const YNode *src) {
    YNode *n = node_new(src->kind, src->file, src->line, src->col);
    n->plain = src->plain;
    if (src->value) n->value = xstrdup(src->value);
    for (int i = 0; i < src->n; i++) {
        if (src->keys) push(&n->keys, i, yn_clone(src->keys[i]));
        push(&n->items, i, yn_clone(src->items[i]));
    }
    n->n = src->n;
    return n;
}

// A plain scalar is safe to write unquoted if it reads back as the same plain text.
static bool needs_quote(const char *s) {
    if (!s[0]) return true;
    if (strchr("-?:,[]{}#&*!|>'\"%@` \t", s[0])) {
        if (!(s[0] == '-' && (isdigit((unsigned char)s[1]) || s[1] == '.'))) return true;
    }
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == 0x7f) return true;
        if (c == ':' && (p[1] == ' ' || p[1] == '\0')) return true;
        if (c == '#' && p > s && p[-1] == ' ') return true;
    }
    size_t n = strlen(s);
    return s[n - 1] == ' ' || s[n - 1] == '\t';
}

static char *quote_always(const char *s) {
    size_t cap = strlen(s) * 4 + 3, j = 0;
    char *out = xmalloc(cap);
    out[j++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') { out[j++] = '\\'; out[j++] = (char)*p; }
        else if (*p == '\n') { out[j++] = '\\'; out[j++] = 'n'; }
        else if (*p == '\t') { out[j++] = '\\'; out[j++] = 't'; }
        else if (*p < 0x20 || *p == 0x7f) j += (size_t)sprintf(out + j, "\\x%02x", *p);
        else out[j++] = (char)*p;
    }
    out[j++] = '"';
    out[j] = '\0';
    return out;
}

char *yn_quote(const char *s) { return needs_quote(s) ? quote_always(s) : xstrdup(s); }

static void write_scalar(FILE *fp, const YNode *n) {
    if (n->plain) { fputs(n->value, fp); return; }
    char *q = quote_always(n->value); // keep quoted strings quoted (and escaped)
    fputs(q, fp);
    free(q);
}

static bool is_flow_leaf(const YNode *n) {
    return n->kind == YNODE_SCALAR || n->n == 0;
}

static void write_leaf(FILE *fp, const YNode *n) {
    if (n->kind == YNODE_SCALAR) write_scalar(fp, n);
    else fputs(n->kind == YNODE_MAP ? "{}" : "[]", fp);
}

void yn_write(FILE *fp, const YNode *n, int indent) {
    if (is_flow_leaf(n)) { write_leaf(fp, n); fputc('\n', fp); return; }
    for (int i = 0; i < n->n; i++) {
        const YNode *v = n->items[i];
        fprintf(fp, "%*s", indent, "");
        if (n->kind == YNODE_MAP) {
            char *k = yn_quote(n->keys[i]->value);
            fprintf(fp, "%s:", k);
            free(k);
            if (is_flow_leaf(v)) { fputc(' ', fp); write_leaf(fp, v); fputc('\n', fp); }
            else { fputc('\n', fp); yn_write(fp, v, indent + 2); }
        } else {
            fputs("-", fp);
            if (is_flow_leaf(v)) { fputc(' ', fp); write_leaf(fp, v); fputc('\n', fp); }
            else if (v->kind == YNODE_MAP) {
                // "- key: value" with the rest of the map indented under it
                fputc(' ', fp);
                for (int j = 0; j < v->n; j++) {
                    if (j) fprintf(fp, "%*s", indent + 2, "");
                    char *k = yn_quote(v->keys[j]->value);
                    fprintf(fp, "%s:", k);
                    free(k);
                    const YNode *vv = v->items[j];
                    if (is_flow_leaf(vv)) { fputc(' ', fp); write_leaf(fp, vv); fputc('\n', fp); }
                    else { fputc('\n', fp); yn_write(fp, vv, indent + 4); }
                }
            } else { fputc('\n', fp); yn_write(fp, v, indent + 2); }
        }
    }
}

int edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    int *row = xmalloc((lb + 1) * sizeof *row);
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int prev = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int cur = row[j];
            int sub = prev + (a[i - 1] != b[j - 1]);
            int del = row[j] + 1, ins = row[j - 1] + 1;
            row[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
            prev = cur;
        }
    }
    int d = row[lb];
    free(row);
    return d;
}

const char *did_you_mean(const char *word, const char *const *cands, int n) {
    const char *best = NULL;
    int best_d = 1 << 30;
    int limit = (int)strlen(word) / 3;
    if (limit < 2) limit = 2;
    for (int i = 0; i < n; i++) {
        int d = edit_distance(word, cands[i]);
        if (d < best_d) { best_d = d; best = cands[i]; }
    }
    return best_d <= limit ? best : NULL;
}
