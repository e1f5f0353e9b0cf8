// Reading one per-rank metrics file (runtime/metrics.h layout) for lsst-report:
// SWMR read, so files of a running or killed run open; the /steps columns the
// report needs in ONE H5Dread through a compound subset type, with conversion
// buffers reused across files (HDF5's default allocates and zeroes 2 MiB per read).
#pragma once
#include "report_job.h"

#include <stddef.h>

typedef struct {
    int rank, world, sp_rank, dp_rank, sp_size, dp_size, seq_len;
    char *host;
    // Only with want_config (otherwise NULL):
    char *scheme, *backend, *device, *model, *git;
    // Rows of /steps, valid until the next read with the same reader; steps strictly increase.
    const ReportRow *rows;
    int64_t n_rows;
    // Only with want_eval (malloc'd, owned by the caller after the call):
    EvalPoint *valid, *test;
    int64_t n_valid, n_test;
} RankFile;

typedef struct RankReader RankReader;

RankReader *rank_reader_new(void);
void rank_reader_free(RankReader *rd);

// Read PATH into out (cleared first). 0, or -1 with "cause" in err (the file is
// damaged, foreign or unreadable; nothing in out needs freeing then).
int rank_reader_read(RankReader *rd, const char *path, bool want_config, bool want_eval, RankFile *out, char *err,
                     size_t errlen);
// Free the strings and eval arrays of a RankFile (not its rows).
void rank_file_clear(RankFile *f);
