// Finding the per-rank metrics files under the directories given to lsst-report
// and grouping them per job (one lsst-run output directory).
#pragma once
#include "report_job.h"

#include <stddef.h>

// True for "rank-<digits>.h5" (never the writer's "rank-N.h5.tmp.PID" leftovers).
bool report_is_rank_file(const char *name);

// Walk every directory in dirs (recursively; symbolic links to directories are not
// followed below the top) and append one Job per directory holding rank files:
// Job.label, dir, files (sorted by rank number), n_files. A file directly in a
// directory named "metrics" belongs to the job of that directory's parent.
// Jobs are sorted by label (version order: sp2 before sp16). 0, or -1 with a
// message in err (a directory that cannot be read).
int report_scan(Report *r, char *const *dirs, int n_dirs, char *err, size_t errlen);
