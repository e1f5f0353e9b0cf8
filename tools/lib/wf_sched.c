// Scheduler drivers: submit held jobs with dependencies, release, cancel (Slurm, LSF),
// and the batched state query behind lsst-status. Commands run with argv (no shell).
#include "common.h"
#include "workflow.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int wf_capture(char *const argv[], const char *in_path, bool err_too, char **out) {
    *out = NULL;
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC)) {
        *out = xasprintf("pipe: %s", strerror(errno));
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, in_path ? in_path : "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
    if (err_too) posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
    else posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0); // e.g. "accounting storage is disabled"
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    if (rc) {
        close(pipefd[0]);
        *out = xasprintf("cannot run %s: %s", argv[0], strerror(rc));
        return -1;
    }
    WfBuf b = {0};
    char chunk[65536];
    for (ssize_t n; (n = read(pipefd[0], chunk, sizeof chunk)) != 0;) {
        if (n < 0) {
            if (errno == EINTR) continue;
            break;
        }
        wfb_addn(&b, chunk, (size_t)n);
    }
    close(pipefd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    *out = wfb_take(&b);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

// Messages from a scheduler command: its output, on one line, trimmed.
static void one_line(char *err, size_t errlen, const char *what, const char *output) {
    snprintf(err, errlen, "%s: %s", what, output && output[0] ? output : "(no output)");
    for (char *p = err; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    size_t n = strlen(err);
    while (n && err[n - 1] == ' ') err[--n] = '\0';
}

// ---- submission ----

char *wf_submit_held(Scheduler s, const char *script, char **deps, int ndeps, char *err, size_t errlen) {
    WfBuf dep = {0};
    char *argv[12];
    int argc = 0;
    if (s == SCHED_SLURM) {
        argv[argc++] = "sbatch";
        argv[argc++] = "--parsable";
        argv[argc++] = "--hold";
        if (ndeps) {
            wfb_add(&dep, "--dependency=afterok");
            for (int i = 0; i < ndeps; i++) wfb_addf(&dep, ":%s", deps[i]);
            argv[argc++] = dep.s;
            argv[argc++] = "--kill-on-invalid-dep=yes";
        }
        argv[argc++] = (char *)script;
    } else if (s == SCHED_LSF) {
        argv[argc++] = "bsub";
        argv[argc++] = "-H";
        if (ndeps) {
            for (int i = 0; i < ndeps; i++) wfb_addf(&dep, "%sdone(%s)", i ? " && " : "", deps[i]);
            argv[argc++] = "-w";
            argv[argc++] = dep.s;
        }
    } else {
        snprintf(err, errlen, "the local site runs jobs itself; nothing to submit");
        return NULL;
    }
    argv[argc] = NULL;
    char *out = NULL;
    int rc = wf_capture(argv, s == SCHED_LSF ? script : NULL, true, &out);
    wfb_free(&dep);
    char *id = NULL;
    if (rc == 0 && s == SCHED_SLURM) {
        // "123" or "123;cluster"
        size_t n = strspn(out, "0123456789");
        if (n && (out[n] == '\0' || out[n] == '\n' || out[n] == ';')) id = strndup(out, n);
    } else if (rc == 0 && s == SCHED_LSF) {
        // "Job <123> is submitted to queue <batch>."
        const char *p = strstr(out, "Job <");
        if (p) {
            size_t n = strspn(p + 5, "0123456789");
            if (n && p[5 + n] == '>') id = strndup(p + 5, n);
        }
    }
    if (!id) {
        char what[64];
        snprintf(what, sizeof what, "%s (exit %d)", argv[0], rc);
        one_line(err, errlen, what, out);
    }
    free(out);
    return id;
}

// Run `cmd [fixed] id...` in batches of at most 256 ids.
static int batched(char *const fixed[], int nfixed, char **ids, int n, const char *join, char *err, size_t errlen) {
    for (int start = 0; start < n; start += 256) {
        int end = start + 256 < n ? start + 256 : n;
        char *argv[256 + 8];
        int argc = 0;
        for (int i = 0; i < nfixed; i++) argv[argc++] = fixed[i];
        WfBuf joined = {0};
        if (join) {
            for (int i = start; i < end; i++) wfb_addf(&joined, "%s%s", i > start ? join : "", ids[i]);
            argv[argc++] = joined.s;
        } else {
            for (int i = start; i < end; i++) argv[argc++] = ids[i];
        }
        argv[argc] = NULL;
        char *out = NULL;
        int rc = wf_capture(argv, NULL, true, &out);
        wfb_free(&joined);
        if (rc) {
            char what[64];
            snprintf(what, sizeof what, "%s (exit %d)", fixed[0], rc);
            one_line(err, errlen, what, out);
            free(out);
            return -1;
        }
        free(out);
    }
    return 0;
}

int wf_release(Scheduler s, char **ids, int n, char *err, size_t errlen) {
    if (s == SCHED_SLURM) return batched((char *[]){"scontrol", "release"}, 2, ids, n, ",", err, errlen);
    if (s == SCHED_LSF) return batched((char *[]){"bresume"}, 1, ids, n, NULL, err, errlen);
    return 0;
}

int wf_cancel(Scheduler s, char **ids, int n, char *err, size_t errlen) {
    if (s == SCHED_SLURM) return batched((char *[]){"scancel"}, 1, ids, n, NULL, err, errlen);
    if (s == SCHED_LSF) return batched((char *[]){"bkill"}, 1, ids, n, NULL, err, errlen);
    return 0;
}

// ---- states ----

// Slurm job states (squeue/sacct long names) and lsst's three classes: still going,
// completed, ended otherwise. LSF and local names are normalized to these first.
static const struct {
    const char *name;
    WfStateClass cls;
} state_table[] = {
    {"PENDING", WST_ACTIVE},       {"RUNNING", WST_ACTIVE},     {"CONFIGURING", WST_ACTIVE},
    {"COMPLETING", WST_ACTIVE},    {"SUSPENDED", WST_ACTIVE},   {"REQUEUED", WST_ACTIVE},
    {"REQUEUE_HOLD", WST_ACTIVE},  {"REQUEUE_FED", WST_ACTIVE}, {"RESIZING", WST_ACTIVE},
    {"SIGNALING", WST_ACTIVE},     {"STAGE_OUT", WST_ACTIVE},   {"STOPPED", WST_ACTIVE},
    {"SPECIAL_EXIT", WST_ACTIVE},  {"RESV_DEL_HOLD", WST_ACTIVE}, {"COMPLETED", WST_OK},
    {"FAILED", WST_BAD},           {"CANCELLED", WST_BAD},      {"TIMEOUT", WST_BAD},
    {"PREEMPTED", WST_BAD},        {"NODE_FAIL", WST_BAD},      {"OUT_OF_MEMORY", WST_BAD},
    {"BOOT_FAIL", WST_BAD},        {"DEADLINE", WST_BAD},       {"REVOKED", WST_BAD},
    {"NOT_SUBMITTED", WST_BAD},    {"UNKNOWN", WST_BAD},
};

WfStateClass wf_state_class(const char *state) {
    for (size_t i = 0; i < sizeof state_table / sizeof state_table[0]; i++)
        if (!strcmp(state, state_table[i].name)) return state_table[i].cls;
    return WST_BAD;
}

void wf_state_normalize(char *state, size_t len) {
    char *sp = strchr(state, ' '); // "CANCELLED by 0"
    if (sp) *sp = '\0';
    static const char *const map[][2] = {
        {"CA", "CANCELLED"}, {"CD", "COMPLETED"}, {"F", "FAILED"},    {"TO", "TIMEOUT"},    {"PR", "PREEMPTED"},
        {"NF", "NODE_FAIL"}, {"OOM", "OUT_OF_MEMORY"}, {"PD", "PENDING"}, {"R", "RUNNING"}, {"RQ", "REQUEUED"},
        {"CG", "COMPLETING"}, {"BF", "BOOT_FAIL"}, {"DL", "DEADLINE"}, {"S", "SUSPENDED"},
        // LSF
        {"DONE", "COMPLETED"}, {"EXIT", "FAILED"}, {"PEND", "PENDING"}, {"RUN", "RUNNING"}, {"PSUSP", "SUSPENDED"},
        {"USUSP", "SUSPENDED"}, {"SSUSP", "SUSPENDED"}, {"WAIT", "PENDING"}, {"ZOMBI", "FAILED"},
        {"UNKWN", "UNKNOWN"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(state, map[i][0])) {
            snprintf(state, len, "%s", map[i][1]);
            return;
        }
}

// "3:0" -> "3", "0:9" -> "sig 9"; "" -> "-".
static void fmt_exit(const char *text, char *out, size_t len) {
    int code = 0, sig = 0;
    if (!text[0] || sscanf(text, "%d:%d", &code, &sig) < 1) snprintf(out, len, "-");
    else if (sig) snprintf(out, len, "sig %d", sig);
    else snprintf(out, len, "%d", code);
}

static void set_state(JobState *st, const char *state, const char *reason, const char *elapsed, const char *exit) {
    snprintf(st->state, sizeof st->state, "%s", state);
    wf_state_normalize(st->state, sizeof st->state);
    snprintf(st->reason, sizeof st->reason, "%s", reason && strcmp(reason, "None") && strcmp(reason, "(null)") ? reason : "");
    snprintf(st->elapsed, sizeof st->elapsed, "%s", elapsed && elapsed[0] ? elapsed : "-");
    if (!strcmp(st->state, "PENDING")) {
        snprintf(st->elapsed, sizeof st->elapsed, "-");
        snprintf(st->exit, sizeof st->exit, "-");
    } else {
        fmt_exit(exit ? exit : "", st->exit, sizeof st->exit);
        if (!strcmp(st->state, "RUNNING")) snprintf(st->exit, sizeof st->exit, "-");
    }
}

// Call fn for every task index in "2-9%2", "1,3,5-7", "4".
static void each_task(const char *spec, void (*fn)(void *, long), void *ctx) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", spec);
    char *pct = strchr(buf, '%');
    if (pct) *pct = '\0';
    char *save = NULL;
    for (char *part = strtok_r(buf, ",", &save); part; part = strtok_r(NULL, ",", &save)) {
        long a, b;
        int n = sscanf(part, "%ld-%ld", &a, &b);
        if (n == 1) b = a;
        if (n < 1 || b < a || b - a > 10000000) continue;
        for (long i = a; i <= b; i++) fn(ctx, i);
    }
}

// An id and where it is in the caller's list; sorted by id, the list is searched in
// O(log n), so a scheduler's 40k lines for a 40k-task array are matched in well under a second.
typedef struct {
    char *id;
    int pos; // index in ids
} IdAt;

static int cmp_id(const void *a, const void *b) {
    const IdAt *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : x->pos - y->pos;
}

static int cmp_pos(const void *a, const void *b) { return ((const IdAt *)a)->pos - ((const IdAt *)b)->pos; }

typedef struct {
    IdAt *sorted; // the ids asked about, by id
    int n;
    JobState *states;
    bool *found;
    const char *base;
    const char *state, *reason, *elapsed, *exit;
} Match;

static Match match_new(char **ids, int n, JobState *states, bool *found) {
    Match m = {.sorted = xcalloc((size_t)n + 1, sizeof(IdAt)), .n = n, .states = states, .found = found};
    for (int i = 0; i < n; i++) m.sorted[i] = (IdAt){ids[i], i};
    qsort(m.sorted, (size_t)n, sizeof(IdAt), cmp_id);
    return m;
}

// Every id equal to `id` not found yet takes the current line's state.
static void match_one(Match *m, const char *id) {
    int lo = 0, hi = m->n; // first sorted entry >= id
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (strcmp(m->sorted[mid].id, id) < 0) lo = mid + 1;
        else hi = mid;
    }
    for (; lo < m->n && !strcmp(m->sorted[lo].id, id); lo++) {
        int i = m->sorted[lo].pos;
        if (m->found[i]) continue;
        set_state(&m->states[i], m->state, m->reason, m->elapsed, m->exit);
        m->found[i] = true;
    }
}

static void match_task(void *p, long task) {
    Match *m = p;
    char id[64];
    snprintf(id, sizeof id, "%s_%ld", m->base, task);
    match_one(m, id);
}

// "123", "123_4", "123_[2-9%2]" (pending tasks of an array, not yet split off).
static void match_sacct_id(Match *m, const char *jobid) {
    const char *br = strstr(jobid, "_[");
    if (!br) {
        match_one(m, jobid);
        return;
    }
    char base[64];
    snprintf(base, sizeof base, "%.*s", (int)(br - jobid), jobid);
    char spec[4096];
    snprintf(spec, sizeof spec, "%s", br + 2);
    char *close = strchr(spec, ']');
    if (close) *close = '\0';
    m->base = base;
    each_task(spec, match_task, m);
}

// sacct -n -P -o JobID,State,Elapsed,ExitCode[,Reason]: "123_4|CANCELLED by 0|00:00:00|0:0|DependencyNeverSatisfied"
void wf_parse_sacct(const char *text, char **ids, int n, JobState *states, bool *found) {
    Match m = match_new(ids, n, states, found);
    char *copy = xstrdup(text), *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[6] = {0};
        int nf = 0;
        for (char *p = line; nf < 6;) {
            f[nf++] = p;
            char *bar = strchr(p, '|');
            if (!bar) break;
            *bar = '\0';
            p = bar + 1;
        }
        if (nf < 4 || strchr(f[0], '.')) continue; // job steps (123.batch) are not jobs
        m.state = f[1];
        m.reason = nf > 4 ? f[4] : "";
        m.elapsed = f[2];
        m.exit = f[3];
        match_sacct_id(&m, f[0]);
    }
    free(copy);
    free(m.sorted);
}

static const char *field(const char *line, const char *key, char *out, size_t len) {
    size_t k = strlen(key);
    for (const char *p = line; (p = strstr(p, key));) {
        if ((p == line || p[-1] == ' ') && p[k] == '=') {
            size_t n = strcspn(p + k + 1, " \n");
            snprintf(out, len, "%.*s", (int)n, p + k + 1);
            return out;
        }
        p += k;
    }
    out[0] = '\0';
    return NULL;
}

// scontrol -o show job: one line per job ("JobId=7 ArrayJobId=6 ArrayTaskId=0 ... JobState=COMPLETED ...").
void wf_parse_scontrol(const char *text, char **ids, int n, JobState *states, bool *found) {
    Match m = match_new(ids, n, states, found);
    char *copy = xstrdup(text), *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char jobid[64], array[64], task[4096], state[64], reason[128], runtime[32], exit_code[32];
        if (!field(line, "JobId", jobid, sizeof jobid) || !field(line, "JobState", state, sizeof state)) continue;
        field(line, "Reason", reason, sizeof reason);
        field(line, "RunTime", runtime, sizeof runtime);
        field(line, "ExitCode", exit_code, sizeof exit_code);
        m.state = state;
        m.reason = reason;
        m.elapsed = runtime;
        m.exit = exit_code;
        if (field(line, "ArrayJobId", array, sizeof array) && field(line, "ArrayTaskId", task, sizeof task)) {
            m.base = array;
            each_task(task, match_task, &m);
        } else {
            match_one(&m, jobid);
        }
    }
    free(copy);
    free(m.sorted);
}

// bjobs -a -noheader -o "jobid stat run_time exit_code jobindex delimiter='|'"
//   "123|DONE|5 second(s)|0|0", array element "124|EXIT|3 second(s)|1|2"
void wf_parse_bjobs(const char *text, char **ids, int n, JobState *states, bool *found) {
    Match m = match_new(ids, n, states, found);
    char *copy = xstrdup(text), *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[5] = {0};
        int nf = 0;
        for (char *p = line; nf < 5;) {
            f[nf++] = p;
            char *bar = strchr(p, '|');
            if (!bar) break;
            *bar = '\0';
            p = bar + 1;
        }
        if (nf < 4) continue;
        long seconds = atol(f[2]);
        char elapsed[16], exit_code[32], id[96];
        wf_fmt_time(seconds, elapsed);
        snprintf(exit_code, sizeof exit_code, "%s:0", strcmp(f[3], "-") ? f[3] : "0");
        if (nf == 5 && strcmp(f[4], "0") && strcmp(f[4], "-")) snprintf(id, sizeof id, "%s_%s", f[0], f[4]);
        else snprintf(id, sizeof id, "%s", f[0]);
        m.state = f[1];
        m.reason = "";
        m.elapsed = elapsed;
        m.exit = exit_code;
        match_one(&m, id);
    }
    free(copy);
    free(m.sorted);
}

// Distinct job ids to ask about: "123_4" -> "123" (an array is asked for as a whole), in
// the order they first appear; ids[i] with skip[i] are left out. Sorted, so a 40k-task
// array is one id, not 40k copies of it on the command line. Malloc'd, NULL-terminated.
static char **base_ids(char **ids, int n, const bool *skip, int *nout) {
    IdAt *b = xcalloc((size_t)n + 1, sizeof *b);
    int nb = 0;
    for (int i = 0; i < n; i++)
        if (!skip || !skip[i]) b[nb++] = (IdAt){xasprintf("%.*s", (int)strcspn(ids[i], "_"), ids[i]), i};
    qsort(b, (size_t)nb, sizeof *b, cmp_id);
    int kept = 0;
    for (int k = 0; k < nb; k++) {
        if (kept && !strcmp(b[k].id, b[kept - 1].id)) free(b[k].id); // a later task of the same array
        else b[kept++] = b[k];
    }
    qsort(b, (size_t)kept, sizeof *b, cmp_pos);
    char **out = xcalloc((size_t)kept + 1, sizeof(char *));
    for (int k = 0; k < kept; k++) out[k] = b[k].id;
    free(b);
    *nout = kept;
    return out;
}

static void free_list(char **list) {
    for (int i = 0; list[i]; i++) free(list[i]);
    free(list);
}

// "a,b,c": malloc'd.
static char *join(char **list, int n, const char *sep) {
    WfBuf b = {0};
    for (int i = 0; i < n; i++) wfb_addf(&b, "%s%s", i ? sep : "", list[i]);
    return wfb_take(&b);
}

static int query_lsf(char **ids, int n, JobState *states, bool *found, char *err, size_t errlen) {
    int nbase = 0;
    char **bases = base_ids(ids, n, NULL, &nbase);
    char **argv = xcalloc((size_t)nbase + 6, sizeof(char *));
    int argc = 0;
    argv[argc++] = "bjobs";
    argv[argc++] = "-a";
    argv[argc++] = "-noheader";
    argv[argc++] = "-o";
    argv[argc++] = "jobid stat run_time exit_code jobindex delimiter='|'";
    for (int i = 0; i < nbase; i++) argv[argc++] = bases[i]; // bjobs takes the ids as separate words
    argv[argc] = NULL;
    char *out = NULL;
    int rc = wf_capture(argv, NULL, false, &out);
    if (rc == 0) wf_parse_bjobs(out, ids, n, states, found);
    else one_line(err, errlen, "bjobs", out);
    free(out);
    free(argv);
    free_list(bases);
    return rc == 0 ? 1 : -1;
}

// Run `sacct ... -j LIST -o FIELDS` for the ids not yet found; parse what it prints.
static int sacct_into(const char *mode, const char *fields, char **ids, int n, JobState *states, bool *found) {
    int nbase = 0;
    char **bases = base_ids(ids, n, found, &nbase);
    char *list = join(bases, nbase, ",");
    char *argv[] = {"sacct", (char *)mode, "-n", "-P", "-j", list, "-o", (char *)fields, NULL};
    char *out = NULL;
    int rc = wf_capture(argv, NULL, false, &out);
    if (rc == 0) wf_parse_sacct(out, ids, n, states, found);
    free(out);
    free(list);
    free_list(bases);
    return rc;
}

static int count_missing(const bool *found, int n) {
    int missing = 0;
    for (int i = 0; i < n; i++) missing += !found[i];
    return missing;
}

static int query_slurm(char **ids, int n, JobState *states, bool *found, char *err, size_t errlen) {
    int calls = 1;
    int rc = sacct_into("-X", "JobID,State,Elapsed,ExitCode,Reason", ids, n, states, found);
    if (!count_missing(found, n)) return calls;
    // No accounting database (or sacct has not caught up with a job just submitted):
    // the controller still knows recent jobs (MinJobAge) ...
    char *scontrol[] = {"scontrol", "-o", "show", "job", NULL}, *out = NULL;
    int rc2 = wf_capture(scontrol, NULL, false, &out);
    calls++;
    if (rc2 == 0) wf_parse_scontrol(out, ids, n, states, found);
    free(out);
    if (!count_missing(found, n) || rc == 0) return calls;
    // ... and without accounting, the job completion log (jobcomp/filetxt) has the ones it forgot.
    int rc3 = sacct_into("-c", "JobID,State,Elapsed,ExitCode", ids, n, states, found);
    calls++;
    if (rc3 != 0 && rc2 != 0) {
        snprintf(err, errlen, "sacct, scontrol and sacct -c all failed (is a Slurm controller up?)");
        return -1;
    }
    return calls;
}

int wf_query_states(Scheduler s, char **ids, int n, JobState *states, char *err, size_t errlen) {
    if (n == 0) return 0;
    bool *found = xcalloc((size_t)n + 1, sizeof(bool));
    int calls = s == SCHED_LSF ? query_lsf(ids, n, states, found, err, errlen)
                               : query_slurm(ids, n, states, found, err, errlen);
    for (int i = 0; i < n; i++)
        if (!found[i]) set_state(&states[i], "UNKNOWN", "the scheduler no longer knows this job", "", "");
    free(found);
    return calls;
}
