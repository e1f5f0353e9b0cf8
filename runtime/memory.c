#include "memory.h"

#include <stdlib.h>

#include "common.h"

static size_t live, peak;

void *rt_calloc(size_t count, size_t size) {
    void *p = xcalloc(count, size);
    live += count * size;
    if (live > peak) peak = live;
    return p;
}

void rt_free(void *p, size_t count, size_t size) {
    if (!p) return;
    free(p);
    live -= count * size;
}

size_t rt_mem_live(void) { return live; }
size_t rt_mem_peak(void) { return peak; }
