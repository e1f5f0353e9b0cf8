// lsst-status: the state of every job of a run, from its journal plus one batched
// scheduler query (sacct; without accounting scontrol, then sacct -c). ARCHITECTURE §5.
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "workflow.h"

enum { MIN_INTERVAL = 2, DEFAULT_INTERVAL = 30 };

static void usage(FILE *fp) {
    fprintf(fp,
            "usage: lsst-status [--watch] [--interval SECONDS] RUNDIR\n"
            "\n"
            "One line per job of the run's newest attempt: stage, point, job id, state, elapsed time,\n"
            "exit code; then a summary. The states come from the journal and ONE batched scheduler\n"
            "query for all jobs (sacct; where accounting is off: scontrol, then sacct -c for jobs the\n"
            "controller has forgotten). Slurm's states are shown as Slurm names them: PENDING, RUNNING,\n"
            "COMPLETED, FAILED, CANCELLED (a job whose dependency failed: 'dependency failed'), TIMEOUT,\n"
            "PREEMPTED, NODE_FAIL, REQUEUED, OUT_OF_MEMORY, ...\n"
            "\n"
            "  -w, --watch            refresh until no job is pending or running\n"
            "  -i, --interval SECONDS between refreshes (default %d, at least %d: one query each time)\n"
            "  -h, --help             this help\n"
            "      --version          version and git commit\n"
            "\n"
            "Exit status: 0 every job COMPLETED, 1 some job is not (still running, failed, cancelled,\n"
            "...), or the scheduler could not be asked, 2 usage or not a run directory.\n"
            "\n"
            "example:\n"
            "  lsst-status runs/quickstart/20250101-120000-3fa2c1\n"
            "  lsst-status --watch --interval 10 \"$(lsst-submit --site slurm workflows/seq-scaling.yaml | tail -n 1)\"\n",
            DEFAULT_INTERVAL, MIN_INTERVAL);
}

// The states of the newest attempt's jobs. Returns the number of scheduler calls (>= 0),
// -1 when the scheduler could not be asked (err).
static int collect(const char *dir, JournalData *jd, JobState **states_out, char *err, size_t errlen) {
    char *jpath = path_join(dir, "journal");
    int rc = journal_read(jd, jpath, err, errlen);
    free(jpath);
    if (rc) return -2;
    *states_out = xcalloc((size_t)jd->njobs + 1, sizeof(JobState));
    return wf_journal_states(jd, *states_out, err, errlen);
}

static const char *note(const JobState *s) {
    if (!strcmp(s->state, "CANCELLED") && strstr(s->reason, "DependencyNeverSatisfied"))
        return "dependency failed (DependencyNeverSatisfied): never ran";
    if (!strcmp(s->state, "PENDING") && !strcmp(s->reason, "JobHeldUser")) return "held (scontrol release ID)";
    if (!strcmp(s->state, "PENDING") && !strcmp(s->reason, "Dependency")) return "waiting for its dependencies";
    return s->reason;
}

static int print_status(FILE *fp, const char *dir, const JournalData *jd, const JobState *st, int calls) {
    fprintf(fp, "run      %s (workflow %s, site %s, attempt %d)\n", dir, jd->workflow, jd->site ? jd->site : "?",
            jd->attempt ? jd->attempt : 1);
    int wstage = 5, wpoint = 5, wid = 6;
    for (int i = 0; i < jd->njobs; i++) {
        const JournalJob *j = &jd->jobs[i];
        int n = (int)strlen(j->stage);
        if (n > wstage) wstage = n;
        n = (int)strlen(j->point);
        if (n > wpoint) wpoint = n;
        n = j->id ? (int)strlen(j->id) : 1;
        if (n > wid) wid = n;
    }
    fprintf(fp, "%-*s  %-*s  %-*s  %-13s  %-10s  %-6s  %s\n", wstage, "STAGE", wpoint, "POINT", wid, "JOB", "STATE",
            "ELAPSED", "EXIT", "NOTE");
    // Counts per state name, in order of first appearance.
    char names[32][32];
    int counts[32], nnames = 0, completed = 0;
    for (int i = 0; i < jd->njobs; i++) {
        const JournalJob *j = &jd->jobs[i];
        const JobState *s = &st[i];
        const char *n = note(s);
        fprintf(fp, "%-*s  %-*s  %-*s  %-13s  %-10s  %-6s  %s%s%s\n", wstage, j->stage, wpoint, j->point, wid,
                j->id ? j->id : "-", s->state, s->elapsed, s->exit, j->label, j->label[0] && n[0] ? "; " : "", n);
        completed += wf_state_class(s->state) == WST_OK;
        int k = 0;
        while (k < nnames && strcmp(names[k], s->state)) k++;
        if (k == nnames && nnames < 32) {
            snprintf(names[nnames], sizeof names[nnames], "%s", s->state);
            counts[nnames++] = 0;
        }
        if (k < 32) counts[k]++;
    }
    fprintf(fp, "summary: %d job%s:", jd->njobs, jd->njobs == 1 ? "" : "s");
    for (int k = 0; k < nnames; k++) fprintf(fp, "%s %d %s", k ? "," : "", counts[k], names[k]);
    if (calls >= 0 && strcmp(jd->scheduler, "local"))
        fprintf(fp, " (%d scheduler quer%s)", calls, calls == 1 ? "y" : "ies");
    fprintf(fp, "\n");
    return completed == jd->njobs ? 0 : 1;
}

int main(int argc, char **argv) {
    lsst_prog = "lsst-status";
    static const struct option opts[] = {{"watch", no_argument, 0, 'w'}, {"interval", required_argument, 0, 'i'},
                                         {"help", no_argument, 0, 'h'},  {"version", no_argument, 0, 'V'},
                                         {0, 0, 0, 0}};
    bool watch = false;
    long interval = DEFAULT_INTERVAL;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "wi:h", opts, NULL)) != -1;) {
        char *end = NULL;
        switch (c) {
        case 'w': watch = true; break;
        case 'i':
            interval = strtol(optarg, &end, 10);
            if (!end || *end || interval < MIN_INTERVAL || interval > 86400)
                lsst_die(EXIT_USAGE, "--interval %s: expected whole seconds, %d to 86400 (each refresh is one "
                                     "scheduler query)",
                         optarg, MIN_INTERVAL);
            break;
        case 'h': usage(stdout); return EXIT_OK;
        case 'V': lsst_print_version(); return EXIT_OK;
        default:
            if (optopt) lsst_die(EXIT_USAGE, "option '-%c' %s (see --help)", optopt, optopt == 'i' ? "needs a value" : "is unknown");
            lsst_die(EXIT_USAGE, "unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
        }
    }
    if (argc - optind != 1) lsst_die(EXIT_USAGE, "expected one run directory (see --help)");
    const char *arg = argv[optind];
    if (!is_dir(arg)) lsst_die(EXIT_USAGE, "%s: no such run directory", arg);
    char *dir = wf_latest_attempt(arg, NULL, NULL);
    bool tty = isatty(STDOUT_FILENO);
    for (int round = 0;; round++) {
        char err[2048] = "";
        JournalData jd;
        JobState *st = NULL;
        int calls = collect(dir, &jd, &st, err, sizeof err);
        if (calls == -2) lsst_die(EXIT_USAGE, "%s: not a run directory: %s", arg, err);
        if (watch && tty) fputs("\033[H\033[2J", stdout);
        else if (round) fputc('\n', stdout);
        int rc = print_status(stdout, dir, &jd, st, calls);
        if (calls < 0) lsst_error("cannot ask %s for the job states: %s", jd.scheduler, err);
        bool active = false;
        for (int i = 0; i < jd.njobs; i++) active = active || wf_state_class(st[i].state) == WST_ACTIVE;
        free(st);
        journal_data_free(&jd);
        fflush(stdout);
        if (!watch || !active || calls < 0) {
            free(dir);
            return calls < 0 ? EXIT_RUNTIME : rc;
        }
        sleep((unsigned)interval);
    }
}
