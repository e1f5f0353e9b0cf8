// provenance.yaml of a run: which lsst (version, git commit and dirty state, sha256 of
// every binary), which toolchain and libraries, which modules, and the environment with
// anything named like a secret left out (its name listed, its value never written).
#include "common.h"
#include "workflow.h"

#include <dirent.h>
#include <dlfcn.h>
#include <hdf5.h>
#include <mpi.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>

extern char **environ;

bool wf_secret_name(const char *name) {
    static const char *const words[] = {"TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL",
                                        "PRIVATE", "AUTH", "COOKIE", NULL};
    char upper[256];
    size_t i = 0;
    for (; name[i] && name[i] != '=' && i + 1 < sizeof upper; i++)
        upper[i] = (char)(name[i] >= 'a' && name[i] <= 'z' ? name[i] - 32 : name[i]);
    upper[i] = '\0';
    for (int w = 0; words[w]; w++)
        if (strstr(upper, words[w])) return true;
    return false;
}

static void put(FILE *fp, int indent, const char *key, const char *value) {
    char *q = yn_quote(value ? value : "");
    fprintf(fp, "%*s%s: %s\n", indent, "", key, q);
    free(q);
}

// First line of a command's output ("" when it cannot run or fails: exit status above 1).
static char *first_line(char *const argv[]) {
    char *out = NULL;
    int rc = wf_capture(argv, NULL, true, &out);
    if (rc != 0 && rc != 1) out[0] = '\0';
    out[strcspn(out, "\n")] = '\0';
    return out;
}

static char *command_output_trimmed(char *const argv[]) {
    char *out = NULL;
    int rc = wf_capture(argv, NULL, false, &out);
    if (rc) out[0] = '\0';
    size_t n = strlen(out);
    while (n && (out[n - 1] == '\n' || out[n - 1] == ' ')) out[--n] = '\0';
    return out;
}

// A library's version through dlopen, for GPU libraries lsst may not link here.
static void dl_version(FILE *fp, const char *key, const char *const *libs, const char *sym) {
    for (int i = 0; libs[i]; i++) {
        void *h = dlopen(libs[i], RTLD_LAZY | RTLD_LOCAL);
        if (!h) continue;
        int (*get)(int *) = (int (*)(int *))dlsym(h, sym);
        int v = 0;
        if (get && get(&v) == 0) {
            char buf[64];
            // CUDA: 12040 -> 12.4; NCCL: 21903 -> 2.19.3 (>= 2.9: major*10000 + minor*100 + patch)
            if (!strcmp(key, "cuda_runtime")) snprintf(buf, sizeof buf, "%d.%d", v / 1000, v % 1000 / 10);
            else snprintf(buf, sizeof buf, "%d.%d.%d", v / 10000, v / 100 % 100, v % 100);
            put(fp, 2, key, buf);
            dlclose(h);
            return;
        }
        dlclose(h);
    }
    put(fp, 2, key, "not found");
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int wf_write_provenance(const char *dir, const WfContext *cx, int argc, char **argv, char *err, size_t errlen) {
    char *path = path_join(dir, "provenance.yaml");
    AtomicFile af;
    if (atomic_open(&af, path)) {
        snprintf(err, errlen, "%s: cannot create: %m", path);
        free(path);
        return -1;
    }
    FILE *fp = af.fp;
    fprintf(fp, "# Written by lsst-submit when the run was submitted.\n");
    fprintf(fp, "lsst:\n");
    put(fp, 2, "version", LSST_VERSION);
    put(fp, 2, "build", lsst_git());
    put(fp, 2, "root", cx->lsst_root);
    char *git_commit[] = {"git", "-C", (char *)cx->lsst_root, "rev-parse", "HEAD", NULL};
    char *commit = command_output_trimmed(git_commit);
    put(fp, 2, "commit", commit[0] ? commit : "unknown (not a git checkout)");
    if (commit[0]) {
        char *git_status[] = {"git", "-C", (char *)cx->lsst_root, "status", "--porcelain", "--untracked-files=no", NULL};
        char *status = command_output_trimmed(git_status);
        fprintf(fp, "  dirty: %s\n", status[0] ? "true" : "false");
        free(status);
    }
    free(commit);
    put(fp, 2, "bin_dir", cx->bin_dir);
    fprintf(fp, "  binaries:\n");
    DIR *d = opendir(cx->bin_dir);
    char **names = NULL;
    int nnames = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (!strncmp(e->d_name, "lsst-", 5)) {
            names = xrealloc(names, (size_t)(nnames + 1) * sizeof *names);
            names[nnames++] = xstrdup(e->d_name);
        }
    if (d) closedir(d);
    qsort(names, (size_t)nnames, sizeof *names, cmp_str);
    for (int i = 0; i < nnames; i++) {
        char *file = path_join(cx->bin_dir, names[i]), hex[65];
        uint64_t size = 0;
        if (sha256_file(file, hex, &size) == 0) fprintf(fp, "    %s: {sha256: %s, bytes: %llu}\n", names[i], hex,
                                                         (unsigned long long)size);
        free(file);
        free(names[i]);
    }
    free(names);

    fprintf(fp, "submitted:\n");
    char when[32];
    time_t now = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    put(fp, 2, "time", when);
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    put(fp, 2, "host", host);
    put(fp, 2, "user", getenv("USER") ? getenv("USER") : "");
    char *cwd = getcwd(NULL, 0);
    put(fp, 2, "cwd", cwd ? cwd : "");
    free(cwd);
    fprintf(fp, "  argv:\n");
    for (int i = 0; i < argc; i++) {
        char *q = yn_quote(wf_secret_name(argv[i]) && strchr(argv[i], '=') ? "<filtered: looks like a secret>" : argv[i]);
        fprintf(fp, "    - %s\n", q);
        free(q);
    }
    struct utsname un;
    if (uname(&un) == 0) {
        char *os = xasprintf("%s %s %s", un.sysname, un.release, un.machine);
        put(fp, 2, "os", os);
        free(os);
    }

    fprintf(fp, "toolchain:\n");
    put(fp, 2, "compiled_with", "gcc " __VERSION__);
    char *cc[] = {"cc", "--version", NULL};
    char *ccv = first_line(cc);
    put(fp, 2, "cc", ccv);
    free(ccv);
    char *mpicc[] = {"mpicc", "--showme:version", NULL};
    char *mpiccv = first_line(mpicc);
    put(fp, 2, "mpicc", mpiccv);
    free(mpiccv);
    char *nvcc[] = {"nvcc", "--version", NULL};
    char *nvccv = command_output_trimmed(nvcc);
    char *last = strrchr(nvccv, '\n');
    put(fp, 2, "nvcc", last ? last + 1 : nvccv[0] ? nvccv : "not found");
    free(nvccv);

    fprintf(fp, "libraries:\n");
    unsigned maj = 0, min = 0, rel = 0;
    H5get_libversion(&maj, &min, &rel);
    char h5[32];
    snprintf(h5, sizeof h5, "%u.%u.%u", maj, min, rel);
    put(fp, 2, "hdf5", h5);
    char mpi[MPI_MAX_LIBRARY_VERSION_STRING] = "";
    int mpilen = 0;
    MPI_Get_library_version(mpi, &mpilen); // allowed before MPI_Init (MPI-3)
    mpi[strcspn(mpi, "\n")] = '\0';
    put(fp, 2, "mpi", mpi);
    char *mpirun[] = {"mpirun", "--version", NULL};
    char *mpirunv = first_line(mpirun);
    put(fp, 2, "mpirun", mpirunv);
    free(mpirunv);
    put(fp, 2, "libyaml", yaml_get_version_string());
    put(fp, 2, "openssl", OpenSSL_version(OPENSSL_VERSION));
    dl_version(fp, "cuda_runtime", (const char *const[]){"libcudart.so", "libcudart.so.12", "libcudart.so.11.0", NULL},
               "cudaRuntimeGetVersion");
    dl_version(fp, "nccl", (const char *const[]){"libnccl.so.2", "libnccl.so", NULL}, "ncclGetVersion");
    char *smi[] = {"nvidia-smi", "--query-gpu=driver_version,name", "--format=csv,noheader", NULL};
    char *smiv = first_line(smi);
    put(fp, 2, "nvidia_driver", smiv[0] ? smiv : "not found");
    free(smiv);
    char *sinfo[] = {"sinfo", "-V", NULL};
    char *sinfov = first_line(sinfo);
    put(fp, 2, "slurm", sinfov[0] ? sinfov : "not found");
    free(sinfov);

    const char *loaded = getenv("LOADEDMODULES");
    fprintf(fp, "modules:%s\n", loaded && loaded[0] ? "" : " []");
    if (loaded && loaded[0]) {
        char *copy = xstrdup(loaded), *save = NULL;
        for (char *m = strtok_r(copy, ":", &save); m; m = strtok_r(NULL, ":", &save)) {
            char *q = yn_quote(m);
            fprintf(fp, "  - %s\n", q);
            free(q);
        }
        free(copy);
    }

    int nenv = 0;
    while (environ[nenv]) nenv++;
    char **env = xcalloc((size_t)nenv + 1, sizeof(char *));
    memcpy(env, environ, (size_t)nenv * sizeof(char *));
    qsort(env, (size_t)nenv, sizeof *env, cmp_str);
    fprintf(fp, "environment:\n");
    WfBuf filtered = {0};
    for (int i = 0; i < nenv; i++) {
        const char *eq = strchr(env[i], '=');
        if (!eq) continue;
        char *name = strndup(env[i], (size_t)(eq - env[i]));
        if (wf_secret_name(name)) {
            wfb_addf(&filtered, "  - %s\n", name);
        } else {
            char *qk = yn_quote(name), *qv = yn_quote(eq + 1);
            fprintf(fp, "  %s: %s\n", qk, qv);
            free(qk);
            free(qv);
        }
        free(name);
    }
    free(env);
    fprintf(fp, "# names that look like secrets (TOKEN, SECRET, PASSWORD, KEY, CREDENTIAL, ...): values not recorded\n");
    fprintf(fp, "environment_filtered:%s\n%s", filtered.len ? "" : " []", filtered.s ? filtered.s : "");
    wfb_free(&filtered);
    if (atomic_commit(&af)) {
        snprintf(err, errlen, "%s: cannot write: %m", path);
        free(path);
        return -1;
    }
    free(path);
    return 0;
}
