// A YAML document as a small tree of nodes that remember where they came from,
// so every validation error can say file:line:col. Built on libyaml.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum { YNODE_SCALAR, YNODE_SEQ, YNODE_MAP } YNodeKind;

typedef struct YNode {
    YNodeKind kind;
    char *value;           // scalar text (NULL for seq/map)
    bool plain;            // scalar was written unquoted (only plain scalars are numbers/bools/null)
    const char *file;      // file name for messages (owned by the root)
    int line, col;         // 1-based position of the node's start
    int n;                 // seq: items; map: pairs
    struct YNode **items;  // seq: items[n]; map: values[n]
    struct YNode **keys;   // map: keys[n] (scalars); NULL for seq
} YNode;

// Parse a file / a buffer. On failure return NULL and write "file:line:col: message"
// into err. Duplicate keys, non-scalar keys, anchors/aliases and multiple documents are errors.
// An empty document gives an empty map.
YNode *yn_load_file(const char *path, char *err, size_t errlen);
YNode *yn_load_string(const char *text, size_t len, const char *name, char *err, size_t errlen);
void yn_free(YNode *root);

// Map lookup; NULL when absent or when `map` is not a map.
YNode *yn_get(const YNode *map, const char *key);
// Index of key in map, or -1.
int yn_find(const YNode *map, const char *key);

// Scalar conversions; false when the node is not a plain scalar of that type.
bool yn_as_int(const YNode *node, long long *out);
bool yn_as_double(const YNode *node, double *out);
bool yn_as_bool(const YNode *node, bool *out);
bool yn_is_null(const YNode *node);

// Build nodes by hand (for --set overrides and generated documents).
YNode *yn_new_scalar(const char *value, bool plain, const char *file, int line, int col);
YNode *yn_new_map(const char *file, int line, int col);
YNode *yn_new_seq(const char *file, int line, int col);
void yn_map_set(YNode *map, YNode *key, YNode *value);   // replaces an existing key's value
void yn_seq_push(YNode *seq, YNode *item);
YNode *yn_clone(const YNode *node);

// Write a node as YAML (block style, scalars quoted when needed) to fp.
void yn_write(FILE *fp, const YNode *node, int indent);
// Quote a scalar for YAML output if needed; malloc'd.
char *yn_quote(const char *s);

// Levenshtein distance, for "did you mean" suggestions.
int edit_distance(const char *a, const char *b);
// Best candidate within distance 2 (or 1/3 of the length), else NULL.
const char *did_you_mean(const char *word, const char *const *candidates, int n);
