// checkpoint: bit-exact round trip, layout seen through the plain HDF5 API, shape,
// missing/extra tensor and model mismatch messages, atomicity of failed writes,
// checkpoint_latest and checkpoint_path.
#include "check.h"
#include "checkpoint.h"
#include "common.h"

#include <dirent.h>
#include <hdf5.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];
static const char *MODEL = "{\"layers\": 2, \"dim\": 64, \"heads\": 4, \"mlp\": 256, \"vocab\": 256}";

enum { NT = 4 };
static const char *NAMES[NT] = {"wte", "h.qkvw", "h.ln1.b", "lnf.w"};
static const int NDIMS[NT] = {2, 3, 2, 1};
static const long SHAPES[NT][4] = {{256, 64}, {3, 192, 64}, {2, 64}, {64}};

static long numel(const CkptTensor *t) {
    long n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t next_u32(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

// A set of NT tensors; random bit patterns (NaNs with payloads, denormals, -0 included) when fill.
static void make_set(CkptTensor *ts, int fill) {
    for (int i = 0; i < NT; i++) {
        ts[i] = (CkptTensor){.name = NAMES[i], .ndim = NDIMS[i]};
        memcpy(ts[i].shape, SHAPES[i], sizeof ts[i].shape);
        long n = numel(&ts[i]);
        ts[i].data = xcalloc((size_t)n, sizeof(float));
        for (long k = 0; fill && k < n; k++) {
            uint32_t bits = next_u32();
            memcpy(&ts[i].data[k], &bits, 4);
        }
    }
    if (fill) {
        uint32_t specials[] = {0x80000000u, 0x00000001u, 0x7fc01234u, 0xffbfffffu, 0x7f800000u};
        memcpy(ts[0].data, specials, sizeof specials);
    }
}

static void free_set(CkptTensor *ts) {
    for (int i = 0; i < NT; i++) free(ts[i].data);
}

static int sets_equal(const CkptTensor *a, const CkptTensor *b) {
    for (int i = 0; i < NT; i++)
        if (memcmp(a[i].data, b[i].data, (size_t)numel(&a[i]) * sizeof(float))) return 0;
    return 1;
}

static CkptState test_state(void) {
    return (CkptState){.step = 500, .seed = 0xFEDCBA9876543210ull, .rng = {1, 2, 0xFFFFFFFFFFFFFFFFull, 42},
                       .data_position = 123456789012345LL, .model_json = MODEL};
}

static int count_tmp_files(void) {
    DIR *d = opendir(tmpdir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

static void test_round_trip(void) {
    char *path = checkpoint_path(tmpdir, 500), err[512] = "";
    CkptTensor p[NT], m[NT], v[NT], p2[NT], m2[NT], v2[NT];
    make_set(p, 1), make_set(m, 1), make_set(v, 1), make_set(p2, 0), make_set(m2, 0), make_set(v2, 0);
    CkptState st = test_state();
    double t0 = now_seconds();
    int rc = checkpoint_write(path, p, m, v, NT, &st, err, sizeof err);
    CHECK(rc == 0, "checkpoint_write %s (%s) in %.3f s", path, err, now_seconds() - t0);
    CHECK(count_tmp_files() == 0, "no temporary file left after a write");

    CkptState got = {.model_json = MODEL};
    rc = checkpoint_read(path, p2, m2, v2, NT, &got, err, sizeof err);
    CHECK(rc == 0, "checkpoint_read (%s)", err);
    CHECK(sets_equal(p, p2) && sets_equal(m, m2) && sets_equal(v, v2), "params, adam_m, adam_v are bit-exact");
    CHECK(got.step == st.step && got.seed == st.seed && !memcmp(got.rng, st.rng, sizeof st.rng) &&
              got.data_position == st.data_position && got.model_json == MODEL,
          "step, seed, rng[4], data_position read back");

    got = (CkptState){0};   // model NULL: not compared
    CHECK(checkpoint_read(path, p2, m2, v2, NT, &got, err, sizeof err) == 0 && got.step == 500,
          "model_json NULL on input: no comparison (%s)", err);

    // The layout as any HDF5 reader sees it.
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, "/params/h.qkvw", H5P_DEFAULT), type = H5Dget_type(ds), dcpl = H5Dget_create_plist(ds);
    hid_t sp = H5Dget_space(ds);
    hsize_t dims[4] = {0};
    int nd = H5Sget_simple_extent_dims(sp, dims, NULL);
    CHECK(nd == 3 && dims[0] == 3 && dims[1] == 192 && dims[2] == 64 && H5Tget_class(type) == H5T_FLOAT &&
              H5Tget_size(type) == 4 && H5Pget_layout(dcpl) == H5D_CONTIGUOUS,
          "/params/h.qkvw: float32 (3,192,64), contiguous; the dot stays in the name");
    H5Sclose(sp), H5Pclose(dcpl), H5Tclose(type), H5Dclose(ds);
    int all = 1;
    const char *groups[] = {"params", "adam_m", "adam_v"};
    for (int g = 0; g < 3; g++)
        for (int i = 0; i < NT; i++) {
            char *name = xasprintf("/%s/%s", groups[g], NAMES[i]);
            all &= H5Lexists(f, name, H5P_DEFAULT) > 0;
            free(name);
        }
    CHECK(all, "every tensor is in /params, /adam_m and /adam_v");
    int version = 0;
    uint64_t rng[4] = {0};
    hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    H5Aread(a, H5T_NATIVE_INT, &version);
    H5Aclose(a);
    a = H5Aopen(f, "rng", H5P_DEFAULT);
    H5Aread(a, H5T_NATIVE_UINT64, rng);
    H5Aclose(a);
    CHECK(version == 1 && rng[2] == 0xFFFFFFFFFFFFFFFFull, "root attributes format_version = 1 and rng (uint64[4])");
    H5Fclose(f);

    free_set(p), free_set(m), free_set(v), free_set(p2), free_set(m2), free_set(v2);
    free(path);
}

static void test_mismatches(void) {
    char *path = xasprintf("%s/ckpt.h5", tmpdir), err[512] = "";
    CkptTensor p[NT], m[NT], v[NT];
    make_set(p, 1), make_set(m, 1), make_set(v, 1);
    CkptState st = test_state();
    checkpoint_write(path, p, m, v, NT, &st, err, sizeof err);

    // Expected (2,192,64), the file has (3,192,64).
    CkptTensor q[NT], qm[NT], qv[NT];
    make_set(q, 0), make_set(qm, 0), make_set(qv, 0);
    free(q[1].data);
    q[1].shape[0] = qm[1].shape[0] = qv[1].shape[0] = 2;
    q[1].data = xcalloc(2 * 192 * 64, sizeof(float));
    CkptState got = {.model_json = MODEL};
    int rc = checkpoint_read(path, q, qm, qv, NT, &got, err, sizeof err);
    char *want = xasprintf("%s: /params/h.qkvw has shape (3,192,64), expected (2,192,64)", path);
    CHECK(rc == -1 && !strcmp(err, want), "shape mismatch names the tensor and both shapes: %s", err);
    free(want);
    int untouched = 1;
    for (long k = 0; k < 256 * 64; k++) untouched &= q[0].data[k] == 0.0f;
    CHECK(untouched, "no buffer is written when a shape does not match");
    q[1].shape[0] = qm[1].shape[0] = qv[1].shape[0] = 3;
    free(q[1].data);
    q[1].data = xcalloc(3 * 192 * 64, sizeof(float));

    // A rank mismatch in adam_v only: (64) vs (64,1).
    qv[3].ndim = 2;
    qv[3].shape[1] = 1;
    rc = checkpoint_read(path, q, qm, qv, NT, &got, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "/adam_v/lnf.w has shape (64), expected (64,1)"), "rank mismatch: %s", err);
    qv[3].ndim = 1;

    // A tensor the file lacks, and one the model lacks.
    q[2].name = qm[2].name = qv[2].name = "h.ln1.w";
    rc = checkpoint_read(path, q, qm, qv, NT, &got, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "/params/h.ln1.w is missing"), "missing tensor: %s", err);
    q[2].name = qm[2].name = qv[2].name = NAMES[2];
    rc = checkpoint_read(path, q, qm, qv, NT - 1, &got, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "/params/lnf.w is in the file but not in the model"), "extra tensor: %s", err);

    // Another model.
    got.model_json = "{\"layers\": 3}";
    rc = checkpoint_read(path, q, qm, qv, NT, &got, err, sizeof err);
    CHECK(rc == -1 && strstr(err, path) && strstr(err, MODEL) && strstr(err, "{\"layers\": 3}"),
          "model mismatch names both models: %s", err);

    // Not a checkpoint at all.
    rc = checkpoint_read(tmpdir, q, qm, qv, NT, &got, err, sizeof err);
    CHECK(rc == -1 && strstr(err, tmpdir) && !strchr(err, '\n'), "reading a directory fails with one line: %s", err);
    char *missing = xasprintf("%s/nope.h5", tmpdir);
    rc = checkpoint_read(missing, q, qm, qv, NT, &got, err, sizeof err);
    CHECK(rc == -1 && strstr(err, missing) && strstr(err, "No such file or directory"), "missing file: %s", err);
    free(missing);

    free_set(q), free_set(qm), free_set(qv);
    free_set(p), free_set(m), free_set(v);
    free(path);
}

static void test_atomic(void) {
    char err[512] = "";
    CkptTensor p[NT], m[NT], v[NT];
    make_set(p, 1), make_set(m, 1), make_set(v, 1);
    CkptState st = test_state();

    // Target directory missing.
    char *nodir = xasprintf("%s/no-such-dir/step-000001.h5", tmpdir);
    int rc = checkpoint_write(nodir, p, m, v, NT, &st, err, sizeof err);
    CHECK(rc == -1 && strstr(err, nodir) && strstr(err, "No such file or directory"),
          "write into a missing directory fails naming the file: %s", err);
    CHECK(!path_exists(nodir) && count_tmp_files() == 0, "... and leaves nothing");
    free(nodir);

    // Target directory not writable (root writes anyway: skipped then).
    char *ro = xasprintf("%s/ro", tmpdir), *ro_path = xasprintf("%s/ro/step-000001.h5", tmpdir);
    mkdir(ro, 0555);
    if (geteuid() != 0) {
        rc = checkpoint_write(ro_path, p, m, v, NT, &st, err, sizeof err);
        CHECK(rc == -1 && strstr(err, ro_path) && strstr(err, "Permission denied"),
              "write into a read-only directory fails: %s", err);
        CHECK(!path_exists(ro_path), "... and leaves no file");
    } else {
        CHECK(1, "# SKIP read-only directory: running as root");
        CHECK(1, "# SKIP read-only directory: running as root");
    }
    chmod(ro, 0755);
    free(ro_path);
    free(ro);

    // A failure after the temp file exists (two tensors named alike) over a good
    // checkpoint: the temp file goes, the old checkpoint stays as it was.
    char *path = xasprintf("%s/step-000002.h5", tmpdir);
    rc = checkpoint_write(path, p, m, v, NT, &st, err, sizeof err);
    CkptTensor dup[NT], dm[NT], dv[NT];
    memcpy(dup, p, sizeof dup), memcpy(dm, m, sizeof dm), memcpy(dv, v, sizeof dv);
    dup[3] = dup[2], dm[3] = dm[2], dv[3] = dv[2];
    CkptState st2 = st;
    st2.step = 999;
    rc = checkpoint_write(path, dup, dm, dv, NT, &st2, err, sizeof err);
    CHECK(rc == -1 && strstr(err, path) && strstr(err, "/params/h.ln1.b"),
          "a failing write names the file and the tensor: %s", err);
    CHECK(count_tmp_files() == 0, "the failed write removed its temporary file");
    CkptTensor p2[NT], m2[NT], v2[NT];
    make_set(p2, 0), make_set(m2, 0), make_set(v2, 0);
    CkptState got = {.model_json = MODEL};
    err[0] = 0;
    rc = checkpoint_read(path, p2, m2, v2, NT, &got, err, sizeof err);
    CHECK(rc == 0 && got.step == 500 && sets_equal(p, p2), "the old checkpoint at PATH is intact (%s)", err);

    // Invalid input is refused before any file is made.
    CkptTensor bad[NT];
    memcpy(bad, p, sizeof bad);
    bad[1].name = "a/b";
    char *path3 = xasprintf("%s/step-000003.h5", tmpdir);
    rc = checkpoint_write(path3, bad, m, v, NT, &st, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "a/b") && !path_exists(path3), "a name with '/' is refused: %s", err);
    free(path3);

    free_set(p2), free_set(m2), free_set(v2);
    free_set(p), free_set(m), free_set(v);
    free(path);
}

static void touch(const char *dir, const char *name) {
    char *p = path_join(dir, name);
    write_file_atomic(p, "x", 1);
    free(p);
}

static void test_latest(void) {
    char *dir = xasprintf("%s/ckpts", tmpdir);
    mkdir_p(dir, 0755);
    char *none = checkpoint_latest(dir);
    CHECK(none == NULL, "checkpoint_latest of an empty directory is NULL");
    free(none);
    none = checkpoint_latest("/nonexistent-lsst-dir");
    CHECK(none == NULL, "checkpoint_latest of a missing directory is NULL");
    free(none);

    const char *files[] = {"step-000009.h5", "step-000010.h5", "step-000011.h5.tmp.4242", "step-000100.h5.tmp.1",
                           "step-abc.h5",    "step-.h5",       "notes.txt",               "step-000050.h5.bak"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) touch(dir, files[i]);
    char *latest = checkpoint_latest(dir), *want = xasprintf("%s/step-000010.h5", dir);
    CHECK(latest && !strcmp(latest, want), "latest is step-000010 over step-000009, stray .tmp ignored (%s)",
          latest ? latest : "NULL");
    free(latest);
    free(want);

    touch(dir, "step-1234567.h5");   // past six digits
    latest = checkpoint_latest(dir);
    CHECK(latest && strstr(latest, "/step-1234567.h5"), "a seven-digit step sorts by value (%s)",
          latest ? latest : "NULL");
    free(latest);

    char *p = checkpoint_path("runs/x/checkpoints", 500), *p7 = checkpoint_path("d", 1234567);
    CHECK(!strcmp(p, "runs/x/checkpoints/step-000500.h5") && !strcmp(p7, "d/step-1234567.h5"),
          "checkpoint_path: %s, %s", p, p7);
    free(p);
    free(p7);
    free(dir);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s/lsst-ckpt.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    test_round_trip();
    test_mismatches();
    test_atomic();
    test_latest();
    rm_rf(tmpdir);
    return check_done();
}
