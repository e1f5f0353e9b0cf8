// lsst-report's machine-readable outputs: summary.csv (one row per job) and
// summary.h5 (the same table plus per-job step times, curves and per-rank numbers).
#pragma once
#include "report_job.h"

#include <stddef.h>
#include <stdio.h>

// The CSV columns, in order (a contract for scripts reading summary.csv).
extern const char *const REPORT_CSV_COLUMNS[];
extern const int REPORT_CSV_NCOLUMNS;

// RFC 4180: one header line, one line per job; numbers with 9 significant digits,
// empty fields for undefined values (NaN). 0, or -1 on a write error.
int report_write_csv(const Report *r, FILE *f);
// Quote a CSV field when needed (comma, quote, newline); exposed for the tests.
void report_put_csv_field(FILE *f, const char *s);

// summary.h5 at path (the caller renames it into place). 0, or -1 with a message.
int report_write_h5(const Report *r, const char *path, char *err, size_t errlen);
