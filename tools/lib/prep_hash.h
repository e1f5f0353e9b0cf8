// A background SHA-256 thread for lsst-prep: hashing the input and the written
// shards is the largest CPU cost of a preparation, so it runs beside the main
// thread's reading and HDF5 writing.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct PrepHasher PrepHasher;

PrepHasher *prep_hasher_start(void);
// Queue sha256_update(sha, data, n). `data` must stay unchanged until
// prep_hasher_wait(h, ticket) for the returned ticket.
uint64_t prep_hasher_update(PrepHasher *h, Sha256 *sha, const void *data, size_t n);
// Queue hashing the whole file at `path` (read back from the page cache) into
// hex[65], and starting its writeback to disk. Runs after pending updates; hex is
// valid after prep_hasher_finish.
void prep_hasher_file(PrepHasher *h, const char *path, char hex[65]);
// Block until the job with this ticket (and every earlier one) has run.
void prep_hasher_wait(PrepHasher *h, uint64_t ticket);
// Run everything queued, stop the thread, free h. 0, or -1 with the first
// failure ("PATH: cannot read back: ...") in err.
int prep_hasher_finish(PrepHasher *h, char *err, size_t errlen);

// HDF5's fletcher32 checksum (H5_checksum_fletcher32, the value the fletcher32
// filter appends to each chunk, little-endian), computed with SIMD lanes: lsst-prep
// writes its chunks with H5Dwrite_chunk and this checksum instead of running
// HDF5's byte-at-a-time filter. Bit-exact for every length, odd ones included.
uint32_t prep_fletcher32(const void *data, size_t len);
