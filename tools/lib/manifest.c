// manifest.yaml of an lsst-prep directory: load (validated, errors with
// file:line:col), write (atomic), look up. Format in manifest.h.
#include "manifest.h"
#include "common.h"
#include "yaml_tree.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char *const split_names[3] = {"train", "valid", "test"};

// ---- load ----

typedef struct {
    const char *path;  // DIR/manifest.yaml, for messages without a node
    char *err;
    size_t errlen;
} Ctx;

// "FILE:LINE:COL: message" at `node` (or just "FILE: message" when there is none).
__attribute__((format(printf, 3, 4))) static int fail(Ctx *c, const YNode *node, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (node) snprintf(c->err, c->errlen, "%s:%d:%d: %s", c->path, node->line, node->col, msg);
    else snprintf(c->err, c->errlen, "%s: %s", c->path, msg);
    return -1;
}

static const char *kind_name(const YNode *n) {
    return n->kind == YNODE_MAP ? "a mapping" : n->kind == YNODE_SEQ ? "a list" : "a scalar";
}

// The value of `key` in `map` (named `what` in messages); it must be present.
static YNode *need(Ctx *c, const YNode *map, const char *what, const char *key) {
    YNode *v = yn_get(map, key);
    if (!v) fail(c, map, "%s: missing key '%s'", what, key);
    return v;
}

// Every key of `map` must be one of `allowed` (a typo in a hand-edited manifest is an error).
static int only_keys(Ctx *c, const YNode *map, const char *what, const char *const *allowed, int nallowed) {
    for (int i = 0; i < map->n; i++) {
        const char *k = map->keys[i]->value;
        int ok = 0;
        for (int j = 0; j < nallowed; j++) ok |= !strcmp(k, allowed[j]);
        if (!ok) {
            const char *hint = did_you_mean(k, allowed, nallowed);
            return fail(c, map->keys[i], "%s: unknown key '%s'%s%s%s", what, k, hint ? " (did you mean '" : "",
                        hint ? hint : "", hint ? "'?)" : "");
        }
    }
    return 0;
}

static int as_map(Ctx *c, const YNode *n, const char *what) {
    if (n->kind != YNODE_MAP) return fail(c, n, "%s: expected a mapping, got %s", what, kind_name(n));
    return 0;
}

static int get_u64(Ctx *c, const YNode *map, const char *what, const char *key, uint64_t *out) {
    YNode *v = need(c, map, what, key);
    if (!v) return -1;
    long long x;
    if (v->kind != YNODE_SCALAR || !yn_as_int(v, &x) || x < 0)
        return fail(c, v, "%s.%s: expected a non-negative integer, got %s%s%s", what, key,
                    v->kind == YNODE_SCALAR ? "'" : "", v->kind == YNODE_SCALAR ? v->value : kind_name(v),
                    v->kind == YNODE_SCALAR ? "'" : "");
    *out = (uint64_t)x;
    return 0;
}

static int get_str(Ctx *c, const YNode *map, const char *what, const char *key, const YNode **node_out, char **out) {
    YNode *v = need(c, map, what, key);
    if (!v) return -1;
    if (v->kind != YNODE_SCALAR || !v->value[0])
        return fail(c, v, "%s.%s: expected a non-empty string, got %s", what, key,
                    v->kind == YNODE_SCALAR ? "an empty string" : kind_name(v));
    if (node_out) *node_out = v;
    *out = xstrdup(v->value);
    return 0;
}

static int get_sha(Ctx *c, const YNode *map, const char *what, const char *key, char out[65]) {
    YNode *v = need(c, map, what, key);
    if (!v) return -1;
    int ok = v->kind == YNODE_SCALAR && strlen(v->value) == 64;
    for (int i = 0; ok && i < 64; i++) ok = isxdigit((unsigned char)v->value[i]) && !isupper((unsigned char)v->value[i]);
    if (!ok) return fail(c, v, "%s.%s: expected 64 lowercase hex digits (SHA-256)", what, key);
    memcpy(out, v->value, 65);
    return 0;
}

static int load_shard(Ctx *c, const YNode *n, const char *what, ManifestShard *sh) {
    static const char *const keys[] = {"file", "offset", "tokens", "sha256"};
    if (as_map(c, n, what) || only_keys(c, n, what, keys, 4)) return -1;
    const YNode *fnode = NULL;
    if (get_str(c, n, what, "file", &fnode, &sh->file)) return -1;
    // The loader opens DIR/file: a name must stay inside the directory.
    if (strchr(sh->file, '/') || !strcmp(sh->file, ".") || !strcmp(sh->file, ".."))
        return fail(c, fnode, "%s.file: '%s' is not a plain file name", what, sh->file);
    if (get_u64(c, n, what, "offset", &sh->offset) || get_u64(c, n, what, "tokens", &sh->tokens) ||
        get_sha(c, n, what, "sha256", sh->sha256))
        return -1;
    if (sh->tokens == 0) return fail(c, yn_get(n, "tokens"), "%s.tokens: a shard holds at least 1 token", what);
    return 0;
}

static int load_split(Ctx *c, const YNode *n, const char *name, ManifestSplit *sp) {
    static const char *const keys[] = {"offset", "tokens", "shards"};
    char what[64];
    snprintf(what, sizeof what, "splits.%s", name);
    sp->name = xstrdup(name);
    if (as_map(c, n, what) || only_keys(c, n, what, keys, 3)) return -1;
    if (get_u64(c, n, what, "offset", &sp->offset) || get_u64(c, n, what, "tokens", &sp->tokens)) return -1;
    const YNode *shards = need(c, n, what, "shards");
    if (!shards) return -1;
    if (shards->kind != YNODE_SEQ) return fail(c, shards, "%s.shards: expected a list, got %s", what, kind_name(shards));
    if (shards->n == 0) return fail(c, shards, "%s.shards: a split has at least one shard", what);
    sp->shards = xcalloc((size_t)shards->n, sizeof *sp->shards);
    sp->nshards = shards->n;
    uint64_t next = sp->offset;  // shards are contiguous and in order
    for (int i = 0; i < shards->n; i++) {
        char swhat[96];
        snprintf(swhat, sizeof swhat, "%s.shards[%d]", what, i);
        ManifestShard *sh = &sp->shards[i];
        if (load_shard(c, shards->items[i], swhat, sh)) return -1;
        if (sh->offset != next)
            return fail(c, yn_get(shards->items[i], "offset"),
                        "%s.offset: %llu, but the shards before it end at %llu (shards must be contiguous)", swhat,
                        (unsigned long long)sh->offset, (unsigned long long)next);
        next += sh->tokens;
    }
    if (next - sp->offset != sp->tokens)
        return fail(c, yn_get(n, "tokens"), "%s.tokens: %llu, but its shards hold %llu", what,
                    (unsigned long long)sp->tokens, (unsigned long long)(next - sp->offset));
    return 0;
}

static int load_tree(Ctx *c, const YNode *root, Manifest *m) {
    static const char *const top_keys[] = {"format", "format_version", "source", "vocab", "splits"};
    static const char *const source_keys[] = {"name", "size", "sha256", "recognized"};
    static const char *const vocab_keys[] = {"kind", "size"};
    if (as_map(c, root, "manifest") || only_keys(c, root, "manifest", top_keys, 5)) return -1;

    const YNode *fmt = need(c, root, "manifest", "format");
    if (!fmt) return -1;
    if (fmt->kind != YNODE_SCALAR || strcmp(fmt->value, "lsst-shards"))
        return fail(c, fmt, "format: expected 'lsst-shards' (not an lsst-prep manifest)");
    uint64_t version;
    if (get_u64(c, root, "manifest", "format_version", &version)) return -1;
    if (version != MANIFEST_FORMAT_VERSION)
        return fail(c, yn_get(root, "format_version"), "format_version: %llu is not supported (this lsst reads %d)",
                    (unsigned long long)version, MANIFEST_FORMAT_VERSION);

    const YNode *src = need(c, root, "manifest", "source");
    if (!src || as_map(c, src, "source") || only_keys(c, src, "source", source_keys, 4)) return -1;
    const YNode *rec = NULL;
    if (get_str(c, src, "source", "name", NULL, &m->source_name) ||
        get_u64(c, src, "source", "size", &m->source_size) ||
        get_sha(c, src, "source", "sha256", m->source_sha256) ||
        get_str(c, src, "source", "recognized", &rec, &m->recognized))
        return -1;
    if (strcmp(m->recognized, "enwik8") && strcmp(m->recognized, "enwik8.zip") && strcmp(m->recognized, "none"))
        return fail(c, rec, "source.recognized: expected enwik8, enwik8.zip or none, got '%s'", m->recognized);

    const YNode *voc = need(c, root, "manifest", "vocab");
    if (!voc || as_map(c, voc, "vocab") || only_keys(c, voc, "vocab", vocab_keys, 2)) return -1;
    const YNode *kind = NULL;
    uint64_t vsize;
    if (get_str(c, voc, "vocab", "kind", &kind, &m->vocab_kind) || get_u64(c, voc, "vocab", "size", &vsize)) return -1;
    if (strcmp(m->vocab_kind, "raw") && strcmp(m->vocab_kind, "compact"))
        return fail(c, kind, "vocab.kind: expected raw or compact, got '%s'", m->vocab_kind);
    if (!strcmp(m->vocab_kind, "raw") ? vsize != 256 : (vsize < 1 || vsize > 256))
        return fail(c, yn_get(voc, "size"), "vocab.size: %llu is not valid for vocab %s (raw: 256; compact: 1..256)",
                    (unsigned long long)vsize, m->vocab_kind);
    m->vocab_size = (int)vsize;

    const YNode *splits = need(c, root, "manifest", "splits");
    if (!splits || as_map(c, splits, "splits") || only_keys(c, splits, "splits", split_names, 3)) return -1;
    m->nsplits = 3;
    uint64_t next = 0;  // the splits cover the source in order: train, valid, test
    for (int i = 0; i < 3; i++) {
        const YNode *sn = need(c, splits, "splits", split_names[i]);
        if (!sn || load_split(c, sn, split_names[i], &m->splits[i])) return -1;
        if (m->splits[i].offset != next)
            return fail(c, yn_get(sn, "offset"), "splits.%s.offset: %llu, but the splits before it end at %llu",
                        split_names[i], (unsigned long long)m->splits[i].offset, (unsigned long long)next);
        next += m->splits[i].tokens;
    }
    if (next != m->source_size)
        return fail(c, splits, "splits: they hold %llu tokens, but source.size is %llu", (unsigned long long)next,
                    (unsigned long long)m->source_size);
    return 0;
}

int manifest_load(Manifest *m, const char *dir, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    char *path = path_join(dir, MANIFEST_FILE);
    Ctx c = {path, err, errlen};
    char yerr[512];
    YNode *root = yn_load_file(path, yerr, sizeof yerr);
    int rc = -1;
    if (!root) {
        snprintf(err, errlen, "%s", yerr);  // already "path:line:col: ..." or "path: cannot read: ..."
    } else {
        m->dir = xstrdup(dir);
        rc = load_tree(&c, root, m);
    }
    yn_free(root);
    free(path);
    if (rc != 0) manifest_free(m);
    return rc;
}

// ---- write ----

int manifest_write(const Manifest *m, const char *dir) {
    char *path = path_join(dir, MANIFEST_FILE);
    AtomicFile af;
    if (atomic_open(&af, path) != 0) { int e = errno; free(path); errno = e; return -1; }
    free(path);
    FILE *f = af.fp;
    errno = 0;
    char *name = yn_quote(m->source_name ? m->source_name : "");
    fprintf(f, "# lsst-prep output; lsst-prep --verify DIR checks the shards against it.\n");
    fprintf(f, "format: lsst-shards\nformat_version: %d\n", MANIFEST_FORMAT_VERSION);
    fprintf(f, "source:\n  name: %s\n  size: %llu\n  sha256: %s\n  recognized: %s\n", name,
            (unsigned long long)m->source_size, m->source_sha256, m->recognized ? m->recognized : "none");
    free(name);
    fprintf(f, "vocab:\n  kind: %s\n  size: %d\n", m->vocab_kind ? m->vocab_kind : "raw", m->vocab_size);
    fprintf(f, "splits:\n");
    for (int i = 0; i < m->nsplits; i++) {
        const ManifestSplit *sp = &m->splits[i];
        fprintf(f, "  %s:\n    offset: %llu\n    tokens: %llu\n    shards:\n", sp->name, (unsigned long long)sp->offset,
                (unsigned long long)sp->tokens);
        for (int j = 0; j < sp->nshards; j++) {
            const ManifestShard *sh = &sp->shards[j];
            char *file = yn_quote(sh->file);
            fprintf(f, "      - {file: %s, offset: %llu, tokens: %llu, sha256: %s}\n", file,
                    (unsigned long long)sh->offset, (unsigned long long)sh->tokens, sh->sha256);
            free(file);
        }
    }
    if (ferror(f)) {
        int e = errno ? errno : EIO;
        atomic_abort(&af);
        errno = e;
        return -1;
    }
    return atomic_commit(&af);
}

// ---- lookup, free ----

const ManifestSplit *manifest_split(const Manifest *m, const char *name) {
    for (int i = 0; i < m->nsplits; i++)
        if (m->splits[i].name && !strcmp(m->splits[i].name, name)) return &m->splits[i];
    return NULL;
}

void manifest_free(Manifest *m) {
    if (!m) return;
    for (int i = 0; i < 3; i++) {
        ManifestSplit *sp = &m->splits[i];
        for (int j = 0; j < sp->nshards; j++) free(sp->shards[j].file);
        free(sp->shards);
        free(sp->name);
    }
    free(m->dir);
    free(m->source_name);
    free(m->recognized);
    free(m->vocab_kind);
    memset(m, 0, sizeof *m);
}
