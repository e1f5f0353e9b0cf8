// See report_plot.h. Data goes into the script as gnuplot datablocks ($name << EOD),
// so gnuplot reads nothing but the script; text (job labels) is passed as single-
// quoted strings with the quotes doubled, and `noenhanced` keeps it literal.
#include "report_plot.h"

#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_POINTS 2000      // longer series are averaged into this many buckets
#define MAX_OVERLAY_JOBS 12  // plot_all_bpc draws at most this many jobs

extern char **environ;

void plot_init(PlotSet *ps) {
    memset(ps, 0, sizeof *ps);
    ps->script = open_memstream(&ps->script_text, &ps->script_len);
    if (!ps->script) lsst_die(EXIT_RUNTIME, "out of memory starting the plot script");
    fprintf(ps->script, "set terminal svg size 760,330 font 'Helvetica,12' noenhanced background rgb 'white'\n"
                        "set encoding utf8\n");
    // A palette that stays apart on white and in print (matplotlib's tab10); linetypes survive `reset`.
    static const char *const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                         "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
    for (int i = 0; i < 10; i++) fprintf(ps->script, "set linetype %d lc rgb '%s'\n", i + 1, colors[i]);
}

void plot_free(PlotSet *ps) {
    if (ps->script) fclose(ps->script);
    free(ps->script_text);
    for (int i = 0; i < ps->n; i++) {
        free(ps->plots[i].name);
        free(ps->plots[i].caption);
        free(ps->plots[i].svg);
    }
    free(ps->plots);
    if (ps->tmpdir) rm_rf(ps->tmpdir);
    free(ps->tmpdir);
    memset(ps, 0, sizeof *ps);
}

// A gnuplot single-quoted string literal.
static void put_quoted(FILE *f, const char *s) {
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'') fputc('\'', f);
        if (*s == '\n' || *s == '\r') fputc(' ', f);
        else fputc(*s, f);
    }
    fputc('\'', f);
}

// Start plot number ps->n: output file and a clean state.
static int begin(PlotSet *ps, char *name, char *caption) {
    ps->plots = xrealloc(ps->plots, (size_t)(ps->n + 1) * sizeof *ps->plots);
    ps->plots[ps->n] = (Plot){name, caption, NULL};
    fprintf(ps->script, "\n# plot %d: %s\nreset\nset output '%d.svg'\nset grid\nset key outside right top\n", ps->n,
            name, ps->n);
    return ps->n++;
}

// x[i], y[i] as datablock $name; when n > MAX_POINTS, bucket means (x: mean of the bucket too).
static void datablock_xy(FILE *f, const char *name, const double *x, const double *y, int64_t n) {
    fprintf(f, "$%s << EOD\n", name);
    int64_t buckets = n > MAX_POINTS ? MAX_POINTS : n;
    for (int64_t b = 0; b < buckets; b++) {
        int64_t lo = b * n / buckets, hi = (b + 1) * n / buckets;
        double sx = 0, sy = 0;
        int64_t k = 0;
        for (int64_t i = lo; i < hi; i++) {
            if (isnan(y[i]) || isnan(x[i])) continue;
            sx += x[i], sy += y[i], k++;
        }
        if (k) fprintf(f, "%.9g %.9g\n", sx / (double)k, sy / (double)k);
    }
    fputs("EOD\n", f);
}

int plot_job_bpc(PlotSet *ps, const Job *j, int job_index) {
    if (j->n_loss == 0 && j->n_valid == 0 && j->n_test == 0) return -1;
    int id = begin(ps, xasprintf("job-%d-bpc", job_index + 1), xasprintf("%s: bits per character", j->label));
    FILE *f = ps->script;
    int64_t n = j->n_loss;
    double *x = xmalloc((size_t)(n ? n : 1) * sizeof *x), *y = xmalloc((size_t)(n ? n : 1) * sizeof *y);
    for (int64_t i = 0; i < n; i++) x[i] = (double)j->loss_step[i], y[i] = j->loss[i] / M_LN2;
    datablock_xy(f, "train", x, y, n);
    free(x);
    free(y);
    const EvalPoint *sets[2] = {j->valid, j->test};
    int64_t counts[2] = {j->n_valid, j->n_test};
    for (int s = 0; s < 2; s++) {
        fprintf(f, "$%s << EOD\n", s ? "test" : "valid");
        for (int64_t i = 0; i < counts[s]; i++) fprintf(f, "%lld %.9g\n", (long long)sets[s][i].step, sets[s][i].bpc);
        fputs("EOD\n", f);
    }
    fputs("set xlabel 'step'\nset ylabel 'bits per character'\nplot ", f);
    const char *sep = "";
    if (n) fputs("$train using 1:2 with lines lw 1.5 title 'train (loss / ln 2)'", f), sep = ", ";
    if (j->n_valid) fprintf(f, "%s$valid using 1:2 with linespoints pt 7 ps 0.6 lw 1.5 title 'valid'", sep), sep = ", ";
    if (j->n_test) fprintf(f, "%s$test using 1:2 with points pt 5 ps 0.9 title 'test'", sep);
    fputc('\n', f);
    return id;
}

int plot_job_step_time(PlotSet *ps, const Job *j, int job_index) {
    if (j->n_steps == 0) return -1;
    int id = begin(ps, xasprintf("job-%d-step-time", job_index + 1),
                   xasprintf("%s: step time (max over ranks) per step", j->label));
    FILE *f = ps->script;
    int64_t n = j->n_steps;
    double *x = xmalloc((size_t)n * sizeof *x), *y = xmalloc((size_t)n * sizeof *y);
    for (int64_t i = 0; i < n; i++) x[i] = (double)j->step[i], y[i] = 1e3 * j->step_time[i];
    datablock_xy(f, "t", x, y, n);
    free(x);
    free(y);
    fprintf(f, "set xlabel 'step'\nset ylabel 'ms'\nset yrange [0:*]\n"
               "plot $t using 1:2 with %s lw 1.2 title 'step time%s', %.9g title 'mean' with lines dt 2 lw 1.5\n",
            n <= 60 ? "linespoints pt 7 ps 0.5" : "lines", n > MAX_POINTS ? " (bucket means)" : "", 1e3 * j->t_mean);
    return id;
}

int plot_job_ranks(PlotSet *ps, const Job *j, int job_index) {
    if (j->n_ranks == 0 || j->n_steps == 0) return -1;
    int id = begin(ps, xasprintf("job-%d-ranks", job_index + 1),
                   xasprintf("%s: mean time per step, per rank", j->label));
    FILE *f = ps->script;
    fputs("$r << EOD\n", f);
    for (int r = 0; r < j->n_ranks; r++) {
        const RankStats *s = &j->ranks[r];
        if (isnan(s->t_step_mean)) continue;
        fprintf(f, "%d %.9g %.9g %.9g\n", s->rank, 1e3 * s->t_step_mean, 1e3 * s->t_compute_mean,
                1e3 * s->t_comm_mean);
    }
    fputs("EOD\n", f);
    const char *style = j->n_ranks <= 64 ? "linespoints pt 7 ps 0.6" : "lines";
    fprintf(f, "set xlabel 'rank'\nset ylabel 'ms per step'\nset yrange [0:*]\n%s"
               "plot $r using 1:2 with %s lw 1.5 title 't_step', $r using 1:3 with %s lw 1.5 title 't_compute', "
               "$r using 1:4 with %s lw 1.5 title 't_comm'\n",
            j->n_ranks <= 16 ? "set xtics 1\n" : "", style, style, style);
    return id;
}

int plot_all_bpc(PlotSet *ps, const Report *r) {
    int drawn = 0;
    for (int i = 0; i < r->n_jobs; i++) drawn += r->jobs[i].n_loss > 0;
    if (drawn < 2 || drawn > MAX_OVERLAY_JOBS) return -1;
    int id = begin(ps, xstrdup("all-bpc"), xstrdup("training bits per character (loss / ln 2) of every job"));
    FILE *f = ps->script;
    for (int i = 0; i < r->n_jobs; i++) {
        const Job *j = &r->jobs[i];
        if (!j->n_loss) continue;
        double *x = xmalloc((size_t)j->n_loss * sizeof *x), *y = xmalloc((size_t)j->n_loss * sizeof *y);
        for (int64_t k = 0; k < j->n_loss; k++) x[k] = (double)j->loss_step[k], y[k] = j->loss[k] / M_LN2;
        char name[32];
        snprintf(name, sizeof name, "j%d", i);
        datablock_xy(f, name, x, y, j->n_loss);
        free(x);
        free(y);
    }
    fputs("set key outside right top\nset xlabel 'step'\nset ylabel 'bits per character'\nplot ", f);
    const char *sep = "";
    for (int i = 0; i < r->n_jobs; i++) {
        if (!r->jobs[i].n_loss) continue;
        fprintf(f, "%s$j%d using 1:2 with lines lw 1.5 title ", sep, i);
        put_quoted(f, r->jobs[i].label);
        sep = ", ";
    }
    fputc('\n', f);
    return id;
}

int plot_scaling(PlotSet *ps, const Report *r, bool efficiency) {
    if (r->n_series == 0) return -1;
    int id = begin(ps, xstrdup(efficiency ? "scaling-efficiency" : "scaling-speedup"),
                   xstrdup(efficiency ? "parallel efficiency vs ranks (1 = ideal)"
                                      : "speedup vs ranks, against the smallest run of each series"));
    FILE *f = ps->script;
    int max_ranks = 1, min_ranks = 1 << 30;
    for (int s = 0; s < r->n_series; s++) {
        const ScalingSeries *se = &r->series[s];
        fprintf(f, "$s%d << EOD\n", s);
        for (int i = 0; i < se->n; i++) {
            const Job *j = &r->jobs[se->jobs[i]];
            fprintf(f, "%d %.9g\n", j->world, efficiency ? se->efficiency[i] : se->speedup[i]);
            if (j->world > max_ranks) max_ranks = j->world;
            if (j->world < min_ranks) min_ranks = j->world;
        }
        fputs("EOD\n", f);
    }
    fprintf(f, "set logscale x 2\nset xrange [%g:%g]\nset xlabel 'ranks'\nset ylabel '%s'\n", min_ranks / 1.2,
            max_ranks * 1.2, efficiency ? "parallel efficiency" : "speedup");
    if (efficiency) fputs("set yrange [0:*]\n", f);
    else fputs("set logscale y 2\n", f);
    fputs("plot ", f);
    for (int s = 0; s < r->n_series; s++) {
        const Job *base = &r->jobs[r->series[s].jobs[0]];
        char *title = xasprintf("%s, %d-rank baseline", base->scheme ? base->scheme : "?", base->world);
        fprintf(f, "%s$s%d using 1:2 with linespoints pt 7 ps 0.8 lw 1.5 title ", s ? ", " : "", s);
        put_quoted(f, title);
        free(title);
        if (!efficiency)
            fprintf(f, ", (x >= %d ? x / %d.0 : 1/0) with lines dt 2 lc rgb 'gray40' title 'ideal (%d-rank baseline)'",
                    base->world, base->world, base->world);
    }
    if (efficiency) fputs(", 1 with lines dt 2 lc rgb 'gray40' title 'ideal'", f);
    fputc('\n', f);
    return id;
}

// ---- rendering ----

static bool starts(const char *s, const char *prefix) { return !strncmp(s, prefix, strlen(prefix)); }

char *plot_prefix_svg_ids(const char *svg, const char *prefix) {
    if (starts(svg, "<?xml")) {
        const char *end = strstr(svg, "?>");
        if (end) svg = end + 2;
        while (*svg == '\n' || *svg == '\r') svg++;
    }
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f) lsst_die(EXIT_RUNTIME, "out of memory copying an SVG");
    static const char *const refs[] = {"href='#", "href=\"#", "url(#"};
    for (const char *p = svg; *p;) {
        // id='x' / id="x", as an attribute (after white space)
        if ((starts(p, "id='") || starts(p, "id=\"")) && p > svg && (p[-1] == ' ' || p[-1] == '\t' || p[-1] == '\n')) {
            fprintf(f, "id=%c%s", p[3], prefix);
            p += 4;
            continue;
        }
        bool done = false;
        for (size_t k = 0; k < sizeof refs / sizeof refs[0] && !done; k++) {
            if (starts(p, refs[k])) {
                fprintf(f, "%s%s", refs[k], prefix);
                p += strlen(refs[k]);
                done = true;
            }
        }
        if (!done) fputc(*p++, f);
    }
    fclose(f);
    return out;
}

// The script file: a `cd` into dir (where the plots' relative output names land), then the plots.
static int write_script(const char *path, const char *dir, const char *script) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    bool ok = fprintf(f, "cd '%s'\n", dir) >= 0 && fputs(script, f) >= 0;
    int e = errno;
    if (fclose(f) != 0 && ok) ok = false, e = errno;
    errno = e ? e : EIO;
    return ok ? 0 : -1;
}

int plot_render(PlotSet *ps, char *err, size_t errlen) {
    if (ps->n == 0) return 0;
    if (fflush(ps->script) != 0) lsst_die(EXIT_RUNTIME, "out of memory building the plot script");
    const char *tmp = getenv("TMPDIR");
    char *tmpl = xasprintf("%s/lsst-report.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(tmpl)) {
        snprintf(err, errlen, "cannot create a temporary directory %s: %s", tmpl, strerror(errno));
        free(tmpl);
        return -1;
    }
    ps->tmpdir = tmpl;
    // Quotes in the directory name would end gnuplot's string: refuse them.
    if (strchr(tmpl, '\'')) {
        snprintf(err, errlen, "the temporary directory %s has a quote in its name", tmpl);
        return -1;
    }
    char *script_path = path_join(tmpl, "plots.gp"), *log_path = path_join(tmpl, "gnuplot.log");
    int rc = -1;
    if (write_script(script_path, tmpl, ps->script_text) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", script_path, strerror(errno));
        goto done;
    }
    const char *gnuplot = getenv("LSST_GNUPLOT");
    if (!gnuplot || !*gnuplot) gnuplot = "gnuplot";
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
    char *argv[] = {(char *)gnuplot, "-d", script_path, NULL};   // -d: no init files, default settings
    pid_t pid;
    int e = posix_spawnp(&pid, gnuplot, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (e != 0) {
        snprintf(err, errlen, "cannot run %s: %s (install gnuplot, e.g. apt-get install gnuplot-nox)", gnuplot,
                 strerror(e));
        goto done;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char *log = read_file(log_path, NULL);
        // gnuplot's message is the last non-empty lines of its output.
        char *tail = log ? log + strlen(log) : NULL;
        if (log) {
            while (tail > log && (tail[-1] == '\n' || tail[-1] == ' ')) *--tail = '\0';
            int lines = 0;
            while (tail > log && lines < 3) lines += *--tail == '\n';
            for (char *c = tail; *c; c++) if (*c == '\n') *c = ' ';
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 127) snprintf(err, errlen, "cannot run %s", gnuplot);
        else snprintf(err, errlen, "%s failed (status %d): %s", gnuplot, WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                      tail && *tail ? tail : "no message");
        free(log);
        goto done;
    }
    for (int i = 0; i < ps->n; i++) {
        char *name = xasprintf("%s/%d.svg", tmpl, i);
        char *svg = read_file(name, NULL);
        free(name);
        if (!svg) {
            snprintf(err, errlen, "gnuplot wrote no %d.svg (%s)", i, ps->plots[i].name);
            for (int k = 0; k < i; k++) free(ps->plots[k].svg), ps->plots[k].svg = NULL;
            goto done;
        }
        char *prefix = xasprintf("p%d-", i);
        ps->plots[i].svg = plot_prefix_svg_ids(svg, prefix);
        free(prefix);
        free(svg);
    }
    rc = 0;
done:
    free(script_path);
    free(log_path);
    return rc;
}
