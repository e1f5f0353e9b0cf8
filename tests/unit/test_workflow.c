// Workflows: {{name}} expansion is one single-quoted shell word whatever the value (checked
// by bash itself), planning (matrix x zip order, resources from matrix values, arrays),
// validation messages (cycles, unknown stages, site limits), scheduler output parsers,
// state classes, the journal, secret names.
#include "check.h"
#include "common.h"
#include "workflow.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[256];

static char *write_tmp(const char *name, const char *text) {
    char *path = xasprintf("%s/%s", tmpdir, name);
    write_file_atomic(path, text, strlen(text));
    return path;
}

static const char *lookup_values(void *ctx, const char *name) {
    const char *const *kv = ctx;
    for (int i = 0; kv[i]; i += 2)
        if (!strcmp(kv[i], name)) return kv[i + 1];
    return NULL;
}

// Expand "printf '<%s>' {{v}}" and let bash run it: the output must be exactly <value>.
static void check_shell_word(int index, const char *value) {
    const char *kv[] = {"v", value, NULL};
    WfBuf b = {0};
    char err[256];
    int rc = wf_expand("printf '<%s>' {{v}} {{ v }}", lookup_values, (void *)kv, &b, err, sizeof err);
    CHECK(rc == 0, "expand a value with shell syntax");
    char *argv[] = {"bash", "-c", b.s, NULL}, *out = NULL;
    char *cwd = getcwd(NULL, 0);
    if (chdir(tmpdir)) return;
    int st = wf_capture(argv, NULL, true, &out);
    if (chdir(cwd)) return;
    free(cwd);
    char *want = xasprintf("<%s><%s>", value, value);
    CHECK(st == 0 && !strcmp(out, want), "bash sees exactly one word, unchanged (value %d)", index);
    if (strcmp(out, want)) printf("#   want [%s] got [%s]\n", want, out);
    char *marker = path_join(tmpdir, "PWNED");
    CHECK(!path_exists(marker), "no command ran from the value");
    free(marker);
    free(want);
    free(out);
    wfb_free(&b);
}

static void test_expand(void) {
    const char *values[] = {"plain", "", "two words", "$(touch PWNED)", "`touch PWNED`", "a; touch PWNED",
                            "line\ntouch PWNED", "it's; touch PWNED; '", "\"; touch PWNED; \"", "$HOME \\ * ? [x]",
                            "'''", "{{v}}", NULL};
    for (int i = 0; values[i]; i++) check_shell_word(i, values[i]);
    WfBuf b = {0};
    char err[256];
    const char *kv[] = {"a", "1", NULL};
    CHECK(wf_expand("x {{b}}", lookup_values, (void *)kv, &b, err, sizeof err) == -1 && strstr(err, "'{{b}}'"),
          "unknown name: %s", err);
    wfb_free(&b);
    CHECK(wf_expand("x {{a", lookup_values, (void *)kv, &b, err, sizeof err) == -1 && strstr(err, "unclosed"),
          "unclosed reference: %s", err);
    wfb_free(&b);
}

static int count_refs(void *ctx, const char *name, size_t len) {
    (void)name;
    (void)len;
    (*(int *)ctx)++;
    return 0;
}

// The one scanner of {{ name }} references and the one identifier check.
static void test_refs(void) {
    const char *t = "a {{ x_1 }} b {{y";
    WfRef ref;
    CHECK(wf_next_ref(t, &ref) == 1 && ref.start == t + 2 && ref.end == t + 11 && ref.name_len == 3 &&
              !strncmp(ref.name, "x_1", 3),
          "a reference: whole span, name without the spaces");
    CHECK(wf_next_ref(ref.end, &ref) == -1 && ref.start == t + 14, "an unclosed '{{' is found where it starts");
    CHECK(wf_next_ref("no refs } {", &ref) == 0, "no reference");
    CHECK(wf_next_ref("{{}}", &ref) == 1 && ref.name_len == 0, "an empty reference is found (callers refuse it)");
    CHECK(wf_identifier("_a1", 3) && wf_identifier("ab-c", 2) && !wf_identifier("1a", 2) && !wf_identifier("", 0) &&
              !wf_identifier("a-b", 3) && !wf_identifier("a b", 3),
          "identifiers: letters, digits, _, no leading digit");
    char err[256];
    int n = 0;
    CHECK(wf_template_refs("{{a}} {{ b }} c", count_refs, &n, err, sizeof err) == 0 && n == 2, "two references");
    CHECK(wf_template_refs("x {{a b}}", count_refs, &n, err, sizeof err) == -2 &&
              strstr(err, "'{{a b}}' is not a reference"),
          "not a reference: %s", err);
    CHECK(wf_template_refs("x {{a", count_refs, &n, err, sizeof err) == -2 && strstr(err, "unclosed '{{' at offset 2"),
          "unclosed: %s", err);
}

static void test_time_and_names(void) {
    char buf[16];
    CHECK(wf_parse_time("00:01:00") == 60 && wf_parse_time("48:00:00") == 172800, "HH:MM:SS");
    CHECK(wf_parse_time("1:60:00") < 0 && wf_parse_time("10:00") < 0 && wf_parse_time("a:00:00") < 0 &&
              wf_parse_time("-1:00:00") < 0,
          "malformed times are refused");
    CHECK(!strcmp(wf_fmt_time(3723, buf), "01:02:03"), "format %s", buf);
    CHECK(wf_secret_name("MY_API_TOKEN") && wf_secret_name("aws_secret_access_key") && wf_secret_name("DB_PASSWORD") &&
              wf_secret_name("GPG_KEY") && wf_secret_name("CREDENTIALS_FILE") && !wf_secret_name("PATH") &&
              !wf_secret_name("HOME"),
          "secret-looking names");
}

static void test_states(void) {
    const char *active[] = {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "SUSPENDED", NULL};
    const char *bad[] = {"FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                         "DEADLINE", "UNKNOWN", "NOT_SUBMITTED", NULL};
    int ok = 1;
    for (int i = 0; active[i]; i++) ok &= wf_state_class(active[i]) == WST_ACTIVE;
    for (int i = 0; bad[i]; i++) ok &= wf_state_class(bad[i]) == WST_BAD;
    CHECK(ok && wf_state_class("COMPLETED") == WST_OK, "state classes");
    char s[32] = "CANCELLED by 0";
    wf_state_normalize(s, sizeof s);
    CHECK(!strcmp(s, "CANCELLED"), "'CANCELLED by 0' -> %s", s);
    snprintf(s, sizeof s, "EXIT");
    wf_state_normalize(s, sizeof s);
    CHECK(!strcmp(s, "FAILED"), "LSF EXIT -> %s", s);

    char *ids[] = {"10", "11", "12", "13_0", "13_1", "13_2", "13_3", "14"};
    JobState st[8];
    bool found[8] = {0};
    memset(st, 0, sizeof st);
    wf_parse_sacct("10|COMPLETED|00:00:05|0:0|None\n10.batch|COMPLETED|00:00:05|0:0|\n"
                   "11|FAILED|00:01:00|3:0|NonZeroExitCode\n12|CANCELLED by 0|00:00:00|0:0|DependencyNeverSatisfied\n"
                   "13_0|TIMEOUT|00:10:00|0:15|TimeLimit\n13_[1-3%2]|PENDING|00:00:00|0:0|JobArrayTaskLimit\n",
                   ids, 8, st, found);
    CHECK(found[0] && !strcmp(st[0].state, "COMPLETED") && !strcmp(st[0].exit, "0") &&
              !strcmp(st[0].elapsed, "00:00:05"),
          "sacct: completed job");
    CHECK(!strcmp(st[1].state, "FAILED") && !strcmp(st[1].exit, "3"), "sacct: failed, exit 3");
    CHECK(!strcmp(st[2].state, "CANCELLED") && !strcmp(st[2].reason, "DependencyNeverSatisfied"),
          "sacct: cancelled, dependency never satisfied");
    CHECK(!strcmp(st[3].state, "TIMEOUT") && !strcmp(st[3].exit, "sig 15"), "sacct: array task, timeout, signal");
    CHECK(found[4] && found[5] && found[6] && !strcmp(st[6].state, "PENDING") && !found[7],
          "sacct: pending array tasks 13_[1-3%%2] expand; job 14 not found");

    bool f2[8] = {0};
    memset(st, 0, sizeof st);
    wf_parse_scontrol("JobId=10 JobName=a JobState=COMPLETED Reason=None RunTime=00:00:07 ExitCode=0:0\n"
                      "JobId=17 ArrayJobId=13 ArrayTaskId=0 JobState=OUT_OF_MEMORY Reason=OutOfMemory RunTime=00:00:01 "
                      "ExitCode=0:125\n"
                      "JobId=13 ArrayJobId=13 ArrayTaskId=1-3%2 JobState=PENDING Reason=JobArrayTaskLimit RunTime=00:00:00 "
                      "ExitCode=0:0\n"
                      "JobId=14 JobState=NODE_FAIL Reason=NodeDown RunTime=00:00:09 ExitCode=1:0\n",
                      ids, 8, st, f2);
    CHECK(f2[0] && !strcmp(st[0].elapsed, "00:00:07"), "scontrol: completed");
    CHECK(f2[3] && !strcmp(st[3].state, "OUT_OF_MEMORY"), "scontrol: array task 13_0 out of memory");
    CHECK(f2[4] && f2[5] && f2[6] && !strcmp(st[5].reason, "JobArrayTaskLimit"), "scontrol: pending tasks 1-3%%2");
    CHECK(f2[7] && !strcmp(st[7].state, "NODE_FAIL") && !f2[1], "scontrol: node fail; 11 absent");

    bool f3[8] = {0};
    memset(st, 0, sizeof st);
    wf_parse_bjobs("10|DONE|5 second(s)|-|0\n11|EXIT|61 second(s)|3|0\n13|RUN|2 second(s)|-|2\n", ids, 8, st, f3);
    CHECK(f3[0] && !strcmp(st[0].state, "COMPLETED") && !strcmp(st[1].state, "FAILED") && !strcmp(st[1].exit, "3") &&
              !strcmp(st[1].elapsed, "00:01:01") && f3[5] && !strcmp(st[5].state, "RUNNING"),
          "bjobs: DONE, EXIT 3, array element 13[2] -> 13_2 running");
}

static void test_journal(void) {
    char *path = xasprintf("%s/journal", tmpdir);
    Journal j;
    CHECK(journal_open(&j, path) == 0, "journal created");
    journal_add(&j, "lsst-journal 1");
    journal_add(&j, "workflow w");
    journal_add(&j, "site slurm");
    journal_add(&j, "scheduler slurm");
    journal_add(&j, "attempt 2");
    journal_add(&j, "workflow_dir /some where");
    journal_add(&j, "kept a 0 41 a/0");
    journal_add(&j, "job b 0 x=1 y=two");
    journal_add(&j, "job b 1");
    journal_add(&j, "submit b 0 42");
    journal_add(&j, "released");
    journal_close(&j);
    CHECK(journal_open(&j, path) == -1, "an existing journal is never overwritten");
    JournalData jd;
    char err[256];
    int rc = journal_read(&jd, path, err, sizeof err);
    CHECK(rc == 0 && jd.njobs == 3 && jd.attempt == 2 && jd.released && !strcmp(jd.workflow_dir, "/some where"),
          "journal read back");
    if (!rc) {
        CHECK(!strcmp(jd.jobs[0].kept_dir, "a/0") && !strcmp(jd.jobs[0].id, "41") && !strcmp(jd.jobs[1].id, "42") &&
                  !strcmp(jd.jobs[1].label, "x=1 y=two") && !jd.jobs[2].id,
              "kept, submitted and unsubmitted jobs");
        journal_data_free(&jd);
    }
    char *bad = write_tmp("bad-journal", "lsst-journal 1\nworkflow w\nscheduler slurm\nsubmit nosuch 0 1\n");
    CHECK(journal_read(&jd, bad, err, sizeof err) == -1 && strstr(err, ":4:"), "malformed line named: %s", err);
    free(bad);
    bad = write_tmp("bad-journal2", "lsst-journal 1\nworkflow w\nscheduler pbs\n");
    CHECK(journal_read(&jd, bad, err, sizeof err) == -1 && strstr(err, "unknown scheduler 'pbs'"), "unknown scheduler: %s",
          err);
    free(bad);
    // Job lines out of plan order still match (the direct index misses, the search finds them).
    char *odd = write_tmp("odd-journal", "lsst-journal 1\nworkflow w\nscheduler slurm\njob b 1\njob a 0\njob b 0\n"
                                         "submit b 0 7\nsubmit b 1 8\nsubmit a 0 9\n");
    rc = journal_read(&jd, odd, err, sizeof err);
    CHECK(rc == 0 && !strcmp(jd.jobs[0].id, "8") && !strcmp(jd.jobs[1].id, "9") && !strcmp(jd.jobs[2].id, "7") &&
              journal_find(&jd, "b", "0", 0) == 2 && journal_find(&jd, "b", "0", 2) == 2 &&
              journal_find(&jd, "c", "0", 1) == -1,
          "job lines out of plan order: %s", rc ? err : "ok");
    if (!rc) journal_data_free(&jd);
    free(odd);
    free(path);
}

// Journal -> states without a scheduler: kept, local (completed, cancelled, running, pending), never submitted.
static void test_journal_states(void) {
    char *path = write_tmp("local-journal", "lsst-journal 1\nworkflow w\nscheduler local\nkept a 0 - a/0\n"
                                            "job b 0\njob b 1\njob c 0\njob d 0\nstart b 0\nlocal b 0 COMPLETED 0 65\n"
                                            "local b 1 CANCELLED 0 0\nstart c 0\n");
    JournalData jd;
    char err[256] = "";
    int rc = journal_read(&jd, path, err, sizeof err);
    CHECK(rc == 0, "local journal read: %s", rc ? err : "ok");
    if (rc) return;
    JobState st[5];
    int calls = wf_journal_states(&jd, st, err, sizeof err);
    CHECK(calls == 0 && !strcmp(st[0].state, "COMPLETED") && strstr(st[0].reason, "earlier attempt (a/0)") &&
              !strcmp(st[1].state, "COMPLETED") && !strcmp(st[1].elapsed, "00:01:05") && !strcmp(st[1].exit, "0") &&
              !strcmp(st[2].state, "CANCELLED") && !strcmp(st[2].exit, "-") && !strcmp(st[3].state, "RUNNING") &&
              !strcmp(st[4].state, "PENDING"),
          "local states from the journal alone (%d calls)", calls);
    journal_data_free(&jd);
    free(path);
    CHECK(scheduler_from_name("lsf") == SCHED_LSF && scheduler_from_name("local") == SCHED_LOCAL &&
              scheduler_from_name("pbs") == -1 && !strcmp(scheduler_name(SCHED_SLURM), "slurm"),
          "scheduler names both ways");
}

static const char *site_text = "name: testsite\nscheduler: slurm\nlauncher: srun -n {{ranks}}\n"
                               "cores_per_node: 8\ngpus_per_node: 4\n"
                               "limits: {max_nodes: 4, max_queued: 6, array_throttle: 3,\n"
                               "         walltime: [{nodes: 1, time: '01:00:00'}, {nodes: 4, time: '00:30:00'}]}\n";

static int load(Workflow *wf, Site *site, const char *text, char **sets, int nsets, char *err, size_t errlen) {
    char *path = write_tmp("wf.yaml", text);
    int rc = workflow_load(wf, path, sets, nsets, site, err, errlen);
    free(path);
    return rc;
}

static void test_plan(void) {
    char *spath = write_tmp("site.yaml", site_text), err[1024];
    Site site;
    int rc = site_load(&site, spath, tmpdir, err, sizeof err);
    CHECK(rc == 0, "site loads: %s", rc ? err : "ok");
    if (rc) return;
    Workflow wf;
    const char *text = "name: t\nvars: {n: 2}\nstages:\n"
                       "  - {name: b, after: [a], run: 'echo {{x}} {{y}} {{s}}', ranks: '{{n}}',\n"
                       "     matrix: {x: [1, 2]}, zip: {y: [p, q, r], s: [1, 2, 3]}}\n"
                       "  - {name: a, run: prep}\n";
    rc = load(&wf, &site, text, NULL, 0, err, sizeof err);
    CHECK(rc == 0, "matrix x zip workflow: %s", rc ? err : "ok");
    if (rc == 0) {
        CHECK(wf.njobs == 7 && wf.stages[0].npoints == 6, "2 x 3 points + 1 job: %d", wf.njobs);
        CHECK(!strcmp(wf.jobs[0].label, "x=1 y=p s=1") && !strcmp(wf.jobs[2].label, "x=1 y=r s=3") &&
                  !strcmp(wf.jobs[3].label, "x=2 y=p s=1"),
              "zip is paired and innermost: %s | %s | %s", wf.jobs[0].label, wf.jobs[2].label, wf.jobs[3].label);
        CHECK(wf.jobs[0].ranks == 2 && wf.jobs[0].ranks_per_node == 2 && wf.jobs[0].time == 3600,
              "ranks from a var, default time");
        CHECK(wf.order[0] == 1 && wf.order[1] == 0, "a before b");
        CHECK(wf.stages[0].array, "7 jobs > max_queued 6: the sweep becomes an array");
        int *order = workflow_job_order(&wf);
        CHECK(order[0] == 6 && order[1] == 0, "submission order follows the DAG");
        free(order);
        WfContext cx = {.run_dir = "/r/t/1", .bin_dir = "/opt/lsst/bin", .lsst_root = tmpdir};
        char *arr = wf_render_array(&wf, &site, &cx, 0, NULL);
        CHECK(strstr(arr, "#SBATCH --array=0-5%3\n") && strstr(arr, "exec bash '/r/t/1/b'/\"$SLURM_ARRAY_TASK_ID\"/job.sh"),
              "array driver: --array=0-5%%3");
        free(arr);
        bool sel[7] = {false, true, false, false, true, false, false};
        arr = wf_render_array(&wf, &site, &cx, 0, sel);
        CHECK(strstr(arr, "#SBATCH --array=1,4%3\n") != NULL, "a resubmitted array lists its tasks");
        free(arr);
        workflow_free(&wf);
    }
    // {{attempt}} comes from the context; template slots and references may have spaces.
    char *tdir = path_join(tmpdir, "templates");
    mkdir_p(tdir, 0755);
    free(write_tmp("templates/slurm.sh", "#!/bin/bash\n{{directives}}\n{{ setup }}\ncd {{job_dir}}\n{{command}}\n"));
    free(tdir);
    rc = load(&wf, &site,
              "name: t\nstages: [{name: a, run: 'echo {{attempt}} {{ x }}', nodes: '{{ n }}', time: '00:10:00',\n"
              "                   matrix: {x: [p q], n: [2]}}]\n",
              NULL, 0, err, sizeof err);
    CHECK(rc == 0 && wf.jobs[0].nodes == 2, "nodes from '{{ n }}': %s", rc ? err : "ok");
    if (rc == 0) {
        WfContext cx = {.run_dir = "/r/t/1", .bin_dir = "/b", .lsst_root = tmpdir, .attempt = 3};
        char *job = wf_render_job(&wf, &site, &cx, 0, err, sizeof err);
        CHECK(job && strstr(job, "\necho '3' 'p q'\n") && strstr(job, "\ncd '/r/t/1/a/0'\n") &&
                  strstr(job, "#SBATCH --nodes=2\n#") && strstr(job, "--requeue\ncd ") && !strstr(job, "{{"),
              "rendered job: {{attempt}} from the context, the empty {{ setup }} line gone%s%s", job ? "" : ": ",
              job ? "" : err);
        if (job && !strstr(job, "\necho '3' 'p q'\n")) printf("#   got:\n%s", job);
        free(job);
        workflow_free(&wf);
    }
    // What is submitted and what waits for what: one decision for lsst-submit and its plan.
    rc = load(&wf, &site,
              "name: t\nstages:\n  - {name: a, run: x}\n"
              "  - {name: b, after: [a], run: 'x {{i}}', matrix: {i: [0, 1, 2, 3, 4, 5, 6]}}\n"
              "  - {name: c, after: [a, b], run: y}\n",
              NULL, 0, err, sizeof err);
    CHECK(rc == 0 && wf.stages[1].array && wf.njobs == 9, "a, b (7-task array), c: %s", rc ? err : "ok");
    if (rc == 0) {
        int deps[9], n = wf_job_deps(&wf, 8, NULL, deps);
        CHECK(wf_submits(&wf, 1, NULL) && !wf_submits(&wf, 5, NULL) && wf_submits(&wf, 8, NULL) && n == 2 &&
                  deps[0] == 0 && deps[1] == 1,
              "all selected: b is submitted once (as b/0); c waits for a and b");
        bool sel[9] = {false, false, false, false, true, false, true, false, true}; // b/3, b/5, c/0: point 0 completed
        n = wf_job_deps(&wf, 8, sel, deps);
        CHECK(!wf_submits(&wf, 1, sel) && wf_submits(&wf, 4, sel) && !wf_submits(&wf, 6, sel) && !wf_submits(&wf, 0, sel) &&
                  n == 1 && deps[0] == 4 && wf_job_deps(&wf, 4, sel, deps) == 0,
              "resubmit without b/0: the array goes as b/3, c still waits for it, b for nothing");
        CHECK(workflow_node_hours(&wf, sel) == 3.0 && workflow_node_hours(&wf, NULL) == 9.0, "node-hours of the selection");
        workflow_free(&wf);
    }
    char *sets[] = {"n=4"};
    rc = load(&wf, &site, "name: t\nvars: {n: 2}\nstages: [{name: a, run: x, ranks: '{{n}}'}]\n", sets, 1, err,
              sizeof err);
    CHECK(rc == 0 && wf.jobs[0].ranks == 4, "--set overrides a var before planning");
    if (!rc) workflow_free(&wf);

    struct {
        const char *text, *want;
    } bad[] = {
        {"name: t\nstages:\n  - {name: a, run: x, after: [c]}\n  - {name: b, run: x, after: [a]}\n  - {name: c, run: x, after: [b]}\n",
         "a -> c -> b -> a"},
        {"name: t\nstages: [{name: a, run: x, after: [a]}]\n", "cycle: a -> a"},
        {"name: t\nstages: [{name: a, run: x}, {name: b, run: x, after: [aa]}]\n", "unknown stage 'aa' (did you mean 'a'?)"},
        {"name: t\nstages: [{name: a, run: x, nodes: 8}]\n", "8 nodes, but site testsite has at most 4"},
        {"name: t\nstages: [{name: a, run: x, ranks: 16}]\n", "16 ranks per node x 1 cpus_per_rank = 16 cores, but a testsite node has 8"},
        {"name: t\nstages: [{name: a, run: x, ranks: 8, gpus_per_rank: 1}]\n", "8 ranks per node x 1 GPUs = 8, but a testsite node has 4"},
        {"name: t\nstages: [{name: a, run: x, nodes: 2, time: '00:45:00'}]\n", "00:45:00 is longer than site testsite allows for 2 nodes (00:30:00)"},
        {"name: t\nstages: [{name: a, run: x, ranks: '{{r}}', matrix: {r: [2, 4, 12]}}]\n", "12 ranks per node x 1 cpus_per_rank = 12 cores, but a testsite node has 8 at point r=12"},
        {"name: t\nstages: [{name: a, run: 'x {{rnak}}', matrix: {rank: [1]}}]\n", "unknown name '{{rnak}}' (did you mean 'rank'?)"},
        {"name: t\nstages: [{name: a, run: x, zip: {p: [1, 2], q: [1]}}]\n", "zip pairs lists item by item, but 'q' has 1 values and 'p' has 2"},
        {"name: t\nstages: [{name: a, run: x, matrix: {r: [1, 2, 3, 4, 5, 6, 7]}, ranks: '{{r}}'}]\n",
         "must be one job array, but its points ask for different resources"},
        {"name: t\nstages: [{name: a, run: x, ranks: '{{a b}}'}]\n", "expected an integer or a {{name}}, got '{{a b}}'"},
        {"name: t\nstages: [{name: a, run: x, time: '{{t}}}}'}]\n", "expected a time HH:MM:SS or a {{name}}"},
        {"name: t\nstages: [{name: a, run: x, nodes: '{{ m }}'}]\n", "stages[0].nodes: unknown name '{{m}}'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rc = load(&wf, &site, bad[i].text, NULL, 0, err, sizeof err);
        CHECK(rc == -1 && strstr(err, bad[i].want) && strstr(err, "wf.yaml:"), "invalid workflow %zu: %s", i, err);
        if (rc == -1 && !strstr(err, bad[i].want)) printf("#   want: %s\n", bad[i].want);
        if (!rc) workflow_free(&wf);
    }
    char *badset[] = {"nn=3"};
    rc = load(&wf, &site, "name: t\nvars: {n: 2}\nstages: [{name: a, run: x}]\n", badset, 1, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "--set nn=3: unknown var 'nn' (did you mean 'n'?)"), "--set of an unknown var: %s", err);
    site_free(&site);
    free(spath);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_workflow.XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    test_expand();
    test_refs();
    test_time_and_names();
    test_states();
    test_journal();
    test_journal_states();
    test_plan();
    rm_rf(tmpdir);
    return check_done();
}
