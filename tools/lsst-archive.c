// lsst-archive: one deterministic archive of a run directory with MANIFEST.sha256 and
// the provenance (ARCHITECTURE §6); --verify checks one; --extract unpacks one safely.
// After writing, the site's archive command (htar, hsi, a copy to a project directory)
// runs when one is configured: --then CMD, or $LSST_SITE_ARCHIVE, which the batch
// scripts lsst-submit writes export from the site profile's `archive:` key.
#include "archive_check.h"
#include "archive_create.h"
#include "common.h"
#include "workflow.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void usage(FILE *f) {
    fputs("usage: lsst-archive RUNDIR [-o FILE] [--then CMD | --no-then]\n"
          "       lsst-archive --verify FILE\n"
          "       lsst-archive --extract FILE DIR\n"
          "\n"
          "Write one deterministic archive of a run directory: a tar (pax) of RUNDIR's content sorted by path,\n"
          "fixed mtimes, owners and modes, nothing about the host, so the same content always gives the same\n"
          "bytes; MANIFEST.sha256 (sha256 of every file) and provenance.yaml inside (the run's own, or a\n"
          "generated one with the lsst version and git commit). Compression by FILE's suffix: .tar.zst\n"
          "(zstd), .tar.xz (xz) or .tar (none).\n"
          "\n"
          "  -o, --output FILE      the archive (default: RUNDIR.tar.zst beside RUNDIR); replaced atomically\n"
          "      --then CMD         after writing, run CMD with /bin/sh; {{archive}}, {{archive_name}} and\n"
          "                         {{run_dir}} expand to the shell-quoted archive path, its file name and the\n"
          "                         run directory (also in $LSST_ARCHIVE, $LSST_RUN_DIR). Default CMD:\n"
          "                         $LSST_SITE_ARCHIVE (the site profile's `archive:` command in batch jobs)\n"
          "      --no-then          do not run $LSST_SITE_ARCHIVE\n"
          "      --verify FILE      recompute every checksum; exit 1 naming the first bad member\n"
          "      --extract FILE DIR verify, then extract into DIR/NAME; refuses absolute paths, '..', links\n"
          "                         leaving DIR, and an existing DIR/NAME\n"
          "  -h, --help             this help\n"
          "      --version          version and git commit\n"
          "\n"
          "Exit status: 0 done, 1 runtime failure (unreadable run, bad archive, failed command), 2 usage.\n"
          "\n"
          "example:\n"
          "  lsst-archive runs/seq-scaling/20261126-101500-4f2a\n"
          "  lsst-archive runs/x -o /proj/abc/x.tar.zst --then 'hsi put {{archive}} : lsst/{{archive_name}}'\n"
          "  lsst-archive --verify runs/seq-scaling/20261126-101500-4f2a.tar.zst\n"
          "  lsst-archive --extract runs/seq-scaling/20261126-101500-4f2a.tar.zst restored/\n",
          f);
}

// The names an archive command may use: {{archive}}, {{archive_name}}, {{run_dir}}.
typedef struct {
    const char *archive, *run_dir;
    char unknown[160];   // "{{name}}" of the last name asked for that has no value
} ThenNames;

static const char *then_lookup(void *ctx, const char *name) {
    ThenNames *t = ctx;
    if (!strcmp(name, "archive")) return t->archive;
    if (!strcmp(name, "archive_name")) return path_basename(t->archive);
    if (!strcmp(name, "run_dir")) return t->run_dir;
    snprintf(t->unknown, sizeof t->unknown, "{{%s}}", name);
    return NULL;
}

// cmd with each {{name}} as ONE single-quoted shell word (wf_expand, as in batch scripts);
// NULL with the reason in err for an unknown name or an unclosed "{{".
static char *expand_command(const char *cmd, const char *archive, const char *run_dir, char *err, size_t errlen) {
    ThenNames names = {.archive = archive, .run_dir = run_dir};
    WfBuf line = {0};
    char msg[256];
    if (wf_expand(cmd, then_lookup, &names, &line, msg, sizeof msg) != 0) {
        if (names.unknown[0]) snprintf(err, errlen, "unknown placeholder %s", names.unknown);
        else snprintf(err, errlen, "%s", msg);
        wfb_free(&line);
        return NULL;
    }
    return wfb_take(&line);
}

static int run_then(const char *cmd, const char *archive, const char *run_dir) {
    char why[256];
    char *abs_archive = realpath(archive, NULL), *abs_run = realpath(run_dir, NULL);
    char *line = expand_command(cmd, abs_archive ? abs_archive : archive, abs_run ? abs_run : run_dir, why, sizeof why);
    if (!line) lsst_die(EXIT_USAGE, "archive command '%s': %s", cmd, why);   // checked before
    setenv("LSST_ARCHIVE", abs_archive ? abs_archive : archive, 1);
    setenv("LSST_RUN_DIR", abs_run ? abs_run : run_dir, 1);
    fprintf(stderr, "%s: running: %s\n", lsst_prog, line);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) lsst_die(EXIT_RUNTIME, "cannot start the archive command: %s", strerror(errno));
    if (pid == 0) {
        // stdout of the command goes to stderr: stdout carries only the archive path.
        dup2(STDERR_FILENO, STDOUT_FILENO);
        execl("/bin/sh", "sh", "-c", line, (char *)NULL);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) lsst_die(EXIT_RUNTIME, "cannot wait for the archive command: %s", strerror(errno));
    int rc = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (WIFEXITED(status))
            lsst_error("the archive command failed (exit %d): %s; the archive is kept at %s", WEXITSTATUS(status), line,
                       archive);
        else lsst_error("the archive command was killed by signal %d: %s; the archive is kept at %s",
                        WTERMSIG(status), line, archive);
        rc = -1;
    }
    free(line);
    free(abs_archive);
    free(abs_run);
    return rc;
}

// Is path (existing or not) inside dir (existing)? Compares real paths of path's directory.
static bool inside(const char *path, const char *dir) {
    char *parent = path_dirname(path), *rp = realpath(parent, NULL), *rd = realpath(dir, NULL);
    bool in = false;
    if (rp && rd) {
        size_t n = strlen(rd);
        in = !strncmp(rp, rd, n) && (rp[n] == '\0' || rp[n] == '/' || n == 1);
    }
    free(parent);
    free(rp);
    free(rd);
    return in;
}

int main(int argc, char **argv) {
    lsst_prog = "lsst-archive";
    enum { OPT_VERSION = 256, OPT_VERIFY, OPT_EXTRACT, OPT_THEN, OPT_NO_THEN };
    static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                         {"verify", no_argument, NULL, OPT_VERIFY},
                                         {"extract", no_argument, NULL, OPT_EXTRACT},
                                         {"then", required_argument, NULL, OPT_THEN},
                                         {"no-then", no_argument, NULL, OPT_NO_THEN},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, OPT_VERSION},
                                         {NULL, 0, NULL, 0}};
    const char *out = NULL, *then = NULL;
    bool verify = false, extract = false, no_then = false;
    int c;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case OPT_VERIFY: verify = true; break;
        case OPT_EXTRACT: extract = true; break;
        case OPT_THEN: then = optarg; break;
        case OPT_NO_THEN: no_then = true; break;
        case 'h': usage(stdout); return EXIT_OK;
        case OPT_VERSION: lsst_print_version(); return EXIT_OK;
        default: fputs("Try 'lsst-archive --help'.\n", stderr); return EXIT_USAGE;
        }
    }
    int n_args = argc - optind;
    char **args = argv + optind;
    char err[2048];
    ArchiveSummary sum;

    if (verify || extract) {
        if (verify && extract) lsst_usage_error("%s", "--verify and --extract go alone");
        if (out || then || no_then) lsst_usage_error("%s", "-o, --then and --no-then are for writing an archive");
        if (n_args != (verify ? 1 : 2))
            lsst_usage_error("%s", verify ? "--verify takes one FILE" : "--extract takes FILE and DIR");
        if (!path_exists(args[0])) lsst_die(EXIT_USAGE, "%s: no such file", args[0]);
        if (verify) {
            if (archive_verify(args[0], &sum, err, sizeof err) != 0) lsst_die(EXIT_RUNTIME, "%s", err);
            printf("%s: OK: %s/ with %lld files (%llu bytes), %lld directories, %lld links; every checksum matches "
                   "MANIFEST.sha256\n",
                   args[0], sum.top, (long long)sum.files, (unsigned long long)sum.bytes, (long long)sum.dirs,
                   (long long)sum.links);
        } else {
            if (archive_extract(args[0], args[1], &sum, err, sizeof err) != 0) lsst_die(EXIT_RUNTIME, "%s", err);
            char *where = path_join(args[1], sum.top);
            printf("%s\n", where);
            free(where);
        }
        return EXIT_OK;
    }

    if (n_args != 1) lsst_usage_error("%s", n_args ? "one run directory at a time" : "no run directory given");
    if (then && no_then) lsst_usage_error("%s", "--then and --no-then contradict each other");
    const char *run_dir = args[0];
    if (!is_dir(run_dir))
        lsst_die(EXIT_USAGE, "%s: %s", run_dir, path_exists(run_dir) ? "not a directory" : "no such directory");
    char *trimmed = xstrdup(run_dir);
    for (size_t n = strlen(trimmed); n > 1 && trimmed[n - 1] == '/'; n--) trimmed[n - 1] = '\0';
    char *out_path = out ? xstrdup(out) : xasprintf("%s.tar.zst", trimmed);
    if (archive_compression_for(out_path) < 0)
        lsst_usage_error("%s: unknown archive suffix (use .tar.zst, .tar.xz or .tar)", out_path);
    if (inside(out_path, run_dir))
        lsst_usage_error("%s: the archive cannot be written inside the run directory it archives", out_path);
    const char *cmd = then ? then : no_then ? NULL : getenv("LSST_SITE_ARCHIVE");
    char why[256];
    char *probe = cmd ? expand_command(cmd, out_path, run_dir, why, sizeof why) : NULL;
    if (cmd && !probe)   // before writing anything
        lsst_die(EXIT_USAGE, "archive command '%s': %s (known: {{archive}}, {{archive_name}}, {{run_dir}})",
                 cmd, why);
    free(probe);

    ArchiveStats st;
    if (archive_create(run_dir, out_path, &st, err, sizeof err) != 0) lsst_die(EXIT_RUNTIME, "%s", err);
    fprintf(stderr, "%s: %s: %lld files (%llu bytes), %lld directories, %lld links%s\n", lsst_prog, out_path,
            (long long)st.files, (unsigned long long)st.bytes, (long long)st.dirs, (long long)st.links,
            st.skipped ? " (some entries not archived, see the warnings)" : "");
    int rc = EXIT_OK;
    if (cmd && *cmd && run_then(cmd, out_path, run_dir) != 0) rc = EXIT_RUNTIME;
    printf("%s\n", out_path);
    free(out_path);
    free(trimmed);
    return rc;
}
