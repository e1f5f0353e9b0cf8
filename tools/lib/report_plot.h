// lsst-report's plots, drawn by gnuplot (Debian: gnuplot-nox) as SVG: the whole set
// of plots is one gnuplot script run once. Each SVG's ids are prefixed so many
// plots can be inlined into one HTML page without their <defs> colliding.
#pragma once
#include "report_job.h"

#include <stddef.h>
#include <stdio.h>

typedef struct {
    char *name;      // file stem, unique in the report: "job-3-bpc"
    char *caption;   // what it shows
    char *svg;       // rendered SVG (no XML prologue), NULL until rendered or if that failed
} Plot;

typedef struct {
    Plot *plots;
    int n;
    FILE *script;    // the gnuplot script being built (open_memstream)
    char *script_text;
    size_t script_len;
    char *tmpdir;    // where gnuplot writes the SVG files
} PlotSet;

void plot_init(PlotSet *ps);
void plot_free(PlotSet *ps);

// Queue plots; each returns the plot's index, or -1 when there is nothing to draw.
int plot_job_bpc(PlotSet *ps, const Job *j, int job_index);        // train (loss / ln 2) and valid/test bpc vs step
int plot_job_step_time(PlotSet *ps, const Job *j, int job_index);  // T_s vs step
int plot_job_ranks(PlotSet *ps, const Job *j, int job_index);      // per-rank mean t_step, t_compute, t_comm
int plot_all_bpc(PlotSet *ps, const Report *r);                    // train bpc of every job (2..12 jobs)
int plot_scaling(PlotSet *ps, const Report *r, bool efficiency);   // speedup or parallel efficiency vs ranks

// Run gnuplot on the queued script (binary: $LSST_GNUPLOT, default "gnuplot") and
// load every SVG. 0, or -1 with the reason in err (then no plot has an svg).
int plot_render(PlotSet *ps, char *err, size_t errlen);

// Copy svg to out with every id (and reference to one) prefixed by "prefix": for
// inlining several gnuplot SVGs into one page. malloc'd. Drops an <?xml ...?> prologue.
char *plot_prefix_svg_ids(const char *svg, const char *prefix);
