// The runtime's own allocations, counted: params, grads, optimizer state,
// activations, scratch, checkpoint and data buffers all come from rt_calloc, so
// the metrics' mem_peak is measured, not estimated. (Not counted: the attention
// kernels' per-thread tile buffers, O(threads x 64 x 64) floats, and the libraries'
// own memory: MPI, HDF5, OpenBLAS.)
#pragma once
#include <stddef.h>

void *rt_calloc(size_t count, size_t size);   // zeroed; fatal when out of memory
void rt_free(void *p, size_t count, size_t size);
size_t rt_mem_live(void);                     // bytes
size_t rt_mem_peak(void);                     // bytes
