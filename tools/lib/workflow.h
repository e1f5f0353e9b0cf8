// Workflows (ARCHITECTURE §5): a workflow YAML + a site profile -> a validated plan of
// jobs (one per stage x matrix point) -> batch scripts rendered from templates/ ->
// jobs submitted with native dependencies, recorded in a journal.
//
//   workflow.c   loading, validation (file:line:col errors), planning (matrix, zip, DAG)
//   wf_site.c    site profiles: schema, limits (walltime by node count, queued jobs)
//   wf_render.c  {{name}} expansion (always ONE single-quoted shell word), scripts, plan text
//   wf_sched.c   scheduler drivers (slurm, lsf, local): submit/hold/release/cancel, queries
//   wf_journal.c the run's journal (append + fsync per line) and reading it back
//   wf_prov.c    provenance.yaml
#pragma once
#include "yaml_tree.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

// ---- a growable string ----
typedef struct {
    char *s;
    size_t len, cap;
} WfBuf;
void wfb_add(WfBuf *b, const char *text);
void wfb_addn(WfBuf *b, const char *text, size_t n);
void wfb_addf(WfBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void wfb_add_quoted(WfBuf *b, const char *value); // one single-quoted shell word
char *wfb_take(WfBuf *b);                         // the malloc'd text (never NULL); b is reset
void wfb_free(WfBuf *b);

// "HH:MM:SS" (hours may exceed 24) -> seconds; -1 when malformed.
long wf_parse_time(const char *text);
// seconds -> "HH:MM:SS" into buf[16].
const char *wf_fmt_time(long seconds, char buf[16]);
// Text made only of characters that are safe in a scheduler directive / file name.
bool wf_safe_word(const char *text, const char *extra_chars);

// Where this lsst lives: bin_dir is the directory of the running program; root the first
// of bin_dir/.., bin_dir/../.., bin_dir/../../.. holding templates/ (or $LSST_ROOT). Malloc'd.
int wf_locate(char **root, char **bin_dir, char *err, size_t errlen);

// ---- site profiles ----
typedef enum { SCHED_LOCAL, SCHED_SLURM, SCHED_LSF } Scheduler;
const char *scheduler_name(Scheduler s);
int scheduler_from_name(const char *name); // a Scheduler, or -1 for an unknown name

typedef struct {
    int max_nodes; // a job of up to this many nodes ...
    long seconds;  // ... may run this long
} WalltimeLimit;

typedef struct {
    YNode *root;       // validated tree (written as site.yaml of the run)
    char *path;        // where it was read
    char *name;
    Scheduler scheduler;
    const char *account, *partition, *qos, *constraint; // "" when absent
    const char *launcher;    // command prefix of multi-rank stages; may use {{ranks}} etc.
    const char *archive;     // long-term storage command, exported as LSST_SITE_ARCHIVE ("" if none)
    int cores_per_node;      // 0: not checked
    int gpus_per_node;
    int max_nodes;           // 0: not checked
    int max_queued;          // jobs a user may have queued; larger sweeps become arrays
    int array_throttle;      // K in --array=0-N%K
    long default_time;       // seconds, for stages without `time`
    WalltimeLimit *walltime; // ascending max_nodes
    int nwalltime;
    const char **modules;    // module load NAME
    int nmodules;
    const char **env_names, **env_values; // exported in every job
    int nenv;
    const char **directives; // extra scheduler directives, verbatim (#SBATCH / #BSUB lines)
    int ndirectives;
} Site;

// Load and validate a site profile: NAME (looked up as ROOT/site/NAME.yaml) or a path
// (anything with a '/' or ending in .yaml). 0, or -1 with "FILE:L:C: message" in err.
int site_load(Site *site, const char *name_or_path, const char *lsst_root, char *err, size_t errlen);
void site_free(Site *site);
// Longest walltime (seconds) the site allows a job of `nodes` nodes; 0 when unlimited.
long site_walltime_limit(const Site *site, int nodes);

// ---- workflows ----
enum { WF_NODES, WF_RANKS, WF_RANKS_PER_NODE, WF_GPUS_PER_RANK, WF_CPUS_PER_RANK, WF_TIME, WF_NRES };
extern const char *const wf_resource_names[WF_NRES];

typedef struct {
    char *name;
    const YNode *node; // the list (for messages)
    int nvalues;
    char **values;
    bool zip;          // paired with the other zip axes instead of crossed
} WfAxis;

typedef struct {
    char *name;
    const YNode *node;     // the stage's map
    const YNode *run_node; // its `run`
    const char *run;       // command template
    int nafter;
    int *after;            // indices of the stages this one waits for
    const YNode *res[WF_NRES]; // resource values as written (may be "{{name}}"); NULL: default
    int naxes;
    WfAxis *axes;          // matrix axes first, then zip axes
    int npoints;
    int first_job;         // jobs[first_job .. first_job + npoints)
    bool array;            // submitted as one job array (sweep larger than the site's queue cap)
} WfStage;

typedef struct {
    int stage, point;
    char *key;       // "stage/point", the job's directory under the run dir
    char *label;     // "scheme=lss seq=64" ("" without a matrix)
    const char **values; // one per axis of its stage
    int nodes, ranks, ranks_per_node, gpus_per_rank, cpus_per_rank;
    long time;       // seconds
} WfJob;

typedef struct {
    YNode *root;     // validated tree, vars resolved (written as workflow.yaml of the run)
    char *path;      // as given
    char *dir;       // absolute directory of the file ({{workflow_dir}})
    char *name;
    int nvars;
    char **var_names, **var_values;
    int nstages;
    WfStage *stages; // document order
    int *order;      // a topological order of stage indices
    int njobs;
    WfJob *jobs;     // grouped by stage in document order
} Workflow;

// Load, apply `--set NAME=VALUE` to vars, validate everything (schema, stage names,
// `after`, cycles, matrix/zip shapes, {{references}}, resources against the site's limits)
// and plan the jobs. 0, or -1 with one line "FILE:L:C: message" in err.
int workflow_load(Workflow *wf, const char *path, char **sets, int nsets, const Site *site, char *err,
                  size_t errlen);
void workflow_free(Workflow *wf);
// The value of a var or matrix/zip name for one job; NULL when neither.
const char *wf_job_lookup(const Workflow *wf, const WfJob *job, const char *name);
// Jobs in submission order (stages topologically, points in order); malloc'd array of indices.
int *workflow_job_order(const Workflow *wf);
// Node-hours the selected jobs (NULL: all) request (sum of nodes x time limit).
double workflow_node_hours(const Workflow *wf, const bool *selected);
// What is submitted, given the selected jobs (NULL: all): each selected job on its own, an
// array stage once, as its first selected point. lsst-submit and its --dry-run plan both
// ask these two, so they cannot differ. Whether job j is such a submission:
bool wf_submits(const Workflow *wf, int j, const bool *selected);
// The submissions job j waits for: the selected jobs of the stages it is after (an array
// stage's once), as job indices (see wf_submits) into deps[], room for wf->njobs. Returns the count.
int wf_job_deps(const Workflow *wf, int j, const bool *selected, int *deps);

// ---- rendering ----
// Values a job's templates may use besides vars and matrix values.
typedef struct {
    const char *run_dir;      // absolute
    const char *bin_dir;      // absolute: the lsst that submits, first on PATH in every script
    const char *lsst_root;    // where templates/ and site/ are (one per process)
    int attempt;              // {{attempt}}: 1, or N of a resubmit's RUNDIR/attempt-N
} WfContext;

// Expand {{name}} in `tmpl`: each reference becomes ONE single-quoted shell word of the
// value (vars, the job's matrix values, builtins). -1 with a message in err for an unknown
// name or an unclosed "{{".
typedef const char *(*WfLookup)(void *ctx, const char *name);
int wf_expand(const char *tmpl, WfLookup lookup, void *ctx, WfBuf *out, char *err, size_t errlen);
// The names a template refers to, for validation: calls fn for each; stops at the first
// nonzero return and returns it; -2 for a malformed template (message in err).
int wf_template_refs(const char *tmpl, int (*fn)(void *ctx, const char *name, size_t len), void *ctx,
                     char *err, size_t errlen);
// One reference in a template: [start, end) is the whole "{{ ... }}", [name, name + name_len)
// the text between the braces without its surrounding spaces (not checked: see wf_identifier).
typedef struct {
    const char *start, *end;
    const char *name;
    size_t name_len;
} WfRef;
// The first reference at or after p: 1 with *ref, 0 when there is none, -1 for a "{{" with no
// "}}" after it (ref->start at that "{{"). The one parser of {{...}}: templates, slots, resources.
int wf_next_ref(const char *p, WfRef *ref);
// Letters, digits, '_', not starting with a digit: {{names}}, vars, matrix axes, env variables.
bool wf_identifier(const char *s, size_t len);

// The batch script of one job, from templates/<scheduler>.sh. Malloc'd; NULL with err.
char *wf_render_job(const Workflow *wf, const Site *site, const WfContext *cx, int job, char *err,
                    size_t errlen);
// The array driver of an array stage (runs <stage>/$TASK/job.sh) for the points selected
// (NULL: all). Malloc'd.
char *wf_render_array(const Workflow *wf, const Site *site, const WfContext *cx, int stage, const bool *selected);
// The plan: DAG, jobs, node-hours, the submission commands. Written to fp.
void wf_print_plan(FILE *fp, const Workflow *wf, const Site *site, const char *run_dir, const bool *selected);

// ---- journal ----
// One line per event, appended and fsync'd (so a crash never loses a submitted id):
//   lsst-journal 1 | workflow NAME | site NAME | scheduler NAME | attempt N
//   workflow_dir PATH        ({{workflow_dir}}: where the workflow file was)
//   job STAGE POINT [LABEL]  (the plan, before anything is submitted)
//   kept STAGE POINT ID DIR  (resubmit: a completed job of an earlier attempt)
//   submit STAGE POINT ID    (the scheduler accepted it; ID "123" or "123_4" for array tasks)
//   released | cancelled IDS | failed MESSAGE
//   start STAGE POINT        (local site: a job starts)
//   local STAGE POINT STATE EXIT ELAPSED_S (local site: a job's end)
//   end                      (local site: the submitter finished)
typedef struct {
    FILE *fp;
    int fd;
} Journal;
int journal_open(Journal *j, const char *path); // creates; 0 or -1 (errno)
int journal_add(Journal *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void journal_close(Journal *j);

typedef struct {
    char *stage, *point, *id; // id NULL when never submitted
    char *label;              // matrix values ("" without)
    bool started;             // local site: the job started
    char *kept_dir;           // resubmit: where the kept job's outputs are; NULL otherwise
    char *local_state;        // local site: final state; NULL otherwise
    int local_exit;
    long local_elapsed;
} JournalJob;

typedef struct {
    char *workflow, *site, *scheduler, *workflow_dir;
    int attempt;
    bool ended;               // local site: the submitter finished
    int njobs;
    JournalJob *jobs;
    bool released, cancelled;
    char *failed;
} JournalData;
int journal_read(JournalData *jd, const char *path, char *err, size_t errlen);
// The index in jd->jobs of job STAGE POINT ("3"), or -1; `hint`, where it probably is (job
// lines are in plan order), is tried before a search.
int journal_find(const JournalData *jd, const char *stage, const char *point, int hint);
// The directory of the newest attempt of a run: RUNDIR itself (attempt 1) or the highest
// RUNDIR/attempt-N; RUNDIR may also name an attempt directory. Malloc'd; *base_out (the
// first attempt's directory) malloc'd when not NULL.
char *wf_latest_attempt(const char *run_dir, char **base_out, int *attempt_out);
void journal_data_free(JournalData *jd);

// ---- scheduler queries and states ----
typedef enum { WST_ACTIVE, WST_OK, WST_BAD } WfStateClass;
typedef struct {
    char state[32];   // Slurm/LSF/local state name, e.g. "CANCELLED"
    char reason[64];  // e.g. "DependencyNeverSatisfied", "" if none
    char elapsed[16]; // "00:01:02" or "-"
    char exit[16];    // "0", "1", "sig 9" or "-"
} JobState;
WfStateClass wf_state_class(const char *state);
// Slurm prints "CANCELLED by 0", LSF "EXIT"/"DONE": normalize to one of the names above.
void wf_state_normalize(char *state, size_t len);

// The state of every job of a journal: from the journal itself (kept from an earlier
// attempt, run by the local site, never submitted) and, for the rest, ONE batched query
// (wf_query_states). states[i] for jd->jobs[i]. Returns the number of scheduler commands
// run, or -1 with err when the scheduler could not be asked (those jobs are then UNKNOWN).
int wf_journal_states(const JournalData *jd, JobState *states, char *err, size_t errlen);

// Query the states of `n` job ids in as few scheduler calls as possible (one `sacct` for
// any number of jobs; without accounting: one `scontrol show job`, then one `sacct -c`
// for jobs the controller has forgotten). states[i] for ids[i]. Returns the number of
// scheduler commands run, or -1 with err when none answered.
int wf_query_states(Scheduler s, char **ids, int n, JobState *states, char *err, size_t errlen);
// Parsers, separate so they are unit-tested without a scheduler.
void wf_parse_sacct(const char *text, char **ids, int n, JobState *states, bool *found);
void wf_parse_scontrol(const char *text, char **ids, int n, JobState *states, bool *found);
void wf_parse_bjobs(const char *text, char **ids, int n, JobState *states, bool *found);

// Run argv (PATH search) with stdin from `in_path` (NULL: /dev/null), capturing stdout
// (and stderr when err_too, else stderr goes to /dev/null); returns the exit status, 128+signal, or -1 (with *out the
// reason) when it could not start. *out malloc'd.
int wf_capture(char *const argv[], const char *in_path, bool err_too, char **out);

// ---- submission ----
// Submit one script, held, waiting for `deps` (ids) to complete. Returns the job id
// (malloc'd), or NULL with the scheduler's message in err.
char *wf_submit_held(Scheduler s, const char *script, char **deps, int ndeps, char *err, size_t errlen);
// Release / cancel jobs (batched). 0, or -1 with err.
int wf_release(Scheduler s, char **ids, int n, char *err, size_t errlen);
int wf_cancel(Scheduler s, char **ids, int n, char *err, size_t errlen);

// ---- provenance ----
// Write provenance.yaml into dir (atomically). 0 or -1 with err.
int wf_write_provenance(const char *dir, const WfContext *cx, int argc, char **argv, char *err, size_t errlen);
// Whether an environment variable's name looks like it holds a secret.
bool wf_secret_name(const char *name);
