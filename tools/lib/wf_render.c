// Batch scripts from templates/<scheduler>.sh and the plan text of --dry-run.
//
// A template is shell text with {{slot}} placeholders filled with text prepared here:
// quoted words ({{run_dir}}, {{job_dir}}, ...), blocks of directives, the setup lines, the
// command. A slot alone on its line whose text is empty removes the line. Inserted text is
// never scanned again, so a value cannot smuggle in a slot or a reference.
#include "common.h"
#include "workflow.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    const char *text;
} Slot;

// The template of a scheduler, read once per process (whose lsst_root never changes).
static const char *template_text(const WfContext *cx, Scheduler s, char *err, size_t errlen) {
    static char *cache[3];
    if (cache[s]) return cache[s];
    char *file = xasprintf("%s/templates/%s.sh", cx->lsst_root, scheduler_name(s));
    cache[s] = read_file(file, NULL);
    if (!cache[s])
        snprintf(err, errlen, "%s: cannot read the %s template: %s", file, scheduler_name(s), strerror(errno));
    free(file);
    return cache[s];
}

static const Slot *find_slot(const Slot *slots, const char *name, size_t len) {
    for (const Slot *s = slots; s->name; s++)
        if (strlen(s->name) == len && !strncmp(s->name, name, len)) return s;
    return NULL;
}

static int fill(const char *tmpl, const Slot *slots, WfBuf *out, char *err, size_t errlen) {
    const char *p = tmpl;
    WfRef ref;
    for (int found; (found = wf_next_ref(p, &ref));) {
        if (found < 0) {
            snprintf(err, errlen, "template: unclosed '{{'");
            return -1;
        }
        const Slot *slot = find_slot(slots, ref.name, ref.name_len);
        if (!slot) {
            snprintf(err, errlen, "template: unknown slot '%.*s'", (int)(ref.end - ref.start), ref.start);
            return -1;
        }
        bool line_start = ref.start == tmpl || ref.start[-1] == '\n';
        bool line_end = *ref.end == '\n' || *ref.end == '\0';
        wfb_addn(out, p, (size_t)(ref.start - p));
        p = ref.end;
        if (!slot->text[0] && line_start && line_end) {
            if (*p == '\n') p++; // an empty block takes its line with it
            continue;
        }
        wfb_add(out, slot->text);
    }
    wfb_add(out, p);
    return 0;
}

// ---- values of a job ----

typedef struct {
    const Workflow *wf;
    const WfJob *job;
    const WfContext *cx;
    char job_dir[4096];
    char nums[7][24];
} JobCtx;

static const char *job_lookup(void *p, const char *name) {
    JobCtx *jc = p;
    const WfJob *job = jc->job;
    if (!strcmp(name, "run_dir")) return jc->cx->run_dir;
    if (!strcmp(name, "job_dir")) return jc->job_dir;
    if (!strcmp(name, "stage")) return jc->wf->stages[job->stage].name;
    if (!strcmp(name, "workflow_dir")) return jc->wf->dir;
    if (!strcmp(name, "workflow")) return jc->wf->name;
    const char *numbers[] = {"point",         "nodes",         "ranks",  "ranks_per_node",
                             "gpus_per_rank", "cpus_per_rank", "attempt"};
    int values[] = {job->point,         job->nodes,         job->ranks,      job->ranks_per_node,
                    job->gpus_per_rank, job->cpus_per_rank, jc->cx->attempt};
    for (int i = 0; i < 7; i++)
        if (!strcmp(name, numbers[i])) {
            snprintf(jc->nums[i], sizeof jc->nums[i], "%d", values[i]);
            return jc->nums[i];
        }
    return wf_job_lookup(jc->wf, job, name);
}

static void quoted(WfBuf *b, const char *value) {
    memset(b, 0, sizeof *b);
    wfb_add_quoted(b, value);
}

// Slurm: --time as D-HH:MM:SS is accepted, HH:MM:SS with hours > 24 too. LSF -W takes [HH:]MM.
static void directives(WfBuf *d, const Workflow *wf, const Site *site, const WfContext *cx, const WfJob *job,
                       const char *array_spec) {
    const WfStage *st = &wf->stages[job->stage];
    char t[16];
    int tasks = job->ranks ? job->ranks_per_node : 1;
    if (site->scheduler == SCHED_SLURM) {
        if (array_spec) {
            wfb_addf(d, "#SBATCH --job-name=%s.%s\n", wf->name, st->name);
            wfb_addf(d, "#SBATCH --array=%s\n", array_spec);
            wfb_addf(d, "#SBATCH --output=%s/%s/%%a/slurm-%%A_%%a.out\n", cx->run_dir, st->name);
        } else {
            wfb_addf(d, "#SBATCH --job-name=%s.%s.%d\n", wf->name, st->name, job->point);
            wfb_addf(d, "#SBATCH --output=%s/%s/slurm-%%j.out\n", cx->run_dir, job->key);
        }
        wfb_add(d, "#SBATCH --open-mode=append\n");
        wfb_addf(d, "#SBATCH --nodes=%d\n", job->nodes);
        wfb_addf(d, "#SBATCH --ntasks-per-node=%d\n", tasks);
        wfb_addf(d, "#SBATCH --cpus-per-task=%d\n", job->cpus_per_rank);
        if (job->gpus_per_rank) wfb_addf(d, "#SBATCH --gpus-per-node=%d\n", tasks * job->gpus_per_rank);
        wfb_addf(d, "#SBATCH --time=%s\n", wf_fmt_time(job->time, t));
        wfb_add(d, "#SBATCH --signal=B:USR1@120\n");
        wfb_add(d, "#SBATCH --requeue\n");
        if (site->account[0]) wfb_addf(d, "#SBATCH --account=%s\n", site->account);
        if (site->partition[0]) wfb_addf(d, "#SBATCH --partition=%s\n", site->partition);
        if (site->qos[0]) wfb_addf(d, "#SBATCH --qos=%s\n", site->qos);
        if (site->constraint[0]) wfb_addf(d, "#SBATCH --constraint=%s\n", site->constraint);
        for (int i = 0; i < site->ndirectives; i++) wfb_addf(d, "#SBATCH %s\n", site->directives[i]);
    } else if (site->scheduler == SCHED_LSF) {
        if (array_spec) {
            wfb_addf(d, "#BSUB -J %s.%s[%s]\n", wf->name, st->name, array_spec);
            wfb_addf(d, "#BSUB -o %s/%s/lsf-%%J_%%I.out\n", cx->run_dir, st->name);
        } else {
            wfb_addf(d, "#BSUB -J %s.%s.%d\n", wf->name, st->name, job->point);
            wfb_addf(d, "#BSUB -o %s/%s/lsf-%%J.out\n", cx->run_dir, job->key);
        }
        wfb_addf(d, "#BSUB -nnodes %d\n", job->nodes);
        long minutes = (job->time + 59) / 60;
        wfb_addf(d, "#BSUB -W %ld:%02ld\n", minutes / 60, minutes % 60);
        wfb_add(d, "#BSUB -wa USR1\n#BSUB -wt 2\n");
        wfb_add(d, "#BSUB -r\n#BSUB -Q \"75\"\n");
        if (site->account[0]) wfb_addf(d, "#BSUB -P %s\n", site->account);
        if (site->partition[0]) wfb_addf(d, "#BSUB -q %s\n", site->partition);
        for (int i = 0; i < site->ndirectives; i++) wfb_addf(d, "#BSUB %s\n", site->directives[i]);
    }
    if (d->len && d->s[d->len - 1] == '\n') d->s[--d->len] = '\0';
}

static char *setup_block(const Site *site) {
    WfBuf b = {0};
    for (int i = 0; i < site->nmodules; i++) wfb_addf(&b, "module load %s\n", site->modules[i]);
    for (int i = 0; i < site->nenv; i++) {
        wfb_addf(&b, "export %s=", site->env_names[i]);
        wfb_add_quoted(&b, site->env_values[i]);
        wfb_add(&b, "\n");
    }
    if (site->archive[0]) {
        wfb_add(&b, "export LSST_SITE_ARCHIVE=");
        wfb_add_quoted(&b, site->archive);
        wfb_add(&b, "\n");
    }
    if (b.len) b.s[--b.len] = '\0';
    return wfb_take(&b);
}

char *wf_render_job(const Workflow *wf, const Site *site, const WfContext *cx, int j, char *err, size_t errlen) {
    const WfJob *job = &wf->jobs[j];
    const WfStage *st = &wf->stages[job->stage];
    const char *tmpl = template_text(cx, site->scheduler, err, errlen);
    if (!tmpl) return NULL;
    JobCtx jc = {.wf = wf, .job = job, .cx = cx};
    snprintf(jc.job_dir, sizeof jc.job_dir, "%s/%s", cx->run_dir, job->key);

    WfBuf command = {0}, e = {0};
    char msg[512];
    if (job->ranks) {
        if (wf_expand(site->launcher, job_lookup, &jc, &command, msg, sizeof msg)) {
            snprintf(err, errlen, "%s: launcher: %s", site->path, msg);
            wfb_free(&command);
            return NULL;
        }
        wfb_add(&command, " ");
    }
    if (wf_expand(st->run, job_lookup, &jc, &e, msg, sizeof msg)) {
        snprintf(err, errlen, "%s: stage %s: run: %s", wf->path, st->name, msg);
        wfb_free(&command);
        wfb_free(&e);
        return NULL;
    }
    // Written as is: indenting the lines would change multi-line quoted values.
    wfb_add(&command, e.s);
    wfb_free(&e);
    while (command.len && command.s[command.len - 1] == '\n') command.s[--command.len] = '\0';

    WfBuf d = {0}, q_bin, q_run, q_job, q_stage, q_point, gen = {0};
    directives(&d, wf, site, cx, job, NULL);
    quoted(&q_bin, cx->bin_dir);
    quoted(&q_run, cx->run_dir);
    quoted(&q_job, jc.job_dir);
    quoted(&q_stage, st->name);
    char point[16];
    snprintf(point, sizeof point, "%d", job->point);
    quoted(&q_point, point);
    wfb_addf(&gen, "lsst-submit: workflow %s, stage %s, point %d%s%s%s, site %s", wf->name, st->name, job->point,
             job->label[0] ? " (" : "", job->label, job->label[0] ? ")" : "", site->name);
    char *setup = setup_block(site);
    Slot slots[] = {{"directives", d.s ? d.s : ""}, {"generated", gen.s},      {"bin_dir", q_bin.s},
                    {"run_dir", q_run.s},          {"job_dir", q_job.s},      {"stage", q_stage.s},
                    {"point", q_point.s},          {"setup", setup},          {"command", command.s},
                    {NULL, NULL}};
    WfBuf out = {0};
    int rc = fill(tmpl, slots, &out, err, errlen);
    wfb_free(&d);
    wfb_free(&q_bin);
    wfb_free(&q_run);
    wfb_free(&q_job);
    wfb_free(&q_stage);
    wfb_free(&q_point);
    wfb_free(&gen);
    wfb_free(&command);
    free(setup);
    if (rc) {
        wfb_free(&out);
        return NULL;
    }
    return wfb_take(&out);
}

char *wf_render_array(const Workflow *wf, const Site *site, const WfContext *cx, int s, const bool *selected) {
    const WfStage *st = &wf->stages[s];
    int lsf = site->scheduler == SCHED_LSF, count = 0, first = -1;
    for (int p = 0; p < st->npoints; p++)
        if (!selected || selected[st->first_job + p]) {
            count++;
            if (first < 0) first = p;
        }
    // All points: a range; a resubmit of some: the list of their indices (LSF counts from 1).
    WfBuf spec = {0};
    if (count == st->npoints) wfb_addf(&spec, "%d-%d", lsf, st->npoints - 1 + lsf);
    else
        for (int p = 0; p < st->npoints; p++)
            if (!selected || selected[st->first_job + p]) wfb_addf(&spec, "%s%d", spec.len ? "," : "", p + lsf);
    wfb_addf(&spec, "%%%d", site->array_throttle);
    WfBuf b = {0}, d = {0};
    directives(&d, wf, site, cx, &wf->jobs[st->first_job + (first < 0 ? 0 : first)], spec.s);
    wfb_free(&spec);
    wfb_add(&b, "#!/bin/bash\n");
    wfb_add(&b, d.s);
    wfb_addf(&b, "\n# lsst-submit: workflow %s, stage %s as one job array of %d tasks (more jobs than site %s's "
                 "max_queued %d);\n# task i runs %s/i/job.sh.\n",
             wf->name, st->name, count, site->name, site->max_queued, st->name);
    wfb_add(&b, "exec bash ");
    char *stage_dir = xasprintf("%s/%s", cx->run_dir, st->name);
    wfb_add_quoted(&b, stage_dir);
    free(stage_dir);
    if (site->scheduler == SCHED_LSF) wfb_add(&b, "/\"$((LSB_JOBINDEX - 1))\"/job.sh\n");
    else wfb_add(&b, "/\"$SLURM_ARRAY_TASK_ID\"/job.sh\n");
    wfb_free(&d);
    return wfb_take(&b);
}

// ---- the plan ----

// ":<prep/0>:<train[]>": what job j waits for (wf_job_deps, as the real submission), each
// named as the plan names it. "" when nothing. deps: room for njobs + 1 job indices.
static void deps_text(WfBuf *b, const Workflow *wf, int j, const bool *selected, int *deps) {
    int ndeps = wf_job_deps(wf, j, selected, deps);
    for (int d = 0; d < ndeps; d++) {
        const WfJob *dep = &wf->jobs[deps[d]];
        const WfStage *st = &wf->stages[dep->stage];
        if (st->array) wfb_addf(b, ":<%s[]>", st->name);
        else wfb_addf(b, ":<%s>", dep->key);
    }
}

static int selected_points(const WfStage *st, const bool *selected) {
    int n = 0;
    for (int p = 0; p < st->npoints; p++) n += !selected || selected[st->first_job + p];
    return n;
}

void wf_print_plan(FILE *fp, const Workflow *wf, const Site *site, const char *run_dir, const bool *selected) {
    int njobs = 0;
    for (int j = 0; j < wf->njobs; j++) njobs += !selected || selected[j];
    double node_hours = workflow_node_hours(wf, selected);
    fprintf(fp, "workflow  %s (%s)\n", wf->name, wf->path);
    fprintf(fp, "site      %s (%s, scheduler %s)\n", site->name, site->path, scheduler_name(site->scheduler));
    fprintf(fp, "run dir   %s\n", run_dir);
    fprintf(fp, "plan      %d job%s in %d stage%s, %.2f node-hours requested\n", njobs, njobs == 1 ? "" : "s",
            wf->nstages, wf->nstages == 1 ? "" : "s", node_hours);
    fprintf(fp, "stages (dependency order):\n");
    for (int k = 0; k < wf->nstages; k++) {
        const WfStage *st = &wf->stages[wf->order[k]];
        const WfJob *job = &wf->jobs[st->first_job];
        char t[16], res[96];
        if (job->ranks)
            snprintf(res, sizeof res, "%d node%s, %d rank%s", job->nodes, job->nodes == 1 ? "" : "s", job->ranks,
                     job->ranks == 1 ? "" : "s");
        else snprintf(res, sizeof res, "%d node%s", job->nodes, job->nodes == 1 ? "" : "s");
        if (job->gpus_per_rank)
            snprintf(res + strlen(res), sizeof res - strlen(res), ", %d GPU%s/rank", job->gpus_per_rank,
                     job->gpus_per_rank == 1 ? "" : "s");
        fprintf(fp, "  %-14s %5d job%s%s  %-28s x %s  after: ", st->name, st->npoints, st->npoints == 1 ? " " : "s",
                st->array ? " (array)" : "", res, wf_fmt_time(job->time, t));
        for (int a = 0; a < st->nafter; a++) fprintf(fp, "%s%s", a ? ", " : "", wf->stages[st->after[a]].name);
        fprintf(fp, "%s\n", st->nafter ? "" : "-");
    }
    fprintf(fp, "submission (all held, then released together):\n");
    int *order = workflow_job_order(wf), *dep_buf = xcalloc((size_t)wf->njobs + 1, sizeof(int));
    const char *cmd = site->scheduler == SCHED_SLURM ? "sbatch --parsable --hold"
                      : site->scheduler == SCHED_LSF ? "bsub -H"
                                                     : "run";
    for (int k = 0; k < wf->njobs; k++) {
        const WfJob *job = &wf->jobs[order[k]];
        const WfStage *st = &wf->stages[job->stage];
        if (!wf_submits(wf, order[k], selected)) continue; // unselected, or an array's later task
        WfBuf deps = {0};
        deps_text(&deps, wf, order[k], selected, dep_buf);
        const char *script = st->array ? "array.sh" : "job.sh";
        char where[512];
        if (st->array) snprintf(where, sizeof where, "%s/%s", st->name, script);
        else snprintf(where, sizeof where, "%s/%s", job->key, script);
        fprintf(fp, "  %-24s %s", st->array ? st->name : job->key, cmd);
        if (site->scheduler == SCHED_SLURM && deps.len)
            fprintf(fp, " --dependency=afterok%s --kill-on-invalid-dep=yes", deps.s);
        if (site->scheduler == SCHED_LSF && deps.len) {
            fprintf(fp, " -w '");
            const char *p = deps.s + 1;
            for (bool first = true; *p; first = false) {
                const char *next = strchr(p, ':');
                size_t len = next ? (size_t)(next - p) : strlen(p);
                fprintf(fp, "%sdone(%.*s)", first ? "" : " && ", (int)len, p);
                p += len + (next ? 1 : 0);
            }
            fprintf(fp, "'");
        }
        if (site->scheduler == SCHED_LOCAL && deps.len) fprintf(fp, " after%s", deps.s);
        fprintf(fp, " %s%s", site->scheduler == SCHED_LSF ? "< " : "", where);
        if (st->array) fprintf(fp, "   (%d tasks, at most %d at once)", selected_points(st, selected), site->array_throttle);
        else if (job->label[0]) fprintf(fp, "   # %s", job->label);
        fprintf(fp, "\n");
        wfb_free(&deps);
    }
    free(order);
    free(dep_buf);
}
