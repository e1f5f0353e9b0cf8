// The data loader of lsst-run: token windows from an lsst-prep directory, read
// through its manifest with HDF5 hyperslabs (only the bytes a step needs).
//
// Sampling is a pure function of (seed, step, sequence index): which text a step
// trains on never depends on the parallel layout. Sequence i of step s starts at
// data_sample_start(seed, s, i, ...) and spans seq_len + 1 tokens (inputs and
// the shifted targets). A rank holding segment [a, b) of it reads only tokens
// [start + a, start + b + 1).
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct DataSplit DataSplit;

// Open split "train" | "valid" | "test" of DIR. NULL with a message in err.
DataSplit *data_open(const char *dir, const char *split, char *err, size_t errlen);
uint64_t data_tokens(const DataSplit *d);   // tokens in the split
int data_vocab_size(const DataSplit *d);    // from the manifest
// Read tokens [start, start + n) of the split (crossing shards as needed) into out.
int data_read(DataSplit *d, uint64_t start, int n, int *out, char *err, size_t errlen);
void data_close(DataSplit *d);

// Start of sequence `index` of training step `step` (1-based), uniform over
// [0, ntokens - seq_len - 1], from a counter-based hash (splitmix64) of the three.
uint64_t data_sample_start(uint64_t seed, int64_t step, int64_t index, uint64_t ntokens, int seq_len);
// Start of evaluation window `index`: consecutive, non-overlapping windows from
// the beginning of the split (wrapping if the split is short).
uint64_t data_eval_start(int64_t index, uint64_t ntokens, int seq_len);
