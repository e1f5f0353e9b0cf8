// Reading the rank files of one job and computing its numbers (report_job.h).
#pragma once
#include "report_job.h"
#include "report_read.h"

// Read every file of j (j->files), fill the configuration, per-rank statistics,
// timed steps, curves and summary numbers. A file that cannot be used (damaged,
// not a metrics file, from another run of a different size, a rank seen twice)
// is skipped: a warning naming it on stderr and an entry in j->skipped.
// Steps <= warmup are left out of the timing statistics.
void report_load_job(Job *j, RankReader *rd, int warmup);
