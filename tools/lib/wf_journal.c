// The journal of a run: one line per event, written and fsync'd one at a time, so a
// submitter killed at any point leaves every job id it got from the scheduler on disk
// (lsst-status and a later cancel can find them). Format: see workflow.h.
#include "common.h"
#include "workflow.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int journal_open(Journal *j, const char *path) {
    j->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
    if (j->fd < 0) return -1;
    j->fp = fdopen(j->fd, "a");
    if (!j->fp) {
        int e = errno;
        close(j->fd);
        errno = e;
        return -1;
    }
    return 0;
}

int journal_add(Journal *j, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vfprintf(j->fp, fmt, ap);
    va_end(ap);
    if (n < 0 || fputc('\n', j->fp) == EOF || fflush(j->fp) || fsync(j->fd)) return -1;
    return 0;
}

void journal_close(Journal *j) {
    if (j->fp) fclose(j->fp);
    j->fp = NULL;
}

// Job lines come in plan order: a stage's points together, from 0. So "STAGE POINT" is
// at (where STAGE's lines start) + POINT: tried first, a search as the fallback. Linear
// in the journal: a 40k-job journal reads in milliseconds, not seconds.
typedef struct {
    int *start; // index in jd->jobs of each stage's first job line
    int n, cap;
} StageStarts;

static void note_job_line(StageStarts *ss, const JournalData *jd) {
    int i = jd->njobs - 1;
    if (i > 0 && !strcmp(jd->jobs[i - 1].stage, jd->jobs[i].stage)) return;
    if (ss->n == ss->cap) {
        ss->cap = ss->cap ? ss->cap * 2 : 16;
        ss->start = xrealloc(ss->start, (size_t)ss->cap * sizeof *ss->start);
    }
    ss->start[ss->n++] = i;
}

static bool is_job(const JournalJob *job, const char *stage, const char *point) {
    return !strcmp(job->stage, stage) && !strcmp(job->point, point);
}

int journal_find(const JournalData *jd, const char *stage, const char *point, int hint) {
    if (hint >= 0 && hint < jd->njobs && is_job(&jd->jobs[hint], stage, point)) return hint;
    for (int i = jd->njobs - 1; i >= 0; i--)
        if (is_job(&jd->jobs[i], stage, point)) return i;
    return -1;
}

static JournalJob *find_job(JournalData *jd, const StageStarts *ss, const char *stage, const char *point) {
    long p = strtol(point, NULL, 10), hint = -1;
    for (int k = ss->n - 1; k >= 0 && hint < 0; k--)
        if (!strcmp(jd->jobs[ss->start[k]].stage, stage) && p >= 0 && p < jd->njobs) hint = ss->start[k] + p;
    int i = journal_find(jd, stage, point, (int)hint); // hint < 2 njobs
    return i < 0 ? NULL : &jd->jobs[i];
}

int journal_read(JournalData *jd, const char *path, char *err, size_t errlen) {
    memset(jd, 0, sizeof *jd);
    char *text = read_file(path, NULL);
    if (!text) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        return -1;
    }
    int cap = 0, lineno = 0, rc = 0;
    StageStarts starts = {0};
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char word[32] = "", a[256] = "", b[256] = "", c[256] = "";
        int used = 0;
        sscanf(line, "%31s%n", word, &used);
        const char *rest = line + used + (line[used] == ' ');
        if (lineno == 1 && strcmp(line, "lsst-journal 1")) {
            snprintf(err, errlen, "%s:1: not an lsst journal (expected 'lsst-journal 1')", path);
            rc = -1;
            break;
        }
        if (!strcmp(word, "workflow")) jd->workflow = xstrdup(rest);
        else if (!strcmp(word, "site")) jd->site = xstrdup(rest);
        else if (!strcmp(word, "scheduler")) jd->scheduler = xstrdup(rest);
        else if (!strcmp(word, "attempt")) jd->attempt = atoi(rest);
        else if (!strcmp(word, "workflow_dir")) jd->workflow_dir = xstrdup(rest);
        else if (!strcmp(word, "end")) jd->ended = true;
        else if (!strcmp(word, "released")) jd->released = true;
        else if (!strcmp(word, "cancelled")) jd->cancelled = true;
        else if (!strcmp(word, "failed")) {
            free(jd->failed);
            jd->failed = xstrdup(rest);
        } else if (!strcmp(word, "job") || !strcmp(word, "kept")) {
            int off = 0;
            if (sscanf(rest, "%255s %255s%n", a, b, &off) != 2) goto bad;
            if (jd->njobs == cap) {
                cap = cap ? cap * 2 : 64;
                jd->jobs = xrealloc(jd->jobs, (size_t)cap * sizeof *jd->jobs);
            }
            JournalJob *job = &jd->jobs[jd->njobs++];
            memset(job, 0, sizeof *job);
            job->stage = xstrdup(a);
            job->point = xstrdup(b);
            job->label = xstrdup(word[0] == 'j' && rest[off] == ' ' ? rest + off + 1 : "");
            note_job_line(&starts, jd);
            if (word[0] == 'k') {
                int off2 = 0;
                if (sscanf(rest + off, " %255s %n", c, &off2) != 1 || !rest[off + off2]) goto bad;
                job->id = strcmp(c, "-") ? xstrdup(c) : NULL;
                job->kept_dir = xstrdup(rest + off + off2);
            }
        } else if (!strcmp(word, "submit")) {
            if (sscanf(rest, "%255s %255s %255s", a, b, c) != 3) goto bad;
            JournalJob *job = find_job(jd, &starts, a, b);
            if (!job) goto bad;
            free(job->id);
            job->id = xstrdup(c);
        } else if (!strcmp(word, "start")) {
            if (sscanf(rest, "%255s %255s", a, b) != 2) goto bad;
            JournalJob *job = find_job(jd, &starts, a, b);
            if (!job) goto bad;
            job->started = true;
        } else if (!strcmp(word, "local")) {
            int exit_code = 0;
            long elapsed = 0;
            if (sscanf(rest, "%255s %255s %255s %d %ld", a, b, c, &exit_code, &elapsed) != 5) goto bad;
            JournalJob *job = find_job(jd, &starts, a, b);
            if (!job) goto bad;
            free(job->local_state);
            job->local_state = xstrdup(c);
            job->local_exit = exit_code;
            job->local_elapsed = elapsed;
        } else if (lineno > 1) {
            goto bad;
        }
        continue;
    bad:
        snprintf(err, errlen, "%s:%d: malformed journal line '%.80s'", path, lineno, line);
        rc = -1;
        break;
    }
    free(text);
    free(starts.start);
    if (!rc && (!jd->workflow || !jd->scheduler)) {
        snprintf(err, errlen, "%s: journal lacks its workflow/scheduler header", path);
        rc = -1;
    } else if (!rc && scheduler_from_name(jd->scheduler) < 0) {
        snprintf(err, errlen, "%s: unknown scheduler '%s' (local, slurm or lsf)", path, jd->scheduler);
        rc = -1;
    }
    if (rc) journal_data_free(jd);
    return rc;
}

// What the journal alone says of job i; false when the scheduler must be asked.
static bool state_from_journal(const JournalData *jd, int i, JobState *st) {
    const JournalJob *j = &jd->jobs[i];
    snprintf(st->elapsed, sizeof st->elapsed, "-");
    snprintf(st->exit, sizeof st->exit, "-");
    if (j->kept_dir) {
        snprintf(st->state, sizeof st->state, "COMPLETED");
        snprintf(st->reason, sizeof st->reason, "kept from an earlier attempt (%s)", j->kept_dir);
    } else if (j->local_state && !strcmp(j->local_state, "CANCELLED")) {
        snprintf(st->state, sizeof st->state, "CANCELLED");
        snprintf(st->reason, sizeof st->reason, "a job it waits for did not complete");
    } else if (j->local_state) {
        snprintf(st->state, sizeof st->state, "%s", j->local_state);
        wf_fmt_time(j->local_elapsed, st->elapsed);
        snprintf(st->exit, sizeof st->exit, "%d", j->local_exit);
    } else if (!strcmp(jd->scheduler, "local")) {
        snprintf(st->state, sizeof st->state, "%s", jd->ended ? "CANCELLED" : j->started ? "RUNNING" : "PENDING");
    } else if (!j->id) {
        snprintf(st->state, sizeof st->state, "NOT_SUBMITTED");
        snprintf(st->reason, sizeof st->reason, "%s", jd->failed ? "the submission failed" : "");
    } else {
        return false;
    }
    return true;
}

int wf_journal_states(const JournalData *jd, JobState *states, char *err, size_t errlen) {
    char **ids = xcalloc((size_t)jd->njobs + 1, sizeof(char *));
    int *idx = xcalloc((size_t)jd->njobs + 1, sizeof(int)), nids = 0;
    for (int i = 0; i < jd->njobs; i++) {
        memset(&states[i], 0, sizeof states[i]);
        if (state_from_journal(jd, i, &states[i])) continue;
        idx[nids] = i;
        ids[nids++] = jd->jobs[i].id;
    }
    int calls = 0;
    if (nids) {
        JobState *q = xcalloc((size_t)nids, sizeof *q);
        calls = wf_query_states((Scheduler)scheduler_from_name(jd->scheduler), ids, nids, q, err, errlen);
        for (int k = 0; k < nids; k++) states[idx[k]] = q[k];
        free(q);
    }
    free(ids);
    free(idx);
    return calls;
}

void journal_data_free(JournalData *jd) {
    for (int i = 0; i < jd->njobs; i++) {
        free(jd->jobs[i].stage);
        free(jd->jobs[i].point);
        free(jd->jobs[i].id);
        free(jd->jobs[i].kept_dir);
        free(jd->jobs[i].label);
        free(jd->jobs[i].local_state);
    }
    free(jd->jobs);
    free(jd->workflow);
    free(jd->site);
    free(jd->scheduler);
    free(jd->workflow_dir);
    free(jd->failed);
    memset(jd, 0, sizeof *jd);
}

char *wf_latest_attempt(const char *run_dir, char **base_out, int *attempt_out) {
    char *real = realpath(run_dir, NULL);
    char *base = real ? real : xstrdup(run_dir);
    const char *last = path_basename(base);
    if (!strncmp(last, "attempt-", 8) && atoi(last + 8) > 1) {
        char *parent = path_dirname(base);
        free(base);
        base = parent;
    }
    int best = 1;
    char *best_dir = xstrdup(base);
    DIR *d = opendir(base);
    for (struct dirent *e; d && (e = readdir(d));) {
        int n = 0, used = 0;
        if (sscanf(e->d_name, "attempt-%d%n", &n, &used) == 1 && !e->d_name[used] && n > best) {
            char *dir = path_join(base, e->d_name);
            if (is_dir(dir)) {
                best = n;
                free(best_dir);
                best_dir = dir;
            } else {
                free(dir);
            }
        }
    }
    if (d) closedir(d);
    if (attempt_out) *attempt_out = best;
    if (base_out) *base_out = base;
    else free(base);
    return best_dir;
}
