// lsst-report: per-rank HDF5 metrics -> report.md, report.html (self-contained, with
// gnuplot plots), summary.csv and summary.h5 (ARCHITECTURE §6).
//
//   scan    find every rank-*.h5 under the directories, one job per output directory
//   load    read each job's rank files once (SWMR read, one H5Dread per file); a
//           damaged file is skipped with a warning naming it
//   cross   scaling series and lss / megatron-sp pairs across jobs
//   build   the document and the plot script; gnuplot draws every plot in one run
//   write   each output atomically (temp + rename) into OUT (default RUNDIR/report)
#include "common.h"
#include "report_content.h"
#include "report_doc.h"
#include "report_load.h"
#include "report_plot.h"
#include "report_read.h"
#include "report_scan.h"
#include "report_stats.h"
#include "report_summary.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
    fputs("usage: lsst-report [options] RUNDIR|OUTPUT_DIR...\n"
          "\n"
          "Read every metrics/rank-*.h5 under the directories (one lsst-run output, or a whole workflow run\n"
          "with many jobs) and write report.md, report.html (self-contained, plots by gnuplot), summary.csv\n"
          "and summary.h5: per job the configuration, step time (mean, median, p99 over steps of the max over\n"
          "ranks), tokens/s, communication share and bytes, peak memory per rank, rank imbalance and the\n"
          "slowest ranks, loss and bpc curves; across jobs scaling tables and lss / megatron-sp ratios.\n"
          "Files of a run still writing are read as far as flushed; a damaged rank file is skipped with a warning.\n"
          "\n"
          "  -o, --output DIR   where the report goes (default: RUNDIR/report; required with several directories)\n"
          "      --warmup N     leave steps 1..N out of the timing statistics (default 0)\n"
          "  -h, --help         this help\n"
          "      --version      version and git commit\n"
          "\n"
          "Prints the output directory on stdout. Exit status: 0 report written (also when some rank files were\n"
          "skipped), 1 nothing readable or a write failed, 2 usage or a directory that does not exist.\n"
          "gnuplot draws the plots ($LSST_GNUPLOT picks the binary); without it the report has no plots.\n"
          "\n"
          "example:\n"
          "  lsst-report runs/seq-scaling/20261126-101500-4f2a --warmup 5\n"
          "  lsst-report runs/lss-2x1 runs/megatron-2x1 -o reports/lss-vs-megatron\n",
          f);
}

// Write text produced by fn atomically at dir/name; dies on failure.
typedef int (*WriteFn)(const void *ctx, FILE *f);
static void write_atomic(const char *dir, const char *name, WriteFn fn, const void *ctx) {
    char *path = path_join(dir, name);
    AtomicFile af;
    if (atomic_open(&af, path) != 0) lsst_die(EXIT_RUNTIME, "%s: cannot create: %s", path, strerror(errno));
    if (fn(ctx, af.fp) != 0) {
        int e = errno;
        atomic_abort(&af);
        lsst_die(EXIT_RUNTIME, "%s: cannot write: %s", path, strerror(e ? e : EIO));
    }
    if (atomic_commit(&af) != 0) lsst_die(EXIT_RUNTIME, "%s: cannot write: %s", path, strerror(errno));
    free(path);
}

typedef struct {
    const Report *r;
    const Doc *doc;
    const PlotSet *ps;
} Outputs;

static int put_csv(const void *ctx, FILE *f) { return report_write_csv(((const Outputs *)ctx)->r, f); }
static int put_md(const void *ctx, FILE *f) {
    const Outputs *o = ctx;
    return doc_write_markdown(o->doc, o->ps, "plots", f);
}
static int put_html(const void *ctx, FILE *f) {
    const Outputs *o = ctx;
    char *title = xasprintf("lsst report: %s", o->r->title);
    int rc = doc_write_html(o->doc, o->ps, title, f);
    free(title);
    return rc;
}

// OUT/plots/*.svg: written into a fresh directory that then replaces the old one,
// so no plot of an earlier report stays behind.
static void write_plots(const char *out, const PlotSet *ps) {
    char *final = path_join(out, "plots");
    char *tmp = xasprintf("%s.tmp.%ld", final, (long)getpid()), *old = xasprintf("%s.old.%ld", final, (long)getpid());
    rm_rf(tmp);
    if (mkdir_p(tmp, 0755) != 0) lsst_die(EXIT_RUNTIME, "%s: cannot create: %s", tmp, strerror(errno));
    for (int i = 0; i < ps->n; i++) {   // synced, not renamed: the directory is published whole
        if (!ps->plots[i].svg) continue;
        char *path = xasprintf("%s/%s.svg", tmp, ps->plots[i].name);
        if (write_new_file(path, ps->plots[i].svg, strlen(ps->plots[i].svg), 0666) != 0) {
            int e = errno;
            rm_rf(tmp);   // no partial plots left behind
            lsst_die(EXIT_RUNTIME, "%s: cannot write: %s", path, strerror(e));
        }
        free(path);
    }
    char *leftover = NULL, err[1024];
    int rc = replace_dir(tmp, final, old, true, &leftover, err, sizeof err);
    if (leftover) rm_rf(leftover);   // the old plots, or the new ones when they could not go in
    if (rc != 0) lsst_die(EXIT_RUNTIME, "%s", err);
    free(leftover);
    free(final);
    free(tmp);
    free(old);
}

static void write_summary_h5(const char *out, const Report *r) {
    char *path = path_join(out, "summary.h5"), *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
    char err[1024];
    if (report_write_h5(r, tmp, err, sizeof err) != 0) {
        unlink(tmp);
        lsst_die(EXIT_RUNTIME, "%s", err);
    }
    if (commit_tmp_file(tmp, path, err, sizeof err) < 0) lsst_die(EXIT_RUNTIME, "%s", err);
    free(path);
    free(tmp);
}

int main(int argc, char **argv) {
    lsst_prog = "lsst-report";
    enum { OPT_VERSION = 256, OPT_WARMUP };
    static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                         {"warmup", required_argument, NULL, OPT_WARMUP},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, OPT_VERSION},
                                         {NULL, 0, NULL, 0}};
    const char *out = NULL;
    int warmup = 0, c;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case OPT_WARMUP: {
            char *end;
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (errno || *end || end == optarg || v < 0 || v > INT_MAX)
                lsst_usage_error("--warmup %s: expected a number of steps >= 0", optarg);
            warmup = (int)v;
            break;
        }
        case 'h': usage(stdout); return EXIT_OK;
        case OPT_VERSION: lsst_print_version(); return EXIT_OK;
        default: fputs("Try 'lsst-report --help'.\n", stderr); return EXIT_USAGE;
        }
    }
    int n_dirs = argc - optind;
    char **dirs = argv + optind;
    if (n_dirs == 0) lsst_usage_error("%s", "no run directory given (usage: lsst-report RUNDIR|OUTPUT_DIR... [-o OUT])");
    for (int i = 0; i < n_dirs; i++) {
        if (!is_dir(dirs[i]))
            lsst_die(EXIT_USAGE, "%s: %s", dirs[i], path_exists(dirs[i]) ? "not a directory" : "no such directory");
    }
    char *out_dir = out ? xstrdup(out) : NULL;
    if (!out_dir) {
        if (n_dirs > 1) lsst_usage_error("%s", "several directories given: say where the report goes with -o OUT");
        out_dir = path_join(dirs[0], "report");
    }

    Report r = {.warmup = warmup};
    char err[1024];
    if (report_scan(&r, dirs, n_dirs, err, sizeof err) != 0) lsst_die(EXIT_RUNTIME, "%s", err);
    if (r.n_jobs == 0) lsst_die(EXIT_RUNTIME, "no metrics/rank-*.h5 under %s%s", dirs[0], n_dirs > 1 ? " (or the other directories)" : "");
    r.title = n_dirs == 1 ? xstrdup(dirs[0]) : xasprintf("%d directories", n_dirs);

    RankReader *rd = rank_reader_new();
    for (int i = 0; i < r.n_jobs; i++) {
        report_load_job(&r.jobs[i], rd, warmup);
        r.files_read += r.jobs[i].n_ranks;
        r.files_skipped += r.jobs[i].n_skipped;
    }
    rank_reader_free(rd);
    if (r.files_read == 0)
        lsst_die(EXIT_RUNTIME, "no readable rank file (%lld skipped, see the warnings above)", (long long)r.files_skipped);
    report_cross(&r);

    Doc doc = {0};
    PlotSet ps;
    plot_init(&ps);
    report_build(&r, &doc, &ps);
    if (plot_render(&ps, err, sizeof err) != 0) lsst_warn("plots not drawn: %s", err);

    if (mkdir_p(out_dir, 0755) != 0) lsst_die(EXIT_RUNTIME, "%s: cannot create: %s", out_dir, strerror(errno));
    Outputs o = {&r, &doc, &ps};
    write_atomic(out_dir, "summary.csv", put_csv, &o);
    write_summary_h5(out_dir, &r);
    write_plots(out_dir, &ps);
    write_atomic(out_dir, "report.md", put_md, &o);
    write_atomic(out_dir, "report.html", put_html, &o);
    printf("%s\n", out_dir);

    doc_free(&doc);
    plot_free(&ps);
    report_free(&r);
    free(out_dir);
    return EXIT_OK;
}
