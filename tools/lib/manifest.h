// The manifest of an lsst-prep output directory (ARCHITECTURE §3), shared by
// lsst-prep (writes it, --verify reads it) and lsst-run's data loader (reads it).
//
// manifest.yaml, format_version 1:
//   format: lsst-shards
//   format_version: 1
//   source: {name: enwik8, size: 100000000, sha256: <hex>, recognized: enwik8 | enwik8.zip | none}
//   vocab: {kind: raw | compact, size: 256}
//   splits:
//     train:
//       offset: 0            # byte offset of the split in the source
//       tokens: 90000000
//       shards:
//         - {file: train-00000.h5, offset: 0, tokens: 16777216, sha256: <hex of the .h5 file>}
//     valid: {...}
//     test:  {...}
// Shard `offset` is the byte offset in the SOURCE (as the shard's attribute `offset`);
// shards of a split are contiguous and in order. Each shard holds /tokens (uint8, 1-D,
// chunked, fletcher32) with attributes split, shard, offset, vocab_size; with
// vocab compact also /vocab (uint8[size]: token id -> byte).
#pragma once
#include <stddef.h>
#include <stdint.h>

#define MANIFEST_FILE "manifest.yaml"
#define MANIFEST_FORMAT_VERSION 1

typedef struct {
    char *file;        // name relative to the directory
    uint64_t offset;   // byte offset in the source
    uint64_t tokens;
    char sha256[65];
} ManifestShard;

typedef struct {
    char *name;        // "train", "valid", "test"
    uint64_t offset;   // byte offset of the split in the source
    uint64_t tokens;   // sum of its shards
    int nshards;
    ManifestShard *shards;
} ManifestSplit;

typedef struct {
    char *dir;         // directory the manifest was loaded from
    char *source_name;
    uint64_t source_size;
    char source_sha256[65];
    char *recognized;  // "enwik8", "enwik8.zip" or "none"
    char *vocab_kind;  // "raw" or "compact"
    int vocab_size;
    int nsplits;       // always 3: train, valid, test (in that order)
    ManifestSplit splits[3];
} Manifest;

// Load DIR/manifest.yaml. On failure returns -1 and writes a one-line message
// ("DIR/manifest.yaml:LINE:COL: ..." where there is a position) into err.
int manifest_load(Manifest *m, const char *dir, char *err, size_t errlen);
// Write DIR/manifest.yaml atomically; 0 or -1 (errno).
int manifest_write(const Manifest *m, const char *dir);
// The split named `name`, or NULL.
const ManifestSplit *manifest_split(const Manifest *m, const char *name);
void manifest_free(Manifest *m);
