// Rank-file discovery: a recursive walk that collects directories holding
// rank-*.h5, then one Job per directory, labelled by its path relative to the
// directory the user named.
#include "report_scan.h"

#include "common.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

bool report_is_rank_file(const char *name) {
    if (strncmp(name, "rank-", 5)) return false;
    const char *p = name + 5;
    if (!isdigit((unsigned char)*p)) return false;
    while (isdigit((unsigned char)*p)) p++;
    return !strcmp(p, ".h5");
}

static long rank_of_name(const char *path) { return strtol(path_basename(path) + 5, NULL, 10); }

static int by_rank_name(const void *a, const void *b) {
    long ra = rank_of_name(*(char *const *)a), rb = rank_of_name(*(char *const *)b);
    if (ra != rb) return ra < rb ? -1 : 1;
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int by_label(const void *a, const void *b) {
    return strverscmp(((const Job *)a)->label, ((const Job *)b)->label);
}

typedef struct {
    Report *r;
    const char *root;      // the directory given
    const char *root_name; // its name for labels
    char *err;
    size_t errlen;
} Walk;

// The job of directory `dir` holding rank files. Files in ".../metrics/" belong to
// the job directory above it; the label is that directory relative to the root.
static void add_job(Walk *w, const char *dir, char **files, int n) {
    char *job_dir = !strcmp(path_basename(dir), "metrics") ? path_dirname(dir) : xstrdup(dir);
    size_t lr = strlen(w->root);
    char *label;
    if (!strcmp(job_dir, w->root)) {
        label = xstrdup(w->root_name);
    } else if (!strncmp(job_dir, w->root, lr) && (job_dir[lr] == '/' || w->root[lr - 1] == '/')) {
        label = xstrdup(job_dir + lr + (job_dir[lr] == '/'));
    } else {   // above the root: the user named a metrics directory
        char *real = realpath(job_dir, NULL);
        label = xstrdup(path_basename(real ? real : job_dir));
        free(real);
    }
    Report *r = w->r;
    r->jobs = xrealloc(r->jobs, (size_t)(r->n_jobs + 1) * sizeof *r->jobs);
    Job *j = &r->jobs[r->n_jobs++];
    memset(j, 0, sizeof *j);
    j->label = label;
    j->dir = job_dir;
    qsort(files, (size_t)n, sizeof *files, by_rank_name);
    j->files = files;
    j->n_files = n;
}

static int walk(Walk *w, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(w->err, w->errlen, "%s: cannot read the directory: %s", dir, strerror(errno));
        return -1;
    }
    char **files = NULL, **subdirs = NULL;
    int n_files = 0, n_sub = 0, rc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char *child = path_join(dir, de->d_name);
        struct stat st;
        if (lstat(child, &st) != 0) { free(child); continue; }   // vanished meanwhile
        if (S_ISDIR(st.st_mode)) {
            subdirs = xrealloc(subdirs, (size_t)(n_sub + 1) * sizeof *subdirs);
            subdirs[n_sub++] = child;
        } else if (report_is_rank_file(de->d_name) && (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode))) {
            files = xrealloc(files, (size_t)(n_files + 1) * sizeof *files);
            files[n_files++] = child;
        } else {
            free(child);
        }
    }
    closedir(d);
    if (n_files) add_job(w, dir, files, n_files);
    for (int i = 0; i < n_sub; i++) {
        if (rc == 0 && walk(w, subdirs[i]) != 0) rc = -1;
        free(subdirs[i]);
    }
    free(subdirs);
    return rc;
}

int report_scan(Report *r, char *const *dirs, int n_dirs, char *err, size_t errlen) {
    for (int i = 0; i < n_dirs; i++) {
        // Trailing slashes off, so "runs/x/" and "runs/x" give the same labels.
        char *root = xstrdup(dirs[i]);
        for (size_t n = strlen(root); n > 1 && root[n - 1] == '/'; n--) root[n - 1] = '\0';
        char *real = realpath(root, NULL);
        const char *name = path_basename(real ? real : root);
        char *root_name = xstrdup(*name ? name : "/");
        int first_job = r->n_jobs;
        Walk w = {r, root, root_name, err, errlen};
        int rc = walk(&w, root);
        // With several directories, labels start with the directory's name so jobs stay apart.
        for (int k = first_job; k < r->n_jobs && n_dirs > 1; k++) {
            Job *j = &r->jobs[k];
            if (!strcmp(j->label, root_name)) continue;
            char *l = xasprintf("%s/%s", root_name, j->label);
            free(j->label);
            j->label = l;
        }
        free(root_name);
        free(real);
        free(root);
        if (rc != 0) return -1;
    }
    qsort(r->jobs, (size_t)r->n_jobs, sizeof *r->jobs, by_label);
    // Equal labels (two directories of the same name): the later ones get " (2)", " (3)".
    for (int k = 1, copies = 1; k < r->n_jobs; k++) {
        const char *prev = r->jobs[k - 1].label;
        size_t n = strlen(r->jobs[k].label);
        copies = !strncmp(prev, r->jobs[k].label, n) && (prev[n] == '\0' || prev[n] == ' ') ? copies + 1 : 1;
        if (copies > 1) {
            char *l = xasprintf("%s (%d)", r->jobs[k].label, copies);
            free(r->jobs[k].label);
            r->jobs[k].label = l;
        }
    }
    return 0;
}

void report_free(Report *r) {
    for (int i = 0; i < r->n_jobs; i++) {
        Job *j = &r->jobs[i];
        free(j->label);
        free(j->dir);
        for (int k = 0; k < j->n_files; k++) free(j->files[k]);
        free(j->files);
        free(j->scheme);
        free(j->backend);
        free(j->device);
        free(j->model_text);
        free(j->git);
        for (int k = 0; k < j->n_ranks; k++) {
            free(j->ranks[k].path);
            free(j->ranks[k].host);
        }
        free(j->ranks);
        for (int k = 0; k < j->n_skipped; k++) {
            free(j->skipped[k].path);
            free(j->skipped[k].reason);
        }
        free(j->skipped);
        free(j->step);
        free(j->step_time);
        free(j->loss_step);
        free(j->loss);
        free(j->valid);
        free(j->test);
    }
    free(r->jobs);
    for (int i = 0; i < r->n_series; i++) {
        free(r->series[i].jobs);
        free(r->series[i].speedup);
        free(r->series[i].efficiency);
    }
    free(r->series);
    free(r->ratios);
    free(r->title);
    memset(r, 0, sizeof *r);
}
