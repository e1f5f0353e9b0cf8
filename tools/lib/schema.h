// Validation of a YAML tree (yaml_tree.h) against a schema written as a table of
// keys, shared by lsst-run (run config), lsst-submit (workflows, site profiles).
// Every error is ONE line "FILE:LINE:COL: message" naming the dotted key:
//   run.yaml:4:3: unknown key 'model.dimm' (did you mean 'dim'?)
//   run.yaml:4:8: model.dim: expected an integer, got 'abc'
//   run.yaml:4:8: model.dim: must be >= 1, got 0
//   run.yaml:6:11: parallel.scheme: expected one of lss, megatron-sp, none, got 'lsss' (did you mean 'lss'?)
//   run.yaml:1:1: missing required key 'data.seq_len'          (at the parent map)
// Nodes made by schema_set() for `--set KEY=VALUE` carry the file name
// "--set KEY=VALUE" and line 0; their errors read "--set model.dim=0: model.dim: ...".
//
// A schema is an array of SchemaKey ending with an entry whose name is NULL:
//   static const SchemaKey model_keys[] = {
//       {.name = "dim", .type = SCHEMA_INT, .flags = SCHEMA_REQUIRED | SCHEMA_MIN, .min = 1},
//       {.name = "act", .type = SCHEMA_ENUM, .choices = (const char *const[]){"gelu", "relu", NULL}, .def = "gelu"},
//       {0}};
//   static const SchemaKey top[] = {{.name = "model", .type = SCHEMA_MAP, .keys = model_keys}, {0}};
#pragma once
#include "yaml_tree.h"

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    SCHEMA_INT,    // plain integer (1_000 and 1e6 accepted); fits an int unless SCHEMA_INT64
    SCHEMA_FLOAT,  // plain finite number
    SCHEMA_STRING, // any non-null scalar, taken as text ("123" and "true" are strings here)
    SCHEMA_BOOL,   // true/false/yes/no/on/off
    SCHEMA_ENUM,   // one of .choices (exact text)
    SCHEMA_SCALAR, // any scalar, null included (workflow vars)
    SCHEMA_MAP,    // .keys: the known keys; or .keys NULL and .each: open map (any names, every value .each)
    SCHEMA_LIST,   // every item validated against .each (NULL: anything)
} SchemaType;

enum {
    SCHEMA_REQUIRED = 1 << 0, // absent -> "missing required key" at the parent map
    SCHEMA_MIN = 1 << 1,      // value >= min
    SCHEMA_MIN_EXCL = 1 << 2, // value > min
    SCHEMA_MAX = 1 << 3,      // value <= max
    SCHEMA_MAX_EXCL = 1 << 4, // value < max
    SCHEMA_INT64 = 1 << 5,    // SCHEMA_INT may use the whole long long range
};

typedef struct SchemaKey SchemaKey;
// Extra check after the type check; return 0, or -1 with the message (without
// position or key; schema prefixes "FILE:L:C: KEY: ") in msg.
typedef int (*SchemaCheck)(const YNode *value, char *msg, size_t msglen);

struct SchemaKey {
    const char *name;            // NULL ends a table
    SchemaType type;
    unsigned flags;              // SCHEMA_* above
    const char *def;             // default, as YAML scalar text (inserted when the key is absent); NULL: none
    double min, max;             // with SCHEMA_MIN/MIN_EXCL/MAX/MAX_EXCL
    const char *const *choices;  // SCHEMA_ENUM: NULL-terminated
    const SchemaKey *keys;       // SCHEMA_MAP: table of the known keys
    const SchemaKey *each;       // SCHEMA_LIST items / open SCHEMA_MAP values (name unused)
    SchemaCheck check;           // optional
};

// Validate the map `root` against `keys`, completely, in document order; the first
// error goes to err and the result is -1. On success (0) the tree is completed:
// absent keys with a default get a plain scalar (positioned at their parent map),
// absent optional maps are created empty (so their defaults are filled in too).
// Keys without a default stay absent.
int schema_validate(YNode *root, const SchemaKey *keys, char *err, size_t errlen);

// Apply one "dotted.key=value" override to the tree before schema_validate. The value
// is parsed as one YAML scalar; missing parent maps are created. Unknown keys:
//   "--set model.dimm=128: unknown key 'model.dimm' (did you mean 'model.dim'?)".
// 0, or -1 with the message in err.
int schema_set(YNode *root, const SchemaKey *keys, const char *assignment, char *err, size_t errlen);

// Node at a dotted path ("model.dim"), NULL when absent.
YNode *schema_lookup(const YNode *root, const char *dotted);
// Typed reads of validated values (0 / 0.0 / NULL / -1 when absent or of another type).
long long schema_int(const YNode *root, const char *dotted);
double schema_float(const YNode *root, const char *dotted);
bool schema_bool(const YNode *root, const char *dotted);
const char *schema_str(const YNode *root, const char *dotted);
int schema_enum(const YNode *root, const char *dotted, const char *const *choices); // index in choices

// Shortest text that reads back as the same double ("0.0003", not "0.00029999999999999997"),
// for writing resolved YAML that loads to identical values. Returns buf.
const char *schema_fmt_double(double v, char buf[32]);

// Write "FILE:LINE:COL: message" into err, "FILE: message" when the node has
// line 0 (an override), just the message when `at` is NULL. Always one line.
void schema_error_at(char *err, size_t errlen, const YNode *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
