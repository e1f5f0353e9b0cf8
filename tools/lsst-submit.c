// lsst-submit: a workflow YAML + a site profile -> validated plan -> batch scripts from
// templates/ -> a run directory -> every job submitted at once, held, with native
// dependencies, then released; the journal records each id (fsync'd). ARCHITECTURE §5.
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "workflow.h"

extern char **environ;

static void usage(FILE *fp) {
    fprintf(fp,
            "usage: lsst-submit [--site NAME|FILE] [--set VAR=VALUE ...] [--out ROOT] [--dry-run] WORKFLOW.yaml\n"
            "       lsst-submit --resubmit RUNDIR [--dry-run]\n"
            "\n"
            "Validate a workflow, render one batch script per job from templates/, write the run\n"
            "directory and submit every job at once with scheduler dependencies (Slurm: sbatch --hold\n"
            "--dependency=afterok, then release; LSF: bsub -H -w done(), then bresume). On the local\n"
            "site the jobs run here, one after another, in dependency order.\n"
            "\n"
            "  -s, --site NAME|FILE  site profile: site/NAME.yaml of this lsst, or a file (default: local)\n"
            "  -S, --set VAR=VALUE   override a var of the workflow (repeatable)\n"
            "  -o, --out ROOT        where run directories go (default: ./runs)\n"
            "  -n, --dry-run         print the plan (DAG, jobs, node-hours) and every script; submit nothing\n"
            "  -r, --resubmit RUNDIR resubmit the failed/cancelled jobs of a run and everything after them,\n"
            "                        as a new attempt directory RUNDIR/attempt-N (earlier attempts stay)\n"
            "  -q, --quiet           no progress messages\n"
            "  -h, --help            this help\n"
            "      --version         version and git commit\n"
            "\n"
            "The last line on stdout is the run directory: ROOT/<workflow>/<yyyymmdd-HHMMSS>-<id>/\n"
            "(workflow.yaml, site.yaml, provenance.yaml, journal, <stage>/<point>/job.sh and outputs).\n"
            "Exit status: 0 submitted (local: every job completed), 1 runtime failure (a submission\n"
            "failed: everything submitted was cancelled), 2 invalid workflow, site or usage.\n"
            "\n"
            "example:\n"
            "  lsst-submit --site local workflows/quickstart.yaml\n"
            "  lsst-submit --site perlmutter --set steps=2000 --dry-run workflows/seq-scaling.yaml\n"
            "  run=$(lsst-submit --site slurm workflows/lss-vs-megatron.yaml | tail -n 1); lsst-status \"$run\"\n");
}

typedef struct {
    const char *site, *out, *resubmit, *workflow;
    char **sets;
    int nsets;
    bool dry_run, quiet;
} Args;

static int parse_args(int argc, char **argv, Args *a) {
    static const struct option opts[] = {{"site", required_argument, 0, 's'},     {"set", required_argument, 0, 'S'},
                                         {"out", required_argument, 0, 'o'},      {"dry-run", no_argument, 0, 'n'},
                                         {"resubmit", required_argument, 0, 'r'}, {"quiet", no_argument, 0, 'q'},
                                         {"help", no_argument, 0, 'h'},           {"version", no_argument, 0, 'V'},
                                         {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    a->sets = xcalloc((size_t)argc + 1, sizeof(char *));
    a->out = "runs";
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "s:S:o:nr:qh", opts, NULL)) != -1;) {
        switch (c) {
        case 's': a->site = optarg; break;
        case 'S': a->sets[a->nsets++] = optarg; break;
        case 'o': a->out = optarg; break;
        case 'n': a->dry_run = true; break;
        case 'r': a->resubmit = optarg; break;
        case 'q': a->quiet = true; break;
        case 'h': usage(stdout); return 1;
        case 'V': lsst_print_version(); return 1;
        default:
            if (optopt) lsst_error("option '-%c' %s (see --help)", optopt, strchr("sSor", optopt) ? "needs a value" : "is unknown");
            else lsst_error("unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
            return 2;
        }
    }
    int rest = argc - optind;
    if (a->resubmit) {
        if (rest || a->nsets || a->site) {
            lsst_error("--resubmit RUNDIR takes no workflow, --set or --site (the run's own are used)");
            return 2;
        }
        return 0;
    }
    if (rest != 1) {
        if (rest) lsst_error("expected one workflow file, got %d arguments", rest);
        else lsst_error("missing the workflow file (see --help)");
        return 2;
    }
    a->workflow = argv[optind];
    if (!a->site) a->site = "local";
    return 0;
}

static bool quiet;
#define PROGRESS(...)                                 \
    do {                                              \
        if (!quiet) {                                 \
            fprintf(stderr, "%s: ", lsst_prog);       \
            fprintf(stderr, __VA_ARGS__);             \
            fputc('\n', stderr);                      \
        }                                             \
    } while (0)

// ---- the run directory ----

// ROOT/<workflow>/<yyyymmdd-HHMMSS>-<6 hex>. SOURCE_DATE_EPOCH fixes the time, and with
// it the id (a hash of the resolved workflow and the time), so dry runs are reproducible.
static char *run_dir_name(const char *root, const Workflow *wf, const Site *site, int attempt_salt) {
    const char *sde = getenv("SOURCE_DATE_EPOCH");
    time_t now = sde && sde[0] ? (time_t)strtoll(sde, NULL, 10) : time(NULL);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", gmtime(&now));
    Sha256 *h = sha256_new();
    sha256_update(h, wf->name, strlen(wf->name));
    sha256_update(h, site->name, strlen(site->name));
    sha256_update(h, stamp, strlen(stamp));
    for (int i = 0; i < wf->nvars; i++) {
        sha256_update(h, wf->var_names[i], strlen(wf->var_names[i]) + 1);
        sha256_update(h, wf->var_values[i], strlen(wf->var_values[i]) + 1);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long salt[3] = {attempt_salt, sde && sde[0] ? 0 : (long)getpid(), sde && sde[0] ? 0 : ts.tv_nsec};
    sha256_update(h, salt, sizeof salt);
    char hex[65];
    sha256_final_hex(h, hex);
    return xasprintf("%s/%s/%s-%.6s", root, wf->name, stamp, hex);
}

static char *absolute(const char *path) {
    if (path[0] == '/') return xstrdup(path);
    char *cwd = getcwd(NULL, 0);
    char *p = path_join(cwd ? cwd : ".", path);
    free(cwd);
    // "./runs" -> "runs": keep the text tidy (no realpath: ROOT may not exist yet).
    for (char *q; (q = strstr(p, "/./"));) memmove(q, q + 2, strlen(q + 2) + 1);
    size_t n = strlen(p);
    if (n > 2 && !strcmp(p + n - 2, "/.")) p[n - 2] = '\0';
    return p;
}

// The files of a run directory are written inside its temporary directory, which is renamed
// into place whole (submit_run, replace_dir): a plain create + fsync of each file, and one fsync
// of each directory before the rename, is enough; no file needs its own rename. (Like atomic_commit,
// a failed directory fsync is not reported: the files in it are complete.)
static int write_new(const char *dir, const char *name, const char *text, size_t len, unsigned mode, char *err,
                     size_t errlen) {
    char *path = path_join(dir, name);
    int rc = write_new_file(path, text, len, mode);
    if (rc) snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
    free(path);
    return rc;
}

static int write_tree(const char *dir, const char *name, const YNode *root, const char *comment, char *err,
                      size_t errlen) {
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    if (!fp) lsst_die(EXIT_RUNTIME, "out of memory");
    fprintf(fp, "# %s\n", comment);
    yn_write(fp, root, 0);
    fclose(fp);
    int rc = write_new(dir, name, text, len, 0644, err, errlen);
    free(text);
    return rc;
}

// Everything a run directory holds before submission: the resolved inputs, the provenance,
// one directory per job with its script (array stages: the array driver too). Kept jobs of a
// resubmit become symlinks to their directory in an earlier attempt.
static int write_run_files(const char *dir, const Workflow *wf, const Site *site, const WfContext *cx,
                           const bool *selected, char **kept_dirs, int argc, char **argv, char *err, size_t errlen) {
    if (write_tree(dir, "workflow.yaml", wf->root, "the workflow as submitted: vars resolved (--set applied), defaults filled in",
                   err, errlen) ||
        write_tree(dir, "site.yaml", site->root, "the site profile as used", err, errlen) ||
        wf_write_provenance(dir, cx, argc, argv, err, errlen))
        return -1;
    for (int s = 0; s < wf->nstages; s++) {
        const WfStage *st = &wf->stages[s];
        char *sdir = path_join(dir, st->name);
        if (mkdir(sdir, 0755) && errno != EEXIST) {
            snprintf(err, errlen, "%s: cannot create: %s", sdir, strerror(errno));
            free(sdir);
            return -1;
        }
        bool any = false;
        for (int p = 0; p < st->npoints; p++) {
            int j = st->first_job + p;
            char point[16];
            snprintf(point, sizeof point, "%d", p);
            char *jdir = path_join(sdir, point);
            if (selected && !selected[j]) {
                if (kept_dirs && kept_dirs[j]) {
                    char *target = xasprintf("../../%s", kept_dirs[j]); // from <attempt>/<stage>/ to the base
                    int rc = symlink(target, jdir);
                    free(target);
                    if (rc) {
                        snprintf(err, errlen, "%s: cannot link to the earlier attempt: %s", jdir, strerror(errno));
                        free(jdir);
                        free(sdir);
                        return -1;
                    }
                }
                free(jdir);
                continue;
            }
            any = true;
            char *script = wf_render_job(wf, site, cx, j, err, errlen);
            int rc = script ? mkdir(jdir, 0755) : -1;
            if (script && rc) snprintf(err, errlen, "%s: cannot create: %s", jdir, strerror(errno));
            if (!rc) rc = write_new(jdir, "job.sh", script, strlen(script), 0755, err, errlen);
            if (!rc) fsync_dir(jdir);
            free(script);
            free(jdir);
            if (rc) {
                free(sdir);
                return -1;
            }
        }
        if (st->array && any && site->scheduler != SCHED_LOCAL) {
            char *array = wf_render_array(wf, site, cx, s, selected);
            int rc = write_new(sdir, "array.sh", array, strlen(array), 0755, err, errlen);
            free(array);
            if (rc) {
                free(sdir);
                return -1;
            }
        }
        fsync_dir(sdir);
        free(sdir);
    }
    return 0;   // DIR itself is synced by replace_dir in submit_run
}

// ---- submission to Slurm / LSF ----

typedef struct {
    char **ids;   // per job: its id ("123", or "123_4" for an array task); NULL: not submitted
    char **subs;  // the ids handed to the scheduler, in order (for release/cancel)
    int nsubs;
} Submitted;

static void cancel_all(Scheduler s, Submitted *sub, Journal *jr, const char *why) {
    if (!sub->nsubs) {
        lsst_error("%s; nothing had been submitted", why);
        return;
    }
    char err[1024];
    WfBuf list = {0};
    for (int i = 0; i < sub->nsubs; i++) wfb_addf(&list, "%s%s", i ? " " : "", sub->subs[i]);
    if (wf_cancel(s, sub->subs, sub->nsubs, err, sizeof err)) {
        lsst_error("%s; cancelling the %d job%s already submitted (%s) failed too: %s; cancel them by hand", why,
                   sub->nsubs, sub->nsubs == 1 ? "" : "s", list.s, err);
        journal_add(jr, "failed cancel of %s: %s", list.s, err);
    } else {
        lsst_error("%s; cancelled the %d job%s already submitted (%s)", why, sub->nsubs, sub->nsubs == 1 ? "" : "s",
                   list.s);
        journal_add(jr, "cancelled %s", list.s);
    }
    wfb_free(&list);
}

static int submit_all(const Workflow *wf, const Site *site, const char *dir, const bool *selected, Journal *jr) {
    Scheduler s = site->scheduler;
    Submitted sub = {.ids = xcalloc((size_t)wf->njobs + 1, sizeof(char *)),
                     .subs = xcalloc((size_t)wf->njobs + 1, sizeof(char *))};
    char **stage_ids = xcalloc((size_t)wf->nstages + 1, sizeof(char *)); // array stages: the array's id
    int *dep_jobs = xcalloc((size_t)wf->njobs + 1, sizeof(int));
    char **deps = xcalloc((size_t)wf->njobs + 1, sizeof(char *)); // their ids
    int *order = workflow_job_order(wf);
    char err[2048];
    int rc = 0;
    for (int k = 0; k < wf->njobs && !rc; k++) {
        int j = order[k];
        const WfJob *job = &wf->jobs[j];
        const WfStage *st = &wf->stages[job->stage];
        if (!wf_submits(wf, j, selected)) continue; // unselected, or an array's later task
        int ndeps = wf_job_deps(wf, j, selected, dep_jobs);
        for (int d = 0; d < ndeps; d++) { // submitted already: stages go in dependency order
            const WfJob *dep = &wf->jobs[dep_jobs[d]];
            deps[d] = wf->stages[dep->stage].array ? stage_ids[dep->stage] : sub.ids[dep_jobs[d]];
        }
        char *script = st->array ? xasprintf("%s/%s/array.sh", dir, st->name) : xasprintf("%s/%s/job.sh", dir, job->key);
        char *id = wf_submit_held(s, script, deps, ndeps, err, sizeof err);
        free(script);
        if (!id) {
            char *why = xasprintf("submitting %s failed: %s", st->array ? st->name : job->key, err);
            journal_add(jr, "failed %s", why);
            cancel_all(s, &sub, jr, why);
            free(why);
            rc = 1;
            break;
        }
        sub.subs[sub.nsubs++] = id;
        if (st->array) {
            stage_ids[job->stage] = id;
            for (int p = 0; p < st->npoints; p++) {
                int jj = st->first_job + p;
                if (selected && !selected[jj]) continue;
                sub.ids[jj] = xasprintf("%s_%d", id, p + (s == SCHED_LSF));
                if (journal_add(jr, "submit %s %d %s", st->name, p, sub.ids[jj])) rc = -1;
            }
        } else {
            sub.ids[j] = xstrdup(id);
            if (journal_add(jr, "submit %s %d %s", st->name, job->point, id)) rc = -1;
        }
        if (rc) {
            char *why = xasprintf("cannot record job %s in the journal: %s", id, strerror(errno));
            cancel_all(s, &sub, jr, why);
            free(why);
            rc = 1;
        }
    }
    if (!rc) {
        if (wf_release(s, sub.subs, sub.nsubs, err, sizeof err)) {
            char *why = xasprintf("releasing the held jobs failed: %s", err);
            journal_add(jr, "failed %s", why);
            cancel_all(s, &sub, jr, why);
            free(why);
            rc = 1;
        } else {
            journal_add(jr, "released");
            PROGRESS("submitted %d job%s to %s (site %s): %s .. %s, released", sub.nsubs, sub.nsubs == 1 ? "" : "s",
                     scheduler_name(s), site->name, sub.subs[0], sub.subs[sub.nsubs - 1]);
        }
    }
    for (int j = 0; j < wf->njobs; j++) free(sub.ids[j]);
    for (int i = 0; i < sub.nsubs; i++) free(sub.subs[i]);
    free(sub.ids);
    free(sub.subs);
    free(stage_ids);
    free(dep_jobs);
    free(deps);
    free(order);
    return rc;
}

// ---- the local site: run the jobs here ----

static volatile sig_atomic_t got_signal;
static volatile pid_t local_child;
static void on_signal(int sig) {
    got_signal = sig;
    if (local_child > 0) kill(local_child, sig);
}

static int run_local(const Workflow *wf, const char *dir, const bool *selected, char **states_in, Journal *jr) {
    int *order = workflow_job_order(wf);
    char **state = xcalloc((size_t)wf->njobs + 1, sizeof(char *)); // final state per job
    for (int j = 0; j < wf->njobs; j++)
        if (states_in && states_in[j]) state[j] = states_in[j];
    struct sigaction sa = {.sa_handler = on_signal}, old_int, old_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int total = 0, done = 0, bad = 0;
    for (int j = 0; j < wf->njobs; j++) total += !selected || selected[j];
    for (int k = 0; k < wf->njobs; k++) {
        int j = order[k];
        const WfJob *job = &wf->jobs[j];
        const WfStage *st = &wf->stages[job->stage];
        if (selected && !selected[j]) continue;
        done++;
        bool deps_ok = true;
        for (int a = 0; a < st->nafter && deps_ok; a++) {
            const WfStage *dep = &wf->stages[st->after[a]];
            for (int p = 0; p < dep->npoints; p++) {
                const char *ds = state[dep->first_job + p];
                deps_ok = deps_ok && ds && !strcmp(ds, "COMPLETED");
            }
        }
        if (!deps_ok || got_signal) {
            state[j] = "CANCELLED";
            journal_add(jr, "local %s %d CANCELLED 0 0", st->name, job->point);
            PROGRESS("[%d/%d] %s: CANCELLED (%s)", done, total, job->key,
                     got_signal ? "interrupted" : "a job it waits for did not complete");
            bad++;
            continue;
        }
        char *jdir = path_join(dir, job->key);
        char *out = path_join(jdir, "local.out");
        char *script = path_join(jdir, "job.sh");
        journal_add(jr, "start %s %d", st->name, job->point);
        PROGRESS("[%d/%d] %s%s%s%s: running (output: %s)", done, total, job->key, job->label[0] ? " (" : "",
                 job->label, job->label[0] ? ")" : "", out);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_APPEND, 0644);
        posix_spawn_file_actions_adddup2(&fa, 1, 2);
        char *argv[] = {"bash", script, NULL};
        pid_t pid;
        double t0 = now_seconds();
        int src = posix_spawnp(&pid, "bash", &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        const char *final = "FAILED";
        int exit_code = 127;
        if (src) {
            lsst_error("%s: cannot run bash: %s", script, strerror(src));
        } else {
            local_child = pid;
            // The stage's time limit holds here too: SIGTERM at the limit, SIGKILL 10 s later.
            bool timed_out = false;
            int status = 0;
            for (;;) {
                pid_t w = waitpid(pid, &status, WNOHANG);
                if (w == pid) break;
                if (w < 0 && errno != EINTR) break;
                double t = now_seconds() - t0;
                if (!timed_out && t > job->time) {
                    timed_out = true;
                    kill(pid, SIGTERM);
                } else if (timed_out && t > job->time + 10) {
                    kill(pid, SIGKILL);
                }
                struct timespec nap = {0, 20 * 1000 * 1000};
                nanosleep(&nap, NULL);
            }
            local_child = 0;
            exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            final = timed_out           ? "TIMEOUT"
                    : got_signal        ? "CANCELLED"
                    : exit_code == 0    ? "COMPLETED"
                                        : "FAILED";
        }
        long elapsed = (long)(now_seconds() - t0 + 0.5);
        state[j] = (char *)final;
        journal_add(jr, "local %s %d %s %d %ld", st->name, job->point, final, exit_code, elapsed);
        PROGRESS("[%d/%d] %s: %s (exit %d) after %ld s", done, total, job->key, final, exit_code, elapsed);
        if (strcmp(final, "COMPLETED")) {
            bad++;
            if (strcmp(final, "CANCELLED")) {
                // The end of its output says why: show it.
                char *text = read_file(out, NULL);
                if (text) {
                    size_t n = strlen(text);
                    const char *tail = text + n;
                    for (int lines = 0; tail > text && lines < 6; tail--)
                        if (tail[-1] == '\n' && tail != text + n) lines++;
                    fprintf(stderr, "%s: last lines of %s:\n%s", lsst_prog, out, tail);
                    free(text);
                }
            }
        }
        free(jdir);
        free(out);
        free(script);
    }
    journal_add(jr, "end");
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    free(order);
    free(state);
    if (bad) lsst_error("%d of %d job%s did not complete (see lsst-status %s)", bad, total, total == 1 ? "" : "s", dir);
    return bad ? 1 : 0;
}

// ---- main flows ----

static int dry_run(const Workflow *wf, const Site *site, const WfContext *cx, const bool *selected) {
    wf_print_plan(stdout, wf, site, cx->run_dir, selected);
    char err[2048];
    for (int s = 0; s < wf->nstages; s++) {
        const WfStage *st = &wf->stages[s];
        if (!st->array || site->scheduler == SCHED_LOCAL) continue;
        char *array = wf_render_array(wf, site, cx, s, selected);
        printf("===== %s/array.sh =====\n%s", st->name, array);
        free(array);
    }
    for (int j = 0; j < wf->njobs; j++) {
        if (selected && !selected[j]) continue;
        char *script = wf_render_job(wf, site, cx, j, err, sizeof err);
        if (!script) lsst_die(EXIT_USAGE, "%s", err);
        printf("===== %s/job.sh =====\n%s", wf->jobs[j].key, script);
        free(script);
    }
    printf("dry run: nothing written, nothing submitted\n");
    return 0;
}

// Write the run directory (under a temporary name, renamed into place when complete),
// then submit (or run, on the local site). Prints the run directory last.
static int submit_run(const Workflow *wf, const Site *site, WfContext *cx, const char *final_dir, const bool *selected,
                      char **kept_ids, char **kept_dirs, char **kept_states, int argc, char **argv) {
    char err[2048];
    char *parent = path_dirname(final_dir);
    if (mkdir_p(parent, 0755)) lsst_die(EXIT_RUNTIME, "%s: cannot create: %s", parent, strerror(errno));
    char *tmp = xasprintf("%s/.%s.tmp.%d", parent, path_basename(final_dir), (int)getpid());
    if (mkdir(tmp, 0755)) lsst_die(EXIT_RUNTIME, "%s: cannot create: %s", tmp, strerror(errno));
    cx->run_dir = final_dir; // scripts name the final path
    if (write_run_files(tmp, wf, site, cx, selected, kept_dirs, argc, argv, err, sizeof err)) {
        rm_rf(tmp);
        lsst_die(EXIT_RUNTIME, "%s", err);
    }
    char *leftover = NULL;   // replace_dir: never over an existing run directory (RENAME_NOREPLACE)
    if (replace_dir(tmp, final_dir, NULL, false, &leftover, err, sizeof err)) {
        if (leftover) rm_rf(leftover);
        lsst_die(EXIT_RUNTIME, "%s", err);
    }
    free(leftover);
    free(tmp);
    free(parent);

    char *jpath = path_join(final_dir, "journal");
    Journal jr;
    if (journal_open(&jr, jpath)) lsst_die(EXIT_RUNTIME, "%s: cannot create: %s", jpath, strerror(errno));
    free(jpath);
    int rc = journal_add(&jr, "lsst-journal 1") || journal_add(&jr, "workflow %s", wf->name) ||
             journal_add(&jr, "site %s", site->name) || journal_add(&jr, "scheduler %s", scheduler_name(site->scheduler)) ||
             journal_add(&jr, "attempt %d", cx->attempt) || journal_add(&jr, "workflow_dir %s", wf->dir);
    for (int j = 0; j < wf->njobs && !rc; j++) {
        const WfJob *job = &wf->jobs[j];
        const char *stage = wf->stages[job->stage].name;
        if (!selected || selected[j])
            rc = journal_add(&jr, "job %s %d%s%s", stage, job->point, job->label[0] ? " " : "", job->label);
        else if (kept_dirs && kept_dirs[j])
            rc = journal_add(&jr, "kept %s %d %s %s", stage, job->point, kept_ids[j] ? kept_ids[j] : "-", kept_dirs[j]);
    }
    if (rc) lsst_die(EXIT_RUNTIME, "%s/journal: cannot write: %s", final_dir, strerror(errno));
    PROGRESS("run directory %s", final_dir);
    if (site->scheduler == SCHED_LOCAL) rc = run_local(wf, final_dir, selected, kept_states, &jr);
    else rc = submit_all(wf, site, final_dir, selected, &jr);
    journal_close(&jr);
    fflush(stderr);
    printf("%s\n", final_dir);
    return rc;
}

// The jobs of the newest attempt that did not complete, and every job after them.
static int resubmit(const char *run_arg, const Args *a, WfContext *cx, int argc, char **argv) {
    char err[2048];
    char *base = NULL;
    int attempt = 1;
    char *latest = wf_latest_attempt(run_arg, &base, &attempt);
    char *jpath = path_join(latest, "journal");
    JournalData jd;
    if (!is_dir(latest) || journal_read(&jd, jpath, err, sizeof err))
        lsst_die(EXIT_USAGE, "--resubmit %s: not a run directory (%s)", run_arg,
                 is_dir(latest) ? err : "no such directory");
    free(jpath);
    char *wpath = path_join(latest, "workflow.yaml"), *spath = path_join(latest, "site.yaml");
    Site site;
    Workflow wf;
    if (site_load(&site, spath, cx->lsst_root, err, sizeof err)) lsst_die(EXIT_USAGE, "%s", err);
    if (workflow_load(&wf, wpath, NULL, 0, &site, err, sizeof err)) lsst_die(EXIT_USAGE, "%s", err);
    if (jd.workflow_dir) {
        free(wf.dir);
        wf.dir = xstrdup(jd.workflow_dir);
    }
    // States of the newest attempt's jobs.
    JobState *js = xcalloc((size_t)jd.njobs + 1, sizeof *js);
    if (wf_journal_states(&jd, js, err, sizeof err) < 0)
        lsst_die(EXIT_RUNTIME, "cannot ask %s for the states of the jobs: %s", jd.scheduler, err);
    // Map journal entries to planned jobs; decide what reruns.
    bool *selected = xcalloc((size_t)wf.njobs + 1, sizeof(bool));
    char **kept_dirs = xcalloc((size_t)wf.njobs + 1, sizeof(char *)), **kept_ids = xcalloc((size_t)wf.njobs + 1, sizeof(char *));
    char **kept_states = xcalloc((size_t)wf.njobs + 1, sizeof(char *));
    bool *stage_bad = xcalloc((size_t)wf.nstages + 1, sizeof(bool));
    int active = 0;
    WfBuf active_list = {0};
    const char *rel_latest = strcmp(latest, base) ? path_basename(latest) : NULL;
    for (int j = 0; j < wf.njobs; j++) {
        const WfJob *job = &wf.jobs[j];
        char point[16];
        snprintf(point, sizeof point, "%d", job->point);
        int found = journal_find(&jd, wf.stages[job->stage].name, point, j); // job lines are in plan order
        WfStateClass cls = found < 0 ? WST_BAD : wf_state_class(js[found].state);
        if (cls == WST_ACTIVE) {
            active++;
            wfb_addf(&active_list, "%s%s (%s %s)", active > 1 ? ", " : "", job->key, jd.jobs[found].id ? jd.jobs[found].id : "-",
                     js[found].state);
        }
        if (cls != WST_OK) {
            selected[j] = true;
            stage_bad[job->stage] = true;
        } else {
            JournalJob *jj = &jd.jobs[found];
            kept_dirs[j] = jj->kept_dir ? xstrdup(jj->kept_dir)
                           : rel_latest ? xasprintf("%s/%s", rel_latest, job->key)
                                        : xstrdup(job->key);
            kept_ids[j] = jj->id ? xstrdup(jj->id) : NULL;
            kept_states[j] = "COMPLETED";
        }
    }
    if (active)
        lsst_die(EXIT_RUNTIME, "%d job%s of %s still pending or running: %s; wait for them (lsst-status --watch) or "
                               "cancel them first",
                 active, active == 1 ? " is" : "s are", latest, active_list.s);
    // Everything after a stage that reruns reruns too (stages in dependency order).
    for (int k = 0; k < wf.nstages; k++) {
        const WfStage *st = &wf.stages[wf.order[k]];
        bool after_rerun = false;
        for (int a = 0; a < st->nafter; a++) after_rerun = after_rerun || stage_bad[st->after[a]];
        if (!after_rerun) continue;
        stage_bad[wf.order[k]] = true;
        for (int j = st->first_job; j < st->first_job + st->npoints; j++) {
            selected[j] = true;
            free(kept_dirs[j]);
            free(kept_ids[j]);
            kept_dirs[j] = kept_ids[j] = NULL;
            kept_states[j] = NULL;
        }
    }
    int nsel = 0;
    for (int j = 0; j < wf.njobs; j++) nsel += selected[j];
    int rc = 0;
    if (!nsel) {
        PROGRESS("nothing to resubmit: all %d jobs of %s completed", wf.njobs, latest);
        printf("%s\n", latest);
    } else {
        char *next = xasprintf("%s/attempt-%d", base, attempt + 1);
        if (path_exists(next)) lsst_die(EXIT_RUNTIME, "%s exists already; an attempt is never overwritten", next);
        PROGRESS("resubmitting %d of %d jobs (failed, cancelled, or after one that was) as attempt %d", nsel, wf.njobs,
                 attempt + 1);
        cx->attempt = attempt + 1;
        if (a->dry_run) {
            cx->run_dir = next;
            rc = dry_run(&wf, &site, cx, selected);
        } else {
            rc = submit_run(&wf, &site, cx, next, selected, kept_ids, kept_dirs, kept_states, argc, argv);
        }
        free(next);
    }
    for (int j = 0; j < wf.njobs; j++) {
        free(kept_dirs[j]);
        free(kept_ids[j]);
    }
    free(kept_dirs);
    free(kept_ids);
    free(kept_states);
    free(selected);
    free(stage_bad);
    free(js);
    wfb_free(&active_list);
    free(wpath);
    free(spath);
    free(latest);
    free(base);
    journal_data_free(&jd);
    workflow_free(&wf);
    site_free(&site);
    return rc;
}

int main(int argc, char **argv) {
    lsst_prog = "lsst-submit";
    Args a;
    int prc = parse_args(argc, argv, &a);
    if (prc) {
        free(a.sets);
        return prc == 1 ? EXIT_OK : EXIT_USAGE;
    }
    quiet = a.quiet;
    char err[2048];
    WfContext cx = {.attempt = 1};
    char *root = NULL, *bin_dir = NULL;
    if (wf_locate(&root, &bin_dir, err, sizeof err)) lsst_die(EXIT_RUNTIME, "%s", err);
    cx.lsst_root = root;
    cx.bin_dir = bin_dir;
    int rc;
    if (a.resubmit) {
        rc = resubmit(a.resubmit, &a, &cx, argc, argv);
    } else {
        Site site;
        Workflow wf;
        if (site_load(&site, a.site, root, err, sizeof err)) lsst_die(EXIT_USAGE, "%s", err);
        if (workflow_load(&wf, a.workflow, a.sets, a.nsets, &site, err, sizeof err)) lsst_die(EXIT_USAGE, "%s", err);
        char *out = absolute(a.out);
        // The run directory appears in #SBATCH/#BSUB lines, which have no quoting.
        if (site.scheduler != SCHED_LOCAL && !wf_safe_word(out, "/+@=,:~"))
            lsst_die(EXIT_USAGE, "--out %s: a run directory for a batch scheduler may hold letters, digits and "
                                 "_ . - / + @ = , : ~ only (it is written into scheduler directives)",
                     out);
        char *dir = NULL;
        for (int salt = 0; salt < 100; salt++) {
            free(dir);
            dir = run_dir_name(out, &wf, &site, salt);
            if (!path_exists(dir)) break;
        }
        if (a.dry_run) {
            cx.run_dir = dir;
            rc = dry_run(&wf, &site, &cx, NULL);
        } else {
            rc = submit_run(&wf, &site, &cx, dir, NULL, NULL, NULL, NULL, argc, argv);
        }
        free(dir);
        free(out);
        workflow_free(&wf);
        site_free(&site);
    }
    free(root);
    free(bin_dir);
    free(a.sets);
    return rc;
}
